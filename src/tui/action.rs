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

/// Every composer command.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "dm",
        args: "USER",
        doc: "open (or start) a direct conversation with USER",
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

/// A parsed composer command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/dm USER`
    Dm(String),
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

/// Parses a command line without its leading `/` or `:`.
///
/// # Errors
/// One sentence naming the problem (unknown command, missing argument).
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
    match name {
        "dm" | "msg" | "query" => Ok(Command::Dm(need("a user name")?)),
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
    fn action_names_are_unique_and_resolve() {
        let mut names: Vec<_> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert_eq!(action_by_name("submit"), Some(Action::Submit));
        assert_eq!(action_by_name("nope"), None);
        for c in COMMANDS {
            assert!(
                parse_command(&format!("{} x", c.name)).is_ok(),
                "{}",
                c.name
            );
        }
    }
}
