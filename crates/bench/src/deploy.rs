//! Deployments on a running core with devices connected: time from
//! `Deploy` to the new table in effect (the deployment leaves APPLYING)
//! and to SUCCEEDED, for a change of one subscription and for a change of
//! one pinned function, while one device sends QoS 1 messages to another
//! through it all; disconnects and lost messages counted.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::Phase;
use verdant_proto::ota::v1::deployments_client::DeploymentsClient;

use crate::spawn;

const LIMIT: Duration = Duration::from_mins(1);
const ACCOUNT: &str = "arn:aws:iot:us-east-1:123456789012";

fn thing(name: &str, n: usize) -> serde_json::Value {
    serde_json::json!({
        "Id": name,
        "ThingArn": format!("{ACCOUNT}:thing/{name}"),
        "CertificateArn": format!("{ACCOUNT}:cert/{n:064x}"),
    })
}

/// The core, `devices` devices, the flow route dev-0 → dev-1, an extra
/// route whose subject names `k`, and a pinned function whose environment
/// names `f`.
fn group(devices: usize, k: usize, f: usize) -> String {
    let things: Vec<_> = (0..devices)
        .map(|i| thing(&format!("dev-{i}"), i + 2))
        .collect();
    let arn = |name: &str| format!("{ACCOUNT}:thing/{name}");
    serde_json::json!({
        "Id": "bench-deploy",
        "Version": format!("{k}-{f}"),
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": things },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [
                { "Id": "idle", "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:idle:1"),
                  "FunctionConfiguration": { "Executable": "idle.sh", "Pinned": true, "Timeout": 3,
                    "Environment": { "Variables": { "GENERATION": f.to_string() } } } }
            ]
        },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "flow", "Source": arn("dev-0"), "Subject": "flow/#", "Target": arn("dev-1") },
            { "Id": "extra", "Source": arn("dev-2"), "Subject": format!("extra/{k}/#"), "Target": arn("dev-3") },
        ]},
    })
    .to_string()
}

fn install_function(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("functions/idle/1");
    std::fs::create_dir_all(&dir).expect("dirs");
    let script = dir.join("idle.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 3600\n").expect("write");
    for (p, mode) in [
        (root.join("functions"), 0o755),
        (root.join("functions/idle"), 0o755),
        (dir.clone(), 0o755),
        (script, 0o755),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

/// Counts of what the devices saw.
#[derive(Default)]
struct Seen {
    disconnects: AtomicU64,
    acked: AtomicU64,
}

pub async fn run(bin_dir: &Path, devices: usize, deployments: usize) {
    assert!(devices >= 4, "at least 4 devices");
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let port = spawn::free_port();
    let dropin = format!(
        "[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n\
         [lambda-runner]\nrun_on_insecure_host = true\n"
    );
    std::fs::create_dir_all(&root).expect("root");
    install_function(&root);
    let mut core = spawn::core(&bin_dir, &root, &dropin, Some(&group(devices, 0, 0)));
    let socket = root.join("run/ota-agent.sock");
    let channel = wait_for(&socket).await;
    let mut api = DeploymentsClient::new(channel);

    let seen = Arc::new(Seen::default());
    let (clients, mut flow_rx) = connect_devices(devices, port, &seen).await;
    // Let the subscription land, then dev-0 sends QoS 1 messages all along.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sender = clients[0].clone();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let sent = sent.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                sender
                    .publish(format!("flow/{n}"), QoS::AtLeastOnce, false, vec![0u8; 64])
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let mut table = Vec::new();
    let mut total_sub = Vec::new();
    let mut function = Vec::new();
    for i in 1..=deployments {
        // Alternately one subscription changed, then one function.
        let (k, f, changes_function) = if i % 2 == 1 {
            (i, i - 1, false)
        } else {
            (i - 1, i, true)
        };
        let (to_table, to_end) = deploy(&mut api, &group(devices, k, f)).await;
        if changes_function {
            function.push(to_end);
        } else {
            table.push(to_table);
            total_sub.push(to_end);
        }
    }
    stop.store(true, Ordering::Relaxed);
    flow.await.expect("flow");
    let published = sent.load(Ordering::Relaxed);
    // Every acknowledged message must arrive (QoS 1: at least once).
    let deadline = Instant::now() + LIMIT;
    let mut got = HashSet::new();
    while (got.len() as u64) < seen.acked.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Ok(Some(t)) = tokio::time::timeout(Duration::from_millis(500), flow_rx.recv()).await
        {
            got.insert(t);
        }
    }
    let acked = seen.acked.load(Ordering::Relaxed);
    println!("## deployments with {devices} devices connected\n");
    println!("| figure | median | min | max | n |\n|---|---|---|---|---|");
    row(
        "one subscription changed: Deploy → new table in effect",
        &mut table,
    );
    row(
        "one subscription changed: Deploy → SUCCEEDED",
        &mut total_sub,
    );
    row(
        "one pinned function changed: Deploy → SUCCEEDED (incl. 500 ms settle)",
        &mut function,
    );
    println!(
        "\ndisconnects: {}; QoS 1 messages published {published}, acknowledged {acked}, \
         received {} (lost: {})",
        seen.disconnects.load(Ordering::Relaxed),
        got.len(),
        acked.saturating_sub(got.len() as u64)
    );
    spawn::stop(&mut core);
}

/// Connects `devices` devices on the plain listener, dev-1 subscribed to
/// the flow; what dev-1 receives of it comes out of the receiver.
async fn connect_devices(
    devices: usize,
    port: u16,
    seen: &Arc<Seen>,
) -> (
    Vec<AsyncClient>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (flow_tx, flow_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut clients = Vec::new();
    for i in 0..devices {
        let mut o = MqttOptions::new(format!("dev-{i}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(true);
        let (client, mut events) = AsyncClient::new(o, 1000);
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let seen = seen.clone();
        let flow_tx = flow_tx.clone();
        tokio::spawn(async move {
            let mut up = Some(up_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(up) = up.take() {
                            let _ = up.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with("flow/") => {
                        let _ = flow_tx.send(p.topic.clone());
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) if i == 0 => {
                        seen.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        seen.disconnects.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(LIMIT, up_rx)
            .await
            .expect("the device connects")
            .expect("connected");
        if i == 1 {
            client
                .subscribe("flow/#", QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        clients.push(client);
    }
    (clients, flow_rx)
}

/// Deploys `group` and watches it: (Deploy → APPLYING ended, Deploy → SUCCEEDED).
async fn deploy(
    api: &mut DeploymentsClient<tonic::transport::Channel>,
    group: &str,
) -> (Duration, Duration) {
    let begun = Instant::now();
    let d = api
        .deploy(pb::DeployRequest {
            source: Some(pb::deploy_request::Source::GroupJson(
                group.as_bytes().to_vec(),
            )),
            origin: "verdant-bench".into(),
            ..pb::DeployRequest::default()
        })
        .await
        .expect("deploy")
        .into_inner();
    let mut watch = api
        .watch_deployment(pb::DeploymentRequest {
            deployment_id: d.deployment_id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut applied = None;
    loop {
        let d = tokio::time::timeout(LIMIT, watch.message())
            .await
            .expect("in time")
            .expect("stream")
            .expect("open");
        match d.phase() {
            Phase::HealthCheck if applied.is_none() => applied = Some(begun.elapsed()),
            Phase::Succeeded => {
                let end = begun.elapsed();
                return (applied.unwrap_or(end), end);
            }
            Phase::Failed | Phase::RolledBack | Phase::Cancelled => {
                panic!("deployment ended {:?}: {}", d.phase(), d.reason)
            }
            _ => {}
        }
    }
}

/// The ota-agent's channel once it answers (it serves once recovered).
async fn wait_for(socket: &Path) -> tonic::transport::Channel {
    let begun = Instant::now();
    loop {
        if let Ok(ch) = verdant_common::uds::connect(socket).await
            && DeploymentsClient::new(ch.clone())
                .list_deployments(pb::ListDeploymentsRequest::default())
                .await
                .is_ok()
        {
            return ch;
        }
        assert!(begun.elapsed() < LIMIT, "the ota-agent never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn row(what: &str, v: &mut [Duration]) {
    v.sort();
    if v.is_empty() {
        return;
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {what} | {} | {} | {} | {} |",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    );
}
