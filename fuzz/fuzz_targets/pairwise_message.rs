#![no_main]
//! `handshake::PairwiseMessage::decode` and `ratchet::RatchetMessage::decode` on arbitrary
//! bytes; whatever decodes must re-encode to exactly the input.

use cinder::crypto::handshake::PairwiseMessage;
use cinder::crypto::ratchet::RatchetMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(PairwiseMessage::Normal(m)) = cinder_fuzz::canonical(
        "pairwise message",
        data,
        PairwiseMessage::decode,
        PairwiseMessage::encode,
    ) {
        // A normal message is a tag byte and a ratchet message.
        assert_eq!(RatchetMessage::decode(&data[1..]).ok(), Some(m));
    }
    cinder_fuzz::canonical(
        "ratchet message",
        data,
        RatchetMessage::decode,
        RatchetMessage::encode,
    );
});
