//! A bare MQTT 5.0 client on a plain socket: rumqttc's 5.0 codec writes
//! and reads one packet at a time and nothing is acknowledged unless the
//! test does it, so a test controls every step of a flow.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, Disconnect, Filter, Packet, PubAck, PubComp, PubRec,
    PubRel, Publish, Subscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one whole 5.0 packet; `None` once the broker closed the socket.
pub async fn read_v5(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        // rumqttc wants a properties length after the reason code, which
        // 5.0 leaves out when there are none (MQTT 3.14.2.2.1).
        if buf.starts_with(&[0xE0, 0x01]) && buf.len() >= 3 {
            let reason = buf.split_to(3)[2];
            let reason_code = reason.try_into().expect("a DISCONNECT reason code");
            return Some(Packet::Disconnect(Disconnect {
                reason_code,
                properties: None,
            }));
        }
        match Packet::read(buf, None) {
            Ok(p) => return Some(p),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                    .await
                    .expect("a packet within 10 s")
                    .unwrap_or(0);
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects to `port` as `client_id` with `props`; the CONNACK too.
    pub async fn connect(
        port: u16,
        client_id: &str,
        clean_start: bool,
        keep_alive: u16,
        props: ConnectProperties,
    ) -> (Raw, ConnAck) {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut raw = Raw {
            s,
            buf: BytesMut::new(),
        };
        raw.send(Packet::Connect(
            Connect {
                keep_alive,
                client_id: client_id.into(),
                clean_start,
                properties: Some(props),
            },
            None,
            None,
        ))
        .await;
        match raw.next().await {
            Packet::ConnAck(ack) => (raw, ack),
            other => panic!("CONNACK expected, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, None).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    /// The next packet; the broker must not have closed.
    pub async fn next(&mut self) -> Packet {
        read_v5(&mut self.s, &mut self.buf)
            .await
            .expect("the broker closed the connection")
    }

    /// The next packet, `None` once the broker closed.
    pub async fn next_or_closed(&mut self) -> Option<Packet> {
        read_v5(&mut self.s, &mut self.buf).await
    }

    /// The next PUBLISH.
    pub async fn next_publish(&mut self) -> Publish {
        match self.next().await {
            Packet::Publish(p) => p,
            other => panic!("PUBLISH expected, got {other:?}"),
        }
    }

    /// Checks that nothing arrives for `d`.
    pub async fn nothing_for(&mut self, d: Duration) {
        assert!(self.buf.is_empty(), "unread bytes {:?}", self.buf);
        let mut chunk = [0u8; 1024];
        if let Ok(r) = tokio::time::timeout(d, self.s.read(&mut chunk)).await {
            let n = r.unwrap();
            self.buf.extend_from_slice(&chunk[..n]);
            panic!(
                "nothing expected, got {:?}",
                Packet::read(&mut self.buf, None)
            );
        }
    }

    /// Subscribes to `filter` at `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let mut sub = Subscribe::new(Filter::new(filter, qos), None);
        sub.pkid = 1;
        self.send(Packet::Subscribe(sub)).await;
        assert!(matches!(self.next().await, Packet::SubAck(_)));
    }

    pub async fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) {
        let mut p = Publish::new(topic, qos, Bytes::from_static(payload), None);
        p.pkid = pkid;
        self.send(Packet::Publish(p)).await;
    }

    pub async fn puback(&mut self, pkid: u16) {
        self.send(Packet::PubAck(PubAck::new(pkid, None))).await;
    }

    pub async fn pubrec(&mut self, pkid: u16) {
        self.send(Packet::PubRec(PubRec::new(pkid, None))).await;
    }

    pub async fn pubrel(&mut self, pkid: u16) {
        self.send(Packet::PubRel(PubRel::new(pkid, None))).await;
    }

    pub async fn pubcomp(&mut self, pkid: u16) {
        self.send(Packet::PubComp(PubComp::new(pkid, None))).await;
    }
}
