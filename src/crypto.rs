//! The cryptographic core: everything `docs/crypto.md` sections 2-8 and 10 describe.
//!
//! This module is a pure leaf: it imports no other Cinder module, does no network I/O and never
//! touches tokio. The only I/O it performs is over caller-supplied `Read`/`Write`/`Seek` values
//! (chunked file encryption) and the temp-file-then-rename helper that finishes a decryption.
//!
//! Layout, bottom up:
//! - [`wire`]: the fixed, length-prefixed binary encoding of everything signed or MACed;
//! - [`hex`]: the one lowercase hex encoding of bytes as text, for every module;
//! - [`primitives`]: AES-256-GCM, HKDF, HMAC, X25519 (contributory check), Ed25519
//!   (`verify_strict`), ML-KEM-1024, OS randomness, secret byte containers;
//! - [`identity`]: user root keys, device keys, device certificates, revocations;
//! - [`prekeys`]: signed, one-time and post-quantum prekeys, bundles, the device's private store;
//! - [`handshake`]: the PQXDH-style session setup with replay protection;
//! - [`ratchet`]: the Double Ratchet with the limits of section 5;
//! - [`envelope`]: a fresh content key per message, key commitment, padding, payloads;
//! - [`sender_keys`]: room encryption with signed Sender Key messages and rotation;
//! - [`chunked`]: C2SP chunked encryption for files and voice clips;
//! - [`safety`]: safety numbers and their QR payload;
//! - [`passphrase`]: Argon2id key derivation and the wrapped data-encryption key of the cache.
//!
//! Errors are deliberately coarse where detail would help an attacker: every authentication
//! failure is [`CryptoError::Integrity`] or [`CryptoError::BadSignature`].

pub mod chunked;
pub mod envelope;
pub mod handshake;
pub mod hex;
pub mod identity;
/// The signed, hash-chained membership log of rooms and group DMs.
pub mod membership;
pub mod passphrase;
pub mod prekeys;
pub mod primitives;
pub mod ratchet;
pub mod safety;
pub mod sender_keys;
pub mod wire;

/// Everything that can go wrong in the crypto core.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// An AEAD tag, a key commitment or a hash did not verify.
    #[error("integrity check failed")]
    Integrity,
    /// A signature did not verify under `verify_strict`.
    #[error("bad signature")]
    BadSignature,
    /// Input could not be decoded; the string names what was being decoded.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Input carries a version this build does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// An X25519 exchange produced the all-zero (non-contributory) result.
    #[error("key agreement was not contributory")]
    NonContributory,
    /// A message that was already processed arrived again.
    #[error("replayed message")]
    Replay,
    /// A bound of the protocol (skipped keys, jump size, chunk count, lengths) was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(&'static str),
    /// A certificate chain does not lead to the pinned root key.
    #[error("certificate chain does not verify")]
    BadChain,
    /// The device was revoked by its user's root key.
    #[error("device revoked")]
    Revoked,
    /// A key the message refers to is not (or no longer) held.
    #[error("unknown key")]
    UnknownKey,
    /// The stream ended before its final chunk.
    #[error("truncated ciphertext")]
    Truncated,
    /// A key of the wrong length was supplied.
    #[error("invalid key size")]
    InvalidKeySize,
    /// The operating system's random number generator failed.
    #[error("randomness unavailable")]
    Rng,
    /// Reading or writing the caller's stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for the crypto core.
pub type Result<T> = std::result::Result<T, CryptoError>;
