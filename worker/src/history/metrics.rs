//! The history store's metrics, the list from seed 000 ("writes, read hits/misses, latencies,
//! retries, failures as well as the estimated size of the records on write"), labelled by
//! backend so the Aerospike job and its embedded baseline can be compared on one dashboard.
//!
//! The families are registered once into the worker's registry; every store holds a cheap clone.
//! Nothing here does I/O or decides anything: it only counts what the backends report.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A history backend, as the `backend` label spells it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The variants are the label values.
pub enum BackendLabel {
    /// The Aerospike backend.
    aerospike,
    /// The embedded backend.
    embedded,
}

/// A history operation, as the `op` label spells it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The variants are the label values.
pub enum Op {
    /// A read.
    get,
    /// A write.
    put,
    /// A removal.
    delete,
    /// Making the writes so far durable (the embedded store's fsync).
    sync,
}

/// Why an operation failed for good, as the `kind` label spells it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The variants are the label values.
pub enum FailureKind {
    /// [`super::HistoryError::Unavailable`].
    unavailable,
    /// [`super::HistoryError::WritesRefused`].
    writes_refused,
    /// [`super::HistoryError::TooBig`].
    too_big,
    /// [`super::HistoryError::Corrupt`].
    corrupt,
    /// [`super::HistoryError::Open`].
    open,
}

impl FailureKind {
    /// The kind of `error`.
    pub fn of(error: &super::HistoryError) -> Self {
        use super::HistoryError as E;
        match error {
            E::Unavailable { .. } => Self::unavailable,
            E::WritesRefused(_) => Self::writes_refused,
            E::TooBig { .. } => Self::too_big,
            E::Corrupt { .. } => Self::corrupt,
            E::Open(_) => Self::open,
        }
    }
}

/// Read outcomes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The variants are the label values.
enum ReadResult {
    hit,
    miss,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: BackendLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    backend: BackendLabel,
    result: ReadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    backend: BackendLabel,
    op: Op,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    backend: BackendLabel,
    op: Op,
    kind: FailureKind,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s: Aerospike answers in well under a millisecond, retries take backoffs.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn size_histogram() -> Histogram {
    // 64 B to 8 MiB (Aerospike's largest write-block-size).
    Histogram::new(exponential_buckets(64.0, 2.0, 18))
}

/// The history metric families, shared by every store of a worker.
#[derive(Clone, Debug)]
pub struct HistoryMetrics {
    writes: Family<BackendLabels, Counter>,
    deletes: Family<BackendLabels, Counter>,
    reads: Family<ReadLabels, Counter>,
    latency: HistogramFamily<OpLabels>,
    retries: Family<OpLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    record_size: HistogramFamily<BackendLabels>,
    expired_purged: Family<BackendLabels, Counter>,
}

impl HistoryMetrics {
    /// Registers the families into `registry` (call once per registry).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "sessionizer_history_writes",
            "Records written to the history store",
            metrics.writes.clone(),
        );
        registry.register(
            "sessionizer_history_deletes",
            "Records removed from the history store",
            metrics.deletes.clone(),
        );
        registry.register(
            "sessionizer_history_reads",
            "History reads, by result (hit: a live record, miss: none or expired)",
            metrics.reads.clone(),
        );
        registry.register(
            "sessionizer_history_operation_duration_seconds",
            "Duration of history operations including retries, by operation",
            metrics.latency.clone(),
        );
        registry.register(
            "sessionizer_history_retries",
            "History operation attempts that failed transiently and were retried",
            metrics.retries.clone(),
        );
        registry.register(
            "sessionizer_history_failures",
            "History operations that failed for good, by operation and kind",
            metrics.failures.clone(),
        );
        registry.register(
            "sessionizer_history_record_size_bytes",
            "Size of written history records after compression, header included",
            metrics.record_size.clone(),
        );
        registry.register(
            "sessionizer_history_expired_purged",
            "Expired records the embedded store removed",
            metrics.expired_purged.clone(),
        );
        metrics
    }

    /// Families that no registry exposes (tools and tests that do not serve `/metrics`).
    pub fn unregistered() -> Self {
        Self {
            writes: Family::default(),
            deletes: Family::default(),
            reads: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            failures: Family::default(),
            record_size: Family::new_with_constructor(size_histogram),
            expired_purged: Family::default(),
        }
    }

    /// The handle a store of `backend` records through.
    pub fn for_backend(&self, backend: BackendLabel) -> StoreMetrics {
        StoreMetrics {
            backend,
            families: self.clone(),
        }
    }
}

/// The metrics of one store: the shared families with its `backend` label.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    backend: BackendLabel,
    families: HistoryMetrics,
}

impl StoreMetrics {
    /// The backend label.
    pub fn backend(&self) -> BackendLabel {
        self.backend
    }

    fn op(&self, op: Op) -> OpLabels {
        OpLabels {
            backend: self.backend,
            op,
        }
    }

    fn labels(&self) -> BackendLabels {
        BackendLabels {
            backend: self.backend,
        }
    }

    /// Records a successful write of `stored_bytes` (after compression).
    pub fn written(&self, stored_bytes: usize) {
        self.families.writes.get_or_create(&self.labels()).inc();
        self.families
            .record_size
            .get_or_create(&self.labels())
            .observe(stored_bytes as f64);
    }

    /// Records a successful removal.
    pub fn deleted(&self) {
        self.families.deletes.get_or_create(&self.labels()).inc();
    }

    /// Records a read that found a live record (`true`) or none.
    pub fn read(&self, hit: bool) {
        let result = if hit {
            ReadResult::hit
        } else {
            ReadResult::miss
        };
        self.families
            .reads
            .get_or_create(&ReadLabels {
                backend: self.backend,
                result,
            })
            .inc();
    }

    /// Records how long `op` took, retries included.
    pub fn observe_latency(&self, op: Op, elapsed: Duration) {
        self.families
            .latency
            .get_or_create(&self.op(op))
            .observe(elapsed.as_secs_f64());
    }

    /// Records one retried attempt of `op`.
    pub fn retried(&self, op: Op) {
        self.families.retries.get_or_create(&self.op(op)).inc();
    }

    /// Records that `op` failed for good with `error`.
    pub fn failed(&self, op: Op, error: &super::HistoryError) {
        self.families
            .failures
            .get_or_create(&FailureLabels {
                backend: self.backend,
                op,
                kind: FailureKind::of(error),
            })
            .inc();
    }

    /// Records `count` expired records removed.
    pub fn purged(&self, count: u64) {
        self.families
            .expired_purged
            .get_or_create(&self.labels())
            .inc_by(count);
    }

    /// Retried attempts of `op` so far.
    pub fn retries(&self, op: Op) -> u64 {
        self.families.retries.get_or_create(&self.op(op)).get()
    }

    /// Final failures of `op` with `kind` so far.
    pub fn failures(&self, op: Op, kind: FailureKind) -> u64 {
        self.families
            .failures
            .get_or_create(&FailureLabels {
                backend: self.backend,
                op,
                kind,
            })
            .get()
    }

    /// Successful writes so far.
    pub fn writes(&self) -> u64 {
        self.families.writes.get_or_create(&self.labels()).get()
    }

    /// Reads that found (`true`) or missed a record so far.
    pub fn reads(&self, hit: bool) -> u64 {
        let result = if hit {
            ReadResult::hit
        } else {
            ReadResult::miss
        };
        self.families
            .reads
            .get_or_create(&ReadLabels {
                backend: self.backend,
                result,
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_the_seed_000_list_labelled_by_backend() {
        let mut registry = Registry::default();
        let metrics = HistoryMetrics::register(&mut registry).for_backend(BackendLabel::embedded);
        metrics.written(100);
        metrics.read(true);
        metrics.read(false);
        metrics.observe_latency(Op::get, Duration::from_millis(1));
        metrics.retried(Op::put);
        metrics.failed(
            Op::put,
            &crate::history::HistoryError::WritesRefused("stop-writes".into()),
        );
        metrics.deleted();
        metrics.purged(2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "sessionizer_history_writes_total{backend=\"embedded\"} 1",
            "sessionizer_history_reads_total{backend=\"embedded\",result=\"hit\"} 1",
            "sessionizer_history_reads_total{backend=\"embedded\",result=\"miss\"} 1",
            "sessionizer_history_operation_duration_seconds_count{backend=\"embedded\",op=\"get\"} 1",
            "sessionizer_history_retries_total{backend=\"embedded\",op=\"put\"} 1",
            "sessionizer_history_failures_total{backend=\"embedded\",op=\"put\",kind=\"writes_refused\"} 1",
            "sessionizer_history_record_size_bytes_sum{backend=\"embedded\"} 100.0",
            "sessionizer_history_deletes_total{backend=\"embedded\"} 1",
            "sessionizer_history_expired_purged_total{backend=\"embedded\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert_eq!(metrics.writes(), 1);
        assert_eq!(metrics.retries(Op::put), 1);
        assert_eq!(metrics.failures(Op::put, FailureKind::writes_refused), 1);
    }
}
