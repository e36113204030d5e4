//! The S3-compatible object store of the local environment: MinIO, built from its Go module, on
//! loopback with per-run credentials, plus bucket creation and `object_store` helpers.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::net::{free_port, loopback};
use crate::process::ManagedProcess;
use crate::tools::go_binary;
use crate::{Error, Result, wait};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The region MinIO answers for; any value works as long as clients agree.
pub const REGION: &str = "us-east-1";

/// A running S3 server.
#[derive(Debug)]
pub struct S3Server {
    process: ManagedProcess,
    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    /// The access key id of the root user.
    pub access_key: String,
    /// The secret key of the root user.
    pub secret_key: String,
}

impl S3Server {
    /// Starts MinIO with its data under `dir` and waits until it reports ready.
    pub async fn start(dir: &Path) -> Result<Self> {
        let (port, console_port) = (free_port()?, free_port()?);
        let endpoint = format!("http://{}", loopback(port));
        let access_key = "sessionizer".to_owned();
        let secret_key = format!("local-secret-{}", std::process::id());
        let data = dir.join("s3");
        std::fs::create_dir_all(&data).map_err(Error::io("creating", &data))?;
        let mut command = Command::new(go_binary("minio", "MINIO_VERSION", "minio")?);
        command
            .args(["server", "--quiet", "--address"])
            .arg(loopback(port).to_string())
            .arg("--console-address")
            .arg(loopback(console_port).to_string())
            .arg(&data)
            .env("MINIO_ROOT_USER", &access_key)
            .env("MINIO_ROOT_PASSWORD", &secret_key)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .env("MINIO_CALLHOME_ENABLE", "off")
            .env("HOME", &data);
        let process = ManagedProcess::start("minio", command, &dir.join("logs/minio.log"))?;
        let server = Self {
            process,
            endpoint,
            access_key,
            secret_key,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/minio/health/ready", self.endpoint);
        wait::until("minio to report ready", READY_TIMEOUT, || async {
            self.process.ensure_running()?;
            let response = http.get(&url).send().await.map_err(s3_err)?;
            Ok::<_, Error>(response.status().is_success().then_some(()))
        })
        .await
    }

    /// Creates `bucket` (succeeds if this user already owns it).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let endpoint = self
            .endpoint
            .parse()
            .map_err(|e| Error::S3(format!("{e}")))?;
        let bucket = Bucket::new(endpoint, UrlStyle::Path, bucket.to_owned(), REGION)
            .map_err(|e| Error::S3(format!("bucket {bucket}: {e}")))?;
        let credentials = Credentials::new(&self.access_key, &self.secret_key);
        let url = bucket
            .create_bucket(&credentials)
            .sign(Duration::from_secs(60));
        let response = reqwest::Client::new()
            .put(url.as_str())
            .send()
            .await
            .map_err(s3_err)?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
            Ok(())
        } else {
            Err(Error::S3(format!(
                "creating bucket {}: {status}: {body}",
                bucket.name()
            )))
        }
    }

    /// An `object_store` client for `bucket` on this server.
    pub fn object_store(&self, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>> {
        crate::kubeconfig::install_crypto_provider();
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(REGION)
            .with_bucket_name(bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .map_err(|e| Error::S3(format!("object_store client for {bucket}: {e}")))?;
        Ok(Arc::new(store))
    }

    /// Fails if the server has exited.
    pub fn ensure_running(&self) -> Result<()> {
        self.process.ensure_running()
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        self.process.log()
    }
}

fn s3_err(error: reqwest::Error) -> Error {
    Error::S3(error.to_string())
}
