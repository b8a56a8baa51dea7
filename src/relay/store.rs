//! The storage interface of the relay: every durable operation as one typed, asynchronous call.
//!
//! The connection code talks only to [`RelayStore`], so a PostgreSQL implementation (several
//! relay nodes sharing one database) can be added beside the embedded SQLite one without
//! reshaping anything above. Each call is one atomic unit: it either happens completely and is
//! durable when the future resolves, or it has no effect. Refusals the client can act on
//! (unknown user, used invite, changed devices) come back as [`RelayError::Refused`] or as an
//! outcome variant, never as a partial write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::RelayError;
use crate::crypto::membership::SignedOp;
use crate::protocol::{
    Deliveries, Delivery, DeliveryKind, KeyBundle, PrekeyUpload, RoomLog, UserDevices, UserInfo,
};

/// The future every store call returns; boxed so the trait can be used as `dyn RelayStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RelayError>> + Send + 'a>>;

/// One-time X25519 prekeys a device may have stored at once.
pub const MAX_STORED_ONE_TIME: usize = 1000;
/// One-time PQ prekeys a device may have stored at once (1.6 KB each).
pub const MAX_STORED_PQ: usize = 200;

/// A device id as stored (16 bytes).
pub type DeviceId = [u8; 16];

/// The network identity kept in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRecord {
    /// 16 random bytes, hex.
    pub network_id: String,
    /// Display name.
    pub network_name: String,
    /// 32 random bytes that login signatures cover.
    pub relay_id: Vec<u8>,
    /// The network admin key's Ed25519 public key.
    pub admin_key: [u8; 32],
}

/// A device whose certificate and proof the connection has already verified.
#[derive(Clone, Debug)]
pub struct VerifiedDevice {
    /// Device id from the certificate.
    pub device_id: DeviceId,
    /// The certificate bytes as the client sent them.
    pub certificate: Vec<u8>,
    /// The device signing key from the certificate (checked at every login).
    pub signing_key: [u8; 32],
}

/// A registration, checked in this order: invite, username, proof.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Canonical username.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// The user's root key.
    pub root_key: [u8; 32],
    /// SHA-256 of the canonical invite code.
    pub invite_hash: [u8; 32],
    /// The verified device, or `None` when the certificate or signature did not verify (the
    /// store then answers `InvalidInvite`/`UsernameTaken` first, else `AuthFailed`).
    pub device: Option<VerifiedDevice>,
    /// Initial prekeys (already checked for shape).
    pub prekeys: Option<PrekeyUpload>,
}

/// What a device's account looks like after `Register` or for `Login`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountStatus {
    /// Canonical username.
    pub username: String,
    /// Whether the account is a network admin.
    pub is_admin: bool,
    /// One-time X25519 prekeys held for the device.
    pub one_time_prekeys_left: u32,
    /// One-time PQ prekeys held for the device (the last-resort key is not counted).
    pub pq_prekeys_left: u32,
    /// Mailbox items waiting for the device.
    pub pending: u32,
}

/// What the relay needs to check a login.
#[derive(Clone, Debug)]
pub struct LoginRecord {
    /// The device signing key the signature must verify under.
    pub signing_key: [u8; 32],
    /// The account's status, returned to the client if the signature verifies.
    pub status: AccountStatus,
}

/// One key entry of a send, with its recipient resolved to canonical form.
#[derive(Clone, Debug)]
pub struct OutgoingEntry {
    /// Canonical recipient username.
    pub user: String,
    /// Recipient device.
    pub device: DeviceId,
    /// Opaque ciphertext for that device.
    pub payload: Vec<u8>,
}

/// A checked `Send`, shared between the store and the live pushes that follow it.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// Sending user.
    pub sender_user: String,
    /// Sending device.
    pub sender_device: DeviceId,
    /// 16-byte message id.
    pub message_id: Vec<u8>,
    /// The encrypted body, stored once.
    pub body: Vec<u8>,
    /// One entry per recipient device.
    pub entries: Vec<OutgoingEntry>,
    /// Canonical usernames addressed.
    pub recipients: Vec<String>,
    /// Delete undelivered copies after this time (ms since the epoch; 0 keeps them).
    pub delete_by_ms: u64,
}

/// What became of a send.
#[derive(Clone, Debug, PartialEq)]
pub enum SendOutcome {
    /// Stored now; `seqs[i]` is the mailbox sequence number of `entries[i]`.
    Stored {
        /// The relay's receive time.
        server_ts_ms: u64,
        /// Mailbox sequence numbers, one per entry.
        seqs: Vec<u64>,
    },
    /// The same (sender device, message id) was stored before; nothing was stored again.
    Duplicate {
        /// The receive time of the first copy.
        server_ts_ms: u64,
    },
    /// The entries do not cover exactly the current devices; nothing was stored.
    DevicesChanged(Vec<UserDevices>),
}

/// A `Delivered` notice created by an acknowledgement, to push to the sender's device.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// The device whose mailbox received it.
    pub device: DeviceId,
    /// The mailbox item.
    pub delivery: Delivery,
}

/// A new invite.
#[derive(Clone, Debug)]
pub struct NewInvite {
    /// SHA-256 of the canonical code.
    pub code_hash: [u8; 32],
    /// Who it is for (audit only).
    pub email: String,
    /// Whether the account it creates is an admin.
    pub admin: bool,
    /// Expiry, seconds since the epoch (`None`: never).
    pub expires_at: Option<u64>,
}

/// One item fanned out to the devices of a room's members: a room message (the body and the
/// sender-key message) or a signed membership change (in `payload`). Stored once, shared by
/// every mailbox row and every live push.
#[derive(Clone, Debug)]
pub struct RoomItem {
    /// `RoomMessage` or `RoomOp`.
    pub kind: DeliveryKind,
    /// The room.
    pub room_id: String,
    /// Sending (acting) user.
    pub sender_user: String,
    /// Sending device (never receives its own item).
    pub sender_device: DeviceId,
    /// 16-byte message id (empty for membership changes).
    pub message_id: Vec<u8>,
    /// The encrypted body (empty for membership changes).
    pub body: Vec<u8>,
    /// The sender-key message, or the signed op.
    pub payload: Vec<u8>,
    /// Delete undelivered copies after this time (ms since the epoch; 0 keeps them).
    pub delete_by_ms: u64,
}

impl RoomItem {
    /// The item as mailbox row `seq` of one device.
    pub fn delivery(&self, seq: u64, server_ts_ms: u64) -> Delivery {
        Delivery {
            seq,
            kind: self.kind as i32,
            sender_user: self.sender_user.clone(),
            sender_device: self.sender_device.to_vec(),
            message_id: self.message_id.clone(),
            body: self.body.clone(),
            payload: self.payload.clone(),
            server_ts_ms,
            room_id: self.room_id.clone(),
        }
    }
}

/// The mailbox rows a room item became: one per recipient device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fanout {
    /// The relay's receive time.
    pub server_ts_ms: u64,
    /// (recipient device, its mailbox sequence number).
    pub seqs: Vec<(DeviceId, u64)>,
}

/// What became of a room message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomSendOutcome {
    /// Stored now, one mailbox row per other member device.
    Stored(Fanout),
    /// The same (sender device, message id) was stored before; nothing was stored again.
    Duplicate {
        /// The receive time of the first copy.
        server_ts_ms: u64,
    },
}

/// An accepted membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomOpOutcome {
    /// The op's sequence number, now the room's head.
    pub seq: u64,
    /// Where it was delivered: every device of a member before or after the change, except
    /// the submitting one.
    pub fanout: Fanout,
}

/// The stored part of the network policy (the room size limit comes from the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredPolicy {
    /// Read receipts in 1:1 conversations.
    pub read_receipts: bool,
    /// Longest expiry timer, seconds.
    pub max_expire_secs: u64,
    /// Longest burn-on-read timer, seconds.
    pub max_burn_secs: u64,
}

/// A policy change; `None` leaves a value as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// Read receipts on or off.
    pub read_receipts: Option<bool>,
    /// Longest expiry timer, seconds.
    pub max_expire_secs: Option<u64>,
    /// Longest burn-on-read timer, seconds.
    pub max_burn_secs: Option<u64>,
}

/// What one sweep deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired mailbox rows.
    pub items: usize,
    /// Expired bodies.
    pub bodies: usize,
}

/// Everything the relay stores, as atomic operations.
pub trait RelayStore: Send + Sync + 'static {
    /// The network identity, if the network was created.
    fn load_network(&self) -> StoreFuture<'_, Option<NetworkRecord>>;

    /// Creates the network and its first (admin) invite in one transaction.
    fn create_network(
        &self,
        network: NetworkRecord,
        admin_invite: NewInvite,
    ) -> StoreFuture<'_, ()>;

    /// Renames the network.
    fn rename_network(&self, name: String) -> StoreFuture<'_, ()>;

    /// Creates an account and its first device, stores its prekeys and uses up the invite.
    fn register(&self, account: NewAccount) -> StoreFuture<'_, AccountStatus>;

    /// Looks up an active device of `username` for a login.
    fn login(&self, username: String, device: DeviceId) -> StoreFuture<'_, Option<LoginRecord>>;

    /// Adds or replaces a device's prekeys.
    fn upload_prekeys(&self, device: DeviceId, upload: PrekeyUpload) -> StoreFuture<'_, ()>;

    /// A user's public record (consumes nothing).
    fn get_user(&self, username: String) -> StoreFuture<'_, Option<UserInfo>>;

    /// A user's key bundles, consuming one one-time prekey of each kind per device.
    fn fetch_keys(&self, username: String) -> StoreFuture<'_, Option<KeyBundle>>;

    /// Stores a message for every recipient device, deduplicating retries.
    fn send(&self, message: Arc<OutgoingMessage>) -> StoreFuture<'_, SendOutcome>;

    /// Up to `limit` of a device's mailbox items, oldest first, whose encoding fits `max_bytes`
    /// (at least one item is returned if any is waiting).
    fn fetch(&self, device: DeviceId, limit: u32, max_bytes: usize) -> StoreFuture<'_, Deliveries>;

    /// Deletes the device's own items among `seqs` and returns the `Delivered` notices that
    /// this created for the senders.
    fn ack(
        &self,
        username: String,
        device: DeviceId,
        seqs: Vec<u64>,
    ) -> StoreFuture<'_, Vec<Notice>>;

    /// Creates an invite on behalf of `admin` (refused unless that account is an admin).
    fn create_invite(&self, admin: String, invite: NewInvite) -> StoreFuture<'_, ()>;

    /// Deletes expired mailbox items and expired bodies (with every row still pointing at
    /// them), and old deduplication records; when it deleted ciphertext, it also makes sure no
    /// copy survives in free pages or the write-ahead log.
    fn sweep(&self) -> StoreFuture<'_, SweepReport>;

    /// Applies one signed membership change (`op`, whose encoding is `item.payload`) submitted
    /// by `item.sender_device`: a `Create` makes the room, anything else must be the next op
    /// of an existing, undeleted room under the membership rules with `max_members`. Every
    /// user the change adds must exist. In one transaction it stores the op, the room's new
    /// state and member list, and a `RoomOp` mailbox row for every device of every member
    /// before or after the change, except the submitting device.
    ///
    /// # Errors
    /// [`RelayError::Refused`] with `UnknownRoom`, `RoomChanged`, `RoomFull`,
    /// `PermissionDenied`, `UnknownUser` or `BadRequest`; nothing is stored then.
    fn submit_room_op(
        &self,
        item: Arc<RoomItem>,
        op: SignedOp,
        max_members: usize,
    ) -> StoreFuture<'_, RoomOpOutcome>;

    /// The room's signed ops from `from_seq` on, at most `max_bytes` of them (at least one),
    /// if `username` is a current member; `None` otherwise (or if there is no such room).
    fn room_log(
        &self,
        username: String,
        room_id: String,
        from_seq: u64,
        max_bytes: usize,
    ) -> StoreFuture<'_, Option<RoomLog>>;

    /// Stores a room message once and one small mailbox row per device of every member except
    /// the sending device, deduplicating retries, if `item.sender_user` is a member of the
    /// undeleted room and `head_seq` is its membership head.
    ///
    /// # Errors
    /// [`RelayError::Refused`] with `UnknownRoom` or `RoomChanged`.
    fn room_send(&self, item: Arc<RoomItem>, head_seq: u64) -> StoreFuture<'_, RoomSendOutcome>;

    /// The stored network policy.
    fn policy(&self) -> StoreFuture<'_, StoredPolicy>;

    /// Changes the stored policy on behalf of `admin` (refused with `PermissionDenied` unless
    /// that account is an admin; `None` is the relay's own configuration) and returns it.
    fn set_policy(
        &self,
        admin: Option<String>,
        change: PolicyChange,
    ) -> StoreFuture<'_, StoredPolicy>;
}
