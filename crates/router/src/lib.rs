//! verdant-router: the deployed group's subscription table and every
//! message's fan-out among the daemons linked to it. See ARCHITECTURE.md.

pub mod config;
pub mod error;
mod grpc;
pub mod switch;

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use verdant_common::daemon::Context;
use verdant_common::grpc::{Info, Server};
use verdant_common::shutdown::CancellationToken;
use verdant_group::Group;
use verdant_group::routes::Table;
use verdant_proto::router::v1::router_server::RouterServer;

use crate::config::RouterConfig;
pub use crate::error::RouterError;

pub const SERVICE: &str = "router";
/// The runtime this daemon wants.
pub const THREADS: verdant_common::daemon::Threads = verdant_common::daemon::Threads::PerCore;

/// Events waiting for the switch.
const SWITCH_QUEUE: usize = 1024;

/// Routes messages between the linked daemons until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let config: RouterConfig = ctx.config.section("router")?;
    config
        .check()
        .map_err(|(key, reason)| RouterError::Invalid { key, reason })?;
    let group = Group::load(&ctx.layout.current_group())?;
    // A version no earlier table of this core had, even across restarts.
    let version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let table = Table::from_group(version, &group);
    tracing::info!(
        group = %group.id,
        routes = table.routes().len(),
        "subscription table loaded"
    );
    let (tx, rx) = mpsc::channel(SWITCH_QUEUE);
    tokio::spawn(switch::run(
        switch::Switch::new(table, config.max_held_per_endpoint),
        rx,
    ));

    let server = Server::new(Info {
        service: SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        note: format!(
            "routing by the table of group {} (no cloud connection yet)",
            group.id
        ),
        functional: true,
    })
    .await
    .add_service(RouterServer::new(grpc::Api {
        switch: tx,
        credit: config.link_credit,
        generation: AtomicU64::new(1),
    }));
    server.readiness().serving().await;
    let result = server.serve(listener, shutdown.clone()).await;
    shutdown.cancel();
    result.map_err(RouterError::from)
}
