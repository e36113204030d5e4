//! String types whose format the API server checks: object names, Kafka topic names and
//! `host:port` addresses. Each carries its own length limit and CEL rule in the schema, so every
//! field of that type is validated the same way with the same message.
//!
//! They never fail to deserialize: a value that slipped past the schema (e.g. stored before a rule
//! existed) still reads, and the operator reports it instead of losing the object.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, rule = $rule:expr, message = $message:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest value the schema admits.
            pub const MAX_LEN: u32 = $max;
            /// The CEL rule the schema carries.
            pub const CEL_RULE: &'static str = $rule;
            /// The message users see when the rule fails.
            pub const CEL_MESSAGE: &'static str = $message;

            /// Wraps a string without checking it (the API server checks).
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The string as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": Self::MAX_LEN,
                    "x-kubernetes-validations": [{ "rule": Self::CEL_RULE, "message": Self::CEL_MESSAGE }],
                })
            }
        }
    };
}

checked_string!(
    /// The name of a Kubernetes object in the same namespace (a DNS-1123 subdomain: lowercase
    /// letters, digits, `-` and `.`, at most 253 characters).
    ObjectName,
    max = 253,
    rule = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
    message = "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
);

checked_string!(
    /// A Kafka topic name: 1 to 249 characters from `a-z A-Z 0-9 . _ -`, not `.` or `..`.
    TopicName,
    max = 249,
    rule = "self.matches('^[a-zA-Z0-9._-]+$') && self != '.' && self != '..'",
    message = "must be a Kafka topic name: letters, digits, '.', '_' and '-' (not '.' or '..')"
);

checked_string!(
    /// A network address `host:port`; the host is a DNS name, an IPv4 address or a bracketed IPv6
    /// address (`[::1]:9092`).
    HostPort,
    max = 261,
    rule = "self.matches('^([a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?|\\\\[[0-9a-fA-F:.]+\\\\]):[0-9]{1,5}$')",
    message = "must be host:port, e.g. kafka-0.kafka:9092, 10.0.0.7:3000 or [::1]:9092"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_carries_length_and_rule() {
        let schema =
            serde_json::to_value(TopicName::json_schema(&mut SchemaGenerator::default())).unwrap();
        assert_eq!(schema["maxLength"], 249);
        assert_eq!(
            schema["x-kubernetes-validations"][0]["message"],
            TopicName::CEL_MESSAGE
        );
    }

    #[test]
    fn host_port_rule_escapes_brackets_for_cel() {
        // In the CRD the rule text holds `\\[`: CEL unescapes it to `\[` for the regex.
        assert!(HostPort::CEL_RULE.contains(r"\\["));
    }
}
