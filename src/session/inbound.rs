//! Inbound: decrypting deliveries and storing them before acknowledging.
//!
//! Everything a delivery changes — the ratchet, the prekeys (a new session consumes one-time
//! keys), the message, the relay's sequence number — is committed in one transaction, and only
//! then acknowledged. A crash before the commit means the relay delivers again and we decrypt
//! again from the old state; a crash after it means the redelivery is recognised by its sequence
//! number and only acknowledged. A delivery that fails to authenticate is recorded as
//! undecryptable and acknowledged, so one bad message never blocks the ones behind it.

use super::engine::Engine;
use super::outbound::{load_prekeys, save_prekeys};
use super::{Inbound, Keys, SessionError, SessionEvent, rooms};
use crate::client::{ClientError, pairwise, receipts};
use crate::crypto::CryptoError;
use crate::crypto::envelope::MessageId;
use crate::crypto::handshake::{PairwiseMessage, Session};
use crate::crypto::identity::RootPublicKey;
use crate::protocol::{self, DeliveryKind, frame::Body, names};
use crate::store::{Db, MessageKind, MessageRecord, MessageState, Store};

/// Largest page of mailbox items fetched at once.
const FETCH_PAGE: u32 = 200;

enum Outcome {
    Stored(MessageRecord),
    Duplicate,
    Undecryptable(String),
    /// A read receipt (or our other device's display) changed these messages.
    Receipts(Vec<ReceiptEffect>),
    /// Handled without anything to show (a sender key, an already expired message).
    Quiet,
}

/// What a receipt did to one message.
#[derive(Clone, Debug)]
pub(crate) struct ReceiptEffect {
    pub(crate) message_id: [u8; 16],
    pub(crate) conversation: String,
    pub(crate) read: bool,
    pub(crate) timers: Option<crate::store::MessageTimers>,
}

/// Applies a read receipt from `user` (a peer who read our messages, or our own other device
/// that displayed messages we received) inside the caller's transaction; the rule is
/// [`receipts::effect`].
fn apply_receipt(
    db: &Db<'_>,
    keys: &Keys,
    user: &str,
    conversation: &str,
    ids: &[MessageId],
    at_ms: u64,
    show_read: bool,
) -> Result<Vec<ReceiptEffect>, SessionError> {
    let mut out = Vec::new();
    for id in ids.iter().take(10_000) {
        let Some(m) = db.message(&id.0)? else {
            continue;
        };
        let named = receipts::Named {
            conversation: &m.conversation,
            outgoing: m.outgoing,
            awaiting_read: matches!(m.state, MessageState::Sent | MessageState::Delivered),
            burn_after_s: m.timers.burn_after_s,
        };
        let mut member = Ok(false);
        let applies = receipts::applies(conversation, &named, || {
            member = rooms::load_state(db, &m.conversation)
                .map(|s| s.is_some_and(|s| s.is_member(user) || user == keys.username));
            matches!(member, Ok(true))
        });
        member?;
        if !applies {
            continue;
        }
        let mut effect = ReceiptEffect {
            message_id: id.0,
            conversation: m.conversation.clone(),
            read: false,
            timers: None,
        };
        match receipts::effect(&keys.username, user, &named, at_ms, show_read) {
            receipts::Effect::Nothing => {}
            receipts::Effect::Displayed(at) => {
                if db.mark_displayed(&id.0, at)?.is_some() {
                    db.mark_receipts_sent(&[id.0])?;
                    effect.timers = db.message(&id.0)?.map(|m| m.timers);
                }
            }
            receipts::Effect::Read {
                mark_read,
                burn_at_ms,
            } => {
                if mark_read {
                    db.set_message_state(&id.0, MessageState::Read)?;
                    effect.read = true;
                }
                if let Some(at) = burn_at_ms {
                    db.set_burn_at(&id.0, at)?;
                    effect.timers = db.message(&id.0)?.map(|m| m.timers);
                }
            }
        }
        if effect.read || effect.timers.is_some() {
            out.push(effect);
        }
    }
    Ok(out)
}

/// Decrypts, opens and stores one pairwise delivery inside the caller's transaction: the
/// client core decides ([`pairwise::decrypt`], [`pairwise::answer`], [`pairwise::open_body`],
/// [`pairwise::classify`]), this function loads and persists what it names.
fn decrypt_into(
    db: &Db<'_>,
    keys: &Keys,
    d: &protocol::Delivery,
    sender_device: [u8; 16],
    now: u64,
    show_read: bool,
) -> Result<Outcome, SessionError> {
    let user = d.sender_user.as_str();
    let crypto = |e: CryptoError| -> Result<Outcome, SessionError> {
        Ok(Outcome::Undecryptable(e.to_string()))
    };
    let msg = match PairwiseMessage::decode(&d.payload) {
        Ok(m) => m,
        Err(e) => return crypto(e),
    };
    let me = pairwise::Me {
        username: &keys.username,
        keys: &keys.device,
        cert: &keys.cert,
    };
    let existing = db.session(user, &sender_device)?;
    let previous = db.previous_session(user, &sender_device)?;
    let mut current = existing
        .as_ref()
        .map(|b| Session::from_secret_bytes(b))
        .transpose()?;
    let mut replaced = previous
        .as_ref()
        .map(|b| Session::from_secret_bytes(b))
        .transpose()?;
    // The session the message moved, and whether the current one steps down to "previous".
    let (session, plaintext, demote) =
        match pairwise::decrypt(&msg, current.as_mut(), replaced.as_mut(), now / 1000) {
            pairwise::Opened::Current(pt) => (current, pt, false),
            pairwise::Opened::Previous(pt) => (replaced, pt, true),
            pairwise::Opened::Rejected(e) => return crypto(e),
            pairwise::Opened::Handshake(init) => {
                let root = db.root_key(user)?.map(RootPublicKey);
                let mut prekeys = load_prekeys(db)?;
                match pairwise::answer(
                    me,
                    &mut prekeys,
                    root.as_ref(),
                    user,
                    sender_device,
                    init,
                    now / 1000,
                ) {
                    Ok((s, pt)) => {
                        save_prekeys(db, &prekeys)?;
                        (Some(s), pt, true)
                    }
                    Err(e) => return crypto(e),
                }
            }
        };
    if demote && let Some(old) = &existing {
        db.put_previous_session(user, &sender_device, old)?;
    }
    // The ratchet step authenticated: keep it even if the body turns out to be bad, since
    // that message key is spent either way.
    if let Some(s) = &session {
        db.put_session(user, &sender_device, &s.to_secret_bytes()?)?;
    }
    let payload = match pairwise::open_body(&plaintext, d) {
        Ok(p) => p,
        Err(e) => return crypto(e),
    };
    let message_id = payload.message_id.0;
    let content = match pairwise::classify(&keys.username, user, payload, d.server_ts_ms, now) {
        Ok(c) => c,
        Err(ClientError::Crypto(e)) => return crypto(e),
        Err(ClientError::Rejected(e)) => return Ok(Outcome::Undecryptable(e)),
    };
    match content {
        pairwise::Content::Distribution { room, bytes } => {
            match rooms::store_distribution(db, user, sender_device, &room, &bytes)? {
                Ok(()) => Ok(Outcome::Quiet),
                Err(e) => Ok(Outcome::Undecryptable(e)),
            }
        }
        pairwise::Content::Expired => Ok(Outcome::Quiet),
        pairwise::Content::Receipt {
            conversation,
            at_ms,
            message_ids,
        } => {
            let mut effects = Vec::new();
            for id in &message_ids {
                let conv = match &conversation {
                    Some(c) => c.clone(),
                    None => match db.message(&id.0)? {
                        Some(m) => m.conversation,
                        None => continue,
                    },
                };
                effects.extend(apply_receipt(
                    db,
                    keys,
                    user,
                    &conv,
                    &[*id],
                    at_ms,
                    show_read,
                )?);
            }
            Ok(Outcome::Receipts(effects))
        }
        pairwise::Content::Text {
            conversation,
            text,
            sent_at_ms,
            timing,
        } => {
            let record = MessageRecord {
                message_id,
                conversation,
                outgoing: false,
                sender: user.to_owned(),
                sender_device,
                sent_at_ms,
                received_at_ms: now,
                text,
                state: MessageState::Received,
                kind: MessageKind::Text,
                timers: timing.into(),
            };
            if db.insert_message(&record)? {
                Ok(Outcome::Stored(record))
            } else {
                Ok(Outcome::Duplicate)
            }
        }
    }
}

/// What processing one delivery produced, beyond what the command line sees.
#[derive(Default)]
struct Effects {
    receipts: Vec<ReceiptEffect>,
    /// A room member claimed a membership head beyond ours: (room, head).
    room_ahead: Option<(String, u64)>,
    /// A live push needs older mailbox items first; it was left unprocessed and unacknowledged.
    deferred: bool,
}

fn process_blocking(
    store: &mut Store,
    keys: &Keys,
    d: &protocol::Delivery,
    show_read: bool,
    from_push: bool,
    now: u64,
    effects: &mut Effects,
) -> Result<Option<Inbound>, SessionError> {
    store.transaction(|db| -> Result<_, SessionError> {
        if db.delivery_processed(d.seq)? {
            return Ok(None);
        }
        let out = if d.kind == DeliveryKind::RoomOp as i32 {
            // Applied before this transaction (it may need the relay's log).
            None
        } else if d.kind == DeliveryKind::RoomMessage as i32 {
            let message_id: [u8; 16] = d.message_id.as_slice().try_into().unwrap_or([0u8; 16]);
            match rooms::decrypt_room_message(db, d, now)? {
                rooms::RoomInbound::Stored(r, ahead) => {
                    effects.room_ahead = ahead.map(|h| (d.room_id.clone(), h));
                    Some(Inbound::Message(r))
                }
                rooms::RoomInbound::Duplicate => None,
                rooms::RoomInbound::Missing(_) if from_push => {
                    // Fetch the mailbox first (it holds what this needs, in order); this item
                    // stays there unacknowledged and is processed again in its turn.
                    effects.deferred = true;
                    return Ok(None);
                }
                rooms::RoomInbound::Missing(error) | rooms::RoomInbound::Undecryptable(error) => {
                    tracing::warn!(seq = d.seq, "undecryptable room delivery: {error}");
                    Some(Inbound::Undecryptable {
                        from: d.sender_user.clone(),
                        message_id,
                        error,
                    })
                }
            }
        } else if d.kind == DeliveryKind::Delivered as i32 {
            if let Ok(id) = <[u8; 16]>::try_from(d.message_id.as_slice())
                && let Some(m) = db.message(&id)?
                && m.outgoing
                && matches!(m.state, MessageState::Sending | MessageState::Sent)
            {
                db.set_message_state(&id, MessageState::Delivered)?;
            }
            None
        } else {
            let sender_device: [u8; 16] = d.sender_device.as_slice().try_into().unwrap_or_default();
            let message_id: [u8; 16] = d.message_id.as_slice().try_into().unwrap_or([0u8; 16]);
            match decrypt_into(db, keys, d, sender_device, now, show_read)? {
                Outcome::Stored(r) => Some(Inbound::Message(r)),
                Outcome::Duplicate | Outcome::Quiet => None,
                Outcome::Receipts(r) => {
                    effects.receipts = r;
                    None
                }
                Outcome::Undecryptable(error) => {
                    tracing::warn!(seq = d.seq, "undecryptable delivery: {error}");
                    Some(Inbound::Undecryptable {
                        from: d.sender_user.clone(),
                        message_id,
                        error,
                    })
                }
            }
        };
        db.mark_delivery_processed(d.seq, now / 1000)?;
        Ok(out)
    })
}

impl Engine {
    /// Processes one delivery (push or fetched) and emits what it became.
    pub(crate) async fn process_delivery(
        &self,
        d: protocol::Delivery,
    ) -> Result<Option<Inbound>, SessionError> {
        Ok(self.process_one(d, false).await?.0)
    }

    /// Processes a live push; `Ok(false)` means it overtook older mailbox items it depends on
    /// and was left for [`Self::fetch_all`] (not acknowledged).
    pub(crate) async fn process_push(&self, d: protocol::Delivery) -> Result<bool, SessionError> {
        Ok(!self.process_one(d, true).await?.1)
    }

    async fn process_one(
        &self,
        d: protocol::Delivery,
        from_push: bool,
    ) -> Result<(Option<Inbound>, bool), SessionError> {
        // An initial message from someone new needs their root key pinned first (a network
        // round trip, so outside the transaction).
        if d.kind == DeliveryKind::Message as i32
            && let Ok(PairwiseMessage::Initial(_)) = PairwiseMessage::decode(&d.payload)
        {
            let u = d.sender_user.clone();
            let pinned = self.blocking(move |s, _| Ok(s.db().root_key(&u)?)).await?;
            if pinned.is_none()
                && names::canonical_username(&d.sender_user).is_some()
                && let Err(e) = self.pin_user(&d.sender_user).await
            {
                tracing::warn!("could not look up {}: {e}", d.sender_user);
            }
        }
        if d.kind == DeliveryKind::RoomOp as i32 {
            let seq = d.seq;
            let done = self
                .blocking(move |s, _| Ok(s.db().delivery_processed(seq)?))
                .await?;
            if !done {
                self.process_room_op(&d).await?;
            }
        }
        let kind = d.kind;
        let message_id = d.message_id.clone();
        let show_read = self.policy().as_ref().is_none_or(|p| p.read_receipts);
        let clock = self.opts.clock;
        let (out, effects) = self
            .blocking(move |s, keys| {
                let mut effects = Effects::default();
                let now = clock.now_ms();
                let out = process_blocking(s, keys, &d, show_read, from_push, now, &mut effects)?;
                Ok((out, effects))
            })
            .await?;
        if effects.deferred {
            return Ok((None, true));
        }
        let mut timers_changed = false;
        for e in effects.receipts {
            if e.read {
                self.emit(SessionEvent::StateChanged {
                    message_id: e.message_id,
                    state: MessageState::Read,
                });
            }
            if let Some(t) = e.timers {
                timers_changed = true;
                self.emit(SessionEvent::TimersChanged {
                    message_id: e.message_id,
                    conversation: e.conversation,
                    timers: t,
                });
            }
        }
        if timers_changed || matches!(&out, Some(Inbound::Message(r)) if r.timers.is_timed()) {
            self.schedule_shred().await;
        }
        if let Some((room, head)) = effects.room_ahead
            && self.is_connected()
        {
            self.catch_up_room(&room, head).await?;
        }
        if kind == DeliveryKind::Delivered as i32
            && let Ok(id) = <[u8; 16]>::try_from(message_id.as_slice())
        {
            self.emit(SessionEvent::StateChanged {
                message_id: id,
                state: MessageState::Delivered,
            });
        }
        match &out {
            Some(Inbound::Message(r)) => self.emit(SessionEvent::Message(r.clone())),
            Some(Inbound::Undecryptable {
                from,
                message_id,
                error,
            }) => self.emit(SessionEvent::Undecryptable {
                from: from.clone(),
                message_id: *message_id,
                error: error.clone(),
            }),
            None => {}
        }
        Ok((out, false))
    }

    /// Records a delivery that could not be processed as done, so it is acknowledged and never
    /// tried again, and tells observers which message was lost and why.
    async fn poisoned(
        &self,
        seq: u64,
        from: String,
        message_id: &[u8],
        e: &SessionError,
    ) -> Result<Inbound, SessionError> {
        tracing::warn!(seq, "could not process a delivery from {from}: {e}");
        let now = self.opts.clock.now_secs();
        self.blocking(move |s, _| Ok(s.db().mark_delivery_processed(seq, now)?))
            .await?;
        let message_id = message_id.try_into().unwrap_or([0u8; 16]);
        let error = format!("could not process this message: {e}");
        self.emit(SessionEvent::Undecryptable {
            from: from.clone(),
            message_id,
            error: error.clone(),
        });
        Ok(Inbound::Undecryptable {
            from,
            message_id,
            error,
        })
    }

    async fn pin_user(&self, user: &str) -> Result<(), SessionError> {
        let (root, _) = self.fetch_user(user).await?;
        let u = user.to_owned();
        let clock = self.opts.clock;
        self.blocking(move |s, _| {
            let db = s.db();
            if db.root_key(&u)?.is_none() {
                db.pin_root_key(&u, &root, clock.now_secs())?;
            }
            Ok(())
        })
        .await
    }

    /// Fetches and processes the whole mailbox, acknowledging page by page.
    pub(crate) async fn fetch_all(&self) -> Result<Vec<Inbound>, SessionError> {
        let _inbox = self.inbox_lock.lock().await;
        let mut out = Vec::new();
        loop {
            let conn = self.conn()?;
            let Body::Deliveries(page) = conn
                .request(Body::Fetch(protocol::Fetch { limit: FETCH_PAGE }))
                .await?
            else {
                return Err(SessionError::Protocol("unexpected answer to Fetch".into()));
            };
            let mut acks = Vec::with_capacity(page.items.len());
            let mut stopped = None;
            for d in page.items {
                let seq = d.seq;
                let (from, message_id) = (d.sender_user.clone(), d.message_id.clone());
                match self.process_delivery(d).await {
                    Ok(i) => out.extend(i),
                    // A lost connection or a stopped engine says nothing about the item: it
                    // stays in the mailbox and is processed when we are back.
                    Err(e @ (SessionError::Unreachable(_) | SessionError::Stopped)) => {
                        stopped = Some(e);
                        break;
                    }
                    // Anything else would fail again on every fetch and block the mailbox
                    // behind it for good: record it as unreadable and move on.
                    Err(e) => out.push(self.poisoned(seq, from, &message_id, &e).await?),
                }
                acks.push(seq);
            }
            if !acks.is_empty() {
                let conn = self.conn()?;
                conn.request(Body::Ack(protocol::Ack { seqs: acks }))
                    .await?;
            }
            if let Some(e) = stopped {
                return Err(e);
            }
            if !page.more {
                break;
            }
        }
        Ok(out)
    }
}
