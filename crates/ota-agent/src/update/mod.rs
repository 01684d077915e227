//! Software updates of the core: releases published in a repository in
//! The Update Framework's format, each a manifest and an executable
//! (`verdant-update`), found and checked here before anything on the core
//! changes. A repository is a directory, a `file://` URL or an
//! `https://` URL with `metadata/` and `targets/` under it.

pub mod api;

use std::path::{Path, PathBuf};

use crate::fetch::Fetcher;
pub use verdant_update::release;
pub use verdant_update::{Client, Manifest, ReleaseError, Remote, TargetFile, TufError, cjson};

/// A repository, reached through a [`Fetcher`].
pub struct Repository<'a> {
    /// `file:///…` or `https://…`, without a final `/`.
    base: String,
    fetcher: &'a Fetcher,
}

impl<'a> Repository<'a> {
    /// `location`: an absolute directory, a `file://` or an `https://` URL.
    pub fn new(location: &str, fetcher: &'a Fetcher) -> Result<Repository<'a>, ReleaseError> {
        let base = if location.starts_with('/') {
            format!("file://{location}")
        } else if location.starts_with("file:///") || location.starts_with("https://") {
            location.to_string()
        } else {
            return Err(ReleaseError::Fetch(format!(
                "`{location}`: a repository is an absolute directory, a file:/// or an https:// URL"
            )));
        };
        Ok(Repository {
            base: base.trim_end_matches('/').to_string(),
            fetcher,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}

impl Remote for Repository<'_> {
    fn metadata(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>, String> {
        self.fetcher
            .get(&self.url(&format!("metadata/{name}")), max_len)
            .map_err(|e| e.to_string())
    }
}

/// A release found in a trusted repository, its manifest checked.
#[derive(Debug, Clone)]
pub struct Release {
    pub manifest: Manifest,
    /// The manifest as signed.
    pub manifest_bytes: Vec<u8>,
    pub executable: TargetFile,
    /// Where the executable is fetched from.
    pub executable_url: String,
    /// The targets metadata version it was found in.
    pub targets_version: u64,
}

/// Brings `client`'s trusted metadata up to date from `repo`, then finds
/// the release to take (`want`, or the newest for this machine) and checks
/// its manifest against the running version (`force` takes one that is
/// not newer).
pub fn find(
    client: &Client,
    repo: &Repository<'_>,
    running: &str,
    want: Option<&str>,
    force: bool,
) -> Result<Release, ReleaseError> {
    let targets = client.refresh(repo)?;
    let name = release::choose(&targets, std::env::consts::ARCH, want)?;
    let target = &targets.targets[&name];
    if target.length > release::MAX_MANIFEST {
        return Err(ReleaseError::BadManifest {
            name,
            reason: format!("{} bytes is too big for a manifest", target.length),
        });
    }
    let path = targets.path(&name).unwrap_or_default();
    let bytes = repo
        .fetcher
        .get(&repo.url(&path), release::MAX_MANIFEST)
        .map_err(|e| ReleaseError::Fetch(e.to_string()))?
        .ok_or_else(|| ReleaseError::Fetch(format!("{path}: not in the repository")))?;
    release::check_target(&name, target, &bytes)?;
    let manifest = release::check_manifest(&name, &bytes, running, force)?;
    let executable = targets
        .targets
        .get(&manifest.executable)
        .cloned()
        .ok_or_else(|| ReleaseError::BadManifest {
            name: name.clone(),
            reason: format!("its executable {} is not a target", manifest.executable),
        })?;
    let executable_url = repo.url(&targets.path(&manifest.executable).unwrap_or_default());
    Ok(Release {
        manifest,
        manifest_bytes: bytes,
        executable,
        executable_url,
        targets_version: targets.version,
    })
}

/// Downloads `release`'s executable into `downloads` (resumed after a
/// cut), checked by its SHA-256; its path.
pub fn download(
    release: &Release,
    fetcher: &Fetcher,
    downloads: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf, ReleaseError> {
    let sha256 = release
        .executable
        .sha256()
        .ok_or_else(|| ReleaseError::Corrupt {
            name: release.manifest.executable.clone(),
            reason: "the targets metadata gives no SHA-256".into(),
        })?;
    fetcher
        .fetch_resuming(
            &release.executable_url,
            sha256,
            Some(release.executable.length),
            downloads,
            progress,
            &mut |attempt, e| {
                tracing::warn!(attempt, "download of the release cut, resuming: {e}");
            },
        )
        .map_err(|e| match e {
            crate::fetch::FetchError::Mismatch { .. } => ReleaseError::Corrupt {
                name: release.manifest.executable.clone(),
                reason: e.to_string(),
            },
            e => ReleaseError::Fetch(e.to_string()),
        })
}

#[cfg(test)]
mod tests;
