//! `cinder bench search`: full-text search, paging and the conversation list over a large
//! encrypted cache.
//!
//! Fills a cache with [`super::fixtures`] (or reuses one given with `--cache`), opens it like
//! the client does, then times: the conversation list, paging back through the busiest
//! conversation, and `Q` searches of common, less common, rare, two-word, prefix (as typed) and
//! accented words through [`Db::search`] with a limit of 50. The target is a p99 search time
//! within one 60 Hz frame (16 ms), so search-as-you-type never stalls the UI. The fill time is
//! reported separately; it is the fixture's cost, not the client's.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fixtures::{self, COMMON_WORDS, RARE_WORDS};
use crate::store::{Db, MessageRecord, Store, StoreError};

/// The p99 search time the scenario aims for, in milliseconds.
pub const TARGET_P99_MS: f64 = 16.0;

/// Options of `cinder bench search`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Messages to fill a new cache with.
    pub messages: usize,
    /// Conversations to spread them over.
    pub conversations: usize,
    /// Searches to time.
    pub queries: usize,
    /// Results asked of each search.
    pub limit: usize,
    /// Use (or fill and keep) the cache in this directory instead of a temporary one.
    pub cache: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            messages: 1_000_000,
            conversations: 50,
            queries: 200,
            limit: 50,
            cache: None,
        }
    }
}

/// Timings of one kind of query.
#[derive(Serialize, Debug, Clone)]
pub struct KindReport {
    /// The kind: common, medium, rare, two_words, prefix, accented.
    pub kind: &'static str,
    /// Queries of this kind.
    pub queries: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Mean number of results.
    pub mean_results: f64,
}

/// Everything the scenario measures.
#[derive(Serialize, Debug)]
pub struct Report {
    /// Always "search".
    pub scenario: &'static str,
    /// Messages in the cache.
    pub messages: u64,
    /// Conversations in the cache.
    pub conversations: usize,
    /// Whether the cache was filled by this run (false: reused with `--cache`).
    pub filled: bool,
    /// Time to fill the cache, seconds (0 when reused).
    pub fill_s: f64,
    /// Fill rate, messages per second (0 when reused).
    pub fill_rate: f64,
    /// Size of the database files, MiB.
    pub db_mib: f64,
    /// Opening (unlocking) the cache, milliseconds.
    pub open_ms: f64,
    /// The conversation list, first call (cold), milliseconds.
    pub conversations_ms: f64,
    /// One page of 50 messages of the busiest conversation: median over the pages walked.
    pub history_page_p50_ms: f64,
    /// The slowest of those pages.
    pub history_page_max_ms: f64,
    /// Pages walked.
    pub history_pages: usize,
    /// Messages in the busiest conversation.
    pub busiest_conversation_messages: u64,
    /// Results asked of each search.
    pub limit: usize,
    /// Searches timed.
    pub queries: usize,
    /// Median search time, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile search time, milliseconds.
    pub p99_ms: f64,
    /// Slowest search, milliseconds.
    pub max_ms: f64,
    /// Mean search time, milliseconds.
    pub mean_ms: f64,
    /// Results returned by all searches together.
    pub results: u64,
    /// Whether `p99_ms <= TARGET_P99_MS`.
    pub target_met: bool,
    /// Whether every rare-word search found exactly the expected messages, newest first.
    pub rare_words_correct: bool,
    /// Per kind of query.
    pub kinds: Vec<KindReport>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (0..=1) of sorted durations, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The queries, cycling through the kinds.
fn queries(n: usize) -> Vec<(&'static str, String)> {
    const ACCENTED: &[&str] = &["cafe", "naive", "gruße", "resume", "привет", "東京"];
    let medium = &COMMON_WORDS[60..];
    (0..n)
        .map(|i| {
            let j = i / 6;
            match i % 6 {
                0 => ("common", COMMON_WORDS[j % 60].to_owned()),
                1 => ("medium", medium[j % medium.len()].to_owned()),
                2 => ("rare", RARE_WORDS[j % RARE_WORDS.len()].0.to_owned()),
                3 => (
                    "two_words",
                    format!(
                        "{} {}",
                        COMMON_WORDS[(j * 7) % 60],
                        medium[(j * 13) % medium.len()]
                    ),
                ),
                4 => {
                    // Search-as-you-type: the first letters of a word.
                    let w = medium[(j * 11) % medium.len()];
                    let k = 2 + j % 3;
                    ("prefix", w.chars().take(k).collect())
                }
                _ => ("accented", ACCENTED[j % ACCENTED.len()].to_owned()),
            }
        })
        .collect()
}

fn newest_first(results: &[MessageRecord]) -> bool {
    results
        .windows(2)
        .all(|w| w[0].sent_at_ms >= w[1].sent_at_ms)
}

/// Walks back through `conversation` in pages of 50 (at most `pages`), timing each.
fn walk_history(
    db: &Db<'_>,
    conversation: &str,
    pages: usize,
) -> Result<Vec<Duration>, StoreError> {
    let mut times = Vec::with_capacity(pages);
    let mut before = None;
    for _ in 0..pages {
        let t = Instant::now();
        let page = db.history_before(conversation, before, 50)?;
        times.push(t.elapsed());
        match page.first() {
            Some(m) => before = Some(m.message_id),
            None => break,
        }
    }
    Ok(times)
}

/// Runs the scenario.
///
/// # Errors
/// Cache errors (including [`StoreError::WrongPassphrase`] for a `--cache` directory that is
/// not a fixture).
pub fn run(o: &Options) -> Result<Report, StoreError> {
    let tmp;
    let dir = match &o.cache {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("cinder-bench-search")
                .tempdir()?;
            tmp.path().join("profile")
        }
    };
    let filled = if Store::exists(&dir) {
        None
    } else {
        Some(fixtures::fill_cache(
            &dir,
            fixtures::BENCH_PASSPHRASE,
            o.conversations,
            o.messages,
        )?)
    };

    let t = Instant::now();
    let store = Store::open(&dir, fixtures::BENCH_PASSPHRASE)?;
    let open = t.elapsed();
    let db = store.db();

    let t = Instant::now();
    let summaries = db.conversations()?;
    let conversations_time = t.elapsed();
    let messages: u64 = summaries.iter().map(|c| c.messages).sum();
    let busiest = summaries.iter().max_by_key(|c| c.messages);
    let (mut pages, busiest_messages) = match busiest {
        Some(c) => (walk_history(&db, &c.conversation, 200)?, c.messages),
        None => (Vec::new(), 0),
    };
    pages.sort_unstable();

    let mut all = Vec::with_capacity(o.queries);
    let mut kinds: Vec<(&'static str, Vec<Duration>, u64)> = Vec::new();
    let mut results = 0u64;
    let mut rare_ok = true;
    for (kind, q) in queries(o.queries) {
        let t = Instant::now();
        let found = db.search(&q, o.limit)?;
        let took = t.elapsed();
        all.push(took);
        results += found.len() as u64;
        if kind == "rare" {
            let expected = fixtures::rare_word_count(&q, messages).min(o.limit as u64);
            rare_ok &= found.len() as u64 == expected && newest_first(&found);
        }
        match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, times, n)) => {
                times.push(took);
                *n += found.len() as u64;
            }
            None => kinds.push((kind, vec![took], found.len() as u64)),
        }
    }
    all.sort_unstable();
    let p99 = ms(quantile(&all, 0.99));
    let total: Duration = all.iter().sum();

    Ok(Report {
        scenario: "search",
        messages,
        conversations: summaries.len(),
        filled: filled.is_some(),
        fill_s: filled.as_ref().map_or(0.0, |f| f.elapsed.as_secs_f64()),
        fill_rate: filled.as_ref().map_or(0.0, |f| {
            f.messages as f64 / f.elapsed.as_secs_f64().max(1e-9)
        }),
        db_mib: fixtures::db_bytes(&dir) as f64 / f64::from(1u32 << 20),
        open_ms: ms(open),
        conversations_ms: ms(conversations_time),
        history_page_p50_ms: ms(quantile(&pages, 0.5)),
        history_page_max_ms: ms(pages.last().copied().unwrap_or_default()),
        history_pages: pages.len(),
        busiest_conversation_messages: busiest_messages,
        limit: o.limit,
        queries: all.len(),
        p50_ms: ms(quantile(&all, 0.5)),
        p99_ms: p99,
        max_ms: ms(all.last().copied().unwrap_or_default()),
        mean_ms: ms(total) / all.len().max(1) as f64,
        results,
        target_met: p99 <= TARGET_P99_MS,
        rare_words_correct: rare_ok,
        kinds: kinds
            .into_iter()
            .map(|(kind, mut times, n)| {
                times.sort_unstable();
                KindReport {
                    kind,
                    queries: times.len(),
                    p50_ms: ms(quantile(&times, 0.5)),
                    p99_ms: ms(quantile(&times, 0.99)),
                    max_ms: ms(times.last().copied().unwrap_or_default()),
                    mean_results: n as f64 / times.len().max(1) as f64,
                }
            })
            .collect(),
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Prints the report as a table.
///
/// # Errors
/// Write errors.
pub fn print(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "cinder bench search")?;
    writeln!(
        out,
        "  cache                {} messages in {} conversations, {:.1} MiB",
        r.messages, r.conversations, r.db_mib
    )?;
    if r.filled {
        writeln!(
            out,
            "  fill                 {:>10.2} s      ({:.0} msgs/s, not part of the target)",
            r.fill_s, r.fill_rate
        )?;
    } else {
        writeln!(out, "  fill                 reused an existing cache")?;
    }
    writeln!(out, "  open                 {:>10.2} ms", r.open_ms)?;
    writeln!(
        out,
        "  conversation list    {:>10.3} ms     (first call)",
        r.conversations_ms
    )?;
    writeln!(
        out,
        "  history page of 50   {:>10.3} ms p50 ({:.3} ms max over {} pages of a {}-message conversation)",
        r.history_page_p50_ms,
        r.history_page_max_ms,
        r.history_pages,
        r.busiest_conversation_messages
    )?;
    writeln!(
        out,
        "  search, limit {}:   {:>8} {:>9} {:>9} {:>9} {:>12}",
        r.limit, "queries", "p50 ms", "p99 ms", "max ms", "mean results"
    )?;
    for k in &r.kinds {
        writeln!(
            out,
            "    {:<16}   {:>8} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
            k.kind, k.queries, k.p50_ms, k.p99_ms, k.max_ms, k.mean_results
        )?;
    }
    writeln!(
        out,
        "    {:<16}   {:>8} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
        "all",
        r.queries,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.results as f64 / r.queries.max(1) as f64
    )?;
    writeln!(
        out,
        "  search p99 {:.2} ms (target <= {TARGET_P99_MS} ms: {}); rare words found exactly: {}",
        r.p99_ms,
        verdict(r.target_met),
        if r.rare_words_correct { "yes" } else { "NO" }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn a_small_run_reports_and_finds_the_rare_words() {
        let o = Options {
            messages: 3_000,
            conversations: 5,
            queries: 24,
            ..Options::default()
        };
        let r = run(&o).unwrap();
        assert_eq!(r.messages, 3_000);
        assert_eq!(r.queries, 24);
        assert_eq!(r.kinds.len(), 6);
        assert!(r.rare_words_correct);
        assert!(r.results > 0);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"scenario\":\"search\""));
        let mut out = Vec::new();
        print(&r, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("rare words found exactly: yes")
        );
    }
}
