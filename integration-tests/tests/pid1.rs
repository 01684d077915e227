//! verdant-init as a container's PID 1, and as a child subreaper outside one:
//! orphans of the services are reaped, and SIGHUP/SIGUSR1/SIGUSR2 reach the
//! services.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::supervisor::v1 as pb;

/// A service that leaves an orphan every 50 ms (a backgrounded subshell
/// whose child outlives it) and logs each SIGHUP it gets.
const ORPHANS: &str = "[services.orphans]\ncommand = \"/bin/sh\"\nhealth = \"none\"\n\
    args = [\"-c\", \"trap 'echo got-hup' HUP; while :; do (sleep 0.01 &); sleep 0.05; done\"]\n";

/// Zombie processes whose parent is `parent`.
fn zombies_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields[0] == "Z" && fields[1].parse::<u32>().ok() == Some(parent) {
            out.push(pid);
        }
    }
    out
}

async fn reaps_and_forwards(core: &Core, init_pid: u32) {
    let list = core
        .wait_until("orphans running", |l| {
            l.iter()
                .any(|s| s.name == "orphans" && s.state() == pb::ServiceState::Running)
        })
        .await;
    let orphans_pid = list.iter().find(|s| s.name == "orphans").unwrap().pid;
    // Let orphans be made and die for a while; none may stay a zombie of init.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut lingering = Vec::new();
    for _ in 0..5 {
        lingering = zombies_of(init_pid);
        if lingering.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        lingering.is_empty(),
        "unreaped zombies of init: {lingering:?}"
    );

    kill(Pid::from_raw(init_pid as i32), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = std::fs::read_to_string(core.root().join("logs/orphans.log")).unwrap_or_default();
        if log.contains("got-hup") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP never reached the service: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The service was not restarted by the signal.
    assert_eq!(core.service("orphans").await.pid, orphans_pid);
}

#[tokio::test]
async fn as_a_subreaper_init_reaps_orphans_and_forwards_signals() {
    let core = Core::start_with(&Options {
        dropin: Some(ORPHANS),
        ..Options::default()
    });
    core.wait_all_running().await;
    reaps_and_forwards(&core, core.init.id()).await;
}

#[tokio::test]
async fn as_pid_1_init_reaps_orphans_forwards_signals_and_stops_cleanly() {
    let mut core = Core::start_with(&Options {
        dropin: Some(ORPHANS),
        pid1: true,
        ..Options::default()
    });
    core.wait_all_running().await;
    // `unshare --fork` runs init as its child: PID 1 inside, this pid outside.
    let unshare = core.init.id();
    let init_pid = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("init under unshare")
        .parse::<u32>()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap()
        .to_string();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "init is PID 1 inside: {nspid}"
    );
    reaps_and_forwards(&core, init_pid).await;
    kill(Pid::from_raw(init_pid as i32), Signal::SIGTERM).unwrap();
    let status = core.wait_exit(Duration::from_secs(15)).expect("init exits");
    assert!(status.success(), "{status:?}: {}", core.stderr_text());
}
