//! The accept loop: connection limit, optional TLS, WebSocket upgrade, drain on shutdown.
//!
//! Every accepted socket becomes one task in a `JoinSet` owned by the accept loop, so a graceful
//! shutdown can wait for all of them and a crash simulation (aborting the loop) tears them all
//! down at once. Handshakes (TLS, then the WebSocket upgrade) run inside the connection's task
//! under a timeout and are boxed, so their sizeable state does not stay in the memory of every
//! idle connection after it is done. Sockets above the limit still get a WebSocket answer
//! saying so, from a small, separately bounded pool of rejecting tasks. The sweeper deletes
//! expired items every `sweep_interval` (one second by default).

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "test-hooks")]
use super::Tamper;
use super::network::Network;
use super::registry::Registry;
use super::store::{RelayStore, StoredPolicy};
use super::{DRAIN_TIMEOUT, RelayConfig, RelayError, conn};
use crate::clock::Clock;
use crate::crypto::primitives::SigningKeyPair;
use crate::protocol::{Delivery, RoomLog};

/// How long the TLS handshake and the WebSocket upgrade may take together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections above the limit answered at the same time; beyond this they are just dropped.
const MAX_REJECTING: usize = 64;
/// tungstenite's read buffer per connection (its default of 128 KiB would dominate idle cost).
const READ_BUFFER: usize = 4 * 1024;

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn RelayStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) relay_id: Vec<u8>,
    pub(crate) network_id: String,
    pub(crate) network_name: String,
    pub(crate) admin_key: [u8; 32],
    /// Signs the policy (see `rooms::policy_message`).
    pub(crate) admin: SigningKeyPair,
    pub(crate) max_frame: usize,
    pub(crate) max_connections: usize,
    pub(crate) rate_per_sec: u32,
    pub(crate) rate_burst: u32,
    pub(crate) invite_validity: Duration,
    pub(crate) max_mailbox_fetch: u32,
    pub(crate) max_room_members: u32,
    #[cfg(feature = "test-hooks")]
    tamper: Option<Arc<dyn Tamper>>,
    /// Wall time for expiry, delete-by times and timestamps.
    pub(crate) clock: Clock,
    /// Serialises policy changes so the cached copy ends as the last committed one.
    pub(crate) policy_lock: tokio::sync::Mutex<()>,
    policy: Mutex<StoredPolicy>,
    ws_config: WebSocketConfig,
    connections: AtomicUsize,
    rejecting: AtomicUsize,
    next_conn: AtomicU64,
}

/// The WebSocket message limit for a relay frame limit of `max_frame`.
fn ws_limit(max_frame: usize) -> usize {
    max_frame.saturating_add((max_frame / 4).max(64 * 1024))
}

impl Shared {
    pub(crate) fn new(
        config: &RelayConfig,
        net: Network,
        policy: StoredPolicy,
        store: Arc<dyn RelayStore>,
        shutdown: CancellationToken,
    ) -> Self {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            // Frames are written as soon as they are queued; nothing waits to be batched.
            .write_buffer_size(0)
            // Backpressure instead of unbounded buffering towards a slow reader.
            .max_write_buffer_size(config.max_frame.saturating_mul(2).max(64 * 1024))
            // Headroom above our own limit: a request slightly too large still arrives whole,
            // so it can be refused with an answer while the connection stays up.
            .max_message_size(Some(ws_limit(config.max_frame)))
            .max_frame_size(Some(ws_limit(config.max_frame)));
        Self {
            store,
            registry: Arc::new(Registry::new(config.rate_per_sec, config.rate_burst)),
            shutdown,
            relay_id: net.relay_id,
            network_id: net.network_id,
            network_name: net.network_name,
            admin_key: net.admin_key,
            admin: net.admin,
            max_frame: config.max_frame,
            max_connections: config.max_connections,
            rate_per_sec: config.rate_per_sec,
            rate_burst: config.rate_burst,
            invite_validity: config.invite_validity,
            max_mailbox_fetch: config.max_mailbox_fetch,
            max_room_members: config.max_room_members,
            #[cfg(feature = "test-hooks")]
            tamper: config.tamper.clone(),
            clock: config.clock,
            policy_lock: tokio::sync::Mutex::new(()),
            policy: Mutex::new(policy),
            ws_config,
            connections: AtomicUsize::new(0),
            rejecting: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The stored network policy as last committed.
    pub(crate) fn policy(&self) -> StoredPolicy {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a newly committed policy.
    pub(crate) fn set_policy(&self, policy: StoredPolicy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// What is sent for one delivery to `to_device` of `to_user`: the delivery itself, or what a
    /// test's tamper hook makes of it (only with the `test-hooks` feature).
    pub(crate) fn outgoing_delivery(
        &self,
        to_user: &str,
        to_device: &[u8; 16],
        d: Delivery,
    ) -> Vec<Delivery> {
        #[cfg(feature = "test-hooks")]
        if let Some(t) = &self.tamper {
            return t.delivery(to_user, to_device, d);
        }
        let _ = (to_user, to_device);
        vec![d]
    }

    /// How long to hold back the answer to a request of `from_user` (named by its kind): a
    /// test's tamper hook can play a slow relay (only with the `test-hooks` feature).
    pub(crate) fn held_reply(
        &self,
        from_user: &str,
        request: &str,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        #[cfg(feature = "test-hooks")]
        if let Some(t) = &self.tamper {
            return t.hold(from_user, request);
        }
        let _ = (from_user, request);
        None
    }

    /// What is sent for one `RoomLog` answer to `to_user` (see [`Self::outgoing_delivery`]).
    pub(crate) fn outgoing_room_log(&self, to_user: &str, log: RoomLog) -> RoomLog {
        #[cfg(feature = "test-hooks")]
        if let Some(t) = &self.tamper {
            return t.room_log(to_user, log);
        }
        let _ = to_user;
        log
    }
}

/// Holds one unit of a counter and gives it back when dropped.
struct CounterSlot {
    shared: Arc<Shared>,
    rejecting: bool,
}

impl CounterSlot {
    fn counter(shared: &Shared, rejecting: bool) -> &AtomicUsize {
        if rejecting {
            &shared.rejecting
        } else {
            &shared.connections
        }
    }

    fn acquire(shared: &Arc<Shared>, rejecting: bool) -> Option<Self> {
        let limit = if rejecting {
            MAX_REJECTING
        } else {
            shared.max_connections
        };
        let counter = Self::counter(shared, rejecting);
        let previous = counter.fetch_add(1, Ordering::AcqRel);
        if previous >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            shared: shared.clone(),
            rejecting,
        })
    }
}

impl Drop for CounterSlot {
    fn drop(&mut self) {
        Self::counter(&self.shared, self.rejecting).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Loads the PEM certificate chain and private key into a TLS acceptor.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, RelayError> {
    let open = |p: &Path| {
        File::open(p)
            .map(BufReader::new)
            .map_err(|e| RelayError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RelayError::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(RelayError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| RelayError::Tls(format!("bad private key PEM: {e}")))?
        .ok_or_else(|| RelayError::Tls(format!("no private key in {}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until shutdown, then waits for them to drain.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                if let Some(slot) = CounterSlot::acquire(&shared, false) {
                    tasks.spawn(connection(shared.clone(), tcp, peer, tls.clone(), slot, false));
                } else if let Some(slot) = CounterSlot::acquire(&shared, true) {
                    tracing::warn!(%peer, "connection limit reached");
                    tasks.spawn(connection(shared.clone(), tcp, peer, tls.clone(), slot, true));
                }
            }
        }
    }
    drop(listener);
    let drained = timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections did not drain in time; aborting them"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// One accepted socket: TLS if configured, the upgrade, then the protocol (or the rejection).
async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    _slot: CounterSlot,
    reject: bool,
) {
    match tls {
        None => upgraded(shared, tcp, peer, reject).await,
        // Boxed: the TLS session is large and must not be reserved in the future of every
        // plain connection too.
        Some(acceptor) => Box::pin(tls_connection(shared, tcp, peer, acceptor, reject)).await,
    }
}

async fn tls_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    reject: bool,
) {
    let handshake = Box::pin(timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)));
    let stream = tokio::select! {
        () = shared.shutdown.cancelled() => return,
        r = handshake => r,
    };
    match stream {
        Ok(Ok(stream)) => upgraded(shared, stream, peer, reject).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
    }
}

async fn upgraded<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, reject: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let upgrade = Box::pin(timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_async_with_config(stream, Some(shared.ws_config)),
    ));
    let ws = tokio::select! {
        () = shared.shutdown.cancelled() => return,
        r = upgrade => r,
    };
    let ws = match ws {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "websocket upgrade failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket upgrade timed out");
            return;
        }
    };
    if reject {
        // Boxed: rejections are rare and their closing state should not enlarge every
        // connection's future.
        Box::pin(conn::reject(ws)).await;
    } else {
        conn::run(shared, ws, peer).await;
    }
}

/// Deletes expired items every `every` until shutdown; after each sweep, publishes the time
/// it started on `swept`.
pub(crate) async fn sweep_loop(
    store: Arc<dyn RelayStore>,
    every: Duration,
    clock: Clock,
    swept: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    // A slow sweep (a large checkpoint) is not followed by a burst of catch-up sweeps.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let started = clock.now_ms();
                match store.sweep().await {
                    Ok(_) => {
                        swept.send_replace(started);
                    }
                    Err(e) => tracing::warn!(error = %e, "relay sweep failed"),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Every idle connection keeps its whole task future allocated, so the future must stay
    /// small: large or rare states (handshakes, TLS, closing, request handling) are boxed.
    /// The bounds are about twice today's unoptimised sizes, to catch an accidental inline
    /// buffer rather than compiler noise.
    #[tokio::test]
    async fn idle_connection_futures_stay_small() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            super::super::sqlite::SqliteStore::open(
                &dir.path().join("relay.db"),
                crate::clock::Clock::system(),
            )
            .unwrap(),
        );
        let config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let net = Network {
            network_id: String::new(),
            network_name: String::new(),
            relay_id: Vec::new(),
            admin_key: [0; 32],
            admin: SigningKeyPair::generate().unwrap(),
            created_invite: None,
        };
        let policy = store.policy().await.unwrap();
        let shared = Arc::new(Shared::new(
            &config,
            net,
            policy,
            store.clone(),
            CancellationToken::new(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let slot = CounterSlot::acquire(&shared, false).unwrap();
        let task = connection(shared.clone(), tcp, peer, None, slot, false);
        let task_size = std::mem::size_of_val(&task);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            tokio::io::duplex(64).0,
            Role::Server,
            None,
        )
        .await;
        let run = conn::run(shared.clone(), ws, peer);
        let run_size = std::mem::size_of_val(&run);
        println!("connection task future: {task_size} bytes; protocol loop: {run_size} bytes");
        assert!(task_size <= 4096, "{task_size}");
        assert!(run_size <= 2048, "{run_size}");
        drop((task, run));
        store.close().await.unwrap();
    }
}
