//! The typed room and key tables of schema version 5: room states, accepted membership
//! changes, claimed log heads, sender keys (ours, who holds it, and other devices'), and the
//! previous pairwise session with each device.
//!
//! Serialized crypto state (sender key chains, ratchet sessions) is read straight into
//! `Zeroizing` buffers and never has a `Debug` form here.

use rusqlite::{OptionalExtension as _, params};
use zeroize::Zeroizing;

use super::{Db, secret_vec, sql_u64};
use crate::store::Result;

/// A user and one of their devices: a holder of our sender key.
pub type KeyHolder = (String, [u8; 16]);

/// A sender key received from another device: the user whose authenticated pairwise session
/// delivered it, and its serialized (secret) chain state.
///
/// Not `Debug`: it holds a chain key.
pub struct ReceivedSenderKeyRecord {
    /// The sender's username.
    pub sender: String,
    /// The serialized chain state.
    pub state: Zeroizing<Vec<u8>>,
}

impl Db<'_> {
    // --- rooms ---------------------------------------------------------------------------

    /// The serialized verified state of `room`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn room_state(&self, room: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .prepare_cached("SELECT state FROM rooms WHERE room_id = ?1")?
            .query_row([room], |r| r.get(0))
            .optional()?)
    }

    /// Stores the serialized verified state of `room`, replacing the previous one.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_room_state(&self, room: &str, state: &[u8]) -> Result<()> {
        self.0
            .prepare_cached("INSERT OR REPLACE INTO rooms (room_id, state) VALUES (?1, ?2)")?
            .execute(params![room, state])?;
        Ok(())
    }

    /// Every room's serialized state, ordered by room id.
    ///
    /// # Errors
    /// SQL errors.
    pub fn room_states(&self) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT state FROM rooms ORDER BY room_id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The hash of the accepted membership change `seq` of `room`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn room_op_hash(&self, room: &str, seq: u64) -> Result<Option<[u8; 32]>> {
        Ok(self
            .0
            .prepare_cached("SELECT hash FROM room_ops WHERE room_id = ?1 AND seq = ?2")?
            .query_row(params![room, sql_u64(seq)?], |r| r.get(0))
            .optional()?)
    }

    /// Records the hash of the accepted membership change `seq` of `room`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_room_op(&self, room: &str, seq: u64, hash: &[u8; 32]) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO room_ops (room_id, seq, hash) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![room, sql_u64(seq)?, hash])?;
        Ok(())
    }

    /// The accepted membership changes of `room` as `(seq, hash)`, in order.
    ///
    /// # Errors
    /// SQL errors.
    pub fn room_ops(&self, room: &str) -> Result<Vec<(u64, [u8; 32])>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT seq, hash FROM room_ops WHERE room_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([room], |r| Ok((super::get_u64(r, 0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The log head of `room` a member claimed and the relay has not shown us.
    ///
    /// # Errors
    /// SQL errors.
    pub fn room_claimed_head(&self, room: &str) -> Result<Option<u64>> {
        Ok(self
            .0
            .prepare_cached("SELECT head_seq FROM room_claimed_heads WHERE room_id = ?1")?
            .query_row([room], |r| super::get_u64(r, 0))
            .optional()?)
    }

    /// Records a log head of `room` a member claimed, replacing the previous claim.
    ///
    /// # Errors
    /// SQL errors.
    pub fn set_room_claimed_head(&self, room: &str, head_seq: u64) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO room_claimed_heads (room_id, head_seq) VALUES (?1, ?2)",
            )?
            .execute(params![room, sql_u64(head_seq)?])?;
        Ok(())
    }

    /// Forgets the claimed log head of `room` (no error if there was none).
    ///
    /// # Errors
    /// SQL errors.
    pub fn clear_room_claimed_head(&self, room: &str) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM room_claimed_heads WHERE room_id = ?1")?
            .execute([room])?;
        Ok(())
    }

    // --- sender keys ---------------------------------------------------------------------

    /// Our serialized sender key for `room`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn own_sender_key(&self, room: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .0
            .prepare_cached("SELECT state FROM own_sender_keys WHERE room_id = ?1")?
            .query_row([room], |r| secret_vec(r, 0))
            .optional()?)
    }

    /// Stores our serialized sender key for `room`, replacing the previous one.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_own_sender_key(&self, room: &str, state: &[u8]) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO own_sender_keys (room_id, state) VALUES (?1, ?2)",
            )?
            .execute(params![room, state])?;
        Ok(())
    }

    /// The devices that hold our current sender key for `room`, ordered by user and device.
    ///
    /// # Errors
    /// SQL errors.
    pub fn sender_key_holders(&self, room: &str) -> Result<Vec<KeyHolder>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT user, device FROM sender_key_holders WHERE room_id = ?1 ORDER BY user, device",
        )?;
        let rows = stmt.query_map([room], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that `holders` hold our current sender key for `room` (known ones are kept).
    ///
    /// # Errors
    /// SQL errors.
    pub fn add_sender_key_holders<'h>(
        &self,
        room: &str,
        holders: impl IntoIterator<Item = &'h KeyHolder>,
    ) -> Result<()> {
        self.atomically(|| {
            let mut stmt = self.0.prepare_cached(
                "INSERT OR IGNORE INTO sender_key_holders (room_id, user, device)
                 VALUES (?1, ?2, ?3)",
            )?;
            for (user, device) in holders {
                stmt.execute(params![room, user, device])?;
            }
            Ok(())
        })
    }

    /// Forgets who holds our sender key for `room` (a new key is held by nobody yet).
    ///
    /// # Errors
    /// SQL errors.
    pub fn clear_sender_key_holders(&self, room: &str) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM sender_key_holders WHERE room_id = ?1")?
            .execute([room])?;
        Ok(())
    }

    /// The sender key of `device` for `room` from its distribution `distribution`.
    ///
    /// # Errors
    /// SQL errors.
    pub fn received_sender_key(
        &self,
        room: &str,
        device: &[u8; 16],
        distribution: &[u8; 16],
    ) -> Result<Option<ReceivedSenderKeyRecord>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT sender, state FROM received_sender_keys
                 WHERE room_id = ?1 AND device = ?2 AND distribution = ?3",
            )?
            .query_row(params![room, device, distribution], |r| {
                Ok(ReceivedSenderKeyRecord {
                    sender: r.get(0)?,
                    state: secret_vec(r, 1)?,
                })
            })
            .optional()?)
    }

    /// Stores the sender key of `device` (a device of `sender`) for `room` from its
    /// distribution `distribution`, replacing the previous state of that chain.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_received_sender_key(
        &self,
        room: &str,
        device: &[u8; 16],
        distribution: &[u8; 16],
        sender: &str,
        state: &[u8],
    ) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO received_sender_keys
                 (room_id, device, distribution, sender, state) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![room, device, distribution, sender, state])?;
        Ok(())
    }

    /// Forgets every sender key of `room` received from `sender`'s devices; returns how many.
    ///
    /// # Errors
    /// SQL errors.
    pub fn delete_received_sender_keys_of(&self, room: &str, sender: &str) -> Result<usize> {
        Ok(self
            .0
            .prepare_cached("DELETE FROM received_sender_keys WHERE room_id = ?1 AND sender = ?2")?
            .execute([room, sender])?)
    }

    /// Forgets every sender key of `room`: ours, its holders and every received one (we left,
    /// or the room was deleted).
    ///
    /// # Errors
    /// SQL errors.
    pub fn forget_room_keys(&self, room: &str) -> Result<()> {
        self.atomically(|| {
            for sql in [
                "DELETE FROM own_sender_keys WHERE room_id = ?1",
                "DELETE FROM sender_key_holders WHERE room_id = ?1",
                "DELETE FROM received_sender_keys WHERE room_id = ?1",
            ] {
                self.0.prepare_cached(sql)?.execute([room])?;
            }
            Ok(())
        })
    }

    // --- previous sessions ---------------------------------------------------------------

    /// The serialized pairwise session with `user`'s `device` that the current one replaced.
    ///
    /// # Errors
    /// SQL errors.
    pub fn previous_session(
        &self,
        user: &str,
        device: &[u8; 16],
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .0
            .prepare_cached("SELECT state FROM previous_sessions WHERE user = ?1 AND device = ?2")?
            .query_row(params![user, device], |r| secret_vec(r, 0))
            .optional()?)
    }

    /// Keeps `state` as the previous session with `user`'s `device`, replacing an older one.
    ///
    /// # Errors
    /// SQL errors.
    pub fn put_previous_session(&self, user: &str, device: &[u8; 16], state: &[u8]) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO previous_sessions (user, device, state) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![user, device, state])?;
        Ok(())
    }

    /// Forgets the previous session with `user`'s `device` (no error if there was none).
    ///
    /// # Errors
    /// SQL errors.
    pub fn delete_previous_session(&self, user: &str, device: &[u8; 16]) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM previous_sessions WHERE user = ?1 AND device = ?2")?
            .execute(params![user, device])?;
        Ok(())
    }
}
