//! Child processes: spawning each service in its own session with its
//! output on a pipe, reaping every child (and, as PID 1 or subreaper, every
//! orphan) from one SIGCHLD loop, signalling process groups, and pidfiles
//! so a restarted init can end what a killed one left running.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::sockets::{Held, Wanted};
use crate::zygote::{self, Entry, Zygote};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exited {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exited::Code(c) => write!(f, "exit code {c}"),
            Exited::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// Who is waiting for which pid. Spawning and reaping both hold this lock,
/// so a child that exits at once is never reaped before it is registered.
#[derive(Clone, Default)]
pub struct Reaper {
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<Exited>>>>,
}

/// A running service process.
#[derive(Debug)]
pub struct Child {
    pub pid: u32,
    /// Resolves once the reaper has collected the process.
    pub exited: oneshot::Receiver<Exited>,
    /// The read end of the process's stdout+stderr, until taken by a log pump.
    pub output: Option<OwnedFd>,
}

impl Reaper {
    /// Starts the SIGCHLD loop. Becomes a child subreaper so that orphans of
    /// the services (when not PID 1) are reparented here and reaped too.
    pub fn start() -> std::io::Result<Self> {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    fn reap(&self) {
        let mut waiting = self.waiting.lock().expect("reaper lock");
        loop {
            let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exited::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exited::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            match waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(how);
                }
                None => tracing::debug!(pid = pid.as_raw(), "reaped an orphan ({how})"),
            }
        }
    }

    /// Spawns `command` in a new session (so its whole process group can be
    /// signalled), stdin from /dev/null, stdout and stderr on one pipe.
    pub fn spawn(&self, mut command: Command) -> std::io::Result<Child> {
        let (read, write) = output_pipe()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write));
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut waiting = self.waiting.lock().expect("reaper lock");
        let child = command.spawn()?;
        drop(command); // closes our copies of the pipe's write end
        Ok(register(&mut waiting, child.id(), Some(read)))
    }

    /// Has `zygote` fork the daemon of `request`, set up as [`Reaper::spawn`]
    /// sets up a command. The daemon is adopted by init (see the zygote).
    pub fn spawn_forked(
        &self,
        zygote: &Zygote,
        request: &zygote::Request,
        listeners: &[std::os::fd::RawFd],
    ) -> std::io::Result<Child> {
        let (read, write) = output_pipe()?;
        // Held while the zygote answers, so the daemon cannot be reaped as
        // an orphan before it is registered.
        let mut waiting = self.waiting.lock().expect("reaper lock");
        let pid = zygote.spawn(request, &write, listeners)?;
        drop(write);
        Ok(register(&mut waiting, pid, Some(read)))
    }

    /// Waits for a child of init that was not spawned here (the zygote).
    pub fn watch(&self, pid: u32) -> Child {
        let mut waiting = self.waiting.lock().expect("reaper lock");
        register(&mut waiting, pid, None)
    }
}

/// A pipe for a service's stdout and stderr: (init's read end, the write end).
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Registers `pid` with the reaper (whose lock is `waiting`).
fn register(
    waiting: &mut HashMap<i32, oneshot::Sender<Exited>>,
    pid: u32,
    output: Option<OwnedFd>,
) -> Child {
    let (tx, rx) = oneshot::channel();
    waiting.insert(pid.cast_signed(), tx);
    Child {
        pid,
        exited: rx,
        output,
    }
}

/// Sends `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pid as i32), sig)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pid, "cannot send {sig}: {e}");
    }
}

/// The pidfile of a running service: its pid and start time, so a recycled
/// pid is never mistaken for it.
pub fn write_pidfile(path: &Path, pid: u32) -> std::io::Result<()> {
    let start = start_time(pid).unwrap_or(0);
    std::fs::write(path, format!("{pid} {start}\n"))
}

fn start_time(pid: u32) -> Option<u64> {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .ok()
        .map(|s| s.starttime)
}

/// Ends what pidfiles in `dir` name that is still running (left by an init
/// that was killed): SIGTERM to the group, then SIGKILL after `grace`.
/// Returns what was ended, as (pidfile name, pid).
pub fn end_leftovers(dir: &Path, grace: Duration) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ended = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "pid") {
            continue;
        }
        let recorded = std::fs::read_to_string(&path).ok().and_then(|t| {
            let mut it = t.split_whitespace();
            Some((
                it.next()?.parse::<u32>().ok()?,
                it.next()?.parse::<u64>().ok()?,
            ))
        });
        let _ = std::fs::remove_file(&path);
        let Some((pid, start)) = recorded else {
            continue;
        };
        if start_time(pid) != Some(start) {
            continue; // gone, or the pid now belongs to someone else
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::warn!(
            service = name,
            pid,
            "ending a process left by a previous verdant-init"
        );
        signal_group(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(pid) {
            signal_group(pid, Signal::SIGKILL);
            while alive(pid) && Instant::now() < deadline + Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        ended.push((name, pid));
    }
    ended
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z')
}

/// How init finds the programs of services named by a bare command.
#[derive(Debug, Clone, Default)]
pub struct Programs {
    /// The multicall executable and the names it answers to as `argv[0]`
    /// (`verdant-broker`, ...): those services run it, renamed.
    multicall: Option<(PathBuf, &'static [&'static str])>,
    /// How the multicall binary runs a program in this process, for a
    /// zygote to fork its daemons.
    entry: Option<Entry>,
    /// The zygote, once forked.
    zygote: Option<Arc<Zygote>>,
    /// The listening sockets init holds for a service.
    held: Option<Arc<Held>>,
}

/// A resolved program: what to execute and the `argv[0]` to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub arg0: Option<String>,
}

impl Programs {
    /// Services named in `names` run `exe` with that name as `argv[0]`.
    pub fn multicall(exe: PathBuf, names: &'static [&'static str]) -> Self {
        Programs {
            multicall: Some((exe, names)),
            ..Programs::default()
        }
    }

    /// `entry` runs a program of the multicall binary (by `argv[0]`) in
    /// this process: init then forks those services from a zygote.
    #[must_use]
    pub fn with_entry(mut self, entry: Entry) -> Self {
        self.entry = Some(entry);
        self
    }

    pub fn entry(&self) -> Option<Entry> {
        self.entry
    }

    #[must_use]
    pub fn with_zygote(mut self, zygote: Zygote) -> Self {
        self.zygote = Some(Arc::new(zygote));
        self
    }

    pub fn zygote(&self) -> Option<&Arc<Zygote>> {
        self.zygote.as_ref()
    }

    /// Init binds and holds the listening sockets `service` wants by
    /// `wanted`, and hands them to it at each start (see `sockets`).
    #[must_use]
    pub fn with_held_listeners(mut self, service: &'static str, wanted: Wanted) -> Self {
        self.held = Some(Arc::new(Held::new(service, wanted)));
        self
    }

    pub fn held(&self) -> Option<&Arc<Held>> {
        self.held.as_ref()
    }

    /// Finds a service's program: a path is taken as is; a name the
    /// multicall binary answers to runs it; any other bare name is looked up
    /// beside the running executable (a build tree or an install dir), then
    /// on PATH.
    pub fn resolve(&self, command: &str) -> Option<Program> {
        let plain = |path: PathBuf| Program { path, arg0: None };
        if command.contains('/') {
            let p = PathBuf::from(command);
            return p.is_file().then(|| plain(p));
        }
        if let Some((exe, names)) = &self.multicall
            && names.contains(&command)
        {
            return Some(Program {
                path: exe.clone(),
                arg0: Some(command.to_string()),
            });
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(command)));
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        beside
            .into_iter()
            .chain(path_dirs.into_iter().map(|d| d.join(command)))
            .find(|p| p.is_file())
            .map(plain)
    }
}
