//! Waiting for a resource to reach a state: look, pause, look again, until done or timed out.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::Timing;

/// One look at a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<T> {
    /// It reached the state; the value is what was seen.
    Done(T),
    /// Not yet; the text is what it is now (e.g. `stopping`).
    Pending(String),
    /// It no longer exists.
    Gone,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited<T> {
    /// Reached the state after `took`, having looked `looks` times.
    Done {
        /// What was seen last.
        value: T,
        /// Time spent.
        took: Duration,
        /// Looks taken.
        looks: u32,
    },
    /// The resource vanished while waiting.
    Gone,
}

/// A wait that ran out of time or a look that failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E: std::error::Error + 'static> {
    /// Timed out.
    #[error("timed out after {} s waiting for {what} (last seen: {last})", timeout.as_secs())]
    Timeout {
        /// What was awaited, e.g. `DB instance prod-db to be stopped`.
        what: String,
        /// The limit.
        timeout: Duration,
        /// The last state seen.
        last: String,
    },
    /// A look failed.
    #[error("failed to check on {what}")]
    Probe {
        /// What was awaited.
        what: String,
        /// The cause.
        #[source]
        source: E,
    },
}

/// Looks at a resource with `probe` every `timing.poll_interval` until it is done, gone, or
/// `timing.timeout` has passed.
pub async fn until<T, E, F, Fut>(
    timing: Timing,
    what: &str,
    mut probe: F,
) -> Result<Waited<T>, WaitError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>, E>>,
{
    let started = Instant::now();
    let mut looks = 0;
    loop {
        looks += 1;
        let seen = probe().await.map_err(|source| WaitError::Probe {
            what: what.to_string(),
            source,
        })?;
        match seen {
            Probe::Done(value) => {
                return Ok(Waited::Done {
                    value,
                    took: started.elapsed(),
                    looks,
                });
            }
            Probe::Gone => return Ok(Waited::Gone),
            Probe::Pending(last) => {
                if started.elapsed() + timing.poll_interval > timing.timeout {
                    return Err(WaitError::Timeout {
                        what: what.to_string(),
                        timeout: timing.timeout,
                        last,
                    });
                }
                tokio::time::sleep(timing.poll_interval).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    fn timing(poll_ms: u64, timeout_ms: u64) -> Timing {
        Timing {
            poll_interval: Duration::from_millis(poll_ms),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn waits_until_done() {
        let n = Cell::new(0);
        let result = until(timing(1, 5_000), "x to be stopped", || {
            n.set(n.get() + 1);
            let k = n.get();
            async move {
                Ok::<_, Boom>(if k < 4 {
                    Probe::Pending("stopping".into())
                } else {
                    Probe::Done(k)
                })
            }
        })
        .await
        .unwrap();
        match result {
            Waited::Done { value, looks, .. } => {
                assert_eq!(value, 4);
                assert_eq!(looks, 4);
            }
            Waited::Gone => panic!("not gone"),
        }
    }

    #[tokio::test]
    async fn times_out_with_the_last_state() {
        let err = until(timing(5, 30), "x to be stopped", || async {
            Ok::<Probe<()>, Boom>(Probe::Pending("stopping".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0 s waiting for x to be stopped (last seen: stopping)"
        );
    }

    #[tokio::test]
    async fn gone_and_failed_looks_end_the_wait() {
        let gone = until(timing(1, 1_000), "x", || async {
            Ok::<Probe<()>, Boom>(Probe::Gone)
        })
        .await
        .unwrap();
        assert_eq!(gone, Waited::Gone);
        let err = until(timing(1, 1_000), "x", || async {
            Err::<Probe<()>, Boom>(Boom)
        })
        .await
        .unwrap_err();
        assert!(matches!(err, WaitError::Probe { .. }));
    }
}
