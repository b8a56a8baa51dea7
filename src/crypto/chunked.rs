//! C2SP chunked encryption for files and voice clips (`docs/crypto.md` section 8).
//!
//! The AES-256-GCM instantiation of <https://c2sp.org/chunked-encryption> with HKDF-SHA-512:
//! `key(32) || base_nonce(12) || commitment(32) = HKDF-Expand(PRK = input key,
//! info = "c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM" || 0x00 || salt(24) || context)`.
//! The ciphertext is `salt || commitment` (56 bytes) followed by 16 KiB plaintext chunks, each
//! sealed with `nonce = base_nonce XOR counter` (big-endian); the last chunk is always shorter
//! than 16 KiB (possibly empty), which is what makes truncation detectable. Chunk `k` sits at
//! offset `56 + k * 16,400`, so uploads resume and readers seek.
//!
//! Memory is constant by construction: every encryptor, decryptor and reader owns exactly one
//! fixed-size chunk buffer ([`CHUNK_BUFFER_BYTES`]) and never grows it.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::primitives::{self, Aead, Secret32, TAG_LEN};
use super::{CryptoError, Result};

/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// Ciphertext bytes per full chunk.
pub const SEALED_CHUNK: usize = CHUNK_SIZE + TAG_LEN;
/// Salt length.
pub const SALT_LEN: usize = 24;
/// Header length: salt and commitment.
pub const HEADER_LEN: usize = SALT_LEN + 32;
/// The one buffer each streaming object owns.
pub const CHUNK_BUFFER_BYTES: usize = SEALED_CHUNK + 1;
/// Chunks are counted in 38 bits (the specification's limit, 4 PiB).
pub const MAX_CHUNKS: u64 = 1 << 38;
/// Context for attachments.
pub const FILE_CONTEXT: &[u8] = b"cinder/v1/file";
/// Context for voice clips.
pub const CLIP_CONTEXT: &[u8] = b"cinder/v1/clip";
const INFO_PREFIX: &[u8] = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00";

/// Ciphertext length for a plaintext of `n` bytes.
pub fn ciphertext_len(n: u64) -> u64 {
    let full = n / CHUNK_SIZE as u64;
    let last = n % CHUNK_SIZE as u64;
    HEADER_LEN as u64 + full * SEALED_CHUNK as u64 + last + TAG_LEN as u64
}

/// Plaintext length for a ciphertext of `n` bytes, if `n` is a possible ciphertext length.
pub fn plaintext_len(n: u64) -> Option<u64> {
    let body = n.checked_sub(HEADER_LEN as u64)?;
    let full = body / SEALED_CHUNK as u64;
    let last = body % SEALED_CHUNK as u64;
    let last_plain = last.checked_sub(TAG_LEN as u64)?;
    Some(full * CHUNK_SIZE as u64 + last_plain)
}

struct Keys {
    aead: Aead,
    base_nonce: [u8; 12],
    commitment: [u8; 32],
}

fn derive(input_key: &[u8], salt: &[u8; SALT_LEN], context: &[u8]) -> Result<Keys> {
    if input_key.len() != 32 {
        return Err(CryptoError::InvalidKeySize);
    }
    let mut info = Vec::with_capacity(INFO_PREFIX.len() + SALT_LEN + context.len());
    info.extend_from_slice(INFO_PREFIX);
    info.extend_from_slice(salt);
    info.extend_from_slice(context);
    let mut okm = Zeroizing::new([0u8; 76]);
    primitives::hkdf_expand_sha512(input_key, &info, okm.as_mut_slice())?;
    let aead = Aead::from_slice(&okm[..32])?;
    let mut base_nonce = [0u8; 12];
    base_nonce.copy_from_slice(&okm[32..44]);
    let mut commitment = [0u8; 32];
    commitment.copy_from_slice(&okm[44..]);
    Ok(Keys {
        aead,
        base_nonce,
        commitment,
    })
}

fn nonce(base: &[u8; 12], counter: u64) -> [u8; 12] {
    let mut n = *base;
    for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
        *b ^= c;
    }
    n
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Streaming encryptor; see [`encrypt`] for the one-call form.
pub struct Encryptor {
    keys: Keys,
    salt: [u8; SALT_LEN],
    counter: u64,
    buf: Box<[u8; CHUNK_BUFFER_BYTES]>,
}

impl Encryptor {
    /// A new encryption under `input_key` with a random salt.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`], [`CryptoError::Rng`].
    pub fn new(input_key: &[u8], context: &[u8]) -> Result<Self> {
        Self::with_salt(input_key, context, primitives::random_array()?)
    }

    /// Re-creates an encryption whose header was already written (to resume an upload).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`].
    pub fn with_salt(input_key: &[u8], context: &[u8], salt: [u8; SALT_LEN]) -> Result<Self> {
        Ok(Self {
            keys: derive(input_key, &salt, context)?,
            salt,
            counter: 0,
            buf: Box::new([0u8; CHUNK_BUFFER_BYTES]),
        })
    }

    /// The 56-byte header.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..SALT_LEN].copy_from_slice(&self.salt);
        h[SALT_LEN..].copy_from_slice(&self.keys.commitment);
        h
    }

    /// Encrypts everything `reader` yields into `writer`, starting at chunk `start_chunk` (0 for
    /// a new file, which also writes the header). To resume, position `reader` at plaintext
    /// offset `start_chunk * CHUNK_SIZE` and `writer` at [`chunk_offset`]`(start_chunk)`.
    /// Returns the ciphertext bytes written.
    ///
    /// # Errors
    /// [`CryptoError::Io`], [`CryptoError::Limit`] past 2^38 chunks.
    pub fn encrypt_from<R: Read + ?Sized, W: Write + ?Sized>(
        &mut self,
        start_chunk: u64,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<u64> {
        let mut written = 0u64;
        if start_chunk == 0 {
            writer.write_all(&self.header())?;
            written += HEADER_LEN as u64;
        }
        self.counter = start_chunk;
        loop {
            if self.counter >= MAX_CHUNKS {
                return Err(CryptoError::Limit("chunk count"));
            }
            let n = read_full(reader, &mut self.buf[..CHUNK_SIZE])?;
            let nonce = nonce(&self.keys.base_nonce, self.counter);
            let tag = self
                .keys
                .aead
                .seal_in_place(&nonce, &[], &mut self.buf[..n]);
            self.buf[n..n + TAG_LEN].copy_from_slice(&tag);
            writer.write_all(&self.buf[..n + TAG_LEN])?;
            written += (n + TAG_LEN) as u64;
            self.counter += 1;
            if n < CHUNK_SIZE {
                break;
            }
        }
        writer.flush()?;
        Ok(written)
    }
}

/// Offset of chunk `k` in the ciphertext.
pub fn chunk_offset(k: u64) -> u64 {
    HEADER_LEN as u64 + k * SEALED_CHUNK as u64
}

/// Encrypts `reader` into `writer` under a fresh salt; returns the ciphertext length.
///
/// # Errors
/// As [`Encryptor::encrypt_from`].
pub fn encrypt<R: Read + ?Sized, W: Write + ?Sized>(
    input_key: &[u8],
    context: &[u8],
    reader: &mut R,
    writer: &mut W,
) -> Result<u64> {
    Encryptor::new(input_key, context)?.encrypt_from(0, reader, writer)
}

/// Streaming decryptor over a plain (non-seekable) reader.
pub struct Decryptor {
    keys: Keys,
    buf: Box<[u8; CHUNK_BUFFER_BYTES]>,
}

impl Decryptor {
    /// Reads and checks the header: the commitment must match before any chunk is touched.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`], [`CryptoError::Truncated`] for a short header,
    /// [`CryptoError::Integrity`] for a wrong key, context or commitment.
    pub fn new<R: Read + ?Sized>(input_key: &[u8], context: &[u8], reader: &mut R) -> Result<Self> {
        if input_key.len() != 32 {
            return Err(CryptoError::InvalidKeySize);
        }
        let mut header = [0u8; HEADER_LEN];
        if read_full(reader, &mut header)? < HEADER_LEN {
            return Err(CryptoError::Truncated);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[..SALT_LEN]);
        let keys = derive(input_key, &salt, context)?;
        if !primitives::ct_eq(&keys.commitment, &header[SALT_LEN..]) {
            return Err(CryptoError::Integrity);
        }
        Ok(Self {
            keys,
            buf: Box::new([0u8; CHUNK_BUFFER_BYTES]),
        })
    }

    /// Decrypts the chunks that follow, starting at chunk `start_chunk`, into `writer`.
    ///
    /// Chunks are written as they verify, so on error `writer` may hold a verified prefix:
    /// use [`decrypt_to_path`] to never expose a partial file. Returns plaintext bytes written.
    ///
    /// # Errors
    /// [`CryptoError::Integrity`] for a modified, reordered or foreign chunk,
    /// [`CryptoError::Truncated`] for a missing final chunk, [`CryptoError::Malformed`] for
    /// trailing data, [`CryptoError::Io`].
    pub fn decrypt_from<R: Read + ?Sized, W: Write + ?Sized>(
        &mut self,
        start_chunk: u64,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<u64> {
        let mut counter = start_chunk;
        let mut written = 0u64;
        loop {
            if counter >= MAX_CHUNKS {
                return Err(CryptoError::Limit("chunk count"));
            }
            let n = read_full(reader, &mut self.buf[..SEALED_CHUNK])?;
            if n < TAG_LEN {
                // Either nothing after a full chunk (the final short chunk is missing) or a
                // fragment too short to hold a tag.
                return Err(CryptoError::Truncated);
            }
            let body = n - TAG_LEN;
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&self.buf[body..n]);
            let nonce = nonce(&self.keys.base_nonce, counter);
            self.keys
                .aead
                .open_in_place(&nonce, &[], &mut self.buf[..body], &tag)?;
            writer.write_all(&self.buf[..body])?;
            written += body as u64;
            counter += 1;
            if n < SEALED_CHUNK {
                // The final chunk verified; anything after it is an attack or corruption.
                if read_full(reader, &mut self.buf[..1])? != 0 {
                    return Err(CryptoError::Malformed("trailing data after final chunk"));
                }
                break;
            }
        }
        writer.flush()?;
        Ok(written)
    }
}

/// Decrypts a whole stream into `writer`; returns plaintext bytes written.
///
/// # Errors
/// As [`Decryptor::new`] and [`Decryptor::decrypt_from`].
pub fn decrypt<R: Read + ?Sized, W: Write + ?Sized>(
    input_key: &[u8],
    context: &[u8],
    reader: &mut R,
    writer: &mut W,
) -> Result<u64> {
    Decryptor::new(input_key, context, reader)?.decrypt_from(0, reader, writer)
}

/// Decrypts into a temporary file beside `dest` and renames it into place only after the final
/// chunk verified, so a truncated or tampered download never leaves a readable partial file.
///
/// # Errors
/// As [`decrypt`]; on error no file is left at `dest` and the temporary file is removed.
pub fn decrypt_to_path<R: Read + ?Sized>(
    input_key: &[u8],
    context: &[u8],
    reader: &mut R,
    dest: &Path,
) -> Result<u64> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cinder-partial-")
        .tempfile_in(dir)?;
    let n = {
        let mut w = io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
        let n = decrypt(input_key, context, reader, &mut w)?;
        w.flush()?;
        n
    };
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| CryptoError::Io(e.error))?;
    if let Ok(d) = fs::File::open(dir) {
        // Make the rename durable; failure here only weakens crash safety.
        let _ = d.sync_all();
    }
    Ok(n)
}

/// Random-access plaintext reader over a seekable ciphertext.
///
/// Opening checks the commitment and authenticates the final chunk, so the plaintext length is
/// authenticated before any read; each read then decrypts only the chunks it touches.
pub struct SeekableReader<R> {
    inner: R,
    keys: Keys,
    len: u64,
    pos: u64,
    /// Which chunk `buf[..buf_len]` holds in plaintext.
    cached: Option<u64>,
    buf: Box<[u8; CHUNK_BUFFER_BYTES]>,
    buf_len: usize,
}

impl<R: Read + Seek> SeekableReader<R> {
    /// Opens a ciphertext for random access.
    ///
    /// # Errors
    /// As [`Decryptor::new`]; [`CryptoError::Truncated`] for an impossible length;
    /// [`CryptoError::Integrity`] if the final chunk does not verify.
    pub fn new(input_key: &[u8], context: &[u8], mut inner: R) -> Result<Self> {
        let total = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        let dec = Decryptor::new(input_key, context, &mut inner)?;
        let len = plaintext_len(total).ok_or(CryptoError::Truncated)?;
        let mut r = Self {
            inner,
            keys: dec.keys,
            len,
            pos: 0,
            cached: None,
            buf: dec.buf,
            buf_len: 0,
        };
        r.load(len / CHUNK_SIZE as u64)?;
        Ok(r)
    }

    /// The authenticated plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn last_chunk(&self) -> u64 {
        self.len / CHUNK_SIZE as u64
    }

    fn load(&mut self, k: u64) -> Result<()> {
        if self.cached == Some(k) {
            return Ok(());
        }
        self.cached = None;
        let sealed = if k == self.last_chunk() {
            (self.len % CHUNK_SIZE as u64) as usize + TAG_LEN
        } else {
            SEALED_CHUNK
        };
        self.inner.seek(SeekFrom::Start(chunk_offset(k)))?;
        self.inner
            .read_exact(&mut self.buf[..sealed])
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    CryptoError::Truncated
                } else {
                    CryptoError::Io(e)
                }
            })?;
        let body = sealed - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&self.buf[body..sealed]);
        let nonce = nonce(&self.keys.base_nonce, k);
        self.keys
            .aead
            .open_in_place(&nonce, &[], &mut self.buf[..body], &tag)?;
        self.buf_len = body;
        self.cached = Some(k);
        Ok(())
    }
}

impl<R: Read + Seek> Read for SeekableReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let k = self.pos / CHUNK_SIZE as u64;
        self.load(k).map_err(|e| match e {
            CryptoError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        })?;
        let off = (self.pos % CHUNK_SIZE as u64) as usize;
        let n = (self.buf_len - off).min(out.len());
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for SeekableReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start of plaintext",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

/// A fresh random input key for one file or clip.
///
/// # Errors
/// [`CryptoError::Rng`].
pub fn new_input_key() -> Result<Secret32> {
    Secret32::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn roundtrip(n: usize) {
        let key = [7u8; 32];
        let plain = data(n);
        let mut ct = Vec::new();
        let len = encrypt(&key, FILE_CONTEXT, &mut &plain[..], &mut ct).unwrap();
        assert_eq!(len, ct.len() as u64);
        assert_eq!(ciphertext_len(n as u64), len);
        assert_eq!(plaintext_len(len), Some(n as u64));
        let mut out = Vec::new();
        decrypt(&key, FILE_CONTEXT, &mut &ct[..], &mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        for n in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
        ] {
            roundtrip(n);
        }
    }

    #[test]
    fn truncation_reorder_and_trailing_data_fail() {
        let key = [1u8; 32];
        let plain = data(2 * CHUNK_SIZE + 10);
        let mut ct = Vec::new();
        encrypt(&key, FILE_CONTEXT, &mut &plain[..], &mut ct).unwrap();
        let dec = |c: &[u8]| decrypt(&key, FILE_CONTEXT, &mut &c[..], &mut Vec::new());
        // Drop the final chunk exactly at a chunk boundary.
        assert!(matches!(
            dec(&ct[..chunk_offset(2) as usize]),
            Err(CryptoError::Truncated)
        ));
        assert!(dec(&ct[..ct.len() - 1]).is_err());
        let mut swapped = ct.clone();
        let (a, b) = (chunk_offset(0) as usize, chunk_offset(1) as usize);
        let first = ct[a..b].to_vec();
        swapped[a..b].copy_from_slice(&ct[b..b + SEALED_CHUNK]);
        swapped[b..b + SEALED_CHUNK].copy_from_slice(&first);
        assert!(matches!(dec(&swapped), Err(CryptoError::Integrity)));
        let mut trailing = ct.clone();
        trailing.push(0);
        assert!(dec(&trailing).is_err());
        assert!(matches!(
            decrypt(&key, CLIP_CONTEXT, &mut &ct[..], &mut Vec::new()),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn resume_encryption_and_decryption_from_a_chunk() {
        let key = [2u8; 32];
        let plain = data(5 * CHUNK_SIZE + 77);
        let mut enc = Encryptor::new(&key, FILE_CONTEXT).unwrap();
        let mut whole = Vec::new();
        enc.encrypt_from(0, &mut &plain[..], &mut whole).unwrap();
        // An upload interrupted after 3 chunks resumes with the same salt.
        let mut resumed = whole[..chunk_offset(3) as usize].to_vec();
        let mut enc2 = Encryptor::with_salt(
            &key,
            FILE_CONTEXT,
            enc.header()[..SALT_LEN].try_into().unwrap(),
        )
        .unwrap();
        enc2.encrypt_from(3, &mut &plain[3 * CHUNK_SIZE..], &mut resumed)
            .unwrap();
        assert_eq!(resumed, whole);
        // A download resumes from chunk 2.
        let mut d = Decryptor::new(&key, FILE_CONTEXT, &mut &whole[..HEADER_LEN]).unwrap();
        let mut out = Vec::new();
        d.decrypt_from(2, &mut &whole[chunk_offset(2) as usize..], &mut out)
            .unwrap();
        assert_eq!(out, &plain[2 * CHUNK_SIZE..]);
    }

    #[test]
    fn seekable_reader_reads_any_range_and_checks_length() {
        let key = [3u8; 32];
        let plain = data(4 * CHUNK_SIZE + 500);
        let mut ct = Vec::new();
        encrypt(&key, FILE_CONTEXT, &mut &plain[..], &mut ct).unwrap();
        let mut r = SeekableReader::new(&key, FILE_CONTEXT, Cursor::new(&ct)).unwrap();
        assert_eq!(r.len(), plain.len() as u64);
        for start in [0usize, 1, CHUNK_SIZE - 3, 2 * CHUNK_SIZE, plain.len() - 10] {
            r.seek(SeekFrom::Start(start as u64)).unwrap();
            let mut got = vec![0u8; 100.min(plain.len() - start)];
            r.read_exact(&mut got).unwrap();
            assert_eq!(got, &plain[start..start + got.len()]);
        }
        // A truncated file fails at open, because the final chunk no longer verifies.
        let cut = &ct[..ct.len() - 100];
        assert!(SeekableReader::new(&key, FILE_CONTEXT, Cursor::new(cut)).is_err());
    }

    #[test]
    fn decrypt_to_path_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let key = [4u8; 32];
        let plain = data(CHUNK_SIZE * 2 + 3);
        let mut ct = Vec::new();
        encrypt(&key, FILE_CONTEXT, &mut &plain[..], &mut ct).unwrap();
        let dest = dir.path().join("out.bin");
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decrypt_to_path(&key, FILE_CONTEXT, &mut &bad[..], &dest).is_err());
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        decrypt_to_path(&key, FILE_CONTEXT, &mut &ct[..], &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), plain);
    }
}
