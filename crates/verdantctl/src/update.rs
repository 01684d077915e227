//! Software updates of the core, over `verdant.ota.v1.Updates`.

use std::path::Path;

use clap::Subcommand;
use verdant_common::paths::INIT_SERVICE;
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::updates_client::UpdatesClient;
use verdant_proto::supervisor::v1 as sup;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

use crate::progress::{BAR_WIDTH, Progress, Shown, bar, bytes, fit, transfer};
use crate::{dial, output, status_error};

#[derive(Debug, Subcommand)]
pub enum UpdateCmd {
    /// The running version, those installed, and the last update (the default).
    Status,
    /// The installed versions (under `versions/`), which one runs and
    /// which one `versions/current` names.
    List,
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

/// `update list`: a line per installed version, marked `running` and
/// `current` where it is (the running version may be the package's, not
/// installed under `versions/`).
fn print_installed(v: &sup::Versions, json: bool) {
    let mut all = v.installed.clone();
    if !all.contains(&v.running) {
        all.push(v.running.clone());
    }
    let marks = |version: &str| {
        let mut m = Vec::new();
        if version == v.running {
            m.push("running");
        }
        if version == v.current {
            m.push("current");
        }
        if !v.installed.iter().any(|i| i == version) {
            m.push("not under versions/");
        }
        m
    };
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|version| {
                serde_json::json!({ "version": version, "running": *version == v.running,
                    "current": *version == v.current,
                    "installed": v.installed.contains(version) })
            })
            .collect();
        output::json(&serde_json::Value::Array(list));
        return;
    }
    for version in &all {
        let m = marks(version);
        if m.is_empty() {
            println!("{version}");
        } else {
            println!("{version}  ({})", m.join(", "));
        }
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
        UpdateCmd::List => {
            print_installed(&versions(dir).await?, json);
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
            let r = apply(
                dir,
                pb::CheckUpdateRequest {
                    repository: repository(repo),
                    version: version.unwrap_or_default(),
                    force,
                },
                json,
            )
            .await?;
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

/// How often `apply` asks the ota-agent where it is.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// `ApplyUpdate`, showing its progress meanwhile (a bar on a terminal, a
/// line per phase otherwise; nothing with `-o json`).
async fn apply(
    dir: &Path,
    request: pb::CheckUpdateRequest,
    json: bool,
) -> Result<pb::CheckUpdateResponse, String> {
    let mut api = UpdatesClient::new(dial(dir, "ota-agent").await?);
    let mut ask = api.clone();
    let applied = api.apply_update(request);
    tokio::pin!(applied);
    let mut progress = Progress::stdout(false);
    let answer = loop {
        tokio::select! {
            answer = &mut applied => break answer,
            () = tokio::time::sleep(PROGRESS_EVERY), if !json => {
                if let Ok(p) = ask.get_apply_progress(pb::GetApplyProgressRequest {}).await {
                    progress.show(&p.into_inner());
                }
            }
        }
    };
    progress.finish();
    answer
        .map(tonic::Response::into_inner)
        .map_err(|e| status_error(&e))
}

impl Shown for pb::ApplyProgress {
    fn json_line(&self) -> String {
        serde_json::json!({
            "phase": self.phase, "version": self.version,
            "bytes_done": self.bytes_done, "bytes_total": self.bytes_total,
        })
        .to_string()
    }

    /// One per phase: `DOWNLOADING  0.2.0  9.0 MiB`.
    fn status_line(&self) -> String {
        let mut parts = head(self);
        if self.phase == "DOWNLOADING" && self.bytes_total > 0 {
            parts.push(bytes(self.bytes_total));
        }
        parts.join("  ")
    }

    /// `DOWNLOADING  0.2.0  [######------]  4.5 MiB / 9.0 MiB (50%)`.
    fn progress_line(&self, width: usize) -> String {
        let mut parts = head(self);
        if self.phase == "DOWNLOADING" && self.bytes_total > 0 {
            parts.push(bar(self.bytes_done, self.bytes_total, BAR_WIDTH));
            parts.push(transfer(self.bytes_done, self.bytes_total));
        }
        fit(parts.join("  "), width)
    }
}

/// The phase and the release, as far as they are known.
fn head(p: &pb::ApplyProgress) -> Vec<String> {
    let mut parts = Vec::new();
    if !p.phase.is_empty() {
        parts.push(p.phase.clone());
        if !p.version.is_empty() {
            parts.push(p.version.clone());
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_shows_its_phase_and_a_bar_while_downloading() {
        let mut p = pb::ApplyProgress {
            phase: "CHECKING".into(),
            ..pb::ApplyProgress::default()
        };
        assert_eq!(p.status_line(), "CHECKING");
        p.phase = "DOWNLOADING".into();
        p.version = "0.2.0".into();
        p.bytes_done = 3 << 20;
        p.bytes_total = 12 << 20;
        assert_eq!(p.status_line(), "DOWNLOADING  0.2.0  12.0 MiB");
        assert_eq!(
            p.progress_line(80),
            "DOWNLOADING  0.2.0  [######------------------]  3.0 MiB / 12.0 MiB (25%)"
        );
        assert_eq!(p.progress_line(20).chars().count(), 19);
        // Idle: nothing to show.
        assert_eq!(pb::ApplyProgress::default().status_line(), "");
        let mut out = Progress::new(crate::progress::Mode::Lines, Vec::new());
        out.show(&pb::ApplyProgress::default());
        out.show(&p);
        p.bytes_done = 6 << 20;
        out.show(&p);
        assert_eq!(
            String::from_utf8(out.out).unwrap(),
            "DOWNLOADING  0.2.0  12.0 MiB\n"
        );
    }
}
