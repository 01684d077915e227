//! MQTT 5.0 flow control both ways (Receive Maximum), the Server Keep
//! Alive, and the DUP flag on messages sent again, with a bare client
//! that acknowledges only what the test tells it to.

mod common;

use std::time::Duration;

use common::raw::Raw;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, DisconnectReasonCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long enough for a message the broker wrongly sent to arrive.
const QUIET: Duration = Duration::from_millis(300);

fn props(receive_maximum: Option<u16>, session_expiry: Option<u32>) -> ConnectProperties {
    let mut p = ConnectProperties::new();
    p.receive_maximum = receive_maximum;
    p.session_expiry_interval = session_expiry;
    p
}

/// Reads until the broker closes; the DISCONNECT's reason code, if one came.
async fn disconnect_reason(c: &mut Raw) -> Option<DisconnectReasonCode> {
    let mut reason = None;
    while let Some(p) = c.next_or_closed().await {
        if let Packet::Disconnect(d) = p {
            reason = Some(d.reason_code);
        }
    }
    reason
}

/// Paho's `flow_control2`: QoS 2 publishes never released, one more than
/// the CONNACK's Receive Maximum, end with DISCONNECT 0x93.
#[tokio::test]
async fn a_client_past_the_receive_maximum_is_disconnected_with_0x93() {
    let b = common::start(&[], "").await;
    let (mut c, ack) =
        Raw::connect(b.tcp_port.unwrap(), "flood", true, 60, props(None, None)).await;
    let announced = ack.properties.unwrap().receive_max;
    assert_eq!(announced, Some(100), "the default Receive Maximum");
    for pkid in 1..=101 {
        c.publish("q/a", QoS::ExactlyOnce, pkid, b"x").await;
    }
    // PUBRECs (those written before the broker stopped), then DISCONNECT.
    let mut recs = Vec::new();
    let mut reason = None;
    while let Some(p) = c.next_or_closed().await {
        match p {
            Packet::PubRec(r) => recs.push(r.pkid),
            Packet::Disconnect(d) => reason = Some(d.reason_code),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reason, Some(DisconnectReasonCode::ReceiveMaximumExceeded));
    assert!(recs.iter().copied().eq(1..=recs.len() as u16) && recs.len() <= 100);
}

/// What is released or acknowledged no longer counts; QoS 1 and 2 count
/// together; a 3.1.1 client has no Receive Maximum.
#[tokio::test]
async fn the_receive_maximum_counts_what_is_unacknowledged() {
    let b = common::start(&[], "receive_maximum = 3").await;
    let port = b.tcp_port.unwrap();
    let (mut c, ack) = Raw::connect(port, "steady", true, 60, props(None, None)).await;
    assert_eq!(ack.properties.unwrap().receive_max, Some(3));
    // Three at a time, released each round: never past the maximum.
    for round in 0..3u16 {
        for i in 1..=3 {
            c.publish("q/a", QoS::ExactlyOnce, round * 3 + i, b"x")
                .await;
        }
        for i in 1..=3 {
            assert!(matches!(c.next().await, Packet::PubRec(r) if r.pkid == round * 3 + i));
        }
        for i in 1..=3 {
            c.pubrel(round * 3 + i).await;
            assert!(matches!(c.next().await, Packet::PubComp(r) if r.pkid == round * 3 + i));
        }
    }
    // Two QoS 2 ones held and two QoS 1 ones acknowledged leave room for
    // a third QoS 2 one, and a fourth is one too many.
    for pkid in [100, 101] {
        c.publish("q/a", QoS::ExactlyOnce, pkid, b"x").await;
        assert!(matches!(c.next().await, Packet::PubRec(r) if r.pkid == pkid));
    }
    for pkid in [102, 103] {
        c.publish("q/a", QoS::AtLeastOnce, pkid, b"x").await;
        assert!(matches!(c.next().await, Packet::PubAck(r) if r.pkid == pkid));
    }
    c.publish("q/a", QoS::ExactlyOnce, 104, b"x").await;
    assert!(matches!(c.next().await, Packet::PubRec(r) if r.pkid == 104));
    c.publish("q/a", QoS::ExactlyOnce, 105, b"x").await;
    assert_eq!(
        disconnect_reason(&mut c).await,
        Some(DisconnectReasonCode::ReceiveMaximumExceeded)
    );

    // MQTT 3.1.1: 20 QoS 2 publishes held unreleased, all PUBREC'd.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'v',
    ])
    .await
    .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    for id in 1..=20u8 {
        s.write_all(&[0x34, 8, 0, 3, b'q', b'/', b'a', 0, id, b'x'])
            .await
            .unwrap();
    }
    let mut recs = [0u8; 80];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut recs))
        .await
        .expect("20 PUBRECs within 10 s")
        .unwrap();
    let want: Vec<u8> = (1..=20u8).flat_map(|id| [0x50, 2, 0, id]).collect();
    assert_eq!(recs.to_vec(), want);
}

/// The broker honours a client's Receive Maximum of 2: two QoS 1/2
/// messages in flight, the next only once one is acknowledged (PUBACK,
/// or PUBCOMP for QoS 2: PUBREC alone does not free the slot).
#[tokio::test]
async fn a_client_announcing_receive_maximum_2_gets_2_in_flight() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let (mut sub, _) = Raw::connect(port, "narrow", true, 60, props(Some(2), None)).await;
    sub.subscribe("t", QoS::ExactlyOnce).await;
    let publisher = common::connect(b.tcp_options("pub")).await.unwrap();
    for (n, qos) in [
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
        rumqttc::QoS::AtLeastOnce,
    ]
    .into_iter()
    .enumerate()
    {
        publisher
            .mqtt
            .publish("t", qos, false, vec![n as u8])
            .await
            .unwrap();
    }
    let m0 = sub.next_publish().await;
    let m1 = sub.next_publish().await;
    assert_eq!((&m0.payload[..], &m1.payload[..]), (&[0u8][..], &[1u8][..]));
    sub.nothing_for(QUIET).await;

    sub.puback(m0.pkid).await;
    let m2 = sub.next_publish().await;
    assert_eq!(&m2.payload[..], [2]);
    sub.nothing_for(QUIET).await;

    // QoS 2: PUBREC gets PUBREL, and the message is still in flight.
    sub.pubrec(m1.pkid).await;
    assert!(matches!(sub.next().await, Packet::PubRel(r) if r.pkid == m1.pkid));
    sub.nothing_for(QUIET).await;
    sub.pubcomp(m1.pkid).await;
    let m3 = sub.next_publish().await;
    assert_eq!(&m3.payload[..], [3]);
    sub.nothing_for(QUIET).await;

    sub.puback(m2.pkid).await;
    let m4 = sub.next_publish().await;
    assert_eq!(&m4.payload[..], [4]);
    assert!(
        [&m0, &m1, &m2, &m3, &m4].iter().all(|m| !m.dup),
        "first sends"
    );
}

#[tokio::test]
async fn server_keep_alive_is_announced_when_the_broker_caps_it() {
    let b = common::start(&[], "max_keep_alive_secs = 1").await;
    let port = b.tcp_port.unwrap();
    for (asked, told) in [(60, Some(1)), (0, Some(1)), (1, None)] {
        let (_c, ack) = Raw::connect(port, "ka", true, asked, props(None, None)).await;
        let told_now = ack.properties.unwrap().server_keep_alive;
        assert_eq!(told_now, told, "keep-alive {asked} asked");
    }
    // Held to it: silent past 1.5 × 1 s, closed with 0x8D.
    let (mut c, _) = Raw::connect(port, "quiet", true, 60, props(None, None)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        disconnect_reason(&mut c).await,
        Some(DisconnectReasonCode::KeepAliveTimeout)
    );
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Not capped unless configured.
    let plain = common::start(&[], "").await;
    let (_c, ack) = Raw::connect(plain.tcp_port.unwrap(), "ka", true, 0, props(None, None)).await;
    assert_eq!(ack.properties.unwrap().server_keep_alive, None);
}

/// A persistent session's unacknowledged message goes again on the next
/// connection with DUP set; one that was never sent goes without.
#[tokio::test]
async fn a_message_sent_again_after_a_reconnect_carries_dup() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let keep = props(None, Some(600));
    let (mut sub, _) = Raw::connect(port, "again", true, 60, keep.clone()).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    let publisher = common::connect(b.tcp_options("pub")).await.unwrap();
    publisher
        .mqtt
        .publish("t", rumqttc::QoS::AtLeastOnce, false, "first")
        .await
        .unwrap();
    let first = sub.next_publish().await;
    assert!(!first.dup, "a first send");
    drop(sub); // unacknowledged
    common::gone(&mut b.api().await, "again", Duration::from_secs(10)).await;
    publisher
        .mqtt
        .publish("t", rumqttc::QoS::AtLeastOnce, false, "second")
        .await
        .unwrap();

    let (mut sub, ack) = Raw::connect(port, "again", false, 60, keep).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = sub.next_publish().await;
        got.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.dup));
        sub.puback(p.pkid).await;
    }
    got.sort();
    assert_eq!(
        got,
        vec![("first".to_string(), true), ("second".to_string(), false)]
    );
}
