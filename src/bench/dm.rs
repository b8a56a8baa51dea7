//! `cinder bench dm`: direct-message load through a real relay, end to end.
//!
//! `pairs` senders each talk to their own recipient, one WebSocket per user, with the full
//! client-side cryptography per message: an envelope sealed under a fresh content key, the key
//! package wrapped by the pairwise Double Ratchet session, a protocol `Send`; the recipient
//! decrypts the ratchet message, opens the envelope and acknowledges the mailbox item (acks are
//! batched when several deliveries are already waiting). The relay stores every message durably
//! before `SendOk` and before pushing it, exactly as for real clients; the `Delivered` notices it
//! sends back are acknowledged too.
//!
//! The load is open loop: one scheduling thread walks a fixed timetable of intended send times
//! (`rate` messages per second in total, pairs interleaved so the aggregate is smooth) and never
//! waits for `SendOk` (replies are matched to frame ids asynchronously). Latency is measured
//! from a message's *intended* send time to the moment its recipient finished decrypting it, so
//! a stall anywhere (relay, network, the load generator itself) shows up in the figures instead
//! of silently lowering the offered load (no coordinated omission). Values go to an HdrHistogram
//! in microseconds. A warm-up (default 1 s) runs at full rate before the measured window.
//!
//! `--saturate` measures capacity instead: a closed loop in which every pair keeps `window`
//! messages in flight; the figure of merit is delivered messages per second, and latency is
//! then measured from the actual send time.
//!
//! Setup is not measured: registration (real keys, certificates and prekeys), session
//! establishment with `FetchKeys` and PQXDH, and one message each way per pair.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::{
    self, Conn, Device, FirstError, Identity, LoadError, Peer, Peers, Relay, RelayTarget, Tally,
    lock, opt, unix_ms, verdict,
};
use crate::client::pairwise;
use crate::crypto::envelope::{MessageId, Payload, PayloadKind, Timers};
use crate::crypto::identity::RootPublicKey;
use crate::protocol::{self, DeliveryKind, frame::Body, names};

/// The p99 latency target, milliseconds (at [`P99_TARGET_RATE`]).
pub const P99_TARGET_MS: f64 = 5.0;
/// The offered load the p99 target is defined at, messages per second.
pub const P99_TARGET_RATE: f64 = 1000.0;
/// The saturation target: delivered messages per second.
pub const SATURATION_TARGET: f64 = 10_000.0;

/// Longest wait for every pair's handshake and first reply.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// After this long without a new delivery during the drain, recipients fetch their mailboxes
/// (a push the relay dropped because a connection's push queue was full is only fetchable).
const STALL_BEFORE_FETCH: Duration = Duration::from_millis(500);

/// Options of `cinder bench dm`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Sender/recipient pairs (two connections each).
    pub pairs: usize,
    /// Offered messages per second across all pairs (open loop; ignored with `saturate`).
    pub rate: f64,
    /// The measured window.
    pub duration: Duration,
    /// Unmeasured load before the window.
    pub warmup: Duration,
    /// Longest wait for messages still in flight after the window.
    pub drain: Duration,
    /// Closed loop with `window` messages in flight per pair, to measure capacity.
    pub saturate: bool,
    /// Messages in flight per pair with `saturate`.
    pub window: usize,
    /// Characters of text per message.
    pub text_len: usize,
    /// The relay to load.
    pub relay: RelayTarget,
}

impl Options {
    /// The defaults: 50 pairs, 1,000 msgs/s, 10 s measured after 1 s of warm-up.
    pub fn new(relay: RelayTarget) -> Self {
        Self {
            pairs: 50,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            drain: Duration::from_secs(5),
            saturate: false,
            window: 32,
            text_len: 100,
            relay,
        }
    }
}

/// The figures of one run.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// Always "dm".
    pub scenario: &'static str,
    /// "open-loop" or "saturate".
    pub mode: &'static str,
    /// "spawned" (a child process) or "external".
    pub relay: &'static str,
    /// Sender/recipient pairs.
    pub pairs: usize,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Unmeasured warm-up, seconds.
    pub warmup_s: f64,
    /// Offered load (open loop: the configured rate; saturate: what was sent in the window).
    pub offered_msgs_per_sec: f64,
    /// Messages decrypted by recipients during the window, per second.
    pub achieved_msgs_per_sec: f64,
    /// Messages whose (intended) send time fell in the window and that were sent.
    pub sent: u64,
    /// Of those, decrypted by their recipient (during the window or the drain).
    pub delivered: u64,
    /// `sent - delivered`: not decrypted by the end of the drain (lost, or still queued when
    /// the relay is overloaded).
    pub lost: u64,
    /// Scheduled in the window but not sent before it closed (the load generator fell behind).
    pub not_sent: u64,
    /// Delivered only by a mailbox fetch because the relay dropped the live push.
    pub fetched_after_dropped_push: u64,
    /// Sends the relay answered with an error other than `RateLimited`.
    pub send_errors: u64,
    /// Requests the relay answered `RateLimited` (retried after its delay).
    pub rate_limited: u64,
    /// Deliveries that failed to decrypt or verify.
    pub decrypt_errors: u64,
    /// Median latency, intended send to decrypted, milliseconds.
    pub latency_p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub latency_p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub latency_p999_ms: f64,
    /// Largest latency, milliseconds.
    pub latency_max_ms: f64,
    /// Mean latency, milliseconds.
    pub latency_mean_ms: f64,
    /// How late the load generator itself started sealing a message after its intended time:
    /// 99th percentile, milliseconds (open loop; large values mean the generator is starved).
    pub send_lag_p99_ms: f64,
    /// The largest such lag, milliseconds.
    pub send_lag_max_ms: f64,
    /// Latency split at the relay's receive stamp (`server_ts_ms`, taken when the store runs
    /// the send, before its commit; millisecond resolution): intended send time to that stamp
    /// (generator, socket, relay connection task, store queue), p50 and p99 in ms.
    pub to_relay_p50_ms: f64,
    /// See `to_relay_p50_ms`.
    pub to_relay_p99_ms: f64,
    /// From the relay's stamp to decrypted (commit, push, socket, recipient), p50, ms.
    pub from_relay_p50_ms: f64,
    /// See `from_relay_p50_ms`.
    pub from_relay_p99_ms: f64,
    /// Relay CPU time (user + system) during the window per message decrypted in it, us.
    pub relay_cpu_us_per_msg: Option<f64>,
    /// Relay CPU during the window, percent of one core.
    pub relay_cpu_percent: Option<f64>,
    /// Relay resident memory at the end of the window, MiB.
    pub relay_rss_mib: Option<f64>,
    /// Relay peak resident memory, MiB.
    pub relay_peak_rss_mib: Option<f64>,
    /// This load generator's CPU during the window, percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// Time the relay's threads spent runnable but waiting for a CPU during the window, summed
    /// over threads, as a percentage of the window (CPU contention; ideally near 0).
    pub relay_runqueue_wait_percent: Option<f64>,
    /// The p99 target, milliseconds.
    pub p99_target_ms: f64,
    /// p99 within target with nothing lost or left unsent (the target is defined at
    /// 1,000 msgs/s; see `offered_msgs_per_sec`).
    pub p99_target_met: bool,
    /// The saturation target, delivered messages per second.
    pub saturation_target_msgs_per_sec: f64,
    /// With `--saturate`: whether `achieved_msgs_per_sec` reached the target.
    pub saturation_target_met: Option<bool>,
    /// The machine's 1-minute load average just before the run: other processes competing
    /// for the same cores distort every figure.
    pub load_average_before: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// What a request sent without waiting was.
#[derive(Clone, Copy)]
enum Req {
    /// A message.
    Send,
    /// An acknowledgement.
    Ack,
}

/// A bench user: keys, prekeys and sessions in memory, one connection.
struct User {
    dev: Device,
    seen: Mutex<HashSet<u64>>,
    conn: Conn<Req>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    not_sent: AtomicU64,
    delivered: AtomicU64,
    in_window: AtomicU64,
    late: AtomicU64,
    send_errors: AtomicU64,
    rate_limited: AtomicU64,
    decrypt_errors: AtomicU64,
    warm: AtomicU64,
}

#[derive(Default)]
struct PairCount {
    sent: AtomicU64,
    decrypted: AtomicU64,
}

/// State shared by the scheduler, the readers and the orchestrator.
struct Shared {
    t0: Instant,
    /// The measured window, microseconds since `t0` (`u64::MAX` until set).
    window_start: AtomicU64,
    window_end: AtomicU64,
    roots: HashMap<String, RootPublicKey>,
    pairs: Vec<PairCount>,
    c: Counters,
    hist: Mutex<Histogram<u64>>,
    lag: Mutex<Histogram<u64>>,
    to_relay: Mutex<Histogram<u64>>,
    from_relay: Mutex<Histogram<u64>>,
    /// Wall clock at `t0`, microseconds since the Unix epoch (to compare with relay stamps).
    wall0_us: u64,
    first_error: FirstError,
    sender: OnceLock<Thread>,
    saturate: bool,
    window: u64,
    text_len: usize,
}

impl Shared {
    fn us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX)
    }

    fn in_window(&self, us: u64) -> bool {
        us >= self.window_start.load(Relaxed) && us < self.window_end.load(Relaxed)
    }
}

impl Tally for Shared {
    fn note(&self, e: impl std::fmt::Display) {
        self.first_error.note(e);
    }

    fn rate_limited(&self) {
        self.c.rate_limited.fetch_add(1, Relaxed);
    }
}

/// Seals `flag pair intended_us ...` for `peer` and sends it without waiting.
fn send_message(
    user: &User,
    sh: &Shared,
    peer: &str,
    flag: &str,
    pair: usize,
    intended_us: u64,
) -> Result<(), LoadError> {
    let mut text = format!("{flag} {pair} {intended_us} ");
    let pad = sh.text_len.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    let payload = Payload {
        message_id: MessageId::random()?,
        sent_at_ms: unix_ms(),
        conversation: names::dm_conversation(user.dev.name(), peer).into_bytes(),
        kind: PayloadKind::Text(text),
        timers: Timers::default(),
        reply_to: None,
    };
    let send = user.dev.seal_for(&payload, [peer])?;
    user.conn.fire(Body::Send(send), Req::Send)
}

/// Decrypts one delivery as a real client does: ratchet (or handshake), key package, envelope.
fn open_delivery(user: &User, sh: &Shared, d: &protocol::Delivery) -> Result<String, LoadError> {
    match user.dev.open_pairwise(&sh.roots, d)?.0 {
        pairwise::Content::Text { text, .. } => Ok(text),
        _ => Err(LoadError::Protocol("not a text message".into())),
    }
}

/// Accounts for a decrypted text: warm-up handshakes, or a load message's latency.
fn on_text(user: &User, sh: &Shared, from: &str, text: &str, server_ts_ms: u64, late: bool) {
    let done = Instant::now();
    let done_wall_ms = unix_ms();
    let mut it = text.split_whitespace();
    let (Some(flag), Some(pair), Some(intended)) = (it.next(), it.next(), it.next()) else {
        sh.note("a message without the bench header");
        return;
    };
    let (Ok(pair), Ok(intended)) = (pair.parse::<usize>(), intended.parse::<u64>()) else {
        sh.note("a message with a malformed bench header");
        return;
    };
    match flag {
        "w" => {
            if let Err(e) = send_message(user, sh, from, "r", pair, 0) {
                sh.note(e);
            }
        }
        "r" => {
            sh.c.warm.fetch_add(1, Relaxed);
        }
        _ => {
            let now = sh.us(done);
            if let Some(p) = sh.pairs.get(pair) {
                p.decrypted.fetch_add(1, Relaxed);
            }
            if sh.in_window(now) {
                sh.c.in_window.fetch_add(1, Relaxed);
            }
            if sh.in_window(intended) {
                sh.c.delivered.fetch_add(1, Relaxed);
                if late {
                    sh.c.late.fetch_add(1, Relaxed);
                }
                lock(&sh.hist).saturating_record(now.saturating_sub(intended).max(1));
                let intended_wall_ms = (sh.wall0_us + intended) / 1000;
                lock(&sh.to_relay)
                    .saturating_record(server_ts_ms.saturating_sub(intended_wall_ms) * 1000 + 1);
                lock(&sh.from_relay)
                    .saturating_record(done_wall_ms.saturating_sub(server_ts_ms) * 1000 + 1);
            }
            if sh.saturate
                && let Some(t) = sh.sender.get()
            {
                t.unpark();
            }
        }
    }
}

/// Handles one mailbox item; returns the sequence number to acknowledge.
fn on_delivery(user: &User, sh: &Shared, d: protocol::Delivery, late: bool) -> Option<u64> {
    if !lock(&user.seen).insert(d.seq) {
        // Already handled (a fetch overlapping a push); its ack is on its way.
        return None;
    }
    if d.kind == DeliveryKind::Delivered as i32 {
        return Some(d.seq);
    }
    match open_delivery(user, sh, &d) {
        Ok(text) => on_text(user, sh, &d.sender_user, &text, d.server_ts_ms, late),
        Err(e) => {
            sh.c.decrypt_errors.fetch_add(1, Relaxed);
            sh.note(e);
        }
    }
    Some(d.seq)
}

impl Peer for User {
    type Shared = Shared;
    type Req = Req;
    const ACK: Req = Req::Ack;

    fn conn(&self) -> &Conn<Req> {
        &self.conn
    }

    fn on_delivery(&self, sh: &Shared, d: protocol::Delivery, fetched: bool) -> Option<u64> {
        on_delivery(self, sh, d, fetched)
    }

    fn on_answer(&self, sh: &Shared, req: Req, body: Body) {
        if let Body::Error(e) = body {
            let send = matches!(req, Req::Send);
            if send {
                sh.c.send_errors.fetch_add(1, Relaxed);
            }
            sh.note(client::refused(if send { "send" } else { "ack" }, &e));
        }
    }
}

/// One sender and its recipient.
struct Lane {
    user: Arc<User>,
    peer: String,
    pair: usize,
}

fn send_load(lane: &Lane, sh: &Shared, intended_us: u64) {
    if let Some(p) = sh.pairs.get(lane.pair) {
        p.sent.fetch_add(1, Relaxed);
    }
    if sh.in_window(intended_us) {
        sh.c.sent.fetch_add(1, Relaxed);
    }
    if let Err(e) = send_message(&lane.user, sh, &lane.peer, "m", lane.pair, intended_us) {
        sh.c.send_errors.fetch_add(1, Relaxed);
        sh.note(e);
    }
}

/// The scheduling thread: seals and sends every message at its intended time (open loop), or
/// keeps each pair's window full (saturate), until the window closes.
fn drive(lanes: &[Lane], sh: &Shared, start_us: u64, rate: f64) {
    let _ = sh.sender.set(std::thread::current());
    let end = sh.window_end.load(Relaxed);
    if lanes.is_empty() {
        return;
    }
    if sh.saturate {
        loop {
            if sh.us(Instant::now()) >= end {
                return;
            }
            let mut progressed = false;
            for lane in lanes {
                let Some(p) = sh.pairs.get(lane.pair) else {
                    continue;
                };
                let in_flight = p
                    .sent
                    .load(Relaxed)
                    .saturating_sub(p.decrypted.load(Relaxed));
                if in_flight < sh.window {
                    send_load(lane, sh, sh.us(Instant::now()));
                    progressed = true;
                }
            }
            if !progressed {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
    }
    let interval_us = 1e6 / rate;
    let mut k: u64 = 0;
    loop {
        let intended = start_us + (k as f64 * interval_us) as u64;
        if intended >= end {
            return;
        }
        let target = sh.t0 + Duration::from_micros(intended);
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        } else if sh.us(now) >= end {
            // Fell behind past the window's end: what is left of the window was never sent.
            let from = intended.max(sh.window_start.load(Relaxed));
            let left = ((end - from) as f64 / interval_us).ceil() as u64;
            sh.c.not_sent.fetch_add(left, Relaxed);
            return;
        }
        let lane = &lanes[(k % lanes.len() as u64) as usize];
        if sh.in_window(intended) {
            let lag = sh.us(Instant::now()).saturating_sub(intended);
            lock(&sh.lag).saturating_record(lag.max(1));
        }
        send_load(lane, sh, intended);
        k += 1;
    }
}

/// Runs the scenario: starts (or checks) the relay, sets up the users, loads, reports.
///
/// # Errors
/// [`LoadError`] if the relay cannot be started or reached, or refuses set-up; failures during
/// the measured run are counted in the report instead.
pub async fn run(opts: &Options) -> Result<Report, LoadError> {
    if opts.pairs == 0 {
        return Err(LoadError::Usage("--pairs must be at least 1".into()));
    }
    let rate_ok = opts.rate.is_finite() && opts.rate > 0.0;
    if !opts.saturate && !rate_ok {
        return Err(LoadError::Usage("--rate must be positive".into()));
    }
    if opts.duration.is_zero() {
        return Err(LoadError::Usage("--duration must be positive".into()));
    }
    if opts.saturate && opts.window == 0 {
        return Err(LoadError::Usage("--window must be at least 1".into()));
    }
    client::with_relay(&opts.relay, &[], async |relay, _| {
        run_with(relay, opts).await
    })
    .await
    .map(|(r, load_average_before)| Report {
        load_average_before,
        ..r
    })
}

async fn run_with(relay: &Relay, opts: &Options) -> Result<Report, LoadError> {
    let prefix = client::run_prefix()?;
    let (_, invites) = client::admin_invites(relay, &prefix, 2 * opts.pairs).await?;

    let mut ids = Vec::with_capacity(2 * opts.pairs);
    for i in 0..opts.pairs {
        ids.push(Identity::generate(&format!("{prefix}-s{i}"))?);
        ids.push(Identity::generate(&format!("{prefix}-r{i}"))?);
    }
    let roots = client::roots(&ids);
    let registered = client::register_all(&relay.url, ids, invites).await?;

    let hist = client::histogram()?;
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        roots,
        pairs: (0..opts.pairs).map(|_| PairCount::default()).collect(),
        c: Counters::default(),
        lag: Mutex::new(hist.clone()),
        to_relay: Mutex::new(hist.clone()),
        from_relay: Mutex::new(hist.clone()),
        wall0_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0)),
        hist: Mutex::new(hist),
        first_error: FirstError::default(),
        sender: OnceLock::new(),
        saturate: opts.saturate,
        window: opts.window as u64,
        text_len: opts.text_len,
    });

    let users = Peers::start(registered, &sh, |dev, conn| User {
        dev,
        seen: Mutex::new(HashSet::new()),
        conn,
    });
    let result = load(users.all(), &sh, opts, relay.pid).await;
    users.shut_down().await;
    result
}

async fn establish(lanes: &[Lane], sh: &Shared) -> Result<(), LoadError> {
    for lane in lanes {
        // The pinned root key: what registration produced, as a real client pins on first use.
        let root = sh
            .roots
            .get(&lane.peer)
            .ok_or_else(|| LoadError::Protocol("unknown peer".into()))?;
        let bundle = lane.user.conn.fetch_bundle(&lane.peer, root).await?;
        lane.user.dev.initiate(&lane.peer, root, &bundle)?;
        send_message(&lane.user, sh, &lane.peer, "w", lane.pair, 0)?;
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while sh.c.warm.load(Relaxed) < lanes.len() as u64 {
        if Instant::now() >= deadline {
            let why = sh.first_error.get().unwrap_or_default();
            return Err(LoadError::Protocol(format!(
                "only {} of {} pairs completed their handshake in time {why}",
                sh.c.warm.load(Relaxed),
                lanes.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn load(
    users: &[Arc<User>],
    sh: &Arc<Shared>,
    opts: &Options,
    relay_pid: Option<u32>,
) -> Result<Report, LoadError> {
    let lanes: Vec<Lane> = users
        .chunks(2)
        .enumerate()
        .filter_map(|(pair, c)| match c {
            [s, r] => Some(Lane {
                user: s.clone(),
                peer: r.dev.name().to_owned(),
                pair,
            }),
            _ => None,
        })
        .collect();
    let recipients: Vec<Arc<User>> = users.iter().skip(1).step_by(2).cloned().collect();
    establish(&lanes, sh).await?;

    // The timetable: a short lead so the thread is up, the warm-up, then the window.
    let start = sh.us(Instant::now()) + 20_000;
    let window_start = start + client::micros(opts.warmup);
    let window_end = window_start + client::micros(opts.duration);
    sh.window_start.store(window_start, Relaxed);
    sh.window_end.store(window_end, Relaxed);
    let rate = opts.rate;
    let (sh2, lanes2) = (sh.clone(), lanes);
    let driver = tokio::task::spawn_blocking(move || drive(&lanes2, &sh2, start, rate));

    let me = std::process::id();
    tokio::time::sleep_until((sh.t0 + Duration::from_micros(window_start)).into()).await;
    let relay_cpu0 = relay_pid.and_then(client::process_cpu_us);
    let relay_wait0 = relay_pid.and_then(client::process_runqueue_wait_us);
    let self_cpu0 = client::process_cpu_us(me);
    tokio::time::sleep_until((sh.t0 + Duration::from_micros(window_end)).into()).await;
    let relay_cpu1 = relay_pid.and_then(client::process_cpu_us);
    let relay_wait1 = relay_pid.and_then(client::process_runqueue_wait_us);
    let self_cpu1 = client::process_cpu_us(me);
    let relay_mem = relay_pid.and_then(client::process_memory_kib);
    let _ = driver.await;

    // Drain: wait for what is still in flight; fetch mailboxes if deliveries stall.
    let deadline = Instant::now() + opts.drain;
    let mut last = (sh.c.delivered.load(Relaxed), Instant::now());
    while sh.c.delivered.load(Relaxed) < sh.c.sent.load(Relaxed) && Instant::now() < deadline {
        if recipients.iter().all(|u| u.conn.is_closed()) {
            sh.note("the relay closed every connection");
            break;
        }
        let now = Instant::now();
        let d = sh.c.delivered.load(Relaxed);
        if d != last.0 {
            last = (d, now);
        } else if now.duration_since(last.1) >= STALL_BEFORE_FETCH {
            let left = deadline.saturating_duration_since(now);
            let _ = tokio::time::timeout(left, client::fetch_mailboxes(&recipients, sh)).await;
            last.1 = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let window_s = (window_end - window_start) as f64 / 1e6;
    let c = &sh.c;
    let sent = c.sent.load(Relaxed);
    let delivered = c.delivered.load(Relaxed);
    let not_sent = c.not_sent.load(Relaxed);
    let in_window = c.in_window.load(Relaxed);
    let hist = lock(&sh.hist).clone();
    let lag = lock(&sh.lag).clone();
    let to_relay = lock(&sh.to_relay).clone();
    let from_relay = lock(&sh.from_relay).clone();
    // Recorded as ms * 1000 + 1; report whole milliseconds.
    let ms_q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0.0
        } else {
            (h.value_at_quantile(p) / 1000) as f64
        }
    };
    let q = |p: f64| client::quantile_ms(&hist, p);
    let relay_cpu_us = client::delta(relay_cpu0, relay_cpu1);
    let self_cpu_us = client::delta(self_cpu0, self_cpu1);
    let achieved = in_window as f64 / window_s;
    let offered = if opts.saturate {
        sent as f64 / window_s
    } else {
        opts.rate
    };
    let lost = sent.saturating_sub(delivered);
    let p99 = q(0.99);
    Ok(Report {
        scenario: "dm",
        mode: if opts.saturate {
            "saturate"
        } else {
            "open-loop"
        },
        relay: opts.relay.kind(),
        pairs: opts.pairs,
        duration_s: window_s,
        warmup_s: opts.warmup.as_secs_f64(),
        offered_msgs_per_sec: offered,
        achieved_msgs_per_sec: achieved,
        sent,
        delivered,
        lost,
        not_sent,
        fetched_after_dropped_push: c.late.load(Relaxed),
        send_errors: c.send_errors.load(Relaxed),
        rate_limited: c.rate_limited.load(Relaxed),
        decrypt_errors: c.decrypt_errors.load(Relaxed),
        latency_p50_ms: q(0.5),
        latency_p90_ms: q(0.9),
        latency_p99_ms: p99,
        latency_p999_ms: q(0.999),
        latency_max_ms: client::max_ms(&hist),
        latency_mean_ms: if hist.is_empty() {
            0.0
        } else {
            hist.mean() / 1000.0
        },
        send_lag_p99_ms: client::quantile_ms(&lag, 0.99),
        send_lag_max_ms: client::max_ms(&lag),
        to_relay_p50_ms: ms_q(&to_relay, 0.5),
        to_relay_p99_ms: ms_q(&to_relay, 0.99),
        from_relay_p50_ms: ms_q(&from_relay, 0.5),
        from_relay_p99_ms: ms_q(&from_relay, 0.99),
        relay_cpu_us_per_msg: relay_cpu_us
            .filter(|_| in_window > 0)
            .map(|us| us / in_window as f64),
        relay_cpu_percent: relay_cpu_us.map(|us| us / (window_s * 1e6) * 100.0),
        relay_rss_mib: relay_mem.map(|(rss, _)| rss as f64 / 1024.0),
        relay_peak_rss_mib: relay_mem.map(|(_, hwm)| hwm as f64 / 1024.0),
        client_cpu_percent: self_cpu_us.map(|us| us / (window_s * 1e6) * 100.0),
        relay_runqueue_wait_percent: client::delta(relay_wait0, relay_wait1)
            .map(|us| us / (window_s * 1e6) * 100.0),
        p99_target_ms: P99_TARGET_MS,
        p99_target_met: delivered > 0 && lost == 0 && not_sent == 0 && p99 <= P99_TARGET_MS,
        saturation_target_msgs_per_sec: SATURATION_TARGET,
        saturation_target_met: opts.saturate.then_some(achieved >= SATURATION_TARGET),
        load_average_before: None,
        first_error: sh.first_error.get(),
    })
}

/// Prints the report as a table.
///
/// # Errors
/// I/O errors of `out`.
pub fn print(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "cinder bench dm ({}, {} pairs, {} relay, {:.0} s measured after {:.0} s warm-up)",
        r.mode, r.pairs, r.relay, r.duration_s, r.warmup_s
    )?;
    writeln!(
        out,
        "  offered                      {:>10.1} msgs/s",
        r.offered_msgs_per_sec
    )?;
    writeln!(
        out,
        "  achieved (decrypted)         {:>10.1} msgs/s",
        r.achieved_msgs_per_sec
    )?;
    writeln!(
        out,
        "  sent / delivered / undelivered {} / {} / {}   (not sent in time {}, fetched after a dropped push {})",
        r.sent, r.delivered, r.lost, r.not_sent, r.fetched_after_dropped_push
    )?;
    writeln!(
        out,
        "  send errors / rate limited   {} / {}   decrypt errors {}",
        r.send_errors, r.rate_limited, r.decrypt_errors
    )?;
    writeln!(
        out,
        "  latency p50 / p90 / p99      {:.3} / {:.3} / {:.3} ms",
        r.latency_p50_ms, r.latency_p90_ms, r.latency_p99_ms
    )?;
    writeln!(
        out,
        "  latency p99.9 / max / mean   {:.3} / {:.3} / {:.3} ms",
        r.latency_p999_ms, r.latency_max_ms, r.latency_mean_ms
    )?;
    if r.mode == "open-loop" {
        writeln!(
            out,
            "  generator send lag p99 / max {:.3} / {:.3} ms (intended time to sealing)",
            r.send_lag_p99_ms, r.send_lag_max_ms
        )?;
    }
    writeln!(
        out,
        "  split at relay stamp, p50/p99 to relay {:.0} / {:.0} ms, from relay {:.0} / {:.0} ms (1 ms resolution)",
        r.to_relay_p50_ms, r.to_relay_p99_ms, r.from_relay_p50_ms, r.from_relay_p99_ms
    )?;
    writeln!(
        out,
        "  relay CPU                    {:>10} us/msg   ({} % of one core)",
        opt(r.relay_cpu_us_per_msg, 1),
        opt(r.relay_cpu_percent, 1)
    )?;
    writeln!(
        out,
        "  relay RSS                    {:>10} MiB now, {} MiB peak",
        opt(r.relay_rss_mib, 1),
        opt(r.relay_peak_rss_mib, 1)
    )?;
    writeln!(
        out,
        "  load generator CPU           {:>10} % of one core",
        opt(r.client_cpu_percent, 1)
    )?;
    writeln!(
        out,
        "  relay waiting for a CPU      {:>10} % of the window (run-queue time, all threads)",
        opt(r.relay_runqueue_wait_percent, 1)
    )?;
    let at = if (r.offered_msgs_per_sec - P99_TARGET_RATE).abs() < 0.5 && r.mode == "open-loop" {
        String::new()
    } else {
        " (the target is defined at an offered 1,000 msgs/s)".to_owned()
    };
    writeln!(
        out,
        "  p99 <= {} ms, nothing lost   {}{at}",
        r.p99_target_ms,
        verdict(r.p99_target_met)
    )?;
    match r.saturation_target_met {
        Some(ok) => writeln!(
            out,
            "  saturation >= {:.0} msgs/s   {}",
            r.saturation_target_msgs_per_sec,
            verdict(ok)
        )?,
        None => writeln!(
            out,
            "  saturation                   not measured (use --saturate)"
        )?,
    }
    writeln!(
        out,
        "  load average before the run  {:>10}   (other processes share the cores)",
        opt(r.load_average_before, 2)
    )?;
    if let Some(e) = &r.first_error {
        writeln!(out, "  first error                  {e}")?;
    }
    Ok(())
}
