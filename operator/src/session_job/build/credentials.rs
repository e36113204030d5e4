//! How credentials reach the workers: only by reference to Secrets, as `secretKeyRef`
//! environment variables, `envFrom` and read-only Secret volumes at the fixed places in
//! [`crate::names::credentials`].
//!
//! This module must never read a Secret or copy a secret value into any object: the operator
//! only names Secrets, the kubelet resolves them.

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, KeyToPath, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use sessionizer_crds::refs::{CaSecretRef, CredentialsSecretRef, SecretRef};
use sessionizer_crds::session_job::SessionJobSpec;

use crate::names::credentials::{
    AEROSPIKE_CA, AEROSPIKE_CLIENT_CERT, CA_FILE, ENV_AEROSPIKE_PASSWORD, ENV_AEROSPIKE_USERNAME,
    ENV_KAFKA_SASL_PASSWORD, ENV_KAFKA_SASL_USERNAME, KAFKA_CA, KAFKA_CLIENT_CERT, SecretMount,
    TLS_CERT_FILE, TLS_KEY_FILE,
};

/// Secret files are readable by the owner and the Pod's `fsGroup`, nobody else.
const SECRET_FILE_MODE: i32 = 0o440;

/// Everything the worker container gets from Secrets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    /// `secretKeyRef` variables (user names and passwords).
    pub env: Vec<EnvVar>,
    /// Whole Secrets as variables (object store credentials).
    pub env_from: Vec<EnvFromSource>,
    /// Secret volumes (CA bundles, client certificates).
    pub volumes: Vec<Volume>,
    /// Their read-only mounts.
    pub mounts: Vec<VolumeMount>,
}

/// The credentials `spec` refers to.
pub fn credentials(spec: &SessionJobSpec) -> Credentials {
    let mut credentials = Credentials::default();
    if let Some(sasl) = &spec.kafka.sasl {
        credentials.user_and_password(
            &sasl.credentials_secret_ref,
            ENV_KAFKA_SASL_USERNAME,
            ENV_KAFKA_SASL_PASSWORD,
        );
    }
    if let Some(tls) = &spec.kafka.tls {
        credentials.tls(
            tls.ca_secret_ref.as_ref(),
            tls.client_cert_secret_ref.as_ref(),
            KAFKA_CA,
            KAFKA_CLIENT_CERT,
        );
    }
    if let Some(aerospike) = &spec.history.aerospike {
        if let Some(secret) = &aerospike.credentials_secret_ref {
            credentials.user_and_password(secret, ENV_AEROSPIKE_USERNAME, ENV_AEROSPIKE_PASSWORD);
        }
        if let Some(tls) = &aerospike.tls {
            credentials.tls(
                tls.ca_secret_ref.as_ref(),
                tls.client_cert_secret_ref.as_ref(),
                AEROSPIKE_CA,
                AEROSPIKE_CLIENT_CERT,
            );
        }
    }
    if let Some(secret) = &spec.checkpoints.credentials_secret_ref {
        credentials.env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.name.to_string(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    credentials
}

impl Credentials {
    fn user_and_password(&mut self, secret: &CredentialsSecretRef, user: &str, password: &str) {
        self.env
            .push(secret_env(user, secret, &secret.username_key));
        self.env
            .push(secret_env(password, secret, &secret.password_key));
    }

    fn tls(
        &mut self,
        ca: Option<&CaSecretRef>,
        client_cert: Option<&SecretRef>,
        ca_mount: SecretMount,
        client_mount: SecretMount,
    ) {
        if let Some(ca) = ca {
            self.mount(ca_mount, ca.name.as_str(), &[(&ca.key, CA_FILE)]);
        }
        if let Some(cert) = client_cert {
            self.mount(
                client_mount,
                cert.name.as_str(),
                &[(TLS_CERT_FILE, TLS_CERT_FILE), (TLS_KEY_FILE, TLS_KEY_FILE)],
            );
        }
    }

    fn mount(&mut self, mount: SecretMount, secret: &str, items: &[(&str, &str)]) {
        self.volumes.push(Volume {
            name: mount.volume.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                items: Some(
                    items
                        .iter()
                        .map(|(key, path)| KeyToPath {
                            key: (*key).to_owned(),
                            path: (*path).to_owned(),
                            mode: None,
                        })
                        .collect(),
                ),
                default_mode: Some(SECRET_FILE_MODE),
                optional: Some(false),
            }),
            ..Volume::default()
        });
        self.mounts.push(VolumeMount {
            name: mount.volume.to_owned(),
            mount_path: mount.dir.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
}

fn secret_env(name: &str, secret: &CredentialsSecretRef, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.to_string(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::credentials::SECRETS_DIR;
    use crate::session_job::fixtures;

    fn secret_key(env: &[EnvVar], name: &str) -> (String, String) {
        let var = env.iter().find(|v| v.name == name).expect(name);
        assert_eq!(var.value, None, "{name} must not be inlined");
        let selector = var
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        (selector.name.clone(), selector.key.clone())
    }

    #[test]
    fn minimal_job_needs_no_credentials() {
        assert_eq!(
            credentials(&fixtures::minimal().spec),
            Credentials::default()
        );
    }

    #[test]
    fn passwords_come_from_secret_key_refs() {
        let credentials = credentials(&fixtures::full().spec);
        assert_eq!(
            secret_key(&credentials.env, "SESSIONIZER_KAFKA_SASL_USERNAME"),
            ("sessionizer-kafka-user".into(), "user".into())
        );
        assert_eq!(
            secret_key(&credentials.env, "SESSIONIZER_KAFKA_SASL_PASSWORD"),
            ("sessionizer-kafka-user".into(), "pass".into())
        );
        assert_eq!(
            secret_key(&credentials.env, "SESSIONIZER_AEROSPIKE_USERNAME"),
            ("aerospike-user".into(), "username".into())
        );
        assert_eq!(
            secret_key(&credentials.env, "SESSIONIZER_AEROSPIKE_PASSWORD"),
            ("aerospike-user".into(), "password".into())
        );
        assert_eq!(credentials.env.len(), 4);
    }

    #[test]
    fn object_store_credentials_are_a_whole_secret() {
        let credentials = credentials(&fixtures::full().spec);
        assert_eq!(credentials.env_from.len(), 1);
        let secret = credentials.env_from[0].secret_ref.as_ref().unwrap();
        assert_eq!(secret.name, "checkpoint-store");
    }

    #[test]
    fn certificates_are_read_only_secret_volumes() {
        let credentials = credentials(&fixtures::full().spec);
        let volume = |name: &str| {
            credentials
                .volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.secret.clone())
                .expect(name)
        };
        let kafka_ca = volume("kafka-ca");
        assert_eq!(kafka_ca.secret_name.as_deref(), Some("kafka-ca"));
        let items = kafka_ca.items.unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("ca.pem", "ca.crt")
        );
        assert_eq!(kafka_ca.default_mode, Some(0o440));
        assert_eq!(
            volume("kafka-client-cert").secret_name.as_deref(),
            Some("sessionizer-kafka-client")
        );
        assert_eq!(
            volume("aerospike-ca").secret_name.as_deref(),
            Some("aerospike-ca")
        );
        assert_eq!(
            volume("aerospike-client-cert").secret_name.as_deref(),
            Some("sessionizer-aerospike-client")
        );
        assert_eq!(credentials.mounts.len(), 4);
        for mount in &credentials.mounts {
            assert_eq!(mount.read_only, Some(true));
            assert!(mount.mount_path.starts_with(SECRETS_DIR), "{mount:?}");
        }
    }

    #[test]
    fn the_worker_reads_kafka_credentials_where_they_are_put() {
        use sessionizer_worker::stream::kafka_security as worker;
        assert_eq!(format!("{}/{CA_FILE}", KAFKA_CA.dir), worker::CA_FILE);
        assert_eq!(
            format!("{}/{TLS_CERT_FILE}", KAFKA_CLIENT_CERT.dir),
            worker::CLIENT_CERT_FILE
        );
        assert_eq!(
            format!("{}/{TLS_KEY_FILE}", KAFKA_CLIENT_CERT.dir),
            worker::CLIENT_KEY_FILE
        );
        assert_eq!(ENV_KAFKA_SASL_USERNAME, worker::ENV_SASL_USERNAME);
        assert_eq!(ENV_KAFKA_SASL_PASSWORD, worker::ENV_SASL_PASSWORD);
    }
}
