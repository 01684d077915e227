//! The discovery API and the core's certificates with the real AWS IoT
//! Device SDKs for Python (v1 and v2): a device of the group finds its
//! core, gets the group CA and connects with it; a thing not in the group,
//! a certificate that is not the thing's, and a client without a
//! certificate are refused, and the server keeps serving. Connectivity set
//! by the operator, server certificates rotated under connected devices,
//! revoked devices, devices that bring a CSR, and a group CA rotation.

use std::path::Path;
use std::process::Command;

use verdant_integration_tests::{Core, Options, python, python_script};
use verdant_proto::daemon::v1::GetInfoRequest;
use verdant_proto::daemon::v1::daemon_client::DaemonClient;

/// Devices are told to connect over loopback (tests reach nothing else).
const LOOPBACK: &str =
    "[[discovery.connectivity]]\nid = \"loopback\"\nhost_address = \"127.0.0.1\"\n";

/// The discovery API's port, from the daemon's info note.
async fn discovery_port(core: &Core) -> String {
    discovery_ports(core).await.remove(0)
}

/// The discovery API's ports (the ALPN listener's second), from the
/// daemon's info note.
async fn discovery_ports(core: &Core) -> Vec<String> {
    let channel = verdant_common::uds::connect(&core.socket("discovery"))
        .await
        .unwrap();
    let note = DaemonClient::new(channel)
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    let ports: Vec<String> = note
        .split_whitespace()
        .filter(|w| w.starts_with("127.0.0.1:"))
        .map(|a| a.rsplit(':').next().unwrap().to_string())
        .collect();
    assert!(!ports.is_empty(), "{note}");
    ports
}

/// `awsiot_discovery.py` as `device` (its certificate) asking for `thing`.
async fn discover(core: &Core, device: &str, thing: &str) -> (i32, String) {
    let out = Command::new(python())
        .arg(python_script("awsiot_discovery.py"))
        .args(["localhost", &discovery_port(core).await])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert(&format!("devices/{device}.pem")))
        .arg(core.cert(&format!("devices/{device}.key")))
        .args([thing, &format!("{thing}/local/discovery")])
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_device_sdk_discovers_its_core_then_connects_with_the_ca_it_got() {
    let core = Core::start_with(&Options {
        dropin: Some(LOOPBACK),
        ..Options::default()
    });
    core.wait_all_running().await;
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 0, "{text}");
    assert!(
        text.contains("discovered verdant-dev-group 1 connectivity"),
        "{text}"
    );
    assert!(text.contains("received hello after discovery"), "{text}");

    // A thing that is in no group of this core: 404, DataNotFound.
    let (status, text) = discover(&core, "sample-device", "nobody").await;
    assert_eq!(status, 3, "{text}");
    assert!(
        text.contains("refused DiscoveryDataNotFoundException"),
        "{text}"
    );

    // Another device of the group, asked for with the sample device's
    // certificate: 401, Unauthorized.
    let added = core.ctl(&["device", "add", "second-device"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let (status, text) = discover(&core, "sample-device", "second-device").await;
    assert_eq!(status, 3, "{text}");
    assert!(
        text.contains("refused DiscoveryUnauthorizedException"),
        "{text}"
    );
    // ...and with its own, it is found.
    let (status, text) = discover(&core, "second-device", "second-device").await;
    assert!(
        text.contains("discovered verdant-dev-group"),
        "{status} {text}"
    );

    // No client certificate: the handshake fails; the server goes on.
    let port = discovery_port(&core).await;
    let bare = Command::new(python())
        .args([
            "-c",
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             s = ctx.wrap_socket(socket.create_connection(('localhost', int(sys.argv[1]))), server_hostname='localhost')\n\
             s.sendall(b'GET /greengrass/discover/thing/sample-device HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n')\n\
             print(s.recv(100))\n",
            &port,
        ])
        .arg(core.cert("group-ca.pem"))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&bare.stdout).contains("200"),
        "{}",
        String::from_utf8_lossy(&bare.stdout)
    );
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 0, "{text}");
}

#[tokio::test]
async fn the_v2_device_sdk_discovers_its_core_then_connects_with_the_ca_it_got() {
    let dropin = format!("[discovery]\nalpn_bind = \"127.0.0.1:0\"\n{LOOPBACK}");
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        ..Options::default()
    });
    core.wait_all_running().await;
    let ports = discovery_ports(&core).await;
    assert_eq!(ports.len(), 2, "{ports:?}");
    let run = |port: &str, thing: &str| {
        let out = Command::new(python())
            .arg(python_script("awsiotsdk_discovery.py"))
            .args(["localhost", port])
            .arg(core.cert("group-ca.pem"))
            .arg(core.cert("devices/sample-device.pem"))
            .arg(core.cert("devices/sample-device.key"))
            .args([thing, &format!("{thing}/local/discovery")])
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    // On the main port, and on the ALPN listener (the v2 SDK always
    // offers x-amzn-http-ca, as for AWS's port 443).
    for port in &ports {
        let (status, text) = run(port, "sample-device");
        assert_eq!(status, 0, "{port}: {text}");
        assert!(
            text.contains("discovered verdant-dev-group 1 connectivity"),
            "{text}"
        );
        assert!(text.contains("received hello after discovery"), "{text}");
    }
    let (status, text) = run(&ports[0], "nobody");
    assert_eq!(status, 3, "{text}");
    assert!(text.contains("status 404"), "{text}");
    // A client offering no ALPN gets nothing on the ALPN listener.
    let bare = Command::new(python())
        .args([
            "-c",
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname='localhost')\n\
             s.sendall(b'GET /greengrass/discover/thing/sample-device HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n')\n\
             print(s.recv(100))\n",
            &ports[1],
        ])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&bare.stdout);
    assert!(!said.contains("200"), "{said}");
}

#[tokio::test]
async fn a_huge_request_line_and_a_request_that_never_ends_are_cut_off() {
    let core = Core::start_with(&Options {
        dropin: Some(LOOPBACK),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = discovery_port(&core).await;
    let abuse = tokio::process::Command::new(python())
        .arg(python_script("discovery_abuse.py"))
        .args(["localhost", &port])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .output();
    // While the slow client holds its connection, others are served.
    let (out, (status, text)) = tokio::join!(abuse, async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        discover(&core, "sample-device", "sample-device").await
    });
    assert_eq!(status, 0, "{text}");
    let out = out.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.lines()
            .any(|l| l.starts_with("huge ") && !l.contains(" 200 ")),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("slow closed after"), "{said}");
}

/// `verdantctl -o json` with `args`, parsed.
fn ctl_json(core: &Core, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = core.ctl(&all);
    assert!(
        out.status.success(),
        "verdantctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The server certificate as `verdantctl certificates` shows it.
fn server_certificate(core: &Core) -> serde_json::Value {
    ctl_json(core, &["certificates"])["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "server")
        .cloned()
        .unwrap()
}

/// The id (SHA-256) of the certificate the broker presents to a new TLS
/// connection that checks it against the group CA for `hostname`, or why
/// the check failed.
fn presented_by_broker(core: &Core, port: u16, hostname: &str) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import hashlib, socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[3])\n\
             ctx.load_cert_chain(sys.argv[4], sys.argv[5])\n\
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname=sys.argv[2])\n\
             print(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())\n",
            &port.to_string(),
            hostname,
        ])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .output()
        .unwrap();
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }
}

/// Waits until a new TLS connection to the broker gets the certificate
/// `id` (the broker looks at its files every half second).
async fn broker_presents(core: &Core, port: u16, hostname: &str, id: &serde_json::Value) {
    let mut presented = String::new();
    for _ in 0..50 {
        presented = presented_by_broker(core, port, hostname);
        if presented == id.as_str().unwrap() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the broker presents {presented}, not {id}");
}

/// `mosquitto_sub` as the sample device over TLS, waiting for two
/// messages; returns once the broker lists it connected.
async fn subscriber(core: &Core, port: u16) -> std::process::Child {
    let mut sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port.to_string()])
        .args(["--cafile", &core.cert("group-ca.pem")])
        .args(["--cert", &core.cert("devices/sample-device.pem")])
        .args(["--key", &core.cert("devices/sample-device.key")])
        .args([
            "-i",
            "sample-device",
            "-t",
            "sample-device/local/#",
            "-q",
            "1",
        ])
        .args(["-C", "2", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    for _ in 0..100 {
        if !sample_device_peer(core).is_empty() {
            return sub;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = sub.kill();
    let _ = sub.wait();
    panic!("the subscriber never connected");
}

/// The sample device's connection as the broker lists it.
fn sample_device_peer(core: &Core) -> String {
    ctl_json(core, &["clients"])
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "sample-device" && c["connected"] == true)
        .map(|c| c["peer_address"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn operator_connectivity_is_kept_and_named_by_a_rotated_certificate_devices_stay_connected() {
    let core = Core::start_with(&Options {
        dropin: Some(
            "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n",
        ),
        ..Options::default()
    });
    core.wait_all_running().await;
    let tls_port = core.broker_port("tls").await;
    let tcp_port = core.broker_port("tcp").await.to_string();
    let publish = |message: &str| {
        let out = Command::new("timeout")
            .args(["20", "mosquitto_pub", "-h", "127.0.0.1", "-p", &tcp_port])
            .args(["-i", "lab-publisher", "-t", "sample-device/local/r"])
            .args(["-m", message, "-q", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    // A device connected before anything changes.
    let sub = subscriber(&core, tls_port).await;
    publish("before");
    let first = server_certificate(&core);

    // The operator's connectivity: given to devices at once, and a server
    // certificate naming every address follows.
    let set = ctl_json(
        &core,
        &[
            "connectivity",
            "set",
            "lan=127.0.0.1",
            "name=core.test:8883",
        ],
    );
    assert_eq!(set["source"], "operator", "{set}");
    assert_eq!(set["entries"][1]["port_number"], 8883, "{set}");
    assert_eq!(
        set["entries"][0]["port_number"],
        u64::from(tls_port),
        "no port: the broker's"
    );
    let mut named = serde_json::Value::Null;
    for _ in 0..100 {
        named = server_certificate(&core);
        if named["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "core.test")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(named["serial"], first["serial"], "{named}");
    assert!(
        named["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "core.test"),
        "{named}"
    );
    // A new connection gets the new certificate, verified by that name.
    broker_presents(&core, tls_port, "core.test", &named["id"]).await;

    // Rotated on demand: a new serial, the same names.
    let rotated = ctl_json(&core, &["certificates", "rotate"]);
    assert_ne!(rotated["serial"], named["serial"]);
    broker_presents(&core, tls_port, "localhost", &rotated["id"]).await;
    // The device connected before is still on its first connection.
    publish("after");
    let out = sub.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");

    // The discovery API serves the new certificate too, and devices get
    // the operator's connectivity (the script connects as the sample
    // device, so only once its subscriber has gone).
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 0, "{text}");
    assert!(
        text.contains("discovered verdant-dev-group 2 connectivity"),
        "{text}"
    );
    let requests = ctl_json(&core, &["discoveries"]);
    assert_eq!(requests[0]["status"], 200, "{requests}");

    // The operator's list outlives a restart of the daemon.
    let out = core.ctl(&["restart", "discovery"]);
    assert!(out.status.success(), "{out:?}");
    core.wait_all_running().await;
    let kept = ctl_json(&core, &["connectivity"]);
    assert_eq!(kept["source"], "operator", "{kept}");
    assert_eq!(kept["entries"][1]["host_address"], "core.test", "{kept}");
    let cleared = ctl_json(&core, &["connectivity", "clear"]);
    assert_eq!(cleared["source"], "detected", "{cleared}");
}

#[tokio::test]
async fn a_revoked_device_is_disconnected_and_refused_by_the_broker_and_discovery() {
    let core = Core::start_with(&Options::default());
    core.wait_all_running().await;
    let tls_port = core.broker_port("tls").await;
    let mut sub = subscriber(&core, tls_port).await;

    let revoked = ctl_json(&core, &["device", "revoke", "sample-device"]);
    assert_eq!(revoked["already_revoked"], false, "{revoked}");
    let at = std::time::Instant::now();
    // Its live connection is closed (the broker looks every half second).
    let mut closed = None;
    for _ in 0..200 {
        if let Some(status) = sub.try_wait().unwrap() {
            closed = Some(status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = closed.unwrap_or_else(|| {
        let _ = sub.kill();
        panic!("the revoked device is still connected");
    });
    assert!(!status.success(), "closed by the broker: {status:?}");
    eprintln!("disconnected {:?} after the revocation", at.elapsed());
    // A new connection is refused, with the reason in the broker's log.
    let ca = Path::new(&core.cert("group-ca.pem")).to_path_buf();
    let key = Path::new(&core.cert("devices/sample-device.key")).to_path_buf();
    assert!(!tls_publish(&core, tls_port, &ca, "sample-device", &key));
    let log = std::fs::read_to_string(core.root().join("logs/broker.log")).unwrap();
    assert!(log.contains("is revoked on this core"), "{log}");
    // Discovery answers it 401.
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 3, "{text}");
    assert!(
        text.contains("refused DiscoveryUnauthorizedException"),
        "{text}"
    );
    let list = ctl_json(&core, &["device", "list"]);
    assert_eq!(list[0]["thing_name"], "sample-device", "{list}");
    assert_eq!(list[0]["revoked"], true, "{list}");
    let again = ctl_json(&core, &["device", "revoke", "sample-device"]);
    assert_eq!(again["already_revoked"], true, "{again}");
}

#[tokio::test]
async fn a_device_whose_key_never_left_it_gets_its_csr_signed_and_connects() {
    let core = Core::start_with(&Options::default());
    core.wait_all_running().await;
    let tls_port = core.broker_port("tls").await;
    let dir = tempfile::tempdir().unwrap();
    let (key, csr) = (dir.path().join("k.key"), dir.path().join("k.csr"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=csr-device", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let added = core.ctl(&[
        "device",
        "add",
        "csr-device",
        "--csr",
        csr.to_str().unwrap(),
    ]);
    assert!(added.status.success(), "{added:?}");
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(said.contains("the device's own"), "{said}");
    assert!(core.ctl(&["reload"]).status.success());
    let mut connected = false;
    for _ in 0..50 {
        if tls_publish(
            &core,
            tls_port,
            Path::new(&core.cert("group-ca.pem")),
            "csr-device",
            &key,
        ) {
            connected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(connected, "the CSR device never connected");
}

/// `mosquitto_pub` over TLS as `device` (client id and topic prefix),
/// trusting `ca`, with its certificate and `key`; whether the broker
/// took the message.
fn tls_publish(core: &Core, port: u16, ca: &Path, device: &str, key: &Path) -> bool {
    Command::new("timeout")
        .args([
            "20",
            "mosquitto_pub",
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
        ])
        .arg("--cafile")
        .arg(ca)
        .args(["--cert", &core.cert(&format!("devices/{device}.pem"))])
        .arg("--key")
        .arg(key)
        .args([
            "-i",
            device,
            "-t",
            &format!("{device}/x"),
            "-m",
            "hi",
            "-q",
            "1",
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// Whether a new TLS connection to the broker verifies with only `ca`.
fn verifies_with(core: &Core, port: u16, ca: &Path) -> Result<(), String> {
    let out = Command::new(python())
        .args([
            "-c",
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
             ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname='localhost')\n",
            &port.to_string(),
        ])
        .arg(ca)
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn a_rotated_group_ca_keeps_old_devices_connecting_through_the_overlap_then_retires() {
    let core = Core::start_with(&Options {
        dropin: Some(LOOPBACK),
        ..Options::default()
    });
    core.wait_all_running().await;
    let port = core.broker_port("tls").await;
    let dir = tempfile::tempdir().unwrap();
    let old_ca = dir.path().join("old-ca.pem");
    std::fs::copy(core.cert("group-ca.pem"), &old_ca).unwrap();
    let before = server_certificate(&core);

    let rotated = ctl_json(&core, &["ca", "rotate", "--overlap", "40s"]);
    let again = core.ctl(&["ca", "rotate"]);
    assert!(!again.status.success(), "one rotation at a time");
    let new_ca = dir.path().join("new-ca.pem");
    let shown = ctl_json(&core, &["ca"]);
    assert_eq!(shown["cas"][0]["id"], rotated["current"], "{shown}");
    assert_eq!(shown["cas"][1]["role"], "previous (handed out)", "{shown}");
    let bundle = std::fs::read_to_string(core.cert("group-ca.pem")).unwrap();
    let first_end = bundle.find("-----END CERTIFICATE-----").unwrap() + 26;
    std::fs::write(&new_ca, &bundle[..first_end]).unwrap();

    // The server certificate follows the new CA, with the
    // cross-certificate: devices that know only the old CA verify it,
    // and so do those that know only the new one.
    let rotation = ctl_json(&core, &["certificates", "rotate"]);
    assert_ne!(rotation["issuer"], before["issuer"], "{rotation}");
    broker_presents(&core, port, "localhost", &rotation["id"]).await;
    verifies_with(&core, port, &old_ca).expect("the old CA, through the cross-certificate");
    verifies_with(&core, port, &new_ca).expect("the new CA");
    // Discovery hands out both; the SDK connects with what it got.
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("2 CAs"), "{text}");
    // A device the new CA signs gets in; the sample device (the old CA's)
    // still does.
    assert!(
        core.ctl(&["device", "add", "after-rotation"])
            .status
            .success()
    );
    assert!(core.ctl(&["reload"]).status.success());
    let publish = |device: &str| {
        let key = core.cert(&format!("devices/{device}.key"));
        tls_publish(&core, port, &new_ca, device, Path::new(&key))
    };
    let mut ok = false;
    for _ in 0..50 {
        if publish("after-rotation") {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(ok, "the new CA's device never got in");
    assert!(publish("sample-device"));

    // Once the overlap is over: the old CA is no longer handed out, and
    // the server certificate loses its cross-certificate.
    let until = rotated["overlap_until"].as_i64().unwrap();
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if now > until {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let after = ctl_json(&core, &["certificates", "rotate"]);
    broker_presents(&core, port, "localhost", &after["id"]).await;
    assert!(verifies_with(&core, port, &old_ca).is_err());
    verifies_with(&core, port, &new_ca).expect("the new CA");
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("1 CAs"), "{text}");
}

#[tokio::test]
async fn another_cas_certificate_and_a_malformed_request_are_refused_and_the_server_goes_on() {
    let core = Core::start_with(&Options {
        dropin: Some(LOOPBACK),
        ..Options::default()
    });
    core.wait_all_running().await;
    // A device certificate from another CA, with the sample device's name:
    // the real SDK's discovery fails at the handshake.
    let dir = tempfile::tempdir().unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::default();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = rcgen::Issuer::new(other, other_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "sample-device");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &other_ca).unwrap();
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let out = Command::new(python())
        .arg(python_script("awsiot_discovery.py"))
        .args(["localhost", &discovery_port(&core).await])
        .arg(core.cert("group-ca.pem"))
        .arg(&cert_file)
        .arg(&key_file)
        .args(["sample-device", "sample-device/local/x"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !said.contains("discovered"),
        "{said}"
    );

    // A request line that is not HTTP: 400, from the HTTP parser.
    let malformed = Command::new(python())
        .args([
            "-c",
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname='localhost')\n\
             s.sendall(b'NOT HTTP AT ALL\\r\\n\\r\\n')\n\
             print(s.recv(100))\n",
            &discovery_port(&core).await,
        ])
        .arg(core.cert("group-ca.pem"))
        .arg(core.cert("devices/sample-device.pem"))
        .arg(core.cert("devices/sample-device.key"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&malformed.stdout);
    assert!(said.contains("400"), "{said}");
    let (status, text) = discover(&core, "sample-device", "sample-device").await;
    assert_eq!(status, 0, "{text}");
}
