//! The pod network of dial-out mode ([`crate::AgentChannel::DialOut`]).
//!
//! Each pod gets a bridge network of its own, `valet-dial-<pod>`, which its sandbox joins
//! (and with it every container of the pod). The engine gives the bridge a gateway address
//! on the host: the pod's tunnel listener binds there, so the pod's agents reach it and
//! nothing outside the host does, and no other pod shares the segment. The network carries
//! the owner label like everything else valet makes, so [`crate::gc`] finds it when its
//! owner is gone.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use valet_backend::BackendError;

use crate::retry::{Backoff, retry, transient};
use crate::{context, map_err, status};

/// The prefix of pod networks' names.
pub const NETWORK_PREFIX: &str = "valet-dial-";

/// The name of `pod`'s network.
pub fn network_name(pod: &str) -> String {
    format!("{NETWORK_PREFIX}{pod}")
}

/// Creates the bridge network `name` with `labels` and returns its gateway address (where
/// the host answers on it).
pub(crate) async fn create(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<IpAddr, BackendError> {
    let created = retry(&Backoff::ENGINE, "create network", transient, || {
        docker.create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
    })
    .await;
    match created {
        Ok(_) => {}
        // An earlier attempt got through: the network is ours (the name holds the pod's id).
        Err(e) if status(&e) == Some(409) => {}
        Err(e) => {
            return Err(context(
                map_err(e),
                "the pod's network could not be created",
            ));
        }
    }
    let info = retry(&Backoff::ENGINE, "inspect network", transient, || {
        docker.inspect_network(name, None)
    })
    .await
    .map_err(|e| context(map_err(e), "the pod's network could not be inspected"))?;
    info.ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.gateway?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| {
            BackendError::Internal(format!(
                "the engine gave network {name} no IPv4 gateway: the agents' tunnel needs one"
            ))
        })
}

/// Removes a network. `false` when it was already gone.
pub(crate) async fn remove(docker: &Docker, name: &str) -> Result<bool, BackendError> {
    let r = retry(&Backoff::ENGINE, "remove network", transient, || {
        docker.remove_network(name)
    })
    .await;
    match r {
        Ok(()) => Ok(true),
        Err(e) if status(&e) == Some(404) => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}
