//! The router's links: a daemon linked but stuck (no credit) holds only its
//! own messages. Here a test-made link stands in for the shadow service.

use std::time::Duration;

use rumqttc::{Event, Packet, QoS};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, received, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

const DROPIN: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n\
                      [router]\nmax_held_per_endpoint = 5\n";

fn group() -> String {
    serde_json::json!({
        "Id": "links-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2), thing("b", 3)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "a-shadow", "Source": arn("a"), "Subject": "$aws/things/a/shadow/#", "Target": "GGShadowService" },
            { "Id": "a-b", "Source": arn("a"), "Subject": "a/to-b/#", "Target": arn("b") },
        ]},
    })
    .to_string()
}

async fn routes(core: &Core) -> pb::ListRoutesResponse {
    let channel = verdant_common::uds::connect(&core.socket("router"))
        .await
        .unwrap();
    RouterClient::new(channel)
        .list_routes(pb::ListRoutesRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn up(kind: pb::link_up::Kind) -> pb::LinkUp {
    pb::LinkUp { kind: Some(kind) }
}

/// A "shadow service" linked to the router that grants no credit: its
/// sender up and its stream down.
async fn stuck_shadow(
    core: &Core,
) -> (
    mpsc::UnboundedSender<pb::LinkUp>,
    tonic::Streaming<pb::LinkDown>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(up(pb::link_up::Kind::Hello(pb::Hello {
        endpoint: "shadow".into(),
        credit: 0,
    })))
    .unwrap();
    let channel = verdant_common::uds::connect(&core.socket("router"))
        .await
        .unwrap();
    let down = RouterClient::new(channel)
        .link(UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(PATIENCE, async {
        while !routes(core).await.links.contains(&"shadow".to_string()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the shadow link is up");
    (tx, down)
}

#[tokio::test]
async fn a_stuck_target_holds_only_its_own_messages() {
    let group = group();
    let core = Core::start_with(&Options {
        dropin: Some(DROPIN),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;

    let (tx, mut down) = stuck_shadow(&core).await;
    let (dev_a, mut a_ev) = connect(port, "a", false).await;
    let (dev_b, mut b_ev) = connect(port, "b", false).await;
    subscribed(&dev_b, &mut b_ev, "a/#").await;

    // QoS 1 to the stuck target: held, not acknowledged.
    dev_a
        .publish("$aws/things/a/shadow/update", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    // QoS 0 past the held limit (5, one taken by the QoS 1 message): dropped, counted.
    for _ in 0..10 {
        dev_a
            .publish("$aws/things/a/shadow/get", QoS::AtMostOnce, false, "")
            .await
            .unwrap();
    }
    // Device to device flows meanwhile.
    dev_a
        .publish("a/to-b/1", QoS::AtLeastOnce, false, "through")
        .await
        .unwrap();
    let mut acks = 0;
    let got = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            tokio::select! {
                ev = a_ev.poll() => if let Ok(Event::Incoming(Packet::PubAck(_))) = ev { acks += 1 },
                got = received(&mut b_ev, Duration::from_millis(100)) => if !got.is_empty() { return got },
            }
        }
    })
    .await
    .expect("b gets a's message while the shadow target is stuck");
    assert_eq!(got[0].1, "through");
    // MQTT acknowledges a client's publishes in order: a's PUBACKs wait
    // behind the held shadow message.
    assert_eq!(acks, 0);
    tokio::time::timeout(PATIENCE, async {
        loop {
            let r = routes(&core).await;
            let shadow = r.overflow.iter().find(|o| o.endpoint == "shadow").unwrap();
            if shadow.messages >= 6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("QoS 0 overflow counted");

    // The shadow service recovers: grants credit, gets what was held and
    // acknowledges the QoS 1 message; then the device gets its PUBACKs.
    tx.send(up(pb::link_up::Kind::Credit(pb::Credit { messages: 100 })))
        .unwrap();
    let mut held = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while held.len() < 5 {
            if let Some(pb::LinkDown {
                kind: Some(pb::link_down::Kind::Messages(m)),
            }) = down.message().await.unwrap()
            {
                held.extend(m.messages);
            }
        }
    })
    .await
    .expect("the held messages arrive");
    assert_eq!(held[0].topic, "$aws/things/a/shadow/update");
    assert_eq!(held[0].source, arn("a"));
    assert_eq!(held[0].targets, ["GGShadowService"]);
    tx.send(up(pb::link_up::Kind::Acks(pb::Acks {
        ids: vec![held[0].id],
        refused: vec![],
    })))
    .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while acks < 2 {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = a_ev.poll().await {
                acks += 1;
            }
        }
    })
    .await
    .expect("both PUBACKs once the shadow service has its message");
}
