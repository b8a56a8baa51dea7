//! Display, read receipts and conversation timer defaults.
//!
//! Showing a received message (the UI viewing its conversation, `cinder recv` printing it)
//! is its first display: that starts its burn-on-read countdown and, in 1:1 conversations
//! where the network allows read receipts, queues an end-to-end encrypted read receipt. A
//! message with a burn timer is always reported to its sender and our other devices (the
//! receipt carries the display time), because every device holding it must burn it at the same
//! moment; the sender shows the "read" mark only when the network allows read receipts.

use super::engine::Engine;
use super::{MAX_TIMER_SECS, RoomRequest, SessionError, SessionEvent, rooms};
use crate::crypto::envelope::MessageId;
use crate::crypto::membership::RoomTimers;
use crate::protocol::names::{self, ConversationId};
use crate::store::{MessageKind, MessageTimers, OutboxItem, OutboxKind};

impl Engine {
    /// Marks received messages as displayed now: burn timers start, receipts are queued.
    pub(crate) async fn display(&self, ids: Vec<[u8; 16]>) -> Result<(), SessionError> {
        let receipts_on = self.policy().as_ref().is_some_and(|p| p.read_receipts);
        let clock = self.opts.clock;
        let (started, queued) = self
            .blocking(move |s, keys| {
                let now = clock.now_ms();
                s.transaction(|db| -> Result<_, SessionError> {
                    let mut started: Vec<(String, [u8; 16], MessageTimers)> = Vec::new();
                    let mut per_sender: std::collections::BTreeMap<String, Vec<[u8; 16]>> =
                        std::collections::BTreeMap::new();
                    for id in ids {
                        let Some(m) = db.message(&id)? else {
                            continue;
                        };
                        if m.outgoing || m.kind != MessageKind::Text || m.sender.is_empty() {
                            continue;
                        }
                        let first = m.timers.displayed_at_ms.is_none();
                        if db.mark_displayed(&id, now)?.is_some()
                            && let Some(t) = db.message(&id)?
                        {
                            started.push((t.conversation.clone(), id, t.timers));
                        }
                        if !first {
                            continue;
                        }
                        let dm = !rooms::is_room(&m.conversation);
                        if (dm && receipts_on) || m.timers.burn_after_s.is_some() {
                            per_sender.entry(m.sender.clone()).or_default().push(id);
                        }
                    }
                    let mut queued = 0;
                    for (sender, ids) in per_sender {
                        if sender == keys.username {
                            continue;
                        }
                        db.outbox_push(&OutboxItem {
                            id: 0,
                            message_id: MessageId::random()?.0,
                            conversation: names::dm_conversation(&keys.username, &sender),
                            recipient: sender,
                            text: String::new(),
                            created_at_ms: now,
                            request: None,
                            key_package: None,
                            attempts: 0,
                            last_error: None,
                            kind: OutboxKind::Receipt,
                            timers: MessageTimers::default(),
                            extra: ids.iter().flatten().copied().collect(),
                        })?;
                        db.mark_receipts_sent(&ids)?;
                        queued += 1;
                    }
                    Ok((started, queued))
                })
            })
            .await?;
        for (conversation, message_id, timers) in &started {
            self.emit(SessionEvent::TimersChanged {
                message_id: *message_id,
                conversation: conversation.clone(),
                timers: *timers,
            });
        }
        if !started.is_empty() {
            self.schedule_shred().await;
        }
        // A background engine delivers them in the background (a slow relay must not hold up
        // displaying); a one-shot command delivers them before it answers, since it is about
        // to exit.
        if queued > 0 && self.is_connected() {
            if self.opts.auto_reconnect {
                self.want_flush();
            } else if let Err(e) = self.flush_outbox().await {
                tracing::debug!("receipts queued, not yet sent: {e}");
            }
        }
        Ok(())
    }

    /// Marks a conversation read (the UI shows it) and displays what it shows.
    pub(crate) async fn mark_read_and_display(
        &self,
        conversation: String,
    ) -> Result<u64, SessionError> {
        let c = conversation.clone();
        let clock = self.opts.clock;
        let (left, ids) = self
            .blocking(move |s, _| {
                let db = s.db();
                let left = db.mark_read(&c, clock.now_ms())?;
                // What the conversation view shows: its newest messages.
                Ok((left, db.undisplayed(&c, 500)?))
            })
            .await?;
        if !ids.is_empty() {
            self.display(ids).await?;
        }
        Ok(left)
    }

    /// Sets a conversation's timer defaults (a signed change for rooms).
    pub(crate) async fn set_conversation_timers(
        &self,
        conversation: &str,
        expire_after: Option<u32>,
        burn_after: Option<u32>,
    ) -> Result<(), SessionError> {
        for v in [expire_after, burn_after].into_iter().flatten() {
            if v == 0 || v > MAX_TIMER_SECS {
                return Err(SessionError::Usage(
                    "timers run from one second to one year".into(),
                ));
            }
        }
        if let (Some(e), Some(b)) = (expire_after, burn_after)
            && b > e
        {
            return Err(SessionError::Usage(
                "the burn-on-read timer cannot be longer than the expiration timer".into(),
            ));
        }
        if rooms::is_room(conversation) {
            self.room_request(
                conversation,
                RoomRequest::Timers(RoomTimers {
                    expire_after,
                    burn_after,
                }),
            )
            .await?;
            return Ok(());
        }
        let conversation = if matches!(
            ConversationId::parse(conversation),
            Some(ConversationId::Dm { .. })
        ) {
            conversation.to_owned()
        } else {
            let peer = names::canonical_username(conversation).ok_or_else(|| {
                SessionError::Usage(format!("not a conversation or user: {conversation:?}"))
            })?;
            names::dm_conversation(&self.keys.username, &peer)
        };
        self.blocking(move |s, _| {
            Ok(s.db()
                .set_conversation_timers(&conversation, expire_after, burn_after)?)
        })
        .await
    }
}
