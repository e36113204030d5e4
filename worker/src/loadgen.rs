//! A deterministic generator of realistic, messy event streams, for the load-generator binary
//! (`sessionizer-loadgen`), the end-to-end tests and the throughput benchmark.
//!
//! It exists so that one seed gives one exact stream: a test can produce it to Kafka and hand
//! the very same events to the [`crate::oracle`] to know the expected final sessions. It is pure
//! generation: it must never do I/O or read a clock.
//!
//! What a stream holds, in delivery order (the order to produce it in, partition by partition):
//! - many users (`userId` is the Kafka key; each event carries its partition, computed with
//!   Kafka's default murmur2 partitioner so that keyed producers agree), each with visits of
//!   varied length: pageviews with increasing `pageNumber` and think times well under the gap,
//!   and visits separated by more than the gap;
//! - async events (`purchase`, `email_open`, …) inside visits, some delivered hours or days late;
//! - out-of-order delivery within [`LoadSpec::out_of_orderness_ms`], late events beyond it (up to
//!   [`LoadSpec::late_max_ms`] more), and *bridges*: a late async event between two visits
//!   within the gap of both, which merges them into one session;
//! - duplicates (same `eventId`, byte-identical content), malformed inputs (not JSON, truncated,
//!   missing or mistyped fields) and pageviews over the page limit;
//! - at the end, one *sentinel* pageview per partition, [`LoadSpec::sentinel_advance_ms`] after
//!   the latest event time: it drives every partition's watermark past every session, so all
//!   sessions close and are emitted without the worker having to stop. The sentinels' own
//!   sessions (keys starting with [`SENTINEL_PREFIX`]) stay open by design; compare results with
//!   [`without_sentinels`]. [`LoadSpec::check_fits`] keeps the sentinels from pushing any
//!   session that may still await a late update beyond `allowedLateness`, so a result never
//!   depends on how the engine treats unreachable sessions (the engine once lost such pending
//!   updates; the test `a_far_sentinel_keeps_pending_late_updates` guards the fix).
//!
//! The engine's result equals the oracle's only under the conditions documented in
//! [`crate::oracle`]; [`LoadSpec::check_fits`] checks the stream's parameters against a job's
//! settings: every event is delivered at most [`LoadSpec::max_delay_ms`] after the highest event
//! time delivered before it (in any partition), which must stay within the job's
//! `maxOutOfOrderness + allowedLateness`; duplicates are byte-identical; and sessions stay far
//! below any realistic `maxSessionBytes` (visits are short; see [`LoadSpec::check_fits`]).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use crate::engine::EngineConfig;
use crate::session::SessionRecord;

/// Keys of sentinel events start with this; no generated user key does.
pub const SENTINEL_PREFIX: &str = "~sentinel-";

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Largest number of items (pageviews and async events) in one visit, so that a session (at
/// most two visits and a bridge) stays far below any realistic `maxSessionBytes`.
pub const MAX_VISIT_EVENTS: u32 = 40;
/// Upper bound of the size of one generated event in bytes.
pub const MAX_EVENT_BYTES: u64 = 400;

/// The parameters of a stream. [`LoadSpec::default`] is a sensible messy stream for a job with
/// the default session settings (gap 30m, maxOutOfOrderness 5s, allowedLateness 168h).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    /// Seed: the same spec gives the same stream.
    pub seed: u64,
    /// Number of users (session keys).
    pub users: u32,
    /// Number of events to generate, messy ones included, sentinels excluded. `u64::MAX` for an
    /// endless stream (the binary's duration mode).
    pub events: u64,
    /// Number of partitions of the source topic (for [`GeneratedEvent::partition`] and the
    /// sentinels).
    pub partitions: u32,
    /// Event time of the start of the stream, epoch ms.
    pub start_ms: i64,
    /// Event time the stream spreads over (approximately: visits never come closer than the gap).
    pub span_ms: i64,
    /// The job's session gap: visits are separated by more than this.
    pub gap_ms: i64,
    /// The job's `maxPageNumber`: pageviews stay at or below it, except the over-limit ones.
    pub max_page_number: i32,
    /// Bound of the normal delivery jitter (events are reordered by at most this much).
    pub out_of_orderness_ms: i64,
    /// Share of pageviews delivered late: after `out_of_orderness_ms` plus up to `late_max_ms`.
    pub late_share: f64,
    /// How much later than `out_of_orderness_ms` a late pageview may be delivered.
    pub late_max_ms: i64,
    /// Chance that a pageview is followed by an async event in the same visit.
    pub async_share: f64,
    /// Share of async events delivered hours or days late (between `async_min_delay_ms` and
    /// `async_max_delay_ms`).
    pub async_delayed_share: f64,
    /// Least delay of a delayed async event.
    pub async_min_delay_ms: i64,
    /// Largest delay of a delayed async event.
    pub async_max_delay_ms: i64,
    /// Chance that two consecutive visits of a user are bridged by a late async event.
    pub bridge_share: f64,
    /// Share of events that are repeated (same `eventId`, identical bytes), delivered later.
    pub duplicate_share: f64,
    /// Share of events that are malformed.
    pub malformed_share: f64,
    /// Share of events that are pageviews over `max_page_number`.
    pub over_page_share: f64,
    /// Whether to end with one sentinel event per partition.
    pub sentinels: bool,
    /// How far after the latest event time the sentinels are.
    pub sentinel_advance_ms: i64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            seed: 42,
            users: 1_000,
            events: 20_000,
            partitions: 4,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            span_ms: 3 * DAY,
            gap_ms: 30 * MINUTE,
            max_page_number: 300,
            out_of_orderness_ms: 5 * SECOND,
            late_share: 0.02,
            late_max_ms: 20 * MINUTE,
            async_share: 0.15,
            async_delayed_share: 0.3,
            async_min_delay_ms: HOUR,
            async_max_delay_ms: 2 * DAY,
            bridge_share: 0.05,
            duplicate_share: 0.02,
            malformed_share: 0.01,
            over_page_share: 0.002,
            sentinels: true,
            sentinel_advance_ms: DAY,
        }
    }
}

impl LoadSpec {
    /// The largest delay of any delivered event behind the highest event time delivered before
    /// it, in any partition: what the job's `maxOutOfOrderness + allowedLateness` must cover.
    pub fn max_delay_ms(&self) -> i64 {
        let late = self.out_of_orderness_ms + self.late_max_ms;
        self.out_of_orderness_ms
            .max(late)
            // Bridges are delivered like late pageviews or delayed async events.
            .max(self.async_max_delay_ms)
    }

    /// Checks that the engine's result on this stream must equal the oracle's under `config`
    /// (the conditions of [`crate::oracle`]), and that the sentinels close every session.
    pub fn check_fits(&self, config: &EngineConfig) -> Result<(), String> {
        let budget = config
            .max_out_of_orderness_ms
            .saturating_add(config.allowed_lateness_ms);
        if self.max_delay_ms() >= budget {
            return Err(format!(
                "events may be delivered {} ms behind the stream, more than maxOutOfOrderness + \
                 allowedLateness = {budget} ms: the engine would drop them, the oracle would not",
                self.max_delay_ms()
            ));
        }
        let biggest = 2 * u64::from(MAX_VISIT_EVENTS) * MAX_EVENT_BYTES + MAX_EVENT_BYTES;
        if biggest >= config.max_session_bytes {
            return Err(format!(
                "a session may reach {biggest} bytes, maxSessionBytes is {}: with out-of-order \
                 input the byte cap makes the result order-dependent",
                config.max_session_bytes
            ));
        }
        if self.sentinels
            && self.sentinel_advance_ms
                <= config.gap_ms.saturating_add(config.max_out_of_orderness_ms)
        {
            return Err(String::from(
                "sentinel_advance_ms must exceed gap + maxOutOfOrderness to close every session",
            ));
        }
        if self.sentinels
            && self
                .sentinel_advance_ms
                .saturating_add(self.max_delay_ms())
                .saturating_add(config.gap_ms)
                >= config.allowed_lateness_ms
        {
            return Err(String::from(
                "sentinel_advance_ms + max_delay_ms + gap must stay below allowedLateness, or the \
                 sentinels push sessions with pending late updates out of reach",
            ));
        }
        if self.max_page_number > config.max_page_number {
            return Err(String::from(
                "max_page_number is above the job's: valid pageviews would be dropped",
            ));
        }
        if self.partitions == 0 || self.users == 0 {
            return Err(String::from("partitions and users must be positive"));
        }
        Ok(())
    }
}

/// What kind of (mess) an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A pageview delivered within the out-of-orderness bound.
    Pageview,
    /// A pageview delivered later than the out-of-orderness bound (within the late bound).
    LatePageview,
    /// An async event delivered on time.
    Async,
    /// An async event delivered hours or days late.
    DelayedAsync,
    /// A late async event between two visits that merges them.
    Bridge,
    /// A byte-identical repeat of an earlier event.
    Duplicate,
    /// An input the decoder rejects.
    Malformed,
    /// A pageview over the page limit.
    OverPage,
    /// A watermark-advancing event at the end (one per partition).
    Sentinel,
}

impl Kind {
    /// Every kind, for summaries.
    pub const ALL: [Kind; 9] = [
        Kind::Pageview,
        Kind::LatePageview,
        Kind::Async,
        Kind::DelayedAsync,
        Kind::Bridge,
        Kind::Duplicate,
        Kind::Malformed,
        Kind::OverPage,
        Kind::Sentinel,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pageview => "pageview",
            Kind::LatePageview => "late-pageview",
            Kind::Async => "async",
            Kind::DelayedAsync => "delayed-async",
            Kind::Bridge => "bridge",
            Kind::Duplicate => "duplicate",
            Kind::Malformed => "malformed",
            Kind::OverPage => "over-page",
            Kind::Sentinel => "sentinel",
        }
    }
}

/// One event to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// The Kafka key (the user id).
    pub key: String,
    /// The partition the key maps to ([`partition_for`]).
    pub partition: u32,
    /// The message value (JSON, or garbage for malformed events).
    pub payload: Vec<u8>,
    /// Event time, epoch ms (for malformed events, the time they were generated at).
    pub time: i64,
    /// What kind it is.
    pub kind: Kind,
}

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`, librdkafka's `murmur2_random`).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// The oracle's or the engine's final sessions without the sentinels' sessions (which stay open
/// by design).
pub fn without_sentinels(
    sessions: BTreeMap<String, SessionRecord>,
) -> BTreeMap<String, SessionRecord> {
    sessions
        .into_iter()
        .filter(|(_, r)| !r.key.starts_with(SENTINEL_PREFIX))
        .collect()
}

/// Generates the whole (finite) stream at once, in delivery order.
pub fn generate(spec: &LoadSpec) -> Vec<GeneratedEvent> {
    Generator::new(spec.clone()).collect()
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [lo, hi] (lo when hi < lo).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let width = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % width) as i64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// One user's place in its timeline.
#[derive(Clone, Debug)]
struct User {
    key: String,
    partition: u32,
    /// Items left in the current visit.
    left: u32,
    /// Page number of the last pageview of the current visit.
    page: i32,
    /// Time of the user's latest pageview.
    last: i64,
}

/// An event waiting for its delivery time.
#[derive(Debug)]
struct Pending {
    deliver_at: i64,
    seq: u64,
    event: GeneratedEvent,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.seq) == (other.deliver_at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

const PAGES: [&str; 8] = [
    "/",
    "/search",
    "/product",
    "/cart",
    "/checkout",
    "/help",
    "/account",
    "/blog",
];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const ASYNC_TYPES: [&str; 4] = ["purchase", "email_open", "ad_click", "refund"];

/// The streaming generator: an iterator of events in delivery order, using memory for the users
/// and the events not yet due (at most [`LoadSpec::max_delay_ms`] of event time), so it can run
/// endlessly.
///
/// Every event gets a *delivery time* (its event time plus a delay); events come out sorted by
/// delivery time. Since every future event has an event time at least the current generation
/// time, an event is released once its delivery time is not after it.
#[derive(Debug)]
pub struct Generator {
    spec: LoadSpec,
    rng: Rng,
    users: Vec<User>,
    /// Users by the time of their next pageview.
    schedule: BinaryHeap<Reverse<(i64, u32)>>,
    pending: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    generated: u64,
    max_time: i64,
    /// Mean idle time between two visits (beyond the gap).
    idle_mean_ms: i64,
    sentinels: Option<std::vec::IntoIter<GeneratedEvent>>,
    counts: BTreeMap<Kind, u64>,
}

impl Generator {
    /// A generator for `spec`.
    pub fn new(spec: LoadSpec) -> Self {
        let mut rng = Rng(spec.seed ^ 0x5e55_10a1_2e00_0000);
        let users_n = spec.users.max(1);
        // A visit averages ~8 pageviews and ~1 async event.
        let per_user = spec.events.min(1 << 40) as f64 / f64::from(users_n);
        let visits = (per_user / 9.5).max(1.0);
        let cycle = spec.span_ms as f64 / visits;
        let idle_mean_ms = (cycle - spec.gap_ms as f64 - 8.0 * 60_000.0).max(0.0) as i64;
        let mut users = Vec::with_capacity(users_n as usize);
        let mut schedule = BinaryHeap::with_capacity(users_n as usize);
        for i in 0..users_n {
            let key = format!("user-{i:07}");
            let first = spec.start_ms + rng.range(0, cycle.max(1.0) as i64);
            users.push(User {
                partition: partition_for(&key, spec.partitions),
                key,
                left: 0,
                page: 0,
                last: first,
            });
            schedule.push(Reverse((first, i)));
        }
        Self {
            rng,
            users,
            schedule,
            pending: BinaryHeap::new(),
            seq: 0,
            generated: 0,
            max_time: spec.start_ms,
            idle_mean_ms,
            sentinels: None,
            counts: BTreeMap::new(),
            spec,
        }
    }

    /// How many events of each kind were generated so far.
    pub fn counts(&self) -> &BTreeMap<Kind, u64> {
        &self.counts
    }

    /// The highest event time generated so far.
    pub fn max_time(&self) -> i64 {
        self.max_time
    }

    /// The sentinel events for the stream so far: one per partition, `sentinel_advance_ms` after
    /// the highest event time. [`Iterator::next`] emits them itself at the end of a finite
    /// stream; the binary's duration mode calls this when it stops.
    pub fn sentinel_events(&self) -> Vec<GeneratedEvent> {
        let time = self.max_time + self.spec.sentinel_advance_ms;
        (0..self.spec.partitions)
            .filter_map(|p| {
                // About `partitions` tries per partition; the bound is never reached in practice.
                (0..100_000u32)
                    .map(|i| format!("{SENTINEL_PREFIX}p{p}-{i}"))
                    .find(|k| partition_for(k, self.spec.partitions) == p)
                    .map(|key| GeneratedEvent {
                        payload: format!(
                            r#"{{"eventId":"sentinel-{seed:x}-{p}","userId":"{key}","timestamp":{time},"type":"pageview","pageNumber":1,"url":"/sentinel"}}"#,
                            seed = self.spec.seed
                        )
                        .into_bytes(),
                        key,
                        partition: p,
                        time,
                        kind: Kind::Sentinel,
                    })
            })
            .collect()
    }

    fn quota_left(&self) -> bool {
        self.generated < self.spec.events
    }

    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("{:x}-{}", self.spec.seed & 0xffff_ffff, self.seq)
    }

    fn push(&mut self, event: GeneratedEvent, deliver_at: i64) {
        if !self.quota_left() {
            return;
        }
        self.generated += 1;
        *self.counts.entry(event.kind).or_default() += 1;
        self.max_time = self.max_time.max(event.time);
        self.seq += 1;
        let seq = self.seq;
        // A byte-identical repeat, delivered later but within the delay bound.
        if event.kind != Kind::Malformed
            && event.kind != Kind::OverPage
            && self.rng.chance(self.spec.duplicate_share)
            && self.generated < self.spec.events
        {
            let latest = event.time + self.spec.max_delay_ms();
            let again = (deliver_at
                + self
                    .rng
                    .range(0, self.spec.out_of_orderness_ms + self.spec.late_max_ms))
            .min(latest)
            .max(deliver_at);
            let mut dup = event.clone();
            dup.kind = Kind::Duplicate;
            self.generated += 1;
            *self.counts.entry(Kind::Duplicate).or_default() += 1;
            self.seq += 1;
            self.pending.push(Reverse(Pending {
                deliver_at: again,
                seq: self.seq,
                event: dup,
            }));
        }
        self.pending.push(Reverse(Pending {
            deliver_at,
            seq,
            event,
        }));
    }

    fn pageview_json(&mut self, user: usize, time: i64, page: i32) -> (String, Vec<u8>) {
        let id = self.event_id();
        let path = self.rng.pick(&PAGES);
        let device = self.rng.pick(&DEVICES);
        let key = &self.users[user].key;
        let payload = format!(
            r#"{{"eventId":"{id}","userId":"{key}","timestamp":{time},"type":"pageview","pageNumber":{page},"url":"{path}?p={page}","device":"{device}","durationMs":{}}}"#,
            self.rng.range(50, 30_000)
        );
        (id, payload.into_bytes())
    }

    fn async_json(&mut self, user: usize, time: i64) -> Vec<u8> {
        let id = self.event_id();
        let kind = self.rng.pick(&ASYNC_TYPES);
        let key = &self.users[user].key;
        format!(
            r#"{{"eventId":"{id}","userId":"{key}","timestamp":{time},"type":"{kind}","amount":{},"campaign":"c{}"}}"#,
            self.rng.range(1, 50_000),
            self.rng.range(1, 20)
        )
        .into_bytes()
    }

    fn event(&self, user: usize, payload: Vec<u8>, time: i64, kind: Kind) -> GeneratedEvent {
        GeneratedEvent {
            key: self.users[user].key.clone(),
            partition: self.users[user].partition,
            payload,
            time,
            kind,
        }
    }

    fn malformed(&mut self, user: usize, time: i64) -> Vec<u8> {
        let key = self.users[user].key.clone();
        let (_, valid) = self.pageview_json(user, time, 1);
        match self.rng.range(0, 5) {
            0 => b"{not json at all".to_vec(),
            1 => valid[..valid.len() / 2].to_vec(),
            2 => {
                format!(r#"{{"userId":"{key}","timestamp":{time},"type":"pageview"}}"#).into_bytes()
            }
            3 => format!(r#"{{"eventId":"bad-{time}","userId":"{key}","type":"click"}}"#)
                .into_bytes(),
            4 => format!(
                r#"{{"eventId":"bad-{time}","userId":"{key}","timestamp":"{time}","type":"click"}}"#
            )
            .into_bytes(),
            _ => format!(r#"[{{"eventId":"bad-{time}","userId":"{key}"}}]"#).into_bytes(),
        }
    }

    /// Generates the user's next pageview (and what comes with it).
    fn step(&mut self, time: i64, user: usize) {
        let spec = self.spec.clone();
        if self.users[user].left == 0 {
            self.users[user].left = self.rng.range(1, 15) as u32;
            self.users[user].page = 0;
        }
        // Messy extras first, so that the quota counts them.
        if self.rng.chance(spec.malformed_share) {
            let payload = self.malformed(user, time);
            let event = self.event(user, payload, time, Kind::Malformed);
            let at = time + self.rng.range(0, spec.out_of_orderness_ms);
            self.push(event, at);
        }
        if self.rng.chance(spec.over_page_share) {
            let page = spec.max_page_number + self.rng.range(1, 1_000) as i32;
            let (_, payload) = self.pageview_json(user, time, page);
            let event = self.event(user, payload, time, Kind::OverPage);
            let at = time + self.rng.range(0, spec.out_of_orderness_ms);
            self.push(event, at);
        }
        let page = (self.users[user].page + 1).min(spec.max_page_number);
        self.users[user].page = page;
        let (_, payload) = self.pageview_json(user, time, page);
        let late = self.rng.chance(spec.late_share);
        let (kind, at) = if late {
            let extra = self.rng.range(1, spec.late_max_ms);
            (Kind::LatePageview, time + spec.out_of_orderness_ms + extra)
        } else {
            (
                Kind::Pageview,
                time + self.rng.range(0, spec.out_of_orderness_ms),
            )
        };
        let event = self.event(user, payload, time, kind);
        self.push(event, at);
        self.users[user].left -= 1;
        self.users[user].last = time;
        let think_max = (spec.gap_ms / 3).clamp(SECOND, 3 * MINUTE);
        if self.rng.chance(spec.async_share) {
            let t = time + self.rng.range(0, think_max);
            let payload = self.async_json(user, t);
            let (kind, at) = if self.rng.chance(spec.async_delayed_share) {
                let delay = self
                    .rng
                    .range(spec.async_min_delay_ms, spec.async_max_delay_ms);
                (Kind::DelayedAsync, t + delay)
            } else {
                (Kind::Async, t + self.rng.range(0, spec.out_of_orderness_ms))
            };
            let event = self.event(user, payload, t, kind);
            self.push(event, at);
        }
        let next = if self.users[user].left > 0 {
            time + self.rng.range(SECOND, think_max)
        } else if self.rng.chance(spec.bridge_share) {
            // The next visit starts between one and two gaps later; an async event halfway is
            // within the gap of both visits and merges them when it arrives (late).
            let next = time + spec.gap_ms + self.rng.range(1, spec.gap_ms - 1);
            let mid = time + (next - time) / 2;
            let payload = self.async_json(user, mid);
            // Half arrive while the second visit is still open (a closed session joins an open
            // one), half hours later, after both were emitted (one id gets a tombstone).
            let delay = if self.rng.chance(0.5) {
                spec.out_of_orderness_ms + self.rng.range(1, spec.late_max_ms)
            } else {
                self.rng
                    .range(spec.async_min_delay_ms, spec.async_max_delay_ms)
            };
            let event = self.event(user, payload, mid, Kind::Bridge);
            self.push(event, mid + delay);
            next
        } else {
            let idle = if self.idle_mean_ms > 0 {
                // Exponential idle time, capped so one unlucky draw does not end the user.
                let u = self.rng.unit().max(1e-9);
                ((-u.ln()) * self.idle_mean_ms as f64).min(8.0 * self.idle_mean_ms as f64) as i64
            } else {
                0
            };
            // Always more than the gap plus the think-time window of async events.
            time + spec.gap_ms + think_max + SECOND + idle
        };
        self.schedule.push(Reverse((next, user as u32)));
    }
}

impl Iterator for Generator {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        loop {
            if let Some(sentinels) = self.sentinels.as_mut() {
                return sentinels.next();
            }
            let frontier = if self.quota_left() {
                self.schedule.peek().map(|Reverse((t, _))| *t)
            } else {
                None
            };
            match (self.pending.peek(), frontier) {
                (Some(Reverse(p)), Some(f)) if p.deliver_at <= f => {
                    return self.pending.pop().map(|Reverse(p)| p.event);
                }
                (Some(_), None) => return self.pending.pop().map(|Reverse(p)| p.event),
                (_, Some(_)) => {
                    if let Some(Reverse((t, user))) = self.schedule.pop() {
                        self.step(t, user as usize);
                    }
                }
                (None, None) => {
                    let sentinels = if self.spec.sentinels {
                        self.sentinel_events()
                    } else {
                        Vec::new()
                    };
                    for s in &sentinels {
                        *self.counts.entry(s.kind).or_default() += 1;
                    }
                    self.sentinels = Some(sentinels.into_iter());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use sessionizer_crds::session_job::SinkMode;

    use super::*;
    use crate::engine::memory_history::MemoryHistory;
    use crate::engine::{KeyGroup, Output};
    use crate::event::{FieldNames, decode};
    use crate::oracle;
    use crate::session::final_sessions;

    fn job() -> EngineConfig {
        EngineConfig {
            gap_ms: 30 * MINUTE,
            max_page_number: 300,
            max_session_bytes: 4 << 20,
            allowed_lateness_ms: 7 * DAY,
            late_update_interval_ms: MINUTE,
            max_out_of_orderness_ms: 5_000,
            idle_source_timeout_ms: MINUTE,
            slow_window_log_threshold: Duration::from_secs(60),
            history_ttl: Duration::from_secs(7 * 24 * 3600),
            history_prefix: "analytics/pageviews/".into(),
            fields: FieldNames::default(),
            sink: SinkMode::Production,
            max_future_ms: None,
            history_codec: crate::history::Codec::zstd(3),
        }
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.
        for (input, want) in [
            ("21", -973_932_308_i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(input.as_bytes()) as i32, want, "{input}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let spec = LoadSpec {
            events: 3_000,
            users: 50,
            ..LoadSpec::default()
        };
        let first = generate(&spec);
        assert_eq!(first, generate(&spec));
        let other = generate(&LoadSpec { seed: 7, ..spec });
        assert_ne!(first[..10], other[..10]);
    }

    #[test]
    fn the_stream_has_every_kind_of_mess_and_the_exact_count() {
        let spec = LoadSpec {
            events: 20_000,
            users: 300,
            ..LoadSpec::default()
        };
        let events = generate(&spec);
        assert_eq!(
            events.len() as u64,
            spec.events + u64::from(spec.partitions)
        );
        let kinds: BTreeSet<Kind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, Kind::ALL.into_iter().collect());
        let sentinels: Vec<_> = events[events.len() - 4..].iter().collect();
        assert!(sentinels.iter().all(|e| e.kind == Kind::Sentinel));
        let parts: BTreeSet<u32> = sentinels.iter().map(|e| e.partition).collect();
        assert_eq!(parts.len(), 4);
        for e in &events {
            assert_eq!(e.partition, partition_for(&e.key, 4));
            assert!((e.payload.len() as u64) < MAX_EVENT_BYTES, "{e:?}");
            let decoded = decode(&e.payload, &FieldNames::default());
            assert_eq!(decoded.is_err(), e.kind == Kind::Malformed, "{e:?}");
        }
        // Every delivered event is within the delay bound of what was delivered before it.
        let mut max = i64::MIN;
        for e in events.iter().filter(|e| e.kind != Kind::Malformed) {
            assert!(e.time >= max.saturating_sub(spec.max_delay_ms()), "{e:?}");
            max = max.max(e.time);
        }
        // Duplicates are byte-identical to an earlier event.
        let mut seen = BTreeSet::new();
        for e in &events {
            if e.kind == Kind::Duplicate {
                assert!(seen.contains(&e.payload), "{e:?}");
            }
            seen.insert(e.payload.clone());
        }
    }

    #[test]
    fn check_fits_refuses_streams_the_oracle_cannot_predict() {
        let spec = LoadSpec::default();
        spec.check_fits(&job()).unwrap();
        let tight = EngineConfig {
            allowed_lateness_ms: HOUR,
            ..job()
        };
        assert!(spec.check_fits(&tight).is_err());
        let small = EngineConfig {
            max_session_bytes: 1_000,
            ..job()
        };
        assert!(spec.check_fits(&small).is_err());
    }

    /// The generator's promise: fed through the engine partition by partition, with only the
    /// sentinels (no `finish`) to close sessions, the final sessions equal the oracle's.
    #[tokio::test]
    async fn the_engine_matches_the_oracle_on_a_generated_stream() {
        let spec = LoadSpec {
            events: 30_000,
            users: 400,
            ..LoadSpec::default()
        };
        let config = job();
        spec.check_fits(&config).unwrap();
        let events = generate(&spec);
        let mut outputs = Vec::new();
        let mut now = 1_000_000;
        for p in 0..spec.partitions {
            let store = MemoryHistory::default();
            let mut kg = KeyGroup::new(p, config.clone(), store.clone());
            for e in events.iter().filter(|e| e.partition == p) {
                now += 1;
                store.set_now(now);
                outputs.extend(kg.process(&e.payload, now).await.unwrap());
            }
            // Flush the pending late updates: processing time moves on.
            now += 10 * config.late_update_interval_ms;
            store.set_now(now);
            outputs.extend(kg.tick(now).await.unwrap());
            assert_eq!(
                kg.open_sessions(),
                1,
                "only the sentinel's session stays open"
            );
            assert_eq!(kg.counters().too_late, 0);
        }
        let records: Vec<_> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Session { record, .. } => Some(record.clone()),
                Output::Quarantine(_) => None,
            })
            .collect();
        let quarantined = outputs
            .iter()
            .filter(|o| matches!(o, Output::Quarantine(_)))
            .count() as u64;
        let want = oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &config);
        assert_eq!(
            quarantined,
            want.malformed + want.page_number_dropped,
            "every malformed and over-page event is quarantined"
        );
        assert!(want.duplicates > 0 && want.malformed > 0 && want.page_number_dropped > 0);
        let got = without_sentinels(final_sessions(&records));
        let want = without_sentinels(want.sessions);
        assert_eq!(got.len(), want.len());
        for (id, w) in &want {
            assert_eq!(got.get(id), Some(w), "session {id}");
        }
        // Bridges really merged visits: some records are tombstones or multi-visit sessions.
        assert!(records.iter().any(|r| r.deleted), "no merge happened");
    }

    /// Regression: a sentinel far beyond `allowedLateness` arrives while late updates are
    /// pending. The engine's `close` used to prune the pending buffer with the jumped watermark,
    /// dropping sessions whose late update was not emitted yet, so accepted events never reached
    /// the sink.
    #[tokio::test]
    async fn a_far_sentinel_keeps_pending_late_updates() {
        let spec = LoadSpec {
            events: 30_000,
            users: 400,
            sentinel_advance_ms: 30 * DAY,
            ..LoadSpec::default()
        };
        let config = job();
        let events = generate(&spec);
        let mut records = Vec::new();
        for p in 0..spec.partitions {
            let mut kg = KeyGroup::new(p, config.clone(), MemoryHistory::default());
            for (now, e) in events.iter().filter(|e| e.partition == p).enumerate() {
                for o in kg.process(&e.payload, now as i64).await.unwrap() {
                    if let Output::Session { record, .. } = o {
                        records.push(record);
                    }
                }
            }
            for o in kg.tick(i64::MAX / 2).await.unwrap() {
                if let Output::Session { record, .. } = o {
                    records.push(record);
                }
            }
        }
        let want = oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &config);
        assert_eq!(
            without_sentinels(final_sessions(&records)),
            without_sentinels(want.sessions)
        );
    }
}
