//! `cinder bench` scenarios: load generators and micro-benchmarks that print their figures.
//!
//! Benchmarks report; they never fail on time (tests never assert on wall-clock speed either).
//! Every scenario prints a human-readable table, or with `--json` exactly one JSON object, so
//! figures can be collected by scripts. This module sits at the top of the dependency table and
//! may use every other module.

pub mod client;
pub mod crypto;
pub mod dm;
pub mod fixtures;
pub mod idle;
pub mod room;
pub mod search;
pub mod tui;

use std::time::{Duration, Instant};

/// Errors of the benchmark harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A crypto operation failed while setting up or running a scenario.
    #[error("crypto: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// Writing the report or streaming data failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An argument was out of range.
    #[error("{0}")]
    Usage(String),
}

/// CPU time consumed by the calling thread, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_ns() -> Option<u64> {
    cpu_time::ThreadTime::try_now()
        .ok()
        .map(|t| u64::try_from(t.as_duration().as_nanos()).unwrap_or(u64::MAX))
}

/// Process peak resident set size in KiB (`VmHWM`), where the OS reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Wall and CPU time of one measured region.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Wall-clock duration.
    pub wall: Duration,
    /// Thread CPU time, when available.
    pub cpu: Option<Duration>,
}

/// Runs `f` once and measures it.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Measured) {
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    let out = f();
    let wall = t0.elapsed();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => Some(Duration::from_nanos(b.saturating_sub(a))),
        _ => None,
    };
    (out, Measured { wall, cpu })
}

/// Runs `f` repeatedly for about `budget` (at least `min_iters` times) and returns the mean
/// time per call in nanoseconds.
pub fn per_op_ns(budget: Duration, min_iters: u64, mut f: impl FnMut()) -> f64 {
    // Warm caches and lazy initialisation first.
    for _ in 0..min_iters.min(10) {
        f();
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while n < min_iters || t0.elapsed() < budget {
        f();
        n += 1;
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// Parses a byte size such as `64M`, `5G`, `512K` or a plain number of bytes.
///
/// # Errors
/// [`BenchError::Usage`] for anything else.
pub fn parse_size(s: &str) -> Result<u64, BenchError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| BenchError::Usage(format!("not a size: {s:?} (use e.g. 64M or 5G)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("5g").unwrap(), 5 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn cpu_time_advances_with_work() {
        let (_, m) = measure(|| {
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x)
        });
        if let Some(cpu) = m.cpu {
            assert!(cpu > Duration::ZERO);
        }
    }
}
