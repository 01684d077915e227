//! verdant-secrets: will keep the secrets deployed to the core, encrypted
//! at rest, and release them only to the functions the group allows. Today
//! it serves health, reflection and daemon info only: no secrets are kept
//! on the core, and functions cannot read any; it says so in its log and in
//! `verdantctl status`. See ARCHITECTURE.md.

pub mod config;
pub mod error;
mod grpc;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::{Context, Threads};
use verdant_common::shutdown::CancellationToken;

use crate::config::SecretsConfig;
pub use crate::error::SecretsError;

pub const SERVICE: &str = "secrets";
/// The runtime this daemon wants.
pub const THREADS: Threads = Threads::One;
/// The capabilities this daemon keeps: none (its socket and files under the root need none).
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[]);

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), SecretsError> {
    let _config = SecretsConfig::load::<SecretsError>(&ctx.config)?;
    grpc::server()
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(SecretsError::from)
}
