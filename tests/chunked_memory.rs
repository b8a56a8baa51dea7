//! Streams 64 MiB through C2SP encryption and decryption and proves memory does not grow with
//! size: the pipeline runs through an OS pipe (nothing holds the whole stream), every write is
//! at most one sealed chunk, and the process's peak resident set grows far less than 64 MiB.
//! This file holds a single test so the peak RSS belongs to it alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};

use cinder::crypto::chunked::{self, CHUNK_BUFFER_BYTES, FILE_CONTEXT, SEALED_CHUNK};
use cinder::crypto::primitives::sha256;
use sha2::{Digest, Sha256};

const TOTAL: u64 = 64 * 1024 * 1024;

/// Deterministic pseudo-random bytes, generated on the fly.
struct Source {
    left: u64,
    state: u64,
    hash: Sha256,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.hash.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hashes what it is given and records the largest single write.
#[derive(Default)]
struct Sink {
    hash: Sha256,
    bytes: u64,
    largest_write: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        self.largest_write = self.largest_write.max(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts writes going into the pipe.
struct Counted<W> {
    inner: W,
    largest_write: usize,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.largest_write = self.largest_write.max(buf.len());
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn streaming_64_mib_uses_constant_memory() {
    // Bounded by construction: one chunk buffer per streaming object.
    const { assert!(CHUNK_BUFFER_BYTES <= SEALED_CHUNK + 1) };
    let before = peak_rss_kib();
    let key = [9u8; 32];
    let (reader, writer) = io::pipe().unwrap();
    let producer = std::thread::spawn(move || {
        let mut src = Source {
            left: TOTAL,
            state: 42,
            hash: Sha256::new(),
        };
        let mut out = Counted {
            inner: writer,
            largest_write: 0,
        };
        let written = chunked::encrypt(&key, FILE_CONTEXT, &mut src, &mut out).unwrap();
        let digest: [u8; 32] = src.hash.finalize().into();
        (written, digest, out.largest_write)
    });
    let mut reader = reader;
    let mut sink = Sink::default();
    let plain = chunked::decrypt(&key, FILE_CONTEXT, &mut reader, &mut sink).unwrap();
    let (written, source_digest, largest_ct_write) = producer.join().unwrap();
    let after = peak_rss_kib();

    assert_eq!(plain, TOTAL);
    assert_eq!(written, chunked::ciphertext_len(TOTAL));
    let sink_digest: [u8; 32] = sink.hash.finalize().into();
    assert_eq!(
        sink_digest, source_digest,
        "plaintext differs after the round trip"
    );
    assert_ne!(sink_digest, sha256(&[b""]));
    assert!(
        largest_ct_write <= SEALED_CHUNK,
        "encryptor wrote {largest_ct_write} bytes at once"
    );
    assert!(
        sink.largest_write <= SEALED_CHUNK,
        "decryptor wrote {} bytes at once",
        sink.largest_write
    );
    let grown_kib = after.saturating_sub(before);
    println!("64 MiB streamed; peak RSS {before} KiB -> {after} KiB (+{grown_kib} KiB)");
    // The stream is 65,536 KiB; holding even an eighth of it would exceed this bound.
    assert!(
        grown_kib < 8 * 1024,
        "peak RSS grew by {grown_kib} KiB while streaming 64 MiB"
    );
}
