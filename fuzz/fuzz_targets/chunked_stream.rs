#![no_main]
//! `chunked::decrypt` and `chunked::SeekableReader::new` + `read_to_end` over arbitrary bytes
//! with a fixed 32-byte key. The first byte picks what precedes the rest:
//!
//! - 0: nothing (the rest is the whole stream, header included);
//! - 1: a valid file-context header, so the chunk parser and AEAD see the rest;
//! - 2: a valid clip-context header, decrypted as a clip;
//! - 3: a valid file-context header, decrypted as a clip (must always fail).
//!
//! Both readers must agree, and any accepted stream must be exactly the encryption of the
//! plaintext it yielded under the salt it carries.

use cinder::crypto::chunked::{CLIP_CONTEXT, Encryptor, FILE_CONTEXT, SALT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mode = mode % 4;
    let mut stream = match mode {
        0 => Vec::new(),
        1 | 3 => cinder_fuzz::chunk_header(FILE_CONTEXT).to_vec(),
        _ => cinder_fuzz::chunk_header(CLIP_CONTEXT).to_vec(),
    };
    stream.extend_from_slice(rest);
    let context = if mode >= 2 {
        CLIP_CONTEXT
    } else {
        FILE_CONTEXT
    };
    let Some(plain) = cinder_fuzz::chunk_decrypt_both(&cinder_fuzz::CHUNK_KEY, context, &stream)
    else {
        return;
    };
    assert_ne!(mode, 3, "a file stream decrypted as a clip");
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&stream[..SALT_LEN]);
    let mut again = Vec::new();
    Encryptor::with_salt(&cinder_fuzz::CHUNK_KEY, context, salt)
        .expect("32-byte key")
        .encrypt_from(0, &mut &plain[..], &mut again)
        .expect("writing to a Vec cannot fail");
    assert!(
        again == stream,
        "an accepted stream is not the canonical encryption"
    );
});
