//! On start: what a previous controller process left behind.
//!
//! - Builds that were running end as ERROR, "controller restarted". They are not run again
//!   (their steps may have had effects; a step never runs twice). Re-attaching to a live
//!   pod is not done: neither backend can hand a running step back to a new process yet.
//! - Their directories are removed, and every backend in use collects what a dead owner left
//!   on it (`Backend::collect_orphans`, as `valet gc` does: on the local backend, every
//!   process carrying the dead controller's owner mark, also those that left their group),
//!   in the background, so the HTTP server answers meanwhile.
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
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
