//! What the hub keeps of each client's session: its subscriptions and
//! their 5.0 options, the messages queued while it is away or parked while
//! its outbox is full, and its connection, if any.

use std::collections::{BTreeMap, VecDeque};

use rumqttc::QoS;

use super::QueueLimits;
use crate::message::{ClientInfo, Message};
use crate::outbox::Outbox;
use crate::topic;
use crate::wire::SubOptions;

/// A session's live connection.
pub(super) struct Connection {
    pub(super) id: u64,
    pub(super) outbox: Outbox,
    pub(super) will: Option<Message>,
    /// The slow-client timeout sent it a Close (`hub/backlog.rs`).
    pub(super) given_up: bool,
}

/// What the hub keeps of one client's session, connected or not.
pub(super) struct SessionState {
    pub(super) clean: bool,
    /// The device's thing name: who routed messages for that thing reach.
    pub(super) thing: Option<String>,
    pub(super) subscriptions: BTreeMap<String, QoS>,
    /// The MQTT 5.0 options of subscriptions that have any.
    pub(super) options: BTreeMap<String, SubOptions>,
    /// QoS 1/2 messages held while the client is away.
    pub(super) queue: VecDeque<Message>,
    /// Topic and payload bytes in `queue`.
    pub(super) queued_bytes: usize,
    pub(super) connection: Option<Connection>,
    /// The connected client's, or the last one's while it is away.
    pub(super) last_info: ClientInfo,
    /// QoS 1/2 messages for the connected client that its full outbox
    /// could not take yet (see `hub/backlog.rs`), and when they last moved.
    pub(super) parked: VecDeque<Message>,
    pub(super) parked_since: Option<std::time::Instant>,
}

/// Topic and payload bytes: what a queue counts against its byte limit.
pub(super) fn size(m: &Message) -> usize {
    m.topic.len() + m.payload.len()
}

impl SessionState {
    /// A new session, with nothing subscribed or queued.
    pub(super) fn new(info: ClientInfo) -> Self {
        SessionState {
            clean: info.clean_session,
            thing: None,
            subscriptions: BTreeMap::new(),
            options: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            connection: None,
            last_info: info,
            parked: VecDeque::new(),
            parked_since: None,
        }
    }

    /// For a session with 5.0 subscription options: `None` if every
    /// subscription matching `topic` says "no local" and the message is
    /// the client's own; otherwise whether one that matches keeps the
    /// retain flag, and the identifiers of those that match.
    pub(super) fn deliverable(&self, topic: &str, own: bool) -> Option<(bool, Vec<usize>)> {
        let mut deliver = false;
        let mut keep_retain = false;
        let mut ids = Vec::new();
        for filter in self.subscriptions.keys() {
            if !topic::matches(topic::matching_part(filter), topic) {
                continue;
            }
            let options = self.options.get(filter).copied().unwrap_or_default();
            if own && options.no_local {
                continue;
            }
            deliver = true;
            keep_retain |= options.retain_as_published;
            if options.id != 0 {
                ids.push(options.id as usize);
            }
        }
        deliver.then_some((keep_retain, ids))
    }

    /// Queues `m` unless that would pass `limits`; false if refused.
    pub(super) fn enqueue(&mut self, m: Message, limits: QueueLimits) -> bool {
        if self.queue.len() >= limits.messages || self.queued_bytes + size(&m) > limits.bytes {
            return false;
        }
        self.queued_bytes += size(&m);
        self.queue.push_back(m);
        true
    }

    /// Puts messages that were in flight back at the front, whatever the
    /// limits: they were already accepted for this session.
    pub(super) fn requeue_front(&mut self, m: Message) {
        self.queued_bytes += size(&m);
        self.queue.push_front(m);
    }

    pub(super) fn take_queue(&mut self) -> Vec<Message> {
        self.queued_bytes = 0;
        self.queue.drain(..).collect()
    }
}
