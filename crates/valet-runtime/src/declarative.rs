//! The declarative form: `pipeline { agent …; environment …; options …; stages { … }; post { … } }`.
//!
//! Read straight from the AST: directives are calls with closures. Stages run in order; after
//! a failure the remaining stages are skipped (and reported as such); `post` conditions run
//! by the result; `when`, stage agents, `parallel` and `matrix` stages, stage `options`
//! (`timeout`, `retry`) and `environment` (with `credentials()`) are honoured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use valet_dsl::Span;
use valet_dsl::ast::{self, Call, Expr, ExprKind, StmtKind};

use crate::event::{BuildResult, NoticeLevel};
use crate::interp::{BoxFuture, Ctx, Flow, Interp, R, abort, fail};
use crate::value::{ExcKind, Value};

/// A directive: `name args { body }` with the span of the whole call.
struct Dir<'s> {
    call: &'s Call,
    span: Span,
}

impl<'s> Dir<'s> {
    fn name(&self) -> &'s str {
        &self.call.name.name
    }

    fn body(&self) -> &'s [ast::Stmt] {
        self.call
            .closure
            .as_deref()
            .map(|c| c.body.as_slice())
            .unwrap_or(&[])
    }
}

fn directives(stmts: &[ast::Stmt]) -> Vec<Dir<'_>> {
    let mut out = Vec::new();
    for s in stmts {
        if let StmtKind::Expr { expr } = &s.kind {
            if let ExprKind::Call(c) = &expr.kind {
                out.push(Dir {
                    call: c,
                    span: expr.span,
                });
                continue;
            }
            if let ExprKind::Var { name } = &expr.kind {
                // `failFast true` parses as a command; a bare word alone is ignored.
                let _ = name;
            }
        }
    }
    out
}

fn find<'s>(dirs: &'s [Dir<'s>], name: &str) -> Option<&'s Dir<'s>> {
    dirs.iter().find(|d| d.name() == name)
}

#[derive(Default, Clone)]
struct Options {
    timeout: Option<Duration>,
    retry: Option<i64>,
    skip_default_checkout: bool,
    fail_fast: bool,
    skip_after_unstable: bool,
    timestamps: bool,
}

/// Whether an agent directive allocates a pod; `None` for `agent none`.
fn agent_label(d: &Dir<'_>) -> Option<Option<String>> {
    if let Some(ast::Arg::Positional(e)) = d.call.args.first() {
        if let ExprKind::Var { name } = &e.kind {
            return if name == "none" { None } else { Some(None) };
        }
        if let Some(s) = e.as_str() {
            return Some(Some(s.to_string()));
        }
    }
    if let Some(l) = d.call.named("label").and_then(Expr::as_str) {
        return Some(Some(l.to_string()));
    }
    // `agent { label 'x' }`, `agent { node { label 'x' } }`, `agent { kubernetes { … } }`
    fn label_in(stmts: &[ast::Stmt]) -> Option<String> {
        for d in directives(stmts) {
            if d.name() == "label"
                && let Some(ast::Arg::Positional(e)) = d.call.args.first()
            {
                return e.as_str().map(str::to_string);
            }
            if let Some(l) = label_in(d.body()) {
                return Some(l);
            }
        }
        None
    }
    Some(label_in(d.body()))
}

impl<'a> Interp<'a> {
    async fn options(&self, ctx: &Ctx, d: Option<&Dir<'_>>) -> R<Options> {
        let mut o = Options::default();
        let Some(d) = d else { return Ok(o) };
        for opt in directives(d.body()) {
            let args = self.eval_args(ctx, opt.call).await?;
            match opt.name() {
                "timeout" => {
                    let n = args.get("time", 0).and_then(Value::as_f64).unwrap_or(0.0);
                    let unit = args
                        .str("unit", usize::MAX)
                        .unwrap_or_else(|| "MINUTES".into());
                    let secs = match unit.to_ascii_uppercase().as_str() {
                        "SECONDS" => n,
                        "MILLISECONDS" => n / 1000.0,
                        "HOURS" => n * 3600.0,
                        "DAYS" => n * 86400.0,
                        _ => n * 60.0,
                    };
                    o.timeout = Some(Duration::from_secs_f64(secs.max(0.0)));
                }
                "retry" => o.retry = args.int("count", 0),
                "skipDefaultCheckout" => {
                    o.skip_default_checkout = args.pos.first().map(Value::truthy).unwrap_or(true)
                }
                "parallelsAlwaysFailFast" => o.fail_fast = true,
                "skipStagesAfterUnstable" => o.skip_after_unstable = true,
                "timestamps" => o.timestamps = true,
                _ => {}
            }
        }
        Ok(o)
    }

    /// Runs `f` under a stage's or the pipeline's `timeout` and `retry` options.
    async fn with_options<'s>(
        &'s self,
        ctx: &'s Ctx,
        o: &Options,
        f: &(dyn Fn(Ctx) -> BoxFuture<'s, R<Value>> + Send + Sync),
    ) -> R<Value> {
        let attempts = o.retry.unwrap_or(1).max(1);
        let mut attempt = 1;
        loop {
            let r = match o.timeout {
                None => f(ctx.clone()).await,
                Some(d) => {
                    let token = ctx.cancel.child_token();
                    let fut = f(Ctx {
                        cancel: token.clone(),
                        ..ctx.clone()
                    });
                    tokio::pin!(fut);
                    tokio::select! {
                        r = &mut fut => r,
                        _ = tokio::time::sleep(d) => {
                            self.log(ctx, "Timeout has been exceeded").await;
                            token.cancel();
                            match fut.await {
                                Err(Flow::Throw(e)) if e.kind == ExcKind::Abort && !ctx.cancel.is_cancelled() => {
                                    Err(abort(format!("Timeout has been exceeded ({} s)", d.as_secs_f64())))
                                }
                                other => other,
                            }
                        }
                    }
                }
            };
            match r {
                Err(Flow::Throw(e)) if attempt < attempts && !ctx.cancel.is_cancelled() => {
                    self.log(ctx, format!("ERROR: {}", e.message)).await;
                    self.log(
                        ctx,
                        format!("Retrying (attempt {} of {attempts})", attempt + 1),
                    )
                    .await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn environment(&self, ctx: &Ctx, d: Option<&Dir<'_>>) -> R<Ctx> {
        let mut ctx = ctx.clone();
        let Some(d) = d else { return Ok(ctx) };
        for s in d.body() {
            let StmtKind::Assign { target, value, .. } = &s.kind else {
                continue;
            };
            let Some(name) = target.dotted_name() else {
                continue;
            };
            if let ExprKind::Call(c) = &value.kind
                && c.target.is_none()
                && c.name.name == "credentials"
            {
                let id = match c.positional().next() {
                    Some(e) => self.eval(&ctx, e).await?.display(),
                    None => String::new(),
                };
                let vars = self.credentials_env(&name, &id)?;
                ctx = ctx.with_env(vars);
                continue;
            }
            let v = self.eval(&ctx, value).await?;
            ctx = ctx.with_env([(name, v.display())]);
        }
        Ok(ctx)
    }

    async fn parameters(&self, ctx: &Ctx, d: Option<&Dir<'_>>) -> R<()> {
        let Some(d) = d else { return Ok(()) };
        for s in d.body() {
            if let StmtKind::Expr { expr } = &s.kind {
                let v = self.eval(ctx, expr).await?;
                self.declare_param(&v);
            }
        }
        Ok(())
    }

    /// `when { … }`: every condition must hold.
    fn when_holds<'s>(
        &'s self,
        ctx: &'s Ctx,
        stmts: &'s [ast::Stmt],
        any: bool,
    ) -> BoxFuture<'s, R<bool>> {
        Box::pin(async move {
            let conds: Vec<Dir<'_>> = directives(stmts)
                .into_iter()
                .filter(|d| !matches!(d.name(), "beforeAgent" | "beforeInput" | "beforeOptions"))
                .collect();
            if conds.is_empty() {
                return Ok(true);
            }
            for c in &conds {
                let holds = self.condition(ctx, c).await?;
                if any && holds {
                    return Ok(true);
                }
                if !any && !holds {
                    return Ok(false);
                }
            }
            Ok(!any)
        })
    }

    async fn condition(&self, ctx: &Ctx, c: &Dir<'_>) -> R<bool> {
        let glob = |pattern: &str, value: &str, comparator: Option<String>| -> R<bool> {
            Ok(
                match comparator
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .as_deref()
                {
                    Some("EQUALS") => pattern == value,
                    Some("REGEXP") => {
                        crate::methods::regex(&format!("^(?:{pattern})$"))?.is_match(value)
                    }
                    _ => crate::glob::AntSet::new(pattern)?.matches(value),
                },
            )
        };
        Ok(match c.name() {
            "expression" => {
                let inner = Ctx {
                    scope: ctx.scope.child(),
                    ..ctx.clone()
                };
                match self.exec_stmts(&inner, c.body()).await {
                    Ok(v) | Err(Flow::Return(v)) => v.truthy(),
                    Err(e) => return Err(e),
                }
            }
            "not" => !self.when_holds(ctx, c.body(), false).await?,
            "allOf" => self.when_holds(ctx, c.body(), false).await?,
            "anyOf" => self.when_holds(ctx, c.body(), true).await?,
            _ => {
                let args = self.eval_args(ctx, c.call).await?;
                match c.name() {
                    "branch" => {
                        let pattern = args.str("pattern", 0).unwrap_or_default();
                        let branch = self.env_get(ctx, "BRANCH_NAME").unwrap_or_default();
                        !branch.is_empty()
                            && glob(&pattern, &branch, args.str("comparator", usize::MAX))?
                    }
                    "environment" => {
                        let name = args.str("name", usize::MAX).unwrap_or_default();
                        let value = args.str("value", usize::MAX).unwrap_or_default();
                        self.env_get(ctx, &name).unwrap_or_default() == value
                    }
                    "equals" => {
                        let e = args.named.get("expected").cloned().unwrap_or(Value::Null);
                        let a = args.named.get("actual").cloned().unwrap_or(Value::Null);
                        e.equals(&a) || e.display() == a.display()
                    }
                    "buildingTag" => self.env_get(ctx, "TAG_NAME").is_some_and(|t| !t.is_empty()),
                    "tag" => match self.env_get(ctx, "TAG_NAME").filter(|t| !t.is_empty()) {
                        Some(t) => match args.str("pattern", 0) {
                            Some(p) => glob(&p, &t, args.str("comparator", usize::MAX))?,
                            None => true,
                        },
                        None => false,
                    },
                    "changeRequest" => self
                        .env_get(ctx, "CHANGE_ID")
                        .is_some_and(|t| !t.is_empty()),
                    "triggeredBy" => {
                        let cause = args.str("cause", 0).unwrap_or_default();
                        cause.contains("UserIdCause") || cause.contains("UserCause")
                    }
                    "changelog" | "changeset" | "isRestartedRun" => false,
                    other => return Err(fail(format!("when: unknown condition `{other}`"))),
                }
            }
        })
    }

    async fn post(
        &self,
        ctx: &Ctx,
        d: Option<&Dir<'_>>,
        result: impl Fn() -> BuildResult,
    ) -> R<()> {
        let Some(d) = d else { return Ok(()) };
        let blocks = directives(d.body());
        let mut first_err: Option<Flow> = None;
        let order = [
            "always",
            "changed",
            "fixed",
            "regression",
            "aborted",
            "failure",
            "success",
            "unstable",
            "unsuccessful",
            "notBuilt",
            "cleanup",
        ];
        for cond in order {
            let Some(b) = blocks.iter().find(|b| b.name() == cond) else {
                continue;
            };
            let r = result();
            let run = match cond {
                "always" | "cleanup" => true,
                "changed" | "fixed" | "regression" => false,
                "aborted" => r == BuildResult::Aborted,
                "failure" => r == BuildResult::Failure,
                "success" => r == BuildResult::Success,
                "unstable" => r == BuildResult::Unstable,
                "unsuccessful" => r != BuildResult::Success,
                "notBuilt" => r == BuildResult::NotBuilt,
                _ => false,
            };
            if !run {
                continue;
            }
            // Post blocks run even when the build is being interrupted.
            let inner = Ctx {
                scope: ctx.scope.child(),
                cancel: Default::default(),
                ..ctx.clone()
            };
            if let Err(e) = self.exec_stmts(&inner, b.body()).await {
                if let Flow::Throw(ex) = &e {
                    self.log(
                        ctx,
                        format!("Error when executing {cond} post condition: {}", ex.message),
                    )
                    .await;
                    self.set_build_result(BuildResult::Failure);
                    self.set_stage_result(ctx, BuildResult::Failure);
                }
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stages<'s>(
        &'s self,
        ctx: &'s Ctx,
        stmts: &'s [ast::Stmt],
        opts: &'s Options,
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            let mut failed: Option<Flow> = None;
            for d in directives(stmts) {
                if d.name() != "stage" {
                    continue;
                }
                let skip = if failed.is_some() {
                    Some("skipped due to earlier failure(s)")
                } else if opts.skip_after_unstable && self.build_result() == BuildResult::Unstable {
                    Some("skipped due to earlier stage(s) marking the build as unstable")
                } else {
                    None
                };
                if let Err(e) = self.declarative_stage(ctx, &d, skip, opts).await
                    && failed.is_none()
                {
                    failed = Some(e);
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(Value::Null),
            }
        })
    }

    fn declarative_stage<'s>(
        &'s self,
        ctx: &'s Ctx,
        d: &'s Dir<'s>,
        skip: Option<&'s str>,
        parent: &'s Options,
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            let name = match d.call.positional().next().or_else(|| d.call.named("name")) {
                Some(e) => self.eval(ctx, e).await?.display(),
                None => return Err(fail("stage: a name is required")),
            };
            let sctx = self.start_stage(ctx, &name, false).await;
            let started = Instant::now();
            if let Some(reason) = skip {
                self.log(&sctx, format!("Stage \"{name}\" {reason}")).await;
                self.finish_stage(&sctx, false, started, None, true).await;
                return Ok(Value::Null);
            }
            let dirs = directives(d.body());
            let when = find(&dirs, "when");
            let before_agent = when.is_some_and(|w| {
                directives(w.body()).iter().any(|c| {
                    c.name() == "beforeAgent"
                        && c.call.args.first().is_some_and(|a| {
                            matches!(
                                a,
                                ast::Arg::Positional(Expr {
                                    kind: ExprKind::Bool { value: true },
                                    ..
                                })
                            )
                        })
                })
            });
            if let (Some(w), true) = (when, before_agent) {
                match self.when_holds(&sctx, w.body(), false).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.log(
                            &sctx,
                            format!("Stage \"{name}\" skipped due to when conditional"),
                        )
                        .await;
                        self.finish_stage(&sctx, false, started, None, true).await;
                        return Ok(Value::Null);
                    }
                    Err(e) => {
                        self.finish_stage(&sctx, false, started, exc(&e), false)
                            .await;
                        return Err(e);
                    }
                }
            }
            // The stage's own agent.
            let agent = find(&dirs, "agent").and_then(agent_label);
            let mut pod_started = None;
            let mut actx = sctx.clone();
            if let Some(label) = agent {
                let job = self.graph.job_at(d.span);
                match self.provision(&sctx, job, label).await {
                    Ok((c, t)) => {
                        actx = c;
                        pod_started = Some(t);
                    }
                    Err(e) => {
                        self.finish_stage(&sctx, false, started, exc(&e), false)
                            .await;
                        return Err(e);
                    }
                }
                if !parent.skip_default_checkout
                    && self.opts.scm.is_some()
                    && let Err(e) = self.checkout_scm(&actx).await
                {
                    let r: R<Value> = Err(e);
                    self.release(&actx, pod_started.unwrap_or(started), &r)
                        .await;
                    self.finish_stage(&sctx, false, started, r.as_ref().err().and_then(exc), false)
                        .await;
                    return r;
                }
            }
            let r = self
                .stage_body(&actx, &dirs, &name, when.filter(|_| !before_agent), parent)
                .await;
            let r = match r {
                Ok(Some(v)) => Ok(v),
                Ok(None) => {
                    // `when` was false.
                    if let Some(t) = pod_started {
                        self.release(&actx, t, &Ok(Value::Null)).await;
                    }
                    self.log(
                        &sctx,
                        format!("Stage \"{name}\" skipped due to when conditional"),
                    )
                    .await;
                    self.finish_stage(&sctx, false, started, None, true).await;
                    return Ok(Value::Null);
                }
                Err(e) => Err(e),
            };
            // Stage post, by the stage's result.
            let stage_ctx = actx.stage.clone();
            let err_result = match &r {
                Err(Flow::Throw(e)) if e.kind == ExcKind::Abort => Some(BuildResult::Aborted),
                Err(Flow::Throw(_)) => Some(BuildResult::Failure),
                _ => None,
            };
            // As in Jenkins, a failed stage has failed the build by the time its `post`
            // runs: `currentBuild.currentResult` and `.result` say so there.
            if let Some(e) = err_result {
                self.set_build_result(e);
            }
            let post = self
                .post(&actx, find(&dirs, "post"), || {
                    let mut res = stage_ctx
                        .as_ref()
                        .map(|s| *crate::value::lock(&s.result))
                        .unwrap_or(BuildResult::Success);
                    if let Some(e) = err_result {
                        res = res.combine(e);
                    }
                    res
                })
                .await;
            let r = match (r, post) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e),
                (Ok(v), Ok(())) => Ok(v),
            };
            if let Some(t) = pod_started {
                self.release(&actx, t, &r).await;
            }
            self.finish_stage(&sctx, false, started, r.as_ref().err().and_then(exc), false)
                .await;
            r
        })
    }

    /// The stage after its agent: environment, `when`, options, then steps / parallel /
    /// stages / matrix. `Ok(None)` when `when` says the stage does not run.
    async fn stage_body(
        &self,
        ctx: &Ctx,
        dirs: &[Dir<'_>],
        name: &str,
        when: Option<&Dir<'_>>,
        parent: &Options,
    ) -> R<Option<Value>> {
        let ectx = self.environment(ctx, find(dirs, "environment")).await?;
        if let Some(w) = when
            && !self.when_holds(&ectx, w.body(), false).await?
        {
            return Ok(None);
        }
        if let Some(i) = find(dirs, "input") {
            let args = self.eval_args(&ectx, i.call).await.ok();
            let _ = args;
            return Err(abort(format!(
                "stage \"{name}\" waits for input, and `valet run` is not interactive"
            )));
        }
        if find(dirs, "tools").is_some() {
            self.notice(
                NoticeLevel::Warning,
                "`tools { }`: valet does not install tools; those on the PATH are used",
            )
            .await;
        }
        let mut opts = self.options(&ectx, find(dirs, "options")).await?;
        let mut ectx = ectx;
        ectx.timestamps |= opts.timestamps;
        opts.fail_fast |= parent.fail_fast;
        opts.skip_default_checkout |= parent.skip_default_checkout;
        if let Some(f) = find(dirs, "failFast") {
            opts.fail_fast = f.call.args.first().is_none_or(|a| {
                matches!(
                    a,
                    ast::Arg::Positional(Expr {
                        kind: ExprKind::Bool { value: true },
                        ..
                    })
                )
            });
        }
        let opts2 = opts.clone();
        let dirs_ref = dirs;
        let run = move |c: Ctx| -> BoxFuture<'_, R<Value>> {
            let opts = opts2.clone();
            Box::pin(async move {
                if let Some(s) = find(dirs_ref, "steps") {
                    let inner = Ctx {
                        scope: c.scope.child(),
                        ..c.clone()
                    };
                    return self.exec_stmts(&inner, s.body()).await;
                }
                if let Some(p) = find(dirs_ref, "parallel") {
                    let stages: Vec<Dir<'_>> = directives(p.body())
                        .into_iter()
                        .filter(|d| d.name() == "stage")
                        .collect();
                    return self.parallel_stages(&c, stages, &opts).await;
                }
                if let Some(s) = find(dirs_ref, "stages") {
                    return self.stages(&c, s.body(), &opts).await;
                }
                if let Some(m) = find(dirs_ref, "matrix") {
                    return self.matrix(&c, m, &opts).await;
                }
                Ok(Value::Null)
            })
        };
        self.with_options(&ectx, &opts, &run).await.map(Some)
    }

    async fn parallel_stages(&self, ctx: &Ctx, stages: Vec<Dir<'_>>, opts: &Options) -> R<Value> {
        let named: Vec<(String, &Dir<'_>)> = {
            let mut v = Vec::new();
            for d in &stages {
                let name = match d.call.positional().next() {
                    Some(e) => self.eval(ctx, e).await?.display(),
                    None => String::new(),
                };
                v.push((name, d));
            }
            v
        };
        let mut inner_opts = opts.clone();
        inner_opts.fail_fast = false;
        let inner_opts = &inner_opts;
        let tokens: Vec<_> = named.iter().map(|_| ctx.cancel.child_token()).collect();
        let mut futs = futures::stream::FuturesUnordered::new();
        for (i, (name, d)) in named.iter().enumerate() {
            let branch = match &ctx.branch {
                Some(b) => format!("{b}/{name}"),
                None => name.clone(),
            };
            let bctx = Ctx {
                cancel: tokens[i].clone(),
                scope: ctx.scope.child(),
                branch: Some(branch),
                ..ctx.clone()
            };
            futs.push(Box::pin(async move {
                (i, self.declarative_stage(&bctx, d, None, inner_opts).await)
            }) as BoxFuture<'_, (usize, R<Value>)>);
        }
        let mut first: Option<Flow> = None;
        use futures::StreamExt as _;
        while let Some((i, r)) = futs.next().await {
            if let Err(f) = r {
                let real = matches!(&f, Flow::Throw(e) if e.kind != ExcKind::Abort);
                if opts.fail_fast && real && first.is_none() {
                    self.log(ctx, format!("Failed in branch {}", named[i].0))
                        .await;
                    for (j, t) in tokens.iter().enumerate() {
                        if j != i {
                            t.cancel();
                        }
                    }
                }
                if first.is_none()
                    || (real && matches!(&first, Some(Flow::Throw(e)) if e.kind == ExcKind::Abort))
                {
                    first = Some(f);
                }
            }
        }
        match first {
            Some(f) => Err(f),
            None => Ok(Value::Null),
        }
    }

    async fn matrix(&self, ctx: &Ctx, m: &Dir<'_>, opts: &Options) -> R<Value> {
        let dirs = directives(m.body());
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(a) = find(&dirs, "axes") {
            for axis in directives(a.body()).iter().filter(|d| d.name() == "axis") {
                let (name, values) = self.axis(ctx, axis).await?;
                axes.push((name, values));
            }
        }
        let mut excludes: Vec<Vec<(String, Vec<String>, bool)>> = Vec::new();
        if let Some(ex) = find(&dirs, "excludes") {
            for e in directives(ex.body())
                .iter()
                .filter(|d| d.name() == "exclude")
            {
                let mut conds = Vec::new();
                for axis in directives(e.body()).iter().filter(|d| d.name() == "axis") {
                    let inner = directives(axis.body());
                    let not = inner.iter().any(|d| d.name() == "notValues");
                    let (name, values) = self.axis(ctx, axis).await?;
                    conds.push((name, values, not));
                }
                excludes.push(conds);
            }
        }
        let mut cells: Vec<Vec<(String, String)>> = vec![vec![]];
        for (name, values) in &axes {
            let mut next = Vec::new();
            for c in &cells {
                for v in values {
                    let mut c = c.clone();
                    c.push((name.clone(), v.clone()));
                    next.push(c);
                }
            }
            cells = next;
        }
        cells.retain(|cell| {
            !excludes.iter().any(|conds| {
                conds.iter().all(|(n, vals, not)| {
                    let v = cell
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    vals.contains(&v) != *not
                })
            })
        });
        let agent = find(&dirs, "agent").and_then(agent_label);
        let span = m.span;
        let branches: Vec<(String, Vec<(String, String)>)> = cells
            .into_iter()
            .map(|c| {
                (
                    c.iter()
                        .map(|(k, v)| format!("{k} = '{v}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    c,
                )
            })
            .collect();
        let dirs_ref = &dirs;
        let agent_ref = &agent;
        self.run_branches(ctx, branches, opts.fail_fast, move |it, bctx, cell| {
            Box::pin(async move {
                let cctx = bctx.with_env(cell);
                let mut actx = cctx.clone();
                let mut pod_started = None;
                if let Some(label) = agent_ref.clone() {
                    let job = it.graph.job_at(span);
                    let (c, t) = it.provision(&cctx, job, label).await?;
                    actx = c;
                    pod_started = Some(t);
                }
                let r = async {
                    let ectx = it.environment(&actx, find(dirs_ref, "environment")).await?;
                    if let Some(w) = find(dirs_ref, "when")
                        && !it.when_holds(&ectx, w.body(), false).await?
                    {
                        return Ok(Value::Null);
                    }
                    match find(dirs_ref, "stages") {
                        Some(s) => it.stages(&ectx, s.body(), &Options::default()).await,
                        None => Ok(Value::Null),
                    }
                }
                .await;
                if let Some(t) = pod_started {
                    it.release(&actx, t, &r).await;
                }
                r
            })
        })
        .await
    }

    async fn axis(&self, ctx: &Ctx, axis: &Dir<'_>) -> R<(String, Vec<String>)> {
        let mut name = String::new();
        let mut values = Vec::new();
        for d in directives(axis.body()) {
            let args = self.eval_args(ctx, d.call).await?;
            match d.name() {
                "name" => name = args.str("name", 0).unwrap_or_default(),
                "values" | "notValues" => values.extend(args.pos.iter().map(Value::display)),
                _ => {}
            }
        }
        Ok((name, values))
    }
}

fn exc(f: &Flow) -> Option<&crate::value::Exception> {
    match f {
        Flow::Throw(e) => Some(e),
        _ => None,
    }
}

/// `pipeline { … }`
pub(crate) async fn pipeline(it: &Interp<'_>, ctx: &Ctx, body: &ast::Closure, span: Span) -> R<()> {
    let dirs = directives(&body.body);
    for d in &dirs {
        if !matches!(
            d.name(),
            "agent"
                | "environment"
                | "options"
                | "parameters"
                | "stages"
                | "post"
                | "tools"
                | "triggers"
                | "libraries"
                | "input"
        ) {
            return Err(fail(format!(
                "`{}` is not a section of a declarative pipeline",
                d.name()
            )));
        }
    }
    it.parameters(ctx, find(&dirs, "parameters")).await?;
    if find(&dirs, "tools").is_some() {
        it.notice(
            NoticeLevel::Warning,
            "`tools { }`: valet does not install tools; those on the PATH are used",
        )
        .await;
    }
    let opts = it.options(ctx, find(&dirs, "options")).await?;
    let agent = find(&dirs, "agent").and_then(agent_label);
    let mut actx = ctx.clone();
    let mut pod_started = None;
    if let Some(label) = agent {
        let job = it.graph.pipeline_job(span);
        let (c, t) = it.provision(ctx, job, label).await?;
        actx = c;
        pod_started = Some(t);
    }
    let r: R<Value> = async {
        if pod_started.is_some() && !opts.skip_default_checkout && it.opts.scm.is_some() {
            it.checkout_scm(&actx).await?;
        }
        let mut ectx = it.environment(&actx, find(&dirs, "environment")).await?;
        ectx.timestamps |= opts.timestamps;
        let stages = find(&dirs, "stages")
            .ok_or_else(|| fail("a declarative pipeline needs `stages { … }`"))?;
        let stages_body = stages.body();
        let opts_ref = &opts;
        let run = move |c: Ctx| -> BoxFuture<'_, R<Value>> {
            Box::pin(async move { it.stages(&c, stages_body, opts_ref).await })
        };
        let r = it
            .with_options(
                &ectx,
                &Options {
                    timeout: opts.timeout,
                    retry: opts.retry,
                    ..Options::default()
                },
                &run,
            )
            .await;
        let err_result = match &r {
            Err(Flow::Throw(e)) if e.kind == ExcKind::Abort => Some(BuildResult::Aborted),
            Err(Flow::Throw(_)) => Some(BuildResult::Failure),
            _ => None,
        };
        if let Some(e) = err_result {
            it.set_build_result(e);
        }
        let post = it
            .post(&ectx, find(&dirs, "post"), || {
                let mut res = it.build_result();
                if let Some(e) = err_result {
                    res = res.combine(e);
                }
                res
            })
            .await;
        match (r, post) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        }
    }
    .await;
    if let Some(t) = pod_started {
        it.release(&actx, t, &r).await;
    }
    let _ = Arc::new(());
    r.map(|_| ())
}
