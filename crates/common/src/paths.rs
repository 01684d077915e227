//! The directory layout of a core (docs/architecture.md, "Files on a core").
//!
//! ```text
//! <root>/config/verdant.toml        core configuration
//! <root>/config/config.d/*.toml     drop-ins, applied in name order
//! <root>/config/certs/              group CA, core and device certificates
//! <root>/deployments/<id>/          deployed groups; `current` links to one
//! <root>/data/<service>/            databases and queues, one dir per service
//! <root>/functions/<name>/<version> function artifacts
//! <root>/logs/                      captured service logs
//! <runtime>/<service>.sock          gRPC sockets (default <root>/run)
//! ```

use std::path::{Path, PathBuf};

/// Environment variable naming the root directory.
pub const ROOT_ENV: &str = "VERDANT_ROOT";
/// Where the root of the trusted release repository is, under the root.
pub const UPDATE_ROOT: &str = "config/update-root.json";
/// Environment variable naming the runtime (socket) directory.
pub const RUNTIME_DIR_ENV: &str = "VERDANT_RUNTIME_DIR";
/// Environment variable naming the exact socket a daemon serves on.
pub const SOCKET_ENV: &str = "VERDANT_SOCKET";
/// The root used when neither `--root` nor `VERDANT_ROOT` is given: a
/// development core in the current directory, runnable without root.
pub const DEFAULT_ROOT: &str = "./var";
/// The supervisor's name; its socket is `<runtime>/init.sock`.
pub const INIT_SERVICE: &str = "init";

/// A daemon's data directory could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {}: {source}", path.display())]
pub struct DataDirError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Where every file of one core lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
    runtime_dir: PathBuf,
}

impl Layout {
    /// A layout for `root`; the runtime dir is `runtime_dir` when given,
    /// else `<root>/run`. Relative paths are made absolute, because
    /// sockets are dialled as `unix:///abs/path`.
    pub fn new(root: &Path, runtime_dir: Option<&Path>) -> std::io::Result<Self> {
        let root = std::path::absolute(root)?;
        let runtime_dir = match runtime_dir {
            Some(dir) => std::path::absolute(dir)?,
            None => root.join("run"),
        };
        Ok(Layout { root, runtime_dir })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// A path from the config: relative ones are under the root.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("verdant.toml")
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.config_dir().join("certs")
    }
    /// The root of the release repository the core trusts (its first
    /// `1.root.json`, installed by the operator).
    pub fn update_root(&self) -> PathBuf {
        self.root.join(UPDATE_ROOT)
    }
    /// The certificates revoked on this core (`verdantctl device revoke`).
    pub fn revocations(&self) -> PathBuf {
        self.certs_dir().join("revoked.json")
    }
    pub fn deployments_dir(&self) -> PathBuf {
        self.root.join("deployments")
    }
    /// The deployed group definition (`deployments/current/group.json`).
    pub fn current_group(&self) -> PathBuf {
        self.deployments_dir().join("current").join("group.json")
    }
    /// The id of the deployment `deployments/current` links to, if any.
    pub fn current_deployment(&self) -> Option<String> {
        deployment_of(&self.current_group())
    }
    pub fn data_dir(&self, service: &str) -> PathBuf {
        self.root.join("data").join(service)
    }
    /// [`Layout::data_dir`] of `service`, created with its parents.
    pub fn create_data_dir(&self, service: &str) -> Result<PathBuf, DataDirError> {
        let path = self.data_dir(service);
        match std::fs::create_dir_all(&path) {
            Ok(()) => Ok(path),
            Err(source) => Err(DataDirError { path, source }),
        }
    }
    pub fn functions_dir(&self) -> PathBuf {
        self.root.join("functions")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The gRPC socket of `service` (`init` for the supervisor).
    pub fn socket(&self, service: &str) -> PathBuf {
        self.runtime_dir.join(format!("{service}.sock"))
    }
}

/// The deployment a group file was read through: the directory the
/// `current` link of `.../current/group.json` names, if it is a link.
pub fn deployment_of(group_file: &Path) -> Option<String> {
    let link = std::fs::read_link(group_file.parent()?).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_created_or_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None).unwrap();
        let made = layout.create_data_dir("shadow").unwrap();
        assert_eq!(made, dir.path().join("data/shadow"));
        assert!(made.is_dir());
        // A file where the directory should be.
        std::fs::write(dir.path().join("data/router"), "").unwrap();
        let err = layout.create_data_dir("router").unwrap_err();
        assert_eq!(err.path, dir.path().join("data/router"));
        assert!(
            err.to_string()
                .starts_with(&format!("cannot use {}: ", err.path.display())),
            "{err}"
        );
    }
}
