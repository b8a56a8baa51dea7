//! Safety numbers and their QR payload (`docs/crypto.md` section 10).
//!
//! Signal's numeric fingerprint over the two users' root keys: for each user,
//! `hash = SHA-512(version(2) || URK || user_id)`, then 5,200 times `hash = SHA-512(hash || URK)`;
//! the first 30 bytes become six 5-digit groups (each 40-bit big-endian chunk mod 100,000). The
//! two 30-digit halves are sorted and joined into 60 digits, so both users see the same number.
//! The QR payload carries both 32-byte fingerprints; scanning the peer's code and finding the
//! halves swapped proves both hold the same keys.

use super::identity::RootPublicKey;
use super::primitives;
use super::{CryptoError, Result};

const ITERATIONS: usize = 5200;
const FINGERPRINT_VERSION: u16 = 0;
const QR_VERSION: u8 = 1;
/// Length of a QR payload.
pub const QR_PAYLOAD_LEN: usize = 1 + 32 + 32;

fn fingerprint(key: &RootPublicKey, user_id: &str) -> [u8; 64] {
    let mut hash = primitives::sha512(&[
        &FINGERPRINT_VERSION.to_be_bytes(),
        &key.0,
        user_id.as_bytes(),
    ]);
    for _ in 0..ITERATIONS {
        hash = primitives::sha512(&[&hash, &key.0]);
    }
    hash
}

fn digits(fp: &[u8; 64]) -> String {
    let mut s = String::with_capacity(30);
    for chunk in fp[..30].chunks(5) {
        let v = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        s.push_str(&format!("{:05}", v % 100_000));
    }
    s
}

/// A computed safety number between the local and a remote user.
pub struct SafetyNumber {
    local: [u8; 64],
    remote: [u8; 64],
}

impl SafetyNumber {
    /// Computes the safety number for two users' root keys.
    pub fn new(
        local_key: &RootPublicKey,
        local_user: &str,
        remote_key: &RootPublicKey,
        remote_user: &str,
    ) -> Self {
        Self {
            local: fingerprint(local_key, local_user),
            remote: fingerprint(remote_key, remote_user),
        }
    }

    /// The 60 digits both users compare.
    pub fn digits(&self) -> String {
        let (a, b) = (digits(&self.local), digits(&self.remote));
        if a <= b { a + &b } else { b + &a }
    }

    /// The 60 digits in twelve groups of five, as shown to users.
    pub fn display(&self) -> String {
        let d = self.digits();
        d.as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The payload this side shows as a QR code: version, local and remote fingerprints.
    pub fn qr_payload(&self) -> [u8; QR_PAYLOAD_LEN] {
        let mut p = [0u8; QR_PAYLOAD_LEN];
        p[0] = QR_VERSION;
        p[1..33].copy_from_slice(&self.local[..32]);
        p[33..].copy_from_slice(&self.remote[..32]);
        p
    }

    /// Checks a payload scanned from the peer's screen: it must hold the same two fingerprints
    /// with local and remote swapped.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`] for a foreign code.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool> {
        if scanned.len() != QR_PAYLOAD_LEN {
            return Err(CryptoError::Malformed("safety number code"));
        }
        if scanned[0] != QR_VERSION {
            return Err(CryptoError::UnsupportedVersion(scanned[0]));
        }
        Ok(primitives::ct_eq(&scanned[1..33], &self.remote[..32])
            && primitives::ct_eq(&scanned[33..], &self.local[..32]))
    }

    /// The QR code of [`Self::qr_payload`] drawn with Unicode half blocks (two modules per
    /// character cell vertically), with a quiet zone, for terminals.
    pub fn qr_lines(&self) -> Vec<String> {
        let Ok(code) =
            qrcode::QrCode::with_error_correction_level(self.qr_payload(), qrcode::EcLevel::M)
        else {
            return Vec::new();
        };
        let width = code.width();
        let colors = code.to_colors();
        let quiet = 2usize;
        let size = width + 2 * quiet;
        let dark = |x: usize, y: usize| -> bool {
            x >= quiet
                && y >= quiet
                && x < quiet + width
                && y < quiet + width
                && colors[(y - quiet) * width + (x - quiet)] == qrcode::Color::Dark
        };
        let mut lines = Vec::with_capacity(size.div_ceil(2));
        for y in (0..size).step_by(2) {
            let mut line = String::with_capacity(size * 3);
            for x in 0..size {
                // Light modules are drawn as blocks so the code reads on dark terminals.
                let top = !dark(x, y);
                let bottom = y + 1 < size && !dark(x, y + 1);
                line.push(match (top, bottom) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                });
            }
            lines.push(line);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_see_the_same_sixty_digits_and_codes_match() {
        let a = RootPublicKey([1; 32]);
        let b = RootPublicKey([2; 32]);
        let ab = SafetyNumber::new(&a, "alice", &b, "bob");
        let ba = SafetyNumber::new(&b, "bob", &a, "alice");
        assert_eq!(ab.digits(), ba.digits());
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(ab.display().split(' ').count(), 12);
        assert!(ab.matches_scanned(&ba.qr_payload()).unwrap());
        assert!(!ab.matches_scanned(&ab.qr_payload()).unwrap());
        let m = SafetyNumber::new(&RootPublicKey([3; 32]), "bob", &a, "alice");
        assert!(!ab.matches_scanned(&m.qr_payload()).unwrap());
        assert_ne!(m.digits(), ab.digits());
        assert!(ab.matches_scanned(&[1; 10]).is_err());
        let lines = ab.qr_lines();
        assert!(lines.len() > 10);
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count())
        );
    }

    #[test]
    fn fingerprint_follows_the_iterated_sha512_construction() {
        // Recompute the first group independently from the definition.
        let key = RootPublicKey([7; 32]);
        let mut h = primitives::sha512(&[&[0, 0], &key.0, b"carol"]);
        for _ in 0..5200 {
            h = primitives::sha512(&[&h, &key.0]);
        }
        let first = h[..5].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)) % 100_000;
        assert_eq!(
            digits(&fingerprint(&key, "carol"))[..5],
            format!("{first:05}")
        );
    }
}
