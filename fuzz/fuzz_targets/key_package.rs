#![no_main]
//! `envelope::KeyPackage::decode` on arbitrary bytes (must re-encode exactly), then
//! `envelope::open` of the decoded package against a fixed valid body: only the genuine package
//! may open it.

use cinder::crypto::envelope::{self, KeyPackage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fix = cinder_fuzz::envelope_fixture();
    if let Some(package) =
        cinder_fuzz::canonical("key package", data, KeyPackage::decode, KeyPackage::encode)
        && let Ok(payload) = envelope::open(&package, &fix.body)
    {
        assert_eq!(payload, fix.payload);
        assert_eq!(
            *package.encode().unwrap(),
            *fix.package.encode().unwrap(),
            "a forged package opened"
        );
    }
});
