//! Cinder: an end-to-end encrypted team messenger for the terminal.
//!
//! One package builds one binary, `cinder`; this library holds everything and `main.rs` only
//! parses arguments and calls one top module.
//!
//! # Module map
//!
//! Bottom up; "may import" is the dependency table that `tests/architecture.rs` enforces and
//! `docs/architecture.md` explains (with the data flow and how to add a command end to end).
//!
//! | module | role | may import |
//! |---|---|---|
//! | [`protocol`] | wire types generated from `docs/cinder.proto`, framing, error codes, names; no I/O | - |
//! | [`crypto`] | keys, certificates, handshake, ratchet, envelope, sender keys, room membership log, chunked files, safety numbers, cache key wrap, hex; no I/O beyond `Read`/`Write`, no tokio | - |
//! | [`clock`] | wall-clock milliseconds for timers, expiry and timestamps; system time, or virtual time driven by tokio's clock in tests | - |
//! | [`config`] | XDG paths, profile directories, the strict TOML config file, the one duration grammar | - |
//! | [`logging`] | tracing setup: records go to a log file, never to the terminal | - |
//! | [`store`] | the local encrypted cache (SQLCipher under a passphrase-wrapped key), synchronous | protocol, crypto |
//! | [`client`] | the client core without I/O: pairwise sessions, room sends and receives, sender-key distribution, receipts, timers, the rate-limit rule, as functions over explicit state that return what to store and what to send | protocol, crypto |
//! | [`session`] | the async session engine: an actor per account that never waits for the network (round trips in child tasks), drives the `client` core over the cache, reached through `SessionHandle` | protocol, crypto, client, store, config, clock, logging |
//! | [`tui`] | the ratatui + crossterm UI over a `SessionHandle` | session, protocol, config, logging |
//! | [`relay`] | the server: accounts, prekeys, mailboxes, rooms, timers, network policy; SQLite | protocol, config, clock, logging, crypto (signatures, membership rules, hex only) |
//! | [`cli`] | the command layer: one function per subcommand, passphrase sources, demo, exit codes | session, protocol, config, logging, store, crypto, relay, tui |
//! | [`bench`] | `cinder bench` scenarios: load generators that print figures, driving the `client` core | everything |
//!
//! Planned modules (`media`, `admin`, `bot`, `rpc`) already have rows in the table. The relay
//! never imports the envelope or cache code, so it structurally cannot see plaintext, and the UI
//! never touches crypto or the store directly.
//!
//! # House rules
//! - Pure leaves, glue on top: `crypto` and `protocol` do no network or disk I/O.
//! - One `thiserror` enum per top module; `anyhow` only in `main.rs` and the command layer.
//! - Secrets zeroize on drop and are never `Debug` or `Serialize`.
//! - The cryptographic design is `docs/crypto.md`, the wire protocol `docs/protocol.md`.

pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod logging;
pub mod protocol;
pub mod relay;
pub mod session;
pub mod store;
pub mod tui;
