//! Marks: environment variables a step's processes carry, so that every process of a step or
//! a pod is found through `/proc`, also the ones that left their process group (`setsid`,
//! daemons) and no longer have a parent valet knows.
//!
//! A process's environment is inherited by everything it starts; `/proc/PID/environ` of a
//! process of the same user is readable. A process that clears its environment (`env -i`)
//! sheds its marks: such a process is only found while it stays in the step's group.
//! Zombies have no environment left, so a scan never finds a process that already ended.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// After KILL, how long to wait for marked processes to disappear.
const AFTER_KILL: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// Environment variables (`NAME=value`) set on a process; a process carries the marks when
/// its environment holds every one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks(Vec<(String, String)>);

impl Marks {
    pub fn new() -> Self {
        Marks::default()
    }

    /// These marks and `name=value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.push((name.into(), value.into()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The running processes that carry these marks, except this process and its ancestors
    /// (a `valet` started by a step carries the step's marks).
    pub fn find(&self) -> Vec<i32> {
        if self.is_empty() {
            return Vec::new();
        }
        let needles: Vec<Vec<u8>> = self
            .pairs()
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect();
        scan(|environ| {
            let carries = needles
                .iter()
                .all(|n| environ.split(|&b| b == 0).any(|e| e == n.as_slice()));
            carries.then_some(())
        })
        .into_iter()
        .map(|(pid, ())| pid)
        .collect()
    }

    /// Sends `sig` to every process carrying these marks; returns their pids.
    pub fn signal(&self, sig: Signal) -> Vec<i32> {
        let pids = self.find();
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), sig);
        }
        pids
    }

    /// Ends every process carrying these marks: TERM, up to `grace` for them to end, then
    /// KILL (also to those started meanwhile), and returns once none is left (or, past
    /// KILL, after a bounded wait). Returns the pids found at first.
    pub async fn end(&self, grace: Duration) -> Vec<i32> {
        let first = self.signal(Signal::SIGTERM);
        if first.is_empty() {
            return first;
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            tokio::time::sleep(POLL).await;
            let now = tokio::time::Instant::now();
            if now < deadline {
                if self.find().is_empty() {
                    break;
                }
            } else if self.signal(Signal::SIGKILL).is_empty() {
                break;
            } else if now >= deadline + AFTER_KILL {
                tracing::warn!(marks = ?self.0, "marked processes outlived KILL");
                break;
            }
        }
        first
    }
}

/// The running processes whose environment holds `name`, with its value (as
/// [`Marks::find`]: not this process nor its ancestors).
pub fn marked_with(name: &str) -> Vec<(i32, String)> {
    let prefix = format!("{name}=").into_bytes();
    scan(|environ| {
        environ
            .split(|&b| b == 0)
            .find_map(|e| e.strip_prefix(prefix.as_slice()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// The running processes whose command line (arguments joined by spaces) contains `needle`:
/// how a test finds the processes it started under a unique argument.
pub fn with_cmdline(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| cmdline(pid).contains(needle))
        .collect()
}

/// A process's command line, arguments joined by spaces (empty when it is gone).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The fields of `/proc/PID/stat` valet looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) state: u8,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) session: i32,
}

impl Stat {
    pub(crate) fn read(pid: i32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid pgrp session …`; comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut f = rest.split_whitespace();
        let state = *f.next()?.as_bytes().first()?;
        let ppid = f.next()?.parse().ok()?;
        let pgrp = f.next()?.parse().ok()?;
        let session = f.next()?.parse().ok()?;
        Some(Stat {
            state,
            ppid,
            pgrp,
            session,
        })
    }

    /// A zombie, or dead.
    pub(crate) fn ended(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Calls `f` with every process of `/proc` and its stat; false when `/proc` cannot be read.
pub(crate) fn each_process(mut f: impl FnMut(i32, &Stat)) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = Stat::read(pid) {
            f(pid, &stat);
        }
    }
    true
}

/// This process and its ancestors.
fn me_and_ancestors() -> HashSet<i32> {
    let mut set = HashSet::new();
    let mut pid = std::process::id() as i32;
    while pid > 0 && set.insert(pid) {
        match Stat::read(pid) {
            Some(s) => pid = s.ppid,
            None => break,
        }
    }
    set
}

/// Every live process of this pid namespace (not this process or its ancestors) for which
/// `f` of its environment says something. Processes of other namespaces (containers) are
/// skipped: their marks would name owners by pids of another namespace.
fn scan<R>(mut f: impl FnMut(&[u8]) -> Option<R>) -> Vec<(i32, R)> {
    let skip = me_and_ancestors();
    let my_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let mut found = Vec::new();
    each_process(|pid, stat| {
        if stat.ended() || skip.contains(&pid) {
            return;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return;
        };
        if environ.is_empty() {
            return;
        }
        if let Some(r) = f(&environ) {
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            if my_ns.is_none() || ns == my_ns {
                found.push((pid, r));
            }
        }
    });
    found
}
