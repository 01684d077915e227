//! Machine learning model resources under the real core: downloaded by a
//! deployment (here from a `file:///` URL) with their SHA-256, unpacked,
//! stored by content and bound read-only at `DestinationPath` into the
//! containers of the functions whose policies name them, and no others; a
//! changed model restarts only the functions that use it; a wrong hash
//! fails the deployment and changes nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use verdant_integration_tests::deployments::{current, deploy, watch_to_end};
use verdant_integration_tests::functions::{
    function_arn, functions, invoke, open_to_functions, start_prepared,
};
use verdant_integration_tests::groups::thing;
use verdant_integration_tests::{Core, copy_dir};
use verdant_proto::ota::v1::Phase;

/// `reader` may read the model; `other` runs the same code without a policy.
fn group(model: Option<(&Path, &str)>) -> String {
    let function = |name: &str, policies: Value| {
        json!({ "Id": name, "FunctionArn": function_arn(name),
            "FunctionConfiguration": { "Executable": "reader.handler", "Pinned": true,
                "Timeout": 10, "Environment": {
                    "ResourceAccessPolicies": policies,
                    "Execution": { "IsolationMode": "GreengrassContainer" } } } })
    };
    let (resources, artifacts, policies) = match model {
        Some((tarball, sha256)) => (
            json!([{ "Id": "classifier", "Name": "classifier", "ResourceDataContainer": {
                "S3MachineLearningModelResourceData": {
                    "S3Uri": format!("file://{}", tarball.display()),
                    "DestinationPath": "/ml/classifier",
                    "OwnerSetting": { "GroupOwner": "tty", "GroupPermission": "ro" } } } }]),
            json!([{ "ResourceId": "classifier", "Sha256": sha256 }]),
            json!([{ "ResourceId": "classifier", "Permission": "ro" }]),
        ),
        None => (json!([]), json!([]), json!([])),
    };
    json!({
        "Id": "models-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [function("reader", policies.clone()), function("other", json!([])),
                { "Id": "outsider", "FunctionArn": function_arn("outsider"),
                  "FunctionConfiguration": { "Executable": "reader.handler", "Pinned": true,
                    "Timeout": 10, "Environment": {
                        "ResourceAccessPolicies": policies,
                        "Execution": { "IsolationMode": "NoContainer" } } } }],
        },
        "ResourceDefinitionVersion": { "Resources": resources },
        "Artifacts": artifacts,
    })
    .to_string()
}

fn install(root: &Path) {
    let code = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/modelreader");
    for name in ["reader", "other", "outsider"] {
        copy_dir(&code, &root.join("functions").join(name).join("1"));
    }
    open_to_functions(root);
}

/// A tarball of a model directory holding `labels.txt` = `labels`, and
/// its SHA-256.
fn model_tarball(dir: &Path, name: &str, labels: &str) -> (std::path::PathBuf, String) {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(src.join("weights")).unwrap();
    std::fs::write(src.join("labels.txt"), labels).unwrap();
    std::fs::write(src.join("weights/layer0.bin"), [1u8, 2, 3]).unwrap();
    let tarball = dir.join(format!("{name}.tar.gz"));
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let sha = Command::new("sha256sum").arg(&tarball).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    (tarball, sha.split_whitespace().next().unwrap().to_string())
}

async fn start() -> Core {
    start_prepared(&group(None), Some(&install)).await
}

async fn deployed(core: &Core, group: &str) -> verdant_proto::ota::v1::Deployment {
    let queued = deploy(core, group).await;
    let seen = watch_to_end(core, &queued.deployment_id).await;
    seen.last().unwrap().clone()
}

/// What `name` sees at the model's destination.
async fn sees(core: &Core, name: &str) -> Value {
    let r = invoke(
        &core.socket("lambda-runner"),
        &function_arn(name),
        r#"{"path": "/ml/classifier", "file": "labels.txt"}"#,
    )
    .await;
    assert_eq!(
        r.function_error,
        "",
        "{}",
        String::from_utf8_lossy(&r.payload)
    );
    serde_json::from_slice(&r.payload).unwrap()
}

async fn pid(core: &Core, name: &str) -> Vec<u32> {
    let arn = function_arn(name);
    functions(core)
        .await
        .functions
        .into_iter()
        .find(|f| f.arn == arn)
        .map(|f| f.pids)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_model_reaches_only_the_functions_that_use_it_read_only() {
    let core = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (tarball, sha) = model_tarball(dir.path(), "v1", "cat\ndog\n");
    let d = deployed(&core, &group(Some((&tarball, &sha)))).await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");

    let seen = sees(&core, "reader").await;
    assert_eq!(seen["exists"], true, "{seen}");
    assert_eq!(seen["files"], json!(["labels.txt", "weights"]), "{seen}");
    assert_eq!(seen["text"], "cat\ndog\n", "{seen}");
    assert_eq!(seen["write"], "Read-only file system", "{seen}");
    assert_eq!(sees(&core, "other").await, json!({ "exists": false }));
    // The files are the owner group's (`OwnerSetting`, tty here): the
    // container joined it; a plain process of a user outside it, which
    // finds the model by path, cannot read them.
    let installed = core.root().join("functions/.models/classifier");
    let tree = installed.canonicalize().unwrap();
    let tty = nix::unistd::Group::from_name("tty")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let meta = std::fs::metadata(&tree).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (tty, 0o750));
    let r = invoke(
        &core.socket("lambda-runner"),
        &function_arn("outsider"),
        &json!({ "path": installed, "file": "labels.txt" }).to_string(),
    )
    .await;
    let outside: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(outside["files"], "Permission denied", "{outside}");

    // A new model: the reader restarts on it, the other is left alone.
    let before = (pid(&core, "reader").await, pid(&core, "other").await);
    let (tarball, sha) = model_tarball(dir.path(), "v2", "cat\ndog\nbird\n");
    let d = deployed(&core, &group(Some((&tarball, &sha)))).await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");
    assert_eq!(sees(&core, "reader").await["text"], "cat\ndog\nbird\n");
    let after = (pid(&core, "reader").await, pid(&core, "other").await);
    assert_ne!(before.0, after.0, "the reader runs on the new model");
    assert_eq!(before.1, after.1, "the other function was not restarted");
}

#[tokio::test]
async fn a_model_whose_hash_differs_fails_the_deployment_and_changes_nothing() {
    let core = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (tarball, _) = model_tarball(dir.path(), "v1", "cat\n");
    let wrong = "0".repeat(64);
    let d = deployed(&core, &group(Some((&tarball, &wrong)))).await;
    assert_eq!(d.phase(), Phase::Failed, "{d:?}");
    assert!(d.reason.contains("Artifacts[0]"), "{}", d.reason);
    assert!(d.reason.contains("SHA-256"), "{}", d.reason);
    assert_eq!(current(&core), "test");
    assert_eq!(sees(&core, "reader").await, json!({ "exists": false }));
}
