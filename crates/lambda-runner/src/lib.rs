//! verdant-lambda-runner: the group's functions, run with Greengrass v1's
//! IPC so that code written for Greengrass runs unchanged. See
//! ARCHITECTURE.md.

pub mod cgroup;
pub mod config;
pub mod connectors;
pub mod deploy;
pub mod error;
pub mod function;
mod grpc;
pub mod instance;
pub mod ipc;
mod link;
pub mod peer;
pub mod resources;
pub mod sandbox;
pub mod work;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::Context;
use verdant_common::grpc::{Info, Server};
use verdant_common::shutdown::CancellationToken;
use verdant_proto::lambda::v1::lambda_server::LambdaServer;

use crate::config::LambdaConfig;
use crate::deploy::{Deployer, FunctionLogs, Loader};
pub use crate::error::LambdaError;

pub const SERVICE: &str = "lambda-runner";
/// The runtime this daemon wants.
pub const THREADS: verdant_common::daemon::Threads = verdant_common::daemon::Threads::One;
/// The capabilities this daemon keeps, for its function instances: to
/// make their namespaces, mounts and cgroups (`SYS_ADMIN`), to run them as
/// their users (`SETUID`, `SETGID`) with every capability dropped from
/// the sandbox's bounding set (`SETPCAP`), to signal and clean up after
/// them whatever their user (`KILL`, `DAC_OVERRIDE`, `FOWNER`). Its
/// bounding set is this list, so a function allowed to run as root has
/// no more.
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[
        verdant_common::privileges::Capability::CAP_SYS_ADMIN,
        verdant_common::privileges::Capability::CAP_SETUID,
        verdant_common::privileges::Capability::CAP_SETGID,
        verdant_common::privileges::Capability::CAP_SETPCAP,
        verdant_common::privileges::Capability::CAP_KILL,
        verdant_common::privileges::Capability::CAP_DAC_OVERRIDE,
        verdant_common::privileges::Capability::CAP_FOWNER,
    ]);

/// Verdant's runtime loops and the core modules the Greengrass SDKs
/// require (Python: greengrasssdk; Node.js: aws-greengrass-core-sdk),
/// written under the data directory at every start.
const RUNTIME: &[(&str, &str)] = &[
    (
        "python/lambda_runtime.py",
        include_str!("../runtime/python/lambda_runtime.py"),
    ),
    (
        "python/greengrass_common/__init__.py",
        include_str!("../runtime/python/greengrass_common/__init__.py"),
    ),
    (
        "python/greengrass_common/env_vars.py",
        include_str!("../runtime/python/greengrass_common/env_vars.py"),
    ),
    (
        "python/greengrass_common/function_arn_fields.py",
        include_str!("../runtime/python/greengrass_common/function_arn_fields.py"),
    ),
    (
        "python/greengrass_ipc_python_sdk/__init__.py",
        include_str!("../runtime/python/greengrass_ipc_python_sdk/__init__.py"),
    ),
    (
        "python/greengrass_ipc_python_sdk/ipc_client.py",
        include_str!("../runtime/python/greengrass_ipc_python_sdk/ipc_client.py"),
    ),
    (
        "java/VerdantJavaRuntime.java",
        include_str!("../runtime/java/VerdantJavaRuntime.java"),
    ),
    (
        "nodejs/lambda_nodejs_runtime.js",
        include_str!("../runtime/nodejs/lambda_nodejs_runtime.js"),
    ),
    (
        "nodejs/lib/aws-greengrass-common-js/index.js",
        include_str!("../runtime/nodejs/lib/aws-greengrass-common-js/index.js"),
    ),
    (
        "nodejs/lib/aws-greengrass-common-js/package.json",
        include_str!("../runtime/nodejs/lib/aws-greengrass-common-js/package.json"),
    ),
    (
        "nodejs/lib/aws-greengrass-ipc-sdk-js/index.js",
        include_str!("../runtime/nodejs/lib/aws-greengrass-ipc-sdk-js/index.js"),
    ),
    (
        "nodejs/lib/aws-greengrass-ipc-sdk-js/package.json",
        include_str!("../runtime/nodejs/lib/aws-greengrass-ipc-sdk-js/package.json"),
    ),
];

/// Lets anyone pass through `dir` (adds x for all, not r: no listing),
/// creating it.
fn traversable(dir: &Path) -> Result<(), LambdaError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| LambdaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o111)).map_err(err)
}

/// Writes the runtimes under `dir`, readable by functions' users.
fn write_runtime(dir: &Path) -> Result<(), LambdaError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LambdaError::Io { path, source }
    };
    for (name, text) in RUNTIME {
        let path = dir.join(name);
        let parent = path.parent().expect("under dir");
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
            .map_err(io(parent))?;
        std::fs::write(&path, text).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(io(&path))?;
    }
    Ok(())
}

/// The function IPC endpoint on `ipc_listener` and the router link, until
/// `shutdown`.
fn serve_functions(
    ctx: &Context,
    ipc_listener: tokio::net::TcpListener,
    runner: Arc<Mutex<work::Runner>>,
    shutdown: &CancellationToken,
) {
    let (up, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = ipc::router(ipc::Ipc {
        runner: runner.clone(),
        up,
        shadow_socket: ctx.layout.socket("shadow"),
        secrets_socket: ctx.layout.socket("secrets"),
        local: ipc_listener.local_addr().expect("a bound listener"),
    });
    let ipc_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(ipc_listener, app)
            .with_graceful_shutdown(ipc_shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("function IPC endpoint: {e}");
        }
    });
    let router_socket = ctx.layout.socket("router");
    let link_shutdown = shutdown.clone();
    let mut functions = link::Functions {
        runner,
        refusals: verdant_common::telemetry::Throttle::new(link::REFUSALS_LOGGED_EVERY),
    };
    tokio::spawn(async move {
        let link = verdant_link::Link {
            socket: &router_socket,
            endpoint: "lambda-runner",
            credit: 256,
            max_waiting: 10_000,
        };
        link.run(&mut functions, &mut up_rx, link_shutdown).await;
    });
}

/// Where container instances' cgroups go (stale ones of dead
/// lambda-runners swept), and whether container functions can run here or
/// why not.
fn containers() -> (Option<cgroup::Hierarchy>, Result<(), String>) {
    let cgroups = cgroup::Hierarchy::detect(
        Path::new("/sys/fs/cgroup"),
        &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        "verdant-functions",
    );
    if let Some(h) = &cgroups {
        h.sweep();
    }
    let containers = match (nix::unistd::geteuid().is_root(), &cgroups) {
        (false, _) => Err("a core running as root (it sets up namespaces and cgroups)".to_string()),
        (true, None) => Err("cgroups with the memory and pids controllers".to_string()),
        (true, Some(_)) => Ok(()),
    };
    (cgroups, containers)
}

/// How the deployed group's functions are read (at start and by
/// `ApplyGroup`). Zips unpacked by an earlier run are cleared: no instance
/// of it runs any more.
fn loader(ctx: &Context, config: &LambdaConfig, containers: Result<(), String>) -> Loader {
    let dirs = function::Dirs {
        functions: ctx.layout.functions_dir(),
        unpacked: ctx.layout.data_dir(SERVICE).join("artifacts"),
        models: ctx.layout.functions_dir().join(".models"),
        staged: std::collections::HashMap::new(),
        // Not known: connectors cannot run (and say so).
        exe: std::env::current_exe().unwrap_or_default(),
    };
    if let Err(e) = std::fs::remove_dir_all(&dirs.unpacked)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot clear {}: {e}", dirs.unpacked.display());
    }
    Loader {
        group_file: ctx.layout.current_group(),
        dirs,
        config: config.clone(),
        containers,
    }
}

/// The data directories (runtimes, the sandboxes' mount point), made and
/// opened to functions' users as they need.
fn directories(ctx: &Context) -> Result<(std::path::PathBuf, std::path::PathBuf), LambdaError> {
    let data = ctx.layout.data_dir(SERVICE);
    let runtimes = data.join("runtime");
    // Functions run as other users: they may pass through (not list) the
    // directories above their code and the runtime.
    let functions_dir = ctx.layout.functions_dir();
    for dir in [
        data.parent().unwrap_or(&data),
        data.as_path(),
        functions_dir.as_path(),
    ] {
        traversable(dir)?;
    }
    write_runtime(&runtimes)?;
    let sandbox_dir = data.join("sandbox");
    std::fs::create_dir_all(&sandbox_dir).map_err(|source| LambdaError::Io {
        path: sandbox_dir.clone(),
        source,
    })?;

    Ok((runtimes, sandbox_dir))
}

/// The function IPC endpoint's listener on 127.0.0.1:`port` and the port
/// it got (`0` picks one); a warning if functions on old SDKs cannot reach it.
async fn bind_ipc(port: u16) -> Result<(tokio::net::TcpListener, u16), LambdaError> {
    let bind = |source| LambdaError::Bind { port, source };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?.port();
    if let Some(warning) = config::legacy_sdk_warning(bound) {
        tracing::warn!("{warning}");
    }
    Ok((listener, bound))
}

/// Runs the group's functions until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), LambdaError> {
    let config = LambdaConfig::load::<LambdaError>(&ctx.config)?;
    let core = verdant_common::config::CoreSection::load::<LambdaError>(&ctx.config)?;
    let (cgroups, containers) = containers();
    let loader = Arc::new(loader(&ctx, &config, containers));
    let deploy::Loaded {
        deployment,
        group,
        specs,
    } = loader.load()?;
    deploy::log_unavailable(&specs);
    let (runtimes, sandbox_dir) = directories(&ctx)?;

    let (ipc_listener, ipc_port) = bind_ipc(config.ipc_port).await?;
    tracing::info!(
        functions = specs.len(),
        deployment = deployment.as_deref().unwrap_or(""),
        ipc_port,
        "function IPC endpoint on 127.0.0.1"
    );

    // One rotating log per function name.
    let log_dir = ctx.layout.logs_dir().join("functions");
    std::fs::create_dir_all(&log_dir).map_err(|source| LambdaError::Io {
        path: log_dir.clone(),
        source,
    })?;
    let logs = FunctionLogs::new(log_dir, config.log_max_bytes, config.log_keep);
    logs.follow(&specs);
    let (starts, starts_rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = Arc::new(Mutex::new(work::Runner::new(
        specs,
        starts,
        config.max_instances_per_function,
        config.max_work_items,
        Duration::from_secs(config.idle_secs),
    )));
    let supervisor = instance::Supervisor {
        runner: runner.clone(),
        env: instance::Environment {
            ipc_port,
            python: config.python.clone(),
            node: config.node.clone(),
            java: config.java.clone(),
            runtimes,
            exe: std::env::current_exe().map_err(|source| LambdaError::Io {
                path: "/proc/self/exe".into(),
                source,
            })?,
            sandbox_dir: sandbox_dir.clone(),
            cgroups,
            pids_limit: config.pids_limit,
            tmp_bytes: config.tmp_bytes,
            logs: logs.clone(),
            region: config.region.clone(),
            thing_name: core.thing_name,
            thing_arn: group.core().thing_arn.clone(),
        },
    };
    let supervised = tokio::spawn(supervisor.run(starts_rx, shutdown.clone()));

    serve_functions(&ctx, ipc_listener, runner.clone(), &shutdown);
    runner.lock().expect("runner lock").start_pinned();

    let note = format!(
        "Python, Node.js, Java and native functions with Greengrass v1 IPC on 127.0.0.1:{ipc_port}"
    );
    let api = grpc::Api {
        runner: runner.clone(),
        ipc_port,
        logs: logs.clone(),
        deployer: Deployer {
            loader,
            runner,
            logs,
            serial: tokio::sync::Mutex::new(()),
        },
    };
    let result = Server::new(Info::functional(SERVICE, note))
        .await
        .add_service(LambdaServer::new(api))
        .serve_ready(listener, shutdown)
        .await;
    // Instances stopped and their cgroups removed.
    let _ = supervised.await;
    result.map_err(LambdaError::from)
}
