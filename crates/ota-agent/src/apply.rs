//! Telling the daemons of the core to take the deployment `current` links
//! to, each over its own gRPC call, in a fixed order, and checking that
//! they took it: every daemon SERVING, the pinned functions running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use verdant_common::paths::{INIT_SERVICE, Layout};
use verdant_proto::broker::v1 as broker;
use verdant_proto::broker::v1::broker_client::BrokerClient;
use verdant_proto::lambda::v1 as lambda;
use verdant_proto::lambda::v1::lambda_client::LambdaClient;
use verdant_proto::ota::v1::Applied;
use verdant_proto::router::v1 as router;
use verdant_proto::router::v1::router_client::RouterClient;
use verdant_proto::secrets::v1 as secrets;
use verdant_proto::secrets::v1::secrets_client::SecretsClient;

use crate::SERVICE;

/// The daemons of one core, reached on their sockets.
#[derive(Debug, Clone)]
pub struct Daemons {
    layout: Layout,
}

/// What applying did: per daemon, and the functions (re)started.
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Vec<Applied>,
    /// Qualified ARNs of functions started or restarted.
    pub fresh: Vec<String>,
}

impl Daemons {
    pub fn new(layout: Layout) -> Self {
        Daemons { layout }
    }

    /// The socket of `service` if the core runs it (its socket exists).
    fn socket(&self, service: &str) -> Option<PathBuf> {
        let path = self.layout.socket(service);
        path.exists().then_some(path)
    }

    /// Connects to `socket`, retrying (the daemon may be restarting) until `deadline`.
    async fn connect(socket: &Path, deadline: Instant) -> Result<Channel, String> {
        loop {
            match verdant_common::uds::connect(socket).await {
                Ok(channel) => return Ok(channel),
                Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// What the daemons say of a group before it is deployed: the broker
    /// whether its devices could connect, the lambda-runner whether it
    /// could run its functions (`artifacts`: code
    /// the deployment brings, `<name>/<version>` to a directory or zip).
    /// Each problem with its JSON path.
    pub async fn check_group(
        &self,
        group_json: &[u8],
        artifacts: &HashMap<String, String>,
        deadline: Instant,
    ) -> Result<Vec<(String, String)>, String> {
        let mut problems = Vec::new();
        if let Some(socket) = self.socket("broker") {
            let reply = retry(deadline, || async {
                let channel = Self::connect(&socket, deadline).await?;
                BrokerClient::new(channel)
                    .check_group(broker::CheckGroupRequest {
                        group_json: group_json.to_vec(),
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| Failure::from_status("broker", &s))
            })
            .await?;
            problems.extend(
                reply
                    .problems
                    .into_iter()
                    .map(|p| (p.path, format!("broker: {}", p.message))),
            );
        }
        if let Some(socket) = self.socket("secrets") {
            let reply = retry(deadline, || async {
                let channel = Self::connect(&socket, deadline).await?;
                SecretsClient::new(channel)
                    .check_group(secrets::CheckGroupRequest {
                        group_json: group_json.to_vec(),
                        // Values from the cloud first; a new data key
                        // when the secrets change.
                        deploying: true,
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| Failure::from_status("secrets", &s))
            })
            .await?;
            problems.extend(
                reply
                    .problems
                    .into_iter()
                    .map(|p| (p.path, format!("secrets: {}", p.message))),
            );
        }
        let Some(socket) = self.socket("lambda-runner") else {
            return Ok(problems);
        };
        let reply = retry(deadline, || async {
            let channel = Self::connect(&socket, deadline).await?;
            LambdaClient::new(channel)
                .check_group(lambda::CheckGroupRequest {
                    group_json: group_json.to_vec(),
                    artifacts: artifacts.clone(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| Failure::from_status("lambda-runner", &s))
        })
        .await?;
        problems.extend(
            reply
                .problems
                .into_iter()
                .map(|p| (p.path, format!("lambda-runner: {}", p.message))),
        );
        Ok(problems)
    }

    /// Has every daemon take the deployment `current` links to (`id`):
    /// the router, then the lambda-runner.
    pub async fn apply(&self, id: &str, deadline: Instant) -> Result<Outcome, String> {
        let mut outcome = Outcome::default();
        outcome.applied.push(self.apply_router(id, deadline).await?);
        self.apply_lambda(id, deadline, &mut outcome).await?;
        Ok(outcome)
    }

    /// The router takes the table; through its links the broker takes the
    /// devices, the cloud bridge its subscriptions and the shadow service
    /// the synced things.
    pub async fn apply_router(&self, id: &str, deadline: Instant) -> Result<Applied, String> {
        let socket = self
            .socket("router")
            .ok_or("the router is not running: no table to apply")?;
        let reply = retry(deadline, || async {
            let channel = Self::connect(&socket, deadline).await?;
            RouterClient::new(channel)
                .reload_table(router::ReloadTableRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| Failure::from_status("router", &s))
        })
        .await?;
        check_read("router", &reply.deployment_id, id)?;
        Ok(Applied {
            daemon: "router".into(),
            summary: format!("table version {}, {} routes", reply.version, reply.routes),
        })
    }

    /// The lambda-runner, if the core runs it, takes the functions.
    pub async fn apply_lambda(
        &self,
        id: &str,
        deadline: Instant,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        let Some(socket) = self.socket("lambda-runner") else {
            return Ok(());
        };
        let reply = retry(deadline, || async {
            let channel = Self::connect(&socket, deadline).await?;
            LambdaClient::new(channel)
                .apply_group(lambda::ApplyGroupRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| Failure::from_status("lambda-runner", &s))
        })
        .await?;
        check_read("lambda-runner", &reply.deployment_id, id)?;
        outcome.applied.push(Applied {
            daemon: "lambda-runner".into(),
            summary: format!(
                "started {}, restarted {}, stopped {}, unchanged {}",
                reply.started.len(),
                reply.restarted.len(),
                reply.stopped.len(),
                reply.unchanged.len()
            ),
        });
        outcome.fresh.extend(reply.started);
        outcome.fresh.extend(reply.restarted);
        Ok(())
    }

    /// Waits until every daemon is SERVING and every pinned function runs
    /// (those in `fresh` for `settle` without a restart), or says what was
    /// still wrong at `deadline`. A pinned function that cannot run fails
    /// at once.
    pub async fn healthy(
        &self,
        fresh: &[String],
        settle: Duration,
        deadline: Instant,
    ) -> Result<(), String> {
        // Pids of fresh pinned functions, and since when they were seen so.
        let mut seen: HashMap<String, (Vec<u32>, Instant)> = HashMap::new();
        loop {
            let problem = match self.check(fresh, settle, &mut seen).await {
                Ok(()) => return Ok(()),
                Err(Check::Fatal(why)) => return Err(why),
                Err(Check::Wait(why)) => why,
            };
            if Instant::now() >= deadline {
                return Err(format!("health check timed out: {problem}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn check(
        &self,
        fresh: &[String],
        settle: Duration,
        seen: &mut HashMap<String, (Vec<u32>, Instant)>,
    ) -> Result<(), Check> {
        for service in self.services() {
            let socket = self.layout.socket(&service);
            let serving = match verdant_common::uds::connect(&socket).await {
                Ok(channel) => HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32),
                Err(_) => false,
            };
            if !serving {
                return Err(Check::Wait(format!("{service} is not SERVING")));
            }
        }
        let Some(socket) = self.socket("lambda-runner") else {
            return Ok(());
        };
        let functions = match verdant_common::uds::connect(&socket).await {
            Ok(channel) => {
                LambdaClient::new(channel)
                    .list_functions(lambda::ListFunctionsRequest {})
                    .await
                    .map_err(|s| Check::Wait(format!("lambda-runner: {}", s.message())))?
                    .into_inner()
                    .functions
            }
            Err(e) => return Err(Check::Wait(format!("lambda-runner: {e}"))),
        };
        for f in functions.iter().filter(|f| f.pinned) {
            if f.state != "ready" {
                return Err(Check::Fatal(format!(
                    "pinned function {} cannot run: {}",
                    f.arn, f.state
                )));
            }
            if f.instances == 0 || f.pids.is_empty() {
                let last = if f.last_error.is_empty() {
                    String::new()
                } else {
                    format!(" (last error: {})", f.last_error)
                };
                return Err(Check::Wait(format!(
                    "pinned function {} is not running{last}",
                    f.arn
                )));
            }
            if fresh.contains(&f.arn) {
                let now = Instant::now();
                let since = match seen.get(&f.arn) {
                    Some((pids, since)) if *pids == f.pids => *since,
                    _ => {
                        seen.insert(f.arn.clone(), (f.pids.clone(), now));
                        now
                    }
                };
                if now.duration_since(since) < settle {
                    return Err(Check::Wait(format!(
                        "pinned function {} has not kept running for {} ms",
                        f.arn,
                        settle.as_millis()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The daemons whose sockets are in the runtime directory, but init
    /// and this one.
    fn services(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.layout.runtime_dir()) else {
            return Vec::new();
        };
        let mut services: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let service = name.strip_suffix(".sock")?.to_string();
                (service != INIT_SERVICE && service != SERVICE).then_some(service)
            })
            .collect();
        services.sort();
        services
    }
}

enum Check {
    /// Not yet: may come right before the deadline.
    Wait(String),
    /// Will not come right by waiting.
    Fatal(String),
}

/// Why a daemon did not take a deployment.
struct Failure {
    why: String,
    /// Worth another try (the daemon is restarting).
    transient: bool,
}

impl Failure {
    fn from_status(daemon: &str, status: &tonic::Status) -> Self {
        Failure {
            why: format!("{daemon}: {}", status.message()),
            transient: matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure {
            why,
            transient: false,
        }
    }
}

/// Runs `call` again while it fails for a passing reason, until `deadline`.
async fn retry<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(f) if f.transient && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(f) => return Err(f.why),
        }
    }
}

fn check_read(daemon: &str, read: &str, id: &str) -> Result<(), String> {
    if read == id {
        Ok(())
    } else {
        Err(format!(
            "{daemon} read deployment {read:?}, not {id:?}: `current` changed meanwhile"
        ))
    }
}
