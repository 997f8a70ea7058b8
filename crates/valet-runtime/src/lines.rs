//! Output arrives in chunks cut anywhere; people read lines. [`Lines`] keeps the unfinished
//! line of each (step, stream, parallel branch) until its newline, its step's end or the
//! build's end, so that lines of parallel branches, and a step's stdout and stderr, never
//! run into each other in a log.

use std::collections::BTreeMap;

use crate::event::Stream;

/// An unfinished line longer than this is given out as it is, so a step that never writes a
/// newline cannot make the buffer grow without bound.
pub const MAX_PARTIAL: usize = 64 * 1024;

type Key = (Option<u64>, u8, Option<String>);

/// The unfinished lines of a build's output.
#[derive(Debug, Default)]
pub struct Lines {
    partial: BTreeMap<Key, String>,
}

/// The end of a line that its step or build ended before a newline did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub step: Option<u64>,
    pub stream: Stream,
    pub branch: Option<String>,
    /// Closed with `\n`.
    pub text: String,
}

fn stream_key(s: Stream) -> u8 {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Log => 2,
    }
}

fn leftover((step, stream, branch): Key, rest: String) -> Leftover {
    let stream = match stream {
        0 => Stream::Stdout,
        1 => Stream::Stderr,
        _ => Stream::Log,
    };
    Leftover {
        step,
        stream,
        branch,
        text: rest + "\n",
    }
}

impl Lines {
    /// Adds a chunk of `step`'s `stream` in `branch`; returns the lines it completes, each
    /// ending in `\n` (or a piece of [`MAX_PARTIAL`] bytes of a longer line).
    pub fn push(
        &mut self,
        step: Option<u64>,
        stream: Stream,
        branch: Option<&str>,
        text: &str,
    ) -> Vec<String> {
        let key = (step, stream_key(stream), branch.map(str::to_string));
        let buf = self.partial.entry(key.clone()).or_default();
        buf.push_str(text);
        let mut out = Vec::new();
        while let Some(i) = buf.find('\n') {
            out.push(buf.drain(..=i).collect());
        }
        if buf.len() > MAX_PARTIAL {
            out.push(std::mem::take(buf));
        }
        if buf.is_empty() {
            self.partial.remove(&key);
        }
        out
    }

    /// What is left unfinished of `step`'s output.
    pub fn finish_step(&mut self, step: u64) -> Vec<Leftover> {
        let keys: Vec<Key> = self
            .partial
            .keys()
            .filter(|k| k.0 == Some(step))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.partial.remove(&k).map(|rest| leftover(k, rest)))
            .collect()
    }

    /// Everything left unfinished (the build ended).
    pub fn finish_all(&mut self) -> Vec<Leftover> {
        std::mem::take(&mut self.partial)
            .into_iter()
            .map(|(k, rest)| leftover(k, rest))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_lines_per_step_stream_and_branch() {
        let mut l = Lines::default();
        assert!(l.push(Some(1), Stream::Stdout, Some("a"), "foo").is_empty());
        assert!(l.push(Some(2), Stream::Stdout, Some("b"), "bar").is_empty());
        assert!(l.push(Some(1), Stream::Stderr, Some("a"), "err").is_empty());
        assert_eq!(
            l.push(Some(2), Stream::Stdout, Some("b"), "\nbaz\nq"),
            ["bar\n", "baz\n"]
        );
        assert_eq!(
            l.push(Some(1), Stream::Stdout, Some("a"), " done\n"),
            ["foo done\n"]
        );
        let left = |step, stream, branch: &str, text: &str| Leftover {
            step: Some(step),
            stream,
            branch: Some(branch.to_string()),
            text: text.to_string(),
        };
        assert_eq!(l.finish_step(1), [left(1, Stream::Stderr, "a", "err\n")]);
        assert_eq!(l.finish_all(), [left(2, Stream::Stdout, "b", "q\n")]);
        assert!(l.finish_all().is_empty());
    }

    #[test]
    fn a_line_without_end_is_given_out_past_the_bound() {
        let mut l = Lines::default();
        let long = "x".repeat(MAX_PARTIAL + 1);
        assert_eq!(l.push(None, Stream::Log, None, &long), vec![long]);
        assert!(l.finish_all().is_empty());
    }
}
