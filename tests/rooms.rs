//! Rooms and group DMs end to end: real relay in-process, real engines and caches.
//!
//! Covers the must-show list of issue 5: three members talk and a removed member reads nothing
//! sent afterwards (even when a malicious relay forwards it the new ciphertexts); a relay that
//! injects a member, replays an old change or drops a removal is caught; non-moderators can
//! neither invite nor remove; a 500-member room delivers one message to everyone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cinder::crypto::identity::{DeviceId, DeviceKeys, DeviceRole, UserRootKey};
use cinder::crypto::membership::{MembershipOp, OpKind, SignedOp};
use cinder::protocol::{Delivery, DeliveryKind, RoomLog};
use cinder::relay::Tamper;
use cinder::session::{
    MessageKind, RoomKind, RoomRequest, SessionError, SessionEvent, SessionHandle,
};
use common::{TestRelay, engine, network};
use tokio::sync::broadcast;

/// An engine and everything it reported.
struct Member {
    dir: std::path::PathBuf,
    handle: SessionHandle,
    events: broadcast::Receiver<SessionEvent>,
    /// (conversation, sender, text) of text messages.
    texts: Vec<(String, String, String)>,
    /// System lines (membership changes and warnings).
    system: Vec<String>,
    /// Errors of undecryptable deliveries.
    undecryptable: Vec<String>,
}

impl Member {
    fn open(dir: &Path) -> Self {
        let handle = engine(dir);
        let events = handle.subscribe();
        Self {
            dir: dir.to_path_buf(),
            handle,
            events,
            texts: Vec::new(),
            system: Vec::new(),
            undecryptable: Vec::new(),
        }
    }

    /// Syncs and files every event so far.
    async fn pump(&mut self) {
        self.handle.sync().await.unwrap();
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(SessionEvent::Message(m)) if m.kind == MessageKind::System => {
                    self.system.push(m.text)
                }
                Ok(SessionEvent::Message(m)) => self.texts.push((m.conversation, m.sender, m.text)),
                Ok(SessionEvent::Undecryptable { error, .. }) => self.undecryptable.push(error),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => panic!("lost {n} events"),
                Err(_) => break,
            }
        }
    }

    fn said(&self, text: &str) -> bool {
        self.texts.iter().any(|(_, _, t)| t == text)
    }

    async fn send(&self, room: &str, text: &str) {
        self.handle.send_text(room, text).await.unwrap();
        self.handle.flush().await.unwrap();
    }
}

/// A relay that can drop, forward, record and inject deliveries.
#[derive(Default)]
struct Evil {
    /// Drop `RoomOp` deliveries whose op removes someone, for these users (and hide them in
    /// their room logs).
    drop_removals_for: Mutex<Vec<String>>,
    /// Copy every `RoomMessage` delivered to the first user to the second user.
    forward: Mutex<Option<(String, String)>>,
    /// Every `RoomOp` delivery seen, by recipient.
    seen_ops: Mutex<Vec<(String, Delivery)>>,
    /// Extra deliveries to hand to a user with the next delivery they get.
    inject: Mutex<HashMap<String, Vec<Delivery>>>,
    /// For this user, swallow the first copy (the live push) of every membership change and
    /// pairwise message, so a later room message overtakes them; the mailbox keeps them.
    delay_for: Mutex<Option<String>>,
    delayed: Mutex<std::collections::HashSet<u64>>,
}

fn is_removal(op_bytes: &[u8]) -> bool {
    SignedOp::decode(op_bytes).is_ok_and(|o| matches!(o.op.kind, OpKind::Remove { .. }))
}

impl Tamper for Evil {
    fn delivery(&self, to_user: &str, _to_device: &[u8; 16], d: Delivery) -> Vec<Delivery> {
        let mut out = Vec::new();
        if let Some(extra) = self.inject.lock().unwrap().remove(to_user) {
            out.extend(extra);
        }
        if self.delay_for.lock().unwrap().as_deref() == Some(to_user)
            && (d.kind == DeliveryKind::RoomOp as i32 || d.kind == DeliveryKind::Message as i32)
            && self.delayed.lock().unwrap().insert(d.seq)
        {
            return out;
        }
        if d.kind == DeliveryKind::RoomOp as i32 {
            self.seen_ops
                .lock()
                .unwrap()
                .push((to_user.to_owned(), d.clone()));
            if self
                .drop_removals_for
                .lock()
                .unwrap()
                .iter()
                .any(|u| u == to_user)
                && is_removal(&d.payload)
            {
                return out;
            }
        }
        if d.kind == DeliveryKind::RoomMessage as i32
            && let Some((from, to)) = self.forward.lock().unwrap().as_ref()
            && from == to_user
        {
            let mut copy = d.clone();
            // A sequence number the removed member's mailbox never had.
            copy.seq = d.seq + 1_000_000;
            self.inject
                .lock()
                .unwrap()
                .entry(to.clone())
                .or_default()
                .push(copy);
        }
        out.push(d);
        out
    }

    fn room_log(&self, to_user: &str, mut log: RoomLog) -> RoomLog {
        if self
            .drop_removals_for
            .lock()
            .unwrap()
            .iter()
            .any(|u| u == to_user)
        {
            // Withhold the removal and everything after it (the chain must stay unbroken).
            if let Some(i) = log.ops.iter().position(|o| is_removal(o)) {
                log.ops.truncate(i);
                log.more = false;
            }
        }
        log
    }
}

async fn setup(
    root: &Path,
    users: &[&str],
    evil: Option<Arc<Evil>>,
) -> (TestRelay, HashMap<String, Member>) {
    let relay = TestRelay::start_with(root, |c| {
        if let Some(e) = evil {
            c.tamper = Some(e);
        }
    })
    .await;
    let dirs = network(root, &relay, users).await;
    let members = users
        .iter()
        .zip(dirs.iter().skip(1))
        .map(|(u, d)| ((*u).to_owned(), Member::open(d)))
        .collect();
    (relay, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_talk_and_a_removed_member_reads_nothing_after() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Arc::new(Evil::default());
    let (_relay, mut m) = setup(tmp.path(), &["alice", "bob", "carol"], Some(evil.clone())).await;
    let room = m["alice"]
        .handle
        .create_room(
            RoomKind::Room,
            "Ops",
            "on-call",
            &["bob".into(), "carol".into()],
        )
        .await
        .unwrap();
    let id = room.room_id.clone();
    assert_eq!(room.members.len(), 3);

    for u in ["bob", "carol"] {
        m.get_mut(u).unwrap().pump().await;
        let info = m[u].handle.room("Ops").await.unwrap();
        assert_eq!(info.room_id, id, "{u} resolves the room by title");
        assert!(m[u].system.iter().any(|s| s.contains("created")), "{u}");
    }
    for (u, text) in [("alice", "a1"), ("bob", "b1"), ("carol", "c1")] {
        m[u].send(&id, text).await;
    }
    for u in ["alice", "bob", "carol"] {
        m.get_mut(u).unwrap().pump().await;
    }
    for u in ["alice", "bob", "carol"] {
        for (other, text) in [("alice", "a1"), ("bob", "b1"), ("carol", "c1")] {
            if u != other {
                assert!(m[u].said(text), "{u} did not get {text}: {:?}", m[u].texts);
            }
        }
        assert!(
            m[u].undecryptable.is_empty(),
            "{u}: {:?}",
            m[u].undecryptable
        );
    }

    // Carol goes offline. The moderator removes her; from now on the relay (maliciously)
    // forwards carol a copy of everything it delivers to bob, in her next mailbox fetch.
    let carol_dir = m["carol"].dir.clone();
    m["carol"].handle.shutdown().await;
    *evil.forward.lock().unwrap() = Some(("bob".into(), "carol".into()));
    let after = m["alice"]
        .handle
        .change_room(&id, RoomRequest::Remove(vec!["carol".into()]))
        .await
        .unwrap();
    assert_eq!(after.members.len(), 2);
    m.get_mut("bob").unwrap().pump().await;
    m["alice"]
        .send(&id, "secret after removal from alice")
        .await;
    m["bob"].send(&id, "secret after removal from bob").await;
    m.get_mut("alice").unwrap().pump().await;
    m.get_mut("bob").unwrap().pump().await;
    // Something real for carol, so the forwarded copies ride along with it.
    m["bob"].send("carol", "a direct message to carol").await;
    assert!(m["bob"].said("secret after removal from alice"));
    assert!(m["alice"].said("secret after removal from bob"));

    m.insert("carol".into(), Member::open(&carol_dir));
    let carol = m.get_mut("carol").unwrap();
    carol.pump().await;
    assert!(
        carol.said("a direct message to carol"),
        "texts {:?} system {:?} undecryptable {:?}",
        carol.texts,
        carol.system,
        carol.undecryptable
    );
    assert!(
        carol
            .system
            .iter()
            .any(|s| s.contains("removed carol") && s.contains("no longer")),
        "{:?}",
        carol.system
    );
    assert!(
        !carol
            .texts
            .iter()
            .any(|(_, _, t)| t.contains("after removal")),
        "a removed member read a message sent after the removal: {:?}",
        carol.texts
    );
    assert!(
        !carol.undecryptable.is_empty(),
        "the forwarded ciphertexts reached carol's client and must have failed to decrypt"
    );
    // And carol can no longer send there: her client refuses before the relay does.
    let e = carol
        .handle
        .send_text(&id, "still here?")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a member"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_moderators_cannot_invite_or_remove_and_groups_have_no_moderators() {
    let tmp = tempfile::tempdir().unwrap();
    let (_relay, mut m) = setup(tmp.path(), &["alice", "bob", "carol", "dave"], None).await;
    let room = m["alice"]
        .handle
        .create_room(RoomKind::Room, "Ops", "", &["bob".into()])
        .await
        .unwrap();
    m.get_mut("bob").unwrap().pump().await;
    let e = m["bob"]
        .handle
        .change_room(&room.room_id, RoomRequest::Invite(vec!["carol".into()]))
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("only moderators"), "{e}");
    let e = m["bob"]
        .handle
        .change_room(&room.room_id, RoomRequest::Remove(vec!["alice".into()]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only moderators"), "{e}");
    // Nothing changed anywhere.
    m.get_mut("alice").unwrap().pump().await;
    assert_eq!(
        m["alice"].handle.room("Ops").await.unwrap().members.len(),
        2
    );

    // Promotion makes bob able to invite.
    m["alice"]
        .handle
        .change_room("Ops", RoomRequest::Promote("bob".into()))
        .await
        .unwrap();
    m.get_mut("bob").unwrap().pump().await;
    let after = m["bob"]
        .handle
        .change_room("Ops", RoomRequest::Invite(vec!["carol".into()]))
        .await
        .unwrap();
    assert_eq!(after.members.len(), 3);

    // A group DM: anyone adds, nobody removes, members leave.
    let g = m["carol"]
        .handle
        .create_room(RoomKind::Group, "", "", &["dave".into()])
        .await
        .unwrap();
    m.get_mut("dave").unwrap().pump().await;
    let added = m["dave"]
        .handle
        .change_room(&g.room_id, RoomRequest::Invite(vec!["alice".into()]))
        .await
        .unwrap();
    assert_eq!(added.members.len(), 3);
    let e = m["dave"]
        .handle
        .change_room(&g.room_id, RoomRequest::Remove(vec!["carol".into()]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no moderators"), "{e}");
    let left = m["dave"]
        .handle
        .change_room(&g.room_id, RoomRequest::Leave)
        .await
        .unwrap();
    assert_eq!(left.members.len(), 2);
    assert!(left.my_role.is_none());
}

/// An op claiming to be alice's, signed by keys the relay made up.
fn forged_invite(room: &str, seq: u64, prev: [u8; 32], user: &str) -> Vec<u8> {
    let root = UserRootKey::generate().unwrap();
    let device = DeviceKeys::generate().unwrap();
    let cert = root
        .certify(
            "alice",
            DeviceId::random().unwrap(),
            &device,
            0,
            DeviceRole::User,
        )
        .unwrap();
    let op = MembershipOp {
        room_id: room.to_owned(),
        seq,
        prev,
        actor: "alice".into(),
        actor_cert: cert,
        at_ms: 0,
        kind: OpKind::Invite {
            users: vec![user.to_owned()],
        },
    };
    SignedOp::sign(op, &device.signing)
        .unwrap()
        .encode()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_injects_replays_or_drops_membership_changes_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Arc::new(Evil::default());
    let (relay, mut m) = setup(
        tmp.path(),
        &["alice", "bob", "carol", "mallory", "dave"],
        Some(evil.clone()),
    )
    .await;
    let room = m["alice"]
        .handle
        .create_room(RoomKind::Room, "Ops", "", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    let id = room.room_id.clone();
    m.get_mut("bob").unwrap().pump().await;
    m.get_mut("carol").unwrap().pump().await;

    // 1. Injection: the relay hands bob a made-up change adding mallory, signed with keys it
    //    invented, with the right sequence number and chain hash.
    let head = {
        let ops = evil.seen_ops.lock().unwrap();
        let (_, d) = ops.iter().find(|(u, _)| u == "bob").unwrap().clone();
        SignedOp::decode(&d.payload).unwrap()
    };
    let fake = forged_invite(&id, 1, head.hash().unwrap(), "mallory");
    evil.inject.lock().unwrap().insert(
        "bob".into(),
        vec![Delivery {
            seq: 9_000_001,
            kind: DeliveryKind::RoomOp as i32,
            sender_user: "alice".into(),
            sender_device: vec![0; 16],
            message_id: vec![0; 16],
            body: Vec::new(),
            payload: fake,
            server_ts_ms: 0,
            room_id: id.clone(),
        }],
    );
    // Something real for bob, so the injection rides along.
    m["alice"].send(&id, "hello room").await;
    m.get_mut("bob").unwrap().pump().await;
    let bob_view = m["bob"].handle.room(&id).await.unwrap();
    assert!(
        !bob_view.members.iter().any(|x| x.username == "mallory"),
        "an injected member was accepted"
    );
    assert!(
        m["bob"].system.iter().any(|s| s.starts_with('\u{26a0}')),
        "bob was not warned about the forged change: {:?}",
        m["bob"].system
    );
    assert!(m["bob"].said("hello room"));

    // The relay adds mallory to its own routing table behind everyone's back: she gets the
    // ciphertexts but no client ever gives her a key.
    {
        let db = rusqlite::Connection::open(relay.data.join("relay.db")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        db.execute(
            "INSERT INTO room_members (room_id, username, role) VALUES (?1, 'mallory', 0)",
            [&id],
        )
        .unwrap();
    }
    m["alice"].send(&id, "not for mallory").await;
    let mallory = m.get_mut("mallory").unwrap();
    mallory.pump().await;
    assert!(!mallory.said("not for mallory"), "{:?}", mallory.texts);

    // 2. Replay: after carol is removed, the relay re-delivers the old change that added her.
    m["alice"]
        .handle
        .change_room(&id, RoomRequest::Remove(vec!["carol".into()]))
        .await
        .unwrap();
    m.get_mut("bob").unwrap().pump().await;
    let old = {
        let ops = evil.seen_ops.lock().unwrap();
        let (_, d) = ops.iter().find(|(u, _)| u == "bob").unwrap().clone();
        d
    };
    let mut replay = old;
    replay.seq = 9_000_002;
    evil.inject
        .lock()
        .unwrap()
        .insert("bob".into(), vec![replay]);
    m["alice"].send(&id, "after the replay").await;
    m.get_mut("bob").unwrap().pump().await;
    let bob_view = m["bob"].handle.room(&id).await.unwrap();
    assert!(
        !bob_view.members.iter().any(|x| x.username == "carol"),
        "a replayed change brought carol back"
    );
    assert!(m["bob"].said("after the replay"));

    // 3. Dropped removal: dave joins and is removed, and the relay hides the removal from
    //    bob, who stays. Alice's next message carries her log head; bob notices the gap.
    evil.drop_removals_for.lock().unwrap().push("bob".into());
    m["alice"]
        .handle
        .change_room(&id, RoomRequest::Invite(vec!["dave".into()]))
        .await
        .unwrap();
    m.get_mut("bob").unwrap().pump().await;
    m["alice"]
        .handle
        .change_room(&id, RoomRequest::Remove(vec!["dave".into()]))
        .await
        .unwrap();
    m["alice"]
        .send(&id, "the first message after dave left")
        .await;
    let bob = m.get_mut("bob").unwrap();
    bob.pump().await;
    assert!(bob.said("the first message after dave left"));
    let view = bob.handle.room(&id).await.unwrap();
    assert!(
        view.warning.is_some(),
        "bob was not told the relay withholds a change"
    );
    assert!(
        bob.system.iter().any(|s| s.contains("withholding")),
        "{:?}",
        bob.system
    );
    // Bob refuses to send (he would still count dave as a member).
    let e = bob.handle.send_text(&id, "to whom?").await;
    let e = match e {
        Ok(_) => bob.handle.flush().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(e.to_string().contains("withholding"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_member_room_delivers_one_message_to_everyone() {
    const N: usize = 500;
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..N).map(|i| format!("m{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t0 = std::time::Instant::now();
    let (_relay, mut m) = setup(tmp.path(), &refs, None).await;
    eprintln!("500 members: registered in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    let creator = &names[0];
    let others: Vec<String> = names[1..].to_vec();
    let room = m[creator]
        .handle
        .create_room(RoomKind::Room, "Everyone", "", &others)
        .await
        .unwrap();
    assert_eq!(room.members.len(), N);
    m[creator].send(&room.room_id, "hello, all 500").await;
    // Members sync concurrently, as 499 devices would (32 connecting at a time, so the test
    // measures delivery rather than this 2-core machine's login storm).
    let handles: Vec<SessionHandle> = others.iter().map(|u| m[u].handle.clone()).collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for h in handles {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            h.sync().await.unwrap();
            // Close the connection so idle members do not hold relay resources.
            h.shutdown().await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    eprintln!("500 members: delivered and decrypted in {:?}", t0.elapsed());
    let mut got = 0;
    for u in &others {
        let mm = m.get_mut(u).unwrap();
        mm.drain();
        assert!(mm.undecryptable.is_empty(), "{u}: {:?}", mm.undecryptable);
        if mm.said("hello, all 500") {
            got += 1;
        }
    }
    assert_eq!(got, N - 1, "members who decrypted the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_that_overtakes_its_room_and_key_is_not_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = Arc::new(Evil::default());
    let (_relay, mut m) = setup(tmp.path(), &["alice", "bob"], Some(evil.clone())).await;
    // Bob is online; the relay's live pushes of the room's creation and of alice's sender key
    // are lost (as when a push queue overflows), so the room message arrives first.
    m.get_mut("bob").unwrap().pump().await;
    *evil.delay_for.lock().unwrap() = Some("bob".into());
    let room = m["alice"]
        .handle
        .create_room(RoomKind::Room, "Ops", "", &["bob".into()])
        .await
        .unwrap();
    m["alice"]
        .send(&room.room_id, "first words in the room")
        .await;
    let bob = m.get_mut("bob").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !bob.said("first words in the room") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        bob.drain();
    }
    assert!(
        bob.said("first words in the room"),
        "the overtaking message was lost: {:?}",
        bob.undecryptable
    );
    assert!(bob.undecryptable.is_empty(), "{:?}", bob.undecryptable);
    assert!(
        evil.delayed.lock().unwrap().len() >= 2,
        "the pushes were not held back"
    );
}
