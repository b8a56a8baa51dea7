//! Lowercase hexadecimal: the one text form of bytes in Cinder (device ids, room ids, network
//! ids, cache keys, `--json` message ids, the SQLCipher key pragma).
//!
//! It lives in `crypto` because `crypto` is the lowest module that every user of hex may import
//! (store, session, relay, cli, bench; the relay through its allow-list of harmless crypto parts),
//! and a top-level module would need a row and an entry in every row of the dependency table.
//! The UI needs no hex: it shows ids the session already formatted.

/// The digits, indexed by nibble.
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    encode_into(&mut s, bytes);
    s
}

/// Appends `bytes` as lowercase hex to `out`.
///
/// # Security
/// Digits are pushed one at a time with no temporary strings, so encoding a secret into a
/// wiped buffer (`Zeroizing<String>`) reserved with room for `2 * bytes.len()` more characters
/// leaves no copy behind; a buffer without that room reallocates and leaves its old contents in
/// freed memory.
pub fn encode_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Whether `s` is exactly what [`encode`] produces for some `len`-byte input: `2 * len`
/// lowercase hex digits (uppercase is refused so that one id has one spelling).
pub fn is_encoding_of_len(s: &str, len: usize) -> bool {
    s.len() == len * 2
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The `N` bytes whose [`encode`] is `s`, or `None` if `s` is not exactly that (wrong length,
/// uppercase or other characters).
pub fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if !is_encoding_of_len(s, N) {
        return None;
    }
    let nibble = |b: u8| {
        if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'a' + 10
        }
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_lowercase_two_digits_per_byte() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0f, 0xa0, 0xff, 0x12]), "000fa0ff12");
        let all: Vec<u8> = (0..=255).collect();
        let s = encode(&all);
        assert_eq!(s.len(), 512);
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).unwrap();
            assert_eq!(u8::from_str_radix(text, 16).unwrap() as usize, i);
        }
    }

    #[test]
    fn encode_into_appends_without_reallocating_a_reserved_buffer() {
        let mut s = String::with_capacity(4 + 64);
        s.push_str("key=");
        let before = s.as_ptr();
        encode_into(&mut s, &[0xab; 32]);
        assert_eq!(s.as_ptr(), before);
        assert_eq!(s, format!("key={}", "ab".repeat(32)));
    }

    #[test]
    fn recognises_only_its_own_output() {
        assert!(is_encoding_of_len(&encode(&[7; 16]), 16));
        assert!(is_encoding_of_len("", 0));
        for bad in ["0", "0g", "AB", "ab ", "abc"] {
            assert!(!is_encoding_of_len(bad, 1), "{bad}");
        }
        assert!(!is_encoding_of_len("abcd", 1));
    }

    #[test]
    fn decode_array_inverts_encode_and_nothing_else() {
        let bytes: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(decode_array::<16>(&encode(&bytes)), Some(bytes));
        assert_eq!(decode_array::<1>("AB"), None);
        assert_eq!(decode_array::<2>("abc"), None);
        assert_eq!(decode_array::<0>(""), Some([]));
    }
}
