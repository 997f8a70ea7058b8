//! Process groups: signalled whole, and looked at through `/proc`.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::marks::{self, Stat};

/// Sends `sig` to every process of group `pgid`; a group already gone is not an error.
pub(crate) fn kill_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// Whether any process (zombies included) is still in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Whether a live (not zombie) process is in group `pgid`. Zombies are not counted: an
/// orphan's zombie waits for whoever reaps orphans, which may be slow or another process.
pub fn group_running(pgid: i32) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let mut running = false;
    let looked = marks::each_process(|_, stat: &Stat| {
        if stat.pgrp == pgid && !stat.ended() {
            running = true;
        }
    });
    running || !looked
}
