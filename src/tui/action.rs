//! Everything the user can do, as data: the [`Action`] enum and the one table ([`ACTIONS`])
//! that feeds key bindings (by name), the help screen and the README's key list, plus the
//! composer's `/commands` ([`COMMANDS`]).

/// A user intent, produced by the keymap (or a typed command) and applied by `App::update`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave the program.
    Quit,
    /// Show or hide the help screen.
    ToggleHelp,
    /// Open the quick switcher (fuzzy conversation picker).
    QuickSwitcher,
    /// Select the next conversation in the sidebar.
    NextConversation,
    /// Select the previous conversation in the sidebar.
    PrevConversation,
    /// Scroll the conversation up one line.
    ScrollUp,
    /// Scroll the conversation down one line.
    ScrollDown,
    /// Scroll up one page.
    PageUp,
    /// Scroll down one page.
    PageDown,
    /// Jump to the oldest loaded message.
    ScrollTop,
    /// Jump to the newest message.
    ScrollBottom,
    /// Send the composer's text (or run it, if it is a command).
    Submit,
    /// Insert a newline in the composer.
    InsertNewline,
    /// Compose the current text in `$EDITOR`.
    ExternalEditor,
    /// Previous entry of the composer's input history.
    HistoryPrev,
    /// Next entry of the composer's input history.
    HistoryNext,
    /// Complete the command or user name before the cursor.
    Complete,
    /// Close the overlay, or leave insert/command mode.
    Cancel,
    /// Vim: enter insert mode.
    EnterInsert,
    /// Vim: enter insert mode after the cursor.
    Append,
    /// Vim: enter command mode (`:`).
    EnterCommand,
    /// Move the cursor one character left.
    CursorLeft,
    /// Move the cursor one character right.
    CursorRight,
    /// Move the cursor to the start of the line.
    CursorHome,
    /// Move the cursor to the end of the line.
    CursorEnd,
    /// Move the cursor one word left.
    WordLeft,
    /// Move the cursor one word right.
    WordRight,
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character under the cursor.
    DeleteChar,
    /// Delete the word before the cursor.
    DeleteWordBack,
    /// Delete from the cursor to the end of the line.
    KillLine,
    /// Clear the composer.
    ClearComposer,
    /// Type one character.
    Insert(char),
    /// Insert pasted text (bracketed paste).
    Paste(String),
    /// Run a composer command line, e.g. `/dm bob` (used by macros).
    Run(String),
    /// Select an item in an overlay (switcher, search results).
    OverlayUp,
    /// Select an item in an overlay.
    OverlayDown,
    /// Show or hide the member list of the current room or group.
    ToggleMembers,
}

/// One bindable action: its name in keymap files, its description, and the action.
pub struct ActionSpec {
    /// Name used in keymap TOML files.
    pub name: &'static str,
    /// One line for the help screen and the README.
    pub doc: &'static str,
    /// The action.
    pub action: Action,
}

macro_rules! actions {
    ($($name:literal => $action:expr, $doc:literal;)*) => {
        /// Every bindable action. Keymaps refer to these names; help and README list them.
        pub const ACTIONS: &[ActionSpec] = &[$(ActionSpec { name: $name, doc: $doc, action: $action }),*];
    };
}

actions! {
    "quit" => Action::Quit, "quit Cinder";
    "help" => Action::ToggleHelp, "show or hide this help";
    "quick_switcher" => Action::QuickSwitcher, "jump to a conversation by fuzzy name";
    "next_conversation" => Action::NextConversation, "select the next conversation";
    "prev_conversation" => Action::PrevConversation, "select the previous conversation";
    "scroll_up" => Action::ScrollUp, "scroll the conversation up a line";
    "scroll_down" => Action::ScrollDown, "scroll the conversation down a line";
    "page_up" => Action::PageUp, "scroll up a page";
    "page_down" => Action::PageDown, "scroll down a page";
    "scroll_top" => Action::ScrollTop, "jump to the oldest message";
    "scroll_bottom" => Action::ScrollBottom, "jump to the newest message";
    "submit" => Action::Submit, "send the message, or run the /command";
    "newline" => Action::InsertNewline, "insert a newline in the composer";
    "external_editor" => Action::ExternalEditor, "compose in $EDITOR";
    "history_prev" => Action::HistoryPrev, "previous composer input";
    "history_next" => Action::HistoryNext, "next composer input";
    "complete" => Action::Complete, "complete a command or user name";
    "cancel" => Action::Cancel, "close the overlay or leave the mode";
    "insert_mode" => Action::EnterInsert, "vim: insert before the cursor";
    "append" => Action::Append, "vim: insert after the cursor";
    "command_mode" => Action::EnterCommand, "vim: type a :command";
    "cursor_left" => Action::CursorLeft, "move the cursor left";
    "cursor_right" => Action::CursorRight, "move the cursor right";
    "cursor_home" => Action::CursorHome, "move to the start of the line";
    "cursor_end" => Action::CursorEnd, "move to the end of the line";
    "word_left" => Action::WordLeft, "move a word left";
    "word_right" => Action::WordRight, "move a word right";
    "backspace" => Action::Backspace, "delete the character before the cursor";
    "delete_char" => Action::DeleteChar, "delete the character under the cursor";
    "delete_word_back" => Action::DeleteWordBack, "delete the word before the cursor";
    "kill_line" => Action::KillLine, "delete to the end of the line";
    "clear_composer" => Action::ClearComposer, "clear the composer";
    "overlay_up" => Action::OverlayUp, "previous item in a list";
    "overlay_down" => Action::OverlayDown, "next item in a list";
    "toggle_members" => Action::ToggleMembers, "show or hide the member list of a room";
}

/// Looks an action up by its keymap name.
pub fn action_by_name(name: &str) -> Option<Action> {
    ACTIONS
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.action.clone())
}

/// One composer command (`/name args` in the default keymap, `:name args` in vim).
pub struct CommandSpec {
    /// Name without the slash.
    pub name: &'static str,
    /// Argument synopsis.
    pub args: &'static str,
    /// One line for help and the README.
    pub doc: &'static str,
}

/// Every composer command, in the order help and the docs list them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "dm",
        args: "USER",
        doc: "open (or start) a direct conversation with USER",
    },
    CommandSpec {
        name: "room",
        args: "create NAME [USER...]",
        doc: "create a room that you moderate, with these members",
    },
    CommandSpec {
        name: "group",
        args: "USER...",
        doc: "start a group conversation with these users",
    },
    CommandSpec {
        name: "invite",
        args: "USER...",
        doc: "add users to this room or group",
    },
    CommandSpec {
        name: "kick",
        args: "USER...",
        doc: "remove users from this room (moderators)",
    },
    CommandSpec {
        name: "promote",
        args: "USER",
        doc: "make a member of this room a moderator (moderators)",
    },
    CommandSpec {
        name: "demote",
        args: "USER",
        doc: "make a moderator of this room a member again (moderators)",
    },
    CommandSpec {
        name: "leave",
        args: "",
        doc: "leave this room or group",
    },
    CommandSpec {
        name: "retry",
        args: "",
        doc: "send the newest failed message of this conversation again",
    },
    CommandSpec {
        name: "discard",
        args: "",
        doc: "delete the newest failed message of this conversation (it was never sent)",
    },
    CommandSpec {
        name: "members",
        args: "",
        doc: "show or hide the member list (topic, roles, warnings)",
    },
    CommandSpec {
        name: "topic",
        args: "[TEXT]",
        doc: "show or set the topic of this room or group",
    },
    CommandSpec {
        name: "timer",
        args: "[expire DUR] [burn DUR]",
        doc: "show or set this conversation's default timers (DUR: 30s, 5m, 2h, 1d, 1w or off)",
    },
    CommandSpec {
        name: "expire",
        args: "DUR",
        doc: "the next message expires DUR after it is sent (off cancels)",
    },
    CommandSpec {
        name: "burn",
        args: "DUR",
        doc: "the next message burns DUR after it is read (off cancels)",
    },
    CommandSpec {
        name: "search",
        args: "TEXT",
        doc: "search the local history, newest first",
    },
    CommandSpec {
        name: "theme",
        args: "NAME",
        doc: "switch the theme (default, light, high-contrast, or your own)",
    },
    CommandSpec {
        name: "keys",
        args: "[default|vim|emacs]",
        doc: "show or switch the keymap",
    },
    CommandSpec {
        name: "help",
        args: "",
        doc: "show the help screen",
    },
    CommandSpec {
        name: "quit",
        args: "",
        doc: "quit Cinder",
    },
];

/// A timer change of `/timer`: `None` leaves that timer as it is, `Some(None)` switches it off.
pub type TimerChange = Option<Option<u32>>;

/// A parsed composer command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/dm USER`
    Dm(String),
    /// `/retry`: the newest failed message of this conversation, again.
    Retry,
    /// `/discard`: delete the newest failed message of this conversation.
    Discard,
    /// `/room create NAME [USER...]`
    RoomCreate {
        /// The room's title.
        name: String,
        /// Members besides us (canonical usernames).
        members: Vec<String>,
    },
    /// `/group USER...`
    Group(Vec<String>),
    /// `/invite USER...`
    Invite(Vec<String>),
    /// `/kick USER...`
    Kick(Vec<String>),
    /// `/promote USER`
    Promote(String),
    /// `/demote USER`
    Demote(String),
    /// `/leave`
    Leave,
    /// `/members`
    Members,
    /// `/topic [TEXT]` (`None` shows the topic)
    Topic(Option<String>),
    /// `/timer [expire DUR] [burn DUR]` (both `None`: show the defaults)
    Timer {
        /// The expiration default.
        expire: TimerChange,
        /// The burn-on-read default.
        burn: TimerChange,
    },
    /// `/expire DUR` for the next message (`None`: cancel)
    Expire(Option<u32>),
    /// `/burn DUR` for the next message (`None`: cancel)
    Burn(Option<u32>),
    /// `/search TEXT`
    Search(String),
    /// `/theme NAME`
    Theme(String),
    /// `/keys [NAME]`
    Keys(Option<String>),
    /// `/help`
    Help,
    /// `/quit`
    Quit,
}

/// Splits command arguments into words; `"double quotes"` keep spaces together.
fn split_args(rest: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

/// Canonical usernames (a leading `@` is allowed), or a sentence naming the bad one.
fn users(words: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for w in words {
        let u = crate::protocol::names::canonical_username(w.trim_start_matches('@'))
            .ok_or_else(|| format!("not a valid username: {w}"))?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

fn duration(s: &str) -> Result<Option<u32>, String> {
    crate::session::parse_timer(s)
}

fn parse_timer_args(words: &[String]) -> Result<Command, String> {
    const USAGE: &str =
        "use /timer expire DUR burn DUR (either part; DUR like 30s, 5m, 2h, 1d, or off)";
    let (mut expire, mut burn): (TimerChange, TimerChange) = (None, None);
    let mut it = words.iter().map(|w| w.to_lowercase());
    while let Some(w) = it.next() {
        match w.as_str() {
            "off" | "none" if words.len() == 1 => {
                return Ok(Command::Timer {
                    expire: Some(None),
                    burn: Some(None),
                });
            }
            "expire" | "expiry" | "burn" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("/timer {w} needs a duration; {USAGE}"))?;
                let v = Some(duration(&v)?);
                let slot = if w == "burn" { &mut burn } else { &mut expire };
                if slot.is_some() {
                    return Err(format!("/timer names {w} twice"));
                }
                *slot = v;
            }
            _ => return Err(USAGE.into()),
        }
    }
    Ok(Command::Timer { expire, burn })
}

/// Parses a command line without its leading `/` or `:`.
///
/// # Errors
/// One sentence naming the problem (unknown command, missing or invalid argument).
pub fn parse_command(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, rest) = match line.split_once(char::is_whitespace) {
        Some((n, r)) => (n, r.trim()),
        None => (line, ""),
    };
    let need = |what: &str| -> Result<String, String> {
        if rest.is_empty() {
            Err(format!("/{name} needs {what}"))
        } else {
            Ok(rest.to_owned())
        }
    };
    let words = split_args(rest)?;
    let some_users = |what: &str| -> Result<Vec<String>, String> {
        if words.is_empty() {
            Err(format!("/{name} needs {what}"))
        } else {
            users(&words)
        }
    };
    let one_user = || -> Result<String, String> {
        match users(&words)?.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!("/{name} needs a user name")),
            _ => Err(format!("/{name} takes one user name")),
        }
    };
    match name {
        "dm" | "msg" | "query" => Ok(Command::Dm(need("a user name")?)),
        "room" => match words.first().map(String::as_str) {
            Some("create" | "new") => {
                let title = words
                    .get(1)
                    .filter(|t| !t.trim().is_empty())
                    .ok_or("/room create needs a name, e.g. /room create ops bob carol")?;
                Ok(Command::RoomCreate {
                    name: title.trim().to_owned(),
                    members: users(&words[2..])?,
                })
            }
            _ => Err("use /room create NAME [USER...]".into()),
        },
        "group" => Ok(Command::Group(some_users("at least one user name")?)),
        "invite" | "add" => Ok(Command::Invite(some_users("at least one user name")?)),
        "kick" | "remove" => Ok(Command::Kick(some_users("at least one user name")?)),
        "promote" | "op" => Ok(Command::Promote(one_user()?)),
        "demote" | "deop" => Ok(Command::Demote(one_user()?)),
        "leave" | "part" => Ok(Command::Leave),
        "retry" | "resend" => Ok(Command::Retry),
        "discard" => Ok(Command::Discard),
        "members" | "who" => Ok(Command::Members),
        "topic" => Ok(Command::Topic((!rest.is_empty()).then(|| rest.to_owned()))),
        "timer" | "timers" => parse_timer_args(&words),
        "expire" => Ok(Command::Expire(duration(&need("a duration, e.g. 1h")?)?)),
        "burn" => Ok(Command::Burn(duration(&need("a duration, e.g. 30s")?)?)),
        "search" | "s" => Ok(Command::Search(need("something to search for")?)),
        "theme" => Ok(Command::Theme(need("a theme name")?)),
        "keys" | "keymap" => Ok(Command::Keys((!rest.is_empty()).then(|| rest.to_owned()))),
        "help" | "h" => Ok(Command::Help),
        "quit" | "q" | "exit" => Ok(Command::Quit),
        "" => Err("type a command after the slash; /help lists them".into()),
        other => Err(format!(
            "unknown command /{other}; /help lists the commands"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_errors_are_sentences() {
        assert_eq!(parse_command("dm bob"), Ok(Command::Dm("bob".into())));
        assert_eq!(
            parse_command("  search  hello world "),
            Ok(Command::Search("hello world".into()))
        );
        assert_eq!(parse_command("keys"), Ok(Command::Keys(None)));
        assert_eq!(
            parse_command("keys vim"),
            Ok(Command::Keys(Some("vim".into())))
        );
        assert_eq!(parse_command("q"), Ok(Command::Quit));
        assert!(
            parse_command("dm")
                .unwrap_err()
                .contains("needs a user name")
        );
        assert!(
            parse_command("frobnicate")
                .unwrap_err()
                .contains("unknown command /frobnicate")
        );
    }

    #[test]
    fn room_commands_parse_usernames_and_quotes() {
        assert_eq!(
            parse_command("room create ops Bob @carol bob"),
            Ok(Command::RoomCreate {
                name: "ops".into(),
                members: vec!["bob".into(), "carol".into()]
            })
        );
        assert_eq!(
            parse_command("room create \"Ops team\""),
            Ok(Command::RoomCreate {
                name: "Ops team".into(),
                members: vec![]
            })
        );
        assert!(
            parse_command("room")
                .unwrap_err()
                .contains("/room create NAME")
        );
        assert!(
            parse_command("room create")
                .unwrap_err()
                .contains("needs a name")
        );
        assert!(
            parse_command("room create \"ops")
                .unwrap_err()
                .contains("quote")
        );
        assert_eq!(
            parse_command("group bob carol"),
            Ok(Command::Group(vec!["bob".into(), "carol".into()]))
        );
        assert!(
            parse_command("group")
                .unwrap_err()
                .contains("at least one user")
        );
        assert_eq!(
            parse_command("invite dave"),
            Ok(Command::Invite(vec!["dave".into()]))
        );
        assert_eq!(
            parse_command("kick @dave erin"),
            Ok(Command::Kick(vec!["dave".into(), "erin".into()]))
        );
        assert!(
            parse_command("kick a b")
                .unwrap_err()
                .contains("not a valid username: a")
        );
        assert_eq!(
            parse_command("promote bob"),
            Ok(Command::Promote("bob".into()))
        );
        assert_eq!(
            parse_command("demote Bob"),
            Ok(Command::Demote("bob".into()))
        );
        assert!(
            parse_command("promote bob carol")
                .unwrap_err()
                .contains("one user")
        );
        assert!(
            parse_command("demote")
                .unwrap_err()
                .contains("needs a user")
        );
        assert_eq!(parse_command("leave"), Ok(Command::Leave));
        assert_eq!(parse_command("retry"), Ok(Command::Retry));
        assert_eq!(parse_command("discard"), Ok(Command::Discard));
        assert_eq!(parse_command("members"), Ok(Command::Members));
        assert_eq!(parse_command("topic"), Ok(Command::Topic(None)));
        assert_eq!(
            parse_command("topic  on-call: ask  bob "),
            Ok(Command::Topic(Some("on-call: ask  bob".into())))
        );
    }

    #[test]
    fn timer_commands_parse_durations_and_off() {
        assert_eq!(
            parse_command("timer expire 1d burn 30s"),
            Ok(Command::Timer {
                expire: Some(Some(86_400)),
                burn: Some(Some(30))
            })
        );
        assert_eq!(
            parse_command("timer burn off"),
            Ok(Command::Timer {
                expire: None,
                burn: Some(None)
            })
        );
        assert_eq!(
            parse_command("timer"),
            Ok(Command::Timer {
                expire: None,
                burn: None
            })
        );
        assert_eq!(
            parse_command("timer off"),
            Ok(Command::Timer {
                expire: Some(None),
                burn: Some(None)
            })
        );
        assert!(
            parse_command("timer expire")
                .unwrap_err()
                .contains("needs a duration")
        );
        assert!(
            parse_command("timer expire 1d expire 2d")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse_command("timer soon")
                .unwrap_err()
                .contains("/timer expire DUR")
        );
        assert!(
            parse_command("timer expire soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert_eq!(
            parse_command("expire 1h30m"),
            Ok(Command::Expire(Some(5400)))
        );
        assert_eq!(parse_command("burn 30s"), Ok(Command::Burn(Some(30))));
        assert_eq!(parse_command("burn off"), Ok(Command::Burn(None)));
        assert!(
            parse_command("burn")
                .unwrap_err()
                .contains("needs a duration")
        );
        assert!(
            parse_command("expire x")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn action_names_are_unique_and_resolve() {
        let mut names: Vec<_> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert_eq!(action_by_name("submit"), Some(Action::Submit));
        assert_eq!(action_by_name("nope"), None);
        for c in COMMANDS {
            // A valid argument for every command (what the synopsis asks for).
            let arg = match c.name {
                "room" => "create ops bob",
                "timer" => "expire 1d",
                "expire" | "burn" => "30s",
                _ => "bob",
            };
            assert!(
                parse_command(&format!("{} {arg}", c.name)).is_ok(),
                "{}",
                c.name
            );
        }
    }
}
