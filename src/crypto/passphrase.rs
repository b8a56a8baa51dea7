//! Passphrase-derived protection of the local cache key (`docs/crypto.md` section 12).
//!
//! `passphrase -> Argon2id (16-byte salt; default m = 256 MiB, t = 3, p = 4) -> KEK ->
//! AES-256-GCM unwrap of a random DEK`. The DEK is the SQLCipher raw key and the root of the
//! cache's HKDF subkeys. Changing the passphrase re-wraps the DEK only. The small header that
//! holds the parameters, salt and wrapped DEK is a [`CacheHeader`]; this is the one place a
//! random nonce is used under a long-lived key, as section 2 allows.

use zeroize::Zeroizing;

use super::primitives::{self, Secret32};
use super::wire::Reader;
use super::{CryptoError, Result};

/// Argon2id cost parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The protocol default: 256 MiB, 3 passes, 4 lanes.
    pub const DEFAULT: Self = Self {
        m_kib: 256 * 1024,
        t: 3,
        p: 4,
    };
    /// The highest memory cost accepted (4 GiB).
    pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    /// The lowest memory cost a real profile may use.
    pub const FLOOR_M_KIB: u32 = 64 * 1024;
    /// Cheap parameters for tests only; never chosen unless a caller asks by name.
    pub const INSECURE_FOR_TESTS: Self = Self {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    /// Checks the parameters against the floor.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when `m` is below 64 MiB (unless `allow_insecure`), or absurd.
    pub fn validate(&self, allow_insecure: bool) -> Result<()> {
        if self.t == 0
            || self.p == 0
            || self.p > 64
            || self.t > 100
            // The header is read before anything is authenticated, so a tampered one must
            // not ask for more memory than a workstation has (an allocation failure aborts).
            || self.m_kib > Self::MAX_M_KIB
        {
            return Err(CryptoError::Limit("argon2 parameters"));
        }
        if self.m_kib < Self::FLOOR_M_KIB && !allow_insecure {
            return Err(CryptoError::Limit("argon2 memory below the 64 MiB floor"));
        }
        Ok(())
    }
}

/// Derives the key-encryption key from a passphrase.
///
/// # Errors
/// [`CryptoError::Limit`] for parameters argon2 rejects.
pub fn derive_kek(passphrase: &[u8], salt: &[u8; 16], params: KdfParams) -> Result<Secret32> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|_| CryptoError::Limit("argon2 parameters"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, out.as_mut_slice())
        .map_err(|_| CryptoError::Limit("argon2 parameters"))?;
    Ok(Secret32::from_bytes(*out))
}

const WRAP_AAD: &[u8] = b"cinder/v1/cache-dek";

/// The header stored beside the cache: parameters, salt, and the wrapped DEK.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CacheHeader {
    /// Argon2id parameters.
    pub params: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 16],
    /// Nonce of the DEK wrap.
    pub nonce: [u8; 12],
    /// AES-256-GCM(KEK, DEK).
    pub wrapped_dek: [u8; 48],
}

impl CacheHeader {
    /// Creates a fresh random DEK and wraps it under `passphrase`.
    ///
    /// # Errors
    /// As [`derive_kek`], [`CryptoError::Rng`].
    pub fn create(passphrase: &[u8], params: KdfParams) -> Result<(Self, Secret32)> {
        let dek = Secret32::random()?;
        let header = Self::wrap(passphrase, params, &dek)?;
        Ok((header, dek))
    }

    /// Wraps an existing DEK under a (new) passphrase with a fresh salt and nonce.
    ///
    /// # Errors
    /// As [`derive_kek`], [`CryptoError::Rng`].
    pub fn wrap(passphrase: &[u8], params: KdfParams, dek: &Secret32) -> Result<Self> {
        let salt = primitives::random_array()?;
        let nonce = primitives::random_array()?;
        let kek = derive_kek(passphrase, &salt, params)?;
        let ct = primitives::seal(&kek, &nonce, WRAP_AAD, dek.expose());
        let mut wrapped_dek = [0u8; 48];
        wrapped_dek.copy_from_slice(&ct);
        Ok(Self {
            params,
            salt,
            nonce,
            wrapped_dek,
        })
    }

    /// Recovers the DEK.
    ///
    /// # Errors
    /// [`CryptoError::Integrity`] for a wrong passphrase (or a tampered header).
    pub fn unwrap(&self, passphrase: &[u8]) -> Result<Secret32> {
        let kek = derive_kek(passphrase, &self.salt, self.params)?;
        let dek = Zeroizing::new(primitives::open(
            &kek,
            &self.nonce,
            WRAP_AAD,
            &self.wrapped_dek,
        )?);
        let mut out = [0u8; 32];
        out.copy_from_slice(&dek);
        Ok(Secret32::from_bytes(out))
    }

    /// Fixed binary encoding (magic, version, fields).
    pub fn encode(&self) -> Vec<u8> {
        // Fixed-size fields only, so this cannot fail (no length prefix).
        [
            b"CNDR".as_slice(),
            &[1],
            &self.params.m_kib.to_be_bytes(),
            &self.params.t.to_be_bytes(),
            &self.params.p.to_be_bytes(),
            &self.salt,
            &self.nonce,
            &self.wrapped_dek,
        ]
        .concat()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "cache header");
        if r.fixed(4)? != b"CNDR" {
            return Err(CryptoError::Malformed("cache header"));
        }
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let h = Self {
            params: KdfParams {
                m_kib: r.u32()?,
                t: r.u32()?,
                p: r.u32()?,
            },
            salt: r.array()?,
            nonce: r.array()?,
            wrapped_dek: r.array()?,
        };
        r.finish()?;
        h.params.validate(true)?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_rewrap() {
        let p = KdfParams::INSECURE_FOR_TESTS;
        let (h, dek) = CacheHeader::create(b"correct horse", p).unwrap();
        let h = CacheHeader::decode(&h.encode()).unwrap();
        assert_eq!(h.unwrap(b"correct horse").unwrap().expose(), dek.expose());
        assert!(matches!(h.unwrap(b"wrong"), Err(CryptoError::Integrity)));
        let h2 = CacheHeader::wrap(b"new passphrase", p, &dek).unwrap();
        assert_eq!(h2.unwrap(b"new passphrase").unwrap().expose(), dek.expose());
        assert!(h2.unwrap(b"correct horse").is_err());
    }

    #[test]
    fn floor_is_enforced_unless_asked() {
        assert!(KdfParams::INSECURE_FOR_TESTS.validate(false).is_err());
        KdfParams::DEFAULT.validate(false).unwrap();
        assert!(CacheHeader::decode(b"CNDR").is_err());
        assert!(CacheHeader::decode(&[0u8; 80]).is_err());
        let mut huge = CacheHeader::create(b"p", KdfParams::INSECURE_FOR_TESTS)
            .unwrap()
            .0;
        huge.params.m_kib = 16 * 1024 * 1024;
        assert!(matches!(
            CacheHeader::decode(&huge.encode()),
            Err(CryptoError::Limit(_))
        ));
    }
}
