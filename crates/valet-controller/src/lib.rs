//! `valet-controller`: the service a team points its repositories at.
//!
//! Webhooks (`hooks.rs`: verification and payloads, pure) become build records in the store
//! (`valet-store`) before they are answered; the dispatcher (`dispatch.rs`) drives the
//! scheduler (`valet-sched`, pure: global, per-repository and per-branch limits, pods per
//! backend) and hands builds to the runner (`runner.rs`: git
//! checkout, parse and plan, the runtime on a backend, events into the store, the log
//! files and the live stream of `live.rs`); `server.rs` is the HTTP side (axum): hooks, the
//! JSON API, server-sent events, `/metrics` (`metrics.rs`). On start, `restart.rs`
//! reconciles what a previous process left.
//!
//! Start at [`Controller::start`]. The HTTP API is documented in `docs/controller.md`.
//!
//! Invariants:
//! - a webhook is answered 2xx only after its build record is committed;
//! - no request handler waits for a running build: store calls run on blocking threads,
//!   builds run in their own tasks;
//! - a build that was running when the controller died is never run again (it ends as
//!   ERROR, "controller restarted"), so no step runs twice.

pub mod access;
pub mod config;
mod dispatch;
pub mod hooks;
pub mod live;
pub mod metrics;
mod restart;
mod runner;
pub mod server;
mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use valet_runtime::CancellationToken;
pub use valet_store::now_ms;
pub use valet_store::tokens::{CreateTokenError, Scope, TokenRow};
use valet_store::{BuildId, Store, StoreError};

/// `ms` (since the Unix epoch) as a UTC date and time, as the build page shows it.
pub fn utc(ms: i64) -> String {
    ui::utc(ms)
}

pub use config::{Config, ConfigError};

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running controller's shared state; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) store: Arc<Store>,
    /// Repository index by every name and URL a webhook may use for it.
    pub(crate) repo_keys: HashMap<String, usize>,
    /// Where the dispatcher, which owns the scheduler, is told what happens.
    pub(crate) sched: tokio::sync::mpsc::UnboundedSender<dispatch::Msg>,
    pub(crate) counts: dispatch::Counts,
    /// The next pod demand's id.
    pub(crate) next_pod: std::sync::atomic::AtomicU64,
    pub(crate) live: live::Registry,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) cancels: Mutex<HashMap<BuildId, Cancel>>,
    /// The backends in use, by kind, built when a build first needs one.
    pub(crate) backends: tokio::sync::Mutex<HashMap<String, Arc<dyn valet_backend::Backend>>>,
    pub(crate) shutdown: CancellationToken,
    /// Bytes of request bodies that may be held at once (`server::BODY_BUDGET`).
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
}

/// How to stop one running build, and why it was stopped.
#[derive(Clone)]
pub(crate) struct Cancel {
    pub(crate) token: CancellationToken,
    pub(crate) reason: Arc<Mutex<Option<String>>>,
}

/// A controller serving HTTP.
pub struct Running {
    pub controller: Controller,
    /// The address it listens on (the port chosen when the configuration said 0).
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting requests and aborts the running builds ("controller stopped");
    /// waits up to `grace` for them to record their end. Queued builds stay queued.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.controller.inner.shutdown.cancel();
        let builds: Vec<Cancel> = lock(&self.controller.inner.cancels)
            .values()
            .cloned()
            .collect();
        for c in builds {
            *lock(&c.reason) = Some("controller stopped".into());
            c.token.cancel();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.controller.inner.counts.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = tokio::time::timeout_at(deadline, self.server).await;
        // The backends' pools go with the controller (a crash leaves them to the next
        // start's orphan collection).
        let backends: Vec<_> = self
            .controller
            .inner
            .backends
            .lock()
            .await
            .values()
            .cloned()
            .collect();
        for b in backends {
            if let Err(e) = b.shutdown().await {
                tracing::warn!(backend = b.name(), error = %e, "stopping the backend");
            }
        }
    }

    /// Waits until the server stops (it does not on its own).
    pub async fn wait(self) {
        let _ = self.server.await;
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a blocking thread (store and file calls never run on the async threads).
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Opens (or creates) the store in the data directory `dir`, which only the controller's
/// user may enter: the database, logs and checkouts hold what builds printed. For the
/// controller and for its admin commands (`valet token`).
pub fn open_store(dir: &std::path::Path) -> Result<Store, StartError> {
    use std::os::unix::fs::PermissionsExt as _;
    let data_dir = |source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(data_dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(data_dir)?;
    Ok(Store::open(dir)?)
}

impl Controller {
    /// Opens the store, reconciles what a previous run left (running builds fail with
    /// "controller restarted", their pods are removed, queued builds are queued again),
    /// listens on `config.listen` and starts dispatching builds.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        Controller::start_on(config, listener).await
    }

    /// As [`Controller::start`], on a listener already bound.
    pub async fn start_on(
        config: Config,
        listener: tokio::net::TcpListener,
    ) -> Result<Running, StartError> {
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let dir = config.data_dir.clone();
        let store = Arc::new(blocking(move || open_store(&dir)).await?);
        let repos: Vec<(String, String)> = config
            .repositories
            .iter()
            // The store (and everything that reads it) gets the URL without its
            // credentials: they stay in the configuration and reach only git.
            .map(|r| (r.name.clone(), config::redact_url(&r.url)))
            .collect();
        {
            let store = store.clone();
            blocking(move || store.sync_repos(&repos)).await?;
        }
        let mut repo_keys = HashMap::new();
        for (i, r) in config.repositories.iter().enumerate() {
            // Payloads name the clone URL without the credentials it has here.
            let bare = config::url_without_userinfo(&r.url);
            for url in [r.url.clone(), bare] {
                repo_keys
                    .entry(url.trim_end_matches(".git").to_string())
                    .or_insert(i);
                repo_keys.entry(url).or_insert(i);
            }
        }
        // Names win over URLs that happen to be equal to another repository's name.
        for (i, r) in config.repositories.iter().enumerate() {
            repo_keys.insert(r.name.clone(), i);
        }
        let (sched, sched_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            sched,
            counts: dispatch::Counts::default(),
            next_pod: Default::default(),
            config,
            store,
            repo_keys,
            live: live::Registry::default(),
            metrics: metrics::Metrics::default(),
            cancels: Mutex::default(),
            backends: tokio::sync::Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(server::BODY_BUDGET)),
        });
        let controller = Controller { inner };
        restart::reconcile(&controller).await?;
        tokio::spawn(dispatch::run(controller.clone(), sched_rx));
        let app = server::router(controller.clone());
        let shutdown = controller.inner.shutdown.clone();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
        tracing::info!(%addr, "valet controller listening");
        Ok(Running {
            controller,
            addr,
            server,
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store, for callers that render pages from it (call it off the async threads).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The live events of a build that is not finished (`None` once it is: read
    /// [`Store::read_events`] then).
    pub fn live(&self, id: BuildId) -> Option<Arc<live::Live>> {
        self.inner.live.get(id)
    }

    /// Builds waiting and running now.
    pub fn queue_counts(&self) -> (usize, usize) {
        let c = &self.inner.counts;
        (c.queued(), c.active())
    }

    /// Tells the dispatcher (a no-op once it has stopped with the controller).
    pub(crate) fn send(&self, m: dispatch::Msg) {
        let _ = self.inner.sched.send(m);
    }

    /// Queues a recorded build.
    pub(crate) fn enqueue(&self, id: BuildId, repo: &str, branch: Option<&str>) {
        self.inner.counts.submitted();
        self.enqueue_reserved(id, repo, branch);
    }

    /// Queues a recorded build whose place was taken with `Counts::reserve`.
    pub(crate) fn enqueue_reserved(&self, id: BuildId, repo: &str, branch: Option<&str>) {
        self.inner.live.get_or_create(id);
        let exclusive = self
            .inner
            .config
            .repo(repo)
            .is_some_and(|r| r.disable_concurrent_builds);
        self.send(dispatch::Msg::Submit(valet_sched::BuildSpec {
            id,
            repo: repo.to_string(),
            branch: branch.unwrap_or_default().to_string(),
            exclusive,
        }));
    }

    /// Cancels a build: a queued one ends ABORTED at once, a running one is interrupted
    /// (its steps are killed, `post` and `finally` run) and ends ABORTED.
    pub async fn cancel(&self, id: BuildId, reason: &str) -> Result<CancelOutcome, StoreError> {
        // A build whose task started (running, or waiting for its branch) is stopped by its
        // token; its task then tells the scheduler it finished.
        if let Some(c) = lock(&self.inner.cancels).get(&id).cloned() {
            *lock(&c.reason) = Some(reason.to_string());
            c.token.cancel();
            return Ok(CancelOutcome::Cancelling);
        }
        let (reply, removed) = tokio::sync::oneshot::channel();
        self.send(dispatch::Msg::Cancel { build: id, reply });
        if removed.await.unwrap_or(false) {
            let store = self.inner.store.clone();
            let r = reason.to_string();
            if blocking(move || store.cancel_queued(id, &r)).await? {
                runner::finish_live(self, id, "ABORTED", Some(reason)).await;
                self.inner.metrics.build_finished("ABORTED");
                return Ok(CancelOutcome::Cancelled);
            }
        }
        if let Some(c) = lock(&self.inner.cancels).get(&id).cloned() {
            *lock(&c.reason) = Some(reason.to_string());
            c.token.cancel();
            return Ok(CancelOutcome::Cancelling);
        }
        let store = self.inner.store.clone();
        match blocking(move || store.get_build(id)).await? {
            None => Ok(CancelOutcome::NotFound),
            Some(b) if b.result.is_some() => Ok(CancelOutcome::AlreadyFinished),
            // Between the queue and the runner: the runner sees the store and stops.
            Some(_) => {
                let store = self.inner.store.clone();
                let r = reason.to_string();
                if blocking(move || store.cancel_queued(id, &r)).await? {
                    runner::finish_live(self, id, "ABORTED", Some(reason)).await;
                    self.inner.metrics.build_finished("ABORTED");
                    Ok(CancelOutcome::Cancelled)
                } else {
                    Ok(CancelOutcome::Cancelling)
                }
            }
        }
    }
}

/// What [`Controller::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started: it is ABORTED now.
    Cancelled,
    /// It is running: it is being interrupted.
    Cancelling,
    AlreadyFinished,
    NotFound,
}
