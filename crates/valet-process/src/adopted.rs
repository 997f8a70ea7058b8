//! Waiting for children inside a program that has other children too ([`crate::Runner::own_children`]).
//!
//! tokio waits for each process the runner starts, by its pid. What those processes leave
//! behind is handed to this process once their parents end, when it is a child subreaper
//! ([`crate::become_subreaper`]); nobody else waits for those, so they are reaped here, by pid,
//! once they are zombies. A zombie child is taken for such an orphan only when it is in the
//! process group of a step the runner started, or in a session other than this process's
//! (it left its group with `setsid`); the runner's own main processes are excluded. Other
//! children of the program (a `git` it runs and waits for) are never touched.
//!
//! A step's main process is registered under the same lock the reaping takes, before the
//! spawn returns, so its zombie is never taken for an orphan.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::Started;
use crate::group::group_alive;
use crate::marks::each_process;
use crate::reaper::Exit;

#[derive(Default)]
struct State {
    /// Main processes tokio waits for.
    mains: HashSet<i32>,
    /// Process groups of steps started here that may still have members.
    groups: HashSet<i32>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<State>> {
    // A panic elsewhere while holding the lock leaves sets that are still consistent.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn spawn(cmd: std::process::Command) -> std::io::Result<Started> {
    let mut state = lock();
    let state = state.get_or_insert_with(State::default);
    let mut child = tokio::process::Command::from(cmd).spawn()?;
    let Some(pid) = child.id() else {
        return Err(std::io::Error::other("the process ended before it started"));
    };
    state.mains.insert(pid as i32);
    state.groups.insert(pid as i32);
    let stdin = child.stdin.take().map(|s| s.into_owned_fd()).transpose()?;
    let stdout = child.stdout.take().map(|s| s.into_owned_fd()).transpose()?;
    let stderr = child.stderr.take().map(|s| s.into_owned_fd()).transpose()?;
    let (tx, exit) = oneshot::channel();
    tokio::spawn(async move {
        let status = child.wait().await;
        if let Some(s) = lock().as_mut() {
            s.mains.remove(&(pid as i32));
        }
        let exit = match status {
            Ok(st) => convert(st),
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot wait for a process");
                Exit::Code(-1)
            }
        };
        let _ = tx.send(exit);
    });
    Ok(Started {
        pid,
        stdin,
        stdout,
        stderr,
        exit,
    })
}

fn convert(st: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    }
}

/// When [`reap_now_and_then`] last scanned.
static LAST_SCAN: Mutex<Option<std::time::Instant>> = Mutex::new(None);

/// Scans at most once per this: a zombie orphan costs nothing while it waits, a scan of
/// `/proc` after every step costs each step more than the step.
const SCAN_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// [`reap`], unless it ran less than [`SCAN_EVERY`] ago (after each step; a teardown,
/// a cancel and orphan collection reap at once).
pub(crate) fn reap_now_and_then() {
    {
        let mut last = LAST_SCAN.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < SCAN_EVERY) {
            return;
        }
        *last = Some(now);
    }
    reap();
}

/// Reaps the zombie children that are orphans of steps (see the module documentation).
pub(crate) fn reap() {
    let mut guard = lock();
    let state = guard.get_or_insert_with(State::default);
    let me = std::process::id() as i32;
    let my_session = nix::unistd::getsid(None).map(|s| s.as_raw()).unwrap_or(-1);
    let mut orphans = Vec::new();
    each_process(|pid, stat| {
        if stat.ppid == me
            && stat.state == b'Z'
            && !state.mains.contains(&pid)
            && (stat.session != my_session || state.groups.contains(&stat.pgrp))
        {
            orphans.push(pid);
        }
    });
    for pid in orphans {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
    let mains = &state.mains;
    state
        .groups
        .retain(|g| mains.contains(g) || group_alive(*g));
}
