//! Snapshot tests of every screen, drawn into ratatui's `TestBackend` and compared line by line
//! with `tests/snapshots/*.txt`. Theme snapshots also record a style map (one letter per
//! distinct cell style, with a legend), so a colour change shows up as a diff.
//! Regenerate after an intended change with `CINDER_BLESS=1 cargo test --test tui_snapshots`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use cinder::session::SessionEvent;
use cinder::store::{ConversationSummary, MessageKind, MessageRecord, MessageState, MessageTimers};
use cinder::tui::action::Action;
use cinder::tui::app::{App, Settings, UiEvent};
use cinder::tui::keymap::Keymap;
use cinder::tui::theme::Theme;
use cinder::tui::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;

const T0: u64 = 1_764_138_000_000; // 2025-11-26 06:20 UTC

fn settings() -> Settings {
    Settings {
        bell: false,
        desktop_notifications: false,
        theme_dir: None,
        keymap_file: None,
        no_color: false,
        utc_offset_secs: 0,
    }
}

fn msg(
    n: u8,
    from: &str,
    conv: &str,
    text: &str,
    minutes: u64,
    state: MessageState,
) -> MessageRecord {
    MessageRecord {
        message_id: [n; 16],
        conversation: conv.into(),
        outgoing: from == "alice",
        sender: from.into(),
        sender_device: [0; 16],
        sent_at_ms: T0 + minutes * 60_000,
        received_at_ms: T0 + minutes * 60_000,
        text: text.into(),
        state,
        kind: MessageKind::Text,
        timers: MessageTimers::default(),
    }
}

fn locked(theme: &str) -> App {
    App::new(
        Theme::load(theme, None).unwrap(),
        Keymap::builtin("default").unwrap(),
        settings(),
    )
}

/// A signed-in app with three conversations and a short history with bob.
fn main_app(theme: &str, keymap: &str) -> App {
    let mut a = App::new(
        Theme::load(theme, None).unwrap(),
        Keymap::builtin(keymap).unwrap(),
        settings(),
    );
    a.unlocked("alice", "Acme");
    a.on_event(UiEvent::Session(SessionEvent::Connected));
    let conv = |c: &str, at: u64, unread: u64| ConversationSummary {
        conversation: c.into(),
        last_activity_ms: T0 + at * 60_000,
        messages: 3,
        unread,
    };
    a.on_event(UiEvent::Conversations(vec![
        conv("dm:alice:bob", 30, 0),
        conv("dm:alice:carol", 20, 2),
        conv("dm:alice:dave", 10, 0),
    ]));
    let bob = "dm:alice:bob";
    a.on_event(UiEvent::History {
        conversation: bob.into(),
        older: false,
        messages: vec![
            msg(1, "bob", bob, "Morning! Did the deploy go out?", 0, MessageState::Received),
            msg(2, "alice", bob, "Yes, 06:10. Rollback plan is in the runbook.", 2, MessageState::Delivered),
            msg(3, "bob", bob, "Great. Wide text check: 日本語のテキスト, combining é, emoji 🎉👋 and a long line that has to wrap across the conversation pane because it is far too long to fit.", 1441, MessageState::Received),
            msg(4, "alice", bob, "Line one\nline two", 1442, MessageState::Sent),
            msg(5, "alice", bob, "still sending…", 1443, MessageState::Sending),
        ],
    });
    a
}

fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| {
        view::draw(f, app, Instant::now());
    })
    .unwrap();
    t.backend().buffer().clone()
}

fn text_of(b: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..b.area.height {
        let mut line = String::new();
        let mut skip = 0;
        for x in 0..b.area.width {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let sym = b[(x, y)].symbol();
            line.push_str(sym);
            skip = unicode_width::UnicodeWidthStr::width(sym).saturating_sub(1);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn styles_of(b: &Buffer) -> String {
    let mut legend: BTreeMap<String, char> = BTreeMap::new();
    let mut rows = String::new();
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    for y in 0..b.area.height {
        for x in 0..b.area.width {
            let c = &b[(x, y)];
            let key = format!("fg={:?} bg={:?} mod={:?}", c.fg, c.bg, c.modifier);
            let n = legend.len();
            let l = *legend
                .entry(key)
                .or_insert_with(|| letters[n % letters.len()]);
            rows.push(l);
        }
        rows.push('\n');
    }
    let mut out = String::from("legend:\n");
    let mut pairs: Vec<_> = legend.into_iter().collect();
    pairs.sort_by_key(|(_, l)| *l);
    for (k, l) in pairs {
        out.push_str(&format!("  {l} {k}\n"));
    }
    out + &rows
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("CINDER_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with CINDER_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
        let first = e
            .iter()
            .zip(&a)
            .position(|(x, y)| x != y)
            .unwrap_or(e.len().min(a.len()));
        panic!(
            "snapshot {name} differs at line {}:\n  expected: {:?}\n  actual:   {:?}\n(run with CINDER_BLESS=1 to accept)\n\nactual screen:\n{actual}",
            first + 1,
            e.get(first),
            a.get(first)
        );
    }
}

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 50)];

#[test]
fn locked_screen() {
    for (w, h) in SIZES {
        let mut a = locked("default");
        for c in "secret".chars() {
            a.update(Action::Insert(c));
        }
        let text = text_of(&render(&a, w, h));
        assert!(!text.contains("secret"), "the passphrase is never drawn");
        check(&format!("locked_{w}x{h}"), &text);
        a.on_event(UiEvent::UnlockFailed("wrong passphrase".into()));
        assert!(text_of(&render(&a, w, h)).contains("wrong passphrase"));
    }
}

#[test]
fn main_screen() {
    for (w, h) in SIZES {
        let a = main_app("default", "default");
        let text = text_of(&render(&a, w, h));
        for needle in [
            "bob",
            "carol",
            "2",
            "Morning!",
            "● connected",
            "alice@Acme",
            "✓✓",
            "日本語",
        ] {
            assert!(
                text.contains(needle),
                "{needle} missing at {w}x{h}:\n{text}"
            );
        }
        check(&format!("main_{w}x{h}"), &text);
    }
}

#[test]
fn help_screen() {
    for (w, h) in SIZES {
        let mut a = main_app("default", "default");
        a.update(Action::ToggleHelp);
        let text = text_of(&render(&a, w, h));
        assert!(
            text.contains("/dm USER") && text.contains("quick_switcher")
                || text.contains("conversation by fuzzy name")
        );
        check(&format!("help_{w}x{h}"), &text);
    }
}

#[test]
fn quick_switcher() {
    for (w, h) in SIZES {
        let mut a = main_app("default", "default");
        a.update(Action::QuickSwitcher);
        for c in "ca".chars() {
            a.update(Action::Insert(c));
        }
        let text = text_of(&render(&a, w, h));
        assert!(text.contains("Switch conversation") && text.contains("carol"));
        check(&format!("switcher_{w}x{h}"), &text);
    }
}

#[test]
fn search_results() {
    for (w, h) in SIZES {
        let mut a = main_app("default", "default");
        a.update(Action::Run("/search deploy".into()));
        a.on_event(UiEvent::SearchResults {
            query: "deploy".into(),
            results: vec![msg(
                1,
                "bob",
                "dm:alice:bob",
                "Morning! Did the deploy go out?",
                0,
                MessageState::Received,
            )],
        });
        let text = text_of(&render(&a, w, h));
        assert!(text.contains("Search: deploy") && text.contains("Did the deploy"));
        check(&format!("search_{w}x{h}"), &text);
    }
}

#[test]
fn too_small_screen() {
    let a = main_app("default", "default");
    let text = text_of(&render(&a, 60, 20));
    assert!(text.contains("Terminal too small") && text.contains("60x20"));
    check("too_small_60x20", &text);
}

#[test]
fn every_bundled_theme() {
    for name in Theme::bundled_names() {
        for (w, h) in SIZES {
            let b = render(&main_app(name, "default"), w, h);
            check(
                &format!("theme_{name}_{w}x{h}"),
                &format!("{}{}", text_of(&b), styles_of(&b)),
            );
        }
    }
    // NO_COLOR: no cell carries a colour.
    let mut a = App::new(
        Theme::default_theme(),
        Keymap::builtin("default").unwrap(),
        Settings {
            no_color: true,
            ..settings()
        },
    );
    a.unlocked("alice", "Acme");
    let b = render(&a, 80, 24);
    for c in b.content() {
        assert_eq!(c.fg, ratatui::style::Color::Reset);
        assert_eq!(c.bg, ratatui::style::Color::Reset);
    }
}

#[test]
fn vim_mode_line_and_reconnecting_status() {
    let mut a = main_app("default", "vim");
    a.on_event(UiEvent::Session(SessionEvent::Disconnected {
        retry_in: Some(std::time::Duration::from_secs(5)),
        reason: "connection closed".into(),
    }));
    let text = text_of(&render(&a, 80, 24));
    assert!(text.contains("NORMAL"), "{text}");
    assert!(text.contains("reconnecting in"), "{text}");
}

#[test]
fn scrolling_shows_older_messages_and_a_hint() {
    let mut a = main_app("default", "default");
    let many: Vec<MessageRecord> = (0..60u8)
        .map(|i| {
            msg(
                100 + i,
                "bob",
                "dm:alice:bob",
                &format!("older message {i}"),
                1500 + u64::from(i),
                MessageState::Received,
            )
        })
        .collect();
    a.on_event(UiEvent::History {
        conversation: "dm:alice:bob".into(),
        older: true,
        messages: many,
    });
    for _ in 0..6 {
        a.update(Action::ScrollUp);
    }
    let text = text_of(&render(&a, 80, 24));
    assert!(text.contains("lines below"), "{text}");
    a.update(Action::ScrollBottom);
    assert!(!text_of(&render(&a, 80, 24)).contains("lines below"));
}
