//! Certificates revoked on a core: the broker refuses them and closes
//! their connections, and the discovery API answers them 401, whatever
//! the deployed group says. Kept as JSON beside the core's certificates
//! (`config/certs/revoked.json`, 0644), written by `verdantctl device
//! revoke` and read by the daemons when it changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Revocation {
    /// SHA-256 of the certificate's DER, hex (AWS IoT's certificate id).
    pub certificate_id: String,
    /// The thing it was the certificate of, when known.
    #[serde(default)]
    pub thing_name: String,
    /// Seconds since the epoch.
    #[serde(default)]
    pub revoked_at: i64,
}

/// Every revoked certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Revocations {
    #[serde(default)]
    pub revoked: Vec<Revocation>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a revocation list: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Revocations {
    /// The list in `path`; none when the file does not exist.
    pub fn load(path: &Path) -> Result<Self, RevocationsError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RevocationsError::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revocations::default()),
            Err(source) => Err(RevocationsError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The revoked certificate ids, lowercase.
    pub fn ids(&self) -> HashSet<String> {
        self.revoked
            .iter()
            .map(|r| r.certificate_id.to_ascii_lowercase())
            .collect()
    }

    /// Whether `certificate_id` is revoked.
    pub fn contains(&self, certificate_id: &str) -> bool {
        self.revoked
            .iter()
            .any(|r| r.certificate_id.eq_ignore_ascii_case(certificate_id))
    }

    /// The list as its file holds it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialisable") + "\n"
    }
}

/// The ids revoked in the list at `path` (none without the file).
pub fn ids_in(path: &Path) -> Result<HashSet<String>, RevocationsError> {
    Revocations::load(path).map(|r| r.ids())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_list_is_empty_and_a_saved_one_reads_back() {
        let dir = std::env::temp_dir().join(format!("verdant-revoked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("revoked.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(Revocations::load(&path).unwrap(), Revocations::default());
        let list = Revocations {
            revoked: vec![Revocation {
                certificate_id: "AB".repeat(32),
                thing_name: "dev".into(),
                revoked_at: 1,
            }],
        };
        std::fs::write(&path, list.to_json()).unwrap();
        let back = Revocations::load(&path).unwrap();
        assert_eq!(back, list);
        assert!(back.contains(&"ab".repeat(32)));
        assert!(back.ids().contains(&"ab".repeat(32)));
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            Revocations::load(&path),
            Err(RevocationsError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
