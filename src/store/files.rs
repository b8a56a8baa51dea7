//! File-system helpers of the profile directory: private modes, the lock, atomic replacement.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::Path;

use super::{DB_FILE, LOCK_FILE, Result, StoreError};

/// Creates `dir` (and missing parents) and restricts it to the owner.
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(0o700);
        builder.create(dir)?;
        // `mode` only applies to directories this call created; a directory the user made
        // beforehand may be group- or world-readable.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    builder.create(dir)?;
    Ok(())
}

fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o
}

/// Creates an empty file readable only by the owner; fails if it exists.
pub(super) fn create_private_file(path: &Path) -> io::Result<()> {
    private_options().write(true).create_new(true).open(path)?;
    Ok(())
}

/// Takes the exclusive advisory lock of the profile; it is held until the file is dropped.
///
/// Opening the lock file never changes its (empty) contents, so even a failed `open` leaves the
/// directory as it was.
// `File::try_lock` (std, stable since 1.89) is the only advisory lock available without
// `unsafe`; the crate's `rust-version` is 1.89 for it.
pub(super) fn lock(dir: &Path) -> Result<File> {
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked),
        Err(TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Removes database files left by a `create` that never wrote its header; without the header
/// they cannot be decrypted by anyone.
pub(super) fn remove_orphan_db(dir: &Path) -> io::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        match fs::remove_file(dir.join(format!("{DB_FILE}{suffix}"))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new contents:
/// write a temporary file in the same directory, sync it, rename it over, sync the directory.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    // tempfile creates the file 0600 and removes it again if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    // Directories cannot be opened as files elsewhere; the rename is as durable as it gets.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
