//! Software updates, checked by a running core: a repository made and
//! signed by `scripts/update-repo.py` (python-tuf) is verified against the
//! root the operator installed, through `verdantctl update check`; a
//! release not newer than the running one, an expired timestamp and a
//! missing trust anchor are each refused with their reason.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{Packet, QoS};
use serde_json::Value;
use verdant_integration_tests::cloud::Cloud;
use verdant_integration_tests::{Core, Options, PATIENCE, mqtt};

use verdant_integration_tests::{publish, release_repo, small_verdant, update_repo as script};

/// A repository with releases `versions` (each a small file standing in
/// for the executable), its keys beside it.
fn repository(dir: &Path, versions: &[&str]) -> (String, String) {
    let (repo, keys) = release_repo(dir);
    for version in versions {
        let exe = dir.join("exe");
        std::fs::write(&exe, format!("verdant {version}")).unwrap();
        publish(&repo, &keys, &exe, version, &[]);
    }
    (repo, keys)
}

fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_core_checks_a_signed_repository_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, keys) = repository(dir.path(), &["0.0.5", "99.1.0"]);
    let dropin = format!("[ota-agent]\nupdate_repository = \"{repo}\"\n");
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        ..Options::default()
    });
    core.wait_all_running().await;

    // No trusted root yet: nothing is believed.
    let out = core.ctl(&["update", "check"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said(&out).contains("update-root.json is missing"),
        "{}",
        said(&out)
    );

    // The operator installs the repository's first root.
    let anchor: PathBuf = core.root().join("config/update-root.json");
    std::fs::copy(Path::new(&repo).join("metadata/1.root.json"), &anchor).unwrap();
    let out = core.ctl(&["-o", "json", "update", "check"]);
    assert!(out.status.success(), "{}", said(&out));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["version"], "99.1.0", "{found}");
    assert_eq!(found["running"], env!("CARGO_PKG_VERSION"), "{found}");
    assert_eq!(found["size"], "verdant 99.1.0".len(), "{found}");

    // Older than the running version: refused, unless forced.
    let out = core.ctl(&["update", "check", "0.0.5"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said(&out).contains("is not newer than the running"),
        "{}",
        said(&out)
    );
    let out = core.ctl(&["update", "check", "0.0.5", "--force"]);
    assert!(out.status.success(), "{}", said(&out));

    // A timestamp past its expiry (a repository frozen in time): refused.
    script(&[
        "timestamp",
        &repo,
        "--keys",
        &keys,
        "--expires",
        "2020-01-01T00:00:00Z",
    ]);
    let out = core.ctl(&["update", "check"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said(&out).contains("timestamp metadata expired at 2020-01-01T00:00:00Z"),
        "{}",
        said(&out)
    );

    // A mirror that serves an older timestamp than the core saw: a rollback.
    let newer = Path::new(&repo).join("metadata/timestamp.json");
    let old = std::fs::read(&newer).unwrap();
    script(&["timestamp", &repo, "--keys", &keys]);
    assert!(core.ctl(&["update", "check"]).status.success());
    std::fs::write(&newer, old).unwrap();
    let out = core.ctl(&["update", "check"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(said(&out).contains("(a rollback)"), "{}", said(&out));
}

#[test]
fn a_release_stamped_from_one_build_says_its_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, keys) = release_repo(dir.path());
    let verdant = verdant_integration_tests::bin("verdant");
    publish(&repo, &keys, &verdant, "42.0.1", &["--stamp"]);
    let exe = format!("verdant-42.0.1-{}", std::env::consts::ARCH);
    let published = std::fs::read_dir(dir.path().join("repo/targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(&format!(".{exe}")))
        .unwrap();
    std::fs::set_permissions(
        &published,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for args in [&["--version"][..], &["init", "--version"]] {
        let out = Command::new(&published).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim_end().ends_with(" 42.0.1"), "{args:?}: {text}");
    }
    // The build itself is untouched.
    let out = Command::new(&verdant).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("verdant {}", env!("CARGO_PKG_VERSION"))
    );
}

fn versions(core: &Core) -> Value {
    let out = core.ctl(&["-o", "json", "update", "status"]);
    assert!(out.status.success(), "{}", said(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes an update hook (a shell script) into the core's `config/`.
fn hook(core: &Core, name: &str, body: &str) {
    let path = core.root().join("config").join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A core trusting a repository (under `dir`) with release 99.0.1 (this
/// build, stamped) and 99.0.2 (a script that does not run); the
/// repository's path.
async fn core_with_releases(dir: &Path, extra: &str) -> (Core, String) {
    let (repo, keys) = release_repo(dir);
    let small = small_verdant(dir);
    publish(&repo, &keys, &small, "99.0.1", &["--stamp"]);
    let broken = dir.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    publish(&repo, &keys, &broken, "99.0.2", &[]);
    let dropin = format!("[ota-agent]\nupdate_repository = \"{repo}\"\n{extra}");
    (trusting(&repo, &dropin).await, repo)
}

/// A core started with `dropin`, trusting the root of the repository in
/// the directory `repo`.
async fn trusting(repo: &str, dropin: &str) -> Core {
    let core = Core::start_with(&Options {
        dropin: Some(dropin),
        ..Options::default()
    });
    core.wait_all_running().await;
    std::fs::copy(
        Path::new(repo).join("metadata/1.root.json"),
        core.root().join("config/update-root.json"),
    )
    .unwrap();
    core
}

/// A pre-update hook that fails refuses an update; then both hooks only
/// record their runs (into the file returned).
fn hooks_refuse_then_record(core: &Core, running: &str) -> PathBuf {
    // Greengrass's hooks: a pre-update hook that fails refuses the update.
    hook(
        core,
        "ota_pre_update.sh",
        "echo 'not during a shift'; exit 3",
    );
    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("pre-update hook refused it")
            && said(&out).contains("not during a shift"),
        "{}",
        said(&out)
    );
    assert_eq!(versions(core)["running"], running);
    let seen = core.root().join("hooks.txt");
    let record = format!(
        "echo \"$0 $VERDANT_UPDATE_FROM $VERDANT_UPDATE_TO\" >> {}",
        seen.display()
    );
    hook(core, "ota_pre_update.sh", &record);
    hook(core, "ota_post_update.sh", &record);
    seen
}

#[tokio::test]
async fn an_update_switches_the_core_in_place_and_a_rollback_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (core, repo) = core_with_releases(dir.path(), "").await;
    let pid = core.init.id();
    let running = env!("CARGO_PKG_VERSION");

    // The broken one is refused before anything changes.
    let out = core.ctl(&["update", "apply", "99.0.2"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("does not run as version 99.0.2"),
        "{}",
        said(&out)
    );
    assert!(
        versions(&core)["current"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    let seen = hooks_refuse_then_record(&core, running);

    // Applied: init runs the new executable under the same PID.
    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(out.status.success(), "{}", said(&out));
    let v = versions(&core);
    assert_eq!(v["running"], "99.0.1", "{v}");
    assert_eq!(v["current"], "99.0.1", "{v}");
    assert_eq!(v["update"]["phase"], "succeeded", "{v}");
    assert_eq!(
        v["installed"],
        serde_json::json!([running, "99.0.1"]),
        "{v}"
    );
    let out = core.ctl(&["update", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{running}\n99.0.1  (running, current)\n"),
        "{}",
        said(&out)
    );
    let hooks = std::fs::read_to_string(&seen).unwrap();
    assert!(
        hooks.contains(&format!("ota_pre_update.sh {running} 99.0.1"))
            && hooks.contains(&format!("ota_post_update.sh {running} 99.0.1")),
        "{hooks}"
    );
    std::fs::remove_file(core.root().join("config/ota_pre_update.sh")).unwrap();
    std::fs::remove_file(core.root().join("config/ota_post_update.sh")).unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        core.root()
            .join("versions/99.0.1/verdant")
            .canonicalize()
            .unwrap()
    );
    core.wait_all_running().await;

    // And back.
    let out = core.ctl(&["update", "rollback"]);
    assert!(out.status.success(), "{}", said(&out));
    let v = versions(&core);
    assert_eq!(v["running"], running, "{v}");
    assert_eq!(v["update"]["phase"], "rolled back", "{v}");
    assert_eq!(core.init.id(), pid);
    core.wait_all_running().await;
    // The daemons of the version that took init's sockets over ended
    // cleanly (none closed a socket it did not own).
    for log in std::fs::read_dir(core.root().join("logs")).unwrap() {
        let text = std::fs::read_to_string(log.unwrap().path()).unwrap_or_default();
        assert!(
            !text.contains("SIGABRT") && !text.contains("IO Safety violation"),
            "{text}"
        );
    }
    // Not twice: that would go forward again, past the hooks.
    let out = core.ctl(&["update", "rollback"]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("rolled back already"), "{}", said(&out));

    // A post-update hook that fails on the new version: rolled back.
    hook(
        &core,
        "ota_post_update.sh",
        "echo 'line check failed'; exit 1",
    );
    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(!out.status.success(), "{}", said(&out));
    let v = versions(&core);
    assert_eq!(v["running"], running, "{v}");
    assert_eq!(v["update"]["phase"], "rolled back", "{v}");
    let reason = v["update"]["reason"].as_str().unwrap();
    assert!(reason.contains("line check failed"), "{v}");
    assert_eq!(core.init.id(), pid);
    std::fs::remove_file(core.root().join("config/ota_post_update.sh")).unwrap();
    core.wait_all_running().await;

    // A site with no network: the repository packed into one file.
    let packed = dir.path().join("release.tar");
    script(&["pack", &repo, packed.to_str().unwrap()]);
    let out = core.ctl(&[
        "update",
        "apply",
        "99.0.1",
        "--repo",
        packed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(versions(&core)["running"], "99.0.1");
    assert_eq!(core.init.id(), pid);
}

#[tokio::test]
async fn qos_1_messages_acknowledged_before_a_switch_all_arrive_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = "[broker]\nmode = \"local\"\n[broker.tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n";
    let (core, _repo) = core_with_releases(dir.path(), tcp).await;
    let port = core.broker_port("tcp").await;
    // A device's persistent session subscribes, then is away.
    let (keeper, mut kev) = mqtt::connect(port, "keeper", true).await;
    mqtt::subscribed(&keeper, &mut kev, "line/#").await;
    keeper.disconnect().await.unwrap();
    let _ = kev.poll().await;
    drop(kev);
    // 300 QoS 1 messages for it, each acknowledged by the broker.
    let (publisher, mut pev) = mqtt::connect(port, "press", false).await;
    for i in 0..300u32 {
        publisher
            .publish(
                "line/count",
                QoS::AtLeastOnce,
                false,
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    let mut acks = 0;
    mqtt::until(&mut pev, |p| {
        acks += usize::from(matches!(p, Packet::PubAck(_)));
        acks == 300
    })
    .await;
    drop(pev);

    // Devices connect again and again through the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(port, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(versions(&core)["running"], "99.0.1");
    core.wait_all_running().await;
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let seen = prober.join().unwrap();
    // None refused: init held the listening socket while no broker
    // accepted, and the new broker answered those who waited.
    assert_eq!(seen.refused, 0, "{seen:?}");
    assert!(seen.answered > 10, "{seen:?}");
    assert_eq!(core.broker_port("tcp").await, port, "the same socket");

    // The session is there on the new version, with every message, in order.
    let (_keeper, mut kev, present) = mqtt::connect_session(port, "keeper", true).await;
    assert!(present, "the session survived the switch");
    let mut got = Vec::new();
    mqtt::until(&mut kev, |p| {
        if let Packet::Publish(m) = p {
            got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
        }
        got.len() == 300
    })
    .await;
    assert_eq!(got, (0..300).collect::<Vec<_>>());
}

/// Waits until the core runs `version` and its last update ended.
async fn settled_on(core: &Core, version: &str) -> Value {
    tokio::time::timeout(verdant_integration_tests::PATIENCE, async {
        loop {
            let out = core.ctl(&["-o", "json", "update", "status"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                if v["running"] == version && v["update"]["phase"] != "switching" {
                    return v;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the core settles")
}

#[tokio::test]
async fn a_power_cut_during_a_switch_or_after_it_leaves_the_core_on_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _repo) = core_with_releases(dir.path(), "").await;
    // Cut as soon as init has taken the switch (`current` names the new
    // version; the old core is stopping).
    let out = core.ctl(&["update", "apply", "99.0.1", "--no-wait"]);
    assert!(out.status.success(), "{}", said(&out));
    core.power_cut().await;
    // The new init, from the old executable, goes on with the switch.
    let v = settled_on(&core, "99.0.1").await;
    assert_eq!(v["update"]["phase"], "succeeded", "{v}");
    core.wait_all_running().await;
    // Cut again once settled: a start from the old executable comes back
    // on the version `current` names.
    core.power_cut().await;
    let v = settled_on(&core, "99.0.1").await;
    assert_eq!(v["update"]["phase"], "succeeded", "{v}");
    core.wait_all_running().await;
}

/// What [`probe`] saw.
#[derive(Debug, Default)]
struct Probes {
    /// TCP connections refused.
    refused: u32,
    /// MQTT CONNECTs answered with a CONNACK.
    answered: u32,
    /// Connections closed before their CONNACK (by a broker stopping).
    closed: u32,
}

/// Opens a connection to `port` and sends an MQTT CONNECT, again and again
/// until `stop`, waiting for each CONNACK as long as a device would.
fn probe(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Probes> {
    std::thread::spawn(move || {
        let mut seen = Probes::default();
        let mut n = 0u32;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => seen.refused += 1,
                Err(e) => panic!("connect: {e}"),
                Ok(mut socket) => {
                    socket.set_read_timeout(Some(PATIENCE)).unwrap();
                    let id = format!("probe-{n}");
                    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s.
                    let mut packet = vec![0x10, u8::try_from(12 + id.len()).unwrap()];
                    packet.extend_from_slice(b"\x00\x04MQTT\x04\x02\x00\x3c");
                    packet.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
                    packet.extend_from_slice(id.as_bytes());
                    let mut ack = [0u8; 4];
                    if socket.write_all(&packet).is_ok()
                        && socket.read_exact(&mut ack).is_ok()
                        && ack[0] == 0x20
                        && ack[3] == 0
                    {
                        seen.answered += 1;
                    } else {
                        seen.closed += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

#[tokio::test]
async fn a_new_version_whose_cloud_connection_does_not_come_back_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(&dir.path().join("cloud"));
    let extra = format!("{}[init]\nupdate_cloud_timeout_secs = 3\n", cloud.dropin());
    let (core, _repo) = core_with_releases(dir.path(), &extra).await;
    cloud.start(Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
    let running = env!("CARGO_PKG_VERSION");

    // The cloud goes away as the core switches: the new version cannot
    // bring the connection back, and is rolled back.
    let out = core.ctl(&["update", "apply", "99.0.1", "--no-wait"]);
    assert!(out.status.success(), "{}", said(&out));
    cloud.stop();
    let v = settled_on(&core, running).await;
    assert_eq!(v["update"]["phase"], "rolled back", "{v}");
    let reason = v["update"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("on 99.0.1: the cloud connection did not come back within 3 s"),
        "{v}"
    );
    core.wait_all_running().await;
    // The old version connects once the cloud is back.
    cloud.start(Path::new(&core.cert("group-ca.pem")));
    core.wait_cloud("connected", |c| c.state == "connected")
        .await;
}

/// A core trusting a repository served over HTTPS (whose first answer
/// of the executable stops half way), with release 99.0.1 (this build,
/// stamped); the server and the release's executable.
async fn core_with_https_release(
    dir: &Path,
) -> (Core, verdant_integration_tests::https::FileServer, PathBuf) {
    let (repo, keys) = release_repo(dir);
    let small = small_verdant(dir);
    publish(&repo, &keys, &small, "99.0.1", &["--stamp"]);
    let server = verdant_integration_tests::https::serve_dir(dir, Path::new(&repo), 1).await;
    let dropin = format!(
        "[ota-agent]\nupdate_repository = \"{}\"\nca_file = \"{}\"\n",
        server.url,
        server.ca.display()
    );
    (trusting(&repo, &dropin).await, server, small)
}

// Multi-threaded: the HTTPS server answers while `verdantctl` blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_fetched_over_https_resumed_after_a_cut_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    // The executable's first answer stops half way.
    let (core, server, small) = core_with_https_release(dir.path()).await;

    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(versions(&core)["running"], "99.0.1");
    // Its progress, a line per phase (a bar on a terminal).
    let shown = String::from_utf8_lossy(&out.stdout);
    let size = std::fs::metadata(&small).unwrap().len();
    assert!(
        shown.lines().any(|l| l.starts_with("DOWNLOADING  99.0.1  ")
            && l.ends_with(&format!("{:.1} MiB", size as f64 / 1_048_576.0))),
        "{shown}"
    );
    let paths = server.paths.lock().unwrap().clone();
    let ranges = server.ranges.lock().unwrap().clone();
    assert!(
        paths.iter().any(|p| p == "/metadata/timestamp.json"),
        "{paths:?}"
    );
    // The executable, asked for twice: the second time for the rest.
    let target: Vec<usize> = (0..paths.len())
        .filter(|&i| paths[i].contains(".verdant-99.0.1") && !paths[i].contains(".json"))
        .collect();
    assert_eq!(target.len(), 2, "{paths:?}");
    let again = ranges[*target.last().unwrap()].as_deref();
    assert!(
        again.is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "{paths:?} {ranges:?}"
    );
    core.wait_all_running().await;
}

/// Where the ota-agent's apply is, as `GetApplyProgress` says.
async fn apply_progress(core: &Core) -> Option<verdant_proto::ota::v1::ApplyProgress> {
    use verdant_proto::ota::v1 as ota;
    let channel = verdant_common::uds::connect(&core.socket("ota-agent"))
        .await
        .ok()?;
    ota::updates_client::UpdatesClient::new(channel)
        .get_apply_progress(ota::GetApplyProgressRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

// Multi-threaded: the HTTPS server answers while `verdantctl` blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_ota_agent_mid_download_leaves_the_core_as_it_was_and_the_next_apply_resumes()
 {
    let dir = tempfile::tempdir().unwrap();
    // The executable's first answer stops half way; the agent waits half
    // a second before it goes on, and is killed meanwhile.
    let (core, server, _) = core_with_https_release(dir.path()).await;
    let core = Arc::new(core);
    let running = env!("CARGO_PKG_VERSION");

    let c = core.clone();
    let applying = tokio::task::spawn_blocking(move || c.ctl(&["update", "apply", "99.0.1"]));
    tokio::time::timeout(PATIENCE, async {
        while !apply_progress(&core)
            .await
            .is_some_and(|p| p.phase == "DOWNLOADING" && p.bytes_done > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the download begins");
    core.kill_9("ota-agent").await;
    let out = applying.await.unwrap();
    assert!(!out.status.success(), "{}", said(&out));
    // Nothing changed: the old version runs, no update is under way.
    let v = versions(&core);
    assert_eq!(v["running"], running, "{v}");
    assert!(v["update"].is_null(), "{v}");
    core.wait_all_running().await;

    // The next apply goes on from the bytes the killed agent kept.
    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(versions(&core)["running"], "99.0.1");
    let paths = server.paths.lock().unwrap().clone();
    let ranges = server.ranges.lock().unwrap().clone();
    let target: Vec<usize> = (0..paths.len())
        .filter(|&i| paths[i].contains(".verdant-99.0.1") && !paths[i].contains(".json"))
        .collect();
    assert_eq!(target.len(), 2, "{paths:?}");
    assert!(
        ranges[target[1]]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "{paths:?} {ranges:?}"
    );
    core.wait_all_running().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_while_init_checks_a_release_leaves_the_core_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _repo) = core_with_releases(dir.path(), "").await;
    let running = env!("CARGO_PKG_VERSION");
    // The pre-update hook runs once init has checked and copied the
    // release aside, before anything is installed: the cut comes then.
    let marker = core.root().join("checking");
    hook(
        &core,
        "ota_pre_update.sh",
        &format!("touch {}; exec sleep 5", marker.display()),
    );
    let mut applying = core
        .ctl_command(&["update", "apply", "99.0.1", "--no-wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while !marker.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the hook runs");
    core.power_cut().await;
    assert!(!applying.wait().unwrap().success());
    let v = settled_on(&core, running).await;
    assert!(v["update"].is_null(), "{v}");
    assert!(v["current"].as_str().unwrap_or_default().is_empty(), "{v}");
    // What was copied aside is gone.
    let staged: Vec<_> = std::fs::read_dir(core.root().join("versions"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == ".99.0.1.new")
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    core.wait_all_running().await;
    // And the release applies once the hook lets it.
    std::fs::remove_file(core.root().join("config/ota_pre_update.sh")).unwrap();
    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(versions(&core)["running"], "99.0.1");
}

#[tokio::test]
async fn a_release_that_exits_at_start_is_rolled_back_as_the_service_manager_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, repo) = core_with_releases(dir.path(), "").await;
    let running = env!("CARGO_PKG_VERSION");
    // Says its version, as a release must, and exits at once otherwise.
    let exits = dir.path().join("exits");
    std::fs::write(
        &exits,
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'verdant 99.0.3' && exit 0\n\
         echo 'cannot start' >&2\nexit 1\n",
    )
    .unwrap();
    let keys = dir.path().join("keys");
    publish(&repo, keys.to_str().unwrap(), &exits, "99.0.3", &[]);
    let out = core.ctl(&["update", "apply", "99.0.3", "--no-wait"]);
    assert!(out.status.success(), "{}", said(&out));

    // Each time the core ends, start it again from the package's
    // executable, as systemd's Restart= would: it goes onto
    // versions/current, until a start rolls the release back.
    let mut starts = 0;
    let v = tokio::time::timeout(PATIENCE, async {
        loop {
            if core.init.try_wait().unwrap().is_some() {
                starts += 1;
                assert!(starts <= 5, "still not rolled back after {starts} starts");
                core.respawn();
            }
            let out = core.ctl(&["-o", "json", "update", "status"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                if v["running"] == running && v["update"]["phase"] == "rolled back" {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("rolled back");
    assert!(starts >= 3, "{starts} starts");
    let reason = v["update"]["reason"].as_str().unwrap();
    assert!(reason.contains("99.0.3"), "{v}");
    core.wait_all_running().await;
}
