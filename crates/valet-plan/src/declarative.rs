//! Lowers the declarative form (`pipeline { agent …; stages { … } }`) to the same job
//! graph as scripted pipelines, and checks its structure (directives in the right place).

use crate::check::Checker;
use crate::graph::{Ctx, GraphBuilder, display_name};
use crate::model::*;
use crate::pods::{self, PodBuilder};
use crate::values::summary;
use indexmap::IndexMap;
use valet_dsl::Diagnostic;
use valet_dsl::Span;
use valet_dsl::ast::*;

const PIPELINE_DIRECTIVES: &[&str] = &[
    "agent",
    "environment",
    "options",
    "parameters",
    "triggers",
    "tools",
    "stages",
    "post",
    "libraries",
];
const STAGE_DIRECTIVES: &[&str] = &[
    "agent",
    "environment",
    "options",
    "when",
    "input",
    "tools",
    "steps",
    "stages",
    "parallel",
    "matrix",
    "post",
    "failFast",
];
const POST_CONDITIONS: &[&str] = &[
    "always",
    "changed",
    "fixed",
    "regression",
    "aborted",
    "failure",
    "success",
    "unstable",
    "unsuccessful",
    "cleanup",
    "notBuilt",
];

/// A directive inside a declarative block: `name args { body }`.
struct Directive<'a> {
    name: &'a str,
    call: &'a Call,
    expr: &'a Expr,
}

fn directives(body: &[Stmt]) -> (Vec<Directive<'_>>, Vec<&Stmt>) {
    let mut out = Vec::new();
    let mut other = Vec::new();
    for s in body {
        match &s.kind {
            StmtKind::Expr {
                expr:
                    e @ Expr {
                        kind: ExprKind::Call(c),
                        ..
                    },
            } if c.target.is_none() => out.push(Directive {
                name: &c.name.name,
                call: c,
                expr: e,
            }),
            _ => other.push(s),
        }
    }
    (out, other)
}

/// Where a declarative block's steps will run.
// One lives per `agent` directive while it is lowered: boxing the pod would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Agent {
    /// `agent none`: no pod; each stage brings its own.
    None,
    Pod {
        label: Option<String>,
        pod: PodSpec,
    },
}

impl GraphBuilder<'_> {
    pub(crate) fn declarative(
        &mut self,
        call: &Call,
        e: &Expr,
        checker: &mut Checker<'_>,
    ) -> Vec<Step> {
        let Some(body) = &call.closure else {
            self.diags.push(Diagnostic::error(
                "declarative",
                e.span,
                "`pipeline` needs a body `{ … }`",
            ));
            return vec![];
        };
        let (dirs, other) = directives(&body.body);
        self.misplaced(&other, "`pipeline { … }`");
        let mut agent = None;
        let mut stages_dir = None;
        let mut env = IndexMap::new();
        let mut wrappers: Vec<(String, IndexMap<String, Value>)> = Vec::new();
        let mut post_dir = None;
        for d in &dirs {
            match d.name {
                "agent" => agent = Some(self.agent(d, checker)),
                "stages" => stages_dir = Some(d),
                "environment" => env = self.environment(d, checker),
                "options" => wrappers = self.options_directive(d, checker),
                "parameters" => self.parameters_directive(d),
                "triggers" | "tools" | "libraries" => {
                    let v = self.directive_value(d);
                    self.options.insert(d.name.to_string(), v);
                }
                "post" => post_dir = Some(d),
                other => self.unknown_directive(other, d, PIPELINE_DIRECTIVES, "pipeline"),
            }
        }
        let Some(agent) = agent else {
            self.diags.push(
                Diagnostic::error("declarative", call.name.span, "`pipeline` has no `agent`")
                    .with_help("add `agent any` (or `agent none` and an agent per stage)"),
            );
            return vec![];
        };
        let Some(stages_dir) = stages_dir else {
            self.diags.push(
                Diagnostic::error("declarative", call.name.span, "`pipeline` has no `stages`")
                    .with_help("add `stages { stage('Build') { steps { … } } }`"),
            );
            return vec![];
        };
        let mut ctx = Ctx::default();
        let job = match agent {
            Agent::Pod { label, pod } => {
                let idx = self.new_job(label, pod, e.span, &ctx);
                ctx.job = Some(idx);
                ctx.container = Some(self.jobs[idx].pod.default_container.clone());
                Some(idx)
            }
            Agent::None => None,
        };
        let mut steps = self.stages(stages_dir, &mut ctx, checker);
        let post = match post_dir {
            Some(p) => self.post(p, &mut ctx, checker),
            None => IndexMap::new(),
        };
        if !post.is_empty() {
            for (cond, body) in post {
                let mut args = IndexMap::new();
                args.insert("condition".to_string(), Value::Str(cond));
                steps.push(self.step(
                    StepKind::Wrapper {
                        name: "post".into(),
                        args,
                        steps: body,
                    },
                    e.span,
                    &ctx,
                ));
            }
        }
        for (name, args) in wrappers.into_iter().rev() {
            steps = vec![self.step(StepKind::Wrapper { name, args, steps }, e.span, &ctx)];
        }
        steps = self.with_env(env, steps, e.span, &ctx);
        match job {
            Some(idx) => {
                self.jobs[idx].steps = steps;
                vec![]
            }
            None => steps,
        }
    }

    fn misplaced(&mut self, stmts: &[&Stmt], place: &str) {
        for s in stmts {
            self.diags.push(
                Diagnostic::error(
                    "declarative",
                    s.span,
                    format!("only directives belong directly in {place}"),
                )
                .with_label("not a directive")
                .with_help("put scripted code inside `steps { script { … } }`"),
            );
        }
    }

    fn unknown_directive(&mut self, name: &str, d: &Directive<'_>, allowed: &[&str], place: &str) {
        let mut diag = Diagnostic::error(
            "declarative",
            d.call.name.span,
            format!("`{name}` is not a directive of `{place}`"),
        )
        .with_label(format!("allowed here: {}", allowed.join(", ")));
        if let Some(s) = crate::steps::did_you_mean(name, allowed.iter().copied()) {
            diag = diag.with_help(format!("did you mean `{s}`?"));
        } else if crate::steps::find(name).is_some() {
            diag = diag.with_help("steps go inside `steps { … }`");
        }
        self.diags.push(diag);
    }

    fn directive_value(&self, d: &Directive<'_>) -> Value {
        match &d.call.closure {
            Some(c) => {
                let mut m = IndexMap::new();
                for s in &c.body {
                    if let StmtKind::Expr {
                        expr:
                            Expr {
                                kind: ExprKind::Call(inner),
                                ..
                            },
                    } = &s.kind
                    {
                        m.insert(
                            inner.name.name.clone(),
                            Value::Map(self.args(inner, "value")),
                        );
                    }
                }
                Value::Map(m)
            }
            None => Value::Map(self.args(d.call, "value")),
        }
    }

    fn agent(&mut self, d: &Directive<'_>, checker: &mut Checker<'_>) -> Agent {
        // `agent any`, `agent none`, `agent { label 'x' }`, `agent { docker { image 'x' } }`, `agent { kubernetes { … } }`.
        if let Some(arg) = d.call.positional().next() {
            return match &arg.kind {
                ExprKind::Var { name } if name == "none" => Agent::None,
                ExprKind::Var { name } if name == "any" => Agent::Pod {
                    label: None,
                    pod: pods::default_pod("any"),
                },
                _ => {
                    let v = self.value(arg);
                    let label = display_name(&v);
                    Agent::Pod {
                        label: Some(label.clone()),
                        pod: pods::default_pod(&label),
                    }
                }
            };
        }
        let Some(body) = &d.call.closure else {
            self.diags.push(
                Diagnostic::error(
                    "declarative",
                    d.expr.span,
                    "`agent` needs `any`, `none` or a block",
                )
                .with_help("write `agent any`"),
            );
            return Agent::None;
        };
        let (dirs, other) = directives(&body.body);
        self.misplaced(&other, "`agent { … }`");
        for inner in dirs {
            let args = self.args(inner.call, "label");
            let settings = |this: &mut Self| -> IndexMap<String, (Value, Span)> {
                let mut m = IndexMap::new();
                if let Some(c) = &inner.call.closure {
                    for (dd, _) in directives(&c.body).0.iter().map(|x| (x, ())) {
                        let v = dd
                            .call
                            .positional()
                            .next()
                            .map(|a| (this.value(a), a.span))
                            .unwrap_or((Value::Null, dd.call.name.span));
                        m.insert(dd.name.to_string(), v);
                    }
                }
                for (k, v) in this.args(inner.call, "label") {
                    m.insert(k, (v, inner.call.name.span));
                }
                m
            };
            match inner.name {
                "label" => {
                    let label = args.get("label").map(display_name);
                    return Agent::Pod {
                        pod: pods::default_pod(label.as_deref().unwrap_or("any")),
                        label,
                    };
                }
                "node" => {
                    let s = settings(self);
                    let label = s.get("label").map(|(v, _)| display_name(v));
                    let mut pod = pods::default_pod(label.as_deref().unwrap_or("any"));
                    if let Some((ws, _)) = s.get("customWorkspace") {
                        pod.extra.insert("customWorkspace".into(), ws.clone());
                    }
                    return Agent::Pod { label, pod };
                }
                "docker" | "dockerfile" => {
                    let s = if inner.call.closure.is_some() {
                        settings(self)
                    } else {
                        args.iter()
                            .map(|(k, v)| {
                                (
                                    if k == "label" {
                                        "image".to_string()
                                    } else {
                                        k.clone()
                                    },
                                    (v.clone(), inner.call.name.span),
                                )
                            })
                            .collect()
                    };
                    let image = match inner.name {
                        "docker" => s.get("image").map(|(v, _)| display_name(v)),
                        _ => None,
                    };
                    let mut pod = pods::default_pod(image.as_deref().unwrap_or("dockerfile"));
                    pod.containers[0].image = image;
                    if inner.name == "dockerfile" {
                        self.notes.push((
                            inner.call.name.span,
                            "the image is built from a Dockerfile when the pipeline runs".into(),
                        ));
                    }
                    for (k, (v, _)) in s {
                        if k != "image" {
                            pod.extra.insert(k, v);
                        }
                    }
                    let label = pod.containers[0].image.clone();
                    return Agent::Pod { label, pod };
                }
                "kubernetes" => {
                    let s = settings(self);
                    let mut notes = std::mem::take(&mut self.notes);
                    let mut pod = PodSpec {
                        name: "kubernetes".into(),
                        ..Default::default()
                    };
                    {
                        let mut pb = PodBuilder {
                            src: self.src,
                            consts: &self.consts,
                            diags: &mut self.diags,
                            notes: &mut notes,
                        };
                        if let Some((Value::Str(y), span)) = s.get("yaml") {
                            pb.merge_yaml(&mut pod, y, *span);
                            pod.yaml.push(y.clone());
                        }
                        // Containers written in the agent block, directly or in a `podTemplate { … }` block.
                        let mut blocks: Vec<&[Stmt]> =
                            inner.call.closure.iter().map(|c| &c.body[..]).collect();
                        while let Some(block) = blocks.pop() {
                            for dd in directives(block).0 {
                                match dd.name {
                                    "containerTemplate" => {
                                        if let Some(ct) = pb.container(dd.expr) {
                                            pods::upsert(&mut pod.containers, ct);
                                        }
                                    }
                                    "podTemplate" | "containerTemplates" | "containers" => {
                                        blocks.extend(dd.call.closure.iter().map(|c| &c.body[..]))
                                    }
                                    "inheritFrom" | "yamlFile" => pod.open = true,
                                    _ => {}
                                }
                            }
                        }
                    }
                    self.notes = notes;
                    if let Some((v, _)) = s.get("yaml") {
                        pod.open |= v.is_dynamic();
                    }
                    if let Some((Value::Str(f), span)) = s.get("yamlFile") {
                        pod.open = true;
                        self.notes.push((*span, format!("the pod YAML is read from `{f}` in the repository when the pipeline runs")));
                        pod.yaml.push(format!("yamlFile: {f}"));
                    }
                    if let Some((Value::Str(parent), span)) = s.get("inheritFrom") {
                        match self
                            .all_templates
                            .iter()
                            .rev()
                            .find(|t| t.name.as_deref() == Some(parent.as_str()))
                        {
                            Some(t) => pod = pods::merge_pods(&t.pod, &pod),
                            None => {
                                self.notes.push((*span, format!("inherits from `{parent}`, a template defined outside this file")));
                                pod.open = true;
                                pod.inherits.push(parent.clone());
                            }
                        }
                    }
                    for key in [
                        "namespace",
                        "serviceAccount",
                        "cloud",
                        "podRetention",
                        "idleMinutes",
                        "nodeSelector",
                        "workspaceVolume",
                    ] {
                        if let Some((v, _)) = s.get(key) {
                            pod.extra.insert(key.into(), v.clone());
                        }
                    }
                    let default = s.get("defaultContainer").map(|(v, _)| display_name(v));
                    if let (Some(dc), Some((_, span))) = (&default, s.get("defaultContainer"))
                        && !pod.containers.iter().any(|c| &c.name == dc)
                        && !pod.open
                    {
                        self.diags.push(
                            Diagnostic::error(
                                "container",
                                *span,
                                format!("the pod has no container `{dc}`"),
                            )
                            .with_help("name one of the pod YAML's containers"),
                        );
                    }
                    let pod = pods::finish_k8s_pod(pod, default.as_deref());
                    return Agent::Pod {
                        label: s.get("label").map(|(v, _)| display_name(v)),
                        pod,
                    };
                }
                "any" => {
                    return Agent::Pod {
                        label: None,
                        pod: pods::default_pod("any"),
                    };
                }
                "none" => return Agent::None,
                other => self.unknown_directive(
                    other,
                    &inner,
                    &[
                        "any",
                        "none",
                        "label",
                        "node",
                        "docker",
                        "dockerfile",
                        "kubernetes",
                    ],
                    "agent",
                ),
            }
        }
        let _ = checker;
        Agent::None
    }

    fn environment(
        &mut self,
        d: &Directive<'_>,
        checker: &mut Checker<'_>,
    ) -> IndexMap<String, Value> {
        let mut env = IndexMap::new();
        let Some(body) = &d.call.closure else {
            return env;
        };
        for s in &body.body {
            match &s.kind {
                StmtKind::Assign { target, value, .. } => {
                    checker.expr(value);
                    let key = target.dotted_name().unwrap_or_default();
                    env.insert(key, self.value(value));
                }
                _ => self.diags.push(
                    Diagnostic::error(
                        "declarative",
                        s.span,
                        "`environment` holds only `NAME = value` lines",
                    )
                    .with_help("write e.g. `DEPLOY_TO = 'staging'`"),
                ),
            }
        }
        env
    }

    /// `options { timeout(…); retry(…); … }`: wrappers for the stages, settings for the controller.
    fn options_directive(
        &mut self,
        d: &Directive<'_>,
        _checker: &mut Checker<'_>,
    ) -> Vec<(String, IndexMap<String, Value>)> {
        let mut wrappers = Vec::new();
        let Some(body) = &d.call.closure else {
            return wrappers;
        };
        let (dirs, other) = directives(&body.body);
        self.misplaced(&other, "`options { … }`");
        for o in dirs {
            let first = crate::steps::find(o.name)
                .and_then(|s| s.params.first())
                .map_or("value", |(p, _)| *p);
            let args = self.args(o.call, first);
            match o.name {
                "timeout" | "retry" | "timestamps" | "ansiColor" | "lock" => {
                    wrappers.push((o.name.to_string(), args))
                }
                _ => {
                    self.options.insert(o.name.to_string(), Value::Map(args));
                }
            }
        }
        wrappers
    }

    fn parameters_directive(&mut self, d: &Directive<'_>) {
        let Some(body) = &d.call.closure else { return };
        for p in directives(&body.body).0 {
            self.parameter(p.call);
        }
    }

    fn post(
        &mut self,
        d: &Directive<'_>,
        ctx: &mut Ctx,
        checker: &mut Checker<'_>,
    ) -> IndexMap<String, Vec<Step>> {
        let mut out = IndexMap::new();
        let Some(body) = &d.call.closure else {
            return out;
        };
        let (dirs, other) = directives(&body.body);
        self.misplaced(&other, "`post { … }`");
        for c in dirs {
            if !POST_CONDITIONS.contains(&c.name) {
                self.unknown_directive(c.name, &c, POST_CONDITIONS, "post");
                continue;
            }
            let Some(b) = &c.call.closure else { continue };
            checker.stmts(&b.body);
            out.insert(c.name.to_string(), self.stmts(&b.body, ctx));
        }
        out
    }

    fn stages(&mut self, d: &Directive<'_>, ctx: &mut Ctx, checker: &mut Checker<'_>) -> Vec<Step> {
        let Some(body) = &d.call.closure else {
            return vec![];
        };
        let (dirs, other) = directives(&body.body);
        self.misplaced(&other, "`stages { … }`");
        let mut out = Vec::new();
        for s in dirs {
            if s.name != "stage" {
                self.unknown_directive(s.name, &s, &["stage"], "stages");
                continue;
            }
            out.push(self.stage(&s, ctx, checker));
        }
        out
    }

    fn stage(&mut self, d: &Directive<'_>, ctx: &mut Ctx, checker: &mut Checker<'_>) -> Step {
        let name = d
            .call
            .positional()
            .next()
            .map(|n| self.value(n))
            .unwrap_or(Value::Null);
        let mut steps = Vec::new();
        let mut when = Vec::new();
        let mut post = IndexMap::new();
        let Some(body) = &d.call.closure else {
            self.diags.push(
                Diagnostic::error(
                    "declarative",
                    d.expr.span,
                    "a declarative `stage` needs a body",
                )
                .with_help("add `steps { … }`"),
            );
            return self.step(
                StepKind::Stage {
                    name,
                    when,
                    post,
                    steps,
                },
                d.expr.span,
                ctx,
            );
        };
        let (dirs, other) = directives(&body.body);
        self.misplaced(&other, "a declarative `stage`");
        let mut inner = ctx.clone();
        inner.path.push(display_name(&name));
        // A stage agent makes a job of its own for this stage.
        let own_job = dirs
            .iter()
            .find(|x| x.name == "agent")
            .map(|a| self.agent(a, checker));
        let mut job_idx = None;
        if let Some(Agent::Pod { label, pod }) = own_job {
            let idx = self.new_job(label, pod, d.expr.span, &inner);
            inner.job = Some(idx);
            inner.container = Some(self.jobs[idx].pod.default_container.clone());
            job_idx = Some(idx);
        }
        let mut env = IndexMap::new();
        let mut wrappers = Vec::new();
        let mut fail_fast = false;
        let mut has_body = false;
        for x in &dirs {
            match x.name {
                "agent" => {}
                "steps" => {
                    has_body = true;
                    if let Some(b) = &x.call.closure {
                        checker.stmts(&b.body);
                        steps.extend(self.stmts(&b.body, &mut inner));
                    }
                }
                "stages" => {
                    has_body = true;
                    steps.extend(self.stages(x, &mut inner, checker));
                }
                "parallel" => {
                    has_body = true;
                    steps.push(self.parallel_stages(x, &mut inner, fail_fast, checker));
                }
                "matrix" => {
                    has_body = true;
                    steps.push(self.matrix(x, &mut inner, checker));
                }
                "failFast" => {
                    fail_fast = matches!(
                        x.call.positional().next().map(|e| &e.kind),
                        Some(ExprKind::Bool { value: true })
                    )
                }
                "environment" => env = self.environment(x, checker),
                "options" => wrappers = self.options_directive(x, checker),
                "when" => when = self.when(x, checker),
                "input" => {
                    let args = x.call.closure.as_ref().map(|c| {
                        directives(&c.body)
                            .0
                            .iter()
                            .map(|dd| {
                                (
                                    dd.name.to_string(),
                                    dd.call
                                        .positional()
                                        .next()
                                        .map(|a| self.value(a))
                                        .unwrap_or(Value::Null),
                                )
                            })
                            .collect()
                    });
                    steps.insert(
                        0,
                        self.step(
                            StepKind::Call {
                                name: "input".into(),
                                args: args.unwrap_or_default(),
                            },
                            x.expr.span,
                            &inner,
                        ),
                    );
                }
                "tools" => {}
                "post" => post = self.post(x, &mut inner, checker),
                other => self.unknown_directive(other, x, STAGE_DIRECTIVES, "stage"),
            }
        }
        if !has_body {
            self.diags.push(
                Diagnostic::error(
                    "declarative",
                    d.call.name.span,
                    format!(
                        "stage {} has no `steps`, `stages`, `parallel` or `matrix`",
                        name.display()
                    ),
                )
                .with_help("add `steps { … }`"),
            );
        }
        for (wname, args) in wrappers.into_iter().rev() {
            steps = vec![self.step(
                StepKind::Wrapper {
                    name: wname,
                    args,
                    steps,
                },
                d.expr.span,
                &inner,
            )];
        }
        steps = self.with_env(env, steps, d.expr.span, &inner);
        let stage = self.step(
            StepKind::Stage {
                name,
                when,
                post,
                steps,
            },
            d.expr.span,
            ctx,
        );
        match job_idx {
            Some(idx) => {
                self.jobs[idx].steps = vec![stage.clone()];
                self.node_marker(idx, d.expr.span, ctx)
            }
            None => stage,
        }
    }

    fn when(&mut self, d: &Directive<'_>, checker: &mut Checker<'_>) -> Vec<String> {
        let Some(body) = &d.call.closure else {
            return vec![];
        };
        let mut out = Vec::new();
        for s in &body.body {
            if let StmtKind::Expr { expr } = &s.kind
                && let ExprKind::Call(c) = &expr.kind
                && c.name.name == "expression"
                && let Some(b) = &c.closure
            {
                checker.stmts(&b.body);
            }
            out.push(summary(self.src, s.span, 72));
        }
        if !out.is_empty() {
            self.dynamic = true;
        }
        out
    }

    fn parallel_stages(
        &mut self,
        d: &Directive<'_>,
        ctx: &mut Ctx,
        fail_fast: bool,
        checker: &mut Checker<'_>,
    ) -> Step {
        let mut branches = Vec::new();
        let start = self.frontier.clone();
        let mut ends = Vec::new();
        if let Some(body) = &d.call.closure {
            let (dirs, other) = directives(&body.body);
            self.misplaced(&other, "`parallel { … }`");
            for s in dirs {
                if s.name != "stage" {
                    self.unknown_directive(s.name, &s, &["stage"], "parallel");
                    continue;
                }
                self.frontier = start.clone();
                let st = self.stage(&s, ctx, checker);
                ends.extend(self.frontier.clone());
                let name = s
                    .call
                    .positional()
                    .next()
                    .map(|n| self.value(n))
                    .unwrap_or(Value::Null);
                branches.push(Branch {
                    name,
                    steps: vec![st],
                });
            }
        }
        ends.dedup();
        self.frontier = if ends.is_empty() { start } else { ends };
        self.step(
            StepKind::Parallel {
                branches,
                fail_fast,
            },
            d.expr.span,
            ctx,
        )
    }

    /// `matrix { axes { axis { name 'X'; values 'a', 'b' } }; excludes { … }; stages { … } }`:
    /// one parallel branch per combination of axis values, minus the excluded ones.
    fn matrix(&mut self, d: &Directive<'_>, ctx: &mut Ctx, checker: &mut Checker<'_>) -> Step {
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        let mut excludes: Vec<Vec<(String, Vec<Value>, bool)>> = Vec::new();
        let mut stages_dir = None;
        let mut agent_dir = None;
        if let Some(body) = &d.call.closure {
            for x in directives(&body.body).0 {
                match x.name {
                    "agent" => agent_dir = Some(x),
                    "axes" => {
                        for axis in x.call.closure.iter().flat_map(|c| directives(&c.body).0) {
                            axes.push(self.axis(&axis));
                        }
                    }
                    "excludes" => {
                        for ex in x.call.closure.iter().flat_map(|c| directives(&c.body).0) {
                            let mut conds = Vec::new();
                            for axis in ex.call.closure.iter().flat_map(|c| directives(&c.body).0) {
                                let (n, v) = self.axis(&axis);
                                conds.push((
                                    n,
                                    v,
                                    axis.name == "notValues"
                                        || axis.call.closure.as_ref().is_some_and(|c| {
                                            directives(&c.body)
                                                .0
                                                .iter()
                                                .any(|a| a.name == "notValues")
                                        }),
                                ));
                            }
                            excludes.push(conds);
                        }
                    }
                    "stages" => stages_dir = Some(x),
                    "when" | "post" | "options" | "environment" | "failFast" => {}
                    other => self.unknown_directive(
                        other,
                        &x,
                        &[
                            "axes", "excludes", "stages", "agent", "when", "post", "options",
                        ],
                        "matrix",
                    ),
                }
            }
        }
        let mut combos: Vec<Vec<(String, Value)>> = vec![vec![]];
        for (name, values) in &axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values
                        .iter()
                        .map(move |v| [c.clone(), vec![(name.clone(), v.clone())]].concat())
                })
                .collect();
        }
        combos.retain(|combo| {
            !excludes.iter().any(|ex| {
                ex.iter().all(|(n, vals, negate)| {
                    let v = combo.iter().find(|(cn, _)| cn == n).map(|(_, v)| v);
                    let hit = v.is_some_and(|v| vals.contains(v));
                    if *negate { !hit } else { hit }
                })
            })
        });
        let start = self.frontier.clone();
        let mut ends = Vec::new();
        let mut branches = Vec::new();
        for combo in combos {
            let label = combo
                .iter()
                .map(|(n, v)| format!("{n}={}", display_name(v)))
                .collect::<Vec<_>>()
                .join(", ");
            let mut inner = ctx.clone();
            inner.path.push(label.clone());
            self.frontier = start.clone();
            let job = match &agent_dir {
                Some(a) => match self.agent(a, checker) {
                    Agent::Pod { label, pod } => {
                        let idx = self.new_job(label, pod, d.expr.span, &inner);
                        inner.job = Some(idx);
                        inner.container = Some(self.jobs[idx].pod.default_container.clone());
                        Some(idx)
                    }
                    Agent::None => None,
                },
                None => None,
            };
            let mut steps = match stages_dir {
                Some(ref sd) => self.stages(sd, &mut inner, checker),
                None => vec![],
            };
            ends.extend(self.frontier.clone());
            let env: IndexMap<String, Value> = combo.into_iter().collect();
            steps = self.with_env(env, steps, d.expr.span, &inner);
            if let Some(idx) = job {
                self.jobs[idx].steps = std::mem::take(&mut steps);
                steps = vec![self.node_marker(idx, d.expr.span, ctx)];
            }
            branches.push(Branch {
                name: Value::Str(label),
                steps,
            });
        }
        ends.dedup();
        self.frontier = if ends.is_empty() { start } else { ends };
        self.step(
            StepKind::Parallel {
                branches,
                fail_fast: false,
            },
            d.expr.span,
            ctx,
        )
    }

    fn axis(&mut self, axis: &Directive<'_>) -> (String, Vec<Value>) {
        let mut name = String::new();
        let mut values = Vec::new();
        for x in axis.call.closure.iter().flat_map(|c| directives(&c.body).0) {
            match x.name {
                "name" => {
                    name = x
                        .call
                        .positional()
                        .next()
                        .map(|n| display_name(&self.value(n)))
                        .unwrap_or_default()
                }
                "values" | "notValues" => {
                    values = x.call.positional().map(|v| self.value(v)).collect()
                }
                _ => {}
            }
        }
        (name, values)
    }
}
