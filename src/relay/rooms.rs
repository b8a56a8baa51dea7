//! Rooms, message timers and the network policy: the request handlers behind `SubmitRoomOp`,
//! `GetRoomLog`, `RoomSend`, `GetPolicy` and `SetPolicy`, and the timer rule every send obeys.
//!
//! The relay keeps its own copy of each room's signed membership log and replays every new op
//! with the same rules the clients run ([`crate::crypto::membership`]), so it can route room
//! messages to exactly the current members and refuse changes that clients would reject
//! anyway. Clients never rely on its answer: they replay the log themselves, which is why the
//! submitting device must be the op's signer and why nothing here is trusted beyond routing.
//!
//! A room message is stored once (body and sender-key message in one `bodies` row) and fanned
//! out as one small mailbox row per member device, in one transaction; live pushes share the
//! same `Arc`, so a send to 1,000 devices costs one copy of the ciphertext, not 1,000.
//!
//! Timers use the relay's clock: an item's delete-by time is the relay's receive time plus the
//! sender's `ttl_ms`, so a sender whose clock runs ahead cannot make the relay keep anything
//! longer than the network maximum.

use std::sync::Arc;

use super::conn::{Authed, delivery_frame_len, refused};
use super::registry::Push;
use super::server::Shared;
use super::store::{Fanout, PolicyChange, RoomItem, RoomSendOutcome, StoredPolicy};
use super::{MAX_POLICY_TIMER_SECS, RelayError};
use crate::crypto::identity::PolicyFields;
use crate::crypto::membership::{MembershipError, SignedOp};
use crate::protocol::frame::Body;
use crate::protocol::{
    DeliveryKind, ErrorCode, GetRoomLog, Policy, RoomOpOk, RoomSend, SendOk, SetPolicy,
    SubmitRoomOp,
};

/// Room log bytes left in a `RoomLog` frame for its own fields (version, id, tags, `more`).
const ROOM_LOG_OVERHEAD: usize = 32;
/// Longest room id accepted (the ids `membership::new_room_id` makes are 37 or 38 bytes).
const MAX_ROOM_ID: usize = 64;

/// The answer for a room that does not exist, was deleted, or does not have the asker as a
/// member; the three are not told apart, so nobody learns which rooms exist.
pub(super) fn unknown_room() -> RelayError {
    refused(
        ErrorCode::UnknownRoom,
        "no such room, or you are not a member of it",
    )
}

/// Maps a membership rule violation to the wire code and one sentence for the client.
pub(super) fn membership_refusal(e: &MembershipError, max_members: usize) -> RelayError {
    use MembershipError as E;
    let code = match e {
        E::NotMember(_) | E::NotModerator(_) | E::NotAllowed(_) => ErrorCode::PermissionDenied,
        E::TooManyMembers(_) => ErrorCode::RoomFull,
        E::OutOfOrder { .. } | E::BrokenChain => ErrorCode::RoomChanged,
        E::Deleted => ErrorCode::UnknownRoom,
        E::Crypto(_) | E::Invalid(_) | E::AlreadyMember(_) | E::WrongRoom => ErrorCode::BadRequest,
    };
    let detail = match e {
        E::TooManyMembers(_) => {
            format!("this network allows at most {max_members} members in a room")
        }
        E::OutOfOrder { .. } | E::BrokenChain => {
            format!("{e}; the room changed, so sync its membership and try again")
        }
        E::Crypto(_) => format!("the change's signature or certificate did not verify ({e})"),
        _ => e.to_string(),
    };
    refused(code, detail)
}

/// The policy as clients see it, signed by the network admin key.
pub(super) fn policy_message(shared: &Shared) -> Policy {
    let p = shared.policy();
    let fields = PolicyFields {
        network_id: &shared.network_id,
        read_receipts: p.read_receipts,
        max_expire_secs: p.max_expire_secs,
        max_burn_secs: p.max_burn_secs,
        max_room_members: shared.max_room_members,
    };
    // Signing fails only for a network id of 4 GiB; clients then keep their previous policy.
    let signature = match fields.sign(&shared.admin) {
        Ok(s) => s.to_vec(),
        Err(e) => {
            tracing::error!("cannot sign the network policy: {e}");
            Vec::new()
        }
    };
    Policy {
        read_receipts: fields.read_receipts,
        max_expire_secs: fields.max_expire_secs,
        max_burn_secs: fields.max_burn_secs,
        max_room_members: fields.max_room_members,
        signature,
    }
}

/// A duration for people: "365 days", "1 day", "12 hours", "90 seconds".
fn human_secs(secs: u64) -> String {
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The relay's delete-by time for an item received at `now_ms`: `now_ms + ttl_ms` when a timer
/// is set, or `delete_by_ms` if that is earlier and non-zero (0 = keep until acknowledged).
///
/// # Errors
/// `TimerTooLong` if `ttl_ms`, or the time from now to `delete_by_ms`, is above the network's
/// longest expiry timer.
pub(super) fn delete_by(
    shared: &Shared,
    ttl_ms: u64,
    delete_by_ms: u64,
    now_ms: u64,
) -> Result<u64, RelayError> {
    delete_by_at(
        shared.policy().max_expire_secs,
        ttl_ms,
        delete_by_ms,
        now_ms,
    )
}

fn delete_by_at(
    max_secs: u64,
    ttl_ms: u64,
    delete_by_ms: u64,
    now_ms: u64,
) -> Result<u64, RelayError> {
    let max_ms = max_secs.saturating_mul(1000);
    if ttl_ms > max_ms || (delete_by_ms > 0 && delete_by_ms.saturating_sub(now_ms) > max_ms) {
        return Err(refused(
            ErrorCode::TimerTooLong,
            format!(
                "messages on this network may be kept for at most {}",
                human_secs(max_secs)
            ),
        ));
    }
    let by_ttl = if ttl_ms > 0 {
        now_ms.saturating_add(ttl_ms)
    } else {
        0
    };
    Ok(match (by_ttl, delete_by_ms) {
        (0, d) => d,
        (t, 0) => t,
        (t, d) => t.min(d),
    })
}

fn check_room_id(room_id: &str) -> Result<(), RelayError> {
    if room_id.is_empty() || room_id.len() > MAX_ROOM_ID {
        return Err(unknown_room());
    }
    Ok(())
}

/// Queues a live push of `item` to every device it was stored for.
fn push_fanout(shared: &Shared, item: &Arc<RoomItem>, fanout: &Fanout) {
    for (device, seq) in &fanout.seqs {
        shared.registry.push(device, || Push::Room {
            item: item.clone(),
            seq: *seq,
            server_ts_ms: fanout.server_ts_ms,
        });
    }
}

/// `SubmitRoomOp`: checks that this connection signed the op, then lets the store apply it.
pub(super) async fn submit_room_op(
    shared: &Shared,
    auth: &Authed,
    r: SubmitRoomOp,
) -> Result<Body, RelayError> {
    let op = SignedOp::decode(&r.op).map_err(|e| {
        refused(
            ErrorCode::BadRequest,
            format!("the membership change could not be decoded ({e})"),
        )
    })?;
    if op.op.room_id != r.room_id {
        return Err(refused(
            ErrorCode::BadRequest,
            "the membership change names another room than the request",
        ));
    }
    // Only the signer may submit: a relay client cannot replay someone else's op, and the
    // relay never fans out a change on behalf of a device that is not present.
    if op.op.actor != auth.username || op.op.actor_cert.device_id.0 != auth.device {
        return Err(refused(
            ErrorCode::PermissionDenied,
            "a membership change must be submitted by the device that signed it",
        ));
    }
    // Every member must be able to fetch the change within the frame limit.
    if delivery_frame_len(auth.username.len(), 0, r.op.len(), r.room_id.len()) > shared.max_frame {
        return Err(refused(
            ErrorCode::FrameTooLarge,
            "the members could not fetch a change this large",
        ));
    }
    let item = Arc::new(RoomItem {
        kind: DeliveryKind::RoomOp,
        room_id: r.room_id,
        sender_user: auth.username.clone(),
        sender_device: auth.device,
        message_id: Vec::new(),
        body: Vec::new(),
        payload: r.op,
        delete_by_ms: 0,
    });
    let max_members = shared.max_room_members as usize;
    let outcome = shared
        .store
        .submit_room_op(item.clone(), op, max_members)
        .await?;
    push_fanout(shared, &item, &outcome.fanout);
    tracing::debug!(by = %auth.username, seq = outcome.seq, "room membership changed");
    Ok(Body::RoomOpOk(RoomOpOk {
        room_id: item.room_id.clone(),
        seq: outcome.seq,
    }))
}

/// `GetRoomLog`: a page of the room's signed ops, for current members only.
pub(super) async fn get_room_log(
    shared: &Shared,
    auth: &Authed,
    g: GetRoomLog,
) -> Result<Body, RelayError> {
    check_room_id(&g.room_id)?;
    let max_bytes = shared.max_frame.saturating_sub(ROOM_LOG_OVERHEAD);
    let log = shared
        .store
        .room_log(auth.username.clone(), g.room_id, g.from_seq, max_bytes)
        .await?
        .ok_or_else(unknown_room)?;
    Ok(Body::RoomLog(shared.outgoing_room_log(&auth.username, log)))
}

/// `RoomSend`: one body and one sender-key message for every other member device.
pub(super) async fn room_send(
    shared: &Shared,
    auth: &Authed,
    s: RoomSend,
) -> Result<Body, RelayError> {
    if s.message_id.len() != 16 {
        return Err(refused(
            ErrorCode::BadRequest,
            "message id must be 16 bytes",
        ));
    }
    check_room_id(&s.room_id)?;
    let now = shared.clock.now_ms();
    let delete_by_ms = delete_by(shared, s.ttl_ms, 0, now)?;
    let frame_len = delivery_frame_len(
        auth.username.len(),
        s.body.len(),
        s.key_message.len(),
        s.room_id.len(),
    );
    if frame_len > shared.max_frame {
        return Err(refused(
            ErrorCode::FrameTooLarge,
            "the members could not fetch a message this large",
        ));
    }
    let item = Arc::new(RoomItem {
        kind: DeliveryKind::RoomMessage,
        room_id: s.room_id,
        sender_user: auth.username.clone(),
        sender_device: auth.device,
        message_id: s.message_id,
        body: s.body,
        payload: s.key_message,
        delete_by_ms,
    });
    let ok = |server_ts_ms, duplicate| {
        Body::SendOk(SendOk {
            message_id: item.message_id.clone(),
            server_ts_ms,
            duplicate,
        })
    };
    match shared.store.room_send(item.clone(), s.head_seq).await? {
        RoomSendOutcome::Stored(fanout) => {
            push_fanout(shared, &item, &fanout);
            Ok(ok(fanout.server_ts_ms, false))
        }
        RoomSendOutcome::Duplicate { server_ts_ms } => Ok(ok(server_ts_ms, true)),
    }
}

/// `GetPolicy`.
pub(super) fn get_policy(shared: &Shared) -> Body {
    Body::Policy(policy_message(shared))
}

fn check_policy_timer(name: &str, v: Option<u64>) -> Result<(), RelayError> {
    match v {
        Some(v) if v == 0 || v > MAX_POLICY_TIMER_SECS => Err(refused(
            ErrorCode::BadRequest,
            format!("{name} must be between 1 second and 365 days"),
        )),
        _ => Ok(()),
    }
}

/// `SetPolicy` (admins only): stores the change, then tells every connected device.
pub(super) async fn set_policy(
    shared: &Shared,
    auth: &Authed,
    s: SetPolicy,
) -> Result<Body, RelayError> {
    if !auth.is_admin {
        return Err(refused(
            ErrorCode::PermissionDenied,
            "only network admins can change the policy",
        ));
    }
    check_policy_timer("the longest expiry timer", s.max_expire_secs)?;
    check_policy_timer("the longest burn-on-read timer", s.max_burn_secs)?;
    let change = PolicyChange {
        read_receipts: s.read_receipts,
        max_expire_secs: s.max_expire_secs,
        max_burn_secs: s.max_burn_secs,
    };
    // One change at a time, so the cached copy ends as the last committed one.
    let _serial = shared.policy_lock.lock().await;
    let stored: StoredPolicy = shared
        .store
        .set_policy(Some(auth.username.clone()), change)
        .await?;
    shared.set_policy(stored);
    let policy = policy_message(shared);
    shared.registry.push_all(|| Push::Policy(policy.clone()));
    tracing::info!(by = %auth.username, "network policy changed");
    Ok(Body::Policy(policy))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_secs(365 * 86_400), "365 days");
        assert_eq!(human_secs(86_400), "1 day");
        assert_eq!(human_secs(7200), "2 hours");
        assert_eq!(human_secs(90), "90 seconds");
        assert_eq!(human_secs(120), "2 minutes");
    }

    #[test]
    fn delete_by_uses_the_relay_clock_and_the_network_maximum() {
        let now = 1_000_000;
        let day = 86_400;
        assert_eq!(delete_by_at(day, 0, 0, now).unwrap(), 0);
        assert_eq!(delete_by_at(day, 1500, 0, now).unwrap(), now + 1500);
        // The earlier of the two wins; a far-future delete_by_ms cannot extend a ttl.
        assert_eq!(
            delete_by_at(day, 2000, now + 3_600_000, now).unwrap(),
            now + 2000
        );
        assert_eq!(delete_by_at(day, 9000, now + 10, now).unwrap(), now + 10);
        assert_eq!(delete_by_at(day, 0, now + 10, now).unwrap(), now + 10);
        let too_long = |r: Result<u64, RelayError>| {
            matches!(
                r,
                Err(RelayError::Refused {
                    code: ErrorCode::TimerTooLong,
                    ..
                })
            )
        };
        assert!(too_long(delete_by_at(day, day * 1000 + 1, 0, now)));
        assert!(too_long(delete_by_at(day, 0, now + day * 1000 + 1, now)));
        assert!(delete_by_at(day, day * 1000, now + day * 1000, now).is_ok());
    }

    #[test]
    fn membership_errors_map_to_the_documented_codes() {
        use MembershipError as E;
        let code = |e: E| match membership_refusal(&e, 3) {
            RelayError::Refused { code, detail } => (code, detail.into_owned()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(E::NotModerator("invite members")).0,
            ErrorCode::PermissionDenied
        );
        assert_eq!(
            code(E::NotMember("x".into())).0,
            ErrorCode::PermissionDenied
        );
        assert_eq!(code(E::NotAllowed("no")).0, ErrorCode::PermissionDenied);
        let (c, d) = code(E::TooManyMembers(3));
        assert_eq!(c, ErrorCode::RoomFull);
        assert!(d.contains("at most 3 members"), "{d}");
        assert_eq!(
            code(E::OutOfOrder {
                expected: 2,
                got: 1
            })
            .0,
            ErrorCode::RoomChanged
        );
        assert_eq!(code(E::BrokenChain).0, ErrorCode::RoomChanged);
        assert_eq!(code(E::Deleted).0, ErrorCode::UnknownRoom);
        assert_eq!(code(E::WrongRoom).0, ErrorCode::BadRequest);
        assert_eq!(code(E::AlreadyMember("x".into())).0, ErrorCode::BadRequest);
        assert_eq!(code(E::Invalid("title")).0, ErrorCode::BadRequest);
        assert_eq!(
            code(E::Crypto(crate::crypto::CryptoError::BadSignature)).0,
            ErrorCode::BadRequest
        );
    }
}
