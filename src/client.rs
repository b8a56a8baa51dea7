//! The client core: the messaging protocol without I/O.
//!
//! Pairwise sessions, room sends and receives, sender-key distribution, receipts and timers as
//! functions over explicit state that return what to store and what to send, in the sans-IO
//! shape of quinn-proto and rustls. Nothing here touches the network, the disk or a clock: the
//! caller passes the state it holds (sessions, prekeys, a room's verified membership, sender
//! keys) and the time, and gets back the new state to persist and the requests to send.
//!
//! Two drivers use it: the session engine (`session`), which keeps the state in the encrypted
//! cache and the requests on its connection, and the load generators of `cinder bench`, which
//! keep the state in memory. Both therefore run exactly the same protocol code.
//!
//! - [`pairwise`]: starting sessions, sealing a message for many devices, decrypting a
//!   delivery (stored session, the session a peer replaced, or a new handshake), opening and
//!   classifying its envelope.
//! - [`room`]: sealing a room message under our sender key, the sender-key reconciliation
//!   rule, distributions, and opening a room message.
//! - [`receipts`]: what a read receipt does to one of our messages.
//! - [`timers`]: the timers of a received or sent message (the clock-skew rule), the
//!   network's caps, and timer text.
//! - [`retry`]: how long to wait when the relay says "rate limited", for every driver.

pub mod pairwise;
pub mod receipts;
pub mod retry;
pub mod room;
pub mod timers;

use crate::crypto::CryptoError;

/// Why the client core refused an input.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A cryptographic check failed (a tampered, replayed or undecodable message).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The input verifies but is not acceptable here (one sentence, for the user or the log).
    #[error("{0}")]
    Rejected(String),
}

impl ClientError {
    pub(crate) fn rejected(s: impl Into<String>) -> Self {
        Self::Rejected(s.into())
    }
}
