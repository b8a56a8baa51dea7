#![no_main]
//! `sender_keys::SenderKeyDistribution::decode` on arbitrary bytes; a distribution that decodes
//! must re-encode to exactly the input.

use cinder::crypto::sender_keys::SenderKeyDistribution;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::canonical(
        "sender key distribution",
        data,
        SenderKeyDistribution::decode,
        SenderKeyDistribution::encode,
    );
});
