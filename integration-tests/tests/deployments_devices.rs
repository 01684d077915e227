//! Devices through deployments: 100 devices stay connected through ten
//! deployments that keep them in the group, while one of them sends QoS 1
//! messages to another; none of the acknowledged messages is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use verdant_integration_tests::deployments::{deploy, routes, watch_to_end};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::ota::v1::Phase;

const DEVICES: usize = 100;

/// 100 devices; dev-0 reaches dev-1 on `flow/#`; a second route whose
/// subject names `k` (what the deployments change).
fn group(k: usize) -> String {
    let devices: Vec<_> = (0..DEVICES)
        .map(|i| thing(&format!("dev-{i}"), u8::try_from(i + 2).unwrap()))
        .collect();
    serde_json::json!({
        "Id": "devices-test",
        "Version": k.to_string(),
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": devices },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "flow", "Source": arn("dev-0"), "Subject": "flow/#", "Target": arn("dev-1") },
            { "Id": "extra", "Source": arn("dev-2"), "Subject": format!("extra/{k}/#"), "Target": arn("dev-3") },
        ]},
    })
    .to_string()
}

/// What every device's event loop counts.
#[derive(Default)]
struct Counts {
    disconnects: Arc<AtomicU64>,
    /// PUBACKs (only dev-0 publishes).
    acked: Arc<AtomicU64>,
}

/// Connects the devices on the plain listener; what they receive (and
/// dev-1's SUBACK, as "") comes out on `got_tx`.
async fn connect_devices(
    port: u16,
    counts: &Counts,
    got_tx: &tokio::sync::mpsc::UnboundedSender<String>,
) -> Vec<AsyncClient> {
    let mut clients = Vec::new();
    for i in 0..DEVICES {
        let mut o = MqttOptions::new(format!("dev-{i}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(o, 1000);
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let (disconnects, acked, got_tx) = (
            counts.disconnects.clone(),
            counts.acked.clone(),
            got_tx.clone(),
        );
        tokio::spawn(async move {
            let mut up = Some(up_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(up) = up.take() {
                            let _ = up.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) if i == 1 => {
                        let _ = got_tx.send(String::new());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = got_tx.send(p.topic.clone());
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        disconnects.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(PATIENCE, up_rx)
            .await
            .expect("the device connects")
            .unwrap();
        clients.push(client);
    }
    clients
}

#[tokio::test]
async fn a_hundred_devices_stay_connected_through_ten_deployments_and_lose_nothing() {
    let first = group(0);
    let core = Core::start_with(&Options {
        dropin: Some("[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n"),
        group: Some(&first),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;

    let counts = Counts::default();
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let clients = connect_devices(port, &counts, &got_tx).await;
    let Counts { disconnects, acked } = counts;
    clients[1]
        .subscribe("flow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(got_rx.recv().await.unwrap(), "", "subscribed");

    // dev-0 sends all along.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (client, stop) = (clients[0].clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .publish(format!("flow/{n}"), QoS::AtLeastOnce, false, vec![7u8; 32])
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };
    for k in 1..=10 {
        let d = deploy(&core, &group(k)).await;
        let seen = watch_to_end(&core, &d.deployment_id).await;
        let last = seen.last().unwrap();
        assert_eq!(last.phase(), Phase::Succeeded, "deployment {k}: {last:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    assert_eq!(routes(&core).await, ["flow/#", "extra/10/#"]);

    // Every message dev-0 had acknowledged reaches dev-1 (at least once).
    let mut received = HashSet::new();
    tokio::time::timeout(PATIENCE, async {
        while (received.len() as u64) < acked.load(Ordering::Relaxed) {
            let topic = got_rx.recv().await.unwrap();
            if topic.starts_with("flow/") {
                received.insert(topic);
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "acknowledged {}, received {}",
            acked.load(Ordering::Relaxed),
            received.len()
        )
    });
    assert!(sent > 0 && acked.load(Ordering::Relaxed) > 0);
    assert_eq!(
        disconnects.load(Ordering::Relaxed),
        0,
        "no device was disconnected"
    );
}
