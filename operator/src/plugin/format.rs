//! What `kubectl sessionizer` prints, as pure functions of the objects it read: the jobs table
//! and a cutover's stages with their elapsed times. Kept apart from the API calls so the output
//! is tested without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use sessionizer_crds::cutover::{CutoverStage, SessionJobCutoverStatus, condition_types};
use sessionizer_crds::{SessionJob, SessionJobCutover};

use crate::cutover::machine::seconds_between;

/// The `get` table: one line per job.
pub fn jobs_table(jobs: &[SessionJob]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "PHASE".to_owned(),
        "SINK".to_owned(),
        "PARALLELISM".to_owned(),
        "READY".to_owned(),
        "SIDE-RUN".to_owned(),
    ]];
    for job in jobs {
        let status = job.status.clone().unwrap_or_default();
        let phase = status.phase.map_or("-".to_owned(), |p| format!("{p:?}"));
        let sink = status.effective_sink.as_ref().map_or("-".to_owned(), |s| {
            format!("{} ({})", s.mode.as_str(), s.topic)
        });
        let side_run = match (&job.spec.side_run, &status.side_run) {
            (None, _) => "-".to_owned(),
            (Some(spec), None) => format!("replaces {}: starting", spec.replaces),
            (Some(spec), Some(side)) => {
                let parity = match &side.parity {
                    None => "parity pending".to_owned(),
                    Some(p) if p.passed => {
                        format!("parity ok ({} bp)", p.worst_difference_basis_points)
                    }
                    Some(p) => format!("no parity ({} bp)", p.worst_difference_basis_points),
                };
                let warm = if side.warmup_elapsed {
                    "warm"
                } else {
                    "warming up"
                };
                let ready = if side.ready_for_cutover {
                    ", ready for cutover"
                } else {
                    ""
                };
                format!("replaces {}: {warm}, {parity}{ready}", spec.replaces)
            }
        };
        rows.push([
            job.name_any(),
            phase,
            sink,
            job.spec.parallelism.to_string(),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                job.spec.parallelism
            ),
            side_run,
        ]);
    }
    table(&rows)
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// One line per stage entered so far: name, elapsed time, and `running` for the current one.
pub fn stage_lines(status: &SessionJobCutoverStatus, now: &Time) -> Vec<String> {
    let current = status.stage.unwrap_or_default();
    status
        .stages
        .iter()
        .map(|timing| {
            let end = timing.end_time.as_ref().unwrap_or(now);
            let elapsed = timing
                .start_time
                .as_ref()
                .map_or(0, |start| seconds_between(start, end).as_secs());
            let state = if timing.stage.is_terminal() {
                ""
            } else if timing.stage == current && timing.end_time.is_none() {
                "  running"
            } else {
                "  done"
            };
            format!(
                "{:<17} {:>6}{state}",
                timing.stage.as_str(),
                format!("{elapsed}s")
            )
        })
        .collect()
}

/// The watch summary after a cutover finished.
pub fn summary(cutover: &SessionJobCutover) -> String {
    let status = cutover.status.clone().unwrap_or_default();
    let stage = status.stage.unwrap_or_default();
    let mut text = format!("cutover {} {}", cutover.name_any(), stage.as_str());
    if let Some(pause) = status.producer_pause_seconds {
        text.push_str(&format!("; producers paused {pause:.0}s"));
    }
    if stage != CutoverStage::Completed {
        // The failure that led here (the stage message is cleared by later stages).
        let failed = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition_types::FAILED && c.status == "True");
        if let Some(failed) = failed {
            text.push_str(&format!(
                "\nfailed in {}: {}",
                failed.reason, failed.message
            ));
        } else if let Some(message) = &status.message {
            text.push_str(&format!("\n{message}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use sessionizer_crds::cutover::StageTiming;

    use super::*;
    use crate::session_job::fixtures;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn the_jobs_table_shows_phase_sink_and_side_run() {
        let text = jobs_table(&[fixtures::running(), fixtures::full()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(lines[0].contains("SIDE-RUN"));
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains("replaces pageviews: starting"), "{text}");
        assert!(lines[2].contains("0/4"), "{text}");
    }

    #[test]
    fn stages_show_their_elapsed_time_and_the_running_one() {
        let status = SessionJobCutoverStatus {
            stage: Some(CutoverStage::Draining),
            stages: vec![
                StageTiming {
                    stage: CutoverStage::PausingProducers,
                    start_time: Some(at(0)),
                    end_time: Some(at(3)),
                },
                StageTiming {
                    stage: CutoverStage::Draining,
                    start_time: Some(at(3)),
                    end_time: None,
                },
            ],
            ..Default::default()
        };
        let lines = stage_lines(&status, &at(10));
        assert_eq!(lines[0], "PausingProducers      3s  done");
        assert_eq!(lines[1], "Draining              7s  running");
    }

    #[test]
    fn the_summary_of_a_rollback_names_the_failure() {
        let spec = serde_json::from_value(serde_json::json!({"from": "a", "to": "b"})).unwrap();
        let mut cutover = SessionJobCutover::new("switch", spec);
        cutover.status = Some(SessionJobCutoverStatus {
            stage: Some(CutoverStage::RolledBack),
            producer_pause_seconds: Some(3.0),
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: "Draining".into(),
                message: "Draining timed out after 1s".into(),
                observed_generation: None,
                last_transition_time: at(0),
            }],
            ..Default::default()
        });
        assert_eq!(
            summary(&cutover),
            "cutover switch RolledBack; producers paused 3s\nfailed in Draining: Draining timed out after 1s"
        );
    }
}
