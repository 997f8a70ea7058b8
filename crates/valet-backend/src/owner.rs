//! Who made a pod: the owner every backend writes on what it creates, so that what a dead
//! process left behind can be found and removed ([`crate::Backend::collect_orphans`]).
//!
//! An owner is `<boot id>/<pid>/<start time>` of the process that created the object; it is
//! alive while a process with that pid and that start time (from `/proc`, in clock ticks
//! since boot) runs on this boot of this machine, so a reused pid is not mistaken for the
//! owner. An owner from another boot counts as gone.

use std::sync::OnceLock;

/// The owner string of this process.
pub fn current_owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        format!(
            "{}/{pid}/{}",
            boot_id(),
            start_ticks(pid).unwrap_or_default()
        )
    })
}

/// Whether the process that owns objects labelled `owner` is still running.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some(boot), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    boot == boot_id() && start_ticks(pid).is_some_and(|t| t.to_string() == start)
}

fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown-boot".into())
    })
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What an orphan collection removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Objects whose owner process is gone (start of `valet run`, of `valet serve`, `valet gc`).
    Orphans,
    /// Objects of this owner (a process cleaning up after itself).
    Owner(String),
    /// Every object valet made (`valet gc --all`).
    All,
}

impl Scope {
    /// This process's own objects.
    pub fn mine() -> Scope {
        Scope::Owner(current_owner().to_string())
    }

    /// Whether an object carrying `owner` (`None`: carries none) is in this scope.
    /// Objects without an owner are only removed with `All`.
    pub fn covers(&self, owner: Option<&str>) -> bool {
        match (self, owner) {
            (Scope::All, _) => true,
            (Scope::Orphans, Some(o)) => !owner_alive(o),
            (Scope::Owner(mine), Some(o)) => mine == o,
            (_, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        assert!(owner_alive(current_owner()));
        let (boot, rest) = current_owner().split_once('/').unwrap();
        let (pid, _) = rest.split_once('/').unwrap();
        assert!(
            !owner_alive(&format!("{boot}/{pid}/1")),
            "another start time"
        );
        assert!(!owner_alive(&format!("other-boot/{pid}/0")));
        assert!(!owner_alive("garbage"));
        assert!(Scope::Orphans.covers(Some("garbage")));
        assert!(!Scope::Orphans.covers(Some(current_owner())));
        assert!(!Scope::Orphans.covers(None));
        assert!(Scope::All.covers(None));
        assert!(Scope::mine().covers(Some(current_owner())));
    }
}
