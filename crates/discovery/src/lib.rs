//! verdant-discovery: will answer the discovery API devices call to find
//! their core. Today it serves health, reflection and daemon info only:
//! there is no discovery API, devices connect to the core's address and
//! port as configured; it says so in its log and in `verdantctl status`.
//! See ARCHITECTURE.md.

pub mod config;
pub mod error;
mod grpc;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::{Context, Threads};
use verdant_common::shutdown::CancellationToken;

use crate::config::DiscoveryConfig;
pub use crate::error::DiscoveryError;

pub const SERVICE: &str = "discovery";
/// The runtime this daemon wants.
pub const THREADS: Threads = Threads::One;
/// The capabilities this daemon keeps: none (its socket under the root needs none).
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[]);

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), DiscoveryError> {
    let _config = DiscoveryConfig::load::<DiscoveryError>(&ctx.config)?;
    grpc::server()
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(DiscoveryError::from)
}
