//! `verdant.lambda.v1.Lambda`: what operators see of the functions.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use verdant_proto::lambda::v1 as pb;
use verdant_proto::lambda::v1::lambda_server::Lambda;

use crate::function::Runtime;
use crate::work::Runner;

pub struct Api {
    pub runner: Arc<Mutex<Runner>>,
    pub ipc_port: u16,
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
                    Runtime::Python { .. } | Runtime::Node { .. } | Runtime::Executable { .. } => {
                        "ready".into()
                    }
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
}
