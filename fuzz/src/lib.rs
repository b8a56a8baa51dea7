//! Helpers shared by the fuzz targets and the seed generator (`examples/seeds.rs`).
//!
//! Every target asserts more than "does not panic": a value that decodes must re-encode to the
//! exact input (wire formats), or at least re-encode stably (secret cache states whose encoding
//! is not canonical), and authenticated formats must only ever accept the genuine bytes.

use std::io::{Cursor, Read};
use std::sync::LazyLock;

use cinder::crypto::CryptoError;
use cinder::crypto::chunked::{self, Encryptor, HEADER_LEN, SALT_LEN, SeekableReader};
use cinder::crypto::envelope::{self, KeyPackage, MessageId, Payload, PayloadKind, Timers};
use cinder::crypto::primitives::{self, Secret32};

/// The fixed input key of the chunked targets.
pub const CHUNK_KEY: [u8; 32] = [0x42; 32];
/// The fixed salt the chunked targets encrypt under, so runs are deterministic.
pub const CHUNK_SALT: [u8; SALT_LEN] = [0x24; SALT_LEN];
/// The fixed content key of the envelope targets.
pub const ENVELOPE_KEY: [u8; 32] = [0x17; 32];

/// Decodes `bytes`; if that succeeds, the value must re-encode to exactly `bytes`.
///
/// # Panics
/// When the re-encoding differs: that is a finding.
pub fn canonical<T, E: AsRef<[u8]>>(
    what: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, CryptoError>,
    encode: impl Fn(&T) -> E,
) -> Option<T> {
    let value = decode(bytes).ok()?;
    assert!(
        encode(&value).as_ref() == bytes,
        "{what}: decoded value re-encodes differently"
    );
    Some(value)
}

/// Decodes `bytes`; if that succeeds, the re-encoding must decode and re-encode to itself.
///
/// # Panics
/// When the re-encoding does not decode or is unstable: that is a finding.
pub fn stable<T, E: AsRef<[u8]>>(
    what: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, CryptoError>,
    encode: impl Fn(&T) -> E,
) -> Option<T> {
    let value = decode(bytes).ok()?;
    let once = encode(&value);
    let again = match decode(once.as_ref()) {
        Ok(v) => v,
        Err(e) => panic!("{what}: re-encoding does not decode: {e}"),
    };
    assert!(
        encode(&again).as_ref() == once.as_ref(),
        "{what}: re-encoding is unstable"
    );
    Some(value)
}

/// The envelope padding (`0x80`, then zeros up to [`envelope::padded_len`]).
pub fn pad(plain: &[u8]) -> Vec<u8> {
    let mut out = plain.to_vec();
    out.push(0x80);
    out.resize(envelope::padded_len(plain.len()), 0);
    out
}

/// A deterministic twin of [`envelope::seal`]: encrypts `padded` (already padded, or any bytes
/// at all) under `key`, returning the key package and body. Lets a target reach the padding and
/// payload decoders behind the AEAD.
pub fn seal_padded(key: &[u8; 32], padded: &[u8]) -> (KeyPackage, Vec<u8>) {
    let key = Secret32::from_bytes(*key);
    let mut commitment = [0u8; 32];
    primitives::hkdf_sha256(None, key.expose(), b"cinder/v1/commit", &mut commitment)
        .expect("32 bytes is within HKDF's limit");
    let (k, nonce) = primitives::derive_key_nonce(None, key.expose(), b"cinder/v1/body");
    let mut aad = b"cinder/v1/body".to_vec();
    aad.extend_from_slice(&commitment);
    let ct = primitives::seal(&k, &nonce, &aad, padded);
    let mut body = Vec::with_capacity(1 + 32 + ct.len());
    body.push(1);
    body.extend_from_slice(&commitment);
    body.extend_from_slice(&ct);
    let body_hash = primitives::sha256(&[&body]);
    (
        KeyPackage {
            key,
            commitment,
            body_hash,
        },
        body,
    )
}

/// A small text payload.
pub fn sample_payload() -> Payload {
    Payload {
        message_id: MessageId([1; 16]),
        sent_at_ms: 1_700_000_000_000,
        conversation: b"dm:alice:bob".to_vec(),
        kind: PayloadKind::Text("hello from the fuzzer".to_owned()),
        timers: Timers {
            expire_after: Some(60),
            burn_after: None,
        },
        reply_to: None,
    }
}

/// A fixed, valid key package, body and the payload they carry.
pub struct EnvelopeFixture {
    /// The key package.
    pub package: KeyPackage,
    /// The body it opens.
    pub body: Vec<u8>,
    /// What the body holds.
    pub payload: Payload,
}

/// The envelope fixture, checked against the real [`envelope::open`] on first use.
pub fn envelope_fixture() -> &'static EnvelopeFixture {
    static FIX: LazyLock<EnvelopeFixture> = LazyLock::new(|| {
        let payload = sample_payload();
        let (package, body) = seal_padded(&ENVELOPE_KEY, &pad(&payload.encode().unwrap()));
        let opened = envelope::open(&package, &body).expect("the fixture must open");
        assert_eq!(opened, payload);
        EnvelopeFixture {
            package,
            body,
            payload,
        }
    });
    &FIX
}

/// The 56-byte header of a stream under [`CHUNK_KEY`], [`CHUNK_SALT`] and `context`.
pub fn chunk_header(context: &[u8]) -> [u8; HEADER_LEN] {
    Encryptor::with_salt(&CHUNK_KEY, context, CHUNK_SALT)
        .expect("32-byte key")
        .header()
}

/// Encrypts `plain` under [`CHUNK_KEY`] and [`CHUNK_SALT`].
pub fn chunk_encrypt(context: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut ct = Vec::new();
    let mut enc = Encryptor::with_salt(&CHUNK_KEY, context, CHUNK_SALT).expect("32-byte key");
    let n = enc
        .encrypt_from(0, &mut &plain[..], &mut ct)
        .expect("writing to a Vec cannot fail");
    assert_eq!(n, ct.len() as u64);
    assert_eq!(n, chunked::ciphertext_len(plain.len() as u64));
    ct
}

/// Decrypts `bytes` with both the streaming decryptor and the seekable reader (open, then
/// `read_to_end`). They must agree; returns the plaintext if both accepted.
///
/// # Panics
/// When the two readers disagree: that is a finding.
pub fn chunk_decrypt_both(key: &[u8], context: &[u8], bytes: &[u8]) -> Option<Vec<u8>> {
    let mut streamed = Vec::new();
    let s = chunked::decrypt(key, context, &mut &bytes[..], &mut streamed);
    let seek = SeekableReader::new(key, context, Cursor::new(bytes)).and_then(|mut r| {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok((r.len(), out))
    });
    match (s, seek) {
        (Ok(n), Ok((len, out))) => {
            assert_eq!(n, streamed.len() as u64, "streaming count is wrong");
            assert_eq!(len, n, "seekable length differs from the stream");
            assert!(
                out == streamed,
                "seekable plaintext differs from the stream"
            );
            Some(out)
        }
        (Err(_), Err(_)) => None,
        (Ok(_), Err(e)) => panic!("only the streaming decryptor accepted: seekable said {e}"),
        (Err(e), Ok(_)) => panic!("only the seekable reader accepted: stream said {e}"),
    }
}
