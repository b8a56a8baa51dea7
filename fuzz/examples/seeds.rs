//! Writes seed corpora for the fuzz targets into `corpus/<target>/` (relative to the directory
//! given as the first argument, default `.`): one valid encoding of every structure, built the
//! way the application builds them. Run from `fuzz/` with `cargo run --example seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use cinder::crypto::chunked::{CLIP_CONTEXT, FILE_CONTEXT, HEADER_LEN};
use cinder::crypto::envelope::{FilePointer, MessageId, Payload, PayloadKind, ReceiptKind, Timers};
use cinder::crypto::handshake::{self, PairwiseMessage};
use cinder::crypto::identity::{DeviceId, DeviceKeys, DeviceRole, UserRootKey};
use cinder::crypto::passphrase::{CacheHeader, KdfParams};
use cinder::crypto::prekeys::{DevicePrekeys, PrekeyBundle};
use cinder::crypto::primitives::{DhKeyPair, Secret32};
use cinder::crypto::ratchet::RatchetState;
use cinder::crypto::sender_keys::{ReceivedSenderKey, SenderKeyState};

const NOW: u64 = 1_700_000_000;

struct Corpus {
    root: PathBuf,
    written: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join("corpus").join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        self.written += 1;
    }

    fn put_with(&mut self, target: &str, name: &str, prefix: u8, bytes: &[u8]) {
        let mut v = vec![prefix];
        v.extend_from_slice(bytes);
        self.put(target, name, &v);
    }
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let mut c = Corpus {
        root: Path::new(&root).to_path_buf(),
        written: 0,
    };

    // Identities, prekeys and a full handshake.
    let alice_urk = UserRootKey::generate().unwrap();
    let alice_keys = DeviceKeys::generate().unwrap();
    let alice_cert = alice_urk
        .certify(
            "alice",
            DeviceId([7; 16]),
            &alice_keys,
            NOW,
            DeviceRole::User,
        )
        .unwrap();
    let bob_urk = UserRootKey::generate().unwrap();
    let bob_keys = DeviceKeys::generate().unwrap();
    let bob_cert = bob_urk
        .certify(
            "bob",
            DeviceId([8; 16]),
            &bob_keys,
            NOW,
            DeviceRole::RetentionBot,
        )
        .unwrap();
    c.put("certificate", "alice", &alice_cert.encode().unwrap());
    c.put("certificate", "bob-bot", &bob_cert.encode().unwrap());
    let rev = bob_urk.revoke("bob", DeviceId([9; 16]), NOW).unwrap();
    c.put("revocation", "bob", &rev.encode().unwrap());

    let mut bob_pre = DevicePrekeys::new(&bob_keys.signing, NOW).unwrap();
    let otk = bob_pre.generate_one_time(3).unwrap();
    let pq = bob_pre
        .generate_pq_one_time(&bob_keys.signing, 2, NOW)
        .unwrap();
    let bundle = PrekeyBundle {
        cert: bob_cert.clone(),
        signed_prekey: bob_pre.current_signed_prekey(&bob_keys.signing).unwrap(),
        one_time_prekey: Some(otk[0]),
        pq_prekey: pq[0].clone(),
    };
    let mut last_resort = bundle.clone();
    last_resort.one_time_prekey = None;
    last_resort.pq_prekey = bob_pre.current_last_resort(&bob_keys.signing).unwrap();
    c.put("prekey_bundle", "with-otk", &bundle.encode().unwrap());
    c.put("prekey_bundle", "last-resort", &last_resort.encode().unwrap());
    c.put("prekey_bundle", "pq-prekey", &pq[1].encode().unwrap());
    c.put_with(
        "secret_states",
        "device-prekeys-fresh",
        0,
        &bob_pre.to_secret_bytes().unwrap(),
    );

    let mut alice = handshake::initiate(
        &alice_keys,
        &alice_cert,
        &bob_urk.public(),
        "bob",
        &bundle,
        &[],
        NOW,
    )
    .unwrap();
    let initial = alice.encrypt(b"hello bob").unwrap();
    c.put("session_state", "pending", &alice.to_secret_bytes().unwrap());
    c.put("pairwise_message", "initial", &initial.encode().unwrap());
    let PairwiseMessage::Initial(init) = &initial else {
        unreachable!("the first message carries the handshake")
    };
    let (mut bob, _) = handshake::respond(
        &bob_keys,
        &bob_cert,
        &mut bob_pre,
        &alice_urk.public(),
        &[],
        init,
        NOW,
    )
    .unwrap();
    c.put_with(
        "secret_states",
        "device-prekeys-used",
        0,
        &bob_pre.to_secret_bytes().unwrap(),
    );
    let normal = bob.encrypt(b"hello alice").unwrap();
    alice.decrypt(&normal, NOW).unwrap();
    c.put("pairwise_message", "normal", &normal.encode().unwrap());
    if let PairwiseMessage::Normal(m) = &normal {
        c.put("pairwise_message", "ratchet-message", &m.encode().unwrap());
    }
    c.put("session_state", "alice", &alice.to_secret_bytes().unwrap());
    c.put("session_state", "bob", &bob.to_secret_bytes().unwrap());

    // A bare ratchet pair, the responder holding a skipped key.
    let sk = Secret32::from_bytes([3; 32]);
    let kp = DhKeyPair::generate().unwrap();
    let mut ra = RatchetState::init_initiator(&sk, kp.public(), b"ad".to_vec()).unwrap();
    let mut rb = RatchetState::init_responder(&sk, kp, b"ad".to_vec());
    let _lost = ra.encrypt(b"one").unwrap();
    let m2 = ra.encrypt(b"two").unwrap();
    rb.decrypt(&m2, NOW).unwrap();
    c.put("ratchet_state", "initiator", &ra.to_secret_bytes().unwrap());
    c.put("ratchet_state", "responder", &rb.to_secret_bytes().unwrap());

    // Payloads of every kind; each also as a padded plaintext for envelope_open's mode 1.
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
    let base = Payload {
        message_id: MessageId([1; 16]),
        sent_at_ms: NOW * 1000,
        conversation: b"room:general".to_vec(),
        kind: PayloadKind::Text("hi".into()),
        timers: Timers {
            expire_after: Some(60),
            burn_after: Some(10),
        },
        reply_to: Some(MessageId([2; 16])),
    };
    let kinds = [
        ("text", PayloadKind::Text("hello".into())),
        ("file", PayloadKind::File(pointer.clone())),
        ("clip", PayloadKind::Clip(pointer)),
        (
            "receipt",
            PayloadKind::Receipt {
                kind: ReceiptKind::Delivered,
                message_ids: vec![MessageId([3; 16]), MessageId([4; 16])],
            },
        ),
        ("control", PayloadKind::Control(vec![1, 2, 3])),
    ];
    for (name, kind) in kinds {
        let mut p = base.clone();
        p.kind = kind;
        let enc = p.encode().unwrap();
        c.put("payload", name, &enc);
        c.put_with(
            "envelope_open",
            &format!("padded-{name}"),
            1,
            &cinder_fuzz::pad(&enc),
        );
    }

    // The fixed envelope used by key_package and envelope_open.
    let fix = cinder_fuzz::envelope_fixture();
    c.put("key_package", "fixture", &fix.package.encode().unwrap());
    c.put_with("envelope_open", "fixture-body", 0, &fix.body);
    c.put_with("envelope_open", "sealed-unmodified", 2, &[]);
    c.put_with("envelope_open", "sealed-flip", 2, &[0, 1]);

    // Sender keys.
    let mut sks = SenderKeyState::new(b"room-1", DeviceId([1; 16]), NOW).unwrap();
    let mut rsk = ReceivedSenderKey::from_distribution(&sks.distribution());
    c.put(
        "sender_key_distribution",
        "fresh",
        &sks.distribution().encode().unwrap(),
    );
    let h = [5u8; 32];
    let _lost = sks.encrypt(b"zero", &h).unwrap();
    let s1 = sks.encrypt(&fix.package.encode().unwrap(), &h).unwrap();
    rsk.decrypt(&s1, &h).unwrap();
    c.put("sender_key_message", "key-package", &s1.encode().unwrap());
    c.put_with(
        "secret_states",
        "received-sender-key",
        1,
        &rsk.to_secret_bytes().unwrap(),
    );
    c.put_with(
        "secret_states",
        "sender-key-state",
        2,
        &sks.to_secret_bytes().unwrap(),
    );

    let (header, _) = CacheHeader::create(b"passphrase", KdfParams::INSECURE_FOR_TESTS).unwrap();
    c.put("cache_header", "insecure-for-tests", &header.encode());
    let (header, _) = CacheHeader::create(b"passphrase", KdfParams::INSECURE_FOR_TESTS).unwrap();
    let mut default = header;
    default.params = KdfParams::DEFAULT;
    c.put("cache_header", "default-params", &default.encode());

    // Chunked streams under the fixed key and salt.
    for (name, len) in [
        ("empty", 0usize),
        ("short", 100),
        ("two-chunks", 16 * 1024 + 5),
    ] {
        let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let file = cinder_fuzz::chunk_encrypt(FILE_CONTEXT, &plain);
        c.put_with("chunked_stream", &format!("whole-{name}"), 0, &file);
        c.put_with(
            "chunked_stream",
            &format!("file-{name}"),
            1,
            &file[HEADER_LEN..],
        );
        let clip = cinder_fuzz::chunk_encrypt(CLIP_CONTEXT, &plain);
        c.put_with(
            "chunked_stream",
            &format!("clip-{name}"),
            2,
            &clip[HEADER_LEN..],
        );
    }

    println!(
        "wrote {} seeds under {}/corpus",
        c.written,
        c.root.display()
    );
}
