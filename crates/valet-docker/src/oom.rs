//! Out-of-memory kills, confirmed from the engine's state.
//!
//! An exit by SIGKILL (code 137) says nothing about why: a `kill -9`, a timeout's grace
//! period, or the kernel's OOM killer. The engine knows: it records an `oom` event for every
//! OOM kill in a container's cgroup (also when the victim is a step and the container's
//! first process survives, so the container keeps running), and `State.OOMKilled` when the
//! container itself ended that way. Only events after the step started count, so an earlier
//! OOM in the same container is not blamed twice.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;

/// "container 'maven' was killed: out of memory (limit 64 MiB)" when the engine confirms an
/// OOM kill in container `container_id` since `since` (the step's start); `None` otherwise.
///
/// `memory_limit_bytes` is the limit the spec gave; without one, the engine's is used. Ask
/// only about steps that ended by SIGKILL: the engine may record the event a moment after the
/// process's exit is seen, so a miss is checked again briefly.
#[tracing::instrument(level = "debug", skip(docker, since))]
pub async fn oom_reason(
    docker: &Docker,
    container_id: &str,
    container_name: &str,
    memory_limit_bytes: Option<u64>,
    since: SystemTime,
) -> Option<String> {
    let info = docker.inspect_container(container_id, None).await.ok()?;
    let limit = memory_limit_bytes.or_else(|| {
        info.host_config
            .as_ref()
            .and_then(|h| h.memory)
            .filter(|m| *m > 0)
            .map(|m| m as u64)
    });
    let message = || {
        Some(match limit {
            Some(b) => format!(
                "container '{container_name}' was killed: out of memory (limit {})",
                valet_agent::human_bytes(b)
            ),
            None => format!("container '{container_name}' was killed: out of memory"),
        })
    };
    // The container itself ended by OOM after the step began.
    if let Some(state) = &info.state
        && state.oom_killed == Some(true)
        && state.running != Some(true)
    {
        return message();
    }
    for wait in [0, 50, 150] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if oom_events_since(docker, container_id, since).await > 0 {
            return message();
        }
    }
    None
}

/// How many `oom` events the engine recorded for the container since `since`.
async fn oom_events_since(docker: &Docker, container_id: &str, since: SystemTime) -> usize {
    let ts = |t: SystemTime| {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    };
    // With `until`, the engine replays what it has and closes the stream.
    let until = SystemTime::now() + Duration::from_millis(1);
    let mut events = docker.events(Some(EventsOptions {
        since: Some(ts(since)),
        until: Some(ts(until)),
        filters: Some(HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("container".to_string(), vec![container_id.to_string()]),
            ("event".to_string(), vec!["oom".to_string()]),
        ])),
    }));
    let mut n = 0;
    let read = async {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) if ev.action.as_deref() == Some("oom") => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    // Bounded: a replay never takes long, and an explanation is not worth a hang.
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    n
}
