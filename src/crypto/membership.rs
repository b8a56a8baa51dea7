//! The signed, hash-chained membership log of rooms and group DMs.
//!
//! Who is in a room decides who gets its sender keys, so membership must not be something the
//! relay can simply assert. Every change is a [`MembershipOp`] signed by the acting member's
//! device signing key (DSK), and every client replays the log from its `Create` to know the
//! members; the relay runs the very same rules to route messages and refuse invalid changes, but
//! nobody has to trust its answer.
//!
//! Two design choices carry the security:
//!
//! - **The actor's device certificate travels inside the op.** A verifier needs only the actor's
//!   pinned user root key (URK) to check the whole chain URK -> certificate -> DSK -> op, so an op
//!   can be checked long after the device that made it was replaced, and a relay cannot pass off
//!   one of its own keys as a member's device. The certificate must name the actor, so a device
//!   of user X cannot speak for user Y.
//! - **The log is a hash chain.** Each op carries `seq` (0 for `Create`, then +1) and `prev`, the
//!   SHA-256 of the previous signed op's encoding. A client applies exactly the next op, so the
//!   relay cannot reorder changes, replay an old one (say, re-adding a member who was removed)
//!   or drop one from the middle: a later op would no longer follow the head. If it shows
//!   different clients different ops at the same position (a fork), the next op built on either
//!   branch breaks the chain for the clients on the other, and the mismatch is visible by
//!   comparing `head_hash`, which is cheap to put in safety checks.
//!
//! What the relay still can do: withhold or delay changes (clients then act on an older, still
//! valid membership, and notice the gap when a later op arrives), and refuse to accept changes.
//! What it cannot do: forge, reorder, replay or fork changes without that being noticed.
//!
//! The log is deliberately a pure function of its ops: revocations of the actor's device are not
//! consulted here, because whether a device was live when it signed depends on delivery order and
//! would make two honest replays disagree. Callers that learn of a revocation refuse new ops from
//! that device at the door.
//!
//! Encodings use [`super::wire`]: fixed, length-prefixed, and canonical (a decoded value
//! re-encodes to exactly its input), so an op's hash is well defined.

use std::collections::{BTreeMap, BTreeSet};

use super::CryptoError;
use super::identity::{DeviceCertificate, DeviceRole, RootPublicKey};
use super::primitives::{self, SigningKeyPair};
use super::wire::{Reader, Writer};

/// Longest room title, in bytes of UTF-8.
pub const MAX_TITLE: usize = 128;
/// Longest room description, in bytes of UTF-8.
pub const MAX_DESCRIPTION: usize = 1024;
/// Most users named in one op (an initial member list, an invitation, a removal).
pub const MAX_OP_USERS: usize = 1000;
/// Largest encoded signed op; every op that passes the rules is far below it.
pub const MAX_OP_LEN: usize = 64 * 1024;
/// Longest message timer, in seconds (one year).
pub const MAX_TIMER_SECS: u32 = 365 * 86_400;

const VERSION: u8 = 1;
const OP_CONTEXT: &[u8] = b"cinder/v1/room/op";
/// Room ids are 37 or 38 bytes; the decoder bound only has to stop hostile lengths.
const MAX_ROOM_ID: usize = 64;
/// Mirrors `protocol::names::MAX_USERNAME`.
const MAX_USERNAME: usize = 32;
/// Bound on a decoded state's member count, far above any configured room size; it only keeps a
/// corrupted count from looking plausible.
const MAX_STATE_MEMBERS: usize = 1 << 20;
const ROOM_PREFIX: &str = "room:";
const GROUP_PREFIX: &str = "group:";
const GROUP_NO_MODERATORS: &str = "group DMs have no moderators; members can only leave";
const NEEDS_MODERATOR: &str = "a room needs a moderator";

/// What kind of conversation a membership log describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomKind {
    /// A room with moderators who manage it.
    Room,
    /// A group DM: every member is equal and may only invite, edit, set timers or leave.
    Group,
}

impl RoomKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Room => 0,
            Self::Group => 1,
        }
    }

    fn from_byte(b: u8) -> Result<Self, CryptoError> {
        match b {
            0 => Ok(Self::Room),
            1 => Ok(Self::Group),
            _ => Err(CryptoError::Malformed("room kind")),
        }
    }
}

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// An ordinary member.
    Member,
    /// May invite, remove, change roles, edit, set timers and delete (rooms only).
    Moderator,
}

impl Role {
    fn to_byte(self) -> u8 {
        match self {
            Self::Member => 0,
            Self::Moderator => 1,
        }
    }

    fn from_byte(b: u8) -> Result<Self, CryptoError> {
        match b {
            0 => Ok(Self::Member),
            1 => Ok(Self::Moderator),
            _ => Err(CryptoError::Malformed("role")),
        }
    }
}

/// The room's default message timers, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RoomTimers {
    /// Delete messages this long after they were sent.
    pub expire_after: Option<u32>,
    /// Delete messages this long after they were read.
    pub burn_after: Option<u32>,
}

/// What one op changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Starts the log; only valid as op 0.
    Create {
        /// Room or group DM; must match the room id's prefix.
        kind: RoomKind,
        /// Shown in room lists.
        title: String,
        /// Free text.
        description: String,
        /// Initial invitees, not including the creator.
        members: Vec<String>,
    },
    /// Adds members.
    Invite {
        /// Who joins.
        users: Vec<String>,
    },
    /// Removes other members.
    Remove {
        /// Who is removed.
        users: Vec<String>,
    },
    /// Makes a member a moderator.
    Promote {
        /// The member.
        user: String,
    },
    /// Makes a moderator an ordinary member.
    Demote {
        /// The moderator.
        user: String,
    },
    /// The actor leaves.
    Leave,
    /// Changes the title and description.
    Edit {
        /// New title.
        title: String,
        /// New description.
        description: String,
    },
    /// Changes the default message timers.
    SetTimers {
        /// The new timers.
        timers: RoomTimers,
    },
    /// Ends the room; no op is accepted after it.
    Delete,
}

impl OpKind {
    fn tag(&self) -> u8 {
        match self {
            Self::Create { .. } => 0,
            Self::Invite { .. } => 1,
            Self::Remove { .. } => 2,
            Self::Promote { .. } => 3,
            Self::Demote { .. } => 4,
            Self::Leave => 5,
            Self::Edit { .. } => 6,
            Self::SetTimers { .. } => 7,
            Self::Delete => 8,
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Self::Create {
                kind,
                title,
                description,
                members,
            } => {
                w.u8(kind.to_byte())
                    .bytes(title.as_bytes())
                    .bytes(description.as_bytes());
                write_users(w, members);
            }
            Self::Invite { users } | Self::Remove { users } => write_users(w, users),
            Self::Promote { user } | Self::Demote { user } => {
                w.bytes(user.as_bytes());
            }
            Self::Edit { title, description } => {
                w.bytes(title.as_bytes()).bytes(description.as_bytes());
            }
            Self::SetTimers { timers } => write_timers(w, timers),
            Self::Leave | Self::Delete => {}
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CryptoError> {
        Ok(match r.u8()? {
            0 => Self::Create {
                kind: RoomKind::from_byte(r.u8()?)?,
                title: r.string(MAX_TITLE)?.to_owned(),
                description: r.string(MAX_DESCRIPTION)?.to_owned(),
                members: read_users(r)?,
            },
            1 => Self::Invite {
                users: read_users(r)?,
            },
            2 => Self::Remove {
                users: read_users(r)?,
            },
            3 => Self::Promote {
                user: r.string(MAX_USERNAME)?.to_owned(),
            },
            4 => Self::Demote {
                user: r.string(MAX_USERNAME)?.to_owned(),
            },
            5 => Self::Leave,
            6 => Self::Edit {
                title: r.string(MAX_TITLE)?.to_owned(),
                description: r.string(MAX_DESCRIPTION)?.to_owned(),
            },
            7 => Self::SetTimers {
                timers: read_timers(r)?,
            },
            8 => Self::Delete,
            _ => return Err(CryptoError::Malformed("membership change kind")),
        })
    }
}

fn write_users(w: &mut Writer, users: &[String]) {
    w.count(users.len());
    for u in users {
        w.bytes(u.as_bytes());
    }
}

fn read_users(r: &mut Reader<'_>) -> Result<Vec<String>, CryptoError> {
    let n = r.u32()? as usize;
    if n > MAX_OP_USERS {
        return Err(CryptoError::Malformed("membership change"));
    }
    // Not preallocated from `n`: each name costs at least four input bytes, so a lying count runs
    // out of input long before it costs memory.
    let mut users = Vec::new();
    for _ in 0..n {
        users.push(r.string(MAX_USERNAME)?.to_owned());
    }
    Ok(users)
}

fn write_opt_u32(w: &mut Writer, v: Option<u32>) {
    match v {
        Some(v) => w.u8(1).u32(v),
        None => w.u8(0),
    };
}

fn read_opt_u32(r: &mut Reader<'_>) -> Result<Option<u32>, CryptoError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u32()?)),
        _ => Err(CryptoError::Malformed("timer")),
    }
}

fn write_timers(w: &mut Writer, t: &RoomTimers) {
    write_opt_u32(w, t.expire_after);
    write_opt_u32(w, t.burn_after);
}

fn read_timers(r: &mut Reader<'_>) -> Result<RoomTimers, CryptoError> {
    Ok(RoomTimers {
        expire_after: read_opt_u32(r)?,
        burn_after: read_opt_u32(r)?,
    })
}

/// One change of a room, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipOp {
    /// The room (`room:<hex>` or `group:<hex>`).
    pub room_id: String,
    /// Position in the log: 0 for `Create`, then +1 per op.
    pub seq: u64,
    /// SHA-256 of the previous signed op's encoding; zeros for `Create`.
    pub prev: [u8; 32],
    /// Username of the acting member.
    pub actor: String,
    /// The acting device's certificate, signed by the actor's root key.
    pub actor_cert: DeviceCertificate,
    /// The actor's clock, milliseconds since the Unix epoch; informational only, since nothing
    /// can vouch for it.
    pub at_ms: u64,
    /// The change.
    pub kind: OpKind,
}

impl MembershipOp {
    fn write(&self, w: &mut Writer) {
        w.bytes(self.room_id.as_bytes())
            .u64(self.seq)
            .fixed(&self.prev)
            .bytes(self.actor.as_bytes());
        self.actor_cert.write(w);
        w.u64(self.at_ms);
        self.kind.write(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CryptoError> {
        Ok(Self {
            room_id: r.string(MAX_ROOM_ID)?.to_owned(),
            seq: r.u64()?,
            prev: r.array()?,
            actor: r.string(MAX_USERNAME)?.to_owned(),
            actor_cert: DeviceCertificate::read(r)?,
            at_ms: r.u64()?,
            kind: OpKind::read(r)?,
        })
    }

    fn signed_bytes(&self) -> Result<Vec<u8>, CryptoError> {
        let mut w = Writer::with_capacity(512);
        w.fixed(OP_CONTEXT);
        self.write(&mut w);
        w.finish()
    }
}

/// A [`MembershipOp`] with the actor device's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedOp {
    /// The change.
    pub op: MembershipOp,
    /// Ed25519 signature by the actor's DSK over `"cinder/v1/room/op" || op`.
    pub signature: [u8; 64],
}

impl SignedOp {
    /// Signs `op` with the acting device's signing key.
    ///
    /// Nothing is validated here: [`RoomState::check`] says whether the op would be accepted.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when the operation cannot be encoded.
    pub fn sign(op: MembershipOp, dsk: &SigningKeyPair) -> Result<SignedOp, CryptoError> {
        let signature = dsk.sign(&op.signed_bytes()?);
        Ok(SignedOp { op, signature })
    }

    /// Fixed binary encoding: version byte 1, the op, the signature.
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let mut w = Writer::with_capacity(512);
        w.u8(VERSION);
        self.op.write(&mut w);
        w.fixed(&self.signature);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] above [`MAX_OP_LEN`], [`CryptoError::UnsupportedVersion`], or
    /// [`CryptoError::Malformed`] for truncated input, trailing bytes, bad tags and strings or
    /// lists longer than the protocol allows.
    pub fn decode(bytes: &[u8]) -> Result<SignedOp, CryptoError> {
        if bytes.len() > MAX_OP_LEN {
            return Err(CryptoError::Limit("membership change length"));
        }
        let mut r = Reader::new(bytes, "membership change");
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let op = MembershipOp::read(&mut r)?;
        let signature = r.array()?;
        r.finish()?;
        Ok(SignedOp { op, signature })
    }

    /// SHA-256 of [`Self::encode`]: what the next op's `prev` must be.
    ///
    /// # Errors
    /// [`CryptoError::Limit`] when the operation cannot be encoded (see [`Self::encode`]).
    pub fn hash(&self) -> Result<[u8; 32], CryptoError> {
        Ok(primitives::sha256(&[&self.encode()?]))
    }

    /// Checks that the op was signed by a live-certified device of its actor.
    ///
    /// # Errors
    /// [`CryptoError::BadChain`] if the certificate does not verify under `actor_root`, names
    /// another user than `op.actor`, or is not an ordinary user device (the retention bot is never
    /// a member); [`CryptoError::BadSignature`] if the op's signature does not verify (strictly)
    /// under the certified DSK.
    pub fn verify_author(&self, actor_root: &RootPublicKey) -> Result<(), CryptoError> {
        let cert = &self.op.actor_cert;
        cert.verify(actor_root)?;
        if cert.user_id != self.op.actor || cert.role != DeviceRole::User {
            return Err(CryptoError::BadChain);
        }
        primitives::verify_signature(&cert.dsk_public, &self.op.signed_bytes()?, &self.signature)
    }
}

/// A room's membership and settings after replaying its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    /// The room.
    pub room_id: String,
    /// Room or group DM.
    pub kind: RoomKind,
    /// Current title.
    pub title: String,
    /// Current description.
    pub description: String,
    /// Current members and their roles.
    pub members: BTreeMap<String, Role>,
    /// `seq` of the last applied op.
    pub head_seq: u64,
    /// Hash of the last applied op; the next op's `prev`.
    pub head_hash: [u8; 32],
    /// Whether a `Delete` was applied.
    pub deleted: bool,
    /// Current default timers.
    pub timers: RoomTimers,
    /// Who created the room.
    pub created_by: String,
    /// The creator's clock at creation, informational.
    pub created_at_ms: u64,
}

/// What an accepted op changed, for the caller to act on (rotate keys, notify, redraw).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The room was created.
    Created,
    /// These users joined.
    Invited(Vec<String>),
    /// These users were removed.
    Removed(Vec<String>),
    /// This member became a moderator.
    Promoted(String),
    /// This moderator became a member.
    Demoted(String),
    /// This member left.
    Left(String),
    /// Title or description changed.
    Edited,
    /// The timers changed to these.
    TimersSet(RoomTimers),
    /// The room was deleted.
    Deleted,
}

/// Why an op was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The op's signature or certificate chain failed (or it could not be decoded).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The op names a different room.
    #[error("this change belongs to another room")]
    WrongRoom,
    /// The op is not the next one: older (a replay) or newer (a gap; fetch the missing ones).
    #[error("out of order: expected change {expected}, got {got}")]
    OutOfOrder {
        /// The seq that would have been accepted.
        expected: u64,
        /// The op's seq.
        got: u64,
    },
    /// The op has the right seq but follows another op than ours (a fork).
    #[error("this change does not follow the room's history")]
    BrokenChain,
    /// The room was deleted; nothing more is accepted.
    #[error("the room was deleted")]
    Deleted,
    /// The user is not a member.
    #[error("{0} is not a member")]
    NotMember(String),
    /// The user is a member already.
    #[error("{0} is already a member")]
    AlreadyMember(String),
    /// The actor is not a moderator; the string says what they tried.
    #[error("only moderators can {0}")]
    NotModerator(&'static str),
    /// The change is never allowed in this situation.
    #[error("{0}")]
    NotAllowed(&'static str),
    /// The room would exceed the configured size.
    #[error("a room may have at most {0} members")]
    TooManyMembers(usize),
    /// A field is malformed; the string names it.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

// `CryptoError` carries an `io::Error` and so cannot derive `PartialEq`; two crypto errors are
// equal here when they are the same variant with the same message, which is all callers and
// tests need (membership never produces `Io`).
impl PartialEq for MembershipError {
    fn eq(&self, other: &Self) -> bool {
        use MembershipError as E;
        match (self, other) {
            (E::Crypto(a), E::Crypto(b)) => {
                std::mem::discriminant(a) == std::mem::discriminant(b)
                    && a.to_string() == b.to_string()
            }
            (E::WrongRoom, E::WrongRoom)
            | (E::BrokenChain, E::BrokenChain)
            | (E::Deleted, E::Deleted) => true,
            (
                E::OutOfOrder {
                    expected: e1,
                    got: g1,
                },
                E::OutOfOrder {
                    expected: e2,
                    got: g2,
                },
            ) => e1 == e2 && g1 == g2,
            (E::NotMember(a), E::NotMember(b)) | (E::AlreadyMember(a), E::AlreadyMember(b)) => {
                a == b
            }
            (E::NotModerator(a), E::NotModerator(b))
            | (E::NotAllowed(a), E::NotAllowed(b))
            | (E::Invalid(a), E::Invalid(b)) => a == b,
            (E::TooManyMembers(a), E::TooManyMembers(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for MembershipError {}

impl MembershipError {
    /// The op is one we already applied (or older): safe to drop silently.
    pub fn is_replay(&self) -> bool {
        matches!(self, Self::OutOfOrder { expected, got } if got < expected)
    }

    /// Ops are missing between our head and this one: fetch them, then retry.
    pub fn is_gap(&self) -> bool {
        matches!(self, Self::OutOfOrder { expected, got } if got > expected)
    }
}

/// Whether `s` is an already-canonical username.
///
/// Mirrors `protocol::names::canonical_username`, which crypto may not import, except that
/// upper case is refused rather than folded: a signed op must name exactly one user.
fn valid_username(s: &str) -> bool {
    (2..=MAX_USERNAME).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn check_username(s: &str) -> Result<(), MembershipError> {
    if valid_username(s) {
        Ok(())
    } else {
        Err(MembershipError::Invalid("username"))
    }
}

/// Validates a user list: canonical names, no repeats, at most [`MAX_OP_USERS`] (so that every
/// accepted op also decodes), and non-empty unless `allow_empty`.
fn check_users(users: &[String], allow_empty: bool) -> Result<(), MembershipError> {
    if (users.is_empty() && !allow_empty) || users.len() > MAX_OP_USERS {
        return Err(MembershipError::Invalid("user list"));
    }
    let mut seen = BTreeSet::new();
    for u in users {
        check_username(u)?;
        if !seen.insert(u.as_str()) {
            return Err(MembershipError::Invalid("duplicate user"));
        }
    }
    Ok(())
}

fn check_title_description(title: &str, description: &str) -> Result<(), MembershipError> {
    // Control characters in a title could rewrite the terminal line it is drawn on.
    if title.len() > MAX_TITLE || title.chars().any(char::is_control) {
        return Err(MembershipError::Invalid("title"));
    }
    if description.len() > MAX_DESCRIPTION {
        return Err(MembershipError::Invalid("description"));
    }
    Ok(())
}

fn check_timers(t: &RoomTimers) -> Result<(), MembershipError> {
    let in_range = |v: Option<u32>| v.is_none_or(|v| (1..=MAX_TIMER_SECS).contains(&v));
    let ordered = match (t.expire_after, t.burn_after) {
        (Some(expire), Some(burn)) => burn <= expire,
        _ => true,
    };
    if in_range(t.expire_after) && in_range(t.burn_after) && ordered {
        Ok(())
    } else {
        Err(MembershipError::Invalid("timer"))
    }
}

impl RoomState {
    /// Starts a room from its `Create` op.
    ///
    /// # Errors
    /// Any [`MembershipError`]: the author must verify under `actor_root`, the op must be a
    /// `Create` at seq 0 with a zero `prev`, the room id's prefix must match the kind, and the
    /// title, description and member list must be valid and fit `max_members` (creator included).
    pub fn genesis(
        op: &SignedOp,
        actor_root: &RootPublicKey,
        max_members: usize,
    ) -> Result<RoomState, MembershipError> {
        op.verify_author(actor_root)?;
        let o = &op.op;
        let OpKind::Create {
            kind,
            title,
            description,
            members,
        } = &o.kind
        else {
            return Err(MembershipError::Invalid(
                "first change must create the room",
            ));
        };
        if room_kind_of(&o.room_id) != Some(*kind) {
            return Err(MembershipError::Invalid("room id"));
        }
        if o.seq != 0 {
            return Err(MembershipError::OutOfOrder {
                expected: 0,
                got: o.seq,
            });
        }
        if o.prev != [0u8; 32] {
            return Err(MembershipError::BrokenChain);
        }
        check_username(&o.actor)?;
        check_title_description(title, description)?;
        check_users(members, true)?;
        if members.contains(&o.actor) {
            return Err(MembershipError::AlreadyMember(o.actor.clone()));
        }
        if members.len() + 1 > max_members {
            return Err(MembershipError::TooManyMembers(max_members));
        }
        let creator_role = match kind {
            RoomKind::Room => Role::Moderator,
            RoomKind::Group => Role::Member,
        };
        let mut roles: BTreeMap<String, Role> =
            members.iter().map(|u| (u.clone(), Role::Member)).collect();
        roles.insert(o.actor.clone(), creator_role);
        Ok(RoomState {
            room_id: o.room_id.clone(),
            kind: *kind,
            title: title.clone(),
            description: description.clone(),
            members: roles,
            head_seq: 0,
            head_hash: op.hash()?,
            deleted: false,
            timers: RoomTimers::default(),
            created_by: o.actor.clone(),
            created_at_ms: o.at_ms,
        })
    }

    /// Applies the next op, returning what changed.
    ///
    /// Atomic: on error `self` is unchanged.
    ///
    /// # Errors
    /// As [`Self::check`].
    pub fn apply(
        &mut self,
        op: &SignedOp,
        actor_root: &RootPublicKey,
        max_members: usize,
    ) -> Result<Change, MembershipError> {
        let change = self.check(op, actor_root, max_members)?;
        // `check` accepted the op, so nothing below can fail.
        let o = &op.op;
        match &o.kind {
            OpKind::Invite { users } => {
                for u in users {
                    self.members.insert(u.clone(), Role::Member);
                }
            }
            OpKind::Remove { users } => {
                for u in users {
                    self.members.remove(u);
                }
            }
            OpKind::Promote { user } => {
                self.members.insert(user.clone(), Role::Moderator);
            }
            OpKind::Demote { user } => {
                self.members.insert(user.clone(), Role::Member);
            }
            OpKind::Leave => {
                self.members.remove(&o.actor);
            }
            OpKind::Edit { title, description } => {
                self.title.clone_from(title);
                self.description.clone_from(description);
            }
            OpKind::SetTimers { timers } => self.timers = *timers,
            OpKind::Delete => self.deleted = true,
            OpKind::Create { .. } => {}
        }
        self.head_seq = o.seq;
        self.head_hash = op.hash()?;
        Ok(change)
    }

    /// Validates the next op exactly as [`Self::apply`] would, without changing anything.
    ///
    /// The order of checks is: author (signature and certificate), room id, deleted, seq and
    /// `prev`, then the rules of the op's kind.
    ///
    /// # Errors
    /// [`MembershipError::Crypto`] for a bad author; [`MembershipError::WrongRoom`];
    /// [`MembershipError::Deleted`]; [`MembershipError::OutOfOrder`] (see
    /// [`MembershipError::is_replay`] and [`MembershipError::is_gap`]);
    /// [`MembershipError::BrokenChain`] for a fork; then the permission and validity errors.
    pub fn check(
        &self,
        op: &SignedOp,
        actor_root: &RootPublicKey,
        max_members: usize,
    ) -> Result<Change, MembershipError> {
        op.verify_author(actor_root)?;
        let o = &op.op;
        if o.room_id != self.room_id {
            return Err(MembershipError::WrongRoom);
        }
        if self.deleted {
            return Err(MembershipError::Deleted);
        }
        let expected = self
            .head_seq
            .checked_add(1)
            .ok_or(MembershipError::Invalid("sequence number"))?;
        if o.seq != expected {
            return Err(MembershipError::OutOfOrder {
                expected,
                got: o.seq,
            });
        }
        if o.prev != self.head_hash {
            return Err(MembershipError::BrokenChain);
        }
        if matches!(o.kind, OpKind::Create { .. }) {
            return Err(MembershipError::Invalid("room already created"));
        }
        let actor_role = *self
            .members
            .get(&o.actor)
            .ok_or_else(|| MembershipError::NotMember(o.actor.clone()))?;

        match &o.kind {
            OpKind::Create { .. } => Err(MembershipError::Invalid("room already created")),
            OpKind::Invite { users } => {
                self.moderator_in_rooms(actor_role, "invite members")?;
                check_users(users, false)?;
                if let Some(u) = users.iter().find(|u| self.members.contains_key(*u)) {
                    return Err(MembershipError::AlreadyMember(u.clone()));
                }
                if self.members.len() + users.len() > max_members {
                    return Err(MembershipError::TooManyMembers(max_members));
                }
                Ok(Change::Invited(users.clone()))
            }
            OpKind::Remove { users } => {
                self.moderator_only(actor_role, "remove members")?;
                check_users(users, false)?;
                if users.contains(&o.actor) {
                    return Err(MembershipError::Invalid("use leave to remove yourself"));
                }
                if let Some(u) = users.iter().find(|u| !self.members.contains_key(*u)) {
                    return Err(MembershipError::NotMember(u.clone()));
                }
                // Unreachable today (the actor is a moderator and stays), but it is the
                // invariant that matters, so it is checked rather than assumed.
                if self.kind == RoomKind::Room {
                    let remaining = self
                        .members
                        .iter()
                        .filter(|(name, _)| !users.contains(name));
                    let (count, moderators) = remaining.fold((0usize, 0usize), |(c, m), (_, r)| {
                        (c + 1, m + usize::from(*r == Role::Moderator))
                    });
                    if count > 0 && moderators == 0 {
                        return Err(MembershipError::NotAllowed(NEEDS_MODERATOR));
                    }
                }
                Ok(Change::Removed(users.clone()))
            }
            OpKind::Promote { user } => {
                self.moderator_only(actor_role, "change roles")?;
                check_username(user)?;
                match self.members.get(user) {
                    None => Err(MembershipError::NotMember(user.clone())),
                    Some(Role::Moderator) => Err(MembershipError::Invalid("already a moderator")),
                    Some(Role::Member) => Ok(Change::Promoted(user.clone())),
                }
            }
            OpKind::Demote { user } => {
                self.moderator_only(actor_role, "change roles")?;
                check_username(user)?;
                match self.members.get(user) {
                    None => Err(MembershipError::NotMember(user.clone())),
                    Some(Role::Member) => Err(MembershipError::Invalid("not a moderator")),
                    Some(Role::Moderator) if self.moderators() <= 1 => {
                        Err(MembershipError::NotAllowed(NEEDS_MODERATOR))
                    }
                    Some(Role::Moderator) => Ok(Change::Demoted(user.clone())),
                }
            }
            OpKind::Leave => {
                if self.kind == RoomKind::Room
                    && actor_role == Role::Moderator
                    && self.moderators() == 1
                    && self.members.len() > 1
                {
                    return Err(MembershipError::NotAllowed(
                        "the last moderator must promote someone before leaving",
                    ));
                }
                Ok(Change::Left(o.actor.clone()))
            }
            OpKind::Edit { title, description } => {
                self.moderator_in_rooms(actor_role, "edit the room")?;
                check_title_description(title, description)?;
                Ok(Change::Edited)
            }
            OpKind::SetTimers { timers } => {
                self.moderator_in_rooms(actor_role, "set timers")?;
                check_timers(timers)?;
                Ok(Change::TimersSet(*timers))
            }
            OpKind::Delete => {
                self.moderator_only(actor_role, "delete the room")?;
                Ok(Change::Deleted)
            }
        }
    }

    /// Changes every member of a group may make, but only moderators of a room.
    fn moderator_in_rooms(&self, role: Role, what: &'static str) -> Result<(), MembershipError> {
        match self.kind {
            RoomKind::Room if role != Role::Moderator => Err(MembershipError::NotModerator(what)),
            _ => Ok(()),
        }
    }

    /// Changes only moderators of a room may make, and nobody in a group.
    fn moderator_only(&self, role: Role, what: &'static str) -> Result<(), MembershipError> {
        match self.kind {
            RoomKind::Group => Err(MembershipError::NotAllowed(GROUP_NO_MODERATORS)),
            RoomKind::Room if role != Role::Moderator => Err(MembershipError::NotModerator(what)),
            RoomKind::Room => Ok(()),
        }
    }

    /// Replays a whole log from its `Create`.
    ///
    /// `root_of` returns the pinned root key of a username.
    ///
    /// # Errors
    /// The first op's error from [`Self::genesis`] or [`Self::apply`];
    /// `Crypto(BadChain)` when `root_of` knows no root key for an actor; an empty log is
    /// `Invalid("first change must create the room")`.
    pub fn replay(
        ops: &[SignedOp],
        mut root_of: impl FnMut(&str) -> Option<RootPublicKey>,
        max_members: usize,
    ) -> Result<RoomState, MembershipError> {
        let (first, rest) = ops.split_first().ok_or(MembershipError::Invalid(
            "first change must create the room",
        ))?;
        let root = root_of(&first.op.actor).ok_or(CryptoError::BadChain)?;
        let mut state = Self::genesis(first, &root, max_members)?;
        for op in rest {
            let root = root_of(&op.op.actor).ok_or(CryptoError::BadChain)?;
            state.apply(op, &root, max_members)?;
        }
        Ok(state)
    }

    /// The user's role, if they are a member.
    pub fn role(&self, user: &str) -> Option<Role> {
        self.members.get(user).copied()
    }

    /// Whether the user is a member.
    pub fn is_member(&self, user: &str) -> bool {
        self.members.contains_key(user)
    }

    /// How many moderators the room has.
    pub fn moderators(&self) -> usize {
        self.members
            .values()
            .filter(|r| **r == Role::Moderator)
            .count()
    }

    /// The op that would follow the current head, ready for [`SignedOp::sign`].
    pub fn next_op(
        &self,
        actor: &str,
        actor_cert: &DeviceCertificate,
        at_ms: u64,
        kind: OpKind,
    ) -> MembershipOp {
        MembershipOp {
            room_id: self.room_id.clone(),
            // Saturating: a head at u64::MAX cannot be followed, and `check` says so.
            seq: self.head_seq.saturating_add(1),
            prev: self.head_hash,
            actor: actor.to_owned(),
            actor_cert: actor_cert.clone(),
            at_ms,
            kind,
        }
    }

    /// Fixed binary encoding, for the local cache and the relay's database.
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let mut w = Writer::with_capacity(256 + self.members.len() * 40);
        w.u8(VERSION)
            .bytes(self.room_id.as_bytes())
            .u8(self.kind.to_byte())
            .bytes(self.title.as_bytes())
            .bytes(self.description.as_bytes())
            .count(self.members.len());
        for (name, role) in &self.members {
            w.bytes(name.as_bytes()).u8(role.to_byte());
        }
        w.u64(self.head_seq)
            .fixed(&self.head_hash)
            .u8(u8::from(self.deleted));
        write_timers(&mut w, &self.timers);
        w.bytes(self.created_by.as_bytes()).u64(self.created_at_ms);
        w.finish()
    }

    /// Decodes [`Self::encode`]'s output.
    ///
    /// Structural only: the state is our own (or the relay's own) record, so the rules are not
    /// re-run, but the encoding stays canonical (members strictly sorted, no repeats).
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] or [`CryptoError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<RoomState, CryptoError> {
        let mut r = Reader::new(bytes, "room state");
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let room_id = r.string(MAX_ROOM_ID)?.to_owned();
        let kind = RoomKind::from_byte(r.u8()?)?;
        let title = r.string(MAX_TITLE)?.to_owned();
        let description = r.string(MAX_DESCRIPTION)?.to_owned();
        let n = r.u32()? as usize;
        if n > MAX_STATE_MEMBERS {
            return Err(CryptoError::Malformed("room state"));
        }
        let mut members = BTreeMap::new();
        let mut last: Option<&str> = None;
        for _ in 0..n {
            let name = r.string(MAX_USERNAME)?;
            if last.is_some_and(|l| l >= name) {
                return Err(CryptoError::Malformed("room state"));
            }
            last = Some(name);
            members.insert(name.to_owned(), Role::from_byte(r.u8()?)?);
        }
        let state = RoomState {
            room_id,
            kind,
            title,
            description,
            members,
            head_seq: r.u64()?,
            head_hash: r.array()?,
            deleted: r.bool()?,
            timers: read_timers(&mut r)?,
            created_by: r.string(MAX_USERNAME)?.to_owned(),
            created_at_ms: r.u64()?,
        };
        r.finish()?;
        Ok(state)
    }
}

/// A fresh room id: `room:` or `group:` and 32 lowercase hex digits of 16 random bytes.
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails.
pub fn new_room_id(kind: RoomKind) -> Result<String, CryptoError> {
    let bytes: [u8; 16] = primitives::random_array()?;
    let mut id = String::from(match kind {
        RoomKind::Room => ROOM_PREFIX,
        RoomKind::Group => GROUP_PREFIX,
    });
    super::hex::encode_into(&mut id, &bytes);
    Ok(id)
}

/// The kind a room id denotes, if it is well formed (prefix and exactly 32 lowercase hex digits).
pub fn room_kind_of(room_id: &str) -> Option<RoomKind> {
    let (kind, digits) = if let Some(d) = room_id.strip_prefix(ROOM_PREFIX) {
        (RoomKind::Room, d)
    } else if let Some(d) = room_id.strip_prefix(GROUP_PREFIX) {
        (RoomKind::Group, d)
    } else {
        return None;
    };
    super::hex::is_encoding_of_len(digits, 16).then_some(kind)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::crypto::identity::{DeviceId, DeviceKeys, UserRootKey};

    const MAX: usize = 100;
    const NOW: u64 = 1_700_000_000;

    struct User {
        name: String,
        urk: UserRootKey,
        keys: DeviceKeys,
        cert: DeviceCertificate,
    }

    impl User {
        fn new(name: &str) -> Self {
            Self::with_role(name, DeviceRole::User)
        }

        fn with_role(name: &str, role: DeviceRole) -> Self {
            let urk = UserRootKey::generate().unwrap();
            let keys = DeviceKeys::generate().unwrap();
            let cert = urk
                .certify(name, DeviceId::random().unwrap(), &keys, NOW, role)
                .unwrap();
            Self {
                name: name.to_owned(),
                urk,
                keys,
                cert,
            }
        }

        fn root(&self) -> RootPublicKey {
            self.urk.public()
        }

        fn sign(&self, op: MembershipOp) -> SignedOp {
            SignedOp::sign(op, &self.keys.signing).unwrap()
        }

        /// The next op of `state` by this user.
        fn op(&self, state: &RoomState, kind: OpKind) -> SignedOp {
            self.sign(state.next_op(&self.name, &self.cert, NOW * 1000, kind))
        }

        fn create(&self, kind: RoomKind, members: &[&str]) -> SignedOp {
            self.sign(self.create_op(kind, members))
        }

        fn create_op(&self, kind: RoomKind, members: &[&str]) -> MembershipOp {
            MembershipOp {
                room_id: new_room_id(kind).unwrap(),
                seq: 0,
                prev: [0; 32],
                actor: self.name.clone(),
                actor_cert: self.cert.clone(),
                at_ms: NOW * 1000,
                kind: OpKind::Create {
                    kind,
                    title: "Lobby".into(),
                    description: "where it starts".into(),
                    members: names(members),
                },
            }
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn invite(v: &[&str]) -> OpKind {
        OpKind::Invite { users: names(v) }
    }

    fn remove(v: &[&str]) -> OpKind {
        OpKind::Remove { users: names(v) }
    }

    fn promote(u: &str) -> OpKind {
        OpKind::Promote { user: u.into() }
    }

    fn demote(u: &str) -> OpKind {
        OpKind::Demote { user: u.into() }
    }

    fn edit(title: &str, description: &str) -> OpKind {
        OpKind::Edit {
            title: title.into(),
            description: description.into(),
        }
    }

    fn timers(expire_after: Option<u32>, burn_after: Option<u32>) -> OpKind {
        OpKind::SetTimers {
            timers: RoomTimers {
                expire_after,
                burn_after,
            },
        }
    }

    /// alice (creator) with bob and carol, as a room or a group.
    struct Fixture {
        alice: User,
        bob: User,
        carol: User,
        dave: User,
        state: RoomState,
        log: Vec<SignedOp>,
    }

    impl Fixture {
        fn new(kind: RoomKind) -> Self {
            let alice = User::new("alice");
            let create = alice.create(kind, &["bob", "carol"]);
            let state = RoomState::genesis(&create, &alice.root(), MAX).unwrap();
            Self {
                alice,
                bob: User::new("bob"),
                carol: User::new("carol"),
                dave: User::new("dave"),
                state,
                log: vec![create],
            }
        }

        fn user(&self, name: &str) -> &User {
            match name {
                "alice" => &self.alice,
                "bob" => &self.bob,
                "carol" => &self.carol,
                "dave" => &self.dave,
                _ => panic!("no user {name}"),
            }
        }

        /// `who` makes the change; it must be accepted, and check must agree with apply.
        fn accept(&mut self, who: &str, kind: OpKind) -> Change {
            let user = self.user(who);
            let op = user.op(&self.state, kind);
            let root = user.root();
            let checked = self.state.check(&op, &root, MAX).unwrap();
            let applied = self.state.apply(&op, &root, MAX).unwrap();
            assert_eq!(checked, applied);
            assert_eq!(self.state.head_hash, op.hash().unwrap());
            self.log.push(op);
            applied
        }

        /// `who` makes the change; it must be refused by check and apply alike.
        fn refuse(&mut self, who: &str, kind: OpKind) -> MembershipError {
            let user = self.user(who);
            let op = user.op(&self.state, kind);
            let root = user.root();
            refuse_op(&mut self.state, &op, &root, MAX)
        }
    }

    /// Both check and apply refuse `op` with the same error and leave the state untouched.
    fn refuse_op(
        state: &mut RoomState,
        op: &SignedOp,
        root: &RootPublicKey,
        max: usize,
    ) -> MembershipError {
        let before = state.clone();
        let checked = state.check(op, root, max).unwrap_err();
        let applied = state.apply(op, root, max).unwrap_err();
        assert_eq!(checked, applied);
        assert_eq!(*state, before, "a refused change must not alter the state");
        applied
    }

    // ------------------------------------------------------------------ ids, names, encodings

    #[test]
    fn room_ids_have_the_right_prefix_and_hex() {
        for kind in [RoomKind::Room, RoomKind::Group] {
            let a = new_room_id(kind).unwrap();
            let b = new_room_id(kind).unwrap();
            assert_ne!(a, b);
            assert_eq!(room_kind_of(&a), Some(kind));
            let hex = a.split_once(':').unwrap().1;
            assert_eq!(hex.len(), 32);
            assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert!(new_room_id(RoomKind::Room).unwrap().starts_with("room:"));
        assert!(new_room_id(RoomKind::Group).unwrap().starts_with("group:"));
    }

    #[test]
    fn room_kind_of_rejects_malformed_ids() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(room_kind_of(&format!("room:{hex}")), Some(RoomKind::Room));
        assert_eq!(room_kind_of(&format!("group:{hex}")), Some(RoomKind::Group));
        for bad in [
            String::new(),
            hex.to_owned(),
            format!("dm:{hex}"),
            format!("Room:{hex}"),
            format!("room:{}", &hex[1..]),
            format!("room:{hex}0"),
            format!("room:{}", hex.to_uppercase()),
            format!("room:{}g", &hex[1..]),
            format!("group:{}", &hex[..31]),
            format!("room:group:{hex}"),
        ] {
            assert_eq!(room_kind_of(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn usernames_must_already_be_canonical() {
        for good in ["al", "alice", "a.b-c_d", "0day", &"x".repeat(32)] {
            assert!(valid_username(good), "{good:?}");
        }
        for bad in [
            "",
            "a",
            "Alice",
            ".alice",
            "-a",
            "_a",
            "al ice",
            "al/ice",
            "ålice",
            "al:ce",
            &"x".repeat(33),
        ] {
            assert!(!valid_username(bad), "{bad:?}");
        }
    }

    fn every_kind() -> Vec<OpKind> {
        vec![
            OpKind::Create {
                kind: RoomKind::Group,
                title: "t".into(),
                description: "d\nmore".into(),
                members: names(&["bob", "carol"]),
            },
            invite(&["dave"]),
            remove(&["bob", "carol"]),
            promote("bob"),
            demote("bob"),
            OpKind::Leave,
            edit("title ü", ""),
            timers(Some(60), None),
            timers(None, Some(1)),
            timers(Some(MAX_TIMER_SECS), Some(MAX_TIMER_SECS)),
            timers(None, None),
            OpKind::Delete,
        ]
    }

    #[test]
    fn signed_ops_of_every_kind_round_trip() {
        let alice = User::new("alice");
        let mut hashes = BTreeSet::new();
        for (i, kind) in every_kind().into_iter().enumerate() {
            let mut op = alice.create_op(RoomKind::Room, &[]);
            op.seq = i as u64;
            op.prev = [i as u8; 32];
            op.kind = kind;
            let signed = alice.sign(op);
            let bytes = signed.encode().unwrap();
            assert_eq!(bytes[0], 1, "version byte first");
            let decoded = SignedOp::decode(&bytes).unwrap();
            assert_eq!(decoded, signed);
            assert_eq!(decoded.encode().unwrap(), bytes);
            assert_eq!(decoded.hash().unwrap(), primitives::sha256(&[&bytes]));
            decoded.verify_author(&alice.root()).unwrap();
            assert!(hashes.insert(decoded.hash().unwrap()));
        }
    }

    #[test]
    fn op_decoder_rejects_truncation_trailing_bytes_and_versions() {
        let alice = User::new("alice");
        let op = alice.create(RoomKind::Room, &["bob"]);
        let bytes = op.encode().unwrap();
        for n in 0..bytes.len() {
            assert!(SignedOp::decode(&bytes[..n]).is_err(), "prefix of {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            SignedOp::decode(&long),
            Err(CryptoError::Malformed(_))
        ));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            SignedOp::decode(&v2),
            Err(CryptoError::UnsupportedVersion(2))
        ));
        let mut huge = bytes;
        huge.resize(MAX_OP_LEN + 1, 0);
        assert!(matches!(
            SignedOp::decode(&huge),
            Err(CryptoError::Limit(_))
        ));
    }

    #[test]
    fn op_decoder_rejects_over_long_fields() {
        let alice = User::new("alice");
        let base = alice.create_op(RoomKind::Room, &[]);
        let with = |kind: OpKind| {
            let mut op = base.clone();
            op.kind = kind;
            alice.sign(op).encode().unwrap()
        };
        let at_limit = [
            edit(&"t".repeat(MAX_TITLE), &"d".repeat(MAX_DESCRIPTION)),
            promote(&"u".repeat(32)),
        ];
        for kind in at_limit {
            assert!(SignedOp::decode(&with(kind)).is_ok());
        }
        let too_many: Vec<String> = (0..=MAX_OP_USERS).map(|i| format!("u{i}")).collect();
        let over = [
            edit(&"t".repeat(MAX_TITLE + 1), ""),
            edit("", &"d".repeat(MAX_DESCRIPTION + 1)),
            promote(&"u".repeat(33)),
            OpKind::Invite { users: too_many },
            invite(&[&"u".repeat(33)]),
        ];
        for kind in over {
            assert!(SignedOp::decode(&with(kind.clone())).is_err(), "{kind:?}");
        }
        let mut long_actor = base.clone();
        long_actor.actor = "a".repeat(33);
        assert!(SignedOp::decode(&alice.sign(long_actor).encode().unwrap()).is_err());
        let mut long_room = base;
        long_room.room_id = "r".repeat(MAX_ROOM_ID + 1);
        assert!(SignedOp::decode(&alice.sign(long_room).encode().unwrap()).is_err());
    }

    #[test]
    fn largest_valid_op_fits_and_decodes() {
        let users: Vec<String> = (0..MAX_OP_USERS).map(|i| format!("{i:0>32}")).collect();
        let alice = User::new(&"a".repeat(32));
        let mut op = alice.create_op(RoomKind::Room, &[]);
        op.kind = OpKind::Create {
            kind: RoomKind::Room,
            title: "t".repeat(MAX_TITLE),
            description: "d".repeat(MAX_DESCRIPTION),
            members: users,
        };
        let signed = alice.sign(op);
        let bytes = signed.encode().unwrap();
        assert!(bytes.len() <= MAX_OP_LEN, "{} bytes", bytes.len());
        assert_eq!(SignedOp::decode(&bytes).unwrap(), signed);
        let state = RoomState::genesis(&signed, &alice.root(), MAX_OP_USERS + 1).unwrap();
        assert_eq!(state.members.len(), MAX_OP_USERS + 1);
    }

    #[test]
    fn bad_tags_are_rejected() {
        let alice = User::new("alice");
        let op = alice.create(RoomKind::Room, &[]);
        let bytes = op.encode().unwrap();
        // The kind tag follows room id, seq, prev, actor, certificate and at_ms.
        let tag_at = 1
            + 4
            + op.op.room_id.len()
            + 8
            + 32
            + 4
            + op.op.actor.len()
            + op.op.actor_cert.encode().unwrap().len()
            + 8;
        assert_eq!(bytes[tag_at], 0);
        let mut bad = bytes.clone();
        bad[tag_at] = 9;
        assert!(SignedOp::decode(&bad).is_err());
        let mut bad_kind = bytes;
        bad_kind[tag_at + 1] = 2;
        assert!(SignedOp::decode(&bad_kind).is_err());

        let mut t = alice.create_op(RoomKind::Room, &[]);
        t.kind = timers(Some(5), None);
        let bytes = alice.sign(t).encode().unwrap();
        let mut bad = bytes.clone();
        bad[tag_at + 1] = 2; // presence byte of expire_after
        assert!(SignedOp::decode(&bad).is_err());
    }

    /// Flipping any bit pattern of any byte must never yield an op that is accepted.
    #[test]
    fn every_tampered_byte_is_rejected() {
        let mut f = Fixture::new(RoomKind::Room);
        let before = f.state.clone();
        let candidates = vec![
            f.alice.op(&f.state, invite(&["dave"])),
            f.alice.op(&f.state, timers(Some(60), Some(30))),
            f.alice.op(&f.state, remove(&["bob"])),
        ];
        let create = f.log[0].clone();
        let root = f.alice.root();
        for op in candidates {
            let bytes = op.encode().unwrap();
            for i in 0..bytes.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut m = bytes.clone();
                    m[i] ^= mask;
                    let Ok(decoded) = SignedOp::decode(&m) else {
                        continue;
                    };
                    assert_ne!(decoded, op);
                    assert!(
                        decoded.verify_author(&root).is_err(),
                        "byte {i} ^ {mask:#x} verified"
                    );
                    assert!(f.state.apply(&decoded, &root, MAX).is_err());
                    assert_eq!(f.state, before);
                }
            }
        }
        let bytes = create.encode().unwrap();
        for i in 0..bytes.len() {
            let mut m = bytes.clone();
            m[i] ^= 0x01;
            if let Ok(decoded) = SignedOp::decode(&m) {
                assert!(
                    RoomState::genesis(&decoded, &root, MAX).is_err(),
                    "byte {i}"
                );
            }
        }
        f.accept("alice", invite(&["dave"]));
    }

    // ------------------------------------------------------------------ authorship

    #[test]
    fn author_must_be_a_certified_device_of_the_actor() {
        let alice = User::new("alice");
        let mallory = User::new("mallory");
        let op = alice.create(RoomKind::Room, &["bob"]);
        op.verify_author(&alice.root()).unwrap();

        // Checked against someone else's root key.
        assert!(matches!(
            op.verify_author(&mallory.root()),
            Err(CryptoError::BadChain)
        ));

        // Mallory's device claims to act as alice (with either root key).
        let mut forged = alice.create_op(RoomKind::Room, &["mallory"]);
        forged.actor_cert = mallory.cert.clone();
        let forged = mallory.sign(forged);
        assert!(matches!(
            forged.verify_author(&alice.root()),
            Err(CryptoError::BadChain)
        ));
        assert!(matches!(
            forged.verify_author(&mallory.root()),
            Err(CryptoError::BadChain)
        ));
        assert_eq!(
            RoomState::genesis(&forged, &mallory.root(), MAX).unwrap_err(),
            MembershipError::Crypto(CryptoError::BadChain)
        );

        // Alice's real certificate, but the op is signed by another key.
        let stolen =
            SignedOp::sign(alice.create_op(RoomKind::Room, &[]), &mallory.keys.signing).unwrap();
        assert!(matches!(
            stolen.verify_author(&alice.root()),
            Err(CryptoError::BadSignature)
        ));

        // A field changed after signing.
        let mut edited = op.clone();
        edited.op.at_ms += 1;
        assert!(matches!(
            edited.verify_author(&alice.root()),
            Err(CryptoError::BadSignature)
        ));

        // The retention bot's device is never a member's device.
        let bot = User::with_role("alice", DeviceRole::RetentionBot);
        let bot_op = bot.create(RoomKind::Room, &[]);
        assert!(matches!(
            bot_op.verify_author(&bot.root()),
            Err(CryptoError::BadChain)
        ));
    }

    #[test]
    fn a_device_of_one_member_cannot_act_for_another() {
        let mut f = Fixture::new(RoomKind::Room);
        // Bob's device signs a removal in alice's (a moderator's) name.
        let mut op = f.state.next_op("alice", &f.bob.cert, 1, remove(&["carol"]));
        op.actor = "alice".into();
        let op = f.bob.sign(op);
        for root in [f.alice.root(), f.bob.root()] {
            assert_eq!(
                refuse_op(&mut f.state, &op, &root, MAX),
                MembershipError::Crypto(CryptoError::BadChain)
            );
        }
    }

    #[test]
    fn relay_fabricated_op_by_a_non_member_is_refused() {
        let mut f = Fixture::new(RoomKind::Room);
        let mallory = User::new("mallory");
        for kind in [
            invite(&["mallory"]),
            OpKind::Leave,
            remove(&["bob"]),
            edit("x", ""),
        ] {
            let op = mallory.op(&f.state, kind);
            assert_eq!(
                refuse_op(&mut f.state, &op, &mallory.root(), MAX),
                MembershipError::NotMember("mallory".into())
            );
        }
        let mut g = Fixture::new(RoomKind::Group);
        let op = mallory.op(&g.state, invite(&["mallory"]));
        assert_eq!(
            refuse_op(&mut g.state, &op, &mallory.root(), MAX),
            MembershipError::NotMember("mallory".into())
        );
    }

    // ------------------------------------------------------------------ genesis

    #[test]
    fn genesis_sets_roles_by_kind() {
        let alice = User::new("alice");
        let create = alice.create(RoomKind::Room, &["bob", "carol"]);
        let room = RoomState::genesis(&create, &alice.root(), MAX).unwrap();
        assert_eq!(room.kind, RoomKind::Room);
        assert_eq!(room.role("alice"), Some(Role::Moderator));
        assert_eq!(room.role("bob"), Some(Role::Member));
        assert_eq!(room.role("carol"), Some(Role::Member));
        assert_eq!(room.role("dave"), None);
        assert!(room.is_member("bob") && !room.is_member("dave"));
        assert_eq!(room.moderators(), 1);
        assert_eq!(room.head_seq, 0);
        assert_eq!(room.head_hash, create.hash().unwrap());
        assert_eq!(room.created_by, "alice");
        assert_eq!(room.created_at_ms, NOW * 1000);
        assert_eq!(room.title, "Lobby");
        assert_eq!(room.description, "where it starts");
        assert!(!room.deleted);
        assert_eq!(room.timers, RoomTimers::default());

        let create = alice.create(RoomKind::Group, &["bob"]);
        let group = RoomState::genesis(&create, &alice.root(), MAX).unwrap();
        assert_eq!(group.kind, RoomKind::Group);
        assert_eq!(group.role("alice"), Some(Role::Member));
        assert_eq!(group.role("bob"), Some(Role::Member));
        assert_eq!(group.moderators(), 0);

        let alone = alice.create(RoomKind::Room, &[]);
        let alone = RoomState::genesis(&alone, &alice.root(), 1).unwrap();
        assert_eq!(alone.members.len(), 1);
    }

    #[test]
    fn genesis_refuses_bad_creates() {
        let alice = User::new("alice");
        let root = alice.root();
        let genesis = |op: MembershipOp, max: usize| {
            RoomState::genesis(&alice.sign(op), &root, max).unwrap_err()
        };
        let base = || alice.create_op(RoomKind::Room, &["bob", "carol"]);
        let with_create = |f: &dyn Fn(&mut String, &mut String, &mut Vec<String>)| {
            let mut op = base();
            if let OpKind::Create {
                title,
                description,
                members,
                ..
            } = &mut op.kind
            {
                f(title, description, members);
            }
            op
        };

        let mut not_create = base();
        not_create.kind = invite(&["dave"]);
        assert_eq!(
            genesis(not_create, MAX),
            MembershipError::Invalid("first change must create the room")
        );
        let mut late = base();
        late.seq = 1;
        assert_eq!(
            genesis(late, MAX),
            MembershipError::OutOfOrder {
                expected: 0,
                got: 1
            }
        );
        let mut chained = base();
        chained.prev[31] = 1;
        assert_eq!(genesis(chained, MAX), MembershipError::BrokenChain);

        let mut wrong_kind = base();
        wrong_kind.room_id = new_room_id(RoomKind::Group).unwrap();
        assert_eq!(
            genesis(wrong_kind, MAX),
            MembershipError::Invalid("room id")
        );
        let mut bad_id = base();
        bad_id.room_id = "room:xyz".into();
        assert_eq!(genesis(bad_id, MAX), MembershipError::Invalid("room id"));

        let ok_title = with_create(&|t, d, _| {
            *t = "é".repeat(MAX_TITLE / 2);
            *d = "\n".repeat(MAX_DESCRIPTION);
        });
        RoomState::genesis(&alice.sign(ok_title), &root, MAX).unwrap();
        let long_title = with_create(&|t, _, _| *t = "t".repeat(MAX_TITLE + 1));
        assert_eq!(genesis(long_title, MAX), MembershipError::Invalid("title"));
        let control = with_create(&|t, _, _| *t = "bad\x1b[2Jtitle".into());
        assert_eq!(genesis(control, MAX), MembershipError::Invalid("title"));
        let long_desc = with_create(&|_, d, _| *d = "d".repeat(MAX_DESCRIPTION + 1));
        assert_eq!(
            genesis(long_desc, MAX),
            MembershipError::Invalid("description")
        );

        let self_invite = with_create(&|_, _, m| m.push("alice".into()));
        assert_eq!(
            genesis(self_invite, MAX),
            MembershipError::AlreadyMember("alice".into())
        );
        let dup = with_create(&|_, _, m| m.push("bob".into()));
        assert_eq!(
            genesis(dup, MAX),
            MembershipError::Invalid("duplicate user")
        );
        let upper = with_create(&|_, _, m| m.push("Dave".into()));
        assert_eq!(genesis(upper, MAX), MembershipError::Invalid("username"));
        let huge = with_create(&|_, _, m| {
            *m = (0..=MAX_OP_USERS).map(|i| format!("u{i}")).collect();
        });
        assert_eq!(
            genesis(huge, usize::MAX),
            MembershipError::Invalid("user list")
        );

        // Three members in all (creator included) fit exactly into 3, not into 2.
        RoomState::genesis(&alice.sign(base()), &root, 3).unwrap();
        assert_eq!(genesis(base(), 2), MembershipError::TooManyMembers(2));

        // An actor whose name is not canonical (its certificate says the same name).
        let shouty = User::new("Alice");
        let op = shouty.create(RoomKind::Room, &[]);
        assert_eq!(
            RoomState::genesis(&op, &shouty.root(), MAX).unwrap_err(),
            MembershipError::Invalid("username")
        );
    }

    // ------------------------------------------------------------------ ordering

    #[test]
    fn replayed_ops_are_recognised_and_change_nothing() {
        let mut f = Fixture::new(RoomKind::Room);
        let first = f.alice.op(&f.state, invite(&["dave"]));
        f.state.apply(&first, &f.alice.root(), MAX).unwrap();
        f.accept("alice", promote("bob"));

        let root = f.alice.root();
        let err = refuse_op(&mut f.state, &first, &root, MAX);
        assert!(err.is_replay() && !err.is_gap(), "{err:?}");
        assert_eq!(
            err,
            MembershipError::OutOfOrder {
                expected: 3,
                got: 1
            }
        );
        // Create again: seq 0 is simply an old op.
        let create = f.log[0].clone();
        assert!(refuse_op(&mut f.state, &create, &root, MAX).is_replay());
    }

    #[test]
    fn gaps_are_recognised() {
        let mut f = Fixture::new(RoomKind::Room);
        let mut ahead = f.state.clone();
        let op1 = f.alice.op(&ahead, invite(&["dave"]));
        ahead.apply(&op1, &f.alice.root(), MAX).unwrap();
        let op2 = f.alice.op(&ahead, promote("bob"));
        let err = refuse_op(&mut f.state, &op2, &f.alice.root(), MAX);
        assert!(err.is_gap() && !err.is_replay());
        assert_eq!(
            err,
            MembershipError::OutOfOrder {
                expected: 1,
                got: 2
            }
        );
        // Fill the gap, and the same op applies.
        f.state.apply(&op1, &f.alice.root(), MAX).unwrap();
        f.state.apply(&op2, &f.alice.root(), MAX).unwrap();
        assert_eq!(f.state, {
            ahead.apply(&op2, &f.alice.root(), MAX).unwrap();
            ahead
        });
    }

    #[test]
    fn forks_break_the_chain() {
        let mut f = Fixture::new(RoomKind::Room);
        // Two ops at the same position: the relay delivers one, then tries the other.
        let a = f.alice.op(&f.state, invite(&["dave"]));
        let b = f.alice.op(&f.state, promote("bob"));
        f.state.apply(&a, &f.alice.root(), MAX).unwrap();
        let mut forked = f.state.next_op("alice", &f.alice.cert, 1, promote("bob"));
        forked.prev = b.hash().unwrap();
        let forked = f.alice.sign(forked);
        assert_eq!(
            refuse_op(&mut f.state, &forked, &f.alice.root(), MAX),
            MembershipError::BrokenChain
        );
        assert_eq!(
            refuse_op(&mut f.state, &b, &f.alice.root(), MAX),
            MembershipError::OutOfOrder {
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn ops_of_another_room_are_refused() {
        let mut f = Fixture::new(RoomKind::Room);
        let mut op = f
            .state
            .next_op("alice", &f.alice.cert, 1, invite(&["dave"]));
        op.room_id = new_room_id(RoomKind::Room).unwrap();
        let op = f.alice.sign(op);
        assert_eq!(
            refuse_op(&mut f.state, &op, &f.alice.root(), MAX),
            MembershipError::WrongRoom
        );
    }

    #[test]
    fn a_second_create_is_refused() {
        let mut f = Fixture::new(RoomKind::Room);
        let mut op = f.alice.create_op(RoomKind::Room, &["dave"]);
        op.room_id = f.state.room_id.clone();
        op.seq = 1;
        op.prev = f.state.head_hash;
        let op = f.alice.sign(op);
        assert_eq!(
            refuse_op(&mut f.state, &op, &f.alice.root(), MAX),
            MembershipError::Invalid("room already created")
        );
        // Whoever sends it: a second Create is refused as such, not for the sender.
        let mallory = User::new("mallory");
        let mut op = mallory.create_op(RoomKind::Room, &[]);
        op.room_id = f.state.room_id.clone();
        op.seq = 1;
        op.prev = f.state.head_hash;
        let op = mallory.sign(op);
        assert_eq!(
            refuse_op(&mut f.state, &op, &mallory.root(), MAX),
            MembershipError::Invalid("room already created")
        );
    }

    #[test]
    fn signature_is_checked_before_everything_else() {
        let mut f = Fixture::new(RoomKind::Room);
        f.accept("alice", OpKind::Delete);
        // Wrong room, deleted, wrong seq and a non-member: the author check still comes first.
        let mallory = User::new("mallory");
        let mut op = f.state.next_op("mallory", &mallory.cert, 1, OpKind::Leave);
        op.room_id = "room:nope".into();
        op.seq = 99;
        let op = mallory.sign(op);
        assert_eq!(
            refuse_op(&mut f.state, &op, &f.alice.root(), MAX),
            MembershipError::Crypto(CryptoError::BadChain)
        );
        assert_eq!(
            refuse_op(&mut f.state, &op, &mallory.root(), MAX),
            MembershipError::WrongRoom
        );
        // Then deleted before the sequence.
        let mut op = f.state.next_op("alice", &f.alice.cert, 1, OpKind::Leave);
        op.seq = 99;
        let op = f.alice.sign(op);
        assert_eq!(
            refuse_op(&mut f.state, &op, &f.alice.root(), MAX),
            MembershipError::Deleted
        );
    }

    // ------------------------------------------------------------------ permissions

    #[test]
    fn room_changes_need_a_moderator() {
        let mut f = Fixture::new(RoomKind::Room);
        let cases = [
            (invite(&["dave"]), "invite members"),
            (remove(&["carol"]), "remove members"),
            (promote("carol"), "change roles"),
            (demote("alice"), "change roles"),
            (edit("new", ""), "edit the room"),
            (timers(Some(60), None), "set timers"),
            (OpKind::Delete, "delete the room"),
        ];
        for (kind, what) in cases {
            assert_eq!(
                f.refuse("bob", kind.clone()),
                MembershipError::NotModerator(what)
            );
        }
        // Once promoted, bob may.
        f.accept("alice", promote("bob"));
        assert_eq!(
            f.accept("bob", invite(&["dave"])),
            Change::Invited(names(&["dave"]))
        );
        assert_eq!(f.accept("bob", edit("new", "")), Change::Edited);
        assert_eq!(
            f.accept("bob", remove(&["dave"])),
            Change::Removed(names(&["dave"]))
        );
        assert_eq!(f.accept("bob", OpKind::Delete), Change::Deleted);
    }

    #[test]
    fn group_members_are_equal_and_can_only_leave() {
        let mut f = Fixture::new(RoomKind::Group);
        let no_mods = MembershipError::NotAllowed(GROUP_NO_MODERATORS);
        for who in ["alice", "bob"] {
            for kind in [
                remove(&["carol"]),
                promote("carol"),
                demote("carol"),
                OpKind::Delete,
            ] {
                assert_eq!(f.refuse(who, kind), no_mods);
            }
        }
        assert_eq!(
            f.accept("bob", invite(&["dave"])),
            Change::Invited(names(&["dave"]))
        );
        assert_eq!(f.state.role("dave"), Some(Role::Member));
        assert_eq!(f.accept("dave", edit("ours", "")), Change::Edited);
        assert_eq!(
            f.accept("carol", timers(Some(3600), Some(60))),
            Change::TimersSet(RoomTimers {
                expire_after: Some(3600),
                burn_after: Some(60)
            })
        );
        assert_eq!(
            f.accept("alice", OpKind::Leave),
            Change::Left("alice".into())
        );
        assert_eq!(f.state.moderators(), 0);
        assert_eq!(f.state.members.len(), 3);
    }

    #[test]
    fn invite_rules() {
        let mut f = Fixture::new(RoomKind::Room);
        assert_eq!(
            f.refuse("alice", invite(&[])),
            MembershipError::Invalid("user list")
        );
        assert_eq!(
            f.refuse("alice", invite(&["dave", "bob"])),
            MembershipError::AlreadyMember("bob".into())
        );
        assert_eq!(
            f.refuse("alice", invite(&["alice"])),
            MembershipError::AlreadyMember("alice".into())
        );
        assert_eq!(
            f.refuse("alice", invite(&["dave", "dave"])),
            MembershipError::Invalid("duplicate user")
        );
        assert_eq!(
            f.refuse("alice", invite(&["Dave"])),
            MembershipError::Invalid("username")
        );
        let too_many: Vec<String> = (0..=MAX_OP_USERS).map(|i| format!("u{i}")).collect();
        let op = f.alice.op(&f.state, OpKind::Invite { users: too_many });
        assert_eq!(
            refuse_op(&mut f.state, &op, &f.alice.root(), usize::MAX),
            MembershipError::Invalid("user list")
        );

        // Three members; a limit of four admits one more, not two.
        let op = f.alice.op(&f.state, invite(&["dave", "erin"]));
        assert_eq!(
            refuse_op(&mut f.state, &op, &f.alice.root(), 4),
            MembershipError::TooManyMembers(4)
        );
        let op = f.alice.op(&f.state, invite(&["dave"]));
        assert_eq!(
            f.state.apply(&op, &f.alice.root(), 4).unwrap(),
            Change::Invited(names(&["dave"]))
        );
        assert_eq!(f.state.role("dave"), Some(Role::Member));
        assert_eq!(f.state.members.len(), 4);
    }

    #[test]
    fn remove_rules() {
        let mut f = Fixture::new(RoomKind::Room);
        assert_eq!(
            f.refuse("alice", remove(&[])),
            MembershipError::Invalid("user list")
        );
        assert_eq!(
            f.refuse("alice", remove(&["bob", "dave"])),
            MembershipError::NotMember("dave".into())
        );
        assert_eq!(
            f.refuse("alice", remove(&["bob", "alice"])),
            MembershipError::Invalid("use leave to remove yourself")
        );
        assert_eq!(
            f.refuse("alice", remove(&["bob", "bob"])),
            MembershipError::Invalid("duplicate user")
        );
        assert_eq!(
            f.refuse("alice", remove(&["B0b!"])),
            MembershipError::Invalid("username")
        );
        assert_eq!(
            f.accept("alice", remove(&["bob"])),
            Change::Removed(names(&["bob"]))
        );
        assert!(!f.state.is_member("bob"));
        // A removed member can no longer act.
        assert_eq!(
            f.refuse("bob", OpKind::Leave),
            MembershipError::NotMember("bob".into())
        );
    }

    #[test]
    fn promote_and_demote_rules() {
        let mut f = Fixture::new(RoomKind::Room);
        assert_eq!(
            f.refuse("alice", promote("dave")),
            MembershipError::NotMember("dave".into())
        );
        assert_eq!(
            f.refuse("alice", promote("alice")),
            MembershipError::Invalid("already a moderator")
        );
        assert_eq!(
            f.refuse("alice", promote("BOB")),
            MembershipError::Invalid("username")
        );
        assert_eq!(
            f.refuse("alice", demote("bob")),
            MembershipError::Invalid("not a moderator")
        );
        assert_eq!(
            f.refuse("alice", demote("dave")),
            MembershipError::NotMember("dave".into())
        );
        assert_eq!(
            f.refuse("alice", demote("alice")),
            MembershipError::NotAllowed("a room needs a moderator")
        );
        assert_eq!(
            f.accept("alice", promote("bob")),
            Change::Promoted("bob".into())
        );
        assert_eq!(f.state.role("bob"), Some(Role::Moderator));
        assert_eq!(f.state.moderators(), 2);
        assert_eq!(
            f.accept("bob", demote("alice")),
            Change::Demoted("alice".into())
        );
        assert_eq!(f.state.role("alice"), Some(Role::Member));
        assert_eq!(
            f.refuse("bob", demote("bob")),
            MembershipError::NotAllowed("a room needs a moderator")
        );
        // A moderator may demote themselves while another remains.
        f.accept("bob", promote("carol"));
        assert_eq!(
            f.accept("bob", demote("bob")),
            Change::Demoted("bob".into())
        );
        assert_eq!(f.state.moderators(), 1);
    }

    #[test]
    fn leave_rules() {
        let mut f = Fixture::new(RoomKind::Room);
        assert_eq!(
            f.refuse("alice", OpKind::Leave),
            MembershipError::NotAllowed("the last moderator must promote someone before leaving")
        );
        assert_eq!(f.accept("bob", OpKind::Leave), Change::Left("bob".into()));
        assert!(!f.state.is_member("bob"));
        f.accept("alice", promote("carol"));
        assert_eq!(
            f.accept("alice", OpKind::Leave),
            Change::Left("alice".into())
        );
        assert_eq!(f.state.members.len(), 1);
        // The last member, a moderator, may leave an otherwise empty room.
        assert_eq!(
            f.accept("carol", OpKind::Leave),
            Change::Left("carol".into())
        );
        assert!(f.state.members.is_empty());
        assert_eq!(
            f.refuse("carol", invite(&["dave"])),
            MembershipError::NotMember("carol".into())
        );
    }

    #[test]
    fn edit_rules() {
        let mut f = Fixture::new(RoomKind::Room);
        assert_eq!(
            f.refuse("alice", edit(&"t".repeat(MAX_TITLE + 1), "")),
            MembershipError::Invalid("title")
        );
        assert_eq!(
            f.refuse("alice", edit("line\nbreak", "")),
            MembershipError::Invalid("title")
        );
        assert_eq!(
            f.refuse("alice", edit("ok", &"d".repeat(MAX_DESCRIPTION + 1))),
            MembershipError::Invalid("description")
        );
        assert_eq!(
            f.accept("alice", edit("Général", "multi\nline")),
            Change::Edited
        );
        assert_eq!(f.state.title, "Général");
        assert_eq!(f.state.description, "multi\nline");
    }

    #[test]
    fn timer_rules() {
        let mut f = Fixture::new(RoomKind::Room);
        for (e, b) in [
            (Some(0), None),
            (None, Some(0)),
            (Some(MAX_TIMER_SECS + 1), None),
            (None, Some(MAX_TIMER_SECS + 1)),
            (Some(60), Some(61)),
        ] {
            assert_eq!(
                f.refuse("alice", timers(e, b)),
                MembershipError::Invalid("timer"),
                "{e:?} {b:?}"
            );
        }
        for (e, b) in [
            (Some(1), None),
            (None, Some(MAX_TIMER_SECS)),
            (Some(60), Some(60)),
            (Some(MAX_TIMER_SECS), Some(1)),
            (None, None),
        ] {
            let t = RoomTimers {
                expire_after: e,
                burn_after: b,
            };
            assert_eq!(f.accept("alice", timers(e, b)), Change::TimersSet(t));
            assert_eq!(f.state.timers, t);
        }
    }

    #[test]
    fn delete_ends_the_log() {
        let mut f = Fixture::new(RoomKind::Room);
        assert_eq!(f.accept("alice", OpKind::Delete), Change::Deleted);
        assert!(f.state.deleted);
        for (who, kind) in [("alice", invite(&["dave"])), ("bob", OpKind::Leave)] {
            assert_eq!(f.refuse(who, kind), MembershipError::Deleted);
        }
        let replayed = RoomState::replay(&f.log, |u| Some(f.user(u).root()), MAX).unwrap();
        assert_eq!(replayed, f.state);
    }

    // ------------------------------------------------------------------ replay and storage

    /// 50 ops by several actors, covering every kind but Delete.
    fn fifty_ops() -> Fixture {
        let mut f = Fixture::new(RoomKind::Room);
        f.accept("alice", invite(&["dave"]));
        f.accept("alice", promote("bob"));
        let mut i = 0u32;
        while f.log.len() < 50 {
            match i % 8 {
                0 => f.accept("bob", edit(&format!("title {i}"), "d")),
                1 => f.accept("alice", timers(Some(i + 10), Some(i + 1))),
                2 => f.accept("bob", remove(&["dave"])),
                3 => f.accept("alice", invite(&["dave"])),
                4 => f.accept("alice", promote("carol")),
                5 => f.accept("carol", demote("alice")),
                6 => f.accept("bob", promote("alice")),
                _ => f.accept("carol", demote("carol")),
            };
            i += 1;
        }
        f
    }

    #[test]
    fn replaying_fifty_ops_matches_applying_them_one_by_one() {
        let f = fifty_ops();
        assert_eq!(f.log.len(), 50);
        assert_eq!(f.state.head_seq, 49);
        let root_of = |u: &str| Some(f.user(u).root());
        let replayed = RoomState::replay(&f.log, root_of, MAX).unwrap();
        assert_eq!(replayed, f.state);

        // Through the wire, too.
        let decoded: Vec<SignedOp> = f
            .log
            .iter()
            .map(|op| SignedOp::decode(&op.encode().unwrap()).unwrap())
            .collect();
        assert_eq!(RoomState::replay(&decoded, root_of, MAX).unwrap(), f.state);

        // Every prefix replays to a consistent, shorter history.
        let half = RoomState::replay(&f.log[..25], root_of, MAX).unwrap();
        assert_eq!(half.head_seq, 24);
        assert_eq!(half.head_hash, f.log[24].hash().unwrap());
    }

    #[test]
    fn replay_refuses_broken_logs() {
        let f = fifty_ops();
        let root_of = |u: &str| Some(f.user(u).root());
        assert_eq!(
            RoomState::replay(&[], root_of, MAX).unwrap_err(),
            MembershipError::Invalid("first change must create the room")
        );
        assert_eq!(
            RoomState::replay(&f.log[1..], root_of, MAX).unwrap_err(),
            MembershipError::Invalid("first change must create the room")
        );
        // Unknown actor root: the relay cannot make us skip the check.
        let unknown_bob = |u: &str| (u != "bob").then(|| f.user(u).root());
        assert_eq!(
            RoomState::replay(&f.log, unknown_bob, MAX).unwrap_err(),
            MembershipError::Crypto(CryptoError::BadChain)
        );
        // A dropped op is a gap, a swapped pair is out of order.
        let mut dropped = f.log.clone();
        dropped.remove(10);
        assert!(
            RoomState::replay(&dropped, root_of, MAX)
                .unwrap_err()
                .is_gap()
        );
        let mut swapped = f.log.clone();
        swapped.swap(10, 11);
        assert!(
            RoomState::replay(&swapped, root_of, MAX)
                .unwrap_err()
                .is_gap()
        );
        let mut doubled = f.log.clone();
        doubled.insert(11, f.log[10].clone());
        assert!(
            RoomState::replay(&doubled, root_of, MAX)
                .unwrap_err()
                .is_replay()
        );
        // A smaller member limit than the log was built under.
        assert_eq!(
            RoomState::replay(&f.log, root_of, 3).unwrap_err(),
            MembershipError::TooManyMembers(3)
        );
    }

    #[test]
    fn room_state_round_trips() {
        let f = fifty_ops();
        let mut states = vec![f.state.clone()];
        let g = Fixture::new(RoomKind::Group);
        states.push(g.state.clone());
        let mut deleted = f.state.clone();
        deleted.deleted = true;
        deleted.members.clear();
        deleted.timers = RoomTimers::default();
        states.push(deleted);
        for s in states {
            let bytes = s.encode().unwrap();
            assert_eq!(bytes[0], 1);
            let decoded = RoomState::decode(&bytes).unwrap();
            assert_eq!(decoded, s);
            assert_eq!(decoded.encode().unwrap(), bytes);
            for n in 0..bytes.len() {
                assert!(RoomState::decode(&bytes[..n]).is_err(), "prefix of {n}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(RoomState::decode(&long).is_err());
            let mut v2 = bytes;
            v2[0] = 2;
            assert!(matches!(
                RoomState::decode(&v2),
                Err(CryptoError::UnsupportedVersion(2))
            ));
        }
    }

    #[test]
    fn room_state_decoder_requires_sorted_unique_members() {
        let mut f = Fixture::new(RoomKind::Room);
        f.state.members.clear();
        f.state.members.insert("aa".into(), Role::Member);
        f.state.members.insert("bb".into(), Role::Moderator);
        let bytes = f.state.encode().unwrap();
        let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat).unwrap();
        let a = find(&bytes, b"\0\0\0\x02aa\0");
        let b = find(&bytes, b"\0\0\0\x02bb\x01");
        assert!(RoomState::decode(&bytes).is_ok());
        let mut dup = bytes.clone();
        dup[a + 4..a + 6].copy_from_slice(b"bb");
        assert!(RoomState::decode(&dup).is_err());
        let mut swapped = bytes.clone();
        swapped[a + 4..a + 6].copy_from_slice(b"bb");
        swapped[b + 4..b + 6].copy_from_slice(b"aa");
        assert!(RoomState::decode(&swapped).is_err());
        let mut bad_role = bytes;
        bad_role[b + 6] = 2;
        assert!(RoomState::decode(&bad_role).is_err());
    }

    #[test]
    fn next_op_follows_the_head() {
        let f = fifty_ops();
        let op = f.state.next_op("bob", &f.bob.cert, 7, OpKind::Leave);
        assert_eq!(op.room_id, f.state.room_id);
        assert_eq!(op.seq, 50);
        assert_eq!(op.prev, f.log[49].hash().unwrap());
        assert_eq!(op.actor, "bob");
        assert_eq!(op.actor_cert, f.bob.cert);
        assert_eq!(op.at_ms, 7);
        assert_eq!(op.kind, OpKind::Leave);
    }

    #[test]
    fn error_classification_and_messages() {
        let replay = MembershipError::OutOfOrder {
            expected: 5,
            got: 3,
        };
        let gap = MembershipError::OutOfOrder {
            expected: 5,
            got: 9,
        };
        assert!(replay.is_replay() && !replay.is_gap());
        assert!(gap.is_gap() && !gap.is_replay());
        for other in [
            MembershipError::BrokenChain,
            MembershipError::WrongRoom,
            MembershipError::Crypto(CryptoError::BadSignature),
        ] {
            assert!(!other.is_replay() && !other.is_gap());
        }
        assert_eq!(gap.to_string(), "out of order: expected change 5, got 9");
        assert_eq!(
            MembershipError::NotModerator("set timers").to_string(),
            "only moderators can set timers"
        );
        assert_eq!(
            MembershipError::TooManyMembers(500).to_string(),
            "a room may have at most 500 members"
        );
        assert_ne!(
            MembershipError::Crypto(CryptoError::Malformed("a")),
            MembershipError::Crypto(CryptoError::Malformed("b"))
        );
        assert_ne!(
            MembershipError::Crypto(CryptoError::BadChain),
            MembershipError::Crypto(CryptoError::BadSignature)
        );
    }

    // ------------------------------------------------------------------ random histories

    const POOL_NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

    static POOL: LazyLock<Vec<User>> =
        LazyLock::new(|| POOL_NAMES.iter().map(|n| User::new(n)).collect());

    fn pool_user(name: &str) -> &'static User {
        POOL.iter().find(|u| u.name == name).unwrap()
    }

    fn random_kind(action: u8, a: usize, b: usize, n: u32) -> OpKind {
        let target = POOL_NAMES[a % POOL_NAMES.len()];
        let other = POOL_NAMES[b % POOL_NAMES.len()];
        match action % 9 {
            0 => invite(&[target]),
            1 => invite(&[target, other]),
            2 => remove(&[target]),
            3 => promote(target),
            4 => demote(target),
            5 => OpKind::Leave,
            6 => edit(&format!("t{n}"), ""),
            7 => timers(Some(n % 100 + 1), n.is_multiple_of(3).then_some(1)),
            _ => OpKind::Delete,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Random changes by random users: accepted ops replay to the same state, refused ones
        /// change nothing, and the invariants (a moderator in every non-empty room, none in a
        /// group, at most `max` members) always hold.
        #[test]
        fn random_histories_replay_consistently(
            group in any::<bool>(),
            max in 2usize..6,
            steps in prop::collection::vec(
                (0usize..5, 0u8..40, 0usize..5, 0usize..5, any::<u32>()),
                1..40,
            ),
        ) {
            let kind = if group { RoomKind::Group } else { RoomKind::Room };
            let alice = pool_user("alice");
            let create = alice.create(kind, &["bob"]);
            let mut state = RoomState::genesis(&create, &alice.root(), max).unwrap();
            let mut log = vec![create];
            for (actor, action, a, b, n) in steps {
                // Weighted towards Delete less often, so histories get long.
                let action = if action % 9 == 8 && n % 4 != 0 { 5 } else { action };
                let user = &POOL[actor];
                let op = user.op(&state, random_kind(action, a, b, n));
                let before = state.clone();
                let checked = state.check(&op, &user.root(), max);
                match state.apply(&op, &user.root(), max) {
                    Ok(change) => {
                        prop_assert_eq!(Ok(change), checked);
                        log.push(op);
                    }
                    Err(e) => {
                        prop_assert_eq!(Err(e), checked);
                        prop_assert_eq!(&state, &before);
                    }
                }
                prop_assert!(state.members.len() <= max);
                match kind {
                    RoomKind::Group => prop_assert_eq!(state.moderators(), 0),
                    RoomKind::Room => {
                        prop_assert!(state.members.is_empty() || state.moderators() > 0);
                    }
                }
            }
            let replayed = RoomState::replay(&log, |u| Some(pool_user(u).root()), max).unwrap();
            prop_assert_eq!(&replayed, &state);
            prop_assert_eq!(RoomState::decode(&state.encode()?).unwrap(), state.clone());
            for op in &log {
                prop_assert_eq!(&SignedOp::decode(&op.encode()?).unwrap(), op);
            }
        }

        #[test]
        fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(op) = SignedOp::decode(&bytes) {
                prop_assert_eq!(op.encode().unwrap(), bytes.clone());
            }
            if let Ok(s) = RoomState::decode(&bytes) {
                prop_assert_eq!(s.encode().unwrap(), bytes.clone());
            }
            let mut v1 = vec![1u8];
            v1.extend_from_slice(&bytes);
            let _ = SignedOp::decode(&v1);
            let _ = RoomState::decode(&v1);
        }
    }
}
