//! Full-text search, paging and read marks through the public API: the encrypted cache
//! ([`Store`]/`Db`) and the session engine ([`cinder::session::SessionHandle`]) against a real
//! relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use cinder::crypto::passphrase::KdfParams;
use cinder::store::{MessageKind, MessageRecord, MessageState, MessageTimers, Store, StoreError};
use common::*;

const P: KdfParams = KdfParams::INSECURE_FOR_TESTS;
const PW: &[u8] = b"correct horse battery staple";

fn message(id: u32, conversation: &str, sent_at_ms: u64, text: &str) -> MessageRecord {
    let mut message_id = [0x5a; 16];
    message_id[..4].copy_from_slice(&id.to_be_bytes());
    MessageRecord {
        message_id,
        conversation: conversation.into(),
        outgoing: id.is_multiple_of(3),
        sender: "bob".into(),
        sender_device: [0x22; 16],
        sent_at_ms,
        received_at_ms: sent_at_ms + 3,
        text: text.into(),
        state: MessageState::Received,
        kind: MessageKind::Text,
        timers: MessageTimers::default(),
    }
}

fn texts(v: &[MessageRecord]) -> Vec<&str> {
    v.iter().map(|m| m.text.as_str()).collect()
}

/// Every file below `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    all_bytes(dir)
        .into_iter()
        .filter(|(_, b)| contains(b, needle))
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn search_is_newest_first_prefix_matching_and_never_a_syntax_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    {
        let s = Store::create(&dir, PW, P).unwrap();
        let db = s.db();
        for (id, conv, sent, text) in [
            (1, "dm:alice:bob", 5_000, "Lunch at the new ramen place?"),
            (2, "room:team", 9_000, "Deploying the release now"),
            (3, "dm:alice:bob", 7_000, "ramen again, sure"),
            (4, "room:team", 1_000, "Release notes are in the doc"),
            (5, "dm:alice:carol", 8_000, "Grüße aus München, naïve café"),
            (6, "dm:alice:carol", 8_000, "Привет! 你好 東京"),
            (
                7,
                "room:team",
                6_000,
                "\"quoted\" AND OR NOT * col:x (paren) -minus",
            ),
        ] {
            assert!(db.insert_message(&message(id, conv, sent, text)).unwrap());
        }
    }
    // Searchable after a reopen: the index is part of the encrypted cache.
    let s = Store::open(&dir, PW).unwrap();
    let db = s.db();
    assert_eq!(
        texts(&db.search("release", 10).unwrap()),
        ["Deploying the release now", "Release notes are in the doc"]
    );
    // Search-as-you-type: the last word is a prefix.
    assert_eq!(
        texts(&db.search("ram", 10).unwrap()),
        ["ramen again, sure", "Lunch at the new ramen place?"]
    );
    assert_eq!(
        texts(&db.search("new ram", 10).unwrap()),
        ["Lunch at the new ramen place?"]
    );
    assert_eq!(
        texts(&db.search("ramen", 1).unwrap()),
        ["ramen again, sure"]
    );
    assert_eq!(
        texts(&db.search_in("room:team", "the", 10).unwrap()),
        ["Deploying the release now", "Release notes are in the doc"]
    );
    // Unicode: case and diacritics folded, non-Latin scripts.
    // (ß is not folded to "ss": the unicode61 tokenizer maps single characters only.)
    for q in [
        "GRÜßE",
        "gruße",
        "MÜNCHEN",
        "munchen",
        "naive",
        "cafe",
        "привет",
        "東京",
    ] {
        assert_eq!(db.search(q, 10).unwrap().len(), 1, "{q}");
    }
    // FTS syntax is searched for as text, and nothing typed is an error.
    for q in [
        "\"foo",
        "AND OR",
        "*",
        "\"quoted",
        "NOT",
        "col:x",
        "(paren",
        "-minus",
        "NEAR(a b)",
        "^",
        "\"\"\"",
        "' OR 1=1 --",
        "\0",
        "🔥",
        "",
    ] {
        let r = db.search(q, 10);
        assert!(r.is_ok(), "{q:?}: {r:?}");
    }
    assert_eq!(db.search("AND OR", 10).unwrap().len(), 1);
    assert_eq!(db.search("\"quoted", 10).unwrap().len(), 1);
    assert!(db.search("*", 10).unwrap().is_empty());
    assert!(db.search("", 10).unwrap().is_empty());
    assert!(db.search(" ?! ", 10).unwrap().is_empty());
}

#[test]
fn a_deleted_message_cannot_be_found_and_leaves_no_plaintext() {
    const MARKER: &str = "quokkamarker7f3a";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let s = Store::create(&dir, PW, P).unwrap();
    let db = s.db();
    for i in 0..50 {
        db.insert_message(&message(i, "c", u64::from(i) * 10, &format!("filler {i}")))
            .unwrap();
    }
    let secret = message(100, "c", 105, &format!("burn {MARKER} after reading"));
    db.insert_message(&secret).unwrap();
    assert_eq!(db.search(MARKER, 10).unwrap(), vec![secret.clone()]);
    assert_eq!(db.search("burn", 10).unwrap().len(), 1);

    assert!(db.delete_message(&secret.message_id).unwrap());
    assert!(db.search(MARKER, 10).unwrap().is_empty());
    assert!(db.search("quokka", 10).unwrap().is_empty());
    assert!(db.search("burn", 10).unwrap().is_empty());
    assert_eq!(db.search("filler", 100).unwrap().len(), 50);
    assert_eq!(db.conversations().unwrap()[0].messages, 50);
    s.checkpoint_truncate().unwrap();
    assert!(files_containing(&dir, MARKER.as_bytes()).is_empty());
    drop(s);
    assert!(files_containing(&dir, MARKER.as_bytes()).is_empty());

    let s = Store::open(&dir, PW).unwrap();
    assert!(s.db().search(MARKER, 10).unwrap().is_empty());
    assert!(s.db().message(&secret.message_id).unwrap().is_none());
}

#[test]
fn timed_messages_are_never_searchable_and_shredding_keeps_search_right() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let mut s = Store::create(&dir, PW, P).unwrap();
    let timed = |id: u32, sent: u64, text: &str, expire_at_ms: u64| MessageRecord {
        timers: MessageTimers {
            expire_after_s: Some(60),
            expire_at_ms: Some(expire_at_ms),
            ..MessageTimers::default()
        },
        ..message(id, "c", sent, text)
    };
    {
        let db = s.db();
        db.insert_message(&message(1, "c", 10, "wombat in clear"))
            .unwrap();
        db.insert_message(&timed(2, 20, "wombat on a timer", 1_000))
            .unwrap();
        db.insert_message(&timed(3, 30, "second wombat on a timer", 2_000))
            .unwrap();
        // Timed messages are in the history, decrypted, but the search never sees them.
        assert_eq!(
            texts(&db.history("c", 10).unwrap()),
            [
                "wombat in clear",
                "wombat on a timer",
                "second wombat on a timer"
            ]
        );
        assert_eq!(
            texts(&db.search("wombat", 10).unwrap()),
            ["wombat in clear"]
        );
        assert!(db.search("timer", 10).unwrap().is_empty());
        assert!(db.search_in("c", "second", 10).unwrap().is_empty());
        // A timer given to a clear message later takes it out of the search too.
        assert!(
            db.set_expire_at(&message(1, "", 0, "").message_id, 1_500)
                .unwrap()
        );
        assert!(db.search("wombat", 10).unwrap().is_empty());
    }
    assert_eq!(s.shred_due(1_500).unwrap().len(), 2);
    let db = s.db();
    assert_eq!(
        texts(&db.history("c", 10).unwrap()),
        ["second wombat on a timer"]
    );
    assert_eq!(db.conversations().unwrap()[0].messages, 1);
    assert!(db.search("wombat", 10).unwrap().is_empty());
    db.insert_message(&message(4, "c", 40, "wombat again"))
        .unwrap();
    assert_eq!(texts(&db.search("wombat", 10).unwrap()), ["wombat again"]);
}

#[test]
fn history_before_walks_a_thousand_messages_in_pages_of_a_hundred() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::create(tmp.path(), PW, P).unwrap();
    // 1,000 messages in "c" with shuffled, partly equal timestamps, interleaved with another
    // conversation; inserted in batches.
    let mut all = Vec::new();
    for i in 0..1000u32 {
        let sent = u64::from((i * 7919) % 1000 / 2);
        all.push(message(i, "c", sent, &format!("c{i}")));
        all.push(message(10_000 + i, "other", sent, &format!("o{i}")));
    }
    for chunk in all.chunks(128) {
        let n = s.transaction(|db| db.insert_messages(chunk)).unwrap();
        assert_eq!(n, chunk.len());
    }
    let db = s.db();
    let whole = db.history("c", 10_000).unwrap();
    assert_eq!(whole.len(), 1000);
    // History order: by timestamp, ties by arrival.
    let mut expected: Vec<&MessageRecord> = all.iter().filter(|m| m.conversation == "c").collect();
    expected.sort_by_key(|m| m.sent_at_ms); // stable: arrival order among ties
    assert_eq!(whole.iter().collect::<Vec<_>>(), expected);

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = db.history_before("c", before, 100).unwrap();
        if page.is_empty() {
            break;
        }
        assert_eq!(page.len(), 100);
        assert!(page.iter().all(|m| m.conversation == "c"));
        before = Some(page[0].message_id);
        pages.push(page);
    }
    assert_eq!(pages.len(), 10);
    let walked: Vec<MessageRecord> = pages.into_iter().rev().flatten().collect();
    assert_eq!(walked, whole, "every message exactly once, in order");
    assert!(matches!(
        db.history_before("c", Some([0xff; 16]), 10),
        Err(StoreError::UnknownMessage)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_searches_pages_and_marks_read() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let (alice, mut bob) = (Client::open(&dirs[1]), Client::open(&dirs[2]));
    for i in 0..12 {
        alice
            .handle
            .send_text(
                "bob",
                &format!("status report {i} for the zeppelin project"),
            )
            .await
            .unwrap();
    }
    alice.handle.send_text("bob", "unrelated").await.unwrap();
    alice.handle.flush().await.unwrap();
    assert_eq!(bob.texts().await.len(), 13);
    bob.handle.send_text("alice", "zeppelin ack").await.unwrap();

    let conv = "dm:alice:bob";
    let found = bob.handle.search("zeppelin", 5).await.unwrap();
    assert_eq!(
        texts(&found),
        [
            "zeppelin ack",
            "status report 11 for the zeppelin project",
            "status report 10 for the zeppelin project",
            "status report 9 for the zeppelin project",
            "status report 8 for the zeppelin project",
        ]
    );
    assert_eq!(bob.handle.search("zepp", 100).await.unwrap().len(), 13);
    assert_eq!(
        bob.handle.search_in(conv, "unrel", 10).await.unwrap().len(),
        1
    );
    assert!(bob.handle.search("\"AND (", 10).await.unwrap().is_empty());

    // Bob's own message changes state (sending, sent, delivered) while alice's engine answers
    // it, so the two pages are compared by message, not by record.
    let ids = |page: &[MessageRecord]| page.iter().map(|m| m.message_id).collect::<Vec<_>>();
    let newest = bob.handle.history_before(conv, None, 5).await.unwrap();
    assert_eq!(
        ids(&newest),
        ids(&bob.handle.history(conv, 5).await.unwrap())
    );
    let older = bob
        .handle
        .history_before(conv, Some(newest[0].message_id), 100)
        .await
        .unwrap();
    assert_eq!(older.len(), 9);
    assert_eq!(older[0].text, "status report 0 for the zeppelin project");

    let summary = bob.handle.conversations().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].messages, summary[0].unread), (14, 13));
    assert_eq!(bob.handle.mark_read(conv).await.unwrap(), 0);
    let summary = bob.handle.conversations().await.unwrap();
    assert_eq!((summary[0].messages, summary[0].unread), (14, 0));
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    // The read mark is durable.
    let store = cinder::session::unlock(&dirs[2], PASS).unwrap();
    assert_eq!(store.db().conversations().unwrap()[0].unread, 0);
}
