//! A full disk under the broker's store (a small tmpfs in init's own mount
//! namespace, filled by the test): a QoS 1 message the broker cannot store
//! for a persistent session is not acknowledged, the broker's log says
//! why, and once there is room again every acknowledged message reaches
//! the session, from memory and after a `kill -9` from the disk.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS, SubscribeReasonCode};
use verdant_integration_tests::mqtt::{
    connect, publish, receive_distinct, receive_n, received, subscribed, until,
};
use verdant_integration_tests::{Core, Options, PATIENCE};

const TCP: &str =
    "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

/// Message `n`: its number, padded so that each takes room on the disk.
fn message(n: usize) -> String {
    format!("{n:<8000}")
}

/// The numbers of messages received, in the order they arrived.
fn numbers(got: &[String]) -> Vec<usize> {
    got.iter().map(|m| m.trim_end().parse().unwrap()).collect()
}

/// Polls until the broker closes the connection; panics on a PUBACK.
async fn closed_without_puback(events: &mut EventLoop) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    panic!("message acknowledged on a full disk: {ack:?}")
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await
    .expect("the broker closes the connection");
}

async fn send(client: &AsyncClient, events: &mut EventLoop, n: usize) {
    publish(client, events, "jobs/new", &message(n)).await;
}

#[tokio::test]
async fn a_full_disk_refuses_qos1_messages_and_loses_none_it_acknowledged() {
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        disk: Some(("broker", "4m")),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;

    // Two persistent sessions subscribe, then go away.
    for id in ["early", "late"] {
        let (client, mut events) = connect(port, id, true).await;
        subscribed(&client, &mut events, "jobs/#").await;
        client.disconnect().await.unwrap();
        let _ = events.poll().await;
    }
    let (publisher, mut pev) = connect(port, "boss", false).await;
    for n in 0..3 {
        send(&publisher, &mut pev, n).await;
    }

    // The disk fills up: message 3 is refused, not acknowledged.
    let filler = core.fill_disk("broker");
    publisher
        .publish("jobs/new", QoS::AtLeastOnce, false, message(3))
        .await
        .unwrap();
    closed_without_puback(&mut pev).await;
    core.wait_for_log("broker", &["disk is full", "not acknowledged"])
        .await;

    // Nor is a persistent session's subscription taken while it cannot
    // be stored.
    let (client, mut events) = connect(port, "third", true).await;
    client.subscribe("jobs/#", QoS::AtLeastOnce).await.unwrap();
    let mut codes = Vec::new();
    until(&mut events, |p| match p {
        Packet::SubAck(ack) => {
            codes.clone_from(&ack.return_codes);
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(codes, [SubscribeReasonCode::Failure]);

    // Room again: the publisher sends message 3 again, then 4.
    std::fs::remove_file(&filler).unwrap();
    let (publisher, mut pev) = connect(port, "boss", false).await;
    send(&publisher, &mut pev, 3).await;
    send(&publisher, &mut pev, 4).await;

    // A session that returns now has each message (3 perhaps twice: the
    // refused copy reached its queue in memory).
    let (_early, mut events) = connect(port, "early", true).await;
    let got = receive_distinct(&mut events, 5).await;
    assert_eq!(numbers(&got), [0, 1, 2, 3, 4]);

    // After kill -9 the other session has each message once, from the disk.
    core.kill_9("broker").await;
    let port = core.broker_port("tcp").await;
    let (_late, mut events) = connect(port, "late", true).await;
    let got = receive_n(&mut events, 5).await;
    assert_eq!(numbers(&got), [0, 1, 2, 3, 4]);
    let more = received(&mut events, Duration::from_millis(500)).await;
    assert!(more.is_empty(), "{} more after the five", more.len());
}
