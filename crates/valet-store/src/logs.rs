//! Log files of a build, beside the database: `logs/<build>/log.txt` (the whole log in the
//! order it was produced), `logs/<build>/steps/<step>.log` (one step's output) and
//! `logs/<build>/events.jsonl` (the build's events, for late subscribers).
//!
//! Each step's output is capped: past the limit the rest of that step's output is dropped
//! and one marker line says so, in both the step's file and the build's log. Writes are
//! unbuffered, so what was written is in the OS's hands (and survives a crash of the
//! process) when the call returns.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::StoreError;

pub(crate) const BUILD_LOG: &str = "log.txt";
pub(crate) const EVENTS: &str = "events.jsonl";

/// The start of the line that replaces a step's output past its limit.
pub const LOG_TRUNCATED_MARKER: &str = "[valet: log truncated:";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents) and makes it 0700: logs hold what builds printed.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    chmod(dir, 0o700)
}

pub(crate) fn chmod(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// Opens `path` for appending, creating it 0600 (the mode is given at creation, so the
/// file is never readable by others, not even for a moment).
fn append_private(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

pub(crate) fn read_text(path: &Path) -> Result<String, StoreError> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io(path)(e)),
    }
}

#[derive(Default)]
struct StepLog {
    file: Option<File>,
    bytes: u64,
    truncated: bool,
    at_line_start: bool,
}

/// Writes the logs of one build.
pub struct BuildLog {
    dir: PathBuf,
    limit: u64,
    log: File,
    events: File,
    /// `None` is the build's own output (outside any step: notices, checkout, diagnostics).
    steps: HashMap<Option<i64>, StepLog>,
}

impl BuildLog {
    pub(crate) fn create(dir: PathBuf, limit: u64) -> Result<BuildLog, StoreError> {
        private_dir(&dir)?;
        private_dir(&dir.join("steps"))?;
        let open = |name: &str| append_private(&dir.join(name));
        Ok(BuildLog {
            log: open(BUILD_LOG)?,
            events: open(EVENTS)?,
            dir,
            limit,
            steps: HashMap::new(),
        })
    }

    /// Appends output of `step` (or of the build itself, `None`), each line prefixed with
    /// `prefix` in the build's log (the parallel branch, `[unit] `). Returns what was kept:
    /// all of `text`, its head and the marker line when this reaches the limit, or nothing
    /// once the step is past it.
    pub fn append(
        &mut self,
        step: Option<i64>,
        prefix: &str,
        text: &str,
    ) -> Result<Option<String>, StoreError> {
        let limit = self.limit;
        let s = self.steps.entry(step).or_insert_with(|| StepLog {
            at_line_start: true,
            ..StepLog::default()
        });
        if s.truncated || text.is_empty() {
            return Ok(None);
        }
        let room = limit.saturating_sub(s.bytes) as usize;
        let kept = if text.len() <= room {
            text.to_string()
        } else {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncated = true;
            let nl = if cut == 0 || text[..cut].ends_with('\n') {
                ""
            } else {
                "\n"
            };
            format!(
                "{}{nl}{LOG_TRUNCATED_MARKER} this step wrote more than {limit} bytes; the rest is not kept]\n",
                &text[..cut]
            )
        };
        s.bytes += kept.len() as u64;
        if let Some(id) = step {
            if s.file.is_none() {
                let p = self.dir.join("steps").join(format!("{id}.log"));
                s.file = Some(append_private(&p)?);
            }
            if let Some(f) = &mut s.file {
                f.write_all(kept.as_bytes())
                    .map_err(io(&self.dir.join("steps")))?;
            }
        }
        let mut out = String::with_capacity(kept.len() + prefix.len());
        if prefix.is_empty() {
            out.push_str(&kept);
            s.at_line_start = kept.ends_with('\n');
        } else {
            for piece in kept.split_inclusive('\n') {
                if s.at_line_start {
                    out.push_str(prefix);
                }
                out.push_str(piece);
                s.at_line_start = piece.ends_with('\n');
            }
        }
        self.log
            .write_all(out.as_bytes())
            .map_err(io(&self.dir.join(BUILD_LOG)))?;
        Ok(Some(kept))
    }

    /// A whole line of the controller itself (what it checks out, how the build ended):
    /// always written, outside every cap, so a build whose output filled its share still
    /// says how it ended. There are a handful per build.
    pub fn line(&mut self, text: &str) -> Result<Option<String>, StoreError> {
        let mut t = text.to_string();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        self.log
            .write_all(t.as_bytes())
            .map_err(io(&self.dir.join(BUILD_LOG)))?;
        Ok(Some(t))
    }

    /// What a step wrote: bytes kept and whether it was cut.
    pub fn step_size(&self, step: i64) -> (u64, bool) {
        self.steps
            .get(&Some(step))
            .map(|s| (s.bytes, s.truncated))
            .unwrap_or((0, false))
    }

    /// Ends a step's log: its file is closed (everything was already written through).
    pub fn finish_step(&mut self, step: i64) -> (u64, bool) {
        let size = self.step_size(step);
        if let Some(s) = self.steps.get_mut(&Some(step)) {
            s.file = None;
        }
        size
    }

    /// Appends one event (a JSON object, no newline inside) to the build's events file.
    pub fn event(&mut self, json: &str) -> Result<(), StoreError> {
        let mut line = String::with_capacity(json.len() + 1);
        line.push_str(json);
        line.push('\n');
        self.events
            .write_all(line.as_bytes())
            .map_err(io(&self.dir.join(EVENTS)))
    }
}
