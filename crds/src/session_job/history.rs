//! `spec.history`: the store for closed sessions, kept `ttl` for late and async events.
//!
//! `Aerospike` keeps this large, cold state outside the job (seed 000); `Embedded` keeps it in
//! the pod and in every checkpoint, for single-machine use and as the baseline to compare with.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DurationString;
use crate::names::HostPort;
use crate::refs::{CaSecretRef, CredentialsSecretRef, SecretRef};

/// Default of `history.ttl`: one week, how late async services may still report.
pub const DEFAULT_TTL: &str = "168h";
/// Default of `history.compression.level`: zstd's first fast level. A closed session is a
/// value of around a kilobyte, where building the entropy tables of levels 1 and up costs far
/// more CPU than the few percent of bytes they save.
pub const DEFAULT_ZSTD_LEVEL: i32 = -1;
/// Lowest `history.compression.level`: zstd's fast levels (`zstd --fast=N` is level `-N`) trade
/// ratio for speed; below -7 they barely compress session-sized values.
pub const MIN_ZSTD_LEVEL: i32 = -7;
/// Highest `history.compression.level`.
pub const MAX_ZSTD_LEVEL: i32 = 22;
/// Default of `history.aerospike.retry.attempts`.
pub const DEFAULT_RETRY_ATTEMPTS: i32 = 3;
/// Default of `history.aerospike.retry.backoff`.
pub const DEFAULT_RETRY_BACKOFF: &str = "100ms";
/// Default of `history.aerospike.timeout`.
pub const DEFAULT_AEROSPIKE_TIMEOUT: &str = "1s";
/// Default of `history.aerospike.highWaterMark.warnMargin`.
pub const DEFAULT_WARN_MARGIN_PERCENT: i32 = 10;
/// Default of `history.aerospike.highWaterMark.pollInterval`.
pub const DEFAULT_HWM_POLL_INTERVAL: &str = "30s";

/// Where closed sessions are kept for late and async events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.backend != 'Aerospike' || has(self.aerospike)")
        .message("history.aerospike (hosts, namespace, set) is required when history.backend is Aerospike")
        .field_path(".aerospike")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.backend == 'Aerospike' || !has(self.aerospike)")
        .message("history.aerospike is only allowed when history.backend is Aerospike")
        .field_path(".aerospike")
        .reason(Reason::FieldValueForbidden),
)]
pub struct HistorySpec {
    /// `Embedded` (default): a key-value store inside each worker pod, included in every
    /// checkpoint. `Aerospike`: an external Aerospike cluster (set `aerospike`). Cannot be changed
    /// after creation: migrate with a new SessionJob that side-runs and replaces this one.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("history.backend cannot be changed; create a new SessionJob with sideRun.replaces to migrate"))]
    pub backend: HistoryBackend,
    /// How long a closed session is kept; every write carries this TTL. Late and async events
    /// older than this can no longer be merged. Default: `168h` (7 days).
    #[serde(default = "default_ttl")]
    pub ttl: DurationString,
    /// Client-side compression of stored sessions.
    #[serde(default)]
    pub compression: CompressionSpec,
    /// Aerospike connection. Required when `backend` is `Aerospike`, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aerospike: Option<AerospikeSpec>,
}

impl Default for HistorySpec {
    fn default() -> Self {
        Self {
            backend: HistoryBackend::default(),
            ttl: default_ttl(),
            compression: CompressionSpec::default(),
            aerospike: None,
        }
    }
}

/// Storage backend of the history state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HistoryBackend {
    /// An external Aerospike cluster: the production backend.
    Aerospike,
    /// A persistent key-value store inside each worker pod.
    #[default]
    Embedded,
}

/// Compression of history values, applied by the worker before they leave the process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompressionSpec {
    /// `Zstd` (default) or `None`.
    #[serde(default)]
    pub codec: CompressionCodec,
    /// zstd level from -7 (fastest) to 22 (smallest); -1 to -7 are zstd's fast levels
    /// (`zstd --fast=N`). Ignored for `None`. Default: -1 — on session-sized values (around a
    /// kilobyte) it stores about 3 % more bytes than level 3 for a fraction of the CPU. Any
    /// level's values are read by a worker set to any other, so it can be changed at any time.
    #[serde(default = "default_zstd_level")]
    #[schemars(range(min = MIN_ZSTD_LEVEL, max = MAX_ZSTD_LEVEL))]
    pub level: i32,
}

impl Default for CompressionSpec {
    fn default() -> Self {
        Self {
            codec: CompressionCodec::default(),
            level: default_zstd_level(),
        }
    }
}

/// A compression codec for history values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CompressionCodec {
    /// Zstandard.
    #[default]
    Zstd,
    /// No compression.
    None,
}

/// Connection to the Aerospike cluster that stores history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AerospikeSpec {
    /// Seed nodes as `host:port` (1 to 32); the client discovers the rest of the cluster.
    #[schemars(length(min = 1, max = 32))]
    pub hosts: Vec<HostPort>,
    /// Aerospike namespace (at most 31 characters, no `:` or `;`).
    #[schemars(length(min = 1, max = 31))]
    #[x_kube(validation = Rule::new("!self.contains(':') && !self.contains(';')")
        .message("history.aerospike.namespace must not contain ':' or ';'"))]
    pub namespace: String,
    /// Aerospike set the job's records go to (at most 63 characters, no `:` or `;`).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("!self.contains(':') && !self.contains(';')")
        .message("history.aerospike.set must not contain ':' or ';'"))]
    pub set: String,
    /// Secret with the user name and password. Unset: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// TLS to the cluster. Unset: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AerospikeTls>,
    /// Total timeout of one operation (including its network round trips). Default: `1s`.
    #[serde(default = "default_aerospike_timeout")]
    pub timeout: DurationString,
    /// What the worker does when an operation fails.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Thresholds of the operator's capacity monitor.
    #[serde(default)]
    pub high_water_mark: HighWaterMarkSpec,
}

/// TLS settings for Aerospike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AerospikeTls {
    /// TLS name the nodes' certificates are issued for (Aerospike's `tls-name`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Secret key holding the CA bundle that signs the nodes' certificates. Unset: the system's
    /// trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
    /// Secret of type `kubernetes.io/tls` with a client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
}

/// Bounded retries with a constant backoff; when they are used up the worker fails, its pod
/// restarts and restores from the latest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Attempts per operation, including the first (1 to 100). Default: 3.
    #[serde(default = "default_retry_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub attempts: i32,
    /// Constant wait between attempts. Default: `100ms`.
    #[serde(default = "default_retry_backoff")]
    pub backoff: DurationString,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            attempts: default_retry_attempts(),
            backoff: default_retry_backoff(),
        }
    }
}

/// When the operator warns about Aerospike capacity. Aerospike evicts records once disk or
/// memory use passes its eviction mark (`high-water-disk-pct` / `evict-used-pct`) and refuses
/// writes past its stop-writes mark; the operator reads both marks from the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HighWaterMarkSpec {
    /// Warn (level `Warning`, condition and event) when the used percentage is within this many
    /// points of the eviction mark, e.g. 10 warns at 55 % used with a 65 % mark (0 to 100).
    /// Default: 10.
    #[serde(default = "default_warn_margin")]
    #[schemars(range(min = 0, max = 100))]
    pub warn_margin: i32,
    /// How often the operator queries every node's namespace statistics. Default: `30s`.
    #[serde(default = "default_hwm_poll_interval")]
    pub poll_interval: DurationString,
}

impl Default for HighWaterMarkSpec {
    fn default() -> Self {
        Self {
            warn_margin: default_warn_margin(),
            poll_interval: default_hwm_poll_interval(),
        }
    }
}

fn default_ttl() -> DurationString {
    DEFAULT_TTL.into()
}

fn default_zstd_level() -> i32 {
    DEFAULT_ZSTD_LEVEL
}

fn default_retry_attempts() -> i32 {
    DEFAULT_RETRY_ATTEMPTS
}

fn default_retry_backoff() -> DurationString {
    DEFAULT_RETRY_BACKOFF.into()
}

fn default_aerospike_timeout() -> DurationString {
    DEFAULT_AEROSPIKE_TIMEOUT.into()
}

fn default_warn_margin() -> i32 {
    DEFAULT_WARN_MARGIN_PERCENT
}

fn default_hwm_poll_interval() -> DurationString {
    DEFAULT_HWM_POLL_INTERVAL.into()
}
