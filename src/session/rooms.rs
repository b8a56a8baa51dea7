//! Rooms and group DMs: the verified membership log, Sender Keys, and room messages.
//!
//! Membership is whatever the signed, hash-chained log says (`crypto::membership`), replayed
//! and verified here; the relay's own member list is only used by the relay to route. Every
//! send first reconciles this device's sender key with the verified member devices: a device
//! that received the key but is no longer a member (removed, left, device gone, root key
//! changed) forces a rotation; devices that are new only get the current chain position, so
//! newcomers read from their join on and removed members read nothing sent after. Each room
//! message carries the sender's view of the log head inside its signed ciphertext, so a member
//! whose relay withholds a change (a dropped removal) notices when the next message arrives.
//!
//! Cache layout (typed tables of the SQLCipher cache, schema version 5, through `Db`): `rooms`
//! the verified `RoomState` of each room; `room_ops` the hash of each accepted change by room
//! and sequence number (to tell a harmless redelivery from a forged or replayed one);
//! `own_sender_keys` our sender key, `sender_key_holders` the devices that hold it;
//! `received_sender_keys` other devices' sender keys by room, device and distribution, with
//! their (authenticated) sender; `room_claimed_heads` a log head a member claimed that the
//! relay did not show us.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt as _;
use prost::Message as _;

use super::engine::Engine;
use super::{Keys, SessionError, SessionEvent};
use crate::client::ClientError;
use crate::client::pairwise::Sealed;
use crate::client::room::{self, DISTRIBUTION_CHUNK, Target};
use crate::crypto::CryptoError;
use crate::crypto::envelope::{MessageId, Payload, PayloadKind, Timers};
use crate::crypto::handshake::Session;
use crate::crypto::identity::RootPublicKey;
use crate::crypto::membership::{
    self, Change, MembershipError, OpKind, Role, RoomKind, RoomState, RoomTimers, SignedOp,
};
use crate::crypto::sender_keys::{ReceivedSenderKey, SenderKeyState};
use crate::protocol::{self, ErrorCode, frame::Body, names};
use crate::store::{Db, MessageKind, MessageRecord, MessageState, MessageTimers, OutboxItem};

/// Room size limit before the relay told us its own.
pub(crate) const DEFAULT_MAX_MEMBERS: usize = 500;

/// A member of a room, for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMember {
    /// Username.
    pub username: String,
    /// Moderator or member.
    pub role: Role,
}

/// What a client shows about a room or group DM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room id (also its conversation id).
    pub room_id: String,
    /// Room (moderated) or group DM.
    pub kind: RoomKind,
    /// Title (group DMs may have none).
    pub title: String,
    /// Description (topic).
    pub description: String,
    /// Members, moderators first, then by name.
    pub members: Vec<RoomMember>,
    /// Our role, if we are a member.
    pub my_role: Option<Role>,
    /// Whether the room was deleted.
    pub deleted: bool,
    /// Timer defaults set by the room.
    pub timers: RoomTimers,
    /// Why this client distrusts the relay's view of the room, if it does.
    pub warning: Option<String>,
}

impl RoomInfo {
    fn from_state(s: &RoomState, me: &str, behind: Option<u64>) -> Self {
        let mut members: Vec<RoomMember> = s
            .members
            .iter()
            .map(|(u, r)| RoomMember {
                username: u.clone(),
                role: *r,
            })
            .collect();
        members.sort_by(|a, b| {
            b.role
                .cmp(&a.role)
                .then_with(|| a.username.cmp(&b.username))
        });
        Self {
            room_id: s.room_id.clone(),
            kind: s.kind,
            title: s.title.clone(),
            description: s.description.clone(),
            members,
            my_role: s.role(me),
            deleted: s.deleted,
            timers: s.timers,
            warning: behind.filter(|h| *h > s.head_seq).map(|h| {
                format!(
                    "a member has seen membership change {h} of this room but the relay has \
                     shown us only up to {}; the relay may be withholding a change",
                    s.head_seq
                )
            }),
        }
    }

    /// The name to show: the title, or the other members for an untitled group DM.
    pub fn display_name(&self, me: &str) -> String {
        if !self.title.is_empty() {
            return self.title.clone();
        }
        let others: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.username.as_str())
            .filter(|u| *u != me)
            .collect();
        if others.is_empty() {
            "(empty group)".into()
        } else {
            others.join(", ")
        }
    }
}

/// Whether a conversation id names a room or group DM.
pub fn is_room(conversation: &str) -> bool {
    names::is_room_id(conversation)
}

pub(crate) fn load_state(db: &Db<'_>, room: &str) -> Result<Option<RoomState>, SessionError> {
    match db.room_state(room)? {
        Some(b) => Ok(Some(RoomState::decode(&b)?)),
        None => Ok(None),
    }
}

fn save_state(db: &Db<'_>, s: &RoomState) -> Result<(), SessionError> {
    db.put_room_state(&s.room_id, &s.encode()?)?;
    Ok(())
}

fn behind(db: &Db<'_>, room: &str) -> Result<Option<u64>, SessionError> {
    Ok(db.room_claimed_head(room)?)
}

/// Whether a member claimed a membership change the relay has not shown us.
pub(crate) fn withheld(db: &Db<'_>, state: &RoomState) -> Result<bool, SessionError> {
    Ok(behind(db, &state.room_id)?.is_some_and(|b| b > state.head_seq))
}

/// The sentence for refusing to send while the relay withholds a change.
pub(crate) const WITHHELD: &str =
    "not sending: the relay is withholding membership changes of this room";

/// Every room in the cache, deleted ones included.
pub(crate) fn all_states(db: &Db<'_>) -> Result<Vec<RoomState>, SessionError> {
    db.room_states()?
        .into_iter()
        .map(|b| Ok(RoomState::decode(&b)?))
        .collect()
}

pub(crate) fn room_info(db: &Db<'_>, me: &str, room: &str) -> Result<RoomInfo, SessionError> {
    let s = load_state(db, room)?
        .ok_or_else(|| SessionError::Usage(format!("unknown room: {room}")))?;
    Ok(RoomInfo::from_state(&s, me, behind(db, room)?))
}

pub(crate) fn list_rooms(db: &Db<'_>, me: &str) -> Result<Vec<RoomInfo>, SessionError> {
    let mut out = Vec::new();
    for s in all_states(db)? {
        let b = behind(db, &s.room_id)?;
        out.push(RoomInfo::from_state(&s, me, b));
    }
    out.sort_by(|a, b| {
        a.title
            .to_lowercase()
            .cmp(&b.title.to_lowercase())
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
    Ok(out)
}

/// Resolves what a user typed (a room id, a unique id prefix of at least 6 characters, or an
/// unambiguous title) among the rooms this account is a member of.
pub(crate) fn resolve(db: &Db<'_>, me: &str, reference: &str) -> Result<String, SessionError> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(SessionError::Usage("no room given".into()));
    }
    let rooms: Vec<RoomState> = all_states(db)?.into_iter().filter(|s| !s.deleted).collect();
    if let Some(s) = rooms.iter().find(|s| s.room_id == reference) {
        return Ok(s.room_id.clone());
    }
    let mine: Vec<&RoomState> = rooms.iter().filter(|s| s.is_member(me)).collect();
    let lower = reference.to_lowercase();
    let by_title: Vec<&RoomState> = mine
        .iter()
        .copied()
        .filter(|s| s.title.to_lowercase() == lower)
        .collect();
    let candidates: Vec<&RoomState> = if by_title.is_empty() && reference.len() >= 6 {
        mine.iter()
            .copied()
            .filter(|s| {
                let hexpart = s.room_id.split(':').nth(1).unwrap_or("");
                hexpart.starts_with(&lower) || s.room_id.starts_with(&lower)
            })
            .collect()
    } else {
        by_title
    };
    match candidates.as_slice() {
        [one] => Ok(one.room_id.clone()),
        [] => Err(SessionError::Usage(format!(
            "no room called {reference:?} (see `cinder room list`)"
        ))),
        many => Err(SessionError::Usage(format!(
            "{reference:?} is ambiguous; it could be: {}",
            many.iter()
                .map(|s| format!("{} ({})", s.room_id, s.title))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn timer_text(t: Option<u32>) -> String {
    t.map_or_else(
        || "off".into(),
        |s| super::timers::format_duration(s.into()),
    )
}

/// The human sentence for one accepted change.
fn describe(change: &Change, op: &SignedOp, state: &RoomState) -> String {
    let actor = &op.op.actor;
    let what = if state.kind == RoomKind::Room {
        "the room"
    } else {
        "the group"
    };
    match change {
        Change::Created => {
            if state.title.is_empty() {
                format!("{actor} created {what}")
            } else {
                format!("{actor} created {what} \u{201c}{}\u{201d}", state.title)
            }
        }
        Change::Invited(users) => format!("{actor} added {}", users.join(", ")),
        Change::Removed(users) => format!("{actor} removed {}", users.join(", ")),
        Change::Promoted(u) => format!("{actor} made {u} a moderator"),
        Change::Demoted(u) => format!("{actor} made {u} a member (no longer a moderator)"),
        Change::Left(u) => format!("{u} left {what}"),
        Change::Edited => format!(
            "{actor} set the title to \u{201c}{}\u{201d} and the topic to \u{201c}{}\u{201d}",
            state.title, state.description
        ),
        Change::TimersSet(t) => format!(
            "{actor} set message timers: expire {}, burn {}",
            timer_text(t.expire_after),
            timer_text(t.burn_after)
        ),
        Change::Deleted => format!("{actor} deleted {what}"),
    }
}

/// A system line in a room's history, recorded at `now` (ms).
fn system_record(
    room: &str,
    id: [u8; 16],
    actor: &str,
    at_ms: u64,
    now: u64,
    text: String,
) -> MessageRecord {
    MessageRecord {
        message_id: id,
        conversation: room.to_owned(),
        outgoing: false,
        sender: actor.to_owned(),
        sender_device: [0u8; 16],
        sent_at_ms: at_ms.min(now),
        received_at_ms: now,
        text,
        state: MessageState::Received,
        kind: MessageKind::System,
        timers: MessageTimers::default(),
    }
}

fn op_record_id(op: &SignedOp) -> Result<[u8; 16], CryptoError> {
    let h = op.hash()?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    Ok(id)
}

/// Records a security warning as a system line at `now` (ms) and returns it.
pub(crate) fn warn(
    db: &Db<'_>,
    room: &str,
    now: u64,
    text: String,
) -> Result<MessageRecord, SessionError> {
    tracing::warn!(room, "{text}");
    let rec = system_record(
        room,
        MessageId::random()?.0,
        "",
        now,
        now,
        format!("\u{26a0} {text}"),
    );
    db.insert_message(&rec)?;
    Ok(rec)
}

/// Applies one verified change to the cached state (which must be at `op.seq - 1`), records
/// it, and forgets what removed members could otherwise keep using.
fn apply_op(
    db: &Db<'_>,
    keys: &Keys,
    state: &mut RoomState,
    op: &SignedOp,
    root: &RootPublicKey,
    now: u64,
) -> Result<Result<Option<MessageRecord>, MembershipError>, SessionError> {
    // The member limit is the relay's to enforce; a client accepts what verified members did.
    let change = match state.apply(op, root, usize::MAX) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    after_change(db, keys, state, op, &change, now).map(Ok)
}

fn after_change(
    db: &Db<'_>,
    keys: &Keys,
    state: &RoomState,
    op: &SignedOp,
    change: &Change,
    now: u64,
) -> Result<Option<MessageRecord>, SessionError> {
    let room = state.room_id.as_str();
    save_state(db, state)?;
    db.put_room_op(room, op.op.seq, &op.hash()?)?;
    let gone: Vec<String> = match change {
        Change::Removed(users) => users.clone(),
        Change::Left(u) => vec![u.clone()],
        _ => Vec::new(),
    };
    // Sender keys of people who left are useless to keep and must not decrypt anything the
    // relay might still inject under their name.
    for user in &gone {
        db.delete_received_sender_keys_of(room, user)?;
    }
    let me_gone = gone.contains(&keys.username);
    if me_gone || matches!(change, Change::Deleted) {
        db.forget_room_keys(room)?;
    }
    if let Change::TimersSet(t) = change {
        db.set_conversation_timers(room, t.expire_after, t.burn_after)?;
    }
    if let Some(b) = behind(db, room)?
        && b <= state.head_seq
    {
        db.clear_room_claimed_head(room)?;
    }
    if matches!(change, Change::Deleted) {
        db.delete_conversation(room)?;
        return Ok(None);
    }
    let mut text = describe(change, op, state);
    if me_gone && op.op.actor != keys.username {
        text = format!("{text} \u{2014} you can no longer read or send messages here");
    }
    let rec = system_record(
        room,
        op_record_id(op)?,
        &op.op.actor,
        op.op.at_ms,
        now,
        text,
    );
    Ok(db.insert_message(&rec)?.then_some(rec))
}

/// Stores a sender key distribution that arrived over an authenticated pairwise session from
/// `user`'s device `device`. A distribution already held is kept (a repeated one must not
/// move the chain under messages in flight).
pub(crate) fn store_distribution(
    db: &Db<'_>,
    user: &str,
    device: [u8; 16],
    conversation: &str,
    bytes: &[u8],
) -> Result<Result<(), String>, SessionError> {
    let (distribution_id, rsk) = match room::accept_distribution(device, conversation, bytes) {
        Ok(x) => x,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if db
        .received_sender_key(conversation, &device, &distribution_id)?
        .is_none()
    {
        db.put_received_sender_key(
            conversation,
            &device,
            &distribution_id,
            user,
            &rsk.to_secret_bytes()?,
        )?;
    }
    Ok(Ok(()))
}

/// The outcome of decrypting a room message.
pub(crate) enum RoomInbound {
    /// Stored; with the log head the sender claimed if it is beyond ours.
    Stored(MessageRecord, Option<u64>),
    Duplicate,
    Undecryptable(String),
    /// The room or the sender's key is not known yet: a live push that overtook older
    /// mailbox items (the room's creation, the key distribution). Nothing was changed.
    Missing(String),
}

/// Decrypts and stores one room message (inside the caller's transaction). The sender is the
/// user whose pairwise session delivered the sender key, never the relay's claim; they must be
/// a member in our verified state.
pub(crate) fn decrypt_room_message(
    db: &Db<'_>,
    d: &protocol::Delivery,
    now: u64,
) -> Result<RoomInbound, SessionError> {
    let bad = |e: ClientError| Ok(RoomInbound::Undecryptable(e.to_string()));
    let room_id = d.room_id.as_str();
    let Some(state) = load_state(db, room_id)? else {
        return Ok(RoomInbound::Missing(
            "a message for a room this device does not know".into(),
        ));
    };
    let msg = match room::parse_message(d) {
        Ok(m) => m,
        Err(e) => return bad(e),
    };
    let Some(stored) =
        db.received_sender_key(room_id, &msg.sender_device.0, &msg.distribution_id)?
    else {
        return Ok(RoomInbound::Missing(
            "no sender key for this message (it was sent before this device joined or after \
             it left)"
                .into(),
        ));
    };
    let user = stored.sender;
    let mut rsk = ReceivedSenderKey::from_secret_bytes(&stored.state)?;
    let meta = match room::decrypt_key(&state, &user, &mut rsk, &msg, &d.body) {
        Ok(m) => m,
        Err(e) => return bad(e),
    };
    // The chain moved: keep it even if the body is bad (that key is spent either way).
    db.put_received_sender_key(
        room_id,
        &msg.sender_device.0,
        &msg.distribution_id,
        &user,
        &rsk.to_secret_bytes()?,
    )?;
    let opened = match room::open_meta(&meta, &state, d, now) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    if opened.expired {
        return Ok(RoomInbound::Duplicate);
    }
    let claimed_ahead = match opened.head {
        room::Head::Ahead(seq) => Some(seq),
        room::Head::Agrees => None,
        room::Head::Differs(seq) => {
            warn(
                db,
                room_id,
                now,
                format!(
                    "{user}'s view of this room's membership differs from ours at change \
                     {seq}; the relay may be showing members different histories"
                ),
            )?;
            None
        }
    };
    let mut message_id = [0u8; 16];
    message_id.copy_from_slice(&d.message_id);
    let record = MessageRecord {
        message_id,
        conversation: room_id.to_owned(),
        outgoing: false,
        sender: user,
        sender_device: msg.sender_device.0,
        sent_at_ms: opened.sent_at_ms,
        received_at_ms: now,
        text: opened.text,
        state: MessageState::Received,
        kind: MessageKind::Text,
        timers: opened.timing.into(),
    };
    if db.insert_message(&record)? {
        Ok(RoomInbound::Stored(record, claimed_ahead))
    } else {
        Ok(RoomInbound::Duplicate)
    }
}

/// Maps a refused membership change to one sentence for the user.
fn op_error(e: MembershipError) -> SessionError {
    match e {
        MembershipError::NotMember(_)
        | MembershipError::NotModerator(_)
        | MembershipError::NotAllowed(_)
        | MembershipError::TooManyMembers(_)
        | MembershipError::Deleted => SessionError::Refused(e.to_string()),
        _ => SessionError::Usage(e.to_string()),
    }
}

/// How many key lookups (`GetUser`, `FetchKeys`) run at once for one room change or send.
const LOOKUP_CONCURRENCY: usize = 8;

fn unknown_user(u: &str, e: SessionError) -> SessionError {
    match e {
        SessionError::Relay {
            code: ErrorCode::UnknownUser,
            ..
        } => SessionError::Refused(format!("no such user: {u}")),
        e => e,
    }
}

impl Engine {
    /// Pins the root keys of `users` (first use), [`LOOKUP_CONCURRENCY`] lookups at a time: a
    /// 500-member room costs a few round trips of latency, not 499.
    async fn pin_roots(&self, users: &[String]) -> Result<(), SessionError> {
        // Owned items: a closure over borrowed ones is not `Send` for every lifetime.
        let mut lookups = futures_util::stream::iter(users.to_vec())
            .map(|u: String| async move { self.root_of(&u).await.map_err(|e| unknown_user(&u, e)) })
            .buffer_unordered(LOOKUP_CONCURRENCY);
        while let Some(r) = lookups.next().await {
            r?;
        }
        Ok(())
    }

    /// Makes sure `user`'s root key is pinned (first use) and returns it.
    pub(crate) async fn root_of(&self, user: &str) -> Result<RootPublicKey, SessionError> {
        let u = user.to_owned();
        if let Some(k) = self.blocking(move |s, _| Ok(s.db().root_key(&u)?)).await? {
            return Ok(RootPublicKey(k));
        }
        let (root, devices) = self.fetch_user(user).await?;
        let u = user.to_owned();
        let clock = self.opts.clock;
        self.blocking(move |s, _| {
            let db = s.db();
            match db.root_key(&u)? {
                Some(k) => Ok(RootPublicKey(k)),
                None => {
                    db.pin_root_key(&u, &root, clock.now_secs())?;
                    db.set_devices(&u, &devices)?;
                    Ok(RootPublicKey(root))
                }
            }
        })
        .await
        .inspect(|_| self.bump_devices_epoch())
    }

    async fn submit_op(&self, op: &SignedOp) -> Result<(), SessionError> {
        self.ensure_connected().await?;
        let conn = self.conn()?;
        match conn
            .request(Body::SubmitRoomOp(protocol::SubmitRoomOp {
                room_id: op.op.room_id.clone(),
                op: op.encode()?,
            }))
            .await?
        {
            Body::RoomOpOk(_) => Ok(()),
            _ => Err(SessionError::Protocol(
                "unexpected answer to SubmitRoomOp".into(),
            )),
        }
    }

    pub(crate) fn max_members(&self) -> usize {
        self.policy()
            .as_ref()
            .map_or(DEFAULT_MAX_MEMBERS, |p| p.max_room_members as usize)
            .max(2)
    }

    /// Creates a room or group DM with `members` (not including us) and returns it.
    pub(crate) async fn create_room(
        &self,
        kind: RoomKind,
        title: String,
        description: String,
        members: Vec<String>,
    ) -> Result<RoomInfo, SessionError> {
        let mut canon = Vec::new();
        for m in members {
            let u = names::canonical_username(&m)
                .ok_or_else(|| SessionError::Usage(format!("not a valid username: {m:?}")))?;
            if u != self.keys.username && !canon.contains(&u) {
                canon.push(u);
            }
        }
        self.ensure_connected().await?;
        self.pin_roots(&canon).await?;
        let op = membership::MembershipOp {
            room_id: membership::new_room_id(kind)?,
            seq: 0,
            prev: [0u8; 32],
            actor: self.keys.username.clone(),
            actor_cert: self.keys.cert.clone(),
            at_ms: self.opts.clock.now_ms(),
            kind: OpKind::Create {
                kind,
                title,
                description,
                members: canon,
            },
        };
        let signed = SignedOp::sign(op, &self.keys.device.signing)?;
        let root = RootPublicKey(self.keys.root);
        let state = RoomState::genesis(&signed, &root, self.max_members()).map_err(op_error)?;
        self.submit_op(&signed).await?;
        let clock = self.opts.clock;
        let (info, rec) = self
            .blocking(move |s, keys| {
                s.transaction(|db| -> Result<_, SessionError> {
                    let now = clock.now_ms();
                    let rec = after_change(db, keys, &state, &signed, &Change::Created, now)?;
                    Ok((RoomInfo::from_state(&state, &keys.username, None), rec))
                })
            })
            .await?;
        if let Some(r) = rec {
            self.emit(SessionEvent::Message(r));
        }
        self.emit(SessionEvent::RoomChanged {
            room_id: info.room_id.clone(),
        });
        Ok(info)
    }

    /// Signs and submits one change of an existing room, after bringing our log up to date.
    pub(crate) async fn change_room(
        &self,
        room: &str,
        make: impl Fn(&RoomState) -> OpKind,
    ) -> Result<RoomInfo, SessionError> {
        self.ensure_connected().await?;
        for _ in 0..3 {
            self.sync_room(room).await?;
            let r = room.to_owned();
            let state = self
                .blocking(move |s, _| load_state(&s.db(), &r))
                .await?
                .ok_or_else(|| SessionError::Usage(format!("unknown room: {room}")))?;
            if state.deleted {
                return Err(SessionError::Usage("this room was deleted".into()));
            }
            let kind = make(&state);
            if let OpKind::Invite { users } = &kind {
                self.pin_roots(users).await?;
            }
            let now = self.opts.clock.now_ms();
            let op = state.next_op(&self.keys.username, &self.keys.cert, now, kind);
            let signed = SignedOp::sign(op, &self.keys.device.signing)?;
            let root = RootPublicKey(self.keys.root);
            // Checked locally first so the user gets the precise reason without a round trip.
            state
                .check(&signed, &root, self.max_members())
                .map_err(op_error)?;
            match self.submit_op(&signed).await {
                Ok(()) => {}
                Err(SessionError::Relay {
                    code: ErrorCode::RoomChanged,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
            let clock = self.opts.clock;
            let (rec, info) = self
                .blocking(move |s, keys| {
                    s.transaction(|db| -> Result<_, SessionError> {
                        let mut state = load_state(db, &signed.op.room_id)?.ok_or_else(|| {
                            SessionError::Protocol("room vanished from the cache".into())
                        })?;
                        let rec = apply_op(db, keys, &mut state, &signed, &root, clock.now_ms())?
                            .map_err(op_error)?;
                        Ok((rec, RoomInfo::from_state(&state, &keys.username, None)))
                    })
                })
                .await?;
            if let Some(r) = rec {
                self.emit(SessionEvent::Message(r));
            }
            self.emit(SessionEvent::RoomChanged {
                room_id: room.to_owned(),
            });
            return Ok(info);
        }
        Err(SessionError::Protocol(
            "the room keeps changing; try again".into(),
        ))
    }

    /// Resolves a room reference and applies one requested change.
    pub(crate) async fn room_request(
        &self,
        reference: &str,
        request: super::RoomRequest,
    ) -> Result<RoomInfo, SessionError> {
        use super::RoomRequest as R;
        let reference = reference.to_owned();
        let room = self
            .blocking(move |s, keys| resolve(&s.db(), &keys.username, &reference))
            .await?;
        let canon = |users: Vec<String>| -> Result<Vec<String>, SessionError> {
            let mut out: Vec<String> = Vec::new();
            for u in users {
                let c = names::canonical_username(&u)
                    .ok_or_else(|| SessionError::Usage(format!("not a valid username: {u:?}")))?;
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            if out.is_empty() {
                return Err(SessionError::Usage("no users given".into()));
            }
            Ok(out)
        };
        match request {
            R::Invite(users) => {
                let users = canon(users)?;
                self.change_room(&room, move |_| OpKind::Invite {
                    users: users.clone(),
                })
                .await
            }
            R::Remove(users) => {
                let users = canon(users)?;
                self.change_room(&room, move |_| OpKind::Remove {
                    users: users.clone(),
                })
                .await
            }
            R::Promote(u) => {
                let user = canon(vec![u])?.remove(0);
                self.change_room(&room, move |_| OpKind::Promote { user: user.clone() })
                    .await
            }
            R::Demote(u) => {
                let user = canon(vec![u])?.remove(0);
                self.change_room(&room, move |_| OpKind::Demote { user: user.clone() })
                    .await
            }
            R::Leave => self.change_room(&room, |_| OpKind::Leave).await,
            R::Edit { title, description } => {
                self.change_room(&room, move |s| OpKind::Edit {
                    title: title.clone().unwrap_or_else(|| s.title.clone()),
                    description: description.clone().unwrap_or_else(|| s.description.clone()),
                })
                .await
            }
            R::Timers(timers) => {
                self.change_room(&room, move |_| OpKind::SetTimers { timers })
                    .await
            }
            R::Delete => self.change_room(&room, |_| OpKind::Delete).await,
        }
    }

    /// Fetches the room's log from the relay past our head and applies it. Returns whether
    /// our head moved.
    pub(crate) async fn sync_room(&self, room: &str) -> Result<bool, SessionError> {
        let r = room.to_owned();
        let known = self.blocking(move |s, _| load_state(&s.db(), &r)).await?;
        let mut from = known.as_ref().map_or(0, |s| s.head_seq + 1);
        let mut ops = Vec::new();
        loop {
            let conn = self.conn()?;
            let answer = conn
                .request(Body::GetRoomLog(protocol::GetRoomLog {
                    room_id: room.to_owned(),
                    from_seq: from,
                }))
                .await;
            let log = match answer {
                Ok(Body::RoomLog(l)) => l,
                Ok(_) => {
                    return Err(SessionError::Protocol(
                        "unexpected answer to GetRoomLog".into(),
                    ));
                }
                // Removed or deleted: the relay no longer shows us the log.
                Err(SessionError::Relay {
                    code: ErrorCode::UnknownRoom,
                    ..
                }) => break,
                Err(e) => return Err(e),
            };
            let n = log.ops.len() as u64;
            ops.extend(log.ops);
            if !log.more || n == 0 {
                break;
            }
            from += n;
        }
        if ops.is_empty() {
            return Ok(false);
        }
        let mut decoded = Vec::with_capacity(ops.len());
        for b in &ops {
            match SignedOp::decode(b) {
                Ok(op) => decoded.push(op),
                Err(e) => {
                    let text = format!("the relay sent a malformed membership change: {e}");
                    let r = room.to_owned();
                    let clock = self.opts.clock;
                    let rec = self
                        .blocking(move |s, _| warn(&s.db(), &r, clock.now_ms(), text))
                        .await?;
                    self.emit(SessionEvent::Message(rec));
                    return Ok(false);
                }
            }
        }
        let mut roots = BTreeMap::new();
        for op in &decoded {
            if !roots.contains_key(&op.op.actor) {
                let root = self.root_of(&op.op.actor).await?;
                roots.insert(op.op.actor.clone(), root);
            }
        }
        self.apply_ops(room, decoded, roots).await
    }

    async fn apply_ops(
        &self,
        room: &str,
        ops: Vec<SignedOp>,
        roots: BTreeMap<String, RootPublicKey>,
    ) -> Result<bool, SessionError> {
        let r = room.to_owned();
        let clock = self.opts.clock;
        let (records, moved) = self
            .blocking(move |s, keys| {
                s.transaction(|db| -> Result<_, SessionError> {
                    let now = clock.now_ms();
                    let mut records = Vec::new();
                    let mut state = load_state(db, &r)?;
                    let start = state.as_ref().map(|s| s.head_seq);
                    for op in &ops {
                        if op.op.room_id != r {
                            records.push(warn(
                                db,
                                &r,
                                now,
                                "the relay sent a membership change of another room".into(),
                            )?);
                            break;
                        }
                        let Some(root) = roots.get(&op.op.actor) else {
                            break;
                        };
                        match &mut state {
                            None => match RoomState::genesis(op, root, usize::MAX) {
                                Ok(s) => {
                                    records.extend(after_change(
                                        db,
                                        keys,
                                        &s,
                                        op,
                                        &Change::Created,
                                        now,
                                    )?);
                                    state = Some(s);
                                }
                                Err(e) => {
                                    records.push(warn(
                                        db,
                                        &r,
                                        now,
                                        format!("rejected the room's first change: {e}"),
                                    )?);
                                    break;
                                }
                            },
                            Some(st) => {
                                if op.op.seq <= st.head_seq {
                                    // Already applied: harmless only if it is the same change.
                                    let ours = db.room_op_hash(&r, op.op.seq)?;
                                    if ours != Some(op.hash()?) {
                                        records.push(warn(
                                            db,
                                            &r,
                                            now,
                                            format!(
                                                "rejected a conflicting copy of membership \
                                                 change {} (replayed or forged by the relay)",
                                                op.op.seq
                                            ),
                                        )?);
                                    }
                                    continue;
                                }
                                match apply_op(db, keys, st, op, root, now)? {
                                    Ok(rec) => records.extend(rec),
                                    Err(e) => {
                                        records.push(warn(
                                            db,
                                            &r,
                                            now,
                                            format!("rejected a membership change: {e}"),
                                        )?);
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    let end = state.as_ref().map(|s| s.head_seq);
                    Ok((records, end != start))
                })
            })
            .await?;
        for r in records {
            self.emit(SessionEvent::Message(r));
        }
        if moved {
            self.emit(SessionEvent::RoomChanged {
                room_id: room.to_owned(),
            });
        }
        Ok(moved)
    }

    /// Handles a `RoomOp` delivery: apply it if it is the next change, fill a gap from the
    /// relay's log, and flag anything that does not fit.
    pub(crate) async fn process_room_op(&self, d: &protocol::Delivery) -> Result<(), SessionError> {
        let room = d.room_id.clone();
        if !is_room(&room) {
            return Ok(());
        }
        let op = match SignedOp::decode(&d.payload) {
            Ok(op) => op,
            Err(e) => {
                let text = format!("rejected a malformed membership change: {e}");
                let clock = self.opts.clock;
                let rec = self
                    .blocking(move |s, _| warn(&s.db(), &room, clock.now_ms(), text))
                    .await?;
                self.emit(SessionEvent::Message(rec));
                return Ok(());
            }
        };
        let r = room.clone();
        let head = self
            .blocking(move |s, _| Ok(load_state(&s.db(), &r)?.map(|s| s.head_seq)))
            .await?;
        let next = head.map_or(0, |h| h + 1);
        if op.op.seq > next && self.is_connected() {
            // A gap (we were offline for part of the log, or we were just invited): the
            // relay's log fills it, and must contain this change.
            return self.catch_up_room(&room, op.op.seq).await;
        }
        let root = match self.root_of(&op.op.actor).await {
            Ok(r) => r,
            Err(SessionError::Relay { .. }) => {
                let text = format!(
                    "rejected a membership change by unknown user {}",
                    op.op.actor
                );
                let clock = self.opts.clock;
                let rec = self
                    .blocking(move |s, _| warn(&s.db(), &room, clock.now_ms(), text))
                    .await?;
                self.emit(SessionEvent::Message(rec));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut roots = BTreeMap::new();
        roots.insert(op.op.actor.clone(), root);
        self.apply_ops(&room, vec![op], roots).await?;
        Ok(())
    }

    /// Brings the room's log up to `seq` from the relay, and flags the relay if it cannot.
    pub(crate) async fn catch_up_room(&self, room: &str, seq: u64) -> Result<(), SessionError> {
        self.sync_room(room).await?;
        let r = room.to_owned();
        let reached = self
            .blocking(move |s, _| Ok(load_state(&s.db(), &r)?.map(|s| s.head_seq)))
            .await?;
        if reached.is_none_or(|h| h < seq) {
            self.note_behind(room, seq).await?;
        }
        Ok(())
    }

    /// Remembers that a member claimed a log head we have not seen, and warns once.
    pub(crate) async fn note_behind(&self, room: &str, seq: u64) -> Result<(), SessionError> {
        let r = room.to_owned();
        let clock = self.opts.clock;
        let rec = self
            .blocking(move |s, _| {
                let db = s.db();
                if behind(&db, &r)?.is_some_and(|o| o >= seq) {
                    return Ok(None);
                }
                db.set_room_claimed_head(&r, seq)?;
                let head = load_state(&db, &r)?.map_or(0, |s| s.head_seq);
                Ok(Some(warn(
                    &db,
                    &r,
                    clock.now_ms(),
                    format!(
                        "the relay is withholding membership changes of this room (a member \
                         is at change {seq}, the relay showed us {head}); sending here is \
                         paused until it catches up"
                    ),
                )?))
            })
            .await?;
        if let Some(rec) = rec {
            self.emit(SessionEvent::Message(rec));
            self.emit(SessionEvent::RoomChanged {
                room_id: room.to_owned(),
            });
        }
        Ok(())
    }

    /// The verified member devices our sender key must reach (every other member's devices
    /// and our own other devices).
    async fn room_targets(&self, state: &RoomState) -> Result<BTreeSet<Target>, SessionError> {
        let users: Vec<String> = state.members.keys().cloned().collect();
        // One cache read for every member (a 500-member room must not cost 500 round trips
        // to the blocking pool per send); only members we know nothing about go to the relay.
        let known: Vec<(String, bool, Vec<[u8; 16]>)> = self
            .blocking(move |s, _| {
                let db = s.db();
                users
                    .into_iter()
                    .map(|u| {
                        let pinned = db.root_key(&u)?.is_some();
                        let devices = db.devices(&u)?;
                        Ok((u, pinned, devices))
                    })
                    .collect()
            })
            .await?;
        let mut targets = BTreeSet::new();
        for (u, pinned, mut devices) in known {
            if !pinned || devices.is_empty() {
                devices = self.learn_user_devices(&u).await?;
            }
            for d in devices {
                if u == self.keys.username && d == self.keys.device_id {
                    continue;
                }
                targets.insert((u.clone(), d));
            }
        }
        Ok(targets)
    }

    /// Makes our sender key for `room` current: rotates it when a device that holds it is no
    /// longer a member device (or age or usage demand it), and distributes it to member devices
    /// that lack it.
    async fn prepare_sender_key(&self, state: &RoomState) -> Result<(), SessionError> {
        let room = state.room_id.clone();
        if self.room_key_checked(&room) == Some((state.head_seq, self.devices_epoch())) {
            // Same members, same devices as at the last reconciliation: only age and usage
            // can call for a new key, and checking them is O(1).
            let r = room.clone();
            let clock = self.opts.clock;
            let fresh = self
                .blocking(move |s, _| {
                    Ok(match s.db().own_sender_key(&r)? {
                        Some(b) => SenderKeyState::from_secret_bytes(&b)?
                            .rotation_due(clock.now_secs())
                            .is_none(),
                        None => false,
                    })
                })
                .await?;
            if fresh {
                return Ok(());
            }
        }
        let epoch = self.devices_epoch();
        let targets = self.room_targets(state).await?;
        let r = room.clone();
        let t = targets.clone();
        let clock = self.opts.clock;
        let missing: BTreeSet<Target> = self
            .blocking(move |s, keys| {
                s.transaction(|db| -> Result<_, SessionError> {
                    let now = clock.now_secs();
                    let own = match db.own_sender_key(&r)? {
                        Some(b) => Some(SenderKeyState::from_secret_bytes(&b)?),
                        None => None,
                    };
                    let holders: BTreeSet<Target> =
                        db.sender_key_holders(&r)?.into_iter().collect();
                    let decided = room::reconcile(own.as_ref(), &holders, &t, now);
                    if let Some(why) = &decided.rotate {
                        tracing::debug!(room = %r, ?why, "new sender key");
                        let fresh = room::new_sender_key(&r, keys.device_id, now)?;
                        db.put_own_sender_key(&r, &fresh.to_secret_bytes()?)?;
                        db.clear_sender_key_holders(&r)?;
                    }
                    Ok(decided.missing)
                })
            })
            .await?;
        if missing.is_empty() {
            self.set_room_key_checked(room, (state.head_seq, epoch));
            return Ok(());
        }
        // The relay wants every device of an addressed user covered, so a user with any new
        // device gets the distribution on all of them (a repeat is ignored by the receiver).
        let users: BTreeSet<String> = missing.iter().map(|(u, _)| u.clone()).collect();
        // Sessions with every missing device first, several users at a time (key fetches are
        // round trips); the loop below then finds them in place.
        {
            let work: Vec<(String, Vec<[u8; 16]>)> = users
                .iter()
                .map(|u| {
                    let ids = targets
                        .iter()
                        .filter(|(x, _)| x == u)
                        .map(|(_, d)| *d)
                        .collect();
                    (u.clone(), ids)
                })
                .collect();
            let mut fetches = futures_util::stream::iter(work)
                .map(|(u, ids): (String, Vec<[u8; 16]>)| async move {
                    self.ensure_sessions_pub(&u, &ids).await
                })
                .buffer_unordered(LOOKUP_CONCURRENCY);
            while let Some(r) = fetches.next().await {
                r?;
            }
        }
        let mut batch: Vec<Target> = Vec::new();
        for u in users {
            let devs: Vec<Target> = targets.iter().filter(|(x, _)| *x == u).cloned().collect();
            let ids: Vec<[u8; 16]> = devs.iter().map(|(_, d)| *d).collect();
            self.ensure_sessions_pub(&u, &ids).await?;
            batch.extend(devs);
            if batch.len() >= DISTRIBUTION_CHUNK {
                self.distribute(&room, std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.distribute(&room, batch).await?;
        }
        // Learning devices during this call bumped the epoch; the next send re-checks once.
        self.set_room_key_checked(room, (state.head_seq, epoch));
        Ok(())
    }

    /// Sends our current sender key to `targets` over the pairwise sessions (one body, one
    /// small key entry per device) and records them as holding it.
    async fn distribute(&self, room: &str, targets: Vec<Target>) -> Result<(), SessionError> {
        let mut targets = targets;
        for _ in 0..4 {
            let r = room.to_owned();
            let t = targets.clone();
            let clock = self.opts.clock;
            let request = self
                .blocking(move |s, _| {
                    s.transaction(|db| -> Result<_, SessionError> {
                        let own = db
                            .own_sender_key(&r)?
                            .ok_or_else(|| SessionError::Protocol("no sender key".into()))?;
                        let own = SenderKeyState::from_secret_bytes(&own)?;
                        let mut sealed =
                            Sealed::new(&room::distribution(&own, &r, clock.now_ms())?)?;
                        for (user, dev) in &t {
                            let bytes = db.session(user, dev)?.ok_or_else(|| {
                                SessionError::Protocol(format!(
                                    "no session with a device of {user}"
                                ))
                            })?;
                            let mut session = Session::from_secret_bytes(&bytes)?;
                            sealed.add(user, &mut session)?;
                            db.put_session(user, dev, &session.to_secret_bytes()?)?;
                        }
                        Ok(sealed.into_send(0))
                    })
                })
                .await?;
            let conn = self.conn()?;
            match conn.request(Body::Send(request)).await {
                Ok(Body::SendOk(_)) => {
                    let r = room.to_owned();
                    self.blocking(move |s, _| {
                        s.transaction(|db| -> Result<_, SessionError> {
                            db.add_sender_key_holders(&r, &targets)?;
                            Ok(())
                        })
                    })
                    .await?;
                    return Ok(());
                }
                Ok(_) => return Err(SessionError::Protocol("unexpected answer to Send".into())),
                Err(SessionError::Relay {
                    code: ErrorCode::DevicesChanged,
                    stale,
                    ..
                }) => {
                    // Learn the devices the relay says exist; only devices under a verified
                    // certificate ever get a session (ensure_sessions checks the chain).
                    for (user, devices) in self.learn_stale_devices(&stale).await? {
                        let mine: Vec<[u8; 16]> = devices
                            .into_iter()
                            .filter(|d| !(user == self.keys.username && *d == self.keys.device_id))
                            .collect();
                        self.ensure_sessions_pub(&user, &mine).await?;
                        targets.retain(|(x, _)| *x != user);
                        targets.extend(mine.into_iter().map(|d| (user.clone(), d)));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(SessionError::Protocol(
            "member devices keep changing; try again".into(),
        ))
    }

    /// Delivers one queued room message: reconcile the sender key, encrypt once, send once.
    /// Returns the relay's receive time.
    pub(crate) async fn deliver_room(&self, item: &OutboxItem) -> Result<u64, SessionError> {
        let room = item.conversation.clone();
        let mut request = item.request.clone();
        for _ in 0..5 {
            let bytes = match request.take() {
                Some(r) => r,
                None => {
                    let r = room.clone();
                    let (state, behind_at) = self
                        .blocking(move |s, _| {
                            let db = s.db();
                            Ok((load_state(&db, &r)?, behind(&db, &r)?))
                        })
                        .await?;
                    let state = state
                        .ok_or_else(|| SessionError::Usage(format!("unknown room: {room}")))?;
                    if state.deleted {
                        return Err(SessionError::Usage("this room was deleted".into()));
                    }
                    if !state.is_member(&self.keys.username) {
                        return Err(SessionError::Usage(
                            "you are not a member of this room".into(),
                        ));
                    }
                    if behind_at.is_some_and(|b| b > state.head_seq) {
                        return Err(SessionError::Refused(WITHHELD.into()));
                    }
                    self.prepare_sender_key(&state).await?;
                    self.encrypt_room_item(item, &state).await?
                }
            };
            let send = protocol::RoomSend::decode(bytes.as_slice())
                .map_err(|e| SessionError::Protocol(format!("stored request is corrupt: {e}")))?;
            let conn = self.conn()?;
            match conn.request(Body::RoomSend(send)).await {
                Ok(Body::SendOk(ok)) => return Ok(ok.server_ts_ms),
                Ok(_) => {
                    return Err(SessionError::Protocol(
                        "unexpected answer to RoomSend".into(),
                    ));
                }
                Err(SessionError::Relay {
                    code: ErrorCode::RoomChanged,
                    ..
                }) => {
                    // Our view is behind: catch up, then re-encrypt under the key the new
                    // membership calls for. The refused ciphertext was never stored.
                    if !self.sync_room(&room).await? {
                        return Err(SessionError::Usage(
                            "not sending: the relay says this room changed but does not show \
                             the change"
                                .into(),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(SessionError::Protocol(
            "the room keeps changing; try again".into(),
        ))
    }

    async fn encrypt_room_item(
        &self,
        item: &OutboxItem,
        state: &RoomState,
    ) -> Result<Vec<u8>, SessionError> {
        let id = item.id;
        let message_id = item.message_id;
        let conversation = item.conversation.clone();
        let text = item.text.clone();
        let sent_at = item.created_at_ms;
        let timers = Timers {
            expire_after: item.timers.expire_after_s,
            burn_after: item.timers.burn_after_s,
        };
        let state = state.clone();
        self.blocking(move |s, _| {
            s.transaction(|db| -> Result<_, SessionError> {
                let own = db
                    .own_sender_key(&conversation)?
                    .ok_or_else(|| SessionError::Protocol("no sender key".into()))?;
                let mut own = SenderKeyState::from_secret_bytes(&own)?;
                let sealed = room::seal_message(
                    &mut own,
                    &state,
                    &Payload {
                        message_id: MessageId(message_id),
                        sent_at_ms: sent_at,
                        conversation: conversation.clone().into_bytes(),
                        kind: PayloadKind::Text(text),
                        timers,
                        reply_to: None,
                    },
                )?;
                db.put_own_sender_key(&conversation, &own.to_secret_bytes()?)?;
                let request = sealed.request.encode_to_vec();
                db.outbox_set_request(id, &request, &sealed.package)?;
                Ok(request)
            })
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `protocol` may not import `crypto`, so `names::is_room_id` repeats the grammar of
    /// `membership::room_kind_of`; this keeps the two in step.
    #[test]
    fn conversation_ids_and_the_membership_log_agree_on_room_ids() {
        let room = membership::new_room_id(RoomKind::Room).unwrap();
        let group = membership::new_room_id(RoomKind::Group).unwrap();
        let samples = [
            room.as_str(),
            group.as_str(),
            &room[..room.len() - 1],
            &format!("{group}0"),
            &room.to_uppercase(),
            "room:",
            "dm:alice:bob",
            "alice",
        ];
        for s in samples {
            assert_eq!(is_room(s), membership::room_kind_of(s).is_some(), "{s:?}");
            let id = names::ConversationId::parse(s);
            assert_eq!(
                id.as_ref().is_some_and(|c| c.is_room()),
                is_room(s),
                "{s:?}"
            );
            if let Some(id) = id {
                assert_eq!(id.to_string(), s);
            }
        }
    }
}
