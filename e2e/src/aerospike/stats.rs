//! Namespace statistics and configuration as the info protocol reports them, in the two shapes
//! the operator's high-water-mark monitor must understand: servers before 7.0 (`device_*` and
//! `memory_*` statistics, `high-water-disk-pct`, `stop-writes-pct`, `storage-engine.min-avail-pct`)
//! and 7.0 onwards (`data_*` statistics, `storage-engine.evict-used-pct`,
//! `storage-engine.stop-writes-used-pct`, `storage-engine.stop-writes-avail-pct`). Tests set the
//! numbers; the flags (`hwm_breached`, `stop_writes`) follow from them the way the server derives
//! them, unless a test forces them. This module renders text only; it never decides what a write
//! does beyond answering "is this namespace in stop-writes".

use std::fmt::Write as _;

use crate::aerospike::store::Usage;

/// Which generation of server the statistics imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsShape {
    /// Aerospike 6.x and earlier: storage on a device, `device_used_bytes`/`device_total_bytes`,
    /// `device_available_pct`, `memory_used_bytes`, and the marks `high-water-disk-pct`,
    /// `high-water-memory-pct`, `stop-writes-pct`, `storage-engine.min-avail-pct`,
    /// `storage-engine.max-used-pct`. The server reports build 6.4.
    PreV7,
    /// Aerospike 7.0 and later: `data_used_bytes`/`data_total_bytes`, `data_used_pct`,
    /// `data_avail_pct`, and the marks `storage-engine.evict-used-pct`,
    /// `storage-engine.stop-writes-used-pct`, `storage-engine.stop-writes-avail-pct`. The server
    /// reports build 7.2.
    #[default]
    V7,
}

impl StatsShape {
    /// The `build` a server of this shape reports.
    pub fn default_build(self) -> &'static str {
        match self {
            StatsShape::PreV7 => "6.4.0.10",
            StatsShape::V7 => "7.2.0.6",
        }
    }
}

/// The storage numbers, marks and flags of one namespace on one node. Tests change them through
/// `AerospikeTestServer::update_namespace`; the info answers and the stop-writes check read them.
///
/// Percentages are whole numbers as in the server's configuration. A mark of 0 is disabled, as on
/// a real server.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceStats {
    /// Storage capacity: `device_total_bytes` (pre-7) or `data_total_bytes` (7.0+).
    pub total_bytes: u64,
    /// Used storage to report; `None` reports the bytes the stored records take.
    pub used_bytes: Option<u64>,
    /// Contiguous free storage in percent (`device_available_pct` / `data_avail_pct`); `None`
    /// reports `100 - used %`.
    pub avail_pct: Option<u32>,
    /// Memory size of the namespace (`memory-size`, pre-7 only).
    pub memory_size: u64,
    /// Memory in use to report (`memory_used_bytes`, pre-7 only); `None` charges 64 bytes of
    /// primary index per record, as the real server does.
    pub memory_used_bytes: Option<u64>,
    /// Eviction mark on storage: `high-water-disk-pct` (pre-7) or `storage-engine.evict-used-pct`
    /// (7.0+). Default 0 (disabled), the real default.
    pub evict_used_pct: u32,
    /// Eviction mark on memory: `high-water-memory-pct` (pre-7 only). Default 0.
    pub high_water_memory_pct: u32,
    /// Stop-writes mark on memory: `stop-writes-pct` (pre-7 only). Default 90.
    pub stop_writes_memory_pct: u32,
    /// Stop-writes mark on used storage: `storage-engine.max-used-pct` (pre-7) or
    /// `storage-engine.stop-writes-used-pct` (7.0+). Default 70.
    pub stop_writes_used_pct: u32,
    /// Stop-writes mark on available storage: `storage-engine.min-avail-pct` (pre-7) or
    /// `storage-engine.stop-writes-avail-pct` (7.0+). Default 5.
    pub stop_writes_avail_pct: u32,
    /// Forces `hwm_breached`; `None` derives it from the numbers and marks.
    pub hwm_breached: Option<bool>,
    /// Forces `stop_writes` (and so whether writes fail with `OutOfSpace`); `None` derives it.
    pub stop_writes: Option<bool>,
    /// `clock_skew_stop_writes`: writes fail with `Forbidden` while set.
    pub clock_skew_stop_writes: bool,
}

impl Default for NamespaceStats {
    fn default() -> Self {
        NamespaceStats {
            total_bytes: 4 * 1024 * 1024 * 1024,
            used_bytes: None,
            avail_pct: None,
            memory_size: 1024 * 1024 * 1024,
            memory_used_bytes: None,
            evict_used_pct: 0,
            high_water_memory_pct: 0,
            stop_writes_memory_pct: 90,
            stop_writes_used_pct: 70,
            stop_writes_avail_pct: 5,
            hwm_breached: None,
            stop_writes: None,
            clock_skew_stop_writes: false,
        }
    }
}

impl NamespaceStats {
    /// Reports `pct` percent of [`total_bytes`](Self::total_bytes) as used.
    pub fn set_used_pct(&mut self, pct: f64) {
        let used = (self.total_bytes as f64 * pct.clamp(0.0, 100.0) / 100.0).round();
        self.used_bytes = Some(used as u64);
    }

    /// Derives what the node reports, given what its records take.
    pub(crate) fn evaluate(&self, usage: Usage) -> Evaluated {
        let used_bytes = self.used_bytes.unwrap_or(usage.bytes);
        let used_pct = percent(used_bytes, self.total_bytes);
        let avail_pct = self
            .avail_pct
            .unwrap_or_else(|| (100.0 - used_pct).floor().max(0.0) as u32);
        let memory_used_bytes = self.memory_used_bytes.unwrap_or(usage.objects * 64);
        let memory_used_pct = percent(memory_used_bytes, self.memory_size);
        let reached = |value: f64, mark: u32| mark > 0 && value >= f64::from(mark);
        let derived_hwm = reached(used_pct, self.evict_used_pct)
            || reached(memory_used_pct, self.high_water_memory_pct);
        let derived_stop = reached(used_pct, self.stop_writes_used_pct)
            || avail_pct < self.stop_writes_avail_pct
            || reached(memory_used_pct, self.stop_writes_memory_pct);
        Evaluated {
            used_bytes,
            used_pct,
            avail_pct,
            memory_used_bytes,
            memory_used_pct,
            hwm_breached: self.hwm_breached.unwrap_or(derived_hwm),
            stop_writes: self.stop_writes.unwrap_or(derived_stop),
        }
    }

    /// Applies one `set-config` parameter; the names are those of `shape`.
    pub(crate) fn set_config(
        &mut self,
        shape: StatsShape,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        let field = match (shape, name) {
            (StatsShape::PreV7, "high-water-disk-pct")
            | (StatsShape::V7, "evict-used-pct" | "storage-engine.evict-used-pct") => {
                &mut self.evict_used_pct
            }
            (StatsShape::PreV7, "high-water-memory-pct") => &mut self.high_water_memory_pct,
            (StatsShape::PreV7, "stop-writes-pct") => &mut self.stop_writes_memory_pct,
            (StatsShape::PreV7, "max-used-pct" | "storage-engine.max-used-pct")
            | (StatsShape::V7, "stop-writes-used-pct" | "storage-engine.stop-writes-used-pct") => {
                &mut self.stop_writes_used_pct
            }
            (StatsShape::PreV7, "min-avail-pct" | "storage-engine.min-avail-pct")
            | (StatsShape::V7, "stop-writes-avail-pct" | "storage-engine.stop-writes-avail-pct") => {
                &mut self.stop_writes_avail_pct
            }
            _ => return Err(format!("unknown or read-only parameter {name}")),
        };
        let parsed: u32 = value
            .parse()
            .ok()
            .filter(|pct| *pct <= 100)
            .ok_or_else(|| format!("{name} must be a percentage, got {value}"))?;
        *field = parsed;
        Ok(())
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// What a node reports for one namespace, derived by [`NamespaceStats::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Evaluated {
    pub(crate) used_bytes: u64,
    pub(crate) used_pct: f64,
    pub(crate) avail_pct: u32,
    pub(crate) memory_used_bytes: u64,
    pub(crate) memory_used_pct: f64,
    pub(crate) hwm_breached: bool,
    pub(crate) stop_writes: bool,
}

/// Server-wide values the namespace answers include.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamespaceContext<'a> {
    pub(crate) name: &'a str,
    pub(crate) shape: StatsShape,
    pub(crate) cluster_size: usize,
    pub(crate) max_record_size: usize,
    pub(crate) default_ttl_secs: u32,
    pub(crate) expired_objects: u64,
}

/// The answer to `namespace/<ns>`: statistics followed by configuration, `;`-separated.
pub(crate) fn render_namespace(
    ctx: NamespaceContext<'_>,
    stats: &NamespaceStats,
    usage: Usage,
) -> String {
    let eval = stats.evaluate(usage);
    let mut out = String::new();
    push(&mut out, "ns_cluster_size", ctx.cluster_size);
    push(&mut out, "effective_replication_factor", 1);
    push(&mut out, "objects", usage.objects);
    push(&mut out, "tombstones", 0);
    push(&mut out, "master_objects", usage.objects);
    push(&mut out, "prole_objects", 0);
    push(&mut out, "non_replica_objects", 0);
    push(&mut out, "dead_partitions", 0);
    push(&mut out, "unavailable_partitions", 0);
    push(
        &mut out,
        "clock_skew_stop_writes",
        stats.clock_skew_stop_writes,
    );
    push(&mut out, "stop_writes", eval.stop_writes);
    push(&mut out, "hwm_breached", eval.hwm_breached);
    push(&mut out, "current_time", citrusleaf_now());
    push(&mut out, "non_expirable_objects", usage.non_expirable);
    push(&mut out, "expired_objects", ctx.expired_objects);
    push(&mut out, "evicted_objects", 0);
    push(&mut out, "evict_ttl", 0);
    push(&mut out, "nsup_cycle_duration", 0);
    match ctx.shape {
        StatsShape::PreV7 => {
            let index_bytes = usage.objects * 64;
            push(&mut out, "memory_used_bytes", eval.memory_used_bytes);
            push(&mut out, "memory_used_data_bytes", 0);
            push(&mut out, "memory_used_index_bytes", index_bytes);
            push(&mut out, "memory_used_set_index_bytes", 0);
            push(&mut out, "memory_used_sindex_bytes", 0);
            push(&mut out, "memory_free_pct", free_pct(eval.memory_used_pct));
            push(&mut out, "device_total_bytes", stats.total_bytes);
            push(&mut out, "device_used_bytes", eval.used_bytes);
            push(&mut out, "device_free_pct", free_pct(eval.used_pct));
            push(&mut out, "device_available_pct", eval.avail_pct);
            push(&mut out, "device_compression_ratio", "1.000");
        }
        StatsShape::V7 => {
            push(&mut out, "index_used_bytes", usage.objects * 64);
            push(&mut out, "set_index_used_bytes", 0);
            push(&mut out, "sindex_used_bytes", 0);
            push(&mut out, "data_total_bytes", stats.total_bytes);
            push(&mut out, "data_used_bytes", eval.used_bytes);
            push(&mut out, "data_used_pct", format!("{:.2}", eval.used_pct));
            push(&mut out, "data_avail_pct", eval.avail_pct);
            push(&mut out, "data_compression_ratio", "1.000");
        }
    }
    out.push_str(&render_config(ctx, stats));
    out
}

/// The answer to `get-config:context=namespace;id=<ns>`: configuration only.
pub(crate) fn render_config(ctx: NamespaceContext<'_>, stats: &NamespaceStats) -> String {
    let mut out = String::new();
    push(&mut out, "replication-factor", 1);
    push(&mut out, "default-ttl", ctx.default_ttl_secs);
    push(&mut out, "nsup-period", 120);
    push(&mut out, "evict-tenths-pct", 5);
    push(&mut out, "stop-writes-sys-memory-pct", 90);
    match ctx.shape {
        StatsShape::PreV7 => {
            push(&mut out, "memory-size", stats.memory_size);
            push(&mut out, "high-water-disk-pct", stats.evict_used_pct);
            push(
                &mut out,
                "high-water-memory-pct",
                stats.high_water_memory_pct,
            );
            push(&mut out, "stop-writes-pct", stats.stop_writes_memory_pct);
            push(&mut out, "storage-engine", "device");
            push(
                &mut out,
                "storage-engine.file[0]",
                format!("/opt/aerospike/data/{}.dat", ctx.name),
            );
            push(&mut out, "storage-engine.filesize", stats.total_bytes);
            push(
                &mut out,
                "storage-engine.write-block-size",
                ctx.max_record_size,
            );
            push(
                &mut out,
                "storage-engine.min-avail-pct",
                stats.stop_writes_avail_pct,
            );
            push(
                &mut out,
                "storage-engine.max-used-pct",
                stats.stop_writes_used_pct,
            );
        }
        StatsShape::V7 => {
            push(&mut out, "evict-sys-memory-pct", 0);
            push(&mut out, "max-record-size", ctx.max_record_size);
            push(&mut out, "storage-engine", "memory");
            push(&mut out, "storage-engine.data-size", stats.total_bytes);
            push(
                &mut out,
                "storage-engine.evict-used-pct",
                stats.evict_used_pct,
            );
            push(
                &mut out,
                "storage-engine.stop-writes-avail-pct",
                stats.stop_writes_avail_pct,
            );
            push(
                &mut out,
                "storage-engine.stop-writes-used-pct",
                stats.stop_writes_used_pct,
            );
        }
    }
    out.pop(); // the trailing ';'
    out
}

fn push(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{key}={value};");
}

fn free_pct(used_pct: f64) -> u32 {
    (100.0 - used_pct).floor().clamp(0.0, 100.0) as u32
}

/// Seconds since 2010-01-01, the server's clock in `current_time`.
fn citrusleaf_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_sub(1_262_304_000)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ctx(shape: StatsShape) -> NamespaceContext<'static> {
        NamespaceContext {
            name: "test",
            shape,
            cluster_size: 1,
            max_record_size: 1024 * 1024,
            default_ttl_secs: 0,
            expired_objects: 0,
        }
    }

    fn parse(text: &str) -> HashMap<&str, &str> {
        text.split(';')
            .filter_map(|kv| kv.split_once('='))
            .collect()
    }

    #[test]
    fn v7_reports_data_statistics_and_derives_the_flags() {
        let mut stats = NamespaceStats {
            evict_used_pct: 60,
            ..NamespaceStats::default()
        };
        stats.set_used_pct(65.0);
        let text = render_namespace(ctx(StatsShape::V7), &stats, Usage::default());
        let map = parse(&text);
        assert_eq!(map["data_used_pct"], "65.00");
        assert_eq!(map["data_avail_pct"], "35");
        assert_eq!(map["data_total_bytes"], stats.total_bytes.to_string());
        assert_eq!(map["storage-engine.evict-used-pct"], "60");
        assert_eq!(map["storage-engine.stop-writes-used-pct"], "70");
        assert_eq!(map["hwm_breached"], "true");
        assert_eq!(map["stop_writes"], "false");
        assert!(!map.contains_key("device_used_bytes"));
        stats.set_used_pct(71.0);
        assert!(stats.evaluate(Usage::default()).stop_writes);
    }

    #[test]
    fn pre_v7_reports_device_and_memory_statistics() {
        let stats = NamespaceStats {
            used_bytes: Some(1000),
            total_bytes: 4000,
            avail_pct: Some(3),
            evict_used_pct: 50,
            ..NamespaceStats::default()
        };
        let usage = Usage {
            objects: 10,
            bytes: 1,
            non_expirable: 10,
        };
        let text = render_namespace(ctx(StatsShape::PreV7), &stats, usage);
        let map = parse(&text);
        assert_eq!(map["device_used_bytes"], "1000");
        assert_eq!(map["device_total_bytes"], "4000");
        assert_eq!(map["device_free_pct"], "75");
        assert_eq!(map["device_available_pct"], "3");
        assert_eq!(map["memory_used_bytes"], "640");
        assert_eq!(map["high-water-disk-pct"], "50");
        assert_eq!(map["storage-engine.min-avail-pct"], "5");
        // Available storage under min-avail-pct puts the namespace in stop-writes.
        assert_eq!(map["stop_writes"], "true");
        assert_eq!(map["hwm_breached"], "false");
        assert!(!map.contains_key("data_used_pct"));
    }

    #[test]
    fn forced_flags_win_and_config_is_settable_by_name() {
        let mut stats = NamespaceStats {
            stop_writes: Some(true),
            hwm_breached: Some(true),
            ..NamespaceStats::default()
        };
        let eval = stats.evaluate(Usage::default());
        assert!(eval.stop_writes && eval.hwm_breached);
        stats
            .set_config(StatsShape::V7, "storage-engine.evict-used-pct", "55")
            .unwrap();
        stats
            .set_config(StatsShape::PreV7, "stop-writes-pct", "80")
            .unwrap();
        assert_eq!(stats.evict_used_pct, 55);
        assert_eq!(stats.stop_writes_memory_pct, 80);
        assert!(
            stats
                .set_config(StatsShape::V7, "high-water-disk-pct", "1")
                .is_err()
        );
        assert!(
            stats
                .set_config(StatsShape::V7, "evict-used-pct", "101")
                .is_err()
        );
        let config = render_config(ctx(StatsShape::V7), &stats);
        assert!(
            config.contains("storage-engine.evict-used-pct=55"),
            "{config}"
        );
        assert!(!config.ends_with(';'));
    }
}
