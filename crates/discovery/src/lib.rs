//! verdant-discovery: the Greengrass discovery API devices call to find
//! their core (`GET /greengrass/discover/thing/<thing>` over HTTPS with
//! mutual TLS): the group they are in, the core's connectivity and the
//! group CA. See ARCHITECTURE.md.

pub mod config;
mod discover;
pub mod error;
mod grpc;
mod http;

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
    let config = DiscoveryConfig::load::<DiscoveryError>(&ctx.config)?;
    let acceptor = http::tls(&ctx.layout, &config).map_err(DiscoveryError::Tls)?;
    let ca_file = ctx.layout.resolve(&config.client_ca);
    let ca_pem = std::fs::read_to_string(&ca_file).map_err(|source| DiscoveryError::Io {
        path: ca_file,
        source,
    })?;
    let https = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| DiscoveryError::Bind {
            address: config.bind,
            source,
        })?;
    let address = https.local_addr().map_err(|source| DiscoveryError::Bind {
        address: config.bind,
        source,
    })?;
    tracing::info!(%address, "discovery API listening (HTTPS, mutual TLS)");
    let state = std::sync::Arc::new(http::State {
        layout: ctx.layout.clone(),
        config,
        ca_pem,
    });
    tokio::spawn(http::serve(https, acceptor, state, shutdown.clone()));
    grpc::server(address)
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(DiscoveryError::from)
}
