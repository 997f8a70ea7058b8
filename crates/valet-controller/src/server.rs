//! The HTTP side (axum): webhooks, the JSON API, server-sent events, health and metrics.
//! Every route is documented, with its JSON, in `docs/controller.md`.
//!
//! Handlers never wait for a build: store calls run on blocking threads and answer from the
//! database; a webhook is answered after its build record is committed, not after the build.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use valet_store::{BuildId, NewBuild};

use crate::access::{COOKIE, Caller};
use crate::config::Repo;
use crate::hooks::{self, Action, Delivery, Trigger};
use crate::{CancelOutcome, Controller, blocking};

/// The largest body a webhook or API call may have (GitHub caps its payloads at 25 MiB).
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// The most bytes of request bodies held at once, all requests together: a burst of large
/// deliveries waits its turn (`503` with `Retry-After`) instead of taking the memory of
/// the process.
pub const BODY_BUDGET: usize = 64 * 1024 * 1024;
/// The most builds one list answers with.
pub const MAX_LIST: u32 = 500;
/// Bodies larger than this are parsed on a blocking thread.
const PARSE_INLINE: usize = 256 * 1024;

/// The routes of the controller, ready to serve (or to merge more routes into).
pub fn router(c: Controller) -> Router {
    Router::new()
        .route("/hooks/github", post(github))
        .route("/hooks/gitlab", post(gitlab))
        .route("/hooks/generic", post(generic))
        .route("/api/builds", get(list_builds))
        .route("/api/builds/{id}", get(get_build))
        .route("/api/builds/{id}/log", get(build_log))
        .route("/api/builds/{id}/steps/{step}/log", get(step_log))
        .route("/api/builds/{id}/events", get(events))
        .route("/api/builds/{id}/cancel", post(cancel))
        .route("/api/repos", get(list_repos))
        .route("/api/repos/{name}/builds", post(trigger))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/session", post(sign_in).delete(sign_out))
        .merge(crate::ui::routes())
        .layer(axum::middleware::from_fn_with_state(
            c.clone(),
            crate::access::gate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(c)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A path's parameters, refused as JSON (`400 {"error": …}`) like every other API error,
/// not as axum's plain text.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

fn ignored(c: &Controller, reason: impl Into<String>) -> Response {
    c.inner.metrics.delivery("ignored");
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "status": "ignored", "reason": reason.into() })),
    )
        .into_response()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {e}"),
    )
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Bytes of the shared body budget held by one request until it is answered.
pub(crate) struct Held(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

/// Why a body was not read.
#[derive(Debug)]
enum BodyRefused {
    /// Over [`MAX_BODY`] (`413`).
    TooLarge,
    /// The budget is taken by other requests (`503` with `Retry-After`).
    Busy,
    /// A bad `Content-Length`, or the connection failed while reading (`400`).
    Bad(String),
}

impl IntoResponse for BodyRefused {
    fn into_response(self) -> Response {
        match self {
            BodyRefused::TooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {} MiB", MAX_BODY / (1024 * 1024)),
            ),
            BodyRefused::Busy => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "too many request bodies are being read ({} MiB at once); try again later",
                        BODY_BUDGET / (1024 * 1024)
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
            BodyRefused::Bad(why) => error(StatusCode::BAD_REQUEST, why),
        }
    }
}

/// Reads a request's body within the controller's budget of body bytes held at once
/// ([`BODY_BUDGET`]): a declared length is taken from the budget before any byte is
/// read, a chunked body as it arrives; past the budget the request is refused (`503`)
/// rather than waiting, and past [`MAX_BODY`] it is `413`. The budget is the caller's
/// until it drops the [`Held`].
async fn read_body(
    c: &Controller,
    h: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Held), BodyRefused> {
    use futures::StreamExt as _;
    let budget = &c.inner.body_budget;
    let declared = match header_str(h, "content-length").map(|v| v.trim().parse::<u64>()) {
        None => None,
        Some(Ok(n)) if n > MAX_BODY as u64 => return Err(BodyRefused::TooLarge),
        Some(Ok(n)) => Some(n as usize),
        Some(Err(_)) => return Err(BodyRefused::Bad("bad Content-Length".into())),
    };
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let take = |n: usize, held: &mut Option<tokio::sync::OwnedSemaphorePermit>| {
        if n == 0 {
            return Ok(());
        }
        match budget.clone().try_acquire_many_owned(n as u32) {
            Ok(p) => {
                match held {
                    Some(h) => h.merge(p),
                    None => *held = Some(p),
                }
                Ok(())
            }
            Err(_) => {
                c.inner.metrics.delivery("busy");
                tracing::warn!(bytes = n, "request body refused: the body budget is taken");
                Err(BodyRefused::Busy)
            }
        }
    };
    if let Some(n) = declared {
        take(n, &mut held)?;
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyRefused::Bad(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(BodyRefused::TooLarge);
        }
        // Only what goes past the declared length (all of a chunked body) is taken here.
        let over = (buf.len() + chunk.len()).saturating_sub(declared.unwrap_or(0));
        take(over.min(chunk.len()), &mut held)?;
        buf.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buf), Held(held)))
}

async fn parse<T: Send + 'static>(body: Bytes, f: impl FnOnce(&[u8]) -> T + Send + 'static) -> T {
    if body.len() <= PARSE_INLINE {
        f(&body)
    } else {
        blocking(move || f(&body)).await
    }
}

impl Controller {
    fn find_repo(&self, keys: &[String]) -> Option<&Repo> {
        keys.iter().find_map(|k| {
            self.inner
                .repo_keys
                .get(k)
                .or_else(|| self.inner.repo_keys.get(k.trim_end_matches(".git")))
                .map(|&i| &self.inner.config.repositories[i])
        })
    }
}

/// `POST /hooks/github`.
async fn github(State(c): State<Controller>, h: HeaderMap, body: Body) -> Response {
    let Some(sig) = header_str(&h, "x-hub-signature-256").map(str::to_string) else {
        c.inner.metrics.delivery("unauthorized");
        return error(StatusCode::UNAUTHORIZED, "missing X-Hub-Signature-256");
    };
    let Some(event) = header_str(&h, "x-github-event").map(str::to_string) else {
        c.inner.metrics.delivery("invalid");
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
    };
    let (body, _held) = match read_body(&c, &h, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let delivery = header_str(&h, "x-github-delivery")
        .or_else(|| header_str(&h, "idempotency-key"))
        .map(|d| format!("github:{d}"));
    let payload = move |b: &[u8]| hooks::github(&event, b);
    deliver(c, "github", body, delivery, payload, |repo, body| {
        hooks::hmac_sha256_valid(repo.secret.as_bytes(), body, &sig)
            .then_some(())
            .ok_or("the signature does not match the body")
    })
    .await
}

/// `POST /hooks/gitlab`.
async fn gitlab(State(c): State<Controller>, h: HeaderMap, body: Body) -> Response {
    let Some(token) = header_str(&h, "x-gitlab-token").map(str::to_string) else {
        c.inner.metrics.delivery("unauthorized");
        return error(StatusCode::UNAUTHORIZED, "missing X-Gitlab-Token");
    };
    let (body, _held) = match read_body(&c, &h, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let delivery = header_str(&h, "x-gitlab-event-uuid")
        .or_else(|| header_str(&h, "idempotency-key"))
        .map(|d| format!("gitlab:{d}"));
    deliver(c, "gitlab", body, delivery, hooks::gitlab, |repo, _| {
        hooks::token_matches(&repo.secret, &token)
            .then_some(())
            .ok_or("the token does not match")
    })
    .await
}

/// `POST /hooks/generic`.
async fn generic(State(c): State<Controller>, h: HeaderMap, body: Body) -> Response {
    let Some(sig) = header_str(&h, "x-valet-signature-256").map(str::to_string) else {
        c.inner.metrics.delivery("unauthorized");
        return error(StatusCode::UNAUTHORIZED, "missing X-Valet-Signature-256");
    };
    let (body, _held) = match read_body(&c, &h, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let delivery = header_str(&h, "idempotency-key").map(|d| format!("generic:{d}"));
    deliver(
        c,
        "generic",
        body,
        delivery,
        hooks::generic,
        |repo, body| {
            hooks::hmac_sha256_valid(repo.secret.as_bytes(), body, &sig)
                .then_some(())
                .ok_or("the signature does not match the body")
        },
    )
    .await
}

/// What every hook does once its headers are read: parse the payload, find the repository
/// it names, check the delivery with that repository's secret (`verify` says why it fails),
/// and accept it. Nothing is stored unless all of that passed.
async fn deliver(
    c: Controller,
    source: &'static str,
    body: Bytes,
    delivery: Option<String>,
    payload: impl FnOnce(&[u8]) -> Result<Delivery, hooks::PayloadError> + Send + 'static,
    verify: impl FnOnce(&Repo, &[u8]) -> Result<(), &'static str>,
) -> Response {
    let d = match parse(body.clone(), payload).await {
        Ok(d) => d,
        Err(e) => {
            c.inner.metrics.delivery("invalid");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let Some(repo) = c.find_repo(&d.repo_keys).cloned() else {
        // Only a sender that knows the shared secret learns that a name is not configured;
        // anyone else gets what a wrong signature for a configured repository gets.
        let shared = c.inner.config.webhook_secret.clone().map(|secret| Repo {
            secret,
            ..Repo::default()
        });
        return match shared.as_ref().map(|r| verify(r, &body)) {
            Some(Ok(())) => ignored(&c, unknown_repo(&d)),
            Some(Err(why)) => {
                c.inner.metrics.delivery("unauthorized");
                error(StatusCode::UNAUTHORIZED, why)
            }
            None => {
                c.inner.metrics.delivery("unauthorized");
                error(StatusCode::UNAUTHORIZED, unverifiable(source))
            }
        };
    };
    if let Err(why) = verify(&repo, &body) {
        c.inner.metrics.delivery("unauthorized");
        return error(StatusCode::UNAUTHORIZED, why);
    }
    accept(&c, &repo, d.action, source, delivery).await
}

/// What a delivery that cannot be verified gets: the words of a wrong signature or token.
fn unverifiable(source: &str) -> &'static str {
    match source {
        "gitlab" => "the token does not match",
        _ => "the signature does not match the body",
    }
}

fn unknown_repo(d: &Delivery) -> String {
    match d.repo_keys.first() {
        Some(k) => format!("unknown repository `{k}`"),
        None => "the delivery names no repository".into(),
    }
}

/// A verified delivery: filters, then the build record (committed before the answer).
async fn accept(
    c: &Controller,
    repo: &Repo,
    action: Action,
    trigger: &str,
    delivery: Option<String>,
) -> Response {
    let t = match action {
        Action::Ignore(reason) => return ignored(c, reason),
        Action::Build(t) => t,
    };
    if t.pull_request && !repo.pull_requests {
        return ignored(
            c,
            format!("pull and merge requests do not build `{}`", repo.name),
        );
    }
    if !repo.builds_branch(&t.filter_branch) {
        return ignored(
            c,
            format!(
                "branch `{}` is not in the branch filter of `{}`",
                t.filter_branch, repo.name
            ),
        );
    }
    create(c, repo, t, trigger, delivery).await
}

async fn create(
    c: &Controller,
    repo: &Repo,
    t: Trigger,
    trigger: &str,
    delivery: Option<String>,
) -> Response {
    if let Some(refused) = check_names(c, &t) {
        return refused;
    }
    let nb = NewBuild {
        repo: repo.name.clone(),
        branch: (!t.branch.is_empty()).then(|| t.branch.clone()),
        commit: t.commit,
        git_ref: t.git_ref,
        trigger: trigger.to_string(),
        cause: t.cause,
        params: t.params,
        delivery,
    };
    // The place is taken before the record is written: a count read first and a record
    // written later let a burst of concurrent triggers all pass the bound.
    if let Err(waiting) = c.inner.counts.reserve(c.inner.config.max_queued) {
        c.inner.metrics.delivery("refused");
        return queue_full(waiting);
    }
    let (id_repo, id_branch) = (nb.repo.clone(), nb.branch.clone());
    let store = c.inner.store.clone();
    let created = match blocking(move || store.create_build(&nb)).await {
        Ok(v) => v,
        Err(e) => {
            c.inner.counts.release();
            return internal(e);
        }
    };
    let body = json!({
        "status": if created.duplicate { "duplicate" } else { "queued" },
        "build": created.id,
        "number": created.number,
        "url": format!("/api/builds/{}", created.id),
    });
    if created.duplicate {
        c.inner.counts.release();
        c.inner.metrics.delivery("duplicate");
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    c.enqueue_reserved(created.id, &id_repo, id_branch.as_deref());
    c.inner.metrics.delivery("accepted");
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// The commit, ref and branch a trigger names, as git itself would accept them (`git
/// check-ref-format`); refused with `400` and nothing stored.
fn check_names(c: &Controller, t: &Trigger) -> Option<Response> {
    let problem = if let Some(commit) = &t.commit
        && !hooks::safe_git_name(commit)
    {
        Some(format!("`{commit}` is not a commit id valet accepts"))
    } else if let Some(r) = &t.git_ref
        && let Err(e) = hooks::check_full_ref(r)
    {
        Some(format!("{r:?} is not a valid git ref: {e}"))
    } else if !t.branch.is_empty()
        && let Err(e) = hooks::check_branch_name(&t.branch)
    {
        // (An empty branch asks for the default branch: triggers by hand only. A push
        // always names its branch, and a push of `refs/heads/` is refused by its ref.)
        Some(format!("{:?} is not a valid branch name: {e}", t.branch))
    } else {
        None
    };
    problem.map(|what| {
        c.inner.metrics.delivery("invalid");
        error(StatusCode::BAD_REQUEST, what)
    })
}

/// `503` with `Retry-After`: `max_queued` builds wait; nothing was stored.
fn queue_full(waiting: usize) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the queue is full ({waiting} builds waiting, max_queued); try again later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

/// `POST /api/repos/{name}/builds`: a build by hand.
async fn trigger(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    h: HeaderMap,
    body: Body,
) -> Response {
    let Some(repo) = c.inner.config.repo(&name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown repository `{name}`"),
        );
    };
    let (body, _held) = match read_body(&c, &h, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let b: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody {
            branch: None,
            commit: None,
            parameters: Default::default(),
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
        }
    };
    if let Err(e) = hooks::check_params(&b.parameters) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let branch = b.branch.unwrap_or_default().trim().to_string();
    let by = caller
        .token
        .as_ref()
        .map(|t| format!(" (token `{t}`)"))
        .unwrap_or_default();
    let t = Trigger {
        cause: if branch.is_empty() {
            format!("started by hand{by}")
        } else {
            format!("started by hand on {branch}{by}")
        },
        filter_branch: branch.clone(),
        branch,
        commit: b.commit.filter(|c| !c.is_empty()),
        git_ref: None,
        pull_request: false,
        params: b.parameters,
    };
    let delivery = header_str(&h, "idempotency-key").map(|k| format!("manual:{k}"));
    create(&c, &repo, t, "manual", delivery).await
}

#[derive(Deserialize)]
struct ListQuery {
    repo: Option<String>,
    limit: Option<u32>,
    before: Option<BuildId>,
}

/// `GET /api/builds?repo=&limit=&before=`.
async fn list_builds(State(c): State<Controller>, Query(q): Query<ListQuery>) -> Response {
    let store = c.inner.store.clone();
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIST);
    match blocking(move || store.list_builds(q.repo.as_deref(), limit, q.before)).await {
        Ok(builds) => axum::Json(json!({ "builds": builds })).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /api/builds/{id}`.
async fn get_build(State(c): State<Controller>, ApiPath(id): ApiPath<BuildId>) -> Response {
    let store = c.inner.store.clone();
    match blocking(move || store.build_detail(id)).await {
        Ok(Some(d)) => axum::Json(d).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no build {id}")),
        Err(e) => internal(e),
    }
}

fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// `GET /api/builds/{id}/log`.
async fn build_log(State(c): State<Controller>, ApiPath(id): ApiPath<BuildId>) -> Response {
    let store = c.inner.store.clone();
    match blocking(move || {
        Ok::<_, valet_store::StoreError>((store.get_build(id)?, store.read_log(id)?))
    })
    .await
    {
        Ok((Some(_), log)) => text(log),
        Ok((None, _)) => error(StatusCode::NOT_FOUND, format!("no build {id}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/builds/{id}/steps/{step}/log`.
async fn step_log(
    State(c): State<Controller>,
    ApiPath((id, step)): ApiPath<(BuildId, i64)>,
) -> Response {
    let store = c.inner.store.clone();
    match blocking(move || {
        let build = store.get_build(id)?;
        let step = match build {
            Some(_) if store.has_step(id, step)? => Some(store.read_step_log(id, step)?),
            _ => None,
        };
        Ok::<_, valet_store::StoreError>((build, step))
    })
    .await
    {
        Ok((Some(_), Some(log))) => text(log),
        Ok((Some(_), None)) => error(
            StatusCode::NOT_FOUND,
            format!("build {id} has no step {step}"),
        ),
        Ok((None, _)) => error(StatusCode::NOT_FOUND, format!("no build {id}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/builds/{id}/events`: server-sent events. Each message's data is one event as
/// JSON and its id the event's index; `Last-Event-ID` resumes after that index.
async fn events(
    State(c): State<Controller>,
    ApiPath(id): ApiPath<BuildId>,
    h: HeaderMap,
) -> Response {
    let from = header_str(&h, "last-event-id")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |i| i.saturating_add(1));
    // Live first: a build that finishes meanwhile still delivers everything through it.
    let live = match c.live(id) {
        Some(l) => Some(l),
        None => {
            let store = c.inner.store.clone();
            match blocking(move || store.get_build(id)).await {
                Ok(None) => return error(StatusCode::NOT_FOUND, format!("no build {id}")),
                Err(e) => return internal(e),
                Ok(Some(b)) if b.result.is_none() => {
                    let live = c.inner.live.get_or_create(id);
                    // It may have finished (and dropped its live entry) since the read: then
                    // the entry just made would never finish, so the store answers instead.
                    let store = c.inner.store.clone();
                    match blocking(move || store.get_build(id)).await {
                        Ok(Some(b)) if b.result.is_some() => {
                            c.inner.live.remove(id);
                            None
                        }
                        _ => Some(live),
                    }
                }
                Ok(Some(_)) => None,
            }
        }
    };
    let stream: futures::stream::BoxStream<'static, Result<SseEvent, Infallible>> = match live {
        Some(live) => live_stream(live, from),
        None => stored_stream(c.inner.store.events_path(id), from).await,
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The events of a finished build, read from its file a line at a time as the client takes
/// them: a request holds one line in memory, however large the file.
async fn stored_stream(
    path: std::path::PathBuf,
    from: usize,
) -> futures::stream::BoxStream<'static, Result<SseEvent, Infallible>> {
    use tokio::io::AsyncBufReadExt as _;
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return Box::pin(futures::stream::empty());
    };
    let lines = tokio::io::BufReader::new(file).lines();
    Box::pin(futures::stream::unfold(
        (lines, 0usize),
        move |(mut lines, mut i)| async move {
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(l)) => l,
                    Ok(None) | Err(_) => return None,
                };
                if line.is_empty() {
                    continue;
                }
                let index = i;
                i += 1;
                if index >= from {
                    let ev = SseEvent::default().id(index.to_string()).data(line);
                    return Some((Ok(ev), (lines, i)));
                }
            }
        },
    ))
}

fn live_stream(
    live: Arc<crate::live::Live>,
    from: usize,
) -> futures::stream::BoxStream<'static, Result<SseEvent, Infallible>> {
    let watch = live.watch();
    let state = (
        live,
        watch,
        from,
        Vec::<(usize, Arc<str>)>::new().into_iter(),
    );
    Box::pin(futures::stream::unfold(
        state,
        |(live, mut watch, mut next, mut pending)| async move {
            loop {
                if let Some((i, e)) = pending.next() {
                    let ev = SseEvent::default().id(i.to_string()).data(&*e);
                    return Some((Ok(ev), (live, watch, next, pending)));
                }
                watch.borrow_and_update();
                let (events, done) = live.since(next);
                if !events.is_empty() {
                    let batch: Vec<(usize, Arc<str>)> = events
                        .into_iter()
                        .enumerate()
                        .map(|(k, e)| (next + k, e))
                        .collect();
                    next += batch.len();
                    pending = batch.into_iter();
                    continue;
                }
                if done {
                    return None;
                }
                if watch.changed().await.is_err() {
                    return None;
                }
            }
        },
    ))
}

/// `POST /api/builds/{id}/cancel`.
async fn cancel(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<BuildId>,
) -> Response {
    let reason = match &caller.token {
        Some(t) => format!("cancelled through the API (token `{t}`)"),
        None => "cancelled through the API".to_string(),
    };
    tracing::info!(build = id, token = ?caller.token, "cancel requested");
    match c.cancel(id, &reason).await {
        Ok(CancelOutcome::Cancelled) => (
            StatusCode::OK,
            axum::Json(json!({ "build": id, "status": "cancelled" })),
        )
            .into_response(),
        Ok(CancelOutcome::Cancelling) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "build": id, "status": "cancelling" })),
        )
            .into_response(),
        Ok(CancelOutcome::AlreadyFinished) => error(
            StatusCode::CONFLICT,
            format!("build {id} has already finished"),
        ),
        Ok(CancelOutcome::NotFound) => error(StatusCode::NOT_FOUND, format!("no build {id}")),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    token: String,
}

/// `POST /api/session`: the build page signs in with a token, kept in an `HttpOnly`,
/// `SameSite=Strict` cookie (never readable by a script, never sent by another site).
async fn sign_in(State(c): State<Controller>, h: HeaderMap, body: Body) -> Response {
    let (body, _held) = match read_body(&c, &h, body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let b: SessionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let store = c.inner.store.clone();
    let secret = b.token.trim().to_string();
    let now = valet_store::now_ms();
    let found = {
        let secret = secret.clone();
        blocking(move || store.authenticate(&secret, now)).await
    };
    match found {
        Ok(Some((name, scopes))) => {
            // Only a token that matched a stored digest gets here: `valet_` and hex digits,
            // nothing that could break out of the header.
            let https = header_str(&h, "origin").is_some_and(|o| o.starts_with("https://"))
                || header_str(&h, "x-forwarded-proto") == Some("https");
            let cookie = format!(
                "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict{}",
                if https { "; Secure" } else { "" }
            );
            let mut r = axum::Json(json!({ "token": name, "scopes": scopes })).into_response();
            match HeaderValue::from_str(&cookie) {
                Ok(v) => {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                    r
                }
                Err(_) => error(StatusCode::UNAUTHORIZED, "the token is not valid"),
            }
        }
        Ok(None) => error(
            StatusCode::UNAUTHORIZED,
            "the token is not valid (unknown or revoked)",
        ),
        Err(e) => internal(e),
    }
}

/// `DELETE /api/session`: signs the page out.
async fn sign_out() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            HeaderValue::from_static("valet_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
    )
        .into_response()
}

/// `GET /api/repos`.
async fn list_repos(State(c): State<Controller>) -> Response {
    let repos: Vec<Value> = c
        .inner
        .config
        .repositories
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "url": crate::config::redact_url(&r.url),
                "pipeline": r.pipeline,
                "backend": r.backend,
                "branches": r.branches,
                "pull_requests": r.pull_requests,
                "concurrency": r.concurrency,
                "disable_concurrent_builds": r.disable_concurrent_builds,
            })
        })
        .collect();
    axum::Json(json!({ "repositories": repos })).into_response()
}

/// `GET /healthz`: the store answers.
async fn healthz(State(c): State<Controller>) -> Response {
    let store = c.inner.store.clone();
    match blocking(move || store.get_build(0)).await {
        Ok(_) => {
            let (queued, running) = c.queue_counts();
            axum::Json(json!({ "status": "ok", "queued": queued, "running": running }))
                .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

/// `GET /metrics`.
async fn metrics(State(c): State<Controller>) -> Response {
    let (queued, running) = c.queue_counts();
    let backends: Vec<(String, Vec<valet_backend::Metric>)> = c
        .inner
        .backends
        .lock()
        .await
        .iter()
        .map(|(k, b)| (k.clone(), b.metrics()))
        .collect();
    let backends: Vec<(&str, Vec<valet_backend::Metric>)> = backends
        .iter()
        .map(|(k, m)| (k.as_str(), m.clone()))
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        c.inner.metrics.render(queued, running, &backends),
    )
        .into_response()
}
