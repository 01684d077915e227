//! A daemon's `main`, the same for all of them: parse `--root`/`--socket`
//! (or the `VERDANT_*` variables init sets), set up logging, load the
//! configuration, bind the socket, turn signals into one shutdown token, call
//! the daemon's `run`, and map its result to the exit-code contract.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigSource;
use crate::exit::Exit;
use crate::paths::{DEFAULT_ROOT, Layout, ROOT_ENV, RUNTIME_DIR_ENV, SOCKET_ENV};
use crate::privileges::Capabilities;

/// Errors a daemon's `run` returns say what they mean for its supervisor.
pub trait DaemonError: std::error::Error {
    fn exit(&self) -> Exit;
}

impl DaemonError for tonic::transport::Error {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}

/// What `run` is given besides its socket and shutdown token.
#[derive(Debug, Clone)]
pub struct Context {
    pub layout: Layout,
    pub config: ConfigSource,
}

#[derive(Debug, Parser)]
struct Args {
    /// Root directory of the core.
    #[arg(long, env = ROOT_ENV, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Directory of the gRPC sockets (default: <root>/run).
    #[arg(long, env = RUNTIME_DIR_ENV)]
    runtime_dir: Option<PathBuf>,
    /// The socket to serve on (default: <runtime-dir>/<service>.sock).
    #[arg(long, env = SOCKET_ENV)]
    socket: Option<PathBuf>,
}

/// How many threads a daemon's runtime has.
#[derive(Debug, Clone, Copy)]
pub enum Threads {
    /// One thread: control-plane daemons, smallest footprint.
    One,
    /// One worker per core: daemons that move data.
    PerCore,
    /// As the daemon's configuration says: 0 one worker per core, 1 one
    /// thread (as [`Threads::One`]), N that many workers.
    Configured(fn(&ConfigSource) -> usize),
}

/// Runs a daemon with its command line `args` (program name first); the
/// whole of what the `verdant` binary does for a daemon.
pub fn main<F, Fut, E>(
    args: Vec<OsString>,
    service: &'static str,
    threads: Threads,
    capabilities: Capabilities,
    run: F,
) -> ExitCode
where
    F: FnOnce(Context, UnixListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: DaemonError,
{
    let args = Args::parse_from(args);
    crate::telemetry::init();
    let layout = match Layout::new(&args.root, args.runtime_dir.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("bad root {}: {e}", args.root.display());
            return Exit::Config.into();
        }
    };
    let config = match ConfigSource::load(&layout.config_file()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Exit::Config.into();
        }
    };
    // Before the runtime makes threads (they inherit this thread's sets)
    // and before anything from outside is read.
    match crate::privileges::keep_only(&capabilities.needed(&config)) {
        Ok(kept) if kept.is_empty() => tracing::debug!("no capabilities kept"),
        Ok(kept) => tracing::info!(capabilities = %kept.join(","), "capabilities kept"),
        Err(e) => {
            tracing::error!("{e}");
            return Exit::Failure.into();
        }
    }
    let socket = args.socket.unwrap_or_else(|| layout.socket(service));
    let workers = match threads {
        Threads::One => 1,
        Threads::PerCore => 0,
        Threads::Configured(workers) => workers(&config),
    };
    let runtime = match workers {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    // Boxed: the daemon's whole state lives on the heap, not in stack pages
    // that stay resident after the deepest moment of its start.
    let result = runtime.block_on(Box::pin(async {
        let listener = match crate::uds::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return Exit::Failure;
            }
        };
        let shutdown = match crate::shutdown::on_signals() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return Exit::Failure;
            }
        };
        let result = run(Context { layout, config }, listener, shutdown).await;
        let _ = std::fs::remove_file(&socket);
        match result {
            Ok(()) => Exit::Ok,
            Err(e) => {
                tracing::error!("{e}");
                e.exit()
            }
        }
    }));
    result.into()
}
