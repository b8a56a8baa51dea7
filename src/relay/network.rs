//! The network identity in the data directory: created on the first start, reused afterwards.
//!
//! The first start on an empty data directory makes the network admin key (NAK, an Ed25519 seed
//! in `network-admin.key`), a network id, a relay id and a one-time admin invite. The order is
//! chosen so a crash at any point leaves a directory that the next start can finish: the key
//! file is written first (and reused if no network was recorded yet), the invite file is written
//! before the database commits the network, and only that commit makes the network exist. The
//! directory is 0700 and every file in it 0600 because the key and the invite are credentials.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::store::{NetworkRecord, NewInvite, RelayStore};
use super::{ADMIN_INVITE_FILE, ADMIN_KEY_FILE, RelayError, invite};
use crate::crypto::hex;
use crate::crypto::primitives::{SigningKeyPair, random_array};

/// Name a network gets when `--network-name` is not given.
pub(crate) const DEFAULT_NETWORK_NAME: &str = "Cinder";
/// Longest network name accepted.
const MAX_NETWORK_NAME: usize = 64;

/// The loaded network, as the connections present it.
pub(crate) struct Network {
    /// 16 random bytes, hex.
    pub network_id: String,
    /// Display name.
    pub network_name: String,
    /// The relay id covered by login signatures.
    pub relay_id: Vec<u8>,
    /// The NAK's public key.
    pub admin_key: [u8; 32],
    /// The NAK itself: it signs the network policy the relay sends.
    pub admin: SigningKeyPair,
    /// The one-time admin invite, if this start created the network.
    pub created_invite: Option<String>,
}

/// Creates the data directory (0700) if needed and tightens its mode if it exists.
pub(crate) fn prepare_data_dir(dir: &Path) -> Result<(), RelayError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn private_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Creates `path` empty with mode 0600 if it does not exist, and makes it 0600 if it does, so
/// SQLite (which copies the database file's mode to its WAL) never creates readable files.
pub(crate) fn create_private_file(path: &Path) -> Result<(), RelayError> {
    private_options().create(true).append(true).open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` (mode 0600) atomically: temporary file, fsync, rename, fsync dir.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), RelayError> {
    let dir = path
        .parent()
        .ok_or_else(|| RelayError::DataDir("file path has no directory".into()))?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut f = private_options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Loads the NAK seed, creating it if `create` is set and the file is missing.
fn load_admin_key(dir: &Path, create: bool) -> Result<SigningKeyPair, RelayError> {
    let path = dir.join(ADMIN_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: Zeroizing<[u8; 32]> =
                Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                    RelayError::DataDir(format!("{ADMIN_KEY_FILE} is not a 32-byte key"))
                })?);
            Ok(SigningKeyPair::from_secret_bytes(&seed))
        }
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            let key = SigningKeyPair::generate()?;
            write_private_file(&path, key.secret_bytes().as_slice())?;
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Err(RelayError::DataDir(format!(
            "{ADMIN_KEY_FILE} is missing but the database records a network"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn check_name(name: &str) -> Result<String, RelayError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NETWORK_NAME
        || name.chars().any(char::is_control)
    {
        return Err(RelayError::Config(format!(
            "the network name must be 1 to {MAX_NETWORK_NAME} printable characters"
        )));
    }
    Ok(name.to_owned())
}

/// Loads the network from `store` and `dir`, creating it (and its admin invite) on first start.
pub(crate) async fn open_or_create(
    store: &dyn RelayStore,
    dir: &Path,
    name: Option<&str>,
) -> Result<Network, RelayError> {
    let name = name.map(check_name).transpose()?;
    if let Some(mut rec) = store.load_network().await? {
        let key = load_admin_key(dir, false)?;
        if key.public() != rec.admin_key {
            return Err(RelayError::DataDir(format!(
                "{ADMIN_KEY_FILE} does not match the network recorded in the database"
            )));
        }
        if let Some(name) = name.filter(|n| *n != rec.network_name) {
            store.rename_network(name.clone()).await?;
            rec.network_name = name;
        }
        return Ok(Network {
            network_id: rec.network_id,
            network_name: rec.network_name,
            relay_id: rec.relay_id,
            admin_key: rec.admin_key,
            admin: key,
            created_invite: None,
        });
    }
    let key = load_admin_key(dir, true)?;
    let rec = NetworkRecord {
        network_id: hex::encode(&random_array::<16>()?),
        network_name: name.unwrap_or_else(|| DEFAULT_NETWORK_NAME.to_owned()),
        relay_id: random_array::<32>()?.to_vec(),
        admin_key: key.public(),
    };
    let code = invite::generate()?;
    let text = format!(
        "# One-time administrator invite for the Cinder network \"{}\" (id {}).\n\
         # Register with: cinder register --server URL --invite CODE --username NAME\n{code}\n",
        rec.network_name, rec.network_id
    );
    // The file goes first: if the commit below fails, the next start overwrites it, whereas a
    // committed network whose invite was never written could not be administered.
    write_private_file(&dir.join(ADMIN_INVITE_FILE), text.as_bytes())?;
    let admin_invite = NewInvite {
        code_hash: invite::hash(&code),
        email: String::new(),
        admin: true,
        expires_at: None,
    };
    store.create_network(rec.clone(), admin_invite).await?;
    tracing::info!(network_id = %rec.network_id, "created a new network");
    Ok(Network {
        network_id: rec.network_id,
        network_name: rec.network_name,
        relay_id: rec.relay_id,
        admin_key: rec.admin_key,
        admin: key,
        created_invite: Some(code),
    })
}
