//! Read receipts: what one receipt does to one of the messages it names.
//!
//! A receipt comes from a peer who read our messages (they may show "read", and their burn
//! timers start), or from our own other device that displayed messages we both received
//! (their burn starts here too). Rooms never show "read", but burn-on-read still counts from
//! the first reader's display.

use crate::protocol::names;

/// One cached message a receipt names, as far as the rule needs it.
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// Its conversation.
    pub conversation: &'a str,
    /// Whether we sent it.
    pub outgoing: bool,
    /// Whether it is sent or delivered (and so may become "read").
    pub awaiting_read: bool,
    /// Its burn-on-read timer.
    pub burn_after_s: Option<u32>,
}

/// What to do to the message.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    Nothing,
    /// Our other device displayed it: record the display at this time (its burn starts) and
    /// send no receipt of our own.
    Displayed(u64),
    /// A peer read it.
    Read {
        /// Show it as read.
        mark_read: bool,
        /// Start its burn timer: it is deleted at this time.
        burn_at_ms: Option<u64>,
    },
}

/// Whether a receipt about `conversation` may touch message `m`: a message of that
/// conversation, or of a room whose verified membership holds the receipt's sender (`member`
/// is asked only then; our own other device counts as a member of the rooms we hold).
pub fn applies(conversation: &str, m: &Named<'_>, member: impl FnOnce() -> bool) -> bool {
    m.conversation == conversation || (names::is_room_id(m.conversation) && member())
}

/// What a receipt from `from`, read at `at_ms`, does to `m` (see [`applies`] first).
/// `show_read` is the network's read-receipt policy.
pub fn effect(me: &str, from: &str, m: &Named<'_>, at_ms: u64, show_read: bool) -> Effect {
    if from == me {
        return if m.outgoing {
            Effect::Nothing
        } else {
            Effect::Displayed(at_ms)
        };
    }
    if !m.outgoing {
        return Effect::Nothing;
    }
    let room = names::is_room_id(m.conversation);
    Effect::Read {
        mark_read: show_read && !room && m.awaiting_read,
        burn_at_ms: m
            .burn_after_s
            .map(|b| at_ms.saturating_add(u64::from(b) * 1000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "room:0123456789abcdef0123456789abcdef";

    fn ours(conversation: &str, burn: Option<u32>) -> Named<'_> {
        Named {
            conversation,
            outgoing: true,
            awaiting_read: true,
            burn_after_s: burn,
        }
    }

    #[test]
    fn a_peer_reads_our_message() {
        let m = ours("dm:alice:bob", Some(10));
        assert!(applies("dm:alice:bob", &m, || false));
        assert_eq!(
            effect("alice", "bob", &m, 1_000, true),
            Effect::Read {
                mark_read: true,
                burn_at_ms: Some(11_000)
            }
        );
        // With read receipts off the burn still starts, and nothing shows "read".
        assert_eq!(
            effect("alice", "bob", &m, 1_000, false),
            Effect::Read {
                mark_read: false,
                burn_at_ms: Some(11_000)
            }
        );
    }

    #[test]
    fn a_receipt_cannot_reach_into_another_conversation() {
        let m = ours("dm:alice:carol", None);
        assert!(!applies("dm:alice:bob", &m, || true));
        // In a room only a member's receipt counts, and rooms never show "read".
        let r = ours(ROOM, Some(5));
        assert!(!applies("dm:alice:bob", &r, || false));
        assert!(applies("dm:alice:bob", &r, || true));
        assert_eq!(
            effect("alice", "bob", &r, 0, true),
            Effect::Read {
                mark_read: false,
                burn_at_ms: Some(5_000)
            }
        );
    }

    #[test]
    fn our_other_device_displayed_a_message() {
        let mut m = ours("dm:alice:bob", Some(10));
        m.outgoing = false;
        assert_eq!(effect("alice", "alice", &m, 7, true), Effect::Displayed(7));
        assert_eq!(effect("alice", "bob", &m, 7, true), Effect::Nothing);
    }
}
