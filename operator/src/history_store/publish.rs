//! What a [`Report`] looks like to users: `status.historyStore`, the `HistoryStoreCapacity`
//! condition (True while there is room, False from Warning on, Unknown while Aerospike cannot be
//! reached) and the reason of the Event published when the level changes. Pure: the caller
//! passes the status to change; nothing here talks to the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sessionizer_crds::session_job::{
    HistoryStoreLevel, HistoryStoreStatus, SessionJobStatus, condition_types,
};

use super::Report;
use super::stats::Mark;
use crate::session_job::conditions::{self, Desired};

/// Projections further out than this (ten years) are not shown.
const MAX_PROJECTION_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// `status.historyStore` for `report`.
pub fn history_store_status(report: &Report) -> HistoryStoreStatus {
    let Some(worst) = &report.worst else {
        return HistoryStoreStatus {
            level: HistoryStoreLevel::Unreachable,
            last_probe_time: Some(report.probed_at.clone()),
            ..HistoryStoreStatus::default()
        };
    };
    let percent = |mark: Mark| mark.percent().map(|pct| pct.round() as i32);
    HistoryStoreStatus {
        level: worst.level,
        used_percent: Some(whole_percent(worst.used_percent)),
        eviction_mark_percent: match worst.eviction_mark {
            Mark::Off => Some(0),
            mark => percent(mark),
        },
        stop_writes_mark_percent: percent(worst.stop_writes_mark),
        eviction_disabled: Some(worst.eviction_mark == Mark::Off),
        node: Some(worst.node.clone()),
        projected_eviction_mark_time: projected(report),
        last_probe_time: Some(report.probed_at.clone()),
    }
}

/// Whole percent, rounded down after rounding to hundredths: used bytes are whole numbers, so
/// 45 % of a capacity can come out as 44.99999999 and must still read 45.
fn whole_percent(used: f64) -> i32 {
    ((used * 100.0).round() / 100.0).floor() as i32
}

fn projected(report: &Report) -> Option<Time> {
    let seconds = report.seconds_to_eviction_mark?;
    if !(0.0..MAX_PROJECTION_SECONDS).contains(&seconds) {
        return None;
    }
    let at = report
        .probed_at
        .0
        .checked_add(SignedDuration::from_secs(seconds.round() as i64))
        .ok()?;
    Timestamp::from_second(at.as_second()).ok().map(Time)
}

/// The condition's status, reason and message for `report`.
pub fn condition(report: &Report) -> (&'static str, &'static str, String) {
    let Some(worst) = &report.worst else {
        return (
            "Unknown",
            "AerospikeUnreachable",
            format!(
                "the history store capacity is unknown: {}",
                report.problems.join("; ")
            ),
        );
    };
    let mut message = format!("node {}: {}", worst.node, worst.why);
    if !report.problems.is_empty() {
        message.push_str(&format!(
            "; {} node(s) did not answer: {}",
            report.problems.len(),
            report.problems.join("; ")
        ));
    }
    let (status, reason) = match worst.level {
        HistoryStoreLevel::Healthy if worst.eviction_mark == Mark::Off => {
            ("True", "EvictionDisabled")
        }
        HistoryStoreLevel::Healthy => ("True", "BelowWarnMargin"),
        HistoryStoreLevel::Warning => ("False", "NearEvictionMark"),
        HistoryStoreLevel::Breached => ("False", "EvictionMarkBreached"),
        HistoryStoreLevel::StopWrites => ("False", "StopWrites"),
        HistoryStoreLevel::Unknown | HistoryStoreLevel::Unreachable => ("Unknown", "NotMeasured"),
    };
    (status, reason, message)
}

/// Sets `status.historyStore` and the HistoryStoreCapacity condition from `report`, or removes
/// both when the job has no Aerospike history store (`None`).
pub fn apply(
    status: &mut SessionJobStatus,
    report: Option<&Report>,
    generation: Option<i64>,
    now: &Time,
) {
    let Some(report) = report else {
        status.history_store = None;
        status
            .conditions
            .retain(|c| c.type_ != condition_types::HISTORY_STORE_CAPACITY);
        return;
    };
    status.history_store = Some(history_store_status(report));
    let (condition_status, reason, message) = condition(report);
    conditions::set(
        &mut status.conditions,
        Desired {
            type_: condition_types::HISTORY_STORE_CAPACITY,
            status: condition_status,
            reason,
            message: &message,
        },
        generation,
        now,
    );
}

/// The reason of the Event published when the level becomes `level`.
pub fn event_reason(level: HistoryStoreLevel) -> &'static str {
    match level {
        HistoryStoreLevel::Unknown => "HistoryStoreUnknown",
        HistoryStoreLevel::Unreachable => "HistoryStoreUnreachable",
        HistoryStoreLevel::Healthy => "HistoryStoreHealthy",
        HistoryStoreLevel::Warning => "HistoryStoreNearEvictionMark",
        HistoryStoreLevel::Breached => "HistoryStoreEvictionMarkBreached",
        HistoryStoreLevel::StopWrites => "HistoryStoreStopWrites",
    }
}

#[cfg(test)]
mod tests {
    use super::super::level::Assessment;
    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn report(level: HistoryStoreLevel, used: f64, eviction: Mark) -> Report {
        Report {
            worst: Some(Assessment {
                node: "BB9000000000002".into(),
                level,
                kind: "storage",
                used_percent: used,
                eviction_mark: eviction,
                stop_writes_mark: Mark::At(70.0),
                headroom: 0.0,
                why: "storage 55.0% used".into(),
            }),
            problems: Vec::new(),
            nodes_answered: 3,
            probed_at: at(1_000),
            seconds_to_eviction_mark: Some(600.4),
        }
    }

    #[test]
    fn status_carries_the_worst_node_figures_and_projection() {
        let status =
            history_store_status(&report(HistoryStoreLevel::Warning, 55.7, Mark::At(60.0)));
        assert_eq!(status.level, HistoryStoreLevel::Warning);
        assert_eq!(status.used_percent, Some(55));
        assert_eq!(status.eviction_mark_percent, Some(60));
        assert_eq!(status.stop_writes_mark_percent, Some(70));
        assert_eq!(status.eviction_disabled, Some(false));
        assert_eq!(status.node.as_deref(), Some("BB9000000000002"));
        assert_eq!(status.projected_eviction_mark_time, Some(at(1_600)));
        assert_eq!(status.last_probe_time, Some(at(1_000)));
    }

    #[test]
    fn eviction_off_is_said_and_not_projected() {
        let mut off = report(HistoryStoreLevel::Healthy, 20.0, Mark::Off);
        off.seconds_to_eviction_mark = None;
        let status = history_store_status(&off);
        assert_eq!(status.eviction_mark_percent, Some(0));
        assert_eq!(status.eviction_disabled, Some(true));
        assert_eq!(status.projected_eviction_mark_time, None);
        assert_eq!(condition(&off).1, "EvictionDisabled");
    }

    #[test]
    fn unreachable_is_its_own_level_and_an_unknown_condition() {
        let down = Report {
            worst: None,
            problems: vec!["connecting to Aerospike 127.0.0.1:3000: refused".into()],
            nodes_answered: 0,
            probed_at: at(5),
            seconds_to_eviction_mark: None,
        };
        assert_eq!(down.level(), HistoryStoreLevel::Unreachable);
        assert_eq!(
            history_store_status(&down).level,
            HistoryStoreLevel::Unreachable
        );
        let (status, reason, message) = condition(&down);
        assert_eq!((status, reason), ("Unknown", "AerospikeUnreachable"));
        assert!(message.contains("refused"), "{message}");
    }

    #[test]
    fn condition_is_false_from_warning_on() {
        for (level, reason) in [
            (HistoryStoreLevel::Healthy, "BelowWarnMargin"),
            (HistoryStoreLevel::Warning, "NearEvictionMark"),
            (HistoryStoreLevel::Breached, "EvictionMarkBreached"),
            (HistoryStoreLevel::StopWrites, "StopWrites"),
        ] {
            let (status, got, _) = condition(&report(level, 50.0, Mark::At(60.0)));
            assert_eq!(got, reason);
            assert_eq!(status == "True", level == HistoryStoreLevel::Healthy);
        }
    }

    #[test]
    fn apply_sets_and_removes_the_status_and_condition() {
        let mut status = SessionJobStatus::default();
        apply(
            &mut status,
            Some(&report(HistoryStoreLevel::Breached, 61.0, Mark::At(60.0))),
            Some(2),
            &at(10),
        );
        assert!(status.history_store.is_some());
        let condition = &status.conditions[0];
        assert_eq!(condition.type_, "HistoryStoreCapacity");
        assert_eq!(condition.status, "False");
        assert_eq!(condition.observed_generation, Some(2));
        apply(&mut status, None, Some(2), &at(20));
        assert!(status.history_store.is_none());
        assert!(status.conditions.is_empty());
    }

    #[test]
    fn used_percent_is_rounded_down_but_not_by_byte_rounding() {
        assert_eq!(whole_percent(44.999_999_995_3), 45);
        assert_eq!(whole_percent(55.7), 55);
        assert_eq!(whole_percent(0.0), 0);
    }

    #[test]
    fn far_projections_are_dropped() {
        let mut slow = report(HistoryStoreLevel::Healthy, 10.0, Mark::At(60.0));
        slow.seconds_to_eviction_mark = Some(1e12);
        assert_eq!(
            history_store_status(&slow).projected_eviction_mark_time,
            None
        );
    }
}
