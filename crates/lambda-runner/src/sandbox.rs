//! `verdant-lambda-sandbox`: starts one `GreengrassContainer` instance. The
//! lambda-runner runs it (as root) with a `Plan`; it joins the instance's
//! cgroups, unshares mount, PID, IPC and UTS namespaces, forks the
//! namespace's first process, which builds a minimal root (read-only
//! system directories, the function's code at `/lambda`, the runtimes at
//! `/runtime`, a private `/tmp`, its own `/proc` and a few devices),
//! pivots into it, drops to the function's user with every capability
//! gone and `no_new_privs`, and execs the runtime. The sandbox process
//! waits and exits as the instance did.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};
use serde::{Deserialize, Serialize};

use crate::resources::Mount;

/// What the sandbox sets up, passed as JSON in its one argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// An empty directory the new root is mounted on (in the new mount
    /// namespace, so one directory serves every instance).
    pub mount_point: PathBuf,
    /// Mounted read-only at `/lambda`.
    pub function_dir: PathBuf,
    /// Mounted read-only at `/runtime`.
    pub runtimes: PathBuf,
    /// System directories bound read-only at the same place (symlinks,
    /// as `/bin` on merged-/usr systems, are recreated as symlinks).
    pub system: Vec<PathBuf>,
    /// Bytes of the private `/tmp`.
    pub tmp_bytes: u64,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// `cgroup.procs` files to join first.
    pub cgroup_procs: Vec<PathBuf>,
    /// Granted local resources.
    pub mounts: Vec<Mount>,
    /// `/sys`, read-only.
    pub sysfs: bool,
    /// Supplementary groups (the granted resources' owners).
    pub groups: Vec<u32>,
    /// The command, as seen inside (`argv[0]` a path inside).
    pub argv: Vec<String>,
}

/// The program name the lambda-runner runs this as (`argv[0]`).
pub const PROGRAM: &str = "verdant-lambda-sandbox";

/// The sandbox's `main`: `verdant-lambda-sandbox '<plan json>'`.
pub fn main(args: &[std::ffi::OsString]) -> ExitCode {
    let plan: Plan = match args
        .get(1)
        .and_then(|a| a.to_str())
        .map(serde_json::from_str)
    {
        Some(Ok(p)) => p,
        Some(Err(e)) => return fail(&format!("bad plan: {e}")),
        None => return fail("usage: verdant-lambda-sandbox '<plan json>'"),
    };
    match run(&plan) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("verdant-lambda-sandbox: {message}");
    ExitCode::from(125)
}

fn run(plan: &Plan) -> Result<ExitCode, String> {
    let pid = std::process::id().to_string();
    for procs in &plan.cgroup_procs {
        std::fs::write(procs, &pid).map_err(|e| format!("join {}: {e}", procs.display()))?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(|e| format!("unshare: {e}"))?;
    // SAFETY: this process is single-threaded here (no runtime started);
    // the child only makes system calls and execs.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let e = inside(plan);
            eprintln!("verdant-lambda-sandbox: {e}");
            std::process::exit(126);
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(ExitCode::from(code as u8)),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    return Ok(ExitCode::from(128 + signal as u8));
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("wait: {e}")),
            }
        },
    }
}

/// In the new namespaces, as their first process: returns only on failure.
fn inside(plan: &Plan) -> String {
    match build_root(plan).and_then(|()| drop_privileges(plan)) {
        Ok(()) => exec(&plan.argv),
        Err(e) => e,
    }
}

fn bind(from: &Path, to: &Path, read_only: bool) -> Result<(), String> {
    let err =
        |what: &str, e: nix::Error| format!("{what} {} on {}: {e}", from.display(), to.display());
    mount(
        Some(from),
        to,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("bind", e))?;
    if read_only {
        mount(
            None::<&str>,
            to,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err("read-only", e))?;
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))
}

fn build_root(plan: &Plan) -> Result<(), String> {
    let root = &plan.mount_point;
    // Nothing mounted here reaches the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .map_err(|e| format!("mount the new root: {e}"))?;
    let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for dir in &plan.system {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if let Some(parent) = at(dir).parent() {
                mkdir(parent)?;
            }
            std::os::unix::fs::symlink(&target, at(dir))
                .map_err(|e| format!("symlink {}: {e}", dir.display()))?;
        } else if meta.is_dir() {
            mkdir(&at(dir))?;
            bind(dir, &at(dir), true)?;
        }
    }
    for (from, to) in [
        (&plan.function_dir, Path::new("/lambda")),
        (&plan.runtimes, Path::new("/runtime")),
    ] {
        mkdir(&at(to))?;
        bind(from, &at(to), true)?;
    }
    let tmp = at(Path::new("/tmp"));
    mkdir(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={}", plan.tmp_bytes).as_str()),
    )
    .map_err(|e| format!("mount /tmp: {e}"))?;
    let proc = at(Path::new("/proc"));
    mkdir(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mount /proc: {e}"))?;
    let dev = at(Path::new("/dev"));
    mkdir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| format!("mount /dev: {e}"))?;
    for name in ["null", "zero", "random", "urandom"] {
        let node = dev.join(name);
        std::fs::File::create(&node).map_err(|e| format!("{}: {e}", node.display()))?;
        bind(&Path::new("/dev").join(name), &node, false)?;
    }
    grant(plan, &at)?;
    // Into the new root; the old one goes.
    let old = root.join(".old");
    mkdir(&old)?;
    nix::unistd::pivot_root(root, &old).map_err(|e| format!("pivot_root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    std::fs::remove_dir("/.old").map_err(|e| format!("remove /.old: {e}"))?;
    // The root is read-only too once everything is in place.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("read-only /: {e}"))?;
    nix::unistd::sethostname(&plan.hostname).map_err(|e| format!("hostname: {e}"))?;
    std::env::set_current_dir("/lambda").map_err(|e| format!("chdir /lambda: {e}"))
}

/// Binds `/sys` (if asked) and the granted resources into the new root.
fn grant(plan: &Plan, at: &impl Fn(&Path) -> PathBuf) -> Result<(), String> {
    if plan.sysfs {
        let sys = at(Path::new("/sys"));
        mkdir(&sys)?;
        bind(Path::new("/sys"), &sys, true)?;
    }
    for m in &plan.mounts {
        let target = at(&m.destination);
        if m.device {
            if let Some(parent) = target.parent() {
                mkdir(parent)?;
            }
            std::fs::File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        } else {
            mkdir(&target)?;
        }
        bind(&m.source, &target, !m.writable)?;
    }
    Ok(())
}

fn drop_privileges(plan: &Plan) -> Result<(), String> {
    // Every capability out of the bounding set, so none can come back.
    verdant_common::privileges::clear_bounding().map_err(|e| e.to_string())?;
    let groups: Vec<Gid> = plan.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(plan.gid)).map_err(|e| format!("setgid: {e}"))?;
    // From root to another uid: permitted and effective sets are cleared.
    nix::unistd::setuid(Uid::from_raw(plan.uid)).map_err(|e| format!("setuid: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    // Killed with the sandbox process (the user change above cleared what
    // it inherited), which is killed with the lambda-runner.
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(format!(
            "parent-death signal: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn exec(command: &[String]) -> String {
    let c_strings: Result<Vec<CString>, _> =
        command.iter().map(|a| CString::new(a.as_str())).collect();
    let Ok(c_strings) = c_strings else {
        return "a NUL in the command".into();
    };
    let Some(program) = c_strings.first() else {
        return "no command".into();
    };
    match nix::unistd::execv(program, &c_strings) {
        Ok(never) => match never {},
        Err(e) => format!("exec {}: {e}", command[0]),
    }
}
