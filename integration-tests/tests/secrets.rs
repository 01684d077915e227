//! Secrets with the real greengrasssdk: a value put by the operator (from
//! stdin) is read by a function the group allows, string and binary, by
//! ARN or name and label; a function without a policy, an unknown secret
//! and a label the group does not ask for are refused with the SDK's
//! error; a new put is seen by the next call; the value is in no log and
//! in no file in clear. Values fetched from the cloud (a real Mosquitto
//! with a client answering as Secrets Manager's `GetSecretValue` would) at
//! deployment time, under a new data key, shown by no trace.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::PATIENCE;
use verdant_integration_tests::cloud::Cloud;
use verdant_integration_tests::deployments;
use verdant_integration_tests::functions::{
    INSECURE, TCP, function_arn, invoke, open_to_functions, start_prepared,
};
use verdant_integration_tests::groups::thing;
use verdant_integration_tests::{Core, Options, bundle_greengrasssdk, copy_dir};
use verdant_proto::router::v1::TraceRequest;
use verdant_proto::router::v1::router_client::RouterClient;

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf";
const KEY: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tls-key-XyZ123";
const CANARY: &str = "canary-5f3e9a1c-not-for-logs";

fn group() -> String {
    let reader = |name: &str, policies: Value| {
        json!({ "Id": name, "FunctionArn": function_arn(name),
            "FunctionConfiguration": { "Executable": "secretreader.handler", "Timeout": 10,
                "Environment": { "ResourceAccessPolicies": policies } } })
    };
    json!({
        "Id": "secrets-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [
                reader("reader", json!([{ "ResourceId": "db" }, { "ResourceId": "key" }])),
                reader("stranger", json!([])),
                { "Id": "nodereader", "FunctionArn": function_arn("nodereader"),
                  "FunctionConfiguration": { "Executable": "index.handler", "Timeout": 10,
                    "Environment": { "ResourceAccessPolicies": [
                        { "ResourceId": "db" }, { "ResourceId": "key" } ] } } },
            ]
        },
        "ResourceDefinitionVersion": { "Resources": [
            { "Id": "db", "Name": "db", "ResourceDataContainer": {
                "SecretsManagerSecretResourceData": { "ARN": SECRET,
                    "AdditionalStagingLabelsToDownload": ["AWSPREVIOUS"] } } },
            { "Id": "key", "Name": "key", "ResourceDataContainer": {
                "SecretsManagerSecretResourceData": { "ARN": KEY } } },
        ]},
    })
    .to_string()
}

fn install(root: &Path) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/secretreader");
    for name in ["reader", "stranger"] {
        let dir = root.join("functions").join(name).join("1");
        copy_dir(&here, &dir);
        bundle_greengrasssdk(&dir);
    }
    // The Node.js reader bundles aws-greengrass-core-sdk, as users do.
    let node_sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.node/node_modules");
    let dir = root.join("functions/nodereader/1");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/secretreadernode"),
        &dir,
    );
    copy_dir(&node_sdk, &dir.join("node_modules"));
    open_to_functions(root);
}

/// A core whose group has the two readers and the two secret resources.
async fn start() -> Core {
    start_prepared(&group(), Some(&install)).await
}

/// Asserts that `text` is in no file under the core's root (logs,
/// databases, the store), in clear.
fn assert_in_no_file(core: &Core, text: &str) {
    let found = Command::new("grep")
        .args(["-r", "-l", "-a", text])
        .arg(core.root())
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "in clear in: {}",
        String::from_utf8_lossy(&found.stdout)
    );
}

/// `verdantctl secrets put` with `value` on stdin.
fn put(core: &Core, args: &[&str], value: &[u8]) {
    let mut all = vec!["secrets", "put"];
    all.extend_from_slice(args);
    let mut child = Command::new(verdant_integration_tests::bin("verdantctl"))
        .arg("--root")
        .arg(core.root())
        .arg("--socket-dir")
        .arg(core.runtime_dir())
        .args(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

async fn read(core: &Core, function: &str, request: Value) -> Value {
    let r = invoke(
        &core.socket("lambda-runner"),
        &function_arn(function),
        &request.to_string(),
    )
    .await;
    assert!(r.function_error.is_empty(), "{r:?}");
    serde_json::from_slice(&r.payload).unwrap()
}

#[tokio::test]
async fn functions_read_the_secrets_the_group_allows_and_nothing_else() {
    let core = start().await;
    put(&core, &[SECRET], format!("{CANARY}-old\n").as_bytes());
    put(&core, &[SECRET], format!("{CANARY}\n").as_bytes());
    put(&core, &[KEY, "--binary"], &[0, 1, 2, 254, 255]);

    // By name, the current value; the old one is AWSPREVIOUS.
    let got = read(&core, "reader", json!({ "id": "db-password" })).await;
    assert_eq!(got["SecretString"], CANARY, "{got}");
    assert_eq!(got["ARN"], SECRET, "{got}");
    assert_eq!(got["Name"], "db-password", "{got}");
    assert_eq!(got["VersionStages"], json!(["AWSCURRENT"]), "{got}");
    assert!(got["created_year"].as_i64().unwrap() >= 2024, "{got}");
    let previous = read(
        &core,
        "reader",
        json!({ "id": SECRET, "stage": "AWSPREVIOUS" }),
    )
    .await;
    assert_eq!(
        previous["SecretString"],
        format!("{CANARY}-old"),
        "{previous}"
    );
    // Binary, as the SDK hands it: base64.
    let key = read(&core, "reader", json!({ "id": KEY })).await;
    assert_eq!(key["SecretBinary"], "AAEC/v8=", "{key}");

    // Refused: no policy, an unknown secret, a label the group does not
    // ask for. The SDK raises its error with the status.
    for (function, request) in [
        ("stranger", json!({ "id": SECRET })),
        (
            "reader",
            json!({ "id": "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AAAAAA" }),
        ),
        ("reader", json!({ "id": SECRET, "stage": "AWSPENDING" })),
    ] {
        let got = read(&core, function, request.clone()).await;
        assert_eq!(got["error"], "SecretsManagerError", "{request}: {got}");
        assert!(got["message"].as_str().unwrap().contains("404"), "{got}");
        assert!(!got.to_string().contains(CANARY), "{got}");
    }

    // A new value is seen by the next call.
    put(&core, &[SECRET], b"rotated");
    let got = read(&core, "reader", json!({ "id": SECRET })).await;
    assert_eq!(got["SecretString"], "rotated", "{got}");
    // A new data key: every value sealed again, and still read.
    let rotated = core.ctl(&["-o", "json", "secrets", "rotate-key"]);
    assert!(rotated.status.success(), "{rotated:?}");
    let rotated: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(rotated["sealed"], 3, "{rotated}");
    let got = read(
        &core,
        "reader",
        json!({ "id": SECRET, "stage": "AWSPREVIOUS" }),
    )
    .await;
    assert_eq!(got["SecretString"], CANARY, "{got}");

    // The operator sees metadata only, with who may read it.
    let list = core.ctl(&["-o", "json", "secrets"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains(CANARY), "{text}");
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let db = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["arn"] == SECRET)
        .unwrap();
    assert_eq!(
        db["readers"],
        json!([function_arn("reader"), function_arn("nodereader")]),
        "{db}"
    );
    assert!(db["last_read_ms"].as_i64().unwrap() > 0, "{db}");
    assert_eq!(db["last_reader"], function_arn("reader"), "{db}");

    // The canary is in no log and in no file of the root in clear.
    assert_in_no_file(&core, CANARY);
}

#[tokio::test]
async fn a_key_file_others_can_read_stops_the_secrets_daemon_with_why() {
    use std::os::unix::fs::PermissionsExt;
    let core = Core::start();
    core.wait_all_running().await;
    let kek = core.root().join("data/secrets/kek");
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = core.ctl(&["restart", "secrets"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("failed") && said.contains("exit 78"),
        "{said}"
    );
    let log = std::fs::read_to_string(core.root().join("logs/secrets.log")).unwrap();
    assert!(log.contains("must be 0600"), "{log}");
}

#[tokio::test]
async fn kill_9_during_puts_leaves_each_secret_whole() {
    let core = start().await;
    put(&core, &[SECRET], b"value-0");
    // Puts one after another while the daemon is killed among them.
    let root = core.root();
    let runtime = core.runtime_dir();
    let puts = std::thread::spawn(move || {
        for i in 1..=40 {
            let mut child = Command::new(verdant_integration_tests::bin("verdantctl"))
                .arg("--root")
                .arg(&root)
                .arg("--socket-dir")
                .arg(&runtime)
                .args(["secrets", "put", SECRET])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let value = format!("value-{i}-{}", "x".repeat(4096));
            // A put that finds the daemon down ends before reading its value.
            let _ = child.stdin.take().unwrap().write_all(value.as_bytes());
            let _ = child.wait();
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    core.kill_9("secrets").await;
    puts.join().unwrap();
    core.wait_all_running().await;
    // Whatever put got through last, the value is whole and readable.
    let got = read(&core, "reader", json!({ "id": SECRET })).await;
    let value = got["SecretString"]
        .as_str()
        .unwrap_or_else(|| panic!("{got}"));
    assert!(
        value == "value-0" || (value.starts_with("value-") && value.ends_with(&"x".repeat(4096))),
        "{}",
        &value[..value.len().min(40)]
    );
    let list = core.ctl(&["secrets"]);
    assert!(list.status.success(), "{list:?}");
}

#[tokio::test]
async fn a_deployment_naming_a_secret_with_no_value_fails_with_its_arn_then_succeeds() {
    let core = start().await;
    let file = core.root().join("with-secrets.json");
    std::fs::write(&file, group()).unwrap();
    let out = core.ctl(&["deploy", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ResourceDefinitionVersion.Resources[0].ResourceDataContainer.SecretsManagerSecretResourceData.ARN"),
        "{text}"
    );
    assert!(text.contains(SECRET), "{text}");
    put(&core, &[SECRET], b"v");
    put(&core, &[SECRET, "--label", "AWSPREVIOUS"], b"p");
    put(&core, &[KEY], b"k");
    let out = core.ctl(&["deploy", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
}

#[tokio::test]
async fn the_node_sdk_reads_an_allowed_secret_and_is_refused_a_label_not_asked_for() {
    let core = start().await;
    put(&core, &[SECRET], b"from-node\n");
    put(&core, &[KEY, "--binary"], &[0, 1, 2, 254, 255]);
    let got = read(&core, "nodereader", json!({ "id": "db-password" })).await;
    assert_eq!(got["SecretString"], "from-node", "{got}");
    assert_eq!(got["ARN"], SECRET, "{got}");
    assert_eq!(got["VersionStages"], json!(["AWSCURRENT"]), "{got}");
    assert_eq!(got["created"], "number", "{got}");
    let key = read(&core, "nodereader", json!({ "id": KEY })).await;
    assert_eq!(key["SecretBinary"], "AAEC/v8=", "{key}");
    let refused = read(
        &core,
        "nodereader",
        json!({ "id": SECRET, "stage": "AWSPENDING" }),
    )
    .await;
    let message = refused["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{refused}"));
    assert!(message.contains("404"), "{refused}");
}

/// Answers the core's requests for values on the test's cloud, as an IoT
/// rule and a function calling Secrets Manager's `GetSecretValue` would:
/// from `values` (ARN, label) → (version id, value (base64 when binary);
/// binary), a
/// `ResourceNotFoundException` for anything else.
type CloudValues = Arc<Mutex<HashMap<(String, String), (String, Vec<u8>, bool)>>>;

async fn secrets_manager(plain_port: u16, values: CloudValues) -> tokio::task::JoinHandle<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("secrets-manager", "127.0.0.1", plain_port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 64);
    client
        .subscribe("verdant/things/+/secrets/get", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let r: Value = serde_json::from_slice(&p.payload).unwrap();
                    let arn = r["SecretId"].as_str().unwrap().to_string();
                    let label = r["VersionStage"].as_str().unwrap().to_string();
                    let known = values
                        .lock()
                        .unwrap()
                        .get(&(arn.clone(), label.clone()))
                        .cloned();
                    let (topic, body) = match known {
                        Some((version, value, binary)) => {
                            let mut b = json!({ "ARN": arn, "Name": "x", "VersionId": version,
                                "VersionStages": [label], "CreatedDate": 1_765_000_000.25,
                                "clientToken": r["clientToken"] });
                            let field = if binary {
                                "SecretBinary"
                            } else {
                                "SecretString"
                            };
                            b[field] = String::from_utf8(value).unwrap().into();
                            (format!("{}/accepted", p.topic), b)
                        }
                        None => (
                            format!("{}/rejected", p.topic),
                            json!({ "clientToken": r["clientToken"],
                                "code": "ResourceNotFoundException",
                                "message": "Secrets Manager can't find the specified secret." }),
                        ),
                    };
                    let _ = client
                        .publish(topic, QoS::AtLeastOnce, false, body.to_string())
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(PATIENCE, ready)
        .await
        .expect("the secrets manager subscribed")
        .unwrap();
    task
}

/// The data key that seals new values (`datakey.json`'s first).
fn data_key(core: &Core) -> String {
    let keys: Value = serde_json::from_slice(
        &std::fs::read(core.root().join("data/secrets/datakey.json")).unwrap(),
    )
    .unwrap();
    keys["Keys"][0]["Id"].as_str().unwrap().to_string()
}

async fn cloud_connected(core: &Core, up: bool) {
    core.wait_cloud("the cloud connection changes", |s| {
        (s.state == "connected") == up
    })
    .await;
}

/// Deploys `group` and follows it to its end.
async fn deployed(core: &Core, group: &str) -> verdant_proto::ota::v1::Deployment {
    let d = deployments::deploy(core, group).await;
    deployments::watch_to_end(core, &d.deployment_id)
        .await
        .pop()
        .unwrap()
}

/// Every trace event the router gives from now on.
async fn trace_all(core: &Core) -> Arc<Mutex<Vec<verdant_proto::router::v1::TraceEvent>>> {
    let channel = verdant_common::uds::connect(&core.socket("router"))
        .await
        .unwrap();
    let mut stream = RouterClient::new(channel)
        .trace(TraceRequest::default())
        .await
        .unwrap()
        .into_inner();
    let traced = Arc::new(Mutex::new(Vec::new()));
    let into = traced.clone();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            into.lock().unwrap().push(event);
        }
    });
    traced
}

/// A core with the secrets group whose cloud (connected) answers for
/// `values`, which hold the group's secrets.
async fn core_with_cloud(dir: &Path) -> (Core, Cloud, CloudValues, tokio::task::JoinHandle<()>) {
    let mut cloud = Cloud::prepare(dir);
    let dropin = format!("{TCP}{INSECURE}{}", cloud.dropin());
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(&group()),
        prepare: Some(&install),
        ..Options::default()
    });
    core.wait_all_running().await;
    cloud.start(Path::new(&core.cert("group-ca.pem")));
    let values = CloudValues::default();
    values.lock().unwrap().extend([
        (
            (SECRET.into(), "AWSCURRENT".into()),
            ("v-2".into(), CANARY.into(), false),
        ),
        (
            (SECRET.into(), "AWSPREVIOUS".into()),
            ("v-1".into(), b"previous".to_vec(), false),
        ),
        (
            (KEY.into(), "AWSCURRENT".into()),
            ("k-1".into(), b"AAEC/v8=".to_vec(), true),
        ),
    ]);
    let manager = secrets_manager(cloud.plain_port, values.clone()).await;
    cloud_connected(&core, true).await;
    (core, cloud, values, manager)
}

#[tokio::test]
async fn values_come_from_the_cloud_at_deployment_time_and_no_trace_shows_them() {
    use verdant_proto::ota::v1::Phase;
    let dir = tempfile::tempdir().unwrap();
    let (core, mut cloud, values, _manager) = core_with_cloud(dir.path()).await;
    let group = group();
    let traced = trace_all(&core).await;

    // Deployed: the values come from the cloud, under a new data key.
    let key_before = data_key(&core);
    let d = deployed(&core, &group).await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");
    let got = read(&core, "reader", json!({ "id": SECRET })).await;
    assert_eq!(got["SecretString"], CANARY, "{got}");
    assert_eq!(got["VersionId"], "v-2", "{got}");
    let previous = read(
        &core,
        "reader",
        json!({ "id": SECRET, "stage": "AWSPREVIOUS" }),
    )
    .await;
    assert_eq!(previous["SecretString"], "previous", "{previous}");
    let key = read(&core, "nodereader", json!({ "id": KEY })).await;
    assert_eq!(key["SecretBinary"], "AAEC/v8=", "{key}");
    let key_first = data_key(&core);
    assert_ne!(key_before, key_first, "a new data key for new values");

    // Nothing changed in the cloud: the same key. A new version: seen
    // after the next deployment, under a new key.
    let d = deployed(&core, &group).await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");
    assert_eq!(data_key(&core), key_first);
    values.lock().unwrap().insert(
        (SECRET.into(), "AWSCURRENT".into()),
        ("v-3".into(), format!("{CANARY}-new").into_bytes(), false),
    );
    let d = deployed(&core, &group).await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");
    let got = read(&core, "reader", json!({ "id": SECRET })).await;
    assert_eq!(got["SecretString"], format!("{CANARY}-new"), "{got}");
    assert_ne!(data_key(&core), key_first);

    // A secret the cloud does not know, with no value here: the
    // deployment fails with the cloud's reason, and nothing changes.
    let unknown = "arn:aws:secretsmanager:us-east-1:123456789012:secret:unknown-QwErTy";
    let mut more: Value = serde_json::from_str(&group).unwrap();
    more["ResourceDefinitionVersion"]["Resources"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({ "Id": "unknown", "Name": "unknown", "ResourceDataContainer": {
            "SecretsManagerSecretResourceData": { "ARN": unknown } } }),
        );
    let d = deployed(&core, &more.to_string()).await;
    assert_eq!(d.phase(), Phase::Failed, "{d:?}");
    let said = format!("{:?}", d.problems);
    assert!(
        said.contains(unknown) && said.contains("ResourceNotFoundException"),
        "{said}"
    );

    // Offline, a deployment uses the values on the core.
    cloud.stop();
    cloud_connected(&core, false).await;
    let d = deployed(&core, &group).await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");

    // The requests and answers went through the router; no trace shows
    // a value, no log and no file holds one in clear.
    let traced = traced.lock().unwrap().clone();
    let secret_traffic: Vec<_> = traced
        .iter()
        .filter(|e| e.topic.contains("/secrets/get"))
        .collect();
    assert!(secret_traffic.len() >= 6, "{traced:?}");
    for e in &traced {
        assert!(
            !String::from_utf8_lossy(&e.preview).contains("canary"),
            "{e:?}"
        );
    }
    assert_in_no_file(&core, CANARY);
}

#[tokio::test]
async fn a_tampered_store_file_is_refused_by_name_and_the_others_still_read() {
    let core = start().await;
    put(&core, &[SECRET], b"first-value");
    put(&core, &[KEY, "--binary"], &[7, 7, 7]);
    // One byte of the sealed value changed, in its base64.
    let values = core.root().join("data/secrets/values");
    let file = std::fs::read_dir(&values)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains(SECRET))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let at = text.find("\"Ciphertext\": \"").unwrap() + "\"Ciphertext\": \"".len() + 2;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&file, bytes).unwrap();

    let got = read(&core, "reader", json!({ "id": SECRET })).await;
    assert_eq!(got["error"], "SecretsManagerError", "{got}");
    assert!(got["message"].as_str().unwrap().contains("500"), "{got}");
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    core.wait_for_log("secrets", &[&name, "does not open"])
        .await;
    // The other secret is still read.
    let key = read(&core, "reader", json!({ "id": KEY })).await;
    assert_eq!(key["SecretBinary"], "BwcH", "{key}");
}
