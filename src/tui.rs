//! The terminal UI (ratatui + crossterm) over the session engine.
//!
//! Data flow: crossterm events -> keymap -> [`action::Action`] -> `App::update` (the only place
//! UI state changes) -> optional effects for the session -> views draw from state. One
//! `tokio::select!` drives the UI (terminal input, session events, a tick) and redraws only when
//! something changed, at a capped frame rate; it never awaits a network reply. The UI never
//! touches crypto, the cache or media directly: everything goes through `SessionHandle`.

pub mod action;
pub mod app;
pub mod complete;
pub mod keymap;
pub mod run;
pub mod theme;
pub mod view;
pub mod wrap;

/// Errors that stop the UI before or while it runs.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// A configuration file (keymap, theme) is invalid.
    #[error("{0}")]
    Config(String),
    /// The terminal could not be set up or written.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}
