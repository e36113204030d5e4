//! Decoding of input events and the stateless guards that run before any state is touched
//! (seed gotcha 8: filter bad data as early as possible).
//!
//! Decoding is total: every byte string becomes either an [`Event`] or a [`Malformed`] reason.
//! This module must never panic on input and never look at state — what an event does to a
//! session is the engine's business.

use std::collections::BTreeMap;

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

/// A decoded input event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Session key.
    pub key: String,
    /// Event time, epoch milliseconds.
    pub time: i64,
    /// Page view or async.
    pub kind: EventKind,
    /// Page number, if the event has one.
    pub page_number: Option<i64>,
    /// Every other field of the event.
    pub attributes: BTreeMap<String, Value>,
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
pub fn decode(raw: &[u8], fields: &FieldNames) -> Result<Event, Malformed> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|e| Malformed::NotJson(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(Malformed::NotAnObject);
    };
    let id = take_string(&mut map, &fields.event_id)?;
    let key = take_string(&mut map, &fields.user_id)?;
    let time = match map.remove(&fields.timestamp) {
        None => return Err(Malformed::Missing(fields.timestamp.clone())),
        Some(v) => v.as_i64().filter(|t| *t >= 0).ok_or(Malformed::Invalid {
            field: fields.timestamp.clone(),
            reason: "not a non-negative integer (epoch milliseconds)",
        })?,
    };
    let kind = match take_string(&mut map, &fields.kind)?.as_str() {
        PAGEVIEW => EventKind::Pageview,
        _ => EventKind::Async,
    };
    let page_number = match map.remove(&fields.page_number) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or(Malformed::Invalid {
            field: fields.page_number.clone(),
            reason: "not an integer",
        })?),
    };
    Ok(Event {
        id,
        key,
        time,
        kind,
        page_number,
        attributes: map.into_iter().collect(),
        bytes: raw.len() as u64,
    })
}

fn take_string(map: &mut serde_json::Map<String, Value>, field: &str) -> Result<String, Malformed> {
    match map.remove(field) {
        None => Err(Malformed::Missing(field.to_owned())),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(Malformed::Invalid {
            field: field.to_owned(),
            reason: "not a non-empty string",
        }),
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
        assert_eq!(e.attributes.get("url"), Some(&Value::from("/a")));
        assert_eq!(e.bytes, raw.len() as u64);
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
