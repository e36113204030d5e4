//! What one record command does to the store, following the real server's rules for the subset
//! the project uses: reads (all bins, named bins, header only, exists), writes (bins, TTL,
//! generation and record-exists policies, increment/append/prepend, touch, delete), the
//! record-size limit and the write gates (injected failures, clock-skew and capacity
//! stop-writes). Batch rows come through here too, one row at a time. Commands it cannot honour
//! (filter expressions, CDT, bit, HLL and expression operations) fail with
//! `UnsupportedFeature` rather than being silently ignored.

use std::time::{Duration, Instant};

use crate::aerospike::message::{
    INFO1_GET_ALL, INFO1_NOBINDATA, INFO1_READ, INFO2_CREATE_ONLY, INFO2_DELETE, INFO2_GENERATION,
    INFO2_GENERATION_GT, INFO2_RESPOND_ALL_OPS, INFO2_WRITE, INFO3_CREATE_OR_REPLACE,
    INFO3_REPLACE_ONLY, INFO3_UPDATE_ONLY, OP_APPEND, OP_DELETE, OP_INCR, OP_PREPEND, OP_READ,
    OP_TOUCH, OP_WRITE, Op, PARTICLE_BLOB, PARTICLE_FLOAT, PARTICLE_INTEGER, PARTICLE_NULL,
    PARTICLE_STRING, Reply, Request, ResultCode,
};
use crate::aerospike::node::Node;
use crate::aerospike::store::{
    Bin, Digest, Expiry, NamespaceData, StoredRecord, partition_of, record_size,
};

/// TTL value meaning "use the namespace's default-ttl".
const TTL_NAMESPACE_DEFAULT: u32 = 0;
/// TTL value meaning "never expire" (-1).
const TTL_NEVER: u32 = u32::MAX;
/// TTL value meaning "keep the record's current expiry" (-2).
const TTL_DONT_UPDATE: u32 = u32::MAX - 1;
/// The largest TTL the server accepts: ten years.
const TTL_MAX_SECS: u32 = 10 * 365 * 24 * 3600;

/// Runs one record command on `node` and returns its reply.
pub(crate) fn execute(node: &Node, request: &Request) -> Reply {
    let Some(digest) = request.digest else {
        return Reply::code(ResultCode::ParameterError);
    };
    if !node.identity.namespaces.contains(&request.namespace) {
        return Reply::code(ResultCode::InvalidNamespace);
    }
    if request.has_filter {
        return Reply::code(ResultCode::UnsupportedFeature);
    }
    let header = request.header;
    if header.info2 & INFO2_WRITE != 0
        && let Err(code) = write_gate(node, request, digest)
    {
        return Reply::code(code);
    }
    let outcome = node.store.with_namespace(&request.namespace, |data| {
        let now = Instant::now();
        if header.info2 & INFO2_WRITE == 0 {
            read(data, request, digest, now)
        } else if header.info2 & INFO2_DELETE != 0 {
            delete(data, request, digest, now)
        } else {
            write(node, data, request, digest, now)
        }
    });
    outcome.unwrap_or_else(|| Reply::code(ResultCode::InvalidNamespace))
}

/// The checks a write passes before it touches a record, in the real server's order: injected
/// failures first, then clock-skew stop-writes (`Forbidden`), then capacity stop-writes
/// (`OutOfSpace`, not for deletes).
fn write_gate(node: &Node, request: &Request, digest: Digest) -> Result<(), ResultCode> {
    let stats = {
        let mut state = node.state();
        if state.faults.failing_writes > 0 {
            state.faults.failing_writes -= 1;
            return Err(state.faults.failing_writes_code);
        }
        state.stats.get(&request.namespace).cloned()
    };
    let Some(stats) = stats else {
        return Err(ResultCode::InvalidNamespace);
    };
    if stats.clock_skew_stop_writes {
        return Err(ResultCode::Forbidden);
    }
    if request.header.info2 & INFO2_DELETE != 0 {
        return Ok(());
    }
    let usage = node
        .store
        .with_namespace(&request.namespace, |data| node.usage(data))
        .unwrap_or_default();
    if stats.evaluate(usage).stop_writes {
        tracing::debug!(
            node = %node.identity.name,
            namespace = %request.namespace,
            partition = partition_of(&digest),
            "write refused: namespace in stop-writes"
        );
        return Err(ResultCode::OutOfSpace);
    }
    Ok(())
}

fn read(data: &mut NamespaceData, request: &Request, digest: Digest, now: Instant) -> Reply {
    let header = request.header;
    if request.ops.iter().any(|op| op.kind != OP_READ) {
        return Reply::code(ResultCode::UnsupportedFeature);
    }
    let Some(record) = data.get_live(&digest, now) else {
        return Reply::code(ResultCode::KeyNotFound);
    };
    let bins = if header.info1 & INFO1_NOBINDATA != 0 {
        Vec::new()
    } else if header.info1 & INFO1_GET_ALL != 0 || request.ops.is_empty() {
        record.bins.clone()
    } else {
        request
            .ops
            .iter()
            .filter(|op| !op.name.is_empty())
            .filter_map(|op| record.bins.iter().find(|bin| bin.name == op.name).cloned())
            .collect()
    };
    Reply {
        result: ResultCode::Ok,
        generation: u32::from(record.generation),
        void_time: record.void_time(),
        bins,
    }
}

fn delete(data: &mut NamespaceData, request: &Request, digest: Digest, now: Instant) -> Reply {
    let generation = data.get_live(&digest, now).map(|r| r.generation);
    let Some(generation) = generation else {
        return Reply::code(ResultCode::KeyNotFound);
    };
    if let Err(code) = check_generation(request, generation) {
        return Reply::code(code);
    }
    data.remove(&digest);
    Reply::code(ResultCode::Ok)
}

fn write(
    node: &Node,
    data: &mut NamespaceData,
    request: &Request,
    digest: Digest,
    now: Instant,
) -> Reply {
    match try_write(node, data, request, digest, now) {
        Ok(reply) | Err(reply) => reply,
    }
}

fn try_write(
    node: &Node,
    data: &mut NamespaceData,
    request: &Request,
    digest: Digest,
    now: Instant,
) -> Result<Reply, Reply> {
    let header = request.header;
    let fail = |code| Reply::code(code);
    let ttl = header.record_ttl;
    if ttl > TTL_MAX_SECS && ttl != TTL_NEVER && ttl != TTL_DONT_UPDATE {
        return Err(fail(ResultCode::ParameterError));
    }
    let existing = data.get_live(&digest, now).cloned();
    let exists = existing.is_some();
    if exists && header.info2 & INFO2_CREATE_ONLY != 0 {
        return Err(fail(ResultCode::KeyExists));
    }
    if !exists && header.info3 & (INFO3_UPDATE_ONLY | INFO3_REPLACE_ONLY) != 0 {
        return Err(fail(ResultCode::KeyNotFound));
    }
    if !exists && request.ops.iter().any(|op| op.kind == OP_TOUCH) {
        return Err(fail(ResultCode::KeyNotFound));
    }
    check_generation(request, existing.as_ref().map_or(0, |r| r.generation)).map_err(fail)?;

    let replace = header.info3 & (INFO3_CREATE_OR_REPLACE | INFO3_REPLACE_ONLY) != 0;
    let mut bins = match &existing {
        Some(record) if !replace => record.bins.clone(),
        _ => Vec::new(),
    };
    let respond_all = header.info2 & INFO2_RESPOND_ALL_OPS != 0;
    let mut results = Vec::new();
    let mut delete_record = false;
    for op in &request.ops {
        match op.kind {
            OP_READ if header.info1 & INFO1_READ != 0 => {
                results.extend(read_op(op, &bins, header.info1, respond_all));
                continue;
            }
            OP_WRITE => set_bin(&mut bins, op),
            OP_INCR => increment(&mut bins, op).map_err(fail)?,
            OP_APPEND | OP_PREPEND => concatenate(&mut bins, op).map_err(fail)?,
            OP_TOUCH => {}
            OP_DELETE => {
                delete_record = true;
                bins.clear();
            }
            _ => return Err(fail(ResultCode::UnsupportedFeature)),
        }
        if respond_all {
            results.push(nil_result(&op.name));
        }
    }

    if delete_record || bins.is_empty() {
        // A write that leaves no bins deletes the record, as on the real server.
        data.remove(&digest);
        return Ok(Reply {
            bins: results,
            ..Reply::code(ResultCode::Ok)
        });
    }
    if record_size(&request.set, &bins) > node.identity.max_record_size {
        return Err(fail(ResultCode::RecordTooBig));
    }
    let generation = match existing.as_ref().map(|r| r.generation) {
        None | Some(u16::MAX) => 1,
        Some(current) => current + 1,
    };
    let expiry = expiry_for(ttl, existing.as_ref(), node.identity.default_ttl);
    let set = match &existing {
        Some(record) if request.set.is_empty() => record.set.clone(),
        _ => request.set.clone(),
    };
    let record = StoredRecord {
        set,
        bins,
        generation,
        expiry,
    };
    let reply = Reply {
        result: ResultCode::Ok,
        generation: u32::from(generation),
        void_time: record.void_time(),
        bins: results,
    };
    data.put(digest, record);
    Ok(reply)
}

/// The generation checks of writes and deletes; a missing record has generation 0.
fn check_generation(request: &Request, current: u16) -> Result<(), ResultCode> {
    let header = request.header;
    let expected = header.generation;
    if header.info2 & INFO2_GENERATION != 0 && expected != u32::from(current) {
        return Err(ResultCode::GenerationError);
    }
    if header.info2 & INFO2_GENERATION_GT != 0 && expected <= u32::from(current) {
        return Err(ResultCode::GenerationError);
    }
    Ok(())
}

fn expiry_for(ttl: u32, existing: Option<&StoredRecord>, default_ttl: Duration) -> Option<Expiry> {
    let default = || (!default_ttl.is_zero()).then(|| Expiry::after(default_ttl));
    match ttl {
        TTL_NEVER => None,
        TTL_DONT_UPDATE => match existing {
            Some(record) => record.expiry,
            None => default(),
        },
        TTL_NAMESPACE_DEFAULT => default(),
        secs => Some(Expiry::after(Duration::from_secs(u64::from(secs)))),
    }
}

fn read_op(op: &Op, bins: &[Bin], info1: u8, respond_all: bool) -> Vec<Bin> {
    if op.name.is_empty() {
        if info1 & INFO1_GET_ALL != 0 {
            return bins.to_vec();
        }
        return Vec::new();
    }
    match bins.iter().find(|bin| bin.name == op.name) {
        Some(bin) => vec![bin.clone()],
        None if respond_all => vec![nil_result(&op.name)],
        None => Vec::new(),
    }
}

fn nil_result(name: &str) -> Bin {
    Bin {
        name: name.to_owned(),
        particle: PARTICLE_NULL,
        value: Vec::new(),
    }
}

fn set_bin(bins: &mut Vec<Bin>, op: &Op) {
    let position = bins.iter().position(|bin| bin.name == op.name);
    if op.particle == PARTICLE_NULL {
        if let Some(i) = position {
            bins.remove(i);
        }
        return;
    }
    let bin = Bin {
        name: op.name.clone(),
        particle: op.particle,
        value: op.value.clone(),
    };
    match position {
        Some(i) => bins[i] = bin,
        None => bins.push(bin),
    }
}

fn increment(bins: &mut Vec<Bin>, op: &Op) -> Result<(), ResultCode> {
    let Some(current) = bins.iter_mut().find(|bin| bin.name == op.name) else {
        set_bin(bins, op);
        return Ok(());
    };
    if current.particle != op.particle {
        return Err(ResultCode::BinTypeError);
    }
    let (Ok(old), Ok(add)) = (
        <[u8; 8]>::try_from(current.value.as_slice()),
        <[u8; 8]>::try_from(op.value.as_slice()),
    ) else {
        return Err(ResultCode::ParameterError);
    };
    current.value = match op.particle {
        PARTICLE_INTEGER => i64::from_be_bytes(old)
            .wrapping_add(i64::from_be_bytes(add))
            .to_be_bytes()
            .to_vec(),
        PARTICLE_FLOAT => (f64::from_be_bytes(old) + f64::from_be_bytes(add))
            .to_be_bytes()
            .to_vec(),
        _ => return Err(ResultCode::BinTypeError),
    };
    Ok(())
}

fn concatenate(bins: &mut Vec<Bin>, op: &Op) -> Result<(), ResultCode> {
    if op.particle != PARTICLE_STRING && op.particle != PARTICLE_BLOB {
        return Err(ResultCode::BinTypeError);
    }
    let Some(current) = bins.iter_mut().find(|bin| bin.name == op.name) else {
        set_bin(bins, op);
        return Ok(());
    };
    if current.particle != op.particle {
        return Err(ResultCode::BinTypeError);
    }
    if op.kind == OP_APPEND {
        current.value.extend_from_slice(&op.value);
    } else {
        let mut value = op.value.clone();
        value.extend_from_slice(&current.value);
        current.value = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::aerospike::message::Header;
    use crate::aerospike::node::{Identity, Member};
    use crate::aerospike::stats::{NamespaceStats, StatsShape};
    use crate::aerospike::store::Store;

    fn node(max_record_size: usize) -> Node {
        let identity = Identity {
            name: "N".into(),
            cluster_name: None,
            build: "7.2.0.6".into(),
            shape: StatsShape::V7,
            max_record_size,
            default_ttl: Duration::ZERO,
            namespaces: vec!["test".into()],
        };
        let members = vec![Member {
            name: "N".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        }];
        Node::new(
            identity,
            0,
            Arc::new(members),
            Arc::new(Store::new(["test"])),
            NamespaceStats::default(),
        )
    }

    fn op(kind: u8, name: &str, particle: u8, value: &[u8]) -> Op {
        Op {
            kind,
            particle,
            name: name.into(),
            value: value.to_vec(),
        }
    }

    fn request(info1: u8, info2: u8, ops: Vec<Op>) -> Request {
        Request {
            header: Header {
                info1,
                info2,
                ..Header::default()
            },
            namespace: "test".into(),
            set: "s".into(),
            digest: Some([9u8; 20]),
            ops,
            ..Request::default()
        }
    }

    fn put(node: &Node, ops: Vec<Op>) -> Reply {
        execute(node, &request(0, INFO2_WRITE, ops))
    }

    #[test]
    fn writes_merge_bins_and_bump_the_generation() {
        let node = node(1024);
        let first = put(&node, vec![op(OP_WRITE, "a", PARTICLE_STRING, b"x")]);
        assert_eq!((first.result, first.generation), (ResultCode::Ok, 1));
        let second = put(
            &node,
            vec![op(OP_WRITE, "b", PARTICLE_INTEGER, &7i64.to_be_bytes())],
        );
        assert_eq!(second.generation, 2);
        let all = execute(&node, &request(INFO1_READ | INFO1_GET_ALL, 0, vec![]));
        let names: Vec<&str> = all.bins.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let one = execute(
            &node,
            &request(INFO1_READ, 0, vec![op(OP_READ, "b", 0, b"")]),
        );
        assert_eq!(one.bins.len(), 1);
        assert_eq!(one.bins[0].value, 7i64.to_be_bytes());
    }

    #[test]
    fn increments_appends_and_type_errors() {
        let node = node(1024);
        put(
            &node,
            vec![op(OP_WRITE, "n", PARTICLE_INTEGER, &40i64.to_be_bytes())],
        );
        let reply = put(
            &node,
            vec![op(OP_INCR, "n", PARTICLE_INTEGER, &2i64.to_be_bytes())],
        );
        assert_eq!(reply.result, ResultCode::Ok);
        let read = execute(&node, &request(INFO1_READ | INFO1_GET_ALL, 0, vec![]));
        assert_eq!(read.bins[0].value, 42i64.to_be_bytes());
        let wrong = put(&node, vec![op(OP_APPEND, "n", PARTICLE_STRING, b"!")]);
        assert_eq!(wrong.result, ResultCode::BinTypeError);
    }

    #[test]
    fn generation_policies_and_create_only() {
        let node = node(1024);
        put(&node, vec![op(OP_WRITE, "a", PARTICLE_STRING, b"x")]);
        let mut stale = request(
            0,
            INFO2_WRITE | INFO2_GENERATION,
            vec![op(OP_WRITE, "a", 3, b"y")],
        );
        stale.header.generation = 5;
        assert_eq!(execute(&node, &stale).result, ResultCode::GenerationError);
        stale.header.generation = 1;
        assert_eq!(execute(&node, &stale).result, ResultCode::Ok);
        let create = request(
            0,
            INFO2_WRITE | INFO2_CREATE_ONLY,
            vec![op(OP_WRITE, "a", 3, b"z")],
        );
        assert_eq!(execute(&node, &create).result, ResultCode::KeyExists);
    }

    #[test]
    fn record_size_limit_and_stop_writes() {
        let node = node(100);
        let big = put(&node, vec![op(OP_WRITE, "a", PARTICLE_BLOB, &[0u8; 200])]);
        assert_eq!(big.result, ResultCode::RecordTooBig);
        node.state().stats.get_mut("test").unwrap().stop_writes = Some(true);
        let refused = put(&node, vec![op(OP_WRITE, "a", PARTICLE_BLOB, &[0u8; 2])]);
        assert_eq!(refused.result, ResultCode::OutOfSpace);
    }

    #[test]
    fn touch_and_delete_need_an_existing_record() {
        let node = node(1024);
        let touch = put(&node, vec![op(OP_TOUCH, "", 0, b"")]);
        assert_eq!(touch.result, ResultCode::KeyNotFound);
        let delete = execute(&node, &request(0, INFO2_WRITE | INFO2_DELETE, vec![]));
        assert_eq!(delete.result, ResultCode::KeyNotFound);
        put(&node, vec![op(OP_WRITE, "a", PARTICLE_STRING, b"x")]);
        assert_eq!(put(&node, vec![op(OP_TOUCH, "", 0, b"")]).generation, 2);
        let delete = execute(&node, &request(0, INFO2_WRITE | INFO2_DELETE, vec![]));
        assert_eq!(delete.result, ResultCode::Ok);
        let exists = execute(&node, &request(INFO1_READ | INFO1_NOBINDATA, 0, vec![]));
        assert_eq!(exists.result, ResultCode::KeyNotFound);
    }

    #[test]
    fn injected_failures_are_consumed_one_write_at_a_time() {
        let node = node(1024);
        {
            let mut state = node.state();
            state.faults.failing_writes = 1;
            state.faults.failing_writes_code = ResultCode::KeyBusy;
        }
        let write = || put(&node, vec![op(OP_WRITE, "a", PARTICLE_STRING, b"x")]).result;
        assert_eq!(write(), ResultCode::KeyBusy);
        assert_eq!(write(), ResultCode::Ok);
    }
}
