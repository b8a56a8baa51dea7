//! The relay end to end: a real relay in-process on `127.0.0.1:0` with a temporary data
//! directory, driven by a raw WebSocket client that speaks protocol frames.
//!
//! Registrations are built with the real crypto (root keys, device certificates, prekeys), so
//! these tests also pin the contract between clients and the relay: what is signed, what is
//! refused with which code, what is durable and what is pushed. `relay.db` is opened directly
//! where a test needs to see exactly what was stored (the schema is in `docs/relay.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cinder::crypto::identity::UserRootKey;
use cinder::crypto::primitives::SigningKeyPair;
use cinder::protocol::frame::Body;
use cinder::protocol::{
    Ack, CreateInvite, Delivery, DeliveryKind, ErrorCode, Fetch, FetchKeys, Frame, GetUser,
    KeyEntry, Ping, Send, ServerHello, decode_frame, encode_frame, login_message,
};
use cinder::relay::{RelayConfig, RelayHandle};
use common::raw::{
    Client, Dev, WAIT, authenticated, count_with, db, error_of, invite, login, register, send_ok,
    start_relay,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// A relay with an admin `alice` and a user `bob`, both connected and logged in.
struct Net {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    relay: RelayHandle,
    url: String,
    alice: Dev,
    bob: Dev,
    a: Client,
    b: Client,
}

async fn net(tweak: impl FnOnce(&mut RelayConfig)) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let relay = start_relay(&dir, tweak).await;
    let url = relay.url();
    let code = relay.admin_invite().unwrap().to_owned();
    let mut alice = Dev::new("alice");
    let (mut a, auth) = register(&url, &mut alice, &code).await;
    assert!(auth.is_admin);
    let code = invite(&mut a).await;
    let mut bob = Dev::new("bob");
    let (b, auth) = register(&url, &mut bob, &code).await;
    assert!(!auth.is_admin);
    Net {
        _dir: tmp,
        dir,
        relay,
        url,
        alice,
        bob,
        a,
        b,
    }
}

fn send_body(id: u8, body: &[u8], recipients: &[&str], entries: Vec<KeyEntry>) -> Body {
    Body::Send(Send {
        message_id: vec![id; 16],
        body: body.to_vec(),
        entries,
        recipients: recipients.iter().map(|s| (*s).to_owned()).collect(),
        delete_by_ms: 0,
        ttl_ms: 0,
    })
}

fn count(dir: &Path, sql: &str) -> i64 {
    count_with(dir, sql, [])
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn first_start_creates_the_network_and_later_starts_reuse_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let relay = start_relay(&dir, |c| c.network_name = Some("Acme".into())).await;
    let code = relay
        .admin_invite()
        .expect("first start makes an invite")
        .to_owned();
    assert!(relay.url().starts_with("ws://127.0.0.1:"));
    let file = std::fs::read_to_string(dir.join("admin-invite.txt")).unwrap();
    assert_eq!(file.lines().last(), Some(code.as_str()));
    assert_eq!(code.len(), 19);
    assert!(code.split('-').all(|g| g.len() == 4));
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        for f in [
            "admin-invite.txt",
            "network-admin.key",
            "relay.db",
            "relay.db-wal",
        ] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }
    let seed: [u8; 32] = std::fs::read(dir.join("network-admin.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let nak = SigningKeyPair::from_secret_bytes(&seed).public();
    let first = Client::connect(&relay.url()).await.hello;
    assert_eq!(first.network_name, "Acme");
    assert_eq!(first.network_id.len(), 32);
    assert_eq!(first.relay_id.len(), 32);
    assert_eq!(first.challenge.len(), 32);
    assert_eq!(first.network_admin_key, nak.to_vec());
    assert_eq!(
        first.max_frame as usize,
        cinder::protocol::DEFAULT_MAX_FRAME
    );
    relay.shutdown().await.unwrap();

    let relay = start_relay(&dir, |_| {}).await;
    assert!(
        relay.admin_invite().is_none(),
        "a second start must not make an invite"
    );
    let second = Client::connect(&relay.url()).await.hello;
    assert_eq!(second.network_id, first.network_id);
    assert_eq!(second.relay_id, first.relay_id);
    assert_eq!(second.network_admin_key, first.network_admin_key);
    assert_eq!(second.network_name, "Acme");
    assert_ne!(second.challenge, first.challenge, "challenges are fresh");
    assert_eq!(
        std::fs::read_to_string(dir.join("admin-invite.txt")).unwrap(),
        file
    );
    // The first invite is still the only one, and it still works (typed in lower case).
    assert_eq!(count(&dir, "SELECT COUNT(*) FROM invites"), 1);
    let mut admin = Dev::new("root");
    let (_c, auth) = register(&relay.url(), &mut admin, &code.to_lowercase()).await;
    assert!(auth.is_admin);
    assert_eq!(auth.username, "root");
    assert_eq!(auth.one_time_prekeys_left, 3);
    assert_eq!(auth.pq_prekeys_left, 2);
    // Only hashes are stored.
    let stored: Vec<u8> = db(&dir)
        .query_row("SELECT code_hash FROM invites", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&code[..4]));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn registration_checks_invites_usernames_and_proofs() {
    let mut n = net(|_| {}).await;
    // A user cannot create invites; a second registration on a logged-in connection is refused
    // without closing it.
    let e =
        n.b.expect_error(
            Body::CreateInvite(CreateInvite::default()),
            ErrorCode::PermissionDenied,
        )
        .await;
    assert_eq!(e.code, ErrorCode::PermissionDenied as u32);
    let hello = n.b.hello.clone();
    let again = n.bob.register("AAAA-AAAA-AAAA-AAAA", &hello);
    n.b.expect_error(again, ErrorCode::UnexpectedRequest).await;
    n.b.ping().await;

    // bob's invite is used now.
    let used = {
        let code = invite(&mut n.a).await;
        let mut carol = Dev::new("carol");
        register(&n.url, &mut carol, &code).await;
        code
    };
    let mut c = Client::connect(&n.url).await;
    let mut dave = Dev::new("dave");
    let body = dave.register(&used, &c.hello);
    c.expect_error(body, ErrorCode::InvalidInvite).await;
    let body = dave.register("not a code", &c.hello);
    c.expect_error(body, ErrorCode::InvalidInvite).await;

    let fresh = invite(&mut n.a).await;
    let mut bad_name = Dev::new("x");
    let body = bad_name.register(&fresh, &c.hello);
    c.expect_error(body, ErrorCode::InvalidUsername).await;
    let mut taken = Dev::new("bob");
    let body = taken.register(&fresh, &c.hello);
    c.expect_error(body, ErrorCode::UsernameTaken).await;
    // A signature over another challenge, then a certificate for another username.
    let mut forger = Dev::new("erin");
    let mut body = forger.register(&fresh, &c.hello);
    if let Body::Register(r) = &mut body {
        r.signature = forger
            .keys
            .signing
            .sign(&login_message(&[0u8; 32], &c.hello.relay_id))
            .to_vec();
    }
    c.expect_error(body, ErrorCode::AuthFailed).await;
    let mut body = forger.register(&fresh, &c.hello);
    if let Body::Register(r) = &mut body {
        r.username = "frank".into();
    }
    c.expect_error(body, ErrorCode::AuthFailed).await;
    // A root key that did not sign the certificate.
    let mut body = forger.register(&fresh, &c.hello);
    if let Body::Register(r) = &mut body {
        r.root_key = UserRootKey::generate().unwrap().public().0.to_vec();
    }
    c.expect_error(body, ErrorCode::AuthFailed).await;
    // None of the refusals used the invite up.
    let body = forger.register(&fresh, &c.hello);
    let auth = authenticated(c.request(body).await);
    assert_eq!(auth.username, "erin");
    assert!(!auth.is_admin);
    assert_eq!(
        count(&n.dir, "SELECT COUNT(*) FROM users"),
        4,
        "alice, bob, carol, erin"
    );
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn login_by_signed_challenge() {
    let mut n = net(|_| {}).await;
    let (mut c, auth) = login(&n.url, &n.bob).await;
    assert_eq!(auth.username, "bob");
    assert!(!auth.is_admin);
    assert_eq!(auth.one_time_prekeys_left, 3);
    assert_eq!(auth.pq_prekeys_left, 2);
    assert_eq!(auth.pending, 0);
    c.ping().await;
    // Wrong key, replayed signature from another connection, unknown device: all AuthFailed,
    // and the connection stays usable for a correct attempt.
    let mut d = Client::connect(&n.url).await;
    let impostor = Dev::with_root("bob", n.bob.root.clone());
    let mut body = impostor.login(&d.hello);
    if let Body::Login(l) = &mut body {
        l.device_id = n.bob.id.0.to_vec();
    }
    d.expect_error(body, ErrorCode::AuthFailed).await;
    let replayed = n.bob.login(&c.hello);
    d.expect_error(replayed, ErrorCode::AuthFailed).await;
    let unknown = impostor.login(&d.hello);
    d.expect_error(unknown, ErrorCode::AuthFailed).await;
    let body = n.bob.login(&d.hello);
    let auth = authenticated(d.request(body).await);
    assert_eq!(auth.username, "bob");
    // Usernames are case-insensitive.
    let mut e = Client::connect(&n.url).await;
    let mut body = n.alice.login(&e.hello);
    if let Body::Login(l) = &mut body {
        l.username = "ALICE".into();
    }
    assert!(authenticated(e.request(body).await).is_admin);
    n.a.ping().await;
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn send_push_fetch_ack_delivered_and_dedup() {
    let mut n = net(|_| {}).await;
    // Look-ups.
    match n
        .a
        .request(Body::GetUser(GetUser {
            username: "Bob".into(),
        }))
        .await
    {
        Body::UserInfo(u) => {
            assert_eq!(u.username, "bob");
            assert_eq!(u.display_name, "bob display");
            assert_eq!(u.root_key, n.bob.root.public().0.to_vec());
            assert_eq!(u.devices, vec![n.bob.id.0.to_vec()]);
        }
        other => panic!("{other:?}"),
    }
    n.a.expect_error(
        Body::GetUser(GetUser {
            username: "nobody".into(),
        }),
        ErrorCode::UnknownUser,
    )
    .await;
    // FetchKeys pops one one-time prekey of each kind, then falls back to the last resort.
    let mut pq_ids = Vec::new();
    for round in 0..4 {
        match n
            .a
            .request(Body::FetchKeys(FetchKeys {
                username: "bob".into(),
            }))
            .await
        {
            Body::KeyBundle(k) => {
                assert_eq!(k.root_key, n.bob.root.public().0.to_vec());
                assert_eq!(k.devices.len(), 1);
                let d = &k.devices[0];
                assert_eq!(d.device_id, n.bob.id.0.to_vec());
                assert_eq!(d.certificate, n.bob.cert);
                assert!(d.signed_prekey.is_some());
                assert_eq!(d.one_time_prekey.is_some(), round < 3, "round {round}");
                let pq = d.pq_prekey.as_ref().unwrap();
                assert_eq!(pq.last_resort, round >= 2, "round {round}");
                pq_ids.push(pq.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_ne!(pq_ids[0], pq_ids[1]);
    assert_eq!(pq_ids[2], pq_ids[3], "the last-resort key is reused");
    n.a.expect_error(
        Body::FetchKeys(FetchKeys {
            username: "nobody".into(),
        }),
        ErrorCode::UnknownUser,
    )
    .await;

    // Send: bob is connected, so he gets a live push.
    let body = b"ciphertext body".to_vec();
    let ok = send_ok(
        n.a.request(send_body(
            1,
            &body,
            &["bob"],
            vec![n.bob.entry(b"key for bob")],
        ))
        .await,
    );
    assert_eq!(ok.message_id, vec![1; 16]);
    assert!(!ok.duplicate);
    let pushed = n.b.push().await;
    assert_eq!(pushed.kind, DeliveryKind::Message as i32);
    assert_eq!(pushed.sender_user, "alice");
    assert_eq!(pushed.sender_device, n.alice.id.0.to_vec());
    assert_eq!(pushed.message_id, vec![1; 16]);
    assert_eq!(pushed.body, body);
    assert_eq!(pushed.payload, b"key for bob");
    assert_eq!(pushed.server_ts_ms, ok.server_ts_ms);

    // A retry is acknowledged as a duplicate and stored once.
    let dup = send_ok(
        n.a.request(send_body(
            1,
            &body,
            &["bob"],
            vec![n.bob.entry(b"key for bob")],
        ))
        .await,
    );
    assert!(dup.duplicate);
    assert_eq!(dup.server_ts_ms, ok.server_ts_ms);
    assert_eq!(count(&n.dir, "SELECT COUNT(*) FROM mailbox"), 1);
    assert_eq!(count(&n.dir, "SELECT COUNT(*) FROM bodies"), 1);

    // Fetch returns the same item until it is acknowledged.
    for _ in 0..2 {
        match n.b.request(Body::Fetch(Fetch { limit: 10 })).await {
            Body::Deliveries(d) => {
                assert!(!d.more);
                assert_eq!(d.items, vec![pushed.clone()]);
            }
            other => panic!("{other:?}"),
        }
    }
    let (mut b2, auth) = login(&n.url, &n.bob).await;
    assert_eq!(auth.pending, 1);
    assert_eq!(auth.one_time_prekeys_left, 0);
    assert_eq!(auth.pq_prekeys_left, 0);
    assert!(matches!(
        n.b.request(Body::Ack(Ack {
            seqs: vec![pushed.seq]
        }))
        .await,
        Body::Ok(_)
    ));
    assert_eq!(
        count(&n.dir, "SELECT COUNT(*) FROM bodies"),
        0,
        "the last copy took the body"
    );

    // The sender learns that bob's device stored it, live and from the mailbox.
    let notice = n.a.push().await;
    assert_eq!(notice.kind, DeliveryKind::Delivered as i32);
    assert_eq!(notice.sender_user, "bob");
    assert_eq!(notice.sender_device, n.bob.id.0.to_vec());
    assert_eq!(notice.message_id, vec![1; 16]);
    assert!(notice.body.is_empty() && notice.payload.is_empty());
    let fetched = n.a.fetch_all().await;
    assert_eq!(fetched, vec![notice.clone()]);
    assert!(matches!(
        n.a.request(Body::Ack(Ack {
            seqs: vec![notice.seq]
        }))
        .await,
        Body::Ok(_)
    ));
    assert!(n.a.fetch_all().await.is_empty());
    assert!(b2.fetch_all().await.is_empty());

    // An unknown recipient is refused and nothing is stored.
    n.a.expect_error(
        send_body(2, b"x", &["bob", "nobody"], vec![n.bob.entry(b"k")]),
        ErrorCode::UnknownUser,
    )
    .await;
    let mut short_id = send_body(3, b"x", &["bob"], vec![n.bob.entry(b"k")]);
    if let Body::Send(s) = &mut short_id {
        s.message_id = vec![3; 15];
    }
    n.a.expect_error(short_id, ErrorCode::BadRequest).await;
    assert_eq!(count(&n.dir, "SELECT COUNT(*) FROM mailbox"), 0);
    // A client may not send relay-to-client frames; the connection stays open.
    n.a.expect_error(Body::Delivery(Delivery::default()), ErrorCode::BadRequest)
        .await;
    n.a.ping().await;
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn sends_must_cover_exactly_the_current_devices() {
    let mut n = net(|_| {}).await;
    // Give alice a second device straight in the database (device linking is a later feature).
    let alice2 = Dev::with_root("alice", n.alice.root.clone());
    {
        let dsk = alice2.keys.signing.public();
        db(&n.dir)
            .execute(
                "INSERT INTO devices (device_id, username, certificate, signing_key, created_at)
                 VALUES (?1, 'alice', ?2, ?3, 0)",
                rusqlite::params![&alice2.id.0[..], alice2.cert, &dsk[..]],
            )
            .unwrap();
    }
    let stranger = Dev::new("bob");
    // (entries sent, the stale list expected: user and their current device ids)
    type Stale<'a> = Vec<(&'a str, Vec<Vec<u8>>)>;
    let cases: Vec<(Vec<KeyEntry>, Stale)> = vec![
        // bob's device missing (and alice's other device).
        (
            vec![],
            vec![
                ("alice", vec![alice2.id.0.to_vec()]),
                ("bob", vec![n.bob.id.0.to_vec()]),
            ],
        ),
        // alice's other device missing.
        (
            vec![n.bob.entry(b"k")],
            vec![("alice", vec![alice2.id.0.to_vec()])],
        ),
        // An unknown extra device for bob.
        (
            vec![n.bob.entry(b"k"), alice2.entry(b"k"), stranger.entry(b"k")],
            vec![("bob", vec![n.bob.id.0.to_vec()])],
        ),
        // The sending device itself is never addressed.
        (
            vec![n.bob.entry(b"k"), alice2.entry(b"k"), n.alice.entry(b"k")],
            vec![("alice", vec![alice2.id.0.to_vec()])],
        ),
    ];
    for (i, (entries, want)) in cases.into_iter().enumerate() {
        let e =
            n.a.expect_error(
                send_body(10, b"b", &["bob"], entries),
                ErrorCode::DevicesChanged,
            )
            .await;
        let mut got: Vec<(String, Vec<Vec<u8>>)> = e
            .stale
            .into_iter()
            .map(|u| (u.username, u.devices))
            .collect();
        got.sort();
        let want: Vec<(String, Vec<Vec<u8>>)> =
            want.into_iter().map(|(u, d)| (u.to_owned(), d)).collect();
        assert_eq!(got, want, "case {i}");
    }
    assert_eq!(count(&n.dir, "SELECT COUNT(*) FROM mailbox"), 0);
    assert_eq!(count(&n.dir, "SELECT COUNT(*) FROM sends"), 0);
    // The exact set is accepted; alice's other device gets its copy and can log in to read it.
    let ok = send_ok(
        n.a.request(send_body(
            10,
            b"b",
            &["bob"],
            vec![n.bob.entry(b"kb"), alice2.entry(b"ka")],
        ))
        .await,
    );
    assert!(!ok.duplicate);
    let (mut a2, _) = login(&n.url, &alice2).await;
    let items = a2.fetch_all().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].payload, b"ka");
    assert_eq!(items[0].sender_device, n.alice.id.0.to_vec());
    assert_eq!(n.b.push().await.payload, b"kb");
    // A note to self addresses only the other own devices.
    let ok = send_ok(
        n.a.request(send_body(11, b"n", &[], vec![alice2.entry(b"self")]))
            .await,
    );
    assert!(!ok.duplicate);
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_closes_only_the_offending_connection() {
    let max_frame = 64 * 1024;
    let mut n = net(|c| c.max_frame = max_frame).await;
    let mut truncated = encode_frame(&Frame {
        id: 5,
        body: Some(send_body(
            1,
            &[7; 300],
            &["bob"],
            vec![n.bob.entry(&[8; 300])],
        )),
    });
    truncated.truncate(truncated.len() / 2);
    let mut wrong_version = encode_frame(&Frame {
        id: 6,
        body: Some(Body::Ping(Ping {})),
    });
    wrong_version[0] = 9;
    let fetch_before_login = encode_frame(&Frame {
        id: 77,
        body: Some(Body::Fetch(Fetch { limit: 1 })),
    });
    let cases: Vec<(&str, Message, ErrorCode, u64)> = vec![
        (
            "garbage",
            Message::binary(b"\x01\xff\xff\xff\xff\xffgarbage".to_vec()),
            ErrorCode::BadFrame,
            0,
        ),
        ("empty", Message::binary(Vec::new()), ErrorCode::BadFrame, 0),
        (
            "truncated",
            Message::binary(truncated),
            ErrorCode::BadFrame,
            0,
        ),
        (
            "wrong version",
            Message::binary(wrong_version),
            ErrorCode::UnsupportedVersion,
            0,
        ),
        ("text", Message::text("hello"), ErrorCode::BadFrame, 0),
        (
            "oversized",
            Message::binary(vec![1u8; max_frame + 1000]),
            ErrorCode::FrameTooLarge,
            0,
        ),
        (
            "fetch before login",
            Message::binary(fetch_before_login),
            ErrorCode::NotAuthenticated,
            77,
        ),
    ];
    for (i, (name, msg, code, id)) in cases.into_iter().enumerate() {
        let mut bad = Client::connect(&n.url).await;
        bad.send_raw(msg).await;
        let f = bad
            .next_frame()
            .await
            .unwrap_or_else(|| panic!("{name}: no error frame"));
        assert_eq!(f.id, id, "{name}: the error echoes the frame id");
        let e = error_of(f.body.unwrap());
        assert_eq!(ErrorCode::from_u32(e.code), Some(code), "{name}: {e:?}");
        bad.expect_closed().await;
        // Everyone else is unaffected: a send still reaches bob live.
        let i = u8::try_from(i).unwrap() + 100;
        let ok = send_ok(
            n.a.request(send_body(
                i,
                b"still fine",
                &["bob"],
                vec![n.bob.entry(b"k")],
            ))
            .await,
        );
        assert!(!ok.duplicate, "{name}");
        assert_eq!(n.b.push().await.message_id, vec![i; 16], "{name}");
    }
    // Same for a logged-in connection sending garbage: only it is closed.
    let (mut c, _) = login(&n.url, &n.bob).await;
    c.send_raw(Message::binary(vec![1, 0xff])).await;
    let e = error_of(c.next_frame().await.unwrap().body.unwrap());
    assert_eq!(e.code, ErrorCode::BadFrame as u32);
    c.expect_closed().await;
    n.b.ping().await;
    // And the relay still accepts newcomers.
    let (mut fresh, _) = login(&n.url, &n.alice).await;
    fresh.ping().await;
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_device_cannot_fetch_or_acknowledge_another_devices_mailbox() {
    let mut n = net(|_| {}).await;
    let code = invite(&mut n.a).await;
    let mut carol = Dev::new("carol");
    let (mut c, _) = register(&n.url, &mut carol, &code).await;
    let ok = send_ok(
        n.a.request(send_body(1, b"for bob", &["bob"], vec![n.bob.entry(b"k")]))
            .await,
    );
    assert!(!ok.duplicate);
    let seq = n.b.push().await.seq;
    assert!(
        c.fetch_all().await.is_empty(),
        "carol sees nothing of bob's"
    );
    assert!(matches!(
        c.request(Body::Ack(Ack {
            seqs: vec![seq, seq + 1, u64::MAX]
        }))
        .await,
        Body::Ok(_)
    ));
    assert_eq!(
        count(
            &n.dir,
            &format!("SELECT COUNT(*) FROM mailbox WHERE seq = {seq}")
        ),
        1,
        "carol's ack must not delete bob's item"
    );
    let items = n.b.fetch_all().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].seq, seq);
    // No Delivered notice was created by carol's attempt.
    assert!(n.a.fetch_all().await.is_empty());
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_limit_answers_rate_limited_and_keeps_the_connection() {
    let mut n = net(|c| {
        c.rate_per_sec = 1;
        c.rate_burst = 3;
    })
    .await;
    // Refill the bucket the registration requests used, on virtual time (the buckets run on
    // tokio's clock).
    common::advance(Duration::from_millis(1200)).await;
    let mut limited = None;
    for _ in 0..20 {
        match n.a.request(Body::Ping(Ping {})).await {
            Body::Pong(_) => {}
            Body::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited as u32);
                limited = Some(e);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let e = limited.expect("20 rapid requests must hit a 1/s limit");
    assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 1000, "{e:?}");
    // The limit is per device: a second connection of alice's device is limited too.
    let (mut a2, _) = {
        let mut c = Client::connect(&n.url).await;
        let body = n.alice.login(&c.hello);
        // The login itself counts against the new connection's own pre-login budget.
        let a = authenticated(c.request(body).await);
        (c, a)
    };
    let second = a2.request(Body::Ping(Ping {})).await;
    assert!(matches!(second, Body::Error(ref e) if e.code == ErrorCode::RateLimited as u32));
    // bob is not affected.
    n.b.ping().await;
    // After `retry_after_ms` the device may send again.
    common::advance(Duration::from_millis(u64::from(e.retry_after_ms) + 50)).await;
    n.a.ping().await;
    n.relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_above_the_limit_are_told_so() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start_relay(tmp.path(), |c| c.max_connections = 2).await;
    let url = relay.url();
    let mut one = Client::connect(&url).await;
    let two = Client::connect(&url).await;
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut third = Client {
        ws,
        hello: ServerHello::default(),
        next_id: 1,
        pushes: VecDeque::new(),
    };
    let e = error_of(third.next_frame().await.unwrap().body.unwrap());
    assert_eq!(e.code, ErrorCode::TooManyConnections as u32);
    third.expect_closed().await;
    one.ping().await;
    // A slot frees when a connection ends.
    drop(two);
    let mut ok = false;
    for _ in 0..100 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut c = Client {
            ws,
            hello: ServerHello::default(),
            next_id: 1,
            pushes: VecDeque::new(),
        };
        if let Some(Frame {
            body: Some(Body::ServerHello(_)),
            ..
        }) = c.next_frame().await
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the freed slot was never reused");
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_says_bye_to_everyone() {
    let mut n = net(|_| {}).await;
    let mut anonymous = Client::connect(&n.url).await;
    let url = n.url.clone();
    n.relay.shutdown().await.unwrap();
    for c in [&mut n.a, &mut n.b, &mut anonymous] {
        let f = c.next_frame().await.expect("a Bye before the close");
        assert_eq!(f.id, 0);
        match f.body {
            Some(Body::Bye(b)) => assert!(!b.reason.is_empty()),
            other => panic!("expected Bye, got {other:?}"),
        }
        c.expect_closed().await;
    }
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "no longer accepting"
    );
    // The database was closed cleanly: no WAL left behind.
    let wal = n.dir.join("relay.db-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_burst_loses_nothing_that_was_acknowledged() {
    const N: u8 = 200;
    let n = net(|c| c.rate_per_sec = 0).await;
    let Net {
        _dir,
        dir,
        relay,
        alice,
        bob,
        a,
        b,
        ..
    } = n;
    drop(b);
    let entry = bob.entry(b"key");
    let frames: Vec<Message> = (0..N)
        .map(|i| {
            Message::binary(encode_frame(&Frame {
                id: u64::from(i) + 1000,
                body: Some(send_body(i, b"burst", &["bob"], vec![entry.clone()])),
            }))
        })
        .collect();
    let (mut sink, mut stream) = a.ws.split();
    let writer = tokio::spawn(async move {
        for f in frames {
            if sink.send(f).await.is_err() {
                break;
            }
        }
    });
    let mut acked: HashSet<Vec<u8>> = HashSet::new();
    let mut relay = Some(relay);
    while let Ok(Some(Ok(msg))) = timeout(WAIT, stream.next()).await {
        let Message::Binary(bytes) = msg else {
            continue;
        };
        if let Some(Body::SendOk(ok)) = decode_frame(&bytes, usize::MAX).unwrap().body {
            assert!(!ok.duplicate);
            acked.insert(ok.message_id);
        }
        if acked.len() == 40
            && let Some(r) = relay.take()
        {
            r.abort();
        }
    }
    let _ = writer.await;
    assert!(relay.is_none(), "the burst ended before the abort");
    assert!(
        acked.len() >= 40 && acked.len() < usize::from(N),
        "{}",
        acked.len()
    );

    let relay = start_relay(&dir, |c| c.rate_per_sec = 0).await;
    assert!(relay.admin_invite().is_none());
    let url = relay.url();
    let (mut b, _) = login(&url, &bob).await;
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    match b.request(Body::Fetch(Fetch { limit: 500 })).await {
        Body::Deliveries(d) => {
            assert!(!d.more);
            for item in d.items {
                *seen.entry(item.message_id).or_default() += 1;
            }
        }
        other => panic!("{other:?}"),
    }
    for id in &acked {
        assert_eq!(seen.get(id), Some(&1), "an acknowledged message was lost");
    }
    assert!(seen.values().all(|&c| c == 1), "duplicates in the mailbox");
    // Retrying the whole burst stores nothing twice.
    let (mut a, _) = login(&url, &alice).await;
    for i in 0..N {
        let ok = send_ok(
            a.request(send_body(i, b"burst", &["bob"], vec![entry.clone()]))
                .await,
        );
        if acked.contains(&ok.message_id) {
            assert!(ok.duplicate, "an acknowledged send was stored again");
        }
    }
    let all = b.fetch_all().await;
    let ids: HashSet<Vec<u8>> = all.iter().map(|d| d.message_id.clone()).collect();
    assert_eq!(all.len(), usize::from(N));
    assert_eq!(ids.len(), usize::from(N));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = tmp.path().join("cert.pem");
    let key_path = tmp.path().join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let relay = start_relay(&tmp.path().join("data"), |c| {
        c.tls = Some((cert_path.clone(), key_path.clone()));
    })
    .await;
    assert!(relay.url().starts_with("wss://"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}", relay.local_addr().port());
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(config));
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        &url,
        None,
        false,
        Some(connector.clone()),
    )
    .await
    .unwrap();
    let mut c = Client::greeted(ws).await;
    let mut admin = Dev::new("admin");
    let body = admin.register(relay.admin_invite().unwrap(), &c.hello);
    assert!(authenticated(c.request(body).await).is_admin);
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(&url, None, false, Some(connector))
            .await
            .unwrap();
    let mut c2 = Client::greeted(ws).await;
    let body = admin.login(&c2.hello);
    assert_eq!(authenticated(c2.request(body).await).username, "admin");
    // Plain WebSocket on the TLS port does not get anywhere.
    let plain = format!("ws://127.0.0.1:{}", relay.local_addr().port());
    assert!(
        timeout(WAIT, tokio_tungstenite::connect_async(&plain))
            .await
            .unwrap()
            .is_err()
    );
    relay.shutdown().await.unwrap();
}

/// Relay memory per idle authenticated connection. Run alone, since RSS is per process:
/// `cargo test --release --test relay -- --ignored --nocapture idle_memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints figures"]
async fn idle_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNS: usize = 2000;

    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A bare-bones WebSocket client so client-side memory stays negligible.
    async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            127 => panic!("frame too big"),
            l => usize::from(l),
        };
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.unwrap();
        p
    }
    async fn write_frame(s: &mut TcpStream, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mut f = vec![
            0x82,
            0x80 | u8::try_from(payload.len()).unwrap(),
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload); // all-zero mask: payload unchanged
        s.write_all(&f).await.unwrap();
    }

    let tmp = tempfile::tempdir().unwrap();
    let relay = start_relay(tmp.path(), |c| c.rate_per_sec = 0).await;
    let addr = relay.local_addr();
    let mut alice = Dev::new("alice");
    let (_c, _) = register(&relay.url(), &mut alice, relay.admin_invite().unwrap()).await;
    async fn open(n: usize, addr: std::net::SocketAddr, alice: &Dev, socks: &mut Vec<TcpStream>) {
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(s.read_u8().await.unwrap());
            }
            let hello = match decode_frame(&read_frame(&mut s).await, usize::MAX)
                .unwrap()
                .body
            {
                Some(Body::ServerHello(h)) => h,
                other => panic!("{other:?}"),
            };
            let login = encode_frame(&Frame {
                id: 1,
                body: Some(alice.login(&hello)),
            });
            write_frame(&mut s, &login).await;
            let reply = decode_frame(&read_frame(&mut s).await, usize::MAX).unwrap();
            assert!(matches!(reply.body, Some(Body::Authenticated(_))));
            socks.push(s);
        }
    }
    let mut socks = Vec::with_capacity(CONNS + 200);
    // A first batch that is not measured warms up allocator pools and runtime structures.
    open(200, addr, &alice, &mut socks).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    open(CONNS, addr, &alice, &mut socks).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let per_conn = (after.saturating_sub(before)) * 1024 / CONNS;
    println!(
        "idle authenticated connections: {CONNS}; process RSS {before} KiB -> {after} KiB; \
         {per_conn} bytes per connection (relay and raw client sides together)"
    );
    drop(socks);
    relay.shutdown().await.unwrap();
}
