//! Memory and pids limits for function instances, through cgroups v1 or
//! v2 behind one interface: a `Hierarchy` (where the lambda-runner may make
//! cgroups) makes a `Cgroup` per instance with its limits written, whose
//! `cgroup.procs` files the instance's first process joins.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the lambda-runner makes its cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One directory per controller (this machine's kind); the devices
    /// controller, where mounted, limits device files to those granted.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        devices: Option<PathBuf>,
    },
    /// The unified hierarchy: one directory, whose `cgroup.subtree_control`
    /// must enable `memory` and `pids` for the cgroups under it.
    V2 { dir: PathBuf },
}

/// What an instance may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// Device files it may open beyond `/dev/null`, `zero`, `random` and
    /// `urandom`, as the devices controller writes them (`c 1:7 r`).
    pub devices: Vec<String>,
}

/// The devices every instance has (null, zero, random, urandom).
const BASE_DEVICES: [&str; 4] = ["c 1:3 rwm", "c 1:5 rwm", "c 1:8 rwm", "c 1:9 rwm"];

/// The devices-controller rule for the device file `path`: `r` or `rw`.
pub fn device_rule(path: &std::path::Path, writable: bool) -> io::Result<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)?;
    let kind = if meta.file_type().is_block_device() {
        'b'
    } else if meta.file_type().is_char_device() {
        'c'
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a device", path.display()),
        ));
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Ok(format!(
        "{kind} {major}:{minor} {}",
        if writable { "rw" } else { "r" }
    ))
}

/// One instance's cgroup (a directory per v1 controller, one in v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub dirs: Vec<PathBuf>,
    /// The directory with the memory controller's files.
    memory: PathBuf,
    /// In the unified hierarchy (v2), else v1.
    unified: bool,
}

/// How long a cgroup's removal waits for its last processes to be gone
/// (a killed instance's processes take a moment to exit) ...
const REMOVE_PATIENCE: Duration = Duration::from_secs(30);
/// ... looking again after this, doubling up to `REMOVE_MAX_WAIT`.
const REMOVE_FIRST_WAIT: Duration = Duration::from_millis(10);
const REMOVE_MAX_WAIT: Duration = Duration::from_secs(1);

/// The number after `key` on its line of a `key value` file
/// (`memory.events`, `memory.oom_control`, `cgroup.events`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Whether a failed removal means the cgroup is still in use (processes
/// in it, or being torn down), so that trying again later may work.
fn busy(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY | libc::ENOTEMPTY | libc::EAGAIN)
    )
}

impl Cgroup {
    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many processes the kernel killed in it for going past its
    /// memory limit: `oom_kill` of `memory.events` (v2) or of
    /// `memory.oom_control` (v1, kernels since 4.13); 0 where the kernel
    /// does not say.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|text| field(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// v2: processes are still in it (`populated 1` in `cgroup.events`).
    /// v1 says nothing as cheaply: false, and removal just tries.
    fn populated(&self) -> bool {
        self.unified
            && std::fs::read_to_string(self.memory.join("cgroup.events"))
                .ok()
                .and_then(|text| field(&text, "populated"))
                .is_some_and(|n| n > 0)
    }

    /// Removes the cgroup once its processes are gone: tried at once, then
    /// again with a growing wait (v2: once `cgroup.events` says it is no
    /// longer populated) for up to `REMOVE_PATIENCE`, then given up with a
    /// warning (the next start of the lambda-runner sweeps it).
    pub async fn remove(&self) {
        let deadline = tokio::time::Instant::now() + REMOVE_PATIENCE;
        let mut wait = REMOVE_FIRST_WAIT;
        let mut left: Vec<&PathBuf> = self.dirs.iter().collect();
        loop {
            let mut last = None;
            if !self.populated() {
                left.retain(|d| match std::fs::remove_dir(d) {
                    Ok(()) => false,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) if busy(&e) => {
                        last = Some(e);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(cgroup = %d.display(), "cannot remove: {e}");
                        false
                    }
                });
            }
            if left.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                for d in left {
                    tracing::warn!(
                        cgroup = %d.display(),
                        "still in use {REMOVE_PATIENCE:?} after its instance ended; left for the next start to remove{}",
                        last.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    );
                }
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(REMOVE_MAX_WAIT);
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
        let mut devices = None;
        let mut unified = None;
        for line in self_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            for c in controllers.split(',') {
                match c {
                    "memory" => memory = Some(cgroup_fs.join("memory").join(path).join(name)),
                    "pids" => pids = Some(cgroup_fs.join("pids").join(path).join(name)),
                    "devices" => devices = Some(cgroup_fs.join("devices").join(path).join(name)),
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
                let devices = devices.filter(|d| d.parent().is_some_and(Path::is_dir));
                Some(Hierarchy::V1 {
                    memory,
                    pids,
                    devices,
                })
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
            Hierarchy::V1 {
                memory,
                pids,
                devices,
            } => [Some(memory), Some(pids), devices.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
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
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<Cgroup> {
        match self {
            Hierarchy::V1 {
                memory,
                pids,
                devices,
            } => {
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
                let mut dirs = vec![m.clone(), p];
                if let Some(devices) = devices {
                    let d = devices.join(name);
                    std::fs::create_dir_all(&d)?;
                    write(&d.join("devices.deny"), "a")?;
                    for rule in BASE_DEVICES
                        .iter()
                        .copied()
                        .chain(limits.devices.iter().map(String::as_str))
                    {
                        write(&d.join("devices.allow"), rule)?;
                    }
                    dirs.push(d);
                }
                Ok(Cgroup {
                    dirs,
                    memory: m,
                    unified: false,
                })
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
                Ok(Cgroup {
                    dirs: vec![c.clone()],
                    memory: c,
                    unified: true,
                })
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
                devices: None,
            }
        );
        let limits = Limits {
            memory_bytes: 16 << 20,
            pids: 64,
            devices: vec![device_rule(Path::new("/dev/full"), false).unwrap()],
        };
        assert_eq!(limits.devices, ["c 1:7 r"]);
        let cg = h.create("fn-1", &limits).unwrap();
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
                &Limits {
                    memory_bytes: 32 << 20,
                    pids: 10,
                    devices: Vec::new(),
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

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let fs = tempfile::tempdir().unwrap();
        let v1 = Cgroup {
            dirs: vec![fs.path().to_path_buf()],
            memory: fs.path().to_path_buf(),
            unified: false,
        };
        assert_eq!(v1.oom_kills(), 0, "no file: nothing known");
        std::fs::write(
            fs.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(v1.oom_kills(), 2);
        std::fs::write(
            fs.path().join("memory.events"),
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        let v2 = Cgroup {
            unified: true,
            ..v1
        };
        assert_eq!(v2.oom_kills(), 1);
        assert_eq!(field("oom_kill_disable 1\n", "oom_kill"), None);
    }

    #[tokio::test]
    async fn removal_waits_until_the_cgroup_is_no_longer_in_use() {
        let fs = tempfile::tempdir().unwrap();
        let dir = fs.path().join("fn-3");
        std::fs::create_dir(&dir).unwrap();
        // A file in it stands for the processes still leaving (the
        // removal meets ENOTEMPTY as it would EBUSY).
        std::fs::write(dir.join("x"), "").unwrap();
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let cg = Cgroup {
            dirs: vec![dir.clone()],
            memory: dir.clone(),
            unified: true,
        };
        let emptied = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::remove_file(emptied.join("x")).unwrap();
            std::fs::write(emptied.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            std::fs::remove_file(emptied.join("cgroup.events")).unwrap();
        });
        cg.remove().await;
        assert!(!dir.exists());
    }

    /// The cgroups a test may make beside its own, on this machine (root
    /// only): v2 (the unified hierarchy, alone or beside v1) and v1 pids.
    fn real_parents() -> Vec<(PathBuf, bool)> {
        if !nix::unistd::geteuid().is_root() {
            return Vec::new();
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut found = Vec::new();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            let root = match controllers {
                "" => ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                    .iter()
                    .map(Path::new)
                    .find(|r| r.join("cgroup.controllers").is_file()),
                "pids" => Some(Path::new("/sys/fs/cgroup/pids")),
                _ => None,
            };
            if let Some(root) = root {
                found.push((root.join(path), controllers.is_empty()));
            }
        }
        found
    }

    #[tokio::test]
    async fn a_real_cgroup_is_removed_once_its_last_process_is_gone() {
        for (parent, unified) in real_parents() {
            let dir = parent.join(format!("verdant-test-{}", std::process::id()));
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let mut sleeper = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
            let cg = Cgroup {
                dirs: vec![dir.clone()],
                memory: dir.clone(),
                unified,
            };
            let removal = tokio::spawn(async move { cg.remove().await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                dir.exists(),
                "{} removed with a process in it",
                dir.display()
            );
            sleeper.kill().unwrap();
            sleeper.wait().unwrap();
            removal.await.unwrap();
            assert!(!dir.exists(), "{} left", dir.display());
        }
    }
}
