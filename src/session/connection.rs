//! One authenticated WebSocket connection to the relay.
//!
//! A reader task matches responses to requests by frame id and forwards pushes (`Delivery`,
//! `Bye`) to the engine; a writer task owns the sink. Requests never block the engine: each
//! waits on its own oneshot with a timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::SessionError;
use crate::protocol::{
    self, DEFAULT_MAX_FRAME, ErrorCode, ErrorReply, Frame, ServerHello, frame::Body,
};

/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting (TCP, TLS, WebSocket, hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the reader forwards to the engine.
#[derive(Debug)]
pub enum Push {
    /// A new mailbox item.
    Delivery(protocol::Delivery),
    /// The network policy changed.
    Policy(protocol::Policy),
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
        pushes: mpsc::UnboundedSender<Push>,
    ) -> Result<(Self, ServerHello), SessionError> {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(DEFAULT_MAX_FRAME);
        config.max_frame_size = Some(DEFAULT_MAX_FRAME);
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
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let bytes = match msg {
                    Ok(Message::Binary(b)) => b,
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                let Ok(frame) = protocol::decode_frame(&bytes, DEFAULT_MAX_FRAME) else {
                    tracing::warn!("undecodable frame from relay");
                    continue;
                };
                let Some(body) = frame.body else { continue };
                match body {
                    Body::Delivery(d) if frame.id == 0 => {
                        let _ = pushes.send(Push::Delivery(d));
                    }
                    Body::Policy(p) if frame.id == 0 => {
                        let _ = pushes.send(Push::Policy(p));
                    }
                    Body::Bye(b) => {
                        let _ = pushes.send(Push::Bye(b.reason));
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
            if let Ok(mut m) = w.lock() {
                m.clear();
            }
            let _ = pushes.send(Push::Closed);
        });
        Ok((
            Self {
                out: out_tx,
                waiters,
                next_id: AtomicU64::new(1),
                tasks: vec![reader, writer],
            },
            hello,
        ))
    }

    /// Sends a request and waits for its response body.
    ///
    /// # Errors
    /// [`SessionError::Unreachable`] if the connection drops or the relay does not answer in
    /// time; [`SessionError::Relay`] for an error reply.
    pub async fn request(&self, body: Body) -> Result<Body, SessionError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.waiters.lock() {
            m.insert(id, tx);
        }
        let frame = Frame {
            id,
            body: Some(body),
        };
        if self
            .out
            .send(Message::Binary(protocol::encode_frame(&frame).into()))
            .await
            .is_err()
        {
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
