//! Where the `valet-agent` binary is, and (for tests and benchmarks) building it.
//!
//! The binary must be static (`+crt-static`): it is bind-mounted into containers whose image
//! may have no libc at all (busybox, distroless).

use std::path::{Path, PathBuf};

/// The environment variable naming the agent binary to use.
pub const ENV: &str = "VALET_AGENT";
/// The target triple of the static build.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Why the agent binary cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error(
        "the valet-agent binary was not found (looked at {}); build it with `just agent` \
         (cargo build -p valet-agent --release --target {TARGET} into target/valet-agent, with \
         CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=\"-C target-feature=+crt-static\") \
         or set {ENV}", .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { looked: Vec<PathBuf> },
    #[error("{}: not a static executable (it asks for the dynamic loader); build it with `just agent`", .0.display())]
    NotStatic(PathBuf),
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building valet-agent failed: {0}")]
    Build(String),
}

/// The repository's target directory (`CARGO_TARGET_DIR`, else `target/` at the workspace root).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static build's own target directory (`target/valet-agent`): apart from the
/// workspace's release builds, so building the agent never waits for theirs (nor they for it).
pub fn agent_target_dir() -> PathBuf {
    target_dir().join("valet-agent")
}

/// Where the static release build lands.
pub fn static_build_path() -> PathBuf {
    agent_target_dir()
        .join(TARGET)
        .join("release")
        .join("valet-agent")
}

/// The agent binary to mount into containers: `$VALET_AGENT`, else a `valet-agent` beside
/// the current executable, else the static build in the target directory. Checked to be
/// a static executable.
pub fn locate() -> Result<PathBuf, AgentBinaryError> {
    let mut looked = Vec::new();
    if let Some(p) = std::env::var_os(ENV) {
        let p = PathBuf::from(p);
        check_static(&p)?;
        return Ok(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = dir.join("valet-agent");
        // A debug build beside `valet` in target/debug is dynamic: it is skipped, not an error.
        if p.is_file() && check_static(&p).is_ok() {
            return Ok(p);
        }
        looked.push(p);
    }
    let p = static_build_path();
    if p.is_file() {
        check_static(&p)?;
        return Ok(p);
    }
    looked.push(p);
    Err(AgentBinaryError::NotFound { looked })
}

/// Fails unless `path` is an ELF executable without a program interpreter (statically linked).
pub fn check_static(path: &Path) -> Result<(), AgentBinaryError> {
    let read = |source| AgentBinaryError::Read {
        path: path.to_path_buf(),
        source,
    };
    // The ELF header and program headers sit at the start: 64 KiB is plenty, and keeps
    // this cheap enough to run at every pod start.
    let mut bytes = Vec::with_capacity(64 * 1024);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(read)?, 64 * 1024),
        &mut bytes,
    )
    .map_err(read)?;
    if is_static_elf(&bytes) {
        Ok(())
    } else {
        Err(AgentBinaryError::NotStatic(path.to_path_buf()))
    }
}

/// A 64-bit little-endian ELF with no `PT_INTERP` program header.
fn is_static_elf(b: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
    };
    if b.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff as usize + i * phentsize;
        u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// Builds the static agent (release, `--target` so build scripts stay dynamic) unless it is
/// already up to date, once at a time across processes (a file lock in the target
/// directory), and returns its path. For tests and benchmarks: they must run on a machine
/// where nothing was built before.
pub fn build_static() -> Result<PathBuf, AgentBinaryError> {
    let target = agent_target_dir();
    std::fs::create_dir_all(&target).map_err(|source| AgentBinaryError::Read {
        path: target.clone(),
        source,
    })?;
    let lock_path = target.join("valet-agent-build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|source| AgentBinaryError::Read {
        path: lock_path.clone(),
        source,
    })?;
    lock.lock().map_err(|source| AgentBinaryError::Read {
        path: lock_path,
        source,
    })?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Cargo decides whether anything changed; a no-op build takes a fraction of a second.
    let out = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "valet-agent",
            "--release",
            "--no-default-features",
            "--bin",
            "valet-agent",
            "--target",
            TARGET,
        ])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        // No debug info: less build time on a fresh machine, where the tests build it.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| AgentBinaryError::Build(e.to_string()))?;
    if !out.status.success() {
        return Err(AgentBinaryError::Build(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let path = static_build_path();
    check_static(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_static() {
        let sh = std::fs::read("/bin/sh").expect("read /bin/sh");
        // /bin/sh on the build machines is dynamically linked (dash or bash from the distribution).
        assert!(!is_static_elf(&sh));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
