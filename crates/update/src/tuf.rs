//! The Update Framework's client workflow (TUF 1.0, "Detailed client
//! workflow"), for a repository with the four top-level roles and ed25519
//! keys, as `scripts/update-repo.py` (python-tuf) makes them:
//!
//! 1. **root**: `<n+1>.root.json` fetched while there is one, each signed
//!    by a threshold of the previous root's root keys and of its own, its
//!    version exactly n+1; then the root must not have expired (a frozen
//!    repository is noticed). When the timestamp or snapshot keys changed,
//!    the trusted timestamp and snapshot are forgotten (recovery from a
//!    fast-forward attack).
//! 2. **timestamp**: `timestamp.json`, signed by a threshold of the
//!    timestamp keys, its version and the snapshot version it names not
//!    below the trusted ones (no rollback), not expired.
//! 3. **snapshot**: `<v>.snapshot.json` for the version the timestamp
//!    names, its length and hashes as the timestamp gives them, signed by
//!    the snapshot keys, exactly that version, no metadata version in it
//!    below the trusted snapshot's (no rollback), not expired.
//! 4. **targets**: `<v>.targets.json` for the version the snapshot names
//!    (so a mirror cannot mix files of two repository states), signed by
//!    the targets keys, exactly that version, not expired.
//!
//! A target is then fetched by its hash (`targets/<sha256>.<name>`) and
//! checked against the length and SHA-256 the targets metadata gives.
//! Each trusted metadata file is kept under the state directory, so a
//! rollback is noticed across restarts. Delegated targets are not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cjson;

/// The most bytes each role's metadata may have (a repository that sends
/// more is refused before it fills the disk or memory).
const MAX_ROOT: u64 = 512 * 1024;
const MAX_TIMESTAMP: u64 = 16 * 1024;
const MAX_SNAPSHOT: u64 = 2 * 1024 * 1024;
const MAX_TARGETS: u64 = 8 * 1024 * 1024;
/// Root versions taken in one refresh at most.
const MAX_ROOT_ROTATIONS: u64 = 64;

/// Why a repository's metadata is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TufError {
    #[error("{role} metadata: {reason}")]
    Malformed { role: String, reason: String },
    #[error(
        "{role} metadata is not signed by {threshold} of its trusted keys \
         ({valid} valid signature(s)): unsigned, or signed with another key"
    )]
    Unsigned {
        role: String,
        valid: usize,
        threshold: u64,
    },
    #[error("{role} metadata expired at {expires}")]
    Expired { role: String, expires: String },
    #[error(
        "{role} metadata version {got} is older than the version {have} this core already \
         trusts (a rollback)"
    )]
    Rollback { role: String, have: u64, got: u64 },
    #[error("{role} metadata is version {got} where {by} says {want} (a mix of repository states)")]
    Mismatch {
        role: String,
        got: u64,
        want: u64,
        by: &'static str,
    },
    #[error("{name}: {reason}")]
    Fetch { name: String, reason: String },
    #[error("{}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

/// Where metadata comes from: a directory, a `file://` or `https://`
/// repository. `Ok(None)`: there is no such file.
pub trait Remote {
    fn metadata(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>, String>;
}

#[derive(Debug, Clone, Deserialize)]
struct Envelope {
    signatures: Vec<Signature>,
    signed: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct Signature {
    keyid: String,
    sig: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Key {
    keytype: String,
    scheme: String,
    keyval: KeyVal,
}

#[derive(Debug, Clone, Deserialize)]
struct KeyVal {
    public: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Role {
    keyids: Vec<String>,
    threshold: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Root {
    #[serde(rename = "_type")]
    kind: String,
    version: u64,
    expires: String,
    keys: BTreeMap<String, Key>,
    roles: BTreeMap<String, Role>,
    #[serde(default)]
    consistent_snapshot: bool,
}

/// What the timestamp and snapshot say of another metadata file.
#[derive(Debug, Clone, Deserialize)]
struct MetaFile {
    version: u64,
    length: Option<u64>,
    hashes: Option<BTreeMap<String, String>>,
}

/// Timestamp and snapshot metadata: the versions of other files.
#[derive(Debug, Clone, Deserialize)]
struct Index {
    #[serde(rename = "_type")]
    kind: String,
    version: u64,
    expires: String,
    meta: BTreeMap<String, MetaFile>,
}

/// A target: its length and hashes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
}

impl TargetFile {
    /// Its SHA-256, the hash targets are fetched and checked by.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct TargetsMeta {
    #[serde(rename = "_type")]
    kind: String,
    version: u64,
    expires: String,
    targets: BTreeMap<String, TargetFile>,
}

/// The targets of a repository, verified.
#[derive(Debug, Clone)]
pub struct Targets {
    pub version: u64,
    /// The version of the root that signed them.
    pub root_version: u64,
    pub targets: BTreeMap<String, TargetFile>,
    /// Whether target files are named `<sha256>.<name>`.
    pub consistent: bool,
}

impl Targets {
    /// The path of `name` in the repository.
    pub fn path(&self, name: &str) -> Option<String> {
        let t = self.targets.get(name)?;
        Some(if self.consistent {
            format!("targets/{}.{name}", t.sha256()?)
        } else {
            format!("targets/{name}")
        })
    }
}

/// Metadata with a type and a version.
trait Versioned {
    fn kind(&self) -> &str;
    fn version(&self) -> u64;
}

impl Versioned for Index {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn version(&self) -> u64 {
        self.version
    }
}

impl Versioned for TargetsMeta {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// Metadata this core trusts, kept in one directory.
pub struct Client {
    dir: PathBuf,
    now: OffsetDateTime,
    /// The version of the operator's root: the chain of roots starts after it.
    anchor_version: u64,
}

fn malformed(role: &str, reason: impl std::fmt::Display) -> TufError {
    TufError::Malformed {
        role: role.into(),
        reason: reason.to_string(),
    }
}

/// Parses `bytes` as `role`'s metadata: the envelope and its `signed`.
fn parse<T: DeserializeOwned>(role: &str, bytes: &[u8]) -> Result<(Envelope, T), TufError> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| malformed(role, format!("not TUF metadata: {e}")))?;
    let signed: T =
        serde_json::from_value(envelope.signed.clone()).map_err(|e| malformed(role, e))?;
    Ok((envelope, signed))
}

/// Checks that a threshold of `role`'s keys in `root` signed `envelope`.
fn verify(root: &Root, role: &str, envelope: &Envelope) -> Result<(), TufError> {
    let Some(r) = root.roles.get(role) else {
        return Err(malformed("root", format!("no {role} role")));
    };
    if r.threshold == 0 {
        return Err(malformed(
            "root",
            format!("the {role} role's threshold is 0"),
        ));
    }
    let message = cjson::encode(&envelope.signed).map_err(|e| malformed(role, e))?;
    let mut valid: Vec<&str> = Vec::new();
    for s in &envelope.signatures {
        if valid.contains(&s.keyid.as_str()) || !r.keyids.contains(&s.keyid) {
            continue;
        }
        let Some(key) = root.keys.get(&s.keyid) else {
            continue;
        };
        if key.keytype != "ed25519" || key.scheme != "ed25519" {
            continue;
        }
        let (Ok(public), Ok(sig)) = (hex::decode(&key.keyval.public), hex::decode(&s.sig)) else {
            continue;
        };
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        if public.verify(&message, &sig).is_ok() {
            valid.push(&s.keyid);
        }
    }
    if (valid.len() as u64) < r.threshold {
        return Err(TufError::Unsigned {
            role: role.into(),
            valid: valid.len(),
            threshold: r.threshold,
        });
    }
    Ok(())
}

/// `expires` is after `now`.
fn unexpired(role: &str, expires: &str, now: OffsetDateTime) -> Result<(), TufError> {
    let at = OffsetDateTime::parse(expires, &Rfc3339)
        .map_err(|e| malformed(role, format!("expires {expires:?}: {e}")))?;
    if at <= now {
        return Err(TufError::Expired {
            role: role.into(),
            expires: expires.into(),
        });
    }
    Ok(())
}

/// The root after `root`, from `bytes`: signed by a threshold of
/// `root`'s root keys and of its own, its version the next one.
fn next_root(root: &Root, bytes: &[u8], by: &'static str) -> Result<Root, TufError> {
    let (envelope, new): (_, Root) = parse("root", bytes)?;
    check_type("root", &new.kind)?;
    verify(root, "root", &envelope)?;
    verify(&new, "root", &envelope)?;
    if new.version != root.version + 1 {
        return Err(TufError::Mismatch {
            role: "root".into(),
            got: new.version,
            want: root.version + 1,
            by,
        });
    }
    Ok(new)
}

fn check_type(role: &str, kind: &str) -> Result<(), TufError> {
    if kind == role {
        Ok(())
    } else {
        Err(malformed(role, format!("its _type is {kind:?}")))
    }
}

impl Client {
    /// The trusted metadata in `dir`; a new `dir` starts from `anchor`, the
    /// root the operator installed (`config/update-root.json`).
    pub fn open(dir: &Path, anchor: &Path, now: OffsetDateTime) -> Result<Client, TufError> {
        let state = |reason: String| TufError::State {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| state(e.to_string()))?;
        let anchor_version = std::fs::read(anchor)
            .ok()
            .and_then(|b| parse::<Root>("root", &b).ok())
            .map_or(1, |(_, r)| r.version);
        let client = Client {
            dir: dir.to_path_buf(),
            now,
            anchor_version,
        };
        if client.trusted("root").is_none() {
            let bytes = std::fs::read(anchor).map_err(|e| TufError::State {
                path: anchor.to_path_buf(),
                reason: format!("the repository's trusted root: {e}"),
            })?;
            let (envelope, root): (_, Root) = parse("root", &bytes)?;
            check_type("root", &root.kind)?;
            // The anchor signs itself: a damaged copy is noticed here.
            verify(&root, "root", &envelope)?;
            client.keep("root", &bytes)?;
        }
        Ok(client)
    }

    /// What a checker with only the operator's root needs to verify the
    /// trusted targets again ([`verify_targets`]): every root after the
    /// first, in order, and the targets metadata.
    pub fn evidence(&self) -> Result<(Vec<Vec<u8>>, Vec<u8>), TufError> {
        let latest = self.root()?.version;
        let mut roots = Vec::new();
        for v in self.anchor_version + 1..=latest {
            roots.push(
                self.trusted(&format!("{v}.root"))
                    .ok_or_else(|| TufError::State {
                        path: self.dir.join(format!("{v}.root.json")),
                        reason: "missing from the chain of trusted roots".into(),
                    })?,
            );
        }
        let targets = self.trusted("targets").ok_or_else(|| TufError::State {
            path: self.dir.join("targets.json"),
            reason: "no targets metadata trusted yet".into(),
        })?;
        Ok((roots, targets))
    }

    fn trusted(&self, role: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(format!("{role}.json"))).ok()
    }

    fn keep(&self, role: &str, bytes: &[u8]) -> Result<(), TufError> {
        let path = self.dir.join(format!("{role}.json"));
        verdant_common::fsutil::replace(&path, bytes, 0o644).map_err(|e| TufError::State {
            path,
            reason: e.to_string(),
        })
    }

    fn forget(&self, role: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{role}.json")));
    }

    fn unexpired(&self, role: &str, expires: &str) -> Result<(), TufError> {
        unexpired(role, expires, self.now)
    }

    fn root(&self) -> Result<Root, TufError> {
        let bytes = self.trusted("root").ok_or_else(|| TufError::State {
            path: self.dir.join("root.json"),
            reason: "missing".into(),
        })?;
        parse::<Root>("root", &bytes).map(|(_, r)| r)
    }

    fn fetch(remote: &dyn Remote, name: &str, max: u64) -> Result<Option<Vec<u8>>, TufError> {
        let bytes = remote
            .metadata(name, max)
            .map_err(|reason| TufError::Fetch {
                name: name.into(),
                reason,
            })?;
        if let Some(b) = &bytes
            && b.len() as u64 > max
        {
            return Err(TufError::Fetch {
                name: name.into(),
                reason: format!("more than {max} bytes"),
            });
        }
        Ok(bytes)
    }

    /// Brings the trusted metadata up to date from `remote` and returns the
    /// verified targets.
    pub fn refresh(&self, remote: &dyn Remote) -> Result<Targets, TufError> {
        let root = self.update_root(remote)?;
        let snapshot_version = self.update_timestamp(remote, &root)?;
        let targets_version = self.update_snapshot(remote, &root, snapshot_version)?;
        self.update_targets(remote, &root, targets_version)
    }

    fn update_root(&self, remote: &dyn Remote) -> Result<Root, TufError> {
        let mut root = self.root()?;
        for _ in 0..MAX_ROOT_ROTATIONS {
            let next = root.version + 1;
            let Some(bytes) = Self::fetch(remote, &format!("{next}.root.json"), MAX_ROOT)? else {
                break;
            };
            let new = next_root(&root, &bytes, "its file name")?;
            for role in ["timestamp", "snapshot"] {
                if root.roles.get(role) != new.roles.get(role) {
                    // Its keys changed: what they signed is forgotten.
                    self.forget("timestamp");
                    self.forget("snapshot");
                }
            }
            // The chain from the operator's root, for whoever checks again.
            self.keep(&format!("{}.root", new.version), &bytes)?;
            self.keep("root", &bytes)?;
            tracing::info!(version = new.version, "a new update root is trusted");
            root = new;
        }
        self.unexpired("root", &root.expires)?;
        Ok(root)
    }

    fn update_timestamp(&self, remote: &dyn Remote, root: &Root) -> Result<u64, TufError> {
        let role = "timestamp";
        let bytes = Self::fetch(remote, "timestamp.json", MAX_TIMESTAMP)?.ok_or_else(|| {
            TufError::Fetch {
                name: "timestamp.json".into(),
                reason: "not in the repository".into(),
            }
        })?;
        let (envelope, new): (_, Index) = parse(role, &bytes)?;
        check_type(role, &new.kind)?;
        verify(root, role, &envelope)?;
        let snapshot = new
            .meta
            .get("snapshot.json")
            .ok_or_else(|| malformed(role, "it names no snapshot.json"))?
            .version;
        if let Some(old) = self.trusted(role)
            && let Ok((_, old)) = parse::<Index>(role, &old)
        {
            if new.version < old.version {
                return Err(TufError::Rollback {
                    role: role.into(),
                    have: old.version,
                    got: new.version,
                });
            }
            let old_snapshot = old.meta.get("snapshot.json").map_or(0, |m| m.version);
            if snapshot < old_snapshot {
                return Err(TufError::Rollback {
                    role: "snapshot".into(),
                    have: old_snapshot,
                    got: snapshot,
                });
            }
        }
        self.unexpired(role, &new.expires)?;
        self.keep(role, &bytes)?;
        Ok(snapshot)
    }

    /// `bytes` as `by` describes them (length and hashes, when given).
    fn check_file(name: &str, bytes: &[u8], by: Option<&MetaFile>) -> Result<(), TufError> {
        let Some(m) = by else { return Ok(()) };
        if let Some(len) = m.length
            && len != bytes.len() as u64
        {
            return Err(malformed(
                name,
                format!("{} bytes, {len} expected", bytes.len()),
            ));
        }
        if let Some(want) = m.hashes.as_ref().and_then(|h| h.get("sha256")) {
            let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
            if &got != want {
                return Err(malformed(name, format!("SHA-256 {got}, {want} expected")));
            }
        }
        Ok(())
    }

    /// The metadata of `role` at `version`, as the trusted index
    /// (`index`, the timestamp or the snapshot) describes it, signed by
    /// the role's keys, of that type and version: its bytes and content.
    fn versioned<T: DeserializeOwned + Versioned>(
        &self,
        remote: &dyn Remote,
        root: &Root,
        (role, version, max): (&'static str, u64, u64),
        index: &'static str,
    ) -> Result<(Vec<u8>, T), TufError> {
        let trusted = self.trusted(index).unwrap_or_default();
        let (_, by): (_, Index) = parse(index, &trusted)?;
        let by = by.meta.get(&format!("{role}.json"));
        let name = if root.consistent_snapshot {
            format!("{version}.{role}.json")
        } else {
            format!("{role}.json")
        };
        // The index's length, within the hard limit all the same (an online
        // key that leaked cannot make the client read without bound).
        let max = by.and_then(|m| m.length).map_or(max, |l| l.min(max));
        let bytes = Self::fetch(remote, &name, max)?.ok_or_else(|| TufError::Fetch {
            name: name.clone(),
            reason: format!("not in the repository (the {index} names version {version})"),
        })?;
        Self::check_file(role, &bytes, by)?;
        let (envelope, new): (_, T) = parse(role, &bytes)?;
        verify(root, role, &envelope)?;
        check_type(role, new.kind())?;
        if new.version() != version {
            return Err(TufError::Mismatch {
                role: role.into(),
                got: new.version(),
                want: version,
                by: if index == "timestamp" {
                    "the timestamp"
                } else {
                    "the snapshot"
                },
            });
        }
        Ok((bytes, new))
    }

    fn update_snapshot(
        &self,
        remote: &dyn Remote,
        root: &Root,
        version: u64,
    ) -> Result<u64, TufError> {
        let role = "snapshot";
        let (bytes, new): (_, Index) =
            self.versioned(remote, root, (role, version, MAX_SNAPSHOT), "timestamp")?;
        if let Some(old) = self.trusted(role)
            && let Ok((_, old)) = parse::<Index>(role, &old)
        {
            for (name, m) in &old.meta {
                let got = new.meta.get(name).map_or(0, |n| n.version);
                if got < m.version {
                    return Err(TufError::Rollback {
                        role: name.trim_end_matches(".json").into(),
                        have: m.version,
                        got,
                    });
                }
            }
        }
        self.unexpired(role, &new.expires)?;
        let targets = new
            .meta
            .get("targets.json")
            .ok_or_else(|| malformed(role, "it names no targets.json"))?
            .version;
        self.keep(role, &bytes)?;
        Ok(targets)
    }

    fn update_targets(
        &self,
        remote: &dyn Remote,
        root: &Root,
        version: u64,
    ) -> Result<Targets, TufError> {
        let role = "targets";
        let (bytes, new): (_, TargetsMeta) =
            self.versioned(remote, root, (role, version, MAX_TARGETS), "snapshot")?;
        self.unexpired(role, &new.expires)?;
        self.keep(role, &bytes)?;
        Ok(Targets {
            version: new.version,
            root_version: root.version,
            targets: new.targets,
            consistent: root.consistent_snapshot,
        })
    }
}

/// Verifies, with nothing but the operator's root (`anchor`), that
/// `targets` is the repository's: each of `roots` (the versions after the
/// anchor's, in order) signed
/// by the previous root's keys and its own, the last unexpired, `targets`
/// signed by its targets keys and unexpired. No network, no state: what
/// verdant-init does before it executes a release the ota-agent staged.
/// (Rollback protection is the fetching client's: this says only that the
/// repository's keys signed it.)
pub fn verify_targets(
    anchor: &[u8],
    roots: &[Vec<u8>],
    targets: &[u8],
    now: OffsetDateTime,
) -> Result<Targets, TufError> {
    let (envelope, mut root): (_, Root) = parse("root", anchor)?;
    check_type("root", &root.kind)?;
    verify(&root, "root", &envelope)?;
    for bytes in roots {
        root = next_root(&root, bytes, "the chain of roots")?;
    }
    unexpired("root", &root.expires, now)?;
    let (envelope, t): (_, TargetsMeta) = parse("targets", targets)?;
    check_type("targets", &t.kind)?;
    verify(&root, "targets", &envelope)?;
    unexpired("targets", &t.expires, now)?;
    Ok(Targets {
        version: t.version,
        root_version: root.version,
        targets: t.targets,
        consistent: root.consistent_snapshot,
    })
}
