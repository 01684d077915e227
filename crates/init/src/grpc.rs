//! `verdant.supervisor.v1.Supervisor`: decodes, calls the supervisor,
//! converts. Changing calls need the caller to be root or init's own user.

use std::pin::Pin;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use verdant_common::logs::ServiceLog;
use verdant_common::paths::INIT_SERVICE;
use verdant_common::uds::require_owner;
use verdant_proto::supervisor::v1 as pb;
use verdant_proto::supervisor::v1::supervisor_server::Supervisor as SupervisorApi;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::service::{self, Health, State};
use crate::supervisor::Supervisor;
use crate::versions::{SwitchError, Versions};

pub struct Api {
    pub supervisor: Supervisor,
    /// Cancelled by the Shutdown call; init then stops everything and exits.
    pub shutdown: CancellationToken,
    /// Init's own log, read by `ReadLogs` for the name `init`.
    pub init_log: ServiceLog,
    /// The core's versions (`versions/`).
    pub versions: Versions,
    /// Init's reaper, for `--version` runs of a new release and its hooks.
    pub reaper: crate::process::Reaper,
    /// `[init]`: the update hooks.
    pub policy: crate::config::InitSection,
    /// Set with the executable to run next when a switch or a rollback
    /// stops the core (then `shutdown` is cancelled).
    pub reexec: Arc<Mutex<Option<PathBuf>>>,
    /// One switch or rollback at a time.
    pub switching: tokio::sync::Mutex<()>,
    /// The router's socket, to ask it about the cloud connection.
    pub router: PathBuf,
}

impl Api {
    /// Stops every service, then init executes `exe` in its place.
    fn execute_next(&self, exe: PathBuf) {
        *self.reexec.lock().expect("reexec lock") = Some(exe);
        self.shutdown.cancel();
    }
}

fn switch_status(e: &SwitchError) -> Status {
    match e {
        SwitchError::Refused(_) => Status::failed_precondition(e.to_string()),
        SwitchError::Io { .. } => Status::internal(e.to_string()),
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Api {
    #[allow(clippy::result_large_err)]
    fn handle(&self, name: &str) -> Result<&service::Handle, Status> {
        self.supervisor
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no service named `{name}`")))
    }

    async fn command(
        &self,
        request: Request<pb::ServiceRequest>,
        what: service::Request,
    ) -> Result<Response<pb::Service>, Status> {
        require_owner(&request)?;
        let name = request.into_inner().name;
        let handle = self.handle(&name)?;
        tracing::info!(service = name, "operator asked to {what:?}");
        Ok(Response::new(to_proto(&handle.command(what).await)))
    }
}

#[tonic::async_trait]
impl SupervisorApi for Api {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        Ok(Response::new(pb::ListServicesResponse {
            services: self.supervisor.list().iter().map(to_proto).collect(),
        }))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let handle = self.handle(&request.get_ref().name)?;
        Ok(Response::new(to_proto(&handle.status.borrow())))
    }

    async fn start_service(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        self.command(request, service::Request::Start).await
    }

    async fn stop_service(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        self.command(request, service::Request::Stop).await
    }

    async fn restart_service(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        self.command(request, service::Request::Restart).await
    }

    type WatchServicesStream = Streamed<pb::Service>;

    async fn watch_services(
        &self,
        _request: Request<pb::WatchServicesRequest>,
    ) -> Result<Response<Self::WatchServicesStream>, Status> {
        let events = self.supervisor.events();
        let now: Vec<_> = self
            .supervisor
            .list()
            .iter()
            .map(to_proto)
            .map(Ok)
            .collect();
        // A watcher that falls behind the buffer gets every service's
        // current status again instead of the changes it missed.
        let supervisor = self.supervisor.clone();
        let changes = futures::StreamExt::flat_map(BroadcastStream::new(events), move |e| {
            let statuses = match e {
                Ok(status) => vec![status],
                Err(BroadcastStreamRecvError::Lagged(_)) => supervisor.list(),
            };
            tokio_stream::iter(
                statuses
                    .into_iter()
                    .map(|s| Ok(to_proto(&s)))
                    .collect::<Vec<_>>(),
            )
        });
        Ok(Response::new(Box::pin(
            tokio_stream::iter(now).chain(changes),
        )))
    }

    type ReadLogsStream = Streamed<pb::LogChunk>;

    async fn read_logs(
        &self,
        request: Request<pb::ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        let req = request.into_inner();
        let log = if req.name == INIT_SERVICE {
            self.init_log.clone()
        } else {
            self.handle(&req.name)?.log.clone()
        };
        // Subscribe before reading the tail so no line falls in between.
        let follow = req.follow.then(|| log.follow());
        let tail = log
            .tail(req.lines as usize)
            .map_err(|e| Status::internal(format!("cannot read {}: {e}", log.path().display())))?;
        let first = tokio_stream::iter((!tail.is_empty()).then(|| Ok(pb::LogChunk { data: tail })));
        let Some(follow) = follow else {
            return Ok(Response::new(Box::pin(first)));
        };
        let lines = BroadcastStream::new(follow).filter_map(|line| match line {
            Ok(data) => Some(Ok(pb::LogChunk {
                data: data.to_vec(),
            })),
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(pb::LogChunk {
                data: format!("[verdantctl fell behind: {n} chunks skipped]\n").into_bytes(),
            })),
        });
        Ok(Response::new(Box::pin(first.chain(lines))))
    }

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        require_owner(&request)?;
        tracing::info!("operator asked to shut the core down");
        self.shutdown.cancel();
        Ok(Response::new(pb::ShutdownResponse {}))
    }

    async fn switch_version(
        &self,
        request: Request<pb::SwitchVersionRequest>,
    ) -> Result<Response<pb::Versions>, Status> {
        require_owner(&request)?;
        let refused = |e: SwitchError| {
            tracing::warn!("version switch refused: {e}");
            switch_status(&e)
        };
        let _one = self.switching.lock().await;
        if self.reexec.lock().expect("reexec lock").is_some() {
            return Err(Status::failed_precondition(
                "the core is switching versions",
            ));
        }
        let versions = self.versions.clone();
        let r = request.into_inner();
        let prepared = tokio::task::spawn_blocking(move || versions.prepare(&r))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refused)?;
        if let Err(e) =
            crate::versions::says_version(&self.reaper, &prepared.exe, &prepared.version).await
        {
            Versions::discard(&prepared);
            return Err(refused(e));
        }
        let running = verdant_common::version::version();
        if let Err(why) = crate::versions::run_hook(
            &self.reaper,
            self.versions.root(),
            &self.policy.update_pre_hook,
            (running, &prepared.version),
            std::time::Duration::from_secs(self.policy.update_hook_timeout_secs),
        )
        .await
        {
            Versions::discard(&prepared);
            return Err(refused(SwitchError::Refused(format!(
                "the pre-update hook refused it: {why}"
            ))));
        }
        // Up now: the new version must bring it back.
        let cloud = crate::health::cloud(&self.router)
            .await
            .is_some_and(|(state, _)| state == "connected");
        let versions = self.versions.clone();
        let exe = tokio::task::spawn_blocking(move || versions.commit(&prepared, cloud))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refused)?;
        let status = self.versions.status();
        self.execute_next(exe);
        Ok(Response::new(status))
    }

    async fn rollback_version(
        &self,
        request: Request<pb::RollbackVersionRequest>,
    ) -> Result<Response<pb::Versions>, Status> {
        require_owner(&request)?;
        let _one = self.switching.lock().await;
        if self.reexec.lock().expect("reexec lock").is_some() {
            return Err(Status::failed_precondition(
                "the core is switching versions",
            ));
        }
        let exe = self
            .versions
            .roll_back("asked by the operator")
            .map_err(|e| switch_status(&e))?;
        let status = self.versions.status();
        self.execute_next(exe);
        Ok(Response::new(status))
    }

    async fn get_versions(
        &self,
        _request: Request<pb::GetVersionsRequest>,
    ) -> Result<Response<pb::Versions>, Status> {
        Ok(Response::new(self.versions.status()))
    }
}

fn to_proto(s: &service::Status) -> pb::Service {
    let state = match s.state {
        State::Stopped => pb::ServiceState::Stopped,
        State::Waiting => pb::ServiceState::Waiting,
        State::Starting => pb::ServiceState::Starting,
        State::Running => pb::ServiceState::Running,
        State::Backoff => pb::ServiceState::Backoff,
        State::Stopping => pb::ServiceState::Stopping,
        State::Failed => pb::ServiceState::Failed,
    };
    let health = match s.health {
        Health::Unknown => pb::Health::Unknown,
        Health::Serving => pb::Health::Serving,
        Health::NotServing => pb::Health::NotServing,
    };
    pb::Service {
        name: s.name.clone(),
        state: state.into(),
        health: health.into(),
        pid: s.pid.unwrap_or(0),
        started_at: s.started_at.map(prost_types::Timestamp::from),
        restart_count: s.restart_count,
        last_exit: s.last_exit.map(|e| e.to_string()).unwrap_or_default(),
        message: s.message.clone(),
        depends_on: s.depends_on.clone(),
        version: s.version.clone(),
        note: s.note.clone(),
    }
}
