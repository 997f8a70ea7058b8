//! The backend conformance suite, run against agents on this machine: the client and the
//! agent together keep the `StepRunner` contract the local backend keeps.

mod common;

valet_backend::conformance_tests!(common::HostAgentBackend);
