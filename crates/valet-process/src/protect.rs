//! Keeping a valet process's own credentials from the steps it runs.
//!
//! A step on the host is a child of `valet`: by default it could read `/proc/$PPID/environ`
//! (every `VALET_SECRET_*` the controller was started with, whichever repository they are
//! for) or attach to the process. So at start, before any thread exists:
//!
//! * [`take_env`] moves the variables with a prefix out of the environment into memory,
//!   and overwrites them in the environment block the kernel shows as
//!   `/proc/<pid>/environ` (removing a variable from the C library's list does not change
//!   that block);
//! * [`set_non_dumpable`] makes `/proc/<pid>/{environ,mem,maps,…}` and `ptrace` closed to
//!   every process without `CAP_SYS_PTRACE`, the same user's included.

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;

/// Why the process could not protect itself.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    #[error("the environment can only be changed while one thread runs, and {0} run")]
    Threads(usize),
    #[error("reading {path}: {source}")]
    Proc {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("/proc/self/stat has no environment bounds")]
    NoBounds,
    #[error("overwriting the environment block: {0}")]
    Overwrite(std::io::Error),
    #[error("prctl(PR_SET_DUMPABLE, 0): {0}")]
    Dumpable(nix::Error),
}

fn read_proc(path: &'static str) -> Result<String, ProtectError> {
    std::fs::read_to_string(path).map_err(|source| ProtectError::Proc { path, source })
}

/// How many threads this process has.
fn threads() -> Result<usize, ProtectError> {
    let status = read_proc("/proc/self/status")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// Takes every environment variable whose name starts with `prefix` out of the environment
/// (returning them, in the order they came) and overwrites their text in the process's
/// initial environment block with NUL bytes, so `/proc/<pid>/environ` no longer shows
/// them. Only while this process has one thread (changing the environment races with any
/// other thread reading it): call it first thing in `main`.
///
/// Variables whose name or value is not UTF-8 are removed and not returned.
pub fn take_env(prefix: &str) -> Result<Vec<(String, String)>, ProtectError> {
    let n = threads()?;
    if n != 1 {
        return Err(ProtectError::Threads(n));
    }
    let mut taken = Vec::new();
    let mut names = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k.as_encoded_bytes().starts_with(prefix.as_bytes()) {
            if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
                taken.push((k.to_string(), v.to_string()));
            }
            names.push(k);
        }
    }
    if names.is_empty() {
        return Ok(taken);
    }
    for k in &names {
        // SAFETY: this process has one thread (checked above), so nothing reads the
        // environment while it changes.
        #[allow(unsafe_code)]
        unsafe {
            std::env::remove_var(k);
        }
    }
    scrub_initial_block(prefix)?;
    Ok(taken)
}

/// Overwrites the entries starting with `prefix` of the environment block the process was
/// started with (what `/proc/self/environ` reads) with NUL bytes. The C library no longer
/// points at them once they were removed from the environment.
fn scrub_initial_block(prefix: &str) -> Result<(), ProtectError> {
    let stat = read_proc("/proc/self/stat")?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 50 and 51 (1-based) are env_start and env_end; the first after ')' is field 3.
    let bound = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let (Some(start), Some(end)) = (bound(50), bound(51)) else {
        return Err(ProtectError::NoBounds);
    };
    if end <= start {
        return Err(ProtectError::NoBounds);
    }
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .map_err(ProtectError::Overwrite)?;
    let mut block = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut block, start)
        .map_err(ProtectError::Overwrite)?;
    let mut offset = 0u64;
    for entry in block.split(|b| *b == 0) {
        if entry.starts_with(prefix.as_bytes()) {
            mem.write_all_at(&vec![0u8; entry.len()], start + offset)
                .map_err(ProtectError::Overwrite)?;
        }
        offset += entry.len() as u64 + 1;
    }
    (&mem).flush().map_err(ProtectError::Overwrite)?;
    Ok(())
}

/// Marks this process non-dumpable: its `/proc/<pid>` files (environment, memory, memory
/// map, open files) belong to root and only a process with `CAP_SYS_PTRACE` reads them or
/// attaches to it. Processes it starts are dumpable again (`execve` resets it).
pub fn set_non_dumpable() -> Result<(), ProtectError> {
    nix::sys::prctl::set_dumpable(false).map_err(ProtectError::Dumpable)
}

#[cfg(test)]
mod tests {
    /// In a child process of its own, whose environment block holds a secret: the block
    /// the kernel shows no longer does once scrubbed. (`take_env` as a whole runs in the
    /// `valet` binary's tests: a test harness always has more than one thread.)
    #[test]
    fn scrubbed_variables_leave_the_proc_block() {
        if let Ok(role) = std::env::var("VALET_PROTECT_TEST_CHILD") {
            assert_eq!(role, "1");
            super::scrub_initial_block("VALET_PROTECT_SECRET_").expect("scrub");
            let environ = std::fs::read("/proc/self/environ").expect("environ");
            let text = String::from_utf8_lossy(&environ);
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("VALET_PROTECT_KEEP=kept"), "{text}");
            println!("child-ok");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "protect::tests::scrubbed_variables_leave_the_proc_block",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VALET_PROTECT_TEST_CHILD", "1")
            .env("VALET_PROTECT_SECRET_A", "hunter2-a")
            .env("VALET_PROTECT_KEEP", "kept")
            .output()
            .expect("the child runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("child-ok"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn more_than_one_thread_is_refused() {
        // The test harness runs this on a thread of its own.
        let e = super::take_env("VALET_PROTECT_NOTHING_").unwrap_err();
        assert!(matches!(e, super::ProtectError::Threads(n) if n > 1), "{e}");
    }
}
