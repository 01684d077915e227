//! Both MQTT versions on the wire. What a client sends is decoded into one
//! shape the session handles ([`In`]); what the broker answers ([`Out`]) is
//! encoded for the client's version. MQTT 5.0's message properties travel
//! with a message as [`Props`] and reach 5.0 subscribers unaltered
//! (MQTT-3.3.2-4/-15/-17/-18, user properties in order). No I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rumqttc::QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::codec;

/// The topic aliases a 5.0 client may set (`Topic Alias Maximum`).
pub const TOPIC_ALIAS_MAX: u16 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// The 5.0 properties of an application message that the broker forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub payload_format_indicator: Option<u8>,
    /// The message expiry interval in seconds and when the broker received
    /// the message: subscribers get what is left of it (MQTT-3.3.2-6).
    pub expiry: Option<(u32, Instant)>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
    /// The identifiers of the receiving client's subscriptions that
    /// matched (set per delivery).
    pub subscription_ids: Vec<usize>,
}

impl Props {
    /// The properties worth keeping, `None` when there are none.
    fn from_v5(p: v5::PublishProperties, now: Instant) -> Option<Arc<Props>> {
        let props = Props {
            payload_format_indicator: p.payload_format_indicator,
            expiry: p.message_expiry_interval.map(|s| (s, now)),
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            subscription_ids: p.subscription_identifiers,
        };
        (props != Props::default()).then(|| Arc::new(props))
    }

    /// Seconds left of the expiry interval; `Some(0)` once expired.
    pub fn remaining(&self, now: Instant) -> Option<u32> {
        self.expiry.map(|(secs, since)| {
            let waited = u32::try_from(now.duration_since(since).as_secs()).unwrap_or(u32::MAX);
            secs.saturating_sub(waited)
        })
    }

    /// Whether the message expired and must no longer be delivered.
    pub fn expired(&self, now: Instant) -> bool {
        self.remaining(now) == Some(0)
    }

    /// The properties as the store keeps them: a 5.0 PUBLISH carrying
    /// them (the standard encoding), its expiry what is left of it now.
    pub fn to_bytes(&self) -> Vec<u8> {
        let packet = v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            retain: false,
            topic: Bytes::from_static(b"-"),
            pkid: 0,
            payload: Bytes::new(),
            properties: Some(self.to_v5(Instant::now())),
        });
        let mut buf = BytesMut::new();
        if let Err(e) = packet.write(&mut buf, None) {
            tracing::warn!("cannot encode message properties: {e}");
        }
        buf.to_vec()
    }

    /// What [`Props::to_bytes`] wrote; the expiry counts from now.
    pub fn from_bytes(bytes: &[u8]) -> Option<Arc<Props>> {
        let mut buf = BytesMut::from(bytes);
        match v5::Packet::read(&mut buf, None) {
            Ok(v5::Packet::Publish(p)) => p
                .properties
                .and_then(|props| Props::from_v5(props, Instant::now())),
            _ => None,
        }
    }

    fn to_v5(&self, now: Instant) -> v5::PublishProperties {
        v5::PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.remaining(now).map(|s| s.max(1)),
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers: self.subscription_ids.clone(),
            content_type: self.content_type.clone(),
        }
    }
}

/// MQTT 5.0 subscription options (3.1.1 subscriptions have the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOptions {
    /// Not sent the messages its own client publishes.
    pub no_local: bool,
    /// Forwarded messages keep their retain flag.
    pub retain_as_published: bool,
    /// 0: retained messages at subscribe; 1: only for a new subscription;
    /// 2: never.
    pub retain_handling: u8,
    /// Its subscription identifier (0: none).
    pub id: u32,
}

impl SubOptions {
    /// The options byte of SUBSCRIBE (MQTT 3.8.3.1) with `qos` in its low
    /// bits: what the store keeps.
    pub fn byte(self, qos: QoS) -> u8 {
        qos as u8
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling & 0b11) << 4
    }

    /// The options and QoS of an options byte.
    pub fn from_byte(b: u8) -> (Self, QoS) {
        let options = SubOptions {
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling: (b >> 4) & 0b11,
            id: 0,
        };
        (options, qos(b & 0b11))
    }
}

/// A PUBLISH in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    pub props: Option<Arc<Props>>,
}

/// What a client sent.
#[derive(Debug)]
pub enum In {
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS, SubOptions)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// DISCONNECT; `will` when a 5.0 client asks for its will anyway
    /// (0x04); a 5.0 client may change its session expiry interval.
    Disconnect {
        will: bool,
        session_expiry: Option<u32>,
    },
    Connect,
    /// A packet only a server sends.
    ServerOnly(&'static str),
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefusal {
    /// 5.0: 0x8F.
    InvalidFilter,
    /// 5.0: 0x97 (a limit of the session).
    Quota,
}

/// What the broker sends.
#[derive(Debug)]
pub enum Out<'a> {
    Publish(&'a Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck {
        pkid: u16,
        codes: Vec<Result<QoS, SubscribeRefusal>>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    /// 5.0 only: the server closes with this reason code.
    Disconnect(u8),
}

/// A protocol error: what to log, and the 5.0 DISCONNECT reason code.
#[derive(Debug)]
pub struct Violation {
    pub reason: u8,
    pub text: String,
}

impl Violation {
    pub fn malformed(text: impl Into<String>) -> Self {
        Violation {
            reason: 0x81,
            text: text.into(),
        }
    }
    pub fn protocol(text: impl Into<String>) -> Self {
        Violation {
            reason: 0x82,
            text: text.into(),
        }
    }
}

/// Decodes one client's packets: its version, and the 5.0 topic aliases
/// it set.
#[derive(Debug)]
pub struct Decoder {
    pub version: Version,
    pub max_packet: usize,
    aliases: HashMap<u16, String>,
}

impl Decoder {
    pub fn new(version: Version, max_packet: usize) -> Self {
        Decoder {
            version,
            max_packet,
            aliases: HashMap::new(),
        }
    }

    /// The next whole packet at the start of `buf` (consumed), `None` if
    /// more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<In>, Violation> {
        match self.version {
            Version::V311 => Ok(codec::decode(buf, self.max_packet)
                .map_err(Violation::malformed)?
                .map(from_v4)),
            Version::V5 => {
                let Some(packet) = codec::decode_v5(buf, self.max_packet)? else {
                    return Ok(None);
                };
                self.take_v5(packet).map(Some)
            }
        }
    }

    fn take_v5(&mut self, packet: v5::Packet) -> Result<In, Violation> {
        Ok(match packet {
            v5::Packet::Publish(p) => In::Publish(self.publish(p)?),
            v5::Packet::PubAck(a) => In::PubAck(a.pkid),
            v5::Packet::PubRec(r) => In::PubRec(r.pkid),
            v5::Packet::PubRel(r) => In::PubRel(r.pkid),
            v5::Packet::PubComp(c) => In::PubComp(c.pkid),
            v5::Packet::Subscribe(s) => {
                let given = s.properties.as_ref().and_then(|p| p.id);
                let id = match given.map(u32::try_from) {
                    None => 0,
                    Some(Ok(0)) => return Err(Violation::protocol("subscription identifier 0")),
                    Some(Ok(id)) if id < 1 << 28 => id,
                    Some(_) => {
                        return Err(Violation::malformed("subscription identifier too large"));
                    }
                };
                In::Subscribe {
                    pkid: s.pkid,
                    filters: s
                        .filters
                        .into_iter()
                        .map(|f| {
                            let options = SubOptions {
                                no_local: f.nolocal,
                                retain_as_published: f.preserve_retain,
                                retain_handling: match f.retain_forward_rule {
                                    v5::RetainForwardRule::OnEverySubscribe => 0,
                                    v5::RetainForwardRule::OnNewSubscribe => 1,
                                    v5::RetainForwardRule::Never => 2,
                                },
                                id,
                            };
                            (f.path, qos(f.qos as u8), options)
                        })
                        .collect(),
                }
            }
            v5::Packet::Unsubscribe(u) => In::Unsubscribe {
                pkid: u.pkid,
                filters: u.filters,
            },
            v5::Packet::PingReq(_) => In::PingReq,
            v5::Packet::Disconnect(d) => In::Disconnect {
                will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
                session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
            },
            v5::Packet::Connect(..) => In::Connect,
            v5::Packet::Auth(_) => {
                return Err(Violation::protocol(
                    "AUTH without an authentication method in CONNECT",
                ));
            }
            v5::Packet::ConnAck(_) => In::ServerOnly("CONNACK"),
            v5::Packet::SubAck(_) => In::ServerOnly("SUBACK"),
            v5::Packet::UnsubAck(_) => In::ServerOnly("UNSUBACK"),
            v5::Packet::PingResp(_) => In::ServerOnly("PINGRESP"),
        })
    }

    /// A 5.0 PUBLISH with its topic alias resolved (MQTT-3.3.2-7..12).
    fn publish(&mut self, p: v5::Publish) -> Result<Publish, Violation> {
        let mut topic = String::from_utf8(p.topic.to_vec())
            .map_err(|_| Violation::malformed("a topic name that is not UTF-8"))?;
        let mut props = p.properties.unwrap_or_default();
        if let Some(alias) = props.topic_alias.take() {
            if alias == 0 || alias > TOPIC_ALIAS_MAX {
                return Err(Violation {
                    reason: 0x94,
                    text: format!("topic alias {alias} outside 1..={TOPIC_ALIAS_MAX}"),
                });
            }
            if topic.is_empty() {
                topic = self.aliases.get(&alias).cloned().ok_or_else(|| {
                    Violation::protocol(format!("topic alias {alias} was never set"))
                })?;
            } else {
                self.aliases.insert(alias, topic.clone());
            }
        }
        if !props.subscription_identifiers.is_empty() {
            return Err(Violation::protocol(
                "a client PUBLISH with a subscription identifier",
            ));
        }
        Ok(Publish {
            topic,
            payload: p.payload,
            qos: qos(p.qos as u8),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            props: Props::from_v5(props, Instant::now()),
        })
    }
}

fn from_v4(packet: v4::Packet) -> In {
    match packet {
        v4::Packet::Publish(p) => In::Publish(Publish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            props: None,
        }),
        v4::Packet::PubAck(a) => In::PubAck(a.pkid),
        v4::Packet::PubRec(r) => In::PubRec(r.pkid),
        v4::Packet::PubRel(r) => In::PubRel(r.pkid),
        v4::Packet::PubComp(c) => In::PubComp(c.pkid),
        v4::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos, SubOptions::default()))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => In::PingReq,
        v4::Packet::Disconnect => In::Disconnect {
            will: false,
            session_expiry: None,
        },
        v4::Packet::Connect(_) => In::Connect,
        v4::Packet::ConnAck(_) => In::ServerOnly("CONNACK"),
        v4::Packet::SubAck(_) => In::ServerOnly("SUBACK"),
        v4::Packet::UnsubAck(_) => In::ServerOnly("UNSUBACK"),
        v4::Packet::PingResp => In::ServerOnly("PINGRESP"),
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos_v5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Appends `out` to `buf` in `version`'s encoding.
pub fn encode(version: Version, out: &Out<'_>, buf: &mut BytesMut) {
    // Our own packets are within the limits of the ones we accepted.
    let result = match (version, out) {
        (Version::V5, Out::Disconnect(reason)) => {
            buf.extend_from_slice(&[0xE0, 0x01, *reason]);
            Ok(())
        }
        // 3.1.1 has no DISCONNECT from the server: the socket just closes.
        (Version::V311, Out::Disconnect(_)) => Ok(()),
        (Version::V311, _) => v4_packet(out)
            .write(buf, usize::MAX)
            .map(drop)
            .map_err(|e| e.to_string()),
        (Version::V5, _) => v5_packet(out)
            .write(buf, None)
            .map(drop)
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!("cannot encode {out:?}: {e}");
    }
}

fn v4_packet(out: &Out<'_>) -> v4::Packet {
    match out {
        Out::Publish(p) => {
            let mut publish = v4::Publish::from_bytes(p.topic.clone(), p.qos, p.payload.clone());
            publish.retain = p.retain;
            publish.dup = p.dup;
            publish.pkid = p.pkid;
            v4::Packet::Publish(publish)
        }
        Out::PubAck(id) => v4::Packet::PubAck(v4::PubAck::new(*id)),
        Out::PubRec(id) => v4::Packet::PubRec(v4::PubRec::new(*id)),
        Out::PubRel(id) => v4::Packet::PubRel(v4::PubRel::new(*id)),
        Out::PubComp(id) => v4::Packet::PubComp(v4::PubComp::new(*id)),
        Out::SubAck { pkid, codes } => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|c| match c {
                    Ok(q) => v4::SubscribeReasonCode::Success(*q),
                    Err(_) => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Out::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Out::PingResp => v4::Packet::PingResp,
        Out::Disconnect(_) => unreachable!("3.1.1 has none"),
    }
}

fn v5_publish(p: &Publish) -> v5::Publish {
    v5::Publish {
        dup: p.dup,
        qos: qos_v5(p.qos),
        retain: p.retain,
        topic: Bytes::from(p.topic.clone()),
        pkid: p.pkid,
        payload: p.payload.clone(),
        properties: p.props.as_ref().map(|props| props.to_v5(Instant::now())),
    }
}

/// Appends `p` as a 5.0 PUBLISH with Topic Alias `alias`: with its topic
/// when `first` (which sets the alias up at the client), else with an empty
/// topic (MQTT 3.3.2.3.4).
pub fn encode_aliased(p: &Publish, alias: u16, first: bool, buf: &mut BytesMut) {
    let mut publish = v5_publish(p);
    publish
        .properties
        .get_or_insert_with(Default::default)
        .topic_alias = Some(alias);
    if !first {
        publish.topic = Bytes::new();
    }
    if let Err(e) = v5::Packet::Publish(publish).write(buf, None) {
        tracing::warn!(
            "cannot encode a publish on {}: {e}",
            verdant_common::telemetry::bounded(&p.topic)
        );
    }
}

/// The topic aliases a 5.0 connection has set up at its client (MQTT
/// 3.3.2.3.4): the first topics sent take aliases 1..=`max`, for the
/// life of the network connection.
#[derive(Debug)]
pub struct Aliases {
    max: u16,
    given: std::collections::HashMap<String, u16>,
}

impl Aliases {
    /// Up to `client_max` (the client's Topic Alias Maximum), at most
    /// [`TOPIC_ALIAS_MAX`]; `None` if the client takes none.
    pub fn new(client_max: u16) -> Option<Box<Self>> {
        (client_max > 0).then(|| {
            Box::new(Aliases {
                max: client_max.min(TOPIC_ALIAS_MAX),
                given: std::collections::HashMap::new(),
            })
        })
    }

    /// The alias to send `topic` with and whether the client learns it
    /// now; `None` once every alias is taken by other topics.
    pub fn choose(&self, topic: &str) -> Option<(u16, bool)> {
        match self.given.get(topic) {
            Some(&alias) => Some((alias, false)),
            None => {
                let next = u16::try_from(self.given.len() + 1).ok()?;
                (next <= self.max).then_some((next, true))
            }
        }
    }

    /// Records that the client learned `alias` for `topic`.
    pub fn learned(&mut self, topic: &str, alias: u16) {
        self.given.insert(topic.to_string(), alias);
    }
}

fn v5_packet(out: &Out<'_>) -> v5::Packet {
    match out {
        Out::Publish(p) => v5::Packet::Publish(v5_publish(p)),
        Out::PubAck(id) => v5::Packet::PubAck(v5::PubAck::new(*id, None)),
        Out::PubRec(id) => v5::Packet::PubRec(v5::PubRec::new(*id, None)),
        Out::PubRel(id) => v5::Packet::PubRel(v5::PubRel::new(*id, None)),
        Out::PubComp(id) => v5::Packet::PubComp(v5::PubComp::new(*id, None)),
        Out::SubAck { pkid, codes } => v5::Packet::SubAck(v5::SubAck {
            pkid: *pkid,
            return_codes: codes
                .iter()
                .map(|c| match c {
                    Ok(q) => v5::SubscribeReasonCode::Success(qos_v5(*q)),
                    Err(SubscribeRefusal::InvalidFilter) => {
                        v5::SubscribeReasonCode::TopicFilterInvalid
                    }
                    Err(SubscribeRefusal::Quota) => v5::SubscribeReasonCode::QuotaExceeded,
                })
                .collect(),
            properties: None,
        }),
        Out::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }),
        Out::PingResp => v5::Packet::PingResp(v5::PingResp),
        Out::Disconnect(_) => unreachable!("written by encode"),
    }
}
