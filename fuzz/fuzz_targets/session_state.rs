#![no_main]
//! `handshake::Session::from_secret_bytes` on arbitrary bytes; a session that loads must
//! serialise stably (the encoding is not canonical: a pending handshake's one-time prekey id is
//! ignored when its presence byte is 0).

use cinder::crypto::handshake::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::stable(
        "session",
        data,
        Session::from_secret_bytes,
        Session::to_secret_bytes,
    );
});
