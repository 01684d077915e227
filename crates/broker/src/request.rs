//! What tasks send each other: the requests connections, the gRPC API
//! and the link send the hub's task ([`Request`]), and what the hub hands
//! the link ([`ToLink`]). The hub and the link both depend on this module,
//! not on each other.

use std::sync::Arc;

use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};
use verdant_group::routes::Table;
use verdant_proto::router::v1 as pb;

use crate::message::{ClientInfo, ClientSummary, Connected, Counters, Message};
use crate::outbox::Outbox;
use crate::wire::SubOptions;

/// The hub has stopped: the broker is shutting down.
#[derive(Debug)]
pub struct Stopped;

/// Sent at once, or waiting (boxed) for room in the hub's channel.
pub type ToHub<'a> = futures::future::Either<
    futures::future::Ready<Result<(), Stopped>>,
    futures::future::BoxFuture<'a, Result<(), Stopped>>,
>;

/// Hands `request` to the hub. A connection's task keeps room for this
/// future as long as the connection lives, so it is small: the common case
/// is a `try_send`, and only a full channel waits, in a boxed future.
pub fn to_hub(hub: &mpsc::Sender<Request>, request: Request) -> ToHub<'_> {
    use futures::future::{Either, FutureExt};
    match hub.try_send(request) {
        Ok(()) => Either::Left(futures::future::ready(Ok(()))),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Either::Left(futures::future::ready(Err(Stopped)))
        }
        Err(mpsc::error::TrySendError::Full(request)) => {
            Either::Right(async move { hub.send(request).await.map_err(|_| Stopped) }.boxed())
        }
    }
}

/// Requests to the hub.
pub enum Request {
    /// A second passed while sessions expire or wills wait (`run` itself).
    Sweep,
    /// Time to retry parked messages (`run` itself).
    Unpark,
    /// Messages went from publishers to subscribers in place
    /// (`SharedHub::publish_in_place`): traffic for the quiet-spell clocks.
    InPlace,
    Connect {
        info: ClientInfo,
        will: Option<Message>,
        outbox: Outbox,
        reply: oneshot::Sender<Connected>,
    },
    Disconnect {
        client_id: String,
        connection_id: u64,
        graceful: bool,
        unacked: Vec<Message>,
        /// A 5.0 DISCONNECT's new session expiry interval.
        session_expiry: Option<u32>,
    },
    /// A message from a client (`source`: its device's thing ARN); for
    /// QoS 1/2 the reply says whether it is safe to acknowledge (stored
    /// wherever it must be, the router's side included).
    Publish {
        message: Message,
        source: Option<Arc<str>>,
        reply: Option<oneshot::Sender<bool>>,
        /// The publisher may acknowledge once the message is on its way
        /// (`true`, or the sender dropped); see `Hub::pass_on`.
        delivered: Option<oneshot::Sender<bool>>,
    },
    /// A message the router routed to the devices `things`; the reply
    /// says the sessions have it.
    Deliver {
        things: Vec<String>,
        message: Message,
        reply: Option<oneshot::Sender<bool>>,
    },
    /// The router's table.
    Table(Arc<Table>),
    /// The router says whether someone traces.
    Tracing(bool),
    /// The group or the revocations changed: close the connections of
    /// devices not in it, or whose certificate is not allowed any more.
    Members(crate::identity::Members),
    /// Stored messages the subscriber acknowledged.
    Acked(Vec<u64>),
    Subscribe {
        client_id: String,
        filters: Vec<(String, QoS, SubOptions)>,
        reply: oneshot::Sender<SubscribeResult>,
    },
    Unsubscribe {
        client_id: String,
        filters: Vec<String>,
        reply: oneshot::Sender<()>,
    },
    Clients(oneshot::Sender<(Vec<ClientSummary>, Counters)>),
    Kick {
        client_id: String,
        reply: oneshot::Sender<bool>,
    },
}

/// The retained messages to send, or why the subscription was refused.
pub type SubscribeResult = Result<Vec<Message>, String>;

/// A message the hub sends to the router.
#[derive(Debug)]
pub struct Forward {
    pub message: Message,
    /// The publishing device's thing ARN.
    pub source: Arc<str>,
    /// The table the hub delivered the device targets with (0: none yet).
    pub table_version: u64,
    /// For QoS 1/2: told whether the router took it.
    pub reply: Option<oneshot::Sender<bool>>,
}

/// A message the hub routed, for the router's trace.
#[derive(Debug)]
pub struct Traced {
    pub event: pb::TraceEvent,
}

impl Traced {
    pub fn new(source: &Arc<str>, m: &Message, things: Vec<String>, outcome: &str) -> Traced {
        Traced {
            event: pb::TraceEvent {
                time: Some(std::time::SystemTime::now().into()),
                source: source.to_string(),
                topic: m.topic.clone(),
                targets: things,
                size: u32::try_from(m.payload.len()).unwrap_or(u32::MAX),
                preview: m.payload.slice(..m.payload.len().min(PREVIEW)),
                qos: u32::from(m.qos != QoS::AtMostOnce),
                outcome: outcome.into(),
                by: "broker".into(),
            },
        }
    }
}

/// Payload bytes a trace shows.
const PREVIEW: usize = 64;

/// What the hub sends this task.
#[derive(Debug)]
pub enum ToLink {
    Forward(Forward),
    Trace(Traced),
    /// Route counts since the last report, and messages without a route.
    Counts {
        routes: Vec<(String, u64, u64)>,
        no_route: Vec<(String, u64)>,
    },
}
