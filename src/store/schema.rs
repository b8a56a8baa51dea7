//! The cache schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. A released migration is never
//! edited; a change is a new entry.

use rusqlite::{Connection, TransactionBehavior};

use super::{Result, StoreError};

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

const MIGRATIONS: &[&str] = &[V1];

/// The schema version this build writes.
pub(super) const VERSION: i64 = 1;

/// Brings the schema up to [`VERSION`] in one transaction.
///
/// # Errors
/// [`StoreError::Corrupt`] for a database from a newer cinder, SQL errors.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > VERSION {
        return Err(StoreError::Corrupt(format!(
            "schema version {current} is newer than this cinder understands ({VERSION})"
        )));
    }
    let from = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("invalid schema version {current}")))?;
    if from == MIGRATIONS.len() {
        return Ok(());
    }
    for step in &MIGRATIONS[from..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
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
        assert_eq!(tables, 8);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::Corrupt(_))));
    }
}
