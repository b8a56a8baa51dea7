//! Outbound: the durable outbox, per-device encryption, delivery, and prekey upkeep.

use prost::Message as _;

use super::engine::Engine;
use super::rooms;
use super::timers::clamp;
use super::{Keys, MAX_TIMER_SECS, Queued, SendOptions, SessionError, SessionEvent};
use crate::client::{pairwise, timers};
use crate::crypto::envelope::{self, MessageId, Payload, PayloadKind, ReceiptKind, Timers};
use crate::crypto::handshake::Session;
use crate::crypto::identity::{Revocation, RootPublicKey};
use crate::crypto::prekeys::{
    self, DevicePrekeys, OneTimePrekey, PqPrekey, PrekeyBundle, SignedPrekey,
};
use crate::protocol::names::{self, ConversationId};
use crate::protocol::{self, ErrorCode, frame::Body};
use crate::store::{Db, MessageKind, MessageRecord, MessageState, OutboxItem, OutboxKind, Store};

const PREKEYS_BLOB: &str = "prekeys";

/// A signed prekey as published on the wire.
pub fn spk_msg(k: &SignedPrekey) -> protocol::SignedPrekeyMsg {
    protocol::SignedPrekeyMsg {
        id: k.id,
        public: k.public.to_vec(),
        created_at: k.created_at,
        signature: k.signature.to_vec(),
    }
}

/// A PQ prekey as published on the wire.
pub fn pq_msg(k: &PqPrekey) -> protocol::PqPrekeyMsg {
    protocol::PqPrekeyMsg {
        id: k.id,
        last_resort: k.last_resort,
        created_at: k.created_at,
        public: k.public.clone(),
        signature: k.signature.to_vec(),
    }
}

/// A one-time prekey as published on the wire.
pub fn otk_msg(k: &OneTimePrekey) -> protocol::OneTimePrekeyMsg {
    protocol::OneTimePrekeyMsg {
        id: k.id,
        public: k.public.to_vec(),
    }
}

/// Assembles a prekey bundle from the relay's parts (verification is the caller's job).
///
/// # Errors
/// [`SessionError::Protocol`] or a decoding error for missing or mis-sized fields.
pub fn bundle_from(d: &protocol::DeviceBundle) -> Result<PrekeyBundle, SessionError> {
    let bad = || SessionError::Protocol("malformed key bundle from relay".into());
    let spk = d.signed_prekey.as_ref().ok_or_else(bad)?;
    let pq = d.pq_prekey.as_ref().ok_or_else(bad)?;
    Ok(PrekeyBundle {
        cert: crate::crypto::identity::DeviceCertificate::decode(&d.certificate)?,
        signed_prekey: SignedPrekey {
            id: spk.id,
            public: spk.public.as_slice().try_into().map_err(|_| bad())?,
            created_at: spk.created_at,
            signature: spk.signature.as_slice().try_into().map_err(|_| bad())?,
        },
        one_time_prekey: match &d.one_time_prekey {
            Some(k) => Some(OneTimePrekey {
                id: k.id,
                public: k.public.as_slice().try_into().map_err(|_| bad())?,
            }),
            None => None,
        },
        pq_prekey: PqPrekey {
            id: pq.id,
            last_resort: pq.last_resort,
            created_at: pq.created_at,
            public: pq.public.clone(),
            signature: pq.signature.as_slice().try_into().map_err(|_| bad())?,
        },
    })
}

fn device_id(v: &[u8]) -> Result<[u8; 16], SessionError> {
    v.try_into()
        .map_err(|_| SessionError::Protocol("malformed device id from relay".into()))
}

/// Loads the device's private prekeys from the cache.
pub(crate) fn load_prekeys(db: &Db<'_>) -> Result<DevicePrekeys, SessionError> {
    let bytes = db
        .blob(PREKEYS_BLOB)?
        .ok_or_else(|| SessionError::Protocol("profile has no prekeys".into()))?;
    Ok(DevicePrekeys::from_secret_bytes(&bytes)?)
}

/// Saves the device's private prekeys.
pub(crate) fn save_prekeys(db: &Db<'_>, p: &DevicePrekeys) -> Result<(), SessionError> {
    db.put_blob(PREKEYS_BLOB, &p.to_secret_bytes()?)?;
    Ok(())
}

/// A message of ours that failed, which `/retry` and `/discard` act on.
fn own_failed(db: &Db<'_>, message_id: &[u8; 16]) -> Result<MessageRecord, SessionError> {
    db.message(message_id)?
        .filter(|m| m.outgoing && m.state == MessageState::Failed)
        .ok_or_else(|| SessionError::Usage("no failed message of yours with that id".into()))
}

impl Engine {
    /// Puts a text message into the durable outbox and the history (as "sending"). `to` is a
    /// username, a room id, or a direct-message conversation id.
    pub(crate) async fn queue_text(
        &self,
        to: &str,
        text: &str,
        opts: SendOptions,
    ) -> Result<Queued, SessionError> {
        let parsed = ConversationId::parse(to);
        let (conversation, to) = if parsed.as_ref().is_some_and(ConversationId::is_room) {
            (to.to_owned(), to.to_owned())
        } else {
            let peer = match &parsed {
                Some(dm) => dm_recipient(dm, &self.keys.username),
                None => to.to_owned(),
            };
            let peer = names::canonical_username(&peer)
                .ok_or_else(|| SessionError::Usage(format!("not a valid username: {to:?}")))?;
            if peer == self.keys.username {
                return Err(SessionError::Usage(
                    "you cannot send a direct message to yourself".into(),
                ));
            }
            (names::dm_conversation(&self.keys.username, &peer), peer)
        };
        // The exact check is on the encrypted request, against the limit the relay announced
        // (`Connection::request`); a text that alone exceeds it is refused before it is queued.
        let limit = self.max_frame().min(envelope::MAX_PAYLOAD - 1024);
        if text.len() > limit {
            return Err(SessionError::TooLarge {
                size: text.len(),
                limit,
            });
        }
        if text.trim().is_empty() {
            return Err(SessionError::Usage("an empty message was not sent".into()));
        }
        let (max_expire, max_burn) = self.policy().as_ref().map_or(
            (u64::from(MAX_TIMER_SECS), u64::from(MAX_TIMER_SECS)),
            |p| (p.max_expire_secs, p.max_burn_secs),
        );
        let text = text.to_owned();
        let id = MessageId::random()?.0;
        let offset = self.opts.clock_offset_ms;
        let clock = self.opts.clock;
        self.blocking(move |store, keys| {
            let now = clock.now_ms().saturating_add_signed(offset);
            store.transaction(|db| -> Result<_, SessionError> {
                if rooms::is_room(&conversation) {
                    let state = rooms::load_state(db, &conversation)?.ok_or_else(|| {
                        SessionError::Usage(format!("unknown room: {conversation}"))
                    })?;
                    if state.deleted {
                        return Err(SessionError::Usage("this room was deleted".into()));
                    }
                    if !state.is_member(&keys.username) {
                        return Err(SessionError::Refused(
                            "you are not a member of this room".into(),
                        ));
                    }
                    if rooms::withheld(db, &state)? {
                        return Err(SessionError::Refused(rooms::WITHHELD.into()));
                    }
                }
                let (def_expire, def_burn) = db.conversation_timers(&conversation)?;
                let c = clamp(
                    opts.expire_after.or(def_expire),
                    opts.burn_after.or(def_burn),
                    max_expire,
                    max_burn,
                );
                let timers: crate::store::MessageTimers =
                    timers::outgoing(c.expire_after, c.burn_after, now).into();
                db.outbox_push(&OutboxItem {
                    id: 0,
                    message_id: id,
                    conversation: conversation.clone(),
                    recipient: to.clone(),
                    text: text.clone(),
                    created_at_ms: now,
                    request: None,
                    key_package: None,
                    attempts: 0,
                    last_error: None,
                    kind: OutboxKind::Text,
                    timers,
                    extra: Vec::new(),
                })?;
                db.insert_message(&MessageRecord {
                    message_id: id,
                    conversation: conversation.clone(),
                    outgoing: true,
                    sender: keys.username.clone(),
                    sender_device: keys.device_id,
                    sent_at_ms: now,
                    received_at_ms: now,
                    text,
                    state: MessageState::Sending,
                    kind: MessageKind::Text,
                    timers,
                })?;
                Ok(Queued {
                    message_id: id,
                    conversation,
                    timers,
                    notes: c.notes,
                })
            })
        })
        .await
    }

    /// Puts a failed message of ours back into the outbox, as it was (same id and text, so
    /// the relay still recognises a copy it already took).
    pub(crate) async fn retry_failed(&self, message_id: [u8; 16]) -> Result<(), SessionError> {
        let now = self.opts.clock.now_ms();
        self.blocking(move |store, keys| {
            store.transaction(|db| -> Result<_, SessionError> {
                let m = own_failed(db, &message_id)?;
                // A room's messages go to the room; a direct message to the other user.
                let recipient = match ConversationId::parse(&m.conversation) {
                    Some(dm @ ConversationId::Dm { .. }) => dm_recipient(&dm, &keys.username),
                    _ => m.conversation.clone(),
                };
                db.outbox_push(&OutboxItem {
                    id: 0,
                    message_id,
                    conversation: m.conversation.clone(),
                    recipient,
                    text: m.text.clone(),
                    created_at_ms: now,
                    request: None,
                    key_package: None,
                    attempts: 0,
                    last_error: None,
                    kind: OutboxKind::Text,
                    timers: m.timers,
                    extra: Vec::new(),
                })?;
                db.set_message_state(&message_id, MessageState::Sending)?;
                db.clear_failure(&message_id)?;
                Ok(())
            })
        })
        .await?;
        self.emit(SessionEvent::StateChanged {
            message_id,
            state: MessageState::Sending,
        });
        Ok(())
    }

    /// Deletes a failed message of ours from this device.
    pub(crate) async fn discard_failed(&self, message_id: [u8; 16]) -> Result<(), SessionError> {
        let conversation = self
            .blocking(move |store, _| {
                store.transaction(|db| -> Result<_, SessionError> {
                    let m = own_failed(db, &message_id)?;
                    db.delete_message(&message_id)?;
                    Ok(m.conversation)
                })
            })
            .await?;
        self.emit(SessionEvent::Shredded {
            conversation,
            message_ids: vec![message_id],
        });
        Ok(())
    }

    /// Delivers every queued message, oldest first. Stops at the first transient failure (the
    /// rest stay queued); permanent failures mark that message failed and continue.
    pub(crate) async fn flush_outbox(&self) -> Result<(), SessionError> {
        let _outbox = self.outbox_lock.lock().await;
        let items = self.blocking(|s, _| Ok(s.db().outbox_pending()?)).await?;
        let mut first_failure = None;
        for item in items {
            match self.deliver(&item).await {
                Ok(()) => {}
                Err(e) if e.is_permanent() => {
                    let (id, mid, reason) = (item.id, item.message_id, e.to_string());
                    let text = item.kind == OutboxKind::Text;
                    let r = reason.clone();
                    self.blocking(move |s, _| {
                        s.transaction(|db| -> Result<_, SessionError> {
                            db.outbox_remove(id)?;
                            if text {
                                db.set_message_state(&mid, MessageState::Failed)?;
                                db.set_failure(&mid, &r)?;
                            }
                            Ok(())
                        })?;
                        Ok(())
                    })
                    .await?;
                    tracing::warn!("message failed permanently: {reason}");
                    if text {
                        self.emit(SessionEvent::StateChanged {
                            message_id: item.message_id,
                            state: MessageState::Failed,
                        });
                        self.emit(SessionEvent::SendFailed {
                            message_id: item.message_id,
                            conversation: item.conversation.clone(),
                            reason,
                        });
                    }
                    first_failure.get_or_insert(e);
                }
                Err(e) => {
                    let (id, attempts, msg) = (item.id, item.attempts + 1, e.to_string());
                    let _ = self
                        .blocking(move |s, _| {
                            Ok(s.db().outbox_set_attempts(id, attempts, Some(&msg))?)
                        })
                        .await;
                    return Err(e);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<(), SessionError> {
        if rooms::is_room(&item.conversation) {
            let server_ts = self.deliver_room(item).await?;
            return self.delivered(item, server_ts).await;
        }
        let mut request = item.request.clone();
        let mut key_package = item.key_package.as_ref().map(|k| k.to_vec());
        for _ in 0..5 {
            let bytes = match request.take() {
                Some(r) => r,
                None => {
                    let (r, k) = self.encrypt_item(item, key_package.take()).await?;
                    key_package = Some(k);
                    r
                }
            };
            let send = protocol::Send::decode(bytes.as_slice())
                .map_err(|e| SessionError::Protocol(format!("stored request is corrupt: {e}")))?;
            let conn = self.conn()?;
            match conn.request(Body::Send(send)).await {
                Ok(Body::SendOk(ok)) => return self.delivered(item, ok.server_ts_ms).await,
                Ok(_) => return Err(SessionError::Protocol("unexpected answer to Send".into())),
                Err(SessionError::Relay {
                    code: ErrorCode::DevicesChanged,
                    stale,
                    ..
                }) => {
                    // Re-encrypt the same content key for the devices now present.
                    self.learn_stale_devices(&stale).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(SessionError::Protocol(
            "recipient devices keep changing; try again".into(),
        ))
    }

    /// Records a send the relay accepted at `server_ts` (its clock): the outbox item goes, a
    /// text becomes "sent", and its expiry is shortened to count from the relay's time if our
    /// clock was ahead.
    async fn delivered(&self, item: &OutboxItem, server_ts: u64) -> Result<(), SessionError> {
        let (id, mid, kind) = (item.id, item.message_id, item.kind);
        let expire = item.timers.expire_after_s;
        let timers = self
            .blocking(move |s, _| {
                s.transaction(|db| -> Result<_, SessionError> {
                    db.outbox_remove(id)?;
                    if kind != OutboxKind::Text {
                        return Ok(None);
                    }
                    // The recipient may have stored (or read) it before our SendOk arrived: never
                    // move a message back from "delivered" or "read" to "sent".
                    if db
                        .message(&mid)?
                        .is_some_and(|m| m.state == MessageState::Sending)
                    {
                        db.set_message_state(&mid, MessageState::Sent)?;
                    }
                    if let Some(e) = expire
                        && server_ts > 0
                    {
                        db.set_expire_at(&mid, server_ts.saturating_add(u64::from(e) * 1000))?;
                    }
                    Ok(db.message(&mid)?.map(|m| (m.conversation, m.timers)))
                })
            })
            .await?;
        if kind == OutboxKind::Text {
            self.emit(SessionEvent::StateChanged {
                message_id: item.message_id,
                state: MessageState::Sent,
            });
            if let Some((conversation, timers)) = timers
                && timers.is_timed()
            {
                self.emit(SessionEvent::TimersChanged {
                    message_id: item.message_id,
                    conversation,
                    timers,
                });
                self.schedule_shred().await;
            }
        }
        Ok(())
    }

    /// Learns the device lists a `DevicesChanged` refusal carries: forgets the sessions (current
    /// and replaced) with devices that are gone and records the current lists. Returns each
    /// user's current devices.
    pub(crate) async fn learn_stale_devices(
        &self,
        stale: &[protocol::UserDevices],
    ) -> Result<Vec<(String, Vec<[u8; 16]>)>, SessionError> {
        let lists: Vec<(String, Vec<[u8; 16]>)> = stale
            .iter()
            .map(|u| {
                let devices = u
                    .devices
                    .iter()
                    .filter_map(|d| d.as_slice().try_into().ok())
                    .collect();
                (u.username.clone(), devices)
            })
            .collect();
        let l = lists.clone();
        self.blocking(move |s, _| {
            s.transaction(|db| -> Result<_, SessionError> {
                for (user, devices) in &l {
                    for (old, _) in db.sessions_for(user)? {
                        if !devices.contains(&old) {
                            db.delete_session(user, &old)?;
                            db.delete_previous_session(user, &old)?;
                        }
                    }
                    db.set_devices(user, devices)?;
                }
                Ok(())
            })
        })
        .await?;
        self.bump_devices_epoch();
        Ok(lists)
    }

    /// Asks the relay for a user's root key and active devices (consumes no prekeys).
    pub(crate) async fn fetch_user(
        &self,
        user: &str,
    ) -> Result<([u8; 32], Vec<[u8; 16]>), SessionError> {
        let conn = self.conn()?;
        let Body::UserInfo(info) = conn
            .request(Body::GetUser(protocol::GetUser {
                username: user.to_owned(),
            }))
            .await?
        else {
            return Err(SessionError::Protocol(
                "unexpected answer to GetUser".into(),
            ));
        };
        let root: [u8; 32] = info
            .root_key
            .as_slice()
            .try_into()
            .map_err(|_| SessionError::Protocol("malformed root key from relay".into()))?;
        let devices = info
            .devices
            .iter()
            .map(|d| device_id(d))
            .collect::<Result<_, _>>()?;
        Ok((root, devices))
    }

    /// Makes sure we know `user`'s root key (pinned on first use) and device list.
    pub(crate) async fn learn_user_devices(
        &self,
        user: &str,
    ) -> Result<Vec<[u8; 16]>, SessionError> {
        self.learn_user(user).await
    }

    /// Makes sure we know `user`'s root key (pinned on first use) and device list.
    async fn learn_user(&self, user: &str) -> Result<Vec<[u8; 16]>, SessionError> {
        let u = user.to_owned();
        let known = self
            .blocking(move |s, _| {
                let db = s.db();
                Ok((db.root_key(&u)?, db.devices(&u)?))
            })
            .await?;
        if let (Some(_), devices) = &known
            && !devices.is_empty()
        {
            return Ok(devices.clone());
        }
        let (root, devices) = self.fetch_user(user).await?;
        let u = user.to_owned();
        let ds = devices.clone();
        let clock = self.opts.clock;
        self.blocking(move |s, _| {
            let db = s.db();
            match db.root_key(&u)? {
                Some(pinned) if pinned != root => return Err(SessionError::IdentityChanged(u)),
                Some(_) => {}
                None => db.pin_root_key(&u, &root, clock.now_secs())?,
            }
            db.set_devices(&u, &ds)?;
            Ok(())
        })
        .await?;
        self.bump_devices_epoch();
        Ok(devices)
    }

    /// Starts sessions with every device of `user` in `wanted` that has none.
    pub(crate) async fn ensure_sessions_pub(
        &self,
        user: &str,
        wanted: &[[u8; 16]],
    ) -> Result<(), SessionError> {
        self.ensure_sessions(user, wanted).await
    }

    /// Starts sessions with every device of `user` in `wanted` that has none.
    async fn ensure_sessions(&self, user: &str, wanted: &[[u8; 16]]) -> Result<(), SessionError> {
        let u = user.to_owned();
        let have: Vec<[u8; 16]> = self
            .blocking(move |s, _| {
                Ok(s.db()
                    .sessions_for(&u)?
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect())
            })
            .await?;
        if wanted.iter().all(|d| have.contains(d)) {
            return Ok(());
        }
        let conn = self.conn()?;
        let Body::KeyBundle(kb) = conn
            .request(Body::FetchKeys(protocol::FetchKeys {
                username: user.to_owned(),
            }))
            .await?
        else {
            return Err(SessionError::Protocol(
                "unexpected answer to FetchKeys".into(),
            ));
        };
        let u = user.to_owned();
        let wanted = wanted.to_vec();
        let clock = self.opts.clock;
        self.blocking(move |s, keys| {
            let db = s.db();
            let root = db
                .root_key(&u)?
                .ok_or_else(|| SessionError::Protocol("no pinned root key".into()))?;
            if kb.root_key != root {
                return Err(SessionError::IdentityChanged(u));
            }
            let revocations: Vec<Revocation> = kb
                .revocations
                .iter()
                .filter_map(|r| Revocation::decode(r).ok())
                .collect();
            let now = clock.now_secs();
            s.transaction(|db| -> Result<_, SessionError> {
                for d in &kb.devices {
                    let id = device_id(&d.device_id)?;
                    // Checked again here, not only before the fetch: while the relay answered,
                    // this device's first message may have arrived and been answered (the
                    // peer started a session at the same moment). Starting one of ours over
                    // it would orphan that session, and every further message the peer sends
                    // on it would be undecryptable until it heard from us.
                    if !wanted.contains(&id) || db.session(&u, &id)?.is_some() {
                        continue;
                    }
                    let bundle = bundle_from(d)?;
                    if bundle.cert.device_id.0 != id {
                        return Err(SessionError::Protocol("bundle for the wrong device".into()));
                    }
                    let me = pairwise::Me {
                        username: &keys.username,
                        keys: &keys.device,
                        cert: &keys.cert,
                    };
                    let session =
                        pairwise::start(me, &u, &RootPublicKey(root), &bundle, &revocations, now)?;
                    db.put_session(&u, &id, &session.to_secret_bytes()?)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Encrypts an outbox item for every current device of the recipient and our own other
    /// devices, persisting the advanced sessions together with the request bytes.
    async fn encrypt_item(
        &self,
        item: &OutboxItem,
        key_package: Option<Vec<u8>>,
    ) -> Result<(Vec<u8>, Vec<u8>), SessionError> {
        let me = self.keys.username.clone();
        let recipient_devices = self.learn_user(&item.recipient).await?;
        let own_devices: Vec<[u8; 16]> = self
            .learn_user(&me)
            .await?
            .into_iter()
            .filter(|d| *d != self.keys.device_id)
            .collect();
        self.ensure_sessions(&item.recipient, &recipient_devices)
            .await?;
        if !own_devices.is_empty() {
            self.ensure_sessions(&me, &own_devices).await?;
        }
        let id = item.id;
        let message_id = item.message_id;
        let conversation = item.conversation.clone();
        let recipient = item.recipient.clone();
        let kind = match item.kind {
            OutboxKind::Text => PayloadKind::Text(item.text.clone()),
            OutboxKind::Receipt => PayloadKind::Receipt {
                kind: ReceiptKind::Read,
                message_ids: item
                    .extra
                    .chunks_exact(16)
                    .filter_map(|c| c.try_into().ok().map(MessageId))
                    .collect(),
            },
            OutboxKind::Control => PayloadKind::Control(item.extra.clone()),
        };
        let timers = Timers {
            expire_after: item.timers.expire_after_s,
            burn_after: item.timers.burn_after_s,
        };
        let ttl_ms = timers.expire_after.map_or(0, |s| u64::from(s) * 1000);
        let sent_at = item.created_at_ms;
        let old_body = item
            .request
            .as_ref()
            .and_then(|r| protocol::Send::decode(r.as_slice()).ok())
            .map(|s| s.body);
        self.blocking(move |s: &mut Store, keys: &Keys| {
            let mut sealed = match (key_package, old_body) {
                (Some(k), Some(body)) => pairwise::Sealed::resume(message_id, &k, body)?,
                _ => pairwise::Sealed::new(&Payload {
                    message_id: MessageId(message_id),
                    sent_at_ms: sent_at,
                    conversation: conversation.into_bytes(),
                    kind,
                    timers,
                    reply_to: None,
                })?,
            };
            s.transaction(|db| -> Result<_, SessionError> {
                let targets = recipient_devices
                    .iter()
                    .map(|d| (recipient.as_str(), *d))
                    .chain(own_devices.iter().map(|d| (keys.username.as_str(), *d)));
                for (user, dev) in targets {
                    let bytes = db.session(user, &dev)?.ok_or_else(|| {
                        SessionError::Protocol(format!("no session with a device of {user}"))
                    })?;
                    let mut session = Session::from_secret_bytes(&bytes)?;
                    sealed.add(user, &mut session)?;
                    db.put_session(user, &dev, &session.to_secret_bytes()?)?;
                }
                let wrapped = sealed.package().to_vec();
                let request = sealed.into_send(ttl_ms).encode_to_vec();
                db.outbox_set_request(id, &request, &wrapped)?;
                Ok((request, wrapped))
            })
        })
        .await
    }

    /// Tops up one-time prekeys and rotates the signed and last-resort keys when due.
    pub(crate) async fn maintain_prekeys(&self) -> Result<(), SessionError> {
        let Some((otk_left, pq_left)) = self.take_prekey_counts() else {
            return Ok(());
        };
        let clock = self.opts.clock;
        let upload = self
            .blocking(move |s, keys| {
                s.transaction(|db| -> Result<_, SessionError> {
                    let mut p = load_prekeys(db)?;
                    let now = clock.now_secs();
                    let (spk, lr) = p.rotate(&keys.device.signing, now)?;
                    let otks = if (otk_left as usize) < prekeys::ONE_TIME_REFILL_BELOW {
                        p.generate_one_time(prekeys::ONE_TIME_BATCH)?
                    } else {
                        Vec::new()
                    };
                    let pqs = if (pq_left as usize) < prekeys::PQ_BATCH / 3 {
                        p.generate_pq_one_time(&keys.device.signing, prekeys::PQ_BATCH, now)?
                    } else {
                        Vec::new()
                    };
                    if spk.is_none() && lr.is_none() && otks.is_empty() && pqs.is_empty() {
                        return Ok(None);
                    }
                    // Saved before upload: peers must never get keys we do not hold.
                    save_prekeys(db, &p)?;
                    Ok(Some(protocol::PrekeyUpload {
                        signed_prekey: spk.as_ref().map(spk_msg),
                        one_time: otks.iter().map(otk_msg).collect(),
                        pq_one_time: pqs.iter().map(pq_msg).collect(),
                        pq_last_resort: lr.as_ref().map(pq_msg),
                    }))
                })
            })
            .await?;
        if let (Some(upload), Some(conn)) = (upload, self.conn().ok()) {
            conn.request(Body::UploadPrekeys(upload)).await?;
        }
        Ok(())
    }
}

/// The user a direct message in `dm` goes to from `me`: the first member who is not `me`
/// (`me` for a conversation with oneself); a room id is its own recipient.
fn dm_recipient(dm: &ConversationId, me: &str) -> String {
    match dm {
        ConversationId::Dm { a, b } => if a == me { b } else { a }.clone(),
        ConversationId::Room(id) => id.clone(),
    }
}
