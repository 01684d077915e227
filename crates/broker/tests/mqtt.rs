//! The broker in local mode with real MQTT clients: mutual TLS with the
//! group CA, device authentication, QoS, retained messages, wills and
//! persistent sessions.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, connect, leaf};
use rumqttc::{ConnectReturnCode, ConnectionError, LastWill, QoS};
use verdant_proto::broker::v1 as pb;

#[tokio::test]
async fn devices_exchange_messages_over_mutual_tls_at_every_qos() {
    let b = common::start(&["dev1", "dev2"], "").await;
    let mut sub = connect(b.tls_options("dev1", b.device("dev1")))
        .await
        .unwrap();
    sub.subscribe("line/+/temp", QoS::ExactlyOnce).await;
    let publisher = connect(b.tls_options("dev2", b.device("dev2")))
        .await
        .unwrap();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .mqtt
            .publish("line/3/temp", qos, false, vec![i as u8])
            .await
            .unwrap();
        let got = sub.next().await;
        assert_eq!(got.topic, "line/3/temp");
        assert_eq!(got.qos, qos);
        assert_eq!(got.payload, Bytes::from(vec![i as u8]));
        assert!(!got.retain);
    }
    publisher
        .mqtt
        .publish("line/3/pressure", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    sub.nothing_for(Duration::from_millis(300)).await;

    let mut api = b.api().await;
    let clients = api
        .list_clients(pb::ListClientsRequest {})
        .await
        .unwrap()
        .into_inner();
    let dev1 = clients
        .clients
        .iter()
        .find(|c| c.client_id == "dev1")
        .unwrap();
    assert_eq!(dev1.thing_name, "dev1");
    assert!(dev1.certificate_subject.contains("CN=dev1"), "{dev1:?}");
    assert_eq!(dev1.listener, "tls");
    assert_eq!(dev1.subscriptions[0].filter, "line/+/temp");
    assert!(clients.counters.unwrap().published >= 4);
}

fn refused(result: &Result<Client, ConnectionError>) -> bool {
    matches!(
        result,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized
        ))
    )
}

#[tokio::test]
async fn devices_outside_the_group_are_refused_with_not_authorized() {
    let b = common::start(&["dev1"], "").await;
    // A certificate from another CA.
    let other = common::ca("someone else's CA");
    let stranger = leaf(&other, "dev1", 30);
    assert!(refused(&connect(b.tls_options("dev1", &stranger)).await));
    // Signed by the group CA, but expired.
    let expired = leaf(&b.ca, "dev1", -1);
    assert!(refused(&connect(b.tls_options("dev1", &expired)).await));
    // Signed by the group CA, valid, but no device of the group has it.
    let unknown = leaf(&b.ca, "dev9", 30);
    assert!(refused(&connect(b.tls_options("dev9", &unknown)).await));
    // The right certificate with another device's client id.
    assert!(refused(
        &connect(b.tls_options("dev2", b.device("dev1"))).await
    ));
    // And the right one is admitted, whatever its username says.
    let mut o = b.tls_options("dev1", b.device("dev1"));
    o.set_credentials("?SDK=Python&Version=1.6.2", "");
    assert!(connect(o).await.is_ok());
}

#[tokio::test]
async fn client_id_rule_can_be_relaxed() {
    let b = common::start(&["dev1"], "require_client_id_match = false").await;
    assert!(
        connect(b.tls_options("anything", b.device("dev1")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn retained_messages_and_wills() {
    let b = common::start(&[], "").await;
    let p = connect(b.tcp_options("p")).await.unwrap();
    p.mqtt
        .publish("state/door", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = connect(b.tcp_options("late")).await.unwrap();
    late.subscribe("state/#", QoS::AtLeastOnce).await;
    let got = late.next().await;
    assert!(got.retain);
    assert_eq!(got.payload, Bytes::from_static(b"open"));
    // An empty retained message clears it.
    p.mqtt
        .publish("state/door", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    let cleared = late.next().await; // delivered live, not retained
    assert!(!cleared.retain);
    let mut later = connect(b.tcp_options("later")).await.unwrap();
    later.subscribe("state/#", QoS::AtLeastOnce).await;
    later.nothing_for(Duration::from_millis(300)).await;

    // A will goes out when its client vanishes without DISCONNECT...
    later.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut o = b.tcp_options("mortal2");
    o.set_last_will(LastWill::new(
        "wills/mortal2",
        "gone2",
        QoS::AtLeastOnce,
        false,
    ));
    o.set_keep_alive(Duration::from_secs(1));
    let (client, mut events) = rumqttc::AsyncClient::new(o, 10);
    while !matches!(
        events.poll().await.unwrap(),
        rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))
    ) {}
    drop(events); // the socket closes with no DISCONNECT
    drop(client);
    let will = later.next().await;
    assert_eq!(will.topic, "wills/mortal2");
    assert_eq!(will.payload, Bytes::from_static(b"gone2"));

    // ...and not when it says DISCONNECT.
    let mut o = b.tcp_options("polite");
    o.set_last_will(LastWill::new(
        "wills/polite",
        "bye",
        QoS::AtLeastOnce,
        false,
    ));
    let polite = connect(o).await.unwrap();
    polite.mqtt.disconnect().await.unwrap();
    later.nothing_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_messages_while_away() {
    let b = common::start(&[], "").await;
    let mut o = b.tcp_options("keeper");
    o.set_clean_session(false);
    let keeper = connect(o.clone()).await.unwrap();
    assert!(!keeper.session_present);
    keeper.subscribe("jobs/#", QoS::AtLeastOnce).await;
    keeper.mqtt.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let p = connect(b.tcp_options("boss")).await.unwrap();
    for i in 0..5u8 {
        p.mqtt
            .publish("jobs/new", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    p.mqtt
        .publish("jobs/new", QoS::AtMostOnce, false, "qos0 is not kept")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut back = connect(o).await.unwrap();
    assert!(back.session_present);
    for i in 0..5u8 {
        assert_eq!(back.next().await.payload, Bytes::from(vec![i]));
    }
    back.nothing_for(Duration::from_millis(300)).await;
}

/// A subscriber that stops acknowledging slows its publisher down (its
/// PUBACKs are held) instead of losing messages or queueing without
/// bound; once it acknowledges again, everything arrives, in order.
#[tokio::test]
async fn a_slow_subscriber_holds_back_its_publisher_and_loses_nothing() {
    const N: u64 = 100;
    let b = common::start(&[], "max_queued_messages = 4\nmax_inflight = 2").await;
    let mut o = b.tcp_options("slow");
    o.set_manual_acks(true);
    let (slow, mut slow_events) = rumqttc::AsyncClient::new(o, 100);
    slow.subscribe("bp", QoS::AtLeastOnce).await.unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = slow_events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
                let _ = got_tx.send(p);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = counted_publisher(&b, "fast", "bp", N);

    // The subscriber holds two unacknowledged; the broker parks a few
    // more and holds the publisher's acknowledgements for them.
    let mut held = Vec::new();
    while held.len() < 2 {
        held.push(got.recv().await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_while_stuck = acked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        acked_while_stuck < N,
        "all {N} acknowledged while the subscriber took none"
    );
    assert!(
        got.try_recv().is_err(),
        "no more than the window while stuck"
    );

    // Acknowledging again: all of them, in order.
    let mut payloads = Vec::new();
    for p in held {
        payloads.push(String::from_utf8(p.payload.to_vec()).unwrap());
        slow.ack(&p).await.unwrap();
    }
    while payloads.len() < N as usize {
        let p = tokio::time::timeout(Duration::from_secs(10), got.recv())
            .await
            .expect("the rest arrives")
            .unwrap();
        payloads.push(String::from_utf8(p.payload.to_vec()).unwrap());
        slow.ack(&p).await.unwrap();
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want);
    all_acknowledged(&acked, N, "every publish acknowledged").await;
}

/// A persistent subscriber that leaves with messages unacknowledged, behind
/// its window and still in its outbox gets every one of them when it
/// comes back (QoS 1: at least once).
#[tokio::test]
async fn a_persistent_subscriber_leaving_mid_backlog_gets_everything_back() {
    const N: u64 = 20;
    let b = common::start(&[], "max_inflight = 2").await;
    let mut o = b.tcp_options("backlogged");
    o.set_clean_session(false);
    o.set_manual_acks(true);
    let (sub, mut events) = rumqttc::AsyncClient::new(o.clone(), 100);
    sub.subscribe("bl", QoS::AtLeastOnce).await.unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
                let _ = got_tx.send(p);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = connect(b.tcp_options("feeder")).await.unwrap();
    for i in 0..N {
        p.mqtt
            .publish("bl", QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    // Two arrive (the window); the rest wait in the broker. Leave without
    // acknowledging anything.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), got.recv())
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    pump.abort();
    drop(sub);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Back, acknowledging now: all N, none missing.
    o.set_manual_acks(false);
    let mut back = connect(o).await.unwrap();
    assert!(back.session_present);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N as usize {
        let m = back.next().await;
        seen.insert(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    let want: std::collections::BTreeSet<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(seen, want);
}

/// A subscriber that takes nothing for `slow_client_timeout_secs` while
/// messages are parked for it is disconnected, and its publisher's held
/// acknowledgements go out.
#[tokio::test]
async fn a_subscriber_that_takes_nothing_is_disconnected_and_releases_its_publisher() {
    const N: u64 = 40;
    let b = common::start(
        &[],
        "max_queued_messages = 4\nmax_inflight = 2\nslow_client_timeout_secs = 1",
    )
    .await;
    let mut o = b.tcp_options("stuck");
    o.set_manual_acks(true);
    let (stuck, mut stuck_events) = rumqttc::AsyncClient::new(o, 100);
    stuck.subscribe("st", QoS::AtLeastOnce).await.unwrap();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        while stuck_events.poll().await.is_ok() {}
        let _ = ended_tx.send(());
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = counted_publisher(&b, "held", "st", N);
    tokio::time::timeout(Duration::from_secs(15), ended)
        .await
        .expect("the stuck subscriber is disconnected")
        .unwrap();
    all_acknowledged(&acked, N, "the publisher is released").await;
    drop(stuck);
}

/// A client publishing `n` QoS 1 messages (0, 1, ...) to `topic` with a
/// window of 10; the count of PUBACKs it has received.
/// Waits up to 10 s for `counted_publisher`'s count to reach `n`.
async fn all_acknowledged(acked: &std::sync::atomic::AtomicU64, n: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counted_publisher(
    b: &common::Broker,
    id: &str,
    topic: &'static str,
    n: u64,
) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let mut o = b.tcp_options(id);
    o.set_inflight(10);
    let (client, mut events) = rumqttc::AsyncClient::new(o, 200);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = acked.clone();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    tokio::spawn(async move {
        for i in 0..n {
            client
                .publish(topic, QoS::AtLeastOnce, false, i.to_string())
                .await
                .unwrap();
        }
    });
    acked
}

/// A QoS 0 subscriber that stops reading while a publisher sends flat out,
/// then reads again: how many of `N` it gets, and the broker's count of
/// QoS 0 messages dropped, under the `qos0_when_full` policy `policy`.
async fn qos0_for_a_subscriber_that_falls_behind(policy: &str) -> (usize, u64) {
    const N: usize = 3_000;
    let b = common::start(
        &[],
        &format!("max_queued_messages = 16\nqos0_when_full = \"{policy}\""),
    )
    .await;
    let (sub, mut sub_events) = rumqttc::AsyncClient::new(b.tcp_options("slow"), 10);
    sub.subscribe("flood", QoS::AtMostOnce).await.unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) =
            sub_events.poll().await.unwrap()
        {
            break;
        }
    }
    // The publisher sends 12 MB; the subscriber reads nothing meanwhile, so
    // its socket fills and then its queue in the broker.
    let publisher = common::connect(b.tcp_options("flat-out")).await.unwrap();
    let sending = tokio::spawn(async move {
        for i in 0..N {
            let mut body = vec![0u8; 4096];
            body[..8].copy_from_slice(&(i as u64).to_be_bytes());
            publisher
                .mqtt
                .publish("flood", QoS::AtMostOnce, false, body)
                .await
                .unwrap();
        }
        publisher
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Reading again: everything the broker kept arrives.
    let mut got = 0;
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(3), sub_events.poll()).await
    {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = event {
            got += 1;
            if got == N {
                break;
            }
        }
    }
    let _publisher = sending.await.unwrap();
    let counters = b
        .api()
        .await
        .list_clients(verdant_proto::broker::v1::ListClientsRequest {})
        .await
        .unwrap()
        .into_inner()
        .counters
        .unwrap();
    (got, counters.dropped_qos0)
}

/// `qos0_when_full`: by default a subscriber that does not keep up loses
/// QoS 0 messages (counted); with `hold-publishers` its publisher is read
/// no faster than it takes them, and nothing is lost.
#[tokio::test]
async fn qos0_for_a_full_subscriber_is_dropped_or_holds_its_publisher() {
    let (got, dropped) = qos0_for_a_subscriber_that_falls_behind("drop").await;
    assert!(dropped > 0, "dropped {dropped}, got {got}");
    assert_eq!(got as u64 + dropped, 3_000);
    let (got, dropped) = qos0_for_a_subscriber_that_falls_behind("hold-publishers").await;
    assert_eq!((got, dropped), (3_000, 0));
}
