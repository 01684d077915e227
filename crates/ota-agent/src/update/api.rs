//! `verdant.ota.v1.Updates` on the ota-agent's socket: which release of a
//! repository this core would take, checked against the root it trusts.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::updates_server::{Updates, UpdatesServer};

use super::{Client, ReleaseError, Repository, find};
use crate::fetch::Fetcher;

pub struct Api {
    /// The trusted metadata (`data/ota-agent/tuf/`).
    pub state: PathBuf,
    /// The root the operator installed (`[ota-agent] update_root`).
    pub anchor: PathBuf,
    /// `[ota-agent] update_repository`.
    pub repository: Option<String>,
    /// `[ota-agent] ca_file`.
    pub ca_file: Option<PathBuf>,
    /// One refresh of the trusted metadata at a time.
    pub busy: Arc<tokio::sync::Mutex<()>>,
}

impl Api {
    pub fn service(self) -> UpdatesServer<Api> {
        UpdatesServer::new(self)
    }
}

// Taken by value to read as `.map_err(status)`.
#[allow(clippy::needless_pass_by_value)]
fn status(e: ReleaseError) -> Status {
    match e {
        ReleaseError::BadVersion(_) => Status::invalid_argument(e.to_string()),
        ReleaseError::NoRelease { .. } | ReleaseError::NoVersion { .. } => {
            Status::not_found(e.to_string())
        }
        _ => Status::failed_precondition(e.to_string()),
    }
}

#[tonic::async_trait]
impl Updates for Api {
    async fn check_update(
        &self,
        request: Request<pb::CheckUpdateRequest>,
    ) -> Result<Response<pb::CheckUpdateResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let r = request.into_inner();
        let repository = if r.repository.is_empty() {
            self.repository.clone().ok_or_else(|| {
                Status::failed_precondition(
                    "no repository: name one, or set [ota-agent] update_repository",
                )
            })?
        } else {
            r.repository
        };
        if !self.anchor.is_file() {
            return Err(Status::failed_precondition(format!(
                "{} is missing: copy the repository's metadata/1.root.json there to trust it",
                self.anchor.display()
            )));
        }
        let _one = self.busy.lock().await;
        let (state, anchor, ca) = (
            self.state.clone(),
            self.anchor.clone(),
            self.ca_file.clone(),
        );
        let location = repository.clone();
        let release = tokio::task::spawn_blocking(move || {
            let fetcher =
                Fetcher::new(ca.as_deref()).map_err(|e| ReleaseError::Fetch(e.to_string()))?;
            let repo = Repository::new(&location, &fetcher)?;
            let client = Client::open(&state, &anchor, time::OffsetDateTime::now_utc())?;
            let want = (!r.version.is_empty()).then_some(r.version.as_str());
            find(
                &client,
                &repo,
                verdant_common::version::version(),
                want,
                r.force,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            tracing::warn!(repository, "update refused: {e}");
            status(e)
        })?;
        tracing::info!(
            repository,
            version = release.manifest.version,
            "update available"
        );
        Ok(Response::new(pb::CheckUpdateResponse {
            running: verdant_common::version::version().into(),
            version: release.manifest.version,
            arch: release.manifest.arch,
            os: release.manifest.os,
            min_version: release.manifest.min_version,
            size: release.executable.length,
            sha256: release.executable.sha256().unwrap_or_default().into(),
            targets_version: release.targets_version,
            repository,
        }))
    }
}
