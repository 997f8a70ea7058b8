//! `valet-plan`: compiles a pipeline's AST into a [`JobGraph`](model::JobGraph).
//!
//! Start at [`plan`]. Pure: no I/O, no async. Every semantic problem in a file is reported
//! at once, as [`Diagnostic`]s with spans.

pub mod model;
pub mod render;

use valet_dsl::ast::Script;
use valet_dsl::{Diagnostic, SourceFile};

/// The plan of one file and every diagnostic found while making it.
#[derive(Debug)]
pub struct PlanOutput {
    pub graph: model::JobGraph,
    pub diagnostics: Vec<Diagnostic>,
}

impl PlanOutput {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Plans `script`, parsed from `source`.
pub fn plan(script: &Script, source: &SourceFile) -> PlanOutput {
    let _ = script;
    PlanOutput {
        graph: model::JobGraph {
            version: model::PLAN_FORMAT_VERSION,
            file: source.name.clone(),
            form: model::Form::Scripted,
            parameters: vec![],
            options: Default::default(),
            jobs: vec![],
            edges: vec![],
            outside: vec![],
            dynamic: false,
            notes: vec![],
        },
        diagnostics: vec![],
    }
}
