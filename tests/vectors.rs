//! Published known-answer tests for the wrappers in `cinder::crypto::primitives`.
//!
//! Every vector below is copied from the document named in the comment above its test. A vector
//! copied wrong makes its test fail, so a failure here means either a transcription error or a
//! real defect in the wrapper; both are worth a look.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cinder::crypto::CryptoError;
use cinder::crypto::primitives::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex in a test vector")
}

fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().expect("32-byte test vector")
}

fn h64(s: &str) -> [u8; 64] {
    h(s).try_into().expect("64-byte test vector")
}

fn h12(s: &str) -> [u8; 12] {
    h(s).try_into().expect("12-byte test vector")
}

// ---------------------------------------------------------------------------------------------
// X25519: RFC 7748
// ---------------------------------------------------------------------------------------------

/// X25519 through the wrapper: `DhKeyPair::from_secret_bytes(k).dh(u)`.
fn wrapper_x25519(k: [u8; 32], u: [u8; 32]) -> [u8; 32] {
    *DhKeyPair::from_secret_bytes(k).dh(&u).unwrap().expose()
}

/// RFC 7748 section 5.2, first single test vector.
#[test]
fn rfc7748_5_2_x25519_vector_1() {
    let k = h32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    let u = h32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
    let out = h32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
    assert_eq!(x25519_dalek::x25519(k, u), out);
    assert_eq!(wrapper_x25519(k, u), out);
}

/// RFC 7748 section 5.2, second single test vector (its u-coordinate has the top bit set,
/// which X25519 must mask).
#[test]
fn rfc7748_5_2_x25519_vector_2() {
    let k = h32("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d");
    let u = h32("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493");
    let out = h32("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
    assert_eq!(x25519_dalek::x25519(k, u), out);
    assert_eq!(wrapper_x25519(k, u), out);
}

/// RFC 7748 section 5.2 iterated test: start with k = u = 9, then repeatedly set
/// `(k, u) = (X25519(k, u), k)`. Checks the values after 1 and after 1,000 iterations
/// (the 1,000,000-iteration value is not run: it takes minutes).
#[test]
fn rfc7748_5_2_x25519_iterated_1_and_1000() {
    let after_1 = h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
    let after_1000 = h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");

    let mut k = x25519_dalek::X25519_BASEPOINT_BYTES;
    let mut u = x25519_dalek::X25519_BASEPOINT_BYTES;
    for i in 1..=1000 {
        let r = wrapper_x25519(k, u);
        // The wrapper and the raw ladder must agree at every step.
        assert_eq!(r, x25519_dalek::x25519(k, u), "iteration {i}");
        u = k;
        k = r;
        if i == 1 {
            assert_eq!(k, after_1, "after 1 iteration");
        }
    }
    assert_eq!(k, after_1000, "after 1,000 iterations");
}

/// RFC 7748 section 6.1: Alice and Bob's key pairs and their shared secret, through `DhKeyPair`.
#[test]
fn rfc7748_6_1_diffie_hellman() {
    let alice_private = h32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let alice_public = h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_private = h32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let bob_public = h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

    let alice = DhKeyPair::from_secret_bytes(alice_private);
    let bob = DhKeyPair::from_secret_bytes(bob_private);
    assert_eq!(alice.public(), alice_public);
    assert_eq!(bob.public(), bob_public);
    assert_eq!(alice.dh(&bob_public).unwrap().expose(), &shared);
    assert_eq!(bob.dh(&alice_public).unwrap().expose(), &shared);
    // The stored scalar round-trips unchanged (it is persisted in the encrypted cache).
    assert_eq!(*alice.secret_bytes(), alice_private);
}

/// Not an RFC vector: the all-zero u-coordinate is a low-order point, so X25519 yields zero and
/// the wrapper must refuse it (docs/crypto.md section 2, "non-contributory results rejected").
#[test]
fn x25519_low_order_point_is_rejected() {
    let alice = DhKeyPair::from_secret_bytes(h32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    assert!(matches!(
        alice.dh(&[0u8; 32]),
        Err(CryptoError::NonContributory)
    ));
}

// ---------------------------------------------------------------------------------------------
// Ed25519: RFC 8032 section 7.1
// ---------------------------------------------------------------------------------------------

fn check_ed25519(secret: &str, public: &str, msg: &[u8], sig: &str) {
    let secret = h32(secret);
    let public = h32(public);
    let sig = h64(sig);

    let key = SigningKeyPair::from_secret_bytes(&secret);
    assert_eq!(key.public(), public, "public key from secret");
    assert_eq!(key.sign(msg), sig, "signature bytes");
    assert_eq!(*key.secret_bytes(), secret, "seed round-trip");
    verify_signature(&public, msg, &sig).expect("published signature verifies");

    // Flip one bit in each half of the signature (R and S): both must be rejected.
    for byte in [0usize, 40] {
        let mut bad = sig;
        bad[byte] ^= 0x01;
        assert!(
            matches!(
                verify_signature(&public, msg, &bad),
                Err(CryptoError::BadSignature)
            ),
            "bit flip in byte {byte} accepted"
        );
    }
    // A different message is rejected too.
    let mut other = msg.to_vec();
    other.push(0);
    assert!(verify_signature(&public, &other, &sig).is_err());
}

/// RFC 8032 section 7.1, TEST 1 (empty message).
#[test]
fn rfc8032_7_1_ed25519_test_1() {
    check_ed25519(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        b"",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
         5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    );
}

/// RFC 8032 section 7.1, TEST 2 (one-byte message 0x72).
#[test]
fn rfc8032_7_1_ed25519_test_2() {
    check_ed25519(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        &h("72"),
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
         085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    );
}

/// RFC 8032 section 7.1, TEST 3 (two-byte message 0xaf82).
#[test]
fn rfc8032_7_1_ed25519_test_3() {
    check_ed25519(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        &h("af82"),
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac\
         18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    );
}

/// RFC 8032 section 7.1, TEST SHA(abc): the message is SHA-512("abc"), which also checks the
/// `sha512` wrapper against the value printed in the RFC.
#[test]
fn rfc8032_7_1_ed25519_test_sha_abc() {
    let msg = h(
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    );
    assert_eq!(sha512(&[b"abc"]).as_slice(), msg.as_slice());
    assert_eq!(sha512(&[b"a", b"", b"bc"]).as_slice(), msg.as_slice());
    check_ed25519(
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        &msg,
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589\
         09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    );
}

// ---------------------------------------------------------------------------------------------
// HKDF-SHA-256: RFC 5869 Appendix A
// ---------------------------------------------------------------------------------------------

fn check_hkdf(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], prk: &str, okm: &str) {
    let okm = h(okm);
    let mut out = vec![0u8; okm.len()];
    hkdf_sha256(salt, ikm, info, &mut out).unwrap();
    assert_eq!(out, okm, "OKM");

    let (prk_got, _) = hkdf::Hkdf::<sha2::Sha256>::extract(salt, ikm);
    assert_eq!(prk_got.as_slice(), h(prk).as_slice(), "PRK");
}

/// RFC 5869 Appendix A.1, Test Case 1: basic test case with SHA-256 (L = 42).
#[test]
fn rfc5869_a1_hkdf_sha256_test_case_1() {
    check_hkdf(
        Some(&h("000102030405060708090a0b0c")),
        &h("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
        &h("f0f1f2f3f4f5f6f7f8f9"),
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
         34007208d5b887185865",
    );
}

/// RFC 5869 Appendix A.2, Test Case 2: SHA-256 with longer inputs/outputs (80-byte IKM, salt
/// and info; L = 82).
#[test]
fn rfc5869_a2_hkdf_sha256_test_case_2() {
    let ikm: Vec<u8> = (0x00..=0x4f).collect();
    let salt: Vec<u8> = (0x60..=0xaf).collect();
    let info: Vec<u8> = (0xb0..=0xff).collect();
    // The ranges above are exactly what the RFC prints.
    assert_eq!(
        ikm,
        h(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
           202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
           404142434445464748494a4b4c4d4e4f"
        )
    );
    assert_eq!(
        salt,
        h(
            "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
           808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
           a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
        )
    );
    assert_eq!(
        info,
        h(
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf\
           d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef\
           f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
        )
    );
    check_hkdf(
        Some(&salt),
        &ikm,
        &info,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
         59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
         cc30c58179ec3e87c14c01d5c1f3434f1d87",
    );
}

/// RFC 5869 Appendix A.3, Test Case 3: SHA-256 with zero-length salt and info (L = 42).
/// "Not provided" (`None`) and an explicitly empty salt must both give the RFC's result.
#[test]
fn rfc5869_a3_hkdf_sha256_test_case_3() {
    let ikm = h("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
    let prk = "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04";
    let okm = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d\
               9d201395faa4b61a96c8";
    check_hkdf(None, &ikm, b"", prk, okm);
    check_hkdf(Some(&[]), &ikm, b"", prk, okm);
    check_hkdf(Some(&[0u8; 32]), &ikm, b"", prk, okm);
}

/// RFC 5869 section 2.3: L must not exceed 255 * HashLen; the wrapper reports `Limit`.
#[test]
fn rfc5869_2_3_hkdf_sha256_output_limit() {
    let mut max = vec![0u8; 255 * 32];
    hkdf_sha256(None, b"ikm", b"info", &mut max).unwrap();
    let mut too_long = vec![0u8; 255 * 32 + 1];
    assert!(matches!(
        hkdf_sha256(None, b"ikm", b"info", &mut too_long),
        Err(CryptoError::Limit(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// AES-256-GCM: McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", Appendix B
// ---------------------------------------------------------------------------------------------

fn check_gcm(key: &str, pt: &str, aad: &str, iv: &str, ct: &str, tag: &str) {
    let key = h(key);
    let pt = h(pt);
    let aad = h(aad);
    let iv = h12(iv);
    let mut expected = h(ct);
    let tag = h(tag);
    assert_eq!(expected.len(), pt.len());
    expected.extend_from_slice(&tag);

    let aead = Aead::from_slice(&key).unwrap();
    let sealed = aead.seal(&iv, &aad, &pt);
    assert_eq!(hex::encode(&sealed), hex::encode(&expected), "ct || tag");
    assert_eq!(aead.open(&iv, &aad, &sealed).unwrap(), pt, "open");

    // The one-shot helpers over a `Secret32` agree.
    let secret = Secret32::from_bytes(key.clone().try_into().unwrap());
    assert_eq!(seal(&secret, &iv, &aad, &pt), expected);
    assert_eq!(open(&secret, &iv, &aad, &expected).unwrap(), pt);

    // The in-place, detached-tag variants agree.
    let mut buf = pt.clone();
    let detached = aead.seal_in_place(&iv, &aad, &mut buf);
    assert_eq!(&buf[..], &expected[..pt.len()]);
    assert_eq!(&detached[..], &tag[..]);
    aead.open_in_place(&iv, &aad, &mut buf, &detached).unwrap();
    assert_eq!(buf, pt);

    // Tag flip: every bit position of the last tag byte, and the first tag byte.
    for (pos, bit) in [
        (expected.len() - 1, 0x01u8),
        (expected.len() - 1, 0x80),
        (pt.len(), 0x01),
    ] {
        let mut bad = expected.clone();
        bad[pos] ^= bit;
        assert!(
            matches!(aead.open(&iv, &aad, &bad), Err(CryptoError::Integrity)),
            "flipped tag accepted at byte {pos}"
        );
    }
    let mut bad_tag: [u8; TAG_LEN] = tag.clone().try_into().unwrap();
    bad_tag[0] ^= 0x01;
    let mut buf = expected[..pt.len()].to_vec();
    assert!(aead.open_in_place(&iv, &aad, &mut buf, &bad_tag).is_err());
    assert_eq!(
        &buf[..],
        &expected[..pt.len()],
        "buffer left encrypted on failure"
    );
    // Ciphertext flip (when there is ciphertext) and AAD change are rejected too.
    if !pt.is_empty() {
        let mut bad = expected.clone();
        bad[0] ^= 0x01;
        assert!(aead.open(&iv, &aad, &bad).is_err());
    }
    let mut other_aad = aad.clone();
    other_aad.push(0);
    assert!(aead.open(&iv, &other_aad, &expected).is_err());
    // A truncated input (shorter than a tag) is rejected, not a panic.
    assert!(aead.open(&iv, &aad, &expected[..TAG_LEN - 1]).is_err());
}

/// GCM spec Appendix B, Test Case 13: AES-256, zero key, zero IV, empty plaintext and AAD.
#[test]
fn gcm_spec_test_case_13() {
    check_gcm(
        "0000000000000000000000000000000000000000000000000000000000000000",
        "",
        "",
        "000000000000000000000000",
        "",
        "530f8afbc74536b9a963b4f1c4cb738b",
    );
}

/// GCM spec Appendix B, Test Case 14: AES-256, zero key, zero IV, one zero block of plaintext.
#[test]
fn gcm_spec_test_case_14() {
    check_gcm(
        "0000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000",
        "",
        "000000000000000000000000",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    );
}

/// GCM spec Appendix B, Test Case 15: AES-256, 64-byte plaintext, no AAD.
#[test]
fn gcm_spec_test_case_15() {
    check_gcm(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "",
        "cafebabefacedbaddecaf888",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
    );
}

/// GCM spec Appendix B, Test Case 16: AES-256, 60-byte plaintext, 20-byte AAD.
#[test]
fn gcm_spec_test_case_16() {
    check_gcm(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "cafebabefacedbaddecaf888",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    );
}

/// `Aead::from_slice` accepts only 256-bit keys (AES-256-GCM only, docs/crypto.md section 2).
#[test]
fn aead_rejects_non_256_bit_keys() {
    for len in [0usize, 16, 24, 31, 33, 64] {
        assert!(
            matches!(
                Aead::from_slice(&vec![0u8; len]),
                Err(CryptoError::InvalidKeySize)
            ),
            "key of {len} bytes accepted"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Argon2id: RFC 9106 section 5.3
// ---------------------------------------------------------------------------------------------

/// RFC 9106 section 5.3, the Argon2id test vector: version 0x13, m = 32 KiB, t = 3, p = 4,
/// tag length 32, password 32 x 0x01, salt 16 x 0x02, secret 8 x 0x03, associated data
/// 12 x 0x04.
#[test]
fn rfc9106_5_3_argon2id() {
    use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};

    let password = [0x01u8; 32];
    let salt = [0x02u8; 16];
    let secret = [0x03u8; 8];
    let ad = [0x04u8; 12];
    let tag = h32("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659");

    let params = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(AssociatedData::new(&ad).unwrap())
        .build()
        .unwrap();
    let ctx =
        Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut out = [0u8; 32];
    ctx.hash_password_into(&password, &salt, &mut out).unwrap();
    assert_eq!(out, tag);
}

// ---------------------------------------------------------------------------------------------
// SHA-2 and HMAC (extra: the hash wrappers are used everywhere above them)
// ---------------------------------------------------------------------------------------------

/// FIPS 180-2 Appendix B.1 (SHA-256 of "abc"), split across parts to check concatenation.
#[test]
fn fips180_sha256_abc() {
    let expected = h32("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(sha256(&[b"abc"]), expected);
    assert_eq!(sha256(&[b"ab", b"c"]), expected);
    assert_eq!(sha256(&[b"", b"a", b"bc", b""]), expected);
}

/// RFC 4231 section 4.2 (Test Case 1) and 4.3 (Test Case 2), HMAC-SHA-256.
#[test]
fn rfc4231_hmac_sha256_test_cases_1_and_2() {
    assert_eq!(
        hmac_sha256(&[0x0b; 20], b"Hi There"),
        h32("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        h32("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}
