//! Ephemeral messages, read receipts and shredding end to end (issue 6): a real relay
//! in-process, real engines and SQLCipher caches.
//!
//! The timer tests run on virtual time: the relay and the engines share a
//! [`Clock::virtual_now`], and [`advance`] jumps it (and every tokio timer) past an expiry or a
//! burn. Nothing sleeps; the tests wait for the engines' `Shredded` events and for a relay
//! sweep that started after the jump.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cinder::clock::Clock;
use cinder::protocol::{Delivery, DeliveryKind};
use cinder::relay::Tamper;
use cinder::session::{
    self, EngineOptions, MessageKind, MessageRecord, MessageState, SendOptions, SessionEvent,
    SessionHandle,
};
use common::{
    TestRelay, advance, all_bytes, contains, engine, engine_at, network, network_at, wait_event,
    wait_shredded,
};

const HOUR: u32 = 3600;
/// Past any one-hour timer, and past the relay sweep that follows it.
const PAST_AN_HOUR: Duration = Duration::from_secs(3600 + 60);

async fn history(h: &SessionHandle, with: &str) -> Vec<MessageRecord> {
    let me = h.account().username.clone();
    let conv = cinder::protocol::names::dm_conversation(&me, with);
    h.history(&conv, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == MessageKind::Text)
        .collect()
}

async fn has(h: &SessionHandle, with: &str, text: &str) -> bool {
    history(h, with).await.iter().any(|m| m.text == text)
}

fn relay_rows(data: &Path, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Records the bodies the relay delivers, so a test can look for them in the relay's files.
#[derive(Default)]
struct Recorder {
    bodies: Mutex<Vec<Vec<u8>>>,
    /// Deliveries to replay to a user on their next delivery.
    replay_to: Mutex<Option<(String, Delivery)>>,
    /// The last `Message` delivery each user got.
    last: Mutex<Vec<(String, Delivery)>>,
}

impl Tamper for Recorder {
    fn delivery(&self, to_user: &str, _dev: &[u8; 16], d: Delivery) -> Vec<Delivery> {
        let mut out = Vec::new();
        if !d.body.is_empty() {
            self.bodies.lock().unwrap().push(d.body.clone());
        }
        if d.kind == DeliveryKind::Message as i32 {
            self.last
                .lock()
                .unwrap()
                .push((to_user.to_owned(), d.clone()));
        }
        let mut r = self.replay_to.lock().unwrap();
        if r.as_ref().is_some_and(|(u, _)| u == to_user)
            && let Some((_, old)) = r.take()
        {
            out.push(old);
        }
        out.push(d);
        out
    }
}

#[tokio::test]
async fn an_hour_message_vanishes_from_both_sides_the_relay_and_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::virtual_now();
    let rec = Arc::new(Recorder::default());
    let r2 = rec.clone();
    let relay = TestRelay::start_with(tmp.path(), |c| {
        c.tamper = Some(r2);
        c.clock = clock;
    })
    .await;
    let dirs = network_at(tmp.path(), &relay, &["alice", "bob", "carol"], clock).await;
    let (alice, bob) = (engine_at(&dirs[1], clock), engine_at(&dirs[2], clock));
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let marker = "EPHEMERAL-MARKER-7f3a9c";
    let opts = SendOptions {
        expire_after: Some(HOUR),
        burn_after: None,
    };
    let q = alice.send_message("bob", marker, opts).await.unwrap();
    assert_eq!(q.timers.expire_after_s, Some(HOUR));
    alice.flush().await.unwrap();
    // Carol never comes online: her copy sits at the relay until its delete-by time.
    alice.send_message("carol", marker, opts).await.unwrap();
    alice.flush().await.unwrap();
    bob.sync().await.unwrap();
    let got = history(&bob, "alice").await;
    let m = got.iter().find(|m| m.text == marker).expect("bob got it");
    assert_eq!(m.timers.expire_after_s, Some(HOUR));
    assert!(m.timers.expire_at_ms.is_some());
    assert!(relay_rows(&relay.data, "SELECT count(*) FROM mailbox WHERE kind = 0") >= 1);

    let after = clock.now_ms() + PAST_AN_HOUR.as_millis() as u64;
    advance(PAST_AN_HOUR).await;
    wait_shredded(&mut alice_events, q.message_id, "alice").await;
    wait_shredded(&mut bob_events, m.message_id, "bob").await;
    assert!(
        !has(&bob, "alice", marker).await,
        "bob kept it past its expiry"
    );
    assert!(
        !has(&alice, "bob", marker).await,
        "alice kept it past its expiry"
    );
    relay.swept_since(after).await;
    assert_eq!(
        relay_rows(&relay.data, "SELECT count(*) FROM mailbox WHERE kind = 0"),
        0,
        "the relay kept an expired mailbox item"
    );
    assert_eq!(
        relay_rows(&relay.data, "SELECT count(*) FROM bodies"),
        0,
        "the relay kept an expired body"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    let mut relay = relay;
    relay.stop().await;
    // No file of either cache or of the relay holds the text or a delivered ciphertext body.
    let bodies = rec.bodies.lock().unwrap().clone();
    assert!(!bodies.is_empty());
    for dir in [&dirs[1], &dirs[2], &relay.data] {
        for (path, bytes) in all_bytes(dir) {
            assert!(
                !contains(&bytes, marker.as_bytes()),
                "{} holds the text",
                path.display()
            );
            for b in &bodies {
                assert!(
                    !contains(&bytes, &b[..64.min(b.len())]),
                    "{} holds a shredded ciphertext",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn burn_on_read_starts_at_first_display_and_burns_for_sender_and_recipient() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::virtual_now();
    let relay = TestRelay::start_with(tmp.path(), |c| c.clock = clock).await;
    let dirs = network_at(tmp.path(), &relay, &["alice", "bob"], clock).await;
    let (alice, bob) = (engine_at(&dirs[1], clock), engine_at(&dirs[2], clock));
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let text = "burn after reading";
    alice
        .send_message(
            "bob",
            text,
            SendOptions {
                expire_after: Some(10 * HOUR),
                burn_after: Some(60),
            },
        )
        .await
        .unwrap();
    alice.flush().await.unwrap();
    bob.sync().await.unwrap();
    let m = history(&bob, "alice")
        .await
        .into_iter()
        .find(|m| m.text == text)
        .unwrap();
    assert_eq!(m.timers.burn_after_s, Some(60));
    assert!(m.timers.burn_at_ms.is_none(), "burning before display");
    // Not displayed yet: it must survive well past its burn time.
    advance(PAST_AN_HOUR).await;
    assert!(has(&bob, "alice", text).await, "burned without being read");
    assert!(has(&alice, "bob", text).await);

    // Display (what `cinder recv` and the UI do) starts the countdown on both sides.
    let before_display = clock.now_ms();
    bob.displayed(&[m.message_id]).await.unwrap();
    let shown = history(&bob, "alice")
        .await
        .into_iter()
        .find(|m| m.text == text)
        .unwrap();
    let burn_at = shown.timers.burn_at_ms.expect("the countdown started");
    let displayed_at = shown.timers.displayed_at_ms.unwrap();
    assert!(
        displayed_at >= before_display,
        "display not dated by the engine's clock"
    );
    assert_eq!(burn_at, displayed_at + 60_000);
    alice.sync().await.unwrap();
    advance(Duration::from_secs(61)).await;
    wait_shredded(&mut bob_events, m.message_id, "bob").await;
    wait_shredded(&mut alice_events, m.message_id, "alice").await;
    assert!(
        !has(&bob, "alice", text).await,
        "bob's read copy did not burn"
    );
    assert!(
        !has(&alice, "bob", text).await,
        "the sender's copy did not burn"
    );
}

#[tokio::test]
async fn an_offline_device_never_shows_an_expired_message_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::virtual_now();
    let relay = TestRelay::start_with(tmp.path(), |c| c.clock = clock).await;
    let dirs = network_at(tmp.path(), &relay, &["alice", "bob"], clock).await;
    let (alice, bob) = (engine_at(&dirs[1], clock), engine_at(&dirs[2], clock));
    let opts = SendOptions {
        expire_after: Some(HOUR),
        burn_after: None,
    };
    alice
        .send_message("bob", "stored then offline", opts)
        .await
        .unwrap();
    alice.flush().await.unwrap();
    bob.sync().await.unwrap();
    assert!(has(&bob, "alice", "stored then offline").await);
    bob.shutdown().await;
    // A second message expires while bob is offline, before he ever fetches it.
    alice
        .send_message("bob", "never fetched", opts)
        .await
        .unwrap();
    alice.flush().await.unwrap();
    advance(PAST_AN_HOUR).await;

    // Reopen: the first thing the engine does is shred what fell due.
    let bob = engine_at(&dirs[2], clock);
    assert!(
        history(&bob, "alice").await.is_empty(),
        "an expired message was shown after restart"
    );
    bob.sync().await.unwrap();
    assert!(
        history(&bob, "alice").await.is_empty(),
        "a message that expired at the relay was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_above_the_network_cap_are_clamped_by_the_sending_client() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(tmp.path(), |c| {
        c.max_expire_secs = Some(60);
        c.max_burn_secs = Some(10);
    })
    .await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let alice = engine(&dirs[1]);
    alice.flush().await.unwrap();
    let p = alice.policy().expect("policy after login");
    assert_eq!((p.max_expire_secs, p.max_burn_secs), (60, 10));
    let q = alice
        .send_message(
            "bob",
            "too long",
            SendOptions {
                expire_after: Some(86_400),
                burn_after: Some(3600),
            },
        )
        .await
        .unwrap();
    assert_eq!(q.timers.expire_after_s, Some(60));
    assert_eq!(q.timers.burn_after_s, Some(10));
    assert_eq!(q.notes.len(), 2, "{:?}", q.notes);
    alice.flush().await.unwrap();

    // The relay's refusal of a send that does not clamp (raw frames, TimerTooLong) is
    // `timers_above_the_network_maximum_are_refused` in tests/relay_rooms.rs.
    let bob = engine(&dirs[2]);
    bob.sync().await.unwrap();
    let m = history(&bob, "alice").await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].timers.expire_after_s, Some(60));
    assert_eq!(m[0].timers.burn_after_s, Some(10));
}

#[tokio::test]
async fn a_sender_clock_a_day_ahead_does_not_extend_a_messages_life() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::virtual_now();
    let relay = TestRelay::start_with(tmp.path(), |c| c.clock = clock).await;
    let dirs = network_at(tmp.path(), &relay, &["alice", "bob"], clock).await;
    let store = session::unlock(&dirs[1], common::PASS).unwrap();
    let alice = session::spawn(
        store,
        EngineOptions {
            clock_offset_ms: 86_400_000,
            clock,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let bob = engine_at(&dirs[2], clock);
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let text = "from the future";
    let q = alice
        .send_message(
            "bob",
            text,
            SendOptions {
                expire_after: Some(HOUR),
                burn_after: None,
            },
        )
        .await
        .unwrap();
    alice.flush().await.unwrap();
    bob.sync().await.unwrap();
    let m = history(&bob, "alice")
        .await
        .into_iter()
        .find(|m| m.text == text)
        .expect("delivered");
    assert!(
        m.sent_at_ms > clock.now_ms() + 86_000_000,
        "the sender's clock was not a day ahead"
    );
    assert!(
        m.timers.expire_at_ms.unwrap() <= clock.now_ms() + u64::from(HOUR) * 1000,
        "expiry follows the sender's clock: {:?}",
        m.timers
    );
    // An hour of (virtual) time later, both copies are gone, not a day later.
    advance(PAST_AN_HOUR).await;
    wait_shredded(&mut bob_events, m.message_id, "bob").await;
    wait_shredded(&mut alice_events, q.message_id, "alice").await;
    assert!(!has(&bob, "alice", text).await);
    assert!(!has(&alice, "bob", text).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_follow_the_network_policy_and_cannot_be_forged() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let r2 = rec.clone();
    let relay = TestRelay::start_with(tmp.path(), |c| c.tamper = Some(r2)).await;
    let dirs = network(tmp.path(), &relay, &["alice", "bob"]).await;
    let (alice, bob) = (engine(&dirs[1]), engine(&dirs[2]));
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let state = |h: SessionHandle, id: [u8; 16]| async move {
        h.history(
            &cinder::protocol::names::dm_conversation("alice", "bob"),
            100,
        )
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.message_id == id)
        .map(|m| m.state)
    };

    // On (the default): displaying sends a receipt; the sender shows "read".
    let id = alice.send_text("bob", "please read").await.unwrap();
    alice.flush().await.unwrap();
    bob.sync().await.unwrap();
    bob.displayed(&[id]).await.unwrap();
    bob.flush().await.unwrap();
    alice.sync().await.unwrap();
    wait_event(
        &mut alice_events,
        "a read receipt while the network allows them",
        |e| match e {
            SessionEvent::StateChanged {
                message_id,
                state: MessageState::Read,
            } if *message_id == id => Some(()),
            _ => None,
        },
    )
    .await;
    assert_eq!(state(alice.clone(), id).await, Some(MessageState::Read));
    // The relay replays bob's receipt (an old ratchet message) on a later message: rejected,
    // nothing changes.
    let receipt = rec
        .last
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(u, _)| u == "alice")
        .map(|(_, d)| d.clone())
        .unwrap();

    // Off: no receipts are sent or shown.
    let admin = engine(&dirs[0]);
    admin.set_read_receipts(false).await.unwrap();
    admin.shutdown().await;
    alice.flush().await.unwrap();
    bob.flush().await.unwrap();
    for (events, who) in [(&mut alice_events, "alice"), (&mut bob_events, "bob")] {
        wait_event(events, &format!("the policy change reaches {who}"), |e| {
            matches!(e, SessionEvent::PolicyChanged(p) if !p.read_receipts).then_some(())
        })
        .await;
    }
    assert!(alice.policy().is_some_and(|p| !p.read_receipts));
    assert!(bob.policy().is_some_and(|p| !p.read_receipts));
    let id2 = alice.send_text("bob", "no receipts now").await.unwrap();
    alice.flush().await.unwrap();
    let mut events = alice.subscribe();
    let mut replayed = receipt;
    replayed.seq += 1_000_000;
    *rec.replay_to.lock().unwrap() = Some(("alice".into(), replayed));
    bob.sync().await.unwrap();
    bob.displayed(&[id2]).await.unwrap();
    bob.flush().await.unwrap();
    // A message from bob so the replayed receipt reaches alice with it.
    bob.send_text("alice", "hello").await.unwrap();
    bob.flush().await.unwrap();
    alice.sync().await.unwrap();
    wait_event(&mut events, "alice rejects the replayed receipt", |e| {
        matches!(e, SessionEvent::Undecryptable { .. }).then_some(())
    })
    .await;
    alice.sync().await.unwrap();
    let st = state(alice.clone(), id2).await;
    assert!(
        matches!(st, Some(MessageState::Sent | MessageState::Delivered)),
        "a receipt appeared while the network forbids them: {st:?}"
    );
}

#[tokio::test]
async fn room_messages_expire_and_burn_for_every_member_and_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::virtual_now();
    let relay = TestRelay::start_with(tmp.path(), |c| c.clock = clock).await;
    let dirs = network_at(tmp.path(), &relay, &["alice", "bob", "carol"], clock).await;
    let (alice, bob, carol) = (
        engine_at(&dirs[1], clock),
        engine_at(&dirs[2], clock),
        engine_at(&dirs[3], clock),
    );
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let room = alice
        .create_room(
            session::RoomKind::Room,
            "Ops",
            "",
            &["bob".into(), "carol".into()],
        )
        .await
        .unwrap();
    let id = room.room_id.clone();
    let texts = |h: SessionHandle, id: String| async move {
        h.history(&id, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == MessageKind::Text)
            .map(|m| (m.message_id, m.text))
            .collect::<Vec<_>>()
    };
    // Room defaults set by the moderator apply to everyone's next message.
    alice.set_timers(&id, Some(HOUR), Some(60)).await.unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(bob.timers(&id).await.unwrap(), (Some(HOUR), Some(60)));
    let q = bob
        .send_message(&id, "burns in the room", SendOptions::default())
        .await
        .unwrap();
    assert_eq!(q.timers.burn_after_s, Some(60));
    bob.flush().await.unwrap();
    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert!(
        texts(alice.clone(), id.clone())
            .await
            .iter()
            .any(|(m, _)| *m == q.message_id)
    );
    // Alice reads it; her copy burns, and bob's (the sender's) too. Carol has not read it.
    alice.displayed(&[q.message_id]).await.unwrap();
    bob.sync().await.unwrap();
    advance(Duration::from_secs(61)).await;
    wait_shredded(&mut alice_events, q.message_id, "alice (who read it)").await;
    wait_shredded(&mut bob_events, q.message_id, "bob (the sender)").await;
    assert!(
        texts(alice.clone(), id.clone()).await.is_empty()
            && texts(bob.clone(), id.clone()).await.is_empty(),
        "the read copy and the sender's copy did not burn"
    );
    assert!(
        texts(carol.clone(), id.clone())
            .await
            .iter()
            .any(|(m, _)| *m == q.message_id),
        "carol's unread copy burned before she read it"
    );
}
