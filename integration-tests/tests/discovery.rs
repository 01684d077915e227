//! The discovery API with the real AWS IoT Device SDK for Python: a
//! device of the group finds its core, gets the group CA and connects
//! with it; a thing not in the group, a certificate that is not the
//! thing's, and a client without a certificate are refused, and the
//! server keeps serving.

use std::process::Command;

use verdant_integration_tests::{Core, Options, python, python_script};
use verdant_proto::daemon::v1::GetInfoRequest;
use verdant_proto::daemon::v1::daemon_client::DaemonClient;

/// The discovery API's port, from the daemon's info note.
async fn discovery_port(core: &Core) -> String {
    let channel = verdant_common::uds::connect(&core.socket("discovery"))
        .await
        .unwrap();
    let note = DaemonClient::new(channel)
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    let address = note
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("{note}"));
    address.rsplit(':').next().unwrap().to_string()
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
        dropin: Some(
            "[[discovery.connectivity]]\nid = \"loopback\"\nhost_address = \"127.0.0.1\"\n",
        ),
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
async fn a_huge_request_line_and_a_request_that_never_ends_are_cut_off() {
    let core = Core::start_with(&Options {
        dropin: Some(
            "[[discovery.connectivity]]\nid = \"loopback\"\nhost_address = \"127.0.0.1\"\n",
        ),
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
