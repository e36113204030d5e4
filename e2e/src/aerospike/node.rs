//! The state one server node shares between its connections and its test handle: identity, its
//! place in the test cluster (which partitions it owns, who its peers are), the namespace numbers
//! tests set, and the fault switches. Switches take effect on the next command; nothing here does
//! I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::aerospike::message::ResultCode;
use crate::aerospike::stats::{NamespaceStats, StatsShape};
use crate::aerospike::store::{NamespaceData, PARTITIONS, Store, Usage};

/// One member of a test cluster as its peers advertise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
}

/// Fixed facts about a node.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) cluster_name: Option<String>,
    pub(crate) build: String,
    pub(crate) shape: StatsShape,
    pub(crate) max_record_size: usize,
    pub(crate) default_ttl: Duration,
    pub(crate) namespaces: Vec<String>,
}

/// What tests switch at run time.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    /// Accept connections only to close them at once.
    pub(crate) refuse_connections: bool,
    /// Added before answering each record command.
    pub(crate) response_delay: Duration,
    /// Added before answering each info request.
    pub(crate) info_delay: Duration,
    /// How many of the next writes fail.
    pub(crate) failing_writes: u32,
    /// The result code those writes fail with.
    pub(crate) failing_writes_code: ResultCode,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            refuse_connections: false,
            response_delay: Duration::ZERO,
            info_delay: Duration::ZERO,
            failing_writes: 0,
            failing_writes_code: ResultCode::DeviceOverload,
        }
    }
}

/// The mutable part of a node.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) stats: BTreeMap<String, NamespaceStats>,
    pub(crate) faults: Faults,
}

/// Everything a node's connections need.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) identity: Identity,
    pub(crate) addr: SocketAddr,
    /// This node's position in `members`.
    pub(crate) index: usize,
    /// Every node of the cluster, this one included, in partition-ownership order.
    pub(crate) members: Arc<Vec<Member>>,
    pub(crate) store: Arc<Store>,
    state: Mutex<NodeState>,
    /// Batch commands received (`batch_index_initiate` in `statistics`).
    pub(crate) batches: AtomicU64,
    /// Bumped to make every open connection of the node close.
    epoch: watch::Sender<u64>,
}

impl Node {
    pub(crate) fn new(
        identity: Identity,
        index: usize,
        members: Arc<Vec<Member>>,
        store: Arc<Store>,
        stats: NamespaceStats,
    ) -> Self {
        let stats = identity
            .namespaces
            .iter()
            .map(|name| (name.clone(), stats.clone()))
            .collect();
        let addr = members[index].addr;
        Node {
            identity,
            addr,
            index,
            members,
            store,
            state: Mutex::new(NodeState {
                stats,
                faults: Faults::default(),
            }),
            batches: AtomicU64::new(0),
            epoch: watch::Sender::new(0),
        }
    }

    /// Locks the mutable state. Never held across an await.
    pub(crate) fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot of the fault switches.
    pub(crate) fn faults(&self) -> Faults {
        self.state().faults.clone()
    }

    /// Whether this node masters `partition` (partitions are dealt round-robin over the members;
    /// replication factor 1).
    pub(crate) fn owns(&self, partition: usize) -> bool {
        partition % self.members.len() == self.index
    }

    /// The totals of the partitions of `data` this node owns (a lone node owns them all).
    pub(crate) fn usage(&self, data: &NamespaceData) -> Usage {
        if self.members.len() == 1 {
            data.total()
        } else {
            data.usage(|partition| self.owns(partition))
        }
    }

    /// The partition ownership bitmap of the `replicas` answers: bit `p` (most significant bit
    /// first) is set when this node owns partition `p`.
    pub(crate) fn partition_bitmap(&self) -> Vec<u8> {
        let mut bitmap = vec![0u8; PARTITIONS / 8];
        for partition in (0..PARTITIONS).filter(|p| self.owns(*p)) {
            bitmap[partition >> 3] |= 0x80 >> (partition & 7);
        }
        bitmap
    }

    /// The other members of the cluster.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != self.index)
            .map(|(_, member)| member)
    }

    /// Closes every open connection of the node.
    pub(crate) fn close_connections(&self) {
        self.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// A receiver that changes when [`close_connections`](Self::close_connections) is called.
    pub(crate) fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: usize, count: usize) -> Node {
        let members = (0..count)
            .map(|i| Member {
                name: format!("N{i}"),
                addr: SocketAddr::from(([127, 0, 0, 1], 3000 + i as u16)),
            })
            .collect();
        let identity = Identity {
            name: format!("N{index}"),
            cluster_name: None,
            build: "7.2.0.6".into(),
            shape: StatsShape::V7,
            max_record_size: 1024 * 1024,
            default_ttl: Duration::ZERO,
            namespaces: vec!["test".into()],
        };
        Node::new(
            identity,
            index,
            Arc::new(members),
            Arc::new(Store::new(["test"])),
            NamespaceStats::default(),
        )
    }

    #[test]
    fn a_single_node_owns_every_partition() {
        let single = node(0, 1);
        assert!(single.partition_bitmap().iter().all(|byte| *byte == 0xFF));
        assert_eq!(single.peers().count(), 0);
    }

    #[test]
    fn cluster_members_split_the_partitions() {
        let nodes: Vec<Node> = (0..3).map(|i| node(i, 3)).collect();
        for partition in 0..PARTITIONS {
            assert_eq!(nodes.iter().filter(|n| n.owns(partition)).count(), 1);
        }
        let second = nodes[1].partition_bitmap();
        assert_eq!(second[0], 0b0100_1001);
        assert_eq!(
            nodes[1]
                .peers()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["N0", "N2"]
        );
    }
}
