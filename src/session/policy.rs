//! Which network policy the client accepts: one signed by the network admin key (NAK) pinned at
//! registration, for this network. A policy that does not verify is ignored (with a warning)
//! and the previous one stays, so a relay cannot relax read receipts or timer limits on its
//! own (once the NAK leaves the relay; today it holds the key, so the signature binds the
//! policy to the network the client enrolled in and to its admin key).

use crate::crypto::identity::PolicyFields;
use crate::protocol::Policy;

/// Cache blob holding the NAK's public key, pinned at registration (or, for profiles
/// registered before policies were signed, at the first connection).
pub(crate) const NAK_BLOB: &str = "network_admin_key";

/// True when `p` carries a valid signature by `nak` for `network_id`.
pub(crate) fn verifies(nak: Option<&[u8; 32]>, network_id: &str, p: &Policy) -> bool {
    let Some(nak) = nak else {
        return false;
    };
    PolicyFields {
        network_id,
        read_receipts: p.read_receipts,
        max_expire_secs: p.max_expire_secs,
        max_burn_secs: p.max_burn_secs,
        max_room_members: p.max_room_members,
    }
    .verify(nak, &p.signature)
    .is_ok()
}

/// The pinned key from its cache blob (`None` when absent or not 32 bytes).
pub(crate) fn pinned(blob: Option<&[u8]>) -> Option<[u8; 32]> {
    blob.and_then(|b| <[u8; 32]>::try_from(b).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::primitives::SigningKeyPair;

    fn signed(nak: &SigningKeyPair, network_id: &str, read_receipts: bool) -> Policy {
        let fields = PolicyFields {
            network_id,
            read_receipts,
            max_expire_secs: 3600,
            max_burn_secs: 60,
            max_room_members: 500,
        };
        Policy {
            read_receipts,
            max_expire_secs: 3600,
            max_burn_secs: 60,
            max_room_members: 500,
            signature: fields.sign(nak).unwrap().to_vec(),
        }
    }

    #[test]
    fn only_a_policy_signed_by_the_pinned_key_for_this_network_is_accepted() {
        let nak = SigningKeyPair::generate().unwrap();
        let pinned_key = nak.public();
        let good = signed(&nak, "net", true);
        assert!(verifies(Some(&pinned_key), "net", &good));
        // No pinned key, another network, another key, a changed field, no signature.
        assert!(!verifies(None, "net", &good));
        assert!(!verifies(Some(&pinned_key), "other", &good));
        let mallory = SigningKeyPair::generate().unwrap();
        assert!(!verifies(
            Some(&pinned_key),
            "net",
            &signed(&mallory, "net", true)
        ));
        let relaxed = Policy {
            read_receipts: false,
            ..good.clone()
        };
        assert!(!verifies(Some(&pinned_key), "net", &relaxed));
        let unsigned = Policy {
            signature: Vec::new(),
            ..good
        };
        assert!(!verifies(Some(&pinned_key), "net", &unsigned));
        assert_eq!(pinned(Some(&[7; 32])), Some([7; 32]));
        assert_eq!(pinned(Some(&[7; 31])), None);
    }
}
