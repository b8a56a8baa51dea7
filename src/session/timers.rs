//! Ephemeral messages: timer arithmetic, the clock-skew rule, and duration text.
//!
//! The clock rule: a message's expiry is counted from the EARLIER of the sender's timestamp
//! (inside the encrypted payload, so the relay cannot move it) and the relay's receive time
//! (so a sender clock set ahead cannot move it either). Neither party alone can extend a
//! message's life; a clock set behind only shortens it. Burn-on-read is counted from the first
//! display on any of the recipient's devices, learned through end-to-end encrypted read
//! receipts, and every device keeps the earliest burn time it hears of.

use crate::crypto::envelope::Timers;
use crate::store::MessageTimers;

/// Longest timer anyone may set (also the protocol's cap).
pub const MAX_TIMER_SECS: u32 = 365 * 86_400;

/// The timers of a received message, with its expiry fixed by the clock rule.
pub(crate) fn incoming_timers(t: Timers, sent_at_ms: u64, server_ts_ms: u64) -> MessageTimers {
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
    MessageTimers {
        expire_after_s,
        burn_after_s,
        expire_at_ms: expire_after_s.map(|e| start.saturating_add(u64::from(e) * 1000)),
        burn_at_ms: None,
        displayed_at_ms: None,
    }
}

/// The timers of a message we send: expiry counted from our own clock for now, shortened to
/// the relay's receive time once it acknowledges the send.
pub(crate) fn outgoing_timers(
    expire: Option<u32>,
    burn: Option<u32>,
    now_ms: u64,
) -> MessageTimers {
    MessageTimers {
        expire_after_s: expire,
        burn_after_s: burn,
        expire_at_ms: expire.map(|e| now_ms.saturating_add(u64::from(e) * 1000)),
        burn_at_ms: None,
        displayed_at_ms: None,
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

/// Parses a message timer: a duration in the one grammar of [`crate::config::parse_duration`]
/// (`30s`, `1h30m`, `2days`, `1y`, a bare number of seconds), whole seconds from one second to
/// a year; `off`, `none` or `0` mean no timer.
///
/// # Errors
/// One sentence naming what was wrong.
pub fn parse_timer(s: &str) -> Result<Option<u32>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") || t == "0" {
        return Ok(None);
    }
    let secs = crate::config::parse_whole_seconds(t).map_err(|e| format!("{e}, or off"))?;
    if secs == 0 {
        return Err(format!("{t:?} is no timer: use at least 1s, or off"));
    }
    match u32::try_from(secs) {
        Ok(secs) if secs <= MAX_TIMER_SECS => Ok(Some(secs)),
        _ => Err(format!("{t} is longer than the longest timer (1 year)")),
    }
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
        assert_eq!(
            incoming_timers(t, ahead, relay).expire_at_ms,
            Some(relay + 2000)
        );
        // A clock behind shortens it (it can never be extended by either side).
        assert_eq!(
            incoming_timers(t, relay - 500, relay).expire_at_ms,
            Some(relay + 1500)
        );
    }

    #[test]
    fn burn_never_outlives_expiry() {
        let t = Timers {
            expire_after: Some(10),
            burn_after: Some(60),
        };
        assert_eq!(incoming_timers(t, 0, 0).burn_after_s, Some(10));
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

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_timer("30s").unwrap(), Some(30));
        assert_eq!(parse_timer("1h30m").unwrap(), Some(5400));
        assert_eq!(parse_timer("1d").unwrap(), Some(86_400));
        assert_eq!(parse_timer("90").unwrap(), Some(90));
        assert_eq!(parse_timer("off").unwrap(), None);
        assert_eq!(parse_timer("1y").unwrap(), Some(MAX_TIMER_SECS));
        assert_eq!(parse_timer("2days").unwrap(), Some(2 * 86_400));
        assert_eq!(parse_timer("OFF").unwrap(), None);
        assert!(parse_timer("2y").unwrap_err().contains("longest timer"));
        assert!(parse_timer("366d").is_err());
        assert!(parse_timer("0s").is_err());
        assert!(parse_timer("1500ms").is_err());
        assert!(
            parse_timer("abc")
                .unwrap_err()
                .starts_with("not a duration")
        );
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(86_400), "1d");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(90_061), "1d1h");
    }

    #[test]
    fn printed_durations_read_back_as_the_same_timer() {
        for secs in [
            1,
            45,
            60,
            90,
            3600,
            5400,
            86_400,
            90_000,
            7 * 86_400,
            MAX_TIMER_SECS,
        ] {
            let text = format_duration(u64::from(secs));
            assert_eq!(parse_timer(&text).unwrap(), Some(secs), "{text}");
        }
    }
}
