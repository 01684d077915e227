//! Version switches of a running core with devices connected: the time
//! from `ApplyUpdate` (and from `RollbackVersion`) to the core settled on
//! the other version with every service running, how long a device
//! connecting meanwhile waited for its CONNACK (a new one every 2 ms) and
//! whether any was refused, and how long the connected devices were away.

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

/// What the probe saw during one switch.
#[derive(Default)]
struct Probed {
    /// Connections refused.
    refused: u32,
    /// The longest a new device waited from its connect to its CONNACK.
    longest: Duration,
}

/// A new device every 2 ms until stopped: a TCP connection and an MQTT
/// CONNECT, timed to its CONNACK.
fn probe(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Probed> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut seen = Probed::default();
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let begun = Instant::now();
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => seen.refused += 1,
                Err(e) => panic!("probe: {e}"),
                Ok(mut socket) => {
                    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
                    let id = format!("probe-{n}");
                    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s.
                    let mut packet = vec![0x10, u8::try_from(12 + id.len()).expect("short")];
                    packet.extend_from_slice(b"\x00\x04MQTT\x04\x02\x00\x3c");
                    packet.extend_from_slice(&[0, u8::try_from(id.len()).expect("short")]);
                    packet.extend_from_slice(id.as_bytes());
                    let mut ack = [0u8; 4];
                    if socket.write_all(&packet).is_ok() && socket.read_exact(&mut ack).is_ok() {
                        seen.longest = seen.longest.max(begun.elapsed());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
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

    let (mut apply, mut back, mut waited, mut gone) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut refused = 0;
    for _ in 0..runs {
        for forward in [true, false] {
            *away.lock().expect("away lock") = Duration::ZERO;
            let stop = Arc::new(AtomicBool::new(false));
            let prober = probe(port, stop.clone());
            let begun = Instant::now();
            switch(&root, if forward { NEW } else { old }).await;
            if forward {
                apply.push(begun.elapsed());
            } else {
                back.push(begun.elapsed());
            }
            // The devices' reconnections land.
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::Relaxed);
            let saw = prober.join().expect("probe");
            refused += saw.refused;
            waited.push(saw.longest);
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
        "longest a new device waited for its CONNACK (connect every 2 ms)",
        &mut waited,
    );
    crate::deploy::row("longest a connected device was away", &mut gone);
    println!("\nconnections refused during the switches: {refused}");
    spawn::stop(&mut core);
}

/// Applies the update to [`NEW`] (`to` is it) or rolls back to `to`;
/// returns once the core settled on `to`.
async fn switch(root: &Path, to: &str) {
    if to == NEW {
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
    } else {
        let channel = verdant_common::uds::connect(&root.join("run/init.sock"))
            .await
            .expect("init");
        SupervisorClient::new(channel)
            .rollback_version(sup::RollbackVersionRequest {})
            .await
            .expect("rollback");
    }
    settled_on(root, to).await;
}

/// Waits for the first start's services.
async fn settled_or_started(root: &Path) {
    let begun = Instant::now();
    while !all_running(root).await {
        assert!(begun.elapsed() < LIMIT, "the core never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
