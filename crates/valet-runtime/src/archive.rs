//! Files that leave a pod as a tar stream (`archiveArtifacts`, `stash`), and their unpacking
//! on the host.
//!
//! The pod's own `tar` writes the stream (GNU tar and busybox tar alike: the names are
//! arguments, in bounded groups, never `-T`). What comes back is read here, by the `tar`
//! crate, never by the host's `tar`: a pod controls every byte of it, and the host's `tar`
//! follows a symbolic link that an earlier archive left in the destination, which lets a
//! pod write anywhere on the host.
//!
//! Unpacking ([`unpack`]) writes regular files and directories only, at relative paths
//! without `..`, and never through a link: every directory on the way must be a real
//! directory inside the destination (checked with `lstat`, one component at a time), a
//! file is created anew (`O_CREAT|O_EXCL|O_NOFOLLOW`) after whatever was at its name is
//! removed. Symbolic links, hard links, devices and FIFOs are skipped and reported, so the
//! caller can warn: a link kept on the host could point anywhere, and following it later
//! is exactly the attack.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// At most this many bytes of names are given to one `tar` in the pod: far below the
/// kernel's limit for a command line (`ARG_MAX`, 2 MiB with the environment, on Linux).
const CHUNK_BYTES: usize = 64 * 1024;
/// At most this many names per `tar` in the pod.
const CHUNK_NAMES: usize = 1000;

/// The names, as `./name` (so that none is taken for an option), in groups small enough
/// for one command line each.
pub(crate) fn name_chunks(files: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for f in files {
        let name = format!("./{f}");
        let fits = out
            .last()
            .is_some_and(|c| c.len() < CHUNK_NAMES && bytes + name.len() < CHUNK_BYTES);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += name.len() + 1;
        out.last_mut().expect("a chunk").push(name);
    }
    out
}

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnpackError {
    #[error("the archive is damaged: {0}")]
    Damaged(io::Error),
    #[error("refusing `{0}`: an absolute path or one that goes up with `..`")]
    UnsafePath(String),
    #[error("refusing `{path}`: `{at}` is a symbolic link or a file, not a directory")]
    NotADirectory { path: String, at: String },
    #[error("refusing `{0}`: a directory is in the way")]
    DirectoryInTheWay(String),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What an unpacking wrote and what it left out.
#[derive(Debug, Default)]
pub(crate) struct Unpacked {
    /// Regular files written.
    pub(crate) files: usize,
    /// Entries left out: the path and what it is (`a symbolic link`, …).
    pub(crate) skipped: Vec<(String, &'static str)>,
}

/// Unpacks the tar stream `reader` into `dest` (which must exist), without following a link.
pub(crate) fn unpack(reader: impl Read, dest: &Path) -> Result<Unpacked, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut done = Unpacked::default();
    for entry in archive.entries().map_err(UnpackError::Damaged)? {
        let mut entry = entry.map_err(UnpackError::Damaged)?;
        let raw = entry.path().map_err(UnpackError::Damaged)?.into_owned();
        let rel =
            relative(&raw).ok_or_else(|| UnpackError::UnsafePath(raw.display().to_string()))?;
        let shown = rel.display().to_string();
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        let skipped = match kind {
            T::Regular | T::Continuous | T::GNUSparse => None,
            T::Directory => {
                dirs(dest, &rel, &shown)?;
                continue;
            }
            T::Symlink => Some("a symbolic link"),
            T::Link => Some("a hard link"),
            T::Char | T::Block => Some("a device"),
            T::Fifo => Some("a FIFO"),
            _ => Some("an entry of an unknown type"),
        };
        if let Some(what) = skipped {
            done.skipped.push((shown, what));
            continue;
        }
        let Some(name) = rel.file_name() else {
            // `.` as a file: nothing to write.
            continue;
        };
        let parent = dirs(dest, rel.parent().unwrap_or(Path::new("")), &shown)?;
        let target = parent.join(name);
        let io_err = |source| UnpackError::Io {
            path: target.clone(),
            source,
        };
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(UnpackError::DirectoryInTheWay(shown)),
            // Replaced, as tar does; `unlink` removes a link itself, never its target.
            Ok(_) => fs::remove_file(&target).map_err(io_err)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // Permission bits only: no set-user-ID file comes out of a pod.
        let mode = entry.header().mode().map(|m| m & 0o777).unwrap_or(0o644);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&target)
            .map_err(io_err)?;
        io::copy(&mut entry, &mut file).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::InvalidData {
                UnpackError::Damaged(e)
            } else {
                io_err(e)
            }
        })?;
        if let Ok(secs) = entry.header().mtime() {
            let _ = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        }
        done.files += 1;
    }
    Ok(done)
}

/// `path` without `.` components, or `None` when it is absolute or has `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// `dest/rel`, every component of which is a real directory: missing ones are created, and
/// one that is anything else (a symbolic link above all) is refused, never followed.
fn dirs(dest: &Path, rel: &Path, shown: &str) -> Result<PathBuf, UnpackError> {
    let mut at = dest.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::NotADirectory {
                    path: shown.to_string(),
                    at: at.strip_prefix(dest).unwrap_or(&at).display().to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `mkdir` never follows a link at its last component.
                fs::create_dir(&at).map_err(|source| UnpackError::Io {
                    path: at.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(UnpackError::Io {
                    path: at.clone(),
                    source,
                });
            }
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// An entry whose name is written into the header as is, bypassing the crate's checks
    /// (which refuse `..` and absolute paths when building, as a hostile pod's tar would not).
    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        b.append_data(&mut h, name, data).expect("append");
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
        let mut h = header(tar::EntryType::Symlink, 0);
        b.append_link(&mut h, name, target).expect("append");
    }

    #[test]
    fn files_and_directories_are_written() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "a/b/c.txt", b"hello");
        file(&mut b, "./top.txt", b"top");
        let data = b.into_inner().expect("tar");
        let dest = tempfile::tempdir().expect("dir");
        let done = unpack(&data[..], dest.path()).expect("unpack");
        assert_eq!(done.files, 2);
        assert_eq!(
            fs::read(dest.path().join("a/b/c.txt")).expect("c"),
            b"hello"
        );
        assert_eq!(fs::read(dest.path().join("top.txt")).expect("top"), b"top");
    }

    #[test]
    fn a_symbolic_link_in_the_archive_is_skipped_not_created() {
        let outside = tempfile::tempdir().expect("dir");
        let mut b = tar::Builder::new(Vec::new());
        symlink(&mut b, "d", outside.path().to_str().expect("utf-8"));
        let data = b.into_inner().expect("tar");
        let dest = tempfile::tempdir().expect("dir");
        let done = unpack(&data[..], dest.path()).expect("unpack");
        assert_eq!(done.skipped, vec![("d".to_string(), "a symbolic link")]);
        assert!(fs::symlink_metadata(dest.path().join("d")).is_err());
    }

    #[test]
    fn a_symbolic_link_already_in_the_destination_is_never_written_through() {
        let outside = tempfile::tempdir().expect("dir");
        let dest = tempfile::tempdir().expect("dir");
        std::os::unix::fs::symlink(outside.path(), dest.path().join("d")).expect("link");
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "d/pwned.txt", b"x");
        let data = b.into_inner().expect("tar");
        let e = unpack(&data[..], dest.path()).expect_err("refused");
        assert!(
            matches!(&e, UnpackError::NotADirectory { at, .. } if at == "d"),
            "{e}"
        );
        assert!(!outside.path().join("pwned.txt").exists());
    }

    #[test]
    fn a_symbolic_link_at_a_file_name_is_replaced_not_followed() {
        let outside = tempfile::tempdir().expect("dir");
        let victim = outside.path().join("victim");
        fs::write(&victim, b"keep").expect("victim");
        let dest = tempfile::tempdir().expect("dir");
        std::os::unix::fs::symlink(&victim, dest.path().join("f")).expect("link");
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "f", b"new");
        let data = b.into_inner().expect("tar");
        unpack(&data[..], dest.path()).expect("unpack");
        assert_eq!(fs::read(&victim).expect("victim"), b"keep");
        assert_eq!(fs::read(dest.path().join("f")).expect("f"), b"new");
        assert!(
            !fs::symlink_metadata(dest.path().join("f"))
                .expect("f")
                .is_symlink()
        );
    }

    #[test]
    fn absolute_paths_and_dot_dot_are_refused() {
        let root = tempfile::tempdir().expect("dir");
        let dest = root.path().join("dest");
        fs::create_dir(&dest).expect("dest");
        for name in ["../escaped.txt", "a/../../escaped.txt"] {
            let mut b = tar::Builder::new(Vec::new());
            raw_entry(&mut b, name, b"x");
            let data = b.into_inner().expect("tar");
            let e = unpack(&data[..], &dest).expect_err("refused");
            assert!(matches!(e, UnpackError::UnsafePath(_)), "{name}: {e}");
        }
        let abs = root.path().join("abs.txt");
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, abs.to_str().expect("utf-8"), b"x");
        let data = b.into_inner().expect("tar");
        let e = unpack(&data[..], &dest).expect_err("refused");
        assert!(matches!(e, UnpackError::UnsafePath(_)), "{e}");
        assert!(!root.path().join("escaped.txt").exists());
        assert!(!abs.exists());
    }

    #[test]
    fn hard_links_devices_and_fifos_are_skipped() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Link, 0);
        b.append_link(&mut h, "hard", "/etc/passwd")
            .expect("append");
        for (name, kind) in [
            ("dev", tar::EntryType::Char),
            ("blk", tar::EntryType::Block),
            ("fifo", tar::EntryType::Fifo),
        ] {
            let mut h = header(kind, 0);
            b.append_data(&mut h, name, &[][..]).expect("append");
        }
        let data = b.into_inner().expect("tar");
        let dest = tempfile::tempdir().expect("dir");
        let done = unpack(&data[..], dest.path()).expect("unpack");
        let kinds: Vec<&str> = done.skipped.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds, ["a hard link", "a device", "a device", "a FIFO"]);
        assert_eq!(fs::read_dir(dest.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_truncated_archive_is_damaged() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "big", &vec![7u8; 10_000]);
        let data = b.into_inner().expect("tar");
        let dest = tempfile::tempdir().expect("dir");
        let e = unpack(&data[..3000], dest.path()).expect_err("damaged");
        assert!(matches!(e, UnpackError::Damaged(_)), "{e}");
    }

    #[test]
    fn names_are_grouped_for_short_command_lines() {
        let files: Vec<String> = (0..2500).map(|i| format!("f{i}")).collect();
        let chunks = name_chunks(&files);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_NAMES));
        assert_eq!(chunks[0][0], "./f0");
        let long: Vec<String> = (0..100)
            .map(|i| format!("{i}{}", "x".repeat(2000)))
            .collect();
        for c in name_chunks(&long) {
            assert!(c.iter().map(|n| n.len() + 1).sum::<usize>() <= CHUNK_BYTES);
        }
        assert_eq!(name_chunks(&long).concat().len(), 100);
    }
}
