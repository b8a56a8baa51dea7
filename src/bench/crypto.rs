//! `cinder bench crypto`: the crypto core's costs, per `docs/crypto.md` targets.
//!
//! Figures: envelope seal + open per message; a ratchet step with and without a DH step;
//! a room send (envelope + sender key) for 2 and for 500 members; a sender-key rotation for a
//! 500-member room (~1,000 devices) in CPU time; C2SP encrypt and decrypt throughput beside raw
//! AES-256-GCM throughput of the same crate; and a long streaming run (5 GB class with
//! `--stream-size 5G`) through an OS pipe with its peak RSS.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, measure, peak_rss_kib, per_op_ns};
use crate::crypto::chunked::{self, CHUNK_SIZE, FILE_CONTEXT};
use crate::crypto::envelope::{self, MessageId, Payload, PayloadKind, Timers};
use crate::crypto::handshake::{self, Session};
use crate::crypto::identity::{DeviceCertificate, DeviceId, DeviceKeys, DeviceRole, UserRootKey};
use crate::crypto::prekeys::{DevicePrekeys, PrekeyBundle};
use crate::crypto::primitives::{Aead, DhKeyPair, Secret32};
use crate::crypto::ratchet::RatchetState;
use crate::crypto::sender_keys::{ReceivedSenderKey, RotationReason, SenderKeyState};

/// Options of `cinder bench crypto`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Members of the large room (default 500).
    pub members: usize,
    /// Devices per member (default 2, so 500 members are ~1,000 devices).
    pub devices_per_member: usize,
    /// Bytes for the C2SP-versus-raw comparison (held in memory).
    pub buffer_size: u64,
    /// Bytes for the streaming run through a pipe (not held in memory).
    pub stream_size: u64,
    /// Time budget per micro-benchmark.
    pub budget: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            members: 500,
            devices_per_member: 2,
            buffer_size: 64 << 20,
            stream_size: 1 << 30,
            budget: Duration::from_millis(700),
        }
    }
}

/// Everything the scenario measures.
#[derive(Serialize, Debug)]
pub struct Report {
    /// Always "crypto".
    pub scenario: &'static str,
    /// Envelope seal + open of a 200-byte text message, microseconds.
    pub envelope_seal_open_us: f64,
    /// Ratchet encrypt + decrypt within one chain, microseconds per message.
    pub ratchet_step_us: f64,
    /// Ratchet encrypt + decrypt with a DH ratchet step each time, microseconds per message.
    pub ratchet_step_dh_us: f64,
    /// Room send (envelope seal + sender-key encrypt + sign) with 2 members, microseconds.
    pub room_send_2_us: f64,
    /// The same with `members` members.
    pub room_send_large_us: f64,
    /// Members of the large room.
    pub room_members: usize,
    /// `room_send_large_us / room_send_2_us` (target <= 1.2).
    pub room_send_ratio: f64,
    /// One member's receive (signature check, decrypt, envelope open), microseconds.
    pub room_receive_us: f64,
    /// Devices the rotation had to reach.
    pub rotation_devices: usize,
    /// CPU time of one rotation: new key + SKDM to every device (target <= 100 ms).
    pub rotation_cpu_ms: f64,
    /// Wall time of the same.
    pub rotation_wall_ms: f64,
    /// Bytes of pairwise messages one rotation produces.
    pub rotation_bytes: usize,
    /// Size of the in-memory buffer for the throughput comparison.
    pub buffer_mib: f64,
    /// Raw AES-256-GCM over 16 KiB chunks, MB/s.
    pub raw_aes_gcm_mbps: f64,
    /// C2SP chunked encryption, MB/s.
    pub c2sp_encrypt_mbps: f64,
    /// C2SP chunked decryption, MB/s.
    pub c2sp_decrypt_mbps: f64,
    /// `c2sp_encrypt_mbps / raw_aes_gcm_mbps` (target >= 0.70).
    pub c2sp_encrypt_vs_raw: f64,
    /// `c2sp_decrypt_mbps / raw_aes_gcm_mbps` (target >= 0.70).
    pub c2sp_decrypt_vs_raw: f64,
    /// Bytes streamed through encrypt -> pipe -> decrypt.
    pub stream_bytes: u64,
    /// Throughput of that pipeline, MB/s of plaintext.
    pub stream_mbps: f64,
    /// Peak RSS growth during the streaming run, KiB.
    pub stream_rss_growth_kib: u64,
}

fn payload(conversation: &[u8], len: usize) -> Result<Payload, BenchError> {
    Ok(Payload {
        message_id: MessageId::random()?,
        sent_at_ms: 1_700_000_000_000,
        conversation: conversation.to_vec(),
        kind: PayloadKind::Text("x".repeat(len)),
        timers: Timers::default(),
        reply_to: None,
    })
}

struct Device {
    urk: UserRootKey,
    keys: DeviceKeys,
    cert: DeviceCertificate,
}

fn device(user: &str) -> Result<Device, BenchError> {
    let urk = UserRootKey::generate()?;
    let keys = DeviceKeys::generate()?;
    let cert = urk.certify(user, DeviceId::random()?, &keys, 1, DeviceRole::User)?;
    Ok(Device { urk, keys, cert })
}

/// Established pairwise sessions from `sender` to `n` fresh devices (handshake and one reply
/// each, so no session still carries the handshake fields).
fn established_sessions(sender: &Device, n: usize) -> Result<Vec<Session>, BenchError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let peer = device(&format!("member{i}"))?;
        let mut prekeys = DevicePrekeys::new(&peer.keys.signing, 1)?;
        let otk = prekeys.generate_one_time(1)?;
        let pq = prekeys.generate_pq_one_time(&peer.keys.signing, 1, 1)?;
        let spk = prekeys
            .current_signed_prekey(&peer.keys.signing)
            .ok_or_else(|| BenchError::Usage("no signed prekey".into()))?;
        let bundle = PrekeyBundle {
            cert: peer.cert.clone(),
            signed_prekey: spk,
            one_time_prekey: otk.first().copied(),
            pq_prekey: pq[0].clone(),
        };
        let mut s = handshake::initiate(
            &sender.keys,
            &sender.cert,
            &peer.urk.public(),
            &peer.cert.user_id,
            &bundle,
            &[],
            1,
        )?;
        let first = match s.encrypt(b"hello")? {
            handshake::PairwiseMessage::Initial(i) => i,
            handshake::PairwiseMessage::Normal(_) => {
                return Err(BenchError::Usage("expected an initial message".into()));
            }
        };
        let (mut theirs, _) = handshake::respond(
            &peer.keys,
            &peer.cert,
            &mut prekeys,
            &sender.urk.public(),
            &[],
            &first,
            1,
        )?;
        let reply = theirs.encrypt(b"hi")?;
        s.decrypt(&reply, 1)?;
        out.push(s);
    }
    Ok(out)
}

fn room_send_us(members: usize, budget: Duration) -> Result<(f64, f64), BenchError> {
    let room = b"bench-room";
    let mut sender = SenderKeyState::new(room, DeviceId([1; 16]), 0)?;
    // Every member device holds the sender's key; the send itself must not depend on them.
    let mut receivers: Vec<ReceivedSenderKey> = (0..members)
        .map(|_| ReceivedSenderKey::from_distribution(&sender.distribution()))
        .collect();
    let p = payload(room, 200)?;
    let mut failed = None;
    let send = per_op_ns(budget, 200, || {
        let r = envelope::seal(&p).and_then(|(pkg, body)| {
            let m = sender.encrypt(&pkg.encode()?, &pkg.body_hash)?;
            Ok((m, body))
        });
        if let Err(e) = r {
            failed = Some(e);
        }
        // Keep the chain far from its rotation point so the loop measures steady state.
        if sender.iteration() > 20_000
            && let Ok(s) = SenderKeyState::new(room, DeviceId([1; 16]), 0)
        {
            sender = s;
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    // One member's receive.
    let fresh = SenderKeyState::new(room, DeviceId([2; 16]), 0)?;
    let mut s = fresh;
    receivers[0] = ReceivedSenderKey::from_distribution(&s.distribution());
    let mut msgs = Vec::new();
    for _ in 0..2000 {
        let (pkg, body) = envelope::seal(&p)?;
        msgs.push((s.encrypt(&pkg.encode()?, &pkg.body_hash)?, body));
    }
    let t0 = Instant::now();
    for (m, body) in &msgs {
        let hash = crate::crypto::primitives::sha256(&[body]);
        let bytes = receivers[0].decrypt(m, &hash)?;
        let pkg = envelope::KeyPackage::decode(&bytes)?;
        envelope::open(&pkg, body)?;
    }
    let recv = t0.elapsed().as_nanos() as f64 / msgs.len() as f64;
    Ok((send / 1000.0, recv / 1000.0))
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Repeats a 1 MiB pattern up to a length, cheaply, so the source does not dominate.
struct PatternSource {
    pattern: Vec<u8>,
    left: u64,
    off: usize,
}

impl Read for PatternSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64)
            .min(self.left)
            .min((self.pattern.len() - self.off) as u64) as usize;
        buf[..n].copy_from_slice(&self.pattern[self.off..self.off + n]);
        self.off = (self.off + n) % self.pattern.len();
        self.left -= n as u64;
        Ok(n)
    }
}

fn throughput(size: u64) -> Result<(f64, f64, f64), BenchError> {
    let len = usize::try_from(size).map_err(|_| BenchError::Usage("buffer too large".into()))?;
    let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let key = Secret32::random()?;
    // Raw AES-256-GCM of the same crate over the same 16 KiB chunking.
    let aead = Aead::new(&key);
    let mut buf = plain.clone();
    let t0 = Instant::now();
    for (i, chunk) in buf.chunks_mut(CHUNK_SIZE).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        std::hint::black_box(aead.seal_in_place(&nonce, &[], chunk));
    }
    let raw = mbps(size, t0.elapsed());
    drop(buf);
    // Pre-touched output (non-zero fill, so it is not lazily mapped calloc memory), like the
    // raw run's buffer, so page faults are not counted as crypto.
    let mut ct = vec![0xA5u8; chunked::ciphertext_len(size) as usize];
    let t0 = Instant::now();
    let written = chunked::encrypt(
        key.expose(),
        FILE_CONTEXT,
        &mut &plain[..],
        &mut &mut ct[..],
    )?;
    let enc = mbps(size, t0.elapsed());
    if written != ct.len() as u64 {
        return Err(BenchError::Usage("ciphertext length mismatch".into()));
    }
    let mut sink = CountingSink(0);
    let t0 = Instant::now();
    chunked::decrypt(key.expose(), FILE_CONTEXT, &mut &ct[..], &mut sink)?;
    let dec = mbps(size, t0.elapsed());
    if sink.0 != size {
        return Err(BenchError::Usage("decrypted length mismatch".into()));
    }
    Ok((raw, enc, dec))
}

fn stream(size: u64) -> Result<(f64, u64), BenchError> {
    let before = peak_rss_kib().unwrap_or(0);
    let key = Secret32::random()?;
    let k2 = key.clone();
    let (mut reader, writer) = io::pipe()?;
    let t0 = Instant::now();
    let producer = std::thread::spawn(move || -> Result<u64, BenchError> {
        let mut src = PatternSource {
            pattern: (0..1 << 20).map(|i| (i % 253) as u8).collect(),
            left: size,
            off: 0,
        };
        let mut w = io::BufWriter::with_capacity(1 << 16, writer);
        Ok(chunked::encrypt(
            k2.expose(),
            FILE_CONTEXT,
            &mut src,
            &mut w,
        )?)
    });
    let mut sink = CountingSink(0);
    let mut r = io::BufReader::with_capacity(1 << 16, &mut reader);
    chunked::decrypt(key.expose(), FILE_CONTEXT, &mut r, &mut sink)?;
    producer
        .join()
        .map_err(|_| BenchError::Usage("encryption thread panicked".into()))??;
    let elapsed = t0.elapsed();
    if sink.0 != size {
        return Err(BenchError::Usage("streamed length mismatch".into()));
    }
    let after = peak_rss_kib().unwrap_or(0);
    Ok((mbps(size, elapsed), after.saturating_sub(before)))
}

/// Runs every measurement.
///
/// # Errors
/// [`BenchError`] if any operation fails (which would be a bug).
pub fn run(opts: &Options) -> Result<Report, BenchError> {
    let budget = opts.budget;
    let p = payload(b"dm", 200)?;
    let mut failed = None;
    let envelope_ns = per_op_ns(budget, 200, || {
        if let Err(e) = envelope::seal(&p).and_then(|(k, b)| envelope::open(&k, &b)) {
            failed = Some(e);
        }
    });

    let sk = Secret32::random()?;
    let bob_kp = DhKeyPair::generate()?;
    let mut a = RatchetState::init_initiator(&sk, bob_kp.public(), vec![0; 128])?;
    let mut b = RatchetState::init_responder(&sk, bob_kp, vec![0; 128]);
    let ratchet_ns = per_op_ns(budget, 200, || {
        if let Err(e) = a.encrypt(&[7; 97]).and_then(|m| b.decrypt(&m, 0)) {
            failed = Some(e);
        }
    });
    let mut turn = false;
    let ratchet_dh_ns = per_op_ns(budget, 200, || {
        let r = if turn {
            b.encrypt(&[7; 97]).and_then(|m| a.decrypt(&m, 0))
        } else {
            a.encrypt(&[7; 97]).and_then(|m| b.decrypt(&m, 0))
        };
        turn = !turn;
        if let Err(e) = r {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }

    let (room_small, _) = room_send_us(2, budget)?;
    let (room_large, room_receive) = room_send_us(opts.members, budget)?;

    let sender = device("sender")?;
    let devices = opts.members * opts.devices_per_member;
    let mut sessions = established_sessions(&sender, devices)?;
    let state = SenderKeyState::new(b"big-room", sender.cert.device_id, 0)?;
    let (rotation, m) = measure(|| -> Result<usize, BenchError> {
        let next = state.rotate(RotationReason::MemberRemoved, 1)?;
        let skdm = next.distribution().encode()?;
        let mut bytes = 0;
        for s in &mut sessions {
            bytes += s.encrypt(&skdm)?.encode()?.len();
        }
        Ok(bytes)
    });
    let rotation_bytes = rotation?;

    let (raw, enc, dec) = throughput(opts.buffer_size)?;
    let (stream_mbps, rss) = stream(opts.stream_size)?;

    Ok(Report {
        scenario: "crypto",
        envelope_seal_open_us: envelope_ns / 1000.0,
        ratchet_step_us: ratchet_ns / 1000.0,
        ratchet_step_dh_us: ratchet_dh_ns / 1000.0,
        room_send_2_us: room_small,
        room_send_large_us: room_large,
        room_members: opts.members,
        room_send_ratio: room_large / room_small,
        room_receive_us: room_receive,
        rotation_devices: devices,
        rotation_cpu_ms: m.cpu.unwrap_or(m.wall).as_secs_f64() * 1000.0,
        rotation_wall_ms: m.wall.as_secs_f64() * 1000.0,
        rotation_bytes,
        buffer_mib: opts.buffer_size as f64 / (1 << 20) as f64,
        raw_aes_gcm_mbps: raw,
        c2sp_encrypt_mbps: enc,
        c2sp_decrypt_mbps: dec,
        c2sp_encrypt_vs_raw: enc / raw,
        c2sp_decrypt_vs_raw: dec / raw,
        stream_bytes: opts.stream_size,
        stream_mbps,
        stream_rss_growth_kib: rss,
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES target" }
}

/// Prints the report as a table.
///
/// # Errors
/// I/O errors of `out`.
pub fn print(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "cinder bench crypto")?;
    writeln!(
        out,
        "  envelope seal+open (200 B text)   {:>10.2} us/msg",
        r.envelope_seal_open_us
    )?;
    writeln!(
        out,
        "  ratchet step, same chain          {:>10.2} us/msg",
        r.ratchet_step_us
    )?;
    writeln!(
        out,
        "  ratchet step with DH step         {:>10.2} us/msg",
        r.ratchet_step_dh_us
    )?;
    writeln!(
        out,
        "  room send, 2 members              {:>10.2} us/msg",
        r.room_send_2_us
    )?;
    writeln!(
        out,
        "  room send, {:>3} members            {:>10.2} us/msg   ratio {:.2} (target <= 1.20: {})",
        r.room_members,
        r.room_send_large_us,
        r.room_send_ratio,
        verdict(r.room_send_ratio <= 1.2)
    )?;
    writeln!(
        out,
        "  room receive, one member          {:>10.2} us/msg",
        r.room_receive_us
    )?;
    writeln!(
        out,
        "  sender-key rotation, {} devices  {:>10.2} ms CPU ({:.2} ms wall, {} bytes; target <= 100 ms: {})",
        r.rotation_devices,
        r.rotation_cpu_ms,
        r.rotation_wall_ms,
        r.rotation_bytes,
        verdict(r.rotation_cpu_ms <= 100.0)
    )?;
    writeln!(
        out,
        "  raw AES-256-GCM ({:.0} MiB)         {:>10.1} MB/s",
        r.buffer_mib, r.raw_aes_gcm_mbps
    )?;
    writeln!(
        out,
        "  C2SP encrypt                      {:>10.1} MB/s   {:.0} % of raw (target >= 70 %: {})",
        r.c2sp_encrypt_mbps,
        r.c2sp_encrypt_vs_raw * 100.0,
        verdict(r.c2sp_encrypt_vs_raw >= 0.7)
    )?;
    writeln!(
        out,
        "  C2SP decrypt                      {:>10.1} MB/s   {:.0} % of raw (target >= 70 %: {})",
        r.c2sp_decrypt_mbps,
        r.c2sp_decrypt_vs_raw * 100.0,
        verdict(r.c2sp_decrypt_vs_raw >= 0.7)
    )?;
    writeln!(
        out,
        "  C2SP stream via pipe, {:.2} GiB    {:>10.1} MB/s   peak RSS +{} KiB",
        r.stream_bytes as f64 / (1u64 << 30) as f64,
        r.stream_mbps,
        r.stream_rss_growth_kib
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_produces_consistent_figures() {
        let r = run(&Options {
            members: 20,
            devices_per_member: 2,
            buffer_size: 1 << 20,
            stream_size: 4 << 20,
            budget: Duration::from_millis(20),
        })
        .unwrap();
        assert_eq!(r.rotation_devices, 40);
        // Each of the 40 devices got one SKDM wrapped in a ratchet message.
        assert!(r.rotation_bytes > 40 * 100);
        assert!(r.envelope_seal_open_us > 0.0 && r.ratchet_step_dh_us > 0.0);
        assert!(r.c2sp_encrypt_mbps > 0.0 && r.raw_aes_gcm_mbps > 0.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["scenario"], "crypto");
        let mut text = Vec::new();
        print(&r, &mut text).unwrap();
        assert!(String::from_utf8(text).unwrap().contains("C2SP decrypt"));
    }
}
