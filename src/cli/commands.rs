//! One function per subcommand.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::json;

use super::UsageError;
use super::passphrase::{self, Sources};
use crate::config::Config;
use crate::crypto::hex;
use crate::crypto::passphrase::{CacheHeader, KdfParams};
use crate::protocol::names;
use crate::protocol::safe_text;
use crate::session::register::{RegisterOptions, register};
use crate::session::{self, EngineOptions, Inbound, SessionEvent, SessionHandle};
use crate::store::{MessageKind, MessageRecord, MessageTimers, Store};

/// What every client command needs.
pub struct Context {
    /// The profile directory.
    pub profile_dir: PathBuf,
    /// Passphrase sources.
    pub passphrase: Sources,
    /// Loaded configuration.
    pub config: Config,
    /// Print timing figures to stderr.
    pub timings: bool,
    /// The configuration directory (themes/, keymap.toml).
    pub config_dir: PathBuf,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Room titles by id, for output.
pub(crate) type Rooms = std::collections::HashMap<String, session::RoomInfo>;

pub(crate) async fn room_map(handle: &SessionHandle) -> Rooms {
    handle
        .rooms()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.room_id.clone(), r))
        .collect()
}

fn timers_json(t: &MessageTimers) -> serde_json::Value {
    if !t.is_timed() {
        return serde_json::Value::Null;
    }
    json!({
        "expire_after": t.expire_after_s,
        "burn_after": t.burn_after_s,
        "expires_at": t.expire_at_ms.map(rfc3339),
        "burns_at": t.burn_at_ms.map(rfc3339),
    })
}

pub(crate) fn message_json(m: &MessageRecord, rooms: &Rooms, me: &str) -> serde_json::Value {
    let room = rooms.get(&m.conversation).map(|r| {
        json!({"id": r.room_id, "title": r.display_name(me), "kind": match r.kind {
            session::RoomKind::Room => "room",
            session::RoomKind::Group => "group",
        }})
    });
    json!({
        "type": if m.kind == MessageKind::System { "system" } else { "message" },
        "id": hex::encode(&m.message_id),
        "conversation": m.conversation,
        "room": room,
        "from": m.sender,
        "from_device": hex::encode(&m.sender_device),
        "outgoing": m.outgoing,
        "sent_at": rfc3339(m.sent_at_ms),
        "received_at": rfc3339(m.received_at_ms),
        "state": m.state.as_str(),
        "text": m.text,
        "timers": timers_json(&m.timers),
    })
}

fn timer_suffix(t: &MessageTimers) -> String {
    let mut parts = Vec::new();
    if let Some(e) = t.expire_after_s {
        parts.push(format!("expires in {}", session::format_duration(e.into())));
    }
    if let Some(b) = t.burn_after_s {
        parts.push(format!(
            "burns {} after reading",
            session::format_duration(b.into())
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  ({})", parts.join(", "))
    }
}

/// What a message body's continuation lines start with: every real message line starts with
/// `[`, so a peer's text can never draw a line that passes for another sender's.
const BODY_INDENT: &str = "    ";

fn print_message(
    out: &mut impl Write,
    m: &MessageRecord,
    json_mode: bool,
    rooms: &Rooms,
    me: &str,
) -> std::io::Result<()> {
    if json_mode {
        writeln!(out, "{}", message_json(m, rooms, me))
    } else {
        let when =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(m.sent_at_ms));
        let place = rooms
            .get(&m.conversation)
            .map(|r| format!("#{} ", safe_text::line(&r.display_name(me))))
            .unwrap_or_default();
        if m.kind == MessageKind::System {
            writeln!(
                out,
                "[{when}] {place}* {}",
                safe_text::body(&m.text, BODY_INDENT)
            )
        } else {
            writeln!(
                out,
                "[{when}] {place}{}: {}{}",
                safe_text::line(&m.sender),
                safe_text::body(&m.text, BODY_INDENT),
                timer_suffix(&m.timers)
            )
        }
    }
}

fn print_undecryptable(
    out: &mut impl Write,
    from: &str,
    id: &[u8; 16],
    error: &str,
    json_mode: bool,
) -> std::io::Result<()> {
    if json_mode {
        writeln!(
            out,
            "{}",
            json!({"type": "error", "id": hex::encode(id), "from": from, "error": error})
        )
    } else {
        writeln!(
            out,
            "(a message from {} could not be decrypted: {}; it was dropped)",
            safe_text::line(from),
            safe_text::line(error)
        )
    }
}

fn timing(ctx: &Context, what: &str, since: Instant) {
    if ctx.timings {
        eprintln!(
            "cinder: {what}: {:.1} ms",
            since.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Unlocks the profile and starts an engine.
pub(crate) async fn open_engine(
    ctx: &Context,
    auto_reconnect: bool,
) -> anyhow::Result<SessionHandle> {
    let pass = passphrase::read(&ctx.passphrase, "Passphrase: ", false)?;
    let dir = ctx.profile_dir.clone();
    let t0 = Instant::now();
    let store = tokio::task::spawn_blocking(move || session::unlock(&dir, &pass)).await??;
    timing(ctx, "unlock (key derivation)", t0);
    let ca_pem = store.db().blob("ca_cert")?.map(|b| b.to_vec());
    let handle = session::spawn(
        store,
        EngineOptions {
            auto_reconnect,
            reconnect_max: ctx.config.network.reconnect_max(),
            ca_pem,
            clock_offset_ms: 0,
            clock: crate::clock::Clock::system(),
        },
    )?;
    Ok(handle)
}

/// Arguments of `cinder register`.
pub struct RegisterArgs {
    /// Relay URL.
    pub server: String,
    /// Invite code.
    pub invite: String,
    /// Username.
    pub username: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Allow `ws://` to a remote host.
    pub insecure_ws: bool,
    /// Extra CA for `wss://`.
    pub ca_cert: Option<PathBuf>,
    /// Test-only cheap Argon2id.
    pub insecure_fast_kdf: bool,
}

/// `cinder register`.
pub async fn cmd_register(ctx: &Context, a: RegisterArgs) -> anyhow::Result<()> {
    let pass = passphrase::read(&ctx.passphrase, "New passphrase for this profile: ", true)?;
    let ca_pem = match &a.ca_cert {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let kdf = if a.insecure_fast_kdf {
        KdfParams::INSECURE_FOR_TESTS
    } else {
        KdfParams::DEFAULT
    };
    let r = register(
        &ctx.profile_dir,
        RegisterOptions {
            server_url: a.server,
            invite: a.invite,
            username: a.username,
            display_name: a.display_name,
            passphrase: pass,
            kdf,
            allow_insecure_ws: a.insecure_ws,
            ca_pem,
            clock: crate::clock::Clock::system(),
        },
    )
    .await?;
    println!(
        "Registered {} on {}{}. Profile: {}",
        r.username,
        r.network_name,
        if r.is_admin { " (network admin)" } else { "" },
        r.profile_dir.display()
    );
    Ok(())
}

/// Where `cinder send` sends, and with which timers.
#[derive(Clone, Debug, Default)]
pub struct SendTarget {
    /// A user (direct message).
    pub to: Option<String>,
    /// A room or group DM (id, id prefix or title).
    pub room: Option<String>,
    /// Expiration timer (seconds).
    pub expire: Option<u32>,
    /// Burn-on-read timer (seconds).
    pub burn: Option<u32>,
}

/// `cinder send (--to USER | --room ROOM) [--expire DUR] [--burn DUR] TEXT|-`.
pub async fn cmd_send(ctx: &Context, target: &SendTarget, text: &str) -> anyhow::Result<()> {
    let text = if text == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the message from stdin")?;
        s
    } else {
        text.to_owned()
    };
    if text.is_empty() {
        return Err(UsageError("the message is empty".into()).into());
    }
    if target.to.is_some() == target.room.is_some() {
        return Err(UsageError("give exactly one of --to USER or --room ROOM".into()).into());
    }
    let handle = open_engine(ctx, false).await?;
    let t0 = Instant::now();
    let result = async {
        let to = match (&target.to, &target.room) {
            (Some(u), _) => u.clone(),
            (None, Some(r)) => {
                // Membership changes waiting for us come first, so the title resolves and
                // the room's current members get the message.
                match handle.sync().await {
                    Ok(_) | Err(session::SessionError::Relay { .. }) => {}
                    Err(e) => return Err(e),
                }
                handle.room(r).await?.room_id
            }
            (None, None) => String::new(),
        };
        let q = handle
            .send_message(
                &to,
                &text,
                session::SendOptions {
                    expire_after: target.expire,
                    burn_after: target.burn,
                },
            )
            .await?;
        for n in &q.notes {
            eprintln!("cinder: {n}");
        }
        handle.flush().await
    }
    .await;
    timing(ctx, "send (excluding key derivation)", t0);
    handle.shutdown().await;
    match result {
        Ok(()) => Ok(()),
        Err(e @ session::SessionError::Unreachable(_)) => {
            Err(anyhow::Error::new(e).context("the message is queued and will be sent by the next cinder command that reaches the relay"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `cinder recv`.
pub async fn cmd_recv(
    ctx: &Context,
    json_mode: bool,
    follow: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let handle = open_engine(ctx, follow).await?;
    let me = handle.account().username.clone();
    let mut events = handle.subscribe();
    let t0 = Instant::now();
    let mut out = std::io::stdout().lock();
    let result: anyhow::Result<()> = async {
        // Queued sends go out first (a crashed `send` is finished here).
        match handle.flush().await {
            Ok(()) | Err(session::SessionError::Relay { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let got = handle.sync().await?;
        timing(ctx, "recv (excluding key derivation)", t0);
        let mut rooms = room_map(&handle).await;
        if !follow {
            // What arrived as live pushes while connecting (not in `got`), and room membership
            // lines (someone added you, a warning about the relay), come from the events.
            let in_got: std::collections::HashSet<[u8; 16]> = got
                .iter()
                .filter_map(|i| match i {
                    Inbound::Message(m) => Some(m.message_id),
                    Inbound::Undecryptable { .. } => None,
                })
                .collect();
            let mut shown = Vec::new();
            let mut printed = 0usize;
            while let Ok(ev) = events.try_recv() {
                match ev {
                    SessionEvent::Message(m) if !in_got.contains(&m.message_id) && !m.outgoing => {
                        print_message(&mut out, &m, json_mode, &rooms, &me)?;
                        if m.kind != MessageKind::System {
                            shown.push(m.message_id);
                        }
                        printed += 1;
                    }
                    SessionEvent::Undecryptable {
                        from,
                        message_id,
                        error,
                    } if !got.iter().any(|i| matches!(i, Inbound::Undecryptable { message_id: x, .. } if *x == message_id)) => {
                        print_undecryptable(&mut out, &from, &message_id, &error, json_mode)?;
                        printed += 1;
                    }
                    _ => {}
                }
            }
            for i in &got {
                match i {
                    Inbound::Message(m) => {
                        print_message(&mut out, m, json_mode, &rooms, &me)?;
                        shown.push(m.message_id);
                    }
                    Inbound::Undecryptable {
                        from,
                        message_id,
                        error,
                    } => print_undecryptable(&mut out, from, message_id, error, json_mode)?,
                }
            }
            out.flush()?;
            // Printing is displaying: burn timers start, read receipts go out.
            handle.displayed(&shown).await?;
            if !got.is_empty() || printed > 0 || timeout.is_none() {
                return Ok(());
            }
        }
        // Follow mode prints everything from events (sync results were emitted too); a plain
        // `--timeout` waits for the first message.
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, events.recv()).await.ok(),
                    None => Some(events.recv().await),
                }
            };
            let ev = tokio::select! {
                ev = next => ev,
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(ev) = ev else { break };
            match ev {
                Ok(SessionEvent::Message(m)) => {
                    if !rooms.contains_key(&m.conversation) && session::is_room(&m.conversation) {
                        rooms = room_map(&handle).await;
                    }
                    print_message(&mut out, &m, json_mode, &rooms, &me)?;
                    out.flush()?;
                    if !m.outgoing {
                        handle.displayed(&[m.message_id]).await?;
                    }
                    if !follow {
                        break;
                    }
                }
                Ok(SessionEvent::RoomChanged { .. }) => rooms = room_map(&handle).await,
                Ok(SessionEvent::Shredded {
                    conversation,
                    message_ids,
                }) if json_mode => {
                    for id in message_ids {
                        writeln!(
                            out,
                            "{}",
                            json!({"type": "shredded", "id": hex::encode(&id), "conversation": conversation})
                        )?;
                    }
                    out.flush()?;
                }
                Ok(SessionEvent::Undecryptable {
                    from,
                    message_id,
                    error,
                }) => {
                    print_undecryptable(&mut out, &from, &message_id, &error, json_mode)?;
                    out.flush()?;
                }
                Ok(SessionEvent::Disconnected { retry_in, reason }) if follow => match retry_in {
                    Some(d) => {
                        eprintln!("cinder: {reason}; reconnecting in {:.1}s", d.as_secs_f64())
                    }
                    None => eprintln!("cinder: {reason}"),
                },
                Ok(SessionEvent::Connected) if follow => eprintln!("cinder: connected"),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!(
                        "cinder: {n} events were dropped from the output; `cinder history` has them"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        Ok(())
    }
    .await;
    handle.shutdown().await;
    result
}

/// `cinder history (--with USER | --room ROOM)`: works offline, from the cache.
pub async fn cmd_history(
    ctx: &Context,
    with: Option<&str>,
    room: Option<&str>,
    json_mode: bool,
    limit: usize,
) -> anyhow::Result<()> {
    if with.is_some() == room.is_some() {
        return Err(UsageError("give exactly one of --with USER or --room ROOM".into()).into());
    }
    let handle = open_engine(ctx, false).await?;
    let me = handle.account().username.clone();
    let result = async {
        let conversation = match (with, room) {
            (Some(w), _) => {
                let w = names::canonical_username(w)
                    .ok_or_else(|| UsageError(format!("not a valid username: {w:?}")))?;
                names::dm_conversation(&me, &w)
            }
            (None, Some(r)) => handle.room(r).await?.room_id,
            (None, None) => String::new(),
        };
        let rooms = room_map(&handle).await;
        let messages = handle.history(&conversation, limit).await?;
        // Why each failed message of ours failed, to print beside it.
        let mut failures = std::collections::HashMap::new();
        for m in messages
            .iter()
            .filter(|m| m.state == session::MessageState::Failed)
        {
            if let Some(reason) = handle.failure(m.message_id).await? {
                failures.insert(m.message_id, reason);
            }
        }
        anyhow::Ok((messages, rooms, failures))
    }
    .await;
    handle.shutdown().await;
    let (messages, rooms, failures) = result?;
    let mut out = std::io::stdout().lock();
    for m in &messages {
        let failure = failures.get(&m.message_id);
        if json_mode {
            let mut v = message_json(m, &rooms, &me);
            if let (Some(reason), Some(obj)) = (failure, v.as_object_mut()) {
                obj.insert("failure".into(), serde_json::Value::from(reason.as_str()));
            }
            writeln!(out, "{v}")?;
        } else if m.kind == MessageKind::System {
            print_message(&mut out, m, false, &rooms, &me)?;
        } else {
            let mark = match (m.state.as_str(), failure) {
                ("sending", _) => " (sending)".to_owned(),
                ("failed", Some(reason)) => format!(" (FAILED: {reason})"),
                ("failed", None) => " (FAILED)".to_owned(),
                ("undecryptable", _) => " (could not be decrypted)".to_owned(),
                _ => String::new(),
            };
            let when =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(m.sent_at_ms));
            writeln!(
                out,
                "[{when}] {}: {}{mark}{}",
                safe_text::line(&m.sender),
                safe_text::body(&m.text, BODY_INDENT),
                timer_suffix(&m.timers)
            )?;
        }
    }
    Ok(())
}

/// `cinder admin invite --email E`.
pub async fn cmd_admin_invite(ctx: &Context, email: &str, admin: bool) -> anyhow::Result<()> {
    let handle = open_engine(ctx, false).await?;
    let r = handle.create_invite(email, admin).await;
    handle.shutdown().await;
    let code = r?;
    let now = SystemTime::now();
    println!(
        "Invite for {email}{} created {}. Give this code to them:",
        if admin { " (admin)" } else { "" },
        humantime::format_rfc3339_seconds(now)
    );
    println!("{code}");
    Ok(())
}

/// `cinder passphrase change`.
pub async fn cmd_passphrase_change(ctx: &Context, new_sources: Sources) -> anyhow::Result<()> {
    let old = passphrase::read(&ctx.passphrase, "Current passphrase: ", false)?;
    let new = passphrase::read(&new_sources, "New passphrase: ", true)?;
    let dir = ctx.profile_dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        if !Store::exists(&dir) {
            return Err(UsageError(format!("no profile at {}", dir.display())).into());
        }
        let header = CacheHeader::decode(&std::fs::read(dir.join("cache.header"))?)?;
        Store::change_passphrase(&dir, &old, &new, header.params)?;
        Ok(())
    })
    .await??;
    println!("Passphrase changed.");
    Ok(())
}

/// `cinder chat` (and `cinder` alone): the terminal UI.
pub async fn cmd_chat(ctx: &Context) -> anyhow::Result<()> {
    if !Store::exists(&ctx.profile_dir) {
        return Err(UsageError(format!(
            "no profile at {}; run `cinder register` first (or try `cinder demo`)",
            ctx.profile_dir.display()
        ))
        .into());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(UsageError(
            "the chat UI needs a terminal; for scripts use send, recv and history".into(),
        )
        .into());
    }
    let passphrase = passphrase::read_non_interactive(&ctx.passphrase)?;
    let ui = &ctx.config.ui;
    crate::tui::run::run(crate::tui::run::TuiOptions {
        profile_dir: ctx.profile_dir.clone(),
        theme: ui.theme.clone(),
        keymap: ui.keymap.clone(),
        config_dir: ctx.config_dir.clone(),
        bell: ui.bell,
        desktop_notifications: ui.desktop_notifications,
        mouse: ui.mouse,
        reconnect_max: ctx.config.network.reconnect_max(),
        passphrase,
    })
    .await?;
    Ok(())
}
