//! The files of deployments: `deployments/<id>/group.json` written and
//! synced, `deployments/current` switched by one rename, old directories
//! pruned.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The deployments directory of a core.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
}

/// A file operation that failed, with its path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct StageError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), StageError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(at(dir))
}

impl Staging {
    pub fn new(dir: PathBuf) -> Self {
        Staging { dir }
    }

    /// `deployments/<id>/`.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The deployment `current` links to, if any.
    pub fn current(&self) -> Option<String> {
        let link = std::fs::read_link(self.dir.join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// The group file of the deployment `current` links to.
    pub fn current_group(&self) -> PathBuf {
        self.dir.join("current").join("group.json")
    }

    /// Writes `deployments/<id>/group.json` and syncs it and its directory.
    pub fn write(&self, id: &str, group_json: &[u8]) -> Result<PathBuf, StageError> {
        let dir = self.dir_of(id);
        std::fs::create_dir_all(&dir).map_err(at(&dir))?;
        let tmp = dir.join("group.json.tmp");
        let file = dir.join("group.json");
        // Not for functions' users: URLs in it may carry credentials.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(at(&tmp))?;
        f.write_all(group_json).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
        std::fs::rename(&tmp, &file).map_err(at(&file))?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(file)
    }

    /// Points `current` at `deployments/<id>` with one rename, so a reader
    /// (or a crash) sees the old link or the new one, never none.
    pub fn switch(&self, id: &str) -> Result<(), StageError> {
        let tmp = self.dir.join(format!(".current.{id}"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(id, &tmp).map_err(at(&tmp))?;
        let current = self.dir.join("current");
        std::fs::rename(&tmp, &current).map_err(at(&current))?;
        sync_dir(&self.dir)
    }

    /// Removes the directories of `ids` (deployments that ended and are no
    /// longer wanted for a rollback); `current` and what it links to never.
    pub fn prune(&self, ids: &[String]) {
        let current = self.current();
        for id in ids {
            if current.as_deref() == Some(id.as_str()) || id.is_empty() || id.contains('/') {
                continue;
            }
            let dir = self.dir_of(id);
            if dir.is_dir()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!("cannot prune {}: {e}", dir.display());
            }
        }
    }

    /// Removes what a deployment staged that never became current.
    pub fn discard(&self, id: &str) {
        self.prune(&[id.to_string()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_switch_and_prune() {
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::new(root.path().to_path_buf());
        assert_eq!(staging.current(), None);
        staging.write("a", b"{\"Id\":\"a\"}").unwrap();
        staging.switch("a").unwrap();
        assert_eq!(staging.current().as_deref(), Some("a"));
        staging.write("b", b"{\"Id\":\"b\"}").unwrap();
        staging.switch("b").unwrap();
        assert_eq!(staging.current().as_deref(), Some("b"));
        assert_eq!(
            std::fs::read(staging.current_group()).unwrap(),
            b"{\"Id\":\"b\"}"
        );
        // The link is relative: the tree can move.
        assert_eq!(
            std::fs::read_link(root.path().join("current")).unwrap(),
            Path::new("b")
        );
        staging.prune(&["a".into(), "b".into()]);
        assert!(!staging.dir_of("a").exists());
        assert!(staging.dir_of("b").exists(), "current is never pruned");
        // No temporary links left behind.
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".current")),
            "{names:?}"
        );
    }
}
