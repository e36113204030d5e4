//! The output side of the stream: turns engine outputs into Kafka records (session records as
//! JSON keyed by session key to the effective sink's topic; quarantined inputs with their reason
//! to the quarantine topic, when one is set), counts the records in flight, bounded, and reports
//! each acknowledgement to the [`CommitLedger`].
//!
//! Each record carries the number of its batch as librdkafka's delivery opaque; the producer's
//! polling thread hands every delivery report, tagged with it, to one channel the stream loop
//! reads. That costs a channel slot per record, where a delivery future cost a oneshot channel,
//! a boxed sender and a task of its own (about 3 % of the stream loop's CPU by profile).
//!
//! It never awaits a single send on the hot path (only when librdkafka's queue is full), and it
//! must never report a record as delivered before Kafka acknowledged it: commits depend on it.

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use sessionizer_crds::session_job::SinkMode;
use tokio::sync::mpsc;

use super::StreamError;
use super::commit::CommitLedger;
use super::consumer::client_config;
use crate::config::WorkerConfig;
use crate::engine::Output;
use crate::metrics::StreamMetrics;

/// The outcome of one delivery, tagged with its batch.
pub type Delivered = (u64, Result<(), KafkaError>);

/// The producer's context: hands every delivery report to the stream loop's channel, tagged
/// with the batch number the record was sent with.
pub struct DeliveryReports {
    reports: mpsc::UnboundedSender<Delivered>,
}

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    /// The record's batch number.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        // Only a sink already dropped (the worker is stopping) closes the channel.
        let _ = self.reports.send((batch as u64, outcome));
    }
}

/// The job's producer.
pub type SinkProducer = ThreadedProducer<DeliveryReports>;

/// The idempotent producer of the job's outputs (acks=all, lz4), and the channel its delivery
/// reports arrive on. The channel is unbounded, but it never holds more reports than there are
/// records in flight, which the stream loop bounds (`max_in_flight`).
pub fn create_producer(
    config: &WorkerConfig,
) -> Result<(SinkProducer, mpsc::UnboundedReceiver<Delivered>), StreamError> {
    let mut client = client_config(config)?;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        // The broker's cost is per request far more than per byte: at 20 ms the sink's produce
        // requests (about one per partition per linger) cost the broker more CPU than serving
        // the source topic's fetches, on cores it may share with the workers. A session is
        // emitted at least `gap` after its last event, so 100 ms more before it is sent is
        // nothing to its readers; a drain (checkpoint, stop) flushes instead of waiting for it.
        .set("linger.ms", "100")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000");
    let (reports, receiver) = mpsc::unbounded_channel();
    let producer = client
        .create_with_context(DeliveryReports { reports })
        .map_err(|source| StreamError::Kafka("creating the producer", source))?;
    Ok((producer, receiver))
}

/// Where outputs go, and the deliveries in flight.
pub struct Sink {
    producer: SinkProducer,
    /// Delivery reports, tagged with their batch.
    reports: mpsc::UnboundedReceiver<Delivered>,
    /// Records sent and not yet reported.
    in_flight: usize,
    production: Option<String>,
    dead_letter: Option<String>,
    quarantine: Option<String>,
    buf: Vec<u8>,
    metrics: StreamMetrics,
}

impl Sink {
    /// A sink for the topics of `config`, producing with `producer` whose delivery reports
    /// arrive on `reports` ([`create_producer`]); fails when the effective sink mode has no
    /// topic.
    pub fn new(
        (producer, reports): (SinkProducer, mpsc::UnboundedReceiver<Delivered>),
        config: &WorkerConfig,
        metrics: StreamMetrics,
    ) -> Result<Self, StreamError> {
        let sink = &config.spec.sink;
        if sink.topic_for(config.effective_sink).is_none() {
            return Err(StreamError::NoSinkTopic(config.effective_sink));
        }
        Ok(Self {
            producer,
            reports,
            in_flight: 0,
            production: sink.topic_for(SinkMode::Production).map(|t| t.to_string()),
            dead_letter: sink.topic_for(SinkMode::DeadLetter).map(|t| t.to_string()),
            quarantine: sink.quarantine_topic.as_ref().map(|t| t.to_string()),
            buf: Vec::with_capacity(1024),
            metrics,
        })
    }

    /// How many records await acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The next delivery report; `None` only if the producer is gone. Wait on it only while
    /// [`Self::in_flight`] is not zero.
    pub async fn next_delivery(&mut self) -> Option<Delivered> {
        self.reports.recv().await
    }

    /// A delivery report that is already in, without waiting.
    pub fn delivered_now(&mut self) -> Option<Delivered> {
        self.reports.try_recv().ok()
    }

    /// Produces the records of `outputs` as part of batch `seq`.
    pub async fn send_all(
        &mut self,
        outputs: impl IntoIterator<Item = Output>,
        seq: u64,
        ledger: &mut CommitLedger,
    ) -> Result<(), StreamError> {
        for output in outputs {
            self.send(output, seq, ledger).await?;
        }
        Ok(())
    }

    /// Produces the record of one output as part of batch `seq` without waiting for its
    /// acknowledgement (unless librdkafka's queue is full).
    pub async fn send(
        &mut self,
        output: Output,
        seq: u64,
        ledger: &mut CommitLedger,
    ) -> Result<(), StreamError> {
        self.buf.clear();
        let (topic, key) = match &output {
            Output::Session { sink, record } => {
                let topic = match sink {
                    SinkMode::Production => &self.production,
                    SinkMode::DeadLetter => &self.dead_letter,
                };
                let topic = topic.as_deref().ok_or(StreamError::NoSinkTopic(*sink))?;
                serde_json::to_writer(&mut self.buf, record).map_err(StreamError::Encode)?;
                (topic, Some(record.key.as_str()))
            }
            Output::Quarantine(quarantine) => {
                self.metrics.quarantined(1);
                let Some(topic) = self.quarantine.as_deref() else {
                    return Ok(());
                };
                serde_json::to_writer(&mut self.buf, quarantine).map_err(StreamError::Encode)?;
                (topic, quarantine.key.as_deref())
            }
        };
        // The opaque carries the batch number back with the record's delivery report.
        let batch = usize::try_from(seq)
            .map_err(|_| StreamError::Produce(format!("batch number {seq} out of range")))?;
        loop {
            let mut record =
                BaseRecord::<str, [u8], usize>::with_opaque_to(topic, batch).payload(&self.buf);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => {
                    ledger.produced(seq);
                    self.in_flight += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                Err((error, _)) => {
                    self.metrics.produce_error();
                    return Err(StreamError::Produce(error.to_string()));
                }
            }
            // Back-pressure: make room by waiting for an acknowledgement.
            if self.in_flight == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            match self.reports.recv().await {
                Some(delivered) => {
                    settle(&self.metrics, &mut self.in_flight, delivered, ledger)?;
                }
                None => return Err(producer_gone()),
            }
        }
    }

    /// Records one acknowledgement (or fails on a delivery error).
    pub fn settle(
        &mut self,
        delivered: Delivered,
        ledger: &mut CommitLedger,
    ) -> Result<(), StreamError> {
        settle(&self.metrics, &mut self.in_flight, delivered, ledger)
    }

    /// Waits for every delivery in flight, at most `timeout`.
    pub async fn drain(
        &mut self,
        ledger: &mut CommitLedger,
        timeout: Duration,
    ) -> Result<(), StreamError> {
        // A flush sends what librdkafka holds at once instead of after the linger; its reports
        // still arrive on the channel, whichever thread serves them.
        let producer = self.producer.clone();
        let flushing = tokio::task::spawn_blocking(move || producer.flush(timeout));
        let deadline = tokio::time::Instant::now() + timeout;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(delivered)) => self.settle(delivered, ledger)?,
                Ok(None) => return Err(producer_gone()),
                Err(_) => {
                    return Err(StreamError::Produce(format!(
                        "{} records still unacknowledged after {timeout:?}",
                        self.in_flight
                    )));
                }
            }
        }
        // Nothing is in flight: the flush ends as soon as librdkafka's own bookkeeping does.
        let _ = flushing.await;
        Ok(())
    }
}

/// Counts one delivery report off `in_flight` and records it (or fails on a delivery error).
/// A function of the fields it needs rather than a method: `send_all` settles while it still
/// borrows the record's topic name from the sink.
fn settle(
    metrics: &StreamMetrics,
    in_flight: &mut usize,
    (seq, result): Delivered,
    ledger: &mut CommitLedger,
) -> Result<(), StreamError> {
    *in_flight = in_flight.saturating_sub(1);
    match result {
        Ok(()) => {
            ledger.delivered(seq);
            Ok(())
        }
        Err(error) => {
            metrics.produce_error();
            Err(StreamError::Produce(error.to_string()))
        }
    }
}

fn producer_gone() -> StreamError {
    StreamError::Produce(String::from(
        "the producer stopped with records unacknowledged",
    ))
}
