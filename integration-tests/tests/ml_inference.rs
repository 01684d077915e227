//! The ml-inference example (`examples/ml-inference`) under the real core:
//! its ONNX model, made here with the `onnx` package, deployed as a model
//! resource; the pinned Python function (greengrasssdk, onnxruntime
//! bundled) classifies what a device publishes and its answers are those
//! of the same model run directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::deployments::{deploy, watch_to_end};
use verdant_integration_tests::functions::{function_arn, logs, open_to_functions, start_prepared};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, publish, received, subscribed};
use verdant_integration_tests::{Core, PATIENCE, bundle_greengrasssdk, copy_dir, python};
use verdant_proto::ota::v1::Phase;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ml-inference")
}

/// The function's code as a user bundles it: the example, greengrasssdk,
/// and onnxruntime with numpy (`.ml-packages`, scripts/test-deps.sh).
fn install(root: &Path) {
    let dir = root.join("functions/classifier/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example().join("classifier.py"), dir.join("classifier.py")).unwrap();
    bundle_greengrasssdk(&dir);
    let packages = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ml-packages");
    assert!(
        packages.join("onnxruntime").is_dir(),
        "{} (scripts/test-deps.sh installs it)",
        packages.display()
    );
    // Linked, not copied, where the file system allows: 150 MB.
    let linked = Command::new("cp")
        .arg("-al")
        .arg(format!("{}/.", packages.display()))
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    if !linked {
        copy_dir(&packages, &dir);
    }
    open_to_functions(root);
}

/// The model made by the example's script, as a tarball, and its SHA-256.
fn model(dir: &Path) -> (PathBuf, PathBuf, String) {
    let out = dir.join("model");
    let made = Command::new(python())
        .arg(example().join("make_model.py"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(made.success(), "make_model.py");
    let tarball = dir.join("classifier.tar.gz");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .args(["model.onnx", "labels.txt"])
        .status()
        .unwrap();
    assert!(ok.success());
    let sha = Command::new("sha256sum").arg(&tarball).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    let sha = sha.split_whitespace().next().unwrap().to_string();
    (out, tarball, sha)
}

/// What the model says of `rows`, run directly with onnxruntime.
fn reference(model_dir: &Path, rows: &Value) -> Value {
    let mut child = Command::new(python())
        .arg(example().join("make_model.py"))
        .arg("--predict")
        .arg(model_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), rows.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn group(tarball: Option<(&Path, &str)>) -> String {
    let classifier = function_arn("classifier");
    let mut g = json!({
        "Id": "ml-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
    });
    if let Some((tarball, sha256)) = tarball {
        g["FunctionDefinitionVersion"] = json!({ "Functions": [
            { "Id": "classifier", "FunctionArn": classifier,
              "FunctionConfiguration": { "Executable": "classifier.handler", "Pinned": true,
                "Timeout": 30, "MemorySize": 262_144,
                "Environment": {
                    "ResourceAccessPolicies": [{ "ResourceId": "model", "Permission": "ro" }],
                    "Execution": { "IsolationMode": "GreengrassContainer",
                                   "RunAs": { "Uid": 65534, "Gid": 65534 } } } } },
        ]});
        g["ResourceDefinitionVersion"] = json!({ "Resources": [
            { "Id": "model", "Name": "classifier", "ResourceDataContainer": {
                "S3MachineLearningModelResourceData": {
                    "S3Uri": format!("file://{}", tarball.display()),
                    "DestinationPath": "/ml/classifier" } } },
        ]});
        g["Artifacts"] = json!([{ "ResourceId": "model", "Sha256": sha256 }]);
        g["SubscriptionDefinitionVersion"] = json!({ "Subscriptions": [
            { "Id": "in", "Source": arn("a"), "Subject": "ml/classifier/input", "Target": classifier },
            { "Id": "out", "Source": classifier, "Subject": "ml/classifier/results", "Target": arn("a") },
        ]});
    }
    g.to_string()
}

/// The answer with `id` on the results topic.
async fn answer(
    core: &Core,
    ev: &mut rumqttc::EventLoop,
    mut got: Vec<(String, String)>,
    id: &str,
) -> Value {
    let found = tokio::time::timeout(PATIENCE * 2, async {
        loop {
            for (_, body) in got.drain(..) {
                let v: Value = serde_json::from_str(&body).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
            got = received(ev, Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no answer to {id}:\n{}", logs(core)))
}

#[tokio::test]
async fn the_example_classifies_what_devices_send_as_the_model_run_directly_does() {
    let core = start_prepared(&group(None), Some(&install)).await;
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, tarball, sha) = model(dir.path());
    let queued = deploy(&core, &group(Some((&tarball, &sha)))).await;
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::Succeeded, "{last:?}\n{}", logs(&core));

    let port = core.broker_port("tcp").await;
    let (dev, mut ev) = connect(port, "a", false).await;
    subscribed(&dev, &mut ev, "ml/classifier/results").await;
    let rows = json!([
        [1.8, 2.8, -1.1, 1.2],
        [-0.5, 1.3, -3.0, -1.2],
        [-0.6, 0.2, -0.5, 1.1]
    ]);
    let early = publish(
        &dev,
        &mut ev,
        "ml/classifier/input",
        &json!({ "id": "batch-1", "features": rows }).to_string(),
    )
    .await;
    let got = answer(&core, &mut ev, early, "batch-1").await;
    let want = reference(&model_dir, &rows);
    let results = got["results"].as_array().unwrap_or_else(|| panic!("{got}"));
    assert_eq!(results.len(), 3, "{got}");
    let classes: Vec<u64> = results
        .iter()
        .map(|r| r["class"].as_u64().unwrap())
        .collect();
    assert_eq!(classes, [0, 1, 2], "{got}");
    let labels: Vec<&str> = results
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["setosa", "versicolor", "virginica"]);
    for (r, w) in results.iter().zip(want.as_array().unwrap()) {
        for (p, q) in r["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w.as_array().unwrap())
        {
            let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
            assert!((p - q).abs() < 1e-6, "{got} vs {want}");
        }
    }
    // One row alone, and input it cannot classify.
    let early = publish(
        &dev,
        &mut ev,
        "ml/classifier/input",
        &json!({ "id": "one", "features": [-0.5, 1.3, -3.0, -1.2] }).to_string(),
    )
    .await;
    assert_eq!(
        answer(&core, &mut ev, early, "one").await["results"][0]["class"],
        1
    );
    let early = publish(
        &dev,
        &mut ev,
        "ml/classifier/input",
        &json!({ "id": "bad", "features": [1, 2] }).to_string(),
    )
    .await;
    assert_eq!(
        answer(&core, &mut ev, early, "bad").await["error"],
        "each row needs 4 features"
    );
}
