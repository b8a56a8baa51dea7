//! Snapshot tests of every screen, drawn into ratatui's `TestBackend` and compared line by line
//! with `tests/snapshots/*.txt`. Theme snapshots also record a style map (one letter per
//! distinct cell style, with a legend), so a colour change shows up as a diff.
//! Regenerate after an intended change with `CINDER_BLESS=1 cargo test --test tui_snapshots`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use cinder::session::{Role, RoomInfo, RoomKind, RoomMember, RoomTimers, SessionEvent};
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

const OPS: &str = "room:0123456789abcdef0123456789abcdef";
const GROUP: &str = "group:fedcba9876543210fedcba9876543210";

fn system(n: u8, conv: &str, text: &str, minutes: u64) -> MessageRecord {
    MessageRecord {
        kind: MessageKind::System,
        ..msg(n, "", conv, text, minutes, MessageState::Received)
    }
}

fn room_info(id: &str, kind: RoomKind, title: &str, members: &[(&str, Role)]) -> RoomInfo {
    RoomInfo {
        room_id: id.into(),
        kind,
        title: title.into(),
        description: String::new(),
        members: members
            .iter()
            .map(|(u, r)| RoomMember {
                username: (*u).into(),
                role: *r,
            })
            .collect(),
        my_role: members.iter().find(|(u, _)| *u == "alice").map(|(_, r)| *r),
        deleted: false,
        timers: RoomTimers::default(),
        warning: None,
    }
}

/// alice with direct conversations, a group with carol and dave, and the room "ops" (open),
/// whose history has membership changes, a security warning and a read receipt.
fn rooms_app() -> App {
    let mut a = App::new(
        Theme::default_theme(),
        Keymap::builtin("default").unwrap(),
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
        conv(OPS, 40, 0),
        conv("dm:alice:bob", 30, 0),
        conv(GROUP, 25, 3),
        conv("dm:alice:carol", 20, 2),
    ]));
    let (m, md) = (Role::Member, Role::Moderator);
    let mut ops = room_info(
        OPS,
        RoomKind::Room,
        "ops",
        &[("alice", md), ("bob", md), ("carol", m), ("dave", m)],
    );
    ops.description = "on-call rota and deploys; page bob for the database".into();
    ops.warning = Some(
        "a member has seen membership change 7 of this room but the relay has shown us only \
         up to 6; the relay may be withholding a change"
            .into(),
    );
    ops.timers.expire_after = Some(7 * 86_400);
    a.on_event(UiEvent::Rooms(vec![
        ops,
        room_info(
            GROUP,
            RoomKind::Group,
            "",
            &[("alice", m), ("carol", m), ("dave", m)],
        ),
    ]));
    // Open "ops" with the quick switcher (walking the sidebar would read the others).
    a.update(Action::QuickSwitcher);
    for c in "ops".chars() {
        a.update(Action::Insert(c));
    }
    a.update(Action::Submit);
    a.on_event(UiEvent::History {
        conversation: OPS.into(),
        older: false,
        messages: vec![
            system(1, OPS, "alice created the room \u{201c}ops\u{201d}", 0),
            system(2, OPS, "alice added bob, carol, dave", 0),
            system(3, OPS, "alice made bob a moderator", 1),
            msg(4, "bob", OPS, "deploy of 4.2 starts at 10:00; I'll post in here", 5, MessageState::Received),
            msg(5, "alice", OPS, "I'll watch the dashboards", 6, MessageState::Read),
            msg(6, "carol", OPS, "thanks both", 7, MessageState::Received),
            system(7, OPS, "\u{26a0} the relay is withholding membership changes of this room (a member is at change 7, the relay showed us 6); sending here is paused until it catches up", 8),
            msg(8, "alice", OPS, "seen the warning, checking with the admins", 9, MessageState::Delivered),
        ],
    });
    a
}

#[test]
fn grouped_sidebar_with_rooms_groups_and_system_lines() {
    for (w, h) in SIZES {
        let a = rooms_app();
        let text = text_of(&render(&a, w, h));
        for needle in [
            " Direct",
            " Groups",
            " Rooms",
            "carol, dave",
            "▸ ops",
            "* alice added bob, carol, dave",
            "\u{26a0} the relay is withholding",
            "●✓",
            "✓✓",
            "timers: expires 1w",
        ] {
            assert!(
                text.contains(needle),
                "{needle} missing at {w}x{h}:\n{text}"
            );
        }
        // Sections in order: Direct, Groups, Rooms.
        let (d, g, r) = (
            text.find(" Direct").unwrap(),
            text.find(" Groups").unwrap(),
            text.find(" Rooms").unwrap(),
        );
        assert!(d < g && g < r, "{text}");
        check(&format!("rooms_{w}x{h}"), &text);
    }
    // System lines and warnings have their own styles.
    let a = rooms_app();
    let b = render(&a, 80, 24);
    let style_at = |needle: &str| {
        let text = text_of(&b);
        let row = text.lines().position(|l| l.contains(needle)).unwrap();
        let line: String = (0..b.area.width)
            .map(|x| b[(x, row as u16)].symbol().to_owned())
            .collect();
        let col = line.find(needle).unwrap();
        let col = line[..col].chars().count() as u16;
        b[(col + 2, row as u16)].style()
    };
    let sys = a.theme.style("message.system");
    let warn = a.theme.style("message.system.warning");
    assert_eq!(style_at("* alice added").fg, sys.fg);
    assert_eq!(style_at("\u{26a0} the relay").fg, warn.fg);
    assert_ne!(sys.fg, warn.fg);
}

#[test]
fn member_list_is_a_pane_when_wide_and_a_box_when_narrow() {
    for (w, h) in SIZES {
        let mut a = rooms_app();
        a.update(Action::Run("/members".into()));
        let text = text_of(&render(&a, w, h));
        check(&format!("members_{w}x{h}"), &text);
        for needle in [
            "Members",
            "room · 4 members",
            "Moderators",
            "@alice (you)",
            "@bob",
            "carol",
            "topic: on-call rota",
            "\u{26a0} a member has seen",
        ] {
            assert!(
                text.contains(needle),
                "{needle} missing at {w}x{h}:\n{text}"
            );
        }
        // Moderators come first.
        assert!(
            text.find("@bob").unwrap() < text.find("  dave").unwrap(),
            "{text}"
        );
        a.update(Action::Cancel);
        assert!(
            !text_of(&render(&a, w, h)).contains("Moderators"),
            "Esc closes it"
        );
    }
    // The group has members only.
    let mut a = rooms_app();
    a.update(Action::PrevConversation);
    a.update(Action::ToggleMembers);
    let text = text_of(&render(&a, 200, 50));
    assert!(
        text.contains("group · 3 members") && !text.contains("Moderators"),
        "{text}"
    );
}

/// Fixed clock for the countdowns: ten minutes after T0.
const NOW: u64 = T0 + 10 * 60_000;

fn timed_app() -> App {
    let mut a = main_app("default", "default");
    a.on_event(UiEvent::Tick { now_ms: NOW });
    let bob = "dm:alice:bob";
    let with = |mut m: MessageRecord, t: MessageTimers| {
        m.timers = t;
        m
    };
    a.on_event(UiEvent::History {
        conversation: bob.into(),
        older: false,
        messages: vec![
            msg(
                1,
                "bob",
                bob,
                "Morning! Did the deploy go out?",
                0,
                MessageState::Received,
            ),
            with(
                msg(
                    2,
                    "bob",
                    bob,
                    "the staging password is hunter2 (expires soon)",
                    1,
                    MessageState::Received,
                ),
                MessageTimers {
                    expire_after_s: Some(600),
                    expire_at_ms: Some(NOW + 59_000),
                    ..MessageTimers::default()
                },
            ),
            with(
                msg(
                    3,
                    "bob",
                    bob,
                    "burn after reading: the door code is 4711",
                    2,
                    MessageState::Received,
                ),
                MessageTimers {
                    burn_after_s: Some(30),
                    burn_at_ms: Some(NOW + 12_000),
                    displayed_at_ms: Some(NOW - 18_000),
                    ..MessageTimers::default()
                },
            ),
            with(
                msg(4, "alice", bob, "got it, thanks", 3, MessageState::Read),
                MessageTimers {
                    expire_after_s: Some(86_400),
                    expire_at_ms: Some(NOW + 86_400_000 - 420_000),
                    ..MessageTimers::default()
                },
            ),
            with(
                msg(
                    5,
                    "alice",
                    bob,
                    "mine burns 30s after you read it",
                    4,
                    MessageState::Delivered,
                ),
                MessageTimers {
                    burn_after_s: Some(30),
                    ..MessageTimers::default()
                },
            ),
            msg(6, "alice", bob, "and this one stays", 5, MessageState::Sent),
        ],
    });
    a.update(Action::Run("/expire 1h".into()));
    a.update(Action::Run("/burn 30s".into()));
    // Esc clears the status line's notice, so the snapshot does not depend on its timeout.
    a.update(Action::Cancel);
    a
}

#[test]
fn countdown_badges_with_a_fixed_clock() {
    for (w, h) in SIZES {
        let a = timed_app();
        let text = text_of(&render(&a, w, h));
        for needle in [
            "\u{23f3} 59s",
            "\u{1f525} 12s",
            "\u{23f3} 23h53m",
            "\u{1f525} 30s",
            "next message expires 1h, burns 30s after reading",
        ] {
            assert!(
                text.contains(needle),
                "{needle} missing at {w}x{h}:\n{text}"
            );
        }
        let row = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap()
                .to_owned()
        };
        assert!(
            row("the staging").ends_with("\u{23f3} 59s"),
            "the badge is right-aligned:\n{text}"
        );
        assert!(
            row("and this one stays").ends_with('✓'),
            "untimed: no badge"
        );
        check(&format!("timers_{w}x{h}"), &text);
    }
    // A second later the badges read one second less; at the deadline the message is gone.
    let mut a = timed_app();
    a.on_event(UiEvent::Tick {
        now_ms: NOW + 1_000,
    });
    let text = text_of(&render(&a, 80, 24));
    assert!(
        text.contains("\u{23f3} 58s") && text.contains("\u{1f525} 11s"),
        "{text}"
    );
    a.on_event(UiEvent::Tick {
        now_ms: NOW + 12_000,
    });
    let text = text_of(&render(&a, 80, 24));
    assert!(!text.contains("door code"), "{text}");
    assert!(text.contains("\u{23f3} 47s"), "{text}");
    // NO_COLOR: the badges are still there, and the burning one is still bold.
    let mut a = timed_app();
    a.theme = a.theme.without_color();
    let b = render(&a, 80, 24);
    let text = text_of(&b);
    assert!(text.contains("\u{1f525} 12s"));
    let row = text
        .lines()
        .position(|l| l.contains("\u{1f525} 12s"))
        .unwrap() as u16;
    assert!((0..b.area.width).any(|x| {
        b[(x, row)].symbol() == "\u{1f525}"
            && b[(x, row)]
                .modifier
                .contains(ratatui::style::Modifier::BOLD)
    }));
}
