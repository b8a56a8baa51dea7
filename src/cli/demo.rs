//! `cinder demo`: a throwaway network on loopback with demo users who talk back, and the UI.
//!
//! Everything happens in a fresh temporary directory: an embedded relay on `127.0.0.1:0`
//! creates the network "Cinder demo"; you register first with the relay's one-time admin
//! invite (so you are the network admin), then alice, bob and carol register with invites you
//! create. Before the UI opens, a conversation is exchanged for real through the relay (every
//! message encrypted, pushed and stored like any other), so the UI starts with history and
//! unread counts; alice also creates the room "ops" with all four of you, makes you a moderator
//! and the three of them talk there, including a message that burns 30 seconds after you read
//! it and one that expires after ten minutes. While the UI runs, each demo user is a session
//! engine plus a small task that answers what you send (alice with tips, bob with a twist,
//! carol with the time; in "ops" when you mention them), posts something to you every 30 to 60
//! seconds and chatters in "ops" every few seconds; now and then carol's post burns 30 seconds
//! after reading and bob's expires after two minutes, so the countdown badges and the vanishing
//! are always there to watch. When the UI closes, the bots, the relay and the directory go
//! away, also after a failed start or Ctrl-C during set-up.
//!
//! The responders are pure functions of the text (tested below); the runtime part only wires
//! them to session events.

use std::collections::HashSet;
use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{NaiveTime, Timelike as _};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::UsageError;
use crate::crypto::hex;
use crate::crypto::passphrase::KdfParams;
use crate::crypto::primitives;
use crate::protocol::names;
use crate::relay::{self, RelayConfig, RelayHandle};
use crate::session::register::{RegisterOptions, register};
use crate::session::{
    self, EngineOptions, MessageKind, RoomKind, RoomRequest, SendOptions, SessionEvent,
    SessionHandle,
};
use crate::tui::app::mentions;
use crate::tui::run::{TuiOptions, run};

/// What `cinder demo` passes in.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Theme name for the UI.
    pub theme: String,
    /// Keymap profile for the UI.
    pub keymap: String,
    /// The configuration directory (themes/, keymap.toml).
    pub config_dir: PathBuf,
    /// Keep the temporary directory (relay data and profiles) instead of removing it.
    pub keep: bool,
}

/// The network name the demo relay creates.
pub const NETWORK_NAME: &str = "Cinder demo";

/// Your username when `$USER` is not usable.
const FALLBACK_USERNAME: &str = "you";

/// Backoff cap for every demo engine: the relay is local, so reconnect quickly.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How long the fill waits for one message to arrive before giving up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest piece of your text bob echoes back.
const ECHO_MAX_CHARS: usize = 200;

/// The demo room's title.
pub const ROOM_TITLE: &str = "ops";

/// Burn-on-read timer of the demo's burning messages.
const DEMO_BURN_SECS: u32 = 30;

/// Expiry of the expiring message in the room's history.
const FILL_EXPIRE_SECS: u32 = 600;

/// Expiry of the expiring messages bob posts while the UI runs.
const LIVE_EXPIRE_SECS: u32 = 120;

/// How often (per bot) the demo users post in the room, in milliseconds.
const ROOM_POST_MS: (u64, u64) = (7_000, 15_000);

/// The demo users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bot {
    /// Answers questions and explains what to try.
    Alice,
    /// Echoes with a twist and counts characters.
    Bob,
    /// Greets newcomers and tells the time.
    Carol,
}

impl Bot {
    /// Every demo user, in registration order.
    pub const ALL: [Bot; 3] = [Bot::Alice, Bot::Bob, Bot::Carol];

    /// The username.
    pub fn name(self) -> &'static str {
        match self {
            Bot::Alice => "alice",
            Bot::Bob => "bob",
            Bot::Carol => "carol",
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            Bot::Alice => "Alice",
            Bot::Bob => "Bob",
            Bot::Carol => "Carol",
        }
    }
}

/// Whether `name` belongs to a demo user.
fn is_bot(name: &str) -> bool {
    Bot::ALL.iter().any(|b| b.name() == name)
}

/// Your demo username: `$USER` if it is a valid username and not a demo user's, else "you".
pub fn demo_username(user: Option<&str>) -> String {
    user.and_then(names::canonical_username)
        .filter(|u| !is_bot(u))
        .unwrap_or_else(|| FALLBACK_USERNAME.to_owned())
}

/// Whether a bot answers a message: only messages from people, never its own or another bot's,
/// so two bots can never talk to each other in a loop.
pub fn should_answer(sender: &str, outgoing: bool) -> bool {
    !outgoing && !is_bot(sender)
}

/// Lowercase words of `text` (letters, digits and apostrophes).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "heya",
    "hiya",
    "yo",
    "howdy",
    "morning",
    "evening",
    "greetings",
    "sup",
];

fn is_greeting(w: &[String]) -> bool {
    match w.first().map(String::as_str) {
        Some("good") => matches!(
            w.get(1).map(String::as_str),
            Some("morning" | "afternoon" | "evening" | "day")
        ),
        Some(first) => GREETINGS.contains(&first),
        None => false,
    }
}

fn is_thanks(w: &[String]) -> bool {
    w.iter().any(|x| {
        matches!(
            x.as_str(),
            "thanks" | "thank" | "thx" | "ty" | "cheers" | "merci" | "danke"
        )
    })
}

/// The help text alice sends: what to try in the UI.
pub fn help_text() -> String {
    [
        "things to try:",
        "• /dm bob or /dm carol opens a conversation",
        "• /search WORDS finds messages in your encrypted local cache",
        "• Ctrl-K jumps to any conversation by name",
        "• ops is a busy room: /members (F2) lists who is in it; mention one of us there",
        "• /burn 30s or /expire 5m before a message makes it disappear",
        "• F1 lists every key and command (Esc closes it)",
        "• /theme light for a bright terminal, /keys vim for vim keys",
        "• Ctrl-C or /quit leaves the demo",
    ]
    .join("\n")
}

/// Alice's answer to a message from `sender`: greetings, how/what/why questions, thanks, help.
pub fn alice_reply(text: &str, sender: &str) -> String {
    let w = words(text);
    let has = |x: &str| w.iter().any(|y| y == x);
    let greeting = is_greeting(&w);
    let hello = format!("hi {sender}! ");
    let question = w
        .iter()
        .find(|x| matches!(x.as_str(), "how" | "what" | "why" | "what's" | "how's"))
        .map(String::as_str);
    if has("help") || has("tips") || has("commands") {
        return help_text();
    }
    if is_thanks(&w) {
        return "you're welcome! say 'help' whenever you want the tips again".to_owned();
    }
    let answer = match question {
        Some("how" | "how's") if has("you") || has("going") || has("things") => Some(
            "doing great, thanks: every message I get is end-to-end encrypted, so I sleep well"
                .to_owned(),
        ),
        Some("how" | "how's") if has("encrypted") || has("encryption") || has("secure") => Some(
            "each message gets a fresh AES-256-GCM key; the key travels inside a Double \
                 Ratchet session that started with a post-quantum handshake"
                .to_owned(),
        ),
        Some("how" | "how's") => Some(
            "most things are a slash command away: /dm, /search, /theme, /keys. F1 lists them all"
                .to_owned(),
        ),
        Some("what" | "what's") if has("time") => {
            Some("carol is the one to ask about the time: /dm carol".to_owned())
        }
        Some("what" | "what's") if has("relay") || has("server") => {
            Some("the relay stores and forwards ciphertext; it never sees what we write".to_owned())
        }
        Some("what" | "what's") => Some(
            "Cinder is an end-to-end encrypted messenger for the terminal. say 'help' for \
             things to try"
                .to_owned(),
        ),
        Some(_) => Some(
            "because terminals deserve good encrypted chat, and a server should never read \
             your messages"
                .to_owned(),
        ),
        None => None,
    };
    match (greeting, answer) {
        (true, Some(a)) => format!("{hello}{a}"),
        (false, Some(a)) => a,
        (true, None) => format!("{hello}good to see you. say 'help' if you want ideas"),
        (false, None) if text.trim_end().ends_with('?') => {
            "good question! I only know the basics: say 'help' for things to try".to_owned()
        }
        (false, None) => {
            // A little variety that stays deterministic for the same text.
            const OTHER: [&str; 3] = [
                "interesting! say 'help' for things to try",
                "noted. bob and carol are around too: /dm bob, /dm carol",
                "nice. try /search with a word from earlier in our chat",
            ];
            let i = text.bytes().map(usize::from).sum::<usize>() % OTHER.len();
            OTHER[i].to_owned()
        }
    }
}

/// How bob twists what you write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twist {
    /// The words in reverse order (a single word is spelled backwards).
    Reverse,
    /// Everything in capitals.
    Shout,
}

impl Twist {
    /// The twist after this one (bob alternates).
    pub fn next(self) -> Self {
        match self {
            Twist::Reverse => Twist::Shout,
            Twist::Shout => Twist::Reverse,
        }
    }
}

/// Bob's answer: your text with a twist, and its length in characters.
pub fn bob_reply(text: &str, twist: Twist) -> String {
    let n = text.chars().count();
    let mut short: String = text.chars().take(ECHO_MAX_CHARS).collect();
    if n > ECHO_MAX_CHARS {
        short.push('…');
    }
    let unit = if n == 1 { "character" } else { "characters" };
    let ws: Vec<&str> = short.split_whitespace().collect();
    match (twist, ws.len()) {
        (_, 0) => format!("nothing to twist there, but I counted {n} {unit} of whitespace"),
        (Twist::Reverse, 1) => {
            let back: String = ws[0].chars().rev().collect();
            format!("{back}: that's you, backwards ({n} {unit})")
        }
        (Twist::Reverse, _) => {
            let back: Vec<&str> = ws.iter().rev().copied().collect();
            format!("{}: that's you, backwards ({n} {unit})", back.join(" "))
        }
        (Twist::Shout, _) => format!("{}! ({n} {unit}, I counted)", ws.join(" ").to_uppercase()),
    }
}

fn hh_mm(now: NaiveTime) -> String {
    format!("{:02}:{:02}", now.hour(), now.minute())
}

/// Carol's answer: a welcome the first time someone writes to her, and always the time.
pub fn carol_reply(text: &str, sender: &str, first_contact: bool, now: NaiveTime) -> String {
    let w = words(text);
    let t = hh_mm(now);
    if first_contact {
        return format!(
            "welcome to {NETWORK_NAME}, {sender}! I'm carol. it's {t} here; ask me the time \
             whenever you like"
        );
    }
    if w.iter()
        .any(|x| matches!(x.as_str(), "time" | "clock" | "late" | "early"))
    {
        let part = match now.hour() {
            5..=11 => "morning",
            12..=16 => "afternoon",
            17..=21 => "evening",
            _ => "night",
        };
        return format!("it's {t}, {part} on my clock");
    }
    if is_greeting(&w) {
        return format!("hello again, {sender}! it's {t}");
    }
    if is_thanks(&w) {
        return format!("my pleasure. (it's {t}, in case you wondered)");
    }
    format!("got it, {sender}. it's {t} now, by the way")
}

/// What a bot posts on its own, the `n`th time.
pub fn periodic_post(bot: Bot, n: usize, now: NaiveTime) -> String {
    const ALICE: [&str; 5] = [
        "tip: Ctrl-K opens the quick switcher; type a few letters of a name",
        "tip: /search finds any message in your local encrypted cache",
        "tip: F1 shows every key binding and command",
        "tip: /theme light if your terminal has a bright background",
        "tip: /keys vim switches to vim-style keys (Esc, i, :)",
    ];
    const BOB: [&str; 5] = [
        "just pushed to main on a Friday. what could go wrong",
        "coffee number three. or four. I lost count, which is unusual for me",
        "reminder: I twist whatever you send me. go on, try",
        "my terminal has 256 colours and I use two",
        "sent from my tmux session",
    ];
    match bot {
        Bot::Alice => ALICE[n % ALICE.len()].to_owned(),
        Bot::Bob => BOB[n % BOB.len()].to_owned(),
        Bot::Carol => {
            let t = hh_mm(now);
            match n % 3 {
                0 => format!("{t}: time to stretch your legs"),
                1 => format!("it's {t}. have you had some water?"),
                _ => format!("{t} check-in: the relay is humming along"),
            }
        }
    }
}

/// What a bot posts in the demo room the `n`th time, and its timers: now and then carol's
/// message burns 30 seconds after it is read and bob's expires after two minutes.
pub fn room_post(bot: Bot, n: usize) -> (String, SendOptions) {
    const ALICE: [&str; 6] = [
        "CI is green on main again",
        "tip: /members (or F2) shows who is in here and who moderates",
        "reminder: on-call handover at 17:00",
        "tip: /burn 30s before a message makes it burn 30 s after it is read",
        "tip: /timer expire 1d makes everything here disappear after a day",
        "the incident review notes are in the wiki",
    ];
    const BOB: [&str; 6] = [
        "deploying billing 4.2 to staging",
        "staging looks fine, promoting to prod",
        "p99 latency back under 120 ms",
        "who touched the cron of the reports job?",
        "rolling back the feature flag, one sec",
        "prod deploy done, watching the error rate",
    ];
    const CAROL: [&str; 6] = [
        "queue depth is 12, all good",
        "the nightly backup finished in 4 minutes",
        "disk on db-2 at 71%, keeping an eye on it",
        "certificate renewal done for the demo domain",
        "status page updated",
        "no alerts in the last hour",
    ];
    let plain = SendOptions::default();
    match bot {
        Bot::Alice => (ALICE[n % ALICE.len()].to_owned(), plain),
        Bot::Bob if n % 6 == 1 => (
            format!(
                "this one expires {} after I sent it: watch the countdown",
                session::format_duration(LIVE_EXPIRE_SECS.into())
            ),
            SendOptions {
                expire_after: Some(LIVE_EXPIRE_SECS),
                burn_after: None,
            },
        ),
        Bot::Bob => (BOB[n % BOB.len()].to_owned(), plain),
        Bot::Carol if n.is_multiple_of(6) => (
            format!(
                "burn after reading: the test account's one-time code is {}{}{}{} ({}s once you've seen it)",
                n % 10,
                (n + 3) % 10,
                (n + 7) % 10,
                (n + 1) % 10,
                DEMO_BURN_SECS
            ),
            SendOptions {
                expire_after: None,
                burn_after: Some(DEMO_BURN_SECS),
            },
        ),
        Bot::Carol => (CAROL[n % CAROL.len()].to_owned(), plain),
    }
}

/// The room's history, sent before the UI opens (after alice created it and made you a
/// moderator): who says what, with which timers.
fn room_fill(me: &str) -> Vec<(Bot, String, SendOptions)> {
    let plain = SendOptions::default();
    vec![
        (
            Bot::Bob,
            "morning all. billing deploy at 10:00, I'll post progress here".to_owned(),
            plain,
        ),
        (
            Bot::Carol,
            "I'll watch the queue depth while it rolls out".to_owned(),
            plain,
        ),
        (
            Bot::Alice,
            format!(
                "welcome to #{ROOM_TITLE}, {me}! you're a moderator: /members (F2) lists us, \
                 /invite, /kick and /topic work here. mention one of us to get an answer"
            ),
            plain,
        ),
        (
            Bot::Bob,
            format!(
                "this message expires {} after I sent it",
                session::format_duration(FILL_EXPIRE_SECS.into())
            ),
            SendOptions {
                expire_after: Some(FILL_EXPIRE_SECS),
                burn_after: None,
            },
        ),
        (
            Bot::Carol,
            format!(
                "burn after reading: the staging door code is 4711 (gone {DEMO_BURN_SECS}s after \
                 you open the room)"
            ),
            SendOptions {
                expire_after: None,
                burn_after: Some(DEMO_BURN_SECS),
            },
        ),
    ]
}

/// Who says what in the conversation filled in before the UI opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Speaker {
    /// You, to the given bot.
    Me(Bot),
    /// The bot, to you.
    Bot(Bot),
}

/// The conversation sent through the relay before the UI opens: carol and bob first, then
/// alice, so alice's conversation is the most recent one when the UI opens.
fn fill_script(me: &str) -> Vec<(Speaker, String)> {
    use Bot::{Alice, Bob, Carol};
    use Speaker::{Bot as B, Me};
    let bob_hello = "ok bob, show me what you do";
    let lines: Vec<(Speaker, String)> = vec![
        (
            B(Carol),
            carol_reply("", me, true, chrono::Local::now().time()),
        ),
        (
            B(Carol),
            "the others are here too: alice knows the tricks, bob plays with words".to_owned(),
        ),
        (
            B(Bob),
            format!("hey {me}, I'm bob. I repeat what you say, with a twist"),
        ),
        (Me(Bob), bob_hello.to_owned()),
        (B(Bob), bob_reply(bob_hello, Twist::Reverse)),
        (B(Alice), format!("hey {me}! welcome to Cinder 👋")),
        (
            Me(Alice),
            "hi alice! so this is the encrypted chat everyone is talking about?".to_owned(),
        ),
        (
            B(Alice),
            "yep. every message is end-to-end encrypted; the relay only ever sees ciphertext"
                .to_owned(),
        ),
        (Me(Alice), "even on this demo relay?".to_owned()),
        (
            B(Alice),
            "even here: it's a real relay, running on 127.0.0.1 inside your terminal session"
                .to_owned(),
        ),
        (Me(Alice), "nice. how do I talk to someone else?".to_owned()),
        (
            B(Alice),
            "type /dm bob (or /dm carol) and press Enter".to_owned(),
        ),
        (Me(Alice), "and to jump between conversations?".to_owned()),
        (
            B(Alice),
            "Ctrl-K opens the quick switcher: type a few letters of a name".to_owned(),
        ),
        (Me(Alice), "can I find old messages?".to_owned()),
        (
            B(Alice),
            "/search WORDS looks through everything in your encrypted local cache".to_owned(),
        ),
        (Me(Alice), "I didn't have to type a passphrase".to_owned()),
        (
            B(Alice),
            "the demo unlocked your profile for you; normally Cinder asks before it opens the \
             cache"
                .to_owned(),
        ),
        (Me(Alice), "I'm more of a vim person".to_owned()),
        (
            B(Alice),
            "then try /keys vim. and /theme light if your terminal is bright".to_owned(),
        ),
        (Me(Alice), "and if I forget all this?".to_owned()),
        (
            B(Alice),
            "F1 shows every key and command; Esc closes it".to_owned(),
        ),
        (Me(Alice), "thanks alice!".to_owned()),
        (
            B(Alice),
            "any time. bob twists your words, carol always knows the time".to_owned(),
        ),
        (
            B(Alice),
            "say 'help' to me whenever you want these tips again".to_owned(),
        ),
    ];
    lines
}

/// A random passphrase, held in memory only; ASCII because the UI takes it as text.
fn random_passphrase() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(primitives::random_array::<24>()?);
    let mut text = Zeroizing::new(String::with_capacity(48));
    hex::encode_into(&mut text, bytes.as_slice());
    // Moves the buffer (no copy) so the only copy is the one wiped on drop.
    Ok(Zeroizing::new(std::mem::take(&mut *text).into_bytes()))
}

/// A uniformly random duration in `[lo, hi]` milliseconds.
fn jitter_ms(lo: u64, hi: u64) -> Duration {
    let r = primitives::random_array::<4>()
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    Duration::from_millis(lo + u64::from(r) % (hi.saturating_sub(lo) + 1))
}

/// One demo user: its engine and the task that answers for it.
struct BotRunner {
    bot: Bot,
    handle: SessionHandle,
    task: Option<JoinHandle<()>>,
}

/// Everything the demo started; [`Demo::stop`] takes it down in order. If the demo future is
/// dropped instead (a panic), the relay handle's drop guard, the cancellation token's drop
/// guard and the engines' closed channels still stop everything, and the caller's `TempDir`
/// removes the files.
struct Demo {
    root: PathBuf,
    me: String,
    relay: Option<RelayHandle>,
    bots: Vec<BotRunner>,
    cancel: CancellationToken,
    _cancel_on_drop: tokio_util::sync::DropGuard,
}

impl Demo {
    fn new(root: &Path, me: String) -> Self {
        let cancel = CancellationToken::new();
        Self {
            root: root.to_path_buf(),
            me,
            relay: None,
            bots: Vec::new(),
            _cancel_on_drop: cancel.clone().drop_guard(),
            cancel,
        }
    }

    /// Stops the bots (their engines close their caches), then the relay.
    async fn stop(&mut self) {
        self.cancel.cancel();
        for b in &mut self.bots {
            if let Some(t) = b.task.take() {
                let _ = t.await;
            }
            b.handle.shutdown().await;
        }
        self.bots.clear();
        if let Some(r) = self.relay.take()
            && let Err(e) = r.shutdown().await
        {
            tracing::warn!("demo relay shutdown: {e}");
        }
    }
}

/// A running engine plus the events it reported since it started.
struct Party {
    handle: SessionHandle,
    events: broadcast::Receiver<SessionEvent>,
}

async fn open_engine(dir: &Path, pass: &Zeroizing<Vec<u8>>) -> anyhow::Result<Party> {
    let (d, p) = (dir.to_path_buf(), pass.clone());
    let store = tokio::task::spawn_blocking(move || session::unlock(&d, &p)).await??;
    let handle = session::spawn(
        store,
        EngineOptions {
            auto_reconnect: true,
            reconnect_max: RECONNECT_MAX,
            ca_pem: None,
            clock_offset_ms: 0,
            clock: crate::clock::Clock::system(),
        },
    )?;
    let events = handle.subscribe();
    Ok(Party { handle, events })
}

async fn register_demo_user(
    url: &str,
    invite: &str,
    username: &str,
    display_name: &str,
    dir: &Path,
    pass: &Zeroizing<Vec<u8>>,
) -> anyhow::Result<()> {
    register(
        dir,
        RegisterOptions {
            server_url: url.to_owned(),
            invite: invite.to_owned(),
            username: username.to_owned(),
            display_name: Some(display_name.to_owned()),
            passphrase: pass.clone(),
            // Cheap key derivation is acceptable ONLY because every demo profile is throwaway:
            // it lives in a temporary directory that is deleted when the demo ends, and its
            // random passphrase exists only in this process's memory.
            kdf: KdfParams::INSECURE_FOR_TESTS,
            allow_insecure_ws: false,
            ca_pem: None,
            clock: crate::clock::Clock::system(),
        },
    )
    .await
    .with_context(|| format!("the demo could not register {username}"))?;
    Ok(())
}

/// Waits until the engine behind `events` has received the message `id`.
async fn wait_delivered(
    events: &mut broadcast::Receiver<SessionEvent>,
    id: [u8; 16],
    who: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(anyhow!(
                    "a demo message to {who} did not arrive within {} seconds",
                    DELIVERY_TIMEOUT.as_secs()
                ));
            }
            Ok(Ok(SessionEvent::Message(m))) if m.message_id == id => return Ok(()),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err(anyhow!("{who}'s demo session stopped"));
            }
        }
    }
}

/// Sets up the network and the conversation; returns your passphrase for the UI.
async fn set_up(demo: &mut Demo) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let me = demo.me.clone();
    let mut config = RelayConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        demo.root.join("relay"),
    );
    config.network_name = Some(NETWORK_NAME.to_owned());
    let relay = relay::start(config)
        .await
        .context("the demo could not start its relay")?;
    let url = relay.url();
    let admin_invite = relay
        .admin_invite()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the demo relay did not create a new network"))?;
    demo.relay = Some(relay);
    eprintln!("cinder demo: relay on {url} (network \"{NETWORK_NAME}\")");
    eprintln!(
        "cinder demo: registering {me}, alice, bob and carol in {}",
        demo.root.display()
    );

    let profiles = demo.root.join("profiles");
    let my_pass = random_passphrase()?;
    let my_dir = profiles.join(&me);
    register_demo_user(&url, &admin_invite, &me, &me, &my_dir, &my_pass).await?;
    let mut you = open_engine(&my_dir, &my_pass).await?;

    let mut parties = Vec::new();
    for bot in Bot::ALL {
        let code = you
            .handle
            .create_invite(&format!("{}@demo.invalid", bot.name()), false)
            .await
            .with_context(|| format!("the demo could not invite {}", bot.name()))?;
        let pass = random_passphrase()?;
        let dir = profiles.join(bot.name());
        register_demo_user(&url, &code, bot.name(), bot.display_name(), &dir, &pass).await?;
        let party = open_engine(&dir, &pass).await?;
        demo.bots.push(BotRunner {
            bot,
            handle: party.handle.clone(),
            task: None,
        });
        parties.push((bot, party));
    }

    eprintln!("cinder demo: filling a conversation");
    for (speaker, text) in fill_script(&me) {
        let (bot, from_me) = match speaker {
            Speaker::Me(b) => (b, true),
            Speaker::Bot(b) => (b, false),
        };
        let Some((_, party)) = parties.iter_mut().find(|(b, _)| *b == bot) else {
            continue;
        };
        let (from, to, to_name) = if from_me {
            (&you.handle, &mut party.events, bot.name())
        } else {
            (&party.handle, &mut you.events, me.as_str())
        };
        let id = from.send_text(to_name, &text).await?;
        from.flush().await?;
        wait_delivered(to, id, to_name).await?;
    }
    // The demo users have read what you wrote: your messages carry the read mark.
    for (bot, party) in &parties {
        party
            .handle
            .mark_read(&names::dm_conversation(bot.name(), &me))
            .await?;
        party.handle.flush().await?;
    }
    eprintln!("cinder demo: opening the room \"{ROOM_TITLE}\"");
    let room = fill_room(&me, &mut you, &parties).await?;
    // Everything is in your cache; close it so the UI can take the profile lock.
    you.handle.flush().await?;
    you.handle.sync().await?;
    you.handle.shutdown().await;
    drop(parties);

    for runner in &mut demo.bots {
        let events = runner.handle.subscribe();
        runner.task = Some(tokio::spawn(bot_loop(
            runner.bot,
            runner.handle.clone(),
            events,
            Chat {
                me: me.clone(),
                room: room.clone(),
            },
            demo.cancel.clone(),
        )));
    }
    Ok(my_pass)
}

/// alice creates the room with all of you, makes you a moderator, and the room's history is
/// sent through the relay; returns the room id.
async fn fill_room(me: &str, you: &mut Party, parties: &[(Bot, Party)]) -> anyhow::Result<String> {
    let party = |bot: Bot| {
        parties
            .iter()
            .find(|(b, _)| *b == bot)
            .map(|(_, p)| &p.handle)
            .ok_or_else(|| anyhow!("the demo lost {}", bot.name()))
    };
    let alice = party(Bot::Alice)?;
    let members = [
        me.to_owned(),
        Bot::Bob.name().to_owned(),
        Bot::Carol.name().to_owned(),
    ];
    let info = alice
        .create_room(
            RoomKind::Room,
            ROOM_TITLE,
            "the demo's on-call room: deploys, alerts and chatter",
            &members,
        )
        .await
        .context("the demo could not create its room")?;
    let room = info.room_id;
    alice
        .change_room(&room, RoomRequest::Promote(me.to_owned()))
        .await
        .context("the demo could not make you a moderator of its room")?;
    // Everyone learns the membership before the first message.
    you.handle.sync().await?;
    for (_, p) in parties {
        p.handle.sync().await?;
    }
    for (bot, text, opts) in room_fill(me) {
        let from = party(bot)?;
        let q = from.send_message(&room, &text, opts).await?;
        from.flush().await?;
        wait_delivered(&mut you.events, q.message_id, me).await?;
    }
    Ok(room)
}

/// Who a bot talks to: you directly, and the demo room.
#[derive(Clone, Debug)]
struct Chat {
    me: String,
    room: String,
}

/// Answers messages from people (in the room only when they mention the bot), posts to you
/// now and then and chatters in the room every few seconds, until cancelled.
async fn bot_loop(
    bot: Bot,
    handle: SessionHandle,
    mut events: broadcast::Receiver<SessionEvent>,
    chat: Chat,
    cancel: CancellationToken,
) {
    let Chat { me, room } = chat;
    let mut twist = Twist::Shout;
    // Carol greeted you during the fill.
    let mut greeted: HashSet<String> = HashSet::from([me.clone()]);
    let mut posts = 0usize;
    let mut next_post = tokio::time::Instant::now() + jitter_ms(30_000, 60_000);
    let mut room_posts = 0usize;
    let mut next_room_post = tokio::time::Instant::now() + jitter_ms(2_000, ROOM_POST_MS.1);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(next_post) => {
                let text = periodic_post(bot, posts, chrono::Local::now().time());
                posts += 1;
                if let Err(e) = handle.send_text(&me, &text).await {
                    tracing::debug!("{} could not post: {e}", bot.name());
                }
                next_post = tokio::time::Instant::now() + jitter_ms(30_000, 60_000);
            }
            () = tokio::time::sleep_until(next_room_post) => {
                let (text, opts) = room_post(bot, room_posts);
                room_posts += 1;
                if let Err(e) = handle.send_message(&room, &text, opts).await {
                    tracing::debug!("{} could not post in the room: {e}", bot.name());
                }
                next_room_post =
                    tokio::time::Instant::now() + jitter_ms(ROOM_POST_MS.0, ROOM_POST_MS.1);
            }
            ev = events.recv() => match ev {
                Ok(SessionEvent::Message(m))
                    if m.kind == MessageKind::Text && should_answer(&m.sender, m.outgoing) =>
                {
                    let in_room = session::is_room(&m.conversation);
                    // A room is busy enough: answer there only when spoken to.
                    if in_room && !mentions(&m.text, bot.name()) {
                        continue;
                    }
                    let reply = match bot {
                        Bot::Alice => alice_reply(&m.text, &m.sender),
                        Bot::Bob => {
                            twist = twist.next();
                            bob_reply(&m.text, twist)
                        }
                        Bot::Carol => {
                            let first = greeted.insert(m.sender.clone());
                            carol_reply(&m.text, &m.sender, first, chrono::Local::now().time())
                        }
                    };
                    // A short pause reads as typing; the reply still lands well within a second.
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(jitter_ms(150, 450)) => {}
                    }
                    if !in_room {
                        // Read what you wrote (you get the read mark, where the network
                        // allows read receipts).
                        if let Err(e) = handle.mark_read(&m.conversation).await {
                            tracing::debug!("{} could not mark read: {e}", bot.name());
                        }
                    }
                    let to = if in_room { &m.conversation } else { &m.sender };
                    // Queued durably and sent at once when connected, or on reconnect.
                    if let Err(e) = handle.send_text(to, &reply).await {
                        tracing::debug!("{} could not answer: {e}", bot.name());
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

/// Sets up, runs the UI, and returns the UI's outcome (cleanup is the caller's).
async fn set_up_and_run(demo: &mut Demo, opts: &DemoOptions) -> anyhow::Result<()> {
    // Ctrl-C during set-up (before the UI puts the terminal in raw mode) stops the demo cleanly.
    let pass = tokio::select! {
        r = set_up(demo) => r?,
        _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted before the demo started")),
    };
    eprintln!(
        "cinder demo: opening the UI as {} (Ctrl-C or /quit leaves; F1 for help)",
        demo.me
    );
    let ui = run(TuiOptions {
        profile_dir: demo.root.join("profiles").join(&demo.me),
        theme: opts.theme.clone(),
        keymap: opts.keymap.clone(),
        config_dir: opts.config_dir.clone(),
        bell: true,
        desktop_notifications: false,
        mouse: true,
        reconnect_max: RECONNECT_MAX,
        passphrase: Some(pass),
    });
    tokio::select! {
        r = ui => r.context("the demo UI stopped")?,
        // In raw mode Ctrl-C is a key the UI handles; this is for a SIGINT from elsewhere.
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// `cinder demo`: an embedded relay on loopback, a demo network with three demo users who
/// talk back, a filled conversation, and the UI signed in as you; everything is removed when
/// the UI closes unless `keep` is set.
///
/// # Security
/// The demo profiles use the test-only cheap key derivation
/// ([`KdfParams::INSECURE_FOR_TESTS`]); that is acceptable only because they are throwaway
/// profiles in a temporary directory with random passphrases held in memory. Never point real
/// data at the demo.
///
/// # Errors
/// [`UsageError`] without a terminal; otherwise one sentence naming the step that failed
/// (relay, registration, the filled conversation, the UI). Everything started is stopped and
/// the temporary directory removed in every case.
pub async fn run_demo(opts: DemoOptions) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(UsageError("the demo needs an interactive terminal".into()).into());
    }
    let tmp = tempfile::Builder::new()
        .prefix("cinder-demo-")
        .tempdir()
        .context("the demo could not create its temporary directory")?;
    let me = demo_username(std::env::var("USER").ok().as_deref());
    let mut demo = Demo::new(tmp.path(), me);
    let outcome = set_up_and_run(&mut demo, &opts).await;
    demo.stop().await;
    if opts.keep {
        let dir = tmp.keep();
        eprintln!(
            "cinder demo: kept {} (the relay's data and the encrypted profiles; their random \
             passphrases were never written down, so the caches stay sealed)",
            dir.display()
        );
    } else {
        let shown = tmp.path().display().to_string();
        match tmp.close() {
            Ok(()) => eprintln!("cinder demo: stopped; removed {shown}"),
            Err(e) => eprintln!("cinder demo: could not remove {shown}: {e}"),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn username_comes_from_user_unless_unusable() {
        assert_eq!(demo_username(Some("Dana")), "dana");
        assert_eq!(demo_username(Some("j.doe-2")), "j.doe-2");
        for bad in [
            None,
            Some(""),
            Some("x"),
            Some("Alice"),
            Some("bob"),
            Some("a b"),
            Some("ålice"),
        ] {
            assert_eq!(demo_username(bad), "you", "{bad:?}");
        }
    }

    #[test]
    fn bots_answer_people_only() {
        assert!(should_answer("dana", false));
        assert!(
            !should_answer("dana", true),
            "never its own outgoing messages"
        );
        for b in Bot::ALL {
            assert!(
                !should_answer(b.name(), false),
                "never another bot: no loops"
            );
        }
    }

    #[test]
    fn alice_answers_help_greetings_questions_and_thanks() {
        let help = alice_reply("help", "dana");
        for needle in [
            "/dm",
            "/search",
            "Ctrl-K",
            "F1",
            "/theme light",
            "/keys vim",
        ] {
            assert!(help.contains(needle), "{needle} in {help}");
        }
        assert_eq!(alice_reply("can you HELP me?", "dana"), help);
        assert!(alice_reply("Hello!", "dana").starts_with("hi dana! "));
        assert!(alice_reply("good morning", "dana").starts_with("hi dana! "));
        let how = alice_reply("hey, how are you?", "dana");
        assert!(how.starts_with("hi dana! doing great"), "{how}");
        assert!(alice_reply("how is it encrypted", "dana").contains("AES-256-GCM"));
        assert!(alice_reply("how do I switch?", "dana").contains("/dm"));
        assert!(alice_reply("what time is it", "dana").contains("carol"));
        assert!(alice_reply("what does the relay see?", "dana").contains("ciphertext"));
        assert!(alice_reply("What is this", "dana").contains("end-to-end encrypted"));
        assert!(alice_reply("why?", "dana").starts_with("because"));
        assert!(alice_reply("thanks!", "dana").starts_with("you're welcome"));
        assert!(alice_reply("is it fast?", "dana").starts_with("good question"));
        let other = alice_reply("the weather is nice", "dana");
        assert!(!other.is_empty());
        assert_eq!(
            other,
            alice_reply("the weather is nice", "dana"),
            "deterministic"
        );
        // "history" contains "hi" but is not a greeting; "whatever" is not a question word.
        assert!(!alice_reply("history whatever", "dana").starts_with("hi "));
    }

    #[test]
    fn bob_twists_and_counts() {
        assert_eq!(
            bob_reply("hello there world", Twist::Reverse),
            "world there hello: that's you, backwards (17 characters)"
        );
        assert_eq!(
            bob_reply("hello", Twist::Reverse),
            "olleh: that's you, backwards (5 characters)"
        );
        assert_eq!(
            bob_reply("ship it", Twist::Shout),
            "SHIP IT! (7 characters, I counted)"
        );
        assert_eq!(bob_reply("ü", Twist::Shout), "Ü! (1 character, I counted)");
        assert!(bob_reply("   ", Twist::Shout).starts_with("nothing to twist"));
        let long = "a".repeat(1000);
        let r = bob_reply(&long, Twist::Shout);
        assert!(r.contains("1000 characters"));
        assert!(
            r.chars().count() < 260,
            "long input is shortened: {}",
            r.len()
        );
        assert_eq!(Twist::Reverse.next(), Twist::Shout);
        assert_eq!(Twist::Shout.next(), Twist::Reverse);
    }

    #[test]
    fn carol_greets_newcomers_and_tells_the_time() {
        let first = carol_reply("hi", "dana", true, t(9, 5));
        assert!(first.contains("welcome to Cinder demo, dana"), "{first}");
        assert!(first.contains("09:05"));
        assert_eq!(
            carol_reply("what time is it?", "dana", false, t(14, 30)),
            "it's 14:30, afternoon on my clock"
        );
        assert_eq!(
            carol_reply("hey carol", "dana", false, t(23, 59)),
            "hello again, dana! it's 23:59"
        );
        assert!(carol_reply("thanks", "dana", false, t(7, 0)).contains("07:00"));
        assert!(carol_reply("ok", "dana", false, t(18, 1)).contains("18:01"));
    }

    #[test]
    fn periodic_posts_cycle_and_differ() {
        for bot in Bot::ALL {
            let a = periodic_post(bot, 0, t(10, 0));
            let b = periodic_post(bot, 1, t(10, 0));
            assert!(!a.is_empty() && a != b, "{bot:?}");
        }
        assert!(periodic_post(Bot::Carol, 0, t(10, 0)).contains("10:00"));
    }

    #[test]
    fn fill_script_is_a_real_conversation() {
        let s = fill_script("dana");
        let with = |b: Bot| {
            s.iter()
                .filter(|(sp, _)| matches!(sp, Speaker::Me(x) | Speaker::Bot(x) if *x == b))
                .count()
        };
        assert!(
            (18..=24).contains(&with(Bot::Alice)),
            "{}",
            with(Bot::Alice)
        );
        assert!((2..=4).contains(&with(Bot::Bob)));
        assert!((2..=3).contains(&with(Bot::Carol)));
        assert!(s.iter().any(|(sp, _)| *sp == Speaker::Me(Bot::Alice)));
        assert!(s.iter().all(|(_, text)| !text.trim().is_empty()));
        // Alice's conversation comes last so it is the most recent when the UI opens.
        assert_eq!(s.last().map(|(sp, _)| *sp), Some(Speaker::Bot(Bot::Alice)));
    }

    #[test]
    fn the_room_burns_and_expires_now_and_then() {
        let timed = |bot: Bot| {
            (0..12)
                .map(|n| room_post(bot, n).1)
                .filter(|o| *o != SendOptions::default())
                .collect::<Vec<_>>()
        };
        assert!(timed(Bot::Alice).is_empty());
        let carol = timed(Bot::Carol);
        assert_eq!(carol.len(), 2);
        assert!(carol.iter().all(|o| o.burn_after == Some(DEMO_BURN_SECS)));
        let bob = timed(Bot::Bob);
        assert_eq!(bob.len(), 2);
        assert!(bob.iter().all(|o| o.expire_after == Some(LIVE_EXPIRE_SECS)));
        // Carol's first post burns, bob's second expires: both show up soon after the start.
        assert!(room_post(Bot::Carol, 0).0.starts_with("burn after reading"));
        assert!(room_post(Bot::Bob, 1).0.contains("expires"));
        let fill = room_fill("dana");
        assert!(fill.iter().any(|(_, _, o)| o.burn_after.is_some()));
        assert!(fill.iter().any(|(_, _, o)| o.expire_after.is_some()));
        assert!(fill.iter().any(|(_, t, _)| t.contains("dana")));
    }

    #[test]
    fn passphrases_are_random_ascii() {
        let a = random_passphrase().unwrap();
        let b = random_passphrase().unwrap();
        assert_eq!(a.len(), 48);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(*a, *b);
        let j = jitter_ms(30_000, 60_000);
        assert!((30_000..=60_000).contains(&(j.as_millis() as u64)));
    }

    /// Waits for the next direct message from `from` (ignoring others' posts and the room).
    async fn next_from(
        events: &mut broadcast::Receiver<SessionEvent>,
        from: &str,
    ) -> crate::store::MessageRecord {
        next_where(events, |m| {
            m.sender == from && !session::is_room(&m.conversation)
        })
        .await
    }

    /// Waits for the next message that `pred` accepts.
    async fn next_where(
        events: &mut broadcast::Receiver<SessionEvent>,
        pred: impl Fn(&crate::store::MessageRecord) -> bool,
    ) -> crate::store::MessageRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(SessionEvent::Message(m))) if pred(&m) => return m,
                Ok(Ok(_)) => {}
                other => panic!("no such message: {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_network_is_filled_and_the_bots_talk_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut demo = Demo::new(tmp.path(), "dana".into());
        let pass = set_up(&mut demo).await.unwrap();
        // The profile lock is free for the UI.
        let store = session::unlock(&tmp.path().join("profiles/dana"), &pass).unwrap();
        let h = session::spawn(
            store,
            EngineOptions {
                auto_reconnect: true,
                reconnect_max: RECONNECT_MAX,
                ca_pem: None,
                clock_offset_ms: 0,
                clock: crate::clock::Clock::system(),
            },
        )
        .unwrap();
        let mut events = h.subscribe();
        assert_eq!(h.account().network_name, NETWORK_NAME);
        let alice = h.history("dm:alice:dana", 100).await.unwrap();
        assert!(alice.len() >= 18, "{}", alice.len());
        assert!(alice.iter().any(|m| m.outgoing) && alice.iter().any(|m| !m.outgoing));
        assert!(alice.iter().any(|m| m.text.contains("Ctrl-K")));
        assert!(h.history("dm:bob:dana", 10).await.unwrap().len() >= 2);
        assert!(h.history("dm:carol:dana", 10).await.unwrap().len() >= 2);
        // You registered first with the admin invite, so you can invite people.
        h.create_invite("erin@demo.invalid", false).await.unwrap();
        // The room: all four of you, you moderate it, its history has both kinds of timer.
        let rooms = h.rooms().await.unwrap();
        let ops = rooms.iter().find(|r| r.title == ROOM_TITLE).unwrap();
        assert_eq!(ops.members.len(), 4);
        assert_eq!(ops.my_role, Some(session::Role::Moderator));
        let history = h.history(&ops.room_id, 100).await.unwrap();
        assert!(
            history
                .iter()
                .any(|m| m.kind == MessageKind::System && m.text.contains("created"))
        );
        assert!(
            history
                .iter()
                .any(|m| m.timers.burn_after_s == Some(DEMO_BURN_SECS))
        );
        assert!(
            history
                .iter()
                .any(|m| m.timers.expire_after_s == Some(FILL_EXPIRE_SECS)
                    && m.timers.expire_at_ms.is_some())
        );

        h.send_text("alice", "help").await.unwrap();
        assert_eq!(next_from(&mut events, "alice").await.text, help_text());
        h.send_text("bob", "ship it").await.unwrap();
        let bob = next_from(&mut events, "bob").await.text;
        assert!(bob.contains("(7 characters"), "{bob}");
        h.send_text("carol", "what time is it?").await.unwrap();
        let carol = next_from(&mut events, "carol").await.text;
        assert!(carol.contains("on my clock"), "{carol}");
        // One answer per message: nothing else arrives directly (periodic posts start after
        // 30 s; the room chatters all the time).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut extra = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let SessionEvent::Message(m) = ev
                && !session::is_room(&m.conversation)
            {
                extra.push(m.text);
            }
        }
        assert!(extra.is_empty(), "unexpected messages: {extra:?}");
        // In the room, the bots post on their own and answer when mentioned.
        let room = ops.room_id.clone();
        let chatter = next_where(&mut events, |m| m.conversation == room && !m.outgoing).await;
        assert!(Bot::ALL.iter().any(|b| b.name() == chatter.sender));
        h.send_text(&room, "alice: help please").await.unwrap();
        let answer = next_where(&mut events, |m| {
            m.conversation == room && m.sender == "alice" && m.text == help_text()
        })
        .await;
        assert_eq!(answer.kind, MessageKind::Text);

        h.shutdown().await;
        demo.stop().await;
        assert!(demo.relay.is_none() && demo.bots.is_empty());
    }

    #[tokio::test]
    async fn a_failed_step_says_which_and_stops_what_started() {
        let tmp = tempfile::tempdir().unwrap();
        // A regular file where the relay's data directory should go.
        let root = tmp.path().join("not-a-directory");
        std::fs::write(&root, b"x").unwrap();
        let mut demo = Demo::new(&root, "dana".into());
        let e = set_up(&mut demo).await.unwrap_err();
        assert_eq!(e.to_string(), "the demo could not start its relay");
        demo.stop().await;
        assert!(demo.relay.is_none() && demo.bots.is_empty());
    }
}
