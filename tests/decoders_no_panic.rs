#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every decoder of the crypto core must return (never panic) on arbitrary input.
//!
//! Two kinds of input are fed to each decoder: arbitrary byte vectors, and "structured" inputs
//! made by taking a valid encoding and mutating it (flips, overwrites, truncations, insertions,
//! removals, hostile length prefixes). A mutated encoding must either fail to decode or decode
//! to a value that re-encodes consistently: byte-for-byte for the wire formats, and stably
//! (`encode(decode(encode(x))) == encode(x)`) for the secret cache states that are not canonical.
//! Authenticated formats (envelope bodies, chunked streams, signed membership ops) must reject
//! every real mutation.
//!
//! Set `PROPTEST_CASES` to run more cases than the default.

use std::io::{Cursor, Read};
use std::sync::LazyLock;

use cinder::crypto::CryptoError;
use cinder::crypto::chunked::{self, CHUNK_SIZE, FILE_CONTEXT, SEALED_CHUNK, SeekableReader};
use cinder::crypto::envelope::{
    self, FilePointer, KeyPackage, MessageId, Payload, PayloadKind, ReceiptKind, Timers,
};
use cinder::crypto::handshake::{self, PairwiseMessage, Session};
use cinder::crypto::identity::{
    DeviceCertificate, DeviceId, DeviceKeys, DeviceRole, Revocation, RootPublicKey, UserRootKey,
};
use cinder::crypto::membership::{
    self, MembershipOp, OpKind, RoomKind, RoomState, RoomTimers, SignedOp,
};
use cinder::crypto::passphrase::{CacheHeader, KdfParams};
use cinder::crypto::prekeys::{DevicePrekeys, PqPrekey, PrekeyBundle};
use cinder::crypto::primitives::{DhKeyPair, Secret32};
use cinder::crypto::ratchet::{RatchetMessage, RatchetState};
use cinder::crypto::sender_keys::{
    ReceivedSenderKey, SenderKeyDistribution, SenderKeyMessage, SenderKeyState,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

const NOW: u64 = 1_700_000_000;
const CHUNK_KEY: [u8; 32] = [0x42; 32];

type Check = Result<bool, TestCaseError>;

/// Valid encodings of every structure, built once.
struct Fixtures {
    cert: Vec<u8>,
    revocation: Vec<u8>,
    bundles: Vec<Vec<u8>>,
    pq_prekey: Vec<u8>,
    device_prekeys: Vec<Vec<u8>>,
    ratchet_message: Vec<u8>,
    ratchet_states: Vec<Vec<u8>>,
    pairwise: Vec<Vec<u8>>,
    sessions: Vec<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
    payload: Payload,
    key_package: KeyPackage,
    body: Vec<u8>,
    distribution: Vec<u8>,
    sender_key_message: Vec<u8>,
    received_sender_key: Vec<u8>,
    sender_key_state: Vec<u8>,
    cache_header: Vec<u8>,
    chunked: Vec<u8>,
    chunked_plain: Vec<u8>,
    membership_ops: Vec<Vec<u8>>,
    membership_root: RootPublicKey,
    room_states: Vec<Vec<u8>>,
}

fn device(name: &str) -> (UserRootKey, DeviceKeys, DeviceCertificate) {
    let urk = UserRootKey::generate().unwrap();
    let keys = DeviceKeys::generate().unwrap();
    let cert = urk
        .certify(name, DeviceId([7; 16]), &keys, NOW, DeviceRole::User)
        .unwrap();
    (urk, keys, cert)
}

fn text_payload(text: &str) -> Payload {
    Payload {
        message_id: MessageId([1; 16]),
        sent_at_ms: NOW * 1000,
        conversation: b"dm:alice:bob".to_vec(),
        kind: PayloadKind::Text(text.to_owned()),
        timers: Timers {
            expire_after: Some(60),
            burn_after: None,
        },
        reply_to: None,
    }
}

fn build_fixtures() -> Fixtures {
    // Identities and a full PQXDH handshake between alice and bob.
    let (alice_urk, alice_keys, alice_cert) = device("alice");
    let (bob_urk, bob_keys, bob_cert) = device("bob");
    let revocation = bob_urk.revoke("bob", DeviceId([9; 16]), NOW).unwrap();
    let mut bob_pre = DevicePrekeys::new(&bob_keys.signing, NOW).unwrap();
    let otk = bob_pre.generate_one_time(2).unwrap();
    let pq = bob_pre
        .generate_pq_one_time(&bob_keys.signing, 1, NOW)
        .unwrap();
    let bundle = PrekeyBundle {
        cert: bob_cert.clone(),
        signed_prekey: bob_pre.current_signed_prekey(&bob_keys.signing).unwrap(),
        one_time_prekey: Some(otk[0]),
        pq_prekey: pq[0].clone(),
    };
    let mut bundle_no_otk = bundle.clone();
    bundle_no_otk.one_time_prekey = None;
    bundle_no_otk.pq_prekey = bob_pre.current_last_resort(&bob_keys.signing).unwrap();
    let fresh_pre = bob_pre.to_secret_bytes().unwrap().to_vec();

    let mut alice_session = handshake::initiate(
        &alice_keys,
        &alice_cert,
        &bob_urk.public(),
        "bob",
        &bundle,
        &[],
        NOW,
    )
    .unwrap();
    let initial = alice_session.encrypt(b"hello bob").unwrap();
    let pending_session = alice_session.to_secret_bytes().unwrap().to_vec();
    let PairwiseMessage::Initial(init) = &initial else {
        panic!("first message must carry the handshake");
    };
    let (mut bob_session, first) = handshake::respond(
        &bob_keys,
        &bob_cert,
        &mut bob_pre,
        &alice_urk.public(),
        &[],
        init,
        NOW,
    )
    .unwrap();
    assert_eq!(first, b"hello bob");
    let normal = bob_session.encrypt(b"hello alice").unwrap();
    alice_session.decrypt(&normal, NOW).unwrap();
    let PairwiseMessage::Normal(ratchet_message) = &normal else {
        panic!("a reply is a normal message");
    };

    // A bare ratchet pair with a stored skipped key.
    let sk = Secret32::from_bytes([3; 32]);
    let bob_kp = DhKeyPair::generate().unwrap();
    let mut ra = RatchetState::init_initiator(&sk, bob_kp.public(), b"ad".to_vec()).unwrap();
    let mut rb = RatchetState::init_responder(&sk, bob_kp, b"ad".to_vec());
    let _m1 = ra.encrypt(b"one").unwrap();
    let m2 = ra.encrypt(b"two").unwrap();
    rb.decrypt(&m2, NOW).unwrap();

    // Envelope payloads of every kind.
    let pointer = FilePointer {
        blob_id: [9; 16],
        input_key: Secret32::from_bytes([5; 32]),
        ciphertext_len: 1000,
        plaintext_len: 900,
        ciphertext_sha256: [1; 32],
        mime: "image/png".into(),
        name: "cat.png".into(),
        padding: 12,
    };
    let mut payloads = vec![text_payload("hello")];
    for kind in [
        PayloadKind::File(pointer.clone()),
        PayloadKind::Clip(pointer),
        PayloadKind::Receipt {
            kind: ReceiptKind::Read,
            message_ids: vec![MessageId([3; 16]), MessageId([4; 16])],
        },
        PayloadKind::Control(vec![1, 2, 3]),
    ] {
        let mut p = text_payload("");
        p.kind = kind;
        p.reply_to = Some(MessageId([4; 16]));
        p.timers.burn_after = Some(30);
        payloads.push(p);
    }
    let payload = text_payload("sealed");
    let (key_package, body) = envelope::seal(&payload).unwrap();

    // Sender keys with one skipped key on the receiving side.
    let mut sks = SenderKeyState::new(b"room-1", DeviceId([1; 16]), NOW).unwrap();
    let mut rsk = ReceivedSenderKey::from_distribution(&sks.distribution());
    let distribution = sks.distribution().encode().unwrap().to_vec();
    let h = [5u8; 32];
    let _s0 = sks.encrypt(b"zero", &h).unwrap();
    let s1 = sks.encrypt(b"one", &h).unwrap();
    rsk.decrypt(&s1, &h).unwrap();

    let (cache_header, _) = CacheHeader::create(b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();

    let chunked_plain = plaintext(CHUNK_SIZE + 100, 17);
    let mut chunked = Vec::new();
    chunked::encrypt(
        &CHUNK_KEY,
        FILE_CONTEXT,
        &mut &chunked_plain[..],
        &mut chunked,
    )
    .unwrap();

    // A room's membership log: create, then one op of each kind that carries data.
    let create = SignedOp::sign(
        MembershipOp {
            room_id: membership::new_room_id(RoomKind::Room).unwrap(),
            seq: 0,
            prev: [0; 32],
            actor: "alice".into(),
            actor_cert: alice_cert.clone(),
            at_ms: NOW * 1000,
            kind: OpKind::Create {
                kind: RoomKind::Room,
                title: "Lobby".into(),
                description: "first room".into(),
                members: vec!["bob".into()],
            },
        },
        &alice_keys.signing,
    )
    .unwrap();
    let mut room = RoomState::genesis(&create, &alice_urk.public(), 100).unwrap();
    let mut membership_ops = vec![create.encode().unwrap()];
    let mut room_states = vec![room.encode().unwrap()];
    for kind in [
        OpKind::Invite {
            users: vec!["carol".into(), "dave".into()],
        },
        OpKind::Promote { user: "bob".into() },
        OpKind::Edit {
            title: "Lobby 2".into(),
            description: String::new(),
        },
        OpKind::SetTimers {
            timers: RoomTimers {
                expire_after: Some(86_400),
                burn_after: Some(60),
            },
        },
        OpKind::Remove {
            users: vec!["dave".into()],
        },
        OpKind::Leave,
    ] {
        let op = SignedOp::sign(
            room.next_op("alice", &alice_cert, NOW * 1000, kind),
            &alice_keys.signing,
        )
        .unwrap();
        room.apply(&op, &alice_urk.public(), 100).unwrap();
        membership_ops.push(op.encode().unwrap());
    }
    room_states.push(room.encode().unwrap());

    Fixtures {
        cert: alice_cert.encode().unwrap(),
        revocation: revocation.encode().unwrap(),
        bundles: vec![bundle.encode().unwrap(), bundle_no_otk.encode().unwrap()],
        pq_prekey: pq[0].encode().unwrap(),
        device_prekeys: vec![fresh_pre, bob_pre.to_secret_bytes().unwrap().to_vec()],
        ratchet_message: ratchet_message.encode().unwrap(),
        ratchet_states: vec![
            ra.to_secret_bytes().unwrap().to_vec(),
            rb.to_secret_bytes().unwrap().to_vec(),
        ],
        pairwise: vec![initial.encode().unwrap(), normal.encode().unwrap()],
        sessions: vec![
            pending_session,
            alice_session.to_secret_bytes().unwrap().to_vec(),
            bob_session.to_secret_bytes().unwrap().to_vec(),
        ],
        payloads: payloads
            .iter()
            .map(|p| p.encode().unwrap().to_vec())
            .collect(),
        payload,
        key_package,
        body,
        distribution,
        sender_key_message: s1.encode().unwrap(),
        received_sender_key: rsk.to_secret_bytes().unwrap().to_vec(),
        sender_key_state: sks.to_secret_bytes().unwrap().to_vec(),
        cache_header: cache_header.encode(),
        chunked,
        chunked_plain,
        membership_ops,
        membership_root: alice_urk.public(),
        room_states,
    }
}

static FIX: LazyLock<Fixtures> = LazyLock::new(build_fixtures);

fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Consistency checks. Each returns whether the input decoded.

/// Decoding succeeded only if re-encoding gives back exactly the input.
fn canonical<T>(
    what: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, CryptoError>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Check {
    match decode(bytes) {
        Ok(v) => {
            prop_assert_eq!(encode(&v), bytes, "{} re-encodes differently", what);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Decoding succeeded only if the re-encoding decodes again to the same encoding.
fn stable<T>(
    what: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, CryptoError>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Check {
    match decode(bytes) {
        Ok(v) => {
            let once = encode(&v);
            let again = decode(&once);
            prop_assert!(again.is_ok(), "{} re-encoding does not decode", what);
            if let Ok(again) = again {
                prop_assert_eq!(encode(&again), once, "{} re-encoding is unstable", what);
            }
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

fn check_cert(b: &[u8]) -> Check {
    canonical("certificate", b, DeviceCertificate::decode, |v| {
        v.encode().unwrap()
    })
}

fn check_revocation(b: &[u8]) -> Check {
    canonical("revocation", b, Revocation::decode, |v| v.encode().unwrap())
}

fn check_bundle(b: &[u8]) -> Check {
    canonical("prekey bundle", b, PrekeyBundle::decode, |v| {
        v.encode().unwrap()
    })
}

fn check_pq_prekey(b: &[u8]) -> Check {
    canonical("pq prekey", b, PqPrekey::decode, |v| v.encode().unwrap())
}

fn check_device_prekeys(b: &[u8]) -> Check {
    // Not canonical: duplicate ids collapse and one-time keys come back sorted by id.
    stable("device prekeys", b, DevicePrekeys::from_secret_bytes, |v| {
        v.to_secret_bytes().unwrap().to_vec()
    })
}

fn check_ratchet_message(b: &[u8]) -> Check {
    canonical("ratchet message", b, RatchetMessage::decode, |v| {
        v.encode().unwrap()
    })
}

fn check_ratchet_state(b: &[u8]) -> Check {
    canonical("ratchet state", b, RatchetState::from_secret_bytes, |v| {
        v.to_secret_bytes().unwrap().to_vec()
    })
}

fn check_pairwise(b: &[u8]) -> Check {
    canonical("pairwise message", b, PairwiseMessage::decode, |v| {
        v.encode().unwrap()
    })
}

fn check_session(b: &[u8]) -> Check {
    // Not canonical: the one-time prekey id of a pending handshake is ignored (and re-encoded
    // as 0) when its presence byte is 0.
    stable("session", b, Session::from_secret_bytes, |v| {
        v.to_secret_bytes().unwrap().to_vec()
    })
}

fn check_payload(b: &[u8]) -> Check {
    canonical("payload", b, Payload::decode, |v| {
        v.encode().unwrap().to_vec()
    })
}

/// A decoded key package opens the fixed body only if it is the real package.
fn check_key_package(b: &[u8]) -> Check {
    let decoded = canonical("key package", b, KeyPackage::decode, |v| {
        v.encode().unwrap().to_vec()
    })?;
    if let Ok(kp) = KeyPackage::decode(b)
        && let Ok(p) = envelope::open(&kp, &FIX.body)
    {
        prop_assert_eq!(&p, &FIX.payload);
        prop_assert_eq!(
            kp.encode().unwrap().to_vec(),
            FIX.key_package.encode().unwrap().to_vec()
        );
    }
    Ok(decoded)
}

/// The fixed key package opens a body only if it is the real body.
fn check_body(b: &[u8]) -> Check {
    match envelope::open(&FIX.key_package, b) {
        Ok(p) => {
            prop_assert_eq!(&p, &FIX.payload);
            prop_assert_eq!(b, &FIX.body[..]);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

fn check_distribution(b: &[u8]) -> Check {
    canonical(
        "sender key distribution",
        b,
        SenderKeyDistribution::decode,
        |v| v.encode().unwrap().to_vec(),
    )
}

fn check_sender_key_message(b: &[u8]) -> Check {
    canonical("sender key message", b, SenderKeyMessage::decode, |v| {
        v.encode().unwrap()
    })
}

fn check_received_sender_key(b: &[u8]) -> Check {
    canonical(
        "received sender key",
        b,
        ReceivedSenderKey::from_secret_bytes,
        |v| v.to_secret_bytes().unwrap().to_vec(),
    )
}

fn check_sender_key_state(b: &[u8]) -> Check {
    canonical(
        "sender key state",
        b,
        SenderKeyState::from_secret_bytes,
        |v| v.to_secret_bytes().unwrap().to_vec(),
    )
}

fn check_cache_header(b: &[u8]) -> Check {
    canonical("cache header", b, CacheHeader::decode, |v| v.encode())
}

/// Streaming and seekable decryption under the fixed key; both must agree, and a stream that
/// decrypts is necessarily the fixture (the commitment pins the key, the tags the chunks).
fn check_chunked(b: &[u8]) -> Check {
    let mut out = Vec::new();
    let streamed = chunked::decrypt(&CHUNK_KEY, FILE_CONTEXT, &mut &b[..], &mut out);
    let mut seek_out = Vec::new();
    let seekable = SeekableReader::new(&CHUNK_KEY, FILE_CONTEXT, Cursor::new(b))
        .ok()
        .map(|mut r| {
            let len = r.len();
            (len, r.read_to_end(&mut seek_out).is_ok())
        });
    let seek_ok = matches!(seekable, Some((_, true)));
    prop_assert_eq!(
        streamed.is_ok(),
        seek_ok,
        "stream and seekable reader disagree"
    );
    if let Ok(n) = streamed {
        prop_assert_eq!(n, out.len() as u64);
        prop_assert_eq!(&out, &seek_out);
        prop_assert_eq!(seekable.map(|s| s.0), Some(n));
    }
    Ok(seek_ok)
}

/// A membership op that decodes is canonical, and one that still verifies as alice's is one of
/// the genuine ops (the signature covers every byte but the version and itself).
fn check_membership_op(b: &[u8]) -> Check {
    let decoded = canonical("membership op", b, SignedOp::decode, |v| {
        v.encode().unwrap()
    })?;
    if let Ok(op) = SignedOp::decode(b)
        && op.verify_author(&FIX.membership_root).is_ok()
    {
        prop_assert!(
            FIX.membership_ops.iter().any(|g| g == b),
            "a mutated membership op still verifies"
        );
    }
    Ok(decoded)
}

fn check_room_state(b: &[u8]) -> Check {
    canonical("room state", b, RoomState::decode, |v| v.encode().unwrap())
}

type Checker = fn(&[u8]) -> Check;

const ALL_CHECKS: &[(&str, Checker)] = &[
    ("certificate", check_cert),
    ("revocation", check_revocation),
    ("prekey bundle", check_bundle),
    ("pq prekey", check_pq_prekey),
    ("device prekeys", check_device_prekeys),
    ("ratchet message", check_ratchet_message),
    ("ratchet state", check_ratchet_state),
    ("pairwise message", check_pairwise),
    ("session", check_session),
    ("payload", check_payload),
    ("key package", check_key_package),
    ("envelope body", check_body),
    ("sender key distribution", check_distribution),
    ("sender key message", check_sender_key_message),
    ("received sender key", check_received_sender_key),
    ("sender key state", check_sender_key_state),
    ("cache header", check_cache_header),
    ("chunked stream", check_chunked),
    ("membership op", check_membership_op),
    ("room state", check_room_state),
];

fn check_everything(b: &[u8]) -> Result<(), TestCaseError> {
    for (_, check) in ALL_CHECKS {
        check(b)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Keep only a prefix.
    Truncate(Index),
    /// Drop a run of bytes.
    Remove(Index, usize),
    /// Insert bytes somewhere.
    Insert(Index, Vec<u8>),
    /// Append bytes at the end.
    Append(Vec<u8>),
    /// Overwrite four bytes with a hostile big-endian length.
    Length(Index, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let length = prop_oneof![
        Just(0u32),
        Just(1),
        Just(15),
        Just(16),
        Just(64),
        Just(65),
        Just(512),
        Just(513),
        Just(1568),
        Just(4096),
        Just(4097),
        Just(1 << 20),
        Just((1 << 20) + 1),
        Just(u32::MAX),
        any::<u32>(),
    ];
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
        2 => (any::<Index>(), length).prop_map(|(i, v)| Mutation::Length(i, v)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

fn apply(base: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = base.to_vec();
    for m in muts {
        let len = b.len();
        match m {
            Mutation::Flip(i, mask) if len > 0 => b[i.index(len)] ^= mask,
            Mutation::Set(i, v) if len > 0 => b[i.index(len)] = *v,
            Mutation::Truncate(i) => b.truncate(i.index(len + 1)),
            Mutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                b.drain(at..(at + n).min(len));
            }
            Mutation::Insert(i, v) => {
                let at = i.index(len + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Append(v) => b.extend_from_slice(v),
            Mutation::Length(i, v) if len >= 4 => {
                let at = i.index(len - 3);
                b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    b
}

/// Mutates one of `bases`, runs its own check (the unmutated encoding must decode), then every
/// other decoder on the same bytes.
fn mutated_family(
    bases: &[&[u8]],
    which: Index,
    muts: &[Mutation],
    check: Checker,
) -> Result<(), TestCaseError> {
    let base = bases[which.index(bases.len())];
    prop_assert!(check(base)?, "the unmutated fixture must decode");
    let bytes = apply(base, muts);
    let decoded = check(&bytes)?;
    if bytes == base {
        prop_assert!(decoded);
    }
    check_everything(&bytes)
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary bytes, sometimes behind a prefix that gets them past a version or magic check.
fn arbitrary_input() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..4096);
    (0u8..6, raw).prop_map(|(prefix, raw)| {
        let mut out = match prefix {
            0 => Vec::new(),
            1 => vec![1],
            2 => vec![2],
            3 => b"CNDR\x01".to_vec(),
            // A valid chunked header, so the chunk parser sees the bytes.
            4 => FIX.chunked[..chunked::HEADER_LEN].to_vec(),
            _ => vec![1, 0, 0, 0],
        };
        out.extend_from_slice(&raw);
        out
    })
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in arbitrary_input()) {
        check_everything(&bytes)?;
    }

    #[test]
    fn mutated_certificates_and_revocations(
        which in any::<Index>(),
        muts in mutations(),
        revocation in any::<bool>(),
    ) {
        if revocation {
            mutated_family(&[&FIX.revocation], which, &muts, check_revocation)?;
        } else {
            mutated_family(&[&FIX.cert], which, &muts, check_cert)?;
        }
    }

    #[test]
    fn mutated_prekeys(which in any::<Index>(), muts in mutations(), kind in 0u8..3) {
        match kind {
            0 => {
                let bases: Vec<&[u8]> = FIX.bundles.iter().map(Vec::as_slice).collect();
                mutated_family(&bases, which, &muts, check_bundle)?;
            }
            1 => mutated_family(&[&FIX.pq_prekey], which, &muts, check_pq_prekey)?,
            _ => {
                let bases: Vec<&[u8]> = FIX.device_prekeys.iter().map(Vec::as_slice).collect();
                mutated_family(&bases, which, &muts, check_device_prekeys)?;
            }
        }
    }

    #[test]
    fn mutated_ratchet_and_pairwise(which in any::<Index>(), muts in mutations(), kind in 0u8..4) {
        match kind {
            0 => mutated_family(&[&FIX.ratchet_message], which, &muts, check_ratchet_message)?,
            1 => {
                let bases: Vec<&[u8]> = FIX.ratchet_states.iter().map(Vec::as_slice).collect();
                mutated_family(&bases, which, &muts, check_ratchet_state)?;
            }
            2 => {
                let bases: Vec<&[u8]> = FIX.pairwise.iter().map(Vec::as_slice).collect();
                mutated_family(&bases, which, &muts, check_pairwise)?;
            }
            _ => {
                let bases: Vec<&[u8]> = FIX.sessions.iter().map(Vec::as_slice).collect();
                mutated_family(&bases, which, &muts, check_session)?;
            }
        }
    }

    #[test]
    fn mutated_envelopes(which in any::<Index>(), muts in mutations(), kind in 0u8..3) {
        match kind {
            0 => {
                let bases: Vec<&[u8]> = FIX.payloads.iter().map(Vec::as_slice).collect();
                mutated_family(&bases, which, &muts, check_payload)?;
            }
            1 => {
                let kp = FIX.key_package.encode().unwrap();
                mutated_family(&[&kp[..]], which, &muts, check_key_package)?;
            }
            _ => {
                let body = apply(&FIX.body, &muts);
                let opened = check_body(&body)?;
                prop_assert_eq!(opened, body == FIX.body, "only the real body opens");
            }
        }
    }

    #[test]
    fn mutated_sender_keys(which in any::<Index>(), muts in mutations(), kind in 0u8..4) {
        match kind {
            0 => mutated_family(&[&FIX.distribution], which, &muts, check_distribution)?,
            1 => mutated_family(
                &[&FIX.sender_key_message],
                which,
                &muts,
                check_sender_key_message,
            )?,
            2 => mutated_family(
                &[&FIX.received_sender_key],
                which,
                &muts,
                check_received_sender_key,
            )?,
            _ => mutated_family(&[&FIX.sender_key_state], which, &muts, check_sender_key_state)?,
        }
    }

    #[test]
    fn mutated_cache_headers(which in any::<Index>(), muts in mutations()) {
        mutated_family(&[&FIX.cache_header], which, &muts, check_cache_header)?;
    }

    #[test]
    fn mutated_membership(which in any::<Index>(), muts in mutations(), state in any::<bool>()) {
        if state {
            let bases: Vec<&[u8]> = FIX.room_states.iter().map(Vec::as_slice).collect();
            mutated_family(&bases, which, &muts, check_room_state)?;
        } else {
            let bases: Vec<&[u8]> = FIX.membership_ops.iter().map(Vec::as_slice).collect();
            mutated_family(&bases, which, &muts, check_membership_op)?;
        }
    }

    #[test]
    fn mutated_fixed_chunked_stream_is_rejected(muts in mutations()) {
        let bytes = apply(&FIX.chunked, &muts);
        let decoded = check_chunked(&bytes)?;
        prop_assert_eq!(decoded, bytes == FIX.chunked, "only the real stream decrypts");
        if decoded {
            let mut out = Vec::new();
            chunked::decrypt(&CHUNK_KEY, FILE_CONTEXT, &mut &bytes[..], &mut out).unwrap();
            prop_assert_eq!(&out, &FIX.chunked_plain);
        }
    }
}

/// Plaintext lengths around the chunk boundaries, and anything up to three chunks.
fn chunked_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..64,
        prop::sample::select(vec![
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            2 * CHUNK_SIZE - 1,
            2 * CHUNK_SIZE,
            2 * CHUNK_SIZE + 1,
        ]),
        0usize..3 * CHUNK_SIZE + 64,
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// Encrypt a chosen plaintext, maybe mutate the stream: an unmutated stream round-trips
    /// through both readers, a mutated one is rejected by both.
    #[test]
    fn chunked_round_trip_or_reject(
        len in chunked_len(),
        seed in any::<u8>(),
        mutate in any::<bool>(),
        muts in mutations(),
        cut_at_chunk in any::<Index>(),
    ) {
        let plain = plaintext(len, seed);
        let mut ct = Vec::new();
        let n = chunked::encrypt(&CHUNK_KEY, FILE_CONTEXT, &mut &plain[..], &mut ct).unwrap();
        prop_assert_eq!(n, ct.len() as u64);
        let mut bytes = if mutate { apply(&ct, &muts) } else { ct.clone() };
        // Also try the nastiest truncation: exactly at a chunk boundary.
        let full_chunks = (ct.len() - chunked::HEADER_LEN) / SEALED_CHUNK;
        if mutate && full_chunks > 0 && cut_at_chunk.index(2) == 0 {
            let k = cut_at_chunk.index(full_chunks) as u64 + 1;
            bytes = ct[..chunked::chunk_offset(k) as usize].to_vec();
        }
        let mut out = Vec::new();
        let streamed = chunked::decrypt(&CHUNK_KEY, FILE_CONTEXT, &mut &bytes[..], &mut out);
        let seekable = SeekableReader::new(&CHUNK_KEY, FILE_CONTEXT, Cursor::new(&bytes[..]))
            .and_then(|mut r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                Ok((r.len(), v))
            });
        if bytes == ct {
            prop_assert_eq!(streamed.unwrap(), len as u64);
            prop_assert_eq!(&out, &plain);
            let (seek_len, seek_out) = seekable.unwrap();
            prop_assert_eq!(seek_len, len as u64);
            prop_assert_eq!(&seek_out, &plain);
        } else {
            prop_assert!(streamed.is_err(), "mutated stream decrypted");
            prop_assert!(seekable.is_err(), "mutated stream read through the seekable reader");
        }
    }
}

#[test]
fn every_fixture_decodes() {
    // Guards the fixtures themselves, so a property never passes vacuously.
    for (bases, check) in [
        (vec![FIX.cert.as_slice()], check_cert as Checker),
        (vec![FIX.revocation.as_slice()], check_revocation),
        (
            FIX.bundles.iter().map(Vec::as_slice).collect(),
            check_bundle,
        ),
        (vec![FIX.pq_prekey.as_slice()], check_pq_prekey),
        (
            FIX.device_prekeys.iter().map(Vec::as_slice).collect(),
            check_device_prekeys,
        ),
        (vec![FIX.ratchet_message.as_slice()], check_ratchet_message),
        (
            FIX.ratchet_states.iter().map(Vec::as_slice).collect(),
            check_ratchet_state,
        ),
        (
            FIX.pairwise.iter().map(Vec::as_slice).collect(),
            check_pairwise,
        ),
        (
            FIX.sessions.iter().map(Vec::as_slice).collect(),
            check_session,
        ),
        (
            FIX.payloads.iter().map(Vec::as_slice).collect(),
            check_payload,
        ),
        (vec![FIX.body.as_slice()], check_body),
        (vec![FIX.distribution.as_slice()], check_distribution),
        (
            vec![FIX.sender_key_message.as_slice()],
            check_sender_key_message,
        ),
        (
            vec![FIX.received_sender_key.as_slice()],
            check_received_sender_key,
        ),
        (
            vec![FIX.sender_key_state.as_slice()],
            check_sender_key_state,
        ),
        (vec![FIX.cache_header.as_slice()], check_cache_header),
        (vec![FIX.chunked.as_slice()], check_chunked),
        (
            FIX.membership_ops.iter().map(Vec::as_slice).collect(),
            check_membership_op,
        ),
        (
            FIX.room_states.iter().map(Vec::as_slice).collect(),
            check_room_state,
        ),
    ] {
        for base in bases {
            assert!(check(base).unwrap());
        }
    }
    assert!(check_key_package(&FIX.key_package.encode().unwrap()).unwrap());
    let mut out = Vec::new();
    chunked::decrypt(&CHUNK_KEY, FILE_CONTEXT, &mut &FIX.chunked[..], &mut out).unwrap();
    assert_eq!(out, FIX.chunked_plain);
}
