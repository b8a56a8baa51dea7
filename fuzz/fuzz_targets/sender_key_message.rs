#![no_main]
//! `sender_keys::SenderKeyMessage::decode` on arbitrary bytes; a message that decodes must
//! re-encode to exactly the input.

use cinder::crypto::sender_keys::SenderKeyMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::canonical(
        "sender key message",
        data,
        SenderKeyMessage::decode,
        SenderKeyMessage::encode,
    );
});
