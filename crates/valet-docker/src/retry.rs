//! Retries of engine calls: exponential backoff with full jitter, bounded by a number of
//! attempts and by the total time spent.
//!
//! The schedule ([`Backoff::delay`]) is pure: it is fed the failures so far, the time spent
//! and a random number, so it is tested without a clock. [`retry`] drives it with tokio's
//! clock (tests pause it). Which errors are worth another try is the caller's decision;
//! [`transient`] is the one for Docker engine calls.

use std::future::Future;
use std::time::Duration;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay; it doubles with every failure …
    pub base: Duration,
    /// … up to this.
    pub cap: Duration,
    /// Calls in all, the first included.
    pub max_attempts: u32,
    /// No retry starts later than this after the first call.
    pub max_elapsed: Duration,
}

impl Backoff {
    /// For calls to the local engine: five calls within ten seconds at most.
    pub const ENGINE: Backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_secs(2),
        max_attempts: 5,
        max_elapsed: Duration::from_secs(10),
    };

    /// The wait before the next call after `failures` failed calls (≥ 1), `elapsed` after the
    /// first call, with `r` uniform in `[0, 1)`: full jitter, `r × min(cap, base × 2^(failures-1))`.
    /// `None` when the bound is reached.
    pub fn delay(&self, failures: u32, elapsed: Duration, r: f64) -> Option<Duration> {
        if failures >= self.max_attempts {
            return None;
        }
        let exp = failures.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let wait = ceiling.mul_f64(r.clamp(0.0, 1.0));
        if elapsed.saturating_add(wait) >= self.max_elapsed {
            return None;
        }
        Some(wait)
    }
}

/// Calls `op` until it succeeds, fails with an error `retryable` refuses, or `policy`'s
/// bound is reached; returns the last result. Each retry is logged with `what`.
pub async fn retry<T, E, F, Fut>(
    policy: &Backoff,
    what: &str,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let start = tokio::time::Instant::now();
    let mut failures = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                failures += 1;
                if !retryable(&e) {
                    return Err(e);
                }
                let Some(wait) = policy.delay(failures, start.elapsed(), fastrand::f64()) else {
                    return Err(e);
                };
                tracing::debug!(what, failures, ?wait, error = %e, "retrying a transient failure");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether a failed engine call may succeed when tried again: the engine could not be
/// reached or answered late (connection refused or reset, a timeout), or it failed on its
/// side (5xx) for another reason than a missing image, a conflict or the container
/// runtime's refusal. Requests the engine
/// refused (4xx) are not retried.
pub fn transient(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error;
    match e {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            let m = message.to_ascii_lowercase();
            *status_code >= 500
                && !m.contains("no such image")
                && !m.contains("conflict")
                && !m.contains("already in use")
                // The container runtime refusing a container (a missing executable or
                // directory) says the same every time.
                && !m.contains("oci runtime")
        }
        Error::RequestTimeoutError
        | Error::IOError { .. }
        | Error::HyperResponseError { .. }
        | Error::HyperLegacyError { .. }
        | Error::SocketNotFoundError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const POLICY: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        max_attempts: 6,
        max_elapsed: Duration::from_secs(3),
    };

    #[derive(Debug, PartialEq)]
    enum E {
        Transient,
        Fatal,
    }

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap_and_is_jittered_below_it() {
        let zero = Duration::ZERO;
        // r just under 1 gives the ceiling of each failure.
        let top = |n| POLICY.delay(n, zero, 0.999_999).expect("a delay");
        assert!(top(1) <= Duration::from_millis(100) && top(1) > Duration::from_millis(99));
        assert!(top(2) > Duration::from_millis(199) && top(2) <= Duration::from_millis(200));
        assert!(top(3) > Duration::from_millis(399) && top(3) <= Duration::from_millis(400));
        assert!(top(5) <= Duration::from_secs(1), "capped: {:?}", top(5));
        // Full jitter: anything from zero.
        assert_eq!(POLICY.delay(3, zero, 0.0), Some(Duration::ZERO));
        assert_eq!(POLICY.delay(3, zero, 0.5), Some(Duration::from_millis(200)));
    }

    #[test]
    fn the_schedule_stops_at_the_bounds() {
        assert_eq!(POLICY.delay(6, Duration::ZERO, 0.5), None, "attempts");
        assert_eq!(
            POLICY.delay(2, Duration::from_millis(2950), 0.9),
            None,
            "time"
        );
        assert!(POLICY.delay(2, Duration::from_millis(2950), 0.0).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn fails_twice_then_succeeds() {
        let calls = AtomicU32::new(0);
        let got = retry(
            &POLICY,
            "test",
            |e| *e == E::Transient,
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(E::Transient),
                    _ => Ok(42),
                }
            },
        )
        .await;
        assert_eq!(got, Ok(42));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_retryable_error_returns_at_once() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let got: Result<(), E> = retry(
            &POLICY,
            "test",
            |e| *e == E::Transient,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E::Fatal)
            },
        )
        .await;
        assert_eq!(got, Err(E::Fatal));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait before giving up");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_holds_when_every_call_fails() {
        for _ in 0..50 {
            let calls = AtomicU32::new(0);
            let start = tokio::time::Instant::now();
            let got: Result<(), E> = retry(
                &POLICY,
                "test",
                |_| true,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(E::Transient)
                },
            )
            .await;
            assert_eq!(got, Err(E::Transient));
            let n = calls.load(Ordering::SeqCst);
            assert!((1..=6).contains(&n), "{n} calls");
            assert!(
                start.elapsed() < POLICY.max_elapsed,
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn engine_errors_are_classified() {
        use bollard::errors::Error;
        let server = |status_code, message: &str| Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        assert!(transient(&server(
            500,
            "driver failed programming external connectivity"
        )));
        assert!(transient(&server(503, "service unavailable")));
        assert!(!transient(&server(500, "No such image: x:1")));
        assert!(!transient(&server(404, "No such container: x")));
        assert!(!transient(&server(
            409,
            "Conflict. The container name is already in use"
        )));
        assert!(!transient(&server(400, "invalid reference format")));
        assert!(!transient(&server(
            500,
            "failed to create shim task: OCI runtime create failed: mkdir /proc/x"
        )));
        assert!(!transient(&server(
            500,
            "failed to create shim task: OCI runtime create failed: mkdir /proc/x"
        )));
        assert!(transient(&Error::RequestTimeoutError));
        assert!(transient(&Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
        }));
    }
}
