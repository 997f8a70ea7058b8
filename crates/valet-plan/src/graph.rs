//! The scripted walk: statements → jobs, pods and step trees.
//!
//! One job per `node { … }`; `podTemplate` scopes give the pod; `stage`, `container`,
//! `parallel` and the wrapper steps become the step tree. Code that depends on run-time
//! values becomes a [`StepKind::Dynamic`] step holding what it may run.

use crate::check::for_each_child;
use crate::model::*;
use crate::pods::{self, PodBuilder, Template};
use crate::steps;
use crate::values::{Consts, dynamic_expr, eval, summary};
use indexmap::IndexMap;
use std::collections::HashSet;
use valet_dsl::ast::*;
use valet_dsl::{Diagnostic, SourceFile, Span};

pub(crate) struct GraphBuilder<'a> {
    pub(crate) src: &'a SourceFile,
    pub(crate) consts: Consts,
    pub(crate) diags: Vec<Diagnostic>,
    pub(crate) notes: Vec<(Span, String)>,
    pub(crate) jobs: Vec<Job>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) frontier: Vec<String>,
    /// Every template defined in the file, for `inheritFrom` and label lookups.
    pub(crate) all_templates: Vec<Template>,
    pub(crate) functions: HashSet<String>,
    pub(crate) parameters: Vec<Parameter>,
    pub(crate) options: IndexMap<String, Value>,
    pub(crate) dynamic: bool,
}

#[derive(Clone, Default)]
pub(crate) struct Ctx {
    /// The enclosing `podTemplate`s, innermost last; shared, since every scope copies its `Ctx`.
    pub(crate) templates: Vec<std::rc::Rc<Template>>,
    pub(crate) job: Option<usize>,
    pub(crate) container: Option<String>,
    pub(crate) path: Vec<String>,
    pub(crate) dynamic: bool,
    /// Inside a function or a closure stored in a variable: where it runs is not known here.
    pub(crate) detached: bool,
}

impl<'a> GraphBuilder<'a> {
    pub(crate) fn new(src: &'a SourceFile) -> Self {
        GraphBuilder {
            src,
            consts: Consts::default(),
            diags: Vec::new(),
            notes: Vec::new(),
            jobs: Vec::new(),
            edges: Vec::new(),
            frontier: Vec::new(),
            all_templates: Vec::new(),
            functions: HashSet::new(),
            parameters: Vec::new(),
            options: IndexMap::new(),
            dynamic: false,
        }
    }

    pub(crate) fn line(&self, span: Span) -> u32 {
        self.src.line_col(span.start as usize).line
    }

    pub(crate) fn step(&self, kind: StepKind, span: Span, ctx: &Ctx) -> Step {
        let container = match &kind {
            StepKind::Sh { .. } | StepKind::Call { .. } if ctx.job.is_some() => {
                ctx.container.clone()
            }
            _ => None,
        };
        Step {
            kind,
            container,
            line: self.line(span),
            span,
        }
    }

    /// Wraps `steps` in a `withEnv` for `env` (unless it is empty).
    pub(crate) fn with_env(
        &self,
        env: IndexMap<String, Value>,
        steps: Vec<Step>,
        span: Span,
        ctx: &Ctx,
    ) -> Vec<Step> {
        if env.is_empty() {
            return steps;
        }
        let mut args = IndexMap::new();
        args.insert("environment".to_string(), Value::Map(env));
        vec![self.step(
            StepKind::Wrapper {
                name: "withEnv".into(),
                args,
                steps,
            },
            span,
            ctx,
        )]
    }

    /// A wrapper step `name` whose body (the call's closure) runs in `container`.
    fn in_container(
        &mut self,
        name: &str,
        container: String,
        args: IndexMap<String, Value>,
        call: &Call,
        span: Span,
        ctx: &Ctx,
    ) -> Step {
        let mut inner = ctx.clone();
        inner.container = Some(container);
        let steps = call
            .closure
            .as_ref()
            .map(|b| self.stmts(&b.body, &mut inner))
            .unwrap_or_default();
        self.step(
            StepKind::Wrapper {
                name: name.into(),
                args,
                steps,
            },
            span,
            ctx,
        )
    }

    /// The step that stands, in the enclosing list, for the job `idx`.
    pub(crate) fn node_marker(&self, idx: usize, span: Span, ctx: &Ctx) -> Step {
        let mut args = IndexMap::new();
        args.insert("job".to_string(), Value::Str(self.jobs[idx].id.clone()));
        self.step(
            StepKind::Call {
                name: "node".into(),
                args,
            },
            span,
            ctx,
        )
    }

    pub(crate) fn value(&self, e: &Expr) -> Value {
        eval(e, &self.consts, self.src)
    }

    fn dynamic_step(&mut self, what: &str, span: Span, steps: Vec<Step>, ctx: &Ctx) -> Step {
        self.dynamic = true;
        self.step(
            StepKind::Dynamic {
                what: what.into(),
                code: summary(self.src, span, 72),
                steps,
            },
            span,
            ctx,
        )
    }

    /// Walks a block of statements. The old `stage 'name'` form opens a stage that holds
    /// the statements after it, up to the next such stage or the end of the block.
    pub(crate) fn stmts(&mut self, stmts: &[Stmt], ctx: &mut Ctx) -> Vec<Step> {
        let mut out = Vec::new();
        let mut open: Option<Step> = None;
        let outer_path_len = ctx.path.len();
        for s in stmts {
            if let Some((name, span)) = bodiless_stage(s) {
                if let Some(st) = open.take() {
                    out.push(st);
                }
                let name = self.value(name);
                ctx.path.truncate(outer_path_len);
                ctx.path.push(display_name(&name));
                open = Some(self.step(
                    StepKind::Stage {
                        name,
                        when: vec![],
                        post: IndexMap::new(),
                        steps: vec![],
                    },
                    span,
                    ctx,
                ));
                continue;
            }
            let steps = self.stmt(s, ctx);
            match &mut open {
                Some(Step {
                    kind: StepKind::Stage { steps: inner, .. },
                    ..
                }) => inner.extend(steps),
                _ => out.extend(steps),
            }
        }
        ctx.path.truncate(outer_path_len);
        if let Some(st) = open {
            out.push(st);
        }
        out
    }

    fn block(&mut self, b: &Block, ctx: &mut Ctx) -> Vec<Step> {
        self.stmts(&b.stmts, ctx)
    }

    fn stmt(&mut self, s: &Stmt, ctx: &mut Ctx) -> Vec<Step> {
        match &s.kind {
            StmtKind::Expr { expr } => self.expr_stmt(expr, ctx),
            StmtKind::Decl { name, value, .. } => {
                let Some(v) = value else { return vec![] };
                self.binding(Some(&name.name), v, s.span, ctx)
            }
            StmtKind::Assign { target, op, value } => {
                // `x = …` on a known variable: its new value, when static and certain to
                // run; otherwise (`+=` and the like too) it is no longer known: `def tag = ''`
                // then `tag = sh(returnStdout: true)` must not show `tag` as empty later.
                let plain = target.dotted_name().filter(|n| !n.contains('.'));
                if let Some(n) = plain.as_deref() {
                    self.consts.values.remove(n);
                    let rebind = matches!(op, valet_dsl::ast::AssignOp::Set).then_some(n);
                    return self.binding(rebind, value, s.span, ctx);
                }
                let steps = self.binding(None, value, s.span, ctx);
                let visible = matches!(
                    target
                        .dotted_name()
                        .as_deref()
                        .and_then(|n| n.split('.').next()),
                    Some("env" | "currentBuild")
                );
                if steps.is_empty() && visible {
                    return vec![self.dynamic_step("assignment", s.span, vec![], ctx)];
                }
                steps
            }
            StmtKind::If {
                then, otherwise, ..
            } => {
                let mut inner = ctx.clone();
                inner.dynamic = true;
                let mut steps = self.block(then, &mut inner);
                if let Some(o) = otherwise {
                    steps.extend(self.stmt(o, &mut inner));
                }
                let head = Span {
                    start: s.span.start,
                    end: then.span.start,
                };
                vec![self.dynamic_step("if", head, steps, ctx)]
            }
            StmtKind::ForIn { body, .. }
            | StmtKind::For { body, .. }
            | StmtKind::While { body, .. } => {
                let mut inner = ctx.clone();
                inner.dynamic = true;
                let steps = self.block(body, &mut inner);
                let what = if matches!(s.kind, StmtKind::While { .. }) {
                    "while"
                } else {
                    "for"
                };
                let head = Span {
                    start: s.span.start,
                    end: body.span.start,
                };
                vec![self.dynamic_step(what, head, steps, ctx)]
            }
            StmtKind::Switch { cases, .. } => {
                let mut inner = ctx.clone();
                inner.dynamic = true;
                let steps: Vec<Step> = cases
                    .iter()
                    .flat_map(|c| self.stmts(&c.body, &mut inner.clone()))
                    .collect();
                let head = Span {
                    start: s.span.start,
                    end: cases.first().map_or(s.span.end, |c| c.span.start),
                };
                vec![self.dynamic_step("switch", head, steps, ctx)]
            }
            StmtKind::Try {
                body,
                catches,
                finally,
            } => {
                let mut out = Vec::new();
                let steps = self.block(body, ctx);
                out.push(self.step(
                    StepKind::Wrapper {
                        name: "try".into(),
                        args: IndexMap::new(),
                        steps,
                    },
                    s.span,
                    ctx,
                ));
                for c in catches {
                    let mut inner = ctx.clone();
                    inner.dynamic = true;
                    let steps = self.block(&c.body, &mut inner);
                    let head = Span {
                        start: c.var.span.start.saturating_sub(7),
                        end: c.body.span.start,
                    };
                    out.push(self.dynamic_step("catch", head, steps, ctx));
                }
                if let Some(f) = finally {
                    let steps = self.block(f, ctx);
                    out.push(self.step(
                        StepKind::Wrapper {
                            name: "finally".into(),
                            args: IndexMap::new(),
                            steps,
                        },
                        f.span,
                        ctx,
                    ));
                }
                out
            }
            StmtKind::Return { value: Some(v) } | StmtKind::Throw { value: v } => {
                let steps = self.nested_calls(v, ctx);
                if steps.is_empty() {
                    vec![]
                } else {
                    vec![self.dynamic_step("return", s.span, steps, ctx)]
                }
            }
            StmtKind::Block(b) => self.block(b, ctx),
            StmtKind::Function(_)
            | StmtKind::Return { value: None }
            | StmtKind::Break
            | StmtKind::Continue
            | StmtKind::Unsupported { .. } => vec![],
        }
    }

    /// `def x = …` / `x = …`: a step call on the right is a dynamic step; a closure is
    /// walked so its nodes get jobs; a static value becomes known.
    fn binding(&mut self, name: Option<&str>, v: &Expr, span: Span, ctx: &mut Ctx) -> Vec<Step> {
        if let (Some(n), false) = (name, ctx.dynamic || ctx.detached) {
            let val = self.value(v);
            if !val.is_dynamic() || is_docker_image(v) {
                self.consts.values.insert(
                    n.to_string(),
                    if is_docker_image(v) {
                        self.docker_image_of(v)
                    } else {
                        val
                    },
                );
            }
        }
        if let ExprKind::Closure(c) = &v.kind {
            let mut inner = ctx.clone();
            inner.dynamic = true;
            let steps = self.stmts(&c.body, &mut inner);
            return vec![self.dynamic_step(
                "closure",
                Span {
                    start: span.start,
                    end: c.span.start + 1,
                },
                steps,
                ctx,
            )];
        }
        let steps = self.nested_calls(v, ctx);
        if steps.is_empty() {
            vec![]
        } else {
            vec![self.dynamic_step("assignment", span, steps, ctx)]
        }
    }

    /// Steps called inside an expression (`sh(returnStdout: true)` in an assignment) and
    /// closures inside it (a map of closures for `parallel`).
    fn nested_calls(&mut self, e: &Expr, ctx: &mut Ctx) -> Vec<Step> {
        let mut out = Vec::new();
        match &e.kind {
            ExprKind::Call(c)
                if c.target.is_none()
                    && (steps::find(&c.name.name).is_some()
                        || self.functions.contains(&c.name.name)) =>
            {
                return self.expr_stmt(e, ctx);
            }
            ExprKind::Closure(c) => {
                let mut inner = ctx.clone();
                inner.dynamic = true;
                return self.stmts(&c.body, &mut inner);
            }
            _ => {}
        }
        for_each_child(e, &mut |child| out.extend(self.nested_calls(child, ctx)));
        if let ExprKind::Call(c) = &e.kind
            && let Some(cl) = &c.closure
        {
            let mut inner = ctx.clone();
            inner.dynamic = true;
            out.extend(self.stmts(&cl.body, &mut inner));
        }
        out
    }

    fn expr_stmt(&mut self, e: &Expr, ctx: &mut Ctx) -> Vec<Step> {
        if let ExprKind::Call(call) = &e.kind
            && let Some(normal) = steps::named_from_map(call)
        {
            let e = Expr {
                kind: ExprKind::Call(normal),
                span: e.span,
            };
            return self.expr_stmt_inner(&e, ctx);
        }
        self.expr_stmt_inner(e, ctx)
    }

    fn expr_stmt_inner(&mut self, e: &Expr, ctx: &mut Ctx) -> Vec<Step> {
        let ExprKind::Call(call) = &e.kind else {
            let steps = self.nested_calls(e, ctx);
            return if steps.is_empty() {
                vec![]
            } else {
                vec![self.dynamic_step("expression", e.span, steps, ctx)]
            };
        };
        if call.target.is_some() {
            return self.method_call(call, e, ctx);
        }
        let name = call.name.name.as_str();
        if self.functions.contains(name) {
            return vec![self.dynamic_step("call", e.span, vec![], ctx)];
        }
        match name {
            "node" => self.node(call, e, ctx),
            "podTemplate" => {
                let t = self.template(call, ctx);
                let Some(body) = &call.closure else {
                    return vec![];
                };
                let mut inner = ctx.clone();
                inner.templates.push(std::rc::Rc::new(t));
                self.stmts(&body.body, &mut inner)
            }
            "stage" => {
                let Some(body) = &call.closure else {
                    return vec![];
                };
                let name = call
                    .positional()
                    .next()
                    .or_else(|| call.named("name"))
                    .map(|n| self.value(n))
                    .unwrap_or(Value::Null);
                let mut inner = ctx.clone();
                inner.path.push(display_name(&name));
                let steps = self.stmts(&body.body, &mut inner);
                vec![self.step(
                    StepKind::Stage {
                        name,
                        when: vec![],
                        post: IndexMap::new(),
                        steps,
                    },
                    e.span,
                    ctx,
                )]
            }
            "container" => {
                let cname = call
                    .positional()
                    .next()
                    .or_else(|| call.named("name"))
                    .map(|n| self.value(n))
                    .unwrap_or(Value::Null);
                if let (Some(job), Value::Str(n)) = (ctx.job, &cname) {
                    self.check_container(job, n, call.positional().next().unwrap_or(e).span);
                }
                let container = display_name(&cname);
                let mut args = IndexMap::new();
                args.insert("name".to_string(), cname);
                vec![self.in_container("container", container, args, call, e.span, ctx)]
            }
            "parallel" => vec![self.parallel(call, e, ctx)],
            "sh" => {
                self.need_node(name, call.name.span, ctx);
                let script = call
                    .positional()
                    .next()
                    .or_else(|| call.named("script"))
                    .map(|s| self.value(s))
                    .unwrap_or(Value::Null);
                if script.is_dynamic() {
                    self.dynamic = true;
                }
                let flag = |n: &str| {
                    call.named(n)
                        .is_some_and(|v| matches!(v.kind, ExprKind::Bool { value: true }))
                };
                let label = call
                    .named("label")
                    .and_then(|l| self.value(l).as_str().map(str::to_string));
                vec![self.step(
                    StepKind::Sh {
                        script,
                        return_stdout: flag("returnStdout"),
                        return_status: flag("returnStatus"),
                        label,
                    },
                    e.span,
                    ctx,
                )]
            }
            "properties" => {
                self.properties(call);
                vec![self.step(
                    StepKind::Call {
                        name: name.into(),
                        args: self.args(call, "properties"),
                    },
                    e.span,
                    ctx,
                )]
            }
            _ => {
                let Some(def) = steps::find(name) else {
                    // A closure held in a variable, or an unknown step (reported by the checks).
                    return vec![self.dynamic_step("call", e.span, vec![], ctx)];
                };
                if def.kind == steps::Kind::Workspace {
                    self.need_node(name, call.name.span, ctx);
                }
                let first = def.params.first().map_or("value", |(p, _)| p);
                let args = self.args(call, first);
                match &call.closure {
                    Some(body) => {
                        let steps = self.stmts(&body.body, ctx);
                        vec![self.step(
                            StepKind::Wrapper {
                                name: name.into(),
                                args,
                                steps,
                            },
                            e.span,
                            ctx,
                        )]
                    }
                    None => vec![self.step(
                        StepKind::Call {
                            name: name.into(),
                            args,
                        },
                        e.span,
                        ctx,
                    )],
                }
            }
        }
    }

    pub(crate) fn args(&self, call: &Call, first: &str) -> IndexMap<String, Value> {
        let mut args = IndexMap::new();
        for (n, v) in pods::call_args(call, first) {
            if !matches!(v.kind, ExprKind::Closure(_)) {
                args.insert(n.to_string(), self.value(v));
            }
        }
        args
    }

    fn need_node(&mut self, step: &str, span: Span, ctx: &Ctx) {
        if ctx.job.is_none() && !ctx.detached {
            self.diags.push(
                Diagnostic::error(
                    "no-node",
                    span,
                    format!("`{step}` needs a workspace, but runs outside any `node`"),
                )
                .with_label("outside `node { … }`")
                .with_help("wrap it in `node { … }` (or give the declarative stage an `agent`)"),
            );
        }
    }

    fn check_container(&mut self, job: usize, name: &str, span: Span) {
        let pod = &self.jobs[job].pod;
        if pod.containers.iter().any(|c| c.name == name) {
            return;
        }
        if pod.open {
            // The pod's containers are decided outside this file or at run time: take
            // the name as given and say so.
            let pod = &mut self.jobs[job].pod;
            pod.containers.push(ContainerSpec {
                name: name.to_string(),
                ..Default::default()
            });
            self.notes.push((span, format!("container `{name}` is assumed to exist in pod `{}`, whose containers are not all defined in this file", pod.name)));
            return;
        }
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        let mut d = Diagnostic::error(
            "container",
            span,
            format!("the pod has no container `{name}`"),
        )
        .with_label(format!("pod `{}` has: {}", pod.name, names.join(", ")));
        if let Some(s) = steps::did_you_mean(name, names.iter().copied()) {
            d = d.with_help(format!("did you mean `{s}`?"));
        } else {
            d = d.with_help("add it to the pod template's `containers`");
        }
        self.diags.push(d);
    }

    fn template(&mut self, call: &Call, ctx: &Ctx) -> Template {
        let mut notes = std::mem::take(&mut self.notes);
        let mut t = {
            let mut pb = PodBuilder {
                src: self.src,
                consts: &self.consts,
                diags: &mut self.diags,
                notes: &mut notes,
            };
            pb.template(call)
        };
        self.notes = notes;
        // Nesting: the inner template inherits the outer one's containers, as in Jenkins.
        let mut pod = match ctx.templates.last() {
            Some(outer) => pods::merge_pods(&outer.pod, &t.pod),
            None => t.pod.clone(),
        };
        for parent in t.inherit_from.clone() {
            match self.all_templates.iter().rev().find(|x| {
                x.name.as_deref() == Some(&parent)
                    || x.label.as_ref().and_then(Value::as_str) == Some(&parent)
            }) {
                Some(p) => pod = pods::merge_pods(&p.pod, &pod),
                None => {
                    self.notes.push((
                        call.name.span,
                        format!("inherits from `{parent}`, a template defined outside this file"),
                    ));
                    pod.open = true;
                    pod.inherits.push(parent);
                }
            }
        }
        t.pod = pod;
        self.all_templates.push(t.clone());
        t
    }

    /// The pod for `node(label)`: the innermost template matching the label (`POD_LABEL`
    /// is the innermost template), or a plain pod.
    fn node_pod(&mut self, label: Option<&Expr>, ctx: &Ctx) -> (Option<String>, PodSpec) {
        let Some(label_expr) = label else {
            // Any agent the controller offers: its containers are configured outside the file.
            let mut pod = pods::default_pod("node");
            pod.open = true;
            return (None, pod);
        };
        let is_pod_label =
            matches!(&label_expr.kind, ExprKind::Var { name } if name == "POD_LABEL");
        let value = self.value(label_expr);
        let found = if is_pod_label || (value.is_dynamic() && !ctx.templates.is_empty()) {
            // A label computed at run time inside a `podTemplate` is, in practice, that template's.
            ctx.templates.last().map(|t| Template::clone(t))
        } else {
            ctx.templates
                .iter()
                .rev()
                .map(|t| &**t)
                .chain(self.all_templates.iter().rev())
                .find(|t| {
                    t.label.as_ref() == Some(&value)
                        || t.name
                            .as_ref()
                            .is_some_and(|n| Some(n.as_str()) == value.as_str())
                })
                .cloned()
        };
        match found {
            Some(t) => {
                let label = t.label.as_ref().map(display_name).or(t.name.clone());
                (label, pods::finish_k8s_pod(t.pod, None))
            }
            None if is_pod_label => {
                self.diags.push(
                    Diagnostic::error(
                        "pod-label",
                        label_expr.span,
                        "`POD_LABEL` is only set inside a `podTemplate`",
                    )
                    .with_help("wrap this `node` in `podTemplate(…) { … }`"),
                );
                (None, pods::default_pod("node"))
            }
            None => {
                let display = match &value {
                    Value::Str(s) => s.clone(),
                    other => other.display(),
                };
                // A label no template of this file has: the agent is configured outside the file.
                let mut pod = pods::default_pod(&display);
                pod.open = true;
                (Some(display.clone()), pod)
            }
        }
    }

    fn node(&mut self, call: &Call, e: &Expr, ctx: &mut Ctx) -> Vec<Step> {
        let label = call.positional().next().or_else(|| call.named("label"));
        let (label, pod) = self.node_pod(label, ctx);
        let idx = self.new_job(label, pod, e.span, ctx);
        let Some(body) = &call.closure else {
            return vec![];
        };
        let mut inner = ctx.clone();
        inner.job = Some(idx);
        inner.container = Some(self.jobs[idx].pod.default_container.clone());
        let steps = self.stmts(&body.body, &mut inner);
        self.jobs[idx].steps = steps;
        vec![self.node_marker(idx, e.span, ctx)]
    }

    /// Adds a job after the current frontier of jobs.
    pub(crate) fn new_job(
        &mut self,
        label: Option<String>,
        pod: PodSpec,
        anchor: Span,
        ctx: &Ctx,
    ) -> usize {
        let id = format!("job-{}", self.jobs.len() + 1);
        let dynamic = ctx.dynamic || ctx.detached;
        if dynamic {
            // When (and whether) it runs is decided by the code around it: no edges.
            self.dynamic = true;
        } else {
            for f in &self.frontier {
                self.edges.push(Edge {
                    from: f.clone(),
                    to: id.clone(),
                });
            }
            self.frontier = vec![id.clone()];
        }
        self.jobs.push(Job {
            id,
            path: ctx.path.clone(),
            label,
            pod,
            steps: vec![],
            anchor,
            line: self.line(anchor),
            dynamic,
        });
        self.jobs.len() - 1
    }

    fn parallel(&mut self, call: &Call, e: &Expr, ctx: &mut Ctx) -> Step {
        let mut branches_src: Vec<(Value, &Closure, Span)> = Vec::new();
        let mut fail_fast = false;
        let mut unknown = false;
        let take_entry = |key: Value, v: &'_ Expr, out: &mut Vec<(Value, Span)>| -> bool {
            if key.as_str() == Some("failFast") {
                return matches!(v.kind, ExprKind::Bool { value: true });
            }
            out.push((key, v.span));
            false
        };
        let mut found: Vec<(Value, Span)> = Vec::new();
        let mut closures: Vec<Option<&Closure>> = Vec::new();
        for a in &call.args {
            match a {
                Arg::Named { name, value } => {
                    if take_entry(Value::Str(name.name.clone()), value, &mut found) {
                        fail_fast = true;
                    } else if name.name != "failFast" {
                        closures.push(as_closure(value));
                    }
                }
                Arg::Positional(p) => match &p.kind {
                    ExprKind::Map { entries } => {
                        for en in entries {
                            let key = match &en.key {
                                MapKey::Name { name, .. } => Value::Str(name.clone()),
                                MapKey::Expr { expr } => self.value(expr),
                            };
                            if take_entry(key.clone(), &en.value, &mut found) {
                                fail_fast = true;
                            } else if key.as_str() != Some("failFast") {
                                closures.push(as_closure(&en.value));
                            }
                        }
                    }
                    _ => unknown = true,
                },
            }
        }
        for ((name, span), c) in found.into_iter().zip(closures) {
            match c {
                Some(c) => branches_src.push((name, c, span)),
                None => unknown = true,
            }
        }
        if unknown || branches_src.is_empty() {
            // `parallel branches`: a map built at run time; its closures were walked where they were made.
            return self.dynamic_step("parallel", e.span, vec![], ctx);
        }
        let start = self.frontier.clone();
        let mut ends = Vec::new();
        let mut branches = Vec::new();
        for (name, closure, _) in branches_src {
            self.frontier = start.clone();
            let mut inner = ctx.clone();
            inner.path.push(display_name(&name));
            let steps = self.stmts(&closure.body, &mut inner);
            ends.extend(self.frontier.clone());
            branches.push(Branch { name, steps });
        }
        ends.dedup();
        self.frontier = ends;
        self.step(
            StepKind::Parallel {
                branches,
                fail_fast,
            },
            e.span,
            ctx,
        )
    }

    fn method_call(&mut self, call: &Call, e: &Expr, ctx: &mut Ctx) -> Vec<Step> {
        let target = call.target.as_deref().expect("method call target");
        let name = call.name.name.as_str();
        let target_name = target.dotted_name();
        // `docker.image('x').inside { }` and `def img = docker.image('x'); img.inside { }`.
        if name == "inside" {
            let image = self.docker_image_of(target);
            if let Value::Str(img) = &image {
                if let Some(job) = ctx.job {
                    let cname = container_name_for_image(img);
                    if !self.jobs[job]
                        .pod
                        .containers
                        .iter()
                        .any(|c| c.name == cname)
                    {
                        self.jobs[job].pod.containers.push(ContainerSpec {
                            name: cname.clone(),
                            image: Some(img.clone()),
                            ..Default::default()
                        });
                    }
                    let mut args = IndexMap::new();
                    args.insert("image".into(), image);
                    if let Some(a) = call.positional().next() {
                        args.insert("args".into(), self.value(a));
                    }
                    return vec![self.in_container(
                        "docker.inside",
                        cname,
                        args,
                        call,
                        e.span,
                        ctx,
                    )];
                }
                self.need_node("docker.image(…).inside", call.name.span, ctx);
            }
        }
        if target_name.as_deref() == Some("docker") {
            let args = self.args(call, "value");
            let full = format!("docker.{name}");
            return match &call.closure {
                Some(b) => {
                    let steps = self.stmts(&b.body, ctx);
                    vec![self.step(
                        StepKind::Wrapper {
                            name: full,
                            args,
                            steps,
                        },
                        e.span,
                        ctx,
                    )]
                }
                None => vec![self.step(StepKind::Call { name: full, args }, e.span, ctx)],
            };
        }
        if name == "pull"
            && let Value::Str(img) = self.docker_image_of(target)
        {
            let mut args = IndexMap::new();
            args.insert("image".into(), Value::Str(img));
            return vec![self.step(
                StepKind::Call {
                    name: "docker.pull".into(),
                    args,
                },
                e.span,
                ctx,
            )];
        }
        // `list.each { … }` and friends: the closure runs once per item, known at run time.
        let mut inner = ctx.clone();
        inner.dynamic = true;
        let mut steps = Vec::new();
        for a in &call.args {
            {
                let (Arg::Positional(p) | Arg::Named { value: p, .. }) = a;
                steps.extend(self.nested_calls(p, &mut inner));
            }
        }
        if let Some(c) = &call.closure {
            steps.extend(self.stmts(&c.body, &mut inner));
        }
        steps.extend(self.nested_calls(target, ctx));
        vec![self.dynamic_step("call", e.span, steps, ctx)]
    }

    /// The image of `docker.image('x')`, or of a variable bound to one.
    fn docker_image_of(&self, e: &Expr) -> Value {
        match &e.kind {
            ExprKind::Call(c)
                if c.name.name == "image"
                    && c.target.as_deref().and_then(Expr::dotted_name).as_deref()
                        == Some("docker") =>
            {
                c.positional()
                    .next()
                    .map(|a| self.value(a))
                    .unwrap_or(Value::Null)
            }
            ExprKind::Var { name } => self
                .consts
                .values
                .get(name)
                .cloned()
                .unwrap_or_else(|| dynamic_expr(name.clone(), e)),
            _ => dynamic_expr(summary(self.src, e.span, 60), e),
        }
    }

    /// `properties([parameters([...]), disableConcurrentBuilds(), …])`.
    fn properties(&mut self, call: &Call) {
        let Some(ExprKind::List { items }) = call.positional().next().map(|e| &e.kind) else {
            return;
        };
        for item in items {
            let ExprKind::Call(c) = &item.kind else {
                continue;
            };
            match c.name.name.as_str() {
                "parameters" => {
                    if let Some(ExprKind::List { items }) = c.positional().next().map(|e| &e.kind) {
                        for p in items {
                            if let ExprKind::Call(pc) = &p.kind {
                                self.parameter(pc);
                            }
                        }
                    }
                }
                other => {
                    let v = self.args(c, "value");
                    self.options.insert(other.to_string(), Value::Map(v));
                }
            }
        }
    }

    pub(crate) fn parameter(&mut self, c: &Call) {
        let args = self.args(c, "name");
        let Some(Value::Str(name)) = args.get("name").cloned() else {
            return;
        };
        let choices = match args.get("choices") {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::Str(s)) => s.lines().map(str::to_string).collect(),
            _ => vec![],
        };
        let default = args.get("defaultValue").cloned().or_else(|| {
            if choices.is_empty() {
                None
            } else {
                Some(Value::Str(choices[0].clone()))
            }
        });
        self.parameters.push(Parameter {
            name,
            kind: c.name.name.clone(),
            default,
            choices,
            description: args
                .get("description")
                .and_then(|v| v.as_str().map(str::to_string)),
        });
    }
}

fn as_closure(e: &Expr) -> Option<&Closure> {
    match &e.kind {
        ExprKind::Closure(c) => Some(c),
        _ => None,
    }
}

fn is_docker_image(e: &Expr) -> bool {
    matches!(&e.kind, ExprKind::Call(c) if c.name.name == "image" && c.target.as_deref().and_then(Expr::dotted_name).as_deref() == Some("docker"))
}

/// `golang:1.22` → `golang-1-22`: a container name for `docker.image(…).inside`.
pub(crate) fn container_name_for_image(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    let mut out: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

pub(crate) fn display_name(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => other.display(),
    }
}

/// `stage 'Build'` (or `stage('Build')`) with no body.
fn bodiless_stage(s: &Stmt) -> Option<(&Expr, Span)> {
    let StmtKind::Expr { expr } = &s.kind else {
        return None;
    };
    let ExprKind::Call(c) = &expr.kind else {
        return None;
    };
    if c.target.is_none() && c.name.name == "stage" && c.closure.is_none() {
        let name = c.positional().next().or_else(|| c.named("name"))?;
        return Some((name, s.span));
    }
    None
}
