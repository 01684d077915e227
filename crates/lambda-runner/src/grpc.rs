//! `verdant.lambda.v1.Lambda`: what operators see of the functions, and
//! what they may do with them (invoke, read their logs).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use verdant_common::logs::ServiceLog;
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_server::Lambda;

use crate::LambdaError;
use crate::deploy::{Deployer, FunctionLogs};
use crate::function::Runtime;
use crate::work::{Pending, Refused, Runner};

pub struct Api {
    pub runner: Arc<Mutex<Runner>>,
    pub ipc_port: u16,
    pub logs: FunctionLogs,
    pub deployer: Deployer,
}

type LogStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LogLines, Status>> + Send>>;

impl Api {
    /// The log of `function` (its ARN or its name), if it is one of the
    /// group's.
    fn log(&self, function: &str) -> Option<ServiceLog> {
        // Logs are by name: `arn:aws:lambda:<r>:<a>:function:<name>[:<q>]`.
        let name = function.split(':').nth(6).unwrap_or(function);
        self.logs.get(name)
    }
}

/// Resident bytes of `pid` and its descendants, from procfs (0 if gone).
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own + children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(resident)
        .sum::<u64>()
}

#[tonic::async_trait]
impl Lambda for Api {
    async fn list_functions(
        &self,
        _request: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsResponse>, Status> {
        let views = self.runner.lock().expect("runner lock").views();
        let functions = views
            .into_iter()
            .map(|v| pb::Function {
                arn: v.spec.arn.clone(),
                runtime: v.spec.runtime.name().into(),
                pinned: v.spec.pinned,
                state: match &v.spec.runtime {
                    Runtime::Unavailable(why) => why.clone(),
                    Runtime::Python { .. }
                    | Runtime::Node { .. }
                    | Runtime::Executable { .. }
                    | Runtime::Java { .. } => "ready".into(),
                },
                instances: v.instances as u32,
                queued: v.queued as u32,
                invocations: v.counters.invocations,
                errors: v.counters.errors,
                timeouts: v.counters.timeouts,
                overflow: v.counters.overflow,
                out_of_memory: v.counters.out_of_memory,
                uid: v.spec.uid,
                gid: v.spec.gid,
                memory_bytes: v.pids.iter().map(|p| resident(*p)).sum(),
                pids: v.pids,
                last_error: v.last_error.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListFunctionsResponse {
            functions,
            ipc_port: u32::from(self.ipc_port),
        }))
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let r = request.into_inner();
        let reply = match r.invocation_type.as_str() {
            "" | "RequestResponse" => true,
            "Event" => false,
            other => {
                return Err(Status::invalid_argument(format!(
                    "invocation_type {other:?}: RequestResponse or Event"
                )));
            }
        };
        let submitted = self.runner.lock().expect("runner lock").submit(
            &r.function_arn,
            r.payload.into(),
            r.client_context,
            reply,
        );
        let id = submitted.map_err(|e| match e {
            Refused::NotFound(_) => Status::not_found(e.to_string()),
            Refused::Unavailable { .. } => Status::failed_precondition(e.to_string()),
            Refused::Full(_) => Status::resource_exhausted(e.to_string()),
        })?;
        if !reply {
            return Ok(Response::new(pb::InvokeResponse {
                invocation_id: id,
                ..pb::InvokeResponse::default()
            }));
        }
        let pending = self.runner.lock().expect("runner lock").result(&id);
        let outcome = match pending {
            Some(Pending::Ready(o)) => o,
            Some(Pending::Later(rx)) => rx
                .await
                .map_err(|_| Status::unavailable("the lambda-runner is stopping"))?,
            None => return Err(Status::internal("the invocation's result is gone")),
        };
        Ok(Response::new(pb::InvokeResponse {
            invocation_id: id,
            payload: outcome.payload.to_vec(),
            function_error: outcome.error.into(),
        }))
    }

    type LogsStream = LogStream;

    async fn apply_group(
        &self,
        request: Request<pb::ApplyGroupRequest>,
    ) -> Result<Response<pb::ApplyGroupResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let (deployment, applied) = self.deployer.apply().await.map_err(|e| match e {
            LambdaError::Group(_) => Status::failed_precondition(e.to_string()),
            e => {
                tracing::error!("ApplyGroup: {e}");
                Status::internal("the group could not be applied (see the lambda-runner's log)")
            }
        })?;
        Ok(Response::new(pb::ApplyGroupResponse {
            deployment_id: deployment.unwrap_or_default(),
            started: applied.started,
            restarted: applied.restarted,
            stopped: applied.stopped,
            unchanged: applied.unchanged,
        }))
    }

    async fn check_group(
        &self,
        request: Request<pb::CheckGroupRequest>,
    ) -> Result<Response<pb::CheckGroupResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let r = request.into_inner();
        let staged = r
            .artifacts
            .into_iter()
            .map(|(k, v)| (k, std::path::PathBuf::from(v)))
            .collect();
        let loader = self.deployer.loader.clone();
        let problems = tokio::task::spawn_blocking(move || loader.check(&r.group_json, staged))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::CheckGroupResponse {
            problems: problems
                .into_iter()
                .map(|(path, message)| pb::Problem { path, message })
                .collect(),
        }))
    }

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let r = request.into_inner();
        let log = self
            .log(&r.function)
            .ok_or_else(|| Status::not_found(format!("no function {} in the group", r.function)))?;
        // Subscribed before the tail is read: nothing falls in between.
        let mut follow = r.follow.then(|| log.follow());
        let tail = log
            .tail(r.lines as usize)
            .map_err(|e| Status::internal(format!("reading the log: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let lines = |bytes: &[u8]| -> Vec<String> {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .map(String::from)
                    .collect()
            };
            let first = lines(&tail);
            if !first.is_empty() && tx.send(Ok(pb::LogLines { lines: first })).await.is_err() {
                return;
            }
            let Some(follow) = follow.as_mut() else {
                return;
            };
            loop {
                let chunk = tokio::select! {
                    () = tx.closed() => return,
                    c = follow.recv() => c,
                };
                match chunk {
                    Ok(c) => {
                        if tx
                            .send(Ok(pb::LogLines { lines: lines(&c) }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("[verdant] {n} log chunks skipped (a slow reader)");
                        let _ = tx.send(Ok(pb::LogLines { lines: vec![note] })).await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
