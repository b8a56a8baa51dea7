#![no_main]
//! `envelope::open` with a fixed key package over fuzzed bodies. The first byte picks a mode:
//!
//! - 0: the rest is the body, opened with the fixed (deterministic) key package: only the
//!   genuine body may open, to the genuine payload;
//! - 1: the rest is the *padded plaintext*, sealed under the fixed key with a matching package,
//!   so `open` reaches unpadding and `Payload::decode` behind the AEAD; the result must match a
//!   reference unpad-and-decode;
//! - 2: a package and body from the real `envelope::seal` (random key, once per process); the
//!   rest is XORed over the body (and any excess appended): only the unmodified body may open.

use std::sync::LazyLock;

use cinder::crypto::envelope::{self, KeyPackage, Payload};
use libfuzzer_sys::fuzz_target;

static SEALED: LazyLock<(KeyPackage, Vec<u8>)> =
    LazyLock::new(|| envelope::seal(&cinder_fuzz::sample_payload()).expect("seal"));

/// The reference unpadding: strip trailing zeros, then one 0x80 marker.
fn unpad(padded: &[u8]) -> Option<&[u8]> {
    let end = padded.iter().rposition(|&b| b != 0)?;
    (padded[end] == 0x80).then_some(&padded[..end])
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let fix = cinder_fuzz::envelope_fixture();
            let opened = envelope::open(&fix.package, rest);
            assert_eq!(
                opened.is_ok(),
                rest == fix.body,
                "open accepted a foreign body"
            );
            if let Ok(p) = opened {
                assert_eq!(p, fix.payload);
            }
        }
        1 => {
            let (package, body) = cinder_fuzz::seal_padded(&cinder_fuzz::ENVELOPE_KEY, rest);
            let opened = envelope::open(&package, &body);
            let reference = unpad(rest).and_then(|p| Payload::decode(p).ok());
            match (opened, reference) {
                (Ok(p), Some(r)) => {
                    assert_eq!(p, r);
                    assert_eq!(Some(&p.encode().unwrap()[..]), unpad(rest));
                }
                (Err(_), None) => {}
                (Ok(p), None) => panic!("open accepted what the reference rejects: {p:?}"),
                (Err(e), Some(_)) => panic!("open rejected a valid padded payload: {e}"),
            }
        }
        _ => {
            let (package, body) = &*SEALED;
            let mut mutated = body.clone();
            for (i, b) in rest.iter().enumerate() {
                match mutated.get_mut(i) {
                    Some(m) => *m ^= b,
                    None => mutated.push(*b),
                }
            }
            let opened = envelope::open(package, &mutated);
            assert_eq!(
                opened.is_ok(),
                mutated == *body,
                "open accepted a modified body"
            );
            if let Ok(p) = opened {
                assert_eq!(p, cinder_fuzz::sample_payload());
            }
        }
    }
});
