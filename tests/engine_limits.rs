//! The engine under pressure (issue 10): one oversized message never locks anyone out, relays
//! with other frame limits, a relay that holds a reply, a relay that pushes faster than the
//! engine reads, and rate limits that never reach the caller. Real relay in-process, real
//! engines and SQLCipher caches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cinder::protocol::DEFAULT_MAX_FRAME;
use cinder::relay::{Release, Tamper};
use cinder::session::{
    MessageKind, MessageState, PUSH_QUEUE, SendOptions, SessionError, SessionEvent, SessionHandle,
};
use common::{Client, TestRelay, assert_same, engine, network};
use tokio::sync::broadcast;

/// The text limit of a client talking to a default relay (the envelope's payload limit).
const TEXT_LIMIT: usize = cinder::crypto::envelope::MAX_PAYLOAD - 1024;

fn big(n: usize) -> String {
    "x".repeat(n)
}

async fn state_of(h: &SessionHandle, conversation: &str, id: [u8; 16]) -> MessageState {
    h.history(conversation, 50)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.message_id == id)
        .unwrap_or_else(|| panic!("message not in history"))
        .state
}

/// Sends `text` and flushes, returning the flush's outcome.
async fn send_and_flush(h: &SessionHandle, to: &str, text: &str) -> Result<[u8; 16], SessionError> {
    let id = h.send_text(to, text).await?;
    h.flush().await.map(|()| id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1040000_byte_message_fails_alone_and_everyone_keeps_talking() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(tmp.path()).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let (mut alice, mut bob) = (Client::open(&dirs[1]), Client::open(&dirs[2]));

    // Queued (it is below the text limit), refused exactly once encrypted: the request
    // would exceed the relay's frame limit, so it is never sent and is marked failed.
    let id = alice
        .handle
        .send_text("bob", &big(1_040_000))
        .await
        .unwrap();
    let err = alice.handle.flush().await.unwrap_err();
    match &err {
        SessionError::TooLarge { size, limit } => {
            assert_eq!(*limit, DEFAULT_MAX_FRAME);
            assert!(*size > *limit, "{size} <= {limit}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("message too large (")
            && err.to_string().contains("the limit is 1048576"),
        "{err}"
    );
    assert_eq!(
        state_of(&alice.handle, "dm:alice:bob", id).await,
        MessageState::Failed
    );
    // The reason is kept with it, and it can be discarded.
    let reason = alice.handle.failure(id).await.unwrap().unwrap();
    assert_eq!(reason, err.to_string());
    alice.handle.discard(id).await.unwrap();
    let history = alice.handle.history("dm:alice:bob", 50).await.unwrap();
    assert!(
        history.iter().all(|m| m.message_id != id),
        "discarded, yet still in the history"
    );
    assert!(matches!(
        alice.handle.retry(id).await,
        Err(SessionError::Usage(_))
    ));

    // It left the outbox: later messages go, in both directions.
    send_and_flush(&alice.handle, "bob", "after the big one")
        .await
        .unwrap();
    assert_eq!(bob.texts().await, vec!["after the big one".to_owned()]);
    send_and_flush(&bob.handle, "alice", "still here")
        .await
        .unwrap();
    assert_eq!(alice.texts().await, vec!["still here".to_owned()]);
    // A flush with nothing left is clean: the failed entry is not retried for ever.
    alice.handle.flush().await.unwrap();

    // One byte over the text limit is refused before it is queued, with both numbers.
    let err = alice
        .handle
        .send_text("bob", &big(TEXT_LIMIT + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SessionError::TooLarge { size, limit } if size == TEXT_LIMIT + 1 && limit == TEXT_LIMIT),
        "{err:?}"
    );
    let history = alice.handle.history("dm:alice:bob", 50).await.unwrap();
    assert!(
        history.iter().all(|m| m.text.len() <= 1_040_000),
        "a refused message entered the history"
    );
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_larger_frame_limit_delivers_large_messages_even_after_it_returns_to_the_default()
 {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start_with(tmp.path(), |c| c.max_frame = 4 << 20).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let alice = engine(&dirs[1]);
    let text = big(1_040_000);
    // Larger than our own default frame: the relay announced 4 MiB, so it goes.
    send_and_flush(&alice, "bob", &text).await.unwrap();
    let mut bob = Client::open(&dirs[2]);
    let got = bob.texts().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), text.len(), "bob got the large message");
    bob.handle.shutdown().await;

    // Another one waits for bob while the relay goes back to its 1 MiB default: the stored
    // item is delivered alone, and bob is not locked out.
    send_and_flush(&alice, "bob", &text).await.unwrap();
    alice.shutdown().await;
    relay.stop().await;
    relay.restart().await;
    let mut bob = Client::open(&dirs[2]);
    let got = bob.texts().await;
    assert_eq!(got.len(), 1, "the stored large message arrives");
    assert_eq!(got[0], text);
    let alice = engine(&dirs[1]);
    send_and_flush(&alice, "bob", "small").await.unwrap();
    assert_eq!(bob.texts().await, vec!["small".to_owned()]);
    send_and_flush(&bob.handle, "alice", "back").await.unwrap();
    alice.shutdown().await;
    bob.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_smaller_frame_limit_refuses_what_it_cannot_carry_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = TestRelay::start_with(tmp.path(), |c| c.max_frame = 64 * 1024).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let alice = engine(&dirs[1]);
    // Not yet connected, so the client only knows its default: queued, then refused by size
    // against the limit the relay announced.
    alice.send_text("bob", &big(100_000)).await.unwrap();
    let err = alice.flush().await.unwrap_err();
    assert!(
        matches!(err, SessionError::TooLarge { limit: 65536, .. }),
        "{err:?}"
    );
    let failed = alice
        .history("dm:alice:bob", 10)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.state == MessageState::Failed)
        .unwrap()
        .message_id;
    // Now it knows: refused before queuing.
    let err = alice.send_text("bob", &big(65_537)).await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::TooLarge {
                size: 65_537,
                limit: 65536
            }
        ),
        "{err:?}"
    );
    send_and_flush(&alice, "bob", "fits").await.unwrap();
    let mut bob = Client::open(&dirs[2]);
    assert_eq!(bob.texts().await, vec!["fits".to_owned()]);
    bob.handle.shutdown().await;
    alice.shutdown().await;

    // The relay comes back with its default limit: the failed message, retried, goes.
    relay.stop().await;
    relay.restart().await;
    let alice = engine(&dirs[1]);
    alice.retry(failed).await.unwrap();
    assert_eq!(alice.failure(failed).await.unwrap(), None);
    alice.flush().await.unwrap();
    let mut bob = Client::open(&dirs[2]);
    assert_eq!(bob.texts().await, vec![big(100_000)]);
    // Sent, or already delivered if bob's fetch notice overtook us: no longer failed.
    let state = state_of(&alice, "dm:alice:bob", failed).await;
    assert!(
        matches!(state, MessageState::Sent | MessageState::Delivered),
        "{state:?}"
    );
    alice.shutdown().await;
    bob.handle.shutdown().await;
}

/// Holds back the answers to one kind of request of one user until the test releases them.
struct Hold {
    user: &'static str,
    request: &'static str,
    armed: AtomicBool,
    /// Set when an answer was held (the relay has the request).
    seen: tokio::sync::Notify,
    release: tokio::sync::watch::Sender<bool>,
}

impl Hold {
    fn new(user: &'static str, request: &'static str, armed: bool) -> Arc<Self> {
        Arc::new(Self {
            user,
            request,
            armed: AtomicBool::new(armed),
            seen: tokio::sync::Notify::new(),
            release: tokio::sync::watch::channel(false).0,
        })
    }

    fn release(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.release.send_replace(true);
    }
}

impl Tamper for Hold {
    fn hold(&self, from_user: &str, request: &str) -> Option<Release> {
        if from_user != self.user || request != self.request || !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        self.seen.notify_one();
        let mut released = self.release.subscribe();
        Some(Box::pin(async move {
            let _ = released.wait_for(|r| *r).await;
        }))
    }
}

async fn next_event<T>(
    events: &mut broadcast::Receiver<SessionEvent>,
    mut pick: impl FnMut(SessionEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("engine stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the event never came")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_held_for_five_seconds_holds_up_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let hold = Hold::new("admin", "set_policy", true);
    let h = Arc::clone(&hold);
    let relay = TestRelay::start_with(tmp.path(), move |c| c.tamper = Some(h)).await;
    let dirs = network(tmp.path(), &relay, &["bob"]).await;
    let admin = engine(&dirs[0]);
    let bob = engine(&dirs[1]);
    let mut events = admin.subscribe();
    // A message that expires 2 s after it was sent, and a conversation to read.
    let timed = admin
        .send_message(
            "bob",
            "gone soon",
            SendOptions {
                expire_after: Some(2),
                burn_after: None,
            },
        )
        .await
        .unwrap();
    admin.flush().await.unwrap();
    send_and_flush(&bob, "admin", "first").await.unwrap();
    admin.sync().await.unwrap();

    // The relay sits on this answer until we release it (the client would give up after its
    // 15 s request timeout; everything below takes well under a second).
    let held = {
        let admin = admin.clone();
        tokio::spawn(async move { admin.set_read_receipts(false).await })
    };
    hold.seen.notified().await;
    // History is answered meanwhile.
    let history = admin.history("dm:admin:bob", 10).await.unwrap();
    assert!(history.iter().any(|m| m.text == "first"));
    assert!(!held.is_finished(), "history waited for the held reply");
    // A live push is received and stored meanwhile.
    send_and_flush(&bob, "admin", "pushed while held")
        .await
        .unwrap();
    let text = next_event(&mut events, |e| match e {
        SessionEvent::Message(m) if m.text != "first" => Some(m.text),
        _ => None,
    })
    .await;
    assert_eq!(text, "pushed while held");
    assert!(!held.is_finished(), "the push waited for the held reply");
    // The expiry timer shreds meanwhile.
    let shredded = next_event(&mut events, |e| match e {
        SessionEvent::Shredded { message_ids, .. } => Some(message_ids),
        _ => None,
    })
    .await;
    assert_eq!(shredded, vec![timed.message_id]);
    assert!(!held.is_finished(), "the shred waited for the held reply");
    // And the held command completes with the relay's answer once it comes.
    hold.release();
    let policy = held.await.unwrap().unwrap();
    assert!(!policy.read_receipts);
    admin.shutdown().await;
    bob.shutdown().await;
}

/// Sends `n` numbered messages from the profile in `dir` to `to`.
async fn burst(dir: &Path, from: &str, to: &str, n: usize) -> Vec<String> {
    let h = engine(dir);
    let texts: Vec<String> = (0..n).map(|i| format!("{from} {i:05}")).collect();
    for t in &texts {
        h.send_text(to, t).await.unwrap();
    }
    // Against a relay with default limits: no rate limit reaches the caller.
    h.flush().await.unwrap();
    h.shutdown().await;
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pushes_to_a_stalled_engine_stay_bounded_and_all_arrive_once() {
    let tmp = tempfile::tempdir().unwrap();
    // The receiver's first lookup of a sender (its root key, on their first message) is held
    // until its push queue has filled: its inbox stalls while the relay keeps pushing.
    let hold = Hold::new("rx", "get_user", false);
    let h = Arc::clone(&hold);
    let relay = TestRelay::start_with(tmp.path(), move |c| c.tamper = Some(h)).await;
    let senders = ["s1", "s2", "s3", "s4"];
    let mut users = vec!["rx"];
    users.extend(senders);
    let dirs = network(tmp.path(), &relay, &users).await;
    let rx = engine(&dirs[1]);
    rx.sync().await.unwrap();
    assert!(rx.is_connected());
    hold.armed.store(true, Ordering::SeqCst);
    const PER_SENDER: usize = 2_500;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rx, sampling, hold) = (rx.clone(), Arc::clone(&sampling), Arc::clone(&hold));
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(Ordering::SeqCst) {
                let depth = rx.push_queue_depth();
                max = max.max(depth);
                // Full: the stalled engine has been shown; let it read again.
                if depth == PUSH_QUEUE {
                    hold.release();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max
        })
    };
    let mut jobs = Vec::new();
    for (i, s) in senders.into_iter().enumerate() {
        let dir = dirs[i + 2].clone();
        jobs.push(tokio::spawn(async move {
            burst(&dir, s, "rx", PER_SENDER).await
        }));
    }
    let mut sent = Vec::new();
    for j in jobs {
        sent.push(j.await.unwrap());
    }
    hold.release();
    sampling.store(false, Ordering::SeqCst);
    let max_depth = sampler.await.unwrap();
    assert!(max_depth <= PUSH_QUEUE, "queue grew to {max_depth}");
    assert_eq!(
        max_depth, PUSH_QUEUE,
        "the stalled engine's queue never filled"
    );

    // Once it reads again, every message is there exactly once, in each sender's order.
    rx.sync().await.unwrap();
    for (s, texts) in senders.iter().zip(&sent) {
        let conv = cinder::protocol::names::dm_conversation("rx", s);
        let got: Vec<String> = rx
            .history(&conv, 10 * PER_SENDER)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == MessageKind::Text && !m.outgoing)
            .map(|m| m.text)
            .collect();
        assert_eq!(
            got.iter().collect::<HashSet<_>>().len(),
            got.len(),
            "{s}: duplicates"
        );
        assert_same(&got, texts, s);
    }
    rx.shutdown().await;
}

/// Holds one user's key fetches ([`Hold`]) and, while `dropping`, keeps every delivery from
/// reaching `to` (they stay in its mailbox: nothing acknowledged them).
struct Crossing {
    hold: Arc<Hold>,
    to: &'static str,
    dropping: AtomicBool,
}

impl Tamper for Crossing {
    fn hold(&self, from_user: &str, request: &str) -> Option<Release> {
        self.hold.hold(from_user, request)
    }

    fn delivery(
        &self,
        to_user: &str,
        _to_device: &[u8; 16],
        d: cinder::protocol::Delivery,
    ) -> Vec<cinder::protocol::Delivery> {
        if to_user == self.to && self.dropping.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            vec![d]
        }
    }
}

/// The interleaving that lost messages under load: Bob starts a session with Alice, and
/// while the relay answers his key fetch Alice's first message arrives and Bob answers her
/// handshake. Bob must write on the session he answered rather than start one over it;
/// otherwise every further message Alice sends before she hears from him is undecryptable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_answered_during_our_own_key_fetch_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let hold = Hold::new("bob", "fetch_keys", false);
    let crossing = Arc::new(Crossing {
        hold: Arc::clone(&hold),
        to: "alice",
        dropping: AtomicBool::new(true),
    });
    let c = Arc::clone(&crossing);
    let relay = TestRelay::start_with(tmp.path(), move |cfg| cfg.tamper = Some(c)).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let (mut alice, mut bob) = (Client::open(&dirs[1]), Client::open(&dirs[2]));
    hold.armed.store(true, Ordering::SeqCst);

    bob.handle.send_text("alice", "b1").await.unwrap();
    let flushing = {
        let b = bob.handle.clone();
        tokio::spawn(async move { b.flush().await })
    };
    hold.seen.notified().await;
    send_and_flush(&alice.handle, "bob", "a1").await.unwrap();
    assert_eq!(bob.received().await, vec![Ok("a1".to_owned())]);
    hold.release();
    flushing.await.unwrap().unwrap();

    // Alice has not heard from Bob (the relay keeps his message from her for now), so her
    // next message is still on the session she started.
    send_and_flush(&alice.handle, "bob", "a2").await.unwrap();
    assert_eq!(bob.received().await, vec![Ok("a2".to_owned())]);
    crossing.dropping.store(false, Ordering::SeqCst);
    assert_eq!(alice.received().await, vec![Ok("b1".to_owned())]);
    // And the conversation goes on both ways.
    send_and_flush(&bob.handle, "alice", "b2").await.unwrap();
    assert_eq!(alice.received().await, vec![Ok("b2".to_owned())]);
    send_and_flush(&alice.handle, "bob", "a3").await.unwrap();
    assert_eq!(bob.received().await, vec![Ok("a3".to_owned())]);
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
}
