//! The conformance suite every backend passes: call each function from the backend's
//! own tests with a fresh backend. (Filled in with the local backend.)
