//! What a connection does with each packet from its client: PUBLISH (to
//! the hub, or to subscribers in place), its acknowledgements, SUBSCRIBE,
//! UNSUBSCRIBE, PINGREQ and DISCONNECT.

use std::ops::ControlFlow;

use rumqttc::QoS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::End;
use super::conn::Conn;
use super::exchange::{Answer, Exchange};
use crate::config::Qos0WhenFull;
use crate::hub::InPlace;
use crate::message::Message;
use crate::request::{self, Request};
use crate::topic;
use crate::wire::{self, In, Out, SubscribeRefusal, Violation};

/// For a publish handed to the hub: the sender of its "stored" answer,
/// the sender of its "on its way" answer, and what its acknowledgement
/// waits for.
type PublishAnswer = (
    Option<oneshot::Sender<bool>>,
    Option<oneshot::Sender<bool>>,
    Option<Answer>,
);

impl Exchange<'_> {
    /// Handles one packet from the client; `Some` ends the connection.
    pub(super) async fn on_packet<R, W>(&mut self, conn: &mut Conn<R, W>, packet: In) -> Option<End>
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

    /// A PUBLISH from the client: checked, handed to its subscribers in
    /// place or to the hub, and acknowledged now or once the hub answers.
    async fn on_publish<R, W>(&mut self, conn: &mut Conn<R, W>, p: wire::Publish) -> Option<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if let ControlFlow::Break(end) = self.check_publish(conn, &p) {
            return end;
        }
        let (pkid, qos) = (p.pkid, p.qos);
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
        // subscribers' outboxes when the hub is free (`hub::SharedHub`).
        if qos == QoS::AtMostOnce && !hold && !message.retain && !self.shared.routed() {
            match self.shared.hub_state.publish_in_place(message) {
                Ok(done) => return self.handed_on_in_place(done).await,
                Err(m) => message = m,
            }
        }
        self.shared.hub_state.publish_queued();
        let (reply, delivered, answer) = self.answer_for(conn, qos, hold);
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
        self.acknowledge(conn, pkid, qos, answer);
        None
    }

    /// What a PUBLISH is checked for before it goes anywhere: its topic
    /// name, a QoS 2 one resent (only PUBREC again) and the Receive
    /// Maximum. `Break` if it goes no further (with the end, if any).
    fn check_publish<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        p: &wire::Publish,
    ) -> ControlFlow<Option<End>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let limits = self.shared.config.topic_limits();
        if let Err(e) = topic::validate_name(&p.topic, limits) {
            return ControlFlow::Break(Some(End::Closed(
                0x90,
                format!(
                    "PUBLISH to `{}`: {e}",
                    verdant_common::telemetry::bounded(&p.topic)
                ),
            )));
        }
        if p.qos == QoS::ExactlyOnce && !self.incoming_qos2.insert(p.pkid) {
            // A resent QoS 2 message already handed over: only PUBREC again.
            conn.queue(&Out::PubRec(p.pkid));
            return ControlFlow::Break(None);
        }
        match self.past_receive_maximum(p.qos) {
            Some(end) => ControlFlow::Break(Some(end)),
            None => ControlFlow::Continue(()),
        }
    }

    /// After a QoS 0 message went to its subscribers from this task: tell
    /// the hub's task now and then, and give way to a crowded subscriber.
    async fn handed_on_in_place(&mut self, done: InPlace) -> Option<End> {
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
        None
    }

    /// What a publish handed to the hub waits for before it is
    /// acknowledged: the hub's word that it is stored (`reply`), its
    /// delivery (`delivered`, see `Hub::pass_on`), or nothing.
    fn answer_for<R, W>(&self, conn: &Conn<R, W>, qos: QoS, hold: bool) -> PublishAnswer
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
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
        if must_wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), None, Some(Answer::Stored(rx)))
        } else if qos != QoS::AtMostOnce && conn.inbuf.is_empty() {
            // The last publish read so far: acknowledged (with those before
            // it) once the hub has handed it on; see `Hub::pass_on`.
            let (tx, rx) = oneshot::channel();
            (None, Some(tx), Some(Answer::Delivered(rx)))
        } else {
            (None, None, None)
        }
    }

    /// Acknowledges a publish handed to the hub now, or notes what its
    /// acknowledgement waits for (a held QoS 0 one: reading waits too).
    fn acknowledge<R, W>(
        &mut self,
        conn: &mut Conn<R, W>,
        pkid: u16,
        qos: QoS,
        answer: Option<Answer>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
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
                .map(|e| (SubscribeRefusal::InvalidFilter, e.to_string()));
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
                let codes = vec![Err(SubscribeRefusal::Quota); codes.len()];
                conn.queue(&Out::SubAck { pkid, codes });
            }
            Err(_) => return Some(End::stopping()),
        }
        None
    }
}
