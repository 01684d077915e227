//! One client connection: CONNECT and authentication, then the MQTT 3.1.1
//! or 5.0 packet exchange, with the hub on one side and the socket on the
//! other. Packets are decoded with rumqttc's codecs after a strict check of
//! what they leave lenient (fixed-header flags, CONNECT flags, protocol
//! level), into one shape for both versions (`wire`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::config::BrokerConfig;
use crate::hub;
use crate::identity::{Device, Devices, Peer};
use crate::message::{ClientInfo, Connected, Message, Notification};
use crate::outbound::Outbound;
use crate::outbox::{self, Inbox};
use crate::request::{self, Request};
use crate::wire::{Out, Version, Violation};

mod conn;
mod connect;
mod exchange;
mod handlers;

use conn::{Conn, ReadError};
use connect::{Admitted, Hello, admit, read_connect};
use exchange::Exchange;

/// What every connection shares.
pub struct Common {
    pub config: BrokerConfig,
    /// The deployed group's devices; replaced when the router swaps in a
    /// new group's table.
    pub devices: Arc<std::sync::RwLock<Devices>>,
    pub hub: mpsc::Sender<Request>,
    /// The hub's state, for the QoS 0 messages handed on in place.
    pub hub_state: Arc<hub::SharedHub>,
    /// The hub's count of persistent sessions' subscriptions: while zero,
    /// QoS 1/2 publishes are acknowledged without waiting for the hub.
    pub durable_subscriptions: Arc<std::sync::atomic::AtomicUsize>,
    /// Set by the hub while a subscriber is backlogged: QoS 1/2 publishes
    /// then wait for the hub's word before they are acknowledged.
    pub congested: Arc<std::sync::atomic::AtomicBool>,
    /// For client ids the broker assigns (empty id, clean session).
    pub assigned: AtomicU64,
    /// Connections that ended, and a wake for the task that gives their
    /// memory back (`listener::give_memory_back`).
    pub ended: AtomicU64,
    pub ended_notify: tokio::sync::Notify,
}

impl Common {
    pub fn routed(&self) -> bool {
        self.config.mode == crate::config::Mode::Routed
    }
}

/// Why a connection ended, for the log and the will.
#[derive(Debug)]
enum End {
    /// DISCONNECT: the will is discarded, unless a 5.0 client asked for
    /// it; a 5.0 client may set a new session expiry interval.
    Graceful {
        will: bool,
        session_expiry: Option<u32>,
    },
    /// The socket is gone or failed: the will is published.
    Abrupt(String),
    /// The broker closes the connection: the will is published, and a 5.0
    /// client is told the reason code first.
    Closed(u8, String),
}

impl End {
    #[allow(clippy::needless_pass_by_value)]
    fn protocol(v: Violation) -> Self {
        End::Closed(v.reason, format!("protocol error: {}", v.text))
    }
    fn stopping() -> Self {
        End::Closed(0x8B, "broker stopping".into())
    }
}

/// Serves one client until it leaves or the broker closes it.
pub async fn serve<S>(
    stream: S,
    peer: Peer,
    address: String,
    listener: &'static str,
    shared: Arc<Common>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut conn = Conn::new(rd, wr, shared.config.max_packet_size);
    // Boxed, as is every stage that does not last: the task of an idle
    // connection holds only what its session needs (see docs/benchmarks.md,
    // memory per idle connection).
    let Some(connect) = Box::pin(read_connect(&mut conn, &address, &shared)).await else {
        return;
    };
    let Some(admitted) = Box::pin(admit(&mut conn, &connect, &peer, &address, &shared)).await
    else {
        return;
    };
    let Admitted {
        client_id,
        assigned,
        thing,
        subject,
        certificate_id,
        will,
    } = admitted;
    let (outbox, mut inbox) = outbox::channel(shared.config.max_queued_messages);
    let source = thing.as_ref().map(|d| d.thing_arn.clone());
    let info = client_info(
        &connect,
        conn.version(),
        client_id.clone(),
        thing.as_ref(),
        (subject, certificate_id),
        address.clone(),
        listener,
    );
    let Some(connected) = join_hub(&shared, info, will, outbox).await else {
        return;
    };
    tracing::info!(
        %address, client_id = %verdant_common::telemetry::bounded(&client_id), listener,
        version = conn.version().level(),
        clean_start = connect.clean_start,
        persistent = connect.persistent,
        "client connected"
    );
    let assigned = assigned.then(|| client_id.clone());
    let silence = conn.accept(&shared, &connect, assigned, connected.session_present);
    // A 5.0 client's Receive Maximum narrows the window (MQTT-3.3.4-7).
    let window = shared.config.max_inflight.min(connect.receive_maximum);
    conn.take_client_limits(&connect, &shared.config);
    let receive_maximum =
        (conn.version() == Version::V5).then_some(usize::from(shared.config.receive_maximum));
    let mut exchange = Exchange::new(
        &shared,
        &client_id,
        connect.session_expiry,
        source,
        window,
        receive_maximum,
    );
    drop(connect);
    let connection_id = connected.connection_id;
    for m in connected.queued {
        exchange.push(&mut conn, m);
    }
    let end = exchange.run(&mut conn, &mut inbox, silence).await;
    let graceful = close(&mut conn, &end, &address, &client_id).await;
    let unacked = take_back(exchange.outbound, &mut inbox);
    let _ = request::to_hub(
        &shared.hub,
        Request::Disconnect {
            client_id,
            connection_id,
            graceful,
            unacked,
            session_expiry: match end {
                End::Graceful { session_expiry, .. } => session_expiry,
                _ => None,
            },
        },
    )
    .await;
}

/// What the hub and operators know of an admitted client.
fn client_info(
    connect: &Hello,
    version: Version,
    client_id: String,
    thing: Option<&Device>,
    (certificate_subject, certificate_id): (Option<String>, Option<String>),
    peer_address: String,
    listener: &'static str,
) -> ClientInfo {
    ClientInfo {
        client_id,
        thing_name: thing.map(|d| d.thing_name.clone()),
        thing_arn: thing.map(|d| d.thing_arn.clone()),
        certificate_subject,
        certificate_id,
        peer_address,
        listener,
        protocol_version: version.level(),
        clean_session: !connect.persistent,
        clean_start: connect.clean_start,
        session_expiry: connect.session_expiry,
        will_delay: connect.will_delay,
        connected_at: SystemTime::now(),
    }
}

/// Hands the hub the new connection and its will; the session it gets
/// (`None`: the broker is stopping).
async fn join_hub(
    shared: &Common,
    info: ClientInfo,
    will: Option<Message>,
    outbox: outbox::Outbox,
) -> Option<Connected> {
    let (tx, rx) = oneshot::channel();
    let request = Request::Connect {
        info,
        will,
        outbox,
        reply: tx,
    };
    if request::to_hub(&shared.hub, request).await.is_err() {
        return None;
    }
    rx.await.ok()
}

/// What was sent and not acknowledged, what waited behind the window,
/// then what the hub had put in the outbox: all of it, in that order, for
/// a persistent session to keep.
fn take_back(outbound: Outbound, inbox: &mut Inbox) -> Vec<Message> {
    let mut unacked = outbound.into_unacked();
    inbox.close();
    while let Some(out) = inbox.try_recv() {
        if let Notification::Deliver(m) = out {
            unacked.push(m);
        }
    }
    unacked
}

/// How long what is left to write (and a 5.0 DISCONNECT) may take once a
/// connection ends.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells a 5.0 client why the broker closes and logs how the connection
/// ended; true when it ended without its will.
async fn close<R, W>(conn: &mut Conn<R, W>, end: &End, address: &str, client_id: &str) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let End::Closed(reason, _) = end {
        conn.queue(&Out::Disconnect(*reason));
    }
    // A client that reads nothing gets no more time than this.
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, conn.flush()).await;
    match end {
        End::Graceful { .. } => {
            tracing::info!(%address, client_id = %verdant_common::telemetry::bounded(client_id), "client disconnected");
        }
        End::Abrupt(why) => {
            tracing::info!(%address, client_id = %verdant_common::telemetry::bounded(client_id), "connection ended: {why}");
        }
        End::Closed(reason, why) => {
            tracing::info!(
                %address,
                client_id = %verdant_common::telemetry::bounded(client_id),
                "connection closed ({reason:#04x}): {why}"
            );
        }
    }
    matches!(end, End::Graceful { will: false, .. })
}
