//! Cinder: an end-to-end encrypted team messenger for the terminal.
//!
//! One package builds one binary, `cinder`; this library holds everything and `main.rs` only
//! parses arguments and calls one top module.
//!
//! # Module map
//!
//! | module | role | may import |
//! |---|---|---|
//! | [`crypto`] | keys, certificates, handshake, ratchet, sender keys, envelope, chunked file encryption, safety numbers; no I/O beyond `Read`/`Write`, no tokio | - |
//! | [`clock`] | wall-clock milliseconds for timers, expiry and timestamps; system time, or virtual time driven by tokio's clock in tests | - |
//! | [`config`] | XDG paths, profile directories, the strict TOML config file | - |
//! | [`logging`] | tracing setup: records go to a log file, never to the terminal | - |
//! | [`store`] | the local encrypted cache (SQLCipher under a passphrase-wrapped key), synchronous | protocol, crypto |
//! | [`relay`] | the server: accounts, devices, prekeys, store-and-forward mailboxes, rooms (routing by the signed membership log), expiry sweeps and the network policy over WebSocket (TLS optional), SQLite with group commit | protocol, config, clock, crypto (signature and membership-rule checks only) |
//! | [`bench`] | `cinder bench` scenarios: load generators that print figures | everything |
//!
//! Modules that later issues add (`protocol`, `config`, `logging`, `store`, `media`, `session`,
//! `tui`, `relay`, `admin`, `bot`, `rpc`) follow the table in `ARCHITECTURE.md`: the relay never
//! imports the envelope or cache code, so it structurally cannot see plaintext, and the UI never
//! touches crypto or the store directly. `tests/architecture.rs` scans `src/` and fails on an
//! import that breaks these rules.
//!
//! # House rules
//! - Pure leaves, glue on top: `crypto` (and later `protocol`) do no network or disk I/O.
//! - One `thiserror` enum per top module; `anyhow` only in `main.rs` and the command layer.
//! - Secrets zeroize on drop and are never `Debug` or `Serialize`.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod logging;
pub mod protocol;
pub mod relay;
pub mod session;
pub mod store;
pub mod tui;
