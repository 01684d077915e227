//! Deployments of a group, over the ota-agent's
//! `verdant.ota.v1.Deployments`: `deploy` queues one and follows it to its
//! end; `deployments` lists, shows, watches and cancels them.

mod render;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::deployments_client::DeploymentsClient;

use crate::progress::Progress;
use crate::{dial, output};

/// The socket's service name: `<runtime>/ota-agent.sock`.
const SERVICE: &str = "ota-agent";

/// What `deploy` puts in `origin`, shown in `deployments list`.
const ORIGIN: &str = "verdantctl";

/// Waits before each new attempt to follow a deployment whose stream
/// broke (the ota-agent restarted): about 16 s in all, longer
/// than init takes to restart a daemon.
const REATTACH: [Duration; 6] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Greengrass's deployment types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DeploymentType {
    /// The group given, as a new deployment.
    #[default]
    #[value(name = "NewDeployment")]
    New,
    /// The group given deployed again; without one, the group the core runs.
    #[value(name = "Redeployment")]
    Redeployment,
    /// Back to an empty group: the core alone, no devices, functions or routes.
    #[value(name = "ResetDeployment")]
    Reset,
    /// The same as `ResetDeployment` on a core.
    #[value(name = "ForceResetDeployment")]
    ForceReset,
}

impl DeploymentType {
    fn api_name(self) -> &'static str {
        match self {
            Self::New => "NewDeployment",
            Self::Redeployment => "Redeployment",
            Self::Reset => "ResetDeployment",
            Self::ForceReset => "ForceResetDeployment",
        }
    }

    fn is_reset(self) -> bool {
        matches!(self, Self::Reset | Self::ForceReset)
    }
}

/// `verdantctl deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// A `group.json`, a bundle directory (`group.json` and
    /// `functions/<name>/<version>/...`) or a tarball of one (.tar,
    /// .tar.gz, .tgz). None for a reset, or for a Redeployment of the
    /// group the core runs.
    pub source: Option<PathBuf>,
    /// The deployment type.
    #[arg(long = "type", value_enum, ignore_case = true, default_value_t)]
    pub deployment_type: DeploymentType,
    /// Print the deployment's id once it is queued, and do not follow it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCmd {
    /// The newest deployments first; `*` marks the one the core runs
    /// (the default).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Everything about one deployment: phase, reason, validation
    /// problems, what each daemon applied.
    Show {
        /// The deployment's id.
        id: String,
    },
    /// Follow a deployment until it ends; exits 0 only if it succeeded.
    Watch {
        /// The deployment's id.
        id: String,
    },
    /// Drop a queued deployment, or stop a running one and undo what it
    /// changed.
    Cancel {
        /// The deployment's id.
        id: String,
    },
}

/// What `deploy` sends, decided from the arguments alone.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    /// A reset deploys no group; a Redeployment the current one.
    Nothing,
    /// A `group.json`, sent as its bytes.
    GroupJson(&'a Path),
    /// A bundle directory or tarball, read by the agent from its path.
    Bundle(&'a Path),
}

/// What `source` is, by its name (`is_dir`: whether it is a directory).
fn classify(
    source: Option<&Path>,
    is_dir: bool,
    kind: DeploymentType,
) -> Result<Source<'_>, String> {
    let Some(path) = source else {
        return if kind.is_reset() || kind == DeploymentType::Redeployment {
            Ok(Source::Nothing)
        } else {
            Err(
                "give a group.json, a bundle directory or a tarball (.tar, .tar.gz, .tgz) to deploy"
                    .into(),
            )
        };
    };
    if kind.is_reset() {
        return Err(format!(
            "a {} deploys an empty group: give it no file",
            kind.api_name()
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if is_dir {
        Ok(Source::Bundle(path))
    } else if Path::new(&name).extension() == Some("json".as_ref()) {
        Ok(Source::GroupJson(path))
    } else if [".tar", ".tar.gz", ".tgz"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        Ok(Source::Bundle(path))
    } else {
        Err(format!(
            "{}: not a group.json, a bundle directory or a tarball (.tar, .tar.gz, .tgz)",
            path.display()
        ))
    }
}

/// The request `deploy` sends: the file read or its absolute path.
fn request(args: &DeployArgs) -> Result<pb::DeployRequest, String> {
    let path = args.source.as_deref();
    let is_dir = match path {
        Some(p) => std::fs::metadata(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .is_dir(),
        None => false,
    };
    let source = match classify(path, is_dir, args.deployment_type)? {
        Source::Nothing => None,
        Source::GroupJson(p) => Some(pb::deploy_request::Source::GroupJson(
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        )),
        Source::Bundle(p) => {
            // The agent reads it on the core, from its own working directory.
            let abs = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let abs = abs
                .to_str()
                .ok_or_else(|| format!("{}: the path is not UTF-8", abs.display()))?;
            Some(pb::deploy_request::Source::Bundle(abs.to_string()))
        }
    };
    Ok(pb::DeployRequest {
        source,
        deployment_type: args.deployment_type.api_name().into(),
        origin: ORIGIN.into(),
    })
}

/// The agent's refusal as one line (`INVALID_ARGUMENT`,
/// `RESOURCE_EXHAUSTED`, `NOT_FOUND`, ... carry their own words).
fn agent_error(e: &Status) -> String {
    match e.code() {
        Code::Unavailable => format!("ota-agent stopped answering: {}", e.message()),
        Code::Unimplemented => "this core's ota-agent does not take deployments".into(),
        code if e.message().is_empty() => format!("ota-agent: {}", code.description()),
        _ => e.message().to_string(),
    }
}

/// Whether a failed call means the connection broke (the agent went away)
/// rather than an answer.
fn connection_broke(e: &Status) -> bool {
    matches!(
        e.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted
    )
}

async fn client(dir: &Path) -> Result<DeploymentsClient<Channel>, String> {
    Ok(DeploymentsClient::new(dial(dir, SERVICE).await?))
}

pub async fn deploy(dir: &Path, args: DeployArgs, json: bool) -> Result<(), String> {
    let req = request(&args)?;
    let queued = client(dir)
        .await?
        .deploy(req)
        .await
        .map_err(|e| agent_error(&e))?
        .into_inner();
    if args.no_wait {
        if json {
            println!("{}", render::json_line(&queued));
        } else {
            println!("{}", queued.deployment_id);
        }
        return Ok(());
    }
    if !json {
        println!("deployment {}", queued.deployment_id);
    }
    let end = follow(
        dir,
        &queued.deployment_id,
        &mut Progress::stdout(json),
        &REATTACH,
    )
    .await?;
    conclude(&end, json)
}

pub async fn run(dir: &Path, cmd: Option<DeploymentsCmd>, json: bool) -> Result<(), String> {
    match cmd.unwrap_or(DeploymentsCmd::List { limit: 50 }) {
        DeploymentsCmd::List { limit } => {
            let resp = client(dir)
                .await?
                .list_deployments(pb::ListDeploymentsRequest { limit })
                .await
                .map_err(|e| agent_error(&e))?
                .into_inner();
            list(&resp, json);
            Ok(())
        }
        DeploymentsCmd::Show { id } => {
            let mut api = client(dir).await?;
            let d = api
                .get_deployment(pb::DeploymentRequest { deployment_id: id })
                .await
                .map_err(|e| agent_error(&e))?
                .into_inner();
            // Whether the core runs it is only a mark: shown without it.
            let current = api
                .list_deployments(pb::ListDeploymentsRequest { limit: 1 })
                .await
                .is_ok_and(|r| r.into_inner().current == d.deployment_id);
            if json {
                output::json(&render::view(&d, Some(current)));
            } else {
                print_lines(&render::show_lines(&d, current));
            }
            Ok(())
        }
        DeploymentsCmd::Watch { id } => {
            let end = follow(dir, &id, &mut Progress::stdout(json), &REATTACH).await?;
            conclude(&end, json)
        }
        DeploymentsCmd::Cancel { id } => {
            let d = client(dir)
                .await?
                .cancel_deployment(pb::DeploymentRequest { deployment_id: id })
                .await
                .map_err(|e| agent_error(&e))?
                .into_inner();
            if json {
                output::json(&render::view(&d, None));
            } else if render::has_ended(&d) {
                print_lines(&render::outcome_lines(&d));
            } else {
                println!(
                    "deployment {}: {} (cancelling)",
                    d.deployment_id,
                    render::status_line(&d)
                );
            }
            Ok(())
        }
    }
}

fn list(resp: &pb::ListDeploymentsResponse, json: bool) {
    if json {
        #[derive(serde::Serialize)]
        struct ListView<'a> {
            current: &'a str,
            deployments: Vec<render::DeploymentView<'a>>,
        }
        output::json(&ListView {
            current: &resp.current,
            deployments: resp
                .deployments
                .iter()
                .map(|d| render::view(d, Some(d.deployment_id == resp.current)))
                .collect(),
        });
        return;
    }
    output::table(&render::LIST_HEADER, &render::list_rows(resp));
    if resp.current.is_empty() {
        println!("\nthe core runs no deployment");
    } else if resp
        .deployments
        .iter()
        .any(|d| d.deployment_id == resp.current)
    {
        println!("\n* the deployment the core runs");
    } else {
        println!("\nthe core runs deployment {}", resp.current);
    }
}

fn print_lines(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

/// Prints how the deployment ended; an error unless it succeeded.
fn conclude(d: &pb::Deployment, json: bool) -> Result<(), String> {
    if !json {
        print_lines(&render::outcome_lines(d));
    }
    if render::succeeded(d) {
        Ok(())
    } else {
        Err(format!(
            "deployment {} ended {}",
            d.deployment_id,
            render::phase_name(d)
        ))
    }
}

/// Shows each change of deployment `id` until it ends, and returns how it
/// ended. When the stream breaks (the agent restarted), attaches again
/// after each of the `waits` before giving up.
async fn follow(
    dir: &Path,
    id: &str,
    progress: &mut Progress<impl Write>,
    waits: &[Duration],
) -> Result<pb::Deployment, String> {
    let ended = follow_inner(dir, id, progress, waits).await;
    progress.finish();
    ended
}

async fn follow_inner(
    dir: &Path,
    id: &str,
    progress: &mut Progress<impl Write>,
    waits: &[Duration],
) -> Result<pb::Deployment, String> {
    let mut stream = client(dir)
        .await?
        .watch_deployment(pb::DeploymentRequest {
            deployment_id: id.into(),
        })
        .await
        .map_err(|e| agent_error(&e))?
        .into_inner();
    let mut attempts = waits.iter();
    loop {
        let mut why = match stream.message().await {
            Ok(Some(d)) => {
                attempts = waits.iter();
                progress.show(&d);
                if render::has_ended(&d) {
                    return Ok(d);
                }
                continue;
            }
            Ok(None) => "the stream ended before the deployment did".to_string(),
            Err(e) if connection_broke(&e) => e.message().to_string(),
            Err(e) => return Err(agent_error(&e)),
        };
        stream = loop {
            let Some(wait) = attempts.next() else {
                return Err(format!(
                    "lost the ota-agent while following deployment {id} ({why}); \
                     `verdantctl deployments watch {id}` follows it again"
                ));
            };
            tokio::time::sleep(*wait).await;
            match reattach(dir, id).await {
                Ok(Attached::Ended(d)) => {
                    progress.show(&d);
                    return Ok(d);
                }
                Ok(Attached::Following(s)) => break s,
                Err(Reattach::Retry(e)) => why = e,
                Err(Reattach::Refused(e)) => return Err(e),
            }
        };
    }
}

enum Attached {
    /// It ended while nobody followed it.
    Ended(pb::Deployment),
    Following(Streaming<pb::Deployment>),
}

enum Reattach {
    /// The agent is not back yet.
    Retry(String),
    /// It is back and answered: no use trying again.
    Refused(String),
}

/// Dials the agent again: where the deployment stands, then its changes.
async fn reattach(dir: &Path, id: &str) -> Result<Attached, Reattach> {
    let status = |e: Status| {
        if connection_broke(&e) {
            Reattach::Retry(e.message().to_string())
        } else {
            Reattach::Refused(agent_error(&e))
        }
    };
    let mut api = client(dir).await.map_err(Reattach::Retry)?;
    let req = pb::DeploymentRequest {
        deployment_id: id.into(),
    };
    let now = api
        .get_deployment(req.clone())
        .await
        .map_err(status)?
        .into_inner();
    if render::has_ended(&now) {
        return Ok(Attached::Ended(now));
    }
    let stream = api.watch_deployment(req).await.map_err(status)?;
    Ok(Attached::Following(stream.into_inner()))
}

#[cfg(test)]
mod tests;
