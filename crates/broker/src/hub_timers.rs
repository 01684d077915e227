//! MQTT 5.0's clocks in the hub: sessions that end some time after their
//! client left (session expiry interval), and wills published some time
//! after it (will delay interval) unless it comes back first. A 3.1.1
//! persistent session never expires, and its will has no delay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Hub, Message};
use crate::store::Op;

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

    /// A client vanished with a will: published now, or after its delay
    /// (but no later than its session's end).
    pub(super) fn will(
        &mut self,
        client_id: &str,
        will: Message,
        source: Option<Arc<str>>,
        now: Instant,
    ) {
        let info = self.sessions.get(client_id).map(|s| &s.last_info);
        let delay = info.map_or(0, |i| i.will_delay);
        let session_gone = !self.sessions.contains_key(client_id);
        if delay == 0 || session_gone {
            self.publish_will(&will, source.as_ref());
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
        if let Some(w) = self.wills.remove(client_id)
            && clean_start
        {
            self.publish_will(&w.message, w.source.as_ref());
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
