//! What the broker acknowledged survives `kill -9`: persistent sessions,
//! their queued QoS 1 messages, and retained messages.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use verdant_integration_tests::{Core, Options, PATIENCE};

const TCP: &str =
    "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

fn options(port: u16, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects and returns the client, its event loop, and whether the
/// broker had a session for it.
async fn connect(o: MqttOptions) -> (AsyncClient, EventLoop, bool) {
    let (client, mut events) = AsyncClient::new(o, 1000);
    loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = events.poll().await.expect("connect") {
            return (client, events, ack.session_present);
        }
    }
}

/// Polls until `pred` has seen what it wants.
async fn poll_until(events: &mut EventLoop, mut pred: impl FnMut(&Packet) -> bool) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::Incoming(p) = events.poll().await.expect("poll")
                && pred(&p)
            {
                return;
            }
        }
    })
    .await
    .expect("in time");
}

/// The next PUBLISH `events` brings.
async fn next_publish(events: &mut EventLoop) -> rumqttc::Publish {
    let mut got = None;
    poll_until(events, |p| {
        if let Packet::Publish(m) = p {
            got = Some(m.clone());
        }
        got.is_some()
    })
    .await;
    got.expect("polled until one came")
}

#[tokio::test]
async fn persistent_sessions_and_retained_messages_survive_kill_9_of_the_broker() {
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;

    // A persistent session subscribes, then goes away.
    let (keeper, mut kev, present) = connect(options(port, "keeper", false)).await;
    assert!(!present);
    keeper.subscribe("jobs/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut kev, |p| matches!(p, Packet::SubAck(_))).await;
    keeper.disconnect().await.unwrap();
    let _ = kev.poll().await;
    drop(kev);

    // 200 QoS 1 messages and a retained one, each acknowledged by the broker.
    let (publisher, mut pev, _) = connect(options(port, "boss", true)).await;
    for i in 0..200u32 {
        publisher
            .publish(
                "jobs/new",
                QoS::AtLeastOnce,
                false,
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    publisher
        .publish("state/mode", QoS::AtLeastOnce, true, "auto")
        .await
        .unwrap();
    let mut acks = 0;
    poll_until(&mut pev, |p| {
        acks += usize::from(matches!(p, Packet::PubAck(_)));
        acks == 201
    })
    .await;
    drop(pev);

    // kill -9 the broker; init restarts it.
    core.kill_9("broker").await;
    let port = core.broker_port("tcp").await;

    // Every acknowledged message arrives, in order, once the session returns.
    let (keeper, mut kev, present) = connect(options(port, "keeper", false)).await;
    assert!(present, "the session survived");
    let mut got = Vec::new();
    poll_until(&mut kev, |p| {
        if let Packet::Publish(m) = p {
            got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
        }
        got.len() == 200
    })
    .await;
    assert_eq!(got, (0..200).collect::<Vec<_>>());

    // The subscription survived too, and so did the retained message.
    let (publisher, mut pev, _) = connect(options(port, "boss2", true)).await;
    publisher
        .publish("jobs/after", QoS::AtLeastOnce, false, "after")
        .await
        .unwrap();
    poll_until(&mut pev, |p| matches!(p, Packet::PubAck(_))).await;
    poll_until(
        &mut kev,
        |p| matches!(p, Packet::Publish(m) if m.topic == "jobs/after"),
    )
    .await;
    drop(keeper);

    let (late, mut lev, _) = connect(options(port, "late", true)).await;
    late.subscribe("state/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(
        &mut lev,
        |p| matches!(p, Packet::Publish(m) if m.retain && &m.payload[..] == b"auto"),
    )
    .await;
    let log = std::fs::read_to_string(core.root().join("logs/broker.log")).unwrap();
    assert!(log.contains("persistent sessions restored"), "{log}");
}

#[tokio::test]
async fn wills_of_clients_connected_at_kill_9_are_published_after_the_restart() {
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;

    // A persistent session waits for wills while it is away.
    let (watcher, mut wev, _) = connect(options(port, "watcher", false)).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut wev, |p| matches!(p, Packet::SubAck(_))).await;
    watcher.disconnect().await.unwrap();
    let _ = wev.poll().await;
    drop(wev);

    // A clean-session client with a plain will and a persistent-session
    // client with a retained one, both connected when the broker dies.
    let mut held = Vec::new();
    for (id, clean, retain) in [("fleeting", true, false), ("steady", false, true)] {
        let mut o = options(port, id, clean);
        o.set_last_will(rumqttc::LastWill::new(
            format!("will/{id}"),
            format!("{id} is gone"),
            QoS::AtLeastOnce,
            retain,
        ));
        // Not polled from here on: the connection stays open, unread,
        // until the broker is killed.
        held.push(connect(o).await);
    }
    core.kill_9("broker").await;
    let port = core.broker_port("tcp").await;

    let (_watcher, mut wev, present) = connect(options(port, "watcher", false)).await;
    assert!(present);
    let mut wills = Vec::new();
    poll_until(&mut wev, |p| {
        if let Packet::Publish(m) = p {
            wills.push((
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).to_string(),
            ));
        }
        wills.len() == 2
    })
    .await;
    wills.sort();
    assert_eq!(
        wills,
        vec![
            ("will/fleeting".to_string(), "fleeting is gone".to_string()),
            ("will/steady".to_string(), "steady is gone".to_string()),
        ]
    );
    // The retained will is there for later subscribers.
    let (late, mut lev, _) = connect(options(port, "late", true)).await;
    late.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(
        &mut lev,
        |p| matches!(p, Packet::Publish(m) if m.retain && m.topic == "will/steady"),
    )
    .await;
    core.wait_for_log(
        "broker",
        &["wills of clients connected when the broker stopped"],
    )
    .await;
    drop(held);
}

/// A QoS 1 message handed to a persistent session's connection and not
/// acknowledged when the broker is killed is sent again with DUP set; one
/// queued for a session whose client was away goes for the first time,
/// without (and with DUP after a further kill, once it was handed over).
#[tokio::test]
async fn a_message_in_flight_at_kill_9_comes_again_as_a_duplicate() {
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    let manual = |port, id| {
        let mut o = options(port, id, false);
        o.set_manual_acks(true);
        o
    };

    // "away" subscribes and leaves; "holder" subscribes and stays.
    let (away, mut aev, _) = connect(options(port, "away", false)).await;
    away.subscribe("dup/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut aev, |p| matches!(p, Packet::SubAck(_))).await;
    away.disconnect().await.unwrap();
    let _ = aev.poll().await;
    drop(aev);
    let (held, mut hev, _) = connect(manual(port, "holder")).await;
    held.subscribe("dup/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut hev, |p| matches!(p, Packet::SubAck(_))).await;

    let (publisher, mut pev, _) = connect(options(port, "boss", true)).await;
    publisher
        .publish("dup/1", QoS::AtLeastOnce, false, "once")
        .await
        .unwrap();
    poll_until(&mut pev, |p| matches!(p, Packet::PubAck(_))).await;
    // Received, and not acknowledged.
    let first = next_publish(&mut hev).await;
    assert!(!first.dup, "a first send has no DUP");

    core.kill_9("broker").await;
    let port = core.broker_port("tcp").await;
    drop(hev);

    let (_held, mut hev, present) = connect(manual(port, "holder")).await;
    assert!(present, "the session survived");
    let again = next_publish(&mut hev).await;
    assert_eq!(
        (again.topic.as_str(), &again.payload[..]),
        ("dup/1", &b"once"[..])
    );
    assert!(again.dup, "sent again after the restart: DUP set");

    let (_away, mut aev, present) = connect(manual(port, "away")).await;
    assert!(present);
    let queued = next_publish(&mut aev).await;
    assert_eq!(queued.topic, "dup/1");
    assert!(!queued.dup, "never sent before: no DUP");

    // Taken by its connection now, and not acknowledged: after another
    // kill -9 it too goes again as a duplicate.
    core.kill_9("broker").await;
    let port = core.broker_port("tcp").await;
    drop(aev);
    let (_away, mut aev, _) = connect(manual(port, "away")).await;
    let again = next_publish(&mut aev).await;
    assert_eq!(again.topic, "dup/1");
    assert!(again.dup, "handed over before the second restart: DUP set");
}
