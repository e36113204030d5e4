//! The Aerospike wire-protocol test server, driven by the real `aerospike` crate exactly as the
//! worker and the operator use it: connect and tend, single-record commands with TTL and
//! generation, batch reads, the record-size limit, the fault switches and the namespace
//! statistics of both server generations. Every test starts its own server on an ephemeral
//! loopback port and waits for conditions, never for fixed times.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aerospike::operations;
use aerospike::{
    AdminPolicy, BatchDeletePolicy, BatchOperation, BatchPolicy, BatchReadPolicy, BatchWritePolicy,
    Bins, Client, ClientPolicy, Expiration, GenerationPolicy, Key, ReadPolicy, RecordExistsAction,
    ResultCode as ClientCode, Value, WritePolicy, as_bin, as_key,
};
use sessionizer_e2e::aerospike::{
    AerospikeTestCluster, AerospikeTestServer, NamespaceStats, ResultCode, ServerConfig, StatsShape,
};
use sessionizer_e2e::wait;
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "test";

async fn start(config: ServerConfig) -> AerospikeTestServer {
    AerospikeTestServer::start(config)
        .await
        .expect("the test server starts")
}

async fn connect(hosts: &str) -> Client {
    let policy = ClientPolicy {
        tend_interval: 250,
        ..ClientPolicy::default()
    };
    Client::new(&policy, &hosts.to_owned())
        .await
        .expect("the aerospike client connects to the test server")
}

fn key(name: &str) -> Key {
    as_key!(NS, "sessions", name)
}

fn code(error: &aerospike::Error) -> Option<ClientCode> {
    error.server_result_code()
}

/// Parses a `key=value;key=value` info answer.
fn parse_info(text: &str) -> HashMap<String, String> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn info(client: &Client, command: &str) -> HashMap<String, String> {
    let answers = client
        .info(&AdminPolicy::default(), &[command])
        .await
        .expect("info answers");
    parse_info(answers.get(command).expect("the command is answered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_connects_and_sees_one_named_node() {
    let server = start(ServerConfig {
        node_name: Some("BB9000000000A01".into()),
        cluster_name: Some("sessionizer".into()),
        ..ServerConfig::default()
    })
    .await;
    let policy = ClientPolicy {
        cluster_name: Some("sessionizer".into()),
        ..ClientPolicy::default()
    };
    let client = Client::new(&policy, &server.host()).await.unwrap();

    assert!(client.is_connected());
    assert!(client.partition_map_ready());
    assert_eq!(client.node_names(), vec![String::from("BB9000000000A01")]);
    let answers = client
        .info(&AdminPolicy::default(), &["build", "namespaces", "node"])
        .await
        .unwrap();
    assert_eq!(answers["build"], "7.2.0.6");
    assert_eq!(answers["namespaces"], NS);
    assert_eq!(answers["node"], "BB9000000000A01");

    // A client that expects another cluster name refuses the node.
    let wrong = ClientPolicy {
        cluster_name: Some("someone-else".into()),
        ..ClientPolicy::default()
    };
    assert!(Client::new(&wrong, &server.host()).await.is_err());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_exists_touch_and_delete_round_trip_every_value_type() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let wp = WritePolicy::default();
    let rp = ReadPolicy::default();
    let k = key("user-1");
    let bins = [
        as_bin!("blob", vec![0u8, 1, 2, 255]),
        as_bin!("s", "hello"),
        as_bin!("i", -42),
        as_bin!("f", 1.5),
        as_bin!("b", true),
        as_bin!("l", vec![Value::from(1), Value::from("two")]),
    ];
    client.put(&wp, &k, &bins).await.unwrap();

    let record = client.get(&rp, &k, Bins::All).await.unwrap();
    assert_eq!(record.generation, 1);
    assert_eq!(
        record.time_to_live(),
        None,
        "default-ttl 0 means never expire"
    );
    for bin in &bins {
        assert_eq!(
            record.bins.get(&bin.name),
            Some(&bin.value),
            "bin {}",
            bin.name
        );
    }

    let some = client.get(&rp, &k, ["s", "i", "missing"]).await.unwrap();
    assert_eq!(some.bins.len(), 2);
    assert_eq!(some.bins["s"], Value::from("hello"));
    assert_eq!(some.bins["i"], Value::from(-42));

    let header = client.get(&rp, &k, Bins::None).await.unwrap();
    assert!(header.bins.is_empty());
    assert_eq!(header.generation, 1);

    assert!(client.exists(&rp, &k).await.unwrap());
    assert!(!client.exists(&rp, &key("nobody")).await.unwrap());

    client.touch(&wp, &k).await.unwrap();
    assert_eq!(client.get(&rp, &k, Bins::None).await.unwrap().generation, 2);
    let error = client.touch(&wp, &key("nobody")).await.unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::KeyNotFoundError));

    // Writing a bin again replaces it; other bins stay (the default "update" policy).
    client.put(&wp, &k, &[as_bin!("s", "bye")]).await.unwrap();
    let record = client.get(&rp, &k, Bins::All).await.unwrap();
    assert_eq!(record.bins["s"], Value::from("bye"));
    assert_eq!(record.bins["i"], Value::from(-42));
    assert_eq!(record.generation, 3);
    assert_eq!(server.record_count(NS), 1);

    assert!(client.delete(&wp, &k).await.unwrap());
    assert!(!client.exists(&rp, &k).await.unwrap());
    assert!(!client.delete(&wp, &k).await.unwrap());
    let error = client.get(&rp, &k, Bins::All).await.unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::KeyNotFoundError));
    assert_eq!(server.record_count(NS), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_after_their_ttl() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let short = WritePolicy {
        expiration: Expiration::Seconds(1),
        ..WritePolicy::default()
    };
    let forever = WritePolicy {
        expiration: Expiration::Never,
        ..WritePolicy::default()
    };
    client
        .put(&short, &key("short"), &[as_bin!("v", 1)])
        .await
        .unwrap();
    client
        .put(&forever, &key("forever"), &[as_bin!("v", 2)])
        .await
        .unwrap();

    let rp = ReadPolicy::default();
    let ttl = client
        .get(&rp, &key("short"), Bins::None)
        .await
        .unwrap()
        .time_to_live()
        .expect("a record written with a TTL reports one");
    assert!(ttl <= Duration::from_secs(2), "{ttl:?}");
    let written = Instant::now();

    wait::until(
        "the 1 s record to expire",
        Duration::from_secs(10),
        || async {
            let exists = client.exists(&rp, &key("short")).await?;
            Ok::<_, aerospike::Error>((!exists).then_some(()))
        },
    )
    .await
    .unwrap();
    assert!(
        written.elapsed() >= Duration::from_millis(900),
        "expired too early"
    );

    let error = client.get(&rp, &key("short"), Bins::All).await.unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::KeyNotFoundError));
    let forever_record = client.get(&rp, &key("forever"), Bins::All).await.unwrap();
    assert_eq!(forever_record.time_to_live(), None);
    assert_eq!(server.record_count(NS), 1);
    let stats = info(&client, "namespace/test").await;
    assert_eq!(stats["objects"], "1");
    assert_eq!(stats["expired_objects"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_increment_and_guard_writes() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let k = key("counter");
    for n in 1..=3 {
        client
            .put(&WritePolicy::default(), &k, &[as_bin!("n", n)])
            .await
            .unwrap();
    }
    let rp = ReadPolicy::default();
    assert_eq!(client.get(&rp, &k, Bins::None).await.unwrap().generation, 3);

    let mut expect = WritePolicy {
        generation_policy: GenerationPolicy::ExpectGenEqual,
        generation: 2,
        ..WritePolicy::default()
    };
    let error = client
        .put(&expect, &k, &[as_bin!("n", 9)])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::GenerationError));
    assert_eq!(
        client.get(&rp, &k, Bins::All).await.unwrap().bins["n"],
        Value::from(3)
    );

    expect.generation = 3;
    client.put(&expect, &k, &[as_bin!("n", 4)]).await.unwrap();
    let record = client.get(&rp, &k, Bins::All).await.unwrap();
    assert_eq!((record.generation, &record.bins["n"]), (4, &Value::from(4)));

    let create_only = WritePolicy {
        record_exists_action: RecordExistsAction::CreateOnly,
        ..WritePolicy::default()
    };
    let error = client
        .put(&create_only, &k, &[as_bin!("n", 0)])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::KeyExistsError));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_get_reads_many_records_in_one_command() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    for i in 0..5 {
        let bins = [as_bin!("n", i), as_bin!("name", format!("user-{i}"))];
        client
            .put(&WritePolicy::default(), &key(&format!("b{i}")), &bins)
            .await
            .unwrap();
    }
    let before = info(&client, "statistics").await["batch_index_initiate"].clone();

    let brp = BatchReadPolicy::default();
    let mut ops: Vec<BatchOperation> = (0..5)
        .map(|i| BatchOperation::read(&brp, key(&format!("b{i}")), Bins::All))
        .collect();
    ops.push(BatchOperation::read(&brp, key("absent"), Bins::All));
    ops.push(BatchOperation::read(&brp, key("b1"), Bins::from(["name"])));
    ops.push(BatchOperation::read(&brp, key("b2"), Bins::None));
    client
        .batch(&BatchPolicy::default(), &mut ops)
        .await
        .unwrap();

    for (i, op) in ops.iter().take(5).enumerate() {
        let record = op.record().expect("an existing key has a record");
        assert_eq!(record.bins["n"], Value::from(i as i64));
        assert_eq!(record.bins["name"], Value::from(format!("user-{i}")));
        assert_eq!(record.generation, 1);
    }
    assert!(ops[5].record().is_none());
    assert_eq!(ops[5].result_code(), Some(ClientCode::KeyNotFoundError));
    let named = ops[6].record().unwrap();
    assert_eq!(named.bins.len(), 1);
    assert_eq!(named.bins["name"], Value::from("user-1"));
    let header = ops[7].record().unwrap();
    assert!(header.bins.is_empty());
    assert_eq!(header.generation, 1);

    // All eight rows went to the server as one batch command, not as single reads.
    let after = info(&client, "statistics").await["batch_index_initiate"].clone();
    assert_eq!(
        after.parse::<u64>().unwrap(),
        before.parse::<u64>().unwrap() + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operate_and_batch_writes_apply_their_operations() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let k = key("ops");
    client
        .put(
            &WritePolicy::default(),
            &k,
            &[as_bin!("n", 40), as_bin!("s", "hi")],
        )
        .await
        .unwrap();
    let ops = [
        operations::add(&as_bin!("n", 2)),
        operations::append(&as_bin!("s", "!")),
        operations::get_bin("n"),
        operations::get_bin("s"),
    ];
    let record = client
        .operate(&WritePolicy::default(), &k, &ops)
        .await
        .unwrap();
    // Once an operate writes, the client asks for one answer per operation: nil for each write,
    // then the values read.
    let answers = |value: Value| Value::MultiResult(vec![Value::Nil, value]);
    assert_eq!(record.bins["n"], answers(Value::from(42)));
    assert_eq!(record.bins["s"], answers(Value::from("hi!")));
    assert_eq!(record.generation, 2);
    let error = client
        .operate(
            &WritePolicy::default(),
            &k,
            &[operations::add(&as_bin!("s", 1))],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::BinTypeError));

    let ttl = BatchWritePolicy {
        expiration: Expiration::Seconds(3600),
        ..BatchWritePolicy::default()
    };
    let mut batch = vec![
        BatchOperation::write(&ttl, key("bw1"), vec![operations::put(&as_bin!("v", 1))]),
        BatchOperation::write(&ttl, key("bw2"), vec![operations::put(&as_bin!("v", 2))]),
        BatchOperation::delete(&BatchDeletePolicy::default(), k.clone()),
    ];
    client
        .batch(&BatchPolicy::write_default(), &mut batch)
        .await
        .unwrap();
    for op in &batch {
        assert_eq!(op.result_code(), Some(ClientCode::Ok));
    }
    let rp = ReadPolicy::default();
    assert!(!client.exists(&rp, &k).await.unwrap());
    let written = client.get(&rp, &key("bw2"), Bins::All).await.unwrap();
    assert_eq!(written.bins["v"], Value::from(2));
    let left = written
        .time_to_live()
        .expect("batch writes carry their TTL");
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_size_limit_is_rejected_with_record_too_big() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let k = key("big");
    let wp = WritePolicy::default();
    client
        .put(&wp, &k, &[as_bin!("v", vec![7u8; 900 * 1024])])
        .await
        .unwrap();

    let error = client
        .put(&wp, &k, &[as_bin!("v", vec![8u8; 2 * 1024 * 1024])])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::RecordTooBig));

    let record = client
        .get(&ReadPolicy::default(), &k, Bins::All)
        .await
        .unwrap();
    assert_eq!(
        record.bins["v"],
        Value::from(vec![7u8; 900 * 1024]),
        "the old record stays"
    );
    assert_eq!(record.generation, 1);

    let small = start(ServerConfig {
        max_record_size: 4096,
        ..ServerConfig::default()
    })
    .await;
    let small_client = connect(&small.host()).await;
    let error = small_client
        .put(&wp, &k, &[as_bin!("v", vec![0u8; 8192])])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::RecordTooBig));
    let config = info(&small_client, "get-config:context=namespace;id=test").await;
    assert_eq!(config["max-record-size"], "4096");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_writes_fails_writes_but_not_reads_until_cleared() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let wp = WritePolicy::default();
    let rp = ReadPolicy::default();
    client
        .put(&wp, &key("a"), &[as_bin!("v", 1)])
        .await
        .unwrap();
    client
        .put(&wp, &key("b"), &[as_bin!("v", 1)])
        .await
        .unwrap();

    server.set_stop_writes(true);
    let error = client
        .put(&wp, &key("a"), &[as_bin!("v", 2)])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::ServerMemError), "{error}");
    let error = client.touch(&wp, &key("a")).await.unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::ServerMemError));
    assert_eq!(info(&client, "namespace/test").await["stop_writes"], "true");
    assert_eq!(
        client.get(&rp, &key("a"), Bins::All).await.unwrap().bins["v"],
        Value::from(1)
    );
    assert!(
        client.delete(&wp, &key("b")).await.unwrap(),
        "deletes are allowed in stop-writes"
    );

    server.set_stop_writes(false);
    assert_eq!(
        info(&client, "namespace/test").await["stop_writes"],
        "false"
    );
    client
        .put(&wp, &key("a"), &[as_bin!("v", 3)])
        .await
        .unwrap();

    // Crossing the stop-writes mark puts the namespace in stop-writes the way the server does.
    server.update_namespace(NS, |stats| stats.set_used_pct(75.0));
    let stats = info(&client, "namespace/test").await;
    assert_eq!(stats["data_used_pct"], "75.00");
    assert_eq!(stats["storage-engine.stop-writes-used-pct"], "70");
    assert_eq!(stats["stop_writes"], "true");
    let error = client
        .put(&wp, &key("a"), &[as_bin!("v", 4)])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::ServerMemError));
    server.update_namespace(NS, |stats| stats.set_used_pct(50.0));
    client
        .put(&wp, &key("a"), &[as_bin!("v", 5)])
        .await
        .unwrap();

    server.set_clock_skew_stop_writes(true);
    let error = client
        .put(&wp, &key("a"), &[as_bin!("v", 6)])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::FailForbidden));
    assert_eq!(
        info(&client, "namespace/test").await["clock_skew_stop_writes"],
        "true"
    );
    server.set_clock_skew_stop_writes(false);
    client
        .put(&wp, &key("a"), &[as_bin!("v", 7)])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_hit_exactly_the_next_writes() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let wp = WritePolicy::default(); // max_retries 0: every attempt is visible
    server.fail_next_writes(2, ResultCode::DeviceOverload);
    for _ in 0..2 {
        let error = client
            .put(&wp, &key("w"), &[as_bin!("v", 1)])
            .await
            .unwrap_err();
        assert_eq!(code(&error), Some(ClientCode::DeviceOverload));
    }
    assert_eq!(server.pending_write_failures(), 0);
    client
        .put(&wp, &key("w"), &[as_bin!("v", 1)])
        .await
        .unwrap();
    let record = client
        .get(&ReadPolicy::default(), &key("w"), Bins::All)
        .await
        .unwrap();
    assert_eq!(record.generation, 1, "failed writes changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_fail_commands_until_the_switch_is_cleared() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    let rp = ReadPolicy::default();
    client
        .put(&WritePolicy::default(), &key("k"), &[as_bin!("v", 1)])
        .await
        .unwrap();

    server.set_refuse_connections(true);
    let error = client.get(&rp, &key("k"), Bins::All).await.unwrap_err();
    assert_eq!(
        code(&error),
        None,
        "a transport failure, not a server answer: {error}"
    );
    // An outage longer than a few tends: the client gives the node up.
    wait::until(
        "the client to drop the node",
        Duration::from_secs(30),
        || async { Ok::<_, String>(client.nodes().is_empty().then_some(())) },
    )
    .await
    .unwrap();

    server.set_refuse_connections(false);
    let record = wait::until("the client to recover", Duration::from_secs(30), || async {
        Ok::<_, aerospike::Error>(Some(client.get(&rp, &key("k"), Bins::All).await?))
    })
    .await
    .unwrap();
    assert_eq!(record.bins["v"], Value::from(1));

    // Closing connections once is survived by the client's retries.
    server.close_connections();
    wait::until(
        "a read after the connections were closed",
        Duration::from_secs(30),
        || async { Ok::<_, aerospike::Error>(Some(client.get(&rp, &key("k"), Bins::All).await?)) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_time_the_client_out() {
    let server = start(ServerConfig::default()).await;
    let client = connect(&server.host()).await;
    client
        .put(&WritePolicy::default(), &key("k"), &[as_bin!("v", 1)])
        .await
        .unwrap();
    let mut impatient = ReadPolicy::default();
    impatient.base_policy.total_timeout = 200;
    impatient.base_policy.socket_timeout = 200;
    impatient.base_policy.max_retries = 0;

    server.set_response_delay(Duration::from_millis(1500));
    let started = Instant::now();
    let error = client
        .get(&impatient, &key("k"), Bins::All)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        error.to_string().to_lowercase().contains("timeout"),
        "{error}"
    );

    server.set_response_delay(Duration::ZERO);
    wait::until("fast answers again", Duration::from_secs(10), || async {
        Ok::<_, aerospike::Error>(Some(client.get(&impatient, &key("k"), Bins::All).await?))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_info_has_the_7_0_shape() {
    let mut marks = NamespaceStats {
        total_bytes: 1_000_000,
        evict_used_pct: 60,
        ..NamespaceStats::default()
    };
    marks.set_used_pct(65.0);
    let server = start(ServerConfig {
        stats_shape: StatsShape::V7,
        namespace_stats: marks,
        ..ServerConfig::default()
    })
    .await;
    let client = connect(&server.host()).await;

    let stats = info(&client, "namespace/test").await;
    assert_eq!(stats["data_total_bytes"], "1000000");
    assert_eq!(stats["data_used_bytes"], "650000");
    assert_eq!(stats["data_used_pct"], "65.00");
    assert_eq!(stats["data_avail_pct"], "35");
    assert_eq!(stats["storage-engine.evict-used-pct"], "60");
    assert_eq!(stats["storage-engine.stop-writes-used-pct"], "70");
    assert_eq!(stats["storage-engine.stop-writes-avail-pct"], "5");
    assert_eq!(stats["hwm_breached"], "true");
    assert_eq!(stats["stop_writes"], "false");
    for pre7 in [
        "device_used_bytes",
        "high-water-disk-pct",
        "memory_used_bytes",
    ] {
        assert!(!stats.contains_key(pre7), "{pre7} is not a 7.0 name");
    }

    // The marks are server configuration: readable with get-config, changeable with set-config.
    let set = "set-config:context=namespace;id=test;storage-engine.evict-used-pct=70";
    let answer = client.info(&AdminPolicy::default(), &[set]).await.unwrap();
    assert_eq!(answer[set], "ok");
    let config = info(&client, "get-config:context=namespace;id=test").await;
    assert_eq!(config["storage-engine.evict-used-pct"], "70");
    assert!(
        !config.contains_key("data_used_bytes"),
        "configuration only"
    );
    assert_eq!(
        info(&client, "namespace/test").await["hwm_breached"],
        "false"
    );

    // Forced flags are reported as set, whatever the numbers say.
    server.update_namespace(NS, |stats| stats.hwm_breached = Some(true));
    assert_eq!(
        info(&client, "namespace/test").await["hwm_breached"],
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_info_has_the_pre_7_shape() {
    let server = start(ServerConfig {
        stats_shape: StatsShape::PreV7,
        namespace_stats: NamespaceStats {
            total_bytes: 2_000_000,
            used_bytes: Some(1_100_000),
            evict_used_pct: 50,
            ..NamespaceStats::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let client = connect(&server.host()).await;
    for i in 0..3 {
        client
            .put(
                &WritePolicy::default(),
                &key(&format!("k{i}")),
                &[as_bin!("v", i)],
            )
            .await
            .unwrap();
    }
    let answers = client
        .info(&AdminPolicy::default(), &["build"])
        .await
        .unwrap();
    assert!(answers["build"].starts_with("6."), "{}", answers["build"]);

    let stats = info(&client, "namespace/test").await;
    assert_eq!(stats["objects"], "3");
    assert_eq!(stats["device_total_bytes"], "2000000");
    assert_eq!(stats["device_used_bytes"], "1100000");
    assert_eq!(stats["device_free_pct"], "45");
    assert_eq!(stats["device_available_pct"], "45");
    assert_eq!(stats["memory_used_bytes"], "192");
    assert_eq!(stats["high-water-disk-pct"], "50");
    assert_eq!(stats["high-water-memory-pct"], "0");
    assert_eq!(stats["stop-writes-pct"], "90");
    assert_eq!(stats["storage-engine.min-avail-pct"], "5");
    assert_eq!(stats["hwm_breached"], "true");
    assert_eq!(stats["stop_writes"], "false");
    for v7 in ["data_used_pct", "storage-engine.evict-used-pct"] {
        assert!(!stats.contains_key(v7), "{v7} is not a pre-7 name");
    }

    // Available space under min-avail-pct stops writes, as on a 6.x server.
    server.update_namespace(NS, |stats| stats.avail_pct = Some(4));
    let stats = info(&client, "namespace/test").await;
    assert_eq!(stats["device_available_pct"], "4");
    assert_eq!(stats["stop_writes"], "true");
    let error = client
        .put(&WritePolicy::default(), &key("k0"), &[as_bin!("v", 9)])
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ClientCode::ServerMemError));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_is_discovered_from_one_seed_with_per_node_stats() {
    let configs = (1..=3)
        .map(|i| ServerConfig {
            node_name: Some(format!("BB900000000000{i}")),
            ..ServerConfig::default()
        })
        .collect();
    let cluster = AerospikeTestCluster::start(configs).await.unwrap();
    let client = connect(&cluster.nodes()[0].host()).await;
    let mut names = client.node_names();
    names.sort();
    assert_eq!(
        names,
        ["BB9000000000001", "BB9000000000002", "BB9000000000003"]
    );

    let wp = WritePolicy::default();
    for i in 0..60 {
        client
            .put(&wp, &key(&format!("c{i}")), &[as_bin!("v", i)])
            .await
            .unwrap();
    }
    let rp = ReadPolicy::default();
    for i in 0..60 {
        let record = client
            .get(&rp, &key(&format!("c{i}")), Bins::All)
            .await
            .unwrap();
        assert_eq!(record.bins["v"], Value::from(i));
    }
    let counts: Vec<u64> = cluster.nodes().iter().map(|n| n.record_count(NS)).collect();
    assert_eq!(counts.iter().sum::<u64>(), 60);
    assert!(
        counts.iter().all(|c| *c > 0),
        "every node owns some keys: {counts:?}"
    );

    // Each node answers for itself, so the monitor can find the worst one.
    cluster.nodes()[1].update_namespace(NS, |stats| stats.set_used_pct(80.0));
    for node in client.nodes() {
        let answers = node
            .info(&AdminPolicy::default(), &["namespace/test"])
            .await
            .unwrap();
        let stats = parse_info(&answers["namespace/test"]);
        let expected = if node.name() == "BB9000000000002" {
            "80.00"
        } else {
            "0.00"
        };
        assert_eq!(stats["data_used_pct"], expected, "node {}", node.name());
    }

    // Stop-writes on one node fails exactly the writes of the partitions it owns.
    cluster.nodes()[1].update_namespace(NS, |stats| stats.set_used_pct(10.0));
    cluster.nodes()[2].set_stop_writes(true);
    for i in 0..30 {
        let k = key(&format!("c{i}"));
        let owner = k.partition_id() % 3;
        let result = client.put(&wp, &k, &[as_bin!("v", -1)]).await;
        match owner {
            2 => assert_eq!(code(&result.unwrap_err()), Some(ClientCode::ServerMemError)),
            _ => result.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_until_it_is_terminated() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aerospike-test-server"))
        .args([
            "--port",
            "0",
            "--node-name",
            "BB9000000000B01",
            "--stats-shape",
            "pre7",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("aerospike-test-server node=BB9000000000B01 addr=127.0.0.1:"),
        "{line}"
    );
    let addr = line.rsplit_once("addr=").unwrap().1.to_owned();

    let client = connect(&addr).await;
    client
        .put(
            &WritePolicy::default(),
            &key("k"),
            &[as_bin!("v", "served")],
        )
        .await
        .unwrap();
    let record = client
        .get(&ReadPolicy::default(), &key("k"), Bins::All)
        .await
        .unwrap();
    assert_eq!(record.bins["v"], Value::from("served"));
    assert!(
        info(&client, "namespace/test")
            .await
            .contains_key("device_used_bytes")
    );
    client.close().await.unwrap();

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the server exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
