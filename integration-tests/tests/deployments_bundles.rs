//! Deployments that bring their functions' code: a bundle directory, a
//! tarball made with tar, a zip named by URL with its SHA-256; a changed
//! artifact restarts its function, a bad one is rolled back with the
//! previous code put back, and a wrong hash changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use verdant_integration_tests::deployments::{current, deploy_request, watch_to_end};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::{Core, Options, PATIENCE};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::Phase;

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:idle:1";

/// A group with one pinned `NoContainer` function, `idle` version 1.
fn group() -> Value {
    json!({
        "Id": "bundle-test",
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2)] },
        "FunctionDefinitionVersion": {
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 65534, "Gid": 65534 } } },
            "Functions": [
                { "Id": "idle", "FunctionArn": ARN,
                  "FunctionConfiguration": { "Executable": "idle.sh", "Pinned": true, "Timeout": 3 } }
            ]
        },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "s", "Source": arn("a"), "Subject": "a/#", "Target": "cloud" },
        ]},
    })
}

/// A bundle directory at `dir`: the group and `idle.sh` running `script`.
fn bundle(dir: &Path, group: &Value, script: &str) {
    let code = dir.join("functions/idle/1");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(dir.join("group.json"), group.to_string()).unwrap();
    let file = code.join("idle.sh");
    std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn start() -> Core {
    start_with("").await
}

async fn start_with(extra: &str) -> Core {
    let core = Core::start_with(&Options {
        dropin: Some(&format!(
            "{}[ota-agent]\nhealth_check_secs = 5\n{extra}",
            verdant_integration_tests::functions::INSECURE
        )),
        group: Some(
            &json!({
                "Id": "bundle-test",
                "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
            })
            .to_string(),
        ),
        ..Options::default()
    });
    core.wait_all_running().await;
    // Functions' users must reach their code through the root.
    let mut p = core.root();
    while p != Path::new("/") {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o005)).unwrap();
        p = p.parent().unwrap().to_path_buf();
    }
    core
}

/// The pids of the function's instances, once it runs.
async fn pids(core: &Core) -> Vec<u32> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let listed = verdant_integration_tests::functions::functions(core).await;
            if let Some(f) = listed.functions.iter().find(|f| f.arn == ARN)
                && !f.pids.is_empty()
            {
                return f.pids.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the function runs")
}

async fn deployed(core: &Core, source: pb::deploy_request::Source) -> pb::Deployment {
    let queued = deploy_request(core, source).await;
    let seen = watch_to_end(core, &queued.deployment_id).await;
    seen.last().unwrap().clone()
}

fn code_of(core: &Core) -> String {
    std::fs::read_to_string(core.root().join("functions/idle/1/idle.sh")).unwrap()
}

#[tokio::test]
async fn a_bundle_brings_its_code_a_changed_one_restarts_it_and_a_bad_one_is_rolled_back() {
    let core = start().await;
    let dir = core.dir.path().join("bundles");
    bundle(&dir.join("one"), &group(), "exec sleep 3600");
    let first = deployed(
        &core,
        pb::deploy_request::Source::Bundle(dir.join("one").display().to_string()),
    )
    .await;
    assert_eq!(first.phase(), Phase::Succeeded, "{first:?}");
    let link = std::fs::read_link(core.root().join("functions/idle/1")).unwrap();
    assert!(
        link.to_string_lossy().contains(".store/artifacts/"),
        "{link:?}"
    );
    let before = pids(&core).await;

    // The same version with other code: the function restarts on it.
    bundle(&dir.join("two"), &group(), "# two\nexec sleep 3600");
    let second = deployed(
        &core,
        pb::deploy_request::Source::Bundle(dir.join("two").display().to_string()),
    )
    .await;
    assert_eq!(second.phase(), Phase::Succeeded, "{second:?}");
    assert!(code_of(&core).contains("# two"));
    let after = pids(&core).await;
    assert_ne!(before, after, "restarted on its new code");

    // Deployments that bring no code keep the code running, however many
    // of them push the bundle's deployment out of those kept.
    for _ in 0..5 {
        let plain = deployed(
            &core,
            pb::deploy_request::Source::GroupJson(group().to_string().into_bytes()),
        )
        .await;
        assert_eq!(plain.phase(), Phase::Succeeded, "{plain:?}");
    }
    assert!(code_of(&core).contains("# two"));
    assert!(
        !core
            .root()
            .join(format!("deployments/{}", first.deployment_id))
            .exists(),
        "pruned"
    );
    let kept = current(&core);

    // Code that cannot stay up: rolled back, the previous code in place.
    bundle(&dir.join("bad"), &group(), "exit 3");
    let bad = deployed(
        &core,
        pb::deploy_request::Source::Bundle(dir.join("bad").display().to_string()),
    )
    .await;
    assert_eq!(bad.phase(), Phase::RolledBack, "{bad:?}");
    assert_eq!(current(&core), kept);
    assert!(code_of(&core).contains("# two"), "{}", code_of(&core));
    pids(&core).await;

    // A tarball made with tar, through verdantctl.
    bundle(&dir.join("three"), &group(), "# three\nexec sleep 3600");
    let tarball = dir.join("three.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.join("three"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let out = core.ctl(&["deploy", tarball.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(code_of(&core).contains("# three"));
}

/// Writes a zip of `idle.sh` (marked `# zipped`) at `path`; its SHA-256.
fn zipped(path: &Path) -> String {
    use sha2::Digest as _;
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        w.start_file("idle.sh", options).unwrap();
        std::io::Write::write_all(&mut w, b"#!/bin/sh\n# zipped\nexec sleep 3600\n").unwrap();
        w.finish().unwrap();
    }
    format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn a_download_cut_half_way_is_resumed_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("idle.zip");
    let sha = zipped(&body_path);
    let server = verdant_integration_tests::https::serve(
        dir.path(),
        "code/idle.zip",
        std::fs::read(&body_path).unwrap(),
        1,
        true,
    )
    .await;
    let core = start_with(&format!("ca_file = \"{}\"\n", server.ca.display())).await;
    let mut g = group();
    g["Artifacts"] = json!([{ "FunctionArn": ARN, "Url": server.url, "Sha256": sha }]);
    let queued = deploy_request(
        &core,
        pb::deploy_request::Source::GroupJson(g.to_string().into_bytes()),
    )
    .await;
    let seen = watch_to_end(&core, &queued.deployment_id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase(), Phase::Succeeded, "{last:?}");
    assert!(code_of(&core).contains("# zipped"));
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    assert!(
        ranges[1]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "the second request asks for the rest: {ranges:?}"
    );
    assert!(
        last.bytes_total > 0 && last.bytes_done == last.bytes_total,
        "{last:?}"
    );
}

#[tokio::test]
async fn an_artifact_by_url_is_fetched_checked_and_not_fetched_again() {
    let core = start().await;
    let dir = core.dir.path().join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let zip_path = dir.join("idle.zip");
    let sha = zipped(&zip_path);
    let url = format!("file://{}", zip_path.display());

    // A wrong hash fails before anything changes.
    let mut wrong = group();
    wrong["Artifacts"] = json!([{ "FunctionArn": ARN, "Url": url, "Sha256": "0".repeat(64) }]);
    let d = deployed(
        &core,
        pb::deploy_request::Source::GroupJson(wrong.to_string().into_bytes()),
    )
    .await;
    assert_eq!(d.phase(), Phase::Failed, "{d:?}");
    assert!(d.reason.contains("downloading"), "{}", d.reason);
    assert_eq!(current(&core), "test");
    assert!(!core.root().join("functions/idle/1").exists());

    let mut right = group();
    right["Artifacts"] = json!([{ "FunctionArn": ARN, "Url": url, "Sha256": sha }]);
    let d = deployed(
        &core,
        pb::deploy_request::Source::GroupJson(right.to_string().into_bytes()),
    )
    .await;
    assert_eq!(d.phase(), Phase::Succeeded, "{d:?}");
    assert!(code_of(&core).contains("# zipped"));
    pids(&core).await;

    // A redeployment of the same code fetches nothing: the file is gone.
    std::fs::remove_file(&zip_path).unwrap();
    let again = deployed(
        &core,
        pb::deploy_request::Source::GroupJson(right.to_string().into_bytes()),
    )
    .await;
    assert_eq!(again.phase(), Phase::Succeeded, "{again:?}");
}
