//! docs/getting-started.md, command by command, on a first-start core: a
//! second device gets its own certificate from `verdantctl device add`,
//! talks to the sample device through the core with `mosquitto_pub` and
//! `mosquitto_sub` over mutual TLS, and the hello-world function of
//! docs/examples reaches the sample device. Also what a newcomer meets on
//! the way: `verdant --help` and `verdantctl logs init`.

use std::path::Path;
use std::process::Command;

use verdant_integration_tests::{Core, Options, PATIENCE, bin};

/// This machine may have `fs.protected_symlinks = 0`, where functions run
/// only when told to (docs/functions.md, "Secure mode").
const INSECURE: &str = "[lambda-runner]\nrun_on_insecure_host = true\n";

/// A `verdantctl` command that must succeed; its standard output.
fn ctl(core: &Core, args: &[&str]) -> String {
    let out = core.ctl(args);
    assert!(
        out.status.success(),
        "verdantctl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The TLS options of `thing` as the documentation gives them.
fn tls_args(core: &Core, port: u16, thing: &str) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--cafile",
        &core.cert("group-ca.pem"),
        "--cert",
        &core.cert(&format!("devices/{thing}.pem")),
        "--key",
        &core.cert(&format!("devices/{thing}.key")),
        "-i",
        thing,
    ]
    .map(String::from)
    .to_vec()
}

/// `mosquitto_sub` as `thing` on `topic` (QoS 1) with `extra` options,
/// until its first message (`-C 1`); what it printed. With `-E` it exits
/// once subscribed instead.
fn mosquitto_sub(core: &Core, port: u16, thing: &str, topic: &str, extra: &[&str]) -> String {
    let out = Command::new("mosquitto_sub")
        .args(tls_args(core, port, thing))
        .args(["-t", topic, "-v", "-q", "1", "-C", "1"])
        .args(["-W", &PATIENCE.as_secs().to_string()])
        .args(extra)
        .output()
        .expect("mosquitto_sub (apt-get install mosquitto-clients)");
    assert!(out.status.success(), "mosquitto_sub as {thing}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn publish(core: &Core, port: u16, thing: &str, topic: &str, message: &str) {
    let out = Command::new("mosquitto_pub")
        .args(tls_args(core, port, thing))
        .args(["-t", topic, "-m", message, "-q", "1"])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "mosquitto_pub as {thing}: {out:?}");
}

#[tokio::test]
async fn a_second_device_with_its_own_certificate_talks_to_the_sample_device() {
    let core = Core::start();
    core.wait_all_running().await;

    let added = ctl(&core, &["device", "add", "sensor-1"]);
    let id = added
        .lines()
        .find_map(|l| l.strip_prefix("certificate id:"))
        .map_or_else(|| panic!("no certificate id in {added}"), str::trim);
    let group: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(core.root().join("deployments/current/group.json")).unwrap(),
    )
    .unwrap();
    let devices = group["DeviceDefinitionVersion"]["Devices"]
        .as_array()
        .unwrap();
    assert!(
        devices.iter().any(|d| d["Id"] == "sensor-1"
            && d["CertificateArn"]
                .as_str()
                .unwrap()
                .ends_with(&format!("cert/{id}"))),
        "{devices:#?}"
    );
    // The same name twice is refused, and leaves the certificate alone.
    let again = core.ctl(&["device", "add", "sensor-1"]);
    assert!(!again.status.success());
    ctl(
        &core,
        &[
            "routes",
            "add",
            "sensor-1",
            "sensor-1/hello/#",
            "sample-device",
        ],
    );
    assert!(ctl(&core, &["reload"]).contains("6 routes"));

    // The sample device subscribes in a persistent session (`-c`) and
    // leaves once subscribed (`-E`); the broker keeps sensor-1's QoS 1
    // message for it until it is back: nothing depends on who is quicker.
    let port = core.broker_port("tls").await;
    let topic = "sensor-1/hello/#";
    mosquitto_sub(&core, port, "sample-device", topic, &["-c", "-E"]);
    publish(
        &core,
        port,
        "sensor-1",
        "sensor-1/hello/world",
        "hello from sensor-1",
    );
    let got = mosquitto_sub(&core, port, "sample-device", topic, &["-c"]);
    assert_eq!(got.trim(), "sensor-1/hello/world hello from sensor-1");
}

#[tokio::test]
async fn the_hello_world_function_publishes_to_the_sample_device() {
    use std::os::unix::fs::PermissionsExt;
    let core = Core::start_with(&Options {
        dropin: Some(INSECURE),
        ..Options::default()
    });
    core.wait_all_running().await;

    let added = ctl(
        &core,
        &[
            "functions",
            "add",
            "hello",
            "--executable",
            "hello.handler",
            "--pinned",
            "--no-container",
        ],
    );
    assert!(
        added.contains("arn:aws:lambda:local-1:000000000000:function:hello:1"),
        "{added}"
    );
    let dir = core.root().join("functions/hello/1");
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/hello-world/hello.py");
    std::fs::copy(example, dir.join("hello.py")).unwrap();
    // The documentation installs greengrasssdk with pip; here it comes
    // from the venv scripts/test-deps.sh made, without the network.
    verdant_integration_tests::bundle_greengrasssdk(&dir);
    // As root, functions run as nobody, who must reach the code
    // (getting-started.md: `chmod o+rx var/functions`; the temp dirs too).
    if nix::unistd::geteuid().is_root() {
        let root = core.root();
        for path in [root.parent().unwrap(), &root, &root.join("functions")] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o005)).unwrap();
        }
    }
    ctl(
        &core,
        &["routes", "add", "hello", "hello/world", "sample-device"],
    );
    let reloaded = ctl(&core, &["reload"]);
    assert!(reloaded.contains("functions: 1 started"), "{reloaded}");

    // It publishes every five seconds for as long as it runs: whenever the
    // subscription is in place, a greeting comes.
    let port = core.broker_port("tls").await;
    let got = mosquitto_sub(&core, port, "sample-device", "hello/world", &[]);
    assert!(
        got.starts_with("hello/world ") && got.contains("Hello world from a Verdant core"),
        "{got}"
    );
    let listed = ctl(&core, &["functions"]);
    assert!(listed.contains("function:hello:1"), "{listed}");
}

#[tokio::test]
async fn verdantctl_logs_init_shows_the_supervisors_own_log() {
    let core = Core::start();
    core.wait_all_running().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let log = ctl(&core, &["logs", "init"]);
        if log.contains("core up") {
            assert!(log.contains("starting 7 services"), "{log}");
            assert!(!log.contains('\u{1b}'), "colours in the log file: {log}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `core up` in {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn verdant_help_prints_help_and_succeeds() {
    for flag in ["--help", "-h"] {
        let out = Command::new(bin("verdant")).arg(flag).output().unwrap();
        assert!(out.status.success(), "verdant {flag}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: verdant <PROGRAM>"), "{text}");
        assert!(text.contains("init, broker, router"), "{text}");
    }
    let out = Command::new(bin("verdant"))
        .arg("no-such-program")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
