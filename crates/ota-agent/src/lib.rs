//! verdant-ota-agent: the core's deployment agent. It takes a group from
//! an operator (`verdantctl deploy`, the `Deployments` gRPC API), checks
//! it, stages it under `deployments/<id>/`, switches `deployments/current`
//! atomically, has every daemon apply it hot over its own gRPC call,
//! checks that they took it, and rolls back when they did not. See
//! ARCHITECTURE.md.

mod apply;
mod artifacts;
mod bundle;
pub mod config;
mod content;
mod engine;
pub mod error;
pub mod fetch;
mod grpc;
mod jobs;
mod link;
mod stage;
mod store;
pub mod update;

use std::sync::Arc;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::{Context, Threads};
use verdant_common::shutdown::CancellationToken;

use crate::config::OtaAgentConfig;
pub use crate::error::OtaAgentError;

pub const SERVICE: &str = "ota-agent";
/// The runtime this daemon wants.
pub const THREADS: Threads = Threads::One;
/// The capabilities this daemon keeps: none (the files it writes are the
/// core's own, and the daemons apply a deployment themselves).
/// `CAP_CHOWN`: a model resource's files are given to its
/// `OwnerSetting.GroupOwner`.
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Fixed(&[
        verdant_common::privileges::Capability::CAP_CHOWN,
    ]);

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), OtaAgentError> {
    let config = OtaAgentConfig::load::<OtaAgentError>(&ctx.config)?;
    let data = ctx.layout.create_data_dir(SERVICE)?;
    let db = data.join("deployments.db");
    let failed = |source| OtaAgentError::Store {
        path: db.clone(),
        source,
    };
    let store = store::Store::open(&db).map_err(failed)?;
    let staging = stage::Staging::new(ctx.layout.deployments_dir());
    let daemons = apply::Daemons::new(ctx.layout.clone());
    let ledger = jobs::Ledger::open(&db).map_err(failed)?;
    let core = verdant_common::config::CoreSection::load::<OtaAgentError>(&ctx.config)?;
    let content = content::Content::new(
        &data,
        ctx.layout.functions_dir(),
        ctx.layout.deployments_dir(),
        config.ca_file.as_ref().map(|f| ctx.layout.resolve(f)),
    );
    let updates = Arc::new(update::api::Api {
        state: data.join("tuf"),
        anchor: ctx.layout.update_root(),
        repository: config.update_repository.clone(),
        ca_file: config.ca_file.as_ref().map(|f| ctx.layout.resolve(f)),
        busy: Arc::default(),
        downloads: data.join("downloads"),
        init_socket: ctx.layout.socket(verdant_common::paths::INIT_SERVICE),
        scratch: data.join("scratch").join("update"),
        progress: Arc::default(),
    });
    let agent = Arc::new(engine::Agent::new(store, staging, content, daemons, config));
    let engine = tokio::spawn(agent.clone().run(shutdown.clone()));
    // Should the engine ever stop on its own (a bug), the daemon stops
    // with it, so that init restarts it and recovery ends what it ran,
    // rather than serving a queue that never moves.
    let engine = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let ended = engine.await;
            let failed = !stop.is_cancelled();
            if failed {
                tracing::error!(
                    "the deployment engine stopped ({ended:?}): stopping the ota-agent"
                );
                stop.cancel();
            }
            failed
        })
    };
    // Cloud deployments: AWS IoT Jobs through the router.
    let (up, published) = tokio::sync::mpsc::unbounded_channel();
    let (to_jobs, down) = tokio::sync::mpsc::channel(64);
    let router = ctx.layout.socket("router");
    let link_shutdown = shutdown.clone();
    tokio::spawn(async move { link::run(&router, to_jobs, published, link_shutdown).await });
    let update_jobs = jobs::UpdateJobs {
        api: updates.clone(),
        record: ctx.layout.root().join("versions/update.json"),
        db: db.clone(),
    };
    tokio::spawn(jobs::Jobs::run(
        agent.clone(),
        core.thing_name,
        (ledger, update_jobs),
        up,
        down,
        shutdown.clone(),
    ));
    let result = grpc::server(agent, &updates)
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(OtaAgentError::from);
    if engine.await.unwrap_or(true) {
        return Err(OtaAgentError::Engine);
    }
    result
}
