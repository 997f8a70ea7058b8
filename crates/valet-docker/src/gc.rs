//! Garbage collection: finding and removing what valet left on the engine and the host.
//!
//! Everything valet creates carries its owner: containers, networks and volumes the label
//! [`LABEL_OWNER`], a pod's host directory (under [`pod_dir_root`]) a file `owner`. An owner
//! is `<boot id>/<pid>/<start time>` of the process that created it; it is alive while a
//! process with that pid and that start time (from `/proc`, in clock ticks since boot) runs
//! on this boot of this machine, so a reused pid is not mistaken for the owner. An owner
//! from another boot counts as gone: valet assumes the processes that use an engine run on
//! the engine's host.
//!
//! [`collect`] removes what belongs to owners that are gone ([`Scope::Orphans`], what
//! `valet gc` and every `valet run --backend docker` do), to one owner ([`Scope::Owner`], a
//! process cleaning up after itself on shutdown), or everything valet made ([`Scope::All`]).
//! Objects of an older valet without an owner label are only removed with `All`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use valet_backend::BackendError;

use crate::retry::{Backoff, retry, transient};
use crate::{LABEL_CONTAINER, LABEL_POD, map_err, status};

/// Label holding the owner (`<boot id>/<pid>/<start time>`) of a container, network or volume.
pub const LABEL_OWNER: &str = "valet.owner";

pub use valet_backend::owner::{Scope, current_owner, owner_alive};

/// Where pods' host directories live (the agents' sockets): `$TMPDIR/valet-pods`.
pub fn pod_dir_root() -> PathBuf {
    std::env::temp_dir().join("valet-pods")
}

/// Creates `pod_dir_root()/<pod>` holding the file `owner`. The directory appears with its
/// owner file already in it (written in a side directory, then renamed), so a concurrent
/// collection never sees it without an owner.
pub(crate) fn create_pod_dir(pod: &str, owner: &str) -> std::io::Result<PathBuf> {
    let root = pod_dir_root();
    std::fs::create_dir_all(&root)?;
    let dir = root.join(pod);
    let tmp = root.join(format!(".{pod}.new"));
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join("owner"), owner)?;
    // Containers running as another user (runAsUser) reach their socket through it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// Removes a pod's host directory; a missing one is fine.
pub(crate) fn remove_pod_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What a collection removed: container names, network names (dial-out pods' own),
/// volume names, host directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
    pub dirs: Vec<PathBuf>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
            && self.dirs.is_empty()
    }

    /// The pods whose objects were removed (from the names, `<pod>-<container>`), sorted.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        for c in &self.containers {
            lines.push(format!("container {c}"));
        }
        for n in &self.networks {
            lines.push(format!("network {n}"));
        }
        for v in &self.volumes {
            lines.push(format!("volume {v}"));
        }
        for d in &self.dirs {
            lines.push(format!("directory {}", d.display()));
        }
        lines.join("\n")
    }
}

/// Removes the containers, networks, volumes and host directories of valet pods that
/// `scope` covers. Networks go after the containers: the engine keeps a network that a
/// container is attached to.
#[tracing::instrument(level = "debug", skip(docker))]
pub async fn collect(docker: &Docker, scope: &Scope) -> Result<Removed, BackendError> {
    let mut removed = Removed::default();
    let filters = HashMap::from([("label".to_string(), vec![LABEL_POD.to_string()])]);
    let containers = retry(&Backoff::ENGINE, "list containers", transient, || {
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
    })
    .await
    .map_err(map_err)?;
    // Members first, sandboxes (whose network namespace the members join) last.
    let mut doomed: Vec<(bool, String, String)> = containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            if !scope.covers(labels.get(LABEL_OWNER).map(String::as_str)) {
                return None;
            }
            let sandbox = labels.get(LABEL_CONTAINER).is_some_and(|n| n == "sandbox");
            let name = c
                .names
                .and_then(|n| n.first().cloned())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            Some((sandbox, c.id?, name))
        })
        .collect();
    doomed.sort();
    for (_, id, name) in doomed {
        if remove_container(docker, &id).await? {
            removed
                .containers
                .push(if name.is_empty() { id } else { name });
        }
    }

    let networks = retry(&Backoff::ENGINE, "list networks", transient, || {
        docker.list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
    })
    .await
    .map_err(map_err)?;
    for n in networks {
        let labels = n.labels.unwrap_or_default();
        let Some(name) = n.name else { continue };
        if name.starts_with(crate::network::NETWORK_PREFIX)
            && scope.covers(labels.get(LABEL_OWNER).map(String::as_str))
            && crate::network::remove(docker, &name).await?
        {
            removed.networks.push(name);
        }
    }
    removed.networks.sort();

    let volumes = retry(&Backoff::ENGINE, "list volumes", transient, || {
        docker.list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        }))
    })
    .await
    .map_err(map_err)?;
    for v in volumes.volumes.unwrap_or_default() {
        if scope.covers(v.labels.get(LABEL_OWNER).map(String::as_str))
            && remove_volume_when_free(docker, &v.name).await?
        {
            removed.volumes.push(v.name);
        }
    }

    if let Ok(entries) = std::fs::read_dir(pod_dir_root()) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Directories being created (`.x.new`) belong to a live process, or are
            // leftovers of a crash between two calls: only `All` takes them.
            let owner = std::fs::read_to_string(path.join("owner")).ok();
            let covered = if name.starts_with('.') {
                *scope == Scope::All
            } else {
                scope.covers(owner.as_deref().map(str::trim))
            };
            if covered && path.is_dir() && remove_pod_dir(&path).is_ok() {
                removed.dirs.push(path);
            }
        }
    }
    removed.dirs.sort();
    Ok(removed)
}

/// Force-removes a container (and its anonymous volumes). `false` when it was already gone.
pub(crate) async fn remove_container(docker: &Docker, id: &str) -> Result<bool, BackendError> {
    let r = retry(&Backoff::ENGINE, "remove container", transient, || {
        docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
    })
    .await;
    match r {
        Ok(()) => Ok(true),
        // Gone, or already being removed by someone else.
        Err(e) if matches!(status(&e), Some(404) | Some(409)) => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}

/// Removes a volume. `false` when it was already gone.
pub(crate) async fn remove_volume(docker: &Docker, name: &str) -> Result<bool, BackendError> {
    let r = retry(&Backoff::ENGINE, "remove volume", transient, || {
        docker.remove_volume(name, Some(RemoveVolumeOptions { force: true }))
    })
    .await;
    match r {
        Ok(()) => Ok(true),
        Err(e) if status(&e) == Some(404) => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}

/// How long a volume's removal is asked again while the engine says it is in use.
const VOLUME_FREE_WITHIN: Duration = Duration::from_secs(15);

/// Removes a volume, asking again (bounded) while the engine says it is in use: its last
/// container may still be on its way out.
pub(crate) async fn remove_volume_when_free(
    docker: &Docker,
    name: &str,
) -> Result<bool, BackendError> {
    let deadline = tokio::time::Instant::now() + VOLUME_FREE_WITHIN;
    loop {
        match remove_volume(docker, name).await {
            Err(BackendError::Rejected(m))
                if m.contains("in use") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => return r,
        }
    }
}
