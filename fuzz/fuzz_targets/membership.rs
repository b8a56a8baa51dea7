#![no_main]
//! The membership log's decoders; the first byte picks the decoder, the rest is its input:
//!
//! - 0: `membership::SignedOp::decode` (must re-encode exactly; the author check, which runs
//!   first on every op a client or the relay receives, must return rather than panic);
//! - 1: `membership::RoomState::decode` (must re-encode exactly).

use cinder::crypto::identity::RootPublicKey;
use cinder::crypto::membership::{RoomState, SignedOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Some(op) =
            cinder_fuzz::canonical("membership op", rest, SignedOp::decode, SignedOp::encode)
        {
            // No input can carry a valid signature under this key, so both must refuse.
            let root = RootPublicKey(op.op.actor_cert.dsk_public);
            assert!(op.verify_author(&root).is_err());
            assert!(RoomState::genesis(&op, &root, 1000).is_err());
        }
    } else {
        cinder_fuzz::canonical("room state", rest, RoomState::decode, RoomState::encode);
    }
});
