//! The one duration grammar of every flag, config key and slash command that takes a duration.
//!
//! It is humantime's (`90s`, `1h30m`, `1h 30m`, `2days`, `1.5h`, `500ms`, `3w`), with two
//! additions that the grammars it replaces had and that users and scripts rely on:
//! - a bare number is seconds (`45` = `45s`), because `--timeout 30` has always meant that;
//! - a year is 365 days, not humantime's 365.25, so that the longest message timer ("one year",
//!   365 days) is written `1y` and the UI's `1y` reads back as what it shows.
//!
//! Units are case-sensitive as in humantime: `m` is minutes and `M` months.

use std::time::Duration;

use super::{ConfigError, Result};

/// Seconds in a 365-day year.
const YEAR_SECS: u128 = 365 * 86_400;
/// Seconds in humantime's 365.25-day year.
const HUMANTIME_YEAR_SECS: u128 = 31_557_600;
/// humantime's spellings of the year unit.
const YEAR_UNITS: [&str; 5] = ["y", "yr", "yrs", "year", "years"];

/// Parses a duration in the grammar above.
///
/// # Errors
/// [`ConfigError::Duration`] naming the value and what is wrong with it.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = |reason: String| ConfigError::Duration {
        value: s.to_owned(),
        reason,
    };
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad("the number is too large".into()));
    }
    if t.is_empty() {
        return Err(bad("it is empty".into()));
    }
    // Each item ("1h", "30 m", "1.5y") goes to humantime on its own, so that year items can be
    // rescaled to 365 days exactly; humantime sums items the same way.
    let mut total = Duration::ZERO;
    for item in items(t) {
        let d = humantime::parse_duration(item).map_err(|e| bad(e.to_string()))?;
        let d = if is_year_item(item) {
            rescale_year(d).ok_or_else(|| bad("it is too long".into()))?
        } else {
            d
        };
        total = total
            .checked_add(d)
            .ok_or_else(|| bad("it is too long".into()))?;
    }
    Ok(total)
}

/// Parses a duration that must be a whole number of seconds (timers, config keys in seconds).
///
/// # Errors
/// [`ConfigError::Duration`] for a malformed value or one with a fraction of a second.
pub fn parse_whole_seconds(s: &str) -> Result<u64> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(ConfigError::Duration {
            value: s.to_owned(),
            reason: "it must be a whole number of seconds".into(),
        });
    }
    Ok(d.as_secs())
}

/// Splits `1h30m` or `1h 30 m` into `1h`, `30m` / `30 m`: an item ends where a unit is followed
/// by anything but more letters. Whitespace-only pieces are dropped; anything else (a stray
/// character) stays inside an item for humantime to report.
fn items(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_unit = false;
    for (i, c) in s.char_indices() {
        let letter = c.is_ascii_alphabetic() || c == 'µ';
        if letter {
            in_unit = true;
        } else if in_unit {
            out.push(&s[start..i]);
            start = i;
            in_unit = false;
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether an item's unit is a year.
fn is_year_item(item: &str) -> bool {
    let unit = item.trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    YEAR_UNITS.contains(&unit)
}

/// A humantime year span (365.25 days each) as the same number of 365-day years.
fn rescale_year(d: Duration) -> Option<Duration> {
    let nanos = d.as_nanos().checked_mul(YEAR_SECS)? / HUMANTIME_YEAR_SECS;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        let d = parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(d.subsec_nanos(), 0, "{s}");
        d.as_secs()
    }

    #[test]
    fn the_grammar_of_both_old_parsers_still_works() {
        // What `--timeout`, `bench --duration` and the timers accepted before.
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("2h"), 7200);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(secs("1w"), 604_800);
        assert_eq!(secs("1y"), 365 * 86_400);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs(" 90s "), 90);
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(secs("45"), 45);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("0090"), 90);
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[test]
    fn humantime_spellings_work() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("2days"), 2 * 86_400);
        assert_eq!(secs("1h 30m"), 5400);
        assert_eq!(secs("1 h 30 min"), 5400);
        assert_eq!(secs("1hour 2minutes 3seconds"), 3723);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(secs("2 years"), 2 * 365 * 86_400);
        assert_eq!(secs("1y2d"), 367 * 86_400);
        assert_eq!(secs("0.5y"), 365 * 43_200);
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn malformed_values_are_refused_with_the_value_named() {
        for bad in [
            "",
            " ",
            "s",
            "5x",
            "-1s",
            "soon",
            "1h30",
            "1h-30m",
            "1.s",
            "3 parsecs",
            "99999999999999999999d",
        ] {
            let e = parse_duration(bad).expect_err(bad).to_string();
            assert!(e.starts_with("not a duration: "), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        // Units are case-sensitive: `M` is months, `H` is nothing.
        assert!(parse_duration("1H").is_err());
        assert_eq!(secs("1M"), 2_630_016);
    }

    #[test]
    fn whole_seconds_refuse_fractions() {
        assert_eq!(parse_whole_seconds("1m").unwrap(), 60);
        assert_eq!(parse_whole_seconds("1500ms").ok(), None);
        assert_eq!(parse_whole_seconds("2000ms").unwrap(), 2);
    }
}
