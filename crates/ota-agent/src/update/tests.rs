//! Repositories made here (ed25519 keys, canonical JSON signed as TUF
//! signs it) and every way a core must refuse one. Interoperability with
//! python-tuf's repositories is tested with `scripts/update-repo.py` in
//! `crates/ota-agent/tests/update_repo.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::Digest;

use super::*;

struct Key {
    pair: Ed25519KeyPair,
    id: String,
}

impl Key {
    fn new() -> Key {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let id = hex::encode(sha2::Sha256::digest(pair.public_key().as_ref()));
        Key { pair, id }
    }

    fn public(&self) -> Value {
        json!({ "keytype": "ed25519", "scheme": "ed25519",
                "keyval": { "public": hex::encode(self.pair.public_key().as_ref()) } })
    }
}

fn sign(signed: &Value, keys: &[&Key]) -> Vec<u8> {
    let message = cjson::encode(signed).unwrap();
    let signatures: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "keyid": k.id, "sig": hex::encode(k.pair.sign(&message).as_ref()) }))
        .collect();
    serde_json::to_vec_pretty(&json!({ "signatures": signatures, "signed": signed })).unwrap()
}

const LATER: &str = "2099-01-01T00:00:00Z";
const PAST: &str = "2001-01-01T00:00:00Z";

/// A repository in a directory, and its keys.
struct Repo {
    dir: tempfile::TempDir,
    root: Key,
    targets: Key,
    snapshot: Key,
    timestamp: Key,
    root_version: u64,
    targets_version: u64,
    snapshot_version: u64,
    timestamp_version: u64,
    files: BTreeMap<String, Value>,
}

impl Repo {
    fn new() -> Repo {
        let mut r = Repo {
            dir: tempfile::tempdir().unwrap(),
            root: Key::new(),
            targets: Key::new(),
            snapshot: Key::new(),
            timestamp: Key::new(),
            root_version: 0,
            targets_version: 0,
            snapshot_version: 0,
            timestamp_version: 0,
            files: BTreeMap::new(),
        };
        std::fs::create_dir_all(r.dir.path().join("metadata")).unwrap();
        std::fs::create_dir_all(r.dir.path().join("targets")).unwrap();
        let root_key = Key::new();
        r.write_root(root_key, &[], LATER);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path().join("metadata").join(name), bytes).unwrap();
    }

    /// A new root version with `key` as the root key, signed by it and by
    /// `also` (the previous root key, for a rotation).
    fn write_root(&mut self, key: Key, also: &[&Key], expires: &str) {
        self.root = key;
        self.root_version += 1;
        let keys: BTreeMap<String, Value> =
            [&self.root, &self.targets, &self.snapshot, &self.timestamp]
                .iter()
                .map(|k| (k.id.clone(), k.public()))
                .collect();
        let role = |k: &Key| json!({ "keyids": [k.id], "threshold": 1 });
        let signed = json!({ "_type": "root", "spec_version": "1.0.31",
            "version": self.root_version, "expires": expires, "consistent_snapshot": true,
            "keys": keys, "roles": { "root": role(&self.root), "targets": role(&self.targets),
            "snapshot": role(&self.snapshot), "timestamp": role(&self.timestamp) } });
        let mut by: Vec<&Key> = vec![&self.root];
        by.extend_from_slice(also);
        self.write(
            &format!("{}.root.json", self.root_version),
            &sign(&signed, &by),
        );
    }

    fn add_target(&mut self, name: &str, bytes: &[u8]) {
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(self.path().join(format!("targets/{digest}.{name}")), bytes).unwrap();
        self.files.insert(
            name.into(),
            json!({ "length": bytes.len(), "hashes": { "sha256": digest } }),
        );
    }

    fn release(&mut self, version: &str, os: &str, min: &str) {
        let arch = std::env::consts::ARCH;
        let exe = format!("verdant-{version}-{arch}");
        self.add_target(&exe, format!("executable {version}").as_bytes());
        let manifest = json!({ "version": version, "arch": arch, "os": os,
            "min_version": min, "executable": exe });
        self.add_target(&format!("{exe}.json"), manifest.to_string().as_bytes());
    }

    /// Targets, snapshot and timestamp, each one version up.
    fn publish(&mut self, expires: [&str; 3]) {
        self.targets_version += 1;
        let t = json!({ "_type": "targets", "spec_version": "1.0.31",
            "version": self.targets_version, "expires": expires[0], "targets": self.files });
        self.write(
            &format!("{}.targets.json", self.targets_version),
            &sign(&t, &[&self.targets]),
        );
        self.snapshot_version += 1;
        let s = json!({ "_type": "snapshot", "spec_version": "1.0.31",
            "version": self.snapshot_version, "expires": expires[1],
            "meta": { "targets.json": { "version": self.targets_version } } });
        self.write(
            &format!("{}.snapshot.json", self.snapshot_version),
            &sign(&s, &[&self.snapshot]),
        );
        self.stamp(expires[2], &[]);
    }

    fn stamp(&mut self, expires: &str, by: &[&Key]) {
        self.timestamp_version += 1;
        let ts = json!({ "_type": "timestamp", "spec_version": "1.0.31",
            "version": self.timestamp_version, "expires": expires,
            "meta": { "snapshot.json": { "version": self.snapshot_version } } });
        let by = if by.is_empty() {
            vec![&self.timestamp]
        } else {
            by.to_vec()
        };
        self.write("timestamp.json", &sign(&ts, &by));
    }

    fn anchor(&self) -> std::path::PathBuf {
        self.path().join("metadata/1.root.json")
    }
}

fn fetcher() -> Fetcher {
    Fetcher::new(None).unwrap()
}

fn find_in(state: &Path, repo: &Repo, running: &str, force: bool) -> Result<Release, ReleaseError> {
    let client = Client::open(state, &repo.anchor(), time::OffsetDateTime::now_utc())?;
    let f = fetcher();
    let remote = Repository::new(repo.path().to_str().unwrap(), &f)?;
    find(&client, &remote, running, None, force)
}

#[test]
fn the_newest_release_is_found_verified_and_downloaded() {
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.release("0.3.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    let release = find_in(state.path(), &repo, "0.1.0", false).unwrap();
    assert_eq!(release.manifest.version, "0.3.0");
    let f = fetcher();
    let downloads = tempfile::tempdir().unwrap();
    let path = download(&release, &f, downloads.path(), &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"executable 0.3.0");
    // A version asked for by name.
    let client = Client::open(
        state.path(),
        &repo.anchor(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let remote = Repository::new(repo.path().to_str().unwrap(), &f).unwrap();
    let older = find(&client, &remote, "0.1.0", Some("0.2.0"), false).unwrap();
    assert_eq!(older.manifest.version, "0.2.0");
    assert!(matches!(
        find(&client, &remote, "0.1.0", Some("0.9.0"), false),
        Err(ReleaseError::NoVersion { .. })
    ));
}

#[test]
fn unsigned_or_wrongly_signed_metadata_is_refused() {
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let stranger = Key::new();
    repo.stamp(LATER, &[&stranger]);
    let state = tempfile::tempdir().unwrap();
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Unsigned { role, .. }) if role == "timestamp"),
        "{e}"
    );
    // Unsigned: no signature at all.
    let ts: Value = serde_json::from_slice(
        &std::fs::read(repo.path().join("metadata/timestamp.json")).unwrap(),
    )
    .unwrap();
    let bare = json!({ "signatures": [], "signed": ts["signed"] });
    repo.write("timestamp.json", bare.to_string().as_bytes());
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(e.to_string().contains("not signed by 1"), "{e}");
    // A byte of the signed content changed after signing.
    repo.stamp(LATER, &[]);
    let mut targets: Value = serde_json::from_slice(
        &std::fs::read(repo.path().join("metadata/1.targets.json")).unwrap(),
    )
    .unwrap();
    let exe = format!("verdant-0.2.0-{}", std::env::consts::ARCH);
    targets["signed"]["targets"][&exe]["length"] = 17.into();
    repo.write("1.targets.json", targets.to_string().as_bytes());
    let fresh = tempfile::tempdir().unwrap();
    let e = find_in(fresh.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Unsigned { role, .. }) if role == "targets"),
        "{e}"
    );
}

#[test]
fn expired_metadata_is_refused_role_by_role() {
    for (i, role) in ["targets", "snapshot", "timestamp"].iter().enumerate() {
        let mut repo = Repo::new();
        repo.release("0.2.0", std::env::consts::OS, "0.1.0");
        let mut expires = [LATER; 3];
        expires[i] = PAST;
        repo.publish(expires);
        let state = tempfile::tempdir().unwrap();
        let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
        assert!(
            matches!(&e, ReleaseError::Tuf(TufError::Expired { role: r, .. }) if r == role),
            "{role}: {e}"
        );
    }
    // An expired root (a repository frozen in time): the next root,
    // rightly signed, has expired.
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let old = std::mem::replace(&mut repo.root, Key::new());
    repo.write_root(Key::new(), &[&old], PAST);
    let state = tempfile::tempdir().unwrap();
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Expired { role, .. }) if role == "root"),
        "{e}"
    );
}

#[test]
fn a_rollback_and_a_mix_of_repository_states_are_refused() {
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    repo.release("0.3.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    assert_eq!(
        find_in(state.path(), &repo, "0.1.0", false)
            .unwrap()
            .manifest
            .version,
        "0.3.0"
    );
    // A mirror serves the first timestamp again: a rollback.
    repo.timestamp_version = 0;
    repo.snapshot_version = 1;
    repo.stamp(LATER, &[]);
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Rollback { .. })),
        "{e}"
    );
    // A snapshot naming targets the repository's file is not: a mix.
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let one = std::fs::read(repo.path().join("metadata/1.targets.json")).unwrap();
    repo.release("0.3.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    repo.write("2.targets.json", &one);
    let fresh = tempfile::tempdir().unwrap();
    let e = find_in(fresh.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Mismatch { role, .. }) if role == "targets"),
        "{e}"
    );
}

#[test]
fn a_new_root_is_taken_only_when_both_the_old_and_the_new_key_signed_it() {
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    find_in(state.path(), &repo, "0.1.0", false).unwrap();
    // Signed by the new key only.
    let new = Key::new();
    let new_id = new.id.clone();
    let old = std::mem::replace(&mut repo.root, Key::new());
    repo.write_root(new, &[], LATER);
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(
        matches!(&e, ReleaseError::Tuf(TufError::Unsigned { role, .. }) if role == "root"),
        "{e}"
    );
    // Signed by both: trusted, and kept.
    repo.root_version -= 1;
    let new = std::mem::replace(&mut repo.root, Key::new());
    repo.write_root(new, &[&old], LATER);
    assert_eq!(repo.root.id, new_id);
    find_in(state.path(), &repo, "0.1.0", false).unwrap();
    let kept: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("root.json")).unwrap()).unwrap();
    assert_eq!(kept["signed"]["version"], 2);
}

#[test]
fn releases_that_do_not_fit_this_core_are_refused_each_with_its_reason() {
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.5");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    // Not newer than the running version, unless forced.
    let e = find_in(state.path(), &repo, "0.2.0", false).unwrap_err();
    assert!(matches!(e, ReleaseError::NotNewer { .. }), "{e}");
    let e = find_in(state.path(), &repo, "0.3.0", false).unwrap_err();
    assert!(matches!(e, ReleaseError::NotNewer { .. }), "{e}");
    assert!(find_in(state.path(), &repo, "0.3.0", true).is_ok());
    // Too old to update from.
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(matches!(e, ReleaseError::TooOld { .. }), "{e}");
    // Another operating system.
    let mut repo = Repo::new();
    repo.release("0.2.0", "plan9", "0.0.0");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(matches!(e, ReleaseError::WrongPlatform { .. }), "{e}");
    // Nothing for this architecture.
    let mut repo = Repo::new();
    repo.add_target("verdant-0.2.0-sparc.json", b"{}");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    let e = find_in(state.path(), &repo, "0.1.0", false).unwrap_err();
    assert!(matches!(e, ReleaseError::NoRelease { .. }), "{e}");
}

#[test]
fn a_corrupt_or_swapped_executable_is_refused() {
    let mut repo = Repo::new();
    repo.release("0.2.0", std::env::consts::OS, "0.1.0");
    repo.publish([LATER; 3]);
    let state = tempfile::tempdir().unwrap();
    let release = find_in(state.path(), &repo, "0.1.0", false).unwrap();
    let file = repo.path().join(
        release
            .executable_url
            .rsplit_once("/targets/")
            .map(|(_, n)| format!("targets/{n}"))
            .unwrap(),
    );
    std::fs::write(&file, b"executable 0.2.X").unwrap();
    let f = fetcher();
    let downloads = tempfile::tempdir().unwrap();
    let e = download(&release, &f, downloads.path(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ReleaseError::Corrupt { .. }), "{e}");
    // More than the signed length: cut off, nothing kept.
    std::fs::write(&file, vec![b'x'; 1 << 20]).unwrap();
    let e = download(&release, &f, downloads.path(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("more than the 16 bytes"), "{e}");
    assert_eq!(std::fs::read_dir(downloads.path()).unwrap().count(), 0);
}
