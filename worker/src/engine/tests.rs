//! Tests of the engine: one per rule, then property tests against the oracle.

use std::ops::Range;
use std::time::Duration;

use proptest::prelude::*;
use sessionizer_crds::session_job::SinkMode;

use super::memory_history::MemoryHistory;
use super::watermark::combine;
use super::*;
use crate::history::HistoryStore;
use crate::oracle;
use crate::session::{SessionRecord, final_sessions};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn config() -> EngineConfig {
    EngineConfig {
        gap_ms: 30 * MIN,
        max_page_number: 300,
        max_session_bytes: 4 << 20,
        allowed_lateness_ms: 7 * DAY,
        late_update_interval_ms: MIN,
        max_out_of_orderness_ms: 5_000,
        idle_source_timeout_ms: MIN,
        slow_window_log_threshold: Duration::from_secs(60),
        history_ttl: Duration::from_secs(7 * 24 * 3600),
        history_prefix: "analytics/pageviews/".into(),
        fields: crate::event::FieldNames::default(),
        sink: SinkMode::Production,
        max_future_ms: None,
        history_codec: crate::history::Codec::zstd(3),
    }
}

fn pv(id: &str, user: &str, t: i64) -> Vec<u8> {
    format!(r#"{{"eventId":"{id}","userId":"{user}","timestamp":{t},"type":"pageview","pageNumber":1,"url":"/{id}"}}"#).into_bytes()
}

fn async_ev(id: &str, user: &str, t: i64) -> Vec<u8> {
    format!(
        r#"{{"eventId":"{id}","userId":"{user}","timestamp":{t},"type":"purchase","amount":3}}"#
    )
    .into_bytes()
}

struct Harness {
    kg: KeyGroup<MemoryHistory>,
    store: MemoryHistory,
    out: Vec<Output>,
}

impl Harness {
    fn new(config: EngineConfig) -> Self {
        let store = MemoryHistory::default();
        Self {
            kg: KeyGroup::new(0, config, store.clone()),
            store,
            out: Vec::new(),
        }
    }

    async fn feed(&mut self, raw: &[u8], now: i64) -> Vec<Output> {
        let out = self.kg.process(raw, now).await.unwrap();
        self.out.extend(out.clone());
        out
    }

    async fn tick(&mut self, now: i64) -> Vec<Output> {
        let out = self.kg.tick(now).await.unwrap();
        self.out.extend(out.clone());
        out
    }

    async fn finish(&mut self) {
        let out = self.kg.finish().await.unwrap();
        self.out.extend(out);
    }

    fn records(&self) -> Vec<SessionRecord> {
        records(&self.out)
    }

    fn finals(&self) -> Vec<SessionRecord> {
        final_sessions(&self.records()).into_values().collect()
    }
}

fn records(out: &[Output]) -> Vec<SessionRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::Session { record, .. } => Some(record.clone()),
            Output::Quarantine(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn a_gap_longer_than_the_gap_splits_sessions() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("b", "u", 10 * MIN), 1).await;
    h.feed(&pv("c", "u", 50 * MIN), 2).await;
    assert_eq!(
        h.records().len(),
        1,
        "the watermark (50m − 5s) passed 10m + gap"
    );
    h.feed(&pv("z", "other", 5 * HOUR), 3).await;
    let mut finals = h.finals();
    finals.sort_by_key(|r| r.start);
    assert_eq!(finals.len(), 2);
    assert_eq!((finals[0].start, finals[0].end), (Some(0), Some(10 * MIN)));
    assert_eq!(finals[0].event_count, Some(2));
    assert_eq!(finals[0].version, 2);
    assert_eq!(finals[1].event_count, Some(1));
    assert_eq!(h.kg.counters().sessions_closed, 2);
    assert_eq!(h.kg.open_sessions(), 1, "only `other` is still open");
}

#[tokio::test]
async fn an_on_time_event_between_two_open_sessions_merges_them() {
    // A wide out-of-orderness bound keeps both sessions open while the bridging event is on time.
    let config = EngineConfig {
        max_out_of_orderness_ms: 2 * HOUR,
        ..config()
    };
    let mut h = Harness::new(config.clone());
    let inputs = [
        pv("a", "u", 0),
        pv("b", "u", 40 * MIN),
        pv("c", "u", 20 * MIN),
    ];
    h.feed(&inputs[0], 0).await;
    h.feed(&inputs[1], 1).await;
    assert_eq!(h.kg.open_sessions(), 2, "a and b are more than gap apart");
    h.feed(&inputs[2], 2).await;
    assert_eq!(h.kg.open_sessions(), 1, "c bridged a and b");
    assert!(h.records().is_empty(), "nothing closed yet");
    h.finish().await;
    let fed: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    assert_eq!(h.finals(), oracle_for("u", &fed, &config));
    assert_eq!(h.finals()[0].event_count, Some(3));
}

#[tokio::test]
async fn events_exactly_gap_apart_are_one_session() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("b", "u", 30 * MIN), 1).await;
    h.feed(&pv("c", "u", 60 * MIN + 1), 2).await;
    h.finish().await;
    let mut finals = h.finals();
    finals.sort_by_key(|r| r.start);
    assert_eq!(finals.len(), 2);
    assert_eq!(finals[0].event_count, Some(2));
}

#[tokio::test]
async fn out_of_order_events_within_the_bound_join_the_open_session() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 10_000), 0).await;
    h.feed(&pv("b", "u", 7_000), 1).await;
    h.feed(&pv("c", "u", 20 * MIN), 2).await;
    h.feed(&pv("d", "u", 5 * MIN), 3).await;
    h.finish().await;
    let finals = h.finals();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].event_count, Some(4));
    assert_eq!(finals[0].start, Some(7_000));
    assert_eq!(h.kg.counters().late_merged, 0);
}

#[tokio::test]
async fn the_watermark_closes_a_session_once_it_passes_end_plus_gap() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    // Watermark = 30m + 5s − 5s = end + gap: not past it yet.
    h.feed(&pv("b", "v", 30 * MIN + 5_000), 1).await;
    assert!(h.records().is_empty());
    let out = h.feed(&pv("c", "v", 30 * MIN + 5_001), 2).await;
    let closed = records(&out);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].key, "u");
    assert_eq!(h.store.len(), 1, "the closed session moved to history");
    assert_eq!(h.kg.snapshot().open.get("u"), None, "and left memory");
    assert!(matches!(
        out[0],
        Output::Session {
            sink: SinkMode::Production,
            ..
        }
    ));
}

#[tokio::test]
async fn a_timer_left_early_by_a_growing_session_is_rearmed_without_reading_history() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    // The session grows to end at 20m: its true deadline is 50m, its timer stays at 30m.
    h.feed(&pv("b", "u", 20 * MIN), 1).await;
    // Watermark 30m + 1: past the timer, not past the session.
    h.feed(&pv("c", "v", 30 * MIN + 5_001), 2).await;
    assert!(h.records().is_empty(), "{:?}", h.records());
    assert_eq!(
        h.store.reads(),
        0,
        "no history is read for a key that is not due"
    );
    let state = h.kg.snapshot();
    assert_eq!(state.meta["u"].deadline, 50 * MIN);
    assert!(state.timers.contains(&(50 * MIN, "u".into())));
    assert_eq!(state.timers.len(), 2, "{:?}", state.timers);
    // Watermark 50m + 1: now it closes, with both events.
    let out = h.feed(&pv("d", "v", 50 * MIN + 5_001), 3).await;
    let closed = records(&out);
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!((closed[0].key.as_str(), closed[0].version), ("u", 2));
}

#[tokio::test]
async fn late_events_update_a_closed_session_at_most_once_per_interval() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("x", "v", 2 * HOUR), 1_000).await;
    assert_eq!(h.records().len(), 1);
    // A lagging upstream: three late events within the session's span.
    for (i, id) in ["b", "c", "d"].iter().enumerate() {
        let out = h
            .feed(
                &async_ev(id, "u", 1_000 + i as i64),
                2_000 + i as i64 * 1_000,
            )
            .await;
        assert!(records(&out).is_empty(), "late updates are buffered");
    }
    assert!(records(&h.tick(2_000 + MIN - 1).await).is_empty());
    let out = records(&h.tick(2_000 + MIN).await);
    assert_eq!(out.len(), 1, "one update for three late events");
    assert_eq!(out[0].version, 4);
    assert_eq!(out[0].async_event_count, Some(3));
    assert_eq!(h.kg.counters().late_merged, 3);
    // The next late event starts a new interval.
    h.feed(&async_ev("e", "u", 5), 2_000 + MIN + 10).await;
    assert!(records(&h.tick(2_000 + 2 * MIN).await).is_empty());
    assert_eq!(records(&h.tick(2_000 + 2 * MIN + 10).await)[0].version, 5);
    assert_eq!(h.finals().len(), 1);
}

#[tokio::test]
async fn an_async_event_days_late_merges_into_history_and_a_too_late_one_is_dropped() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", HOUR), 0).await;
    h.feed(&pv("b", "u", HOUR + MIN), 1).await;
    h.feed(&pv("x", "v", 3 * DAY), 2).await;
    assert_eq!(h.records().len(), 1);
    h.feed(&async_ev("c", "u", HOUR + 30_000), 3).await;
    h.tick(3 + MIN).await;
    let finals = h.finals();
    let u = finals.iter().find(|r| r.key == "u").unwrap();
    assert_eq!((u.event_count, u.async_event_count), (Some(3), Some(1)));
    assert_eq!(u.attributes.as_ref().unwrap()["amount"], 3);
    // Beyond the allowed lateness (7 days behind the watermark).
    h.feed(&pv("y", "v", 11 * DAY), 4).await;
    h.feed(&async_ev("d", "u", HOUR + 40_000), 5).await;
    assert_eq!(h.kg.counters().too_late, 1);
}

#[tokio::test]
async fn a_late_event_bridging_two_closed_sessions_merges_them_and_retires_one_id() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("b", "u", 50 * MIN), 1).await;
    h.feed(&pv("x", "v", 5 * HOUR), 2).await;
    let closed = h.records();
    assert_eq!(closed.len(), 2);
    let first = closed
        .iter()
        .find(|r| r.start == Some(0))
        .unwrap()
        .session_id
        .clone();
    let second = closed
        .iter()
        .find(|r| r.start == Some(50 * MIN))
        .unwrap()
        .session_id
        .clone();
    h.feed(&pv("m", "u", 25 * MIN), 3).await;
    let out = records(&h.tick(3 + MIN).await);
    let tombstone = out.iter().find(|r| r.deleted).unwrap();
    assert_eq!(tombstone.session_id, second);
    assert_eq!(tombstone.merged_into.as_deref(), Some(first.as_str()));
    assert_eq!(tombstone.version, 3);
    let finals = h.finals();
    let u: Vec<_> = finals.iter().filter(|r| r.key == "u").collect();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].session_id, first);
    assert_eq!(
        (u[0].event_count, u[0].start, u[0].end),
        (Some(3), Some(0), Some(50 * MIN))
    );
    assert_eq!(h.kg.counters().tombstones, 1);
}

#[tokio::test]
async fn a_session_stops_accepting_events_at_the_byte_cap() {
    let event_bytes = pv("e0", "u", 1_000).len() as u64;
    let mut config = config();
    config.max_session_bytes = 3 * event_bytes;
    let mut h = Harness::new(config);
    for i in 0..5 {
        // Same-length timestamps, so every event has the same size.
        h.feed(&pv(&format!("e{i}"), "u", (i + 1) * 1_000), i).await;
    }
    assert_eq!(h.kg.counters().over_byte_cap, 2);
    assert_eq!(h.kg.snapshot().meta["u"].rejected_events, 2);
    assert_eq!(h.kg.snapshot().meta["u"].open_bytes, 3 * event_bytes);
    h.finish().await;
    assert_eq!(h.finals()[0].event_count, Some(3));
}

#[tokio::test]
async fn pageviews_over_the_page_limit_are_dropped_at_entry() {
    let mut h = Harness::new(config());
    let raw = br#"{"eventId":"a","userId":"u","timestamp":1,"type":"pageview","pageNumber":301}"#;
    let out = h.feed(raw, 0).await;
    assert!(
        matches!(&out[..], [Output::Quarantine(q)] if q.key.as_deref() == Some("u") && q.reason.contains("301"))
    );
    assert_eq!(h.kg.counters().page_number_dropped, 1);
    assert_eq!(h.kg.open_sessions(), 0);
    assert_eq!(
        h.kg.watermark(),
        None,
        "a dropped event does not move the watermark"
    );
    let ok = br#"{"eventId":"b","userId":"u","timestamp":1,"type":"pageview","pageNumber":300}"#;
    h.feed(ok, 1).await;
    assert_eq!(h.kg.open_sessions(), 1);
}

#[tokio::test]
async fn malformed_events_are_quarantined_with_a_reason() {
    let mut h = Harness::new(config());
    for raw in [
        &b"\xff\x00"[..],
        b"{}",
        b"null",
        br#"{"eventId":"a","userId":"u","timestamp":1.5,"type":"x"}"#,
    ] {
        let out = h.feed(raw, 0).await;
        assert!(
            matches!(&out[..], [Output::Quarantine(q)] if !q.reason.is_empty() && q.key.is_none())
        );
    }
    assert_eq!(h.kg.counters().malformed, 4);
    h.feed(&pv("a", "u", 0), 1).await;
    assert_eq!(h.kg.open_sessions(), 1, "and processing goes on");
}

#[tokio::test]
async fn duplicates_are_counted_once_in_open_and_closed_sessions() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("a", "u", 0), 1).await;
    h.feed(&pv("x", "v", 2 * HOUR), 2).await;
    h.feed(&pv("a", "u", 0), 3).await;
    h.tick(10 * MIN).await;
    assert_eq!(h.kg.counters().duplicates, 2);
    assert_eq!(
        h.kg.counters().late_updates,
        0,
        "a replayed event causes no update"
    );
    h.finish().await;
    let u: Vec<_> = h.finals().into_iter().filter(|r| r.key == "u").collect();
    assert_eq!(u[0].event_count, Some(1));
}

#[tokio::test]
async fn an_idle_key_group_closes_its_sessions_on_the_combined_watermark() {
    let config = config();
    let mut busy = Harness::new(config.clone());
    let mut idle = Harness::new(config);
    idle.feed(&pv("a", "u", 0), 0).await;
    busy.feed(&pv("b", "v", 2 * HOUR), 0).await;
    let now = 2 * MIN;
    let parts = [
        busy.kg.partition_watermark(now),
        idle.kg.partition_watermark(now),
    ];
    assert!(parts[1].idle);
    let wm = combine(&parts).unwrap();
    busy.feed(&pv("c", "v", 2 * HOUR + 1), now).await;
    let wm = wm.max(
        combine(&[
            busy.kg.partition_watermark(now),
            idle.kg.partition_watermark(now),
        ])
        .unwrap(),
    );
    let out = idle.kg.advance_watermark(wm, now).await.unwrap();
    assert_eq!(records(&out).len(), 1);
}

#[tokio::test]
async fn a_snapshot_round_trips_and_resumes_mid_stream() {
    let events: Vec<Vec<u8>> = vec![
        pv("a", "u", 0),
        pv("b", "w", 5 * MIN),
        pv("c", "u", 40 * MIN),
        pv("x", "v", 3 * HOUR),
        async_ev("d", "u", 10 * MIN),
        pv("e", "w", 3 * HOUR + 1),
        pv("f", "u", 3 * HOUR + 2),
    ];
    let mut straight = Harness::new(config());
    for (i, e) in events.iter().enumerate() {
        straight.feed(e, i as i64).await;
    }
    straight.finish().await;

    let mut first = Harness::new(config());
    for (i, e) in events.iter().enumerate().take(5) {
        first.feed(e, i as i64).await;
    }
    let state = first.kg.snapshot();
    assert!(
        !state.pending.is_empty(),
        "the snapshot holds a pending late update"
    );
    let json = serde_json::to_string(&state).unwrap();
    let back: KeyGroupState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    let mut second = Harness {
        kg: KeyGroup::restore(config(), first.store.clone(), back),
        store: first.store.clone(),
        out: first.out.clone(),
    };
    for (i, e) in events.iter().enumerate().skip(5) {
        second.feed(e, i as i64).await;
    }
    second.finish().await;
    assert_eq!(second.finals(), straight.finals());
}

#[tokio::test]
async fn a_replay_produces_the_same_records() {
    let events = [pv("a", "u", 0), pv("x", "v", 3 * HOUR), pv("b", "u", MIN)];
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut h = Harness::new(config());
        for (i, e) in events.iter().enumerate() {
            h.feed(e, i as i64).await;
        }
        h.finish().await;
        runs.push(h.out);
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test]
async fn history_values_carry_the_ttl_and_a_prefixed_key() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("x", "v", 2 * HOUR), 0).await;
    assert!(
        h.store
            .get("analytics/pageviews/u")
            .await
            .unwrap()
            .is_some()
    );
    h.store.set_now(7 * DAY);
    assert!(
        h.store
            .get("analytics/pageviews/u")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_late_event_bridging_a_closed_and_an_open_session_reopens_the_closed_one() {
    let mut h = Harness::new(config());
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("b", "u", 55 * MIN), 1).await;
    let closed = h.records();
    assert_eq!(closed.len(), 1, "the session at 0 closed");
    h.feed(&pv("m", "u", 28 * MIN), 2).await;
    assert_eq!(h.kg.open_sessions(), 1, "merged into the open session");
    assert!(
        h.kg.snapshot().pending.is_empty(),
        "no late update: it is open again"
    );
    h.feed(&pv("x", "v", 5 * HOUR), 3).await;
    let finals: Vec<_> = h.finals().into_iter().filter(|r| r.key == "u").collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0].session_id, closed[0].session_id,
        "the first event keeps the id"
    );
    assert_eq!((finals[0].version, finals[0].end), (3, Some(55 * MIN)));
    assert_eq!(h.kg.counters().tombstones, 0);
}

#[tokio::test]
async fn a_late_event_before_the_first_one_gives_the_session_a_new_id_and_retires_the_old() {
    let mut h = Harness::new(config());
    h.feed(&pv("b", "u", HOUR), 0).await;
    h.feed(&pv("x", "v", 5 * HOUR), 1).await;
    let old = h.records()[0].session_id.clone();
    h.feed(&pv("a", "u", HOUR - MIN), 2).await;
    let out = records(&h.tick(2 + MIN).await);
    assert_eq!(out.len(), 2);
    let tombstone = out.iter().find(|r| r.deleted).unwrap();
    assert_eq!(tombstone.session_id, old);
    let new = out.iter().find(|r| !r.deleted).unwrap();
    assert_eq!(tombstone.merged_into.as_ref(), Some(&new.session_id));
    assert_eq!(new.start, Some(HOUR - MIN));
    let finals: Vec<_> = h.finals().into_iter().filter(|r| r.key == "u").collect();
    assert_eq!(finals.len(), 1);
}

#[tokio::test]
async fn an_event_from_the_far_future_is_quarantined_and_moves_nothing() {
    let config = EngineConfig {
        max_future_ms: Some(DAY),
        ..config()
    };
    let mut kg = KeyGroup::new(0, config, MemoryHistory::default());
    let now = 10 * DAY;
    let out = kg.process(&pv("a", "u", now - HOUR), now).await.unwrap();
    assert!(out.is_empty());
    let out = kg
        .process(&pv("bad", "u", now + 2 * DAY), now)
        .await
        .unwrap();
    assert!(
        matches!(&out[..], [Output::Quarantine(q)] if q.reason.contains("ahead of processing time")),
        "{out:?}"
    );
    assert_eq!(kg.counters().future, 1);
    assert_eq!(
        kg.watermark(),
        Some(now - HOUR - 5_000),
        "the watermark did not move"
    );
    // Within the allowance it is an ordinary event.
    let out = kg.process(&pv("ok", "u", now + HOUR), now).await.unwrap();
    assert!(out.iter().all(|o| !matches!(o, Output::Quarantine(_))));
}

/// A short allowed lateness (2h), so that a watermark jump past `end + gap + allowedLateness`
/// fits in a small test.
fn short_lateness() -> EngineConfig {
    EngineConfig {
        allowed_lateness_ms: 2 * HOUR,
        ..config()
    }
}

fn oracle_for(key: &str, inputs: &[&[u8]], config: &EngineConfig) -> Vec<SessionRecord> {
    oracle::sessionize(inputs.iter().copied(), config)
        .sessions
        .into_values()
        .filter(|r| r.key == key)
        .collect()
}

/// The late update merges two closed sessions (a tombstone and a merged session wait in the
/// pending buffer); before `lateUpdateInterval` elapses the watermark jumps beyond
/// `end + gap + allowedLateness` and the key's next open session closes (`close` prunes). The
/// flush must still emit the merged session the tombstone points at. Once with a far-future
/// event, once with a pushed (combined) watermark.
#[tokio::test]
async fn a_watermark_jump_before_the_flush_keeps_a_pending_merge_when_a_session_closes() {
    for pushed in [false, true] {
        let config = short_lateness();
        let mut h = Harness::new(config.clone());
        let inputs = [
            pv("a", "u", 0),
            pv("b", "u", 50 * MIN),
            pv("x", "v", 2 * HOUR),
            pv("m", "u", 25 * MIN), // late: bridges the two closed sessions of u
            pv("c", "u", 2 * HOUR + 20 * MIN), // a new open session of u
            pv("far", "w", 10 * HOUR),
        ];
        for (i, raw) in inputs.iter().take(5).enumerate() {
            h.feed(raw, i as i64).await;
        }
        assert_eq!(h.records().len(), 2, "both sessions of u closed");
        assert_eq!(h.kg.snapshot().pending["u"].tombstones.len(), 1);
        // The watermark jumps far beyond 50m + gap + allowedLateness: u's open session closes.
        let out = if pushed {
            let out = h.kg.advance_watermark(10 * HOUR, 10).await.unwrap();
            h.out.extend(out.clone());
            out
        } else {
            h.feed(&inputs[5], 10).await
        };
        let closed = records(&out);
        assert_eq!(closed.len(), 2, "v's and u's open sessions closed");
        assert!(closed.iter().all(|r| !r.deleted));
        assert!(
            records(&h.tick(3 + MIN - 1).await).is_empty(),
            "not due yet"
        );
        let flushed = records(&h.tick(3 + MIN).await);
        let tombstone = flushed.iter().find(|r| r.deleted).unwrap();
        let merged = flushed.iter().find(|r| !r.deleted).expect("merged session");
        assert_eq!(tombstone.merged_into.as_ref(), Some(&merged.session_id));
        assert!(merged.version >= tombstone.version);
        assert_eq!(merged.event_count, Some(3));
        // History holds what the flush emitted.
        let stored = h.store.get("analytics/pageviews/u").await.unwrap().unwrap();
        let stored = super::closed::ClosedSessions::decode("u", stored.clone().into())
            .unwrap()
            .sessions("u")
            .unwrap();
        assert!(stored.iter().any(|s| s.record() == *merged));
        let fed: Vec<&[u8]> = inputs
            .iter()
            .take(if pushed { 5 } else { 6 })
            .map(Vec::as_slice)
            .collect();
        let u: Vec<_> = h.finals().into_iter().filter(|r| r.key == "u").collect();
        assert_eq!(u, oracle_for("u", &fed, &config), "pushed: {pushed}");
        h.finish().await;
        let all = oracle::sessionize(fed.iter().copied(), &config).sessions;
        assert_eq!(final_sessions(&h.records()), all, "pushed: {pushed}");
    }
}

/// The same loss through the late path of `accept`: a pending update (that gave a closed session
/// a new id and retired the old one) becomes unreachable by a watermark jump, then another late
/// event of the key updates a later closed session, and `accept` prunes the buffer.
#[tokio::test]
async fn a_watermark_jump_before_the_flush_keeps_a_pending_update_when_a_late_event_arrives() {
    let config = short_lateness();
    let mut h = Harness::new(config.clone());
    let inputs = [
        pv("a", "u", 10 * MIN),
        pv("x", "v", HOUR), // closes u's session at 10m
        pv("c", "u", HOUR + 10 * MIN),
        async_ev("b", "u", 5 * MIN), // late, before `a`: a new id, `a`'s id retired
        pv("y", "v", 2 * HOUR),      // closes u's session at 1h10m (the update stays pending)
        pv("z", "v", 3 * HOUR),      // the jump: 10m + gap + allowedLateness < 3h
        async_ev("d", "u", HOUR + 20 * MIN), // late, updates the session at 1h10m
    ];
    for (i, raw) in inputs.iter().enumerate() {
        h.feed(raw, i as i64).await;
    }
    assert_eq!(h.kg.counters().too_late, 0);
    assert_eq!(h.kg.counters().late_merged, 2);
    let flushed = records(&h.tick(3 + MIN).await);
    assert_eq!(flushed.len(), 3, "two updates and a tombstone: {flushed:?}");
    let fed: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let u: Vec<_> = h.finals().into_iter().filter(|r| r.key == "u").collect();
    assert_eq!(u, oracle_for("u", &fed, &config));
    h.finish().await;
    let all = oracle::sessionize(fed.iter().copied(), &config).sessions;
    assert_eq!(final_sessions(&h.records()), all);
}

/// A watermark jump while late updates are pending, then the end of input: `finish` closes the
/// open sessions (which prunes) before it flushes.
#[tokio::test]
async fn finish_after_a_watermark_jump_still_flushes_a_pending_merge() {
    let config = short_lateness();
    let mut h = Harness::new(config.clone());
    let inputs = [
        pv("a", "u", 0),
        pv("b", "u", 50 * MIN),
        pv("x", "v", 2 * HOUR),
        pv("m", "u", 25 * MIN),
        pv("c", "u", 9 * HOUR), // on time: watermark 9h, u stays open
    ];
    for (i, raw) in inputs.iter().enumerate() {
        h.feed(raw, i as i64).await;
    }
    h.finish().await;
    let fed: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let all = oracle::sessionize(fed.iter().copied(), &config).sessions;
    assert_eq!(final_sessions(&h.records()), all);
}

#[tokio::test]
async fn outputs_carry_the_effective_sink_mode() {
    let mut h = Harness::new(config());
    h.kg.set_sink(SinkMode::DeadLetter);
    h.feed(&pv("a", "u", 0), 0).await;
    h.feed(&pv("x", "v", 5 * HOUR), 1).await;
    assert!(matches!(
        h.out[..],
        [Output::Session {
            sink: SinkMode::DeadLetter,
            ..
        }]
    ));
}

#[test]
fn the_engine_configuration_comes_from_the_worker_configuration() {
    let config = EngineConfig::from_worker(&crate::config::tests::sample_config()).unwrap();
    assert_eq!(config.gap_ms, 30 * MIN);
    assert_eq!(config.max_page_number, 300);
    assert_eq!(config.max_session_bytes, 4 << 20);
    assert_eq!(config.late_update_interval_ms, MIN);
    assert_eq!(config.max_out_of_orderness_ms, 5_000);
    assert_eq!(
        config.allowed_lateness_ms,
        7 * DAY,
        "defaults to the history TTL"
    );
    assert_eq!(config.history_prefix, "analytics/pageviews/");
    assert_eq!(config.sink, SinkMode::Production);
}

/// A `MakeWriter` that collects log output.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_slow_close_is_logged_with_its_key_and_sizes() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut config = config();
    config.slow_window_log_threshold = Duration::ZERO;
    tracing::subscriber::with_default(subscriber, || {
        runtime().block_on(async {
            let mut h = Harness::new(config);
            h.feed(&pv("a", "u", 0), 0).await;
            h.feed(&pv("x", "v", 5 * HOUR), 1).await;
        });
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("slow session close"), "{text}");
    assert!(
        text.contains("key=u") && text.contains("events=1"),
        "{text}"
    );
}

/// Known limitation, not fixed here (it predates the pending-buffer fix): a crash replays events
/// from a snapshot against a history store that is not rolled back. If the watermark jumped past
/// `end + gap + allowedLateness` within the replayed range, `close` pruned a session from the
/// stored history value, so a replayed late event that originally merged into it now finds
/// nothing, starts a session of its own and emits it: downstream sees one extra session. A fix
/// needs the history value to record the watermark it was pruned at (a format change in
/// `crate::engine::closed`) so that a replay can recognise such events as already applied.
#[tokio::test]
#[ignore = "known limitation: a crash replay across a history prune splits a session"]
async fn a_replay_across_a_prune_of_history_splits_a_session() {
    let config = short_lateness();
    let store = MemoryHistory::default();
    let mut kg = KeyGroup::new(0, config.clone(), store.clone());
    let mut out = Vec::new();
    let before = [pv("a", "u", 0), pv("x", "v", HOUR)];
    for (i, raw) in before.iter().enumerate() {
        out.extend(kg.process(raw, i as i64).await.unwrap());
    }
    let snapshot = kg.snapshot();
    let after = [
        Input::Event(pv("b", "u", 10 * MIN)), // late: updates u's closed session
        Input::Tick(MIN),                     // flushed
        Input::Event(pv("c", "u", 3 * HOUR)),
        Input::Event(pv("far", "v", 10 * HOUR)), // closes c; the prune drops the session at 0
    ];
    let times: Vec<i64> = processing_times(&after).iter().map(|t| t + 2).collect();
    for (input, now) in after.iter().zip(&times) {
        out.extend(step(&mut kg, input, *now).await);
    }
    // Crash: restore the snapshot and replay.
    let mut kg = KeyGroup::restore(config.clone(), store, snapshot);
    for (input, now) in after.iter().zip(&times) {
        out.extend(step(&mut kg, input, *now).await);
    }
    out.extend(kg.finish().await.unwrap());
    let all = before
        .iter()
        .map(Vec::as_slice)
        .chain(after.iter().filter_map(Input::raw));
    let want = oracle::sessionize(all, &config).sessions;
    assert_eq!(final_sessions(&records(&out)), want);
}

// ---- Property tests -------------------------------------------------------------------------

#[derive(Clone)]
enum Input {
    Event(Vec<u8>),
    Garbage(Vec<u8>),
    /// Processing time moves on by this many ms (on top of the usual 1 s per input), then the
    /// caller ticks.
    Tick(i64),
    /// The caller pushes this (combined) watermark in.
    Advance(i64),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Event(r) | Input::Garbage(r) => write!(f, "{}", String::from_utf8_lossy(r)),
            Input::Tick(ms) => write!(f, "tick(+{ms}ms)"),
            Input::Advance(wm) => write!(f, "advance_watermark({wm})"),
        }
    }
}

impl Input {
    /// The record, for a record input.
    fn raw(&self) -> Option<&[u8]> {
        match self {
            Input::Event(r) | Input::Garbage(r) => Some(r),
            Input::Tick(_) | Input::Advance(_) => None,
        }
    }
}

/// One generated event: user, event time, async, page number, attribute value, arrival delay,
/// duplicated, duplicate's extra delay.
type GenEvent = (u8, i64, bool, i64, u8, i64, bool, i64);

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        0u8..4,                                               // user
        0i64..(8 * HOUR),                                     // event time
        prop::bool::weighted(0.3),                            // async
        1i64..306,                                            // page number
        0u8..3,                                               // attribute value
        prop_oneof![8 => 0i64..5_000, 2 => 0i64..(3 * HOUR)], // arrival delay
        prop::bool::weighted(0.1),                            // duplicated
        0i64..(2 * HOUR),                                     // duplicate's extra delay
    )
}

fn gen_garbage() -> impl Strategy<Value = Vec<(u8, i64)>> {
    prop::collection::vec((any::<u8>(), 0i64..(8 * HOUR)), 0..4)
}

/// The inputs in arrival order, event times and arrivals shifted by `base`, event ids
/// `<prefix><index>`.
fn arrivals(events: Vec<GenEvent>, garbage: Vec<(u8, i64)>, base: i64, prefix: &str) -> Vec<Input> {
    let mut arrivals: Vec<(i64, usize, Input)> = Vec::new();
    for (i, (user, t, is_async, page, attr, delay, dup, dup_delay)) in
        events.into_iter().enumerate()
    {
        let t = base + t;
        let kind = if is_async { "click" } else { "pageview" };
        let raw = format!(
            r#"{{"eventId":"{prefix}{i}","userId":"u{user}","timestamp":{t},"type":"{kind}","pageNumber":{page},"attr":{attr}}}"#
        )
        .into_bytes();
        if dup {
            arrivals.push((
                t + delay + dup_delay,
                arrivals.len(),
                Input::Event(raw.clone()),
            ));
        }
        arrivals.push((t + delay, arrivals.len(), Input::Event(raw)));
    }
    for (b, at) in garbage {
        let raw = if b % 2 == 0 {
            vec![b, b]
        } else {
            br#"{"eventId":"g"}"#.to_vec()
        };
        arrivals.push((base + at, arrivals.len(), Input::Garbage(raw)));
    }
    arrivals.sort_by_key(|(at, seq, _)| (*at, *seq));
    arrivals.into_iter().map(|(_, _, input)| input).collect()
}

/// A random multi-user stream in arrival order: events over 8 hours, most arriving within the
/// out-of-orderness bound, some minutes to hours late, some async, some duplicated (later), a
/// few over the page limit, and some malformed records.
fn stream() -> impl Strategy<Value = Vec<Input>> {
    (prop::collection::vec(gen_event(), 1..60), gen_garbage())
        .prop_map(|(events, garbage)| arrivals(events, garbage, 0, "e"))
}

/// Event time between two segments of [`jumpy_stream`]: more than 8h (a segment's span) + gap +
/// allowedLateness (7 days), so each segment's first event (or a pushed watermark) jumps the
/// watermark past every session of the segments before it.
const JUMP: i64 = 8 * DAY;

/// Up to four segments of [`stream`]-like traffic (same users), each [`JUMP`] later than the one
/// before. A jump comes either from the next segment's first events (a far-future event) or from
/// a pushed watermark (`advance_watermark`, as the combined watermark of an idle partition does)
/// landing up to an hour into the next segment; with `always_push` every segment after the first
/// starts with a pushed watermark. Ticks at random processing times are sprinkled in, so the
/// late updates of a segment are flushed before the jump in some runs and after it in others.
/// No event is ever too late, so the oracle still predicts the result.
///
/// Also returns, per segment, the range of inputs after its jump (its pushed watermark, if any).
fn jumpy_stream(always_push: bool) -> impl Strategy<Value = (Vec<Input>, Vec<Range<usize>>)> {
    let push = if always_push {
        (0i64..HOUR).prop_map(Some).boxed()
    } else {
        prop::option::of(0i64..HOUR).boxed()
    };
    let segment = (
        prop::collection::vec(gen_event(), 1..25),
        gen_garbage(),
        push, // pushed watermark, into the segment
        prop::collection::vec((any::<prop::sample::Index>(), 0i64..(2 * MIN)), 0..6), // ticks
    );
    prop::collection::vec(segment, 1..5).prop_map(|segments| {
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        for (k, (events, garbage, push, ticks)) in segments.into_iter().enumerate() {
            let base = k as i64 * JUMP;
            if let Some(into) = push.filter(|_| k > 0) {
                out.push(Input::Advance(base + into));
            }
            let mut inputs = arrivals(events, garbage, base, &format!("s{k}e"));
            for (at, delay) in ticks {
                let at = at.index(inputs.len() + 1);
                inputs.insert(at, Input::Tick(delay));
            }
            ranges.push(out.len()..out.len() + inputs.len());
            out.extend(inputs);
        }
        (out, ranges)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The processing time of each input: 1 s per input, plus every earlier tick's delay.
fn processing_times(inputs: &[Input]) -> Vec<i64> {
    let mut extra = 0;
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            if let Input::Tick(delay) = input {
                extra += delay;
            }
            i as i64 * 1_000 + extra
        })
        .collect()
}

async fn step(kg: &mut KeyGroup<MemoryHistory>, input: &Input, now: i64) -> Vec<Output> {
    match input {
        Input::Event(raw) | Input::Garbage(raw) => kg.process(raw, now).await.unwrap(),
        Input::Tick(_) => kg.tick(now).await.unwrap(),
        Input::Advance(watermark) => kg.advance_watermark(*watermark, now).await.unwrap(),
    }
}

/// Runs `inputs` through a key group, restarting from a snapshot taken before input `restart.0`
/// after input `restart.1` has been processed (outputs already produced stay produced; history
/// is not rolled back, as a real external store would not be).
async fn run_engine(
    config: &EngineConfig,
    inputs: &[Input],
    restart: Option<(usize, usize)>,
) -> (Vec<Output>, Counters) {
    let store = MemoryHistory::default();
    let mut kg = KeyGroup::new(0, config.clone(), store.clone());
    let times = processing_times(inputs);
    let mut out = Vec::new();
    let mut snapshot = String::new();
    for (i, input) in inputs.iter().enumerate() {
        if restart.is_some_and(|(at, _)| at == i) {
            snapshot = serde_json::to_string(&kg.snapshot()).unwrap();
        }
        out.extend(step(&mut kg, input, times[i]).await);
        if let Some((at, crash)) = restart
            && crash == i
        {
            // Crash: restore the snapshot and replay everything after it.
            let state = serde_json::from_str(&snapshot).unwrap();
            kg = KeyGroup::restore(config.clone(), store.clone(), state);
            for (j, input) in inputs.iter().enumerate().take(crash + 1).skip(at) {
                out.extend(step(&mut kg, input, times[j]).await);
            }
        }
    }
    out.extend(kg.finish().await.unwrap());
    (out, kg.counters().clone())
}

fn check(config: &EngineConfig, inputs: &[Input], restart: Option<(usize, usize)>) {
    let (out, counters) = runtime().block_on(run_engine(config, inputs, restart));
    let expected = oracle::sessionize(inputs.iter().filter_map(Input::raw), config);
    assert_eq!(
        counters.too_late, 0,
        "the generator stays within the allowed lateness"
    );
    let got = final_sessions(&records(&out));
    assert_eq!(got, expected.sessions);
    if restart.is_none() {
        assert_eq!(counters.malformed, expected.malformed);
        assert_eq!(counters.page_number_dropped, expected.page_number_dropped);
        assert_eq!(counters.duplicates, expected.duplicates);
        assert_eq!(counters.over_byte_cap, expected.over_byte_cap);
    }
    // Every id's versions only grow, and each (id, version) has one content.
    let mut seen: BTreeMap<(String, u64), SessionRecord> = BTreeMap::new();
    for r in records(&out) {
        if let Some(old) = seen.get(&(r.session_id.clone(), r.version)) {
            assert_eq!(old, &r, "one content per (id, version)");
        }
        seen.insert((r.session_id.clone(), r.version), r);
    }
    // Every tombstone's target is emitted (as a session or, merged on, as a tombstone) with a
    // version at least the tombstone's.
    for t in records(&out).iter().filter(|r| r.deleted) {
        let into = t.merged_into.as_ref().unwrap();
        assert!(
            records(&out)
                .iter()
                .any(|r| &r.session_id == into && r.version >= t.version),
            "the target of {t:?} is never emitted"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_oracle(inputs in stream()) {
        check(&config(), &inputs, None);
    }

    #[test]
    fn the_engine_agrees_with_the_oracle_across_a_restart(
        inputs in stream(),
        a in 0usize..100,
        b in 0usize..100,
    ) {
        let n = inputs.len();
        let at = a % n;
        let crash = at + b % (n - at);
        check(&config(), &inputs, Some((at, crash)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_fail(inputs in prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[{}\\[\\]\",:a-zA-Z0-9 -]{0,64}".prop_map(String::into_bytes),
        ],
        0..32,
    )) {
        runtime().block_on(async {
            let mut kg = KeyGroup::new(0, config(), MemoryHistory::default());
            for (i, raw) in inputs.iter().enumerate() {
                kg.process(raw, i as i64).await.unwrap();
            }
            kg.finish().await.unwrap();
        });
    }

    #[test]
    fn with_in_order_input_the_byte_cap_matches_the_oracle(
        mut inputs in stream(),
        cap in 100u64..600,
    ) {
        let mut config = config();
        config.max_session_bytes = cap;
        let time = |i: &Input| {
            i.raw()
                .and_then(|raw| crate::event::decode(raw, &config.fields).ok())
                .map_or(0, |e| e.time)
        };
        inputs.sort_by_key(time);
        check(&config, &inputs, None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_oracle_across_watermark_jumps(
        (inputs, _) in jumpy_stream(false),
    ) {
        check(&config(), &inputs, None);
    }

    /// The replayed range stays within one segment, after its jump: a replay across a jump is
    /// the known limitation of `a_replay_across_a_prune_of_history_splits_a_session`.
    #[test]
    fn the_engine_agrees_with_the_oracle_across_watermark_jumps_and_a_restart(
        (inputs, segments) in jumpy_stream(true),
        segment in any::<prop::sample::Index>(),
        a in 0usize..100,
        b in 0usize..100,
    ) {
        let range = segment.get(&segments);
        let n = range.len();
        let at = range.start + a % n;
        let crash = at + b % (range.end - at);
        check(&config(), &inputs, Some((at, crash)));
    }
}

#[test]
fn a_state_encodes_to_the_same_bytes_whatever_order_its_keys_arrived_in() {
    let keys: Vec<String> = (0..64).map(|i| format!("user-{i}")).collect();
    let state = |order: &mut dyn Iterator<Item = &String>| {
        let mut state = KeyGroupState::default();
        for key in order {
            state.open.insert(key.as_str().into(), Vec::new());
            let deadline = i64::try_from(key.len()).unwrap();
            let meta = KeyMeta {
                deadline,
                ..KeyMeta::default()
            };
            state.meta.insert(key.as_str().into(), meta);
            state
                .pending
                .insert(key.as_str().into(), PendingKey::default());
        }
        state
    };
    let forward = state(&mut keys.iter());
    let backward = state(&mut keys.iter().rev());
    assert_eq!(forward, backward);
    let bytes = |s: &KeyGroupState| rmp_serde::to_vec_named(s).unwrap();
    assert_eq!(bytes(&forward), bytes(&backward));
    let decoded: KeyGroupState = rmp_serde::from_slice(&bytes(&forward)).unwrap();
    assert_eq!(decoded, forward);
}

/// The stream loop's one output buffer: the `_into` steps append what the plain ones return, after
/// whatever the buffer already holds.
#[tokio::test]
async fn the_into_steps_append_what_the_plain_steps_return() {
    let inputs = [pv("a", "u", 0), pv("b", "u", MIN), pv("c", "v", 2 * MIN)];
    let later = pv("d", "w", 5 * HOUR);
    let mut plain = Harness::new(config());
    let mut want = Vec::new();
    for raw in inputs.iter().chain([&later]) {
        let decoded = plain.kg.decode(raw);
        want.extend(plain.kg.accept_decoded(decoded, raw, 0).await.unwrap());
        want.extend(plain.kg.tick(0).await.unwrap());
    }
    assert!(
        want.iter().any(|o| matches!(o, Output::Session { .. })),
        "the later event closes the earlier sessions: {want:?}"
    );

    let mut into = Harness::new(config());
    let marker = Output::Quarantine(Quarantine {
        reason: String::from("already in the buffer"),
        key: None,
        raw: String::new(),
    });
    let mut buffer = vec![marker.clone()];
    for raw in inputs.iter().chain([&later]) {
        let decoded = into.kg.decode(raw);
        into.kg
            .accept_decoded_into(decoded, raw, 0, &mut buffer)
            .await
            .unwrap();
        into.kg.tick_into(0, &mut buffer).await.unwrap();
    }
    assert_eq!(buffer[0], marker);
    assert_eq!(buffer[1..], want[..]);
}
