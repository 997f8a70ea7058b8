//! The backend conformance suite against the Docker backend in dial-out mode: every agent
//! dials the pod's tunnel listener on the pod's own network (needs a Docker engine).

mod common;

valet_backend::conformance_tests!(
    common::backend()
        .await
        .with_channel(valet_docker::AgentChannel::DialOut)
);
