//! verdant-secrets: the secrets kept on the core, sealed at rest under
//! `data/secrets/` (AES-256-GCM under a data key wrapped by a key only
//! this daemon's user can read), released only to the functions the
//! deployed group gives access (asked by the lambda-runner for the caller
//! it authenticated). The only process that holds values in clear, and
//! only while it answers. See ARCHITECTURE.md.

mod access;
mod cloud;
pub mod config;
pub mod error;
mod grpc;
pub mod store;

use std::sync::{Arc, Mutex};

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
    let config = SecretsConfig::load::<SecretsError>(&ctx.config)?;
    let core = verdant_common::config::CoreSection::load::<SecretsError>(&ctx.config)?;
    let dir = ctx.layout.create_data_dir(SERVICE)?;
    let store = store::Store::open(&dir)?;
    tracing::info!(
        secrets = store.list().map_or(0, |l| l.len()),
        "secret store open ({})",
        dir.display()
    );
    let cloud = cloud::Cloud::start(&ctx.layout, &core.thing_name, shutdown.clone());
    let api = grpc::Api {
        layout: ctx.layout.clone(),
        config,
        cloud,
        store: Arc::new(Mutex::new(store)),
        reads: Mutex::default(),
    };
    grpc::server(api)
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(SecretsError::from)
}
