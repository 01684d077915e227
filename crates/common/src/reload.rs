//! A value built from files and built again when they change: the TLS
//! server configuration of a listener whose certificate is rotated, or
//! whose trusted CAs change, while it keeps serving. Connections already
//! up keep the configuration they were accepted with; new ones get the
//! new one.
//!
//! Files are watched by their inode, length, modification and change
//! times (a `chmod` that makes a file readable counts), checked every
//! [`EVERY`]. A writer replaces a file by renaming a new one over it;
//! a pair written in two renames (a key, then its certificate) may be seen
//! half-way: a build that fails is tried again at the next change or
//! check, and only logged when the same files fail twice in a row.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::shutdown::CancellationToken;

/// How often the files are looked at.
pub const EVERY: Duration = Duration::from_millis(500);

type Build<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;
/// Each file's (inode, length, mtime and ctime in ns), `None` when it
/// cannot be read.
type Stamp = Vec<Option<(u64, u64, i128, i128)>>;

/// The current value built from `files`, rebuilt when they change.
pub struct Reloaded<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    build: Build<T>,
    current: RwLock<Arc<T>>,
    /// The stamp of the files the current value was built from, and of the
    /// last failed build if there was one since (with whether it was logged).
    seen: Mutex<(Stamp, Option<(Stamp, bool)>)>,
}

impl<T: Send + Sync + 'static> Reloaded<T> {
    /// Builds the first value (its error is the caller's to report).
    pub fn new<E: std::fmt::Display>(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, E> {
        let stamp = stamp(&files);
        let value = build()?;
        Ok(Arc::new(Reloaded {
            what,
            files,
            build: Box::new(move || build().map_err(|e| e.to_string())),
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new((stamp, None)),
        }))
    }

    /// As [`Reloaded::new`], but a first build that fails is logged, with
    /// `meaning` (what using `fallback` means), and `fallback` is used
    /// until the files change and build.
    pub fn new_or(
        what: &'static str,
        files: Vec<PathBuf>,
        (fallback, meaning): (T, &str),
        build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Arc<Self> {
        let stamp = stamp(&files);
        let (value, seen) = match build() {
            Ok(value) => (value, (stamp, None)),
            Err(e) => {
                tracing::error!("{what} cannot be read: {e}; until it is fixed, {meaning}");
                (fallback, (Vec::new(), Some((stamp, true))))
            }
        };
        Arc::new(Reloaded {
            what,
            files,
            build: Box::new(build),
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new(seen),
        })
    }

    /// The value as built from the files last seen whole.
    pub fn current(&self) -> Arc<T> {
        self.current.read().expect("reload lock").clone()
    }

    /// Builds the value again if the files changed; whether it did.
    pub fn check(&self) -> bool {
        let now = stamp(&self.files);
        let mut seen = self.seen.lock().expect("reload lock");
        if now == seen.0 || seen.1 == Some((now.clone(), true)) {
            return false;
        }
        match (self.build)() {
            Ok(value) => {
                *self.current.write().expect("reload lock") = Arc::new(value);
                *seen = (now, None);
                tracing::info!("{} reloaded from {}", self.what, self.names());
                true
            }
            Err(e) => {
                let again = seen.1.as_ref().is_some_and(|(s, _)| *s == now);
                if again {
                    tracing::warn!(
                        "{} not reloaded, the previous one stays in use: {e}",
                        self.what
                    );
                }
                seen.1 = Some((now, again));
                false
            }
        }
    }

    /// Checks the files every [`EVERY`] until `shutdown`.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                this.check();
            }
        });
    }

    fn names(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| {
                (
                    m.ino(),
                    m.len(),
                    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_first_file_gives_the_fallback_until_it_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n");
        std::fs::write(&file, "x").unwrap();
        let path = file.clone();
        let r = Reloaded::new_or("number", vec![file.clone()], (7, "7 is used"), move || {
            std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())?
                .parse::<u32>()
                .map_err(|e| e.to_string())
        });
        assert_eq!(*r.current(), 7);
        assert!(!r.check(), "the same bad file is not read again");
        std::fs::write(&file, "8").unwrap();
        assert!(r.check());
        assert_eq!(*r.current(), 8);
    }

    #[test]
    fn rebuilds_on_a_change_and_keeps_the_last_good_value_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n");
        std::fs::write(&file, "1").unwrap();
        let path = file.clone();
        let r = Reloaded::new("number", vec![file.clone()], move || {
            std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())?
                .trim()
                .parse::<u32>()
                .map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(*r.current(), 1);
        assert!(!r.check(), "nothing changed");
        let new = dir.path().join("n.new");
        std::fs::write(&new, "22").unwrap();
        std::fs::rename(&new, &file).unwrap();
        assert!(r.check());
        assert_eq!(*r.current(), 22);
        std::fs::write(&new, "not a number").unwrap();
        std::fs::rename(&new, &file).unwrap();
        assert!(!r.check());
        assert!(!r.check(), "a failure is tried again, and fails again");
        assert_eq!(*r.current(), 22, "the last good value stays");
        std::fs::write(&new, "333").unwrap();
        std::fs::rename(&new, &file).unwrap();
        assert!(r.check());
        assert_eq!(*r.current(), 333);
    }
}
