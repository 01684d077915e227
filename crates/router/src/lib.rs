//! verdant-router: see DESIGN.md for what it will own. Until its issue
//! (issue #4) lands it serves only health, reflection and daemon info, and
//! says so in its log and in `verdantctl status`.

use tokio::net::UnixListener;
use verdant_common::daemon::Context;
use verdant_common::shutdown::CancellationToken;

pub const SERVICE: &str = "router";
/// The runtime this daemon wants.
pub const THREADS: verdant_common::daemon::Threads = verdant_common::daemon::Threads::PerCore;

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    _ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    verdant_common::daemon::placeholder(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "issue #4",
        listener,
        shutdown,
    )
    .await
}
