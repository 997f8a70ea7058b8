//! The agent's single `waitpid` loop: [`valet_process::reaper`], the runner's reaper, so
//! that the steps the server starts and the orphans the agent inherits are reaped in one
//! place.

pub use valet_process::reaper::{Exit, Reaper, become_subreaper};
