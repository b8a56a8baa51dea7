//! End-to-end messaging through the real relay (in-process on 127.0.0.1:0) and real session
//! engines with SQLCipher caches in temporary directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_each_way_arrive_once_in_order_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let (mut alice, mut bob) = (Client::open(&dirs[1]), Client::open(&dirs[2]));
    const N: usize = 1000;
    // Byte-exact: unicode, control characters, long and short texts.
    let msg = |from: &str, i: usize| format!("{from} #{i:04} ünïcødé ✓ \t{}", "x".repeat(i % 97));
    for i in 0..N {
        alice
            .handle
            .send_text("bob", &msg("alice", i))
            .await
            .unwrap();
        bob.handle.send_text("alice", &msg("bob", i)).await.unwrap();
    }
    let (a, b) = tokio::join!(alice.handle.flush(), bob.handle.flush());
    a.unwrap();
    b.unwrap();
    let to_bob = bob.texts().await;
    let to_alice = alice.texts().await;
    assert_same(
        &to_bob,
        &(0..N).map(|i| msg("alice", i)).collect::<Vec<_>>(),
        "alice -> bob",
    );
    assert_same(
        &to_alice,
        &(0..N).map(|i| msg("bob", i)).collect::<Vec<_>>(),
        "bob -> alice",
    );
    // Nothing arrives twice.
    assert!(bob.received().await.is_empty());
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    // The stored history agrees, in order.
    let store = cinder::session::unlock(&dirs[2], PASS).unwrap();
    let hist = store.db().history("dm:alice:bob", 10 * N).unwrap();
    let incoming: Vec<String> = hist
        .iter()
        .filter(|m| !m.outgoing)
        .map(|m| m.text.clone())
        .collect();
    assert_same(
        &incoming,
        &(0..N).map(|i| msg("alice", i)).collect::<Vec<_>>(),
        "bob's history",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_aborted_mid_burst_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let alice = engine(&dirs[1]);
    const N: usize = 300;
    for i in 0..N {
        alice.send_text("bob", &format!("burst {i}")).await.unwrap();
    }
    // Kill the relay (no drain, no cleanup) while the burst is being delivered.
    let flusher = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.flush().await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    relay.abort();
    let first = flusher.await.unwrap();
    // Cut mid-burst, a request may also be answered "internal relay error" (its store writer
    // was aborted under it): any outcome but a permanent failure leaves the rest queued.
    assert!(!matches!(&first, Err(e) if e.is_permanent()), "{first:?}");
    relay.restart().await;
    alice.flush().await.unwrap();
    let mut bob = Client::open(&dirs[2]);
    let got = bob.texts().await;
    let expected: Vec<String> = (0..N).map(|i| format!("burst {i}")).collect();
    assert_eq!(got.len(), N, "lost or duplicated messages");
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), N);
    assert_same(&got, &expected, "order");
    alice.shutdown().await;
    bob.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_ciphertext_byte_fails_that_message_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let alice = engine(&dirs[1]);
    // Bob has not answered yet, so all three still carry the handshake fields.
    for t in ["one", "two", "three"] {
        alice.send_text("bob", t).await.unwrap();
    }
    alice.flush().await.unwrap();
    relay.stop().await;
    {
        let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
        let seq: i64 = db
            .query_row(
                "SELECT seq FROM mailbox ORDER BY seq LIMIT 1 OFFSET 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut payload: Vec<u8> = db
            .query_row("SELECT payload FROM mailbox WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap();
        let last = payload.len() - 1;
        payload[last] ^= 0x01;
        db.execute(
            "UPDATE mailbox SET payload = ?1 WHERE seq = ?2",
            rusqlite::params![payload, seq],
        )
        .unwrap();
    }
    relay.restart().await;
    let mut bob = Client::open(&dirs[2]);
    let got = bob.received().await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], Ok("one".to_string()));
    assert!(
        matches!(&got[1], Err(e) if e.contains("integrity")),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2], Ok("three".to_string()));
    // And the session still works afterwards.
    alice.send_text("bob", "four").await.unwrap();
    alice.flush().await.unwrap();
    assert_eq!(bob.texts().await, vec!["four"]);
    alice.shutdown().await;
    bob.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_state_moves_to_delivered_and_unknown_users_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let alice = engine(&dirs[1]);
    let mut bob = Client::open(&dirs[2]);
    let id = alice.send_text("bob", "hello").await.unwrap();
    alice.flush().await.unwrap();
    assert_eq!(bob.texts().await, vec!["hello"]);
    alice.sync().await.unwrap();
    alice.shutdown().await;
    let store = cinder::session::unlock(&dirs[1], PASS).unwrap();
    let m = store.db().message(&id).unwrap().unwrap();
    assert_eq!(m.state.as_str(), "delivered");
    drop(store);
    let alice = engine(&dirs[1]);
    alice.send_text("nobody", "hi").await.unwrap();
    let e = alice.flush().await.unwrap_err();
    assert!(e.to_string().contains("unknown user"), "{e}");
    // A failed message does not block the next one.
    alice.send_text("bob", "after").await.unwrap();
    alice.flush().await.unwrap();
    assert_eq!(bob.texts().await, vec!["after"]);
    alice.shutdown().await;
    bob.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_at_rest_or_on_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    // A recording TCP proxy between the clients and the relay.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("ws://{}", proxy.local_addr().unwrap());
    let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let target = relay.addr;
    {
        let captured = captured.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = proxy.accept().await else {
                    break;
                };
                let captured = captured.clone();
                tokio::spawn(async move {
                    let server = tokio::net::TcpStream::connect(target).await.unwrap();
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let c1 = captured.clone();
                    let up = async move {
                        let mut buf = [0u8; 8192];
                        loop {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            c1.lock().unwrap().extend_from_slice(&buf[..n]);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let mut buf = [0u8; 8192];
                        loop {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            captured.lock().unwrap().extend_from_slice(&buf[..n]);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
    }
    let admin_dir = tmp.path().join("admin");
    register_user(&proxy_url, &relay.admin_invite, "admin", &admin_dir).await;
    let admin = engine(&admin_dir);
    let code_a = admin.create_invite("a@x", false).await.unwrap();
    let code_b = admin.create_invite("b@x", false).await.unwrap();
    admin.shutdown().await;
    register_user(&proxy_url, &code_a, "alice", &tmp.path().join("alice")).await;
    register_user(&proxy_url, &code_b, "bob", &tmp.path().join("bob")).await;
    let mut alice = Client::open(&tmp.path().join("alice"));
    let mut bob = Client::open(&tmp.path().join("bob"));
    const MARK_A: &str = "MARKER-alice-7f3a9c-plaintext";
    const MARK_B: &str = "MARKER-bob-2d81ee-plaintext";
    alice.handle.send_text("bob", MARK_A).await.unwrap();
    alice.handle.flush().await.unwrap();
    assert_eq!(bob.texts().await, vec![MARK_A.to_string()]);
    bob.handle.send_text("alice", MARK_B).await.unwrap();
    bob.handle.flush().await.unwrap();
    assert_eq!(alice.texts().await, vec![MARK_B.to_string()]);
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    let wire = captured.lock().unwrap().clone();
    assert!(
        wire.len() > 10_000,
        "the proxy saw the traffic ({} bytes)",
        wire.len()
    );
    for mark in [MARK_A, MARK_B] {
        assert!(!contains(&wire, mark.as_bytes()), "{mark} on the wire");
        for (path, bytes) in all_bytes(tmp.path()) {
            assert!(
                !contains(&bytes, mark.as_bytes()),
                "{mark} found in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_started_by_both_sides_at_once_converge_without_losing_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let mut alice = Client::open(&dirs[1]);
    let mut bob = Client::open(&dirs[2]);
    // Neither has heard from the other: both start a session (crossing handshakes).
    alice.handle.send_text("bob", "a1").await.unwrap();
    alice.handle.flush().await.unwrap();
    bob.handle.send_text("alice", "b1").await.unwrap();
    bob.handle.flush().await.unwrap();
    let mut got_a = alice.received().await;
    let mut got_b = bob.received().await;
    // Then a conversation, alternating and in bursts.
    for i in 0..3 {
        alice
            .handle
            .send_text("bob", &format!("a{}", i + 2))
            .await
            .unwrap();
        alice.handle.flush().await.unwrap();
        got_b.extend(bob.received().await);
        bob.handle
            .send_text("alice", &format!("b{}", i + 2))
            .await
            .unwrap();
        bob.handle
            .send_text("alice", &format!("b{}x", i + 2))
            .await
            .unwrap();
        bob.handle.flush().await.unwrap();
        got_a.extend(alice.received().await);
    }
    let errors: Vec<&String> = got_a
        .iter()
        .chain(&got_b)
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(errors.is_empty(), "undecryptable: {errors:?}");
    let texts = |v: &[Result<String, String>]| -> Vec<String> {
        v.iter().filter_map(|r| r.as_ref().ok().cloned()).collect()
    };
    assert_same(
        &texts(&got_b),
        &["a1", "a2", "a3", "a4"].map(String::from),
        "bob got",
    );
    assert_same(
        &texts(&got_a),
        &["b1", "b2", "b2x", "b3", "b3x", "b4", "b4x"].map(String::from),
        "alice got",
    );
}

/// The reconnect backoff on virtual time: each failed attempt doubles the delay (with jitter
/// in its upper half) up to `reconnect_max`, and the first attempt after the relay is back
/// connects. The test advances tokio time by each announced delay instead of waiting it out.
#[tokio::test]
async fn the_engine_reconnects_with_a_capped_doubling_backoff() {
    use cinder::session::{EngineOptions, SessionEvent};
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice"]).await;
    let cap = Duration::from_secs(8);
    let store = cinder::session::unlock(&dirs[1], PASS).unwrap();
    let alice = cinder::session::spawn(
        store,
        EngineOptions {
            auto_reconnect: true,
            reconnect_max: cap,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    // Subscribed before the engine task first runs (current-thread runtime, no await yet).
    let mut events = alice.subscribe();
    let connected = |e: &SessionEvent| matches!(e, SessionEvent::Connected).then_some(());
    let retry = |e: &SessionEvent| match e {
        SessionEvent::Disconnected {
            retry_in: Some(d), ..
        } => Some(*d),
        _ => None,
    };
    wait_event(&mut events, "the first connection", connected).await;
    // The actor is serial: once this returns, the catch-up that follows a connection is done
    // and no request is in flight when the relay goes away (an unanswered one would hold the
    // actor for the 15 s request timeout before it sees the relay's Bye).
    alice.sync().await.unwrap();
    relay.stop().await;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let d = wait_event(&mut events, "a retry to be scheduled", retry).await;
        delays.push(d);
        // The attempt runs now and fails: nothing listens on the port.
        advance(d).await;
    }
    for (i, d) in delays.iter().enumerate() {
        let base = (Duration::from_millis(250) * (1 << (i + 1))).min(cap);
        assert!(
            *d >= base / 2 && *d <= base,
            "attempt {i}: {d:?} outside [{:?}, {base:?}] ({delays:?})",
            base / 2
        );
    }
    // The last attempt has failed too (the relay is still down) before it comes back.
    let d = wait_event(&mut events, "the seventh retry", retry).await;
    assert!(d >= cap / 2 && d <= cap, "{d:?} is not within the cap");
    relay.restart().await;
    advance(d).await;
    wait_event(&mut events, "the reconnection", connected).await;
    assert!(alice.is_connected());
    alice.shutdown().await;
}
