//! The actor loop: connection lifecycle, reconnect with backoff and jitter, command handling.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::connection::{Connection, Push};
use super::{AccountInfo, Command, EngineOptions, Keys, SessionError, SessionEvent, SessionHandle};
use crate::crypto::primitives;
use crate::protocol::{self, frame::Body};
use crate::store::{AccountRecord, Store};

pub(crate) struct Engine {
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) keys: Arc<Keys>,
    pub(crate) url: String,
    pub(crate) relay_id: Vec<u8>,
    pub(crate) opts: EngineOptions,
    pub(crate) conn: Option<Connection>,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    push_tx: mpsc::UnboundedSender<Push>,
    push_rx: mpsc::UnboundedReceiver<Push>,
    failures: u32,
    next_attempt: Option<Instant>,
    pub(crate) prekey_counts: Option<(u32, u32)>,
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// The network policy from the last login or push whose signature verified.
    pub(crate) policy: Option<protocol::Policy>,
    /// The network admin key pinned at registration; it signs the policy.
    admin_key: Option<[u8; 32]>,
    network_id: String,
    policy_shared: Arc<Mutex<Option<protocol::Policy>>>,
    /// When the next timed message must be shredded.
    pub(crate) next_shred: Option<Instant>,
    /// Bumped whenever a user's device list in the cache changes.
    pub(crate) devices_epoch: u64,
    /// Rooms whose sender key was reconciled with the member devices, at which (log head,
    /// devices epoch): a send in a steady room skips the per-member work.
    pub(crate) room_keys_ok: std::collections::HashMap<String, (u64, u64)>,
}

/// Starts the engine for an unlocked store.
///
/// # Errors
/// [`SessionError::NotRegistered`] if the store has no account, or key decoding errors.
pub fn spawn(mut store: Store, opts: EngineOptions) -> Result<SessionHandle, SessionError> {
    let account: AccountRecord = store.db().account()?.ok_or(SessionError::NotRegistered)?;
    // Expiries and burns that fell due while we were not running are applied before anything
    // can be shown.
    let shredded = store.shred_due(super::now_ms())?;
    if !shredded.is_empty() {
        tracing::info!(
            count = shredded.len(),
            "shredded messages that expired while offline"
        );
    }
    super::check_url(&account.server_url, account.allow_insecure_ws)?;
    let keys = Arc::new(Keys::from_account(&account)?);
    let admin_key = super::policy::pinned(
        store
            .db()
            .blob(super::policy::NAK_BLOB)?
            .as_deref()
            .map(|b| b.as_slice()),
    );
    let profile_dir = Arc::new(PathBuf::from(store.dir()));
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (events, _) = broadcast::channel(4096);
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let auto = opts.auto_reconnect;
    let engine = Engine {
        store: Arc::new(Mutex::new(store)),
        keys,
        url: account.server_url.clone(),
        relay_id: account.relay_id.clone(),
        opts,
        conn: None,
        events: events.clone(),
        push_tx,
        push_rx,
        failures: 0,
        next_attempt: auto.then(Instant::now),
        prekey_counts: None,
        connected: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        policy: None,
        admin_key,
        network_id: account.network_id.clone(),
        policy_shared: Arc::new(Mutex::new(None)),
        next_shred: None,
        devices_epoch: 0,
        room_keys_ok: std::collections::HashMap::new(),
    };
    let connected = Arc::clone(&engine.connected);
    let policy = Arc::clone(&engine.policy_shared);
    tokio::spawn(engine.run(cmd_rx));
    Ok(SessionHandle {
        cmd: cmd_tx,
        events,
        profile_dir,
        account: Arc::new(AccountInfo {
            username: account.username.clone(),
            display_name: account.display_name.clone(),
            network_name: account.network_name.clone(),
            server_url: account.server_url.clone(),
        }),
        connected,
        policy,
    })
}

impl Engine {
    /// Runs `f` against the store on the blocking pool.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store, &Keys) -> Result<T, SessionError> + Send + 'static,
    ) -> Result<T, SessionError> {
        let store = Arc::clone(&self.store);
        let keys = Arc::clone(&self.keys);
        tokio::task::spawn_blocking(move || {
            let mut guard = store
                .lock()
                .map_err(|_| SessionError::Protocol("cache lock poisoned".into()))?;
            f(&mut guard, &keys)
        })
        .await
        .map_err(|_| SessionError::Stopped)?
    }

    pub(crate) fn emit(&self, e: SessionEvent) {
        let _ = self.events.send(e);
    }

    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>) {
        let mut shutdown_reply = None;
        self.schedule_shred().await;
        loop {
            let wake = self.next_attempt;
            let shred_at = self.next_shred;
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        shutdown_reply = Some(reply);
                        break;
                    }
                    Some(cmd) => self.handle(cmd).await,
                },
                Some(push) = self.push_rx.recv() => self.handle_push(push).await,
                () = async {
                    match wake {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.next_attempt = None;
                    if let Err(e) = self.ensure_connected().await {
                        tracing::debug!("reconnect failed: {e}");
                    }
                }
                () = async {
                    match shred_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.next_shred = None;
                    self.shred_now().await;
                }
            }
        }
        // Close the connection and the cache (releasing the profile lock) before telling the
        // caller we are done, so it can reopen the profile at once.
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::SendText {
                to,
                text,
                opts,
                reply,
            } => {
                let r = self.queue_text(&to, &text, opts).await;
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok
                    && self.conn.is_some()
                    && let Err(e) = self.flush_outbox().await
                {
                    tracing::debug!("flush after send: {e}");
                }
            }
            Command::Flush { reply } => {
                let r = match self.ensure_connected().await {
                    Ok(()) => self.flush_outbox().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Command::Sync { reply } => {
                let r = match self.ensure_connected().await {
                    Ok(()) => self.fetch_all().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Command::CreateInvite {
                email,
                admin,
                reply,
            } => {
                let r = self.create_invite(email, admin).await;
                let _ = reply.send(r);
            }
            Command::Conversations { reply } => {
                let r = self.blocking(|s, _| Ok(s.db().conversations()?)).await;
                let _ = reply.send(r);
            }
            Command::History {
                conversation,
                limit,
                reply,
            } => {
                let r = self
                    .blocking(move |s, _| Ok(s.db().history(&conversation, limit)?))
                    .await;
                let _ = reply.send(r);
            }
            Command::HistoryBefore {
                conversation,
                before,
                limit,
                reply,
            } => {
                let r = self
                    .blocking(move |s, _| {
                        Ok(s.db().history_before(&conversation, before, limit)?)
                    })
                    .await;
                let _ = reply.send(r);
            }
            Command::Search {
                conversation,
                query,
                limit,
                reply,
            } => {
                let r = self
                    .blocking(move |s, _| {
                        let db = s.db();
                        Ok(match &conversation {
                            Some(c) => db.search_in(c, &query, limit)?,
                            None => db.search(&query, limit)?,
                        })
                    })
                    .await;
                let _ = reply.send(r);
            }
            Command::MarkRead {
                conversation,
                reply,
            } => {
                let r = self.mark_read_and_display(conversation).await;
                let _ = reply.send(r);
            }
            Command::CreateRoom {
                kind,
                title,
                description,
                members,
                reply,
            } => {
                let r = self.create_room(kind, title, description, members).await;
                let _ = reply.send(r);
            }
            Command::ChangeRoom {
                room,
                request,
                reply,
            } => {
                let r = self.room_request(&room, request).await;
                let _ = reply.send(r);
            }
            Command::Rooms { reply } => {
                let r = self
                    .blocking(|s, keys| super::rooms::list_rooms(&s.db(), &keys.username))
                    .await;
                let _ = reply.send(r);
            }
            Command::Room { reference, reply } => {
                let r = self
                    .blocking(move |s, keys| {
                        let db = s.db();
                        let id = super::rooms::resolve(&db, &keys.username, &reference)?;
                        super::rooms::room_info(&db, &keys.username, &id)
                    })
                    .await;
                let _ = reply.send(r);
            }
            Command::SetTimers {
                conversation,
                expire_after,
                burn_after,
                reply,
            } => {
                let r = self
                    .set_conversation_timers(&conversation, expire_after, burn_after)
                    .await;
                let _ = reply.send(r);
            }
            Command::Timers {
                conversation,
                reply,
            } => {
                let r = self
                    .blocking(move |s, _| Ok(s.db().conversation_timers(&conversation)?))
                    .await;
                let _ = reply.send(r);
            }
            Command::SetReadReceipts { on, reply } => {
                let r = self.set_read_receipts(on).await;
                let _ = reply.send(r);
            }
            Command::Displayed { message_ids, reply } => {
                let r = self.display(message_ids).await;
                let _ = reply.send(r);
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Arms the shred timer for the earliest pending expiry or burn.
    pub(crate) async fn schedule_shred(&mut self) {
        match self.blocking(|s, _| Ok(s.db().next_deletion()?)).await {
            Ok(Some(at)) => {
                let wait = at.saturating_sub(super::now_ms());
                self.next_shred = Some(Instant::now() + Duration::from_millis(wait));
            }
            Ok(None) => self.next_shred = None,
            Err(e) => tracing::warn!("could not read message timers: {e}"),
        }
    }

    /// Shreds every message whose timer fired and tells observers.
    pub(crate) async fn shred_now(&mut self) {
        match self
            .blocking(|s, _| Ok(s.shred_due(super::now_ms())?))
            .await
        {
            Ok(gone) => {
                let mut by_conv: std::collections::BTreeMap<String, Vec<[u8; 16]>> =
                    std::collections::BTreeMap::new();
                for (id, conv) in gone {
                    by_conv.entry(conv).or_default().push(id);
                }
                for (conversation, message_ids) in by_conv {
                    self.emit(SessionEvent::Shredded {
                        conversation,
                        message_ids,
                    });
                }
            }
            Err(e) => tracing::warn!("could not shred expired messages: {e}"),
        }
        self.schedule_shred().await;
    }

    /// Takes a policy from the relay if its signature verifies; false (and the previous policy
    /// stays) when it does not.
    pub(crate) fn set_policy(&mut self, p: protocol::Policy) -> bool {
        if !super::policy::verifies(self.admin_key.as_ref(), &self.network_id, &p) {
            tracing::warn!(
                "ignored a network policy whose signature does not verify against the pinned \
                 network admin key; keeping the previous one"
            );
            return false;
        }
        if let Ok(mut shared) = self.policy_shared.lock() {
            *shared = Some(p.clone());
        }
        let changed = self.policy.as_ref() != Some(&p);
        self.policy = Some(p.clone());
        if changed {
            self.emit(SessionEvent::PolicyChanged(p));
        }
        true
    }

    async fn set_read_receipts(&mut self, on: bool) -> Result<protocol::Policy, SessionError> {
        self.ensure_connected().await?;
        let conn = self.conn.as_ref().ok_or(SessionError::Stopped)?;
        match conn
            .request(Body::SetPolicy(protocol::SetPolicy {
                read_receipts: Some(on),
                max_expire_secs: None,
                max_burn_secs: None,
            }))
            .await?
        {
            Body::Policy(p) => {
                if self.set_policy(p.clone()) {
                    Ok(p)
                } else {
                    Err(SessionError::Protocol(
                        "the relay's policy is not signed by the network admin key".into(),
                    ))
                }
            }
            _ => Err(SessionError::Protocol(
                "unexpected answer to SetPolicy".into(),
            )),
        }
    }

    async fn create_invite(&mut self, email: String, admin: bool) -> Result<String, SessionError> {
        self.ensure_connected().await?;
        let conn = self.conn.as_ref().ok_or(SessionError::Stopped)?;
        match conn
            .request(Body::CreateInvite(protocol::CreateInvite {
                email,
                admin,
                valid_for_secs: 0,
            }))
            .await?
        {
            Body::InviteCreated(i) => Ok(i.code),
            _ => Err(SessionError::Protocol(
                "unexpected answer to CreateInvite".into(),
            )),
        }
    }

    async fn handle_push(&mut self, push: Push) {
        match push {
            Push::Delivery(d) => {
                let seq = d.seq;
                match self.process_push(d).await {
                    Ok(true) => {
                        if let Some(conn) = &self.conn {
                            let _ = conn
                                .send_only(Body::Ack(protocol::Ack { seqs: vec![seq] }))
                                .await;
                        }
                    }
                    // It overtook older mailbox items (a dropped push, or items stored before
                    // we connected): catch up in mailbox order, which includes it.
                    Ok(false) => {
                        if let Err(e) = self.fetch_all().await {
                            tracing::warn!("could not catch up with the mailbox: {e}");
                        }
                    }
                    // Not acknowledged: the relay delivers it again later.
                    Err(e) => tracing::warn!("could not process delivery: {e}"),
                }
            }
            Push::Policy(p) => {
                self.set_policy(p);
            }
            Push::Bye(reason) => self.lost(format!("relay is going away: {reason}")),
            Push::Closed => self.lost("connection closed".into()),
        }
    }

    fn lost(&mut self, reason: String) {
        if self.conn.take().is_none() {
            return;
        }
        self.connected
            .store(false, std::sync::atomic::Ordering::Release);
        let retry_in = self.schedule_retry();
        self.emit(SessionEvent::Disconnected { retry_in, reason });
    }

    fn schedule_retry(&mut self) -> Option<Duration> {
        if !self.opts.auto_reconnect {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_millis(250)
            .saturating_mul(1u32 << self.failures.min(10))
            .min(self.opts.reconnect_max);
        // Full jitter in [base/2, base]: spreads a fleet of clients after a relay restart.
        let r = primitives::random_array::<2>()
            .map(u16::from_le_bytes)
            .unwrap_or(0);
        let delay = base / 2 + base.mul_f64(f64::from(r) / f64::from(u16::MAX) / 2.0);
        self.next_attempt = Some(Instant::now() + delay);
        Some(delay)
    }

    /// Connects and logs in unless already connected; then maintains prekeys and delivers
    /// anything queued.
    pub(crate) async fn ensure_connected(&mut self) -> Result<(), SessionError> {
        if self.conn.is_some() {
            return Ok(());
        }
        match self.connect().await {
            Ok(()) => {
                self.failures = 0;
                self.connected
                    .store(true, std::sync::atomic::Ordering::Release);
                self.emit(SessionEvent::Connected);
                if let Err(e) = self.maintain_prekeys().await {
                    tracing::warn!("prekey maintenance failed: {e}");
                }
                // A background engine catches up by itself; one-shot callers flush and sync
                // explicitly so they see the outcome (e.g. a permanently failed message).
                if self.opts.auto_reconnect {
                    if let Err(e) = self.flush_outbox().await {
                        tracing::debug!("outbox after connect: {e}");
                    }
                    if let Err(e) = self.fetch_all().await {
                        tracing::debug!("mailbox after connect: {e}");
                    }
                }
                Ok(())
            }
            Err(e) => {
                let retry_in = self.schedule_retry();
                self.emit(SessionEvent::Disconnected {
                    retry_in,
                    reason: e.to_string(),
                });
                Err(e)
            }
        }
    }

    async fn connect(&mut self) -> Result<(), SessionError> {
        let (conn, hello) =
            Connection::open(&self.url, self.opts.ca_pem.as_deref(), self.push_tx.clone()).await?;
        if !self.relay_id.is_empty() && hello.relay_id != self.relay_id {
            return Err(SessionError::WrongRelay);
        }
        if self.admin_key.is_none() {
            self.pin_admin_key(&hello.network_admin_key)?;
        }
        let msg = protocol::login_message(&hello.challenge, &hello.relay_id);
        let signature = self.keys.device.signing.sign(&msg).to_vec();
        let auth = conn
            .request(Body::Login(protocol::Login {
                username: self.keys.username.clone(),
                device_id: self.keys.device_id.to_vec(),
                signature,
            }))
            .await?;
        let Body::Authenticated(a) = auth else {
            return Err(SessionError::Protocol("unexpected answer to Login".into()));
        };
        self.conn = Some(conn);
        self.prekey_counts = Some((a.one_time_prekeys_left, a.pq_prekeys_left));
        if let Some(p) = a.policy {
            self.set_policy(p);
        }
        Ok(())
    }

    /// Pins the network admin key of a profile registered before policies were signed, from
    /// the relay it already trusts (its relay id matched); registration pins it otherwise.
    fn pin_admin_key(&mut self, key: &[u8]) -> Result<(), SessionError> {
        let Some(key) = super::policy::pinned(Some(key)) else {
            return Ok(());
        };
        self.store
            .lock()
            .map_err(|_| SessionError::Stopped)?
            .db()
            .put_blob(super::policy::NAK_BLOB, &key)?;
        self.admin_key = Some(key);
        Ok(())
    }
}
