//! Functions: a pinned Python function using the real greengrasssdk relays
//! what a device publishes back to it (device → broker → router →
//! lambda-runner → function → lambda-runner → router → broker → device).
//! Messages/s with many in flight, and the round trip one at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{Event, Packet, QoS};

use crate::answers::{answered, device};
use crate::mqtt::percentile;
use crate::spawn;

const LIMIT: Duration = Duration::from_mins(1);
const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:relay:1";
/// On-demand, for cold starts: plain and in a container.
const COLD: &str = "arn:aws:lambda:us-east-1:123456789012:function:cold:1";
const COLD_BOX: &str = "arn:aws:lambda:us-east-1:123456789012:function:coldbox:1";
const DEVICE: &str = "arn:aws:iot:us-east-1:123456789012:thing/bench-dev";

/// A handler that only answers.
const HELLO: &str = "def handler(event, context):\n    return {'ok': 1}\n";

/// The relay: what comes in goes out (binary encoding: bytes both ways).
const RELAY: &str = r"import greengrasssdk
iot = greengrasssdk.client('iot-data')

def handler(event, context):
    iot.publish(topic='bench/out', payload=event)
";

fn group() -> String {
    spawn::group(
        "bench-functions",
        DEVICE,
        serde_json::json!({
            "FunctionDefinitionVersion": {
                "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                    "RunAs": { "Uid": 65534, "Gid": 65534 } } },
                "Functions": [
                    { "Id": "relay", "FunctionArn": FUNCTION,
                      "FunctionConfiguration": { "Executable": "relay.handler", "Pinned": true,
                        "EncodingType": "binary", "Timeout": 30 } },
                    { "Id": "cold", "FunctionArn": COLD,
                      "FunctionConfiguration": { "Executable": "hello.handler", "Timeout": 30 } },
                    { "Id": "coldbox", "FunctionArn": COLD_BOX,
                      "FunctionConfiguration": { "Executable": "hello.handler", "Timeout": 30,
                        "Environment": { "Execution": { "IsolationMode": "GreengrassContainer" } } } },
                ]
            },
            "SubscriptionDefinitionVersion": { "Subscriptions": [
                { "Id": "in", "Source": DEVICE, "Subject": "bench/in", "Target": FUNCTION },
                { "Id": "out", "Source": FUNCTION, "Subject": "bench/out", "Target": DEVICE },
            ]},
        }),
    )
}

/// Copies `from` (a directory of files and directories) to `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Where `python` has greengrasssdk.
pub(crate) fn sdk(python: &Path) -> String {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import greengrasssdk, os; print(os.path.dirname(greengrasssdk.__file__))",
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "greengrasssdk under {} (scripts/test-deps.sh installs it)",
        python.display()
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Waits for `n` messages on bench/out.
async fn replies(events: &mut rumqttc::EventLoop, n: usize) {
    let mut got = 0;
    tokio::time::timeout(LIMIT, async {
        while got < n {
            if let Event::Incoming(Packet::Publish(_)) = events.poll().await.expect("poll") {
                got += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{got} of {n} replies"));
}

/// `n` QoS 1 messages with at most `window` not yet relayed back (a
/// function's work queue is bounded and overflow is refused, so an open
/// loop would measure refusals): messages/s relayed.
async fn throughput(port: u16, n: usize, window: usize) -> f64 {
    answered(port, ("bench/in", "bench/out"), "m", n, window, |_| true).await
}

/// `n` round trips one at a time: latencies in µs.
async fn round_trips(port: u16, n: usize) -> Vec<u64> {
    let (client, mut events) = device(port, "bench/out").await;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        client
            .publish("bench/in", QoS::AtMostOnce, false, format!("r{i}"))
            .await
            .expect("publish");
        replies(&mut events, 1).await;
        lat.push(t.elapsed().as_micros() as u64);
    }
    let _ = client.try_disconnect();
    let _ = events.poll().await;
    lat
}

pub async fn run(bin_dir: &Path, python: &Path, runs: usize) {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let artifact = root.join("functions/relay/1");
    std::fs::create_dir_all(&artifact).expect("dir");
    std::fs::write(artifact.join("relay.py"), RELAY).expect("write");
    copy_dir(Path::new(&sdk(python)), &artifact.join("greengrasssdk"));
    for name in ["cold", "coldbox"] {
        let dir = root.join("functions").join(name).join("1");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("hello.py"), HELLO).expect("write");
    }
    for d in [dir.path(), root.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let port = spawn::free_port();
    let group = group();
    let mut core = spawn::core(
        &bin_dir,
        &root,
        &format!(
            "[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n\
             [lambda-runner]\nrun_on_insecure_host = true\nidle_secs = 0\n"
        ),
        Some(&group),
    );
    // Ready once a message makes the round trip.
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the core did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    round_trips(port, 1).await;
    let socket = root.join("run/lambda-runner.sock");
    let mut cold = Vec::new();
    let mut cold_box = Vec::new();
    for _ in 0..runs {
        let mut c = cold_starts(&socket, COLD, 20).await;
        c.sort_unstable();
        cold.push(c);
        let mut c = cold_starts(&socket, COLD_BOX, 20).await;
        c.sort_unstable();
        cold_box.push(c);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rates = Vec::new();
    let mut trips = Vec::new();
    for _ in 0..runs {
        rates.push(throughput(port, 5000, 100).await);
        let mut l = round_trips(port, 1000).await;
        l.sort_unstable();
        trips.push(l);
    }
    let p =
        |runs: &[Vec<u64>], q: f64| median(runs.iter().map(|r| percentile(r, q) as f64).collect());
    println!("| figure | median of {runs} runs |\n|---|---|");
    println!(
        "| messages/s relayed by one pinned Python function (5,000 QoS 1, 100 not yet back) | {:.0} |",
        median(rates)
    );
    println!(
        "| round trip device → function → device, one at a time, p50 / p99 µs | {:.0} / {:.0} |",
        p(&trips, 50.0),
        p(&trips, 99.0)
    );
    for (what, runs) in [("NoContainer", &cold), ("GreengrassContainer", &cold_box)] {
        println!(
            "| cold start of an on-demand Python function ({what}): invoke → result, p50 / p99 ms | {:.1} / {:.1} |",
            p(runs, 50.0) / 1000.0,
            p(runs, 99.0) / 1000.0
        );
    }
    spawn::stop(&mut core);
}

/// `n` invocations of `arn` each with no instance running (idle instances
/// stop at once here): latencies in µs from the call to its result.
async fn cold_starts(socket: &Path, arn: &str, n: usize) -> Vec<u64> {
    use verdant_proto::lambda::v1 as pb;
    use verdant_proto::lambda::v1::lambda_client::LambdaClient;
    let channel = verdant_common::uds::connect(socket)
        .await
        .expect("the lambda-runner's socket");
    let mut api = LambdaClient::new(channel);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let deadline = Instant::now() + LIMIT;
        loop {
            let listed = api
                .list_functions(pb::ListFunctionsRequest {})
                .await
                .expect("list")
                .into_inner();
            if listed
                .functions
                .iter()
                .any(|f| f.arn == arn && f.instances == 0)
            {
                break;
            }
            assert!(Instant::now() < deadline, "{arn} kept an instance");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = Instant::now();
        let r = api
            .invoke(pb::InvokeRequest {
                function_arn: arn.into(),
                payload: b"{}".to_vec(),
                ..pb::InvokeRequest::default()
            })
            .await
            .expect("invoke")
            .into_inner();
        assert!(r.function_error.is_empty(), "{r:?}");
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat
}
