//! The light load-generating client shared by `cinder bench dm`, `cinder bench room` and
//! `cinder bench idle`, and the relay process they measure.
//!
//! The client speaks the wire protocol directly over tokio-tungstenite and keeps keys and
//! sessions in memory: these scenarios measure the relay, not the client's durable cache, so the
//! SQLCipher session engine stays out of the way. The protocol is the real thing: sessions are
//! started, messages sealed and deliveries opened by the client core ([`crate::client`]), the
//! same code the session engine drives, so the relay sees exactly the frames and sizes a real
//! client sends and the figures cannot drift from the client's. Rate limits are honoured by
//! the core's one rule ([`crate::client::retry`]).
//!
//! After set-up each user's connection is split into a writer task, which batches whatever is
//! queued into one flush, and a reader task, which hands pushes and answers to the scenario
//! (the [`Peer`] trait) and acknowledges mailbox items, batched while further frames are
//! already waiting. Requests are pipelined ([`Conn::fire`]) or awaited ([`Conn::request`]).
//!
//! By default the relay runs as a separate process (`cinder serve` from the same binary, on a
//! free loopback port, with a temporary data directory) so that its CPU time and memory can be
//! read from `/proc/<pid>` without counting the load generator. Benchmarks only ever target
//! loopback addresses.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{ClientError, pairwise, retry};
use crate::config::SECRET_ENV;
use crate::crypto::CryptoError;
use crate::crypto::envelope::Payload;
use crate::crypto::handshake::{PairwiseMessage, Session};
use crate::crypto::identity::{
    DeviceCertificate, DeviceId, DeviceKeys, DeviceRole, RootPublicKey, UserRootKey,
};
use crate::crypto::prekeys::{self, DevicePrekeys, PrekeyBundle};
use crate::protocol::{
    self, DEFAULT_MAX_FRAME, ErrorCode, Frame, ServerHello, decode_frame, encode_frame, frame::Body,
};
use crate::session::{otk_msg, pq_msg, spk_msg};

/// A client WebSocket to the relay.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting (TCP, WebSocket upgrade, `ServerHello`) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one set-up request may wait for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most acknowledgements batched into one `Ack`.
const MAX_ACK_BATCH: usize = 64;
/// Registrations running at once during set-up.
const REGISTER_CONCURRENCY: usize = 16;
/// How long a spawned relay may take to say it is listening.
const RELAY_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a spawned relay may take to shut down after SIGTERM before it is killed.
const RELAY_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What can go wrong while generating load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An option is out of range or a target is not allowed.
    #[error("{0}")]
    Usage(String),
    /// The relay could not be reached or the connection dropped.
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    /// The relay answered a request with an error.
    #[error("relay refused {what}: {code} ({message})")]
    Refused {
        /// The request.
        what: &'static str,
        /// The wire error code.
        code: String,
        /// The relay's sentence.
        message: String,
    },
    /// The relay answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The relay process could not be started or failed.
    #[error("relay process: {0}")]
    Process(String),
    /// A crypto operation failed.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ClientError> for LoadError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Crypto(c) => Self::Crypto(c),
            ClientError::Rejected(s) => Self::Protocol(s),
        }
    }
}

/// Locks a mutex, ignoring poisoning (the data is still valid for a benchmark).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which relay a scenario loads.
#[derive(Clone, Debug)]
pub enum RelayTarget {
    /// Start `exe serve --listen 127.0.0.1:0 --data TMPDIR` as a child process.
    Spawn {
        /// The `cinder` binary (`std::env::current_exe()` for the CLI; tests pass
        /// `CARGO_BIN_EXE_cinder`).
        exe: PathBuf,
    },
    /// A relay that is already running on a loopback address.
    External {
        /// `ws://127.0.0.1:PORT` (or another loopback address).
        url: String,
        /// An unused admin invite of that relay (the scenario registers its own admin).
        invite: String,
        /// The relay's process id, for CPU and memory figures.
        pid: Option<u32>,
    },
}

impl RelayTarget {
    /// How reports name the target: "spawned" (a child process) or "external".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Spawn { .. } => "spawned",
            Self::External { .. } => "external",
        }
    }
}

/// Checks that `url` is `ws://` or `wss://` to a loopback host: load never leaves the machine.
///
/// # Errors
/// [`LoadError::Usage`] otherwise.
pub fn check_loopback_url(url: &str) -> Result<(), LoadError> {
    let bad = || {
        LoadError::Usage(format!(
            "benchmarks only target a relay on this machine: {url:?} is not a ws:// or wss:// URL to a loopback address"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "ws" && scheme != "wss" {
        return Err(bad());
    }
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { Ok(()) } else { Err(bad()) }
}

/// The relay under test: its URL, an admin invite, and (when known) its process id.
pub struct Relay {
    /// The URL clients connect to.
    pub url: String,
    /// The admin invite the scenario registers its admin with.
    pub admin_invite: String,
    /// The relay's process id, when its CPU and memory can be read.
    pub pid: Option<u32>,
    child: Option<ChildRelay>,
}

struct ChildRelay {
    child: Child,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The invite is a credential.
        f.debug_struct("Relay")
            .field("url", &self.url)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Starts the relay process (for [`RelayTarget::Spawn`], with `extra_args` after `serve`'s
    /// own) or checks the external relay's URL.
    ///
    /// # Errors
    /// [`LoadError::Usage`] for a non-loopback URL, [`LoadError::Process`] if the child does not
    /// come up.
    pub async fn start(target: &RelayTarget, extra_args: &[String]) -> Result<Self, LoadError> {
        match target {
            RelayTarget::External { url, invite, pid } => {
                check_loopback_url(url)?;
                Ok(Self {
                    url: url.clone(),
                    admin_invite: invite.trim().to_owned(),
                    pid: *pid,
                    child: None,
                })
            }
            RelayTarget::Spawn { exe } => {
                let exe = exe.clone();
                let extra = extra_args.to_vec();
                tokio::task::spawn_blocking(move || spawn_relay(exe, &extra))
                    .await
                    .map_err(|e| LoadError::Process(format!("start-up task failed: {e}")))?
            }
        }
    }

    /// Stops a spawned relay gracefully (SIGTERM, then SIGKILL after a timeout); an external
    /// relay is left running.
    pub async fn stop(mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.child.id();
        // `kill` keeps this free of unsafe signal calls.
        let _ = Command::new("kill")
            .env_remove(SECRET_ENV[0])
            .env_remove(SECRET_ENV[1])
            .arg("-TERM")
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = tokio::time::Instant::now() + RELAY_STOP_TIMEOUT;
        loop {
            match c.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break,
            }
        }
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

/// Runs a scenario against its relay: raises this process's open-file limit (a spawned relay
/// inherits it), reads the machine's load average, starts the relay (with `extra_args` as for
/// [`Relay::start`]), runs `f` with it and the open-file limits now in force, and stops the
/// relay whatever `f` returned. Returns `f`'s result and the load average before the run.
///
/// # Errors
/// As [`Relay::start`], or `f`'s error.
pub async fn with_relay<T>(
    target: &RelayTarget,
    extra_args: &[String],
    f: impl AsyncFnOnce(&Relay, Option<(u64, u64)>) -> Result<T, LoadError>,
) -> Result<(T, Option<f64>), LoadError> {
    let open_files = raise_open_files_limit();
    let load_average = load_average();
    let relay = Relay::start(target, extra_args).await?;
    let result = f(&relay, open_files).await;
    relay.stop().await;
    result.map(|r| (r, load_average))
}

fn spawn_relay(exe: PathBuf, extra: &[String]) -> Result<Relay, LoadError> {
    let dir = tempfile::Builder::new()
        .prefix("cinder-bench-relay-")
        .tempdir()?;
    let mut child = Command::new(&exe)
        .env_remove(SECRET_ENV[0])
        .env_remove(SECRET_ENV[1])
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data")
        .arg(dir.path())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LoadError::Process(format!("cannot run {}: {e}", exe.display())))?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        return Err(LoadError::Process("no stderr pipe".into()));
    };
    // The relay prints "listening on URL" on stderr once it accepts connections; the thread
    // keeps draining the pipe afterwards so the child can never block on it.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("relay-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        })?;
    let started = std::time::Instant::now();
    let mut other = Vec::new();
    let url = loop {
        let left = RELAY_START_TIMEOUT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    break url.to_owned();
                }
                other.push(line);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let why = match e {
                    std::sync::mpsc::RecvTimeoutError::Timeout => "did not start in time",
                    std::sync::mpsc::RecvTimeoutError::Disconnected => "exited",
                };
                return Err(LoadError::Process(format!(
                    "the relay {why}: {}",
                    other.join(" / ")
                )));
            }
        }
    };
    let invite_file = dir.path().join(crate::relay::ADMIN_INVITE_FILE);
    let invite = std::fs::read_to_string(&invite_file).ok().and_then(|s| {
        s.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_owned)
    });
    let Some(invite) = invite else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(LoadError::Process(format!(
            "no admin invite in {}",
            invite_file.display()
        )));
    };
    let pid = child.id();
    Ok(Relay {
        url,
        admin_invite: invite.trim().to_owned(),
        pid: Some(pid),
        child: Some(ChildRelay { child, _dir: dir }),
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` CPU times (`getconf CLK_TCK`; 100 if that
/// cannot be run, which is the value on every mainstream Linux build).
pub fn clock_ticks_per_sec() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .env_remove(SECRET_ENV[0])
            .env_remove(SECRET_ENV[1])
            .arg("CLK_TCK")
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time of process `pid` (all its threads), in microseconds.
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime).saturating_mul(1_000_000) / clock_ticks_per_sec())
}

/// Time the threads of process `pid` spent waiting on a run queue for a CPU (runnable but not
/// running), summed over threads, in microseconds (`/proc/<pid>/task/*/schedstat`). It shows
/// how much other work (including other processes) competed for the cores.
pub fn process_runqueue_wait_us(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let wait_ns: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
        total = total.saturating_add(wait_ns / 1000);
    }
    Some(total)
}

/// Resident set size and its peak of process `pid`, in KiB (`VmRSS`, `VmHWM`).
pub fn process_memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The open-file limit (soft, hard) of process `pid`; `u64::MAX` for "unlimited".
pub fn open_files_limit(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut parts = line["Max open files".len()..].split_whitespace();
    let parse = |s: &str| {
        if s == "unlimited" {
            Some(u64::MAX)
        } else {
            s.parse().ok()
        }
    };
    Some((parse(parts.next()?)?, parse(parts.next()?)?))
}

/// Raises this process's open-file soft limit to its hard limit (children started afterwards
/// inherit it) and returns the limits now in force.
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::Resource::NOFILE.get().ok()
}

/// The machine's 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A user's keys: root key, device keys, certificate.
pub struct Identity {
    /// Canonical username.
    pub username: String,
    /// The user's root key.
    pub root: UserRootKey,
    /// The device's keys.
    pub keys: DeviceKeys,
    /// The device certificate.
    pub cert: DeviceCertificate,
}

impl Identity {
    /// Fresh keys and a certificate for `username` (already canonical).
    ///
    /// # Errors
    /// [`CryptoError`] if the random generator fails.
    pub fn generate(username: &str) -> Result<Self, LoadError> {
        let root = UserRootKey::generate()?;
        let keys = DeviceKeys::generate()?;
        let cert = root.certify(
            username,
            DeviceId::random()?,
            &keys,
            unix_ms() / 1000,
            DeviceRole::User,
        )?;
        Ok(Self {
            username: username.to_owned(),
            root,
            keys,
            cert,
        })
    }

    /// The public root key contacts pin.
    pub fn root_public(&self) -> RootPublicKey {
        self.root.public()
    }

    fn proof(&self, hello: &ServerHello) -> Vec<u8> {
        self.keys
            .signing
            .sign(&protocol::login_message(&hello.challenge, &hello.relay_id))
            .to_vec()
    }

    /// A `Register` request with `one_time` X25519 and `pq` ML-KEM one-time prekeys (plus the
    /// signed and last-resort prekeys), whose private halves go into the returned prekey store.
    ///
    /// # Errors
    /// [`LoadError::Crypto`].
    pub fn register(
        &self,
        hello: &ServerHello,
        invite: &str,
        one_time: usize,
        pq: usize,
    ) -> Result<(Body, DevicePrekeys), LoadError> {
        let now = unix_ms() / 1000;
        let mut pre = DevicePrekeys::new(&self.keys.signing, now)?;
        let otks = pre.generate_one_time(one_time)?;
        let pqs = pre.generate_pq_one_time(&self.keys.signing, pq, now)?;
        let spk = pre
            .current_signed_prekey(&self.keys.signing)
            .ok_or_else(|| LoadError::Protocol("no signed prekey".into()))?;
        let lr = pre
            .current_last_resort(&self.keys.signing)
            .ok_or_else(|| LoadError::Protocol("no last-resort prekey".into()))?;
        let body = Body::Register(protocol::Register {
            invite_code: invite.to_owned(),
            username: self.username.clone(),
            display_name: self.username.clone(),
            root_key: self.root.public().0.to_vec(),
            device_certificate: self.cert.encode()?,
            signature: self.proof(hello),
            prekeys: Some(protocol::PrekeyUpload {
                signed_prekey: Some(spk_msg(&spk)),
                one_time: otks.iter().map(otk_msg).collect(),
                pq_one_time: pqs.iter().map(pq_msg).collect(),
                pq_last_resort: Some(pq_msg(&lr)),
            }),
        });
        Ok((body, pre))
    }

    /// A `Login` request answering `hello`'s challenge.
    pub fn login(&self, hello: &ServerHello) -> Body {
        Body::Login(protocol::Login {
            username: self.username.clone(),
            device_id: self.cert.device_id.0.to_vec(),
            signature: self.proof(hello),
        })
    }
}

/// The WebSocket settings for a busy client connection: frame limits as the relay's and a
/// 8 KiB read buffer (tungstenite zero-fills its whole read buffer on every read, so its
/// 128 KiB default costs a 128 KiB memset per small frame).
pub fn busy_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(DEFAULT_MAX_FRAME))
        .max_frame_size(Some(DEFAULT_MAX_FRAME))
}

/// The WebSocket settings for many idle client connections: small buffers, so the load
/// generator's own memory stays modest.
pub fn idle_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(DEFAULT_MAX_FRAME))
        .max_frame_size(Some(DEFAULT_MAX_FRAME))
}

/// Opens a WebSocket to `url` and reads the relay's `ServerHello`.
///
/// # Errors
/// [`LoadError::Unreachable`] on connection failures or timeouts, [`LoadError::Refused`] if the
/// relay answers with an error instead (e.g. `TooManyConnections`).
pub async fn connect(url: &str, config: WebSocketConfig) -> Result<(Ws, ServerHello), LoadError> {
    let (mut ws, _) = timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .map_err(|_| LoadError::Unreachable(format!("{url}: connecting timed out")))?
    .map_err(|e| LoadError::Unreachable(format!("{url}: {e}")))?;
    let frame = timeout(CONNECT_TIMEOUT, read_frame(&mut ws))
        .await
        .map_err(|_| LoadError::Unreachable(format!("{url}: no hello from the relay")))??;
    match frame.body {
        Some(Body::ServerHello(h)) => Ok((ws, h)),
        Some(Body::Error(e)) => Err(refused("connection", &e)),
        _ => Err(LoadError::Protocol("the relay did not say hello".into())),
    }
}

/// Reads the next protocol frame, skipping WebSocket control messages.
async fn read_frame(ws: &mut Ws) -> Result<Frame, LoadError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                return decode_frame(&b, DEFAULT_MAX_FRAME)
                    .map_err(|e| LoadError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(LoadError::Unreachable("connection closed".into()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(LoadError::Unreachable(e.to_string())),
        }
    }
}

/// The error for an `ErrorReply` to request `what`.
pub fn refused(what: &'static str, e: &protocol::ErrorReply) -> LoadError {
    LoadError::Refused {
        what,
        code: ErrorCode::from_u32(e.code)
            .map_or_else(|| format!("code {}", e.code), |c| c.to_string()),
        message: e.message.clone(),
    }
}

/// Sends one request on a connection nobody else reads yet and waits for the answer with the
/// same frame id, skipping pushes; rate-limited requests are retried after the relay's delay.
///
/// # Errors
/// [`LoadError::Refused`] for an error reply, [`LoadError::Unreachable`] for a dropped or
/// silent connection.
pub async fn request(
    ws: &mut Ws,
    id: u64,
    what: &'static str,
    body: Body,
) -> Result<Body, LoadError> {
    let bytes = encode_frame(&Frame {
        id,
        body: Some(body),
    });
    let mut backoff = retry::Backoff::default();
    loop {
        ws.send(Message::binary(bytes.clone()))
            .await
            .map_err(|e| LoadError::Unreachable(e.to_string()))?;
        let reply = timeout(REQUEST_TIMEOUT, async {
            loop {
                let f = read_frame(ws).await?;
                if f.id == id {
                    return Ok::<_, LoadError>(f.body);
                }
            }
        })
        .await
        .map_err(|_| LoadError::Unreachable(format!("no answer to {what}")))??;
        match reply {
            Some(Body::Error(e)) if e.code == ErrorCode::RateLimited as u32 => {
                let Some(wait) = backoff.next(e.retry_after_ms) else {
                    return Err(refused(what, &e));
                };
                tokio::time::sleep(wait).await;
            }
            Some(Body::Error(e)) => return Err(refused(what, &e)),
            Some(b) => return Ok(b),
            None => return Err(LoadError::Protocol(format!("empty answer to {what}"))),
        }
    }
}

/// Connects and logs `id` in; returns the authenticated socket.
///
/// # Errors
/// As [`connect`] and [`request`].
pub async fn login(url: &str, id: &Identity, config: WebSocketConfig) -> Result<Ws, LoadError> {
    let (mut ws, hello) = connect(url, config).await?;
    match request(&mut ws, 1, "login", id.login(&hello)).await? {
        Body::Authenticated(_) => Ok(ws),
        _ => Err(LoadError::Protocol("unexpected answer to Login".into())),
    }
}

/// Connects and registers `id` with `invite`; returns the authenticated socket and the
/// device's private prekeys.
///
/// # Errors
/// As [`connect`] and [`request`].
pub async fn register(
    url: &str,
    id: &Identity,
    invite: &str,
    one_time: usize,
    pq: usize,
    config: WebSocketConfig,
) -> Result<(Ws, DevicePrekeys), LoadError> {
    let (mut ws, hello) = connect(url, config).await?;
    let (body, prekeys) = id.register(&hello, invite, one_time, pq)?;
    match request(&mut ws, 1, "register", body).await? {
        Body::Authenticated(_) => Ok((ws, prekeys)),
        _ => Err(LoadError::Protocol("unexpected answer to Register".into())),
    }
}

/// Creates `n` invites as the admin on `ws` (frame ids from `first_id`).
///
/// # Errors
/// As [`request`].
pub async fn create_invites(
    ws: &mut Ws,
    first_id: u64,
    n: usize,
) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = Body::CreateInvite(protocol::CreateInvite {
            email: format!("bench{i}@example.invalid"),
            admin: false,
            valid_for_secs: 3600,
        });
        match request(ws, first_id + i as u64, "invite", body).await? {
            Body::InviteCreated(c) => out.push(c.code),
            _ => {
                return Err(LoadError::Protocol(
                    "unexpected answer to CreateInvite".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// Registers the scenario's admin (`{prefix}-admin`) with the relay's admin invite and creates
/// `n` invites with it; returns the admin's identity and the invites.
///
/// # Errors
/// As [`register`] and [`create_invites`].
pub async fn admin_invites(
    relay: &Relay,
    prefix: &str,
    n: usize,
) -> Result<(Identity, Vec<String>), LoadError> {
    let admin = Identity::generate(&format!("{prefix}-admin"))?;
    let (mut ws, _) =
        register(&relay.url, &admin, &relay.admin_invite, 0, 0, busy_config()).await?;
    let invites = create_invites(&mut ws, 2, n).await?;
    let _ = ws.close(None).await;
    Ok((admin, invites))
}

/// Every user's public root key, by name: what registration produced, pinned as a real client
/// pins on first use.
pub fn roots(ids: &[Identity]) -> HashMap<String, RootPublicKey> {
    ids.iter()
        .map(|i| (i.username.clone(), i.root_public()))
        .collect()
}

/// A registered user: its keys, its authenticated connection and its private prekeys.
pub type Registered = (Identity, Ws, DevicePrekeys);

/// Registers every identity with its invite and a full batch of one-time prekeys, a bounded
/// number at a time, each keeping its authenticated connection (so connections are spread over
/// time); the result is in the identities' order.
///
/// # Errors
/// As [`register`].
pub async fn register_all(
    url: &str,
    ids: Vec<Identity>,
    invites: Vec<String>,
) -> Result<Vec<Registered>, LoadError> {
    let sem = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, (id, invite)) in ids.into_iter().zip(invites).enumerate() {
        let sem = sem.clone();
        let url = url.to_owned();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let (ws, pre) = register(
                &url,
                &id,
                &invite,
                prekeys::ONE_TIME_BATCH,
                prekeys::PQ_BATCH,
                busy_config(),
            )
            .await?;
            Ok::<_, LoadError>((i, (id, ws, pre)))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| LoadError::Protocol(format!("registration task failed: {e}")))??);
    }
    out.sort_by_key(|r| r.0);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// The first error a scenario saw (the report shows it; later ones are dropped).
#[derive(Debug, Default)]
pub struct FirstError(Mutex<Option<String>>);

impl FirstError {
    /// Keeps `e` if no error was kept yet.
    pub fn note(&self, e: impl std::fmt::Display) {
        let mut first = lock(&self.0);
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }

    /// The error kept, if any.
    pub fn get(&self) -> Option<String> {
        lock(&self.0).clone()
    }
}

/// An empty histogram for latencies in microseconds (1 us to 1 h, 3 significant digits).
///
/// # Errors
/// [`LoadError::Protocol`] if the histogram cannot be made.
pub fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| LoadError::Protocol(format!("histogram: {e}")))
}

/// Quantile `p` of a histogram of microseconds, in milliseconds (0 when it is empty).
pub fn quantile_ms(h: &Histogram<u64>, p: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(p) as f64 / 1000.0
    }
}

/// The largest value of a histogram of microseconds, in milliseconds (0 when it is empty).
pub fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

/// How much a counter read twice grew (`None` unless both readings exist).
pub fn delta(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64),
        _ => None,
    }
}

/// A duration in microseconds, for timetables (saturating far beyond any run).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4)
}

/// The encoded frame `id` carrying `body`.
pub fn frame_bytes(id: u64, body: Body) -> Vec<u8> {
    encode_frame(&Frame {
        id,
        body: Some(body),
    })
}

fn closed() -> LoadError {
    LoadError::Unreachable("connection closed".into())
}

/// A request sent without waiting, kept until its answer in case it must be sent again.
struct InFlight<R> {
    req: R,
    msg: Message,
}

/// One user's connection after set-up: the writer task's queue and the bookkeeping of frame
/// ids. Requests are either pipelined ([`Conn::fire`]; the reader hands the answer to
/// [`Peer::on_answer`], tagged with the request's `R`) or awaited ([`Conn::request`]).
pub struct Conn<R> {
    out: mpsc::UnboundedSender<Message>,
    /// Set by the reader when the connection ends; requests then fail at once.
    closed: AtomicBool,
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Body>>>,
    inflight: Mutex<HashMap<u64, InFlight<R>>>,
}

impl<R> Conn<R> {
    fn new(out: mpsc::UnboundedSender<Message>) -> Self {
        Self {
            out,
            closed: AtomicBool::new(false),
            // Frame id 1 was the registration.
            next_id: AtomicU64::new(2),
            waiters: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// A fresh frame id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Sends request frame `bytes` (encoded with id `id`) without waiting; its answer goes to
    /// [`Peer::on_answer`] with `req`.
    ///
    /// # Errors
    /// [`LoadError::Unreachable`] once the connection is closed.
    pub fn fire_encoded(&self, id: u64, bytes: Vec<u8>, req: R) -> Result<(), LoadError> {
        let msg = Message::binary(bytes);
        lock(&self.inflight).insert(
            id,
            InFlight {
                req,
                msg: msg.clone(),
            },
        );
        self.out.send(msg).map_err(|_| closed())
    }

    /// Sends a request without waiting (pipelined), as [`Conn::fire_encoded`].
    ///
    /// # Errors
    /// [`LoadError::Unreachable`] once the connection is closed.
    pub fn fire(&self, body: Body, req: R) -> Result<(), LoadError> {
        let id = self.next_id();
        self.fire_encoded(id, frame_bytes(id, body), req)
    }

    /// Sends a request and waits for its answer (set-up and fetches only); retries while the
    /// relay answers `RateLimited`.
    ///
    /// # Errors
    /// [`LoadError::Refused`] for an error reply, [`LoadError::Unreachable`] for a closed or
    /// silent connection.
    pub async fn request(&self, what: &'static str, body: Body) -> Result<Body, LoadError> {
        let mut backoff = retry::Backoff::default();
        loop {
            if self.is_closed() {
                return Err(closed());
            }
            let id = self.next_id();
            let (tx, rx) = oneshot::channel();
            lock(&self.waiters).insert(id, tx);
            if self
                .out
                .send(Message::binary(frame_bytes(id, body.clone())))
                .is_err()
            {
                return Err(closed());
            }
            let reply = timeout(REQUEST_TIMEOUT, rx).await;
            lock(&self.waiters).remove(&id);
            match reply {
                Ok(Ok(Body::Error(e))) if e.code == ErrorCode::RateLimited as u32 => {
                    let Some(wait) = backoff.next(e.retry_after_ms) else {
                        return Err(refused(what, &e));
                    };
                    tokio::time::sleep(wait).await;
                }
                Ok(Ok(Body::Error(e))) => return Err(refused(what, &e)),
                Ok(Ok(b)) => return Ok(b),
                Ok(Err(_)) => return Err(closed()),
                Err(_) => return Err(LoadError::Unreachable(format!("no answer to {what}"))),
            }
        }
    }

    /// Fetches `peer`'s prekey bundle (its first device's), checking that the relay serves the
    /// root key pinned for it (`root`, what registration produced, as a real client pins on
    /// first use).
    ///
    /// # Errors
    /// As [`Conn::request`]; [`LoadError::Protocol`] for another root key or no device.
    pub async fn fetch_bundle(
        &self,
        peer: &str,
        root: &RootPublicKey,
    ) -> Result<PrekeyBundle, LoadError> {
        let body = Body::FetchKeys(protocol::FetchKeys {
            username: peer.to_owned(),
        });
        let Body::KeyBundle(kb) = self.request("fetch keys", body).await? else {
            return Err(LoadError::Protocol("unexpected answer to FetchKeys".into()));
        };
        if kb.root_key.as_slice() != root.0.as_slice() {
            return Err(LoadError::Protocol(format!(
                "the relay served another root key for {peer}"
            )));
        }
        let device = kb
            .devices
            .first()
            .ok_or_else(|| LoadError::Protocol(format!("{peer} has no device")))?;
        crate::session::bundle_from(device).map_err(|e| LoadError::Protocol(e.to_string()))
    }
}

/// A user's device in memory: keys, private prekeys and pairwise sessions by peer user.
pub struct Device {
    /// The user's keys.
    pub id: Identity,
    /// The device's private prekeys (handshakes consume them).
    pub prekeys: Mutex<DevicePrekeys>,
    /// Pairwise sessions, by peer user (one device each).
    pub sessions: Mutex<HashMap<String, Session>>,
}

impl Device {
    /// A device without sessions.
    pub fn new(id: Identity, prekeys: DevicePrekeys) -> Self {
        Self {
            id,
            prekeys: Mutex::new(prekeys),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The user's canonical name.
    pub fn name(&self) -> &str {
        &self.id.username
    }

    fn me(&self) -> pairwise::Me<'_> {
        pairwise::Me {
            username: &self.id.username,
            keys: &self.id.keys,
            cert: &self.id.cert,
        }
    }

    /// Starts a session with `peer` (PQXDH, as the initiator) from its prekey bundle, through
    /// the client core.
    ///
    /// # Errors
    /// [`LoadError::Crypto`] if the bundle does not verify under `root`.
    pub fn initiate(
        &self,
        peer: &str,
        root: &RootPublicKey,
        bundle: &PrekeyBundle,
    ) -> Result<(), LoadError> {
        let session = pairwise::start(self.me(), peer, root, bundle, &[], unix_ms() / 1000)?;
        lock(&self.sessions).insert(peer.to_owned(), session);
        Ok(())
    }

    /// Seals `payload` once and addresses it to the device of each of `peers` we hold a
    /// session with, through the client core; returns the relay request.
    ///
    /// # Errors
    /// [`LoadError::Protocol`] for a peer without a session, [`LoadError::Crypto`].
    pub fn seal_for<'a>(
        &self,
        payload: &Payload,
        peers: impl IntoIterator<Item = &'a str>,
    ) -> Result<protocol::Send, LoadError> {
        let mut sealed = pairwise::Sealed::new(payload)?;
        let mut sessions = lock(&self.sessions);
        for peer in peers {
            let s = sessions
                .get_mut(peer)
                .ok_or_else(|| LoadError::Protocol(format!("no session with {peer}")))?;
            sealed.add(peer, s)?;
        }
        Ok(sealed.into_send(0))
    }

    /// Decrypts pairwise delivery `d` as the session engine does, through the client core
    /// (with the session with its sender, or by answering the handshake it starts, whose
    /// certificate must match the sender and whose root key is the one in `roots`), opens its
    /// envelope and says what it is for. Returns that and whether a new session was made.
    ///
    /// # Errors
    /// [`LoadError::Protocol`] or [`LoadError::Crypto`] for anything that does not verify.
    pub fn open_pairwise(
        &self,
        roots: &HashMap<String, RootPublicKey>,
        d: &protocol::Delivery,
    ) -> Result<(pairwise::Content, bool), LoadError> {
        let msg = PairwiseMessage::decode(&d.payload)?;
        let now_ms = unix_ms();
        let sender_device: [u8; 16] = d
            .sender_device
            .as_slice()
            .try_into()
            .map_err(|_| LoadError::Protocol("a bad sender device id".into()))?;
        let (plaintext, responded) = {
            let mut sessions = lock(&self.sessions);
            // One device per peer here, so no session is ever replaced and kept.
            match pairwise::decrypt(&msg, sessions.get_mut(&d.sender_user), None, now_ms / 1000) {
                pairwise::Opened::Current(pt) | pairwise::Opened::Previous(pt) => (pt, false),
                pairwise::Opened::Rejected(e) => return Err(e.into()),
                pairwise::Opened::Handshake(init) => {
                    let mut pre = lock(&self.prekeys);
                    let (s, pt) = pairwise::answer(
                        self.me(),
                        &mut pre,
                        roots.get(&d.sender_user),
                        &d.sender_user,
                        sender_device,
                        init,
                        now_ms / 1000,
                    )?;
                    sessions.insert(d.sender_user.clone(), s);
                    (pt, true)
                }
            }
        };
        let payload = pairwise::open_body(&plaintext, d)?;
        let content =
            pairwise::classify(self.name(), &d.sender_user, payload, d.server_ts_ms, now_ms)?;
        Ok((content, responded))
    }
}

/// Scenario-wide state the connection plumbing reports to.
pub trait Tally: Send + Sync + 'static {
    /// Records an error (the report keeps the first).
    fn note(&self, e: impl std::fmt::Display);
    /// Counts a pipelined request the relay answered `RateLimited` (it is sent again after the
    /// relay's delay).
    fn rate_limited(&self);
}

/// A scenario's user on its connection: what the reader does with pushes and answers.
pub trait Peer: Send + Sync + 'static {
    /// The scenario's shared state.
    type Shared: Tally;
    /// What a pipelined request was, for when its answer arrives.
    type Req: Send + 'static;
    /// The `Req` of an acknowledgement.
    const ACK: Self::Req;

    /// The user's connection.
    fn conn(&self) -> &Conn<Self::Req>;

    /// Handles one mailbox item, pushed or (`fetched`) fetched because its push was dropped;
    /// returns the sequence number to acknowledge.
    fn on_delivery(&self, sh: &Self::Shared, d: protocol::Delivery, fetched: bool) -> Option<u64>;

    /// The answer to pipelined request `req`: anything but `RateLimited` (which is retried),
    /// error replies included.
    fn on_answer(&self, sh: &Self::Shared, req: Self::Req, body: Body);
}

/// Matches an answer to the request that caused it; a rate-limited pipelined request is sent
/// again after the relay's delay.
fn on_reply<P: Peer>(p: &P, sh: &P::Shared, id: u64, body: Body) {
    let conn = p.conn();
    if let Some(tx) = lock(&conn.waiters).remove(&id) {
        let _ = tx.send(body);
        return;
    }
    let Some(f) = lock(&conn.inflight).remove(&id) else {
        return;
    };
    match body {
        Body::Error(e) if e.code == ErrorCode::RateLimited as u32 => {
            sh.rate_limited();
            // Pipelined load keeps being offered for as long as the relay limits it.
            let wait = retry::wait_for(e.retry_after_ms);
            let msg = f.msg.clone();
            lock(&conn.inflight).insert(id, f);
            let out = conn.out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = out.send(msg);
            });
        }
        body => p.on_answer(sh, f.req, body),
    }
}

/// Acknowledges `acks` (if any) in one `Ack`.
fn flush_acks<P: Peer>(p: &P, sh: &P::Shared, acks: &mut Vec<u64>) {
    if acks.is_empty() {
        return;
    }
    let seqs = std::mem::take(acks);
    if let Err(e) = p.conn().fire(Body::Ack(protocol::Ack { seqs }), P::ACK) {
        sh.note(e);
    }
}

/// Reads one connection: pushes are handled and acknowledged, answers matched to requests.
/// Acks go out as soon as no further frame is already waiting, so they batch under load.
async fn reader<P: Peer>(p: Arc<P>, sh: Arc<P::Shared>, mut stream: SplitStream<Ws>) {
    let mut acks = Vec::new();
    loop {
        let next = if acks.is_empty() {
            stream.next().await
        } else {
            match stream.next().now_or_never() {
                Some(n) => n,
                None => {
                    flush_acks(&*p, &sh, &mut acks);
                    continue;
                }
            }
        };
        let bytes = match next {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let frame = match decode_frame(&bytes, DEFAULT_MAX_FRAME) {
            Ok(f) => f,
            Err(e) => {
                sh.note(format!("undecodable frame from the relay: {e}"));
                continue;
            }
        };
        match frame.body {
            Some(Body::Delivery(d)) if frame.id == 0 => {
                if let Some(seq) = p.on_delivery(&sh, d, false) {
                    acks.push(seq);
                }
            }
            Some(body) if frame.id != 0 => on_reply(&*p, &sh, frame.id, body),
            _ => {}
        }
        if acks.len() >= MAX_ACK_BATCH {
            flush_acks(&*p, &sh, &mut acks);
        }
    }
    flush_acks(&*p, &sh, &mut acks);
    let conn = p.conn();
    conn.closed.store(true, Relaxed);
    // Dropping the waiters' senders fails their requests now rather than at their timeout.
    lock(&conn.waiters).clear();
}

/// Writes one connection's queue, batching whatever is already queued into one flush.
async fn writer(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(m) = rx.recv().await {
        let close = matches!(m, Message::Close(_));
        if sink.feed(m).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() || close {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Fetches and handles every peer's mailbox (items whose push the relay dropped because a
/// connection's push queue was full are only fetchable).
pub async fn fetch_mailboxes<P: Peer>(peers: &[Arc<P>], sh: &P::Shared) {
    for p in peers {
        loop {
            let page = match p
                .conn()
                .request("fetch", Body::Fetch(protocol::Fetch { limit: 500 }))
                .await
            {
                Ok(Body::Deliveries(page)) => page,
                Ok(_) => {
                    sh.note("unexpected answer to Fetch");
                    break;
                }
                Err(e) => {
                    sh.note(e);
                    break;
                }
            };
            let mut acks: Vec<u64> = page
                .items
                .into_iter()
                .filter_map(|d| p.on_delivery(sh, d, true))
                .collect();
            flush_acks(&**p, sh, &mut acks);
            if !page.more {
                break;
            }
        }
    }
}

/// A scenario's users on their connections, each with a reader and a writer task.
pub struct Peers<P> {
    peers: Vec<Arc<P>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<P: Peer> Peers<P> {
    /// Starts a writer and a reader task for every registered connection; `make` builds each
    /// user from its device and its connection.
    pub fn start(
        registered: Vec<Registered>,
        sh: &Arc<P::Shared>,
        mut make: impl FnMut(Device, Conn<P::Req>) -> P,
    ) -> Self {
        let mut peers = Vec::with_capacity(registered.len());
        let mut tasks = Vec::with_capacity(2 * registered.len());
        for (id, ws, pre) in registered {
            let (sink, stream) = ws.split();
            let (tx, rx) = mpsc::unbounded_channel();
            let p = Arc::new(make(Device::new(id, pre), Conn::new(tx)));
            tasks.push(tokio::spawn(writer(sink, rx)));
            tasks.push(tokio::spawn(reader(p.clone(), sh.clone(), stream)));
            peers.push(p);
        }
        Self { peers, tasks }
    }

    /// The users, in registration order.
    pub fn all(&self) -> &[Arc<P>] {
        &self.peers
    }

    /// Closes every connection (after what is already queued) and stops the tasks.
    pub async fn shut_down(self) {
        for p in &self.peers {
            let _ = p.conn().out.send(Message::Close(None));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A short random prefix so repeated runs against one external relay never collide on names.
///
/// # Errors
/// [`LoadError::Crypto`] if the random generator fails.
pub fn run_prefix() -> Result<String, LoadError> {
    let b = crate::crypto::primitives::random_array::<3>()?;
    Ok(format!("b{}", crate::crypto::hex::encode(&b)))
}

/// Formats an optional figure for a table.
pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.decimals$}"))
}

/// "meets target" / "MISSES target".
pub fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES target" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls() {
        for ok in [
            "ws://127.0.0.1:7000",
            "ws://localhost:1",
            "ws://[::1]:9",
            "wss://127.0.0.2:443",
        ] {
            assert!(check_loopback_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ws://10.0.0.1:80",
            "ws://relay.example.com",
            "http://127.0.0.1:1",
            "127.0.0.1:80",
            "ws://",
        ] {
            assert!(check_loopback_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_figures_are_readable() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_us(pid).is_some());
        assert!(process_runqueue_wait_us(pid).is_some());
        let (rss, hwm) = process_memory_kib(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        let (soft, hard) = open_files_limit(pid).unwrap();
        assert!(soft > 0 && hard >= soft);
        assert!(clock_ticks_per_sec() > 0);
        assert!(process_cpu_us(u32::MAX).is_none());
    }
}
