//! The command layer: one function per subcommand, exit codes, passphrase sources, durations.
//!
//! `main.rs` parses arguments with clap and calls [`run`]; everything here returns
//! `anyhow::Result`, and [`exit_code`] maps the error chain to the stable exit codes of
//! `ARCHITECTURE.md`: 0 success, 2 bad usage, 3 wrong passphrase or locked profile, 4 relay
//! unreachable, 5 refused by the relay, 1 anything else.

pub mod commands;
pub mod demo;
pub mod passphrase;
pub mod rooms;

use std::time::Duration;

use crate::session::SessionError;
use crate::store::StoreError;

/// A usage error detected after argument parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A passphrase problem (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PassphraseError(pub String);

/// Maps an error to the process exit code.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<PassphraseError>().is_some() {
            return 3;
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s {
                StoreError::WrongPassphrase | StoreError::Locked => 3,
                _ => 1,
            };
        }
        if let Some(s) = cause.downcast_ref::<SessionError>() {
            return match s {
                SessionError::Store(StoreError::WrongPassphrase | StoreError::Locked) => 3,
                SessionError::Unreachable(_) | SessionError::Tls(_) => 4,
                SessionError::Relay { code, .. } if code.is_refusal() => 5,
                SessionError::Relay { .. }
                | SessionError::Refused(_)
                | SessionError::IdentityChanged(_)
                | SessionError::WrongRelay => 5,
                SessionError::Usage(_)
                | SessionError::BadUrl(_)
                | SessionError::InsecureUrl(_)
                | SessionError::TooLarge { .. } => 2,
                SessionError::NotRegistered => 2,
                _ => 1,
            };
        }
    }
    1
}

/// Parses `30s`, `5m`, `2h`, `7d` (a bare number means seconds).
///
/// # Errors
/// [`UsageError`] naming the bad value.
pub fn parse_duration(s: &str) -> Result<Duration, UsageError> {
    let t = s.trim();
    let bad = || {
        UsageError(format!(
            "not a duration: {s:?} (write e.g. 30s, 5m, 2h or 7d)"
        ))
    };
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        Some(_) => (t, 's'),
        None => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "s", "5x", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_codes() {
        use crate::protocol::ErrorCode;
        let e = |s: SessionError| exit_code(&anyhow::Error::new(s));
        assert_eq!(e(SessionError::Unreachable("x".into())), 4);
        assert_eq!(e(SessionError::TooLarge { size: 2, limit: 1 }), 2);
        assert_eq!(
            e(SessionError::Relay {
                code: ErrorCode::PermissionDenied,
                message: String::new(),
                retry_after_ms: 0,
                stale: vec![]
            }),
            5
        );
        assert_eq!(e(SessionError::Store(StoreError::WrongPassphrase)), 3);
        assert_eq!(exit_code(&anyhow::Error::new(StoreError::Locked)), 3);
        assert_eq!(exit_code(&anyhow::Error::new(UsageError("x".into()))), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }
}
