#![no_main]
//! `passphrase::CacheHeader::decode` on arbitrary bytes; a header that decodes must re-encode to
//! exactly the input and carry parameters that pass validation.

use cinder::crypto::passphrase::CacheHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = cinder_fuzz::canonical(
        "cache header",
        data,
        CacheHeader::decode,
        CacheHeader::encode,
    ) {
        assert!(h.params.validate(true).is_ok());
    }
});
