//! Thin, misuse-resistant wrappers over the audited primitive crates.
//!
//! Everything above this file goes through these functions, so the rules of `docs/crypto.md`
//! section 2 are enforced in one place: AES-256-GCM only, X25519 results must be contributory,
//! Ed25519 always verifies with `verify_strict`, secrets zeroize on drop and have no `Debug`.

use aes_gcm::aead::{Aead as _, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use ml_kem::kem::{Decapsulate, Encapsulate, KeyExport};
use ml_kem::{DecapsulationKey1024, EncapsulationKey1024, MlKem1024};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{CryptoError, Result};

/// Length of an ML-KEM-1024 encapsulation (public) key.
pub const PQ_PUBLIC_LEN: usize = 1568;
/// Length of an ML-KEM-1024 ciphertext.
pub const PQ_CIPHERTEXT_LEN: usize = 1568;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// A 32-byte secret that is wiped when dropped and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    /// Wraps bytes that are secret.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// Fresh random bytes from the OS.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn random() -> Result<Self> {
        Ok(Self(random_array()?))
    }

    /// Borrows the secret bytes.
    ///
    /// # Security
    /// Do not copy the result into a value that outlives this one without zeroizing it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Fills `buf` from the operating system's generator.
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| CryptoError::Rng)
}

/// `N` fresh random bytes.
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA-512 of the concatenation of `parts`.
pub fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SHA-256(key, data).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps the type total.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0u8; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// HKDF-SHA-256 (RFC 5869) into `out`; `salt: None` means a string of zeros, as the RFC says.
///
/// # Errors
/// [`CryptoError::Limit`] if `out` is longer than 255 hash blocks.
pub fn hkdf_sha256(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    hkdf::Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, out)
        .map_err(|_| CryptoError::Limit("hkdf output length"))
}

/// HKDF-Expand with SHA-512 over an arbitrary-length PRK.
///
/// `hkdf` 0.13 refuses a PRK shorter than the hash output, but C2SP chunked encryption uses the
/// 32-byte file key directly as the PRK, so Expand is written here over `hmac` (RFC 5869 2.3).
///
/// # Errors
/// [`CryptoError::Limit`] if `out` is longer than 255 blocks.
pub fn hkdf_expand_sha512(prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    if out.len() > 255 * 64 {
        return Err(CryptoError::Limit("hkdf output length"));
    }
    let mut previous = Zeroizing::new([0u8; 64]);
    let mut have_previous = false;
    for (i, chunk) in out.chunks_mut(64).enumerate() {
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(prk)
            .map_err(|_| CryptoError::InvalidKeySize)?;
        if have_previous {
            mac.update(previous.as_slice());
        }
        mac.update(info);
        // i < 255 is guaranteed by the length check above.
        mac.update(&[(i + 1) as u8]);
        previous.copy_from_slice(&mac.finalize().into_bytes());
        have_previous = true;
        chunk.copy_from_slice(&previous[..chunk.len()]);
    }
    Ok(())
}

/// Derives a one-use AES-256-GCM key and its nonce: `key || nonce = HKDF-SHA-256(salt, ikm, info)`.
///
/// This is the "key used once with its nonce derived beside it" rule of section 2.
pub fn derive_key_nonce(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> (Secret32, [u8; 12]) {
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below the HKDF limit, so this cannot fail.
    let _ = hkdf_sha256(salt, ikm, info, okm.as_mut_slice());
    let mut key = [0u8; 32];
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (Secret32(key), nonce)
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An AES-256-GCM key schedule, reusable across many nonces (chunked files).
pub struct Aead {
    cipher: Aes256Gcm,
}

impl Aead {
    /// Expands a 32-byte key.
    pub fn new(key: &Secret32) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.expose().into()),
        }
    }

    /// Expands a key given as a slice; the length must be 32.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] for any other length.
    pub fn from_slice(key: &[u8]) -> Result<Self> {
        Aes256Gcm::new_from_slice(key)
            .map(|cipher| Self { cipher })
            .map_err(|_| CryptoError::InvalidKeySize)
    }

    /// Encrypts `plaintext`, returning ciphertext with the tag appended.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Nonce::from(*nonce);
        // AES-GCM fails only for inputs beyond 64 GiB, which no caller produces.
        self.cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default()
    }

    /// Decrypts and verifies; plaintext is released only after the tag verifies.
    ///
    /// # Errors
    /// [`CryptoError::Integrity`] on any authentication failure.
    pub fn open(&self, nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        let nonce = Nonce::from(*nonce);
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Integrity)
    }

    /// Encrypts `buf` in place and returns the detached tag.
    pub fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::from(*nonce);
        self.cipher
            .encrypt_inout_detached(&nonce, aad, buf.into())
            .map(Into::into)
            .unwrap_or([0u8; TAG_LEN])
    }

    /// Decrypts `buf` in place after verifying the detached tag.
    ///
    /// # Errors
    /// [`CryptoError::Integrity`]; `buf` is then left encrypted.
    pub fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<()> {
        let nonce = Nonce::from(*nonce);
        let tag = aes_gcm::Tag::from(*tag);
        self.cipher
            .decrypt_inout_detached(&nonce, aad, buf.into(), &tag)
            .map_err(|_| CryptoError::Integrity)
    }
}

/// One-shot AES-256-GCM encryption under a key used once.
pub fn seal(key: &Secret32, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    Aead::new(key).seal(nonce, aad, plaintext)
}

/// One-shot AES-256-GCM decryption.
///
/// # Errors
/// [`CryptoError::Integrity`] on any authentication failure.
pub fn open(key: &Secret32, nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
    Aead::new(key).open(nonce, aad, ciphertext)
}

/// An X25519 key pair whose private half zeroizes on drop.
#[derive(Clone)]
pub struct DhKeyPair {
    secret: StaticSecret,
    public: [u8; 32],
}

impl DhKeyPair {
    /// A fresh key pair from the OS generator.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new(random_array::<32>()?);
        let kp = Self::from_secret_bytes(*bytes);
        bytes.zeroize();
        Ok(kp)
    }

    /// Rebuilds a key pair from its stored private scalar.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The private scalar, for persistence in the encrypted cache.
    ///
    /// # Security
    /// The result is secret; keep it in a zeroizing container.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// X25519 with `their_public`, rejecting non-contributory (low-order) results.
    ///
    /// # Errors
    /// [`CryptoError::NonContributory`] if the peer sent a low-order point.
    pub fn dh(&self, their_public: &[u8; 32]) -> Result<Secret32> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*their_public));
        if !shared.was_contributory() {
            return Err(CryptoError::NonContributory);
        }
        Ok(Secret32(shared.to_bytes()))
    }
}

/// An Ed25519 signing key.
pub struct SigningKeyPair {
    key: SigningKey,
}

impl SigningKeyPair {
    /// A fresh signing key from the OS generator.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self> {
        let bytes = Zeroizing::new(random_array::<32>()?);
        Ok(Self::from_secret_bytes(&bytes))
    }

    /// Rebuilds a signing key from its 32-byte seed.
    pub fn from_secret_bytes(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed, for persistence in the encrypted cache.
    ///
    /// # Security
    /// The result is secret; keep it in a zeroizing container.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public verifying key.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs `msg` (already domain-separated by the caller).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

impl Clone for SigningKeyPair {
    fn clone(&self) -> Self {
        Self::from_secret_bytes(&self.secret_bytes())
    }
}

/// Verifies an Ed25519 signature with `verify_strict` (no malleable or small-order keys).
///
/// # Errors
/// [`CryptoError::BadSignature`] for any failure, including an invalid public key.
pub fn verify_signature(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<()> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| CryptoError::BadSignature)?;
    key.verify_strict(msg, &Signature::from_bytes(sig))
        .map_err(|_| CryptoError::BadSignature)
}

/// An ML-KEM-1024 decapsulation key, stored as its 64-byte seed.
pub struct PqKeyPair {
    seed: Zeroizing<[u8; 64]>,
    dk: DecapsulationKey1024,
}

impl PqKeyPair {
    /// A fresh key pair from the OS generator.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self> {
        Ok(Self::from_seed(&Zeroizing::new(random_array::<64>()?)))
    }

    /// Rebuilds the key pair from its seed (FIPS 203 `d || z`).
    pub fn from_seed(seed: &[u8; 64]) -> Self {
        let dk = DecapsulationKey1024::from_seed((*seed).into());
        Self {
            seed: Zeroizing::new(*seed),
            dk,
        }
    }

    /// The seed, for persistence in the encrypted cache.
    ///
    /// # Security
    /// The result is secret.
    pub fn seed(&self) -> &[u8; 64] {
        &self.seed
    }

    /// The encapsulation key bytes (1,568 bytes).
    pub fn public(&self) -> Vec<u8> {
        self.dk.encapsulation_key().to_bytes().to_vec()
    }

    /// Decapsulates `ct`; a malformed length is an error, a wrong ciphertext yields the
    /// implicit-rejection key (FIPS 203), which then fails the session's first AEAD.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] if `ct` is not 1,568 bytes.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Secret32> {
        let ct = ml_kem::Ciphertext::<MlKem1024>::try_from(ct)
            .map_err(|_| CryptoError::Malformed("ml-kem ciphertext"))?;
        let ss = self.dk.decapsulate(&ct);
        let mut out = [0u8; 32];
        out.copy_from_slice(&ss);
        Ok(Secret32(out))
    }
}

/// Encapsulates to an ML-KEM-1024 public key: returns `(ciphertext, shared secret)`.
///
/// # Errors
/// [`CryptoError::Malformed`] if `public` is not a valid 1,568-byte encapsulation key.
pub fn pq_encapsulate(public: &[u8]) -> Result<(Vec<u8>, Secret32)> {
    let key = ml_kem::kem::Key::<EncapsulationKey1024>::try_from(public)
        .map_err(|_| CryptoError::Malformed("ml-kem public key"))?;
    let ek =
        EncapsulationKey1024::new(&key).map_err(|_| CryptoError::Malformed("ml-kem public key"))?;
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let (ct, ss) = ek.encapsulate_with_rng(&mut rng);
    let mut out = [0u8; 32];
    out.copy_from_slice(&ss);
    Ok((ct.to_vec(), Secret32(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dh_agrees_and_rejects_low_order_points() {
        let a = DhKeyPair::generate().unwrap();
        let b = DhKeyPair::generate().unwrap();
        assert_eq!(
            a.dh(&b.public()).unwrap().expose(),
            b.dh(&a.public()).unwrap().expose()
        );
        assert!(matches!(
            a.dh(&[0u8; 32]),
            Err(CryptoError::NonContributory)
        ));
    }

    #[test]
    fn signatures_verify_strictly() {
        let k = SigningKeyPair::generate().unwrap();
        let sig = k.sign(b"cinder/v1/test");
        verify_signature(&k.public(), b"cinder/v1/test", &sig).unwrap();
        assert!(verify_signature(&k.public(), b"cinder/v1/tesT", &sig).is_err());
    }

    #[test]
    fn kem_round_trip_and_bad_lengths() {
        let kp = PqKeyPair::generate().unwrap();
        let (ct, ss) = pq_encapsulate(&kp.public()).unwrap();
        assert_eq!(ct.len(), PQ_CIPHERTEXT_LEN);
        assert_eq!(kp.decapsulate(&ct).unwrap().expose(), ss.expose());
        assert!(pq_encapsulate(&[0u8; 10]).is_err());
        assert!(kp.decapsulate(&ct[1..]).is_err());
        let again = PqKeyPair::from_seed(kp.seed());
        assert_eq!(again.public(), kp.public());
    }

    #[test]
    fn aead_detects_tampering() {
        let key = Secret32::random().unwrap();
        let ct = seal(&key, &[1; 12], b"aad", b"hello");
        assert_eq!(open(&key, &[1; 12], b"aad", &ct).unwrap(), b"hello");
        assert!(open(&key, &[1; 12], b"aae", &ct).is_err());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&key, &[1; 12], b"aad", &bad).is_err());
    }
}
