//! The typed messages inside a [`Frame`]. `docs/cinder.proto` is the same schema in protobuf
//! syntax for other implementations; field numbers never change meaning.
//!
//! Every request carries the client's `Frame.id`; the relay answers with the same id. Pushes
//! (`Delivery`, `Bye`) use id 0.

/// The envelope of every message.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Frame {
    /// Request id chosen by the client; 0 for pushes.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// What the frame carries.
    #[prost(
        oneof = "frame::Body",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31"
    )]
    pub body: Option<frame::Body>,
}

/// The frame body variants.
pub mod frame {
    /// One of the protocol's messages.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Body {
        /// relay -> client, first frame on every connection.
        #[prost(message, tag = "2")]
        ServerHello(super::ServerHello),
        /// client -> relay: create an account with an invite.
        #[prost(message, tag = "3")]
        Register(super::Register),
        /// client -> relay: prove possession of a registered device key.
        #[prost(message, tag = "4")]
        Login(super::Login),
        /// relay -> client: answer to `Register` or `Login`.
        #[prost(message, tag = "5")]
        Authenticated(super::Authenticated),
        /// client -> relay: add prekeys.
        #[prost(message, tag = "6")]
        UploadPrekeys(super::PrekeyUpload),
        /// client -> relay: fetch a user's key bundles (consumes one-time prekeys).
        #[prost(message, tag = "7")]
        FetchKeys(super::FetchKeys),
        /// relay -> client: answer to `FetchKeys`.
        #[prost(message, tag = "8")]
        KeyBundle(super::KeyBundle),
        /// client -> relay: store-and-forward one message.
        #[prost(message, tag = "9")]
        Send(super::Send),
        /// relay -> client: the send is durable.
        #[prost(message, tag = "10")]
        SendOk(super::SendOk),
        /// client -> relay: read the mailbox.
        #[prost(message, tag = "11")]
        Fetch(super::Fetch),
        /// relay -> client: answer to `Fetch`.
        #[prost(message, tag = "12")]
        Deliveries(super::Deliveries),
        /// relay -> client push: a new mailbox item.
        #[prost(message, tag = "13")]
        Delivery(super::Delivery),
        /// client -> relay: these mailbox items are stored; delete them.
        #[prost(message, tag = "14")]
        Ack(super::Ack),
        /// relay -> client: generic success.
        #[prost(message, tag = "15")]
        Ok(super::Ok),
        /// client -> relay (admin): create an invite code.
        #[prost(message, tag = "16")]
        CreateInvite(super::CreateInvite),
        /// relay -> client: the new invite code.
        #[prost(message, tag = "17")]
        InviteCreated(super::InviteCreated),
        /// Either direction: liveness probe.
        #[prost(message, tag = "18")]
        Ping(super::Ping),
        /// Answer to `Ping`.
        #[prost(message, tag = "19")]
        Pong(super::Pong),
        /// relay -> client: the request (or connection) failed.
        #[prost(message, tag = "20")]
        Error(super::ErrorReply),
        /// relay -> client push: the relay is draining; reconnect later.
        #[prost(message, tag = "21")]
        Bye(super::Bye),
        /// client -> relay: look up a user's root key and devices (consumes nothing).
        #[prost(message, tag = "22")]
        GetUser(super::GetUser),
        /// relay -> client: answer to `GetUser`.
        #[prost(message, tag = "23")]
        UserInfo(super::UserInfo),
        /// client -> relay: submit one signed membership change of a room (or create it).
        #[prost(message, tag = "24")]
        SubmitRoomOp(super::SubmitRoomOp),
        /// relay -> client: the membership change is stored and fanned out.
        #[prost(message, tag = "25")]
        RoomOpOk(super::RoomOpOk),
        /// client -> relay: read a room's signed membership log.
        #[prost(message, tag = "26")]
        GetRoomLog(super::GetRoomLog),
        /// relay -> client: answer to `GetRoomLog`.
        #[prost(message, tag = "27")]
        RoomLog(super::RoomLog),
        /// client -> relay: store-and-forward one room message (one body, one shared key message).
        #[prost(message, tag = "28")]
        RoomSend(super::RoomSend),
        /// client -> relay: read the network policy.
        #[prost(message, tag = "29")]
        GetPolicy(super::GetPolicy),
        /// relay -> client: the network policy (answer, or a push with id 0 when it changes).
        #[prost(message, tag = "30")]
        Policy(super::Policy),
        /// client -> relay (admin): change the network policy.
        #[prost(message, tag = "31")]
        SetPolicy(super::SetPolicy),
    }
}

/// First frame on every connection.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ServerHello {
    /// Identifies this relay in login signatures.
    #[prost(bytes = "vec", tag = "1")]
    pub relay_id: Vec<u8>,
    /// The network's id.
    #[prost(string, tag = "2")]
    pub network_id: String,
    /// The network's display name.
    #[prost(string, tag = "3")]
    pub network_name: String,
    /// 32 random bytes to sign.
    #[prost(bytes = "vec", tag = "4")]
    pub challenge: Vec<u8>,
    /// Largest frame the relay accepts.
    #[prost(uint32, tag = "5")]
    pub max_frame: u32,
    /// The network admin key (Ed25519 public), pinned at enrollment.
    #[prost(bytes = "vec", tag = "6")]
    pub network_admin_key: Vec<u8>,
}

/// A signed prekey as published.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SignedPrekeyMsg {
    /// Id.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// X25519 public key.
    #[prost(bytes = "vec", tag = "2")]
    pub public: Vec<u8>,
    /// Creation time, seconds.
    #[prost(uint64, tag = "3")]
    pub created_at: u64,
    /// Signature by the device signing key.
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
}

/// A one-time X25519 prekey.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OneTimePrekeyMsg {
    /// Id.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// X25519 public key.
    #[prost(bytes = "vec", tag = "2")]
    pub public: Vec<u8>,
}

/// An ML-KEM-1024 prekey.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PqPrekeyMsg {
    /// Id.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// Whether this is the last-resort key.
    #[prost(bool, tag = "2")]
    pub last_resort: bool,
    /// Creation time, seconds.
    #[prost(uint64, tag = "3")]
    pub created_at: u64,
    /// Encapsulation key.
    #[prost(bytes = "vec", tag = "4")]
    pub public: Vec<u8>,
    /// Signature by the device signing key.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// Prekeys a device uploads (at registration and on refill).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PrekeyUpload {
    /// A new signed prekey, if rotated.
    #[prost(message, optional, tag = "1")]
    pub signed_prekey: Option<SignedPrekeyMsg>,
    /// One-time X25519 prekeys.
    #[prost(message, repeated, tag = "2")]
    pub one_time: Vec<OneTimePrekeyMsg>,
    /// One-time PQ prekeys.
    #[prost(message, repeated, tag = "3")]
    pub pq_one_time: Vec<PqPrekeyMsg>,
    /// A new last-resort PQ prekey, if rotated.
    #[prost(message, optional, tag = "4")]
    pub pq_last_resort: Option<PqPrekeyMsg>,
}

/// Create an account and its first device.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Register {
    /// The invite code.
    #[prost(string, tag = "1")]
    pub invite_code: String,
    /// Desired username.
    #[prost(string, tag = "2")]
    pub username: String,
    /// Display name.
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// The user's root key (Ed25519 public).
    #[prost(bytes = "vec", tag = "4")]
    pub root_key: Vec<u8>,
    /// The device certificate, signed by the root key.
    #[prost(bytes = "vec", tag = "5")]
    pub device_certificate: Vec<u8>,
    /// The device signing key's signature over `login_message(challenge, relay_id)`.
    #[prost(bytes = "vec", tag = "6")]
    pub signature: Vec<u8>,
    /// The device's initial prekeys.
    #[prost(message, optional, tag = "7")]
    pub prekeys: Option<PrekeyUpload>,
}

/// Log a device in.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Login {
    /// Username.
    #[prost(string, tag = "1")]
    pub username: String,
    /// Device id.
    #[prost(bytes = "vec", tag = "2")]
    pub device_id: Vec<u8>,
    /// The device signing key's signature over `login_message(challenge, relay_id)`.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

/// Answer to `Register`/`Login`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Authenticated {
    /// Canonical username.
    #[prost(string, tag = "1")]
    pub username: String,
    /// Whether the account is a network admin.
    #[prost(bool, tag = "2")]
    pub is_admin: bool,
    /// One-time X25519 prekeys the relay still holds for this device.
    #[prost(uint32, tag = "3")]
    pub one_time_prekeys_left: u32,
    /// One-time PQ prekeys the relay still holds for this device.
    #[prost(uint32, tag = "4")]
    pub pq_prekeys_left: u32,
    /// Mailbox items waiting.
    #[prost(uint32, tag = "5")]
    pub pending: u32,
    /// The network policy in force.
    #[prost(message, optional, tag = "6")]
    pub policy: Option<Policy>,
}

/// Fetch bundles to start sessions with every device of `username`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FetchKeys {
    /// Whose keys.
    #[prost(string, tag = "1")]
    pub username: String,
}

/// One device's bundle parts (the client assembles and verifies the bundle).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeviceBundle {
    /// Device id.
    #[prost(bytes = "vec", tag = "1")]
    pub device_id: Vec<u8>,
    /// Device certificate.
    #[prost(bytes = "vec", tag = "2")]
    pub certificate: Vec<u8>,
    /// Current signed prekey.
    #[prost(message, optional, tag = "3")]
    pub signed_prekey: Option<SignedPrekeyMsg>,
    /// A one-time prekey, if any was left.
    #[prost(message, optional, tag = "4")]
    pub one_time_prekey: Option<OneTimePrekeyMsg>,
    /// A one-time PQ prekey, or the last-resort one.
    #[prost(message, optional, tag = "5")]
    pub pq_prekey: Option<PqPrekeyMsg>,
}

/// A user's keys.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct KeyBundle {
    /// Canonical username.
    #[prost(string, tag = "1")]
    pub username: String,
    /// Root key (the client pins it on first use).
    #[prost(bytes = "vec", tag = "2")]
    pub root_key: Vec<u8>,
    /// One bundle per active device.
    #[prost(message, repeated, tag = "3")]
    pub devices: Vec<DeviceBundle>,
    /// Root-key-signed device revocations.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub revocations: Vec<Vec<u8>>,
}

/// Look up a user without consuming prekeys.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetUser {
    /// Whose record.
    #[prost(string, tag = "1")]
    pub username: String,
}

/// A user's public record.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UserInfo {
    /// Canonical username.
    #[prost(string, tag = "1")]
    pub username: String,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Root key.
    #[prost(bytes = "vec", tag = "3")]
    pub root_key: Vec<u8>,
    /// Active device ids.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub devices: Vec<Vec<u8>>,
}

/// A per-device key entry of a send.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct KeyEntry {
    /// Recipient user.
    #[prost(string, tag = "1")]
    pub recipient_user: String,
    /// Recipient device.
    #[prost(bytes = "vec", tag = "2")]
    pub recipient_device: Vec<u8>,
    /// Opaque ciphertext for that device (a pairwise ratchet message).
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
}

/// Store-and-forward one message: one body, one key entry per recipient device.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Send {
    /// The 128-bit message id; the relay deduplicates retries by (sender device, id).
    #[prost(bytes = "vec", tag = "1")]
    pub message_id: Vec<u8>,
    /// The encrypted body, stored once.
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
    /// Key entries.
    #[prost(message, repeated, tag = "3")]
    pub entries: Vec<KeyEntry>,
    /// The users addressed (their devices must all be covered).
    #[prost(string, repeated, tag = "4")]
    pub recipients: Vec<String>,
    /// Delete undelivered copies after this time (ms since epoch; 0 = keep).
    #[prost(uint64, tag = "5")]
    pub delete_by_ms: u64,
    /// The message expires this long after the relay receives it (ms; 0 = no expiry). The relay
    /// deletes every copy at receive time + `ttl_ms` (or `delete_by_ms` if earlier) and refuses
    /// a `ttl_ms` above the network maximum with `TimerTooLong`.
    #[prost(uint64, tag = "6")]
    pub ttl_ms: u64,
}

/// The send is durable at the relay.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SendOk {
    /// The message id.
    #[prost(bytes = "vec", tag = "1")]
    pub message_id: Vec<u8>,
    /// The relay's receive time (ms).
    #[prost(uint64, tag = "2")]
    pub server_ts_ms: u64,
    /// Whether this was a retry of a send already stored.
    #[prost(bool, tag = "3")]
    pub duplicate: bool,
}

/// Read up to `limit` mailbox items.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Fetch {
    /// Most items to return.
    #[prost(uint32, tag = "1")]
    pub limit: u32,
}

/// What a mailbox item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum DeliveryKind {
    /// A message: body and this device's key entry.
    Message = 0,
    /// The relay's notice that a recipient device stored one of our messages.
    Delivered = 1,
    /// A room message: `body` and the sender-key message (shared by every member) as `payload`.
    RoomMessage = 2,
    /// A signed membership change of `room_id`, as `payload`.
    RoomOp = 3,
}

/// One mailbox item.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Delivery {
    /// Mailbox sequence number (acknowledge it).
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// What it is.
    #[prost(enumeration = "DeliveryKind", tag = "2")]
    pub kind: i32,
    /// Sender user (for `Delivered`: the recipient who stored it).
    #[prost(string, tag = "3")]
    pub sender_user: String,
    /// Sender device.
    #[prost(bytes = "vec", tag = "4")]
    pub sender_device: Vec<u8>,
    /// The message id.
    #[prost(bytes = "vec", tag = "5")]
    pub message_id: Vec<u8>,
    /// The encrypted body.
    #[prost(bytes = "vec", tag = "6")]
    pub body: Vec<u8>,
    /// This device's key entry.
    #[prost(bytes = "vec", tag = "7")]
    pub payload: Vec<u8>,
    /// The relay's receive time (ms).
    #[prost(uint64, tag = "8")]
    pub server_ts_ms: u64,
    /// For `RoomMessage` and `RoomOp`: the room.
    #[prost(string, tag = "9")]
    pub room_id: String,
}

/// Answer to `Fetch`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Deliveries {
    /// Items, oldest first.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<Delivery>,
    /// Whether more are waiting.
    #[prost(bool, tag = "2")]
    pub more: bool,
}

/// Acknowledge mailbox items (they are deleted).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Ack {
    /// Sequence numbers.
    #[prost(uint64, repeated, tag = "1")]
    pub seqs: Vec<u64>,
}

/// Generic success.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Ok {}

/// Create an invite (admin only).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CreateInvite {
    /// Who it is for (recorded for the admin's audit).
    #[prost(string, tag = "1")]
    pub email: String,
    /// Whether the new account is an admin.
    #[prost(bool, tag = "2")]
    pub admin: bool,
    /// Validity in seconds (0 = the relay default).
    #[prost(uint64, tag = "3")]
    pub valid_for_secs: u64,
}

/// A new invite code.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct InviteCreated {
    /// The code.
    #[prost(string, tag = "1")]
    pub code: String,
    /// Expiry (seconds since epoch).
    #[prost(uint64, tag = "2")]
    pub expires_at: u64,
}

/// Liveness probe.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Ping {}

/// Answer to `Ping`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Pong {}

/// Devices of one user, as the relay knows them.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UserDevices {
    /// User.
    #[prost(string, tag = "1")]
    pub username: String,
    /// Active device ids.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub devices: Vec<Vec<u8>>,
}

/// A failed request (or a connection-level error before closing).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ErrorReply {
    /// An [`crate::protocol::ErrorCode`] number.
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// One sentence for humans.
    #[prost(string, tag = "2")]
    pub message: String,
    /// For `RateLimited`: when to retry.
    #[prost(uint32, tag = "3")]
    pub retry_after_ms: u32,
    /// For `DevicesChanged`: the current devices of the users concerned.
    #[prost(message, repeated, tag = "4")]
    pub stale: Vec<UserDevices>,
}

/// The relay is draining.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Bye {
    /// Why.
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// Submit one signed membership change (a `Create` makes the room).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SubmitRoomOp {
    /// The room.
    #[prost(string, tag = "1")]
    pub room_id: String,
    /// The signed operation (`crypto::membership::SignedOp` encoding).
    #[prost(bytes = "vec", tag = "2")]
    pub op: Vec<u8>,
}

/// The membership change is durable and fanned out.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RoomOpOk {
    /// The room.
    #[prost(string, tag = "1")]
    pub room_id: String,
    /// The operation's sequence number (the room's new head).
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

/// Read a room's membership log from `from_seq` on (members only).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetRoomLog {
    /// The room.
    #[prost(string, tag = "1")]
    pub room_id: String,
    /// First sequence number wanted (0 = from the creation).
    #[prost(uint64, tag = "2")]
    pub from_seq: u64,
}

/// A page of a room's membership log.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RoomLog {
    /// The room.
    #[prost(string, tag = "1")]
    pub room_id: String,
    /// Signed operations in sequence order, starting at the requested one.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub ops: Vec<Vec<u8>>,
    /// Whether more follow (ask again from the next sequence number).
    #[prost(bool, tag = "3")]
    pub more: bool,
}

/// Store-and-forward one room message to every member device except the sending one.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RoomSend {
    /// The 128-bit message id; the relay deduplicates retries by (sender device, id).
    #[prost(bytes = "vec", tag = "1")]
    pub message_id: Vec<u8>,
    /// The room.
    #[prost(string, tag = "2")]
    pub room_id: String,
    /// The encrypted body, stored once.
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
    /// The signed sender-key message carrying the body key, stored once.
    #[prost(bytes = "vec", tag = "4")]
    pub key_message: Vec<u8>,
    /// The sender's view of the membership log head; a different head at the relay is refused
    /// with `RoomChanged`.
    #[prost(uint64, tag = "5")]
    pub head_seq: u64,
    /// As in `Send`.
    #[prost(uint64, tag = "6")]
    pub ttl_ms: u64,
}

/// Read the network policy.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetPolicy {}

/// The network policy every client enforces (and the relay where it can).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Policy {
    /// Whether read receipts are sent and shown in 1:1 conversations.
    #[prost(bool, tag = "1")]
    pub read_receipts: bool,
    /// Longest expiration timer, seconds.
    #[prost(uint64, tag = "2")]
    pub max_expire_secs: u64,
    /// Longest burn-on-read timer, seconds.
    #[prost(uint64, tag = "3")]
    pub max_burn_secs: u64,
    /// Most members of a room or group DM.
    #[prost(uint32, tag = "4")]
    pub max_room_members: u32,
    /// Ed25519 signature by the network admin key over the policy's fixed encoding
    /// (`crypto::identity::PolicyFields`); clients check it against the key pinned at
    /// registration and keep their previous policy when it does not verify.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// Change the network policy (admins only); unset fields stay as they are.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SetPolicy {
    /// Read receipts on or off.
    #[prost(bool, optional, tag = "1")]
    pub read_receipts: Option<bool>,
    /// Longest expiration timer, seconds.
    #[prost(uint64, optional, tag = "2")]
    pub max_expire_secs: Option<u64>,
    /// Longest burn-on-read timer, seconds.
    #[prost(uint64, optional, tag = "3")]
    pub max_burn_secs: Option<u64>,
}
