//! TLS and SASL for the worker's Kafka clients, from where the operator puts them: CA bundles and
//! client certificates as Secret volumes at fixed paths, SASL credentials as environment
//! variables (see the operator's `names::credentials`, which this module mirrors; a test there
//! keeps both in step).
//!
//! This module must never log a password or put one anywhere but the client configuration.

use rdkafka::ClientConfig;
use sessionizer_crds::session_job::KafkaSpec;

use super::StreamError;

/// Environment variable: Kafka SASL user name.
pub const ENV_SASL_USERNAME: &str = "SESSIONIZER_KAFKA_SASL_USERNAME";
/// Environment variable: Kafka SASL password.
pub const ENV_SASL_PASSWORD: &str = "SESSIONIZER_KAFKA_SASL_PASSWORD";
/// The Kafka CA bundle.
pub const CA_FILE: &str = "/var/run/secrets/sessionizer/kafka-ca/ca.crt";
/// The Kafka client certificate.
pub const CLIENT_CERT_FILE: &str = "/var/run/secrets/sessionizer/kafka-client/tls.crt";
/// The Kafka client private key.
pub const CLIENT_KEY_FILE: &str = "/var/run/secrets/sessionizer/kafka-client/tls.key";

/// Adds `kafka.tls` and `kafka.sasl` to `client`, reading SASL credentials with `env`.
pub fn apply(
    kafka: &KafkaSpec,
    client: &mut ClientConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), StreamError> {
    let protocol = match (kafka.tls.is_some(), kafka.sasl.is_some()) {
        (false, false) => return Ok(()),
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    client.set("security.protocol", protocol);
    if let Some(tls) = &kafka.tls {
        if tls.ca_secret_ref.is_some() {
            client.set("ssl.ca.location", CA_FILE);
        }
        if tls.client_cert_secret_ref.is_some() {
            client
                .set("ssl.certificate.location", CLIENT_CERT_FILE)
                .set("ssl.key.location", CLIENT_KEY_FILE);
        }
    }
    if let Some(sasl) = &kafka.sasl {
        let missing = |name: &'static str| {
            StreamError::Credentials(format!(
                "kafka.sasl is set but {name} is not in the environment"
            ))
        };
        let username = env(ENV_SASL_USERNAME).ok_or_else(|| missing(ENV_SASL_USERNAME))?;
        let password = env(ENV_SASL_PASSWORD).ok_or_else(|| missing(ENV_SASL_PASSWORD))?;
        client
            .set("sasl.mechanism", sasl.mechanism.as_str())
            .set("sasl.username", username)
            .set("sasl.password", password);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: serde_json::Value) -> KafkaSpec {
        let mut spec = serde_json::json!({
            "bootstrapServers": ["kafka:9093"],
            "sourceTopics": [{"name": "pageviews"}],
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(spec).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        match name {
            ENV_SASL_USERNAME => Some("svc-sessionizer".into()),
            ENV_SASL_PASSWORD => Some("s3cret".into()),
            _ => None,
        }
    }

    #[test]
    fn plaintext_adds_nothing() {
        let mut client = ClientConfig::new();
        apply(&kafka(serde_json::json!({})), &mut client, env).unwrap();
        assert_eq!(client.get("security.protocol"), None);
    }

    #[test]
    fn tls_with_a_ca_and_a_client_certificate() {
        let mut client = ClientConfig::new();
        let spec = kafka(serde_json::json!({"tls": {
            "caSecretRef": {"name": "kafka-ca"},
            "clientCertSecretRef": {"name": "kafka-client"},
        }}));
        apply(&spec, &mut client, env).unwrap();
        assert_eq!(client.get("security.protocol"), Some("ssl"));
        assert_eq!(client.get("ssl.ca.location"), Some(CA_FILE));
        assert_eq!(
            client.get("ssl.certificate.location"),
            Some(CLIENT_CERT_FILE)
        );
        assert_eq!(client.get("ssl.key.location"), Some(CLIENT_KEY_FILE));
    }

    #[test]
    fn sasl_over_tls_reads_the_credentials_from_the_environment() {
        let mut client = ClientConfig::new();
        let spec = kafka(serde_json::json!({
            "tls": {},
            "sasl": {"mechanism": "SCRAM-SHA-256", "credentialsSecretRef": {"name": "kafka-user"}},
        }));
        apply(&spec, &mut client, env).unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(client.get("sasl.username"), Some("svc-sessionizer"));
        assert_eq!(client.get("sasl.password"), Some("s3cret"));
        assert_eq!(client.get("ssl.ca.location"), None, "system roots");
    }

    #[test]
    fn sasl_without_credentials_in_the_environment_is_a_clear_error() {
        let mut client = ClientConfig::new();
        let spec = kafka(serde_json::json!({
            "sasl": {"credentialsSecretRef": {"name": "kafka-user"}},
        }));
        let error = apply(&spec, &mut client, |_| None).unwrap_err();
        assert!(error.to_string().contains(ENV_SASL_USERNAME), "{error}");
    }
}
