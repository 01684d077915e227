//! The deployment state machine: one deployment at a time, from a short
//! queue; each step persisted before it is taken, so that a restart ends
//! an interrupted deployment with the core wholly on the old group or
//! wholly on the new one.
//!
//! ```text
//! QUEUED → VALIDATING → STAGING ─switch─► APPLYING → HEALTH_CHECK → SUCCEEDED
//!              │            │                 │            │
//!              ▼            ▼                 └────────────┴─► ROLLING_BACK → ROLLED_BACK
//!            FAILED       FAILED                                            (CANCELLED)
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use verdant_common::shutdown::CancellationToken;
use verdant_group::Group;
use verdant_proto::ota::v1::{DeployRequest, Deployment, Phase, Problem};

use crate::apply::Daemons;
use crate::config::OtaAgentConfig;
use crate::content::{Code, Content, Progress};
use crate::stage::Staging;
use crate::store::{Store, ended};

/// Greengrass's deployment types.
pub const TYPES: [&str; 4] = [
    "NewDeployment",
    "Redeployment",
    "ResetDeployment",
    "ForceResetDeployment",
];

/// Why a deployment was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{waiting} deployments are waiting already (ota-agent.queue); try again when one has ended"
    )]
    QueueFull { waiting: usize },
    #[error("no deployment {0}")]
    NotFound(String),
    #[error("deployment {id} has ended ({phase})")]
    Ended { id: String, phase: &'static str },
    #[error("the deployments database: {0}")]
    Store(#[from] rusqlite::Error),
}

/// The ota-agent's deployments: the store, the queue and the one running.
pub struct Agent {
    store: Mutex<Store>,
    staging: Staging,
    content: Arc<Content>,
    daemons: Daemons,
    config: OtaAgentConfig,
    updates: broadcast::Sender<Deployment>,
    queue: Mutex<VecDeque<String>>,
    wake: Notify,
    /// The running deployment and what cancels it.
    running: Mutex<Option<(String, CancellationToken)>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a deployment ended badly.
struct Stop {
    reason: String,
    problems: Vec<Problem>,
    cancelled: bool,
}

impl Stop {
    fn cancelled(phase: Phase) -> Stop {
        Stop {
            reason: format!("cancelled during {}", phase.as_str_name()),
            problems: Vec::new(),
            cancelled: true,
        }
    }
}

impl From<String> for Stop {
    fn from(reason: String) -> Self {
        Stop {
            reason,
            problems: Vec::new(),
            cancelled: false,
        }
    }
}

impl Agent {
    pub fn new(
        store: Store,
        staging: Staging,
        content: Content,
        daemons: Daemons,
        config: OtaAgentConfig,
    ) -> Self {
        Agent {
            store: Mutex::new(store),
            staging,
            content: Arc::new(content),
            daemons,
            config,
            updates: broadcast::channel(256).0,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            running: Mutex::new(None),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("store lock")
    }

    /// Queues a deployment.
    pub fn deploy(&self, mut request: DeployRequest) -> Result<Deployment, DeployError> {
        if request.deployment_type.is_empty() {
            request.deployment_type = TYPES[0].into();
        }
        let kind = request.deployment_type.as_str();
        if !TYPES.contains(&kind) {
            return Err(DeployError::Invalid(format!(
                "deployment_type {kind:?}: must be one of {}",
                TYPES.join(", ")
            )));
        }
        let resets = kind.ends_with("ResetDeployment");
        match (&request.source, kind) {
            (None, "NewDeployment") => {
                return Err(DeployError::Invalid(
                    "a NewDeployment needs a group: group_json, bundle or group_url".into(),
                ));
            }
            (Some(_), _) if resets => {
                return Err(DeployError::Invalid(format!(
                    "a {kind} takes no group: it returns the core to an empty group"
                )));
            }
            _ => {}
        }
        let mut queue = self.queue.lock().expect("queue lock");
        if queue.len() >= self.config.queue {
            return Err(DeployError::QueueFull {
                waiting: queue.len(),
            });
        }
        let now = now_ms();
        let d = Deployment {
            deployment_id: uuid::Uuid::new_v4().to_string(),
            deployment_type: request.deployment_type.clone(),
            origin: request.origin.clone(),
            created_ms: now,
            updated_ms: now,
            ..Deployment::default()
        };
        self.store().insert(&d, &request)?;
        tracing::info!(
            id = d.deployment_id,
            kind = d.deployment_type,
            origin = d.origin,
            "deployment queued"
        );
        queue.push_back(d.deployment_id.clone());
        drop(queue);
        self.wake.notify_one();
        let _ = self.updates.send(d.clone());
        Ok(d)
    }

    pub fn get(&self, id: &str) -> Result<Deployment, DeployError> {
        self.store()
            .get(id)?
            .ok_or_else(|| DeployError::NotFound(id.into()))
    }

    pub fn list(&self, limit: u32) -> Result<Vec<Deployment>, DeployError> {
        Ok(self.store().list(limit)?)
    }

    /// The deployment the core runs now.
    pub fn current(&self) -> Option<String> {
        self.staging.current()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Deployment> {
        self.updates.subscribe()
    }

    /// Drops a queued deployment, or stops the running one at its next step.
    pub fn cancel(&self, id: &str) -> Result<Deployment, DeployError> {
        let mut d = self.get(id)?;
        if ended(d.phase()) {
            return Err(DeployError::Ended {
                id: id.into(),
                phase: d.phase().as_str_name(),
            });
        }
        let mut queue = self.queue.lock().expect("queue lock");
        if let Some(at) = queue.iter().position(|q| q == id) {
            queue.remove(at);
            drop(queue);
            self.end(
                &mut d,
                Phase::Cancelled,
                "cancelled before it started".into(),
            );
            return Ok(d);
        }
        drop(queue);
        if let Some((running, token)) = &*self.running.lock().expect("running lock")
            && running == id
        {
            token.cancel();
        }
        Ok(d)
    }

    /// Writes `d` and tells the watchers; false if it could not be written
    /// (the caller takes no step a restart could not undo).
    fn save(&self, d: &mut Deployment) -> bool {
        d.updated_ms = now_ms();
        let written = match self.store().update(d) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(id = d.deployment_id, "cannot record the deployment: {e}");
                false
            }
        };
        let _ = self.updates.send(d.clone());
        written
    }

    /// Enters `phase` at `step`, recorded before the step is taken.
    async fn enter(&self, d: &mut Deployment, phase: Phase, step: &str) -> bool {
        d.set_phase(phase);
        step.clone_into(&mut d.step);
        let written = self.save(d);
        tracing::info!(
            id = d.deployment_id,
            phase = phase.as_str_name(),
            step,
            "deployment"
        );
        if self.config.step_pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.step_pause_ms)).await;
        }
        written
    }

    fn end(&self, d: &mut Deployment, phase: Phase, reason: String) {
        d.set_phase(phase);
        d.step.clear();
        d.reason = reason;
        let _ = self.save(d);
        match phase {
            Phase::Succeeded => tracing::info!(id = d.deployment_id, "deployment succeeded"),
            _ => tracing::warn!(
                id = d.deployment_id,
                phase = phase.as_str_name(),
                "deployment ended: {}",
                d.reason
            ),
        }
    }

    /// Ends deployments a restart interrupted, then runs the queue until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.recover().await;
        loop {
            // Taken from the queue and made the running one at once, so a
            // cancel finds it in one place or the other.
            let next = {
                let mut queue = self.queue.lock().expect("queue lock");
                queue.pop_front().map(|id| {
                    let token = shutdown.child_token();
                    *self.running.lock().expect("running lock") = Some((id.clone(), token.clone()));
                    (id, token)
                })
            };
            match next {
                Some((id, token)) => {
                    // A shutdown mid-deployment leaves it to the next start's recovery.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.run_one(&id, &token) => {}
                    }
                    *self.running.lock().expect("running lock") = None;
                }
                None => tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.wake.notified() => {}
                },
            }
        }
    }

    /// Deployments left unfinished by a stop: queued ones queued again; one
    /// that was running ended, the core put back on its previous deployment
    /// if it had been switched.
    async fn recover(&self) {
        let unfinished = match self.store().unfinished() {
            Ok(u) => u,
            Err(e) => {
                tracing::error!("cannot read the deployments database: {e}");
                return;
            }
        };
        for mut d in unfinished {
            if d.phase() == Phase::Queued {
                self.queue
                    .lock()
                    .expect("queue lock")
                    .push_back(d.deployment_id.clone());
                continue;
            }
            let interrupted = d.phase().as_str_name();
            let switched = self.current().as_deref() == Some(d.deployment_id.as_str());
            let applied = switched
                || matches!(
                    d.phase(),
                    Phase::Applying | Phase::HealthCheck | Phase::RollingBack
                );
            if !applied {
                self.staging.discard(&d.deployment_id);
                self.end(
                    &mut d,
                    Phase::Failed,
                    format!("interrupted during {interrupted} by a stop of the ota-agent; nothing was changed"),
                );
                continue;
            }
            let (back, outcome) = self.back_to_previous(&mut d).await;
            self.end(
                &mut d,
                if back {
                    Phase::RolledBack
                } else {
                    Phase::Failed
                },
                format!("interrupted during {interrupted} by a stop of the ota-agent; {outcome}"),
            );
        }
    }

    async fn run_one(&self, id: &str, token: &CancellationToken) {
        let (mut d, request) = match (self.get(id), self.store().request(id)) {
            (Ok(d), Ok(Some(r))) => (d, r),
            (Err(e), _) => return tracing::error!(id, "{e}"),
            (_, r) => return tracing::error!(id, "the deployment's request is missing: {r:?}"),
        };
        if ended(d.phase()) {
            return;
        }
        let outcome = self.steps(&mut d, &request, token).await;
        self.content.forget_scratch(id);
        match outcome {
            Ok(()) => {
                self.end(&mut d, Phase::Succeeded, String::new());
                self.prune(&d);
            }
            Err(stop) => {
                d.problems = stop.problems;
                let switched = self.current().as_deref() == Some(id);
                if switched {
                    // Cancelled or failed, what the switch changed is undone.
                    let (back, outcome) = self.back_to_previous(&mut d).await;
                    self.end(
                        &mut d,
                        if back {
                            Phase::RolledBack
                        } else {
                            Phase::Failed
                        },
                        format!("{}; {outcome}", stop.reason),
                    );
                } else {
                    self.staging.discard(id);
                    let phase = if stop.cancelled {
                        Phase::Cancelled
                    } else {
                        Phase::Failed
                    };
                    self.end(&mut d, phase, stop.reason);
                }
            }
        }
    }

    /// VALIDATING and DOWNLOADING: the group checked, its code in the
    /// store and checked by the lambda-runner. Nothing on the core changes.
    async fn prepare(
        &self,
        d: &mut Deployment,
        request: &DeployRequest,
        token: &CancellationToken,
    ) -> Result<(Vec<u8>, Code), Stop> {
        self.enter(d, Phase::Validating, "group").await;
        if token.is_cancelled() {
            return Err(Stop::cancelled(Phase::Validating));
        }
        let (json, bundled) = self.group_json(request, &d.deployment_id).await?;
        let group = Group::parse(&json).map_err(|problems| {
            invalid(problems.into_iter().map(|p| (p.path, p.reason)).collect())
        })?;
        d.group_id.clone_from(&group.id);
        d.group_version = group.version.clone().unwrap_or_default();
        // From the cloud, code comes over HTTPS only: a job may not make
        // the core read its own files.
        if d.origin.starts_with("iot-jobs:") {
            let local: Vec<(String, String)> = group
                .artifacts
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    !group
                        .artifact_url(a)
                        .is_some_and(|u| u.starts_with("https://"))
                })
                .map(|(i, _)| {
                    (
                        format!("Artifacts[{i}].Url"),
                        "a cloud job's artifacts must be https:// URLs".to_string(),
                    )
                })
                .collect();
            if !local.is_empty() {
                return Err(invalid(local));
            }
        }
        let code = if Content::brings_code(&group, &bundled) {
            self.enter(d, Phase::Downloading, "functions' code and models")
                .await;
            // Not cut short by a cancel: the download and the store
            // settle first (a cancel takes effect at the next step).
            let code = self.gather(d, group, bundled).await?;
            if token.is_cancelled() {
                return Err(Stop::cancelled(Phase::Downloading));
            }
            code
        } else {
            Code::new()
        };
        self.enter(d, Phase::Validating, "broker, lambda-runner, secrets")
            .await;
        let deadline = Instant::now() + Duration::from_secs(self.config.health_check_secs);
        let problems = self
            .daemons
            .check_group(&json, &self.content.staged(&code), deadline)
            .await
            .map_err(|why| Stop::from(format!("validating: {why}")))?;
        if !problems.is_empty() {
            return Err(invalid(problems));
        }

        Ok((json, code))
    }

    /// Every step of one deployment, up to a healthy core.
    async fn steps(
        &self,
        d: &mut Deployment,
        request: &DeployRequest,
        token: &CancellationToken,
    ) -> Result<(), Stop> {
        let (json, code) = self.prepare(d, request, token).await?;
        self.enter(d, Phase::Staging, "deployments/<id>/group.json")
            .await;
        if token.is_cancelled() {
            return Err(Stop::cancelled(Phase::Staging));
        }
        let id = d.deployment_id.clone();
        self.staging
            .write(&id, &json)
            .map_err(|e| format!("staging: {e}"))?;
        self.content
            .record(&id, &code)
            .map_err(|e| format!("staging: {e}"))?;
        d.previous = self.current().unwrap_or_default();
        if !self
            .enter(d, Phase::Staging, "switching deployments/current")
            .await
        {
            return Err(Stop::from(
                "the deployments database could not be written: not switching".to_string(),
            ));
        }
        self.staging
            .switch(&id)
            .map_err(|e| format!("switching deployments/current: {e}"))?;
        self.content
            .install(&id, &code)
            .map_err(|e| format!("staging: {e}"))?;

        let deadline = Instant::now() + Duration::from_secs(self.config.health_check_secs);
        let outcome = tokio::select! {
            () = token.cancelled() => return Err(Stop::cancelled(Phase::Applying)),
            outcome = self.apply_in_steps(d, &id, deadline) => outcome,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(why) if d.deployment_type == "ForceResetDeployment" => {
                tracing::warn!(id, "forced reset: {why}");
                return Ok(());
            }
            Err(why) => return Err(Stop::from(format!("applying: {why}"))),
        };
        d.applied = outcome.applied;
        if d.deployment_type == "ForceResetDeployment" {
            return Ok(());
        }
        self.enter(
            d,
            Phase::HealthCheck,
            "daemons SERVING, pinned functions running",
        )
        .await;
        let settle = Duration::from_millis(self.config.health_settle_ms);
        tokio::select! {
            () = token.cancelled() => Err(Stop::cancelled(Phase::HealthCheck)),
            health = self.daemons.healthy(&outcome.fresh, settle, deadline) => {
                health.map_err(|why| Stop::from(format!("health check: {why}")))
            }
        }
    }

    /// [`Daemons::apply`], each daemon a step of APPLYING.
    async fn apply_in_steps(
        &self,
        d: &mut Deployment,
        id: &str,
        deadline: Instant,
    ) -> Result<crate::apply::Outcome, String> {
        let mut outcome = crate::apply::Outcome::default();
        self.enter(d, Phase::Applying, "router").await;
        outcome
            .applied
            .push(self.daemons.apply_router(id, deadline).await?);
        self.enter(d, Phase::Applying, "lambda-runner").await;
        self.daemons
            .apply_lambda(id, deadline, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// The group a request deploys, as JSON, and the code its bundle holds.
    async fn group_json(
        &self,
        request: &DeployRequest,
        id: &str,
    ) -> Result<crate::content::Given, Stop> {
        let content = self.content.clone();
        let (request_, id_) = (request.clone(), id.to_string());
        let given = tokio::task::spawn_blocking(move || content.source(&request_, &id_))
            .await
            .map_err(|e| e.to_string())??;
        if let Some(given) = given {
            return Ok(given);
        }
        if request.deployment_type.ends_with("ResetDeployment") {
            let current = Group::load(&self.staging.current_group())
                .map_err(|e| format!("reading the current group for its core: {e}"))?;
            let empty = empty_group(&current);
            return Ok((
                serde_json::to_vec_pretty(&empty).expect("a group serializes"),
                Vec::new(),
            ));
        }
        let json = std::fs::read(self.staging.current_group()).map_err(|e| {
            format!(
                "a Redeployment without a group deploys the current one: {}: {e}",
                self.staging.current_group().display()
            )
        })?;
        Ok((json, Vec::new()))
    }

    /// DOWNLOADING: the code the deployment brings put in the store, the
    /// bytes downloaded reported as they come.
    async fn gather(
        &self,
        d: &mut Deployment,
        group: Group,
        bundled: Vec<crate::bundle::BundledFunction>,
    ) -> Result<Code, Stop> {
        let progress = Arc::new(Progress::default());
        let (content, seen) = (self.content.clone(), progress.clone());
        let mut work = tokio::task::spawn_blocking(move || content.gather(&group, &bundled, &seen));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                done = &mut work => {
                    d.bytes_done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
                    d.bytes_total = progress.total.load(std::sync::atomic::Ordering::Relaxed);
                    let _ = self.save(d);
                    return done.map_err(|e| e.to_string())?.map_err(|e| Stop::from(format!("downloading: {e}")));
                }
                _ = tick.tick() => {
                    let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
                    if done != d.bytes_done {
                        d.bytes_done = done;
                        d.bytes_total = progress.total.load(std::sync::atomic::Ordering::Relaxed);
                        let _ = self.save(d);
                    }
                }
            }
        }
    }

    /// Puts `current` and the functions' code back as they were before
    /// `d` and has the daemons take that; whether the core is back, and
    /// how that went.
    async fn back_to_previous(&self, d: &mut Deployment) -> (bool, String) {
        let previous = d.previous.clone();
        if previous.is_empty() {
            return (
                false,
                "there was no previous deployment to go back to: the core stays on this one".into(),
            );
        }
        self.enter(d, Phase::RollingBack, &format!("back to {previous}"))
            .await;
        if let Err(e) = self.staging.switch(&previous) {
            return (false, format!("going back to {previous} failed: {e}"));
        }
        if let Err(e) = self.content.undo(&d.deployment_id) {
            return (
                false,
                format!(
                    "deployments/current is back on {previous}, but its functions' code could not be put back: {e}"
                ),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(self.config.health_check_secs);
        match self.daemons.apply(&previous, deadline).await {
            Ok(outcome) => {
                d.applied = outcome.applied;
                (true, format!("the core is back on deployment {previous}"))
            }
            Err(why) => (
                false,
                format!("deployments/current is back on {previous}, but applying it failed: {why}"),
            ),
        }
    }

    /// Removes the directories of ended deployments beyond the newest
    /// `keep`, never the current one or the one before it.
    fn prune(&self, d: &Deployment) {
        let Ok(all) = self.store().list(10_000) else {
            return;
        };
        let old: Vec<String> = all
            .into_iter()
            .filter(|o| {
                o.deployment_id != d.deployment_id
                    && o.deployment_id != d.previous
                    && ended(o.phase())
                    && self.staging.dir_of(&o.deployment_id).is_dir()
            })
            .map(|o| o.deployment_id)
            .skip(self.config.keep)
            .collect();
        self.staging.prune(&old);
        self.content.gc();
    }
}

/// A deployment stopped by what validation found: `(JSON path, why)`.
fn invalid(problems: Vec<(String, String)>) -> Stop {
    Stop {
        reason: format!(
            "invalid group: {} problem{}; the running group is unchanged",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
        problems: problems
            .into_iter()
            .map(|(path, message)| Problem { path, message })
            .collect(),
        cancelled: false,
    }
}

/// The group of `current`'s core alone: what a reset deploys.
fn empty_group(current: &Group) -> Group {
    Group {
        id: current.id.clone(),
        name: current.name.clone(),
        version: None,
        core_definition_version: current.core_definition_version.clone(),
        device_definition_version: verdant_group::DeviceDefinition::default(),
        function_definition_version: verdant_group::FunctionDefinition::default(),
        subscription_definition_version: verdant_group::SubscriptionDefinition::default(),
        logger_definition_version: current.logger_definition_version.clone(),
        resource_definition_version: verdant_group::ResourceDefinition::default(),
        connector_definition_version: verdant_group::ConnectorDefinition::default(),
        artifacts: Vec::new(),
    }
}
