//! Room messages under Sender Keys: sealing, the reconciliation rule, distributions, opening.
//!
//! A room message is sealed once ([`seal_message`]): the envelope under a fresh content key,
//! then the key package and our view of the membership log head ([`encode_meta`]) encrypted
//! and signed under our sender key, so every member decrypts the same frame. Before a send,
//! [`reconcile`] decides whether our sender key must be replaced (a device that holds it is no
//! longer a member device, or age or usage call for it) and which member devices still need
//! it; [`distribution`] is the control payload that carries it over pairwise sessions, and
//! [`accept_distribution`] checks one on arrival. On receipt, [`parse_message`],
//! [`decrypt_key`] and [`open_meta`] verify and open a message step by step, so the caller
//! can persist the sender-key chain as soon as it moved.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::ClientError;
use super::timers::{self, Timing};
use crate::crypto::CryptoError;
use crate::crypto::envelope::{self, KeyPackage, MessageId, Payload, PayloadKind, Timers};
use crate::crypto::identity::DeviceId;
use crate::crypto::membership::{self, RoomState};
use crate::crypto::primitives;
use crate::crypto::sender_keys::{
    ReceivedSenderKey, RotationReason, SenderKeyDistribution, SenderKeyMessage, SenderKeyState,
};
use crate::crypto::wire::{Reader, Writer};
use crate::protocol;

/// Control-message type: a sender key distribution for a room.
pub const CONTROL_SKDM: u8 = 1;
/// Most key entries in one distribution `Send` (keeps the frame well under 1 MiB even when
/// every entry is a first, post-quantum handshake message of about 2.3 KB).
pub const DISTRIBUTION_CHUNK: usize = 200;

/// A member device: (username, device id).
pub type Target = (String, [u8; 16]);

/// The plaintext a room message's sender-key ciphertext carries: the body's key package and
/// the sender's view of the membership log head.
///
/// # Errors
/// [`CryptoError::Malformed`] if the package does not encode.
pub fn encode_meta(
    package: &KeyPackage,
    state: &RoomState,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let p = package.encode()?;
    let mut w = Writer::with_capacity(p.len() + 48);
    w.bytes(&p).u64(state.head_seq).fixed(&state.head_hash);
    Ok(Zeroizing::new(w.finish()?))
}

/// Reads [`encode_meta`]'s output: (key package, log head sequence, log head hash).
///
/// # Errors
/// [`CryptoError::Malformed`] for anything else.
pub fn decode_meta(b: &[u8]) -> Result<(KeyPackage, u64, [u8; 32]), CryptoError> {
    let mut r = Reader::new(b, "room key metadata");
    let package = KeyPackage::decode(r.bytes(1024)?)?;
    let seq = r.u64()?;
    let hash = r.array::<32>()?;
    r.finish()?;
    Ok((package, seq, hash))
}

/// A room message sealed for every member: the relay request and the key package to keep
/// (with the request, so a retry resends the same ciphertext).
pub struct SealedRoom {
    /// The relay request.
    pub request: protocol::RoomSend,
    /// The encoded key package.
    pub package: Zeroizing<Vec<u8>>,
}

/// Seals `payload` (its conversation is the room) under our sender key `key`, which moves one
/// step (persist it), claiming the log head of `state`.
///
/// # Errors
/// [`CryptoError::Limit`] for a payload too large; the sender key's own errors.
pub fn seal_message(
    key: &mut SenderKeyState,
    state: &RoomState,
    payload: &Payload,
) -> Result<SealedRoom, CryptoError> {
    let (package, body) = envelope::seal(payload)?;
    let meta = encode_meta(&package, state)?;
    let msg = key.encrypt(&meta, &package.body_hash)?;
    Ok(SealedRoom {
        request: protocol::RoomSend {
            message_id: payload.message_id.0.to_vec(),
            room_id: state.room_id.clone(),
            body,
            key_message: msg.encode()?,
            head_seq: state.head_seq,
            ttl_ms: payload
                .timers
                .expire_after
                .map_or(0, |s| u64::from(s) * 1000),
        },
        package: package.encode()?,
    })
}

/// A fresh sender key for `room` on our device `device`.
///
/// # Errors
/// [`CryptoError::Rng`].
pub fn new_sender_key(
    room: &str,
    device: [u8; 16],
    now_s: u64,
) -> Result<SenderKeyState, CryptoError> {
    SenderKeyState::new(room.as_bytes(), DeviceId(device), now_s)
}

/// What [`reconcile`] decided about our sender key before a send.
#[derive(Debug, PartialEq, Eq)]
pub struct Reconciled {
    /// Replace the key (and forget who holds it), for this reason; `None` keeps it.
    pub rotate: Option<Rotation>,
    /// Member devices that must be sent the (possibly new) key before the message.
    pub missing: BTreeSet<Target>,
}

/// Why a sender key is replaced.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// We have none yet.
    First,
    /// A device that holds it is no longer a member device (removed, left, device gone,
    /// root key changed): it must read nothing sent from now on.
    StaleHolder,
    /// Age or usage.
    Due(RotationReason),
}

/// The sender-key rule: given our key (if any), the devices that hold it and the verified
/// member devices it must reach now, decides whether to rotate and whom to send it to.
/// Newcomers get only the current chain position, so they read from their join on.
pub fn reconcile(
    own: Option<&SenderKeyState>,
    holders: &BTreeSet<Target>,
    targets: &BTreeSet<Target>,
    now_s: u64,
) -> Reconciled {
    let rotate = match own {
        None => Some(Rotation::First),
        Some(_) if holders.iter().any(|d| !targets.contains(d)) => Some(Rotation::StaleHolder),
        Some(k) => k.rotation_due(now_s).map(Rotation::Due),
    };
    let missing = if rotate.is_some() {
        targets.clone()
    } else {
        targets.difference(holders).cloned().collect()
    };
    Reconciled { rotate, missing }
}

/// The control payload that carries our sender key `own` for `room` over pairwise sessions
/// (seal it with [`super::pairwise::Sealed::new`] and address it to each device).
///
/// # Errors
/// [`CryptoError::Rng`] for the message id; encoding errors.
pub fn distribution(own: &SenderKeyState, room: &str, now_ms: u64) -> Result<Payload, CryptoError> {
    let skdm = own.distribution().encode()?;
    let mut control = Vec::with_capacity(skdm.len() + 1);
    control.push(CONTROL_SKDM);
    control.extend_from_slice(&skdm);
    Ok(Payload {
        message_id: MessageId::random()?,
        sent_at_ms: now_ms,
        conversation: room.as_bytes().to_vec(),
        kind: PayloadKind::Control(control),
        timers: Timers::default(),
        reply_to: None,
    })
}

/// Checks a sender key distribution for `room` that arrived over an authenticated pairwise
/// session from device `sender_device`: it must be for that room and that device. The caller
/// keeps the returned key under (room, device, distribution id), unless it already holds one
/// (a repeated distribution must not move the chain under messages in flight).
///
/// # Errors
/// [`ClientError::Rejected`] for an undecodable distribution or one for another room or
/// device.
pub fn accept_distribution(
    sender_device: [u8; 16],
    room: &str,
    bytes: &[u8],
) -> Result<([u8; 16], ReceivedSenderKey), ClientError> {
    let d = SenderKeyDistribution::decode(bytes)
        .map_err(|e| ClientError::Rejected(format!("bad sender key distribution: {e}")))?;
    if d.room_id != room.as_bytes()
        || d.sender_device.0 != sender_device
        || membership::room_kind_of(room).is_none()
    {
        return Err(ClientError::rejected(
            "sender key distribution for another room or device",
        ));
    }
    Ok((d.distribution_id, ReceivedSenderKey::from_distribution(&d)))
}

/// Decodes room delivery `d`'s sender-key message and checks that it is for the room and the
/// device the relay says. Look up the sender key it names by
/// (`sender_device`, `distribution_id`).
///
/// # Errors
/// [`ClientError::Crypto`] for an undecodable message, [`ClientError::Rejected`] for one
/// spliced from another room or device.
pub fn parse_message(d: &protocol::Delivery) -> Result<SenderKeyMessage, ClientError> {
    let msg = SenderKeyMessage::decode(&d.payload)?;
    if msg.room_id != d.room_id.as_bytes() || msg.sender_device.0.as_slice() != d.sender_device {
        return Err(ClientError::rejected(
            "a room message spliced from another room or device",
        ));
    }
    Ok(msg)
}

/// Verifies and decrypts `msg` with the sender key `key` that `sender` distributed (the user
/// whose pairwise session delivered it, never the relay's claim), who must be a member in our
/// verified `state`. On success the chain moved: persist `key` even if the body then turns out
/// to be bad (that message key is spent either way).
///
/// # Errors
/// [`ClientError::Rejected`] for a sender who is not a member; the sender key's errors.
pub fn decrypt_key(
    state: &RoomState,
    sender: &str,
    key: &mut ReceivedSenderKey,
    msg: &SenderKeyMessage,
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    if !state.is_member(sender) {
        return Err(ClientError::rejected(
            "a room message from someone who is not a member",
        ));
    }
    let body_hash = primitives::sha256(&[body]);
    Ok(Zeroizing::new(key.decrypt(msg, &body_hash)?))
}

/// How the sender's view of the membership log compares with ours.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Same head (or older: a message sent before changes we already have).
    Agrees,
    /// The sender has seen changes we have not: catch up to this sequence number.
    Ahead(u64),
    /// Same sequence number, different hash: the relay may be showing members different
    /// histories.
    Differs(u64),
}

/// An opened room text.
#[derive(Debug)]
pub struct RoomText {
    /// The text.
    pub text: String,
    /// The sender's clock.
    pub sent_at_ms: u64,
    /// Its timers under the clock rule.
    pub timing: Timing,
    /// Whether its expiry already passed (never shown or stored).
    pub expired: bool,
    /// The sender's view of the membership log.
    pub head: Head,
}

/// Opens the body of room delivery `d` with the metadata [`decrypt_key`] returned.
///
/// # Errors
/// [`ClientError::Crypto`] for a body that does not verify, [`ClientError::Rejected`] for one
/// spliced under another id or room or of a kind rooms do not carry.
pub fn open_meta(
    meta: &[u8],
    state: &RoomState,
    d: &protocol::Delivery,
    now_ms: u64,
) -> Result<RoomText, ClientError> {
    let (package, head_seq, head_hash) = decode_meta(meta)?;
    let payload = envelope::open(&package, &d.body)?;
    if payload.message_id.0.as_slice() != d.message_id.as_slice()
        || payload.conversation != d.room_id.as_bytes()
    {
        return Err(ClientError::rejected(
            "a room message spliced under another id or room",
        ));
    }
    let PayloadKind::Text(text) = payload.kind else {
        return Err(ClientError::rejected("unsupported room message kind"));
    };
    let timing = timers::incoming(payload.timers, payload.sent_at_ms, d.server_ts_ms);
    let head = if head_seq > state.head_seq {
        Head::Ahead(head_seq)
    } else if head_seq == state.head_seq && head_hash != state.head_hash {
        Head::Differs(head_seq)
    } else {
        Head::Agrees
    };
    Ok(RoomText {
        text,
        sent_at_ms: payload.sent_at_ms,
        expired: timing.expire_at_ms.is_some_and(|t| t <= now_ms),
        timing,
        head,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(u: &str, d: u8) -> Target {
        (u.to_owned(), [d; 16])
    }

    #[test]
    fn the_reconciliation_rule() {
        let room = membership::new_room_id(membership::RoomKind::Room).unwrap();
        let key = new_sender_key(&room, [9; 16], 100).unwrap();
        let targets: BTreeSet<Target> = [t("a", 1), t("b", 2)].into();

        // No key yet: make one, send it to everyone.
        let r = reconcile(None, &BTreeSet::new(), &targets, 100);
        assert_eq!(r.rotate, Some(Rotation::First));
        assert_eq!(r.missing, targets);

        // A newcomer gets the current key; nothing rotates.
        let holders: BTreeSet<Target> = [t("a", 1)].into();
        let r = reconcile(Some(&key), &holders, &targets, 100);
        assert_eq!(r.rotate, None);
        assert_eq!(r.missing, [t("b", 2)].into());

        // A holder that is no longer a member device forces a new key for everyone left.
        let holders: BTreeSet<Target> = [t("a", 1), t("b", 2), t("c", 3)].into();
        let r = reconcile(Some(&key), &holders, &targets, 100);
        assert_eq!(r.rotate, Some(Rotation::StaleHolder));
        assert_eq!(r.missing, targets);

        // Everyone holds it: nothing to do.
        let r = reconcile(Some(&key), &targets, &targets, 100);
        assert_eq!(
            r,
            Reconciled {
                rotate: None,
                missing: BTreeSet::new()
            }
        );
    }

    #[test]
    fn a_distribution_is_only_accepted_for_its_room_and_device() {
        let room = membership::new_room_id(membership::RoomKind::Room).unwrap();
        let key = new_sender_key(&room, [9; 16], 100).unwrap();
        let p = distribution(&key, &room, 1).unwrap();
        let PayloadKind::Control(c) = &p.kind else {
            panic!()
        };
        assert_eq!(c[0], CONTROL_SKDM);
        let (id, _) = accept_distribution([9; 16], &room, &c[1..]).unwrap();
        assert_eq!(id, key.distribution_id());
        assert!(accept_distribution([8; 16], &room, &c[1..]).is_err());
        let other = membership::new_room_id(membership::RoomKind::Room).unwrap();
        assert!(accept_distribution([9; 16], &other, &c[1..]).is_err());
        assert!(accept_distribution([9; 16], &room, b"junk").is_err());
    }
}
