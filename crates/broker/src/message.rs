//! What the hub, the connections, the link and the store pass each other:
//! an application message, what the hub tells a connection, and what is
//! known of a client. Plain data, no logic, so that the modules that carry
//! it need not know the hub.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use rumqttc::QoS;

/// An application message as the hub routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Its row in the store, for a QoS 1/2 message queued for a persistent
    /// session: deleted when the subscriber acknowledges it.
    pub stored: Option<u64>,
    /// MQTT 5.0 properties from its publisher, for 5.0 subscribers.
    pub props: Option<Arc<crate::wire::Props>>,
    /// The client id of the local client that published it, for 5.0's
    /// "no local" subscription option.
    pub from: Option<Arc<str>>,
    /// It may have been sent to this subscriber before (in flight when its
    /// connection ended, or handed to a connection before a restart): sent
    /// again with DUP set (MQTT-3.3.1-1).
    pub dup: bool,
}

/// What the hub tells a connection.
#[derive(Debug)]
pub enum Notification {
    /// Send this to the client (QoS already the granted one).
    Deliver(Message),
    /// Close the connection (taken over by a new one, or an operator),
    /// with the MQTT 5.0 DISCONNECT reason code and why.
    Close(u8, String),
}

/// What operators see of a client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub thing_name: Option<String>,
    /// The device's thing ARN: the source of its messages in routed mode.
    pub thing_arn: Option<Arc<str>>,
    pub certificate_subject: Option<String>,
    /// The presented certificate's id (TLS only).
    pub certificate_id: Option<String>,
    pub peer_address: String,
    pub listener: &'static str,
    pub protocol_version: u8,
    /// The session ends with the connection (3.1.1 clean session; 5.0
    /// session expiry interval 0).
    pub clean_session: bool,
    /// The connection starts a new session (3.1.1 clean session; 5.0
    /// clean start).
    pub clean_start: bool,
    /// Seconds a persistent session outlives its connection
    /// ([`NEVER`](crate::hub::NEVER) for 3.1.1's persistent sessions).
    pub session_expiry: u32,
    /// Seconds the will waits after the client vanished (5.0).
    pub will_delay: u32,
    pub connected_at: SystemTime,
}

/// A client's summary for the gRPC API.
#[derive(Debug, Clone)]
pub struct ClientSummary {
    pub info: ClientInfo,
    pub connected: bool,
    pub subscriptions: Vec<(String, QoS)>,
    pub queued: usize,
}

/// Counts operators and benchmarks read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub published: u64,
    pub delivered: u64,
    /// QoS 0 deliveries dropped because a client's outbox was full.
    pub dropped_qos0: u64,
    /// QoS 1/2 deliveries refused because a session's queue was full.
    pub dropped_queue_full: u64,
    /// Routed mode: messages no route of the table allowed.
    pub no_route: u64,
}

/// A new connection's session, as CONNACK and the connection need it.
#[derive(Debug)]
pub struct Connected {
    pub connection_id: u64,
    pub session_present: bool,
    /// Messages queued while the client was away, to send first.
    pub queued: Vec<Message>,
    /// The CONNACK waits for the batch's commit: this connection ended a
    /// persistent session, whose end must be on disk before the client is
    /// told it has none, or brought a will, which must survive a crash
    /// from the moment the client is told it is connected, or takes queued
    /// messages, which must be marked sent before they go. Otherwise it
    /// goes at once: a session kept is durable before anything that
    /// depends on it is acknowledged (a SUBACK, a PUBACK), because commits
    /// go in order.
    pub wait_for_commit: bool,
}
