//! Small helpers around rumqttc for tests that drive devices and cloud
//! clients by hand.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::PATIENCE;

/// Connects `id` to `port` on loopback (clean session unless `persistent`).
pub async fn connect(port: u16, id: &str, persistent: bool) -> (AsyncClient, EventLoop) {
    let (client, events, _) = connect_session(port, id, persistent).await;
    (client, events)
}

/// As [`connect`], and whether the broker had a session for `id`.
pub async fn connect_session(
    port: u16,
    id: &str,
    persistent: bool,
) -> (AsyncClient, EventLoop, bool) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(!persistent);
    let (client, mut events) = AsyncClient::new(o, 1000);
    let mut present = false;
    until(&mut events, |p| match p {
        Packet::ConnAck(ack) => {
            present = ack.session_present;
            true
        }
        _ => false,
    })
    .await;
    (client, events, present)
}

/// Polls until `pred` accepts an incoming packet (within [`PATIENCE`]).
pub async fn until(events: &mut EventLoop, mut pred: impl FnMut(&Packet) -> bool) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) if pred(&p) => return,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("in time");
}

/// Subscribes at QoS 1 and waits for the SUBACK.
pub async fn subscribed(client: &AsyncClient, events: &mut EventLoop, filter: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    until(events, |p| matches!(p, Packet::SubAck(_))).await;
}

/// Publishes at QoS 1 and waits for the PUBACK; returns the topics and
/// payloads of the publishes received meanwhile (a reply to a request may
/// come before the request's PUBACK: MQTT does not order the two).
pub async fn publish(
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
    payload: &str,
) -> Vec<(String, String)> {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .unwrap();
    let mut early = Vec::new();
    until(events, |p| match p {
        Packet::Publish(m) => {
            early.push((
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
            false
        }
        p => matches!(p, Packet::PubAck(_)),
    })
    .await;
    early
}

/// Polls `events` for `wait`, returning the topics and payloads received.
pub async fn received(events: &mut EventLoop, wait: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => got.push((
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    got
}

/// Receives until `n` publishes arrived (within [`PATIENCE`]); their payloads.
pub async fn receive_n(events: &mut EventLoop, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    got.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "only {} of {n} messages; the last: {:?}",
            got.len(),
            &got[got.len().saturating_sub(5)..]
        )
    });
    got
}

/// Receives until `n` distinct payloads arrived (at-least-once delivery may
/// repeat some); the distinct payloads in the order they first arrived.
pub async fn receive_distinct(events: &mut EventLoop, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let s = String::from_utf8_lossy(&p.payload).into_owned();
                    if seen.insert(s.clone()) {
                        got.push(s);
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} distinct messages", got.len()));
    got
}

/// Asserts `got` is `0..n` as strings, reporting only the first difference.
pub fn assert_numbered(got: &[String], n: usize) {
    assert_eq!(got.len(), n, "count");
    if let Some(i) = (0..n).find(|i| got[*i] != i.to_string()) {
        panic!("message {i} is {:?}: out of order or missing", got[i]);
    }
}

/// Receives until `n` publishes arrived (within [`PATIENCE`]); their topics
/// and payloads, in order.
pub async fn receive_messages(events: &mut EventLoop, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < n {
            got.extend(received(events, Duration::from_millis(50)).await);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages: {got:?}", got.len()));
    got
}
