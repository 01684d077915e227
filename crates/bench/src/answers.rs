//! What the function and connector benchmarks share: a device on the
//! core's plain listener, and a stream of requests with a few in flight,
//! timed until each has its answer.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const LIMIT: Duration = Duration::from_mins(2);

/// A device on the core's plain listener, subscribed to `answers`.
pub(crate) async fn device(port: u16, answers: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new("bench-dev", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 1000);
    client
        .subscribe(answers, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connect") {
            return (client, events);
        }
    }
}

/// `n` messages of `body` on `topic`, at most `window` not yet answered
/// on `answers`, each answer checked by `ok`: messages answered per second.
pub(crate) async fn answered(
    port: u16,
    (topic, answers): (&str, &str),
    body: &str,
    n: usize,
    window: usize,
    ok: fn(&[u8]) -> bool,
) -> f64 {
    let (client, mut events) = device(port, answers).await;
    let start = Instant::now();
    let (mut sent, mut got) = (0, 0);
    tokio::time::timeout(LIMIT, async {
        while got < n {
            while sent < n && sent - got < window {
                client
                    .try_publish(topic, QoS::AtLeastOnce, false, body.to_string())
                    .expect("publish");
                sent += 1;
            }
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("poll") {
                assert!(ok(&p.payload), "{:?}", p.payload);
                got += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{got} of {n} answers"));
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = client.try_disconnect();
    let _ = events.poll().await;
    rate
}
