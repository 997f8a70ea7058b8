//! A backend that runs nothing and records everything it is asked: the pods it was asked
//! for (with their resolved specs), the commands started in them, teardowns, shutdowns and
//! orphan collections. For tests of the layers above the contract (the runtime, the CLI,
//! the controller), and the model of what a new backend must answer.
//!
//! A command "runs" instantly: it prints nothing and exits 0, unless a [`Rule`] matches
//! its text. Provisioning can be made to fail ([`FakeBackend::fail_provisions`]). Commands
//! can be held until a file exists ([`FakeBackend::hold_until`]), for tests that need many
//! builds running at once and then let them go.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::owner::Scope;
use crate::{
    Backend, BackendError, Command, ContainerSpec, Execution, ExecutionHandle, ExitStatus, Metric,
    MetricKind, Output, Pod, PodPhase, PodSpec, ProvisionRequest, StepRunner,
};

/// One thing the fake was asked to do.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    Provision {
        pod: String,
        job: String,
        label: Option<String>,
        build: String,
        repository: Option<String>,
        spec: Box<PodSpec>,
    },
    Start {
        pod: String,
        container: String,
        argv: Vec<String>,
    },
    Teardown {
        pod: String,
    },
    Shutdown,
    CollectOrphans {
        scope: String,
    },
}

/// A command whose text contains `contains` prints `stdout` and exits with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub contains: String,
    pub stdout: String,
    pub code: i32,
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    rules: Mutex<Vec<Rule>>,
    /// Provisions still to fail, with this reason.
    failing: Mutex<Option<(u32, String)>>,
    /// Every call is also appended to this file as a JSON line (for tests that run the
    /// fake in another process: `valet run --backend fake`).
    record: Option<PathBuf>,
    /// Commands end only once this file exists.
    hold: Mutex<Option<PathBuf>>,
    next: AtomicU32,
    live_pods: AtomicU64,
}

/// See the [module documentation](self).
#[derive(Clone, Default)]
pub struct FakeBackend {
    state: Arc<State>,
}

impl FakeBackend {
    pub fn new() -> FakeBackend {
        FakeBackend::default()
    }

    /// A fake that also appends each call to `file` as a JSON line.
    pub fn recording_to(file: PathBuf) -> FakeBackend {
        FakeBackend {
            state: Arc::new(State {
                record: Some(file),
                ..State::default()
            }),
        }
    }

    /// Commands containing `contains` print `stdout` and exit with `code`.
    pub fn rule(&self, contains: &str, stdout: &str, code: i32) -> &Self {
        lock(&self.state.rules).push(Rule {
            contains: contains.into(),
            stdout: stdout.into(),
            code,
        });
        self
    }

    /// Every command started from now on ends only once `file` exists (looked for every
    /// 50 ms, without holding a thread); a cancel ends it at once. Orphan collection waits
    /// for it too (an engine slow to clean up).
    pub fn hold_until(&self, file: PathBuf) -> &Self {
        *lock(&self.state.hold) = Some(file);
        self
    }

    /// The next `n` provisions fail as unavailable, with `reason`.
    pub fn fail_provisions(&self, n: u32, reason: &str) {
        *lock(&self.state.failing) = Some((n, reason.to_string()));
    }

    /// Everything asked so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }

    /// The provision requests' specs, in order.
    pub fn provisioned(&self) -> Vec<PodSpec> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Provision { spec, .. } => Some(*spec),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: Call) {
        if let Some(file) = &self.state.record {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                && let Ok(line) = serde_json::to_string(&call)
            {
                // One write per line: appends from concurrent calls never interleave.
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
        }
        lock(&self.state.calls).push(call);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn notice(&self) -> Option<String> {
        Some("the fake backend runs nothing: every command succeeds at once".into())
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError> {
        let n = self.state.next.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("fake-{}-{n}", req.build.id);
        self.record(Call::Provision {
            pod: id.clone(),
            job: req.job.clone(),
            label: req.label.clone(),
            build: req.build.id.clone(),
            repository: req.build.repository.clone(),
            spec: Box::new(req.spec.clone()),
        });
        {
            let mut failing = lock(&self.state.failing);
            if let Some((left, reason)) = failing.as_mut()
                && *left > 0
            {
                *left -= 1;
                return Err(BackendError::Unavailable(reason.clone()));
            }
        }
        for phase in [
            PodPhase::Placed,
            PodPhase::Created,
            PodPhase::Started,
            PodPhase::AgentConnected,
        ] {
            req.events.phase(&id, phase);
        }
        self.state.live_pods.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(FakePod {
            id,
            containers: req.spec.containers.clone(),
            backend: self.clone(),
            torn_down: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        self.record(Call::Shutdown);
        Ok(())
    }

    async fn collect_orphans(&self, scope: &Scope) -> Result<Vec<String>, BackendError> {
        self.record(Call::CollectOrphans {
            scope: format!("{scope:?}"),
        });
        // Held like a command: an engine slow to remove what a dead owner left.
        let hold = lock(&self.state.hold).clone();
        if let Some(file) = hold {
            while !file.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(Vec::new())
    }

    fn metrics(&self) -> Vec<Metric> {
        vec![Metric {
            name: "fake_live_pods",
            help: "Pods of the fake backend not yet torn down.",
            kind: MetricKind::Gauge,
            value: self.state.live_pods.load(Ordering::Relaxed) as f64,
        }]
    }
}

struct FakePod {
    id: String,
    containers: Vec<ContainerSpec>,
    backend: FakeBackend,
    torn_down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Pod for FakePod {
    fn id(&self) -> &str {
        &self.id
    }

    fn workspace(&self) -> PathBuf {
        PathBuf::from("/fake/workspace").join(&self.id)
    }

    fn runner(&self, container: &str) -> Result<Arc<dyn StepRunner>, BackendError> {
        if !self.containers.iter().any(|c| c.name == container) {
            return Err(BackendError::Rejected(format!(
                "pod {} has no container '{container}'",
                self.id
            )));
        }
        Ok(Arc::new(FakeRunner {
            pod: self.id.clone(),
            container: container.to_string(),
            backend: self.backend.clone(),
        }))
    }

    async fn teardown(&self) -> Result<(), BackendError> {
        if !self.torn_down.swap(true, Ordering::Relaxed) {
            self.backend.state.live_pods.fetch_sub(1, Ordering::Relaxed);
        }
        self.backend.record(Call::Teardown {
            pod: self.id.clone(),
        });
        Ok(())
    }
}

struct FakeRunner {
    pod: String,
    container: String,
    backend: FakeBackend,
}

#[async_trait::async_trait]
impl StepRunner for FakeRunner {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError> {
        self.backend.record(Call::Start {
            pod: self.pod.clone(),
            container: self.container.clone(),
            argv: cmd.argv.clone(),
        });
        let text = cmd.argv.join(" ");
        let rule = lock(&self.backend.state.rules)
            .iter()
            .find(|r| text.contains(&r.contains))
            .cloned();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let code = match rule {
            Some(r) => {
                if !r.stdout.is_empty() {
                    let _ = tx.try_send(Output::Stdout(bytes::Bytes::from(r.stdout)));
                }
                r.code
            }
            None => 0,
        };
        let handle: Box<dyn ExecutionHandle> = match lock(&self.backend.state.hold).clone() {
            Some(file) => Box::new(Held {
                file,
                status: ExitStatus::Code(code),
            }),
            None => Box::new(Done(ExitStatus::Code(code))),
        };
        Ok(Execution { output: rx, handle })
    }
}

struct Done(ExitStatus);

#[async_trait::async_trait]
impl ExecutionHandle for Done {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        Ok(self.0)
    }
    async fn cancel(&mut self, _grace: std::time::Duration) -> Result<ExitStatus, BackendError> {
        Ok(ExitStatus::Signal(15))
    }
}

/// A command that ends once a file exists.
struct Held {
    file: PathBuf,
    status: ExitStatus,
}

#[async_trait::async_trait]
impl ExecutionHandle for Held {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        while !self.file.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(self.status)
    }
    async fn cancel(&mut self, _grace: std::time::Duration) -> Result<ExitStatus, BackendError> {
        Ok(ExitStatus::Signal(15))
    }
}
