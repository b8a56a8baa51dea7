#![no_main]
//! Encrypt a fuzzer-chosen plaintext (up to three full chunks plus a tail) with `chunked`, apply
//! fuzzer-chosen mutations (byte flips, truncations, extensions, insertions, removals, chunk
//! swaps, duplications and drops), then decrypt with both `chunked::decrypt` and
//! `SeekableReader`. A stream that differs from the original must be rejected by both; the
//! original must round-trip through both, and random seeks and reads through the seekable
//! reader must return exactly the plaintext at that position.

use std::io::{Cursor, Read, Seek, SeekFrom};

use cinder::crypto::chunked::{
    CHUNK_SIZE, CLIP_CONTEXT, FILE_CONTEXT, HEADER_LEN, SEALED_CHUNK, SeekableReader,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Mutation {
    Flip { at: u32, mask: u8 },
    Truncate { to: u32 },
    CutAtChunk { chunk: u8 },
    Extend { bytes: Vec<u8> },
    Insert { at: u32, bytes: Vec<u8> },
    Remove { at: u32, len: u16 },
    SwapChunks { a: u8, b: u8 },
    DuplicateChunk { chunk: u8 },
    DropChunk { chunk: u8 },
}

#[derive(Arbitrary, Debug)]
enum To {
    Start(u32),
    Current(i32),
    End(i32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    full_chunks: u8,
    tail: u16,
    seed: u8,
    clip: bool,
    mutations: Vec<Mutation>,
    reads: Vec<(To, u16)>,
}

/// The byte range of sealed chunk `k` in `b`, if it is complete.
fn chunk_range(b: &[u8], k: usize) -> Option<std::ops::Range<usize>> {
    let start = HEADER_LEN + k * SEALED_CHUNK;
    let end = (start + SEALED_CHUNK).min(b.len());
    (start < end).then_some(start..end)
}

fn chunks(b: &[u8]) -> usize {
    b.len().saturating_sub(HEADER_LEN).div_ceil(SEALED_CHUNK)
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    let len = b.len();
    let n = chunks(b).max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if len > 0 {
                b[*at as usize % len] ^= (*mask).max(1);
            }
        }
        Mutation::Truncate { to } => b.truncate(*to as usize % (len + 1)),
        Mutation::CutAtChunk { chunk } => {
            b.truncate((HEADER_LEN + (*chunk as usize % n) * SEALED_CHUNK).min(len));
        }
        Mutation::Extend { bytes } => b.extend_from_slice(bytes),
        Mutation::Insert { at, bytes } => {
            let at = *at as usize % (len + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len: n } => {
            if len > 0 {
                let at = *at as usize % len;
                b.drain(at..(at + *n as usize).min(len));
            }
        }
        Mutation::SwapChunks { a, b: c } => {
            let (Some(ra), Some(rc)) = (
                chunk_range(b, *a as usize % n),
                chunk_range(b, *c as usize % n),
            ) else {
                return;
            };
            if ra.len() == rc.len() && ra != rc {
                let first = b[ra.clone()].to_vec();
                b.copy_within(rc.clone(), ra.start);
                b[rc].copy_from_slice(&first);
            }
        }
        Mutation::DuplicateChunk { chunk } => {
            if let Some(r) = chunk_range(b, *chunk as usize % n) {
                let copy = b[r.clone()].to_vec();
                b.splice(r.end..r.end, copy);
            }
        }
        Mutation::DropChunk { chunk } => {
            if let Some(r) = chunk_range(b, *chunk as usize % n) {
                b.drain(r);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let len = (input.full_chunks % 4) as usize * CHUNK_SIZE + input.tail as usize % CHUNK_SIZE;
    let plain: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(input.seed) ^ (i >> 8) as u8)
        .collect();
    let context = if input.clip {
        CLIP_CONTEXT
    } else {
        FILE_CONTEXT
    };
    let ct = cinder_fuzz::chunk_encrypt(context, &plain);
    let mut mutated = ct.clone();
    for m in input.mutations.iter().take(8) {
        apply(&mut mutated, m);
    }
    let key = &cinder_fuzz::CHUNK_KEY;
    let decrypted = cinder_fuzz::chunk_decrypt_both(key, context, &mutated);
    if mutated != ct {
        assert!(decrypted.is_none(), "a modified stream decrypted");
        return;
    }
    assert!(
        decrypted == Some(plain.clone()),
        "the genuine stream did not round-trip"
    );

    // Random access into the genuine stream.
    let mut r = SeekableReader::new(key, context, Cursor::new(&ct)).expect("genuine stream");
    assert_eq!(r.len(), len as u64);
    let mut pos = 0u64;
    for (to, n) in input.reads.iter().take(16) {
        let (target, seek) = match *to {
            To::Start(p) => (Some(u64::from(p)), SeekFrom::Start(u64::from(p))),
            To::Current(d) => (
                pos.checked_add_signed(i64::from(d)),
                SeekFrom::Current(i64::from(d)),
            ),
            To::End(d) => (
                (len as u64).checked_add_signed(i64::from(d)),
                SeekFrom::End(i64::from(d)),
            ),
        };
        match (r.seek(seek), target) {
            (Ok(p), Some(t)) => {
                assert_eq!(p, t);
                pos = p;
            }
            (Err(_), None) => {}
            (got, want) => panic!("seek {to:?} from {pos}: got {got:?}, want {want:?}"),
        }
        let mut buf = Vec::new();
        (&mut r)
            .take(u64::from(*n))
            .read_to_end(&mut buf)
            .expect("reading the genuine stream");
        let start = pos.min(len as u64) as usize;
        let end = pos.saturating_add(u64::from(*n)).min(len as u64) as usize;
        assert!(
            buf == plain[start..end.max(start)],
            "seekable read returned wrong bytes"
        );
        pos += buf.len() as u64;
    }
});
