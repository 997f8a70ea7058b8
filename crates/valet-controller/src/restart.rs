//! On start: what a previous controller process left behind.
//!
//! - Builds that were running end as ERROR, "controller restarted". They are not run again
//!   (their steps may have had effects; a step never runs twice). Re-attaching to a live
//!   pod is not done: neither backend can hand a running step back to a new process yet.
//! - Their leftovers are removed: on the local backend, processes still running from the
//!   build's directory (each step is a process group of its own, so they outlive a killed
//!   controller) are killed and the directory is removed; and every backend in use collects
//!   what a dead owner left on it (`Backend::collect_orphans`, as `valet gc` does).
//! - Queued builds are queued again, in their order.

use std::path::Path;

use valet_store::{BuildId, StoreError};

use crate::runner::build_dir;
use crate::{Controller, blocking};

pub(crate) const RESTARTED: &str = "controller restarted";

pub(crate) async fn reconcile(c: &Controller) -> Result<(), StoreError> {
    let store = c.inner.store.clone();
    let failed = blocking(move || store.fail_running(RESTARTED)).await?;
    for b in &failed {
        tracing::warn!(build = b.id, repo = %b.repo, number = b.number, "the build was running when the controller stopped: {RESTARTED}");
        let dir = build_dir(c, b.id);
        let store = c.inner.store.clone();
        let limit = c.inner.config.step_log_limit;
        let id = b.id;
        blocking(move || {
            kill_leftovers(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            if let Ok(mut log) = store.build_log(id, limit) {
                let _ = log.line(&format!("Finished: ERROR ({RESTARTED})"));
                let _ = log.event(
                    &serde_json::json!({
                        "event": "build_status", "status": "finished", "result": "ERROR", "reason": RESTARTED,
                    })
                    .to_string(),
                );
            }
        })
        .await;
    }
    if !failed.is_empty() {
        // In the background: a flooded engine can take minutes to remove what the dead
        // controller left, and the HTTP server must answer meanwhile. Only a dead owner's
        // objects are touched, so new builds can start beside it.
        let c = c.clone();
        tokio::spawn(async move { collect_orphans(&c).await });
    }
    let store = c.inner.store.clone();
    let queued = blocking(move || store.queued_builds()).await?;
    // Directories of builds that are neither queued nor running (a crash during cleanup).
    let builds = c.inner.config.data_dir.join("builds");
    let keep: Vec<BuildId> = queued.iter().map(|b| b.id).collect();
    blocking(move || remove_stale_dirs(&builds, &keep)).await;
    let store = c.inner.store.clone();
    let counts = blocking(move || store.counts_by_result()).await?;
    c.inner.metrics.set_results(counts);
    for b in &queued {
        c.enqueue(b.id, &b.repo, b.branch.as_deref());
    }
    if !queued.is_empty() {
        tracing::info!(count = queued.len(), "queued builds queued again");
    }
    Ok(())
}

/// What the previous controller process left on the backends its repositories use: its
/// owner is gone, so each backend's orphan collection (the one of `valet gc`) removes it.
async fn collect_orphans(c: &Controller) {
    let mut kinds: Vec<&str> = c
        .inner
        .config
        .repositories
        .iter()
        .map(|r| r.backend.as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let backend = match crate::runner::backend_for(c, kind).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(backend = kind, error = %e, "cannot look for what the previous controller left");
                continue;
            }
        };
        match backend
            .collect_orphans(&valet_backend::owner::Scope::Orphans)
            .await
        {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(backend = kind, removed = %removed.join(", "), "removed what the previous controller left")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(backend = kind, error = %e, "cannot remove what the previous controller left")
            }
        }
    }
}

fn remove_stale_dirs(builds: &Path, keep: &[BuildId]) {
    let Ok(entries) = std::fs::read_dir(builds) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().parse::<BuildId>().ok();
        if id.is_some_and(|id| !keep.contains(&id)) {
            kill_leftovers(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Kills the process groups of processes working in `dir` (their working directory or
/// their `WORKSPACE` is in it): steps of a build whose controller died.
fn kill_leftovers(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id() as i32;
    let ws_prefix = format!("WORKSPACE={}", dir.display());
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let in_dir = std::fs::read_link(p.path().join("cwd"))
            .is_ok_and(|cwd| cwd.starts_with(&dir))
            || std::fs::read(p.path().join("environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|v| v.starts_with(ws_prefix.as_bytes()))
            });
        if !in_dir {
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(pid);
        tracing::info!(pid = pid.as_raw(), dir = %dir.display(), "killing a leftover step process");
        match nix::unistd::getpgid(Some(pid)) {
            Ok(pgid) if pgid.as_raw() != nix::unistd::getpgrp().as_raw() => {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            _ => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
