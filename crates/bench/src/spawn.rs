//! A whole core for a benchmark: a root with the default configuration,
//! a drop-in of the benchmark's own, perhaps a group, and init started on it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Writes `root` (default config, `dropin` as `config.d/50-bench.toml`,
/// `group` as the deployed group if given) and starts init on it, quiet.
pub fn core(bin_dir: &Path, root: &Path, dropin: &str, group: Option<&str>) -> Child {
    std::fs::create_dir_all(root.join("config/config.d")).expect("dirs");
    let defaults = Command::new(bin_dir.join("verdant"))
        .args(["init", "--print-default-config"])
        .output()
        .expect("verdant init");
    std::fs::write(root.join("config/verdant.toml"), defaults.stdout).expect("write");
    // The function IPC port too is taken per core, not the fixed default.
    std::fs::write(
        root.join("config/config.d/00-bench.toml"),
        "[lambda-runner]\nipc_port = 0\n[discovery]\nbind = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    std::fs::write(root.join("config/config.d/50-bench.toml"), dropin).expect("write");
    if let Some(group) = group {
        std::fs::create_dir_all(root.join("deployments/bench")).expect("dirs");
        std::fs::write(root.join("deployments/bench/group.json"), group).expect("write");
        std::os::unix::fs::symlink("bench", root.join("deployments/current")).expect("link");
    }
    Command::new(bin_dir.join("verdant"))
        .args(["init", "--root"])
        .arg(root)
        .env("VERDANT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdant init")
}

/// SIGTERM, then waits.
pub fn stop(c: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = c.wait();
}

/// The group `id` of the bench core and its one device `bench-dev`
/// (`device_arn`), with `rest` (more definitions) merged in.
pub fn group(id: &str, device_arn: &str, rest: serde_json::Value) -> String {
    let thing = |name: &str, arn: &str, n: u8| {
        serde_json::json!({ "Id": name, "ThingArn": arn,
            "CertificateArn": format!("arn:aws:iot:us-east-1:123456789012:cert/{}", format!("{n:02x}").repeat(32)) })
    };
    let mut g = serde_json::json!({
        "Id": id,
        "CoreDefinitionVersion": { "Cores": [thing("core", "arn:aws:iot:us-east-1:123456789012:thing/verdant-core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("bench-dev", device_arn, 2)] },
    });
    if let (Some(g), serde_json::Value::Object(rest)) = (g.as_object_mut(), rest) {
        g.extend(rest);
    }
    g.to_string()
}

/// A core on `root` with `group` whose functions may run here, its
/// devices on a plain listener: init and the listener's port, once it
/// accepts connections.
pub async fn function_core(bin_dir: &Path, root: &Path, group: &str) -> (Child, u16) {
    let port = free_port();
    let child = core(
        bin_dir,
        root,
        &format!(
            "[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n\
             [lambda-runner]\nrun_on_insecure_host = true\n"
        ),
        Some(group),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the core did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (child, port)
}
