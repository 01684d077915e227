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

fn up(kind: pb::link_up::Kind) -> pb::LinkUp {
    pb::LinkUp { kind: Some(kind) }
}

/// A link to the router standing in for the daemon `endpoint`, granting
/// `credit`: its sender up and its stream down, once the router lists it.
async fn link_as(
    core: &Core,
    endpoint: &str,
    credit: u32,
) -> (
    mpsc::UnboundedSender<pb::LinkUp>,
    tonic::Streaming<pb::LinkDown>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(up(pb::link_up::Kind::Hello(pb::Hello {
        endpoint: endpoint.into(),
        credit,
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
        while !core.routes().await.links.contains(&endpoint.to_string()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the link is up");
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

    // A "shadow service" that grants no credit.
    let (tx, mut down) = link_as(&core, "shadow", 0).await;
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
    let got = tokio::time::timeout(PATIENCE, async {
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
            let r = core.routes().await;
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

const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:f:1";

/// Waits for the next acknowledgements down a link: (taken, refused).
async fn next_acks(down: &mut tonic::Streaming<pb::LinkDown>) -> (Vec<u64>, Vec<u64>) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(pb::LinkDown {
                kind: Some(pb::link_down::Kind::Acks(a)),
            }) = down.message().await.unwrap()
            {
                return (a.ids, a.refused);
            }
        }
    })
    .await
    .expect("acknowledgements")
}

#[tokio::test]
async fn a_function_asking_all_or_error_is_refused_by_a_full_cloud_queue() {
    let group = serde_json::json!({
        "Id": "all-or-error",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "FunctionDefinitionVersion": { "Functions": [{ "Id": "f", "FunctionArn": FUNCTION }] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "f-cloud", "Source": FUNCTION, "Subject": "f/out/#", "Target": "cloud" },
        ]},
    })
    .to_string();
    // A cloud that never answers, and the smallest queue.
    let nobody = verdant_integration_tests::cloud::Held::new();
    let dropin = format!(
        "[router.cloud]\nendpoint = \"localhost\"\nport = {}\nca = \"config/certs/group-ca.pem\"\n\
         queue_max_bytes = 262144\n",
        nobody.port
    );
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    // A stand-in "lambda-runner" publishing for function f, in place of
    // the real one.
    let out = core.ctl(&["stop", "lambda-runner"]);
    assert!(out.status.success(), "{out:?}");
    let (tx, mut down) = link_as(&core, "lambda-runner", 100).await;
    let message = |id: u64, all_or_error: bool| pb::Message {
        id,
        source: FUNCTION.into(),
        topic: "f/out/x".into(),
        payload: vec![b'x'; 1000].into(),
        qos: 1,
        all_or_error,
        ..pb::Message::default()
    };
    // Fill the queue (best effort: the oldest make room).
    let fill: Vec<pb::Message> = (1..=300).map(|id| message(id, false)).collect();
    tx.send(up(pb::link_up::Kind::Messages(pb::Messages {
        messages: fill,
    })))
    .unwrap();
    let mut taken = Vec::new();
    while taken.len() < 300 {
        let (ids, refused) = next_acks(&mut down).await;
        assert!(refused.is_empty(), "{refused:?}");
        taken.extend(ids);
    }
    // All or error: refused, nothing dropped for it.
    tx.send(up(pb::link_up::Kind::Messages(pb::Messages {
        messages: vec![message(301, true)],
    })))
    .unwrap();
    assert_eq!(next_acks(&mut down).await, (vec![], vec![301]));
    // Best effort again: taken.
    tx.send(up(pb::link_up::Kind::Messages(pb::Messages {
        messages: vec![message(302, false)],
    })))
    .unwrap();
    assert_eq!(next_acks(&mut down).await, (vec![302], vec![]));
}
