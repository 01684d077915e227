//! verdant-shadow: device shadows with AWS IoT semantics, durable in
//! SQLite, reached over MQTT through the router. See ARCHITECTURE.md.

pub mod config;
pub mod document;
pub mod error;
mod grpc;
mod link;
pub mod service;
pub mod store;
pub mod sync;
pub mod token;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::Context;
use verdant_common::grpc::{Info, Server};
use verdant_common::shutdown::CancellationToken;

use verdant_proto::shadow::v1::shadow_server::ShadowServer;

use crate::config::ShadowConfig;
pub use crate::error::ShadowError;

pub const SERVICE: &str = "shadow";
/// The runtime this daemon wants.
pub const THREADS: verdant_common::daemon::Threads = verdant_common::daemon::Threads::One;
/// The capabilities this daemon keeps: none (its socket and database under the root need none).
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[]);

/// What the shadow service says of itself.
const NOTE: &str = "classic and named shadows over MQTT through the router and gRPC, synced with the cloud for SyncShadow things";

/// Serves shadows until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), ShadowError> {
    let config = ShadowConfig::load::<ShadowError>(&ctx.config)?;
    let dir = ctx.layout.create_data_dir(SERVICE)?;
    let (store, docs) = store::Store::open(&dir.join("shadows.db"))?;
    // Watchers that fall this far behind skip changes.
    let (changes, _) = tokio::sync::broadcast::channel(1024);
    let agreed = store.agreed()?;
    tracing::info!(
        shadows = docs.len(),
        synced = agreed.len(),
        "shadows restored"
    );
    let shadows = service::Shadows {
        docs,
        store: Some(store),
        limits: document::Limits {
            max_document_bytes: config.max_document_bytes,
            max_in_flight_per_thing: config.max_in_flight_per_thing,
        },
        changes: changes.clone(),
        sync: sync::Sync::new(agreed),
    };
    let (commands, commands_rx) = tokio::sync::mpsc::channel(1024);
    let (publish, published) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(service::run(shadows, commands_rx, publish.clone()));
    let socket = ctx.layout.socket("router");
    let link_shutdown = shutdown.clone();
    let link_commands = commands.clone();
    tokio::spawn(async move { link::run(&socket, link_commands, published, link_shutdown).await });

    let api = grpc::Api {
        commands,
        publish,
        changes,
    };
    Server::new(Info::functional(SERVICE, NOTE))
        .await
        .add_service(ShadowServer::new(api))
        .serve_ready(listener, shutdown)
        .await
        .map_err(ShadowError::from)
}
