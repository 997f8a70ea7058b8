//! The backend conformance suite, run against the Docker backend (needs a Docker engine):
//! the base suite and the limits and lifecycle tiers.

mod common;

valet_backend::conformance_tests!(common::backend().await);
valet_backend::conformance_limit_tests!(common::backend().await);
valet_backend::conformance_lifecycle_tests!(common::backend().await, common::backend().await, {
    let mut s = valet_backend::conformance::spec("noimage", &["main"]);
    s.containers[0].image = Some("valet/does-not-exist:never".into());
    s
});
