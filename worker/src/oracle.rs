//! The oracle: a simple, obviously correct offline sessionizer that the engine's tests compare
//! against. Given every event at once (in any order) it computes the final sessions directly.
//!
//! It applies the same guards as the engine: malformed and over-`maxPageNumber` events are
//! dropped, an event with the id of an accepted event of the same key is a duplicate, and the
//! events of each key, sorted by (time, id), are cut into sessions wherever two consecutive
//! events are more than `gap` apart — so an event that falls between two sessions within `gap`
//! of both makes them one session (the bridging merge). The byte cap is applied in that sorted
//! order: an event whose session already holds `maxSessionBytes` is rejected and does not extend
//! the session.
//!
//! The engine's final result (see [`crate::session::final_sessions`]) equals the oracle's when
//! (1) no event arrives later than `allowedLateness` behind the watermark (the engine drops and
//! counts those; the oracle cannot, as that depends on arrival order), (2) duplicates carry the
//! same content as the original, and (3) either no session reaches `maxSessionBytes` or the
//! events arrive in event-time order (which events a full session rejects depends on the order
//! they arrive in). The oracle is test-support code: it must never be used on the hot path and
//! never grow engine-like shortcuts that would make it less obviously right.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::EngineConfig;
use crate::event::{Event, SmallString, decode, page_number_too_high};
use crate::session::{Session, SessionRecord};

/// What the oracle computed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OracleResult {
    /// Final sessions by id.
    pub sessions: BTreeMap<String, SessionRecord>,
    /// Undecodable inputs.
    pub malformed: u64,
    /// Pageviews over `maxPageNumber`.
    pub page_number_dropped: u64,
    /// Repeated event ids.
    pub duplicates: u64,
    /// Events rejected by the byte cap.
    pub over_byte_cap: u64,
}

/// How the final sessions `got` (read from a sink) differ from `want` (the oracle's), `None`
/// when they are equal: counts of missing, unexpected and different sessions — what a test or
/// benchmark reports when a run does not match.
pub fn difference(
    got: &BTreeMap<String, SessionRecord>,
    want: &BTreeMap<String, SessionRecord>,
) -> Option<String> {
    if got == want {
        return None;
    }
    let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
    let differ = want
        .iter()
        .filter(|(k, w)| got.get(*k).is_some_and(|g| g != *w))
        .count();
    Some(format!(
        "{} sessions, want {}: {missing} missing, {extra} unexpected, {differ} different",
        got.len(),
        want.len()
    ))
}

/// Sessionizes a complete set of raw events.
pub fn sessionize<'a>(
    inputs: impl IntoIterator<Item = &'a [u8]>,
    config: &EngineConfig,
) -> OracleResult {
    let mut result = OracleResult::default();
    let mut by_key: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for raw in inputs {
        let Ok(event) = decode(raw, &config.fields) else {
            result.malformed += 1;
            continue;
        };
        if page_number_too_high(&event, config.max_page_number) {
            result.page_number_dropped += 1;
            continue;
        }
        by_key.entry(event.key.to_string()).or_default().push(event);
    }
    for (_, mut events) in by_key {
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let mut current: Option<Session> = None;
        // Ids of accepted events: a repeat of a rejected event is rejected again, not a duplicate.
        let mut accepted: BTreeSet<SmallString> = BTreeSet::new();
        for event in events {
            if accepted.contains(&event.id) {
                result.duplicates += 1;
                continue;
            }
            match current.as_mut() {
                Some(s) if event.time - s.end() <= config.gap_ms => {
                    if s.bytes() >= config.max_session_bytes {
                        result.over_byte_cap += 1;
                    } else {
                        accepted.insert(event.id.clone());
                        s.add(event);
                    }
                }
                _ => {
                    accepted.insert(event.id.clone());
                    if let Some(done) = current.replace(Session::from_event(event)) {
                        let record = done.record();
                        result.sessions.insert(record.session_id.clone(), record);
                    }
                }
            }
        }
        if let Some(done) = current {
            let record = done.record();
            result.sessions.insert(record.session_id.clone(), record);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, version: u64) -> (String, SessionRecord) {
        let mut r = SessionRecord::tombstone("u", id, version, "x");
        r.deleted = false;
        (id.to_owned(), r)
    }

    #[test]
    fn difference_counts_missing_unexpected_and_different_sessions() {
        let want = BTreeMap::from([record("a", 1), record("b", 1), record("c", 1)]);
        assert_eq!(difference(&want, &want), None);
        let got = BTreeMap::from([record("a", 1), record("b", 2), record("d", 1)]);
        assert_eq!(
            difference(&got, &want).as_deref(),
            Some("3 sessions, want 3: 1 missing, 1 unexpected, 1 different")
        );
    }
}
