//! CONNECT: read within the connect timeout and checked (protocol level,
//! flags, 5.0 properties) into one `Hello` for both versions, then the
//! client admitted or refused with its CONNACK.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{Common, Conn};
use crate::codec;
use crate::hub;
use crate::identity::{Device, Peer};
use crate::message::Message;
use crate::topic;
use crate::wire::{self, Props, Version};

/// A CONNECT of either version, as the session needs it.
pub(super) struct Hello {
    pub(super) client_id: String,
    /// Start a new session (3.1.1 clean session, 5.0 clean start).
    pub(super) clean_start: bool,
    /// The session outlives the connection (3.1.1: not clean; 5.0: a
    /// session expiry interval over 0).
    pub(super) persistent: bool,
    /// For how long, in seconds (3.1.1: `hub::NEVER`).
    pub(super) session_expiry: u32,
    /// 5.0 Will Delay Interval.
    pub(super) will_delay: u32,
    pub(super) keep_alive: u16,
    pub(super) will: Option<wire::Publish>,
    /// 5.0 Receive Maximum; 3.1.1 clients have none.
    pub(super) receive_maximum: u16,
    /// 5.0 Maximum Packet Size the client accepts.
    pub(super) max_packet: Option<u32>,
    /// 5.0 Topic Alias Maximum: aliases the client takes from us (0: none).
    pub(super) topic_alias_max: u16,
    /// A well-formed CONNECT the broker still refuses: the 5.0 CONNACK
    /// reason code and why.
    pub(super) refusal: Option<(u8, String)>,
}

impl Hello {
    fn from_v4(c: v4::Connect) -> Self {
        Hello {
            client_id: c.client_id,
            clean_start: c.clean_session,
            persistent: !c.clean_session,
            session_expiry: if c.clean_session { 0 } else { hub::NEVER },
            will_delay: 0,
            keep_alive: c.keep_alive,
            will: c.last_will.map(|w| wire::Publish {
                topic: w.topic,
                payload: w.message,
                qos: w.qos,
                retain: w.retain,
                dup: false,
                pkid: 0,
                props: None,
            }),
            receive_maximum: u16::MAX,
            max_packet: None,
            topic_alias_max: 0,
            refusal: None,
        }
    }

    fn from_v5(c: v5::Connect, will: Option<v5::LastWill>) -> Result<Self, String> {
        let props = c.properties.unwrap_or_default();
        let refusal = if props.receive_maximum == Some(0) {
            Some((0x82, "Receive Maximum 0 (MQTT-3.1.2-21)".to_string()))
        } else {
            props.authentication_method.as_ref().map(|method| {
                let why = format!("enhanced authentication ({method}) is not supported");
                (0x8C, why)
            })
        };
        let will_delay = will
            .as_ref()
            .and_then(|w| w.properties.as_ref())
            .and_then(|p| p.delay_interval)
            .unwrap_or(0);
        let will = match will {
            Some(w) => {
                let topic = String::from_utf8(w.topic.to_vec())
                    .map_err(|_| "a will topic that is not UTF-8".to_string())?;
                let props = w
                    .properties
                    .map(|p| Props {
                        payload_format_indicator: p.payload_format_indicator,
                        expiry: p
                            .message_expiry_interval
                            .map(|s| (s, std::time::Instant::now())),
                        content_type: p.content_type,
                        response_topic: p.response_topic,
                        correlation_data: p.correlation_data,
                        user_properties: p.user_properties,
                        subscription_ids: Vec::new(),
                    })
                    .unwrap_or_default();
                Some(wire::Publish {
                    topic,
                    payload: w.message,
                    qos: match w.qos as u8 {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        _ => QoS::ExactlyOnce,
                    },
                    retain: w.retain,
                    dup: false,
                    pkid: 0,
                    props: (props != Props::default()).then(|| Arc::new(props)),
                })
            }
            None => None,
        };
        Ok(Hello {
            client_id: c.client_id,
            clean_start: c.clean_start,
            persistent: props.session_expiry_interval.unwrap_or(0) > 0,
            session_expiry: props.session_expiry_interval.unwrap_or(0),
            will_delay,
            keep_alive: c.keep_alive,
            will,
            receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
            max_packet: props.max_packet_size,
            topic_alias_max: props.topic_alias_max.unwrap_or(0),
            refusal,
        })
    }
}

/// The keep-alive the broker holds a 5.0 client to instead of the one it
/// asked for (`max_keep_alive_secs`; MQTT-3.2.2-21): when it asked for
/// more, or for none.
fn server_keep_alive(asked: u16, max: u16) -> Option<u16> {
    (max > 0 && (asked == 0 || asked > max)).then_some(max)
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// CONNACK for an admitted client; how long it may then stay silent:
    /// 1.5 × its keep-alive, or for a 5.0 client the broker's cap when it
    /// asked for more (3.1.1 has no way to tell a client: it keeps its own).
    pub(super) fn accept(
        &mut self,
        shared: &Common,
        connect: &Hello,
        assigned: Option<String>,
        session_present: bool,
    ) -> Duration {
        let mut keep_alive = connect.keep_alive;
        if self.version() == Version::V311 {
            self.connack(None, session_present, None);
        } else {
            let capped = server_keep_alive(keep_alive, shared.config.max_keep_alive_secs);
            let props = connack_properties(shared, assigned, capped);
            self.connack(None, session_present, Some(props));
            keep_alive = capped.unwrap_or(keep_alive);
        }
        Duration::from_secs(u64::from(keep_alive)) * 3 / 2
    }
}

/// What a 5.0 client learns of this server in CONNACK.
fn connack_properties(
    shared: &Common,
    assigned: Option<String>,
    server_keep_alive: Option<u16>,
) -> v5::ConnAckProperties {
    v5::ConnAckProperties {
        // In routed mode the table decides who hears what: nothing is retained.
        retain_available: Some(u8::from(!shared.routed())),
        max_packet_size: u32::try_from(shared.config.max_packet_size).ok(),
        assigned_client_identifier: assigned,
        topic_alias_max: Some(wire::TOPIC_ALIAS_MAX),
        subscription_identifiers_available: Some(1),
        shared_subscription_available: Some(1),
        session_expiry_interval: None,
        receive_max: Some(shared.config.receive_maximum),
        max_qos: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        server_keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

/// What admission decided about a CONNECT.
pub(super) struct Admitted {
    pub(super) client_id: String,
    /// The broker chose the client id (the client sent an empty one).
    pub(super) assigned: bool,
    pub(super) thing: Option<Device>,
    pub(super) subject: Option<String>,
    /// The presented certificate's id (TLS only).
    pub(super) certificate_id: Option<String>,
    pub(super) will: Option<Message>,
}

/// Authenticates the client and checks its client id and will; refusals
/// get their CONNACK and a log line naming the certificate subject.
pub(super) async fn admit<R, W>(
    conn: &mut Conn<R, W>,
    connect: &Hello,
    peer: &Peer,
    address: &str,
    shared: &Common,
) -> Option<Admitted>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (subject, certificate_id) = match peer {
        Peer::Tls(p) => (Some(p.subject.clone()), Some(p.certificate_id.clone())),
        Peer::Plain => (None, None),
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
            conn.connack(Some(0x87), false, None);
            let _ = conn.flush().await;
            return None;
        }
    };
    let mut client_id = connect.client_id.clone();
    let assigned = client_id.is_empty();
    if assigned {
        // 3.1.1 assigns an id only to a clean session (MQTT-3.1.3-8); 5.0
        // to anyone, and says which in CONNACK.
        if connect.persistent && conn.version() == Version::V311 {
            conn.connack(Some(0x85), false, None);
            let _ = conn.flush().await;
            return None;
        }
        client_id = format!(
            "verdant-{}",
            shared.assigned.fetch_add(1, Ordering::Relaxed)
        );
    }
    let limits = shared.config.topic_limits();
    let will = match &connect.will {
        Some(w) => {
            if let Err(e) = topic::validate_name(&w.topic, limits) {
                tracing::info!(
                    %address,
                    client_id = %verdant_common::telemetry::bounded(&client_id),
                    "will topic `{}`: {e}; closing",
                    verdant_common::telemetry::bounded(&w.topic)
                );
                return None;
            }
            Some(Message {
                topic: w.topic.clone(),
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
                stored: None,
                props: w.props.clone(),
                from: None,
                dup: false,
            })
        }
        None => None,
    };

    Some(Admitted {
        client_id,
        assigned,
        thing,
        subject,
        certificate_id,
        will,
    })
}

/// Reads and checks CONNECT: within the connect timeout, protocol level 4
/// (3.1.1) or 5 (5.0; 3.1 is refused with its CONNACK), flags well formed.
/// Sets the connection's version.
pub(super) async fn read_connect<R, W>(
    conn: &mut Conn<R, W>,
    address: &str,
    shared: &Common,
) -> Option<Hello>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connect = tokio::time::timeout(shared.config.connect_timeout(), async {
        // Look at the protocol level and flags before a codec does.
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
        if level == 5 {
            conn.decoder.version = Version::V5;
        }
        if level != 4 && level != 5 {
            return Ok((level, flags, None));
        }
        loop {
            let found = match conn.decoder.version {
                Version::V311 => codec::decode(&mut conn.inbuf, conn.decoder.max_packet).map(|p| {
                    p.map(|p| match p {
                        v4::Packet::Connect(c) => Ok(Hello::from_v4(c)),
                        _ => Err("not CONNECT".to_string()),
                    })
                }),
                Version::V5 => codec::decode_v5(&mut conn.inbuf, conn.decoder.max_packet)
                    .map_err(|v| v.text)
                    .map(|p| {
                        p.map(|p| match p {
                            v5::Packet::Connect(c, will, _login) => Hello::from_v5(c, will),
                            _ => Err("not CONNECT".to_string()),
                        })
                    }),
            };
            match found {
                Ok(Some(Ok(hello))) => return Ok((level, flags, Some(hello))),
                Ok(Some(Err(e))) | Err(e) => return Err(format!("malformed CONNECT: {e}")),
                Ok(None) => conn
                    .fill()
                    .await
                    .map_err(|_| "closed before CONNECT was whole".to_string())?,
            }
        }
    })
    .await;
    let (level, flags, hello) = match connect {
        Err(_) => {
            tracing::info!(%address, "no CONNECT within {:?}; closing", shared.config.connect_timeout());
            return None;
        }
        Ok(Err(reason)) => {
            tracing::info!(%address, "{reason}; closing");
            // A 5.0 client hears why (MQTT-3.1.4-1/2: CONNACK before closing).
            if conn.version() == Version::V5 {
                conn.connack(Some(0x81), false, None);
                let _ = conn.flush().await;
            }
            return None;
        }
        Ok(Ok(x)) => x,
    };
    let Some(hello) = hello else {
        // 3.1 (level 3) and anything else: 3.1.1's "unacceptable protocol version".
        tracing::warn!(%address, level, "unsupported MQTT protocol level; refusing");
        let _ = conn.wr.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
        return None;
    };
    let will_flag = flags & 0b100 != 0;
    let bad_flags = flags & 1 != 0
        || (!will_flag && flags & 0b0011_1000 != 0)
        || (conn.version() == Version::V311
            && flags & 0b1000_0000 == 0
            && flags & 0b0100_0000 != 0);
    if bad_flags {
        tracing::info!(%address, "malformed CONNECT flags {flags:#010b}; closing");
        if conn.version() == Version::V5 {
            conn.connack(Some(0x81), false, None);
            let _ = conn.flush().await;
        }
        return None;
    }
    if let Some((code, why)) = &hello.refusal {
        tracing::info!(%address, client_id = %verdant_common::telemetry::bounded(&hello.client_id), "refused: {why}");
        conn.connack(Some(*code), false, None);
        let _ = conn.flush().await;
        return None;
    }
    Some(hello)
}
