//! An Aerospike wire-protocol test server. No Aerospike server can be installed on the machines
//! Sessionizer is built on, yet the worker's history store and the operator's high-water-mark
//! monitor must be proven against the real `aerospike` crate, unchanged. This server speaks enough
//! of the protocol for that client: the info commands it sends when it connects and tends, the
//! namespace statistics of servers before and after 7.0, single-record reads and writes with TTL
//! and generation, batch commands, a record-size limit, and switches that make it fail the way a
//! real server fails (stop-writes, slowness, dropped connections, failing writes).
//!
//! Topology: [`AerospikeTestServer::start`] runs a one-node cluster. [`AerospikeTestCluster`]
//! runs several nodes that advertise each other as peers (`peers-clear-std`) and split the 4096
//! partitions round-robin, so the client discovers them from one seed and routes each key to its
//! owner. The nodes of a cluster share one record store (a key written through any node is
//! readable through all), but each has its own namespace statistics and switches, which is what
//! the monitor's "worst node" logic needs. Replication factor is 1.
//!
//! It listens on loopback only and must never be mistaken for a database: records live in memory
//! and die with the server.

mod batch;
mod conn;
mod execute;
mod info;
mod message;
mod node;
mod proto;
mod stats;
mod store;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use message::ResultCode;
pub use stats::{NamespaceStats, StatsShape};

use crate::{Error, Result};
use node::{Identity, Member, Node};
use store::Store;

/// How often expired records are swept away (reads never see them in between).
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// How to start one server node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; must be a loopback address.
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (read it back with [`AerospikeTestServer::addr`]).
    pub port: u16,
    /// The node name (`node` info). Default: `BB9` followed by the address in hex, as real node
    /// names look.
    pub node_name: Option<String>,
    /// The `cluster-name`; `None` answers `null`, like a server without one.
    pub cluster_name: Option<String>,
    /// The namespaces the node serves.
    pub namespaces: Vec<String>,
    /// Which server generation the namespace statistics imitate.
    pub stats_shape: StatsShape,
    /// The `build` reported; `None` uses the shape's default (6.4.0.10 or 7.2.0.6).
    pub build: Option<String>,
    /// The record-size limit (`max-record-size` / `write-block-size`). Default 1 MiB.
    pub max_record_size: usize,
    /// TTL of writes that ask for the namespace default; zero means never expire (the real
    /// default-ttl).
    pub default_ttl: Duration,
    /// Initial statistics and marks of every namespace.
    pub namespace_stats: NamespaceStats,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            node_name: None,
            cluster_name: None,
            namespaces: vec![String::from("test")],
            stats_shape: StatsShape::default(),
            build: None,
            max_record_size: 1024 * 1024,
            default_ttl: Duration::ZERO,
            namespace_stats: NamespaceStats::default(),
        }
    }
}

/// Aborts a task when the last owner is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running server node. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct AerospikeTestServer {
    node: Arc<Node>,
    accept: Option<JoinHandle<()>>,
    _reaper: Arc<AbortOnDrop>,
}

impl AerospikeTestServer {
    /// Starts a one-node cluster.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        let cluster = AerospikeTestCluster::start(vec![config]).await?;
        cluster
            .nodes
            .into_iter()
            .next()
            .ok_or_else(|| Error::Other(String::from("aerospike test cluster without nodes")))
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.node.addr
    }

    /// The address as the client's host list wants it: `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.node.addr.to_string()
    }

    /// The node name (`node` info).
    pub fn node_name(&self) -> &str {
        &self.node.identity.name
    }

    /// Puts every namespace of the node in stop-writes (writes fail with
    /// [`ResultCode::OutOfSpace`], statistics report `stop_writes=true`), or with `false` lets the
    /// numbers decide again.
    pub fn set_stop_writes(&self, on: bool) {
        self.update_all(|stats| stats.stop_writes = on.then_some(true));
    }

    /// Sets `clock_skew_stop_writes` on every namespace: writes fail with
    /// [`ResultCode::Forbidden`] while it is on.
    pub fn set_clock_skew_stop_writes(&self, on: bool) {
        self.update_all(|stats| stats.clock_skew_stop_writes = on);
    }

    /// Delays every record-command answer by `delay` (zero turns it off).
    pub fn set_response_delay(&self, delay: Duration) {
        self.node.state().faults.response_delay = delay;
    }

    /// Delays every info answer by `delay` (zero turns it off). This slows the client's tend too.
    pub fn set_info_delay(&self, delay: Duration) {
        self.node.state().faults.info_delay = delay;
    }

    /// Closes every open connection now; new ones are accepted as usual.
    pub fn close_connections(&self) {
        self.node.close_connections();
    }

    /// With `true`, closes every open connection and closes new ones as soon as they are accepted,
    /// until called with `false`.
    pub fn set_refuse_connections(&self, on: bool) {
        self.node.state().faults.refuse_connections = on;
        if on {
            self.node.close_connections();
        }
    }

    /// Makes the next `count` writes (puts, touches, deletes, batch writes) fail with `code`.
    pub fn fail_next_writes(&self, count: u32, code: ResultCode) {
        let mut state = self.node.state();
        state.faults.failing_writes = count;
        state.faults.failing_writes_code = code;
    }

    /// How many of the injected write failures are still to come.
    pub fn pending_write_failures(&self) -> u32 {
        self.node.state().faults.failing_writes
    }

    /// Changes the statistics and marks of `namespace`; `false` if the node does not serve it.
    pub fn update_namespace(
        &self,
        namespace: &str,
        change: impl FnOnce(&mut NamespaceStats),
    ) -> bool {
        let mut state = self.node.state();
        match state.stats.get_mut(namespace) {
            Some(stats) => {
                change(stats);
                true
            }
            None => false,
        }
    }

    /// The current statistics and marks of `namespace`.
    pub fn namespace_stats(&self, namespace: &str) -> Option<NamespaceStats> {
        self.node.state().stats.get(namespace).cloned()
    }

    /// Live records of `namespace` in the partitions this node owns.
    pub fn record_count(&self, namespace: &str) -> u64 {
        self.node
            .store
            .with_namespace(namespace, |data| self.node.usage(data).objects)
            .unwrap_or(0)
    }

    /// The answer this node gives to the info command `command`, as sent on the wire.
    pub fn info(&self, command: &str) -> String {
        info::answer(&self.node, command)
    }

    /// Stops the server and waits until its listener and connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }

    fn update_all(&self, change: impl Fn(&mut NamespaceStats)) {
        let mut state = self.node.state();
        state.stats.values_mut().for_each(change);
    }
}

impl Drop for AerospikeTestServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// Several server nodes forming one cluster: each advertises the others as peers and owns every
/// n-th partition, so the client discovers all of them from any one seed. Records are shared;
/// statistics and switches are per node. Dropping it stops every node.
#[derive(Debug)]
pub struct AerospikeTestCluster {
    nodes: Vec<AerospikeTestServer>,
}

impl AerospikeTestCluster {
    /// Starts one node per config. Every config must list the same namespaces; names and ports
    /// must be distinct.
    pub async fn start(configs: Vec<ServerConfig>) -> Result<Self> {
        let Some(first) = configs.first() else {
            return Err(Error::Other(String::from(
                "an aerospike test cluster needs at least one node",
            )));
        };
        let namespaces = first.namespaces.clone();
        if namespaces.is_empty() {
            return Err(Error::Other(String::from(
                "an aerospike test server needs a namespace",
            )));
        }
        if let Some(odd) = configs.iter().find(|c| c.namespaces != namespaces) {
            return Err(Error::Other(format!(
                "every node of a test cluster must serve the same namespaces: {:?} vs {:?}",
                namespaces, odd.namespaces
            )));
        }

        let mut listeners = Vec::with_capacity(configs.len());
        let mut members = Vec::with_capacity(configs.len());
        for config in &configs {
            let listener = bind(config.host, config.port).await?;
            let addr = listener
                .local_addr()
                .map_err(|source| Error::AerospikeTestServer {
                    context: String::from("reading the bound address"),
                    source,
                })?;
            let name = config
                .node_name
                .clone()
                .unwrap_or_else(|| default_node_name(addr));
            members.push(Member { name, addr });
            listeners.push(listener);
        }
        let mut names = HashSet::new();
        if let Some(duplicate) = members.iter().find(|m| !names.insert(m.name.as_str())) {
            return Err(Error::Other(format!(
                "two test nodes are named {}",
                duplicate.name
            )));
        }

        let members = Arc::new(members);
        let store = Arc::new(Store::new(namespaces.iter().map(String::as_str)));
        let reaper = Arc::new(AbortOnDrop(tokio::spawn(reap(store.clone()))));
        let mut nodes = Vec::with_capacity(configs.len());
        for (index, (config, listener)) in configs.into_iter().zip(listeners).enumerate() {
            let identity = Identity {
                name: members[index].name.clone(),
                cluster_name: config.cluster_name,
                build: config
                    .build
                    .unwrap_or_else(|| config.stats_shape.default_build().to_owned()),
                shape: config.stats_shape,
                max_record_size: config.max_record_size,
                default_ttl: config.default_ttl,
                namespaces: config.namespaces,
            };
            let node = Arc::new(Node::new(
                identity,
                index,
                members.clone(),
                store.clone(),
                config.namespace_stats,
            ));
            tracing::info!(node = %node.identity.name, addr = %node.addr, "aerospike test server listening");
            let accept = tokio::spawn(conn::accept_loop(listener, node.clone()));
            nodes.push(AerospikeTestServer {
                node,
                accept: Some(accept),
                _reaper: reaper.clone(),
            });
        }
        Ok(AerospikeTestCluster { nodes })
    }

    /// The nodes, in partition-ownership order.
    pub fn nodes(&self) -> &[AerospikeTestServer] {
        &self.nodes
    }

    /// The client's host list for all nodes: `127.0.0.1:<port>,127.0.0.1:<port>,…`.
    pub fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(AerospikeTestServer::host)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops every node and waits until they are closed.
    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener> {
    if !host.is_loopback() {
        return Err(Error::AerospikeTestServer {
            context: format!("refusing to listen on {host}: only loopback addresses are allowed"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    TcpListener::bind(SocketAddr::new(host, port))
        .await
        .map_err(|source| Error::AerospikeTestServer {
            context: format!("binding {host}:{port}"),
            source,
        })
}

/// `BB9` followed by the IPv4 address and port in hex: 15 characters, like real node names.
fn default_node_name(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => v6.to_bits() as u32,
    };
    format!("BB9{ip:08X}{:04X}", addr.port())
}

async fn reap(store: Arc<Store>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        store.reap_expired(Instant::now());
    }
}
