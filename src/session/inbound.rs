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
use super::{Inbound, Keys, SessionError, SessionEvent, now_ms};
use crate::crypto::CryptoError;
use crate::crypto::envelope::{self, KeyPackage, PayloadKind};
use crate::crypto::handshake::{self, PairwiseMessage, Session};
use crate::crypto::identity::RootPublicKey;
use crate::protocol::{self, DeliveryKind, frame::Body, names};
use crate::store::{Db, MessageRecord, MessageState, Store};

/// Largest page of mailbox items fetched at once.
const FETCH_PAGE: u32 = 200;

enum Outcome {
    Stored(MessageRecord),
    Duplicate,
    Undecryptable(String),
}

fn decrypt_into(
    db: &Db<'_>,
    keys: &Keys,
    d: &protocol::Delivery,
    sender_device: [u8; 16],
    now: u64,
) -> Result<Outcome, SessionError> {
    let user = d.sender_user.as_str();
    let crypto = |e: CryptoError| -> Result<Outcome, SessionError> {
        Ok(Outcome::Undecryptable(e.to_string()))
    };
    let msg = match PairwiseMessage::decode(&d.payload) {
        Ok(m) => m,
        Err(e) => return crypto(e),
    };
    let existing = db.session(user, &sender_device)?;
    let mut session = match existing.as_ref().map(|b| Session::from_secret_bytes(b)) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let plaintext = match (&mut session, &msg) {
        (Some(s), m) if s.accepts(m) => match s.decrypt(m, now / 1000) {
            Ok(pt) => pt,
            Err(e) => return crypto(e),
        },
        (_, PairwiseMessage::Initial(init)) => {
            if init.sender_cert.user_id != user || init.sender_cert.device_id.0 != sender_device {
                return crypto(CryptoError::BadChain);
            }
            let Some(root) = db.root_key(user)? else {
                return crypto(CryptoError::UnknownKey);
            };
            let mut prekeys = load_prekeys(db)?;
            match handshake::respond(
                &keys.device,
                &keys.cert,
                &mut prekeys,
                &RootPublicKey(root),
                &[],
                init,
                now / 1000,
            ) {
                Ok((s, pt)) => {
                    save_prekeys(db, &prekeys)?;
                    session = Some(s);
                    pt
                }
                Err(e) => return crypto(e),
            }
        }
        _ => return crypto(CryptoError::UnknownKey),
    };
    // The ratchet step authenticated: keep it even if the body turns out to be bad, since
    // that message key is spent either way.
    if let Some(s) = &session {
        db.put_session(user, &sender_device, &s.to_secret_bytes())?;
    }
    let payload = match KeyPackage::decode(&plaintext).and_then(|k| envelope::open(&k, &d.body)) {
        Ok(p) => p,
        Err(e) => return crypto(e),
    };
    let expected = names::dm_conversation(&keys.username, user);
    if payload.message_id.0.as_slice() != d.message_id.as_slice()
        || payload.conversation != expected.as_bytes()
    {
        // A relay splicing a body into another conversation or under another id.
        return crypto(CryptoError::Integrity);
    }
    let text = match payload.kind {
        PayloadKind::Text(t) => t,
        _ => return Ok(Outcome::Undecryptable("unsupported message kind".into())),
    };
    let record = MessageRecord {
        message_id: payload.message_id.0,
        conversation: expected,
        outgoing: false,
        sender: user.to_owned(),
        sender_device,
        sent_at_ms: payload.sent_at_ms,
        received_at_ms: now,
        text,
        state: MessageState::Received,
    };
    if db.insert_message(&record)? {
        Ok(Outcome::Stored(record))
    } else {
        Ok(Outcome::Duplicate)
    }
}

fn process_blocking(
    store: &mut Store,
    keys: &Keys,
    d: &protocol::Delivery,
) -> Result<Option<Inbound>, SessionError> {
    let now = now_ms();
    store.transaction(|db| -> Result<_, SessionError> {
        if db.delivery_processed(d.seq)? {
            return Ok(None);
        }
        let out = if d.kind == DeliveryKind::Delivered as i32 {
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
            match decrypt_into(db, keys, d, sender_device, now)? {
                Outcome::Stored(r) => Some(Inbound::Message(r)),
                Outcome::Duplicate => None,
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
        &mut self,
        d: protocol::Delivery,
    ) -> Result<Option<Inbound>, SessionError> {
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
        let kind = d.kind;
        let message_id = d.message_id.clone();
        let out = self
            .blocking(move |s, keys| process_blocking(s, keys, &d))
            .await?;
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
        Ok(out)
    }

    async fn pin_user(&mut self, user: &str) -> Result<(), SessionError> {
        let (root, _) = self.fetch_user(user).await?;
        let u = user.to_owned();
        self.blocking(move |s, _| {
            let db = s.db();
            if db.root_key(&u)?.is_none() {
                db.pin_root_key(&u, &root, now_ms() / 1000)?;
            }
            Ok(())
        })
        .await
    }

    /// Fetches and processes the whole mailbox, acknowledging page by page.
    pub(crate) async fn fetch_all(&mut self) -> Result<Vec<Inbound>, SessionError> {
        let mut out = Vec::new();
        loop {
            let conn = self
                .conn
                .as_ref()
                .ok_or_else(|| SessionError::Unreachable("not connected".into()))?;
            let Body::Deliveries(page) = conn
                .request(Body::Fetch(protocol::Fetch { limit: FETCH_PAGE }))
                .await?
            else {
                return Err(SessionError::Protocol("unexpected answer to Fetch".into()));
            };
            let mut acks = Vec::with_capacity(page.items.len());
            for d in page.items {
                let seq = d.seq;
                if let Some(i) = self.process_delivery(d).await? {
                    out.push(i);
                }
                acks.push(seq);
            }
            if !acks.is_empty() {
                let conn = self
                    .conn
                    .as_ref()
                    .ok_or_else(|| SessionError::Unreachable("not connected".into()))?;
                conn.request(Body::Ack(protocol::Ack { seqs: acks }))
                    .await?;
            }
            if !page.more {
                break;
            }
        }
        Ok(out)
    }
}
