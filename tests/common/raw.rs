//! Raw-frame scaffolding for the relay tests (`tests/relay.rs`, `tests/relay_rooms.rs`): a real
//! relay in-process on `127.0.0.1:0`, a raw WebSocket client that speaks protocol frames, and
//! real identities (root keys, device certificates, prekeys).
#![allow(clippy::panic)]

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use cinder::crypto::identity::{DeviceCertificate, DeviceId, DeviceKeys, DeviceRole, UserRootKey};
use cinder::crypto::prekeys::{DevicePrekeys, PqPrekey};
use cinder::protocol::frame::Body;
use cinder::protocol::{
    Ack, Authenticated, CreateInvite, Delivery, ErrorCode, ErrorReply, Fetch, Frame, KeyEntry,
    Login, OneTimePrekeyMsg, Ping, PqPrekeyMsg, PrekeyUpload, Register, SendOk, ServerHello,
    SignedPrekeyMsg, decode_frame, encode_frame, login_message,
};
use cinder::relay::{self, RelayConfig, RelayHandle};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous: the machine is small and shared, and no test asserts on speed.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub async fn start_relay(dir: &Path, tweak: impl FnOnce(&mut RelayConfig)) -> RelayHandle {
    let mut config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    tweak(&mut config);
    relay::start(config).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// A raw protocol client.

pub struct Client {
    pub ws: Ws,
    pub hello: ServerHello,
    pub next_id: u64,
    pub pushes: VecDeque<Frame>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Self::greeted(ws).await
    }

    /// Wraps an open connection and reads the `ServerHello` the relay sends first.
    pub async fn greeted(ws: Ws) -> Self {
        let mut c = Self {
            ws,
            hello: ServerHello::default(),
            next_id: 1,
            pushes: VecDeque::new(),
        };
        match c.next_frame().await.expect("closed before hello") {
            Frame {
                id: 0,
                body: Some(Body::ServerHello(h)),
            } => c.hello = h,
            other => panic!("expected ServerHello first, got {other:?}"),
        }
        c
    }

    /// The next frame, or `None` once the relay closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("no frame in time")
            {
                Some(Ok(Message::Binary(b))) => return Some(decode_frame(&b, usize::MAX).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    pub async fn send_body(&mut self, body: Body) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let frame = Frame {
            id,
            body: Some(body),
        };
        self.send_raw(Message::binary(encode_frame(&frame))).await;
        id
    }

    /// Sends a request and returns the reply with the same id, keeping pushes for later.
    pub async fn request(&mut self, body: Body) -> Body {
        let id = self.send_body(body).await;
        loop {
            let f = self.next_frame().await.expect("connection closed");
            if f.id == id {
                return f.body.unwrap();
            }
            assert_eq!(f.id, 0, "reply to another request");
            self.pushes.push_back(f);
        }
    }

    pub async fn expect_error(&mut self, body: Body, code: ErrorCode) -> ErrorReply {
        match self.request(body).await {
            Body::Error(e) => {
                assert_eq!(ErrorCode::from_u32(e.code), Some(code), "{e:?}");
                e
            }
            other => panic!("expected {code:?}, got {other:?}"),
        }
    }

    /// The next push (id 0), whatever it carries.
    pub async fn next_push(&mut self) -> Body {
        let f = match self.pushes.pop_front() {
            Some(f) => f,
            None => self
                .next_frame()
                .await
                .expect("closed while waiting for a push"),
        };
        assert_eq!(f.id, 0);
        f.body.unwrap()
    }

    /// The next pushed `Delivery`.
    pub async fn push(&mut self) -> Delivery {
        match self.next_push().await {
            Body::Delivery(d) => d,
            other => panic!("expected a Delivery push, got {other:?}"),
        }
    }

    /// Whether a push arrives within `wait` (pings first so everything queued is flushed).
    pub async fn no_push_within(&mut self, wait: Duration) -> bool {
        self.request(Body::Ping(Ping {})).await;
        if !self.pushes.is_empty() {
            return false;
        }
        timeout(wait, self.ws.next()).await.is_err()
    }

    pub async fn ping(&mut self) {
        assert!(matches!(
            self.request(Body::Ping(Ping {})).await,
            Body::Pong(_)
        ));
    }

    /// Asserts that the relay closes the connection next (after any frames already sent).
    pub async fn expect_closed(&mut self) {
        assert!(self.next_frame().await.is_none(), "connection still open");
    }

    /// Everything waiting in the mailbox (not acknowledged), in one page.
    pub async fn fetch(&mut self) -> Vec<Delivery> {
        match self.request(Body::Fetch(Fetch { limit: 0 })).await {
            Body::Deliveries(d) => {
                assert!(!d.more);
                d.items
            }
            other => panic!("expected Deliveries, got {other:?}"),
        }
    }

    /// Everything in the mailbox, paging by acknowledging what was read.
    pub async fn fetch_all(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        loop {
            match self.request(Body::Fetch(Fetch { limit: 0 })).await {
                Body::Deliveries(d) => {
                    let more = d.more;
                    out.extend(d.items);
                    if !more {
                        return out;
                    }
                    // Items stay until acknowledged, so page by acknowledging what was read.
                    let seqs = out.iter().map(|d| d.seq).collect();
                    self.ack(seqs).await;
                }
                other => panic!("expected Deliveries, got {other:?}"),
            }
        }
    }

    pub async fn ack(&mut self, seqs: Vec<u64>) {
        assert!(matches!(
            self.request(Body::Ack(Ack { seqs })).await,
            Body::Ok(_)
        ));
    }
}

pub fn error_of(body: Body) -> ErrorReply {
    match body {
        Body::Error(e) => e,
        other => panic!("expected an ErrorReply, got {other:?}"),
    }
}

pub fn authenticated(body: Body) -> Authenticated {
    match body {
        Body::Authenticated(a) => a,
        other => panic!("expected Authenticated, got {other:?}"),
    }
}

pub fn send_ok(body: Body) -> SendOk {
    match body {
        Body::SendOk(ok) => ok,
        other => panic!("expected SendOk, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Real identities.

pub struct Dev {
    pub user: String,
    pub root: UserRootKey,
    pub keys: DeviceKeys,
    pub id: DeviceId,
    pub cert: Vec<u8>,
    pub prekeys: DevicePrekeys,
}

impl Dev {
    pub fn new(user: &str) -> Self {
        Self::with_root(user, UserRootKey::generate().unwrap())
    }

    pub fn with_root(user: &str, root: UserRootKey) -> Self {
        let keys = DeviceKeys::generate().unwrap();
        let id = DeviceId::random().unwrap();
        let cert = root
            .certify(user, id, &keys, now(), DeviceRole::User)
            .unwrap()
            .encode()
            .unwrap();
        let prekeys = DevicePrekeys::new(&keys.signing, now()).unwrap();
        Self {
            user: user.to_owned(),
            root,
            keys,
            id,
            cert,
            prekeys,
        }
    }

    pub fn sign(&self, hello: &ServerHello) -> Vec<u8> {
        self.keys
            .signing
            .sign(&login_message(&hello.challenge, &hello.relay_id))
            .to_vec()
    }

    pub fn certificate(&self) -> DeviceCertificate {
        DeviceCertificate::decode(&self.cert).unwrap()
    }

    pub fn upload(&mut self, one_time: usize, pq: usize) -> PrekeyUpload {
        let s = &self.keys.signing;
        let spk = self.prekeys.current_signed_prekey(s).unwrap();
        let lr = self.prekeys.current_last_resort(s).unwrap();
        let pq_msg = |k: PqPrekey| PqPrekeyMsg {
            id: k.id,
            last_resort: k.last_resort,
            created_at: k.created_at,
            public: k.public,
            signature: k.signature.to_vec(),
        };
        PrekeyUpload {
            signed_prekey: Some(SignedPrekeyMsg {
                id: spk.id,
                public: spk.public.to_vec(),
                created_at: spk.created_at,
                signature: spk.signature.to_vec(),
            }),
            one_time: self
                .prekeys
                .generate_one_time(one_time)
                .unwrap()
                .into_iter()
                .map(|k| OneTimePrekeyMsg {
                    id: k.id,
                    public: k.public.to_vec(),
                })
                .collect(),
            pq_one_time: self
                .prekeys
                .generate_pq_one_time(s, pq, now())
                .unwrap()
                .into_iter()
                .map(pq_msg)
                .collect(),
            pq_last_resort: Some(pq_msg(lr)),
        }
    }

    /// A `Register` with a prekey upload and the display name "<user> display".
    pub fn register(&mut self, invite: &str, hello: &ServerHello) -> Body {
        let prekeys = self.upload(3, 2);
        Body::Register(Register {
            prekeys: Some(prekeys),
            display_name: format!("{} display", self.user),
            ..self.register_bare(invite, hello)
        })
    }

    /// A `Register` without prekeys, the display name being the username.
    pub fn register_bare(&self, invite: &str, hello: &ServerHello) -> Register {
        Register {
            invite_code: invite.to_owned(),
            username: self.user.clone(),
            display_name: self.user.clone(),
            root_key: self.root.public().0.to_vec(),
            device_certificate: self.cert.clone(),
            signature: self.sign(hello),
            prekeys: None,
        }
    }

    pub fn login(&self, hello: &ServerHello) -> Body {
        Body::Login(Login {
            username: self.user.clone(),
            device_id: self.id.0.to_vec(),
            signature: self.sign(hello),
        })
    }

    pub fn entry(&self, payload: &[u8]) -> KeyEntry {
        KeyEntry {
            recipient_user: self.user.clone(),
            recipient_device: self.id.0.to_vec(),
            payload: payload.to_vec(),
        }
    }
}

/// Connects, sends the body `make` builds from the `ServerHello`, expects `Authenticated`.
pub async fn authenticate(
    url: &str,
    make: impl FnOnce(&ServerHello) -> Body,
) -> (Client, Authenticated) {
    let mut c = Client::connect(url).await;
    let body = make(&c.hello);
    let a = authenticated(c.request(body).await);
    (c, a)
}

/// Registers `dev` with a prekey upload (see [`Dev::register`]).
pub async fn register(url: &str, dev: &mut Dev, invite: &str) -> (Client, Authenticated) {
    authenticate(url, |hello| dev.register(invite, hello)).await
}

/// Registers `dev` without prekeys (see [`Dev::register_bare`]).
pub async fn register_bare(url: &str, dev: &Dev, invite: &str) -> (Client, Authenticated) {
    authenticate(url, |hello| {
        Body::Register(dev.register_bare(invite, hello))
    })
    .await
}

pub async fn login(url: &str, dev: &Dev) -> (Client, Authenticated) {
    authenticate(url, |hello| dev.login(hello)).await
}

/// A new ordinary invite for `email`, created by the admin connection `admin`.
pub async fn invite_for(admin: &mut Client, email: &str) -> String {
    match admin
        .request(Body::CreateInvite(CreateInvite {
            email: email.to_owned(),
            admin: false,
            valid_for_secs: 0,
        }))
        .await
    {
        Body::InviteCreated(i) => i.code,
        other => panic!("expected InviteCreated, got {other:?}"),
    }
}

pub async fn invite(admin: &mut Client) -> String {
    invite_for(admin, "someone@example.org").await
}

// ---------------------------------------------------------------------------------------------
// The relay's database.

pub fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("relay.db")).unwrap()
}

pub fn count_with(dir: &Path, sql: &str, params: impl rusqlite::Params) -> i64 {
    db(dir).query_row(sql, params, |r| r.get(0)).unwrap()
}
