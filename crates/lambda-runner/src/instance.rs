//! Function processes: started as the runner asks (as the function's
//! user, in a session of their own, with `no_new_privs`), stopped when
//! their invocation times out or they idle too long, and reported when
//! they end. A pinned function's next instance waits a backoff that grows
//! while it keeps failing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use verdant_common::shutdown::CancellationToken;

use crate::function::{Runtime, Spec};
use crate::work::{FunctionId, InstanceId, Runner, Start};

/// What every instance is told about the core.
#[derive(Debug, Clone)]
pub struct Environment {
    pub ipc_port: u16,
    pub python: PathBuf,
    pub node: PathBuf,
    /// Where Verdant's runtime loops and modules are (`python/`, `nodejs/`).
    pub runtimes: PathBuf,
    pub logs: PathBuf,
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
        let (ended_tx, mut ended) = mpsc::unbounded_channel();
        let mut backoff: HashMap<FunctionId, Duration> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some((f, i, token)) = starts.recv() => {
                    let spec = self.runner.lock().expect("runner lock").spec(f).clone();
                    let delay = backoff.get(&f).copied().unwrap_or_default();
                    let (kill_tx, kill) = oneshot::channel();
                    kills.insert((f, i), kill_tx);
                    let env = self.env.clone();
                    let ended = ended_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let started = Instant::now();
                        let why = run_instance(&spec, &env, &token, kill).await;
                        let _ = ended.send((f, i, why, started.elapsed()));
                    });
                }
                Some((f, i, why, lived)) = ended.recv() => {
                    kills.remove(&(f, i));
                    let mut runner = self.runner.lock().expect("runner lock");
                    let arn = runner.spec(f).arn.clone();
                    if runner.exited(f, i, &why) {
                        let b = backoff.entry(f).or_insert(FIRST_BACKOFF);
                        *b = if lived > HEALTHY_AFTER { FIRST_BACKOFF } else { (*b * 2).min(MAX_BACKOFF) };
                        tracing::warn!(function = %arn, restart_in = ?*b, "pinned function instance ended: {why}");
                    } else {
                        tracing::debug!(function = %arn, "instance ended: {why}");
                    }
                }
                _ = tick.tick() => {
                    let overdue = self.runner.lock().expect("runner lock").overdue(Instant::now());
                    for key in overdue {
                        if let Some(kill) = kills.remove(&key) {
                            let _ = kill.send(());
                        }
                    }
                }
            }
        }
        for (_, kill) in kills.drain() {
            let _ = kill.send(());
        }
    }
}

/// Runs one instance until it exits or `kill` fires: why it ended.
async fn run_instance(
    spec: &Spec,
    env: &Environment,
    token: &str,
    kill: oneshot::Receiver<()>,
) -> String {
    let (mut cmd, path_var) = match &spec.runtime {
        Runtime::Python { handler } => {
            let mut cmd = tokio::process::Command::new(&env.python);
            cmd.arg("-u")
                .arg(env.runtimes.join("python/lambda_runtime.py"))
                .arg(format!("--handler={handler}"));
            (cmd, ("PYTHONPATH", env.runtimes.join("python")))
        }
        Runtime::Node { handler } => {
            let mut cmd = tokio::process::Command::new(&env.node);
            cmd.arg(env.runtimes.join("nodejs/lambda_nodejs_runtime.js"))
                .arg(format!("--handler={handler}"));
            (cmd, ("NODE_PATH", env.runtimes.join("nodejs/lib")))
        }
        Runtime::Unavailable(_) => return "the function cannot run".into(),
    };
    let log = match open_log(env, spec) {
        Ok(l) => l,
        Err(e) => return format!("cannot open its log: {e}"),
    };
    cmd.current_dir(&spec.dir)
        .env_clear()
        .envs(variables(spec, env, token))
        .env(path_var.0, path_var.1)
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_or_else(|_| std::process::Stdio::null(), Into::into),
        )
        .stderr(log)
        .kill_on_drop(true);
    if nix::unistd::geteuid().is_root() {
        cmd.uid(spec.uid).gid(spec.gid);
    }
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // (its own session, so a timeout kills the whole group) and prctl.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(function = %spec.arn, "cannot start: {e}");
            return format!("cannot start: {e}");
        }
    };
    let pid = child.id();
    tracing::info!(function = %spec.arn, pid, uid = spec.uid, "function instance started");
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) => format!("its process exited ({s})"),
            Err(e) => format!("its process was lost: {e}"),
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
            "stopped".into()
        }
    }
}

/// `<logs>/functions/<name>.log`, appended to.
fn open_log(env: &Environment, spec: &Spec) -> std::io::Result<std::fs::File> {
    let dir = env.logs.join("functions");
    std::fs::create_dir_all(&dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", spec.name)))
}

/// The environment of a function process (`COMPAT.md` §1.1), then the
/// group's `Environment.Variables`.
fn variables(spec: &Spec, env: &Environment, token: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
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
