//! The command layer: one function per subcommand, exit codes, passphrase sources.
//!
//! `main.rs` parses arguments with clap and calls [`run`]; everything here returns
//! `anyhow::Result`, and [`exit_code`] maps the error chain to the stable exit codes (the
//! README's "Exit codes"): 0 success, 2 bad usage, 3 wrong passphrase or locked profile, 4 relay
//! unreachable, 5 refused by the relay, 1 anything else.

pub mod commands;
pub mod demo;
pub mod passphrase;
pub mod rooms;

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

#[cfg(test)]
mod tests {
    use super::*;

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
