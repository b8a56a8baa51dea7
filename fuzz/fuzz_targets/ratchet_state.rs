#![no_main]
//! `ratchet::RatchetState::from_secret_bytes` on arbitrary bytes; a state that loads must
//! serialise back to exactly the input.

use cinder::crypto::ratchet::RatchetState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::canonical(
        "ratchet state",
        data,
        RatchetState::from_secret_bytes,
        RatchetState::to_secret_bytes,
    );
});
