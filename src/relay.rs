//! The relay: accounts, devices, prekeys and store-and-forward mailboxes behind one WebSocket port.
//!
//! Clients speak [`crate::protocol`] frames over WebSocket (optionally TLS). The relay answers
//! every connection with a `ServerHello` carrying a fresh challenge, authenticates devices by
//! their signature over that challenge (`docs/crypto.md` section 11), and then routes opaque
//! ciphertext: one stored body and one key entry per recipient device, durable in the database
//! before the sender is acknowledged, pushed live to connected devices and kept until each device
//! acknowledges it. It checks signatures on device certificates and login challenges and nothing
//! else, so it imports no decryption code at all (`tests/architecture.rs` enforces this).
//!
//! Rooms are routed from the relay's own copy of each room's signed membership log
//! ([`crate::crypto::membership`]): the relay runs the same rules as the clients to decide who
//! gets a room message and to refuse invalid changes, but clients replay the log themselves and
//! never have to trust the relay's answer. Message timers are enforced by the relay's clock, and
//! the network policy (read receipts, longest timers, room size) lives in its database.
//!
//! Layout: [`store`] is the storage trait the rest of the relay talks to and `sqlite` its
//! embedded implementation (one writer thread with group commit); `network` creates or loads
//! the network identity in the data directory; `invite` makes and checks invite codes;
//! `registry` tracks connected devices, their push queues and rate limits; `conn` runs one
//! connection's protocol state machine and `rooms` its room, timer and policy requests;
//! `server` is the accept loop, TLS, connection limit and the expiry sweeper.
//! The schema and the limits are documented in `docs/relay.md`.

mod conn;
mod invite;
mod network;
mod registry;
mod rooms;
mod server;
mod sqlite;
pub mod store;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::Clock;
use crate::crypto::CryptoError;
use crate::protocol::{DEFAULT_MAX_FRAME, ErrorCode};
#[cfg(feature = "test-hooks")]
use crate::protocol::{Delivery, RoomLog};

pub use store::RelayStore;

/// Longest timer defaults: the network maximum for expiry and burn-on-read timers (365 days).
pub const DEFAULT_MAX_TIMER_SECS: u64 = 365 * 24 * 3600;
/// Default most members of a room or group DM.
pub const DEFAULT_MAX_ROOM_MEMBERS: u32 = 500;
/// Longest timer limit a policy may set: the protocol's longest timer (365 days).
pub const MAX_POLICY_TIMER_SECS: u64 = crate::crypto::membership::MAX_TIMER_SECS as u64;

/// Name of the SQLite database inside the data directory.
pub const DB_FILE: &str = "relay.db";
/// Name of the file holding the network admin key's 32-byte Ed25519 seed.
pub const ADMIN_KEY_FILE: &str = "network-admin.key";
/// Name of the file the first start writes the one-time admin invite to (code on the last line).
pub const ADMIN_INVITE_FILE: &str = "admin-invite.txt";

/// How long a graceful shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong in the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A configuration value is out of range.
    #[error("invalid relay configuration: {0}")]
    Config(String),
    /// Reading or writing the data directory or a socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The database reported an error.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The storage thread has stopped (the relay is shutting down or crashed).
    #[error("the relay's storage has stopped")]
    StoreClosed,
    /// The data directory is not usable (wrong key length, newer schema, missing key file).
    #[error("data directory: {0}")]
    DataDir(String),
    /// The TLS certificate or key could not be loaded.
    #[error("tls setup failed: {0}")]
    Tls(String),
    /// The operating system's random generator failed.
    #[error("cryptography error: {0}")]
    Crypto(#[from] CryptoError),
    /// A request was refused; the code goes back to the client in an `ErrorReply`.
    #[error("request refused: {code} ({detail})")]
    Refused {
        /// The wire error code.
        code: ErrorCode,
        /// One sentence for the client (never contains ciphertext or keys).
        detail: Cow<'static, str>,
    },
}

impl RelayError {
    /// A refusal with a wire code and an explanation.
    pub(crate) fn refused(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::Refused {
            code,
            detail: detail.into(),
        }
    }
}

/// What a held answer waits for (see [`Tamper::hold`]).
#[cfg(feature = "test-hooks")]
pub type Release = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A hook that lets a test play a malicious relay: it sees every delivery the relay is about to
/// send and every room log it answers, and may drop, duplicate or rewrite them.
///
/// Only for tests of client-side detection (injected, replayed or dropped membership changes,
/// tampered ciphertext); `cinder serve` never sets it. When [`RelayConfig::tamper`] is `None`
/// nothing is called and nothing is copied.
///
/// Compiled only with the `test-hooks` feature, which the crate's own tests turn on (a
/// dev-dependency on itself): a release build of the relay has no code that could rewrite
/// what it sends.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub trait Tamper: Send + Sync + 'static {
    /// Called for every delivery on its way to `to_device` of `to_user`, in `Fetch` pages and
    /// live pushes alike; the relay sends what this returns, in order.
    fn delivery(&self, to_user: &str, to_device: &[u8; 16], d: Delivery) -> Vec<Delivery> {
        let _ = (to_user, to_device);
        vec![d]
    }

    /// Called for every answer to a request of `from_user`, named by its kind (`"send"`,
    /// `"set_policy"`, ...); `Some(release)` holds the answer back until `release` completes,
    /// while the connection goes on serving pushes and other requests (a slow relay, for tests
    /// of the client).
    fn hold(&self, from_user: &str, request: &str) -> Option<Release> {
        let _ = (from_user, request);
        None
    }

    /// Called for every `RoomLog` answer to `to_user`; the relay sends what this returns.
    fn room_log(&self, to_user: &str, log: RoomLog) -> RoomLog {
        let _ = to_user;
        log
    }
}

/// How the relay runs; [`RelayConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct RelayConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Directory holding the database, the network admin key and the admin invite.
    pub data_dir: PathBuf,
    /// Network display name; used when the network is created (default "Cinder") and, when
    /// set, renames an existing network.
    pub network_name: Option<String>,
    /// TLS certificate chain and private key, both PEM; `None` serves plain `ws://`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Most simultaneous connections; the next one gets `TooManyConnections` (default 10,000).
    pub max_connections: usize,
    /// Largest frame accepted or sent, in bytes (default [`DEFAULT_MAX_FRAME`]).
    pub max_frame: usize,
    /// Requests per second each authenticated device may make on average (default 200; 0 turns
    /// rate limiting off).
    pub rate_per_sec: u32,
    /// Requests a device may make in a burst (default 400).
    pub rate_burst: u32,
    /// How long invites stay valid unless the request says otherwise (default 7 days).
    pub invite_validity: Duration,
    /// Most mailbox items one `Fetch` returns (default 500).
    pub max_mailbox_fetch: u32,
    /// Most members of a room or group DM; a change above it is refused with `RoomFull`
    /// (default 500).
    pub max_room_members: u32,
    /// When set, replaces the stored policy's longest expiry timer at start (`--max-expire`).
    pub max_expire_secs: Option<u64>,
    /// When set, replaces the stored policy's longest burn-on-read timer at start
    /// (`--max-burn`).
    pub max_burn_secs: Option<u64>,
    /// How often expired items are deleted (default 1 second, so nothing outlives its timer by
    /// much more than that).
    pub sweep_interval: Duration,
    /// Test-only hook that rewrites what the relay sends; see [`Tamper`]. Always `None` in
    /// `cinder serve`; only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub tamper: Option<Arc<dyn Tamper>>,
    /// Where wall time comes from for expiry, delete-by times and server timestamps: the
    /// system clock, or in tests a virtual clock driven by tokio's (paused) time.
    pub clock: Clock,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RelayConfig");
        d.field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("network_name", &self.network_name)
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("max_frame", &self.max_frame)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("rate_burst", &self.rate_burst)
            .field("invite_validity", &self.invite_validity)
            .field("max_mailbox_fetch", &self.max_mailbox_fetch)
            .field("max_room_members", &self.max_room_members)
            .field("max_expire_secs", &self.max_expire_secs)
            .field("max_burn_secs", &self.max_burn_secs)
            .field("sweep_interval", &self.sweep_interval)
            .field("clock", &self.clock);
        #[cfg(feature = "test-hooks")]
        d.field("tamper", &self.tamper.is_some());
        d.finish()
    }
}

impl RelayConfig {
    /// A configuration with every limit at its default.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            network_name: None,
            tls: None,
            max_connections: 10_000,
            max_frame: DEFAULT_MAX_FRAME,
            rate_per_sec: 200,
            rate_burst: 400,
            invite_validity: Duration::from_secs(7 * 24 * 3600),
            max_mailbox_fetch: 500,
            max_room_members: DEFAULT_MAX_ROOM_MEMBERS,
            max_expire_secs: None,
            max_burn_secs: None,
            sweep_interval: Duration::from_secs(1),
            #[cfg(feature = "test-hooks")]
            tamper: None,
            clock: Clock::system(),
        }
    }

    fn validate(&self) -> Result<(), RelayError> {
        if self.max_connections == 0 {
            return Err(RelayError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        // The smallest useful frame still has to carry a KeyBundle with one PQ prekey.
        if self.max_frame < 8 * 1024 || self.max_frame > crate::protocol::MAX_FRAME_LIMIT {
            return Err(RelayError::Config(
                "max_frame must be between 8 KiB and 64 MiB".into(),
            ));
        }
        if self.rate_per_sec > 0 && self.rate_burst == 0 {
            return Err(RelayError::Config("rate_burst must be at least 1".into()));
        }
        if self.max_mailbox_fetch == 0 {
            return Err(RelayError::Config(
                "max_mailbox_fetch must be at least 1".into(),
            ));
        }
        if self.max_room_members < 2 {
            return Err(RelayError::Config(
                "max_room_members must be at least 2".into(),
            ));
        }
        for (name, v) in [
            ("max_expire", self.max_expire_secs),
            ("max_burn", self.max_burn_secs),
        ] {
            if v.is_some_and(|v| v == 0 || v > MAX_POLICY_TIMER_SECS) {
                return Err(RelayError::Config(format!(
                    "{name} must be between 1 second and 365 days"
                )));
            }
        }
        if self.sweep_interval.is_zero() {
            return Err(RelayError::Config(
                "sweep_interval must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// A running relay. Dropping the handle starts a graceful shutdown in the background; call
/// [`RelayHandle::shutdown`] to wait for it, or [`RelayHandle::abort`] to simulate a crash.
pub struct RelayHandle {
    local_addr: SocketAddr,
    tls: bool,
    admin_invite: Option<String>,
    /// Cancels the shutdown token if the handle is dropped without an explicit stop.
    stop_on_drop: DropGuard,
    accept_task: JoinHandle<()>,
    sweep_task: JoinHandle<()>,
    store: Arc<sqlite::SqliteStore>,
    /// When (relay clock, ms) the last completed sweep started.
    swept: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin invite is a credential, so it is never printed.
        f.debug_struct("RelayHandle")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RelayHandle {
    /// The address the relay is listening on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to, e.g. `ws://127.0.0.1:7000` (`wss://` with TLS); an
    /// unspecified listen address is shown as loopback.
    pub fn url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{addr}")
    }

    /// Waits until a sweep that started at or after `at_ms` (relay clock) has deleted what
    /// had expired by then, so a test can wait for the sweeper instead of sleeping. Returns at
    /// once if the relay has stopped.
    #[doc(hidden)]
    pub async fn swept_since(&self, at_ms: u64) {
        let mut swept = self.swept.clone();
        let _ = swept.wait_for(|&t| t >= at_ms).await;
    }

    /// The one-time admin invite, if this start created the network.
    pub fn admin_invite(&self) -> Option<&str> {
        self.admin_invite.as_deref()
    }

    /// Stops gracefully: stops accepting, sends `Bye` to every connection, lets in-flight
    /// requests finish (up to 10 seconds), closes the sockets, then checkpoints and closes the
    /// database.
    ///
    /// # Errors
    /// [`RelayError::Db`] if the database could not be closed cleanly.
    pub async fn shutdown(self) -> Result<(), RelayError> {
        self.stop_on_drop.disarm().cancel();
        // The accept task owns every connection task and returns once they have drained.
        let _ = self.accept_task.await;
        let _ = self.sweep_task.await;
        self.store.close().await
    }

    /// Simulates a crash: aborts every task at once with no `Bye`, no drain and no database
    /// cleanup. Whatever was acknowledged before is durable because replies follow `COMMIT`.
    pub fn abort(self) {
        // No cancellation: connections must not get to say Bye.
        let _ = self.stop_on_drop.disarm();
        self.store.crash();
        // Dropping the accept task drops its `JoinSet`, which aborts every connection task.
        self.accept_task.abort();
        self.sweep_task.abort();
    }
}

/// Starts a relay: opens (or creates) the network in `config.data_dir`, binds `config.listen`
/// and serves connections on the current tokio runtime until shut down.
///
/// # Errors
/// [`RelayError::Config`] for out-of-range limits, [`RelayError::Io`] if the address cannot be
/// bound or the data directory cannot be written, [`RelayError::Tls`] for unusable PEM files,
/// [`RelayError::Db`] or [`RelayError::DataDir`] for an unusable database.
pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
    config.validate()?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
        None => None,
    };
    // Bind before touching the data directory, so a busy port never creates a network whose
    // one-time invite nobody sees.
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    network::prepare_data_dir(&config.data_dir)?;
    let store = Arc::new(sqlite::SqliteStore::open(
        &config.data_dir.join(DB_FILE),
        config.clock,
    )?);
    let net = match network::open_or_create(
        store.as_ref(),
        &config.data_dir,
        config.network_name.as_deref(),
    )
    .await
    {
        Ok(net) => net,
        Err(e) => {
            let _ = store.close().await;
            return Err(e);
        }
    };
    let policy = match load_policy(store.as_ref(), &config).await {
        Ok(policy) => policy,
        Err(e) => {
            let _ = store.close().await;
            return Err(e);
        }
    };
    let admin_invite = net.created_invite.clone();
    tracing::info!(
        network_id = %net.network_id,
        addr = %local_addr,
        tls = tls.is_some(),
        created = admin_invite.is_some(),
        "relay started"
    );
    let shutdown = CancellationToken::new();
    let dyn_store: Arc<dyn RelayStore> = store.clone();
    let shared = Arc::new(server::Shared::new(
        &config,
        net,
        policy,
        dyn_store.clone(),
        shutdown.clone(),
    ));
    let accept_task = tokio::spawn(server::accept_loop(listener, shared, tls));
    let (swept_tx, swept) = tokio::sync::watch::channel(0);
    let sweep_task = tokio::spawn(server::sweep_loop(
        dyn_store,
        config.sweep_interval,
        config.clock,
        swept_tx,
        shutdown.clone(),
    ));
    Ok(RelayHandle {
        local_addr,
        tls: config.tls.is_some(),
        admin_invite,
        stop_on_drop: shutdown.drop_guard(),
        accept_task,
        sweep_task,
        store,
        swept,
    })
}

/// The stored policy, after the configuration's overrides (`--max-expire`, `--max-burn`).
async fn load_policy(
    store: &dyn RelayStore,
    config: &RelayConfig,
) -> Result<store::StoredPolicy, RelayError> {
    if config.max_expire_secs.is_none() && config.max_burn_secs.is_none() {
        return store.policy().await;
    }
    let change = store::PolicyChange {
        read_receipts: None,
        max_expire_secs: config.max_expire_secs,
        max_burn_secs: config.max_burn_secs,
    };
    store.set_policy(None, change).await
}

/// Runs the relay for `cinder serve`: starts it, prints the admin invite when this start
/// created the network, and shuts down gracefully on SIGTERM or SIGINT.
///
/// On first start stdout gets a line saying the network was created, a line naming the invite
/// file, and the invite code alone on the last line; stderr gets one "listening on URL" line.
/// Everything else goes to `tracing`.
///
/// # Errors
/// As [`start`] and [`RelayHandle::shutdown`]; [`RelayError::Io`] if the signal handlers cannot
/// be installed.
pub async fn serve_until_signal(config: RelayConfig) -> Result<(), RelayError> {
    let data_dir = config.data_dir.clone();
    // Handlers go in first so a signal during start-up is not fatal to an unfinished start.
    let signal = shutdown_signal()?;
    let handle = start(config).await?;
    if let Some(code) = handle.admin_invite() {
        println!(
            "Created a new Cinder network; register its first administrator with this one-time invite."
        );
        println!(
            "The invite is also saved in {}:",
            data_dir.join(ADMIN_INVITE_FILE).display()
        );
        println!("{code}");
    }
    eprintln!("listening on {}", handle.url());
    signal.await;
    tracing::info!("signal received; shutting down");
    handle.shutdown().await
}

/// Installs the SIGTERM and SIGINT handlers and returns a future that resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, RelayError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Returns a future that resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, RelayError> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
