//! User root keys, device keys, device certificates and revocations (`docs/crypto.md` section 3).
//!
//! A user's root key (URK) signs one certificate per device, binding the device's signing key
//! (DSK) and X25519 identity key (DIK) to the user. Clients pin the URK on first contact and
//! verify every device against it, so the relay cannot slip in a device of its own. Removing a
//! device is a URK-signed revocation that clients check alongside the certificate.

use zeroize::Zeroizing;

use super::primitives::{self, DhKeyPair, SigningKeyPair};
use super::wire::{Reader, Writer};
use super::{CryptoError, Result};

const DEVCERT_CONTEXT: &[u8] = b"cinder/v1/devcert";
const REVOKE_CONTEXT: &[u8] = b"cinder/v1/devrevoke";
const POLICY_CONTEXT: &[u8] = b"cinder/v1/policy";
/// Longest user id accepted in certificates (usernames are far shorter).
pub const MAX_USER_ID: usize = 64;

/// A device's 16-byte identifier, chosen at random when the device is created.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct DeviceId(pub [u8; 16]);

impl DeviceId {
    /// A fresh random id.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn random() -> Result<Self> {
        Ok(Self(primitives::random_array()?))
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::hex::encode(&self.0))
    }
}

/// What a certified device is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeviceRole {
    /// An ordinary user device.
    User,
    /// The network's data-retention bot.
    RetentionBot,
}

impl DeviceRole {
    fn to_byte(self) -> u8 {
        match self {
            Self::User => 0,
            Self::RetentionBot => 1,
        }
    }

    fn from_byte(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Self::User),
            1 => Ok(Self::RetentionBot),
            _ => Err(CryptoError::Malformed("device role")),
        }
    }
}

/// A user's long-lived Ed25519 root key (private half).
#[derive(Clone)]
pub struct UserRootKey {
    key: SigningKeyPair,
}

impl UserRootKey {
    /// A fresh root key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self> {
        Ok(Self {
            key: SigningKeyPair::generate()?,
        })
    }

    /// Rebuilds the key from its stored seed.
    pub fn from_secret_bytes(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKeyPair::from_secret_bytes(seed),
        }
    }

    /// The seed, for the encrypted cache.
    ///
    /// # Security
    /// Secret; copied to the user's linked devices only over an authenticated channel.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.key.secret_bytes()
    }

    /// The public root key that contacts pin.
    pub fn public(&self) -> RootPublicKey {
        RootPublicKey(self.key.public())
    }

    /// Certifies a device of user `user_id`.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] if `user_id` is longer than [`MAX_USER_ID`].
    pub fn certify(
        &self,
        user_id: &str,
        device_id: DeviceId,
        device: &DeviceKeys,
        created_at: u64,
        role: DeviceRole,
    ) -> Result<DeviceCertificate> {
        if user_id.len() > MAX_USER_ID {
            return Err(CryptoError::Limit("user id length"));
        }
        let mut cert = DeviceCertificate {
            user_id: user_id.to_owned(),
            device_id,
            dsk_public: device.signing.public(),
            dik_public: device.identity.public(),
            created_at,
            role,
            signature: [0u8; 64],
        };
        cert.signature = self.key.sign(&cert.signed_bytes()?);
        Ok(cert)
    }

    /// Revokes one of this user's devices.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] if `user_id` is longer than [`MAX_USER_ID`].
    pub fn revoke(
        &self,
        user_id: &str,
        device_id: DeviceId,
        revoked_at: u64,
    ) -> Result<Revocation> {
        if user_id.len() > MAX_USER_ID {
            return Err(CryptoError::Limit("user id length"));
        }
        let mut r = Revocation {
            user_id: user_id.to_owned(),
            device_id,
            revoked_at,
            signature: [0u8; 64],
        };
        r.signature = self.key.sign(&r.signed_bytes()?);
        Ok(r)
    }
}

/// A user's public root key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RootPublicKey(pub [u8; 32]);

/// A device's private keys: the Ed25519 signing key and the X25519 identity key.
#[derive(Clone)]
pub struct DeviceKeys {
    /// Device signing key (DSK): signs prekeys and login challenges.
    pub signing: SigningKeyPair,
    /// Device identity key (DIK): the X3DH identity.
    pub identity: DhKeyPair,
}

impl DeviceKeys {
    /// Fresh device keys.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self> {
        Ok(Self {
            signing: SigningKeyPair::generate()?,
            identity: DhKeyPair::generate()?,
        })
    }
}

/// `Sign_URK("cinder/v1/devcert" || user_id || device_id || DSK_pub || DIK_pub || created_at || role)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceCertificate {
    /// The owning user's id (their permanent username).
    pub user_id: String,
    /// The device's id.
    pub device_id: DeviceId,
    /// Device signing key.
    pub dsk_public: [u8; 32],
    /// Device identity key.
    pub dik_public: [u8; 32],
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// What the device is for.
    pub role: DeviceRole,
    /// The root key's signature.
    pub signature: [u8; 64],
}

impl DeviceCertificate {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(200);
        w.fixed(DEVCERT_CONTEXT)
            .bytes(self.user_id.as_bytes())
            .fixed(&self.device_id.0)
            .fixed(&self.dsk_public)
            .fixed(&self.dik_public)
            .u64(self.created_at)
            .u8(self.role.to_byte());
        w.finish()
    }

    /// Verifies the certificate against the user's pinned root key.
    ///
    /// # Errors
    /// [`CryptoError::BadChain`] if the signature does not verify under `root`.
    pub fn verify(&self, root: &RootPublicKey) -> Result<()> {
        primitives::verify_signature(&root.0, &self.signed_bytes()?, &self.signature)
            .map_err(|_| CryptoError::BadChain)
    }

    /// Fixed binary encoding.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when the user id is 4 GiB or longer.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(220);
        self.write(&mut w);
        w.finish()
    }

    /// Writes [`Self::encode`]'s output into `w` (a field that does not fit fails `w`'s
    /// `finish`, so an enclosing encoding stays infallible until then).
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(1)
            .bytes(self.user_id.as_bytes())
            .fixed(&self.device_id.0)
            .fixed(&self.dsk_public)
            .fixed(&self.dik_public)
            .u64(self.created_at)
            .u8(self.role.to_byte())
            .fixed(&self.signature);
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "device certificate");
        let cert = Self::read(&mut r)?;
        r.finish()?;
        Ok(cert)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        Ok(Self {
            user_id: r.string(MAX_USER_ID)?.to_owned(),
            device_id: DeviceId(r.array()?),
            dsk_public: r.array()?,
            dik_public: r.array()?,
            created_at: r.u64()?,
            role: DeviceRole::from_byte(r.u8()?)?,
            signature: r.array()?,
        })
    }

    /// SHA-256 of the encoding, used in the handshake's associated data.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when the certificate cannot be encoded (see [`Self::encode`]).
    pub fn hash(&self) -> Result<[u8; 32]> {
        Ok(primitives::sha256(&[&self.encode()?]))
    }
}

/// A root-key-signed statement that a device no longer belongs to the user.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Revocation {
    /// The user.
    pub user_id: String,
    /// The revoked device.
    pub device_id: DeviceId,
    /// When, seconds since the Unix epoch.
    pub revoked_at: u64,
    /// The root key's signature.
    pub signature: [u8; 64],
}

impl Revocation {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(120);
        w.fixed(REVOKE_CONTEXT)
            .bytes(self.user_id.as_bytes())
            .fixed(&self.device_id.0)
            .u64(self.revoked_at);
        w.finish()
    }

    /// Verifies the revocation against the user's root key.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, root: &RootPublicKey) -> Result<()> {
        primitives::verify_signature(&root.0, &self.signed_bytes()?, &self.signature)
    }

    /// Fixed binary encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(140);
        w.u8(1)
            .bytes(self.user_id.as_bytes())
            .fixed(&self.device_id.0)
            .u64(self.revoked_at)
            .fixed(&self.signature);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "revocation");
        let version = r.u8()?;
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let rev = Self {
            user_id: r.string(MAX_USER_ID)?.to_owned(),
            device_id: DeviceId(r.array()?),
            revoked_at: r.u64()?,
            signature: r.array()?,
        };
        r.finish()?;
        Ok(rev)
    }
}

/// Verifies that `cert` is a live device of `user_id` under the pinned `root`.
///
/// Revocations that do not verify under `root` are ignored (the relay could send garbage), but a
/// valid revocation of this device makes the chain fail even if the certificate is fine.
///
/// # Errors
/// [`CryptoError::BadChain`] for a wrong user or signature, [`CryptoError::Revoked`] for a
/// revoked device.
pub fn verify_device(
    root: &RootPublicKey,
    user_id: &str,
    cert: &DeviceCertificate,
    revocations: &[Revocation],
) -> Result<()> {
    if cert.user_id != user_id {
        return Err(CryptoError::BadChain);
    }
    cert.verify(root)?;
    let revoked = revocations.iter().any(|r| {
        r.user_id == cert.user_id && r.device_id == cert.device_id && r.verify(root).is_ok()
    });
    if revoked {
        return Err(CryptoError::Revoked);
    }
    Ok(())
}

/// The fields of the network policy that the network admin key (NAK) signs. The network id is
/// part of the signed bytes, so a policy signed for one network never verifies for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyFields<'a> {
    /// The network's id.
    pub network_id: &'a str,
    /// Read receipts in 1:1 conversations.
    pub read_receipts: bool,
    /// Longest expiry timer, seconds.
    pub max_expire_secs: u64,
    /// Longest burn-on-read timer, seconds.
    pub max_burn_secs: u64,
    /// Most members of a room or group DM.
    pub max_room_members: u32,
}

impl PolicyFields<'_> {
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(64);
        w.fixed(POLICY_CONTEXT)
            .bytes(self.network_id.as_bytes())
            .u8(u8::from(self.read_receipts))
            .u64(self.max_expire_secs)
            .u64(self.max_burn_secs)
            .u32(self.max_room_members);
        w.finish()
    }

    /// Signs the policy with the network admin key.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when the network id cannot be encoded.
    pub fn sign(&self, nak: &SigningKeyPair) -> Result<[u8; 64]> {
        Ok(nak.sign(&self.signed_bytes()?))
    }

    /// Checks `signature` against the network admin key pinned at registration.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] (a signature of the wrong length included).
    pub fn verify(&self, nak: &[u8; 32], signature: &[u8]) -> Result<()> {
        let signature: &[u8; 64] = signature
            .try_into()
            .map_err(|_| CryptoError::BadSignature)?;
        primitives::verify_signature(nak, &self.signed_bytes()?, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_verifies_only_unchanged_under_its_admin_key_and_network() {
        let nak = SigningKeyPair::generate().unwrap();
        let other = SigningKeyPair::generate().unwrap();
        let p = PolicyFields {
            network_id: "net-a",
            read_receipts: true,
            max_expire_secs: 86_400,
            max_burn_secs: 60,
            max_room_members: 500,
        };
        let sig = p.sign(&nak).unwrap();
        p.verify(&nak.public(), &sig).unwrap();
        assert!(p.verify(&other.public(), &sig).is_err());
        assert!(p.verify(&nak.public(), &sig[..63]).is_err());
        for changed in [
            PolicyFields {
                network_id: "net-b",
                ..p
            },
            PolicyFields {
                read_receipts: false,
                ..p
            },
            PolicyFields {
                max_expire_secs: 86_401,
                ..p
            },
            PolicyFields {
                max_burn_secs: 0,
                ..p
            },
            PolicyFields {
                max_room_members: 501,
                ..p
            },
        ] {
            assert!(changed.verify(&nak.public(), &sig).is_err(), "{changed:?}");
        }
    }

    fn device(urk: &UserRootKey, user: &str) -> (DeviceKeys, DeviceCertificate) {
        let keys = DeviceKeys::generate().unwrap();
        let cert = urk
            .certify(
                user,
                DeviceId::random().unwrap(),
                &keys,
                1_700_000_000,
                DeviceRole::User,
            )
            .unwrap();
        (keys, cert)
    }

    #[test]
    fn certificate_round_trips_and_verifies() {
        let urk = UserRootKey::generate().unwrap();
        let (_, cert) = device(&urk, "alice");
        let decoded = DeviceCertificate::decode(&cert.encode().unwrap()).unwrap();
        assert_eq!(decoded, cert);
        verify_device(&urk.public(), "alice", &decoded, &[]).unwrap();
    }

    #[test]
    fn bad_chains_are_rejected() {
        let urk = UserRootKey::generate().unwrap();
        let other = UserRootKey::generate().unwrap();
        let (_, cert) = device(&urk, "alice");
        // Signed by someone else's root key.
        assert!(matches!(
            verify_device(&other.public(), "alice", &cert, &[]),
            Err(CryptoError::BadChain)
        ));
        // Claimed for another user.
        assert!(matches!(
            verify_device(&urk.public(), "bob", &cert, &[]),
            Err(CryptoError::BadChain)
        ));
        // A relay swapping in its own identity key.
        let mut swapped = cert.clone();
        swapped.dik_public[0] ^= 1;
        assert!(verify_device(&urk.public(), "alice", &swapped, &[]).is_err());
        // The relay re-labelling the role.
        let mut role = cert.clone();
        role.role = DeviceRole::RetentionBot;
        assert!(verify_device(&urk.public(), "alice", &role, &[]).is_err());
    }

    #[test]
    fn revoked_devices_fail_and_forged_revocations_are_ignored() {
        let urk = UserRootKey::generate().unwrap();
        let (_, cert) = device(&urk, "alice");
        let rev = urk.revoke("alice", cert.device_id, 1_700_000_100).unwrap();
        let rev = Revocation::decode(&rev.encode().unwrap()).unwrap();
        assert!(matches!(
            verify_device(&urk.public(), "alice", &cert, &[rev]),
            Err(CryptoError::Revoked)
        ));
        let forged = UserRootKey::generate()
            .unwrap()
            .revoke("alice", cert.device_id, 1)
            .unwrap();
        verify_device(&urk.public(), "alice", &cert, &[forged]).unwrap();
    }

    #[test]
    fn decoder_rejects_truncations_and_versions() {
        let urk = UserRootKey::generate().unwrap();
        let (_, cert) = device(&urk, "alice");
        let bytes = cert.encode().unwrap();
        for n in 0..bytes.len() {
            assert!(DeviceCertificate::decode(&bytes[..n]).is_err());
        }
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            DeviceCertificate::decode(&v2),
            Err(CryptoError::UnsupportedVersion(2))
        ));
        let mut long = bytes;
        long.push(0);
        assert!(DeviceCertificate::decode(&long).is_err());
    }
}
