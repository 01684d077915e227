//! Secrets: `get_secret_value` as a function sees it, from a pinned
//! Python function with the real greengrasssdk (function → lambda-runner's
//! IPC → verdant-secrets → back), timed inside the function one call at a
//! time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::function::{copy_dir, sdk};
use crate::mqtt::percentile;
use crate::spawn;

const LIMIT: Duration = Duration::from_mins(1);
const READER: &str = "arn:aws:lambda:us-east-1:123456789012:function:reader:1";
const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench-AbCdEf";

/// Times `n` calls, in µs.
const CODE: &str = r"import time
import greengrasssdk
secrets = greengrasssdk.client('secretsmanager')

def handler(event, context):
    out = []
    for _ in range(event['n']):
        t = time.perf_counter()
        secrets.get_secret_value(SecretId=event['id'])
        out.append(int((time.perf_counter() - t) * 1e6))
    return out
";

fn group() -> String {
    serde_json::json!({
        "Id": "bench-secrets",
        "CoreDefinitionVersion": { "Cores": [{ "Id": "core",
            "ThingArn": "arn:aws:iot:us-east-1:123456789012:thing/verdant-core",
            "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", "01".repeat(32)) }] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [{ "Id": "reader", "FunctionArn": READER,
                "FunctionConfiguration": { "Executable": "reader.handler", "Pinned": true,
                    "Timeout": 60, "Environment": { "ResourceAccessPolicies": [{ "ResourceId": "s" }] } } }]
        },
        "ResourceDefinitionVersion": { "Resources": [{ "Id": "s", "Name": "s",
            "ResourceDataContainer": { "SecretsManagerSecretResourceData": { "ARN": SECRET } } }] },
    })
    .to_string()
}

async fn connect(socket: &Path) -> tonic::transport::Channel {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(c) = verdant_common::uds::connect(socket).await {
            return c;
        }
        assert!(Instant::now() < deadline, "no {}", socket.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` calls from the function: latencies in µs, sorted.
async fn calls(lambda: &tonic::transport::Channel, n: usize) -> Vec<u64> {
    use verdant_proto::lambda::v1 as pb;
    let r = pb::lambda_client::LambdaClient::new(lambda.clone())
        .invoke(pb::InvokeRequest {
            function_arn: READER.into(),
            payload: serde_json::json!({ "n": n, "id": SECRET })
                .to_string()
                .into_bytes(),
            ..pb::InvokeRequest::default()
        })
        .await
        .expect("invoke")
        .into_inner();
    assert!(
        r.function_error.is_empty(),
        "{}",
        String::from_utf8_lossy(&r.payload)
    );
    let mut lat: Vec<u64> = serde_json::from_slice(&r.payload).expect("timings");
    lat.sort_unstable();
    lat
}

pub async fn run(bin_dir: &Path, python: &Path, runs: usize) {
    use std::os::unix::fs::PermissionsExt;
    use verdant_proto::secrets::v1 as spb;
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let artifact = root.join("functions/reader/1");
    std::fs::create_dir_all(&artifact).expect("dir");
    std::fs::write(artifact.join("reader.py"), CODE).expect("write");
    copy_dir(Path::new(&sdk(python)), &artifact.join("greengrasssdk"));
    for d in [dir.path(), root.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let group = group();
    let mut core = spawn::core(
        &bin_dir,
        &root,
        "[broker.tls]\nbind = \"127.0.0.1:0\"\n[lambda-runner]\nrun_on_insecure_host = true\n",
        Some(&group),
    );
    let secrets = connect(&root.join("run/secrets.sock")).await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let put = spb::secrets_client::SecretsClient::new(secrets.clone())
            .put_secret(spb::PutSecretRequest {
                arn: SECRET.into(),
                value: b"a database password of some length".to_vec(),
                ..spb::PutSecretRequest::default()
            })
            .await;
        if put.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "{put:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lambda = connect(&root.join("run/lambda-runner.sock")).await;
    // Warm: the pinned instance up, its first calls made.
    let deadline = Instant::now() + LIMIT;
    loop {
        use verdant_proto::lambda::v1 as pb;
        let r = pb::lambda_client::LambdaClient::new(lambda.clone())
            .invoke(pb::InvokeRequest {
                function_arn: READER.into(),
                payload: serde_json::json!({ "n": 50, "id": SECRET })
                    .to_string()
                    .into_bytes(),
                ..pb::InvokeRequest::default()
            })
            .await;
        if r.as_ref()
            .is_ok_and(|r| r.get_ref().function_error.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let lat = calls(&lambda, 2000).await;
        p50.push(percentile(&lat, 50.0) as f64);
        p99.push(percentile(&lat, 99.0) as f64);
    }
    println!("| figure | median of {runs} runs |\n|---|---|");
    println!(
        "| get_secret_value from a pinned Python function (greengrasssdk), p50 / p99 µs | {:.0} / {:.0} |",
        median(p50),
        median(p99)
    );
    spawn::stop(&mut core);
}
