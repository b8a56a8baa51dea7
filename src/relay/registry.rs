//! Connected devices: who can receive a live push right now, and each device's rate limit.
//!
//! Every authenticated connection attaches its small [`Outbox`] under its device id; a device
//! may hold several connections (a reconnect racing the old socket's close) and each gets the
//! push. Pushes are only a latency optimisation, since every item is already durable in the
//! mailbox, so a full outbox drops the push instead of growing: a slow reader cannot make the
//! relay buffer without bound, it just catches up by fetching. The token bucket lives with the
//! device rather than the connection so opening more sockets does not buy more requests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
// tokio's clock, so that tests on paused time can refill a bucket by advancing it.
use tokio::time::Instant;

use tokio::sync::Notify;

use super::store::{DeviceId, OutgoingMessage, RoomItem};
use crate::protocol::frame::Body;
use crate::protocol::{Delivery, Policy};

/// Pushes one connection may have queued before further ones are dropped.
const OUTBOX_CAP: usize = 64;

/// Something to push to a device.
pub(crate) enum Push {
    /// A new message: `entry` indexes the message's key entries.
    Message {
        /// The stored send (body shared by every recipient's push).
        message: Arc<OutgoingMessage>,
        /// Which key entry is this device's.
        entry: usize,
        /// Mailbox sequence number.
        seq: u64,
        /// The relay's receive time.
        server_ts_ms: u64,
    },
    /// A ready-made item (a `Delivered` notice).
    Item(Box<Delivery>),
    /// A room message or membership change: one stored item shared by every member's push.
    Room {
        /// The stored item.
        item: Arc<RoomItem>,
        /// This device's mailbox sequence number.
        seq: u64,
        /// The relay's receive time.
        server_ts_ms: u64,
    },
    /// The network policy changed.
    Policy(Policy),
    /// An answer the test hook held back ([`crate::relay::Tamper::hold`]), sent as it is.
    Reply(Box<crate::protocol::Frame>),
}

impl Push {
    /// The frame body this push stands for, or `None` if it expired before it could be sent
    /// (`now_ms` at or past its delete-by time): an expired item is never delivered.
    pub(crate) fn into_body(self, now_ms: u64) -> Option<Body> {
        let expired = |delete_by_ms: u64| delete_by_ms > 0 && delete_by_ms <= now_ms;
        let delivery = match self {
            Self::Message {
                message,
                entry,
                seq,
                server_ts_ms,
            } => {
                if expired(message.delete_by_ms) {
                    return None;
                }
                Delivery {
                    seq,
                    kind: crate::protocol::DeliveryKind::Message as i32,
                    sender_user: message.sender_user.clone(),
                    sender_device: message.sender_device.to_vec(),
                    message_id: message.message_id.clone(),
                    body: message.body.clone(),
                    payload: message
                        .entries
                        .get(entry)
                        .map(|e| e.payload.clone())
                        .unwrap_or_default(),
                    server_ts_ms,
                    room_id: String::new(),
                }
            }
            Self::Item(d) => *d,
            Self::Room {
                item,
                seq,
                server_ts_ms,
            } => {
                if expired(item.delete_by_ms) {
                    return None;
                }
                item.delivery(seq, server_ts_ms)
            }
            Self::Policy(p) => return Some(Body::Policy(p)),
            // The connection loop sends these with their own id before asking for a body.
            Self::Reply(f) => return f.body,
        };
        Some(Body::Delivery(delivery))
    }
}

/// One connection's queue of pushes.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Push>>,
    notify: Notify,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Push>> {
        // A poisoned queue only means a panic elsewhere; the data is still a valid queue.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn offer(&self, push: Push) {
        let mut q = self.lock();
        if q.len() < OUTBOX_CAP {
            q.push_back(push);
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Waits until something may have been queued.
    pub(crate) async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Takes everything queued, releasing the queue's memory once it is empty.
    pub(crate) fn drain(&self) -> Vec<Push> {
        let mut q = self.lock();
        let out: Vec<Push> = q.drain(..).collect();
        if q.capacity() > 8 {
            q.shrink_to_fit();
        }
        out
    }
}

/// A token bucket: `rate` requests per second on average, `burst` at once.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token, or says how many milliseconds until one is available. A `rate` of 0
    /// means unlimited.
    pub(crate) fn take(&mut self, rate: u32, burst: u32, now: Instant) -> Result<(), u32> {
        self.take_cost(rate, burst, now, 1.0)
    }

    /// Takes `cost` tokens (a fraction for cheap requests such as acks), or says how many
    /// milliseconds until they are available.
    pub(crate) fn take_cost(
        &mut self,
        rate: u32,
        burst: u32,
        now: Instant,
        cost: f64,
    ) -> Result<(), u32> {
        if rate == 0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            let wait_ms = ((cost - self.tokens) / f64::from(rate) * 1000.0).ceil();
            // The float is small and positive here; the clamp keeps the cast obviously safe.
            Err(wait_ms.clamp(1.0, f64::from(u32::MAX)) as u32)
        }
    }
}

struct DeviceSlot {
    conns: Vec<(u64, Arc<Outbox>)>,
    bucket: TokenBucket,
}

/// All authenticated connections, by device.
pub(crate) struct Registry {
    devices: Mutex<HashMap<DeviceId, DeviceSlot>>,
    rate: u32,
    burst: u32,
}

impl Registry {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            devices: Mutex::new(HashMap::new()),
            rate,
            burst,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeviceId, DeviceSlot>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers connection `conn` of `device` and returns its outbox.
    pub(crate) fn attach(&self, device: DeviceId, conn: u64) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::default());
        let burst = self.burst;
        self.lock()
            .entry(device)
            .or_insert_with(|| DeviceSlot {
                conns: Vec::new(),
                bucket: TokenBucket::new(burst),
            })
            .conns
            .push((conn, outbox.clone()));
        outbox
    }

    /// Removes connection `conn` of `device`.
    pub(crate) fn detach(&self, device: &DeviceId, conn: u64) {
        let mut devices = self.lock();
        if let Some(slot) = devices.get_mut(device) {
            slot.conns.retain(|(id, _)| *id != conn);
            if slot.conns.is_empty() {
                devices.remove(device);
            }
        }
    }

    /// Charges one request to `device`; `Err` carries the milliseconds to wait.
    pub(crate) fn take_token(&self, device: &DeviceId, cost: f64) -> Result<(), u32> {
        let (rate, burst) = (self.rate, self.burst);
        match self.lock().get_mut(device) {
            Some(slot) => slot.bucket.take_cost(rate, burst, Instant::now(), cost),
            None => Ok(()),
        }
    }

    /// Queues `make()` for every connection of `device`, if it is connected.
    pub(crate) fn push(&self, device: &DeviceId, make: impl Fn() -> Push) {
        let devices = self.lock();
        if let Some(slot) = devices.get(device) {
            for (_, outbox) in &slot.conns {
                outbox.offer(make());
            }
        }
    }

    /// Queues `make()` for every connection of every device.
    pub(crate) fn push_all(&self, make: impl Fn() -> Push) {
        let devices = self.lock();
        for slot in devices.values() {
            for (_, outbox) in &slot.conns {
                outbox.offer(make());
            }
        }
    }

    /// Number of devices with at least one connection.
    #[cfg(test)]
    pub(crate) fn connected_devices(&self) -> usize {
        self.lock().len()
    }
}

/// Detaches a connection from the registry when dropped, however the connection ends.
pub(crate) struct Attachment {
    pub(crate) registry: Arc<Registry>,
    pub(crate) device: DeviceId,
    pub(crate) conn: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.registry.detach(&self.device, self.conn);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket {
            tokens: 3.0,
            last: t0,
        };
        for _ in 0..3 {
            b.take(10, 3, t0).unwrap();
        }
        let wait = b.take(10, 3, t0).unwrap_err();
        assert!((90..=100).contains(&wait), "{wait}");
        b.take(10, 3, t0 + Duration::from_millis(100)).unwrap();
        assert!(b.take(10, 3, t0 + Duration::from_millis(100)).is_err());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            b.take(10, 3, later).unwrap();
        }
        assert!(b.take(10, 3, later).is_err());
        // Rate 0 is unlimited.
        assert!(b.take(0, 0, later).is_ok());
    }

    #[test]
    fn pushes_reach_every_connection_and_full_outboxes_drop() {
        let r = Arc::new(Registry::new(1, 1));
        let a = r.attach([1; 16], 1);
        let b = r.attach([1; 16], 2);
        let item = || Push::Item(Box::default());
        for _ in 0..OUTBOX_CAP + 10 {
            r.push(&[1; 16], item);
        }
        assert_eq!(a.drain().len(), OUTBOX_CAP);
        assert_eq!(b.drain().len(), OUTBOX_CAP);
        r.push(&[2; 16], item);
        {
            let _guard = Attachment {
                registry: r.clone(),
                device: [1; 16],
                conn: 1,
            };
        }
        drop(Attachment {
            registry: r.clone(),
            device: [1; 16],
            conn: 2,
        });
        assert_eq!(r.connected_devices(), 0);
    }
}
