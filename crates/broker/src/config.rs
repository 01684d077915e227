//! `[broker]` in the core config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

use crate::topic::TopicLimits;

/// Who decides where a device's message goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Devices of the group publish and subscribe freely among themselves,
    /// like a plain broker (still authenticated).
    Local,
    /// The deployed group's subscription table decides, as in Greengrass:
    /// the router hands the broker its table, the broker delivers
    /// device-to-device messages itself and sends the rest to the router.
    #[default]
    Routed,
}

/// What a QoS 0 message does when a connected subscriber's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Qos0WhenFull {
    /// Dropped for that subscriber, counted (`dropped_qos0`); publishers
    /// and the other subscribers go on at full speed.
    #[default]
    Drop,
    /// Waits for that subscriber, and its publisher is read no further
    /// until it is taken: publishers slow to what the slowest subscriber
    /// of their messages takes, as with Mosquitto.
    HoldPublishers,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub mode: Mode,
    /// Threads that run the broker's connections and hub: 0, one per CPU
    /// (the most throughput); 1, one thread for everything, as Mosquitto
    /// (the smallest footprint); N, that many.
    pub worker_threads: usize,
    /// Routed mode: messages waiting for the router (while it is away, or
    /// has not acknowledged them) at most; past it their copies for the
    /// router's targets are dropped (counted) and devices acknowledged.
    pub router_backlog: usize,
    /// QoS 0 for a subscriber that does not keep up: `drop` or
    /// `hold-publishers` (see [`Qos0WhenFull`]).
    pub qos0_when_full: Qos0WhenFull,
    /// Greengrass's rule: the MQTT client id must equal the device's thing name.
    pub require_client_id_match: bool,
    /// Largest packet accepted, checked before its body is read.
    pub max_packet_size: usize,
    /// A socket that sends no CONNECT within this is closed.
    pub connect_timeout_secs: u64,
    /// A packet must be whole this long after its first byte arrived, or
    /// the connection is closed (slow senders, whatever their keep-alive).
    pub packet_timeout_secs: u64,
    pub max_topic_bytes: usize,
    pub max_topic_levels: usize,
    pub max_subscriptions_per_client: usize,
    /// QoS 1/2 messages sent to a client and not yet acknowledged.
    pub max_inflight: u16,
    /// The Receive Maximum announced to 5.0 clients: QoS 1/2 publishes a
    /// client may have unacknowledged; past it the broker disconnects it
    /// with 0x93. 3.1.1 has no such limit.
    pub receive_maximum: u16,
    /// The longest keep-alive a 5.0 client may use, in seconds: one asking
    /// for more (or for none, 0) is told this one in CONNACK (Server Keep
    /// Alive) and held to it. 0: each client's own.
    pub max_keep_alive_secs: u16,
    /// Topic aliases towards 5.0 clients whose CONNECT takes them (up to
    /// 64 each). `false`: full topic names always, as Mosquitto sends.
    pub send_topic_aliases: bool,
    /// Messages held for a client (offline, or beyond its inflight window);
    /// past this the oldest QoS 0 message is dropped, then new QoS 1/2
    /// messages are refused (counted).
    pub max_queued_messages: usize,
    /// Topic and payload bytes a persistent session may hold while its
    /// client is away; past it new QoS 1/2 messages are refused (counted).
    pub max_queued_bytes: usize,
    /// A connected client that has messages parked for it (its outbox
    /// full) and takes none of them for this long is disconnected, so its
    /// publishers are not held back for ever. 0: never.
    pub slow_client_timeout_secs: u64,
    /// Keep persistent sessions and retained messages on disk
    /// (`<root>/data/broker/sessions.db`), so they survive a restart.
    pub persistence: bool,
    pub tls: TlsListener,
    pub tcp: TcpListener,
    pub websocket: WebSocketListener,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            mode: Mode::Routed,
            worker_threads: 0,
            router_backlog: 10_000,
            qos0_when_full: Qos0WhenFull::Drop,
            require_client_id_match: true,
            max_packet_size: 256 * 1024,
            connect_timeout_secs: 10,
            packet_timeout_secs: 30,
            max_topic_bytes: 1024,
            max_topic_levels: 32,
            max_subscriptions_per_client: 256,
            max_inflight: 32,
            receive_maximum: 100,
            max_keep_alive_secs: 0,
            send_topic_aliases: true,
            max_queued_messages: 1000,
            max_queued_bytes: 8 * 1024 * 1024,
            slow_client_timeout_secs: 60,
            persistence: true,
            tls: TlsListener::default(),
            tcp: TcpListener::default(),
            websocket: WebSocketListener::default(),
        }
    }
}

/// The mutual-TLS listener devices use.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsListener {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Relative paths are under the core's root.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The group CA: client certificates must chain to it.
    pub client_ca: PathBuf,
}

impl Default for TlsListener {
    fn default() -> Self {
        TlsListener {
            enabled: true,
            bind: ([0, 0, 0, 0], 8883).into(),
            certificate: "config/certs/server.pem".into(),
            private_key: "config/certs/server.key".into(),
            client_ca: "config/certs/group-ca.pem".into(),
        }
    }
}

/// A plain TCP listener for labs and tests: no certificate, so clients are
/// not authenticated. Off by default; loopback only unless forced.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpListener {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Allow a non-loopback address, accepting unauthenticated devices
    /// from the network.
    pub allow_non_loopback: bool,
}

impl Default for TcpListener {
    fn default() -> Self {
        TcpListener {
            enabled: false,
            bind: ([127, 0, 0, 1], 1883).into(),
            allow_non_loopback: false,
        }
    }
}

/// MQTT over WebSocket. With `tls` (the default) it is WebSocket over
/// mutual TLS with the certificates of `[broker.tls]`, so devices
/// authenticate as on 8883; without, it is a lab listener like the plain
/// one (loopback only unless forced). Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketListener {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub tls: bool,
    /// The HTTP path clients connect to.
    pub path: String,
    /// Without TLS: allow a non-loopback address.
    pub allow_non_loopback: bool,
}

impl Default for WebSocketListener {
    fn default() -> Self {
        WebSocketListener {
            enabled: false,
            bind: ([0, 0, 0, 0], 8083).into(),
            tls: true,
            path: "/mqtt".into(),
            allow_non_loopback: false,
        }
    }
}

impl BrokerConfig {
    pub fn topic_limits(&self) -> TopicLimits {
        TopicLimits {
            max_bytes: self.max_topic_bytes,
            max_levels: self.max_topic_levels,
        }
    }

    pub fn queue_limits(&self) -> crate::hub::QueueLimits {
        crate::hub::QueueLimits {
            messages: self.max_queued_messages,
            bytes: self.max_queued_bytes,
            stuck_after: (self.slow_client_timeout_secs > 0)
                .then(|| Duration::from_secs(self.slow_client_timeout_secs)),
            hold_qos0: self.qos0_when_full == Qos0WhenFull::HoldPublishers,
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn packet_timeout(&self) -> Duration {
        Duration::from_secs(self.packet_timeout_secs)
    }
}

impl Section for BrokerConfig {
    const NAME: &'static str = "broker";

    /// Problems that stop the broker from starting.
    fn check(&self) -> Result<(), Invalid> {
        if self.tcp.enabled && !self.tcp.bind.ip().is_loopback() && !self.tcp.allow_non_loopback {
            return Err(Invalid::new(
                "broker.tcp.bind",
                format!(
                    "{} is not a loopback address; the plain listener has no authentication \
                     (set broker.tcp.allow_non_loopback = true to force it)",
                    self.tcp.bind
                ),
            ));
        }
        let ws = &self.websocket;
        if ws.enabled && !ws.tls && !ws.bind.ip().is_loopback() && !ws.allow_non_loopback {
            return Err(Invalid::new(
                "broker.websocket.bind",
                format!(
                    "{} is not a loopback address; WebSocket without TLS has no authentication \
                     (set broker.websocket.tls = true, or allow_non_loopback = true to force it)",
                    ws.bind
                ),
            ));
        }
        if !ws.path.starts_with('/') {
            return Err(Invalid::new("broker.websocket.path", "must start with `/`"));
        }
        if !self.tls.enabled && !self.tcp.enabled && !ws.enabled {
            return Err(Invalid::new("broker", "no listener is enabled"));
        }
        if self.max_packet_size < 64 || self.max_packet_size > 268_435_455 {
            return Err(Invalid::new(
                "broker.max_packet_size",
                "must be between 64 and 268435455 bytes",
            ));
        }
        if self.max_inflight == 0 {
            return Err(Invalid::new("broker.max_inflight", "must be at least 1"));
        }
        if self.receive_maximum == 0 {
            return Err(Invalid::new("broker.receive_maximum", "must be at least 1"));
        }
        Ok(())
    }
}
