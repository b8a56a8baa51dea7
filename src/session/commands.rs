//! The session's commands, each declared once.
//!
//! One entry of [`session_commands!`] per command generates its variant of [`Call`] (the
//! arguments plus a one-shot reply channel), its `async` method on [`SessionHandle`] (with the
//! entry's doc comment), its arm of the engine's dispatch ([`Engine::run_call`], which calls the
//! entry's handler, an `Engine` method taking the owned arguments) and its row of [`COMMANDS`],
//! the method table of the scripting daemon to come.
//!
//! An entry starts with where the engine runs it: `actor` commands run inside the actor, so
//! what they queue enters the outbox in the order the commands arrived (sending, retrying);
//! `task` commands run as child tasks, so a slow round trip holds up only itself. An argument
//! written `name: &T as U` is borrowed by the handle method and sent to the engine as `U`
//! (via `ToOwned`); without `as` it is passed by value.
//!
//! Not here, on purpose: `shutdown` (the actor handles it itself: it stops the loop and answers
//! only once the cache is closed, with no error to report) and `send_text` (a shorthand for
//! `send_message` with default options, not a command of its own).

use super::engine::Engine;
use super::{
    ConversationSummary, Inbound, MessageRecord, Policy, Queued, RoomInfo, RoomKind, RoomRequest,
    SendOptions, SessionError, SessionHandle, TimerPair,
};

/// Where the engine runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runs {
    /// In the actor itself, in arrival order (what it does must not wait for the network).
    Actor,
    /// As a child task of the actor.
    Task,
}

/// One row of the method table.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CommandInfo {
    /// The method's name on [`SessionHandle`].
    pub name: &'static str,
    /// Its arguments' names, in order.
    pub args: &'static [&'static str],
    /// The first line of its documentation.
    pub doc: &'static str,
    /// Where the engine runs it.
    pub runs: Runs,
}

/// The argument type a command carries to the engine: `U` of `&T as U`, else the type itself.
macro_rules! owned_ty {
    ($p:ty) => {
        $p
    };
    ($p:ty, $o:ty) => {
        $o
    };
}

/// The value a handle method sends for one argument.
macro_rules! owned_val {
    ($a:ident) => {
        $a
    };
    ($a:ident, $o:ty) => {
        ::std::borrow::ToOwned::to_owned($a)
    };
}

macro_rules! runs {
    (actor) => {
        Runs::Actor
    };
    (task) => {
        Runs::Task
    };
}

macro_rules! session_commands {
    ($(
        #[doc = $summary:literal]
        $(#[doc = $doc:literal])*
        $runs:ident fn $name:ident($($arg:ident: $pty:ty $(as $oty:ty)?),* $(,)?) -> $ret:ty
            => $handler:ident;
    )*) => {
        /// A command on its way to the engine, with the channel for its answer.
        #[allow(non_camel_case_types)]
        pub(crate) enum Call {
            $(
                $name {
                    $($arg: owned_ty!($pty $(, $oty)?),)*
                    reply: tokio::sync::oneshot::Sender<Result<$ret, SessionError>>,
                },
            )*
        }

        impl Call {
            /// Where the engine runs this command.
            pub(crate) fn runs(&self) -> Runs {
                match self {
                    $(Self::$name { .. } => runs!($runs),)*
                }
            }
        }

        /// Every command of [`SessionHandle`], in declaration order.
        pub const COMMANDS: &[CommandInfo] = &[
            $(CommandInfo {
                name: stringify!($name),
                args: &[$(stringify!($arg)),*],
                doc: $summary.trim_ascii(),
                runs: runs!($runs),
            },)*
        ];

        impl SessionHandle {
            $(
                #[doc = $summary]
                $(#[doc = $doc])*
                pub async fn $name(&self, $($arg: $pty),*) -> Result<$ret, SessionError> {
                    $(let $arg = owned_val!($arg $(, $oty)?);)*
                    self.call(|reply| super::Command::Call(Call::$name { $($arg,)* reply }))
                        .await
                }
            )*
        }

        impl Engine {
            /// Runs one command to its end and answers it.
            pub(crate) async fn run_call(&self, call: Call) {
                match call {
                    $(Call::$name { $($arg,)* reply } => {
                        let _ = reply.send(self.$handler($($arg),*).await);
                    })*
                }
            }
        }
    };
}

session_commands! {
    /// Queues a text message with per-message timer options.
    ///
    /// `to` is a user (by name), a room or group DM (by id), or any conversation id; timers
    /// above the network's caps are shortened and [`Queued::notes`] says so.
    ///
    /// # Errors
    /// Cache errors, a bad recipient, an unknown room.
    actor fn send_message(to: &str as String, text: &str as String, opts: SendOptions) -> Queued
        => cmd_send_message;

    /// Puts a failed message of ours back into the outbox (same id and text).
    ///
    /// It is delivered when connected.
    ///
    /// # Errors
    /// [`SessionError::Usage`] if `message_id` is not a failed message of ours.
    actor fn retry(message_id: [u8; 16]) -> () => cmd_retry;

    /// Creates a room (we become its moderator) or a group DM with `members`.
    ///
    /// # Errors
    /// Unknown users, limits, the relay unreachable.
    task fn create_room(
        kind: RoomKind,
        title: &str as String,
        description: &str as String,
        members: &[String] as Vec<String>,
    ) -> RoomInfo => cmd_create_room;

    /// Signs and submits a change of a room (given by id, id prefix or title).
    ///
    /// # Errors
    /// [`SessionError::Usage`] with the reason when the change is not allowed (e.g. only
    /// moderators can remove members); relay refusals; the relay unreachable.
    task fn change_room(room: &str as String, request: RoomRequest) -> RoomInfo
        => cmd_change_room;

    /// Every room and group DM in the cache.
    ///
    /// # Errors
    /// Cache errors.
    task fn rooms() -> Vec<RoomInfo> => cmd_rooms;

    /// One room, by id, unique id prefix, or a title that is unambiguous among our rooms.
    ///
    /// # Errors
    /// [`SessionError::Usage`] for no match or an ambiguous title (listing the candidates).
    task fn room(reference: &str as String) -> RoomInfo => cmd_room;

    /// Sets a conversation's timer defaults.
    ///
    /// For a room, a signed change (moderators); for a direct message, this device's default
    /// for what we send.
    ///
    /// # Errors
    /// Permission and cache errors.
    task fn set_timers(
        conversation: &str as String,
        expire_after: Option<u32>,
        burn_after: Option<u32>,
    ) -> () => cmd_set_timers;

    /// A conversation's timer defaults (expire, burn).
    ///
    /// # Errors
    /// Cache errors.
    task fn timers(conversation: &str as String) -> TimerPair => cmd_timers;

    /// Turns read receipts on or off for the whole network (admins only).
    ///
    /// # Errors
    /// [`SessionError::Relay`] with `PermissionDenied` for non-admins.
    task fn set_read_receipts(on: bool) -> Policy => set_read_receipts;

    /// Records that these received messages were shown to the user.
    ///
    /// It starts their burn timers and sends read receipts where the network allows them.
    ///
    /// # Errors
    /// Cache errors.
    task fn displayed(message_ids: &[[u8; 16]] as Vec<[u8; 16]>) -> () => display;

    /// Delivers everything in the outbox now (connecting if needed).
    ///
    /// # Errors
    /// [`SessionError::Unreachable`] if the relay cannot be reached (the messages stay queued),
    /// or the first permanent failure (that message is marked failed).
    task fn flush() -> () => cmd_flush;

    /// Fetches and processes every waiting mailbox item now (connecting if needed).
    ///
    /// # Errors
    /// [`SessionError::Unreachable`] if the relay cannot be reached.
    task fn sync() -> Vec<Inbound> => cmd_sync;

    /// Creates an invite code (admin accounts only).
    ///
    /// # Errors
    /// [`SessionError::Relay`] with `PermissionDenied` for non-admins.
    task fn create_invite(email: &str as String, admin: bool) -> String => create_invite;

    /// The conversations in the cache, most recent first.
    ///
    /// # Errors
    /// Cache errors.
    task fn conversations() -> Vec<ConversationSummary> => cmd_conversations;

    /// The `limit` newest messages of a conversation, oldest first.
    ///
    /// # Errors
    /// Cache errors.
    task fn history(conversation: &str as String, limit: usize) -> Vec<MessageRecord>
        => cmd_history;

    /// One page of a conversation: the `limit` messages just older than message `before`.
    ///
    /// `None` means the newest; the page is oldest first. Pass the first message of a page to
    /// get the one before it; an empty page means the start of the history.
    ///
    /// # Errors
    /// [`crate::store::StoreError::UnknownMessage`] if `before` is no longer in the cache;
    /// cache errors.
    task fn history_before(
        conversation: &str as String,
        before: Option<[u8; 16]>,
        limit: usize,
    ) -> Vec<MessageRecord> => cmd_history_before;

    /// The `limit` newest messages of any conversation whose text matches the query.
    ///
    /// Newest first; every word must occur, the last one may be a prefix. Input without a
    /// letter or digit finds nothing; no input is a syntax error.
    ///
    /// # Errors
    /// Cache errors.
    task fn search(query: &str as String, limit: usize) -> Vec<MessageRecord> => cmd_search;

    /// [`Self::search`] within one conversation.
    ///
    /// # Errors
    /// Cache errors.
    task fn search_in(conversation: &str as String, query: &str as String, limit: usize)
        -> Vec<MessageRecord> => cmd_search_in;

    /// Marks every message of a conversation that has arrived until now as read.
    ///
    /// Returns how many are still unread (normally 0).
    ///
    /// # Errors
    /// Cache errors.
    task fn mark_read(conversation: &str as String) -> u64 => mark_read_and_display;

    /// Deletes a failed message of ours from this device (it was never delivered).
    ///
    /// # Errors
    /// [`SessionError::Usage`] if `message_id` is not a failed message of ours.
    task fn discard(message_id: [u8; 16]) -> () => discard_failed;

    /// Why a message of ours failed, if it did.
    ///
    /// # Errors
    /// Cache errors.
    task fn failure(message_id: [u8; 16]) -> Option<String> => cmd_failure;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_table_names_each_command_once_with_a_summary() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a command is declared twice");
        for c in COMMANDS {
            assert!(c.doc.ends_with('.'), "{}: summary {:?}", c.name, c.doc);
            assert!(!c.doc.starts_with(' '), "{}", c.name);
        }
        let history = COMMANDS.iter().find(|c| c.name == "history");
        assert_eq!(
            history.map(|c| c.args),
            Some(&["conversation", "limit"][..])
        );
        let send = COMMANDS.iter().find(|c| c.name == "send_message");
        assert_eq!(send.map(|c| c.runs), Some(Runs::Actor));
    }
}
