//! Memory and pids limits for function instances, through cgroups v1 or
//! v2 behind one interface: a `Hierarchy` (where the lambda-runner may make
//! cgroups) makes a `Cgroup` per instance with its limits written, whose
//! `cgroup.procs` files the instance's first process joins.

use std::io;
use std::path::{Path, PathBuf};

/// Where the lambda-runner makes its cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One directory per controller (this machine's kind).
    V1 { memory: PathBuf, pids: PathBuf },
    /// The unified hierarchy: one directory, whose `cgroup.subtree_control`
    /// must enable `memory` and `pids` for the cgroups under it.
    V2 { dir: PathBuf },
}

/// What an instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
}

/// One instance's cgroup (a directory per v1 controller, one in v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Removes the cgroup (once its processes are gone).
    pub fn remove(&self) {
        for d in &self.dirs {
            if let Err(e) = std::fs::remove_dir(d)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(cgroup = %d.display(), "cannot remove: {e}");
            }
        }
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Hierarchy {
    /// The hierarchy under this process's own cgroups: `cgroup_fs` is where
    /// cgroup file systems are mounted (`/sys/fs/cgroup`), `self_cgroup`
    /// the text of `/proc/self/cgroup`. v1 if it has memory and pids
    /// controllers, else v2; `None` if neither is usable.
    pub fn detect(cgroup_fs: &Path, self_cgroup: &str, name: &str) -> Option<Hierarchy> {
        let mut memory = None;
        let mut pids = None;
        let mut unified = None;
        for line in self_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            for c in controllers.split(',') {
                match c {
                    "memory" => memory = Some(cgroup_fs.join("memory").join(path).join(name)),
                    "pids" => pids = Some(cgroup_fs.join("pids").join(path).join(name)),
                    "" => unified = Some(cgroup_fs.join(path).join(name)),
                    _ => {}
                }
            }
        }
        match (memory, pids, unified) {
            (Some(memory), Some(pids), _)
                if memory.parent().is_some_and(Path::is_dir)
                    && pids.parent().is_some_and(Path::is_dir) =>
            {
                Some(Hierarchy::V1 { memory, pids })
            }
            (_, _, Some(dir))
                if dir
                    .parent()
                    .is_some_and(|p| p.join("cgroup.controllers").is_file()) =>
            {
                Some(Hierarchy::V2 { dir })
            }
            _ => None,
        }
    }

    /// Removes cgroups left by lambda-runners that are gone (named
    /// `<function>-<pid>-<instance>`: the pid is no longer alive); those
    /// of running ones, and any still in use, stay.
    pub fn sweep(&self) {
        let bases = match self {
            Hierarchy::V1 { memory, pids } => vec![memory, pids],
            Hierarchy::V2 { dir } => vec![dir],
        };
        for base in bases {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name.rsplit('-').nth(1).and_then(|p| p.parse::<i32>().ok());
                let alive = owner.is_some_and(|pid| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                });
                if owner.is_some() && !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
                    // Fails (EBUSY) while processes are in it.
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }

    /// Makes the cgroup `name` with `limits` written.
    pub fn create(&self, name: &str, limits: Limits) -> io::Result<Cgroup> {
        match self {
            Hierarchy::V1 { memory, pids } => {
                let m = memory.join(name);
                let p = pids.join(name);
                std::fs::create_dir_all(&m)?;
                std::fs::create_dir_all(&p)?;
                write(
                    &m.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                // Swap counts too where the kernel accounts it.
                let memsw = m.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(&p.join("pids.max"), &limits.pids.to_string())?;
                Ok(Cgroup { dirs: vec![m, p] })
            }
            Hierarchy::V2 { dir } => {
                std::fs::create_dir_all(dir)?;
                // Controllers must be enabled from the parent down.
                let enabled =
                    std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
                if !(enabled.contains("memory") && enabled.contains("pids")) {
                    write(&dir.join("cgroup.subtree_control"), "+memory +pids")?;
                }
                let c = dir.join(name);
                std::fs::create_dir_all(&c)?;
                write(&c.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = c.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&c.join("pids.max"), &limits.pids.to_string())?;
                Ok(Cgroup { dirs: vec![c] })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_per_controller_under_our_own_cgroups() {
        let fs = tempfile::tempdir().unwrap();
        for c in ["memory/svc", "pids"] {
            std::fs::create_dir_all(fs.path().join(c)).unwrap();
        }
        let text = "12:pids:/\n4:memory:/svc\n1:name=systemd:/\n0::/\n";
        let h = Hierarchy::detect(fs.path(), text, "verdant").unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: fs.path().join("memory/svc/verdant"),
                pids: fs.path().join("pids/verdant"),
            }
        );
        let limits = Limits {
            memory_bytes: 16 << 20,
            pids: 64,
        };
        let cg = h.create("fn-1", limits).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(
                fs.path()
                    .join("memory/svc/verdant/fn-1/memory.limit_in_bytes")
            ),
            "16777216"
        );
        assert_eq!(read(fs.path().join("pids/verdant/fn-1/pids.max")), "64");
        assert_eq!(
            cg.procs(),
            [
                fs.path().join("memory/svc/verdant/fn-1/cgroup.procs"),
                fs.path().join("pids/verdant/fn-1/cgroup.procs"),
            ]
        );
    }

    #[test]
    fn v2_enables_controllers_then_writes_limits() {
        let fs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(fs.path().join("system.slice/verdant.service")).unwrap();
        std::fs::write(
            fs.path()
                .join("system.slice/verdant.service/cgroup.controllers"),
            "cpu memory pids",
        )
        .unwrap();
        let h = Hierarchy::detect(fs.path(), "0::/system.slice/verdant.service\n", "functions")
            .unwrap();
        let dir = fs.path().join("system.slice/verdant.service/functions");
        assert_eq!(h, Hierarchy::V2 { dir: dir.clone() });
        let cg = h
            .create(
                "fn-2",
                Limits {
                    memory_bytes: 32 << 20,
                    pids: 10,
                },
            )
            .unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(dir.join("cgroup.subtree_control")), "+memory +pids");
        assert_eq!(read(dir.join("fn-2/memory.max")), "33554432");
        assert_eq!(read(dir.join("fn-2/pids.max")), "10");
        assert_eq!(cg.procs(), [dir.join("fn-2/cgroup.procs")]);
        // Sweeping keeps cgroups of live owners.
        let live = dir.join(format!("f-{}-1", std::process::id()));
        let dead = dir.join("f-999999999-1");
        for d in [&live, &dead] {
            std::fs::create_dir_all(d).unwrap();
        }
        h.sweep();
        assert!(live.exists() && !dead.exists());
        // Neither: no hierarchy.
        assert_eq!(Hierarchy::detect(fs.path(), "0::/elsewhere\n", "x"), None);
    }
}
