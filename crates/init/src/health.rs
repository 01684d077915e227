//! Waiting for a daemon's `grpc.health.v1` to say SERVING, and asking it
//! what it is (`verdant.daemon.v1.Daemon/GetInfo`).

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use verdant_proto::daemon::v1::daemon_client::DaemonClient;
use verdant_proto::daemon::v1::{DaemonInfo, GetInfoRequest};
use verdant_proto::router::v1::GetCloudRequest;
use verdant_proto::router::v1::router_client::RouterClient;

/// A SERVING daemon: its channel and its open health watch.
pub struct Serving {
    pub channel: Channel,
    pub watch: Streaming<HealthCheckResponse>,
}

/// Dials `socket` until its overall health is SERVING, or `deadline`.
/// The socket appears only once the daemon has bound it, so connection
/// errors before then are expected and retried quickly.
pub async fn wait_serving(socket: &Path, deadline: Instant) -> Option<Serving> {
    let attempt = async {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Ok(channel) = verdant_common::uds::connect(socket).await {
                let mut client = HealthClient::new(channel.clone());
                if let Ok(resp) = client
                    .watch(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    let mut watch = resp.into_inner();
                    while let Ok(Some(msg)) = watch.message().await {
                        if msg.status == ServingStatus::Serving as i32 {
                            return Serving { channel, watch };
                        }
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    };
    tokio::time::timeout_at(deadline, attempt).await.ok()
}

/// The next health status from an open watch; `None` when the stream ends.
pub async fn next(watch: &mut Streaming<HealthCheckResponse>) -> Option<bool> {
    match watch.message().await {
        Ok(Some(msg)) => Some(msg.status == ServingStatus::Serving as i32),
        _ => None,
    }
}

/// What the daemon says of itself; `None` if it does not serve the Daemon API.
pub async fn info(channel: Channel) -> Option<DaemonInfo> {
    let call = async move { DaemonClient::new(channel).get_info(GetInfoRequest {}).await };
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(Ok(resp)) => Some(resp.into_inner()),
        _ => None,
    }
}

/// The router's cloud connection, on its socket: its state (`disabled`,
/// `connecting`, `connected`, `waiting`) and last error; `None` when the
/// router does not answer within a second.
pub async fn cloud(router: &Path) -> Option<(String, String)> {
    let call = async {
        let channel = verdant_common::uds::connect(router).await.ok()?;
        let answer = RouterClient::new(channel)
            .get_cloud(GetCloudRequest {})
            .await
            .ok()?;
        let answer = answer.into_inner();
        Some((answer.state, answer.last_error))
    };
    tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .ok()
        .flatten()
}

/// Waits for the router to say the cloud is connected, for `limit` at
/// most; otherwise why not.
///
/// # Errors
/// The cloud connection was not up within `limit`: its last state.
pub async fn cloud_back(router: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let now = cloud(router).await;
        if now.as_ref().is_some_and(|(state, _)| state == "connected") {
            return Ok(());
        }
        if now.is_some() {
            last = now;
        }
        if Instant::now() >= deadline {
            let seen = match last {
                Some((state, error)) if error.is_empty() => state,
                Some((state, error)) => format!("{state}: {error}"),
                None => "the router does not answer".into(),
            };
            return Err(format!(
                "the cloud connection did not come back within {} s ({seen})",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
