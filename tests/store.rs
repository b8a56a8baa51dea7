//! The local encrypted cache through its public API: round trips of every record type, the
//! passphrase lifecycle, transactions, the profile lock, corruption handling, and that nothing
//! written to the cache can be found in plain text anywhere in the profile directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cinder::crypto::passphrase::KdfParams;
use cinder::store::{
    AccountRecord, ConversationSummary, MessageKind, MessageRecord, MessageState, MessageTimers,
    OutboxItem, OutboxKind, Store, StoreError,
};
use zeroize::Zeroizing;

const P: KdfParams = KdfParams::INSECURE_FOR_TESTS;
const PW: &[u8] = b"correct horse battery staple";
const MARKER: &str = "PLAINTEXT-MARKER-7f3a";

fn account(tag: &str) -> AccountRecord {
    AccountRecord {
        server_url: format!("wss://relay.example/{tag}"),
        username: format!("alice-{tag}"),
        display_name: format!("Alice {tag}"),
        device_id: [0x11; 16],
        network_id: "net-1".into(),
        network_name: "Example".into(),
        relay_id: vec![1, 2, 3, 4],
        is_admin: true,
        root_public: [0xa0; 32],
        root_secret: Some(Zeroizing::new([0xa1; 32])),
        device_signing_secret: Zeroizing::new([0xa2; 32]),
        device_identity_secret: Zeroizing::new([0xa3; 32]),
        device_cert: vec![9; 100],
        created_at: 1_700_000_000,
        allow_insecure_ws: false,
    }
}

fn message(id: u8, conversation: &str, text: &str) -> MessageRecord {
    MessageRecord {
        message_id: [id; 16],
        conversation: conversation.into(),
        outgoing: id.is_multiple_of(2),
        sender: "bob".into(),
        sender_device: [0x22; 16],
        sent_at_ms: 1_000 * u64::from(id),
        received_at_ms: 1_000 * u64::from(id) + 5,
        text: text.into(),
        state: MessageState::Received,
        kind: MessageKind::Text,
        timers: MessageTimers::default(),
    }
}

fn outbox(text: &str) -> OutboxItem {
    OutboxItem {
        id: 0,
        message_id: [0x33; 16],
        conversation: "bob".into(),
        recipient: "bob".into(),
        text: text.into(),
        created_at_ms: 42,
        request: None,
        key_package: None,
        attempts: 0,
        last_error: None,
        kind: OutboxKind::Text,
        timers: MessageTimers::default(),
        extra: Vec::new(),
    }
}

/// Every regular file under `dir`, recursively, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter(|(_, bytes)| contains(bytes, needle))
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn every_record_type_survives_close_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profile");
    let outbox_id;
    {
        let s = Store::create(&dir, PW, P).unwrap();
        let db = s.db();
        assert!(db.account().unwrap().is_none());
        db.put_account(&account("old")).unwrap();
        db.put_account(&account("new")).unwrap();
        db.put_blob("prekeys", b"prekey state").unwrap();
        db.pin_root_key("bob", &[0x44; 32], 10).unwrap();
        db.pin_root_key("bob", &[0x45; 32], 11).unwrap();
        db.put_session("bob", &[1; 16], b"session one").unwrap();
        db.put_session("bob", &[2; 16], b"session two").unwrap();
        db.put_session("carol", &[1; 16], b"carol's").unwrap();
        db.set_devices("bob", &[[2; 16], [1; 16]]).unwrap();
        let mut item = outbox("hello bob");
        item.key_package = Some(Zeroizing::new(b"kp".to_vec()));
        outbox_id = db.outbox_push(&item).unwrap();
        db.outbox_set_request(outbox_id, b"request bytes", b"key package")
            .unwrap();
        db.outbox_set_attempts(outbox_id, 2, Some("relay unreachable"))
            .unwrap();
        assert!(db.insert_message(&message(1, "bob", "first")).unwrap());
        assert!(db.insert_message(&message(2, "bob", "second")).unwrap());
        assert!(db.insert_message(&message(3, "room", "third")).unwrap());
        assert!(
            db.set_message_state(&[2; 16], MessageState::Delivered)
                .unwrap()
        );
        db.mark_delivery_processed(77, 1_000).unwrap();
    }

    let s = Store::open(&dir, PW).unwrap();
    assert_eq!(s.dir(), dir.as_path());
    let db = s.db();

    let a = db.account().unwrap().unwrap();
    let want = account("new");
    assert_eq!(a.server_url, want.server_url);
    assert_eq!(a.username, want.username);
    assert_eq!(a.display_name, want.display_name);
    assert_eq!(a.device_id, want.device_id);
    assert_eq!(a.network_id, want.network_id);
    assert_eq!(a.network_name, want.network_name);
    assert_eq!(a.relay_id, want.relay_id);
    assert_eq!(a.is_admin, want.is_admin);
    assert_eq!(a.root_public, want.root_public);
    assert_eq!(
        a.root_secret.as_deref().copied(),
        want.root_secret.as_deref().copied()
    );
    assert_eq!(*a.device_signing_secret, *want.device_signing_secret);
    assert_eq!(*a.device_identity_secret, *want.device_identity_secret);
    assert_eq!(a.device_cert, want.device_cert);
    assert_eq!(a.created_at, want.created_at);
    assert_eq!(a.allow_insecure_ws, want.allow_insecure_ws);
    assert!(a.root_key().is_ok());

    // A device without the account's root role stores no root secret, and asking for the
    // root key there says so.
    let mut linked = account("linked");
    linked.root_secret = None;
    db.put_account(&linked).unwrap();
    let l = db.account().unwrap().unwrap();
    assert!(l.root_secret.is_none());
    assert_eq!(l.root_public, linked.root_public);
    let err = l.root_key().err().unwrap();
    assert!(matches!(err, StoreError::NoRootKey));
    assert_eq!(
        err.to_string(),
        "this device does not hold your account's root key"
    );
    db.put_account(&a).unwrap();

    assert_eq!(
        db.blob("prekeys").unwrap().unwrap().as_slice(),
        b"prekey state"
    );
    assert!(db.blob("other").unwrap().is_none());

    assert_eq!(db.root_key("bob").unwrap(), Some([0x45; 32]));
    assert_eq!(db.root_key("carol").unwrap(), None);

    assert_eq!(
        db.session("bob", &[1; 16]).unwrap().unwrap().as_slice(),
        b"session one"
    );
    assert!(db.session("bob", &[3; 16]).unwrap().is_none());
    let sessions = db.sessions_for("bob").unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].0, [1; 16]);
    assert_eq!(sessions[1].1.as_slice(), b"session two");
    db.delete_session("bob", &[1; 16]).unwrap();
    assert!(db.session("bob", &[1; 16]).unwrap().is_none());
    assert_eq!(db.sessions_for("bob").unwrap().len(), 1);
    assert_eq!(db.sessions_for("carol").unwrap().len(), 1);

    assert_eq!(db.devices("bob").unwrap(), vec![[2; 16], [1; 16]]);

    let pending = db.outbox_pending().unwrap();
    assert_eq!(pending.len(), 1);
    let o = &pending[0];
    assert_eq!(o.id, outbox_id);
    assert_eq!(o.message_id, [0x33; 16]);
    assert_eq!(
        (o.conversation.as_str(), o.recipient.as_str()),
        ("bob", "bob")
    );
    assert_eq!(o.text, "hello bob");
    assert_eq!(o.created_at_ms, 42);
    assert_eq!(o.request.as_deref(), Some(&b"request bytes"[..]));
    assert_eq!(o.key_package.as_ref().unwrap().as_slice(), b"key package");
    assert_eq!(o.attempts, 2);
    assert_eq!(o.last_error.as_deref(), Some("relay unreachable"));
    db.outbox_remove(outbox_id).unwrap();
    assert!(db.outbox_pending().unwrap().is_empty());

    let mut second = message(2, "bob", "second");
    second.state = MessageState::Delivered;
    assert_eq!(db.message(&[2; 16]).unwrap(), Some(second.clone()));
    assert_eq!(
        db.history("bob", 10).unwrap(),
        vec![message(1, "bob", "first"), second.clone()]
    );
    assert_eq!(db.history("bob", 1).unwrap(), vec![second]);
    assert_eq!(
        db.conversations().unwrap(),
        vec![
            ConversationSummary {
                conversation: "room".into(),
                last_activity_ms: 3_005,
                messages: 1,
                unread: 1,
            },
            ConversationSummary {
                conversation: "bob".into(),
                last_activity_ms: 2_005,
                messages: 2,
                unread: 1,
            },
        ]
    );

    assert!(db.delivery_processed(77).unwrap());
    assert!(!db.delivery_processed(78).unwrap());
    assert_eq!(db.prune_processed(1_001).unwrap(), 1);
    assert!(!db.delivery_processed(77).unwrap());
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let s = Store::create(dir, PW, P).unwrap();
        s.db().insert_message(&message(1, "bob", "hi")).unwrap();
    }
    let before = snapshot(dir);
    assert!(before.keys().any(|p| p.ends_with("cache.db")));
    assert!(matches!(
        Store::open(dir, b"not the passphrase"),
        Err(StoreError::WrongPassphrase)
    ));
    assert!(matches!(
        Store::open(dir, b""),
        Err(StoreError::WrongPassphrase)
    ));
    assert_eq!(
        snapshot(dir),
        before,
        "a failed open must not touch any file"
    );
    let e = Store::open(dir, b"nope").err().unwrap();
    assert_eq!(e.to_string(), "wrong passphrase");
    // And the right one still works.
    let s = Store::open(dir, PW).unwrap();
    assert!(s.db().message(&[1; 16]).unwrap().is_some());
}

#[test]
fn change_passphrase_rewraps_and_the_old_one_stops_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let s = Store::create(dir, PW, P).unwrap();
        s.db().put_blob("k", b"value").unwrap();
    }
    let db_before = fs::read(dir.join("cache.db")).unwrap();

    // A wrong old passphrase changes nothing.
    let before = snapshot(dir);
    assert!(matches!(
        Store::change_passphrase(dir, b"wrong", b"new", P),
        Err(StoreError::WrongPassphrase)
    ));
    assert_eq!(snapshot(dir), before);

    Store::change_passphrase(dir, PW, b"new passphrase", P).unwrap();
    assert!(matches!(
        Store::open(dir, PW),
        Err(StoreError::WrongPassphrase)
    ));
    // Only the header was rewritten, and no temporary file was left behind.
    assert_eq!(fs::read(dir.join("cache.db")).unwrap(), db_before);
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    let s = Store::open(dir, b"new passphrase").unwrap();
    assert_eq!(s.db().blob("k").unwrap().unwrap().as_slice(), b"value");
    // The store can be open while the passphrase changes: the DEK stays the same.
    Store::change_passphrase(dir, b"new passphrase", b"third", P).unwrap();
    s.db().put_blob("k2", b"v2").unwrap();
    drop(s);
    let s = Store::open(dir, b"third").unwrap();
    assert_eq!(s.db().blob("k2").unwrap().unwrap().as_slice(), b"v2");
}

#[test]
fn a_failed_transaction_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::create(tmp.path(), PW, P).unwrap();
    s.db().put_blob("kept", b"1").unwrap();
    let r: Result<(), StoreError> = s.transaction(|db| {
        assert!(db.insert_message(&message(1, "bob", "hi"))?);
        db.outbox_push(&outbox("hi"))?;
        db.put_session("bob", &[1; 16], b"s")?;
        db.set_devices("bob", &[[1; 16]])?;
        db.put_blob("kept", b"overwritten")?;
        db.mark_delivery_processed(5, 1)?;
        db.put_account(&account("tx"))?;
        Err(StoreError::Corrupt("abandon".into()))
    });
    assert!(matches!(r, Err(StoreError::Corrupt(_))));
    drop(s);

    let mut s = Store::open(tmp.path(), PW).unwrap();
    let db = s.db();
    assert!(db.message(&[1; 16]).unwrap().is_none());
    assert!(db.outbox_pending().unwrap().is_empty());
    assert!(db.session("bob", &[1; 16]).unwrap().is_none());
    assert!(db.devices("bob").unwrap().is_empty());
    assert_eq!(db.blob("kept").unwrap().unwrap().as_slice(), b"1");
    assert!(!db.delivery_processed(5).unwrap());
    assert!(db.account().unwrap().is_none());

    // The same work returning Ok is committed.
    let id = s
        .transaction(|db| {
            db.insert_message(&message(1, "bob", "hi"))?;
            db.outbox_push(&outbox("hi"))
        })
        .unwrap();
    assert_eq!(s.db().outbox_pending().unwrap()[0].id, id);
    assert!(s.db().message(&[1; 16]).unwrap().is_some());
}

#[test]
fn duplicate_message_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::create(tmp.path(), PW, P).unwrap();
    let db = s.db();
    assert!(db.insert_message(&message(1, "bob", "original")).unwrap());
    let mut dup = message(1, "mallory", "replacement");
    dup.state = MessageState::Failed;
    assert!(!db.insert_message(&dup).unwrap());
    assert_eq!(
        db.message(&[1; 16]).unwrap().unwrap(),
        message(1, "bob", "original")
    );
    assert!(db.history("mallory", 10).unwrap().is_empty());
}

#[test]
fn a_second_open_while_the_first_is_alive_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = Store::create(dir, PW, P).unwrap();
    let e = Store::open(dir, PW).err().unwrap();
    assert!(matches!(e, StoreError::Locked), "{e}");
    assert_eq!(e.to_string(), "profile is locked by another cinder process");
    // Even a wrong passphrase reports the lock first, without the slow key derivation.
    assert!(matches!(Store::open(dir, b"x"), Err(StoreError::Locked)));
    drop(first);
    let second = Store::open(dir, PW).unwrap();
    assert!(matches!(Store::open(dir, PW), Err(StoreError::Locked)));
    drop(second);
    Store::open(dir, PW).unwrap();
}

#[test]
fn no_plaintext_at_rest() {
    let marker = MARKER.as_bytes();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profile");

    // The scan can fail: an unkeyed SQLite file with the same content shows the marker.
    {
        let plain = tmp.path().join("control.db");
        let c = rusqlite::Connection::open(&plain).unwrap();
        c.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        c.execute("INSERT INTO t VALUES (?1)", [MARKER]).unwrap();
        drop(c);
        assert!(contains(&fs::read(&plain).unwrap(), marker));
    }

    let s = Store::create(&dir, PW, P).unwrap();
    let db = s.db();
    let mut acct = account(MARKER);
    acct.root_secret = Some(Zeroizing::new(*b"ROOT-SECRET-MARKER-7f3a-32bytes!"));
    db.put_account(&acct).unwrap();
    for i in 0..50u8 {
        db.insert_message(&message(i, MARKER, &format!("{MARKER} message {i}")))
            .unwrap();
    }
    let mut item = outbox(&format!("outbox {MARKER}"));
    item.key_package = Some(Zeroizing::new(format!("kp {MARKER}").into_bytes()));
    let id = db.outbox_push(&item).unwrap();
    db.outbox_set_request(id, format!("req {MARKER}").as_bytes(), b"kp2")
        .unwrap();
    db.put_session(MARKER, &[1; 16], format!("session {MARKER}").as_bytes())
        .unwrap();
    db.put_blob(MARKER, format!("blob {MARKER}").as_bytes())
        .unwrap();
    db.pin_root_key(MARKER, &[7; 32], 1).unwrap();
    db.set_devices(MARKER, &[[5; 16]]).unwrap();
    db.outbox_set_attempts(id, 1, Some(MARKER)).unwrap();
    // Deleted rows must not linger in plain text either.
    db.delete_session(MARKER, &[1; 16]).unwrap();

    // While the store is open the data sits in the WAL: that must be ciphertext too.
    let wal = dir.join("cache.db-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the WAL holds the writes"
    );
    assert!(files_containing(&dir, marker).is_empty());
    assert!(files_containing(&dir, b"ROOT-SECRET-MARKER").is_empty());

    s.checkpoint_truncate().unwrap();
    assert!(files_containing(&dir, marker).is_empty());
    drop(s);

    let files = snapshot(&dir);
    assert!(files.keys().any(|p| p.ends_with("cache.db")));
    assert!(files.keys().any(|p| p.ends_with("cache.header")));
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, marker),
            "{} holds plaintext",
            path.display()
        );
        assert!(
            !contains(bytes, b"ROOT-SECRET-MARKER"),
            "{}",
            path.display()
        );
        assert!(
            !contains(bytes, b"SQLite format 3"),
            "{} is unencrypted",
            path.display()
        );
    }
    // Nothing was written outside the profile directory.
    let outside: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside.len(), 2, "{outside:?}");

    // And it all reads back.
    let s = Store::open(&dir, PW).unwrap();
    assert_eq!(s.db().history(MARKER, 100).unwrap().len(), 50);
}

#[test]
fn a_corrupted_header_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(Store::create(dir, PW, P).unwrap());
    let header_path = dir.join("cache.header");
    let good = fs::read(&header_path).unwrap();

    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"garbage".to_vec(),
        good[..good.len() - 1].to_vec(),
        [good.as_slice(), b"x"].concat(),
    ];
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    cases.push(bad_magic);
    let mut bad_version = good.clone();
    bad_version[4] = 9;
    cases.push(bad_version);
    for bytes in cases {
        fs::write(&header_path, &bytes).unwrap();
        let e = Store::open(dir, PW).err().unwrap();
        assert!(matches!(e, StoreError::Corrupt(_)), "{bytes:?}: {e}");
        assert!(e.to_string().starts_with("cache is corrupt: "), "{e}");
        assert!(e.to_string().contains("cache.header"), "{e}");
        assert!(matches!(
            Store::change_passphrase(dir, PW, b"n", P),
            Err(StoreError::Corrupt(_))
        ));
    }

    // A flipped bit in the wrapped key cannot be told apart from a wrong passphrase (AEAD).
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    fs::write(&header_path, &tampered).unwrap();
    assert!(matches!(
        Store::open(dir, PW),
        Err(StoreError::WrongPassphrase)
    ));

    fs::write(&header_path, &good).unwrap();
    Store::open(dir, PW).unwrap();

    fs::remove_file(&header_path).unwrap();
    assert!(!Store::exists(dir));
    assert!(matches!(Store::open(dir, PW), Err(StoreError::NotFound(_))));
}

#[test]
fn a_second_create_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::create(tmp.path(), PW, P).unwrap());
    let e = Store::create(tmp.path(), b"other", P).err().unwrap();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e}");
    Store::open(tmp.path(), PW).unwrap();
}

#[cfg(unix)]
#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/profile");
    let s = Store::create(&dir, PW, P).unwrap();
    s.db().put_blob("x", b"y").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("attachments")), 0o700);
    for name in [
        "cache.header",
        "cache.db",
        "cache.db-wal",
        "cache.db-shm",
        "lock",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    drop(s);
    Store::change_passphrase(&dir, PW, b"n", P).unwrap();
    assert_eq!(mode(&dir.join("cache.header")), 0o600);
}

#[test]
fn conversation_summaries_and_read_marks_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    {
        let s = Store::create(&dir, PW, P).unwrap();
        let db = s.db();
        // message(id): outgoing for even ids, sent at id seconds, received 5 ms later.
        for id in 1..=6 {
            db.insert_message(&message(id, "bob", &format!("b{id}")))
                .unwrap();
        }
        for id in 7..=9 {
            db.insert_message(&message(id, "room", &format!("r{id}")))
                .unwrap();
        }
        // bob: incoming 1, 3, 5; read up to the arrival of 3.
        assert_eq!(db.mark_read("bob", 3_005).unwrap(), 1);
        // room: incoming 7, 9; 9 deleted (it was also the latest).
        assert!(db.delete_message(&[9; 16]).unwrap());
        assert_eq!(
            db.conversations().unwrap(),
            vec![
                ConversationSummary {
                    conversation: "room".into(),
                    last_activity_ms: 8_005,
                    messages: 2,
                    unread: 1,
                },
                ConversationSummary {
                    conversation: "bob".into(),
                    last_activity_ms: 6_005,
                    messages: 6,
                    unread: 1,
                },
            ]
        );
    }
    let s = Store::open(&dir, PW).unwrap();
    let db = s.db();
    let summary = |c: &str| {
        db.conversations()
            .unwrap()
            .into_iter()
            .find(|s| s.conversation == c)
            .unwrap()
    };
    assert_eq!((summary("bob").messages, summary("bob").unread), (6, 1));
    assert_eq!((summary("room").messages, summary("room").unread), (2, 1));
    db.insert_message(&message(11, "bob", "b11")).unwrap();
    assert_eq!(summary("bob").unread, 2);
    assert_eq!(summary("bob").last_activity_ms, 11_005);
    assert_eq!(db.mark_read("bob", u64::MAX >> 2).unwrap(), 0);
    assert_eq!(summary("bob").unread, 0);
    assert_eq!(db.conversations().unwrap()[0].conversation, "bob");
}

fn timed(id: u8, conversation: &str, text: &str, timers: MessageTimers) -> MessageRecord {
    MessageRecord {
        timers,
        ..message(id, conversation, text)
    }
}

#[test]
fn timed_messages_survive_reopen_and_are_shredded_when_due() {
    let marker = MARKER.as_bytes();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profile");
    let burn = MessageTimers {
        burn_after_s: Some(30),
        ..MessageTimers::default()
    };
    let expire = MessageTimers {
        expire_after_s: Some(3_600),
        expire_at_ms: Some(3_601_000),
        ..MessageTimers::default()
    };
    {
        let s = Store::create(&dir, PW, P).unwrap();
        let db = s.db();
        db.insert_message(&timed(1, "bob", &format!("burn {MARKER}"), burn))
            .unwrap();
        db.insert_message(&timed(3, "bob", &format!("expire {MARKER}"), expire))
            .unwrap();
        db.insert_message(&message(5, "bob", "plain")).unwrap();
        let mut system = message(7, "bob", "timer set to 1 hour");
        system.kind = MessageKind::System;
        db.insert_message(&system).unwrap();
        db.set_conversation_timers("bob", Some(3_600), Some(30))
            .unwrap();
    }
    let mut s = Store::open(&dir, PW).unwrap();
    {
        let db = s.db();
        let h = db.history("bob", 10).unwrap();
        assert_eq!(
            h,
            vec![
                timed(1, "bob", &format!("burn {MARKER}"), burn),
                timed(3, "bob", &format!("expire {MARKER}"), expire),
                message(5, "bob", "plain"),
                MessageRecord {
                    kind: MessageKind::System,
                    ..message(7, "bob", "timer set to 1 hour")
                },
            ]
        );
        assert!(db.search(MARKER, 10).unwrap().is_empty());
        assert_eq!(
            db.conversation_timers("bob").unwrap(),
            (Some(3_600), Some(30))
        );
        assert_eq!(db.next_deletion().unwrap(), Some(3_601_000));
        // Reading message 1 starts its burn timer; the expiry can only come sooner.
        assert_eq!(db.mark_displayed(&[1; 16], 10_000).unwrap(), Some(40_000));
        assert_eq!(db.mark_displayed(&[1; 16], 20_000).unwrap(), None);
        assert!(db.set_expire_at(&[3; 16], 9_999_999).unwrap());
        assert_eq!(db.next_deletion().unwrap(), Some(40_000));
        assert_eq!(db.undisplayed_receipts("bob").unwrap(), vec![[1; 16]]);
        db.mark_receipts_sent(&[[1; 16]]).unwrap();
        assert!(db.undisplayed_receipts("bob").unwrap().is_empty());
    }
    assert!(s.shred_due(39_999).unwrap().is_empty());
    assert_eq!(s.shred_due(40_000).unwrap(), vec![([1; 16], "bob".into())]);
    assert_eq!(
        s.shred_due(u64::MAX).unwrap(),
        vec![([3; 16], "bob".into())]
    );
    let db = s.db();
    assert_eq!(db.history("bob", 10).unwrap().len(), 2);
    assert_eq!(db.conversations().unwrap()[0].messages, 2);
    assert_eq!(db.next_deletion().unwrap(), None);
    assert!(db.message(&[1; 16]).unwrap().is_none());
    drop(s);
    assert!(files_containing(&dir, marker).is_empty());
    let s = Store::open(&dir, PW).unwrap();
    assert_eq!(s.db().history("bob", 10).unwrap().len(), 2);
    assert_eq!(s.db().delete_conversation("bob").unwrap(), 2);
    assert!(s.db().conversations().unwrap().is_empty());
    assert_eq!(s.db().conversation_timers("bob").unwrap(), (None, None));
}

#[test]
fn the_outbox_round_trips_kinds_timers_and_extra_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profile");
    let items = [
        (OutboxKind::Text, Some(60), None, Vec::new()),
        (OutboxKind::Receipt, None, None, vec![0u8, 1, 2, 255]),
        (OutboxKind::Control, None, Some(5), vec![7u8; 1000]),
    ];
    {
        let s = Store::create(&dir, PW, P).unwrap();
        for (kind, expire, burn, extra) in &items {
            let mut item = outbox("x");
            item.kind = *kind;
            item.timers.expire_after_s = *expire;
            item.timers.burn_after_s = *burn;
            item.extra = extra.clone();
            s.db().outbox_push(&item).unwrap();
        }
    }
    let s = Store::open(&dir, PW).unwrap();
    let pending = s.db().outbox_pending().unwrap();
    assert_eq!(pending.len(), 3);
    for (o, (kind, expire, burn, extra)) in pending.iter().zip(&items) {
        assert_eq!(o.kind, *kind);
        assert_eq!(
            o.timers,
            MessageTimers {
                expire_after_s: *expire,
                burn_after_s: *burn,
                ..MessageTimers::default()
            }
        );
        assert_eq!(&o.extra, extra);
    }
}

#[test]
fn blob_prefixes_do_not_match_look_alikes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profile");
    let s = Store::create(&dir, PW, P).unwrap();
    let db = s.db();
    for key in [
        "room/a",
        "room/a/1",
        "room/a/2",
        "room/ab",
        "room/ab/1",
        "room/a_/1",
    ] {
        db.put_blob(key, key.as_bytes()).unwrap();
    }
    let keys = |prefix: &str| {
        db.blobs_with_prefix(prefix)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(v.as_slice(), k.as_bytes());
                k
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("room/a/"), ["room/a/1", "room/a/2"]);
    assert_eq!(keys("room/a_"), ["room/a_/1"]);
    assert_eq!(db.delete_blobs_with_prefix("room/a/").unwrap(), 2);
    assert!(keys("room/a/").is_empty());
    assert_eq!(
        keys("room/a"),
        ["room/a", "room/a_/1", "room/ab", "room/ab/1"]
    );
}
