//! Byte sizes in specs: a whole number of bytes with an optional Kubernetes quantity suffix
//! (`4Mi`, `512Ki`, `4M`, `4194304`), parsed identically by the API server and by Rust.
//!
//! The format is the integer subset of Kubernetes quantities: `^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$`,
//! with a value from 1 byte to 1Ei (2^60). Fractions (`1.5Gi`) and exponents (`4e6`) are not
//! accepted: Kubernetes' CEL `quantity(...).isInteger()` is true only for values its fast path can
//! hold (it rejects `1.5Gi`, `1000m` and `1Ei`, but accepts `1.5k`), so the schema checks the
//! grammar with a regex and only uses `quantity()` for the range. Sizes are strings: quote plain
//! numbers in YAML (`maxSessionBytes: "4194304"`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The longest size string the schema admits; it bounds the cost of the CEL rule.
pub const MAX_LEN: u32 = 32;

/// The largest size accepted: 1Ei (2^60 bytes). Kubernetes caps quantities at `i64::MAX`, so a
/// bound below that is needed for the API server to reject larger values instead of clamping them.
pub const MAX_BYTES: u64 = 1 << 60;

/// The regular expression (RE2 and Rust `regex` alike) a size string must match.
pub const REGEX: &str = "^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// The CEL rule every byte-size field carries (Kubernetes >= 1.29 quantity library). The regex runs
/// first, so `quantity()` only sees strings it parses.
pub const CEL_RULE: &str = "self.matches('^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$') && quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('1Ei')) <= 0";

/// The message users see when [`CEL_RULE`] fails.
pub const CEL_MESSAGE: &str = "must be a whole number of bytes from 1 to 1Ei with an optional suffix Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E, such as 4Mi, 512Ki or \"4194304\"";

/// A positive number of bytes written as a Kubernetes quantity, e.g. `4Mi`. Parse it with
/// [`ByteSize::to_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(String);

impl ByteSize {
    /// Wraps a string without checking it; [`ByteSize::to_bytes`] checks.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the string, see [`parse_bytes`].
    pub fn to_bytes(&self) -> Result<u64, QuantityError> {
        parse_bytes(&self.0)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ByteSize {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl JsonSchema for ByteSize {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
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

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not digits followed by an optional suffix.
    #[error(
        "invalid size {0:?}: expected a whole number with an optional suffix Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E"
    )]
    Format(String),
    /// Zero.
    #[error("invalid size {0:?}: must be greater than zero")]
    NotPositive(String),
    /// Larger than [`MAX_BYTES`].
    #[error("invalid size {0:?}: larger than 1Ei")]
    TooLarge(String),
}

/// Parses a size in the format described in the module docs into bytes.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    let digits_len = input.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, suffix) = input.split_at(digits_len);
    let format = || QuantityError::Format(input.to_owned());
    if digits.is_empty() {
        return Err(format());
    }
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return Err(format()),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Err(QuantityError::NotPositive(input.to_owned()));
    }
    let too_large = || QuantityError::TooLarge(input.to_owned());
    // More than 20 significant digits is beyond 1Ei whatever the suffix.
    if digits.len() > 20 {
        return Err(too_large());
    }
    let value: u128 = digits.parse().map_err(|_| format())?;
    let bytes = value.checked_mul(multiplier).ok_or_else(too_large)?;
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b <= MAX_BYTES)
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_binary_and_decimal_sizes() {
        assert_eq!(parse_bytes("4Mi"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_bytes("512Ki"), Ok(512 * 1024));
        assert_eq!(parse_bytes("1536Mi"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("4194304"), Ok(4_194_304));
        assert_eq!(parse_bytes("0004Ki"), Ok(4096));
        assert_eq!(parse_bytes("4M"), Ok(4_000_000));
        assert_eq!(parse_bytes("4k"), Ok(4_000));
        assert_eq!(parse_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("1Ei"), Ok(MAX_BYTES));
        assert_eq!(parse_bytes("1024Pi"), Ok(MAX_BYTES));
    }

    #[test]
    fn rejects_fractions_exponents_and_signs() {
        for bad in [
            "1.5Gi", ".5Ki", "1.", "1000m", "100m", "4e6", "4E6", "+4Mi", "-1Mi", "4MB", "4mi",
            "4K", "4 Mi", "4Mi ", "Mi", "", "1Mi5",
        ] {
            assert_eq!(
                parse_bytes(bad),
                Err(QuantityError::Format(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_zero() {
        for bad in ["0", "0Mi", "000"] {
            assert_eq!(
                parse_bytes(bad),
                Err(QuantityError::NotPositive(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_more_than_one_exbibyte() {
        assert_eq!(
            parse_bytes("1025Pi"),
            Err(QuantityError::TooLarge("1025Pi".into()))
        );
        assert_eq!(
            parse_bytes("2Ei"),
            Err(QuantityError::TooLarge("2Ei".into()))
        );
        assert_eq!(parse_bytes("2E"), Err(QuantityError::TooLarge("2E".into())));
        let huge = "9".repeat(30);
        assert_eq!(
            parse_bytes(&huge),
            Err(QuantityError::TooLarge(huge.clone()))
        );
    }

    #[test]
    fn cel_rule_uses_the_documented_regex() {
        assert!(CEL_RULE.starts_with(&format!("self.matches('{REGEX}')")));
    }
}
