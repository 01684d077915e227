//! `verdant.ota.v1.Updates` on the ota-agent's socket: which release of a
//! repository this core would take, checked against the root it trusts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::updates_server::{Updates, UpdatesServer};
use verdant_proto::supervisor::v1 as supervisor;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

use super::{Client, ReleaseError, Repository, find};
use crate::fetch::Fetcher;

pub struct Api {
    /// The trusted metadata (`data/ota-agent/tuf/`).
    pub state: PathBuf,
    /// The root the operator installed (`config/update-root.json`).
    pub anchor: PathBuf,
    /// `[ota-agent] update_repository`.
    pub repository: Option<String>,
    /// `[ota-agent] ca_file`.
    pub ca_file: Option<PathBuf>,
    /// One refresh of the trusted metadata at a time.
    pub busy: Arc<tokio::sync::Mutex<()>>,
    /// Where releases are downloaded (`data/ota-agent/downloads/`).
    pub downloads: PathBuf,
    /// verdant-init's socket, which installs and switches.
    pub init_socket: PathBuf,
    /// Where a repository packed into a tarball is unpacked.
    pub scratch: PathBuf,
    /// Where the apply under way is.
    pub progress: Arc<Progress>,
}

/// The phases of an apply, as `GetApplyProgress` names them.
const CHECKING: &str = "CHECKING";
const DOWNLOADING: &str = "DOWNLOADING";
const SWITCHING: &str = "SWITCHING";

/// Where the apply under way is, for `GetApplyProgress`: the number of
/// the last apply begun, and its state.
#[derive(Debug, Default)]
pub struct Progress(std::sync::Mutex<(u64, pb::ApplyProgress)>);

impl Progress {
    fn get(&self) -> pb::ApplyProgress {
        self.0.lock().expect("progress lock").1.clone()
    }

    /// A new apply, in `phase`: what it reports through. Its state goes
    /// back to idle when the [`Idle`] made of it is dropped, unless
    /// another apply began meanwhile (whose state is shown from then on).
    fn begin(self: &Arc<Self>, phase: &str) -> Ticket {
        let mut state = self.0.lock().expect("progress lock");
        state.0 += 1;
        state.1 = pb::ApplyProgress {
            phase: phase.into(),
            ..pb::ApplyProgress::default()
        };
        Ticket {
            progress: self.clone(),
            apply: state.0,
        }
    }
}

/// One apply's way of reporting its progress.
#[derive(Debug, Clone)]
struct Ticket {
    progress: Arc<Progress>,
    apply: u64,
}

impl Ticket {
    /// Changes the state shown, while this apply is the last one begun.
    fn set(&self, change: impl FnOnce(&mut pb::ApplyProgress)) {
        let mut state = self.progress.0.lock().expect("progress lock");
        if state.0 == self.apply {
            change(&mut state.1);
        }
    }
}

/// Puts the progress back to idle when the apply ends, however it ends.
struct Idle(Ticket);

impl Drop for Idle {
    fn drop(&mut self) {
        self.0.set(|p| *p = pb::ApplyProgress::default());
    }
}

impl Api {
    pub fn service(self: &Arc<Self>) -> UpdatesServer<Api> {
        UpdatesServer::from_arc(self.clone())
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

/// What the answer says of a release.
fn describe(release: &super::Release, repository: String) -> pb::CheckUpdateResponse {
    pb::CheckUpdateResponse {
        running: verdant_common::version::version().into(),
        version: release.manifest.version.clone(),
        arch: release.manifest.arch.clone(),
        os: release.manifest.os.clone(),
        min_version: release.manifest.min_version.clone(),
        size: release.executable.length,
        sha256: release.executable.sha256().unwrap_or_default().into(),
        targets_version: release.targets_version,
        repository,
    }
}

impl Api {
    /// The release `r` asks for, its repository's metadata refreshed;
    /// with `download` (through which the download reports its progress),
    /// its executable fetched too, and what init needs to check it again
    /// (the roots after the first, the targets).
    async fn locate(
        &self,
        r: pb::CheckUpdateRequest,
        download: Option<Ticket>,
    ) -> Result<(super::Release, String, Option<Staged>), Status> {
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
        let (state, anchor, ca, downloads, scratch) = (
            self.state.clone(),
            self.anchor.clone(),
            self.ca_file.clone(),
            self.downloads.clone(),
            self.scratch.clone(),
        );
        let mut location = repository.clone();
        let found = tokio::task::spawn_blocking(move || {
            // A repository packed into one file: unpacked, then read as a
            // directory (checked all the same).
            if location.starts_with('/') && Path::new(&location).is_file() {
                let _ = std::fs::remove_dir_all(&scratch);
                let dir = crate::bundle::unpack(Path::new(&location), &scratch)
                    .map_err(|e| ReleaseError::Fetch(e.to_string()))?;
                location = dir.to_string_lossy().into_owned();
            }
            let fetcher =
                Fetcher::new(ca.as_deref()).map_err(|e| ReleaseError::Fetch(e.to_string()))?;
            let repo = Repository::new(&location, &fetcher)?;
            let client = Client::open(&state, &anchor, time::OffsetDateTime::now_utc())?;
            let want = (!r.version.is_empty()).then_some(r.version.as_str());
            let release = find(
                &client,
                &repo,
                verdant_common::version::version(),
                want,
                r.force,
            )?;
            let Some(progress) = download else {
                return Ok((release, None));
            };
            progress.set(|p| {
                p.phase = DOWNLOADING.into();
                p.version.clone_from(&release.manifest.version);
                p.bytes_total = release.executable.length;
            });
            let path = super::download(&release, &fetcher, &downloads, &mut |done, _| {
                progress.set(|p| p.bytes_done = done);
            })?;
            let (roots, targets) = client.evidence()?;
            Ok((
                release,
                Some(Staged {
                    path,
                    roots,
                    targets,
                    force: r.force,
                }),
            ))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e: ReleaseError| {
            tracing::warn!(repository, "update refused: {e}");
            status(e)
        })?;
        Ok((found.0, repository, found.1))
    }
}

/// A release fetched for init.
struct Staged {
    path: PathBuf,
    roots: Vec<Vec<u8>>,
    targets: Vec<u8>,
    force: bool,
}

#[tonic::async_trait]
impl Updates for Api {
    async fn check_update(
        &self,
        request: Request<pb::CheckUpdateRequest>,
    ) -> Result<Response<pb::CheckUpdateResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let (release, repository, _) = self.locate(request.into_inner(), None).await?;
        tracing::info!(
            repository,
            version = release.manifest.version,
            "update available"
        );
        Ok(Response::new(describe(&release, repository)))
    }

    async fn apply_update(
        &self,
        request: Request<pb::CheckUpdateRequest>,
    ) -> Result<Response<pb::CheckUpdateResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        self.apply(request.into_inner()).await.map(Response::new)
    }

    async fn get_apply_progress(
        &self,
        _request: Request<pb::GetApplyProgressRequest>,
    ) -> Result<Response<pb::ApplyProgress>, Status> {
        Ok(Response::new(self.progress.get()))
    }
}

impl Api {
    /// Fetches the release `r` asks for and hands it to verdant-init,
    /// which checks it again and switches the core to it (answered before
    /// the core stops).
    pub async fn apply(
        &self,
        r: pb::CheckUpdateRequest,
    ) -> Result<pb::CheckUpdateResponse, Status> {
        self.apply_then(r, |_| {}).await
    }

    /// As [`Api::apply`], telling `staged` the version fetched before
    /// init is asked to switch (after which this process is stopped).
    pub async fn apply_then(
        &self,
        r: pb::CheckUpdateRequest,
        staged_version: impl FnOnce(&str),
    ) -> Result<pb::CheckUpdateResponse, Status> {
        let idle = Idle(self.progress.begin(CHECKING));
        let (release, repository, staged) = self.locate(r, Some(idle.0.clone())).await?;
        idle.0.set(|p| p.phase = SWITCHING.into());
        staged_version(&release.manifest.version);
        let staged = staged.expect("downloaded");
        let channel = verdant_common::uds::connect(&self.init_socket)
            .await
            .map_err(|e| Status::unavailable(format!("verdant-init: {e}")))?;
        SupervisorClient::new(channel)
            .switch_version(supervisor::SwitchVersionRequest {
                executable: staged.path.to_string_lossy().into_owned(),
                manifest: release.manifest_bytes.clone(),
                roots: staged.roots,
                targets: staged.targets,
                force: staged.force,
            })
            .await?;
        tracing::info!(
            repository,
            version = release.manifest.version,
            "update handed to verdant-init: the core restarts on it"
        );
        Ok(describe(&release, repository))
    }
}
