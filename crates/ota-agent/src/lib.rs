//! verdant-ota-agent: will receive, stage and apply deployments. Today it
//! serves health, reflection and daemon info only: deployments do not
//! arrive over the air, each daemon reads the group at its start, and
//! `verdantctl reload` has the router and the broker read it again; it
//! says so in its log and in `verdantctl status`. See ARCHITECTURE.md.

pub mod artifacts;
pub mod bundle;
pub mod config;
pub mod error;
pub mod fetch;
mod grpc;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::{Context, Threads};
use verdant_common::shutdown::CancellationToken;

use crate::config::OtaAgentConfig;
pub use crate::error::OtaAgentError;

pub const SERVICE: &str = "ota-agent";
/// The runtime this daemon wants.
pub const THREADS: Threads = Threads::One;
/// The capabilities this daemon keeps: none (it asks init over gRPC for what needs privilege).
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[]);

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), OtaAgentError> {
    let _config = OtaAgentConfig::load::<OtaAgentError>(&ctx.config)?;
    grpc::server()
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(OtaAgentError::from)
}
