//! Pairwise messages: sessions started from prekey bundles, one body sealed for many devices,
//! and decrypting, opening and classifying what a peer device sent.
//!
//! A message is sealed once ([`Sealed::new`]: the envelope under a fresh content key) and its
//! key package is wrapped by the pairwise session of every recipient device ([`Sealed::add`]).
//! On receipt, [`decrypt`] picks the session that takes the message (the current one, the one
//! a peer replaced, or none: then [`answer`] answers the handshake the message starts),
//! [`open_body`] verifies the envelope against the key package and [`classify`] says what the
//! payload is for. The caller persists the sessions that moved.

use std::collections::HashSet;

use zeroize::Zeroizing;

use super::ClientError;
use super::room::CONTROL_SKDM;
use super::timers::{self, Timing};
use crate::crypto::CryptoError;
use crate::crypto::envelope::{self, KeyPackage, MessageId, Payload, PayloadKind, ReceiptKind};
use crate::crypto::handshake::{self, InitialMessage, PairwiseMessage, Session};
use crate::crypto::identity::{DeviceCertificate, DeviceKeys, Revocation, RootPublicKey};
use crate::crypto::prekeys::{DevicePrekeys, PrekeyBundle};
use crate::protocol::{self, names};

/// This device: who we are and the keys we answer handshakes with.
#[derive(Clone, Copy)]
pub struct Me<'a> {
    /// Our canonical username.
    pub username: &'a str,
    /// Our device keys.
    pub keys: &'a DeviceKeys,
    /// Our device certificate.
    pub cert: &'a DeviceCertificate,
}

/// Starts a session with the device of `peer` that `bundle` describes (PQXDH, initiator).
///
/// # Errors
/// The bundle's chain and signature errors (it must chain to `root` and not be revoked).
pub fn start(
    me: Me<'_>,
    peer: &str,
    root: &RootPublicKey,
    bundle: &PrekeyBundle,
    revocations: &[Revocation],
    now_s: u64,
) -> Result<Session, CryptoError> {
    handshake::initiate(me.keys, me.cert, root, peer, bundle, revocations, now_s)
}

/// One message sealed once, being addressed to devices one session at a time.
pub struct Sealed {
    message_id: [u8; 16],
    body: Vec<u8>,
    /// The encoded key package every recipient device gets through its session.
    wrapped: Zeroizing<Vec<u8>>,
    entries: Vec<protocol::KeyEntry>,
    recipients: Vec<String>,
    /// The users in `recipients`, so addressing n devices stays O(n) (a room distribution
    /// reaches hundreds).
    seen: HashSet<String>,
}

impl Sealed {
    /// Seals `payload` under a fresh content key.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] for a payload too large, [`CryptoError::Rng`].
    pub fn new(payload: &Payload) -> Result<Self, CryptoError> {
        let (package, body) = envelope::seal(payload)?;
        Ok(Self::from_parts(
            payload.message_id.0,
            package.encode()?,
            body,
        ))
    }

    /// A message sealed earlier, from its stored key package and body (a send the relay sent
    /// back because the recipient's devices changed is addressed again, not sealed again).
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] if `package` is not an encoded key package.
    pub fn resume(
        message_id: [u8; 16],
        package: &[u8],
        body: Vec<u8>,
    ) -> Result<Self, CryptoError> {
        let p = KeyPackage::decode(package)?;
        Ok(Self::from_parts(message_id, p.encode()?, body))
    }

    fn from_parts(message_id: [u8; 16], wrapped: Zeroizing<Vec<u8>>, body: Vec<u8>) -> Self {
        Self {
            message_id,
            body,
            wrapped,
            entries: Vec::new(),
            recipients: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Addresses the message to the device at the other end of `session` (a device of
    /// `user`); the session moves one step and must be persisted by the caller.
    ///
    /// # Errors
    /// As [`Session::encrypt`].
    pub fn add(&mut self, user: &str, session: &mut Session) -> Result<(), CryptoError> {
        let msg = session.encrypt(&self.wrapped)?;
        self.entries.push(protocol::KeyEntry {
            recipient_user: user.to_owned(),
            recipient_device: session.peer_device().0.to_vec(),
            payload: msg.encode()?,
        });
        if self.seen.insert(user.to_owned()) {
            self.recipients.push(user.to_owned());
        }
        Ok(())
    }

    /// The encoded key package (what a retry needs besides the body).
    ///
    /// # Security
    /// Holds the content key; store it only in the encrypted cache.
    pub fn package(&self) -> &[u8] {
        &self.wrapped
    }

    /// The message id.
    pub fn message_id(&self) -> [u8; 16] {
        self.message_id
    }

    /// How many devices it is addressed to.
    pub fn devices(&self) -> usize {
        self.entries.len()
    }

    /// The relay request: one body, one key entry per device; the relay deletes it after
    /// `ttl_ms` (0: no expiry).
    pub fn into_send(self, ttl_ms: u64) -> protocol::Send {
        protocol::Send {
            message_id: self.message_id.to_vec(),
            body: self.body,
            entries: self.entries,
            recipients: self.recipients,
            delete_by_ms: 0,
            ttl_ms,
        }
    }
}

/// Which stored session took a message, or what to do instead.
pub enum Opened<'m> {
    /// The current session decrypted it (and moved: persist it).
    Current(Zeroizing<Vec<u8>>),
    /// The session the peer had replaced decrypted it: the peer still writes with it, so it
    /// becomes current again and the current one becomes the previous one (persist both).
    Previous(Zeroizing<Vec<u8>>),
    /// No stored session takes it and it starts a handshake: [`answer`] it.
    Handshake(&'m InitialMessage),
    /// It does not decrypt: a stored session took it and the check failed (tampered, or a
    /// replay), or nothing takes it.
    Rejected(CryptoError),
}

/// Decrypts `msg` with the sessions held for its sender device: the current one and, when
/// two devices started sessions with each other at the same moment, the one it replaced
/// (keeping it lets them converge without losing a message). A session is changed only when
/// it decrypts the message.
pub fn decrypt<'m>(
    msg: &'m PairwiseMessage,
    current: Option<&mut Session>,
    previous: Option<&mut Session>,
    now_s: u64,
) -> Opened<'m> {
    let attempt = |s: Option<&mut Session>| match s {
        Some(s) if s.accepts(msg) => Some(s.decrypt(msg, now_s).map(Zeroizing::new)),
        _ => None,
    };
    let first = match attempt(current) {
        Some(Ok(pt)) => return Opened::Current(pt),
        other => other,
    };
    let second = match attempt(previous) {
        Some(Ok(pt)) => return Opened::Previous(pt),
        other => other,
    };
    match (msg, first.or(second)) {
        // A stored session took the message but it did not decrypt: that is the answer; a
        // repeated handshake must not start another session.
        (_, Some(Err(e))) => Opened::Rejected(e),
        (PairwiseMessage::Initial(init), _) => Opened::Handshake(init),
        _ => Opened::Rejected(CryptoError::UnknownKey),
    }
}

/// Answers the handshake `init` from `sender_user`'s device `sender_device`: the certificate
/// it carries must be that device's and chain to the sender's pinned `root`. Returns the new
/// session (it replaces the current one, which the caller keeps as the previous one) and the
/// plaintext; `prekeys` lose the one-time keys it used (persist them).
///
/// # Errors
/// [`CryptoError::BadChain`] for a certificate of another device, [`CryptoError::UnknownKey`]
/// without a pinned root key, and the handshake's own errors.
pub fn answer(
    me: Me<'_>,
    prekeys: &mut DevicePrekeys,
    root: Option<&RootPublicKey>,
    sender_user: &str,
    sender_device: [u8; 16],
    init: &InitialMessage,
    now_s: u64,
) -> Result<(Session, Zeroizing<Vec<u8>>), CryptoError> {
    if init.sender_cert.user_id != sender_user || init.sender_cert.device_id.0 != sender_device {
        return Err(CryptoError::BadChain);
    }
    let root = root.ok_or(CryptoError::UnknownKey)?;
    let (s, pt) = handshake::respond(me.keys, me.cert, prekeys, root, &[], init, now_s)?;
    Ok((s, Zeroizing::new(pt)))
}

/// Opens the body of delivery `d` with the key package a session decrypted.
///
/// # Errors
/// [`CryptoError::Integrity`] for a body that does not match its package or that a relay
/// spliced under another message id; decoding errors.
pub fn open_body(plaintext: &[u8], d: &protocol::Delivery) -> Result<Payload, CryptoError> {
    let package = KeyPackage::decode(plaintext)?;
    let payload = envelope::open(&package, &d.body)?;
    if payload.message_id.0.as_slice() != d.message_id.as_slice() {
        return Err(CryptoError::Integrity);
    }
    Ok(payload)
}

/// What a pairwise payload is for.
#[derive(Debug)]
pub enum Content {
    /// A text message in our direct conversation with the sender.
    Text {
        /// The conversation (`dm:a:b`).
        conversation: String,
        /// The text.
        text: String,
        /// The sender's clock.
        sent_at_ms: u64,
        /// Its timers under the clock rule.
        timing: Timing,
    },
    /// A text whose expiry passed in transit or while we were offline: never shown or stored.
    Expired,
    /// A read receipt for messages.
    Receipt {
        /// The direct conversation it is about; `None` from our own other device, whose
        /// receipts are about conversations with other people.
        conversation: Option<String>,
        /// When they were read (the earlier of the sender's and the relay's clocks).
        at_ms: u64,
        /// Which messages.
        message_ids: Vec<MessageId>,
    },
    /// A sender key distribution for a room ([`super::room::accept_distribution`]).
    Distribution {
        /// The room it claims to be for.
        room: String,
        /// The encoded distribution.
        bytes: Vec<u8>,
    },
}

/// Says what `payload`, sent by `sender` to us (`me`) and stamped by the relay at
/// `server_ts_ms`, is for.
///
/// # Errors
/// [`ClientError::Crypto`] (`Integrity`) for a body a relay spliced into another
/// conversation; [`ClientError::Rejected`] for a kind this client does not handle.
pub fn classify(
    me: &str,
    sender: &str,
    payload: Payload,
    server_ts_ms: u64,
    now_ms: u64,
) -> Result<Content, ClientError> {
    if let PayloadKind::Control(bytes) = &payload.kind {
        // Control messages name the conversation they are about (a room).
        let room = String::from_utf8_lossy(&payload.conversation).into_owned();
        return match bytes.split_first() {
            Some((&CONTROL_SKDM, rest)) => Ok(Content::Distribution {
                room,
                bytes: rest.to_vec(),
            }),
            _ => Err(ClientError::rejected("unknown control message")),
        };
    }
    let expected = names::dm_conversation(me, sender);
    if payload.conversation != expected.as_bytes() {
        return Err(CryptoError::Integrity.into());
    }
    match payload.kind {
        PayloadKind::Text(text) => {
            let timing = timers::incoming(payload.timers, payload.sent_at_ms, server_ts_ms);
            if timing.expire_at_ms.is_some_and(|t| t <= now_ms) {
                return Ok(Content::Expired);
            }
            Ok(Content::Text {
                conversation: expected,
                text,
                sent_at_ms: payload.sent_at_ms,
                timing,
            })
        }
        PayloadKind::Receipt {
            kind: ReceiptKind::Read,
            message_ids,
        } => Ok(Content::Receipt {
            conversation: (sender != me).then_some(expected),
            at_ms: payload.sent_at_ms.min(server_ts_ms.max(1)).min(now_ms),
            message_ids,
        }),
        _ => Err(ClientError::rejected("unsupported message kind")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::envelope::Timers;
    use crate::crypto::identity::{DeviceId, DeviceRole, UserRootKey};

    struct Dev {
        user: String,
        keys: DeviceKeys,
        cert: DeviceCertificate,
        root: RootPublicKey,
        prekeys: std::cell::RefCell<DevicePrekeys>,
    }

    impl Dev {
        fn new(user: &str) -> Self {
            let root = UserRootKey::generate().unwrap();
            let keys = DeviceKeys::generate().unwrap();
            let cert = root
                .certify(
                    user,
                    DeviceId::random().unwrap(),
                    &keys,
                    1,
                    DeviceRole::User,
                )
                .unwrap();
            let prekeys = DevicePrekeys::new(&keys.signing, 1).unwrap().into();
            Self {
                user: user.into(),
                keys,
                cert,
                root: root.public(),
                prekeys,
            }
        }

        fn bundle(&self) -> PrekeyBundle {
            let mut p = self.prekeys.borrow_mut();
            let otk = p.generate_one_time(1).unwrap();
            let pq = p.generate_pq_one_time(&self.keys.signing, 1, 1).unwrap();
            PrekeyBundle {
                cert: self.cert.clone(),
                signed_prekey: p.current_signed_prekey(&self.keys.signing).unwrap(),
                one_time_prekey: Some(otk[0]),
                pq_prekey: pq[0].clone(),
            }
        }

        fn me(&self) -> Me<'_> {
            Me {
                username: &self.user,
                keys: &self.keys,
                cert: &self.cert,
            }
        }
    }

    fn text(from: &str, to: &str, t: &str) -> Payload {
        Payload {
            message_id: MessageId::random().unwrap(),
            sent_at_ms: 1_000,
            conversation: names::dm_conversation(from, to).into_bytes(),
            kind: PayloadKind::Text(t.into()),
            timers: Timers::default(),
            reply_to: None,
        }
    }

    fn delivery(from: &Dev, sealed: Sealed) -> protocol::Delivery {
        let send = sealed.into_send(0);
        protocol::Delivery {
            seq: 1,
            sender_user: from.user.clone(),
            sender_device: from.cert.device_id.0.to_vec(),
            message_id: send.message_id,
            body: send.body,
            payload: send.entries[0].payload.clone(),
            server_ts_ms: 2_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_handshake_then_a_reply_then_a_tampered_body() {
        let alice = Dev::new("alice");
        let bob = Dev::new("bob");
        let bundle = bob.bundle();
        let mut a_to_b = start(alice.me(), "bob", &bob.root, &bundle, &[], 1).unwrap();
        let p = text("alice", "bob", "hello");
        let mut s = Sealed::new(&p).unwrap();
        s.add("bob", &mut a_to_b).unwrap();
        let d = delivery(&alice, s);

        let msg = PairwiseMessage::decode(&d.payload).unwrap();
        let Opened::Handshake(init) = decrypt(&msg, None, None, 1) else {
            panic!("a first message starts a handshake");
        };
        // A relay claiming another sender for the handshake is refused.
        assert!(matches!(
            answer(
                bob.me(),
                &mut bob.prekeys.borrow_mut(),
                Some(&alice.root),
                "mallory",
                alice.cert.device_id.0,
                init,
                1
            ),
            Err(CryptoError::BadChain)
        ));
        let (mut b_to_a, pt) = answer(
            bob.me(),
            &mut bob.prekeys.borrow_mut(),
            Some(&alice.root),
            "alice",
            alice.cert.device_id.0,
            init,
            1,
        )
        .unwrap();
        let payload = open_body(&pt, &d).unwrap();
        let Content::Text {
            text: got,
            conversation,
            ..
        } = classify("bob", "alice", payload, d.server_ts_ms, 3_000).unwrap()
        else {
            panic!("a text");
        };
        assert_eq!(
            (got.as_str(), conversation.as_str()),
            ("hello", "dm:alice:bob")
        );

        // Bob answers on the new session; Alice's current session takes it.
        let mut s = Sealed::new(&text("bob", "alice", "hi")).unwrap();
        s.add("alice", &mut b_to_a).unwrap();
        let mut d = delivery(&bob, s);
        let msg = PairwiseMessage::decode(&d.payload).unwrap();
        let Opened::Current(pt) = decrypt(&msg, Some(&mut a_to_b), None, 1) else {
            panic!("the current session takes the reply");
        };
        // The same key package with a body altered in transit does not open.
        let last = d.body.len() - 1;
        d.body[last] ^= 1;
        assert!(matches!(open_body(&pt, &d), Err(CryptoError::Integrity)));
        // A replay is refused by the session that took it, without a new handshake.
        assert!(matches!(
            decrypt(&msg, Some(&mut a_to_b), None, 1),
            Opened::Rejected(_)
        ));
    }

    #[test]
    fn the_session_a_peer_replaced_still_reads_its_messages() {
        let alice = Dev::new("alice");
        let bob = Dev::new("bob");
        let bundle = bob.bundle();
        let mut a_to_b = start(alice.me(), "bob", &bob.root, &bundle, &[], 1).unwrap();
        let mut s = Sealed::new(&text("alice", "bob", "1")).unwrap();
        s.add("bob", &mut a_to_b).unwrap();
        let d = delivery(&alice, s);
        let msg = PairwiseMessage::decode(&d.payload).unwrap();
        let Opened::Handshake(init) = decrypt(&msg, None, None, 1) else {
            panic!()
        };
        let (mut old, _) = answer(
            bob.me(),
            &mut bob.prekeys.borrow_mut(),
            Some(&alice.root),
            "alice",
            alice.cert.device_id.0,
            init,
            1,
        )
        .unwrap();
        // Bob meanwhile started his own session with Alice: it is current, the answered
        // one previous; Alice's next message still opens with the previous one.
        let alice_bundle_owner = Dev::new("alice2");
        let bundle = alice_bundle_owner.bundle();
        let mut current = start(
            bob.me(),
            "alice2",
            &alice_bundle_owner.root,
            &bundle,
            &[],
            1,
        )
        .unwrap();
        let mut s = Sealed::new(&text("alice", "bob", "2")).unwrap();
        s.add("bob", &mut a_to_b).unwrap();
        let d = delivery(&alice, s);
        let msg = PairwiseMessage::decode(&d.payload).unwrap();
        assert!(matches!(
            decrypt(&msg, Some(&mut current), Some(&mut old), 1),
            Opened::Previous(_)
        ));
    }

    #[test]
    fn one_body_reaches_every_device_and_names_each_user_once() {
        let alice = Dev::new("alice");
        let (bob1, bob2) = (Dev::new("bob"), Dev::new("bob"));
        let mut s1 = start(alice.me(), "bob", &bob1.root, &bob1.bundle(), &[], 1).unwrap();
        let mut s2 = start(alice.me(), "bob", &bob2.root, &bob2.bundle(), &[], 1).unwrap();
        let mut sealed = Sealed::new(&text("alice", "bob", "both")).unwrap();
        sealed.add("bob", &mut s1).unwrap();
        sealed.add("bob", &mut s2).unwrap();
        assert_eq!(sealed.devices(), 2);
        let send = sealed.into_send(0);
        assert_eq!(send.recipients, vec!["bob".to_owned()]);
        assert_ne!(
            send.entries[0].recipient_device,
            send.entries[1].recipient_device
        );
    }

    #[test]
    fn a_payload_spliced_into_another_conversation_is_refused() {
        let p = text("alice", "carol", "not for bob");
        assert!(matches!(
            classify("bob", "alice", p, 2_000, 3_000),
            Err(ClientError::Crypto(CryptoError::Integrity))
        ));
    }

    #[test]
    fn an_expired_text_is_dropped_and_a_receipt_time_is_bounded() {
        let mut p = text("alice", "bob", "old");
        p.timers.expire_after = Some(1);
        assert!(matches!(
            classify("bob", "alice", p, 1_500, 10_000).unwrap(),
            Content::Expired
        ));
        let mut r = text("alice", "bob", "");
        r.sent_at_ms = 9_000_000;
        r.kind = PayloadKind::Receipt {
            kind: ReceiptKind::Read,
            message_ids: vec![MessageId([1; 16])],
        };
        let Content::Receipt {
            at_ms,
            conversation,
            ..
        } = classify("bob", "alice", r, 5_000, 6_000).unwrap()
        else {
            panic!()
        };
        // A sender clock set ahead cannot move the read time past the relay's stamp.
        assert_eq!(at_ms, 5_000);
        assert_eq!(conversation.as_deref(), Some("dm:alice:bob"));
    }
}
