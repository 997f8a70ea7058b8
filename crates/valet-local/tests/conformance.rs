//! The backend conformance suite, run against the local backend: the base suite and the
//! lifecycle tier (the limits tier needs containers: the local backend is not a sandbox).

valet_backend::conformance_tests!(valet_local::LocalBackend::temporary());
valet_backend::conformance_lifecycle_tests!(
    valet_local::LocalBackend::temporary(),
    // A root that cannot be made: /proc takes no new directories.
    valet_local::LocalBackend::new("/proc/valet-cannot-be-made", false),
    valet_backend::conformance::spec("any", &["main"])
);
