//! verdantctl: inspect and steer a running core over its gRPC sockets.

mod broker;
mod ca;
mod connectors;
mod deploy;
mod devices;
mod discovery;
mod functions;
mod group;
mod output;
mod progress;
mod router;
mod secrets;
mod shadow;
mod update;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tonic::transport::Channel;
use verdant_common::config::{ConfigSource, CoreSection};
use verdant_common::paths::{DEFAULT_ROOT, INIT_SERVICE, Layout, ROOT_ENV, RUNTIME_DIR_ENV};
use verdant_common::uds::{self, UdsError};
use verdant_proto::supervisor::v1 as pb;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

#[derive(Debug, Parser)]
#[command(version, about = "Inspect and steer a running Verdant core")]
struct Args {
    /// Root directory of the core.
    #[arg(long, global = true, env = ROOT_ENV, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Directory of the core's sockets (default: `core.runtime_dir`, else `<root>/run`).
    #[arg(long, global = true, env = RUNTIME_DIR_ENV)]
    socket_dir: Option<PathBuf>,
    /// Output format of listings.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Every service (or one): state, health, pid, uptime, restarts.
    Status {
        /// Only this service (default: every service).
        service: Option<String>,
    },
    /// Start a stopped or failed service.
    Start {
        /// The service, as `status` names it (e.g. `broker`).
        service: String,
    },
    /// Stop a service; it stays stopped until started.
    Stop {
        /// The service, as `status` names it (e.g. `broker`).
        service: String,
    },
    /// Stop and start a service; clears a failed state.
    Restart {
        /// The service, as `status` names it (e.g. `broker`).
        service: String,
    },
    /// A service's captured output (or, with --function, a function's).
    Logs {
        /// The service, as `status` names it, or `init` for the
        /// supervisor's own log.
        #[arg(required_unless_present = "function")]
        service: Option<String>,
        /// A function's log instead: its name or qualified ARN.
        #[arg(long, conflicts_with = "service")]
        function: Option<String>,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
    },
    /// Stop every service and verdant-init.
    Shutdown,
    /// The broker's clients: connected devices and persistent sessions.
    Clients,
    /// Close a client's connection (a persistent session stays).
    Disconnect {
        /// The client's MQTT client id (a device's thing name).
        client_id: String,
    },
    /// The subscription table with messages per route, and what no route
    /// allowed (or add a route to the deployed group).
    Routes {
        #[command(subcommand)]
        command: Option<group::RoutesCmd>,
    },
    /// Devices: add one to the deployed group with a new certificate, list
    /// them, revoke one's certificate.
    #[command(subcommand)]
    Device(group::DeviceCmd),
    /// Have the running core read the deployed group again: the router's
    /// subscription table, the broker's devices, the lambda-runner's
    /// functions (only new or changed ones start again).
    Reload,
    /// The cloud connection and the queue of messages bound for it.
    Cloud,
    /// The group's functions: instances, queues and counters (and invoke
    /// one, or read its logs).
    Functions {
        #[command(subcommand)]
        command: Option<functions::FunctionsCmd>,
    },
    /// Device shadows: get, update, delete, list named shadows.
    #[command(subcommand)]
    Shadow(shadow::ShadowCmd),
    /// Every message routed from now on: where it went, or why nowhere.
    Trace {
        /// Only from this source: a thing name or ARN, a function ARN,
        /// `cloud` or `GGShadowService`.
        #[arg(long)]
        source: Option<String>,
        /// Only topics matching this MQTT filter.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Deploy a group (a group.json, a bundle directory or a tarball) and
    /// follow the deployment to its end; exits 0 only if it succeeded.
    Deploy(deploy::DeployArgs),
    /// Deployments: list, show, watch or cancel one.
    Deployments {
        #[command(subcommand)]
        command: Option<deploy::DeploymentsCmd>,
    },
    /// What devices are told to connect to (the discovery API's
    /// connectivity): list, or set, add, remove, clear the operator's list.
    Connectivity {
        #[command(subcommand)]
        command: Option<discovery::ConnectivityCmd>,
    },
    /// The server certificate, the group CAs and the devices'
    /// certificates with their expiry (or rotate the server certificate).
    Certificates {
        #[command(subcommand)]
        command: Option<discovery::CertificatesCmd>,
    },
    /// The last discovery requests devices made, newest first.
    Discoveries,
    /// Secrets kept on the core: list, show, put (the value from stdin),
    /// delete. Values never leave through here.
    Secrets {
        #[command(subcommand)]
        command: Option<secrets::SecretsCmd>,
    },
    /// Software updates of the core: status, check, apply, rollback.
    Update {
        #[command(subcommand)]
        command: Option<update::UpdateCmd>,
    },
    /// The group CA: show it, or rotate it with an overlap.
    Ca {
        #[command(subcommand)]
        command: Option<ca::CaCmd>,
    },
    /// The connectors this release ships and their parameters.
    Connectors {
        #[command(subcommand)]
        command: Option<connectors::ConnectorsCmd>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::Completions { shell } = args.command {
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "verdantctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Cmd::Connectors { command } = &args.command {
        connectors::run(command.as_ref(), args.output == Format::Json);
        return ExitCode::SUCCESS;
    }
    if let Some(result) = group::offline(&args.root, &args.command, args.output == Format::Json) {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("verdantctl: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("verdantctl: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The socket directory: the flag, else the core config's `runtime_dir`,
/// else `<root>/run`.
fn socket_dir(args: &Args) -> Result<PathBuf, String> {
    if let Some(dir) = &args.socket_dir {
        return std::path::absolute(dir).map_err(|e| e.to_string());
    }
    let layout = Layout::new(&args.root, None).map_err(|e| e.to_string())?;
    let configured = ConfigSource::load(&layout.config_file())
        .ok()
        .and_then(|src| src.section::<CoreSection>("core").ok())
        .and_then(|core| core.runtime_dir);
    Ok(Layout::new(&args.root, configured.as_deref())
        .map_err(|e| e.to_string())?
        .runtime_dir()
        .to_path_buf())
}

/// A channel to `service`'s socket in `dir`, or the one-line reason why not.
pub async fn dial(dir: &Path, service: &str) -> Result<Channel, String> {
    let socket = dir.join(format!("{service}.sock"));
    let what = if service == INIT_SERVICE {
        "core"
    } else {
        service
    };
    match uds::connect(&socket).await {
        Ok(channel) => Ok(channel),
        Err(UdsError::Missing { .. }) => Err(format!(
            "{what} not running at {}: no socket {}",
            dir.display(),
            socket.display()
        )),
        Err(e) => Err(format!("{what} not running at {}: {e}", dir.display())),
    }
}

pub fn status_error(e: &tonic::Status) -> String {
    match e.code() {
        tonic::Code::Unavailable => format!("core stopped answering: {}", e.message()),
        _ => e.message().to_string(),
    }
}

/// Runs the commands answered by daemons other than init; gives the
/// others back.
async fn other_daemons(dir: &Path, command: Cmd, json: bool) -> Result<Result<(), String>, Cmd> {
    Ok(match command {
        Cmd::Clients => broker::clients(dir, json).await,
        Cmd::Disconnect { client_id } => broker::disconnect(dir, client_id).await,
        Cmd::Routes { command: None } => router::routes(dir, json).await,
        Cmd::Reload => group::reload(dir).await,
        Cmd::Functions { command } => functions::run(dir, command, json).await,
        Cmd::Cloud => router::cloud(dir, json).await,
        Cmd::Shadow(cmd) => shadow::run(dir, cmd, json).await,
        Cmd::Trace { source, topic } => router::trace(dir, source, topic, json).await,
        Cmd::Deploy(deploy_args) => deploy::deploy(dir, deploy_args, json).await,
        Cmd::Deployments { command } => deploy::run(dir, command, json).await,
        Cmd::Connectivity { command } => discovery::connectivity(dir, command, json).await,
        Cmd::Certificates { command } => discovery::certificates(dir, command, json).await,
        Cmd::Discoveries => discovery::requests(dir, json).await,
        Cmd::Secrets { command } => secrets::run(dir, command, json).await,
        Cmd::Update { command } => {
            update::run(dir, command.unwrap_or(update::UpdateCmd::Status), json).await
        }
        Cmd::Logs {
            function: Some(function),
            follow,
            lines,
            ..
        } => {
            let cmd = functions::FunctionsCmd::Logs {
                function,
                follow,
                lines,
            };
            functions::run(dir, Some(cmd), json).await
        }
        other => return Err(other),
    })
}

async fn run(args: Args) -> Result<(), String> {
    let dir = socket_dir(&args)?;
    let json = args.output == Format::Json;
    let command = match other_daemons(&dir, args.command, json).await {
        Ok(done) => return done,
        Err(command) => command,
    };
    let mut client = SupervisorClient::new(dial(&dir, INIT_SERVICE).await?);
    match command {
        Cmd::Status { service: None } => {
            let list = client
                .list_services(pb::ListServicesRequest {})
                .await
                .map_err(|e| status_error(&e))?
                .into_inner()
                .services;
            output::services(&list, json);
        }
        Cmd::Status {
            service: Some(name),
        } => {
            let svc = client
                .get_service(pb::GetServiceRequest { name })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            output::services(&[svc], json);
        }
        Cmd::Start { service } => {
            let r = client
                .start_service(pb::ServiceRequest { name: service })
                .await;
            output::services(&[r.map_err(|e| status_error(&e))?.into_inner()], json);
        }
        Cmd::Stop { service } => {
            let r = client
                .stop_service(pb::ServiceRequest { name: service })
                .await;
            output::services(&[r.map_err(|e| status_error(&e))?.into_inner()], json);
        }
        Cmd::Restart { service } => {
            let r = client
                .restart_service(pb::ServiceRequest { name: service })
                .await;
            output::services(&[r.map_err(|e| status_error(&e))?.into_inner()], json);
        }
        Cmd::Logs {
            service,
            follow,
            lines,
            ..
        } => {
            let mut stream = client
                .read_logs(pb::ReadLogsRequest {
                    name: service.unwrap_or_default(),
                    lines,
                    follow,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await.map_err(|e| status_error(&e))? {
                if out
                    .write_all(&chunk.data)
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break; // stdout closed (e.g. piped into head)
                }
            }
        }
        Cmd::Shutdown => {
            client
                .shutdown(pb::ShutdownRequest {})
                .await
                .map_err(|e| status_error(&e))?;
            println!("core at {} is shutting down", dir.display());
        }
        // Completions and every command another daemon answers.
        other => unreachable!("{other:?} is handled before connecting to init"),
    }
    Ok(())
}
