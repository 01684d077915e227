//! A target that cannot take a message loses its copy and does not hold the
//! device hostage: with a function that cannot run (its artifact is
//! missing) on the same route as a device, a device's QoS 0, 1 and 2
//! messages reach the device, are acknowledged, and the publisher's
//! connection stays up; the router counts what the function did not get.

use std::time::Duration;

use rumqttc::{Event, Packet, QoS};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, receive_messages, subscribed, until};
use verdant_integration_tests::{Core, Options, PATIENCE};

const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";
const BROKEN: &str = "arn:aws:lambda:us-east-1:123456789012:function:broken:1";

fn group() -> String {
    serde_json::json!({
        "Id": "undelivered-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2), thing("b", 3)] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [
                { "Id": "broken", "FunctionArn": BROKEN,
                  "FunctionConfiguration": { "Executable": "missing.handler", "Timeout": 3 } },
            ]
        },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "a-to-b", "Source": arn("a"), "Subject": "data/#", "Target": arn("b") },
            { "Id": "a-to-f", "Source": arn("a"), "Subject": "data/#", "Target": BROKEN },
        ]},
    })
    .to_string()
}

#[tokio::test]
async fn a_function_that_cannot_run_does_not_hold_the_device_hostage() {
    let group = group();
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    // Linked: the lambda-runner and the broker with the router.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let links = core.routes().await.links;
            if links.iter().any(|l| l == "broker") && links.iter().any(|l| l == "lambda-runner") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("linked");

    let (b, mut b_ev) = connect(port, "b", false).await;
    subscribed(&b, &mut b_ev, "data/#").await;
    let (a, mut a_ev) = connect(port, "a", false).await;
    // Each QoS twice, each acknowledged (PUBACK, PUBCOMP) on the same
    // connection: `until` fails the test if the connection drops.
    for round in 0..2 {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("{round}-{}", qos as u8);
            a.publish("data/x", qos, false, payload.clone().into_bytes())
                .await
                .unwrap();
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => until(&mut a_ev, |p| matches!(p, Packet::PubAck(_))).await,
                QoS::ExactlyOnce => until(&mut a_ev, |p| matches!(p, Packet::PubComp(_))).await,
            }
        }
    }
    let got = receive_messages(&mut b_ev, 6).await;
    let payloads: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads, ["0-0", "0-1", "0-2", "1-0", "1-1", "1-2"]);

    // Still connected: a ping goes through.
    a.publish("data/after", QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    until(&mut a_ev, |p| matches!(p, Packet::PubAck(_))).await;
    let got = receive_messages(&mut b_ev, 1).await;
    assert_eq!(got[0].1, "still here");
    let reconnects = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Ok(Event::Incoming(Packet::ConnAck(_))) | Err(_) = a_ev.poll().await {
                return;
            }
        }
    })
    .await;
    assert!(reconnects.is_err(), "the device's connection stayed up");

    // The router counts the function's lost copies of the QoS 1/2 ones
    // (QoS 0 ones are not acknowledged, so only the lambda-runner's log
    // tells), and each side logs once, not per message.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let r = core.routes().await;
            if r.undelivered.iter().any(|u| {
                u.endpoint == "lambda-runner"
                    && u.targets == BROKEN
                    && u.reason == "refused"
                    && u.messages == 5
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the router counts the refused copies");
    let text = String::from_utf8_lossy(&core.ctl(&["routes"]).stdout).to_string();
    assert!(text.contains("not delivered (refused): 5 for"), "{text}");
    let log = |s: &str| std::fs::read_to_string(core.root().join(format!("logs/{s}.log"))).unwrap();
    // (Once per 10 s: the whole exchange takes less unless the machine
    // is very slow, and fewer lines than messages either way.)
    let router = log("router");
    let lines = router
        .matches("messages not delivered to these targets")
        .count();
    assert!((1..5).contains(&lines), "{router}");
    let lambda = log("lambda-runner");
    let lines = lambda.matches("not delivered:").count();
    assert!((1..7).contains(&lines), "{lambda}");
    let broker = log("broker");
    assert!(!broker.contains("not acknowledged"), "{broker}");
}
