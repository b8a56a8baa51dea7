//! Wycheproof test sets run through the wrappers in `cinder::crypto::primitives`.
//!
//! Each test counts the cases it ran and the cases it skipped (with the reason), prints the
//! counts (`cargo test --test wycheproof -- --nocapture` shows them), asserts that at least one
//! case ran and that every case met its expected result. Failures are collected and reported
//! together, so one run shows every mismatching `tcId`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cinder::crypto::CryptoError;
use cinder::crypto::primitives::*;
use wycheproof::TestResult;

/// Running totals for one Wycheproof set.
#[derive(Default)]
struct Tally {
    ran: usize,
    skipped: usize,
    failures: Vec<String>,
}

impl Tally {
    fn ok(&mut self) {
        self.ran += 1;
    }

    fn check(&mut self, cond: bool, tc_id: usize, what: impl FnOnce() -> String) {
        self.ran += 1;
        if !cond {
            self.failures.push(format!("tcId {tc_id}: {}", what()));
        }
    }

    fn skip(&mut self) {
        self.skipped += 1;
    }

    fn finish(self, set: &str, total: usize) {
        println!(
            "{set}: {} run, {} skipped, {} failed (of {total} in the file)",
            self.ran,
            self.skipped,
            self.failures.len()
        );
        assert!(self.ran > 0, "{set}: no case ran");
        assert_eq!(
            self.ran + self.skipped,
            total,
            "{set}: cases unaccounted for"
        );
        assert!(
            self.failures.is_empty(),
            "{set}: {} failure(s):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// AES-GCM
// ---------------------------------------------------------------------------------------------

/// `aes_gcm_test.json`: every group with a 256-bit key, 96-bit nonce and 128-bit tag goes
/// through `Aead`; valid cases must seal to `ct || tag` and open, invalid ones must not open.
#[test]
fn wycheproof_aes_gcm() {
    use wycheproof::aead::{TestName, TestSet};

    let set = TestSet::load(TestName::AesGcm).unwrap();
    let mut t = Tally::default();
    let mut skipped_groups = 0usize;
    for group in &set.test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            skipped_groups += 1;
            for _ in &group.tests {
                t.skip();
            }
            continue;
        }
        for tc in &group.tests {
            let id = tc.tc_id;
            let aead = Aead::from_slice(&tc.key).unwrap();
            let nonce: [u8; 12] = tc.nonce.as_slice().try_into().unwrap();
            let mut ct_tag = tc.ct.to_vec();
            ct_tag.extend_from_slice(&tc.tag);
            let opened = aead.open(&nonce, &tc.aad, &ct_tag);
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let sealed = aead.seal(&nonce, &tc.aad, &tc.pt);
                    t.check(sealed == ct_tag, id, || {
                        format!(
                            "seal gave {}, want {}",
                            hex::encode(&sealed),
                            hex::encode(&ct_tag)
                        )
                    });
                    let ok = matches!(&opened, Ok(pt) if pt.as_slice() == tc.pt.as_slice());
                    if !ok {
                        t.failures
                            .push(format!("tcId {id}: open failed or wrong plaintext"));
                    }
                }
                TestResult::Invalid => {
                    t.check(matches!(opened, Err(CryptoError::Integrity)), id, || {
                        format!("invalid case opened ({})", tc.comment)
                    });
                }
            }
        }
    }
    println!("aes_gcm: {skipped_groups} group(s) with other key/nonce/tag sizes skipped");
    t.finish("aes_gcm_test.json", set.number_of_tests);
}

// ---------------------------------------------------------------------------------------------
// X25519
// ---------------------------------------------------------------------------------------------

/// `x25519_test.json` through `DhKeyPair::from_secret_bytes(private).dh(public)`.
///
/// Valid: the shared secret must match. Any case whose expected shared secret is all zeros must
/// return `NonContributory` (our "non-contributory results rejected" rule). Other acceptable
/// cases must match the expected value; other invalid cases must be refused.
#[test]
fn wycheproof_x25519() {
    use wycheproof::MontgomeryCurve;
    use wycheproof::xdh::{TestName, TestSet};

    let set = TestSet::load(TestName::X25519).unwrap();
    let mut t = Tally::default();
    let mut zero_rejected = 0usize;
    for group in &set.test_groups {
        assert_eq!(group.curve, MontgomeryCurve::X25519);
        for tc in &group.tests {
            let id = tc.tc_id;
            let (Ok(public), Ok(private)) = (
                <[u8; 32]>::try_from(tc.public_key.as_slice()),
                <[u8; 32]>::try_from(tc.private_key.as_slice()),
            ) else {
                t.skip();
                continue;
            };
            let got = DhKeyPair::from_secret_bytes(private).dh(&public);
            let expect_zero = tc.shared_secret.iter().all(|&b| b == 0);
            if expect_zero {
                zero_rejected += 1;
                t.check(matches!(got, Err(CryptoError::NonContributory)), id, || {
                    format!("all-zero shared secret not rejected ({:?})", tc.result)
                });
                continue;
            }
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let ok = matches!(&got, Ok(s) if s.expose().as_slice() == tc.shared_secret.as_slice());
                    t.check(ok, id, || {
                        format!(
                            "{:?} case: got {:?}, want {}",
                            tc.result,
                            got.as_ref().map(|s| hex::encode(s.expose())),
                            hex::encode(&*tc.shared_secret)
                        )
                    });
                }
                TestResult::Invalid => {
                    t.check(got.is_err(), id, || "invalid case accepted".into());
                }
            }
        }
    }
    println!("x25519: {zero_rejected} all-zero (low-order) case(s) rejected as NonContributory");
    t.finish("x25519_test.json", set.number_of_tests);
}

// ---------------------------------------------------------------------------------------------
// Ed25519
// ---------------------------------------------------------------------------------------------

/// `ed25519_test.json` through `verify_signature` (`verify_strict`): valid must verify, invalid
/// must be rejected. A signature that is not 64 bytes cannot even be passed to the wrapper; it
/// counts as rejected for an invalid case and as a failure for a valid one.
#[test]
fn wycheproof_ed25519() {
    use wycheproof::EdwardsCurve;
    use wycheproof::eddsa::{TestName, TestSet};

    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut t = Tally::default();
    let mut bad_length = 0usize;
    for group in &set.test_groups {
        assert_eq!(group.key.curve, EdwardsCurve::Ed25519);
        let public: [u8; 32] = group.key.pk.as_slice().try_into().unwrap();
        for tc in &group.tests {
            let id = tc.tc_id;
            let verified = match <[u8; 64]>::try_from(tc.sig.as_slice()) {
                Ok(sig) => verify_signature(&public, &tc.msg, &sig),
                Err(_) => {
                    bad_length += 1;
                    Err(CryptoError::BadSignature)
                }
            };
            match tc.result {
                TestResult::Valid => {
                    t.check(verified.is_ok(), id, || {
                        format!("valid signature rejected ({})", tc.comment)
                    });
                }
                TestResult::Invalid => {
                    t.check(
                        matches!(verified, Err(CryptoError::BadSignature)),
                        id,
                        || format!("invalid signature accepted ({})", tc.comment),
                    );
                }
                // None in the current file; either answer is allowed.
                TestResult::Acceptable => t.ok(),
            }
        }
    }
    println!("ed25519: {bad_length} signature(s) of the wrong length counted as rejected");
    t.finish("ed25519_test.json", set.number_of_tests);
}

// ---------------------------------------------------------------------------------------------
// HKDF
// ---------------------------------------------------------------------------------------------

/// `hkdf_sha256_test.json` through `hkdf_sha256`. The JSON's empty salt means "salt of HashLen
/// zero bytes" (its `EmptySalt` note); it is passed as `Some(&[])`, and for those cases `None`
/// and 32 zero bytes are checked to give the same output. Invalid cases (output too long)
/// must return an error.
#[test]
fn wycheproof_hkdf_sha256() {
    use wycheproof::hkdf::{TestName, TestSet};

    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let mut t = Tally::default();
    for group in &set.test_groups {
        for tc in &group.tests {
            let id = tc.tc_id;
            let mut out = vec![0u8; tc.size];
            let got = hkdf_sha256(Some(&tc.salt), &tc.ikm, &tc.info, &mut out);
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    t.check(got.is_ok() && out == *tc.okm, id, || {
                        format!("okm {} want {}", hex::encode(&out), hex::encode(&*tc.okm))
                    });
                    if tc.salt.is_empty() {
                        for salt in [None, Some(&[0u8; 32][..])] {
                            let mut again = vec![0u8; tc.size];
                            hkdf_sha256(salt, &tc.ikm, &tc.info, &mut again).unwrap();
                            if again != *tc.okm {
                                t.failures
                                    .push(format!("tcId {id}: salt {salt:?} differs from empty"));
                            }
                        }
                    }
                }
                TestResult::Invalid => {
                    t.check(matches!(got, Err(CryptoError::Limit(_))), id, || {
                        format!("invalid case (size {}) accepted", tc.size)
                    });
                }
            }
        }
    }
    t.finish("hkdf_sha256_test.json", set.number_of_tests);
}

/// Extra: `hkdf_sha512_test.json` through the hand-written `hkdf_expand_sha512`, with the PRK
/// computed as HMAC-SHA-512(salt, ikm) (RFC 5869 section 2.2; an empty salt is the HMAC key of
/// zero length, which HMAC pads to the same block as HashLen zeros).
#[test]
fn wycheproof_hkdf_sha512_expand() {
    use hmac::{Hmac, KeyInit, Mac};
    use wycheproof::hkdf::{TestName, TestSet};

    let set = TestSet::load(TestName::HkdfSha512).unwrap();
    let mut t = Tally::default();
    for group in &set.test_groups {
        for tc in &group.tests {
            let id = tc.tc_id;
            let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(&tc.salt).unwrap();
            mac.update(&tc.ikm);
            let prk = mac.finalize().into_bytes();
            let mut out = vec![0u8; tc.size];
            let got = hkdf_expand_sha512(&prk, &tc.info, &mut out);
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    t.check(got.is_ok() && out == *tc.okm, id, || {
                        format!("okm {} want {}", hex::encode(&out), hex::encode(&*tc.okm))
                    });
                }
                TestResult::Invalid => {
                    t.check(matches!(got, Err(CryptoError::Limit(_))), id, || {
                        format!("invalid case (size {}) accepted", tc.size)
                    });
                }
            }
        }
    }
    t.finish("hkdf_sha512_test.json", set.number_of_tests);
}

// ---------------------------------------------------------------------------------------------
// ML-KEM-1024
// ---------------------------------------------------------------------------------------------

fn seed64(bytes: &[u8]) -> Option<[u8; 64]> {
    bytes.try_into().ok()
}

/// `mlkem_1024_keygen_seed_test.json`: `PqKeyPair::from_seed(d || z).public()` must equal `ek`.
#[test]
fn wycheproof_mlkem_1024_keygen_seed() {
    use wycheproof::mlkem::{MlKemParameterSet, TestName, TestSet};

    let set = TestSet::load(TestName::MlKem1024KeyGenSeed).unwrap();
    let mut t = Tally::default();
    for group in &set.test_groups {
        assert_eq!(group.parameter_set, MlKemParameterSet::MlKem1024);
        for tc in &group.tests {
            let id = tc.tc_id;
            let seed = tc.seed.as_ref().expect("keygen case has a seed");
            let ek = tc.encaps_key.as_ref().expect("keygen case has an ek");
            match (tc.result, seed64(seed)) {
                (TestResult::Valid | TestResult::Acceptable, Some(seed)) => {
                    let kp = PqKeyPair::from_seed(&seed);
                    let public = kp.public();
                    t.check(
                        public.len() == PQ_PUBLIC_LEN && public == **ek && kp.seed() == &seed,
                        id,
                        || "ek differs".into(),
                    );
                }
                (TestResult::Invalid, None) => t.ok(),
                (result, _) => {
                    t.check(false, id, || {
                        format!(
                            "unexpected case: {result:?} with a {}-byte seed",
                            seed.len()
                        )
                    });
                }
            }
        }
    }
    t.finish("mlkem_1024_keygen_seed_test.json", set.number_of_tests);
}

/// `mlkem_1024_encaps_test.json`: valid cases through `EncapsulationKey::encapsulate_deterministic`
/// (and `pq_encapsulate` must accept the key); invalid keys (wrong length, coefficients not
/// reduced mod q) must be refused both by `EncapsulationKey::new` and by `pq_encapsulate`.
#[test]
fn wycheproof_mlkem_1024_encaps() {
    use ml_kem::kem::Key;
    use ml_kem::{B32, EncapsulationKey1024};
    use wycheproof::mlkem::{MlKemParameterSet, TestName, TestSet};

    let set = TestSet::load(TestName::MlKem1024Encaps).unwrap();
    let mut t = Tally::default();
    for group in &set.test_groups {
        assert_eq!(group.parameter_set, MlKemParameterSet::MlKem1024);
        for tc in &group.tests {
            let id = tc.tc_id;
            let ek_bytes = tc.encaps_key.as_ref().expect("encaps case has an ek");
            let direct = Key::<EncapsulationKey1024>::try_from(ek_bytes.as_slice())
                .ok()
                .and_then(|k| EncapsulationKey1024::new(&k).ok());
            let wrapped = pq_encapsulate(ek_bytes);
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let (Some(ek), Ok((ct, _))) = (&direct, &wrapped) else {
                        t.check(false, id, || format!("valid ek refused ({})", tc.comment));
                        continue;
                    };
                    let m = B32::try_from(tc.msg.as_ref().expect("m").as_slice()).unwrap();
                    let (c, k) = ek.encapsulate_deterministic(&m);
                    let want_c = tc.ct.as_ref().expect("c");
                    let want_k = tc.shared_secret.as_ref().expect("K");
                    t.check(
                        c.as_slice() == want_c.as_slice()
                            && k.as_slice() == want_k.as_slice()
                            && ct.len() == PQ_CIPHERTEXT_LEN,
                        id,
                        || "ciphertext or shared key differs".into(),
                    );
                }
                TestResult::Invalid => {
                    t.check(
                        direct.is_none() && matches!(wrapped, Err(CryptoError::Malformed(_))),
                        id,
                        || {
                            format!(
                                "invalid ek accepted (direct: {}, pq_encapsulate: {}) ({})",
                                direct.is_some(),
                                wrapped.is_ok(),
                                tc.comment
                            )
                        },
                    );
                }
            }
        }
    }
    t.finish("mlkem_1024_encaps_test.json", set.number_of_tests);
}

/// `mlkem_1024_test.json`: decapsulation through `PqKeyPair::from_seed(seed).decapsulate(c)`.
/// Valid cases (including modified ciphertexts, which must yield the implicit-rejection key
/// given as `K`) must match; invalid cases are wrong-length seeds (which `from_seed`'s
/// `&[u8; 64]` cannot take) and wrong-length ciphertexts (which `decapsulate` must refuse).
#[test]
fn wycheproof_mlkem_1024_decaps() {
    use wycheproof::mlkem::{MlKemParameterSet, TestName, TestSet};

    let set = TestSet::load(TestName::MlKem1024).unwrap();
    let mut t = Tally::default();
    let mut seed_rejected = 0usize;
    let mut ct_rejected = 0usize;
    for group in &set.test_groups {
        assert_eq!(group.parameter_set, MlKemParameterSet::MlKem1024);
        for tc in &group.tests {
            let id = tc.tc_id;
            let seed = tc.seed.as_ref().expect("decaps case has a seed");
            let ct = tc.ct.as_ref().expect("decaps case has a ciphertext");
            let Some(seed) = seed64(seed) else {
                seed_rejected += 1;
                t.check(tc.result == TestResult::Invalid, id, || {
                    format!("{:?} case with a {}-byte seed", tc.result, seed.len())
                });
                continue;
            };
            let kp = PqKeyPair::from_seed(&seed);
            if let Some(ek) = tc.encaps_key.as_ref().filter(|ek| !ek.is_empty())
                && kp.public() != **ek
            {
                t.failures.push(format!("tcId {id}: ek from seed differs"));
            }
            let got = kp.decapsulate(ct);
            match tc.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let want = tc.shared_secret.as_ref().expect("K");
                    let ok = matches!(&got, Ok(k) if k.expose().as_slice() == want.as_slice());
                    t.check(ok, id, || format!("shared key differs ({})", tc.comment));
                }
                TestResult::Invalid => {
                    ct_rejected += 1;
                    t.check(matches!(got, Err(CryptoError::Malformed(_))), id, || {
                        format!("{}-byte ciphertext accepted ({})", ct.len(), tc.comment)
                    });
                }
            }
        }
    }
    println!(
        "mlkem_1024: {seed_rejected} wrong-length seed(s) rejected by type, \
         {ct_rejected} wrong-length ciphertext(s) rejected by decapsulate"
    );
    t.finish("mlkem_1024_test.json", set.number_of_tests);
}
