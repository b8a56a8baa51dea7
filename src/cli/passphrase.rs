//! Where the cache passphrase comes from: `CINDER_PASSPHRASE`, `--passphrase-file`,
//! `--passphrase-command`, or an interactive prompt that never echoes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::PassphraseError;
use crate::config::SECRET_ENV;

/// The configured sources, in order of precedence.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--passphrase-file`.
    pub file: Option<PathBuf>,
    /// `--passphrase-command`.
    pub command: Option<String>,
    /// Read `CINDER_NEW_PASSPHRASE` instead of `CINDER_PASSPHRASE` (passphrase change).
    pub new: bool,
}

impl Sources {
    fn env_var(&self) -> &'static str {
        if self.new {
            "CINDER_NEW_PASSPHRASE"
        } else {
            "CINDER_PASSPHRASE"
        }
    }
}

fn strip_newline(mut v: Vec<u8>) -> Zeroizing<Vec<u8>> {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Zeroizing::new(v)
}

/// Reads the passphrase; `confirm` asks twice at a prompt (for new profiles).
///
/// # Errors
/// [`PassphraseError`] when no source is available, a source fails, or the result is empty.
pub fn read(
    sources: &Sources,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, PassphraseError> {
    // Explicit flags win over the environment, which wins over the prompt.
    let value = if let Some(path) = &sources.file {
        let bytes = std::fs::read(path).map_err(|e| {
            PassphraseError(format!(
                "cannot read passphrase file {}: {e}",
                path.display()
            ))
        })?;
        strip_newline(bytes)
    } else if let Some(cmd) = &sources.command {
        let mut command = Command::new("sh");
        for var in SECRET_ENV {
            command.env_remove(var);
        }
        let out = command
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| PassphraseError(format!("cannot run passphrase command: {e}")))?;
        if !out.status.success() {
            return Err(PassphraseError(format!(
                "passphrase command failed ({})",
                out.status
            )));
        }
        strip_newline(out.stdout)
    } else if let Some(v) = std::env::var_os(sources.env_var()) {
        Zeroizing::new(v.into_encoded_bytes())
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| PassphraseError(format!("cannot read passphrase: {e}")))?,
        );
        if confirm {
            let second = Zeroizing::new(
                rpassword::prompt_password("Repeat the passphrase: ")
                    .map_err(|e| PassphraseError(format!("cannot read passphrase: {e}")))?,
            );
            if *first != *second {
                return Err(PassphraseError("the passphrases do not match".into()));
            }
        }
        Zeroizing::new(first.as_bytes().to_vec())
    } else {
        return Err(PassphraseError(format!(
            "no passphrase: set {}, or pass --passphrase-file or --passphrase-command",
            sources.env_var()
        )));
    };
    if value.is_empty() {
        return Err(PassphraseError("the passphrase is empty".into()));
    }
    Ok(value)
}

/// Reads the passphrase from a non-interactive source only (file, command, environment), for
/// the terminal UI, which draws its own prompt when this returns `None`.
///
/// # Errors
/// [`PassphraseError`] when a configured source fails.
pub fn read_non_interactive(
    sources: &Sources,
) -> Result<Option<Zeroizing<Vec<u8>>>, PassphraseError> {
    if sources.file.is_none()
        && sources.command.is_none()
        && std::env::var_os(sources.env_var()).is_none()
    {
        return Ok(None);
    }
    read(sources, "", false).map(Some)
}
