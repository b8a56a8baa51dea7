//! Key bindings as data: key strings in TOML map to action names from [`ACTIONS`].
//!
//! Three profiles are compiled in (`keymaps/default.toml`, `keymaps/vim.toml`,
//! `keymaps/emacs.toml`); the user's `keymap.toml` uses the same format and is layered on top, so
//! a user binding replaces the bundled one for the same key (and any bundled sequence it would
//! shadow). The same tables feed [`Keymap::resolve`], the help screen ([`Keymap::bindings`]) and
//! `docs/keys.md` ([`keys_markdown`], checked by a test so the docs never drift).
//!
//! ```toml
//! [keys.insert]                 # modes: insert, normal, command
//! "ctrl-k" = "quick_switcher"   # an action name from ACTIONS, or "none" to unbind
//! [keys.normal]
//! "g g" = "scroll_top"          # a sequence: keys separated by spaces
//! [macros.insert]
//! "ctrl-g" = ["/dm ops", "/search deploy"]   # composer commands, run in order
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::action::{ACTIONS, Action, ActionSpec, COMMANDS};

/// Why a keymap (bundled or the user's file) or a key string was rejected.
///
/// Every message names the file, the table and the key string, so it can go to the status line
/// or stderr as it is.
#[derive(Debug, thiserror::Error)]
pub enum KeymapError {
    /// The profile name is not one of the bundled keymaps.
    #[error("unknown keymap \"{0}\" (choose default, vim or emacs)")]
    UnknownProfile(String),
    /// The user's keymap file exists but cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a table has the wrong shape.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// What is wrong, with the line when known.
        message: String,
    },
    /// A key string outside a file (see [`parse_key`]) does not parse.
    #[error("invalid key \"{key}\": {reason}")]
    InvalidKey {
        /// The key string.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A top-level table other than `keys` and `macros`.
    #[error(
        "{file}: unknown table [{name}] (a keymap has only [keys.MODE] and [macros.MODE] tables)"
    )]
    UnknownTable {
        /// The file.
        file: String,
        /// The table's name.
        name: String,
    },
    /// A mode other than insert, normal and command.
    #[error(
        "{file}: [{table}.{mode}]: unknown mode \"{mode}\" (modes are insert, normal and command)"
    )]
    UnknownMode {
        /// The file.
        file: String,
        /// `keys` or `macros`.
        table: String,
        /// The mode as written.
        mode: String,
    },
    /// A key bound to a name that is not in [`ACTIONS`].
    #[error(
        "{file}: [keys.{mode}] \"{key}\": unknown action \"{action}\" (see /keys for the list)"
    )]
    UnknownAction {
        /// The file.
        file: String,
        /// The mode.
        mode: String,
        /// The key string as written.
        key: String,
        /// The action name as written.
        action: String,
    },
    /// A macro with no commands.
    #[error(
        "{file}: [macros.{mode}] \"{key}\": empty macro (list at least one command, e.g. [\"/dm ops\"])"
    )]
    EmptyMacro {
        /// The file.
        file: String,
        /// The mode.
        mode: String,
        /// The key string as written.
        key: String,
    },
    /// Any other problem with one entry: an unparseable key string, a value of the wrong type, a
    /// key bound twice or a key that is both bound and the start of a sequence.
    #[error("{file}: [{table}.{mode}] \"{key}\": {reason}")]
    BadEntry {
        /// The file.
        file: String,
        /// `keys` or `macros`.
        table: String,
        /// The mode.
        mode: String,
        /// The key string as written.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Which key table applies. Non-modal profiles (default, emacs) only use `Insert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Vim's normal mode: keys are commands, typing does not reach the composer.
    Normal,
    /// Typing goes to the composer.
    Insert,
    /// Typing a `:command` (vim).
    Command,
}

impl Mode {
    /// Every mode, in the order the help screen and docs list them.
    pub const ALL: [Mode; 3] = [Mode::Normal, Mode::Insert, Mode::Command];

    /// The mode's name in keymap files (`[keys.insert]`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Insert => "insert",
            Mode::Command => "command",
        }
    }

    fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What a key press means, from [`Keymap::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Run these, in order (one action, or a macro's commands).
    Actions(Vec<Action>),
    /// The key starts a sequence (`g` of `g g`); wait for the next key.
    Pending,
    /// Nothing is bound (or the key broke a pending sequence, which is then forgotten).
    Unbound,
}

/// One binding, for the help screen and docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The keys in canonical form, e.g. `ctrl-k` or `g g`.
    pub keys: String,
    /// The action name, or `macro: /dm ops; /search x`.
    pub action: String,
    /// One line saying what it does.
    pub doc: String,
}

/// A bundled profile and what it implies besides its key tables.
struct Profile {
    name: &'static str,
    file: &'static str,
    source: &'static str,
    modal: bool,
    prefix: char,
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "default",
        file: "keymaps/default.toml",
        source: include_str!("../../keymaps/default.toml"),
        modal: false,
        prefix: '/',
    },
    Profile {
        name: "vim",
        file: "keymaps/vim.toml",
        source: include_str!("../../keymaps/vim.toml"),
        modal: true,
        prefix: ':',
    },
    Profile {
        name: "emacs",
        file: "keymaps/emacs.toml",
        source: include_str!("../../keymaps/emacs.toml"),
        modal: false,
        prefix: '/',
    },
];

/// The names of the bundled profiles, for `/keys` and its completion.
pub const PROFILE_NAMES: &[&str] = &["default", "vim", "emacs"];

/// The action name that removes a binding in a user's keymap file.
const UNBIND: &str = "none";

/// A key press reduced to what bindings compare: the code and the modifiers that matter.
///
/// Shift is folded into characters (`shift-a` is `A`, Shift on `!` is dropped because the
/// character already says it) and into `backtab`, since terminals disagree on reporting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    code: KeyCode,
    mods: KeyModifiers,
}

impl Key {
    fn new(code: KeyCode, mods: KeyModifiers) -> Key {
        let mut m = mods & (KeyModifiers::SHIFT | KeyModifiers::CONTROL | KeyModifiers::ALT);
        if mods.contains(KeyModifiers::META) {
            m |= KeyModifiers::ALT;
        }
        if mods.intersects(KeyModifiers::SUPER | KeyModifiers::HYPER) {
            m |= KeyModifiers::SUPER;
        }
        let code = match code {
            KeyCode::Char(c) => {
                let shifted = m.contains(KeyModifiers::SHIFT);
                m.remove(KeyModifiers::SHIFT);
                KeyCode::Char(if shifted { upper(c) } else { c })
            }
            KeyCode::Tab if m.contains(KeyModifiers::SHIFT) => {
                m.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            KeyCode::BackTab => {
                m.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        Key { code, mods: m }
    }

    fn from_event(k: &KeyEvent) -> Key {
        Key::new(k.code, k.modifiers)
    }

    /// The character this key types, if it is a printable character without Ctrl, Alt or Super.
    fn plain_char(self) -> Option<char> {
        match self.code {
            KeyCode::Char(c) if self.mods.is_empty() && !c.is_control() => Some(c),
            _ => None,
        }
    }
}

/// The upper-case form of a character when it is a single character, else the character.
fn upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Named keys, as written and printed. `space` is here so sequences can be space-separated.
const NAMED: &[(&str, KeyCode)] = &[
    ("enter", KeyCode::Enter),
    ("esc", KeyCode::Esc),
    ("tab", KeyCode::Tab),
    ("backtab", KeyCode::BackTab),
    ("backspace", KeyCode::Backspace),
    ("delete", KeyCode::Delete),
    ("insert", KeyCode::Insert),
    ("up", KeyCode::Up),
    ("down", KeyCode::Down),
    ("left", KeyCode::Left),
    ("right", KeyCode::Right),
    ("home", KeyCode::Home),
    ("end", KeyCode::End),
    ("pageup", KeyCode::PageUp),
    ("pagedown", KeyCode::PageDown),
    ("space", KeyCode::Char(' ')),
];

/// Other spellings accepted when parsing; never printed.
const ALIASES: &[(&str, KeyCode)] = &[
    ("return", KeyCode::Enter),
    ("escape", KeyCode::Esc),
    ("del", KeyCode::Delete),
    ("ins", KeyCode::Insert),
    ("pgup", KeyCode::PageUp),
    ("pgdn", KeyCode::PageDown),
    ("minus", KeyCode::Char('-')),
];

/// Modifier spellings (lower-cased before lookup); the first of each is the canonical one.
const MODIFIERS: &[(&str, KeyModifiers)] = &[
    ("ctrl", KeyModifiers::CONTROL),
    ("control", KeyModifiers::CONTROL),
    ("c", KeyModifiers::CONTROL),
    ("alt", KeyModifiers::ALT),
    ("meta", KeyModifiers::ALT),
    ("m", KeyModifiers::ALT),
    ("a", KeyModifiers::ALT),
    ("shift", KeyModifiers::SHIFT),
    ("s", KeyModifiers::SHIFT),
    ("super", KeyModifiers::SUPER),
    ("cmd", KeyModifiers::SUPER),
];

/// The highest function key accepted (`f1` to `f24`).
const MAX_F: u8 = 24;

/// Parses one key such as `ctrl-k`, `alt-enter`, `shift-enter`, `pageup`, `f5`, `G` or `:`.
///
/// Modifiers (`ctrl-`, `alt-`, `shift-`, `super-`; also `c-`, `m-`/`a-`/`meta-`, `s-`) come
/// first, then a key name or a single character; `ctrl--` is Ctrl and the minus key. `shift-a`
/// is the same key as `A`; Shift with other characters is rejected (write `!`, not `shift-1`).
///
/// # Errors
/// [`KeymapError::InvalidKey`] naming the string and the problem; a sequence such as `g g` is
/// rejected here (use [`parse_keys`]).
pub fn parse_key(s: &str) -> Result<KeyEvent, KeymapError> {
    let invalid = |reason: String| KeymapError::InvalidKey {
        key: s.to_owned(),
        reason,
    };
    if s.trim() != s || s.contains(char::is_whitespace) {
        return Err(invalid(
            "a key cannot contain spaces (a sequence such as \"g g\" is several keys; write space for the space bar)"
                .into(),
        ));
    }
    parse_one(s)
        .map(|k| KeyEvent::new(k.code, k.mods))
        .map_err(invalid)
}

/// Parses a space-separated key sequence such as `g g` or `ctrl-x ctrl-e` (one key is fine).
///
/// # Errors
/// [`KeymapError::InvalidKey`] naming the whole string and the key that does not parse.
pub fn parse_keys(s: &str) -> Result<Vec<KeyEvent>, KeymapError> {
    parse_seq(s)
        .map(|seq| {
            seq.into_iter()
                .map(|k| KeyEvent::new(k.code, k.mods))
                .collect()
        })
        .map_err(|reason| KeymapError::InvalidKey {
            key: s.to_owned(),
            reason,
        })
}

fn parse_seq(s: &str) -> Result<Vec<Key>, String> {
    let seq = s
        .split_whitespace()
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    if seq.is_empty() {
        return Err("empty key string".into());
    }
    Ok(seq)
}

fn parse_one(s: &str) -> Result<Key, String> {
    let (mod_part, key_part) = if s == "-" {
        ("", "-")
    } else if let Some(mods) = s.strip_suffix("--") {
        (mods, "-")
    } else {
        match s.rsplit_once('-') {
            Some((m, k)) => (m, k),
            None => ("", s),
        }
    };
    let had_separator = key_part.len() < s.len();
    if key_part.is_empty() {
        return Err(format!("missing key after \"{s}\""));
    }
    if had_separator && mod_part.is_empty() {
        return Err("missing modifier before \"-\" (write minus for the minus key)".into());
    }
    let mut mods = KeyModifiers::NONE;
    if had_separator {
        for m in mod_part.split('-') {
            let lower = m.to_ascii_lowercase();
            let Some(&(_, bit)) = MODIFIERS.iter().find(|(name, _)| *name == lower) else {
                return Err(format!(
                    "unknown modifier \"{m}\" (use ctrl, alt, shift or super)"
                ));
            };
            mods |= bit;
        }
    }
    let code = key_code(key_part)?;
    if let KeyCode::Char(c) = code
        && mods.contains(KeyModifiers::SHIFT)
        && !c.is_alphabetic()
    {
        return Err(format!(
            "shift with \"{key_part}\": write the shifted character itself (e.g. \"!\" rather than \"shift-1\")"
        ));
    }
    Ok(Key::new(code, mods))
}

fn key_code(name: &str) -> Result<KeyCode, String> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Ok(KeyCode::Char(c));
    }
    let lower = name.to_ascii_lowercase();
    if let Some(&(_, code)) = NAMED.iter().chain(ALIASES).find(|(n, _)| *n == lower) {
        return Ok(code);
    }
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok())
        && (1..=MAX_F).contains(&n)
    {
        return Ok(KeyCode::F(n));
    }
    Err(format!(
        "unknown key name \"{name}\" (use one character, f1 to f{MAX_F}, or one of {})",
        NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    ))
}

/// Prints a key the way keymap files write it (`ctrl-k`, `alt-enter`, `G`, `space`).
///
/// Modifiers come in the order ctrl, alt, shift, super; [`parse_key`] reads the result back.
pub fn key_to_string(k: &KeyEvent) -> String {
    key_string(Key::from_event(k))
}

fn key_string(k: Key) -> String {
    let mut out = String::new();
    for (name, bit) in [
        ("ctrl-", KeyModifiers::CONTROL),
        ("alt-", KeyModifiers::ALT),
        ("shift-", KeyModifiers::SHIFT),
        ("super-", KeyModifiers::SUPER),
    ] {
        if k.mods.contains(bit) {
            out.push_str(name);
        }
    }
    match k.code {
        KeyCode::F(n) => {
            let _ = write!(out, "f{n}");
        }
        code => match NAMED.iter().find(|(_, c)| *c == code) {
            Some((name, _)) => out.push_str(name),
            None => match code {
                KeyCode::Char(c) => out.push(c),
                other => out.push_str(&format!("{other:?}").to_ascii_lowercase()),
            },
        },
    }
    out
}

/// Where a binding goes in [`Keymap::bindings`]: action rank, sequence length, [`sort_key`].
type BindingOrder = (usize, usize, Vec<(u32, u8, String)>);

/// Orders keys the way people list them: fewer modifiers first, then characters, named keys and
/// function keys, then by name.
fn sort_key(seq: &[Key]) -> Vec<(u32, u8, String)> {
    seq.iter()
        .map(|k| {
            let class = match k.code {
                KeyCode::Char(' ') => 1,
                KeyCode::Char(_) => 0,
                KeyCode::F(_) => 2,
                _ => 1,
            };
            (k.mods.bits().count_ones(), class, key_string(*k))
        })
        .collect()
}

fn seq_string(seq: &[Key]) -> String {
    seq.iter()
        .map(|k| key_string(*k))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a key sequence is bound to.
#[derive(Clone)]
enum Target {
    Action(&'static ActionSpec),
    Macro(Vec<String>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Action(spec) => f.debug_tuple("Action").field(&spec.name).finish(),
            Target::Macro(lines) => f.debug_tuple("Macro").field(lines).finish(),
        }
    }
}

impl Target {
    fn actions(&self) -> Vec<Action> {
        match self {
            Target::Action(spec) => vec![spec.action.clone()],
            Target::Macro(lines) => lines.iter().map(|l| Action::Run(l.clone())).collect(),
        }
    }
}

/// One entry read from a file, before it is applied.
struct Entry {
    mode: Mode,
    table: &'static str,
    key: String,
    seq: Vec<Key>,
    /// `None` unbinds.
    target: Option<Target>,
}

/// The active key bindings: one bundled profile plus the user's overrides, and the state of a
/// half-typed key sequence.
#[derive(Clone, Debug)]
pub struct Keymap {
    profile: &'static str,
    modal: bool,
    prefix: char,
    tables: HashMap<Mode, HashMap<Vec<Key>, Target>>,
    pending: Vec<Key>,
    pending_mode: Mode,
}

impl Keymap {
    /// One of the bundled profiles: `default`, `vim` or `emacs`.
    ///
    /// # Errors
    /// [`KeymapError::UnknownProfile`] for any other name (the bundled files themselves are
    /// checked by tests).
    pub fn builtin(profile: &str) -> Result<Keymap, KeymapError> {
        let Some(p) = PROFILES.iter().find(|p| p.name == profile) else {
            return Err(KeymapError::UnknownProfile(profile.to_owned()));
        };
        let mut map = Keymap {
            profile: p.name,
            modal: p.modal,
            prefix: p.prefix,
            tables: HashMap::new(),
            pending: Vec::new(),
            pending_mode: if p.modal { Mode::Normal } else { Mode::Insert },
        };
        map.apply(p.file, p.source)?;
        Ok(map)
    }

    /// A bundled profile with the user's keymap file on top; user bindings win.
    ///
    /// A missing file (or `None`) gives the bundled profile unchanged. The same file serves every
    /// profile: tables for modes a profile does not use are read, checked and ignored.
    ///
    /// # Errors
    /// An unknown profile, an unreadable file, or the first bad entry in it, naming the file, the
    /// table and the key string.
    pub fn load(profile: &str, overrides: Option<&Path>) -> Result<Keymap, KeymapError> {
        let mut map = Keymap::builtin(profile)?;
        let Some(path) = overrides else {
            return Ok(map);
        };
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
            Err(source) => {
                return Err(KeymapError::Read {
                    file: path.display().to_string(),
                    source,
                });
            }
        };
        map.apply(&path.display().to_string(), &src)?;
        Ok(map)
    }

    /// The profile's name (`default`, `vim` or `emacs`).
    pub fn profile(&self) -> &str {
        self.profile
    }

    /// Whether the profile has normal and command modes (vim).
    pub fn is_modal(&self) -> bool {
        self.modal
    }

    /// The mode the UI starts in: normal for vim, insert otherwise.
    pub fn initial_mode(&self) -> Mode {
        if self.modal {
            Mode::Normal
        } else {
            Mode::Insert
        }
    }

    /// The character that starts a composer command: `:` for vim, `/` otherwise.
    pub fn command_prefix(&self) -> char {
        self.prefix
    }

    /// The keys typed so far of an unfinished sequence (`g`, `ctrl-x`), for the status line.
    pub fn pending_keys(&self) -> Option<String> {
        (!self.pending.is_empty()).then(|| seq_string(&self.pending))
    }

    /// Forgets a half-typed sequence (e.g. when the UI changes mode by other means).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Non-modal profiles have a single table (insert), whatever mode the caller passes.
    fn effective(&self, mode: Mode) -> Mode {
        if self.modal { mode } else { Mode::Insert }
    }

    /// What `key` means in `mode`, given any keys already pending.
    ///
    /// A key that starts a longer binding gives [`Resolved::Pending`]; the sequence then
    /// completes to its actions, or breaks (a key that continues no binding) and gives
    /// [`Resolved::Unbound`], dropping the pending keys. An unbound printable character without
    /// Ctrl or Alt (Shift is part of the character) types itself in insert and command mode.
    /// Key releases are ignored (`Unbound`, pending state kept); a mode change drops pending keys.
    pub fn resolve(&mut self, key: KeyEvent, mode: Mode) -> Resolved {
        if key.kind == KeyEventKind::Release {
            return Resolved::Unbound;
        }
        let mode = self.effective(mode);
        if mode != self.pending_mode {
            self.pending.clear();
            self.pending_mode = mode;
        }
        let key = Key::from_event(&key);
        let mut seq = std::mem::take(&mut self.pending);
        let was_pending = !seq.is_empty();
        seq.push(key);
        if let Some(table) = self.tables.get(&mode) {
            if let Some(target) = table.get(&seq) {
                return Resolved::Actions(target.actions());
            }
            if table
                .keys()
                .any(|s| s.len() > seq.len() && s.starts_with(&seq))
            {
                self.pending = seq;
                return Resolved::Pending;
            }
        }
        if was_pending {
            return Resolved::Unbound;
        }
        match key.plain_char() {
            Some(c) if mode != Mode::Normal => Resolved::Actions(vec![Action::Insert(c)]),
            _ => Resolved::Unbound,
        }
    }

    /// Every binding of `mode` (macros included), for the help screen.
    ///
    /// Sorted by action in [`ACTIONS`] order (so keys for one action are adjacent), then by keys:
    /// shorter sequences first, then fewer modifiers, characters before named keys (`k`, `up`,
    /// `ctrl-y`); macros come last. Non-modal profiles give their one table for
    /// any mode.
    pub fn bindings(&self, mode: Mode) -> Vec<Binding> {
        let Some(table) = self.tables.get(&self.effective(mode)) else {
            return Vec::new();
        };
        let mut rows: Vec<(BindingOrder, Binding)> = table
            .iter()
            .map(|(seq, target)| {
                let keys = seq_string(seq);
                let (rank, binding) = match target {
                    Target::Action(spec) => (
                        ACTIONS
                            .iter()
                            .position(|a| a.name == spec.name)
                            .unwrap_or(ACTIONS.len()),
                        Binding {
                            keys: keys.clone(),
                            action: spec.name.to_owned(),
                            doc: spec.doc.to_owned(),
                        },
                    ),
                    Target::Macro(lines) => (
                        ACTIONS.len() + 1,
                        Binding {
                            keys: keys.clone(),
                            action: format!("macro: {}", lines.join("; ")),
                            doc: if lines.len() == 1 {
                                "run one command".to_owned()
                            } else {
                                format!("run {} commands in order", lines.len())
                            },
                        },
                    ),
                };
                ((rank, seq.len(), sort_key(seq)), binding)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter().map(|(_, b)| b).collect()
    }

    /// Reads `src` (named `file` in errors) and layers its bindings over the current ones.
    fn apply(&mut self, file: &str, src: &str) -> Result<(), KeymapError> {
        let entries = read_entries(file, src)?;
        check_conflicts(file, &entries)?;
        for e in entries {
            let table = self.tables.entry(e.mode).or_default();
            // A new binding replaces the same key and anything it would shadow or be shadowed by
            // (binding `ctrl-x` drops the bundled `ctrl-x ctrl-e`).
            table.retain(|s, _| !(s.starts_with(&e.seq) || e.seq.starts_with(s)));
            if let Some(target) = e.target {
                table.insert(e.seq, target);
            }
        }
        Ok(())
    }
}

fn read_entries(file: &str, src: &str) -> Result<Vec<Entry>, KeymapError> {
    let doc: toml::Table = toml::from_str(src).map_err(|e| syntax_error(file, src, &e))?;
    let mut entries = Vec::new();
    for (top, value) in &doc {
        let table: &'static str = match top.as_str() {
            "keys" => "keys",
            "macros" => "macros",
            _ => {
                return Err(KeymapError::UnknownTable {
                    file: file.to_owned(),
                    name: top.clone(),
                });
            }
        };
        let Some(modes) = value.as_table() else {
            return Err(KeymapError::Syntax {
                file: file.to_owned(),
                message: format!("[{table}] must contain mode tables such as [{table}.insert]"),
            });
        };
        for (mode_name, bindings) in modes {
            let Some(mode) = Mode::from_name(mode_name) else {
                return Err(KeymapError::UnknownMode {
                    file: file.to_owned(),
                    table: table.to_owned(),
                    mode: mode_name.clone(),
                });
            };
            let Some(bindings) = bindings.as_table() else {
                return Err(KeymapError::Syntax {
                    file: file.to_owned(),
                    message: format!(
                        "[{table}.{mode_name}] must be a table of \"key\" = {} entries",
                        if table == "keys" {
                            "\"action\""
                        } else {
                            "[\"/command\", ...]"
                        }
                    ),
                });
            };
            for (key, value) in bindings {
                entries.push(read_entry(file, table, mode, key, value)?);
            }
        }
    }
    Ok(entries)
}

fn read_entry(
    file: &str,
    table: &'static str,
    mode: Mode,
    key: &str,
    value: &toml::Value,
) -> Result<Entry, KeymapError> {
    let bad = |reason: String| KeymapError::BadEntry {
        file: file.to_owned(),
        table: table.to_owned(),
        mode: mode.name().to_owned(),
        key: key.to_owned(),
        reason,
    };
    let seq = parse_seq(key).map_err(&bad)?;
    if mode != Mode::Normal && seq.len() > 1 && seq[0].plain_char().is_some() {
        return Err(bad(format!(
            "a sequence in {} mode cannot start with a typed character (it would swallow typing)",
            mode.name()
        )));
    }
    let target = if table == "keys" {
        let Some(name) = value.as_str() else {
            return Err(bad(
                "expected an action name in quotes (or a list of commands under [macros])".into(),
            ));
        };
        if name == UNBIND {
            None
        } else {
            let Some(spec) = ACTIONS.iter().find(|a| a.name == name) else {
                return Err(KeymapError::UnknownAction {
                    file: file.to_owned(),
                    mode: mode.name().to_owned(),
                    key: key.to_owned(),
                    action: name.to_owned(),
                });
            };
            Some(Target::Action(spec))
        }
    } else {
        let Some(items) = value.as_array() else {
            return Err(bad(
                "expected a list of commands, e.g. [\"/dm ops\", \"/search deploy\"]".into(),
            ));
        };
        if items.is_empty() {
            return Err(KeymapError::EmptyMacro {
                file: file.to_owned(),
                mode: mode.name().to_owned(),
                key: key.to_owned(),
            });
        }
        let mut lines = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str().map(str::trim) {
                Some(line) if !line.is_empty() => lines.push(line.to_owned()),
                Some(_) => return Err(bad("a macro command is empty".into())),
                None => return Err(bad("macro commands must be strings in quotes".into())),
            }
        }
        Some(Target::Macro(lines))
    };
    Ok(Entry {
        mode,
        table,
        key: key.to_owned(),
        seq,
        target,
    })
}

/// Within one file a key may be bound once, and never both bound and the start of a sequence.
fn check_conflicts(file: &str, entries: &[Entry]) -> Result<(), KeymapError> {
    for (i, b) in entries.iter().enumerate() {
        for a in &entries[..i] {
            if a.mode != b.mode {
                continue;
            }
            let reason = if a.seq == b.seq {
                format!(
                    "same key as \"{}\" in [{}.{}]",
                    a.key,
                    a.table,
                    a.mode.name()
                )
            } else if b.seq.starts_with(&a.seq) || a.seq.starts_with(&b.seq) {
                let (short, long) = if a.seq.len() < b.seq.len() {
                    (&a.key, &b.key)
                } else {
                    (&b.key, &a.key)
                };
                format!(
                    "\"{short}\" is bound and also starts \"{long}\"; a key cannot be both (bind one of them)"
                )
            } else {
                continue;
            };
            return Err(KeymapError::BadEntry {
                file: file.to_owned(),
                table: b.table.to_owned(),
                mode: b.mode.name().to_owned(),
                key: b.key.clone(),
                reason,
            });
        }
    }
    Ok(())
}

fn syntax_error(file: &str, src: &str, e: &toml::de::Error) -> KeymapError {
    let message = match e.span() {
        Some(span) => {
            let line = src
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("line {line}: {}", e.message().trim())
        }
        None => e.message().trim().to_owned(),
    };
    KeymapError::Syntax {
        file: file.to_owned(),
        message,
    }
}

/// `docs/keys.md`: every bundled profile's bindings, the composer commands, the action names and
/// the key syntax, all from the tables (a test keeps the file in step).
///
/// # Errors
/// Only if a bundled keymap is broken, which the tests rule out.
pub fn keys_markdown() -> Result<String, KeymapError> {
    let mut out = String::new();
    out.push_str("# Keys\n\n");
    out.push_str(
        "<!-- Generated by keymap::keys_markdown from keymaps/*.toml and src/tui/action.rs; a unit\n\
         test fails when this file drifts. Regenerate: CINDER_BLESS=1 cargo test --lib tui::keymap -->\n\n",
    );
    out.push_str(
        "Cinder has three keymaps: `default`, `vim` and `emacs`. Switch with `/keys NAME`; change\n\
         single keys in `keymap.toml` beside `config.toml` (see `assets/keymap.example.toml`). Your\n\
         bindings replace the bundled ones for the same keys. In insert and command mode an unbound\n\
         printable character types itself. `ctrl-c` quits in every keymap and mode.\n\n\
         Many terminals send Shift-Enter as plain Enter, so `alt-enter` is the reliable newline.\n",
    );
    for p in PROFILES {
        let map = Keymap::builtin(p.name)?;
        let _ = write!(
            out,
            "\n## {}\n\n{}; composer commands start with `{}`.\n",
            p.name,
            if p.modal {
                "Modal: starts in normal mode"
            } else {
                "Not modal: typing goes straight to the composer"
            },
            p.prefix
        );
        let modes: &[Mode] = if p.modal { &Mode::ALL } else { &[Mode::Insert] };
        for &mode in modes {
            if p.modal {
                let _ = write!(out, "\n### {} mode\n", mode.name());
            }
            out.push_str("\n| keys | action | what it does |\n|---|---|---|\n");
            let bindings = map.bindings(mode);
            let mut i = 0;
            while i < bindings.len() {
                let first = &bindings[i];
                let same = bindings[i..]
                    .iter()
                    .take_while(|b| b.action == first.action)
                    .count();
                let keys = bindings[i..i + same]
                    .iter()
                    .map(|b| code_span(&b.keys))
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    keys,
                    cell(&first.action),
                    cell(&first.doc)
                );
                i += same;
            }
        }
    }
    out.push_str("\n## Composer commands\n\n| command | what it does |\n|---|---|\n");
    for c in COMMANDS {
        let synopsis = if c.args.is_empty() {
            format!("/{}", c.name)
        } else {
            format!("/{} {}", c.name, c.args)
        };
        let _ = writeln!(out, "| {} | {} |", code_span(&synopsis), cell(c.doc));
    }
    out.push_str(
        "\nIn the vim keymap commands start with `:` instead. A macro runs commands in order:\n\
         `\"ctrl-g\" = [\"/dm ops\", \"/search deploy\"]` under `[macros.insert]`.\n",
    );
    out.push_str(
        "\n## Actions\n\nNames to use in `keymap.toml` (`\"none\"` removes a binding).\n\n\
         | action | what it does |\n|---|---|\n",
    );
    for a in ACTIONS {
        let _ = writeln!(out, "| `{}` | {} |", a.name, cell(a.doc));
    }
    let _ = write!(
        out,
        "\n## Key names\n\n\
         A key is a single character (`a`, `G`, `:`, `?`), `f1` to `f{MAX_F}`, or one of these names:\n\
         {}.\n\n\
         Modifiers go before the key: `ctrl-`, `alt-`, `shift-` and `super-` (`ctrl--` is Ctrl and\n\
         minus). `shift-a` is the same key as `A`; for other characters write the shifted character\n\
         itself. A sequence is keys separated by spaces: `g g`, `ctrl-x ctrl-e`.\n",
        NAMED
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// Text as a Markdown code span, safe inside a table cell.
fn code_span(s: &str) -> String {
    let s = s.replace('|', "\\|");
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEventState;

    fn key(s: &str) -> KeyEvent {
        parse_key(s).unwrap()
    }

    fn press(map: &mut Keymap, keys: &str, mode: Mode) -> Resolved {
        let mut last = Resolved::Unbound;
        for k in keys.split(' ') {
            last = map.resolve(key(k), mode);
        }
        last
    }

    fn act(a: Action) -> Resolved {
        Resolved::Actions(vec![a])
    }

    fn with_overrides(profile: &str, toml: &str) -> Result<Keymap, KeymapError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keymap.toml");
        std::fs::write(&path, toml).unwrap();
        Keymap::load(profile, Some(&path))
    }

    fn override_err(profile: &str, toml: &str) -> String {
        with_overrides(profile, toml).unwrap_err().to_string()
    }

    #[test]
    fn every_bundled_profile_loads_with_its_properties() {
        for p in PROFILE_NAMES {
            let map = Keymap::builtin(p).unwrap();
            assert_eq!(map.profile(), *p);
            assert!(!map.bindings(map.initial_mode()).is_empty(), "{p}");
        }
        let names: Vec<_> = PROFILES.iter().map(|p| p.name).collect();
        assert_eq!(names, PROFILE_NAMES);
        let vim = Keymap::builtin("vim").unwrap();
        assert!(vim.is_modal());
        assert_eq!(vim.initial_mode(), Mode::Normal);
        assert_eq!(vim.command_prefix(), ':');
        for p in ["default", "emacs"] {
            let m = Keymap::builtin(p).unwrap();
            assert!(!m.is_modal());
            assert_eq!(m.initial_mode(), Mode::Insert);
            assert_eq!(m.command_prefix(), '/');
        }
        let err = Keymap::builtin("nano").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown keymap \"nano\" (choose default, vim or emacs)"
        );
    }

    /// Actions the keymaps deliberately leave unbound: the app moves through overlay lists with
    /// whatever keys move elsewhere (history, scrolling, conversations).
    const UNBOUND_BY_DESIGN: &[&str] = &["overlay_up", "overlay_down"];

    #[test]
    fn every_action_is_bound_somewhere_or_unbound_by_design() {
        let mut bound = std::collections::HashSet::new();
        for p in PROFILE_NAMES {
            let map = Keymap::builtin(p).unwrap();
            for mode in Mode::ALL {
                for b in map.bindings(mode) {
                    bound.insert(b.action);
                }
            }
        }
        for a in ACTIONS {
            let by_design = UNBOUND_BY_DESIGN.contains(&a.name);
            assert_eq!(
                bound.contains(a.name),
                !by_design,
                "{}: bound in some profile must equal not listed in UNBOUND_BY_DESIGN",
                a.name
            );
        }
    }

    #[test]
    fn ctrl_c_quits_in_every_profile_and_mode() {
        for p in PROFILE_NAMES {
            let mut map = Keymap::builtin(p).unwrap();
            for mode in Mode::ALL {
                assert_eq!(
                    map.resolve(key("ctrl-c"), mode),
                    act(Action::Quit),
                    "{p} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn default_profile_resolves() {
        let mut m = Keymap::builtin("default").unwrap();
        let i = Mode::Insert;
        let cases = [
            ("enter", Action::Submit),
            ("alt-enter", Action::InsertNewline),
            ("shift-enter", Action::InsertNewline),
            ("ctrl-e", Action::ExternalEditor),
            ("up", Action::HistoryPrev),
            ("down", Action::HistoryNext),
            ("ctrl-k", Action::QuickSwitcher),
            ("pageup", Action::PageUp),
            ("pagedown", Action::PageDown),
            ("ctrl-home", Action::ScrollTop),
            ("ctrl-end", Action::ScrollBottom),
            ("alt-up", Action::PrevConversation),
            ("alt-down", Action::NextConversation),
            ("ctrl-p", Action::PrevConversation),
            ("ctrl-n", Action::NextConversation),
            ("tab", Action::Complete),
            ("esc", Action::Cancel),
            ("f1", Action::ToggleHelp),
            ("ctrl-q", Action::Quit),
            ("left", Action::CursorLeft),
            ("right", Action::CursorRight),
            ("home", Action::CursorHome),
            ("end", Action::CursorEnd),
            ("ctrl-left", Action::WordLeft),
            ("ctrl-right", Action::WordRight),
            ("backspace", Action::Backspace),
            ("delete", Action::DeleteChar),
            ("ctrl-w", Action::DeleteWordBack),
            ("ctrl-u", Action::ClearComposer),
        ];
        for (k, a) in cases {
            assert_eq!(m.resolve(key(k), i), act(a), "{k}");
        }
        // Typing goes to the composer, Shift included; ctrl-j stays free.
        assert_eq!(m.resolve(key("a"), i), act(Action::Insert('a')));
        let shift_a = KeyEvent::new(KeyCode::Char('A'), KeyModifiers::SHIFT);
        assert_eq!(m.resolve(shift_a, i), act(Action::Insert('A')));
        let shift_lower = KeyEvent::new(KeyCode::Char('a'), KeyModifiers::SHIFT);
        assert_eq!(m.resolve(shift_lower, i), act(Action::Insert('A')));
        assert_eq!(m.resolve(key("space"), i), act(Action::Insert(' ')));
        assert_eq!(m.resolve(key("/"), i), act(Action::Insert('/')));
        assert_eq!(m.resolve(key("ctrl-j"), i), Resolved::Unbound);
        assert_eq!(m.resolve(key("alt-x"), i), Resolved::Unbound);
        // Non-modal: whatever mode the caller passes, the one table applies.
        assert_eq!(
            m.resolve(key("ctrl-k"), Mode::Normal),
            act(Action::QuickSwitcher)
        );
        assert_eq!(m.bindings(Mode::Command), m.bindings(Mode::Insert));
    }

    #[test]
    fn emacs_profile_resolves_including_sequences() {
        let mut m = Keymap::builtin("emacs").unwrap();
        let i = Mode::Insert;
        let cases = [
            ("ctrl-a", Action::CursorHome),
            ("ctrl-e", Action::CursorEnd),
            ("ctrl-b", Action::CursorLeft),
            ("ctrl-f", Action::CursorRight),
            ("alt-b", Action::WordLeft),
            ("alt-f", Action::WordRight),
            ("ctrl-d", Action::DeleteChar),
            ("ctrl-k", Action::KillLine),
            ("ctrl-p", Action::HistoryPrev),
            ("ctrl-n", Action::HistoryNext),
            ("alt-p", Action::PrevConversation),
            ("alt-n", Action::NextConversation),
            ("ctrl-g", Action::Cancel),
            ("enter", Action::Submit),
            ("alt-enter", Action::InsertNewline),
            ("tab", Action::Complete),
            ("f1", Action::ToggleHelp),
        ];
        for (k, a) in cases {
            assert_eq!(m.resolve(key(k), i), act(a), "{k}");
        }
        assert_eq!(m.resolve(key("ctrl-x"), i), Resolved::Pending);
        assert_eq!(m.pending_keys().as_deref(), Some("ctrl-x"));
        assert_eq!(m.resolve(key("ctrl-e"), i), act(Action::ExternalEditor));
        assert_eq!(m.pending_keys(), None);
        assert_eq!(press(&mut m, "ctrl-x b", i), act(Action::QuickSwitcher));
        // A broken sequence swallows the breaking key and resets.
        assert_eq!(m.resolve(key("ctrl-x"), i), Resolved::Pending);
        assert_eq!(m.resolve(key("z"), i), Resolved::Unbound);
        assert_eq!(m.resolve(key("z"), i), act(Action::Insert('z')));
        assert_eq!(m.resolve(key("ctrl-e"), i), act(Action::CursorEnd));
    }

    #[test]
    fn vim_profile_resolves_per_mode() {
        let mut m = Keymap::builtin("vim").unwrap();
        let n = Mode::Normal;
        let normal = [
            ("i", Action::EnterInsert),
            ("a", Action::Append),
            (":", Action::EnterCommand),
            ("j", Action::ScrollDown),
            ("k", Action::ScrollUp),
            ("ctrl-d", Action::PageDown),
            ("ctrl-u", Action::PageUp),
            ("G", Action::ScrollBottom),
            ("J", Action::NextConversation),
            ("K", Action::PrevConversation),
            ("ctrl-k", Action::QuickSwitcher),
            ("?", Action::ToggleHelp),
            ("enter", Action::Submit),
            ("h", Action::CursorLeft),
            ("l", Action::CursorRight),
            ("0", Action::CursorHome),
            ("$", Action::CursorEnd),
            ("x", Action::DeleteChar),
        ];
        for (k, a) in normal {
            assert_eq!(m.resolve(key(k), n), act(a), "normal {k}");
        }
        // Shifted letters arrive with Shift set; `$` may too.
        let shift_g = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(m.resolve(shift_g, n), act(Action::ScrollBottom));
        let dollar = KeyEvent::new(KeyCode::Char('$'), KeyModifiers::SHIFT);
        assert_eq!(m.resolve(dollar, n), act(Action::CursorEnd));
        // "g g": pending, then complete; "g" then something else breaks and resets.
        assert_eq!(m.resolve(key("g"), n), Resolved::Pending);
        assert_eq!(m.resolve(key("g"), n), act(Action::ScrollTop));
        assert_eq!(m.resolve(key("g"), n), Resolved::Pending);
        assert_eq!(m.resolve(key("q"), n), Resolved::Unbound);
        assert_eq!(m.pending_keys(), None);
        assert_eq!(m.resolve(key("j"), n), act(Action::ScrollDown));
        // Key releases do not disturb a pending sequence; a mode change drops it.
        assert_eq!(m.resolve(key("g"), n), Resolved::Pending);
        let mut release = key("g");
        release.kind = KeyEventKind::Release;
        assert_eq!(m.resolve(release, n), Resolved::Unbound);
        assert_eq!(m.resolve(key("g"), n), act(Action::ScrollTop));
        assert_eq!(m.resolve(key("g"), n), Resolved::Pending);
        assert_eq!(m.resolve(key("g"), Mode::Insert), act(Action::Insert('g')));
        // Normal mode does not type; "/" is deliberately free.
        assert_eq!(m.resolve(key("z"), n), Resolved::Unbound);
        assert_eq!(m.resolve(key("/"), n), Resolved::Unbound);

        let i = Mode::Insert;
        let insert = [
            ("esc", Action::Cancel),
            ("enter", Action::Submit),
            ("alt-enter", Action::InsertNewline),
            ("ctrl-e", Action::ExternalEditor),
            ("tab", Action::Complete),
            ("ctrl-w", Action::DeleteWordBack),
            ("left", Action::CursorLeft),
            ("up", Action::HistoryPrev),
        ];
        for (k, a) in insert {
            assert_eq!(m.resolve(key(k), i), act(a), "insert {k}");
        }
        assert_eq!(m.resolve(key("j"), i), act(Action::Insert('j')));
        assert_eq!(m.resolve(key(":"), i), act(Action::Insert(':')));

        let c = Mode::Command;
        let command = [
            ("esc", Action::Cancel),
            ("enter", Action::Submit),
            ("tab", Action::Complete),
            ("backspace", Action::Backspace),
        ];
        for (k, a) in command {
            assert_eq!(m.resolve(key(k), c), act(a), "command {k}");
        }
        assert_eq!(m.resolve(key("s"), c), act(Action::Insert('s')));
    }

    #[test]
    fn user_overrides_win_and_macros_run_commands() {
        let mut m = with_overrides(
            "default",
            r#"
[keys.insert]
"ctrl-k" = "help"
"ctrl-t" = "quick_switcher"
"ctrl-x x" = "quit"
"f1" = "none"
[macros.insert]
"ctrl-g" = ["/dm ops", "/search deploy"]
"#,
        )
        .unwrap();
        let i = Mode::Insert;
        assert_eq!(m.resolve(key("ctrl-k"), i), act(Action::ToggleHelp));
        assert_eq!(m.resolve(key("ctrl-t"), i), act(Action::QuickSwitcher));
        assert_eq!(m.resolve(key("f1"), i), Resolved::Unbound);
        assert_eq!(m.resolve(key("enter"), i), act(Action::Submit));
        assert_eq!(press(&mut m, "ctrl-x x", i), act(Action::Quit));
        assert_eq!(
            m.resolve(key("ctrl-g"), i),
            Resolved::Actions(vec![
                Action::Run("/dm ops".into()),
                Action::Run("/search deploy".into())
            ])
        );
        let help = m.bindings(i);
        let mac = help.last().unwrap();
        assert_eq!(mac.keys, "ctrl-g");
        assert_eq!(mac.action, "macro: /dm ops; /search deploy");
        assert!(
            help.iter()
                .any(|b| b.keys == "ctrl-k" && b.action == "help")
        );
        assert!(!help.iter().any(|b| b.keys == "f1"));

        // A user binding on a bundled prefix replaces the sequences under it.
        let mut e = with_overrides("emacs", "[keys.insert]\n\"ctrl-x\" = \"quit\"\n").unwrap();
        assert_eq!(e.resolve(key("ctrl-x"), i), act(Action::Quit));
        assert!(!e.bindings(i).iter().any(|b| b.keys.starts_with("ctrl-x ")));

        // One file serves every profile: a normal-mode table is fine for default.
        let mut v = with_overrides(
            "vim",
            "[keys.normal]\n\"g g\" = \"none\"\n\"g\" = \"scroll_top\"\n",
        );
        assert!(v.is_err(), "g and g g in one file conflict");
        v = with_overrides("vim", "[keys.normal]\n\"g\" = \"scroll_top\"\n");
        let mut v = v.unwrap();
        assert_eq!(v.resolve(key("g"), Mode::Normal), act(Action::ScrollTop));
        assert!(with_overrides("default", "[keys.normal]\n\"g\" = \"scroll_top\"\n").is_ok());

        // Missing file: the bundled profile.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("keymap.toml");
        let mut d = Keymap::load("default", Some(&missing)).unwrap();
        assert_eq!(d.resolve(key("ctrl-k"), i), act(Action::QuickSwitcher));
        assert!(Keymap::load("default", None).is_ok());
        assert!(Keymap::load("nano", Some(&missing)).is_err());
    }

    #[test]
    fn bad_user_files_are_rejected_with_file_key_and_reason() {
        let err = override_err("default", "[keys.insert]\n\"ctrl-k\" = \"quik_switcher\"\n");
        assert!(
            err.ends_with(
                "keymap.toml: [keys.insert] \"ctrl-k\": unknown action \"quik_switcher\" (see /keys for the list)"
            ),
            "{err}"
        );
        let err = override_err("default", "[keys.insert]\n\"ctrl-kk\" = \"quit\"\n");
        assert!(
            err.contains("keymap.toml: [keys.insert] \"ctrl-kk\": unknown key name \"kk\""),
            "{err}"
        );
        let err = override_err("default", "[keys.insert]\n\"hyper-k\" = \"quit\"\n");
        assert!(
            err.contains("\"hyper-k\": unknown modifier \"hyper\""),
            "{err}"
        );
        let err = override_err("vim", "[keys.visual]\n\"v\" = \"quit\"\n");
        assert!(
            err.contains("keymap.toml: [keys.visual]: unknown mode \"visual\""),
            "{err}"
        );
        let err = override_err("default", "[macros.insert]\n\"ctrl-g\" = []\n");
        assert!(
            err.contains("keymap.toml: [macros.insert] \"ctrl-g\": empty macro"),
            "{err}"
        );
        let err = override_err("default", "[macros.insert]\n\"ctrl-g\" = [\"  \"]\n");
        assert!(err.contains("a macro command is empty"), "{err}");
        let err = override_err("default", "[macros.insert]\n\"ctrl-g\" = \"/dm ops\"\n");
        assert!(err.contains("expected a list of commands"), "{err}");
        let err = override_err("default", "[keys.insert]\n\"ctrl-g\" = [\"/dm ops\"]\n");
        assert!(err.contains("expected an action name"), "{err}");
        let err = override_err("default", "theme = \"dark\"\n");
        assert!(err.contains("keymap.toml: unknown table [theme]"), "{err}");
        let err = override_err("default", "[keys]\ninsert = 3\n");
        assert!(err.contains("[keys.insert] must be a table"), "{err}");
        let err = override_err("default", "[keys.insert\n");
        assert!(err.contains("keymap.toml: line 1:"), "{err}");
        let err = override_err(
            "default",
            "[keys.insert]\n\"ctrl-g\" = \"quit\"\n[macros.insert]\n\"C-g\" = [\"/quit\"]\n",
        );
        assert!(
            err.contains("[macros.insert] \"C-g\": same key as \"ctrl-g\" in [keys.insert]"),
            "{err}"
        );
        let err = override_err("default", "[keys.insert]\n\"j k\" = \"cancel\"\n");
        assert!(err.contains("cannot start with a typed character"), "{err}");
    }

    #[test]
    fn key_names_round_trip() {
        let mut names: Vec<String> = NAMED.iter().map(|(n, _)| (*n).to_owned()).collect();
        names.extend((1..=MAX_F).map(|n| format!("f{n}")));
        names.extend(["a", "G", ":", "?", "$", "0", "-", "é", "/", "`"].map(String::from));
        let mut all = Vec::new();
        for n in &names {
            all.push(n.clone());
            for m in ["ctrl-", "alt-", "ctrl-alt-", "super-"] {
                all.push(format!("{m}{n}"));
            }
            if !matches!(n.as_str(), "backtab" | "space")
                && (n.chars().count() > 1 || n.chars().all(char::is_alphabetic))
            {
                all.push(format!("shift-{n}"));
            }
        }
        for s in &all {
            let k = parse_key(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let printed = key_to_string(&k);
            let again = parse_key(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(k, again, "{s} -> {printed}");
            assert_eq!(key_to_string(&again), printed, "{s}");
        }
        assert_eq!(key_to_string(&key("ctrl-k")), "ctrl-k");
        assert_eq!(key_to_string(&key("C-A-k")), "ctrl-alt-k");
        assert_eq!(key_to_string(&key("shift-a")), "A");
        assert_eq!(key_to_string(&key("shift-tab")), "backtab");
        assert_eq!(key_to_string(&key("shift-enter")), "shift-enter");
        assert_eq!(key_to_string(&key("ctrl--")), "ctrl--");
        assert_eq!(key_to_string(&key("minus")), "-");
        assert_eq!(key_to_string(&key("Escape")), "esc");
        assert_eq!(key_to_string(&key("PgUp")), "pageup");
        assert_eq!(key_to_string(&key("space")), "space");
        assert_eq!(key_to_string(&key("Enter")), "enter");
        assert_eq!(key_to_string(&key("F5")), "f5");
        // What crossterm reports for shifted keys prints like the key file spells them.
        let ev = KeyEvent {
            code: KeyCode::Tab,
            modifiers: KeyModifiers::SHIFT,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        };
        assert_eq!(key_to_string(&ev), "backtab");
        assert_eq!(
            key_to_string(&KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT)),
            "G"
        );
        for bad in [
            "", " ", "g ", "ctrl-", "-k", "hyper-k", "f0", "f25", "enterr", "shift-1", "g g",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(parse_keys("g g").unwrap(), vec![key("g"), key("g")]);
        assert_eq!(
            parse_keys("ctrl-x  ctrl-e").unwrap(),
            vec![key("ctrl-x"), key("ctrl-e")]
        );
        assert!(parse_keys("  ").is_err());
        let e = parse_key("ctrl-kk").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid key \"ctrl-kk\": unknown key name \"kk\""),
            "{e}"
        );
    }

    #[test]
    fn bindings_are_sorted_by_action_then_keys() {
        let m = Keymap::builtin("default").unwrap();
        let b = m.bindings(Mode::Insert);
        let rank = |name: &str| ACTIONS.iter().position(|a| a.name == name).unwrap();
        for w in b.windows(2) {
            assert!(rank(&w[0].action) <= rank(&w[1].action), "{w:?}");
        }
        let quit: Vec<_> = b
            .iter()
            .filter(|x| x.action == "quit")
            .map(|x| x.keys.as_str())
            .collect();
        assert_eq!(quit, ["ctrl-c", "ctrl-q"]);
        assert_eq!(b[0].doc, "quit Cinder");
        let vim = Keymap::builtin("vim").unwrap();
        assert!(
            vim.bindings(Mode::Normal)
                .iter()
                .any(|x| x.keys == "g g" && x.action == "scroll_top")
        );
    }

    #[test]
    fn example_keymap_is_valid_once_uncommented() {
        let example = include_str!("../../assets/keymap.example.toml");
        // Lines starting with "# " hold TOML; prose starts with "## ".
        let toml: String = example
            .lines()
            .filter_map(|l| {
                l.strip_prefix("# ")
                    .or_else(|| (!l.starts_with('#')).then_some(l))
            })
            .collect::<Vec<_>>()
            .join("\n");
        for p in PROFILE_NAMES {
            with_overrides(p, &toml).unwrap_or_else(|e| panic!("{p}: {e}\n{toml}"));
        }
        // As shipped (all commented out) it changes nothing.
        let mut m = with_overrides("default", example).unwrap();
        assert_eq!(
            m.resolve(key("ctrl-k"), Mode::Insert),
            act(Action::QuickSwitcher)
        );
    }

    #[test]
    fn docs_keys_md_matches_the_bundled_keymaps() {
        let expected = keys_markdown().unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/keys.md");
        if std::env::var_os("CINDER_BLESS").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/keys.md is out of date; rerun with CINDER_BLESS=1 or replace it with:\n{expected}"
        );
    }
}
