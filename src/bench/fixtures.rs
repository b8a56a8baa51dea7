//! Synthetic profile caches for benchmarks: a real, encrypted cache filled with a large,
//! realistic and reproducible history.
//!
//! [`fill_cache`] creates a profile (with [`KdfParams::INSECURE_FOR_TESTS`], so opening it is
//! instant: this is a fixture, never a user's cache) and bulk-inserts messages through the
//! ordinary [`Db::insert_message`], so the search index and the conversation summaries are
//! built by the same triggers as in real use. One transaction per [`BATCH`] rows keeps a
//! million messages well under a minute in a release build.
//!
//! The history is deterministic for a given size (a fixed-seed generator), which lets a
//! benchmark reuse a cache across runs and know what is in it:
//! - text is drawn from a Zipf-distributed vocabulary (a few hundred English words at the top,
//!   then ~20,000 generated words), 1 to ~150 words per message, with a few accented and
//!   non-Latin words;
//! - each of [`RARE_WORDS`] occurs in an exactly known number of messages
//!   ([`rare_word_count`]), for checking search results;
//! - conversations are direct ones with `peer-N` and rooms `room:team-N`, Zipf-sized so the
//!   busiest holds a large share (e.g. ~200,000 of 1,000,000), listed busiest first in
//!   [`FillReport::conversations`];
//! - timestamps advance by up to two minutes per message, some messages share a millisecond,
//!   about 45% are outgoing, and everything older than the last ten minutes is marked read.
//!
//! Other benchmarks (rendering, start-up) use it like this:
//! ```no_run
//! # fn main() -> Result<(), cinder::store::StoreError> {
//! use cinder::bench::fixtures::{self, BENCH_PASSPHRASE};
//! let dir = std::path::Path::new("/tmp/cinder-fixture");
//! let filled = fixtures::fill_cache(dir, BENCH_PASSPHRASE, 50, 1_000_000)?;
//! let store = cinder::store::Store::open(dir, BENCH_PASSPHRASE)?;
//! let page = store.db().history(&filled.conversations[0], 50)?;
//! # let _ = page;
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use crate::crypto::passphrase::KdfParams;
use crate::protocol::names;
use crate::store::{
    Db, MessageKind, MessageRecord, MessageState, MessageTimers, Store, StoreError,
};

/// The passphrase benchmark fixtures use unless told otherwise.
pub const BENCH_PASSPHRASE: &[u8] = b"cinder-bench";

/// The username of the fixture's own account (the sender of outgoing messages).
pub const ME: &str = "bench-me";

/// Messages per transaction while filling.
pub const BATCH: usize = 50_000;

/// Words that occur in exactly known messages: `(word, period)` means message `i` (counting
/// from 0 in insertion order) contains `word` when `i % period == period / 2`.
pub const RARE_WORDS: &[(&str, u64)] = &[
    ("xylophone", 100_000),
    ("quetzal", 10_000),
    ("zeppelin", 1_000),
    ("marmalade", 100),
];

/// How many of the first `messages` fixture messages contain `word` (0 for other words).
pub fn rare_word_count(word: &str, messages: u64) -> u64 {
    RARE_WORDS
        .iter()
        .find(|(w, _)| *w == word)
        .map_or(0, |&(_, period)| {
            let first = period / 2;
            if messages > first {
                (messages - first).div_ceil(period)
            } else {
                0
            }
        })
}

/// The most frequent words of the fixture vocabulary, most frequent first.
pub const COMMON_WORDS: &[&str] = &[
    "the",
    "to",
    "and",
    "a",
    "i",
    "you",
    "it",
    "of",
    "is",
    "that",
    "in",
    "we",
    "for",
    "this",
    "on",
    "be",
    "have",
    "with",
    "can",
    "just",
    "so",
    "not",
    "are",
    "but",
    "do",
    "if",
    "will",
    "at",
    "me",
    "what",
    "my",
    "all",
    "was",
    "get",
    "about",
    "there",
    "think",
    "know",
    "they",
    "let",
    "one",
    "when",
    "now",
    "how",
    "up",
    "out",
    "like",
    "time",
    "yes",
    "ok",
    "thanks",
    "good",
    "would",
    "today",
    "going",
    "need",
    "see",
    "our",
    "could",
    "should",
    "still",
    "work",
    "tomorrow",
    "sure",
    "back",
    "meeting",
    "then",
    "new",
    "release",
    "also",
    "make",
    "some",
    "from",
    "team",
    "review",
    "sounds",
    "great",
    "right",
    "maybe",
    "looks",
    "after",
    "call",
    "build",
    "test",
    "fix",
    "issue",
    "please",
    "check",
    "morning",
    "lunch",
    "week",
    "deploy",
    "branch",
    "merge",
    "server",
    "client",
    "relay",
    "message",
    "search",
    "cache",
    "later",
    "before",
    "already",
    "because",
    "people",
    "thing",
    "really",
    "again",
    "done",
    "first",
    "last",
    "next",
    "plan",
    "idea",
    "problem",
    "question",
    "answer",
    "update",
    "version",
    "change",
    "notes",
    "design",
    "doc",
    "draft",
    "ticket",
    "customer",
    "support",
    "friday",
    "monday",
    "weekend",
    "coffee",
    "office",
    "remote",
    "travel",
    "flight",
    "hotel",
    "budget",
    "invoice",
    "contract",
    "schedule",
    "agenda",
    "slides",
    "demo",
    "launch",
    "feedback",
    "bug",
    "crash",
    "logs",
    "metrics",
    "latency",
    "memory",
    "disk",
    "network",
    "config",
    "password",
    "keys",
    "backup",
    "restore",
    "migration",
    "database",
    "index",
    "query",
    "table",
    "screen",
    "terminal",
    "window",
    "theme",
    "colour",
    "keyboard",
];

/// Accented and non-Latin words sprinkled in (about one message in fifty has one).
const UNICODE_WORDS: &[&str] = &[
    "café",
    "naïve",
    "Grüße",
    "résumé",
    "façade",
    "über",
    "привет",
    "спасибо",
    "東京",
    "γειά",
];

/// Size of the generated long tail of the vocabulary.
const GENERATED_WORDS: usize = 20_000;

/// What [`fill_cache`] built.
#[derive(Clone, Debug)]
pub struct FillReport {
    /// Messages inserted.
    pub messages: u64,
    /// Conversation ids, busiest first.
    pub conversations: Vec<String>,
    /// Wall time of the fill (creating the profile, inserting, the final checkpoint).
    pub elapsed: Duration,
    /// Size of the profile's database files afterwards.
    pub db_bytes: u64,
}

/// A small, fast, seedable generator (SplitMix64); fixtures need reproducibility, not secrecy.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples indices `0..n` with probability proportional to `1 / (i + 1)^s`.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cdf = (0..n)
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        let cdf = cdf.into_iter().map(|c| c / total).collect();
        Self { cdf }
    }

    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// The fixture vocabulary: [`COMMON_WORDS`], then generated pronounceable words.
fn vocabulary() -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p",
        "pl", "r", "s", "sh", "st", "t", "tr", "v", "w",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou"];
    const CODAS: &[&str] = &["", "n", "r", "s", "t", "l", "m", "nd", "ck", "st"];
    let mut words: Vec<String> = COMMON_WORDS.iter().map(|w| (*w).to_owned()).collect();
    let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
    let mut rng = SplitMix64::new(0x766f_6361_6275_6c61);
    while words.len() < COMMON_WORDS.len() + GENERATED_WORDS {
        let syllables = 2 + rng.below(2);
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(ONSETS[rng.below(ONSETS.len() as u64) as usize]);
            w.push_str(VOWELS[rng.below(VOWELS.len() as u64) as usize]);
            w.push_str(CODAS[rng.below(CODAS.len() as u64) as usize]);
        }
        // Keep the rare words rare.
        if RARE_WORDS.iter().all(|(r, _)| *r != w) && seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

/// Generates the fixture history in insertion order; [`fill_cache`] stores it.
pub struct Generator {
    rng: SplitMix64,
    words: Vec<String>,
    word_dist: Zipf,
    conversations: Vec<(String, Vec<String>)>,
    conv_dist: Zipf,
    index: u64,
    clock_ms: u64,
}

impl Generator {
    /// A generator for `conversations` conversations (at least one).
    pub fn new(conversations: usize) -> Self {
        let words = vocabulary();
        let word_dist = Zipf::new(words.len(), 1.0);
        let conversations = (0..conversations.max(1))
            .map(|i| {
                if i % 5 == 4 {
                    let members = (0..8).map(|m| format!("member-{i}-{m}")).collect();
                    (format!("room:team-{i}"), members)
                } else {
                    let peer = format!("peer-{i}");
                    (names::dm_conversation(ME, &peer), vec![peer])
                }
            })
            .collect::<Vec<_>>();
        let conv_dist = Zipf::new(conversations.len(), 1.0);
        Self {
            rng: SplitMix64::new(0x6369_6e64_6572_2121),
            words,
            word_dist,
            conversations,
            conv_dist,
            index: 0,
            clock_ms: 1_600_000_000_000,
        }
    }

    /// Conversation ids in the order of their expected size, busiest first.
    pub fn conversation_ids(&self) -> Vec<String> {
        self.conversations.iter().map(|(c, _)| c.clone()).collect()
    }

    /// The time of the latest message so far (milliseconds since the Unix epoch).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    fn text(&mut self) -> String {
        let r = self.rng.below(100);
        let len = match r {
            0..70 => 1 + self.rng.below(12),
            70..95 => 12 + self.rng.below(28),
            _ => 40 + self.rng.below(110),
        };
        let mut text = String::with_capacity(len as usize * 7);
        for i in 0..len {
            if i > 0 {
                text.push(if self.rng.below(12) == 0 { ',' } else { ' ' });
                if text.ends_with(',') {
                    text.push(' ');
                }
            }
            let w = &self.words[self.word_dist.sample(&mut self.rng)];
            if i == 0 {
                let mut chars = w.chars();
                if let Some(c) = chars.next() {
                    text.extend(c.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push_str(w);
            }
        }
        if self.rng.below(50) == 0 {
            text.push(' ');
            text.push_str(UNICODE_WORDS[self.rng.below(UNICODE_WORDS.len() as u64) as usize]);
        }
        for &(word, period) in RARE_WORDS {
            if self.index % period == period / 2 {
                text.push(' ');
                text.push_str(word);
            }
        }
        text.push(match self.rng.below(10) {
            0 => '?',
            1 => '!',
            _ => '.',
        });
        text
    }

    /// The next message.
    pub fn next_message(&mut self) -> MessageRecord {
        // One message in twenty shares the previous one's millisecond.
        if self.rng.below(20) != 0 {
            self.clock_ms += 1 + self.rng.below(120_000);
        }
        let (conversation, members) =
            self.conversations[self.conv_dist.sample(&mut self.rng)].clone();
        let outgoing = self.rng.below(100) < 45;
        let sender = if outgoing {
            ME.to_owned()
        } else {
            members[self.rng.below(members.len() as u64) as usize].clone()
        };
        let mut message_id = [0u8; 16];
        message_id[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        message_id[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let mut sender_device = [0u8; 16];
        sender_device[..8].copy_from_slice(&(sender.len() as u64).to_le_bytes());
        let text = self.text();
        let state = match (outgoing, self.rng.below(20)) {
            (false, 0) => MessageState::Undecryptable,
            (false, _) => MessageState::Received,
            (true, 0) => MessageState::Failed,
            (true, 1..5) => MessageState::Delivered,
            (true, _) => MessageState::Read,
        };
        self.index += 1;
        MessageRecord {
            message_id,
            conversation,
            outgoing,
            sender,
            sender_device,
            sent_at_ms: self.clock_ms,
            received_at_ms: self.clock_ms + self.rng.below(2_000),
            text,
            state,
            kind: MessageKind::Text,
            timers: MessageTimers::default(),
        }
    }
}

/// Inserts `messages` generated messages into an open cache, [`BATCH`] per transaction, then
/// marks everything older than the last ten minutes read. Returns the conversation ids,
/// busiest first.
///
/// # Errors
/// Cache errors.
pub fn fill_store(
    store: &mut Store,
    conversations: usize,
    messages: usize,
) -> Result<Vec<String>, StoreError> {
    let mut generator = Generator::new(conversations);
    let mut left = messages;
    while left > 0 {
        let n = left.min(BATCH);
        let batch: Vec<MessageRecord> = (0..n).map(|_| generator.next_message()).collect();
        store.transaction(|db: &Db<'_>| db.insert_messages(&batch))?;
        left -= n;
    }
    let read_mark = generator.clock_ms().saturating_sub(600_000);
    let ids = generator.conversation_ids();
    store.transaction(|db: &Db<'_>| -> Result<(), StoreError> {
        for c in &ids {
            db.mark_read(c, read_mark)?;
        }
        Ok(())
    })?;
    Ok(ids)
}

/// Creates a profile cache in `dir` under `passphrase` and fills it with `messages` messages
/// across `conversations` conversations (see the module documentation for what they are).
///
/// # Security
/// The cache key is derived with [`KdfParams::INSECURE_FOR_TESTS`]: for benchmarks only.
///
/// # Errors
/// [`StoreError::AlreadyExists`] if `dir` holds a profile; other cache errors.
pub fn fill_cache(
    dir: &Path,
    passphrase: &[u8],
    conversations: usize,
    messages: usize,
) -> Result<FillReport, StoreError> {
    let t0 = Instant::now();
    let mut store = Store::create(dir, passphrase, KdfParams::INSECURE_FOR_TESTS)?;
    // Room for the pages a batch dirties in a large cache.
    store.set_cache_size(64 << 10)?;
    let conversations = fill_store(&mut store, conversations, messages)?;
    store.checkpoint_truncate()?;
    drop(store);
    let elapsed = t0.elapsed();
    Ok(FillReport {
        messages: messages as u64,
        conversations,
        elapsed,
        db_bytes: db_bytes(dir),
    })
}

/// Total size of the database files (`cache.db` and its WAL) in `dir`.
pub fn db_bytes(dir: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(dir.join(format!("{}{s}", crate::store::DB_FILE))).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_word_counts_match_the_generator() {
        let mut g = Generator::new(3);
        let n = 2_345u64;
        let mut counts = vec![0u64; RARE_WORDS.len()];
        for _ in 0..n {
            let m = g.next_message();
            for (i, (w, _)) in RARE_WORDS.iter().enumerate() {
                if m.text.split([' ', ',', '.', '?', '!']).any(|t| t == *w) {
                    counts[i] += 1;
                }
            }
        }
        for (i, (w, _)) in RARE_WORDS.iter().enumerate() {
            assert_eq!(counts[i], rare_word_count(w, n), "{w}");
        }
        assert_eq!(rare_word_count("marmalade", 2_345), 23);
        assert_eq!(rare_word_count("xylophone", 1_000_000), 10);
        assert_eq!(rare_word_count("the", 1_000_000), 0);
    }

    #[test]
    fn the_history_is_reproducible_and_varied() {
        let a: Vec<_> = {
            let mut g = Generator::new(10);
            (0..500).map(|_| g.next_message()).collect()
        };
        let mut g = Generator::new(10);
        let b: Vec<_> = (0..500).map(|_| g.next_message()).collect();
        assert_eq!(a, b);
        let lens: std::collections::BTreeSet<_> =
            a.iter().map(|m| m.text.split(' ').count()).collect();
        assert!(lens.len() > 20, "lengths vary: {lens:?}");
        assert!(a.iter().any(|m| m.outgoing) && a.iter().any(|m| !m.outgoing));
        assert!(a.windows(2).all(|w| w[0].sent_at_ms <= w[1].sent_at_ms));
        let convs: std::collections::BTreeSet<_> = a.iter().map(|m| &m.conversation).collect();
        assert!(convs.len() > 3);
    }

    #[test]
    fn fill_cache_builds_a_searchable_summarised_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let r = fill_cache(&dir, b"pw", 4, 1_234).unwrap();
        assert_eq!(r.messages, 1_234);
        assert_eq!(r.conversations.len(), 4);
        assert!(r.db_bytes > 0);
        let s = Store::open(&dir, b"pw").unwrap();
        let db = s.db();
        let summaries = db.conversations().unwrap();
        assert_eq!(summaries.iter().map(|c| c.messages).sum::<u64>(), 1_234);
        assert_eq!(
            db.search("marmalade", 100).unwrap().len() as u64,
            rare_word_count("marmalade", 1_234)
        );
    }
}
