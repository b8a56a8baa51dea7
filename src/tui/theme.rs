//! Colour themes: TOML files with a palette, semantic style keys and `inherits`.
//!
//! Views never name a colour; they ask the [`Theme`] for a semantic key such as
//! `"message.sender.self"` and get a ratatui [`Style`]. A theme file maps those keys to palette
//! names (or colour literals) and may inherit another theme, so a variant only restates what it
//! changes. Inheritance merges the raw palettes and styles first and resolves palette names
//! last, which is what lets `light` swap the palette under every style it inherits from
//! `default`.
//!
//! The bundled themes (`themes/*.toml`) are compiled in, so the UI has a theme even with no
//! files on disk; user themes live in `config_dir/themes/NAME.toml` and may shadow or extend a
//! bundled one. The file format and the key list are documented in `docs/themes.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ratatui::style::{Color, Modifier, Style};

/// The semantic keys every bundled theme defines and the views rely on.
pub const REQUIRED_KEYS: &[&str] = &[
    "ui.background",
    "ui.text",
    "ui.dim",
    "ui.border",
    "ui.border.focused",
    "ui.title",
    "ui.sidebar",
    "ui.sidebar.selected",
    "ui.sidebar.unread",
    "ui.sidebar.header",
    "ui.sidebar.left",
    "ui.statusbar",
    "ui.statusbar.connected",
    "ui.statusbar.reconnecting",
    "ui.statusbar.offline",
    "ui.statusbar.banner",
    "ui.composer",
    "ui.composer.prompt",
    "ui.composer.placeholder",
    "ui.overlay",
    "ui.overlay.selected",
    "ui.overlay.match",
    "ui.help.key",
    "ui.help.doc",
    "ui.error",
    "ui.info",
    "ui.warning",
    "ui.members.moderator",
    "message.sender",
    "message.sender.self",
    "message.time",
    "message.text",
    "message.state",
    "message.state.failed",
    "message.day_separator",
    "message.new_marker",
    "message.system",
    "message.system.warning",
    "message.timer",
    "message.timer.burning",
    "message.undecryptable",
];

/// The most `inherits` links followed from the theme being loaded.
pub const MAX_INHERIT_DEPTH: usize = 8;

/// Names of the compiled-in themes, in the order [`Theme::bundled_names`] returns them.
const BUNDLED_NAMES: &[&str] = &["default", "light", "high-contrast"];

/// The compiled-in theme files, by name.
const BUNDLED: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

/// Modifier names accepted in a style's `modifiers` list.
const MODIFIERS: &[(&str, Modifier)] = &[
    ("bold", Modifier::BOLD),
    ("italic", Modifier::ITALIC),
    ("underlined", Modifier::UNDERLINED),
    ("reversed", Modifier::REVERSED),
    ("dim", Modifier::DIM),
    ("crossed_out", Modifier::CROSSED_OUT),
];

/// ANSI colour names accepted as colour literals (the terminal's own palette decides the shade).
const ANSI_COLORS: &[(&str, Color)] = &[
    ("black", Color::Black),
    ("red", Color::Red),
    ("green", Color::Green),
    ("yellow", Color::Yellow),
    ("blue", Color::Blue),
    ("magenta", Color::Magenta),
    ("cyan", Color::Cyan),
    ("gray", Color::Gray),
    ("dark_gray", Color::DarkGray),
    ("light_red", Color::LightRed),
    ("light_green", Color::LightGreen),
    ("light_yellow", Color::LightYellow),
    ("light_blue", Color::LightBlue),
    ("light_magenta", Color::LightMagenta),
    ("light_cyan", Color::LightCyan),
    ("white", Color::White),
    ("reset", Color::Reset),
];

/// Everything that can go wrong loading a theme.
///
/// `file` fields hold the file's path for user themes and `themes/NAME.toml (bundled)` for
/// compiled-in ones; `key` fields use TOML's dotted notation (`styles."ui.text".fg`).
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// No user or bundled theme has this name.
    #[error("unknown theme {name:?} (available: {})", available.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every theme that could have been loaded instead.
        available: Vec<String>,
    },
    /// A theme name that is not a plain file stem (it could escape the themes directory).
    #[error("invalid theme name {0:?}: use letters, digits, '.', '_' and '-'")]
    InvalidName(String),
    /// A user theme file exists but cannot be read.
    #[error("cannot read theme file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("theme file {file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// toml's message, on one line, with the line number.
        message: String,
    },
    /// A key the format does not define (at the top level or inside a style table).
    #[error("theme file {file}: unknown key {key}")]
    UnknownKey {
        /// The file.
        file: String,
        /// The key.
        key: String,
    },
    /// A key whose value has the wrong TOML type.
    #[error("theme file {file}: {key} must be {expected}")]
    WrongType {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// A malformed colour literal.
    #[error(
        "theme file {file}: {key}: invalid colour {value:?} (use \"#rrggbb\", an ANSI name or 0-255)"
    )]
    BadColor {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
    },
    /// A style names a colour that is neither in the (merged) palette nor a colour literal.
    #[error("theme file {file}: {key}: {value:?} is not in the palette and is not a colour")]
    UnknownColor {
        /// The file that defines the style.
        file: String,
        /// The key.
        key: String,
        /// The name as written.
        value: String,
    },
    /// A modifier outside the supported list.
    #[error(
        "theme file {file}: {key}: unknown modifier {value:?} (use bold, italic, underlined, reversed, dim, crossed_out)"
    )]
    UnknownModifier {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// The modifier as written.
        value: String,
    },
    /// `inherits` names a theme that does not exist.
    #[error("theme file {file}: inherits unknown theme {parent:?} (available: {})", available.join(", "))]
    UnknownParent {
        /// The inheriting file.
        file: String,
        /// The missing parent.
        parent: String,
        /// Themes that could be inherited.
        available: Vec<String>,
    },
    /// The `inherits` links loop back to a file already in the chain.
    #[error("theme inheritance cycle: {}", chain.join(" -> "))]
    Cycle {
        /// The files in the loop, the repeated one last.
        chain: Vec<String>,
    },
    /// More than [`MAX_INHERIT_DEPTH`] `inherits` links.
    #[error("theme file {file}: inheritance deeper than {MAX_INHERIT_DEPTH} levels")]
    TooDeep {
        /// The file whose `inherits` went one level too far.
        file: String,
    },
}

type Result<T> = std::result::Result<T, ThemeError>;

/// A loaded theme: its name and the resolved style of every key it (or an ancestor) defines.
#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    name: String,
    styles: HashMap<String, Style>,
}

/// Parsed once; [`Theme::default_theme`] hands out clones.
static DEFAULT_THEME: LazyLock<Theme> =
    LazyLock::new(|| match Theme::bundled_theme(BUNDLED_NAMES[0]) {
        Ok(theme) => theme,
        // Unreachable in a tested build (`bundled_themes_load_and_define_required_keys`); an
        // unstyled UI is still usable, a panic at start-up is not.
        Err(e) => {
            tracing::error!(error = %e, "the compiled-in default theme is invalid");
            Theme {
                name: BUNDLED_NAMES[0].to_owned(),
                styles: HashMap::new(),
            }
        }
    });

impl Default for Theme {
    fn default() -> Self {
        Self::default_theme()
    }
}

impl Theme {
    /// The compiled-in `default` theme (`themes/default.toml`).
    ///
    /// Never fails: a unit test proves the bundled file parses and defines every
    /// [`REQUIRED_KEYS`] entry.
    pub fn default_theme() -> Theme {
        DEFAULT_THEME.clone()
    }

    /// Loads the theme `name`: `user_dir/NAME.toml` if it exists, else the bundled theme.
    ///
    /// `user_dir` is the user's themes directory (`config_dir/themes`). A user theme may shadow
    /// a bundled one; a user theme whose `inherits` names its own name extends the bundled theme
    /// of that name. A user theme's other parents are looked up the same way as `name`; a
    /// bundled theme only ever inherits bundled themes, so user files cannot break them.
    ///
    /// # Errors
    /// [`ThemeError::InvalidName`], [`ThemeError::Unknown`] (listing the available names),
    /// [`ThemeError::Read`], and the format errors ([`ThemeError::Syntax`],
    /// [`ThemeError::UnknownKey`], [`ThemeError::WrongType`], [`ThemeError::BadColor`],
    /// [`ThemeError::UnknownColor`], [`ThemeError::UnknownModifier`]) or inheritance errors
    /// ([`ThemeError::UnknownParent`], [`ThemeError::Cycle`], [`ThemeError::TooDeep`]) of any
    /// file in the chain.
    pub fn load(name: &str, user_dir: Option<&Path>) -> Result<Theme> {
        if !valid_name(name) {
            return Err(ThemeError::InvalidName(name.to_owned()));
        }
        match locate(name, user_dir)? {
            Some(file) => resolve_chain(file, user_dir),
            None => Err(ThemeError::Unknown {
                name: name.to_owned(),
                available: Self::available(user_dir),
            }),
        }
    }

    /// The names of the compiled-in themes: `default`, `light`, `high-contrast`.
    pub fn bundled_names() -> &'static [&'static str] {
        BUNDLED_NAMES
    }

    /// Every loadable theme name: the bundled ones plus each `user_dir/NAME.toml`, sorted and
    /// deduplicated. An unreadable `user_dir` contributes nothing.
    pub fn available(user_dir: Option<&Path>) -> Vec<String> {
        let mut names: Vec<String> = BUNDLED_NAMES.iter().map(|n| (*n).to_owned()).collect();
        if let Some(dir) = user_dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "toml")
                    && path.is_file()
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                    && valid_name(stem)
                {
                    names.push(stem.to_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// The theme's name: its `name` key, else the file stem.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The style for a semantic key.
    ///
    /// The exact key if the theme defines it, else the nearest parent key obtained by dropping
    /// trailing `.segment`s (`"message.sender.self"` -> `"message.sender"` -> `"message"`),
    /// else the `"ui.text"` style, else [`Style::default`].
    pub fn style(&self, key: &str) -> Style {
        let mut key = key;
        loop {
            if let Some(style) = self.styles.get(key) {
                return *style;
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None => break,
            }
        }
        self.styles.get("ui.text").copied().unwrap_or_default()
    }

    /// This theme with every foreground, background and underline colour removed and the
    /// modifiers kept, for `NO_COLOR` (the bundled themes mark selections with `reversed`, so
    /// they stay visible).
    pub fn without_color(&self) -> Theme {
        let styles = self
            .styles
            .iter()
            .map(|(key, style)| {
                let bare = Style::new()
                    .add_modifier(style.add_modifier)
                    .remove_modifier(style.sub_modifier);
                (key.clone(), bare)
            })
            .collect();
        Theme {
            name: self.name.clone(),
            styles,
        }
    }

    /// Loads a compiled-in theme; its parents are compiled-in themes too.
    fn bundled_theme(name: &str) -> Result<Theme> {
        match bundled(name) {
            Some(file) => resolve_chain(file, None),
            None => Err(ThemeError::Unknown {
                name: name.to_owned(),
                available: Self::available(None),
            }),
        }
    }
}

/// Whether the user asked for no colour: `NO_COLOR` is set and non-empty (<https://no-color.org>).
pub fn no_color_requested() -> bool {
    no_color_from(std::env::var_os("NO_COLOR"))
}

/// The `NO_COLOR` rule on a given value of the variable.
fn no_color_from(value: Option<OsString>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// A theme file found on disk or compiled in, not yet parsed.
struct Located {
    /// The name it was found under (the file stem).
    name: String,
    /// How errors name it.
    file: String,
    text: Cow<'static, str>,
    /// Found in the user's directory rather than compiled in.
    user: bool,
}

/// One parsed file, its colour names not yet resolved.
struct RawTheme {
    file: String,
    name: Option<String>,
    inherits: Option<String>,
    palette: BTreeMap<String, Color>,
    styles: BTreeMap<String, StyleSpec>,
}

/// A style as written: colours are palette names or literals until the chain is merged.
#[derive(Default)]
struct StyleSpec {
    fg: Option<ColorRef>,
    bg: Option<ColorRef>,
    modifiers: Modifier,
}

enum ColorRef {
    /// A string: a palette name, else a colour literal.
    Name(String),
    /// A TOML integer, already checked to be 0-255.
    Indexed(u8),
}

/// Theme names are file stems: no separators, no leading dot, nothing that leaves the directory.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The compiled-in theme called `name`.
fn bundled(name: &str) -> Option<Located> {
    BUNDLED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Located {
            name: (*n).to_owned(),
            file: format!("themes/{n}.toml (bundled)"),
            text: Cow::Borrowed(*text),
            user: false,
        })
}

/// `user_dir/NAME.toml` if it exists, else the bundled theme `name`.
fn locate(name: &str, user_dir: Option<&Path>) -> Result<Option<Located>> {
    if let Some(dir) = user_dir {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Ok(Some(Located {
                    name: name.to_owned(),
                    file: path.display().to_string(),
                    text: Cow::Owned(text),
                    user: true,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ThemeError::Read { path, source }),
        }
    }
    Ok(bundled(name))
}

/// Parses `leaf` and its ancestors, merges them (child wins) and resolves the colours.
fn resolve_chain(leaf: Located, user_dir: Option<&Path>) -> Result<Theme> {
    let leaf_name = leaf.name.clone();
    let mut chain: Vec<RawTheme> = Vec::new();
    let mut current = leaf;
    loop {
        let raw = parse_file(&current.text, &current.file)?;
        let parent = raw.inherits.clone();
        chain.push(raw);
        let Some(parent) = parent else { break };
        let next = if !current.user || parent == current.name {
            // Bundled themes inherit only bundled themes; a user theme named like its parent
            // extends the bundled theme it shadows instead of inheriting itself.
            bundled(&parent)
        } else if valid_name(&parent) {
            locate(&parent, user_dir)?
        } else {
            None
        };
        let Some(next) = next else {
            return Err(ThemeError::UnknownParent {
                file: current.file,
                parent,
                available: Theme::available(if current.user { user_dir } else { None }),
            });
        };
        if chain.iter().any(|raw| raw.file == next.file) {
            let mut files: Vec<String> = chain.into_iter().map(|raw| raw.file).collect();
            files.push(next.file);
            return Err(ThemeError::Cycle { chain: files });
        }
        // `chain.len()` links have been followed once `next` is accepted.
        if chain.len() > MAX_INHERIT_DEPTH {
            return Err(ThemeError::TooDeep { file: current.file });
        }
        current = next;
    }

    let name = chain
        .first()
        .and_then(|raw| raw.name.clone())
        .unwrap_or(leaf_name);
    let mut palette: BTreeMap<String, Color> = BTreeMap::new();
    let mut specs: BTreeMap<String, (StyleSpec, String)> = BTreeMap::new();
    for raw in chain.into_iter().rev() {
        palette.extend(raw.palette);
        for (key, spec) in raw.styles {
            specs.insert(key, (spec, raw.file.clone()));
        }
    }
    let mut styles = HashMap::with_capacity(specs.len());
    for (key, (spec, file)) in specs {
        let style = resolve_style(&spec, &palette, &file, &key)?;
        styles.insert(key, style);
    }
    Ok(Theme { name, styles })
}

fn resolve_style(
    spec: &StyleSpec,
    palette: &BTreeMap<String, Color>,
    file: &str,
    key: &str,
) -> Result<Style> {
    let mut style = Style::new().add_modifier(spec.modifiers);
    if let Some(fg) = &spec.fg {
        style = style.fg(resolve_color(fg, palette, file, key, "fg")?);
    }
    if let Some(bg) = &spec.bg {
        style = style.bg(resolve_color(bg, palette, file, key, "bg")?);
    }
    Ok(style)
}

/// A palette name first (so a palette may redefine `red`), then a literal.
fn resolve_color(
    color: &ColorRef,
    palette: &BTreeMap<String, Color>,
    file: &str,
    key: &str,
    field: &str,
) -> Result<Color> {
    let name = match color {
        ColorRef::Indexed(i) => return Ok(Color::Indexed(*i)),
        ColorRef::Name(name) => name,
    };
    if let Some(color) = palette.get(name) {
        return Ok(*color);
    }
    if let Some(color) = parse_color(name) {
        return Ok(color);
    }
    let key = format!("{}.{field}", style_key(key));
    if looks_like_literal(name) {
        Err(ThemeError::BadColor {
            file: file.to_owned(),
            key,
            value: name.clone(),
        })
    } else {
        Err(ThemeError::UnknownColor {
            file: file.to_owned(),
            key,
            value: name.clone(),
        })
    }
}

/// `"#rrggbb"`, an ANSI name, or `"0"`..`"255"`.
fn parse_color(s: &str) -> Option<Color> {
    if let Some(hex) = s.strip_prefix('#') {
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let channel = |i: usize| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        return Some(Color::Rgb(channel(0)?, channel(2)?, channel(4)?));
    }
    if looks_like_literal(s) {
        return s.parse::<u8>().ok().map(Color::Indexed);
    }
    ANSI_COLORS
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, color)| *color)
}

/// A string that was meant as a literal (so a failure is a bad colour, not an unknown name).
fn looks_like_literal(s: &str) -> bool {
    s.starts_with('#') || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// `styles."ui.text"`: style keys contain dots, so they are always quoted.
fn style_key(key: &str) -> String {
    format!("styles.{key:?}")
}

/// `palette.bg`, quoted when the name is not a bare TOML key.
fn palette_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        format!("palette.{key}")
    } else {
        format!("palette.{key:?}")
    }
}

fn parse_file(text: &str, file: &str) -> Result<RawTheme> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ThemeError::Syntax {
        file: file.to_owned(),
        message: one_line(text, &e),
    })?;
    let mut raw = RawTheme {
        file: file.to_owned(),
        name: None,
        inherits: None,
        palette: BTreeMap::new(),
        styles: BTreeMap::new(),
    };
    for (key, value) in table {
        match key.as_str() {
            "name" => raw.name = Some(string(value, file, &key)?),
            "inherits" => raw.inherits = Some(string(value, file, &key)?),
            "palette" => {
                for (name, value) in table_of(value, file, &key)? {
                    let key = palette_key(&name);
                    raw.palette.insert(name, literal(&value, file, &key)?);
                }
            }
            "styles" => {
                for (name, value) in table_of(value, file, &key)? {
                    let spec = parse_style(value, file, &style_key(&name))?;
                    raw.styles.insert(name, spec);
                }
            }
            _ => {
                return Err(ThemeError::UnknownKey {
                    file: file.to_owned(),
                    key,
                });
            }
        }
    }
    Ok(raw)
}

fn string(value: toml::Value, file: &str, key: &str) -> Result<String> {
    match value {
        toml::Value::String(s) => Ok(s),
        _ => Err(wrong_type(file, key, "a string")),
    }
}

fn table_of(value: toml::Value, file: &str, key: &str) -> Result<toml::Table> {
    match value {
        toml::Value::Table(t) => Ok(t),
        _ => Err(wrong_type(file, key, "a table")),
    }
}

fn wrong_type(file: &str, key: &str, expected: &'static str) -> ThemeError {
    ThemeError::WrongType {
        file: file.to_owned(),
        key: key.to_owned(),
        expected,
    }
}

/// A palette entry: a colour literal, never another palette name.
fn literal(value: &toml::Value, file: &str, key: &str) -> Result<Color> {
    let bad = |value: String| ThemeError::BadColor {
        file: file.to_owned(),
        key: key.to_owned(),
        value,
    };
    match value {
        toml::Value::String(s) => parse_color(s).ok_or_else(|| bad(s.clone())),
        toml::Value::Integer(i) => u8::try_from(*i)
            .map(Color::Indexed)
            .map_err(|_| bad(i.to_string())),
        _ => Err(wrong_type(file, key, "a colour string or 0-255")),
    }
}

/// A colour in a style: a string resolved after merging, or an indexed colour.
fn color_ref(value: toml::Value, file: &str, key: &str) -> Result<ColorRef> {
    match value {
        toml::Value::String(s) => Ok(ColorRef::Name(s)),
        toml::Value::Integer(i) => {
            u8::try_from(i)
                .map(ColorRef::Indexed)
                .map_err(|_| ThemeError::BadColor {
                    file: file.to_owned(),
                    key: key.to_owned(),
                    value: i.to_string(),
                })
        }
        _ => Err(wrong_type(file, key, "a colour name or 0-255")),
    }
}

/// `"name"` (a foreground) or `{ fg, bg, modifiers }`.
fn parse_style(value: toml::Value, file: &str, key: &str) -> Result<StyleSpec> {
    let table = match value {
        toml::Value::Table(table) => table,
        toml::Value::String(_) | toml::Value::Integer(_) => {
            return Ok(StyleSpec {
                fg: Some(color_ref(value, file, key)?),
                ..StyleSpec::default()
            });
        }
        _ => {
            return Err(wrong_type(
                file,
                key,
                "a colour or a table { fg, bg, modifiers }",
            ));
        }
    };
    let mut spec = StyleSpec::default();
    for (field, value) in table {
        let field_key = format!("{key}.{field}");
        match field.as_str() {
            "fg" => spec.fg = Some(color_ref(value, file, &field_key)?),
            "bg" => spec.bg = Some(color_ref(value, file, &field_key)?),
            "modifiers" => spec.modifiers = modifiers(value, file, &field_key)?,
            _ => {
                return Err(ThemeError::UnknownKey {
                    file: file.to_owned(),
                    key: field_key,
                });
            }
        }
    }
    Ok(spec)
}

fn modifiers(value: toml::Value, file: &str, key: &str) -> Result<Modifier> {
    let toml::Value::Array(items) = value else {
        return Err(wrong_type(file, key, "a list of modifier names"));
    };
    let mut all = Modifier::empty();
    for item in items {
        let toml::Value::String(name) = item else {
            return Err(wrong_type(file, key, "a list of modifier names"));
        };
        match MODIFIERS.iter().find(|(n, _)| *n == name) {
            Some((_, modifier)) => all |= *modifier,
            None => {
                return Err(ThemeError::UnknownModifier {
                    file: file.to_owned(),
                    key: key.to_owned(),
                    value: name,
                });
            }
        }
    }
    Ok(all)
}

/// toml's own rendering spans several lines with a source excerpt; theme errors reach the
/// status line as one sentence, so keep the message and the line number.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// A themes directory holding `files` (stem, contents).
    fn user_dir(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (stem, text) in files {
            std::fs::write(dir.path().join(format!("{stem}.toml")), text).unwrap();
        }
        dir
    }

    /// Loads a single user theme called `t` from `text`.
    fn load_text(text: &str) -> Result<Theme> {
        let dir = user_dir(&[("t", text)]);
        Theme::load("t", Some(dir.path()))
    }

    fn fg(theme: &Theme, key: &str) -> Option<Color> {
        theme.styles.get(key).and_then(|s| s.fg)
    }

    #[test]
    fn bundled_names_match_the_compiled_in_files() {
        let compiled: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
        assert_eq!(compiled, Theme::bundled_names());
        assert_eq!(
            Theme::bundled_names(),
            ["default", "light", "high-contrast"]
        );
    }

    #[test]
    fn required_keys_are_unique() {
        let mut keys = REQUIRED_KEYS.to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), REQUIRED_KEYS.len());
    }

    #[test]
    fn bundled_themes_load_and_define_required_keys() {
        for name in Theme::bundled_names() {
            let theme = Theme::load(name, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(theme.name(), *name);
            for key in REQUIRED_KEYS {
                assert!(theme.styles.contains_key(*key), "{name} lacks {key}");
            }
        }
    }

    #[test]
    fn default_theme_is_the_bundled_file() {
        let theme = Theme::default_theme();
        assert_eq!(theme, Theme::load("default", None).unwrap());
        assert_eq!(theme, Theme::default());
        assert_eq!(theme.name(), "default");
        assert!(theme.style("ui.background").bg.is_some());
    }

    #[test]
    fn variants_differ_from_default_through_the_palette() {
        let default = Theme::default_theme();
        let light = Theme::load("light", None).unwrap();
        let contrast = Theme::load("high-contrast", None).unwrap();
        // `message.text` is only defined in default.toml: the variants change it by palette.
        assert_eq!(
            fg(&default, "message.text"),
            Some(Color::Rgb(0xd5, 0xda, 0xe3))
        );
        assert_eq!(
            fg(&light, "message.text"),
            Some(Color::Rgb(0x1f, 0x23, 0x28))
        );
        assert_eq!(
            fg(&contrast, "message.text"),
            Some(Color::Rgb(0xff, 0xff, 0xff))
        );
        assert_ne!(
            fg(&default, "message.sender"),
            fg(&default, "message.sender.self")
        );
    }

    #[test]
    fn style_falls_back_by_dropping_segments_then_to_ui_text() {
        let theme = load_text(
            r##"
            [styles]
            "ui.text" = "#010101"
            "message" = "#020202"
            "message.sender" = { fg = "#030303", modifiers = ["bold"] }
            "##,
        )
        .unwrap();
        let rgb = |v| Style::new().fg(Color::Rgb(v, v, v));
        assert_eq!(
            theme.style("message.sender"),
            rgb(3).add_modifier(Modifier::BOLD)
        );
        assert_eq!(
            theme.style("message.sender.self"),
            theme.style("message.sender")
        );
        assert_eq!(
            theme.style("message.sender.self.extra"),
            theme.style("message.sender")
        );
        assert_eq!(theme.style("message.time"), rgb(2));
        assert_eq!(theme.style("ui.sidebar.selected"), rgb(1));
        assert_eq!(theme.style("nothing"), rgb(1));
        assert_eq!(theme.style(""), rgb(1));

        let bare = load_text("[styles]\n\"message\" = \"red\"\n").unwrap();
        assert_eq!(bare.style("ui.sidebar"), Style::default());
        assert_eq!(bare.style("message.text"), Style::new().fg(Color::Red));
    }

    #[test]
    fn colour_literals_and_style_forms() {
        let theme = load_text(
            r##"
            [palette]
            red = "#ff0000"
            idx = 42
            [styles]
            "a" = "#A1b2C3"
            "b" = "200"
            "c" = 7
            "d" = "light_magenta"
            "e" = "red"
            "f" = { bg = "idx", modifiers = ["italic", "crossed_out", "dim", "underlined"] }
            "g" = { fg = "reset", bg = "dark_gray" }
            "h" = {}
            "##,
        )
        .unwrap();
        assert_eq!(fg(&theme, "a"), Some(Color::Rgb(0xa1, 0xb2, 0xc3)));
        assert_eq!(fg(&theme, "b"), Some(Color::Indexed(200)));
        assert_eq!(fg(&theme, "c"), Some(Color::Indexed(7)));
        assert_eq!(fg(&theme, "d"), Some(Color::LightMagenta));
        // A palette entry shadows the ANSI name.
        assert_eq!(fg(&theme, "e"), Some(Color::Rgb(0xff, 0, 0)));
        assert_eq!(
            theme.style("f"),
            Style::new().bg(Color::Indexed(42)).add_modifier(
                Modifier::ITALIC | Modifier::CROSSED_OUT | Modifier::DIM | Modifier::UNDERLINED
            )
        );
        assert_eq!(
            theme.style("g"),
            Style::new().fg(Color::Reset).bg(Color::DarkGray)
        );
        assert_eq!(theme.style("h"), Style::new());
        assert_eq!(theme.name(), "t");
    }

    #[test]
    fn name_key_overrides_the_file_stem() {
        let theme = load_text("name = \"Night Owl\"\n").unwrap();
        assert_eq!(theme.name(), "Night Owl");
    }

    #[test]
    fn inheritance_merges_and_resolves_palette_names_after_merging() {
        let dir = user_dir(&[
            (
                "base",
                r##"
                [palette]
                fg = "#111111"
                accent = "#aaaaaa"
                [styles]
                "ui.text" = "fg"
                "ui.title" = { fg = "accent", modifiers = ["bold"] }
                "ui.border" = "accent"
                "##,
            ),
            (
                "child",
                r##"
                inherits = "base"
                [palette]
                fg = "#222222"
                [styles]
                "ui.border" = "#333333"
                "##,
            ),
            (
                "grandchild",
                "inherits = \"child\"\n[palette]\naccent = \"#444444\"\n",
            ),
        ]);
        let child = Theme::load("child", Some(dir.path())).unwrap();
        assert_eq!(child.name(), "child");
        assert_eq!(fg(&child, "ui.text"), Some(Color::Rgb(0x22, 0x22, 0x22)));
        assert_eq!(fg(&child, "ui.title"), Some(Color::Rgb(0xaa, 0xaa, 0xaa)));
        assert_eq!(fg(&child, "ui.border"), Some(Color::Rgb(0x33, 0x33, 0x33)));
        let grandchild = Theme::load("grandchild", Some(dir.path())).unwrap();
        assert_eq!(
            fg(&grandchild, "ui.text"),
            Some(Color::Rgb(0x22, 0x22, 0x22))
        );
        assert_eq!(
            grandchild.style("ui.title"),
            Style::new()
                .fg(Color::Rgb(0x44, 0x44, 0x44))
                .add_modifier(Modifier::BOLD)
        );
        assert_eq!(
            fg(&grandchild, "ui.border"),
            Some(Color::Rgb(0x33, 0x33, 0x33))
        );
    }

    #[test]
    fn inheritance_depth_is_limited() {
        // t0 inherits t1 ... inherits tN: N links.
        let chain = |links: usize| {
            let files: Vec<(String, String)> = (0..=links)
                .map(|i| {
                    let text = if i < links {
                        format!("inherits = \"t{}\"\n", i + 1)
                    } else {
                        "[styles]\n\"ui.text\" = \"red\"\n".to_owned()
                    };
                    (format!("t{i}"), text)
                })
                .collect();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_str()))
                .collect();
            let dir = user_dir(&refs);
            Theme::load("t0", Some(dir.path()))
        };
        let deepest = chain(MAX_INHERIT_DEPTH).unwrap();
        assert_eq!(fg(&deepest, "ui.text"), Some(Color::Red));
        let e = chain(MAX_INHERIT_DEPTH + 1).unwrap_err();
        assert!(
            matches!(&e, ThemeError::TooDeep { file } if file.ends_with("t8.toml")),
            "{e}"
        );
    }

    #[test]
    fn inheritance_cycles_are_errors() {
        let dir = user_dir(&[
            ("a", "inherits = \"b\"\n"),
            ("b", "inherits = \"c\"\n"),
            ("c", "inherits = \"a\"\n"),
        ]);
        let e = Theme::load("a", Some(dir.path())).unwrap_err();
        let ThemeError::Cycle { chain } = &e else {
            panic!("{e}")
        };
        let stems: Vec<&str> = chain
            .iter()
            .map(|f| Path::new(f).file_stem().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(stems, ["a", "b", "c", "a"]);
        assert!(
            e.to_string().starts_with("theme inheritance cycle: "),
            "{e}"
        );
    }

    #[test]
    fn unknown_parent_is_an_error_naming_file_and_parent() {
        let dir = user_dir(&[("orphan", "inherits = \"nowhere\"\n"), ("mine", "")]);
        let e = Theme::load("orphan", Some(dir.path())).unwrap_err();
        let ThemeError::UnknownParent {
            file,
            parent,
            available,
        } = &e
        else {
            panic!("{e}")
        };
        assert!(file.ends_with("orphan.toml"));
        assert_eq!(parent, "nowhere");
        assert!(available.contains(&"mine".to_owned()));
        assert!(e.to_string().contains("\"nowhere\""), "{e}");
        // A parent name that is not a file stem cannot be found either (no path escapes).
        let e = load_text("inherits = \"../t\"\n").unwrap_err();
        assert!(matches!(e, ThemeError::UnknownParent { .. }), "{e}");
        // A user theme inheriting its own name extends the bundled theme of that name; there
        // is no bundled `t`, so the parent is unknown (rather than a cycle).
        let e = load_text("inherits = \"t\"\n").unwrap_err();
        assert!(matches!(e, ThemeError::UnknownParent { .. }), "{e}");
    }

    #[test]
    fn user_theme_shadows_a_bundled_one() {
        let dir = user_dir(&[("default", "[styles]\n\"ui.text\" = \"#ff0000\"\n")]);
        let theme = Theme::load("default", Some(dir.path())).unwrap();
        assert_eq!(fg(&theme, "ui.text"), Some(Color::Rgb(0xff, 0, 0)));
        assert!(!theme.styles.contains_key("ui.sidebar"));
        // Bundled themes keep inheriting the bundled default, not the user's shadow.
        let light = Theme::load("light", Some(dir.path())).unwrap();
        assert_eq!(light, Theme::load("light", None).unwrap());
    }

    #[test]
    fn user_theme_inherits_a_bundled_one() {
        let dir = user_dir(&[
            (
                "default",
                "inherits = \"default\"\n[palette]\naccent = \"#123456\"\n",
            ),
            (
                "mine",
                "inherits = \"light\"\n[palette]\naccent = \"#654321\"\n[styles]\n\"message.time\" = { fg = \"fg\", modifiers = [\"italic\"] }\n",
            ),
        ]);
        let tweaked = Theme::load("default", Some(dir.path())).unwrap();
        let bundled = Theme::default_theme();
        assert_eq!(fg(&tweaked, "ui.title"), Some(Color::Rgb(0x12, 0x34, 0x56)));
        assert_eq!(tweaked.style("message.text"), bundled.style("message.text"));

        let mine = Theme::load("mine", Some(dir.path())).unwrap();
        let light = Theme::load("light", None).unwrap();
        assert_eq!(mine.name(), "mine");
        assert_eq!(fg(&mine, "ui.title"), Some(Color::Rgb(0x65, 0x43, 0x21)));
        assert_eq!(mine.style("message.text"), light.style("message.text"));
        assert_eq!(
            mine.style("message.time"),
            light.style("message.text").add_modifier(Modifier::ITALIC)
        );
        for key in REQUIRED_KEYS {
            assert!(mine.styles.contains_key(*key), "mine lacks {key}");
        }
    }

    #[test]
    fn unknown_and_invalid_names() {
        let dir = user_dir(&[("zeta", "")]);
        let e = Theme::load("nope", Some(dir.path())).unwrap_err();
        let ThemeError::Unknown { name, available } = &e else {
            panic!("{e}")
        };
        assert_eq!(name, "nope");
        assert_eq!(available, &["default", "high-contrast", "light", "zeta"]);
        assert_eq!(
            e.to_string(),
            "unknown theme \"nope\" (available: default, high-contrast, light, zeta)"
        );
        for bad in ["", "../default", "a/b", "a\\b", ".hidden", "sp ace"] {
            let e = Theme::load(bad, Some(dir.path())).unwrap_err();
            assert!(matches!(e, ThemeError::InvalidName(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn available_lists_bundled_and_user_themes_sorted() {
        assert_eq!(
            Theme::available(None),
            ["default", "high-contrast", "light"]
        );
        let dir = user_dir(&[("zeta", ""), ("default", ""), ("alpha.dark", "")]);
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        std::fs::write(dir.path().join(".hidden.toml"), "").unwrap();
        std::fs::create_dir(dir.path().join("dir.toml")).unwrap();
        assert_eq!(
            Theme::available(Some(dir.path())),
            ["alpha.dark", "default", "high-contrast", "light", "zeta"]
        );
        let missing = dir.path().join("missing");
        assert_eq!(Theme::available(Some(&missing)), Theme::available(None));
    }

    #[test]
    fn unreadable_user_theme_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("light.toml")).unwrap();
        let e = Theme::load("light", Some(dir.path())).unwrap_err();
        assert!(
            matches!(&e, ThemeError::Read { path, .. } if path.ends_with("light.toml")),
            "{e}"
        );
    }

    /// Loads `text` as `t.toml` and returns the error and its message.
    fn error_of(text: &str) -> (ThemeError, String) {
        let e = load_text(text).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("t.toml"), "{message}");
        (e, message)
    }

    #[test]
    fn format_errors_name_file_and_key() {
        let (e, m) = error_of("[palette]\nbg = \"#12345\"\n");
        assert!(
            matches!(&e, ThemeError::BadColor { key, value, .. } if key == "palette.bg" && value == "#12345"),
            "{m}"
        );
        assert!(m.contains("palette.bg: invalid colour \"#12345\""), "{m}");

        let (e, m) = error_of("[palette]\n\"my colour\" = 256\n");
        assert!(
            matches!(&e, ThemeError::BadColor { key, value, .. } if key == "palette.\"my colour\"" && value == "256"),
            "{m}"
        );

        let (e, m) = error_of("[palette]\nbg = \"accent\"\n");
        assert!(
            matches!(&e, ThemeError::BadColor { key, .. } if key == "palette.bg"),
            "{m}"
        );

        let (e, m) = error_of("[styles]\n\"ui.text\" = \"#gg0000\"\n");
        assert!(
            matches!(&e, ThemeError::BadColor { key, .. } if key == "styles.\"ui.text\".fg"),
            "{m}"
        );

        let (e, m) = error_of("[styles]\n\"ui.text\" = { bg = \"999\" }\n");
        assert!(
            matches!(&e, ThemeError::BadColor { key, .. } if key == "styles.\"ui.text\".bg"),
            "{m}"
        );

        let (e, m) = error_of("[styles]\n\"ui.text\" = { fg = \"accnt\" }\n");
        assert!(
            matches!(&e, ThemeError::UnknownColor { key, value, .. } if key == "styles.\"ui.text\".fg" && value == "accnt"),
            "{m}"
        );
        assert!(m.contains("\"accnt\" is not in the palette"), "{m}");

        let (e, m) = error_of(
            "[styles]\n\"ui.text\" = { fg = \"red\", modifiers = [\"bold\", \"blink\"] }\n",
        );
        assert!(
            matches!(&e, ThemeError::UnknownModifier { key, value, .. } if key == "styles.\"ui.text\".modifiers" && value == "blink"),
            "{m}"
        );
        assert!(
            m.contains("styles.\"ui.text\".modifiers: unknown modifier \"blink\""),
            "{m}"
        );

        let (e, m) = error_of("colours = 1\n");
        assert!(
            matches!(&e, ThemeError::UnknownKey { key, .. } if key == "colours"),
            "{m}"
        );
        assert!(m.ends_with("unknown key colours"), "{m}");

        let (e, m) = error_of("[styles]\n\"ui.text\" = { fgg = \"red\" }\n");
        assert!(
            matches!(&e, ThemeError::UnknownKey { key, .. } if key == "styles.\"ui.text\".fgg"),
            "{m}"
        );

        let (e, m) = error_of("palette = 3\n");
        assert!(
            matches!(&e, ThemeError::WrongType { key, .. } if key == "palette"),
            "{m}"
        );
        let (e, m) = error_of("inherits = [\"default\"]\n");
        assert!(
            matches!(&e, ThemeError::WrongType { key, .. } if key == "inherits"),
            "{m}"
        );
        let (e, m) = error_of("[styles]\n\"ui.text\" = true\n");
        assert!(
            matches!(&e, ThemeError::WrongType { key, .. } if key == "styles.\"ui.text\""),
            "{m}"
        );
        let (e, m) = error_of("[styles]\n\"ui.text\" = { modifiers = \"bold\" }\n");
        assert!(
            matches!(&e, ThemeError::WrongType { key, .. } if key == "styles.\"ui.text\".modifiers"),
            "{m}"
        );

        let (e, m) = error_of("[styles]\n\"ui.text\" = \"red\"\n\"ui.text\" = \"blue\"\n");
        assert!(matches!(e, ThemeError::Syntax { .. }), "{m}");
        assert!(m.contains("line 3"), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn an_inherited_style_error_names_the_file_that_defines_it() {
        let dir = user_dir(&[
            (
                "base",
                "[styles]\n\"ui.text\" = \"fg\"\n[palette]\nfg = \"red\"\n",
            ),
            ("child", "inherits = \"base\"\n"),
            ("broken", "[styles]\n\"ui.text\" = \"fgx\"\n"),
            (
                "fixed",
                "inherits = \"broken\"\n[palette]\nfgx = \"blue\"\n",
            ),
        ]);
        assert_eq!(
            fg(&Theme::load("child", Some(dir.path())).unwrap(), "ui.text"),
            Some(Color::Red)
        );
        // The child's palette can supply a name its parent's style uses.
        assert_eq!(
            fg(&Theme::load("fixed", Some(dir.path())).unwrap(), "ui.text"),
            Some(Color::Blue)
        );
        let e = Theme::load("broken", Some(dir.path())).unwrap_err();
        assert!(
            matches!(&e, ThemeError::UnknownColor { file, .. } if file.ends_with("broken.toml")),
            "{e}"
        );
    }

    #[test]
    fn without_color_strips_colours_and_keeps_modifiers() {
        for name in Theme::bundled_names() {
            let theme = Theme::load(name, None).unwrap();
            let plain = theme.without_color();
            assert_eq!(plain.name(), theme.name());
            assert_eq!(plain.styles.len(), theme.styles.len());
            for (key, style) in &theme.styles {
                let bare = plain.styles[key];
                assert_eq!((bare.fg, bare.bg, bare.underline_color), (None, None, None));
                assert_eq!(bare.add_modifier, style.add_modifier, "{name} {key}");
                assert_eq!(bare.sub_modifier, style.sub_modifier, "{name} {key}");
            }
            // Without colour, selections must still show: they are reversed.
            for key in [
                "ui.sidebar.selected",
                "ui.overlay.selected",
                "ui.statusbar.banner",
            ] {
                assert!(
                    plain.style(key).add_modifier.contains(Modifier::REVERSED),
                    "{name} {key}"
                );
            }
        }
        let coloured = Theme {
            name: "x".into(),
            styles: HashMap::from([(
                "k".to_owned(),
                Style::new()
                    .fg(Color::Red)
                    .bg(Color::Blue)
                    .underline_color(Color::Green)
                    .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                    .remove_modifier(Modifier::ITALIC),
            )]),
        };
        assert_eq!(
            coloured.without_color().style("k"),
            Style::new()
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                .remove_modifier(Modifier::ITALIC)
        );
    }

    #[test]
    fn no_color_needs_a_non_empty_value() {
        assert!(!no_color_from(None));
        assert!(!no_color_from(Some(OsString::new())));
        assert!(no_color_from(Some("1".into())));
        assert!(no_color_from(Some("0".into())));
        assert!(no_color_from(Some("false".into())));
    }

    /// WCAG 2 relative luminance.
    fn luminance(color: Color) -> f64 {
        let Color::Rgb(r, g, b) = color else {
            panic!("bundled themes use #rrggbb so contrast is measurable, found {color:?}")
        };
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.040_45 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    }

    fn contrast(a: Color, b: Color) -> f64 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn contrast_formula_matches_wcag_reference_values() {
        let black = Color::Rgb(0, 0, 0);
        let white = Color::Rgb(255, 255, 255);
        assert!((contrast(black, white) - 21.0).abs() < 1e-9);
        assert!((contrast(white, white) - 1.0).abs() < 1e-9);
        // #767676 on white is the classic "just passes AA" grey (4.54:1).
        assert!((contrast(Color::Rgb(0x76, 0x76, 0x76), white) - 4.54).abs() < 0.01);
    }

    /// Surfaces that foreground-only styles are drawn on.
    const SURFACES: &[&str] = &[
        "ui.background",
        "ui.sidebar",
        "ui.statusbar",
        "ui.composer",
        "ui.overlay",
    ];

    #[test]
    fn bundled_themes_meet_wcag_contrast() {
        for (name, minimum) in [("default", 4.5), ("light", 4.5), ("high-contrast", 7.0)] {
            let theme = Theme::load(name, None).unwrap();
            let text = theme.style("ui.text").fg.expect("ui.text sets fg");
            let mut worst = (f64::INFINITY, String::new());
            let mut pairs = 0;
            let mut keys: Vec<&String> = theme.styles.keys().collect();
            keys.sort();
            for key in keys {
                let style = theme.styles[key];
                // DIM is rendered differently by each terminal and would undercut the figures.
                assert!(
                    !style.add_modifier.contains(Modifier::DIM),
                    "{name} {key} uses dim"
                );
                let checks: Vec<(Color, Color, String)> = match (style.fg, style.bg) {
                    (Some(fg), Some(bg)) => vec![(fg, bg, key.clone())],
                    (Some(fg), None) => SURFACES
                        .iter()
                        .map(|s| {
                            let bg = theme.styles[*s].bg.expect("surfaces set bg");
                            (fg, bg, format!("{key} on {s}"))
                        })
                        .collect(),
                    (None, Some(bg)) => vec![(text, bg, format!("ui.text on {key}"))],
                    (None, None) => Vec::new(),
                };
                for (fg, bg, what) in checks {
                    let ratio = contrast(fg, bg);
                    pairs += 1;
                    assert!(ratio >= minimum, "{name}: {what}: {ratio:.2} < {minimum}");
                    if ratio < worst.0 {
                        worst = (ratio, what);
                    }
                }
            }
            let background = theme.style("ui.background");
            println!(
                "{name}: {pairs} pairs, minimum {:.2} ({}), text on background {:.2}",
                worst.0,
                worst.1,
                contrast(background.fg.unwrap(), background.bg.unwrap())
            );
        }
    }
}
