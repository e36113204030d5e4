//! `sessionizer-loadgen`: produces a realistic, messy event stream ([`sessionizer_worker::loadgen`])
//! to a Kafka topic, for demos, soak runs and benchmarks by hand. Keyed by `userId` and sent to
//! the partition Kafka's default (murmur2) partitioner picks, so the worker's key groups see
//! exactly the keys they own.
//!
//! It exists apart from the tests so a person can load a running job; it must never talk to
//! anything but the brokers it is given.
//!
//! ```text
//! sessionizer-loadgen --bootstrap 127.0.0.1:9092 --topic pageviews --events 1000000
//! sessionizer-loadgen --bootstrap 127.0.0.1:9092 --topic pageviews --duration 10m --rate 5000
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use sessionizer_worker::loadgen::{Generator, Kind, LoadSpec};

/// Flags; every default is [`LoadSpec::default`]'s.
#[derive(Debug, Parser)]
#[command(
    name = "sessionizer-loadgen",
    version,
    about = "Produces a realistic, messy stream of user events to a Kafka topic."
)]
struct Args {
    /// Kafka bootstrap servers (`host:port`, comma-separated).
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    bootstrap: String,
    /// The topic to produce to (must exist; its partition count is read from the broker).
    #[arg(long)]
    topic: String,
    /// Number of events (messy ones included, the per-partition sentinels not). Mutually
    /// exclusive with `--duration`.
    #[arg(long, conflicts_with = "duration")]
    events: Option<u64>,
    /// Run for this long (e.g. `90s`, `10m`, `1h`) instead of a fixed count.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Events per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seed: the same flags produce the same stream.
    #[arg(long, default_value_t = LoadSpec::default().seed)]
    seed: u64,
    /// Number of users (session keys).
    #[arg(long, default_value_t = LoadSpec::default().users)]
    users: u32,
    /// Event time of the first event, epoch ms.
    #[arg(long, default_value_t = LoadSpec::default().start_ms)]
    start_ms: i64,
    /// Event-time span of the stream, hours.
    #[arg(long, default_value_t = 72)]
    span_hours: i64,
    /// The job's session gap, minutes (visits are separated by more).
    #[arg(long, default_value_t = 30)]
    gap_minutes: i64,
    /// The job's maxPageNumber.
    #[arg(long, default_value_t = LoadSpec::default().max_page_number)]
    max_page_number: i32,
    /// Delivery jitter bound, ms (keep it at or below the job's maxOutOfOrderness).
    #[arg(long, default_value_t = LoadSpec::default().out_of_orderness_ms)]
    out_of_orderness_ms: i64,
    /// How much later than the jitter bound late pageviews and short bridges arrive, minutes.
    #[arg(long, default_value_t = 20)]
    late_max_minutes: i64,
    /// Largest delay of delayed async events, hours (keep the total under allowedLateness).
    #[arg(long, default_value_t = 48)]
    async_max_delay_hours: i64,
    /// Share of malformed events.
    #[arg(long, default_value_t = LoadSpec::default().malformed_share)]
    malformed_share: f64,
    /// Share of duplicate events.
    #[arg(long, default_value_t = LoadSpec::default().duplicate_share)]
    duplicate_share: f64,
    /// Share of pageviews over maxPageNumber.
    #[arg(long, default_value_t = LoadSpec::default().over_page_share)]
    over_page_share: f64,
    /// Do not end with one watermark-advancing sentinel event per partition.
    #[arg(long)]
    no_sentinels: bool,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// After the last event, stay up (idle) until SIGTERM instead of exiting: how a producer
    /// Deployment runs it, so the Pod is not restarted into producing the stream again.
    #[arg(long)]
    then_idle: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit in {text:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Counts delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
                let len = message.payload().map_or(0, <[u8]>::len) as u64;
                self.0.bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err((error, _)) => {
                if self.0.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("delivery failed: {error}");
                }
            }
        }
    }
}

fn partitions(bootstrap: &str, topic: &str) -> Result<u32, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("creating a metadata client: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("reading the metadata of {topic}: {e}"))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(format!("topic {topic} does not exist or has no partitions"));
    }
    u32::try_from(count).map_err(|e| e.to_string())
}

fn run(args: Args) -> Result<(), String> {
    let partitions = partitions(&args.bootstrap, &args.topic)?;
    const HOUR: i64 = 3_600_000;
    let spec = LoadSpec {
        seed: args.seed,
        users: args.users,
        events: match (args.events, args.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => LoadSpec::default().events,
        },
        partitions,
        start_ms: args.start_ms,
        span_ms: args.span_hours * HOUR,
        gap_ms: args.gap_minutes * 60_000,
        max_page_number: args.max_page_number,
        out_of_orderness_ms: args.out_of_orderness_ms,
        late_max_ms: args.late_max_minutes * 60_000,
        async_max_delay_ms: args.async_max_delay_hours * HOUR,
        malformed_share: args.malformed_share,
        duplicate_share: args.duplicate_share,
        over_page_share: args.over_page_share,
        sentinels: !args.no_sentinels,
        ..LoadSpec::default()
    };
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        // Java-compatible key hashing, and no reordering on retries.
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(Context(Arc::clone(&deliveries)))
        .map_err(|e| format!("creating the producer: {e}"))?;
    println!(
        "producing to {} ({partitions} partitions) at {}: {}",
        args.topic,
        args.bootstrap,
        match (args.events, args.duration) {
            (_, Some(d)) => format!("for {d:?}"),
            _ => format!("{} events", spec.events),
        }
    );
    let started = Instant::now();
    let mut generator = Generator::new(spec.clone());
    let mut sent: u64 = 0;
    let mut last_progress = Instant::now();
    let progress = Duration::from_secs(args.progress_secs.max(1));
    let send = |event: &sessionizer_worker::loadgen::GeneratedEvent| -> Result<(), String> {
        let partition = i32::try_from(event.partition).map_err(|e| e.to_string())?;
        let mut record = BaseRecord::to(&args.topic)
            .key(event.key.as_bytes())
            .payload(event.payload.as_slice())
            .partition(partition);
        // Bounded: a full queue drains in well under this many waits.
        for _ in 0..100_000 {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(format!("producing: {error}")),
            }
        }
        Err(String::from("the producer queue stayed full"))
    };
    loop {
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let Some(event) = generator.next() else { break };
        if args.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        send(&event)?;
        sent += 1;
        if last_progress.elapsed() >= progress {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{:>7.1}s sent {sent:>10} acked {:>10} failed {:>5}  {:>9.0} events/s  event time {}",
                secs,
                deliveries.ok.load(Ordering::Relaxed),
                deliveries.failed.load(Ordering::Relaxed),
                sent as f64 / secs,
                generator.max_time(),
            );
        }
    }
    if args.duration.is_some() && !args.no_sentinels {
        for event in generator.sentinel_events() {
            send(&event)?;
            sent += 1;
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flushing: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let ok = deliveries.ok.load(Ordering::Relaxed);
    let failed = deliveries.failed.load(Ordering::Relaxed);
    println!("summary:");
    println!(
        "  topic            {} ({partitions} partitions)",
        args.topic
    );
    println!("  seed             {}", spec.seed);
    println!("  sent             {sent}");
    println!("  acknowledged     {ok}");
    println!("  failed           {failed}");
    println!(
        "  bytes            {}",
        deliveries.bytes.load(Ordering::Relaxed)
    );
    println!("  elapsed          {secs:.1}s");
    println!("  rate             {:.0} events/s", ok as f64 / secs);
    println!(
        "  event time       {} .. {}",
        spec.start_ms,
        generator.max_time()
    );
    for kind in Kind::ALL {
        let n = generator.counts().get(&kind).copied().unwrap_or(0);
        println!("  {:<16} {n}", kind.name());
    }
    if failed > 0 || ok != sent {
        return Err(format!("{failed} of {sent} events were not delivered"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let idle = args.then_idle;
    match run(args) {
        Ok(()) if idle => {
            println!("done; idling until SIGTERM");
            idle_until_terminated()
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sessionizer-loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks until SIGTERM or SIGINT, then exits 0.
fn idle_until_terminated() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sessionizer-loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match sessionizer_worker::run::shutdown_signal() {
            Ok(signal) => {
                signal.await;
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("sessionizer-loadgen: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
