//! Enforces the module dependency table (explained in `docs/architecture.md`) by scanning `src/`
//! and keeps the repository self-contained.
//!
//! Each top module (`src/<m>.rs` plus `src/<m>/**`) may reference only the crate modules its
//! row allows. The relay must never reach the envelope, ratchet, sender-key, chunked-file or
//! cache code, so it structurally cannot see plaintext; `crypto` and `protocol` stay pure. The
//! table in `docs/architecture.md` must be this one, and no file may point at design notes
//! outside the repository.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// (module, modules it may import). Modules not yet written are listed so they are checked
/// the moment they appear.
const TABLE: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("crypto", &[]),
    ("clock", &[]),
    ("config", &[]),
    ("logging", &[]),
    ("store", &["protocol", "crypto"]),
    ("client", &["protocol", "crypto"]),
    ("media", &["protocol", "crypto"]),
    (
        "session",
        &[
            "protocol", "crypto", "client", "store", "media", "config", "logging", "clock",
        ],
    ),
    (
        "tui",
        &["session", "protocol", "config", "logging", "clock"],
    ),
    (
        "relay",
        &["protocol", "config", "crypto", "logging", "clock"],
    ),
    ("admin", &["session", "protocol", "config", "logging"]),
    ("bot", &["session", "protocol", "config", "logging"]),
    ("rpc", &["session", "protocol", "config", "logging"]),
    (
        "cli",
        &[
            "session", "protocol", "config", "logging", "store", "crypto", "relay", "tui", "admin",
            "bot", "rpc", "clock",
        ],
    ),
    (
        "bench",
        &[
            "protocol", "crypto", "client", "config", "logging", "store", "media", "session",
            "relay", "tui", "admin", "bot", "rpc", "clock",
        ],
    ),
];

/// Parts of `crypto` the relay may use: signature checks on certificates and its own login
/// challenge, never anything that decrypts. `membership`: the relay checks membership changes
/// with the same rules to route and refuse; membership carries no secrets. `hex`: the one text
/// encoding of bytes (network ids).
const RELAY_CRYPTO_ALLOWED: &[&str] = &[
    "hex",
    "primitives",
    "identity",
    "wire",
    "membership",
    "CryptoError",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::<module>[::<item>]` reference in `src`, comments stripped.
fn crate_refs(src: &str) -> Vec<(String, Option<String>)> {
    let mut refs = Vec::new();
    for line in src.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let ident = |s: &str| -> String {
                s.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            };
            let module = ident(rest);
            let after = &rest[module.len()..];
            let item = after
                .strip_prefix("::")
                .map(ident)
                .filter(|s| !s.is_empty());
            refs.push((module, item));
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + 8..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push((name, None));
                }
            }
        }
    }
    refs
}

fn module_files() -> BTreeMap<String, Vec<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut map: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        map.entry(module).or_default().push(f);
    }
    map
}

#[test]
fn every_module_is_in_the_table() {
    for module in module_files().keys() {
        assert!(
            TABLE.iter().any(|(m, _)| m == module),
            "src/{module} is not in the dependency table of docs/architecture.md"
        );
    }
}

#[test]
fn imports_follow_the_dependency_table() {
    let mut violations = Vec::new();
    for (module, files) in module_files() {
        let allowed = TABLE
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, a)| *a)
            .unwrap_or(&[]);
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for (target, item) in crate_refs(&text) {
                if target == module || !TABLE.iter().any(|(m, _)| *m == target) {
                    continue;
                }
                if !allowed.contains(&target.as_str()) {
                    violations.push(format!("{}: {module} imports {target}", f.display()));
                }
                if module == "relay" && target == "crypto" {
                    let ok = item
                        .as_deref()
                        .is_some_and(|i| RELAY_CRYPTO_ALLOWED.contains(&i));
                    if !ok {
                        violations.push(format!(
                            "{}: relay may only use crypto::{{{}}}, found crypto::{}",
                            f.display(),
                            RELAY_CRYPTO_ALLOWED.join(", "),
                            item.unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependency rule violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn pure_leaves_do_no_async_or_network_io() {
    for (module, files) in module_files() {
        // The client core is sans-IO besides: no files and no clock of its own either (the
        // caller passes the time), so the engine and the benchmarks run the same code.
        let banned: &[&str] = match module.as_str() {
            "crypto" | "protocol" => &["tokio", "std::net", "TcpStream", "rusqlite", "async fn"],
            "client" => &[
                "tokio",
                "std::net",
                "TcpStream",
                "rusqlite",
                "async fn",
                "std::fs",
                "SystemTime",
                "Instant",
                "crate::clock",
            ],
            _ => continue,
        };
        for f in files {
            let raw = fs::read_to_string(&f).unwrap();
            let text: String = raw
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for &banned in banned {
                assert!(
                    !text.contains(banned),
                    "{} ({module} must stay pure) mentions {banned}",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn the_scanner_catches_violations() {
    let refs = crate_refs(
        "use crate::crypto::envelope::open; // crate::tui\nuse crate::{store, session};",
    );
    assert!(refs.contains(&("crypto".into(), Some("envelope".into()))));
    assert!(refs.contains(&("store".into(), None)));
    assert!(refs.contains(&("session".into(), None)));
    assert!(
        !refs.iter().any(|(m, _)| m == "tui"),
        "comments must be ignored"
    );
}

#[test]
fn no_secret_type_derives_debug_or_serialize() {
    // The secret containers of the crypto core must never be printable or serialisable.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/crypto");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let secret_types = [
        "struct Secret32",
        "struct DhKeyPair",
        "struct SigningKeyPair",
        "struct PqKeyPair",
        "struct UserRootKey",
        "struct DeviceKeys",
        "struct RatchetState",
        "struct Session",
        "struct DevicePrekeys",
        "struct KeyPackage",
        "struct SenderKeyState",
        "struct SenderKeyDistribution",
        "struct ReceivedSenderKey",
    ];
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if secret_types
                .iter()
                .any(|t| line.contains(&format!("pub {t}")) || line.trim_start().starts_with(t))
            {
                let attrs: String = lines[i.saturating_sub(4)..i].join("\n");
                assert!(
                    !attrs.contains("Debug") && !attrs.contains("Serialize"),
                    "{}:{}: secret type derives Debug or Serialize",
                    f.display(),
                    i + 1
                );
                let name = line
                    .split("struct ")
                    .nth(1)
                    .unwrap()
                    .split([' ', '{', '(', '<'])
                    .next()
                    .unwrap();
                assert!(
                    !text.contains(&format!("Debug for {name} ")),
                    "{}: secret type {name} implements Debug",
                    f.display()
                );
            }
        }
    }
}

/// The rows of the table between the markers of `docs/architecture.md`.
fn documented_table() -> Vec<(String, Vec<String>)> {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    let begin = doc
        .find("<!-- dependency-table:begin")
        .expect("begin marker");
    let end = doc
        .find("<!-- dependency-table:end -->")
        .expect("end marker");
    let names = |cell: &str| -> Vec<String> {
        cell.split(',')
            .map(|n| n.trim().trim_matches('`').to_string())
            .filter(|n| !n.is_empty() && n != "-")
            .collect()
    };
    doc[begin..end]
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
            let module = cells.first()?.trim();
            (cells.len() == 2 && module.starts_with('`'))
                .then(|| (module.trim_matches('`').to_string(), names(cells[1])))
        })
        .collect()
}

#[test]
fn the_documented_table_is_the_enforced_one() {
    let want: Vec<(String, Vec<String>)> = TABLE
        .iter()
        .map(|(m, a)| (m.to_string(), a.iter().map(|x| x.to_string()).collect()))
        .collect();
    assert_eq!(
        documented_table(),
        want,
        "docs/architecture.md's dependency table differs from TABLE in tests/architecture.rs"
    );
}

/// Every file of the repository outside build output (`target/`) and git's own data.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if p.is_dir() {
            repository_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn nothing_refers_to_design_notes_outside_the_repository() {
    // Built at run time so that this file does not match itself.
    let outside = [
        format!("..{}shared{}", '/', '/'),
        format!("{}.md", "ARCHITECTURE"),
        format!("{}.md", "PROTOCOL"),
        format!("{}.md", "PRODUCT"),
        format!("{}-NOTES", "REFERENCE"),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    repository_files(root, &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut found = Vec::new();
    for f in files {
        let Ok(bytes) = fs::read(&f) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            for needle in &outside {
                if line.contains(needle.as_str()) {
                    let rel = f.strip_prefix(root).unwrap_or(&f);
                    found.push(format!("{}:{}: {needle}", rel.display(), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the repository must be self-contained (docs/ holds the design); these refer outside it:\n{}",
        found.join("\n")
    );
}

/// The `session` functions visible outside it (`pub`, `pub(crate)`) whose signature hands out
/// or takes a cache: what the UI must never name, since through them it would hold a `Store`
/// without importing `store`.
fn session_items_carrying_a_store() -> Vec<String> {
    let mut out = Vec::new();
    for f in module_files().get("session").into_iter().flatten() {
        let text = fs::read_to_string(f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("fn ") {
            let line_start = rest[..i].rfind('\n').map_or(0, |n| n + 1);
            let visible = rest[line_start..i].contains("pub");
            let after = &rest[i + 3..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if visible && carries_store(after.split('{').next().unwrap_or("")) {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

fn carries_store(signature: &str) -> bool {
    signature
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == "Store" || w == "Db")
}

#[test]
fn the_ui_cannot_reach_a_store_through_the_session() {
    let carriers = session_items_carrying_a_store();
    // The scanner sees them: `unlock` returns the cache, `spawn` takes it.
    assert!(carriers.contains(&"unlock".to_owned()), "{carriers:?}");
    assert!(carriers.contains(&"spawn".to_owned()), "{carriers:?}");
    assert!(!carriers.contains(&"open".to_owned()), "{carriers:?}");
    let files = module_files();
    let mut bad = Vec::new();
    for f in files.get("tui").into_iter().flatten() {
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for c in &carriers {
                if code.contains(&format!("session::{c}(")) {
                    bad.push(format!("{}:{}: session::{c}", f.display(), n + 1));
                }
            }
            if code
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == "Store")
            {
                bad.push(format!("{}:{}: names a Store", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the UI reaches the cache:\n{}",
        bad.join("\n")
    );
}

/// The relay's tamper hook exists only with the `test-hooks` feature, which is off by default:
/// every declaration of the `Tamper` trait, a `tamper` field or its initialiser, and every
/// call of the hook sits under `#[cfg(feature = "test-hooks")]`, so `cargo build --release`
/// compiles none of it.
#[test]
fn the_tamper_hook_is_compiled_only_for_tests() {
    const GATE: &str = "#[cfg(feature = \"test-hooks\")]";
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let features = manifest
        .split("[features]")
        .nth(1)
        .expect("Cargo.toml has a [features] table")
        .split("\n[")
        .next()
        .unwrap();
    assert!(features.contains("test-hooks = []"), "{features}");
    assert!(
        !features
            .lines()
            .any(|l| l.trim_start().starts_with("default") && l.contains("test-hooks")),
        "test-hooks must not be a default feature"
    );
    let mut seen = 0;
    for f in module_files().remove("relay").unwrap() {
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("").trim();
            let declares = code.contains("trait Tamper")
                || code.starts_with("tamper:")
                || code.starts_with("pub tamper:")
                || code.contains("use super::Tamper")
                || code.contains(".tamper");
            if !declares {
                continue;
            }
            seen += 1;
            // The gate is on the item itself or on the `if`/`use` just above, past doc
            // comments and other attributes.
            let gated = lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    let t = l.trim_start();
                    t.starts_with("///") || t.starts_with("#[") || t.is_empty()
                })
                .any(|l| l.trim() == GATE)
                || lines[..i].last().is_some_and(|l| l.trim() == GATE);
            assert!(
                gated,
                "{}:{}: tamper hook outside {GATE}: {line}",
                f.display(),
                i + 1
            );
        }
    }
    assert!(
        seen >= 5,
        "the checks found only {seen} tamper declarations"
    );
}

/// The load generators of `cinder bench` keep their state in memory but must build and open
/// every message through the client core, so their figures are the client's and cannot drift
/// from it; only `bench crypto` measures the primitives directly.
#[test]
fn the_load_generators_drive_the_client_core() {
    let own_protocol = [
        "envelope::seal",
        "envelope::open",
        "SenderKeyState::new",
        "ReceivedSenderKey::from_distribution",
        "handshake::initiate",
        "handshake::respond",
        "SenderKeyMessage::decode",
        "SenderKeyDistribution::decode",
        "KeyPackage::decode",
        "encode_meta",
        "decode_meta",
        "retry_after_ms).clamp",
    ];
    let mut drives_core = 0;
    for (module, files) in module_files() {
        if module != "bench" {
            continue;
        }
        for f in files {
            if f.ends_with("crypto.rs") {
                continue;
            }
            let text = fs::read_to_string(&f).unwrap();
            for p in own_protocol {
                assert!(
                    !text.contains(p),
                    "{} builds its own protocol ({p}): call crate::client instead",
                    f.display()
                );
            }
            if text.contains("crate::client::") {
                drives_core += 1;
            }
        }
    }
    assert!(
        drives_core >= 3,
        "the dm, room and client load generators use crate::client"
    );
}

/// Every command of `SessionHandle` is declared once in `session::commands` and listed once in
/// `COMMANDS`; the few methods written by hand are named here with the reason.
#[test]
fn every_session_command_is_declared_once_in_the_method_table() {
    // Hand-written on purpose: `send_text` is `send_message` with default options, and
    // `shutdown` is answered by the actor itself once the cache is closed.
    const HAND_WRITTEN: &[&str] = &["send_text", "shutdown"];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table: Vec<&str> = cinder::session::COMMANDS.iter().map(|c| c.name).collect();
    let mut unique = table.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), table.len(), "COMMANDS lists a command twice");

    // Each row has exactly one declaration in the macro's table.
    let decls = fs::read_to_string(root.join("src/session/commands.rs")).unwrap();
    for name in &table {
        let n = decls.matches(&format!(" fn {name}(")).count();
        assert_eq!(
            n, 1,
            "{name} is declared {n} times in src/session/commands.rs"
        );
        assert!(!HAND_WRITTEN.contains(name), "{name} is also hand-written");
    }

    // No other async method of the handle, and nothing else builds a command.
    let mut files = Vec::new();
    rust_files(&root.join("src/session"), &mut files);
    files.push(root.join("src/session.rs"));
    for f in files {
        if f.ends_with("commands.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("self.call("),
            "{} builds a command by hand",
            f.display()
        );
        for (i, line) in text.lines().enumerate() {
            // Methods (indented); `session::open` is a free function.
            if let Some(rest) = line.strip_prefix("    pub async fn ") {
                let name = rest.split(['(', '<']).next().unwrap();
                if f.ends_with("session.rs") {
                    assert!(
                        HAND_WRITTEN.contains(&name),
                        "{}:{}: SessionHandle::{name} is not declared in session::commands",
                        f.display(),
                        i + 1
                    );
                }
            }
        }
    }
}
