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
use verdant_common::daemon::Context;
use verdant_common::grpc::{Info, Server};
use verdant_common::shutdown::CancellationToken;

use verdant_proto::shadow::v1::shadow_server::ShadowServer;

use crate::config::ShadowConfig;
pub use crate::error::ShadowError;

pub const SERVICE: &str = "shadow";
/// The runtime this daemon wants.
pub const THREADS: verdant_common::daemon::Threads = verdant_common::daemon::Threads::One;

/// Serves shadows until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), ShadowError> {
    let config: ShadowConfig = ctx.config.section("shadow")?;
    config
        .check()
        .map_err(|(key, reason)| ShadowError::Invalid { key, reason })?;
    let dir = ctx.layout.data_dir(SERVICE);
    std::fs::create_dir_all(&dir).map_err(|source| ShadowError::DataDir {
        path: dir.clone(),
        source,
    })?;
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

    let server = Server::new(Info {
        service: SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        note: "classic and named shadows over MQTT through the router and gRPC, synced with the cloud for SyncShadow things"
            .into(),
        functional: true,
    })
    .await
    .add_service(ShadowServer::new(grpc::Api {
        commands,
        publish,
        changes,
    }));
    server.readiness().serving().await;
    let result = server.serve(listener, shutdown.clone()).await;
    shutdown.cancel();
    result.map_err(ShadowError::from)
}
