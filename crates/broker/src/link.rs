//! Routed mode's link with the router: one long-lived gRPC stream each
//! way (`verdant.router.v1.Router/Link`), opened by this task and opened
//! again whenever it breaks.
//!
//! Up: the messages the hub forwards (targets beyond the devices), in
//! batches, no more than the router's credit allows. A QoS 1 message stays
//! here until the router acknowledges it, and is sent again on a new link
//! if the old one broke first, so its publisher is acknowledged only once
//! the router has it. At most `backlog` messages wait: past that, messages
//! lose their copy for the router's targets (counted, logged now and then)
//! and their publisher is acknowledged all the same, as the router does
//! when a target refuses its copy: a target that cannot take a message
//! does not hold a device's connection hostage (docs/routing.md). Only
//! the router's refusal (the cloud queue's `refuse-new` policy, or its
//! disk failing) leaves the publisher unacknowledged.
//! Device-to-device traffic does not come here.
//!
//! Down: the table (handed to the hub), and messages for devices, which
//! are acknowledged once the hub has committed them to the sessions.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::FuturesOrdered;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use verdant_common::shutdown::CancellationToken;
use verdant_group::routes::{Route, Table};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

use crate::message::Message;
use crate::request::{Request, ToLink};

/// Trace events held for the router at most (they are dropped past it:
/// a trace is a best-effort view, never back-pressure).
const MAX_TRACES: usize = 4096;

/// Messages the router may send before this side grants more.
const CREDIT: u32 = 1024;
/// Messages in one batch up.
const BATCH: usize = 256;

/// One waiting message.
struct Entry {
    message: pb::Message,
    reply: Option<oneshot::Sender<bool>>,
}

/// What survives a broken link.
struct State {
    next_id: u64,
    /// By id: not yet sent on the current link, or (QoS 1) not yet
    /// acknowledged.
    entries: BTreeMap<u64, Entry>,
    /// Ids to send, in order.
    unsent: VecDeque<u64>,
    backlog: usize,
    /// What did not reach the router's targets.
    counters: Arc<LinkCounters>,
    pending_counts: Vec<pb::Delivered>,
    traces: Vec<pb::TraceEvent>,
}

impl State {
    fn take(&mut self, item: ToLink) {
        match item {
            ToLink::Trace(t) => {
                if self.traces.len() < MAX_TRACES {
                    self.traces.push(t.event);
                }
            }
            ToLink::Counts { routes, no_route } => {
                // Counts are not worth holding across an outage.
                if self.pending_counts.len() < 64 {
                    self.pending_counts.push(pb::Delivered {
                        routes: routes
                            .into_iter()
                            .map(|(id, messages, bytes)| pb::RouteCount {
                                id,
                                messages,
                                bytes,
                            })
                            .collect(),
                        no_route: no_route
                            .into_iter()
                            .map(|(source, messages)| pb::Dropped { source, messages })
                            .collect(),
                    });
                }
            }
            ToLink::Forward(f) => {
                if self.entries.len() >= self.backlog {
                    let n = self.counters.backlog_full.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(
                            backlog = self.backlog,
                            dropped = n,
                            "router link backlog full: messages for functions, shadows and the \
                             cloud are dropped (their devices are acknowledged)"
                        );
                    }
                    if let Some(reply) = f.reply {
                        let _ = reply.send(true);
                    }
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let m = f.message;
                self.entries.insert(
                    id,
                    Entry {
                        message: pb::Message {
                            id,
                            source: f.source.to_string(),
                            topic: m.topic,
                            payload: m.payload,
                            qos: u32::from(m.qos != QoS::AtMostOnce),
                            retain: false,
                            targets: Vec::new(),
                            table_version: f.table_version,
                            // Devices publish best effort (Greengrass's default).
                            all_or_error: false,
                        },
                        reply: f.reply,
                    },
                );
                self.unsent.push_back(id);
            }
        }
    }

    /// The next batch the router's `credit` allows.
    fn batch(&mut self, credit: &mut u32) -> Vec<pb::Message> {
        let n = self.unsent.len().min(*credit as usize).min(BATCH);
        let mut out = Vec::with_capacity(n);
        for id in self.unsent.drain(..n) {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            out.push(e.message.clone());
            if e.message.qos == 0 {
                self.entries.remove(&id);
            }
        }
        *credit -= n as u32;
        out
    }

    /// The router has these (`ok`) or refused them (counted): their
    /// publishers are told which.
    fn acked(&mut self, ids: &[u64], ok: bool) {
        for id in ids {
            let Some(entry) = self.entries.remove(id) else {
                continue;
            };
            if !ok {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(reply) = entry.reply {
                let _ = reply.send(ok);
            }
        }
    }
}

/// Messages that did not reach the router's targets, for `ListClients`.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Dropped because the backlog for the router was full.
    pub backlog_full: AtomicU64,
    /// Refused by the router.
    pub refused: AtomicU64,
}

/// The deployed group's file, and the devices read from it, replaced
/// when the router sends a new table (a new deployment).
pub struct GroupFile {
    pub file: PathBuf,
    pub devices: Arc<std::sync::RwLock<crate::identity::Devices>>,
}

impl GroupFile {
    /// Reads the group again; the devices no longer in it, if it changed.
    fn reload(&self) -> Option<std::collections::HashSet<String>> {
        match verdant_group::Group::load(&self.file) {
            Ok(g) => {
                let devices = crate::identity::Devices::from_group(&g);
                let names = devices.names();
                *self.devices.write().expect("devices lock") = devices;
                Some(names)
            }
            Err(e) => {
                tracing::error!("{e}: the devices allowed in stay those of the previous group");
                None
            }
        }
    }
}

/// Keeps the link up until `shutdown`.
pub async fn run(
    socket: PathBuf,
    group: GroupFile,
    hub: mpsc::Sender<Request>,
    mut from_hub: mpsc::UnboundedReceiver<ToLink>,
    backlog: usize,
    counters: Arc<LinkCounters>,
    shutdown: CancellationToken,
) {
    let mut state = State {
        next_id: 1,
        entries: BTreeMap::new(),
        unsent: VecDeque::new(),
        backlog,
        counters,
        pending_counts: Vec::new(),
        traces: Vec::new(),
    };
    let mut delay = Duration::from_millis(50);
    loop {
        let why = tokio::select! {
            () = shutdown.cancelled() => return,
            why = linked(&socket, &group, &hub, &mut from_hub, &mut state) => why,
        };
        // Everything not acknowledged goes again on the next link.
        state.unsent = state.entries.keys().copied().collect();
        tracing::warn!(
            held = state.entries.len(),
            "router link down: {why}; device-to-device routes keep working"
        );
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut wait => break,
                item = from_hub.recv() => match item {
                    Some(item) => state.take(item),
                    None => return,
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Deliveries handed to the hub: (id, committed), in the order received.
type Committing = FuturesOrdered<std::pin::Pin<Box<dyn Future<Output = (u64, bool)> + Send>>>;

/// One link's life; returns why it ended.
async fn linked(
    socket: &std::path::Path,
    group: &GroupFile,
    hub: &mpsc::Sender<Request>,
    from_hub: &mut mpsc::UnboundedReceiver<ToLink>,
    state: &mut State,
) -> String {
    let channel = match verdant_common::uds::connect(socket).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let (up, up_rx) = mpsc::unbounded_channel();
    let send = |kind| up.send(pb::LinkUp { kind: Some(kind) }).is_ok();
    send(pb::link_up::Kind::Hello(pb::Hello {
        endpoint: "broker".into(),
        credit: CREDIT,
    }));
    let mut client = RouterClient::new(channel);
    let mut down = match client.link(UnboundedReceiverStream::new(up_rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return format!("the router refused the link: {}", e.message()),
    };
    tracing::info!(held = state.entries.len(), "linked with the router");
    let mut credit = 0u32;
    // Deliveries handed to the hub, acknowledged up in order once committed.
    let mut committing: Committing = FuturesOrdered::new();
    loop {
        while credit > 0 && !state.unsent.is_empty() {
            let messages = state.batch(&mut credit);
            if !messages.is_empty() && !send(pb::link_up::Kind::Messages(pb::Messages { messages }))
            {
                return "the stream closed".into();
            }
        }
        for d in state.pending_counts.drain(..) {
            send(pb::link_up::Kind::Delivered(d));
        }
        if !state.traces.is_empty() {
            let events = std::mem::take(&mut state.traces);
            send(pb::link_up::Kind::Traces(pb::Traces { events }));
        }
        tokio::select! {
            item = from_hub.recv() => match item {
                Some(item) => {
                    state.take(item);
                    while let Ok(item) = from_hub.try_recv() {
                        state.take(item);
                    }
                }
                None => return "the broker is stopping".into(),
            },
            Some((id, ok)) = committing.next(), if !committing.is_empty() => {
                let mut acks = pb::Acks::default();
                let mut push = |id, ok| if ok { acks.ids.push(id) } else { acks.refused.push(id) };
                push(id, ok);
                while let Some(Some((id, ok))) = futures::FutureExt::now_or_never(committing.next()) {
                    push(id, ok);
                }
                send(pb::link_up::Kind::Acks(acks));
            }
            msg = down.message() => match msg {
                Ok(Some(pb::LinkDown { kind: Some(kind) })) => {
                    if let pb::link_down::Kind::Table(_) = &kind
                        && let Some(members) = group.reload()
                        && hub.send(Request::Members(members)).await.is_err()
                    {
                        return "the broker is stopping".into();
                    }
                    if let Err(why) = on_down(kind, hub, state, &mut credit, &mut committing, &send).await {
                        return why;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return "the router closed the link".into(),
                Err(e) => return format!("link failed: {}", e.message()),
            },
        }
    }
}

/// Handles one message down from the router.
async fn on_down(
    kind: pb::link_down::Kind,
    hub: &mpsc::Sender<Request>,
    state: &mut State,
    credit: &mut u32,
    committing: &mut Committing,
    send: &impl Fn(pb::link_up::Kind) -> bool,
) -> Result<(), String> {
    use pb::link_down::Kind;
    let stopping = |_| "the broker is stopping".to_string();
    match kind {
        Kind::Table(t) => {
            let routes = t
                .routes
                .into_iter()
                .map(|r| Route {
                    id: r.id,
                    source: r.source,
                    subject: r.subject,
                    target: r.target,
                })
                .collect();
            let table = Arc::new(Table::new(t.version, routes));
            hub.send(Request::Table(table)).await.map_err(stopping)?;
        }
        Kind::Messages(batch) => {
            let n = u32::try_from(batch.messages.len()).unwrap_or(u32::MAX);
            for m in batch.messages {
                let (reply, rx) = if m.qos > 0 {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                let id = m.id;
                let request = Request::Deliver {
                    things: m.targets,
                    message: Message {
                        topic: m.topic,
                        payload: m.payload,
                        qos: if m.qos > 0 {
                            QoS::AtLeastOnce
                        } else {
                            QoS::AtMostOnce
                        },
                        retain: false,
                        stored: None,
                        props: None,
                        from: None,
                        dup: false,
                    },
                    reply,
                };
                hub.send(request).await.map_err(stopping)?;
                if let Some(rx) = rx {
                    committing.push_back(Box::pin(async move { (id, rx.await.unwrap_or(false)) }));
                }
            }
            send(pb::link_up::Kind::Credit(pb::Credit { messages: n }));
        }
        Kind::Acks(a) => {
            state.acked(&a.ids, true);
            state.acked(&a.refused, false);
        }
        Kind::Credit(c) => *credit = credit.saturating_add(c.messages),
        Kind::Tracing(t) => hub.send(Request::Tracing(t.on)).await.map_err(stopping)?,
        // The cloud's state is the shadow service's business.
        Kind::Cloud(_) => {}
    }
    Ok(())
}
