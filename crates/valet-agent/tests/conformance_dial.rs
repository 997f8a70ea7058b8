//! The backend conformance suite again, with every agent dialling out to a tunnel listener
//! on 127.0.0.1 instead of serving on a socket: the contract holds over the reverse tunnel.

mod common;

valet_backend::conformance_tests!(common::HostDialBackend);
