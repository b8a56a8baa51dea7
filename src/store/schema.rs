//! The cache schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. A released migration is never
//! edited; a change is a new entry.
//!
//! Version 2 orders the history by a key, `seq`, instead of re-sorting on every read, and keeps
//! everything a large cache would otherwise have to aggregate up to date with triggers:
//! - `messages.seq` (the rowid) is `sent_at_ms << 20` plus the arrival rank among messages with
//!   the same timestamp, so rowid order *is* history order (sender's timestamp, ties by
//!   arrival). Paging and search then walk an index backwards and stop after `limit` rows.
//! - `messages_fts` is an external-content FTS5 index over `messages.text` keyed by `seq`; it
//!   lives in the same SQLCipher database, so it is encrypted like everything else. Its
//!   `secure-delete` option removes a deleted message's terms from the index at once instead of
//!   leaving them behind delete markers until a merge, and `PRAGMA secure_delete` zeroes the
//!   freed space.
//! - `conversations` holds each conversation's last activity, message and unread counts and
//!   read mark, so the conversation list costs one row per conversation however long the
//!   history is.
//!
//! Version 5 moves rooms, room ops, sender keys and previous sessions out of `blobs` into tables
//! of their own (see [`V6`] and [`v6`]).
//!
//! Version 3 adds ephemeral messages (see [`V3`]): timers and a `sealed` ciphertext column on
//! `messages`, the per-message keys in `message_keys`, per-conversation timer defaults, and
//! typed outbox items.
//!
//! Version 4 makes the account's root secret optional and stores its public key (see
//! [`V4_TABLE`]).
//!
//! Deletes and updates of `messages` keep the index and the summaries right through triggers,
//! whoever issues them. Inserts do it in `Db::insert_messages` instead ([`INSERT_MESSAGE`],
//! [`INDEX_MESSAGE`], [`COUNT_MESSAGE`]): a trigger makes every insert a statement with its own
//! savepoint, at which FTS5 writes its pending terms out as a new segment (one per message
//! instead of one per batch), and whose journal SQLite trims by walking the enclosing
//! savepoint's whole in-memory journal (quadratic in the batch size). A plain single-row
//! insert needs neither.

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use zeroize::Zeroizing;

use crate::crypto::identity::UserRootKey;

use super::{Result, StoreError};
use crate::crypto::hex;
use crate::crypto::wire::Reader;

/// Schema version 1.
///
/// Tables are STRICT so a wrong type is an error instead of a silent conversion. Ids and keys
/// are BLOBs with their length checked.
const V1: &str = "
CREATE TABLE account (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    server_url             TEXT    NOT NULL,
    username               TEXT    NOT NULL,
    display_name           TEXT    NOT NULL,
    device_id              BLOB    NOT NULL CHECK (length(device_id) = 16),
    network_id             TEXT    NOT NULL,
    network_name           TEXT    NOT NULL,
    relay_id               BLOB    NOT NULL,
    is_admin               INTEGER NOT NULL CHECK (is_admin IN (0, 1)),
    root_secret            BLOB    NOT NULL CHECK (length(root_secret) = 32),
    device_signing_secret  BLOB    NOT NULL CHECK (length(device_signing_secret) = 32),
    device_identity_secret BLOB    NOT NULL CHECK (length(device_identity_secret) = 32),
    device_cert            BLOB    NOT NULL,
    created_at             INTEGER NOT NULL,
    allow_insecure_ws      INTEGER NOT NULL CHECK (allow_insecure_ws IN (0, 1))
) STRICT;

CREATE TABLE blobs (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE root_keys (
    user      TEXT    PRIMARY KEY,
    key       BLOB    NOT NULL CHECK (length(key) = 32),
    pinned_at INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    user   TEXT NOT NULL,
    device BLOB NOT NULL CHECK (length(device) = 16),
    state  BLOB NOT NULL,
    PRIMARY KEY (user, device)
) STRICT;

-- A rowid table so a user's devices come back in the order they were given.
CREATE TABLE devices (
    user   TEXT NOT NULL,
    device BLOB NOT NULL CHECK (length(device) = 16),
    PRIMARY KEY (user, device)
) STRICT;

-- AUTOINCREMENT: an id is never reused, so a stale id can only miss, never hit another item.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    BLOB    NOT NULL CHECK (length(message_id) = 16),
    conversation  TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    request       BLOB,
    key_package   BLOB,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
) STRICT;

CREATE TABLE messages (
    message_id     BLOB    PRIMARY KEY CHECK (length(message_id) = 16),
    conversation   TEXT    NOT NULL,
    outgoing       INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
    sender         TEXT    NOT NULL,
    sender_device  BLOB    NOT NULL CHECK (length(sender_device) = 16),
    sent_at_ms     INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    text           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('sending', 'sent', 'delivered', 'read',
                                                     'failed', 'received', 'undecryptable'))
) STRICT;
CREATE INDEX messages_by_conversation ON messages (conversation, sent_at_ms);

CREATE TABLE processed_deliveries (
    seq          INTEGER PRIMARY KEY,
    processed_at INTEGER NOT NULL
) STRICT;
CREATE INDEX processed_deliveries_by_age ON processed_deliveries (processed_at);
";

/// Schema version 2, part one: the new tables. `messages` is rebuilt with an explicit `seq`
/// rowid (see the module documentation); the old table is renamed and copied in key order by
/// [`v2`] before part two runs.
const V2_TABLES: &str = "
DROP INDEX messages_by_conversation;
ALTER TABLE messages RENAME TO messages_v1;

CREATE TABLE messages (
    seq            INTEGER PRIMARY KEY,
    message_id     BLOB    NOT NULL UNIQUE CHECK (length(message_id) = 16),
    conversation   TEXT    NOT NULL,
    outgoing       INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
    sender         TEXT    NOT NULL,
    sender_device  BLOB    NOT NULL CHECK (length(sender_device) = 16),
    sent_at_ms     INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    text           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('sending', 'sent', 'delivered', 'read',
                                                     'failed', 'received', 'undecryptable'))
) STRICT;

-- One row per conversation that holds messages. `unread` counts its incoming messages that
-- arrived (received_at_ms, the local clock) after `last_read_ms`.
CREATE TABLE conversations (
    conversation     TEXT    PRIMARY KEY,
    last_activity_ms INTEGER NOT NULL,
    messages         INTEGER NOT NULL CHECK (messages >= 0),
    unread           INTEGER NOT NULL CHECK (unread >= 0),
    last_read_ms     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
";

/// Schema version 2, part two: indexes, the search index, the summaries and the triggers that
/// keep both in step with `messages`.
const V2_FINISH: &str = "
DROP TABLE messages_v1;

-- Paging: a conversation's messages in history order.
CREATE INDEX messages_by_conversation ON messages (conversation, seq);
-- The last activity of a conversation after its latest message is deleted.
CREATE INDEX messages_by_activity ON messages (conversation, max(sent_at_ms, received_at_ms));
-- Counting unread messages when the read mark moves.
CREATE INDEX messages_incoming ON messages (conversation, received_at_ms) WHERE outgoing = 0;

-- Prefix indexes for two- and three-character prefixes, which would otherwise merge the lists
-- of thousands of terms; longer prefixes match few terms. No per-row sizes: nothing ranks by
-- relevance. Pending terms are written out every 16 MiB, so a large batch makes few segments.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = 'messages',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3',
    columnsize = 0
);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('hashsize', 16777216);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

-- History that predates read marks counts as read: it has been shown by `recv` or `history`.
INSERT INTO conversations (conversation, last_activity_ms, messages, unread, last_read_ms)
SELECT conversation, max(max(sent_at_ms, received_at_ms)), count(*), 0,
       coalesce(max(CASE WHEN outgoing = 0 THEN received_at_ms END), 0)
FROM messages GROUP BY conversation;

-- Inserts are indexed and counted by `Db::insert_messages`: see the module documentation.
CREATE TRIGGER messages_after_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', OLD.seq, OLD.text);
    UPDATE conversations SET
        messages = messages - 1,
        unread = unread - (OLD.outgoing = 0 AND OLD.received_at_ms > last_read_ms),
        last_activity_ms = CASE
            WHEN max(OLD.sent_at_ms, OLD.received_at_ms) < last_activity_ms THEN last_activity_ms
            ELSE coalesce((SELECT max(sent_at_ms, received_at_ms) FROM messages
                           WHERE conversation = OLD.conversation
                           ORDER BY max(sent_at_ms, received_at_ms) DESC LIMIT 1), 0)
        END
    WHERE conversation = OLD.conversation;
    DELETE FROM conversations WHERE conversation = OLD.conversation AND messages = 0;
END;

-- Text may change (an edit); the search index follows.
CREATE TRIGGER messages_after_text_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', OLD.seq, OLD.text);
    INSERT INTO messages_fts (rowid, text) VALUES (NEW.seq, NEW.text);
END;

-- A message's place in history and in its conversation's summary is fixed when it arrives;
-- moving it is a delete and an insert, which keep the summaries right.
CREATE TRIGGER messages_fixed_place
BEFORE UPDATE OF seq, conversation, outgoing, sent_at_ms, received_at_ms ON messages
WHEN NEW.seq IS NOT OLD.seq OR NEW.conversation IS NOT OLD.conversation
     OR NEW.outgoing IS NOT OLD.outgoing OR NEW.sent_at_ms IS NOT OLD.sent_at_ms
     OR NEW.received_at_ms IS NOT OLD.received_at_ms
BEGIN
    SELECT RAISE(ABORT, 'a message cannot move in the history');
END;
";

/// Bits of `seq` below the timestamp: up to 2^20 messages can share one millisecond before
/// their keys spill over (see [`next_seq`]).
const SEQ_RANK_BITS: u32 = 20;

/// The range of `seq` keys for messages sent at `sent_at_ms`: `[lo, hi)`.
///
/// Timestamps beyond the year 2248 (`2^43` ms) are clamped, so every key fits an `i64`.
fn seq_range(sent_at_ms: u64) -> (i64, i64) {
    const MAX_MS: u64 = (1 << (63 - SEQ_RANK_BITS)) - 1;
    let lo = sent_at_ms.min(MAX_MS) << SEQ_RANK_BITS;
    let hi = lo + (1 << SEQ_RANK_BITS);
    // Both are below 2^63 by the clamp; the fallback only keeps this free of panics.
    (
        i64::try_from(lo).unwrap_or(i64::MAX),
        i64::try_from(hi).unwrap_or(i64::MAX),
    )
}

/// The `seq` for a new message sent at `sent_at_ms`: one past the last key in its
/// [`seq_range`], so messages with equal timestamps keep their arrival order. If the range is
/// full (2^20 messages in one millisecond, which only a hostile sender produces), one past the
/// largest key overall: still unique, only out of place.
pub(super) fn next_seq(c: &Connection, sent_at_ms: u64) -> rusqlite::Result<i64> {
    let (lo, hi) = seq_range(sent_at_ms);
    let k: i64 = c
        .prepare_cached(
            "SELECT coalesce((SELECT seq + 1 FROM messages WHERE seq >= ?1 AND seq < ?2
                              ORDER BY seq DESC LIMIT 1), ?1)",
        )?
        .query_row([lo, hi], |r| r.get(0))?;
    if k < hi {
        return Ok(k);
    }
    c.prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM messages")?
        .query_row([], |r| r.get(0))
}

/// The message columns of version 1 (all but `seq`), which the version 2 migration copies.
pub(super) const MESSAGE_COLUMNS: &str = "message_id, conversation, outgoing, sender, \
                                          sender_device, sent_at_ms, received_at_ms, text, state";

/// Inserts a message: `?1`..`?9` are [`MESSAGE_COLUMNS`], `?10` its [`next_seq`], `?11`..`?18`
/// the version 3 columns `kind`, `expire_after_s`, `burn_after_s`, `expire_at_ms`, `burn_at_ms`,
/// `displayed_at_ms`, `delete_at_ms` and `sealed`. A known `message_id` changes nothing; other
/// constraint violations are errors.
pub(super) const INSERT_MESSAGE: &str = "
INSERT INTO messages (message_id, conversation, outgoing, sender, sender_device, sent_at_ms,
                      received_at_ms, text, state, seq, kind, expire_after_s, burn_after_s,
                      expire_at_ms, burn_at_ms, displayed_at_ms, delete_at_ms, sealed)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
ON CONFLICT (message_id) DO NOTHING";

/// Indexes a new message's text: `?1` its `seq`, `?2` its text.
pub(super) const INDEX_MESSAGE: &str = "INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)";

/// Counts a new message in its conversation's summary: `?1` the conversation, `?2` its
/// activity time (the later of sent and received), `?3` whether it is incoming, `?4` its
/// `received_at_ms`.
pub(super) const COUNT_MESSAGE: &str = "
INSERT INTO conversations (conversation, last_activity_ms, messages, unread, last_read_ms)
VALUES (?1, ?2, 1, ?3 AND ?4 > 0, 0)
ON CONFLICT (conversation) DO UPDATE SET
    last_activity_ms = max(last_activity_ms, excluded.last_activity_ms),
    messages = messages + 1,
    unread = unread + (?3 AND ?4 > last_read_ms)";

/// Step 1 to 2: see the module documentation.
fn v2(c: &Connection) -> Result<()> {
    c.execute_batch(V2_TABLES)?;
    {
        // Copied in history order, so each key is assigned exactly as an insert would have
        // done had the messages arrived in this order.
        let mut read = c.prepare(
            "SELECT rowid, sent_at_ms FROM messages_v1 ORDER BY sent_at_ms ASC, rowid ASC",
        )?;
        let mut copy = c.prepare(&format!(
            "INSERT INTO messages (seq, {MESSAGE_COLUMNS})
             SELECT ?2, {MESSAGE_COLUMNS} FROM messages_v1 WHERE rowid = ?1"
        ))?;
        let mut rows = read.query([])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let sent: i64 = row.get(1)?;
            let seq = next_seq(c, u64::try_from(sent).unwrap_or(0))?;
            copy.execute([rowid, seq])?;
        }
    }
    c.execute_batch(V2_FINISH)?;
    Ok(())
}

/// Schema version 3: ephemeral messages, receipts bookkeeping and typed outbox items.
///
/// - `messages` gains its kind (0 text, 1 system line), its timers (`expire_after_s`,
///   `burn_after_s`, `expire_at_ms`, `burn_at_ms`, `displayed_at_ms`), `delete_at_ms` (the
///   earlier of the two deadlines, kept by `Db`, with a partial index so the next deadline is
///   one index step away), `receipt_sent`, and `sealed`: the AES-256-GCM ciphertext of a timed
///   message's text, whose `text` column is then empty. The per-message key of `sealed` lives
///   in `message_keys`; deleting it (crypto-shredding) makes any surviving copy of `sealed`
///   unreadable, wherever it lingers.
/// - Sealed messages are not in the search index: the index keeps its own copy of the words,
///   which no per-message key covers. The triggers therefore leave them out, and a row that
///   becomes sealed leaves the index at once.
/// - `conversation_settings` holds per-conversation timer defaults.
/// - `outbox` gains the item kind (0 text, 1 receipt, 2 control), the timers to send with it
///   and opaque `extra` bytes.
const V3: &str = "
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0 CHECK (kind IN (0, 1));
ALTER TABLE messages ADD COLUMN expire_after_s INTEGER CHECK (expire_after_s >= 0);
ALTER TABLE messages ADD COLUMN burn_after_s INTEGER CHECK (burn_after_s >= 0);
ALTER TABLE messages ADD COLUMN expire_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN burn_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN displayed_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN delete_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN receipt_sent INTEGER NOT NULL DEFAULT 0
    CHECK (receipt_sent IN (0, 1));
ALTER TABLE messages ADD COLUMN sealed BLOB CHECK (sealed IS NULL OR text = '');

-- The deadlines to act on, soonest first.
CREATE INDEX messages_by_deletion ON messages (delete_at_ms) WHERE delete_at_ms IS NOT NULL;
-- Read receipts still owed, per conversation.
CREATE INDEX messages_receipts_owed ON messages (conversation, seq)
WHERE outgoing = 0 AND receipt_sent = 0 AND displayed_at_ms IS NOT NULL;

-- The key of each sealed message; deleting it shreds the message.
CREATE TABLE message_keys (
    message_id BLOB PRIMARY KEY CHECK (length(message_id) = 16),
    key        BLOB NOT NULL CHECK (length(key) = 32)
) STRICT, WITHOUT ROWID;

CREATE TABLE conversation_settings (
    conversation   TEXT PRIMARY KEY,
    expire_after_s INTEGER CHECK (expire_after_s >= 0),
    burn_after_s   INTEGER CHECK (burn_after_s >= 0)
) STRICT, WITHOUT ROWID;

ALTER TABLE outbox ADD COLUMN kind INTEGER NOT NULL DEFAULT 0 CHECK (kind IN (0, 1, 2));
ALTER TABLE outbox ADD COLUMN expire_after_s INTEGER CHECK (expire_after_s >= 0);
ALTER TABLE outbox ADD COLUMN burn_after_s INTEGER CHECK (burn_after_s >= 0);
ALTER TABLE outbox ADD COLUMN extra BLOB NOT NULL DEFAULT x'';
-- Shredding a message drops its pending sends.
CREATE INDEX outbox_by_message ON outbox (message_id);

-- Set by version 2 already (the option is persistent); repeated because shredding relies on it.
INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);

-- As in version 2, except that sealed rows were never indexed, and a deleted message takes
-- its key along, whoever deletes it.
DROP TRIGGER messages_after_delete;
CREATE TRIGGER messages_after_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
    SELECT 'delete', OLD.seq, OLD.text WHERE OLD.sealed IS NULL;
    DELETE FROM message_keys WHERE message_id = OLD.message_id;
    UPDATE conversations SET
        messages = messages - 1,
        unread = unread - (OLD.outgoing = 0 AND OLD.received_at_ms > last_read_ms),
        last_activity_ms = CASE
            WHEN max(OLD.sent_at_ms, OLD.received_at_ms) < last_activity_ms THEN last_activity_ms
            ELSE coalesce((SELECT max(sent_at_ms, received_at_ms) FROM messages
                           WHERE conversation = OLD.conversation
                           ORDER BY max(sent_at_ms, received_at_ms) DESC LIMIT 1), 0)
        END
    WHERE conversation = OLD.conversation;
    DELETE FROM conversations WHERE conversation = OLD.conversation AND messages = 0;
END;

-- Text may change (an edit), or be sealed when a timer is set later; only unsealed text is in
-- the search index.
DROP TRIGGER messages_after_text_update;
CREATE TRIGGER messages_after_text_update AFTER UPDATE OF text, sealed ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
    SELECT 'delete', OLD.seq, OLD.text WHERE OLD.sealed IS NULL;
    INSERT INTO messages_fts (rowid, text) SELECT NEW.seq, NEW.text WHERE NEW.sealed IS NULL;
END;
";

/// Schema version 4: the user's root secret becomes optional in the account row, ahead of
/// several devices per user (only a device holding the root role keeps it), and the row gains
/// `root_public`, which every device needs to check its own user's signatures. SQLite cannot
/// relax a `NOT NULL` in place, so the table is rebuilt; `root_public` is derived from the
/// secret that every version-3 account holds.
const V4_TABLE: &str = "
CREATE TABLE account_v4 (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    server_url             TEXT    NOT NULL,
    username               TEXT    NOT NULL,
    display_name           TEXT    NOT NULL,
    device_id              BLOB    NOT NULL CHECK (length(device_id) = 16),
    network_id             TEXT    NOT NULL,
    network_name           TEXT    NOT NULL,
    relay_id               BLOB    NOT NULL,
    is_admin               INTEGER NOT NULL CHECK (is_admin IN (0, 1)),
    root_public            BLOB    NOT NULL CHECK (length(root_public) = 32),
    root_secret            BLOB    CHECK (root_secret IS NULL OR length(root_secret) = 32),
    device_signing_secret  BLOB    NOT NULL CHECK (length(device_signing_secret) = 32),
    device_identity_secret BLOB    NOT NULL CHECK (length(device_identity_secret) = 32),
    device_cert            BLOB    NOT NULL,
    created_at             INTEGER NOT NULL,
    allow_insecure_ws      INTEGER NOT NULL CHECK (allow_insecure_ws IN (0, 1))
) STRICT;
";

/// Step 3 to 4: see [`V4_TABLE`].
fn v4(c: &Connection) -> Result<()> {
    c.execute_batch(V4_TABLE)?;
    let secret: Option<Zeroizing<Vec<u8>>> = c
        .query_row("SELECT root_secret FROM account WHERE id = 1", [], |r| {
            r.get::<_, Vec<u8>>(0).map(Zeroizing::new)
        })
        .optional()?;
    if let Some(secret) = secret {
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            secret
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("the root secret is not 32 bytes".into()))?,
        );
        let public = UserRootKey::from_secret_bytes(&secret).public().0;
        c.execute(
            "INSERT INTO account_v4 SELECT id, server_url, username, display_name, device_id,
                 network_id, network_name, relay_id, is_admin, ?1, root_secret,
                 device_signing_secret, device_identity_secret, device_cert, created_at,
                 allow_insecure_ws
             FROM account",
            [&public[..]],
        )?;
    }
    c.execute_batch("DROP TABLE account; ALTER TABLE account_v4 RENAME TO account;")?;
    Ok(())
}

/// Schema version 5: why a message of ours failed. One row per failed message, written when
/// the engine gives up on it (the relay refused it for good, or it is too large) and removed
/// when it is retried or the message is deleted. The reason is our own sentence about the
/// sending, never message content.
const V5: &str = "
CREATE TABLE message_failures (
    message_id BLOB PRIMARY KEY CHECK (length(message_id) = 16),
    reason TEXT NOT NULL
) STRICT;
CREATE TRIGGER message_failures_follow AFTER DELETE ON messages BEGIN
    DELETE FROM message_failures WHERE message_id = OLD.message_id;
END;
";

/// Schema version 6, part one: rooms and the keys of rooms and sessions in tables of their own,
/// instead of rows of `blobs` under `format!`-built keys. Ids and sequence numbers are columns;
/// only serialized crypto state (a verified `RoomState`, a sender key chain, a ratchet session)
/// stays an opaque blob. [`v6`] then moves the version 5 rows over (see there).
///
/// - `rooms`: each room's verified state, by room id.
/// - `room_ops`: the hash of each accepted membership change, by room and sequence number, to
///   tell a harmless redelivery from a conflicting copy.
/// - `room_claimed_heads`: a log head a member claimed that the relay has not shown us (kept
///   apart from `rooms`: the claim can arrive before the room does).
/// - `own_sender_keys` and `sender_key_holders`: our sender key per room and the member
///   devices we gave it to.
/// - `received_sender_keys`: the sender keys of other devices, by room, device and
///   distribution, with the user whose authenticated session delivered them.
/// - `previous_sessions`: the pairwise session we last replaced with each device, kept so two
///   sides that started sessions at the same moment converge.
const V6: &str = "
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    state   BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE room_ops (
    room_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 0),
    hash    BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (room_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE room_claimed_heads (
    room_id  TEXT    PRIMARY KEY,
    head_seq INTEGER NOT NULL CHECK (head_seq >= 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE own_sender_keys (
    room_id TEXT PRIMARY KEY,
    state   BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE sender_key_holders (
    room_id TEXT NOT NULL,
    user    TEXT NOT NULL,
    device  BLOB NOT NULL CHECK (length(device) = 16),
    PRIMARY KEY (room_id, user, device)
) STRICT, WITHOUT ROWID;

CREATE TABLE received_sender_keys (
    room_id      TEXT NOT NULL,
    device       BLOB NOT NULL CHECK (length(device) = 16),
    distribution BLOB NOT NULL CHECK (length(distribution) = 16),
    sender       TEXT NOT NULL,
    state        BLOB NOT NULL,
    PRIMARY KEY (room_id, device, distribution)
) STRICT, WITHOUT ROWID;
-- Forgetting the keys of members who left.
CREATE INDEX received_sender_keys_by_sender ON received_sender_keys (room_id, sender);

CREATE TABLE previous_sessions (
    user   TEXT NOT NULL,
    device BLOB NOT NULL CHECK (length(device) = 16),
    state  BLOB NOT NULL,
    PRIMARY KEY (user, device)
) STRICT, WITHOUT ROWID;
";

/// Where one version 4 `blobs` row goes in version 5, parsed from its key exactly as version 4
/// wrote it (`src/session/rooms.rs` and `src/session/inbound.rs` of that release):
/// `rooms/state/<room>`, `rooms/op/<room>/<seq, 20 digits>`, `rooms/behind/<room>` (a
/// big-endian `u64`), `rooms/sk/<room>`, `rooms/skdist/<room>` (a count and `(user, device)`
/// pairs), `rooms/rsk/<room>/<device hex>/<distribution hex>` (the sender's username and the
/// key's state, both length-prefixed) and `prevsession/<user>/<device hex>`.
enum V4Blob<'k> {
    State(&'k str),
    Op(&'k str, u64),
    Behind(&'k str),
    OwnKey(&'k str),
    Holders(&'k str),
    Received(&'k str, [u8; 16], [u8; 16]),
    Previous(&'k str, [u8; 16]),
}

impl<'k> V4Blob<'k> {
    /// The destination of `key`, or `None` for a key this migration does not move (prekeys,
    /// the CA certificate, or a row version 4 could not have written).
    fn parse(key: &'k str) -> Option<Self> {
        let nonempty = |s: &'k str| (!s.is_empty()).then_some(s);
        if let Some(rest) = key.strip_prefix("prevsession/") {
            let (user, device) = rest.rsplit_once('/')?;
            return Some(Self::Previous(nonempty(user)?, hex::decode_array(device)?));
        }
        let rest = key.strip_prefix("rooms/")?;
        let (kind, rest) = rest.split_once('/')?;
        Some(match kind {
            "state" => Self::State(nonempty(rest)?),
            "behind" => Self::Behind(nonempty(rest)?),
            "sk" => Self::OwnKey(nonempty(rest)?),
            "skdist" => Self::Holders(nonempty(rest)?),
            "op" => {
                let (room, seq) = rest.rsplit_once('/')?;
                if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Self::Op(nonempty(room)?, seq.parse().ok()?)
            }
            "rsk" => {
                let (rest, distribution) = rest.rsplit_once('/')?;
                let (room, device) = rest.rsplit_once('/')?;
                Self::Received(
                    nonempty(room)?,
                    hex::decode_array(device)?,
                    hex::decode_array(distribution)?,
                )
            }
            _ => return None,
        })
    }

    /// Writes the row for `value` into its version 5 table; `false` if the value is not what
    /// version 4 wrote under such a key (the row then stays in `blobs`, as unreadable to
    /// version 5 as it was to version 4).
    fn move_into(&self, c: &Connection, value: &[u8]) -> Result<bool> {
        let seq = |v: u64| i64::try_from(v).ok();
        match *self {
            Self::State(room) => {
                c.execute(
                    "INSERT INTO rooms (room_id, state) VALUES (?1, ?2)",
                    params![room, value],
                )?;
            }
            Self::Op(room, s) => {
                let (Some(s), Ok(hash)) = (seq(s), <[u8; 32]>::try_from(value)) else {
                    return Ok(false);
                };
                c.execute(
                    "INSERT INTO room_ops (room_id, seq, hash) VALUES (?1, ?2, ?3)",
                    params![room, s, hash],
                )?;
            }
            Self::Behind(room) => {
                let Some(s) = <[u8; 8]>::try_from(value)
                    .ok()
                    .and_then(|b| seq(u64::from_be_bytes(b)))
                else {
                    return Ok(false);
                };
                c.execute(
                    "INSERT INTO room_claimed_heads (room_id, head_seq) VALUES (?1, ?2)",
                    params![room, s],
                )?;
            }
            Self::OwnKey(room) => {
                c.execute(
                    "INSERT INTO own_sender_keys (room_id, state) VALUES (?1, ?2)",
                    params![room, value],
                )?;
            }
            Self::Holders(room) => {
                let Some(holders) = decode_v4_holders(value) else {
                    return Ok(false);
                };
                let mut insert = c.prepare_cached(
                    "INSERT OR IGNORE INTO sender_key_holders (room_id, user, device)
                     VALUES (?1, ?2, ?3)",
                )?;
                for (user, device) in holders {
                    insert.execute(params![room, user, device])?;
                }
            }
            Self::Received(room, device, distribution) => {
                let mut r = Reader::new(value, "received sender key");
                let (Ok(sender), Ok(state)) = (r.string(64), r.bytes(1 << 20)) else {
                    return Ok(false);
                };
                if r.finish().is_err() {
                    return Ok(false);
                }
                c.execute(
                    "INSERT INTO received_sender_keys (room_id, device, distribution, sender, state)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![room, device, distribution, sender, state],
                )?;
            }
            Self::Previous(user, device) => {
                c.execute(
                    "INSERT INTO previous_sessions (user, device, state) VALUES (?1, ?2, ?3)",
                    params![user, device, value],
                )?;
            }
        }
        Ok(true)
    }
}

/// The `(user, device)` pairs of a version 4 `rooms/skdist/` value.
fn decode_v4_holders(value: &[u8]) -> Option<Vec<(&str, [u8; 16])>> {
    let mut r = Reader::new(value, "sender key recipients");
    let n = r.u32().ok()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let user = r.string(64).ok()?;
        out.push((user, r.array::<16>().ok()?));
    }
    r.finish().ok()?;
    Some(out)
}

/// Step 5 to 6: creates [`V6`]'s tables and moves every room, op, claimed head, sender key,
/// holder list and previous session out of `blobs` (see [`V4Blob`]), deleting each moved row.
/// Values are read into wiped buffers, as `Db` reads them.
fn v6(c: &Connection) -> Result<()> {
    c.execute_batch(V6)?;
    let keys: Vec<String> = c
        .prepare(
            "SELECT key FROM blobs
             WHERE (key >= 'rooms/' AND key < 'rooms0')
                OR (key >= 'prevsession/' AND key < 'prevsession0')
             ORDER BY key",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut read = c.prepare("SELECT value FROM blobs WHERE key = ?1")?;
    let mut delete = c.prepare("DELETE FROM blobs WHERE key = ?1")?;
    for key in &keys {
        let Some(dest) = V4Blob::parse(key) else {
            continue;
        };
        let Some(value) = read
            .query_row([key], |r| {
                Ok(Zeroizing::new(r.get_ref(0)?.as_blob()?.to_vec()))
            })
            .optional()?
        else {
            continue;
        };
        if dest.move_into(c, &value)? {
            delete.execute([key])?;
        }
    }
    Ok(())
}

/// One migration step; `MIGRATIONS[i]` goes from version `i` to `i + 1`.
type Step = fn(&Connection) -> Result<()>;

const MIGRATIONS: &[Step] = &[
    |c| Ok(c.execute_batch(V1)?),
    v2,
    |c| Ok(c.execute_batch(V3)?),
    v4,
    |c| Ok(c.execute_batch(V5)?),
    v6,
];

/// The schema version this build writes.
pub(super) const VERSION: i64 = 6;

/// Brings the schema up to [`VERSION`] in one transaction.
///
/// # Errors
/// [`StoreError::Corrupt`] for a database from a newer cinder, SQL errors.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, VERSION)
}

/// Brings the schema up to `target` in one transaction (tests build old versions with it).
pub(super) fn migrate_to(conn: &mut Connection, target: i64) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > VERSION {
        return Err(StoreError::Corrupt(format!(
            "schema version {current} is newer than this cinder understands ({VERSION})"
        )));
    }
    let version = |v: i64| {
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= MIGRATIONS.len())
            .ok_or_else(|| StoreError::Corrupt(format!("invalid schema version {v}")))
    };
    let (from, to) = (version(current)?, version(target)?);
    if from >= to {
        return Ok(());
    }
    for step in &MIGRATIONS[from..to] {
        step(&tx)?;
    }
    tx.pragma_update(None, "user_version", target)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_migration_list() {
        assert_eq!(usize::try_from(VERSION).unwrap(), MIGRATIONS.len());
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_schemas_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // v1's eight, `conversations`, the search index with its three shadow tables, v3's
        // `message_keys` and `conversation_settings`, v5's `message_failures`, and v6's seven
        // room and key tables.
        assert_eq!(tables, 23);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::Corrupt(_))));
    }

    /// A version-3 account (root secret mandatory) becomes a version-4 one with the root public
    /// key derived from it; a version-4 account may have no root secret at all.
    #[test]
    fn v4_derives_the_root_public_key_and_makes_the_secret_optional() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 3).unwrap();
        let urk = UserRootKey::from_secret_bytes(&[0x5a; 32]);
        conn.execute(
            "INSERT INTO account VALUES (1, 'wss://r', 'alice', 'Alice', ?1, 'net', 'Net', x'01',
                 1, ?2, ?3, ?4, x'09', 7, 0)",
            rusqlite::params![[1u8; 16], [0x5a_u8; 32], [2u8; 32], [3u8; 32]],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (public, secret): (Vec<u8>, Option<Vec<u8>>) = conn
            .query_row(
                "SELECT root_public, root_secret FROM account WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(public, urk.public().0);
        assert_eq!(secret.as_deref(), Some(&[0x5a; 32][..]));
        conn.execute("UPDATE account SET root_secret = NULL", [])
            .unwrap();
        // An empty account table migrates too.
        let mut empty = Connection::open_in_memory().unwrap();
        migrate_to(&mut empty, 3).unwrap();
        migrate(&mut empty).unwrap();
    }
}
