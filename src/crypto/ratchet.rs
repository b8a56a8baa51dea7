//! The pairwise Double Ratchet (`docs/crypto.md` section 5), spec-literal except for the AEAD.
//!
//! - `KDF_RK`: HKDF-SHA-256(salt = RK, ikm = DH output, info "cinder/v1/dr/rk") -> RK' || CK.
//! - `KDF_CK`: MK = HMAC-SHA-256(CK, 0x01), CK' = HMAC-SHA-256(CK, 0x02).
//! - Encrypt: key || nonce = HKDF-SHA-256(salt 0, ikm MK, info "cinder/v1/dr/msg"), AES-256-GCM
//!   with AAD = AD || header, header = DHs_pub(32) || PN(u32) || N(u32).
//!
//! Limits: at most [`MAX_SKIP`] skipped keys per chain step (more is an error, never a loop),
//! at most [`MAX_STORED_SKIPPED`] stored per session, each dropped after [`SKIPPED_KEY_TTL`].
//! When a new skip would store more than the cap, the oldest stored keys are evicted (bounded
//! memory; messages that old are treated as lost) rather than wedging the session for good.
//!
//! Decryption is transactional: a message that fails to authenticate leaves the state exactly
//! as it was, so an attacker cannot desynchronise a session by injecting garbage.

use std::collections::VecDeque;

use zeroize::{Zeroize, Zeroizing};

use super::primitives::{self, DhKeyPair, Secret32};
use super::wire::{Reader, Writer};
use super::{CryptoError, Result};

/// Most message keys skipped in one chain step.
pub const MAX_SKIP: u32 = 1000;
/// Most skipped message keys stored per session.
pub const MAX_STORED_SKIPPED: usize = 2000;
/// Stored skipped keys expire after this many seconds (30 days).
pub const SKIPPED_KEY_TTL: u64 = 30 * 86_400;
/// Largest ratchet message body accepted (plaintext plus tag); key packages are tiny, so this
/// only bounds hostile input.
pub const MAX_CIPHERTEXT: usize = 1 << 20;
const HEADER_LEN: usize = 40;

/// The cleartext ratchet header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub dh: [u8; 32],
    /// Length of the sender's previous sending chain.
    pub pn: u32,
    /// This message's number in the current sending chain.
    pub n: u32,
}

impl Header {
    /// `DHs_pub || PN || N`, big-endian.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(&self.dh);
        out[32..36].copy_from_slice(&self.pn.to_be_bytes());
        out[36..].copy_from_slice(&self.n.to_be_bytes());
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            dh: r.array()?,
            pn: r.u32()?,
            n: r.u32()?,
        })
    }
}

/// A header and its ciphertext.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RatchetMessage {
    /// The cleartext header (authenticated as AAD).
    pub header: Header,
    /// AES-256-GCM ciphertext with tag.
    pub ciphertext: Vec<u8>,
}

impl RatchetMessage {
    /// `header || u32 len || ciphertext`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(HEADER_LEN + 4 + self.ciphertext.len());
        w.fixed(&self.header.encode()).bytes(&self.ciphertext);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "ratchet message");
        let m = Self::read(&mut r)?;
        r.finish()?;
        Ok(m)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let header = Header::read(r)?;
        let ciphertext = r.bytes(MAX_CIPHERTEXT)?.to_vec();
        if ciphertext.len() < primitives::TAG_LEN {
            return Err(CryptoError::Malformed("ratchet message"));
        }
        Ok(Self { header, ciphertext })
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.fixed(&self.header.encode()).bytes(&self.ciphertext);
    }
}

struct SkippedKey {
    dh: [u8; 32],
    n: u32,
    key: Secret32,
    stored_at: u64,
}

/// The parts of the state a decryption may change, copied so a failure can be discarded.
#[derive(Clone)]
struct Chains {
    dhs: DhKeyPair,
    dhr: Option<[u8; 32]>,
    rk: Secret32,
    cks: Option<Secret32>,
    ckr: Option<Secret32>,
    ns: u32,
    nr: u32,
    pn: u32,
}

/// How many earlier receiving ratchet keys are remembered, so that a late duplicate from an
/// old chain is recognised as a replay instead of costing a DH ratchet attempt.
const REMEMBERED_CHAINS: usize = 64;

/// One side of a Double Ratchet session.
pub struct RatchetState {
    chains: Chains,
    skipped: VecDeque<SkippedKey>,
    /// Receiving ratchet keys we have moved past, newest last.
    previous_dhr: VecDeque<[u8; 32]>,
    ad: Vec<u8>,
}

fn kdf_rk(rk: &Secret32, dh_out: &Secret32) -> (Secret32, Secret32) {
    let mut okm = Zeroizing::new([0u8; 64]);
    // 64 bytes is within HKDF's limit, so this cannot fail.
    let _ = primitives::hkdf_sha256(
        Some(rk.expose()),
        dh_out.expose(),
        b"cinder/v1/dr/rk",
        okm.as_mut_slice(),
    );
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    let out = (Secret32::from_bytes(a), Secret32::from_bytes(b));
    a.zeroize();
    b.zeroize();
    out
}

/// Advances a chain key: returns the message key and replaces `ck` with its successor.
pub(crate) fn kdf_ck(ck: &mut Secret32) -> Secret32 {
    let mk = primitives::hmac_sha256(ck.expose(), &[0x01]);
    let next = primitives::hmac_sha256(ck.expose(), &[0x02]);
    *ck = Secret32::from_bytes(next);
    Secret32::from_bytes(mk)
}

fn message_key_nonce(mk: &Secret32) -> (Secret32, [u8; 12]) {
    primitives::derive_key_nonce(None, mk.expose(), b"cinder/v1/dr/msg")
}

impl RatchetState {
    /// The initiator's side: `SK` from the handshake and the responder's ratchet (signed prekey)
    /// public key.
    ///
    /// # Errors
    /// [`CryptoError::NonContributory`] for a low-order peer key, [`CryptoError::Rng`].
    pub fn init_initiator(sk: &Secret32, their_ratchet: [u8; 32], ad: Vec<u8>) -> Result<Self> {
        let dhs = DhKeyPair::generate()?;
        let (rk, cks) = kdf_rk(sk, &dhs.dh(&their_ratchet)?);
        Ok(Self {
            chains: Chains {
                dhs,
                dhr: Some(their_ratchet),
                rk,
                cks: Some(cks),
                ckr: None,
                ns: 0,
                nr: 0,
                pn: 0,
            },
            skipped: VecDeque::new(),
            previous_dhr: VecDeque::new(),
            ad,
        })
    }

    /// The responder's side: `SK` and the key pair whose public half the initiator used.
    pub fn init_responder(sk: &Secret32, our_ratchet: DhKeyPair, ad: Vec<u8>) -> Self {
        Self {
            chains: Chains {
                dhs: our_ratchet,
                dhr: None,
                rk: sk.clone(),
                cks: None,
                ckr: None,
                ns: 0,
                nr: 0,
                pn: 0,
            },
            skipped: VecDeque::new(),
            previous_dhr: VecDeque::new(),
            ad,
        }
    }

    /// The associated data bound into every message (identity keys and certificate hashes).
    pub fn associated_data(&self) -> &[u8] {
        &self.ad
    }

    /// Whether this side can send (the responder can only after its first received message).
    pub fn can_send(&self) -> bool {
        self.chains.cks.is_some()
    }

    /// How many skipped message keys are stored.
    pub fn stored_skipped(&self) -> usize {
        self.skipped.len()
    }

    /// Encrypts one message, advancing the sending chain.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] if this side has no sending chain yet,
    /// [`CryptoError::Limit`] if the chain counter would overflow.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage> {
        let c = &mut self.chains;
        let Some(cks) = c.cks.as_mut() else {
            return Err(CryptoError::UnknownKey);
        };
        let header = Header {
            dh: c.dhs.public(),
            pn: c.pn,
            n: c.ns,
        };
        c.ns =
            c.ns.checked_add(1)
                .ok_or(CryptoError::Limit("chain length"))?;
        let mk = kdf_ck(cks);
        let (key, nonce) = message_key_nonce(&mk);
        let mut aad = Vec::with_capacity(self.ad.len() + HEADER_LEN);
        aad.extend_from_slice(&self.ad);
        aad.extend_from_slice(&header.encode());
        let ciphertext = primitives::seal(&key, &nonce, &aad, plaintext);
        Ok(RatchetMessage { header, ciphertext })
    }

    fn open(&self, mk: &Secret32, msg: &RatchetMessage) -> Result<Vec<u8>> {
        let (key, nonce) = message_key_nonce(mk);
        let mut aad = Vec::with_capacity(self.ad.len() + HEADER_LEN);
        aad.extend_from_slice(&self.ad);
        aad.extend_from_slice(&msg.header.encode());
        primitives::open(&key, &nonce, &aad, &msg.ciphertext)
    }

    /// Decrypts one message at time `now` (seconds), handling skipped and out-of-order messages.
    ///
    /// # Errors
    /// [`CryptoError::Integrity`] for tampering or a wrong AD, [`CryptoError::Replay`] for a
    /// message already decrypted, [`CryptoError::Limit`] for a jump beyond [`MAX_SKIP`],
    /// [`CryptoError::NonContributory`] for a low-order ratchet key. On every error the state is
    /// unchanged, except that skipped keys older than [`SKIPPED_KEY_TTL`] are dropped first.
    pub fn decrypt(&mut self, msg: &RatchetMessage, now: u64) -> Result<Vec<u8>> {
        self.skipped
            .retain(|k| now.saturating_sub(k.stored_at) < SKIPPED_KEY_TTL);
        let h = &msg.header;
        if let Some(pos) = self.skipped.iter().position(|k| k.dh == h.dh && k.n == h.n) {
            let pt = self.open(&self.skipped[pos].key, msg)?;
            self.skipped.remove(pos);
            return Ok(pt);
        }
        if self.previous_dhr.contains(&h.dh) {
            // A chain we moved past, and its key is not stored: already read (or given up on).
            return Err(CryptoError::Replay);
        }
        let mut c = self.chains.clone();
        let mut new_skipped = Vec::new();
        if c.dhr != Some(h.dh) {
            skip_until(&mut c, h.pn, &mut new_skipped, now)?;
            // DH ratchet step.
            c.pn = c.ns;
            c.ns = 0;
            c.nr = 0;
            c.dhr = Some(h.dh);
            let (rk, ckr) = kdf_rk(&c.rk, &c.dhs.dh(&h.dh)?);
            c.dhs = DhKeyPair::generate()?;
            let (rk, cks) = kdf_rk(&rk, &c.dhs.dh(&h.dh)?);
            c.rk = rk;
            c.ckr = Some(ckr);
            c.cks = Some(cks);
        } else if h.n < c.nr {
            return Err(CryptoError::Replay);
        }
        skip_until(&mut c, h.n, &mut new_skipped, now)?;
        let Some(ckr) = c.ckr.as_mut() else {
            return Err(CryptoError::UnknownKey);
        };
        let mk = kdf_ck(ckr);
        c.nr =
            c.nr.checked_add(1)
                .ok_or(CryptoError::Limit("chain length"))?;
        let pt = self.open(&mk, msg)?;
        // Authenticated: commit.
        if let Some(old) = self.chains.dhr.filter(|old| c.dhr != Some(*old)) {
            self.previous_dhr.push_back(old);
            if self.previous_dhr.len() > REMEMBERED_CHAINS {
                self.previous_dhr.pop_front();
            }
        }
        self.chains = c;
        self.skipped.extend(new_skipped);
        while self.skipped.len() > MAX_STORED_SKIPPED {
            self.skipped.pop_front();
        }
        Ok(pt)
    }

    /// Serialises the state for the encrypted cache.
    ///
    /// # Security
    /// Holds root, chain and message keys; zeroized on drop, written only to the encrypted cache.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let c = &self.chains;
        let mut w = Writer::with_capacity(256 + self.skipped.len() * 80);
        w.u8(1)
            .fixed(c.dhs.secret_bytes().as_slice())
            .opt_fixed(c.dhr.as_ref().map(|k| &k[..]))
            .fixed(c.rk.expose())
            .opt_fixed(c.cks.as_ref().map(|k| &k.expose()[..]))
            .opt_fixed(c.ckr.as_ref().map(|k| &k.expose()[..]))
            .u32(c.ns)
            .u32(c.nr)
            .u32(c.pn)
            .bytes(&self.ad)
            .count(self.skipped.len());
        for k in &self.skipped {
            w.fixed(&k.dh)
                .u32(k.n)
                .fixed(k.key.expose())
                .u64(k.stored_at);
        }
        w.count(self.previous_dhr.len());
        for k in &self.previous_dhr {
            w.fixed(k);
        }
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Restores [`Self::to_secret_bytes`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "ratchet state");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let secret =
            |r: &mut Reader<'_>| -> Result<Secret32> { Ok(Secret32::from_bytes(r.array()?)) };
        let opt = |r: &mut Reader<'_>| -> Result<Option<Secret32>> {
            Ok(r.opt_array::<32>()?.map(Secret32::from_bytes))
        };
        let dhs = DhKeyPair::from_secret_bytes(r.array()?);
        let chains = Chains {
            dhs,
            dhr: r.opt_array()?,
            rk: secret(&mut r)?,
            cks: opt(&mut r)?,
            ckr: opt(&mut r)?,
            ns: r.u32()?,
            nr: r.u32()?,
            pn: r.u32()?,
        };
        let ad = r.bytes(4096)?.to_vec();
        let n = r.u32()? as usize;
        if n > MAX_STORED_SKIPPED {
            return Err(CryptoError::Malformed("ratchet state"));
        }
        let mut skipped = VecDeque::with_capacity(n);
        for _ in 0..n {
            skipped.push_back(SkippedKey {
                dh: r.array()?,
                n: r.u32()?,
                key: secret(&mut r)?,
                stored_at: r.u64()?,
            });
        }
        let n = r.u32()? as usize;
        if n > REMEMBERED_CHAINS {
            return Err(CryptoError::Malformed("ratchet state"));
        }
        let mut previous_dhr = VecDeque::with_capacity(n);
        for _ in 0..n {
            previous_dhr.push_back(r.array()?);
        }
        r.finish()?;
        Ok(Self {
            chains,
            skipped,
            previous_dhr,
            ad,
        })
    }
}

fn skip_until(c: &mut Chains, until: u32, out: &mut Vec<SkippedKey>, now: u64) -> Result<()> {
    let (Some(ckr), Some(dhr)) = (c.ckr.as_mut(), c.dhr) else {
        return Ok(());
    };
    if until > c.nr.saturating_add(MAX_SKIP) {
        return Err(CryptoError::Limit("skipped message keys"));
    }
    while c.nr < until {
        let key = kdf_ck(ckr);
        out.push(SkippedKey {
            dh: dhr,
            n: c.nr,
            key,
            stored_at: now,
        });
        c.nr += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pair() -> (RatchetState, RatchetState) {
        let sk = Secret32::random().unwrap();
        let bob_kp = DhKeyPair::generate().unwrap();
        let alice = RatchetState::init_initiator(&sk, bob_kp.public(), b"ad".to_vec()).unwrap();
        let bob = RatchetState::init_responder(&sk, bob_kp, b"ad".to_vec());
        (alice, bob)
    }

    #[test]
    fn ping_pong_and_out_of_order() {
        let (mut a, mut b) = pair();
        assert!(!b.can_send());
        let m1 = a.encrypt(b"one").unwrap();
        let m2 = a.encrypt(b"two").unwrap();
        assert_eq!(b.decrypt(&m2, 0).unwrap(), b"two");
        assert_eq!(b.stored_skipped(), 1);
        assert_eq!(b.decrypt(&m1, 0).unwrap(), b"one");
        let r = b.encrypt(b"reply").unwrap();
        assert_eq!(a.decrypt(&r, 0).unwrap(), b"reply");
        let m3 = a.encrypt(b"three").unwrap();
        assert_eq!(m3.header.pn, 2);
        assert_eq!(b.decrypt(&m3, 0).unwrap(), b"three");
    }

    #[test]
    fn tampered_header_and_wrong_ad_fail_without_state_change() {
        let (mut a, mut b) = pair();
        let m = a.encrypt(b"secret").unwrap();
        let mut bad = m.clone();
        bad.header.n = 0;
        bad.header.pn = 5;
        assert!(matches!(b.decrypt(&bad, 0), Err(CryptoError::Integrity)));
        let mut bad_dh = m.clone();
        bad_dh.header.dh[0] ^= 0x40;
        assert!(b.decrypt(&bad_dh, 0).is_err());
        let mut bad_ct = m.clone();
        bad_ct.ciphertext[0] ^= 1;
        assert!(matches!(b.decrypt(&bad_ct, 0), Err(CryptoError::Integrity)));
        // Wrong associated data: a responder that thinks it talks to someone else.
        let state = b.to_secret_bytes().unwrap();
        let mut wrong_ad = RatchetState::from_secret_bytes(&state).unwrap();
        wrong_ad.ad = b"other".to_vec();
        assert!(matches!(
            wrong_ad.decrypt(&m, 0),
            Err(CryptoError::Integrity)
        ));
        // None of it disturbed the real session.
        assert_eq!(b.decrypt(&m, 0).unwrap(), b"secret");
        assert!(matches!(b.decrypt(&m, 0), Err(CryptoError::Replay)));
    }

    #[test]
    fn late_duplicates_from_old_chains_are_replays() {
        let (mut a, mut b) = pair();
        let m = a.encrypt(b"m").unwrap();
        b.decrypt(&m, 0).unwrap();
        let r = b.encrypt(b"r").unwrap();
        a.decrypt(&r, 0).unwrap();
        let m2 = a.encrypt(b"m2").unwrap();
        b.decrypt(&m2, 0).unwrap();
        let before = b.to_secret_bytes().unwrap();
        assert!(matches!(b.decrypt(&m, 0), Err(CryptoError::Replay)));
        assert_eq!(*before, *b.to_secret_bytes().unwrap());
        let restored = RatchetState::from_secret_bytes(&before).unwrap();
        assert_eq!(restored.previous_dhr.len(), 1);
    }

    #[test]
    fn jumps_beyond_the_limit_are_errors() {
        let (mut a, mut b) = pair();
        let mut last = None;
        for _ in 0..=MAX_SKIP + 1 {
            last = Some(a.encrypt(b"x").unwrap());
        }
        assert!(matches!(
            b.decrypt(&last.unwrap(), 0),
            Err(CryptoError::Limit(_))
        ));
        assert_eq!(b.stored_skipped(), 0);
    }

    #[test]
    fn stored_keys_are_capped_and_expire() {
        let (mut a, mut b) = pair();
        // Three gaps of 900 would store 2,700 keys; the cap keeps 2,000.
        for _ in 0..3 {
            for _ in 0..900 {
                a.encrypt(b"lost").unwrap();
            }
            let m = a.encrypt(b"kept").unwrap();
            assert_eq!(b.decrypt(&m, 10).unwrap(), b"kept");
        }
        assert_eq!(b.stored_skipped(), MAX_STORED_SKIPPED);
        let m = a.encrypt(b"later").unwrap();
        b.decrypt(&m, 10 + SKIPPED_KEY_TTL).unwrap();
        assert_eq!(b.stored_skipped(), 0);
    }

    #[test]
    fn state_survives_serialisation() {
        let (mut a, mut b) = pair();
        let m1 = a.encrypt(b"1").unwrap();
        let m2 = a.encrypt(b"2").unwrap();
        b.decrypt(&m2, 0).unwrap();
        let mut b2 = RatchetState::from_secret_bytes(&b.to_secret_bytes().unwrap()).unwrap();
        assert_eq!(b2.decrypt(&m1, 0).unwrap(), b"1");
        let r = b2.encrypt(b"r").unwrap();
        assert_eq!(a.decrypt(&r, 0).unwrap(), b"r");
        let bytes = RatchetMessage::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(bytes, r);
    }
}
