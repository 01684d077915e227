//! The broker's own fan-out in local mode: sessions, subscriptions and
//! retained messages, owned by one task ([`run`]) that connections talk to
//! over a channel. [`Hub`] is the logic with no I/O besides `try_send` to
//! connection outboxes and the operations it records in its [`Store`], so
//! it is tested without sockets. [`run`] takes requests in batches, commits
//! the batch's store operations once, and only then answers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};

use verdant_group::routes::{RouteIndex, Table};

use crate::index::Index;
use crate::message::{ClientInfo, ClientSummary, Connected, Counters, Message, Notification};
use crate::outbox::{Outbox, TrySendError};
use crate::request::ToLink;
use crate::store::{Loaded, Op, Store};
use crate::topic;
use crate::wire::SubOptions;

/// How much a session may hold while its client is away.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
    /// How long a connected client may take none of its parked messages
    /// before it is disconnected (`slow_client_timeout_secs`).
    pub stuck_after: Option<std::time::Duration>,
    /// QoS 0 messages a full outbox cannot take are parked like QoS 1/2
    /// ones instead of dropped (`qos0_when_full = "hold-publishers"`).
    pub hold_qos0: bool,
}

/// Who decides where a device's message goes.
enum Routing {
    /// Every matching subscription gets it.
    Local,
    /// The router's table does: device targets are delivered here, the
    /// rest goes to the router over `link`.
    Routed {
        /// The router's copy; `None` until the link first brings it, and
        /// meanwhile everything goes to the router.
        table: Option<Arc<Table>>,
        link: mpsc::UnboundedSender<ToLink>,
        /// Per route of `table`, in table order, since the last report.
        counts: Vec<routed::RouteCount>,
        /// Messages no route allowed, per source, since the last report.
        no_route: HashMap<Arc<str>, u64>,
        last_report: std::time::Instant,
        /// Counts not reported yet.
        unreported: bool,
        /// Someone traces: report every message routed here.
        tracing: bool,
        scratch: Vec<RouteIndex>,
    },
}

/// The most subscribers a publish's scratch list keeps room for between
/// publishes (24 bytes each).
const MATCHED_KEPT: usize = 1024;

/// How often routed mode reports its counts to the router.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The broker's sessions and their routing.
pub struct Hub {
    routing: Routing,
    /// Boxed: the table grows in powers of two, its empty slots stay small.
    sessions: crate::index::HashMap<String, Box<SessionState>>,
    /// Every session's subscriptions by filter, kept with `sessions`.
    index: Index,
    retained: BTreeMap<String, Message>,
    next_connection: u64,
    limits: QueueLimits,
    /// Where persistent sessions and retained messages are kept; `None`
    /// keeps them in memory only.
    store: Option<Store>,
    /// How many subscriptions persistent sessions hold, when there is a
    /// store. Zero means no message can need the disk, so connections
    /// acknowledge QoS 1/2 publishes without waiting for the hub. Updated
    /// before any SUBACK of a batch is sent, so a subscription counts
    /// before its subscriber knows it exists.
    durable_subscriptions: Arc<AtomicUsize>,
    pub counters: Counters,
    /// Persistent sessions whose clients left, and when they end.
    expiring: HashMap<String, std::time::Instant>,
    /// Wills waiting for their delay, by client id.
    wills: HashMap<String, timers::DelayedWill>,
    /// Clients whose will the store holds (`hub/timers.rs`), so that a
    /// connection without one drops only a row that exists.
    stored_wills: std::collections::HashSet<String>,
    /// Wills the store held at start, published once routing is set up.
    restored_wills: Vec<crate::store::StoredWill>,
    /// Clients with parked messages, and the acknowledgements held while
    /// any are (`hub/backlog.rs`); connections read the flag.
    parked: std::collections::HashSet<String>,
    /// Acknowledgements waiting for these clients' parked messages.
    held: Vec<(oneshot::Sender<bool>, Vec<String>)>,
    /// The clients the request being handled parked messages for.
    just_parked: Vec<String>,
    /// The connected client the last fan-out handed a message to, whose
    /// connection passes a publisher's wake on.
    pub(super) last_delivered: Option<Arc<str>>,
    /// Messages handed on in place since the hub's task last looked.
    pub(super) in_place: u64,
    /// A delivery since the hub's task (or an in-place publisher) last
    /// looked filled a client's outbox halfway: time to let the
    /// connections run before handing over more (`hub/run.rs`).
    pub(super) crowded: bool,
    /// The subscribers a fan-out found, kept for the next one's use.
    matched: Vec<(Arc<str>, QoS)>,
    congested_flag: Arc<std::sync::atomic::AtomicBool>,
}

/// The member of a shared subscription that takes the next message: in
/// turn, preferring members that are connected (and, in routed mode, among
/// the devices `to`).
fn pick_member(
    share: &mut crate::index::Share,
    sessions: &crate::index::HashMap<String, Box<SessionState>>,
    to: Option<&[String]>,
) -> Option<(Arc<str>, QoS)> {
    let n = share.members.len();
    let eligible = |c: &str| {
        sessions
            .get(c)
            .is_some_and(|s| to.is_none_or(|to| s.thing.as_ref().is_some_and(|t| to.contains(t))))
    };
    let connected = |c: &str| sessions.get(c).is_some_and(|s| s.connection.is_some());
    let order = (0..n).map(|i| (share.next + i) % n);
    let choice = order
        .clone()
        .find(|&i| eligible(&share.members[i].0) && connected(&share.members[i].0))
        .or_else(|| order.clone().find(|&i| eligible(&share.members[i].0)))?;
    share.next = (choice + 1) % n;
    Some(share.members[choice].clone())
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

impl Hub {
    pub fn new(limits: QueueLimits) -> Self {
        Hub {
            routing: Routing::Local,
            sessions: crate::index::HashMap::default(),
            index: Index::default(),
            retained: BTreeMap::new(),
            next_connection: 1,
            limits,
            store: None,
            durable_subscriptions: Arc::new(AtomicUsize::new(0)),
            counters: Counters::default(),
            expiring: HashMap::new(),
            wills: HashMap::new(),
            stored_wills: std::collections::HashSet::new(),
            restored_wills: Vec::new(),
            parked: std::collections::HashSet::new(),
            held: Vec::new(),
            just_parked: Vec::new(),
            last_delivered: None,
            in_place: 0,
            crowded: false,
            matched: Vec::new(),
            congested_flag: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The flag connections read: while set, their QoS 1/2 publishes wait
    /// for the hub's word before they are acknowledged.
    pub fn congestion(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.congested_flag.clone()
    }

    /// The count connections read (see the field).
    pub fn durable_subscriptions(&self) -> Arc<AtomicUsize> {
        self.durable_subscriptions.clone()
    }

    fn count_durable_subscriptions(&self) {
        let n = if self.store.is_some() {
            self.sessions
                .values()
                .filter(|s| !s.clean)
                .map(|s| s.subscriptions.len())
                .sum()
        } else {
            0
        };
        self.durable_subscriptions.store(n, Ordering::Release);
    }

    /// A hub that keeps its persistent state in `store`, starting from
    /// what the store held.
    pub fn with_store(limits: QueueLimits, store: Store, loaded: Loaded) -> Self {
        let mut hub = Hub::new(limits);
        for s in loaded.sessions {
            let info = ClientInfo {
                client_id: s.client_id.clone(),
                thing_name: None,
                thing_arn: None,
                certificate_subject: None,
                certificate_id: None,
                peer_address: "-".into(),
                listener: "-",
                protocol_version: 4,
                clean_session: false,
                clean_start: false,
                session_expiry: s.expiry,
                will_delay: 0,
                connected_at: SystemTime::UNIX_EPOCH,
            };
            hub.arm_expiry(&s.client_id, s.expiry, std::time::Instant::now());
            let client: Arc<str> = s.client_id.as_str().into();
            for (f, q, _) in &s.subscriptions {
                hub.index.insert(f, &client, *q);
            }
            let options = s
                .subscriptions
                .iter()
                .filter(|(_, _, o)| *o != SubOptions::default())
                .map(|(f, _, o)| (f.clone(), *o))
                .collect();
            hub.sessions.insert(
                s.client_id.clone(),
                Box::new(SessionState {
                    clean: false,
                    // Client ids are thing names unless that rule is relaxed.
                    thing: Some(s.client_id.clone()),
                    subscriptions: s
                        .subscriptions
                        .into_iter()
                        .map(|(f, q, _)| (f, q))
                        .collect(),
                    options,
                    queued_bytes: s.queue.iter().map(size).sum(),
                    queue: s.queue.into(),
                    connection: None,
                    last_info: info,
                    parked: VecDeque::new(),
                    parked_since: None,
                }),
            );
        }
        for m in loaded.retained {
            hub.retained.insert(m.topic.clone(), m);
        }
        hub.stored_wills = loaded.wills.iter().map(|w| w.client_id.clone()).collect();
        hub.restored_wills = loaded.wills;
        hub.store = Some(store);
        hub.count_durable_subscriptions();
        hub
    }

    fn record(&mut self, op: Op) {
        if let Some(store) = &mut self.store {
            store.record(op);
        }
    }

    /// Attaches a connection to its session, taking over any live one.
    pub fn connect(
        &mut self,
        info: ClientInfo,
        will: Option<Message>,
        outbox: Outbox,
    ) -> Connected {
        let id = self.next_connection;
        self.next_connection += 1;
        let client_id = info.client_id.clone();
        let clean = info.clean_session;
        if let Some(old) = self
            .sessions
            .get_mut(&client_id)
            .and_then(|s| s.connection.take())
        {
            let _ = old.outbox.try_send(Notification::Close(
                0x8E,
                "session taken over by a new connection".into(),
            ));
        }
        self.reconnected(&client_id, info.clean_start);
        self.keep_will(&info, will.as_ref());
        let has_will = will.is_some();
        let old_persistent = self.sessions.get(&client_id).map(|s| !s.clean);
        let present = !info.clean_start && old_persistent.is_some();
        let ended_persistent = self.record_connect(&client_id, &info, present, old_persistent);
        if !present {
            self.start_afresh(&client_id, &info);
        }
        let session = self.sessions.get_mut(&client_id).expect("inserted above");
        session.clean = clean;
        session.thing.clone_from(&info.thing_name);
        session.last_info = info;
        session.connection = Some(Connection {
            id,
            outbox,
            will,
            given_up: false,
        });
        let queued = session.take_queue();
        // Handed to a connection: after a crash, sent again as such (on
        // disk before the first of them goes).
        let handed = !clean && !queued.is_empty();
        if handed {
            self.record(Op::Sent(client_id));
        }
        Connected {
            connection_id: id,
            session_present: present,
            queued,
            wait_for_commit: ended_persistent || has_will || handed,
        }
    }

    /// Records what a connection does to the stored sessions, which are
    /// exactly those that outlive their connection: true if it ended a
    /// persistent one (`old_persistent`: the session it finds, if any).
    fn record_connect(
        &mut self,
        client_id: &String,
        info: &ClientInfo,
        present: bool,
        old_persistent: Option<bool>,
    ) -> bool {
        let clean = info.clean_session;
        let ended_persistent = old_persistent == Some(true) && (!present || clean);
        if ended_persistent {
            self.record(Op::DropSession(client_id.clone()));
        }
        let resumed_persistent = present && old_persistent == Some(true);
        if !clean {
            // Also when resumed: the expiry interval may have changed.
            self.record(Op::PutSession(client_id.clone(), info.session_expiry));
        }
        if !clean
            && !resumed_persistent
            && present
            && let Some(old) = self.sessions.get(client_id)
        {
            let subscriptions: Vec<Op> = old
                .subscriptions
                .iter()
                .map(|(f, q)| {
                    let o = old.options.get(f).copied().unwrap_or_default();
                    Op::Subscribe(client_id.clone(), f.clone(), *q, o)
                })
                .collect();
            for op in subscriptions {
                self.record(op);
            }
        }
        ended_persistent
    }

    /// A new session for a connection that does not take up the old one;
    /// a clean start forgets the old session's subscriptions.
    fn start_afresh(&mut self, client_id: &String, info: &ClientInfo) {
        if let Some(old) = self.sessions.get(client_id) {
            for f in old.subscriptions.keys() {
                self.index.remove(f, client_id);
            }
        }
        self.sessions
            .insert(client_id.clone(), Box::new(SessionState::new(info.clone())));
    }

    /// Detaches a connection. Unless it ended with DISCONNECT its will is
    /// published; `unacked` messages go back to the front of a persistent
    /// session's queue.
    pub fn disconnect(
        &mut self,
        client_id: &str,
        connection_id: u64,
        graceful: bool,
        unacked: Vec<Message>,
    ) {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        if session.connection.as_ref().map(|c| c.id) != Some(connection_id) {
            // Taken over: what the old connection had in flight belongs to
            // the session, so the new connection gets it.
            if !session.clean {
                for m in unacked {
                    Self::deliver(
                        session,
                        m,
                        self.limits,
                        &mut self.counters,
                        &mut self.crowded,
                    );
                }
                if !session.parked.is_empty() {
                    self.parked_for(client_id);
                }
            }
            return;
        }
        let connection = session.connection.take().expect("checked above");
        self.unpark_on_disconnect(client_id);
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        let now = std::time::Instant::now();
        let source = session.last_info.thing_arn.clone();
        let will_delay = session.last_info.will_delay;
        if session.clean {
            for f in session.subscriptions.keys() {
                self.index.remove(f, client_id);
            }
            self.sessions.remove(client_id);
        } else {
            for m in unacked.into_iter().rev() {
                session.requeue_front(m);
            }
            let expiry = session.last_info.session_expiry;
            self.arm_expiry(client_id, expiry, now);
        }
        match connection.will {
            Some(will) if !graceful => self.will(client_id, will, source, will_delay, now),
            Some(_) => self.will_done(client_id),
            None => {}
        }
    }

    /// Stores a retained message and fans `message` out to every matching
    /// subscription: once per client, at the highest QoS it subscribed
    /// with, never above the message's.
    pub fn publish(&mut self, message: &Message) {
        self.counters.published += 1;
        if message.retain {
            if message.payload.is_empty() {
                if self.retained.remove(&message.topic).is_some() {
                    self.record(Op::Unretain(message.topic.clone()));
                }
            } else {
                self.retained.insert(message.topic.clone(), message.clone());
                self.record(Op::Retain(message.clone()));
            }
        }
        self.fan_out(message, None);
    }

    /// Delivers `message` to every session (of the devices `to`, when
    /// given) with a matching subscription: once per client, at the
    /// highest QoS it subscribed with, never above the message's.
    fn fan_out(&mut self, message: &Message, to: Option<&[String]>) {
        let mut stored = Vec::new();
        let mut parked = Vec::new();
        let mut matched = std::mem::take(&mut self.matched);
        self.index.matching(&message.topic, &mut matched);
        for share in self.index.matching_shares(&message.topic) {
            matched.extend(pick_member(share, &self.sessions, to));
        }
        for (client_id, granted) in matched.drain(..) {
            let Some(session) = self.sessions.get_mut(&*client_id) else {
                continue;
            };
            if let Some(to) = to
                && !session.thing.as_ref().is_some_and(|t| to.contains(t))
            {
                continue;
            }
            // 5.0 options: no local, retain as published, identifiers.
            let mut retain = false;
            let mut props = message.props.clone();
            if !session.options.is_empty() {
                let own = message.from.as_deref() == Some(&*client_id);
                let Some((keep_retain, ids)) = session.deliverable(&message.topic, own) else {
                    continue;
                };
                retain = keep_retain && message.retain;
                if !ids.is_empty() {
                    let mut with_ids = props.as_deref().cloned().unwrap_or_default();
                    with_ids.subscription_ids = ids;
                    props = Some(Arc::new(with_ids));
                }
            }
            let mut out = Message {
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                qos: min_qos(message.qos, granted),
                retain,
                stored: None,
                props,
                from: None,
                dup: false,
            };
            let durable = !session.clean && out.qos != QoS::AtMostOnce;
            if durable && let Some(store) = &mut self.store {
                out.stored = Some(store.next_id());
            }
            // The store's copy only for a message it keeps.
            let for_store = out.stored.is_some().then(|| out.clone());
            let kept = Self::deliver(
                session,
                out,
                self.limits,
                &mut self.counters,
                &mut self.crowded,
            );
            if !session.parked.is_empty() {
                parked.push(client_id.clone());
            } else if kept && session.connection.is_some() {
                self.last_delivered = Some(client_id.clone());
            }
            if kept
                && let Some(mut out) = for_store
                && let Some(id) = out.stored
            {
                // Handed to a connection: after a crash, sent again as such.
                out.dup = session.connection.is_some();
                stored.push(Op::Enqueue(id, client_id.to_string(), out));
            }
        }
        // Kept for the next publish unless a large fan-out grew it.
        if matched.capacity() <= MATCHED_KEPT {
            self.matched = matched;
        }
        for client_id in parked {
            self.parked_for(&client_id);
            self.just_parked.push(client_id.to_string());
        }
        for op in stored {
            self.record(op);
        }
    }

    /// Subscribers acknowledged these stored messages.
    pub fn acked(&mut self, ids: &[u64]) {
        for id in ids {
            self.record(Op::Ack(*id));
        }
    }

    /// Hands `out` to the session's connection or queue; false if it was
    /// dropped (counted). Sets `crowded` when it filled the outbox halfway.
    fn deliver(
        session: &mut SessionState,
        out: Message,
        limits: QueueLimits,
        counters: &mut Counters,
        crowded: &mut bool,
    ) -> bool {
        match &session.connection {
            // Behind what is parked, in order.
            Some(_)
                if !session.parked.is_empty()
                    && (out.qos != QoS::AtMostOnce || limits.hold_qos0) =>
            {
                session.park(out);
                counters.delivered += 1;
                true
            }
            Some(c) => match c.outbox.try_send(Notification::Deliver(out)) {
                Ok(halfway) => {
                    counters.delivered += 1;
                    *crowded |= halfway;
                    true
                }
                Err(TrySendError::Full(Notification::Deliver(m)))
                    if m.qos == QoS::AtMostOnce && !limits.hold_qos0 =>
                {
                    counters.dropped_qos0 += 1;
                    false
                }
                Err(TrySendError::Full(Notification::Deliver(m))) => {
                    session.park(m);
                    counters.delivered += 1;
                    true
                }
                // The connection just ended and the hub has not heard yet:
                // a persistent session keeps the message.
                Err(TrySendError::Closed(Notification::Deliver(m)))
                    if m.qos != QoS::AtMostOnce && !session.clean =>
                {
                    if session.enqueue(m, limits) {
                        true
                    } else {
                        counters.dropped_queue_full += 1;
                        false
                    }
                }
                Err(_) => {
                    counters.dropped_queue_full += 1;
                    false
                }
            },
            None if out.qos != QoS::AtMostOnce => {
                if session.enqueue(out, limits) {
                    true
                } else {
                    counters.dropped_queue_full += 1;
                    false
                }
            }
            None => false,
        }
    }

    /// Adds subscriptions with the default options (3.1.1's).
    pub fn subscribe(&mut self, client_id: &str, filters: &[(String, QoS)]) -> Vec<Message> {
        let filters: Vec<_> = filters
            .iter()
            .map(|(f, q)| (f.clone(), *q, SubOptions::default()))
            .collect();
        self.subscribe_with(client_id, &filters)
    }

    /// Adds subscriptions (already validated); returns the retained
    /// messages they match, to send after the SUBACK (as their retain
    /// handling option says).
    pub fn subscribe_with(
        &mut self,
        client_id: &str,
        filters: &[(String, QoS, SubOptions)],
    ) -> Vec<Message> {
        let routed = self.is_routed();
        let Some(session) = self.sessions.get_mut(client_id) else {
            return Vec::new();
        };
        let persistent = !session.clean;
        let mut retained = Vec::new();
        let mut ops = Vec::new();
        for (filter, qos, options) in filters {
            let new = session.subscriptions.insert(filter.clone(), *qos).is_none();
            if *options == SubOptions::default() {
                session.options.remove(filter);
            } else {
                session.options.insert(filter.clone(), *options);
            }
            self.index.insert(filter, &Arc::from(client_id), *qos);
            if persistent {
                ops.push(Op::Subscribe(
                    client_id.to_string(),
                    filter.clone(),
                    *qos,
                    *options,
                ));
            }
            // Shared subscriptions get no retained messages (MQTT 4.8.2).
            let send_retained = topic::shared(filter).is_none()
                && match options.retain_handling {
                    0 => true,
                    1 => new,
                    _ => false,
                };
            if !send_retained {
                continue;
            }
            for m in self.retained.values() {
                if !routed && topic::matches(filter, &m.topic) {
                    let mut props = m.props.clone();
                    if options.id != 0 {
                        let mut with_id = props.as_deref().cloned().unwrap_or_default();
                        with_id.subscription_ids = vec![options.id as usize];
                        props = Some(Arc::new(with_id));
                    }
                    retained.push(Message {
                        qos: min_qos(m.qos, *qos),
                        props,
                        ..m.clone()
                    });
                }
            }
        }
        for op in ops {
            self.record(op);
        }
        retained
    }

    pub fn unsubscribe(&mut self, client_id: &str, filters: &[String]) {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        let persistent = !session.clean;
        for f in filters {
            if session.subscriptions.remove(f).is_none() {
                continue;
            }
            session.options.remove(f);
            self.index.remove(f, client_id);
            if persistent {
                let op = Op::Unsubscribe(client_id.to_string(), f.clone());
                if let Some(store) = &mut self.store {
                    store.record(op);
                }
            }
        }
    }

    /// How many subscriptions a client has.
    pub fn subscription_count(&self, client_id: &str) -> usize {
        self.sessions
            .get(client_id)
            .map_or(0, |s| s.subscriptions.len())
    }

    pub fn clients(&self) -> Vec<ClientSummary> {
        let mut out: Vec<ClientSummary> = self
            .sessions
            .values()
            .map(|s| ClientSummary {
                info: s.last_info.clone(),
                connected: s.connection.is_some(),
                subscriptions: s
                    .subscriptions
                    .iter()
                    .map(|(f, q)| (f.clone(), *q))
                    .collect(),
                queued: s.queue.len(),
            })
            .collect();
        out.sort_by(|a, b| a.info.client_id.cmp(&b.info.client_id));
        out
    }

    /// Closes the connections of devices that are not `members`, or came
    /// with a certificate that is not allowed any more.
    pub fn keep_only(&mut self, members: &crate::identity::Members) {
        for (client_id, s) in &self.sessions {
            if let (Some(c), Some(thing)) = (&s.connection, &s.thing)
                && (!members.things.contains(thing)
                    || s.last_info
                        .certificate_id
                        .as_ref()
                        .is_some_and(|id| !members.certificates.contains(id)))
            {
                tracing::info!(
                    client_id,
                    thing,
                    "no longer a device of the group, or its certificate is revoked: disconnected"
                );
                let _ = c.outbox.try_send(Notification::Close(
                    0x87,
                    "no longer a device of the group, or its certificate is revoked".into(),
                ));
            }
        }
    }

    /// Closes a client's connection; false if it has none.
    pub fn kick(&mut self, client_id: &str, reason: &str) -> bool {
        match self
            .sessions
            .get(client_id)
            .and_then(|s| s.connection.as_ref())
        {
            Some(c) => c
                .outbox
                .try_send(Notification::Close(0x98, reason.into()))
                .is_ok(),
            None => false,
        }
    }
}

mod backlog;
mod routed;
mod run;
mod session;
#[cfg(test)]
mod tests;
mod timers;

use run::Reply;
pub use run::{InPlace, SharedHub, run};
use session::{Connection, SessionState, size};
pub use timers::NEVER;
