//! Apache Kafka for the local environment: one KRaft node (broker and controller in one JVM)
//! from the Maven Central jars `build.sh` fetched, on loopback, plus the admin helpers tests use
//! to create topics and read offsets.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::net::{free_port, loopback};
use crate::process::ManagedProcess;
use crate::tools::tool_dir;
use crate::{Error, Result, wait};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const JVM_HEAP: &str = "-Xmx768m";

/// A running single-node Kafka cluster.
#[derive(Debug)]
pub struct Kafka {
    process: ManagedProcess,
    /// `host:port` of the PLAINTEXT listener, for `bootstrap.servers`.
    pub bootstrap: String,
}

impl Kafka {
    /// Formats a fresh KRaft log directory under `dir`, starts the broker and waits until it
    /// answers metadata requests.
    pub async fn start(dir: &Path) -> Result<Self> {
        let home = tool_dir("kafka", "KAFKA_VERSION")?;
        let classpath = format!("{}/libs/*", home.display());
        let (broker_port, controller_port) = (free_port()?, free_port()?);
        let bootstrap = loopback(broker_port).to_string();
        let config_dir = dir.join("kafka");
        std::fs::create_dir_all(&config_dir).map_err(Error::io("creating", &config_dir))?;
        let properties = config_dir.join("server.properties");
        let log4j = config_dir.join("log4j2.properties");
        write_file(
            &properties,
            &server_properties(dir, broker_port, controller_port),
        )?;
        write_file(&log4j, LOG4J2)?;

        let java = |main: &str| {
            let mut command = Command::new("java");
            command.args([
                JVM_HEAP,
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                &format!("-Dlog4j2.configurationFile={}", log4j.display()),
                "-cp",
                &classpath,
                main,
            ]);
            command
        };

        let mut format = java("kafka.tools.StorageTool");
        format.args([
            "format",
            "--ignore-formatted",
            "--cluster-id",
            &cluster_id(),
            "--config",
            &properties.display().to_string(),
        ]);
        let format_log = dir.join("logs/kafka-format.log");
        let formatter = ManagedProcess::start("kafka-storage-format", format, &format_log)?;
        wait::until("kafka storage format", READY_TIMEOUT, || async {
            match formatter.ensure_running() {
                Ok(()) => Ok(None),
                Err(Error::Exited { status, .. }) if status.contains("exit status: 0") => {
                    Ok(Some(()))
                }
                Err(error) => Err(error),
            }
        })
        .await
        .map_err(|e| with_log_tail(e, &format_log))?;

        let mut broker = java("kafka.Kafka");
        broker.arg(&properties);
        let process = ManagedProcess::start("kafka", broker, &dir.join("logs/kafka.log"))?;
        let kafka = Self { process, bootstrap };
        kafka.wait_ready().await?;
        Ok(kafka)
    }

    async fn wait_ready(&self) -> Result<()> {
        let consumer: BaseConsumer = self.client_config().create().map_err(kafka_err("client"))?;
        wait::until(
            "kafka to answer metadata requests",
            READY_TIMEOUT,
            || async {
                self.process.ensure_running()?;
                let metadata = consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .map_err(kafka_err("fetching metadata"))?;
                Ok::<_, Error>((!metadata.brokers().is_empty()).then_some(()))
            },
        )
        .await
    }

    /// A client configuration pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// Creates `topic` with `partitions` partitions (a no-op if it exists with that count) and
    /// waits until every partition has a leader.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(kafka_err("admin client"))?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&new], &AdminOptions::new())
            .await
            .map_err(kafka_err("creating topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Other(format!("creating topic {name}: {code}")));
                }
            }
        }
        let consumer: BaseConsumer = self.client_config().create().map_err(kafka_err("client"))?;
        let what = format!("topic {topic} with {partitions} partitions to have leaders");
        wait::until(&what, READY_TIMEOUT, || async {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .map_err(kafka_err("fetching metadata"))?;
            let ready = metadata.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            Ok::<_, Error>(ready.then_some(()))
        })
        .await
    }

    /// Fails if the broker has exited.
    pub fn ensure_running(&self) -> Result<()> {
        self.process.ensure_running()
    }

    /// The broker's log file.
    pub fn log(&self) -> &Path {
        self.process.log()
    }

    /// The broker's process id (benchmarks read the CPU it used from `/proc`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Wraps an rdkafka error with what was being done.
pub(crate) fn kafka_err(context: &'static str) -> impl Fn(rdkafka::error::KafkaError) -> Error {
    move |source| Error::Kafka {
        context: context.to_owned(),
        source,
    }
}

fn with_log_tail(error: Error, log: &Path) -> Error {
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = tail.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    Error::Other(format!("{error}\nlast lines of {}:\n{tail}", log.display()))
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io("writing", path))
}

/// A KRaft cluster id: 16 bytes, URL-safe base64 without padding, unique per run, starting
/// with a letter.
fn cluster_id() -> String {
    use base64::Engine;
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        hasher.write_u32(std::process::id());
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    // The first character comes from the top 6 bits of the first byte; keeping the top bit clear
    // keeps it a letter, so `kafka-storage` never reads an id starting with '-' as an option.
    bytes[0] &= 0x7f;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn server_properties(dir: &Path, broker_port: u16, controller_port: u16) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={logs}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
",
        logs = dir.join("kafka/data").display()
    )
}

const LOG4J2: &str = "status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_never_look_like_an_option() {
        for _ in 0..2_000 {
            let id = cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(id.starts_with(|c: char| c.is_ascii_alphabetic()), "{id}");
        }
    }
}
