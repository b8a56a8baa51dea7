//! The records of the cache and the data methods of [`Db`].
//!
//! Secret bytes are copied straight from SQLite's row buffer into `Zeroizing` containers, so no
//! unwiped intermediate `Vec` is left on the heap.
//!
//! # Ephemeral messages
//! A message with a timer ([`MessageTimers`]: expiry, burn-on-read, or a deadline set later) is
//! *sealed*: its text is stored only as AES-256-GCM ciphertext under a fresh random 32-byte key
//! of its own, kept in the `message_keys` table, and its `text` column is empty. Reads decrypt
//! transparently. [`Db::shred`] deletes the key together with the row, so a copy of the
//! ciphertext that survives somewhere (a WAL frame, a freed page, a backup of the database
//! file) is unreadable even to someone holding the cache key. Sealed messages are never added
//! to the search index: FTS5 keeps its own copy of every word, which no per-message key covers
//! and which would outlive the message it came from.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension as _, Row, ToSql, params};
use zeroize::Zeroizing;

mod rooms;

pub use rooms::{KeyHolder, ReceivedSenderKeyRecord};

use super::schema::{self, COUNT_MESSAGE, INDEX_MESSAGE, INSERT_MESSAGE};
use super::{Result, StoreError};
use crate::crypto::identity::UserRootKey;
use crate::crypto::primitives::{Aead, Secret32, derive_key_nonce};

/// HKDF label deriving the AES-256-GCM key and nonce of a sealed message from its own key.
const SEAL_INFO: &[u8] = b"cinder/v1/cache/msg";

/// Data access to an open cache, in autocommit mode or inside [`super::Store::transaction`].
#[derive(Clone, Copy)]
pub struct Db<'a>(&'a Connection);

/// The account of this profile (one row).
///
/// Holds the account's private keys, so it is neither `Debug` nor `Serialize`.
pub struct AccountRecord {
    /// The relay's WebSocket URL.
    pub server_url: String,
    /// The account's username on the network.
    pub username: String,
    /// The name shown to others.
    pub display_name: String,
    /// This device's id.
    pub device_id: [u8; 16],
    /// The network's id.
    pub network_id: String,
    /// The network's human-readable name.
    pub network_name: String,
    /// The relay's identity as pinned at registration.
    pub relay_id: Vec<u8>,
    /// Whether the account may use the admin API.
    pub is_admin: bool,
    /// The user's root public key.
    pub root_public: [u8; 32],
    /// The user's root signing secret, on a device that holds the account's root role (today
    /// the first and only device; a linked device will not). Read it with
    /// [`Self::root_secret`].
    pub root_secret: Option<Zeroizing<[u8; 32]>>,
    /// This device's signing secret.
    pub device_signing_secret: Zeroizing<[u8; 32]>,
    /// This device's identity (DH) secret.
    pub device_identity_secret: Zeroizing<[u8; 32]>,
    /// This device's certificate, signed by the root key.
    pub device_cert: Vec<u8>,
    /// When the account was registered (seconds since the Unix epoch).
    pub created_at: u64,
    /// Whether plain `ws://` was explicitly allowed for this server.
    pub allow_insecure_ws: bool,
}

impl AccountRecord {
    /// The user's root key, for what only the root device may do (certify or revoke devices).
    ///
    /// # Errors
    /// [`StoreError::NoRootKey`] on a device that does not hold it.
    pub fn root_key(&self) -> Result<UserRootKey> {
        self.root_secret
            .as_ref()
            .map(|s| UserRootKey::from_secret_bytes(s))
            .ok_or(StoreError::NoRootKey)
    }
}

/// One entry of the durable outbox: what the user asked to send and, once encrypted, the exact
/// request bytes to (re)send.
///
/// Holds plaintext and a key package, so it is not `Debug`.
pub struct OutboxItem {
    /// Row id, assigned by [`Db::outbox_push`] (ignored there).
    pub id: i64,
    /// The message's id.
    pub message_id: [u8; 16],
    /// The conversation it belongs to.
    pub conversation: String,
    /// The user or room it is addressed to.
    pub recipient: String,
    /// The plaintext.
    pub text: String,
    /// When the user sent it (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// The encrypted request, once built, so a resend does not re-encrypt.
    pub request: Option<Vec<u8>>,
    /// Key material belonging to the request (e.g. the message key), once built.
    pub key_package: Option<Zeroizing<Vec<u8>>>,
    /// How many delivery attempts failed.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// What the item sends.
    pub kind: OutboxKind,
    /// The timers to send with the message; only `expire_after_s` and `burn_after_s` are kept.
    pub timers: MessageTimers,
    /// Opaque bytes of a [`OutboxKind::Receipt`] or [`OutboxKind::Control`] item (empty for
    /// text).
    pub extra: Vec<u8>,
}

/// What an [`OutboxItem`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    /// A message the user wrote (`text`).
    Text,
    /// Read receipts (`extra` says which).
    Receipt,
    /// A control message (`extra` holds it).
    Control,
}

impl OutboxKind {
    const ALL: [OutboxKind; 3] = [Self::Text, Self::Receipt, Self::Control];

    /// The stored code.
    fn code(self) -> i64 {
        match self {
            Self::Text => 0,
            Self::Receipt => 1,
            Self::Control => 2,
        }
    }
}

/// Stores an enum as its integer `code()` and reads it back through `ALL` (an unknown code is
/// an error, never a default).
macro_rules! sql_as_code {
    ($t:ty) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.code()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let code = value.as_i64()?;
                Self::ALL
                    .into_iter()
                    .find(|k| k.code() == code)
                    .ok_or(FromSqlError::OutOfRange(code))
            }
        }
    };
}

sql_as_code!(OutboxKind);

/// What a message of the history is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageKind {
    /// Something a person wrote.
    #[default]
    Text,
    /// A line the client adds to the conversation (a member joined, the timer changed...).
    System,
}

impl MessageKind {
    const ALL: [MessageKind; 2] = [Self::Text, Self::System];

    /// The stored code.
    fn code(self) -> i64 {
        match self {
            Self::Text => 0,
            Self::System => 1,
        }
    }
}

sql_as_code!(MessageKind);

/// The disappearing-message timers of one message.
///
/// The `*_after_s` durations come with the message; the `*_at_ms` deadlines (milliseconds since
/// the Unix epoch) are set when they become known: expiry usually from the sender's timestamp,
/// burn when the message is first displayed ([`Db::mark_displayed`]). Deadlines only ever move
/// earlier ([`Db::set_expire_at`], [`Db::set_burn_at`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageTimers {
    /// Delete this long after it was sent.
    pub expire_after_s: Option<u32>,
    /// Delete this long after it was first displayed.
    pub burn_after_s: Option<u32>,
    /// When the expiry timer runs out.
    pub expire_at_ms: Option<u64>,
    /// When the burn timer runs out.
    pub burn_at_ms: Option<u64>,
    /// When this device first displayed it.
    pub displayed_at_ms: Option<u64>,
}

impl MessageTimers {
    /// When the message must be deleted: the earlier of the two deadlines, if any is set.
    pub fn delete_at_ms(&self) -> Option<u64> {
        match (self.expire_at_ms, self.burn_at_ms) {
            (Some(e), Some(b)) => Some(e.min(b)),
            (e, b) => e.or(b),
        }
    }

    /// Whether the message carries a timer (`expire_after_s` or `burn_after_s`).
    pub fn is_timed(&self) -> bool {
        self.expire_after_s.is_some() || self.burn_after_s.is_some()
    }

    /// Whether the cache seals the text: a timer, or a deadline without one.
    fn seals(&self) -> bool {
        self.is_timed() || self.delete_at_ms().is_some()
    }
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Outgoing, not yet accepted by the relay.
    Sending,
    /// Outgoing, accepted by the relay.
    Sent,
    /// Outgoing, delivered to the recipient's device.
    Delivered,
    /// Outgoing, read by the recipient.
    Read,
    /// Outgoing, given up on.
    Failed,
    /// Incoming and decrypted.
    Received,
    /// Incoming but could not be decrypted.
    Undecryptable,
}

impl MessageState {
    /// Every state, in declaration order.
    pub const ALL: [MessageState; 7] = [
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
        Self::Received,
        Self::Undecryptable,
    ];

    /// The stable lowercase name, as stored and as printed by `--json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Received => "received",
            Self::Undecryptable => "undecryptable",
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message state {s:?}")))
    }
}

impl ToSql for MessageState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for MessageState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str()?.parse().map_err(FromSqlError::other)
    }
}

/// One message of the history.
///
/// `Debug` shows the text's length, not the text: records travel in events and errors that end
/// up in logs and test output.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The message's id, unique in the cache.
    pub message_id: [u8; 16],
    /// The conversation (peer user or room) it belongs to.
    pub conversation: String,
    /// Whether this device's user sent it.
    pub outgoing: bool,
    /// The sending user.
    pub sender: String,
    /// The sending device.
    pub sender_device: [u8; 16],
    /// The sender's timestamp (milliseconds since the Unix epoch).
    pub sent_at_ms: u64,
    /// When it reached this cache (milliseconds since the Unix epoch, local clock).
    pub received_at_ms: u64,
    /// The plaintext.
    pub text: String,
    /// Where it stands.
    pub state: MessageState,
    /// Text or system line.
    pub kind: MessageKind,
    /// Its disappearing-message timers; with any set, the text is sealed (see the module
    /// documentation).
    pub timers: MessageTimers,
}

impl std::fmt::Debug for MessageRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRecord")
            .field("message_id", &self.message_id)
            .field("conversation", &self.conversation)
            .field("outgoing", &self.outgoing)
            .field("sender", &self.sender)
            .field("sender_device", &self.sender_device)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("received_at_ms", &self.received_at_ms)
            .field("text", &Redacted(self.text.len()))
            .field("state", &self.state)
            .field("kind", &self.kind)
            .field("timers", &self.timers)
            .finish()
    }
}

/// Stands for a redacted string of this many bytes in `Debug` output.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

/// One stored session: the peer device's id and its serialized state.
pub type DeviceSession = ([u8; 16], Zeroizing<Vec<u8>>);

/// One line of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation (peer user or room).
    pub conversation: String,
    /// The latest `sent_at_ms` or `received_at_ms` of its messages.
    pub last_activity_ms: u64,
    /// How many messages it holds.
    pub messages: u64,
    /// How many of its incoming messages arrived after the read mark ([`Db::mark_read`]).
    pub unread: u64,
}

/// SQLite integers are signed 64-bit; a timestamp or sequence number beyond `i64::MAX` is
/// refused rather than wrapped into a negative number.
fn sql_u64(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn sql_u64_opt(v: Option<u64>) -> rusqlite::Result<Option<i64>> {
    v.map(sql_u64).transpose()
}

fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
}

fn get_u64_opt(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = row.get(idx)?;
    v.map(|v| u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v)))
        .transpose()
}

/// The latest time SQLite can store: later deadlines are clamped to it.
const MAX_MS: u64 = i64::MAX.unsigned_abs();

/// `at_ms` plus `seconds`, clamped to [`MAX_MS`].
fn after(at_ms: u64, seconds: u32) -> u64 {
    at_ms
        .saturating_add(u64::from(seconds).saturating_mul(1000))
        .min(MAX_MS)
}

/// The earlier of a stored deadline and a new one.
fn earlier(stored: Option<u64>, new: u64) -> u64 {
    stored.map_or(new, |s| s.min(new))
}

/// Stores the key of a sealed message: `?1` its id, `?2` the key.
const PUT_MESSAGE_KEY: &str =
    "INSERT OR REPLACE INTO message_keys (message_id, key) VALUES (?1, ?2)";

/// The keys of `blobs` starting with `?1`: they sort from `?1` up to (excluding) `?1` followed
/// by the byte 0xff, which no UTF-8 text contains. A range on the primary key, so `%` and `_`
/// in the prefix are plain characters (LIKE would treat them as wildcards).
const BLOB_PREFIX_RANGE: &str = "key >= ?1 AND key < ?1 || x'ff'";

/// A sealed text: the ciphertext and the random key it is sealed under.
struct Sealed {
    key: Secret32,
    ciphertext: Vec<u8>,
}

/// Seals `text` under a fresh random key; the message id is the associated data, so a
/// ciphertext cannot be moved to another row.
fn seal_text(message_id: &[u8; 16], text: &str) -> Result<Sealed> {
    let key = Secret32::random()?;
    let (k, nonce) = derive_key_nonce(None, key.expose(), SEAL_INFO);
    let ciphertext = Aead::new(&k).seal(&nonce, message_id, text.as_bytes());
    Ok(Sealed { key, ciphertext })
}

/// Opens what [`seal_text`] sealed.
fn open_text(message_id: &[u8; 16], key: &[u8; 32], ciphertext: &[u8]) -> Result<String> {
    let (k, nonce) = derive_key_nonce(None, key, SEAL_INFO);
    let plain = Aead::new(&k)
        .open(&nonce, message_id, ciphertext)
        .map_err(|_| StoreError::Corrupt("a sealed message does not decrypt".into()))?;
    String::from_utf8(plain)
        .map_err(|_| StoreError::Corrupt("a sealed message is not UTF-8".into()))
}

/// Copies a 32-byte secret column straight into a wiped-on-drop buffer.
fn secret32(row: &Row<'_>, idx: usize) -> rusqlite::Result<Zeroizing<[u8; 32]>> {
    let bytes = row.get_ref(idx)?.as_blob()?;
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != out.len() {
        return Err(rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            Box::new(FromSqlError::InvalidBlobSize {
                expected_size: 32,
                blob_size: bytes.len(),
            }),
        ));
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

/// Copies a secret BLOB column straight into a wiped-on-drop buffer.
fn secret_vec(row: &Row<'_>, idx: usize) -> rusqlite::Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(row.get_ref(idx)?.as_blob()?.to_vec()))
}

fn secret_vec_opt(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Zeroizing<Vec<u8>>>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        v => Ok(Some(Zeroizing::new(v.as_blob()?.to_vec()))),
    }
}

/// What [`message_from_row`] reads, from the `messages` table aliased as `m`. The key of a
/// sealed message is looked up only for sealed rows, so plain history and search cost what
/// they did before messages could be sealed.
const M_COLUMNS: &str = "m.message_id, m.conversation, m.outgoing, m.sender, m.sender_device, \
                         m.sent_at_ms, m.received_at_ms, m.text, m.state, m.kind, \
                         m.expire_after_s, m.burn_after_s, m.expire_at_ms, m.burn_at_ms, \
                         m.displayed_at_ms, m.sealed, \
                         CASE WHEN m.sealed IS NOT NULL THEN (SELECT k.key FROM message_keys AS k \
                                                              WHERE k.message_id = m.message_id) \
                         END";

/// The newest messages of conversation `?1`, at most `?2`, newest first.
fn sql_history() -> String {
    format!(
        "SELECT {M_COLUMNS} FROM messages AS m WHERE m.conversation = ?1
         ORDER BY m.seq DESC LIMIT ?2"
    )
}

/// The messages of conversation `?1` before key `?2`, at most `?3`, newest first.
fn sql_history_before() -> String {
    format!(
        "SELECT {M_COLUMNS} FROM messages AS m WHERE m.conversation = ?1 AND m.seq < ?2
         ORDER BY m.seq DESC LIMIT ?3"
    )
}

/// Matches of FTS query `?1`, at most `?2`, newest first; within conversation `?3` if
/// `in_conversation`.
fn sql_search(in_conversation: bool) -> String {
    let within = if in_conversation {
        "AND m.conversation = ?3"
    } else {
        ""
    };
    // CROSS JOIN keeps the index as the outer loop: it yields matches newest first (rowid
    // order is history order), so the scan stops after `limit` rows instead of sorting every
    // match.
    format!(
        "SELECT {M_COLUMNS} FROM messages_fts CROSS JOIN messages AS m
             ON m.seq = messages_fts.rowid
         WHERE messages_fts MATCH ?1 {within}
         ORDER BY messages_fts.rowid DESC LIMIT ?2"
    )
}

/// Most terms of a search query; more add nothing a person would type but cost time.
const MAX_QUERY_TERMS: usize = 32;

/// Turns what a person typed into a safe FTS5 query, or `None` if it has nothing to search for.
///
/// Each whitespace-separated word becomes a quoted string, so FTS5 operators and syntax
/// (`AND`, `NEAR`, `*`, `^`, `"`, `:`, parentheses) are searched for as text and can never
/// make the query invalid; inside one word, punctuation separates tokens that must follow each
/// other (`foo-bar` finds "foo bar"). Words without a letter or digit are dropped. The last word
/// matches as a prefix, for search-as-you-type, unless the input ends in whitespace (the word is
/// finished) or it is a single character (which would match most of the cache, slowly: the
/// index keeps prefixes of two and three characters).
pub(super) fn fts_query(input: &str) -> Option<String> {
    // Control characters separate words too: FTS5 would read a NUL as the end of the query.
    let separator = |c: char| c.is_whitespace() || c.is_control();
    let words: Vec<&str> = input
        .split(separator)
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .take(MAX_QUERY_TERMS)
        .collect();
    let prefix = !input.ends_with(separator);
    let mut query = String::with_capacity(input.len() + 4 * words.len());
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            query.push(' ');
        }
        query.push('"');
        query.push_str(&word.replace('"', "\"\""));
        query.push('"');
        if prefix && i + 1 == words.len() && word.chars().nth(1).is_some() {
            query.push('*');
        }
    }
    (!query.is_empty()).then_some(query)
}

/// A `usize` limit as SQLite's `LIMIT`: beyond `i64` means "all", which a negative limit says.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(-1)
}

/// A message row as stored: a sealed text still has to be opened ([`StoredMessage::open`]).
struct StoredMessage {
    record: MessageRecord,
    /// The ciphertext of a sealed text.
    sealed: Option<Vec<u8>>,
    /// The key of a sealed text, if it is stored.
    key: Option<Zeroizing<[u8; 32]>>,
}

impl StoredMessage {
    /// The record with its text decrypted.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a sealed text has no key or does not decrypt.
    fn open(self) -> Result<MessageRecord> {
        let mut record = self.record;
        if let Some(ciphertext) = self.sealed {
            let key = self.key.ok_or_else(|| {
                StoreError::Corrupt("the key of a sealed message is missing".into())
            })?;
            record.text = open_text(&record.message_id, &key, &ciphertext)?;
        }
        Ok(record)
    }
}

/// Reads the columns of [`M_COLUMNS`].
fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let sealed: Option<Vec<u8>> = row.get(15)?;
    let key = match row.get_ref(16)? {
        ValueRef::Null => None,
        _ => Some(secret32(row, 16)?),
    };
    Ok(StoredMessage {
        record: MessageRecord {
            message_id: row.get(0)?,
            conversation: row.get(1)?,
            outgoing: row.get(2)?,
            sender: row.get(3)?,
            sender_device: row.get(4)?,
            sent_at_ms: get_u64(row, 5)?,
            received_at_ms: get_u64(row, 6)?,
            text: row.get(7)?,
            state: row.get(8)?,
            kind: row.get(9)?,
            timers: MessageTimers {
                expire_after_s: row.get(10)?,
                burn_after_s: row.get(11)?,
                expire_at_ms: get_u64_opt(row, 12)?,
                burn_at_ms: get_u64_opt(row, 13)?,
                displayed_at_ms: get_u64_opt(row, 14)?,
            },
        },
        sealed,
        key,
    })
}

/// Collects message rows, opening sealed texts.
fn open_all(
    rows: impl Iterator<Item = rusqlite::Result<StoredMessage>>,
) -> Result<Vec<MessageRecord>> {
    rows.map(|r| r?.open()).collect()
}

const OUTBOX_COLUMNS: &str = "id, message_id, conversation, recipient, text, created_at_ms, \
                              request, key_package, attempts, last_error, kind, \
                              expire_after_s, burn_after_s, extra";

fn outbox_from_row(row: &Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: row.get(0)?,
        message_id: row.get(1)?,
        conversation: row.get(2)?,
        recipient: row.get(3)?,
        text: row.get(4)?,
        created_at_ms: get_u64(row, 5)?,
        request: row.get(6)?,
        key_package: secret_vec_opt(row, 7)?,
        attempts: row.get(8)?,
        last_error: row.get(9)?,
        kind: row.get(10)?,
        timers: MessageTimers {
            expire_after_s: row.get(11)?,
            burn_after_s: row.get(12)?,
            ..MessageTimers::default()
        },
        extra: row.get(13)?,
    })
}

impl<'a> Db<'a> {
    pub(super) fn new(conn: &'a Connection) -> Self {
        Self(conn)
    }

    /// Runs `f` atomically: a SAVEPOINT works both in autocommit mode and nested inside
    /// [`super::Store::transaction`], where a plain `BEGIN` would fail.
    fn atomically<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.0.execute_batch("SAVEPOINT cinder_db")?;
        let result = f().and_then(|v| {
            self.0.execute_batch("RELEASE cinder_db")?;
            Ok(v)
        });
        if result.is_err() {
            // Reporting the first error matters more than a failing cleanup.
            let _ = self
                .0
                .execute_batch("ROLLBACK TO cinder_db; RELEASE cinder_db");
        }
        result
    }

    // --- account -------------------------------------------------------------------------

    /// Stores the account, replacing any previous one.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_account(&self, a: &AccountRecord) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO account (id, server_url, username, display_name, device_id,
                 network_id, network_name, relay_id, is_admin, root_public, root_secret,
                 device_signing_secret, device_identity_secret, device_cert, created_at,
                 allow_insecure_ws)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                a.server_url,
                a.username,
                a.display_name,
                a.device_id,
                a.network_id,
                a.network_name,
                a.relay_id,
                a.is_admin,
                &a.root_public[..],
                a.root_secret.as_ref().map(|s| &s[..]),
                &a.device_signing_secret[..],
                &a.device_identity_secret[..],
                a.device_cert,
                sql_u64(a.created_at)?,
                a.allow_insecure_ws,
            ],
        )?;
        Ok(())
    }

    /// The account, if one was stored.
    ///
    /// # Errors
    /// SQL errors.
    pub fn account(&self) -> Result<Option<AccountRecord>> {
        Ok(self
            .0
            .query_row(
                "SELECT server_url, username, display_name, device_id, network_id, network_name,
                        relay_id, is_admin, root_public, root_secret, device_signing_secret,
                        device_identity_secret, device_cert, created_at, allow_insecure_ws
                 FROM account WHERE id = 1",
                [],
                |r| {
                    Ok(AccountRecord {
                        server_url: r.get(0)?,
                        username: r.get(1)?,
                        display_name: r.get(2)?,
                        device_id: r.get(3)?,
                        network_id: r.get(4)?,
                        network_name: r.get(5)?,
                        relay_id: r.get(6)?,
                        is_admin: r.get(7)?,
                        root_public: r.get(8)?,
                        root_secret: match r.get_ref(9)? {
                            ValueRef::Null => None,
                            _ => Some(secret32(r, 9)?),
                        },
                        device_signing_secret: secret32(r, 10)?,
                        device_identity_secret: secret32(r, 11)?,
                        device_cert: r.get(12)?,
                        created_at: get_u64(r, 13)?,
                        allow_insecure_ws: r.get(14)?,
                    })
                },
            )
            .optional()?)
    }

    // --- opaque state --------------------------------------------------------------------

    /// Stores an opaque value under `key` (e.g. `"prekeys"`), replacing any previous one.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_blob(&self, key: &str, value: &[u8]) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO blobs (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// The value stored under `key`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn blob(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .0
            .query_row("SELECT value FROM blobs WHERE key = ?1", [key], |r| {
                secret_vec(r, 0)
            })
            .optional()?)
    }

    /// Every value whose key starts with `prefix` (byte for byte: `"room/a/"` matches
    /// `"room/a/x"` but not `"room/ab"`), ordered by key.
    ///
    /// # Errors
    /// SQL errors.
    pub fn blobs_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT key, value FROM blobs WHERE {BLOB_PREFIX_RANGE} ORDER BY key"
        ))?;
        let rows = stmt.query_map([prefix], |r| Ok((r.get(0)?, secret_vec(r, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes every value whose key starts with `prefix` (as [`Self::blobs_with_prefix`]);
    /// returns how many.
    ///
    /// # Errors
    /// SQL errors.
    pub fn delete_blobs_with_prefix(&self, prefix: &str) -> Result<usize> {
        Ok(self
            .0
            .prepare_cached(&format!("DELETE FROM blobs WHERE {BLOB_PREFIX_RANGE}"))?
            .execute([prefix])?)
    }

    // --- pinned root keys ----------------------------------------------------------------

    /// Pins `user`'s root public key, replacing a previous pin.
    ///
    /// # Errors
    /// SQL errors.
    pub fn pin_root_key(&self, user: &str, key: &[u8; 32], now: u64) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO root_keys (user, key, pinned_at) VALUES (?1, ?2, ?3)",
            params![user, key, sql_u64(now)?],
        )?;
        Ok(())
    }

    /// The root public key pinned for `user`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn root_key(&self, user: &str) -> Result<Option<[u8; 32]>> {
        Ok(self
            .0
            .query_row("SELECT key FROM root_keys WHERE user = ?1", [user], |r| {
                r.get(0)
            })
            .optional()?)
    }

    // --- ratchet sessions ----------------------------------------------------------------

    /// Stores the serialized session with one device of `user`, replacing any previous one.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_session(&self, user: &str, device: &[u8; 16], state: &[u8]) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO sessions (user, device, state) VALUES (?1, ?2, ?3)",
            params![user, device, state],
        )?;
        Ok(())
    }

    /// The serialized session with one device of `user`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn session(&self, user: &str, device: &[u8; 16]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .0
            .query_row(
                "SELECT state FROM sessions WHERE user = ?1 AND device = ?2",
                params![user, device],
                |r| secret_vec(r, 0),
            )
            .optional()?)
    }

    /// Every session with a device of `user`, ordered by device id.
    ///
    /// # Errors
    /// SQL errors.
    pub fn sessions_for(&self, user: &str) -> Result<Vec<DeviceSession>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT device, state FROM sessions WHERE user = ?1 ORDER BY device")?;
        let rows = stmt.query_map([user], |r| Ok((r.get(0)?, secret_vec(r, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets the session with one device of `user` (no error if there was none).
    ///
    /// # Errors
    /// SQL errors.
    pub fn delete_session(&self, user: &str, device: &[u8; 16]) -> Result<()> {
        self.0.execute(
            "DELETE FROM sessions WHERE user = ?1 AND device = ?2",
            params![user, device],
        )?;
        Ok(())
    }

    // --- device lists --------------------------------------------------------------------

    /// Replaces the known active device list of `user` (duplicates are kept once).
    ///
    /// # Errors
    /// SQL errors.
    pub fn set_devices(&self, user: &str, devices: &[[u8; 16]]) -> Result<()> {
        self.atomically(|| {
            self.0
                .execute("DELETE FROM devices WHERE user = ?1", [user])?;
            let mut stmt = self
                .0
                .prepare_cached("INSERT OR IGNORE INTO devices (user, device) VALUES (?1, ?2)")?;
            for d in devices {
                stmt.execute(params![user, d])?;
            }
            Ok(())
        })
    }

    /// The known active devices of `user`, in the order last given to [`Self::set_devices`].
    ///
    /// # Errors
    /// SQL errors.
    pub fn devices(&self, user: &str) -> Result<Vec<[u8; 16]>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT device FROM devices WHERE user = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([user], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // --- outbox --------------------------------------------------------------------------

    /// Appends `item` to the outbox and returns its row id (`item.id` is ignored; of
    /// `item.timers`, only the `*_after_s` durations are kept).
    ///
    /// # Errors
    /// SQL errors.
    pub fn outbox_push(&self, item: &OutboxItem) -> Result<i64> {
        self.0.execute(
            "INSERT INTO outbox (message_id, conversation, recipient, text, created_at_ms,
                                 request, key_package, attempts, last_error, kind,
                                 expire_after_s, burn_after_s, extra)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                item.message_id,
                item.conversation,
                item.recipient,
                item.text,
                sql_u64(item.created_at_ms)?,
                item.request,
                item.key_package.as_ref().map(|k| k.as_slice()),
                item.attempts,
                item.last_error,
                item.kind,
                item.timers.expire_after_s,
                item.timers.burn_after_s,
                item.extra,
            ],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    /// Every outbox item, oldest first.
    ///
    /// # Errors
    /// SQL errors.
    pub fn outbox_pending(&self) -> Result<Vec<OutboxItem>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"))?;
        let rows = stmt.query_map([], outbox_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records the encrypted request (and its key package) of item `id`; no-op for an unknown id.
    ///
    /// # Errors
    /// SQL errors.
    pub fn outbox_set_request(&self, id: i64, request: &[u8], key_package: &[u8]) -> Result<()> {
        self.0.execute(
            "UPDATE outbox SET request = ?2, key_package = ?3 WHERE id = ?1",
            params![id, request, key_package],
        )?;
        Ok(())
    }

    /// Removes item `id` (no error if it is gone already).
    ///
    /// # Errors
    /// SQL errors.
    pub fn outbox_remove(&self, id: i64) -> Result<()> {
        self.0.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records the attempt count and last error of item `id`; no-op for an unknown id.
    ///
    /// # Errors
    /// SQL errors.
    pub fn outbox_set_attempts(
        &self,
        id: i64,
        attempts: u32,
        last_error: Option<&str>,
    ) -> Result<()> {
        self.0.execute(
            "UPDATE outbox SET attempts = ?2, last_error = ?3 WHERE id = ?1",
            params![id, attempts, last_error],
        )?;
        Ok(())
    }

    // --- messages ------------------------------------------------------------------------

    /// Adds a message to the history; returns `false` and changes nothing if its id is known.
    ///
    /// A message with timers is sealed under a key of its own and left out of the search index
    /// (see the module documentation); its deletion deadline is the earlier of the record's
    /// `expire_at_ms` and `burn_at_ms`.
    ///
    /// # Errors
    /// SQL errors, [`StoreError::Crypto`] if the OS random generator fails.
    pub fn insert_message(&self, m: &MessageRecord) -> Result<bool> {
        Ok(self.insert_messages(std::slice::from_ref(m))? == 1)
    }

    /// Adds messages to the history, atomically; returns how many were new (known ids change
    /// nothing). The text of untimed messages is indexed for [`Self::search`], timed ones are
    /// sealed instead ([`Self::insert_message`]); their conversations' summaries are updated.
    ///
    /// Prefer one call for a batch (a mailbox sync, an import) inside one transaction: the
    /// search index then writes one segment for the batch rather than one per message.
    ///
    /// # Errors
    /// SQL and random generator errors; nothing is inserted then.
    pub fn insert_messages(&self, messages: &[MessageRecord]) -> Result<usize> {
        self.atomically(|| {
            let mut insert = self.0.prepare_cached(INSERT_MESSAGE)?;
            let mut count = self.0.prepare_cached(COUNT_MESSAGE)?;
            let mut put_key = self.0.prepare_cached(PUT_MESSAGE_KEY)?;
            let mut new = Vec::with_capacity(messages.len());
            let mut sealed_count = 0;
            for m in messages {
                let seq = schema::next_seq(self.0, m.sent_at_ms)?;
                let received = sql_u64(m.received_at_ms)?;
                let sealed = if m.timers.seals() {
                    Some(seal_text(&m.message_id, &m.text)?)
                } else {
                    None
                };
                let t = &m.timers;
                // ON CONFLICT names the id column, so other constraint violations still raise
                // errors (INSERT OR IGNORE would swallow them too).
                let n = insert.execute(params![
                    m.message_id,
                    m.conversation,
                    m.outgoing,
                    m.sender,
                    m.sender_device,
                    sql_u64(m.sent_at_ms)?,
                    received,
                    if sealed.is_some() {
                        ""
                    } else {
                        m.text.as_str()
                    },
                    m.state,
                    seq,
                    m.kind,
                    t.expire_after_s,
                    t.burn_after_s,
                    sql_u64_opt(t.expire_at_ms)?,
                    sql_u64_opt(t.burn_at_ms)?,
                    sql_u64_opt(t.displayed_at_ms)?,
                    sql_u64_opt(t.delete_at_ms())?,
                    sealed.as_ref().map(|s| s.ciphertext.as_slice()),
                ])?;
                if n == 1 {
                    let activity = sql_u64(m.sent_at_ms.max(m.received_at_ms))?;
                    count.execute(params![m.conversation, activity, !m.outgoing, received])?;
                    match &sealed {
                        Some(s) => {
                            put_key.execute(params![m.message_id, &s.key.expose()[..]])?;
                            sealed_count += 1;
                        }
                        // Only clear text is indexed: an index copy of a timed message's
                        // words would outlive the message, since shredding its key cannot
                        // reach them.
                        None => new.push((seq, m.text.as_str())),
                    }
                }
            }
            // The index last: FTS5 keeps the batch's terms in memory and writes them as one
            // segment (see `schema`), provided the keys ascend; a smaller key makes it write
            // out what it holds first.
            new.sort_unstable_by_key(|&(seq, _)| seq);
            let mut index = self.0.prepare_cached(INDEX_MESSAGE)?;
            for (seq, text) in &new {
                index.execute(params![seq, text])?;
            }
            Ok(new.len() + sealed_count)
        })
    }

    /// Deletes a message ("delete for me"); returns `false` if there was none.
    ///
    /// Its text leaves the search index in the same transaction (no delete markers are left to
    /// a later merge), the key of a sealed message goes with it, and the freed pages are
    /// zeroed; the conversation's summary follows. Checkpoint afterwards
    /// ([`super::Store::checkpoint_truncate`]) to drop the old page versions from the WAL.
    /// Expiry and burns use [`Self::shred`], which also drops pending sends.
    ///
    /// # Errors
    /// SQL errors.
    pub fn delete_message(&self, message_id: &[u8; 16]) -> Result<bool> {
        let n = self
            .0
            .prepare_cached("DELETE FROM messages WHERE message_id = ?1")?
            .execute([message_id])?;
        Ok(n == 1)
    }

    /// Records why a message of ours failed (replacing an earlier reason).
    ///
    /// # Errors
    /// SQL errors.
    pub fn set_failure(&self, message_id: &[u8; 16], reason: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO message_failures (message_id, reason) VALUES (?1, ?2)
                 ON CONFLICT (message_id) DO UPDATE SET reason = excluded.reason",
            )?
            .execute(params![message_id, reason])?;
        Ok(())
    }

    /// Why a message of ours failed, if it did.
    ///
    /// # Errors
    /// SQL errors.
    pub fn failure(&self, message_id: &[u8; 16]) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT reason FROM message_failures WHERE message_id = ?1")?
            .query_row([message_id], |r| r.get(0))
            .optional()?)
    }

    /// Forgets why a message failed (it is being retried).
    ///
    /// # Errors
    /// SQL errors.
    pub fn clear_failure(&self, message_id: &[u8; 16]) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM message_failures WHERE message_id = ?1")?
            .execute([message_id])?;
        Ok(())
    }

    /// Sets the state of a message; returns `false` if there is no such message.
    ///
    /// Any transition is accepted: ordering receipts is the session engine's business.
    ///
    /// # Errors
    /// SQL errors.
    pub fn set_message_state(&self, message_id: &[u8; 16], state: MessageState) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE messages SET state = ?2 WHERE message_id = ?1",
            params![message_id, state],
        )?;
        Ok(n == 1)
    }

    // --- timers, shredding, receipts ---------------------------------------------------

    /// The timers of a message and whether its text is sealed; `None` if it is not cached.
    fn timers(&self, message_id: &[u8; 16]) -> Result<Option<(MessageTimers, bool)>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT expire_after_s, burn_after_s, expire_at_ms, burn_at_ms, displayed_at_ms,
                        sealed IS NOT NULL
                 FROM messages WHERE message_id = ?1",
            )?
            .query_row([message_id], |r| {
                Ok((
                    MessageTimers {
                        expire_after_s: r.get(0)?,
                        burn_after_s: r.get(1)?,
                        expire_at_ms: get_u64_opt(r, 2)?,
                        burn_at_ms: get_u64_opt(r, 3)?,
                        displayed_at_ms: get_u64_opt(r, 4)?,
                    },
                    r.get(5)?,
                ))
            })
            .optional()?)
    }

    /// Stores the deadlines and display time of `t`, and the deletion deadline they imply.
    fn write_deadlines(&self, message_id: &[u8; 16], t: &MessageTimers) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE messages SET expire_at_ms = ?2, burn_at_ms = ?3, displayed_at_ms = ?4,
                                     delete_at_ms = ?5
                 WHERE message_id = ?1",
            )?
            .execute(params![
                message_id,
                sql_u64_opt(t.expire_at_ms)?,
                sql_u64_opt(t.burn_at_ms)?,
                sql_u64_opt(t.displayed_at_ms)?,
                sql_u64_opt(t.delete_at_ms())?,
            ])?;
        Ok(())
    }

    /// Seals the text of a message that was stored in clear (it got a deadline after it
    /// arrived): the text moves under a fresh key and leaves the search index.
    fn seal_stored(&self, message_id: &[u8; 16]) -> Result<()> {
        let text: Option<String> = self
            .0
            .prepare_cached("SELECT text FROM messages WHERE message_id = ?1 AND sealed IS NULL")?
            .query_row([message_id], |r| r.get(0))
            .optional()?;
        let Some(text) = text else {
            return Ok(());
        };
        let sealed = seal_text(message_id, &text)?;
        // The text trigger takes the old text out of the index (see `schema`).
        self.0
            .prepare_cached("UPDATE messages SET text = '', sealed = ?2 WHERE message_id = ?1")?
            .execute(params![message_id, sealed.ciphertext])?;
        self.0
            .prepare_cached(PUT_MESSAGE_KEY)?
            .execute(params![message_id, &sealed.key.expose()[..]])?;
        Ok(())
    }

    /// Moves the expiry deadline of a message to `at_ms` if that is earlier than the stored
    /// one (or none is stored): a timer can be shortened, never extended. Returns `false` if
    /// the message is not cached, `true` otherwise (whether or not the deadline moved).
    ///
    /// A message stored in clear (no timer when it arrived) is sealed now and leaves the
    /// search index, so it is crypto-shredded like any timed message.
    ///
    /// # Errors
    /// SQL errors, [`StoreError::Crypto`] if the OS random generator fails.
    pub fn set_expire_at(&self, message_id: &[u8; 16], at_ms: u64) -> Result<bool> {
        self.atomically(|| {
            let Some((mut t, sealed)) = self.timers(message_id)? else {
                return Ok(false);
            };
            let at = earlier(t.expire_at_ms, at_ms.min(MAX_MS));
            if t.expire_at_ms != Some(at) {
                t.expire_at_ms = Some(at);
                self.write_deadlines(message_id, &t)?;
            }
            if !sealed {
                self.seal_stored(message_id)?;
            }
            Ok(true)
        })
    }

    /// Moves the burn deadline of a message to `at_ms` if that is earlier than the stored one
    /// (another device of ours, or the sender, reports when it was read). Returns `false` if
    /// the message is not cached, `true` otherwise; seals a message stored in clear, as
    /// [`Self::set_expire_at`] does.
    ///
    /// # Errors
    /// SQL errors, [`StoreError::Crypto`] if the OS random generator fails.
    pub fn set_burn_at(&self, message_id: &[u8; 16], at_ms: u64) -> Result<bool> {
        self.atomically(|| {
            let Some((mut t, sealed)) = self.timers(message_id)? else {
                return Ok(false);
            };
            let at = earlier(t.burn_at_ms, at_ms.min(MAX_MS));
            if t.burn_at_ms != Some(at) {
                t.burn_at_ms = Some(at);
                self.write_deadlines(message_id, &t)?;
            }
            if !sealed {
                self.seal_stored(message_id)?;
            }
            Ok(true)
        })
    }

    /// Records that this device displayed the message at `now_ms`, the first time only.
    ///
    /// On the first call for a message with `burn_after_s`, its burn deadline becomes
    /// `now_ms + burn_after_s` (or stays at an earlier one already known) and that deadline is
    /// returned: the caller tells the sender and our other devices. Returns `None` and changes
    /// nothing if the message is not cached or was displayed before (the earliest display
    /// time is kept, so the burn timer starts once); returns `None` after recording the
    /// display time if the message has no burn timer.
    ///
    /// # Errors
    /// SQL errors.
    pub fn mark_displayed(&self, message_id: &[u8; 16], now_ms: u64) -> Result<Option<u64>> {
        self.atomically(|| {
            let Some((mut t, _)) = self.timers(message_id)? else {
                return Ok(None);
            };
            if t.displayed_at_ms.is_some() {
                return Ok(None);
            }
            let now_ms = now_ms.min(MAX_MS);
            t.displayed_at_ms = Some(now_ms);
            let burn = t
                .burn_after_s
                .map(|s| earlier(t.burn_at_ms, after(now_ms, s)));
            if burn.is_some() {
                t.burn_at_ms = burn;
            }
            self.write_deadlines(message_id, &t)?;
            Ok(burn)
        })
    }

    /// The earliest deletion deadline of any cached message, to set the next wake-up by.
    ///
    /// # Errors
    /// SQL errors.
    pub fn next_deletion(&self) -> Result<Option<u64>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT delete_at_ms FROM messages WHERE delete_at_ms IS NOT NULL
                 ORDER BY delete_at_ms LIMIT 1",
            )?
            .query_row([], |r| get_u64(r, 0))
            .optional()?)
    }

    /// The messages whose deletion deadline is at or before `now_ms`, as (id, conversation),
    /// soonest deadline first (ties in history order).
    ///
    /// # Errors
    /// SQL errors.
    pub fn due_deletions(&self, now_ms: u64) -> Result<Vec<([u8; 16], String)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT message_id, conversation FROM messages
             WHERE delete_at_ms IS NOT NULL AND delete_at_ms <= ?1
             ORDER BY delete_at_ms, seq",
        )?;
        let rows = stmt.query_map([sql_u64(now_ms.min(MAX_MS))?], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Crypto-shreds messages (expiry, burn): deletes each one's key and row, its search index
    /// entry if it had one, and any outbox item with its id (a timed message still waiting to
    /// be sent is not sent after it expired). The conversations' summaries (counts, unread,
    /// last activity) follow; a conversation left empty leaves the list. Returns how many
    /// messages were deleted; unknown ids are skipped.
    ///
    /// Freed space is zeroed (`secure_delete`), but old page versions stay in the WAL until a
    /// checkpoint: [`super::Store::shred_due`] does both.
    ///
    /// # Errors
    /// SQL errors; nothing is deleted then.
    pub fn shred(&self, ids: &[[u8; 16]]) -> Result<usize> {
        self.atomically(|| {
            let mut key = self
                .0
                .prepare_cached("DELETE FROM message_keys WHERE message_id = ?1")?;
            let mut outbox = self
                .0
                .prepare_cached("DELETE FROM outbox WHERE message_id = ?1")?;
            let mut row = self
                .0
                .prepare_cached("DELETE FROM messages WHERE message_id = ?1")?;
            let mut deleted = 0;
            for id in ids {
                key.execute([id])?;
                outbox.execute([id])?;
                deleted += row.execute([id])?;
            }
            Ok(deleted)
        })
    }

    /// Shreds every message of `conversation` (as [`Self::shred`]) and forgets its summary,
    /// read mark and timer settings, e.g. when a room is deleted. Returns how many messages
    /// were deleted.
    ///
    /// Outbox items of the conversation that are not messages of it (receipts, control
    /// messages) are left alone: a final control message may still have to go out.
    ///
    /// # Errors
    /// SQL errors; nothing is deleted then.
    pub fn delete_conversation(&self, conversation: &str) -> Result<usize> {
        self.atomically(|| {
            self.0.execute(
                "DELETE FROM outbox WHERE message_id IN
                     (SELECT message_id FROM messages WHERE conversation = ?1)",
                [conversation],
            )?;
            // The delete trigger takes each key and index entry along (see `schema`).
            let deleted = self.0.execute(
                "DELETE FROM messages WHERE conversation = ?1",
                [conversation],
            )?;
            self.0.execute(
                "DELETE FROM conversations WHERE conversation = ?1",
                [conversation],
            )?;
            self.0.execute(
                "DELETE FROM conversation_settings WHERE conversation = ?1",
                [conversation],
            )?;
            Ok(deleted)
        })
    }

    /// The incoming text messages of `conversation` that were displayed
    /// ([`Self::mark_displayed`]) but whose read receipt has not been sent
    /// ([`Self::mark_receipts_sent`]), in history order. System lines never get receipts.
    ///
    /// # Errors
    /// SQL errors.
    pub fn undisplayed_receipts(&self, conversation: &str) -> Result<Vec<[u8; 16]>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT message_id FROM messages
             WHERE conversation = ?1 AND outgoing = 0 AND receipt_sent = 0
               AND displayed_at_ms IS NOT NULL AND kind = 0
             ORDER BY seq",
        )?;
        let rows = stmt.query_map([conversation], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The incoming text messages among the `newest` messages of a conversation that were never
    /// displayed, oldest first: what showing the conversation displays now. Reads ids only (no
    /// decryption) and never more than `newest` rows.
    ///
    /// # Errors
    /// SQL errors.
    pub fn undisplayed(&self, conversation: &str, newest: usize) -> Result<Vec<[u8; 16]>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT message_id FROM (
                 SELECT seq, message_id, outgoing, kind, displayed_at_ms FROM messages
                 WHERE conversation = ?1 ORDER BY seq DESC LIMIT ?2)
             WHERE outgoing = 0 AND kind = 0 AND displayed_at_ms IS NULL
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(
            params![conversation, i64::try_from(newest).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that the read receipts of these messages were sent (unknown ids are skipped).
    ///
    /// # Errors
    /// SQL errors; nothing is marked then.
    pub fn mark_receipts_sent(&self, ids: &[[u8; 16]]) -> Result<()> {
        self.atomically(|| {
            let mut stmt = self
                .0
                .prepare_cached("UPDATE messages SET receipt_sent = 1 WHERE message_id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
            Ok(())
        })
    }

    /// The timer defaults of `conversation` for new messages: (`expire_after_s`,
    /// `burn_after_s`), both `None` unless set.
    ///
    /// # Errors
    /// SQL errors.
    pub fn conversation_timers(&self, conversation: &str) -> Result<(Option<u32>, Option<u32>)> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT expire_after_s, burn_after_s FROM conversation_settings
                 WHERE conversation = ?1",
            )?
            .query_row([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((None, None)))
    }

    /// Sets the timer defaults of `conversation` (both `None` turns them off). Messages already
    /// cached keep their timers.
    ///
    /// # Errors
    /// SQL errors.
    pub fn set_conversation_timers(
        &self,
        conversation: &str,
        expire_after_s: Option<u32>,
        burn_after_s: Option<u32>,
    ) -> Result<()> {
        if expire_after_s.is_none() && burn_after_s.is_none() {
            self.0.execute(
                "DELETE FROM conversation_settings WHERE conversation = ?1",
                [conversation],
            )?;
        } else {
            self.0.execute(
                "INSERT OR REPLACE INTO conversation_settings
                     (conversation, expire_after_s, burn_after_s)
                 VALUES (?1, ?2, ?3)",
                params![conversation, expire_after_s, burn_after_s],
            )?;
        }
        Ok(())
    }

    /// One message by id.
    ///
    /// # Errors
    /// SQL errors, [`StoreError::Corrupt`] if its sealed text does not open.
    pub fn message(&self, message_id: &[u8; 16]) -> Result<Option<MessageRecord>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {M_COLUMNS} FROM messages AS m WHERE m.message_id = ?1"
            ))?
            .query_row([message_id], message_from_row)
            .optional()?
            .map(StoredMessage::open)
            .transpose()
    }

    /// The `limit` newest messages of `conversation`, returned oldest first.
    ///
    /// Ordered by the sender's timestamp, ties broken by arrival in this cache.
    ///
    /// # Errors
    /// SQL errors.
    pub fn history(&self, conversation: &str, limit: usize) -> Result<Vec<MessageRecord>> {
        self.history_before(conversation, None, limit)
    }

    /// One page of `conversation`: the `limit` messages just older than message `before` (the
    /// newest ones if `None`), returned oldest first, in the order of [`Self::history`].
    ///
    /// Walks an index backwards from `before`, so a page costs the same at the top of a
    /// million-message history as at its start. To page back, pass the first message of the
    /// previous page; an empty page means the start was reached. `before` may belong to
    /// another conversation; its place in time is what counts.
    ///
    /// # Errors
    /// [`StoreError::UnknownMessage`] if `before` is not in the cache (deleted since the last
    /// page, say); [`StoreError::Corrupt`] if a sealed text does not open; SQL errors.
    pub fn history_before(
        &self,
        conversation: &str,
        before: Option<[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        let limit = sql_limit(limit);
        let mut page = match before {
            None => {
                let mut stmt = self.0.prepare_cached(&sql_history())?;
                open_all(stmt.query_map(params![conversation, limit], message_from_row)?)?
            }
            Some(id) => {
                let seq: i64 = self
                    .0
                    .prepare_cached("SELECT seq FROM messages WHERE message_id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()?
                    .ok_or(StoreError::UnknownMessage)?;
                let mut stmt = self.0.prepare_cached(&sql_history_before())?;
                open_all(stmt.query_map(params![conversation, seq, limit], message_from_row)?)?
            }
        };
        page.reverse();
        Ok(page)
    }

    /// Every conversation with its last activity, message count and unread count, most recent
    /// first.
    ///
    /// Reads the summaries the triggers keep, one row per conversation: it costs the same with
    /// a million messages in the cache as with ten.
    ///
    /// # Errors
    /// SQL errors.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT conversation, last_activity_ms, messages, unread FROM conversations
             ORDER BY last_activity_ms DESC, conversation ASC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ConversationSummary {
                conversation: r.get(0)?,
                last_activity_ms: get_u64(r, 1)?,
                messages: get_u64(r, 2)?,
                unread: get_u64(r, 3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks the incoming messages of `conversation` that arrived (by this cache's clock,
    /// `received_at_ms`) up to `up_to_ms` as read; returns the conversation's unread count.
    ///
    /// The mark only moves forward, so a late or repeated call cannot unread anything. Arrival
    /// time rather than the sender's timestamp, because a sender's clock may run ahead: marking
    /// "everything up to now" must cover every message already shown. Costs one index step per
    /// message still unread afterwards.
    ///
    /// # Errors
    /// SQL errors.
    pub fn mark_read(&self, conversation: &str, up_to_ms: u64) -> Result<u64> {
        let unread = self
            .0
            .prepare_cached(
                "UPDATE conversations SET
                     last_read_ms = max(last_read_ms, ?2),
                     unread = (SELECT count(*) FROM messages
                               WHERE conversation = ?1 AND outgoing = 0
                                 AND received_at_ms > max(conversations.last_read_ms, ?2))
                 WHERE conversation = ?1
                 RETURNING unread",
            )?
            .query_row(params![conversation, sql_u64(up_to_ms)?], |r| get_u64(r, 0))
            .optional()?;
        Ok(unread.unwrap_or(0))
    }

    // --- search --------------------------------------------------------------------------

    /// The `limit` newest messages (across all conversations) whose text matches `query`,
    /// newest first.
    ///
    /// Timed messages are never found: they are not in the index (see the module
    /// documentation).
    ///
    /// `query` is what a person typed. Every whitespace-separated word must occur (punctuation
    /// inside a word joins tokens that must follow each other: `foo-bar` finds "foo bar"); the
    /// last word matches as a prefix, for search-as-you-type, unless the input ends in
    /// whitespace or the word is a single character. Matching ignores case and diacritics.
    /// FTS5 syntax (`AND`, `*`, `"`, `col:`, `NEAR(...)`) is searched for as text, so nothing
    /// typed can produce a query error; input without a letter or digit finds nothing, and only
    /// the first 32 words count.
    ///
    /// Walks the index newest first and stops after `limit` matches: about a millisecond for
    /// 50 results in a million-message cache.
    ///
    /// # Errors
    /// SQL errors.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<MessageRecord>> {
        self.search_matching(None, query, limit)
    }

    /// [`Self::search`] within one conversation.
    ///
    /// # Errors
    /// SQL errors.
    pub fn search_in(
        &self,
        conversation: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        self.search_matching(Some(conversation), query, limit)
    }

    fn search_matching(
        &self,
        conversation: Option<&str>,
        query: &str,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        let Some(fts) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let limit = sql_limit(limit);
        match conversation {
            None => {
                let mut stmt = self.0.prepare_cached(&sql_search(false))?;
                open_all(stmt.query_map(params![fts, limit], message_from_row)?)
            }
            Some(c) => {
                let mut stmt = self.0.prepare_cached(&sql_search(true))?;
                open_all(stmt.query_map(params![fts, limit, c], message_from_row)?)
            }
        }
    }

    // --- relay deliveries ----------------------------------------------------------------

    /// Records that relay delivery `seq` was processed (idempotent).
    ///
    /// # Errors
    /// SQL errors.
    pub fn mark_delivery_processed(&self, seq: u64, now: u64) -> Result<()> {
        self.0.execute(
            "INSERT INTO processed_deliveries (seq, processed_at) VALUES (?1, ?2)
             ON CONFLICT (seq) DO NOTHING",
            params![sql_u64(seq)?, sql_u64(now)?],
        )?;
        Ok(())
    }

    /// Whether relay delivery `seq` was already processed.
    ///
    /// # Errors
    /// SQL errors.
    pub fn delivery_processed(&self, seq: u64) -> Result<bool> {
        Ok(self
            .0
            .query_row(
                "SELECT 1 FROM processed_deliveries WHERE seq = ?1",
                [sql_u64(seq)?],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Forgets deliveries processed before `older_than`; returns how many.
    ///
    /// # Errors
    /// SQL errors.
    pub fn prune_processed(&self, older_than: u64) -> Result<usize> {
        Ok(self.0.execute(
            "DELETE FROM processed_deliveries WHERE processed_at < ?1",
            [sql_u64(older_than)?],
        )?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::schema::{self, MESSAGE_COLUMNS};

    fn db() -> Connection {
        // Schema and queries are independent of the encryption, so an in-memory database
        // keeps these tests fast; the store tests cover the encrypted file.
        let mut c = Connection::open_in_memory().unwrap();
        schema::migrate(&mut c).unwrap();
        c
    }

    fn msg(id: u8, conv: &str, sent: u64) -> MessageRecord {
        MessageRecord {
            message_id: [id; 16],
            conversation: conv.into(),
            outgoing: false,
            sender: "bob".into(),
            sender_device: [9; 16],
            sent_at_ms: sent,
            received_at_ms: 1000 + u64::from(id),
            text: format!("m{id}"),
            state: MessageState::Received,
            kind: MessageKind::Text,
            timers: MessageTimers::default(),
        }
    }

    #[test]
    fn debug_of_a_message_shows_its_length_not_its_text() {
        let mut m = msg(1, "dm:alice:bob", 5);
        m.text = "the launch code is 0000".into();
        let shown = format!("{m:?} {m:#?}");
        assert!(!shown.contains("launch code"), "{shown}");
        assert!(shown.contains("<redacted, 23 bytes>"), "{shown}");
        assert!(shown.contains("dm:alice:bob"), "{shown}");
    }

    #[test]
    fn message_state_names_round_trip() {
        for s in MessageState::ALL {
            assert_eq!(s.as_str().parse::<MessageState>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("Sent".parse::<MessageState>().is_err());
        assert!("".parse::<MessageState>().is_err());
    }

    #[test]
    fn schema_check_matches_the_state_names() {
        let c = db();
        let d = Db::new(&c);
        for (i, s) in MessageState::ALL.into_iter().enumerate() {
            let mut m = msg(u8::try_from(i).unwrap(), "c", 1);
            m.state = s;
            assert!(d.insert_message(&m).unwrap());
            assert_eq!(d.message(&m.message_id).unwrap().unwrap().state, s);
        }
    }

    #[test]
    fn history_returns_the_newest_oldest_first() {
        let c = db();
        let d = Db::new(&c);
        // Inserted out of order; two share a timestamp, so arrival breaks the tie.
        for (id, sent) in [(1, 30), (2, 10), (3, 20), (4, 20), (5, 40)] {
            d.insert_message(&msg(id, "alice", sent)).unwrap();
        }
        d.insert_message(&msg(6, "other", 50)).unwrap();
        let ids = |v: Vec<MessageRecord>| v.iter().map(|m| m.message_id[0]).collect::<Vec<_>>();
        assert_eq!(ids(d.history("alice", 3).unwrap()), vec![4, 1, 5]);
        assert_eq!(ids(d.history("alice", 100).unwrap()), vec![2, 3, 4, 1, 5]);
        assert_eq!(ids(d.history("alice", usize::MAX).unwrap()).len(), 5);
        assert!(d.history("alice", 0).unwrap().is_empty());
        assert!(d.history("nobody", 10).unwrap().is_empty());
    }

    #[test]
    fn conversations_are_summarised_most_recent_first() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&msg(1, "a", 5000)).unwrap();
        d.insert_message(&msg(2, "a", 10)).unwrap();
        d.insert_message(&msg(3, "b", 10)).unwrap();
        let s = d.conversations().unwrap();
        assert_eq!(
            s,
            vec![
                ConversationSummary {
                    conversation: "a".into(),
                    last_activity_ms: 5000,
                    messages: 2,
                    unread: 2,
                },
                ConversationSummary {
                    conversation: "b".into(),
                    last_activity_ms: 1003,
                    messages: 1,
                    unread: 1,
                },
            ]
        );
    }

    #[test]
    fn set_devices_replaces_keeps_order_and_is_atomic() {
        let c = db();
        let d = Db::new(&c);
        d.set_devices("bob", &[[3; 16], [1; 16], [3; 16], [2; 16]])
            .unwrap();
        assert_eq!(d.devices("bob").unwrap(), vec![[3; 16], [1; 16], [2; 16]]);
        d.set_devices("bob", &[[5; 16]]).unwrap();
        assert_eq!(d.devices("bob").unwrap(), vec![[5; 16]]);
        assert!(d.devices("carol").unwrap().is_empty());

        // A failure half-way leaves the previous list in place.
        c.execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON devices
             WHEN NEW.device = x'07070707070707070707070707070707'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        assert!(d.set_devices("bob", &[[6; 16], [7; 16]]).is_err());
        assert_eq!(d.devices("bob").unwrap(), vec![[5; 16]]);
        d.set_devices("bob", &[]).unwrap();
        assert!(d.devices("bob").unwrap().is_empty());
    }

    #[test]
    fn processed_deliveries_are_remembered_and_pruned() {
        let c = db();
        let d = Db::new(&c);
        assert!(!d.delivery_processed(1).unwrap());
        d.mark_delivery_processed(1, 100).unwrap();
        d.mark_delivery_processed(1, 999).unwrap();
        d.mark_delivery_processed(2, 200).unwrap();
        d.mark_delivery_processed(u64::try_from(i64::MAX).unwrap(), 300)
            .unwrap();
        assert!(d.delivery_processed(1).unwrap());
        assert_eq!(d.prune_processed(200).unwrap(), 1);
        assert!(!d.delivery_processed(1).unwrap());
        assert!(d.delivery_processed(2).unwrap());
        assert_eq!(d.prune_processed(1000).unwrap(), 2);
    }

    #[test]
    fn outbox_updates_and_unknown_ids() {
        let c = db();
        let d = Db::new(&c);
        let item = OutboxItem {
            id: 0,
            message_id: [1; 16],
            conversation: "bob".into(),
            recipient: "bob".into(),
            text: "hi".into(),
            created_at_ms: 5,
            request: None,
            key_package: None,
            attempts: 0,
            last_error: None,
            kind: OutboxKind::Text,
            timers: MessageTimers::default(),
            extra: Vec::new(),
        };
        let a = d.outbox_push(&item).unwrap();
        let b = d.outbox_push(&item).unwrap();
        assert!(b > a);
        d.outbox_set_request(a, b"req", b"kp").unwrap();
        d.outbox_set_attempts(a, 3, Some("timeout")).unwrap();
        d.outbox_set_attempts(b, 1, None).unwrap();
        let p = d.outbox_pending().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id, a);
        assert_eq!(p[0].request.as_deref(), Some(&b"req"[..]));
        assert_eq!(
            p[0].key_package.as_deref().map(Vec::as_slice),
            Some(&b"kp"[..])
        );
        assert_eq!(
            (p[0].attempts, p[0].last_error.as_deref()),
            (3, Some("timeout"))
        );
        assert_eq!((p[1].attempts, p[1].last_error.as_deref()), (1, None));
        assert!(p[1].request.is_none() && p[1].key_package.is_none());
        d.outbox_remove(a).unwrap();
        d.outbox_remove(a).unwrap();
        d.outbox_set_request(a, b"x", b"y").unwrap();
        let c2 = d.outbox_push(&item).unwrap();
        assert!(c2 > b, "ids are never reused");
        assert_eq!(d.outbox_pending().unwrap().len(), 2);
    }

    #[test]
    fn set_message_state_reports_unknown_ids() {
        let c = db();
        let d = Db::new(&c);
        assert!(!d.set_message_state(&[1; 16], MessageState::Read).unwrap());
        d.insert_message(&msg(1, "a", 1)).unwrap();
        assert!(d.set_message_state(&[1; 16], MessageState::Read).unwrap());
        assert_eq!(
            d.message(&[1; 16]).unwrap().unwrap().state,
            MessageState::Read
        );
    }

    fn text_msg(id: u16, conv: &str, sent: u64, text: &str) -> MessageRecord {
        let mut message_id = [0u8; 16];
        message_id[..2].copy_from_slice(&id.to_be_bytes());
        MessageRecord {
            message_id,
            conversation: conv.into(),
            outgoing: false,
            sender: "bob".into(),
            sender_device: [9; 16],
            sent_at_ms: sent,
            received_at_ms: sent + 5,
            text: text.into(),
            state: MessageState::Received,
            kind: MessageKind::Text,
            timers: MessageTimers::default(),
        }
    }

    fn texts(v: &[MessageRecord]) -> Vec<&str> {
        v.iter().map(|m| m.text.as_str()).collect()
    }

    /// `EXPLAIN QUERY PLAN` of `sql` (parameters bound to NULL), one line per step.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.join("\n")
    }

    #[test]
    fn user_input_becomes_a_quoted_fts_query() {
        let q = |s: &str| fts_query(s);
        assert_eq!(q("hello").as_deref(), Some("\"hello\"*"));
        assert_eq!(q("hello world").as_deref(), Some("\"hello\" \"world\"*"));
        assert_eq!(q("  hello   wor").as_deref(), Some("\"hello\" \"wor\"*"));
        // A finished word (trailing space) and a single character match whole words.
        assert_eq!(q("hello ").as_deref(), Some("\"hello\""));
        assert_eq!(q("hello w").as_deref(), Some("\"hello\" \"w\""));
        // Operators, quotes and stars are text inside quotes; quotes are doubled.
        assert_eq!(q("ab AND cd").as_deref(), Some("\"ab\" \"AND\" \"cd\"*"));
        assert_eq!(q("foo\0bar").as_deref(), Some("\"foo\" \"bar\"*"));
        assert_eq!(q("\"foo").as_deref(), Some("\"\"\"foo\"*"));
        assert_eq!(q("NEAR(a b)").as_deref(), Some("\"NEAR(a\" \"b)\"*"));
        // Nothing to search for.
        for empty in [
            "",
            "   ",
            "*",
            "\"",
            "\"\"",
            "- + * ^ : ( ) ,",
            "\u{1F525}",
            "\u{301}",
        ] {
            assert_eq!(q(empty), None, "{empty:?}");
        }
        // Pathological input is cut to a bounded number of terms.
        let long = "word ".repeat(10_000);
        assert_eq!(q(&long).unwrap().matches('"').count(), 2 * MAX_QUERY_TERMS);
    }

    #[test]
    fn search_finds_newest_first_with_prefixes_case_and_diacritics() {
        let c = db();
        let d = Db::new(&c);
        // Out of order, across conversations, two sharing a timestamp (arrival breaks the tie).
        for (id, conv, sent, text) in [
            (1, "a", 300, "The quick brown fox"),
            (2, "b", 100, "a QUICK reply"),
            (3, "a", 200, "slow and steady"),
            (4, "b", 400, "quickly now"),
            (5, "a", 400, "quick, quick!"),
            (6, "c", 50, "Café au lait in Zürich"),
            (7, "c", 60, "Привет, мир! 東京 tower"),
        ] {
            assert!(d.insert_message(&text_msg(id, conv, sent, text)).unwrap());
        }
        assert_eq!(
            texts(&d.search("quick", 10).unwrap()),
            [
                "quick, quick!",
                "quickly now",
                "The quick brown fox",
                "a QUICK reply"
            ]
        );
        // A finished word does not match longer words.
        assert_eq!(
            texts(&d.search("quick ", 10).unwrap()),
            ["quick, quick!", "The quick brown fox", "a QUICK reply"]
        );
        assert_eq!(
            texts(&d.search("qui", 2).unwrap()),
            ["quick, quick!", "quickly now"]
        );
        assert_eq!(
            texts(&d.search("QUICK fox", 10).unwrap()),
            ["The quick brown fox"]
        );
        assert_eq!(
            texts(&d.search("brown-fox", 10).unwrap()),
            ["The quick brown fox"]
        );
        assert_eq!(
            texts(&d.search("fox brown", 10).unwrap()),
            ["The quick brown fox"]
        );
        assert!(d.search("quick slow", 10).unwrap().is_empty());
        assert_eq!(
            texts(&d.search_in("b", "quick", 10).unwrap()),
            ["quickly now", "a QUICK reply"]
        );
        assert!(d.search_in("nowhere", "quick", 10).unwrap().is_empty());
        assert!(d.search("quick", 0).unwrap().is_empty());
        assert_eq!(d.search("quick", usize::MAX).unwrap().len(), 4);
        // Unicode: diacritics and case folded both ways, non-Latin scripts.
        for q in ["cafe", "CAFÉ", "zurich", "züri", "привет", "мир", "東京"] {
            assert_eq!(d.search(q, 10).unwrap().len(), 1, "{q}");
        }
    }

    #[test]
    fn no_input_is_an_fts_syntax_error() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(
            1,
            "a",
            1,
            "foo AND bar OR baz NOT qux * \"quoted\" col:x",
        ))
        .unwrap();
        let nasty = [
            "\"foo",
            "foo\"",
            "\"",
            "AND",
            "OR",
            "NOT",
            "AND OR",
            "foo AND",
            "OR bar",
            "*",
            "**",
            "foo*",
            "*foo",
            "^foo",
            "foo:bar",
            "col:x",
            "text:foo",
            "NEAR(foo bar)",
            "NEAR",
            "(",
            ")",
            "(foo",
            "{foo bar}",
            "+",
            "-foo",
            "foo -bar",
            "'",
            "''",
            "\\",
            "\0",
            "foo\0bar",
            "%",
            "_",
            ";",
            "--",
            "/*",
            "\u{1F525}",
            "\u{301}\u{345}",
            "e\u{301}",
            "\u{FEFF}",
            "\t\n",
            "ï",
            "ß",
            "İ",
        ];
        for q in nasty {
            let r = d.search(q, 10);
            assert!(r.is_ok(), "{q:?}: {r:?}");
        }
        // Syntax is searched for as text.
        assert_eq!(d.search("AND OR", 10).unwrap().len(), 1);
        assert_eq!(d.search("\"quoted", 10).unwrap().len(), 1);
        assert_eq!(d.search("col:x", 10).unwrap().len(), 1);
        assert_eq!(
            d.search("word ".repeat(5000).as_str(), 10).unwrap().len(),
            0
        );
    }

    #[test]
    fn deleting_a_message_removes_it_from_search_and_summaries() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(1, "a", 100, "secret zebra"))
            .unwrap();
        d.insert_message(&text_msg(2, "a", 200, "plain zebra"))
            .unwrap();
        d.insert_message(&text_msg(3, "a", 300, "last words"))
            .unwrap();
        assert_eq!(d.search("zebra", 10).unwrap().len(), 2);
        let id = text_msg(1, "", 0, "").message_id;
        assert!(d.delete_message(&id).unwrap());
        assert!(!d.delete_message(&id).unwrap());
        assert!(d.search("secret", 10).unwrap().is_empty());
        assert_eq!(texts(&d.search("zebra", 10).unwrap()), ["plain zebra"]);
        // The index lists no such term (the byte-level proof is in `store::tests`).
        c.execute_batch("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, messages_fts, row)")
            .unwrap();
        let terms: Vec<String> = c
            .prepare("SELECT term FROM temp.vocab")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!terms.iter().any(|t| t.contains("secret")), "{terms:?}");
        // Deleting the latest message moves the conversation's activity back.
        let s = d.conversations().unwrap();
        assert_eq!(
            (s[0].messages, s[0].unread, s[0].last_activity_ms),
            (2, 2, 305)
        );
        d.delete_message(&text_msg(3, "", 0, "").message_id)
            .unwrap();
        let s = d.conversations().unwrap();
        assert_eq!(
            (s[0].messages, s[0].unread, s[0].last_activity_ms),
            (1, 1, 205)
        );
        d.delete_message(&text_msg(2, "", 0, "").message_id)
            .unwrap();
        assert!(d.conversations().unwrap().is_empty());
        assert!(d.search("zebra", 10).unwrap().is_empty());
        c.execute_batch("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            .unwrap();
    }

    #[test]
    fn an_edited_text_is_reindexed_and_a_message_cannot_move() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(1, "a", 100, "before edit"))
            .unwrap();
        let id = text_msg(1, "", 0, "").message_id;
        c.execute(
            "UPDATE messages SET text = 'after edit' WHERE message_id = ?1",
            [id],
        )
        .unwrap();
        assert!(d.search("before", 10).unwrap().is_empty());
        assert_eq!(texts(&d.search("after", 10).unwrap()), ["after edit"]);
        for set in [
            "sent_at_ms = 5",
            "received_at_ms = 5",
            "conversation = 'b'",
            "outgoing = 1",
            "seq = 1",
        ] {
            let r = c.execute(
                &format!("UPDATE messages SET {set} WHERE message_id = ?1"),
                [id],
            );
            assert!(r.is_err(), "{set}");
        }
        // State changes (receipts) are fine and change no summary.
        assert!(d.set_message_state(&id, MessageState::Delivered).unwrap());
        assert_eq!(d.conversations().unwrap()[0].messages, 1);
        c.execute_batch("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            .unwrap();
    }

    #[test]
    fn history_before_pages_through_once_in_order() {
        let c = db();
        let d = Db::new(&c);
        // 1,000 messages in "a", interleaved with another conversation, timestamps repeating
        // so ties must be broken by arrival, inserted in batches out of order.
        let mut all = Vec::new();
        for i in 0..1000u16 {
            all.push(text_msg(i, "a", u64::from(i / 3) * 10, &format!("a{i}")));
            all.push(text_msg(5000 + i, "b", u64::from(i) * 7, &format!("b{i}")));
        }
        for chunk in all.chunks(150).rev() {
            d.insert_messages(chunk).unwrap();
        }
        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let page = d.history_before("a", before, 100).unwrap();
            if page.is_empty() {
                break;
            }
            assert_eq!(page.len(), 100);
            before = Some(page[0].message_id);
            pages.push(page);
        }
        assert_eq!(pages.len(), 10);
        // Chunks went in newest first, so arrival order among equal timestamps is by chunk.
        let mut expected: Vec<&MessageRecord> =
            all.iter().filter(|m| m.conversation == "a").collect();
        expected.sort_by_key(|m| {
            let pos = all
                .iter()
                .position(|x| x.message_id == m.message_id)
                .unwrap_or(0);
            (m.sent_at_ms, std::cmp::Reverse(pos / 150), pos)
        });
        let walked: Vec<&MessageRecord> = pages.iter().rev().flatten().collect();
        assert_eq!(walked, expected);
        assert_eq!(d.history("a", 100).unwrap(), pages[0]);
        assert!(matches!(
            d.history_before("a", Some([0xee; 16]), 10),
            Err(StoreError::UnknownMessage)
        ));
    }

    #[test]
    fn paging_search_and_the_list_use_indexes_not_scans() {
        let c = db();
        for sql in [sql_history(), sql_history_before()] {
            let page = plan(&c, &sql);
            assert!(
                page.contains("USING INDEX messages_by_conversation"),
                "{page}"
            );
            assert!(!page.contains("TEMP B-TREE"), "{page}");
            // The key of a sealed row is a primary-key lookup, not a scan.
            assert!(!page.contains("SCAN k"), "{page}");
        }
        let search = plan(&c, &sql_search(true));
        assert!(search.contains("VIRTUAL TABLE INDEX"), "{search}");
        assert!(search.contains("INTEGER PRIMARY KEY"), "{search}");
        assert!(!search.contains("TEMP B-TREE"), "{search}");
        let unread = plan(
            &c,
            "SELECT count(*) FROM messages
             WHERE conversation = ?1 AND outgoing = 0 AND received_at_ms > ?2",
        );
        assert!(
            unread.contains("COVERING INDEX messages_incoming"),
            "{unread}"
        );
        let activity = plan(
            &c,
            "SELECT max(sent_at_ms, received_at_ms) FROM messages WHERE conversation = ?1
             ORDER BY max(sent_at_ms, received_at_ms) DESC LIMIT 1",
        );
        assert!(
            activity.contains("INDEX messages_by_activity"),
            "{activity}"
        );
        assert!(!activity.contains("TEMP B-TREE"), "{activity}");
    }

    #[test]
    fn unread_counts_follow_inserts_read_marks_and_deletes() {
        let c = db();
        let d = Db::new(&c);
        let unread = |d: &Db<'_>| {
            d.conversations()
                .unwrap()
                .into_iter()
                .map(|s| (s.conversation, s.unread))
                .collect::<Vec<_>>()
        };
        let mut out = text_msg(1, "a", 100, "mine");
        out.outgoing = true;
        d.insert_message(&out).unwrap();
        d.insert_message(&text_msg(2, "a", 200, "theirs")).unwrap(); // received 205
        d.insert_message(&text_msg(3, "b", 150, "other")).unwrap(); // received 155
        assert_eq!(unread(&d), [("a".into(), 1), ("b".into(), 1)]);
        // Received at 205: a mark at 204 leaves it unread, 205 reads it.
        assert_eq!(d.mark_read("a", 204).unwrap(), 1);
        assert_eq!(d.mark_read("a", 205).unwrap(), 0);
        assert_eq!(unread(&d), [("a".into(), 0), ("b".into(), 1)]);
        // The mark never moves back.
        assert_eq!(d.mark_read("a", 0).unwrap(), 0);
        // New arrivals after the mark are unread; one delivered late (received before the
        // mark) is not.
        d.insert_message(&text_msg(4, "a", 300, "new")).unwrap(); // received 305
        let mut late = text_msg(5, "a", 50, "late");
        late.received_at_ms = 60;
        d.insert_message(&late).unwrap();
        assert_eq!(unread(&d), [("a".into(), 1), ("b".into(), 1)]);
        // Deleting an unread message un-counts it; deleting a read one does not.
        d.delete_message(&text_msg(4, "", 0, "").message_id)
            .unwrap();
        d.delete_message(&text_msg(2, "", 0, "").message_id)
            .unwrap();
        assert_eq!(unread(&d), [("b".into(), 1), ("a".into(), 0)]);
        assert_eq!(d.mark_read("b", u64::MAX >> 1).unwrap(), 0);
        assert_eq!(d.mark_read("nowhere", 1).unwrap(), 0);
        // The counters agree with a recount.
        let recount: i64 = c
            .query_row(
                "SELECT count(*) FROM messages m JOIN conversations c USING (conversation)
                 WHERE m.outgoing = 0 AND m.received_at_ms > c.last_read_ms",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(recount, 0);
    }

    #[test]
    fn batches_count_only_new_messages_and_keep_timestamp_ties_in_arrival_order() {
        let c = db();
        let d = Db::new(&c);
        let batch: Vec<_> = (0..10)
            .map(|i| text_msg(i, "a", 7, &format!("same {i}")))
            .collect();
        assert_eq!(d.insert_messages(&batch).unwrap(), 10);
        assert_eq!(d.insert_messages(&batch).unwrap(), 0);
        assert_eq!(d.insert_messages(&batch[5..]).unwrap(), 0);
        let mut more = batch[8..].to_vec();
        more.push(text_msg(10, "a", 7, "same 10"));
        assert_eq!(d.insert_messages(&more).unwrap(), 1);
        let h = d.history("a", 100).unwrap();
        assert_eq!(h.len(), 11);
        assert!(
            h.iter()
                .enumerate()
                .all(|(i, m)| m.text == format!("same {i}"))
        );
        assert_eq!(d.conversations().unwrap()[0].messages, 11);
        assert_eq!(texts(&d.search("same", 2).unwrap()), ["same 10", "same 9"]);
        // A failing batch inserts nothing.
        let mut bad = vec![text_msg(20, "a", 8, "fine")];
        let mut broken = text_msg(21, "a", 9, "broken");
        broken.sent_at_ms = u64::MAX;
        bad.push(broken);
        assert!(d.insert_messages(&bad).is_err());
        assert_eq!(d.history("a", 100).unwrap().len(), 11);
        assert_eq!(d.conversations().unwrap()[0].messages, 11);
        assert!(d.search("fine", 10).unwrap().is_empty());
    }

    #[test]
    fn a_full_millisecond_spills_over_without_a_collision() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(1, "a", 1, "early")).unwrap();
        d.insert_message(&text_msg(2, "a", 5, "late")).unwrap();
        // Fill the last key of millisecond 1's range by hand, as 2^20 messages would.
        let last_of_1: i64 = (2 << 20) - 1;
        c.execute_batch(&format!(
            "INSERT INTO messages (seq, {MESSAGE_COLUMNS})
             SELECT {last_of_1}, x'0303030303030303030303030303030f', conversation, outgoing,
                    sender, sender_device, 1, received_at_ms, 'filler', state
             FROM messages LIMIT 1"
        ))
        .unwrap();
        assert!(d.insert_message(&text_msg(4, "a", 1, "spilled")).unwrap());
        let seqs: Vec<i64> = c
            .prepare("SELECT seq FROM messages ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(seqs.len(), 4);
        assert_eq!(
            *seqs.last().unwrap(),
            (5 << 20) + 1,
            "one past the largest key"
        );
    }

    // --- ephemeral messages -------------------------------------------------------------

    /// An incoming message with timers.
    fn timed(id: u16, conv: &str, sent: u64, text: &str, timers: MessageTimers) -> MessageRecord {
        MessageRecord {
            timers,
            ..text_msg(id, conv, sent, text)
        }
    }

    fn id(n: u16) -> [u8; 16] {
        text_msg(n, "", 0, "").message_id
    }

    fn expiring(at_ms: u64) -> MessageTimers {
        MessageTimers {
            expire_after_s: Some(60),
            expire_at_ms: Some(at_ms),
            ..MessageTimers::default()
        }
    }

    fn burning(after_s: u32) -> MessageTimers {
        MessageTimers {
            burn_after_s: Some(after_s),
            ..MessageTimers::default()
        }
    }

    /// The `text` and `sealed` columns of a message, as stored.
    fn raw_text(c: &Connection, id: &[u8; 16]) -> (String, Option<Vec<u8>>) {
        c.query_row(
            "SELECT text, sealed FROM messages WHERE message_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    /// The stored key of a message, if any.
    fn raw_key(c: &Connection, id: &[u8; 16]) -> Option<Vec<u8>> {
        c.query_row(
            "SELECT key FROM message_keys WHERE message_id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }

    /// Every term of the search index.
    fn index_terms(c: &Connection) -> Vec<String> {
        c.execute_batch(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab
             USING fts5vocab(main, messages_fts, row)",
        )
        .unwrap();
        c.prepare("SELECT term FROM temp.vocab")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn integrity_check(c: &Connection) {
        c.execute_batch("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            .unwrap();
    }

    fn counts(d: &Db<'_>) -> Vec<(String, u64, u64, u64)> {
        d.conversations()
            .unwrap()
            .into_iter()
            .map(|s| (s.conversation, s.messages, s.unread, s.last_activity_ms))
            .collect()
    }

    #[test]
    fn timers_give_the_earlier_deadline_and_say_whether_they_are_set() {
        let mut t = MessageTimers::default();
        assert!(!t.is_timed());
        assert_eq!(t.delete_at_ms(), None);
        t.expire_at_ms = Some(50);
        assert!(!t.is_timed(), "a deadline alone is not a timer");
        assert_eq!(t.delete_at_ms(), Some(50));
        t.burn_at_ms = Some(40);
        assert_eq!(t.delete_at_ms(), Some(40));
        t.expire_at_ms = None;
        assert_eq!(t.delete_at_ms(), Some(40));
        assert!(burning(1).is_timed() && expiring(1).is_timed());
    }

    #[test]
    fn a_timed_message_is_sealed_at_rest_unsearchable_and_reads_back() {
        let c = db();
        let d = Db::new(&c);
        let m = timed(1, "a", 100, "zanzibar rendezvous", expiring(10_000));
        assert!(d.insert_message(&m).unwrap());
        assert!(!d.insert_message(&m).unwrap(), "a known id changes nothing");
        d.insert_message(&text_msg(2, "a", 200, "zanzibar in clear"))
            .unwrap();

        // At rest: no clear text, only ciphertext, and a 32-byte key of its own.
        let (text, sealed) = raw_text(&c, &m.message_id);
        assert_eq!(text, "");
        let sealed = sealed.unwrap();
        assert_eq!(sealed.len(), "zanzibar rendezvous".len() + 16);
        assert!(!sealed.windows(8).any(|w| w == b"zanzibar"));
        assert_eq!(raw_key(&c, &m.message_id).unwrap().len(), 32);
        assert_eq!(raw_text(&c, &id(2)), ("zanzibar in clear".into(), None));
        assert!(raw_key(&c, &id(2)).is_none());
        let delete_at: Option<i64> = c
            .query_row(
                "SELECT delete_at_ms FROM messages WHERE message_id = ?1",
                [m.message_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(delete_at, Some(10_000));

        // Every read opens it.
        assert_eq!(d.message(&m.message_id).unwrap().unwrap(), m);
        assert_eq!(d.history("a", 10).unwrap()[0], m);
        assert_eq!(
            d.history_before("a", Some(id(2)), 10).unwrap(),
            vec![m.clone()]
        );

        // Not searchable; the clear one is.
        assert!(d.search("rendezvous", 10).unwrap().is_empty());
        assert_eq!(
            texts(&d.search("zanzibar", 10).unwrap()),
            ["zanzibar in clear"]
        );
        let terms = index_terms(&c);
        assert!(terms.iter().any(|t| t == "zanzibar"), "{terms:?}");
        assert!(!terms.iter().any(|t| t == "rendezvous"), "{terms:?}");
        assert_eq!(d.conversations().unwrap()[0].messages, 2);
        integrity_check(&c);

        // The key is what opens it: without it (or with another), the read is refused.
        c.execute(
            "UPDATE message_keys SET key = zeroblob(32) WHERE message_id = ?1",
            [m.message_id],
        )
        .unwrap();
        assert!(matches!(
            d.message(&m.message_id),
            Err(StoreError::Corrupt(_))
        ));
        c.execute(
            "DELETE FROM message_keys WHERE message_id = ?1",
            [m.message_id],
        )
        .unwrap();
        assert!(matches!(d.history("a", 10), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_sealed_text_cannot_be_moved_to_another_message() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&timed(1, "a", 100, "one", expiring(9_000)))
            .unwrap();
        d.insert_message(&timed(2, "a", 200, "two", expiring(9_000)))
            .unwrap();
        // Message 2 gets message 1's ciphertext and key: the id is bound in, so it fails.
        c.execute_batch(
            "UPDATE messages SET sealed = (SELECT sealed FROM messages WHERE seq = (SELECT min(seq) FROM messages))
             WHERE seq = (SELECT max(seq) FROM messages);
             UPDATE message_keys SET key = (SELECT key FROM message_keys ORDER BY message_id LIMIT 1);",
        )
        .unwrap();
        assert_eq!(d.message(&id(1)).unwrap().unwrap().text, "one");
        assert!(matches!(d.message(&id(2)), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_batch_seals_timed_messages_and_indexes_the_rest() {
        let c = db();
        let d = Db::new(&c);
        let batch = vec![
            text_msg(1, "a", 100, "plain alpha"),
            timed(2, "a", 200, "timed alpha", burning(5)),
            text_msg(3, "b", 300, "plain beta"),
        ];
        assert_eq!(d.insert_messages(&batch).unwrap(), 3);
        assert_eq!(d.insert_messages(&batch).unwrap(), 0);
        assert_eq!(texts(&d.search("alpha", 10).unwrap()), ["plain alpha"]);
        assert_eq!(
            texts(&d.history("a", 10).unwrap()),
            ["plain alpha", "timed alpha"]
        );
        assert_eq!(d.history("a", 10).unwrap()[1].timers, burning(5));
        integrity_check(&c);
    }

    #[test]
    fn set_expire_at_only_ever_shortens_the_timer() {
        let c = db();
        let d = Db::new(&c);
        let m = timed(1, "a", 100, "soon gone", expiring(5_000));
        d.insert_message(&m).unwrap();
        let timers = |d: &Db<'_>| d.message(&id(1)).unwrap().unwrap().timers;
        assert!(d.set_expire_at(&id(1), 9_000).unwrap());
        assert_eq!(timers(&d).expire_at_ms, Some(5_000), "never extended");
        assert_eq!(d.next_deletion().unwrap(), Some(5_000));
        assert!(d.set_expire_at(&id(1), 3_000).unwrap());
        assert_eq!(timers(&d).expire_at_ms, Some(3_000));
        assert_eq!(d.next_deletion().unwrap(), Some(3_000));
        assert!(d.set_expire_at(&id(1), u64::MAX).unwrap());
        assert_eq!(timers(&d).expire_at_ms, Some(3_000));
        // A burn deadline earlier than the expiry decides the deletion; a later one does not.
        assert!(d.set_burn_at(&id(1), 4_000).unwrap());
        assert_eq!(d.next_deletion().unwrap(), Some(3_000));
        assert!(d.set_burn_at(&id(1), 2_000).unwrap());
        assert!(d.set_burn_at(&id(1), 2_500).unwrap());
        assert_eq!(timers(&d).burn_at_ms, Some(2_000), "never extended");
        assert_eq!(d.next_deletion().unwrap(), Some(2_000));
        assert_eq!(d.message(&id(1)).unwrap().unwrap().text, "soon gone");
        assert!(!d.set_expire_at(&id(9), 1).unwrap());
        assert!(!d.set_burn_at(&id(9), 1).unwrap());
    }

    #[test]
    fn a_deadline_set_later_seals_a_clear_message_and_drops_it_from_search() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(1, "a", 100, "quokka sighting"))
            .unwrap();
        assert_eq!(d.search("quokka", 10).unwrap().len(), 1);
        assert!(d.set_expire_at(&id(1), 7_000).unwrap());
        let (text, sealed) = raw_text(&c, &id(1));
        assert_eq!(text, "");
        assert!(sealed.is_some() && raw_key(&c, &id(1)).is_some());
        assert!(d.search("quokka", 10).unwrap().is_empty());
        assert!(!index_terms(&c).iter().any(|t| t == "quokka"));
        let m = d.message(&id(1)).unwrap().unwrap();
        assert_eq!(m.text, "quokka sighting");
        assert_eq!(m.timers.expire_at_ms, Some(7_000));
        // Sealing twice keeps the first key.
        let key = raw_key(&c, &id(1));
        assert!(d.set_burn_at(&id(1), 6_000).unwrap());
        assert_eq!(raw_key(&c, &id(1)), key);
        integrity_check(&c);
    }

    #[test]
    fn mark_displayed_starts_the_burn_timer_once() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&timed(1, "a", 100, "burn me", burning(30)))
            .unwrap();
        d.insert_message(&text_msg(2, "a", 200, "no timer"))
            .unwrap();
        d.insert_message(&timed(3, "a", 300, "reported", burning(30)))
            .unwrap();
        let timers = |n: u16| d.message(&id(n)).unwrap().unwrap().timers;

        assert_eq!(d.next_deletion().unwrap(), None, "no burn before display");
        assert_eq!(d.mark_displayed(&id(1), 100_000).unwrap(), Some(130_000));
        assert_eq!(d.next_deletion().unwrap(), Some(130_000));
        // Displayed again later, or with an earlier clock: nothing restarts.
        assert_eq!(d.mark_displayed(&id(1), 200_000).unwrap(), None);
        assert_eq!(d.mark_displayed(&id(1), 50_000).unwrap(), None);
        let t = timers(1);
        assert_eq!(
            (t.displayed_at_ms, t.burn_at_ms, t.expire_at_ms),
            (Some(100_000), Some(130_000), None)
        );

        // No burn timer: the display is recorded, nothing is scheduled.
        assert_eq!(d.mark_displayed(&id(2), 100_000).unwrap(), None);
        assert_eq!(timers(2).displayed_at_ms, Some(100_000));
        assert_eq!(timers(2).burn_at_ms, None);

        // Another device reported an earlier burn: displaying here keeps it.
        assert!(d.set_burn_at(&id(3), 120_000).unwrap());
        assert_eq!(d.mark_displayed(&id(3), 100_000).unwrap(), Some(120_000));
        assert_eq!(timers(3).burn_at_ms, Some(120_000));

        assert_eq!(d.mark_displayed(&id(9), 1).unwrap(), None);
        // Absurd clocks are clamped, not refused.
        d.insert_message(&timed(4, "a", 400, "far", burning(u32::MAX)))
            .unwrap();
        assert_eq!(d.mark_displayed(&id(4), u64::MAX).unwrap(), Some(MAX_MS));
    }

    #[test]
    fn deletions_come_due_in_deadline_order() {
        let c = db();
        let d = Db::new(&c);
        assert_eq!(d.next_deletion().unwrap(), None);
        d.insert_message(&timed(1, "a", 100, "x", expiring(5_000)))
            .unwrap();
        d.insert_message(&timed(2, "b", 200, "y", expiring(3_000)))
            .unwrap();
        d.insert_message(&timed(3, "a", 50, "z", expiring(5_000)))
            .unwrap();
        d.insert_message(&timed(4, "a", 60, "w", burning(1)))
            .unwrap();
        d.insert_message(&text_msg(5, "a", 70, "kept")).unwrap();
        assert_eq!(d.next_deletion().unwrap(), Some(3_000));
        assert!(d.due_deletions(2_999).unwrap().is_empty());
        assert_eq!(d.due_deletions(3_000).unwrap(), vec![(id(2), "b".into())]);
        // Equal deadlines come in history order (3 was sent before 1).
        assert_eq!(
            d.due_deletions(u64::MAX).unwrap(),
            vec![
                (id(2), "b".into()),
                (id(3), "a".into()),
                (id(1), "a".into())
            ]
        );
        assert_eq!(d.mark_displayed(&id(4), 1_000).unwrap(), Some(2_000));
        assert_eq!(d.next_deletion().unwrap(), Some(2_000));
        assert_eq!(
            d.due_deletions(4_000).unwrap(),
            vec![(id(4), "a".into()), (id(2), "b".into())]
        );
        // The query walks the partial index.
        let p = plan(
            &c,
            "SELECT message_id, conversation FROM messages
             WHERE delete_at_ms IS NOT NULL AND delete_at_ms <= ?1
             ORDER BY delete_at_ms, seq",
        );
        assert!(p.contains("messages_by_deletion"), "{p}");
    }

    /// An outbox item for message `message_id`.
    fn out_item(message_id: [u8; 16], conversation: &str) -> OutboxItem {
        OutboxItem {
            id: 0,
            message_id,
            conversation: conversation.into(),
            recipient: conversation.into(),
            text: "pending".into(),
            created_at_ms: 1,
            request: None,
            key_package: None,
            attempts: 0,
            last_error: None,
            kind: OutboxKind::Text,
            timers: MessageTimers::default(),
            extra: Vec::new(),
        }
    }

    #[test]
    fn shredding_removes_row_key_index_and_pending_sends_and_keeps_the_counts() {
        let c = db();
        let d = Db::new(&c);
        let mut mine = timed(1, "a", 100, "outgoing secret", expiring(1_000));
        mine.outgoing = true;
        d.insert_message(&mine).unwrap();
        d.insert_message(&text_msg(2, "a", 200, "clear words"))
            .unwrap();
        d.insert_message(&timed(3, "a", 300, "latest secret", expiring(2_000)))
            .unwrap();
        d.insert_message(&timed(4, "b", 50, "only one", expiring(2_000)))
            .unwrap();
        d.outbox_push(&out_item(id(1), "a")).unwrap();
        d.outbox_push(&out_item(id(2), "a")).unwrap();
        assert_eq!(
            counts(&d),
            [("a".into(), 3, 2, 305), ("b".into(), 1, 1, 55)]
        );

        assert_eq!(d.shred(&[id(1), id(3), id(3), id(9)]).unwrap(), 2);
        for n in [1, 3] {
            assert!(d.message(&id(n)).unwrap().is_none());
            assert!(raw_key(&c, &id(n)).is_none());
        }
        let pending: Vec<_> = d
            .outbox_pending()
            .unwrap()
            .into_iter()
            .map(|o| o.message_id)
            .collect();
        assert_eq!(
            pending,
            [id(2)],
            "only the shredded message's send is dropped"
        );
        // One incoming unread message left in "a", the activity moved back to it.
        assert_eq!(
            counts(&d),
            [("a".into(), 1, 1, 205), ("b".into(), 1, 1, 55)]
        );
        assert_eq!(texts(&d.history("a", 10).unwrap()), ["clear words"]);
        assert_eq!(d.next_deletion().unwrap(), Some(2_000));

        // The last message of a conversation takes its summary along.
        assert_eq!(d.shred(&[id(4)]).unwrap(), 1);
        assert_eq!(counts(&d), [("a".into(), 1, 1, 205)]);
        assert_eq!(d.shred(&[]).unwrap(), 0);
        let keys: i64 = c
            .query_row("SELECT count(*) FROM message_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(keys, 0);
        integrity_check(&c);

        // Shredding an indexed (clear) message takes it out of the index too.
        assert_eq!(d.shred(&[id(2)]).unwrap(), 1);
        assert!(d.search("clear", 10).unwrap().is_empty());
        assert!(index_terms(&c).is_empty());
        assert!(d.conversations().unwrap().is_empty());
    }

    #[test]
    fn a_plain_delete_takes_the_key_along() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&timed(1, "a", 100, "t", expiring(1)))
            .unwrap();
        assert!(raw_key(&c, &id(1)).is_some());
        assert!(d.delete_message(&id(1)).unwrap());
        assert!(raw_key(&c, &id(1)).is_none());
    }

    #[test]
    fn delete_conversation_shreds_it_and_forgets_its_settings() {
        let c = db();
        let d = Db::new(&c);
        for n in 1..=20u16 {
            let conv = if n % 2 == 0 { "room" } else { "other" };
            let m = if n % 3 == 0 {
                timed(n, conv, u64::from(n) * 10, "timed", expiring(99_999))
            } else {
                text_msg(n, conv, u64::from(n) * 10, &format!("word{n} shared"))
            };
            d.insert_message(&m).unwrap();
        }
        d.set_conversation_timers("room", Some(60), None).unwrap();
        d.set_conversation_timers("other", None, Some(5)).unwrap();
        d.mark_read("room", 50).unwrap();
        d.outbox_push(&out_item(id(2), "room")).unwrap();
        let mut receipt = out_item([0xee; 16], "room");
        receipt.kind = OutboxKind::Receipt;
        d.outbox_push(&receipt).unwrap();

        assert_eq!(d.delete_conversation("room").unwrap(), 10);
        assert!(d.history("room", 100).unwrap().is_empty());
        assert_eq!(d.history("other", 100).unwrap().len(), 10);
        assert_eq!(counts(&d).len(), 1);
        assert_eq!(counts(&d)[0].1, 10);
        assert_eq!(d.conversation_timers("room").unwrap(), (None, None));
        assert_eq!(d.conversation_timers("other").unwrap(), (None, Some(5)));
        let keys: i64 = c
            .query_row("SELECT count(*) FROM message_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(keys, 3, "the keys of 'other' (3, 9, 15) are left");
        let pending: Vec<_> = d
            .outbox_pending()
            .unwrap()
            .into_iter()
            .map(|o| o.message_id)
            .collect();
        assert_eq!(
            pending,
            [[0xee; 16]],
            "sends that are not its messages stay"
        );
        // Search only finds the other conversation now.
        assert!(
            d.search("shared", 100)
                .unwrap()
                .iter()
                .all(|m| m.conversation == "other")
        );
        assert_eq!(d.search("shared", 100).unwrap().len(), 7);
        integrity_check(&c);
        // A new message starts the conversation afresh, read mark included.
        d.insert_message(&text_msg(40, "room", 1, "again")).unwrap();
        assert_eq!(counts(&d)[1], ("room".into(), 1, 1, 6));
        assert_eq!(d.delete_conversation("nowhere").unwrap(), 0);
    }

    #[test]
    fn undisplayed_lists_only_never_shown_incoming_text_among_the_newest() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(1, "a", 100, "old, unseen"))
            .unwrap();
        d.insert_message(&text_msg(2, "a", 200, "seen")).unwrap();
        let mut mine = text_msg(3, "a", 300, "mine");
        mine.outgoing = true;
        d.insert_message(&mine).unwrap();
        let mut system = text_msg(4, "a", 400, "bob joined");
        system.kind = MessageKind::System;
        d.insert_message(&system).unwrap();
        d.insert_message(&text_msg(5, "a", 500, "new, unseen"))
            .unwrap();
        d.insert_message(&text_msg(6, "b", 100, "elsewhere"))
            .unwrap();
        d.mark_displayed(&id(2), 1_000).unwrap();
        assert_eq!(d.undisplayed("a", 10).unwrap(), [id(1), id(5)]);
        // Only the newest rows are looked at (what a view shows).
        assert_eq!(d.undisplayed("a", 3).unwrap(), [id(5)]);
        assert_eq!(d.undisplayed("b", 10).unwrap(), [id(6)]);
    }

    #[test]
    fn receipts_are_owed_for_displayed_incoming_text_until_sent() {
        let c = db();
        let d = Db::new(&c);
        d.insert_message(&text_msg(1, "a", 100, "seen")).unwrap();
        d.insert_message(&text_msg(2, "a", 200, "not yet seen"))
            .unwrap();
        let mut mine = text_msg(3, "a", 300, "mine");
        mine.outgoing = true;
        d.insert_message(&mine).unwrap();
        let mut system = text_msg(4, "a", 400, "bob joined");
        system.kind = MessageKind::System;
        d.insert_message(&system).unwrap();
        d.insert_message(&timed(5, "a", 50, "seen, timed", burning(60)))
            .unwrap();
        d.insert_message(&text_msg(6, "b", 100, "elsewhere"))
            .unwrap();
        assert!(d.undisplayed_receipts("a").unwrap().is_empty());
        for n in [1, 3, 4, 5, 6] {
            d.mark_displayed(&id(n), 1_000).unwrap();
        }
        assert_eq!(
            d.message(&id(4)).unwrap().unwrap().kind,
            MessageKind::System
        );
        assert_eq!(d.undisplayed_receipts("a").unwrap(), [id(5), id(1)]);
        d.mark_receipts_sent(&[id(1), id(9)]).unwrap();
        assert_eq!(d.undisplayed_receipts("a").unwrap(), [id(5)]);
        d.mark_displayed(&id(2), 2_000).unwrap();
        assert_eq!(d.undisplayed_receipts("a").unwrap(), [id(5), id(2)]);
        // Displaying again does not owe the receipt again.
        d.mark_receipts_sent(&[id(5), id(2)]).unwrap();
        d.mark_displayed(&id(2), 3_000).unwrap();
        assert!(d.undisplayed_receipts("a").unwrap().is_empty());
        assert_eq!(d.undisplayed_receipts("b").unwrap(), [id(6)]);
        let p = plan(
            &c,
            "SELECT message_id FROM messages
             WHERE conversation = ?1 AND outgoing = 0 AND receipt_sent = 0
               AND displayed_at_ms IS NOT NULL AND kind = 0
             ORDER BY seq",
        );
        assert!(p.contains("messages_receipts_owed"), "{p}");
    }

    #[test]
    fn conversation_timers_are_stored_replaced_and_cleared() {
        let c = db();
        let d = Db::new(&c);
        assert_eq!(d.conversation_timers("a").unwrap(), (None, None));
        d.set_conversation_timers("a", Some(3600), Some(30))
            .unwrap();
        d.set_conversation_timers("b", None, Some(u32::MAX))
            .unwrap();
        assert_eq!(d.conversation_timers("a").unwrap(), (Some(3600), Some(30)));
        assert_eq!(d.conversation_timers("b").unwrap(), (None, Some(u32::MAX)));
        d.set_conversation_timers("a", Some(60), None).unwrap();
        assert_eq!(d.conversation_timers("a").unwrap(), (Some(60), None));
        d.set_conversation_timers("a", None, None).unwrap();
        assert_eq!(d.conversation_timers("a").unwrap(), (None, None));
        let rows: i64 = c
            .query_row("SELECT count(*) FROM conversation_settings", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn blob_prefixes_match_byte_for_byte_without_wildcards() {
        let c = db();
        let d = Db::new(&c);
        let keys = [
            "room/a",
            "room/a/",
            "room/a/x",
            "room/a/y/z",
            "room/a/\u{10FFFF}",
            "room/ab",
            "room/ab/x",
            "room/a_/x",
            "room/a%/x",
            "room/aX/x",
            "room/b/x",
            "Room/a/x",
            "room\\a/x",
        ];
        for k in keys {
            d.put_blob(k, k.as_bytes()).unwrap();
        }
        let found = |p: &str| {
            d.blobs_with_prefix(p)
                .unwrap()
                .into_iter()
                .map(|(k, v)| {
                    assert_eq!(v.as_slice(), k.as_bytes());
                    k
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found("room/a/"),
            ["room/a/", "room/a/x", "room/a/y/z", "room/a/\u{10FFFF}"]
        );
        assert_eq!(found("room/a_/"), ["room/a_/x"]);
        assert_eq!(found("room/a%"), ["room/a%/x"]);
        assert_eq!(found("room\\"), ["room\\a/x"]);
        assert_eq!(found("room/ab"), ["room/ab", "room/ab/x"]);
        assert!(found("room/c").is_empty());
        assert_eq!(found("").len(), keys.len());
        assert_eq!(d.delete_blobs_with_prefix("room/a/").unwrap(), 4);
        assert_eq!(d.delete_blobs_with_prefix("room/a/").unwrap(), 0);
        assert_eq!(found("room/a").len(), 6);
        assert!(d.blob("room/a").unwrap().is_some());
        assert!(d.blob("room/ab").unwrap().is_some());
        assert!(d.blob("room/a_/x").unwrap().is_some());
        assert_eq!(d.delete_blobs_with_prefix("").unwrap(), keys.len() - 4);
    }

    #[test]
    fn the_outbox_keeps_kinds_timers_and_extra_bytes() {
        let c = db();
        let d = Db::new(&c);
        for (kind, extra) in [
            (OutboxKind::Text, Vec::new()),
            (OutboxKind::Receipt, vec![1, 2, 3]),
            (OutboxKind::Control, vec![0; 300]),
        ] {
            let mut item = out_item([1; 16], "a");
            item.kind = kind;
            item.extra = extra;
            item.timers = MessageTimers {
                expire_after_s: Some(10),
                burn_after_s: Some(20),
                expire_at_ms: Some(5),
                ..MessageTimers::default()
            };
            d.outbox_push(&item).unwrap();
        }
        let p = d.outbox_pending().unwrap();
        assert_eq!(
            p.iter().map(|o| o.kind).collect::<Vec<_>>(),
            OutboxKind::ALL
        );
        assert_eq!(p[1].extra, [1, 2, 3]);
        assert_eq!(p[2].extra.len(), 300);
        for o in &p {
            // Only the durations are kept.
            assert_eq!(
                o.timers,
                MessageTimers {
                    expire_after_s: Some(10),
                    ..burning(20)
                }
            );
        }
        assert!(c.execute("UPDATE outbox SET kind = 3", []).is_err());
    }
}
