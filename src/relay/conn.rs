//! One connection: `ServerHello`, authentication, then requests answered one at a time.
//!
//! The task owns its WebSocket and a few dozen bytes of state; an idle connection costs the
//! socket, tungstenite's 4 KiB read buffer and this small future, because request handling is
//! boxed (allocated only while a request runs) and the push queue is empty until used. Requests
//! are handled in order, so "drain" on shutdown simply means: finish the request in hand, then
//! say `Bye`. Anything a client can send wrong is answered with an `ErrorReply` echoing its
//! frame id; framing errors and requests before authentication also close the connection,
//! after a lingering close so the error frame is not lost to a TCP reset. Nothing here logs
//! request contents.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::registry::{Attachment, Outbox, Push, TokenBucket};
use super::server::Shared;
use super::store::{
    AccountStatus, DeviceId, MAX_STORED_ONE_TIME, MAX_STORED_PQ, NewAccount, NewInvite,
    OutgoingEntry, OutgoingMessage, SendOutcome, VerifiedDevice,
};
use super::{RelayError, invite, rooms};
use crate::crypto::identity::{DeviceCertificate, DeviceRole, RootPublicKey};
use crate::crypto::primitives::{PQ_PUBLIC_LEN, random_array, verify_signature};
use crate::protocol::frame::Body;
use crate::protocol::names::canonical_username;
use crate::protocol::{
    Ack, Authenticated, Bye, CreateInvite, ErrorCode, ErrorReply, Fetch, FetchKeys, Frame,
    FrameError, GetUser, InviteCreated, Login, PrekeyUpload, Register, Send, SendOk, ServerHello,
    decode_frame, encode_frame, login_message,
};

/// How long a connection may stay unauthenticated.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one frame may take to reach a client before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection waits for the client's close or drains its input.
const LINGER: Duration = Duration::from_secs(2);
/// Longest display name, in characters.
const MAX_DISPLAY_NAME: usize = 64;
/// Longest e-mail recorded with an invite.
const MAX_EMAIL: usize = 254;
/// Most key entries in one send (a room of 500 members has about 1,000 devices).
const MAX_ENTRIES: usize = 10_000;
/// Most sequence numbers in one acknowledgement.
const MAX_ACK: usize = 10_000;
/// Longest invite validity a request may ask for (ten years).
const MAX_INVITE_SECS: u64 = 10 * 365 * 24 * 3600;
/// Room left in a `Deliveries` frame for its own fields (version, id, tags, `more`).
const DELIVERIES_OVERHEAD: usize = 32;

/// What the state machine decided to do with a frame.
enum Action {
    /// Answer and carry on.
    Reply(Frame),
    /// Answer, then close the connection.
    Close(Frame, CloseCode),
    /// Answer after a delay, serving the connection meanwhile (the test hook's held reply).
    Later(
        Frame,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + std::marker::Send>>,
    ),
}

/// Why the connection loop woke up.
enum Event {
    Shutdown,
    Push,
    Incoming(Option<Result<Message, WsError>>),
    AuthTimeout,
}

/// The authenticated device behind a connection.
pub(super) struct Authed {
    pub(super) username: String,
    pub(super) device: DeviceId,
    pub(super) is_admin: bool,
    outbox: Arc<Outbox>,
    _attachment: Attachment,
}

/// Per-connection state, kept small because most connections sit idle.
struct Session {
    id: u64,
    challenge: [u8; 32],
    /// Limits requests before authentication (after it, the device's bucket applies).
    bucket: TokenBucket,
    auth: Option<Box<Authed>>,
}

fn error_frame(id: u64, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame {
        id,
        body: Some(Body::Error(ErrorReply {
            code: code as u32,
            message: message.into(),
            retry_after_ms: 0,
            stale: Vec::new(),
        })),
    }
}

pub(super) fn refused(
    code: ErrorCode,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> RelayError {
    RelayError::refused(code, detail)
}

/// Sends one frame, giving up if the client does not read it in time.
async fn send_frame<S>(ws: &mut WebSocketStream<S>, frame: &Frame) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(WRITE_TIMEOUT, ws.send(Message::binary(encode_frame(frame)))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Closes after an error without losing the error frame to a TCP reset.
///
/// With `raw_drain` the client may still be sending a frame tungstenite refused to read (an
/// oversized one), so the rest of the input is read as raw bytes and discarded instead of being
/// parsed, up to [`LINGER`] and a byte cap; otherwise the client's close frame is awaited.
async fn close_and_linger<S>(
    ws: &mut WebSocketStream<S>,
    code: CloseCode,
    raw_drain: bool,
    max_drain: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = timeout(LINGER, ws.close(Some(close))).await;
    if raw_drain {
        let stream = ws.get_mut();
        let _ = timeout(LINGER, stream.shutdown()).await;
        let deadline = Instant::now() + LINGER;
        let mut buf = [0u8; 2048];
        let mut drained = 0usize;
        while drained < max_drain {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    } else {
        let _ = timeout(LINGER, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    }
}

async fn wait_push(outbox: Option<&Outbox>) {
    match outbox {
        Some(o) => o.ready().await,
        None => std::future::pending().await,
    }
}

/// Serves one upgraded connection until it closes, fails or the relay shuts down.
///
/// This future is what every idle connection keeps alive, so it holds only the socket, the
/// session and the `select!` below; greeting and every reaction to an event are boxed and
/// allocated only while they run.
pub(crate) async fn run<S>(shared: Arc<Shared>, mut ws: WebSocketStream<S>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + std::marker::Send,
{
    let Some(mut sess) = Box::pin(greet(&shared, &mut ws, peer)).await else {
        return;
    };
    let auth_deadline = Instant::now() + AUTH_TIMEOUT;
    loop {
        let event = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => Event::Shutdown,
            () = wait_push(sess.auth.as_ref().map(|a| &*a.outbox)) => Event::Push,
            msg = ws.next() => Event::Incoming(msg),
            () = tokio::time::sleep_until(auth_deadline), if sess.auth.is_none() => Event::AuthTimeout,
        };
        if !Box::pin(react(&shared, &mut ws, &mut sess, event)).await {
            break;
        }
    }
    tracing::debug!(conn = sess.id, "connection closed");
}

/// Sends `ServerHello` with a fresh challenge and returns the new session.
async fn greet<S>(shared: &Shared, ws: &mut WebSocketStream<S>, peer: SocketAddr) -> Option<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(challenge) = random_array::<32>() else {
        tracing::error!("random generator failed; dropping connection");
        return None;
    };
    let sess = Session {
        id: shared.next_conn_id(),
        challenge,
        bucket: TokenBucket::new(shared.rate_burst),
        auth: None,
    };
    tracing::debug!(conn = sess.id, %peer, "connection opened");
    let hello = Frame {
        id: 0,
        body: Some(Body::ServerHello(ServerHello {
            relay_id: shared.relay_id.clone(),
            network_id: shared.network_id.clone(),
            network_name: shared.network_name.clone(),
            challenge: sess.challenge.to_vec(),
            max_frame: u32::try_from(shared.max_frame).unwrap_or(u32::MAX),
            network_admin_key: shared.admin_key.to_vec(),
        })),
    };
    send_frame(ws, &hello).await.ok()?;
    Some(sess)
}

/// Sends `frame`, then closes the connection (see [`close_and_linger`]).
async fn fail<S>(ws: &mut WebSocketStream<S>, frame: &Frame, code: CloseCode, raw_drain: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if send_frame(ws, frame).await.is_ok() {
        close_and_linger(ws, code, raw_drain > 0, raw_drain).await;
    }
}

/// Handles one event; `false` ends the connection.
async fn react<S>(
    shared: &Shared,
    ws: &mut WebSocketStream<S>,
    sess: &mut Session,
    event: Event,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + std::marker::Send,
{
    // After a framing error the client may still be sending; its input is drained, not parsed.
    let drain = shared.max_frame.saturating_mul(4);
    match event {
        Event::Shutdown => {
            let bye = Frame {
                id: 0,
                body: Some(Body::Bye(Bye {
                    reason: "the relay is shutting down; reconnect later".into(),
                })),
            };
            fail(ws, &bye, CloseCode::Away, 0).await;
            false
        }
        Event::AuthTimeout => {
            let err = error_frame(0, ErrorCode::NotAuthenticated, "authentication timed out");
            fail(ws, &err, CloseCode::Policy, 0).await;
            false
        }
        Event::Push => {
            let Some(auth) = &sess.auth else {
                return true;
            };
            let pushes = auth.outbox.drain();
            if pushes.is_empty() {
                return true;
            }
            let now = shared.clock.now_ms();
            for push in pushes {
                if let Push::Reply(frame) = push {
                    let msg = Message::binary(encode_frame(&frame));
                    if !matches!(timeout(WRITE_TIMEOUT, ws.feed(msg)).await, Ok(Ok(()))) {
                        return false;
                    }
                    continue;
                }
                // Expired while queued: never delivered.
                let Some(body) = push.into_body(now) else {
                    continue;
                };
                let bodies = match body {
                    Body::Delivery(d) => shared
                        .outgoing_delivery(&auth.username, &auth.device, d)
                        .into_iter()
                        .map(Body::Delivery)
                        .collect(),
                    body => vec![body],
                };
                for body in bodies {
                    let frame = Frame {
                        id: 0,
                        body: Some(body),
                    };
                    let msg = Message::binary(encode_frame(&frame));
                    if !matches!(timeout(WRITE_TIMEOUT, ws.feed(msg)).await, Ok(Ok(()))) {
                        return false;
                    }
                }
            }
            matches!(timeout(WRITE_TIMEOUT, ws.flush()).await, Ok(Ok(())))
        }
        Event::Incoming(None) => false,
        Event::Incoming(Some(Ok(Message::Binary(bytes)))) => {
            match handle_bytes(shared, sess, &bytes).await {
                Action::Reply(frame) => send_frame(ws, &frame).await.is_ok(),
                Action::Later(frame, release) => {
                    if let Some(auth) = &sess.auth {
                        let outbox = Arc::clone(&auth.outbox);
                        tokio::spawn(async move {
                            release.await;
                            outbox.offer(Push::Reply(Box::new(frame)));
                        });
                    }
                    true
                }
                Action::Close(frame, code) => {
                    fail(ws, &frame, code, 0).await;
                    false
                }
            }
        }
        Event::Incoming(Some(Ok(Message::Text(_)))) => {
            let err = error_frame(0, ErrorCode::BadFrame, "frames are binary messages");
            fail(ws, &err, CloseCode::Unsupported, 0).await;
            false
        }
        // tungstenite answers pings and completes the close handshake by itself.
        Event::Incoming(Some(Ok(_))) => true,
        Event::Incoming(Some(Err(WsError::Capacity(_)))) => {
            let err = error_frame(0, ErrorCode::FrameTooLarge, "frame too large");
            fail(ws, &err, CloseCode::Size, drain).await;
            false
        }
        Event::Incoming(Some(Err(WsError::Protocol(_) | WsError::Utf8(_)))) => {
            let err = error_frame(0, ErrorCode::BadFrame, "malformed websocket frame");
            fail(ws, &err, CloseCode::Protocol, drain).await;
            false
        }
        Event::Incoming(Some(Err(_))) => false,
    }
}

/// Answers a client that arrived above the connection limit, then closes.
pub(crate) async fn reject<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let err = error_frame(
        0,
        ErrorCode::TooManyConnections,
        "the relay has no room for another connection; retry later",
    );
    if send_frame(&mut ws, &err).await.is_ok() {
        close_and_linger(&mut ws, CloseCode::Again, false, 0).await;
    }
}

/// What a request costs in rate-limit tokens. An ack only deletes rows the device owns and is
/// the client's answer to our own pushes: charging a full token for each would make a burst of
/// deliveries exhaust the bucket of the device receiving it. It still costs something, so a
/// flood of acks is throttled like any other.
fn request_cost(body: &Body) -> f64 {
    match body {
        Body::Ack(a) => 0.05 + 0.001 * a.seqs.len().min(MAX_ACK) as f64,
        _ => 1.0,
    }
}

/// Decodes one binary message and runs the request it carries.
async fn handle_bytes(shared: &Shared, sess: &mut Session, bytes: &[u8]) -> Action {
    let frame = match decode_frame(bytes, shared.max_frame) {
        Ok(frame) => frame,
        Err(FrameError::UnsupportedVersion(v)) => {
            let msg = format!("protocol version {v} is not supported; this relay speaks 1");
            return Action::Close(
                error_frame(0, ErrorCode::UnsupportedVersion, msg),
                CloseCode::Protocol,
            );
        }
        Err(FrameError::TooLarge { size, limit }) => {
            // The WebSocket layer let it through (its limit has headroom above ours), so the
            // framing is intact: refuse this request and keep the connection. Only a client
            // that has logged in gets that courtesy.
            let id = bytes
                .get(1..)
                .and_then(|b| Frame::decode(b).ok())
                .map(|f| f.id);
            let msg = format!("frame too large ({size} bytes; the limit is {limit})");
            return match id {
                Some(id) if sess.auth.is_some() => {
                    tracing::debug!(conn = sess.id, size, "refused an oversized request");
                    Action::Reply(error_frame(id, ErrorCode::FrameTooLarge, msg))
                }
                _ => Action::Close(
                    error_frame(0, ErrorCode::FrameTooLarge, msg),
                    CloseCode::Size,
                ),
            };
        }
        Err(FrameError::NoBody) => {
            // A well-formed frame of a kind this relay does not know (a newer client): the id
            // is readable, so answer it like any other unexpected request.
            let id = bytes
                .get(1..)
                .and_then(|b| Frame::decode(b).ok())
                .map_or(0, |f| f.id);
            return if sess.auth.is_none() {
                Action::Close(
                    error_frame(id, ErrorCode::NotAuthenticated, "log in first"),
                    CloseCode::Policy,
                )
            } else {
                Action::Reply(error_frame(
                    id,
                    ErrorCode::BadRequest,
                    "unknown request kind",
                ))
            };
        }
        Err(FrameError::Empty | FrameError::Malformed(_)) => {
            return Action::Close(
                error_frame(0, ErrorCode::BadFrame, "malformed frame"),
                CloseCode::Protocol,
            );
        }
    };
    let id = frame.id;
    let Some(body) = frame.body else {
        return Action::Reply(error_frame(id, ErrorCode::BadRequest, "empty frame"));
    };
    let pre_auth_ok = matches!(body, Body::Register(_) | Body::Login(_) | Body::Ping(_));
    if sess.auth.is_none() && !pre_auth_ok {
        return Action::Close(
            error_frame(id, ErrorCode::NotAuthenticated, "log in first"),
            CloseCode::Policy,
        );
    }
    let allowed = match &sess.auth {
        Some(auth) => shared
            .registry
            .take_token(&auth.device, request_cost(&body)),
        None => sess
            .bucket
            .take(shared.rate_per_sec, shared.rate_burst, Instant::now()),
    };
    if let Err(retry_after_ms) = allowed {
        return Action::Reply(Frame {
            id,
            body: Some(Body::Error(ErrorReply {
                code: ErrorCode::RateLimited as u32,
                message: format!("too many requests; retry in {retry_after_ms} ms"),
                retry_after_ms,
                stale: Vec::new(),
            })),
        });
    }
    let kind = body_name(&body);
    let result = match body {
        Body::Ping(_) => Ok(Body::Pong(crate::protocol::Pong {})),
        Body::Register(r) => register(shared, sess, r).await,
        Body::Login(l) => login(shared, sess, l).await,
        Body::UploadPrekeys(u) => upload_prekeys(shared, sess, u).await,
        Body::GetUser(g) => get_user(shared, g).await,
        Body::FetchKeys(f) => fetch_keys(shared, f).await,
        Body::Send(s) => send(shared, sess, s).await,
        Body::Fetch(f) => fetch(shared, sess, f).await,
        Body::Ack(a) => ack(shared, sess, a).await,
        Body::CreateInvite(c) => create_invite(shared, sess, c).await,
        Body::SubmitRoomOp(r) => match authed(sess) {
            Ok(auth) => rooms::submit_room_op(shared, auth, r).await,
            Err(e) => Err(e),
        },
        Body::GetRoomLog(g) => match authed(sess) {
            Ok(auth) => rooms::get_room_log(shared, auth, g).await,
            Err(e) => Err(e),
        },
        Body::RoomSend(r) => match authed(sess) {
            Ok(auth) => rooms::room_send(shared, auth, r).await,
            Err(e) => Err(e),
        },
        Body::GetPolicy(_) => authed(sess).map(|_| rooms::get_policy(shared)),
        Body::SetPolicy(p) => match authed(sess) {
            Ok(auth) => rooms::set_policy(shared, auth, p).await,
            Err(e) => Err(e),
        },
        _ => Err(refused(
            ErrorCode::BadRequest,
            "not a request a client may send",
        )),
    };
    let action = match result {
        Ok(body) => Action::Reply(Frame {
            id,
            body: Some(body),
        }),
        Err(RelayError::Refused { code, detail }) => {
            tracing::debug!(conn = sess.id, request = kind, %code, "request refused");
            Action::Reply(error_frame(id, code, format!("{code}: {detail}")))
        }
        Err(e) => {
            tracing::error!(conn = sess.id, request = kind, error = %e, "request failed");
            let code = if shared.shutdown.is_cancelled() {
                ErrorCode::ShuttingDown
            } else {
                ErrorCode::Internal
            };
            Action::Reply(error_frame(id, code, code.to_string()))
        }
    };
    // The test hook may hold this answer back; the connection carries on meanwhile.
    match (action, &sess.auth) {
        (Action::Reply(frame), Some(auth)) => match shared.held_reply(&auth.username, kind) {
            Some(release) => Action::Later(frame, release),
            None => Action::Reply(frame),
        },
        (action, _) => action,
    }
}

/// The request's kind, for logs (never its contents).
fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Register(_) => "register",
        Body::Login(_) => "login",
        Body::UploadPrekeys(_) => "upload_prekeys",
        Body::FetchKeys(_) => "fetch_keys",
        Body::Send(_) => "send",
        Body::Fetch(_) => "fetch",
        Body::Ack(_) => "ack",
        Body::CreateInvite(_) => "create_invite",
        Body::Ping(_) => "ping",
        Body::GetUser(_) => "get_user",
        Body::SubmitRoomOp(_) => "submit_room_op",
        Body::GetRoomLog(_) => "get_room_log",
        Body::RoomSend(_) => "room_send",
        Body::GetPolicy(_) => "get_policy",
        Body::SetPolicy(_) => "set_policy",
        _ => "other",
    }
}

fn authed(sess: &Session) -> Result<&Authed, RelayError> {
    sess.auth
        .as_deref()
        .ok_or_else(|| refused(ErrorCode::NotAuthenticated, "log in first"))
}

fn authenticate(shared: &Shared, sess: &mut Session, status: &AccountStatus, device: DeviceId) {
    let outbox = shared.registry.attach(device, sess.id);
    sess.auth = Some(Box::new(Authed {
        username: status.username.clone(),
        device,
        is_admin: status.is_admin,
        outbox,
        _attachment: Attachment {
            registry: shared.registry.clone(),
            device,
            conn: sess.id,
        },
    }));
}

fn authenticated_body(shared: &Shared, status: AccountStatus) -> Body {
    Body::Authenticated(Authenticated {
        username: status.username,
        is_admin: status.is_admin,
        one_time_prekeys_left: status.one_time_prekeys_left,
        pq_prekeys_left: status.pq_prekeys_left,
        pending: status.pending,
        policy: Some(rooms::policy_message(shared)),
    })
}

/// Checks the shape of uploaded prekeys (signatures are for clients to verify).
fn check_prekeys(p: &PrekeyUpload) -> Result<(), RelayError> {
    let bad = |detail| Err(refused(ErrorCode::BadRequest, detail));
    if let Some(spk) = &p.signed_prekey
        && (spk.public.len() != 32 || spk.signature.len() != 64)
    {
        return bad("malformed signed prekey");
    }
    if p.one_time.len() > MAX_STORED_ONE_TIME || p.pq_one_time.len() > MAX_STORED_PQ {
        return bad("too many one-time prekeys");
    }
    if p.one_time.iter().any(|k| k.public.len() != 32) {
        return bad("malformed one-time prekey");
    }
    let pq_ok = |k: &crate::protocol::PqPrekeyMsg, last_resort: bool| {
        k.public.len() == PQ_PUBLIC_LEN && k.signature.len() == 64 && k.last_resort == last_resort
    };
    if !p.pq_one_time.iter().all(|k| pq_ok(k, false)) {
        return bad("malformed post-quantum prekey");
    }
    if p.pq_last_resort.as_ref().is_some_and(|k| !pq_ok(k, true)) {
        return bad("malformed last-resort prekey");
    }
    Ok(())
}

/// Verifies a registration's certificate chain and challenge signature.
fn verify_registration(
    shared: &Shared,
    challenge: &[u8; 32],
    username: &str,
    r: &Register,
) -> Option<VerifiedDevice> {
    let root: [u8; 32] = r.root_key.as_slice().try_into().ok()?;
    let cert = DeviceCertificate::decode(&r.device_certificate).ok()?;
    cert.verify(&RootPublicKey(root)).ok()?;
    if cert.user_id != username || cert.role != DeviceRole::User {
        return None;
    }
    let sig: [u8; 64] = r.signature.as_slice().try_into().ok()?;
    verify_signature(
        &cert.dsk_public,
        &login_message(challenge, &shared.relay_id),
        &sig,
    )
    .ok()?;
    Some(VerifiedDevice {
        device_id: cert.device_id.0,
        certificate: r.device_certificate.clone(),
        signing_key: cert.dsk_public,
    })
}

async fn register(shared: &Shared, sess: &mut Session, r: Register) -> Result<Body, RelayError> {
    if sess.auth.is_some() {
        return Err(refused(ErrorCode::UnexpectedRequest, "already logged in"));
    }
    let username = canonical_username(&r.username).ok_or_else(|| {
        refused(
            ErrorCode::InvalidUsername,
            "usernames are 2 to 32 of a-z, 0-9, '.', '-', '_', starting with a letter or digit",
        )
    })?;
    let code = invite::normalize(&r.invite_code).ok_or_else(|| {
        refused(
            ErrorCode::InvalidInvite,
            "the invite is unknown, used or expired",
        )
    })?;
    let display_name = r.display_name.trim();
    if display_name.chars().count() > MAX_DISPLAY_NAME || display_name.chars().any(char::is_control)
    {
        return Err(refused(
            ErrorCode::BadRequest,
            "display name too long or not printable",
        ));
    }
    let display_name = if display_name.is_empty() {
        username.clone()
    } else {
        display_name.to_owned()
    };
    if let Some(p) = &r.prekeys {
        check_prekeys(p)?;
    }
    let device = verify_registration(shared, &sess.challenge, &username, &r);
    let device_id = device.as_ref().map(|d| d.device_id);
    let account = NewAccount {
        username,
        display_name,
        // With a malformed root key the proof failed too, so the store answers AuthFailed
        // (after the invite and username checks) before this placeholder could be stored.
        root_key: r.root_key.as_slice().try_into().unwrap_or([0u8; 32]),
        invite_hash: invite::hash(&code),
        device,
        prekeys: r.prekeys,
    };
    let status = shared.store.register(account).await?;
    let device_id =
        device_id.ok_or_else(|| refused(ErrorCode::AuthFailed, "the proof did not verify"))?;
    tracing::info!(conn = sess.id, username = %status.username, "account registered");
    authenticate(shared, sess, &status, device_id);
    Ok(authenticated_body(shared, status))
}

async fn login(shared: &Shared, sess: &mut Session, l: Login) -> Result<Body, RelayError> {
    if sess.auth.is_some() {
        return Err(refused(ErrorCode::UnexpectedRequest, "already logged in"));
    }
    let fail = || refused(ErrorCode::AuthFailed, "unknown device or bad signature");
    let username = canonical_username(&l.username).ok_or_else(fail)?;
    let device: DeviceId = l.device_id.as_slice().try_into().map_err(|_| fail())?;
    let sig: [u8; 64] = l.signature.as_slice().try_into().map_err(|_| fail())?;
    let record = shared
        .store
        .login(username, device)
        .await?
        .ok_or_else(fail)?;
    verify_signature(
        &record.signing_key,
        &login_message(&sess.challenge, &shared.relay_id),
        &sig,
    )
    .map_err(|_| fail())?;
    tracing::debug!(conn = sess.id, username = %record.status.username, "device logged in");
    authenticate(shared, sess, &record.status, device);
    Ok(authenticated_body(shared, record.status))
}

async fn upload_prekeys(
    shared: &Shared,
    sess: &Session,
    upload: PrekeyUpload,
) -> Result<Body, RelayError> {
    let auth = authed(sess)?;
    check_prekeys(&upload)?;
    shared.store.upload_prekeys(auth.device, upload).await?;
    Ok(Body::Ok(crate::protocol::Ok {}))
}

fn known_username(name: &str) -> Result<String, RelayError> {
    canonical_username(name).ok_or_else(|| refused(ErrorCode::UnknownUser, "no such user"))
}

async fn get_user(shared: &Shared, g: GetUser) -> Result<Body, RelayError> {
    let username = known_username(&g.username)?;
    let info = shared.store.get_user(username).await?;
    info.map(Body::UserInfo)
        .ok_or_else(|| refused(ErrorCode::UnknownUser, "no such user"))
}

async fn fetch_keys(shared: &Shared, f: FetchKeys) -> Result<Body, RelayError> {
    let username = known_username(&f.username)?;
    let bundle = shared.store.fetch_keys(username).await?;
    bundle
        .map(Body::KeyBundle)
        .ok_or_else(|| refused(ErrorCode::UnknownUser, "no such user"))
}

/// The largest frame a stored item can become: `Frame{Deliveries{[Delivery]}}` with every
/// varint at its widest. A send is refused if a recipient could not fetch it within the limit.
pub(super) fn delivery_frame_len(
    sender_user: usize,
    body: usize,
    payload: usize,
    room_id: usize,
) -> usize {
    let field = |len: usize| 1 + prost::encoding::encoded_len_varint(len as u64) + len;
    let delivery = 11
        + 2
        + field(sender_user)
        + field(16)
        + field(16)
        + field(body)
        + field(payload)
        + 11
        + if room_id > 0 { field(room_id) } else { 0 };
    let deliveries = field(delivery) + 2;
    1 + 11 + field(deliveries)
}

async fn send(shared: &Shared, sess: &Session, s: Send) -> Result<Body, RelayError> {
    let auth = authed(sess)?;
    let bad = |detail| refused(ErrorCode::BadRequest, detail);
    if s.message_id.len() != 16 {
        return Err(bad("message id must be 16 bytes"));
    }
    if s.entries.len() > MAX_ENTRIES || s.recipients.len() > MAX_ENTRIES {
        return Err(bad("too many recipients"));
    }
    let mut recipients = Vec::with_capacity(s.recipients.len());
    for r in &s.recipients {
        let name = canonical_username(r)
            .ok_or_else(|| refused(ErrorCode::UnknownUser, "a recipient does not exist"))?;
        if !recipients.contains(&name) {
            recipients.push(name);
        }
    }
    let mut entries = Vec::with_capacity(s.entries.len());
    let mut seen = std::collections::HashSet::with_capacity(s.entries.len());
    let mut largest_payload = 0;
    for e in s.entries {
        let user = canonical_username(&e.recipient_user)
            .ok_or_else(|| bad("key entry names an invalid username"))?;
        let device: DeviceId = e
            .recipient_device
            .as_slice()
            .try_into()
            .map_err(|_| bad("device ids are 16 bytes"))?;
        if !seen.insert(device) {
            return Err(bad("two key entries for one device"));
        }
        largest_payload = largest_payload.max(e.payload.len());
        entries.push(OutgoingEntry {
            user,
            device,
            payload: e.payload,
        });
    }
    let delete_by_ms = rooms::delete_by(shared, s.ttl_ms, s.delete_by_ms, shared.clock.now_ms())?;
    if delivery_frame_len(auth.username.len(), s.body.len(), largest_payload, 0) > shared.max_frame
    {
        return Err(refused(
            ErrorCode::FrameTooLarge,
            "the recipients could not fetch a message this large",
        ));
    }
    let message = Arc::new(OutgoingMessage {
        sender_user: auth.username.clone(),
        sender_device: auth.device,
        message_id: s.message_id,
        body: s.body,
        entries,
        recipients,
        delete_by_ms,
    });
    let ok = |server_ts_ms, duplicate| {
        Body::SendOk(SendOk {
            message_id: message.message_id.clone(),
            server_ts_ms,
            duplicate,
        })
    };
    match shared.store.send(message.clone()).await? {
        SendOutcome::Stored { server_ts_ms, seqs } => {
            for (entry, seq) in seqs.into_iter().enumerate() {
                if let Some(e) = message.entries.get(entry) {
                    shared.registry.push(&e.device, || Push::Message {
                        message: message.clone(),
                        entry,
                        seq,
                        server_ts_ms,
                    });
                }
            }
            Ok(ok(server_ts_ms, false))
        }
        SendOutcome::Duplicate { server_ts_ms } => Ok(ok(server_ts_ms, true)),
        SendOutcome::DevicesChanged(stale) => Ok(Body::Error(ErrorReply {
            code: ErrorCode::DevicesChanged as u32,
            message: "the recipients' devices changed; fetch keys and send again".into(),
            retry_after_ms: 0,
            stale,
        })),
    }
}

async fn fetch(shared: &Shared, sess: &Session, f: Fetch) -> Result<Body, RelayError> {
    let auth = authed(sess)?;
    // 0 is protobuf's "unset", so it means "as many as allowed" rather than "none".
    let limit = match f.limit {
        0 => shared.max_mailbox_fetch,
        n => n.min(shared.max_mailbox_fetch),
    };
    let max_bytes = shared.max_frame.saturating_sub(DELIVERIES_OVERHEAD);
    let mut deliveries = shared.store.fetch(auth.device, limit, max_bytes).await?;
    deliveries.items = std::mem::take(&mut deliveries.items)
        .into_iter()
        .flat_map(|d| shared.outgoing_delivery(&auth.username, &auth.device, d))
        .collect();
    Ok(Body::Deliveries(deliveries))
}

async fn ack(shared: &Shared, sess: &Session, a: Ack) -> Result<Body, RelayError> {
    let auth = authed(sess)?;
    if a.seqs.len() > MAX_ACK {
        return Err(refused(ErrorCode::BadRequest, "too many sequence numbers"));
    }
    let notices = shared
        .store
        .ack(auth.username.clone(), auth.device, a.seqs)
        .await?;
    for n in notices {
        shared
            .registry
            .push(&n.device, || Push::Item(Box::new(n.delivery.clone())));
    }
    Ok(Body::Ok(crate::protocol::Ok {}))
}

async fn create_invite(
    shared: &Shared,
    sess: &Session,
    c: CreateInvite,
) -> Result<Body, RelayError> {
    let auth = authed(sess)?;
    if !auth.is_admin {
        return Err(refused(
            ErrorCode::PermissionDenied,
            "only network admins can create invites",
        ));
    }
    if c.email.chars().count() > MAX_EMAIL {
        return Err(refused(ErrorCode::BadRequest, "e-mail address too long"));
    }
    let secs = match c.valid_for_secs {
        0 => shared.invite_validity.as_secs(),
        n => n.min(MAX_INVITE_SECS),
    };
    let now = shared.clock.now_secs();
    let expires_at = now.saturating_add(secs);
    let code = invite::generate()?;
    let invite = NewInvite {
        code_hash: invite::hash(&code),
        email: c.email,
        admin: c.admin,
        expires_at: Some(expires_at),
    };
    shared
        .store
        .create_invite(auth.username.clone(), invite)
        .await?;
    tracing::info!(conn = sess.id, by = %auth.username, admin = c.admin, "invite created");
    Ok(Body::InviteCreated(InviteCreated { code, expires_at }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn delivery_bound_covers_the_real_encoding() {
        for room_id in [String::new(), format!("group:{}", "a".repeat(32))] {
            let d = crate::protocol::Delivery {
                seq: u64::MAX,
                kind: 3,
                sender_user: "x".repeat(32),
                sender_device: vec![1; 16],
                message_id: vec![2; 16],
                body: vec![3; 70_000],
                payload: vec![4; 300],
                server_ts_ms: u64::MAX,
                room_id: room_id.clone(),
            };
            let f = Frame {
                id: u64::MAX,
                body: Some(Body::Deliveries(crate::protocol::Deliveries {
                    items: vec![d],
                    more: true,
                })),
            };
            let real = encode_frame(&f).len();
            let bound = delivery_frame_len(32, 70_000, 300, room_id.len());
            assert!(bound >= real, "{bound} < {real}");
            assert!(bound - real < 64);
        }
    }
}
