//! Backpressure for subscribers that fall behind. A QoS 1/2 message for a
//! connected client whose outbox is full waits here ("parked") instead of
//! being dropped, and the publish that parked it is acknowledged only once
//! that client took what was parked for it. Its publisher then runs out of
//! its inflight window and slows to what the subscriber takes: an overload
//! costs memory bounded by the publishers' windows and loses no
//! acknowledged message; publishers of messages nobody backlogged wait
//! only for the hub's answer. While anything is parked, connections ask
//! the hub before acknowledging a QoS 1/2 publish (the congestion flag).

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{Hub, Reply, SessionState};
use crate::message::{Message, Notification};

/// Why a client is closed by `slow_client_timeout_secs`.
const SLOW_CLIENT: &str = "took no message while its publishers waited (slow_client_timeout_secs)";

impl Hub {
    /// Whether a message waits for a subscriber's outbox.
    pub fn congested(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Holds a publisher's acknowledgement until `clients` took what its
    /// message parked for them.
    pub fn hold(&mut self, reply: oneshot::Sender<bool>, clients: Vec<String>) {
        self.held.push((reply, clients));
        self.release();
    }

    /// The answer to a publish just handled: held if it parked messages.
    pub(super) fn reply_to_publish(&mut self, reply: oneshot::Sender<bool>) -> Reply {
        let parked = std::mem::take(&mut self.just_parked);
        if parked.is_empty() {
            Reply::Publish(reply)
        } else {
            Reply::Held(reply, parked)
        }
    }

    /// Sends the held acknowledgements whose clients have nothing parked.
    fn release(&mut self) {
        let parked = &self.parked;
        let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, clients)| clients.iter().all(|c| !parked.contains(c)));
        self.held = held;
        for (reply, _) in free {
            let _ = reply.send(true);
        }
    }

    /// Notes that `client_id`'s session parked a message.
    pub(super) fn parked_for(&mut self, client_id: &str) {
        if self.parked.insert(client_id.to_string()) {
            self.congested_flag.store(true, Ordering::Release);
        }
    }

    /// Moves parked messages into outboxes that have room, oldest first;
    /// once none is left, the held acknowledgements go out.
    pub fn unpark(&mut self) {
        let clients: Vec<String> = self.parked.iter().cloned().collect();
        for client_id in clients {
            let done = self
                .sessions
                .get_mut(&client_id)
                .is_none_or(|s| s.flush_parked());
            if done {
                self.parked.remove(&client_id);
            }
        }
        if self.parked.is_empty() {
            self.congested_flag.store(false, Ordering::Release);
        }
        self.give_up_on_stuck();
        self.release();
    }

    /// Disconnects clients that took none of their parked messages for
    /// `stuck_after`: their publishers are held back meanwhile.
    fn give_up_on_stuck(&mut self) {
        let Some(limit) = self.limits.stuck_after else {
            return;
        };
        let now = std::time::Instant::now();
        for client_id in &self.parked {
            let Some(session) = self.sessions.get_mut(client_id) else {
                continue;
            };
            let stuck = session
                .parked_since
                .is_some_and(|since| now.duration_since(since) >= limit);
            let parked = session.parked.len();
            if let (true, Some(connection)) = (stuck, &mut session.connection)
                && !connection.given_up
            {
                tracing::warn!(
                    client_id,
                    parked,
                    "took no message for {limit:?} while its publishers waited; disconnecting"
                );
                connection.given_up = true;
                // A Close is never refused for room, and is taken before
                // the messages, also by a connection that is backlogged
                // or whose writes wait on a client that reads nothing.
                let _ = connection
                    .outbox
                    .try_send(Notification::Close(0x97, SLOW_CLIENT.into()));
            }
        }
    }

    /// A session's connection ended: what it had parked goes to its queue
    /// if it persists (a clean session ends with it).
    pub(super) fn unpark_on_disconnect(&mut self, client_id: &str) {
        self.parked.remove(client_id);
        if let Some(session) = self.sessions.get_mut(client_id) {
            let parked = std::mem::take(&mut session.parked);
            session.parked_since = None;
            if !session.clean {
                for m in parked {
                    let _ = session.enqueue(m, self.limits);
                }
            }
        }
        self.unpark();
    }
}

impl SessionState {
    /// Sends what is parked while the outbox takes it; true when nothing
    /// is left (or the connection is gone).
    fn flush_parked(&mut self) -> bool {
        let Some(connection) = &self.connection else {
            return true;
        };
        let mut moved = false;
        while let Some(m) = self.parked.pop_front() {
            match connection.outbox.try_send(Notification::Deliver(m)) {
                Ok(_) => moved = true,
                Err(crate::outbox::TrySendError::Full(Notification::Deliver(m))) => {
                    self.parked.push_front(m);
                    if moved {
                        self.parked_since = Some(std::time::Instant::now());
                    }
                    return false;
                }
                // The connection ended: what is parked stays for the
                // disconnect, which gives it to a persistent session.
                Err(crate::outbox::TrySendError::Closed(Notification::Deliver(m))) => {
                    self.parked.push_front(m);
                    return true;
                }
                Err(_) => return true,
            }
        }
        self.parked_since = None;
        true
    }

    /// Parks `m` behind what already waits.
    pub(super) fn park(&mut self, m: Message) {
        if self.parked.is_empty() {
            self.parked_since = Some(std::time::Instant::now());
        }
        self.parked.push_back(m);
    }
}
