//! The Modbus protocol adapter connector against a real Modbus device
//! (pymodbus's server) over Modbus TCP, in a Greengrass container, and
//! over RTU on a serial line (a pseudo-terminal pair made by socat), as a
//! plain process: every operation of Greengrass's connector round trips;
//! a Modbus exception, a device that does not answer, an unreachable
//! server (new parameters, by a deployment) and a malformed request each
//! get their `fail` answer, and the connector keeps serving.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::deployments::{deploy, watch_to_end};
use verdant_integration_tests::functions::{logs, start_group};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, publish, received, subscribed};
use verdant_integration_tests::{Core, PATIENCE, python};
use verdant_proto::ota::v1::Phase;

const MODBUS: &str =
    "arn:aws:greengrass:us-east-1::/connectors/ModbusRTUProtocolAdapter/versions/3";

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `child` prints `ready`.
fn ready(mut child: Child, what: &str) -> Running {
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{what} did not start");
    Running(child)
}

/// pymodbus's server for unit 1 (`python/modbus_server.py`).
fn modbus_server(kind: &str, at: &str) -> Running {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/modbus_server.py");
    let child = Command::new(python())
        .arg(script)
        .args([kind, at])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ready(child, "the Modbus server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn group(connectors: &Value, resources: &Value) -> String {
    json!({
        "Id": "modbus-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
        "ResourceDefinitionVersion": { "Resources": resources },
        "ConnectorDefinitionVersion": { "Connectors": connectors },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "req", "Source": arn("a"), "Subject": "modbus/adapter/request", "Target": MODBUS },
            { "Id": "resp", "Source": MODBUS, "Subject": "modbus/adapter/response", "Target": arn("a") },
        ]},
    })
    .to_string()
}

/// A device on the core, subscribed to the connector's answers.
struct Device {
    client: rumqttc::AsyncClient,
    events: rumqttc::EventLoop,
    next: u32,
}

impl Device {
    async fn new(core: &Core) -> Device {
        let port = core.broker_port("tcp").await;
        let (client, mut events) = connect(port, "a", false).await;
        subscribed(&client, &mut events, "modbus/adapter/response").await;
        Device {
            client,
            events,
            next: 0,
        }
    }

    /// Sends `request` and waits for the answer with its id.
    async fn ask(&mut self, core: &Core, request: Value) -> Value {
        let topic = "modbus/adapter/request";
        self.next += 1;
        let id = format!("request-{}", self.next);
        let message = json!({ "request": request, "id": id });
        let mut got = publish(&self.client, &mut self.events, topic, &message.to_string()).await;
        let answer = tokio::time::timeout(PATIENCE, async {
            loop {
                for (_, body) in got.drain(..) {
                    let v: Value = serde_json::from_str(&body).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                }
                got = received(&mut self.events, Duration::from_millis(50)).await;
            }
        })
        .await;
        answer.unwrap_or_else(|_| panic!("no answer to {message}:\n{}", logs(core)))
    }
}

fn op(operation: &str, fields: &Value) -> Value {
    let mut r = json!({ "operation": operation, "device": 1 });
    for (k, v) in fields.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// The payload of a successful answer.
fn success(answer: &Value) -> Value {
    assert_eq!(answer["response"]["status"], "success", "{answer}");
    answer["response"]["payload"].clone()
}

/// Every operation of Greengrass's adapter, and its failures, against the
/// server of `modbus_server.py`.
async fn every_operation(core: &Core, dev: &mut Device) {
    let answer = dev.ask(core, read("ReadCoilsRequest", 0, 4)).await;
    assert_eq!(answer["response"]["operation"], "ReadCoilsRequest");
    assert_eq!(answer["response"]["device"], 1);
    assert_eq!(
        success(&answer),
        json!({ "function_code": 1, "bits": [0, 1, 0, 1] })
    );
    let got = success(&dev.ask(core, read("ReadDiscreteInputsRequest", 0, 4)).await);
    assert_eq!(got, json!({ "function_code": 2, "bits": [1, 0, 0, 1] }));
    let got = success(
        &dev.ask(core, read("ReadHoldingRegistersRequest", 1, 3))
            .await,
    );
    assert_eq!(
        got,
        json!({ "function_code": 3, "registers": [10, 20, 30] })
    );
    let got = success(&dev.ask(core, read("ReadInputRegistersRequest", 2, 2)).await);
    assert_eq!(
        got,
        json!({ "function_code": 4, "registers": [1002, 1003] })
    );
    writes(core, dev).await;
    failures(core, dev).await;
}

fn read(operation: &str, address: u16, count: u16) -> Value {
    op(operation, &json!({ "address": address, "count": count }))
}

/// The write operations, each read back.
async fn writes(core: &Core, dev: &mut Device) {
    let w = json!({ "address": 0, "value": 1 });
    let got = success(&dev.ask(core, op("WriteSingleCoilRequest", &w)).await);
    assert_eq!(
        got,
        json!({ "function_code": 5, "address": 0, "value": true })
    );
    let got = success(&dev.ask(core, read("ReadCoilsRequest", 0, 1)).await);
    assert_eq!(got["bits"], json!([1]));

    let w = json!({ "address": 5, "value": 555 });
    let got = success(&dev.ask(core, op("WriteSingleRegisterRequest", &w)).await);
    assert_eq!(
        got,
        json!({ "function_code": 6, "address": 5, "value": 555 })
    );
    let got = success(
        &dev.ask(core, read("ReadHoldingRegistersRequest", 5, 1))
            .await,
    );
    assert_eq!(got["registers"], json!([555]));

    let w = json!({ "address": 10, "values": [1, 1, 0, 1] });
    let got = success(&dev.ask(core, op("WriteMultipleCoilsRequest", &w)).await);
    assert_eq!(
        got,
        json!({ "function_code": 15, "address": 10, "count": 4 })
    );
    let got = success(&dev.ask(core, read("ReadCoilsRequest", 10, 4)).await);
    assert_eq!(got["bits"], json!([1, 1, 0, 1]));

    let w = json!({ "address": 20, "values": [7, 8, 9] });
    let got = success(&dev.ask(core, op("WriteMultipleRegistersRequest", &w)).await);
    assert_eq!(
        got,
        json!({ "function_code": 16, "address": 20, "count": 3 })
    );
    let got = success(
        &dev.ask(core, read("ReadHoldingRegistersRequest", 20, 3))
            .await,
    );
    assert_eq!(got["registers"], json!([7, 8, 9]));

    // (7 AND 0x00F2) OR (0x0025 AND NOT 0x00F2) = 2 OR 5.
    let w = json!({ "address": 20, "and_mask": 0xF2, "or_mask": 0x25 });
    let got = success(&dev.ask(core, op("MaskWriteRegisterRequest", &w)).await);
    assert_eq!(
        got,
        json!({ "function_code": 22, "address": 20, "and_mask": 0xF2, "or_mask": 0x25 })
    );
    let got = success(
        &dev.ask(core, read("ReadHoldingRegistersRequest", 20, 1))
            .await,
    );
    assert_eq!(got["registers"], json!([7]));

    let w = json!({ "read_address": 30, "read_count": 3, "write_address": 30,
                    "write_registers": [11, 12] });
    let got = success(
        &dev.ask(core, op("ReadWriteMultipleRegistersRequest", &w))
            .await,
    );
    assert_eq!(
        got,
        json!({ "function_code": 23, "registers": [11, 12, 320] })
    );
}

/// A Modbus exception, a unit that does not answer and a malformed
/// request: each its own answer, and the connector serves on.
async fn failures(core: &Core, dev: &mut Device) {
    // A Modbus exception from the device.
    let answer = dev
        .ask(core, read("ReadHoldingRegistersRequest", 500, 1))
        .await;
    let r = &answer["response"];
    assert_eq!(
        (&r["status"], &r["error"]),
        (&json!("fail"), &json!("Exception")),
        "{answer}"
    );
    assert_eq!(
        r["payload"],
        json!({ "function_code": 131, "exception_code": 2 })
    );
    // A unit that does not answer.
    let mut silent = read("ReadCoilsRequest", 0, 1);
    silent["device"] = json!(2);
    let answer = dev.ask(core, silent).await;
    let r = &answer["response"];
    assert_eq!(r["error"], "No Response", "{answer}");
    assert_eq!(
        r["error_message"],
        "[Input/Output] no response from device 2 within 500 ms"
    );
    // A malformed request.
    let answer = dev
        .ask(
            core,
            op("ReadCoilsRequest", &json!({ "address": "1", "count": 1 })),
        )
        .await;
    assert_eq!(
        answer["response"]["error_message"],
        "invalid `address` field: expected an integer 0..65535, got \"1\"",
        "{answer}"
    );
    // And it keeps serving.
    let got = success(
        &dev.ask(core, read("ReadHoldingRegistersRequest", 1, 1))
            .await,
    );
    assert_eq!(got["registers"], json!([10]));
}

#[tokio::test]
async fn every_operation_round_trips_to_a_modbus_tcp_device_from_a_container() {
    let port = free_port();
    let _server = modbus_server("tcp", &port.to_string());
    let connectors = |address: String| {
        json!([{ "Id": "modbus", "ConnectorArn": MODBUS, "Parameters": {
            "ModbusTcpAddress": address, "ModbusTimeoutMs": "500" } }])
    };
    let core = start_group(&group(&connectors(format!("127.0.0.1:{port}")), &json!([]))).await;
    let mut dev = Device::new(&core).await;
    every_operation(&core, &mut dev).await;
    // New parameters reach it by a deployment: a server that is not there.
    let moved = group(
        &connectors(format!("127.0.0.1:{}", free_port())),
        &json!([]),
    );
    let queued = deploy(&core, &moved).await;
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    assert_eq!(seen.last().unwrap().phase(), Phase::Succeeded, "{seen:?}");
    let request = op("ReadCoilsRequest", &json!({ "address": 0, "count": 1 }));
    let answer = dev.ask(&core, request).await;
    let why = answer["response"]["error_message"].as_str().unwrap();
    assert!(why.starts_with("cannot connect to 127.0.0.1:"), "{answer}");
    assert!(why.contains("Connection refused"), "{answer}");
}

/// A pseudo-terminal pair (socat): the device's end and the core's, as
/// links in a directory the connector's user can reach.
struct SerialLine {
    _socat: Running,
    device: PathBuf,
    core: PathBuf,
}

fn serial_line(dir: &Path) -> SerialLine {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.join("serial");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (device, core) = (dir.join("device"), dir.join("core"));
    let end = |link: &Path| format!("pty,raw,echo=0,perm=0666,link={}", link.display());
    let socat = Running(
        Command::new("socat")
            .args([end(&device), end(&core)])
            .spawn()
            .expect("socat (scripts/test-deps.sh installs it)"),
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while !(device.exists() && core.exists()) {
        assert!(std::time::Instant::now() < deadline, "socat made no ptys");
        std::thread::sleep(Duration::from_millis(20));
    }
    SerialLine {
        _socat: socat,
        device,
        core,
    }
}

#[tokio::test]
async fn every_operation_round_trips_to_a_modbus_rtu_device_on_a_serial_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = serial_line(dir.path());
    let _server = modbus_server("rtu", &line.device.display().to_string());
    let port = line.core.display().to_string();
    let connectors = json!([
        { "Id": "modbus", "ConnectorArn": MODBUS, "Parameters": {
            "ModbusSerialPort-ResourceId": "serial", "ModbusSerialPort": port,
            "ModbusBaudRate": "9600", "ModbusTimeoutMs": "500",
            "IsolationMode": "NoContainer" } },
    ]);
    let resources = json!([
        { "Id": "serial", "Name": "serial", "ResourceDataContainer": {
            "LocalDeviceResourceData": { "SourcePath": port } } },
    ]);
    let core = start_group(&group(&connectors, &resources)).await;
    let mut dev = Device::new(&core).await;
    every_operation(&core, &mut dev).await;
}
