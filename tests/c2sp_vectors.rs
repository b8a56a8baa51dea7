//! All 35 Wycheproof C2SP chunked-encryption AES-256-GCM cases (Cobblestone-256), run through
//! the streaming decryptor, the temp-file-then-rename helper and the seekable reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Read};

use cinder::crypto::chunked::{self, SeekableReader};
use cinder::crypto::primitives::sha512;
use flate2::read::ZlibDecoder;
use wycheproof::TestResult;
use wycheproof::chunked_encryption::{TestFlag, TestName, TestSet};

#[test]
fn wycheproof_c2sp_chunked_aes_256_gcm() {
    let set = TestSet::load(TestName::Cobblestone256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            ran += 1;
            let mut ct = Vec::new();
            ZlibDecoder::new(&t.ct[..]).read_to_end(&mut ct).unwrap();
            let mut out = Vec::new();
            let streamed = chunked::decrypt(&t.key, &t.ctx, &mut &ct[..], &mut out);
            let dest = dir.path().join(format!("case-{}", t.tc_id));
            let to_path = chunked::decrypt_to_path(&t.key, &t.ctx, &mut &ct[..], &dest);
            let seekable =
                SeekableReader::new(&t.key[..], &t.ctx, Cursor::new(&ct)).and_then(|mut r| {
                    let mut all = Vec::new();
                    r.read_to_end(&mut all)?;
                    Ok(all)
                });
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    streamed.unwrap_or_else(|e| panic!("case {} ({}): {e}", t.tc_id, t.comment));
                    assert_eq!(Some(out.len()), t.msg_length, "case {}", t.tc_id);
                    let digest = t.msg_sha512.as_ref().unwrap();
                    assert_eq!(&sha512(&[&out])[..], &digest[..], "case {}", t.tc_id);
                    to_path.unwrap();
                    assert_eq!(std::fs::read(&dest).unwrap(), out);
                    assert_eq!(seekable.unwrap(), out, "case {}", t.tc_id);
                }
                TestResult::Invalid => {
                    assert!(
                        streamed.is_err(),
                        "case {} ({}) decrypted",
                        t.tc_id,
                        t.comment
                    );
                    assert!(to_path.is_err(), "case {}", t.tc_id);
                    assert!(!dest.exists(), "case {} left a partial file", t.tc_id);
                    // Random access authenticates the length through the final chunk at open
                    // (so only ValidFinalChunk vectors may open at all), and every other chunk
                    // when it is read: a full read must fail for every invalid vector.
                    if !t.flags.contains(&TestFlag::ValidFinalChunk) {
                        let opened = SeekableReader::new(&t.key[..], &t.ctx, Cursor::new(&ct));
                        assert!(opened.is_err(), "case {} ({}) opened", t.tc_id, t.comment);
                    }
                    assert!(
                        seekable.is_err(),
                        "case {} ({}) read fully",
                        t.tc_id,
                        t.comment
                    );
                    // Streaming decryptors may emit a verified prefix before failing; the
                    // vectors say how long it may be.
                    if t.flags.contains(&TestFlag::PartialPlaintext) {
                        assert!(out.len() <= t.msg_length.unwrap(), "case {}", t.tc_id);
                        let digest = t.msg_sha512.as_ref().unwrap();
                        assert_eq!(&sha512(&[&out])[..], &digest[..], "case {} prefix", t.tc_id);
                    }
                }
            }
        }
    }
    assert_eq!(ran, 35, "the AES-256-GCM set has 35 cases");
}
