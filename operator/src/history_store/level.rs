//! The capacity level of a node and of the cluster (its worst node), and the projection of when
//! the eviction mark will be reached at the observed growth rate.
//!
//! Per resource (storage, and memory before 7.0): `StopWrites` at or past its stop-writes mark,
//! `Breached` at or past its eviction mark, `Warning` within the warn margin of the eviction mark
//! — or, when eviction is off (mark 0), within the margin of the stop-writes mark, since nothing
//! will be evicted before writes stop — and `Healthy` below. The server's own `stop_writes` and
//! `hwm_breached` flags, and free space under the minimum-available mark, raise the level too.
//!
//! Pure arithmetic on figures; it never divides by a mark, and a projection is only made towards
//! an eviction mark that is on.

use sessionizer_crds::session_job::HistoryStoreLevel;

use super::stats::{Dimension, Mark, NodeFigures};

/// What one node's figures mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The node.
    pub node: String,
    /// How close it is to evicting or refusing writes.
    pub level: HistoryStoreLevel,
    /// The resource that decided the level (`storage` or `memory`).
    pub kind: &'static str,
    /// Used percentage of that resource.
    pub used_percent: f64,
    /// Its eviction mark.
    pub eviction_mark: Mark,
    /// Its stop-writes mark on used space.
    pub stop_writes_mark: Mark,
    /// Percentage points left before the next mark that acts (eviction if on, else stop-writes).
    pub headroom: f64,
    /// Why the level is what it is, for a person.
    pub why: String,
}

/// Assesses one node with `warn_margin` points of warning before the mark.
pub fn assess(figures: &NodeFigures, warn_margin: f64) -> Assessment {
    let mut worst = figures
        .dimensions
        .iter()
        .map(|dimension| assess_dimension(&figures.node, dimension, warn_margin))
        .reduce(|a, b| if worse(&b, &a) { b } else { a })
        .unwrap_or_else(|| Assessment {
            node: figures.node.clone(),
            level: HistoryStoreLevel::Unknown,
            kind: "storage",
            used_percent: 0.0,
            eviction_mark: Mark::Missing,
            stop_writes_mark: Mark::Missing,
            headroom: 100.0,
            why: "no usage figures".to_owned(),
        });
    if let (Some(avail), Some(mark)) = (
        figures.avail_percent,
        figures.stop_writes_avail_mark.percent(),
    ) && avail < mark
        && worst.level < HistoryStoreLevel::StopWrites
    {
        worst.level = HistoryStoreLevel::StopWrites;
        worst.why =
            format!("only {avail:.0}% contiguous free storage, under the {mark:.0}% minimum");
    }
    if figures.stop_writes && worst.level < HistoryStoreLevel::StopWrites {
        worst.level = HistoryStoreLevel::StopWrites;
        worst.why = "the node reports stop_writes=true".to_owned();
    }
    if figures.hwm_breached && worst.level < HistoryStoreLevel::Breached {
        worst.level = HistoryStoreLevel::Breached;
        worst.why = "the node reports hwm_breached=true".to_owned();
    }
    worst
}

fn assess_dimension(node: &str, dimension: &Dimension, warn_margin: f64) -> Assessment {
    let used = dimension.used_percent;
    let eviction = dimension.eviction_mark.percent();
    let stop = dimension.stop_writes_mark.percent();
    let kind = dimension.kind;
    let (level, why) = match (eviction, stop) {
        (_, Some(stop)) if used >= stop => (
            HistoryStoreLevel::StopWrites,
            format!("{kind} {used:.1}% used, at or past the {stop:.0}% stop-writes mark"),
        ),
        (Some(mark), _) if used >= mark => (
            HistoryStoreLevel::Breached,
            format!("{kind} {used:.1}% used, at or past the {mark:.0}% eviction mark"),
        ),
        (Some(mark), _) if used >= mark - warn_margin => (
            HistoryStoreLevel::Warning,
            format!(
                "{kind} {used:.1}% used, within {warn_margin:.0} points of the {mark:.0}% eviction mark"
            ),
        ),
        (None, Some(stop)) if used >= stop - warn_margin => (
            HistoryStoreLevel::Warning,
            format!(
                "{kind} {used:.1}% used, within {warn_margin:.0} points of the {stop:.0}% stop-writes mark (eviction is off)"
            ),
        ),
        (Some(mark), _) => (
            HistoryStoreLevel::Healthy,
            format!("{kind} {used:.1}% used, eviction mark {mark:.0}%"),
        ),
        (None, _) => (
            HistoryStoreLevel::Healthy,
            format!("{kind} {used:.1}% used, eviction is off"),
        ),
    };
    let next_mark = eviction.or(stop).unwrap_or(100.0);
    Assessment {
        node: node.to_owned(),
        level,
        kind,
        used_percent: used,
        eviction_mark: dimension.eviction_mark,
        stop_writes_mark: dimension.stop_writes_mark,
        headroom: next_mark - used,
        why,
    }
}

/// `a` is worse than `b`: a higher level, or the same level with less headroom (then the node
/// name decides, so the choice is stable).
fn worse(a: &Assessment, b: &Assessment) -> bool {
    match a.level.cmp(&b.level) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match a.headroom.total_cmp(&b.headroom) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => a.node < b.node,
        },
    }
}

/// The worst node of `assessments`, if any.
pub fn worst(assessments: Vec<Assessment>) -> Option<Assessment> {
    assessments
        .into_iter()
        .reduce(|a, b| if worse(&b, &a) { b } else { a })
}

/// Seconds from the newest sample until `mark` is reached, extrapolating the least-squares
/// growth rate of `samples` (seconds, used percent). `None` when there are fewer than two
/// samples, they span no time, usage is not growing, or it is already at the mark.
pub fn seconds_to_mark(samples: &[(f64, f64)], mark: f64) -> Option<f64> {
    let (&(last_time, last_used), first) = (samples.last()?, samples.first()?);
    if samples.len() < 2 || last_time - first.0 <= 0.0 || last_used >= mark {
        return None;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_u = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let covariance: f64 = samples
        .iter()
        .map(|(t, u)| (t - mean_t) * (u - mean_u))
        .sum();
    let variance: f64 = samples.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if variance <= 0.0 {
        return None;
    }
    let rate = covariance / variance;
    // A rate this small would take longer than any projection worth showing.
    if rate <= 1e-9 {
        return None;
    }
    Some((mark - last_used) / rate)
}

#[cfg(test)]
mod tests {
    use HistoryStoreLevel::*;

    use super::super::stats::{Shape, node_figures, parse_info, tests as answers};
    use super::*;

    fn v7(used: f64, evict: f64, stop_used: f64) -> NodeFigures {
        NodeFigures {
            node: "n1".into(),
            shape: Shape::V7,
            dimensions: vec![Dimension {
                kind: "storage",
                used_percent: used,
                eviction_mark: if evict == 0.0 {
                    Mark::Off
                } else {
                    Mark::At(evict)
                },
                stop_writes_mark: Mark::At(stop_used),
            }],
            avail_percent: Some(100.0 - used),
            stop_writes_avail_mark: Mark::At(5.0),
            hwm_breached: false,
            stop_writes: false,
        }
    }

    #[test]
    fn each_level_is_reached_in_turn_and_cleared() {
        let levels: Vec<_> = [30.0, 52.0, 61.0, 72.0, 20.0]
            .iter()
            .map(|used| assess(&v7(*used, 60.0, 70.0), 10.0).level)
            .collect();
        assert_eq!(levels, [Healthy, Warning, Breached, StopWrites, Healthy]);
    }

    #[test]
    fn the_warning_starts_exactly_at_the_margin() {
        assert_eq!(assess(&v7(49.9, 60.0, 70.0), 10.0).level, Healthy);
        assert_eq!(assess(&v7(50.0, 60.0, 70.0), 10.0).level, Warning);
        assert_eq!(assess(&v7(50.0, 60.0, 70.0), 0.0).level, Healthy);
    }

    #[test]
    fn eviction_off_warns_against_the_stop_writes_mark_and_never_breaches() {
        let healthy = assess(&v7(55.0, 0.0, 70.0), 10.0);
        assert_eq!(healthy.level, Healthy);
        assert_eq!(healthy.eviction_mark, Mark::Off);
        assert!(healthy.why.contains("eviction is off"), "{}", healthy.why);
        assert_eq!(healthy.headroom, 15.0);
        let warning = assess(&v7(65.0, 0.0, 70.0), 10.0);
        assert_eq!(warning.level, Warning);
        assert!(warning.why.contains("stop-writes mark (eviction is off)"));
        assert_eq!(assess(&v7(70.0, 0.0, 70.0), 10.0).level, StopWrites);
    }

    #[test]
    fn server_flags_and_low_free_space_raise_the_level() {
        let mut figures = v7(10.0, 60.0, 70.0);
        figures.hwm_breached = true;
        assert_eq!(assess(&figures, 10.0).level, Breached);
        figures.stop_writes = true;
        let stopped = assess(&figures, 10.0);
        assert_eq!(stopped.level, StopWrites);
        assert!(stopped.why.contains("stop_writes=true"));
        let mut fragmented = v7(10.0, 60.0, 70.0);
        fragmented.avail_percent = Some(3.0);
        let stopped = assess(&fragmented, 10.0);
        assert_eq!(stopped.level, StopWrites);
        assert!(
            stopped.why.contains("under the 5% minimum"),
            "{}",
            stopped.why
        );
    }

    #[test]
    fn pre_7_memory_past_its_mark_decides_the_level() {
        let answer =
            answers::PRE_V7.replace("memory_used_bytes=640", "memory_used_bytes=700000000");
        let figures = node_figures("old", &parse_info(&[&answer])).unwrap();
        let assessment = assess(&figures, 10.0);
        assert_eq!(assessment.level, Breached);
        assert_eq!(assessment.kind, "memory");
        assert_eq!(assessment.eviction_mark, Mark::At(60.0));
        let healthy = node_figures("old", &parse_info(&[answers::PRE_V7])).unwrap();
        let assessment = assess(&healthy, 10.0);
        assert_eq!((assessment.level, assessment.kind), (Healthy, "storage"));
        assert_eq!(assessment.used_percent, 25.0);
    }

    #[test]
    fn a_realistic_7_0_answer_is_breached() {
        let figures = node_figures("BB9A", &parse_info(&[answers::V7])).unwrap();
        let assessment = assess(&figures, 10.0);
        assert_eq!(assessment.level, Breached);
        assert!(
            assessment.why.contains("60% eviction mark"),
            "{}",
            assessment.why
        );
    }

    #[test]
    fn the_worst_node_wins_by_level_then_headroom() {
        let named = |name: &str, used: f64| {
            let mut figures = v7(used, 60.0, 70.0);
            figures.node = name.into();
            assess(&figures, 10.0)
        };
        let worst_node = worst(vec![named("a", 20.0), named("b", 55.0), named("c", 52.0)]);
        assert_eq!(worst_node.map(|w| w.node), Some("b".into()));
        let stopped = worst(vec![named("a", 20.0), named("b", 55.0), named("c", 75.0)]);
        assert_eq!(
            stopped.map(|w| (w.node, w.level)),
            Some(("c".into(), StopWrites))
        );
        let tie = worst(vec![named("y", 20.0), named("x", 20.0)]);
        assert_eq!(tie.map(|w| w.node), Some("x".into()));
        assert_eq!(worst(Vec::new()), None);
    }

    #[test]
    fn projection_extrapolates_the_growth_rate() {
        // One point every 100 s: 1 point per 100 s; 10 points to go.
        let samples = [(0.0, 40.0), (100.0, 41.0), (200.0, 42.0), (300.0, 43.0)];
        let eta = seconds_to_mark(&samples, 53.0).unwrap();
        assert!((eta - 1000.0).abs() < 1e-6, "{eta}");
    }

    #[test]
    fn no_projection_without_growth_samples_or_headroom() {
        assert_eq!(seconds_to_mark(&[(0.0, 40.0)], 60.0), None);
        assert_eq!(seconds_to_mark(&[(0.0, 40.0), (0.0, 41.0)], 60.0), None);
        assert_eq!(seconds_to_mark(&[(0.0, 40.0), (60.0, 40.0)], 60.0), None);
        assert_eq!(seconds_to_mark(&[(0.0, 45.0), (60.0, 40.0)], 60.0), None);
        assert_eq!(seconds_to_mark(&[(0.0, 50.0), (60.0, 61.0)], 60.0), None);
        assert_eq!(seconds_to_mark(&[], 60.0), None);
    }
}
