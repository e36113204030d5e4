//! The output side of the stream: turns engine outputs into Kafka records (session records as
//! JSON keyed by session key to the effective sink's topic; quarantined inputs with their reason
//! to the quarantine topic, when one is set) and keeps their delivery futures in flight, bounded,
//! reporting each acknowledgement to the [`CommitLedger`].
//!
//! It never awaits a single send on the hot path (only when librdkafka's queue is full), and it
//! must never report a record as delivered before Kafka acknowledged it: commits depend on it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::oneshot::Canceled;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use sessionizer_crds::session_job::SinkMode;

use super::StreamError;
use super::commit::CommitLedger;
use super::consumer::client_config;
use crate::config::WorkerConfig;
use crate::engine::Output;
use crate::metrics::StreamMetrics;

/// The outcome of one delivery, tagged with its batch.
pub type Delivered = (u64, Result<OwnedDeliveryResult, Canceled>);

/// A delivery future tagged with the batch its record belongs to.
pub struct Tagged {
    seq: u64,
    delivery: DeliveryFuture,
}

impl Future for Tagged {
    type Output = Delivered;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let seq = self.seq;
        Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|result| (seq, result))
    }
}

/// The idempotent producer of the job's outputs (acks=all, lz4).
pub fn create_producer(config: &WorkerConfig) -> Result<FutureProducer, StreamError> {
    let mut client = client_config(config)?;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000");
    client
        .create()
        .map_err(|source| StreamError::Kafka("creating the producer", source))
}

/// Where outputs go, and the deliveries in flight.
pub struct Sink {
    producer: FutureProducer,
    production: Option<String>,
    dead_letter: Option<String>,
    quarantine: Option<String>,
    /// Deliveries not yet acknowledged.
    pub in_flight: FuturesUnordered<Tagged>,
    buf: Vec<u8>,
    metrics: StreamMetrics,
}

impl Sink {
    /// A sink for the topics of `config`; fails when the effective sink mode has no topic.
    pub fn new(
        producer: FutureProducer,
        config: &WorkerConfig,
        metrics: StreamMetrics,
    ) -> Result<Self, StreamError> {
        let sink = &config.spec.sink;
        if sink.topic_for(config.effective_sink).is_none() {
            return Err(StreamError::NoSinkTopic(config.effective_sink));
        }
        Ok(Self {
            producer,
            production: sink.topic_for(SinkMode::Production).map(|t| t.to_string()),
            dead_letter: sink.topic_for(SinkMode::DeadLetter).map(|t| t.to_string()),
            quarantine: sink.quarantine_topic.as_ref().map(|t| t.to_string()),
            in_flight: FuturesUnordered::new(),
            buf: Vec::with_capacity(1024),
            metrics,
        })
    }

    /// How many records await acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
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
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(topic).payload(&self.buf);
            if let Some(key) = key {
                record = record.key(key);
            }
            let full = match self.producer.send_result(record) {
                Ok(delivery) => {
                    ledger.produced(seq);
                    self.in_flight.push(Tagged { seq, delivery });
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => true,
                Err((error, _)) => {
                    self.metrics.produce_error();
                    return Err(StreamError::Produce(error.to_string()));
                }
            };
            if full {
                // Back-pressure: make room by waiting for an acknowledgement.
                match self.in_flight.next().await {
                    Some(delivered) => settle(&self.metrics, delivered, ledger)?,
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
    }

    /// Records one acknowledgement (or fails on a delivery error).
    pub fn settle(
        &self,
        delivered: Delivered,
        ledger: &mut CommitLedger,
    ) -> Result<(), StreamError> {
        settle(&self.metrics, delivered, ledger)
    }

    /// Waits for every delivery in flight, at most `timeout`.
    pub async fn drain(
        &mut self,
        ledger: &mut CommitLedger,
        timeout: Duration,
    ) -> Result<(), StreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                Ok(Some(delivered)) => settle(&self.metrics, delivered, ledger)?,
                Ok(None) => break,
                Err(_) => {
                    return Err(StreamError::Produce(format!(
                        "{} records still unacknowledged after {timeout:?}",
                        self.in_flight.len()
                    )));
                }
            }
        }
        // Nothing is in flight; this only lets librdkafka finish its own bookkeeping.
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        Ok(())
    }
}

fn settle(
    metrics: &StreamMetrics,
    (seq, result): Delivered,
    ledger: &mut CommitLedger,
) -> Result<(), StreamError> {
    match result {
        Ok(Ok(_)) => {
            ledger.delivered(seq);
            Ok(())
        }
        Ok(Err((error, _))) => {
            metrics.produce_error();
            Err(StreamError::Produce(error.to_string()))
        }
        Err(Canceled) => {
            metrics.produce_error();
            Err(StreamError::Produce(
                "the producer dropped a delivery".into(),
            ))
        }
    }
}
