//! PQXDH-style session setup between two devices (`docs/crypto.md` section 4).
//!
//! The initiator verifies the responder's bundle, makes an ephemeral key `EK_A` and computes
//! `DH1 = DH(DIK_A, SPK_B)`, `DH2 = DH(EK_A, DIK_B)`, `DH3 = DH(EK_A, SPK_B)`,
//! `DH4 = DH(EK_A, OPK_B)` (if a one-time prekey was available) and `(CT, SS) = Encaps(PQPK_B)`;
//! `SK = HKDF-SHA-256(salt = 0^32, ikm = 0xFF^32 || DH1 || DH2 || DH3 || [DH4] || SS,
//! info = "cinder/v1/pqxdh" || H(PQPK_B) || H(CT))` seeds the Double Ratchet with
//! `AD = DIK_A || DIK_B || H(cert_A) || H(cert_B)`.
//!
//! Until the responder answers, every message the initiator sends carries the handshake fields
//! (like Signal's prekey messages), so losing the very first message does not lose the session.
//! The responder deletes one-time private keys after the first successful decryption and keeps a
//! seen-set of `(EK_A, SPK id)`, so a replayed initial message is rejected.

use zeroize::Zeroizing;

use super::identity::{
    DeviceCertificate, DeviceId, DeviceKeys, Revocation, RootPublicKey, verify_device,
};
use super::prekeys::{DevicePrekeys, PrekeyBundle};
use super::primitives::{self, DhKeyPair, PQ_CIPHERTEXT_LEN, Secret32};
use super::ratchet::{RatchetMessage, RatchetState};
use super::wire::{Reader, Writer};
use super::{CryptoError, Result};

/// Re-run the handshake after this many seconds (30 days)...
pub const REHANDSHAKE_AFTER: u64 = 30 * 86_400;
/// ...or after this many messages in either direction.
pub const REHANDSHAKE_MESSAGES: u64 = 10_000;

/// The handshake fields that accompany the initiator's messages until the first reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InitialMessage {
    /// The initiator's device certificate.
    pub sender_cert: DeviceCertificate,
    /// `EK_A`.
    pub ephemeral: [u8; 32],
    /// Which signed prekey was used.
    pub signed_prekey_id: u32,
    /// Which one-time prekey was used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// Which PQ prekey was used.
    pub pq_prekey_id: u32,
    /// The ML-KEM ciphertext.
    pub pq_ciphertext: Vec<u8>,
    /// The ratchet message itself.
    pub message: RatchetMessage,
}

/// What travels between two devices: a handshake-carrying message or a plain ratchet message.
#[derive(Clone, PartialEq, Eq, Debug)]
// Messages are decoded, used and dropped at once; boxing the larger variant would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum PairwiseMessage {
    /// Carries the handshake fields.
    Initial(InitialMessage),
    /// An established session's message.
    Normal(RatchetMessage),
}

impl PairwiseMessage {
    /// Fixed binary encoding: a tag byte, then the fields.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(2400);
        match self {
            Self::Normal(m) => {
                w.u8(1);
                m.write(&mut w);
            }
            Self::Initial(i) => {
                w.u8(2)
                    .bytes(&i.sender_cert.encode()?)
                    .fixed(&i.ephemeral)
                    .u32(i.signed_prekey_id);
                match i.one_time_prekey_id {
                    Some(id) => w.u8(1).u32(id),
                    None => w.u8(0),
                };
                w.u32(i.pq_prekey_id).fixed(&i.pq_ciphertext);
                i.message.write(&mut w);
            }
        }
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "pairwise message");
        let m = match r.u8()? {
            1 => Self::Normal(RatchetMessage::read(&mut r)?),
            2 => {
                let sender_cert = DeviceCertificate::decode(r.bytes(512)?)?;
                let ephemeral = r.array()?;
                let signed_prekey_id = r.u32()?;
                let one_time_prekey_id = if r.bool()? { Some(r.u32()?) } else { None };
                let pq_prekey_id = r.u32()?;
                let pq_ciphertext = r.fixed(PQ_CIPHERTEXT_LEN)?.to_vec();
                let message = RatchetMessage::read(&mut r)?;
                Self::Initial(InitialMessage {
                    sender_cert,
                    ephemeral,
                    signed_prekey_id,
                    one_time_prekey_id,
                    pq_prekey_id,
                    pq_ciphertext,
                    message,
                })
            }
            _ => return Err(CryptoError::Malformed("pairwise message")),
        };
        r.finish()?;
        Ok(m)
    }
}

#[derive(Clone)]
struct Pending {
    sender_cert: DeviceCertificate,
    ephemeral: [u8; 32],
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    pq_prekey_id: u32,
    pq_ciphertext: Vec<u8>,
}

/// A pairwise session with one device of a peer.
pub struct Session {
    ratchet: RatchetState,
    pending: Option<Pending>,
    /// Responder side: the `EK_A` that created the session, to recognise repeated handshakes.
    base_key: Option<[u8; 32]>,
    peer_device: DeviceId,
    created_at: u64,
    messages: u64,
}

fn associated_data(
    dik_a: &[u8; 32],
    dik_b: &[u8; 32],
    cert_a: &DeviceCertificate,
    cert_b: &DeviceCertificate,
) -> Result<Vec<u8>> {
    let mut ad = Vec::with_capacity(128);
    ad.extend_from_slice(dik_a);
    ad.extend_from_slice(dik_b);
    ad.extend_from_slice(&cert_a.hash()?);
    ad.extend_from_slice(&cert_b.hash()?);
    Ok(ad)
}

fn shared_key(dhs: &[Secret32], ss: &Secret32, pq_public: &[u8], ct: &[u8]) -> Result<Secret32> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.expose());
    }
    ikm.extend_from_slice(ss.expose());
    let mut info = Vec::with_capacity(15 + 64);
    info.extend_from_slice(b"cinder/v1/pqxdh");
    info.extend_from_slice(&primitives::sha256(&[pq_public]));
    info.extend_from_slice(&primitives::sha256(&[ct]));
    let mut sk = [0u8; 32];
    primitives::hkdf_sha256(Some(&[0u8; 32]), &ikm, &info, &mut sk)?;
    Ok(Secret32::from_bytes(sk))
}

/// Starts a session with the device described by `bundle`.
///
/// The bundle is verified first: the device certificate must chain to `peer_root` for
/// `peer_user` and not be revoked, and every prekey signature must verify.
///
/// # Errors
/// Chain and signature errors from verification, [`CryptoError::NonContributory`] for
/// low-order keys, [`CryptoError::Malformed`] for a bad PQ key.
pub fn initiate(
    own: &DeviceKeys,
    own_cert: &DeviceCertificate,
    peer_root: &RootPublicKey,
    peer_user: &str,
    bundle: &PrekeyBundle,
    revocations: &[Revocation],
    now: u64,
) -> Result<Session> {
    bundle.verify(peer_root, peer_user, revocations)?;
    let spk = bundle.signed_prekey.public;
    let dik_b = bundle.cert.dik_public;
    let ek = DhKeyPair::generate()?;
    let mut dhs = vec![own.identity.dh(&spk)?, ek.dh(&dik_b)?, ek.dh(&spk)?];
    if let Some(opk) = &bundle.one_time_prekey {
        dhs.push(ek.dh(&opk.public)?);
    }
    let (ct, ss) = primitives::pq_encapsulate(&bundle.pq_prekey.public)?;
    let sk = shared_key(&dhs, &ss, &bundle.pq_prekey.public, &ct)?;
    let ad = associated_data(&own.identity.public(), &dik_b, own_cert, &bundle.cert)?;
    let ratchet = RatchetState::init_initiator(&sk, spk, ad)?;
    Ok(Session {
        ratchet,
        pending: Some(Pending {
            sender_cert: own_cert.clone(),
            ephemeral: ek.public(),
            signed_prekey_id: bundle.signed_prekey.id,
            one_time_prekey_id: bundle.one_time_prekey.map(|k| k.id),
            pq_prekey_id: bundle.pq_prekey.id,
            pq_ciphertext: ct,
        }),
        base_key: None,
        peer_device: bundle.cert.device_id,
        created_at: now,
        messages: 0,
    })
}

/// Accepts an initial message addressed to this device, returning the new session and the
/// first plaintext.
///
/// `sender_root` is the pinned (or, on first contact, fetched) root key of
/// `msg.sender_cert.user_id`. One-time keys are deleted and the handshake is recorded only after
/// the first message authenticates.
///
/// # Errors
/// [`CryptoError::Replay`] for a handshake seen before, [`CryptoError::UnknownKey`] for a prekey
/// we no longer hold, chain errors for a bad certificate, [`CryptoError::Integrity`] if the
/// message does not authenticate.
pub fn respond(
    own: &DeviceKeys,
    own_cert: &DeviceCertificate,
    prekeys: &mut DevicePrekeys,
    sender_root: &RootPublicKey,
    revocations: &[Revocation],
    msg: &InitialMessage,
    now: u64,
) -> Result<(Session, Vec<u8>)> {
    if prekeys.seen_before(&msg.ephemeral, msg.signed_prekey_id) {
        return Err(CryptoError::Replay);
    }
    let cert_a = &msg.sender_cert;
    verify_device(sender_root, &cert_a.user_id, cert_a, revocations)?;
    let spk = prekeys
        .signed_key(msg.signed_prekey_id)
        .ok_or(CryptoError::UnknownKey)?
        .clone();
    let mut dhs = vec![
        spk.dh(&cert_a.dik_public)?,
        own.identity.dh(&msg.ephemeral)?,
        spk.dh(&msg.ephemeral)?,
    ];
    if let Some(id) = msg.one_time_prekey_id {
        let opk = prekeys.one_time_key(id).ok_or(CryptoError::UnknownKey)?;
        dhs.push(opk.dh(&msg.ephemeral)?);
    }
    let pq = prekeys
        .pq_key(msg.pq_prekey_id)
        .ok_or(CryptoError::UnknownKey)?;
    let ss = pq.decapsulate(&msg.pq_ciphertext)?;
    let sk = shared_key(&dhs, &ss, &pq.public(), &msg.pq_ciphertext)?;
    let ad = associated_data(&cert_a.dik_public, &own.identity.public(), cert_a, own_cert)?;
    let mut ratchet = RatchetState::init_responder(&sk, spk, ad);
    let plaintext = ratchet.decrypt(&msg.message, now)?;
    prekeys.consume(
        &msg.ephemeral,
        msg.signed_prekey_id,
        msg.one_time_prekey_id,
        msg.pq_prekey_id,
        now,
    );
    Ok((
        Session {
            ratchet,
            pending: None,
            base_key: Some(msg.ephemeral),
            peer_device: cert_a.device_id,
            created_at: now,
            messages: 1,
        },
        plaintext,
    ))
}

impl Session {
    /// The peer device this session talks to.
    pub fn peer_device(&self) -> DeviceId {
        self.peer_device
    }

    /// Whether the initiator is still waiting for the responder's first reply.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the session is old or busy enough that a fresh handshake is due.
    pub fn needs_rehandshake(&self, now: u64) -> bool {
        now.saturating_sub(self.created_at) >= REHANDSHAKE_AFTER
            || self.messages >= REHANDSHAKE_MESSAGES
    }

    /// Encrypts one message for the peer device.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] if this (responder) side has not received anything yet.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<PairwiseMessage> {
        let message = self.ratchet.encrypt(plaintext)?;
        self.messages += 1;
        Ok(match &self.pending {
            None => PairwiseMessage::Normal(message),
            Some(p) => PairwiseMessage::Initial(InitialMessage {
                sender_cert: p.sender_cert.clone(),
                ephemeral: p.ephemeral,
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                pq_prekey_id: p.pq_prekey_id,
                pq_ciphertext: p.pq_ciphertext.clone(),
                message,
            }),
        })
    }

    /// Whether `msg` belongs to this session (a normal message, or a repeated handshake that
    /// created it); otherwise an initial message needs [`respond`].
    pub fn accepts(&self, msg: &PairwiseMessage) -> bool {
        match msg {
            PairwiseMessage::Normal(_) => true,
            PairwiseMessage::Initial(i) => self.base_key == Some(i.ephemeral),
        }
    }

    /// Decrypts one message from the peer device.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] for an initial message of another handshake, and every
    /// error of [`RatchetState::decrypt`].
    pub fn decrypt(&mut self, msg: &PairwiseMessage, now: u64) -> Result<Vec<u8>> {
        if !self.accepts(msg) {
            return Err(CryptoError::UnknownKey);
        }
        let inner = match msg {
            PairwiseMessage::Normal(m) => m,
            PairwiseMessage::Initial(i) => &i.message,
        };
        let pt = self.ratchet.decrypt(inner, now)?;
        // The peer has answered, so it holds the session: stop repeating the handshake.
        self.pending = None;
        self.messages += 1;
        Ok(pt)
    }

    /// Serialises the session for the encrypted cache.
    ///
    /// # Security
    /// Holds ratchet secrets; zeroized on drop, written only to the encrypted cache.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(4096);
        w.u8(1)
            .bytes(&self.ratchet.to_secret_bytes()?)
            .opt_fixed(self.base_key.as_ref().map(|k| &k[..]))
            .fixed(&self.peer_device.0)
            .u64(self.created_at)
            .u64(self.messages);
        match &self.pending {
            None => {
                w.u8(0);
            }
            Some(p) => {
                w.u8(1)
                    .bytes(&p.sender_cert.encode()?)
                    .fixed(&p.ephemeral)
                    .u32(p.signed_prekey_id)
                    .u8(u8::from(p.one_time_prekey_id.is_some()))
                    .u32(p.one_time_prekey_id.unwrap_or(0))
                    .u32(p.pq_prekey_id)
                    .fixed(&p.pq_ciphertext);
            }
        }
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Restores [`Self::to_secret_bytes`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "session");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let ratchet = RatchetState::from_secret_bytes(r.bytes(1 << 20)?)?;
        let base_key = r.opt_array()?;
        let peer_device = DeviceId(r.array()?);
        let created_at = r.u64()?;
        let messages = r.u64()?;
        let pending = if r.bool()? {
            let sender_cert = DeviceCertificate::decode(r.bytes(512)?)?;
            let ephemeral = r.array()?;
            let signed_prekey_id = r.u32()?;
            let has_otk = r.bool()?;
            let otk = r.u32()?;
            Some(Pending {
                sender_cert,
                ephemeral,
                signed_prekey_id,
                one_time_prekey_id: has_otk.then_some(otk),
                pq_prekey_id: r.u32()?,
                pq_ciphertext: r.fixed(PQ_CIPHERTEXT_LEN)?.to_vec(),
            })
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            ratchet,
            pending,
            base_key,
            peer_device,
            created_at,
            messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::identity::{DeviceRole, UserRootKey};

    struct Party {
        urk: UserRootKey,
        keys: DeviceKeys,
        cert: DeviceCertificate,
        prekeys: DevicePrekeys,
    }

    fn party(name: &str) -> Party {
        let urk = UserRootKey::generate().unwrap();
        let keys = DeviceKeys::generate().unwrap();
        let cert = urk
            .certify(
                name,
                DeviceId::random().unwrap(),
                &keys,
                1,
                DeviceRole::User,
            )
            .unwrap();
        let prekeys = DevicePrekeys::new(&keys.signing, 1).unwrap();
        Party {
            urk,
            keys,
            cert,
            prekeys,
        }
    }

    fn bundle(p: &mut Party, with_otk: bool) -> PrekeyBundle {
        let otk = p.prekeys.generate_one_time(1).unwrap();
        let pq = p
            .prekeys
            .generate_pq_one_time(&p.keys.signing, 1, 1)
            .unwrap();
        PrekeyBundle {
            cert: p.cert.clone(),
            signed_prekey: p.prekeys.current_signed_prekey(&p.keys.signing).unwrap(),
            one_time_prekey: with_otk.then_some(otk[0]),
            pq_prekey: pq[0].clone(),
        }
    }

    fn initial(m: PairwiseMessage) -> InitialMessage {
        match PairwiseMessage::decode(&m.encode().unwrap()).unwrap() {
            PairwiseMessage::Initial(i) => i,
            PairwiseMessage::Normal(_) => panic!("expected an initial message"),
        }
    }

    #[test]
    fn full_handshake_then_conversation() {
        let alice = party("alice");
        let mut bob = party("bob");
        let b = bundle(&mut bob, true);
        let mut a_sess = initiate(
            &alice.keys,
            &alice.cert,
            &bob.urk.public(),
            "bob",
            &b,
            &[],
            10,
        )
        .unwrap();
        let first = a_sess.encrypt(b"hello bob").unwrap();
        let second = a_sess.encrypt(b"still there?").unwrap();
        let i = initial(second.clone());
        // The first message was lost; the second one still sets the session up.
        let (mut b_sess, pt) = respond(
            &bob.keys,
            &bob.cert,
            &mut bob.prekeys,
            &alice.urk.public(),
            &[],
            &i,
            10,
        )
        .unwrap();
        assert_eq!(pt, b"still there?");
        assert_eq!(bob.prekeys.one_time_count(), 0);
        // The late first message is routed to the existing session.
        assert!(b_sess.accepts(&first));
        assert_eq!(b_sess.decrypt(&first, 10).unwrap(), b"hello bob");
        let reply = b_sess.encrypt(b"hi alice").unwrap();
        assert!(matches!(reply, PairwiseMessage::Normal(_)));
        assert_eq!(a_sess.decrypt(&reply, 11).unwrap(), b"hi alice");
        assert!(!a_sess.is_pending());
        assert!(matches!(
            a_sess.encrypt(b"x").unwrap(),
            PairwiseMessage::Normal(_)
        ));
        let saved = Session::from_secret_bytes(&a_sess.to_secret_bytes().unwrap()).unwrap();
        assert_eq!(saved.peer_device(), bob.cert.device_id);
    }

    #[test]
    fn replayed_initial_messages_are_rejected() {
        for with_otk in [true, false] {
            let alice = party("alice");
            let mut bob = party("bob");
            let b = bundle(&mut bob, with_otk);
            let mut s = initiate(
                &alice.keys,
                &alice.cert,
                &bob.urk.public(),
                "bob",
                &b,
                &[],
                10,
            )
            .unwrap();
            let i = initial(s.encrypt(b"once").unwrap());
            respond(
                &bob.keys,
                &bob.cert,
                &mut bob.prekeys,
                &alice.urk.public(),
                &[],
                &i,
                10,
            )
            .unwrap();
            let again = respond(
                &bob.keys,
                &bob.cert,
                &mut bob.prekeys,
                &alice.urk.public(),
                &[],
                &i,
                11,
            );
            assert!(matches!(again, Err(CryptoError::Replay)), "otk={with_otk}");
            // It survives persistence of the prekey store too.
            let mut restored =
                DevicePrekeys::from_secret_bytes(&bob.prekeys.to_secret_bytes().unwrap()).unwrap();
            let again = respond(
                &bob.keys,
                &bob.cert,
                &mut restored,
                &alice.urk.public(),
                &[],
                &i,
                12,
            );
            assert!(matches!(again, Err(CryptoError::Replay)));
        }
    }

    #[test]
    fn tampering_and_wrong_identities_fail_and_consume_nothing() {
        let alice = party("alice");
        let mut bob = party("bob");
        let b = bundle(&mut bob, true);
        let mut s = initiate(
            &alice.keys,
            &alice.cert,
            &bob.urk.public(),
            "bob",
            &b,
            &[],
            10,
        )
        .unwrap();
        let i = initial(s.encrypt(b"hi").unwrap());
        // Tampered ML-KEM ciphertext: implicit rejection gives a different key, AEAD fails.
        let mut bad = i.clone();
        bad.pq_ciphertext[5] ^= 1;
        assert!(matches!(
            respond(
                &bob.keys,
                &bob.cert,
                &mut bob.prekeys,
                &alice.urk.public(),
                &[],
                &bad,
                10
            ),
            Err(CryptoError::Integrity)
        ));
        // Another ephemeral key.
        let mut bad = i.clone();
        bad.ephemeral = DhKeyPair::generate().unwrap().public();
        assert!(
            respond(
                &bob.keys,
                &bob.cert,
                &mut bob.prekeys,
                &alice.urk.public(),
                &[],
                &bad,
                10
            )
            .is_err()
        );
        // A certificate that does not chain to the sender's pinned root.
        let mallory = UserRootKey::generate().unwrap();
        assert!(matches!(
            respond(
                &bob.keys,
                &bob.cert,
                &mut bob.prekeys,
                &mallory.public(),
                &[],
                &i,
                10
            ),
            Err(CryptoError::BadChain)
        ));
        assert_eq!(bob.prekeys.one_time_count(), 1);
        // The genuine message still works afterwards.
        respond(
            &bob.keys,
            &bob.cert,
            &mut bob.prekeys,
            &alice.urk.public(),
            &[],
            &i,
            10,
        )
        .unwrap();
    }

    #[test]
    fn initiator_refuses_bad_bundles() {
        let alice = party("alice");
        let mut bob = party("bob");
        let b = bundle(&mut bob, true);
        let other = UserRootKey::generate().unwrap();
        assert!(initiate(&alice.keys, &alice.cert, &other.public(), "bob", &b, &[], 1).is_err());
        let rev = bob.urk.revoke("bob", b.cert.device_id, 2).unwrap();
        assert!(matches!(
            initiate(
                &alice.keys,
                &alice.cert,
                &bob.urk.public(),
                "bob",
                &b,
                &[rev],
                3
            ),
            Err(CryptoError::Revoked)
        ));
        let mut low = b.clone();
        low.one_time_prekey.as_mut().unwrap().public = [0u8; 32];
        assert!(matches!(
            initiate(
                &alice.keys,
                &alice.cert,
                &bob.urk.public(),
                "bob",
                &low,
                &[],
                1
            ),
            Err(CryptoError::NonContributory)
        ));
    }

    #[test]
    fn decoder_rejects_garbage() {
        assert!(PairwiseMessage::decode(&[]).is_err());
        assert!(PairwiseMessage::decode(&[3, 0, 0]).is_err());
        assert!(PairwiseMessage::decode(&[1; 20]).is_err());
    }
}
