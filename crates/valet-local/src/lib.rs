//! `valet-local`: the local backend. A pod is a directory; a container is only a name.
//!
//! Every step runs as a host process through [`valet_process::Runner`], in its own process
//! group (so that cancelling a step ends everything it started, background children
//! included: TERM to the group, a grace period, then KILL). Output is streamed as it is
//! read. Images are not used; the backend says so once through [`Backend::notice`].
//!
//! No process of a build outlives it, also not one that left its group (`setsid … &`):
//! every process a step starts carries marks in its environment ([`OWNER_VAR`]: the valet
//! process, [`POD_VAR`]: the pod, [`STEP_VAR`]: the step), inherited by all it starts. A
//! cancel ends the processes carrying the step's marks, a teardown those carrying the pod's,
//! and [`Backend::collect_orphans`] those whose owner is gone (a `valet` killed with
//! SIGKILL), found through `/proc`. The valet process makes itself a child subreaper, so
//! such processes are handed to it when their parents end, and reaped by it.
//!
//! Steps run as the user running valet, or as another one ([`LocalBackend::with_user`],
//! `--backend-opt user=UID[:GID]`; `valet serve` running as root picks `nobody`, see
//! [`StepUser::NOBODY`]): then each pod's directory is that user's, and `HOME` is the pod's
//! own `home` directory. A step's environment is only what it is given (the runtime's
//! variables, the template's, the marks) plus a default `PATH`: nothing of valet's own.
//!
//! What it is not: a sandbox. Steps have their user's rights; a process that clears its
//! environment (`env -i`) and leaves its group escapes the marks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use valet_backend::owner::{Scope, current_owner};
use valet_backend::{
    Backend, BackendError, Command, Execution, ExecutionHandle, ExitStatus, Output, Pod,
    ProvisionRequest, StepRunner,
};
use valet_process::{Marks, Process, Runner, SpawnError, Spec, Stream};

/// The environment variable naming the valet process a step's processes belong to
/// (`valet_backend::owner::current_owner`).
pub const OWNER_VAR: &str = "VALET_OWNER";
/// The environment variable naming the pod a step's processes belong to (unique within
/// the owner).
pub const POD_VAR: &str = "VALET_POD";
/// The environment variable naming the step a process belongs to (unique within the owner).
pub const STEP_VAR: &str = "VALET_STEP";

/// How long what a pod left gets to end after TERM at teardown, before KILL.
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long what a dead owner left gets to end after TERM, before KILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);
/// Output pieces buffered between the pipes and the reader: a slow reader holds the
/// process back.
const OUTPUT: usize = 64;

/// Pods and steps of this process, numbered across every backend instance it has, so the
/// marks of two pods never match each other.
static PODS: AtomicU64 = AtomicU64::new(1);
static STEPS: AtomicU64 = AtomicU64::new(1);

/// The default `PATH` when neither the spec nor the command gives one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who a step runs as, by number (the host's user names are not looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUser {
    pub uid: u32,
    pub gid: u32,
}

impl StepUser {
    /// `nobody:nogroup` on Debian and most distributions: owns nothing of the host's.
    pub const NOBODY: StepUser = StepUser {
        uid: 65534,
        gid: 65534,
    };

    /// `UID` (its group the same number) or `UID:GID`.
    pub fn parse(s: &str) -> Result<StepUser, String> {
        let bad = || format!("user `{s}`: want UID or UID:GID (numbers)");
        let (uid, gid) = valet_process::parse_user(s.trim()).ok_or_else(bad)?;
        Ok(StepUser {
            uid,
            gid: gid.unwrap_or(uid),
        })
    }

    /// The user and group this process runs as.
    pub fn current() -> StepUser {
        StepUser {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// Whether this process runs as root (and so can run steps as another user).
    pub fn running_as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }
}

impl std::fmt::Display for StepUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// Runs pods as directories under `root` (the system temp directory by default).
pub struct LocalBackend {
    root: PathBuf,
    keep: bool,
    next: AtomicU64,
    /// Steps run as this user when it is not this process's.
    user: Option<StepUser>,
}

impl LocalBackend {
    /// Pods under `root`; with `keep`, teardown leaves their workspaces in place.
    pub fn new(root: impl Into<PathBuf>, keep: bool) -> Self {
        // Processes that leave a step's group are handed to this process when their parent
        // ends, so they are reaped here and stay countable; without it (an old kernel) the
        // marks still find them.
        if let Err(e) = valet_process::become_subreaper() {
            tracing::debug!(error = %e, "not a child subreaper");
        }
        LocalBackend {
            root: root.into(),
            keep,
            next: AtomicU64::new(1),
            user: None,
        }
    }

    /// Runs every step as `user` (this process must be root for any other than its own):
    /// each pod's directory, workspace and home become that user's.
    pub fn with_user(mut self, user: StepUser) -> Self {
        self.user = (user != StepUser::current()).then_some(user);
        self
    }

    /// The user steps run as, when it is not this process's.
    pub fn user(&self) -> Option<StepUser> {
        self.user
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
        let user = match self.user {
            Some(u) => format!("as user {u}"),
            None => "as the current user".into(),
        };
        Some(format!(
            "the local backend does not use container images: every step runs as a host process \
             ({user}) in a per-build workspace, and containers are only names"
        ))
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
        let home = match self.user {
            Some(user) => {
                let home = dir.join("home");
                let made = give_to(user, &dir, &workspace, &home);
                if let Err(e) = made {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                Some(home)
            }
            None => None,
        };
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
        let marks = Marks::new()
            .with(OWNER_VAR, current_owner())
            .with(POD_VAR, PODS.fetch_add(1, Ordering::Relaxed).to_string());
        Ok(Box::new(LocalPod {
            id,
            dir,
            workspace,
            home,
            user: self.user,
            keep: self.keep,
            containers,
            marks,
            groups: Arc::new(Mutex::new(Vec::new())),
            gone: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Ends the processes carrying the owner mark of an owner in `scope` (TERM, a grace
    /// period, KILL): after a `valet` was killed with SIGKILL, what its steps left running.
    /// The pods' directories are not looked for: they are temporary directories.
    async fn collect_orphans(&self, scope: &Scope) -> Result<Vec<String>, BackendError> {
        let mut owners: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (pid, owner) in valet_process::marks::marked_with(OWNER_VAR) {
            if scope.covers(Some(&owner)) {
                owners.entry(owner).or_default().push(pid);
            }
        }
        let mut removed = Vec::new();
        for (owner, mut pids) in owners {
            pids.sort_unstable();
            for pid in pids {
                let cmd = valet_process::marks::cmdline(pid);
                removed.push(format!("process {pid} ({cmd})"));
            }
            Marks::new().with(OWNER_VAR, owner).end(ORPHAN_GRACE).await;
        }
        valet_process::reap_orphans();
        Ok(removed)
    }
}

struct LocalPod {
    id: String,
    dir: PathBuf,
    workspace: PathBuf,
    /// `HOME` of steps run as another user.
    home: Option<PathBuf>,
    user: Option<StepUser>,
    keep: bool,
    /// Container name → its environment from the spec.
    containers: HashMap<String, BTreeMap<String, String>>,
    /// What every process of the pod carries: the owner and the pod.
    marks: Marks,
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

    fn host_files(&self) -> bool {
        true
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
            home: self.home.clone(),
            user: self.user,
            env: env.clone(),
            marks: self.marks.clone(),
            groups: self.groups.clone(),
            gone: self.gone.clone(),
        }))
    }

    async fn teardown(&self) -> Result<(), BackendError> {
        self.gone.store(true, Ordering::SeqCst);
        let groups: Vec<i32> =
            std::mem::take(&mut *self.groups.lock().unwrap_or_else(|e| e.into_inner()));
        for g in groups {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(g),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // What left the groups (`setsid … &`, daemons) still carries the pod's marks.
        self.marks.end(TEARDOWN_GRACE).await;
        valet_process::reap_orphans();
        if !self.keep && self.dir.exists() {
            remove_dir(&self.dir).await?;
        }
        Ok(())
    }
}

/// Makes the pod's directory, workspace and a new `home` belong to `user`, after checking
/// that `user` can reach the directory at all (every directory above it searchable by it):
/// otherwise no step could start, and the operator is told where it stops.
fn give_to(user: StepUser, dir: &Path, workspace: &Path, home: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::MetadataExt as _;
    for above in dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(above) else {
            continue;
        };
        let mode = m.mode();
        let searchable = if m.uid() == user.uid {
            mode & 0o100 != 0
        } else if m.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(BackendError::Unavailable(format!(
                "steps run as user {user}, who cannot enter {} (mode {:o}): workspaces under it are out of its reach; \
                 open it to that user (chmod o+x) or give the local backend another root",
                above.display(),
                mode & 0o7777
            )));
        }
    }
    std::fs::create_dir_all(home)
        .map_err(|e| BackendError::Unavailable(format!("cannot create {}: {e}", home.display())))?;
    for d in [dir, workspace, home] {
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot give {} to user {user}: {e} (only root runs steps as another user)",
                d.display()
            ))
        })?;
    }
    Ok(())
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
    home: Option<PathBuf>,
    user: Option<StepUser>,
    env: BTreeMap<String, String>,
    marks: Marks,
    groups: Arc<Mutex<Vec<i32>>>,
    gone: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl StepRunner for LocalRunner {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(BackendError::Lost("the pod was torn down".into()));
        }
        let cwd = match &cmd.cwd {
            Some(p) => self.workspace.join(p),
            None => self.workspace.clone(),
        };
        let mut env = self.env.clone();
        env.extend(cmd.env);
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        // Another user's home is the pod's, unless the step set one of its own (valet's
        // `HOME`, passed on by the runtime, is not the step user's).
        if let Some(home) = &self.home {
            let own = std::env::var_os("HOME");
            if env
                .get("HOME")
                .is_none_or(|h| own.as_deref() == Some(std::ffi::OsStr::new(h)))
            {
                env.insert("HOME".into(), home.display().to_string());
            }
        }
        let step = STEPS.fetch_add(1, Ordering::Relaxed);
        let spec = Spec {
            argv: cmd.argv,
            env: env.into_iter().collect(),
            clear_env: true,
            cwd: Some(cwd),
            user: self.user.map(|u| u.to_string()),
            stdin: cmd.stdin,
            output_cap: None,
            marks: self.marks.clone().with(STEP_VAR, step.to_string()),
        };
        let mut process = Runner::own_children().spawn(spec).map_err(|e| match e {
            SpawnError::Empty
            | SpawnError::BadUser(_)
            | SpawnError::NoDirectory(_)
            | SpawnError::NotFound(_) => BackendError::Rejected(e.to_string()),
            SpawnError::PermissionDenied { .. } | SpawnError::Io { .. } => {
                BackendError::Internal(e.to_string())
            }
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(OUTPUT);
        process.stream(tx, |stream, data| match stream {
            Stream::Stdout => Output::Stdout(data),
            Stream::Stderr => Output::Stderr(data),
        });
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|g| valet_process::group_alive(*g));
        groups.push(process.pid() as i32);
        Ok(Execution {
            output: rx,
            handle: Box::new(LocalHandle(process)),
        })
    }
}

/// A step on the host; dropped before its end, it kills what the step runs.
struct LocalHandle(Process);

fn status(exit: valet_process::Exit) -> ExitStatus {
    match exit {
        valet_process::Exit::Code(c) => ExitStatus::Code(c),
        valet_process::Exit::Signal(s) => ExitStatus::Signal(s),
    }
}

#[async_trait::async_trait]
impl ExecutionHandle for LocalHandle {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        Ok(status(self.0.wait().await.exit))
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        Ok(status(self.0.cancel(grace).await.exit))
    }
}
