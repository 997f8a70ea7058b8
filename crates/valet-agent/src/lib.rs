//! `valet-agent`: how valet runs steps inside a container.
//!
//! Every container of a pod runs the static `valet-agent` binary as its first process. It
//! serves the `StepRunner` gRPC service of `proto/agent.proto` on a unix socket, or over a
//! TCP connection it dials out to the controller (a reverse tunnel, for pods that cannot
//! offer the controller a socket: on Kubernetes, on other hosts): each step
//! is a process group of its own whose stdout and stderr stream back with backpressure and
//! a cap, whose end is an exit code or a signal, and which cancel kills entirely (TERM,
//! grace, KILL). The agent reaps every zombie (PID 1, or a child subreaper on a host),
//! starts the container's own command as a child when it has one, and forwards TERM and INT.
//!
//! * [`server`]: the agent's side (the binary in `src/main.rs` is a thin shell around it);
//! * [`reaper`]: the single `waitpid` loop;
//! * [`dial`]: the dial-out handshake (the agent's side and the wire format);
//! * [`client`] (feature `client`): [`client::AgentRunner`], a `valet_backend::StepRunner`
//!   over any gRPC channel, for any backend whose containers run the agent;
//! * [`tunnel`] (feature `client`): [`tunnel::DialListener`], where agents dial in, with
//!   one-time tokens scoped to a pod and a container;
//! * [`binary`]: where the binary is ([`binary::locate`]) and building it statically.
//!
//! Not here: how containers are made, how the socket reaches the host or how the agent
//! learns where to dial (the backends).

pub mod binary;
#[cfg(feature = "client")]
pub mod client;
pub mod dial;
pub mod reaper;
pub mod server;
#[cfg(feature = "client")]
pub mod tunnel;
mod units;

/// The generated protocol types (`valet.agent.v1`).
#[allow(unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("valet.agent.v1");
}

pub use units::human_bytes;

#[cfg(feature = "client")]
pub use client::{AgentExecution, AgentRunner, ConnectError};
#[cfg(feature = "client")]
pub use tunnel::{DialListener, PendingAgent, Token, TunnelConfig, TunnelError};
