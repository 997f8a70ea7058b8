//! The one place that calls `waitpid` in a process that reaps every child it has: the agent,
//! PID 1 of a container (or a child subreaper on a host), which inherits every orphan of its
//! process tree. It reaps them all and hands the exit status of the processes it started to
//! whoever waits for them.
//!
//! A second `waitpid` elsewhere (tokio's process reaper, `Child::wait`) would race this loop
//! and steal statuses, so processes are started through [`Reaper::spawn`] only (a
//! [`crate::Runner::with_reaper`] does), which registers the pid under the same lock the
//! loop takes before it reaps: a child cannot be reaped before its waiter is registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a process ended, as `waitpid` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Reaps children; cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<Exit>>>>,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<Exit>>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `cmd` and registers its pid before the reap loop can see it end.
    pub fn spawn(
        &self,
        cmd: &mut std::process::Command,
    ) -> std::io::Result<(std::process::Child, oneshot::Receiver<Exit>)> {
        let mut waiting = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Reaps every child that has ended; returns how many.
    pub fn reap(&self) -> usize {
        let mut n = 0;
        loop {
            let mut waiting = self.lock();
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return n;
                }
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, Exit::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => (pid, Exit::Signal(sig as i32)),
                // Stops and continues are not ends (WNOHANG without WUNTRACED rarely gives them).
                _ => continue,
            };
            n += 1;
            match waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::trace!(pid = pid.as_raw(), %exit, "reaped an orphan"),
            }
        }
    }

    /// Reaps on every SIGCHLD (and once a second, in case a signal was coalesced away)
    /// until the task is dropped.
    pub async fn run(self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigchld = signal(SignalKind::child())?;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = tick.tick() => {}
            }
            self.reap();
        }
    }
}

/// Makes this process the reaper of its orphaned descendants when it is not PID 1: the
/// agent on a host behaves as it does as a container's first process, and a step's process
/// that left its group (`setsid … &`) is handed to valet when its parent ends, instead of to
/// the machine's init, so it stays among the processes valet accounts for.
pub fn become_subreaper() -> nix::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true)
}
