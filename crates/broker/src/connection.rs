//! One client connection: CONNECT and authentication, then the MQTT 3.1.1
//! packet exchange, with the hub on one side and the socket on the other.
//! Packets are decoded with rumqttc's codec after a strict check of what
//! it leaves lenient (fixed-header flags, CONNECT flags, protocol level).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec;
use crate::config::BrokerConfig;
use crate::hub::{self, ClientInfo, Message, Outgoing};
use crate::identity::{Device, Devices, Peer};
use crate::outbound::Outbound;
use crate::topic;

/// What a connection's buffers start with: most devices send small packets
/// now and then, and a thousand idle connections should cost little.
const INITIAL_BUFFER: usize = 256;
/// How much a busy connection reads at a time.
const READ_CHUNK: usize = 4096;

/// What every connection shares.
pub struct Shared {
    pub config: BrokerConfig,
    /// The deployed group's devices; replaced when the router swaps in a
    /// new group's table.
    pub devices: Arc<std::sync::RwLock<Devices>>,
    pub hub: mpsc::Sender<hub::Request>,
    /// The hub's count of persistent sessions' subscriptions: while zero,
    /// QoS 1/2 publishes are acknowledged without waiting for the hub.
    pub durable_subscriptions: Arc<std::sync::atomic::AtomicUsize>,
    /// For client ids the broker assigns (empty id, clean session).
    pub assigned: AtomicU64,
}

impl Shared {
    pub fn routed(&self) -> bool {
        self.config.mode == crate::config::Mode::Routed
    }
}

/// Why a connection ended, for the log and the will.
#[derive(Debug)]
enum End {
    /// DISCONNECT: the will is discarded.
    Graceful,
    /// Anything else: the will is published.
    Abrupt(String),
}

struct Conn<R, W> {
    rd: R,
    wr: W,
    inbuf: BytesMut,
    outbuf: BytesMut,
    max_packet: usize,
}

/// Why reading a packet failed.
enum ReadError {
    Closed,
    Io(std::io::Error),
    Protocol(String),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// The next whole packet already in the buffer, if any.
    fn decode(&mut self) -> Result<Option<Packet>, ReadError> {
        codec::decode(&mut self.inbuf, self.max_packet).map_err(ReadError::Protocol)
    }

    async fn read_packet(&mut self) -> Result<Packet, ReadError> {
        loop {
            if let Some(p) = self.decode()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        // Idle connections keep small buffers; busy ones read in 4 KiB steps.
        if self.inbuf.capacity() - self.inbuf.len() < READ_CHUNK / 4 {
            self.inbuf.reserve(READ_CHUNK);
        }
        match self.rd.read_buf(&mut self.inbuf).await {
            Ok(0) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    fn queue(&mut self, packet: &Packet) {
        // Our own packets are within the limits of the ones we accepted.
        if let Err(e) = packet.write(&mut self.outbuf, usize::MAX) {
            tracing::warn!("cannot encode {packet:?}: {e}");
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbuf.is_empty() {
            self.wr.write_all(&self.outbuf).await?;
            self.outbuf.clear();
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
    let mut conn = Conn {
        rd,
        wr,
        inbuf: BytesMut::with_capacity(INITIAL_BUFFER),
        outbuf: BytesMut::with_capacity(INITIAL_BUFFER),
        max_packet: shared.config.max_packet_size,
    };
    let Some(connect) = read_connect(&mut conn, &address, &shared).await else {
        return;
    };
    let Some(admitted) = admit(&mut conn, &connect, &peer, &address, &shared).await else {
        return;
    };
    let Admitted {
        client_id,
        thing,
        subject,
        will,
    } = admitted;
    let (outbox, mut inbox) = mpsc::channel(shared.config.max_queued_messages.max(1));
    let (tx, rx) = oneshot::channel();
    let source = thing.as_ref().map(|d| d.thing_arn.clone());
    let info = ClientInfo {
        client_id: client_id.clone(),
        thing_name: thing.as_ref().map(|d| d.thing_name.clone()),
        thing_arn: thing.as_ref().map(|d| d.thing_arn.clone()),
        certificate_subject: subject,
        peer_address: address.clone(),
        listener,
        protocol_version: 4,
        clean_session: connect.clean_session,
        connected_at: SystemTime::now(),
    };
    if shared
        .hub
        .send(hub::Request::Connect {
            info,
            will,
            outbox,
            reply: tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let Ok(connected) = rx.await else {
        return;
    };
    tracing::info!(%address, client_id, listener, clean = connect.clean_session, "client connected");
    conn.queue(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        connected.session_present,
    )));
    let mut outbound = Outbound::new(shared.config.max_inflight);
    for m in connected.queued {
        if let Some(p) = outbound.push(m) {
            conn.queue(&Packet::Publish(p));
        }
    }

    let keep_alive = Duration::from_secs(u64::from(connect.keep_alive)) * 3 / 2;
    let mut session = Session {
        shared: &shared,
        client_id: client_id.clone(),
        source,
        outbound,
        incoming_qos2: HashSet::new(),
        unconfirmed: FuturesOrdered::new(),
        acked: Vec::new(),
    };
    let end = session.run(&mut conn, &mut inbox, keep_alive).await;
    let _ = conn.flush().await;
    let graceful = matches!(end, End::Graceful);
    match &end {
        End::Graceful => tracing::info!(%address, client_id, "client disconnected"),
        End::Abrupt(why) => tracing::info!(%address, client_id, "connection ended: {why}"),
    }
    let _ = shared
        .hub
        .send(hub::Request::Disconnect {
            client_id,
            connection_id: connected.connection_id,
            graceful,
            unacked: session.outbound.into_unacked(),
        })
        .await;
}

/// What admission decided about a CONNECT.
struct Admitted {
    client_id: String,
    thing: Option<Device>,
    subject: Option<String>,
    will: Option<Message>,
}

/// Authenticates the client and checks its client id and will; refusals
/// get their CONNACK and a log line naming the certificate subject.
async fn admit<R, W>(
    conn: &mut Conn<R, W>,
    connect: &rumqttc::mqttbytes::v4::Connect,
    peer: &Peer,
    address: &str,
    shared: &Shared,
) -> Option<Admitted>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let subject = match peer {
        Peer::Tls(p) => Some(p.subject.clone()),
        Peer::Plain => None,
    };
    let admitted = shared.devices.read().expect("devices lock").admit(
        peer,
        &connect.client_id,
        shared.config.require_client_id_match,
        shared.routed(),
    );
    let thing = match admitted {
        Ok(thing) => thing,
        Err(refusal) => {
            tracing::warn!(
                %address,
                client_id = connect.client_id,
                subject = subject.as_deref().unwrap_or("-"),
                "refused: {}", refusal.0
            );
            conn.queue(&Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::NotAuthorized,
                false,
            )));
            let _ = conn.flush().await;
            return None;
        }
    };
    let mut client_id = connect.client_id.clone();
    if client_id.is_empty() {
        if !connect.clean_session {
            conn.queue(&Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::BadClientId,
                false,
            )));
            let _ = conn.flush().await;
            return None;
        }
        client_id = format!(
            "verdant-{}",
            shared.assigned.fetch_add(1, Ordering::Relaxed)
        );
    }
    let limits = shared.config.topic_limits();
    let will = match connect.last_will.clone() {
        Some(w) => {
            if let Err(e) = topic::validate_name(&w.topic, limits) {
                tracing::info!(%address, client_id, "will topic `{}`: {e}; closing", w.topic);
                return None;
            }
            Some(Message {
                topic: w.topic,
                payload: w.message,
                qos: w.qos,
                retain: w.retain,
                stored: None,
            })
        }
        None => None,
    };

    Some(Admitted {
        client_id,
        thing,
        subject,
        will,
    })
}

/// Reads and checks CONNECT: within the connect timeout, protocol level 4
/// (5.0 and 3.1 are refused with their CONNACK), flags well formed.
async fn read_connect<R, W>(
    conn: &mut Conn<R, W>,
    address: &str,
    shared: &Shared,
) -> Option<rumqttc::mqttbytes::v4::Connect>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connect = tokio::time::timeout(shared.config.connect_timeout(), async {
        // Look at the protocol level and flags before the v3.1.1 codec does.
        let (level, flags) = loop {
            if conn.inbuf.first().is_some_and(|b| b >> 4 != 1) {
                return Err("the first packet is not CONNECT".to_string());
            }
            if let Some(found) = codec::peek_connect(&conn.inbuf) {
                break found;
            }
            if conn.inbuf.len() > 16 {
                return Err("malformed CONNECT".to_string());
            }
            conn.fill()
                .await
                .map_err(|_| "closed before CONNECT".to_string())?;
        };
        Ok((level, flags, conn.read_packet().await))
    })
    .await;
    let (level, flags, packet) = match connect {
        Err(_) => {
            tracing::info!(%address, "no CONNECT within {:?}; closing", shared.config.connect_timeout());
            return None;
        }
        Ok(Err(reason)) => {
            tracing::info!(%address, "{reason}; closing");
            return None;
        }
        Ok(Ok(x)) => x,
    };
    if level != 4 {
        // 5.0 arrives in a later slice; 3.1 (level 3) is not supported.
        tracing::warn!(%address, level, "unsupported MQTT protocol level; refusing");
        let refusal: &[u8] = if level == 5 {
            &[0x20, 0x03, 0x00, 0x84, 0x00]
        } else {
            &[0x20, 0x02, 0x00, 0x01]
        };
        let _ = conn.wr.write_all(refusal).await;
        return None;
    }
    let will_flag = flags & 0b100 != 0;
    let bad_flags = flags & 1 != 0
        || (!will_flag && flags & 0b0011_1000 != 0)
        || (flags & 0b1000_0000 == 0 && flags & 0b0100_0000 != 0);
    let connect = match packet {
        Ok(Packet::Connect(c)) if !bad_flags => c,
        Ok(_) => {
            tracing::info!(%address, "malformed CONNECT flags {flags:#010b}; closing");
            return None;
        }
        Err(ReadError::Protocol(e)) => {
            tracing::info!(%address, "malformed CONNECT: {e}; closing");
            return None;
        }
        Err(_) => return None,
    };
    Some(connect)
}

/// The packet exchange after CONNACK.
struct Session<'a> {
    shared: &'a Shared,
    client_id: String,
    /// The device's thing ARN, the source of what it publishes.
    source: Option<Arc<str>>,
    outbound: Outbound,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    incoming_qos2: HashSet<u16>,
    /// QoS 1/2 publishes handed to the hub, acknowledged to the client in
    /// order once the hub says they are safe (stored where they must be).
    unconfirmed: FuturesOrdered<Confirmation>,
    /// Stored messages this client acknowledged, for the hub to delete.
    acked: Vec<u64>,
}

/// The hub's word on one client publish: (packet id, QoS, safe to acknowledge).
type Confirmation = Pin<Box<dyn Future<Output = (u16, QoS, bool)> + Send>>;

impl Session<'_> {
    async fn run<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        inbox: &mut mpsc::Receiver<Outgoing>,
        keep_alive: Duration,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut deadline = Instant::now() + keep_alive;
        let packet_timeout = self.shared.config.packet_timeout();
        // When the first byte of a packet not yet whole arrived.
        let mut partial_since: Option<Instant> = None;
        loop {
            if let Err(e) = conn.flush().await {
                return End::Abrupt(format!("write failed: {e}"));
            }
            // Packets already buffered first.
            loop {
                match conn.decode() {
                    Ok(Some(packet)) => {
                        deadline = Instant::now() + keep_alive;
                        if let Some(end) = self.on_packet(conn, packet).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(ReadError::Protocol(e)) => {
                        return End::Abrupt(format!("protocol error: {e}"));
                    }
                    Err(_) => return End::Abrupt("read failed".into()),
                }
            }
            if let Err(e) = conn.flush().await {
                return End::Abrupt(format!("write failed: {e}"));
            }
            // Slow senders: a started packet must be whole within the timeout.
            partial_since = if conn.inbuf.is_empty() {
                None
            } else {
                partial_since.or_else(|| Some(Instant::now()))
            };
            let packet_deadline = partial_since.map(|t| t + packet_timeout);
            if !self.acked.is_empty() {
                let ids = std::mem::take(&mut self.acked);
                if self
                    .shared
                    .hub
                    .send(hub::Request::Acked(ids))
                    .await
                    .is_err()
                {
                    return End::Abrupt("broker stopping".into());
                }
            }
            tokio::select! {
                Some((pkid, qos, safe)) = self.unconfirmed.next(), if !self.unconfirmed.is_empty() => {
                    if !safe {
                        return End::Abrupt(format!(
                            "the broker could not store QoS {} message {pkid}; not acknowledged",
                            qos as u8
                        ));
                    }
                    match qos {
                        QoS::AtLeastOnce => conn.queue(&Packet::PubAck(PubAck::new(pkid))),
                        _ => conn.queue(&Packet::PubRec(PubRec::new(pkid))),
                    }
                }
                read = conn.fill() => match read {
                    Ok(()) => {}
                    Err(ReadError::Closed) => return End::Abrupt("closed by the client without DISCONNECT".into()),
                    Err(ReadError::Io(e)) => return End::Abrupt(format!("read failed: {e}")),
                    Err(ReadError::Protocol(e)) => return End::Abrupt(e),
                },
                out = inbox.recv() => match out {
                    Some(Outgoing::Deliver(m)) => {
                        if let Some(p) = self.outbound.push(m) {
                            conn.queue(&Packet::Publish(p));
                        }
                        // Take whatever else is ready in one write.
                        while let Ok(Outgoing::Deliver(m)) = inbox.try_recv() {
                            if let Some(p) = self.outbound.push(m) {
                                conn.queue(&Packet::Publish(p));
                            }
                        }
                    }
                    Some(Outgoing::Close(why)) => return End::Abrupt(why),
                    None => return End::Abrupt("broker stopping".into()),
                },
                () = tokio::time::sleep_until(packet_deadline.unwrap_or(deadline)), if packet_deadline.is_some() => {
                    return End::Abrupt(format!(
                        "a packet was not complete {packet_timeout:?} after its first byte (slow sender)"
                    ));
                }
                () = tokio::time::sleep_until(deadline), if !keep_alive.is_zero() => {
                    return End::Abrupt(format!("no packet within {keep_alive:?} (1.5 × keep-alive)"));
                }
            }
        }
    }

    /// Handles one packet from the client; `Some` ends the connection.
    async fn on_packet<R, W>(&mut self, conn: &mut Conn<R, W>, packet: Packet) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match packet {
            Packet::Publish(p) => return self.on_publish(conn, p).await,
            Packet::PubRel(r) => {
                self.incoming_qos2.remove(&r.pkid);
                conn.queue(&Packet::PubComp(PubComp::new(r.pkid)));
            }
            Packet::PubAck(a) => match self.outbound.puback(a.pkid) {
                Ok(done) => self.done(conn, done),
                Err(e) => {
                    tracing::debug!(client_id = self.client_id, "PUBACK for unknown id {}", e.0);
                }
            },
            Packet::PubRec(r) => match self.outbound.pubrec(r.pkid) {
                Ok(rel) => conn.queue(&Packet::PubRel(rel)),
                Err(e) => {
                    tracing::debug!(client_id = self.client_id, "PUBREC for unknown id {}", e.0);
                }
            },
            Packet::PubComp(c) => match self.outbound.pubcomp(c.pkid) {
                Ok(done) => self.done(conn, done),
                Err(e) => {
                    tracing::debug!(client_id = self.client_id, "PUBCOMP for unknown id {}", e.0);
                }
            },
            Packet::Subscribe(s) => return self.on_subscribe(conn, s).await,
            Packet::Unsubscribe(u) => {
                if u.topics.is_empty() {
                    return Some(End::Abrupt("UNSUBSCRIBE with no topic filter".into()));
                }
                let (tx, rx) = oneshot::channel();
                let request = hub::Request::Unsubscribe {
                    client_id: self.client_id.clone(),
                    filters: u.topics,
                    reply: tx,
                };
                if self.shared.hub.send(request).await.is_err() || rx.await.is_err() {
                    return Some(End::Abrupt("broker stopping".into()));
                }
                conn.queue(&Packet::UnsubAck(UnsubAck::new(u.pkid)));
            }
            Packet::PingReq => conn.queue(&Packet::PingResp),
            Packet::Disconnect => return Some(End::Graceful),
            Packet::Connect(_) => return Some(End::Abrupt("a second CONNECT".into())),
            other => {
                return Some(End::Abrupt(format!("a client may not send {other:?}")));
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
        for p in done.next {
            conn.queue(&Packet::Publish(p));
        }
        self.acked.extend(done.stored);
    }

    async fn on_publish<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        p: rumqttc::mqttbytes::v4::Publish,
    ) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let limits = self.shared.config.topic_limits();
        if let Err(e) = topic::validate_name(&p.topic, limits) {
            return Some(End::Abrupt(format!("PUBLISH to `{}`: {e}", p.topic)));
        }
        let (pkid, qos) = (p.pkid, p.qos);
        if qos == QoS::ExactlyOnce && !self.incoming_qos2.insert(pkid) {
            // A resent QoS 2 message already handed over: only PUBREC again.
            conn.queue(&Packet::PubRec(PubRec::new(pkid)));
            return None;
        }
        let message = Message {
            topic: p.topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            stored: None,
        };
        // In routed mode the router may have to take the message too.
        let must_wait = qos != QoS::AtMostOnce
            && (self.shared.routed()
                || self
                    .shared
                    .durable_subscriptions
                    .load(std::sync::atomic::Ordering::Acquire)
                    > 0);
        let (reply, confirmation) = if must_wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self
            .shared
            .hub
            .send(hub::Request::Publish {
                message,
                source: self.source.clone(),
                reply,
            })
            .await
            .is_err()
        {
            return Some(End::Abrupt("broker stopping".into()));
        }
        match confirmation {
            Some(rx) => self.unconfirmed.push_back(Box::pin(async move {
                (pkid, qos, rx.await.unwrap_or(false))
            })),
            // Acknowledgements go out in the order the publishes came in.
            None if qos != QoS::AtMostOnce && !self.unconfirmed.is_empty() => self
                .unconfirmed
                .push_back(Box::pin(async move { (pkid, qos, true) })),
            None => match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => conn.queue(&Packet::PubAck(PubAck::new(pkid))),
                QoS::ExactlyOnce => conn.queue(&Packet::PubRec(PubRec::new(pkid))),
            },
        }
        None
    }

    async fn on_subscribe<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        s: rumqttc::mqttbytes::v4::Subscribe,
    ) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let limits = self.shared.config.topic_limits();
        if s.filters.is_empty() {
            return Some(End::Abrupt("SUBSCRIBE with no topic filter".into()));
        }
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut accepted = Vec::new();
        for f in s.filters {
            match topic::validate_filter(&f.path, limits) {
                Ok(()) => {
                    codes.push(SubscribeReasonCode::Success(f.qos));
                    accepted.push((f.path, f.qos));
                }
                Err(e) => {
                    tracing::info!(
                        client_id = self.client_id,
                        "subscription `{}` refused: {e}",
                        f.path
                    );
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let request = hub::Request::Subscribe {
            client_id: self.client_id.clone(),
            filters: accepted,
            reply: tx,
        };
        if self.shared.hub.send(request).await.is_err() {
            return Some(End::Abrupt("broker stopping".into()));
        }
        match rx.await {
            Ok(Ok(retained)) => {
                conn.queue(&Packet::SubAck(SubAck::new(s.pkid, codes)));
                for m in retained {
                    if let Some(p) = self.outbound.push(m) {
                        conn.queue(&Packet::Publish(p));
                    }
                }
            }
            Ok(Err(why)) => {
                tracing::info!(client_id = self.client_id, "subscriptions refused: {why}");
                let failed = vec![SubscribeReasonCode::Failure; codes.len()];
                conn.queue(&Packet::SubAck(SubAck::new(s.pkid, failed)));
            }
            Err(_) => return Some(End::Abrupt("broker stopping".into())),
        }
        None
    }
}
