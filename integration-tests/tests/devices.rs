//! Real device clients against a whole core, using the development
//! certificates a first start writes: `mosquitto_pub`/`mosquitto_sub` over
//! mutual TLS, the AWS IoT Device SDK for Python, and paho-mqtt.

use std::process::{Command, Stdio};
use std::time::Duration;

use verdant_integration_tests::{Core, Options};

/// Local mode with the plain listener on loopback, to publish from a
/// second client (not a device of the group) without taking over the
/// sample device's session.
const TCP: &str =
    "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";

/// `mosquitto_pub` on the plain listener, as a client other than the device.
fn publish_plain(port: &str, client_id: &str, topic: &str, message: &str) {
    // `timeout`: a missing acknowledgement must fail the test, not hang it.
    let out = Command::new("timeout")
        .args([
            "20",
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-i",
            client_id,
        ])
        .args(["-t", topic, "-m", message, "-q", "1"])
        .output()
        .expect("mosquitto_pub (scripts/test-deps.sh installs it)");
    assert!(out.status.success(), "{out:?}");
}

/// How a mosquitto client reaches the TLS listener as the sample device.
async fn tls_args(core: &Core) -> Vec<String> {
    let port = core.broker_port("tls").await.to_string();
    let mut args: Vec<String> = ["-h", "localhost", "-p", &port].map(String::from).to_vec();
    for (flag, file) in [
        ("--cafile", "group-ca.pem"),
        ("--cert", "devices/sample-device.pem"),
        ("--key", "devices/sample-device.key"),
    ] {
        args.push(flag.into());
        args.push(core.cert(file));
    }
    args
}

#[tokio::test]
async fn mosquitto_clients_over_mutual_tls_with_the_dev_certificates() {
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        ..Options::default()
    });
    core.wait_all_running().await;
    let tls = tls_args(&core).await;
    let tcp = core.broker_port("tcp").await.to_string();

    let sub = Command::new("mosquitto_sub")
        .args(&tls)
        .args([
            "-i",
            "sample-device",
            "-t",
            "sample-device/local/#",
            "-q",
            "1",
        ])
        .args(["-C", "2", "-W", "20", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (scripts/test-deps.sh installs it)");
    tokio::time::sleep(Duration::from_millis(700)).await;
    publish_plain(
        &tcp,
        "lab-publisher",
        "sample-device/local/hello",
        "over tcp",
    );
    // The sample device's certificate under another client id is refused
    // (Greengrass's rule: the client id is the thing name).
    let refused = Command::new("timeout")
        .args(["20", "mosquitto_pub"])
        .args(&tls)
        .args([
            "-i",
            "not-the-thing",
            "-t",
            "sample-device/local/x",
            "-m",
            "no",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not authorised") || err.contains("not authorized"),
        "{err}"
    );
    publish_plain(
        &tcp,
        "lab-publisher-2",
        "sample-device/local/again",
        "second",
    );

    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "sample-device/local/hello over tcp",
            "sample-device/local/again second"
        ]
    );
    // The broker logged the refusal with the certificate's subject.
    let log = std::fs::read_to_string(core.root().join("logs/broker.log")).unwrap();
    assert!(
        log.contains("refused")
            && log.contains("CN=sample-device")
            && log.contains("not-the-thing"),
        "{log}"
    );
}

/// Runs a script of `integration-tests/python/` against a fresh core's TLS
/// listener: `script localhost PORT CA CERT KEY <extra...>`, with the
/// sample device's certificate.
async fn run_device_script(script: &str, extra: &[&str]) -> std::process::Output {
    let core = Core::start();
    core.wait_all_running().await;
    core.run_device_script(script, extra).await
}

#[tokio::test]
async fn aws_iot_device_sdk_for_python_connects_and_round_trips() {
    let out = run_device_script(
        "awsiot_pubsub.py",
        &["sample-device", "sample-device/local/sdk"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("received hello from the device sdk"),
        "{stdout}"
    );
}

#[tokio::test]
async fn paho_with_the_wrong_client_id_is_not_authorized() {
    let out = run_device_script("paho_refused.py", &["impostor"]).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a paho conformance script against a core in local mode (the
/// device over mutual TLS, others on the plain listener) until it says
/// `done`.
async fn paho_walk(script: &str, done: &str) {
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        ..Options::default()
    });
    core.wait_all_running().await;
    let tcp = core.broker_port("tcp").await.to_string();
    let out = core.run_device_script(script, &[&tcp]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(done), "{stdout}");
}

#[tokio::test]
async fn paho_walks_mqtt_3_1_1() {
    paho_walk("paho_v311.py", "all MQTT 3.1.1 checks passed").await;
}

/// `worker_threads = 1`: connections, hub and gRPC share one thread, and
/// the broker still passes the whole 3.1.1 walk (wills, sessions, QoS 2,
/// retained messages, a persistent session's queue).
#[tokio::test]
async fn paho_walks_mqtt_3_1_1_with_the_broker_on_one_thread() {
    let dropin = "[broker]\nmode = \"local\"\nworker_threads = 1\n\
                  [broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";
    let core = Core::start_with(&Options {
        dropin: Some(dropin),
        ..Options::default()
    });
    core.wait_all_running().await;
    let pid = core.service("broker").await.pid;
    // Before any disk commit has started a thread of the blocking pool.
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert_eq!(threads, 1, "the broker runs on its main thread alone");
    let tcp = core.broker_port("tcp").await.to_string();
    let out = core.run_device_script("paho_v311.py", &[&tcp]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("all MQTT 3.1.1 checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn paho_speaks_mqtt_5_with_properties_aliases_sessions_and_wills() {
    paho_walk("paho_v5.py", "all MQTT 5.0 checks passed").await;
}

#[tokio::test]
async fn paho_over_websocket_with_mutual_tls_and_plain() {
    // WebSocket over mutual TLS: the sample device with its certificate.
    let wss = "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n\
               [broker.websocket]\nenabled = true\nbind = \"127.0.0.1:0\"\n";
    let core = Core::start_with(&Options {
        dropin: Some(wss),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("wss").await.to_string();
    let tcp = core.broker_port("tcp").await.to_string();
    let out = ws_script(&core, &port, &["wss", &tcp]);
    assert!(out.contains("all WebSocket checks passed"), "{out}");

    // Plain WebSocket, a lab listener on loopback.
    let ws = "[broker]\nmode = \"local\"\n[broker.websocket]\nenabled = true\ntls = false\n\
              bind = \"127.0.0.1:0\"\n";
    let core = Core::start_with(&Options {
        dropin: Some(ws),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("ws").await.to_string();
    let out = ws_script(&core, &port, &["ws"]);
    assert!(out.contains("all WebSocket checks passed"), "{out}");

    // Refused upgrades: another path, or no `mqtt` subprotocol.
    for (path, protocol, status) in [("/other", "mqtt", "404"), ("/mqtt", "chat", "400")] {
        let answer = raw_upgrade(&port, path, protocol);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
}

/// A WebSocket upgrade request by hand; the first line of the answer.
fn raw_upgrade(port: &str, path: &str, protocol: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Runs `paho_ws.py` against `port` with the dev certificates; its output.
fn ws_script(core: &Core, port: &str, extra: &[&str]) -> String {
    let out = Command::new(verdant_integration_tests::python())
        .arg(verdant_integration_tests::python_script("paho_ws.py"))
        .args(["localhost", port])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Runs `openssl` with `args` in `dir`; fails the test if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

#[tokio::test]
async fn an_x509_v1_device_certificate_is_refused_with_how_to_issue_a_v3_one() {
    let core = Core::start();
    core.wait_all_running().await;
    let port = core.broker_port("tls").await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = (core.cert("group-ca.pem"), core.cert("group-ca.key"));
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dev.key",
            "-subj",
            "/CN=dev2",
            "-out",
            "dev.csr",
        ],
    );
    let connect = |cert: &str| {
        Command::new("timeout")
            .args(["20", "mosquitto_pub", "-h", "localhost", "-p", &port])
            .args(["--cafile", &ca, "--cert", cert, "--key", "dev.key"])
            .args(["-i", "dev2", "-t", "dev2/x", "-m", "hi"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // A plain `openssl x509 -req`: version 1.
    openssl(
        dir.path(),
        &[
            "x509", "-req", "-in", "dev.csr", "-CA", &ca, "-CAkey", &ca_key, "-out", "v1.pem",
        ],
    );
    assert!(!connect("v1.pem").status.success());
    core.wait_for_log(
        "broker",
        &["X.509 version 1", "extendedKeyUsage=clientAuth"],
    )
    .await;
    // The recipe of docs/broker.md: version 3, accepted by the chain check
    // (then refused only because no device of the group has it).
    std::fs::write(
        dir.path().join("v3.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir.path(),
        &[
            "x509", "-req", "-in", "dev.csr", "-CA", &ca, "-CAkey", &ca_key, "-days", "365",
            "-extfile", "v3.ext", "-out", "v3.pem",
        ],
    );
    assert!(!connect("v3.pem").status.success());
    core.wait_for_log("broker", &["belongs to no device of the deployed group"])
        .await;
}

/// An MQTT remaining length.
fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

#[tokio::test]
async fn a_refused_65535_byte_topic_is_not_quoted_whole_in_the_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let core = Core::start_with(&Options {
        dropin: Some(TCP),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tcp").await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // CONNECT (3.1.1, clean session, keep-alive 30 s, client id "long").
    let body = b"\x00\x04MQTT\x04\x02\x00\x1e\x00\x04long";
    let mut connect = vec![0x10];
    remaining_length(body.len(), &mut connect);
    connect.extend_from_slice(body);
    s.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // A PUBLISH whose 65,535-byte topic has a wildcard: refused.
    let topic = format!("a/+/{}", "x".repeat(65_535 - 4));
    let mut publish = vec![0x30];
    remaining_length(2 + topic.len() + 2, &mut publish);
    publish.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
    publish.extend_from_slice(topic.as_bytes());
    publish.extend_from_slice(b"hi");
    s.write_all(&publish).await.unwrap();
    core.wait_for_log("broker", &["(65535 bytes)"]).await;
    let log = std::fs::read_to_string(core.root().join("logs/broker.log")).unwrap();
    assert!(log.lines().all(|l| l.len() < 2_000), "{log}");
}
