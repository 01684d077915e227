//! The daemons forked from init's zygote: set up as executed ones would be,
//! adopted and reaped by init, and executed again when the zygote is gone
//! or turned off.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use verdant_integration_tests::{Core, Options, PATIENCE, alive};
use verdant_proto::supervisor::v1 as pb;

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// (parent pid, session id) from `/proc/<pid>/stat`.
fn parent_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (fields[1].parse().unwrap(), fields[3].parse().unwrap())
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn fd_target(pid: u32, fd: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn zygote_of(init: u32) -> Option<u32> {
    children(init)
        .into_iter()
        .find(|p| comm(*p) == "verdant-zygote")
}

/// Kills service `name` and waits until it runs again (in another process).
async fn kill_and_wait(core: &Core, name: &str) -> Vec<pb::Service> {
    let old = core.service(name).await.pid;
    kill(Pid::from_raw(old.cast_signed()), Signal::SIGKILL).unwrap();
    core.wait_until("restarted", |l| {
        l.iter()
            .any(|s| s.name == name && s.state() == pb::ServiceState::Running && s.pid != old)
    })
    .await
}

#[tokio::test]
async fn daemons_are_forked_from_the_zygote_and_set_up_as_executed_ones() {
    let mut core = Core::start();
    let list = core.wait_all_running().await;
    let init = core.init.id();
    let zygote = zygote_of(init).expect("a zygote under init");
    assert!(cmdline(zygote).starts_with("verdant-zygote"));
    for s in &list {
        let name = format!("verdant-{}", s.name);
        // Adopted by init, in a session of its own, named as executed.
        assert_eq!(parent_and_session(s.pid), (init, s.pid), "{name}");
        assert_eq!(comm(s.pid), name.chars().take(15).collect::<String>());
        assert!(
            cmdline(s.pid).starts_with(&name),
            "{name}: {}",
            cmdline(s.pid)
        );
        // stdin from /dev/null, stdout and stderr on init's log pipe, and
        // nothing of init's (its lock, its socket).
        assert_eq!(fd_target(s.pid, 0), "/dev/null", "{name}");
        assert!(fd_target(s.pid, 1).starts_with("pipe:"), "{name}");
        assert_eq!(fd_target(s.pid, 1), fd_target(s.pid, 2), "{name}");
        for fd in std::fs::read_dir(format!("/proc/{}/fd", s.pid)).unwrap() {
            let target = std::fs::read_link(fd.unwrap().path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            assert!(!target.ends_with("init.lock"), "{name} holds {target}");
        }
    }
    // Each daemon's log is captured as before.
    let out = core.ctl(&["logs", "broker", "-n", "50"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("listening"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A killed daemon is reaped by init and forked again.
    let list = kill_and_wait(&core, "broker").await;
    let again = list.iter().find(|s| s.name == "broker").unwrap();
    assert_eq!(again.restart_count, 1);
    assert_eq!(comm(again.pid), "verdant-broker");

    // SIGTERM: every daemon and the zygote are gone when init exits.
    let pids: Vec<u32> = list.iter().map(|s| s.pid).collect();
    kill(Pid::from_raw(init.cast_signed()), Signal::SIGTERM).unwrap();
    let status = core
        .wait_exit(Duration::from_secs(12))
        .expect("init exits after SIGTERM");
    assert!(status.success(), "{}", core.stderr_text());
    for pid in pids.into_iter().chain([zygote]) {
        assert!(!alive(pid), "pid {pid} ({}) left behind", comm(pid));
    }
}

/// A running core whose zygote was sent `signal`: (core, init, zygote).
async fn zygote_signalled(signal: Signal) -> (Core, u32, u32) {
    let core = Core::start();
    core.wait_all_running().await;
    let init = core.init.id();
    let zygote = zygote_of(init).expect("a zygote under init");
    kill(Pid::from_raw(zygote.cast_signed()), signal).unwrap();
    (core, init, zygote)
}

#[tokio::test]
async fn without_the_zygote_services_are_executed() {
    let (core, init, _) = zygote_signalled(Signal::SIGKILL).await;
    let deadline = Instant::now() + PATIENCE;
    while !core.stderr_text().contains("the zygote ended") {
        assert!(Instant::now() < deadline, "{}", core.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = kill_and_wait(&core, "shadow").await;
    let again = list.iter().find(|s| s.name == "shadow").unwrap().pid;
    // An executed daemon is named after the executable, `verdant`.
    assert_eq!(comm(again), "verdant");
    assert!(cmdline(again).starts_with("verdant-shadow"));
    assert_eq!(parent_and_session(again), (init, again));
}

#[tokio::test]
async fn a_zygote_that_does_not_answer_is_ended_and_services_executed() {
    let (core, init, zygote) = zygote_signalled(Signal::SIGSTOP).await;
    // The restart waits for the zygote's answer (5 s), then executes.
    let list = kill_and_wait(&core, "secrets").await;
    let again = list.iter().find(|s| s.name == "secrets").unwrap().pid;
    assert_eq!(comm(again), "verdant");
    assert!(
        core.stderr_text().contains("the zygote does not answer"),
        "{}",
        core.stderr_text()
    );
    // Ended, so it cannot fork the request later.
    let deadline = Instant::now() + PATIENCE;
    while alive(zygote) {
        assert!(Instant::now() < deadline, "the silent zygote lives on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let secrets = children(init)
        .into_iter()
        .filter(|p| comm(*p).starts_with("verdant-secrets"))
        .count();
    assert_eq!(secrets, 0, "a forked secrets besides the executed one");
}

#[tokio::test]
async fn zygote_false_executes_every_daemon() {
    let core = Core::start_with(&Options {
        dropin: Some("[init]\nzygote = false\n"),
        ..Options::default()
    });
    let list = core.wait_all_running().await;
    let init = core.init.id();
    for s in &list {
        assert_eq!(comm(s.pid), "verdant", "{}", s.name);
        assert_eq!(parent_and_session(s.pid).0, init);
    }
    let deadline = Instant::now() + PATIENCE;
    while zygote_of(init).is_some() {
        assert!(Instant::now() < deadline, "the zygote stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(core.stderr_text().contains("zygote = false"));
}

#[tokio::test]
async fn signals_to_init_while_it_waits_for_the_zygote_are_not_silence() {
    let core = Core::start();
    core.wait_all_running().await;
    let init = core.init.id();
    let zygote = zygote_of(init).expect("a zygote under init");
    // SIGCHLD every half millisecond (init reaps and finds nothing) while
    // services are forked again: an interrupted wait must be resumed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pelter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = kill(Pid::from_raw(init.cast_signed()), Signal::SIGCHLD);
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    for name in ["secrets", "discovery", "ota-agent"] {
        let list = kill_and_wait(&core, name).await;
        let again = list.iter().find(|s| s.name == name).unwrap().pid;
        let forked: String = format!("verdant-{name}").chars().take(15).collect();
        assert_eq!(comm(again), forked, "{}", core.stderr_text());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pelter.join().unwrap();
    assert!(alive(zygote));
    assert!(!core.stderr_text().contains("the zygote does not answer"));
}

#[tokio::test]
async fn a_daemon_forked_after_init_gave_up_on_the_zygote_never_runs() {
    // Every answer of the zygote comes 6.5 s late (init waits 5): the first
    // daemon is forked, but init has given up, executed that service and
    // killed the zygote by the time the helper would name it.
    let core = Core::start_with(&Options {
        env: vec![("VERDANT_ZYGOTE_TEST_STALL_MS", "6500".into())],
        ..Options::default()
    });
    let list = core.wait_all_running().await;
    assert!(
        core.stderr_text().contains("the zygote does not answer"),
        "{}",
        core.stderr_text()
    );
    // Past the helper's stall: what it forked has had every chance to run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let init = core.init.id();
    let mut registered: Vec<u32> = list.iter().map(|s| s.pid).collect();
    registered.sort_unstable();
    let mut under_init: Vec<u32> = children(init);
    under_init.sort_unstable();
    let strays: Vec<String> = under_init
        .iter()
        .filter(|p| !registered.contains(p))
        .map(|p| format!("{p} {} ({})", comm(*p), cmdline(*p)))
        .collect();
    assert!(strays.is_empty(), "unsupervised processes: {strays:?}");
    for s in &list {
        assert_eq!(comm(s.pid), "verdant", "{} was not executed", s.name);
    }
}
