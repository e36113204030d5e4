//! A session's state and the record emitted for it.
//!
//! A session is kept as the set of its events (id → time, kind, size) plus attributes merged
//! last-writer-wins. Every derived value (id, start, end, counts, version) is a function of that
//! set, and merging two sessions is a set union, so merging is commutative, associative and
//! idempotent: merging the same data twice (a replay after a restart, or a session that is both
//! in memory and in history) can never duplicate events (seed gotcha 6 avoided by construction).
//!
//! This module must never do I/O or read a clock.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{Event, EventKind, SmallString};

/// What a session keeps of one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Event time, epoch milliseconds.
    pub t: i64,
    /// Page view or async.
    pub k: EventKind,
    /// Raw size in bytes.
    pub b: u64,
}

/// One attribute value with the event that wrote it; the greatest `(t, event)` wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attr {
    /// The value.
    pub v: Value,
    /// Event time of the event that wrote it.
    pub t: i64,
    /// Id of the event that wrote it (breaks ties between events at the same time).
    pub e: SmallString,
}

impl Attr {
    fn wins_over(&self, other: &Attr) -> bool {
        other.loses_to(self.t, &self.e)
    }

    /// Whether a value written by event `e` at time `t` replaces this one.
    fn loses_to(&self, t: i64, e: &str) -> bool {
        (self.t, self.e.as_str()) < (t, e)
    }
}

/// A session: its key, its events and its merged attributes.
///
/// Its span and size are kept up to date as events arrive, because the engine asks for them on
/// every event (is this event within `gap`? is the session over the byte cap?) and a scan of the
/// events each time would make a long session quadratic. They are not stored: deserializing
/// recomputes them from the events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "SessionData")]
pub struct Session {
    /// The session key (user id).
    pub key: SmallString,
    /// Events by id. Change them only through [`Session::add`] and [`Session::absorb`], which
    /// keep the span and size in step.
    pub events: BTreeMap<SmallString, EventMeta>,
    /// Attributes, last writer (by event time, then event id) wins.
    pub attributes: BTreeMap<SmallString, Attr>,
    /// Ids under which (parts of) this session were emitted and not yet retired; any of them
    /// other than [`Session::id`] gets a tombstone when this session is next emitted.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub emitted_ids: BTreeSet<String>,
    /// Earliest and latest event time, when there are events.
    #[serde(skip)]
    span: Option<(i64, i64)>,
    /// Total raw size of the events.
    #[serde(skip)]
    total_bytes: u64,
}

/// The stored fields of a [`Session`].
#[derive(Deserialize)]
struct SessionData {
    key: SmallString,
    events: BTreeMap<SmallString, EventMeta>,
    attributes: BTreeMap<SmallString, Attr>,
    #[serde(default)]
    emitted_ids: BTreeSet<String>,
}

impl From<SessionData> for Session {
    fn from(data: SessionData) -> Self {
        let span = span_of(&data.events);
        let total_bytes = data.events.values().map(|m| m.b).sum();
        Session {
            key: data.key,
            events: data.events,
            attributes: data.attributes,
            emitted_ids: data.emitted_ids,
            span,
            total_bytes,
        }
    }
}

fn span_of(events: &BTreeMap<SmallString, EventMeta>) -> Option<(i64, i64)> {
    let start = events.values().map(|m| m.t).min()?;
    let end = events.values().map(|m| m.t).max()?;
    Some((start, end))
}

fn widen(span: Option<(i64, i64)>, t: i64) -> Option<(i64, i64)> {
    Some(match span {
        None => (t, t),
        Some((start, end)) => (start.min(t), end.max(t)),
    })
}

impl Session {
    /// A session of one event.
    pub fn from_event(event: Event) -> Self {
        let mut session = Session {
            key: event.key.clone(),
            ..Session::default()
        };
        session.add(event);
        session
    }

    /// Adds one event (a no-op for an id already present). The event is taken, so its id and
    /// attribute values move into the session instead of being copied.
    pub fn add(&mut self, event: Event) {
        let Event {
            id,
            time,
            kind,
            bytes,
            attributes,
            ..
        } = event;
        // One search of the events for both the dedup and the insertion.
        let Entry::Vacant(slot) = self.events.entry(id) else {
            return;
        };
        let id = slot.key();
        self.span = widen(self.span, time);
        self.total_bytes += bytes;
        for (name, value) in attributes {
            match self.attributes.get_mut(name.as_str()) {
                // Overwritten in place: most events of a session set the same attributes.
                Some(old) => {
                    if old.loses_to(time, id) {
                        old.v = value;
                        old.t = time;
                        old.e.clone_from(id);
                    }
                }
                None => {
                    let attr = Attr {
                        v: value,
                        t: time,
                        e: id.clone(),
                    };
                    self.attributes.insert(name, attr);
                }
            }
        }
        slot.insert(EventMeta {
            t: time,
            k: kind,
            b: bytes,
        });
    }

    fn put_attr(&mut self, name: SmallString, attr: Attr) {
        match self.attributes.entry(name) {
            Entry::Vacant(slot) => {
                slot.insert(attr);
            }
            Entry::Occupied(mut slot) => {
                if attr.wins_over(slot.get()) {
                    slot.insert(attr);
                }
            }
        }
    }

    /// Merges `other` into `self` (set union; idempotent). The smaller session is merged into
    /// the larger, so growing a session one event at a time stays linear.
    pub fn absorb(&mut self, mut other: Session) {
        if other.events.len() > self.events.len() {
            std::mem::swap(self, &mut other);
        }
        for (id, meta) in other.events {
            if let Entry::Vacant(slot) = self.events.entry(id) {
                self.span = widen(self.span, meta.t);
                self.total_bytes += meta.b;
                slot.insert(meta);
            }
        }
        for (name, attr) in other.attributes {
            self.put_attr(name, attr);
        }
        self.emitted_ids.extend(other.emitted_ids);
    }

    /// The earliest event, by (time, id).
    fn first(&self) -> Option<(i64, &str)> {
        self.events.iter().map(|(id, m)| (m.t, id.as_str())).min()
    }

    /// The deterministic session id: hex of the first 16 bytes of
    /// `sha256(key ␀ first-event-time ␀ first-event-id)`, where the first event is the earliest
    /// by (time, id). It depends only on the session's content, so a replay yields the same id.
    pub fn id(&self) -> String {
        let (t, e) = self.first().unwrap_or((0, ""));
        session_id(&self.key, t, e)
    }

    /// Event time of the first event.
    pub fn start(&self) -> i64 {
        self.span.map_or(0, |(start, _)| start)
    }

    /// Event time of the last event.
    pub fn end(&self) -> i64 {
        self.span.map_or(0, |(_, end)| end)
    }

    /// Total raw size of the session's events.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether an event at time `t` belongs to this session: within `gap` of its span.
    pub fn touches(&self, t: i64, gap: i64) -> bool {
        t >= self.start().saturating_sub(gap) && t <= self.end().saturating_add(gap)
    }

    /// Whether two sessions are within `gap` of each other (and so are one session).
    pub fn touches_session(&self, other: &Session, gap: i64) -> bool {
        other.start() <= self.end().saturating_add(gap)
            && self.start() <= other.end().saturating_add(gap)
    }

    /// The record emitted for this session's current state.
    pub fn record(&self) -> SessionRecord {
        let pageviews = self
            .events
            .values()
            .filter(|m| m.k == EventKind::Pageview)
            .count() as u64;
        let events = self.events.len() as u64;
        SessionRecord {
            session_id: self.id(),
            version: events,
            key: self.key.to_string(),
            deleted: false,
            merged_into: None,
            start: Some(self.start()),
            end: Some(self.end()),
            event_count: Some(events),
            pageview_count: Some(pageviews),
            async_event_count: Some(events - pageviews),
            bytes: Some(self.bytes()),
            attributes: Some(
                self.attributes
                    .iter()
                    .map(|(k, a)| (k.to_string(), a.v.clone()))
                    .collect(),
            ),
        }
    }
}

/// Computes a session id; see [`Session::id`].
pub fn session_id(key: &str, first_time: i64, first_event: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update([0u8]);
    hasher.update(itoa::Buffer::new().format(first_time).as_bytes());
    hasher.update([0u8]);
    hasher.update(first_event.as_bytes());
    let digest = hasher.finalize();
    hex::encode(&digest[..16])
}

/// The output record for one session version (JSON, camelCase), keyed by the session key.
///
/// Downstream computes the final sessions as: for each `sessionId` keep the record with the
/// highest `version`; drop ids whose latest record has `deleted: true`. Records with equal
/// `(sessionId, version)` are identical, so redelivery is harmless.
///
/// `version` is the number of distinct events the session holds. Sessions only ever grow, so
/// every update of an id has a higher version; a tombstone carries the event count of the
/// session the id was merged into, which is higher than any version the retired id had.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// Deterministic session id.
    pub session_id: String,
    /// Grows with every update of this id.
    pub version: u64,
    /// The session key (also the Kafka message key).
    pub key: String,
    /// `true` for a tombstone: this id was retired (merged into another session).
    #[serde(default)]
    pub deleted: bool,
    /// For a tombstone, the id of the session it was merged into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Event time of the first event (absent on tombstones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    /// Event time of the last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
    /// Number of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_count: Option<u64>,
    /// Number of page views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pageview_count: Option<u64>,
    /// Number of async events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_event_count: Option<u64>,
    /// Total raw size of the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Merged attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, Value>>,
}

impl SessionRecord {
    /// A tombstone retiring `session_id`, merged into `into`.
    pub fn tombstone(key: &str, session_id: &str, version: u64, into: &str) -> Self {
        SessionRecord {
            session_id: session_id.to_owned(),
            version,
            key: key.to_owned(),
            deleted: true,
            merged_into: Some(into.to_owned()),
            start: None,
            end: None,
            event_count: None,
            pageview_count: None,
            async_event_count: None,
            bytes: None,
            attributes: None,
        }
    }
}

/// Reduces a stream of records to the final sessions: latest version per id, tombstoned ids
/// dropped. This is the rule downstream consumers must apply.
pub fn final_sessions<'a>(
    records: impl IntoIterator<Item = &'a SessionRecord>,
) -> BTreeMap<String, SessionRecord> {
    let mut latest: BTreeMap<String, SessionRecord> = BTreeMap::new();
    for r in records {
        match latest.get(&r.session_id) {
            Some(old) if old.version >= r.version => {}
            _ => {
                latest.insert(r.session_id.clone(), r.clone());
            }
        }
    }
    latest.retain(|_, r| !r.deleted);
    latest
}

/// Format 1 of the history value stored under `<namespace>/<job>/<key group>/<session key>`,
/// still read (and rewritten in format 2, [`crate::engine::closed`], at the key's next write):
/// that key's closed sessions that late events can still reach
/// (`end + gap + allowedLateness ≥ watermark`), JSON-encoded (the backend compressed it) as
/// `{"v":1,"sessions":[{"key":…,"events":{"<eventId>":{"t":<ms>,"k":"p"|"a","b":<bytes>}},
/// "attributes":{"<name>":{"v":<value>,"t":<ms>,"e":"<eventId>"}},"emitted_ids":[…]}]}`.
/// The event ids double as the dedup window for late events. Every write carries the history TTL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryValue {
    /// Format version, 1.
    pub v: u32,
    /// Closed sessions.
    pub sessions: Vec<Session>,
}

impl HistoryValue {
    /// Encodes a value in format 1 (only tests write it: the engine writes format 2).
    #[cfg(test)]
    pub fn encode(sessions: &[Session]) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            v: u32,
            sessions: &'a [Session],
        }
        serde_json::to_vec(&Borrowed { v: 1, sessions })
    }

    /// Decodes a value.
    pub fn decode(bytes: &[u8]) -> Result<Vec<Session>, serde_json::Error> {
        serde_json::from_slice::<HistoryValue>(bytes).map(|v| v.sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FieldNames, decode};

    fn ev(id: &str, t: i64, extra: &str) -> Event {
        let raw = format!(
            r#"{{"eventId":"{id}","userId":"u","timestamp":{t},"type":"pageview"{extra}}}"#
        );
        decode(raw.as_bytes(), &FieldNames::default()).unwrap()
    }

    #[test]
    fn session_ids_are_pinned_sha256_prefixes() {
        // Downstream stores records by these ids: they must never change between releases.
        assert_eq!(
            session_id("user-1", 1_700_000_000_000, "e1"),
            "ead07321c7915ca98e03d81eb96eb229"
        );
        assert_eq!(session_id("u", -5, "x"), "f9bd4a22047274897fc768773042e39c");
    }

    #[test]
    fn merge_is_idempotent_and_commutative() {
        let mut a = Session::from_event(ev("a", 1, r#","x":1"#));
        let b = Session::from_event(ev("b", 2, r#","x":2"#));
        let mut b2 = b.clone();
        a.absorb(b.clone());
        let once = a.clone();
        a.absorb(b);
        assert_eq!(a, once);
        b2.absorb(Session::from_event(ev("a", 1, r#","x":1"#)));
        assert_eq!(b2, once);
        assert_eq!(once.record().attributes.unwrap()["x"], Value::from(2));
    }

    #[test]
    fn the_id_depends_on_the_first_event_only() {
        let mut a = Session::from_event(ev("b", 5, ""));
        let id_b = a.id();
        a.add(ev("c", 9, ""));
        assert_eq!(a.id(), id_b);
        a.add(ev("a", 3, ""));
        assert_ne!(a.id(), id_b);
        assert_eq!(a.id(), session_id("u", 3, "a"));
        assert_eq!(a.id().len(), 32);
    }

    #[test]
    fn final_sessions_keep_the_latest_version_and_drop_tombstones() {
        let s = Session::from_event(ev("a", 1, ""));
        let mut r1 = s.record();
        let mut r2 = r1.clone();
        r2.version = 2;
        r2.end = Some(9);
        let t = SessionRecord::tombstone("u", "other", 3, &r1.session_id);
        let mut other = r1.clone();
        other.session_id = "other".into();
        let f = final_sessions([&r2, &r1, &other, &t]);
        assert_eq!(f.len(), 1);
        r1 = f.values().next().unwrap().clone();
        assert_eq!(r1.end, Some(9));
    }

    #[test]
    fn history_values_round_trip() {
        let s = Session::from_event(ev("a", 1, r#","x":[1,2]"#));
        let bytes = HistoryValue::encode(std::slice::from_ref(&s)).unwrap();
        assert_eq!(HistoryValue::decode(&bytes).unwrap(), vec![s]);
    }
}
