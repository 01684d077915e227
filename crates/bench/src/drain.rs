//! The cloud queue's drain: a core in routed mode queues `messages` QoS 1
//! messages from a device while its cloud (a local Mosquitto with mutual
//! TLS, as the integration tests use) is down; then the cloud comes up and
//! the time from the router's connection to an empty queue is measured,
//! for each window size (Greengrass v1 sends one message at a time).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

use crate::spawn::{self, free_port};

const LIMIT: Duration = Duration::from_mins(5);

/// The cloud's CA and server certificate, written to `dir`.
fn cloud_certs(dir: &Path) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let key = KeyPair::generate().expect("key");
    let cert = server.signed_by(&key, &issuer).expect("server certificate");
    std::fs::write(dir.join("cloud-ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
}

fn group() -> String {
    let arn = |n: &str| format!("arn:aws:iot:us-east-1:123456789012:thing/{n}");
    let thing = |n: &str, c: &str| {
        serde_json::json!({
            "Id": n, "ThingArn": arn(n),
            "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", c.repeat(64)),
        })
    };
    serde_json::json!({
        "Id": "drain-bench",
        "CoreDefinitionVersion": { "Cores": [thing("drain-core", "1")] },
        "DeviceDefinitionVersion": { "Devices": [thing("drain-device", "2")] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "to-cloud", "Source": arn("drain-device"), "Subject": "drain/#", "Target": "cloud" },
        ]},
    })
    .to_string()
}

async fn cloud(socket: &Path) -> Option<pb::GetCloudResponse> {
    let channel = verdant_common::uds::connect(socket).await.ok()?;
    RouterClient::new(channel)
        .get_cloud(pb::GetCloudRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

async fn wait_cloud(socket: &Path, pred: impl Fn(&pb::GetCloudResponse) -> bool) -> Instant {
    let deadline = Instant::now() + LIMIT;
    loop {
        if cloud(socket).await.as_ref().is_some_and(&pred) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the router did not get there");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One drain with `window` messages in flight; messages per second.
async fn once(bin_dir: &Path, messages: usize, window: u16) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    cloud_certs(dir.path());
    let (mqtt, cloud_port) = (free_port(), free_port());
    let dropin = format!(
        "[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:{mqtt}\"\n\
         [router.cloud]\nendpoint = \"localhost\"\nport = {cloud_port}\nca = \"{}\"\n\
         max_retry_interval_secs = 1\nwindow = {window}\nqueue_max_bytes = {}\n",
        dir.path().join("cloud-ca.pem").display(),
        messages * 200
    );
    let mut core = spawn::core(bin_dir, &root, &dropin, Some(&group()));
    let socket = root.join("run/router.sock");

    // Queue while the cloud is down.
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", mqtt)).is_err() {
        assert!(Instant::now() < deadline, "the core did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut o = MqttOptions::new("drain-device", "127.0.0.1", mqtt);
    o.set_inflight(100);
    let (client, mut events) = AsyncClient::new(o, 1000);
    let publisher = tokio::spawn(async move {
        for i in 0..messages {
            client
                .publish("drain/t", QoS::AtLeastOnce, false, format!("{i:064}"))
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < messages {
        match events.poll().await.expect("device connection") {
            Event::Incoming(Packet::PubAck(_)) => acked += 1,
            Event::Outgoing(Outgoing::Disconnect) => break,
            _ => {}
        }
    }
    let _client = publisher.await.expect("publisher");
    wait_cloud(&socket, |c| c.queued_messages as usize == messages).await;

    // The cloud comes up: time from connection to an empty queue.
    let mut mosquitto = start_mosquitto(
        dir.path(),
        cloud_port,
        &root.join("config/certs/group-ca.pem"),
    );
    let connected = wait_cloud(&socket, |c| c.state == "connected").await;
    let empty = wait_cloud(&socket, |c| c.queued_messages == 0).await;
    let rate = messages as f64 / (empty - connected).as_secs_f64();
    spawn::stop(&mut mosquitto);
    spawn::stop(&mut core);
    rate
}

fn start_mosquitto(dir: &Path, port: u16, client_ca: &Path) -> Child {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    let conf = dir.join("mosquitto.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "user {user}\nlog_dest none\npersistence false\nset_tcp_nodelay true\n\
             listener {port} 127.0.0.1\ncafile {}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\nuse_identity_as_username true\n",
            client_ca.display()
        ),
    )
    .expect("write");
    Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/test-deps.sh installs it)")
}

pub async fn run(bin_dir: &Path, messages: usize, windows: &[u16], runs: usize) {
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    println!("| window | drain msg/s (median of {runs}) | runs |\n|---|---|---|");
    for &window in windows {
        let mut rates = Vec::new();
        for _ in 0..runs {
            rates.push(once(&bin_dir, messages, window).await);
        }
        rates.sort_by(f64::total_cmp);
        let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {window} | {:.0} | {} |",
            rates[rates.len() / 2],
            all.join(", ")
        );
    }
}
