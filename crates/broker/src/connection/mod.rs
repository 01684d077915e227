//! One client connection: CONNECT and authentication, then the MQTT 3.1.1
//! or 5.0 packet exchange, with the hub on one side and the socket on the
//! other. Packets are decoded with rumqttc's codecs after a strict check of
//! what they leave lenient (fixed-header flags, CONNECT flags, protocol
//! level), into one shape for both versions (`wire`).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use rumqttc::QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{BrokerConfig, Qos0WhenFull};
use crate::hub;
use crate::identity::{Devices, Peer};
use crate::message::{ClientInfo, Message, Outgoing};
use crate::outbound::Outbound;
use crate::outbox::{self, Inbox, Taken, Wake};
use crate::request::{self, Request};
use crate::topic;
use crate::wire::{self, Decoder, In, Out, Refusal, Version, Violation};

mod connect;
use connect::{Admitted, Hello, admit, read_connect};

/// What a connection's buffers start with: most devices send small packets
/// now and then, and a thousand idle connections should cost little.
const INITIAL_BUFFER: usize = 256;
/// The most a busy connection reads at a time.
const READ_CHUNK: usize = 32 * 1024;

/// What every connection shares.
pub struct Shared {
    pub config: BrokerConfig,
    /// The deployed group's devices; replaced when the router swaps in a
    /// new group's table.
    pub devices: Arc<std::sync::RwLock<Devices>>,
    pub hub: mpsc::Sender<Request>,
    /// The hub's state, for the QoS 0 messages handed on in place.
    pub hub_state: Arc<hub::Shared>,
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

impl Shared {
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

struct Conn<R, W> {
    rd: R,
    wr: W,
    inbuf: BytesMut,
    outbuf: BytesMut,
    decoder: Decoder,
    /// A 5.0 client's Maximum Packet Size.
    client_max_packet: usize,
    /// Topic aliases set up at a 5.0 client that takes them.
    aliases: Option<Box<wire::Aliases>>,
    /// Bytes the last read brought: how large the next buffer should be.
    last_read: usize,
    /// How much the next read offers room for.
    read_step: usize,
}

/// Why reading a packet failed.
enum ReadError {
    Closed,
    Io(std::io::Error),
    Protocol(Violation),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// A connection speaking 3.1.1 until its CONNECT says otherwise.
    fn new(rd: R, wr: W, max_packet: usize) -> Self {
        Conn {
            rd,
            wr,
            inbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            outbuf: BytesMut::new(),
            decoder: Decoder::new(Version::V311, max_packet),
            client_max_packet: usize::MAX,
            aliases: None,
            last_read: 0,
            read_step: INITIAL_BUFFER,
        }
    }

    /// The next whole packet already in the buffer, if any.
    fn decode(&mut self) -> Result<Option<In>, ReadError> {
        self.decoder
            .decode(&mut self.inbuf)
            .map_err(ReadError::Protocol)
    }

    fn version(&self) -> Version {
        self.decoder.version
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        // A read that took all it was offered asks for twice as much next
        // time (up to READ_CHUNK: fewer system calls for a busy
        // publisher); one whose last read was small goes back to a small
        // buffer (a thousand quiet devices would otherwise hold megabytes).
        let busy = self.last_read >= INITIAL_BUFFER;
        if !busy && self.inbuf.is_empty() && self.inbuf.capacity() > INITIAL_BUFFER {
            self.inbuf = BytesMut::with_capacity(INITIAL_BUFFER);
        }
        self.read_step = if !busy {
            INITIAL_BUFFER
        } else if self.last_read >= self.read_step {
            (self.read_step * 2).min(READ_CHUNK)
        } else {
            self.read_step.max(4096)
        };
        let step = self.read_step;
        if self.inbuf.capacity() - self.inbuf.len() < step / 4 {
            self.inbuf.reserve(step);
        }
        match self.rd.read_buf(&mut self.inbuf).await {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.last_read = n;
                Ok(())
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    fn queue(&mut self, out: &Out<'_>) {
        wire::encode(self.decoder.version, out, &mut self.outbuf);
    }

    /// What a 5.0 client's CONNECT asks of what it is sent.
    fn take_client_limits(&mut self, connect: &Hello, config: &BrokerConfig) {
        self.client_max_packet = connect.max_packet.map_or(usize::MAX, |m| m as usize);
        if config.send_topic_aliases {
            self.aliases = wire::Aliases::new(connect.topic_alias_max);
        }
    }

    /// Queues `p`; false if it is larger than the client's Maximum Packet
    /// Size, and so not sent.
    fn publish(&mut self, p: &wire::Publish) -> bool {
        let before = self.outbuf.len();
        let alias = self.aliases.as_deref().and_then(|a| a.choose(&p.topic));
        match alias {
            Some((alias, first)) => wire::encode_aliased(p, alias, first, &mut self.outbuf),
            None => self.queue(&Out::Publish(p)),
        }
        if self.outbuf.len() - before > self.client_max_packet {
            self.outbuf.truncate(before);
            return false; // and the alias, if new, was not given
        }
        if let (Some((alias, true)), Some(aliases)) = (alias, self.aliases.as_deref_mut()) {
            aliases.learned(&p.topic, alias);
        }
        true
    }

    /// CONNACK in the client's version: `refusal` is the 5.0 reason code
    /// (0x84, 0x85, 0x87), mapped to 3.1.1's return codes.
    fn connack(
        &mut self,
        refusal: Option<u8>,
        session_present: bool,
        props: Option<v5::ConnAckProperties>,
    ) {
        match self.decoder.version {
            Version::V311 => {
                let code = match refusal {
                    None => v4::ConnectReturnCode::Success,
                    Some(0x85) => v4::ConnectReturnCode::BadClientId,
                    Some(0x84) => v4::ConnectReturnCode::RefusedProtocolVersion,
                    Some(_) => v4::ConnectReturnCode::NotAuthorized,
                };
                let packet = v4::Packet::ConnAck(v4::ConnAck::new(code, session_present));
                let _ = packet.write(&mut self.outbuf, usize::MAX);
            }
            Version::V5 => {
                let code = match refusal {
                    None => v5::ConnectReturnCode::Success,
                    Some(0x85) => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    Some(0x84) => v5::ConnectReturnCode::UnsupportedProtocolVersion,
                    Some(0x81) => v5::ConnectReturnCode::MalformedPacket,
                    Some(0x82) => v5::ConnectReturnCode::ProtocolError,
                    Some(0x8C) => v5::ConnectReturnCode::BadAuthenticationMethod,
                    Some(_) => v5::ConnectReturnCode::NotAuthorized,
                };
                let packet = v5::Packet::ConnAck(v5::ConnAck {
                    session_present,
                    code,
                    properties: props,
                });
                let _ = packet.write(&mut self.outbuf, None);
            }
        }
    }

    /// Writes what is queued. Cancel-safe: what was written is taken off
    /// the buffer as it goes, so a flush begun again goes on from there.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbuf.is_empty() {
            // A small write after a burst gives the burst's buffer back.
            let give_back =
                self.outbuf.len() < INITIAL_BUFFER && self.outbuf.capacity() > 4 * INITIAL_BUFFER;
            // `write` (send(2)) rather than `write_all_buf`'s vectored
            // write: one buffer either way, and `writev` took about 0.4 µs
            // longer per delivery in a system-call trace.
            while !self.outbuf.is_empty() {
                let n = self.wr.write(&self.outbuf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                self.outbuf.advance(n);
            }
            if give_back {
                self.outbuf = BytesMut::new();
            } else {
                self.outbuf.clear();
            }
        }
        Ok(())
    }
}

/// Serves one client until it leaves or the broker closes it.
pub async fn serve<S>(
    stream: S,
    peer: Peer,
    address: String,
    listener: &'static str,
    shared: Arc<Shared>,
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
        will,
    } = admitted;
    let (outbox, mut inbox) = outbox::channel(shared.config.max_queued_messages);
    let (tx, rx) = oneshot::channel();
    let source = thing.as_ref().map(|d| d.thing_arn.clone());
    let info = ClientInfo {
        client_id: client_id.clone(),
        thing_name: thing.as_ref().map(|d| d.thing_name.clone()),
        thing_arn: thing.as_ref().map(|d| d.thing_arn.clone()),
        certificate_subject: subject,
        peer_address: address.clone(),
        listener,
        protocol_version: conn.version().level(),
        clean_session: !connect.persistent,
        clean_start: connect.clean_start,
        session_expiry: connect.session_expiry,
        will_delay: connect.will_delay,
        connected_at: SystemTime::now(),
    };
    if request::to_hub(
        &shared.hub,
        Request::Connect {
            info,
            will,
            outbox,
            reply: tx,
        },
    )
    .await
    .is_err()
    {
        return;
    }
    let Ok(connected) = rx.await else {
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
    let mut session = Session::new(
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
        session.push(&mut conn, m);
    }
    let end = session.run(&mut conn, &mut inbox, silence).await;
    let graceful = close(&mut conn, &end, &address, &client_id).await;
    let unacked = take_back(session.outbound, &mut inbox);
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

/// What was sent and not acknowledged, what waited behind the window,
/// then what the hub had put in the outbox: all of it, in that order, for
/// a persistent session to keep.
fn take_back(outbound: Outbound, inbox: &mut Inbox) -> Vec<Message> {
    let mut unacked = outbound.into_unacked();
    inbox.close();
    while let Some(out) = inbox.try_recv() {
        if let Outgoing::Deliver(m) = out {
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

/// The packet exchange after CONNACK.
struct Session<'a> {
    shared: &'a Shared,
    client_id: String,
    /// The client id as messages carry it (for "no local").
    origin: Arc<str>,
    /// The session expiry interval of CONNECT.
    expiry_at_connect: u32,
    /// The device's thing ARN, the source of what it publishes.
    source: Option<Arc<str>>,
    outbound: Outbound,
    /// The Receive Maximum a 5.0 client was given: its QoS 1/2 publishes
    /// not yet acknowledged (PUBACK, or PUBCOMP after its PUBREL) at most.
    receive_maximum: Option<usize>,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    incoming_qos2: HashSet<u16>,
    /// QoS 1/2 publishes handed to the hub, acknowledged to the client in
    /// order once the hub says they are safe (stored where they must be).
    /// Also the QoS 0 ones a congested hub holds (`holding`).
    unconfirmed: Unconfirmed,
    /// QoS 0 publishes in `unconfirmed` (`qos0_when_full =
    /// "hold-publishers"`): while any waits, nothing more is read from
    /// this client, which is what slows it down.
    holding: usize,
    /// Stored messages this client acknowledged, for the hub to delete.
    acked: Vec<u64>,
    /// Publishers' wakes taken from the inbox, fired once what was taken
    /// with them is written (`write_out`).
    wakes: Vec<Wake>,
}

/// The client's QoS 1/2 publishes awaiting acknowledgement, in order:
/// (packet id, QoS, what to wait for).
type Unconfirmed = VecDeque<(u16, QoS, Answer)>;

/// What a publish's acknowledgement waits for.
enum Answer {
    /// Nothing but the publishes before it.
    Now,
    /// The hub's word that it is stored where it must be (no answer: not).
    Stored(oneshot::Receiver<bool>),
    /// The word that it is on its way to its subscribers (`Hub::pass_on`;
    /// no answer: the hub has it, which is all it needs).
    Delivered(oneshot::Receiver<bool>),
}

/// Sleeps until `deadline`; made only when polled, so a disabled `select!`
/// branch costs no timer.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The oldest publish's answer, (packet id, QoS, safe to acknowledge).
async fn next_confirmed(unconfirmed: &mut Unconfirmed) -> (u16, QoS, bool) {
    std::future::poll_fn(|cx| {
        let Some((pkid, qos, answer)) = unconfirmed.front_mut() else {
            return Poll::Pending;
        };
        let safe = match answer {
            Answer::Stored(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(answer) => answer.unwrap_or(false),
                Poll::Pending => return Poll::Pending,
            },
            Answer::Delivered(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(answer) => answer.unwrap_or(true),
                Poll::Pending => return Poll::Pending,
            },
            Answer::Now => true,
        };
        let done = (*pkid, *qos, safe);
        unconfirmed.pop_front();
        Poll::Ready(done)
    })
    .await
}

impl<'a> Session<'a> {
    fn new(
        shared: &'a Shared,
        client_id: &str,
        expiry_at_connect: u32,
        source: Option<Arc<str>>,
        window: u16,
        receive_maximum: Option<usize>,
    ) -> Self {
        Session {
            shared,
            client_id: client_id.to_string(),
            origin: Arc::from(client_id),
            expiry_at_connect,
            source,
            outbound: Outbound::new(window),
            receive_maximum,
            incoming_qos2: HashSet::new(),
            unconfirmed: VecDeque::new(),
            holding: 0,
            acked: Vec::new(),
            wakes: Vec::new(),
        }
    }

    /// The packet exchange until it ends; wakes still held then go out at
    /// once (their publishers need not wait for the close).
    async fn run<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        inbox: &mut Inbox,
        keep_alive: Duration,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let end = self.exchange(conn, inbox, keep_alive).await;
        self.fire_wakes();
        end
    }

    async fn exchange<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        inbox: &mut Inbox,
        keep_alive: Duration,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut deadline = Instant::now() + keep_alive;
        // One timer for the keep-alive, re-armed when it fires early (the
        // deadline moves with every packet): a timer made anew on every
        // turn of the loop costs two trips into the runtime's timer wheel
        // per message.
        let keep_alive_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(keep_alive_timer);
        let packet_timeout = self.shared.config.packet_timeout();
        // When the first byte of a packet not yet whole arrived.
        let mut partial_since: Option<Instant> = None;
        loop {
            if let Some(end) = self.write_out(conn, inbox).await {
                return end;
            }
            // Packets already buffered first.
            let mut published = false;
            while self.holding == 0 {
                match conn.decode() {
                    Ok(Some(packet)) => {
                        deadline = Instant::now() + keep_alive;
                        published |= matches!(packet, In::Publish(_));
                        if let Some(end) = self.on_packet(conn, packet).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(ReadError::Protocol(v)) => return End::protocol(v),
                    Err(_) => return End::Abrupt("read failed".into()),
                }
            }
            // A publish whose acknowledgement waits for its delivery
            // (`Hub::pass_on`) lets the hub and its subscribers' tasks run
            // first: this task's own turn (the select below) comes after
            // the message is written, not in its way.
            if published && matches!(self.unconfirmed.back(), Some((_, _, Answer::Delivered(_)))) {
                tokio::task::yield_now().await;
            }
            if let Some(end) = self.write_out(conn, inbox).await {
                return end;
            }
            // Slow senders: a started packet must be whole within the timeout.
            partial_since = if conn.inbuf.is_empty() {
                None
            } else {
                partial_since.or_else(|| Some(Instant::now()))
            };
            let packet_deadline = partial_since.map(|t| t + packet_timeout);
            self.acked.append(&mut self.outbound.expired);
            if !self.acked.is_empty() {
                let ids = std::mem::take(&mut self.acked);
                if request::to_hub(&self.shared.hub, Request::Acked(ids))
                    .await
                    .is_err()
                {
                    return End::stopping();
                }
            }
            tokio::select! {
                (pkid, qos, safe) = next_confirmed(&mut self.unconfirmed), if !self.unconfirmed.is_empty() => {
                    if let Some(end) = self.confirmed(conn, pkid, qos, safe) {
                        return end;
                    }
                }
                read = conn.fill(), if self.holding == 0 => match read {
                    Ok(()) => {}
                    Err(ReadError::Closed) => return End::Abrupt("closed by the client without DISCONNECT".into()),
                    Err(ReadError::Io(e)) => return End::Abrupt(format!("read failed: {e}")),
                    Err(ReadError::Protocol(v)) => return End::protocol(v),
                },
                // What the hub has, in one poll: a Close first, behind or
                // not (slow client, operator); publishers' wakes, fired
                // once what came with them is written (`write_out`); and
                // a message unless the client is behind on its
                // acknowledgements (the hub then parks what comes and
                // slows the publishers).
                taken = inbox.take(!self.outbound.backlogged(), &mut self.wakes) => match taken {
                    Taken::Close(reason, why) => return End::Closed(reason, why),
                    Taken::Gone => return End::stopping(),
                    Taken::Wakes => {}
                    Taken::Message(m) => {
                        self.push(conn, m);
                        // Take whatever else is ready in one write.
                        while !self.outbound.backlogged() {
                            match inbox.try_recv() {
                                Some(Outgoing::Deliver(m)) => self.push(conn, m),
                                Some(Outgoing::Close(reason, why)) => return End::Closed(reason, why),
                                None => break,
                            }
                        }
                    }
                },
                () = sleep_until_some(packet_deadline), if packet_deadline.is_some() => {
                    return End::Closed(0x80, format!(
                        "a packet was not complete {packet_timeout:?} after its first byte (slow sender)"
                    ));
                }
                () = &mut keep_alive_timer, if !keep_alive.is_zero() => {
                    // Not read while held back: its keep-alive is ours to keep.
                    if self.holding > 0 {
                        deadline = Instant::now() + keep_alive;
                    }
                    if Instant::now() >= deadline {
                        return End::Closed(0x8D, format!("no packet within {keep_alive:?} (1.5 × keep-alive)"));
                    }
                    keep_alive_timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// The hub answered a publish: acknowledge it, or end the connection
    /// if it could not be stored; a held QoS 0 one lets reading resume.
    fn confirmed<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        pkid: u16,
        qos: QoS,
        safe: bool,
    ) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if qos == QoS::AtMostOnce {
            self.holding -= 1;
            return None;
        }
        if !safe {
            return Some(End::Closed(
                0x80,
                format!(
                    "QoS {} message {pkid} was not stored (the broker's store failed, or \
                     the router refused it: see the broker's and router's logs); not acknowledged",
                    qos as u8
                ),
            ));
        }
        match qos {
            QoS::AtLeastOnce => conn.queue(&Out::PubAck(pkid)),
            _ => conn.queue(&Out::PubRec(pkid)),
        }
        None
    }

    /// Writes what is queued for the client, then fires the publishers'
    /// wakes taken with it: woken now, a publisher's task runs once this
    /// one's turn is over, after the write. While a client that reads
    /// nothing keeps the write waiting, wakes go out at once, and a Close
    /// (an operator's, a group change's, the slow-client timeout's) still
    /// ends it: such a client holds no one else and stays within reach.
    async fn write_out<R, W>(&mut self, conn: &mut Conn<R, W>, inbox: &Inbox) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let wakes = &mut self.wakes;
            tokio::select! {
                biased;
                written = conn.flush() => {
                    self.fire_wakes();
                    return written.err().map(|e| End::Abrupt(format!("write failed: {e}")));
                }
                // The write waits: wakes already taken go out now.
                taken = async {
                    if wakes.is_empty() {
                        inbox.take(false, wakes).await
                    } else {
                        Taken::Wakes
                    }
                } => match taken {
                    Taken::Close(reason, why) => return Some(End::Closed(reason, why)),
                    Taken::Gone => return Some(End::stopping()),
                    Taken::Wakes => self.fire_wakes(),
                    // Not asked for (no room); queued behind the write if so.
                    Taken::Message(m) => self.push(conn, m),
                },
            }
        }
    }

    fn fire_wakes(&mut self) {
        for wake in self.wakes.drain(..) {
            wake.fire();
        }
    }

    /// Handles one packet from the client; `Some` ends the connection.
    async fn on_packet<R, W>(&mut self, conn: &mut Conn<R, W>, packet: In) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match packet {
            In::Publish(p) => return self.on_publish(conn, p).await,
            In::PubRel(pkid) => {
                self.incoming_qos2.remove(&pkid);
                conn.queue(&Out::PubComp(pkid));
            }
            In::PubAck(pkid) => match self.outbound.puback(pkid) {
                Ok(done) => self.done(conn, done),
                Err(e) => {
                    tracing::debug!(client_id = %verdant_common::telemetry::bounded(&self.client_id), "PUBACK for unknown id {}", e.0);
                }
            },
            In::PubRec(pkid) => match self.outbound.pubrec(pkid) {
                Ok(rel) => conn.queue(&Out::PubRel(rel)),
                Err(e) => {
                    tracing::debug!(client_id = %verdant_common::telemetry::bounded(&self.client_id), "PUBREC for unknown id {}", e.0);
                }
            },
            In::PubComp(pkid) => match self.outbound.pubcomp(pkid) {
                Ok(done) => self.done(conn, done),
                Err(e) => {
                    tracing::debug!(client_id = %verdant_common::telemetry::bounded(&self.client_id), "PUBCOMP for unknown id {}", e.0);
                }
            },
            In::Subscribe { pkid, filters } => return self.on_subscribe(conn, pkid, filters).await,
            In::Unsubscribe { pkid, filters } => {
                if filters.is_empty() {
                    return Some(End::protocol(Violation::protocol(
                        "UNSUBSCRIBE with no topic filter",
                    )));
                }
                let count = filters.len();
                let (tx, rx) = oneshot::channel();
                let request = Request::Unsubscribe {
                    client_id: self.client_id.clone(),
                    filters,
                    reply: tx,
                };
                if request::to_hub(&self.shared.hub, request).await.is_err() || rx.await.is_err() {
                    return Some(End::stopping());
                }
                conn.queue(&Out::UnsubAck { pkid, count });
            }
            In::PingReq => conn.queue(&Out::PingResp),
            In::Disconnect {
                will,
                session_expiry,
            } => {
                // MQTT-3.14.2-2: a session that ends with its connection
                // cannot be made to outlive it at DISCONNECT.
                if self.expiry_at_connect == 0 && session_expiry.is_some_and(|e| e > 0) {
                    return Some(End::protocol(Violation::protocol(
                        "a session expiry interval set at DISCONNECT after 0 at CONNECT",
                    )));
                }
                return Some(End::Graceful {
                    will,
                    session_expiry,
                });
            }
            In::Connect => return Some(End::protocol(Violation::protocol("a second CONNECT"))),
            In::ServerOnly(what) => {
                return Some(End::protocol(Violation::protocol(format!(
                    "a client may not send {what}"
                ))));
            }
        }
        None
    }

    /// A message the client finished acknowledging: send what waited
    /// behind it, and note its store row for deletion.
    fn done<R, W>(&mut self, conn: &mut Conn<R, W>, done: crate::outbound::Done)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.acked.extend(done.stored);
        for p in done.next {
            self.send(conn, p);
        }
    }

    /// Hands `m` to the outbound window and sends what it lets out.
    fn push<R, W>(&mut self, conn: &mut Conn<R, W>, m: Message)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if let Some(p) = self.outbound.push(m) {
            self.send(conn, p);
        }
    }

    /// Sends `p`. One larger than a 5.0 client's Maximum Packet Size is
    /// dropped as if sent and acknowledged (MQTT-3.1.2-25), which may let
    /// others out of the window.
    fn send<R, W>(&mut self, conn: &mut Conn<R, W>, p: wire::Publish)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Allocates only when one is refused.
        let mut pending = std::collections::VecDeque::new();
        let mut next = Some(p);
        while let Some(p) = next.take().or_else(|| pending.pop_front()) {
            if conn.publish(&p) {
                continue;
            }
            tracing::info!(
                client_id = self.client_id,
                topic = p.topic,
                "a message larger than the client's Maximum Packet Size ({} bytes): dropped",
                conn.client_max_packet
            );
            if p.qos != QoS::AtMostOnce
                && let Ok(done) = self.outbound.discard(p.pkid)
            {
                self.acked.extend(done.stored);
                pending.extend(done.next);
            }
        }
    }

    /// DISCONNECT 0x93 if a 5.0 client's QoS 1/2 publish just in (a QoS 2
    /// one already counted among the ids awaiting PUBREL) is one more than
    /// its Receive Maximum allows unacknowledged (MQTT 5.0 §4.9).
    fn past_receive_maximum(&self, qos: QoS) -> Option<End> {
        let max = self.receive_maximum.filter(|_| qos != QoS::AtMostOnce)?;
        let unacked_qos1 = self
            .unconfirmed
            .iter()
            .filter(|(_, q, _)| *q == QoS::AtLeastOnce)
            .count();
        let unacked =
            unacked_qos1 + usize::from(qos == QoS::AtLeastOnce) + self.incoming_qos2.len();
        (unacked > max).then(|| {
            let why =
                format!("more than the Receive Maximum of {max} QoS 1/2 publishes unacknowledged");
            End::Closed(0x93, why)
        })
    }

    async fn on_publish<R, W>(&mut self, conn: &mut Conn<R, W>, p: wire::Publish) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let limits = self.shared.config.topic_limits();
        if let Err(e) = topic::validate_name(&p.topic, limits) {
            return Some(End::Closed(
                0x90,
                format!(
                    "PUBLISH to `{}`: {e}",
                    verdant_common::telemetry::bounded(&p.topic)
                ),
            ));
        }
        let (pkid, qos) = (p.pkid, p.qos);
        if qos == QoS::ExactlyOnce && !self.incoming_qos2.insert(pkid) {
            // A resent QoS 2 message already handed over: only PUBREC again.
            conn.queue(&Out::PubRec(pkid));
            return None;
        }
        if let Some(end) = self.past_receive_maximum(qos) {
            return Some(end);
        }
        let mut message = Message {
            topic: p.topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            stored: None,
            props: p.props,
            from: Some(self.origin.clone()),
            dup: false,
        };
        let hold = qos == QoS::AtMostOnce && self.holds_qos0();
        // A plain QoS 0 message in local mode goes from this task to its
        // subscribers' outboxes when the hub is free (`hub::Shared`).
        if qos == QoS::AtMostOnce && !hold && !message.retain && !self.shared.routed() {
            match self.shared.hub_state.publish_in_place(message) {
                Ok(done) => {
                    if done.notice
                        && request::to_hub(&self.shared.hub, Request::InPlace)
                            .await
                            .is_err()
                    {
                        return Some(End::stopping());
                    }
                    if done.crowded {
                        tokio::task::yield_now().await;
                    }
                    return None;
                }
                Err(m) => message = m,
            }
        }
        self.shared.hub_state.publish_queued();
        // In routed mode the router may have to take the message too.
        let must_wait = hold
            || (qos != QoS::AtMostOnce
                && (self.shared.routed()
                    || self
                        .shared
                        .congested
                        .load(std::sync::atomic::Ordering::Acquire)
                    || self
                        .shared
                        .durable_subscriptions
                        .load(std::sync::atomic::Ordering::Acquire)
                        > 0));
        let (reply, delivered, answer) = if must_wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), None, Some(Answer::Stored(rx)))
        } else if qos != QoS::AtMostOnce && conn.inbuf.is_empty() {
            // The last publish read so far: acknowledged (with those before
            // it) once the hub has handed it on; see `Hub::pass_on`.
            let (tx, rx) = oneshot::channel();
            (None, Some(tx), Some(Answer::Delivered(rx)))
        } else {
            (None, None, None)
        };
        if request::to_hub(
            &self.shared.hub,
            Request::Publish {
                message,
                source: self.source.clone(),
                reply,
                delivered,
            },
        )
        .await
        .is_err()
        {
            return Some(End::stopping());
        }
        match answer {
            Some(answer) => {
                self.holding += usize::from(qos == QoS::AtMostOnce);
                self.unconfirmed.push_back((pkid, qos, answer));
            }
            // Acknowledgements go out in the order the publishes came in.
            None if qos != QoS::AtMostOnce && !self.unconfirmed.is_empty() => {
                self.unconfirmed.push_back((pkid, qos, Answer::Now));
            }
            None => match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => conn.queue(&Out::PubAck(pkid)),
                QoS::ExactlyOnce => conn.queue(&Out::PubRec(pkid)),
            },
        }
        None
    }

    /// Whether a QoS 0 publish waits for the hub's answer before this
    /// client is read further: under `hold-publishers`, while the hub has
    /// messages parked for subscribers that do not keep up.
    fn holds_qos0(&self) -> bool {
        self.shared.config.qos0_when_full == Qos0WhenFull::HoldPublishers
            && self
                .shared
                .congested
                .load(std::sync::atomic::Ordering::Acquire)
    }

    async fn on_subscribe<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        pkid: u16,
        filters: Vec<(String, QoS, wire::SubOptions)>,
    ) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let limits = self.shared.config.topic_limits();
        if filters.is_empty() {
            return Some(End::protocol(Violation::protocol(
                "SUBSCRIBE with no topic filter",
            )));
        }
        let mut codes = Vec::with_capacity(filters.len());
        let mut accepted = Vec::new();
        for (path, qos, options) in filters {
            if options.no_local && topic::shared(&path).is_some() {
                return Some(End::protocol(Violation::protocol(
                    "\"no local\" on a shared subscription (MQTT-3.8.3-4)",
                )));
            }
            let refusal = topic::validate_filter(&path, limits)
                .err()
                .map(|e| (Refusal::InvalidFilter, e.to_string()));
            match refusal {
                None => {
                    codes.push(Ok(qos));
                    accepted.push((path, qos, options));
                }
                Some((code, e)) => {
                    tracing::info!(
                        client_id = self.client_id,
                        "subscription `{path}` refused: {e}"
                    );
                    codes.push(Err(code));
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let request = Request::Subscribe {
            client_id: self.client_id.clone(),
            filters: accepted,
            reply: tx,
        };
        if request::to_hub(&self.shared.hub, request).await.is_err() {
            return Some(End::stopping());
        }
        match rx.await {
            Ok(Ok(retained)) => {
                conn.queue(&Out::SubAck { pkid, codes });
                for m in retained {
                    self.push(conn, m);
                }
            }
            Ok(Err(why)) => {
                tracing::info!(client_id = %verdant_common::telemetry::bounded(&self.client_id), "subscriptions refused: {why}");
                let codes = vec![Err(Refusal::Quota); codes.len()];
                conn.queue(&Out::SubAck { pkid, codes });
            }
            Err(_) => return Some(End::stopping()),
        }
        None
    }
}
