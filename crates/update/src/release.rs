//! Releases in a repository: each is a manifest target
//! `verdant-<version>-<arch>.json` (`{"version", "arch", "os",
//! "min_version", "executable"}`) and the executable target it names.
//! Which one a core takes, and why it refuses one.

use semver::Version;
use serde::Deserialize;

use crate::tuf::{TargetFile, Targets, TufError};

/// The largest manifest read.
pub const MAX_MANIFEST: u64 = 64 * 1024;

/// A release's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub arch: String,
    pub os: String,
    pub min_version: String,
    /// The executable's target name.
    pub executable: String,
}

/// Why a release is not taken; each is refused before anything changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the repository is not trusted: {0}")]
    Tuf(#[from] TufError),
    #[error("the repository has no release for {arch}")]
    NoRelease { arch: String },
    #[error("the repository has no release {version} for {arch}")]
    NoVersion { version: String, arch: String },
    #[error("`{0}` is not a version (MAJOR.MINOR.PATCH)")]
    BadVersion(String),
    #[error("{offered} is not newer than the running {running}: refused (--force takes it anyway)")]
    NotNewer { offered: String, running: String },
    #[error("{version} is built for {arch}-{os}; this core is {want_arch}-{want_os}")]
    WrongPlatform {
        version: String,
        arch: String,
        os: String,
        want_arch: &'static str,
        want_os: &'static str,
    },
    #[error("{version} updates cores from {min} on; this core runs {running}")]
    TooOld {
        version: String,
        min: String,
        running: String,
    },
    #[error("the manifest {name}: {reason}")]
    BadManifest { name: String, reason: String },
    #[error("{name}: {reason} (a corrupt or swapped file)")]
    Corrupt { name: String, reason: String },
    #[error("{0}")]
    Fetch(String),
}

fn version(s: &str) -> Result<Version, ReleaseError> {
    Version::parse(s).map_err(|_| ReleaseError::BadVersion(s.into()))
}

/// The manifest target of the release to take for `arch`: `want`, or the
/// newest there is.
pub fn choose(targets: &Targets, arch: &str, want: Option<&str>) -> Result<String, ReleaseError> {
    let suffix = format!("-{arch}.json");
    let mut found: Vec<(Version, &String)> = targets
        .targets
        .keys()
        .filter_map(|name| {
            let v = name.strip_prefix("verdant-")?.strip_suffix(&suffix)?;
            Some((Version::parse(v).ok()?, name))
        })
        .collect();
    found.sort();
    match want {
        Some(w) => {
            let w = version(w)?;
            found
                .into_iter()
                .find(|(v, _)| *v == w)
                .map(|(_, n)| n.clone())
                .ok_or_else(|| ReleaseError::NoVersion {
                    version: w.to_string(),
                    arch: arch.into(),
                })
        }
        // The newest release proper: a pre-release only when asked for.
        None => found
            .into_iter()
            .rfind(|(v, _)| v.pre.is_empty())
            .map(|(_, n)| n.clone())
            .ok_or_else(|| ReleaseError::NoRelease { arch: arch.into() }),
    }
}

/// Checks `bytes` against the target `name` describes (length, SHA-256).
pub fn check_target(name: &str, target: &TargetFile, bytes: &[u8]) -> Result<(), ReleaseError> {
    use sha2::Digest;
    let corrupt = |reason: String| ReleaseError::Corrupt {
        name: name.into(),
        reason,
    };
    if bytes.len() as u64 != target.length {
        return Err(corrupt(format!(
            "{} bytes where the targets metadata says {}",
            bytes.len(),
            target.length
        )));
    }
    let got = hex::encode(sha2::Sha256::digest(bytes));
    match target.sha256() {
        Some(want) if want == got => Ok(()),
        Some(want) => Err(corrupt(format!(
            "SHA-256 {got} where the targets metadata says {want}"
        ))),
        None => Err(corrupt("the targets metadata gives no SHA-256".into())),
    }
}

/// Checks the file at `path` against the target `name` describes
/// (length, SHA-256), reading it once.
pub fn check_file(
    name: &str,
    target: &TargetFile,
    path: &std::path::Path,
) -> Result<(), ReleaseError> {
    use sha2::Digest;
    let corrupt = |reason: String| ReleaseError::Corrupt {
        name: name.into(),
        reason,
    };
    let mut file =
        std::fs::File::open(path).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
    let mut hasher = sha2::Sha256::new();
    let len = std::io::copy(&mut file, &mut hasher)
        .map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
    if len != target.length {
        return Err(corrupt(format!(
            "{len} bytes where the targets metadata says {}",
            target.length
        )));
    }
    let got = hex::encode(hasher.finalize());
    match target.sha256() {
        Some(want) if want == got => Ok(()),
        Some(want) => Err(corrupt(format!(
            "SHA-256 {got} where the targets metadata says {want}"
        ))),
        None => Err(corrupt("the targets metadata gives no SHA-256".into())),
    }
}

/// The manifest in `bytes` (target `name`), checked against this core:
/// its platform, the version it runs (`force` takes an older or the same
/// one) and the oldest it updates from.
pub fn check_manifest(
    name: &str,
    bytes: &[u8],
    running: &str,
    force: bool,
) -> Result<Manifest, ReleaseError> {
    let bad = |reason: String| ReleaseError::BadManifest {
        name: name.into(),
        reason,
    };
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if name != format!("verdant-{}-{}.json", m.version, m.arch) {
        return Err(bad(format!(
            "it says version {} for {}, not what its name says",
            m.version, m.arch
        )));
    }
    let offered = version(&m.version)?;
    let min = version(&m.min_version)?;
    let current = version(running)?;
    if m.arch != std::env::consts::ARCH || m.os != std::env::consts::OS {
        return Err(ReleaseError::WrongPlatform {
            version: m.version,
            arch: m.arch,
            os: m.os,
            want_arch: std::env::consts::ARCH,
            want_os: std::env::consts::OS,
        });
    }
    if offered <= current && !force {
        return Err(ReleaseError::NotNewer {
            offered: m.version,
            running: running.into(),
        });
    }
    if current < min {
        return Err(ReleaseError::TooOld {
            version: m.version,
            min: m.min_version,
            running: running.into(),
        });
    }
    Ok(m)
}
