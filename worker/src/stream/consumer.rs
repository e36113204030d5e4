//! The Kafka clients of the stream: their configuration from the job's spec, the partition count
//! of the source topics, the manual assignment of this worker's partitions, and the background
//! task that keeps log-end offsets fresh for `/status` and the lag gauge.
//!
//! The worker never joins a consumer-group rebalance: which partitions it reads follows from its
//! identity alone, so two replicas can never read the same key group. The group id is used only
//! to store committed offsets. Nothing here may block the async runtime: metadata and offset
//! queries run on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::StreamError;
use super::commit::TopicPartition;
use super::router::Router;
use crate::config::WorkerConfig;

/// How long one metadata or offsets query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings every client of the job shares: brokers, TLS and SASL.
pub fn client_config(config: &WorkerConfig) -> Result<ClientConfig, StreamError> {
    let kafka = &config.spec.kafka;
    let brokers: Vec<String> = kafka
        .bootstrap_servers
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers.join(","))
        .set("client.id", format!("sessionizer-{}", config.job));
    super::kafka_security::apply(kafka, &mut client, |name| std::env::var(name).ok())?;
    Ok(client)
}

/// The consumer group of the job: `spec.kafka.consumerGroup`, else the job's name (the rule of
/// `SessionJob::consumer_group`).
pub fn consumer_group(config: &WorkerConfig) -> String {
    config
        .spec
        .kafka
        .consumer_group
        .clone()
        .unwrap_or_else(|| config.job.clone())
}

/// The source consumer: manual assignment, offsets committed by the worker only after the
/// outputs are delivered, starting from the committed offset or else the earliest.
pub fn create_consumer(config: &WorkerConfig) -> Result<StreamConsumer, StreamError> {
    let mut client = client_config(config)?;
    client
        .set("group.id", consumer_group(config))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Larger fetches: fewer round trips at high throughput.
        .set("fetch.min.bytes", "1048576")
        .set("max.partition.fetch.bytes", "4194304")
        .set("fetch.wait.max.ms", "100")
        .set("queued.min.messages", "100000")
        // Bounds the prefetch buffer per partition (librdkafka's default is 64 MiB).
        .set("queued.max.messages.kbytes", "32768")
        // Once a partition's prefetch queue is over those bounds librdkafka waits this long
        // before it looks again (default 1 s): long enough to starve a consumer that drains its
        // queue faster than that.
        .set("fetch.queue.backoff.ms", "20");
    client
        .create()
        .map_err(|source| StreamError::Kafka("creating the consumer", source))
}

/// A plain client for metadata and log-end offsets (no group).
pub fn create_metadata_client(config: &WorkerConfig) -> Result<BaseConsumer, StreamError> {
    client_config(config)?
        .create()
        .map_err(|source| StreamError::Kafka("creating the metadata client", source))
}

/// `(topic, partition count)` of every topic, as the brokers report them (0 for a topic that
/// does not exist). Blocking.
pub fn partition_counts(
    client: &BaseConsumer,
    topics: &[String],
) -> Result<Vec<(String, usize)>, StreamError> {
    topics
        .iter()
        .map(|topic| {
            let metadata = client
                .fetch_metadata(Some(topic), QUERY_TIMEOUT)
                .map_err(|source| StreamError::Kafka("fetching topic metadata", source))?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            Ok((topic.clone(), count))
        })
        .collect()
}

/// How long startup keeps asking for the group's committed offsets (a freshly started broker
/// answers "coordinator loading" / "not coordinator" for a while).
const COMMITTED_DEADLINE: Duration = Duration::from_secs(120);

/// The group's committed offsets of this worker's partitions, `None` where nothing is committed.
/// Asked explicitly, with retries, rather than left to the assignment (`Offset::Stored`):
/// librdkafka does not retry that lookup after a coordinator error and the partitions would
/// never start. Blocking.
pub fn committed_offsets(
    consumer: &StreamConsumer,
    router: &Router,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, StreamError> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in router.assignment() {
        list.add_partition(&router.topics()[topic], partition);
    }
    let started = std::time::Instant::now();
    loop {
        let attempt = consumer
            .committed_offsets(list.clone(), QUERY_TIMEOUT)
            .map_err(|source| StreamError::Kafka("fetching committed offsets", source))
            .and_then(|answer| {
                router
                    .assignment()
                    .into_iter()
                    .map(|(topic, partition)| {
                        let element = answer
                            .find_partition(&router.topics()[topic], partition)
                            .ok_or(StreamError::Topic {
                                topic: router.topics()[topic].clone(),
                                message: format!(
                                    "no committed offset answer for partition {partition}"
                                ),
                            })?;
                        element.error().map_err(|source| {
                            StreamError::Kafka("fetching committed offsets", source)
                        })?;
                        let offset = match element.offset() {
                            Offset::Offset(n) if n >= 0 => Some(n),
                            _ => None,
                        };
                        Ok(((topic, partition), offset))
                    })
                    .collect::<Result<BTreeMap<_, _>, StreamError>>()
            });
        match attempt {
            Ok(offsets) => return Ok(offsets),
            Err(error) if started.elapsed() < COMMITTED_DEADLINE => {
                tracing::info!(%error, "the group's committed offsets are not available yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Assigns this worker's partitions of every source topic, each starting from `start` (the
/// group's committed offset) or else from the beginning. Blocking: it first asks for the
/// topics' metadata through `consumer` itself, so its fetching starts at once.
pub fn assign(
    consumer: &StreamConsumer,
    router: &Router,
    start: &BTreeMap<TopicPartition, Option<i64>>,
) -> Result<(), StreamError> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in router.assignment() {
        let offset = match start.get(&(topic, partition)).copied().flatten() {
            Some(n) => Offset::Offset(n),
            None => Offset::Beginning,
        };
        list.add_partition_offset(&router.topics()[topic], partition, offset)
            .map_err(|source| StreamError::Kafka("building the assignment", source))?;
    }
    warm_metadata(consumer, router.topics());
    consumer
        .assign(&list)
        .map_err(|source| StreamError::Kafka("assigning partitions", source))
}

/// Fills `consumer`'s metadata cache with `topics`, so that partitions assigned next know their
/// leader at once. Without it librdkafka starts them with no leader and only finds one at its
/// next metadata refresh: about a second in which an assigned worker fetches nothing — at every
/// start, restart and cutover. Only an optimization: a failure is logged and the assignment
/// goes ahead (librdkafka then finds the leaders itself, a second later).
fn warm_metadata(consumer: &StreamConsumer, topics: &[String]) {
    for topic in topics {
        if let Err(error) = consumer.fetch_metadata(Some(topic), QUERY_TIMEOUT) {
            tracing::warn!(%error, %topic, "fetching topic metadata before assigning its partitions");
        }
    }
}

/// The offset list to commit for `positions` (next offsets to consume).
pub fn commit_list(
    router: &Router,
    positions: &BTreeMap<TopicPartition, i64>,
) -> Result<TopicPartitionList, StreamError> {
    let mut list = TopicPartitionList::new();
    for (&(topic, partition), &next) in positions {
        list.add_partition_offset(&router.topics()[topic], partition, Offset::Offset(next))
            .map_err(|source| StreamError::Kafka("building the commit", source))?;
    }
    Ok(list)
}

/// Log-end offsets of the assigned partitions, refreshed every `every` on the blocking pool
/// until the returned task is aborted. Failures keep the last known values.
pub fn spawn_log_end_refresher(
    client: BaseConsumer,
    router: &Router,
    every: Duration,
) -> (
    watch::Receiver<BTreeMap<TopicPartition, i64>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(BTreeMap::new());
    let client = Arc::new(client);
    let topics = router.topics().to_vec();
    let assignment = router.assignment();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let client = client.clone();
            let topics = topics.clone();
            let assignment = assignment.clone();
            let fetched = tokio::task::spawn_blocking(move || {
                let mut ends = BTreeMap::new();
                for (topic, partition) in assignment {
                    match client.fetch_watermarks(&topics[topic], partition, QUERY_TIMEOUT) {
                        Ok((_, high)) => {
                            ends.insert((topic, partition), high);
                        }
                        Err(error) => tracing::debug!(
                            %error,
                            topic = %topics[topic],
                            partition,
                            "fetching the log-end offset"
                        ),
                    }
                }
                ends
            })
            .await;
            if let Ok(ends) = fetched {
                tx.send_modify(|known| known.extend(ends));
            }
        }
    });
    (rx, task)
}
