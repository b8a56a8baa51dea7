//! The UI state and the one place it changes: [`App::update`] (and [`App::on_event`] for what
//! arrives from the session engine or from finished background work).
//!
//! `update` never awaits anything: work that takes time (sending, loading history, searching,
//! unlocking the cache, changing a room) is returned as [`Effect`]s, which the event loop runs in
//! the background; their results come back as [`UiEvent`]s.
//!
//! Timed messages: the app keeps a wall clock (`now_ms`, set by every [`UiEvent::Tick`], so tests
//! can fix it). A tick redraws only when a countdown badge that the last draw showed would read
//! differently ([`badge`]), and drops messages whose deadline has passed from every view at once,
//! before the engine's `Shredded` event confirms they are gone from the cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::action::{self, Action, Command, TimerChange};
use super::complete;
use super::keymap::{Keymap, Mode};
use super::theme::Theme;
use crate::protocol::names::{self, ConversationId};
use crate::session::{self, Policy, Role, RoomInfo, RoomKind, SendOptions, SessionEvent};
use crate::session::{
    ConversationSummary, MessageKind, MessageRecord, MessageState, MessageTimers,
};

/// How many messages a conversation view loads at a time.
pub const PAGE: usize = 200;
/// Composer input history entries kept.
const INPUT_HISTORY: usize = 200;

/// The sidebar's sections, in the order they are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConvKind {
    /// A 1:1 conversation.
    Direct,
    /// A group DM (every member equal).
    Group,
    /// A moderated room.
    Room,
}

impl ConvKind {
    /// The kind of a conversation id (`dm:...`, `group:...`, `room:...`).
    pub fn of(conversation: &str) -> Self {
        match ConversationId::parse(conversation) {
            Some(ConversationId::Room(id)) if id.starts_with(names::GROUP_PREFIX) => {
                ConvKind::Group
            }
            Some(ConversationId::Room(_)) => ConvKind::Room,
            _ => ConvKind::Direct,
        }
    }

    /// The sidebar header of this section.
    pub fn label(self) -> &'static str {
        match self {
            ConvKind::Direct => "Direct",
            ConvKind::Group => "Groups",
            ConvKind::Room => "Rooms",
        }
    }
}

/// One conversation in the sidebar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvItem {
    /// Conversation id, e.g. `dm:alice:bob` or `room:<hex>`.
    pub id: String,
    /// What the sidebar shows (the other user, or the room's display name).
    pub title: String,
    /// Unread messages.
    pub unread: u64,
    /// Last activity, ms since the epoch.
    pub last_activity_ms: u64,
    /// Its section.
    pub kind: ConvKind,
    /// A room or group we are no longer a member of (shown dimmed; its history stays).
    pub left: bool,
}

/// A countdown badge of a timed message, as [`badge`] computes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Badge {
    /// What is drawn, e.g. `⏳ 59s` or `🔥 12s`.
    pub text: String,
    /// The burn-on-read countdown is running (drawn in the warning style).
    pub burning: bool,
}

/// Glyph of an expiry countdown (also before a burn-on-read message is read).
pub const EXPIRE_GLYPH: &str = "\u{23f3}";
/// Glyph of a burn-on-read timer.
pub const BURN_GLYPH: &str = "\u{1f525}";

/// The countdown badge of a message at `now_ms`, or `None` for an untimed message.
///
/// - expiring (`expire_at_ms` set, not burning): `⏳ 59s`, counting down to the deadline;
/// - burning (read, `burn_at_ms` set): `🔥 12s`, counting down to the earlier deadline;
/// - burn-on-read not yet started and no expiry: `🔥 30s`, the time it will get once read.
///
/// The seconds are rounded up, so the text changes exactly when the displayed seconds (or, for
/// long timers, minutes and hours of [`session::format_duration`]) change, and a message whose
/// badge would read `0s` is already gone.
pub fn badge(t: &MessageTimers, now_ms: u64) -> Option<Badge> {
    if !t.is_timed() && t.delete_at_ms().is_none() {
        return None;
    }
    let burning = t.burn_at_ms.is_some();
    let (glyph, secs) = match t.delete_at_ms() {
        Some(at) => (
            if burning { BURN_GLYPH } else { EXPIRE_GLYPH },
            at.saturating_sub(now_ms).div_ceil(1000),
        ),
        None => match (t.expire_after_s, t.burn_after_s) {
            (Some(e), _) => (EXPIRE_GLYPH, u64::from(e)),
            (None, Some(b)) => (BURN_GLYPH, u64::from(b)),
            (None, None) => return None,
        },
    };
    Some(Badge {
        text: format!("{glyph} {}", session::format_duration(secs.max(1))),
        burning,
    })
}

/// Whether `text` mentions `me` (`@me` or the bare name as a word), case-insensitively.
pub fn mentions(text: &str, me: &str) -> bool {
    !me.is_empty()
        && text
            .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '-' || c == '_'))
            .any(|w| w.trim_end_matches(['.', '-', '_']).eq_ignore_ascii_case(me))
}

/// The loaded window of one conversation.
#[derive(Clone, Debug, Default)]
pub struct ConvView {
    /// Loaded messages, oldest first.
    pub messages: Vec<MessageRecord>,
    /// Lines scrolled up from the bottom (0 = following the newest message).
    pub scroll: usize,
    /// Index in `messages` of the first message that arrived while the conversation was not in
    /// view (the "new messages" marker).
    pub new_marker: Option<usize>,
    /// Whether older messages may still be in the cache.
    pub more_before: bool,
    /// Whether a history load is in flight.
    pub loading: bool,
    /// Whether the newest page was loaded (a view that only holds messages that arrived live
    /// still needs its history).
    pub loaded: bool,
    /// The next newest page replaces the loaded messages instead of merging into them: events
    /// were missed, so what is loaded may hold messages that are gone.
    pub resync: bool,
    /// Wrapped heights of messages at the last drawn width, so lines scrolled past are
    /// counted without wrapping them again (drawing stays proportional to the window).
    pub heights: RefCell<HeightCache>,
}

impl ConvView {
    /// Removes the messages `gone` says to, keeping the "new messages" marker on the message
    /// it was on (or the next one); returns how many were removed.
    fn remove_where(&mut self, gone: impl Fn(&MessageRecord) -> bool) -> usize {
        let before = self.messages.len();
        let marker = self.new_marker;
        let mut removed_before_marker = 0;
        let mut j = 0;
        let heights = self.heights.get_mut();
        self.messages.retain(|m| {
            let keep = !gone(m);
            if !keep {
                heights.lines.remove(&m.message_id);
                if marker.is_some_and(|k| j < k) {
                    removed_before_marker += 1;
                }
            }
            j += 1;
            keep
        });
        self.new_marker = marker
            .map(|k| k - removed_before_marker)
            .filter(|&k| k < self.messages.len());
        before - self.messages.len()
    }
}

/// Per-message wrapped heights for one width; indices follow `ConvView::messages`.
#[derive(Clone, Debug, Default)]
pub struct HeightCache {
    /// The width the heights are for.
    pub cols: usize,
    /// Body lines per message (without separators), keyed by message id.
    pub lines: HashMap<[u8; 16], u16>,
}

/// Connection state as the status bar shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Not yet connected.
    Connecting,
    /// Logged in.
    Connected,
    /// Waiting to reconnect.
    Reconnecting {
        /// When the next attempt happens.
        at: Instant,
        /// Why we are disconnected.
        reason: String,
    },
    /// Not connected and not retrying.
    Offline(String),
}

/// A transient line in the status bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Whether it is an error.
    pub error: bool,
    /// When it disappears.
    pub until: Instant,
}

/// An overlay drawn above the main screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// The help screen.
    Help {
        /// Lines scrolled.
        scroll: usize,
    },
    /// The quick switcher.
    Switcher {
        /// What the user typed.
        query: String,
        /// Selected row of the filtered list.
        selected: usize,
    },
    /// Search results.
    Search {
        /// The query.
        query: String,
        /// Results, newest first (`None` while searching).
        results: Option<Vec<MessageRecord>>,
        /// Selected row.
        selected: usize,
    },
}

/// The composer.
#[derive(Clone, Debug, Default)]
pub struct Composer {
    /// The text.
    pub text: String,
    /// Cursor, a byte offset on a char boundary.
    pub cursor: usize,
    /// Earlier inputs, oldest first.
    pub history: Vec<String>,
    /// Position while browsing history.
    pub history_pos: Option<usize>,
    /// The unsent text saved when history browsing started.
    pub draft: String,
}

/// A passphrase typed at the lock screen: zeroized when dropped, and `Debug` never shows it (an
/// effect or the app state in a log line or a test failure must not print the passphrase).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Passphrase(Zeroizing<String>);

/// Room for any passphrase a person types, reserved up front: growing a `String` moves it and
/// leaves the old buffer behind unzeroized.
const PASSPHRASE_CAPACITY: usize = 256;

impl Passphrase {
    /// Takes ownership of `s` (its buffer is zeroized on drop from now on).
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The passphrase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when nothing was typed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The passphrase as bytes, moved without a copy.
    pub fn into_bytes(mut self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(std::mem::take(&mut *self.0).into_bytes())
    }

    fn reserve(&mut self, extra: usize) {
        if self.0.capacity() < self.0.len() + extra {
            // Grow by hand: copy into a larger buffer; the old one is zeroized when dropped.
            let mut bigger = String::with_capacity((self.0.len() + extra).max(PASSPHRASE_CAPACITY));
            bigger.push_str(&self.0);
            self.0 = Zeroizing::new(bigger);
        }
    }

    fn push(&mut self, c: char) {
        self.reserve(c.len_utf8());
        self.0.push(c);
    }

    fn push_str(&mut self, s: &str) {
        self.reserve(s.len());
        self.0.push_str(s);
    }

    fn pop(&mut self) {
        self.0.pop();
    }

    fn clear(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.0);
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// The lock screen, shown until the cache is unlocked.
#[derive(Clone, Debug, Default)]
pub struct Lock {
    /// Typed passphrase (never drawn).
    pub input: Passphrase,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// An unlock is running.
    pub busy: bool,
}

/// A change to the current room, as the composer commands ask for it (mirrors
/// `session::RoomRequest`, comparable so tests can check the effects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomChange {
    /// `/invite`
    Invite(Vec<String>),
    /// `/kick`
    Remove(Vec<String>),
    /// `/promote`
    Promote(String),
    /// `/demote`
    Demote(String),
    /// `/leave`
    Leave,
    /// `/topic TEXT`
    Topic(String),
}

/// Work for the event loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Unlock the cache with this passphrase.
    Unlock(Passphrase),
    /// Send a text message.
    Send {
        /// Recipient: a username for direct messages, the room id for rooms and groups.
        to: String,
        /// The text.
        text: String,
        /// Per-message timers (`/expire`, `/burn`); `None` uses the conversation's default.
        opts: SendOptions,
    },
    /// Load the conversation list.
    LoadConversations,
    /// Load every room and group (titles, members, roles).
    LoadRooms,
    /// Create a room or group DM.
    CreateRoom {
        /// Room or group.
        kind: RoomKind,
        /// Title (empty for a group).
        title: String,
        /// Members besides us.
        members: Vec<String>,
    },
    /// Change a room.
    ChangeRoom {
        /// The room id.
        room: String,
        /// What to change.
        change: RoomChange,
    },
    /// Change a conversation's default timers (read the current ones first for a part left
    /// as it is).
    SetTimers {
        /// Which conversation.
        conversation: String,
        /// Expiration default.
        expire: TimerChange,
        /// Burn-on-read default.
        burn: TimerChange,
    },
    /// Read a conversation's default timers.
    LoadTimers {
        /// Which conversation.
        conversation: String,
        /// Say them on the status line (`/timer` without arguments).
        announce: bool,
    },
    /// Load (older) history of a conversation.
    LoadHistory {
        /// Which conversation.
        conversation: String,
        /// Load messages older than this one (None: the newest page).
        before: Option<[u8; 16]>,
    },
    /// Mark a conversation read.
    MarkRead(String),
    /// Search the cache.
    Search(String),
    /// Put a failed message back into the outbox.
    Retry([u8; 16]),
    /// Delete a failed message.
    Discard([u8; 16]),
    /// Ring the terminal bell.
    Bell,
    /// Desktop notification (OSC 777 / OSC 9).
    Notify {
        /// Title.
        title: String,
        /// Body.
        body: String,
    },
    /// Open `$EDITOR` with this text.
    Editor(String),
    /// Leave the program.
    Quit,
}

/// What the event loop feeds back.
#[derive(Clone, Debug)]
pub enum UiEvent {
    /// From the session engine.
    Session(SessionEvent),
    /// The cache is unlocked and the engine runs.
    Unlocked,
    /// Unlocking failed.
    UnlockFailed(String),
    /// Session events were missed (the subscriber lagged): reload everything shown from the
    /// cache.
    Resync,
    /// The conversation list.
    Conversations(Vec<ConversationSummary>),
    /// A page of history (oldest first).
    History {
        /// Which conversation.
        conversation: String,
        /// Whether this page is older than what is loaded.
        older: bool,
        /// The messages.
        messages: Vec<MessageRecord>,
    },
    /// Search results.
    SearchResults {
        /// The query they answer.
        query: String,
        /// Newest first.
        results: Vec<MessageRecord>,
    },
    /// A queued message got its id (shown as "sending" right away).
    Queued(MessageRecord),
    /// Every room and group.
    Rooms(Vec<RoomInfo>),
    /// A room or group we just created.
    RoomCreated(RoomInfo),
    /// A room change went through.
    RoomUpdated {
        /// The room as it is now.
        info: RoomInfo,
        /// What to say on the status line.
        done: String,
    },
    /// A conversation's default timers.
    TimerDefaults {
        /// Which conversation.
        conversation: String,
        /// Expiration default, seconds.
        expire: Option<u32>,
        /// Burn-on-read default, seconds.
        burn: Option<u32>,
        /// Say them on the status line.
        announce: bool,
    },
    /// Something worked; one sentence for the status line.
    Notice(String),
    /// Text from `$EDITOR`.
    EditorText(String),
    /// Something failed; one sentence for the status line.
    Error(String),
    /// A passage of time (countdowns, notices), with the wall clock.
    Tick {
        /// Milliseconds since the Unix epoch.
        now_ms: u64,
    },
}

/// Settings the UI needs besides theme and keymap.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Ring the bell for messages not in view.
    pub bell: bool,
    /// Desktop notifications for messages not in view.
    pub desktop_notifications: bool,
    /// Where user themes live.
    pub theme_dir: Option<PathBuf>,
    /// Where the user's keymap overrides live.
    pub keymap_file: Option<PathBuf>,
    /// Strip colours (NO_COLOR).
    pub no_color: bool,
    /// Offset of local time from UTC, in seconds (for timestamps).
    pub utc_offset_secs: i32,
}

/// The whole UI state.
pub struct App {
    /// Signed-in username (empty while locked).
    pub me: String,
    /// Network name.
    pub network: String,
    /// Sidebar entries, most recent first.
    pub conversations: Vec<ConvItem>,
    /// Selected sidebar entry.
    pub selected: usize,
    /// Loaded conversation windows.
    pub views: HashMap<String, ConvView>,
    /// The composer.
    pub composer: Composer,
    /// Keymap mode.
    pub mode: Mode,
    /// The open overlay.
    pub overlay: Option<Overlay>,
    /// Connection state.
    pub connection: Connection,
    /// Status line notice.
    pub notice: Option<Notice>,
    /// Lock screen (Some while locked).
    pub lock: Option<Lock>,
    /// Colours.
    pub theme: Theme,
    /// Keys.
    pub keymap: Keymap,
    /// Settings.
    pub settings: Settings,
    /// Set when something visible changed.
    pub dirty: bool,
    /// Set when the user asked to quit.
    pub quit: bool,
    /// Height of the conversation area at the last draw (for paging).
    pub page_height: usize,
    /// Rooms and groups by id.
    pub rooms: HashMap<String, RoomInfo>,
    /// Whether the member list is shown (for rooms and groups).
    pub members_open: bool,
    /// Timers for the next message only (`/expire`, `/burn`).
    pub next_timers: SendOptions,
    /// Known default timers (expire, burn) of conversations.
    pub timer_defaults: HashMap<String, (Option<u32>, Option<u32>)>,
    /// The network policy, once the relay told us.
    pub policy: Option<Policy>,
    /// The wall clock, ms since the epoch (from the last tick).
    pub now_ms: u64,
    /// The countdown badges the last draw showed, with the timers they were computed from.
    pub shown_badges: RefCell<Vec<(MessageTimers, String)>>,
    /// The earliest deadline of any loaded message (when the next one must vanish).
    next_deadline: Option<u64>,
    /// Whether the conversation list has loaded; until then nothing is on screen, whatever
    /// arrives live (so a busy room cannot take the first selection).
    listed: bool,
}

/// The wall clock, ms since the epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn peer_of(conversation: &str, me: &str) -> String {
    match ConversationId::parse(conversation) {
        Some(ConversationId::Dm { a, b }) => {
            if a == me {
                b
            } else {
                a
            }
        }
        _ => conversation.to_owned(),
    }
}

fn prev_boundary(s: &str, i: usize) -> usize {
    s[..i].char_indices().next_back().map_or(0, |(j, _)| j)
}

fn next_boundary(s: &str, i: usize) -> usize {
    s[i..].chars().next().map_or(i, |c| i + c.len_utf8())
}

fn word_left(s: &str, i: usize) -> usize {
    let before = &s[..i];
    let trimmed = before.trim_end();
    trimmed.rfind(char::is_whitespace).map_or(0, |j| {
        j + trimmed[j..].chars().next().map_or(1, char::len_utf8)
    })
}

fn word_right(s: &str, i: usize) -> usize {
    let after = &s[i..];
    let skip_ws = after.len() - after.trim_start().len();
    let rest = &after[skip_ws..];
    i + skip_ws + rest.find(char::is_whitespace).unwrap_or(rest.len())
}

impl App {
    /// A locked app (the lock screen asks for the passphrase).
    pub fn new(theme: Theme, keymap: Keymap, settings: Settings) -> Self {
        let mode = keymap.initial_mode();
        let theme = if settings.no_color {
            theme.without_color()
        } else {
            theme
        };
        Self {
            me: String::new(),
            network: String::new(),
            conversations: Vec::new(),
            selected: 0,
            views: HashMap::new(),
            composer: Composer::default(),
            mode,
            overlay: None,
            connection: Connection::Connecting,
            notice: None,
            lock: Some(Lock::default()),
            theme,
            keymap,
            settings,
            dirty: true,
            quit: false,
            page_height: 20,
            rooms: HashMap::new(),
            members_open: false,
            next_timers: SendOptions::default(),
            timer_defaults: HashMap::new(),
            policy: None,
            now_ms: wall_clock_ms(),
            shown_badges: RefCell::new(Vec::new()),
            next_deadline: None,
            listed: false,
        }
    }

    /// Marks the app unlocked for `me` on `network`.
    pub fn unlocked(&mut self, me: &str, network: &str) -> Vec<Effect> {
        self.me = me.to_owned();
        self.network = network.to_owned();
        self.lock = None;
        self.dirty = true;
        vec![Effect::LoadConversations, Effect::LoadRooms]
    }

    /// The selected conversation's id.
    pub fn current(&self) -> Option<&str> {
        self.conversations.get(self.selected).map(|c| c.id.as_str())
    }

    /// Shows a notice in the status bar for a few seconds.
    pub fn say(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
            until: Instant::now() + Duration::from_secs(if error { 8 } else { 4 }),
        });
        self.dirty = true;
    }

    fn select(&mut self, idx: usize) -> Vec<Effect> {
        if self.conversations.is_empty() {
            return Vec::new();
        }
        let idx = idx.min(self.conversations.len() - 1);
        // Whatever the user (or the first conversation list) picked is now on screen.
        self.listed = true;
        // Leaving a conversation: its unread marker is spent.
        if let Some(old) = self.current().map(str::to_owned)
            && let Some(v) = self.views.get_mut(&old)
        {
            v.new_marker = None;
        }
        self.selected = idx;
        self.dirty = true;
        let mut fx = Vec::new();
        let id = self.conversations[idx].id.clone();
        let v = self.views.entry(id.clone()).or_default();
        if !v.loaded && !v.loading {
            v.loading = true;
            v.more_before = true;
            fx.push(Effect::LoadHistory {
                conversation: id.clone(),
                before: None,
            });
            // Rooms bring their defaults with them; a direct conversation's are asked for
            // once, for the composer's title.
            if ConvKind::of(&id) == ConvKind::Direct {
                fx.push(Effect::LoadTimers {
                    conversation: id.clone(),
                    announce: false,
                });
            }
        }
        if self.conversations[idx].unread > 0 {
            self.conversations[idx].unread = 0;
            fx.push(Effect::MarkRead(id));
        }
        fx
    }

    /// The title of a conversation: the other user, or a room's display name (a short id
    /// until the room's details are loaded).
    fn title_for(&self, id: &str) -> String {
        if let Some(r) = self.rooms.get(id) {
            return r.display_name(&self.me);
        }
        match ConvKind::of(id) {
            ConvKind::Direct => peer_of(id, &self.me),
            kind => {
                let hex = id.split_once(':').map_or(id, |(_, h)| h);
                let what = if kind == ConvKind::Group {
                    "group"
                } else {
                    "room"
                };
                format!("{what} {}", hex.get(..6).unwrap_or(hex))
            }
        }
    }

    fn new_item(&self, id: &str) -> ConvItem {
        ConvItem {
            id: id.to_owned(),
            title: self.title_for(id),
            unread: 0,
            last_activity_ms: 0,
            kind: ConvKind::of(id),
            left: self.rooms.get(id).is_some_and(|r| r.my_role.is_none()),
        }
    }

    /// Groups the sidebar by section (a stable sort, so each section stays most recent first)
    /// and keeps the selection on `current`.
    fn regroup(&mut self, current: Option<String>) {
        self.conversations.sort_by_key(|c| c.kind);
        if let Some(cur) = current
            && let Some(p) = self.conversations.iter().position(|c| c.id == cur)
        {
            self.selected = p;
        }
    }

    /// Brings room titles and "left" marks of the sidebar up to date with `rooms`.
    fn refresh_room_items(&mut self) {
        for i in 0..self.conversations.len() {
            let id = self.conversations[i].id.clone();
            if let Some(r) = self.rooms.get(&id) {
                let title = r.display_name(&self.me);
                let left = r.my_role.is_none();
                let c = &mut self.conversations[i];
                c.title = title;
                c.left = left;
            }
        }
    }

    /// The current conversation's room, if it is a room or group whose details are loaded.
    pub fn current_room(&self) -> Option<&RoomInfo> {
        self.current().and_then(|id| self.rooms.get(id))
    }

    /// The room the member list shows, if it is open and the conversation is a room or group.
    pub fn members_shown(&self) -> Option<&RoomInfo> {
        self.members_open
            .then(|| self.current_room())
            .flatten()
            .filter(|r| !r.deleted)
    }

    /// Every user we know of (direct conversations and room members), without us.
    pub fn known_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .conversations
            .iter()
            .filter(|c| c.kind == ConvKind::Direct)
            .map(|c| c.title.clone())
            .chain(
                self.rooms
                    .values()
                    .flat_map(|r| r.members.iter().map(|m| m.username.clone())),
            )
            .filter(|u| *u != self.me)
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Opens a conversation by id (adding it to the sidebar if needed).
    fn open_conversation(&mut self, id: &str) -> Vec<Effect> {
        if ConvKind::of(id) == ConvKind::Direct {
            let peer = peer_of(id, &self.me);
            return self.open_dm(&peer);
        }
        if !self.conversations.iter().any(|c| c.id == id) {
            let current = self.current().map(str::to_owned);
            let item = self.new_item(id);
            self.conversations.insert(0, item);
            self.regroup(current);
        }
        match self.conversations.iter().position(|c| c.id == id) {
            Some(i) => self.select(i),
            None => Vec::new(),
        }
    }

    fn open_dm(&mut self, user: &str) -> Vec<Effect> {
        let Some(user) = names::canonical_username(user.trim_start_matches('@')) else {
            self.say(format!("not a valid username: {user}"), true);
            return Vec::new();
        };
        if user == self.me {
            self.say("you cannot open a direct conversation with yourself", true);
            return Vec::new();
        }
        let id = names::dm_conversation(&self.me, &user);
        if !self.conversations.iter().any(|c| c.id == id) {
            let current = self.current().map(str::to_owned);
            let mut item = self.new_item(&id);
            item.title = user;
            self.conversations.insert(0, item);
            self.regroup(current);
        }
        match self.conversations.iter().position(|c| c.id == id) {
            Some(i) => self.select(i),
            None => Vec::new(),
        }
    }

    /// The current room for `/verb`, or a sentence on the status line saying why there is none.
    fn room_target(&mut self, verb: &str) -> Option<String> {
        let Some(id) = self.current().map(str::to_owned) else {
            self.say(
                format!("/{verb} works in a room or group: open one first (Ctrl-K)"),
                true,
            );
            return None;
        };
        if ConvKind::of(&id) == ConvKind::Direct {
            self.say(
                format!(
                    "/{verb} works in a room or group, not a direct conversation \
                     (/room create NAME USER... or /group USER... starts one)"
                ),
                true,
            );
            return None;
        }
        if let Some(r) = self.rooms.get(&id)
            && r.my_role.is_none()
        {
            let name = r.display_name(&self.me);
            self.say(format!("you are no longer a member of {name}"), true);
            return None;
        }
        Some(id)
    }

    fn change_room(&mut self, change: RoomChange) -> Vec<Effect> {
        let verb = match &change {
            RoomChange::Invite(_) => "invite",
            RoomChange::Remove(_) => "kick",
            RoomChange::Promote(_) => "promote",
            RoomChange::Demote(_) => "demote",
            RoomChange::Leave => "leave",
            RoomChange::Topic(_) => "topic",
        };
        match self.room_target(verb) {
            Some(room) => vec![Effect::ChangeRoom { room, change }],
            None => Vec::new(),
        }
    }

    fn toggle_members(&mut self) {
        self.dirty = true;
        if self.members_open {
            self.members_open = false;
            return;
        }
        match self.current().map(str::to_owned) {
            Some(id) if ConvKind::of(&id) != ConvKind::Direct => self.members_open = true,
            Some(id) => {
                let peer = peer_of(&id, &self.me);
                self.say(
                    format!(
                        "a direct conversation has just you and {peer}; /group {peer} USER... \
                         starts a group"
                    ),
                    false,
                );
            }
            None => self.say("open a room or group first (Ctrl-K)", true),
        }
    }

    fn run_command(&mut self, line: &str) -> Vec<Effect> {
        match action::parse_command(line) {
            Err(e) => {
                self.say(e, true);
                Vec::new()
            }
            Ok(Command::Quit) => {
                self.quit = true;
                vec![Effect::Quit]
            }
            Ok(Command::Help) => {
                self.overlay = Some(Overlay::Help { scroll: 0 });
                self.dirty = true;
                Vec::new()
            }
            Ok(Command::Dm(user)) => self.open_dm(&user),
            Ok(Command::RoomCreate { name, members }) => {
                let members: Vec<String> = members.into_iter().filter(|u| *u != self.me).collect();
                self.say(format!("creating room {name}…"), false);
                vec![Effect::CreateRoom {
                    kind: RoomKind::Room,
                    title: name,
                    members,
                }]
            }
            Ok(Command::Group(users)) => {
                let members: Vec<String> = users.into_iter().filter(|u| *u != self.me).collect();
                if members.is_empty() {
                    self.say("a group needs someone besides you: /group USER...", true);
                    return Vec::new();
                }
                self.say(
                    format!("starting a group with {}…", members.join(", ")),
                    false,
                );
                vec![Effect::CreateRoom {
                    kind: RoomKind::Group,
                    title: String::new(),
                    members,
                }]
            }
            Ok(Command::Invite(users)) => self.change_room(RoomChange::Invite(users)),
            Ok(Command::Kick(users)) => self.change_room(RoomChange::Remove(users)),
            Ok(Command::Promote(user)) => self.change_room(RoomChange::Promote(user)),
            Ok(Command::Demote(user)) => self.change_room(RoomChange::Demote(user)),
            Ok(Command::Leave) => self.change_room(RoomChange::Leave),
            Ok(cmd @ (Command::Retry | Command::Discard)) => {
                let failed = self.current().and_then(|c| {
                    self.views.get(c).and_then(|v| {
                        v.messages
                            .iter()
                            .rev()
                            .find(|m| m.outgoing && m.state == MessageState::Failed)
                            .map(|m| m.message_id)
                    })
                });
                match (failed, cmd) {
                    (None, _) => {
                        self.say("no failed message in this conversation", true);
                        Vec::new()
                    }
                    (Some(id), Command::Retry) => {
                        self.say("sending it again…", false);
                        vec![Effect::Retry(id)]
                    }
                    (Some(id), _) => vec![Effect::Discard(id)],
                }
            }
            Ok(Command::Topic(Some(text))) => self.change_room(RoomChange::Topic(text)),
            Ok(Command::Topic(None)) => {
                match self.current_room().map(|r| r.description.clone()) {
                    Some(t) if !t.is_empty() => self.say(format!("topic: {t}"), false),
                    Some(_) => self.say("no topic yet; /topic TEXT sets one", false),
                    None => {
                        self.room_target("topic");
                    }
                }
                Vec::new()
            }
            Ok(Command::Members) => {
                self.toggle_members();
                Vec::new()
            }
            Ok(Command::Timer { expire, burn }) => {
                let Some(conversation) = self.current().map(str::to_owned) else {
                    self.say("open a conversation first: /timer applies to it", true);
                    return Vec::new();
                };
                if expire.is_none() && burn.is_none() {
                    vec![Effect::LoadTimers {
                        conversation,
                        announce: true,
                    }]
                } else {
                    vec![Effect::SetTimers {
                        conversation,
                        expire,
                        burn,
                    }]
                }
            }
            Ok(Command::Expire(secs)) => {
                self.next_timers.expire_after = secs;
                self.say(
                    match secs {
                        Some(s) => format!(
                            "the next message expires {} after it is sent",
                            session::format_duration(s.into())
                        ),
                        None => "the next message uses the conversation's expiry".to_owned(),
                    },
                    false,
                );
                Vec::new()
            }
            Ok(Command::Burn(secs)) => {
                self.next_timers.burn_after = secs;
                self.say(
                    match secs {
                        Some(s) => format!(
                            "the next message burns {} after it is read",
                            session::format_duration(s.into())
                        ),
                        None => "the next message uses the conversation's burn timer".to_owned(),
                    },
                    false,
                );
                Vec::new()
            }
            Ok(Command::Search(q)) => {
                self.overlay = Some(Overlay::Search {
                    query: q.clone(),
                    results: None,
                    selected: 0,
                });
                self.dirty = true;
                vec![Effect::Search(q)]
            }
            Ok(Command::Theme(name)) => {
                match Theme::load(&name, self.settings.theme_dir.as_deref()) {
                    Ok(t) => {
                        self.theme = if self.settings.no_color {
                            t.without_color()
                        } else {
                            t
                        };
                        self.say(format!("theme: {name}"), false);
                    }
                    Err(e) => self.say(e.to_string(), true),
                }
                Vec::new()
            }
            Ok(Command::Keys(None)) => {
                self.overlay = Some(Overlay::Help { scroll: 0 });
                self.dirty = true;
                Vec::new()
            }
            Ok(Command::Keys(Some(profile))) => {
                match Keymap::load(&profile, self.settings.keymap_file.as_deref()) {
                    Ok(k) => {
                        self.mode = k.initial_mode();
                        self.keymap = k;
                        self.say(format!("keymap: {profile}"), false);
                    }
                    Err(e) => self.say(e.to_string(), true),
                }
                Vec::new()
            }
        }
    }

    fn submit(&mut self) -> Vec<Effect> {
        let text = std::mem::take(&mut self.composer.text);
        self.composer.cursor = 0;
        self.composer.history_pos = None;
        if text.trim().is_empty() {
            return Vec::new();
        }
        if self.composer.history.last() != Some(&text) {
            self.composer.history.push(text.clone());
            if self.composer.history.len() > INPUT_HISTORY {
                self.composer.history.remove(0);
            }
        }
        self.dirty = true;
        let prefix = self.keymap.command_prefix();
        if self.mode == Mode::Command {
            self.mode = Mode::Normal;
            return self.run_command(text.trim_start_matches(prefix));
        }
        if let Some(cmd) = text.strip_prefix('/').or_else(|| text.strip_prefix(prefix)) {
            // "//text" sends a message that starts with a slash.
            if let Some(literal) = cmd.strip_prefix('/') {
                return self.send_text(format!("/{literal}"));
            }
            return self.run_command(cmd);
        }
        self.send_text(text)
    }

    fn send_text(&mut self, text: String) -> Vec<Effect> {
        let Some(conv) = self.current().map(str::to_owned) else {
            self.say("no conversation selected: type /dm USER first", true);
            return Vec::new();
        };
        let to = if ConvKind::of(&conv) == ConvKind::Direct {
            peer_of(&conv, &self.me)
        } else {
            let refused = self.rooms.get(&conv).and_then(|r| {
                let name = r.display_name(&self.me);
                if r.deleted {
                    Some(format!("{name} was deleted; nothing can be sent there"))
                } else if r.my_role.is_none() {
                    Some(format!("you are no longer a member of {name}"))
                } else {
                    None
                }
            });
            if let Some(why) = refused {
                // Keep what was typed.
                self.composer.cursor = text.len();
                self.composer.text = text;
                self.say(why, true);
                return Vec::new();
            }
            conv
        };
        let opts = std::mem::take(&mut self.next_timers);
        vec![Effect::Send { to, text, opts }]
    }

    fn scroll(&mut self, delta: isize) {
        let Some(id) = self.current().map(str::to_owned) else {
            return;
        };
        // Older pages are requested by `wants_older` once a draw shows the top.
        if let Some(v) = self.views.get_mut(&id) {
            v.scroll = v.scroll.saturating_add_signed(delta);
            self.dirty = true;
        }
    }

    /// Whether older history should be requested for the current view (the view drew its top).
    pub fn wants_older(&mut self, reached_top: bool) -> Option<Effect> {
        let id = self.current()?.to_owned();
        let v = self.views.get_mut(&id)?;
        if reached_top && v.more_before && !v.loading {
            v.loading = true;
            let before = v.messages.first().map(|m| m.message_id);
            return Some(Effect::LoadHistory {
                conversation: id,
                before,
            });
        }
        None
    }

    fn edit(&mut self, action: &Action) -> bool {
        let c = &mut self.composer;
        match action {
            Action::Insert(ch) => {
                c.text.insert(c.cursor, *ch);
                c.cursor += ch.len_utf8();
            }
            Action::Paste(s) => {
                let s = s.replace("\r\n", "\n").replace('\r', "\n");
                c.text.insert_str(c.cursor, &s);
                c.cursor += s.len();
            }
            Action::InsertNewline => {
                c.text.insert(c.cursor, '\n');
                c.cursor += 1;
            }
            Action::Backspace => {
                if c.cursor > 0 {
                    let p = prev_boundary(&c.text, c.cursor);
                    c.text.replace_range(p..c.cursor, "");
                    c.cursor = p;
                }
            }
            Action::DeleteChar => {
                if c.cursor < c.text.len() {
                    let n = next_boundary(&c.text, c.cursor);
                    c.text.replace_range(c.cursor..n, "");
                }
            }
            Action::DeleteWordBack => {
                let p = word_left(&c.text, c.cursor);
                c.text.replace_range(p..c.cursor, "");
                c.cursor = p;
            }
            Action::KillLine => {
                let end = c.text[c.cursor..]
                    .find('\n')
                    .map_or(c.text.len(), |j| c.cursor + j);
                c.text.replace_range(c.cursor..end, "");
            }
            Action::ClearComposer => {
                c.text.clear();
                c.cursor = 0;
            }
            Action::CursorLeft => c.cursor = prev_boundary(&c.text, c.cursor),
            Action::CursorRight => c.cursor = next_boundary(&c.text, c.cursor),
            Action::CursorHome => {
                c.cursor = c.text[..c.cursor].rfind('\n').map_or(0, |j| j + 1);
            }
            Action::CursorEnd => {
                c.cursor = c.text[c.cursor..]
                    .find('\n')
                    .map_or(c.text.len(), |j| c.cursor + j);
            }
            Action::WordLeft => c.cursor = word_left(&c.text, c.cursor),
            Action::WordRight => c.cursor = word_right(&c.text, c.cursor),
            _ => return false,
        }
        self.dirty = true;
        true
    }

    fn history(&mut self, back: bool) {
        let c = &mut self.composer;
        if c.history.is_empty() {
            return;
        }
        let pos = match (c.history_pos, back) {
            (None, true) => {
                c.draft = c.text.clone();
                Some(c.history.len() - 1)
            }
            (None, false) => None,
            (Some(0), true) => Some(0),
            (Some(p), true) => Some(p - 1),
            (Some(p), false) if p + 1 < c.history.len() => Some(p + 1),
            (Some(_), false) => None,
        };
        c.history_pos = pos;
        c.text = match pos {
            Some(p) => c.history[p].clone(),
            None => std::mem::take(&mut c.draft),
        };
        c.cursor = c.text.len();
        self.dirty = true;
    }

    /// User names Tab offers: the current room's members for commands that act on them
    /// (`/kick`, `/promote` members, `/demote` moderators), otherwise everyone we know.
    fn completion_users(&self) -> Vec<String> {
        let text = self.composer.text.trim_start();
        let command = if self.mode == Mode::Command {
            Some(text)
        } else {
            text.strip_prefix('/')
                .or_else(|| text.strip_prefix(self.keymap.command_prefix()))
        };
        let name = command
            .and_then(|c| c.split_whitespace().next())
            .unwrap_or("");
        let role = match name {
            "kick" | "remove" => None,
            "promote" | "op" => Some(Role::Member),
            "demote" | "deop" => Some(Role::Moderator),
            _ => return self.known_users(),
        };
        match self.current_room() {
            Some(r) => r
                .members
                .iter()
                .filter(|m| m.username != self.me && role.is_none_or(|want| m.role == want))
                .map(|m| m.username.clone())
                .collect(),
            None => self.known_users(),
        }
    }

    fn complete(&mut self) {
        let users = self.completion_users();
        let prefix = if self.mode == Mode::Command {
            // Command mode input has no prefix in the buffer; complete as if it had.
            '\0'
        } else {
            self.keymap.command_prefix()
        };
        let (input, offset) = if prefix == '\0' {
            (format!(":{}", self.composer.text), 1)
        } else {
            (self.composer.text.clone(), 0)
        };
        let cursor = self.composer.cursor + offset;
        let p = if prefix == '\0' { ':' } else { prefix };
        let Some(done) = complete::complete(&input, cursor, p, action::COMMANDS, &users) else {
            self.say("no completion", false);
            return;
        };
        let common = complete::common_prefix(&done.candidates);
        let replacement = if done.candidates.len() == 1 {
            format!("{} ", done.candidates[0])
        } else {
            common
        };
        if replacement.is_empty() {
            return;
        }
        let (start, end) = (done.start - offset, done.end - offset);
        self.composer.text.replace_range(start..end, &replacement);
        self.composer.cursor = start + replacement.len();
        if done.candidates.len() > 1 {
            self.say(done.candidates.join("  "), false);
        }
        self.dirty = true;
    }

    /// Filtered switcher entries for `query` (fuzzy: all query chars in order), best first.
    pub fn switcher_matches(&self, query: &str) -> Vec<usize> {
        let q: Vec<char> = query.to_lowercase().chars().collect();
        let mut scored: Vec<(usize, usize)> = self
            .conversations
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let title = c.title.to_lowercase();
                let mut score = 0usize;
                let mut last = 0usize;
                let mut it = title.char_indices();
                for qc in &q {
                    loop {
                        let (j, tc) = it.next()?;
                        if tc == *qc {
                            score += j.saturating_sub(last);
                            last = j;
                            break;
                        }
                    }
                }
                Some((score, i))
            })
            .collect();
        scored.sort();
        scored.into_iter().map(|(_, i)| i).collect()
    }

    fn overlay_action(&mut self, action: &Action) -> Option<Vec<Effect>> {
        let overlay = self.overlay.clone()?;
        let handled = match (&overlay, action) {
            (_, Action::Cancel) | (Overlay::Help { .. }, Action::ToggleHelp) => {
                self.overlay = None;
                Vec::new()
            }
            (_, Action::Quit) => return None,
            (Overlay::Help { scroll }, Action::ScrollDown | Action::OverlayDown) => {
                self.overlay = Some(Overlay::Help { scroll: scroll + 1 });
                Vec::new()
            }
            (Overlay::Help { scroll }, Action::ScrollUp | Action::OverlayUp) => {
                self.overlay = Some(Overlay::Help {
                    scroll: scroll.saturating_sub(1),
                });
                Vec::new()
            }
            (Overlay::Help { scroll }, Action::PageDown) => {
                self.overlay = Some(Overlay::Help {
                    scroll: scroll + 10,
                });
                Vec::new()
            }
            (Overlay::Help { scroll }, Action::PageUp) => {
                self.overlay = Some(Overlay::Help {
                    scroll: scroll.saturating_sub(10),
                });
                Vec::new()
            }
            (Overlay::Help { .. }, _) => Vec::new(),
            (Overlay::Switcher { query, selected }, a) => {
                let mut query = query.clone();
                let mut selected = *selected;
                match a {
                    Action::Insert(c) => {
                        query.push(*c);
                        selected = 0;
                    }
                    Action::Backspace => {
                        query.pop();
                        selected = 0;
                    }
                    Action::OverlayDown
                    | Action::ScrollDown
                    | Action::NextConversation
                    | Action::HistoryNext => selected += 1,
                    Action::OverlayUp
                    | Action::ScrollUp
                    | Action::PrevConversation
                    | Action::HistoryPrev => selected = selected.saturating_sub(1),
                    Action::Submit => {
                        let matches = self.switcher_matches(&query);
                        self.overlay = None;
                        self.dirty = true;
                        return Some(match matches.get(selected) {
                            Some(&i) => self.select(i),
                            // Nothing matches: treat the text as a user to open.
                            None if !query.is_empty() => self.open_dm(&query),
                            None => Vec::new(),
                        });
                    }
                    _ => {}
                }
                let n = self.switcher_matches(&query).len();
                selected = selected.min(n.saturating_sub(1));
                self.overlay = Some(Overlay::Switcher { query, selected });
                Vec::new()
            }
            (
                Overlay::Search {
                    query,
                    results,
                    selected,
                },
                a,
            ) => {
                let n = results.as_ref().map_or(0, Vec::len);
                let mut sel = *selected;
                match a {
                    Action::OverlayDown
                    | Action::ScrollDown
                    | Action::HistoryNext
                    | Action::NextConversation => sel = (sel + 1).min(n.saturating_sub(1)),
                    Action::OverlayUp
                    | Action::ScrollUp
                    | Action::HistoryPrev
                    | Action::PrevConversation => sel = sel.saturating_sub(1),
                    Action::Submit => {
                        let target = results.as_ref().and_then(|r| r.get(sel)).cloned();
                        self.overlay = None;
                        self.dirty = true;
                        return Some(match target {
                            Some(m) => self.jump_to(&m),
                            None => Vec::new(),
                        });
                    }
                    _ => {}
                }
                self.overlay = Some(Overlay::Search {
                    query: query.clone(),
                    results: results.clone(),
                    selected: sel,
                });
                Vec::new()
            }
        };
        self.dirty = true;
        Some(handled)
    }

    /// Opens a message's conversation and scrolls so the message is in view.
    fn jump_to(&mut self, m: &MessageRecord) -> Vec<Effect> {
        let mut fx = self.open_conversation(&m.conversation);
        if let Some(v) = self.views.get_mut(&m.conversation) {
            if let Some(pos) = v.messages.iter().position(|x| x.message_id == m.message_id) {
                // Roughly two lines per message from the bottom.
                v.scroll = (v.messages.len() - 1 - pos) * 2;
            } else {
                // Not loaded: load history up to it.
                v.loading = true;
                fx.push(Effect::LoadHistory {
                    conversation: m.conversation.clone(),
                    before: v.messages.first().map(|x| x.message_id),
                });
            }
        }
        fx
    }

    /// Applies one action.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        if let Some(lock) = &mut self.lock {
            self.dirty = true;
            match action {
                Action::Insert(c) if !lock.busy => lock.input.push(c),
                Action::Paste(s) if !lock.busy => lock.input.push_str(s.trim_end_matches('\n')),
                Action::Backspace if !lock.busy => {
                    lock.input.pop();
                }
                Action::ClearComposer | Action::DeleteWordBack if !lock.busy => lock.input.clear(),
                Action::Submit if !lock.busy && !lock.input.is_empty() => {
                    lock.busy = true;
                    lock.error = None;
                    return vec![Effect::Unlock(std::mem::take(&mut lock.input))];
                }
                Action::Quit => {
                    self.quit = true;
                    return vec![Effect::Quit];
                }
                _ => {}
            }
            return Vec::new();
        }
        if let Some(fx) = self.overlay_action(&action) {
            return fx;
        }
        match action {
            Action::Quit => {
                self.quit = true;
                return vec![Effect::Quit];
            }
            Action::ToggleHelp => {
                self.overlay = Some(Overlay::Help { scroll: 0 });
            }
            Action::QuickSwitcher => {
                self.overlay = Some(Overlay::Switcher {
                    query: String::new(),
                    selected: 0,
                });
            }
            Action::NextConversation => return self.select(self.selected + 1),
            Action::PrevConversation => return self.select(self.selected.saturating_sub(1)),
            Action::ScrollUp => self.scroll(1),
            Action::ScrollDown => self.scroll(-1),
            Action::PageUp => self.scroll(self.page_height.max(2) as isize - 1),
            Action::PageDown => self.scroll(-(self.page_height.max(2) as isize - 1)),
            Action::ScrollTop => self.scroll(isize::MAX / 2),
            Action::ScrollBottom => {
                if let Some(id) = self.current().map(str::to_owned)
                    && let Some(v) = self.views.get_mut(&id)
                {
                    v.scroll = 0;
                }
            }
            Action::Submit => return self.submit(),
            Action::ExternalEditor => return vec![Effect::Editor(self.composer.text.clone())],
            Action::HistoryPrev => {
                if self.composer.text.contains('\n') {
                    self.edit(&Action::CursorHome);
                } else {
                    self.history(true);
                }
            }
            Action::HistoryNext => {
                if self.composer.text.contains('\n') {
                    self.edit(&Action::CursorEnd);
                } else {
                    self.history(false);
                }
            }
            Action::Complete => self.complete(),
            Action::ToggleMembers => self.toggle_members(),
            Action::Cancel => {
                if self.mode != self.keymap.initial_mode() {
                    if self.mode == Mode::Command {
                        self.composer.text.clear();
                        self.composer.cursor = 0;
                    }
                    self.mode = self.keymap.initial_mode();
                } else if self.members_open {
                    self.members_open = false;
                } else if !self.keymap.is_modal() {
                    self.notice = None;
                }
            }
            Action::EnterInsert => self.mode = Mode::Insert,
            Action::Append => {
                self.mode = Mode::Insert;
                self.edit(&Action::CursorRight);
            }
            Action::EnterCommand => {
                self.mode = Mode::Command;
                self.composer.text.clear();
                self.composer.cursor = 0;
            }
            Action::Run(line) => {
                let line = line
                    .strip_prefix('/')
                    .or_else(|| line.strip_prefix(':'))
                    .unwrap_or(&line)
                    .to_owned();
                return self.run_command(&line);
            }
            Action::OverlayUp | Action::OverlayDown => {}
            // With nothing typed, Home/End scroll the conversation (to the oldest loaded message
            // and back to the newest); with text they move the cursor.
            Action::CursorHome if self.composer.text.is_empty() && self.mode != Mode::Normal => {
                self.scroll(isize::MAX / 2);
            }
            Action::CursorEnd if self.composer.text.is_empty() && self.mode != Mode::Normal => {
                if let Some(id) = self.current().map(str::to_owned)
                    && let Some(v) = self.views.get_mut(&id)
                {
                    v.scroll = 0;
                }
            }
            other => {
                // In vim's normal mode typing does not go to the composer.
                if self.mode != Mode::Normal
                    || !matches!(other, Action::Insert(_) | Action::Paste(_))
                {
                    self.edit(&other);
                }
            }
        }
        self.dirty = true;
        Vec::new()
    }

    fn upsert_conversation(&mut self, id: &str, at_ms: u64, unread_inc: bool) {
        let current = self.current().map(str::to_owned);
        let pos = self.conversations.iter().position(|c| c.id == id);
        let mut item = match pos {
            Some(p) => self.conversations.remove(p),
            None => self.new_item(id),
        };
        item.last_activity_ms = item.last_activity_ms.max(at_ms);
        if unread_inc {
            item.unread += 1;
        }
        // Most recent first within its section, but never move the selection away from what
        // the user looks at.
        self.conversations.insert(0, item);
        self.regroup(current);
    }

    fn note_deadline(&mut self, t: &MessageTimers) {
        if let Some(d) = t.delete_at_ms() {
            self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
        }
    }

    /// Drops every loaded message whose deadline has passed and finds the next deadline;
    /// returns how many went.
    fn purge_expired(&mut self) -> usize {
        let now = self.now_ms;
        let mut next: Option<u64> = None;
        let mut removed = 0;
        for v in self.views.values_mut() {
            removed += v.remove_where(|m| m.timers.delete_at_ms().is_some_and(|d| d <= now));
            for m in &v.messages {
                if let Some(d) = m.timers.delete_at_ms() {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        if let Some(Overlay::Search {
            results: Some(rs), ..
        }) = &mut self.overlay
        {
            rs.retain(|m| m.timers.delete_at_ms().is_none_or(|d| d > now));
        }
        self.next_deadline = next;
        removed
    }

    /// Whether a countdown badge on screen would now read differently.
    pub fn badges_changed(&self) -> bool {
        self.shown_badges
            .borrow()
            .iter()
            .any(|(t, shown)| badge(t, self.now_ms).is_none_or(|b| b.text != *shown))
    }

    /// Applies something that happened outside the UI.
    pub fn on_event(&mut self, ev: UiEvent) -> Vec<Effect> {
        let was_dirty = self.dirty;
        self.dirty = true;
        match ev {
            UiEvent::Tick { now_ms } => {
                // A tick only adds reasons to redraw (an expired notice, a countdown); it must
                // never cancel a redraw that the frame cap postponed.
                self.dirty =
                    was_dirty || matches!(self.connection, Connection::Reconnecting { .. });
                if self
                    .notice
                    .as_ref()
                    .is_some_and(|n| Instant::now() >= n.until)
                {
                    self.notice = None;
                    self.dirty = true;
                }
                self.now_ms = now_ms;
                if self.next_deadline.is_some_and(|d| d <= now_ms) && self.purge_expired() > 0 {
                    self.dirty = true;
                }
                if self.badges_changed() {
                    self.dirty = true;
                }
                Vec::new()
            }
            UiEvent::Unlocked => Vec::new(),
            UiEvent::UnlockFailed(e) => {
                if let Some(l) = &mut self.lock {
                    l.busy = false;
                    l.error = Some(e);
                }
                Vec::new()
            }
            UiEvent::Conversations(list) => {
                // The first list decides what is on screen: the most recent conversation, not
                // one that happened to receive a message while the list was loading.
                let current = if self.listed {
                    self.current().map(str::to_owned)
                } else {
                    None
                };
                let first = !self.listed;
                self.listed = true;
                for s in list {
                    if self.rooms.get(&s.conversation).is_some_and(|r| r.deleted) {
                        continue;
                    }
                    match self
                        .conversations
                        .iter_mut()
                        .find(|c| c.id == s.conversation)
                    {
                        Some(c) if first => {
                            c.unread = c.unread.max(s.unread);
                            c.last_activity_ms = c.last_activity_ms.max(s.last_activity_ms);
                        }
                        Some(_) => {}
                        None => {
                            let mut item = self.new_item(&s.conversation);
                            item.unread = s.unread;
                            item.last_activity_ms = s.last_activity_ms;
                            self.conversations.push(item);
                        }
                    }
                }
                self.conversations
                    .sort_by_key(|c| std::cmp::Reverse(c.last_activity_ms));
                self.regroup(None);
                let idx = current
                    .and_then(|c| self.conversations.iter().position(|x| x.id == c))
                    .unwrap_or(0);
                self.select(idx)
            }
            UiEvent::Resync => {
                let mut fx = vec![Effect::LoadConversations, Effect::LoadRooms];
                for (id, v) in &mut self.views {
                    if v.loaded {
                        v.resync = true;
                        fx.push(Effect::LoadHistory {
                            conversation: id.clone(),
                            before: None,
                        });
                    }
                }
                fx
            }
            UiEvent::History {
                conversation,
                older,
                messages,
            } => {
                let v = self.views.entry(conversation).or_default();
                v.loading = false;
                v.loaded = true;
                v.more_before = messages.len() >= PAGE;
                if older {
                    let known: std::collections::HashSet<[u8; 16]> =
                        v.messages.iter().map(|m| m.message_id).collect();
                    let mut page: Vec<MessageRecord> = messages
                        .into_iter()
                        .filter(|m| !known.contains(&m.message_id))
                        .collect();
                    let added = page.len();
                    page.append(&mut v.messages);
                    v.messages = page;
                    v.new_marker = v.new_marker.map(|i| i + added);
                } else if std::mem::take(&mut v.resync) {
                    v.messages = messages;
                    v.new_marker = None;
                } else {
                    // Messages that arrived live before the first page loaded are kept, and
                    // the "new messages" marker stays on the message it marked.
                    let marked = v
                        .new_marker
                        .and_then(|i| v.messages.get(i))
                        .map(|m| m.message_id);
                    let mut merged = messages;
                    let known: std::collections::HashSet<[u8; 16]> =
                        merged.iter().map(|m| m.message_id).collect();
                    merged.extend(
                        v.messages
                            .drain(..)
                            .filter(|m| !known.contains(&m.message_id)),
                    );
                    v.messages = merged;
                    v.new_marker =
                        marked.and_then(|id| v.messages.iter().position(|m| m.message_id == id));
                }
                let deadlines: Vec<MessageTimers> = v
                    .messages
                    .iter()
                    .filter(|m| m.timers.delete_at_ms().is_some())
                    .map(|m| m.timers)
                    .collect();
                for t in &deadlines {
                    self.note_deadline(t);
                }
                Vec::new()
            }
            UiEvent::SearchResults { query, results } => {
                if let Some(Overlay::Search {
                    query: q,
                    results: r,
                    ..
                }) = &mut self.overlay
                    && *q == query
                {
                    *r = Some(results);
                }
                Vec::new()
            }
            UiEvent::Queued(m) => {
                self.upsert_conversation(&m.conversation, m.sent_at_ms, false);
                self.note_deadline(&m.timers);
                let v = self.views.entry(m.conversation.clone()).or_default();
                if !v.messages.iter().any(|x| x.message_id == m.message_id) {
                    v.messages.push(m);
                }
                v.scroll = 0;
                Vec::new()
            }
            UiEvent::Rooms(list) => self.set_rooms(list),
            UiEvent::RoomCreated(info) => {
                let id = info.room_id.clone();
                let name = info.display_name(&self.me);
                let kind = info.kind;
                self.timer_defaults.insert(
                    id.clone(),
                    (info.timers.expire_after, info.timers.burn_after),
                );
                self.rooms.insert(id.clone(), info);
                self.refresh_room_items();
                let fx = self.open_conversation(&id);
                self.say(
                    match kind {
                        RoomKind::Room => format!(
                            "created room {name}; /invite USER adds people, /members lists them"
                        ),
                        RoomKind::Group => format!("started a group with {name}"),
                    },
                    false,
                );
                fx
            }
            UiEvent::RoomUpdated { info, done } => {
                self.timer_defaults.insert(
                    info.room_id.clone(),
                    (info.timers.expire_after, info.timers.burn_after),
                );
                self.rooms.insert(info.room_id.clone(), info);
                self.refresh_room_items();
                self.say(done, false);
                Vec::new()
            }
            UiEvent::TimerDefaults {
                conversation,
                expire,
                burn,
                announce,
            } => {
                if announce {
                    let title = self
                        .conversations
                        .iter()
                        .find(|c| c.id == conversation)
                        .map_or_else(|| self.title_for(&conversation), |c| c.title.clone());
                    self.say(
                        format!("timers in {title}: {}", describe_timers(expire, burn)),
                        false,
                    );
                }
                self.timer_defaults.insert(conversation, (expire, burn));
                Vec::new()
            }
            UiEvent::Notice(text) => {
                self.say(text, false);
                Vec::new()
            }
            UiEvent::EditorText(t) => {
                self.composer.text = t.trim_end_matches('\n').to_owned();
                self.composer.cursor = self.composer.text.len();
                Vec::new()
            }
            UiEvent::Error(e) => {
                self.say(e, true);
                Vec::new()
            }
            UiEvent::Session(ev) => self.on_session(ev),
        }
    }

    /// Takes the full list of rooms: titles and roles in the sidebar, deleted rooms gone.
    fn set_rooms(&mut self, list: Vec<RoomInfo>) -> Vec<Effect> {
        let current = self.current().map(str::to_owned);
        self.rooms = list.into_iter().map(|r| (r.room_id.clone(), r)).collect();
        let rooms = &self.rooms;
        self.conversations
            .retain(|c| !rooms.get(&c.id).is_some_and(|r| r.deleted));
        self.views
            .retain(|id, _| !rooms.get(id).is_some_and(|r| r.deleted));
        let mut missing: Vec<String> = self
            .rooms
            .values()
            .filter(|r| !r.deleted && r.my_role.is_some())
            .filter(|r| !self.conversations.iter().any(|c| c.id == r.room_id))
            .map(|r| r.room_id.clone())
            .collect();
        missing.sort_unstable();
        for id in missing {
            let item = self.new_item(&id);
            self.conversations.push(item);
        }
        for r in self.rooms.values() {
            self.timer_defaults.insert(
                r.room_id.clone(),
                (r.timers.expire_after, r.timers.burn_after),
            );
        }
        self.refresh_room_items();
        self.regroup(current.clone());
        match current {
            // The conversation on screen was deleted: show a neighbour.
            Some(c) if !self.conversations.iter().any(|x| x.id == c) => {
                self.members_open = false;
                self.select(self.selected)
            }
            _ => Vec::new(),
        }
    }

    fn on_session(&mut self, ev: SessionEvent) -> Vec<Effect> {
        match ev {
            SessionEvent::Connected => {
                self.connection = Connection::Connected;
                Vec::new()
            }
            SessionEvent::RoomChanged { .. } => vec![Effect::LoadRooms],
            SessionEvent::Shredded {
                conversation,
                message_ids,
            } => {
                if let Some(v) = self.views.get_mut(&conversation) {
                    v.remove_where(|m| message_ids.contains(&m.message_id));
                }
                if let Some(Overlay::Search {
                    results: Some(rs), ..
                }) = &mut self.overlay
                {
                    rs.retain(|m| !message_ids.contains(&m.message_id));
                }
                Vec::new()
            }
            SessionEvent::TimersChanged {
                message_id,
                conversation,
                timers,
            } => {
                if let Some(v) = self.views.get_mut(&conversation)
                    && let Some(m) = v.messages.iter_mut().find(|m| m.message_id == message_id)
                {
                    m.timers = timers;
                    v.heights.get_mut().lines.remove(&message_id);
                }
                self.note_deadline(&timers);
                Vec::new()
            }
            SessionEvent::PolicyChanged(p) => {
                self.policy = Some(p);
                Vec::new()
            }
            SessionEvent::Disconnected { retry_in, reason } => {
                self.connection = match retry_in {
                    Some(d) => Connection::Reconnecting {
                        at: Instant::now() + d,
                        reason,
                    },
                    None => Connection::Offline(reason),
                };
                Vec::new()
            }
            SessionEvent::StateChanged { message_id, state } => {
                for v in self.views.values_mut() {
                    if let Some(m) = v.messages.iter_mut().find(|m| m.message_id == message_id) {
                        // Never move a message backwards (a late "sent" after "delivered").
                        let rank = |s: MessageState| match s {
                            MessageState::Sending => 0,
                            MessageState::Sent => 1,
                            MessageState::Delivered => 2,
                            MessageState::Read => 3,
                            _ => 4,
                        };
                        // A failed message may go back to "sending" (a retry).
                        if rank(state) >= rank(m.state)
                            || state == MessageState::Failed
                            || m.state == MessageState::Failed
                        {
                            m.state = state;
                        }
                    }
                }
                Vec::new()
            }
            SessionEvent::SendFailed { reason, .. } => {
                self.say(
                    format!("not sent: {reason} (/retry sends it again, /discard deletes it)"),
                    true,
                );
                Vec::new()
            }
            SessionEvent::Message(m) => {
                let in_view = self.listed
                    && self.current() == Some(m.conversation.as_str())
                    && self.overlay.is_none();
                let at_bottom = self
                    .views
                    .get(&m.conversation)
                    .is_none_or(|v| v.scroll == 0);
                let mut fx = Vec::new();
                let incoming = !m.outgoing;
                // System lines (membership changes, warnings) are shown but are not messages
                // to read: no unread count, no bell, no notification.
                let counts = incoming && m.kind != MessageKind::System;
                self.upsert_conversation(&m.conversation, m.received_at_ms, counts && !in_view);
                if self
                    .views
                    .get(&m.conversation)
                    .is_some_and(|v| v.messages.iter().any(|x| x.message_id == m.message_id))
                {
                    return fx;
                }
                self.note_deadline(&m.timers);
                // A busy room would ring all day: rooms only call for attention when they
                // mention you; direct messages and groups always do.
                let loud = counts
                    && !in_view
                    && (ConvKind::of(&m.conversation) != ConvKind::Room
                        || mentions(&m.text, &self.me));
                let v = self.views.entry(m.conversation.clone()).or_default();
                if counts && (!in_view || !at_bottom) && v.new_marker.is_none() {
                    v.new_marker = Some(v.messages.len());
                }
                let from = m.sender.clone();
                v.messages.push(m);
                if loud {
                    if self.settings.bell {
                        fx.push(Effect::Bell);
                    }
                    if self.settings.desktop_notifications {
                        // The notification names the sender only: message text would leave the
                        // terminal for whatever daemon shows notifications.
                        fx.push(Effect::Notify {
                            title: "Cinder".into(),
                            body: format!("New message from {from}"),
                        });
                    }
                } else if incoming
                    && in_view
                    && let Some(id) = self.current().map(str::to_owned)
                {
                    fx.push(Effect::MarkRead(id));
                }
                fx
            }
            SessionEvent::Undecryptable { from, error, .. } => {
                self.say(
                    format!("a message from {from} could not be decrypted ({error})"),
                    true,
                );
                Vec::new()
            }
        }
    }
}

/// A conversation's default timers in words.
pub fn describe_timers(expire: Option<u32>, burn: Option<u32>) -> String {
    let d = |s: u32| session::format_duration(s.into());
    match (expire, burn) {
        (None, None) => "no timers; messages stay until deleted".to_owned(),
        (Some(e), None) => format!("messages expire {} after they are sent", d(e)),
        (None, Some(b)) => format!("messages burn {} after they are read", d(b)),
        (Some(e), Some(b)) => format!(
            "messages expire {} after they are sent and burn {} after they are read",
            d(e),
            d(b)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{RoomMember, RoomTimers};

    pub(crate) fn app(profile: &str) -> App {
        let mut a = App::new(
            Theme::default_theme(),
            Keymap::builtin(profile).unwrap(),
            Settings {
                bell: true,
                desktop_notifications: true,
                theme_dir: None,
                keymap_file: None,
                no_color: false,
                utc_offset_secs: 0,
            },
        );
        a.unlocked("alice", "Acme");
        a
    }

    fn typed(a: &mut App, s: &str) {
        for c in s.chars() {
            a.update(Action::Insert(c));
        }
    }

    #[test]
    fn lock_screen_collects_the_passphrase_without_other_effects() {
        let mut a = App::new(
            Theme::default_theme(),
            Keymap::builtin("default").unwrap(),
            Settings {
                bell: false,
                desktop_notifications: false,
                theme_dir: None,
                keymap_file: None,
                no_color: false,
                utc_offset_secs: 0,
            },
        );
        typed(&mut a, "hunter2");
        a.update(Action::Backspace);
        assert_eq!(
            a.update(Action::Submit),
            vec![Effect::Unlock(Passphrase::new("hunter".into()))]
        );

        assert!(a.lock.as_ref().unwrap().busy);
        a.on_event(UiEvent::UnlockFailed("wrong passphrase".into()));
        assert_eq!(
            a.lock.as_ref().unwrap().error.as_deref(),
            Some("wrong passphrase")
        );
        // Neither the state nor the effect prints what was typed.
        typed(&mut a, "swordfish");
        assert_eq!(a.lock.as_ref().unwrap().input.as_str(), "swordfish");
        let state = format!("{:?}", a.lock);
        let shown = format!("{state} {:?}", a.update(Action::Submit));
        assert!(!shown.contains("swordfish"), "{shown}");
        assert!(shown.contains("Unlock"), "{shown}");
    }

    #[test]
    fn dm_command_opens_a_conversation_and_text_is_sent_there() {
        let mut a = app("default");
        typed(&mut a, "/dm Bob");
        let fx = a.update(Action::Submit);
        assert_eq!(a.current(), Some("dm:alice:bob"));
        assert!(fx.iter().any(|e| matches!(e, Effect::LoadHistory { conversation, .. } if conversation == "dm:alice:bob")));
        typed(&mut a, "hello");
        assert_eq!(
            a.update(Action::Submit),
            vec![Effect::Send {
                to: "bob".into(),
                text: "hello".into(),
                opts: SendOptions::default(),
            }]
        );
        assert!(a.composer.text.is_empty());
        typed(&mut a, "//literal");
        assert_eq!(
            a.update(Action::Submit),
            vec![Effect::Send {
                to: "bob".into(),
                text: "/literal".into(),
                opts: SendOptions::default(),
            }]
        );
        typed(&mut a, "/nonsense");
        a.update(Action::Submit);
        assert!(a.notice.as_ref().unwrap().error);
    }

    #[test]
    fn composer_editing_multiline_history_and_unicode() {
        let mut a = app("default");
        typed(&mut a, "héllo");
        a.update(Action::InsertNewline);
        typed(&mut a, "wörld 👋");
        assert_eq!(a.composer.text, "héllo\nwörld 👋");
        a.update(Action::Backspace);
        a.update(Action::Backspace);
        assert_eq!(a.composer.text, "héllo\nwörld");
        a.update(Action::CursorHome);
        a.update(Action::DeleteChar);
        assert_eq!(a.composer.text, "héllo\nörld");
        a.update(Action::ClearComposer);
        a.update(Action::Run("/dm bob".into()));
        for t in ["one", "two"] {
            typed(&mut a, t);
            a.update(Action::Submit);
        }
        typed(&mut a, "draft");
        a.update(Action::HistoryPrev);
        assert_eq!(a.composer.text, "two");
        a.update(Action::HistoryPrev);
        assert_eq!(a.composer.text, "one");
        a.update(Action::HistoryNext);
        a.update(Action::HistoryNext);
        assert_eq!(a.composer.text, "draft");
        a.update(Action::Paste("pasted\r\nlines".into()));
        assert_eq!(a.composer.text, "draftpasted\nlines");
    }

    #[test]
    fn vim_modes() {
        let mut a = app("vim");
        assert_eq!(a.mode, Mode::Normal);
        a.update(Action::Insert('x'));
        assert!(a.composer.text.is_empty(), "normal mode does not type");
        a.update(Action::EnterCommand);
        typed(&mut a, "dm bob");
        a.update(Action::Submit);
        assert_eq!(a.current(), Some("dm:alice:bob"));
        assert_eq!(a.mode, Mode::Normal);
        a.update(Action::EnterInsert);
        typed(&mut a, "hi");
        assert_eq!(a.update(Action::Submit).len(), 1);
        a.update(Action::Cancel);
        assert_eq!(a.mode, Mode::Normal);
    }

    fn msg(conv: &str, from: &str, text: &str, n: u8) -> MessageRecord {
        MessageRecord {
            message_id: [n; 16],
            conversation: conv.into(),
            outgoing: from == "alice",
            sender: from.into(),
            sender_device: [0; 16],
            sent_at_ms: 1_700_000_000_000 + u64::from(n) * 1000,
            received_at_ms: 1_700_000_000_000 + u64::from(n) * 1000,
            text: text.into(),
            state: MessageState::Received,
            kind: MessageKind::Text,
            timers: MessageTimers::default(),
        }
    }

    #[test]
    fn a_failed_message_says_why_and_can_be_retried_or_discarded() {
        let mut a = app("default");
        a.update(Action::Run("/dm bob".into()));
        a.update(Action::Run("/retry".into()));
        assert!(
            a.notice
                .as_ref()
                .is_some_and(|n| n.error && n.text.contains("no failed message")),
            "nothing to retry yet"
        );
        let mut mine = msg("dm:alice:bob", "alice", "too big", 7);
        mine.state = MessageState::Sending;
        a.on_event(UiEvent::Queued(mine));
        a.on_event(UiEvent::Session(SessionEvent::StateChanged {
            message_id: [7; 16],
            state: MessageState::Failed,
        }));
        a.on_event(UiEvent::Session(SessionEvent::SendFailed {
            message_id: [7; 16],
            conversation: "dm:alice:bob".into(),
            reason: "message too large (1048700 bytes; the limit is 1048576)".into(),
        }));
        let notice = a.notice.as_ref().unwrap();
        assert!(notice.error);
        assert!(
            notice.text.contains("message too large (1048700 bytes"),
            "{}",
            notice.text
        );
        assert!(notice.text.contains("/retry") && notice.text.contains("/discard"));
        assert_eq!(
            a.update(Action::Run("/retry".into())),
            vec![Effect::Retry([7; 16])]
        );
        // The retry moves it back to "sending" (out of the failed state).
        a.on_event(UiEvent::Session(SessionEvent::StateChanged {
            message_id: [7; 16],
            state: MessageState::Sending,
        }));
        let state = a.views["dm:alice:bob"].messages[0].state;
        assert_eq!(state, MessageState::Sending);
        a.on_event(UiEvent::Session(SessionEvent::StateChanged {
            message_id: [7; 16],
            state: MessageState::Failed,
        }));
        assert_eq!(
            a.update(Action::Run("/discard".into())),
            vec![Effect::Discard([7; 16])]
        );
    }

    #[test]
    fn messages_out_of_view_count_as_unread_and_notify() {
        let mut a = app("default");
        a.update(Action::Run("/dm bob".into()));
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            "dm:alice:carol",
            "carol",
            "psst",
            1,
        ))));
        assert!(fx.contains(&Effect::Bell));
        assert!(fx.iter().any(|e| matches!(e, Effect::Notify { body, .. } if body.contains("carol") && !body.contains("psst"))));
        let carol = a.conversations.iter().find(|c| c.title == "carol").unwrap();
        assert_eq!(carol.unread, 1);
        assert_eq!(a.current(), Some("dm:alice:bob"), "selection stays");
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            "dm:alice:bob",
            "bob",
            "hi",
            2,
        ))));
        assert!(!fx.contains(&Effect::Bell));
        assert!(fx.contains(&Effect::MarkRead("dm:alice:bob".into())));
    }

    #[test]
    fn quick_switcher_fuzzy_matches() {
        let mut a = app("default");
        for u in ["bob", "carol", "robert"] {
            a.update(Action::Run(format!("/dm {u}")));
        }
        let m = a.switcher_matches("rb");
        let titles: Vec<_> = m
            .iter()
            .map(|&i| a.conversations[i].title.as_str())
            .collect();
        assert_eq!(titles, vec!["robert"]);
        a.update(Action::QuickSwitcher);
        typed(&mut a, "car");
        a.update(Action::Submit);
        assert_eq!(a.current(), Some("dm:alice:carol"));
        assert!(a.overlay.is_none());
    }

    #[test]
    fn a_tick_keeps_a_pending_redraw() {
        let mut a = app("default");
        a.dirty = true;
        a.on_event(UiEvent::Tick { now_ms: a.now_ms });
        assert!(a.dirty, "a postponed redraw survives the tick");
        a.dirty = false;
        a.on_event(UiEvent::Tick { now_ms: a.now_ms });
        assert!(!a.dirty, "an idle tick draws nothing");
        a.say("hello", false);
        a.notice.as_mut().unwrap().until = Instant::now();
        a.dirty = false;
        a.on_event(UiEvent::Tick { now_ms: a.now_ms });
        assert!(
            a.dirty && a.notice.is_none(),
            "an expired notice is cleared and redrawn"
        );
    }

    #[test]
    fn home_and_end_scroll_when_the_composer_is_empty() {
        let mut a = app("default");
        a.update(Action::Run("/dm bob".into()));
        a.update(Action::CursorHome);
        assert!(a.views["dm:alice:bob"].scroll > 0);
        a.update(Action::CursorEnd);
        assert_eq!(a.views["dm:alice:bob"].scroll, 0);
        typed(&mut a, "ab");
        a.update(Action::CursorHome);
        assert_eq!(a.composer.cursor, 0);
        assert_eq!(a.views["dm:alice:bob"].scroll, 0);
    }

    const NOW: u64 = 1_700_000_100_000;

    fn room(id: &str, title: &str, members: &[(&str, Role)], me_role: Option<Role>) -> RoomInfo {
        RoomInfo {
            room_id: id.into(),
            kind: if id.starts_with("group:") {
                RoomKind::Group
            } else {
                RoomKind::Room
            },
            title: title.into(),
            description: String::new(),
            members: members
                .iter()
                .map(|(u, r)| RoomMember {
                    username: (*u).into(),
                    role: *r,
                })
                .collect(),
            my_role: me_role,
            deleted: false,
            timers: RoomTimers::default(),
            warning: None,
        }
    }

    const OPS: &str = "room:0123456789abcdef0123456789abcdef";
    const GRP: &str = "group:0123456789abcdef0123456789abcdef";
    const OLD: &str = "room:ffffffffffffffffffffffffffffffff";

    /// alice with a DM (bob), the room "ops" (alice moderates; bob, carol), a group with carol
    /// and a room she left.
    fn with_rooms() -> App {
        let mut a = app("default");
        let m = Role::Member;
        let md = Role::Moderator;
        a.on_event(UiEvent::Conversations(vec![
            ConversationSummary {
                conversation: OPS.into(),
                last_activity_ms: 30,
                messages: 1,
                unread: 4,
            },
            ConversationSummary {
                conversation: "dm:alice:bob".into(),
                last_activity_ms: 20,
                messages: 1,
                unread: 0,
            },
            ConversationSummary {
                conversation: GRP.into(),
                last_activity_ms: 10,
                messages: 1,
                unread: 0,
            },
            ConversationSummary {
                conversation: OLD.into(),
                last_activity_ms: 5,
                messages: 1,
                unread: 0,
            },
        ]));
        a.on_event(UiEvent::Rooms(vec![
            room(
                OPS,
                "ops",
                &[("alice", md), ("bob", m), ("carol", m)],
                Some(md),
            ),
            room(GRP, "", &[("alice", m), ("carol", m)], Some(m)),
            room(OLD, "old", &[("bob", md)], None),
        ]));
        a
    }

    #[test]
    fn sidebar_is_grouped_rooms_have_titles_and_deleted_rooms_vanish() {
        let mut a = with_rooms();
        let order: Vec<(&str, ConvKind, bool)> = a
            .conversations
            .iter()
            .map(|c| (c.title.as_str(), c.kind, c.left))
            .collect();
        assert_eq!(
            order,
            vec![
                ("bob", ConvKind::Direct, false),
                ("carol", ConvKind::Group, false),
                ("ops", ConvKind::Room, false),
                ("old", ConvKind::Room, true),
            ]
        );
        // The switcher finds rooms by title.
        let m = a.switcher_matches("op");
        assert_eq!(a.conversations[m[0]].id, OPS);
        // Next/previous walk the sidebar as drawn, across sections.
        assert_eq!(a.current(), Some("dm:alice:bob"));
        a.update(Action::NextConversation);
        assert_eq!(a.current(), Some(GRP));
        a.update(Action::NextConversation);
        assert_eq!(a.current(), Some(OPS));
        // A new message moves a room to the top of its section only; the selection stays.
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            OLD, "bob", "x", 9,
        ))));
        assert!(fx.is_empty(), "a busy room does not ring: {fx:?}");
        assert_eq!(a.conversations[2].id, OLD);
        assert_eq!(a.current(), Some(OPS));
        // Deleted: gone from the sidebar (and the selection moves to a neighbour).
        let mut gone = a.rooms[OPS].clone();
        gone.deleted = true;
        let mut list: Vec<RoomInfo> = a.rooms.values().cloned().collect();
        list.retain(|r| r.room_id != OPS);
        list.push(gone);
        let fx = a.on_event(UiEvent::Rooms(list));
        assert!(a.conversations.iter().all(|c| c.id != OPS));
        assert!(a.current().is_some());
        assert!(fx.iter().any(|e| matches!(e, Effect::LoadHistory { .. })));
    }

    #[test]
    fn room_commands_run_through_the_session_and_need_a_room() {
        let mut a = with_rooms();
        // In a direct conversation, room commands explain themselves.
        assert!(a.update(Action::Run("/invite dave".into())).is_empty());
        assert!(a.notice.as_ref().unwrap().error);
        assert!(a.notice.as_ref().unwrap().text.contains("room or group"));
        assert_eq!(
            a.update(Action::Run("/room create Ops bob alice".into())),
            vec![Effect::CreateRoom {
                kind: RoomKind::Room,
                title: "Ops".into(),
                members: vec!["bob".into()],
            }]
        );
        assert_eq!(
            a.update(Action::Run("/group carol dave".into())),
            vec![Effect::CreateRoom {
                kind: RoomKind::Group,
                title: String::new(),
                members: vec!["carol".into(), "dave".into()],
            }]
        );
        assert!(a.update(Action::Run("/group alice".into())).is_empty());
        let idx = a.conversations.iter().position(|c| c.id == OPS).unwrap();
        a.select(idx);
        for (line, change) in [
            (
                "/invite dave erin",
                RoomChange::Invite(vec!["dave".into(), "erin".into()]),
            ),
            ("/kick bob", RoomChange::Remove(vec!["bob".into()])),
            ("/promote carol", RoomChange::Promote("carol".into())),
            ("/demote carol", RoomChange::Demote("carol".into())),
            (
                "/topic on-call rota",
                RoomChange::Topic("on-call rota".into()),
            ),
            ("/leave", RoomChange::Leave),
        ] {
            assert_eq!(
                a.update(Action::Run(line.into())),
                vec![Effect::ChangeRoom {
                    room: OPS.into(),
                    change
                }],
                "{line}"
            );
        }
        // The answer updates the room and says what happened.
        let mut info = a.rooms[OPS].clone();
        info.description = "on-call rota".into();
        a.on_event(UiEvent::RoomUpdated {
            info,
            done: "topic of ops: on-call rota".into(),
        });
        a.update(Action::Run("/topic".into()));
        assert_eq!(a.notice.as_ref().unwrap().text, "topic: on-call rota");
        // Messages in a room go to the room id.
        typed(&mut a, "hello room");
        assert!(matches!(&a.update(Action::Submit)[..], [Effect::Send { to, .. }] if to == OPS));
        // A room we left: nothing is sent, the text stays in the composer.
        let idx = a.conversations.iter().position(|c| c.id == OLD).unwrap();
        a.select(idx);
        typed(&mut a, "anyone?");
        assert!(a.update(Action::Submit).is_empty());
        assert_eq!(a.composer.text, "anyone?");
        assert!(
            a.notice
                .as_ref()
                .unwrap()
                .text
                .contains("no longer a member")
        );
        assert!(a.update(Action::Run("/invite bob".into())).is_empty());
        // A room created elsewhere shows up selected, with its title.
        let fx = a.on_event(UiEvent::RoomCreated(room(
            "room:22222222222222222222222222222222",
            "new",
            &[("alice", Role::Moderator)],
            Some(Role::Moderator),
        )));
        assert_eq!(a.conversations[a.selected].title, "new");
        assert!(fx.iter().any(|e| matches!(e, Effect::LoadHistory { .. })));
    }

    #[test]
    fn member_list_toggles_for_rooms_and_completion_offers_members() {
        let mut a = with_rooms();
        a.update(Action::ToggleMembers);
        assert!(!a.members_open, "not for a direct conversation");
        let idx = a.conversations.iter().position(|c| c.id == OPS).unwrap();
        a.select(idx);
        a.update(Action::ToggleMembers);
        assert_eq!(a.members_shown().map(|r| r.room_id.as_str()), Some(OPS));
        a.update(Action::Cancel);
        assert!(!a.members_open, "Esc closes it");
        a.update(Action::Run("/members".into()));
        assert!(a.members_open);
        typed(&mut a, "/kick ");
        assert_eq!(a.completion_users(), vec!["bob", "carol"]);
        a.update(Action::ClearComposer);
        typed(&mut a, "/demote ");
        assert!(a.completion_users().is_empty(), "only alice moderates");
        a.update(Action::ClearComposer);
        typed(&mut a, "/dm ");
        assert_eq!(a.completion_users(), vec!["bob", "carol"]);
    }

    #[test]
    fn system_lines_never_ring_or_count_and_rooms_ring_only_on_mentions() {
        let mut a = with_rooms();
        let mut sys = msg(GRP, "carol", "carol added dave", 20);
        sys.kind = MessageKind::System;
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(sys)));
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(
            a.conversations.iter().find(|c| c.id == GRP).unwrap().unread,
            0
        );
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            OPS,
            "bob",
            "deploying now",
            21,
        ))));
        assert!(fx.is_empty());
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            OPS,
            "bob",
            "@alice can you check?",
            22,
        ))));
        assert!(fx.contains(&Effect::Bell));
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            GRP, "carol", "lunch?", 23,
        ))));
        assert!(
            fx.contains(&Effect::Bell),
            "groups are like direct messages"
        );
        assert!(mentions("thanks, Alice.", "alice"));
        assert!(!mentions("alicent was here", "alice"));
    }

    #[test]
    fn room_changes_reload_rooms_and_timer_commands_make_effects() {
        let mut a = with_rooms();
        assert_eq!(
            a.on_event(UiEvent::Session(SessionEvent::RoomChanged {
                room_id: OPS.into()
            })),
            vec![Effect::LoadRooms]
        );
        assert_eq!(
            a.update(Action::Run("/timer expire 1d burn off".into())),
            vec![Effect::SetTimers {
                conversation: "dm:alice:bob".into(),
                expire: Some(Some(86_400)),
                burn: Some(None),
            }]
        );
        assert_eq!(
            a.update(Action::Run("/timer".into())),
            vec![Effect::LoadTimers {
                conversation: "dm:alice:bob".into(),
                announce: true,
            }]
        );
        a.on_event(UiEvent::TimerDefaults {
            conversation: "dm:alice:bob".into(),
            expire: Some(86_400),
            burn: None,
            announce: true,
        });
        assert!(a.notice.as_ref().unwrap().text.contains("expire 1d after"));
        // /expire and /burn apply to the next message only.
        a.update(Action::Run("/expire 1h".into()));
        a.update(Action::Run("/burn 30s".into()));
        assert_eq!(
            a.next_timers,
            SendOptions {
                expire_after: Some(3600),
                burn_after: Some(30)
            }
        );
        typed(&mut a, "secret");
        assert_eq!(
            a.update(Action::Submit),
            vec![Effect::Send {
                to: "bob".into(),
                text: "secret".into(),
                opts: SendOptions {
                    expire_after: Some(3600),
                    burn_after: Some(30)
                },
            }]
        );
        assert_eq!(a.next_timers, SendOptions::default());
        a.update(Action::Run("/burn 30s".into()));
        a.update(Action::Run("/burn off".into()));
        assert_eq!(a.next_timers, SendOptions::default());
    }

    fn timed(expire_at: Option<u64>, burn_at: Option<u64>) -> MessageTimers {
        MessageTimers {
            expire_after_s: expire_at.map(|_| 60),
            burn_after_s: burn_at.map(|_| 30),
            expire_at_ms: expire_at,
            burn_at_ms: burn_at,
            displayed_at_ms: burn_at.map(|b| b - 30_000),
        }
    }

    #[test]
    fn badge_text_changes_only_when_the_displayed_seconds_change() {
        let t = timed(Some(NOW + 59_000), None);
        let at = |ms: u64| badge(&t, ms).unwrap().text;
        assert_eq!(at(NOW), "\u{23f3} 59s");
        // Within one displayed second the text is the same (seconds round up).
        assert_eq!(at(NOW + 1), "\u{23f3} 59s");
        assert_eq!(at(NOW + 999), "\u{23f3} 59s");
        assert_eq!(at(NOW + 1000), "\u{23f3} 58s");
        assert_eq!(at(NOW + 58_999), "\u{23f3} 1s");
        // Long timers change with the minutes.
        let long = timed(Some(NOW + 2 * 3_600_000), None);
        assert_eq!(badge(&long, NOW).unwrap().text, "\u{23f3} 2h");
        assert_eq!(badge(&long, NOW + 1).unwrap().text, "\u{23f3} 2h");
        assert_eq!(badge(&long, NOW + 1000).unwrap().text, "\u{23f3} 1h59m");
        assert_eq!(badge(&long, NOW + 30_000).unwrap().text, "\u{23f3} 1h59m");
        // Burning: the fire and the earlier deadline.
        let burning = timed(Some(NOW + 3_600_000), Some(NOW + 12_000));
        assert_eq!(
            badge(&burning, NOW),
            Some(Badge {
                text: "\u{1f525} 12s".into(),
                burning: true
            })
        );
        // Burn-on-read not yet read: the time it will get, not counting.
        let waiting = MessageTimers {
            burn_after_s: Some(30),
            ..MessageTimers::default()
        };
        assert_eq!(badge(&waiting, NOW).unwrap().text, "\u{1f525} 30s");
        assert_eq!(badge(&waiting, NOW + 5000).unwrap().text, "\u{1f525} 30s");
        assert_eq!(badge(&MessageTimers::default(), NOW), None);
    }

    fn draw(a: &App) {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 30)).unwrap();
        t.draw(|f| {
            crate::tui::view::draw(f, a, Instant::now());
        })
        .unwrap();
    }

    #[test]
    fn ticks_redraw_only_for_changed_badges_and_expired_messages_vanish() {
        let mut a = app("default");
        a.update(Action::Run("/dm bob".into()));
        a.on_event(UiEvent::Tick { now_ms: NOW });
        let mut burning = msg("dm:alice:bob", "bob", "burn me", 1);
        burning.timers = timed(None, Some(NOW + 5_000));
        let mut expiring = msg("dm:alice:bob", "bob", "expire me", 2);
        expiring.timers = timed(Some(NOW + 2 * 3_600_000), None);
        let plain = msg("dm:alice:bob", "bob", "stay", 3);
        a.on_event(UiEvent::History {
            conversation: "dm:alice:bob".into(),
            older: false,
            messages: vec![burning, expiring, plain],
        });
        draw(&a);
        a.dirty = false;
        assert_eq!(a.shown_badges.borrow().len(), 2);
        a.on_event(UiEvent::Tick { now_ms: NOW + 400 });
        assert!(!a.dirty, "same seconds on every badge: no redraw");
        a.on_event(UiEvent::Tick {
            now_ms: NOW + 1_000,
        });
        assert!(a.dirty, "the burning badge went from 5s to 4s");
        draw(&a);
        a.dirty = false;
        a.on_event(UiEvent::Tick {
            now_ms: NOW + 1_500,
        });
        assert!(!a.dirty);
        // The deadline passes: the message leaves the view before any Shredded event.
        a.on_event(UiEvent::Tick {
            now_ms: NOW + 5_000,
        });
        assert!(a.dirty);
        let texts: Vec<&str> = a.views["dm:alice:bob"]
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(texts, vec!["expire me", "stay"]);
        // Shredded removes at once; TimersChanged starts a countdown.
        let mut t = timed(None, Some(NOW + 20_000));
        t.expire_at_ms = Some(NOW + 2 * 3_600_000);
        a.on_event(UiEvent::Session(SessionEvent::TimersChanged {
            message_id: [2; 16],
            conversation: "dm:alice:bob".into(),
            timers: t,
        }));
        assert!(
            badge(&a.views["dm:alice:bob"].messages[0].timers, NOW + 5_000)
                .unwrap()
                .burning
        );
        a.on_event(UiEvent::Session(SessionEvent::Shredded {
            conversation: "dm:alice:bob".into(),
            message_ids: vec![[3; 16]],
        }));
        assert_eq!(a.views["dm:alice:bob"].messages.len(), 1);
        a.on_event(UiEvent::Tick {
            now_ms: NOW + 20_000,
        });
        assert!(a.views["dm:alice:bob"].messages.is_empty());
    }

    #[test]
    fn a_message_before_the_conversation_list_does_not_choose_what_is_shown() {
        let mut a = App::new(
            Theme::default_theme(),
            Keymap::builtin("default").unwrap(),
            Settings {
                bell: false,
                desktop_notifications: false,
                theme_dir: None,
                keymap_file: None,
                no_color: false,
                utc_offset_secs: 0,
            },
        );
        a.unlocked("alice", "Acme");
        let fx = a.on_event(UiEvent::Session(SessionEvent::Message(msg(
            OPS, "bob", "hi", 50,
        ))));
        assert!(
            !fx.iter().any(|e| matches!(e, Effect::MarkRead(_))),
            "not on screen"
        );
        a.on_event(UiEvent::Conversations(vec![
            ConversationSummary {
                conversation: "dm:alice:bob".into(),
                last_activity_ms: 20,
                messages: 1,
                unread: 0,
            },
            ConversationSummary {
                conversation: OPS.into(),
                last_activity_ms: 30,
                messages: 9,
                unread: 9,
            },
        ]));
        assert_eq!(a.current(), Some("dm:alice:bob"));
        let ops = a.conversations.iter().find(|c| c.id == OPS).unwrap();
        assert_eq!(
            ops.unread, 9,
            "the cache's count, not only what arrived live"
        );
    }

    #[test]
    fn the_new_marker_survives_the_first_history_page() {
        let mut a = app("default");
        a.update(Action::Run("/dm bob".into()));
        a.update(Action::Run("/dm carol".into()));
        // Two messages arrive for bob while carol is on screen; then bob's history loads.
        for n in [4, 5] {
            a.on_event(UiEvent::Session(SessionEvent::Message(msg(
                "dm:alice:bob",
                "bob",
                "new",
                n,
            ))));
        }
        a.on_event(UiEvent::History {
            conversation: "dm:alice:bob".into(),
            older: false,
            messages: (1..=4)
                .map(|n| msg("dm:alice:bob", "bob", "x", n))
                .collect(),
        });
        let v = &a.views["dm:alice:bob"];
        assert_eq!(v.messages.len(), 5);
        assert_eq!(v.new_marker, Some(3), "still on message 4");
    }

    #[test]
    fn missed_events_reload_every_shown_conversation_from_the_cache() {
        let mut a = app("default");
        a.update(Action::Run("/dm bob".into()));
        a.on_event(UiEvent::History {
            conversation: "dm:alice:bob".into(),
            older: false,
            messages: vec![
                msg("dm:alice:bob", "bob", "one", 1),
                msg("dm:alice:bob", "bob", "gone", 2),
            ],
        });
        let fx = a.on_event(UiEvent::Resync);
        assert!(fx.contains(&Effect::LoadConversations));
        assert!(fx.iter().any(|e| matches!(e, Effect::LoadHistory { conversation, before: None } if conversation == "dm:alice:bob")));
        // The reloaded page replaces what was shown: a message shredded while events were
        // missed disappears instead of lingering.
        a.on_event(UiEvent::History {
            conversation: "dm:alice:bob".into(),
            older: false,
            messages: vec![msg("dm:alice:bob", "bob", "one", 1)],
        });
        let texts: Vec<&str> = a.views["dm:alice:bob"]
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(texts, vec!["one"]);
    }

    #[test]
    fn removing_messages_keeps_the_new_marker_on_its_message() {
        let mut v = ConvView {
            messages: (1..=5).map(|n| msg("c", "bob", "x", n)).collect(),
            new_marker: Some(3),
            ..ConvView::default()
        };
        v.remove_where(|m| m.message_id[0] == 1 || m.message_id[0] == 5);
        assert_eq!(v.new_marker, Some(2));
        assert_eq!(v.messages[2].message_id, [4; 16]);
        v.remove_where(|m| m.message_id[0] == 4);
        assert_eq!(v.new_marker, None, "the marker was on the last message");
    }

    #[test]
    fn connection_states() {
        let mut a = app("default");
        a.on_event(UiEvent::Session(SessionEvent::Disconnected {
            retry_in: Some(Duration::from_secs(4)),
            reason: "connection closed".into(),
        }));
        assert!(matches!(a.connection, Connection::Reconnecting { .. }));
        a.on_event(UiEvent::Session(SessionEvent::Connected));
        assert_eq!(a.connection, Connection::Connected);
    }
}
