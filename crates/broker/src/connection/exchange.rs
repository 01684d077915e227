//! A connection's packet exchange after CONNACK: the state it keeps (QoS
//! 1/2 ids in and out, publishes awaiting the hub's word, publishers'
//! wakes), the loop that reads, writes and takes what the hub sends, and
//! what goes out to the client. The packet handlers are `handlers.rs`.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Common, Conn, End, ReadError};
use crate::message::{Message, Notification};
use crate::outbound::Outbound;
use crate::outbox::{Inbox, Taken, Wake};
use crate::request::{self, Request};
use crate::wire::{self, In, Out};

/// The packet exchange after CONNACK.
pub(super) struct Exchange<'a> {
    pub(super) shared: &'a Common,
    pub(super) client_id: String,
    /// The client id as messages carry it (for "no local").
    pub(super) origin: Arc<str>,
    /// The session expiry interval of CONNECT.
    pub(super) expiry_at_connect: u32,
    /// The device's thing ARN, the source of what it publishes.
    pub(super) source: Option<Arc<str>>,
    pub(super) outbound: Outbound,
    /// The Receive Maximum a 5.0 client was given: its QoS 1/2 publishes
    /// not yet acknowledged (PUBACK, or PUBCOMP after its PUBREL) at most.
    pub(super) receive_maximum: Option<usize>,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    pub(super) incoming_qos2: HashSet<u16>,
    /// QoS 1/2 publishes handed to the hub, acknowledged to the client in
    /// order once the hub says they are safe (stored where they must be).
    /// Also the QoS 0 ones a congested hub holds (`holding`).
    pub(super) unconfirmed: Unconfirmed,
    /// QoS 0 publishes in `unconfirmed` (`qos0_when_full =
    /// "hold-publishers"`): while any waits, nothing more is read from
    /// this client, which is what slows it down.
    pub(super) holding: usize,
    /// Stored messages this client acknowledged, for the hub to delete.
    pub(super) acked: Vec<u64>,
    /// Publishers' wakes taken from the inbox, fired once what was taken
    /// with them is written (`write_out`).
    pub(super) wakes: Vec<Wake>,
}

/// The client's QoS 1/2 publishes awaiting acknowledgement, in order:
/// (packet id, QoS, what to wait for).
pub(super) type Unconfirmed = VecDeque<(u16, QoS, Answer)>;

/// What a publish's acknowledgement waits for.
pub(super) enum Answer {
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

impl<'a> Exchange<'a> {
    pub(super) fn new(
        shared: &'a Common,
        client_id: &str,
        expiry_at_connect: u32,
        source: Option<Arc<str>>,
        window: u16,
        receive_maximum: Option<usize>,
    ) -> Self {
        Exchange {
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
    pub(super) async fn run<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        inbox: &mut Inbox,
        keep_alive: Duration,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let end = self.packet_loop(conn, inbox, keep_alive).await;
        self.fire_wakes();
        end
    }

    pub(super) async fn packet_loop<R, W>(
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
            // Packets already buffered first. Inline rather than a step of
            // its own: an async fn around `on_packet` adds its frame to every
            // connection's task (88 bytes in a dev build, by `-Zprint-type-sizes`).
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
            if let Some(end) = self.report_acked().await {
                return end;
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
                taken = inbox.take(!self.outbound.backlogged(), &mut self.wakes) => {
                    if let Some(end) = self.on_taken(conn, inbox, taken) {
                        return end;
                    }
                }
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

    /// Tells the hub which stored messages the client acknowledged (or
    /// that expired in the outbound window), for it to delete.
    async fn report_acked(&mut self) -> Option<End> {
        self.acked.append(&mut self.outbound.expired);
        if self.acked.is_empty() {
            return None;
        }
        let ids = std::mem::take(&mut self.acked);
        request::to_hub(&self.shared.hub, Request::Acked(ids))
            .await
            .is_err()
            .then(End::stopping)
    }

    /// What the hub had in one poll (see `Inbox::take`): a Close ends the
    /// connection; a message goes out with whatever else is ready, in one
    /// write, as long as the client keeps up with its acknowledgements.
    fn on_taken<R, W>(&mut self, conn: &mut Conn<R, W>, inbox: &Inbox, taken: Taken) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match taken {
            Taken::Close(reason, why) => return Some(End::Closed(reason, why)),
            Taken::Gone => return Some(End::stopping()),
            Taken::Wakes => {}
            Taken::Message(m) => {
                self.push(conn, m);
                while !self.outbound.backlogged() {
                    match inbox.try_recv() {
                        Some(Notification::Deliver(m)) => self.push(conn, m),
                        Some(Notification::Close(reason, why)) => {
                            return Some(End::Closed(reason, why));
                        }
                        None => break,
                    }
                }
            }
        }
        None
    }

    /// The hub answered a publish: acknowledge it, or end the connection
    /// if it could not be stored; a held QoS 0 one lets reading resume.
    pub(super) fn confirmed<R, W>(
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
    pub(super) async fn write_out<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        inbox: &Inbox,
    ) -> Option<End>
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

    pub(super) fn fire_wakes(&mut self) {
        for wake in self.wakes.drain(..) {
            wake.fire();
        }
    }

    /// A message the client finished acknowledging: send what waited
    /// behind it, and note its store row for deletion.
    pub(super) fn done<R, W>(&mut self, conn: &mut Conn<R, W>, done: crate::outbound::Done)
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
    pub(super) fn push<R, W>(&mut self, conn: &mut Conn<R, W>, m: Message)
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
    pub(super) fn send<R, W>(&mut self, conn: &mut Conn<R, W>, p: wire::Publish)
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
}
