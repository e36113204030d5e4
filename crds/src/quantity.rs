//! Byte sizes in specs, written as Kubernetes quantities (`4Mi`, `512Ki`, `1.5Gi`, `4194304`,
//! `4M`, `4e6`) and parsed identically by the API server (CEL `quantity()`) and by Rust.
//!
//! A size must be a whole, positive number of bytes that fits in a signed 64-bit integer, which is
//! exactly what the CEL rule `isQuantity(self) && quantity(self).isInteger() &&
//! quantity(self).isGreaterThan(quantity('0'))` admits. So `100m` (0.1 bytes) and `-1Mi` are
//! rejected by the API server and by [`parse_bytes`] alike. Sizes are strings: quote plain numbers
//! in YAML (`maxSessionBytes: "4194304"`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The longest size string the schema admits; it bounds the cost of the CEL rule.
pub const MAX_LEN: u32 = 32;

/// The CEL rule every byte-size field carries (Kubernetes ≥ 1.29 quantity library).
pub const CEL_RULE: &str =
    "isQuantity(self) && quantity(self).isInteger() && quantity(self).isGreaterThan(quantity('0'))";

/// The message users see when [`CEL_RULE`] fails.
pub const CEL_MESSAGE: &str = "must be a positive whole number of bytes written as a quantity, such as 4Mi, 512Ki, 1Gi or \"4194304\"";

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
    /// The string is empty.
    #[error("empty quantity")]
    Empty,
    /// Not a Kubernetes quantity (bad number or unknown suffix).
    #[error(
        "invalid quantity {0:?}: expected a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or an exponent)"
    )]
    Format(String),
    /// Zero or negative.
    #[error("invalid size {0:?}: must be greater than zero")]
    NotPositive(String),
    /// Not a whole number of bytes (e.g. `100m` or `1.5`).
    #[error("invalid size {0:?}: must be a whole number of bytes")]
    NotInteger(String),
    /// Larger than `i64::MAX` bytes.
    #[error("invalid size {0:?}: too large")]
    TooLarge(String),
}

/// Parses a Kubernetes quantity that denotes a whole, positive number of bytes (at most
/// `i64::MAX`). Follows the grammar of Kubernetes' `resource.ParseQuantity`, including its
/// leniencies (`1.`, `.5Ki`).
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    if input.is_empty() {
        return Err(QuantityError::Empty);
    }
    let format = || QuantityError::Format(input.to_owned());
    let (negative, rest) = match input.as_bytes()[0] {
        b'-' => (true, &input[1..]),
        b'+' => (false, &input[1..]),
        _ => (false, input),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, rest) = rest.split_at(int_len);
    let (frac_part, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            after_dot.split_at(after_dot.bytes().take_while(u8::is_ascii_digit).count())
        }
        None => ("", rest),
    };
    let (exp10, binary_shift) = suffix_scale(suffix).ok_or_else(format)?;

    let frac_part = frac_part.trim_end_matches('0');
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Err(QuantityError::NotPositive(input.to_owned()));
    }
    if negative {
        return Err(QuantityError::NotPositive(input.to_owned()));
    }
    let too_large = || QuantityError::TooLarge(input.to_owned());
    let mantissa: u128 = digits.parse().map_err(|_| too_large())?;
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| too_large())?;
    let exp10 = exp10 - frac_len;
    let scaled = mantissa
        .checked_shl(binary_shift)
        .filter(|v| v >> binary_shift == mantissa);
    let scaled = scaled.ok_or_else(too_large)?;

    let value = if exp10 >= 0 {
        let factor = u32::try_from(exp10)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .ok_or_else(too_large)?;
        scaled.checked_mul(factor).ok_or_else(too_large)?
    } else {
        let divisor = u32::try_from(-exp10)
            .ok()
            .and_then(|e| 10u128.checked_pow(e));
        match divisor {
            Some(d) if scaled % d == 0 => scaled / d,
            _ => return Err(QuantityError::NotInteger(input.to_owned())),
        }
    };
    if value > i64::MAX as u128 {
        return Err(too_large());
    }
    u64::try_from(value).map_err(|_| too_large())
}

/// The scale a suffix applies: (power of ten, power of two).
fn suffix_scale(suffix: &str) -> Option<(i64, u32)> {
    let scale = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (exponent.parse::<i64>().ok()?, 0)
        }
    };
    Some(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_exponent_forms() {
        assert_eq!(parse_bytes("4Mi"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_bytes("512Ki"), Ok(512 * 1024));
        assert_eq!(parse_bytes("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("4194304"), Ok(4_194_304));
        assert_eq!(parse_bytes("+4194304"), Ok(4_194_304));
        assert_eq!(parse_bytes("4M"), Ok(4_000_000));
        assert_eq!(parse_bytes("4k"), Ok(4_000));
        assert_eq!(parse_bytes("4e6"), Ok(4_000_000));
        assert_eq!(parse_bytes("4E6"), Ok(4_000_000));
        assert_eq!(parse_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("1000m"), Ok(1));
        assert_eq!(parse_bytes("1.000000000000000000000000Ei"), Ok(1 << 60));
    }

    #[test]
    fn accepts_the_same_leniencies_as_kubernetes() {
        assert_eq!(parse_bytes("1."), Ok(1));
        assert_eq!(parse_bytes(".5Ki"), Ok(512));
        assert_eq!(parse_bytes("0004Ki"), Ok(4096));
    }

    #[test]
    fn rejects_fractions_of_a_byte() {
        assert_eq!(
            parse_bytes("100m"),
            Err(QuantityError::NotInteger("100m".into()))
        );
        assert_eq!(
            parse_bytes("1.5"),
            Err(QuantityError::NotInteger("1.5".into()))
        );
        assert_eq!(
            parse_bytes("1e-3"),
            Err(QuantityError::NotInteger("1e-3".into()))
        );
    }

    #[test]
    fn rejects_zero_and_negative() {
        // Kubernetes reads a missing number as zero: `Mi` and `e3` are valid quantities equal to 0.
        for bad in ["0", "0Mi", "-1Mi", "-0", "Mi", ".", "e3"] {
            assert_eq!(
                parse_bytes(bad),
                Err(QuantityError::NotPositive(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in [
            "4MB", "4mi", "4K", "4 Mi", "4Mi ", "1e", "1e+", "1Mi5", "1..2", "--1",
        ] {
            assert!(
                matches!(parse_bytes(bad), Err(QuantityError::Format(_))),
                "{bad:?}: {:?}",
                parse_bytes(bad)
            );
        }
        assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
    }

    #[test]
    fn rejects_more_than_i64_max() {
        assert_eq!(parse_bytes("7Ei"), Ok(7 << 60));
        assert!(matches!(
            parse_bytes("8Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_bytes("1e40"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
