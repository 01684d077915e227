//! Software updates of the core, over `verdant.ota.v1.Updates`.

use std::path::Path;

use clap::Subcommand;
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::updates_client::UpdatesClient;

use crate::{dial, output, status_error};

#[derive(Debug, Subcommand)]
pub enum UpdateCmd {
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

pub async fn run(dir: &Path, command: UpdateCmd, json: bool) -> Result<(), String> {
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
    }
    Ok(())
}
