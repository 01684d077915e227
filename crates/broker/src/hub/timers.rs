//! MQTT 5.0's clocks in the hub: sessions that end some time after their
//! client left (session expiry interval), and wills published some time
//! after it (will delay interval) unless it comes back first. A 3.1.1
//! persistent session never expires, and its will has no delay.
//!
//! A connected client's will is kept in the store until it is published
//! or discarded: a broker killed while the client was connected (its
//! connection closed without DISCONNECT) publishes it once it is back,
//! after its delay when its persistent session came back too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Hub;
use crate::message::{ClientInfo, Message};
use crate::store::{Op, StoredWill};

/// A session expiry interval meaning "never" (MQTT 3.3.2.11).
pub const NEVER: u32 = u32::MAX;

/// A will waiting for its delay.
#[derive(Debug)]
pub struct DelayedWill {
    due: Instant,
    message: Message,
    /// The device's thing ARN, the source routed mode needs.
    source: Option<Arc<str>>,
}

impl Hub {
    /// Whether anything waits for a clock: `run` ticks only then.
    pub fn has_timers(&self) -> bool {
        !self.expiring.is_empty() || !self.wills.is_empty()
    }

    /// A persistent session's client left: it ends `expiry` seconds later.
    pub(super) fn arm_expiry(&mut self, client_id: &str, expiry: u32, now: Instant) {
        if expiry != NEVER {
            let at = now + Duration::from_secs(u64::from(expiry));
            self.expiring.insert(client_id.to_string(), at);
        }
    }

    /// A client connects: its will (if any) is stored until published or
    /// discarded; a stored one of an earlier connection without a will
    /// goes.
    pub(super) fn keep_will(&mut self, info: &ClientInfo, will: Option<&Message>) {
        if self.store.is_none() {
            return;
        }
        match will {
            Some(message) => {
                self.stored_wills.insert(info.client_id.clone());
                self.record(Op::PutWill(StoredWill {
                    client_id: info.client_id.clone(),
                    message: message.clone(),
                    delay: info.will_delay,
                    expiry: info.session_expiry,
                    source: info.thing_arn.clone(),
                }));
            }
            None => self.will_done(&info.client_id),
        }
    }

    /// A client's will was published or discarded: the store forgets it.
    pub(super) fn will_done(&mut self, client_id: &str) {
        if self.stored_wills.remove(client_id) {
            self.record(Op::DropWill(client_id.to_string()));
        }
    }

    /// Publishes the wills of the clients that were connected when the
    /// broker last stopped (or whose will waited for its delay), as if
    /// they had vanished now; a will whose persistent session came back
    /// waits for its delay. Called once routing is set up; returns how
    /// many there were.
    pub fn publish_restored_wills(&mut self) -> usize {
        let restored = std::mem::take(&mut self.restored_wills);
        let now = Instant::now();
        let n = restored.len();
        for w in restored {
            self.will(&w.client_id, w.message, w.source, w.delay, now);
        }
        if let Some(store) = &mut self.store
            && let Err(e) = store.commit()
        {
            tracing::error!("{e}: the restored wills are published again at the next start");
        }
        n
    }

    /// A client vanished with a will: published now, or after its
    /// `delay` (but no later than its session's end).
    pub(super) fn will(
        &mut self,
        client_id: &str,
        will: Message,
        source: Option<Arc<str>>,
        delay: u32,
        now: Instant,
    ) {
        let info = self.sessions.get(client_id).map(|s| &s.last_info);
        let session_gone = info.is_none();
        if delay == 0 || session_gone {
            self.publish_will(&will, source.as_ref());
            self.will_done(client_id);
            return;
        }
        let expiry = info.map_or(NEVER, |i| i.session_expiry);
        let secs = u64::from(delay.min(expiry));
        self.wills.insert(
            client_id.to_string(),
            DelayedWill {
                due: now + Duration::from_secs(secs),
                message: will,
                source,
            },
        );
    }

    /// A client connects to its session: a will still waiting is dropped
    /// (it came back in time), unless the new connection starts clean,
    /// which ends the old session and so sends it now.
    pub(super) fn reconnected(&mut self, client_id: &str, clean_start: bool) {
        self.expiring.remove(client_id);
        if let Some(w) = self.wills.remove(client_id) {
            if clean_start {
                self.publish_will(&w.message, w.source.as_ref());
            }
            self.will_done(client_id);
        }
    }

    fn publish_will(&mut self, will: &Message, source: Option<&Arc<str>>) {
        if let Some(forward) = self.publish_from(will, source) {
            self.forward(forward, true);
        }
    }

    /// A 5.0 DISCONNECT changed the session expiry interval (0: the
    /// session ends now, with the connection).
    pub(super) fn set_expiry(&mut self, client_id: &str, connection_id: u64, expiry: u32) {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        if session.connection.as_ref().map(|c| c.id) != Some(connection_id) {
            return;
        }
        session.last_info.session_expiry = expiry;
        let was_clean = session.clean;
        session.clean = expiry == 0;
        if expiry == 0 && !was_clean {
            self.record(Op::DropSession(client_id.to_string()));
        } else if expiry != 0 {
            self.record(Op::PutSession(client_id.to_string(), expiry));
        }
    }

    /// Publishes the wills whose delay passed and ends the sessions whose
    /// expiry passed (their waiting wills go first).
    pub fn sweep(&mut self, now: Instant) {
        let due: Vec<String> = self
            .wills
            .iter()
            .filter(|(_, w)| w.due <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for client_id in due {
            if let Some(w) = self.wills.remove(&client_id) {
                self.publish_will(&w.message, w.source.as_ref());
                self.will_done(&client_id);
            }
        }
        let expired: Vec<String> = self
            .expiring
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for client_id in expired {
            self.expiring.remove(&client_id);
            if let Some(w) = self.wills.remove(&client_id) {
                self.publish_will(&w.message, w.source.as_ref());
                self.will_done(&client_id);
            }
            let Some(session) = self.sessions.get(&client_id) else {
                continue;
            };
            if session.connection.is_some() {
                continue;
            }
            for f in session.subscriptions.keys() {
                self.index.remove(f, &client_id);
            }
            self.sessions.remove(&client_id);
            self.record(Op::DropSession(client_id.clone()));
            tracing::info!(client_id, "session expired");
        }
    }
}
