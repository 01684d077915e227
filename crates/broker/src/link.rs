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
//! Device-to-device traffic does not come here. Opening the link, the
//! outbox (waiting, unacknowledged, sent again first after a break) and
//! the backoff are `verdant_link`'s; the backlog, counts and traces, and
//! what comes down, are this module's.
//!
//! Down: the table (handed to the hub), and messages for devices, which
//! are acknowledged once the hub has committed them to the sessions.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::FuturesOrdered;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use verdant_common::reload::Reloaded;
use verdant_common::shutdown::CancellationToken;
use verdant_group::routes::{Route, Table};
use verdant_link::{Backoff, Outbox, ToRouter};
use verdant_proto::router::v1 as pb;

use crate::message::Message;
use crate::request::{Request, ToLink};

/// Trace events held for the router at most (they are dropped past it:
/// a trace is a best-effort view, never back-pressure).
const MAX_TRACES: usize = 4096;

/// Messages the router may send before this side grants more.
const CREDIT: u32 = 1024;

/// What survives a broken link.
struct State {
    /// Not yet sent on the current link, or (QoS 1) not yet acknowledged;
    /// never more than `backlog` (the outbox drops nothing itself).
    outbox: Outbox,
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
                if self.outbox.len() >= self.backlog {
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
                let m = f.message;
                self.outbox.push(ToRouter {
                    message: pb::Message {
                        // The outbox numbers it.
                        id: 0,
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
                    outcome: f.reply,
                });
            }
        }
    }

    /// The router has these (`ok`) or refused them (counted): their
    /// publishers are told which.
    fn acked(&mut self, ids: &[u64], ok: bool) {
        let held = self.outbox.acked(ids, ok);
        if !ok && held > 0 {
            self.counters
                .refused
                .fetch_add(held as u64, Ordering::Relaxed);
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

/// The deployed group's file and the core's revoked certificates, and
/// the devices read from them, replaced when the router sends a new table
/// (a new deployment) or the revocations change.
pub struct GroupFile {
    pub file: PathBuf,
    pub revoked: Arc<Reloaded<HashSet<String>>>,
    pub devices: Arc<std::sync::RwLock<crate::identity::Devices>>,
}

impl GroupFile {
    /// The core's revocations, read again when their file changes. A
    /// list that cannot be read at start is logged and none is used until
    /// it is fixed (the broker keeps serving the site); later, the
    /// previous list stays in use.
    pub fn revocations(path: PathBuf) -> Arc<Reloaded<HashSet<String>>> {
        let file = path.clone();
        Reloaded::new_or(
            "the revoked certificates",
            vec![path],
            (HashSet::new(), "no certificate is refused as revoked"),
            move || verdant_group::revoked::ids_in(&file).map_err(|e| e.to_string()),
        )
    }

    /// Reads the group again, with the revocations as they are now; who
    /// may stay connected. A group that cannot be read leaves its devices
    /// as they were, but the revocations still apply.
    pub fn reload(&self) -> crate::identity::Members {
        let revoked = self.revoked.current();
        let mut devices = self.devices.write().expect("devices lock");
        match verdant_group::Group::load(&self.file) {
            Ok(g) => *devices = crate::identity::Devices::from_group(&g, &revoked),
            Err(e) => {
                tracing::error!("{e}: the devices allowed in stay those of the previous group");
                devices.revoke(&revoked);
            }
        }
        devices.members()
    }
}

/// Keeps the link up until `shutdown`.
pub async fn run(
    socket: PathBuf,
    group: Arc<GroupFile>,
    hub: mpsc::Sender<Request>,
    mut from_hub: mpsc::UnboundedReceiver<ToLink>,
    backlog: usize,
    counters: Arc<LinkCounters>,
    shutdown: CancellationToken,
) {
    let mut state = State {
        outbox: Outbox::new(usize::MAX),
        backlog,
        counters,
        pending_counts: Vec::new(),
        traces: Vec::new(),
    };
    let mut backoff = Backoff::default();
    loop {
        let why = tokio::select! {
            () = shutdown.cancelled() => return,
            why = linked(&socket, &group, &hub, &mut from_hub, &mut state) => why,
        };
        // Everything not acknowledged goes again on the next link.
        state.outbox.resend();
        tracing::warn!(
            held = state.outbox.len(),
            "router link down: {why}; device-to-device routes keep working"
        );
        let wait = tokio::time::sleep(backoff.wait());
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
    let (up, mut down) = match verdant_link::open(socket, "broker", CREDIT).await {
        Ok(opened) => opened,
        Err(why) => return why.to_string(),
    };
    let send = |kind| up.send(pb::LinkUp { kind: Some(kind) }).is_ok();
    tracing::info!(held = state.outbox.len(), "linked with the router");
    let mut credit = 0u32;
    // Deliveries handed to the hub, acknowledged up in order once committed.
    let mut committing: Committing = FuturesOrdered::new();
    loop {
        while let Some(messages) = state.outbox.batch(&mut credit) {
            if !send(pb::link_up::Kind::Messages(pb::Messages { messages })) {
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
                        && hub.send(Request::Members(group.reload())).await.is_err()
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
