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
