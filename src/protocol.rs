//! Wire types between clients and the relay: framing, typed messages, error codes, names.
//!
//! A frame is one WebSocket binary message: a version byte ([`PROTOCOL_VERSION`]) followed by a
//! protobuf-encoded [`Frame`] (types generated from `docs/cinder.proto` at build time; the
//! protocol is described in `docs/protocol.md`). Frames are size-limited
//! ([`DEFAULT_MAX_FRAME`]); decoding says precisely what was wrong. This module is a pure leaf:
//! no I/O, no tokio, no crypto. Everything the relay routes is opaque ciphertext here.

pub mod framing;
pub mod messages;
pub mod names;
pub mod safe_text;

pub use framing::{FrameError, decode_frame, encode_frame};
pub use messages::*;

/// The protocol version byte that prefixes every frame.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame either side accepts by default (the relay's `--max-frame` can lower it).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// The largest frame limit a relay may be configured with. Clients accept incoming frames up
/// to this (plus framing), so no relay setting can make a stored item undeliverable.
pub const MAX_FRAME_LIMIT: usize = 64 << 20;

/// Stable error codes; numbers never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    BadFrame = 1,
    /// The frame's version byte is not spoken by this relay.
    UnsupportedVersion = 2,
    /// The frame is larger than the relay accepts.
    FrameTooLarge = 3,
    /// The request needs an authenticated device.
    NotAuthenticated = 4,
    /// Login or registration proof failed.
    AuthFailed = 5,
    /// The invite code is unknown, used or expired.
    InvalidInvite = 6,
    /// The username is already registered.
    UsernameTaken = 7,
    /// The username has characters or a length that are not allowed.
    InvalidUsername = 8,
    /// Too many requests from this device; retry after `retry_after_ms`.
    RateLimited = 9,
    /// The relay has no room for another connection.
    TooManyConnections = 10,
    /// No such user.
    UnknownUser = 11,
    /// The account may not do this (e.g. a non-admin creating invites).
    PermissionDenied = 12,
    /// The send did not address exactly the current devices; `stale` lists them.
    DevicesChanged = 13,
    /// Something failed inside the relay.
    Internal = 14,
    /// The request was well-formed but its content is not acceptable.
    BadRequest = 15,
    /// The relay is shutting down; reconnect later.
    ShuttingDown = 16,
    /// The request came in the wrong order (e.g. a second login).
    UnexpectedRequest = 17,
    /// The room does not exist (or was deleted) or the sender is not a member.
    UnknownRoom = 18,
    /// The room's membership changed since the client's view; sync the room log and retry.
    RoomChanged = 19,
    /// The room is at the network's member limit.
    RoomFull = 20,
    /// A message timer exceeds the network's maximum.
    TimerTooLong = 21,
}

impl ErrorCode {
    /// Maps a wire number back to a code.
    pub fn from_u32(v: u32) -> Option<Self> {
        use ErrorCode::*;
        Some(match v {
            1 => BadFrame,
            2 => UnsupportedVersion,
            3 => FrameTooLarge,
            4 => NotAuthenticated,
            5 => AuthFailed,
            6 => InvalidInvite,
            7 => UsernameTaken,
            8 => InvalidUsername,
            9 => RateLimited,
            10 => TooManyConnections,
            11 => UnknownUser,
            12 => PermissionDenied,
            13 => DevicesChanged,
            14 => Internal,
            15 => BadRequest,
            16 => ShuttingDown,
            17 => UnexpectedRequest,
            18 => UnknownRoom,
            19 => RoomChanged,
            20 => RoomFull,
            21 => TimerTooLong,
            _ => return None,
        })
    }

    /// Whether the error is the relay refusing the client (auth, permission, policy) as opposed
    /// to a transport or internal problem; the command line maps these to exit code 5.
    pub fn is_refusal(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            AuthFailed
                | InvalidInvite
                | UsernameTaken
                | InvalidUsername
                | RateLimited
                | UnknownUser
                | PermissionDenied
                | TooManyConnections
                | UnknownRoom
                | RoomFull
                | TimerTooLong
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::BadFrame => "malformed frame",
            Self::UnsupportedVersion => "unsupported protocol version",
            Self::FrameTooLarge => "frame too large",
            Self::NotAuthenticated => "not authenticated",
            Self::AuthFailed => "authentication failed",
            Self::InvalidInvite => "invalid or used invite code",
            Self::UsernameTaken => "username already taken",
            Self::InvalidUsername => "invalid username",
            Self::RateLimited => "rate limited",
            Self::TooManyConnections => "too many connections",
            Self::UnknownUser => "unknown user",
            Self::PermissionDenied => "permission denied",
            Self::DevicesChanged => "recipient devices changed",
            Self::Internal => "internal relay error",
            Self::BadRequest => "bad request",
            Self::ShuttingDown => "relay shutting down",
            Self::UnexpectedRequest => "unexpected request",
            Self::UnknownRoom => "unknown room or not a member",
            Self::RoomChanged => "room membership changed",
            Self::RoomFull => "room is full",
            Self::TimerTooLong => "message timer above the network maximum",
        };
        f.write_str(s)
    }
}

/// The bytes a device signs to log in or register: `"cinder/v1/login" || challenge || relay_id`.
pub fn login_message(challenge: &[u8], relay_id: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(15 + challenge.len() + relay_id.len());
    m.extend_from_slice(b"cinder/v1/login");
    m.extend_from_slice(challenge);
    m.extend_from_slice(relay_id);
    m
}
