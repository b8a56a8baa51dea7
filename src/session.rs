//! The async session engine: one actor task per account.
//!
//! The actor owns the relay connection, the pairwise sessions, the durable outbox and the
//! encrypted cache. The UI and the command line hold a cloneable [`SessionHandle`]: commands go
//! over an mpsc channel with one-shot replies, and [`SessionEvent`]s come back over a broadcast
//! channel, so callers are never blocked by the network. SQLCipher and crypto work runs on
//! `spawn_blocking`.
//!
//! Sending writes the message to the durable outbox first (shown as "sending"), then encrypts
//! it — persisting the advanced ratchets together with the exact request bytes, so a retry after
//! a crash resends the same ciphertext and never reuses a message key — and delivers it; the
//! relay deduplicates retries. Receiving stores the message, the ratchet state and the relay's
//! sequence number in one transaction before acknowledging, so a crash at any point loses
//! nothing and shows nothing twice.

mod commands;
mod connection;
mod engine;
mod ephemeral;
mod inbound;
mod outbound;
mod policy;
pub mod register;
mod rooms;
mod timers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

/// Room types, as the UI and the command line see them.
pub use crate::crypto::membership::{Role, RoomKind, RoomTimers};
/// The network policy (read receipts, timer caps, room size).
pub use crate::protocol::Policy;
/// The cache's message and conversation records, as the UI sees them (the UI reaches the
/// cache only through the session).
pub use crate::store::{
    ConversationSummary, MessageKind, MessageRecord, MessageState, MessageTimers,
};
pub use commands::{COMMANDS, CommandInfo, Runs};
pub use connection::{PUSH_QUEUE, check_url};
pub use engine::spawn;
/// Conversions between the wire prekey messages and the crypto types.
pub use outbound::{bundle_from, otk_msg, pq_msg, spk_msg};
pub use rooms::{RoomInfo, RoomMember, is_room};
pub use timers::{Clamped, MAX_TIMER_SECS, clamp, format_duration, parse_timer};

pub use crate::clock::Clock;
use crate::crypto::CryptoError;
use crate::crypto::identity::{DeviceCertificate, DeviceKeys};
use crate::crypto::primitives::{DhKeyPair, SigningKeyPair};
use crate::protocol::{ErrorCode, UserDevices};
use crate::store::{AccountRecord, Store, StoreError};

/// Everything that can go wrong in the session engine.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The relay could not be reached or the connection dropped.
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    /// The relay refused the request.
    #[error("{message}")]
    Relay {
        /// The stable code.
        code: ErrorCode,
        /// The relay's sentence.
        message: String,
        /// For rate limiting.
        retry_after_ms: u32,
        /// For changed devices.
        stale: Vec<UserDevices>,
    },
    /// A request larger than the relay accepts (never sent).
    #[error("message too large ({size} bytes; the limit is {limit})")]
    TooLarge {
        /// The encoded request.
        size: usize,
        /// The relay's frame limit.
        limit: usize,
    },
    /// The relay spoke something we do not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The URL is not a relay URL.
    #[error("not a relay URL: {0} (use ws://host:port or wss://host)")]
    BadUrl(String),
    /// Plain `ws://` to a remote host without the explicit opt-in.
    #[error(
        "refusing unencrypted ws:// to a non-loopback host: {0} (use wss:// or pass --insecure-ws)"
    )]
    InsecureUrl(String),
    /// TLS set-up failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A user's root key differs from the one pinned on first contact.
    #[error(
        "{0}'s identity key changed since you first talked; refusing to send until it is verified"
    )]
    IdentityChanged(String),
    /// The relay changed identity.
    #[error("this relay is not the one the profile registered with")]
    WrongRelay,
    /// The profile has no account yet.
    #[error("this profile is not registered; run `cinder register` first")]
    NotRegistered,
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// Refused by the rules this client enforces itself (room permissions, policy).
    #[error("{0}")]
    Refused(String),
    /// Cache errors.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Crypto errors.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// The engine stopped.
    #[error("session engine stopped")]
    Stopped,
}

impl SessionError {
    /// Whether retrying later cannot help (the message should be marked failed).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Relay { code, .. } => !matches!(
                code,
                ErrorCode::RateLimited
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Internal
                    | ErrorCode::TooManyConnections
                    | ErrorCode::DevicesChanged
            ),
            Self::IdentityChanged(_)
            | Self::Usage(_)
            | Self::Refused(_)
            | Self::TooLarge { .. } => true,
            _ => false,
        }
    }
}

/// What the engine tells its observers.
#[derive(Clone, Debug)]
pub enum SessionEvent {
    /// Logged in to the relay.
    Connected,
    /// The connection is down; the next attempt is in `retry_in` (if reconnecting).
    Disconnected {
        /// Time to the next attempt.
        retry_in: Option<Duration>,
        /// Why.
        reason: String,
    },
    /// A message arrived and is stored.
    Message(MessageRecord),
    /// A message of ours changed state (sent, delivered, failed).
    StateChanged {
        /// Which message.
        message_id: [u8; 16],
        /// Its new state.
        state: MessageState,
    },
    /// A room's membership, title or timers changed (or a warning about it was recorded).
    RoomChanged {
        /// Which room.
        room_id: String,
    },
    /// Messages were shredded (expired or burned); they are gone from the cache.
    Shredded {
        /// Their conversation.
        conversation: String,
        /// Which.
        message_ids: Vec<[u8; 16]>,
    },
    /// A message's timers changed (its burn countdown started).
    TimersChanged {
        /// Which message.
        message_id: [u8; 16],
        /// Its conversation.
        conversation: String,
        /// The new timers.
        timers: MessageTimers,
    },
    /// The network policy changed.
    PolicyChanged(Policy),
    /// A message of ours will not be sent: the relay refused it for good or it is too large.
    /// Its state is `Failed`; it can be retried or discarded.
    SendFailed {
        /// Which message.
        message_id: [u8; 16],
        /// Its conversation.
        conversation: String,
        /// Why, in one sentence.
        reason: String,
    },
    /// A delivery failed to authenticate; it was dropped (recorded as undecryptable).
    Undecryptable {
        /// Relay-claimed sender.
        from: String,
        /// Relay-claimed message id.
        message_id: [u8; 16],
        /// Why.
        error: String,
    },
}

/// What one inbound delivery became, for the command line's output.
#[derive(Clone, Debug)]
pub enum Inbound {
    /// A stored message.
    Message(MessageRecord),
    /// A delivery that failed to authenticate.
    Undecryptable {
        /// Relay-claimed sender.
        from: String,
        /// Relay-claimed message id.
        message_id: [u8; 16],
        /// Why.
        error: String,
    },
}

/// The account's key material, loaded once per unlock.
pub(crate) struct Keys {
    pub username: String,
    /// Our user root key (public), to verify our own signed room changes.
    pub root: [u8; 32],
    pub device_id: [u8; 16],
    pub device: DeviceKeys,
    pub cert: DeviceCertificate,
}

impl Keys {
    pub(crate) fn from_account(a: &AccountRecord) -> Result<Self, SessionError> {
        let cert = DeviceCertificate::decode(&a.device_cert)?;
        Ok(Self {
            username: a.username.clone(),
            // The public key only: a linked device will not hold the root secret.
            root: a.root_public,
            device_id: a.device_id,
            device: DeviceKeys {
                signing: SigningKeyPair::from_secret_bytes(&a.device_signing_secret),
                identity: DhKeyPair::from_secret_bytes(*a.device_identity_secret),
            },
            cert,
        })
    }
}

/// Where and how the engine connects.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Keep reconnecting in the background (the UI); one-shot commands connect on demand.
    pub auto_reconnect: bool,
    /// Cap of the reconnect backoff.
    pub reconnect_max: Duration,
    /// Extra CA certificate (PEM) for `wss://` relays with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Added to this device's clock for the timestamps of what it sends. Only for tests of
    /// the clock-skew rule (a sender clock set ahead must not extend a message's life).
    #[doc(hidden)]
    pub clock_offset_ms: i64,
    /// Where wall-clock time comes from for timers, expiry and timestamps: the system clock,
    /// or in tests a virtual clock driven by tokio's (paused) time.
    pub clock: Clock,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            auto_reconnect: false,
            reconnect_max: Duration::from_secs(30),
            ca_pem: None,
            clock_offset_ms: 0,
            clock: Clock::system(),
        }
    }
}

/// A conversation's timer defaults: (expire, burn), seconds.
pub type TimerPair = (Option<u32>, Option<u32>);

/// Per-message options of a send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Expiration timer (seconds); `None` uses the conversation's default.
    pub expire_after: Option<u32>,
    /// Burn-on-read timer (seconds); `None` uses the conversation's default.
    pub burn_after: Option<u32>,
}

/// What queuing a message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The message id.
    pub message_id: [u8; 16],
    /// The conversation it went to.
    pub conversation: String,
    /// The timers it carries (after the network caps).
    pub timers: MessageTimers,
    /// What had to be changed to respect the network's caps (one sentence each).
    pub notes: Vec<String>,
}

/// A change to a room, as requested by the user.
#[derive(Clone, Debug)]
pub enum RoomRequest {
    /// Add members.
    Invite(Vec<String>),
    /// Remove members (moderators).
    Remove(Vec<String>),
    /// Make a member a moderator.
    Promote(String),
    /// Make a moderator a member.
    Demote(String),
    /// Leave the room.
    Leave,
    /// Change the title and/or topic.
    Edit {
        /// New title, if changing.
        title: Option<String>,
        /// New topic, if changing.
        description: Option<String>,
    },
    /// Set the room's timer defaults.
    Timers(RoomTimers),
    /// Delete the room for everyone (moderators).
    Delete,
}

/// What goes to the engine: a declared command ([`commands`]) or the request to stop.
pub(crate) enum Command {
    Call(commands::Call),
    /// Handled by the actor itself: it stops, closes the cache, then answers.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cloneable handle to a running engine.
#[derive(Clone)]
pub struct SessionHandle {
    cmd: mpsc::Sender<Command>,
    events: broadcast::Sender<SessionEvent>,
    profile_dir: Arc<PathBuf>,
    account: Arc<AccountInfo>,
    connected: Arc<std::sync::atomic::AtomicBool>,
    policy: Arc<std::sync::Mutex<Option<Policy>>>,
    /// The queue of pushes towards the engine (weak: the handle must not keep it open).
    pushes: mpsc::WeakSender<connection::Push>,
}

/// Public facts about the signed-in account, for display.
#[derive(Clone, Debug)]
pub struct AccountInfo {
    /// Canonical username.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Network name.
    pub network_name: String,
    /// Relay URL.
    pub server_url: String,
}

impl SessionHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SessionError>>) -> Command,
    ) -> Result<T, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| SessionError::Stopped)?;
        rx.await.map_err(|_| SessionError::Stopped)?
    }

    /// Queues a text message durably; returns its id once it is in the outbox. A shorthand
    /// for [`Self::send_message`] with default options, so not a command of its own.
    ///
    /// # Errors
    /// Cache errors, or a bad recipient name.
    pub async fn send_text(&self, to: &str, text: &str) -> Result<[u8; 16], SessionError> {
        Ok(self
            .send_message(to, text, SendOptions::default())
            .await?
            .message_id)
    }

    /// The network policy as last heard from the relay (`None` before the first login).
    pub fn policy(&self) -> Option<Policy> {
        self.policy.lock().ok().and_then(|p| p.clone())
    }

    /// Whether the engine is logged in to the relay right now (for observers that subscribe
    /// after the first `Connected` event may already have passed).
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many pushes wait for the engine right now (at most
    /// [`PUSH_QUEUE`]); for tests of the bound.
    #[doc(hidden)]
    pub fn push_queue_depth(&self) -> usize {
        self.pushes
            .upgrade()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// The signed-in account.
    pub fn account(&self) -> &AccountInfo {
        &self.account
    }

    /// Subscribes to events.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The profile directory this engine serves.
    pub fn profile_dir(&self) -> &std::path::Path {
        &self.profile_dir
    }

    /// Stops the engine and waits until it has closed the cache.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Shutdown { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Unlocks a profile and starts its engine: what the UI uses, so that it never holds the
/// cache itself. The cache is opened on the blocking pool (key derivation takes a while); a
/// relay CA certificate saved at registration is used unless `opts` names one.
///
/// # Errors
/// As [`unlock`] and [`spawn`].
pub async fn open(
    dir: &std::path::Path,
    passphrase: zeroize::Zeroizing<Vec<u8>>,
    mut opts: EngineOptions,
) -> Result<SessionHandle, SessionError> {
    let dir = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || unlock(&dir, &passphrase))
        .await
        .map_err(|_| SessionError::Stopped)??;
    if opts.ca_pem.is_none() {
        opts.ca_pem = store.db().blob("ca_cert")?.map(|b| b.to_vec());
    }
    spawn(store, opts)
}

/// Opens a profile's cache and checks it holds an account.
///
/// # Errors
/// [`StoreError::WrongPassphrase`], [`StoreError::NotFound`], [`SessionError::NotRegistered`].
pub fn unlock(dir: &std::path::Path, passphrase: &[u8]) -> Result<Store, SessionError> {
    let store = Store::open(dir, passphrase)?;
    if store.db().account()?.is_none() {
        return Err(SessionError::NotRegistered);
    }
    Ok(store)
}
