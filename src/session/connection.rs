//! One authenticated WebSocket connection to the relay.
//!
//! A reader task matches responses to requests by frame id and forwards pushes (`Delivery`,
//! `Bye`) to the engine; a writer task owns the sink. Requests never block the engine: each
//! waits on its own oneshot with a timeout.
//!
//! Two rules keep one bad item from locking a user out. Every request is checked against the
//! frame limit the relay announced in its hello before it is sent (an oversized one is refused
//! here, with the sizes, and never reaches the relay). And the queue of pushes towards the
//! engine is bounded: when it is full a delivery push is dropped and the engine told to catch up
//! from the mailbox, where the relay keeps every delivery until it is acknowledged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::SessionError;
use crate::client::retry;
use crate::protocol::{
    self, DEFAULT_MAX_FRAME, ErrorCode, ErrorReply, Frame, MAX_FRAME_LIMIT, ServerHello,
    frame::Body,
};

/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting (TCP, TLS, WebSocket, hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many pushes may wait for the engine. A relay that pushes faster than the engine reads
/// fills this and no more: further delivery pushes are dropped (they stay in the mailbox).
pub const PUSH_QUEUE: usize = 256;
/// How long one request may wait in total for the relay's rate limit before the caller is told.
pub const RATE_LIMIT_BUDGET: Duration = retry::BUDGET;
/// The largest frame a client accepts from a relay: a relay may be configured up to
/// [`MAX_FRAME_LIMIT`] and sends one oversized mailbox item alone, with a little framing.
pub const MAX_INCOMING_FRAME: usize = MAX_FRAME_LIMIT + 64 * 1024;

/// What the reader forwards to the engine.
#[derive(Debug)]
pub enum Push {
    /// A new mailbox item.
    Delivery(protocol::Delivery),
    /// The network policy changed.
    Policy(protocol::Policy),
    /// Delivery pushes were dropped because the engine fell behind: fetch the mailbox.
    Overflowed,
    /// The relay is draining.
    Bye(String),
    /// The connection ended.
    Closed,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Body>>>>;

/// A live connection.
pub struct Connection {
    out: mpsc::Sender<Message>,
    waiters: Waiters,
    next_id: AtomicU64,
    /// The largest frame the relay accepts (from its hello).
    max_frame: usize,
    /// Set by the reader when the connection has ended: a request made after that fails at
    /// once instead of waiting for an answer that cannot come.
    closed: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether `url` may be used given the user's choice about plain `ws://`.
///
/// # Errors
/// [`SessionError::InsecureUrl`] for `ws://` to a non-loopback host without the opt-in,
/// [`SessionError::BadUrl`] for anything that is not `ws://` or `wss://`.
pub fn check_url(url: &str, allow_insecure_ws: bool) -> Result<(), SessionError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| SessionError::BadUrl(url.to_owned()))?;
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(SessionError::BadUrl(url.to_owned()));
    }
    match scheme {
        "wss" => Ok(()),
        "ws" => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback || allow_insecure_ws {
                Ok(())
            } else {
                Err(SessionError::InsecureUrl(url.to_owned()))
            }
        }
        _ => Err(SessionError::BadUrl(url.to_owned())),
    }
}

fn tls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_tungstenite::Connector, SessionError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| SessionError::Tls(format!("bad CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| SessionError::Tls(format!("bad CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SessionError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}

impl Connection {
    /// Connects, reads the relay's hello, and starts the reader and writer tasks.
    ///
    /// # Errors
    /// [`SessionError::Unreachable`] when the relay cannot be reached in time.
    pub async fn open(
        url: &str,
        ca_pem: Option<&[u8]>,
        pushes: mpsc::Sender<Push>,
    ) -> Result<(Self, ServerHello), SessionError> {
        // Incoming frames may be larger than our own default: a relay configured with a larger
        // limit stores (and then delivers) larger items. Refusing them at the socket would
        // drop the connection on every attempt and lock the recipient out.
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_INCOMING_FRAME);
        config.max_frame_size = Some(MAX_INCOMING_FRAME);
        let connector = if url.starts_with("wss://") {
            Some(tls_connector(ca_pem)?)
        } else {
            None
        };
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector);
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| SessionError::Unreachable(format!("{url}: timed out")))?
            .map_err(|e| SessionError::Unreachable(format!("{url}: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let hello = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        return protocol::decode_frame(&b, DEFAULT_MAX_FRAME)
                            .map_err(|e| SessionError::Protocol(e.to_string()));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(_)) => return Err(SessionError::Protocol("unexpected message".into())),
                    Some(Err(e)) => return Err(SessionError::Unreachable(e.to_string())),
                    None => return Err(SessionError::Unreachable("connection closed".into())),
                }
            }
        })
        .await
        .map_err(|_| SessionError::Unreachable(format!("{url}: no hello from relay")))??;
        let hello = match hello.body {
            Some(Body::ServerHello(h)) => h,
            Some(Body::Error(e)) => return Err(SessionError::from_reply(&e)),
            _ => return Err(SessionError::Protocol("relay did not say hello".into())),
        };
        // 0 is an old relay that did not say: it spoke the default.
        let max_frame = match usize::try_from(hello.max_frame) {
            Ok(0) | Err(_) => DEFAULT_MAX_FRAME,
            Ok(n) => n.min(MAX_FRAME_LIMIT),
        };

        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let w = Arc::clone(&waiters);
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Arc::clone(&closed);
        let reader = tokio::spawn(async move {
            // Set when a push was dropped on a full queue; cleared once the engine has been
            // told (as soon as the queue has room, even if nothing else arrives).
            let mut overflowed = false;
            loop {
                let msg = tokio::select! {
                    msg = stream.next() => msg,
                    permit = pushes.reserve(), if overflowed => {
                        if let Ok(p) = permit {
                            p.send(Push::Overflowed);
                        }
                        overflowed = false;
                        continue;
                    }
                };
                let Some(msg) = msg else { break };
                let bytes = match msg {
                    Ok(Message::Binary(b)) => b,
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                let Ok(frame) = protocol::decode_frame(&bytes, MAX_INCOMING_FRAME) else {
                    tracing::warn!("undecodable frame from relay");
                    continue;
                };
                let Some(body) = frame.body else { continue };
                // Never waits for the engine: a full queue drops the push (the relay keeps
                // it in the mailbox) and remembers to say so.
                let mut offer = |push: Push| {
                    if let Err(mpsc::error::TrySendError::Full(_)) = pushes.try_send(push) {
                        overflowed = true;
                    }
                };
                match body {
                    Body::Delivery(d) if frame.id == 0 => offer(Push::Delivery(d)),
                    Body::Policy(p) if frame.id == 0 => offer(Push::Policy(p)),
                    Body::Bye(b) => {
                        // Rare and final: worth waiting for room.
                        let _ = pushes.send(Push::Bye(b.reason)).await;
                    }
                    other => {
                        let waiter = w.lock().ok().and_then(|mut m| m.remove(&frame.id));
                        if let Some(tx) = waiter {
                            let _ = tx.send(other);
                        } else if let Body::Error(e) = other {
                            tracing::warn!(
                                code = e.code,
                                "connection-level error from relay: {}",
                                e.message
                            );
                        }
                    }
                }
            }
            ended.store(true, Ordering::Release);
            if let Ok(mut m) = w.lock() {
                m.clear();
            }
            let _ = pushes.send(Push::Closed).await;
        });
        Ok((
            Self {
                out: out_tx,
                waiters,
                next_id: AtomicU64::new(1),
                max_frame,
                closed,
                tasks: vec![reader, writer],
            },
            hello,
        ))
    }

    /// The largest frame the relay accepts, from its hello.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Sends a request and waits for its response body. A `RateLimited` answer is retried
    /// here, after the wait the relay asks for, for up to [`RATE_LIMIT_BUDGET`]: this is the one
    /// place that honours `retry_after`, so no caller sees a rate limit a short wait cures.
    ///
    /// # Errors
    /// [`SessionError::TooLarge`] for a request above the relay's frame limit (not sent);
    /// [`SessionError::Unreachable`] if the connection drops or the relay does not answer in
    /// time; [`SessionError::Relay`] for an error reply.
    pub async fn request(&self, body: Body) -> Result<Body, SessionError> {
        let mut frame = Frame {
            id: 0,
            body: Some(body),
        };
        let mut backoff = retry::Backoff::new(RATE_LIMIT_BUDGET);
        loop {
            let answer = self.request_once(&mut frame).await;
            if let Err(SessionError::Relay {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            }) = &answer
                && let Some(wait) = backoff.next(*retry_after_ms)
            {
                tokio::time::sleep(wait).await;
                continue;
            }
            return answer;
        }
    }

    async fn request_once(&self, frame: &mut Frame) -> Result<Body, SessionError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        frame.id = id;
        let bytes = protocol::encode_frame(frame);
        if bytes.len() > self.max_frame {
            return Err(SessionError::TooLarge {
                size: bytes.len(),
                limit: self.max_frame,
            });
        }
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.waiters.lock() {
            m.insert(id, tx);
        }
        // Checked after registering: either the reader sees our waiter when it clears them
        // (and drops it, failing us), or we see that it has finished.
        if self.closed.load(Ordering::Acquire) {
            if let Ok(mut m) = self.waiters.lock() {
                m.remove(&id);
            }
            return Err(SessionError::Unreachable("connection closed".into()));
        }
        if self.out.send(Message::Binary(bytes.into())).await.is_err() {
            if let Ok(mut m) = self.waiters.lock() {
                m.remove(&id);
            }
            return Err(SessionError::Unreachable("connection closed".into()));
        }
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        if let Ok(mut m) = self.waiters.lock() {
            m.remove(&id);
        }
        match reply {
            Ok(Ok(Body::Error(e))) => Err(SessionError::from_reply(&e)),
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(SessionError::Unreachable("connection closed".into())),
            Err(_) => Err(SessionError::Unreachable(
                "relay did not answer in time".into(),
            )),
        }
    }

    /// Sends a frame without waiting for an answer (acks).
    pub async fn send_only(&self, body: Body) -> Result<(), SessionError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame {
            id,
            body: Some(body),
        };
        self.out
            .send(Message::Binary(protocol::encode_frame(&frame).into()))
            .await
            .map_err(|_| SessionError::Unreachable("connection closed".into()))
    }
}

impl SessionError {
    /// Maps an error reply to a session error.
    pub fn from_reply(e: &ErrorReply) -> Self {
        match ErrorCode::from_u32(e.code) {
            Some(code) => SessionError::Relay {
                code,
                message: e.message.clone(),
                retry_after_ms: e.retry_after_ms,
                stale: e.stale.clone(),
            },
            None => SessionError::Protocol(format!("unknown error code {}: {}", e.code, e.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ws_only_to_loopback_unless_allowed() {
        assert!(check_url("ws://127.0.0.1:8080", false).is_ok());
        assert!(check_url("ws://localhost:1", false).is_ok());
        assert!(check_url("ws://[::1]:9", false).is_ok());
        assert!(matches!(
            check_url("ws://relay.example.com:80", false),
            Err(SessionError::InsecureUrl(_))
        ));
        assert!(check_url("ws://10.0.0.1:80", true).is_ok());
        assert!(check_url("wss://relay.example.com", false).is_ok());
        assert!(matches!(
            check_url("http://x", false),
            Err(SessionError::BadUrl(_))
        ));
        assert!(matches!(
            check_url("ws://", false),
            Err(SessionError::BadUrl(_))
        ));
    }
}
