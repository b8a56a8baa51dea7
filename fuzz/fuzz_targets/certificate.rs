#![no_main]
//! `identity::DeviceCertificate::decode` on arbitrary bytes; a certificate that decodes must
//! re-encode to exactly the input.

use cinder::crypto::identity::DeviceCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cinder_fuzz::canonical(
        "device certificate",
        data,
        DeviceCertificate::decode,
        DeviceCertificate::encode,
    );
});
