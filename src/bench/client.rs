//! The light load-generating client shared by `cinder bench dm` and `cinder bench idle`, and
//! the relay process they measure.
//!
//! The client speaks the wire protocol directly over tokio-tungstenite and keeps keys and
//! sessions in memory: these scenarios measure the relay, not the client's durable cache, so the
//! SQLCipher session engine stays out of the way. The cryptography is the real thing (root and
//! device keys, certificates, prekeys, the PQXDH handshake, the Double Ratchet, the envelope),
//! so the relay sees exactly the frames and sizes a real client sends.
//!
//! By default the relay runs as a separate process (`cinder serve` from the same binary, on a
//! free loopback port, with a temporary data directory) so that its CPU time and memory can be
//! read from `/proc/<pid>` without counting the load generator. Benchmarks only ever target
//! loopback addresses.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::crypto::CryptoError;
use crate::crypto::identity::{
    DeviceCertificate, DeviceId, DeviceKeys, DeviceRole, RootPublicKey, UserRootKey,
};
use crate::crypto::prekeys::DevicePrekeys;
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
/// How often a rate-limited set-up request is retried before giving up.
const MAX_RATE_LIMIT_RETRIES: usize = 50;
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

fn spawn_relay(exe: PathBuf, extra: &[String]) -> Result<Relay, LoadError> {
    let dir = tempfile::Builder::new()
        .prefix("cinder-bench-relay-")
        .tempdir()?;
    let mut child = Command::new(&exe)
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
            device_certificate: self.cert.encode(),
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
    for _ in 0..MAX_RATE_LIMIT_RETRIES {
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
                let wait = u64::from(e.retry_after_ms).clamp(1, 5_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Some(Body::Error(e)) => return Err(refused(what, &e)),
            Some(b) => return Ok(b),
            None => return Err(LoadError::Protocol(format!("empty answer to {what}"))),
        }
    }
    Err(LoadError::Protocol(format!("{what} stayed rate limited")))
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

/// A short random prefix so repeated runs against one external relay never collide on names.
///
/// # Errors
/// [`LoadError::Crypto`] if the random generator fails.
pub fn run_prefix() -> Result<String, LoadError> {
    let b = crate::crypto::primitives::random_array::<3>()?;
    Ok(format!("b{:02x}{:02x}{:02x}", b[0], b[1], b[2]))
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
