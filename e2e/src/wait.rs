//! Waiting for a condition, never for a fixed time: every wait in the environment and the tests
//! goes through [`until`], which polls with a short backoff and fails with a message that says what
//! was awaited and what was last seen.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;

/// Polls `check` until it returns `Ok(Some(value))`, or fails after `timeout`.
///
/// `check` returns `Ok(None)` for "not yet" and `Err(..)` for a failed attempt; both are retried,
/// and the last error is quoted in the timeout message so a failing test explains itself.
/// One error is never retried: [`Error::Exited`], a server that died while we waited for it —
/// waiting longer cannot help, and its log says why.
pub async fn until<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Error>
where
    E: std::fmt::Display + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(25);
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("condition not met yet"),
            Err(error) => {
                let any: &dyn std::any::Any = &error;
                if let Some(Error::Exited { name, status, log }) = any.downcast_ref::<Error>() {
                    return Err(Error::Exited {
                        name: name.clone(),
                        status: status.clone(),
                        log: log.clone(),
                    });
                }
                error.to_string()
            }
        };
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = until("third call", Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 3;
            async move { Ok::<_, String>(done.then_some(calls)) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_dead_server_fails_at_once() {
        let started = Instant::now();
        let error = until("server", Duration::from_secs(60), || async {
            Err::<Option<()>, _>(Error::Exited {
                name: "etcd".into(),
                status: "exit status: 1".into(),
                log: "etcd.log".into(),
            })
        })
        .await
        .unwrap_err();
        assert!(matches!(error, Error::Exited { .. }));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn times_out_quoting_the_last_error() {
        let error = until("never", Duration::from_millis(100), || async {
            Err::<Option<()>, _>("connection refused")
        })
        .await
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("never"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
    }
}
