//! Where cinder keeps its files, and the user's TOML configuration.
//!
//! [`Paths`] finds the XDG config and data directories (through `directories`), and
//! [`profile_dir`] turns `--profile` / `CINDER_PROFILE` into the directory of one profile
//! (`<data>/profiles/<name>`, or any directory when the value contains a `/`). [`Config`] is the
//! strict config file: every key has its default in exactly one place (the `Default` impls
//! below), unknown keys are rejected with their name and line, and
//! `assets/config.example.toml` documents every key with its default. [`parse_duration`] is the
//! one duration grammar of every flag, config key and slash command. This module imports no
//! other cinder module.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod duration;
pub use duration::{parse_duration, parse_whole_seconds};

/// Environment variable that picks the profile when `--profile` is not given.
pub const PROFILE_ENV: &str = "CINDER_PROFILE";
/// Profile used when neither `--profile` nor [`PROFILE_ENV`] is set.
pub const DEFAULT_PROFILE: &str = "default";
/// File name of the config file inside [`Paths::config_dir`].
pub const CONFIG_FILE: &str = "config.toml";
/// Environment variables that carry a passphrase. Every child process cinder starts (the
/// `--passphrase-command`, `$EDITOR`, the bench's relay) is started without them: a child has
/// no business with the cache passphrase, and an editor plugin or a logging shell would see
/// it. Removing them from cinder's own environment would need `unsafe` `remove_var`.
pub const SECRET_ENV: &[&str] = &["CINDER_PASSPHRASE", "CINDER_NEW_PASSPHRASE"];

/// Everything that can go wrong finding paths or loading the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The platform reports no home directory to derive the XDG directories from.
    #[error("cannot find a home directory for cinder's config and data")]
    NoHome,
    /// A profile name with characters outside `[A-Za-z0-9._-]` (and no `/`).
    #[error(
        "invalid profile name {0:?}: use letters, digits, '.', '_' and '-', or a path containing '/'"
    )]
    InvalidProfile(String),
    /// A config file given explicitly does not exist.
    #[error("config file {} does not exist", .0.display())]
    NotFound(PathBuf),
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key, a wrong type or a bad value.
    #[error("invalid config file {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and the key where known.
        message: String,
    },
    /// A duration (of a flag, a config key or a command) is not in the duration grammar.
    #[error(
        "not a duration: {value:?} ({reason}); write e.g. 90s, 1h30m or 2days (a bare number is seconds)"
    )]
    Duration {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, ConfigError>;

/// The base directories of cinder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/cinder`: `config.toml`, keymap and theme overrides.
    pub config_dir: PathBuf,
    /// `$XDG_DATA_HOME/cinder`: the profiles.
    pub data_dir: PathBuf,
}

impl Paths {
    /// The platform's directories for cinder (XDG on Linux).
    ///
    /// # Errors
    /// [`ConfigError::NoHome`] if no home directory can be determined.
    pub fn from_env() -> Result<Paths> {
        let dirs = directories::ProjectDirs::from("", "", "cinder").ok_or(ConfigError::NoHome)?;
        Ok(Paths {
            config_dir: dirs.config_dir().to_path_buf(),
            data_dir: dirs.data_dir().to_path_buf(),
        })
    }

    /// The default config file, `config_dir/config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join(CONFIG_FILE)
    }

    /// The directory holding the named profiles, `data_dir/profiles`.
    pub fn profiles_dir(&self) -> PathBuf {
        self.data_dir.join("profiles")
    }
}

/// The directory of a profile.
///
/// `profile` is the `--profile` value; `None` falls back to [`PROFILE_ENV`] (ignored when empty)
/// and then to [`DEFAULT_PROFILE`]. A value containing `/` is a directory used as it is;
/// anything else is a name under [`Paths::profiles_dir`].
///
/// # Errors
/// [`ConfigError::InvalidProfile`] for a name outside `[A-Za-z0-9._-]`, `.`, `..`, an empty name,
/// or a [`PROFILE_ENV`] value that is not UTF-8.
pub fn profile_dir(paths: &Paths, profile: Option<&str>) -> Result<PathBuf> {
    match profile {
        Some(p) => resolve_profile(paths, p),
        None => match std::env::var(PROFILE_ENV) {
            Ok(v) if !v.is_empty() => resolve_profile(paths, &v),
            Ok(_) | Err(std::env::VarError::NotPresent) => resolve_profile(paths, DEFAULT_PROFILE),
            Err(std::env::VarError::NotUnicode(v)) => Err(ConfigError::InvalidProfile(
                v.to_string_lossy().into_owned(),
            )),
        },
    }
}

/// [`profile_dir`] once the value is chosen; separate so tests need not touch the environment.
fn resolve_profile(paths: &Paths, value: &str) -> Result<PathBuf> {
    if value.contains('/') {
        return Ok(PathBuf::from(value));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    // "." and ".." are made of allowed characters but would leave `profiles/`.
    if value.is_empty() || value == "." || value == ".." || !value.chars().all(allowed) {
        return Err(ConfigError::InvalidProfile(value.to_string()));
    }
    Ok(paths.profiles_dir().join(value))
}

/// The whole config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[ui]`
    pub ui: UiConfig,
    /// `[network]`
    pub network: NetworkConfig,
    /// `[logging]`
    pub logging: LoggingConfig,
}

/// `[ui]`: the terminal interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Theme name: a bundled theme or a file in the config directory.
    pub theme: String,
    /// Keymap name: the bundled one or a file in the config directory.
    pub keymap: String,
    /// Whether mouse input is captured.
    pub mouse: bool,
    /// Whether a new message rings the terminal bell.
    pub bell: bool,
    /// Whether a new message raises a desktop notification.
    pub desktop_notifications: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            theme: "default".into(),
            keymap: "default".into(),
            mouse: true,
            bell: true,
            desktop_notifications: true,
        }
    }
}

/// `[network]`: the connection to the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Upper bound of the reconnect backoff, in seconds (at least 1). The file may give it as a
    /// number of seconds or as a duration string (`"2m"`).
    #[serde(deserialize_with = "seconds_or_duration")]
    pub reconnect_max_seconds: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            reconnect_max_seconds: 30,
        }
    }
}

impl NetworkConfig {
    /// [`Self::reconnect_max_seconds`] as a duration.
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_secs(self.reconnect_max_seconds)
    }
}

/// A key in seconds that also takes a duration string, so the one duration grammar works in the
/// config file too (`reconnect_max_seconds = "2m"`) while existing numeric values keep working.
fn seconds_or_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<u64, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of seconds or a duration such as \"2m\"")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<u64, E> {
            parse_whole_seconds(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor)
}

/// `[logging]`: the log file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A tracing filter: a level (`"info"`) or directives (`"warn,cinder=debug"`).
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Loads the config.
    ///
    /// An explicit `path` (`--config`) must exist; the default `config_dir/config.toml` may be
    /// absent, which means all defaults.
    ///
    /// # Errors
    /// [`ConfigError::NotFound`] for a missing explicit file, [`ConfigError::Read`],
    /// [`ConfigError::Invalid`] naming the offending key and line.
    pub fn load(path: Option<&Path>, paths: &Paths) -> Result<Config> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (paths.config_file(), false),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if explicit {
                    Err(ConfigError::NotFound(file))
                } else {
                    Ok(Config::default())
                };
            }
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        Self::from_toml(&text, &file)
    }

    /// Parses and checks config text; `origin` only names the file in errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message: one_line(text, &e),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Value checks serde's types cannot express.
    fn check(&self) -> std::result::Result<(), String> {
        if self.network.reconnect_max_seconds == 0 {
            return Err("network.reconnect_max_seconds must be at least 1".into());
        }
        if self.logging.level.trim().is_empty() {
            return Err("logging.level must not be empty".into());
        }
        Ok(())
    }
}

/// toml's own rendering spans several lines with a source excerpt; errors here are printed as
/// one sentence on stderr, so keep the message (which names an unknown key) and the line.
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

    const EXAMPLE: &str = include_str!("../assets/config.example.toml");

    fn paths(root: &Path) -> Paths {
        Paths {
            config_dir: root.join("config"),
            data_dir: root.join("data"),
        }
    }

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
        // Every key is present commented out, so uncommenting the whole file changes nothing.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| {
                if l.starts_with('[') {
                    l
                } else {
                    l.strip_prefix("# ")
                        .filter(|r| r.contains(" = "))
                        .unwrap_or("")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse(&uncommented).unwrap(), Config::default());
        // And it really sets every key: serialising the defaults gives the same table.
        let full: toml::Table = toml::from_str(&uncommented).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(full, defaults);
    }

    #[test]
    fn defaults_are_as_documented() {
        let c = Config::default();
        assert_eq!(c.ui.theme, "default");
        assert_eq!(c.ui.keymap, "default");
        assert!(c.ui.mouse && c.ui.bell && c.ui.desktop_notifications);
        assert_eq!(c.network.reconnect_max(), Duration::from_secs(30));
        assert_eq!(c.logging.level, "info");
    }

    #[test]
    fn second_keys_take_numbers_or_durations() {
        let c = parse("[network]\nreconnect_max_seconds = 45\n").unwrap();
        assert_eq!(c.network.reconnect_max(), Duration::from_secs(45));
        let c = parse("[network]\nreconnect_max_seconds = \"1m30s\"\n").unwrap();
        assert_eq!(c.network.reconnect_max(), Duration::from_secs(90));
        let e = parse("[network]\nreconnect_max_seconds = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("not a duration"), "{e}");
        assert!(parse("[network]\nreconnect_max_seconds = -3\n").is_err());
        assert!(parse("[network]\nreconnect_max_seconds = \"0s\"\n").is_err());
    }

    #[test]
    fn partial_files_keep_other_defaults() {
        let c = parse("[ui]\nmouse = false\n[logging]\nlevel = \"cinder=debug\"\n").unwrap();
        assert!(!c.ui.mouse);
        assert_eq!(c.ui.theme, "default");
        assert_eq!(c.logging.level, "cinder=debug");
        assert_eq!(c.network, NetworkConfig::default());
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("[ui]\ntheme = \"x\"\ncolour = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("test.toml"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse("[netwrok]\nreconnect_max_seconds = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("netwrok"), "{e}");
        let e = parse("verbose = true\n").unwrap_err().to_string();
        assert!(e.contains("verbose"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let e = parse("[ui]\nmouse = \"yes\"\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[network]\nreconnect_max_seconds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reconnect_max_seconds"), "{e}");
        assert!(parse("[network]\nreconnect_max_seconds = -1\n").is_err());
        assert!(parse("[logging]\nlevel = \"\"\n").is_err());
        assert!(parse("[ui\n").is_err());
    }

    #[test]
    fn load_distinguishes_explicit_and_default_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        // Absent default file: defaults.
        assert_eq!(Config::load(None, &p).unwrap(), Config::default());
        // Absent explicit file: an error naming it.
        let missing = tmp.path().join("nope.toml");
        let e = Config::load(Some(&missing), &p).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound(_)));
        assert!(e.to_string().contains("nope.toml"));

        std::fs::create_dir_all(&p.config_dir).unwrap();
        std::fs::write(p.config_file(), "[ui]\nbell = false\n").unwrap();
        assert!(!Config::load(None, &p).unwrap().ui.bell);
        let other = tmp.path().join("other.toml");
        std::fs::write(&other, "[network]\nreconnect_max_seconds = 5\n").unwrap();
        let c = Config::load(Some(&other), &p).unwrap();
        assert_eq!(c.network.reconnect_max_seconds, 5);
        assert!(c.ui.bell, "the explicit file replaces the default one");
        std::fs::write(p.config_file(), "[ui]\nbel = false\n").unwrap();
        assert!(matches!(
            Config::load(None, &p),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn profile_names_and_paths() {
        let p = paths(Path::new("/x"));
        assert_eq!(
            resolve_profile(&p, "default").unwrap(),
            Path::new("/x/data/profiles/default")
        );
        assert_eq!(
            resolve_profile(&p, "work.2_b-c").unwrap(),
            Path::new("/x/data/profiles/work.2_b-c")
        );
        assert_eq!(resolve_profile(&p, "./here").unwrap(), Path::new("./here"));
        assert_eq!(
            resolve_profile(&p, "/abs/dir").unwrap(),
            Path::new("/abs/dir")
        );
        for bad in ["", ".", "..", "a b", "ä", "x:y", "a\\b", "name\n"] {
            let e = resolve_profile(&p, bad).unwrap_err();
            assert!(matches!(e, ConfigError::InvalidProfile(_)), "{bad:?}");
        }
        assert_eq!(
            profile_dir(&p, Some("alice")).unwrap(),
            Path::new("/x/data/profiles/alice")
        );
        assert!(profile_dir(&p, Some("a b")).is_err());
    }

    #[test]
    fn xdg_paths_end_in_cinder() {
        // Only checks the shape: the test environment decides where home is.
        if let Ok(p) = Paths::from_env() {
            assert!(p.config_dir.ends_with("cinder"));
            assert!(p.data_dir.ends_with("cinder"));
        }
    }
}
