//! What a deployment brings beside its group: the group itself from a
//! request (inline, a bundle, or a URL), each function's code put in the
//! content-addressed store (from the bundle, or downloaded by the group's
//! `Artifacts`), recorded in `deployments/<id>/artifacts.json`, installed
//! under `functions/` at the switch and put back on a rollback. Blocking:
//! the engine calls it from `spawn_blocking`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use verdant_group::Group;
use verdant_proto::ota::v1::DeployRequest;
use verdant_proto::ota::v1::deploy_request::Source as RequestSource;

use crate::artifacts::{Artifacts, Digest};
use crate::bundle::{Bundle, BundledFunction, Source};
use crate::fetch::{Fetcher, sha256_of};

/// Each function's code: `<name>/<version>` to its tree in the store.
pub type Code = BTreeMap<String, Digest>;

/// A request's group (JSON) and the code its bundle holds.
pub type Given = (Vec<u8>, Vec<BundledFunction>);

/// Bytes downloaded so far and in all (0: not known), for progress.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// The ota-agent's store of functions' code and where it goes.
pub struct Content {
    store: Artifacts,
    downloads: PathBuf,
    scratch: PathBuf,
    functions: PathBuf,
    deployments: PathBuf,
    /// The extra CA for HTTPS downloads (`[ota-agent] ca_file`).
    ca_file: Option<PathBuf>,
}

/// `url` without what may be a secret: a user and password, and the query
/// (a presigned URL's signature and token).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = match path.split_once('?') {
        Some((p, _)) => format!("{p}?…"),
        None => path.to_string(),
    };
    format!("{scheme}://{host}{path}")
}

/// `text` with every `url` in it redacted.
fn redacted(text: &str, url: &str) -> String {
    text.replace(url, &redact(url))
}

/// Where model resources are installed under `functions/` (as
/// `.models/<resource id>`, links into the store like functions' code);
/// the lambda-runner binds them from there.
pub const MODELS: &str = ".models";

/// The last segment of `url`'s path (without its query): what a model
/// that is a single file is called in its directory.
fn file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name,
        _ => "model",
    }
}

/// The group a model resource is given to (its `OwnerSetting.GroupOwner`).
fn owner_gid(group: &Group, id: &str) -> Result<Option<u32>, String> {
    let Some(owner) = group.model(id).and_then(|m| m.owner_setting.as_ref()) else {
        return Ok(None);
    };
    match nix::unistd::Group::from_name(&owner.group_owner) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        _ => Err(format!(
            "model `{id}`: OwnerSetting.GroupOwner `{}`: no such group on this core",
            owner.group_owner
        )),
    }
}

/// `<name>/<version>` of a qualified function ARN.
fn key_of(function_arn: &str) -> Option<String> {
    let parts: Vec<&str> = function_arn.split(':').collect();
    match parts.as_slice() {
        [.., "function", name, version] => Some(format!("{name}/{version}")),
        _ => None,
    }
}

impl Content {
    pub fn new(
        data: &Path,
        functions: PathBuf,
        deployments: PathBuf,
        ca_file: Option<PathBuf>,
    ) -> Self {
        Content {
            // Beside the functions, whose users must reach their code
            // (the lambda-runner keeps `functions/` traversable); no
            // function is named `.store`.
            store: Artifacts::new(&functions.join(".store")),
            downloads: data.join("downloads"),
            scratch: data.join("scratch"),
            functions,
            deployments,
            ca_file,
        }
    }

    fn fetcher(&self) -> Result<Fetcher, String> {
        Fetcher::new(self.ca_file.as_deref()).map_err(|e| e.to_string())
    }

    /// The group a request names and the code a bundle holds. A bundle
    /// tarball is unpacked under `scratch/<id>`.
    pub fn source(&self, request: &DeployRequest, id: &str) -> Result<Option<Given>, String> {
        match &request.source {
            None => Ok(None),
            Some(RequestSource::GroupJson(bytes)) => Ok(Some((bytes.clone(), Vec::new()))),
            Some(RequestSource::Bundle(path)) => {
                let scratch = self.scratch.join(id);
                let bundle = Bundle::open(Path::new(path), &scratch).map_err(|e| e.to_string())?;
                Ok(Some((bundle.group_json, bundle.functions)))
            }
            Some(RequestSource::GroupUrl(url)) => {
                let file = self
                    .fetcher()?
                    .fetch(&url.url, &url.sha256, &self.downloads, &mut |_, _| {})
                    .map_err(|e| format!("group URL: {}", redacted(&e.to_string(), &url.url)))?;
                let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                Ok(Some((bytes, Vec::new())))
            }
        }
    }

    /// Whether anything must be fetched or stored for `group`.
    pub fn brings_code(group: &Group, bundled: &[BundledFunction]) -> bool {
        !bundled.is_empty() || !group.artifacts.is_empty()
    }

    /// Puts every function's code the deployment brings in the store: the
    /// bundle's, then what the group's `Artifacts` name (downloaded; what
    /// the store or the downloads hold already is not fetched again).
    pub fn gather(
        &self,
        group: &Group,
        bundled: &[BundledFunction],
        progress: &Arc<Progress>,
    ) -> Result<Code, String> {
        let mut code = Code::new();
        for f in bundled {
            let key = format!("{}/{}", f.name, f.version);
            let digest = match &f.source {
                Source::Dir(dir) => self.store.put_dir(dir),
                Source::Zip(zip) => {
                    let sha = std::fs::File::open(zip)
                        .and_then(sha256_of)
                        .map_err(|e| format!("{}: {e}", zip.display()))?;
                    self.store.put_zip(zip, &sha)
                }
            }
            .map_err(|e| format!("{key}: {e}"))?;
            code.insert(key, digest);
        }
        if group.artifacts.is_empty() {
            return Ok(code);
        }
        let fetcher = self.fetcher()?;
        let mut before = 0;
        for (i, a) in group.artifacts.iter().enumerate() {
            let key = match (&a.function_arn, &a.resource_id) {
                (Some(arn), _) => key_of(arn).ok_or_else(|| {
                    format!("Artifacts[{i}].FunctionArn: not a qualified function ARN")
                })?,
                (None, Some(id)) => format!("{MODELS}/{id}"),
                (None, None) => return Err(format!("Artifacts[{i}]: names nothing")),
            };
            let url = group
                .artifact_url(a)
                .ok_or_else(|| format!("Artifacts[{i}].Url: required"))?;
            let owner = match &a.resource_id {
                Some(id) => owner_gid(group, id).map_err(|e| format!("Artifacts[{i}]: {e}"))?,
                None => None,
            };
            let digest = if a.resource_id.is_some() {
                Artifacts::model_key(&a.sha256, owner)
            } else {
                Digest::parse(&a.sha256)
            }
            .map_err(|e| format!("Artifacts[{i}].Sha256: {e}"))?;
            if !self.store.path(&digest).is_dir() {
                // A cut download goes on from where it stopped, a few times.
                let file = fetcher
                    .fetch_resuming(
                        &url,
                        &a.sha256,
                        None,
                        &self.downloads,
                        &mut |done, total| {
                            progress.done.store(before + done, Ordering::Relaxed);
                            if let Some(total) = total {
                                progress.total.store(before + total, Ordering::Relaxed);
                            }
                        },
                        &mut |attempt, e| {
                            let why = redacted(&e.to_string(), &url);
                            tracing::warn!(
                                url = redact(&url),
                                attempt,
                                "download cut, resuming: {why}"
                            );
                        },
                    )
                    .map_err(|e| {
                        let why = redacted(&e.to_string(), &url);
                        format!("Artifacts[{i}] {}: {why}", redact(&url))
                    })?;
                before = progress.done.load(Ordering::Relaxed);
                if a.resource_id.is_some() {
                    self.store
                        .put_model(&file, &a.sha256, file_name(&url), owner)
                } else {
                    self.store.put_zip(&file, &a.sha256)
                }
                .map_err(|e| format!("Artifacts[{i}]: {e}"))?;
                // The unpacked tree is what is kept.
                let _ = std::fs::remove_file(&file);
            }
            code.insert(key, digest);
        }
        Ok(code)
    }

    /// `<name>/<version>` to the tree's directory, for the lambda-runner's check.
    pub fn staged(&self, code: &Code) -> std::collections::HashMap<String, String> {
        code.iter()
            .map(|(k, d)| (k.clone(), self.store.path(d).display().to_string()))
            .collect()
    }

    /// Writes `deployments/<id>/<name>` whole: a temporary file synced,
    /// renamed over, the directory synced.
    fn write_json(
        &self,
        id: &str,
        name: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), String> {
        let dir = self.deployments.join(id);
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let text = serde_json::to_vec_pretty(value).expect("a map serializes");
        let at = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut f = std::fs::File::create(&tmp).map_err(at)?;
        std::io::Write::write_all(&mut f, &text).map_err(at)?;
        f.sync_all().map_err(at)?;
        std::fs::rename(&tmp, &path).map_err(at)?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(at)
    }

    /// Writes `deployments/<id>/artifacts.json`: the code the deployment brought.
    pub fn record(&self, id: &str, code: &Code) -> Result<(), String> {
        let map: BTreeMap<&String, &str> = code.iter().map(|(k, d)| (k, d.as_str())).collect();
        self.write_json(id, "artifacts.json", &map)
    }

    /// The code deployment `id` brought (none if it brought none).
    pub fn recorded(&self, id: &str) -> Code {
        let path = self.deployments.join(id).join("artifacts.json");
        let Ok(text) = std::fs::read(&path) else {
            return Code::new();
        };
        let map: BTreeMap<String, String> = serde_json::from_slice(&text).unwrap_or_default();
        map.into_iter()
            .filter_map(|(k, d)| Some((k, Digest::parse(&d).ok()?)))
            .collect()
    }

    /// Points `functions/<name>/<version>` at each tree of `code`, having
    /// first written (and synced) in `deployments/<id>/replaced.json` what
    /// each of those entries was, so that [`Content::undo`] can put it back
    /// even after a stop half-way.
    pub fn install(&self, id: &str, code: &Code) -> Result<(), String> {
        let mut replaced = BTreeMap::new();
        for key in code.keys() {
            let entry = self.functions.join(key);
            let was = match std::fs::symlink_metadata(&entry) {
                Err(_) => Was::Absent,
                Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&entry) {
                    Ok(target) => Was::Link(target.display().to_string()),
                    Err(e) => return Err(format!("{}: {e}", entry.display())),
                },
                Ok(_) => Was::MovedAside,
            };
            replaced.insert(key.clone(), was);
        }
        self.write_json(id, "replaced.json", &replaced)?;
        for (key, digest) in code {
            let (name, version) = key.split_once('/').expect("keys are name/version");
            self.store
                .install(&self.functions, name, version, digest)
                .map_err(|e| format!("installing {key}: {e}"))?;
        }
        Ok(())
    }

    /// Puts back what [`Content::install`] of deployment `id` replaced
    /// (each entry as it was: a link to where it pointed, a directory moved
    /// aside, or nothing). Safe to repeat.
    pub fn undo(&self, id: &str) -> Result<(), String> {
        let path = self.deployments.join(id).join("replaced.json");
        let Ok(text) = std::fs::read(&path) else {
            // Nothing was installed.
            return Ok(());
        };
        let replaced: BTreeMap<String, Was> =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (key, was) in replaced {
            let (name, version) = key.split_once('/').expect("keys are name/version");
            let dir = self.functions.join(name);
            let entry = dir.join(version);
            let at = |e: std::io::Error| format!("{}: {e}", entry.display());
            let is_link =
                std::fs::symlink_metadata(&entry).is_ok_and(|m| m.file_type().is_symlink());
            match was {
                Was::Absent => {
                    if is_link {
                        std::fs::remove_file(&entry).map_err(at)?;
                    }
                }
                Was::Link(target) => {
                    let tmp = dir.join(format!("{version}.tmp"));
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(&target, &tmp).map_err(at)?;
                    std::fs::rename(&tmp, &entry).map_err(at)?;
                }
                Was::MovedAside => {
                    let aside = dir.join(format!("{version}.before-deployment"));
                    if aside.exists() {
                        if is_link {
                            std::fs::remove_file(&entry).map_err(at)?;
                        }
                        std::fs::rename(&aside, &entry).map_err(at)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes what a bundle tarball of deployment `id` was unpacked into.
    pub fn forget_scratch(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.scratch.join(id));
    }

    /// Drops the trees that no deployment still on disk names and no
    /// function's link points at; and scratch. Keeps everything when it
    /// cannot tell.
    pub fn gc(&self) {
        let mut keep = HashSet::new();
        let Ok(deployments) = std::fs::read_dir(&self.deployments) else {
            return;
        };
        for e in deployments.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            keep.extend(self.recorded(&name).into_values());
        }
        let Ok(functions) = std::fs::read_dir(&self.functions) else {
            return;
        };
        for f in functions.flatten() {
            let Ok(versions) = std::fs::read_dir(f.path()) else {
                continue;
            };
            for v in versions.flatten() {
                if let Ok(target) = std::fs::read_link(v.path())
                    && let Some(digest) = target.file_name().and_then(|n| n.to_str())
                    && let Ok(digest) = Digest::parse(digest)
                {
                    keep.insert(digest);
                }
            }
        }
        if let Err(e) = self.store.gc(&keep) {
            tracing::warn!("cannot remove unused functions' code: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// What an entry under `functions/` was before a deployment installed code there.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Was {
    Absent,
    /// A symlink, to this target.
    Link(String),
    /// A directory or file, moved aside to `<version>.before-deployment`.
    MovedAside,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_query() {
        assert_eq!(
            redact("https://user:pw@example.com/a/b.zip?X-Amz-Signature=s"),
            "https://example.com/a/b.zip?…"
        );
        assert_eq!(redact("file:///srv/a.zip"), "file:///srv/a.zip");
        assert_eq!(
            redacted("GET https://u:p@h/x?t=1 failed", "https://u:p@h/x?t=1"),
            "GET https://h/x?… failed"
        );
    }

    #[test]
    fn keys_of_qualified_arns() {
        assert_eq!(
            key_of("arn:aws:lambda:us-east-1:123456789012:function:hello:3").as_deref(),
            Some("hello/3")
        );
        assert_eq!(key_of("arn:aws:iot:us-east-1:1:thing/x"), None);
    }

    #[test]
    fn install_record_and_restore() {
        let root = tempfile::tempdir().unwrap();
        let functions = root.path().join("functions");
        let deployments = root.path().join("deployments");
        let content = Content::new(
            &root.path().join("data"),
            functions.clone(),
            deployments.clone(),
            None,
        );
        // A hand-made directory, then two deployments of the same version.
        std::fs::create_dir_all(functions.join("f/1")).unwrap();
        std::fs::write(functions.join("f/1/main.py"), "hand").unwrap();
        let mut codes = Vec::new();
        for text in ["one", "two"] {
            let src = root.path().join(text);
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("main.py"), text).unwrap();
            let bundled = vec![BundledFunction {
                name: "f".into(),
                version: "1".into(),
                source: Source::Dir(src),
            }];
            let group = Group::parse(br#"{"Id":"g","CoreDefinitionVersion":{"Cores":[{"Id":"c","ThingArn":"arn:aws:iot:us-east-1:123456789012:thing/c","CertificateArn":"arn:aws:iot:us-east-1:123456789012:cert/0000000000000000000000000000000000000000000000000000000000000000"}]}}"#).unwrap();
            codes.push(content.gather(&group, &bundled, &Arc::default()).unwrap());
        }
        let read = || std::fs::read_to_string(functions.join("f/1/main.py")).unwrap();
        for id in ["d1", "d2"] {
            std::fs::create_dir_all(deployments.join(id)).unwrap();
        }
        content.record("d1", &codes[0]).unwrap();
        assert_eq!(content.recorded("d1"), codes[0]);
        content.install("d1", &codes[0]).unwrap();
        assert_eq!(read(), "one");
        content.install("d2", &codes[1]).unwrap();
        assert_eq!(read(), "two");
        // d2 undone: d1's code; d1 undone: the hand-made directory. Twice is once.
        content.undo("d2").unwrap();
        content.undo("d2").unwrap();
        assert_eq!(read(), "one");
        content.undo("d1").unwrap();
        assert_eq!(read(), "hand");
        // What a link points at is kept; the rest goes.
        content.install("d2", &codes[1]).unwrap();
        std::fs::remove_dir_all(deployments.join("d1")).unwrap();
        content.gc();
        assert_eq!(read(), "two");
        assert!(!content.store.path(&codes[0]["f/1"]).exists());
    }
}
