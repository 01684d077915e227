//! Version switches of a running core with devices connected: the time
//! from `ApplyUpdate` (and from `RollbackVersion`) to the core settled on
//! the other version with every service running, how long the device
//! listener refused connections meanwhile (a probe connects every 2 ms),
//! and how long the connected devices were away.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use verdant_proto::ota::v1 as ota;
use verdant_proto::ota::v1::updates_client::UpdatesClient;
use verdant_proto::supervisor::v1 as sup;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

use crate::spawn;

const LIMIT: Duration = Duration::from_mins(3);
const NEW: &str = "99.0.1";

/// `scripts/update-repo.py` with `python`.
fn script(python: &Path, args: &[&str]) {
    let out = Command::new(python)
        .arg("scripts/update-repo.py")
        .args(args)
        .output()
        .expect("update-repo.py");
    assert!(out.status.success(), "update-repo.py {args:?}: {out:?}");
}

async fn versions(root: &Path) -> Option<sup::Versions> {
    let channel = verdant_common::uds::connect(&root.join("run/init.sock"))
        .await
        .ok()?;
    let r = SupervisorClient::new(channel)
        .get_versions(sup::GetVersionsRequest {})
        .await
        .ok()?;
    Some(r.into_inner())
}

async fn all_running(root: &Path) -> bool {
    let Ok(channel) = verdant_common::uds::connect(&root.join("run/init.sock")).await else {
        return false;
    };
    SupervisorClient::new(channel)
        .list_services(sup::ListServicesRequest {})
        .await
        .is_ok_and(|r| {
            r.into_inner()
                .services
                .iter()
                .all(|s| s.state() == sup::ServiceState::Running)
        })
}

/// Waits until the core runs `version`, its update ended, every service
/// running.
async fn settled_on(root: &Path, version: &str) {
    let begun = Instant::now();
    loop {
        if let Some(v) = versions(root).await
            && v.running == version
            && v.update.is_some_and(|u| u.phase != "switching")
            && all_running(root).await
        {
            return;
        }
        assert!(
            begun.elapsed() < LIMIT,
            "the core never settled on {version}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connects every 2 ms until stopped; the longest run of refused
/// connections.
fn probe(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut longest = Duration::ZERO;
        let mut since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let ok = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok();
            match (ok, since) {
                (false, None) => since = Some(Instant::now()),
                (true, Some(s)) => {
                    longest = longest.max(s.elapsed());
                    since = None;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        longest
    })
}

/// Connects `devices` devices (persistent sessions, reconnecting every
/// 5 ms when away); the longest time one was away goes into `away`.
fn devices(
    port: u16,
    devices: usize,
    away: &Arc<std::sync::Mutex<Duration>>,
) -> Arc<std::sync::atomic::AtomicUsize> {
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..devices {
        let mut o = MqttOptions::new(format!("dev-{i}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(false);
        let (client, mut events) = AsyncClient::new(o, 100);
        let away = away.clone();
        let connected = connected.clone();
        tokio::spawn(async move {
            let _client = client;
            let mut lost: Option<Instant> = None;
            let mut first = true;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if std::mem::take(&mut first) {
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(l) = lost.take() {
                            let mut a = away.lock().expect("away lock");
                            *a = (*a).max(l.elapsed());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        lost.get_or_insert_with(Instant::now);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
    }
    connected
}

pub async fn run(bin_dir: &Path, python: &Path, device_count: usize, runs: usize) {
    let bin_dir = std::path::absolute(bin_dir).expect("bin dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let s = |p: &str| dir.path().join(p).to_str().expect("utf-8").to_string();
    script(python, &["keys", &s("keys")]);
    script(python, &["init", &s("repo"), "--keys", &s("keys")]);
    let exe = bin_dir.join("verdant");
    script(
        python,
        &[
            "add",
            &s("repo"),
            "--keys",
            &s("keys"),
            "--executable",
            exe.to_str().expect("utf-8"),
            "--version",
            NEW,
            "--stamp",
        ],
    );
    let root = dir.path().join("root");
    let port = spawn::free_port();
    let dropin = format!(
        "[broker]\nmode = \"local\"\n[broker.tls]\nbind = \"127.0.0.1:0\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n\
         [ota-agent]\nupdate_repository = \"{}\"\n",
        s("repo")
    );
    let mut core = spawn::core(&bin_dir, &root, &dropin, None);
    std::fs::copy(
        dir.path().join("repo/metadata/1.root.json"),
        root.join("config/update-root.json"),
    )
    .expect("anchor");
    let old = verdant_common::version::version();
    settled_or_started(&root).await;
    let away = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let connected = devices(port, device_count, &away);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        connected.load(Ordering::Relaxed),
        device_count,
        "every device connected"
    );

    let (mut apply, mut back, mut refused, mut gone) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        for forward in [true, false] {
            *away.lock().expect("away lock") = Duration::ZERO;
            let stop = Arc::new(AtomicBool::new(false));
            let prober = probe(port, stop.clone());
            let begun = Instant::now();
            if forward {
                let channel = verdant_common::uds::connect(&root.join("run/ota-agent.sock"))
                    .await
                    .expect("ota-agent");
                UpdatesClient::new(channel)
                    .apply_update(ota::CheckUpdateRequest {
                        version: NEW.into(),
                        ..ota::CheckUpdateRequest::default()
                    })
                    .await
                    .expect("apply");
                settled_on(&root, NEW).await;
                apply.push(begun.elapsed());
            } else {
                let channel = verdant_common::uds::connect(&root.join("run/init.sock"))
                    .await
                    .expect("init");
                SupervisorClient::new(channel)
                    .rollback_version(sup::RollbackVersionRequest {})
                    .await
                    .expect("rollback");
                settled_on(&root, old).await;
                back.push(begun.elapsed());
            }
            // The devices' reconnections land.
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::Relaxed);
            refused.push(prober.join().expect("probe"));
            gone.push(*away.lock().expect("away lock"));
        }
    }
    println!("## version switches with {device_count} devices connected\n");
    println!("| figure | median | min | max | n |\n|---|---|---|---|---|");
    crate::deploy::row(
        "ApplyUpdate → settled on the new version, every service running",
        &mut apply,
    );
    crate::deploy::row(
        "RollbackVersion → settled on the previous version",
        &mut back,
    );
    crate::deploy::row(
        "device listener refusing connections (longest run)",
        &mut refused,
    );
    crate::deploy::row("longest a connected device was away", &mut gone);
    spawn::stop(&mut core);
}

/// Waits for the first start's services.
async fn settled_or_started(root: &Path) {
    let begun = Instant::now();
    while !all_running(root).await {
        assert!(begun.elapsed() < LIMIT, "the core never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
