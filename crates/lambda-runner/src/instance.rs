//! Function processes: started as the runner asks (as the function's
//! user, in a session of their own, with `no_new_privs`), stopped when
//! their invocation times out or they idle too long, and reported when
//! they end. A pinned function's next instance waits a backoff that grows
//! while it keeps failing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use verdant_common::shutdown::{CancellationToken, TaskTracker};

use crate::cgroup::{Cgroup, Hierarchy, Limits};
use crate::function::{Runtime, Spec};
use crate::sandbox::{self, Plan};
use crate::work::{Ended, FunctionId, InstanceId, Runner, Start};

/// What every instance is told about the core.
#[derive(Debug, Clone)]
pub struct Environment {
    pub ipc_port: u16,
    pub python: PathBuf,
    pub node: PathBuf,
    pub java: PathBuf,
    /// Where Verdant's runtime loops and modules are (`python/`, `nodejs/`).
    pub runtimes: PathBuf,
    /// This executable: `GreengrassContainer` instances start as its
    /// `verdant-lambda-sandbox`.
    pub exe: PathBuf,
    /// The empty directory sandboxes mount their root on.
    pub sandbox_dir: PathBuf,
    /// Where container instances' cgroups go (`None`: no containers).
    pub cgroups: Option<Hierarchy>,
    pub pids_limit: u64,
    pub tmp_bytes: u64,
    /// Each function's log.
    pub logs: crate::deploy::FunctionLogs,
    pub region: String,
    pub thing_name: String,
    pub thing_arn: String,
}

/// How often timeouts and idle instances are looked at.
const TICK: Duration = Duration::from_millis(100);
/// A pinned function's restarts wait this long first, doubling to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_mins(1);
/// A pinned instance that lived this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_mins(1);
/// At shutdown, how long killed instances get to be reaped and their
/// cgroups removed (what is left is swept at the next start).
const STOP_PATIENCE: Duration = Duration::from_secs(5);

pub struct Supervisor {
    pub runner: Arc<Mutex<Runner>>,
    pub env: Environment,
}

impl Supervisor {
    /// Starts what `starts` asks for and stops what the runner finds
    /// overdue, until `shutdown` (then every instance is killed).
    pub async fn run(
        self,
        mut starts: mpsc::UnboundedReceiver<Start>,
        shutdown: CancellationToken,
    ) {
        let mut kills: HashMap<(FunctionId, InstanceId), oneshot::Sender<()>> = HashMap::new();
        let (ended_tx, mut ends) = mpsc::unbounded_channel();
        let mut backoff: HashMap<FunctionId, Duration> = HashMap::new();
        // Instances, and after them the removal of their cgroups.
        let tasks = TaskTracker::new();
        // Only while instances run: an idle core is not woken ten times a
        // second for nothing.
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(Start { function: f, instance: i, token }) = starts.recv() => {
                    let launch = self.runner.lock().expect("runner lock").launch(f, i);
                    let Some(spec) = launch else {
                        // Stopped before it started (its function left the group).
                        let _ = ended_tx.send((f, i, Ended::Stopped, Duration::ZERO));
                        continue;
                    };
                    let delay = backoff.get(&f).copied().unwrap_or_default();
                    let (kill_tx, kill) = oneshot::channel();
                    kills.insert((f, i), kill_tx);
                    let env = self.env.clone();
                    let ended_tx = ended_tx.clone();
                    let runner = self.runner.clone();
                    tasks.spawn(async move {
                        tokio::time::sleep(delay).await;
                        let started = Instant::now();
                        let on_start = |pid| runner.lock().expect("runner lock").started(f, i, pid);
                        let (ended, cg) = supervise(&spec, &env, i, &token, on_start, kill).await;
                        let _ = ended_tx.send((f, i, ended, started.elapsed()));
                        // Off the hot path: the runner already knows the
                        // instance is gone; its cgroup goes once its last
                        // processes have.
                        if let Some(cg) = cg {
                            cg.remove().await;
                        }
                    });
                }
                Some((f, i, ended, lived)) = ends.recv() => {
                    kills.remove(&(f, i));
                    let mut runner = self.runner.lock().expect("runner lock");
                    let arn = runner.spec(f).map(|s| s.arn.clone()).unwrap_or_default();
                    if matches!(ended, Ended::OutOfMemory { .. }) {
                        tracing::error!(function = %arn, "{ended}");
                    }
                    if runner.exited(f, i, &ended) {
                        let b = backoff.entry(f).or_insert(FIRST_BACKOFF);
                        *b = if lived > HEALTHY_AFTER { FIRST_BACKOFF } else { (*b * 2).min(MAX_BACKOFF) };
                        tracing::warn!(function = %arn, restart_in = ?*b, "pinned function instance ended: {ended}");
                    } else {
                        tracing::debug!(function = %arn, "instance ended: {ended}");
                        if runner.spec(f).is_none() {
                            // A retired function's last instance.
                            backoff.remove(&f);
                        }
                    }
                }
                _ = tick.tick(), if !kills.is_empty() => {
                    let overdue = self.runner.lock().expect("runner lock").overdue(Instant::now());
                    for key in overdue {
                        if let Some(kill) = kills.remove(&key) {
                            let _ = kill.send(());
                        }
                    }
                }
            }
        }
        // Stop every instance, and give them a moment to be reaped and
        // their cgroups removed.
        for (_, kill) in kills.drain() {
            let _ = kill.send(());
        }
        verdant_common::shutdown::drain(&tasks, STOP_PATIENCE).await;
    }
}

/// Runs one instance, in its cgroup if it is a container one: why it
/// ended, and its cgroup (to remove).
async fn supervise(
    spec: &Spec,
    env: &Environment,
    i: InstanceId,
    token: &str,
    started: impl FnOnce(u32),
    kill: oneshot::Receiver<()>,
) -> (Ended, Option<Cgroup>) {
    let cg = match cgroup(spec, env, i) {
        Ok(cg) => cg,
        Err(e) => {
            tracing::error!(function = %spec.arn, "cannot make its cgroup: {e}");
            return (Ended::Exited(format!("cannot make its cgroup: {e}")), None);
        }
    };
    let ended = run_instance(spec, env, token, cg.as_ref(), started, kill).await;
    // Its memory limit killed it (or one of its processes, which it did
    // not outlive): say so rather than leave a bare SIGKILL status.
    let ended = match (ended, &cg) {
        (Ended::Exited(_), Some(cg)) if cg.oom_kills() > 0 => Ended::OutOfMemory {
            arn: spec.arn.clone(),
            memory_kb: spec.memory_kb,
        },
        (ended, _) => ended,
    };
    (ended, cg)
}

/// A container instance's cgroup, with its function's `MemorySize` and the
/// pids limit; none for `NoContainer`.
fn cgroup(spec: &Spec, env: &Environment, i: InstanceId) -> std::io::Result<Option<Cgroup>> {
    let (true, Some(h)) = (spec.container, &env.cgroups) else {
        return Ok(None);
    };
    let devices = spec
        .grants
        .mounts
        .iter()
        .filter(|m| m.device)
        .map(|m| crate::cgroup::device_rule(&m.source, m.writable))
        .collect::<std::io::Result<Vec<String>>>()?;
    let limits = Limits {
        memory_bytes: u64::from(spec.memory_kb) * 1024,
        pids: env.pids_limit,
        devices,
    };
    // Unique on the host: cores side by side share the hierarchy.
    let name = format!("{}-{}-{}", spec.name, std::process::id(), i.0);
    h.create(&name, &limits).map(Some)
}

/// How an instance's process starts.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    /// Where the runtime's modules are (`PYTHONPATH`, `NODE_PATH`).
    modules: Option<(&'static str, PathBuf)>,
}

/// Where the instance sees its code.
fn code_dir(spec: &Spec) -> &Path {
    if spec.container {
        Path::new("/lambda")
    } else {
        spec.dir.as_path()
    }
}

/// How `spec`'s runtime starts, with the runtimes at `runtimes` (as the
/// instance sees them).
fn command(spec: &Spec, env: &Environment, runtimes: &Path) -> Option<Launch> {
    let at = |p: &str| runtimes.join(p).display().to_string();
    match &spec.runtime {
        Runtime::Python { handler } => Some(Launch {
            program: env.python.clone(),
            args: vec![
                "-u".into(),
                at("python/lambda_runtime.py"),
                format!("--handler={handler}"),
            ],
            modules: Some(("PYTHONPATH", runtimes.join("python"))),
        }),
        Runtime::Node { handler } => Some(Launch {
            program: env.node.clone(),
            args: vec![
                at("nodejs/lambda_nodejs_runtime.js"),
                format!("--handler={handler}"),
            ],
            modules: Some(("NODE_PATH", runtimes.join("nodejs/lib"))),
        }),
        Runtime::Java { handler } => {
            let code = code_dir(spec).display().to_string();
            Some(Launch {
                program: env.java.clone(),
                args: vec![
                    "-XX:+UseSerialGC".into(),
                    "-XX:TieredStopAtLevel=1".into(),
                    "-cp".into(),
                    format!("{code}/*:{code}/lib/*:{code}"),
                    at("java/VerdantJavaRuntime.java"),
                    format!("--handler={handler}"),
                ],
                modules: None,
            })
        }
        Runtime::Executable { program, args } => {
            let code = code_dir(spec);
            Some(Launch {
                program: code.join(program),
                args: args.clone(),
                modules: None,
            })
        }
        Runtime::Unavailable(_) => None,
    }
}

/// `program` as a path: a bare name is looked up where functions look
/// (a container sees the same system directories).
fn resolve(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return program.to_path_buf();
    }
    SEARCH_PATH
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

/// `PATH` of function processes.
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The sandbox command that starts `command_line` in a container.
fn sandboxed(
    spec: &Spec,
    env: &Environment,
    cgroup: Option<&Cgroup>,
    command_line: Vec<String>,
) -> tokio::process::Command {
    let plan = Plan {
        mount_point: env.sandbox_dir.clone(),
        function_dir: spec.dir.clone(),
        runtimes: env.runtimes.clone(),
        system: ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        tmp_bytes: env.tmp_bytes,
        hostname: spec.name.clone(),
        uid: spec.uid,
        gid: spec.gid,
        cgroup_procs: cgroup.map(Cgroup::procs).unwrap_or_default(),
        mounts: spec.grants.mounts.clone(),
        sysfs: spec.access_sysfs,
        groups: spec.grants.groups.clone(),
        argv: command_line,
    };
    let mut cmd = tokio::process::Command::new(&env.exe);
    cmd.arg0(sandbox::PROGRAM)
        .arg(serde_json::to_string(&plan).expect("a plan serializes"));
    cmd
}

/// Runs one instance until it exits or `kill` fires: why it ended.
async fn run_instance(
    spec: &Spec,
    env: &Environment,
    token: &str,
    cgroup: Option<&Cgroup>,
    started: impl FnOnce(u32),
    kill: oneshot::Receiver<()>,
) -> Ended {
    let runtimes = if spec.container {
        PathBuf::from("/runtime")
    } else {
        env.runtimes.clone()
    };
    let Some(Launch {
        program,
        args,
        modules,
    }) = command(spec, env, &runtimes)
    else {
        return Ended::Exited("the function cannot run".into());
    };
    let mut cmd = if spec.container {
        let mut command_line = vec![resolve(&program).display().to_string()];
        command_line.extend(args);
        sandboxed(spec, env, cgroup, command_line)
    } else {
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(args).current_dir(&spec.dir);
        if nix::unistd::geteuid().is_root() {
            cmd.uid(spec.uid).gid(spec.gid);
        }
        cmd
    };
    // stdout and stderr on one pipe into the function's rotating log.
    let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Ended::Exited(format!("cannot make its output pipe: {e}")),
    };
    let Ok(write2) = write.try_clone() else {
        return Ended::Exited("cannot make its output pipe".into());
    };
    if let Some(log) = env.logs.get(&spec.name) {
        log.pump(read);
    }
    cmd.env_clear()
        .envs(variables(spec, env, token))
        .envs(modules)
        .stdin(std::process::Stdio::null())
        .stdout(write)
        .stderr(write2)
        .kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // (its own session, so a timeout kills the whole group) and prctl:
    // no new privileges, and killed if the lambda-runner dies (set here,
    // after std has changed the user, which would clear it).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            for (option, value) in [
                (libc::PR_SET_NO_NEW_PRIVS, 1),
                (libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong),
            ] {
                if libc::prctl(option, value, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(function = %spec.arn, "cannot start: {e}");
            return Ended::Exited(format!("cannot start: {e}"));
        }
    };
    let pid = child.id();
    if let Some(pid) = pid {
        started(pid);
    }
    tracing::info!(
        function = %spec.arn,
        pid,
        uid = spec.uid,
        container = spec.container,
        "function instance started"
    );
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) => Ended::Exited(format!("its process exited ({s})")),
            Err(e) => Ended::Exited(format!("its process was lost: {e}")),
        },
        _ = kill => {
            if let Some(pid) = pid {
                // The whole session: the runtime and anything it started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Ended::Stopped
        }
    }
}

/// The environment of a function process (docs/functions.md, "What the function gets"), then the
/// group's `Environment.Variables`.
fn variables(spec: &Spec, env: &Environment, token: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("PATH", SEARCH_PATH.to_string()),
        ("HOME", "/tmp".into()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.to_string()),
        ("MY_FUNCTION_ARN", spec.arn.clone()),
        ("ROUTER_FUNCTION_ARN", crate::ipc::ROUTER_ARN.into()),
        ("SHADOW_FUNCTION_ARN", crate::ipc::SHADOW_ARN.into()),
        (
            "SECRETS_MANAGER_FUNCTION_ARN",
            crate::ipc::SECRETS_ARN.into(),
        ),
        ("GG_DAEMON_PORT", env.ipc_port.to_string()),
        (
            "ENCODING_TYPE",
            if spec.binary { "binary" } else { "json" }.into(),
        ),
        ("GGC_MAX_INTERFACE_VERSION", "1.5".into()),
        ("AWS_REGION", env.region.clone()),
        ("AWS_DEFAULT_REGION", env.region.clone()),
        ("AWS_IOT_THING_NAME", env.thing_name.clone()),
        ("AWS_IOT_THING_ARN", env.thing_arn.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            (spec.memory_kb / 1024).to_string(),
        ),
        (
            "VERDANT_FUNCTION_TIMEOUT",
            spec.timeout.as_secs().to_string(),
        ),
        ("LOG_LEVEL", "INFO".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    v.extend(spec.variables.iter().map(|(k, x)| (k.clone(), x.clone())));
    v
}
