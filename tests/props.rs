//! Property tests of the pairwise Double Ratchet, full PQXDH sessions and Sender Keys under
//! random loss, reordering and duplication, plus the skip/jump limits, eviction of stored keys,
//! tampering, and round trips of the secret state through `to_secret_bytes`/`from_secret_bytes`.
//!
//! The network model: a conversation is a script of turns. In each turn one side sends 1..20
//! messages (the responder only once it can, i.e. after it has received something; otherwise the
//! initiator sends). Every message gets 0 copies (lost), 1 copy, or 2..3 copies (duplicated); every
//! copy gets a delay in turns (held back, so it may arrive after later turns and DH ratchet steps)
//! and a random order key (so everything arriving in the same turn is shuffled). Copies still in
//! flight after the last turn are delivered at the end. Scripts stay below [`MAX_SKIP`] and
//! [`MAX_STORED_SKIPPED`], so every message that arrives at all must decrypt; the limits and the
//! eviction of the oldest stored keys are tested on their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use cinder::crypto::CryptoError;
use cinder::crypto::handshake::{self, PairwiseMessage, Session};
use cinder::crypto::identity::{
    DeviceCertificate, DeviceId, DeviceKeys, DeviceRole, RootPublicKey, UserRootKey,
};
use cinder::crypto::prekeys::{DevicePrekeys, PrekeyBundle};
use cinder::crypto::primitives::{self, DhKeyPair, Secret32};
use cinder::crypto::ratchet::{
    Header, MAX_SKIP, MAX_STORED_SKIPPED, RatchetMessage, RatchetState, SKIPPED_KEY_TTL,
};
use cinder::crypto::sender_keys::{
    MAX_JUMP, MAX_STORED_KEYS, ReceivedSenderKey, SenderKeyDistribution, SenderKeyMessage,
    SenderKeyState,
};

// ---------------------------------------------------------------------------------------------
// Parties
// ---------------------------------------------------------------------------------------------

/// One end of a pairwise channel, as the conversation simulation sees it.
trait Peer: Sized {
    type Msg: Clone + PartialEq + Debug;
    fn can_send(&self) -> bool;
    fn send(&mut self, pt: &[u8]) -> Result<Self::Msg, CryptoError>;
    fn recv(&mut self, msg: &Self::Msg, now: u64) -> Result<Vec<u8>, CryptoError>;
    /// The message through its wire encoding.
    fn wire(msg: &Self::Msg) -> Self::Msg;
    fn header(msg: &Self::Msg) -> Header;
    fn stored_skipped(&self) -> Option<usize>;
    /// A copy restored from the serialised secret state.
    fn reload(&self) -> Self;
}

const AD: &[u8] = b"DIK_A || DIK_B || H(cert_A) || H(cert_B)";

fn ratchet_pair() -> (RatchetState, RatchetState) {
    let sk = Secret32::random().unwrap();
    let bob_kp = DhKeyPair::generate().unwrap();
    let alice = RatchetState::init_initiator(&sk, bob_kp.public(), AD.to_vec()).unwrap();
    let bob = RatchetState::init_responder(&sk, bob_kp, AD.to_vec());
    (alice, bob)
}

fn reload_ratchet(s: &RatchetState) -> RatchetState {
    let bytes = s.to_secret_bytes().unwrap();
    let restored = RatchetState::from_secret_bytes(&bytes).unwrap();
    assert_eq!(
        *restored.to_secret_bytes().unwrap(),
        *bytes,
        "ratchet state re-encodes differently"
    );
    assert_eq!(restored.can_send(), s.can_send());
    assert_eq!(restored.stored_skipped(), s.stored_skipped());
    assert_eq!(restored.associated_data(), s.associated_data());
    restored
}

impl Peer for RatchetState {
    type Msg = RatchetMessage;

    fn can_send(&self) -> bool {
        RatchetState::can_send(self)
    }

    fn send(&mut self, pt: &[u8]) -> Result<RatchetMessage, CryptoError> {
        self.encrypt(pt)
    }

    fn recv(&mut self, msg: &RatchetMessage, now: u64) -> Result<Vec<u8>, CryptoError> {
        self.decrypt(msg, now)
    }

    fn wire(msg: &RatchetMessage) -> RatchetMessage {
        RatchetMessage::decode(&msg.encode().unwrap()).unwrap()
    }

    fn header(msg: &RatchetMessage) -> Header {
        msg.header
    }

    fn stored_skipped(&self) -> Option<usize> {
        Some(RatchetState::stored_skipped(self))
    }

    fn reload(&self) -> Self {
        reload_ratchet(self)
    }
}

/// The responder before the first initial message arrived.
struct Responder {
    keys: DeviceKeys,
    cert: DeviceCertificate,
    prekeys: DevicePrekeys,
    peer_root: RootPublicKey,
}

enum SessionPeer {
    Live(Box<Session>),
    Waiting(Box<Responder>),
}

fn session_pair(with_otk: bool) -> (SessionPeer, SessionPeer) {
    let alice_root = UserRootKey::generate().unwrap();
    let alice_keys = DeviceKeys::generate().unwrap();
    let alice_cert = alice_root
        .certify(
            "alice",
            DeviceId::random().unwrap(),
            &alice_keys,
            1,
            DeviceRole::User,
        )
        .unwrap();
    let bob_root = UserRootKey::generate().unwrap();
    let bob_keys = DeviceKeys::generate().unwrap();
    let bob_cert = bob_root
        .certify(
            "bob",
            DeviceId::random().unwrap(),
            &bob_keys,
            1,
            DeviceRole::User,
        )
        .unwrap();
    let mut prekeys = DevicePrekeys::new(&bob_keys.signing, 1).unwrap();
    let otk = prekeys.generate_one_time(1).unwrap();
    let pq = prekeys
        .generate_pq_one_time(&bob_keys.signing, 1, 1)
        .unwrap();
    let bundle = PrekeyBundle {
        cert: bob_cert.clone(),
        signed_prekey: prekeys.current_signed_prekey(&bob_keys.signing).unwrap(),
        one_time_prekey: with_otk.then_some(otk[0]),
        pq_prekey: pq[0].clone(),
    };
    let alice = handshake::initiate(
        &alice_keys,
        &alice_cert,
        &bob_root.public(),
        "bob",
        &bundle,
        &[],
        1,
    )
    .unwrap();
    let bob = Responder {
        keys: bob_keys,
        cert: bob_cert,
        prekeys,
        peer_root: alice_root.public(),
    };
    (
        SessionPeer::Live(Box::new(alice)),
        SessionPeer::Waiting(Box::new(bob)),
    )
}

impl Peer for SessionPeer {
    type Msg = PairwiseMessage;

    fn can_send(&self) -> bool {
        matches!(self, Self::Live(_))
    }

    fn send(&mut self, pt: &[u8]) -> Result<PairwiseMessage, CryptoError> {
        match self {
            Self::Live(s) => s.encrypt(pt),
            Self::Waiting(_) => Err(CryptoError::UnknownKey),
        }
    }

    fn recv(&mut self, msg: &PairwiseMessage, now: u64) -> Result<Vec<u8>, CryptoError> {
        match self {
            Self::Live(s) => {
                // Only one handshake exists here, so every message belongs to the session.
                assert!(
                    s.accepts(msg),
                    "session does not accept its own peer's message"
                );
                s.decrypt(msg, now)
            }
            Self::Waiting(r) => {
                let PairwiseMessage::Initial(i) = msg else {
                    return Err(CryptoError::UnknownKey);
                };
                let (session, pt) = handshake::respond(
                    &r.keys,
                    &r.cert,
                    &mut r.prekeys,
                    &r.peer_root,
                    &[],
                    i,
                    now,
                )?;
                *self = Self::Live(Box::new(session));
                Ok(pt)
            }
        }
    }

    fn wire(msg: &PairwiseMessage) -> PairwiseMessage {
        PairwiseMessage::decode(&msg.encode().unwrap()).unwrap()
    }

    fn header(msg: &PairwiseMessage) -> Header {
        match msg {
            PairwiseMessage::Normal(m) => m.header,
            PairwiseMessage::Initial(i) => i.message.header,
        }
    }

    fn stored_skipped(&self) -> Option<usize> {
        None
    }

    fn reload(&self) -> Self {
        match self {
            Self::Live(s) => {
                let bytes = s.to_secret_bytes().unwrap();
                let restored = Session::from_secret_bytes(&bytes).unwrap();
                assert_eq!(
                    *restored.to_secret_bytes().unwrap(),
                    *bytes,
                    "session re-encodes differently"
                );
                assert_eq!(restored.is_pending(), s.is_pending());
                assert_eq!(restored.peer_device(), s.peer_device());
                Self::Live(Box::new(restored))
            }
            Self::Waiting(r) => Self::Waiting(Box::new(Responder {
                keys: r.keys.clone(),
                cert: r.cert.clone(),
                prekeys: DevicePrekeys::from_secret_bytes(&r.prekeys.to_secret_bytes().unwrap())
                    .unwrap(),
                peer_root: r.peer_root,
            })),
        }
    }
}

/// A peer plus, for the rest of the current turn, a copy restored from its serialised state.
/// Both see the same operations and must behave identically; at the end of the turn the restored
/// copy replaces the original, so the conversation continues on deserialised state.
///
/// (Only within one turn: a DH ratchet step draws a fresh key pair, so the two copies would send
/// differently after their next reply. Within a turn the receiving side does not send, so no
/// message that depends on the fresh key can arrive.)
struct Twin<P: Peer> {
    main: P,
    restored: Option<P>,
}

impl<P: Peer> Twin<P> {
    fn new(p: P) -> Self {
        Self {
            main: p,
            restored: None,
        }
    }

    fn reload(&mut self) {
        self.restored = Some(self.main.reload());
    }

    fn end_turn(&mut self) {
        if let Some(r) = self.restored.take() {
            self.main = r;
        }
    }

    fn send(&mut self, pt: &[u8]) -> Result<P::Msg, TestCaseError> {
        let m = self
            .main
            .send(pt)
            .map_err(|e| TestCaseError::fail(format!("send failed: {e:?}")))?;
        if let Some(r) = &mut self.restored {
            let m2 = r.send(pt);
            prop_assert_eq!(
                m2.as_ref().ok(),
                Some(&m),
                "restored state sends differently"
            );
        }
        Ok(m)
    }

    fn recv(
        &mut self,
        msg: &P::Msg,
        now: u64,
    ) -> Result<Result<Vec<u8>, CryptoError>, TestCaseError> {
        let r = self.main.recv(msg, now);
        if let Some(restored) = &mut self.restored {
            let r2 = restored.recv(msg, now);
            prop_assert_eq!(
                format!("{r:?}"),
                format!("{r2:?}"),
                "restored state receives differently"
            );
        }
        Ok(r)
    }
}

// ---------------------------------------------------------------------------------------------
// The pairwise conversation simulation
// ---------------------------------------------------------------------------------------------

/// One copy of a message on the network: delay in turns and order key.
type NetCopy = (u8, u16);

#[derive(Clone, Debug)]
struct Turn {
    /// The responder (B) wants to send; falls back to A while B cannot send yet.
    from_b: bool,
    /// Per message: its copies (empty = lost).
    msgs: Vec<Vec<NetCopy>>,
    reload_a: bool,
    reload_b: bool,
}

fn copies() -> impl Strategy<Value = Vec<NetCopy>> {
    let delay = prop_oneof![6 => Just(0u8), 3 => 1u8..=3, 1 => 4u8..=12];
    let copy = (delay, any::<u16>());
    prop_oneof![
        2 => Just(Vec::new()),
        12 => vec(copy.clone(), 1..=1),
        2 => vec(copy, 2..=3),
    ]
}

fn turn() -> impl Strategy<Value = Turn> {
    (
        any::<bool>(),
        vec(copies(), 1..=20),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(from_b, msgs, reload_a, reload_b)| Turn {
            from_b,
            msgs,
            reload_a,
            reload_b,
        })
}

fn script(max_turns: usize) -> impl Strategy<Value = Vec<Turn>> {
    vec(turn(), 1..=max_turns)
}

struct Sent<M> {
    msg: M,
    pt: Vec<u8>,
    to: usize,
    header: Header,
}

#[derive(Default, Debug)]
struct Stats {
    sent: usize,
    delivered: usize,
    lost: usize,
    duplicates: usize,
    duplicate_errors: HashMap<String, usize>,
}

struct Conversation<P: Peer> {
    /// 0 = A (initiator), 1 = B (responder).
    ends: [Twin<P>; 2],
    sent: Vec<Sent<P::Msg>>,
    done: Vec<bool>,
    /// Ratchet keys (sender chains) each side has decrypted from, and the newest one.
    seen: [HashSet<[u8; 32]>; 2],
    latest: [Option<[u8; 32]>; 2],
    stats: Stats,
}

impl<P: Peer> Conversation<P> {
    fn deliver(&mut self, idx: usize, now: u64) -> Result<(), TestCaseError> {
        let s = &self.sent[idx];
        let to = s.to;
        let wire = P::wire(&s.msg);
        let result = self.ends[to].recv(&wire, now)?;
        let dh = s.header.dh;
        if self.done[idx] {
            self.stats.duplicates += 1;
            match result {
                Ok(pt) => {
                    prop_assert!(
                        false,
                        "message #{} ({:?}) decrypted a second time to {:?}",
                        idx,
                        s.header,
                        String::from_utf8_lossy(&pt)
                    );
                }
                Err(e) => {
                    if self.latest[to] == Some(dh) {
                        prop_assert!(
                            matches!(e, CryptoError::Replay),
                            "duplicate of #{} in the current chain: {:?}",
                            idx,
                            e
                        );
                    }
                    *self
                        .stats
                        .duplicate_errors
                        .entry(format!(
                            "{} chain: {e:?}",
                            if self.latest[to] == Some(dh) {
                                "current"
                            } else {
                                "older"
                            }
                        ))
                        .or_default() += 1;
                }
            }
        } else {
            match result {
                Ok(pt) => prop_assert_eq!(
                    &pt,
                    &s.pt,
                    "message #{} decrypted to the wrong plaintext",
                    idx
                ),
                Err(e) => prop_assert!(
                    false,
                    "first delivery of #{} ({:?}, to {}) failed: {:?}",
                    idx,
                    s.header,
                    to,
                    e
                ),
            }
            self.done[idx] = true;
            self.stats.delivered += 1;
            if self.seen[to].insert(dh) {
                self.latest[to] = Some(dh);
            }
        }
        Ok(())
    }

    /// Exactly the keys of messages that were skipped over and never arrived are stored.
    fn check_stored_skipped(&self) -> Result<(), TestCaseError> {
        for to in 0..2 {
            let Some(stored) = self.ends[to].main.stored_skipped() else {
                continue;
            };
            let mut max_n: HashMap<[u8; 32], u32> = HashMap::new();
            for (s, _) in self
                .sent
                .iter()
                .zip(&self.done)
                .filter(|(s, done)| s.to == to && **done)
            {
                let e = max_n.entry(s.header.dh).or_insert(s.header.n);
                *e = (*e).max(s.header.n);
            }
            let expected = self
                .sent
                .iter()
                .zip(&self.done)
                .filter(|(s, done)| s.to == to && !**done)
                .filter(|(s, _)| match max_n.get(&s.header.dh) {
                    // Never ratcheted to that chain: nothing of it is known.
                    None => false,
                    // An older chain: skipped up to its full length when the next one came.
                    Some(_) if self.latest[to] != Some(s.header.dh) => true,
                    Some(&m) => s.header.n < m,
                })
                .count();
            prop_assert_eq!(stored, expected, "stored skipped keys of side {}", to);
        }
        Ok(())
    }
}

fn converse<P: Peer>(a: P, b: P, turns: &[Turn], reload: bool) -> Result<Stats, TestCaseError> {
    let mut c = Conversation {
        ends: [Twin::new(a), Twin::new(b)],
        sent: Vec::new(),
        done: Vec::new(),
        seen: [HashSet::new(), HashSet::new()],
        latest: [None, None],
        stats: Stats::default(),
    };
    // The responder cannot send before it has received something.
    prop_assert!(!c.ends[1].main.can_send());
    prop_assert!(matches!(
        c.ends[1].main.send(b"too early"),
        Err(CryptoError::UnknownKey)
    ));
    prop_assert!(!c.ends[1].main.can_send());

    // (due turn, order key, message index)
    let mut flight: Vec<(usize, u16, usize)> = Vec::new();
    for (t, turn) in turns.iter().enumerate() {
        let now = t as u64;
        if reload {
            if turn.reload_a {
                c.ends[0].reload();
            }
            if turn.reload_b {
                c.ends[1].reload();
            }
        }
        let from = usize::from(turn.from_b && c.ends[1].main.can_send());
        for msg_copies in &turn.msgs {
            let idx = c.sent.len();
            let pt = format!("message {idx} (turn {t}, from {from})").into_bytes();
            let msg = c.ends[from].send(&pt)?;
            c.sent.push(Sent {
                header: P::header(&msg),
                msg,
                pt,
                to: 1 - from,
            });
            c.done.push(false);
            if msg_copies.is_empty() {
                c.stats.lost += 1;
            }
            for &(delay, key) in msg_copies {
                flight.push((t + usize::from(delay), key, idx));
            }
        }
        let mut due: Vec<_> = flight.iter().filter(|f| f.0 <= t).copied().collect();
        flight.retain(|f| f.0 > t);
        due.sort_by_key(|&(d, key, idx)| (key, d, idx));
        for (_, _, idx) in due {
            c.deliver(idx, now)?;
        }
        for e in &mut c.ends {
            e.end_turn();
        }
    }
    let now = turns.len() as u64;
    flight.sort();
    for (_, _, idx) in flight {
        c.deliver(idx, now)?;
    }
    c.stats.sent = c.sent.len();

    // Every message with at least one copy arrived and decrypted exactly once.
    prop_assert_eq!(c.stats.delivered, c.stats.sent - c.stats.lost);
    prop_assert_eq!(
        c.ends[1].main.can_send(),
        c.done.iter().zip(&c.sent).any(|(d, s)| *d && s.to == 1)
    );
    c.check_stored_skipped()?;

    // The session is healthy in both directions afterwards.
    let pt = b"final A -> B".to_vec();
    let m = c.ends[0].send(&pt)?;
    prop_assert_eq!(c.ends[1].recv(&P::wire(&m), now)?.ok(), Some(pt));
    if c.ends[1].main.can_send() {
        let pt = b"final B -> A".to_vec();
        let m = c.ends[1].send(&pt)?;
        prop_assert_eq!(c.ends[0].recv(&P::wire(&m), now)?.ok(), Some(pt));
        let pt = b"final A -> B again".to_vec();
        let m = c.ends[0].send(&pt)?;
        prop_assert_eq!(c.ends[1].recv(&P::wire(&m), now)?.ok(), Some(pt));
    }
    Ok(c.stats)
}

// ---------------------------------------------------------------------------------------------
// Sender keys simulation
// ---------------------------------------------------------------------------------------------

const ROOM: &[u8] = b"room-props";
const SENDER: DeviceId = DeviceId([7; 16]);

fn sk_plaintext(i: u32) -> Vec<u8> {
    format!("room message {i}").into_bytes()
}

fn sk_body(i: u32) -> [u8; 32] {
    primitives::sha256(&[b"body", &i.to_be_bytes()])
}

#[derive(Clone, Debug)]
enum Tamper {
    /// Flip one ciphertext bit.
    Ciphertext(Index),
    /// Verify against another body hash (one bit flipped).
    Body(Index),
    /// Flip one signature bit.
    Signature(Index),
    /// Claim another iteration.
    Iteration(u32),
    /// Claim another sending device.
    Sender(u8),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        any::<Index>().prop_map(Tamper::Ciphertext),
        any::<Index>().prop_map(Tamper::Body),
        any::<Index>().prop_map(Tamper::Signature),
        (1u32..).prop_map(Tamper::Iteration),
        (1u8..).prop_map(Tamper::Sender),
    ]
}

#[derive(Clone, Debug)]
struct SkReceiver {
    /// Installed from `distribution()` when the sender's next iteration is this.
    install_at: usize,
    /// Per message: order keys of its copies (empty = lost).
    copies: Vec<Vec<u16>>,
    /// Per message: a forgery delivered just before its first copy.
    tamper: Vec<Option<Tamper>>,
    /// Per message: round-trip the receiver's state before its first copy.
    reload: Vec<bool>,
}

#[derive(Clone, Debug)]
struct SkCase {
    n: usize,
    sender_reload: Vec<bool>,
    receivers: Vec<SkReceiver>,
}

fn sk_copies() -> impl Strategy<Value = Vec<u16>> {
    prop_oneof![
        2 => Just(Vec::new()),
        12 => vec(any::<u16>(), 1..=1),
        2 => vec(any::<u16>(), 2..=3),
    ]
}

fn sk_case(max_n: usize) -> impl Strategy<Value = SkCase> {
    (1..=max_n).prop_flat_map(|n| {
        let receiver = (
            0..=n,
            vec(sk_copies(), n),
            vec(option::weighted(0.1, tamper()), n),
            vec(prop::bool::weighted(0.05), n),
        )
            .prop_map(|(install_at, copies, tamper, reload)| SkReceiver {
                install_at,
                copies,
                tamper,
                reload,
            });
        (
            Just(n),
            vec(prop::bool::weighted(0.05), n),
            vec(receiver, 1..=4),
        )
            .prop_map(|(n, sender_reload, receivers)| SkCase {
                n,
                sender_reload,
                receivers,
            })
    })
}

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn reload_received(r: &ReceivedSenderKey) -> ReceivedSenderKey {
    let bytes = r.to_secret_bytes().unwrap();
    let restored = ReceivedSenderKey::from_secret_bytes(&bytes).unwrap();
    assert_eq!(
        *restored.to_secret_bytes().unwrap(),
        *bytes,
        "received sender key re-encodes differently"
    );
    assert_eq!(restored.stored_keys(), r.stored_keys());
    assert_eq!(restored.distribution_id(), r.distribution_id());
    restored
}

fn reload_sender(s: &SenderKeyState) -> SenderKeyState {
    let bytes = s.to_secret_bytes().unwrap();
    let restored = SenderKeyState::from_secret_bytes(&bytes).unwrap();
    assert_eq!(
        *restored.to_secret_bytes().unwrap(),
        *bytes,
        "sender key state re-encodes differently"
    );
    assert_eq!(restored.iteration(), s.iteration());
    restored
}

fn install(s: &SenderKeyState) -> ReceivedSenderKey {
    let d = SenderKeyDistribution::decode(&s.distribution().encode().unwrap()).unwrap();
    assert_eq!(d.iteration, s.iteration());
    ReceivedSenderKey::from_distribution(&d)
}

fn forged(
    msg: &SenderKeyMessage,
    body: &[u8; 32],
    t: &Tamper,
) -> (SenderKeyMessage, [u8; 32], &'static str) {
    let mut m = msg.clone();
    let mut b = *body;
    let expect = match t {
        Tamper::Ciphertext(i) => {
            let bit = i.index(m.ciphertext.len() * 8);
            flip(&mut m.ciphertext, bit);
            "BadSignature"
        }
        Tamper::Body(i) => {
            flip(&mut b, i.index(256));
            "BadSignature"
        }
        Tamper::Signature(i) => {
            flip(&mut m.signature, i.index(512));
            "BadSignature"
        }
        Tamper::Iteration(x) => {
            m.iteration ^= x;
            "BadSignature"
        }
        Tamper::Sender(x) => {
            m.sender_device.0[0] ^= x;
            "UnknownKey"
        }
    };
    (m, b, expect)
}

fn sender_key_stream(case: &SkCase, reload: bool) -> Result<(), TestCaseError> {
    let n = case.n;
    let mut sender = SenderKeyState::new(ROOM, SENDER, 0).unwrap();
    // Never reloaded: what the sender must keep producing.
    let mut reference = reload.then(|| reload_sender(&sender));
    let mut msgs = Vec::with_capacity(n);
    let mut receivers: Vec<Option<ReceivedSenderKey>> =
        case.receivers.iter().map(|_| None).collect();
    for i in 0..=n {
        for (slot, plan) in receivers.iter_mut().zip(&case.receivers) {
            if plan.install_at == i {
                *slot = Some(install(&sender));
            }
        }
        if i == n {
            break;
        }
        if reload && case.sender_reload[i] {
            sender = reload_sender(&sender);
        }
        let it = i as u32;
        prop_assert_eq!(sender.iteration(), it);
        let m = sender.encrypt(&sk_plaintext(it), &sk_body(it)).unwrap();
        prop_assert_eq!(m.iteration, it);
        if let Some(r) = &mut reference {
            prop_assert_eq!(
                &r.encrypt(&sk_plaintext(it), &sk_body(it)).unwrap(),
                &m,
                "restored sender key sends differently"
            );
        }
        msgs.push(SenderKeyMessage::decode(&m.encode().unwrap()).unwrap());
    }

    for (plan, recv) in case.receivers.iter().zip(receivers) {
        let mut recv = recv.unwrap();
        // Never reloaded: the restored receiver must behave exactly like it.
        let mut reference = reload.then(|| reload_received(&recv));
        let mut order: Vec<(u16, usize)> = plan
            .copies
            .iter()
            .enumerate()
            .flat_map(|(i, keys)| keys.iter().map(move |&k| (k, i)))
            .collect();
        order.sort();
        let mut done = vec![false; n];
        let mut attempted = vec![false; n];
        for (_, i) in order {
            let it = i as u32;
            let body = sk_body(it);
            if !attempted[i] {
                attempted[i] = true;
                if reload && plan.reload[i] {
                    recv = reload_received(&recv);
                }
                if let Some(t) = &plan.tamper[i] {
                    let (bad, bad_body, expect) = forged(&msgs[i], &body, t);
                    let before = recv.to_secret_bytes().unwrap();
                    let r = recv.decrypt(&bad, &bad_body);
                    prop_assert!(
                        r.as_ref().is_err_and(|e| format!("{e:?}") == expect),
                        "forgery {:?} of #{}: {:?}",
                        t,
                        i,
                        r
                    );
                    prop_assert_eq!(
                        &*recv.to_secret_bytes().unwrap(),
                        &*before,
                        "failed decryption changed the state"
                    );
                }
            }
            let r = recv.decrypt(&msgs[i], &body);
            if let Some(reference) = &mut reference {
                let r2 = reference.decrypt(&msgs[i], &body);
                prop_assert_eq!(format!("{r:?}"), format!("{r2:?}"));
            }
            if i < plan.install_at {
                prop_assert!(
                    matches!(r, Err(CryptoError::Replay)),
                    "#{} predates installation at {}: {:?}",
                    i,
                    plan.install_at,
                    r
                );
            } else if done[i] {
                prop_assert!(
                    matches!(r, Err(CryptoError::Replay)),
                    "duplicate #{}: {:?}",
                    i,
                    r
                );
            } else {
                prop_assert_eq!(
                    r.map_err(|e| format!("{e:?}")),
                    Ok(sk_plaintext(it)),
                    "#{} (installed at {})",
                    i,
                    plan.install_at
                );
                done[i] = true;
            }
        }
        // Exactly the keys of skipped, never-delivered messages are stored.
        let high = (0..n).rev().find(|&i| done[i]);
        let expected = high.map_or(0, |h| (plan.install_at..h).filter(|&i| !done[i]).count());
        prop_assert_eq!(recv.stored_keys(), expected);
        if let Some(reference) = &reference {
            prop_assert_eq!(
                &*recv.to_secret_bytes().unwrap(),
                &*reference.to_secret_bytes().unwrap()
            );
        }
        // Still working afterwards.
        let last = sender.encrypt(b"after", &[9; 32]).unwrap();
        prop_assert_eq!(recv.decrypt(&last, &[9; 32]).ok(), Some(b"after".to_vec()));
    }
    Ok(())
}

/// One long sender-key stream, shared by the jump-limit cases: its distribution at iteration 0
/// and the messages at the iterations the cases use.
struct JumpStream {
    distribution: Vec<u8>,
    msgs: HashMap<u32, SenderKeyMessage>,
}

/// Receivers start at one of the first `EARLY` iterations.
const EARLY: u32 = 40;

fn jump_stream() -> &'static JumpStream {
    static STREAM: OnceLock<JumpStream> = OnceLock::new();
    STREAM.get_or_init(|| {
        let mut s = SenderKeyState::new(ROOM, SENDER, 0).unwrap();
        let distribution = s.distribution().encode().unwrap().to_vec();
        let keep_from = MAX_JUMP - MAX_STORED_KEYS as u32 - 1;
        let mut msgs = HashMap::new();
        for i in 0..=MAX_JUMP + EARLY + 50 {
            let m = s.encrypt(&sk_plaintext(i), &sk_body(i)).unwrap();
            if i < EARLY || i >= keep_from {
                msgs.insert(i, m);
            }
        }
        JumpStream { distribution, msgs }
    })
}

fn ratchet_send(s: &mut RatchetState, pt: &str) -> (RatchetMessage, Vec<u8>) {
    let pt = pt.as_bytes().to_vec();
    (s.encrypt(&pt).unwrap(), pt)
}

/// Exchanges `rounds` messages each way, all delivered.
fn ping_pong(a: &mut RatchetState, b: &mut RatchetState, rounds: usize) {
    for r in 0..rounds {
        let (m, pt) = ratchet_send(a, &format!("ping {r}"));
        assert_eq!(b.decrypt(&m, 0).unwrap(), pt);
        let (m, pt) = ratchet_send(b, &format!("pong {r}"));
        assert_eq!(a.decrypt(&m, 0).unwrap(), pt);
    }
}

/// How far beyond a limit: 1..=50, with the boundary 1 (and 50) drawn often.
fn over_by() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(1u32), 1 => Just(50u32), 4 => 1u32..=50]
}

fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// 1. A random conversation with loss, holding back, shuffling and duplication: every
    /// message that arrives decrypts once to its own plaintext, duplicates are errors (Replay in
    /// the current chain), exactly the skipped keys are stored, and the session stays healthy.
    #[test]
    fn ratchet_conversation_under_loss_reorder_duplication(turns in script(30)) {
        let (a, b) = ratchet_pair();
        converse(a, b, &turns, false)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// 4. A room stream to several receivers installed at different iterations, with loss,
    /// shuffling, duplication and forgeries.
    #[test]
    fn sender_keys_under_loss_reorder_duplication(case in sk_case(120)) {
        sender_key_stream(&case, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// 2. Flipping any single bit of a message's header or ciphertext is an error that leaves
    /// the state byte-for-byte unchanged; the genuine message and the rest still decrypt.
    #[test]
    fn ratchet_single_bit_flips_fail_without_state_change(
        rounds in 0usize..4,
        from_b in any::<bool>(),
        n in 1usize..8,
        target in any::<Index>(),
        delivered_first in vec(any::<bool>(), 8),
        in_header in any::<bool>(),
        bit in any::<Index>(),
    ) {
        let (mut a, mut b) = ratchet_pair();
        ping_pong(&mut a, &mut b, rounds);
        let (x, y) = if from_b && b.can_send() { (&mut b, &mut a) } else { (&mut a, &mut b) };
        let msgs: Vec<_> = (0..n).map(|i| ratchet_send(x, &format!("burst {i}"))).collect();
        let j = target.index(n);
        for (i, (m, pt)) in msgs.iter().enumerate() {
            if i != j && delivered_first[i] {
                prop_assert_eq!(&y.decrypt(m, 0).unwrap(), pt);
            }
        }
        let (m, pt) = &msgs[j];
        let mut bytes = m.encode().unwrap();
        let (region, bit) = if in_header {
            ("header", bit.index(40 * 8))
        } else {
            ("ciphertext", 44 * 8 + bit.index(m.ciphertext.len() * 8))
        };
        flip(&mut bytes, bit);
        let bad = RatchetMessage::decode(&bytes).unwrap();
        prop_assert_ne!(&bad, m);
        let before = y.to_secret_bytes().unwrap();
        let r = y.decrypt(&bad, 0);
        prop_assert!(r.is_err(), "{} bit {} flipped: decrypted to {:?}", region, bit, r);
        if !in_header {
            prop_assert!(matches!(r, Err(CryptoError::Integrity)), "{:?}", r);
        }
        prop_assert_eq!(&*y.to_secret_bytes().unwrap(), &*before, "failed decryption changed the state");
        prop_assert_eq!(&y.decrypt(m, 0).unwrap(), pt);
        prop_assert!(matches!(y.decrypt(m, 0), Err(CryptoError::Replay)));
        for (i, (m, pt)) in msgs.iter().enumerate() {
            if i != j && !delivered_first[i] {
                prop_assert_eq!(&y.decrypt(m, 0).unwrap(), pt);
            }
        }
        prop_assert_eq!(y.stored_skipped(), 0);
        let (m, pt) = ratchet_send(y, "answer");
        prop_assert_eq!(x.decrypt(&m, 0).unwrap(), pt);
        let (m, pt) = ratchet_send(x, "and back");
        prop_assert_eq!(y.decrypt(&m, 0).unwrap(), pt);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// 3. A gap of MAX_SKIP+1..MAX_SKIP+50 skipped keys in one chain step -- in the current
    /// chain, in the previous chain (through PN) or in a new chain -- is Err(Limit) without a
    /// state change; a message within the limit still decrypts afterwards, and the far message
    /// works once it is within the limit. Gaps of exactly MAX_SKIP (in both the previous and the
    /// new chain: 2 * MAX_SKIP = MAX_STORED_SKIPPED keys) succeed and every skipped key works.
    #[test]
    fn ratchet_skip_limit(
        rounds in 0usize..3,
        place in 0u8..3,
        extra in over_by(),
        k in any::<Index>(),
        sample in vec(any::<Index>(), 16),
    ) {
        // `lost` are skipped messages on one chain; `far` needs a gap of `g` skipped keys.
        let setup = |g: u32| {
            let (mut a, mut b) = ratchet_pair();
            ping_pong(&mut a, &mut b, rounds);
            let (m0, pt0) = ratchet_send(&mut a, "m0");
            assert_eq!(b.decrypt(&m0, 0).unwrap(), pt0);
            let mut lost = Vec::new();
            let far = match place {
                // In the current chain.
                0 => {
                    lost.extend((0..g).map(|i| ratchet_send(&mut a, &format!("lost {i}"))));
                    ratchet_send(&mut a, "far")
                }
                // In the previous chain: the far message is on a new chain, PN says g more.
                1 => {
                    lost.extend((0..g).map(|i| ratchet_send(&mut a, &format!("lost {i}"))));
                    let (r, pt) = ratchet_send(&mut b, "reply");
                    assert_eq!(a.decrypt(&r, 0).unwrap(), pt);
                    ratchet_send(&mut a, "far")
                }
                // In a new chain.
                _ => {
                    let (r, pt) = ratchet_send(&mut b, "reply");
                    assert_eq!(a.decrypt(&r, 0).unwrap(), pt);
                    lost.extend((0..g).map(|i| ratchet_send(&mut a, &format!("lost {i}"))));
                    ratchet_send(&mut a, "far")
                }
            };
            (a, b, lost, far)
        };

        let g = MAX_SKIP + extra;
        let (_a, mut b, lost, (far, far_pt)) = setup(g);
        let before = b.to_secret_bytes().unwrap();
        let r = b.decrypt(&far, 0);
        prop_assert!(matches!(r, Err(CryptoError::Limit(_))), "gap {}: {:?}", g, r);
        prop_assert_eq!(&*b.to_secret_bytes().unwrap(), &*before);
        prop_assert_eq!(b.stored_skipped(), 0);
        // A message within the limit still works.
        let k = k.index(MAX_SKIP as usize + 1);
        let (m, pt) = &lost[k];
        prop_assert_eq!(&b.decrypt(m, 0).unwrap(), pt);
        prop_assert_eq!(b.stored_skipped(), k);
        // The far message works exactly when it is now within the limit.
        let remaining = g - k as u32 - 1;
        let r = b.decrypt(&far, 0);
        if remaining <= MAX_SKIP {
            prop_assert_eq!(r.unwrap(), far_pt);
            prop_assert_eq!(b.stored_skipped(), g as usize - 1);
        } else {
            prop_assert!(matches!(r, Err(CryptoError::Limit(_))), "{:?}", r);
            prop_assert_eq!(b.stored_skipped(), k);
        }

        // Exactly MAX_SKIP is fine.
        let (mut a, mut b, lost, (far, far_pt)) = setup(MAX_SKIP);
        let mut lost2 = Vec::new();
        let (far, far_pt) = if place == 1 {
            // Also a gap of MAX_SKIP in the new chain: 2 * MAX_SKIP keys at once.
            lost2.push((far, far_pt));
            lost2.extend((1..MAX_SKIP).map(|i| ratchet_send(&mut a, &format!("lost2 {i}"))));
            ratchet_send(&mut a, "far2")
        } else {
            (far, far_pt)
        };
        // One more than MAX_SKIP in the same chain step is always an error.
        let (beyond, beyond_pt) = ratchet_send(&mut a, "beyond");
        let before = b.to_secret_bytes().unwrap();
        let r = b.decrypt(&beyond, 0);
        prop_assert!(matches!(r, Err(CryptoError::Limit(_))), "{:?}", r);
        prop_assert_eq!(&*b.to_secret_bytes().unwrap(), &*before);
        prop_assert_eq!(b.decrypt(&far, 0).unwrap(), far_pt);
        prop_assert_eq!(b.decrypt(&beyond, 0).unwrap(), beyond_pt);
        let all: Vec<_> = lost.iter().chain(&lost2).collect();
        prop_assert_eq!(b.stored_skipped(), all.len());
        prop_assert!(b.stored_skipped() <= MAX_STORED_SKIPPED);
        let mut picks: Vec<usize> = sample.iter().map(|i| i.index(all.len())).collect();
        picks.extend([0, all.len() - 1]);
        picks.sort_unstable();
        picks.dedup();
        for &i in &picks {
            let (m, pt) = all[i];
            prop_assert_eq!(&b.decrypt(m, 0).unwrap(), pt);
        }
        prop_assert_eq!(b.stored_skipped(), all.len() - picks.len());
    }

    /// 3b. Beyond MAX_STORED_SKIPPED stored keys the oldest are evicted (those messages then
    /// fail with Replay), the newest MAX_STORED_SKIPPED still decrypt; after SKIPPED_KEY_TTL none
    /// do.
    #[test]
    fn ratchet_eviction_of_oldest_skipped_keys(
        gaps in vec(0u32..=MAX_SKIP, 1..=5),
        seed in any::<u64>(),
        expire in prop::bool::weighted(0.25),
    ) {
        let (mut a, mut b) = ratchet_pair();
        let mut lost = Vec::new();
        for (r, &g) in gaps.iter().enumerate() {
            lost.extend((0..g).map(|i| ratchet_send(&mut a, &format!("lost {r}/{i}"))));
            let (m, pt) = ratchet_send(&mut a, "kept");
            prop_assert_eq!(b.decrypt(&m, 10).unwrap(), pt);
            prop_assert_eq!(b.stored_skipped(), lost.len().min(MAX_STORED_SKIPPED));
        }
        let evicted = lost.len().saturating_sub(MAX_STORED_SKIPPED);
        let mut order: Vec<usize> = (0..lost.len()).collect();
        shuffle(&mut order, seed | 1);
        order.truncate(300);
        // The boundary: the newest evicted and the oldest kept.
        order.extend([evicted.checked_sub(1), (evicted < lost.len()).then_some(evicted)]
            .into_iter()
            .flatten());
        order.sort_unstable();
        order.dedup();
        shuffle(&mut order, seed.rotate_left(17) | 1);
        let now = if expire { 10 + SKIPPED_KEY_TTL } else { 10 };
        let mut ok = 0;
        for i in order {
            let (m, pt) = &lost[i];
            let r = b.decrypt(m, now);
            if i >= evicted && !expire {
                prop_assert_eq!(r.as_ref().ok(), Some(pt), "kept key #{}", i);
                ok += 1;
            } else {
                prop_assert!(matches!(r, Err(CryptoError::Replay)), "evicted #{}: {:?}", i, r);
            }
        }
        let expected = if expire { 0 } else { lost.len().min(MAX_STORED_SKIPPED) - ok };
        prop_assert_eq!(b.stored_skipped(), expected);
        let (m, pt) = ratchet_send(&mut a, "still alive");
        prop_assert_eq!(b.decrypt(&m, now).unwrap(), pt);
    }

}

proptest! {
    // Each case follows a 25,000-iteration jump; the stream itself is built once.
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// 4b. A sender-key jump of MAX_JUMP+1..MAX_JUMP+50 is Err(Limit) without a state change;
    /// exactly MAX_JUMP works and keeps the newest MAX_STORED_KEYS skipped keys (older ones are
    /// Replay), and the far message works once it is within the limit.
    #[test]
    fn sender_key_jump_limit(start in option::of(0..EARLY), extra in over_by()) {
        let s = jump_stream();
        let msg = |i: u32| &s.msgs[&i];
        let d = SenderKeyDistribution::decode(&s.distribution).unwrap();
        let mut r = ReceivedSenderKey::from_distribution(&d);
        let base = match start {
            Some(i) => {
                prop_assert_eq!(r.decrypt(msg(i), &sk_body(i)).unwrap(), sk_plaintext(i));
                i + 1
            }
            None => 0,
        };
        let far = base + MAX_JUMP + extra;
        let before = r.to_secret_bytes().unwrap();
        for i in [base + MAX_JUMP + 1, far] {
            let res = r.decrypt(msg(i), &sk_body(i));
            prop_assert!(matches!(res, Err(CryptoError::Limit(_))), "{}: {:?}", i, res);
            prop_assert_eq!(&*r.to_secret_bytes().unwrap(), &*before);
        }

        let exact = base + MAX_JUMP;
        prop_assert_eq!(r.decrypt(msg(exact), &sk_body(exact)).unwrap(), sk_plaintext(exact));
        prop_assert_eq!(r.stored_keys(), MAX_STORED_KEYS);
        let oldest_kept = exact - MAX_STORED_KEYS as u32;
        let res = r.decrypt(msg(oldest_kept - 1), &sk_body(oldest_kept - 1));
        prop_assert!(matches!(res, Err(CryptoError::Replay)), "{:?}", res);
        for i in [oldest_kept, exact - 1] {
            prop_assert_eq!(r.decrypt(msg(i), &sk_body(i)).unwrap(), sk_plaintext(i));
            prop_assert!(matches!(r.decrypt(msg(i), &sk_body(i)), Err(CryptoError::Replay)));
        }
        if base < EARLY {
            let res = r.decrypt(msg(base), &sk_body(base));
            prop_assert!(matches!(res, Err(CryptoError::Replay)), "{:?}", res);
        }
        prop_assert_eq!(r.decrypt(msg(far), &sk_body(far)).unwrap(), sk_plaintext(far));
        prop_assert_eq!(
            r.stored_keys(),
            (MAX_STORED_KEYS - 2 + (extra as usize - 1)).min(MAX_STORED_KEYS)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// 5a. The conversation of property 1 with both sides' states round-tripped through
    /// `to_secret_bytes`/`from_secret_bytes` at random turns: re-encoding is identical, the
    /// restored copy sends and receives exactly like the original, and the conversation
    /// continues on the restored copy with all of property 1's invariants.
    #[test]
    fn ratchet_conversation_survives_state_round_trips(turns in script(30)) {
        let (a, b) = ratchet_pair();
        converse(a, b, &turns, true)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// 5b. Sender keys with the sender's and receivers' states round-tripped at random points:
    /// identical messages, identical results, identical final state.
    #[test]
    fn sender_keys_survive_state_round_trips(case in sk_case(120)) {
        sender_key_stream(&case, true)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// 6. End to end through real PQXDH sessions: initial messages (which repeat the handshake
    /// until the first reply) are lost, held back, shuffled and duplicated too; the responder is
    /// created by whichever initial message arrives first and the rest are routed to it. Session
    /// state round trips at random turns.
    #[test]
    fn sessions_end_to_end(turns in script(12), with_otk in any::<bool>()) {
        let (a, b) = session_pair(with_otk);
        converse(a, b, &turns, true)?;
    }
}
