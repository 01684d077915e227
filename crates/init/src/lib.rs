//! verdant-init: the tiny supervisor of a Verdant core. See ARCHITECTURE.md.

mod cli;
pub mod config;
pub mod devcerts;
pub mod error;
mod grpc;
mod health;
mod notify;
pub mod process;
mod service;
pub mod setup;
pub mod sockets;
mod supervisor;
pub mod versions;
pub mod zygote;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use verdant_common::grpc::{Info, Server};
use verdant_common::shutdown::CancellationToken;
use verdant_common::uds;
use verdant_proto::supervisor::v1::supervisor_server::SupervisorServer;

pub use cli::main;
pub use error::InitError;
pub use process::Programs;
use process::Reaper;
use service::{Shared, State};
use supervisor::Supervisor;
use zygote::Zygote;

/// Prepares the root (`lock`: its lock, from `setup::claim`), starts every
/// service, serves the supervisor API, and
/// stops everything on SIGTERM/SIGINT or a Shutdown call. `Some`: the
/// executable init must become now (a version switch or a rollback).
pub async fn run(
    root: &Path,
    runtime_dir: Option<&Path>,
    programs: Programs,
    lock: nix::fcntl::Flock<std::fs::File>,
) -> Result<Option<std::path::PathBuf>, InitError> {
    let begun = Instant::now();
    let prepared = setup::prepare(root, runtime_dir, &programs, lock)?;
    let (init_log, init_socket, listener) = open_init(&prepared)?;
    setup::end_leftovers(&prepared);

    let reaper = Reaper::start().map_err(|source| InitError::Io {
        what: "watch SIGCHLD".into(),
        source,
    })?;
    let shutdown = verdant_common::shutdown::on_signals().map_err(|source| InitError::Io {
        what: "install signal handlers".into(),
        source,
    })?;

    let (zygote, zygote_watch) = match programs.zygote() {
        Some(z) => adopt_zygote(z, prepared.config.init.zygote, &reaper, &shutdown),
        None => (None, None),
    };
    let shared = Shared {
        layout: prepared.layout.clone(),
        policy: prepared.config.init.clone(),
        reaper,
        events: Supervisor::new_events(),
        pid_dir: prepared.pid_dir.clone(),
        zygote,
        held: programs
            .held()
            .inspect(|held| held.read_from(prepared.layout.config_file()))
            .cloned(),
    };
    tracing::info!(
        root = %prepared.layout.root().display(),
        group = prepared.group.id,
        "starting {} services",
        prepared.specs.len()
    );
    let supervisor = Supervisor::start(&prepared.config, prepared.specs, &shared);
    forward_signals(&supervisor, &shutdown);

    let server_stop = CancellationToken::new();
    let reexec = Arc::new(std::sync::Mutex::new(None));
    let server = Server::new(Info {
        service: "init".into(),
        version: verdant_common::version::version().into(),
        note: "supervisor".into(),
        functional: true,
    })
    .await
    .add_service(SupervisorServer::new(grpc::Api {
        supervisor: supervisor.clone(),
        shutdown: shutdown.clone(),
        init_log,
        versions: versions::Versions::new(prepared.layout.root()),
        policy: prepared.config.init.clone(),
        reaper: shared.reaper.clone(),
        reexec: reexec.clone(),
        switching: tokio::sync::Mutex::new(()),
        router: prepared.layout.socket("router"),
    }));
    server.readiness().serving().await;
    let serving = tokio::spawn(server.serve(listener, server_stop.clone()));

    let watchdog_stop = CancellationToken::new();
    notify::watchdog(watchdog_stop.clone());
    let next = up(
        &supervisor,
        begun,
        &prepared.config,
        &shared.reaper,
        &prepared.layout,
        &shutdown,
    )
    .await;
    if next.is_some() {
        *reexec.lock().expect("reexec lock") = next;
        shutdown.cancel();
    }

    shutdown.cancelled().await;
    notify::leaving(reexec.lock().expect("reexec lock").as_deref());
    tracing::info!("stopping every service");
    supervisor.stop_all().await;
    if let Some(z) = programs.zygote() {
        z.close(); // it exits at the end of its socket
    }
    if let Some(watch) = zygote_watch {
        let _ = tokio::time::timeout(Duration::from_secs(2), watch).await;
    }
    watchdog_stop.cancel();
    server_stop.cancel();
    let _ = serving.await;
    let _ = std::fs::remove_file(&init_socket);
    drop(prepared.lock);
    tracing::info!("stopped");
    let next = reexec.lock().expect("reexec lock").take();
    Ok(next)
}

/// Init's own log (its lines go to `logs/init.log` too, for `verdantctl
/// logs init`) and its socket, bound before anything starts: an unusable
/// socket dir stops init here.
fn open_init(
    prepared: &setup::Prepared,
) -> Result<
    (
        verdant_common::logs::ServiceLog,
        std::path::PathBuf,
        tokio::net::UnixListener,
    ),
    InitError,
> {
    let init_log = verdant_common::logs::ServiceLog::new(
        prepared
            .layout
            .logs_dir()
            .join(format!("{}.log", verdant_common::paths::INIT_SERVICE)),
        prepared.config.init.log_max_bytes,
        prepared.config.init.log_keep,
    );
    verdant_common::telemetry::tee(init_log.clone());
    let init_socket = prepared.layout.socket(verdant_common::paths::INIT_SERVICE);
    let listener = uds::bind(&init_socket).map_err(|e| InitError::RuntimeDir {
        path: prepared.layout.runtime_dir().to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok((init_log, init_socket, listener))
}

/// Once the services settled, the core came up: says so
/// (log, systemd), and ends an update to this version (after its
/// post-update hook): kept, or rolled back (then what to execute instead).
async fn up(
    supervisor: &Supervisor,
    begun: Instant,
    config: &config::Config,
    reaper: &Reaper,
    layout: &verdant_common::paths::Layout,
    shutdown: &CancellationToken,
) -> Option<std::path::PathBuf> {
    let levels = config.start_order().map_or(1, |l| l.len()) as u32;
    let settle_limit = Duration::from_millis(config.init.start_timeout_ms) * levels;
    let list = &tokio::select! {
        list = supervisor.settled(settle_limit) => list,
        () = shutdown.cancelled() => return None,
    };
    let policy = &config.init;
    let root = layout.root();
    let failed: Vec<_> = list
        .iter()
        .filter(|s| s.state == State::Failed)
        .map(|s| s.name.as_str())
        .collect();
    let running = list.iter().filter(|s| s.state == State::Running).count();
    let status = if failed.is_empty() {
        format!("{running} services running")
    } else {
        format!("{running} services running; failed: {}", failed.join(", "))
    };
    tracing::info!(
        elapsed_ms = begun.elapsed().as_millis() as u64,
        "core up: {status}"
    );
    notify::ready(&status);
    let update = versions::switching_here(root)?;
    // A service stopped on purpose (disabled, or behind a disabled one)
    // is no failure of the new version.
    let mut problems: Vec<String> = list
        .iter()
        .filter(|s| matches!(s.state, State::Failed | State::Backoff | State::Starting))
        .map(|s| format!("{} did not run", s.name))
        .collect();
    // The cloud connection, if it was up when the switch began. (A stop
    // meanwhile leaves the update switching: the next start goes on.)
    if problems.is_empty() && update.cloud {
        let router = layout.socket("router");
        let back = health::cloud_back(
            &router,
            Duration::from_secs(policy.update_cloud_timeout_secs),
        );
        let back = tokio::select! {
            back = back => back,
            () = shutdown.cancelled() => return None,
        };
        if let Err(why) = back {
            problems.push(why);
        }
    }
    if problems.is_empty()
        && let Err(why) = versions::run_hook(
            reaper,
            root,
            &policy.update_post_hook,
            (&update.from, &update.to),
            Duration::from_secs(policy.update_hook_timeout_secs),
        )
        .await
    {
        problems.push(why);
    }
    versions::settled(root, &problems)
}

/// Keeps the zygote if the config wants it and init can adopt what it
/// forks (init is PID 1 or a child subreaper); otherwise ends it. Returns
/// it with a task that ends when it exits (and, if it dies unexpectedly,
/// stops using it: services are executed from then on).
fn adopt_zygote(
    zygote: &Arc<Zygote>,
    wanted: bool,
    reaper: &Reaper,
    shutdown: &CancellationToken,
) -> (Option<Arc<Zygote>>, Option<tokio::task::JoinHandle<()>>) {
    let adopts = nix::unistd::getpid().as_raw() == 1
        || nix::sys::prctl::get_child_subreaper().unwrap_or(false);
    let exited = reaper.watch(zygote.pid()).exited;
    let z = zygote.clone();
    let stopping = shutdown.clone();
    let watch = tokio::spawn(async move {
        let how = exited.await;
        if !z.usable() {
            return; // closed by init
        }
        z.close();
        let how = how.map_or_else(|_| "gone".to_string(), |h| h.to_string());
        if stopping.is_cancelled() {
            // e.g. systemd signalling the whole control group
            tracing::info!(pid = z.pid(), "the zygote ended ({how}) while stopping");
        } else {
            tracing::warn!(
                pid = z.pid(),
                "the zygote ended ({how}); services are executed from now on"
            );
        }
    });
    if !wanted {
        zygote.close();
        tracing::info!("zygote = false: services are executed");
        return (None, Some(watch));
    }
    if !adopts {
        zygote.close();
        tracing::warn!("init is neither PID 1 nor a child subreaper: services are executed");
        return (None, Some(watch));
    }
    (Some(zygote.clone()), Some(watch))
}

/// SIGHUP, SIGUSR1 and SIGUSR2 go on to every service (init as PID 1 in a
/// container is how they reach the daemons).
fn forward_signals(supervisor: &Supervisor, stop: &CancellationToken) {
    for (kind, sig) in [
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let stop = stop.clone();
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = stream.recv() => {
                        tracing::info!("forwarding {sig} to every service");
                        supervisor.forward(sig);
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}
