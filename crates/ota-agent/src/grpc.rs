//! `verdant.ota.v1.Deployments` on the ota-agent's socket, beside health,
//! reflection and daemon info. Handlers check the caller, call the
//! engine and map its errors to gRPC codes.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use verdant_common::grpc::{Info, Server};
use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::deployments_server::{Deployments, DeploymentsServer};

use crate::SERVICE;
use crate::engine::{Agent, DeployError};
use crate::store::ended;

/// The server, its health still `NOT_SERVING`.
pub(crate) async fn server(agent: Arc<Agent>, updates: &Arc<crate::update::api::Api>) -> Server {
    let note = "deployments of a group from verdantctl or the cloud: validated, staged, \
                applied hot to every daemon, health-checked, rolled back on failure";
    Server::new(Info::functional(SERVICE, note))
        .await
        .add_service(DeploymentsServer::new(Api { agent }))
        .add_service(updates.service())
}

struct Api {
    agent: Arc<Agent>,
}

// Taken by value to read as `.map_err(status)`.
#[allow(clippy::needless_pass_by_value)]
fn status(e: DeployError) -> Status {
    match e {
        DeployError::Invalid(_) => Status::invalid_argument(e.to_string()),
        DeployError::QueueFull { .. } => Status::resource_exhausted(e.to_string()),
        DeployError::NotFound(_) => Status::not_found(e.to_string()),
        DeployError::Ended { .. } => Status::failed_precondition(e.to_string()),
        DeployError::Store(_) => Status::internal(e.to_string()),
    }
}

type Watch = Pin<Box<dyn Stream<Item = Result<pb::Deployment, Status>> + Send>>;

#[tonic::async_trait]
impl Deployments for Api {
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        verdant_common::uds::require_owner(&request)?;
        self.agent
            .deploy(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => 50,
            n => n,
        };
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: self.agent.list(limit).map_err(status)?,
            current: self.agent.current().unwrap_or_default(),
        }))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::DeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.agent
            .get(&request.get_ref().deployment_id)
            .map(Response::new)
            .map_err(status)
    }

    type WatchDeploymentStream = Watch;

    async fn watch_deployment(
        &self,
        request: Request<pb::DeploymentRequest>,
    ) -> Result<Response<Watch>, Status> {
        let id = request.into_inner().deployment_id;
        // Subscribed before reading, so no change falls between the two.
        let mut updates = self.agent.subscribe();
        let first = self.agent.get(&id).map_err(status)?;
        let agent = self.agent.clone();
        let stream = async_stream(first, move |tx, mut last: pb::Deployment| async move {
            use tokio::sync::broadcast::error::RecvError;
            while !ended(last.phase()) {
                let next = match updates.recv().await {
                    Ok(d) if d.deployment_id == id => d,
                    Ok(_) => continue,
                    // Fell behind: the record has the latest state.
                    Err(RecvError::Lagged(_)) => match agent.get(&id) {
                        Ok(d) => d,
                        Err(_) => return,
                    },
                    Err(RecvError::Closed) => return,
                };
                // After a lag, older changes may still come: never backwards.
                if next.updated_ms < last.updated_ms {
                    continue;
                }
                if tx.send(Ok(next.clone())).await.is_err() {
                    return;
                }
                last = next;
            }
        });
        Ok(Response::new(stream))
    }

    async fn cancel_deployment(
        &self,
        request: Request<pb::DeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        verdant_common::uds::require_owner(&request)?;
        self.agent
            .cancel(&request.get_ref().deployment_id)
            .map(Response::new)
            .map_err(status)
    }
}

/// A stream that yields `first`, then what `fill` sends.
fn async_stream<F, Fut>(first: pb::Deployment, fill: F) -> Watch
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::Deployment, Status>>, pb::Deployment) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let _ = tx.try_send(Ok(first.clone()));
    tokio::spawn(fill(tx, first));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
