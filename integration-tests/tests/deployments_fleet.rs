//! A fleet: 20 cores started in one test share one Mosquitto as their
//! cloud and all take one job (a job for a thing group, as AWS IoT Jobs
//! hands it to each thing of the group), each reporting its own end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rumqttc::{Event, Packet, QoS};
use serde_json::{Value, json};
use verdant_integration_tests::cloud::Cloud;
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE};

const CORES: usize = 20;

fn group(subject: &str) -> Value {
    json!({
        "Id": "fleet",
        "Version": subject,
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2), thing("b", 3)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "a-to-b", "Source": arn("a"), "Subject": subject, "Target": arn("b") },
        ]},
    })
}

/// The cores, each its own thing and group CA, and the file of all their
/// CAs, which the cloud trusts.
async fn start_fleet(cloud: &Cloud, dir: &std::path::Path) -> (Vec<Core>, std::path::PathBuf) {
    let first = group("fleet/old/#").to_string();
    // Each core its own thing and group CA; the cloud trusts them all.
    let mut cores = Vec::new();
    for i in 0..CORES {
        let dropin = format!("[core]\nthing_name = \"fleet-{i}\"\n{}", cloud.dropin());
        cores.push(Core::start_with(&Options {
            dropin: Some(&dropin),
            group: Some(&first),
            ..Options::default()
        }));
    }
    let mut cas = String::new();
    for core in &cores {
        core.wait_all_running().await;
        cas.push_str(&std::fs::read_to_string(core.cert("group-ca.pem")).unwrap());
    }
    let bundle = dir.join("fleet-cas.pem");
    std::fs::write(&bundle, cas).unwrap();

    (cores, bundle)
}

#[tokio::test]
async fn twenty_cores_sharing_one_cloud_all_take_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (cores, bundle) = start_fleet(&cloud, dir.path()).await;

    // AWS IoT Jobs for the fleet: one job, `fleet-job-1`, for every thing;
    // a core that asks (`start-next`) gets it, and until it has taken it
    // (IN_PROGRESS) it is told again (`notify-next`), as when a job is created.
    cloud.start(&bundle);
    let (client, mut events) = connect(cloud.plain_port, "iot-jobs", false).await;
    subscribed(&client, &mut events, "$aws/things/+/jobs/#").await;
    let document =
        json!({ "verdant": { "deploymentType": "NewDeployment", "group": group("fleet/new/#") } });
    let execution = |thing: &str| {
        json!({
            "jobId": "fleet-job-1", "thingName": thing, "status": "QUEUED",
            "jobDocument": document, "queuedAt": 1, "lastUpdatedAt": 1,
            "executionNumber": 1, "versionNumber": 1,
        })
    };
    let mut in_progress: BTreeSet<String> = BTreeSet::new();
    let mut ends: BTreeMap<String, String> = BTreeMap::new();
    let mut renotify = tokio::time::interval(Duration::from_secs(2));
    tokio::time::timeout(PATIENCE * 3, async {
        while ends.len() < CORES {
            let p = tokio::select! {
                _ = renotify.tick() => {
                    for i in 0..CORES {
                        let thing = format!("fleet-{i}");
                        if !in_progress.contains(&thing) {
                            let payload = json!({ "timestamp": 1, "execution": execution(&thing) });
                            let topic = format!("$aws/things/{thing}/jobs/notify-next");
                            client
                                .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                                .await
                                .unwrap();
                        }
                    }
                    continue;
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => p,
                    Ok(_) => continue,
                    Err(e) => panic!("{e}"),
                },
            };
            let Some((thing, rest)) = p
                .topic
                .strip_prefix("$aws/things/")
                .and_then(|t| t.split_once("/jobs/"))
            else {
                continue;
            };
            let request: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            let token = request["clientToken"].clone();
            let reply = |suffix: &str, payload: Value| {
                let topic = format!("$aws/things/{thing}/jobs/{suffix}");
                let client = client.clone();
                async move {
                    client
                        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                        .await
                        .unwrap();
                }
            };
            if rest == "start-next" {
                let mut answer = json!({ "clientToken": token, "timestamp": 1 });
                if !ends.contains_key(thing) {
                    answer["execution"] = execution(thing);
                }
                reply("start-next/accepted", answer).await;
            } else if rest == "fleet-job-1/update" {
                let status = request["status"].as_str().unwrap_or_default().to_string();
                in_progress.insert(thing.to_string());
                if status != "IN_PROGRESS" {
                    ends.insert(thing.to_string(), status);
                }
                reply(
                    "fleet-job-1/update/accepted",
                    json!({ "clientToken": token, "timestamp": 1 }),
                )
                .await;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("every core reports its end in time; so far {ends:?}"));

    assert!(ends.values().all(|s| s == "SUCCEEDED"), "{ends:?}");
    for core in &cores {
        let routes: Vec<String> = core
            .routes()
            .await
            .routes
            .into_iter()
            .map(|r| r.route.unwrap().subject)
            .collect();
        assert_eq!(routes, ["fleet/new/#"]);
    }
}
