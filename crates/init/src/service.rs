//! One supervised service: a task that owns its process and walks the
//! states stopped → waiting → starting → running → (backoff | stopping |
//! failed), driven by its process's exit, its health, timers and operator
//! commands. Everyone else sees it through a `watch` of its [`Status`].

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use verdant_common::exit;
use verdant_common::paths::{Layout, ROOT_ENV, RUNTIME_DIR_ENV, SOCKET_ENV};

use crate::config::{HealthCheck, InitSection};
use crate::health;
use crate::process::{self, Child, Exited, Reaper};
use crate::sockets::Held;
use crate::zygote::{self, Zygote};
use verdant_common::logs::ServiceLog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Stopped,
    Waiting,
    Starting,
    Running,
    Backoff,
    Stopping,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Serving,
    NotServing,
}

/// What operators see of a service.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub health: Health,
    pub pid: Option<u32>,
    pub started_at: Option<SystemTime>,
    pub restart_count: u32,
    pub last_exit: Option<Exited>,
    pub message: String,
    pub depends_on: Vec<String>,
    pub version: String,
    pub note: String,
}

/// A service as init runs it: its config resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    /// The name the program is run under, for a multicall binary.
    pub arg0: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub depends_on: Vec<String>,
    pub health: HealthCheck,
    pub enabled: bool,
    pub start_timeout: Duration,
    pub stop_grace: Duration,
}

/// Operator commands; each is answered with the status it led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Start,
    Stop,
    Restart,
}

type Reply = oneshot::Sender<Status>;

/// What the supervisor keeps of a running service task.
#[derive(Clone)]
pub struct Handle {
    pub name: String,
    pub status: watch::Receiver<Status>,
    pub log: ServiceLog,
    commands: mpsc::Sender<(Request, Reply)>,
}

impl Handle {
    /// Sends `request` and waits for the state it leads to.
    pub async fn command(&self, request: Request) -> Status {
        let (tx, rx) = oneshot::channel();
        if self.commands.send((request, tx)).await.is_err() {
            return self.status.borrow().clone();
        }
        match rx.await {
            Ok(status) => status,
            Err(_) => self.status.borrow().clone(),
        }
    }
}

/// What the task shares with every other service task.
#[derive(Clone)]
pub struct Shared {
    pub layout: Layout,
    pub policy: InitSection,
    pub reaper: Reaper,
    pub events: broadcast::Sender<Status>,
    pub pid_dir: PathBuf,
    /// Forks the services of the `verdant` binary, while usable.
    pub zygote: Option<Arc<Zygote>>,
    /// The listening sockets init holds for a service.
    pub held: Option<Arc<Held>>,
}

/// Spawns the task of one service; `deps` are its dependencies' statuses.
pub fn spawn(spec: Spec, shared: Shared, deps: Vec<watch::Receiver<Status>>) -> Handle {
    let status = Status {
        name: spec.name.clone(),
        // An enabled service is on its way up from the start, so nobody
        // mistakes it for one that was stopped.
        state: if spec.enabled {
            State::Waiting
        } else {
            State::Stopped
        },
        health: Health::Unknown,
        pid: None,
        started_at: None,
        restart_count: 0,
        last_exit: None,
        message: String::new(),
        depends_on: spec.depends_on.clone(),
        version: String::new(),
        note: String::new(),
    };
    let (status_tx, status_rx) = watch::channel(status);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let log = ServiceLog::new(
        shared.layout.logs_dir().join(format!("{}.log", spec.name)),
        shared.policy.log_max_bytes,
        shared.policy.log_keep,
    );
    let name = spec.name.clone();
    let task = Task {
        want: spec.enabled,
        spec,
        shared,
        status: status_tx,
        commands: cmd_rx,
        deps,
        log: log.clone(),
        failures: VecDeque::new(),
        consecutive: 0,
        waiters: Vec::new(),
    };
    tokio::spawn(task.run());
    Handle {
        name,
        status: status_rx,
        log,
        commands: cmd_tx,
    }
}

struct Task {
    spec: Spec,
    shared: Shared,
    status: watch::Sender<Status>,
    /// Operator commands, answered once the state they lead to is reached.
    commands: mpsc::Receiver<(Request, Reply)>,
    deps: Vec<watch::Receiver<Status>>,
    log: ServiceLog,
    /// Whether the service should be running (false once stopped or failed).
    want: bool,
    /// When the automatic restarts within the window happened.
    failures: VecDeque<Instant>,
    /// Failures since the service last ran healthy for `healthy_reset_secs`.
    consecutive: u32,
    /// Operators waiting for the outcome of their command.
    waiters: Vec<Reply>,
}

/// How a supervised process ended.
enum Outcome {
    Exited(Exited),
    Stopped,
    Restart,
    StartFailed(String),
}

impl Task {
    async fn run(mut self) {
        loop {
            if !self.want {
                if self.state() != State::Failed {
                    self.set(|s| {
                        s.state = State::Stopped;
                        s.message.clear();
                    });
                }
                self.answer();
                let Some((request, reply)) = self.commands.recv().await else {
                    return;
                };
                self.waiters.push(reply);
                if request != Request::Stop {
                    self.clear_failures();
                    if request == Request::Restart || self.state() == State::Failed {
                        self.set(|s| s.restart_count += 1);
                    }
                    self.want = true;
                }
                continue;
            }
            if !self.wait_for_dependencies().await {
                continue;
            }
            let child = match self.start() {
                Ok(child) => child,
                Err(message) => {
                    self.fail(message);
                    continue;
                }
            };
            match self.supervise(child).await {
                Outcome::Exited(how) => self.after_exit(how).await,
                Outcome::Stopped => self.want = false,
                Outcome::Restart => {
                    self.clear_failures();
                    self.set(|s| s.restart_count += 1);
                }
                Outcome::StartFailed(message) => self.fail(message),
            }
        }
    }

    fn state(&self) -> State {
        self.status.borrow().state
    }

    fn set(&self, change: impl FnOnce(&mut Status)) {
        self.status.send_modify(change);
        let _ = self.shared.events.send(self.status.borrow().clone());
    }

    /// Answers every operator waiting for an outcome.
    fn answer(&mut self) {
        let status = self.status.borrow().clone();
        for w in self.waiters.drain(..) {
            let _ = w.send(status.clone());
        }
    }

    fn fail(&mut self, message: String) {
        tracing::error!(service = self.spec.name, "failed: {message}");
        self.note(&format!("failed: {message}"));
        self.want = false;
        self.set(|s| {
            s.state = State::Failed;
            s.message = message;
        });
    }

    fn clear_failures(&mut self) {
        self.failures.clear();
        self.consecutive = 0;
    }

    /// A line from init in the service's own log, so its log tells the whole story.
    fn note(&self, text: &str) {
        self.log
            .write(format!("[verdant-init] {text}\n").as_bytes());
    }

    /// Waits until every dependency is running; false if told to stop meanwhile.
    async fn wait_for_dependencies(&mut self) -> bool {
        loop {
            let missing: Vec<String> = self
                .deps
                .iter()
                .filter(|d| d.borrow().state != State::Running)
                .map(|d| d.borrow().name.clone())
                .collect();
            if missing.is_empty() {
                return true;
            }
            if self.state() != State::Waiting {
                self.set(|s| {
                    s.state = State::Waiting;
                    s.message = format!("waiting for {}", missing.join(", "));
                });
            }
            self.answer();
            let changed =
                futures::future::select_all(self.deps.iter_mut().map(|d| Box::pin(d.changed())));
            tokio::select! {
                (result, _, _) = changed => {
                    if result.is_err() {
                        // The supervisor is going away.
                        std::future::pending::<()>().await;
                    }
                }
                command = self.commands.recv() => match command {
                    None => return false,
                    Some((Request::Stop, reply)) => {
                        self.waiters.push(reply);
                        self.want = false;
                        return false;
                    }
                    Some((_, reply)) => self.waiters.push(reply),
                },
            }
        }
    }

    fn start(&mut self) -> Result<Child, String> {
        let child = match self.fork() {
            Some(forked) => forked?,
            None => self.exec()?,
        };
        let pidfile = self.pidfile();
        if let Err(e) = process::write_pidfile(&pidfile, child.pid) {
            tracing::warn!("cannot write {}: {e}", pidfile.display());
        }
        self.note(&format!("started pid {}", child.pid));
        Ok(child)
    }

    /// The service from the zygote, if it is a program of the `verdant`
    /// binary and the zygote is usable; `None` to execute it instead.
    fn fork(&self) -> Option<Result<Child, String>> {
        let zygote = self.shared.zygote.as_ref().filter(|z| z.usable())?;
        let arg0 = self.spec.arg0.clone()?;
        let layout = &self.shared.layout;
        let mut env: Vec<(OsString, OsString)> = self
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        env.extend([
            (ROOT_ENV.into(), layout.root().into()),
            (RUNTIME_DIR_ENV.into(), layout.runtime_dir().into()),
            (SOCKET_ENV.into(), layout.socket(&self.spec.name).into()),
            ("VERDANT_SERVICE".into(), (&self.spec.name).into()),
        ]);
        let listeners = self.listeners();
        let request = zygote::Request {
            arg0,
            args: self.spec.args.clone(),
            env,
            cwd: layout.root().to_path_buf(),
            listeners: listeners.iter().map(|(key, _)| key.clone()).collect(),
        };
        let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| *fd).collect();
        match self.shared.reaper.spawn_forked(zygote, &request, &fds) {
            Ok(child) => Some(Ok(child)),
            // The zygote is gone: execute this one and the next.
            Err(_) if !zygote.usable() => None,
            Err(e) => Some(Err(format!("cannot fork {}: {e}", request.arg0))),
        }
    }

    fn exec(&self) -> Result<Child, String> {
        let layout = &self.shared.layout;
        let mut command = Command::new(&self.spec.program);
        if let Some(arg0) = &self.spec.arg0 {
            command.arg0(arg0);
        }
        command
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env(ROOT_ENV, layout.root())
            .env(RUNTIME_DIR_ENV, layout.runtime_dir())
            .env(SOCKET_ENV, layout.socket(&self.spec.name))
            .env("VERDANT_SERVICE", &self.spec.name)
            .current_dir(layout.root());
        let listeners = self.listeners();
        if !listeners.is_empty() {
            let pairs = listeners.iter().map(|(key, fd)| (key.as_str(), *fd));
            command.env(
                verdant_common::listen::ENV,
                verdant_common::listen::encode(pairs),
            );
            let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| *fd).collect();
            // SAFETY: fcntl is async-signal-safe; the descriptors are
            // init's, open while it spawns, and only this child's copies
            // lose close-on-exec.
            unsafe {
                command.pre_exec(move || {
                    for fd in &fds {
                        if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        self.shared
            .reaper
            .spawn(command)
            .map_err(|e| format!("cannot start {}: {e}", self.spec.program.display()))
    }

    /// The listening sockets init holds for this service, by key.
    fn listeners(&self) -> Vec<(String, RawFd)> {
        self.shared
            .held
            .as_ref()
            .map(|held| held.for_service(&self.spec.name))
            .unwrap_or_default()
    }

    fn pidfile(&self) -> PathBuf {
        self.shared.pid_dir.join(format!("{}.pid", self.spec.name))
    }

    async fn supervise(&mut self, mut child: Child) -> Outcome {
        let pid = child.pid;
        if let Some(output) = child.output.take() {
            self.log.pump(output);
        }
        self.set(|s| {
            s.state = State::Starting;
            s.health = Health::Unknown;
            s.pid = Some(pid);
            s.started_at = Some(SystemTime::now());
            s.message.clear();
        });

        // Starting: until health is SERVING.
        let deadline = Instant::now() + self.spec.start_timeout;
        let socket = self.shared.layout.socket(&self.spec.name);
        let check = self.spec.health;
        // Boxed, and dropped once the service is up: the task keeps no
        // room for the start's gRPC connection while it supervises.
        let mut ready = Box::pin(async move {
            match check {
                HealthCheck::None => Some(None),
                HealthCheck::Grpc => health::wait_serving(&socket, deadline).await.map(Some),
            }
        });
        let serving = loop {
            tokio::select! {
                how = &mut child.exited => return Outcome::Exited(how.unwrap_or(Exited::Signal(9))),
                ready = &mut ready => match ready {
                    Some(serving) => break serving,
                    None => {
                        let message = format!(
                            "did not report SERVING within {:?}", self.spec.start_timeout
                        );
                        self.terminate(&mut child).await;
                        return Outcome::StartFailed(message);
                    }
                },
                command = self.commands.recv() => {
                    if let Some(outcome) = self.command_while_up(command, &mut child).await {
                        return outcome;
                    }
                }
            }
        };
        drop(ready);

        // Running.
        let mut watch = None;
        if let Some(serving) = serving {
            if let Some(info) = Box::pin(health::info(serving.channel.clone())).await {
                self.set(|s| {
                    s.version = info.version;
                    s.note = info.note;
                });
            }
            watch = Some(serving.watch);
        }
        self.set(|s| {
            s.state = State::Running;
            s.health = Health::Serving;
        });
        tracing::info!(service = self.spec.name, pid, "running");
        self.answer();
        let reset = tokio::time::sleep(Duration::from_secs(self.shared.policy.healthy_reset_secs));
        tokio::pin!(reset);
        let mut reset_done = false;
        loop {
            tokio::select! {
                how = &mut child.exited => return Outcome::Exited(how.unwrap_or(Exited::Signal(9))),
                health = async { health::next(watch.as_mut().expect("guarded")).await }, if watch.is_some() => {
                    match health {
                        Some(serving) => self.set(|s| {
                            s.health = if serving { Health::Serving } else { Health::NotServing };
                        }),
                        None => watch = None,
                    }
                }
                () = &mut reset, if !reset_done => {
                    reset_done = true;
                    self.clear_failures();
                }
                command = self.commands.recv() => {
                    if matches!(command, None | Some((Request::Stop | Request::Restart, _))) {
                        // An open watch would hold the daemon's graceful stop.
                        watch = None;
                    }
                    if let Some(outcome) = self.command_while_up(command, &mut child).await {
                        return outcome;
                    }
                }
            }
        }
    }

    /// An operator command while the process is up; `Some` ends supervision.
    async fn command_while_up(
        &mut self,
        command: Option<(Request, Reply)>,
        child: &mut Child,
    ) -> Option<Outcome> {
        let Some((request, reply)) = command else {
            self.terminate(child).await;
            return Some(Outcome::Stopped);
        };
        self.waiters.push(reply);
        match request {
            Request::Start => {
                if self.state() == State::Running {
                    self.answer();
                }
                None
            }
            Request::Stop => {
                self.terminate(child).await;
                Some(Outcome::Stopped)
            }
            Request::Restart => {
                self.terminate(child).await;
                Some(Outcome::Restart)
            }
        }
    }

    /// SIGTERM to the process group, SIGKILL after the grace period.
    async fn terminate(&mut self, child: &mut Child) {
        self.set(|s| s.state = State::Stopping);
        process::signal_group(child.pid, Signal::SIGTERM);
        let how = match tokio::time::timeout(self.spec.stop_grace, &mut child.exited).await {
            Ok(how) => how.unwrap_or(Exited::Signal(9)),
            Err(_) => {
                tracing::warn!(
                    service = self.spec.name,
                    "still running {:?} after SIGTERM; sending SIGKILL",
                    self.spec.stop_grace
                );
                process::signal_group(child.pid, Signal::SIGKILL);
                (&mut child.exited).await.unwrap_or(Exited::Signal(9))
            }
        };
        // Whatever else the service left in its group goes with it.
        process::signal_group(child.pid, Signal::SIGKILL);
        self.ended(how);
    }

    fn ended(&mut self, how: Exited) {
        let _ = std::fs::remove_file(self.pidfile());
        self.note(&format!("pid ended: {how}"));
        self.set(|s| {
            s.pid = None;
            s.started_at = None;
            s.health = Health::Unknown;
            s.last_exit = Some(how);
        });
    }

    /// The process exited on its own: restart it, or give up.
    async fn after_exit(&mut self, how: Exited) {
        tracing::warn!(service = self.spec.name, "exited unexpectedly: {how}");
        self.ended(how);
        if how == Exited::Code(i32::from(exit::CONFIG)) {
            self.fail(format!(
                "bad configuration (exit {}): not restarted; see its log, fix the \
                 configuration, then `verdantctl restart {}`",
                exit::CONFIG,
                self.spec.name
            ));
            return;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.shared.policy.restart_window_secs);
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() > self.shared.policy.restart_limit as usize {
            self.fail(format!(
                "crash loop: {} restarts within {}s, last {how}; not restarted until \
                 `verdantctl restart {}`",
                self.failures.len() - 1,
                window.as_secs(),
                self.spec.name
            ));
            return;
        }
        self.consecutive += 1;
        let delay = backoff(
            self.consecutive,
            Duration::from_secs(self.shared.policy.backoff_max_secs),
        );
        self.set(|s| {
            s.state = State::Backoff;
            s.message = format!("{how}; restarting in {delay:?}");
        });
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => break,
                command = self.commands.recv() => match command {
                    None => { self.want = false; return; }
                    Some((request, reply)) => {
                        self.waiters.push(reply);
                        match request {
                            Request::Stop => { self.want = false; return; }
                            Request::Restart => { self.clear_failures(); break; }
                            Request::Start => {}
                        }
                    }
                },
            }
        }
        self.set(|s| s.restart_count += 1);
    }
}

/// The wait before the `n`th consecutive automatic restart: the first is
/// immediate, then 100 ms doubling up to `max`.
pub fn backoff(n: u32, max: Duration) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let exp = (n - 2).min(20);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_immediately_and_caps() {
        let max = Duration::from_mins(1);
        assert_eq!(backoff(1, max), Duration::ZERO);
        assert_eq!(backoff(2, max), Duration::from_millis(100));
        assert_eq!(backoff(3, max), Duration::from_millis(200));
        assert_eq!(backoff(12, max), max);
        assert_eq!(backoff(1000, max), max);
    }
}
