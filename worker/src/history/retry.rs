//! Bounded retries with a constant backoff (seed 000: "if an operation fails, we retry it for a
//! finite amount of times, eventually causing the termination of the job"). When the attempts are
//! used up the caller gets one clear fatal error — [`HistoryError::Unavailable`], or
//! [`HistoryError::WritesRefused`] when the store kept refusing writes — and the worker stops; its
//! Pod restarts and restores from the last checkpoint.
//!
//! This module must never retry forever, back off exponentially (the spec promises a constant
//! wait) or retry an error the attempt classified as permanent (a record too big stays too big).

use std::future::Future;
use std::time::Duration;

use sessionizer_crds::session_job::RetrySpec;

use super::HistoryError;
use super::metrics::{Op, StoreMetrics};

/// How often and how patiently an operation is attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included (at least 1).
    pub attempts: u32,
    /// Constant wait between attempts.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// The policy `spec.history.aerospike.retry` asks for.
    pub fn from_spec(spec: &RetrySpec) -> Result<Self, HistoryError> {
        let backoff = spec.backoff.to_duration().map_err(|error| {
            HistoryError::Open(format!("history.aerospike.retry.backoff: {error}"))
        })?;
        let attempts = u32::try_from(spec.attempts.max(1)).unwrap_or(1);
        Ok(Self { attempts, backoff })
    }
}

/// How one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth another attempt: a timeout, a lost connection, an overloaded node.
    Transient(String),
    /// Worth another attempt, but the store refuses writes (stop-writes); reported as
    /// [`HistoryError::WritesRefused`] when the attempts are used up.
    Refused(String),
    /// Final: another attempt would fail the same way.
    Permanent(HistoryError),
}

/// Runs `attempt` until it succeeds, fails permanently or `policy.attempts` are used up, waiting
/// `policy.backoff` in between; every retried attempt is counted in `metrics`.
pub async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    metrics: &StoreMetrics,
    op: Op,
    key: &str,
    mut attempt: F,
) -> Result<T, HistoryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let attempts = policy.attempts.max(1);
    let mut number = 1;
    loop {
        let (message, refused) = match attempt().await {
            Ok(value) => return Ok(value),
            Err(AttemptError::Permanent(error)) => return Err(error),
            Err(AttemptError::Transient(message)) => (message, false),
            Err(AttemptError::Refused(message)) => (message, true),
        };
        if number >= attempts {
            tracing::error!(?op, key, attempts, error = %message, "history operation failed for good");
            return Err(if refused {
                HistoryError::WritesRefused(message)
            } else {
                HistoryError::Unavailable { attempts, message }
            });
        }
        tracing::warn!(?op, key, attempt = number, attempts, error = %message, "history operation failed, retrying");
        metrics.retried(op);
        number += 1;
        tokio::time::sleep(policy.backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::history::metrics::{BackendLabel, HistoryMetrics};

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            backoff: Duration::from_millis(1),
        }
    }

    fn metrics() -> StoreMetrics {
        HistoryMetrics::unregistered().for_backend(BackendLabel::aerospike)
    }

    #[tokio::test]
    async fn succeeds_after_transient_failures_within_the_attempts() {
        let metrics = metrics();
        let calls = AtomicU32::new(0);
        let value = with_retries(policy(3), &metrics, Op::put, "k", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(AttemptError::Transient("timeout".into())),
                _ => Ok(7),
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.retries(Op::put), 2);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_with_the_last_error() {
        let metrics = metrics();
        let calls = AtomicU32::new(0);
        let error = with_retries(policy(4), &metrics, Op::get, "k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(AttemptError::Transient("connection refused".into()))
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&error, HistoryError::Unavailable { attempts: 4, message } if message == "connection refused"),
            "{error:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(metrics.retries(Op::get), 3);
    }

    #[tokio::test]
    async fn refused_writes_are_retried_then_reported_as_refused() {
        let metrics = metrics();
        let error = with_retries(policy(2), &metrics, Op::put, "k", || async {
            Err::<(), _>(AttemptError::Refused("stop-writes".into()))
        })
        .await
        .unwrap_err();
        assert!(matches!(error, HistoryError::WritesRefused(_)), "{error:?}");
        assert_eq!(metrics.retries(Op::put), 1);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let metrics = metrics();
        let calls = AtomicU32::new(0);
        let error = with_retries(policy(5), &metrics, Op::put, "k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(AttemptError::Permanent(HistoryError::TooBig {
                key: "k".into(),
                bytes: 10,
            }))
        })
        .await
        .unwrap_err();
        assert!(matches!(error, HistoryError::TooBig { .. }), "{error:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(metrics.retries(Op::put), 0);
    }

    #[test]
    fn the_policy_comes_from_the_spec() {
        let spec = RetrySpec::default();
        assert_eq!(
            RetryPolicy::from_spec(&spec).unwrap(),
            RetryPolicy {
                attempts: 3,
                backoff: Duration::from_millis(100)
            }
        );
    }
}
