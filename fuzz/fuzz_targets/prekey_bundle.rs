#![no_main]
//! `prekeys::PrekeyBundle::decode` and `prekeys::PqPrekey::decode` on arbitrary bytes; whatever
//! decodes must re-encode to exactly the input.

use cinder::crypto::prekeys::{PqPrekey, PrekeyBundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bundle) = cinder_fuzz::canonical(
        "prekey bundle",
        data,
        PrekeyBundle::decode,
        PrekeyBundle::encode,
    ) {
        // The embedded PQ prekey is the bundle's tail and must stand alone too.
        let pq = bundle.pq_prekey.encode().unwrap();
        assert!(data.ends_with(&pq));
        assert_eq!(PqPrekey::decode(&pq).ok(), Some(bundle.pq_prekey));
    }
    cinder_fuzz::canonical("pq prekey", data, PqPrekey::decode, PqPrekey::encode);
});
