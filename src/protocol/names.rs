//! Usernames: permanent, `[a-z0-9._-]`, 2 to 32 characters, compared case-insensitively; and
//! conversation ids ([`ConversationId`]).

use std::fmt;
use std::str::FromStr;

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
    ConversationId::dm(a, b).to_string()
}

/// Prefix of a moderated room's id.
pub const ROOM_PREFIX: &str = "room:";
/// Prefix of a group DM's id.
pub const GROUP_PREFIX: &str = "group:";
/// Prefix of a direct conversation's id.
pub const DM_PREFIX: &str = "dm:";

/// What a conversation is, parsed once from the text form the wire and the cache use:
/// `dm:<a>:<b>` (a direct conversation; both canonical usernames, sorted) or a room id,
/// `room:<32 hex digits>` or `group:<32 hex digits>` (the grammar of
/// `crypto::membership::room_kind_of`).
///
/// [`ConversationId::parse`] accepts exactly what [`fmt::Display`] writes, so the two
/// round-trip byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConversationId {
    /// A direct conversation between two users, `a <= b`.
    Dm {
        /// The first username in sort order.
        a: String,
        /// The second username in sort order.
        b: String,
    },
    /// A room or group DM, by its id.
    Room(String),
}

impl ConversationId {
    /// The direct conversation of two users (in either order): the id both sides compute.
    pub fn dm(x: &str, y: &str) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Self::Dm {
            a: a.to_owned(),
            b: b.to_owned(),
        }
    }

    /// Parses a conversation id; `None` for anything [`fmt::Display`] would not write.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(pair) = s.strip_prefix(DM_PREFIX) {
            let (a, b) = pair.split_once(':')?;
            let canonical = |u: &str| canonical_username(u).is_some_and(|c| c == u);
            return (canonical(a) && canonical(b) && a <= b).then(|| Self::Dm {
                a: a.to_owned(),
                b: b.to_owned(),
            });
        }
        is_room_id(s).then(|| Self::Room(s.to_owned()))
    }

    /// Whether this is a room or group DM.
    pub fn is_room(&self) -> bool {
        matches!(self, Self::Room(_))
    }

    /// The room id, for a room or group DM.
    pub fn room_id(&self) -> Option<&str> {
        match self {
            Self::Room(id) => Some(id),
            Self::Dm { .. } => None,
        }
    }

    /// The other user of a direct conversation `me` is part of (`me` for a conversation with
    /// oneself); `None` for a room or a direct conversation without `me`.
    pub fn peer(&self, me: &str) -> Option<&str> {
        match self {
            Self::Dm { a, b } if a == me => Some(b),
            Self::Dm { a, b } if b == me => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dm { a, b } => write!(f, "{DM_PREFIX}{a}:{b}"),
            Self::Room(id) => f.write_str(id),
        }
    }
}

/// A string that is not a conversation id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a conversation id: {0:?}")]
pub struct NotAConversation(pub String);

impl FromStr for ConversationId {
    type Err = NotAConversation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| NotAConversation(s.to_owned()))
    }
}

/// Whether `s` is a well-formed room or group DM id: its prefix and exactly 32 lowercase hex
/// digits.
pub fn is_room_id(s: &str) -> bool {
    s.strip_prefix(ROOM_PREFIX)
        .or_else(|| s.strip_prefix(GROUP_PREFIX))
        .is_some_and(|d| {
            d.len() == 32
                && d.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_round_trip_todays_text_exactly() {
        let room = format!("room:{}", "0123456789abcdef".repeat(2));
        let group = format!("group:{}", "f".repeat(32));
        for s in [
            "dm:alice:bob",
            "dm:a.b:c-d",
            "dm:alice:alice",
            &room,
            &group,
        ] {
            let id = ConversationId::parse(s).unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(s.parse::<ConversationId>().unwrap(), id);
        }
        assert!(ConversationId::parse(&room).unwrap().is_room());
        assert_eq!(
            ConversationId::parse(&group).unwrap().room_id(),
            Some(group.as_str())
        );
        for bad in [
            "",
            "bob",
            "dm:",
            "dm:alice",
            "dm:bob:alice",
            "dm:Alice:bob",
            "dm:alice:bob:carol",
            "room:",
            "room:0123",
            &room.to_uppercase(),
            &format!("{room}0"),
            "chan:0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(ConversationId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dm_ids_are_sorted_and_know_the_peer() {
        let id = ConversationId::dm("bob", "alice");
        assert_eq!(id, ConversationId::dm("alice", "bob"));
        assert_eq!(id.to_string(), dm_conversation("bob", "alice"));
        assert_eq!(id.peer("alice"), Some("bob"));
        assert_eq!(id.peer("bob"), Some("alice"));
        assert_eq!(id.peer("carol"), None);
        assert_eq!(ConversationId::dm("al", "al").peer("al"), Some("al"));
        assert!(!id.is_room());
    }

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
