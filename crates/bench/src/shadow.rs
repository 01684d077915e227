//! The shadow service: durable updates per second (one thing, and spread
//! over 1,000 things) from concurrent gRPC callers, and get latency over
//! gRPC and over MQTT (the sample device on the plain listener, through
//! broker and router).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tonic::transport::Channel;
use verdant_proto::shadow::v1 as pb;
use verdant_proto::shadow::v1::shadow_client::ShadowClient;

use crate::mqtt::percentile;
use crate::spawn;

const LIMIT: Duration = Duration::from_secs(30);

/// `callers` tasks doing `total` updates over `things` things; updates/s.
async fn updates(channel: &Channel, callers: usize, total: usize, things: usize) -> f64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut api = ShadowClient::new(channel.clone());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let doc = format!(r#"{{"state":{{"reported":{{"n":{i},"temp":21.5}}}}}}"#);
                api.update_shadow(pb::UpdateShadowRequest {
                    thing_name: format!("bench-{}", i % things),
                    shadow_name: String::new(),
                    payload: doc.into_bytes(),
                })
                .await
                .expect("update");
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Sequential gets over gRPC: latencies in µs.
async fn grpc_gets(channel: &Channel, n: usize) -> Vec<u64> {
    let mut api = ShadowClient::new(channel.clone());
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        api.get_shadow(pb::GetShadowRequest {
            thing_name: "bench-0".into(),
            shadow_name: String::new(),
        })
        .await
        .expect("get");
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat
}

/// Sequential gets over MQTT as the sample device (whose shadow `channel`
/// creates first): latencies in µs.
async fn mqtt_gets(channel: &Channel, port: u16, n: usize) -> Vec<u64> {
    ShadowClient::new(channel.clone())
        .update_shadow(pb::UpdateShadowRequest {
            thing_name: "sample-device".into(),
            shadow_name: String::new(),
            payload: br#"{"state":{"reported":{"on":true}}}"#.to_vec(),
        })
        .await
        .expect("update");
    let mut o = MqttOptions::new("sample-device", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 100);
    let topic = "$aws/things/sample-device/shadow/get";
    client
        .subscribe(format!("{topic}/+"), QoS::AtMostOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connect") {
            break;
        }
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .publish(topic, QoS::AtMostOnce, false, r#"{"clientToken":"b"}"#)
            .await
            .expect("publish");
        let reply = tokio::time::timeout(LIMIT, async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("poll") {
                    return p.topic;
                }
            }
        })
        .await
        .expect("a reply to the get");
        assert!(reply.ends_with("/accepted"), "{reply}");
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat
}

pub async fn run(bin_dir: &Path, runs: usize) {
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let port = spawn::free_port();
    let mut core = spawn::core(
        &bin_dir,
        &root,
        &format!(
            "[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n"
        ),
        None,
    );
    let deadline = Instant::now() + LIMIT;
    let socket = root.join("run/shadow.sock");
    let channel = loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && let Ok(c) = verdant_common::uds::connect(&socket).await
        {
            break c;
        }
        assert!(Instant::now() < deadline, "the core did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The router must have linked the broker and the shadow service.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut one = Vec::new();
    let mut many = Vec::new();
    let mut grpc = Vec::new();
    let mut mqtt = Vec::new();
    for _ in 0..runs {
        one.push(updates(&channel, 64, 20_000, 1).await);
        many.push(updates(&channel, 64, 20_000, 1000).await);
        let mut g = grpc_gets(&channel, 2000).await;
        g.sort_unstable();
        grpc.push(g);
        let mut m = mqtt_gets(&channel, port, 2000).await;
        m.sort_unstable();
        mqtt.push(m);
    }
    let p =
        |runs: &[Vec<u64>], q: f64| median(runs.iter().map(|r| percentile(r, q) as f64).collect());
    println!("| figure | median of {runs} runs |\n|---|---|");
    println!(
        "| durable updates/s, one thing, 64 gRPC callers | {:.0} |",
        median(one)
    );
    println!(
        "| durable updates/s, 1,000 things, 64 gRPC callers | {:.0} |",
        median(many)
    );
    println!(
        "| get over gRPC, p50 / p99 µs | {:.0} / {:.0} |",
        p(&grpc, 50.0),
        p(&grpc, 99.0)
    );
    println!(
        "| get over MQTT (device → broker → router → shadow and back), p50 / p99 µs | {:.0} / {:.0} |",
        p(&mqtt, 50.0),
        p(&mqtt, 99.0)
    );
    spawn::stop(&mut core);
}
