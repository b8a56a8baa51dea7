//! Cross-implementation test of the pairwise Double Ratchet against the PyPI package
//! `doubleratchet` (python-doubleratchet 1.3.0), configured by `tests/interop/dr_peer.py` to be
//! byte-for-byte Cinder's construction (HKDF-SHA-256 root chain, separate-HMAC message chains,
//! HKDF-derived AES-256-GCM key and nonce, AAD = AD || header).
//!
//! The Python peer is a child process driven with one JSON request per line. Messages travel in
//! both directions through a lossy link: about 20% are dropped, about 10% are held back and
//! delivered only after the sender's next burst has started (so they arrive after a DH ratchet
//! step and must come from keys stored through PN), and the rest arrive shuffled within windows.
//!
//! Running it:
//!
//! ```text
//! python3 -m venv target/interop-venv
//! target/interop-venv/bin/pip install -r tests/interop/requirements.txt
//! CINDER_INTEROP_PYTHON=target/interop-venv/bin/python cargo test --test ratchet_interop
//! ```
//!
//! Without `CINDER_INTEROP_PYTHON` the tests use `python3`. If no interpreter can be started the
//! tests print why and pass (skip); if one starts but cannot import `doubleratchet` they fail
//! with the install command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use cinder::crypto::CryptoError;
use cinder::crypto::primitives::{self, DhKeyPair, Secret32};
use cinder::crypto::ratchet::{Header, RatchetMessage, RatchetState};
use serde_json::{Value, json};

/// The handshake output both sides start from.
const SHARED_SECRET: [u8; 32] = [
    0x5a, 0x1e, 0x0c, 0x93, 0x27, 0xb4, 0x61, 0xd8, 0x0f, 0x42, 0x9e, 0x13, 0xc7, 0x7a, 0x2d, 0x88,
    0x36, 0xe1, 0x54, 0x0b, 0xfa, 0x69, 0x90, 0x2c, 0x4d, 0xb7, 0x18, 0xe3, 0x75, 0x06, 0xa9, 0x3f,
];
/// The responder's ratchet (signed prekey) private scalar.
const RESPONDER_RATCHET_PRIV: [u8; 32] = [
    0x48, 0x2b, 0x91, 0x0e, 0xd3, 0x7c, 0x15, 0xa6, 0x63, 0xf0, 0x29, 0x8d, 0xbe, 0x04, 0x57, 0xc2,
    0x1a, 0x9f, 0x6e, 0x33, 0x80, 0xd5, 0x4c, 0x17, 0xe8, 0x22, 0xab, 0x79, 0x0d, 0x66, 0xf4, 0x51,
];
/// Associated data as the handshake would bind it (identity keys, certificate hashes).
const AD: &[u8] = b"cinder/v1/interop AD: initiator-identity || responder-identity";
/// The `now` passed to Rust's decrypt; nothing here comes near the skipped-key TTL.
const NOW: u64 = 1_700_000_000;

/// Sizes of the alternating bursts, the initiator's first.
const BURSTS: [usize; 8] = [50, 8, 12, 7, 15, 9, 11, 6];

// ---------------------------------------------------------------------------------------------
// The Python peer
// ---------------------------------------------------------------------------------------------

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    python: String,
}

/// Starts `tests/interop/dr_peer.py`; `None` means no interpreter could be started (skip).
fn start_peer() -> Option<Peer> {
    let (python, origin) = match std::env::var("CINDER_INTEROP_PYTHON") {
        Ok(p) if !p.is_empty() => (p, "from CINDER_INTEROP_PYTHON"),
        _ => ("python3".to_string(), "default"),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/dr_peer.py");
    let mut child = match Command::new(&python)
        .arg("-u")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let reason = format!(
                "skipping: python3 not found: could not start `{python}` ({origin}): {e}. \
                 Install Python 3.10+ or set CINDER_INTEROP_PYTHON to an interpreter with \
                 `pip install -r tests/interop/requirements.txt` done."
            );
            eprintln!("{reason}");
            println!("{reason}");
            return None;
        }
    };
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the peer's first line");
    if line.trim().is_empty() {
        let status = child.wait().ok();
        panic!(
            "`{python}` ({origin}) started but {script} printed nothing and exited ({status:?}); \
             it needs Python 3.10+ with `pip install -r tests/interop/requirements.txt`"
        );
    }
    let hello: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("peer's first line is not JSON ({e}): {line}"));
    if hello["ready"] != json!(true) {
        let _ = child.wait();
        panic!(
            "the Python package `doubleratchet` is not importable by `{python}` ({origin}): {}.\n\
             Install the pinned requirements and point the test at that interpreter:\n  \
             python3 -m venv target/interop-venv\n  \
             target/interop-venv/bin/pip install -r tests/interop/requirements.txt\n  \
             CINDER_INTEROP_PYTHON=target/interop-venv/bin/python cargo test --test ratchet_interop\n\
             (or `pip install -r tests/interop/requirements.txt` into `{python}`'s environment)",
            hello["error"]
        );
    }
    eprintln!(
        "interop peer: {python} (Python {}), doubleratchet {}",
        hello["python"].as_str().unwrap_or("?"),
        hello["doubleratchet"].as_str().unwrap_or("?")
    );
    Some(Peer {
        child,
        stdin,
        stdout,
        python,
    })
}

impl Peer {
    /// Sends one request and returns the response, which always carries `ok`.
    fn call(&mut self, request: &Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to the peer");
        self.stdin.flush().expect("flush to the peer");
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read from the peer");
        if n == 0 {
            let status = self.child.wait().ok();
            panic!(
                "the peer ({}) exited ({status:?}) while handling {request}",
                self.python
            );
        }
        let response: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("peer response is not JSON ({e}): {line}"));
        assert!(
            response["ok"].is_boolean(),
            "peer response has no ok: {response}"
        );
        response
    }

    /// A request that must succeed.
    fn call_ok(&mut self, request: &Value) -> Value {
        let response = self.call(request);
        assert_eq!(
            response["ok"],
            json!(true),
            "peer failed {request}: {response}"
        );
        response
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field_bytes(v: &Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no hex field {key} in {v}"));
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in {key} ({e}): {v}"))
}

fn field_u32(v: &Value, key: &str) -> u32 {
    let n = v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer field {key} in {v}"));
    u32::try_from(n).expect("u32 header field")
}

// ---------------------------------------------------------------------------------------------
// Both implementations behind one interface
// ---------------------------------------------------------------------------------------------

/// A message as it travels: the header fields and the ciphertext with its tag.
#[derive(Clone, Debug)]
struct Wire {
    dh: [u8; 32],
    pn: u32,
    n: u32,
    ct: Vec<u8>,
}

trait Party {
    fn name(&self) -> &'static str;
    fn encrypt(&mut self, pt: &[u8]) -> Wire;
    fn decrypt(&mut self, m: &Wire) -> Result<Vec<u8>, String>;
}

struct RustParty(RatchetState);

impl RustParty {
    fn initiator(their_ratchet: [u8; 32]) -> Self {
        let sk = Secret32::from_bytes(SHARED_SECRET);
        Self(RatchetState::init_initiator(&sk, their_ratchet, AD.to_vec()).unwrap())
    }

    fn responder() -> Self {
        let sk = Secret32::from_bytes(SHARED_SECRET);
        let kp = DhKeyPair::from_secret_bytes(RESPONDER_RATCHET_PRIV);
        Self(RatchetState::init_responder(&sk, kp, AD.to_vec()))
    }

    fn decrypt_raw(&mut self, m: &Wire) -> Result<Vec<u8>, CryptoError> {
        let msg = RatchetMessage {
            header: Header {
                dh: m.dh,
                pn: m.pn,
                n: m.n,
            },
            ciphertext: m.ct.clone(),
        };
        self.0.decrypt(&msg, NOW)
    }
}

impl Party for RustParty {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn encrypt(&mut self, pt: &[u8]) -> Wire {
        let m = self.0.encrypt(pt).unwrap();
        Wire {
            dh: m.header.dh,
            pn: m.header.pn,
            n: m.header.n,
            ct: m.ciphertext,
        }
    }

    fn decrypt(&mut self, m: &Wire) -> Result<Vec<u8>, String> {
        self.decrypt_raw(m).map_err(|e| format!("{e:?}"))
    }
}

struct PyParty(Peer);

impl PyParty {
    fn initiator(mut peer: Peer, their_ratchet: [u8; 32]) -> Self {
        peer.call_ok(&json!({
            "op": "init_initiator",
            "sk": hex::encode(SHARED_SECRET),
            "their_pub": hex::encode(their_ratchet),
            "ad": hex::encode(AD),
        }));
        Self(peer)
    }

    /// Returns the party and the ratchet public key Python derived from the private scalar.
    fn responder(mut peer: Peer) -> (Self, [u8; 32]) {
        let r = peer.call_ok(&json!({
            "op": "init_responder",
            "sk": hex::encode(SHARED_SECRET),
            "own_priv": hex::encode(RESPONDER_RATCHET_PRIV),
            "ad": hex::encode(AD),
        }));
        let public: [u8; 32] = field_bytes(&r, "pub").try_into().expect("32-byte pub");
        (Self(peer), public)
    }
}

impl Party for PyParty {
    fn name(&self) -> &'static str {
        "python"
    }

    fn encrypt(&mut self, pt: &[u8]) -> Wire {
        let r = self
            .0
            .call_ok(&json!({"op": "encrypt", "pt": hex::encode(pt)}));
        Wire {
            dh: field_bytes(&r, "dh").try_into().expect("32-byte dh"),
            pn: field_u32(&r, "pn"),
            n: field_u32(&r, "n"),
            ct: field_bytes(&r, "ct"),
        }
    }

    fn decrypt(&mut self, m: &Wire) -> Result<Vec<u8>, String> {
        let r = self.0.call(&json!({
            "op": "decrypt",
            "dh": hex::encode(m.dh),
            "pn": m.pn,
            "n": m.n,
            "ct": hex::encode(&m.ct),
        }));
        if r["ok"] == json!(true) {
            Ok(field_bytes(&r, "pt"))
        } else {
            Err(r["error"].to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lossy, reordering link
// ---------------------------------------------------------------------------------------------

/// Knuth's MMIX LCG: deterministic, so every run sees the same losses and orders.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Drop,
    Delay,
    Deliver,
}

/// One direction of the link, with what the receiver has seen so far.
#[derive(Default)]
struct Direction {
    /// Messages held back from the sender's previous burst, with their plaintexts.
    delayed: Vec<(Wire, Vec<u8>)>,
    /// Ratchet keys in the order the sender used them.
    chains: Vec<[u8; 32]>,
    /// Highest `n` delivered per chain, to count out-of-order deliveries.
    highest: HashMap<[u8; 32], u32>,
    /// Index into `chains` of the newest chain the receiver has seen a message from.
    newest_seen: usize,
    delivered: usize,
    dropped: usize,
    out_of_order: usize,
    from_older_chain: usize,
    with_nonzero_pn: usize,
}

impl Direction {
    fn deliver(&mut self, receiver: &mut dyn Party, m: &Wire, pt: &[u8], label: &str) {
        let got = receiver.decrypt(m).unwrap_or_else(|e| {
            panic!(
                "{} failed to decrypt {label} (dh {}, pn {}, n {}): {e}",
                receiver.name(),
                hex::encode(&m.dh[..4]),
                m.pn,
                m.n
            )
        });
        assert_eq!(
            got,
            pt,
            "{} decrypted {label} to the wrong bytes",
            receiver.name()
        );
        self.delivered += 1;
        let chain = self
            .chains
            .iter()
            .position(|k| *k == m.dh)
            .expect("known chain");
        if chain < self.newest_seen {
            self.from_older_chain += 1;
        }
        self.newest_seen = self.newest_seen.max(chain);
        let highest = self.highest.entry(m.dh).or_insert(m.n);
        if m.n < *highest {
            self.out_of_order += 1;
        }
        *highest = (*highest).max(m.n);
        if m.pn > 0 {
            self.with_nonzero_pn += 1;
        }
    }
}

fn plaintext(rng: &mut Lcg, label: &str) -> Vec<u8> {
    let mut pt = label.as_bytes().to_vec();
    if rng.below(8) == 0 {
        // Some messages are empty, to cover a bare tag.
        return Vec::new();
    }
    pt.push(b':');
    for _ in 0..rng.below(150) {
        pt.push(rng.next() as u8);
    }
    pt
}

/// The sender encrypts `count` messages; the receiver gets them through the lossy link.
///
/// Messages this sender held back from its previous burst are delivered right after the first
/// message of this one, i.e. after the receiver has moved on to the newer chain (when there is
/// one), so their keys must come from the skipped-key store filled through PN.
fn burst(
    sender: &mut dyn Party,
    receiver: &mut dyn Party,
    dir: &mut Direction,
    rng: &mut Lcg,
    count: usize,
    round: usize,
) {
    let mut now = Vec::new();
    let mut held = Vec::new();
    for i in 0..count {
        let label = format!("{}->{} round {round} #{i}", sender.name(), receiver.name());
        let pt = plaintext(rng, &label);
        let m = sender.encrypt(&pt);
        assert_eq!(
            m.ct.len(),
            pt.len() + 16,
            "{label}: ciphertext is plaintext + tag"
        );
        if dir.chains.last() != Some(&m.dh) {
            assert!(!dir.chains.contains(&m.dh), "{label}: ratchet key reused");
            dir.chains.push(m.dh);
        }
        let fate = match (round, i) {
            // The session's very first message arrives late, after a ratchet step.
            (0, 0) => Fate::Delay,
            // And its second is lost.
            (0, 1) => Fate::Drop,
            _ => match rng.below(100) {
                0..20 => Fate::Drop,
                20..30 => Fate::Delay,
                _ => Fate::Deliver,
            },
        };
        match fate {
            Fate::Drop => dir.dropped += 1,
            Fate::Delay => held.push((m, pt, label)),
            Fate::Deliver => now.push((m, pt, label)),
        }
    }
    // Shuffle within windows of five.
    for window in now.chunks_mut(5) {
        rng.shuffle(window);
    }
    let mut late = std::mem::take(&mut dir.delayed);
    rng.shuffle(&mut late);
    let mut order = Vec::new();
    let mut rest = now.into_iter();
    if let Some(first) = rest.next() {
        order.push(first);
    }
    order.extend(
        late.into_iter()
            .map(|(m, pt)| (m, pt, "a late message".to_string())),
    );
    order.extend(rest);
    for (m, pt, label) in &order {
        dir.deliver(receiver, m, pt, label);
    }
    dir.delayed = held.into_iter().map(|(m, pt, _)| (m, pt)).collect();
}

/// Alternating bursts through the lossy link, the initiator first; checks coverage at the end.
fn converse(initiator: &mut dyn Party, responder: &mut dyn Party) {
    let mut rng = Lcg(0x00c1_dc0d_e5ee_d001);
    let mut to_responder = Direction::default();
    let mut to_initiator = Direction::default();
    for (round, &count) in BURSTS.iter().enumerate() {
        if round % 2 == 0 {
            burst(
                initiator,
                responder,
                &mut to_responder,
                &mut rng,
                count,
                round,
            );
        } else {
            burst(
                responder,
                initiator,
                &mut to_initiator,
                &mut rng,
                count,
                round,
            );
        }
    }
    // Whatever is still held back arrives last.
    for (m, pt) in std::mem::take(&mut to_responder.delayed) {
        to_responder.deliver(responder, &m, &pt, "a final late message");
    }
    for (m, pt) in std::mem::take(&mut to_initiator.delayed) {
        to_initiator.deliver(initiator, &m, &pt, "a final late message");
    }
    for (name, dir) in [
        ("initiator->responder", &to_responder),
        ("responder->initiator", &to_initiator),
    ] {
        eprintln!(
            "{name}: {} chains, {} delivered, {} dropped, {} out of order, {} from an older \
             chain, {} with PN > 0",
            dir.chains.len(),
            dir.delivered,
            dir.dropped,
            dir.out_of_order,
            dir.from_older_chain,
            dir.with_nonzero_pn
        );
        // The schedule is deterministic; these only guard against it becoming vacuous.
        assert_eq!(
            dir.chains.len(),
            BURSTS.len() / 2,
            "{name}: one chain per burst"
        );
        assert!(dir.dropped > 0, "{name}: nothing was lost");
        assert!(dir.out_of_order > 0, "{name}: nothing was reordered");
        assert!(
            dir.from_older_chain > 0,
            "{name}: no message crossed a ratchet step"
        );
        assert!(dir.with_nonzero_pn > 0, "{name}: PN was never used");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn python_initiator_to_rust_responder() {
    let Some(peer) = start_peer() else { return };
    let responder_pub = DhKeyPair::from_secret_bytes(RESPONDER_RATCHET_PRIV).public();
    let mut python = PyParty::initiator(peer, responder_pub);
    let mut rust = RustParty::responder();
    converse(&mut python, &mut rust);
}

#[test]
fn rust_initiator_to_python_responder() {
    let Some(peer) = start_peer() else { return };
    let (mut python, python_pub) = PyParty::responder(peer);
    let rust_pub = DhKeyPair::from_secret_bytes(RESPONDER_RATCHET_PRIV).public();
    assert_eq!(python_pub, rust_pub, "X25519 public key derivation differs");
    let mut rust = RustParty::initiator(python_pub);
    converse(&mut rust, &mut python);
}

#[test]
fn tampered_messages_are_rejected_without_state_change() {
    let Some(peer) = start_peer() else { return };
    let responder_pub = DhKeyPair::from_secret_bytes(RESPONDER_RATCHET_PRIV).public();
    let mut python = PyParty::initiator(peer, responder_pub);
    let mut rust = RustParty::responder();

    let m0 = python.encrypt(b"zero");
    let m1 = python.encrypt(b"one");
    let m2 = python.encrypt(b"two");

    // One flipped ciphertext bit, as the very first message Rust sees (so the rejected attempt
    // went as far as a DH ratchet step on a scratch copy).
    let mut flipped = m1.clone();
    flipped.ct[2] ^= 0x10;
    assert!(
        matches!(rust.decrypt_raw(&flipped), Err(CryptoError::Integrity)),
        "a flipped ciphertext bit was accepted"
    );
    // A flipped tag bit.
    let mut bad_tag = m1.clone();
    let last = bad_tag.ct.len() - 1;
    bad_tag.ct[last] ^= 0x01;
    assert!(matches!(
        rust.decrypt_raw(&bad_tag),
        Err(CryptoError::Integrity)
    ));
    assert_eq!(rust.decrypt_raw(&m1).unwrap(), b"one");

    // A header field is authenticated: same chain, same key, different AAD.
    let mut bad_pn = m2.clone();
    bad_pn.pn ^= 1;
    assert!(matches!(
        rust.decrypt_raw(&bad_pn),
        Err(CryptoError::Integrity)
    ));
    assert_eq!(rust.decrypt_raw(&m2).unwrap(), b"two");
    // The skipped message still opens after all that; a replay does not.
    assert_eq!(rust.decrypt_raw(&m0).unwrap(), b"zero");
    assert!(matches!(rust.decrypt_raw(&m1), Err(CryptoError::Replay)));

    // The mirror image: Python rejects a flipped bit from Rust and keeps its session.
    let r0 = rust.encrypt(b"reply");
    let mut flipped = r0.clone();
    flipped.ct[0] ^= 0x80;
    let err = python
        .decrypt(&flipped)
        .expect_err("python accepted a flipped bit");
    assert!(
        err.contains("AuthenticationFailed"),
        "unexpected error: {err}"
    );
    assert_eq!(python.decrypt(&r0).unwrap(), b"reply");
    let m3 = python.encrypt(b"after");
    assert_eq!(m3.pn, 3);
    assert_eq!(rust.decrypt_raw(&m3).unwrap(), b"after");
}

/// Component check: each class the peer configures against the Rust primitives, so a failure in
/// the end-to-end tests can be pinned to the root KDF, the chain KDF, the AAD or the AEAD.
#[test]
fn python_configuration_matches_rust_primitives() {
    let Some(mut peer) = start_peer() else { return };
    let rk = [0x11u8; 32];
    let dh_out = [0x22u8; 32];
    let ck = [0x33u8; 32];
    let mk = [0x44u8; 32];
    let header = Header {
        dh: [0x55; 32],
        pn: 0x0102_0304,
        n: 0x0a0b_0c0d,
    };
    let pt = b"component check";
    let r = peer.call_ok(&json!({
        "op": "kdf_check",
        "rk": hex::encode(rk),
        "dh_out": hex::encode(dh_out),
        "ck": hex::encode(ck),
        "mk": hex::encode(mk),
        "ad": hex::encode(AD),
        "header_dh": hex::encode(header.dh),
        "pn": header.pn,
        "n": header.n,
        "pt": hex::encode(pt),
    }));

    let mut okm = [0u8; 64];
    primitives::hkdf_sha256(Some(&rk), &dh_out, b"cinder/v1/dr/rk", &mut okm).unwrap();
    assert_eq!(field_bytes(&r, "root_key"), &okm[..32], "KDF_RK root key");
    assert_eq!(field_bytes(&r, "chain_key"), &okm[32..], "KDF_RK chain key");

    assert_eq!(
        field_bytes(&r, "message_key"),
        primitives::hmac_sha256(&ck, &[0x01]),
        "KDF_CK message key"
    );
    assert_eq!(
        field_bytes(&r, "next_chain_key"),
        primitives::hmac_sha256(&ck, &[0x02]),
        "KDF_CK next chain key"
    );

    let mut aad = AD.to_vec();
    aad.extend_from_slice(&header.encode());
    assert_eq!(field_bytes(&r, "full_ad"), aad, "AD || header");

    let (key, nonce) = primitives::derive_key_nonce(None, &mk, b"cinder/v1/dr/msg");
    assert_eq!(
        field_bytes(&r, "ct"),
        primitives::seal(&key, &nonce, &aad, pt),
        "AEAD"
    );
}

/// A gap of exactly `MAX_SKIP` (1000) keys is bridged and one more is refused, on both sides,
/// and the refusal leaves the session usable.
#[test]
fn skip_limits_agree() {
    let Some(peer) = start_peer() else { return };
    let limit = cinder::crypto::ratchet::MAX_SKIP as usize;

    // Python -> Rust.
    let responder_pub = DhKeyPair::from_secret_bytes(RESPONDER_RATCHET_PRIV).public();
    let mut python = PyParty::initiator(peer, responder_pub);
    let mut rust = RustParty::responder();
    let sent: Vec<Wire> = (0..=limit + 1).map(|_| python.encrypt(b"gap")).collect();
    assert!(matches!(
        rust.decrypt_raw(&sent[limit + 1]),
        Err(CryptoError::Limit(_))
    ));
    assert_eq!(rust.decrypt_raw(&sent[limit]).unwrap(), b"gap");
    assert_eq!(rust.0.stored_skipped(), limit);
    assert_eq!(rust.decrypt_raw(&sent[limit + 1]).unwrap(), b"gap");
    assert_eq!(rust.decrypt_raw(&sent[0]).unwrap(), b"gap");

    // Rust -> Python, with a fresh Python responder.
    let Some(peer) = start_peer() else { return };
    let (mut python, python_pub) = PyParty::responder(peer);
    let mut rust = RustParty::initiator(python_pub);
    let sent: Vec<Wire> = (0..=limit + 1).map(|_| rust.encrypt(b"gap")).collect();
    let err = python
        .decrypt(&sent[limit + 1])
        .expect_err("python bridged a gap beyond its threshold");
    assert!(err.contains("DoSProtection"), "unexpected error: {err}");
    assert_eq!(python.decrypt(&sent[limit]).unwrap(), b"gap");
    assert_eq!(python.decrypt(&sent[limit + 1]).unwrap(), b"gap");
    assert_eq!(python.decrypt(&sent[0]).unwrap(), b"gap");
}
