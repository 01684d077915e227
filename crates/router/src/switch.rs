//! The routing logic: one task owns the table, the endpoints' links and
//! every counter. Links send it [`Event`]s; it answers each link through
//! that link's [`Down`] channel. No I/O besides those channels, so it is
//! tested without sockets.
//!
//! Delivery guarantee: a QoS 1 message from an endpoint is acknowledged to
//! it only when every endpoint it was routed to has acknowledged its copy
//! (the broker once its sessions have it, the cloud bridge once it is in
//! the durable queue). Copies not yet acknowledged stay here and are sent
//! again when their endpoint links again, so a daemon restarting loses
//! nothing; the router restarting loses nothing either, because the
//! sender still holds what it was not acknowledged and sends it again.
//! A target that cannot take its copy loses it, counted and logged
//! (`undelivered.rs`), and does not hold the publisher's acknowledgement.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use verdant_group::routes::{Kind, RouteIndex, ShadowSide, Table, shadow_topic};

use crate::jobs::CoreJobs;
use crate::undelivered::{Reason, Undelivered, UndeliveredView};

pub use crate::endpoint::Endpoint;

/// A message between the router and an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's sequence number on its link.
    pub id: u64,
    pub source: String,
    pub topic: String,
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
    pub retain: bool,
    /// Down: who on the endpoint gets it (thing names, function ARNs).
    pub targets: Vec<String>,
    /// Up from the broker: the table version its device targets used.
    pub table_version: u64,
    /// A full queue refuses it rather than dropping older messages.
    pub all_or_error: bool,
}

/// One routed message as `Trace` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    pub time: std::time::SystemTime,
    pub source: String,
    pub topic: String,
    pub targets: Vec<String>,
    pub size: usize,
    /// The payload's first [`PREVIEW`] bytes.
    pub preview: Bytes,
    pub qos: u8,
    /// `routed`, `no route` or `refused`.
    pub outcome: String,
    /// `broker` or `router`.
    pub by: String,
}

/// Payload bytes a trace shows.
pub const PREVIEW: usize = 64;

impl TraceRecord {
    pub fn new(m: &Message, targets: Vec<String>, outcome: &str, by: &str) -> TraceRecord {
        TraceRecord {
            time: std::time::SystemTime::now(),
            source: m.source.clone(),
            topic: m.topic.clone(),
            targets,
            size: m.payload.len(),
            preview: m.payload.slice(..m.payload.len().min(PREVIEW)),
            qos: m.qos,
            outcome: outcome.into(),
            by: by.into(),
        }
    }
}

/// Where the core's own traffic with the cloud goes (`Switch::core_only`).
enum CoreOnly {
    /// Not such traffic: the routes say.
    Routed,
    Only(Endpoint),
    Nowhere,
}

/// Tracers listen here.
pub type TraceSender = tokio::sync::broadcast::Sender<Arc<TraceRecord>>;

/// What the switch sends down a link.
#[derive(Debug)]
pub enum Down {
    Table(Arc<Table>),
    /// To the broker: send traces of what you route, or stop.
    Tracing(bool),
    /// To the shadow service and the ota-agent: whether the cloud
    /// connection is up.
    Cloud(bool),
    Messages(Vec<Message>),
    Acks {
        ids: Vec<u64>,
        refused: Vec<u64>,
    },
    Credit(u32),
}

/// One link's identity: its endpoint and which connection of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId {
    pub endpoint: Endpoint,
    pub generation: u64,
}

/// What links tell the switch.
#[derive(Debug)]
pub enum Event {
    Linked {
        link: LinkId,
        down: mpsc::UnboundedSender<Down>,
        credit: u32,
    },
    Unlinked(LinkId),
    Up(LinkId, Vec<Message>),
    Acks {
        link: LinkId,
        ids: Vec<u64>,
        refused: Vec<u64>,
    },
    Credit(LinkId, u32),
    /// Counts the broker reports for the routes it delivers itself
    /// (route id, messages, bytes) and for its messages no route allowed.
    Delivered {
        routes: Vec<(String, u64, u64)>,
        no_route: Vec<(String, u64)>,
    },
    /// A tracer came or went: the broker is told whether to trace.
    TracersChanged,
    /// A new table to route by from now on.
    Swap(Table),
    /// What the broker routed while tracing was on.
    Traces(Vec<TraceRecord>),
    /// The cloud bridge connected (true) or lost its connection.
    CloudState(bool),
    Routes(oneshot::Sender<RoutesView>),
}

/// `ListRoutes`' answer.
#[derive(Debug, Clone, Default)]
pub struct RoutesView {
    pub version: u64,
    /// Each route with its messages and bytes.
    pub routes: Vec<(verdant_group::routes::Route, u64, u64)>,
    pub no_route: Vec<(String, u64)>,
    pub links: Vec<&'static str>,
    /// Messages dropped because an endpoint's queue was full.
    pub overflow: Vec<(&'static str, u64)>,
    /// Copies targets could not take, per endpoint, targets and reason.
    pub undelivered: Vec<UndeliveredView>,
}

struct Link {
    id: LinkId,
    down: mpsc::UnboundedSender<Down>,
    /// Messages the endpoint has room for.
    credit: u32,
}

/// What the switch keeps per endpoint.
#[derive(Default)]
struct Queue {
    link: Option<Link>,
    /// Waiting for the link, or for credit.
    held: VecDeque<Message>,
    /// Sent QoS 1 copies not yet acknowledged, by the switch's id.
    unacked: BTreeMap<u64, Message>,
    overflow: u64,
}

/// A QoS 1 message acknowledged to its sender once every copy is.
struct Pending {
    origin: LinkId,
    origin_id: u64,
    remaining: usize,
    /// Its publisher wants a refusal rather than a partial delivery.
    all_or_error: bool,
}

/// What one route has carried, for `ListRoutes`.
#[derive(Debug, Clone, Copy, Default)]
struct RouteCount {
    /// Messages routed by it (copies the broker delivered itself included).
    messages: u64,
    /// Their payload bytes.
    bytes: u64,
}

/// An acknowledgement to send to a publisher's link at the end of the
/// current event.
struct Ack {
    /// The link the message came up on.
    link: LinkId,
    /// The message's id on that link.
    id: u64,
    /// The message was refused rather than taken.
    refused: bool,
}

/// One link's acknowledgements of an event, sent as one `Down::Acks`.
struct LinkAcks {
    link: LinkId,
    /// Ids of the messages taken.
    ids: Vec<u64>,
    /// Ids of the messages refused.
    refused: Vec<u64>,
}

/// The routing state.
pub struct Switch {
    table: Arc<Table>,
    /// The table before the last swap, for broker messages routed by it.
    previous: Option<Arc<Table>>,
    /// Per route, in table order; kept across a swap for routes that stay.
    counts: Vec<RouteCount>,
    /// Messages no route took, per source.
    no_route: BTreeMap<String, u64>,
    queues: HashMap<Endpoint, Queue>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Messages held per endpoint at most, sent but unacknowledged ones
    /// included.
    held_limit: usize,
    /// Acknowledgements to send at the end of the current event, per link.
    acks: Vec<Ack>,
    scratch: Vec<RouteIndex>,
    trace: TraceSender,
    /// Whether the broker was told to trace.
    tracing: bool,
    /// Whether the cloud connection is up (the shadow service is told).
    cloud_up: bool,
    /// Copies targets could not take.
    undelivered: Undelivered,
    /// The core's own jobs topics, between the ota-agent and the cloud.
    jobs: Option<CoreJobs>,
}

impl Switch {
    pub fn new(table: Table, held_limit: usize, trace: TraceSender) -> Switch {
        let counts = vec![RouteCount::default(); table.routes().len()];
        Switch {
            table: Arc::new(table),
            previous: None,
            counts,
            no_route: BTreeMap::new(),
            queues: Endpoint::ALL
                .iter()
                .map(|e| (*e, Queue::default()))
                .collect(),
            pending: HashMap::new(),
            next_id: 1,
            held_limit,
            acks: Vec::new(),
            scratch: Vec::new(),
            trace,
            tracing: false,
            cloud_up: false,
            undelivered: Undelivered::default(),
            jobs: None,
        }
    }

    /// Carries the jobs topics of the core `thing` between the ota-agent
    /// and the cloud, outside the routes.
    pub fn with_core_jobs(mut self, thing: &str) -> Switch {
        self.jobs = Some(CoreJobs::new(thing));
        self
    }

    /// Handles one event, then sends what it produced.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Linked { link, down, credit } => self.linked(link, down, credit),
            Event::Unlinked(link) => self.unlinked(link),
            Event::Up(link, messages) => {
                for m in &messages {
                    self.route(link, m);
                }
                self.flush_all();
            }
            Event::Acks { link, ids, refused } => {
                self.acked(link, &ids, false);
                self.acked(link, &refused, true);
            }
            Event::Credit(link, n) => {
                if let Some(q) = self.queues.get_mut(&link.endpoint)
                    && let Some(l) = &mut q.link
                    && l.id == link
                {
                    l.credit = l.credit.saturating_add(n);
                }
                self.flush(link.endpoint);
            }
            Event::Delivered { routes, no_route } => {
                for (source, n) in no_route {
                    *self.no_route.entry(source).or_default() += n;
                }
                for (id, messages, bytes) in routes {
                    if let Some(i) = self.table.routes().iter().position(|r| r.id == id) {
                        self.counts[i].messages += messages;
                        self.counts[i].bytes += bytes;
                    }
                }
            }
            Event::Swap(table) => self.swap(table),
            Event::TracersChanged => {
                let want = self.trace.receiver_count() > 0;
                if want != self.tracing {
                    self.tracing = want;
                    if let Some(l) = &self.queues[&Endpoint::Broker].link {
                        let _ = l.down.send(Down::Tracing(want));
                    }
                }
            }
            Event::Traces(records) => {
                for r in records {
                    let _ = self.trace.send(Arc::new(r));
                }
            }
            Event::Routes(reply) => {
                let _ = reply.send(self.view());
            }
            Event::CloudState(up) => {
                if up != self.cloud_up {
                    self.cloud_up = up;
                    for e in Endpoint::CLOUD_WATCHERS {
                        if let Some(l) = &self.queues[&e].link {
                            let _ = l.down.send(Down::Cloud(up));
                        }
                    }
                }
            }
        }
        self.send_acks();
    }

    fn linked(&mut self, link: LinkId, down: mpsc::UnboundedSender<Down>, credit: u32) {
        if link.endpoint == Endpoint::Broker {
            let _ = down.send(Down::Table(self.table.clone()));
            // A broker that traced for a previous router stops, or starts.
            let _ = down.send(Down::Tracing(self.tracing));
        }
        if link.endpoint == Endpoint::Shadow {
            // Which things it syncs, and whether it can now.
            let _ = down.send(Down::Table(self.table.clone()));
        }
        if Endpoint::CLOUD_WATCHERS.contains(&link.endpoint) {
            let _ = down.send(Down::Cloud(self.cloud_up));
        }
        let q = self.queues.get_mut(&link.endpoint).expect("every endpoint");
        // Copies the previous connection did not acknowledge go first.
        let unacked = std::mem::take(&mut q.unacked);
        for m in unacked.into_values().rev() {
            q.held.push_front(m);
        }
        q.link = Some(Link {
            id: link,
            down,
            credit,
        });
        tracing::info!(endpoint = link.endpoint.name(), "endpoint linked");
        self.flush(link.endpoint);
    }

    fn unlinked(&mut self, link: LinkId) {
        let q = self.queues.get_mut(&link.endpoint).expect("every endpoint");
        if q.link.as_ref().map(|l| l.id) == Some(link) {
            q.link = None;
            tracing::warn!(
                endpoint = link.endpoint.name(),
                held = q.held.len() + q.unacked.len(),
                "endpoint unlinked; its messages are held until it links again"
            );
        }
    }

    /// Where a message of the core's own traffic with the cloud goes
    /// (jobs.rs), outside the routes: `Only(e)` to `e` only, `Nowhere`;
    /// `Routed` when it is not such a message. The
    /// discovery daemon sends the core's connectivity to the cloud, and
    /// nothing else anywhere; the secrets daemon asks the cloud for
    /// values, and nothing else, and only the cloud answers it; the
    /// ota-agent's jobs requests go to the cloud.
    fn core_only(&self, from: Endpoint, topic: &str) -> CoreOnly {
        let jobs = self.jobs.as_ref();
        let is = |f: fn(&CoreJobs, &str) -> bool| jobs.is_some_and(|j| f(j, topic));
        let only_if = |yes: bool, to| {
            if yes {
                CoreOnly::Only(to)
            } else {
                CoreOnly::Nowhere
            }
        };
        match from {
            Endpoint::Discovery => only_if(is(CoreJobs::is_connectivity_topic), Endpoint::Cloud),
            Endpoint::Secrets => only_if(is(CoreJobs::is_secrets_request), Endpoint::Cloud),
            Endpoint::Cloud if is(CoreJobs::is_secrets_answer) => CoreOnly::Only(Endpoint::Secrets),
            // No one else speaks on the secrets topics (a device cannot
            // answer for the cloud; the cloud's echo of a request goes
            // nowhere), whatever the routes say.
            _ if is(CoreJobs::is_secrets_request) || is(CoreJobs::is_secrets_answer) => {
                CoreOnly::Nowhere
            }
            Endpoint::Ota if is(CoreJobs::is_jobs_topic) => CoreOnly::Only(Endpoint::Cloud),
            _ => CoreOnly::Routed,
        }
    }

    /// The targets of `m` from `from`, per endpoint, in table order, each
    /// once (counted per route); `None` if no route allows it (counted).
    fn targets(&mut self, from: LinkId, m: &Message) -> Option<BTreeMap<Endpoint, Vec<String>>> {
        let table = match &self.previous {
            Some(p) if from.endpoint == Endpoint::Broker && m.table_version == p.version() => {
                p.clone()
            }
            _ => self.table.clone(),
        };
        let mut by_endpoint: BTreeMap<Endpoint, Vec<String>> = BTreeMap::new();
        let mut any = false;
        // The core's own traffic with the cloud, outside the routes.
        match self.core_only(from.endpoint, &m.topic) {
            CoreOnly::Routed => {}
            CoreOnly::Nowhere => return None,
            CoreOnly::Only(endpoint) => {
                let target = if endpoint == Endpoint::Cloud {
                    "cloud"
                } else {
                    endpoint.name()
                };
                by_endpoint.insert(endpoint, vec![target.into()]);
                return Some(by_endpoint);
            }
        }
        // The cloud's answers to the core's own jobs go to the ota-agent
        // (and wherever routes send them).
        if from.endpoint == Endpoint::Cloud
            && self
                .jobs
                .as_ref()
                .is_some_and(|j| j.is_jobs_topic(&m.topic))
        {
            by_endpoint.insert(Endpoint::Ota, vec!["ota-agent".into()]);
            any = true;
        }
        // Shadow sync travels outside the routes (router.proto, Table).
        match (from.endpoint, shadow_topic(&m.topic)) {
            (Endpoint::Shadow, Some((thing, ShadowSide::Request))) if table.is_synced(thing) => {
                by_endpoint.insert(Endpoint::Cloud, vec!["cloud".into()]);
                return Some(by_endpoint);
            }
            (Endpoint::Cloud, Some((thing, ShadowSide::Response))) if table.is_synced(thing) => {
                by_endpoint.insert(Endpoint::Shadow, vec!["GGShadowService".into()]);
                any = true;
            }
            _ => {}
        }
        let mut matched = std::mem::take(&mut self.scratch);
        table.matching(&m.source, &m.topic, &mut matched);
        for i in &matched {
            let route = table.route(*i);
            let (endpoint, target) = match Kind::of(&route.target) {
                Kind::Thing => (Endpoint::Broker, thing_name(&route.target).to_string()),
                // Connectors run in the lambda-runner, as functions do.
                Kind::Function | Kind::Connector => (Endpoint::Lambda, route.target.clone()),
                Kind::Shadow => (Endpoint::Shadow, route.target.clone()),
                Kind::Cloud => (Endpoint::Cloud, route.target.clone()),
            };
            any = true;
            // The broker delivered device targets itself, unless it had
            // no table yet (version 0).
            if from.endpoint == Endpoint::Broker
                && endpoint == Endpoint::Broker
                && m.table_version != 0
            {
                continue;
            }
            if Arc::ptr_eq(&table, &self.table) {
                self.counts[i.0].messages += 1;
                self.counts[i.0].bytes += m.payload.len() as u64;
            }
            let targets = by_endpoint.entry(endpoint).or_default();
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        self.scratch = matched;
        if !any {
            *self.no_route.entry(m.source.clone()).or_default() += 1;
            tracing::debug!(
                source = %m.source,
                topic = %verdant_common::telemetry::bounded(&m.topic),
                "no route: message discarded"
            );
            return None;
        }
        Some(by_endpoint)
    }

    /// Routes one message from `from`.
    fn route(&mut self, from: LinkId, m: &Message) {
        let by_endpoint = self.targets(from, m);
        let any = by_endpoint.is_some();
        let table_version = self.table.version();
        let id = self.next_id;
        self.next_id += 1;
        let mut remaining = 0;
        let tracing = self.trace.receiver_count() > 0;
        let mut traced_targets = Vec::new();
        let mut refused = false;
        for (endpoint, targets) in by_endpoint.unwrap_or_default() {
            if tracing {
                traced_targets.extend(targets.iter().cloned());
            }
            let copy = Message {
                id,
                targets,
                table_version,
                ..m.clone()
            };
            match self.hold(endpoint, copy) {
                None => remaining += usize::from(m.qos > 0),
                Some(copy) => {
                    refused = true;
                    if m.qos > 0 && m.all_or_error {
                        break;
                    }
                    self.undelivered.count(
                        endpoint.name(),
                        &copy.targets,
                        Reason::QueueFull,
                        &m.topic,
                        std::time::Instant::now(),
                    );
                }
            }
        }
        if tracing {
            let outcome = if refused {
                "refused"
            } else if any {
                "routed"
            } else {
                "no route"
            };
            let mut record = TraceRecord::new(m, traced_targets, outcome, "router");
            // Secret values are never shown, whoever sent them.
            if from.endpoint == Endpoint::Secrets
                || self.jobs.as_ref().is_some_and(|j| {
                    j.is_secrets_request(&m.topic) || j.is_secrets_answer(&m.topic)
                })
            {
                record.preview = Bytes::new();
            }
            let _ = self.trace.send(Arc::new(record));
        }
        if refused && m.qos > 0 && m.all_or_error {
            // The publisher is refused: it asked for all or an error.
            self.acks.push(Ack {
                link: from,
                id: m.id,
                refused: true,
            });
            return;
        }
        if m.qos > 0 {
            if remaining == 0 {
                self.acks.push(Ack {
                    link: from,
                    id: m.id,
                    refused: false,
                });
            } else {
                self.pending.insert(
                    id,
                    Pending {
                        origin: from,
                        origin_id: m.id,
                        remaining,
                        all_or_error: m.all_or_error,
                    },
                );
            }
        }
    }

    /// Queues a copy for `endpoint`; gives it back if its queue is full
    /// (counted).
    fn hold(&mut self, endpoint: Endpoint, m: Message) -> Option<Message> {
        let q = self.queues.get_mut(&endpoint).expect("every endpoint");
        if q.held.len() + q.unacked.len() >= self.held_limit {
            q.overflow += 1;
            return Some(m);
        }
        q.held.push_back(m);
        None
    }

    fn flush_all(&mut self) {
        for e in Endpoint::ALL {
            self.flush(e);
        }
    }

    /// Sends what `endpoint` has credit for.
    fn flush(&mut self, endpoint: Endpoint) {
        let q = self.queues.get_mut(&endpoint).expect("every endpoint");
        let Some(link) = &mut q.link else {
            return;
        };
        let n = q.held.len().min(link.credit as usize);
        if n == 0 {
            return;
        }
        let batch: Vec<Message> = q.held.drain(..n).collect();
        link.credit -= n as u32;
        for m in &batch {
            if m.qos > 0 {
                q.unacked.insert(m.id, m.clone());
            }
        }
        if link.down.send(Down::Messages(batch)).is_err() {
            // The link is going; its Unlinked event puts these back.
        }
    }

    fn acked(&mut self, link: LinkId, ids: &[u64], refused: bool) {
        let q = self.queues.get_mut(&link.endpoint).expect("every endpoint");
        for id in ids {
            let Some(copy) = q.unacked.remove(id) else {
                continue;
            };
            if refused {
                self.undelivered.count(
                    link.endpoint.name(),
                    &copy.targets,
                    Reason::Refused,
                    &copy.topic,
                    std::time::Instant::now(),
                );
            }
            let Some(p) = self.pending.get_mut(id) else {
                continue;
            };
            // The cloud queue refuses only by the operator's choice
            // (refuse-new) or when it cannot store: the publisher keeps it.
            if refused && (p.all_or_error || link.endpoint == Endpoint::Cloud) {
                let p = self.pending.remove(id).expect("present");
                self.acks.push(Ack {
                    link: p.origin,
                    id: p.origin_id,
                    refused: true,
                });
                continue;
            }
            p.remaining -= 1;
            if p.remaining == 0 {
                let p = self.pending.remove(id).expect("present");
                self.acks.push(Ack {
                    link: p.origin,
                    id: p.origin_id,
                    refused: false,
                });
            }
        }
    }

    fn send_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut per_link: Vec<LinkAcks> = Vec::new();
        for Ack { link, id, refused } in self.acks.drain(..) {
            let entry = match per_link.iter_mut().find(|e| e.link == link) {
                Some(e) => e,
                None => {
                    per_link.push(LinkAcks {
                        link,
                        ids: Vec::new(),
                        refused: Vec::new(),
                    });
                    per_link.last_mut().expect("pushed")
                }
            };
            if refused {
                entry.refused.push(id);
            } else {
                entry.ids.push(id);
            }
        }
        for LinkAcks { link, ids, refused } in per_link {
            if let Some(q) = self.queues.get(&link.endpoint)
                && let Some(l) = &q.link
                && l.id == link
            {
                let _ = l.down.send(Down::Acks { ids, refused });
            }
        }
    }

    /// Swaps in a new table atomically: every message after this is routed
    /// by it, and the broker gets its copy before any message that used it.
    pub fn swap(&mut self, table: Table) {
        let old = std::mem::replace(&mut self.table, Arc::new(table));
        let mut counts = vec![RouteCount::default(); self.table.routes().len()];
        for (i, r) in self.table.routes().iter().enumerate() {
            if let Some(j) = old.routes().iter().position(|o| o == r) {
                counts[i] = self.counts[j];
            }
        }
        self.counts = counts;
        self.previous = Some(old);
        tracing::info!(
            version = self.table.version(),
            routes = self.table.routes().len(),
            "subscription table swapped"
        );
        // The broker routes device to device by its copy; the cloud bridge
        // subscribes to what the table routes from the cloud; the shadow
        // service syncs the things the table marks.
        for e in [Endpoint::Broker, Endpoint::Cloud, Endpoint::Shadow] {
            if let Some(l) = &self.queues[&e].link {
                let _ = l.down.send(Down::Table(self.table.clone()));
            }
        }
    }

    fn view(&self) -> RoutesView {
        RoutesView {
            version: self.table.version(),
            routes: self
                .table
                .routes()
                .iter()
                .zip(&self.counts)
                .map(|(r, c)| (r.clone(), c.messages, c.bytes))
                .collect(),
            no_route: self.no_route.iter().map(|(s, n)| (s.clone(), *n)).collect(),
            links: Endpoint::ALL
                .iter()
                .filter(|e| self.queues[e].link.is_some())
                .map(|e| e.name())
                .collect(),
            overflow: Endpoint::ALL
                .iter()
                .map(|e| (e.name(), self.queues[e].overflow))
                .collect(),
            undelivered: self.undelivered.view(),
        }
    }
}

/// The thing name of a thing ARN.
pub fn thing_name(arn: &str) -> &str {
    arn.rsplit_once("thing/").map_or(arn, |(_, n)| n)
}

/// The switch's task.
pub async fn run(mut switch: Switch, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        switch.handle(event);
    }
}

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;
