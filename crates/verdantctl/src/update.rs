//! Software updates of the core, over `verdant.ota.v1.Updates`.

use std::path::Path;

use clap::Subcommand;
use verdant_common::paths::INIT_SERVICE;
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::updates_client::UpdatesClient;
use verdant_proto::supervisor::v1 as sup;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

use crate::{dial, output, status_error};

#[derive(Debug, Subcommand)]
pub enum UpdateCmd {
    /// The running version, those installed, and the last update (the default).
    Status,
    /// Fetch a release, have verdant-init check and install it beside the
    /// running one, and follow the core as it restarts on it.
    Apply {
        /// The version wanted (default: the newest for this machine), or a
        /// repository packed into one file (`update-repo.py pack`).
        version: Option<String>,
        /// The repository (default: `[ota-agent] update_repository`).
        #[arg(long)]
        repo: Option<String>,
        /// Take a release that is not newer than the running one.
        #[arg(long)]
        force: bool,
        /// Return once verdant-init took it, without following the restart.
        #[arg(long)]
        no_wait: bool,
    },
    /// Back to the version the last update came from.
    Rollback {
        /// Return at once, without following the restart.
        #[arg(long)]
        no_wait: bool,
    },
    /// Which release the core would take from the repository, its
    /// metadata verified against the root the core trusts.
    Check {
        /// The version wanted (default: the newest for this machine).
        version: Option<String>,
        /// The repository: a directory, a file:/// or an https:// URL
        /// (default: `[ota-agent] update_repository`).
        #[arg(long)]
        repo: Option<String>,
        /// Take a release that is not newer than the running one.
        #[arg(long)]
        force: bool,
    },
}

/// A directory named relative to here, made absolute for the ota-agent.
fn repository(repo: Option<String>) -> String {
    match repo {
        Some(r) if !r.contains("://") && !r.starts_with('/') => {
            std::path::absolute(&r).map_or(r, |p| p.to_string_lossy().into_owned())
        }
        r => r.unwrap_or_default(),
    }
}

/// How long the core has to come back on the new version and settle.
const PATIENCE: std::time::Duration = std::time::Duration::from_mins(3);

async fn versions(dir: &Path) -> Result<sup::Versions, String> {
    SupervisorClient::new(dial(dir, INIT_SERVICE).await?)
        .get_versions(sup::GetVersionsRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| status_error(&e))
}

fn print_versions(v: &sup::Versions, json: bool) {
    if json {
        let update = v.update.as_ref().map(|u| {
            serde_json::json!({ "from": u.from, "to": u.to, "phase": u.phase, "reason": u.reason,
                "attempts": u.attempts, "started_ms": u.started_ms, "updated_ms": u.updated_ms })
        });
        output::json(
            &serde_json::json!({ "running": v.running, "current": v.current,
            "installed": v.installed, "update": update }),
        );
        return;
    }
    println!("running {}", v.running);
    if !v.current.is_empty() {
        println!("versions/current: {}", v.current);
    }
    if !v.installed.is_empty() {
        println!("installed: {}", v.installed.join(", "));
    }
    if let Some(u) = &v.update {
        let reason = if u.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", u.reason)
        };
        println!("last update: {} → {}, {}{reason}", u.from, u.to, u.phase);
    }
}

/// Follows the core through its restart until the update to `to` ends;
/// whether it ended as `want`.
async fn follow(dir: &Path, to: &str, want: &str, json: bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // The old core answers until it stops: wait for the new one.
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let Ok(v) = versions(dir).await else { continue };
        let ended = v.update.as_ref().is_some_and(|u| {
            u.phase != "switching" && (u.to == to || u.from == to) && v.running == u.to
        });
        if ended {
            print_versions(&v, json);
            let u = v.update.as_ref().expect("an update");
            return if u.phase == want {
                Ok(())
            } else {
                Err(format!("the update ended {}: {}", u.phase, u.reason))
            };
        }
        last = Some(v);
    }
    if let Some(v) = last {
        print_versions(&v, json);
    }
    Err(format!(
        "the core did not settle on {to} within {} s",
        PATIENCE.as_secs()
    ))
}

pub async fn run(dir: &Path, command: UpdateCmd, json: bool) -> Result<(), String> {
    let command = match command {
        UpdateCmd::Status => {
            print_versions(&versions(dir).await?, json);
            return Ok(());
        }
        UpdateCmd::Rollback { no_wait } => {
            let v = SupervisorClient::new(dial(dir, INIT_SERVICE).await?)
                .rollback_version(sup::RollbackVersionRequest {})
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            let to = v.update.map(|u| u.to).unwrap_or_default();
            if !json {
                println!("rolling back to {to}; the core restarts on it");
            }
            if no_wait {
                return Ok(());
            }
            return follow(dir, &to, "rolled back", json).await;
        }
        UpdateCmd::Apply {
            version,
            repo,
            force,
            no_wait,
        } => {
            // A file named instead of a version: the repository it packs.
            let (repo, version) = match version {
                Some(v) if Path::new(&v).is_file() => (Some(v), None),
                v => (repo, v),
            };
            let r = UpdatesClient::new(dial(dir, "ota-agent").await?)
                .apply_update(pb::CheckUpdateRequest {
                    repository: repository(repo),
                    version: version.unwrap_or_default(),
                    force,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if !json {
                println!(
                    "{} verified and handed to verdant-init (from {}); the core restarts on it",
                    r.version, r.repository
                );
            }
            if no_wait {
                return Ok(());
            }
            return follow(dir, &r.version, "succeeded", json).await;
        }
        c @ UpdateCmd::Check { .. } => c,
    };
    let mut api = UpdatesClient::new(dial(dir, "ota-agent").await?);
    match command {
        UpdateCmd::Check {
            version,
            repo,
            force,
        } => {
            let r = api
                .check_update(pb::CheckUpdateRequest {
                    repository: repository(repo),
                    version: version.unwrap_or_default(),
                    force,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            if json {
                output::json(&serde_json::json!({
                    "running": r.running, "version": r.version, "arch": r.arch, "os": r.os,
                    "min_version": r.min_version, "size": r.size, "sha256": r.sha256,
                    "targets_version": r.targets_version, "repository": r.repository,
                }));
            } else {
                println!(
                    "{} for {}-{} (running {}; from {} on): {} bytes, sha256 {}, in {} (targets version {})",
                    r.version,
                    r.arch,
                    r.os,
                    r.running,
                    r.min_version,
                    r.size,
                    r.sha256,
                    r.repository,
                    r.targets_version
                );
            }
        }
        _ => unreachable!("answered above"),
    }
    Ok(())
}
