//! Inference: the ml-inference example (`examples/ml-inference`), a pinned
//! Python function with onnxruntime, classifies what a device publishes
//! and publishes the class back (device → broker → router → lambda-runner
//! → function → lambda-runner → router → broker → device). Inferences/s
//! with a few messages in flight, one row and 32 rows a message, against
//! the same model run directly in one Python process (the peer).

use std::path::Path;

use crate::answers::answered;
use crate::function::{copy_dir, sdk};
use crate::spawn;

const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:classifier:1";
const DEVICE: &str = "arn:aws:iot:us-east-1:123456789012:thing/bench-dev";
const ROW: [f32; 4] = [-0.5, 1.3, -3.0, -1.2];

fn group(sha256: &str) -> String {
    spawn::group(
        "bench-inference",
        DEVICE,
        serde_json::json!({
            "FunctionDefinitionVersion": { "Functions": [
                { "Id": "classifier", "FunctionArn": FUNCTION,
                  "FunctionConfiguration": { "Executable": "classifier.handler", "Pinned": true,
                    "Timeout": 30, "MemorySize": 262_144,
                    "Environment": {
                        "Variables": { "MODEL_DIR": "MODEL_DIR_HERE" },
                        "Execution": { "IsolationMode": "NoContainer",
                                       "RunAs": { "Uid": 65534, "Gid": 65534 } } } } },
            ]},
            "ResourceDefinitionVersion": { "Resources": [
                { "Id": "model", "Name": "classifier", "ResourceDataContainer": {
                    "S3MachineLearningModelResourceData": {
                        "S3Uri": "file:///nonexistent/classifier.tar.gz",
                        "DestinationPath": "/ml/classifier" } } },
            ]},
            "Artifacts": [{ "ResourceId": "model", "Sha256": sha256 }],
            "SubscriptionDefinitionVersion": { "Subscriptions": [
                { "Id": "in", "Source": DEVICE, "Subject": "ml/classifier/input", "Target": FUNCTION },
                { "Id": "out", "Source": FUNCTION, "Subject": "ml/classifier/results", "Target": DEVICE },
            ]},
        }),
    )
}

/// `n` messages of `rows` rows each, at most `window` not yet answered:
/// rows classified per second.
async fn rate(port: u16, n: usize, rows: usize, window: usize) -> f64 {
    let body = serde_json::json!({ "id": "b", "features": vec![ROW; rows] }).to_string();
    let ok = |p: &[u8]| !String::from_utf8_lossy(p).contains("error");
    let topics = ("ml/classifier/input", "ml/classifier/results");
    answered(port, topics, &body, n, window, ok).await * rows as f64
}

pub(crate) fn python_out(python: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(python)
        .args(args)
        .output()
        .expect("python");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

pub async fn run(bin_dir: &Path, python: &Path, runs: usize) {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let example = std::path::absolute("examples/ml-inference").expect("example");
    let script = example.join("make_model.py");
    let script = script.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    // The model where a deployment would have put it.
    let model = root.join("functions/.models/model");
    python_out(python, &[script, model.to_str().expect("utf-8 path")]);
    let code = root.join("functions/classifier/1");
    std::fs::create_dir_all(&code).expect("dir");
    std::fs::copy(example.join("classifier.py"), code.join("classifier.py")).expect("copy");
    copy_dir(Path::new(&sdk(python)), &code.join("greengrasssdk"));
    let packages = std::path::absolute(".ml-packages").expect("packages");
    assert!(
        packages.join("onnxruntime").is_dir(),
        ".ml-packages (scripts/test-deps.sh installs it)"
    );
    copy_dir(&packages, &code);
    for d in [dir.path(), root.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let group = group(&"0".repeat(64)).replace("MODEL_DIR_HERE", model.to_str().expect("path"));
    let (mut verdant, port) = spawn::function_core(&bin_dir, &root, &group).await;
    // Ready once a message is answered.
    rate(port, 1, 1, 1).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut one, mut batch, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        one.push(rate(port, 3000, 1, 10).await);
        batch.push(rate(port, 1000, 32, 10).await);
        let model = model.to_str().expect("path");
        direct.push(
            python_out(python, &[script, "--bench", model, "20000"])
                .parse::<f64>()
                .expect("a rate"),
        );
    }
    let (one, batch, direct) = (median(one), median(batch), median(direct));
    println!("| figure | median of {runs} runs |\n|---|---|");
    println!("| inferences/s through the core, one row a message (10 in flight) | {one:.0} |");
    println!("| inferences/s through the core, 32 rows a message (10 in flight) | {batch:.0} |");
    println!(
        "| inferences/s of the same model run directly in one Python process (peer) | {direct:.0} |"
    );
    println!(
        "| ratio to the peer: one row / 32 rows a message | {:.3} / {:.2} |",
        one / direct,
        batch / direct
    );
    spawn::stop(&mut verdant);
}
