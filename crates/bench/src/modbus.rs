//! Modbus: the Modbus protocol adapter connector reads holding registers
//! from a Modbus TCP device (pymodbus's server,
//! `integration-tests/python/modbus_server.py`) for a device on the core
//! (device → broker → router → lambda-runner → connector → Modbus device,
//! and the answer back). Requests/s with a few in flight, against
//! pymodbus's own client reading the same server directly (the peer).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::answers::answered;
use crate::inference::python_out;
use crate::spawn;

const CONNECTOR: &str =
    "arn:aws:greengrass:us-east-1::/connectors/ModbusRTUProtocolAdapter/versions/3";
const DEVICE: &str = "arn:aws:iot:us-east-1:123456789012:thing/bench-dev";

fn group(device: u16) -> String {
    spawn::group(
        "bench-modbus",
        DEVICE,
        serde_json::json!({
            "ConnectorDefinitionVersion": { "Connectors": [
                { "Id": "modbus", "ConnectorArn": CONNECTOR, "Parameters": {
                    "ModbusTcpAddress": format!("127.0.0.1:{device}"), "IsolationMode": "NoContainer" } },
            ]},
            "SubscriptionDefinitionVersion": { "Subscriptions": [
                { "Id": "in", "Source": DEVICE, "Subject": "modbus/adapter/request", "Target": CONNECTOR },
                { "Id": "out", "Source": CONNECTOR, "Subject": "modbus/adapter/response", "Target": DEVICE },
            ]},
        }),
    )
}

/// pymodbus's client reading 10 holding registers `n` times, one after
/// the other: requests/s.
const DIRECT: &str = "import sys, time
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient('127.0.0.1', port=int(sys.argv[1])); c.connect()
n = int(sys.argv[2]); t = time.perf_counter()
for _ in range(n):
    assert not c.read_holding_registers(1, count=10, slave=1).isError()
print(round(n / (time.perf_counter() - t)))
";

pub async fn run(bin_dir: &Path, python: &Path, runs: usize) {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let server = std::path::absolute("integration-tests/python/modbus_server.py").expect("path");
    let device = spawn::free_port();
    let mut modbus = Command::new(python)
        .arg(&server)
        .args(["tcp", &device.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pymodbus (scripts/test-deps.sh installs it)");
    let mut line = String::new();
    BufReader::new(modbus.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready", "the Modbus server did not start");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    for d in [dir.path(), root.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let (mut verdant, port) = spawn::function_core(&bin_dir, &root, &group(device)).await;
    let body = serde_json::json!({ "request": { "operation": "ReadHoldingRegistersRequest",
        "device": 1, "address": 1, "count": 10 }, "id": "b" })
    .to_string();
    let topics = ("modbus/adapter/request", "modbus/adapter/response");
    let ok = |p: &[u8]| String::from_utf8_lossy(p).contains("\"success\"");
    // Ready once a request is answered.
    answered(port, topics, &body, 1, 1, ok).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    let device = device.to_string();
    for _ in 0..runs {
        through.push(answered(port, topics, &body, 2000, 10, ok).await);
        let rate = python_out(python, &["-c", DIRECT, &device, "2000"]);
        direct.push(rate.parse::<f64>().expect("a rate"));
    }
    let (through, direct) = (median(through), median(direct));
    println!("| figure | median of {runs} runs |\n|---|---|");
    println!(
        "| requests/s through the connector, 10 registers each, 10 in flight | {through:.0} |"
    );
    println!(
        "| requests/s of pymodbus's client on the same server, one after the other (peer) | {direct:.0} |"
    );
    println!("| ratio to the peer | {:.2} |", through / direct);
    spawn::stop(&mut verdant);
    let _ = modbus.kill();
    let _ = modbus.wait();
}
