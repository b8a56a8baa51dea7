//! Usernames: permanent, `[a-z0-9._-]`, 2 to 32 characters, compared case-insensitively.

/// Longest username.
pub const MAX_USERNAME: usize = 32;

/// The canonical (lowercase) form of a username, or `None` if it is not allowed.
pub fn canonical_username(s: &str) -> Option<String> {
    let ok_len = (2..=MAX_USERNAME).contains(&s.len());
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let ok_edges = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    (ok_len && ok_chars && ok_edges).then(|| s.to_ascii_lowercase())
}

/// The conversation id of a direct conversation: both usernames, sorted, so each side
/// computes the same id.
pub fn dm_conversation(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{x}:{y}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(canonical_username("Alice_1").as_deref(), Some("alice_1"));
        assert_eq!(canonical_username("a.b-c").as_deref(), Some("a.b-c"));
        for bad in [
            "a",
            "",
            ".alice",
            "al ice",
            "al/ice",
            "ålice",
            &"x".repeat(33),
        ] {
            assert_eq!(canonical_username(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dm_ids_are_symmetric() {
        assert_eq!(
            dm_conversation("bob", "alice"),
            dm_conversation("alice", "bob")
        );
        assert_eq!(dm_conversation("alice", "bob"), "dm:alice:bob");
    }
}
