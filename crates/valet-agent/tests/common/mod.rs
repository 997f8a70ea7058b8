//! Shared by the host tests: agents started on this machine (the package's own debug
//! binary) over sockets in a temp directory, and a `Backend` whose pods are such agents.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use valet_agent::{AgentRunner, DialListener};
use valet_backend::{Backend, BackendError, Pod, ProvisionRequest, StepRunner};

/// An agent process serving on a socket; killed (TERM, then KILL) when dropped.
pub struct HostAgent {
    pub child: Child,
    pub socket: PathBuf,
    pub runner: AgentRunner,
}

/// Starts `valet-agent serve` with `extra` arguments before `--` and `sidecar` after it, in
/// `workspace` (its working directory); the socket is `run/<name>.sock`.
pub async fn start_agent(
    run: &Path,
    dir: &Path,
    name: &str,
    extra: &[&str],
    sidecar: &[&str],
) -> HostAgent {
    let socket = run.join(format!("{name}.sock"));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valet-agent"));
    cmd.arg("serve").arg("--socket").arg(&socket).args(extra);
    if !sidecar.is_empty() {
        cmd.arg("--").args(sidecar);
    }
    let child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start valet-agent");
    let runner = AgentRunner::wait_for(&socket, dir, Duration::from_secs(10))
        .await
        .expect("the agent answers");
    HostAgent {
        child,
        socket,
        runner,
    }
}

impl HostAgent {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// TERM, and the agent's exit status once it ended (KILL after 10 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{Signal, kill};
        let _ = kill(nix::unistd::Pid::from_raw(self.pid()), Signal::SIGTERM);
        for _ in 0..1000 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait for the agent")
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// `pid`'s descendants (from /proc), with their state letter.
pub fn descendants(pid: i32) -> Vec<(i32, char)> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        procs.push((p, ppid, state));
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp, st) in &procs {
            if pp == parent {
                out.push((p, st));
                frontier.push(p);
            }
        }
    }
    out
}

/// Starts `valet-agent serve --dial` for container `name` of `pod`, its token in its
/// environment, in `dir`, and waits for it to dial `listener`.
pub async fn start_dialling_agent(
    listener: &DialListener,
    pod: &str,
    dir: &Path,
    name: &str,
) -> HostAgent {
    let (token, pending) = listener.expect(pod, name).expect("a token");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_valet-agent"))
        .args(["serve", "--dial", &listener.local_addr().to_string()])
        .args(["--pod", pod, "--container", name])
        .env(valet_agent::dial::TOKEN_ENV, token.expose())
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start valet-agent");
    let runner = pending
        .connect(dir, Duration::from_secs(10))
        .await
        .expect("the agent dials in and answers");
    HostAgent {
        child,
        socket: PathBuf::new(),
        runner,
    }
}

/// A backend whose pod is a temp directory and one host agent per container, each serving
/// on a unix socket.
pub struct HostAgentBackend;

/// The same, but each pod's agents dial a tunnel listener of the pod on 127.0.0.1.
pub struct HostDialBackend;

struct HostPod {
    id: String,
    dir: Mutex<Option<tempfile::TempDir>>,
    workspace: PathBuf,
    agents: Mutex<Vec<HostAgent>>,
    runners: Vec<(String, Arc<dyn StepRunner>)>,
    _tunnel: Option<DialListener>,
}

#[async_trait::async_trait]
impl Backend for HostAgentBackend {
    fn name(&self) -> &'static str {
        "host-agent"
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError> {
        provision_host(req, false).await
    }
}

#[async_trait::async_trait]
impl Backend for HostDialBackend {
    fn name(&self) -> &'static str {
        "host-agent-dial"
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError> {
        provision_host(req, true).await
    }
}

async fn provision_host(req: &ProvisionRequest, dial: bool) -> Result<Box<dyn Pod>, BackendError> {
    let spec = &req.spec;
    let dir = tempfile::tempdir().map_err(|e| BackendError::Internal(e.to_string()))?;
    // Canonical, so `pwd` in a step prints the same path.
    let root = dir
        .path()
        .canonicalize()
        .map_err(|e| BackendError::Internal(e.to_string()))?;
    // Sockets apart from the workspace, as on Docker (a new workspace is empty).
    let (workspace, run) = (root.join("ws"), root.join("run"));
    for d in [&workspace, &run] {
        std::fs::create_dir(d).map_err(|e| BackendError::Internal(e.to_string()))?;
    }
    let mut agents = Vec::new();
    let mut runners = Vec::new();
    let tunnel = match dial {
        true => Some(
            DialListener::bind("127.0.0.1:0".parse().unwrap())
                .await
                .map_err(|e| BackendError::Internal(e.to_string()))?,
        ),
        false => None,
    };
    let id = format!("host-{}", spec.name);
    for c in &spec.containers {
        let agent = match &tunnel {
            Some(t) => start_dialling_agent(t, &id, &workspace, &c.name).await,
            None => start_agent(&run, &workspace, &c.name, &[], &[]).await,
        };
        runners.push((
            c.name.clone(),
            Arc::new(agent.runner.clone()) as Arc<dyn StepRunner>,
        ));
        agents.push(agent);
    }
    Ok(Box::new(HostPod {
        id,
        dir: Mutex::new(Some(dir)),
        workspace,
        agents: Mutex::new(agents),
        runners,
        _tunnel: tunnel,
    }))
}

#[async_trait::async_trait]
impl Pod for HostPod {
    fn id(&self) -> &str {
        &self.id
    }

    fn workspace(&self) -> PathBuf {
        self.workspace.clone()
    }

    fn runner(&self, container: &str) -> Result<Arc<dyn StepRunner>, BackendError> {
        self.runners
            .iter()
            .find(|(n, _)| n == container)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| BackendError::Rejected(format!("no container {container:?}")))
    }

    async fn teardown(&self) -> Result<(), BackendError> {
        self.agents.lock().unwrap().clear();
        self.dir.lock().unwrap().take();
        Ok(())
    }
}
