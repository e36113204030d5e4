//! The closed sessions of one key, as the history store keeps them and as the engine works on
//! them: a list of segments, each a small header (id, span, size) and the session's own
//! compressed body.
//!
//! A key's history value is read and rewritten every time one of its sessions closes or a late
//! event reaches it, but almost always only one session of the list changes. Keeping each
//! session in its own segment means that only the segments an event can touch are ever decoded
//! (the header says which), and that an unchanged session is written back as the very bytes that
//! were read — compressed once, when it closed, instead of the whole list being decoded,
//! re-encoded and recompressed on every close.
//!
//! Value format 2: `SZS2` followed by MessagePack `{"v":2,"sessions":[{"id","start","end",
//! "bytes","body"}]}`, where `body` is the session (MessagePack, field names kept) framed and
//! compressed by [`Codec`]. Values of format 1 (the JSON list of
//! [`crate::session::HistoryValue`]) are still read; they are rewritten in format 2 at their
//! next write. This module must never decode a segment an operation does not need, nor write a
//! segment whose session changed with its old bytes.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::history::{Codec, HistoryError};
use crate::session::{HistoryValue, Session, SessionRecord};

/// First bytes of a format-2 value (a format-1 value is JSON and starts with `{`).
const MAGIC: &[u8] = b"SZS2";
const FORMAT: u32 = 2;
/// A thread's encoding buffer is given back to the allocator when a session grew it beyond this.
const SCRATCH_KEPT: usize = 1 << 20;

thread_local! {
    /// The uncompressed encoding of the session being compressed: one buffer per thread, so
    /// encoding a session allocates only its compressed body.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One closed session.
#[derive(Clone, Debug)]
struct Segment {
    id: String,
    start: i64,
    end: i64,
    bytes: u64,
    /// The body as read (a slice of the value it was read from), while the session is unchanged
    /// since.
    body: Option<Bytes>,
    /// The session, once decoded (or since it was added). Shared, so that a copy of the list
    /// (a late event works on a copy of its key's pending buffer) does not copy every session:
    /// only one taken out to be merged is copied, and only while another list still holds it.
    session: Option<Arc<Session>>,
}

impl Segment {
    fn of(session: Session) -> Self {
        let id = session.id();
        Self::identified(session, id)
    }

    /// A segment of `session`, whose id ([`Session::id`]) is `id`.
    fn identified(session: Session, id: String) -> Self {
        debug_assert_eq!(id, session.id());
        Self {
            id,
            start: session.start(),
            end: session.end(),
            bytes: session.bytes(),
            body: None,
            session: Some(Arc::new(session)),
        }
    }

    /// The decoded session (decoded now, and kept, if it was not yet); a handle, so the
    /// segment stays free to change while the caller reads it.
    fn session(&mut self, key: &str) -> Result<Arc<Session>, HistoryError> {
        let session = match self.session.take() {
            Some(session) => session,
            None => Arc::new(self.decoded(key)?),
        };
        Ok(Arc::clone(self.session.insert(session)))
    }

    /// The session, decoding a copy if it was not decoded yet.
    fn decoded(&self, key: &str) -> Result<Session, HistoryError> {
        if let Some(session) = &self.session {
            return Ok(Session::clone(session));
        }
        let body = self
            .body
            .as_ref()
            .ok_or_else(|| corrupt(key, String::from("a segment without a body")))?;
        let raw = Codec::uncompressed().decode(key, body)?;
        rmp_serde::from_slice(&raw).map_err(|e| corrupt(key, format!("session {}: {e}", self.id)))
    }

    fn touches(&self, t: i64, gap: i64) -> bool {
        t >= self.start.saturating_sub(gap) && t <= self.end.saturating_add(gap)
    }
}

/// The stored form of a segment (borrowed when written).
#[derive(Serialize, Deserialize)]
struct Stored<I, B> {
    id: I,
    start: i64,
    end: i64,
    bytes: u64,
    body: B,
}

#[derive(Serialize, Deserialize)]
struct Value<S> {
    v: u32,
    sessions: Vec<S>,
}

/// A session's body: the session (MessagePack, field names kept) framed and compressed by `codec`.
fn encode_session(
    key: &str,
    id: &str,
    session: &Session,
    codec: &Codec,
) -> Result<Vec<u8>, HistoryError> {
    let failed = |e: rmp_serde::encode::Error| corrupt(key, format!("encoding session {id}: {e}"));
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut raw) => {
            raw.clear();
            rmp_serde::encode::write_named(&mut *raw, session).map_err(failed)?;
            let body = codec.encode(key, &raw);
            if raw.capacity() > SCRATCH_KEPT {
                *raw = Vec::new();
            }
            body
        }
        // Only a re-entrant call (none exists) finds it taken.
        Err(_) => codec.encode(key, &rmp_serde::to_vec_named(session).map_err(failed)?),
    })
}

fn corrupt(key: &str, message: String) -> HistoryError {
    HistoryError::Corrupt {
        key: key.to_owned(),
        message,
    }
}

/// The closed sessions of one key. A clone shares the decoded sessions and the bodies of the
/// original (reference-counted): cloning a list is cheap, and so is dropping a clone.
#[derive(Clone, Debug, Default)]
pub struct ClosedSessions {
    segments: Vec<Segment>,
}

impl ClosedSessions {
    /// A list of decoded sessions.
    pub fn from_sessions(sessions: Vec<Session>) -> Self {
        Self {
            segments: sessions.into_iter().map(Segment::of).collect(),
        }
    }

    /// Reads a history value (format 2, or format 1) stored under `key`; the segments' bodies
    /// stay slices of `value`, never copied.
    pub fn decode(key: &str, value: Bytes) -> Result<Self, HistoryError> {
        let Some(rest) = value.strip_prefix(MAGIC) else {
            let sessions = HistoryValue::decode(&value).map_err(|e| corrupt(key, e.to_string()))?;
            return Ok(Self::from_sessions(sessions));
        };
        let stored: Value<Stored<String, &serde_bytes::Bytes>> =
            rmp_serde::from_slice(rest).map_err(|e| corrupt(key, e.to_string()))?;
        if stored.v != FORMAT {
            return Err(corrupt(key, format!("unknown history format {}", stored.v)));
        }
        let segments = stored
            .sessions
            .into_iter()
            .map(|s| Segment {
                id: s.id,
                start: s.start,
                end: s.end,
                bytes: s.bytes,
                body: Some(value.slice_ref(s.body)),
                session: None,
            })
            .collect();
        Ok(Self { segments })
    }

    /// The value to store under `key`: unchanged sessions keep their bytes, the others are
    /// encoded and compressed with `codec` (and keep those bytes for the next write).
    pub fn encode(&mut self, key: &str, codec: &Codec) -> Result<Vec<u8>, HistoryError> {
        for segment in &mut self.segments {
            if segment.body.is_none() {
                let session = segment.session(key)?;
                let body = encode_session(key, &segment.id, &session, codec)?;
                segment.body = Some(Bytes::from(body));
            }
        }
        let value = Value {
            v: FORMAT,
            sessions: self
                .segments
                .iter()
                .map(|s| Stored {
                    id: s.id.as_str(),
                    start: s.start,
                    end: s.end,
                    bytes: s.bytes,
                    body: serde_bytes::Bytes::new(s.body.as_deref().unwrap_or_default()),
                })
                .collect(),
        };
        // The bodies, plus each segment's header (its id and four small fields, named).
        let mut out = Vec::with_capacity(MAGIC.len() + 16 + self.stored_bytes());
        out.extend_from_slice(MAGIC);
        rmp_serde::encode::write_named(&mut out, &value)
            .map_err(|e| corrupt(key, format!("encoding: {e}")))?;
        Ok(out)
    }

    /// About what the list takes as stored: its bodies and segment headers.
    fn stored_bytes(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.body.as_ref().map_or(0, Bytes::len) + s.id.len() + 64)
            .sum()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether a session holds event `id` of time `t` (only sessions whose span holds `t` can,
    /// and only those are decoded).
    pub fn contains_event(&mut self, key: &str, id: &str, t: i64) -> Result<bool, HistoryError> {
        for segment in &mut self.segments {
            if segment.touches(t, 0) && segment.session(key)?.events.contains_key(id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Total size of the sessions an event at `t` would belong to.
    pub fn touching_bytes(&self, t: i64, gap: i64) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.touches(t, gap))
            .map(|s| s.bytes)
            .sum()
    }

    /// Removes and returns the sessions within `gap` of `session`.
    pub fn drain_touching(
        &mut self,
        key: &str,
        session: &Session,
        gap: i64,
    ) -> Result<Vec<Session>, HistoryError> {
        let (touching, rest): (Vec<Segment>, Vec<Segment>) = std::mem::take(&mut self.segments)
            .into_iter()
            .partition(|s| {
                session.start() <= s.end.saturating_add(gap)
                    && s.start <= session.end().saturating_add(gap)
            });
        self.segments = rest;
        touching
            .into_iter()
            .map(|mut s| match s.session.take() {
                Some(session) => Ok(Arc::try_unwrap(session).unwrap_or_else(|shared| {
                    // Another copy of the list still holds it.
                    Session::clone(&shared)
                })),
                None => s.decoded(key),
            })
            .collect()
    }

    /// Adds a session.
    pub fn push(&mut self, session: Session) {
        self.segments.push(Segment::of(session));
    }

    /// Adds a session whose id ([`Session::id`], a hash) the caller has already computed.
    pub fn push_identified(&mut self, session: Session, id: String) {
        self.segments.push(Segment::identified(session, id));
    }

    /// Drops sessions no event can reach any more (`end + gap < watermark − allowedLateness`),
    /// except those whose id is in `dirty` (their pending update is not emitted yet).
    pub fn prune(
        &mut self,
        dirty: &BTreeSet<String>,
        watermark: Option<i64>,
        gap: i64,
        lateness: i64,
    ) {
        if let Some(wm) = watermark {
            self.segments.retain(|s| {
                s.end.saturating_add(gap).saturating_add(lateness) >= wm || dirty.contains(&s.id)
            });
        }
    }

    /// The current records of the sessions whose id is in `ids`.
    pub fn records(
        &mut self,
        key: &str,
        ids: &BTreeSet<String>,
    ) -> Result<Vec<SessionRecord>, HistoryError> {
        let mut out = Vec::new();
        for segment in &mut self.segments {
            if ids.contains(&segment.id) {
                out.push(segment.session(key)?.record());
            }
        }
        Ok(out)
    }

    /// Every session, decoded.
    pub fn sessions(&self, key: &str) -> Result<Vec<Session>, HistoryError> {
        self.segments.iter().map(|s| s.decoded(key)).collect()
    }
}

/// Checkpoints and test snapshots hold the sessions themselves.
impl Serialize for ClosedSessions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.sessions("")
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ClosedSessions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Session>::deserialize(deserializer).map(Self::from_sessions)
    }
}

impl PartialEq for ClosedSessions {
    fn eq(&self, other: &Self) -> bool {
        matches!((self.sessions(""), other.sessions("")), (Ok(a), Ok(b)) if a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FieldNames, decode};

    fn session(key: &str, events: &[(&str, i64)]) -> Session {
        let mut s = Session::default();
        for (id, t) in events {
            let raw = format!(
                r#"{{"eventId":"{id}","userId":"{key}","timestamp":{t},"type":"pageview","campaign":"c-{id}"}}"#
            );
            let event = decode(raw.as_bytes(), &FieldNames::default()).unwrap();
            if s.events.is_empty() {
                s = Session::from_event(event);
            } else {
                s.add(event);
            }
        }
        s
    }

    fn three() -> Vec<Session> {
        vec![
            session("u", &[("a1", 1_000), ("a2", 2_000)]),
            session("u", &[("b1", 100_000)]),
            session("u", &[("c1", 200_000), ("c2", 201_000)]),
        ]
    }

    #[test]
    fn round_trips_and_rewrites_unchanged_sessions_byte_for_byte() {
        let mut closed = ClosedSessions::from_sessions(three());
        let stored = closed.encode("k", &Codec::zstd(3)).unwrap();
        let stored = Bytes::from(stored);
        let mut read = ClosedSessions::decode("k", stored.clone()).unwrap();
        assert!(
            read.segments.iter().all(|s| s.session.is_none()),
            "nothing decoded yet"
        );
        let value = stored.as_ptr_range();
        assert!(
            read.segments.iter().all(|s| {
                let body = s.body.as_ref().unwrap().as_ptr_range();
                value.start <= body.start && body.end <= value.end
            }),
            "the bodies are slices of the value read, not copies"
        );
        assert_eq!(read.sessions("k").unwrap(), three());
        assert_eq!(read.encode("k", &Codec::zstd(3)).unwrap(), stored);
        assert!(
            read.segments.iter().all(|s| s.session.is_none()),
            "still nothing decoded"
        );
    }

    #[test]
    fn only_the_segments_an_event_touches_are_decoded() {
        let stored = ClosedSessions::from_sessions(three())
            .encode("k", &Codec::zstd(3))
            .unwrap();
        let mut read = ClosedSessions::decode("k", stored.clone().into()).unwrap();
        assert!(read.contains_event("k", "b1", 100_000).unwrap());
        assert!(!read.contains_event("k", "b9", 100_000).unwrap());
        let decoded: Vec<bool> = read.segments.iter().map(|s| s.session.is_some()).collect();
        assert_eq!(decoded, vec![false, true, false]);
        assert_eq!(read.touching_bytes(120_000, 30_000), read.segments[1].bytes);

        let probe = session("u", &[("x", 3_000)]);
        let drained = read.drain_touching("k", &probe, 10_000).unwrap();
        assert_eq!(drained, vec![three()[0].clone()]);
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn a_changed_session_is_written_anew() {
        let stored = ClosedSessions::from_sessions(three())
            .encode("k", &Codec::zstd(3))
            .unwrap();
        let mut read = ClosedSessions::decode("k", stored.clone().into()).unwrap();
        let probe = session("u", &[("c3", 202_000)]);
        let mut merged = probe.clone();
        for s in read.drain_touching("k", &probe, 1_000).unwrap() {
            merged.absorb(s);
        }
        read.push(merged.clone());
        let again = read.encode("k", &Codec::zstd(3)).unwrap();
        let sessions = ClosedSessions::decode("k", again.clone().into())
            .unwrap()
            .sessions("k")
            .unwrap();
        assert_eq!(
            sessions,
            vec![three()[0].clone(), three()[1].clone(), merged]
        );
    }

    #[test]
    fn a_copy_shares_its_sessions_and_draining_it_leaves_the_original_whole() {
        let mut original = ClosedSessions::from_sessions(three());
        let mut copy = original.clone();
        assert!(
            original
                .segments
                .iter()
                .zip(&copy.segments)
                .all(|(a, b)| Arc::ptr_eq(
                    a.session.as_ref().unwrap(),
                    b.session.as_ref().unwrap()
                )),
            "a copy shares the decoded sessions instead of copying them"
        );
        let probe = session("u", &[("b2", 101_000)]);
        let drained = copy.drain_touching("k", &probe, 10_000).unwrap();
        assert_eq!(drained, vec![three()[1].clone()]);
        assert_eq!(copy.len(), 2);
        assert_eq!(
            original.sessions("k").unwrap(),
            three(),
            "the original keeps what the copy gave away"
        );
        drop(copy);
        let probe = session("u", &[("c3", 202_000)]);
        let drained = original.drain_touching("k", &probe, 10_000).unwrap();
        assert_eq!(
            drained,
            vec![three()[2].clone()],
            "no other list holds it now"
        );
    }

    #[test]
    fn format_1_values_are_read() {
        let v1 = HistoryValue::encode(&three()).unwrap();
        let read = ClosedSessions::decode("k", v1.clone().into()).unwrap();
        assert_eq!(read.sessions("k").unwrap(), three());
    }

    #[test]
    fn prune_keeps_reachable_and_dirty_sessions() {
        let mut closed = ClosedSessions::from_sessions(three());
        let dirty = BTreeSet::from([three()[0].id()]);
        // Reachable: end + 1_000 + 50_000 >= 205_000, i.e. end >= 154_000.
        closed.prune(&dirty, Some(205_000), 1_000, 50_000);
        let sessions = closed.sessions("k").unwrap();
        assert_eq!(sessions, vec![three()[0].clone(), three()[2].clone()]);
    }

    #[test]
    fn garbage_and_future_formats_are_corrupt() {
        let mut future = ClosedSessions::from_sessions(three())
            .encode("k", &Codec::zstd(3))
            .unwrap();
        // The fixmap header, then "v" and its value: 2 → 9.
        let at = future.windows(2).position(|w| w == [0xa1, b'v']).unwrap() + 2;
        future[at] = 9;
        for value in [b"SZS2\xff\xff".to_vec(), b"not json".to_vec(), future] {
            let error = ClosedSessions::decode("user-1", value.clone().into()).unwrap_err();
            assert!(
                matches!(&error, HistoryError::Corrupt { key, .. } if key == "user-1"),
                "{error:?}"
            );
        }
    }
}
