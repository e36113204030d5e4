//! The records of the test server: per namespace, a map from digest to bins, generation and
//! expiry, plus running per-partition totals so namespace statistics and the stop-writes check are
//! cheap. Values are kept as the raw particle bytes the client sent, with their type, so every
//! type the client can write comes back bit for bit. Expired records are gone: reads never see
//! them and a reaper removes them. Nothing here knows about sockets or command flags.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Number of partitions of every namespace, as in the real server.
pub(crate) const PARTITIONS: usize = 4096;

/// Seconds between the Unix epoch and the Aerospike ("citrusleaf") epoch, 2010-01-01.
const CITRUSLEAF_EPOCH_UNIX_SECS: u64 = 1_262_304_000;

/// Fixed bytes charged per record by [`record_size`]: an approximation of the storage format's
/// record header (generation, void time, key metadata), so tiny records are not free.
const RECORD_OVERHEAD: usize = 35;

/// A record's key inside its namespace.
pub(crate) type Digest = [u8; 20];

/// The partition a digest belongs to (the first two digest bytes, little-endian, mod 4096).
pub(crate) fn partition_of(digest: &Digest) -> usize {
    usize::from(u16::from_le_bytes([digest[0], digest[1]])) & (PARTITIONS - 1)
}

/// One bin: a name and a value as raw particle bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bin {
    pub(crate) name: String,
    pub(crate) particle: u8,
    pub(crate) value: Vec<u8>,
}

/// When a record expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The instant after which the record is gone.
    pub(crate) at: Instant,
    /// The same moment as the wire reports it: seconds since 2010-01-01.
    pub(crate) void_time: u32,
}

impl Expiry {
    /// An expiry `ttl` from now.
    pub(crate) fn after(ttl: Duration) -> Self {
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let void = (unix_now + ttl.as_secs()).saturating_sub(CITRUSLEAF_EPOCH_UNIX_SECS);
        Expiry {
            at: Instant::now() + ttl,
            void_time: u32::try_from(void).unwrap_or(u32::MAX),
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) set: String,
    pub(crate) bins: Vec<Bin>,
    /// 1 on creation, +1 on every write or touch, wrapping like the server's 16-bit counter.
    pub(crate) generation: u16,
    /// `None` for records that never expire.
    pub(crate) expiry: Option<Expiry>,
}

impl StoredRecord {
    /// The void time the wire reports: 0 for never.
    pub(crate) fn void_time(&self) -> u32 {
        self.expiry.map_or(0, |e| e.void_time)
    }

    fn expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|e| e.at <= now)
    }
}

/// The size a record is charged, checked against the record-size limit and summed into the
/// namespace's used bytes: a fixed overhead plus, per bin, its name, type, length and value.
pub(crate) fn record_size(set: &str, bins: &[Bin]) -> usize {
    RECORD_OVERHEAD
        + set.len()
        + bins
            .iter()
            .map(|bin| 1 + bin.name.len() + 1 + 4 + bin.value.len())
            .sum::<usize>()
}

/// Totals of the records of one namespace (or of the partitions one node owns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Live records.
    pub(crate) objects: u64,
    /// Sum of [`record_size`] over the live records.
    pub(crate) bytes: u64,
    /// Live records without an expiry.
    pub(crate) non_expirable: u64,
}

impl Usage {
    fn add(&mut self, record: &StoredRecord) {
        self.objects += 1;
        self.bytes += record_size(&record.set, &record.bins) as u64;
        self.non_expirable += u64::from(record.expiry.is_none());
    }

    fn sub(&mut self, record: &StoredRecord) {
        self.objects = self.objects.saturating_sub(1);
        self.bytes = self
            .bytes
            .saturating_sub(record_size(&record.set, &record.bins) as u64);
        self.non_expirable = self
            .non_expirable
            .saturating_sub(u64::from(record.expiry.is_none()));
    }
}

/// The records of one namespace.
#[derive(Debug)]
pub(crate) struct NamespaceData {
    records: HashMap<Digest, StoredRecord>,
    partitions: Vec<Usage>,
    /// The sum of `partitions`, kept as they change (see [`NamespaceData::total`]).
    total: Usage,
    expired: u64,
}

impl NamespaceData {
    fn new() -> Self {
        NamespaceData {
            records: HashMap::new(),
            partitions: vec![Usage::default(); PARTITIONS],
            total: Usage::default(),
            expired: 0,
        }
    }

    /// The live record under `digest`; an expired one is removed and reported absent.
    pub(crate) fn get_live(&mut self, digest: &Digest, now: Instant) -> Option<&StoredRecord> {
        if self.records.get(digest).is_some_and(|r| r.expired(now)) {
            self.remove(digest);
            self.expired += 1;
            return None;
        }
        self.records.get(digest)
    }

    /// Stores `record` under `digest`, replacing what was there.
    pub(crate) fn put(&mut self, digest: Digest, record: StoredRecord) {
        let usage = &mut self.partitions[partition_of(&digest)];
        usage.add(&record);
        self.total.add(&record);
        if let Some(old) = self.records.insert(digest, record) {
            usage.sub(&old);
            self.total.sub(&old);
        }
    }

    /// Removes the record under `digest`, returning it.
    pub(crate) fn remove(&mut self, digest: &Digest) -> Option<StoredRecord> {
        let old = self.records.remove(digest)?;
        self.partitions[partition_of(digest)].sub(&old);
        self.total.sub(&old);
        Some(old)
    }

    /// Totals over the partitions for which `owned` is true.
    pub(crate) fn usage(&self, owned: impl Fn(usize) -> bool) -> Usage {
        let mut total = Usage::default();
        for (partition, usage) in self.partitions.iter().enumerate() {
            if owned(partition) {
                total.objects += usage.objects;
                total.bytes += usage.bytes;
                total.non_expirable += usage.non_expirable;
            }
        }
        total
    }

    /// Totals over every partition: kept as records change, so a lone node — which owns them
    /// all — never walks the 4,096 partitions on the stop-writes check of every write.
    pub(crate) fn total(&self) -> Usage {
        self.total
    }

    /// How many records expired since the server started.
    pub(crate) fn expired_count(&self) -> u64 {
        self.expired
    }

    fn reap(&mut self, now: Instant) {
        let dead: Vec<Digest> = self
            .records
            .iter()
            .filter(|(_, record)| record.expired(now))
            .map(|(digest, _)| *digest)
            .collect();
        for digest in dead {
            self.remove(&digest);
            self.expired += 1;
        }
    }
}

/// All namespaces of a server (shared by the nodes of a test cluster).
#[derive(Debug)]
pub(crate) struct Store {
    namespaces: Mutex<HashMap<String, NamespaceData>>,
}

impl Store {
    /// An empty store with the given namespaces.
    pub(crate) fn new<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        let namespaces = namespaces
            .into_iter()
            .map(|name| (name.to_owned(), NamespaceData::new()))
            .collect();
        Store {
            namespaces: Mutex::new(namespaces),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, NamespaceData>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the namespace's records; `None` if the namespace does not exist.
    pub(crate) fn with_namespace<R>(
        &self,
        namespace: &str,
        f: impl FnOnce(&mut NamespaceData) -> R,
    ) -> Option<R> {
        self.lock().get_mut(namespace).map(f)
    }

    /// Removes every record whose expiry has passed.
    pub(crate) fn reap_expired(&self, now: Instant) {
        for data in self.lock().values_mut() {
            data.reap(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8], expiry: Option<Expiry>) -> StoredRecord {
        StoredRecord {
            set: "s".into(),
            bins: vec![Bin {
                name: "b".into(),
                particle: 4,
                value: value.to_vec(),
            }],
            generation: 1,
            expiry,
        }
    }

    #[test]
    fn partition_comes_from_the_first_two_digest_bytes() {
        let mut digest = [0u8; 20];
        digest[0] = 0x34;
        digest[1] = 0x12;
        assert_eq!(partition_of(&digest), 0x1234 & 0xFFF);
    }

    #[test]
    fn usage_follows_puts_replacements_and_removals() {
        let store = Store::new(["test"]);
        let digest = [1u8; 20];
        store.with_namespace("test", |ns| {
            ns.put(digest, record(b"abc", None));
            ns.put(digest, record(b"abcdef", None));
            let usage = ns.usage(|_| true);
            assert_eq!(usage.objects, 1);
            assert_eq!(usage.non_expirable, 1);
            assert_eq!(
                usage.bytes,
                record_size("s", &record(b"abcdef", None).bins) as u64
            );
            assert_eq!(ns.usage(|p| p != partition_of(&digest)).objects, 0);
            ns.remove(&digest);
            assert_eq!(ns.usage(|_| true), Usage::default());
        });
        assert!(store.with_namespace("missing", |_| ()).is_none());
    }

    #[test]
    fn the_running_total_agrees_with_the_partitions_it_sums() {
        let store = Store::new(["test"]);
        let past = Expiry {
            at: Instant::now(),
            void_time: 1,
        };
        store.with_namespace("test", |ns| {
            for i in 0..200u16 {
                let mut digest = [0u8; 20];
                digest[..2].copy_from_slice(&(i * 37).to_le_bytes());
                let expiry = (i % 3 == 0).then_some(past);
                ns.put(digest, record(&vec![7; usize::from(i % 11)], expiry));
                if i % 5 == 0 {
                    ns.put(digest, record(b"replaced", None));
                }
                if i % 7 == 0 {
                    ns.remove(&digest);
                }
            }
        });
        store.reap_expired(Instant::now());
        store.with_namespace("test", |ns| {
            let walked = ns.usage(|_| true);
            assert!(
                walked.objects > 0,
                "the walk must have something to agree on"
            );
            assert_eq!(ns.total(), walked);
        });
    }

    #[test]
    fn expired_records_are_gone() {
        let store = Store::new(["test"]);
        let past = Expiry {
            at: Instant::now(),
            void_time: 1,
        };
        store.with_namespace("test", |ns| {
            ns.put([1u8; 20], record(b"x", Some(past)));
            ns.put([2u8; 20], record(b"y", Some(past)));
            assert!(ns.get_live(&[1u8; 20], Instant::now()).is_none());
        });
        store.reap_expired(Instant::now());
        store.with_namespace("test", |ns| {
            assert_eq!(ns.usage(|_| true).objects, 0);
            assert_eq!(ns.expired_count(), 2);
        });
    }
}
