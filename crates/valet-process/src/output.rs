//! Output: pipes read into a bounded channel, under a cap shared by stdout and stderr.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Stream;

/// Bytes read from a pipe at a time (the size of one piece of output at most).
const CHUNK: usize = 32 * 1024;

const NONE: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

/// Output accounting shared by the stdout and stderr readers of one step.
pub(crate) struct Cap {
    limit: u64,
    used: AtomicU64,
    dropped: AtomicU64,
    /// The stream on which the cap was reached; `NONE` before.
    cut_on: AtomicU8,
}

impl Cap {
    pub(crate) fn new(limit: u64) -> Self {
        Cap {
            limit,
            used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            cut_on: AtomicU8::new(NONE),
        }
    }

    /// How many of `n` new bytes of `stream` may still be passed on.
    fn take(&self, stream: Stream, n: u64) -> u64 {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        let allowed = self.limit.saturating_sub(before).min(n);
        if allowed < n {
            self.dropped.fetch_add(n - allowed, Ordering::Relaxed);
            let code = match stream {
                Stream::Stdout => STDOUT,
                Stream::Stderr => STDERR,
            };
            let _ = self
                .cut_on
                .compare_exchange(NONE, code, Ordering::Relaxed, Ordering::Relaxed);
        }
        allowed
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn cut_on(&self) -> Option<Stream> {
        match self.cut_on.load(Ordering::Relaxed) {
            STDOUT => Some(Stream::Stdout),
            STDERR => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// Reads one pipe to its end, passing on at most what the cap allows; keeps reading (and
/// dropping) past the cap and after the receiver went away, so the process never blocks on
/// a full pipe for those reasons.
pub(crate) async fn pump<T>(
    fd: OwnedFd,
    tx: mpsc::Sender<T>,
    wrap: fn(Stream, Bytes) -> T,
    cap: Arc<Cap>,
    stream: Stream,
) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut receiver_gone = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let allowed = cap.take(stream, n as u64) as usize;
        if allowed == 0 || receiver_gone {
            continue;
        }
        let data = Bytes::copy_from_slice(&buf[..allowed]);
        if tx.send(wrap(stream, data)).await.is_err() {
            receiver_gone = true;
        }
    }
}

/// Writes `data` to the process's stdin and closes it.
pub(crate) async fn write_stdin(fd: OwnedFd, data: Vec<u8>) {
    match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
        Ok(mut pipe) => {
            if let Err(e) = pipe.write_all(&data).await {
                tracing::debug!(error = %e, "stdin not fully written");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot write stdin"),
    }
}
