#![no_main]
//! `identity::Revocation::decode` on arbitrary bytes; a revocation that decodes must re-encode
//! to exactly the input.

use cinder::crypto::identity::Revocation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::canonical("revocation", data, Revocation::decode, Revocation::encode);
});
