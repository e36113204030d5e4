//! Durations in specs: one string format that the API server (CEL `duration()`, i.e. Go's
//! `time.ParseDuration`) and Rust parse identically.
//!
//! The accepted format is a *subset* of Go's: one or more `<number><unit>` pairs, no sign and no
//! spaces, where `<number>` is digits with an optional decimal fraction and `<unit>` is one of
//! `h`, `m`, `s`, `ms`, `us`, `ns` — for example `30m`, `168h`, `1h30m`, `1.5h`, `500ms`. Go also
//! accepts signs, `µs` and forms like `.5h`; the schema rule rejects those so that every string the
//! API server admits is one [`parse`] understands. Crates such as `humantime` accept `7d` or
//! `30min`, which the API server would reject, so they are deliberately not used here.
//!
//! The value is kept as the user's string (so `kubectl get -o yaml` shows what was applied, and
//! reading an object never fails on a bad value); it is parsed where it is used.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The longest duration string the schema admits; it bounds the cost of the CEL rule.
pub const MAX_LEN: u32 = 32;

/// The regular expression (RE2 and Rust `regex` alike) a duration string must match.
pub const REGEX: &str = "^([0-9]+([.][0-9]+)?(h|m|s|ms|us|ns))+$";

/// The CEL rule every duration field carries. The regex runs first so `duration()` only sees
/// strings it can parse; `duration()` then also rejects values too large for Go (~292 years).
pub const CEL_RULE: &str =
    "self.matches('^([0-9]+([.][0-9]+)?(h|m|s|ms|us|ns))+$') && duration(self) > duration('0s')";

/// The message users see when [`CEL_RULE`] fails.
pub const CEL_MESSAGE: &str =
    "must be a positive duration such as 30s, 30m, 1h30m or 168h (units: h, m, s, ms, us, ns)";

/// A CEL expression that is true when the string at `path` (e.g. `self.maxAge`) is a well-formed
/// duration. Rules that compare durations of two fields put it first, so a malformed value is
/// reported once, by its field's own rule, instead of also failing `duration()` in the comparison.
pub fn cel_well_formed(path: &str) -> String {
    format!("{path}.matches('{REGEX}')")
}

/// Go's `time.Duration` is an `int64` count of nanoseconds; longer durations do not exist there.
const MAX_NANOS: u128 = i64::MAX as u128;

/// A positive duration written as a string, e.g. `30m` or `168h` (see the module docs for the
/// exact format). Parse it with [`DurationString::to_duration`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationString(String);

impl DurationString {
    /// Wraps a string without checking it; [`DurationString::to_duration`] checks.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the string, see [`parse`].
    pub fn to_duration(&self) -> Result<Duration, DurationError> {
        parse(&self.0)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for DurationString {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl JsonSchema for DurationString {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "DurationString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_LEN,
            "x-kubernetes-validations": [{ "rule": CEL_RULE, "message": CEL_MESSAGE }],
        })
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// A number was expected at this byte offset.
    #[error("invalid duration {input:?}: expected a number at offset {offset}")]
    ExpectedNumber {
        /// The whole input.
        input: String,
        /// Byte offset of the problem.
        offset: usize,
    },
    /// A unit is missing or not one of h, m, s, ms, us, ns.
    #[error("invalid duration {input:?}: expected a unit (h, m, s, ms, us, ns) at offset {offset}")]
    BadUnit {
        /// The whole input.
        input: String,
        /// Byte offset of the problem.
        offset: usize,
    },
    /// Longer than Go's largest duration (about 292 years).
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
    /// Zero is not a valid value for these settings.
    #[error("invalid duration {0:?}: must be greater than zero")]
    NotPositive(String),
}

/// Parses a duration in the format described in the module docs. Fractions are exact to the
/// nanosecond (truncated below that); the result is positive and at most `i64::MAX` nanoseconds.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut total: u128 = 0;
    let overflow = || DurationError::Overflow(input.to_owned());
    while pos < bytes.len() {
        let (whole, frac, frac_digits, next) = number(input, pos)?;
        pos = next;
        let (unit_nanos, next) = unit(input, pos)?;
        pos = next;
        let whole_nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // frac has at most 38 significant digits, so scale down before it can overflow.
        let frac_nanos = scale_fraction(frac, frac_digits, unit_nanos);
        total = total
            .checked_add(whole_nanos)
            .and_then(|t| t.checked_add(frac_nanos))
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(overflow)?;
    }
    if total == 0 {
        return Err(DurationError::NotPositive(input.to_owned()));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, nanos))
}

/// Reads `digits ('.' digits)?` at `pos`: (whole part, fraction digits as integer, fraction
/// length, next position).
fn number(input: &str, pos: usize) -> Result<(u128, u128, u32, usize), DurationError> {
    let bytes = input.as_bytes();
    let expected = || DurationError::ExpectedNumber {
        input: input.to_owned(),
        offset: pos,
    };
    let int_end = digits_end(bytes, pos);
    if int_end == pos {
        return Err(expected());
    }
    let whole = input[pos..int_end]
        .parse::<u128>()
        .map_err(|_| DurationError::Overflow(input.to_owned()))?;
    if bytes.get(int_end) != Some(&b'.') {
        return Ok((whole, 0, 0, int_end));
    }
    let frac_start = int_end + 1;
    let frac_end = digits_end(bytes, frac_start);
    if frac_end == frac_start {
        return Err(DurationError::ExpectedNumber {
            input: input.to_owned(),
            offset: frac_start,
        });
    }
    // Digits past the nanosecond of the largest unit (hours: 3.6e12 ns) cannot matter.
    let kept = &input[frac_start..frac_end.min(frac_start + 18)];
    let frac = kept.parse::<u128>().map_err(|_| expected())?;
    let len = u32::try_from(kept.len()).map_err(|_| expected())?;
    Ok((whole, frac, len, frac_end))
}

fn digits_end(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

/// Reads a unit at `pos`: (nanoseconds per unit, next position). Longest match first (`ms`
/// before `m`).
fn unit(input: &str, pos: usize) -> Result<(u128, usize), DurationError> {
    const UNITS: [(&str, u128); 6] = [
        ("ns", 1),
        ("us", 1_000),
        ("ms", 1_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
    ];
    let rest = &input[pos..];
    UNITS
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .map(|(name, nanos)| (*nanos, pos + name.len()))
        .ok_or_else(|| DurationError::BadUnit {
            input: input.to_owned(),
            offset: pos,
        })
}

fn scale_fraction(frac: u128, digits: u32, unit_nanos: u128) -> u128 {
    // frac < 10^18 and unit_nanos <= 3.6e12, so the product fits in u128 (< 2^102).
    frac * unit_nanos / 10u128.pow(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_the_documented_examples() {
        assert_eq!(parse("30s"), Ok(secs(30)));
        assert_eq!(parse("30m"), Ok(secs(1800)));
        assert_eq!(parse("168h"), Ok(secs(168 * 3600)));
        assert_eq!(parse("1h30m"), Ok(secs(5400)));
        assert_eq!(parse("1.5h"), Ok(secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("1m0.5s"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse("0.000000001s"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        for bad in [
            "", "30", "m", "-1s", "+1s", "1d", "7days", "1 h", "1h ", ".5h", "1.h", "1µs", "30min",
            "1e3s", "1H",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sub_nanosecond_fractions_truncate_like_go() {
        // Go's time.ParseDuration (and so the API server) reads 1.5ns as 1ns and 0.5ns as 0.
        assert_eq!(parse("1.5ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse("0.5ns"),
            Err(DurationError::NotPositive("0.5ns".into()))
        );
    }

    #[test]
    fn zero_is_not_positive() {
        assert_eq!(parse("0s"), Err(DurationError::NotPositive("0s".into())));
        assert_eq!(
            parse("0h0m"),
            Err(DurationError::NotPositive("0h0m".into()))
        );
    }

    #[test]
    fn go_limit_is_enforced() {
        // Go's maximum is 2562047h47m16.854775807s.
        assert!(parse("2562047h47m16.854775807s").is_ok());
        assert_eq!(
            parse("2562048h"),
            Err(DurationError::Overflow("2562048h".into()))
        );
        assert!(parse("99999999999999999999999999999999999999999h").is_err());
    }

    #[test]
    fn fraction_digits_beyond_a_nanosecond_are_truncated() {
        assert_eq!(
            parse("1.0000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn cel_rule_uses_the_documented_regex() {
        assert!(CEL_RULE.starts_with(&cel_well_formed("self")));
    }

    #[test]
    fn wrapper_round_trips_as_a_plain_string() {
        let d: DurationString = serde_json::from_str("\"45m\"").unwrap();
        assert_eq!(d.as_str(), "45m");
        assert_eq!(d.to_duration(), Ok(secs(2700)));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"45m\"");
    }
}
