//! Parity of a side-running job with the job it replaces, as pure functions: the difference of
//! what both did over the same interval (counter deltas), judged against `sideRun.parity`, and
//! the side-run's progress (warm-up, readiness for a cutover).
//!
//! Never passes on missing data: an interval in which the old job processed nothing, or in
//! which a counter went backwards (a worker restarted), is not evidence of parity.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sessionizer_crds::session_job::{JobCounters, ParityBaseline, ParityResult, ParitySpec};

use crate::cutover::machine::seconds_between;
use crate::workers::Counters;

/// A job's counters in status form.
pub fn job_counters(totals: &Counters) -> JobCounters {
    JobCounters {
        events: totals.records,
        sessions: totals.sessions_closed,
        late_updates: totals.late_updates,
        quarantined: totals.malformed,
    }
}

/// `later − earlier`, or `None` when a counter went backwards.
pub fn delta(later: &JobCounters, earlier: &JobCounters) -> Option<JobCounters> {
    let d = JobCounters {
        events: later.events - earlier.events,
        sessions: later.sessions - earlier.sessions,
        late_updates: later.late_updates - earlier.late_updates,
        quarantined: later.quarantined - earlier.quarantined,
    };
    (d.events >= 0 && d.sessions >= 0 && d.late_updates >= 0 && d.quarantined >= 0).then_some(d)
}

/// Relative difference of `new` to `old` in basis points (0 when both are 0).
pub fn difference_basis_points(old: i64, new: i64) -> i64 {
    if old == new {
        return 0;
    }
    (new - old).abs().saturating_mul(10_000) / old.max(1)
}

/// Compares what both jobs did over one interval.
pub fn evaluate(spec: &ParitySpec, old: &JobCounters, new: &JobCounters) -> ParityResult {
    let count_tolerance = i64::from(spec.max_count_difference_basis_points);
    let content_tolerance = i64::from(spec.max_mismatch_basis_points);
    let figures = [
        ("events", old.events, new.events, count_tolerance),
        ("sessions", old.sessions, new.sessions, count_tolerance),
        (
            "late updates",
            old.late_updates,
            new.late_updates,
            content_tolerance,
        ),
        (
            "quarantined",
            old.quarantined,
            new.quarantined,
            content_tolerance,
        ),
    ];
    let mut worst = 0;
    let mut failures = Vec::new();
    for (name, o, n, tolerance) in figures {
        let difference = difference_basis_points(o, n);
        worst = worst.max(difference);
        if difference > tolerance {
            failures.push(format!(
                "{name} {n} vs {o} ({difference} bp > {tolerance} bp)"
            ));
        }
    }
    let (passed, message) = if old.events == 0 {
        (
            false,
            Some(
                "the replaced job processed no events in the window: nothing to compare".to_owned(),
            ),
        )
    } else if failures.is_empty() {
        (true, None)
    } else {
        (false, Some(failures.join("; ")))
    };
    ParityResult {
        passed,
        from_time: None,
        to_time: None,
        old: old.clone(),
        new: new.clone(),
        worst_difference_basis_points: worst,
        message,
    }
}

/// The next baseline and, when a window completed, its parity result.
pub fn advance(
    spec: &ParitySpec,
    window: Duration,
    baseline: Option<&ParityBaseline>,
    old: JobCounters,
    new: JobCounters,
    now: &Time,
) -> (ParityBaseline, Option<ParityResult>) {
    let fresh = ParityBaseline {
        time: now.clone(),
        old: old.clone(),
        new: new.clone(),
    };
    let Some(base) = baseline else {
        return (fresh, None);
    };
    if seconds_between(&base.time, now) < window {
        return (base.clone(), None);
    }
    let result = match (delta(&old, &base.old), delta(&new, &base.new)) {
        (Some(old_delta), Some(new_delta)) => evaluate(spec, &old_delta, &new_delta),
        _ => ParityResult {
            passed: false,
            message: Some("a worker restarted during the window (counters went backwards); comparing again over the next window".to_owned()),
            ..ParityResult::default()
        },
    };
    let result = ParityResult {
        from_time: Some(base.time.clone()),
        to_time: Some(now.clone()),
        ..result
    };
    (fresh, Some(result))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn counters(events: i64, sessions: i64, late: i64, quarantined: i64) -> JobCounters {
        JobCounters {
            events,
            sessions,
            late_updates: late,
            quarantined,
        }
    }

    #[test]
    fn equal_output_passes() {
        let c = counters(1000, 100, 5, 1);
        let result = evaluate(&ParitySpec::default(), &c, &c);
        assert!(result.passed);
        assert_eq!(result.worst_difference_basis_points, 0);
    }

    #[test]
    fn differences_beyond_the_tolerance_fail_with_the_figure() {
        let spec = ParitySpec::default(); // 10 bp = 0.1 %
        let within = evaluate(
            &spec,
            &counters(10_000, 1000, 0, 0),
            &counters(10_005, 1001, 0, 0),
        );
        assert!(within.passed, "{within:?}");
        let beyond = evaluate(
            &spec,
            &counters(10_000, 1000, 0, 0),
            &counters(10_000, 990, 0, 0),
        );
        assert!(!beyond.passed);
        assert_eq!(beyond.worst_difference_basis_points, 100);
        assert!(
            beyond
                .message
                .unwrap()
                .contains("sessions 990 vs 1000 (100 bp > 10 bp)")
        );
    }

    #[test]
    fn nothing_processed_is_not_parity() {
        let result = evaluate(
            &ParitySpec::default(),
            &counters(0, 0, 0, 0),
            &counters(0, 0, 0, 0),
        );
        assert!(!result.passed);
        assert!(result.message.unwrap().contains("nothing to compare"));
    }

    #[test]
    fn windows_compare_deltas_and_restart() {
        let spec = ParitySpec::default();
        let window = Duration::from_secs(60);
        let (base, result) = advance(
            &spec,
            window,
            None,
            counters(500, 50, 0, 0),
            counters(20, 2, 0, 0),
            &at(0),
        );
        assert!(result.is_none());
        let (same, result) = advance(
            &spec,
            window,
            Some(&base),
            counters(600, 60, 0, 0),
            counters(120, 12, 0, 0),
            &at(30),
        );
        assert!(result.is_none());
        assert_eq!(same, base, "the window is still open");
        // Totals differ (the old job ran longer) but both did the same over the window.
        let (next, result) = advance(
            &spec,
            window,
            Some(&base),
            counters(1500, 150, 0, 0),
            counters(1020, 102, 0, 0),
            &at(60),
        );
        let result = result.unwrap();
        assert!(result.passed, "{result:?}");
        assert_eq!(result.old.events, 1000);
        assert_eq!(
            (result.from_time, result.to_time),
            (Some(at(0)), Some(at(60)))
        );
        assert_eq!(next.time, at(60));
        // A restart (counters back to zero) is not judged.
        let (_, result) = advance(
            &spec,
            window,
            Some(&next),
            counters(10, 1, 0, 0),
            counters(2000, 200, 0, 0),
            &at(120),
        );
        let result = result.unwrap();
        assert!(!result.passed);
        assert!(result.message.unwrap().contains("restarted"));
    }
}
