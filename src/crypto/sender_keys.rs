//! Sender Keys for rooms (`docs/crypto.md` section 7).
//!
//! Each sending device keeps, per room, a distribution id, a chain key, an iteration counter and
//! a fresh Ed25519 signing key, and hands them to every other member device once in a
//! [`SenderKeyDistribution`] over the pairwise ratchets. A room message then costs one AEAD and
//! one signature however many members the room has:
//!
//! - `mk_i = HMAC(CK_i, 0x01)`, `CK_{i+1} = HMAC(CK_i, 0x02)`;
//! - `key || nonce = HKDF(mk_i, "cinder/v1/sk/msg")`;
//! - `ct = AES-256-GCM(K || commitment || meta, AAD = room_id || distribution_id || i || sender)`;
//! - a signature over `"cinder/v1/sk/sig" || version || room_id || distribution_id || i || ct ||
//!   H(body)`, verified before anything is decrypted, so a room insider cannot forge another
//!   member's messages (they hold the chain key, not the signing key).
//!
//! Receivers accept jumps of at most [`MAX_JUMP`] iterations and store at most
//! [`MAX_STORED_KEYS`] skipped keys; an iteration already used is a replay.

use std::collections::VecDeque;

use zeroize::Zeroizing;

use super::identity::DeviceId;
use super::primitives::{self, Secret32, SigningKeyPair};
use super::ratchet::kdf_ck;
use super::wire::{Reader, Writer};
use super::{CryptoError, Result};

/// Largest forward jump in iterations a receiver follows.
pub const MAX_JUMP: u32 = 25_000;
/// Most skipped message keys stored per sender chain.
pub const MAX_STORED_KEYS: usize = 2000;
/// Rotate a sender key after this many seconds (7 days)...
pub const ROTATE_AFTER: u64 = 7 * 86_400;
/// ...or after this many messages.
pub const ROTATE_AFTER_MESSAGES: u32 = 1000;
/// Longest room id.
pub const MAX_ROOM_ID: usize = 64;
/// Largest sender-key ciphertext (a key package is ~100 bytes; this bounds hostile input).
pub const MAX_CIPHERTEXT: usize = 64 * 1024;
const VERSION: u8 = 1;
const SIG_CONTEXT: &[u8] = b"cinder/v1/sk/sig";

/// Why a sender key must be replaced (section 7's rotation rules).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RotationReason {
    /// A member was removed or left.
    MemberRemoved,
    /// A member's device was removed.
    DeviceRemoved,
    /// Retention was switched on or off.
    RetentionToggled,
    /// The key is older than [`ROTATE_AFTER`].
    Age,
    /// The key sent [`ROTATE_AFTER_MESSAGES`] messages.
    MessageCount,
    /// This device was reset.
    DeviceReset,
    /// A member's root key changed.
    RootKeyChanged,
}

/// A sending device's own sender key for one room.
pub struct SenderKeyState {
    room_id: Vec<u8>,
    sender_device: DeviceId,
    distribution_id: [u8; 16],
    chain_key: Secret32,
    iteration: u32,
    signing: SigningKeyPair,
    created_at: u64,
}

/// The secret state a member device needs to read one sender's room messages.
pub struct SenderKeyDistribution {
    /// The room.
    pub room_id: Vec<u8>,
    /// The sending device.
    pub sender_device: DeviceId,
    /// Which sender key this is.
    pub distribution_id: [u8; 16],
    /// The iteration `chain_key` belongs to.
    pub iteration: u32,
    /// The chain key at `iteration` (secret).
    pub chain_key: Secret32,
    /// The public half of the sender key's signing key.
    pub signing_public: [u8; 32],
}

impl SenderKeyDistribution {
    /// Fixed binary encoding, sent only through pairwise sessions.
    ///
    /// # Security
    /// Contains a chain key; zeroized on drop.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(160);
        w.u8(VERSION)
            .bytes(&self.room_id)
            .fixed(&self.sender_device.0)
            .fixed(&self.distribution_id)
            .u32(self.iteration)
            .fixed(self.chain_key.expose())
            .fixed(&self.signing_public);
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "sender key distribution");
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let d = Self {
            room_id: r.bytes(MAX_ROOM_ID)?.to_vec(),
            sender_device: DeviceId(r.array()?),
            distribution_id: r.array()?,
            iteration: r.u32()?,
            chain_key: Secret32::from_bytes(r.array()?),
            signing_public: r.array()?,
        };
        r.finish()?;
        Ok(d)
    }
}

/// One room message's key material, encrypted and signed under a sender key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SenderKeyMessage {
    /// The room.
    pub room_id: Vec<u8>,
    /// Which sender key.
    pub distribution_id: [u8; 16],
    /// Message iteration.
    pub iteration: u32,
    /// The sending device.
    pub sender_device: DeviceId,
    /// AES-256-GCM ciphertext of the key package.
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature by the sender key's signing key.
    pub signature: [u8; 64],
}

fn aad(
    room_id: &[u8],
    distribution_id: &[u8; 16],
    iteration: u32,
    sender: &DeviceId,
) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(100);
    w.bytes(room_id)
        .fixed(distribution_id)
        .u32(iteration)
        .fixed(&sender.0);
    w.finish()
}

fn signed_bytes(msg: &SenderKeyMessage, body_hash: &[u8; 32]) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(160 + msg.ciphertext.len());
    w.fixed(SIG_CONTEXT)
        .u8(VERSION)
        .bytes(&msg.room_id)
        .fixed(&msg.distribution_id)
        .u32(msg.iteration)
        .bytes(&msg.ciphertext)
        .fixed(body_hash);
    w.finish()
}

fn message_key_nonce(mk: &Secret32) -> (Secret32, [u8; 12]) {
    primitives::derive_key_nonce(None, mk.expose(), b"cinder/v1/sk/msg")
}

impl SenderKeyMessage {
    /// Fixed binary encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(160 + self.ciphertext.len());
        w.u8(VERSION)
            .bytes(&self.room_id)
            .fixed(&self.distribution_id)
            .u32(self.iteration)
            .fixed(&self.sender_device.0)
            .bytes(&self.ciphertext)
            .fixed(&self.signature);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "sender key message");
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let m = Self {
            room_id: r.bytes(MAX_ROOM_ID)?.to_vec(),
            distribution_id: r.array()?,
            iteration: r.u32()?,
            sender_device: DeviceId(r.array()?),
            ciphertext: r.bytes(MAX_CIPHERTEXT)?.to_vec(),
            signature: r.array()?,
        };
        if m.ciphertext.len() < primitives::TAG_LEN {
            return Err(CryptoError::Malformed("sender key message"));
        }
        r.finish()?;
        Ok(m)
    }
}

impl SenderKeyState {
    /// A fresh sender key for `room_id`, sent from `sender_device`.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] for an over-long room id, [`CryptoError::Rng`].
    pub fn new(room_id: &[u8], sender_device: DeviceId, now: u64) -> Result<Self> {
        if room_id.len() > MAX_ROOM_ID {
            return Err(CryptoError::Limit("room id length"));
        }
        Ok(Self {
            room_id: room_id.to_vec(),
            sender_device,
            distribution_id: primitives::random_array()?,
            chain_key: Secret32::random()?,
            iteration: 0,
            signing: SigningKeyPair::generate()?,
            created_at: now,
        })
    }

    /// Replaces this key with a fresh one (new distribution id, chain and signing key); the
    /// caller distributes the result to the remaining member devices.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn rotate(&self, _reason: RotationReason, now: u64) -> Result<Self> {
        Self::new(&self.room_id, self.sender_device, now)
    }

    /// Whether age or usage requires rotation now.
    pub fn rotation_due(&self, now: u64) -> Option<RotationReason> {
        if self.iteration >= ROTATE_AFTER_MESSAGES {
            Some(RotationReason::MessageCount)
        } else if now.saturating_sub(self.created_at) >= ROTATE_AFTER {
            Some(RotationReason::Age)
        } else {
            None
        }
    }

    /// Which sender key this is.
    pub fn distribution_id(&self) -> [u8; 16] {
        self.distribution_id
    }

    /// The next iteration to be sent.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The distribution message for member devices: the current chain position, so newcomers
    /// read from here on and never earlier history.
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            room_id: self.room_id.clone(),
            sender_device: self.sender_device,
            distribution_id: self.distribution_id,
            iteration: self.iteration,
            chain_key: self.chain_key.clone(),
            signing_public: self.signing.public(),
        }
    }

    /// Encrypts and signs one room message's key material; `body_hash` binds the shared body.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when the chain is exhausted.
    pub fn encrypt(&mut self, plaintext: &[u8], body_hash: &[u8; 32]) -> Result<SenderKeyMessage> {
        let iteration = self.iteration;
        let next = iteration
            .checked_add(1)
            .ok_or(CryptoError::Limit("sender key iterations"))?;
        let mk = kdf_ck(&mut self.chain_key);
        self.iteration = next;
        let (key, nonce) = message_key_nonce(&mk);
        let ad = aad(
            &self.room_id,
            &self.distribution_id,
            iteration,
            &self.sender_device,
        )?;
        let mut msg = SenderKeyMessage {
            room_id: self.room_id.clone(),
            distribution_id: self.distribution_id,
            iteration,
            sender_device: self.sender_device,
            ciphertext: primitives::seal(&key, &nonce, &ad, plaintext),
            signature: [0u8; 64],
        };
        msg.signature = self.signing.sign(&signed_bytes(&msg, body_hash)?);
        Ok(msg)
    }

    /// Serialises the state for the encrypted cache.
    ///
    /// # Security
    /// Holds the chain and signing keys; zeroized on drop.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(200);
        w.u8(VERSION)
            .bytes(&self.room_id)
            .fixed(&self.sender_device.0)
            .fixed(&self.distribution_id)
            .fixed(self.chain_key.expose())
            .u32(self.iteration)
            .fixed(self.signing.secret_bytes().as_slice())
            .u64(self.created_at);
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Restores [`Self::to_secret_bytes`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "sender key state");
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let s = Self {
            room_id: r.bytes(MAX_ROOM_ID)?.to_vec(),
            sender_device: DeviceId(r.array()?),
            distribution_id: r.array()?,
            chain_key: Secret32::from_bytes(r.array()?),
            iteration: r.u32()?,
            signing: SigningKeyPair::from_secret_bytes(&Zeroizing::new(r.array()?)),
            created_at: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }
}

/// A member device's copy of another device's sender key.
pub struct ReceivedSenderKey {
    room_id: Vec<u8>,
    sender_device: DeviceId,
    distribution_id: [u8; 16],
    signing_public: [u8; 32],
    chain_key: Secret32,
    iteration: u32,
    skipped: VecDeque<(u32, Secret32)>,
}

impl ReceivedSenderKey {
    /// Installs a distribution received over a pairwise session.
    pub fn from_distribution(d: &SenderKeyDistribution) -> Self {
        Self {
            room_id: d.room_id.clone(),
            sender_device: d.sender_device,
            distribution_id: d.distribution_id,
            signing_public: d.signing_public,
            chain_key: d.chain_key.clone(),
            iteration: d.iteration,
            skipped: VecDeque::new(),
        }
    }

    /// Which sender key this is.
    pub fn distribution_id(&self) -> [u8; 16] {
        self.distribution_id
    }

    /// How many skipped keys are stored.
    pub fn stored_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Verifies the signature, then decrypts one room message. The state changes only on
    /// success.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] for another room, sender or distribution;
    /// [`CryptoError::BadSignature`]; [`CryptoError::Replay`] for an iteration already used
    /// (or older than this key's start); [`CryptoError::Limit`] for a jump above [`MAX_JUMP`];
    /// [`CryptoError::Integrity`].
    pub fn decrypt(&mut self, msg: &SenderKeyMessage, body_hash: &[u8; 32]) -> Result<Vec<u8>> {
        if msg.room_id != self.room_id
            || msg.sender_device != self.sender_device
            || msg.distribution_id != self.distribution_id
        {
            return Err(CryptoError::UnknownKey);
        }
        primitives::verify_signature(
            &self.signing_public,
            &signed_bytes(msg, body_hash)?,
            &msg.signature,
        )?;
        let ad = aad(
            &self.room_id,
            &self.distribution_id,
            msg.iteration,
            &self.sender_device,
        )?;
        if msg.iteration < self.iteration {
            let pos = self
                .skipped
                .iter()
                .position(|(i, _)| *i == msg.iteration)
                .ok_or(CryptoError::Replay)?;
            let (key, nonce) = message_key_nonce(&self.skipped[pos].1);
            let pt = primitives::open(&key, &nonce, &ad, &msg.ciphertext)?;
            self.skipped.remove(pos);
            return Ok(pt);
        }
        if msg.iteration - self.iteration > MAX_JUMP {
            return Err(CryptoError::Limit("sender key jump"));
        }
        let mut ck = self.chain_key.clone();
        // Keep only the newest keys that could survive the cap anyway.
        let gap = (msg.iteration - self.iteration) as usize;
        let mut new_skipped = VecDeque::with_capacity(gap.min(MAX_STORED_KEYS));
        for i in self.iteration..msg.iteration {
            let mk = kdf_ck(&mut ck);
            if gap - (i - self.iteration) as usize <= MAX_STORED_KEYS {
                new_skipped.push_back((i, mk));
            }
        }
        let mk = kdf_ck(&mut ck);
        let (key, nonce) = message_key_nonce(&mk);
        let pt = primitives::open(&key, &nonce, &ad, &msg.ciphertext)?;
        self.chain_key = ck;
        self.iteration = msg.iteration.saturating_add(1);
        self.skipped.extend(new_skipped);
        while self.skipped.len() > MAX_STORED_KEYS {
            self.skipped.pop_front();
        }
        Ok(pt)
    }

    /// Serialises the state for the encrypted cache.
    ///
    /// # Security
    /// Holds chain and message keys; zeroized on drop.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(200 + self.skipped.len() * 36);
        w.u8(VERSION)
            .bytes(&self.room_id)
            .fixed(&self.sender_device.0)
            .fixed(&self.distribution_id)
            .fixed(&self.signing_public)
            .fixed(self.chain_key.expose())
            .u32(self.iteration)
            .count(self.skipped.len());
        for (i, k) in &self.skipped {
            w.u32(*i).fixed(k.expose());
        }
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Restores [`Self::to_secret_bytes`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "received sender key");
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let mut s = Self {
            room_id: r.bytes(MAX_ROOM_ID)?.to_vec(),
            sender_device: DeviceId(r.array()?),
            distribution_id: r.array()?,
            signing_public: r.array()?,
            chain_key: Secret32::from_bytes(r.array()?),
            iteration: r.u32()?,
            skipped: VecDeque::new(),
        };
        let n = r.u32()? as usize;
        if n > MAX_STORED_KEYS {
            return Err(CryptoError::Malformed("received sender key"));
        }
        for _ in 0..n {
            s.skipped
                .push_back((r.u32()?, Secret32::from_bytes(r.array()?)));
        }
        r.finish()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SenderKeyState, ReceivedSenderKey) {
        let s = SenderKeyState::new(b"room-1", DeviceId([1; 16]), 0).unwrap();
        let d = SenderKeyDistribution::decode(&s.distribution().encode().unwrap()).unwrap();
        (s, ReceivedSenderKey::from_distribution(&d))
    }

    #[test]
    fn send_receive_out_of_order_and_replay() {
        let (mut s, mut r) = setup();
        let h = [5u8; 32];
        let m0 = s.encrypt(b"zero", &h).unwrap();
        let m1 = s.encrypt(b"one", &h).unwrap();
        let m1 = SenderKeyMessage::decode(&m1.encode().unwrap()).unwrap();
        assert_eq!(r.decrypt(&m1, &h).unwrap(), b"one");
        assert_eq!(r.decrypt(&m0, &h).unwrap(), b"zero");
        assert!(matches!(r.decrypt(&m0, &h), Err(CryptoError::Replay)));
        assert!(matches!(r.decrypt(&m1, &h), Err(CryptoError::Replay)));
    }

    #[test]
    fn forgeries_and_wrong_bodies_are_rejected_before_decryption() {
        let (mut s, mut r) = setup();
        let h = [5u8; 32];
        let m = s.encrypt(b"hi", &h).unwrap();
        // Another body hash: the signature binds the body.
        assert!(matches!(
            r.decrypt(&m, &[6; 32]),
            Err(CryptoError::BadSignature)
        ));
        // A room insider holding the chain key but not the signing key.
        let mut forged = m.clone();
        forged.ciphertext[0] ^= 1;
        assert!(matches!(
            r.decrypt(&forged, &h),
            Err(CryptoError::BadSignature)
        ));
        let mut other_room = m.clone();
        other_room.room_id = b"room-2".to_vec();
        assert!(matches!(
            r.decrypt(&other_room, &h),
            Err(CryptoError::UnknownKey)
        ));
        // Nothing was consumed by the failures.
        assert_eq!(r.decrypt(&m, &h).unwrap(), b"hi");
    }

    #[test]
    fn jumps_are_bounded() {
        let (mut s, mut r) = setup();
        let h = [0u8; 32];
        for _ in 0..=MAX_JUMP {
            kdf_ck(&mut s.chain_key);
            s.iteration += 1;
        }
        let far = s.encrypt(b"far", &h).unwrap();
        assert!(matches!(r.decrypt(&far, &h), Err(CryptoError::Limit(_))));
        let (mut s, mut r) = setup();
        for _ in 0..5000 {
            s.encrypt(b"lost", &h).unwrap();
        }
        let m = s.encrypt(b"after a gap", &h).unwrap();
        assert_eq!(r.decrypt(&m, &h).unwrap(), b"after a gap");
        assert_eq!(r.stored_keys(), MAX_STORED_KEYS);
    }

    #[test]
    fn rotation_cuts_off_old_holders() {
        let (mut s, mut old_member) = setup();
        let h = [0u8; 32];
        s.encrypt(b"before", &h).unwrap();
        let mut rotated = s.rotate(RotationReason::MemberRemoved, 10).unwrap();
        assert_ne!(rotated.distribution_id(), s.distribution_id());
        let m = rotated.encrypt(b"after removal", &h).unwrap();
        // The removed member only holds the old key: it cannot even identify the new chain.
        assert!(matches!(
            old_member.decrypt(&m, &h),
            Err(CryptoError::UnknownKey)
        ));
        // Even if it forged the distribution id, the chain and signing keys differ.
        old_member.distribution_id = rotated.distribution_id();
        assert!(old_member.decrypt(&m, &h).is_err());
        assert_eq!(rotated.rotation_due(10), None);
        assert_eq!(
            rotated.rotation_due(10 + ROTATE_AFTER),
            Some(RotationReason::Age)
        );
    }

    #[test]
    fn states_round_trip() {
        let (mut s, mut r) = setup();
        let h = [0u8; 32];
        let m0 = s.encrypt(b"0", &h).unwrap();
        let m1 = s.encrypt(b"1", &h).unwrap();
        r.decrypt(&m1, &h).unwrap();
        let mut r2 = ReceivedSenderKey::from_secret_bytes(&r.to_secret_bytes().unwrap()).unwrap();
        assert_eq!(r2.decrypt(&m0, &h).unwrap(), b"0");
        let mut s2 = SenderKeyState::from_secret_bytes(&s.to_secret_bytes().unwrap()).unwrap();
        let m2 = s2.encrypt(b"2", &h).unwrap();
        assert_eq!(r2.decrypt(&m2, &h).unwrap(), b"2");
    }
}
