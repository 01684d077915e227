//! Cloud deployments over AWS IoT Jobs: the core's cloud is a real
//! Mosquitto, on which the test plays the AWS IoT Jobs service with a
//! rumqttc client; the ota-agent reaches it only through the router.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::{Value, json};
use verdant_integration_tests::cloud::{Cloud, bound_port};
use verdant_integration_tests::groups::{arn, thing};
use verdant_integration_tests::mqtt::{connect, subscribed};
use verdant_integration_tests::{Core, Options, PATIENCE, publish, release_repo, small_verdant};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::Phase;
use verdant_proto::ota::v1::deployments_client::DeploymentsClient;

/// `[core] thing_name` by default.
const JOBS: &str = "$aws/things/verdant-core/jobs/";

/// A group whose one route carries `subject` from device a to b.
fn group(subject: &str) -> Value {
    json!({
        "Id": "jobs-test",
        "Version": subject,
        "CoreDefinitionVersion": { "Cores": [thing("core", 1)] },
        "DeviceDefinitionVersion": { "Devices": [thing("a", 2), thing("b", 3)] },
        "SubscriptionDefinitionVersion": { "Subscriptions": [
            { "Id": "a-to-b", "Source": arn("a"), "Subject": subject, "Target": arn("b") },
        ]},
    })
}

fn deployment_document(subject: &str) -> Value {
    json!({ "verdant": { "deploymentType": "NewDeployment", "group": group(subject) } })
}

/// A relay to the cloud that drops every connection until it is opened,
/// so that the Jobs service is listening before the core first connects.
fn gate(listener: tokio::net::TcpListener, upstream: u16) -> Arc<AtomicBool> {
    let open = Arc::new(AtomicBool::new(false));
    let is_open = open.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            if !is_open.load(Ordering::SeqCst) {
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut cloud) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut cloud).await;
                }
            });
        }
    });
    open
}

/// One update the core sent for a job.
#[derive(Debug, Clone)]
struct Update {
    job: String,
    status: String,
    details: Value,
}

/// AWS IoT Jobs for the core's thing, as far as the ota-agent uses it:
/// jobs queued in order; `start-next` answered with the first one not
/// ended; each update answered `accepted` with its client token; a job
/// ends with a terminal status.
struct JobsService {
    client: AsyncClient,
    events: EventLoop,
    queued: VecDeque<(String, Value)>,
    updates: Vec<Update>,
    /// The jobs `start-next` handed out, in order.
    started: Vec<String>,
}

impl JobsService {
    async fn connect(port: u16) -> JobsService {
        let (client, mut events) = connect(port, "iot-jobs", false).await;
        subscribed(&client, &mut events, &format!("{JOBS}#")).await;
        JobsService {
            client,
            events,
            queued: VecDeque::new(),
            updates: Vec::new(),
            started: Vec::new(),
        }
    }

    async fn send(&self, suffix: &str, payload: &Value) {
        self.client
            .publish(
                format!("{JOBS}{suffix}"),
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
            )
            .await
            .unwrap();
    }

    fn execution(job: &str, document: &Value) -> Value {
        json!({
            "jobId": job, "status": "QUEUED", "jobDocument": document,
            "queuedAt": 1, "lastUpdatedAt": 1, "executionNumber": 1, "versionNumber": 1,
        })
    }

    /// Queues a job (no notification: the core asks with `start-next`).
    fn create(&mut self, job: &str, document: Value) {
        self.queued.push_back((job.into(), document));
    }

    /// Tells the core of a job on `notify-next`.
    async fn notify(&self, job: &str, document: &Value) {
        let payload = json!({ "timestamp": 1, "execution": Self::execution(job, document) });
        self.send("notify-next", &payload).await;
    }

    /// Answers the core's requests until `done` accepts the updates seen.
    async fn serve_until(&mut self, done: impl Fn(&[Update]) -> bool) {
        tokio::time::timeout(PATIENCE * 2, async {
            while !done(&self.updates) {
                let p = match self.events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => p,
                    Ok(_) => continue,
                    Err(e) => panic!("{e}"),
                };
                let Some(rest) = p.topic.strip_prefix(JOBS) else {
                    continue;
                };
                let request: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                let token = request["clientToken"].clone();
                if rest == "start-next" {
                    let mut answer = json!({ "clientToken": token, "timestamp": 1 });
                    if let Some((job, document)) = self.queued.front() {
                        answer["execution"] = Self::execution(job, document);
                        self.started.push(job.clone());
                    }
                    self.send("start-next/accepted", &answer).await;
                } else if let Some(job) = rest.strip_suffix("/update") {
                    let status = request["status"].as_str().unwrap_or_default().to_string();
                    if status != "IN_PROGRESS" {
                        self.queued.retain(|(j, _)| j != job);
                    }
                    self.updates.push(Update {
                        job: job.into(),
                        status,
                        details: request["statusDetails"].clone(),
                    });
                    let answer = json!({ "clientToken": token, "timestamp": 1 });
                    self.send(&format!("{job}/update/accepted"), &answer).await;
                }
                // Our own answers and notifications come back: ignored.
            }
        })
        .await
        .unwrap_or_else(|_| panic!("in time; updates so far: {:?}", self.updates));
    }
}

/// Whether `job` has ended in `updates`.
fn ended(updates: &[Update], job: &str) -> bool {
    updates
        .iter()
        .any(|u| u.job == job && u.status != "IN_PROGRESS")
}

/// The updates of `job`: status and phase.
fn of(updates: &[Update], job: &str) -> Vec<(String, String)> {
    updates
        .iter()
        .filter(|u| u.job == job)
        .map(|u| {
            (
                u.status.clone(),
                u.details["phase"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A core whose cloud is `cloud` (through a gate, still closed), with the
/// Jobs service connected to the cloud.
async fn start(cloud: &mut Cloud, dropin: &str) -> (Core, JobsService, Arc<AtomicBool>) {
    let (listener, port) = bound_port().await;
    let dropin = format!("{}{dropin}", cloud.dropin_via(port, ""));
    let core = Core::start_with(&Options {
        dropin: Some(&dropin),
        group: Some(&group("a/old/#").to_string()),
        ..Options::default()
    });
    core.wait_all_running().await;
    cloud.start(std::path::Path::new(&core.cert("group-ca.pem")));
    let open = gate(listener, cloud.tls_port);
    let jobs = JobsService::connect(cloud.plain_port).await;
    (core, jobs, open)
}

async fn deployments(core: &Core) -> Vec<pb::Deployment> {
    let channel = verdant_common::uds::connect(&core.socket("ota-agent"))
        .await
        .unwrap();
    DeploymentsClient::new(channel)
        .list_deployments(pb::ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deployments
}

async fn subjects(core: &Core) -> Vec<String> {
    core.routes()
        .await
        .routes
        .into_iter()
        .map(|r| r.route.unwrap().subject)
        .collect()
}

#[tokio::test]
async fn a_job_is_deployed_and_reported_and_a_job_that_is_no_deployment_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, mut jobs, open) = start(&mut cloud, "").await;
    jobs.create("job-1", deployment_document("a/new/#"));
    open.store(true, Ordering::SeqCst);

    // The core asks for its next job once connected, and reports it.
    jobs.serve_until(|u| ended(u, "job-1")).await;
    assert_eq!(jobs.started, ["job-1"]);
    // IN_PROGRESS at each phase, then the end.
    let expected = [
        ("IN_PROGRESS", "VALIDATING"),
        ("IN_PROGRESS", "STAGING"),
        ("IN_PROGRESS", "APPLYING"),
        ("IN_PROGRESS", "HEALTH_CHECK"),
        ("SUCCEEDED", "SUCCEEDED"),
    ]
    .map(|(s, p)| (s.to_string(), p.to_string()));
    assert_eq!(of(&jobs.updates, "job-1"), expected);
    let id = jobs.updates[0].details["deploymentId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        jobs.updates
            .iter()
            .filter(|u| u.job == "job-1")
            .all(|u| u.details["deploymentId"] == id.as_str())
    );
    let listed = deployments(&core).await;
    let d = listed.iter().find(|d| d.deployment_id == id).unwrap();
    assert_eq!(d.origin, "iot-jobs:job-1");
    assert_eq!(d.phase(), Phase::Succeeded);
    assert_eq!(subjects(&core).await, ["a/new/#"]);

    // A job that is not a Verdant deployment fails at once, and changes
    // nothing.
    let other = json!({ "operation": "reboot" });
    jobs.create("job-2", other.clone());
    jobs.notify("job-2", &other).await;
    jobs.serve_until(|u| ended(u, "job-2")).await;
    let failed: Vec<&Update> = jobs.updates.iter().filter(|u| u.job == "job-2").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].status, "FAILED");
    assert_eq!(
        failed[0].details,
        json!({ "reason": "not a Verdant deployment document" })
    );
    assert_eq!(deployments(&core).await.len(), listed.len());
    assert_eq!(subjects(&core).await, ["a/new/#"]);
}

#[tokio::test]
async fn jobs_offered_while_one_deploys_are_deployed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, mut jobs, open) = start(&mut cloud, "[ota-agent]\nstep_pause_ms = 300\n").await;
    jobs.create("job-3", deployment_document("a/three/#"));
    let four = deployment_document("a/four/#");
    jobs.create("job-4", four.clone());
    open.store(true, Ordering::SeqCst);
    jobs.serve_until(|u| !u.is_empty()).await;
    // Offered while job-3 deploys (AWS would offer it once job-3 ended).
    jobs.notify("job-4", &four).await;
    jobs.serve_until(|u| ended(u, "job-3") && ended(u, "job-4"))
        .await;
    let mut order: Vec<(String, String)> = jobs
        .updates
        .iter()
        .map(|u| (u.job.clone(), u.status.clone()))
        .collect();
    // One IN_PROGRESS per phase: the order of the jobs is what counts here.
    order.dedup();
    let expected = [
        ("job-3", "IN_PROGRESS"),
        ("job-3", "SUCCEEDED"),
        ("job-4", "IN_PROGRESS"),
        ("job-4", "SUCCEEDED"),
    ]
    .map(|(j, s)| (j.to_string(), s.to_string()));
    assert_eq!(order, expected);
    let origins: Vec<String> = deployments(&core)
        .await
        .into_iter()
        .filter(|d| d.origin.starts_with("iot-jobs:"))
        .map(|d| d.origin)
        .collect();
    assert_eq!(origins, ["iot-jobs:job-4", "iot-jobs:job-3"]);
    assert_eq!(subjects(&core).await, ["a/four/#"]);
}

#[tokio::test]
async fn the_end_of_a_job_interrupted_by_a_restart_of_the_ota_agent_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, mut jobs, open) = start(&mut cloud, "[ota-agent]\nstep_pause_ms = 1500\n").await;
    jobs.create("job-5", deployment_document("a/five/#"));
    open.store(true, Ordering::SeqCst);
    jobs.serve_until(|u| !u.is_empty()).await;
    core.kill_9("ota-agent").await;
    jobs.serve_until(|u| ended(u, "job-5")).await;
    let end = jobs.updates.last().unwrap();
    assert_eq!(end.status, "FAILED", "{end:?}");
    assert!(
        end.details["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{end:?}"
    );
    // The job is not taken again: it has ended.
    let taken = deployments(&core)
        .await
        .into_iter()
        .filter(|d| d.origin == "iot-jobs:job-5")
        .count();
    assert_eq!(taken, 1);
    assert_eq!(subjects(&core).await, ["a/old/#"]);
}

#[tokio::test]
async fn deployments_add_and_remove_cloud_subscriptions_without_dropping_the_cloud_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::prepare(dir.path());
    let (core, _jobs, open) = start(&mut cloud, "").await;
    open.store(true, Ordering::SeqCst);
    let connected = tokio::time::timeout(PATIENCE, async {
        loop {
            let state = core.cloud_state().await.unwrap();
            if state.state == "connected" {
                return state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the core connects to the cloud");

    // A group that also routes the cloud's `c/#` to device b, then the old one again.
    let mut with_cloud = group("a/old/#");
    with_cloud["SubscriptionDefinitionVersion"]["Subscriptions"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({ "Id": "from-cloud", "Source": "cloud", "Subject": "c/#", "Target": arn("b") }),
        );
    for (g, more) in [(with_cloud, true), (group("a/old/#"), false)] {
        let mut api = DeploymentsClient::new(
            verdant_common::uds::connect(&core.socket("ota-agent"))
                .await
                .unwrap(),
        );
        let d = api
            .deploy(pb::DeployRequest {
                source: Some(pb::deploy_request::Source::GroupJson(
                    g.to_string().into_bytes(),
                )),
                ..pb::DeployRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut watch = api
            .watch_deployment(pb::DeploymentRequest {
                deployment_id: d.deployment_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = d.phase();
        while let Ok(Some(d)) = watch.message().await {
            last = d.phase();
        }
        assert_eq!(last, Phase::Succeeded);
        let want = connected.subscriptions + u32::from(more);
        let state = tokio::time::timeout(PATIENCE, async {
            loop {
                let state = core.cloud_state().await.unwrap();
                if state.subscriptions == want {
                    return state;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the cloud subscriptions follow the group");
        assert_eq!(state.state, "connected");
        assert_eq!(
            state.connected_since, connected.connected_since,
            "the same connection"
        );
    }
}

#[tokio::test]
async fn a_job_updates_the_core_and_the_new_version_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let releases = dir.path().join("releases");
    std::fs::create_dir_all(&releases).unwrap();
    let (repo, keys) = release_repo(&releases);
    publish(
        &repo,
        &keys,
        &small_verdant(&releases),
        "99.0.1",
        &["--stamp"],
    );
    let broken = releases.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    publish(&repo, &keys, &broken, "99.0.2", &[]);
    let mut cloud = Cloud::prepare(&dir.path().join("cloud"));
    let (core, mut jobs, open) = start(
        &mut cloud,
        &format!("[ota-agent]\nupdate_repository = \"{repo}\"\n"),
    )
    .await;
    std::fs::copy(
        std::path::Path::new(&repo).join("metadata/1.root.json"),
        core.root().join("config/update-root.json"),
    )
    .unwrap();
    let pid = core.init.id();

    // A release that does not run: the job fails with why, nothing changes.
    jobs.create(
        "up-1",
        json!({ "verdant": { "update": { "version": "99.0.2" } } }),
    );
    open.store(true, Ordering::SeqCst);
    jobs.serve_until(|u| ended(u, "up-1")).await;
    let end = jobs
        .updates
        .iter()
        .rfind(|u| u.job == "up-1")
        .unwrap()
        .clone();
    assert_eq!(end.status, "FAILED", "{end:?}");
    assert!(
        end.details["reason"]
            .as_str()
            .unwrap()
            .contains("does not run as version 99.0.2"),
        "{end:?}"
    );

    // The new version takes over in place and reports the job's end.
    jobs.create(
        "up-2",
        json!({ "verdant": { "update": { "version": "99.0.1" } } }),
    );
    jobs.serve_until(|u| ended(u, "up-2")).await;
    let seen: Vec<&Update> = jobs.updates.iter().filter(|u| u.job == "up-2").collect();
    assert_eq!(seen[0].status, "IN_PROGRESS", "{seen:?}");
    let end = seen.last().unwrap();
    assert_eq!(end.status, "SUCCEEDED", "{seen:?}");
    assert_eq!(end.details["update"], "99.0.1", "{end:?}");
    let out = core.ctl(&["-o", "json", "update", "status"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], "99.0.1", "{v}");
    assert_eq!(core.init.id(), pid);
    // Done: the job is not taken again.
    assert_eq!(
        jobs.updates
            .iter()
            .filter(|u| u.job == "up-2" && u.status == "SUCCEEDED")
            .count(),
        1
    );
}
