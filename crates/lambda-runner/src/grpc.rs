//! `verdant.lambda.v1.Lambda`: what operators see of the functions, and
//! what they may do with them (invoke, read their logs).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_server::Lambda;

use crate::function::Runtime;
use crate::work::{Pending, Refused, Runner};

pub struct Api {
    pub runner: Arc<Mutex<Runner>>,
    pub ipc_port: u16,
    /// `<logs>/functions`, where each function's `<name>.log` is.
    pub logs: PathBuf,
}

type LogStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LogLines, Status>> + Send>>;

/// How often a followed log is looked at for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

impl Api {
    /// The log file of `function` (its ARN or its name), if it is one of
    /// the group's.
    fn log_file(&self, function: &str) -> Option<PathBuf> {
        let views = self.runner.lock().expect("runner lock").views();
        let spec = views
            .iter()
            .map(|v| &v.spec)
            .find(|s| s.arn == function || s.name == function)?;
        Some(self.logs.join(format!("{}.log", spec.name)))
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_string())
        .collect()
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
                uid: v.spec.uid,
                gid: v.spec.gid,
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

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let r = request.into_inner();
        let path = self
            .log_file(&r.function)
            .ok_or_else(|| Status::not_found(format!("no function {} in the group", r.function)))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let text = tokio::fs::read(&path).await.unwrap_or_default();
            let mut offset = text.len();
            let first = last_lines(&String::from_utf8_lossy(&text), r.lines as usize);
            if !first.is_empty() && tx.send(Ok(pb::LogLines { lines: first })).await.is_err() {
                return;
            }
            if !r.follow {
                return;
            }
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                let text = tokio::fs::read(&path).await.unwrap_or_default();
                // Rotated or cut: from the start again.
                if text.len() < offset {
                    offset = 0;
                }
                let Some(end) = text[offset..].iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let new = String::from_utf8_lossy(&text[offset..=offset + end]).into_owned();
                offset += end + 1;
                let lines = new.lines().map(String::from).collect();
                if tx.send(Ok(pb::LogLines { lines })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
