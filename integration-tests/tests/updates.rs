//! Software updates, checked by a running core: a repository made and
//! signed by `scripts/update-repo.py` (python-tuf) is verified against the
//! root the operator installed, through `verdantctl update check`; a
//! release not newer than the running one, an expired timestamp and a
//! missing trust anchor are each refused with their reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use rumqttc::{Packet, QoS};
use serde_json::Value;
use verdant_integration_tests::{Core, Options, mqtt};

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
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        ..Options::default()
    });
    core.wait_all_running().await;
    std::fs::copy(
        Path::new(&repo).join("metadata/1.root.json"),
        core.root().join("config/update-root.json"),
    )
    .unwrap();
    (core, repo)
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

    let out = core.ctl(&["update", "apply", "99.0.1"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(versions(&core)["running"], "99.0.1");
    core.wait_all_running().await;

    // The session is there on the new version, with every message, in order.
    let port = core.broker_port("tcp").await;
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
