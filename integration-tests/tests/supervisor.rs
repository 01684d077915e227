//! verdant-init supervising the real daemons.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use verdant_integration_tests::{Core, Options, PATIENCE, alive};
use verdant_proto::supervisor::v1 as pb;

const DAEMONS: [&str; 7] = [
    "broker",
    "router",
    "shadow",
    "lambda-runner",
    "secrets",
    "discovery",
    "ota-agent",
];

fn pid_of(list: &[pb::Service], name: &str) -> u32 {
    list.iter().find(|s| s.name == name).expect(name).pid
}

#[tokio::test]
async fn every_daemon_serves_health_and_says_what_it_does() {
    let core = Core::start();
    let list = core.wait_all_running().await;
    let mut names: Vec<_> = list.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    let mut expected = DAEMONS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for svc in &list {
        assert!(svc.pid > 0 && alive(svc.pid), "{svc:?}");
        assert_eq!(svc.version, env!("CARGO_PKG_VERSION"));
        let expected = match svc.name.as_str() {
            "broker" => "routed mode",
            "router" => "routing by the table",
            "shadow" => "shadows over MQTT",
            "lambda-runner" => "Python, Node.js, Java and native functions",
            "ota-agent" => "deployments of a group",
            "discovery" => "HTTPS discovery API",
            "secrets" => "secrets sealed at rest",
            _ => "health and reflection only",
        };
        assert!(svc.note.contains(expected), "{svc:?}");
        // The daemon's own health endpoint, dialled directly.
        let channel = verdant_common::uds::connect(&core.socket(&svc.name))
            .await
            .unwrap();
        let resp = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // Dependencies start after what they depend on.
    let broker = list.iter().find(|s| s.name == "broker").unwrap();
    let router = list.iter().find(|s| s.name == "router").unwrap();
    assert_eq!(broker.depends_on, vec!["router".to_string()]);
    assert!(broker.started_at.unwrap().seconds >= router.started_at.unwrap().seconds);
    // Sockets are 0660 in a 0750 directory.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&core.socket("broker")), 0o660);
    assert_eq!(mode(&core.runtime_dir()), 0o750);
    // First-start files.
    let root = core.root();
    assert!(root.join("config/verdant.toml").is_file());
    assert_eq!(mode(&root.join("config/certs/group-ca.key")), 0o600);
    assert_eq!(
        mode(&root.join("config/certs/devices/sample-device.key")),
        0o600
    );
    assert!(root.join("deployments/current/group.json").is_file());
    assert!(root.join("logs/broker.log").is_file());
}

#[tokio::test]
async fn killed_service_is_restarted_and_counted() {
    let core = Core::start();
    let list = core.wait_all_running().await;
    let old = pid_of(&list, "broker");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let list = core
        .wait_until("broker restarted", |l| {
            l.iter().any(|s| {
                s.name == "broker"
                    && s.state() == pb::ServiceState::Running
                    && s.pid != old
                    && s.restart_count == 1
            })
        })
        .await;
    let broker = list.iter().find(|s| s.name == "broker").unwrap();
    assert_eq!(broker.last_exit, "signal 9 (SIGKILL)");
    assert!(!alive(old));
    // Nothing else was touched.
    assert!(
        list.iter()
            .filter(|s| s.name != "broker")
            .all(|s| s.restart_count == 0)
    );
    let log = core.ctl(&["logs", "broker", "-n", "100"]);
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(text.contains("pid ended: signal 9 (SIGKILL)"), "{text}");
}

#[tokio::test]
async fn crash_loop_fails_alone_and_bad_config_exit_is_not_restarted() {
    let core = Core::start_with(&Options {
        dropin: Some(
            "[init]\nrestart_limit = 3\n\
             [services.crasher]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"exit 3\"]\n\
             [services.misconfigured]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"exit 78\"]\n",
        ),
        ..Options::default()
    });
    let list = core
        .wait_until("crasher and misconfigured failed", |l| {
            l.iter()
                .filter(|s| s.name == "crasher" || s.name == "misconfigured")
                .all(|s| s.state() == pb::ServiceState::Failed)
        })
        .await;
    let crasher = list.iter().find(|s| s.name == "crasher").unwrap();
    assert!(
        crasher.message.contains("crash loop: 3 restarts"),
        "{crasher:?}"
    );
    assert_eq!(crasher.restart_count, 3);
    assert_eq!(crasher.last_exit, "exit code 3");
    let bad = list.iter().find(|s| s.name == "misconfigured").unwrap();
    assert!(bad.message.contains("bad configuration"), "{bad:?}");
    assert_eq!(bad.restart_count, 0);
    for name in DAEMONS {
        let s = core.service(name).await;
        assert_eq!(s.state(), pb::ServiceState::Running, "{s:?}");
    }
    // An operator restart gives a failed service a fresh window: one
    // requested restart, three automatic ones, then failed again.
    let out = core.ctl(&["restart", "crasher"]);
    assert!(out.status.success(), "{out:?}");
    let s = core.service("crasher").await;
    assert_eq!(s.state(), pb::ServiceState::Failed, "{s:?}");
    assert_eq!(s.restart_count, 7, "{s:?}");
}

#[tokio::test]
async fn sigterm_stops_every_child_within_the_grace_period() {
    let mut core = Core::start();
    let list = core.wait_all_running().await;
    let pids: Vec<u32> = list.iter().map(|s| s.pid).collect();
    kill(Pid::from_raw(core.init.id() as i32), Signal::SIGTERM).unwrap();
    // Grace is 5 s per level; two levels.
    let status = core
        .wait_exit(Duration::from_secs(12))
        .expect("init exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", core.stderr_text());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} left behind");
    }
    assert!(!core.socket("init").exists());
    assert!(core.stderr_text().contains("stopped"));
}

#[tokio::test]
async fn a_new_init_ends_what_a_killed_one_left() {
    let mut core = Core::start();
    let list = core.wait_all_running().await;
    let old: Vec<u32> = list.iter().map(|s| s.pid).collect();
    core.init.kill().unwrap();
    core.init.wait().unwrap();
    assert!(
        old.iter().all(|p| alive(*p)),
        "services outlive a killed init"
    );
    core.respawn();
    let list = core
        .wait_until("new services running", |l| {
            l.len() == 7
                && l.iter()
                    .all(|s| s.state() == pb::ServiceState::Running && !old.contains(&s.pid))
        })
        .await;
    let deadline = Instant::now() + PATIENCE;
    while old.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(old.iter().all(|p| !alive(*p)), "old services ended");
    assert!(
        core.stderr_text().contains("previous verdant-init"),
        "{}",
        core.stderr_text()
    );
    assert_eq!(list.len(), 7);
}

#[tokio::test]
async fn operator_stop_start_and_watch() {
    let core = Core::start();
    core.wait_all_running().await;
    let mut client = core.client().await;
    let mut watch = client
        .watch_services(pb::WatchServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let stopped = client
        .stop_service(pb::ServiceRequest {
            name: "shadow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state(), pb::ServiceState::Stopped);
    assert_eq!(stopped.pid, 0);
    // A stopped service stays stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        core.service("shadow").await.state(),
        pb::ServiceState::Stopped
    );
    let started = client
        .start_service(pb::ServiceRequest {
            name: "shadow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.state(), pb::ServiceState::Running);
    // The watch saw the snapshot and then the stop and the start.
    let mut seen = Vec::new();
    while let Ok(Ok(Some(s))) =
        tokio::time::timeout(Duration::from_millis(500), watch.message()).await
    {
        if s.name == "shadow" {
            seen.push(s.state());
        }
    }
    for state in [
        pb::ServiceState::Stopping,
        pb::ServiceState::Stopped,
        pb::ServiceState::Starting,
        pb::ServiceState::Running,
    ] {
        assert!(seen.contains(&state), "{state:?} not in {seen:?}");
    }
    let err = client
        .restart_service(pb::ServiceRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn systemd_notify_ready_and_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let core = Core::start_with(&Options {
        env: vec![
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
        ],
        ..Options::default()
    });
    let deadline = Instant::now() + PATIENCE;
    let (mut ready, mut watchdog) = (None, 0);
    let mut buf = [0u8; 1024];
    while (ready.is_none() || watchdog < 2) && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.contains("READY=1") {
                ready = Some(msg.clone());
            }
            if msg.contains("WATCHDOG=1") {
                watchdog += 1;
            }
        }
    }
    let ready = ready.expect("READY=1 sent");
    assert!(ready.contains("STATUS=7 services running"), "{ready}");
    assert!(watchdog >= 2);
    // READY comes only once everything is up.
    let list = core.services().await;
    assert!(list.iter().all(|s| s.state() == pb::ServiceState::Running));
}

#[tokio::test]
async fn a_second_init_on_the_same_root_is_refused_before_it_reads_anything() {
    let core = Core::start();
    core.wait_all_running().await;
    // A switch under way, as a second init's version bookkeeping would
    // see it: it must not count a start of it, nor move `current`.
    let versions = core.root().join("versions");
    std::fs::create_dir_all(versions.join("9.9.9")).unwrap();
    std::fs::write(versions.join("9.9.9/verdant"), "#!/bin/sh\nexit 1\n").unwrap();
    std::os::unix::fs::symlink("9.9.9", versions.join("current")).unwrap();
    let record = serde_json::json!({ "from": "0.0.1", "to": "9.9.9", "phase": "switching",
        "reason": "", "attempts": 0, "started_ms": 0, "updated_ms": 0 });
    std::fs::write(versions.join("update.json"), record.to_string()).unwrap();
    let out = std::process::Command::new(verdant_integration_tests::bin("verdant"))
        .args(["init", "--root"])
        .arg(core.root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("another verdant-init"), "{said}");
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(versions.join("update.json")).unwrap()).unwrap();
    assert_eq!(after, record);
    assert_eq!(
        std::fs::read_link(versions.join("current")).unwrap(),
        std::path::PathBuf::from("9.9.9")
    );
    assert_eq!(core.services().await.len(), 7);
}
