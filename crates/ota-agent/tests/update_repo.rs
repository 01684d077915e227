//! A repository made and signed by `scripts/update-repo.py` (python-tuf,
//! The Update Framework's reference implementation) is trusted by the
//! core's client, through a root rotation; a timestamp past its expiry and
//! a release signed with a key the root does not name are refused.

use std::path::{Path, PathBuf};

use verdant_ota_agent::fetch::Fetcher;
use verdant_ota_agent::update::{Client, ReleaseError, Repository, TufError, download, find};

use verdant_integration_tests::update_repo as script;

fn client(state: &Path, repo: &Path) -> Client {
    Client::open(
        state,
        &repo.join("metadata/1.root.json"),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
}

#[test]
fn a_python_tuf_repository_is_trusted_through_a_root_rotation_and_its_attacks_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| -> PathBuf { dir.path().join(p) };
    let s = |p: &str| d(p).to_str().unwrap().to_string();
    script(&["keys", &s("keys")]);
    script(&["init", &s("repo"), "--keys", &s("keys")]);
    for version in ["0.2.0", "0.3.0"] {
        std::fs::write(d("exe"), format!("verdant {version}")).unwrap();
        script(&[
            "add",
            &s("repo"),
            "--keys",
            &s("keys"),
            "--executable",
            &s("exe"),
            "--version",
            version,
            "--min-version",
            "0.1.0",
        ]);
    }
    let fetcher = Fetcher::new(None).unwrap();
    let repo = Repository::new(&s("repo"), &fetcher).unwrap();
    let state = d("state");
    let release = find(&client(&state, &d("repo")), &repo, "0.1.0", None, false).unwrap();
    assert_eq!(release.manifest.version, "0.3.0");
    let exe = download(&release, &fetcher, &d("downloads"), &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(exe).unwrap(), b"verdant 0.3.0");

    // A new root key, signed by the old and the new: trusted from now on.
    std::fs::create_dir_all(d("newkeys")).unwrap();
    script(&["keys", &s("newkeys")]);
    script(&[
        "rotate-root",
        &s("repo"),
        "--keys",
        &s("keys"),
        "--new-root-key",
        &s("newkeys/root.pem"),
    ]);
    script(&["timestamp", &s("repo"), "--keys", &s("keys")]);
    find(&client(&state, &d("repo")), &repo, "0.1.0", None, false).unwrap();
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("root.json")).unwrap()).unwrap();
    assert_eq!(kept["signed"]["version"], 2);

    // A timestamp signed past its expiry: refused.
    script(&[
        "timestamp",
        &s("repo"),
        "--keys",
        &s("keys"),
        "--expires",
        "2020-01-01T00:00:00Z",
    ]);
    let e = find(&client(&state, &d("repo")), &repo, "0.1.0", None, false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Expired { role, .. }) if role == "timestamp"),
        "{e}"
    );
    script(&["timestamp", &s("repo"), "--keys", &s("keys")]);

    // A release signed with targets keys the root does not name.
    let other = d("other");
    std::fs::rename(d("newkeys/targets.pem"), d("stolen.pem")).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    for role in ["root", "snapshot", "timestamp"] {
        std::fs::copy(
            d(&format!("keys/{role}.pem")),
            other.join(format!("{role}.pem")),
        )
        .unwrap();
    }
    std::fs::copy(d("stolen.pem"), other.join("targets.pem")).unwrap();
    std::fs::write(d("exe"), "verdant 0.4.0").unwrap();
    script(&[
        "add",
        &s("repo"),
        "--keys",
        other.to_str().unwrap(),
        "--executable",
        &s("exe"),
        "--version",
        "0.4.0",
    ]);
    let e = find(&client(&state, &d("repo")), &repo, "0.1.0", None, false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Unsigned { role, .. }) if role == "targets"),
        "{e}"
    );
}
