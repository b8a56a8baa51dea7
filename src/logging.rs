//! Diagnostics go to a log file, never to the terminal.
//!
//! The terminal belongs to the UI (and stdout to `--json` output), so [`init`] installs a
//! `tracing` subscriber that writes plain text (no ANSI colours) to `<log_dir>/cinder.log`
//! through a background writer thread, filtered by an `EnvFilter` string such as `"info"` or
//! `"warn,cinder=debug"`. The returned [`LogGuard`] must live until the program exits: dropping
//! it flushes what is still queued. The file is never rotated by cinder. Secrets and message
//! text must never be passed to `tracing` in the first place; this module only decides where
//! records go. It imports no other cinder module.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// File name of the log inside the log directory.
pub const LOG_FILE: &str = "cinder.log";

/// Everything that can go wrong setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level string is not a valid filter.
    #[error("invalid log level {level:?}: {reason}")]
    Filter {
        /// The string given.
        level: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The log directory or file could not be prepared.
    #[error("cannot prepare log file in {}: {source}", dir.display())]
    Io {
        /// The log directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file appender refused to open the log file.
    #[error("cannot open log file: {0}")]
    Appender(#[from] tracing_appender::rolling::InitError),
    /// Logging was already set up in this process.
    #[error("a global log subscriber is already set")]
    AlreadySet,
}

/// Keeps the background log writer alive; dropping it flushes queued records.
#[must_use = "dropping the guard stops logging; keep it until the program exits"]
pub struct LogGuard {
    _worker: WorkerGuard,
    path: PathBuf,
}

impl LogGuard {
    /// The log file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Installs the global subscriber that writes `level`-filtered records to
/// `log_dir/cinder.log` (directory created 0700, file 0600).
///
/// # Errors
/// [`LoggingError::Filter`] for a bad level string, [`LoggingError::Io`] or
/// [`LoggingError::Appender`] if the file cannot be prepared, [`LoggingError::AlreadySet`] if a
/// global subscriber (or `log` logger) already exists.
pub fn init(log_dir: &Path, level: &str) -> Result<LogGuard, LoggingError> {
    let (subscriber, guard) = subscriber(log_dir, level)?;
    subscriber
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)?;
    Ok(guard)
}

/// Builds the subscriber [`init`] installs, without installing it.
///
/// # Errors
/// As [`init`], except [`LoggingError::AlreadySet`].
pub fn subscriber(
    log_dir: &Path,
    level: &str,
) -> Result<(impl Subscriber + Send + Sync + 'static, LogGuard), LoggingError> {
    // Parse first: a typo in the level must not leave files behind.
    let filter = parse_filter(level)?;
    let io = |source| LoggingError::Io {
        dir: log_dir.to_path_buf(),
        source,
    };
    create_private_dir(log_dir).map_err(io)?;
    let path = log_dir.join(LOG_FILE);
    prepare_private_file(&path).map_err(io)?;

    // The builder reports failure instead of panicking like `rolling::never` does.
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::NEVER)
        .filename_prefix(LOG_FILE)
        .build(log_dir)?;
    // Lossy (the default): if the writer falls behind, records are dropped rather than
    // blocking the UI thread.
    let (writer, worker) = tracing_appender::non_blocking(appender);
    let subscriber = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer),
    );
    Ok((
        subscriber,
        LogGuard {
            _worker: worker,
            path,
        },
    ))
}

fn parse_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    let bad = |reason: String| LoggingError::Filter {
        level: level.to_string(),
        reason,
    };
    if level.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| bad(e.to_string()))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates the log file 0600 (or tightens an existing one) before the appender opens it, since
/// the appender would create it world-readable and logs name users and servers.
fn prepare_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        options.open(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    options.open(path)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn records_reach_the_file_filtered_and_without_colour() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let (subscriber, guard) = subscriber(&dir, "info,noisy=error").unwrap();
        let path = guard.path().to_path_buf();
        assert_eq!(path, dir.join(LOG_FILE));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = "bob", "connected-marker-1");
            tracing::debug!("debug-marker-2");
            tracing::warn!(target: "noisy", "noisy-marker-3");
            tracing::error!(target: "noisy", "noisy-error-marker-4");
        });
        drop(guard);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("connected-marker-1"), "{text}");
        assert!(text.contains("peer=\"bob\""), "{text}");
        assert!(text.contains("INFO"), "{text}");
        assert!(!text.contains("debug-marker-2"), "{text}");
        assert!(!text.contains("noisy-marker-3"), "{text}");
        assert!(text.contains("noisy-error-marker-4"), "{text}");
        assert!(!text.contains('\u{1b}'), "no ANSI escapes: {text:?}");
        // Only the one file, nothing rotated.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_second_run_appends() {
        let tmp = tempfile::tempdir().unwrap();
        for marker in ["first-run", "second-run"] {
            let (subscriber, guard) = subscriber(tmp.path(), "info").unwrap();
            tracing::subscriber::with_default(subscriber, || tracing::info!("{marker}"));
            drop(guard);
        }
        let text = fs::read_to_string(tmp.path().join(LOG_FILE)).unwrap();
        assert!(
            text.contains("first-run") && text.contains("second-run"),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn directory_and_file_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/logs");
        let (_s, guard) = subscriber(&dir, "info").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(guard.path()), 0o600);
    }

    #[test]
    fn bad_levels_are_errors_and_create_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        for bad in ["", "  ", "cinder=loud", "[{"] {
            let e = subscriber(&dir, bad).err().unwrap();
            assert!(matches!(e, LoggingError::Filter { .. }), "{bad:?}: {e}");
        }
        assert!(!dir.exists());
        let e = init(&dir, "cinder=loud").err().unwrap();
        assert!(e.to_string().contains("cinder=loud"), "{e}");
    }
}
