//! Drawing. Views read the [`App`] and never change it (except reporting what they drew: via
//! [`Drawn`], the wrapped-height cache and the countdown badges on screen, which let a tick
//! redraw only when a badge would change). Only the visible window of a conversation is
//! materialised, so a conversation of 100,000 messages draws as fast as one of ten.

use std::time::Instant;

use chrono::{DateTime, Datelike, FixedOffset, Offset, Timelike, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::action::{ACTIONS, COMMANDS};
use super::app::{self, App, Connection, ConvKind, ConvView, Overlay};
use super::keymap::Mode;
use super::wrap::{truncate, width, wrap};
use crate::session::{self, MessageKind, MessageRecord, MessageState, Role, RoomInfo, RoomKind};

/// Smallest usable terminal.
pub const MIN_WIDTH: u16 = 80;
/// Smallest usable terminal.
pub const MIN_HEIGHT: u16 = 24;
const SIDEBAR: u16 = 24;
const SENDER_COLS: usize = 10;
/// Width of the member list.
const MEMBERS_COLS: u16 = 28;
/// Width of the member list when it is a box over the conversation.
const MEMBERS_BOX_COLS: u16 = 34;
/// From this terminal width on the member list is a pane beside the conversation; below it,
/// a box over the conversation's right side.
pub const MEMBERS_PANE_MIN_WIDTH: u16 = 110;
/// Columns a timed message keeps free on its first line for the countdown badge (the widest
/// badge, `🔥 23h59m`, and a space), so the text wraps the same however the badge changes.
const BADGE_COLS: usize = 10;

/// What a draw learned that the app may act on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drawn {
    /// The conversation view showed its oldest loaded message (load more).
    pub reached_top: bool,
    /// Rows of the conversation area.
    pub page_height: usize,
}

fn local(app: &App, ms: u64) -> DateTime<FixedOffset> {
    let tz = FixedOffset::east_opt(app.settings.utc_offset_secs).unwrap_or_else(|| Utc.fix());
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .with_timezone(&tz)
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App, now: Instant) -> Drawn {
    app.shown_badges.borrow_mut().clear();
    let area = frame.area();
    frame.render_widget(
        Block::default().style(app.theme.style("ui.background")),
        area,
    );
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, app, area);
        return Drawn::default();
    }
    if let Some(lock) = &app.lock {
        draw_lock(frame, app, area, lock);
        return Drawn::default();
    }
    let [main, status] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let composer_lines = app.composer.text.split('\n').count().clamp(1, 6) as u16;
    let [body, composer] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(composer_lines + 2)]).areas(main);
    let [sidebar, rest] =
        Layout::horizontal([Constraint::Length(SIDEBAR), Constraint::Min(20)]).areas(body);
    draw_sidebar(frame, app, sidebar);
    let members = app.members_shown();
    let (conversation, members_pane) = match members {
        Some(_) if area.width >= MEMBERS_PANE_MIN_WIDTH => {
            let [c, m] =
                Layout::horizontal([Constraint::Min(20), Constraint::Length(MEMBERS_COLS)])
                    .areas(rest);
            (c, Some(m))
        }
        _ => (rest, None),
    };
    let drawn = draw_conversation(frame, app, conversation);
    if let Some(room) = members {
        match members_pane {
            Some(pane) => draw_members_pane(frame, app, room, pane),
            None => draw_members_box(frame, app, room, rest),
        }
    }
    draw_composer(frame, app, composer);
    draw_status(frame, app, status, now);
    match &app.overlay {
        Some(Overlay::Help { scroll }) => draw_help(frame, app, area, *scroll),
        Some(Overlay::Switcher { query, selected }) => {
            draw_switcher(frame, app, area, query, *selected)
        }
        Some(Overlay::Search {
            query,
            results,
            selected,
        }) => draw_search(frame, app, area, query, results.as_deref(), *selected),
        None => {}
    }
    drawn
}

fn draw_too_small(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let lines = vec![
        Line::styled("Terminal too small", app.theme.style("ui.error")),
        Line::styled(
            format!(
                "{}x{} — Cinder needs at least {MIN_WIDTH}x{MIN_HEIGHT}",
                area.width, area.height
            ),
            app.theme.style("ui.text"),
        ),
        Line::styled(
            "Enlarge the window, or press Ctrl-C to quit.",
            app.theme.style("ui.dim"),
        ),
    ];
    let y = area.height.saturating_sub(3) / 2;
    let rect = Rect::new(area.x, area.y + y, area.width, 3.min(area.height));
    frame.render_widget(Paragraph::new(lines).centered(), rect);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_lock(frame: &mut Frame<'_>, app: &App, area: Rect, lock: &super::app::Lock) {
    let rect = centered(area, 60, 9);
    frame.render_widget(Clear, rect);
    let block = Block::bordered()
        .title(Span::styled(
            " Cinder — unlock your profile ",
            app.theme.style("ui.title"),
        ))
        .border_style(app.theme.style("ui.border.focused"))
        .style(app.theme.style("ui.overlay"));
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let status = if lock.busy {
        Line::styled("Unlocking…", app.theme.style("ui.info"))
    } else if let Some(e) = &lock.error {
        Line::styled(e.clone(), app.theme.style("ui.error"))
    } else {
        Line::styled("Enter unlocks, Ctrl-C quits.", app.theme.style("ui.dim"))
    };
    let lines = vec![
        Line::raw(""),
        Line::styled(
            "The local cache is encrypted. Type your passphrase;",
            app.theme.style("ui.text"),
        ),
        Line::styled("it is not shown as you type.", app.theme.style("ui.text")),
        Line::raw(""),
        Line::from(vec![Span::styled(
            "Passphrase: ",
            app.theme.style("ui.composer.prompt"),
        )]),
        Line::raw(""),
        status,
    ];
    frame.render_widget(
        Paragraph::new(lines),
        inner.inner(ratatui::layout::Margin::new(1, 0)),
    );
    if !lock.busy {
        frame.set_cursor_position(Position::new(inner.x + 1 + 12, inner.y + 4));
    }
}

fn draw_sidebar(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let block = Block::default()
        .borders(Borders::RIGHT)
        .border_style(app.theme.style("ui.border"))
        .style(app.theme.style("ui.sidebar"));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.conversations.is_empty() {
        let lines = vec![
            Line::styled(" Direct", app.theme.style("ui.sidebar.header")),
            Line::styled("  (none yet)", app.theme.style("ui.dim")),
            Line::styled("  /dm USER starts one", app.theme.style("ui.dim")),
            Line::styled("  /room create NAME", app.theme.style("ui.dim")),
        ];
        frame.render_widget(Paragraph::new(lines), inner);
        return;
    }
    // One row per section header and per conversation; the list is kept grouped by section.
    let mut rows: Vec<(ConvKind, Option<usize>)> = Vec::with_capacity(app.conversations.len() + 3);
    for (i, c) in app.conversations.iter().enumerate() {
        if rows.last().is_none_or(|(k, _)| *k != c.kind) {
            rows.push((c.kind, None));
        }
        rows.push((c.kind, Some(i)));
    }
    let height = inner.height as usize;
    let selected_row = rows
        .iter()
        .position(|r| r.1 == Some(app.selected))
        .unwrap_or(0);
    // Keep the selection visible.
    let first = selected_row.saturating_sub(height.saturating_sub(1));
    let mut lines = Vec::with_capacity(height);
    for &(kind, entry) in rows.iter().skip(first).take(height) {
        let Some(i) = entry else {
            lines.push(Line::styled(
                format!(" {}", kind.label()),
                app.theme.style("ui.sidebar.header"),
            ));
            continue;
        };
        let c = &app.conversations[i];
        let selected = i == app.selected;
        let marker = if selected { "▸ " } else { "  " };
        let unread = if c.unread > 0 {
            format!(" {}", c.unread.min(999))
        } else {
            String::new()
        };
        let name_cols = (inner.width as usize).saturating_sub(2 + width(&unread) + 1);
        let name = truncate(&c.title, name_cols);
        let pad = name_cols.saturating_sub(width(&name));
        let base = if selected {
            app.theme.style("ui.sidebar.selected")
        } else if c.left {
            app.theme.style("ui.sidebar.left")
        } else {
            app.theme.style("ui.sidebar")
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{marker}{name}{}", " ".repeat(pad)), base),
            Span::styled(
                unread,
                if selected {
                    base
                } else {
                    app.theme.style("ui.sidebar.unread")
                },
            ),
            Span::styled(" ", base),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// At most `max` wrapped lines of `text`, the last one ending in `…` if more were cut.
fn wrap_at_most(text: &str, cols: usize, max: usize) -> Vec<String> {
    let mut lines = wrap(text, cols);
    if lines.len() > max {
        lines.truncate(max);
        if let Some(last) = lines.last_mut() {
            let mut l = truncate(last, cols.saturating_sub(1));
            l.push('…');
            *last = l;
        }
    }
    lines
}

/// The member list's lines for `cols` columns: kind and size, topic, warning, timers, then
/// moderators (marked `@`) and members. `compact` (the box over the conversation) keeps the
/// topic and the warning to two lines each so the names stay in view.
pub fn member_lines(app: &App, room: &RoomInfo, cols: usize, compact: bool) -> Vec<Line<'static>> {
    let max = if compact { 2 } else { usize::MAX };
    let mut lines = Vec::new();
    let text_cols = cols.saturating_sub(2).max(4);
    let what = match room.kind {
        RoomKind::Room => "room",
        RoomKind::Group => "group",
    };
    let n = room.members.len();
    lines.push(Line::styled(
        format!(" {what} · {n} member{}", if n == 1 { "" } else { "s" }),
        app.theme.style("ui.dim"),
    ));
    if room.description.is_empty() {
        lines.push(Line::styled(" no topic", app.theme.style("ui.dim")));
    } else {
        for l in wrap_at_most(&format!("topic: {}", room.description), text_cols, max) {
            lines.push(Line::styled(format!(" {l}"), app.theme.style("ui.text")));
        }
    }
    if let Some(w) = &room.warning {
        for l in wrap_at_most(&format!("\u{26a0} {w}"), text_cols, max) {
            lines.push(Line::styled(format!(" {l}"), app.theme.style("ui.warning")));
        }
    }
    let t = room.timers;
    if t.expire_after.is_some() || t.burn_after.is_some() {
        for l in wrap(
            &format!("timers: {}", timer_words(t.expire_after, t.burn_after)),
            text_cols,
        ) {
            lines.push(Line::styled(format!(" {l}"), app.theme.style("ui.dim")));
        }
    }
    if room.my_role.is_none() {
        lines.push(Line::styled(
            " you are no longer a member",
            app.theme.style("ui.dim"),
        ));
    }
    let mut section: Option<Role> = None;
    for m in &room.members {
        let role = if room.kind == RoomKind::Room {
            m.role
        } else {
            Role::Member
        };
        if section != Some(role) {
            section = Some(role);
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                match role {
                    Role::Moderator => " Moderators",
                    Role::Member => " Members",
                },
                app.theme.style("ui.sidebar.header"),
            ));
        }
        let you = if m.username == app.me { " (you)" } else { "" };
        let (mark, style) = match role {
            Role::Moderator => ("@", app.theme.style("ui.members.moderator")),
            Role::Member => (" ", app.theme.style("ui.text")),
        };
        lines.push(Line::styled(
            truncate(&format!(" {mark}{}{you}", m.username), cols),
            style,
        ));
    }
    lines
}

fn draw_members_pane(frame: &mut Frame<'_>, app: &App, room: &RoomInfo, area: Rect) {
    let block = Block::default()
        .borders(Borders::LEFT)
        .border_style(app.theme.style("ui.border"))
        .title(Span::styled(" Members ", app.theme.style("ui.title")))
        .style(app.theme.style("ui.sidebar"));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = member_lines(app, room, inner.width as usize, false);
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The member list over the conversation's right side, for terminals too narrow for a pane.
fn draw_members_box(frame: &mut Frame<'_>, app: &App, room: &RoomInfo, area: Rect) {
    let w = MEMBERS_BOX_COLS.min(area.width);
    let lines = member_lines(app, room, w.saturating_sub(2) as usize, true);
    let h = (lines.len() as u16 + 2)
        .min(area.height.saturating_sub(1))
        .max(3);
    let rect = Rect::new(area.x + area.width - w, area.y + 1, w, h);
    frame.render_widget(Clear, rect);
    let block = Block::bordered()
        .title(Span::styled(
            " Members · Esc closes ",
            app.theme.style("ui.title"),
        ))
        .border_style(app.theme.style("ui.border.focused"))
        .style(app.theme.style("ui.overlay"));
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Timers in words: `expires 1d, burns 30s`.
fn timer_words(expire: Option<u32>, burn: Option<u32>) -> String {
    let d = |s: u32| session::format_duration(s.into());
    let mut parts = Vec::new();
    if let Some(e) = expire {
        parts.push(format!("expires {}", d(e)));
    }
    if let Some(b) = burn {
        parts.push(format!("burns {} after reading", d(b)));
    }
    parts.join(", ")
}

fn state_mark(m: &MessageRecord) -> &'static str {
    if !m.outgoing {
        return "";
    }
    match m.state {
        MessageState::Sending => " …",
        MessageState::Sent => " ✓",
        MessageState::Delivered => " ✓✓",
        MessageState::Read => " ●✓",
        MessageState::Failed => " !",
        _ => "",
    }
}

/// The lines of a system line (a membership change or a warning): the time, then `*` and
/// the text in the system style, or `⚠` and the text in the warning style.
fn system_lines<'a>(app: &App, m: &'a MessageRecord, cols: usize) -> Vec<Line<'a>> {
    let t = local(app, m.sent_at_ms);
    let time = format!("{:02}:{:02} ", t.hour(), t.minute());
    let (lead, text, style) = match m.text.strip_prefix('\u{26a0}') {
        Some(rest) => (
            "\u{26a0} ",
            rest.trim_start(),
            app.theme.style("message.system.warning"),
        ),
        None => ("* ", m.text.as_str(), app.theme.style("message.system")),
    };
    let indent = width(&time) + width(lead);
    wrap(text, cols.saturating_sub(indent).max(8))
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let head = if i == 0 {
                vec![
                    Span::styled(time.clone(), app.theme.style("message.time")),
                    Span::styled(lead, style),
                ]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            let mut spans = head;
            spans.push(Span::styled(l, style));
            Line::from(spans)
        })
        .collect()
}

/// The lines of one message (header line first), without a day separator.
fn message_lines<'a>(app: &App, m: &'a MessageRecord, cols: usize) -> Vec<Line<'a>> {
    if m.kind == MessageKind::System {
        return system_lines(app, m, cols);
    }
    let t = local(app, m.sent_at_ms);
    let time = format!("{:02}:{:02} ", t.hour(), t.minute());
    let sender_style = if m.outgoing {
        app.theme.style("message.sender.self")
    } else {
        app.theme.style("message.sender")
    };
    let sender = truncate(&m.sender, SENDER_COLS - 1);
    let pad = SENDER_COLS - width(&sender);
    let indent = width(&time) + SENDER_COLS;
    // Whether a message has a badge never changes, so its wrapped height stays cacheable.
    let badge = app::badge(&m.timers, app.now_ms);
    let reserve = if badge.is_some() { BADGE_COLS } else { 0 };
    let text_cols = cols.saturating_sub(indent + reserve).max(8);
    let (text, text_style) = if m.state == MessageState::Undecryptable {
        (
            "⚠ this message could not be decrypted".to_owned(),
            app.theme.style("message.undecryptable"),
        )
    } else {
        (m.text.clone(), app.theme.style("message.text"))
    };
    let mark = state_mark(m);
    let mark_style = if m.state == MessageState::Failed {
        app.theme.style("message.state.failed")
    } else {
        app.theme.style("message.state")
    };
    let wrapped = wrap(&text, text_cols);
    let last = wrapped.len() - 1;
    wrapped
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut used = indent + width(&l);
            let mut spans = if i == 0 {
                vec![
                    Span::styled(time.clone(), app.theme.style("message.time")),
                    Span::styled(format!("{sender}{}", " ".repeat(pad)), sender_style),
                ]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            spans.push(Span::styled(l, text_style));
            if i == last && !mark.is_empty() {
                spans.push(Span::styled(mark, mark_style));
                used += width(mark);
            }
            if i == 0
                && let Some(b) = &badge
            {
                let bw = width(&b.text);
                let gap = cols.saturating_sub(used + bw).max(1);
                spans.push(Span::raw(" ".repeat(gap)));
                spans.push(Span::styled(
                    b.text.clone(),
                    app.theme.style(if b.burning {
                        "message.timer.burning"
                    } else {
                        "message.timer"
                    }),
                ));
            }
            Line::from(spans)
        })
        .collect()
}

fn day_line<'a>(app: &App, ms: u64, cols: usize) -> Line<'a> {
    let t = local(app, ms);
    let label = format!(
        " {} {} {} {} ",
        t.weekday(),
        t.day(),
        month(t.month()),
        t.year()
    );
    let side = cols.saturating_sub(width(&label)) / 2;
    Line::styled(
        format!(
            "{}{label}{}",
            "─".repeat(side),
            "─".repeat(cols.saturating_sub(side + width(&label)))
        ),
        app.theme.style("message.day_separator"),
    )
}

fn month(m: u32) -> &'static str {
    [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .get(m.saturating_sub(1) as usize)
    .copied()
    .unwrap_or("?")
}

fn same_day(app: &App, a: u64, b: u64) -> bool {
    let (x, y) = (local(app, a), local(app, b));
    x.year() == y.year() && x.ordinal() == y.ordinal()
}

fn new_marker_line<'a>(app: &App, cols: usize) -> Line<'a> {
    let label = " new messages ";
    let side = cols.saturating_sub(label.len()) / 2;
    Line::styled(
        format!(
            "{}{label}{}",
            "─".repeat(side),
            "─".repeat(cols.saturating_sub(side + label.len()))
        ),
        app.theme.style("message.new_marker"),
    )
}

/// All lines of message `i` with its separators, top to bottom.
fn block_lines<'a>(app: &App, v: &'a ConvView, i: usize, cols: usize) -> Vec<Line<'a>> {
    let m = &v.messages[i];
    let mut lines = Vec::new();
    if i == 0 || !same_day(app, v.messages[i - 1].sent_at_ms, m.sent_at_ms) {
        lines.push(day_line(app, m.sent_at_ms, cols));
    }
    if v.new_marker == Some(i) {
        lines.push(new_marker_line(app, cols));
    }
    lines.extend(message_lines(app, m, cols));
    // Only what is drawn is watched: a tick redraws when one of these badges would change.
    if let Some(b) = app::badge(&m.timers, app.now_ms) {
        app.shown_badges.borrow_mut().push((m.timers, b.text));
    }
    lines
}

/// Height of message `i` with its separators, from the cache when possible.
fn block_height(app: &App, v: &ConvView, i: usize, cols: usize) -> usize {
    let m = &v.messages[i];
    let seps = usize::from(i == 0 || !same_day(app, v.messages[i - 1].sent_at_ms, m.sent_at_ms))
        + usize::from(v.new_marker == Some(i));
    let mut cache = v.heights.borrow_mut();
    if cache.cols != cols {
        cache.cols = cols;
        cache.lines.clear();
    }
    let body = match cache.lines.get(&m.message_id) {
        Some(&h) => usize::from(h),
        None => {
            let h = message_lines(app, m, cols).len();
            cache
                .lines
                .insert(m.message_id, u16::try_from(h).unwrap_or(u16::MAX));
            h
        }
    };
    seps + body
}

/// The visible lines of a conversation: walks from the newest message back only as far as the
/// window needs. Messages entirely below the window (scrolled past) are counted from cached
/// heights, so only the messages on screen are wrapped and styled. Returns the lines, top to
/// bottom, whether the oldest loaded message is on screen, and the effective scroll offset.
pub fn visible_lines<'a>(
    app: &App,
    v: &'a ConvView,
    cols: usize,
    rows: usize,
) -> (Vec<Line<'a>>, bool, usize) {
    let mut scroll = v.scroll;
    loop {
        let mut skipped = 0usize;
        let mut rev: Vec<Line<'a>> = Vec::with_capacity(rows + 8);
        let mut oldest_shown = false;
        for i in (0..v.messages.len()).rev() {
            if skipped < scroll {
                let h = block_height(app, v, i, cols);
                if skipped + h <= scroll {
                    skipped += h;
                    continue;
                }
            }
            let lines = block_lines(app, v, i, cols);
            for line in lines.into_iter().rev() {
                if skipped < scroll {
                    skipped += 1;
                } else if rev.len() < rows {
                    rev.push(line);
                }
            }
            if rev.len() >= rows {
                oldest_shown = i == 0;
                break;
            }
            oldest_shown = i == 0;
        }
        // Scrolled past the oldest line: pin the top of the conversation to the top.
        if rev.len() < rows && scroll > 0 {
            let total = skipped + rev.len();
            let max_scroll = total.saturating_sub(rows);
            if max_scroll < scroll {
                scroll = max_scroll;
                continue;
            }
        }
        rev.reverse();
        return (rev, oldest_shown, scroll);
    }
}

fn draw_conversation(frame: &mut Frame<'_>, app: &App, area: Rect) -> Drawn {
    let title = match app.current() {
        Some(id) => {
            let name = app
                .conversations
                .iter()
                .find(|c| c.id == id)
                .map_or(id, |c| c.title.as_str());
            // A room's topic follows its name, as far as it fits.
            match app.rooms.get(id).filter(|r| !r.description.is_empty()) {
                Some(r) => truncate(
                    &format!(" {name} — {} ", r.description),
                    (area.width as usize).saturating_sub(2),
                ),
                None => format!(" {name} "),
            }
        }
        None => " Cinder ".to_owned(),
    };
    let block = Block::default()
        .borders(Borders::BOTTOM)
        .border_style(app.theme.style("ui.border"))
        .title(Span::styled(title, app.theme.style("ui.title")));
    let inner = block.inner(area).inner(ratatui::layout::Margin::new(1, 0));
    frame.render_widget(block, area);
    let rows = inner.height as usize;
    let cols = inner.width as usize;
    let Some(id) = app.current() else {
        let lines = vec![
            Line::raw(""),
            Line::styled(
                format!("Welcome to Cinder, {}.", app.me),
                app.theme.style("ui.text"),
            ),
            Line::styled(
                "Type /dm USER to start a conversation, F1 for help.",
                app.theme.style("ui.dim"),
            ),
        ];
        frame.render_widget(Paragraph::new(lines), inner);
        return Drawn {
            reached_top: false,
            page_height: rows,
        };
    };
    let Some(v) = app.views.get(id) else {
        return Drawn::default();
    };
    if v.messages.is_empty() {
        let text = if v.loading {
            "Loading…"
        } else {
            "No messages yet. Say hello."
        };
        frame.render_widget(
            Paragraph::new(Line::styled(text, app.theme.style("ui.dim"))),
            inner,
        );
        return Drawn {
            reached_top: false,
            page_height: rows,
        };
    }
    let (mut lines, reached_top, scroll) = visible_lines(app, v, cols, rows);
    // Bottom-align short conversations, like every chat client.
    let pad = rows.saturating_sub(lines.len());
    let mut all = vec![Line::raw(""); pad];
    all.append(&mut lines);
    frame.render_widget(Paragraph::new(all), inner);
    if scroll > 0 {
        let hint = format!(" ↓ {scroll} lines below — End jumps to the newest ");
        let w = width(&hint) as u16;
        if inner.width > w {
            frame.render_widget(
                Paragraph::new(Line::styled(hint, app.theme.style("ui.info"))),
                Rect::new(
                    inner.x + inner.width - w,
                    inner.y + inner.height.saturating_sub(1),
                    w,
                    1,
                ),
            );
        }
    }
    Drawn {
        reached_top: reached_top && scroll > 0,
        page_height: rows,
    }
}

fn draw_composer(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let (title, prompt) = match app.mode {
        Mode::Command => (" command ".to_owned(), ":".to_owned()),
        _ => match app.current() {
            Some(id) => (composer_title(app, id), "› ".to_owned()),
            None => (" /dm USER to start ".to_owned(), "› ".to_owned()),
        },
    };
    let focused = app.overlay.is_none() && app.mode != Mode::Normal;
    let block = Block::bordered()
        .border_style(app.theme.style(if focused {
            "ui.border.focused"
        } else {
            "ui.border"
        }))
        .title(Span::styled(title, app.theme.style("ui.dim")))
        .style(app.theme.style("ui.composer"));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let pw = width(&prompt);
    let text_lines: Vec<&str> = app.composer.text.split('\n').collect();
    // Show the lines around the cursor when the text is taller than the box.
    let cursor_line = app.composer.text[..app.composer.cursor]
        .matches('\n')
        .count();
    let rows = inner.height as usize;
    let first = cursor_line.saturating_sub(rows.saturating_sub(1));
    let mut lines = Vec::new();
    if app.composer.text.is_empty() {
        let hint = match (app.mode, app.keymap.is_modal()) {
            (Mode::Normal, true) => "i to type, : for commands, ? for help",
            _ => "type a message, Enter sends, Alt-Enter adds a line, /help",
        };
        lines.push(Line::from(vec![
            Span::styled(prompt.clone(), app.theme.style("ui.composer.prompt")),
            Span::styled(hint, app.theme.style("ui.composer.placeholder")),
        ]));
    } else {
        for (i, l) in text_lines.iter().enumerate().skip(first).take(rows) {
            let lead = if i == 0 {
                prompt.clone()
            } else {
                " ".repeat(pw)
            };
            lines.push(Line::from(vec![
                Span::styled(lead, app.theme.style("ui.composer.prompt")),
                Span::styled(l.replace('\t', " "), app.theme.style("ui.text")),
            ]));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
    if focused {
        let line_start = app.composer.text[..app.composer.cursor]
            .rfind('\n')
            .map_or(0, |j| j + 1);
        let col = pw + width(&app.composer.text[line_start..app.composer.cursor]);
        let row = cursor_line - first;
        let x = inner.x + (col as u16).min(inner.width.saturating_sub(1));
        frame.set_cursor_position(Position::new(x, inner.y + row as u16));
    }
}

/// The composer's title: where the message goes, and the timers it will carry (the next
/// message's own from `/expire` and `/burn`, else the conversation's defaults).
fn composer_title(app: &App, id: &str) -> String {
    let item = app.conversations.iter().find(|c| c.id == id);
    let name = item.map_or("", |c| c.title.as_str());
    if item.is_some_and(|c| c.left) {
        return format!(" you left {name}; its history stays readable ");
    }
    let next = app.next_timers;
    let timers = if next.expire_after.is_some() || next.burn_after.is_some() {
        format!(
            "· next message {} ",
            timer_words(next.expire_after, next.burn_after)
        )
    } else {
        match app.timer_defaults.get(id) {
            Some(&(e, b)) if e.is_some() || b.is_some() => {
                format!("· timers: {} ", timer_words(e, b))
            }
            _ => String::new(),
        }
    };
    format!(" message {name} {timers}")
}

fn draw_status(frame: &mut Frame<'_>, app: &App, area: Rect, now: Instant) {
    let (conn, style) = match &app.connection {
        Connection::Connecting => ("◌ connecting".to_owned(), "ui.statusbar.reconnecting"),
        Connection::Connected => ("● connected".to_owned(), "ui.statusbar.connected"),
        Connection::Reconnecting { at, .. } => {
            let secs = at.saturating_duration_since(now).as_secs_f64().ceil() as u64;
            (
                format!("◌ reconnecting in {secs}s"),
                "ui.statusbar.reconnecting",
            )
        }
        Connection::Offline(_) => ("○ offline".to_owned(), "ui.statusbar.offline"),
    };
    let mode = match (app.keymap.is_modal(), app.mode) {
        (true, Mode::Normal) => " NORMAL ",
        (true, Mode::Insert) => " INSERT ",
        (_, Mode::Command) => " COMMAND ",
        _ => "",
    };
    let mut spans = vec![
        Span::styled(format!(" {conn} "), app.theme.style(style)),
        Span::styled(
            format!(" {}@{} ", app.me, app.network),
            app.theme.style("ui.statusbar"),
        ),
    ];
    if !mode.is_empty() {
        spans.push(Span::styled(mode, app.theme.style("ui.statusbar.banner")));
    }
    let left: usize = spans.iter().map(|s| width(&s.content)).sum();
    let (right, right_style) = match &app.notice {
        Some(n) => (n.text.clone(), if n.error { "ui.error" } else { "ui.info" }),
        None => (
            "F1 help · Ctrl-K switch · Ctrl-C quit".to_owned(),
            "ui.statusbar",
        ),
    };
    let room = (area.width as usize).saturating_sub(left + 1);
    let right = truncate(&right, room);
    let pad = room.saturating_sub(width(&right));
    spans.push(Span::styled(
        " ".repeat(pad),
        app.theme.style("ui.statusbar"),
    ));
    spans.push(Span::styled(right, app.theme.style(right_style)));
    spans.push(Span::styled(" ", app.theme.style("ui.statusbar")));
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(app.theme.style("ui.statusbar")),
        area,
    );
}

fn overlay_block<'a>(app: &App, title: &'a str) -> Block<'a> {
    Block::bordered()
        .title(Span::styled(title, app.theme.style("ui.title")))
        .border_style(app.theme.style("ui.border.focused"))
        .style(app.theme.style("ui.overlay"))
}

/// The help text: key bindings of the current mode, then the commands. Generated from the
/// keymap and the command table, like the README's key list.
pub fn help_lines(app: &App) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let modes: &[Mode] = if app.keymap.is_modal() {
        &[Mode::Normal, Mode::Insert, Mode::Command]
    } else {
        &[Mode::Insert]
    };
    for &mode in modes {
        if app.keymap.is_modal() {
            out.push((format!("{mode:?} mode").to_uppercase(), String::new()));
        } else {
            out.push((
                "KEYS".to_owned(),
                format!("keymap: {}", app.keymap.profile()),
            ));
        }
        for b in app.keymap.bindings(mode) {
            let doc = if b.doc.is_empty() {
                ACTIONS
                    .iter()
                    .find(|a| a.name == b.action)
                    .map_or(b.action.clone(), |a| a.doc.to_owned())
            } else {
                b.doc
            };
            out.push((b.keys, doc));
        }
        out.push((String::new(), String::new()));
    }
    out.push(("COMMANDS".to_owned(), String::new()));
    let p = app.keymap.command_prefix();
    for c in COMMANDS {
        out.push((
            format!("{p}{} {}", c.name, c.args).trim_end().to_owned(),
            c.doc.to_owned(),
        ));
    }
    out
}

fn draw_help(frame: &mut Frame<'_>, app: &App, area: Rect, scroll: usize) {
    let rect = centered(
        area,
        area.width.saturating_sub(8).min(90),
        area.height.saturating_sub(4),
    );
    frame.render_widget(Clear, rect);
    let block = overlay_block(app, " Help — Esc closes ");
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let entries = help_lines(app);
    let key_w = entries
        .iter()
        .map(|(k, _)| width(k))
        .max()
        .unwrap_or(10)
        .min(24);
    let doc_w = (inner.width as usize).saturating_sub(key_w + 4);
    // A key or command wider than the column gets its own line, its description below.
    let mut all: Vec<Line<'_>> = Vec::with_capacity(entries.len() + 8);
    for (k, d) in entries {
        let key_style = app.theme.style("ui.help.key");
        let doc = Span::styled(truncate(&d, doc_w), app.theme.style("ui.help.doc"));
        if width(&k) > key_w && !d.is_empty() {
            all.push(Line::styled(format!(" {k}"), key_style));
            all.push(Line::from(vec![Span::raw(" ".repeat(key_w + 3)), doc]));
        } else {
            let pad = key_w.saturating_sub(width(&k));
            all.push(Line::from(vec![
                Span::styled(format!(" {k}{}  ", " ".repeat(pad)), key_style),
                doc,
            ]));
        }
    }
    let lines: Vec<Line<'_>> = all
        .into_iter()
        .skip(scroll)
        .take(inner.height as usize)
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_switcher(frame: &mut Frame<'_>, app: &App, area: Rect, query: &str, selected: usize) {
    let rect = centered(area, 50, 14);
    frame.render_widget(Clear, rect);
    let block = overlay_block(app, " Switch conversation ");
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let mut lines = vec![Line::from(vec![
        Span::styled("› ", app.theme.style("ui.composer.prompt")),
        Span::styled(query.to_owned(), app.theme.style("ui.text")),
    ])];
    let matches = app.switcher_matches(query);
    if matches.is_empty() {
        let hint = if query.is_empty() {
            "no conversations yet".to_owned()
        } else {
            format!("Enter opens a conversation with {query}")
        };
        lines.push(Line::styled(hint, app.theme.style("ui.dim")));
    }
    for (row, &i) in matches
        .iter()
        .enumerate()
        .take(inner.height.saturating_sub(1) as usize)
    {
        let c = &app.conversations[i];
        let style = if row == selected {
            app.theme.style("ui.overlay.selected")
        } else {
            app.theme.style("ui.overlay")
        };
        let unread = if c.unread > 0 {
            format!("  ({})", c.unread)
        } else {
            String::new()
        };
        lines.push(Line::styled(format!("  {}{unread}", c.title), style));
    }
    frame.render_widget(Paragraph::new(lines), inner);
    frame.set_cursor_position(Position::new(inner.x + 2 + width(query) as u16, inner.y));
}

fn draw_search(
    frame: &mut Frame<'_>,
    app: &App,
    area: Rect,
    query: &str,
    results: Option<&[MessageRecord]>,
    selected: usize,
) {
    let rect = centered(
        area,
        area.width.saturating_sub(10).min(100),
        area.height.saturating_sub(6),
    );
    frame.render_widget(Clear, rect);
    let title = format!(" Search: {query} — Enter jumps, Esc closes ");
    let block = overlay_block(app, &title);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let mut lines = Vec::new();
    match results {
        None => lines.push(Line::styled("Searching…", app.theme.style("ui.dim"))),
        Some([]) => lines.push(Line::styled(
            "No messages match.",
            app.theme.style("ui.dim"),
        )),
        Some(rs) => {
            let rows = inner.height as usize;
            let first = selected.saturating_sub(rows.saturating_sub(1));
            for (i, m) in rs.iter().enumerate().skip(first).take(rows) {
                let t = local(app, m.sent_at_ms);
                let head = format!(
                    " {:04}-{:02}-{:02} {:02}:{:02} {} ",
                    t.year(),
                    t.month(),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    truncate(&m.sender, 12)
                );
                let room = (inner.width as usize).saturating_sub(width(&head) + 1);
                let text = truncate(&m.text.replace('\n', " "), room);
                let style = if i == selected {
                    app.theme.style("ui.overlay.selected")
                } else {
                    app.theme.style("ui.overlay")
                };
                lines.push(Line::from(vec![
                    Span::styled(head, style.patch(app.theme.style("message.time"))),
                    Span::styled(text, style),
                ]));
            }
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
