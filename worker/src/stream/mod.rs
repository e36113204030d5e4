//! The streaming job: Kafka in, the session engine in the middle, Kafka out. This replica reads
//! exactly the partitions of its key groups from every source topic (manual assignment; see
//! [`consumer`]), routes each message to its key group's engine ([`router`]), produces the
//! outputs ([`producer`]) and commits consumed offsets only once everything produced from them is
//! acknowledged ([`commit`]) — at-least-once, made harmless by the engine's deterministic ids,
//! versions and set-union merges. [`pipeline`] holds the state and steps; [`status`] is what
//! `/status` shows.
//!
//! This module must never commit ahead of delivery, never read a partition outside its key
//! groups, and never keep running after a fatal history error: the worker exits non-zero and its
//! Pod restarts.

pub mod checkpointing;
pub mod commit;
pub mod consumer;
pub mod kafka_security;
pub mod pipeline;
pub mod producer;
pub mod router;
pub mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, StreamConsumer};
use sessionizer_crds::session_job::{SinkMode, SpecError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::checkpoint;
use crate::config::WorkerConfig;
use crate::control::{Control, Phase, StopReport};
use crate::engine::{EngineConfig, EngineError, KeyGroup};
use crate::history::{History, WriteBehind};
use crate::http::WorkerState;
use crate::identity::Identity;
use checkpointing::Checkpointing;
use pipeline::{Pipeline, now_ms};
use router::Router;

/// Why the stream stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The spec could not be turned into engine settings.
    #[error("reading the session settings: {0}")]
    Spec(#[from] SpecError),
    /// A Kafka client call failed.
    #[error("kafka: {0}: {1}")]
    Kafka(&'static str, rdkafka::error::KafkaError),
    /// A source topic is missing or unusable.
    #[error("source topic {topic:?}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong.
        message: String,
    },
    /// The source topics are not co-partitioned.
    #[error("the source topics must have the same number of partitions, but have {0}")]
    PartitionMismatch(String),
    /// The effective sink mode has no topic.
    #[error("sink mode {0:?} has no topic configured")]
    NoSinkTopic(SinkMode),
    /// Credentials the configuration asks for are missing.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A configuration the worker cannot serve yet.
    #[error("unsupported configuration: {0}")]
    Unsupported(&'static str),
    /// The engine failed for good (the history store is unavailable or refuses writes).
    #[error("session engine: {0}")]
    Engine(EngineError),
    /// A record could not be encoded.
    #[error("encoding an output record: {0}")]
    Encode(serde_json::Error),
    /// A record could not be produced or was not acknowledged.
    #[error("producing output: {0}")]
    Produce(String),
    /// A blocking task failed.
    #[error("{0}: the task failed")]
    Task(&'static str),
    /// A checkpoint could not be written, or the one to restore from could not be read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// Timings of the stream loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// How often processing time advances (watermark push, due late updates).
    pub tick: Duration,
    /// How often released offsets are committed.
    pub commit_interval: Duration,
    /// How often `/status` and the gauges are refreshed.
    pub status_interval: Duration,
    /// How often log-end offsets are fetched.
    pub log_end_interval: Duration,
    /// Most messages handled per wake-up before timers and deliveries get a turn.
    pub max_batch: usize,
    /// Most records awaiting acknowledgement before consumption pauses.
    pub max_in_flight: usize,
    /// How long shutdown waits for deliveries in flight.
    pub drain_timeout: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            commit_interval: Duration::from_secs(1),
            status_interval: Duration::from_secs(1),
            log_end_interval: Duration::from_secs(5),
            max_batch: 2048,
            max_in_flight: 100_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs the streaming job of this worker until `shutdown` completes or a control call stops it
/// (either way: stop consuming, wait for the deliveries in flight, write a final checkpoint,
/// commit, and return `Ok`), or a fatal error. Marks `state` ready once the partitions are
/// assigned and the engine runs.
pub async fn run(
    config: WorkerConfig,
    identity: Identity,
    history: History,
    state: Arc<WorkerState>,
    settings: StreamSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StreamError> {
    tokio::pin!(shutdown);
    let mut control = state.take_control().ok_or(StreamError::Unsupported(
        "the stream can run only once per worker state",
    ))?;
    // A stop while starting (the brokers may take a while to answer) is a clean stop.
    let started = tokio::select! {
        started = start(&config, &identity, history, &state, &settings) => started?,
        () = &mut shutdown => {
            info!("stopped while starting");
            return Ok(());
        }
    };
    let Started {
        mut pipeline,
        kafka_consumer,
        log_ends,
        refresher,
    } = started;
    let result = drive(
        &mut pipeline,
        &kafka_consumer,
        &settings,
        &log_ends,
        &mut control,
        &mut shutdown,
    )
    .await;
    // Not ready from here on: consumption has stopped.
    state.set_ready(false);
    refresher.abort();
    let (id, reply) = match result {
        Ok(Exit::Shutdown) => (checkpoint::final_id(now_ms()), None),
        Ok(Exit::Stop { id, reply }) => (id, Some(reply)),
        Err(error) => {
            // Whatever was delivered may still be committed; the rest is replayed.
            if let Err(commit_error) = pipeline.commit(&kafka_consumer, CommitMode::Sync).await {
                warn!(error = %commit_error, "committing delivered offsets while failing");
            }
            return Err(error);
        }
    };
    state.set_phase(Phase::Stopping);
    info!(
        in_flight = pipeline.sink.in_flight(),
        checkpoint = %id,
        "stopping: draining deliveries, then a final checkpoint"
    );
    let outcome = stop(&mut pipeline, &kafka_consumer, &settings, id).await;
    pipeline.publish_status(&log_ends.borrow());
    match outcome {
        Ok(report) => {
            info!(checkpoint = %report.checkpoint_id, "stream stopped");
            state.set_stopped(report.clone());
            if let Some(reply) = reply {
                let _ = reply.send(Ok(report));
            }
            Ok(())
        }
        Err(error) => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error.to_string()));
            }
            Err(error)
        }
    }
}

/// Why [`drive`] returned without an error.
enum Exit {
    /// The process is shutting down.
    Shutdown,
    /// `POST /control/stop`.
    Stop {
        id: String,
        reply: tokio::sync::oneshot::Sender<Result<StopReport, String>>,
    },
}

/// Drains deliveries, writes the final checkpoint `id` (when the job has a checkpoint store),
/// commits.
async fn stop(
    pipeline: &mut Pipeline,
    kafka_consumer: &StreamConsumer,
    settings: &StreamSettings,
    id: String,
) -> Result<StopReport, StreamError> {
    pipeline
        .sink
        .drain(&mut pipeline.ledger, settings.drain_timeout)
        .await?;
    let checkpoint = if pipeline.checkpointing.is_some() {
        Some(
            pipeline
                .checkpoint_now(id.clone(), true, settings.drain_timeout)
                .await?,
        )
    } else {
        None
    };
    pipeline.commit(kafka_consumer, CommitMode::Sync).await?;
    let key_groups = pipeline.router.key_groups().collect();
    Ok(StopReport {
        checkpoint_id: id,
        key_groups,
        checkpoint,
    })
}

/// What [`start`] sets up.
struct Started {
    pipeline: Pipeline,
    kafka_consumer: Arc<StreamConsumer>,
    log_ends: watch::Receiver<BTreeMap<commit::TopicPartition, i64>>,
    refresher: tokio::task::JoinHandle<()>,
}

/// Reads the partition count, assigns this worker's partitions from the committed offsets,
/// creates the producer and the key groups, and marks the worker ready.
async fn start(
    config: &WorkerConfig,
    identity: &Identity,
    history: History,
    state: &Arc<WorkerState>,
    settings: &StreamSettings,
) -> Result<Started, StreamError> {
    let engine_config = EngineConfig::from_worker(config)?;
    let topics: Vec<String> = config
        .spec
        .kafka
        .source_topics
        .iter()
        .map(|t| t.name.to_string())
        .collect();

    let metadata = consumer::create_metadata_client(config)?;
    let (metadata, counts) = {
        let topics = topics.clone();
        tokio::task::spawn_blocking(move || {
            let counts = consumer::partition_counts(&metadata, &topics);
            (metadata, counts)
        })
        .await
        .map_err(|_| StreamError::Task("fetching topic metadata"))?
    };
    let partitions = router::common_partition_count(&counts?)?;
    let router = Router::new(topics, identity.key_groups(partitions));
    let kafka_consumer = Arc::new(consumer::create_consumer(config)?);
    let committed = {
        let (kafka_consumer, router) = (kafka_consumer.clone(), router.clone());
        tokio::task::spawn_blocking(move || consumer::committed_offsets(&kafka_consumer, &router))
            .await
            .map_err(|_| StreamError::Task("fetching committed offsets"))??
    };
    let checkpointing = Checkpointing::open(
        config,
        partitions,
        router.key_groups(),
        &history,
        engine_config.history_prefix.clone(),
        now_ms(),
    )
    .map_err(|e| StreamError::Checkpoint(e.to_string()))?;
    let mut restored = checkpointing
        .restore(&config.spec.checkpoints.restore_from())
        .await
        .map_err(|e| StreamError::Checkpoint(e.to_string()))?;
    let start_offsets = start_offsets(&committed, router.topics(), &restored);
    {
        let (kafka_consumer, router, start) = (
            kafka_consumer.clone(),
            router.clone(),
            start_offsets.clone(),
        );
        tokio::task::spawn_blocking(move || consumer::assign(&kafka_consumer, &router, &start))
            .await
            .map_err(|_| StreamError::Task("assigning partitions"))??;
    }
    let producer = producer::create_producer(config)?;
    let sink = producer::Sink::new(producer, config, state.metrics().stream().clone())?;
    let history = WriteBehind::new(history);
    let groups = router
        .key_groups()
        .map(|kg| {
            let engine = engine_config.for_key_group(kg);
            match restored.remove(&kg) {
                Some(found) => KeyGroup::restore(engine, history.clone(), found.checkpoint.state),
                None => KeyGroup::new(kg, engine, history.clone()),
            }
        })
        .collect();
    let (log_ends, refresher) =
        consumer::spawn_log_end_refresher(metadata, &router, settings.log_end_interval);
    info!(
        partitions,
        first_key_group = router.key_groups().start,
        end_key_group = router.key_groups().end,
        topics = ?router.topics(),
        group = %consumer::consumer_group(config),
        start = ?start_offsets,
        checkpoints = %checkpointing.describe(),
        effective_sink = config.effective_sink.as_str(),
        "stream started"
    );
    if router.slots() == 0 {
        warn!(partitions, "this worker owns no key groups; it idles");
    }
    let mut pipeline = Pipeline::new(
        router,
        partitions,
        groups,
        history,
        sink,
        state.clone(),
        now_ms().saturating_add(engine_config.idle_source_timeout_ms),
    );
    pipeline.checkpointing = Some(checkpointing);
    // Until something is consumed, the position of a partition is where it starts.
    pipeline.positions.extend(
        start_offsets
            .iter()
            .filter_map(|(tp, offset)| offset.map(|n| (*tp, n))),
    );
    pipeline.publish_status(&log_ends.borrow());
    state.set_ready(true);
    state.set_phase(Phase::Running);
    Ok(Started {
        pipeline,
        kafka_consumer,
        log_ends,
        refresher,
    })
}

/// The loop: shutdown first, then acknowledgements, timers, and input in batches.
async fn drive(
    p: &mut Pipeline,
    kafka_consumer: &StreamConsumer,
    settings: &StreamSettings,
    log_ends: &watch::Receiver<BTreeMap<commit::TopicPartition, i64>>,
    control: &mut tokio::sync::mpsc::Receiver<Control>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Exit, StreamError> {
    tokio::pin!(shutdown);
    let mut messages = kafka_consumer.stream();
    let mut history_ttl = p.state.subscribe_history_ttl();
    let mut ticks = tokio::time::interval(settings.tick);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_commit = Instant::now() + settings.commit_interval;
    let mut next_status = Instant::now() + settings.status_interval;
    // One buffer for every batch (see `Pipeline::on_batch`).
    let mut batch = Vec::with_capacity(settings.max_batch);
    loop {
        let room = p.sink.in_flight() < settings.max_in_flight;
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(Exit::Shutdown),
            Some(request) = control.recv() => match request {
                Control::Stop { id, reply } => return Ok(Exit::Stop { id, reply }),
                Control::Checkpoint { reply } => {
                    let id = checkpoint::final_id(now_ms());
                    let outcome = p.checkpoint_now(id, false, settings.drain_timeout).await;
                    let _ = reply.send(outcome.map_err(|e| e.to_string()));
                }
            },
            Some(delivered) = p.sink.next_delivery(), if p.sink.in_flight() > 0 => {
                p.sink.settle(delivered, &mut p.ledger)?;
                // Every other acknowledgement that is already in, without waiting.
                for _ in 0..settings.max_batch {
                    match p.sink.delivered_now() {
                        Some(delivered) => p.sink.settle(delivered, &mut p.ledger)?,
                        None => break,
                    }
                }
            }
            _ = ticks.tick() => {
                apply_history_ttl(p, &mut history_ttl);
                p.on_tick(now_ms()).await?;
                p.maybe_checkpoint(now_ms(), settings.drain_timeout).await?;
                let now = Instant::now();
                if now >= next_commit {
                    next_commit = now + settings.commit_interval;
                    match p.commit(kafka_consumer, CommitMode::Async).await {
                        Err(error @ StreamError::Engine(_)) => return Err(error),
                        Err(error) => {
                            warn!(%error, "committing offsets; retrying at the next interval");
                        }
                        Ok(()) => {}
                    }
                }
                if now >= next_status {
                    next_status = now + settings.status_interval;
                    p.publish_status(&log_ends.borrow());
                }
            }
            message = messages.next(), if room => {
                let now = now_ms();
                let seq = p.ledger.open();
                let mut next = message;
                while let Some(message) = next {
                    match message {
                        Ok(message) => batch.extend(p.consumed(&message)),
                        Err(error) => warn!(%error, "consuming"),
                    }
                    if batch.len() >= settings.max_batch {
                        break;
                    }
                    // More without waiting, if librdkafka already has them.
                    next = messages.next().now_or_never().flatten();
                }
                apply_history_ttl(p, &mut history_ttl);
                p.on_batch(seq, &mut batch, now).await?;
                p.ledger.seal(seq);
            }
        }
    }
}

/// Hands a new `history.ttl` (see [`crate::reload`]) to every key group, between two steps of
/// the loop: every history write after this uses it.
fn apply_history_ttl(
    p: &mut Pipeline,
    history_ttl: &mut watch::Receiver<Option<std::time::Duration>>,
) {
    if history_ttl.has_changed().unwrap_or(false)
        && let Some(ttl) = *history_ttl.borrow_and_update()
    {
        for group in &mut p.groups {
            group.set_history_ttl(ttl);
        }
        info!(
            ttl_seconds = ttl.as_secs(),
            "history.ttl changed; later history writes use it"
        );
    }
}

/// Where each assigned partition starts: a restored key group exactly where its state was
/// taken, whatever the consumer group committed since; a partition the checkpoint has no offset
/// for had consumed nothing when it was taken (it started from the beginning), so it starts from
/// the beginning again (`None`). Other partitions start at their committed offset.
fn start_offsets(
    committed: &BTreeMap<commit::TopicPartition, Option<i64>>,
    topics: &[String],
    restored: &BTreeMap<u32, checkpointing::Restored>,
) -> BTreeMap<commit::TopicPartition, Option<i64>> {
    let mut start = committed.clone();
    for (t, topic) in topics.iter().enumerate() {
        for (kg, found) in restored {
            let offset = found.checkpoint.offsets.get(topic).copied();
            start.insert((t, *kg as i32), offset);
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::KeyGroupCheckpoint;

    #[test]
    fn restored_key_groups_start_at_their_checkpoint_never_at_a_later_commit() {
        let topics = vec![String::from("views")];
        let committed =
            BTreeMap::from([((0, 0), Some(867)), ((0, 1), Some(953)), ((0, 2), Some(5))]);
        let restored = BTreeMap::from([
            (
                0,
                checkpointing::Restored {
                    id: String::from("chk-1"),
                    checkpoint: KeyGroupCheckpoint {
                        key_group: 0,
                        offsets: BTreeMap::from([(String::from("views"), 400)]),
                        ..KeyGroupCheckpoint::default()
                    },
                },
            ),
            (
                1,
                checkpointing::Restored {
                    id: String::from("chk-1"),
                    // Taken before anything of partition 1 was consumed.
                    checkpoint: KeyGroupCheckpoint {
                        key_group: 1,
                        ..KeyGroupCheckpoint::default()
                    },
                },
            ),
        ]);
        let start = start_offsets(&committed, &topics, &restored);
        assert_eq!(
            start[&(0, 0)],
            Some(400),
            "the checkpoint's offset, not the commit"
        );
        assert_eq!(start[&(0, 1)], None, "from the beginning, not the commit");
        assert_eq!(
            start[&(0, 2)],
            Some(5),
            "not restored: the committed offset"
        );
    }
}
