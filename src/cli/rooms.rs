//! `cinder room ...`, `cinder timer` and `cinder admin policy`: rooms, group DMs, timer
//! defaults and the network policy from the command line.

use std::io::Write;

use serde_json::json;

use super::UsageError;
use super::commands::{Context, open_engine};
use crate::protocol::safe_text;
use crate::session::{
    self, Role, RoomInfo, RoomKind, RoomRequest, SessionHandle, format_duration, parse_timer,
};

/// What `cinder room` was asked to do.
#[derive(Clone, Debug)]
pub enum RoomCommand {
    /// Create a room or group DM.
    Create {
        /// Title.
        name: String,
        /// Topic.
        description: String,
        /// Initial members.
        members: Vec<String>,
        /// A group DM instead of a moderated room.
        group: bool,
    },
    /// Add members.
    Invite {
        /// Room reference.
        room: String,
        /// Users.
        users: Vec<String>,
    },
    /// Remove members.
    Remove {
        /// Room reference.
        room: String,
        /// Users.
        users: Vec<String>,
    },
    /// Make a member a moderator.
    Promote {
        /// Room reference.
        room: String,
        /// User.
        user: String,
    },
    /// Make a moderator a member.
    Demote {
        /// Room reference.
        room: String,
        /// User.
        user: String,
    },
    /// Leave.
    Leave {
        /// Room reference.
        room: String,
    },
    /// Delete for everyone.
    Delete {
        /// Room reference.
        room: String,
    },
    /// Change title and/or topic.
    Edit {
        /// Room reference.
        room: String,
        /// New title.
        title: Option<String>,
        /// New topic.
        description: Option<String>,
    },
    /// List our rooms.
    List {
        /// JSON lines.
        json: bool,
    },
    /// List a room's members.
    Members {
        /// Room reference.
        room: String,
        /// JSON lines.
        json: bool,
    },
}

fn kind_name(k: RoomKind) -> &'static str {
    match k {
        RoomKind::Room => "room",
        RoomKind::Group => "group",
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Moderator => "moderator",
        Role::Member => "member",
    }
}

/// A room as JSON (for `room list --json` and the `room` field of messages).
pub fn room_json(r: &RoomInfo, me: &str) -> serde_json::Value {
    json!({
        "id": r.room_id,
        "kind": kind_name(r.kind),
        "title": r.display_name(me),
        "description": r.description,
        "members": r.members.len(),
        "role": r.my_role.map(role_name),
        "deleted": r.deleted,
        "expire_after": r.timers.expire_after,
        "burn_after": r.timers.burn_after,
        "warning": r.warning,
    })
}

async fn sync_first(handle: &SessionHandle) -> anyhow::Result<()> {
    // Membership changes waiting in the mailbox come first, so ROOM names resolve.
    match handle.sync().await {
        Ok(_) | Err(session::SessionError::Relay { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `cinder room ...`.
pub async fn cmd_room(ctx: &Context, cmd: RoomCommand) -> anyhow::Result<()> {
    let handle = open_engine(ctx, false).await?;
    let r = room_inner(&handle, cmd).await;
    handle.shutdown().await;
    r
}

async fn room_inner(handle: &SessionHandle, cmd: RoomCommand) -> anyhow::Result<()> {
    let me = handle.account().username.clone();
    let mut out = std::io::stdout().lock();
    let report = |out: &mut std::io::StdoutLock<'_>, what: &str, r: &RoomInfo| {
        writeln!(
            out,
            "{what} {} \u{201c}{}\u{201d} ({}; {} members)",
            kind_name(r.kind),
            safe_text::line(&r.display_name(&me)),
            r.room_id,
            r.members.len()
        )
    };
    match cmd {
        RoomCommand::Create {
            name,
            description,
            members,
            group,
        } => {
            let kind = if group {
                RoomKind::Group
            } else {
                RoomKind::Room
            };
            let r = handle
                .create_room(kind, &name, &description, &members)
                .await?;
            report(&mut out, "created", &r)?;
            writeln!(out, "{}", r.room_id)?;
        }
        RoomCommand::List { json } => {
            sync_first(handle).await?;
            for r in handle.rooms().await? {
                if r.deleted {
                    continue;
                }
                if json {
                    writeln!(out, "{}", room_json(&r, &me))?;
                } else {
                    let role = match r.my_role {
                        Some(role) => role_name(role),
                        None => "left",
                    };
                    writeln!(
                        out,
                        "{}  {:<6} {:<10} {:>4} members  {}{}",
                        r.room_id,
                        kind_name(r.kind),
                        role,
                        r.members.len(),
                        safe_text::line(&r.display_name(&me)),
                        r.warning
                            .as_ref()
                            .map(|w| format!("  (warning: {})", safe_text::line(w)))
                            .unwrap_or_default()
                    )?;
                }
            }
        }
        RoomCommand::Members { room, json } => {
            sync_first(handle).await?;
            let r = handle.room(&room).await?;
            for m in &r.members {
                if json {
                    writeln!(
                        out,
                        "{}",
                        json!({"room": r.room_id, "username": m.username, "role": role_name(m.role)})
                    )?;
                } else {
                    writeln!(
                        out,
                        "{:<32} {}",
                        safe_text::line(&m.username),
                        role_name(m.role)
                    )?;
                }
            }
        }
        other => {
            sync_first(handle).await?;
            let (room, request, verb) = match other {
                RoomCommand::Invite { room, users } => {
                    (room, RoomRequest::Invite(users), "added to")
                }
                RoomCommand::Remove { room, users } => {
                    (room, RoomRequest::Remove(users), "removed from")
                }
                RoomCommand::Promote { room, user } => {
                    (room, RoomRequest::Promote(user), "promoted in")
                }
                RoomCommand::Demote { room, user } => {
                    (room, RoomRequest::Demote(user), "demoted in")
                }
                RoomCommand::Leave { room } => (room, RoomRequest::Leave, "left"),
                RoomCommand::Delete { room } => (room, RoomRequest::Delete, "deleted"),
                RoomCommand::Edit {
                    room,
                    title,
                    description,
                } => {
                    if title.is_none() && description.is_none() {
                        return Err(UsageError("give --title and/or --description".into()).into());
                    }
                    (room, RoomRequest::Edit { title, description }, "edited")
                }
                RoomCommand::Create { .. }
                | RoomCommand::List { .. }
                | RoomCommand::Members { .. } => {
                    return Ok(());
                }
            };
            let r = handle.change_room(&room, request).await?;
            report(&mut out, verb, &r)?;
        }
    }
    Ok(())
}

/// `cinder timer (--with USER | --room ROOM) [--expire DUR] [--burn DUR]`: shows or sets a
/// conversation's timer defaults.
pub async fn cmd_timer(
    ctx: &Context,
    with: Option<&str>,
    room: Option<&str>,
    expire: Option<&str>,
    burn: Option<&str>,
) -> anyhow::Result<()> {
    let expire = expire.map(parse_timer).transpose().map_err(UsageError)?;
    let burn = burn.map(parse_timer).transpose().map_err(UsageError)?;
    let handle = open_engine(ctx, false).await?;
    let r = async {
        let conversation = match (with, room) {
            (Some(u), None) => u.to_owned(),
            (None, Some(r)) => {
                sync_first(&handle).await?;
                handle.room(r).await?.room_id
            }
            _ => {
                return Err(
                    UsageError("give exactly one of --with USER or --room ROOM".into()).into(),
                );
            }
        };
        let conv_id = if session::is_room(&conversation) {
            conversation.clone()
        } else {
            let me = handle.account().username.clone();
            let peer = crate::protocol::names::canonical_username(&conversation)
                .ok_or_else(|| UsageError(format!("not a valid username: {conversation:?}")))?;
            crate::protocol::names::dm_conversation(&me, &peer)
        };
        if expire.is_some() || burn.is_some() {
            let (old_e, old_b) = handle.timers(&conv_id).await?;
            let e = expire.unwrap_or(old_e);
            let b = burn.unwrap_or(old_b);
            handle.set_timers(&conv_id, e, b).await?;
        }
        let (e, b) = handle.timers(&conv_id).await?;
        let show =
            |t: Option<u32>| t.map_or_else(|| "off".to_owned(), |s| format_duration(s.into()));
        println!("expire {}, burn {}", show(e), show(b));
        anyhow::Ok(())
    }
    .await;
    handle.shutdown().await;
    r
}

/// `cinder admin policy [read-receipts on|off]`.
pub async fn cmd_admin_policy(ctx: &Context, read_receipts: Option<bool>) -> anyhow::Result<()> {
    let handle = open_engine(ctx, false).await?;
    let r = async {
        let p = match read_receipts {
            Some(on) => handle.set_read_receipts(on).await?,
            None => {
                handle.flush().await.or_else(|e| match e {
                    session::SessionError::Relay { .. } => Ok(()),
                    e => Err(e),
                })?;
                handle
                    .policy()
                    .ok_or_else(|| anyhow::anyhow!("the relay did not send its policy"))?
            }
        };
        println!(
            "read receipts: {}\nmaximum expiration: {}\nmaximum burn-on-read: {}\nmaximum room members: {}",
            if p.read_receipts { "on" } else { "off" },
            format_duration(p.max_expire_secs),
            format_duration(p.max_burn_secs),
            p.max_room_members
        );
        anyhow::Ok(())
    }
    .await;
    handle.shutdown().await;
    r
}
