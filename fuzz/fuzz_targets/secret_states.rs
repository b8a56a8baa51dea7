#![no_main]
//! The remaining secret cache states; the first byte picks the decoder, the rest is its input:
//!
//! - 0: `prekeys::DevicePrekeys::from_secret_bytes` (must serialise stably; the encoding is not
//!   canonical: duplicate ids collapse and one-time keys come back sorted by id);
//! - 1: `sender_keys::ReceivedSenderKey::from_secret_bytes` (must re-encode exactly);
//! - 2: `sender_keys::SenderKeyState::from_secret_bytes` (must re-encode exactly).

use cinder::crypto::prekeys::DevicePrekeys;
use cinder::crypto::sender_keys::{ReceivedSenderKey, SenderKeyState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            cinder_fuzz::stable(
                "device prekeys",
                rest,
                DevicePrekeys::from_secret_bytes,
                DevicePrekeys::to_secret_bytes,
            );
        }
        1 => {
            cinder_fuzz::canonical(
                "received sender key",
                rest,
                ReceivedSenderKey::from_secret_bytes,
                ReceivedSenderKey::to_secret_bytes,
            );
        }
        _ => {
            cinder_fuzz::canonical(
                "sender key state",
                rest,
                SenderKeyState::from_secret_bytes,
                SenderKeyState::to_secret_bytes,
            );
        }
    }
});
