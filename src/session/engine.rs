//! The engine: an actor that owns the timers and the command queue, and child tasks that do
//! the round trips. Connection lifecycle, reconnect with backoff and jitter, command handling.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::commands::{Call, Runs};
use super::connection::{Connection, Push};
use super::{
    AccountInfo, Command, ConversationSummary, EngineOptions, Inbound, Keys, MessageRecord, Queued,
    RoomInfo, RoomKind, RoomRequest, SendOptions, SessionError, SessionEvent, SessionHandle,
    TimerPair,
};
use crate::crypto::primitives;
use crate::protocol::{self, frame::Body};
use crate::store::{AccountRecord, Store};

/// Most sequence numbers acknowledged in one frame (the relay accepts up to 10,000).
const ACK_BATCH: usize = 256;

pub(crate) struct Engine {
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) keys: Arc<Keys>,
    pub(crate) url: String,
    pub(crate) relay_id: Vec<u8>,
    pub(crate) opts: EngineOptions,
    conn: Mutex<Option<Arc<Connection>>>,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    push_tx: mpsc::Sender<Push>,
    /// Sequence numbers of processed pushes not yet acknowledged: acks go out in batches
    /// when the push queue is empty, so a burst of pushes costs the relay a few acks.
    pending_acks: Mutex<Vec<u64>>,
    /// The relay's frame limit from the last hello (the default until we connect).
    max_frame: AtomicUsize,
    prekey_counts: Mutex<Option<(u32, u32)>>,
    connected: Arc<AtomicBool>,
    /// The network policy from the last login or push whose signature verified (shared with
    /// the handle).
    policy: Arc<Mutex<Option<protocol::Policy>>>,
    /// The network admin key pinned at registration; it signs the policy.
    admin_key: Mutex<Option<[u8; 32]>>,
    network_id: String,
    /// Bumped whenever a user's device list in the cache changes.
    devices_epoch: AtomicU64,
    /// Rooms whose sender key was reconciled with the member devices, at which (log head,
    /// devices epoch): a send in a steady room skips the per-member work.
    room_keys_ok: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// The actor's timers: reconnect backoff and the next shred.
    timers: Mutex<ActorTimers>,
    /// Wakes the actor: a timer changed, a flush or a catch-up is wanted.
    wake: Notify,
    /// Held while connecting, so concurrent commands open one connection.
    connect_lock: tokio::sync::Mutex<()>,
    /// Held while delivering the outbox: items leave it in order, each encrypted once.
    pub(crate) outbox_lock: tokio::sync::Mutex<()>,
    /// Held while processing deliveries (pushes and fetched pages): the mailbox is applied in
    /// order.
    pub(crate) inbox_lock: tokio::sync::Mutex<()>,
    /// Held by room-changing commands so that two changes of this device do not race.
    room_lock: tokio::sync::Mutex<()>,
}

/// What the actor waits for besides commands.
#[derive(Default)]
struct ActorTimers {
    failures: u32,
    next_attempt: Option<Instant>,
    next_shred: Option<Instant>,
    /// The outbox should be delivered (something was queued while connected, or we
    /// reconnected).
    flush_wanted: bool,
    /// The mailbox should be fetched (we reconnected).
    fetch_wanted: bool,
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it: every value kept
/// under these locks is valid at every point a panic could interrupt.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the engine for an unlocked store.
///
/// # Errors
/// [`SessionError::NotRegistered`] if the store has no account, or key decoding errors.
pub fn spawn(mut store: Store, opts: EngineOptions) -> Result<SessionHandle, SessionError> {
    let account: AccountRecord = store.db().account()?.ok_or(SessionError::NotRegistered)?;
    // Expiries and burns that fell due while we were not running are applied before anything
    // can be shown.
    let shredded = store.shred_due(opts.clock.now_ms())?;
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
    let (push_tx, push_rx) = mpsc::channel(super::connection::PUSH_QUEUE);
    let auto = opts.auto_reconnect;
    let engine = Arc::new(Engine {
        store: Arc::new(Mutex::new(store)),
        keys,
        url: account.server_url.clone(),
        relay_id: account.relay_id.clone(),
        opts,
        conn: Mutex::new(None),
        events: events.clone(),
        push_tx,
        pending_acks: Mutex::new(Vec::new()),
        max_frame: AtomicUsize::new(protocol::DEFAULT_MAX_FRAME),
        prekey_counts: Mutex::new(None),
        connected: Arc::new(AtomicBool::new(false)),
        policy: Arc::new(Mutex::new(None)),
        admin_key: Mutex::new(admin_key),
        network_id: account.network_id.clone(),
        devices_epoch: AtomicU64::new(0),
        room_keys_ok: Mutex::new(std::collections::HashMap::new()),
        timers: Mutex::new(ActorTimers {
            next_attempt: auto.then(Instant::now),
            ..ActorTimers::default()
        }),
        wake: Notify::new(),
        connect_lock: tokio::sync::Mutex::new(()),
        outbox_lock: tokio::sync::Mutex::new(()),
        inbox_lock: tokio::sync::Mutex::new(()),
        room_lock: tokio::sync::Mutex::new(()),
    });
    let connected = Arc::clone(&engine.connected);
    let policy = Arc::clone(&engine.policy);
    let pushes = engine.push_tx.downgrade();
    tokio::spawn(engine.run(cmd_rx, push_rx));
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
        pushes,
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

    /// The live connection, or [`SessionError::Unreachable`].
    pub(crate) fn conn(&self) -> Result<Arc<Connection>, SessionError> {
        lock(&self.conn)
            .clone()
            .ok_or_else(|| SessionError::Unreachable("not connected".into()))
    }

    /// Whether a connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        lock(&self.conn).is_some()
    }

    /// The network policy from the last login or push.
    pub(crate) fn policy(&self) -> Option<protocol::Policy> {
        lock(&self.policy).clone()
    }

    /// The relay's frame limit.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// The device-list epoch (see `room_keys_ok`).
    pub(crate) fn devices_epoch(&self) -> u64 {
        self.devices_epoch.load(Ordering::Acquire)
    }

    /// Records that some user's device list changed.
    pub(crate) fn bump_devices_epoch(&self) {
        self.devices_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The (log head, devices epoch) at which `room`'s sender key was last reconciled.
    pub(crate) fn room_key_checked(&self, room: &str) -> Option<(u64, u64)> {
        lock(&self.room_keys_ok).get(room).copied()
    }

    /// Records a reconciled sender key for `room`.
    pub(crate) fn set_room_key_checked(&self, room: String, at: (u64, u64)) {
        lock(&self.room_keys_ok).insert(room, at);
    }

    /// Takes the prekey counts the last login reported (maintenance runs once per login).
    pub(crate) fn take_prekey_counts(&self) -> Option<(u32, u32)> {
        lock(&self.prekey_counts).take()
    }

    /// Asks the actor to deliver the outbox in the background.
    pub(crate) fn want_flush(&self) {
        lock(&self.timers).flush_wanted = true;
        self.wake.notify_one();
    }

    /// The actor: it owns the timers and the command queue and never waits for the network.
    /// Every command that needs a round trip runs as a child task, so a stalled request
    /// holds up only itself; deliveries are applied in order by one inbox task.
    async fn run(
        self: Arc<Self>,
        mut cmd_rx: mpsc::Receiver<Command>,
        push_rx: mpsc::Receiver<Push>,
    ) {
        let mut shutdown_reply = None;
        let mut tasks = JoinSet::new();
        let inbox = tokio::spawn(Arc::clone(&self).inbox(push_rx));
        self.schedule_shred().await;
        let mut flushing = false;
        loop {
            let (wake, shred_at, flush, fetch) = {
                let mut t = lock(&self.timers);
                let flush = t.flush_wanted && !flushing;
                if flush {
                    t.flush_wanted = false;
                }
                (
                    t.next_attempt,
                    t.next_shred,
                    flush,
                    std::mem::take(&mut t.fetch_wanted),
                )
            };
            if flush {
                flushing = true;
                let e = Arc::clone(&self);
                tasks.spawn(async move {
                    if let Err(err) = e.flush_outbox().await {
                        tracing::debug!("background flush: {err}");
                    }
                    Done::Flush
                });
            }
            if fetch {
                let e = Arc::clone(&self);
                tasks.spawn(async move {
                    if let Err(err) = e.fetch_all().await {
                        tracing::debug!("mailbox after connect: {err}");
                    }
                    Done::Other
                });
            }
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        shutdown_reply = Some(reply);
                        break;
                    }
                    Some(Command::Call(call)) => Arc::clone(&self).dispatch(call, &mut tasks).await,
                },
                () = self.wake.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if matches!(done, Ok(Done::Flush)) {
                        flushing = false;
                    }
                }
                () = sleep_until_opt(wake) => {
                    lock(&self.timers).next_attempt = None;
                    let e = Arc::clone(&self);
                    tasks.spawn(async move {
                        if let Err(err) = e.ensure_connected().await {
                            tracing::debug!("reconnect failed: {err}");
                        }
                        Done::Other
                    });
                }
                () = sleep_until_opt(shred_at) => {
                    lock(&self.timers).next_shred = None;
                    let e = Arc::clone(&self);
                    tasks.spawn(async move {
                        e.shred_now().await;
                        Done::Other
                    });
                }
            }
        }
        // Stop everything in flight, then close the connection and the cache (releasing the
        // profile lock) before telling the caller we are done, so it can reopen the profile
        // at once.
        tasks.abort_all();
        inbox.abort();
        while tasks.join_next().await.is_some() {}
        let _ = inbox.await;
        *lock(&self.conn) = None;
        // A cache call of an aborted task finishes on its blocking thread and then lets go.
        // Real time, waited for on the blocking pool: under a paused test clock a tokio sleep
        // would leap ahead and give up before the blocking thread is done.
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.store) > 1 && std::time::Instant::now() < give_up {
            let _ =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(2))).await;
        }
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Starts one command. Commands declared `actor` (queuing a message, retrying one) run
    /// here, in the actor, so messages enter the outbox in the order they were sent;
    /// everything else runs as a child task.
    async fn dispatch(self: Arc<Self>, call: Call, tasks: &mut JoinSet<Done>) {
        match call.runs() {
            Runs::Actor => self.run_call(call).await,
            Runs::Task => {
                tasks.spawn(async move {
                    self.run_call(call).await;
                    Done::Other
                });
            }
        }
    }

    // The command handlers (declared in `session::commands`).

    pub(crate) async fn cmd_send_message(
        &self,
        to: String,
        text: String,
        opts: SendOptions,
    ) -> Result<Queued, SessionError> {
        let r = self.queue_text(&to, &text, opts).await;
        if r.is_ok() && self.is_connected() {
            self.want_flush();
        }
        r
    }

    /// A retry enters the outbox in the actor too, in order with new messages.
    pub(crate) async fn cmd_retry(&self, message_id: [u8; 16]) -> Result<(), SessionError> {
        let r = self.retry_failed(message_id).await;
        if r.is_ok() && self.is_connected() {
            self.want_flush();
        }
        r
    }

    pub(crate) async fn cmd_flush(&self) -> Result<(), SessionError> {
        self.ensure_connected().await?;
        self.flush_outbox().await
    }

    pub(crate) async fn cmd_sync(&self) -> Result<Vec<Inbound>, SessionError> {
        self.ensure_connected().await?;
        self.fetch_all().await
    }

    pub(crate) async fn cmd_conversations(&self) -> Result<Vec<ConversationSummary>, SessionError> {
        self.blocking(|s, _| Ok(s.db().conversations()?)).await
    }

    pub(crate) async fn cmd_history(
        &self,
        conversation: String,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, SessionError> {
        self.blocking(move |s, _| Ok(s.db().history(&conversation, limit)?))
            .await
    }

    pub(crate) async fn cmd_history_before(
        &self,
        conversation: String,
        before: Option<[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, SessionError> {
        self.blocking(move |s, _| Ok(s.db().history_before(&conversation, before, limit)?))
            .await
    }

    pub(crate) async fn cmd_search(
        &self,
        query: String,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, SessionError> {
        self.blocking(move |s, _| Ok(s.db().search(&query, limit)?))
            .await
    }

    pub(crate) async fn cmd_search_in(
        &self,
        conversation: String,
        query: String,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, SessionError> {
        self.blocking(move |s, _| Ok(s.db().search_in(&conversation, &query, limit)?))
            .await
    }

    pub(crate) async fn cmd_create_room(
        &self,
        kind: RoomKind,
        title: String,
        description: String,
        members: Vec<String>,
    ) -> Result<RoomInfo, SessionError> {
        let _room = self.room_lock.lock().await;
        self.create_room(kind, title, description, members).await
    }

    pub(crate) async fn cmd_change_room(
        &self,
        room: String,
        request: RoomRequest,
    ) -> Result<RoomInfo, SessionError> {
        let _room = self.room_lock.lock().await;
        self.room_request(&room, request).await
    }

    pub(crate) async fn cmd_rooms(&self) -> Result<Vec<RoomInfo>, SessionError> {
        self.blocking(|s, keys| super::rooms::list_rooms(&s.db(), &keys.username))
            .await
    }

    pub(crate) async fn cmd_room(&self, reference: String) -> Result<RoomInfo, SessionError> {
        self.blocking(move |s, keys| {
            let db = s.db();
            let id = super::rooms::resolve(&db, &keys.username, &reference)?;
            super::rooms::room_info(&db, &keys.username, &id)
        })
        .await
    }

    pub(crate) async fn cmd_set_timers(
        &self,
        conversation: String,
        expire_after: Option<u32>,
        burn_after: Option<u32>,
    ) -> Result<(), SessionError> {
        let _room = self.room_lock.lock().await;
        self.set_conversation_timers(&conversation, expire_after, burn_after)
            .await
    }

    pub(crate) async fn cmd_timers(&self, conversation: String) -> Result<TimerPair, SessionError> {
        self.blocking(move |s, _| Ok(s.db().conversation_timers(&conversation)?))
            .await
    }

    pub(crate) async fn cmd_failure(
        &self,
        message_id: [u8; 16],
    ) -> Result<Option<String>, SessionError> {
        self.blocking(move |s, _| Ok(s.db().failure(&message_id)?))
            .await
    }

    /// Arms the shred timer for the earliest pending expiry or burn.
    pub(crate) async fn schedule_shred(&self) {
        let next = match self.blocking(|s, _| Ok(s.db().next_deletion()?)).await {
            Ok(Some(at)) => Some(self.opts.clock.deadline(at)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("could not read message timers: {e}");
                return;
            }
        };
        lock(&self.timers).next_shred = next;
        self.wake.notify_one();
    }

    /// Shreds every message whose timer fired and tells observers.
    pub(crate) async fn shred_now(&self) {
        let clock = self.opts.clock;
        match self
            .blocking(move |s, _| Ok(s.shred_due(clock.now_ms())?))
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
    pub(crate) fn set_policy(&self, p: protocol::Policy) -> bool {
        let key = *lock(&self.admin_key);
        if !super::policy::verifies(key.as_ref(), &self.network_id, &p) {
            tracing::warn!(
                "ignored a network policy whose signature does not verify against the pinned \
                 network admin key; keeping the previous one"
            );
            return false;
        }
        let changed = {
            let mut shared = lock(&self.policy);
            let changed = shared.as_ref() != Some(&p);
            *shared = Some(p.clone());
            changed
        };
        if changed {
            self.emit(SessionEvent::PolicyChanged(p));
        }
        true
    }

    pub(crate) async fn set_read_receipts(
        &self,
        on: bool,
    ) -> Result<protocol::Policy, SessionError> {
        self.ensure_connected().await?;
        match self
            .conn()?
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

    pub(crate) async fn create_invite(
        &self,
        email: String,
        admin: bool,
    ) -> Result<String, SessionError> {
        self.ensure_connected().await?;
        match self
            .conn()?
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

    /// The inbox task: applies pushes one at a time, in arrival order.
    async fn inbox(self: Arc<Self>, mut push_rx: mpsc::Receiver<Push>) {
        while let Some(push) = push_rx.recv().await {
            self.handle_push(push).await;
            if push_rx.is_empty() || lock(&self.pending_acks).len() >= ACK_BATCH {
                self.flush_acks().await;
            }
        }
    }

    async fn handle_push(&self, push: Push) {
        match push {
            Push::Delivery(d) => {
                let seq = d.seq;
                let processed = {
                    let _inbox = self.inbox_lock.lock().await;
                    self.process_push(d).await
                };
                match processed {
                    Ok(true) => lock(&self.pending_acks).push(seq),
                    // It overtook older mailbox items (a dropped push, or items stored before
                    // we connected): catch up in mailbox order, which includes it.
                    Ok(false) => self.catch_up().await,
                    // Not acknowledged: the relay delivers it again with the mailbox, where a
                    // delivery that still fails is recorded and acknowledged (see fetch_all).
                    Err(e) => tracing::warn!("could not process delivery: {e}"),
                }
            }
            Push::Overflowed => self.catch_up().await,
            Push::Policy(p) => {
                self.set_policy(p);
            }
            Push::Bye(reason) => self.lost(format!("relay is going away: {reason}")),
            Push::Closed => self.lost("connection closed".into()),
        }
    }

    /// Fetches the mailbox after pushes were skipped or dropped.
    async fn catch_up(&self) {
        self.flush_acks().await;
        if let Err(e) = self.fetch_all().await {
            tracing::warn!("could not catch up with the mailbox: {e}");
        }
    }

    /// Acknowledges the processed pushes in one frame (the relay deletes them).
    async fn flush_acks(&self) {
        let seqs = std::mem::take(&mut *lock(&self.pending_acks));
        if seqs.is_empty() {
            return;
        }
        if let Ok(conn) = self.conn() {
            for chunk in seqs.chunks(ACK_BATCH) {
                // Unacknowledged items come again with the next fetch and are recognised as
                // processed, so a lost ack costs a resend, not a duplicate.
                let _ = conn
                    .send_only(Body::Ack(protocol::Ack {
                        seqs: chunk.to_vec(),
                    }))
                    .await;
            }
        }
    }

    fn lost(&self, reason: String) {
        if lock(&self.conn).take().is_none() {
            return;
        }
        self.connected.store(false, Ordering::Release);
        let retry_in = self.schedule_retry();
        self.emit(SessionEvent::Disconnected { retry_in, reason });
    }

    fn schedule_retry(&self) -> Option<Duration> {
        if !self.opts.auto_reconnect {
            return None;
        }
        let mut t = lock(&self.timers);
        t.failures = t.failures.saturating_add(1);
        let base = Duration::from_millis(250)
            .saturating_mul(1u32 << t.failures.min(10))
            .min(self.opts.reconnect_max);
        // Full jitter in [base/2, base]: spreads a fleet of clients after a relay restart.
        let r = primitives::random_array::<2>()
            .map(u16::from_le_bytes)
            .unwrap_or(0);
        let delay = base / 2 + base.mul_f64(f64::from(r) / f64::from(u16::MAX) / 2.0);
        t.next_attempt = Some(Instant::now() + delay);
        drop(t);
        self.wake.notify_one();
        Some(delay)
    }

    /// Connects and logs in unless already connected; then maintains prekeys and, for a
    /// background engine, asks the actor to deliver anything queued and fetch the mailbox.
    pub(crate) async fn ensure_connected(&self) -> Result<(), SessionError> {
        if self.is_connected() {
            return Ok(());
        }
        let _connecting = self.connect_lock.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        match self.connect().await {
            Ok(()) => {
                {
                    let mut t = lock(&self.timers);
                    t.failures = 0;
                    t.next_attempt = None;
                }
                self.connected.store(true, Ordering::Release);
                self.emit(SessionEvent::Connected);
                if let Err(e) = self.maintain_prekeys().await {
                    tracing::warn!("prekey maintenance failed: {e}");
                }
                // A background engine catches up by itself; one-shot callers flush and sync
                // explicitly so they see the outcome (e.g. a permanently failed message).
                if self.opts.auto_reconnect {
                    let mut t = lock(&self.timers);
                    t.flush_wanted = true;
                    t.fetch_wanted = true;
                    drop(t);
                    self.wake.notify_one();
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

    async fn connect(&self) -> Result<(), SessionError> {
        let (conn, hello) =
            Connection::open(&self.url, self.opts.ca_pem.as_deref(), self.push_tx.clone()).await?;
        if !self.relay_id.is_empty() && hello.relay_id != self.relay_id {
            return Err(SessionError::WrongRelay);
        }
        self.max_frame.store(conn.max_frame(), Ordering::Relaxed);
        if lock(&self.admin_key).is_none() {
            self.pin_admin_key(&hello.network_admin_key).await?;
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
        *lock(&self.prekey_counts) = Some((a.one_time_prekeys_left, a.pq_prekeys_left));
        *lock(&self.conn) = Some(Arc::new(conn));
        if let Some(p) = a.policy {
            self.set_policy(p);
        }
        Ok(())
    }

    /// Pins the network admin key of a profile registered before policies were signed, from
    /// the relay it already trusts (its relay id matched); registration pins it otherwise.
    async fn pin_admin_key(&self, key: &[u8]) -> Result<(), SessionError> {
        let Some(key) = super::policy::pinned(Some(key)) else {
            return Ok(());
        };
        self.blocking(move |s, _| Ok(s.db().put_blob(super::policy::NAK_BLOB, &key)?))
            .await?;
        *lock(&self.admin_key) = Some(key);
        Ok(())
    }
}

/// How a child task ended, for the actor's bookkeeping.
enum Done {
    Flush,
    Other,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
