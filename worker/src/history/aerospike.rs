//! The production history backend: an external Aerospike cluster reached with the `aerospike`
//! crate (seed 000). Each session key is one record of the job's set with a single blob bin
//! holding the [`Codec`]-framed value (its sessions zstd-compressed on the client by the engine);
//! every write carries the TTL as `Expiration::Seconds`, so Aerospike itself forgets closed
//! sessions.
//!
//! Reads of many keys go out as one batch read, and the write-behind layer's writes as batch
//! writes of up to [`WRITE_BATCH`] rows (each row with its TTL), so a busy worker makes a few
//! round trips per drain instead of one per record.
//!
//! Failures are classified here and retried by [`with_retries`]: timeouts, lost connections and
//! overloaded nodes are transient; stop-writes (`ServerMemError`, result code 8) is retried too and
//! reported as [`HistoryError::WritesRefused`] when the attempts are used up; a record larger than
//! the namespace accepts is [`HistoryError::TooBig`] at once. The client's own retries are turned
//! off (`max_retries = 0`) so every attempt is ours, visible in the retry metric and bounded by
//! `spec.history.aerospike.retry`.
//!
//! Credentials come from the environment the operator fills from the credentials Secret
//! ([`ENV_AEROSPIKE_USERNAME`], [`ENV_AEROSPIKE_PASSWORD`]). TLS (`spec.history.aerospike.tls`) is
//! not supported yet: opening fails with a clear error rather than silently connecting in
//! plaintext. This module must never write a record without a TTL, log a password or retry
//! without bound.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerospike::{
    BatchDeletePolicy, BatchOperation, BatchPolicy, BatchReadPolicy, BatchWritePolicy, Bin, Bins,
    Client, ClientPolicy, Error as ClientError, ErrorKind, Expiration, Key, ReadPolicy, Record,
    ResultCode, Value, WritePolicy, operations,
};
use sessionizer_crds::session_job::{AerospikeSpec, CompressionSpec};

use super::codec::Codec;
use super::metrics::{Op, StoreMetrics};
use super::retry::{AttemptError, RetryPolicy, with_retries};
use super::{HistoryError, HistoryStore, KeyChange, KeyWrite};

/// Rows per batch write command: a drain of the write-behind layer is a few commands instead of
/// a round trip per record, and one slow command never holds more than this many writes.
pub const WRITE_BATCH: usize = 256;

/// Environment variable with the Aerospike user name (from the credentials Secret; the operator's
/// `names::credentials::ENV_AEROSPIKE_USERNAME`).
pub const ENV_AEROSPIKE_USERNAME: &str = "SESSIONIZER_AEROSPIKE_USERNAME";
/// Environment variable with the Aerospike password (`names::credentials::ENV_AEROSPIKE_PASSWORD`).
pub const ENV_AEROSPIKE_PASSWORD: &str = "SESSIONIZER_AEROSPIKE_PASSWORD";
/// The one bin of every history record.
pub const BIN: &str = "h";

/// User name and password for Aerospike's internal authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The credentials in [`ENV_AEROSPIKE_USERNAME`] and [`ENV_AEROSPIKE_PASSWORD`], if the
    /// user name is set.
    pub fn from_env() -> Option<Self> {
        let user = std::env::var(ENV_AEROSPIKE_USERNAME).ok()?;
        let password = std::env::var(ENV_AEROSPIKE_PASSWORD).unwrap_or_default();
        Some(Self { user, password })
    }
}

/// Everything needed to reach the job's records.
#[derive(Clone, Debug, PartialEq)]
pub struct AerospikeSettings {
    /// Seed nodes as `host:port`.
    pub hosts: Vec<String>,
    /// The namespace.
    pub namespace: String,
    /// The set.
    pub set: String,
    /// Total timeout of one attempt (also the connect and info timeout).
    pub timeout: Duration,
    /// Retries of each operation.
    pub retry: RetryPolicy,
    /// How values are encoded.
    pub codec: Codec,
    /// Authentication; `None` connects without.
    pub credentials: Option<Credentials>,
}

impl AerospikeSettings {
    /// The settings of `spec.history.aerospike` with `compression`, credentials as given (see
    /// [`Credentials::from_env`]). TLS is refused: not supported yet.
    pub fn from_spec(
        spec: &AerospikeSpec,
        compression: &CompressionSpec,
        credentials: Option<Credentials>,
    ) -> Result<Self, HistoryError> {
        if spec.tls.is_some() {
            return Err(HistoryError::Open(String::from(
                "history.aerospike.tls is not supported by this worker yet",
            )));
        }
        if spec.credentials_secret_ref.is_some() && credentials.is_none() {
            return Err(HistoryError::Open(format!(
                "history.aerospike.credentialsSecretRef is set but {ENV_AEROSPIKE_USERNAME} is not"
            )));
        }
        let timeout = spec
            .timeout
            .to_duration()
            .map_err(|error| HistoryError::Open(format!("history.aerospike.timeout: {error}")))?;
        Ok(Self {
            hosts: spec.hosts.iter().map(|h| h.as_str().to_owned()).collect(),
            namespace: spec.namespace.clone(),
            set: spec.set.clone(),
            timeout,
            retry: RetryPolicy::from_spec(&spec.retry)?,
            codec: Codec::from_spec(compression),
            credentials,
        })
    }
}

/// A history store in an Aerospike set. Cheap to clone; clones share the client.
#[derive(Clone)]
pub struct AerospikeStore {
    client: Arc<Client>,
    settings: Arc<AerospikeSettings>,
    read_policy: Arc<ReadPolicy>,
    metrics: StoreMetrics,
}

impl fmt::Debug for AerospikeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AerospikeStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The TTL as Aerospike takes it: whole seconds, rounded up, at least one (zero would mean the
/// namespace default, which may be "never").
fn ttl_seconds(ttl: Duration) -> u32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

impl AerospikeStore {
    /// Connects to the cluster; fails with [`HistoryError::Open`] if no seed answers.
    pub async fn connect(
        settings: AerospikeSettings,
        metrics: StoreMetrics,
    ) -> Result<Self, HistoryError> {
        let mut policy = ClientPolicy {
            timeout: millis(settings.timeout),
            ..ClientPolicy::default()
        };
        if let Some(credentials) = &settings.credentials {
            policy.auth_mode = aerospike::AuthMode::Internal(
                credentials.user.clone(),
                credentials.password.clone(),
            );
        }
        let hosts = settings.hosts.join(",");
        tracing::info!(hosts = %hosts, namespace = %settings.namespace, set = %settings.set, "connecting to Aerospike");
        let client = Client::new(&policy, &hosts).await.map_err(|error| {
            HistoryError::Open(format!("connecting to Aerospike {hosts}: {error}"))
        })?;
        let mut read_policy = ReadPolicy::default();
        read_policy.base_policy.total_timeout = millis(settings.timeout);
        read_policy.base_policy.socket_timeout = millis(settings.timeout);
        read_policy.base_policy.max_retries = 0;
        Ok(Self {
            client: Arc::new(client),
            settings: Arc::new(settings),
            read_policy: Arc::new(read_policy),
            metrics,
        })
    }

    /// The store's metrics handle.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Closes the client's connections.
    pub async fn close(&self) {
        if let Err(error) = self.client.close().await {
            tracing::warn!(%error, "closing the Aerospike client");
        }
    }

    fn write_policy(&self, expiration: Expiration) -> WritePolicy {
        let mut policy = WritePolicy {
            expiration,
            ..WritePolicy::default()
        };
        policy.base_policy.total_timeout = millis(self.settings.timeout);
        policy.base_policy.socket_timeout = millis(self.settings.timeout);
        policy.base_policy.max_retries = 0;
        policy
    }

    /// The value `record` (a read of `key`, `None` if absent) holds, counted as a hit or miss.
    fn value_of(&self, key: &str, record: Option<Record>) -> Result<Option<Vec<u8>>, HistoryError> {
        let Some(mut record) = record else {
            self.metrics.read(false);
            return Ok(None);
        };
        let value = match record.bins.swap_remove(BIN) {
            Some(Value::Blob(stored)) => self.settings.codec.decode(key, &stored)?,
            Some(_) => {
                return Err(HistoryError::Corrupt {
                    key: key.to_owned(),
                    message: format!("bin {BIN} does not hold a blob"),
                });
            }
            None => {
                return Err(HistoryError::Corrupt {
                    key: key.to_owned(),
                    message: format!("the record has no bin {BIN}"),
                });
            }
        };
        self.metrics.read(true);
        Ok(Some(value))
    }

    /// One attempt at reading `as_keys` in one batch command; a row that failed (anything but
    /// found or not found) fails the attempt.
    async fn batch_read(
        &self,
        as_keys: &[Key],
        keys: &[String],
    ) -> Result<Vec<BatchOperation>, AttemptError> {
        let policy = BatchPolicy {
            base_policy: self.read_policy.base_policy.clone(),
            ..BatchPolicy::default()
        };
        let row_policy = BatchReadPolicy::default();
        let mut rows: Vec<BatchOperation> = as_keys
            .iter()
            .map(|key| BatchOperation::read(&row_policy, key.clone(), Bins::from([BIN])))
            .collect();
        self.client
            .batch(&policy, &mut rows)
            .await
            .map_err(|error| classify(error, &keys[0], 0))?;
        for (row, key) in rows.iter().zip(keys) {
            match row.result_code() {
                Some(ResultCode::Ok | ResultCode::KeyNotFoundError) => {}
                code => {
                    let error = row
                        .error()
                        .map_or_else(|| format!("no answer ({code:?})"), ToString::to_string);
                    return Err(AttemptError::Transient(format!("reading {key}: {error}")));
                }
            }
        }
        Ok(rows)
    }

    /// Applies `writes` (at most one per key) in one batch command, retried as a whole — every
    /// row is idempotent, so sending a row again that was applied changes nothing — and answers
    /// per write, as [`HistoryStore::put`] and [`HistoryStore::delete`] would.
    async fn write_batch(&self, writes: &[KeyWrite]) -> Vec<Result<(), HistoryError>> {
        let started = Instant::now();
        let mut outcomes: Vec<Option<Result<(), HistoryError>>> = vec![None; writes.len()];
        let mut rows = Vec::with_capacity(writes.len());
        // Per row: the write it stands for and, for a put, the stored size.
        let mut sent: Vec<(usize, Option<usize>)> = Vec::with_capacity(writes.len());
        for (at, write) in writes.iter().enumerate() {
            match self.batch_row(write) {
                Ok((row, size)) => {
                    rows.push(row);
                    sent.push((at, size));
                }
                Err(error) => outcomes[at] = Some(Err(error)),
            }
        }
        if let Some(&(first, _)) = sent.first() {
            let label = format!("{} and {} more", writes[first].key, sent.len() - 1);
            let policy = BatchPolicy {
                base_policy: self.write_policy(Expiration::NamespaceDefault).base_policy,
                ..BatchPolicy::default()
            };
            // Locked only by the one attempt in flight; a lock whose guard may cross an await.
            let rows = tokio::sync::Mutex::new(rows);
            let result = with_retries(
                self.settings.retry,
                &self.metrics,
                Op::put,
                &label,
                || async {
                    let mut rows = rows.lock().await;
                    self.client
                        .batch(&policy, &mut rows)
                        .await
                        .map_err(|error| classify(error, &label, 0))?;
                    rows.iter().find_map(row_retry).map_or(Ok(()), Err)
                },
            )
            .await;
            let rows = rows.into_inner();
            for (row, &(at, size)) in rows.iter().zip(&sent) {
                let write = &writes[at];
                let outcome = match &result {
                    Ok(()) => row_outcome(row, &write.key, size),
                    Err(error) => Err(error.clone()),
                };
                match (&outcome, size) {
                    (Ok(()), Some(size)) => self.metrics.written(size),
                    (Ok(()), None) => self.metrics.deleted(),
                    (Err(error), Some(_)) => self.metrics.failed(Op::put, error),
                    (Err(error), None) => self.metrics.failed(Op::delete, error),
                }
                outcomes[at] = Some(outcome);
            }
        }
        self.metrics.observe_latency(Op::put, started.elapsed());
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(Ok(())))
            .collect()
    }

    /// The batch row of one write, and the stored size of a put.
    fn batch_row(&self, write: &KeyWrite) -> Result<(BatchOperation, Option<usize>), HistoryError> {
        let key = self.key(&write.key)?;
        match &write.change {
            KeyChange::Put(value, ttl) => {
                let stored = self.settings.codec.encode(&write.key, value)?;
                let size = stored.len();
                let policy = BatchWritePolicy {
                    expiration: Expiration::Seconds(ttl_seconds(*ttl)),
                    ..BatchWritePolicy::default()
                };
                let bin = Bin::new(BIN, Value::Blob(stored));
                let row = BatchOperation::write(&policy, key, [operations::put(&bin)]);
                Ok((row, Some(size)))
            }
            KeyChange::Delete => Ok((
                BatchOperation::delete(&BatchDeletePolicy::default(), key),
                None,
            )),
        }
    }

    fn key(&self, key: &str) -> Result<Key, HistoryError> {
        Key::new(
            self.settings.namespace.clone(),
            self.settings.set.clone(),
            Value::from(key),
        )
        .map_err(|error| HistoryError::Open(format!("building the Aerospike key {key}: {error}")))
    }

    async fn timed<T>(
        &self,
        op: Op,
        run: impl Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        let started = Instant::now();
        let result = run.await;
        self.metrics.observe_latency(op, started.elapsed());
        if let Err(error) = &result {
            self.metrics.failed(op, error);
        }
        result
    }
}

/// Sorts a client error into retry classes; `stored` is the record size for `TooBig`.
fn classify(error: ClientError, key: &str, stored: usize) -> AttemptError {
    match error.kind() {
        ErrorKind::Server { rc, .. } => match rc {
            ResultCode::RecordTooBig => AttemptError::Permanent(HistoryError::TooBig {
                key: key.to_owned(),
                bytes: stored,
            }),
            ResultCode::ServerMemError => AttemptError::Refused(error.to_string()),
            ResultCode::Timeout
            | ResultCode::DeviceOverload
            | ResultCode::KeyBusy
            | ResultCode::PartitionUnavailable
            | ResultCode::ServerError => AttemptError::Transient(error.to_string()),
            _ => AttemptError::Permanent(HistoryError::Unavailable {
                attempts: 1,
                message: error.to_string(),
            }),
        },
        ErrorKind::Timeout
        | ErrorKind::Connection
        | ErrorKind::ConnectionPoolEmpty
        | ErrorKind::NoMoreConnections
        | ErrorKind::MaxErrorRate
        | ErrorKind::InvalidNode => AttemptError::Transient(error.to_string()),
        _ => AttemptError::Permanent(HistoryError::Unavailable {
            attempts: 1,
            message: error.to_string(),
        }),
    }
}

/// Whether a batch write row's answer calls for another attempt: stop-writes, an answer that
/// may change (timeouts, overload, a busy key, a partition in migration), or no answer at all.
fn row_retry(row: &BatchOperation) -> Option<AttemptError> {
    let error = || {
        row.error().map_or_else(
            || format!("no answer ({:?})", row.result_code()),
            ToString::to_string,
        )
    };
    match row.result_code() {
        Some(ResultCode::ServerMemError) => Some(AttemptError::Refused(error())),
        Some(
            ResultCode::Timeout
            | ResultCode::DeviceOverload
            | ResultCode::KeyBusy
            | ResultCode::PartitionUnavailable
            | ResultCode::ServerError,
        )
        | None => Some(AttemptError::Transient(error())),
        Some(_) => None,
    }
}

/// The outcome of a batch write row of `key` (`size`: the stored size of a put) in a batch that
/// needed no further attempt.
fn row_outcome(row: &BatchOperation, key: &str, size: Option<usize>) -> Result<(), HistoryError> {
    match row.result_code() {
        Some(ResultCode::Ok) => Ok(()),
        // Deleting what is not there leaves it not there.
        Some(ResultCode::KeyNotFoundError) if size.is_none() => Ok(()),
        Some(ResultCode::RecordTooBig) => Err(HistoryError::TooBig {
            key: key.to_owned(),
            bytes: size.unwrap_or_default(),
        }),
        code => Err(HistoryError::Unavailable {
            attempts: 1,
            message: row.error().map_or_else(
                || format!("writing {key}: {code:?}"),
                |error| format!("writing {key}: {error}"),
            ),
        }),
    }
}

impl HistoryStore for AerospikeStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        self.timed(Op::get, async {
            let as_key = self.key(key)?;
            let record = with_retries(self.settings.retry, &self.metrics, Op::get, key, || async {
                match self.client.get(&self.read_policy, &as_key, [BIN]).await {
                    Ok(record) => Ok(Some(record)),
                    Err(error)
                        if error.server_result_code() == Some(ResultCode::KeyNotFoundError) =>
                    {
                        Ok(None)
                    }
                    Err(error) => Err(classify(error, key, 0)),
                }
            })
            .await?;
            self.value_of(key, record)
        })
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, HistoryError> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        self.timed(Op::get, async {
            let as_keys = keys
                .iter()
                .map(|key| self.key(key))
                .collect::<Result<Vec<Key>, HistoryError>>()?;
            let label = format!("{first} and {} more", keys.len() - 1);
            let mut rows =
                with_retries(self.settings.retry, &self.metrics, Op::get, &label, || {
                    self.batch_read(&as_keys, keys)
                })
                .await?;
            rows.iter_mut()
                .zip(keys)
                .map(|(row, key)| self.value_of(key, row.take_record()))
                .collect()
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
        self.timed(Op::put, async {
            let as_key = self.key(key)?;
            let stored = self.settings.codec.encode(key, value)?;
            let size = stored.len();
            let bins = [Bin::new(BIN, Value::Blob(stored))];
            let policy = self.write_policy(Expiration::Seconds(ttl_seconds(ttl)));
            with_retries(self.settings.retry, &self.metrics, Op::put, key, || async {
                self.client
                    .put(&policy, &as_key, &bins)
                    .await
                    .map_err(|error| classify(error, key, size))
            })
            .await?;
            self.metrics.written(size);
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), HistoryError> {
        self.timed(Op::delete, async {
            let as_key = self.key(key)?;
            let policy = self.write_policy(Expiration::NamespaceDefault);
            with_retries(
                self.settings.retry,
                &self.metrics,
                Op::delete,
                key,
                || async {
                    match self.client.delete(&policy, &as_key).await {
                        Ok(_) => Ok(()),
                        Err(error)
                            if error.server_result_code() == Some(ResultCode::KeyNotFoundError) =>
                        {
                            Ok(())
                        }
                        Err(error) => Err(classify(error, key, 0)),
                    }
                },
            )
            .await?;
            self.metrics.deleted();
            Ok(())
        })
        .await
    }

    /// Batch commands of [`WRITE_BATCH`] rows, one after the other: one round trip per batch
    /// instead of one per record.
    async fn write_many(&self, writes: &[KeyWrite]) -> Vec<Result<(), HistoryError>> {
        let mut outcomes = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(WRITE_BATCH) {
            outcomes.extend(self.write_batch(chunk).await);
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(7 * 24 * 3600)), 604_800);
        assert_eq!(ttl_seconds(Duration::from_secs(u64::MAX / 2)), u32::MAX);
    }

    #[test]
    fn settings_come_from_the_spec_and_refuse_tls() {
        let spec: AerospikeSpec = serde_json::from_value(serde_json::json!({
            "hosts": ["127.0.0.1:3000", "127.0.0.2:3000"],
            "namespace": "test",
            "set": "sessions",
            "timeout": "250ms",
            "retry": {"attempts": 5, "backoff": "20ms"},
        }))
        .unwrap();
        let settings =
            AerospikeSettings::from_spec(&spec, &CompressionSpec::default(), None).unwrap();
        assert_eq!(settings.hosts, ["127.0.0.1:3000", "127.0.0.2:3000"]);
        assert_eq!(settings.timeout, Duration::from_millis(250));
        assert_eq!(settings.retry.attempts, 5);
        assert_eq!(settings.retry.backoff, Duration::from_millis(20));
        assert_eq!(settings.codec, Codec::default());

        let mut tls = spec.clone();
        tls.tls = Some(serde_json::from_value(serde_json::json!({"name": "aerospike"})).unwrap());
        let error =
            AerospikeSettings::from_spec(&tls, &CompressionSpec::default(), None).unwrap_err();
        assert!(
            error.to_string().contains("tls is not supported"),
            "{error}"
        );
    }

    #[test]
    fn a_credentials_secret_without_its_environment_is_an_open_error() {
        let spec: AerospikeSpec = serde_json::from_value(serde_json::json!({
            "hosts": ["127.0.0.1:3000"],
            "namespace": "test",
            "set": "sessions",
            "credentialsSecretRef": {"name": "aerospike-user"},
        }))
        .unwrap();
        let error =
            AerospikeSettings::from_spec(&spec, &CompressionSpec::default(), None).unwrap_err();
        assert!(
            error.to_string().contains(ENV_AEROSPIKE_USERNAME),
            "{error}"
        );
        let credentials = Credentials {
            user: "sessionizer".into(),
            password: "s3cret".into(),
        };
        let settings =
            AerospikeSettings::from_spec(&spec, &CompressionSpec::default(), Some(credentials))
                .unwrap();
        assert_eq!(settings.credentials.unwrap().user, "sessionizer");
        assert_eq!(
            settings.timeout,
            Duration::from_secs(1),
            "the default timeout"
        );
        assert_eq!(settings.retry.attempts, 3, "the default attempts");
    }

    #[test]
    fn credentials_never_show_their_password() {
        let credentials = Credentials {
            user: "sessionizer".into(),
            password: "s3cret".into(),
        };
        let text = format!("{credentials:?}");
        assert!(
            text.contains("sessionizer") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
