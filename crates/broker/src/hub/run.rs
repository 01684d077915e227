//! The hub's task: the requests connections and the link send, taken in
//! batches, the store committed once per batch, then the answers (see
//! `hub/mod.rs`); and the clocks it keeps (wills, expiries, parked messages,
//! giving memory back).

use std::sync::Arc;

use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};

use super::{Hub, REPORT_EVERY};
use crate::message::{Connected, Message};
use crate::request::{Forward, Request, SubscribeResult};
use crate::store::Store;
use crate::wire::SubOptions;

/// After this many requests, quiet spells of [`TRIM_AFTER`] return the
/// allocator's free memory (the backlog of a burst) to the system, a few
/// times over, as connections may still be draining what the burst left.
const TRIM_MIN_REQUESTS: u64 = 1_000;
const TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
const TRIMS: u8 = 3;
/// How often parked messages are offered to their outboxes again.
const UNPARK_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

/// An answer held back until its batch is committed.
pub(super) enum Reply {
    Connect(oneshot::Sender<Connected>, Connected),
    Publish(oneshot::Sender<bool>),
    /// A publish that parked messages for these clients: acknowledged
    /// once they took them (`hub/backlog.rs`).
    Held(oneshot::Sender<bool>, Vec<String>),
    /// To the router, which acknowledges a QoS 1 message itself.
    Forward(Forward),
    Subscribe(oneshot::Sender<SubscribeResult>, SubscribeResult),
    Unsubscribe(oneshot::Sender<()>),
}

/// Requests handled before one commit.
const BATCH: usize = 1024;
/// A connection that handed this many messages on in place tells the
/// hub's task so (`Request::InPlace`).
const IN_PLACE_NOTICE: u64 = 256;

/// The hub's state, shared by its task and the connections: a QoS 0
/// message that needs nothing of the task (no retained store, no router)
/// is handed to its subscribers' outboxes by its publisher's own task,
/// when the hub is free and no publish waits for it, so that message
/// crosses two tasks instead of three (`Exchange::on_publish`).
pub struct SharedHub {
    hub: std::sync::Mutex<Hub>,
    /// Publishes sent to the hub's task and not yet handled: while any
    /// is, every publish takes the channel, so that none overtakes one
    /// sent before it.
    queued_publishes: std::sync::atomic::AtomicUsize,
}

/// What the publisher's task should do after handing a message on in
/// place.
pub struct InPlace {
    /// Tell the hub's task (`Request::InPlace`) that traffic went by it,
    /// for its quiet-spell clocks.
    pub notice: bool,
    /// A subscriber's queue is half full: give way (yield) so that its
    /// connection takes what it has before this read's next messages
    /// overflow it, as the hub's task does after such a batch.
    pub crowded: bool,
}

impl SharedHub {
    pub fn new(hub: Hub) -> Self {
        SharedHub {
            hub: std::sync::Mutex::new(hub),
            queued_publishes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Handles `first` and what else waits in `requests`, up to [`BATCH`]
    /// (less if a client's queue got crowded), holding the hub's lock;
    /// counts them in `since_trim`. Returns the store, taken out of the
    /// hub for the commit (nothing that runs in place meanwhile, QoS 0
    /// not retained, needs it), and whether the batch crowded a queue.
    fn handle_batch(
        &self,
        first: Request,
        requests: &mut mpsc::Receiver<Request>,
        max_subscriptions: usize,
        replies: &mut Vec<Reply>,
        since_trim: &mut u64,
    ) -> (Option<Store>, bool) {
        let mut hub = self.lock();
        let mut publishes = usize::from(matches!(first, Request::Publish { .. }));
        let mut sessions_changed = hub.handle(first, max_subscriptions, replies);
        *since_trim += 1;
        for _ in 1..BATCH {
            if hub.crowded {
                break;
            }
            match requests.try_recv() {
                Ok(r) => {
                    publishes += usize::from(matches!(r, Request::Publish { .. }));
                    sessions_changed |= hub.handle(r, max_subscriptions, replies);
                }
                Err(_) => break,
            }
            *since_trim += 1;
        }
        if publishes > 0 {
            self.queued_publishes
                .fetch_sub(publishes, std::sync::atomic::Ordering::AcqRel);
        }
        // Messages handed on in place count as requests for giving
        // memory back after a burst.
        *since_trim += std::mem::take(&mut hub.in_place);
        if sessions_changed {
            hub.count_durable_subscriptions();
        }
        if hub.congested() {
            hub.unpark();
        }
        (hub.store.take(), std::mem::take(&mut hub.crowded))
    }

    /// Fans `message` (QoS 0, not retained, local mode) out from the
    /// caller's task if the hub is free and no publish is queued for it;
    /// otherwise gives it back, to be sent to the hub.
    pub fn publish_in_place(&self, message: Message) -> Result<InPlace, Message> {
        let Ok(mut hub) = self.hub.try_lock() else {
            return Err(message);
        };
        if self
            .queued_publishes
            .load(std::sync::atomic::Ordering::Acquire)
            != 0
        {
            return Err(message);
        }
        debug_assert!(message.qos == QoS::AtMostOnce && !message.retain);
        hub.publish(&message);
        hub.in_place += 1;
        Ok(InPlace {
            notice: hub.in_place % IN_PLACE_NOTICE == 0,
            crowded: std::mem::take(&mut hub.crowded),
        })
    }

    /// Counts a publish about to be sent to the hub's task.
    pub fn publish_queued(&self) {
        self.queued_publishes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The hub's task: takes requests in batches, commits each batch's store
/// operations once (on a blocking thread, only when there are any), then
/// answers, until every sender is gone. Requests that arrive during a
/// commit make the next batch: that is the group commit.
pub async fn run(
    shared: Arc<SharedHub>,
    mut requests: mpsc::Receiver<Request>,
    max_subscriptions: usize,
) {
    let mut replies = Vec::new();
    // Session expiry and will delays, to the second; an interval keeps its
    // beat however busy the requests keep the loop.
    let mut clock = tokio::time::interval(std::time::Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since_trim: u64 = 0;
    let mut trims = 0u8;
    // The quiet spells are measured from the last batch by two standing
    // timers, re-armed when they fire early, rather than by timers made
    // anew on every turn (two trips into the timer wheel per message).
    let mut last_batch = tokio::time::Instant::now();
    let trim_timer = tokio::time::sleep(TRIM_AFTER);
    let report_timer = tokio::time::sleep(REPORT_EVERY);
    tokio::pin!(trim_timer, report_timer);
    loop {
        if since_trim >= TRIM_MIN_REQUESTS {
            since_trim = 0;
            trims = TRIMS;
        }
        let (congested, has_timers, unreported) = {
            let hub = shared.lock();
            (hub.congested(), hub.has_timers(), hub.unreported())
        };
        let first = tokio::select! {
            r = requests.recv() => match r {
                Some(r) => r,
                None => break,
            },
            () = sleep_after(UNPARK_EVERY), if congested => Request::Unpark,
            () = &mut trim_timer, if trims > 0 => {
                if quiet(trim_timer.as_mut(), last_batch, TRIM_AFTER) {
                    trims -= 1;
                    let _ = tokio::task::spawn_blocking(verdant_common::memory::release_free).await;
                }
                continue;
            }
            _ = clock.tick(), if has_timers => Request::Sweep,
            // Counts left over when traffic stops still reach the router.
            () = &mut report_timer, if unreported => {
                if quiet(report_timer.as_mut(), last_batch, REPORT_EVERY) {
                    shared.lock().report(true);
                }
                continue;
            }
        };
        last_batch = tokio::time::Instant::now();
        let (store, crowded) = shared.handle_batch(
            first,
            &mut requests,
            max_subscriptions,
            &mut replies,
            &mut since_trim,
        );
        let (store, durable) = commit(store).await;
        {
            let mut hub = shared.lock();
            hub.store = store;
            hub.answer(&mut replies, durable);
        }
        // A batch that filled a client's queue halfway lets its connection
        // (and any other) run before the next: a burst from one publisher
        // would otherwise overflow the queue of a subscriber that keeps up.
        if crowded {
            tokio::task::yield_now().await;
        }
    }
}

/// Commits the batch's store operations, if any, on a blocking thread;
/// false if they could not be written.
async fn commit(store: Option<Store>) -> (Option<Store>, bool) {
    match store {
        Some(mut store) if store.has_pending() => {
            let (store, result) = tokio::task::spawn_blocking(move || {
                let result = store.commit();
                (store, result)
            })
            .await
            .expect("the commit does not panic");
            if let Err(e) = &result {
                tracing::error!(
                    "{e}: QoS 1/2 messages and subscriptions of this batch are refused"
                );
            }
            (Some(store), result.is_ok())
        }
        other => (other, true),
    }
}

/// Whether `after` has passed since `last`; if not, `timer` is set to
/// fire when it will have. Once it has, the timer is set `after` ahead, so
/// a spell that goes on is seen again only after as long.
fn quiet(
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    last: tokio::time::Instant,
    after: std::time::Duration,
) -> bool {
    let now = tokio::time::Instant::now();
    let due = last + after;
    if now < due {
        timer.reset(due);
        return false;
    }
    timer.reset(now + after);
    true
}

/// Sleeps for `after`; made only when polled, so a disabled `select!`
/// branch costs no timer.
async fn sleep_after(after: std::time::Duration) {
    tokio::time::sleep(after).await;
}

impl Hub {
    /// Sends the batch's answers once its commit is done (`durable`: it
    /// was written).
    fn answer(&mut self, replies: &mut Vec<Reply>, durable: bool) {
        for reply in replies.drain(..) {
            match reply {
                Reply::Connect(tx, c) => {
                    let _ = tx.send(c);
                }
                // A publish that parked messages waits for them (see
                // `hub/backlog.rs`).
                Reply::Held(tx, clients) if durable => self.hold(tx, clients),
                Reply::Held(tx, _) | Reply::Publish(tx) => {
                    let _ = tx.send(durable);
                }
                Reply::Forward(f) => self.forward(f, durable),
                Reply::Subscribe(tx, result) => {
                    let result = if durable {
                        result
                    } else {
                        Err("the session store cannot be written".into())
                    };
                    let _ = tx.send(result);
                }
                Reply::Unsubscribe(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// A client's message: fanned out, forwarded, and its publisher
    /// answered now, once it is on its way, or after the commit.
    fn handle_publish(
        &mut self,
        message: &Message,
        source: Option<&Arc<str>>,
        reply: Option<oneshot::Sender<bool>>,
        delivered: Option<oneshot::Sender<bool>>,
        replies: &mut Vec<Reply>,
    ) {
        self.just_parked.clear();
        self.last_delivered = None;
        let ops = self.pending_ops();
        let forward = self.publish_from(message, source);
        // A QoS 0 publisher held back (`hold-publishers`) reads nothing
        // meanwhile, not even its own acknowledgements: what it parked for
        // itself must not hold it.
        if message.qos == QoS::AtMostOnce
            && let Some(from) = &message.from
        {
            self.just_parked.retain(|c| c.as_str() != &**from);
        }
        match forward {
            Some(forward) => replies.push(Reply::Forward(Forward { reply, ..forward })),
            None => match reply.map(|reply| self.reply_to_publish(reply)) {
                // Nothing of it waits for the commit (no queue of an absent
                // session, no retained message), and no one had to park
                // it: acknowledged as it goes out, like local mode's last
                // publish of a read.
                Some(Reply::Publish(reply)) if self.pending_ops() == ops => {
                    self.pass_on(reply);
                }
                Some(answer) => replies.push(answer),
                None => {}
            },
        }
        if let Some(delivered) = delivered {
            self.pass_on(delivered);
        }
    }

    /// Answers a CONNECT now, or after the commit if it must wait for it
    /// (see `Connected::wait_for_commit`).
    fn reply_to_connect(
        reply: oneshot::Sender<Connected>,
        connected: Connected,
        replies: &mut Vec<Reply>,
    ) {
        if connected.wait_for_commit {
            replies.push(Reply::Connect(reply, connected));
        } else {
            // Not behind the disk: a busy store must not keep a
            // reconnecting site waiting for its CONNACKs.
            let _ = reply.send(connected);
        }
    }

    /// Subscribes a client unless that takes it past `max_subscriptions`:
    /// the retained messages to send, or why not.
    fn handle_subscribe(
        &mut self,
        client_id: &str,
        filters: &[(String, QoS, SubOptions)],
        max_subscriptions: usize,
    ) -> SubscribeResult {
        let existing = self.subscription_count(client_id);
        if existing + filters.len() > max_subscriptions {
            Err(format!(
                "more than {max_subscriptions} subscriptions for one client"
            ))
        } else {
            Ok(self.subscribe_with(client_id, filters))
        }
    }

    /// Applies one request; true if it may have changed sessions or
    /// subscriptions.
    fn handle(
        &mut self,
        request: Request,
        max_subscriptions: usize,
        replies: &mut Vec<Reply>,
    ) -> bool {
        let changes_sessions = matches!(
            request,
            Request::Connect { .. }
                | Request::Disconnect { .. }
                | Request::Subscribe { .. }
                | Request::Unsubscribe { .. }
                | Request::Sweep
        );
        match request {
            Request::Sweep => self.sweep(std::time::Instant::now()),
            Request::Unpark => self.unpark(),
            Request::InPlace => {}
            Request::Connect {
                info,
                will,
                outbox,
                reply,
            } => {
                let connected = self.connect(info, will, outbox);
                Self::reply_to_connect(reply, connected, replies);
            }
            Request::Disconnect {
                client_id,
                connection_id,
                graceful,
                unacked,
                session_expiry,
            } => {
                if let Some(expiry) = session_expiry {
                    self.set_expiry(&client_id, connection_id, expiry);
                }
                self.disconnect(&client_id, connection_id, graceful, unacked);
            }
            Request::Publish {
                message,
                source,
                reply,
                delivered,
            } => self.handle_publish(&message, source.as_ref(), reply, delivered, replies),
            Request::Deliver {
                things,
                message,
                reply,
            } => {
                self.just_parked.clear();
                self.deliver_to(&things, &message);
                if let Some(reply) = reply {
                    replies.push(self.reply_to_publish(reply));
                }
            }
            Request::Table(table) => self.set_table(table),
            Request::Tracing(on) => self.set_tracing(on),
            Request::Members(things) => self.keep_only(&things),
            Request::Acked(ids) => self.acked(&ids),
            Request::Subscribe {
                client_id,
                filters,
                reply,
            } => {
                let result = self.handle_subscribe(&client_id, &filters, max_subscriptions);
                replies.push(Reply::Subscribe(reply, result));
            }
            Request::Unsubscribe {
                client_id,
                filters,
                reply,
            } => {
                self.unsubscribe(&client_id, &filters);
                replies.push(Reply::Unsubscribe(reply));
            }
            Request::Clients(reply) => {
                let _ = reply.send((self.clients(), self.counters));
            }
            Request::Kick { client_id, reply } => {
                let _ = reply.send(self.kick(&client_id, "disconnected by an operator"));
            }
        }
        changes_sessions
    }
}

impl Hub {
    /// Store operations waiting for this batch's commit.
    fn pending_ops(&self) -> usize {
        self.store
            .as_ref()
            .map_or(0, crate::store::Store::pending_ops)
    }

    /// Has the connection the message was last handed to wake its
    /// publisher once it wrote the message, so the subscriber is sent the
    /// message before the publisher its PUBACK: the order of a broker that
    /// delivers in place. Each task then wakes exactly one other (hub →
    /// subscriber → publisher), which a runtime runs next on the same
    /// thread, where a publisher woken by the hub besides the subscriber
    /// would be written to first, or wake a second worker. With no
    /// connected recipient, or a full outbox, the publisher is woken now.
    pub(super) fn pass_on(&mut self, delivered: oneshot::Sender<bool>) {
        let outbox = self
            .last_delivered
            .take()
            .and_then(|client_id| self.sessions.get(&*client_id))
            .and_then(|s| s.connection.as_ref())
            .map(|c| &c.outbox);
        match outbox {
            Some(outbox) => outbox.wake_publisher(delivered),
            None => drop(delivered.send(true)),
        }
    }
}
