//! Shadow sync with the cloud for things marked `SyncShadow`: a real
//! Mosquitto as the cloud (mutual TLS), with a fixture answering the cloud
//! side of the shadow protocol (`cloud_shadow`).

use std::time::Duration;

use rumqttc::{Event, Packet};
use serde_json::{Value, json};
use verdant_integration_tests::cloud::Cloud;
use verdant_integration_tests::cloud_shadow::CloudShadows;
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, publish, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::shadow::v1 as pb;
use verdant_proto::shadow::v1::shadow_client::ShadowClient;

const TCP: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

/// Device `s` is synced, device `n` is not; both talk to the shadow service.
fn group() -> String {
    let mut synced = thing("s", 2);
    synced["SyncShadow"] = json!(true);
    let mut subscriptions = Vec::new();
    for d in ["s", "n"] {
        subscriptions.push(json!({ "Id": format!("{d}-to-shadow"), "Source": arn(d),
            "Subject": format!("$aws/things/{d}/shadow/#"), "Target": "GGShadowService" }));
        subscriptions.push(
            json!({ "Id": format!("shadow-to-{d}"), "Source": "GGShadowService",
            "Subject": format!("$aws/things/{d}/shadow/#"), "Target": arn(d) }),
        );
    }
    json!({
        "Id": "sync-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [synced, thing("n", 3)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": subscriptions },
    })
    .to_string()
}

/// A core syncing with `cloud`, whose shadow service `CloudShadows` runs.
async fn start(cloud: &mut Cloud) -> (Core, CloudShadows) {
    let dropin = format!("{TCP}{}", cloud.dropin());
    let group = group();
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    let shadows = CloudShadows::start(cloud.plain_port).await;
    (core, shadows)
}

async fn api(core: &Core) -> ShadowClient<tonic::transport::Channel> {
    let channel = verdant_common::uds::connect(&core.socket("shadow"))
        .await
        .unwrap();
    ShadowClient::new(channel)
}

/// The local shadow's `state` (without `delta`), if any.
async fn local(core: &Core, thing: &str, name: &str) -> Option<Value> {
    let reply = api(core)
        .await
        .get_shadow(pb::GetShadowRequest {
            thing_name: thing.into(),
            shadow_name: name.into(),
        })
        .await
        .ok()?
        .into_inner();
    let mut v: Value = serde_json::from_slice(&reply.payload).unwrap();
    let mut state = v["state"].take();
    if let Some(s) = state.as_object_mut() {
        s.remove("delta");
    }
    Some(state)
}

async fn update_local(core: &Core, thing: &str, name: &str, state: Value) {
    api(core)
        .await
        .update_shadow(pb::UpdateShadowRequest {
            thing_name: thing.into(),
            shadow_name: name.into(),
            payload: json!({ "state": state }).to_string().into(),
        })
        .await
        .unwrap();
}

/// Waits until `read` gives `want`.
async fn eventually<F, Fut>(what: &str, want: Option<Value>, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let mut last = None;
    let ok = tokio::time::timeout(PATIENCE, async {
        loop {
            last = read().await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{what}: want {want:?}, last {last:?}");
}

fn cloud_state(c: &CloudShadows, thing: &str, name: &str) -> Option<Value> {
    c.state(thing, name).map(|(s, _)| s)
}

#[tokio::test]
async fn synced_shadows_follow_the_cloud_both_ways_and_others_stay_local() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, cloud_shadows) = start(&mut cloud).await;
    let port = core.broker_port("tcp").await;
    let (s, mut s_ev) = connect(port, "s", false).await;
    subscribed(&s, &mut s_ev, "$aws/things/s/shadow/#").await;
    let (n, mut n_ev) = connect(port, "n", false).await;

    // Device updates: n's stays local, s's reaches the cloud.
    let reported = |t: u32| json!({ "state": { "reported": { "temp": t } } }).to_string();
    publish(&n, &mut n_ev, "$aws/things/n/shadow/update", &reported(5)).await;
    publish(&s, &mut s_ev, "$aws/things/s/shadow/update", &reported(20)).await;
    let want = json!({ "reported": { "temp": 20 } });
    eventually("s in the cloud", Some(want), || async {
        cloud_state(&cloud_shadows, "s", "")
    })
    .await;
    assert_eq!(cloud_state(&cloud_shadows, "n", ""), None);

    // A cloud application asks for something: s hears the delta locally.
    cloud_shadows
        .edit("s", "", json!({ "desired": { "mode": "eco" } }))
        .await;
    let delta = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = s_ev.poll().await {
                // The core's sync requests to the cloud never reach devices.
                assert_ne!(p.topic, "$aws/things/s/shadow/update", "{p:?}");
                if p.topic == "$aws/things/s/shadow/update/delta" {
                    return serde_json::from_slice::<Value>(&p.payload).unwrap();
                }
            }
        }
    })
    .await
    .expect("s hears the cloud's desired state as a delta");
    assert_eq!(delta["state"], json!({ "mode": "eco" }));
    let both = json!({ "desired": { "mode": "eco" }, "reported": { "temp": 20 } });
    assert_eq!(local(&core, "s", "").await, Some(both.clone()));
    assert_eq!(cloud_state(&cloud_shadows, "s", ""), Some(both));

    // Named shadows sync too, and so do deletions.
    update_local(&core, "s", "cfg", json!({ "reported": { "rate": 10 } })).await;
    eventually(
        "the named shadow in the cloud",
        Some(json!({ "reported": { "rate": 10 } })),
        || async { cloud_state(&cloud_shadows, "s", "cfg") },
    )
    .await;
    api(&core)
        .await
        .delete_shadow(pb::DeleteShadowRequest {
            thing_name: "s".into(),
            shadow_name: "cfg".into(),
        })
        .await
        .unwrap();
    eventually("the named shadow deleted in the cloud", None, || async {
        cloud_state(&cloud_shadows, "s", "cfg")
    })
    .await;
    assert_eq!(
        local(&core, "n", "").await,
        Some(json!({ "reported": { "temp": 5 } }))
    );
    assert!(
        !cloud_shadows
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("/things/n/")),
        "nothing of n went to the cloud"
    );
}

#[tokio::test]
async fn edits_made_apart_reconcile_by_the_documented_rule_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, cloud_shadows) = start(&mut cloud).await;
    let agreed = json!({
        "desired": { "mode": "eco", "fan": 1 },
        "reported": { "temp": 20, "fw": 1 },
    });
    update_local(&core, "s", "", agreed.clone()).await;
    eventually("in sync", Some(agreed), || async {
        cloud_state(&cloud_shadows, "s", "")
    })
    .await;
    // ... and the core has heard the cloud accept it.
    eventually("the core agrees", Some(json!(true)), || async {
        let out = core.ctl(&["-o", "json", "shadow", "sync", "s"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v["in_sync"].clone())
    })
    .await;
    let out = core.ctl(&["-o", "json", "shadow", "sync", "s"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["synced"].clone(), v["connected"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        Some(v["cloud_version"].as_u64().unwrap()),
        cloud_shadows.state("s", "").map(|(_, version)| version)
    );

    // Apart: the router is stopped. Locally: mode off, fan 2, temp 25. In
    // the cloud: mode boost, temp 30, fw 2.
    let out = core.ctl(&["stop", "router"]);
    assert!(out.status.success(), "{out:?}");
    update_local(
        &core,
        "s",
        "",
        json!({ "desired": { "mode": "off", "fan": 2 }, "reported": { "temp": 25 } }),
    )
    .await;
    cloud_shadows
        .edit(
            "s",
            "",
            json!({ "desired": { "mode": "boost" }, "reported": { "temp": 30, "fw": 2 } }),
        )
        .await;
    // The shadow service restarts meanwhile: what was last agreed is
    // durable (without it, fan and fw would look like conflicts).
    let out = core.ctl(&["restart", "shadow"]);
    assert!(out.status.success(), "{out:?}");
    let out = core.ctl(&["start", "router"]);
    assert!(out.status.success(), "{out:?}");

    // Keys changed on one side take that side's value; both changed:
    // desired from the cloud, reported from the core.
    let merged = json!({
        "desired": { "mode": "boost", "fan": 2 },
        "reported": { "temp": 25, "fw": 2 },
    });
    eventually("the cloud reconciled", Some(merged.clone()), || async {
        cloud_state(&cloud_shadows, "s", "")
    })
    .await;
    eventually("the core reconciled", Some(merged), || async {
        local(&core, "s", "").await
    })
    .await;
}
