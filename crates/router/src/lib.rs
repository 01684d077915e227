//! verdant-router: the deployed group's subscription table and every
//! message's fan-out among the daemons linked to it. See ARCHITECTURE.md.

pub mod cloud;
pub mod config;
mod endpoint;
pub mod error;
mod grpc;
pub mod jobs;
pub mod queue;
pub mod spread;
pub mod switch;
pub mod undelivered;

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use verdant_common::config::Section;
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
/// The capabilities this daemon keeps: none (Unix sockets, files under the root and outgoing connections need none).
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[]);

/// Events waiting for the switch.
const SWITCH_QUEUE: usize = 1024;
/// Trace records a slow tracer may fall behind by before it skips some
/// (the ring is allocated whole at start: 1024 slots are about 40 KiB).
const TRACE_BACKLOG: usize = 1024;

/// Routes messages between the linked daemons until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let config = RouterConfig::load::<RouterError>(&ctx.config)?;
    let group = Group::load(&ctx.layout.current_group())?;
    let table = Table::from_group(table_version(), &group);
    tracing::info!(
        group = %group.id,
        routes = table.routes().len(),
        "subscription table loaded"
    );
    let (tx, rx) = mpsc::channel(SWITCH_QUEUE);
    // Tracers that fall this far behind skip messages.
    let (trace, _) = tokio::sync::broadcast::channel(TRACE_BACKLOG);
    let core = verdant_common::config::CoreSection::load::<RouterError>(&ctx.config)?;
    let bridge = bridge(&ctx, &config, &core, &table, tx.clone())?;
    let cloud_status = bridge.status.clone();
    let cloud_note = if config.cloud.endpoint.is_empty() {
        "no cloud endpoint configured".to_string()
    } else {
        format!("cloud {}:{}", config.cloud.endpoint, config.cloud.port)
    };
    tokio::spawn(switch::run(
        switch::Switch::new(table, config.max_held_per_endpoint, trace.clone())
            .with_core_jobs(&core.thing_name),
        rx,
    ));
    tokio::spawn(bridge.run(shutdown.clone()));

    let note = format!("routing by the table of group {}; {cloud_note}", group.id);
    let api = grpc::Api {
        switch: tx,
        cloud: cloud_status,
        trace,
        group_file: ctx.layout.current_group(),
        credit: config.link_credit,
        generation: AtomicU64::new(1),
    };
    Server::new(Info::functional(SERVICE, note))
        .await
        .add_service(RouterServer::new(api))
        .serve_ready(listener, shutdown)
        .await
        .map_err(RouterError::from)
}

/// A version no earlier table of this core had, even across restarts.
pub fn table_version() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The cloud bridge with its queue opened and TLS loaded.
fn bridge(
    ctx: &Context,
    config: &RouterConfig,
    core: &verdant_common::config::CoreSection,
    table: &Table,
    switch: mpsc::Sender<switch::Event>,
) -> Result<cloud::Bridge, RouterError> {
    let c = &config.cloud;
    let path = match c.queue_storage {
        config::Storage::Disk => Some(ctx.layout.create_data_dir(SERVICE)?.join("cloud-queue.db")),
        config::Storage::Memory => None,
    };
    let queue = queue::CloudQueue::open(path.as_deref(), c.queue_max_bytes, c.queue_full_policy)?;
    if queue.stats.messages > 0 {
        tracing::info!(
            messages = queue.stats.messages,
            bytes = queue.stats.bytes,
            "messages for the cloud restored from the queue"
        );
    }
    let (tls, proxy) = if c.endpoint.is_empty() {
        (None, None)
    } else {
        (
            Some(cloud::tls(&ctx.layout, c)?),
            cloud::proxy(&ctx.layout, c)?,
        )
    };
    let client_id = if c.client_id.is_empty() {
        core.thing_name.clone()
    } else {
        c.client_id.clone()
    };
    let jobs = jobs::CoreJobs::new(&core.thing_name);
    let subjects = cloud::cloud_subjects(table, Some(&jobs));
    let status = std::sync::Arc::new(std::sync::Mutex::new(cloud::CloudStatus {
        subscriptions: subjects.len(),
        queue: queue.stats,
        ..cloud::CloudStatus::default()
    }));
    Ok(cloud::Bridge {
        config: c.clone(),
        tls,
        proxy,
        client_id,
        queue,
        subjects,
        jobs: Some(jobs),
        switch,
        status,
        clients: Vec::new(),
        spread: spread::Spread::new(&[], 1),
        outgrown: false,
        unacknowledged: std::collections::HashMap::new(),
    })
}
