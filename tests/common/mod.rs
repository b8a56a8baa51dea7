//! Shared harness for end-to-end tests: a real relay in-process on 127.0.0.1:0 with a temporary
//! data directory, users registered with the test-only cheap Argon2id parameters.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cinder::clock::Clock;
use cinder::crypto::passphrase::KdfParams;
use cinder::relay::{self, RelayConfig, RelayHandle};
use cinder::session::register::{RegisterOptions, register};
use cinder::session::{self, EngineOptions, SessionEvent, SessionHandle};
use tokio::sync::broadcast;
use zeroize::Zeroizing;

pub const PASS: &[u8] = b"correct horse battery staple";

pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub admin_invite: String,
}

impl TestRelay {
    pub async fn start(root: &Path) -> Self {
        Self::start_with(root, |_| {}).await
    }

    /// Starts with a configuration changed by `configure` (limits, a tampering hook).
    pub async fn start_with(root: &Path, configure: impl FnOnce(&mut RelayConfig)) -> Self {
        let data = root.join("relay");
        let mut config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        configure(&mut config);
        let handle = relay::start(config).await.unwrap();
        let addr = handle.local_addr();
        let admin_invite = handle.admin_invite().unwrap().to_owned();
        Self {
            handle: Some(handle),
            data,
            addr,
            admin_invite,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Waits for a sweep that started at or after `at_ms` on the relay's clock.
    pub async fn swept_since(&self, at_ms: u64) {
        self.handle.as_ref().unwrap().swept_since(at_ms).await;
    }

    /// Restarts on the same data dir and the same port (clients keep their URL).
    pub async fn restart(&mut self) {
        let mut last = None;
        for _ in 0..50 {
            match relay::start(RelayConfig::new(self.addr, self.data.clone())).await {
                Ok(h) => {
                    self.handle = Some(h);
                    return;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("relay did not restart: {last:?}");
    }

    pub fn abort(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.unwrap();
        }
    }
}

pub async fn register_user(relay_url: &str, invite: &str, name: &str, dir: &Path) {
    register_user_at(relay_url, invite, name, dir, Clock::system()).await;
}

pub async fn register_user_at(relay_url: &str, invite: &str, name: &str, dir: &Path, clock: Clock) {
    register(
        dir,
        RegisterOptions {
            server_url: relay_url.to_owned(),
            invite: invite.to_owned(),
            username: name.to_owned(),
            display_name: None,
            passphrase: Zeroizing::new(PASS.to_vec()),
            kdf: KdfParams::INSECURE_FOR_TESTS,
            allow_insecure_ws: false,
            ca_pem: None,
            clock,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("register {name}: {e}"));
}

pub fn engine(dir: &Path) -> SessionHandle {
    engine_at(dir, Clock::system())
}

/// An engine reading `clock` (a virtual clock in the timer tests).
pub fn engine_at(dir: &Path, clock: Clock) -> SessionHandle {
    let store = session::unlock(dir, PASS).unwrap();
    session::spawn(
        store,
        EngineOptions {
            clock,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

/// Registers an admin and the given users; returns their profile dirs (admin first).
pub async fn network(root: &Path, relay: &TestRelay, users: &[&str]) -> Vec<PathBuf> {
    network_at(root, relay, users, Clock::system()).await
}

/// [`network`] with every registration and the admin's engine on `clock`.
pub async fn network_at(
    root: &Path,
    relay: &TestRelay,
    users: &[&str],
    clock: Clock,
) -> Vec<PathBuf> {
    let admin_dir = root.join("admin");
    register_user_at(
        &relay.url(),
        &relay.admin_invite,
        "admin",
        &admin_dir,
        clock,
    )
    .await;
    let admin = engine_at(&admin_dir, clock);
    let mut dirs = vec![admin_dir];
    for u in users {
        let code = admin
            .create_invite(&format!("{u}@example.com"), false)
            .await
            .unwrap();
        let dir = root.join(u);
        register_user_at(&relay.url(), &code, u, &dir, clock).await;
        dirs.push(dir);
    }
    admin.shutdown().await;
    dirs
}

/// Every file below `dir`, as bytes.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An engine plus everything it has reported, so messages that arrive as live pushes (not
/// through `sync`) are seen too.
pub struct Client {
    pub handle: SessionHandle,
    events: broadcast::Receiver<SessionEvent>,
}

/// What arrived: `Ok(text)` for a message, `Err(error)` for an undecryptable delivery.
pub type Received = Result<String, String>;

impl Client {
    pub fn open(dir: &Path) -> Self {
        let handle = engine(dir);
        let events = handle.subscribe();
        Self { handle, events }
    }

    /// Syncs, then returns everything received since the last call, in arrival order.
    pub async fn received(&mut self) -> Vec<Received> {
        self.handle.sync().await.unwrap();
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(SessionEvent::Message(m)) => out.push(Ok(m.text)),
                Ok(SessionEvent::Undecryptable { error, .. }) => out.push(Err(error)),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => panic!("lost {n} events"),
                Err(_) => break,
            }
        }
        out
    }

    pub async fn texts(&mut self) -> Vec<String> {
        self.received()
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }
}

/// Compares long lists without printing them whole.
pub fn assert_same(got: &[String], want: &[String], what: &str) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} items, want {}; first difference at {first}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(first),
            want.get(first)
        );
    }
}

/// Moves virtual time forward by `d`: the relay and engines of a timer test read
/// [`Clock::virtual_now`], so their wall clocks jump by `d` and every tokio timer that falls
/// due in between fires. Time is paused only for the jump: the rest of the test does real
/// network I/O, which must never race timers that a paused runtime would auto-advance to.
/// Needs a `current_thread` runtime (the default of `#[tokio::test]`).
pub async fn advance(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

/// Waits for the first event that `pick` maps to `Some`. The 60 s limit only turns a hang
/// into a failure naming `what`; nothing is timed.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<SessionEvent>,
    what: &str,
    mut pick: impl FnMut(&SessionEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("engine stopped: {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("never happened: {what}"))
}

/// Waits until the engine behind `events` reports `id` shredded.
pub async fn wait_shredded(
    events: &mut broadcast::Receiver<SessionEvent>,
    id: [u8; 16],
    who: &str,
) {
    wait_event(events, &format!("{who} shreds the message"), |e| match e {
        SessionEvent::Shredded { message_ids, .. } if message_ids.contains(&id) => Some(()),
        _ => None,
    })
    .await;
}
