//! The envelope: a fresh random AES-256-GCM content key for every message (`docs/crypto.md` s. 6).
//!
//! For each message a random 32-byte key `K` is drawn; `key || nonce = HKDF(K, "cinder/v1/body")`
//! encrypts the padded payload, and `commitment = HKDF(K, "cinder/v1/commit")` is stored in the
//! body itself. The relay stores that one body; each recipient device gets `K || commitment ||
//! H(body)` (a [`KeyPackage`]) through its pairwise ratchet or the room's sender key, and checks
//! both the body hash and the commitment before decrypting. Because the commitment sits in the
//! shared body, no sender can hand two recipients different keys that open the same body to
//! different plaintexts (AES-GCM alone is not key-committing).
//!
//! Padding: `0x80` then zeros up to the next multiple of 256 bytes below 4 KiB, Padme above.

use zeroize::Zeroizing;

use super::handshake::{PairwiseMessage, Session};
use super::primitives::{self, Secret32};
use super::wire::{Reader, Writer};
use super::{CryptoError, Result};

/// Largest encoded payload accepted (before padding).
pub const MAX_PAYLOAD: usize = 1 << 20;
const BODY_VERSION: u8 = 1;
const BODY_HEADER: usize = 1 + 32;
const MAX_CONVERSATION_ID: usize = 64;
const MAX_NAME: usize = 255;

/// A 128-bit random message id, the unit of deduplication.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random id.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn random() -> Result<Self> {
        Ok(Self(primitives::random_array()?))
    }
}

/// Expiry and burn-on-read timers, carried inside the encrypted payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Timers {
    /// Seconds after sending when the message expires everywhere.
    pub expire_after: Option<u32>,
    /// Seconds after the recipient first displays it when it burns.
    pub burn_after: Option<u32>,
}

/// A receipt's meaning.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReceiptKind {
    /// The recipient's device stored the message.
    Delivered,
    /// The recipient displayed the message.
    Read,
}

/// Where an encrypted file or voice clip is, and how to open it.
#[derive(Clone, PartialEq, Eq)]
pub struct FilePointer {
    /// The relay's id for the ciphertext blob.
    pub blob_id: [u8; 16],
    /// The C2SP input key (secret).
    pub input_key: Secret32,
    /// Ciphertext length in bytes.
    pub ciphertext_len: u64,
    /// Plaintext length in bytes (before padding).
    pub plaintext_len: u64,
    /// SHA-256 of the whole ciphertext, checked before decrypting.
    pub ciphertext_sha256: [u8; 32],
    /// MIME type.
    pub mime: String,
    /// Original file name.
    pub name: String,
    /// Bytes of padding appended to the plaintext before encryption.
    pub padding: u64,
}

impl std::fmt::Debug for FilePointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePointer")
            .field("blob_id", &self.blob_id)
            .field("input_key", &"<redacted>")
            .field("plaintext_len", &self.plaintext_len)
            .field("mime", &self.mime)
            .field(
                "name",
                &format_args!("<redacted, {} bytes>", self.name.len()),
            )
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PayloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => write!(f, "Text(<redacted, {} bytes>)", t.len()),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Clip(p) => f.debug_tuple("Clip").field(p).finish(),
            Self::Receipt { kind, message_ids } => f
                .debug_struct("Receipt")
                .field("kind", kind)
                .field("message_ids", message_ids)
                .finish(),
            Self::Control(b) => write!(f, "Control(<redacted, {} bytes>)", b.len()),
        }
    }
}

impl PartialEq for Secret32 {
    fn eq(&self, other: &Self) -> bool {
        primitives::ct_eq(self.expose(), other.expose())
    }
}
impl Eq for Secret32 {}

/// What a payload carries.
///
/// `Debug` shows a text's and a control message's length, never their content.
#[derive(Clone, PartialEq, Eq)]
pub enum PayloadKind {
    /// A text message.
    Text(String),
    /// An attachment.
    File(FilePointer),
    /// A push-to-talk voice clip.
    Clip(FilePointer),
    /// A delivery or read receipt for earlier messages.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// The messages it is for.
        message_ids: Vec<MessageId>,
    },
    /// A control message whose inner encoding belongs to the session layer.
    Control(Vec<u8>),
}

/// The plaintext inside a body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Payload {
    /// 128-bit random id.
    pub message_id: MessageId,
    /// Sender's clock, milliseconds since the Unix epoch (informational; the relay's receive
    /// time bounds expiry).
    pub sent_at_ms: u64,
    /// The conversation (or room) id.
    pub conversation: Vec<u8>,
    /// The content.
    pub kind: PayloadKind,
    /// Expiry and burn timers.
    pub timers: Timers,
    /// The message this one answers, if any.
    pub reply_to: Option<MessageId>,
}

fn write_opt_u32(w: &mut Writer, v: Option<u32>) {
    match v {
        Some(v) => w.u8(1).u32(v),
        None => w.u8(0),
    };
}

fn read_opt_u32(r: &mut Reader<'_>) -> Result<Option<u32>> {
    Ok(if r.bool()? { Some(r.u32()?) } else { None })
}

fn write_pointer(w: &mut Writer, p: &FilePointer) {
    w.fixed(&p.blob_id)
        .fixed(p.input_key.expose())
        .u64(p.ciphertext_len)
        .u64(p.plaintext_len)
        .fixed(&p.ciphertext_sha256)
        .bytes(p.mime.as_bytes())
        .bytes(p.name.as_bytes())
        .u64(p.padding);
}

fn read_pointer(r: &mut Reader<'_>) -> Result<FilePointer> {
    Ok(FilePointer {
        blob_id: r.array()?,
        input_key: Secret32::from_bytes(r.array()?),
        ciphertext_len: r.u64()?,
        plaintext_len: r.u64()?,
        ciphertext_sha256: r.array()?,
        mime: r.string(MAX_NAME)?.to_owned(),
        name: r.string(MAX_NAME)?.to_owned(),
        padding: r.u64()?,
    })
}

impl Payload {
    /// Fixed binary encoding (the plaintext that gets padded and encrypted).
    ///
    /// # Security
    /// Holds message content and possibly file keys; zeroized on drop.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(128);
        w.u8(1)
            .fixed(&self.message_id.0)
            .u64(self.sent_at_ms)
            .bytes(&self.conversation);
        write_opt_u32(&mut w, self.timers.expire_after);
        write_opt_u32(&mut w, self.timers.burn_after);
        w.opt_fixed(self.reply_to.as_ref().map(|m| &m.0[..]));
        match &self.kind {
            PayloadKind::Text(t) => {
                w.u8(1).bytes(t.as_bytes());
            }
            PayloadKind::File(p) => {
                w.u8(2);
                write_pointer(&mut w, p);
            }
            PayloadKind::Clip(p) => {
                w.u8(3);
                write_pointer(&mut w, p);
            }
            PayloadKind::Receipt { kind, message_ids } => {
                w.u8(4)
                    .u8(match kind {
                        ReceiptKind::Delivered => 0,
                        ReceiptKind::Read => 1,
                    })
                    .count(message_ids.len());
                for id in message_ids {
                    w.fixed(&id.0);
                }
            }
            PayloadKind::Control(c) => {
                w.u8(5).bytes(c);
            }
        }
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "payload");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let message_id = MessageId(r.array()?);
        let sent_at_ms = r.u64()?;
        let conversation = r.bytes(MAX_CONVERSATION_ID)?.to_vec();
        let timers = Timers {
            expire_after: read_opt_u32(&mut r)?,
            burn_after: read_opt_u32(&mut r)?,
        };
        let reply_to = r.opt_array()?.map(MessageId);
        let kind = match r.u8()? {
            1 => PayloadKind::Text(r.string(MAX_PAYLOAD)?.to_owned()),
            2 => PayloadKind::File(read_pointer(&mut r)?),
            3 => PayloadKind::Clip(read_pointer(&mut r)?),
            4 => {
                let kind = match r.u8()? {
                    0 => ReceiptKind::Delivered,
                    1 => ReceiptKind::Read,
                    _ => return Err(CryptoError::Malformed("payload")),
                };
                let n = r.u32()? as usize;
                if n > 4096 {
                    return Err(CryptoError::Malformed("payload"));
                }
                let mut message_ids = Vec::with_capacity(n);
                for _ in 0..n {
                    message_ids.push(MessageId(r.array()?));
                }
                PayloadKind::Receipt { kind, message_ids }
            }
            5 => PayloadKind::Control(r.bytes(MAX_PAYLOAD)?.to_vec()),
            _ => return Err(CryptoError::Malformed("payload")),
        };
        r.finish()?;
        Ok(Self {
            message_id,
            sent_at_ms,
            conversation,
            kind,
            timers,
            reply_to,
        })
    }
}

/// The per-message key material delivered to each recipient device: `K || commitment || H(body)`.
#[derive(Clone)]
pub struct KeyPackage {
    /// The content key.
    pub key: Secret32,
    /// `HKDF(K, "cinder/v1/commit")`.
    pub commitment: [u8; 32],
    /// SHA-256 of the body blob.
    pub body_hash: [u8; 32],
}

/// Length of an encoded [`KeyPackage`].
pub const KEY_PACKAGE_LEN: usize = 1 + 32 + 32 + 32;

impl KeyPackage {
    /// Fixed binary encoding.
    ///
    /// # Security
    /// Contains the content key; zeroized on drop.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut w = Writer::with_capacity(KEY_PACKAGE_LEN);
        w.u8(1)
            .fixed(self.key.expose())
            .fixed(&self.commitment)
            .fixed(&self.body_hash);
        Ok(Zeroizing::new(w.finish()?))
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "key package");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let p = Self {
            key: Secret32::from_bytes(r.array()?),
            commitment: r.array()?,
            body_hash: r.array()?,
        };
        r.finish()?;
        Ok(p)
    }
}

fn commitment(key: &Secret32) -> [u8; 32] {
    let mut c = [0u8; 32];
    // 32 bytes is within HKDF's limit.
    let _ = primitives::hkdf_sha256(None, key.expose(), b"cinder/v1/commit", &mut c);
    c
}

fn body_aad(commitment: &[u8; 32]) -> Vec<u8> {
    let mut aad = b"cinder/v1/body".to_vec();
    aad.extend_from_slice(commitment);
    aad
}

/// The padded length for `n` bytes of plaintext (room for the `0x80` marker included).
pub fn padded_len(n: usize) -> usize {
    let l = n + 1;
    if l <= 4096 {
        l.div_ceil(256) * 256
    } else {
        padme(l)
    }
}

/// Padmé (Nikitin et al., 2019): rounds `l` up so that at most O(log log l) bits leak.
pub fn padme(l: usize) -> usize {
    if l < 2 {
        return l;
    }
    let e = usize::BITS - 1 - l.leading_zeros(); // floor(log2 l)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1 (e is a u32)
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (l + mask) & !mask
}

fn pad(data: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(padded_len(data.len())));
    out.extend_from_slice(data);
    out.push(0x80);
    out.resize(padded_len(data.len()), 0);
    out
}

fn unpad(data: &mut Vec<u8>) -> Result<()> {
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(CryptoError::Malformed("padding"))?;
    if data[end] != 0x80 {
        return Err(CryptoError::Malformed("padding"));
    }
    data.truncate(end);
    Ok(())
}

/// Encrypts a payload under a fresh content key: returns the key package for the recipients
/// and the body blob for the relay.
///
/// # Errors
/// [`CryptoError::Limit`] for a payload above [`MAX_PAYLOAD`], [`CryptoError::Rng`].
pub fn seal(payload: &Payload) -> Result<(KeyPackage, Vec<u8>)> {
    let plain = payload.encode()?;
    if plain.len() > MAX_PAYLOAD {
        return Err(CryptoError::Limit("payload size"));
    }
    let key = Secret32::random()?;
    let commitment = commitment(&key);
    let (k, nonce) = primitives::derive_key_nonce(None, key.expose(), b"cinder/v1/body");
    let ct = primitives::seal(&k, &nonce, &body_aad(&commitment), &pad(&plain));
    let mut body = Vec::with_capacity(BODY_HEADER + ct.len());
    body.push(BODY_VERSION);
    body.extend_from_slice(&commitment);
    body.extend_from_slice(&ct);
    let body_hash = primitives::sha256(&[&body]);
    Ok((
        KeyPackage {
            key,
            commitment,
            body_hash,
        },
        body,
    ))
}

/// Verifies and decrypts a body with a recipient's key package.
///
/// Order matters: body hash, then commitment, then AEAD; no plaintext is released before the
/// tag verifies.
///
/// # Errors
/// [`CryptoError::Integrity`] for a wrong hash, commitment or tag; [`CryptoError::Malformed`]
/// for bad padding or payload encoding.
pub fn open(package: &KeyPackage, body: &[u8]) -> Result<Payload> {
    if body.len() < BODY_HEADER + primitives::TAG_LEN {
        return Err(CryptoError::Malformed("message body"));
    }
    if body[0] != BODY_VERSION {
        return Err(CryptoError::UnsupportedVersion(body[0]));
    }
    if !primitives::ct_eq(&primitives::sha256(&[body]), &package.body_hash) {
        return Err(CryptoError::Integrity);
    }
    let mut stored = [0u8; 32];
    stored.copy_from_slice(&body[1..BODY_HEADER]);
    let expected = commitment(&package.key);
    if !primitives::ct_eq(&expected, &stored) || !primitives::ct_eq(&expected, &package.commitment)
    {
        return Err(CryptoError::Integrity);
    }
    let (k, nonce) = primitives::derive_key_nonce(None, package.key.expose(), b"cinder/v1/body");
    let mut plain = Zeroizing::new(primitives::open(
        &k,
        &nonce,
        &body_aad(&stored),
        &body[BODY_HEADER..],
    )?);
    unpad(&mut plain)?;
    Payload::decode(&plain)
}

/// Wraps a key package for one recipient device through its pairwise session.
///
/// # Errors
/// As [`Session::encrypt`].
pub fn wrap_key(session: &mut Session, package: &KeyPackage) -> Result<PairwiseMessage> {
    session.encrypt(&package.encode()?)
}

/// Unwraps a key package received through a pairwise session.
///
/// # Errors
/// As [`Session::decrypt`], or [`CryptoError::Malformed`].
pub fn unwrap_key(session: &mut Session, msg: &PairwiseMessage, now: u64) -> Result<KeyPackage> {
    let bytes = Zeroizing::new(session.decrypt(msg, now)?);
    KeyPackage::decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Payload {
        Payload {
            message_id: MessageId::random().unwrap(),
            sent_at_ms: 1_700_000_000_000,
            conversation: b"dm:alice:bob".to_vec(),
            kind: PayloadKind::Text(t.to_owned()),
            timers: Timers {
                expire_after: Some(60),
                burn_after: None,
            },
            reply_to: None,
        }
    }

    #[test]
    fn debug_of_a_payload_hides_text_and_file_names() {
        let shown = format!("{:?}", text("the launch code is 0000"));
        assert!(!shown.contains("launch code"), "{shown}");
        assert!(shown.contains("Text(<redacted, 23 bytes>)"), "{shown}");
        let ptr = FilePointer {
            blob_id: [1; 16],
            input_key: Secret32::from_bytes([7; 32]),
            ciphertext_len: 10,
            plaintext_len: 3,
            ciphertext_sha256: [0; 32],
            mime: "text/plain".into(),
            name: "secret-plans.txt".into(),
            padding: 0,
        };
        let shown = format!("{:?}", PayloadKind::File(ptr));
        assert!(!shown.contains("secret-plans"), "{shown}");
        assert!(shown.contains("text/plain"), "{shown}");
    }

    #[test]
    fn every_message_gets_a_fresh_key_and_round_trips() {
        let p = text("hello");
        let (k1, b1) = seal(&p).unwrap();
        let (k2, b2) = seal(&p).unwrap();
        assert_ne!(k1.key.expose(), k2.key.expose());
        assert_ne!(b1, b2);
        assert_eq!(open(&k1, &b1).unwrap(), p);
        let k = KeyPackage::decode(&k1.encode().unwrap()).unwrap();
        assert_eq!(open(&k, &b1).unwrap(), p);
    }

    #[test]
    fn wrong_commitment_and_tampering_are_integrity_errors() {
        let p = text("commit");
        let (k, body) = seal(&p).unwrap();
        // A package whose commitment does not match its key.
        let mut bad = k.clone();
        bad.commitment[0] ^= 1;
        assert!(matches!(open(&bad, &body), Err(CryptoError::Integrity)));
        // A different key for the same body (the invisible-salamanders attack).
        let mut other = k.clone();
        other.key = Secret32::random().unwrap();
        other.commitment = commitment(&other.key);
        assert!(matches!(open(&other, &body), Err(CryptoError::Integrity)));
        // A flipped body byte, in the commitment and in the ciphertext.
        for i in [1, BODY_HEADER + 3] {
            let mut b = body.clone();
            b[i] ^= 1;
            assert!(matches!(open(&k, &b), Err(CryptoError::Integrity)));
        }
        assert!(open(&k, &body[..10]).is_err());
    }

    #[test]
    fn padding_hides_lengths() {
        for n in [0, 1, 100, 254, 255, 256, 4094, 4095, 4096, 5000, 100_000] {
            let p = padded_len(n);
            assert!(p > n, "{n}");
            if n < 4095 {
                assert_eq!(p % 256, 0);
            }
        }
        assert_eq!(padded_len(0), 256);
        assert_eq!(padded_len(255), 256);
        assert_eq!(padded_len(256), 512);
        // Padmé leaks little: overhead stays under 12 % for large sizes.
        assert!(padme(1_000_000) < 1_120_000);
        let (_, short) = seal(&text("a")).unwrap();
        let (_, longer) = seal(&text(&"a".repeat(150))).unwrap();
        assert_eq!(short.len(), longer.len());
    }

    #[test]
    fn all_payload_kinds_round_trip() {
        let ptr = FilePointer {
            blob_id: [9; 16],
            input_key: Secret32::random().unwrap(),
            ciphertext_len: 1000,
            plaintext_len: 900,
            ciphertext_sha256: [1; 32],
            mime: "image/png".into(),
            name: "cat.png".into(),
            padding: 12,
        };
        assert!(!format!("{ptr:?}").contains(&format!("{:?}", ptr.input_key.expose())));
        for kind in [
            PayloadKind::File(ptr.clone()),
            PayloadKind::Clip(ptr),
            PayloadKind::Receipt {
                kind: ReceiptKind::Read,
                message_ids: vec![MessageId([3; 16])],
            },
            PayloadKind::Control(vec![1, 2, 3]),
        ] {
            let mut p = text("");
            p.kind = kind;
            p.reply_to = Some(MessageId([4; 16]));
            assert_eq!(Payload::decode(&p.encode().unwrap()).unwrap(), p);
        }
    }
}
