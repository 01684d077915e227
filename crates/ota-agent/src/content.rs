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

/// How many times a cut download is resumed before the deployment fails.
const RESUMES: u32 = 4;

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
                    .map_err(|e| format!("group URL: {e}"))?;
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
            let key = key_of(&a.function_arn).ok_or_else(|| {
                format!("Artifacts[{i}].FunctionArn: not a qualified function ARN")
            })?;
            let digest =
                Digest::parse(&a.sha256).map_err(|e| format!("Artifacts[{i}].Sha256: {e}"))?;
            if !self.store.path(&digest).is_dir() {
                // A cut download goes on from where it stopped, a few times.
                let mut attempt = 0;
                let file = loop {
                    let outcome =
                        fetcher.fetch(&a.url, &a.sha256, &self.downloads, &mut |done, total| {
                            progress.done.store(before + done, Ordering::Relaxed);
                            if let Some(total) = total {
                                progress.total.store(before + total, Ordering::Relaxed);
                            }
                        });
                    match outcome {
                        Ok(file) => break file,
                        Err(e) if e.is_transient() && attempt < RESUMES => {
                            attempt += 1;
                            tracing::warn!(url = a.url, attempt, "download cut, resuming: {e}");
                            std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
                        }
                        Err(e) => return Err(format!("Artifacts[{i}] {}: {e}", a.url)),
                    }
                };
                before = progress.done.load(Ordering::Relaxed);
                self.store
                    .put_zip(&file, &a.sha256)
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

    /// Writes `deployments/<id>/artifacts.json`.
    pub fn record(&self, id: &str, code: &Code) -> Result<(), String> {
        let map: BTreeMap<&String, &str> = code.iter().map(|(k, d)| (k, d.as_str())).collect();
        let path = self.deployments.join(id).join("artifacts.json");
        let text = serde_json::to_vec_pretty(&map).expect("a map serializes");
        std::fs::write(&path, text)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))
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

    /// Points `functions/<name>/<version>` at each tree of `code`.
    pub fn install(&self, code: &Code) -> Result<(), String> {
        for (key, digest) in code {
            let (name, version) = key.split_once('/').expect("keys are name/version");
            self.store
                .install(&self.functions, name, version, digest)
                .map_err(|e| format!("installing {key}: {e}"))?;
        }
        Ok(())
    }

    /// Undoes [`Content::install`] of `failed`'s code: what `previous`
    /// brought is installed again, and a directory the first deployment
    /// moved aside is put back.
    pub fn restore(&self, failed: &Code, previous: &Code) -> Result<(), String> {
        self.install(previous)?;
        for key in failed.keys().filter(|k| !previous.contains_key(*k)) {
            let (name, version) = key.split_once('/').expect("keys are name/version");
            let dir = self.functions.join(name);
            let aside = dir.join(format!("{version}.before-deployment"));
            if aside.is_dir() {
                let link = dir.join(version);
                let _ = std::fs::remove_file(&link);
                std::fs::rename(&aside, &link).map_err(|e| format!("{}: {e}", aside.display()))?;
            }
        }
        Ok(())
    }

    /// Drops the trees no deployment still on disk names, and scratch.
    pub fn gc(&self) {
        let mut keep = HashSet::new();
        if let Ok(entries) = std::fs::read_dir(&self.deployments) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                keep.extend(self.recorded(&name).into_values());
            }
        }
        if let Err(e) = self.store.gc(&keep) {
            tracing::warn!("cannot remove unused functions' code: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        content.install(&codes[0]).unwrap();
        assert_eq!(read(), "one");
        std::fs::create_dir_all(deployments.join("d1")).unwrap();
        content.record("d1", &codes[0]).unwrap();
        assert_eq!(content.recorded("d1"), codes[0]);
        content.install(&codes[1]).unwrap();
        assert_eq!(read(), "two");
        // Back to d1's code, then to the hand-made directory.
        content.restore(&codes[1], &codes[0]).unwrap();
        assert_eq!(read(), "one");
        content.restore(&codes[0], &Code::new()).unwrap();
        assert_eq!(read(), "hand");
    }
}
