//! Is a job drained? Pure evaluation of its workers' `/status`: every source partition consumed
//! to its log-end offset, nothing produced but unacknowledged, every key group covered — and
//! the same for long enough (a stability window) that a late log-end refresh cannot fool it.
//!
//! Never decides on partial information: a worker that did not answer, or a partition whose
//! offsets are unknown, means "not drained".

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sessionizer_crds::cutover::DrainStatus;

use super::machine::seconds_between;
use crate::workers::WorkerReport;

/// How long both jobs must stay drained at unchanged offsets.
pub const STABLE_WINDOW: Duration = Duration::from_secs(5);

/// What one job's workers answered.
#[derive(Clone, Debug)]
pub struct JobReports {
    /// The job.
    pub job: String,
    /// Workers it should have (`spec.parallelism`).
    pub expected_workers: usize,
    /// One answer (or error text) per worker Pod.
    pub reports: Vec<Result<WorkerReport, String>>,
}

/// The verdict over both jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything consumed; `fingerprint` sums the positions.
    Drained {
        /// Sum of every consumed position of every job.
        fingerprint: i64,
    },
    /// Not yet, and why.
    NotDrained(String),
}

/// Evaluates every job; the first reason found is reported.
pub fn evaluate(jobs: &[JobReports]) -> Verdict {
    let mut fingerprint = 0i64;
    for job in jobs {
        match evaluate_job(job) {
            Ok(sum) => fingerprint = fingerprint.wrapping_add(sum),
            Err(reason) => return Verdict::NotDrained(format!("{}: {reason}", job.job)),
        }
    }
    Verdict::Drained { fingerprint }
}

fn evaluate_job(job: &JobReports) -> Result<i64, String> {
    if job.reports.len() != job.expected_workers {
        return Err(format!(
            "{}/{} workers answered",
            job.reports.len(),
            job.expected_workers
        ));
    }
    let mut sum = 0i64;
    let mut covered = BTreeSet::new();
    let mut partitions = 0;
    for report in &job.reports {
        let report = report.as_ref().map_err(Clone::clone)?;
        if report.in_flight > 0 {
            return Err(format!("{} records in flight", report.in_flight));
        }
        let Some(stream) = &report.stream else {
            return Err("a worker has not started streaming".to_owned());
        };
        partitions = partitions.max(stream.partitions);
        for group in &stream.key_groups {
            covered.insert(group.key_group);
            for p in &group.partitions {
                let Some(end) = p.log_end_offset else {
                    return Err(format!(
                        "log-end offset of {}/{} unknown",
                        p.topic, p.partition
                    ));
                };
                let position = match p.position {
                    Some(position) => position,
                    None if end == 0 => 0,
                    None => {
                        return Err(format!(
                            "{}/{} not consumed yet (end {end})",
                            p.topic, p.partition
                        ));
                    }
                };
                if position < end {
                    return Err(format!(
                        "{}/{} at {position} of {end}",
                        p.topic, p.partition
                    ));
                }
                sum = sum.wrapping_add(position);
            }
        }
    }
    if (covered.len() as u32) < partitions {
        return Err(format!(
            "{} of {partitions} key groups reported",
            covered.len()
        ));
    }
    Ok(sum)
}

/// The next drain status from the previous one and the current verdict at `now`, and whether
/// the jobs have now been drained at the same offsets for [`STABLE_WINDOW`].
pub fn progress(
    previous: Option<&DrainStatus>,
    verdict: &Verdict,
    now: &Time,
) -> (DrainStatus, bool) {
    match verdict {
        Verdict::NotDrained(reason) => (
            DrainStatus {
                since: None,
                fingerprint: None,
                waiting_for: Some(reason.clone()),
            },
            false,
        ),
        Verdict::Drained { fingerprint } => {
            let same = previous.and_then(|p| p.fingerprint) == Some(*fingerprint);
            let since = match previous.and_then(|p| p.since.clone()) {
                Some(since) if same => since,
                _ => now.clone(),
            };
            let stable = seconds_between(&since, now) >= STABLE_WINDOW;
            let waiting_for =
                (!stable).then(|| "caught up; holding for the stability window".to_owned());
            (
                DrainStatus {
                    since: Some(since),
                    fingerprint: Some(*fingerprint),
                    waiting_for,
                },
                stable,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::workers::{KeyGroupReport, PartitionReport, StreamReport};

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn worker(groups: &[(u32, Option<i64>, Option<i64>)], partitions: u32) -> WorkerReport {
        WorkerReport {
            stream: Some(StreamReport {
                partitions,
                running: true,
                key_groups: groups
                    .iter()
                    .map(|(group, position, end)| KeyGroupReport {
                        key_group: *group,
                        partitions: vec![PartitionReport {
                            topic: "pageviews".into(),
                            partition: *group as i32,
                            position: *position,
                            log_end_offset: *end,
                        }],
                    })
                    .collect(),
            }),
            ..WorkerReport::default()
        }
    }

    fn job(reports: Vec<Result<WorkerReport, String>>, expected: usize) -> JobReports {
        JobReports {
            job: "old".into(),
            expected_workers: expected,
            reports,
        }
    }

    #[test]
    fn caught_up_workers_are_drained() {
        let jobs = [job(
            vec![
                Ok(worker(&[(0, Some(10), Some(10))], 2)),
                Ok(worker(&[(1, None, Some(0))], 2)),
            ],
            2,
        )];
        assert_eq!(evaluate(&jobs), Verdict::Drained { fingerprint: 10 });
    }

    #[test]
    fn lag_in_flight_and_unknowns_are_not_drained() {
        let cases = [
            (
                worker(&[(0, Some(9), Some(10))], 1),
                "pageviews/0 at 9 of 10",
            ),
            (
                worker(&[(0, Some(9), None)], 1),
                "log-end offset of pageviews/0 unknown",
            ),
            (worker(&[(0, None, Some(3))], 1), "not consumed yet"),
            (
                WorkerReport {
                    in_flight: 2,
                    ..worker(&[(0, Some(1), Some(1))], 1)
                },
                "2 records in flight",
            ),
            (WorkerReport::default(), "not started streaming"),
            (worker(&[(0, Some(1), Some(1))], 2), "1 of 2 key groups"),
        ];
        for (report, expected) in cases {
            match evaluate(&[job(vec![Ok(report)], 1)]) {
                Verdict::NotDrained(reason) => {
                    assert!(reason.contains(expected), "{reason} / {expected}")
                }
                other => panic!("{other:?} / {expected}"),
            }
        }
    }

    #[test]
    fn missing_or_failing_workers_are_not_drained() {
        let one = worker(&[(0, Some(1), Some(1))], 1);
        match evaluate(&[job(vec![Ok(one.clone())], 2)]) {
            Verdict::NotDrained(reason) => assert_eq!(reason, "old: 1/2 workers answered"),
            other => panic!("{other:?}"),
        }
        match evaluate(&[job(vec![Ok(one), Err("connection refused".into())], 2)]) {
            Verdict::NotDrained(reason) => assert_eq!(reason, "old: connection refused"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drained_counts_only_after_the_stability_window_at_the_same_offsets() {
        let drained = Verdict::Drained { fingerprint: 42 };
        let (first, done) = progress(None, &drained, &at(100));
        assert!(!done);
        assert_eq!(first.since, Some(at(100)));
        let (second, done) = progress(Some(&first), &drained, &at(103));
        assert!(!done);
        assert_eq!(second.since, Some(at(100)));
        let (_, done) = progress(Some(&second), &drained, &at(105));
        assert!(done);
        // New data restarts the window.
        let moved = Verdict::Drained { fingerprint: 43 };
        let (restarted, done) = progress(Some(&second), &moved, &at(106));
        assert!(!done);
        assert_eq!(restarted.since, Some(at(106)));
        // Falling behind clears it.
        let behind = Verdict::NotDrained("lag".into());
        let (cleared, done) = progress(Some(&restarted), &behind, &at(107));
        assert!(!done);
        assert_eq!(cleared.since, None);
        assert_eq!(cleared.waiting_for.as_deref(), Some("lag"));
    }
}
