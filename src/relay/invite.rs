//! Invite codes: `XXXX-XXXX-XXXX-XXXX` in Crockford's base32, stored only as SHA-256 hashes.
//!
//! Sixteen symbols carry 80 random bits, far beyond guessing through a rate-limited login. The
//! alphabet leaves out I, L, O and U so codes survive being read aloud or retyped; on input,
//! case, spaces and dashes are ignored and the look-alikes O, I and L are read as 0, 1 and 1.
//! The relay keeps `SHA-256("cinder/v1/invite" || canonical code)`, so a copy of the database
//! does not contain usable invites.

use super::RelayError;
use crate::crypto::primitives::{random_array, sha256};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const SYMBOLS: usize = 16;
const HASH_CONTEXT: &[u8] = b"cinder/v1/invite";

/// A fresh random code in canonical form.
///
/// # Errors
/// [`RelayError::Crypto`] if the OS random generator fails.
pub(crate) fn generate() -> Result<String, RelayError> {
    let bytes = random_array::<10>()?;
    let mut bits = bytes
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut symbols = [0u8; SYMBOLS];
    for s in symbols.iter_mut().rev() {
        *s = ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    Ok(format_symbols(&symbols))
}

fn format_symbols(symbols: &[u8; SYMBOLS]) -> String {
    let mut out = String::with_capacity(SYMBOLS + 3);
    for (i, s) in symbols.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(*s));
    }
    out
}

/// The canonical form of a code typed by a person, or `None` if it cannot be a code.
pub(crate) fn normalize(input: &str) -> Option<String> {
    let mut symbols = [0u8; SYMBOLS];
    let mut n = 0;
    for c in input.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let c = match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || n == SYMBOLS {
            return None;
        }
        symbols[n] = c as u8;
        n += 1;
    }
    (n == SYMBOLS).then(|| format_symbols(&symbols))
}

/// The stored hash of a canonical code.
pub(crate) fn hash(canonical: &str) -> [u8; 32] {
    sha256(&[HASH_CONTEXT, canonical.as_bytes()])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_documented_shape() {
        let code = generate().unwrap();
        assert_eq!(code.len(), 19);
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4);
        assert!(groups.iter().all(|g| g.len() == 4));
        assert!(code.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)));
        assert_eq!(normalize(&code).as_deref(), Some(code.as_str()));
        assert_ne!(generate().unwrap(), code);
    }

    #[test]
    fn input_is_forgiving_but_strict_about_length_and_symbols() {
        assert_eq!(
            normalize(" abcd efgh-jkmn-pqrs ").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize("oooo-iiii-llll-0000").as_deref(),
            Some("0000-1111-1111-0000")
        );
        assert_eq!(normalize("ABCD-EFGH-JKMN-PQR"), None);
        assert_eq!(normalize("ABCD-EFGH-JKMN-PQRST"), None);
        assert_eq!(normalize("ABCD-EFGH-JKMN-PQRU"), None);
        assert_eq!(normalize("ABCD-EFGH-JKMN-PQRé"), None);
        assert_eq!(
            hash("ABCD-EFGH-JKMN-PQRS"),
            hash(&normalize("abcdefghjkmnpqrs").unwrap())
        );
    }
}
