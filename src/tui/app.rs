//! The UI state and the one place it changes: [`App::update`] (and [`App::on_event`] for what
//! arrives from the session engine or from finished background work).
//!
//! `update` never awaits anything: work that takes time (sending, loading history, searching,
//! unlocking the cache) is returned as [`Effect`]s, which the event loop runs in the background;
//! their results come back as [`UiEvent`]s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::action::{self, Action, Command};
use super::complete;
use super::keymap::{Keymap, Mode};
use super::theme::Theme;
use crate::protocol::names;
use crate::session::SessionEvent;
use crate::session::{ConversationSummary, MessageRecord, MessageState};

/// How many messages a conversation view loads at a time.
pub const PAGE: usize = 200;
/// Composer input history entries kept.
const INPUT_HISTORY: usize = 200;

/// One conversation in the sidebar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvItem {
    /// Conversation id, e.g. `dm:alice:bob`.
    pub id: String,
    /// What the sidebar shows (the other user).
    pub title: String,
    /// Unread messages.
    pub unread: u64,
    /// Last activity, ms since the epoch.
    pub last_activity_ms: u64,
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
    /// Wrapped heights of messages at the last drawn width, so lines scrolled past are
    /// counted without wrapping them again (drawing stays proportional to the window).
    pub heights: std::cell::RefCell<HeightCache>,
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

/// The lock screen, shown until the cache is unlocked.
#[derive(Clone, Debug, Default)]
pub struct Lock {
    /// Typed passphrase (never drawn).
    pub input: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// An unlock is running.
    pub busy: bool,
}

/// Work for the event loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Unlock the cache with this passphrase.
    Unlock(String),
    /// Send a text message.
    Send {
        /// Recipient username.
        to: String,
        /// The text.
        text: String,
    },
    /// Load the conversation list.
    LoadConversations,
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
    /// Text from `$EDITOR`.
    EditorText(String),
    /// Something failed; one sentence for the status line.
    Error(String),
    /// A passage of time (countdowns, notices).
    Tick,
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
}

fn peer_of(conversation: &str, me: &str) -> String {
    conversation
        .strip_prefix("dm:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(a, b)| if a == me { b } else { a })
        .unwrap_or(conversation)
        .to_owned()
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
        }
    }

    /// Marks the app unlocked for `me` on `network`.
    pub fn unlocked(&mut self, me: &str, network: &str) -> Vec<Effect> {
        self.me = me.to_owned();
        self.network = network.to_owned();
        self.lock = None;
        self.dirty = true;
        vec![Effect::LoadConversations]
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
        if !self.views.contains_key(&id) {
            self.views.insert(
                id.clone(),
                ConvView {
                    loading: true,
                    more_before: true,
                    ..ConvView::default()
                },
            );
            fx.push(Effect::LoadHistory {
                conversation: id.clone(),
                before: None,
            });
        }
        if self.conversations[idx].unread > 0 {
            self.conversations[idx].unread = 0;
            fx.push(Effect::MarkRead(id));
        }
        fx
    }

    fn open_dm(&mut self, user: &str) -> Vec<Effect> {
        let Some(user) = names::canonical_username(user) else {
            self.say(format!("not a valid username: {user}"), true);
            return Vec::new();
        };
        if user == self.me {
            self.say("you cannot open a direct conversation with yourself", true);
            return Vec::new();
        }
        let id = names::dm_conversation(&self.me, &user);
        let idx = match self.conversations.iter().position(|c| c.id == id) {
            Some(i) => i,
            None => {
                self.conversations.insert(
                    0,
                    ConvItem {
                        id: id.clone(),
                        title: user,
                        unread: 0,
                        last_activity_ms: 0,
                    },
                );
                // Keep the selection on the same item.
                if !self.conversations.is_empty() && self.selected + 1 < self.conversations.len() {
                    self.selected += 1;
                }
                0
            }
        };
        self.select(idx)
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
            Ok(_) => {
                self.say("not yet available", true);
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
        let to = peer_of(&conv, &self.me);
        vec![Effect::Send { to, text }]
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

    fn complete(&mut self) {
        let users: Vec<String> = self.conversations.iter().map(|c| c.title.clone()).collect();
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
        let peer = peer_of(&m.conversation, &self.me);
        let mut fx = self.open_dm(&peer);
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
            Action::Cancel => {
                if self.mode != self.keymap.initial_mode() {
                    if self.mode == Mode::Command {
                        self.composer.text.clear();
                        self.composer.cursor = 0;
                    }
                    self.mode = self.keymap.initial_mode();
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
            None => ConvItem {
                id: id.to_owned(),
                title: peer_of(id, &self.me),
                unread: 0,
                last_activity_ms: 0,
            },
        };
        item.last_activity_ms = item.last_activity_ms.max(at_ms);
        if unread_inc {
            item.unread += 1;
        }
        self.conversations.insert(0, item);
        // Most recent first, but never move the selection away from what the user looks at.
        if let Some(cur) = current
            && let Some(p) = self.conversations.iter().position(|c| c.id == cur)
        {
            self.selected = p;
        }
    }

    /// Applies something that happened outside the UI.
    pub fn on_event(&mut self, ev: UiEvent) -> Vec<Effect> {
        let was_dirty = self.dirty;
        self.dirty = true;
        match ev {
            UiEvent::Tick => {
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
                let current = self.current().map(str::to_owned);
                for s in list {
                    if !self.conversations.iter().any(|c| c.id == s.conversation) {
                        self.conversations.push(ConvItem {
                            title: peer_of(&s.conversation, &self.me),
                            id: s.conversation,
                            unread: s.unread,
                            last_activity_ms: s.last_activity_ms,
                        });
                    }
                }
                self.conversations
                    .sort_by_key(|c| std::cmp::Reverse(c.last_activity_ms));
                let idx = current
                    .and_then(|c| self.conversations.iter().position(|x| x.id == c))
                    .unwrap_or(0);
                self.select(idx)
            }
            UiEvent::History {
                conversation,
                older,
                messages,
            } => {
                let v = self.views.entry(conversation).or_default();
                v.loading = false;
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
                } else {
                    // Messages that arrived live before the first page loaded are kept.
                    let mut merged = messages;
                    let known: std::collections::HashSet<[u8; 16]> =
                        merged.iter().map(|m| m.message_id).collect();
                    merged.extend(
                        v.messages
                            .drain(..)
                            .filter(|m| !known.contains(&m.message_id)),
                    );
                    v.messages = merged;
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
                let v = self.views.entry(m.conversation.clone()).or_default();
                if !v.messages.iter().any(|x| x.message_id == m.message_id) {
                    v.messages.push(m);
                }
                v.scroll = 0;
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

    fn on_session(&mut self, ev: SessionEvent) -> Vec<Effect> {
        match ev {
            SessionEvent::Connected => {
                self.connection = Connection::Connected;
                Vec::new()
            }
            // Rooms, timers and policy: handled by the room and ephemeral-message views.
            SessionEvent::RoomChanged { .. }
            | SessionEvent::Shredded { .. }
            | SessionEvent::TimersChanged { .. }
            | SessionEvent::PolicyChanged(_) => Vec::new(),
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
                        if rank(state) >= rank(m.state) || state == MessageState::Failed {
                            m.state = state;
                        }
                    }
                }
                if state == MessageState::Failed {
                    self.say("a message could not be sent (see its ! mark)", true);
                }
                Vec::new()
            }
            SessionEvent::Message(m) => {
                let in_view =
                    self.current() == Some(m.conversation.as_str()) && self.overlay.is_none();
                let at_bottom = self
                    .views
                    .get(&m.conversation)
                    .is_none_or(|v| v.scroll == 0);
                let mut fx = Vec::new();
                let incoming = !m.outgoing;
                self.upsert_conversation(&m.conversation, m.received_at_ms, incoming && !in_view);
                let v = self.views.entry(m.conversation.clone()).or_default();
                if v.messages.iter().any(|x| x.message_id == m.message_id) {
                    return fx;
                }
                if incoming && (!in_view || !at_bottom) && v.new_marker.is_none() {
                    v.new_marker = Some(v.messages.len());
                }
                let from = m.sender.clone();
                v.messages.push(m);
                if incoming && !in_view {
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
                } else if incoming && let Some(id) = self.current().map(str::to_owned) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{MessageKind, MessageTimers};

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
            vec![Effect::Unlock("hunter".into())]
        );
        assert!(a.lock.as_ref().unwrap().busy);
        a.on_event(UiEvent::UnlockFailed("wrong passphrase".into()));
        assert_eq!(
            a.lock.as_ref().unwrap().error.as_deref(),
            Some("wrong passphrase")
        );
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
                text: "hello".into()
            }]
        );
        assert!(a.composer.text.is_empty());
        typed(&mut a, "//literal");
        assert_eq!(
            a.update(Action::Submit),
            vec![Effect::Send {
                to: "bob".into(),
                text: "/literal".into()
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
        a.on_event(UiEvent::Tick);
        assert!(a.dirty, "a postponed redraw survives the tick");
        a.dirty = false;
        a.on_event(UiEvent::Tick);
        assert!(!a.dirty, "an idle tick draws nothing");
        a.say("hello", false);
        a.notice.as_mut().unwrap().until = Instant::now();
        a.dirty = false;
        a.on_event(UiEvent::Tick);
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
