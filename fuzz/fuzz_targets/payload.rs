#![no_main]
//! `envelope::Payload::decode` on arbitrary bytes; a payload that decodes must re-encode to
//! exactly the input.

use cinder::crypto::envelope::Payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::canonical("payload", data, Payload::decode, Payload::encode);
});
