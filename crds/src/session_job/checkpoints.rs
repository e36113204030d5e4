//! `spec.checkpoints`: where self-contained checkpoints are written, how many are kept, and what a
//! (re)started job restores from.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{DurationString, cel_well_formed};
use crate::refs::SecretRef;

/// Default of `checkpoints.interval`.
pub const DEFAULT_INTERVAL: &str = "5m";
/// Default of `checkpoints.retain`.
pub const DEFAULT_RETAIN: i32 = 3;
/// Default of `checkpoints.restoreFrom`.
pub const DEFAULT_RESTORE_FROM: &str = "Latest";

/// The URL schemes a checkpoint location may use.
pub const SUPPORTED_SCHEMES: [&str; 4] = ["file", "s3", "gs", "az"];

/// Checkpoint storage and retention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(format!(
        "!has(self.maxAge) || !{} || !{} || duration(self.maxAge) > duration(self.interval)",
        cel_well_formed("self.maxAge"),
        cel_well_formed("self.interval"),
    ))
        .message("checkpoints.maxAge must be longer than checkpoints.interval")
        .field_path(".maxAge"),
    validation = Rule::new("!has(self.endpoint) || self.location.startsWith('s3://')")
        .message("checkpoints.endpoint is only used with s3:// locations")
        .field_path(".endpoint")
        .reason(Reason::FieldValueForbidden),
)]
pub struct CheckpointsSpec {
    /// Where checkpoints are written, as a URL: `file:///absolute/path` (a volume mounted in
    /// every worker pod), `s3://bucket/prefix` (AWS S3 or an S3-compatible store, see
    /// `endpoint`), `gs://bucket/prefix` (Google Cloud Storage) or `az://container/prefix`
    /// (Azure Blob Storage). Each checkpoint goes to its own directory below it.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^(file:///[^[:space:]]*|(s3|gs|az)://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[^[:space:]]*)?)$')")
        .message("checkpoints.location must be file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"))]
    pub location: String,
    /// Secret whose keys are given to the workers as environment variables for the object
    /// store, e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `GOOGLE_SERVICE_ACCOUNT_KEY`, `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`.
    /// Unset: the pod's ambient credentials (workload identity), or none for `file://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Endpoint of an S3-compatible store (`http://` or `https://` URL), e.g. MinIO. Only for
    /// `s3://` locations. Unset: AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^[:space:]/]+(/[^[:space:]]*)?$')")
        .message("checkpoints.endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Time between the starts of two checkpoints. Default: `5m`.
    #[serde(default = "default_interval")]
    pub interval: DurationString,
    /// How many complete checkpoints to keep (1 to 1000); older ones are deleted. The latest
    /// complete checkpoint, and any a cutover or restore still needs, are never deleted.
    /// Default: 3.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 1000))]
    pub retain: i32,
    /// Checkpoints older than this are deleted even if fewer than `retain` would remain (the
    /// latest complete one is always kept). Must be longer than `interval`. Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<DurationString>,
    /// What a job restores from when it starts without a running state: `Latest` (default: the
    /// newest complete checkpoint at `location`, or empty state if there is none), `None` (start
    /// empty, from the consumer group's committed offsets) or a checkpoint id such as
    /// `chk-000042`.
    #[serde(default = "default_restore_from")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self == 'Latest' || self == 'None' || self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')")
        .message("checkpoints.restoreFrom must be Latest, None or a checkpoint id (letters, digits, '.', '_', '-')"))]
    pub restore_from: String,
    /// What happens to the checkpoints when the SessionJob is deleted: `false` (default) leaves
    /// them at `location`, e.g. to start a new job from them; `true` makes the operator delete
    /// every checkpoint of the job before the SessionJob goes (through the finalizer
    /// `sessionizer.dev/checkpoints`). If the store cannot be reached, deletion is retried with
    /// backoff for up to 10 minutes; then the checkpoints are left, a Warning event says so, and
    /// the SessionJob goes anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_on_job_deletion: bool,
}

/// What a starting job restores from, parsed from `checkpoints.restoreFrom`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest complete checkpoint, or empty state when there is none.
    Latest,
    /// Empty state.
    None,
    /// The checkpoint with this id.
    Id(String),
}

impl CheckpointsSpec {
    /// `restoreFrom` as an enum.
    pub fn restore_from(&self) -> RestoreFrom {
        match self.restore_from.as_str() {
            "Latest" => RestoreFrom::Latest,
            "None" => RestoreFrom::None,
            id => RestoreFrom::Id(id.to_owned()),
        }
    }

    /// The scheme of `location` (one of [`SUPPORTED_SCHEMES`]), or `None` when the location is
    /// not a supported URL.
    pub fn scheme(&self) -> Option<&'static str> {
        SUPPORTED_SCHEMES.into_iter().find(|scheme| {
            self.location
                .strip_prefix(scheme)
                .is_some_and(|rest| rest.starts_with("://"))
        })
    }
}

fn default_interval() -> DurationString {
    DEFAULT_INTERVAL.into()
}

fn default_retain() -> i32 {
    DEFAULT_RETAIN
}

fn default_restore_from() -> String {
    DEFAULT_RESTORE_FROM.into()
}
