//! What the deployments tests share: the ota-agent's client, deploying a
//! group and following it to its end, and what the core runs afterwards.

use std::time::Duration;

use verdant_proto::ota::v1 as pb;
use verdant_proto::ota::v1::Phase;
use verdant_proto::ota::v1::deployments_client::DeploymentsClient;
use verdant_proto::router::v1 as router;
use verdant_proto::router::v1::router_client::RouterClient;

use crate::{Core, PATIENCE};

pub async fn client(core: &Core) -> DeploymentsClient<tonic::transport::Channel> {
    let channel = verdant_common::uds::connect(&core.socket("ota-agent"))
        .await
        .expect("the ota-agent's socket");
    DeploymentsClient::new(channel)
}

/// Queues a deployment of `source`.
pub async fn deploy_request(core: &Core, source: pb::deploy_request::Source) -> pb::Deployment {
    client(core)
        .await
        .deploy(pb::DeployRequest {
            source: Some(source),
            origin: "test".into(),
            ..pb::DeployRequest::default()
        })
        .await
        .expect("queued")
        .into_inner()
}

pub async fn deploy(core: &Core, group: &str) -> pb::Deployment {
    client(core)
        .await
        .deploy(pb::DeployRequest {
            source: Some(pb::deploy_request::Source::GroupJson(
                group.as_bytes().to_vec(),
            )),
            origin: "test".into(),
            ..pb::DeployRequest::default()
        })
        .await
        .expect("queued")
        .into_inner()
}

/// Every state the deployment passes through from now until it ends
/// (re-attached if the agent restarts meanwhile).
pub async fn watch_to_end(core: &Core, id: &str) -> Vec<pb::Deployment> {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE * 2, async {
        loop {
            let Ok(mut c) = tokio::time::timeout(Duration::from_secs(1), client(core)).await else {
                continue;
            };
            let request = pb::DeploymentRequest {
                deployment_id: id.into(),
            };
            if let Ok(stream) = c.watch_deployment(request).await {
                let mut stream = stream.into_inner();
                while let Ok(Some(d)) = stream.message().await {
                    let done = matches!(
                        d.phase(),
                        Phase::Succeeded | Phase::Failed | Phase::RolledBack | Phase::Cancelled
                    );
                    seen.push(d);
                    if done {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the deployment ends");
    seen
}

pub fn phases(seen: &[pb::Deployment]) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for d in seen {
        if out.last() != Some(&d.phase()) {
            out.push(d.phase());
        }
    }
    out
}

pub fn current(core: &Core) -> String {
    std::fs::read_link(core.root().join("deployments/current"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

pub async fn routes(core: &Core) -> Vec<String> {
    let channel = verdant_common::uds::connect(&core.socket("router"))
        .await
        .unwrap();
    RouterClient::new(channel)
        .list_routes(router::ListRoutesRequest {})
        .await
        .unwrap()
        .into_inner()
        .routes
        .into_iter()
        .map(|r| r.route.unwrap().subject)
        .collect()
}
