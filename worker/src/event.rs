//! Decoding of input events and the stateless guards that run before any state is touched
//! (seed gotcha 8: filter bad data as early as possible).
//!
//! Decoding is total: every byte string becomes either an [`Event`] or a [`Malformed`] reason.
//! This module must never panic on input and never look at state — what an event does to a
//! session is the engine's business.

use std::borrow::Cow;

use compact_str::CompactString;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Names of the fields the engine reads from an input event; everything else is a free-form
/// attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldNames {
    /// Unique id of the event (string). Default `eventId`.
    pub event_id: String,
    /// Session key (string), also the Kafka message key. Default `userId`.
    pub user_id: String,
    /// Event time in epoch milliseconds (integer). Default `timestamp`.
    pub timestamp: String,
    /// Event type (string): `pageview` is a sync page event, anything else async. Default `type`.
    pub kind: String,
    /// Page number of a pageview (integer, optional). Default `pageNumber`.
    pub page_number: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            event_id: "eventId".into(),
            user_id: "userId".into(),
            timestamp: "timestamp".into(),
            kind: "type".into(),
            page_number: "pageNumber".into(),
        }
    }
}

/// The value of the type field that marks a sync page event.
pub const PAGEVIEW: &str = "pageview";

/// Whether an event is a page view or an async event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A sync page event (`type` = `pageview`).
    #[serde(rename = "p")]
    Pageview,
    /// Any other event type.
    #[serde(rename = "a")]
    Async,
}

/// A string kept inline when it fits (24 bytes on 64-bit targets): event ids, session keys and
/// attribute names are decoded for every event and most are short, so they cost no allocation
/// (and a session's or a key map's entries no pointer to chase).
pub type SmallString = CompactString;

/// A decoded input event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique id.
    pub id: SmallString,
    /// Session key.
    pub key: SmallString,
    /// Event time, epoch milliseconds.
    pub time: i64,
    /// Page view or async.
    pub kind: EventKind,
    /// Page number, if the event has one.
    pub page_number: Option<i64>,
    /// Every other field of the event, sorted by name, each name once (a repeated name keeps
    /// its last value, as a JSON object would). A list, not a map: an event has a handful of
    /// attributes, and the engine only ever walks them.
    pub attributes: Vec<(SmallString, Value)>,
    /// Size of the raw event in bytes (what counts toward `maxSessionBytes`).
    pub bytes: u64,
}

/// Why an event could not be decoded; the reason goes to the quarantine output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not a JSON document.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(String),
    /// A field has the wrong type or an invalid value.
    #[error("invalid field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Decodes one raw event; never panics.
///
/// The fields are read straight off the JSON (one pass, the known fields picked out by name, the
/// rest going to the attributes) without building a JSON object first; a document that does not
/// parse that way is parsed again as a plain JSON value to name what is wrong with it.
pub fn decode(raw: &[u8], fields: &FieldNames) -> Result<Event, Malformed> {
    let mut json = serde_json::Deserializer::from_slice(raw);
    let parts = match PartsSeed(fields)
        .deserialize(&mut json)
        .and_then(|parts| json.end().map(|()| parts))
    {
        Ok(parts) => parts,
        Err(_) => match serde_json::from_slice::<Value>(raw) {
            Err(e) => return Err(Malformed::NotJson(e.to_string())),
            Ok(Value::Object(map)) => Parts::from_object(map, fields),
            Ok(_) => return Err(Malformed::NotAnObject),
        },
    };
    parts.into_event(fields, raw.len() as u64)
}

/// The fields of an event object, sorted out but not checked yet.
#[derive(Default)]
struct Parts {
    /// The id field: `Some(None)` when it is not a string.
    id: Option<Option<SmallString>>,
    /// The key field: `Some(None)` when it is not a string.
    key: Option<Option<SmallString>>,
    time: Option<Value>,
    /// The type field: `Some(None)` when it is not a non-empty string.
    kind: Option<Option<EventKind>>,
    page_number: Option<Value>,
    attributes: Vec<(SmallString, Value)>,
}

impl Parts {
    fn from_object(map: serde_json::Map<String, Value>, fields: &FieldNames) -> Self {
        let mut parts = Self::default();
        for (name, value) in map {
            if name == fields.event_id {
                parts.id = Some(string_of(value).map(SmallString::from));
            } else if name == fields.user_id {
                parts.key = Some(string_of(value).map(SmallString::from));
            } else {
                parts.put(&name, value, fields);
            }
        }
        parts
    }

    /// Files field `name` (any but the id and the key, which both paths read as strings). A
    /// repeated field keeps its last value, as a JSON object would.
    fn put(&mut self, name: &str, value: Value, fields: &FieldNames) {
        if name == fields.kind {
            self.kind = Some(match &value {
                Value::String(kind) => kind_of(kind),
                _ => None,
            });
            return;
        }
        let slot = if name == fields.timestamp {
            &mut self.time
        } else if name == fields.page_number {
            &mut self.page_number
        } else {
            match self.attributes.iter_mut().find(|(known, _)| known == name) {
                Some((_, slot)) => *slot = value,
                None => self.attributes.push((SmallString::from(name), value)),
            }
            return;
        };
        *slot = Some(value);
    }

    fn into_event(mut self, fields: &FieldNames, bytes: u64) -> Result<Event, Malformed> {
        let id = required_string(self.id, &fields.event_id)?;
        let key = required_string(self.key, &fields.user_id)?;
        let time = match self.time {
            None => return Err(Malformed::Missing(fields.timestamp.clone())),
            Some(v) => v.as_i64().filter(|t| *t >= 0).ok_or(Malformed::Invalid {
                field: fields.timestamp.clone(),
                reason: "not a non-negative integer (epoch milliseconds)",
            })?,
        };
        let kind = match self.kind {
            None => return Err(Malformed::Missing(fields.kind.clone())),
            Some(None) => {
                return Err(Malformed::Invalid {
                    field: fields.kind.clone(),
                    reason: "not a non-empty string",
                });
            }
            Some(Some(kind)) => kind,
        };
        let page_number = match self.page_number {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or(Malformed::Invalid {
                field: fields.page_number.clone(),
                reason: "not an integer",
            })?),
        };
        // The same event whatever order its fields arrived in (names are unique here).
        self.attributes.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        Ok(Event {
            id,
            key,
            time,
            kind,
            page_number,
            attributes: self.attributes,
            bytes,
        })
    }
}

/// What a type field's value makes an event; `None` for an empty one.
fn kind_of(kind: &str) -> Option<EventKind> {
    match kind {
        "" => None,
        PAGEVIEW => Some(EventKind::Pageview),
        _ => Some(EventKind::Async),
    }
}

/// The string a JSON value holds, if it is one.
fn string_of(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// A required string field, read as `Some(None)` when it is not a string.
fn required_string<S: AsRef<str>>(value: Option<Option<S>>, field: &str) -> Result<S, Malformed> {
    match value {
        None => Err(Malformed::Missing(field.to_owned())),
        Some(Some(s)) if !s.as_ref().is_empty() => Ok(s),
        Some(_) => Err(Malformed::Invalid {
            field: field.to_owned(),
            reason: "not a non-empty string",
        }),
    }
}

/// Reads a JSON object into [`Parts`] in one pass.
struct PartsSeed<'f>(&'f FieldNames);

impl<'de> DeserializeSeed<'de> for PartsSeed<'_> {
    type Value = Parts;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Parts, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PartsSeed<'_> {
    type Value = Parts;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
        let mut parts = Parts::default();
        while let Some(FieldName(name)) = map.next_key()? {
            if name == self.0.kind {
                // Only what it makes the event matters: read in place, never copied. A value
                // that is not a string fails here, and the slower path names the problem.
                let FieldName(kind) = map.next_value()?;
                parts.kind = Some(kind_of(&kind));
                continue;
            }
            // The id and the key, likewise, are read as strings straight off the input (a short
            // id is kept inline, without an allocation); anything else fails here.
            if name == self.0.event_id {
                let FieldName(id) = map.next_value()?;
                parts.id = Some(Some(SmallString::from(id)));
                continue;
            }
            if name == self.0.user_id {
                let FieldName(key) = map.next_value()?;
                parts.key = Some(Some(SmallString::from(key)));
                continue;
            }
            let value: Value = map.next_value()?;
            parts.put(&name, value, self.0);
        }
        Ok(parts)
    }
}

/// An object key, borrowed from the input unless it had to be unescaped.
struct FieldName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(name.to_owned())))
            }

            fn visit_string<E>(self, name: String) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Whether the page-number guard drops `event`: a pageview whose page number exceeds `max`.
pub fn page_number_too_high(event: &Event, max: i32) -> bool {
    event.kind == EventKind::Pageview && event.page_number.is_some_and(|p| p > i64::from(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> FieldNames {
        FieldNames::default()
    }

    #[test]
    fn decodes_a_pageview_with_attributes() {
        let raw = br#"{"eventId":"e1","userId":"u","timestamp":5,"type":"pageview","pageNumber":3,"url":"/a"}"#;
        let e = decode(raw, &fields()).unwrap();
        assert_eq!(e.id, "e1");
        assert_eq!(e.key, "u");
        assert_eq!(e.time, 5);
        assert_eq!(e.kind, EventKind::Pageview);
        assert_eq!(e.page_number, Some(3));
        assert_eq!(
            e.attributes,
            vec![(SmallString::from("url"), Value::from("/a"))]
        );
        assert_eq!(e.bytes, raw.len() as u64);
    }

    /// The reference: parse a JSON value, then sort its fields out.
    fn decode_via_value(raw: &[u8], fields: &FieldNames) -> Result<Event, Malformed> {
        match serde_json::from_slice::<Value>(raw) {
            Err(e) => Err(Malformed::NotJson(e.to_string())),
            Ok(Value::Object(map)) => {
                Parts::from_object(map, fields).into_event(fields, raw.len() as u64)
            }
            Ok(_) => Err(Malformed::NotAnObject),
        }
    }

    #[test]
    fn one_pass_decoding_agrees_with_parsing_a_json_value_first() {
        let spec = crate::loadgen::LoadSpec {
            events: 5_000,
            malformed_share: 0.2,
            ..crate::loadgen::LoadSpec::default()
        };
        let mut raws: Vec<Vec<u8>> = crate::loadgen::generate(&spec)
            .into_iter()
            .map(|e| e.payload)
            .collect();
        // The id and the key are read in place too: not strings, empty, longer than an
        // inline string, repeated with a bad value last.
        let in_place = [
            &br#"{"eventId":7,"userId":"u","timestamp":1,"type":"x"}"#[..],
            br#"{"eventId":"","userId":"u","timestamp":1,"type":"x"}"#,
            br#"{"eventId":"e","userId":["u"],"timestamp":1,"type":"x"}"#,
            br#"{"eventId":"0f6c2f0e-8e4a-4a7b-9d7e-4b1d0c6a9e21","userId":"u","timestamp":1,"type":"x"}"#,
            br#"{"eventId":"e","eventId":null,"userId":"u","timestamp":1,"type":"x"}"#,
        ];
        raws.extend(in_place.map(<[u8]>::to_vec));
        raws.extend(
            [
                // Escaped names still name the known fields.
                &br#"{"event\u0049d":"e","us\u0065rId":"u","timestamp":1,"type":"pageview"}"#[..],
                // A repeated field keeps its last value, known or not.
                br#"{"eventId":"a","eventId":"b","userId":"u","timestamp":1,"type":"x","k":1,"k":2}"#,
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":"x","nested":{"a":[1,{"b":null}]}}"#,
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":"x"} trailing"#,
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":"x""#,
                br#""a string""#,
                b"",
                // The type field is read in place: escaped, empty, not a string, repeated.
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":"page\u0076iew"}"#,
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":""}"#,
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":7}"#,
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":"x","type":"pageview"}"#,
            ]
            .map(<[u8]>::to_vec),
        );
        let mut malformed = 0;
        for raw in &raws {
            let got = decode(raw, &fields());
            assert_eq!(
                got,
                decode_via_value(raw, &fields()),
                "{}",
                String::from_utf8_lossy(raw)
            );
            malformed += usize::from(got.is_err());
        }
        assert!(
            malformed > 500,
            "the stream has malformed events: {malformed}"
        );
        let at = |from_end: usize| &raws[raws.len() - from_end];
        let escaped = decode(at(11), &fields()).unwrap();
        assert_eq!((escaped.id.as_str(), escaped.key.as_str()), ("e", "u"));
        let repeated = decode(at(10), &fields()).unwrap();
        assert_eq!(repeated.id, "b");
        assert_eq!(
            repeated.attributes,
            vec![(SmallString::from("k"), Value::from(2))]
        );
        assert_eq!(decode(at(4), &fields()).unwrap().kind, EventKind::Pageview);
        for invalid in [at(3), at(2)] {
            let error = decode(invalid, &fields()).unwrap_err().to_string();
            assert!(error.starts_with("invalid field `type`"), "{error}");
        }
        assert_eq!(decode(at(1), &fields()).unwrap().kind, EventKind::Pageview);
        for (raw, field) in [
            (in_place[0], "eventId"),
            (in_place[1], "eventId"),
            (in_place[2], "userId"),
            (in_place[4], "eventId"),
        ] {
            let error = decode(raw, &fields()).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("invalid field `{field}`")),
                "{error}"
            );
        }
        let long = decode(in_place[3], &fields()).unwrap();
        assert_eq!(long.id, "0f6c2f0e-8e4a-4a7b-9d7e-4b1d0c6a9e21");
    }

    #[test]
    fn any_other_type_is_async() {
        let raw = br#"{"eventId":"e1","userId":"u","timestamp":5,"type":"click"}"#;
        assert_eq!(decode(raw, &fields()).unwrap().kind, EventKind::Async);
    }

    #[test]
    fn field_names_are_configurable() {
        let f = FieldNames {
            event_id: "id".into(),
            user_id: "uid".into(),
            timestamp: "ts".into(),
            kind: "t".into(),
            page_number: "pn".into(),
        };
        let raw = br#"{"id":"e1","uid":"u","ts":5,"t":"pageview","pn":1}"#;
        assert_eq!(decode(raw, &f).unwrap().page_number, Some(1));
    }

    #[test]
    fn malformed_inputs_have_reasons() {
        for (raw, want) in [
            (&b"{not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (
                br#"{"userId":"u","timestamp":1,"type":"x"}"#,
                "missing field `eventId`",
            ),
            (
                br#"{"eventId":"e","userId":"","timestamp":1,"type":"x"}"#,
                "invalid field `userId`",
            ),
            (
                br#"{"eventId":"e","userId":"u","timestamp":"1","type":"x"}"#,
                "invalid field `timestamp`",
            ),
            (
                br#"{"eventId":"e","userId":"u","timestamp":-1,"type":"x"}"#,
                "invalid field `timestamp`",
            ),
            (
                br#"{"eventId":"e","userId":"u","timestamp":1}"#,
                "missing field `type`",
            ),
            (
                br#"{"eventId":"e","userId":"u","timestamp":1,"type":"pageview","pageNumber":"x"}"#,
                "invalid field `pageNumber`",
            ),
            (&[0xff, 0xfe][..], "not JSON"),
        ] {
            let err = decode(raw, &fields()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }

    #[test]
    fn the_page_guard_only_applies_to_pageviews() {
        let pv = decode(
            br#"{"eventId":"e","userId":"u","timestamp":1,"type":"pageview","pageNumber":301}"#,
            &fields(),
        )
        .unwrap();
        assert!(page_number_too_high(&pv, 300));
        assert!(!page_number_too_high(&pv, 301));
        let async_event = decode(
            br#"{"eventId":"e","userId":"u","timestamp":1,"type":"buy","pageNumber":999}"#,
            &fields(),
        )
        .unwrap();
        assert!(!page_number_too_high(&async_event, 300));
    }
}
