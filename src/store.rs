//! The local encrypted cache of one profile: account keys, pinned root keys, ratchet sessions,
//! the durable outbox, message history and relay bookkeeping (`docs/crypto.md` section 12).
//!
//! A profile directory holds `cache.header` (Argon2id parameters, salt and the wrapped DEK, see
//! [`CacheHeader`]), `cache.db` (a SQLCipher database under a raw key derived from the DEK), an
//! empty-for-now `attachments/` directory and a `lock` file. Everything here is synchronous
//! because SQLCipher is; the async session engine calls it on `spawn_blocking`. One [`Store`]
//! owns the only connection to a profile and holds an exclusive advisory lock on `lock` for its
//! whole life, so a second cinder process gets [`StoreError::Locked`] instead of a second writer.
//!
//! Nothing readable ever reaches the disk: every page, including those in the `-wal` file, is
//! encrypted by SQLCipher, and temporary tables and sorts are kept in memory. Data access goes
//! through [`Db`], which is handed out either in autocommit mode ([`Store::db`]) or inside one
//! `BEGIN IMMEDIATE` transaction ([`Store::transaction`]).
//!
//! # Ephemeral messages and crypto-shredding
//! A message with a timer (expiry or burn-on-read, [`MessageTimers`]) is stored *sealed*: its
//! text is AES-256-GCM ciphertext under a fresh random 32-byte key of its own (key and nonce
//! derived with HKDF, label `cinder/v1/cache/msg`, the message id as associated data), the key
//! sits in the `message_keys` table, and reads decrypt transparently. When its deadline passes,
//! [`Store::shred_due`] deletes, in one transaction, the message's key, its row (so history and
//! the conversation's counts forget it) and any outbox item still waiting to send it, then
//! checkpoints and truncates the WAL. `PRAGMA secure_delete` zeroes the freed space; and should
//! a copy of the ciphertext survive anyway (a stale WAL frame, a copy of the file), it is
//! unreadable because its key is gone (`docs/crypto.md` section 0, promise 5).
//!
//! Timed messages are deliberately not searchable: the FTS5 index keeps its own copy of every
//! word, which no per-message key covers, so indexing them would leave their words readable
//! after the message was shredded. Untimed messages are indexed, and removed from the index
//! with FTS5's `secure-delete` when deleted; a message that gets a timer after it arrived
//! ([`Db::set_expire_at`], [`Db::set_burn_at`]) is sealed then and leaves the index at once.

mod db;
mod files;
mod schema;

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use zeroize::Zeroizing;

use crate::crypto::CryptoError;
use crate::crypto::passphrase::{CacheHeader, KdfParams};
use crate::crypto::primitives::{Secret32, hkdf_sha256};

pub use db::{
    AccountRecord, ConversationSummary, Db, DeviceSession, KeyHolder, MessageKind, MessageRecord,
    MessageState, MessageTimers, OutboxItem, OutboxKind, ReceivedSenderKeyRecord,
};

/// File name of the header that wraps the DEK.
pub const HEADER_FILE: &str = "cache.header";
/// File name of the SQLCipher database.
pub const DB_FILE: &str = "cache.db";
/// Directory for encrypted attachment files.
pub const ATTACHMENTS_DIR: &str = "attachments";
/// File that carries the advisory lock of the open profile.
pub const LOCK_FILE: &str = "lock";

/// HKDF label of the SQLCipher raw key; the DEK itself never reaches SQLite, so other subkeys
/// can be derived from it later without relating them to the database key.
const SQLCIPHER_INFO: &[u8] = b"cinder/v1/cache/sqlcipher";

/// Everything that can go wrong with the local cache.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase does not unwrap the DEK (or the wrapped DEK was tampered with).
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The directory holds no `cache.header`.
    #[error("no profile at {0}")]
    NotFound(PathBuf),
    /// `create` was asked to overwrite an existing profile.
    #[error("a profile already exists at {0}")]
    AlreadyExists(PathBuf),
    /// Another [`Store`] (in this or another process) holds the profile's lock.
    #[error("profile is locked by another cinder process")]
    Locked,
    /// The header or the database is unreadable; the string says which and why.
    #[error("cache is corrupt: {0}")]
    Corrupt(String),
    /// SQLite reported an error.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The crypto core reported an error other than a wrong passphrase.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// A file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A message id the caller gave (e.g. a paging anchor) is not in the cache.
    #[error("no such message in the cache")]
    UnknownMessage,
    /// An operation needs the user's root key, which only a device holding the account's root
    /// role keeps.
    #[error("this device does not hold your account's root key")]
    NoRootKey,
}

/// Result alias for the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// An open, unlocked profile cache.
pub struct Store {
    // Declared first so the connection (and its WAL) is closed before the lock is released.
    conn: Connection,
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Whether `dir` holds a profile (its header exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join(HEADER_FILE).is_file()
    }

    /// Creates a new profile in `dir` (made 0700 if absent) under `passphrase`.
    ///
    /// The header is written last, atomically, so a profile "exists" only once it is complete;
    /// database files left behind by an interrupted `create` are unreadable without that header
    /// and are removed.
    ///
    /// # Security
    /// `params` is only checked for sanity, not against the 64 MiB floor: choosing
    /// [`KdfParams::DEFAULT`] is the caller's job, so tests can use cheap parameters.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if a header is present, [`StoreError::Locked`] if another
    /// store holds the directory, [`StoreError::Crypto`] for rejected parameters, I/O and SQL
    /// errors otherwise.
    pub fn create(dir: &Path, passphrase: &[u8], params: KdfParams) -> Result<Store> {
        Self::create_at(dir, passphrase, params, schema::VERSION)
    }

    /// [`Self::create`] with the schema at `version` (tests build old caches with it).
    fn create_at(dir: &Path, passphrase: &[u8], params: KdfParams, version: i64) -> Result<Store> {
        params.validate(true)?;
        files::create_private_dir(dir)?;
        let lock = files::lock(dir)?;
        if Self::exists(dir) {
            return Err(StoreError::AlreadyExists(dir.to_path_buf()));
        }
        files::remove_orphan_db(dir)?;

        let (header, dek) = CacheHeader::create(passphrase, params)?;
        let db_path = dir.join(DB_FILE);
        // SQLite would create the file with 0644 & umask; it gives the -wal and -shm files the
        // mode of the database file, so creating it 0600 first covers all three.
        files::create_private_file(&db_path)?;
        let mut conn = open_connection(&db_path, &dek)?;
        schema::migrate_to(&mut conn, version)?;
        files::create_private_dir(&dir.join(ATTACHMENTS_DIR))?;
        files::write_atomic(dir, HEADER_FILE, &header.encode())?;

        Ok(Store {
            conn,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Opens and unlocks the profile in `dir`.
    ///
    /// Nothing in the directory is written before the passphrase has been checked, so a wrong
    /// passphrase leaves every file byte-identical.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] without a header, [`StoreError::Locked`] if another store holds
    /// the directory, [`StoreError::WrongPassphrase`], [`StoreError::Corrupt`] for an
    /// undecodable header, a missing database or one the key does not open.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Store> {
        if !Self::exists(dir) {
            return Err(StoreError::NotFound(dir.to_path_buf()));
        }
        // Locking before the (deliberately slow) Argon2id run reports a busy profile at once.
        let lock = files::lock(dir)?;
        let dek = read_header(dir)?
            .unwrap(passphrase)
            .map_err(wrong_passphrase)?;

        let db_path = dir.join(DB_FILE);
        if !db_path.is_file() {
            return Err(StoreError::Corrupt(format!(
                "{} is missing",
                db_path.display()
            )));
        }
        let mut conn = open_connection(&db_path, &dek)?;
        schema::migrate(&mut conn)?;
        files::create_private_dir(&dir.join(ATTACHMENTS_DIR))?;

        Ok(Store {
            conn,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Re-wraps the DEK of the profile in `dir` under a new passphrase (and parameters).
    ///
    /// The database is not touched. The new header goes to a temporary file in `dir`, is synced,
    /// renamed over the old one and the directory is synced, so a crash leaves either the old or
    /// the new header. This does not take the profile lock: the DEK does not change, so a
    /// running store is unaffected, and `rename` keeps concurrent readers consistent.
    ///
    /// # Security
    /// The old header's bytes may survive on the disk's free blocks; someone holding both an old
    /// disk image and the old passphrase can still recover the DEK.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::WrongPassphrase`] (nothing changed),
    /// [`StoreError::Corrupt`] for an undecodable header, I/O errors.
    pub fn change_passphrase(dir: &Path, old: &[u8], new: &[u8], params: KdfParams) -> Result<()> {
        params.validate(true)?;
        if !Self::exists(dir) {
            return Err(StoreError::NotFound(dir.to_path_buf()));
        }
        let dek = read_header(dir)?.unwrap(old).map_err(wrong_passphrase)?;
        let header = CacheHeader::wrap(new, params, &dek)?;
        files::write_atomic(dir, HEADER_FILE, &header.encode())?;
        Ok(())
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction: committed if `f` returns `Ok`, rolled
    /// back if it returns `Err` (or panics).
    ///
    /// The error type is the caller's (anything a [`StoreError`] converts into), so code that
    /// mixes store calls with its own failures can use `?` on both inside `f`.
    ///
    /// # Errors
    /// `f`'s error, or the SQL error of beginning or committing.
    pub fn transaction<T, E>(
        &mut self,
        f: impl FnOnce(&Db<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<StoreError>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(e.into()))?;
        match f(&Db::new(&tx)) {
            Ok(value) => {
                tx.commit().map_err(|e| E::from(e.into()))?;
                Ok(value)
            }
            Err(e) => {
                // The caller's error is the one worth reporting; if the rollback itself fails,
                // dropping the transaction tries again.
                let _ = tx.rollback();
                Err(e)
            }
        }
    }

    /// Data access in autocommit mode: each call is its own transaction.
    pub fn db(&self) -> Db<'_> {
        Db::new(&self.conn)
    }

    /// Sets the most memory the page cache of this connection may use (default 16 MiB).
    ///
    /// A bulk insert of many thousands of messages per transaction runs about a third faster
    /// when the pages it dirties fit (64 MiB for 50,000 messages into a million-message cache).
    ///
    /// # Errors
    /// SQL errors.
    pub fn set_cache_size(&self, kib: u32) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))?;
        Ok(())
    }

    /// Crypto-shreds every message whose deletion deadline is at or before `now_ms` (expired or
    /// burnt), in one transaction ([`Db::due_deletions`], [`Db::shred`]), then checkpoints and
    /// truncates the WAL if anything was deleted, so no old page version of the deleted rows or
    /// keys stays behind in it. Returns what was shredded, as (id, conversation), soonest
    /// deadline first.
    ///
    /// # Errors
    /// SQL errors; nothing is deleted then.
    pub fn shred_due(&mut self, now_ms: u64) -> Result<Vec<([u8; 16], String)>> {
        let due = self.transaction(|db| {
            let due = db.due_deletions(now_ms)?;
            let ids: Vec<[u8; 16]> = due.iter().map(|(id, _)| *id).collect();
            db.shred(&ids)?;
            Ok::<_, StoreError>(due)
        })?;
        if !due.is_empty() {
            self.checkpoint_truncate()?;
        }
        Ok(due)
    }

    /// Copies the WAL into the database and truncates it to zero bytes
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`), e.g. after deleting keys.
    ///
    /// # Errors
    /// SQL errors.
    pub fn checkpoint_truncate(&self) -> Result<()> {
        // The pragma reports (busy, wal pages, checkpointed pages); with the single connection
        // this store owns, nothing can hold the WAL busy.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Maps the AEAD failure of the DEK unwrap to the user-facing error.
fn wrong_passphrase(e: CryptoError) -> StoreError {
    match e {
        CryptoError::Integrity => StoreError::WrongPassphrase,
        other => StoreError::Crypto(other),
    }
}

fn read_header(dir: &Path) -> Result<CacheHeader> {
    let path = dir.join(HEADER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(dir.to_path_buf()));
        }
        Err(e) => return Err(e.into()),
    };
    CacheHeader::decode(&bytes).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))
}

/// The raw SQLCipher key for a DEK.
fn sqlcipher_key(dek: &Secret32) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf_sha256(None, dek.expose(), SQLCIPHER_INFO, key.as_mut_slice())?;
    Ok(key)
}

/// `PRAGMA key = "x'<hex>'";` in a buffer that is wiped on drop and never reallocated.
fn key_pragma(key: &[u8; 32]) -> Zeroizing<String> {
    const PREFIX: &str = "PRAGMA key = \"x'";
    const SUFFIX: &str = "'\";";
    let mut sql = Zeroizing::new(String::with_capacity(PREFIX.len() + 64 + SUFFIX.len()));
    sql.push_str(PREFIX);
    // Reserved above, so encoding the key never reallocates and leaves no unwiped copy.
    crate::crypto::hex::encode_into(&mut sql, key);
    sql.push_str(SUFFIX);
    sql
}

/// Finishes SQLCipher's process-wide set-up before the first keyed connection.
///
/// SQLite runs SQLCipher's one-time initialisation only after it has marked itself initialised,
/// so a second thread opening its first connection in that window finds SQLCipher "not
/// initialized" and cannot key the database (seen as a rare failure of parallel tests). One
/// throwaway connection, opened under a `Once` that the other threads wait for, closes the
/// window for every store.
fn init_sqlcipher() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Err(e) = Connection::open_in_memory() {
            tracing::warn!("sqlite initialisation: {e}");
        }
    });
}

/// Opens an existing database file, keys it and applies the connection settings.
fn open_connection(path: &Path, dek: &Secret32) -> Result<Connection> {
    init_sqlcipher();
    // No CREATE: `create` makes the file itself (with mode 0600), and a missing file on `open`
    // must be reported rather than silently replaced by an empty cache. No URI parsing, and no
    // following a symlink someone planted in the profile directory.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)?;
    {
        let key = sqlcipher_key(dek)?;
        // The key must be the first statement on the connection.
        conn.execute_batch(&key_pragma(&key))?;
    }
    // SQLCipher logs warnings and errors (e.g. "hmac check failed" for a damaged page) straight
    // to stderr, which would scribble over the terminal UI; the failures still come back as
    // errors. The setting is process-wide and harmless to repeat.
    conn.execute_batch("PRAGMA cipher_log = off; PRAGMA cipher_log_level = NONE;")?;
    // With a header that unwrapped, this can only fail if cache.db was damaged or replaced.
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        return Err(match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => StoreError::Corrupt(format!(
                "{} cannot be decrypted with this profile's key",
                path.display()
            )),
            _ => StoreError::Sql(e),
        });
    }
    // A 16 MiB page cache (SQLite's default is 2 MiB) holds the search index's hot pages and
    // the newest history of a large cache; it is filled only as pages are used. Bulk jobs
    // raise it with `Store::set_cache_size`.
    conn.execute_batch(
        "PRAGMA secure_delete = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;",
    )?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Still correct and encrypted, only slower and with a rollback journal instead.
        tracing::warn!(journal_mode = %mode, "cache could not switch to WAL mode");
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )?;
    Ok(conn)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const P: KdfParams = KdfParams::INSECURE_FOR_TESTS;

    #[test]
    fn the_store_can_move_to_a_blocking_thread() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Store>();
        assert_send::<StoreError>();
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::create(tmp.path(), b"pw", P).unwrap();
        let s = std::thread::spawn(move || {
            s.db().put_blob("t", b"from another thread").unwrap();
            s
        })
        .join()
        .unwrap();
        assert!(s.db().blob("t").unwrap().is_some());
    }

    #[test]
    fn key_pragma_is_hex_and_fits_its_buffer() {
        let mut key = [0u8; 32];
        key[0] = 0xab;
        key[31] = 0x0f;
        let sql = key_pragma(&key);
        assert_eq!(
            sql.as_str(),
            "PRAGMA key = \"x'ab0000000000000000000000000000000000000000000000000000000000000f'\";"
        );
        // No reallocation happened, so no unwiped copy of the key was left behind.
        assert_eq!(sql.len(), sql.capacity());
    }

    #[test]
    fn sqlcipher_key_is_a_labelled_subkey_of_the_dek() {
        let dek = Secret32::from_bytes([7u8; 32]);
        let k = sqlcipher_key(&dek).unwrap();
        assert_ne!(*k, [7u8; 32]);
        let mut expected = [0u8; 32];
        hkdf_sha256(
            None,
            &[7u8; 32],
            b"cinder/v1/cache/sqlcipher",
            &mut expected,
        )
        .unwrap();
        assert_eq!(*k, expected);
    }

    #[test]
    fn create_then_reopen_keeps_schema_and_data() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        assert!(!Store::exists(&dir));
        {
            let s = Store::create(&dir, b"pw", P).unwrap();
            assert_eq!(s.dir(), dir.as_path());
            s.db().put_blob("k", b"v").unwrap();
        }
        assert!(Store::exists(&dir));
        assert!(dir.join(ATTACHMENTS_DIR).is_dir());
        let s = Store::open(&dir, b"pw").unwrap();
        assert_eq!(
            s.db().blob("k").unwrap().as_deref().map(Vec::as_slice),
            Some(&b"v"[..])
        );
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::VERSION);
        let fk: i64 = s
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let sd: i64 = s
            .conn
            .pragma_query_value(None, "secure_delete", |r| r.get(0))
            .unwrap();
        assert_eq!(sd, 1);
        let jm: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(jm, "wal");
        let ts: i64 = s
            .conn
            .pragma_query_value(None, "temp_store", |r| r.get(0))
            .unwrap();
        assert_eq!(ts, 2, "temporary tables and sorts stay in memory");
        let log: String = s
            .conn
            .pragma_query_value(None, "cipher_log_level", |r| r.get(0))
            .unwrap();
        assert_eq!(log, "NONE", "SQLCipher must not write to stderr");
    }

    #[test]
    fn open_errors_are_specific() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        assert!(matches!(
            Store::open(&dir, b"pw"),
            Err(StoreError::NotFound(_))
        ));
        drop(Store::create(&dir, b"pw", P).unwrap());
        assert!(matches!(
            Store::create(&dir, b"pw", P),
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            Store::open(&dir, b"nope"),
            Err(StoreError::WrongPassphrase)
        ));
        std::fs::remove_file(dir.join(DB_FILE)).unwrap();
        let err = Store::open(&dir, b"pw").err().unwrap();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    }

    #[test]
    fn a_replaced_database_is_reported_as_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        drop(Store::create(&a, b"pw", P).unwrap());
        drop(Store::create(&b, b"pw", P).unwrap());
        // b's database under a's header: the passphrase is right, the key is not.
        std::fs::copy(b.join(DB_FILE), a.join(DB_FILE)).unwrap();
        let err = Store::open(&a, b"pw").err().unwrap();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    }

    #[test]
    fn an_interrupted_create_is_cleaned_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        drop(Store::create(&dir, b"pw", P).unwrap());
        // Simulate a crash before the header was written: the database is orphaned.
        std::fs::remove_file(dir.join(HEADER_FILE)).unwrap();
        assert!(!Store::exists(&dir));
        let s = Store::create(&dir, b"other", P).unwrap();
        assert!(s.db().account().unwrap().is_none());
    }

    #[test]
    fn absurd_parameters_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = KdfParams {
            m_kib: 64,
            t: 0,
            p: 1,
        };
        assert!(matches!(
            Store::create(tmp.path(), b"pw", bad),
            Err(StoreError::Crypto(CryptoError::Limit(_)))
        ));
        assert!(!Store::exists(tmp.path()));
    }

    #[test]
    fn checkpoint_truncate_empties_the_wal() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::create(tmp.path(), b"pw", P).unwrap();
        s.db().put_blob("x", &[1u8; 5000]).unwrap();
        let wal = tmp.path().join("cache.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        s.checkpoint_truncate().unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    }

    #[test]
    fn transaction_commits_on_ok_and_rolls_back_on_err() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::create(tmp.path(), b"pw", P).unwrap();
        let n = s
            .transaction(|db| {
                db.put_blob("a", b"1")?;
                Ok::<_, StoreError>(7)
            })
            .unwrap();
        assert_eq!(n, 7);
        let r: Result<()> = s.transaction(|db| {
            db.put_blob("b", b"2")?;
            db.put_blob("a", b"changed")?;
            Err(StoreError::Corrupt("test".into()))
        });
        assert!(matches!(r, Err(StoreError::Corrupt(_))));
        assert!(s.db().blob("b").unwrap().is_none());
        assert_eq!(s.db().blob("a").unwrap().unwrap().as_slice(), b"1");
    }

    #[test]
    fn a_panicking_transaction_rolls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::create(tmp.path(), b"pw", P).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.transaction(|db| -> Result<()> {
                db.put_blob("p", b"x")?;
                panic!("boom");
            });
        }));
        assert!(r.is_err());
        assert!(s.db().blob("p").unwrap().is_none());
        // The connection is usable again afterwards.
        s.transaction(|db| db.put_blob("q", b"y")).unwrap();
    }

    #[test]
    fn fts5_is_compiled_into_the_cipher_build() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::create(tmp.path(), b"pw", P).unwrap();
        let fts5: i64 = s
            .conn
            .query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fts5, 1);
        let cipher: String = s
            .conn
            .query_row("PRAGMA cipher_version", [], |r| r.get(0))
            .unwrap();
        assert!(
            !cipher.is_empty(),
            "the search index sits in the SQLCipher database"
        );
    }

    /// A message as version 1 stored it.
    fn insert_v1(c: &Connection, id: u8, conv: &str, outgoing: bool, sent: i64, text: &str) {
        c.execute(
            "INSERT INTO messages (message_id, conversation, outgoing, sender, sender_device,
                                   sent_at_ms, received_at_ms, text, state)
             VALUES (?1, ?2, ?3, 'bob', ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                [id; 16],
                conv,
                outgoing,
                [9u8; 16],
                sent,
                sent + 10,
                text,
                if outgoing { "sent" } else { "received" }
            ],
        )
        .unwrap();
    }

    #[test]
    fn an_encrypted_version_1_cache_is_upgraded_searchable_and_summarised() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        {
            let s = Store::create_at(&dir, b"pw", P, 1).unwrap();
            let v: i64 = s
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, 1);
            // Out of order, with a timestamp tie broken by arrival.
            insert_v1(&s.conn, 1, "dm:alice:bob", false, 300, "third hello");
            insert_v1(&s.conn, 2, "dm:alice:bob", true, 100, "first hello");
            insert_v1(&s.conn, 3, "dm:alice:bob", false, 200, "second tie");
            insert_v1(&s.conn, 4, "dm:alice:bob", false, 200, "second tie, later");
            insert_v1(&s.conn, 5, "room:x", false, 50, "héllo room");
        }
        let s = Store::open(&dir, b"pw").unwrap();
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::VERSION);
        let db = s.db();
        let texts = |v: Vec<MessageRecord>| v.into_iter().map(|m| m.text).collect::<Vec<_>>();
        assert_eq!(
            texts(db.history("dm:alice:bob", 10).unwrap()),
            [
                "first hello",
                "second tie",
                "second tie, later",
                "third hello"
            ]
        );
        assert_eq!(
            texts(db.search("hello", 10).unwrap()),
            ["third hello", "first hello", "héllo room"]
        );
        // Summarised; the history from before read marks existed counts as read.
        assert_eq!(
            db.conversations().unwrap(),
            vec![
                ConversationSummary {
                    conversation: "dm:alice:bob".into(),
                    last_activity_ms: 310,
                    messages: 4,
                    unread: 0,
                },
                ConversationSummary {
                    conversation: "room:x".into(),
                    last_activity_ms: 60,
                    messages: 1,
                    unread: 0,
                },
            ]
        );
        // New messages behave as in a fresh cache.
        let mut m = db.message(&[1; 16]).unwrap().unwrap();
        m.message_id = [6; 16];
        m.text = "fourth hello".into();
        m.sent_at_ms = 400;
        m.received_at_ms = 410;
        assert!(db.insert_message(&m).unwrap());
        assert_eq!(db.search("fourth", 10).unwrap().len(), 1);
        assert_eq!(db.conversations().unwrap()[0].unread, 1);
        s.conn
            .execute_batch("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            .unwrap();
    }

    /// Fills an unencrypted database with the cache schema, deletes the one message holding
    /// `marker`, checkpoints, and reports whether its bytes survive in the files.
    fn marker_survives_delete(dir: &Path, marker: &str, fts_secure_delete: bool) -> bool {
        let path = dir.join("plain.db");
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA secure_delete = ON; PRAGMA journal_mode = WAL;")
            .unwrap();
        schema::migrate(&mut c).unwrap();
        if !fts_secure_delete {
            c.execute_batch(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 0)",
            )
            .unwrap();
        }
        let msg = |i: u16, text: String| {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&i.to_be_bytes());
            MessageRecord {
                message_id: id,
                conversation: "c".into(),
                outgoing: false,
                sender: "bob".into(),
                sender_device: [1; 16],
                sent_at_ms: u64::from(i),
                received_at_ms: u64::from(i),
                text,
                state: MessageState::Received,
                kind: MessageKind::Text,
                timers: MessageTimers::default(),
            }
        };
        // No filler word starts with the marker's first letter, so the index stores the
        // marker term whole rather than as a suffix of a neighbour. Every filler has "apple".
        let words = [
            "apple", "banana", "cherry", "delta", "echo", "fig", "golf", "hotel",
        ];
        let filler = |i: u16| {
            (0..12)
                .map(|k| words[(usize::from(i) * 7 + k * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        {
            let db = Db::new(&c);
            let batch: Vec<_> = (0..300).map(|i| msg(i, filler(i))).collect();
            db.insert_messages(&batch).unwrap();
            db.insert_message(&msg(1000, format!("apple {marker} banana")))
                .unwrap();
            // Later single inserts make FTS5 merge the marker's segment with others.
            for i in 1001..1040 {
                db.insert_message(&msg(i, filler(i))).unwrap();
            }
        }
        let checkpoint = |c: &Connection| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        };
        let present = || {
            ["", "-wal"].iter().any(|s| {
                std::fs::read(format!("{}{s}", path.display()))
                    .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
            })
        };
        checkpoint(&c);
        assert!(present(), "before the delete the scan finds the marker");
        {
            let db = Db::new(&c);
            assert!(
                db.delete_message(&msg(1000, String::new()).message_id)
                    .unwrap()
            );
            assert!(db.search(marker, 10).unwrap().is_empty());
            assert_eq!(db.search("apple", 10_000).unwrap().len(), 300 + 39);
        }
        checkpoint(&c);
        present()
    }

    #[test]
    fn a_deleted_message_leaves_no_text_in_the_search_index() {
        // Without encryption, so the bytes can be inspected: the cache is encrypted anyway,
        // but a deleted message must also be gone for someone who later holds the key.
        let tmp = tempfile::tempdir().unwrap();
        assert!(!marker_survives_delete(tmp.path(), "zyzzyvamarker", true));
        // The control: FTS5's default delete leaves the term behind a delete marker, and the
        // scan above would have seen it.
        let lazy = tempfile::tempdir().unwrap();
        assert!(marker_survives_delete(lazy.path(), "zyzzyvamarker", false));
    }

    /// A message as version 2 stored it, indexed and counted as version 2 did.
    fn insert_v2(c: &Connection, id: u8, conv: &str, outgoing: bool, sent: u64, text: &str) {
        let seq = schema::next_seq(c, sent).unwrap();
        let received = i64::try_from(sent + 10).unwrap();
        c.execute(
            "INSERT INTO messages (seq, message_id, conversation, outgoing, sender,
                                   sender_device, sent_at_ms, received_at_ms, text, state)
             VALUES (?1, ?2, ?3, ?4, 'bob', ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                seq,
                [id; 16],
                conv,
                outgoing,
                [9u8; 16],
                i64::try_from(sent).unwrap(),
                received,
                text,
                if outgoing { "sent" } else { "received" }
            ],
        )
        .unwrap();
        c.execute(schema::INDEX_MESSAGE, rusqlite::params![seq, text])
            .unwrap();
        c.execute(
            schema::COUNT_MESSAGE,
            rusqlite::params![conv, received, !outgoing, received],
        )
        .unwrap();
    }

    fn user_version(c: &Connection) -> i64 {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    /// Rows of `table` whose `message_id` is `id`.
    fn rows_with_id(c: &Connection, table: &str, id: &[u8; 16]) -> i64 {
        c.query_row(
            &format!("SELECT count(*) FROM {table} WHERE message_id = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_version_2_cache_upgrades_to_version_3_without_losing_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let summaries_before: Vec<(String, i64, i64, i64)>;
        {
            let s = Store::create_at(&dir, b"pw", P, 2).unwrap();
            assert_eq!(user_version(&s.conn), 2);
            insert_v2(&s.conn, 1, "dm:alice:bob", false, 300, "third hello");
            insert_v2(&s.conn, 2, "dm:alice:bob", true, 100, "first hello");
            insert_v2(&s.conn, 3, "dm:alice:bob", false, 200, "second hello");
            insert_v2(&s.conn, 4, "room:x", false, 50, "room hello");
            s.conn
                .execute(
                    "INSERT INTO outbox (message_id, conversation, recipient, text, created_at_ms)
                     VALUES (?1, 'dm:alice:bob', 'bob', 'queued', 7)",
                    [[5u8; 16]],
                )
                .unwrap();
            s.conn
                .execute_batch(
                    "UPDATE conversations SET last_read_ms = 215, unread = 1
                     WHERE conversation = 'dm:alice:bob'",
                )
                .unwrap();
            summaries_before = s
                .conn
                .prepare("SELECT conversation, last_activity_ms, messages, unread FROM conversations ORDER BY conversation")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(summaries_before.len(), 2);
        }
        let s = Store::open(&dir, b"pw").unwrap();
        assert_eq!(user_version(&s.conn), schema::VERSION);
        let db = s.db();
        let history = db.history("dm:alice:bob", 10).unwrap();
        assert_eq!(
            history.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["first hello", "second hello", "third hello"]
        );
        assert!(
            history
                .iter()
                .all(|m| m.kind == MessageKind::Text && m.timers == MessageTimers::default())
        );
        assert_eq!(db.search("hello", 10).unwrap().len(), 4);
        let mut summaries_after: Vec<_> = db
            .conversations()
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.conversation,
                    i64::try_from(c.last_activity_ms).unwrap(),
                    i64::try_from(c.messages).unwrap(),
                    i64::try_from(c.unread).unwrap(),
                )
            })
            .collect();
        summaries_after.sort();
        assert_eq!(summaries_after, summaries_before);
        let outbox = db.outbox_pending().unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            (outbox[0].kind, outbox[0].timers, outbox[0].extra.as_slice()),
            (OutboxKind::Text, MessageTimers::default(), &[][..])
        );
        assert!(db.undisplayed_receipts("dm:alice:bob").unwrap().is_empty());
        assert_eq!(db.next_deletion().unwrap(), None);

        // The upgraded cache takes timed messages like a fresh one.
        let mut m = db.message(&[1; 16]).unwrap().unwrap();
        m.message_id = [6; 16];
        m.text = "timed hello".into();
        m.timers.expire_after_s = Some(60);
        m.timers.expire_at_ms = Some(1_000);
        assert!(db.insert_message(&m).unwrap());
        assert_eq!(db.message(&[6; 16]).unwrap().unwrap(), m);
        assert_eq!(db.search("hello", 10).unwrap().len(), 4);
        assert_eq!(rows_with_id(&s.conn, "message_keys", &[6; 16]), 1);
        db.set_conversation_timers("room:x", Some(5), None).unwrap();
        assert_eq!(db.conversation_timers("room:x").unwrap(), (Some(5), None));
        assert!(db.set_expire_at(&[4; 16], 10).unwrap());
        assert!(db.search("room", 10).unwrap().is_empty());
        let mut s = s;
        assert_eq!(s.shred_due(1_000).unwrap().len(), 2);
        assert_eq!(db_history_len(&s, "dm:alice:bob"), 3);
        s.conn
            .execute_batch("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            .unwrap();
    }

    fn db_history_len(s: &Store, conversation: &str) -> usize {
        s.db().history(conversation, usize::MAX).unwrap().len()
    }

    #[test]
    fn shred_due_deletes_the_key_and_every_trace_of_the_message() {
        const MARKER: &str = "SHRED-MARKER-4c1e";
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let mut s = Store::create(&dir, b"pw", P).unwrap();
        let msg = |id: u8, conv: &str, text: String, expire_at: Option<u64>| MessageRecord {
            message_id: [id; 16],
            conversation: conv.into(),
            outgoing: false,
            sender: "bob".into(),
            sender_device: [1; 16],
            sent_at_ms: u64::from(id) * 100,
            received_at_ms: u64::from(id) * 100 + 1,
            text,
            state: MessageState::Received,
            kind: MessageKind::Text,
            timers: MessageTimers {
                expire_after_s: expire_at.map(|_| 60),
                expire_at_ms: expire_at,
                ..MessageTimers::default()
            },
        };
        let doomed = [1u8; 16];
        {
            let db = s.db();
            db.insert_message(&msg(1, "a", format!("the {MARKER} text"), Some(5_000)))
                .unwrap();
            db.insert_message(&msg(2, "a", "kept words".into(), None))
                .unwrap();
            db.insert_message(&msg(3, "b", "later".into(), Some(9_000)))
                .unwrap();
            db.outbox_push(&OutboxItem {
                id: 0,
                message_id: doomed,
                conversation: "a".into(),
                recipient: "bob".into(),
                text: "queued".into(),
                created_at_ms: 1,
                request: None,
                key_package: None,
                attempts: 0,
                last_error: None,
                kind: OutboxKind::Text,
                timers: MessageTimers::default(),
                extra: Vec::new(),
            })
            .unwrap();
            assert_eq!(
                db.message(&doomed).unwrap().unwrap().text,
                format!("the {MARKER} text")
            );
        }
        // Before: the text is only ciphertext, and the message's own key exists.
        let (text, sealed): (String, Option<Vec<u8>>) = s
            .conn
            .query_row(
                "SELECT text, sealed FROM messages WHERE message_id = ?1",
                [doomed],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(text, "");
        assert!(
            !sealed
                .unwrap()
                .windows(MARKER.len())
                .any(|w| w == MARKER.as_bytes())
        );
        let key_len: i64 = s
            .conn
            .query_row(
                "SELECT length(key) FROM message_keys WHERE message_id = ?1",
                [doomed],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key_len, 32);
        assert_eq!(rows_with_id(&s.conn, "outbox", &doomed), 1);

        assert!(s.shred_due(4_999).unwrap().is_empty());
        assert_eq!(s.shred_due(5_000).unwrap(), vec![(doomed, "a".to_string())]);
        assert!(s.shred_due(5_000).unwrap().is_empty());

        // After: no key, and nothing refers to the message any more.
        for table in ["messages", "message_keys", "outbox"] {
            assert_eq!(rows_with_id(&s.conn, table, &doomed), 0, "{table}");
        }
        assert_eq!(rows_with_id(&s.conn, "message_keys", &[3; 16]), 1);
        assert_eq!(
            std::fs::metadata(dir.join("cache.db-wal")).unwrap().len(),
            0,
            "the WAL was checkpointed and truncated"
        );
        {
            let db = s.db();
            assert!(db.message(&doomed).unwrap().is_none());
            let h = db.history("a", 10).unwrap();
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].text, "kept words");
            assert!(db.search("text", 10).unwrap().is_empty());
            assert_eq!(db.search("kept", 10).unwrap().len(), 1);
            let summary: Vec<_> = db
                .conversations()
                .unwrap()
                .into_iter()
                .map(|c| (c.conversation, c.messages, c.unread, c.last_activity_ms))
                .collect();
            assert_eq!(summary, [("b".into(), 1, 1, 301), ("a".into(), 1, 1, 201)]);
            assert_eq!(db.next_deletion().unwrap(), Some(9_000));
        }
        drop(s);
        for name in [DB_FILE, "cache.db-wal", "cache.db-shm"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                assert!(
                    !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                    "{name}"
                );
            }
        }
        let s = Store::open(&dir, b"pw").unwrap();
        assert_eq!(db_history_len(&s, "a"), 1);
        assert_eq!(s.db().history("b", 10).unwrap()[0].text, "later");
    }

    /// Without encryption, so the bytes can be inspected: a timed message's text never
    /// reaches the file, and once it is shredded neither its key nor its ciphertext is left.
    #[test]
    fn a_shredded_message_leaves_neither_text_nor_key_in_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plain.db");
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA secure_delete = ON; PRAGMA journal_mode = WAL;")
            .unwrap();
        schema::migrate(&mut c).unwrap();
        let msg = |id: u8, text: &str, timers: MessageTimers| MessageRecord {
            message_id: [id; 16],
            conversation: "c".into(),
            outgoing: false,
            sender: "bob".into(),
            sender_device: [1; 16],
            sent_at_ms: u64::from(id),
            received_at_ms: u64::from(id),
            text: text.into(),
            state: MessageState::Received,
            kind: MessageKind::Text,
            timers,
        };
        let burn = MessageTimers {
            burn_after_s: Some(1),
            ..MessageTimers::default()
        };
        let db = Db::new(&c);
        db.insert_message(&msg(1, "apple zyzzyvatimed banana", burn))
            .unwrap();
        db.insert_message(&msg(
            2,
            "apple zyzzyvaclear banana",
            MessageTimers::default(),
        ))
        .unwrap();
        for i in 3..60 {
            db.insert_message(&msg(i, "filler words", burn)).unwrap();
        }
        let (key, sealed): (Vec<u8>, Vec<u8>) = c
            .query_row(
                "SELECT k.key, m.sealed FROM messages m JOIN message_keys k USING (message_id)
                 WHERE message_id = ?1",
                [[1u8; 16]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let checkpoint = |c: &Connection| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        };
        let in_files = |needle: &[u8]| {
            ["", "-wal"].iter().any(|s| {
                std::fs::read(format!("{}{s}", path.display()))
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            })
        };
        checkpoint(&c);
        assert!(in_files(b"zyzzyvaclear"), "the scan finds clear text");
        assert!(
            !in_files(b"zyzzyvatimed"),
            "a timed text is sealed from the start"
        );
        assert!(
            in_files(&key) && in_files(&sealed),
            "the scan finds the key"
        );
        db.mark_displayed(&[1; 16], 10).unwrap();
        assert_eq!(db.due_deletions(1_010).unwrap().len(), 1);
        assert_eq!(db.shred(&[[1; 16]]).unwrap(), 1);
        checkpoint(&c);
        assert!(!in_files(&key), "the key is gone from the file");
        assert!(!in_files(&sealed), "the ciphertext is gone from the file");
        assert_eq!(db.history("c", 100).unwrap().len(), 58);
    }

    /// The key `rooms/op/<room>/<seq>` as version 4 wrote it.
    fn v4_op_key(room: &str, seq: u64) -> String {
        format!("rooms/op/{room}/{seq:020}")
    }

    #[test]
    fn a_version_4_cache_moves_rooms_ops_sender_keys_and_previous_sessions_into_tables() {
        use crate::crypto::hex;
        use crate::crypto::wire::Writer;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let room = format!("room:{}", "ab".repeat(16));
        let group = format!("group:{}", "cd".repeat(16));
        let (alice_dev, bob_dev, carol_dev) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        let (dist1, dist2) = ([0x11u8; 16], [0x22u8; 16]);
        let received = |user: &str, secret: &[u8]| {
            let mut w = Writer::with_capacity(64);
            w.bytes(user.as_bytes()).bytes(secret);
            w.finish().unwrap()
        };
        {
            let s = Store::create_at(&dir, b"pw", P, 4).unwrap();
            assert_eq!(user_version(&s.conn), 4);
            let db = s.db();
            // History of both rooms and a DM, which the migration must not touch.
            db.insert_message(&MessageRecord {
                message_id: [9; 16],
                conversation: room.clone(),
                outgoing: false,
                sender: "bob".into(),
                sender_device: bob_dev,
                sent_at_ms: 1_000,
                received_at_ms: 1_010,
                text: "hello room".into(),
                state: MessageState::Received,
                kind: MessageKind::Text,
                timers: MessageTimers::default(),
            })
            .unwrap();
            // Written exactly as the version 4 session code wrote them.
            for (r, state) in [(&room, b"room state".as_slice()), (&group, b"group state")] {
                db.put_blob(&format!("rooms/state/{r}"), state).unwrap();
            }
            for seq in 1..=3u64 {
                db.put_blob(&v4_op_key(&room, seq), &[u8::try_from(seq).unwrap(); 32])
                    .unwrap();
            }
            db.put_blob(&v4_op_key(&group, 1), &[0xee; 32]).unwrap();
            db.put_blob(&format!("rooms/behind/{room}"), &7u64.to_be_bytes())
                .unwrap();
            db.put_blob(&format!("rooms/sk/{room}"), b"our chain")
                .unwrap();
            let mut w = Writer::with_capacity(64);
            w.u32(2)
                .bytes(b"bob")
                .fixed(&bob_dev)
                .bytes(b"carol")
                .fixed(&carol_dev);
            db.put_blob(&format!("rooms/skdist/{room}"), &w.finish().unwrap())
                .unwrap();
            for (dev, dist, user, secret) in [
                (&bob_dev, &dist1, "bob", b"bob chain".as_slice()),
                (&bob_dev, &dist2, "bob", b"bob chain 2"),
                (&carol_dev, &dist1, "carol", b"carol chain"),
            ] {
                db.put_blob(
                    &format!(
                        "rooms/rsk/{room}/{}/{}",
                        hex::encode(dev),
                        hex::encode(dist)
                    ),
                    &received(user, secret),
                )
                .unwrap();
            }
            db.put_blob(
                &format!("prevsession/bob/{}", hex::encode(&bob_dev)),
                b"old session",
            )
            .unwrap();
            db.put_blob(
                &format!("prevsession/alice/{}", hex::encode(&alice_dev)),
                b"older session",
            )
            .unwrap();
            // Not ours to move: other blobs, and a row no version 4 could have written.
            db.put_blob("prekeys", b"prekeys").unwrap();
            db.put_blob("rooms/op/x/notanumber", &[0; 32]).unwrap();
        }

        let s = Store::open(&dir, b"pw").unwrap();
        assert_eq!(user_version(&s.conn), schema::VERSION);
        let db = s.db();
        assert_eq!(db.room_state(&room).unwrap().unwrap(), b"room state");
        assert_eq!(
            db.room_states().unwrap(),
            [b"group state".to_vec(), b"room state".to_vec()]
        );
        assert_eq!(
            db.room_ops(&room).unwrap(),
            [(1, [1; 32]), (2, [2; 32]), (3, [3; 32])]
        );
        assert_eq!(db.room_op_hash(&group, 1).unwrap(), Some([0xee; 32]));
        assert_eq!(db.room_op_hash(&group, 2).unwrap(), None);
        assert_eq!(db.room_claimed_head(&room).unwrap(), Some(7));
        assert_eq!(db.room_claimed_head(&group).unwrap(), None);
        assert_eq!(
            db.own_sender_key(&room).unwrap().unwrap().as_slice(),
            b"our chain"
        );
        assert!(db.own_sender_key(&group).unwrap().is_none());
        assert_eq!(
            db.sender_key_holders(&room).unwrap(),
            [("bob".to_owned(), bob_dev), ("carol".to_owned(), carol_dev)]
        );
        for (dev, dist, user, secret) in [
            (&bob_dev, &dist1, "bob", b"bob chain".as_slice()),
            (&bob_dev, &dist2, "bob", b"bob chain 2"),
            (&carol_dev, &dist1, "carol", b"carol chain"),
        ] {
            let k = db.received_sender_key(&room, dev, dist).unwrap().unwrap();
            assert_eq!((k.sender.as_str(), k.state.as_slice()), (user, secret));
        }
        assert!(
            db.received_sender_key(&room, &carol_dev, &dist2)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            db.previous_session("bob", &bob_dev)
                .unwrap()
                .unwrap()
                .as_slice(),
            b"old session"
        );
        assert_eq!(
            db.previous_session("alice", &alice_dev)
                .unwrap()
                .unwrap()
                .as_slice(),
            b"older session"
        );
        // The moved rows left `blobs`; the others stayed.
        assert!(db.blobs_with_prefix("rooms/state/").unwrap().is_empty());
        assert!(db.blobs_with_prefix("rooms/rsk/").unwrap().is_empty());
        assert!(db.blobs_with_prefix("prevsession/").unwrap().is_empty());
        let left: Vec<String> = db
            .blobs_with_prefix("")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, ["prekeys", "rooms/op/x/notanumber"]);
        // History is intact.
        let history = db.history(&room, 10).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].text, "hello room");

        // And the typed methods keep working on the upgraded cache.
        db.delete_received_sender_keys_of(&room, "bob").unwrap();
        assert!(
            db.received_sender_key(&room, &bob_dev, &dist1)
                .unwrap()
                .is_none()
        );
        assert!(
            db.received_sender_key(&room, &carol_dev, &dist1)
                .unwrap()
                .is_some()
        );
        db.forget_room_keys(&room).unwrap();
        assert!(db.own_sender_key(&room).unwrap().is_none());
        assert!(db.sender_key_holders(&room).unwrap().is_empty());
        assert!(
            db.received_sender_key(&room, &carol_dev, &dist1)
                .unwrap()
                .is_none()
        );
        assert_eq!(db.room_ops(&room).unwrap().len(), 3, "the log is kept");
    }
}
