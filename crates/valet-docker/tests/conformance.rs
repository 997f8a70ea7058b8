//! The backend conformance suite, run against the Docker backend (needs a Docker engine).

mod common;

valet_backend::conformance_tests!(common::backend().await);
