//! Prekeys and prekey bundles (`docs/crypto.md` sections 3 and 4).
//!
//! A device publishes a signed X25519 prekey (rotated every 7 days, the old private half kept 30
//! days so late initial messages still decrypt), a batch of one-time X25519 prekeys (upload 100,
//! refill below 25), and ML-KEM-1024 prekeys: a one-time batch plus a last-resort key for when
//! the batch runs dry. [`DevicePrekeys`] is the device's private side, including the seen-set that
//! rejects replayed initial messages.

use std::collections::{BTreeMap, VecDeque};

use zeroize::Zeroizing;

use super::identity::{DeviceCertificate, Revocation, RootPublicKey, verify_device};
use super::primitives::{self, DhKeyPair, PQ_PUBLIC_LEN, PqKeyPair, SigningKeyPair};
use super::wire::{Reader, Writer};
use super::{CryptoError, Result};

const SPK_CONTEXT: &[u8] = b"cinder/v1/spk";
const PQPK_CONTEXT: &[u8] = b"cinder/v1/pqpk";
const DAY: u64 = 86_400;

/// How many one-time prekeys a device uploads at a time.
pub const ONE_TIME_BATCH: usize = 100;
/// Refill the one-time prekeys when the relay holds fewer than this.
pub const ONE_TIME_REFILL_BELOW: usize = 25;
/// How many one-time ML-KEM prekeys a device uploads at a time (the protocol allows 20-50).
pub const PQ_BATCH: usize = 30;
/// Signed prekeys and last-resort PQ keys rotate after this many seconds.
pub const ROTATE_AFTER: u64 = 7 * DAY;
/// Old signed-prekey private halves are kept this long after rotation.
pub const KEEP_OLD_FOR: u64 = 30 * DAY;
/// Bound on the replay seen-set, so a flood of junk cannot grow memory without limit.
const MAX_SEEN: usize = 100_000;

/// A signed X25519 prekey: `Sign_DSK("cinder/v1/spk" || id || public || created_at)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedPrekey {
    /// Identifier chosen by the device.
    pub id: u32,
    /// X25519 public key.
    pub public: [u8; 32],
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// The device signing key's signature.
    pub signature: [u8; 64],
}

impl SignedPrekey {
    fn signed_bytes(id: u32, public: &[u8; 32], created_at: u64) -> Vec<u8> {
        // Fixed-size fields only, so this cannot fail (no length prefix).
        [
            SPK_CONTEXT,
            &id.to_be_bytes(),
            public,
            &created_at.to_be_bytes(),
        ]
        .concat()
    }

    fn write(&self, w: &mut Writer) {
        w.u32(self.id)
            .fixed(&self.public)
            .u64(self.created_at)
            .fixed(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            id: r.u32()?,
            public: r.array()?,
            created_at: r.u64()?,
            signature: r.array()?,
        })
    }
}

/// A one-time X25519 prekey (unsigned: it only adds forward secrecy to DH4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OneTimePrekey {
    /// Identifier chosen by the device.
    pub id: u32,
    /// X25519 public key.
    pub public: [u8; 32],
}

/// A signed ML-KEM-1024 prekey:
/// `Sign_DSK("cinder/v1/pqpk" || id || last_resort || created_at || public)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PqPrekey {
    /// Identifier chosen by the device.
    pub id: u32,
    /// Whether this is the reusable last-resort key.
    pub last_resort: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Encapsulation key, 1,568 bytes.
    pub public: Vec<u8>,
    /// The device signing key's signature.
    pub signature: [u8; 64],
}

impl PqPrekey {
    fn signed_bytes(id: u32, last_resort: bool, created_at: u64, public: &[u8]) -> Vec<u8> {
        // Fixed-size fields only, so this cannot fail (no length prefix).
        [
            PQPK_CONTEXT,
            &id.to_be_bytes(),
            &[u8::from(last_resort)],
            &created_at.to_be_bytes(),
            public,
        ]
        .concat()
    }

    fn write(&self, w: &mut Writer) {
        w.u32(self.id)
            .u8(u8::from(self.last_resort))
            .u64(self.created_at)
            .fixed(&self.public)
            .fixed(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            id: r.u32()?,
            last_resort: r.bool()?,
            created_at: r.u64()?,
            public: r.fixed(PQ_PUBLIC_LEN)?.to_vec(),
            signature: r.array()?,
        })
    }

    /// Encodes the prekey alone (for upload).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(PQ_PUBLIC_LEN + 80);
        self.write(&mut w);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "pq prekey");
        let k = Self::read(&mut r)?;
        r.finish()?;
        Ok(k)
    }
}

/// Everything an initiator fetches to start a session with one device.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrekeyBundle {
    /// The device's certificate.
    pub cert: DeviceCertificate,
    /// Its current signed prekey.
    pub signed_prekey: SignedPrekey,
    /// A one-time prekey, if the relay had one left.
    pub one_time_prekey: Option<OneTimePrekey>,
    /// A one-time PQ prekey, or the last-resort one.
    pub pq_prekey: PqPrekey,
}

impl PrekeyBundle {
    /// Verifies the whole bundle: the device chain to the pinned root, then every prekey
    /// signature under the certified device signing key.
    ///
    /// # Errors
    /// [`CryptoError::BadChain`], [`CryptoError::Revoked`] or [`CryptoError::BadSignature`].
    pub fn verify(
        &self,
        root: &RootPublicKey,
        user_id: &str,
        revocations: &[Revocation],
    ) -> Result<()> {
        verify_device(root, user_id, &self.cert, revocations)?;
        let spk = &self.signed_prekey;
        primitives::verify_signature(
            &self.cert.dsk_public,
            &SignedPrekey::signed_bytes(spk.id, &spk.public, spk.created_at),
            &spk.signature,
        )?;
        let pq = &self.pq_prekey;
        primitives::verify_signature(
            &self.cert.dsk_public,
            &PqPrekey::signed_bytes(pq.id, pq.last_resort, pq.created_at, &pq.public),
            &pq.signature,
        )
    }

    /// Fixed binary encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(2000);
        w.u8(1).bytes(&self.cert.encode()?);
        self.signed_prekey.write(&mut w);
        match &self.one_time_prekey {
            Some(k) => w.u8(1).u32(k.id).fixed(&k.public),
            None => w.u8(0),
        };
        self.pq_prekey.write(&mut w);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "prekey bundle");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let cert = DeviceCertificate::decode(r.bytes(512)?)?;
        let signed_prekey = SignedPrekey::read(&mut r)?;
        let one_time_prekey = if r.bool()? {
            Some(OneTimePrekey {
                id: r.u32()?,
                public: r.array()?,
            })
        } else {
            None
        };
        let pq_prekey = PqPrekey::read(&mut r)?;
        r.finish()?;
        Ok(Self {
            cert,
            signed_prekey,
            one_time_prekey,
            pq_prekey,
        })
    }
}

struct TimedDh {
    id: u32,
    key: DhKeyPair,
    created_at: u64,
}

struct TimedPq {
    id: u32,
    key: PqKeyPair,
    created_at: u64,
}

/// A device's private prekey material and its replay seen-set.
pub struct DevicePrekeys {
    next_id: u32,
    /// Newest last; older ones are kept [`KEEP_OLD_FOR`] after they were replaced.
    signed: Vec<TimedDh>,
    one_time: BTreeMap<u32, DhKeyPair>,
    pq_one_time: BTreeMap<u32, PqKeyPair>,
    /// Newest last, kept like `signed`.
    pq_last_resort: Vec<TimedPq>,
    /// (ephemeral key, signed prekey id) -> expiry, for initial messages already accepted.
    seen: BTreeMap<([u8; 32], u32), u64>,
    seen_order: VecDeque<([u8; 32], u32)>,
}

impl DevicePrekeys {
    /// Creates the store with a first signed prekey and last-resort PQ key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn new(signing: &SigningKeyPair, now: u64) -> Result<Self> {
        let mut s = Self {
            next_id: 1,
            signed: Vec::new(),
            one_time: BTreeMap::new(),
            pq_one_time: BTreeMap::new(),
            pq_last_resort: Vec::new(),
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
        };
        s.new_signed_prekey(signing, now)?;
        s.new_last_resort(signing, now)?;
        Ok(s)
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn new_signed_prekey(&mut self, signing: &SigningKeyPair, now: u64) -> Result<SignedPrekey> {
        let key = DhKeyPair::generate()?;
        let id = self.take_id();
        self.signed.push(TimedDh {
            id,
            key,
            created_at: now,
        });
        Ok(self.signed_prekey_public(signing, self.signed.len() - 1))
    }

    fn signed_prekey_public(&self, signing: &SigningKeyPair, idx: usize) -> SignedPrekey {
        let k = &self.signed[idx];
        let public = k.key.public();
        SignedPrekey {
            id: k.id,
            public,
            created_at: k.created_at,
            signature: signing.sign(&SignedPrekey::signed_bytes(k.id, &public, k.created_at)),
        }
    }

    fn new_last_resort(&mut self, signing: &SigningKeyPair, now: u64) -> Result<PqPrekey> {
        let key = PqKeyPair::generate()?;
        let id = self.take_id();
        let public = key.public();
        let signature = signing.sign(&PqPrekey::signed_bytes(id, true, now, &public));
        self.pq_last_resort.push(TimedPq {
            id,
            key,
            created_at: now,
        });
        Ok(PqPrekey {
            id,
            last_resort: true,
            created_at: now,
            public,
            signature,
        })
    }

    /// The current signed prekey, signed afresh for publication.
    pub fn current_signed_prekey(&self, signing: &SigningKeyPair) -> Option<SignedPrekey> {
        (!self.signed.is_empty()).then(|| self.signed_prekey_public(signing, self.signed.len() - 1))
    }

    /// The current last-resort PQ prekey, for publication.
    pub fn current_last_resort(&self, signing: &SigningKeyPair) -> Option<PqPrekey> {
        self.pq_last_resort.last().map(|k| {
            let public = k.key.public();
            PqPrekey {
                id: k.id,
                last_resort: true,
                created_at: k.created_at,
                signature: signing.sign(&PqPrekey::signed_bytes(k.id, true, k.created_at, &public)),
                public,
            }
        })
    }

    /// Rotates the signed prekey and last-resort PQ key when they are older than 7 days, and
    /// forgets replaced private keys older than 30 days. Returns the new public keys, if any.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn rotate(
        &mut self,
        signing: &SigningKeyPair,
        now: u64,
    ) -> Result<(Option<SignedPrekey>, Option<PqPrekey>)> {
        let spk_due = self
            .signed
            .last()
            .is_none_or(|k| now.saturating_sub(k.created_at) >= ROTATE_AFTER);
        let spk = if spk_due {
            Some(self.new_signed_prekey(signing, now)?)
        } else {
            None
        };
        let pq_due = self
            .pq_last_resort
            .last()
            .is_none_or(|k| now.saturating_sub(k.created_at) >= ROTATE_AFTER);
        let pq = if pq_due {
            Some(self.new_last_resort(signing, now)?)
        } else {
            None
        };
        // A replaced key's "retirement" starts when its successor was created.
        let keep = |successor_created: u64| now.saturating_sub(successor_created) < KEEP_OLD_FOR;
        let successors: Vec<u64> = self.signed.iter().skip(1).map(|k| k.created_at).collect();
        let mut i = 0;
        self.signed.retain(|_| {
            let retain = successors.get(i).is_none_or(|&s| keep(s));
            i += 1;
            retain
        });
        let successors: Vec<u64> = self
            .pq_last_resort
            .iter()
            .skip(1)
            .map(|k| k.created_at)
            .collect();
        let mut i = 0;
        self.pq_last_resort.retain(|_| {
            let retain = successors.get(i).is_none_or(|&s| keep(s));
            i += 1;
            retain
        });
        self.seen.retain(|_, expiry| *expiry > now);
        let seen = &self.seen;
        self.seen_order.retain(|k| seen.contains_key(k));
        Ok((spk, pq))
    }

    /// Generates `n` one-time X25519 prekeys.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn generate_one_time(&mut self, n: usize) -> Result<Vec<OneTimePrekey>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = DhKeyPair::generate()?;
            let id = self.take_id();
            out.push(OneTimePrekey {
                id,
                public: key.public(),
            });
            self.one_time.insert(id, key);
        }
        Ok(out)
    }

    /// Generates `n` signed one-time ML-KEM-1024 prekeys.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn generate_pq_one_time(
        &mut self,
        signing: &SigningKeyPair,
        n: usize,
        now: u64,
    ) -> Result<Vec<PqPrekey>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = PqKeyPair::generate()?;
            let id = self.take_id();
            let public = key.public();
            let signature = signing.sign(&PqPrekey::signed_bytes(id, false, now, &public));
            out.push(PqPrekey {
                id,
                last_resort: false,
                created_at: now,
                public,
                signature,
            });
            self.pq_one_time.insert(id, key);
        }
        Ok(out)
    }

    /// How many one-time X25519 private keys are still held.
    pub fn one_time_count(&self) -> usize {
        self.one_time.len()
    }

    /// How many one-time PQ private keys are still held.
    pub fn pq_one_time_count(&self) -> usize {
        self.pq_one_time.len()
    }

    pub(crate) fn signed_key(&self, id: u32) -> Option<&DhKeyPair> {
        self.signed.iter().find(|k| k.id == id).map(|k| &k.key)
    }

    pub(crate) fn signed_created_at(&self, id: u32) -> Option<u64> {
        self.signed
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.created_at)
    }

    pub(crate) fn one_time_key(&self, id: u32) -> Option<&DhKeyPair> {
        self.one_time.get(&id)
    }

    pub(crate) fn pq_key(&self, id: u32) -> Option<&PqKeyPair> {
        self.pq_one_time.get(&id).or_else(|| {
            self.pq_last_resort
                .iter()
                .find(|k| k.id == id)
                .map(|k| &k.key)
        })
    }

    /// Whether an initial message with this ephemeral key and signed prekey was accepted before.
    pub(crate) fn seen_before(&self, ephemeral: &[u8; 32], spk_id: u32) -> bool {
        self.seen.contains_key(&(*ephemeral, spk_id))
    }

    /// Records an accepted initial message and deletes the one-time keys it used, so neither
    /// the message nor its keys can be used again.
    pub(crate) fn consume(
        &mut self,
        ephemeral: &[u8; 32],
        spk_id: u32,
        one_time_id: Option<u32>,
        pq_id: u32,
        now: u64,
    ) {
        if let Some(id) = one_time_id {
            self.one_time.remove(&id);
        }
        self.pq_one_time.remove(&pq_id);
        // Remember it for as long as the signed prekey's private half can exist.
        let spk_created = self.signed_created_at(spk_id).unwrap_or(now);
        let expiry = spk_created + ROTATE_AFTER + KEEP_OLD_FOR;
        let key = (*ephemeral, spk_id);
        if self.seen.insert(key, expiry).is_none() {
            self.seen_order.push_back(key);
        }
        while self.seen_order.len() > MAX_SEEN {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Serialises every private key and the seen-set for the encrypted cache.
    ///
    /// # Security
    /// The result holds private keys; it is zeroized on drop and must only be written to the
    /// encrypted cache.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(8192);
        w.u8(1).u32(self.next_id);
        w.count(self.signed.len());
        for k in &self.signed {
            w.u32(k.id)
                .fixed(k.key.secret_bytes().as_slice())
                .u64(k.created_at);
        }
        w.count(self.one_time.len());
        for (id, k) in &self.one_time {
            w.u32(*id).fixed(k.secret_bytes().as_slice());
        }
        w.count(self.pq_one_time.len());
        for (id, k) in &self.pq_one_time {
            w.u32(*id).fixed(k.seed());
        }
        w.count(self.pq_last_resort.len());
        for k in &self.pq_last_resort {
            w.u32(k.id).fixed(k.key.seed()).u64(k.created_at);
        }
        w.count(self.seen_order.len());
        for key in &self.seen_order {
            let expiry = self.seen.get(key).copied().unwrap_or(0);
            w.fixed(&key.0).u32(key.1).u64(expiry);
        }
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Restores [`Self::to_secret_bytes`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "device prekeys");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let next_id = r.u32()?;
        let mut s = Self {
            next_id,
            signed: Vec::new(),
            one_time: BTreeMap::new(),
            pq_one_time: BTreeMap::new(),
            pq_last_resort: Vec::new(),
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
        };
        let count = |r: &mut Reader<'_>, max: usize| -> Result<usize> {
            let n = r.u32()? as usize;
            if n > max {
                return Err(CryptoError::Malformed("device prekeys"));
            }
            Ok(n)
        };
        for _ in 0..count(&mut r, 1000)? {
            let id = r.u32()?;
            let key = DhKeyPair::from_secret_bytes(r.array()?);
            s.signed.push(TimedDh {
                id,
                key,
                created_at: r.u64()?,
            });
        }
        for _ in 0..count(&mut r, 100_000)? {
            let id = r.u32()?;
            s.one_time
                .insert(id, DhKeyPair::from_secret_bytes(r.array()?));
        }
        for _ in 0..count(&mut r, 100_000)? {
            let id = r.u32()?;
            let seed: Zeroizing<[u8; 64]> = Zeroizing::new(r.array()?);
            s.pq_one_time.insert(id, PqKeyPair::from_seed(&seed));
        }
        for _ in 0..count(&mut r, 1000)? {
            let id = r.u32()?;
            let seed: Zeroizing<[u8; 64]> = Zeroizing::new(r.array()?);
            s.pq_last_resort.push(TimedPq {
                id,
                key: PqKeyPair::from_seed(&seed),
                created_at: r.u64()?,
            });
        }
        for _ in 0..count(&mut r, MAX_SEEN)? {
            let key = (r.array()?, r.u32()?);
            let expiry = r.u64()?;
            s.seen.insert(key, expiry);
            s.seen_order.push_back(key);
        }
        r.finish()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::identity::{DeviceId, DeviceKeys, DeviceRole, UserRootKey};

    fn bundle() -> (UserRootKey, DeviceKeys, DevicePrekeys, PrekeyBundle) {
        let urk = UserRootKey::generate().unwrap();
        let dev = DeviceKeys::generate().unwrap();
        let cert = urk
            .certify(
                "bob",
                DeviceId::random().unwrap(),
                &dev,
                100,
                DeviceRole::User,
            )
            .unwrap();
        let mut pre = DevicePrekeys::new(&dev.signing, 100).unwrap();
        let otk = pre.generate_one_time(3).unwrap();
        let pq = pre.generate_pq_one_time(&dev.signing, 2, 100).unwrap();
        let b = PrekeyBundle {
            cert,
            signed_prekey: pre.current_signed_prekey(&dev.signing).unwrap(),
            one_time_prekey: Some(otk[0]),
            pq_prekey: pq[0].clone(),
        };
        (urk, dev, pre, b)
    }

    #[test]
    fn bundle_round_trips_and_verifies() {
        let (urk, _, _, b) = bundle();
        let d = PrekeyBundle::decode(&b.encode().unwrap()).unwrap();
        assert_eq!(d, b);
        d.verify(&urk.public(), "bob", &[]).unwrap();
    }

    #[test]
    fn tampered_prekeys_fail_verification() {
        let (urk, _, _, b) = bundle();
        let mut spk = b.clone();
        spk.signed_prekey.public[3] ^= 1;
        assert!(matches!(
            spk.verify(&urk.public(), "bob", &[]),
            Err(CryptoError::BadSignature)
        ));
        let mut pq = b.clone();
        pq.pq_prekey.public[100] ^= 1;
        assert!(pq.verify(&urk.public(), "bob", &[]).is_err());
        let mut lr = b;
        lr.pq_prekey.last_resort = true;
        assert!(lr.verify(&urk.public(), "bob", &[]).is_err());
    }

    #[test]
    fn rotation_keeps_old_keys_for_thirty_days() {
        let (_, dev, mut pre, b) = bundle();
        let old = b.signed_prekey.id;
        let (spk, _) = pre.rotate(&dev.signing, 100 + ROTATE_AFTER).unwrap();
        assert!(spk.is_some());
        assert!(pre.signed_key(old).is_some());
        pre.rotate(&dev.signing, 100 + ROTATE_AFTER + KEEP_OLD_FOR + 1)
            .unwrap();
        assert!(pre.signed_key(old).is_none());
    }

    #[test]
    fn secret_state_round_trips() {
        let (_, dev, mut pre, b) = bundle();
        pre.consume(
            &[7; 32],
            b.signed_prekey.id,
            Some(b.one_time_prekey.unwrap().id),
            b.pq_prekey.id,
            100,
        );
        let bytes = pre.to_secret_bytes().unwrap();
        let back = DevicePrekeys::from_secret_bytes(&bytes).unwrap();
        assert_eq!(back.one_time_count(), 2);
        assert_eq!(back.pq_one_time_count(), 1);
        assert!(back.seen_before(&[7; 32], b.signed_prekey.id));
        assert_eq!(
            back.current_signed_prekey(&dev.signing).unwrap().public,
            b.signed_prekey.public
        );
        for n in 0..bytes.len().min(200) {
            assert!(DevicePrekeys::from_secret_bytes(&bytes[..n]).is_err());
        }
    }
}
