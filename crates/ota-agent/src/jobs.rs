//! Cloud deployments over AWS IoT Jobs, through the router's link (the
//! ota-agent has no cloud connection of its own).
//!
//! Whenever the link opens or the cloud connects, the agent publishes
//! `$aws/things/<core>/jobs/start-next`. A job execution offered on
//! `notify-next` or `start-next/accepted` is read for a Verdant
//! deployment document and queued on the engine with origin
//! `iot-jobs:<jobId>`; a document that is not one is reported `FAILED` at
//! once. The engine's updates drive the reports on
//! `$aws/things/<core>/jobs/<jobId>/update`: `IN_PROGRESS` when the
//! deployment starts and at each new phase (statusDetails.phase),
//! `SUCCEEDED` or `FAILED` when it ends. Once the cloud
//! has answered the end (its answer echoes the report's client token), the
//! next job is asked for.
//!
//! Which job each deployment is for is its origin; the `jobs` table beside
//! the deployments records each job taken and whether its end was
//! reported (taken by the router's durable cloud queue), so that an end
//! reached or interrupted while the ota-agent was stopped is reported
//! after it starts again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use verdant_common::shutdown::CancellationToken;
use verdant_link::ToRouter;
use verdant_proto::ota::v1::deploy_request::Source;
use verdant_proto::ota::v1::{CheckUpdateRequest, DeployRequest, Deployment, GroupUrl, Phase};
use verdant_proto::router::v1 as pb;

use crate::engine::{Agent, DeployError};
use crate::link::FromRouter;
use crate::store::ended;
use crate::update::api::Api as UpdatesApi;

/// The origin of a deployment made for a job: this, then the job id.
pub const ORIGIN: &str = "iot-jobs:";
/// The deployment id the `jobs` table gives a job that is a software
/// update of the core: this, then the version (once it is known).
pub const UPDATE: &str = "update:";
/// The reason a job whose document is not a deployment fails with.
pub const NOT_VERDANT: &str = "not a Verdant deployment document";
/// The longest value of a job's `statusDetails` (AWS IoT's limit).
const DETAIL_MAX: usize = 1024;
/// The start of our client tokens, and the end of those of end reports.
const TOKEN: &str = "verdant-";
const END: &str = "-end";
/// The newest deployments looked at for a job taken but not recorded.
const SWEEP: u32 = 64;
/// How often ends the router did not take are sent again.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A job execution the cloud offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub job_id: String,
    pub document: Value,
}

/// The execution of a `notify-next` or `start-next/accepted` payload;
/// `None` when there is no job to do.
pub fn execution(payload: &[u8]) -> Option<Execution> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let e = v.get("execution")?;
    let job_id = e.get("jobId")?.as_str().filter(|j| !j.is_empty())?;
    Some(Execution {
        job_id: job_id.to_string(),
        document: e.get("jobDocument").cloned().unwrap_or(Value::Null),
    })
}

/// The deployment a job document asks for, or why it is none: its
/// `verdant` object names a `deploymentType` (by default `NewDeployment`)
/// and the group, inline (`group`) or by `groupUrl` (https) and `sha256`.
pub fn request(job_id: &str, document: &Value) -> Result<DeployRequest, String> {
    let Some(v) = document.get("verdant").and_then(Value::as_object) else {
        return Err(NOT_VERDANT.into());
    };
    let deployment_type = match v.get("deploymentType") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("verdant.deploymentType: must be a string".into()),
    };
    let source = match (v.get("group"), v.get("groupUrl")) {
        (Some(_), Some(_)) => return Err("verdant: give group or groupUrl, not both".into()),
        (Some(group @ Value::Object(_)), None) => Some(Source::GroupJson(
            serde_json::to_vec(group).expect("a JSON value serializes"),
        )),
        (Some(_), None) => return Err("verdant.group: must be an object (the group)".into()),
        (None, Some(Value::String(url))) => {
            if !url.starts_with("https://") {
                return Err("verdant.groupUrl: must be an https:// URL".into());
            }
            let sha256 = v
                .get("sha256")
                .and_then(Value::as_str)
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or("verdant.sha256: the group's SHA-256 in hex (64 digits) is needed")?;
            Some(Source::GroupUrl(GroupUrl {
                url: url.clone(),
                sha256: sha256.to_ascii_lowercase(),
            }))
        }
        (None, Some(_)) => return Err("verdant.groupUrl: must be a string".into()),
        (None, None) => None,
    };
    Ok(DeployRequest {
        source,
        deployment_type,
        origin: format!("{ORIGIN}{job_id}"),
    })
}

/// The software update a job document asks for, if it asks for one:
/// `verdant.update` is `{"version"?, "repository"? (https://), "force"?}`
/// (the newest release of the configured repository by default).
pub fn update_request(document: &Value) -> Option<Result<CheckUpdateRequest, String>> {
    let u = document.get("verdant")?.get("update")?;
    let parsed = (|| {
        let o = u.as_object().ok_or("verdant.update: must be an object")?;
        let text = |key: &str| match o.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("verdant.update.{key}: must be a string")),
        };
        let version = text("version")?;
        let repository = text("repository")?;
        if !repository.is_empty() && !repository.starts_with("https://") {
            return Err("verdant.update.repository: must be an https:// URL".into());
        }
        let force = match o.get("force") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("verdant.update.force: must be true or false".into()),
        };
        Ok(CheckUpdateRequest {
            repository,
            version,
            force,
        })
    })();
    Some(parsed)
}

/// How an update to `version` ended, from init's record of the last
/// update (`versions/update.json`) as this version sees it; `None` while
/// it has not ended (or this record is of another update).
pub fn update_end(version: &str, record: &Value) -> Option<(&'static str, Map<String, Value>)> {
    let field = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or_default();
    let (from, to, phase) = (field("from"), field("to"), field("phase"));
    let mut details = Map::new();
    details.insert("update".into(), version.into());
    details.insert("phase".into(), phase.into());
    let running = verdant_common::version::version();
    if phase == "succeeded" && to == version && running == version {
        return Some(("SUCCEEDED", details));
    }
    if (phase == "rolled back" && from == version) || (phase == "failed" && to == version) {
        details.insert("reason".into(), detail(field("reason")).into());
        return Some(("FAILED", details));
    }
    None
}

/// The job a deployment was made for.
pub fn job_of(d: &Deployment) -> Option<&str> {
    d.origin.strip_prefix(ORIGIN).filter(|j| !j.is_empty())
}

/// `s` cut to AWS IoT's longest `statusDetails` value.
fn detail(s: &str) -> String {
    if s.len() <= DETAIL_MAX {
        return s.to_string();
    }
    let mut end = DETAIL_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A job's status and details for a deployment: `IN_PROGRESS` while it
/// runs; when it has ended SUCCEEDED, or FAILED (rolled back and
/// cancelled included) with the reason.
pub fn status(d: &Deployment) -> (&'static str, Map<String, Value>) {
    let mut details = Map::new();
    details.insert("deploymentId".into(), d.deployment_id.clone().into());
    details.insert("phase".into(), d.phase().as_str_name().into());
    if !d.reason.is_empty() {
        details.insert("reason".into(), detail(&d.reason).into());
    }
    let status = match d.phase() {
        Phase::Succeeded => "SUCCEEDED",
        p if ended(p) => "FAILED",
        _ => "IN_PROGRESS",
    };
    (status, details)
}

/// The details of a job that failed before it became a deployment.
fn failed(reason: &str) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("reason".into(), detail(reason).into());
    details
}

/// An `UpdateJobExecution` request.
fn update(status: &str, details: &Map<String, Value>, token: &str) -> Vec<u8> {
    json!({ "status": status, "statusDetails": details, "clientToken": token })
        .to_string()
        .into()
}

/// One job taken, as the `jobs` table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Empty when the job failed before it became a deployment.
    pub deployment_id: String,
    /// Why it failed before it became a deployment.
    pub failure: String,
    /// Its end is in the router's queue for the cloud.
    pub reported: bool,
}

/// The `jobs` table, in the deployments database.
pub struct Ledger {
    conn: Connection,
}

impl Ledger {
    pub fn open(path: &Path) -> rusqlite::Result<Ledger> {
        let conn = verdant_common::sqlite::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                 job_id TEXT PRIMARY KEY,
                 deployment_id TEXT NOT NULL,
                 failure TEXT NOT NULL,
                 reported INTEGER NOT NULL
             );",
        )?;
        Ok(Ledger { conn })
    }

    pub fn get(&self, job: &str) -> rusqlite::Result<Option<Taken>> {
        self.conn
            .query_row(
                "SELECT deployment_id, failure, reported FROM jobs WHERE job_id = ?1",
                params![job],
                |r| {
                    Ok(Taken {
                        deployment_id: r.get(0)?,
                        failure: r.get(1)?,
                        reported: r.get(2)?,
                    })
                },
            )
            .optional()
    }

    pub fn insert(&self, job: &str, deployment_id: &str, failure: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO jobs (job_id, deployment_id, failure, reported)
             VALUES (?1, ?2, ?3, 0)",
            params![job, deployment_id, failure],
        )?;
        Ok(())
    }

    /// Records what a job became: its deployment (or update) id.
    pub fn became(&self, job: &str, deployment_id: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE jobs SET deployment_id = ?2 WHERE job_id = ?1",
            params![job, deployment_id],
        )?;
        Ok(())
    }

    /// Records why a job failed.
    pub fn fail(&self, job: &str, failure: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE jobs SET failure = ?2 WHERE job_id = ?1",
            params![job, failure],
        )?;
        Ok(())
    }

    pub fn reported(&self, job: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE jobs SET reported = 1 WHERE job_id = ?1",
            params![job],
        )?;
        Ok(())
    }

    /// The jobs whose end is not reported yet, oldest first.
    pub fn unreported(&self) -> rusqlite::Result<Vec<(String, Taken)>> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id, deployment_id, failure FROM jobs WHERE reported = 0 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                Taken {
                    deployment_id: r.get(1)?,
                    failure: r.get(2)?,
                    reported: false,
                },
            ))
        })?;
        rows.collect()
    }
}

/// The intake of jobs and the reports of their deployments.
pub struct Jobs {
    agent: Arc<Agent>,
    /// `$aws/things/<core>/jobs/`.
    prefix: String,
    ledger: Ledger,
    up: mpsc::UnboundedSender<ToRouter>,
    /// Whether the router's end reports were taken, per job.
    outcomes: mpsc::UnboundedSender<(String, bool)>,
    /// Jobs whose start was reported by this run of the agent.
    /// The last phase reported `IN_PROGRESS` for each job.
    reported_phase: HashMap<String, Phase>,
    /// Jobs whose end report waits for the router.
    ending: HashSet<String>,
    /// Client tokens: this prefix and a count.
    token_prefix: String,
    tokens: u64,
    /// Software updates of the core, and init's record of the last one.
    updates: Arc<UpdatesApi>,
    update_record: PathBuf,
    /// The deployments database (a job's update writes its version there
    /// from its own task, before the core stops for the switch).
    db: PathBuf,
    /// Updates that failed before init took them: (job, why).
    update_failed: mpsc::UnboundedSender<(String, String)>,
    /// Whether an update job waits for its end (swept every second).
    pending_updates: bool,
}

/// What a job's software update needs beside the jobs.
pub struct UpdateJobs {
    pub api: Arc<UpdatesApi>,
    /// `versions/update.json`.
    pub record: PathBuf,
    /// The deployments database.
    pub db: PathBuf,
}

impl Jobs {
    /// Runs until `shutdown`: what the router sends (`down`), the engine's
    /// updates, and the router's answers to the end reports.
    pub async fn run(
        agent: Arc<Agent>,
        thing: String,
        (ledger, update_jobs): (Ledger, UpdateJobs),
        up: mpsc::UnboundedSender<ToRouter>,
        mut down: mpsc::Receiver<FromRouter>,
        shutdown: CancellationToken,
    ) {
        let (outcomes, mut answered) = mpsc::unbounded_channel();
        let (update_failed, mut failed_updates) = mpsc::unbounded_channel();
        let mut updates = agent.subscribe();
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut jobs = Jobs {
            agent,
            prefix: format!("$aws/things/{thing}/jobs/"),
            ledger,
            up,
            outcomes,
            reported_phase: HashMap::new(),
            ending: HashSet::new(),
            token_prefix: format!("{TOKEN}{started_ms}-"),
            tokens: 0,
            updates: update_jobs.api,
            update_record: update_jobs.record,
            db: update_jobs.db,
            update_failed,
            pending_updates: false,
        };
        jobs.sweep();
        let mut sweeps =
            tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quick = tokio::time::interval(std::time::Duration::from_secs(1));
        quick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweeps.tick() => jobs.sweep(),
                _ = quick.tick(), if jobs.pending_updates => jobs.sweep(),
                Some((job, why)) = failed_updates.recv() => jobs.update_failed(&job, &why),
                m = down.recv() => match m {
                    Some(FromRouter::Cloud(true)) => {
                        jobs.sweep();
                        jobs.start_next();
                    }
                    Some(FromRouter::Cloud(false)) => {}
                    Some(FromRouter::Message { topic, payload }) => jobs.on_message(&topic, &payload),
                    None => return,
                },
                u = updates.recv() => match u {
                    Ok(d) => jobs.on_update(&d),
                    Err(broadcast::error::RecvError::Lagged(_)) => jobs.sweep(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some((job, taken)) = answered.recv() => jobs.answered(&job, taken),
            }
        }
    }

    fn token(&mut self) -> String {
        self.tokens += 1;
        format!("{}{}", self.token_prefix, self.tokens)
    }

    /// Sends `payload` to the cloud on `<prefix><suffix>` (QoS 1).
    fn publish(&self, suffix: &str, payload: Vec<u8>, outcome: Option<oneshot::Sender<bool>>) {
        let message = pb::Message {
            source: crate::SERVICE.into(),
            topic: format!("{}{suffix}", self.prefix),
            payload: payload.into(),
            qos: 1,
            ..pb::Message::default()
        };
        let _ = self.up.send(ToRouter { message, outcome });
    }

    /// Whether the cloud's answer carries the client token of one of our
    /// end reports, of this run or an earlier one (the cloud echoes it).
    fn answers_an_end(payload: &[u8]) -> bool {
        serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| {
                v.get("clientToken")
                    .and_then(Value::as_str)
                    .map(|t| t.starts_with(TOKEN) && t.ends_with(END))
            })
            .unwrap_or(false)
    }

    fn start_next(&mut self) {
        let token = self.token();
        let payload = json!({ "clientToken": token }).to_string().into();
        self.publish("start-next", payload, None);
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let Some(rest) = topic.strip_prefix(&self.prefix) else {
            return;
        };
        match rest {
            "notify-next" | "start-next/accepted" => {
                if let Some(e) = execution(payload) {
                    self.take(&e);
                }
            }
            "start-next/rejected" => {
                tracing::warn!(
                    answer = %String::from_utf8_lossy(payload),
                    "the cloud refused to start the next job"
                );
            }
            _ => {
                let Some((job, answer)) = rest
                    .strip_suffix("/update/accepted")
                    .map(|j| (j, true))
                    .or_else(|| rest.strip_suffix("/update/rejected").map(|j| (j, false)))
                else {
                    return;
                };
                if !answer {
                    tracing::warn!(
                        job,
                        answer = %String::from_utf8_lossy(payload),
                        "the cloud refused a job's update"
                    );
                }
                // The cloud answered the end of a job: on to the next one.
                if Self::answers_an_end(payload) {
                    self.start_next();
                }
            }
        }
    }

    /// Queues the deployment of a job offered, once.
    fn take(&mut self, e: &Execution) {
        let job = e.job_id.as_str();
        match self.ledger.get(job) {
            Ok(None) => {}
            Ok(Some(_)) => return tracing::debug!(job, "job already taken"),
            Err(err) => return tracing::error!(job, "the jobs table: {err}"),
        }
        let failure = match update_request(&e.document) {
            Some(Ok(update)) => return self.take_update(job, update),
            Some(Err(why)) => Err(why),
            None => request(job, &e.document),
        };
        let failure = match failure {
            Err(why) => why,
            Ok(request) => match self.agent.deploy(request) {
                Ok(d) => {
                    tracing::info!(job, id = d.deployment_id, "deployment queued for a job");
                    if let Err(err) = self.ledger.insert(job, &d.deployment_id, "") {
                        tracing::error!(job, "the jobs table: {err}");
                    }
                    return;
                }
                Err(DeployError::Invalid(why)) => why,
                // Not taken: the cloud offers it again once the
                // deployment running now has ended.
                Err(err) => return tracing::warn!(job, "job not taken now: {err}"),
            },
        };
        tracing::warn!(job, "job failed: {failure}");
        if let Err(err) = self.ledger.insert(job, "", &failure) {
            tracing::error!(job, "the jobs table: {err}");
        }
        self.report_end(job, "FAILED", &failed(&failure));
    }

    /// Reports a job's deployment as it starts and when it ends.
    fn on_update(&mut self, d: &Deployment) {
        let Some(job) = job_of(d) else {
            return;
        };
        let (status, details) = status(d);
        if status != "IN_PROGRESS" {
            self.reported_phase.remove(job);
            match self.ledger.get(job) {
                Ok(Some(t)) if t.reported => {}
                Ok(t) => {
                    if t.is_none() {
                        let _ = self.ledger.insert(job, &d.deployment_id, "");
                    }
                    self.report_end(job, status, &details);
                }
                Err(err) => tracing::error!(job, "the jobs table: {err}"),
            }
        } else if d.phase() != Phase::Queued
            && self.reported_phase.insert(job.to_string(), d.phase()) != Some(d.phase())
        {
            // IN_PROGRESS again at each new phase (not at each step), so
            // the fleet sees where the deployment is.
            let token = self.token();
            self.publish(
                &format!("{job}/update"),
                update(status, &details, &token),
                None,
            );
        }
    }

    /// Starts the software update a job asks for: `IN_PROGRESS`, then the
    /// release fetched and handed to init (its version recorded first,
    /// since the core then stops); the new version's sweep reports the end.
    fn take_update(&mut self, job: &str, update: CheckUpdateRequest) {
        if let Err(err) = self.ledger.insert(job, UPDATE, "") {
            return tracing::error!(job, "the jobs table: {err}");
        }
        tracing::info!(
            job,
            version = update.version,
            "software update taken for a job"
        );
        let mut details = Map::new();
        details.insert("update".into(), update.version.clone().into());
        let token = self.token();
        self.publish(
            &format!("{job}/update"),
            self::update("IN_PROGRESS", &details, &token),
            None,
        );
        let (api, db, failed, job) = (
            self.updates.clone(),
            self.db.clone(),
            self.update_failed.clone(),
            job.to_string(),
        );
        tokio::spawn(async move {
            let record = |version: &str| match Ledger::open(&db) {
                Ok(l) => {
                    if let Err(err) = l.became(&job, &format!("{UPDATE}{version}")) {
                        tracing::error!(job, "the jobs table: {err}");
                    }
                }
                Err(err) => tracing::error!(job, "the jobs table: {err}"),
            };
            if let Err(status) = api.apply_then(update, record).await {
                let _ = failed.send((job, status.message().to_string()));
            }
        });
        self.pending_updates = true;
    }

    /// A job's update failed before init took it.
    fn update_failed(&mut self, job: &str, why: &str) {
        tracing::warn!(job, "software update failed: {why}");
        if let Err(err) = self.ledger.fail(job, why) {
            tracing::error!(job, "the jobs table: {err}");
        }
        self.report_end(job, "FAILED", &failed(why));
    }

    /// Sends a job's end; the router's answer comes to [`Jobs::answered`].
    fn report_end(&mut self, job: &str, status: &str, details: &Map<String, Value>) {
        if !self.ending.insert(job.to_string()) {
            return;
        }
        tracing::info!(job, status, "reporting the job's end");
        let token = self.token() + END;
        let (tx, rx) = oneshot::channel();
        self.publish(
            &format!("{job}/update"),
            update(status, details, &token),
            Some(tx),
        );
        let outcomes = self.outcomes.clone();
        let job = job.to_string();
        tokio::spawn(async move {
            let ok = rx.await.unwrap_or(false);
            let _ = outcomes.send((job, ok));
        });
    }

    /// The router took a job's end for the cloud, or refused it (a full
    /// cloud queue that refuses new messages: sent again by the next
    /// sweep, within [`SWEEP_EVERY`]).
    fn answered(&mut self, job: &str, taken: bool) {
        if taken && let Err(err) = self.ledger.reported(job) {
            tracing::error!(job, "the jobs table: {err}");
        }
        if !taken {
            tracing::warn!(
                job,
                "the router's cloud queue did not take the job's end; sent again within {} s",
                SWEEP_EVERY.as_secs()
            );
        }
        self.ending.remove(job);
    }

    /// Reports the ends not reported yet: of deployments that ended while
    /// the agent was stopped or its updates were missed, ends the router
    /// refused, and of jobs taken by a run stopped before it recorded them.
    /// At start, on each cloud connection, every [`SWEEP_EVERY`] and after
    /// missed updates.
    fn sweep(&mut self) {
        if let Ok(recent) = self.agent.list(SWEEP) {
            for d in recent.iter().rev() {
                if let Some(job) = job_of(d)
                    && matches!(self.ledger.get(job), Ok(None))
                {
                    let _ = self.ledger.insert(job, &d.deployment_id, "");
                }
            }
        }
        let unreported = match self.ledger.unreported() {
            Ok(u) => u,
            Err(err) => return tracing::error!("the jobs table: {err}"),
        };
        let record: Option<Value> = std::fs::read(&self.update_record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        self.pending_updates = false;
        for (job, t) in unreported {
            if !t.failure.is_empty() {
                self.report_end(&job, "FAILED", &failed(&t.failure));
            } else if let Some(version) = t.deployment_id.strip_prefix(UPDATE) {
                match record.as_ref().and_then(|r| update_end(version, r)) {
                    Some((status, details)) if !version.is_empty() => {
                        self.report_end(&job, status, &details);
                    }
                    _ => self.pending_updates = true,
                }
            } else if let Ok(d) = self.agent.get(&t.deployment_id)
                && ended(d.phase())
            {
                let (status, details) = status(&d);
                self.report_end(&job, status, &details);
            }
        }
    }
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
