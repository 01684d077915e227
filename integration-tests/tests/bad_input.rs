//! Bad configuration and bad environments: one clear error, exit code 78
//! for configuration, and nothing half-started.

use std::time::Duration;

use verdant_integration_tests::{Core, Options};

fn assert_config_exit(core: &mut Core, expect: &[&str]) {
    let status = core
        .wait_exit(Duration::from_secs(20))
        .expect("init gives up at once");
    assert_eq!(status.code(), Some(78), "{}", core.stderr_text());
    let err = core.stderr_text();
    for e in expect {
        assert!(err.contains(e), "`{e}` not in:\n{err}");
    }
    // Nothing was started: no service sockets, no pidfiles.
    let sockets = std::fs::read_dir(core.runtime_dir()).map_or(0, Iterator::count);
    assert_eq!(sockets, 0, "{err}");
}

#[test]
fn unknown_key_names_file_and_key() {
    let mut core = Core::start_with(&Options {
        dropin: Some("[services.broker]\nrestart = \"always\"\n"),
        ..Options::default()
    });
    assert_config_exit(
        &mut core,
        &["config.d/50-test.toml: services.broker.restart: unknown field `restart`"],
    );
}

#[test]
fn unknown_section_and_bad_dependency() {
    let mut core = Core::start_with(&Options {
        dropin: Some("[brokr]\nport = 1\n"),
        ..Options::default()
    });
    assert_config_exit(&mut core, &["50-test.toml: brokr: unknown section"]);
    let mut core = Core::start_with(&Options {
        dropin: Some("[services.broker]\ndepends_on = [\"routr\"]\n"),
        ..Options::default()
    });
    assert_config_exit(
        &mut core,
        &["services.broker.depends_on: unknown service `routr`"],
    );
}

#[test]
fn missing_program_is_named() {
    let mut core = Core::start_with(&Options {
        dropin: Some("[services.extra]\ncommand = \"verdant-no-such-daemon\"\n"),
        ..Options::default()
    });
    assert_config_exit(
        &mut core,
        &["services.extra.command: `verdant-no-such-daemon` not found"],
    );
}

#[tokio::test]
async fn invalid_group_names_json_path() {
    let mut core = Core::start();
    let group_file = core.root().join("deployments/current/group.json");
    core.wait_all_running().await;
    core.init.kill().unwrap();
    core.init.wait().unwrap();
    let mut group: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&group_file).unwrap()).unwrap();
    group["SubscriptionDefinitionVersion"]["Subscriptions"][2]["Target"] =
        "arn:aws:iot:local-1:000000000000:thing/stranger".into();
    std::fs::write(&group_file, group.to_string()).unwrap();
    // End the old services so the runtime dir is empty again.
    drop_services(&core);
    core.respawn();
    assert_config_exit(
        &mut core,
        &[
            "SubscriptionDefinitionVersion.Subscriptions[2].Target: unknown thing arn:aws:iot:local-1:000000000000:thing/stranger",
        ],
    );
}

fn drop_services(core: &Core) {
    let dir = core.root().join("data/init");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let pid: i32 = std::fs::read_to_string(e.path())
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        std::fs::remove_file(e.path()).unwrap();
    }
    let deadline = std::time::Instant::now() + verdant_integration_tests::PATIENCE;
    while std::fs::read_dir(core.runtime_dir()).is_ok_and(|d| d.count() > 0)
        && std::time::Instant::now() < deadline
    {
        // Stale sockets of killed daemons stay; remove them as a reboot would.
        for e in std::fs::read_dir(core.runtime_dir()).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[tokio::test]
async fn second_init_on_the_same_root_is_refused() {
    let core = Core::start();
    core.wait_all_running().await;
    let out = verdant_integration_tests::init_command()
        .arg("--root")
        .arg(core.root())
        .arg("--runtime-dir")
        .arg(core.dir.path().join("run2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another verdant-init (pid {}) is running on",
            core.init.id()
        )),
        "{err}"
    );
    assert!(
        !core.dir.path().join("run2").exists()
            || std::fs::read_dir(core.dir.path().join("run2"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn unusable_socket_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = verdant_integration_tests::init_command()
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--runtime-dir")
        .arg(file.join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "socket directory {} is not usable",
            file.join("run").display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("root/data/init/broker.pid").exists());
}

#[test]
fn verdantctl_without_a_core_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(verdant_integration_tests::bin("verdantctl"))
        .arg("--root")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "verdantctl: core not running at {}: no socket {}",
            dir.path().join("run").display(),
            dir.path().join("run/init.sock").display()
        )
    );
}
