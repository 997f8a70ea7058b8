//! The tree-walking interpreter: statements, expressions, calls, closures and functions.
//!
//! Steps live in `steps.rs`, methods of values in `methods.rs`, the declarative form in
//! `declarative.rs`. Everything async is a boxed future, so that the recursion of the
//! language (closures calling steps calling closures) can be expressed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indexmap::IndexMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use valet_backend::{Backend, Pod, PodSpec};
use valet_dsl::ast::{
    self, AssignOp, BinaryOp, Expr, ExprKind, GStringPart, MapKey, Stmt, StmtKind, UnaryOp,
};
use valet_dsl::{SourceFile, Span};
use valet_plan::model::JobGraph;

use crate::RunOptions;
use crate::event::{BuildResult, Event, NoticeLevel, Place, Stream};
use crate::scope::Scope;
use crate::secrets::{Masker, StreamMasker};
use crate::value::{ClosureValue, ExcKind, Exception, Obj, Value, lock};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub(crate) type R<T> = Result<T, Flow>;

/// How control leaves a statement other than by finishing it.
pub(crate) enum Flow {
    Throw(Arc<Exception>),
    Return(Value),
    Break,
    Continue,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Throw(e) => write!(f, "Throw({})", e.to_display()),
            Flow::Return(v) => write!(f, "Return({})", v.display()),
            Flow::Break => f.write_str("Break"),
            Flow::Continue => f.write_str("Continue"),
        }
    }
}

impl From<Exception> for Flow {
    fn from(e: Exception) -> Flow {
        Flow::Throw(Arc::new(e))
    }
}

/// A failure as the `error` step and a failing `sh` raise it.
pub(crate) fn fail(msg: impl Into<String>) -> Flow {
    Exception::new("hudson.AbortException", msg).into()
}

pub(crate) fn err(class: &str, msg: impl Into<String>) -> Flow {
    Exception::new(class, msg).into()
}

pub(crate) fn abort(msg: impl Into<String>) -> Flow {
    Exception::abort(msg).into()
}

/// A script brought in by `load`: its functions and top-level variables.
pub(crate) struct Loaded {
    pub(crate) functions: HashMap<String, Arc<ast::Function>>,
    pub(crate) scope: Scope,
}

/// The pod a job runs in.
pub(crate) struct PodCtx {
    pub(crate) pod: Arc<dyn Pod>,
    pub(crate) job: String,
    pub(crate) spec: PodSpec,
    pub(crate) workspace: PathBuf,
    /// No plan job matched this `node`: containers named in the body are accepted and run
    /// in the default container.
    pub(crate) fallback: bool,
    /// When the pod was asked for and when its last phase was reached, until its first
    /// step's first byte (then `None`).
    pub(crate) timeline: Mutex<Option<(Instant, Instant)>>,
}

pub(crate) struct StageCtx {
    pub(crate) name: String,
    pub(crate) result: Mutex<BuildResult>,
    /// The order in which stages started: the closing summary lists them so, whatever
    /// order they end in.
    pub(crate) started_seq: u64,
}

/// The dynamic context of running code: where it runs, with which environment.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) scope: Scope,
    /// Inside `timestamps { … }` (or `options { timestamps() }`): each line of output starts
    /// with the time.
    pub(crate) timestamps: bool,
    pub(crate) module: Option<Arc<Loaded>>,
    /// `withEnv`, `environment {}`, node and stage variables, innermost last.
    pub(crate) env: Arc<Vec<(String, String)>>,
    pub(crate) pod: Option<Arc<PodCtx>>,
    pub(crate) container: Option<String>,
    /// The directory of `dir(…)`, relative to the workspace (or absolute).
    pub(crate) cwd: Option<String>,
    pub(crate) stage: Option<Arc<StageCtx>>,
    /// Enclosing stages and branches.
    pub(crate) path: Arc<Vec<String>>,
    pub(crate) branch: Option<String>,
    pub(crate) cancel: CancellationToken,
    pub(crate) depth: u32,
}

impl Ctx {
    pub(crate) fn with_env(&self, vars: impl IntoIterator<Item = (String, String)>) -> Ctx {
        let mut env = (*self.env).clone();
        for (k, v) in vars {
            if let Some(base) = k.strip_prefix("PATH+") {
                let _ = base;
                let cur = env
                    .iter()
                    .rev()
                    .find(|(n, _)| n == "PATH")
                    .map(|(_, v)| v.clone());
                let joined = match cur {
                    Some(c) => format!("{v}:{c}"),
                    None => format!("{v}:$PATH"),
                };
                env.push(("PATH".into(), joined));
            } else {
                env.push((k, v));
            }
        }
        let mut c = self.clone();
        c.env = Arc::new(env);
        c
    }

    pub(crate) fn place(&self) -> Place {
        Place {
            job: self.pod.as_ref().map(|p| p.job.clone()),
            branch: self.branch.clone(),
            stage: self
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "STAGE_NAME")
                .map(|(_, v)| v.clone()),
            container: self.pod.as_ref().map(|p| {
                self.container
                    .clone()
                    .unwrap_or_else(|| p.spec.default_container.clone())
            }),
        }
    }
}

pub(crate) struct BuildState {
    pub(crate) result: BuildResult,
    /// Whether `currentBuild.result` was set (it reads `null` until then, as in Jenkins).
    pub(crate) result_set: bool,
    pub(crate) display_name: String,
    pub(crate) description: Option<String>,
}

/// A stage's line in the closing summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageSummary {
    pub path: Vec<String>,
    pub parallel_branch: bool,
    pub result: BuildResult,
    pub skipped: bool,
    pub duration_ms: u64,
}

pub(crate) struct Interp<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) graph: &'a JobGraph,
    pub(crate) source: &'a SourceFile,
    pub(crate) opts: &'a RunOptions,
    pub(crate) build_id: String,
    pub(crate) tx: mpsc::Sender<Event>,
    pub(crate) masker: Masker,
    pub(crate) root: Scope,
    pub(crate) functions: HashMap<String, Arc<ast::Function>>,
    closures: Mutex<HashMap<usize, Arc<ast::Closure>>>,
    pub(crate) loaded: Mutex<Vec<Arc<ast::Script>>>,
    /// The environment every step starts from: the process's (less secrets), `--env`, build variables.
    pub(crate) base_env: BTreeMap<String, String>,
    /// `env.X = …` assignments.
    pub(crate) global_env: Mutex<IndexMap<String, String>>,
    pub(crate) params: Value,
    pub(crate) declared_params: Mutex<HashMap<String, String>>,
    pub(crate) build: Mutex<BuildState>,
    /// Stashes by name; their data is in files of `spool`.
    pub(crate) stashes: Mutex<HashMap<String, Arc<crate::steps::Stash>>>,
    /// The build's temporary directory for stashes and archives on their way, made when
    /// first needed and removed with the build.
    pub(crate) spool: Mutex<Option<tempfile::TempDir>>,
    pub(crate) next_id: AtomicU64,
    /// The closing summary's lines, with the order their stages started in.
    pub(crate) stages: Mutex<Vec<(u64, StageSummary)>>,
    pub(crate) next_stage_seq: std::sync::atomic::AtomicU64,
    pub(crate) notices: Mutex<Vec<String>>,
    pub(crate) started: Instant,
}

const MAX_DEPTH: u32 = 400;

/// Below this much stack left on the thread, the interpreter refuses to go deeper: a
/// pipeline's recursion or nesting ends its build with an error naming the line (as Jenkins'
/// StackOverflowError does) instead of overflowing the stack of the process, which would
/// take every other build with it. Polls between two checks use far less than this, in
/// debug builds too.
const STACK_RED_ZONE: usize = 256 * 1024;

impl Interp<'_> {
    /// An error when the thread's stack is nearly used up; `at` is where the interpreter is.
    fn stack_guard(&self, at: Span) -> R<()> {
        match stacker::remaining_stack() {
            Some(left) if left < STACK_RED_ZONE => {
                let line = self.source.line_col(at.start as usize).line;
                Err(err(
                    "java.lang.StackOverflowError",
                    format!(
                        "the pipeline nests too deeply (recursion or nested calls) at line {line}"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Evaluated arguments of a call.
pub(crate) struct Args {
    pub(crate) pos: Vec<Value>,
    pub(crate) named: IndexMap<String, Value>,
    pub(crate) body: Option<Arc<ClosureValue>>,
}

impl Args {
    /// The named argument `name`, or else positional argument `i`.
    pub(crate) fn get(&self, name: &str, i: usize) -> Option<&Value> {
        self.named
            .get(name)
            .or_else(|| self.pos.get(i))
            .filter(|v| !matches!(v, Value::Closure(_)) || name == "body")
    }

    pub(crate) fn str(&self, name: &str, i: usize) -> Option<String> {
        self.get(name, i)
            .filter(|v| !matches!(v, Value::Null))
            .map(Value::display)
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.named.get(name).is_some_and(Value::truthy)
    }

    pub(crate) fn int(&self, name: &str, i: usize) -> Option<i64> {
        match self.get(name, i)? {
            Value::Int(n) => Some(*n),
            Value::Float(f) => Some(*f as i64),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The closure the step runs: the trailing one, or a closure passed as the last argument.
    pub(crate) fn body(&self) -> Option<Arc<ClosureValue>> {
        self.body.clone().or_else(|| match self.pos.last() {
            Some(Value::Closure(c)) => Some(c.clone()),
            _ => None,
        })
    }
}

impl<'a> Interp<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: &'a dyn Backend,
        graph: &'a JobGraph,
        source: &'a SourceFile,
        opts: &'a RunOptions,
        script: &ast::Script,
        tx: mpsc::Sender<Event>,
        base_env: BTreeMap<String, String>,
    ) -> Self {
        let mut functions = HashMap::new();
        for s in &script.stmts {
            if let StmtKind::Function(f) = &s.kind {
                functions.insert(f.name.name.clone(), Arc::new(f.clone()));
            }
        }
        Interp {
            backend,
            graph,
            source,
            opts,
            build_id: format!("{}-{}", opts.job_name_or_default(source), opts.build_number),
            tx,
            masker: Masker::default(),
            root: Scope::root(),
            functions,
            closures: Mutex::new(HashMap::new()),
            loaded: Mutex::new(Vec::new()),
            base_env,
            global_env: Mutex::new(IndexMap::new()),
            params: Value::map(IndexMap::new()),
            declared_params: Mutex::new(HashMap::new()),
            build: Mutex::new(BuildState {
                result: BuildResult::Success,
                result_set: false,
                display_name: format!("#{}", opts.build_number),
                description: None,
            }),
            stashes: Mutex::new(HashMap::new()),
            spool: Mutex::new(None),
            next_id: AtomicU64::new(1),
            stages: Mutex::new(Vec::new()),
            next_stage_seq: std::sync::atomic::AtomicU64::new(0),
            notices: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    // ------------------------------------------------------------------ events

    pub(crate) async fn emit(&self, mut e: Event) {
        if !self.masker.is_empty() {
            e.mask_texts(|s| self.masker.mask_str(s));
        }
        let _ = self.tx.send(e).await;
    }

    pub(crate) async fn log(&self, ctx: &Ctx, text: impl AsRef<str>) {
        let mut text = self.masker.mask_str(text.as_ref());
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if ctx.timestamps {
            text = stamp_lines(&text, &mut false, std::time::SystemTime::now());
        }
        self.emit(Event::Output {
            step: None,
            stream: Stream::Log,
            text,
            place: ctx.place(),
        })
        .await;
    }

    /// A notice, emitted once per build for the same text.
    pub(crate) async fn notice(&self, level: NoticeLevel, message: impl Into<String>) {
        let message = self.masker.mask_str(&message.into());
        {
            let mut seen = lock(&self.notices);
            if seen.contains(&message) {
                return;
            }
            seen.push(message.clone());
        }
        self.emit(Event::Notice { level, message }).await;
    }

    pub(crate) async fn output(
        &self,
        ctx: &Ctx,
        step: Option<u64>,
        stream: Stream,
        masker: &mut StreamMasker,
        bytes: &[u8],
        end: bool,
    ) {
        let mut text = masker.push(&self.masker, bytes);
        if end {
            text.push_str(&masker.finish(&self.masker));
        }
        if ctx.timestamps && !text.is_empty() {
            text = stamp_lines(&text, &mut masker.mid_line, std::time::SystemTime::now());
        }
        if !text.is_empty() {
            self.emit(Event::Output {
                step,
                stream,
                text,
                place: ctx.place(),
            })
            .await;
        }
    }

    // ------------------------------------------------------------------ results

    pub(crate) fn set_build_result(&self, r: BuildResult) {
        let mut b = lock(&self.build);
        b.result = b.result.combine(r);
        b.result_set = true;
    }

    pub(crate) fn build_result(&self) -> BuildResult {
        lock(&self.build).result
    }

    pub(crate) fn set_stage_result(&self, ctx: &Ctx, r: BuildResult) {
        if let Some(s) = &ctx.stage {
            let mut cur = lock(&s.result);
            *cur = cur.combine(r);
        }
    }

    // ------------------------------------------------------------------ environment

    /// The environment a step's process gets.
    pub(crate) fn step_env(&self, ctx: &Ctx) -> BTreeMap<String, String> {
        let mut env = self.base_env.clone();
        // Build parameters are environment variables too (Jenkins' ParametersAction), below
        // what the pipeline sets itself.
        if let Value::Map(m) = &self.params {
            for (k, v) in lock(m).iter() {
                if !matches!(v, Value::Null) {
                    env.insert(k.clone(), v.display());
                }
            }
        }
        for (k, v) in lock(&self.global_env).iter() {
            env.insert(k.clone(), v.clone());
        }
        for (k, v) in ctx.env.iter() {
            env.insert(k.clone(), v.clone());
        }
        env
    }

    pub(crate) fn env_get(&self, ctx: &Ctx, name: &str) -> Option<String> {
        if let Some((_, v)) = ctx.env.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if let Some(v) = lock(&self.global_env).get(name) {
            return Some(v.clone());
        }
        if let Value::Map(m) = &self.params
            && let Some(v) = lock(m).get(name).filter(|v| !matches!(v, Value::Null))
        {
            return Some(v.display());
        }
        self.base_env.get(name).cloned()
    }

    // ------------------------------------------------------------------ statements

    /// Runs statements in `ctx`'s scope; the value is that of the last statement (what a
    /// closure returns). `stage 'name'` without a body starts a stage that lasts until the
    /// next one or the end of the block.
    pub(crate) fn exec_stmts<'s>(
        &'s self,
        ctx: &'s Ctx,
        stmts: &'s [Stmt],
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            let mut last = Value::Null;
            let mut legacy: Option<(Ctx, Instant)> = None;
            for stmt in stmts {
                if let Some(name_expr) = legacy_stage(stmt) {
                    let name = self.eval(ctx, name_expr).await?.display();
                    if let Some((lctx, started)) = legacy.take() {
                        self.finish_stage(&lctx, false, started, None, false).await;
                    }
                    let lctx = self.start_stage(ctx, &name, false).await;
                    legacy = Some((lctx, Instant::now()));
                    continue;
                }
                let r = match &legacy {
                    Some((lctx, _)) => self.exec_stmt(lctx, stmt).await,
                    None => self.exec_stmt(ctx, stmt).await,
                };
                match r {
                    Ok(v) => last = v,
                    Err(f) => {
                        if let Some((lctx, started)) = legacy.take() {
                            let e = match &f {
                                Flow::Throw(e) => Some(e.clone()),
                                _ => None,
                            };
                            self.finish_stage(&lctx, false, started, e.as_deref(), false)
                                .await;
                        }
                        return Err(f);
                    }
                }
            }
            if let Some((lctx, started)) = legacy.take() {
                self.finish_stage(&lctx, false, started, None, false).await;
            }
            Ok(last)
        })
    }

    async fn block(&self, ctx: &Ctx, b: &ast::Block) -> R<Value> {
        let inner = Ctx {
            scope: ctx.scope.child(),
            ..ctx.clone()
        };
        self.exec_stmts(&inner, &b.stmts).await
    }

    pub(crate) fn exec_stmt<'s>(&'s self, ctx: &'s Ctx, stmt: &'s Stmt) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            self.stack_guard(stmt.span)?;
            if ctx.cancel.is_cancelled() {
                return Err(abort("the build was interrupted"));
            }
            match &stmt.kind {
                StmtKind::Expr { expr } => self.eval(ctx, expr).await,
                StmtKind::Decl { name, value, ty } => {
                    let mut v = match value {
                        Some(e) => self.eval(ctx, e).await?,
                        None => Value::Null,
                    };
                    if let Some(t) = ty {
                        v = coerce_decl(t, v);
                    }
                    ctx.scope.declare(&name.name, v);
                    Ok(Value::Null)
                }
                StmtKind::Assign { target, op, value } => {
                    self.assign(ctx, target, *op, value).await?;
                    Ok(Value::Null)
                }
                StmtKind::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    if self.eval(ctx, cond).await?.truthy() {
                        self.block(ctx, then).await
                    } else if let Some(o) = otherwise {
                        self.exec_stmt(ctx, o).await
                    } else {
                        Ok(Value::Null)
                    }
                }
                StmtKind::ForIn { var, iter, body } => {
                    let it = self.eval(ctx, iter).await?;
                    let items = self.iterate(&it, iter.span)?;
                    for item in items {
                        let inner = Ctx {
                            scope: ctx.scope.child(),
                            ..ctx.clone()
                        };
                        inner.scope.declare(&var.name, item);
                        match self.exec_stmts(&inner, &body.stmts).await {
                            Ok(_) | Err(Flow::Continue) => {}
                            Err(Flow::Break) => break,
                            Err(f) => return Err(f),
                        }
                    }
                    Ok(Value::Null)
                }
                StmtKind::For {
                    init,
                    cond,
                    update,
                    body,
                } => {
                    let outer = Ctx {
                        scope: ctx.scope.child(),
                        ..ctx.clone()
                    };
                    if let Some(i) = init {
                        self.exec_stmt(&outer, i).await?;
                    }
                    let mut guard = 0u64;
                    loop {
                        if let Some(c) = cond
                            && !self.eval(&outer, c).await?.truthy()
                        {
                            break;
                        }
                        match self.block(&outer, body).await {
                            Ok(_) | Err(Flow::Continue) => {}
                            Err(Flow::Break) => break,
                            Err(f) => return Err(f),
                        }
                        if let Some(u) = update {
                            self.exec_stmt(&outer, u).await?;
                        }
                        guard += 1;
                        if guard.is_multiple_of(1024) {
                            tokio::task::yield_now().await;
                        }
                    }
                    Ok(Value::Null)
                }
                StmtKind::While { cond, body } => {
                    let mut guard = 0u64;
                    while self.eval(ctx, cond).await?.truthy() {
                        match self.block(ctx, body).await {
                            Ok(_) | Err(Flow::Continue) => {}
                            Err(Flow::Break) => break,
                            Err(f) => return Err(f),
                        }
                        guard += 1;
                        if guard.is_multiple_of(1024) {
                            tokio::task::yield_now().await;
                        }
                    }
                    Ok(Value::Null)
                }
                StmtKind::Try {
                    body,
                    catches,
                    finally,
                } => {
                    let mut r = self.block(ctx, body).await;
                    if let Err(Flow::Throw(e)) = &r {
                        let e = e.clone();
                        if let Some(c) = catches
                            .iter()
                            .find(|c| c.types.is_empty() || c.types.iter().any(|t| e.is_a(t)))
                        {
                            let inner = Ctx {
                                scope: ctx.scope.child(),
                                ..ctx.clone()
                            };
                            inner.scope.declare(&c.var.name, Value::Exception(e));
                            r = self.exec_stmts(&inner, &c.body.stmts).await;
                        }
                    }
                    if let Some(f) = finally {
                        // `finally` runs even when the build is being interrupted.
                        let fctx = Ctx {
                            cancel: CancellationToken::new(),
                            ..ctx.clone()
                        };
                        self.block(&fctx, f).await?;
                    }
                    r
                }
                StmtKind::Switch { subject, cases } => {
                    let v = self.eval(ctx, subject).await?;
                    let mut matched = false;
                    let inner = Ctx {
                        scope: ctx.scope.child(),
                        ..ctx.clone()
                    };
                    for case in cases {
                        if !matched {
                            matched = match &case.value {
                                None => true,
                                Some(cv) => {
                                    let c = self.eval(&inner, cv).await?;
                                    self.case_matches(&inner, &c, &v).await?
                                }
                            };
                        }
                        if matched {
                            match self.exec_stmts(&inner, &case.body).await {
                                Ok(_) => {}
                                Err(Flow::Break) => return Ok(Value::Null),
                                Err(f) => return Err(f),
                            }
                        }
                    }
                    Ok(Value::Null)
                }
                StmtKind::Return { value } => {
                    let v = match value {
                        Some(e) => self.eval(ctx, e).await?,
                        None => Value::Null,
                    };
                    Err(Flow::Return(v))
                }
                StmtKind::Throw { value } => {
                    let v = self.eval(ctx, value).await?;
                    Err(match v {
                        Value::Exception(e) => Flow::Throw(e),
                        other => err("java.lang.Exception", other.display()),
                    })
                }
                StmtKind::Break => Err(Flow::Break),
                StmtKind::Continue => Err(Flow::Continue),
                StmtKind::Function(_) => Ok(Value::Null),
                StmtKind::Block(b) => self.block(ctx, b).await,
                StmtKind::Unsupported { construct } => Err(err(
                    "valet.UnsupportedException",
                    format!("{construct} are not supported"),
                )),
            }
        })
    }

    async fn case_matches(&self, ctx: &Ctx, case: &Value, v: &Value) -> R<bool> {
        Ok(match case {
            Value::List(l) => lock(l).iter().any(|x| x.equals(v)),
            Value::Closure(c) => self.call_closure(ctx, c, vec![v.clone()]).await?.truthy(),
            _ => case.equals(v),
        })
    }

    pub(crate) fn iterate(&self, v: &Value, _span: Span) -> R<Vec<Value>> {
        Ok(match v {
            Value::List(l) => lock(l).clone(),
            Value::Map(m) => lock(m)
                .iter()
                .map(|(k, v)| Value::Entry(Arc::new((k.clone(), v.clone()))))
                .collect(),
            Value::Str(s) => s.chars().map(|c| Value::Str(c.to_string())).collect(),
            Value::Null => vec![],
            Value::Matcher(m) => m
                .matches
                .iter()
                .map(|g| crate::methods::match_value(g))
                .collect(),
            Value::Object(Obj::Params) => return self.iterate(&self.params, _span),
            other => {
                return Err(err(
                    "groovy.lang.MissingMethodException",
                    format!("cannot iterate over a {}", other.type_name()),
                ));
            }
        })
    }

    async fn assign(&self, ctx: &Ctx, target: &Expr, op: AssignOp, value: &Expr) -> R<()> {
        let mut v = self.eval(ctx, value).await?;
        if op != AssignOp::Set {
            let cur = self.eval(ctx, target).await?;
            v = match op {
                AssignOp::Add => self.binary(ctx, BinaryOp::Add, cur, v)?,
                AssignOp::Sub => self.binary(ctx, BinaryOp::Sub, cur, v)?,
                AssignOp::Mul => self.binary(ctx, BinaryOp::Mul, cur, v)?,
                AssignOp::Div => self.binary(ctx, BinaryOp::Div, cur, v)?,
                AssignOp::Elvis => {
                    if cur.truthy() {
                        cur
                    } else {
                        v
                    }
                }
                AssignOp::Set => v,
            };
        }
        self.store(ctx, target, v).await
    }

    pub(crate) fn store<'s>(
        &'s self,
        ctx: &'s Ctx,
        target: &'s Expr,
        v: Value,
    ) -> BoxFuture<'s, R<()>> {
        Box::pin(async move {
            match &target.kind {
                ExprKind::Var { name } => {
                    ctx.scope.assign(name, v);
                    Ok(())
                }
                ExprKind::Property {
                    target: t, name, ..
                } => {
                    let obj = self.eval(ctx, t).await?;
                    self.set_property(ctx, &obj, &name.name, v)
                }
                ExprKind::Index { target: t, index } => {
                    let obj = self.eval(ctx, t).await?;
                    let idx = self.eval(ctx, index).await?;
                    match &obj {
                        Value::List(l) => {
                            let mut l = lock(l);
                            let i = match idx {
                                Value::Int(i) => i,
                                other => {
                                    return Err(err(
                                        "java.lang.IllegalArgumentException",
                                        format!(
                                            "a list index must be a number, not {}",
                                            other.display()
                                        ),
                                    ));
                                }
                            };
                            let i = if i < 0 { l.len() as i64 + i } else { i };
                            if i < 0 {
                                return Err(err(
                                    "java.lang.IndexOutOfBoundsException",
                                    format!("index {i}"),
                                ));
                            }
                            let i = i as usize;
                            if i >= l.len() {
                                l.resize(i + 1, Value::Null);
                            }
                            l[i] = v;
                            Ok(())
                        }
                        _ => self.set_property(ctx, &obj, &idx.display(), v),
                    }
                }
                _ => Err(err(
                    "valet.UnsupportedException",
                    "this cannot be assigned to",
                )),
            }
        })
    }

    pub(crate) fn set_property(&self, _ctx: &Ctx, obj: &Value, name: &str, v: Value) -> R<()> {
        match obj {
            Value::Map(m) => {
                lock(m).insert(name.to_string(), v);
                Ok(())
            }
            Value::Object(Obj::Env) => {
                let s = match v {
                    Value::Null => {
                        lock(&self.global_env).shift_remove(name);
                        return Ok(());
                    }
                    other => other.display(),
                };
                lock(&self.global_env).insert(name.to_string(), s);
                Ok(())
            }
            Value::Object(Obj::CurrentBuild) => {
                match name {
                    "result" => {
                        let r = BuildResult::parse(&v.display()).ok_or_else(|| {
                            err(
                                "java.lang.IllegalArgumentException",
                                format!("`{}` is not a build result", v.display()),
                            )
                        })?;
                        self.set_build_result(r);
                    }
                    "displayName" => lock(&self.build).display_name = v.display(),
                    "description" => lock(&self.build).description = Some(v.display()),
                    "keepLog" => {}
                    other => {
                        return Err(err(
                            "groovy.lang.ReadOnlyPropertyException",
                            format!("Cannot set read-only property: {other}"),
                        ));
                    }
                }
                Ok(())
            }
            Value::Object(Obj::Params) => Err(err(
                "java.lang.UnsupportedOperationException",
                "params are read-only",
            )),
            Value::Null => Err(err(
                "java.lang.NullPointerException",
                format!("Cannot set property '{name}' on null object"),
            )),
            other => Err(err(
                "groovy.lang.MissingPropertyException",
                format!("No such property: {name} for class: {}", other.type_name()),
            )),
        }
    }

    // ------------------------------------------------------------------ expressions

    pub(crate) fn eval<'s>(&'s self, ctx: &'s Ctx, e: &'s Expr) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            self.stack_guard(e.span)?;
            Ok(match &e.kind {
                ExprKind::Null => Value::Null,
                ExprKind::Bool { value } => Value::Bool(*value),
                ExprKind::Int { value } => Value::Int(*value),
                ExprKind::Float { value } => Value::Float(*value),
                ExprKind::Str { value } => Value::Str(value.clone()),
                ExprKind::Regex { pattern } => Value::Str(pattern.clone()),
                ExprKind::GString { parts } => {
                    let mut s = String::new();
                    for p in parts {
                        match p {
                            GStringPart::Lit { value } => s.push_str(value),
                            GStringPart::Expr { expr } => {
                                s.push_str(&self.eval(ctx, expr).await?.display())
                            }
                        }
                    }
                    Value::Str(s)
                }
                ExprKind::List { items } => {
                    let mut out = Vec::with_capacity(items.len());
                    for i in items {
                        out.push(self.eval(ctx, i).await?);
                    }
                    Value::list(out)
                }
                ExprKind::Map { entries } => {
                    let mut m = IndexMap::new();
                    for en in entries {
                        let k = match &en.key {
                            MapKey::Name { name, .. } => name.clone(),
                            MapKey::Expr { expr } => self.eval(ctx, expr).await?.display(),
                        };
                        let v = self.eval(ctx, &en.value).await?;
                        m.insert(k, v);
                    }
                    Value::map(m)
                }
                ExprKind::Var { name } => self.lookup(ctx, name)?,
                ExprKind::Property { target, name, safe } => {
                    let t = self.eval_target(ctx, target).await?;
                    if *safe && matches!(t, Value::Null) {
                        return Ok(Value::Null);
                    }
                    self.get_property(ctx, &t, &name.name)?
                }
                ExprKind::Index { target, index } => {
                    let t = self.eval(ctx, target).await?;
                    let i = self.eval(ctx, index).await?;
                    crate::methods::index(self, ctx, &t, &i)?
                }
                ExprKind::Call(call) => return self.call(ctx, call, e.span).await,
                ExprKind::Closure(c) => Value::Closure(Arc::new(ClosureValue {
                    def: self.closure_def(c),
                    scope: ctx.scope.clone(),
                    module: ctx.module.clone(),
                })),
                ExprKind::Unary { op, operand } => {
                    let v = self.eval(ctx, operand).await?;
                    match op {
                        UnaryOp::Not => Value::Bool(!v.truthy()),
                        UnaryOp::Neg => match v {
                            Value::Int(i) => Value::Int(i.wrapping_neg()),
                            Value::Float(f) => Value::Float(-f),
                            other => {
                                return Err(err(
                                    "groovy.lang.MissingMethodException",
                                    format!("cannot negate {}", other.display()),
                                ));
                            }
                        },
                        UnaryOp::Plus => v,
                        UnaryOp::BitNot => match v {
                            Value::Int(i) => Value::Int(!i),
                            other => {
                                return Err(err(
                                    "groovy.lang.MissingMethodException",
                                    format!("cannot apply ~ to {}", other.display()),
                                ));
                            }
                        },
                    }
                }
                ExprKind::Binary { op, lhs, rhs } => match op {
                    BinaryOp::And => {
                        let l = self.eval(ctx, lhs).await?;
                        if !l.truthy() {
                            Value::Bool(false)
                        } else {
                            Value::Bool(self.eval(ctx, rhs).await?.truthy())
                        }
                    }
                    BinaryOp::Or => {
                        let l = self.eval(ctx, lhs).await?;
                        if l.truthy() {
                            Value::Bool(true)
                        } else {
                            Value::Bool(self.eval(ctx, rhs).await?.truthy())
                        }
                    }
                    BinaryOp::InstanceOf => {
                        let l = self.eval(ctx, lhs).await?;
                        let ty = rhs.dotted_name().unwrap_or_default();
                        Value::Bool(instance_of(&l, &ty))
                    }
                    _ => {
                        let l = self.eval(ctx, lhs).await?;
                        let r = self.eval(ctx, rhs).await?;
                        self.binary(ctx, *op, l, r)?
                    }
                },
                ExprKind::Ternary {
                    cond,
                    then,
                    otherwise,
                } => {
                    if self.eval(ctx, cond).await?.truthy() {
                        self.eval(ctx, then).await?
                    } else {
                        self.eval(ctx, otherwise).await?
                    }
                }
                ExprKind::Elvis { value, fallback } => {
                    let v = self.eval(ctx, value).await?;
                    if v.truthy() {
                        v
                    } else {
                        self.eval(ctx, fallback).await?
                    }
                }
                ExprKind::Cast { value, ty } => {
                    let v = self.eval(ctx, value).await?;
                    crate::methods::cast(v, ty)?
                }
                ExprKind::Step {
                    target,
                    delta,
                    prefix,
                } => {
                    let cur = self.eval(ctx, target).await?;
                    let next =
                        self.binary(ctx, BinaryOp::Add, cur.clone(), Value::Int(*delta as i64))?;
                    self.store(ctx, target, next.clone()).await?;
                    if *prefix { next } else { cur }
                }
                ExprKind::New { class, args } => {
                    let mut vals = Vec::new();
                    for a in args {
                        if let ast::Arg::Positional(e) = a {
                            vals.push(self.eval(ctx, e).await?);
                        }
                    }
                    crate::methods::new_object(class, vals)?
                }
                ExprKind::Range {
                    from,
                    to,
                    inclusive,
                } => {
                    let f = self.eval(ctx, from).await?;
                    let t = self.eval(ctx, to).await?;
                    crate::methods::range(&f, &t, *inclusive)?
                }
            })
        })
    }

    /// Evaluates the target of a property or method: a bare class name (`Integer`) stands
    /// for the class when no variable has that name.
    pub(crate) async fn eval_target(&self, ctx: &Ctx, e: &Expr) -> R<Value> {
        if let Some(name) = e.dotted_name()
            && let Some(class) = static_class(&name)
        {
            let first = name.split('.').next().unwrap_or("");
            if ctx.scope.get(first).is_none() {
                return Ok(Value::Object(Obj::Class(class.to_string())));
            }
        }
        self.eval(ctx, e).await
    }

    fn closure_def(&self, c: &ast::Closure) -> Arc<ast::Closure> {
        let key = c as *const ast::Closure as usize;
        let mut cache = lock(&self.closures);
        cache
            .entry(key)
            .or_insert_with(|| Arc::new(c.clone()))
            .clone()
    }

    pub(crate) fn lookup(&self, ctx: &Ctx, name: &str) -> R<Value> {
        if let Some(v) = ctx.scope.get(name) {
            return Ok(v);
        }
        if let Some(m) = &ctx.module
            && let Some(v) = m.scope.get(name)
        {
            return Ok(v);
        }
        Ok(match name {
            "env" => Value::Object(Obj::Env),
            "params" => Value::Object(Obj::Params),
            "currentBuild" => Value::Object(Obj::CurrentBuild),
            "scm" => Value::Object(Obj::Scm),
            "docker" => Value::Object(Obj::Docker),
            "this" => match &ctx.module {
                Some(m) => Value::Object(Obj::Script(m.clone())),
                None => Value::Null,
            },
            // A bare `POD_LABEL`, `BRANCH_NAME`, … reads the environment, as in Jenkins.
            _ => match self.env_get(ctx, name) {
                Some(v)
                    if name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
                {
                    Value::Str(v)
                }
                _ => match static_class(name) {
                    Some(c) => Value::Object(Obj::Class(c.to_string())),
                    None => {
                        return Err(err(
                            "groovy.lang.MissingPropertyException",
                            format!("No such property: {name} for class: WorkflowScript"),
                        ));
                    }
                },
            },
        })
    }

    pub(crate) fn get_property(&self, ctx: &Ctx, t: &Value, name: &str) -> R<Value> {
        crate::methods::property(self, ctx, t, name)
    }

    pub(crate) fn binary(&self, _ctx: &Ctx, op: BinaryOp, l: Value, r: Value) -> R<Value> {
        crate::methods::binary(op, l, r)
    }

    // ------------------------------------------------------------------ calls

    pub(crate) async fn eval_args(&self, ctx: &Ctx, call: &ast::Call) -> R<Args> {
        let mut args = Args {
            pos: Vec::new(),
            named: IndexMap::new(),
            body: None,
        };
        for a in &call.args {
            match a {
                ast::Arg::Positional(e) => args.pos.push(self.eval(ctx, e).await?),
                ast::Arg::Named { name, value } => {
                    let v = self.eval(ctx, value).await?;
                    args.named.insert(name.name.clone(), v);
                }
            }
        }
        if let Some(c) = &call.closure {
            args.body = Some(Arc::new(ClosureValue {
                def: self.closure_def(c),
                scope: ctx.scope.clone(),
                module: ctx.module.clone(),
            }));
        }
        Ok(args)
    }

    pub(crate) fn call<'s>(
        &'s self,
        ctx: &'s Ctx,
        call: &'s ast::Call,
        span: Span,
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            let name = call.name.name.as_str();
            if let Some(target) = &call.target {
                let recv = self.eval_target(ctx, target).await?;
                if call.safe && matches!(recv, Value::Null) {
                    return Ok(Value::Null);
                }
                let args = self.eval_args(ctx, call).await?;
                return crate::methods::method(self, ctx, recv, name, args, span).await;
            }
            if name == "pipeline" && call.closure.is_some() && ctx.pod.is_none() {
                let body = call.closure.as_deref().expect("pipeline body");
                return crate::declarative::pipeline(self, ctx, body, span)
                    .await
                    .map(|_| Value::Null);
            }
            // Functions of a loaded script, then the file's own, then closures in variables.
            if let Some(m) = &ctx.module
                && let Some(f) = m.functions.get(name)
            {
                let f = f.clone();
                let args = self.eval_args(ctx, call).await?;
                return self.call_function(ctx, &f, args, Some(m.clone())).await;
            }
            if let Some(f) = self.functions.get(name) {
                let f = f.clone();
                let args = self.eval_args(ctx, call).await?;
                return self.call_function(ctx, &f, args, None).await;
            }
            if let Some(Value::Closure(c)) = ctx.scope.get(name) {
                let args = self.eval_args(ctx, call).await?;
                let mut vals = args.pos;
                if !args.named.is_empty() {
                    vals.insert(0, Value::map(args.named));
                }
                if let Some(b) = args.body {
                    vals.push(Value::Closure(b));
                }
                return self.call_closure(ctx, &c, vals).await;
            }
            let args = self.eval_args(ctx, call).await?;
            self.step(ctx, name, args, span).await
        })
    }

    pub(crate) fn call_function<'s>(
        &'s self,
        ctx: &'s Ctx,
        f: &'s Arc<ast::Function>,
        args: Args,
        module: Option<Arc<Loaded>>,
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            if ctx.depth > MAX_DEPTH {
                return Err(err(
                    "java.lang.StackOverflowError",
                    format!(
                        "calls nested deeper than {MAX_DEPTH} (in `{}`)",
                        f.name.name
                    ),
                ));
            }
            let parent = module
                .as_ref()
                .map(|m| m.scope.clone())
                .unwrap_or_else(|| self.root.clone());
            let scope = parent.child();
            let inner = Ctx {
                scope: scope.clone(),
                module: module.clone(),
                depth: ctx.depth + 1,
                ..ctx.clone()
            };
            let mut vals = args.pos;
            // Named arguments make a map as the first argument, as in Groovy.
            if !args.named.is_empty() {
                vals.insert(0, Value::map(args.named));
            }
            if let Some(b) = args.body {
                vals.push(Value::Closure(b));
            }
            self.bind_params(&inner, &f.params, vals).await?;
            match self.exec_stmts(&inner, &f.body.stmts).await {
                Ok(v) | Err(Flow::Return(v)) => Ok(v),
                Err(Flow::Break) | Err(Flow::Continue) => Ok(Value::Null),
                Err(e) => Err(e),
            }
        })
    }

    async fn bind_params(&self, ctx: &Ctx, params: &[ast::Param], vals: Vec<Value>) -> R<()> {
        let mut vals = vals.into_iter();
        for p in params {
            let v = match vals.next() {
                Some(v) => v,
                None => match &p.default {
                    Some(d) => self.eval(ctx, d).await?,
                    None => Value::Null,
                },
            };
            ctx.scope.declare(&p.name.name, v);
        }
        Ok(())
    }

    pub(crate) fn call_closure<'s>(
        &'s self,
        ctx: &'s Ctx,
        c: &'s Arc<ClosureValue>,
        args: Vec<Value>,
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            if ctx.depth > MAX_DEPTH {
                return Err(err(
                    "java.lang.StackOverflowError",
                    format!("calls nested deeper than {MAX_DEPTH}"),
                ));
            }
            let scope = c.scope.child();
            let inner = Ctx {
                scope,
                module: c.module.clone().or_else(|| ctx.module.clone()),
                depth: ctx.depth + 1,
                ..ctx.clone()
            };
            if c.def.params.is_empty() {
                if !c.def.arrow {
                    inner
                        .scope
                        .declare("it", args.into_iter().next().unwrap_or(Value::Null));
                }
            } else {
                self.bind_params(&inner, &c.def.params, args).await?;
            }
            let def = c.def.clone();
            match self.exec_stmts(&inner, &def.body).await {
                Ok(v) | Err(Flow::Return(v)) => Ok(v),
                Err(e) => Err(e),
            }
        })
    }

    /// Runs a body closure with no arguments in `ctx`.
    pub(crate) async fn run_body(&self, ctx: &Ctx, body: &Option<Arc<ClosureValue>>) -> R<Value> {
        match body {
            Some(b) => self.call_closure(ctx, b, vec![]).await,
            None => Ok(Value::Null),
        }
    }

    // ------------------------------------------------------------------ stages

    pub(crate) async fn start_stage(&self, ctx: &Ctx, name: &str, branch: bool) -> Ctx {
        let mut path = (*ctx.path).clone();
        path.push(name.to_string());
        let stage = Arc::new(StageCtx {
            name: name.to_string(),
            result: Mutex::new(BuildResult::Success),
            started_seq: self
                .next_stage_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        let mut inner = ctx.clone();
        inner.path = Arc::new(path.clone());
        if branch {
            inner.branch = Some(match &ctx.branch {
                Some(b) => format!("{b}/{name}"),
                None => name.to_string(),
            });
        }
        inner.stage = Some(stage);
        let inner = if branch {
            inner
        } else {
            inner.with_env([("STAGE_NAME".to_string(), name.to_string())])
        };
        self.emit(Event::StageStarted {
            name: name.to_string(),
            path,
            parallel_branch: branch,
            place: inner.place(),
        })
        .await;
        inner
    }

    /// Ends a stage: its result is what was set in it, made worse by `error` if it failed.
    pub(crate) async fn finish_stage(
        &self,
        ctx: &Ctx,
        branch: bool,
        started: Instant,
        error: Option<&Exception>,
        skipped: bool,
    ) -> BuildResult {
        let stage = ctx.stage.as_ref().expect("a stage context");
        let mut result = *lock(&stage.result);
        if let Some(e) = error {
            result = result.combine(if e.kind == ExcKind::Abort {
                BuildResult::Aborted
            } else {
                BuildResult::Failure
            });
        }
        if skipped {
            result = BuildResult::NotBuilt;
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        lock(&self.stages).push((
            stage.started_seq,
            StageSummary {
                path: ctx.path.iter().map(|p| self.masker.mask_str(p)).collect(),
                parallel_branch: branch,
                result,
                skipped,
                duration_ms,
            },
        ));
        self.emit(Event::StageFinished {
            name: stage.name.clone(),
            path: (*ctx.path).clone(),
            parallel_branch: branch,
            result,
            skipped,
            duration_ms,
            place: ctx.place(),
        })
        .await;
        result
    }

    /// `stage('name') { body }`.
    pub(crate) async fn stage(
        &self,
        ctx: &Ctx,
        name: &str,
        body: &Option<Arc<ClosureValue>>,
    ) -> R<Value> {
        let inner = self.start_stage(ctx, name, false).await;
        let started = Instant::now();
        let r = self.run_body(&inner, body).await;
        let e = match &r {
            Err(Flow::Throw(e)) => Some(e.clone()),
            _ => None,
        };
        self.finish_stage(&inner, false, started, e.as_deref(), false)
            .await;
        r
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn legacy_stage(stmt: &Stmt) -> Option<&Expr> {
    if let StmtKind::Expr { expr } = &stmt.kind
        && let ExprKind::Call(c) = &expr.kind
        && c.target.is_none()
        && c.name.name == "stage"
        && c.closure.is_none()
    {
        let has_closure_arg = c.args.iter().any(|a| {
            matches!(
                a,
                ast::Arg::Positional(Expr {
                    kind: ExprKind::Closure(_),
                    ..
                })
            )
        });
        if !has_closure_arg {
            return c.positional().next().or_else(|| c.named("name"));
        }
    }
    None
}

/// `String x = 5` keeps 5; `int x = '5'` is refused by Groovy; only the common coercions are done.
fn coerce_decl(ty: &str, v: Value) -> Value {
    match (ty, &v) {
        ("String", Value::Int(_) | Value::Float(_) | Value::Bool(_)) => Value::Str(v.display()),
        ("int" | "Integer" | "long" | "Long", Value::Float(f)) => Value::Int(*f as i64),
        ("double" | "Double" | "float" | "Float" | "BigDecimal", Value::Int(i)) => {
            Value::Float(*i as f64)
        }
        ("boolean" | "Boolean", Value::Null) => Value::Bool(false),
        ("int" | "long", Value::Null) => Value::Int(0),
        _ => v,
    }
}

fn instance_of(v: &Value, ty: &str) -> bool {
    let short = ty.rsplit('.').next().unwrap_or(ty);
    match v {
        Value::Null => false,
        Value::Str(_) => matches!(
            short,
            "String" | "CharSequence" | "GString" | "Object" | "Comparable"
        ),
        Value::Int(_) => matches!(
            short,
            "Integer" | "Number" | "Long" | "Object" | "Comparable"
        ),
        Value::Float(_) => matches!(
            short,
            "BigDecimal" | "Double" | "Float" | "Number" | "Object"
        ),
        Value::Bool(_) => matches!(short, "Boolean" | "Object"),
        Value::List(_) => matches!(
            short,
            "List" | "ArrayList" | "Collection" | "Iterable" | "Object"
        ),
        Value::Map(_) => matches!(short, "Map" | "LinkedHashMap" | "HashMap" | "Object"),
        Value::Closure(_) => matches!(short, "Closure" | "Object"),
        Value::Exception(e) => e.is_a(short),
        _ => short == "Object",
    }
}

/// Class names that static calls are made on.
pub(crate) fn static_class(name: &str) -> Option<&'static str> {
    let short = name.rsplit('.').next().unwrap_or(name);
    Some(match short {
        "Integer" => "Integer",
        "Long" => "Long",
        "Double" => "Double",
        "Float" => "Float",
        "Boolean" => "Boolean",
        "String" => "String",
        "System" => "System",
        "Math" => "Math",
        "JsonOutput" => "JsonOutput",
        "Collections" => "Collections",
        "Arrays" => "Arrays",
        "Thread" => "Thread",
        "Result" => "Result",
        _ => return None,
    })
}

/// `text` with the time of day (UTC, `[HH:MM:SS] `) at the start of each line; `mid_line`
/// says whether the text before it ended inside a line, and is left saying so for `text`.
pub(crate) fn stamp_lines(text: &str, mid_line: &mut bool, now: std::time::SystemTime) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    let prefix = format!(
        "[{:02}:{:02}:{:02}] ",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let mut out = String::with_capacity(text.len() + prefix.len() * 2);
    for piece in text.split_inclusive('\n') {
        if !*mid_line {
            out.push_str(&prefix);
        }
        out.push_str(piece);
        *mid_line = !piece.ends_with('\n');
    }
    out
}
