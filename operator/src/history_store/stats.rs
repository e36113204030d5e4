//! Reading one node's answer to `namespace/<ns>` (merged with `get-config:context=namespace;id=<ns>`)
//! into figures the level decision understands, for both generations of Aerospike:
//!
//! - before 7.0: storage used from `device_used_bytes`/`device_total_bytes`, free contiguous
//!   space `device_available_pct`; marks `high-water-disk-pct` (eviction),
//!   `storage-engine.max-used-pct` and `storage-engine.min-avail-pct` (stop-writes); memory used
//!   from `memory_used_bytes`/`memory-size` with `high-water-memory-pct` and `stop-writes-pct`.
//! - 7.0 and later: `data_used_pct` (or `data_used_bytes`/`data_total_bytes`), `data_avail_pct`;
//!   marks `storage-engine.evict-used-pct`, `storage-engine.stop-writes-used-pct` and
//!   `storage-engine.stop-writes-avail-pct`.
//!
//! Both report the server's own `hwm_breached` and `stop_writes` flags. A mark of 0 is off, as on
//! the server. Pure text parsing: no I/O, and it never divides by a mark.

use std::collections::BTreeMap;

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Neither the pre-7 nor the 7.0+ usage statistics are in the answer.
    #[error(
        "node {node}: the namespace statistics have neither data_* (7.0+) nor device_*/memory_* (before 7.0) usage figures"
    )]
    UnknownShape {
        /// The node.
        node: String,
    },
    /// A statistic is present but not a number.
    #[error("node {node}: {key}={value} is not a number")]
    NotANumber {
        /// The node.
        node: String,
        /// The statistic.
        key: String,
        /// What it said.
        value: String,
    },
}

/// Which generation of server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 6.x and earlier.
    PreV7,
    /// 7.0 and later.
    V7,
}

/// A configured mark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    /// Configured as 0: the server never acts on it.
    Off,
    /// Acts at this percentage.
    At(f64),
    /// Not in the answer.
    Missing,
}

impl Mark {
    /// The percentage, when the mark acts.
    pub fn percent(self) -> Option<f64> {
        match self {
            Self::At(pct) => Some(pct),
            Self::Off | Self::Missing => None,
        }
    }
}

/// One resource that fills up (storage, or memory before 7.0) with its marks.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    /// `storage` or `memory`.
    pub kind: &'static str,
    /// Used, in percent of its capacity.
    pub used_percent: f64,
    /// Where eviction starts.
    pub eviction_mark: Mark,
    /// Where writes stop on used space.
    pub stop_writes_mark: Mark,
}

/// What one node says about the namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFigures {
    /// The node's name.
    pub node: String,
    /// Which naming scheme it used.
    pub shape: Shape,
    /// Storage first, then memory (before 7.0, when the node reports it).
    pub dimensions: Vec<Dimension>,
    /// Free contiguous storage in percent (`device_available_pct` / `data_avail_pct`).
    pub avail_percent: Option<f64>,
    /// Writes stop when [`Self::avail_percent`] falls below this.
    pub stop_writes_avail_mark: Mark,
    /// The server's `hwm_breached` flag.
    pub hwm_breached: bool,
    /// The server's `stop_writes` flag.
    pub stop_writes: bool,
}

/// Splits a `key=value;key=value` info answer. Later answers fill keys missing from earlier
/// ones, so the statistics win over a separately fetched configuration.
pub fn parse_info<'a>(answers: &[&'a str]) -> BTreeMap<&'a str, &'a str> {
    let mut map = BTreeMap::new();
    for answer in answers {
        for pair in answer.trim().split(';') {
            if let Some((key, value)) = pair.split_once('=') {
                map.entry(key.trim()).or_insert(value.trim());
            }
        }
    }
    map
}

/// Reads `node`'s figures from its parsed answers.
pub fn node_figures(node: &str, info: &BTreeMap<&str, &str>) -> Result<NodeFigures, Error> {
    let reader = Reader { node, info };
    let flag = |key: &str| {
        info.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let v7 = info.contains_key("data_used_pct")
        || info.contains_key("data_total_bytes")
        || info.contains_key("storage-engine.evict-used-pct");
    let (shape, dimensions, avail_percent, stop_writes_avail_mark) = if v7 {
        let used_percent = match reader.number("data_used_pct")? {
            Some(pct) => Some(pct),
            None => reader.ratio("data_used_bytes", "data_total_bytes")?,
        };
        let used_percent = used_percent.ok_or_else(|| Error::UnknownShape {
            node: node.to_owned(),
        })?;
        let storage = Dimension {
            kind: "storage",
            used_percent,
            eviction_mark: reader.mark("storage-engine.evict-used-pct")?,
            stop_writes_mark: reader.mark("storage-engine.stop-writes-used-pct")?,
        };
        (
            Shape::V7,
            vec![storage],
            reader.number("data_avail_pct")?,
            reader.mark("storage-engine.stop-writes-avail-pct")?,
        )
    } else {
        let mut dimensions = Vec::new();
        if let Some(used_percent) = reader.ratio("device_used_bytes", "device_total_bytes")? {
            dimensions.push(Dimension {
                kind: "storage",
                used_percent,
                eviction_mark: reader.mark("high-water-disk-pct")?,
                stop_writes_mark: reader.mark("storage-engine.max-used-pct")?,
            });
        }
        if let Some(used_percent) = reader.ratio("memory_used_bytes", "memory-size")? {
            dimensions.push(Dimension {
                kind: "memory",
                used_percent,
                eviction_mark: reader.mark("high-water-memory-pct")?,
                stop_writes_mark: reader.mark("stop-writes-pct")?,
            });
        }
        if dimensions.is_empty() {
            return Err(Error::UnknownShape {
                node: node.to_owned(),
            });
        }
        (
            Shape::PreV7,
            dimensions,
            reader.number("device_available_pct")?,
            reader.mark("storage-engine.min-avail-pct")?,
        )
    };
    Ok(NodeFigures {
        node: node.to_owned(),
        shape,
        dimensions,
        avail_percent,
        stop_writes_avail_mark,
        hwm_breached: flag("hwm_breached"),
        stop_writes: flag("stop_writes"),
    })
}

struct Reader<'a, 'b> {
    node: &'a str,
    info: &'a BTreeMap<&'b str, &'b str>,
}

impl Reader<'_, '_> {
    fn number(&self, key: &str) -> Result<Option<f64>, Error> {
        let Some(value) = self.info.get(key) else {
            return Ok(None);
        };
        value
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| Error::NotANumber {
                node: self.node.to_owned(),
                key: key.to_owned(),
                value: (*value).to_owned(),
            })
    }

    /// `part / whole` in percent; `None` when either is missing or the whole is 0 (nothing
    /// configured, so nothing to fill).
    fn ratio(&self, part: &str, whole: &str) -> Result<Option<f64>, Error> {
        match (self.number(part)?, self.number(whole)?) {
            (Some(part), Some(whole)) if whole > 0.0 => Ok(Some(part * 100.0 / whole)),
            _ => Ok(None),
        }
    }

    fn mark(&self, key: &str) -> Result<Mark, Error> {
        Ok(match self.number(key)? {
            None => Mark::Missing,
            Some(pct) if pct <= 0.0 => Mark::Off,
            Some(pct) => Mark::At(pct),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 7.2 node's `namespace/<ns>` answer (statistics and configuration, abridged from a real
    /// server): 61.5 % used, eviction at 60, stop-writes at 70 used / 5 available.
    pub(crate) const V7: &str = "ns_cluster_size=3;effective_replication_factor=2;objects=182734;tombstones=0;stop_writes=false;hwm_breached=true;current_time=500000000;evicted_objects=120;index_used_bytes=11694976;set_index_used_bytes=0;sindex_used_bytes=0;data_total_bytes=4294967296;data_used_bytes=2641404887;data_used_pct=61.50;data_avail_pct=38;data_compression_ratio=1.000;replication-factor=2;default-ttl=0;nsup-period=120;evict-tenths-pct=5;stop-writes-sys-memory-pct=90;evict-sys-memory-pct=0;max-record-size=1048576;storage-engine=memory;storage-engine.data-size=4294967296;storage-engine.evict-used-pct=60;storage-engine.stop-writes-avail-pct=5;storage-engine.stop-writes-used-pct=70";

    /// A 6.4 node's answer: 1 GiB of 4 GiB device used (25 %), memory 640 of 1 GiB.
    pub(crate) const PRE_V7: &str = "ns_cluster_size=1;objects=10;stop_writes=false;hwm_breached=false;memory_used_bytes=640;memory_used_data_bytes=0;memory_used_index_bytes=640;memory_free_pct=99;device_total_bytes=4294967296;device_used_bytes=1073741824;device_free_pct=75;device_available_pct=74;device_compression_ratio=1.000;replication-factor=1;memory-size=1073741824;high-water-disk-pct=50;high-water-memory-pct=60;stop-writes-pct=90;storage-engine=device;storage-engine.file[0]=/opt/aerospike/data/test.dat;storage-engine.filesize=4294967296;storage-engine.min-avail-pct=5;storage-engine.max-used-pct=70";

    #[test]
    fn reads_the_7_0_names() {
        let figures = node_figures("BB9A", &parse_info(&[V7])).unwrap();
        assert_eq!(figures.shape, Shape::V7);
        assert_eq!(figures.dimensions.len(), 1);
        let storage = &figures.dimensions[0];
        assert_eq!(storage.used_percent, 61.5);
        assert_eq!(storage.eviction_mark, Mark::At(60.0));
        assert_eq!(storage.stop_writes_mark, Mark::At(70.0));
        assert_eq!(figures.avail_percent, Some(38.0));
        assert_eq!(figures.stop_writes_avail_mark, Mark::At(5.0));
        assert!(figures.hwm_breached);
        assert!(!figures.stop_writes);
    }

    #[test]
    fn reads_the_pre_7_names_storage_and_memory() {
        let figures = node_figures("BB9B", &parse_info(&[PRE_V7])).unwrap();
        assert_eq!(figures.shape, Shape::PreV7);
        let [storage, memory] = figures.dimensions.as_slice() else {
            panic!("{figures:?}");
        };
        assert_eq!(storage.kind, "storage");
        assert_eq!(storage.used_percent, 25.0);
        assert_eq!(storage.eviction_mark, Mark::At(50.0));
        assert_eq!(storage.stop_writes_mark, Mark::At(70.0));
        assert_eq!(memory.kind, "memory");
        assert!(memory.used_percent < 0.001);
        assert_eq!(memory.eviction_mark, Mark::At(60.0));
        assert_eq!(memory.stop_writes_mark, Mark::At(90.0));
        assert_eq!(figures.avail_percent, Some(74.0));
        assert_eq!(figures.stop_writes_avail_mark, Mark::At(5.0));
    }

    #[test]
    fn a_zero_mark_is_off_and_a_missing_one_is_missing() {
        let answer = V7.replace(
            "storage-engine.evict-used-pct=60",
            "storage-engine.evict-used-pct=0",
        );
        let answer = answer.replace(";storage-engine.stop-writes-used-pct=70", "");
        let figures = node_figures("n", &parse_info(&[&answer])).unwrap();
        assert_eq!(figures.dimensions[0].eviction_mark, Mark::Off);
        assert_eq!(figures.dimensions[0].stop_writes_mark, Mark::Missing);
        assert_eq!(Mark::Off.percent(), None);
    }

    #[test]
    fn configuration_fetched_separately_fills_missing_marks_only() {
        let stats = "data_used_pct=12.00;data_avail_pct=88;storage-engine.evict-used-pct=60";
        let config = "storage-engine.evict-used-pct=99;storage-engine.stop-writes-used-pct=80";
        let figures = node_figures("n", &parse_info(&[stats, config])).unwrap();
        assert_eq!(figures.dimensions[0].eviction_mark, Mark::At(60.0));
        assert_eq!(figures.dimensions[0].stop_writes_mark, Mark::At(80.0));
    }

    #[test]
    fn used_bytes_stand_in_for_a_missing_7_0_percentage() {
        let figures = node_figures(
            "n",
            &parse_info(&["data_total_bytes=200;data_used_bytes=50"]),
        )
        .unwrap();
        assert_eq!(figures.dimensions[0].used_percent, 25.0);
        assert_eq!(figures.avail_percent, None);
    }

    #[test]
    fn an_answer_without_usage_figures_or_with_garbage_is_an_error() {
        let error = node_figures("n", &parse_info(&["objects=1;stop_writes=false"])).unwrap_err();
        assert!(error.to_string().contains("neither data_*"), "{error}");
        let error = node_figures("n", &parse_info(&["data_used_pct=lots"])).unwrap_err();
        assert_eq!(
            error,
            Error::NotANumber {
                node: "n".into(),
                key: "data_used_pct".into(),
                value: "lots".into()
            }
        );
        let zero_device = "device_total_bytes=0;device_used_bytes=0";
        assert!(node_figures("n", &parse_info(&[zero_device])).is_err());
    }
}
