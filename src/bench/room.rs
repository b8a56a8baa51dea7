//! `cinder bench room`: a large room through a real relay, end to end.
//!
//! `members` users (default 500, one device and one WebSocket each) are registered with real
//! keys; the first creates a room with all the others in one signed `Create` op. Every figure
//! comes from the real protocol and the real cryptography, without the SQLCipher cache (as in
//! `bench dm`). Every message, key and distribution is built and opened by the client core
//! (`client::room`, `client::pairwise`), the same code the session engine drives:
//!
//! 1. **Client CPU per room send**, in a 2-member room and in the big room: thread CPU time of
//!    `client::room::seal_message` (seal the envelope, encrypt and sign the key package and the
//!    log head under the sender key) and encoding the `RoomSend` frame. The cost must
//!    not depend on the room size (target ratio <= 1.2). `bench crypto` measures the same
//!    primitives in isolation; this is the client's whole send path in a live room.
//! 2. **Relay fan-out at saturation**: the creator keeps `window` room messages in flight (sent
//!    but not yet received by every member) on its one connection; the members first only count
//!    their `RoomMessage` pushes, then, in a second run, decrypt each one (sender-key signature
//!    and decryption, envelope). Deliveries per second are messages x recipients received in the
//!    measured window; relay CPU per delivery is the relay process's CPU time over the window
//!    (`/proc`) divided by those deliveries. Members acknowledge what they received, batched, as
//!    real clients do, so the relay's work includes the deletes.
//! 3. **Latency** at `rate` room messages per second (default 10, open loop): from each
//!    message's intended send time to the moment the *last* member finished decrypting it.
//! 4. **Rotation after a removal**: the creator removes one member with a signed `Remove` op;
//!    then `rotating_senders` remaining members each make a new sender key and send it to every
//!    other remaining member over their established pairwise sessions (one entry per device,
//!    `Send` frames of 200 entries, as the session engine sends them). Reported per sender: CPU
//!    time and frame bytes; the total for all `members - 1` remaining senders is extrapolated.
//!
//! Set-up is not measured: registration (users register with bounded concurrency and keep their
//! authenticated connection, so connections are spread over time), the room's creation, and
//! the pairwise sessions. The creator and the rotating senders each run PQXDH with every other
//! member (`FetchKeys`, an initial message carrying their sender key distribution) and the
//! member answers with its own distribution, so those sessions are established in both
//! directions, as they would be in a room where everyone has spoken; every member then holds
//! the creator's sender key. Before the decrypting run and before the latency run the creator
//! switches to a fresh sender key, distributed the same way, so no run depends on how far the
//! previous one moved the chain. The creator does not rotate every 1,000 messages during a run
//! as a real client would (that cost is the rotation figure).
//!
//! A spawned relay is started with a request rate limit far above any figure here (the default
//! limit of 200 requests per second per device would cap a single sender) and with
//! `--max-room-members` raised to `members` when needed; against an external relay (`--relay`)
//! both are that relay's own settings.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::{
    self, Conn, Device, FirstError, Identity, LoadError, Peer, Peers, Relay, RelayTarget, Tally,
    frame_bytes, lock, opt, unix_ms, verdict,
};
use super::{measure, peak_rss_kib};
use crate::client::pairwise;
use crate::client::room::{self, DISTRIBUTION_CHUNK};
use crate::crypto::envelope::{MessageId, Payload, PayloadKind, Timers};
use crate::crypto::identity::{DeviceId, RootPublicKey};
use crate::crypto::membership::{self, OpKind, RoomKind, RoomState, SignedOp};
use crate::crypto::primitives;
use crate::crypto::sender_keys::{ReceivedSenderKey, SenderKeyState};
use crate::protocol::{self, DeliveryKind, frame::Body};

/// The target for `room_send_large_us / room_send_small_us`.
pub const SEND_RATIO_TARGET: f64 = 1.2;
/// Most members: the creator plus the most users one `Create` op may name.
pub const MAX_MEMBERS: usize = membership::MAX_OP_USERS + 1;

/// Request rate limit of a spawned relay, per device per second (far above any figure here).
const SPAWNED_RELAY_RATE: u32 = 1_000_000;
/// Slots for messages in flight (indexed by message number modulo this).
const RING: usize = 1 << 16;
/// `FetchKeys` requests in flight at once during set-up.
const FETCH_CONCURRENCY: usize = 16;
/// Longest wait for one set-up step (a round of handshakes and distributions, say).
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// After this long without progress, every member fetches its mailbox (a push the relay
/// dropped because a connection's push queue was full is only fetchable).
const STALL_BEFORE_FETCH: Duration = Duration::from_millis(500);
/// Room sends per measured batch, and batches per room, for the client CPU figure.
const SEND_CPU_ITERS: usize = 500;
const SEND_CPU_ROUNDS: usize = 7;

const MODE_COUNT: u8 = 0;
const MODE_DECRYPT: u8 = 1;

/// Options of `cinder bench room`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Room members, the creator included.
    pub members: usize,
    /// Length of the measured latency run.
    pub duration: Duration,
    /// Room messages per second in the latency run (open loop).
    pub rate: f64,
    /// Length of each measured saturation run.
    pub saturate_duration: Duration,
    /// Unmeasured load before each measured run.
    pub warmup: Duration,
    /// Longest wait for messages still in flight after a run.
    pub drain: Duration,
    /// Room messages in flight at saturation.
    pub window: usize,
    /// Remaining members that rotate their sender key after the removal.
    pub rotating_senders: usize,
    /// Characters of text per room message.
    pub text_len: usize,
    /// The relay to load.
    pub relay: RelayTarget,
}

impl Options {
    /// The defaults: 500 members, saturation runs of 5 s, 10 msgs/s for 10 s, 5 rotations.
    pub fn new(relay: RelayTarget) -> Self {
        Self {
            members: 500,
            duration: Duration::from_secs(10),
            rate: 10.0,
            saturate_duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            drain: Duration::from_secs(10),
            window: 32,
            rotating_senders: 5,
            text_len: 100,
            relay,
        }
    }
}

/// `cinder bench room` on the command line.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Room members, the creator included (one device and one connection each).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(3..=1001))]
    pub members: u32,
    /// Measured time of the latency run at --rate (e.g. 30s, 5m; a bare number is seconds).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = crate::config::parse_duration)]
    pub duration: Duration,
    /// Room messages per second offered in the latency run (open loop).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// Measured time of each saturation run (members counting, then members decrypting).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = crate::config::parse_duration)]
    pub saturate_duration: Duration,
    /// Unmeasured load before each measured run.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = crate::config::parse_duration)]
    pub warmup: Duration,
    /// Longest wait for messages still in flight after each run.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = crate::config::parse_duration)]
    pub drain: Duration,
    /// Room messages in flight at saturation (sent but not yet received by every member); keep
    /// it below the relay's per-connection push queue (64) so no push is dropped.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub window: u32,
    /// Remaining members that really rotate their sender key after the removal (at most
    /// members - 2); the total for all remaining members is extrapolated from them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub rotating_senders: u32,
    /// Characters of text per room message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(16..=100_000))]
    pub text_len: u32,
    /// Load a running relay at this loopback URL instead of starting one (it needs
    /// --max-room-members of at least --members and a request rate limit that does not cap
    /// one sender).
    #[arg(long, requires = "invite")]
    pub relay: Option<String>,
    /// An unused admin invite of the relay given with --relay.
    #[arg(long, requires = "relay")]
    pub invite: Option<String>,
    /// Process id of the relay given with --relay, for its CPU and memory figures.
    #[arg(long, requires = "relay")]
    pub relay_pid: Option<u32>,
}

impl Args {
    /// The scenario's options (clap already parsed the durations with the one grammar).
    pub fn options(&self, relay: RelayTarget) -> Options {
        Options {
            members: self.members as usize,
            duration: self.duration,
            rate: f64::from(self.rate),
            saturate_duration: self.saturate_duration,
            warmup: self.warmup,
            drain: self.drain,
            window: self.window as usize,
            rotating_senders: self.rotating_senders as usize,
            text_len: self.text_len as usize,
            relay,
        }
    }
}

/// Client CPU per room send.
#[derive(Serialize, Debug, Clone)]
pub struct SendCpu {
    /// Members of the small room (2).
    pub small_members: usize,
    /// Members of the large room.
    pub large_members: usize,
    /// Thread CPU per send in the small room, microseconds (median of the batches).
    pub small_us: f64,
    /// The same in the large room.
    pub large_us: f64,
    /// `large_us / small_us`.
    pub ratio: f64,
    /// The target for `ratio`.
    pub ratio_target: f64,
    /// `ratio <= ratio_target`.
    pub target_met: bool,
    /// Bytes of one encoded `RoomSend` frame (100-character text by default).
    pub frame_bytes: usize,
    /// Sends measured per room.
    pub sends_per_room: usize,
    /// "thread" (CPU time of the measuring thread) or "wall" where the OS has no thread clock.
    pub clock: &'static str,
}

/// One saturation run.
#[derive(Serialize, Debug, Clone)]
pub struct FanoutRun {
    /// "counting" (members count the frames) or "decrypting" (members decrypt every message).
    pub members_do: &'static str,
    /// Messages in flight that the sender allowed.
    pub window: usize,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Messages received by every member during the window, per second.
    pub msgs_per_sec: f64,
    /// Room messages received by members during the window (messages x recipients).
    pub deliveries: u64,
    /// `deliveries` per second: the fan-out rate.
    pub deliveries_per_sec: f64,
    /// Relay CPU time (user + system) over the window per delivery, microseconds.
    pub relay_cpu_us_per_delivery: Option<f64>,
    /// Relay CPU over the window, percent of one core.
    pub relay_cpu_percent: Option<f64>,
    /// Time the relay's threads waited for a CPU, percent of the window (contention).
    pub relay_runqueue_wait_percent: Option<f64>,
    /// This load generator's CPU over the window, percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// This load generator's CPU over the window per delivery (all members' work on the
    /// frames, decryption in the decrypting run), microseconds.
    pub client_cpu_us_per_delivery: Option<f64>,
    /// Messages sent during the run (warm-up included).
    pub sent: u64,
    /// Of those, not received by every member by the end of the drain.
    pub incomplete: u64,
    /// Deliveries that came by a mailbox fetch because the relay dropped the live push.
    pub fetched_after_dropped_push: u64,
    /// Room sends the relay refused (other than `RateLimited`).
    pub send_errors: u64,
    /// Requests answered `RateLimited` (retried after the relay's delay).
    pub rate_limited: u64,
    /// Deliveries that failed to decrypt or verify.
    pub decrypt_errors: u64,
}

/// The open-loop latency run.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    /// Offered room messages per second.
    pub rate_msgs_per_sec: f64,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Messages whose intended send time fell in the window.
    pub sent: u64,
    /// Of those, decrypted by every member.
    pub delivered_to_all: u64,
    /// `sent - delivered_to_all` at the end of the drain.
    pub incomplete: u64,
    /// Intended send time to the last member's decryption: median, milliseconds.
    pub last_member_p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub last_member_p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub last_member_p99_ms: f64,
    /// Largest, milliseconds.
    pub last_member_max_ms: f64,
    /// Intended send time to the first member's decryption: median, milliseconds. The gap to
    /// the last member is mostly this one process decrypting for every member in turn.
    pub first_member_p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub first_member_p99_ms: f64,
    /// Deliveries per second during the window (messages x recipients).
    pub deliveries_per_sec: f64,
    /// Relay CPU over the window per delivery, microseconds.
    pub relay_cpu_us_per_delivery: Option<f64>,
    /// Relay CPU over the window, percent of one core.
    pub relay_cpu_percent: Option<f64>,
    /// How late the sender started building a message after its intended time, p99, ms.
    pub send_lag_p99_ms: f64,
    /// Deliveries that failed to decrypt or verify.
    pub decrypt_errors: u64,
}

/// Sender-key rotation after a removal.
#[derive(Serialize, Debug, Clone)]
pub struct Rotation {
    /// Bytes of the signed `Remove` op.
    pub remove_op_bytes: usize,
    /// Members left after the removal.
    pub remaining_members: usize,
    /// Remaining members that rotated (measured).
    pub rotating_senders: usize,
    /// Key entries per rotation (one per other remaining member device).
    pub entries_per_rotation: usize,
    /// `Send` frames per rotation.
    pub frames_per_rotation: usize,
    /// CPU time per rotating sender (new key, seal, one pairwise encryption per device,
    /// frames encoded): mean, milliseconds.
    pub cpu_ms_mean: f64,
    /// Smallest, milliseconds.
    pub cpu_ms_min: f64,
    /// Largest, milliseconds.
    pub cpu_ms_max: f64,
    /// Frame bytes sent per rotating sender (WebSocket framing not included): mean.
    pub bytes_mean: f64,
    /// `bytes_mean / entries_per_rotation`.
    pub bytes_per_entry: f64,
    /// From the start of a rotation to the relay's last `SendOk`, milliseconds (mean).
    pub wall_ms_to_stored_mean: f64,
    /// To every other remaining member having installed the new key, milliseconds (mean).
    pub wall_ms_to_installed_mean: f64,
    /// Relay CPU per rotation (its frames stored and pushed, the acknowledgements), ms.
    pub relay_cpu_ms_mean: Option<f64>,
    /// New keys installed by members, over all measured rotations.
    pub installed: u64,
    /// What `installed` should be.
    pub expected_installs: u64,
    /// Extrapolated to every remaining member rotating: total CPU, seconds.
    pub all_senders_cpu_s: f64,
    /// Extrapolated to every remaining member rotating: total bytes sent.
    pub all_senders_bytes: f64,
}

/// The figures of one run.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// Always "room".
    pub scenario: &'static str,
    /// "spawned" (a child process) or "external".
    pub relay: &'static str,
    /// Room members, the creator included.
    pub members: usize,
    /// Set-up time (registration, room, sessions, key distribution), seconds; not measured.
    pub setup_s: f64,
    /// Client CPU per room send, small versus large room.
    pub send_cpu: SendCpu,
    /// Saturation with members only counting frames.
    pub fanout_counting: FanoutRun,
    /// Saturation with members decrypting every message.
    pub fanout_decrypting: FanoutRun,
    /// Open-loop latency to the last member's decryption.
    pub latency: Latency,
    /// Rotation after a removal.
    pub rotation: Rotation,
    /// Relay resident memory at the end, MiB.
    pub relay_rss_mib: Option<f64>,
    /// Relay peak resident memory, MiB.
    pub relay_peak_rss_mib: Option<f64>,
    /// This load generator's peak resident memory (all members' state), MiB.
    pub client_peak_rss_mib: Option<f64>,
    /// The machine's 1-minute load average just before the run.
    pub load_average_before: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// What a request sent without waiting was, for when its answer arrives.
#[derive(Clone, Copy)]
enum Req {
    /// A room message, by number.
    Room(u64),
    /// A sender key distribution `Send`.
    Distribution,
    /// An acknowledgement.
    Ack,
}

/// Sender keys a member holds, by (sending device, distribution id), with their owner.
type ReceivedKeys = HashMap<([u8; 16], [u8; 16]), (String, ReceivedSenderKey)>;

/// A room member: keys, prekeys, pairwise sessions and sender keys in memory, one connection.
struct Member {
    dev: Device,
    /// This member's own sender key for the room.
    own_key: Mutex<Option<SenderKeyState>>,
    /// Sender keys received, by (sending device, distribution id), with the user whose pairwise
    /// session delivered them (the sender as far as this member is concerned, never the
    /// relay's claim).
    keys: Mutex<ReceivedKeys>,
    /// Room messages handled, by number (a bit set).
    seen_room: Mutex<Vec<u64>>,
    /// Other mailbox items handled, by sequence number.
    seen_seqs: Mutex<HashSet<u64>>,
    /// Distribution sends not yet answered.
    pending_sends: AtomicU64,
    conn: Conn<Req>,
}

impl Member {
    fn name(&self) -> &str {
        self.dev.name()
    }

    fn device(&self) -> DeviceId {
        self.dev.id.cert.device_id
    }

    /// Sends distribution frame `bytes` (encoded with id `id`) without waiting.
    fn fire_distribution(&self, id: u64, bytes: Vec<u8>) -> Result<(), LoadError> {
        self.pending_sends.fetch_add(1, Relaxed);
        self.conn.fire_encoded(id, bytes, Req::Distribution)
    }
}

/// A message in flight: how many recipients still have to receive it.
struct Slot {
    k: AtomicU64,
    remaining: AtomicU32,
    intended_us: AtomicU64,
}

#[derive(Default)]
struct Counters {
    /// Room messages handed to the connection.
    sent: AtomicU64,
    /// Room messages every recipient has received (or that failed).
    complete: AtomicU64,
    /// Room messages received by members.
    deliveries: AtomicU64,
    fetched: AtomicU64,
    send_errors: AtomicU64,
    rate_limited: AtomicU64,
    decrypt_errors: AtomicU64,
    /// Sender key distributions installed by members.
    installed: AtomicU64,
    /// Membership ops verified by members.
    ops_seen: AtomicU64,
    /// Latency run: messages intended in the window, and of those received by everyone.
    lat_sent: AtomicU64,
    lat_done: AtomicU64,
    not_sent: AtomicU64,
}

/// State shared by the sender, the members' readers and the orchestrator.
struct Shared {
    t0: Instant,
    roots: HashMap<String, RootPublicKey>,
    /// The big room's verified state.
    room: RwLock<Option<Arc<RoomState>>>,
    mode: AtomicU8,
    /// Recipients of each room message (every member but the sender).
    recipients: AtomicU32,
    slots: Vec<Slot>,
    next_k: AtomicU64,
    /// Latency window (intended times, microseconds since `t0`; empty outside the run).
    lat_start: AtomicU64,
    lat_end: AtomicU64,
    c: Counters,
    hist: Mutex<Histogram<u64>>,
    first: Mutex<Histogram<u64>>,
    lag: Mutex<Histogram<u64>>,
    driver: Mutex<Option<Thread>>,
    first_error: FirstError,
    text_len: usize,
}

impl Shared {
    fn us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX)
    }

    fn now_us(&self) -> u64 {
        self.us(Instant::now())
    }

    fn state(&self) -> Option<Arc<RoomState>> {
        self.room
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_state(&self, s: RoomState) {
        *self.room.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(s));
    }

    fn slot(&self, k: u64) -> &Slot {
        &self.slots[(k % RING as u64) as usize]
    }

    fn wake_driver(&self) {
        if let Some(t) = lock(&self.driver).as_ref() {
            t.unpark();
        }
    }

    fn in_latency_window(&self, intended_us: u64) -> bool {
        intended_us >= self.lat_start.load(Relaxed) && intended_us < self.lat_end.load(Relaxed)
    }

    /// A message reached its last recipient (or failed).
    fn complete(&self, slot: &Slot, record: bool) {
        self.c.complete.fetch_add(1, Relaxed);
        if record {
            let intended = slot.intended_us.load(Relaxed);
            if self.in_latency_window(intended) {
                self.c.lat_done.fetch_add(1, Relaxed);
                let now = self.now_us();
                lock(&self.hist).saturating_record(now.saturating_sub(intended).max(1));
            }
        }
        self.wake_driver();
    }

    /// One recipient received message `k`.
    fn received(&self, k: u64) {
        let slot = self.slot(k);
        if slot.k.load(Acquire) != k {
            return;
        }
        match slot
            .remaining
            .fetch_update(AcqRel, Acquire, |r| r.checked_sub(1))
        {
            Ok(1) => self.complete(slot, true),
            Ok(r) if r == self.recipients.load(Relaxed) => {
                let intended = slot.intended_us.load(Relaxed);
                if self.in_latency_window(intended) {
                    let now = self.now_us();
                    lock(&self.first).saturating_record(now.saturating_sub(intended).max(1));
                }
            }
            _ => {}
        }
    }

    /// Message `k` will not reach its recipients (refused by the relay).
    fn abandon(&self, k: u64) {
        let slot = self.slot(k);
        if slot.k.load(Acquire) == k && slot.remaining.swap(0, AcqRel) > 0 {
            self.complete(slot, false);
        }
    }

    fn in_flight(&self) -> u64 {
        self.c
            .sent
            .load(Relaxed)
            .saturating_sub(self.c.complete.load(Relaxed))
    }

    /// Counters that move whenever anything arrives (to notice stalls).
    fn activity(&self) -> u64 {
        self.c.deliveries.load(Relaxed)
            + self.c.installed.load(Relaxed)
            + self.c.ops_seen.load(Relaxed)
            + self.c.complete.load(Relaxed)
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

/// Inserts `k` into a bit set; `false` if it was there already.
fn bit_insert(bits: &mut Vec<u64>, k: u64) -> bool {
    let (word, bit) = ((k / 64) as usize, k % 64);
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    let was = bits[word] & (1 << bit) != 0;
    bits[word] |= 1 << bit;
    !was
}

/// The room message number carried in the first 8 bytes of its id (the rest is random).
fn message_number(id: &[u8]) -> Option<u64> {
    let b: [u8; 8] = id.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

fn message_id(k: u64) -> Result<[u8; 16], LoadError> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&k.to_be_bytes());
    id[8..].copy_from_slice(&primitives::random_array::<8>()?);
    Ok(id)
}

/// One room message, sealed by the client core as the session engine seals it
/// (`client::room::seal_message`: the envelope sealed once, the key package and the log head
/// encrypted and signed under the sender key, one `RoomSend` for every member).
fn room_send(
    key: &mut SenderKeyState,
    state: &RoomState,
    id: [u8; 16],
    text: String,
) -> Result<Body, LoadError> {
    let sealed = room::seal_message(
        key,
        state,
        &Payload {
            message_id: MessageId(id),
            sent_at_ms: unix_ms(),
            conversation: state.room_id.as_bytes().to_vec(),
            kind: PayloadKind::Text(text),
            timers: Timers::default(),
            reply_to: None,
        },
    )?;
    Ok(Body::RoomSend(sealed.request))
}

/// `member`'s sender key distribution for `room` (the client core's
/// `client::room::distribution`), sealed once per frame and addressed through the pairwise
/// session of every target, in `Send` frames of at most [`DISTRIBUTION_CHUNK`] entries (as the
/// session engine sends it). Returns the encoded frames with their ids.
fn distribution_frames(
    m: &Member,
    room: &str,
    own: &SenderKeyState,
    targets: &[String],
) -> Result<Vec<(u64, Vec<u8>)>, LoadError> {
    let mut frames = Vec::with_capacity(targets.len().div_ceil(DISTRIBUTION_CHUNK));
    for chunk in targets.chunks(DISTRIBUTION_CHUNK) {
        let payload = room::distribution(own, room, unix_ms())?;
        let send = m.dev.seal_for(&payload, chunk.iter().map(String::as_str))?;
        let fid = m.conn.next_id();
        frames.push((fid, frame_bytes(fid, Body::Send(send))));
    }
    Ok(frames)
}

/// Sends `m`'s current sender key to `targets` (creating the key on first use).
fn distribute(m: &Member, sh: &Shared, targets: &[String]) -> Result<usize, LoadError> {
    let state = sh
        .state()
        .ok_or_else(|| LoadError::Protocol("no room yet".into()))?;
    let frames = {
        let mut own = lock(&m.own_key);
        if own.is_none() {
            *own = Some(room::new_sender_key(
                &state.room_id,
                m.device().0,
                unix_ms() / 1000,
            )?);
        }
        let own = own
            .as_ref()
            .ok_or_else(|| LoadError::Protocol("no sender key".into()))?;
        distribution_frames(m, &state.room_id, own, targets)?
    };
    let n = frames.len();
    for (id, bytes) in frames {
        m.fire_distribution(id, bytes)?;
    }
    Ok(n)
}

/// Decrypts a pairwise message (responding to a handshake if it starts one), opens its
/// envelope and installs the sender key distribution it carries. A member that just answered
/// a handshake replies with its own distribution, so the initiator's session is established
/// too (as happens in a room once everyone has spoken).
fn on_pairwise(m: &Member, sh: &Shared, d: &protocol::Delivery) -> Result<(), LoadError> {
    let (content, responded) = m.dev.open_pairwise(&sh.roots, d)?;
    let pairwise::Content::Distribution {
        room: room_id,
        bytes,
    } = content
    else {
        return Err(LoadError::Protocol("not a sender key distribution".into()));
    };
    let device: [u8; 16] = d
        .sender_device
        .as_slice()
        .try_into()
        .map_err(|_| LoadError::Protocol("a bad sender device id".into()))?;
    let (distribution_id, key) = room::accept_distribution(device, &room_id, &bytes)?;
    lock(&m.keys)
        .entry((device, distribution_id))
        .or_insert_with(|| (d.sender_user.clone(), key));
    sh.c.installed.fetch_add(1, Relaxed);
    if responded {
        distribute(m, sh, std::slice::from_ref(&d.sender_user))?;
    }
    Ok(())
}

/// Decrypts one room message through the client core, as the session engine does
/// (`client::room::parse_message`, `decrypt_key`, `open_meta`).
fn open_room_message(m: &Member, sh: &Shared, d: &protocol::Delivery) -> Result<(), LoadError> {
    let state = sh
        .state()
        .ok_or_else(|| LoadError::Protocol("a message for an unknown room".into()))?;
    if d.room_id != state.room_id {
        return Err(LoadError::Protocol("a message for another room".into()));
    }
    let msg = room::parse_message(d)?;
    let meta = {
        let mut keys = lock(&m.keys);
        let (owner, key) = keys
            .get_mut(&(msg.sender_device.0, msg.distribution_id))
            .ok_or_else(|| LoadError::Protocol("no sender key for this message".into()))?;
        room::decrypt_key(&state, owner, key, &msg, &d.body)?
    };
    room::open_meta(&meta, &state, d, unix_ms())?;
    Ok(())
}

fn on_room_message(m: &Member, sh: &Shared, d: &protocol::Delivery, late: bool) {
    let Some(k) = message_number(&d.message_id) else {
        sh.note("a room message without a bench number");
        return;
    };
    if !bit_insert(&mut lock(&m.seen_room), k) {
        return;
    }
    if late {
        sh.c.fetched.fetch_add(1, Relaxed);
    }
    if sh.mode.load(Relaxed) == MODE_DECRYPT
        && let Err(e) = open_room_message(m, sh, d)
    {
        sh.c.decrypt_errors.fetch_add(1, Relaxed);
        sh.note(e);
    }
    sh.c.deliveries.fetch_add(1, Relaxed);
    sh.received(k);
}

/// Handles one mailbox item; returns the sequence number to acknowledge.
fn on_delivery(m: &Member, sh: &Shared, d: protocol::Delivery, late: bool) -> Option<u64> {
    if d.kind == DeliveryKind::RoomMessage as i32 {
        on_room_message(m, sh, &d, late);
        return Some(d.seq);
    }
    if !lock(&m.seen_seqs).insert(d.seq) {
        return None;
    }
    if d.kind == DeliveryKind::RoomOp as i32 {
        let verified = SignedOp::decode(&d.payload)
            .map_err(LoadError::from)
            .and_then(|op| {
                let root = sh.roots.get(&op.op.actor).ok_or_else(|| {
                    LoadError::Protocol("a membership change by an unknown user".into())
                })?;
                if op.op.room_id != d.room_id {
                    return Err(LoadError::Protocol(
                        "a membership change for another room".into(),
                    ));
                }
                Ok(op.verify_author(root)?)
            });
        match verified {
            Ok(()) => {
                sh.c.ops_seen.fetch_add(1, Relaxed);
            }
            Err(e) => sh.note(e),
        }
    } else if d.kind == DeliveryKind::Message as i32
        && let Err(e) = on_pairwise(m, sh, &d)
    {
        sh.c.decrypt_errors.fetch_add(1, Relaxed);
        sh.note(e);
    }
    Some(d.seq)
}

impl Peer for Member {
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
        match body {
            Body::Error(e) => {
                match req {
                    Req::Room(k) => {
                        sh.c.send_errors.fetch_add(1, Relaxed);
                        sh.abandon(k);
                    }
                    Req::Distribution => {
                        sh.c.send_errors.fetch_add(1, Relaxed);
                        self.pending_sends.fetch_sub(1, Relaxed);
                    }
                    Req::Ack => {}
                }
                sh.note(client::refused("request", &e));
            }
            _ => {
                if matches!(req, Req::Distribution) {
                    self.pending_sends.fetch_sub(1, Relaxed);
                }
            }
        }
    }
}

/// Waits until `done()`, fetching every mailbox whenever nothing has arrived for a while.
async fn settle(
    members: &[Arc<Member>],
    sh: &Shared,
    what: &str,
    limit: Duration,
    done: impl Fn() -> bool,
) -> Result<(), LoadError> {
    let deadline = Instant::now() + limit;
    let mut last = (sh.activity(), Instant::now());
    while !done() {
        let now = Instant::now();
        if now >= deadline {
            let why = sh.first_error.get().unwrap_or_default();
            return Err(LoadError::Protocol(format!(
                "{what} did not finish in time {why}"
            )));
        }
        if members.iter().all(|m| m.conn.is_closed()) {
            return Err(LoadError::Unreachable(
                "the relay closed every connection".into(),
            ));
        }
        let a = sh.activity();
        if a != last.0 {
            last = (a, now);
        } else if now.duration_since(last.1) >= STALL_BEFORE_FETCH {
            client::fetch_mailboxes(members, sh).await;
            last.1 = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Builds and hands over room message number `k` (intended at `intended_us`).
fn send_one(
    creator: &Member,
    sh: &Shared,
    key: &mut SenderKeyState,
    state: &RoomState,
    intended_us: u64,
) {
    let k = sh.next_k.fetch_add(1, Relaxed);
    let slot = sh.slot(k);
    slot.intended_us.store(intended_us, Relaxed);
    slot.remaining.store(sh.recipients.load(Relaxed), Relaxed);
    slot.k.store(k, Release);
    sh.c.sent.fetch_add(1, Relaxed);
    let mut text = format!("{k} {intended_us} ");
    let pad = sh.text_len.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    let r = message_id(k)
        .and_then(|id| room_send(key, state, id, text))
        .and_then(|body| creator.conn.fire(body, Req::Room(k)));
    if let Err(e) = r {
        sh.c.send_errors.fetch_add(1, Relaxed);
        sh.note(e);
        sh.abandon(k);
    }
}

/// The sending thread: keeps `window` messages in flight until `end_us` (saturation), or sends
/// `rate` messages per second on a fixed timetable from `start_us` (open loop; a message is
/// never held back because earlier ones are still in flight).
fn drive(creator: &Member, sh: &Shared, start_us: u64, end_us: u64, load: Load) {
    *lock(&sh.driver) = Some(std::thread::current());
    let (Some(state), Some(mut key)) = (sh.state(), lock(&creator.own_key).take()) else {
        sh.note("no room or no sender key to send with");
        return;
    };
    match load {
        Load::Saturate(window) => {
            while sh.now_us() < end_us {
                if sh.in_flight() < window {
                    send_one(creator, sh, &mut key, &state, sh.now_us());
                } else {
                    std::thread::park_timeout(Duration::from_millis(1));
                }
            }
        }
        Load::Rate(rate) => {
            let interval_us = 1e6 / rate;
            let mut k: u64 = 0;
            loop {
                let intended = start_us + (k as f64 * interval_us) as u64;
                if intended >= end_us {
                    break;
                }
                let target = sh.t0 + Duration::from_micros(intended);
                let now = Instant::now();
                if target > now {
                    std::thread::sleep(target - now);
                }
                let in_window = intended >= sh.lat_start.load(Relaxed);
                if in_window {
                    lock(&sh.lag).saturating_record(sh.now_us().saturating_sub(intended).max(1));
                }
                if sh.in_flight() >= RING as u64 {
                    sh.c.not_sent.fetch_add(1, Relaxed);
                } else {
                    if in_window {
                        sh.c.lat_sent.fetch_add(1, Relaxed);
                    }
                    send_one(creator, sh, &mut key, &state, intended);
                }
                k += 1;
            }
        }
    }
    *lock(&creator.own_key) = Some(key);
    *lock(&sh.driver) = None;
}

#[derive(Clone, Copy)]
enum Load {
    Saturate(u64),
    Rate(f64),
}

/// Raw figures of one measured run.
struct Window {
    seconds: f64,
    deliveries: u64,
    complete: u64,
    sent: u64,
    incomplete: u64,
    fetched: u64,
    send_errors: u64,
    rate_limited: u64,
    decrypt_errors: u64,
    relay_cpu_us: Option<f64>,
    relay_wait_us: Option<f64>,
    self_cpu_us: Option<f64>,
}

impl Window {
    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.seconds
    }

    fn percent(&self, us: Option<f64>) -> Option<f64> {
        us.map(|us| us / (self.seconds * 1e6) * 100.0)
    }

    fn relay_us_per_delivery(&self) -> Option<f64> {
        self.relay_cpu_us
            .filter(|_| self.deliveries > 0)
            .map(|us| us / self.deliveries as f64)
    }
}

/// A snapshot of the counters the windows are differences of.
struct Marks {
    deliveries: u64,
    complete: u64,
    sent: u64,
    fetched: u64,
    send_errors: u64,
    rate_limited: u64,
    decrypt_errors: u64,
    relay_cpu: Option<u64>,
    relay_wait: Option<u64>,
    self_cpu: Option<u64>,
}

fn marks(sh: &Shared, relay_pid: Option<u32>) -> Marks {
    let c = &sh.c;
    Marks {
        deliveries: c.deliveries.load(Relaxed),
        complete: c.complete.load(Relaxed),
        sent: c.sent.load(Relaxed),
        fetched: c.fetched.load(Relaxed),
        send_errors: c.send_errors.load(Relaxed),
        rate_limited: c.rate_limited.load(Relaxed),
        decrypt_errors: c.decrypt_errors.load(Relaxed),
        relay_cpu: relay_pid.and_then(client::process_cpu_us),
        relay_wait: relay_pid.and_then(client::process_runqueue_wait_us),
        self_cpu: client::process_cpu_us(std::process::id()),
    }
}

/// Runs one load phase: warm-up, the measured window, then a drain until every message
/// reached every member (or `drain` ran out).
async fn phase(
    members: &[Arc<Member>],
    sh: &Arc<Shared>,
    opts: &Options,
    relay_pid: Option<u32>,
    load: Load,
    measured: Duration,
) -> Result<Window, LoadError> {
    let creator = members
        .first()
        .cloned()
        .ok_or_else(|| LoadError::Usage("no members".into()))?;
    let start = sh.now_us() + 20_000;
    let window_start = start + client::micros(opts.warmup);
    let window_end = window_start + client::micros(measured);
    if matches!(load, Load::Rate(_)) {
        sh.lat_start.store(window_start, Relaxed);
        sh.lat_end.store(window_end, Relaxed);
    }
    let start_marks = marks(sh, relay_pid);
    let sh2 = sh.clone();
    let driver = tokio::task::spawn_blocking(move || {
        drive(&creator, &sh2, start, window_end, load);
    });
    tokio::time::sleep_until((sh.t0 + Duration::from_micros(window_start)).into()).await;
    let a = marks(sh, relay_pid);
    tokio::time::sleep_until((sh.t0 + Duration::from_micros(window_end)).into()).await;
    let b = marks(sh, relay_pid);
    driver
        .await
        .map_err(|e| LoadError::Protocol(format!("the sending thread failed: {e}")))?;
    let drained = settle(members, sh, "the drain", opts.drain, || sh.in_flight() == 0).await;
    sh.lat_start.store(u64::MAX, Relaxed);
    sh.lat_end.store(u64::MAX, Relaxed);
    let end = marks(sh, relay_pid);
    let incomplete = sh.in_flight();
    if drained.is_err() {
        sh.note(format!(
            "{incomplete} room messages had not reached every member after the drain"
        ));
        // Whatever is still missing is not waited for again.
        let k_end = sh.next_k.load(Relaxed);
        for k in k_end.saturating_sub(RING as u64)..k_end {
            sh.abandon(k);
        }
    }
    Ok(Window {
        seconds: (window_end - window_start) as f64 / 1e6,
        deliveries: b.deliveries - a.deliveries,
        complete: b.complete - a.complete,
        sent: end.sent - start_marks.sent,
        incomplete,
        fetched: end.fetched - start_marks.fetched,
        send_errors: end.send_errors - start_marks.send_errors,
        rate_limited: end.rate_limited - start_marks.rate_limited,
        decrypt_errors: end.decrypt_errors - start_marks.decrypt_errors,
        relay_cpu_us: client::delta(a.relay_cpu, b.relay_cpu),
        relay_wait_us: client::delta(a.relay_wait, b.relay_wait),
        self_cpu_us: client::delta(a.self_cpu, b.self_cpu),
    })
}

fn fanout_run(w: &Window, mode: u8, window: usize) -> FanoutRun {
    FanoutRun {
        members_do: if mode == MODE_DECRYPT {
            "decrypting"
        } else {
            "counting"
        },
        window,
        duration_s: w.seconds,
        msgs_per_sec: w.per_sec(w.complete),
        deliveries: w.deliveries,
        deliveries_per_sec: w.per_sec(w.deliveries),
        relay_cpu_us_per_delivery: w.relay_us_per_delivery(),
        relay_cpu_percent: w.percent(w.relay_cpu_us),
        relay_runqueue_wait_percent: w.percent(w.relay_wait_us),
        client_cpu_percent: w.percent(w.self_cpu_us),
        client_cpu_us_per_delivery: w
            .self_cpu_us
            .filter(|_| w.deliveries > 0)
            .map(|us| us / w.deliveries as f64),
        sent: w.sent,
        incomplete: w.incomplete,
        fetched_after_dropped_push: w.fetched,
        send_errors: w.send_errors,
        rate_limited: w.rate_limited,
        decrypt_errors: w.decrypt_errors,
    }
}

/// Client CPU per room send in `small` and `large` (alternating batches; medians).
fn send_cpu(
    device: DeviceId,
    small: &RoomState,
    large: &RoomState,
    text_len: usize,
) -> Result<SendCpu, LoadError> {
    // Keys of their own: the live key's chain must not jump ahead of what members expect.
    let mut keys = [
        room::new_sender_key(&small.room_id, device.0, unix_ms() / 1000)?,
        room::new_sender_key(&large.room_id, device.0, unix_ms() / 1000)?,
    ];
    let states = [small, large];
    let text = "x".repeat(text_len);
    let mut per_op: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut frame_len = 0;
    let mut thread_clock = true;
    for _ in 0..SEND_CPU_ROUNDS {
        for (i, (key, state)) in keys.iter_mut().zip(states).enumerate() {
            let ids = (0..SEND_CPU_ITERS)
                .map(|k| message_id(k as u64))
                .collect::<Result<Vec<_>, _>>()?;
            let (r, m) = measure(|| -> Result<usize, LoadError> {
                let mut len = 0;
                for id in ids {
                    let body = room_send(key, state, id, text.clone())?;
                    len = std::hint::black_box(frame_bytes(7, body)).len();
                }
                Ok(len)
            });
            frame_len = r?;
            thread_clock &= m.cpu.is_some();
            let t = m.cpu.unwrap_or(m.wall);
            per_op[i].push(t.as_nanos() as f64 / 1000.0 / SEND_CPU_ITERS as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let [mut a, mut b] = per_op;
    let (small_us, large_us) = (median(&mut a), median(&mut b));
    let ratio = if small_us > 0.0 {
        large_us / small_us
    } else {
        0.0
    };
    Ok(SendCpu {
        small_members: small.members.len(),
        large_members: large.members.len(),
        small_us,
        large_us,
        ratio,
        ratio_target: SEND_RATIO_TARGET,
        target_met: ratio > 0.0 && ratio <= SEND_RATIO_TARGET,
        frame_bytes: frame_len,
        sends_per_room: SEND_CPU_ITERS * SEND_CPU_ROUNDS,
        clock: if thread_clock { "thread" } else { "wall" },
    })
}

/// Submits a signed op as `m` and returns the op.
async fn submit(m: &Member, op: membership::MembershipOp) -> Result<SignedOp, LoadError> {
    let signed = SignedOp::sign(op, &m.dev.id.keys.signing)?;
    match m
        .conn
        .request(
            "membership change",
            Body::SubmitRoomOp(protocol::SubmitRoomOp {
                room_id: signed.op.room_id.clone(),
                op: signed.encode()?,
            }),
        )
        .await?
    {
        Body::RoomOpOk(_) => Ok(signed),
        _ => Err(LoadError::Protocol(
            "unexpected answer to SubmitRoomOp".into(),
        )),
    }
}

/// Creates a room of `creator` and `others`; returns its verified state.
async fn create_room(
    creator: &Member,
    sh: &Shared,
    others: Vec<String>,
    max_members: usize,
) -> Result<RoomState, LoadError> {
    let op = membership::MembershipOp {
        room_id: membership::new_room_id(RoomKind::Room)?,
        seq: 0,
        prev: [0; 32],
        actor: creator.name().to_owned(),
        actor_cert: creator.dev.id.cert.clone(),
        at_ms: unix_ms(),
        kind: OpKind::Create {
            kind: RoomKind::Room,
            title: "bench".into(),
            description: String::new(),
            members: others,
        },
    };
    let signed = submit(creator, op).await?;
    let root = root_of(sh, creator.name())?;
    RoomState::genesis(&signed, root, max_members)
        .map_err(|e| LoadError::Protocol(format!("the room's creation does not verify: {e}")))
}

fn root_of<'a>(sh: &'a Shared, user: &str) -> Result<&'a RootPublicKey, LoadError> {
    sh.roots
        .get(user)
        .ok_or_else(|| LoadError::Protocol(format!("unknown user {user}")))
}

/// `s` runs PQXDH with every target (`FetchKeys`, then an initial message carrying its sender
/// key distribution); each target answers with its own distribution.
async fn introduce(
    s: &Arc<Member>,
    targets: &[Arc<Member>],
    members: &[Arc<Member>],
    sh: &Shared,
) -> Result<(), LoadError> {
    let fetched: Vec<Result<(String, crate::crypto::prekeys::PrekeyBundle), LoadError>> =
        futures_util::stream::iter(targets.iter().map(|t| {
            let s = s.clone();
            let peer = t.name().to_owned();
            async move {
                let bundle = s.conn.fetch_bundle(&peer, root_of(sh, &peer)?).await?;
                Ok((peer, bundle))
            }
        }))
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    let mut names = Vec::with_capacity(fetched.len());
    for r in fetched {
        let (peer, bundle) = r?;
        s.dev.initiate(&peer, root_of(sh, &peer)?, &bundle)?;
        names.push(peer);
    }
    let before = sh.c.installed.load(Relaxed);
    distribute(s, sh, &names)?;
    // Every target installs s's key, and s installs every target's answer.
    let want = before + 2 * names.len() as u64;
    settle(members, sh, "a round of handshakes", SETUP_TIMEOUT, || {
        sh.c.installed.load(Relaxed) >= want
    })
    .await
}

/// The creator switches to a fresh sender key and sends it to every other member.
async fn fresh_creator_key(members: &[Arc<Member>], sh: &Shared) -> Result<(), LoadError> {
    let (creator, others) = members
        .split_first()
        .ok_or_else(|| LoadError::Usage("no members".into()))?;
    let state = sh
        .state()
        .ok_or_else(|| LoadError::Protocol("no room".into()))?;
    *lock(&creator.own_key) = Some(room::new_sender_key(
        &state.room_id,
        creator.device().0,
        unix_ms() / 1000,
    )?);
    let names: Vec<String> = others.iter().map(|m| m.name().to_owned()).collect();
    let want = sh.c.installed.load(Relaxed) + names.len() as u64;
    distribute(creator, sh, &names)?;
    settle(
        members,
        sh,
        "a sender key distribution",
        SETUP_TIMEOUT,
        || sh.c.installed.load(Relaxed) >= want,
    )
    .await
}

/// Removes the last member, then lets the rotating senders rotate one after the other.
async fn rotation(
    members: &[Arc<Member>],
    sh: &Shared,
    opts: &Options,
    relay_pid: Option<u32>,
) -> Result<Rotation, LoadError> {
    let (creator, victim) = match members {
        [c, .., v] => (c.clone(), v.clone()),
        _ => return Err(LoadError::Usage("a rotation needs 3 members".into())),
    };
    let state = sh
        .state()
        .ok_or_else(|| LoadError::Protocol("no room".into()))?;
    let op = state.next_op(
        creator.name(),
        &creator.dev.id.cert,
        unix_ms(),
        OpKind::Remove {
            users: vec![victim.name().to_owned()],
        },
    );
    let ops_before = sh.c.ops_seen.load(Relaxed);
    let signed = submit(&creator, op).await?;
    let mut next = (*state).clone();
    next.apply(&signed, root_of(sh, creator.name())?, opts.members)
        .map_err(|e| LoadError::Protocol(format!("the removal does not verify: {e}")))?;
    sh.set_state(next.clone());
    // Every remaining member but the creator (and the removed one) verifies the change.
    let others = members.len().saturating_sub(2) as u64;
    settle(members, sh, "the removal", SETUP_TIMEOUT, || {
        sh.c.ops_seen.load(Relaxed) >= ops_before + others
    })
    .await?;

    let senders: Vec<Arc<Member>> = members
        .iter()
        .skip(1)
        .take(opts.rotating_senders)
        .cloned()
        .collect();
    let mut cpu_ms = Vec::new();
    let mut bytes = Vec::new();
    let mut to_stored = Vec::new();
    let mut to_installed = Vec::new();
    let mut relay_ms = Vec::new();
    let mut frames_per = 0;
    let mut entries = 0;
    let installed_before = sh.c.installed.load(Relaxed);
    for r in &senders {
        let targets: Vec<String> = next
            .members
            .keys()
            .filter(|u| u.as_str() != r.name())
            .cloned()
            .collect();
        entries = targets.len();
        let want = sh.c.installed.load(Relaxed) + targets.len() as u64;
        let relay0 = relay_pid.and_then(client::process_cpu_us);
        let t0 = Instant::now();
        let (r2, room) = (r.clone(), next.room_id.clone());
        let (built, m) = tokio::task::spawn_blocking(move || {
            measure(|| -> Result<_, LoadError> {
                let fresh = room::new_sender_key(&room, r2.device().0, unix_ms() / 1000)?;
                let frames = distribution_frames(&r2, &room, &fresh, &targets)?;
                Ok((fresh, frames))
            })
        })
        .await
        .map_err(|e| LoadError::Protocol(format!("the rotation thread failed: {e}")))?;
        let (fresh, frames) = built?;
        *lock(&r.own_key) = Some(fresh);
        cpu_ms.push(m.cpu.unwrap_or(m.wall).as_secs_f64() * 1000.0);
        frames_per = frames.len();
        bytes.push(frames.iter().map(|(_, b)| b.len()).sum::<usize>() as f64);
        for (id, b) in frames {
            r.fire_distribution(id, b)?;
        }
        settle(members, sh, "a rotation's sends", SETUP_TIMEOUT, || {
            r.pending_sends.load(Relaxed) == 0
        })
        .await?;
        to_stored.push(t0.elapsed().as_secs_f64() * 1000.0);
        settle(members, sh, "a rotation", SETUP_TIMEOUT, || {
            sh.c.installed.load(Relaxed) >= want
        })
        .await?;
        to_installed.push(t0.elapsed().as_secs_f64() * 1000.0);
        if let (Some(a), Some(b)) = (relay0, relay_pid.and_then(client::process_cpu_us)) {
            relay_ms.push(b.saturating_sub(a) as f64 / 1000.0);
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let remaining = next.members.len();
    let cpu_mean = mean(&cpu_ms);
    let bytes_mean = mean(&bytes);
    Ok(Rotation {
        remove_op_bytes: signed.encode()?.len(),
        remaining_members: remaining,
        rotating_senders: senders.len(),
        entries_per_rotation: entries,
        frames_per_rotation: frames_per,
        cpu_ms_mean: cpu_mean,
        cpu_ms_min: cpu_ms
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .min(cpu_mean),
        cpu_ms_max: cpu_ms.iter().copied().fold(0.0, f64::max),
        bytes_mean,
        bytes_per_entry: if entries > 0 {
            bytes_mean / entries as f64
        } else {
            0.0
        },
        wall_ms_to_stored_mean: mean(&to_stored),
        wall_ms_to_installed_mean: mean(&to_installed),
        relay_cpu_ms_mean: (relay_ms.len() == senders.len() && !relay_ms.is_empty())
            .then(|| mean(&relay_ms)),
        installed: sh.c.installed.load(Relaxed) - installed_before,
        expected_installs: (senders.len() * entries) as u64,
        all_senders_cpu_s: cpu_mean / 1000.0 * remaining as f64,
        all_senders_bytes: bytes_mean * remaining as f64,
    })
}

/// Runs the scenario: starts (or checks) the relay, sets up the room, measures, reports.
///
/// # Errors
/// [`LoadError`] if an option is out of range, or the relay cannot be started or reached or
/// refuses set-up; failures during the measured runs are counted in the report instead.
pub async fn run(opts: &Options) -> Result<Report, LoadError> {
    if !(3..=MAX_MEMBERS).contains(&opts.members) {
        return Err(LoadError::Usage(format!(
            "--members must be between 3 and {MAX_MEMBERS}"
        )));
    }
    if !(opts.rate.is_finite() && opts.rate > 0.0) {
        return Err(LoadError::Usage("--rate must be positive".into()));
    }
    if opts.duration.is_zero() || opts.saturate_duration.is_zero() {
        return Err(LoadError::Usage("durations must be positive".into()));
    }
    if opts.window == 0 || opts.rotating_senders == 0 {
        return Err(LoadError::Usage(
            "--window and --rotating-senders must be at least 1".into(),
        ));
    }
    let opts = Options {
        rotating_senders: opts.rotating_senders.min(opts.members - 2),
        ..opts.clone()
    };
    let max_members = opts
        .members
        .max(crate::relay::DEFAULT_MAX_ROOM_MEMBERS as usize);
    let extra = [
        "--rate".to_owned(),
        SPAWNED_RELAY_RATE.to_string(),
        "--max-room-members".to_owned(),
        max_members.to_string(),
    ];
    client::with_relay(&opts.relay, &extra, async |relay, _| {
        run_with(relay, &opts).await
    })
    .await
    .map(|(r, load_average_before)| Report {
        load_average_before,
        ..r
    })
}

async fn run_with(relay: &Relay, opts: &Options) -> Result<Report, LoadError> {
    let setup_start = Instant::now();
    let prefix = client::run_prefix()?;
    let (_, invites) = client::admin_invites(relay, &prefix, opts.members).await?;
    let ids = (0..opts.members)
        .map(|i| Identity::generate(&format!("{prefix}-m{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let roots = client::roots(&ids);
    let registered = client::register_all(&relay.url, ids, invites).await?;

    let hist = client::histogram()?;
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        roots,
        room: RwLock::new(None),
        mode: AtomicU8::new(MODE_COUNT),
        recipients: AtomicU32::new(u32::try_from(opts.members - 1).unwrap_or(u32::MAX)),
        slots: (0..RING)
            .map(|_| Slot {
                k: AtomicU64::new(u64::MAX),
                remaining: AtomicU32::new(0),
                intended_us: AtomicU64::new(0),
            })
            .collect(),
        next_k: AtomicU64::new(0),
        lat_start: AtomicU64::new(u64::MAX),
        lat_end: AtomicU64::new(u64::MAX),
        c: Counters::default(),
        lag: Mutex::new(hist.clone()),
        first: Mutex::new(hist.clone()),
        hist: Mutex::new(hist),
        driver: Mutex::new(None),
        first_error: FirstError::default(),
        text_len: opts.text_len,
    });

    let members = Peers::start(registered, &sh, |dev, conn| Member {
        dev,
        own_key: Mutex::new(None),
        keys: Mutex::new(HashMap::new()),
        seen_room: Mutex::new(Vec::new()),
        seen_seqs: Mutex::new(HashSet::new()),
        pending_sends: AtomicU64::new(0),
        conn,
    });
    let result = measure_all(members.all(), &sh, opts, relay.pid, setup_start)
        .await
        .map(|r| Report {
            // Before the connections close (which fails what is still queued).
            first_error: sh.first_error.get(),
            ..r
        });
    members.shut_down().await;
    result
}

async fn measure_all(
    members: &[Arc<Member>],
    sh: &Arc<Shared>,
    opts: &Options,
    relay_pid: Option<u32>,
    setup_start: Instant,
) -> Result<Report, LoadError> {
    let creator = members
        .first()
        .cloned()
        .ok_or_else(|| LoadError::Usage("no members".into()))?;
    let names: Vec<String> = members.iter().map(|m| m.name().to_owned()).collect();
    let big = create_room(&creator, sh, names[1..].to_vec(), opts.members).await?;
    sh.set_state(big.clone());
    let small = create_room(&creator, sh, names[1..2].to_vec(), opts.members).await?;
    // Every member verifies the big room's creation (and member 1 the small one's).
    let others = members.len() as u64 - 1;
    settle(members, sh, "the room's creation", SETUP_TIMEOUT, || {
        sh.c.ops_seen.load(Relaxed) > others
    })
    .await?;

    // Pairwise sessions: the creator and the rotating senders with everyone after them.
    let introducers = 1 + opts.rotating_senders;
    for i in 0..introducers {
        introduce(&members[i], &members[i + 1..], members, sh).await?;
        // Members before i already met it (it answered their handshakes).
        for m in &members[..i] {
            if !lock(&members[i].dev.sessions).contains_key(m.name()) {
                return Err(LoadError::Protocol("a session is missing".into()));
            }
        }
    }
    let setup_s = setup_start.elapsed().as_secs_f64();

    let device = creator.device();
    let (s2, b2, text_len) = (small.clone(), big.clone(), opts.text_len);
    let send_cpu = tokio::task::spawn_blocking(move || send_cpu(device, &s2, &b2, text_len))
        .await
        .map_err(|e| LoadError::Protocol(format!("the measuring thread failed: {e}")))??;

    let window = opts.window;
    sh.mode.store(MODE_COUNT, Relaxed);
    let w = phase(
        members,
        sh,
        opts,
        relay_pid,
        Load::Saturate(window as u64),
        opts.saturate_duration,
    )
    .await?;
    let counting = fanout_run(&w, MODE_COUNT, window);

    fresh_creator_key(members, sh).await?;
    sh.mode.store(MODE_DECRYPT, Relaxed);
    let w = phase(
        members,
        sh,
        opts,
        relay_pid,
        Load::Saturate(window as u64),
        opts.saturate_duration,
    )
    .await?;
    let decrypting = fanout_run(&w, MODE_DECRYPT, window);

    fresh_creator_key(members, sh).await?;
    let decrypt_errors0 = sh.c.decrypt_errors.load(Relaxed);
    let w = phase(
        members,
        sh,
        opts,
        relay_pid,
        Load::Rate(opts.rate),
        opts.duration,
    )
    .await?;
    let hist = lock(&sh.hist).clone();
    let first = lock(&sh.first).clone();
    let lag = lock(&sh.lag).clone();
    let q = client::quantile_ms;
    let lat_sent = sh.c.lat_sent.load(Relaxed);
    let lat_done = sh.c.lat_done.load(Relaxed);
    let latency = Latency {
        rate_msgs_per_sec: opts.rate,
        duration_s: w.seconds,
        sent: lat_sent,
        delivered_to_all: lat_done,
        incomplete: lat_sent.saturating_sub(lat_done),
        last_member_p50_ms: q(&hist, 0.5),
        last_member_p90_ms: q(&hist, 0.9),
        last_member_p99_ms: q(&hist, 0.99),
        last_member_max_ms: client::max_ms(&hist),
        first_member_p50_ms: q(&first, 0.5),
        first_member_p99_ms: q(&first, 0.99),
        deliveries_per_sec: w.per_sec(w.deliveries),
        relay_cpu_us_per_delivery: w.relay_us_per_delivery(),
        relay_cpu_percent: w.percent(w.relay_cpu_us),
        send_lag_p99_ms: q(&lag, 0.99),
        decrypt_errors: sh.c.decrypt_errors.load(Relaxed) - decrypt_errors0,
    };

    let rotation = rotation(members, sh, opts, relay_pid).await?;
    let relay_mem = relay_pid.and_then(client::process_memory_kib);
    Ok(Report {
        scenario: "room",
        relay: opts.relay.kind(),
        members: opts.members,
        setup_s,
        send_cpu,
        fanout_counting: counting,
        fanout_decrypting: decrypting,
        latency,
        rotation,
        relay_rss_mib: relay_mem.map(|(rss, _)| rss as f64 / 1024.0),
        relay_peak_rss_mib: relay_mem.map(|(_, hwm)| hwm as f64 / 1024.0),
        client_peak_rss_mib: peak_rss_kib().map(|k| k as f64 / 1024.0),
        load_average_before: None,
        first_error: None,
    })
}

fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_fanout(out: &mut dyn Write, label: &str, f: &FanoutRun) -> io::Result<()> {
    writeln!(
        out,
        "    {label:<24} {:>9} deliveries/s ({:.1} msgs/s)   relay {} us CPU/delivery ({} % of a core, waited for a CPU {} %)",
        thousands(f.deliveries_per_sec),
        f.msgs_per_sec,
        opt(f.relay_cpu_us_per_delivery, 2),
        opt(f.relay_cpu_percent, 0),
        opt(f.relay_runqueue_wait_percent, 0),
    )?;
    writeln!(
        out,
        "    {:<24} load generator {} us CPU/delivery ({} % of a core)",
        "",
        opt(f.client_cpu_us_per_delivery, 2),
        opt(f.client_cpu_percent, 0),
    )?;
    if f.incomplete + f.send_errors + f.decrypt_errors + f.fetched_after_dropped_push > 0 {
        writeln!(
            out,
            "    {:<24} incomplete {}, send errors {}, decrypt errors {}, fetched after a dropped push {}",
            "", f.incomplete, f.send_errors, f.decrypt_errors, f.fetched_after_dropped_push
        )?;
    }
    Ok(())
}

/// Prints the report as a table.
///
/// # Errors
/// I/O errors of `out`.
pub fn print(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "cinder bench room ({} members, {} relay; set-up {:.1} s, not measured)",
        r.members, r.relay, r.setup_s
    )?;
    let s = &r.send_cpu;
    writeln!(
        out,
        "  client CPU per room send     {} members {:.1} us, {} members {:.1} us: ratio {:.2} (target <= {:.1}: {}; {} bytes/frame)",
        s.small_members,
        s.small_us,
        s.large_members,
        s.large_us,
        s.ratio,
        s.ratio_target,
        verdict(s.target_met),
        s.frame_bytes
    )?;
    writeln!(
        out,
        "  relay fan-out at saturation ({} recipients, {} messages in flight, {:.0} s each):",
        r.members - 1,
        r.fanout_counting.window,
        r.fanout_counting.duration_s
    )?;
    print_fanout(out, "members counting frames", &r.fanout_counting)?;
    print_fanout(out, "members decrypting", &r.fanout_decrypting)?;
    let l = &r.latency;
    writeln!(
        out,
        "  latency at {} msgs/s ({:.0} s)  send to last member decrypted p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} ms ({} of {} reached everyone)",
        l.rate_msgs_per_sec,
        l.duration_s,
        l.last_member_p50_ms,
        l.last_member_p90_ms,
        l.last_member_p99_ms,
        l.last_member_max_ms,
        l.delivered_to_all,
        l.sent
    )?;
    writeln!(
        out,
        "                               first member p50 {:.2} / p99 {:.2} ms; {} deliveries/s, relay {} us CPU/delivery",
        l.first_member_p50_ms,
        l.first_member_p99_ms,
        thousands(l.deliveries_per_sec),
        opt(l.relay_cpu_us_per_delivery, 2)
    )?;
    let t = &r.rotation;
    writeln!(
        out,
        "  rotation after a removal     {} of {} remaining members rotated, {} entries in {} frames each",
        t.rotating_senders, t.remaining_members, t.entries_per_rotation, t.frames_per_rotation
    )?;
    writeln!(
        out,
        "    per remaining sender       {:.1} ms CPU (min {:.1}, max {:.1}), {} bytes ({:.0} per entry); stored in {:.0} ms, installed by all in {:.0} ms",
        t.cpu_ms_mean,
        t.cpu_ms_min,
        t.cpu_ms_max,
        thousands(t.bytes_mean),
        t.bytes_per_entry,
        t.wall_ms_to_stored_mean,
        t.wall_ms_to_installed_mean
    )?;
    writeln!(
        out,
        "    all {} remaining senders  {:.2} s CPU, {:.1} MB (extrapolated); relay {} ms CPU per rotation",
        t.remaining_members,
        t.all_senders_cpu_s,
        t.all_senders_bytes / 1e6,
        opt(t.relay_cpu_ms_mean, 1)
    )?;
    writeln!(
        out,
        "  relay RSS                    {} MiB now, {} MiB peak; load generator peak {} MiB",
        opt(r.relay_rss_mib, 1),
        opt(r.relay_peak_rss_mib, 1),
        opt(r.client_peak_rss_mib, 1)
    )?;
    writeln!(
        out,
        "  load average before the run  {}   (other processes share the cores)",
        opt(r.load_average_before, 2)
    )?;
    if let Some(e) = &r.first_error {
        writeln!(out, "  first error                  {e}")?;
    }
    Ok(())
}

/// Writes the report: one JSON object with `json`, else the table.
///
/// # Errors
/// I/O or serialisation errors of `out`.
pub fn write(r: &Report, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)
    } else {
        print(r, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_set_remembers() {
        let mut b = Vec::new();
        assert!(bit_insert(&mut b, 0));
        assert!(bit_insert(&mut b, 130));
        assert!(!bit_insert(&mut b, 130));
        assert!(!bit_insert(&mut b, 0));
        assert!(bit_insert(&mut b, 64));
    }

    #[test]
    fn message_numbers_round_trip() {
        let id = message_id(123_456).unwrap();
        assert_eq!(message_number(&id), Some(123_456));
        assert_eq!(message_number(&[1, 2]), None);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
