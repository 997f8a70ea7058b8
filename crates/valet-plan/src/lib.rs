//! `valet-plan`: compiles a pipeline's AST into a [`JobGraph`](model::JobGraph).
//!
//! Start at [`plan`]. Pure: no I/O, no async, no clock. Every semantic problem in a file
//! is reported at once, as [`Diagnostic`]s with spans: the checks (`check.rs`) look at
//! every call; the walk (`graph.rs`, `declarative.rs`) resolves pods, jobs and steps.

mod check;
mod declarative;
mod graph;
pub mod model;
mod pods;
pub mod render;
mod steps;
mod values;

pub use pods::{AGENT_CONTAINER, DEFAULT_CONTAINER};
pub use steps::unknown_parameters;

use model::{Form, JobGraph, Note, PLAN_FORMAT_VERSION};
use valet_dsl::ast::{ExprKind, Script, StmtKind};
use valet_dsl::{Diagnostic, SourceFile};

/// The plan of one file and every diagnostic found while making it.
#[derive(Debug)]
pub struct PlanOutput {
    pub graph: JobGraph,
    pub diagnostics: Vec<Diagnostic>,
}

impl PlanOutput {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// A file parsed and planned: its tree and plan (when it parsed) and every diagnostic of
/// both passes, in source order.
#[derive(Debug)]
pub struct Compiled {
    pub script: Option<Script>,
    pub graph: Option<JobGraph>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses and plans `source`. Both passes recurse once per nesting level: callers run this
/// on a thread whose stack the language's limits are sized for (64 MiB).
pub fn compile(source: &SourceFile) -> Compiled {
    let parsed = valet_dsl::parse(&source.text);
    let mut diagnostics = parsed.diagnostics;
    let mut graph = None;
    if let Some(script) = &parsed.script {
        let planned = plan(script, source);
        diagnostics.extend(planned.diagnostics);
        graph = Some(planned.graph);
    }
    diagnostics.sort_by_key(|d| d.span.start);
    Compiled {
        script: parsed.script,
        graph,
        diagnostics,
    }
}

/// Plans `script`, parsed from `source`.
pub fn plan(script: &Script, source: &SourceFile) -> PlanOutput {
    let names = check::Names::collect(script);
    let mut checker = check::Checker {
        names: &names,
        diags: Vec::new(),
    };
    let mut g = graph::GraphBuilder::new(source);
    g.functions = names.functions.clone();
    let mut form = Form::Scripted;
    let mut outside = Vec::new();
    let mut ctx = graph::Ctx::default();
    for stmt in &script.stmts {
        if let StmtKind::Expr { expr } = &stmt.kind
            && let ExprKind::Call(call) = &expr.kind
            && call.target.is_none()
            && call.name.name == "pipeline"
        {
            form = Form::Declarative;
            outside.extend(g.declarative(call, expr, &mut checker));
            continue;
        }
        checker.stmt(stmt);
        // Functions are walked where they are defined, detached from any node: their
        // nodes get jobs, their steps are shown where they are called.
        if let StmtKind::Function(f) = &stmt.kind {
            let mut fctx = graph::Ctx {
                detached: true,
                dynamic: true,
                ..Default::default()
            };
            g.stmts(&f.body.stmts, &mut fctx);
            continue;
        }
        outside.extend(g.stmts(std::slice::from_ref(stmt), &mut ctx));
    }
    let mut diagnostics = checker.diags;
    diagnostics.append(&mut g.diags);
    diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    diagnostics.dedup();
    let notes = g
        .notes
        .iter()
        .map(|(span, message)| {
            let lc = source.line_col(span.start as usize);
            Note {
                line: lc.line,
                col: lc.col,
                message: message.clone(),
            }
        })
        .collect();
    PlanOutput {
        graph: JobGraph {
            version: PLAN_FORMAT_VERSION,
            file: source.name.clone(),
            form,
            parameters: g.parameters,
            options: g.options,
            jobs: g.jobs,
            edges: g.edges,
            outside,
            dynamic: g.dynamic,
            notes,
        },
        diagnostics,
    }
}
