//! Ephemeral messages: timer arithmetic, the clock-skew rule, and duration text.
//!
//! The clock rule: a message's expiry is counted from the EARLIER of the sender's timestamp
//! (inside the encrypted payload, so the relay cannot move it) and the relay's receive time
//! (so a sender clock set ahead cannot move it either). Neither party alone can extend a
//! message's life; a clock set behind only shortens it. Burn-on-read is counted from the first
//! display on any of the recipient's devices, learned through end-to-end encrypted read
//! receipts, and every device keeps the earliest burn time it hears of.

use crate::crypto::envelope::Timers;

/// Longest timer anyone may set (also the protocol's cap).
pub const MAX_TIMER_SECS: u32 = 365 * 86_400;

/// A message's timers as sent, and its expiry deadline (burn starts at the first display).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Delete this long after it was sent.
    pub expire_after_s: Option<u32>,
    /// Delete this long after it was first displayed.
    pub burn_after_s: Option<u32>,
    /// When the expiry timer runs out.
    pub expire_at_ms: Option<u64>,
}

/// The timers of a received message, with its expiry fixed by the clock rule.
pub fn incoming(t: Timers, sent_at_ms: u64, server_ts_ms: u64) -> Timing {
    let start = if server_ts_ms == 0 {
        sent_at_ms
    } else {
        sent_at_ms.min(server_ts_ms)
    };
    let expire_after_s = t.expire_after.map(|e| e.min(MAX_TIMER_SECS));
    // Burn is never longer than expiry (an honest sender already clamps; a dishonest one
    // gains nothing).
    let burn_after_s = match (t.burn_after, expire_after_s) {
        (Some(b), Some(e)) => Some(b.min(e)),
        (b, _) => b.map(|b| b.min(MAX_TIMER_SECS)),
    };
    Timing {
        expire_after_s,
        burn_after_s,
        expire_at_ms: expire_after_s.map(|e| start.saturating_add(u64::from(e) * 1000)),
    }
}

/// The timers of a message we send: expiry counted from our own clock for now, shortened to
/// the relay's receive time once it acknowledges the send.
pub fn outgoing(expire: Option<u32>, burn: Option<u32>, now_ms: u64) -> Timing {
    Timing {
        expire_after_s: expire,
        burn_after_s: burn,
        expire_at_ms: expire.map(|e| now_ms.saturating_add(u64::from(e) * 1000)),
    }
}

/// What a sender must do with a requested timer pair under the network's caps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clamped {
    /// Expiry to use.
    pub expire_after: Option<u32>,
    /// Burn to use.
    pub burn_after: Option<u32>,
    /// One sentence per value that had to change, for the user.
    pub notes: Vec<String>,
}

/// Clamps requested timers to the network maximums and burn to expiry.
pub fn clamp(
    expire_after: Option<u32>,
    burn_after: Option<u32>,
    max_expire_secs: u64,
    max_burn_secs: u64,
) -> Clamped {
    let mut notes = Vec::new();
    let cap = |v: Option<u32>, max: u64, what: &str, notes: &mut Vec<String>| {
        let max = u32::try_from(max).unwrap_or(u32::MAX).min(MAX_TIMER_SECS);
        match v {
            Some(x) if x > max => {
                notes.push(format!(
                    "{what} timer shortened from {} to the network maximum of {}",
                    format_duration(x.into()),
                    format_duration(max.into())
                ));
                Some(max)
            }
            other => other,
        }
    };
    let expire_after = cap(expire_after, max_expire_secs, "expiration", &mut notes);
    let mut burn_after = cap(burn_after, max_burn_secs, "burn-on-read", &mut notes);
    if let (Some(b), Some(e)) = (burn_after, expire_after)
        && b > e
    {
        notes.push(format!(
            "burn-on-read timer shortened to the expiration of {}",
            format_duration(e.into())
        ));
        burn_after = Some(e);
    }
    Clamped {
        expire_after,
        burn_after,
        notes,
    }
}

/// A short human duration: `45s`, `5m`, `1h30m`, `2d`, `1y`.
pub fn format_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (365 * 86_400, "y"),
        (7 * 86_400, "w"),
        (86_400, "d"),
        (3600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    let mut parts = 0;
    for (size, name) in UNITS {
        if left >= size && parts < 2 {
            out.push_str(&format!("{}{name}", left / size));
            left %= size;
            parts += 1;
        } else if parts > 0 {
            // Two adjacent units at most: "1d2h", not "1d0h3m".
            break;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_clock_ahead_does_not_extend_expiry() {
        let relay = 1_000_000_000_000u64;
        let ahead = relay + 86_400_000;
        let t = Timers {
            expire_after: Some(2),
            burn_after: None,
        };
        assert_eq!(incoming(t, ahead, relay).expire_at_ms, Some(relay + 2000));
        // A clock behind shortens it (it can never be extended by either side).
        assert_eq!(
            incoming(t, relay - 500, relay).expire_at_ms,
            Some(relay + 1500)
        );
    }

    #[test]
    fn burn_never_outlives_expiry() {
        let t = Timers {
            expire_after: Some(10),
            burn_after: Some(60),
        };
        assert_eq!(incoming(t, 0, 0).burn_after_s, Some(10));
        let c = clamp(Some(10), Some(60), 100, 100);
        assert_eq!(c.burn_after, Some(10));
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn caps_clamp_with_a_note() {
        let c = clamp(Some(7 * 86_400), Some(60), 86_400, 30);
        assert_eq!(c.expire_after, Some(86_400));
        assert_eq!(c.burn_after, Some(30));
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        assert!(c.notes[0].contains("1d"), "{:?}", c.notes);
    }
}
