//! The embedded store: one SQLite database (`relay.db`, WAL, `synchronous=FULL`) owned by one
//! thread that commits concurrent requests together.
//!
//! Every [`RelayStore`] call becomes a closure sent to the worker thread. The worker takes the
//! first waiting closure plus everything queued behind it (up to [`MAX_BATCH`]), runs each inside
//! its own `SAVEPOINT` within one `BEGIN IMMEDIATE` transaction, and only after `COMMIT` returns
//! does it release the replies. One fsync thus covers many senders (group commit), a refused
//! request rolls back only its own savepoint, and nothing is acknowledged before it is durable.
//! The database is plain SQLite: SQLCipher is linked for the client cache, but the relay never
//! sets a key because everything it stores is already ciphertext or public key material.
//! `secure_delete` is on and the sweeper truncates the WAL after deleting expired ciphertext,
//! so an expired message leaves no copy in free pages or the log.
//! The schema and its versions are documented in `docs/relay.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::store::{
    AccountStatus, DeviceId, Fanout, LoginRecord, MAX_STORED_ONE_TIME, MAX_STORED_PQ,
    NetworkRecord, NewAccount, NewInvite, Notice, OutgoingMessage, PolicyChange, RelayStore,
    RoomItem, RoomOpOutcome, RoomSendOutcome, SendOutcome, StoreFuture, StoredPolicy, SweepReport,
};
use super::{DEFAULT_MAX_TIMER_SECS, RelayError, rooms};
use crate::clock::Clock;
use crate::crypto::identity::RootPublicKey;
use crate::crypto::membership::{OpKind, Role, RoomState, SignedOp};
use crate::protocol::{
    Deliveries, Delivery, DeliveryKind, DeviceBundle, ErrorCode, KeyBundle, OneTimePrekeyMsg,
    PqPrekeyMsg, PrekeyUpload, RoomLog, SignedPrekeyMsg, UserDevices, UserInfo,
};

/// Most requests committed in one transaction; bounds the latency of the last one in a batch.
const MAX_BATCH: usize = 256;
/// Requests that may wait for the worker before callers feel backpressure.
const QUEUE_DEPTH: usize = 1024;
/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;
/// How long `(sender device, message id)` pairs are remembered to drop retried sends.
const DEDUP_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

const SCHEMA: &str = "
CREATE TABLE network (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    network_id   TEXT NOT NULL,
    network_name TEXT NOT NULL,
    relay_id     BLOB NOT NULL,
    admin_key    BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE users (
    username     TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    root_key     BLOB NOT NULL,
    is_admin     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE TABLE invites (
    code_hash  BLOB PRIMARY KEY,
    email      TEXT NOT NULL DEFAULT '',
    admin      INTEGER NOT NULL DEFAULT 0,
    created_by TEXT REFERENCES users(username),
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    used_by    TEXT REFERENCES users(username),
    used_at    INTEGER
);
CREATE TABLE devices (
    device_id   BLOB PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users(username),
    certificate BLOB NOT NULL,
    signing_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX devices_by_user ON devices(username);
CREATE TABLE signed_prekeys (
    device_id  BLOB PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id     INTEGER NOT NULL,
    public     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    signature  BLOB NOT NULL
);
CREATE TABLE one_time_prekeys (
    id        INTEGER PRIMARY KEY,
    device_id BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id    INTEGER NOT NULL,
    public    BLOB NOT NULL,
    UNIQUE (device_id, key_id)
);
CREATE TABLE pq_prekeys (
    id          INTEGER PRIMARY KEY,
    device_id   BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id      INTEGER NOT NULL,
    last_resort INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    public      BLOB NOT NULL,
    signature   BLOB NOT NULL,
    UNIQUE (device_id, key_id)
);
CREATE INDEX pq_prekeys_pop ON pq_prekeys(device_id, last_resort, id);
CREATE TABLE bodies (
    id           INTEGER PRIMARY KEY,
    data         BLOB NOT NULL,
    delete_by_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX bodies_expiry ON bodies(delete_by_ms) WHERE delete_by_ms > 0;
CREATE TABLE mailbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id     BLOB NOT NULL REFERENCES devices(device_id),
    kind          INTEGER NOT NULL,
    sender_user   TEXT NOT NULL,
    sender_device BLOB NOT NULL,
    message_id    BLOB NOT NULL,
    body_id       INTEGER REFERENCES bodies(id),
    payload       BLOB NOT NULL,
    server_ts_ms  INTEGER NOT NULL,
    delete_by_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX mailbox_by_device ON mailbox(device_id, seq);
CREATE INDEX mailbox_by_body ON mailbox(body_id) WHERE body_id IS NOT NULL;
CREATE INDEX mailbox_expiry ON mailbox(delete_by_ms) WHERE delete_by_ms > 0;
CREATE TABLE sends (
    sender_device BLOB NOT NULL,
    message_id    BLOB NOT NULL,
    server_ts_ms  INTEGER NOT NULL,
    PRIMARY KEY (sender_device, message_id)
) WITHOUT ROWID;
CREATE INDEX sends_by_time ON sends(server_ts_ms);
";

/// Version 2: rooms (the relay's copy of each signed membership log, for routing), shared key
/// data for room fan-out, and the network policy. Runs on new databases too, after [`SCHEMA`].
const MIGRATION_2: &str = "
CREATE TABLE rooms (
    room_id  TEXT PRIMARY KEY,
    state    BLOB NOT NULL,
    head_seq INTEGER NOT NULL,
    deleted  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE room_members (
    room_id  TEXT NOT NULL REFERENCES rooms(room_id),
    username TEXT NOT NULL,
    role     INTEGER NOT NULL,
    PRIMARY KEY (room_id, username)
) WITHOUT ROWID;
CREATE INDEX room_members_by_user ON room_members(username);
CREATE TABLE room_ops (
    room_id TEXT NOT NULL REFERENCES rooms(room_id),
    seq     INTEGER NOT NULL,
    op      BLOB NOT NULL,
    PRIMARY KEY (room_id, seq)
);
ALTER TABLE bodies ADD COLUMN key_data BLOB;
ALTER TABLE mailbox ADD COLUMN room_id TEXT;
CREATE TABLE policy (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    read_receipts   INTEGER NOT NULL,
    max_expire_secs INTEGER NOT NULL,
    max_burn_secs   INTEGER NOT NULL
);
";

/// Runs after `COMMIT` to release one reply.
type Finish = Box<dyn FnOnce() + Send>;
/// One request: runs inside the batch transaction and returns its deferred reply.
type Op = Box<dyn FnOnce(&Connection) -> Finish + Send>;
/// Work that must run outside any transaction (a WAL checkpoint).
type Outside = Box<dyn FnOnce(&Connection) + Send>;

enum Job {
    Op(Op),
    /// Commit what is queued before this, then run it outside a transaction.
    Outside(Outside),
    /// Finish what is queued before this, close the database and stop.
    Close(oneshot::Sender<Result<(), RelayError>>),
}

/// The SQLite implementation of [`RelayStore`].
pub(crate) struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    crashed: Arc<AtomicBool>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Dates every request when it is made; the worker thread has no tokio clock of its own.
    clock: Clock,
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) the database at `path` and starts its worker.
    ///
    /// # Errors
    /// [`RelayError::Db`] if it cannot be opened or migrated, [`RelayError::DataDir`] for a
    /// schema newer than this build.
    pub(crate) fn open(path: &Path, clock: Clock) -> Result<Self, RelayError> {
        super::network::create_private_file(path)?;
        let conn = open_connection(path)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let crashed = Arc::new(AtomicBool::new(false));
        let flag = crashed.clone();
        let worker = std::thread::Builder::new()
            .name("relay-db".into())
            .spawn(move || worker(conn, rx, &flag))?;
        Ok(Self {
            jobs: tx,
            crashed,
            worker: Mutex::new(Some(worker)),
            clock,
        })
    }

    /// Finishes queued requests, checkpoints the WAL, closes the database and joins the
    /// worker. Calling it again (or after [`Self::crash`]) does nothing.
    pub(crate) async fn close(&self) -> Result<(), RelayError> {
        let (tx, rx) = oneshot::channel();
        let result = match self.jobs.send(Job::Close(tx)).await {
            Ok(()) => rx.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        result
    }

    /// Simulates a crash: the batch in progress is rolled back instead of committed, nothing
    /// else runs, and the connection is abandoned without a checkpoint.
    pub(crate) fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
    }

    /// Queues `f` to run in its own savepoint of the next batch; the future resolves after the
    /// batch commits. `f` gets the time of the request (ms since the epoch), read now, on the
    /// caller's side.
    fn call<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, u64) -> Result<T, RelayError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let now = self.clock.now_ms();
        let op: Op = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, |c| f(c, now));
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        Box::pin(async move {
            self.jobs
                .send(Job::Op(op))
                .await
                .map_err(|_| RelayError::StoreClosed)?;
            // A dropped reply means the batch failed to commit (logged by the worker) or the
            // relay is crashing; either way nothing of this request was stored.
            rx.await.map_err(|_| RelayError::StoreClosed)?
        })
    }

    /// Copies the WAL into the database and truncates it to zero bytes, so deleted rows (whose
    /// pages `secure_delete` zeroed) leave no older copy in the log.
    async fn checkpoint(&self) -> Result<(), RelayError> {
        let (tx, rx) = oneshot::channel();
        let job: Outside = Box::new(move |conn: &Connection| {
            let result = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(RelayError::from);
            let _ = tx.send(result);
        });
        self.jobs
            .send(Job::Outside(job))
            .await
            .map_err(|_| RelayError::StoreClosed)?;
        let busy = rx.await.map_err(|_| RelayError::StoreClosed)??;
        if busy != 0 {
            // A reader (another process looking at the file) held an old snapshot; the next
            // sweep that deletes something tries again.
            tracing::warn!("the WAL could not be truncated after deleting expired items");
        }
        Ok(())
    }
}

fn open_connection(path: &Path) -> Result<Connection, RelayError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // A crashed predecessor in the same process may still be finishing a batch.
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(RelayError::DataDir(format!(
            "the database refused WAL mode (got {mode})"
        )));
    }
    // secure_delete: deleted ciphertext is overwritten, not left in free pages.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;
         PRAGMA secure_delete = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(RelayError::DataDir(format!(
            "relay.db has schema version {version}; this build knows {SCHEMA_VERSION}"
        )));
    }
    if version < SCHEMA_VERSION {
        migrate(&conn, version)?;
    }
    Ok(conn)
}

/// Brings a database at `version` (0 = empty) to [`SCHEMA_VERSION`] in one transaction.
fn migrate(conn: &Connection, version: i64) -> Result<(), RelayError> {
    let mut sql = String::from("BEGIN IMMEDIATE;");
    if version < 1 {
        sql.push_str(SCHEMA);
    }
    if version < 2 {
        sql.push_str(MIGRATION_2);
        sql.push_str(&format!(
            "INSERT INTO policy (id, read_receipts, max_expire_secs, max_burn_secs)
             VALUES (1, 1, {DEFAULT_MAX_TIMER_SECS}, {DEFAULT_MAX_TIMER_SECS});"
        ));
    }
    sql.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"));
    if let Err(e) = conn.execute_batch(&sql) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    if version > 0 {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "relay database migrated"
        );
    }
    Ok(())
}

fn worker(conn: Connection, mut rx: mpsc::Receiver<Job>, crashed: &AtomicBool) {
    let mut close_reply = None;
    while let Some(first) = rx.blocking_recv() {
        if crashed.load(Ordering::SeqCst) {
            break;
        }
        let mut ops = Vec::new();
        let mut outside = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Op(op) => ops.push(op),
                Job::Outside(f) => {
                    outside = Some(f);
                    break;
                }
                Job::Close(reply) => {
                    close_reply = Some(reply);
                    break;
                }
            }
            if ops.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !ops.is_empty() {
            run_batch(&conn, ops, crashed);
        }
        if let Some(f) = outside
            && !crashed.load(Ordering::SeqCst)
        {
            f(&conn);
        }
        if close_reply.is_some() || crashed.load(Ordering::SeqCst) {
            break;
        }
    }
    if crashed.load(Ordering::SeqCst) {
        // A crash leaves the WAL as it is; recovery on the next open is what is being tested.
        std::mem::forget(conn);
        return;
    }
    // Requests that raced with the close are refused rather than left hanging.
    rx.close();
    let result = conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(RelayError::from)
        .and_then(|()| conn.close().map_err(|(_, e)| RelayError::from(e)));
    if let Err(e) = &result {
        tracing::error!(error = %e, "closing the relay database failed");
    }
    if let Some(reply) = close_reply {
        let _ = reply.send(result);
    }
}

fn run_batch(conn: &Connection, ops: Vec<Op>, crashed: &AtomicBool) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the ops drops their reply senders: each caller sees a failed request.
        tracing::error!(error = %e, "could not begin a relay transaction");
        return;
    }
    let mut done: Vec<Finish> = Vec::with_capacity(ops.len());
    for op in ops {
        let finish = op(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. disk full): the earlier results
            // of this batch are gone, so none of them may be acknowledged.
            tracing::error!("the database aborted a relay transaction; failing its batch");
            done.clear();
            if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
                return;
            }
            continue;
        }
        done.push(finish);
    }
    if crashed.load(Ordering::SeqCst) {
        let _ = conn.execute_batch("ROLLBACK");
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => done.into_iter().for_each(|finish| finish()),
        Err(e) => {
            tracing::error!(error = %e, "relay commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// Runs `f` in a savepoint that is rolled back if `f` fails, so a refusal leaves no trace.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, RelayError>,
) -> Result<T, RelayError> {
    conn.execute_batch("SAVEPOINT op")?;
    let result = f(conn);
    match &result {
        Ok(_) => conn.execute_batch("RELEASE op")?,
        Err(_) => conn.execute_batch("ROLLBACK TO op; RELEASE op")?,
    }
    result
}

/// SQLite integers are signed; values beyond `i64::MAX` (only ever far-future times) saturate.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn count(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn device_id(bytes: &[u8]) -> Option<DeviceId> {
    bytes.try_into().ok()
}

fn user_exists(conn: &Connection, username: &str) -> Result<bool, RelayError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE username = ?1")?
        .query_row([username], |_| Ok(()))
        .optional()?
        .is_some())
}

fn active_devices(
    conn: &Connection,
    username: &str,
) -> Result<Vec<(DeviceId, Vec<u8>)>, RelayError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, certificate FROM devices
         WHERE username = ?1 AND revoked_at IS NULL ORDER BY created_at, device_id",
    )?;
    let rows = stmt.query_map([username], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, cert) = row?;
        if let Some(id) = device_id(&id) {
            out.push((id, cert));
        }
    }
    Ok(out)
}

fn account_status(
    conn: &Connection,
    username: &str,
    is_admin: bool,
    device: &DeviceId,
    now: u64,
) -> Result<AccountStatus, RelayError> {
    let one_time: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM one_time_prekeys WHERE device_id = ?1")?
        .query_row([&device[..]], |r| r.get(0))?;
    let pq: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM pq_prekeys WHERE device_id = ?1 AND last_resort = 0")?
        .query_row([&device[..]], |r| r.get(0))?;
    let pending: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM mailbox
             WHERE device_id = ?1 AND (delete_by_ms = 0 OR delete_by_ms > ?2)",
        )?
        .query_row(params![&device[..], sql_int(now)], |r| r.get(0))?;
    Ok(AccountStatus {
        username: username.to_owned(),
        is_admin,
        one_time_prekeys_left: count(one_time),
        pq_prekeys_left: count(pq),
        pending: count(pending),
    })
}

fn store_prekeys(
    conn: &Connection,
    device: &DeviceId,
    upload: &PrekeyUpload,
) -> Result<(), RelayError> {
    let dev = &device[..];
    if let Some(spk) = &upload.signed_prekey {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO signed_prekeys (device_id, key_id, public, created_at, signature)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![dev, spk.id, spk.public, sql_int(spk.created_at), spk.signature])?;
    }
    for otk in &upload.one_time {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO one_time_prekeys (device_id, key_id, public) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![dev, otk.id, otk.public])?;
    }
    let insert_pq = |pq: &PqPrekeyMsg, last_resort: bool| -> Result<(), RelayError> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO pq_prekeys
             (device_id, key_id, last_resort, created_at, public, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            dev,
            pq.id,
            last_resort,
            sql_int(pq.created_at),
            pq.public,
            pq.signature
        ])?;
        Ok(())
    };
    for pq in &upload.pq_one_time {
        insert_pq(pq, false)?;
    }
    if let Some(lr) = &upload.pq_last_resort {
        conn.prepare_cached("DELETE FROM pq_prekeys WHERE device_id = ?1 AND last_resort = 1")?
            .execute([dev])?;
        insert_pq(lr, true)?;
    }
    let one_time: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM one_time_prekeys WHERE device_id = ?1")?
        .query_row([dev], |r| r.get(0))?;
    let pq: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM pq_prekeys WHERE device_id = ?1 AND last_resort = 0")?
        .query_row([dev], |r| r.get(0))?;
    if count(one_time) as usize > MAX_STORED_ONE_TIME || count(pq) as usize > MAX_STORED_PQ {
        return Err(RelayError::refused(
            ErrorCode::BadRequest,
            "too many one-time prekeys stored",
        ));
    }
    Ok(())
}

fn op_load_network(conn: &Connection) -> Result<Option<NetworkRecord>, RelayError> {
    let row = conn
        .query_row(
            "SELECT network_id, network_name, relay_id, admin_key FROM network WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((network_id, network_name, relay_id, admin_key)) = row else {
        return Ok(None);
    };
    let admin_key = admin_key
        .try_into()
        .map_err(|_| RelayError::DataDir("stored network admin key is not 32 bytes".into()))?;
    Ok(Some(NetworkRecord {
        network_id,
        network_name,
        relay_id,
        admin_key,
    }))
}

fn insert_invite(
    conn: &Connection,
    invite: &NewInvite,
    created_by: Option<&str>,
    now: u64,
) -> Result<(), RelayError> {
    conn.prepare_cached(
        "INSERT INTO invites (code_hash, email, admin, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        &invite.code_hash[..],
        invite.email,
        invite.admin,
        created_by,
        sql_int(now / 1000),
        invite.expires_at.map(sql_int),
    ])?;
    Ok(())
}

fn op_create_network(
    conn: &Connection,
    net: &NetworkRecord,
    invite: &NewInvite,
    now: u64,
) -> Result<(), RelayError> {
    conn.execute(
        "INSERT INTO network (id, network_id, network_name, relay_id, admin_key, created_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5)",
        params![
            net.network_id,
            net.network_name,
            net.relay_id,
            &net.admin_key[..],
            sql_int(now / 1000)
        ],
    )?;
    insert_invite(conn, invite, None, now)
}

fn op_register(
    conn: &Connection,
    acc: &NewAccount,
    now_ms: u64,
) -> Result<AccountStatus, RelayError> {
    let invite = conn
        .prepare_cached("SELECT admin, expires_at, used_by FROM invites WHERE code_hash = ?1")?
        .query_row([&acc.invite_hash[..]], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    let now = sql_int(now_ms / 1000);
    let is_admin = match invite {
        Some((admin, expires, None)) if expires.is_none_or(|e| e > now) => admin,
        _ => {
            return Err(RelayError::refused(
                ErrorCode::InvalidInvite,
                "the invite is unknown, used or expired",
            ));
        }
    };
    if user_exists(conn, &acc.username)? {
        return Err(RelayError::refused(
            ErrorCode::UsernameTaken,
            "the username is taken",
        ));
    }
    let Some(device) = &acc.device else {
        return Err(RelayError::refused(
            ErrorCode::AuthFailed,
            "the device certificate or signature did not verify",
        ));
    };
    let taken = conn
        .prepare_cached("SELECT 1 FROM devices WHERE device_id = ?1")?
        .query_row([&device.device_id[..]], |_| Ok(()))
        .optional()?;
    if taken.is_some() {
        return Err(RelayError::refused(
            ErrorCode::BadRequest,
            "the device is already registered",
        ));
    }
    conn.prepare_cached(
        "INSERT INTO users (username, display_name, root_key, is_admin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        acc.username,
        acc.display_name,
        &acc.root_key[..],
        is_admin,
        now
    ])?;
    conn.prepare_cached(
        "INSERT INTO devices (device_id, username, certificate, signing_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &device.device_id[..],
        acc.username,
        device.certificate,
        &device.signing_key[..],
        now
    ])?;
    if let Some(prekeys) = &acc.prekeys {
        store_prekeys(conn, &device.device_id, prekeys)?;
    }
    conn.prepare_cached("UPDATE invites SET used_by = ?1, used_at = ?2 WHERE code_hash = ?3")?
        .execute(params![acc.username, now, &acc.invite_hash[..]])?;
    account_status(conn, &acc.username, is_admin, &device.device_id, now_ms)
}

fn op_login(
    conn: &Connection,
    username: &str,
    device: &DeviceId,
    now: u64,
) -> Result<Option<LoginRecord>, RelayError> {
    let row = conn
        .prepare_cached(
            "SELECT d.signing_key, u.is_admin FROM devices d JOIN users u ON u.username = d.username
             WHERE d.device_id = ?1 AND d.username = ?2 AND d.revoked_at IS NULL",
        )?
        .query_row(params![&device[..], username], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, bool>(1)?))
        })
        .optional()?;
    let Some((key, is_admin)) = row else {
        return Ok(None);
    };
    let Ok(signing_key) = <[u8; 32]>::try_from(key.as_slice()) else {
        return Ok(None);
    };
    Ok(Some(LoginRecord {
        signing_key,
        status: account_status(conn, username, is_admin, device, now)?,
    }))
}

fn op_get_user(conn: &Connection, username: &str) -> Result<Option<UserInfo>, RelayError> {
    let row = conn
        .prepare_cached("SELECT display_name, root_key FROM users WHERE username = ?1")?
        .query_row([username], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    let Some((display_name, root_key)) = row else {
        return Ok(None);
    };
    let devices = active_devices(conn, username)?
        .into_iter()
        .map(|(id, _)| id.to_vec())
        .collect();
    Ok(Some(UserInfo {
        username: username.to_owned(),
        display_name,
        root_key,
        devices,
    }))
}

fn op_fetch_keys(conn: &Connection, username: &str) -> Result<Option<KeyBundle>, RelayError> {
    let root = conn
        .prepare_cached("SELECT root_key FROM users WHERE username = ?1")?
        .query_row([username], |r| r.get::<_, Vec<u8>>(0))
        .optional()?;
    let Some(root_key) = root else {
        return Ok(None);
    };
    let mut devices = Vec::new();
    for (id, certificate) in active_devices(conn, username)? {
        let dev = &id[..];
        let signed_prekey = conn
            .prepare_cached(
                "SELECT key_id, public, created_at, signature FROM signed_prekeys WHERE device_id = ?1",
            )?
            .query_row([dev], |r| {
                Ok(SignedPrekeyMsg {
                    id: r.get(0)?,
                    public: r.get(1)?,
                    created_at: from_sql_int(r.get(2)?),
                    signature: r.get(3)?,
                })
            })
            .optional()?;
        let one_time = conn
            .prepare_cached(
                "SELECT id, key_id, public FROM one_time_prekeys
                 WHERE device_id = ?1 ORDER BY id LIMIT 1",
            )?
            .query_row([dev], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    OneTimePrekeyMsg {
                        id: r.get(1)?,
                        public: r.get(2)?,
                    },
                ))
            })
            .optional()?;
        let one_time_prekey = match one_time {
            Some((row, key)) => {
                conn.prepare_cached("DELETE FROM one_time_prekeys WHERE id = ?1")?
                    .execute([row])?;
                Some(key)
            }
            None => None,
        };
        let pq_row = |last_resort: bool| -> Result<Option<(i64, PqPrekeyMsg)>, RelayError> {
            Ok(conn
                .prepare_cached(
                    "SELECT id, key_id, created_at, public, signature FROM pq_prekeys
                     WHERE device_id = ?1 AND last_resort = ?2 ORDER BY id LIMIT 1",
                )?
                .query_row(params![dev, last_resort], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        PqPrekeyMsg {
                            id: r.get(1)?,
                            last_resort,
                            created_at: from_sql_int(r.get(2)?),
                            public: r.get(3)?,
                            signature: r.get(4)?,
                        },
                    ))
                })
                .optional()?)
        };
        let pq_prekey = match pq_row(false)? {
            Some((row, key)) => {
                conn.prepare_cached("DELETE FROM pq_prekeys WHERE id = ?1")?
                    .execute([row])?;
                Some(key)
            }
            // The last-resort key is shared by every initiator until the device rotates it.
            None => pq_row(true)?.map(|(_, key)| key),
        };
        devices.push(DeviceBundle {
            device_id: id.to_vec(),
            certificate,
            signed_prekey,
            one_time_prekey,
            pq_prekey,
        });
    }
    Ok(Some(KeyBundle {
        username: username.to_owned(),
        root_key,
        devices,
        revocations: Vec::new(),
    }))
}

fn op_send(conn: &Connection, msg: &OutgoingMessage, now: u64) -> Result<SendOutcome, RelayError> {
    let earlier = conn
        .prepare_cached(
            "SELECT server_ts_ms FROM sends WHERE sender_device = ?1 AND message_id = ?2",
        )?
        .query_row(params![&msg.sender_device[..], msg.message_id], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?;
    if let Some(ts) = earlier {
        return Ok(SendOutcome::Duplicate {
            server_ts_ms: from_sql_int(ts),
        });
    }
    // The devices this send must address: every active device of every recipient, plus the
    // sender's own other devices, never the sending device itself.
    let mut required: BTreeMap<&str, BTreeSet<DeviceId>> = BTreeMap::new();
    for user in &msg.recipients {
        if !user_exists(conn, user)? {
            return Err(RelayError::refused(
                ErrorCode::UnknownUser,
                "a recipient does not exist",
            ));
        }
        let devices = active_devices(conn, user)?.into_iter().map(|(id, _)| id);
        required.entry(user).or_default().extend(devices);
    }
    let own = active_devices(conn, &msg.sender_user)?
        .into_iter()
        .map(|(id, _)| id);
    let own_set = required.entry(&msg.sender_user).or_default();
    own_set.extend(own);
    own_set.remove(&msg.sender_device);
    let mut given: BTreeMap<&str, BTreeSet<DeviceId>> = BTreeMap::new();
    for e in &msg.entries {
        given.entry(&e.user).or_default().insert(e.device);
    }
    let empty = BTreeSet::new();
    let users: BTreeSet<&str> = required.keys().chain(given.keys()).copied().collect();
    let stale: Vec<UserDevices> = users
        .into_iter()
        .filter(|u| required.get(u).unwrap_or(&empty) != given.get(u).unwrap_or(&empty))
        .map(|u| UserDevices {
            username: u.to_owned(),
            devices: required
                .get(u)
                .unwrap_or(&empty)
                .iter()
                .map(|d| d.to_vec())
                .collect(),
        })
        .collect();
    if !stale.is_empty() {
        return Ok(SendOutcome::DevicesChanged(stale));
    }
    let delete_by = sql_int(msg.delete_by_ms);
    let mut seqs = Vec::with_capacity(msg.entries.len());
    if !msg.entries.is_empty() {
        conn.prepare_cached("INSERT INTO bodies (data, delete_by_ms) VALUES (?1, ?2)")?
            .execute(params![msg.body, delete_by])?;
        let body_id = conn.last_insert_rowid();
        let mut insert = conn.prepare_cached(
            "INSERT INTO mailbox (device_id, kind, sender_user, sender_device, message_id,
                                  body_id, payload, server_ts_ms, delete_by_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for e in &msg.entries {
            insert.execute(params![
                &e.device[..],
                DeliveryKind::Message as i32,
                msg.sender_user,
                &msg.sender_device[..],
                msg.message_id,
                body_id,
                e.payload,
                sql_int(now),
                delete_by
            ])?;
            seqs.push(from_sql_int(conn.last_insert_rowid()));
        }
    }
    conn.prepare_cached(
        "INSERT INTO sends (sender_device, message_id, server_ts_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        &msg.sender_device[..],
        msg.message_id,
        sql_int(now)
    ])?;
    Ok(SendOutcome::Stored {
        server_ts_ms: now,
        seqs,
    })
}

/// Bytes one item adds to an encoded `Deliveries` message.
fn item_len(d: &Delivery) -> usize {
    let len = d.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

fn op_fetch(
    conn: &Connection,
    device: &DeviceId,
    limit: u32,
    max_bytes: usize,
    now: u64,
) -> Result<Deliveries, RelayError> {
    // Room items keep their shared key data (sender-key message or signed op) once, in the
    // body row; their own payload is empty.
    let mut stmt = conn.prepare_cached(
        "SELECT m.seq, m.kind, m.sender_user, m.sender_device, m.message_id,
                CASE WHEN length(m.payload) = 0 THEN coalesce(b.key_data, m.payload)
                     ELSE m.payload END,
                m.server_ts_ms, b.data, m.room_id
         FROM mailbox m LEFT JOIN bodies b ON b.id = m.body_id
         WHERE m.device_id = ?1 AND (m.delete_by_ms = 0 OR m.delete_by_ms > ?2)
           AND (b.delete_by_ms IS NULL OR b.delete_by_ms = 0 OR b.delete_by_ms > ?2)
         ORDER BY m.seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![&device[..], sql_int(now), i64::from(limit) + 1])?;
    let mut items = Vec::new();
    let mut used = 0usize;
    let mut more = false;
    while let Some(r) = rows.next()? {
        if items.len() >= limit as usize {
            more = true;
            break;
        }
        let d = Delivery {
            seq: from_sql_int(r.get(0)?),
            kind: r.get(1)?,
            sender_user: r.get(2)?,
            sender_device: r.get(3)?,
            message_id: r.get(4)?,
            payload: r.get(5)?,
            server_ts_ms: from_sql_int(r.get(6)?),
            body: r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
            room_id: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
        };
        let len = item_len(&d);
        // At least one item always goes out, so an item never blocks the mailbox.
        if !items.is_empty() && used + len > max_bytes {
            more = true;
            break;
        }
        used += len;
        items.push(d);
    }
    Ok(Deliveries { items, more })
}

fn op_ack(
    conn: &Connection,
    username: &str,
    device: &DeviceId,
    seqs: &[u64],
    now: u64,
) -> Result<Vec<Notice>, RelayError> {
    let mut notices = Vec::new();
    let mut bodies = BTreeSet::new();
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    for seq in unique {
        // Only this device's own rows match, so a device can never delete another's items.
        let row = conn
            .prepare_cached(
                "SELECT kind, sender_device, message_id, body_id FROM mailbox
                 WHERE seq = ?1 AND device_id = ?2",
            )?
            .query_row(params![sql_int(seq), &device[..]], |r| {
                Ok((
                    r.get::<_, i32>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .optional()?;
        let Some((kind, sender_device, message_id, body_id)) = row else {
            continue;
        };
        conn.prepare_cached("DELETE FROM mailbox WHERE seq = ?1")?
            .execute([sql_int(seq)])?;
        if let Some(b) = body_id {
            bodies.insert(b);
        }
        if kind != DeliveryKind::Message as i32 {
            continue;
        }
        let Some(sender) = device_id(&sender_device) else {
            continue;
        };
        let sender_active = conn
            .prepare_cached("SELECT 1 FROM devices WHERE device_id = ?1 AND revoked_at IS NULL")?
            .query_row([&sender[..]], |_| Ok(()))
            .optional()?
            .is_some();
        if !sender_active {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO mailbox (device_id, kind, sender_user, sender_device, message_id,
                                  body_id, payload, server_ts_ms, delete_by_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, x'', ?6, 0)",
        )?
        .execute(params![
            &sender[..],
            DeliveryKind::Delivered as i32,
            username,
            &device[..],
            message_id,
            sql_int(now)
        ])?;
        notices.push(Notice {
            device: sender,
            delivery: Delivery {
                seq: from_sql_int(conn.last_insert_rowid()),
                kind: DeliveryKind::Delivered as i32,
                sender_user: username.to_owned(),
                sender_device: device.to_vec(),
                message_id,
                body: Vec::new(),
                payload: Vec::new(),
                server_ts_ms: now,
                room_id: String::new(),
            },
        });
    }
    for b in bodies {
        conn.prepare_cached(
            "DELETE FROM bodies WHERE id = ?1
             AND NOT EXISTS (SELECT 1 FROM mailbox WHERE body_id = ?1)",
        )?
        .execute([b])?;
    }
    Ok(notices)
}

fn op_create_invite(
    conn: &Connection,
    admin: &str,
    invite: &NewInvite,
    now: u64,
) -> Result<(), RelayError> {
    let is_admin = conn
        .prepare_cached("SELECT is_admin FROM users WHERE username = ?1")?
        .query_row([admin], |r| r.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false);
    if !is_admin {
        return Err(RelayError::refused(
            ErrorCode::PermissionDenied,
            "only network admins can create invites",
        ));
    }
    insert_invite(conn, invite, Some(admin), now)
}

fn op_sweep(conn: &Connection, now: u64) -> Result<SweepReport, RelayError> {
    let now = sql_int(now);
    let mut items = conn
        .prepare_cached("DELETE FROM mailbox WHERE delete_by_ms > 0 AND delete_by_ms <= ?1")?
        .execute([now])?;
    // An expired body goes even while rows still point at it (rows normally expire with it;
    // this also covers rows whose own time said otherwise).
    items += conn
        .prepare_cached(
            "DELETE FROM mailbox WHERE body_id IN
             (SELECT id FROM bodies WHERE delete_by_ms > 0 AND delete_by_ms <= ?1)",
        )?
        .execute([now])?;
    let bodies = conn
        .prepare_cached("DELETE FROM bodies WHERE delete_by_ms > 0 AND delete_by_ms <= ?1")?
        .execute([now])?;
    let forgotten = conn
        .prepare_cached("DELETE FROM sends WHERE server_ts_ms < ?1")?
        .execute([sql_int(from_sql_int(now).saturating_sub(DEDUP_WINDOW_MS))])?;
    if items > 0 || bodies > 0 || forgotten > 0 {
        tracing::debug!(items, bodies, forgotten, "relay sweep");
    }
    Ok(SweepReport { items, bodies })
}

fn role_number(role: Role) -> i64 {
    match role {
        Role::Member => 0,
        Role::Moderator => 1,
    }
}

fn load_room(conn: &Connection, room_id: &str) -> Result<Option<RoomState>, RelayError> {
    let bytes = conn
        .prepare_cached("SELECT state FROM rooms WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get::<_, Vec<u8>>(0))
        .optional()?;
    bytes
        .map(|b| {
            RoomState::decode(&b)
                .map_err(|e| RelayError::DataDir(format!("stored state of a room: {e}")))
        })
        .transpose()
}

/// Every active device of `users`, except `skip`.
fn devices_of<'a>(
    conn: &Connection,
    users: impl IntoIterator<Item = &'a String>,
    skip: &DeviceId,
) -> Result<Vec<DeviceId>, RelayError> {
    let mut out = Vec::new();
    for user in users {
        for (id, _) in active_devices(conn, user)? {
            if id != *skip {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// Stores `item` once (body and shared key data in one `bodies` row) and one mailbox row per
/// device in `devices`, all pointing at it.
fn fan_out(
    conn: &Connection,
    item: &RoomItem,
    devices: &[DeviceId],
    now: u64,
) -> Result<Vec<(DeviceId, u64)>, RelayError> {
    let mut seqs = Vec::with_capacity(devices.len());
    if devices.is_empty() {
        return Ok(seqs);
    }
    let delete_by = sql_int(item.delete_by_ms);
    conn.prepare_cached("INSERT INTO bodies (data, key_data, delete_by_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![item.body, item.payload, delete_by])?;
    let body_id = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(
        "INSERT INTO mailbox (device_id, kind, sender_user, sender_device, message_id,
                              body_id, payload, server_ts_ms, delete_by_ms, room_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, x'', ?7, ?8, ?9)",
    )?;
    for device in devices {
        insert.execute(params![
            &device[..],
            item.kind as i32,
            item.sender_user,
            &item.sender_device[..],
            item.message_id,
            body_id,
            sql_int(now),
            delete_by,
            item.room_id
        ])?;
        seqs.push((*device, from_sql_int(conn.last_insert_rowid())));
    }
    Ok(seqs)
}

fn op_submit_room_op(
    conn: &Connection,
    item: &RoomItem,
    op: &SignedOp,
    max_members: usize,
    now: u64,
) -> Result<RoomOpOutcome, RelayError> {
    let room_id = &op.op.room_id;
    let root = conn
        .prepare_cached("SELECT root_key FROM users WHERE username = ?1")?
        .query_row([&op.op.actor], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| {
            RelayError::refused(ErrorCode::UnknownUser, "the acting user does not exist")
        })?;
    let root = RootPublicKey(root);
    let existing = load_room(conn, room_id)?;
    let (before, after) = match (&op.op.kind, existing) {
        (OpKind::Create { .. }, Some(_)) => {
            return Err(RelayError::refused(
                ErrorCode::RoomChanged,
                "a room with this id exists already",
            ));
        }
        (OpKind::Create { .. }, None) => {
            let state = RoomState::genesis(op, &root, max_members)
                .map_err(|e| rooms::membership_refusal(&e, max_members))?;
            (BTreeMap::new(), state)
        }
        (_, None) => return Err(rooms::unknown_room()),
        (_, Some(mut state)) => {
            let before = state.members.clone();
            state
                .apply(op, &root, max_members)
                .map_err(|e| rooms::membership_refusal(&e, max_members))?;
            (before, state)
        }
    };
    for user in after.members.keys() {
        if !before.contains_key(user) && !user_exists(conn, user)? {
            return Err(RelayError::refused(
                ErrorCode::UnknownUser,
                format!("{user} does not exist on this network"),
            ));
        }
    }
    let seq = sql_int(after.head_seq);
    conn.prepare_cached(
        "INSERT INTO rooms (room_id, state, head_seq, deleted) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id) DO UPDATE
         SET state = excluded.state, head_seq = excluded.head_seq, deleted = excluded.deleted",
    )?
    .execute(params![room_id, after.encode()?, seq, after.deleted])?;
    conn.prepare_cached("INSERT INTO room_ops (room_id, seq, op) VALUES (?1, ?2, ?3)")?
        .execute(params![room_id, seq, item.payload])?;
    for user in before.keys().filter(|u| !after.members.contains_key(*u)) {
        conn.prepare_cached("DELETE FROM room_members WHERE room_id = ?1 AND username = ?2")?
            .execute(params![room_id, user])?;
    }
    for (user, role) in &after.members {
        if before.get(user) != Some(role) {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO room_members (room_id, username, role) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![room_id, user, role_number(*role)])?;
        }
    }
    let everyone: BTreeSet<&String> = before.keys().chain(after.members.keys()).collect();
    let devices = devices_of(conn, everyone, &item.sender_device)?;
    let seqs = fan_out(conn, item, &devices, now)?;
    Ok(RoomOpOutcome {
        seq: after.head_seq,
        fanout: Fanout {
            server_ts_ms: now,
            seqs,
        },
    })
}

fn is_member(conn: &Connection, room_id: &str, username: &str) -> Result<bool, RelayError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM room_members WHERE room_id = ?1 AND username = ?2")?
        .query_row([room_id, username], |_| Ok(()))
        .optional()?
        .is_some())
}

fn op_room_log(
    conn: &Connection,
    username: &str,
    room_id: &str,
    from_seq: u64,
    max_bytes: usize,
) -> Result<Option<RoomLog>, RelayError> {
    if !is_member(conn, room_id, username)? {
        return Ok(None);
    }
    let mut stmt = conn
        .prepare_cached("SELECT op FROM room_ops WHERE room_id = ?1 AND seq >= ?2 ORDER BY seq")?;
    let mut rows = stmt.query(params![room_id, sql_int(from_seq)])?;
    let mut log = RoomLog {
        room_id: room_id.to_owned(),
        ops: Vec::new(),
        more: false,
    };
    let mut used = room_id.len() + 16;
    while let Some(r) = rows.next()? {
        let op: Vec<u8> = r.get(0)?;
        let len = 1 + prost::encoding::encoded_len_varint(op.len() as u64) + op.len();
        // At least one op always goes out, so a client can always make progress.
        if !log.ops.is_empty() && used + len > max_bytes {
            log.more = true;
            break;
        }
        used += len;
        log.ops.push(op);
    }
    Ok(Some(log))
}

fn op_room_send(
    conn: &Connection,
    item: &RoomItem,
    head_seq: u64,
    now: u64,
) -> Result<RoomSendOutcome, RelayError> {
    let earlier = conn
        .prepare_cached(
            "SELECT server_ts_ms FROM sends WHERE sender_device = ?1 AND message_id = ?2",
        )?
        .query_row(params![&item.sender_device[..], item.message_id], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?;
    if let Some(ts) = earlier {
        return Ok(RoomSendOutcome::Duplicate {
            server_ts_ms: from_sql_int(ts),
        });
    }
    let room = conn
        .prepare_cached("SELECT head_seq, deleted FROM rooms WHERE room_id = ?1")?
        .query_row([&item.room_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?))
        })
        .optional()?;
    let head = match room {
        Some((head, false)) if is_member(conn, &item.room_id, &item.sender_user)? => head,
        _ => return Err(rooms::unknown_room()),
    };
    if from_sql_int(head) != head_seq {
        return Err(RelayError::refused(
            ErrorCode::RoomChanged,
            "the room changed; sync its membership and send again",
        ));
    }
    let devices: Vec<DeviceId> = {
        let mut stmt = conn.prepare_cached(
            "SELECT d.device_id FROM room_members rm
             JOIN devices d ON d.username = rm.username AND d.revoked_at IS NULL
             WHERE rm.room_id = ?1 AND d.device_id != ?2",
        )?;
        let rows = stmt.query_map(params![item.room_id, &item.sender_device[..]], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(id) = device_id(&row?) {
                out.push(id);
            }
        }
        out
    };
    let seqs = fan_out(conn, item, &devices, now)?;
    conn.prepare_cached(
        "INSERT INTO sends (sender_device, message_id, server_ts_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        &item.sender_device[..],
        item.message_id,
        sql_int(now)
    ])?;
    Ok(RoomSendOutcome::Stored(Fanout {
        server_ts_ms: now,
        seqs,
    }))
}

fn op_policy(conn: &Connection) -> Result<StoredPolicy, RelayError> {
    Ok(conn
        .prepare_cached(
            "SELECT read_receipts, max_expire_secs, max_burn_secs FROM policy WHERE id = 1",
        )?
        .query_row([], |r| {
            Ok(StoredPolicy {
                read_receipts: r.get(0)?,
                max_expire_secs: from_sql_int(r.get(1)?),
                max_burn_secs: from_sql_int(r.get(2)?),
            })
        })?)
}

fn op_set_policy(
    conn: &Connection,
    admin: Option<&str>,
    change: PolicyChange,
) -> Result<StoredPolicy, RelayError> {
    if let Some(admin) = admin {
        let is_admin = conn
            .prepare_cached("SELECT is_admin FROM users WHERE username = ?1")?
            .query_row([admin], |r| r.get::<_, bool>(0))
            .optional()?
            .unwrap_or(false);
        if !is_admin {
            return Err(RelayError::refused(
                ErrorCode::PermissionDenied,
                "only network admins can change the policy",
            ));
        }
    }
    let mut policy = op_policy(conn)?;
    if let Some(v) = change.read_receipts {
        policy.read_receipts = v;
    }
    if let Some(v) = change.max_expire_secs {
        policy.max_expire_secs = v;
    }
    if let Some(v) = change.max_burn_secs {
        policy.max_burn_secs = v;
    }
    conn.prepare_cached(
        "UPDATE policy SET read_receipts = ?1, max_expire_secs = ?2, max_burn_secs = ?3
         WHERE id = 1",
    )?
    .execute(params![
        policy.read_receipts,
        sql_int(policy.max_expire_secs),
        sql_int(policy.max_burn_secs)
    ])?;
    Ok(policy)
}

impl RelayStore for SqliteStore {
    fn load_network(&self) -> StoreFuture<'_, Option<NetworkRecord>> {
        self.call(|c, _| op_load_network(c))
    }

    fn create_network(
        &self,
        network: NetworkRecord,
        admin_invite: NewInvite,
    ) -> StoreFuture<'_, ()> {
        self.call(move |c, now| op_create_network(c, &network, &admin_invite, now))
    }

    fn rename_network(&self, name: String) -> StoreFuture<'_, ()> {
        self.call(move |c, _| {
            c.execute("UPDATE network SET network_name = ?1 WHERE id = 1", [name])?;
            Ok(())
        })
    }

    fn register(&self, account: NewAccount) -> StoreFuture<'_, AccountStatus> {
        self.call(move |c, now| op_register(c, &account, now))
    }

    fn login(&self, username: String, device: DeviceId) -> StoreFuture<'_, Option<LoginRecord>> {
        self.call(move |c, now| op_login(c, &username, &device, now))
    }

    fn upload_prekeys(&self, device: DeviceId, upload: PrekeyUpload) -> StoreFuture<'_, ()> {
        self.call(move |c, _| store_prekeys(c, &device, &upload))
    }

    fn get_user(&self, username: String) -> StoreFuture<'_, Option<UserInfo>> {
        self.call(move |c, _| op_get_user(c, &username))
    }

    fn fetch_keys(&self, username: String) -> StoreFuture<'_, Option<KeyBundle>> {
        self.call(move |c, _| op_fetch_keys(c, &username))
    }

    fn send(&self, message: Arc<OutgoingMessage>) -> StoreFuture<'_, SendOutcome> {
        self.call(move |c, now| op_send(c, &message, now))
    }

    fn fetch(&self, device: DeviceId, limit: u32, max_bytes: usize) -> StoreFuture<'_, Deliveries> {
        self.call(move |c, now| op_fetch(c, &device, limit, max_bytes, now))
    }

    fn ack(
        &self,
        username: String,
        device: DeviceId,
        seqs: Vec<u64>,
    ) -> StoreFuture<'_, Vec<Notice>> {
        self.call(move |c, now| op_ack(c, &username, &device, &seqs, now))
    }

    fn create_invite(&self, admin: String, invite: NewInvite) -> StoreFuture<'_, ()> {
        self.call(move |c, now| op_create_invite(c, &admin, &invite, now))
    }

    fn sweep(&self) -> StoreFuture<'_, SweepReport> {
        Box::pin(async move {
            let report = self.call(op_sweep).await?;
            if report.items > 0 || report.bodies > 0 {
                self.checkpoint().await?;
            }
            Ok(report)
        })
    }

    fn submit_room_op(
        &self,
        item: Arc<RoomItem>,
        op: SignedOp,
        max_members: usize,
    ) -> StoreFuture<'_, RoomOpOutcome> {
        self.call(move |c, now| op_submit_room_op(c, &item, &op, max_members, now))
    }

    fn room_log(
        &self,
        username: String,
        room_id: String,
        from_seq: u64,
        max_bytes: usize,
    ) -> StoreFuture<'_, Option<RoomLog>> {
        self.call(move |c, _| op_room_log(c, &username, &room_id, from_seq, max_bytes))
    }

    fn room_send(&self, item: Arc<RoomItem>, head_seq: u64) -> StoreFuture<'_, RoomSendOutcome> {
        self.call(move |c, now| op_room_send(c, &item, head_seq, now))
    }

    fn policy(&self) -> StoreFuture<'_, StoredPolicy> {
        self.call(|c, _| op_policy(c))
    }

    fn set_policy(
        &self,
        admin: Option<String>,
        change: PolicyChange,
    ) -> StoreFuture<'_, StoredPolicy> {
        self.call(move |c, _| op_set_policy(c, admin.as_deref(), change))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("relay.db"), Clock::system()).unwrap();
        (dir, s)
    }

    fn account(name: &str, invite: [u8; 32], device: u8) -> NewAccount {
        NewAccount {
            username: name.into(),
            display_name: name.into(),
            root_key: [device; 32],
            invite_hash: invite,
            device: Some(super::super::store::VerifiedDevice {
                device_id: [device; 16],
                certificate: vec![device; 10],
                signing_key: [device; 32],
            }),
            prekeys: None,
        }
    }

    fn invite(hash: u8, admin: bool, expires_at: Option<u64>) -> NewInvite {
        NewInvite {
            code_hash: [hash; 32],
            email: String::new(),
            admin,
            expires_at,
        }
    }

    fn net() -> NetworkRecord {
        NetworkRecord {
            network_id: "00".into(),
            network_name: "Test".into(),
            relay_id: vec![1; 32],
            admin_key: [2; 32],
        }
    }

    #[tokio::test]
    async fn refusals_roll_back_only_their_own_request() {
        let (_dir, s) = store();
        s.create_network(net(), invite(1, true, None))
            .await
            .unwrap();
        // Two registrations with the same invite in one batch: exactly one wins.
        let (a, b) = tokio::join!(
            s.register(account("alice", [1; 32], 1)),
            s.register(account("bob", [1; 32], 2))
        );
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert!(matches!(
            loser,
            Err(RelayError::Refused {
                code: ErrorCode::InvalidInvite,
                ..
            })
        ));
        // Expired invites are refused.
        s.create_invite("alice".into(), invite(3, false, Some(1)))
            .await
            .or(s
                .create_invite("bob".into(), invite(3, false, Some(1)))
                .await)
            .unwrap();
        let r = s.register(account("carol", [3; 32], 3)).await;
        assert!(matches!(
            r,
            Err(RelayError::Refused {
                code: ErrorCode::InvalidInvite,
                ..
            })
        ));
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; {SCHEMA} PRAGMA user_version = 1;
                 INSERT INTO bodies (data) VALUES (x'0102');"
            ))
            .unwrap();
        }
        let s = SqliteStore::open(&path, Clock::system()).unwrap();
        let policy = s.policy().await.unwrap();
        assert_eq!(
            policy,
            StoredPolicy {
                read_receipts: true,
                max_expire_secs: DEFAULT_MAX_TIMER_SECS,
                max_burn_secs: DEFAULT_MAX_TIMER_SECS,
            }
        );
        s.close().await.unwrap();
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        for table in ["rooms", "room_members", "room_ops", "policy"] {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{table}");
        }
        // Old rows survive; the new columns read as NULL.
        let (data, key): (Vec<u8>, Option<Vec<u8>>) = c
            .query_row("SELECT data, key_data FROM bodies", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((data, key), (vec![1, 2], None));
        // And a second open neither migrates again nor fails.
        drop(c);
        let s = SqliteStore::open(&path, Clock::system()).unwrap();
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn ack_deletes_bodies_when_the_last_copy_goes() {
        let (dir, s) = store();
        s.create_network(net(), invite(1, true, None))
            .await
            .unwrap();
        s.register(account("alice", [1; 32], 1)).await.unwrap();
        s.create_invite("alice".into(), invite(2, false, None))
            .await
            .unwrap();
        s.register(account("bob", [2; 32], 2)).await.unwrap();
        let msg = Arc::new(OutgoingMessage {
            sender_user: "alice".into(),
            sender_device: [1; 16],
            message_id: vec![9; 16],
            body: vec![7; 100],
            entries: vec![super::super::store::OutgoingEntry {
                user: "bob".into(),
                device: [2; 16],
                payload: vec![5; 10],
            }],
            recipients: vec!["bob".into()],
            delete_by_ms: 0,
        });
        let SendOutcome::Stored { seqs, .. } = s.send(msg).await.unwrap() else {
            panic!("not stored");
        };
        let notices = s.ack("bob".into(), [2; 16], seqs).await.unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].device, [1; 16]);
        s.close().await.unwrap();
        let c = Connection::open(dir.path().join("relay.db")).unwrap();
        let bodies: i64 = c
            .query_row("SELECT COUNT(*) FROM bodies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bodies, 0);
    }
}
