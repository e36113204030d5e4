//! The info protocol: newline-separated text commands, each answered as `command<TAB>value`. It
//! covers what the `aerospike` crate sends when it validates a seed and on every tend (`node`,
//! `cluster-name`, `build`, `partition-generation`, `peers-generation`, `peers-clear-std`,
//! `replicas`, `rack-ids`, `service-clear-std`, …), the namespace statistics and configuration
//! the operator's monitor reads, and `set-config` for the namespace marks. Unknown commands get
//! the real server's `ERROR::unrecognized command`, never a made-up value.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::aerospike::node::Node;
use crate::aerospike::stats::{self, NamespaceContext};

/// The generation of the cluster membership; membership of a test cluster never changes.
const PEERS_GENERATION: u32 = 1;
/// The generation of the partition map; ownership of a test cluster never changes.
const PARTITION_GENERATION: u32 = 1;
/// What real servers answer for a namespace they do not have.
const NAMESPACE_UNKNOWN: &str = "ns_type=unknown";
/// What real servers list in `features`.
const FEATURES: &str = "batch-any;batch-index;blob-bits;cdt-list;cdt-map;cluster-stable;float;\
geo;sindex-exists;peers;pipelining;pquery;pscans;query-show;relaxed-sc;replicas;replicas-all;\
replicas-master;truncate-namespace;udf";

/// Answers a whole info request body (commands separated by newlines).
pub(crate) fn answer_request(node: &Node, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for command in text.split('\n').map(str::trim).filter(|c| !c.is_empty()) {
        out.push_str(command);
        out.push('\t');
        out.push_str(&answer(node, command));
        out.push('\n');
    }
    out
}

/// Answers one info command.
pub(crate) fn answer(node: &Node, command: &str) -> String {
    let id = &node.identity;
    if let Some(namespace) = command.strip_prefix("namespace/") {
        return namespace_answer(node, namespace, false);
    }
    if let Some(params) = command.strip_prefix("get-config:") {
        return get_config(node, params);
    }
    if let Some(params) = command.strip_prefix("set-config:") {
        return set_config(node, params);
    }
    if command.starts_with("user-agent-set:") {
        return "ok".into();
    }
    match command {
        "node" => id.name.clone(),
        "cluster-name" => id.cluster_name.clone().unwrap_or_else(|| "null".into()),
        "build" => id.build.clone(),
        "version" => format!("Aerospike Community Edition build {}", id.build),
        "edition" => "Aerospike Community Edition".into(),
        "features" => FEATURES.into(),
        "status" => "ok".into(),
        "namespaces" => id.namespaces.join(";"),
        "partition-generation" => PARTITION_GENERATION.to_string(),
        "peers-generation" => PEERS_GENERATION.to_string(),
        "rebalance-generation" => "1".into(),
        "cluster-stable" | "cluster-stable:" => cluster_key(node),
        "peers-clear-std" | "peers-clear-alt" => peers(node),
        "service" | "service-clear-std" | "service-clear-alt" => node.addr.to_string(),
        "services" | "services-alternate" => services(node),
        "services-alumni" => services(node),
        "replicas" => replicas(node, |bitmap| format!("0,1,{bitmap}")),
        "replicas-all" => replicas(node, |bitmap| format!("1,{bitmap}")),
        "replicas-master" => replicas(node, |bitmap| bitmap),
        "rack-ids" => id
            .namespaces
            .iter()
            .map(|ns| format!("{ns}:0"))
            .collect::<Vec<_>>()
            .join(";"),
        "statistics" => statistics(node),
        _ => "ERROR::unrecognized command".into(),
    }
}

/// `<generation>,<default port>,[[<node>,,[<host>:<port>]],…]` for the other members.
fn peers(node: &Node) -> String {
    let list: Vec<String> = node
        .peers()
        .map(|peer| format!("[{},,[{}]]", peer.name, peer.addr))
        .collect();
    format!(
        "{PEERS_GENERATION},{},[{}]",
        node.addr.port(),
        list.join(",")
    )
}

/// The legacy `services` answer: `host:port` of the other members, `;`-separated.
fn services(node: &Node) -> String {
    node.peers()
        .map(|peer| peer.addr.to_string())
        .collect::<Vec<_>>()
        .join(";")
}

/// A stable cluster key derived from the member names.
fn cluster_key(node: &Node) -> String {
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for member in node.members.iter() {
        for byte in member.name.bytes() {
            key = (key ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{key:X}")
}

/// `<ns>:<per-namespace text>` for every namespace, `;`-separated (no trailing `;`: the client
/// rejects an empty entry), with this node's ownership bitmap.
fn replicas(node: &Node, format: impl Fn(String) -> String) -> String {
    let bitmap = BASE64.encode(node.partition_bitmap());
    node.identity
        .namespaces
        .iter()
        .map(|ns| format!("{ns}:{}", format(bitmap.clone())))
        .collect::<Vec<_>>()
        .join(";")
}

fn statistics(node: &Node) -> String {
    format!(
        "cluster_size={};cluster_key={};cluster_integrity=true;cluster_is_member=true;\
         batch_index_initiate={}",
        node.members.len(),
        cluster_key(node),
        node.batches.load(Ordering::Relaxed)
    )
}

fn context<'a>(node: &'a Node, namespace: &'a str, expired: u64) -> NamespaceContext<'a> {
    NamespaceContext {
        name: namespace,
        shape: node.identity.shape,
        cluster_size: node.members.len(),
        max_record_size: node.identity.max_record_size,
        default_ttl_secs: u32::try_from(node.identity.default_ttl.as_secs()).unwrap_or(u32::MAX),
        expired_objects: expired,
    }
}

/// `namespace/<ns>` (statistics and configuration) or, with `config_only`, its configuration.
fn namespace_answer(node: &Node, namespace: &str, config_only: bool) -> String {
    let Some(stats) = node.state().stats.get(namespace).cloned() else {
        return NAMESPACE_UNKNOWN.into();
    };
    let (usage, expired) = node
        .store
        .with_namespace(namespace, |data| (node.usage(data), data.expired_count()))
        .unwrap_or_default();
    let ctx = context(node, namespace, expired);
    if config_only {
        stats::render_config(ctx, &stats)
    } else {
        stats::render_namespace(ctx, &stats, usage)
    }
}

/// Splits `key=value;key=value` parameters.
fn params(text: &str) -> Vec<(&str, &str)> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

fn namespace_param<'a>(params: &[(&str, &'a str)]) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| *key == "id" || *key == "namespace")
        .map(|(_, value)| *value)
}

/// `get-config:context=namespace;id=<ns>`.
fn get_config(node: &Node, text: &str) -> String {
    let params = params(text);
    let context = params
        .iter()
        .find(|(key, _)| *key == "context")
        .map(|(_, v)| *v);
    match (context, namespace_param(&params)) {
        (Some("namespace"), Some(namespace)) => namespace_answer(node, namespace, true),
        _ => "ERROR::unsupported context".into(),
    }
}

/// `set-config:context=namespace;id=<ns>;<param>=<value>` for the namespace marks.
fn set_config(node: &Node, text: &str) -> String {
    let params = params(text);
    let context = params
        .iter()
        .find(|(key, _)| *key == "context")
        .map(|(_, v)| *v);
    let (Some("namespace"), Some(namespace)) = (context, namespace_param(&params)) else {
        return "ERROR::unsupported context".into();
    };
    let shape = node.identity.shape;
    let mut state = node.state();
    let Some(stats) = state.stats.get_mut(namespace) else {
        return format!("ERROR::namespace {namespace} not found");
    };
    let mut updated = stats.clone();
    for (key, value) in params
        .iter()
        .filter(|(key, _)| !matches!(*key, "context" | "id" | "namespace"))
    {
        if let Err(message) = updated.set_config(shape, key, value) {
            return format!("ERROR::{message}");
        }
    }
    *stats = updated;
    "ok".into()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::aerospike::node::{Identity, Member};
    use crate::aerospike::stats::{NamespaceStats, StatsShape};
    use crate::aerospike::store::Store;

    fn node(index: usize, count: usize) -> Node {
        let members = (0..count)
            .map(|i| Member {
                name: format!("BB9{i}"),
                addr: SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16)),
            })
            .collect();
        let identity = Identity {
            name: format!("BB9{index}"),
            cluster_name: Some("sessionizer".into()),
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
    fn answers_the_commands_of_seed_validation() {
        let node = node(0, 1);
        let text = answer_request(&node, b"node\ncluster-name\nbuild\npartition-generation\n");
        assert_eq!(
            text,
            "node\tBB90\ncluster-name\tsessionizer\nbuild\t7.2.0.6\npartition-generation\t1\n"
        );
    }

    #[test]
    fn single_node_peers_and_replicas() {
        let node = node(0, 1);
        assert_eq!(answer(&node, "peers-clear-std"), "1,4000,[]");
        let replicas = answer(&node, "replicas");
        assert!(
            !replicas.contains(';'),
            "one namespace, no separator: {replicas}"
        );
        let (ns, rest) = replicas.split_once(':').unwrap();
        assert_eq!(ns, "test");
        let parts: Vec<&str> = rest.split(',').collect();
        assert_eq!(&parts[..2], ["0", "1"]);
        let bitmap = BASE64.decode(parts[2]).unwrap();
        assert_eq!(bitmap.len(), 512);
        assert!(bitmap.iter().all(|b| *b == 0xFF));
    }

    #[test]
    fn cluster_members_list_each_other() {
        let node = node(1, 3);
        assert_eq!(
            answer(&node, "peers-clear-std"),
            "1,4001,[[BB90,,[127.0.0.1:4000]],[BB92,,[127.0.0.1:4002]]]"
        );
        assert_eq!(answer(&node, "services"), "127.0.0.1:4000;127.0.0.1:4002");
    }

    #[test]
    fn namespace_config_is_readable_and_settable() {
        let node = node(0, 1);
        let set = "set-config:context=namespace;id=test;storage-engine.evict-used-pct=61";
        assert_eq!(answer(&node, set), "ok");
        let config = answer(&node, "get-config:context=namespace;id=test");
        assert!(
            config.contains("storage-engine.evict-used-pct=61"),
            "{config}"
        );
        assert!(answer(&node, "namespace/test").contains("data_used_bytes=0"));
        assert_eq!(answer(&node, "namespace/nope"), "ns_type=unknown");
        let missing = "get-config:context=namespace;id=nope";
        assert_eq!(answer(&node, missing), "ns_type=unknown");
        assert!(answer(&node, "set-config:context=namespace;id=test;bogus=1").starts_with("ERROR"));
        assert_eq!(answer(&node, "frobnicate"), "ERROR::unrecognized command");
    }
}
