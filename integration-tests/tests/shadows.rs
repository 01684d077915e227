//! The shadow service with real clients: the AWS IoT Device SDK for
//! Python's shadow client, unmodified, over mutual TLS through the broker
//! and the router (the sample group routes the sample device's shadow
//! topics to `GGShadowService` and back).

use verdant_integration_tests::Core;

#[tokio::test]
async fn the_aws_iot_device_sdk_shadow_client_works_unmodified() {
    let v = run_sdk_script("flow").await;
    let r = &v["results"];
    assert_eq!(r["update"]["status"], "accepted", "{v}");
    assert_eq!(r["update"]["payload"]["version"], 1, "{v}");
    assert_eq!(
        r["update"]["payload"]["state"]["desired"]["color"], "red",
        "{v}"
    );
    // The SDK drops a delta unless its version is newer than the last it saw.
    assert_eq!(v["deltas"][0]["state"]["color"], "red", "{v}");
    assert_eq!(r["get"]["status"], "accepted", "{v}");
    assert_eq!(r["get"]["payload"]["state"]["delta"]["color"], "red", "{v}");
    assert_eq!(r["report"]["status"], "accepted", "{v}");
    assert_eq!(r["report"]["payload"]["version"], 2, "{v}");
    assert_eq!(r["conflict"]["status"], "rejected", "{v}");
    assert_eq!(r["conflict"]["payload"]["code"], 409, "{v}");
    assert_eq!(r["delete"]["status"], "accepted", "{v}");
    assert_eq!(r["get_after_delete"]["status"], "rejected", "{v}");
    assert_eq!(r["get_after_delete"]["payload"]["code"], 404, "{v}");
}

/// `awsiot_shadow.py` in `mode` against a core with the sample group: its
/// JSON line.
async fn run_sdk_script(mode: &str) -> serde_json::Value {
    let core = Core::start();
    core.wait_all_running().await;
    let out = core
        .run_device_script("awsiot_shadow.py", &["sample-device", mode])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// The SDK's callback gets `step`'s reply only when it carries the
/// request's token: `rejected` with `code`, not `timeout`.
fn assert_rejected_with_token(results: &serde_json::Value, step: &str, code: u16) {
    let r = &results[step];
    assert_eq!(r["status"], "rejected", "{step}: {results}");
    assert_eq!(r["payload"]["code"], code, "{step}: {results}");
    assert!(r["token"].is_string(), "{step}: {results}");
    assert_eq!(r["payload"]["clientToken"], r["token"], "{step}: {results}");
}

#[tokio::test]
async fn the_aws_iot_device_sdk_hears_every_rejection_it_can_cause() {
    let v = run_sdk_script("rejections").await;
    let r = &v["results"];
    for (step, code) in [
        ("get_missing", 404),
        ("delete_missing", 404),
        ("no_state", 400),
        ("state_not_object", 400),
        ("desired_not_object", 400),
        ("invalid_node", 400),
        ("version_not_number", 400),
        ("too_deep", 400),
        ("conflict", 409),
        ("too_large", 413),
    ] {
        assert_rejected_with_token(r, step, code);
    }
    assert_eq!(
        r["too_large"]["payload"]["message"], "The payload exceeds the maximum size allowed",
        "{v}"
    );
}

/// The SDK's update while the disk under the shadow store is full: 500,
/// heard by the SDK's callback.
#[tokio::test]
async fn the_aws_iot_device_sdk_hears_a_full_disks_rejection() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let core = Core::start_with(&verdant_integration_tests::Options {
        disk: Some(("shadow", "4m")),
        ..verdant_integration_tests::Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tls").await.to_string();
    let mut script = tokio::process::Command::new(verdant_integration_tests::python())
        .arg(verdant_integration_tests::python_script("awsiot_shadow.py"))
        .args(["localhost", &port])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .args(["sample-device", "full-disk"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = script.stdin.take().unwrap();
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let fill = lines.next_line().await.unwrap();
    assert_eq!(fill.as_deref(), Some("fill"));
    let filler = core.fill_disk("shadow");
    stdin.write_all(b"go\n").await.unwrap();
    let out = lines.next_line().await.unwrap().expect("one JSON line");
    assert!(script.wait().await.unwrap().success(), "{out}");
    std::fs::remove_file(&filler).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON line");
    assert_eq!(v["results"]["stored"]["status"], "accepted", "{v}");
    assert_rejected_with_token(&v["results"], "disk_full", 500);
}

const DEVICE_GROUP_DROPIN: &str = "[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n\
     [init]\nrestart_limit = 1000\nbackoff_max_secs = 1\n";

/// Device `d` and routes between it and the shadow service.
fn device_group() -> String {
    use verdant_integration_tests::groups::{arn, thing};
    serde_json::json!({
        "Id": "shadow-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("d", 2)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "to-shadow", "Source": arn("d"), "Subject": "$aws/things/d/shadow/#", "Target": "GGShadowService" },
            { "Id": "from-shadow", "Source": "GGShadowService", "Subject": "$aws/things/d/shadow/#", "Target": arn("d") },
        ]},
    })
    .to_string()
}

/// A core with [`device_group`] and the plain listener.
async fn start_device_core() -> Core {
    let group = device_group();
    let core = Core::start_with(&verdant_integration_tests::Options {
        dropin: Some(DEVICE_GROUP_DROPIN),
        group: Some(&group),
        ..verdant_integration_tests::Options::default()
    });
    core.wait_all_running().await;
    core
}

/// Device `d` sets reported `k<i>` = i for i in 0..n, each a QoS 1 update
/// acknowledged only once the shadow service has it on disk.
async fn send_numbered_updates(dev: &rumqttc::AsyncClient, ev: &mut rumqttc::EventLoop, n: u64) {
    for i in 0..n {
        let update = serde_json::json!({"state": {"reported": {format!("k{i}"): i}}});
        verdant_integration_tests::mqtt::publish(
            dev,
            ev,
            "$aws/things/d/shadow/update",
            &update.to_string(),
        )
        .await;
    }
}

/// Every update [`send_numbered_updates`] had acknowledged is in `d`'s
/// shadow, and the store passes SQLite's integrity check.
async fn assert_every_update_kept(
    core: &Core,
    dev: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    n: u64,
) {
    use std::time::Duration;
    use verdant_integration_tests::mqtt::{publish, received, subscribed};
    subscribed(dev, ev, "$aws/things/d/shadow/get/accepted").await;
    let doc = tokio::time::timeout(verdant_integration_tests::PATIENCE, async {
        loop {
            let mut got = publish(
                dev,
                ev,
                "$aws/things/d/shadow/get",
                r#"{"clientToken":"final"}"#,
            )
            .await;
            got.extend(received(ev, Duration::from_millis(500)).await);
            if let Some((_, body)) = got.into_iter().find(|(t, _)| t.ends_with("/get/accepted")) {
                return serde_json::from_str::<serde_json::Value>(&body).unwrap();
            }
        }
    })
    .await
    .expect("the shadow answers");
    for i in 0..n {
        assert_eq!(
            doc["state"]["reported"][format!("k{i}")],
            i,
            "k{i} lost: {doc}"
        );
    }
    let db = rusqlite::Connection::open(core.root().join("data/shadow/shadows.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn kill_9_of_the_shadow_service_loses_no_acknowledged_update() {
    use std::time::Duration;
    use verdant_integration_tests::mqtt::connect;

    let core = start_device_core().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "d", false).await;

    // kill -9 the shadow service again and again while the device updates.
    let runtime = core.runtime_dir();
    let killer = tokio::spawn(async move {
        let mut kills = 0;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let out = std::process::Command::new(verdant_integration_tests::bin("verdantctl"))
                .arg("--socket-dir")
                .arg(&runtime)
                .args(["-o", "json", "status"])
                .output()
                .unwrap();
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let pid = status
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "shadow")
                .and_then(|s| s["pid"].as_i64())
                .unwrap_or(0);
            if pid > 0
                && nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
            {
                kills += 1;
            }
        }
        kills
    });
    let n = 120;
    send_numbered_updates(&dev, &mut ev, n).await;
    let kills = killer.await.unwrap();
    assert!(kills >= 3, "only {kills} kills landed");

    assert_every_update_kept(&core, &dev, &mut ev, n).await;
}

#[tokio::test]
async fn operators_reach_shadows_with_verdantctl_and_devices_see_the_changes() {
    use std::time::Duration;
    use verdant_integration_tests::PATIENCE;
    use verdant_integration_tests::mqtt::{connect, received, subscribed};

    let core = start_device_core().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "d", false).await;
    subscribed(&dev, &mut ev, "$aws/things/d/shadow/#").await;
    let ctl = |args: &[&str]| {
        let out = core.ctl(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // An operator sets desired state; the device hears the delta.
    let (ok, out, err) = ctl(&[
        "shadow",
        "update",
        "d",
        r#"{"state":{"desired":{"on":true}}}"#,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"version\": 1"), "{out}");
    let heard = tokio::time::timeout(PATIENCE, async {
        let mut topics = Vec::new();
        while !topics.iter().any(|t: &String| t.ends_with("/update/delta")) {
            topics.extend(
                received(&mut ev, Duration::from_millis(200))
                    .await
                    .into_iter()
                    .map(|(t, _)| t),
            );
        }
        topics
    })
    .await
    .expect("the device hears the delta");
    assert!(
        heard.contains(&"$aws/things/d/shadow/update/accepted".to_string()),
        "{heard:?}"
    );

    let (ok, out, _) = ctl(&["shadow", "get", "d"]);
    assert!(ok && out.contains("\"delta\""), "{out}");
    let (ok, _, _) = ctl(&[
        "shadow",
        "update",
        "d",
        "--name",
        "cfg",
        r#"{"state":{"reported":{"x":1}}}"#,
    ]);
    assert!(ok);
    let (_, out, _) = ctl(&["shadow", "list", "d"]);
    assert_eq!(out.trim(), "cfg");
    let (ok, _, err) = ctl(&["shadow", "get", "nobody"]);
    assert!(
        !ok && err.contains("404 No shadow exists with name: 'nobody'"),
        "{err}"
    );
    let (ok, _, err) = ctl(&[
        "shadow",
        "update",
        "d",
        r#"{"state":{"desired":{"on":false}},"version":9}"#,
    ]);
    assert!(!ok && err.contains("409 Version conflict"), "{err}");
}

#[tokio::test]
async fn a_functions_shadow_call_gets_the_reply_body_as_json() {
    let core = start_device_core().await;
    let (rejected, _) = call(
        &core,
        "$aws/things/d/shadow/update",
        r#"{"state":{"desired":{"on":true}}}"#,
    )
    .await;
    assert!(!rejected);
    // A function's call (as the lambda-runner will make it): the body is
    // what /accepted or /rejected would carry, valid JSON even for delete.
    let (rejected, body) = call(&core, "$aws/things/d/shadow/get", "").await;
    assert!(
        !rejected && body["state"]["desired"]["on"] == true,
        "{body}"
    );
    let (rejected, body) = call(&core, "$aws/things/d/shadow/delete", "").await;
    assert!(!rejected && body["version"] == 1, "{body}");
    let (rejected, body) = call(&core, "$aws/things/d/shadow/delete", "").await;
    assert!(rejected && body["code"] == 404, "{body}");
}

#[tokio::test]
async fn named_shadows_and_rejections_over_mqtt() {
    use std::time::Duration;
    use verdant_integration_tests::mqtt::{connect, publish, received, subscribed};

    let core = start_device_core().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "d", false).await;
    subscribed(&dev, &mut ev, "$aws/things/d/shadow/#").await;
    // The reply to a request, however long the machine takes.
    let mut ask = async |topic: &str, body: &str| {
        let mut early = publish(&dev, &mut ev, topic, body).await;
        tokio::time::timeout(verdant_integration_tests::PATIENCE, async {
            loop {
                early.extend(received(&mut ev, Duration::from_millis(100)).await);
                let replies: Vec<_> = std::mem::take(&mut early)
                    .into_iter()
                    .filter(|(t, _)| t.ends_with("ccepted") || t.ends_with("ejected"))
                    .map(|(t, b)| (t, serde_json::from_str::<serde_json::Value>(&b).unwrap()))
                    .collect();
                if !replies.is_empty() {
                    return replies;
                }
            }
        })
        .await
        .expect("a reply")
    };
    let named = "$aws/things/d/shadow/name/cfg";
    let got = ask(
        &format!("{named}/update"),
        r#"{"state":{"desired":{"rate":5}},"clientToken":"n1"}"#,
    )
    .await;
    assert_eq!(got[0].0, format!("{named}/update/accepted"));
    assert_eq!(got[0].1["clientToken"], "n1");
    let got = ask(&format!("{named}/get"), "").await;
    assert_eq!(got[0].1["state"]["desired"]["rate"], 5);
    // The classic shadow is another document.
    let got = ask("$aws/things/d/shadow/get", r#"{"clientToken":"c"}"#).await;
    assert_eq!(
        (got[0].1["code"].as_u64(), got[0].1["clientToken"].as_str()),
        (Some(404), Some("c"))
    );
    let got = ask("$aws/things/d/shadow/update", "{not json").await;
    assert_eq!(
        (got[0].1["code"].as_u64(), got[0].1["message"].as_str()),
        (Some(400), Some("Invalid JSON"))
    );
    let big = format!(
        r#"{{"state":{{"reported":{{"x":"{}"}}}}}}"#,
        "y".repeat(9000)
    );
    let got = ask("$aws/things/d/shadow/update", &big).await;
    assert_eq!(got[0].1["code"], 413);
    // Rejections of requests too large or not JSON carry their token.
    let big = format!(
        r#"{{"state":{{"reported":{{"x":"{}"}}}},"clientToken":"n2"}}"#,
        "y".repeat(9000)
    );
    for payload in [big.as_str(), r#"{"clientToken":"n2","state":{oops}}"#] {
        let got = ask(&format!("{named}/update"), payload).await;
        assert_eq!(got[0].0, format!("{named}/update/rejected"));
        assert_eq!(got[0].1["clientToken"], "n2", "{}", got[0].1);
    }
}

#[tokio::test]
async fn watchers_see_every_durable_change() {
    use verdant_integration_tests::PATIENCE;
    use verdant_integration_tests::mqtt::{connect, publish};
    use verdant_proto::shadow::v1 as pb;
    use verdant_proto::shadow::v1::shadow_client::ShadowClient;

    let core = start_device_core().await;
    let channel = verdant_common::uds::connect(&core.socket("shadow"))
        .await
        .unwrap();
    let mut watch = ShadowClient::new(channel)
        .watch_shadows(pb::WatchShadowsRequest {
            thing_name: "d".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "d", false).await;
    publish(
        &dev,
        &mut ev,
        "$aws/things/d/shadow/update",
        r#"{"state":{"reported":{"on":1}}}"#,
    )
    .await;
    publish(&dev, &mut ev, "$aws/things/d/shadow/delete", "").await;
    let mut next = async || {
        tokio::time::timeout(PATIENCE, watch.message())
            .await
            .expect("a change")
            .unwrap()
            .expect("the stream goes on")
    };
    let updated = next().await;
    let doc: serde_json::Value = serde_json::from_slice(&updated.document).unwrap();
    assert_eq!(
        (updated.thing_name.as_str(), doc["version"].as_u64()),
        ("d", Some(1))
    );
    assert_eq!(doc["state"]["reported"]["on"], 1);
    let deleted = next().await;
    assert!(deleted.deleted && deleted.document.is_empty());
}

#[tokio::test]
async fn killed_at_its_fsyncs_the_shadow_service_loses_no_acknowledged_update() {
    use verdant_integration_tests::Options;
    use verdant_integration_tests::mqtt::connect;

    // The shadow service runs under strace, which kills it with SIGKILL at
    // its 7th fsync or fdatasync: in the middle of a commit, every life.
    let dropin = format!(
        "{DEVICE_GROUP_DROPIN}[services.shadow]\ncommand = \"strace\"\nargs = [\"-f\", \
         \"-o\", \"/dev/null\", \"-e\", \"trace=fsync,fdatasync\", \"-e\", \
         \"inject=fsync,fdatasync:signal=KILL:when=7\", \"{}\", \"shadow\"]\n",
        verdant_integration_tests::bin("verdant").display()
    );
    let group = device_group();
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(&group),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "d", false).await;
    let n = 40;
    send_numbered_updates(&dev, &mut ev, n).await;
    let restarts = core.service("shadow").await.restart_count;
    assert!(restarts >= 3, "killed only {restarts} times");

    assert_every_update_kept(&core, &dev, &mut ev, n).await;
}

/// A request through the shadow service's `Call` (what a function's SDK
/// call becomes): whether it was rejected, and the reply's body.
async fn call(core: &Core, topic: &str, payload: &str) -> (bool, serde_json::Value) {
    use verdant_proto::shadow::v1 as pb;
    use verdant_proto::shadow::v1::shadow_client::ShadowClient;
    let channel = verdant_common::uds::connect(&core.socket("shadow"))
        .await
        .unwrap();
    let reply = ShadowClient::new(channel)
        .call(pb::CallRequest {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let body = serde_json::from_slice(&reply.payload).unwrap();
    (reply.rejected, body)
}

/// A full disk under the shadow store (a small tmpfs in init's own mount
/// namespace, filled by the test): an update is rejected with 500 and
/// undone, the last stored state stays, and once there is room again
/// updates are stored, through a `kill -9` of the service.
#[tokio::test]
async fn a_full_disk_rejects_updates_with_500_and_keeps_the_stored_shadow() {
    const UPDATE: &str = "$aws/things/d/shadow/update";
    const GET: &str = "$aws/things/d/shadow/get";
    let group = device_group();
    let core = Core::start_with(&verdant_integration_tests::Options {
        dropin: Some(DEVICE_GROUP_DROPIN),
        group: Some(&group),
        disk: Some(("shadow", "4m")),
        ..verdant_integration_tests::Options::default()
    });
    core.wait_all_running().await;
    let (rejected, body) = call(&core, UPDATE, r#"{"state":{"reported":{"k":1}}}"#).await;
    assert!(!rejected && body["version"] == 1, "{body}");

    let filler = core.fill_disk("shadow");
    let (rejected, body) = call(
        &core,
        UPDATE,
        r#"{"state":{"reported":{"k":2}},"clientToken":"full"}"#,
    )
    .await;
    assert!(rejected, "{body}");
    assert_eq!(body["code"], 500, "{body}");
    assert_eq!(body["clientToken"], "full", "{body}");
    core.wait_for_log("shadow", &["disk is full", "refused (500)"])
        .await;
    let (rejected, body) = call(&core, GET, "").await;
    assert!(!rejected, "{body}");
    assert_eq!(
        body["state"]["reported"]["k"], 1,
        "the refused update undone: {body}"
    );
    assert_eq!(body["version"], 1, "{body}");

    std::fs::remove_file(&filler).unwrap();
    let (rejected, body) = call(&core, UPDATE, r#"{"state":{"reported":{"k":3}}}"#).await;
    assert!(!rejected && body["version"] == 2, "{body}");
    core.kill_9("shadow").await;
    let (rejected, body) = call(&core, GET, "").await;
    assert!(!rejected, "{body}");
    assert_eq!(body["state"]["reported"]["k"], 3, "{body}");
    assert_eq!(body["version"], 2, "{body}");
}
