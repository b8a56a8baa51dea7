//! Timer text typed by users, and the bridge from the client core's timers to the cache's.
//!
//! The timer rules themselves (the clock-skew rule, burn never outliving expiry, the network's
//! caps) are in [`crate::client::timers`].

use crate::client::timers::Timing;
pub use crate::client::timers::{Clamped, MAX_TIMER_SECS, clamp, format_duration};
use crate::store::MessageTimers;

impl From<Timing> for MessageTimers {
    fn from(t: Timing) -> Self {
        Self {
            expire_after_s: t.expire_after_s,
            burn_after_s: t.burn_after_s,
            expire_at_ms: t.expire_at_ms,
            burn_at_ms: None,
            displayed_at_ms: None,
        }
    }
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
