//! Bad input on the wire: each is refused or closed, logged, and the
//! broker keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CONNECT for MQTT 3.1.1, clean session, keep-alive 60, client id `id`.
fn connect_packet(id: &str, flags: u8, level: u8) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// CONNECT for MQTT 5.0, clean start, keep-alive 60, client id `x`, with
/// `props` (its length first) as the properties.
fn connect_v5(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60];
    body.extend_from_slice(props);
    body.extend_from_slice(&[0, 1, b'x']);
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

async fn open(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Everything the broker sends until it closes (or `limit`).
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

#[tokio::test]
async fn packets_before_connect_and_bad_connects_are_closed() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();

    let mut s = open(port).await;
    s.write_all(&[0xc0, 0x00]).await.unwrap(); // PINGREQ first
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "{got:?}");

    let mut s = open(port).await;
    s.write_all(&connect_packet("x", 0x03, 4)).await.unwrap(); // reserved bit set
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "{got:?}");

    // MQTT 5.0 with an unknown property (0x7f): CONNACK "malformed" (0x81).
    let mut s = open(port).await;
    s.write_all(&connect_v5(&[1, 0x7f])).await.unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(&got[..4], [0x20, got[1], 0x00, 0x81], "{got:?}");

    let mut s = open(port).await;
    s.write_all(&connect_packet("x", 0x02, 3)).await.unwrap(); // 3.1
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01]);

    // Persistent session with an empty client id: identifier rejected.
    let mut s = open(port).await;
    s.write_all(&connect_packet("", 0x00, 4)).await.unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(got, [0x20, 0x02, 0x00, 0x02]);

    // After all that, a good client is served.
    let mut s = open(port).await;
    s.write_all(&connect_packet("good", 0x02, 4)).await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, CONNACK_OK);
}

#[tokio::test]
async fn mqtt5_connack_properties_and_reason_codes() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();

    // A good 5.0 CONNECT: CONNACK success with the server's properties.
    let mut s = open(port).await;
    s.write_all(&connect_v5(&[0])).await.unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x20);
    let mut rest = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest[..2], [0x00, 0x00], "no session, success: {rest:?}");
    let props = &rest[3..];
    // Topic Alias Maximum (0x22) 64, Subscription Identifiers Available
    // (0x29) 1, Shared Subscription Available (0x2a) 1.
    assert!(props.windows(3).any(|w| w == [0x22, 0, 64]), "{props:?}");
    assert!(props.windows(2).any(|w| w == [0x29, 1]), "{props:?}");
    assert!(props.windows(2).any(|w| w == [0x2a, 1]), "{props:?}");

    // SUBSCRIBE to an invalid filter, a shared one with no share name and a
    // good shared one: 0x8F, 0x8F, granted QoS 1.
    let mut sub = vec![0x82, 0, 0, 7, 0];
    for f in ["a/#/b", "$share//t", "$share/g/t"] {
        sub.extend_from_slice(&(f.len() as u16).to_be_bytes());
        sub.extend_from_slice(f.as_bytes());
        sub.push(1);
    }
    sub[1] = (sub.len() - 2) as u8;
    s.write_all(&sub).await.unwrap();
    let mut suback = [0u8; 8];
    s.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 6, 0, 7, 0, 0x8F, 0x8F, 0x01]);

    // A topic alias never set: DISCONNECT "protocol error" (0x82), closed.
    // PUBLISH QoS 0, empty topic, properties: Topic Alias (0x23) 5.
    s.write_all(&[0x30, 7, 0, 0, 3, 0x23, 0, 5, b'p'])
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(&got[..3], [0xE0, 0x01, 0x82], "{got:?}");

    // Enhanced authentication (Authentication Method 0x15): CONNACK 0x8C.
    let mut s = open(port).await;
    s.write_all(&connect_v5(&[8, 0x15, 0, 5, b'S', b'C', b'R', b'A', b'M']))
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(&got[..4], [0x20, got[1], 0x00, 0x8C], "{got:?}");

    // A DISCONNECT with no reason code is a normal one.
    let mut s = open(port).await;
    s.write_all(&connect_v5(&[0])).await.unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    let mut rest = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut rest).await.unwrap();
    s.write_all(&[0xE0, 0x00]).await.unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn silent_sockets_are_closed_after_the_connect_timeout() {
    let b = common::start(&[], "connect_timeout_secs = 1").await;
    let mut s = open(b.tcp_port.unwrap()).await;
    let begun = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed && got.is_empty());
    assert!(
        begun.elapsed() >= Duration::from_millis(900),
        "{:?}",
        begun.elapsed()
    );
}

#[tokio::test]
async fn oversized_and_malformed_packets_close_only_their_connection() {
    let b = common::start(&[], "max_packet_size = 1024").await;
    let port = b.tcp_port.unwrap();
    let mut s = open(port).await;
    s.write_all(&connect_packet("big", 0x02, 4)).await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    // A PUBLISH announcing 2 MiB: refused from its header alone.
    s.write_all(&[0x30, 0x80, 0x80, 0x80, 0x01]).await.unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);

    let mut s = open(port).await;
    s.write_all(&connect_packet("flags", 0x02, 4))
        .await
        .unwrap();
    s.read_exact(&mut buf).await.unwrap();
    // SUBSCRIBE with flags 0000 instead of 0010.
    s.write_all(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00])
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);

    let mut s = open(port).await;
    s.write_all(&connect_packet("wild", 0x02, 4)).await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    // A PUBLISH to a topic with a wildcard is a protocol violation.
    s.write_all(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'])
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);

    // An invalid filter gets a failure code, the valid one is granted.
    let mut s = open(port).await;
    s.write_all(&connect_packet("subs", 0x02, 4)).await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    let sub = [
        0x82, 0x0e, 0x00, 0x07, // SUBSCRIBE, id 7
        0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x01, // invalid, QoS 1
        0x00, 0x01, b'c', 0x01, // "c", QoS 1
    ];
    s.write_all(&sub).await.unwrap();
    let mut suback = [0u8; 6];
    s.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 0x04, 0x00, 0x07, 0x80, 0x01]);
}

#[tokio::test]
async fn keep_alive_expiry_closes_and_publishes_the_will() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let mut watcher = common::connect(b.tcp_options("watcher")).await.unwrap();
    watcher.subscribe("w", rumqttc::QoS::AtMostOnce).await;
    // CONNECT: keep-alive 1 s, will flag, will QoS 0, topic "w", message "z".
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 1, // flags: will + clean
        0, 1, b'k', // client id
        0, 1, b'w', 0, 1, b'z',
    ];
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    let mut s = open(port).await;
    s.write_all(&p).await.unwrap();
    let begun = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert_eq!(got, CONNACK_OK);
    assert!(closed);
    // 1.5 × keep-alive.
    assert!(
        begun.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        begun.elapsed()
    );
    let will = watcher.next().await;
    assert_eq!(&will.payload[..], b"z");
}

/// The keep-alive deadline moves with every packet: a client that pings
/// for several keep-alive periods stays, and goes 1.5 × keep-alive after
/// it falls silent.
#[tokio::test]
async fn pings_keep_a_client_past_its_first_keep_alive_deadline() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    // CONNECT: keep-alive 1 s, clean session, client id "p".
    let body = [0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 1, b'p'];
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    let mut s = open(port).await;
    s.write_all(&p).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, CONNACK_OK);
    // Four seconds of PINGREQs, 0.5 s apart: each one answered.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[0xC0, 0x00]).await.unwrap();
        let mut pong = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut pong))
            .await
            .expect("a PINGRESP")
            .expect("still connected");
        assert_eq!(pong, [0xD0, 0x00]);
    }
    let quiet = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(got.is_empty() && closed, "{got:?}");
    assert!(
        quiet.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        quiet.elapsed()
    );
}

/// QoS 1 gets PUBACK, QoS 2 gets PUBREC then PUBCOMP, in order, with and
/// without a persistent subscriber (which makes the broker wait for disk).
#[tokio::test]
async fn publishes_are_acknowledged_in_order_at_qos_1_and_2() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    for persistent in [false, true] {
        if persistent {
            let mut o = b.tcp_options("keeper");
            o.set_clean_session(false);
            let keeper = common::connect(o).await.unwrap();
            keeper.subscribe("q/#", rumqttc::QoS::AtLeastOnce).await;
        }
        let mut s = open(port).await;
        s.write_all(&connect_packet(&format!("acker-{persistent}"), 0x02, 4))
            .await
            .unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, CONNACK_OK);
        // PUBLISH QoS 1 id 1, QoS 2 id 2, QoS 1 id 3, all to "q/a" with payload "x".
        let mut burst = Vec::new();
        for (first, id) in [(0x32u8, 1u8), (0x34, 2), (0x32, 3)] {
            burst.extend_from_slice(&[first, 0x08, 0x00, 0x03, b'q', b'/', b'a', 0x00, id, b'x']);
        }
        s.write_all(&burst).await.unwrap();
        let mut acks = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut acks))
            .await
            .expect("acknowledged within 10 s")
            .unwrap();
        assert_eq!(
            acks,
            [
                0x40, 0x02, 0x00, 0x01, 0x50, 0x02, 0x00, 0x02, 0x40, 0x02, 0x00, 0x03
            ],
            "PUBACK 1, PUBREC 2, PUBACK 3 (persistent subscriber: {persistent})"
        );
        s.write_all(&[0x62, 0x02, 0x00, 0x02]).await.unwrap(); // PUBREL 2
        let mut comp = [0u8; 4];
        s.read_exact(&mut comp).await.unwrap();
        assert_eq!(comp, [0x70, 0x02, 0x00, 0x02]);
    }
}

#[tokio::test]
async fn a_packet_trickling_in_is_cut_off_even_without_keep_alive() {
    let b = common::start(&[], "packet_timeout_secs = 1").await;
    let mut s = open(b.tcp_port.unwrap()).await;
    // CONNECT with keep-alive 0: no keep-alive deadline at all.
    let mut connect = connect_packet("slow", 0x02, 4);
    connect[10] = 0;
    connect[11] = 0;
    s.write_all(&connect).await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, CONNACK_OK);
    // Half a PUBLISH, then a byte now and then.
    s.write_all(&[0x30, 0x0a, 0x00, 0x03]).await.unwrap();
    let begun = Instant::now();
    let trickle = async {
        for b in [b'a', b'/', b'b'] {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if s.write_all(&[b]).await.is_err() {
                return;
            }
        }
        let mut rest = [0u8; 8];
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut rest)).await;
    };
    trickle.await;
    let elapsed = begun.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(9),
        "closed by the packet timeout: {elapsed:?}"
    );
}

/// Reads one whole packet with the 5.0 decoder.
async fn next_v5(
    s: &mut TcpStream,
    buf: &mut bytes::BytesMut,
) -> rumqttc::v5::mqttbytes::v5::Packet {
    common::raw::read_v5(s, buf).await.expect("closed")
}

/// A 5.0 client subscribed to `t/#` at QoS 0, whose CONNECT has Topic
/// Alias Maximum `alias_max` (none when 0); its read buffer.
async fn v5_subscriber(port: u16, alias_max: u8) -> (TcpStream, bytes::BytesMut) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let mut s = open(port).await;
    let props: &[u8] = if alias_max == 0 {
        &[0]
    } else {
        &[3, 0x22, 0, alias_max]
    };
    s.write_all(&connect_v5(props)).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    assert!(matches!(
        next_v5(&mut s, &mut buf).await,
        Packet::ConnAck(_)
    ));
    s.write_all(&[0x82, 9, 0, 1, 0, 0, 3, b't', b'/', b'#', 0])
        .await
        .unwrap();
    assert!(matches!(next_v5(&mut s, &mut buf).await, Packet::SubAck(_)));
    (s, buf)
}

/// A connected 3.1.1 client.
async fn v4_publisher(port: u16) -> TcpStream {
    let mut s = open(port).await;
    s.write_all(&connect_packet("p", 0x02, 4)).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, CONNACK_OK);
    s
}

/// Publishes `m` on `topic` at QoS 0.
async fn publish_m(s: &mut TcpStream, topic: &str) {
    let mut p = vec![0x30, 0, 0, topic.len() as u8];
    p.extend_from_slice(topic.as_bytes());
    p.push(b'm');
    p[1] = (p.len() - 2) as u8;
    s.write_all(&p).await.unwrap();
}

/// The next publish's (topic on the wire, Topic Alias).
async fn received(s: &mut TcpStream, buf: &mut bytes::BytesMut) -> (String, Option<u16>) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let Packet::Publish(p) = next_v5(s, buf).await else {
        panic!("a publish");
    };
    assert_eq!(&p.payload[..], b"m");
    let alias = p.properties.and_then(|props| props.topic_alias);
    (String::from_utf8(p.topic.to_vec()).unwrap(), alias)
}

#[tokio::test]
async fn a_client_taking_topic_aliases_is_sent_them() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let (mut sub, mut buf) = v5_subscriber(port, 2).await;
    let mut publisher = v4_publisher(port).await;
    for topic in ["t/a", "t/a", "t/b", "t/c", "t/b"] {
        publish_m(&mut publisher, topic).await;
    }
    // t/a sets up alias 1, then uses it; t/b sets up 2; t/c finds no
    // alias left and goes whole; t/b uses 2.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(received(&mut sub, &mut buf).await);
    }
    let want: Vec<(String, Option<u16>)> = vec![
        ("t/a".into(), Some(1)),
        (String::new(), Some(1)),
        ("t/b".into(), Some(2)),
        ("t/c".into(), None),
        (String::new(), Some(2)),
    ];
    assert_eq!(got, want);

    // A 5.0 client that takes none is sent whole topics.
    let (mut plain, mut pbuf) = v5_subscriber(port, 0).await;
    publish_m(&mut publisher, "t/a").await;
    assert_eq!(received(&mut plain, &mut pbuf).await, ("t/a".into(), None));

    // So is one that takes them, from a broker told to send none.
    let off = common::start(&[], "send_topic_aliases = false").await;
    let (mut sub, mut buf) = v5_subscriber(off.tcp_port.unwrap(), 2).await;
    let mut publisher = v4_publisher(off.tcp_port.unwrap()).await;
    for _ in 0..2 {
        publish_m(&mut publisher, "t/a").await;
        assert_eq!(received(&mut sub, &mut buf).await, ("t/a".into(), None));
    }
}

/// Client `s` (3.1.1, clean session) subscribed to `t` at `qos`.
async fn subscribed(port: u16, qos: u8) -> TcpStream {
    let mut s = open(port).await;
    s.write_all(&connect_packet("s", 0x02, 4)).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, CONNACK_OK);
    s.write_all(&[0x82, 6, 0, 1, 0, 1, b't', qos])
        .await
        .unwrap();
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, qos]);
    s
}

/// A client disconnected by an operator while messages stream to it: the
/// hub queues the Close behind the messages, and the connection must end
/// even when the Close comes in the same burst as them.
#[tokio::test]
async fn a_client_disconnected_mid_stream_is_closed() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let mut api = b.api().await;
    for round in 0..10 {
        let mut s = subscribed(port, 0).await;
        let mut publisher = v4_publisher(port).await;
        let one = [0x30, 4, 0, 1, b't', b'm'];
        publisher.write_all(&one.repeat(200_000)).await.unwrap();
        // Not reading yet: the messages back up into the broker.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let kicked = api
            .disconnect_client(verdant_proto::broker::v1::DisconnectClientRequest {
                client_id: "s".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(
            closed,
            "round {round}: {kicked:?}, the connection stays open"
        );
        drop(publisher);
    }
}

/// A subscriber that reads nothing at all: once the sockets between are
/// full the broker's writes to it wait, and neither its publishers'
/// acknowledgements nor an operator's disconnect wait with them.
#[tokio::test]
async fn a_subscriber_that_reads_nothing_holds_no_one_and_can_be_disconnected() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let mut api = b.api().await;
    let s = subscribed(port, 0).await;
    let mut publisher = v4_publisher(port).await;
    // 32 MiB of QoS 0 messages of 32 KiB to "t": more than the loopback
    // buffers between the broker and the subscriber hold.
    let mut one = vec![0x30, 0x83, 0x80, 0x02, 0, 1, b't']; // remaining length 32771
    one.resize(one.len() + 32 * 1024, b'x');
    for _ in 0..1024 {
        publisher.write_all(&one).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A QoS 1 publish to the stuck subscriber is acknowledged all the same.
    publisher
        .write_all(&[0x32, 6, 0, 1, b't', 0, 7, b'm'])
        .await
        .unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), publisher.read_exact(&mut ack))
        .await
        .expect("a PUBACK while the subscriber's socket is full")
        .unwrap();
    assert_eq!(ack, [0x40, 2, 0, 7]);
    // An operator's disconnect reaches it.
    api.disconnect_client(verdant_proto::broker::v1::DisconnectClientRequest {
        client_id: "s".into(),
    })
    .await
    .unwrap();
    common::gone(&mut api, "s", Duration::from_secs(10)).await;
    drop(s);
}

/// A QoS 1 subscriber that reads nothing, with its publisher held back by
/// what is parked for it, is ended by `slow_client_timeout_secs` even
/// while the broker's writes to it wait.
#[tokio::test]
async fn a_subscriber_that_reads_nothing_is_ended_by_the_slow_client_timeout() {
    let b = common::start(
        &[],
        "max_queued_messages = 8\nmax_inflight = 100\nslow_client_timeout_secs = 1",
    )
    .await;
    let port = b.tcp_port.unwrap();
    let mut api = b.api().await;
    let s = subscribed(port, 1).await;
    let mut publisher = v4_publisher(port).await;
    // 150 QoS 1 messages of 200 KiB to "t" (remaining length 204805), ids
    // 1, 2, ...: the 100 in flight alone are more than the loopback
    // buffers hold, so the broker's writes to the subscriber wait.
    let writer = tokio::spawn(async move {
        for id in 1..=150u16 {
            let mut one = vec![0x32, 0x85, 0xC0, 0x0C, 0, 1, b't'];
            one.extend_from_slice(&id.to_be_bytes());
            one.resize(one.len() + 200 * 1024, b'x');
            if publisher.write_all(&one).await.is_err() {
                break;
            }
        }
        publisher
    });
    common::gone(&mut api, "s", Duration::from_secs(20)).await;
    drop(s);
    writer.abort();
}

/// A subscriber behind on its acknowledgements takes no more messages
/// from the broker, but an operator's disconnect still reaches it, also
/// when messages came after it fell behind.
#[tokio::test]
async fn a_subscriber_behind_can_be_disconnected() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let mut api = b.api().await;
    let mut s = subscribed(port, 1).await;
    let mut p = v4_publisher(port).await;
    // 32 in flight and 32 behind them (the window is 32): behind.
    let burst = |ids: std::ops::RangeInclusive<u8>| {
        ids.flat_map(|id| [0x32, 6, 0, 1, b't', 0, id, b'm'])
            .collect::<Vec<u8>>()
    };
    p.write_all(&burst(1..=64)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // More for it while it is behind: they wait in the broker.
    p.write_all(&burst(65..=80)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.disconnect_client(verdant_proto::broker::v1::DisconnectClientRequest {
        client_id: "s".into(),
    })
    .await
    .unwrap();
    common::gone(&mut api, "s", Duration::from_secs(5)).await;
    // Its socket is closed: what it was sent, then the end.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the subscriber's socket is closed")
        .unwrap();
}

/// A subscriber that takes QoS 1 messages and acknowledges none: beyond its
/// inflight window (32) the messages wait in the broker, and its publisher
/// is still acknowledged at once (until the broker has to park them).
#[tokio::test]
async fn a_subscriber_behind_does_not_hold_its_publishers_acknowledgements() {
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let s = subscribed(port, 1).await;
    let mut p = v4_publisher(port).await;
    let mut burst = Vec::new();
    for pkid in 1..=40u8 {
        burst.extend_from_slice(&[0x32, 6, 0, 1, b't', 0, pkid, b'm']);
    }
    p.write_all(&burst).await.unwrap();
    let mut acks = [0u8; 160];
    tokio::time::timeout(Duration::from_secs(5), p.read_exact(&mut acks))
        .await
        .expect("40 PUBACKs while the subscriber acknowledges nothing")
        .unwrap();
    for (i, ack) in acks.chunks(4).enumerate() {
        assert_eq!(ack, [0x40, 2, 0, i as u8 + 1]);
    }
    drop(s);
}

/// One publisher's messages reach a subscriber in the order they were
/// sent, whichever way each goes through the broker: a plain QoS 0
/// message is handed on by the publisher's own task when the hub is free,
/// a retained or QoS 1 one by the hub's task, and none may overtake
/// another. Sent one at a time (the hub idle between) and in bursts of
/// about a hundred: a subscriber that keeps up loses nothing either,
/// although a burst that waited behind a retained message's commit comes
/// to the hub all at once (the hub gives way once a queue is half full).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publishers_messages_keep_their_order_whichever_way_they_go() {
    use rumqttc::mqttbytes::v4::Packet;
    const ONE_BY_ONE: u16 = 60;
    const TOTAL: u16 = 2_000;
    let b = common::start(&[], "").await;
    let port = b.tcp_port.unwrap();
    let mut api = b.api().await;
    let mut sub = subscribed(port, 0).await;
    let mut publisher = v4_publisher(port).await;
    let packet = |i: u16| {
        let (first, pkid) = match i % 7 {
            0 => (0x32, Some(i + 1)), // QoS 1
            3 => (0x31, None),        // QoS 0, retained
            _ => (0x30, None),
        };
        let mut p = vec![first, 0, 0, 1, b't'];
        if let Some(id) = pkid {
            p.extend_from_slice(&id.to_be_bytes());
        }
        p.extend_from_slice(i.to_string().as_bytes());
        p[1] = (p.len() - 2) as u8;
        p
    };
    let sending = tokio::spawn(async move {
        for i in 0..ONE_BY_ONE {
            publisher.write_all(&packet(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for burst in (ONE_BY_ONE..TOTAL).collect::<Vec<_>>().chunks(97) {
            let bytes: Vec<u8> = burst.iter().flat_map(|&i| packet(i)).collect();
            publisher.write_all(&bytes).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publisher
    });
    let mut buf = bytes::BytesMut::new();
    let mut received = Vec::new();
    // Until TOTAL - 1 (the last) arrives, or a second passes with nothing.
    while received.last() != Some(&(TOTAL - 1)) {
        match Packet::read(&mut buf, 1 << 20) {
            Ok(Packet::Publish(p)) => {
                let got: u16 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                if let Some(&before) = received.last() {
                    assert!(got > before, "message {got} came after {before}");
                }
                received.push(got);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                let read = tokio::time::timeout(Duration::from_secs(1), sub.read_buf(&mut buf));
                match read.await {
                    Ok(Ok(n)) => assert!(n > 0, "closed after {} messages", received.len()),
                    Ok(Err(e)) => panic!("{e}"),
                    Err(_) => break,
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(sending.await.unwrap());
    let counters = api
        .list_clients(verdant_proto::broker::v1::ListClientsRequest {})
        .await
        .unwrap()
        .into_inner()
        .counters
        .unwrap();
    assert_eq!(
        received.len(),
        usize::from(TOTAL),
        "{} received, {counters:?}",
        received.len()
    );
}
