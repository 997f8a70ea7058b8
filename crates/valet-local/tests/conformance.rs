//! The backend conformance suite, run against the local backend.

valet_backend::conformance_tests!(valet_local::LocalBackend::temporary());
