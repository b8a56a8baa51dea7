//! The event loop: one `tokio::select!` over terminal input, session events, background
//! results and a tick. It redraws only when something changed, at most every 16 ms, and never
//! awaits the network: effects run in spawned tasks and report back over a channel.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event,
    EventStream, KeyEventKind, MouseEventKind,
};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::TuiError;
use super::action::Action;
use super::app::{App, Effect, PAGE, Passphrase, RoomChange, Settings, UiEvent};
use super::keymap::{Keymap, Resolved};
use super::theme::{self, Theme};
use super::view;
use crate::protocol::safe_text;
use crate::session::{self, EngineOptions, RoomRequest, SessionHandle};
use crate::session::{MessageKind, MessageRecord, MessageState};

/// What `cinder chat` passes in.
pub struct TuiOptions {
    /// The profile to open.
    pub profile_dir: PathBuf,
    /// Theme name.
    pub theme: String,
    /// Keymap profile.
    pub keymap: String,
    /// The configuration directory (themes/, keymap.toml).
    pub config_dir: PathBuf,
    /// Terminal bell for messages not in view.
    pub bell: bool,
    /// OSC 777 / OSC 9 desktop notifications.
    pub desktop_notifications: bool,
    /// Mouse support (wheel scrolling).
    pub mouse: bool,
    /// Reconnect backoff cap.
    pub reconnect_max: Duration,
    /// A passphrase from a non-interactive source; without one the lock screen asks.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
}

enum LoopMsg {
    Ui(UiEvent),
    /// The engine and a subscription taken before it could emit anything, so the first
    /// `Connected` is never missed.
    Unlocked(
        SessionHandle,
        tokio::sync::broadcast::Receiver<crate::session::SessionEvent>,
    ),
}

/// Puts the terminal into UI mode and restores it on drop (and on panic).
struct TerminalGuard {
    mouse: bool,
}

fn restore(mouse: bool) {
    let _ = disable_raw_mode();
    let mut out = io::stdout();
    if mouse {
        let _ = execute!(out, DisableMouseCapture);
    }
    let _ = execute!(
        out,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    );
}

impl TerminalGuard {
    fn enter(mouse: bool) -> io::Result<Self> {
        enable_raw_mode()?;
        let mut out = io::stdout();
        execute!(out, EnterAlternateScreen, EnableBracketedPaste)?;
        if mouse {
            execute!(out, EnableMouseCapture)?;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore(mouse);
            previous(info);
        }));
        Ok(Self { mouse })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore(self.mouse);
    }
}

/// Strips what could break out of an OSC sequence.
fn osc_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !safe_text::is_unsafe(*c) && *c != ';')
        .take(200)
        .collect()
}

fn notify(title: &str, body: &str) {
    let mut out = io::stdout();
    // OSC 777 (rxvt, foot, WezTerm, kitty) and OSC 9 (iTerm2, Windows Terminal); both travel
    // over SSH because they are just bytes on the terminal stream.
    let _ = write!(
        out,
        "\x1b]777;notify;{};{}\x07\x1b]9;{}\x07",
        osc_safe(title),
        osc_safe(body),
        osc_safe(body)
    );
    let _ = out.flush();
}

/// A memory-backed directory for `$EDITOR` drafts: plaintext must not reach the disk.
fn draft_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
}

async fn run_editor(text: &str, mouse: bool) -> Result<String, String> {
    let dir = draft_dir().ok_or("no memory-backed directory (XDG_RUNTIME_DIR or /dev/shm) for the draft; refusing to write it to disk")?;
    let mut file = tempfile::Builder::new()
        .prefix("cinder-draft-")
        .suffix(".txt")
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot create the draft file: {e}"))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the draft: {e}"))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_owned());
    restore(mouse);
    let mut command = tokio::process::Command::new("sh");
    for var in crate::config::SECRET_ENV {
        command.env_remove(var);
    }
    let status = command
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .await;
    // Back to the UI whatever happened.
    let _ = enable_raw_mode();
    let mut out = io::stdout();
    let _ = execute!(out, EnterAlternateScreen, EnableBracketedPaste);
    if mouse {
        let _ = execute!(out, EnableMouseCapture);
    }
    let status = status.map_err(|e| format!("cannot run {editor}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{editor} exited with {status}; the draft was not changed"
        ));
    }
    let new =
        std::fs::read_to_string(file.path()).map_err(|e| format!("cannot read the draft: {e}"))?;
    // Overwrite before unlinking (the tempfile is removed on drop).
    let _ = std::fs::write(file.path(), vec![0u8; new.len()]);
    Ok(new)
}

fn local_offset_secs() -> i32 {
    chrono::Local::now().offset().local_minus_utc()
}

/// Runs the UI until the user quits.
///
/// # Errors
/// [`TuiError`] for a bad keymap or an unusable terminal; everything after start-up is shown
/// in the UI instead.
pub async fn run(opts: TuiOptions) -> Result<(), TuiError> {
    let theme_dir = opts.config_dir.join("themes");
    let keymap_file = opts.config_dir.join("keymap.toml");
    let keymap = Keymap::load(&opts.keymap, Some(&keymap_file))
        .map_err(|e| TuiError::Config(e.to_string()))?;
    let (theme, theme_error) = match Theme::load(&opts.theme, Some(&theme_dir)) {
        Ok(t) => (t, None),
        Err(e) => (Theme::default_theme(), Some(e.to_string())),
    };
    let mut app = App::new(
        theme,
        keymap,
        Settings {
            bell: opts.bell,
            desktop_notifications: opts.desktop_notifications,
            theme_dir: Some(theme_dir),
            keymap_file: Some(keymap_file),
            no_color: theme::no_color_requested(),
            utc_offset_secs: local_offset_secs(),
        },
    );
    if let Some(e) = theme_error {
        app.say(e, true);
    }
    let guard = TerminalGuard::enter(opts.mouse).map_err(TuiError::Terminal)?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(TuiError::Terminal)?;
    terminal.clear().map_err(TuiError::Terminal)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<LoopMsg>();
    let mut session: Option<SessionHandle> = None;
    let mut pending: Vec<Effect> = Vec::new();
    if let Some(p) = &opts.passphrase {
        if let Some(l) = &mut app.lock {
            l.busy = true;
        }
        pending.push(Effect::Unlock(Passphrase::new(
            String::from_utf8_lossy(p).into_owned(),
        )));
    }
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut redraw_at: Option<tokio::time::Instant> = None;
    let mut term_signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(TuiError::Terminal)?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(TuiError::Terminal)?;

    'outer: loop {
        for fx in std::mem::take(&mut pending) {
            if matches!(fx, Effect::Quit) {
                break 'outer;
            }
            if let Effect::Editor(text) = fx {
                match run_editor(&text, opts.mouse).await {
                    Ok(t) => pending.extend(app.on_event(UiEvent::EditorText(t))),
                    Err(e) => app.say(e, true),
                }
                let _ = terminal.clear();
                app.dirty = true;
                continue;
            }
            spawn_effect(fx, &session, &tx, &opts);
        }
        if app.quit {
            break;
        }
        if app.dirty {
            let since = last_draw.elapsed();
            if since >= Duration::from_millis(16) {
                let now = Instant::now();
                let mut drawn = view::Drawn::default();
                terminal
                    .draw(|f| drawn = view::draw(f, &app, now))
                    .map_err(TuiError::Terminal)?;
                app.dirty = false;
                app.page_height = drawn.page_height.max(1);
                last_draw = Instant::now();
                redraw_at = None;
                if let Some(fx) = app.wants_older(drawn.reached_top) {
                    pending.push(fx);
                    continue;
                }
            } else if redraw_at.is_none() {
                redraw_at = Some(tokio::time::Instant::now() + (Duration::from_millis(16) - since));
            }
        }
        tokio::select! {
            ev = events.next() => {
                let Some(Ok(ev)) = ev else { break };
                let actions = match ev {
                    Event::Key(k) if k.kind != KeyEventKind::Release => match app.keymap.resolve(k, app.mode) {
                        Resolved::Actions(a) => a,
                        Resolved::Pending | Resolved::Unbound => Vec::new(),
                    },
                    Event::Paste(s) => vec![Action::Paste(s)],
                    Event::Mouse(m) => match m.kind {
                        MouseEventKind::ScrollUp => vec![Action::ScrollUp; 3],
                        MouseEventKind::ScrollDown => vec![Action::ScrollDown; 3],
                        _ => Vec::new(),
                    },
                    Event::Resize(..) => {
                        app.dirty = true;
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                for a in actions {
                    pending.extend(app.update(a));
                }
            }
            Some(msg) = rx.recv() => match msg {
                LoopMsg::Ui(ev) => pending.extend(app.on_event(ev)),
                LoopMsg::Unlocked(handle, mut sub) => {
                    let acct = handle.account().clone();
                    let t = tx.clone();
                    tokio::spawn(async move {
                        loop {
                            match sub.recv().await {
                                Ok(e) => {
                                    if t.send(LoopMsg::Ui(UiEvent::Session(e))).is_err() {
                                        break;
                                    }
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                    // Missed events: reload what is shown from the cache.
                                    if t.send(LoopMsg::Ui(UiEvent::Resync)).is_err() {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    });
                    let already = handle.is_connected();
                    session = Some(handle);
                    pending.extend(app.unlocked(&acct.username, &acct.network_name));
                    if already {
                        pending.extend(app.on_event(UiEvent::Session(crate::session::SessionEvent::Connected)));
                    }
                }
            },
            _ = tick.tick() => pending.extend(app.on_event(UiEvent::Tick { now_ms: session_now_ms() })),
            () = async {
                match redraw_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = term_signal.recv() => break,
            _ = hup.recv() => break,
        }
    }
    if let Some(s) = session {
        s.shutdown().await;
    }
    drop(terminal);
    drop(guard);
    Ok(())
}

fn spawn_effect(
    fx: Effect,
    session: &Option<SessionHandle>,
    tx: &mpsc::UnboundedSender<LoopMsg>,
    opts: &TuiOptions,
) {
    let raw = tx.clone();
    let tx = tx.clone();
    let ui = move |e: UiEvent| {
        let _ = tx.send(LoopMsg::Ui(e));
    };
    match fx {
        Effect::Bell => {
            let mut out = io::stdout();
            let _ = out.write_all(b"\x07");
            let _ = out.flush();
        }
        Effect::Notify { title, body } => notify(&title, &body),
        Effect::Unlock(pass) => {
            let dir = opts.profile_dir.clone();
            let engine_opts = EngineOptions {
                auto_reconnect: true,
                reconnect_max: opts.reconnect_max,
                ca_pem: None,
                clock_offset_ms: 0,
                clock: crate::clock::Clock::system(),
            };
            let tx2 = raw;
            tokio::spawn(async move {
                match session::open(&dir, pass.into_bytes(), engine_opts).await {
                    Ok(h) => {
                        let sub = h.subscribe();
                        let _ = tx2.send(LoopMsg::Unlocked(h, sub));
                    }
                    Err(e) => {
                        let _ = tx2.send(LoopMsg::Ui(UiEvent::UnlockFailed(e.to_string())));
                    }
                }
            });
        }
        Effect::Quit | Effect::Editor(_) => {}
        other => {
            let Some(h) = session.clone() else {
                ui(UiEvent::Error("not unlocked yet".into()));
                return;
            };
            tokio::spawn(async move {
                match run_session_effect(&h, other).await {
                    Ok(events) => events.into_iter().for_each(&ui),
                    Err(e) => ui(UiEvent::Error(e)),
                }
            });
        }
    }
}

/// What a finished room change says on the status line.
fn room_done(change: &RoomChange, title: &str) -> String {
    match change {
        RoomChange::Invite(users) => format!("added {} to {title}", users.join(", ")),
        RoomChange::Remove(users) => format!("removed {} from {title}", users.join(", ")),
        RoomChange::Promote(u) => format!("{u} is now a moderator of {title}"),
        RoomChange::Demote(u) => format!("{u} is now a member of {title} (no longer a moderator)"),
        RoomChange::Leave => format!("you left {title}; its history stays here"),
        RoomChange::Topic(t) => format!("topic of {title}: {t}"),
    }
}

/// Runs one effect that needs the session, off the UI task; the events it yields go back to
/// the app in order.
async fn run_session_effect(h: &SessionHandle, fx: Effect) -> Result<Vec<UiEvent>, String> {
    let err = |e: session::SessionError| e.to_string();
    Ok(match fx {
        Effect::Send { to, text, opts } => {
            let q = h.send_message(&to, &text, opts).await.map_err(err)?;
            let me = h.account().username.clone();
            let now = session_now_ms();
            let mut out = vec![UiEvent::Queued(MessageRecord {
                message_id: q.message_id,
                conversation: q.conversation,
                outgoing: true,
                sender: me,
                sender_device: [0; 16],
                sent_at_ms: now,
                received_at_ms: now,
                text,
                state: MessageState::Sending,
                kind: MessageKind::Text,
                timers: q.timers,
            })];
            if !q.notes.is_empty() {
                out.push(UiEvent::Notice(q.notes.join("; ")));
            }
            out
        }
        Effect::LoadConversations => vec![UiEvent::Conversations(
            h.conversations().await.map_err(err)?,
        )],
        Effect::LoadRooms => vec![UiEvent::Rooms(h.rooms().await.map_err(err)?)],
        Effect::CreateRoom {
            kind,
            title,
            members,
        } => {
            let info = h
                .create_room(kind, &title, "", &members)
                .await
                .map_err(err)?;
            vec![UiEvent::RoomCreated(info)]
        }
        Effect::ChangeRoom { room, change } => {
            let request = match change.clone() {
                RoomChange::Invite(u) => RoomRequest::Invite(u),
                RoomChange::Remove(u) => RoomRequest::Remove(u),
                RoomChange::Promote(u) => RoomRequest::Promote(u),
                RoomChange::Demote(u) => RoomRequest::Demote(u),
                RoomChange::Leave => RoomRequest::Leave,
                RoomChange::Topic(t) => RoomRequest::Edit {
                    title: None,
                    description: Some(t),
                },
            };
            let info = h.change_room(&room, request).await.map_err(err)?;
            let me = h.account().username.clone();
            let done = room_done(&change, &info.display_name(&me));
            vec![UiEvent::RoomUpdated { info, done }]
        }
        Effect::SetTimers {
            conversation,
            expire,
            burn,
        } => {
            // A part left out stays as it is.
            let (old_expire, old_burn) = h.timers(&conversation).await.map_err(err)?;
            let expire = expire.unwrap_or(old_expire);
            let burn = burn.unwrap_or(old_burn);
            h.set_timers(&conversation, expire, burn)
                .await
                .map_err(err)?;
            vec![UiEvent::TimerDefaults {
                conversation,
                expire,
                burn,
                announce: true,
            }]
        }
        Effect::LoadTimers {
            conversation,
            announce,
        } => {
            let (expire, burn) = h.timers(&conversation).await.map_err(err)?;
            vec![UiEvent::TimerDefaults {
                conversation,
                expire,
                burn,
                announce,
            }]
        }
        Effect::LoadHistory {
            conversation,
            before,
        } => {
            let messages = h
                .history_before(&conversation, before, PAGE)
                .await
                .map_err(err)?;
            vec![UiEvent::History {
                conversation,
                older: before.is_some(),
                messages,
            }]
        }
        Effect::MarkRead(c) => {
            h.mark_read(&c).await.map_err(err)?;
            Vec::new()
        }
        Effect::Search(q) => {
            let results = h.search(&q, 100).await.map_err(err)?;
            vec![UiEvent::SearchResults { query: q, results }]
        }
        Effect::Retry(id) => {
            h.retry(id).await.map_err(err)?;
            Vec::new()
        }
        Effect::Discard(id) => {
            h.discard(id).await.map_err(err)?;
            Vec::new()
        }
        Effect::Unlock(_)
        | Effect::Bell
        | Effect::Notify { .. }
        | Effect::Editor(_)
        | Effect::Quit => Vec::new(),
    })
}

fn session_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
