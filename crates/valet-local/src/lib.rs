//! `valet-local`: the local backend. A pod is a directory; a container is only a name.
//!
//! Every step runs as a host process, in its own process group (so that cancelling a step
//! ends everything it started, background children included: TERM to the group, a grace
//! period, then KILL). Output is streamed as it is read. Images are not used; the backend
//! says so once through [`Backend::notice`].
//!
//! What it is not: a sandbox. Steps run as the user running valet, with that user's rights.

mod process;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use valet_backend::{Backend, BackendError, Command, Execution, Pod, ProvisionRequest, StepRunner};

/// The default `PATH` when neither the spec nor the command gives one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs pods as directories under `root` (the system temp directory by default).
pub struct LocalBackend {
    root: PathBuf,
    keep: bool,
    next: AtomicU64,
}

impl LocalBackend {
    /// Pods under `root`; with `keep`, teardown leaves their workspaces in place.
    pub fn new(root: impl Into<PathBuf>, keep: bool) -> Self {
        LocalBackend {
            root: root.into(),
            keep,
            next: AtomicU64::new(1),
        }
    }

    /// Pods under the system temp directory, removed at teardown.
    pub fn temporary() -> Self {
        LocalBackend::new(std::env::temp_dir(), false)
    }

    pub fn keeps_workspaces(&self) -> bool {
        self.keep
    }
}

fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() { "pod".into() } else { s }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn notice(&self) -> Option<String> {
        Some(
            "the local backend does not use container images: every step runs as a host process \
             (as the current user) in a per-build workspace, and containers are only names"
                .into(),
        )
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError> {
        let (spec, build_id) = (&req.spec, req.build.id.as_str());
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("valet-{}-{}-{n}-", sanitize(build_id), sanitize(&spec.name));
        std::fs::create_dir_all(&self.root).map_err(|e| {
            BackendError::Unavailable(format!("cannot create {}: {e}", self.root.display()))
        })?;
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&self.root)
            .map_err(|e| {
                BackendError::Unavailable(format!(
                    "cannot create a workspace in {}: {e}",
                    self.root.display()
                ))
            })?
            .keep();
        let workspace = dir.join("workspace");
        std::fs::create_dir_all(&workspace).map_err(|e| {
            BackendError::Unavailable(format!("cannot create {}: {e}", workspace.display()))
        })?;
        let mut containers = HashMap::new();
        let pod_env: BTreeMap<String, String> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Every container of the spec is accepted, Jenkins' `jnlp` agent container too: steps
        // outside `container('…')` run there when a pod template says so.
        for c in &spec.containers {
            let mut env = pod_env.clone();
            env.extend(c.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            containers.insert(c.name.clone(), env);
        }
        if containers.is_empty() {
            containers.insert(
                if spec.default_container.is_empty() {
                    "default".to_string()
                } else {
                    spec.default_container.clone()
                },
                pod_env,
            );
        }
        let id = format!("local-{}-{n}", sanitize(&spec.name));
        Ok(Box::new(LocalPod {
            id,
            dir,
            workspace,
            keep: self.keep,
            containers,
            groups: Arc::new(Mutex::new(Vec::new())),
            gone: Arc::new(AtomicBool::new(false)),
        }))
    }
}

struct LocalPod {
    id: String,
    dir: PathBuf,
    workspace: PathBuf,
    keep: bool,
    /// Container name → its environment from the spec.
    containers: HashMap<String, BTreeMap<String, String>>,
    /// Process groups started in this pod; teardown kills what is left of them.
    groups: Arc<Mutex<Vec<i32>>>,
    gone: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Pod for LocalPod {
    fn id(&self) -> &str {
        &self.id
    }

    fn workspace(&self) -> PathBuf {
        self.workspace.clone()
    }

    fn runner(&self, container: &str) -> Result<Arc<dyn StepRunner>, BackendError> {
        let env = self.containers.get(container).ok_or_else(|| {
            let mut names: Vec<&str> = self.containers.keys().map(String::as_str).collect();
            names.sort();
            BackendError::Rejected(format!(
                "no container `{container}` in pod {} (it has {})",
                self.id,
                names.join(", ")
            ))
        })?;
        Ok(Arc::new(LocalRunner {
            workspace: self.workspace.clone(),
            env: env.clone(),
            groups: self.groups.clone(),
            gone: self.gone.clone(),
        }))
    }

    async fn teardown(&self) -> Result<(), BackendError> {
        self.gone.store(true, Ordering::SeqCst);
        let groups: Vec<i32> =
            std::mem::take(&mut *self.groups.lock().unwrap_or_else(|e| e.into_inner()));
        for g in groups {
            process::kill_group(g, nix::sys::signal::Signal::SIGKILL);
        }
        if !self.keep && self.dir.exists() {
            remove_dir(&self.dir).await?;
        }
        Ok(())
    }
}

async fn remove_dir(dir: &Path) -> Result<(), BackendError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Files a step made read-only (e.g. Go's module cache) block removal: make them
            // writable and try once more.
            let _ = tokio::process::Command::new("chmod")
                .arg("-R")
                .arg("u+rwX")
                .arg(dir)
                .status()
                .await;
            tokio::fs::remove_dir_all(dir).await.map_err(|e| {
                BackendError::Internal(format!("cannot remove {}: {e}", dir.display()))
            })
        }
    }
}

struct LocalRunner {
    workspace: PathBuf,
    env: BTreeMap<String, String>,
    groups: Arc<Mutex<Vec<i32>>>,
    gone: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl StepRunner for LocalRunner {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(BackendError::Lost("the pod was torn down".into()));
        }
        let Some((program, args)) = cmd.argv.split_first() else {
            return Err(BackendError::Rejected("an empty command".into()));
        };
        let cwd = match &cmd.cwd {
            Some(p) => self.workspace.join(p),
            None => self.workspace.clone(),
        };
        let mut env = self.env.clone();
        env.extend(cmd.env);
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        let exec = process::spawn(program, args, &env, &cwd, cmd.stdin)?;
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|g| process::group_alive(*g));
        groups.push(exec.1);
        Ok(exec.0)
    }
}
