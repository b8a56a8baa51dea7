//! Registration: create the profile, the keys, and the account on the relay.
//!
//! The encrypted cache is created first (so a bad passphrase source or an unwritable directory
//! fails before anything is sent), then the relay is asked to register; if it refuses, the
//! profile directory this call created is removed again, so a failed registration leaves
//! nothing behind.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::connection::Connection;
use super::outbound::{otk_msg, pq_msg, save_prekeys, spk_msg};
use super::{Clock, SessionError, check_url};
use crate::crypto::identity::{DeviceId, DeviceKeys, DeviceRole, UserRootKey};
use crate::crypto::passphrase::KdfParams;
use crate::crypto::prekeys::{self, DevicePrekeys};
use crate::protocol::{self, frame::Body, names};
use crate::store::{AccountRecord, Store};

/// What `cinder register` needs.
pub struct RegisterOptions {
    /// Relay URL (`ws://` or `wss://`).
    pub server_url: String,
    /// Invite code.
    pub invite: String,
    /// Desired username.
    pub username: String,
    /// Display name (defaults to the username).
    pub display_name: Option<String>,
    /// Passphrase for the new cache.
    pub passphrase: Zeroizing<Vec<u8>>,
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// Allow `ws://` to a non-loopback host.
    pub allow_insecure_ws: bool,
    /// Extra CA certificate (PEM) for `wss://`.
    pub ca_pem: Option<Vec<u8>>,
    /// Dates the device certificate and the first prekeys (a virtual clock in tests, so that
    /// prekey rotation follows the same time as the engine).
    pub clock: Clock,
}

/// What registration produced.
#[derive(Debug)]
pub struct Registered {
    /// Canonical username.
    pub username: String,
    /// Whether the account is a network admin.
    pub is_admin: bool,
    /// Network name.
    pub network_name: String,
    /// The profile directory.
    pub profile_dir: PathBuf,
}

/// Registers a new account and device into `dir`.
///
/// # Errors
/// [`SessionError::Usage`] for a taken profile or bad username, relay refusals, connection
/// errors; in every case no profile is left behind.
pub async fn register(dir: &Path, o: RegisterOptions) -> Result<Registered, SessionError> {
    check_url(&o.server_url, o.allow_insecure_ws)?;
    let username = names::canonical_username(&o.username).ok_or_else(|| {
        SessionError::Usage(format!(
            "not a valid username: {:?} (2-32 letters, digits, '.', '-', '_'; starting with a letter or digit)",
            o.username
        ))
    })?;
    if Store::exists(dir) {
        return Err(SessionError::Usage(format!(
            "a profile already exists at {}; pick another with --profile",
            dir.display()
        )));
    }
    let created_dir = !dir.exists();
    let d = dir.to_path_buf();
    let pass = o.passphrase.clone();
    let kdf = o.kdf;
    let store = tokio::task::spawn_blocking(move || Store::create(&d, &pass, kdf))
        .await
        .map_err(|_| SessionError::Stopped)??;
    let result = register_with_store(store, &username, &o).await;
    if result.is_err() {
        // Nothing of a refused registration may remain.
        if created_dir {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            for f in [
                "cache.header",
                "cache.db",
                "cache.db-wal",
                "cache.db-shm",
                "lock",
            ] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
    }
    result
}

async fn register_with_store(
    store: Store,
    username: &str,
    o: &RegisterOptions,
) -> Result<Registered, SessionError> {
    let (push_tx, _push_rx) = mpsc::channel(super::connection::PUSH_QUEUE);
    let (conn, hello) = Connection::open(&o.server_url, o.ca_pem.as_deref(), push_tx).await?;
    let now = o.clock.now_secs();
    let root = UserRootKey::generate()?;
    let device = DeviceKeys::generate()?;
    let device_id = DeviceId::random()?;
    let cert = root.certify(username, device_id, &device, now, DeviceRole::User)?;
    let mut pre = DevicePrekeys::new(&device.signing, now)?;
    let otks = pre.generate_one_time(prekeys::ONE_TIME_BATCH)?;
    let pqs = pre.generate_pq_one_time(&device.signing, prekeys::PQ_BATCH, now)?;
    let spk = pre
        .current_signed_prekey(&device.signing)
        .ok_or_else(|| SessionError::Protocol("no signed prekey".into()))?;
    let lr = pre
        .current_last_resort(&device.signing)
        .ok_or_else(|| SessionError::Protocol("no last-resort prekey".into()))?;
    let signature = device
        .signing
        .sign(&protocol::login_message(&hello.challenge, &hello.relay_id));
    let display_name = o
        .display_name
        .clone()
        .unwrap_or_else(|| username.to_owned());
    let reply = conn
        .request(Body::Register(protocol::Register {
            invite_code: o.invite.trim().to_owned(),
            username: username.to_owned(),
            display_name: display_name.clone(),
            root_key: root.public().0.to_vec(),
            device_certificate: cert.encode()?,
            signature: signature.to_vec(),
            prekeys: Some(protocol::PrekeyUpload {
                signed_prekey: Some(spk_msg(&spk)),
                one_time: otks.iter().map(otk_msg).collect(),
                pq_one_time: pqs.iter().map(pq_msg).collect(),
                pq_last_resort: Some(pq_msg(&lr)),
            }),
        }))
        .await?;
    let Body::Authenticated(auth) = reply else {
        return Err(SessionError::Protocol(
            "unexpected answer to Register".into(),
        ));
    };
    let account = AccountRecord {
        server_url: o.server_url.clone(),
        username: auth.username.clone(),
        display_name,
        device_id: device_id.0,
        network_id: hello.network_id.clone(),
        network_name: hello.network_name.clone(),
        relay_id: hello.relay_id.clone(),
        is_admin: auth.is_admin,
        root_public: root.public().0,
        // The first device holds the account's root role, so it keeps the root secret.
        root_secret: Some(root.secret_bytes()),
        device_signing_secret: device.signing.secret_bytes(),
        device_identity_secret: device.identity.secret_bytes(),
        device_cert: cert.encode()?,
        created_at: now,
        allow_insecure_ws: o.allow_insecure_ws,
    };
    let ca = o.ca_pem.clone();
    let own_root = root.public().0;
    let user = auth.username.clone();
    let admin_key = hello.network_admin_key.clone();
    let dir = tokio::task::spawn_blocking(move || -> Result<PathBuf, SessionError> {
        let mut store = store;
        store.transaction(|db| -> Result<_, SessionError> {
            db.put_account(&account)?;
            save_prekeys(db, &pre)?;
            db.pin_root_key(&user, &own_root, now)?;
            db.set_devices(&user, &[account.device_id])?;
            // The key that signs the network policy, pinned with the relay id.
            db.put_blob(super::policy::NAK_BLOB, &admin_key)?;
            if let Some(ca) = &ca {
                db.put_blob("ca_cert", ca)?;
            }
            Ok(())
        })?;
        Ok(store.dir().to_path_buf())
    })
    .await
    .map_err(|_| SessionError::Stopped)??;
    Ok(Registered {
        username: auth.username,
        is_admin: auth.is_admin,
        network_name: hello.network_name,
        profile_dir: dir,
    })
}
