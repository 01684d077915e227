//! verdant-broker: the MQTT server devices connect to. See ARCHITECTURE.md.

mod check;
pub mod codec;
pub mod config;
mod connection;
pub mod error;
mod grpc;
pub mod hub;
pub mod identity;
pub mod index;
pub mod link;
mod listener;
pub mod message;
pub mod outbound;
pub mod outbox;
pub mod request;
pub mod store;
pub mod topic;
pub mod wire;
mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use verdant_common::config::Section;
use verdant_common::daemon::Context;
use verdant_common::grpc::{Info, Server};
use verdant_common::shutdown::{CancellationToken, TaskTracker};
use verdant_group::Group;
use verdant_proto::broker::v1::broker_server::BrokerServer;

use crate::config::BrokerConfig;
pub use crate::error::BrokerError;
use crate::identity::{Devices, Tls};

pub const SERVICE: &str = "broker";
/// The runtime this daemon wants: `[broker] worker_threads`.
pub const THREADS: verdant_common::daemon::Threads =
    verdant_common::daemon::Threads::Configured(worker_threads);
/// The capabilities this daemon keeps: `NET_BIND_SERVICE` when one of its
/// listeners binds a port below 1024, otherwise none.
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Configured(capabilities);

fn capabilities(
    config: &verdant_common::config::ConfigSource,
) -> Vec<verdant_common::privileges::Capability> {
    let c = config.section::<BrokerConfig>("broker").unwrap_or_default();
    let low = [
        (c.tls.enabled, c.tls.bind),
        (c.tcp.enabled, c.tcp.bind),
        (c.websocket.enabled, c.websocket.bind),
    ]
    .iter()
    .any(|(on, addr)| *on && addr.port() != 0 && addr.port() < 1024);
    if low {
        vec![verdant_common::privileges::Capability::CAP_NET_BIND_SERVICE]
    } else {
        Vec::new()
    }
}

/// `[broker] worker_threads`; a section that does not parse is reported by
/// `run`, on the default runtime.
fn worker_threads(config: &verdant_common::config::ConfigSource) -> usize {
    config
        .section::<BrokerConfig>(BrokerConfig::NAME)
        .map_or_else(
            |_| BrokerConfig::default().worker_threads,
            |c| c.worker_threads,
        )
}

/// Requests waiting for the hub task.
const HUB_QUEUE: usize = 4096;

/// Serves MQTT on the configured listeners and gRPC on `listener` until
/// `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let config = BrokerConfig::load::<BrokerError>(&ctx.config)?;
    let group = Group::load(&ctx.layout.current_group())?;
    let revoked = link::GroupFile::revocations(ctx.layout.revocations());
    let devices = Arc::new(std::sync::RwLock::new(Devices::from_group(
        &group,
        &revoked.current(),
    )));
    let group_file = Arc::new(link::GroupFile {
        file: ctx.layout.current_group(),
        revoked,
        devices: devices.clone(),
    });
    let (sockets, bound) = listen(&ctx, &config)?;
    let group_tls = sockets.iter().find_map(|l| l.tls.clone());
    if let Some(tls) = &group_tls {
        tls.watch(shutdown.clone());
    }

    let mut hub = open_hub(&ctx, &config)?;
    let durable_subscriptions = hub.durable_subscriptions();
    let congested = hub.congestion();
    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let router_counters = Arc::new(link::LinkCounters::default());
    if config.mode == config::Mode::Routed {
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        hub.routed(link_tx);
        tokio::spawn(link::run(
            ctx.layout.socket("router"),
            group_file.clone(),
            hub_tx.clone(),
            link_rx,
            config.router_backlog,
            router_counters.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(watch_revocations(
        group_file,
        hub_tx.clone(),
        shutdown.clone(),
    ));
    let wills = hub.publish_restored_wills();
    if wills > 0 {
        tracing::info!(
            wills,
            "wills of clients connected when the broker stopped: published, or waiting for their delay"
        );
    }
    let mode = match config.mode {
        config::Mode::Local => "local mode: devices publish and subscribe among themselves",
        config::Mode::Routed => "routed mode: the group's subscription table decides",
    };
    let max_subscriptions = config.max_subscriptions_per_client;
    let hub = Arc::new(hub::SharedHub::new(hub));
    tokio::spawn(hub::run(hub.clone(), hub_rx, max_subscriptions));
    let shared = Arc::new(connection::Common {
        config,
        devices,
        hub: hub_tx.clone(),
        hub_state: hub,
        durable_subscriptions,
        congested,
        assigned: AtomicU64::new(1),
        ended: AtomicU64::new(0),
        ended_notify: tokio::sync::Notify::new(),
    });
    tokio::spawn(listener::give_memory_back(shared.clone(), shutdown.clone()));
    let tracker = TaskTracker::new();
    for listening in sockets {
        tokio::spawn(listener::accept(
            listening,
            shared.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }

    let note = format!(
        "{mode}; MQTT 3.1.1 and 5.0 on {}",
        bound
            .iter()
            .map(|(n, a)| format!("{n} {a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let api = grpc::Api {
        hub: hub_tx,
        listeners: bound,
        router_counters,
        devices_dir: ctx.layout.certs_dir().join("devices"),
        tls: group_tls,
    };
    let result = Server::new(Info::functional(SERVICE, note))
        .await
        .add_service(BrokerServer::new(api))
        .serve_ready(listener, shutdown.clone())
        .await;
    verdant_common::shutdown::drain(&tracker, std::time::Duration::from_secs(2)).await;
    result.map_err(BrokerError::from)
}

/// The listening socket for the listener `key` of the config (`tls`,
/// `tcp`, `websocket`) on `addr`: the one verdant-init handed over for it
/// when it serves that address, else one bound here.
fn bind(
    inherited: &mut Vec<(String, std::net::TcpListener)>,
    key: &str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, BrokerError> {
    let fail = |source| BrokerError::Bind { addr, source };
    let held = inherited.iter().position(|(name, socket)| {
        name == key
            && socket
                .local_addr()
                .is_ok_and(|actual| verdant_common::listen::serves(addr, actual))
    });
    let socket = match held {
        Some(i) => {
            let (_, socket) = inherited.swap_remove(i);
            tracing::debug!(listener = key, "listening on the socket init holds");
            socket
        }
        None => verdant_common::listen::bind_listener(addr).map_err(fail)?,
    };
    socket.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(socket).map_err(fail)
}

/// The device listeners the config enables, by key (`tls`, `tcp`,
/// `websocket`), with their configured addresses: what verdant-init binds
/// and holds for every broker it starts.
pub fn held_listeners(
    config: &verdant_common::config::ConfigSource,
) -> Vec<(&'static str, std::net::SocketAddr)> {
    let Ok(c) = config.section::<BrokerConfig>(BrokerConfig::NAME) else {
        return Vec::new();
    };
    [
        ("tls", c.tls.enabled, c.tls.bind),
        ("tcp", c.tcp.enabled, c.tcp.bind),
        ("websocket", c.websocket.enabled, c.websocket.bind),
    ]
    .into_iter()
    .filter(|(_, on, _)| *on)
    .map(|(key, _, addr)| (key, addr))
    .collect()
}

/// The hub, with its persistent sessions restored when persistence is on.
fn open_hub(ctx: &Context, config: &BrokerConfig) -> Result<hub::Hub, BrokerError> {
    if !config.persistence {
        return Ok(hub::Hub::new(config.queue_limits()));
    }
    let dir = ctx.layout.create_data_dir(SERVICE)?;
    let (store, loaded) = store::Store::open(&dir.join("sessions.db"))?;
    tracing::info!(
        sessions = loaded.sessions.len(),
        queued = loaded.sessions.iter().map(|s| s.queue.len()).sum::<usize>(),
        retained = loaded.retained.len(),
        "persistent sessions restored"
    );
    Ok(hub::Hub::with_store(config.queue_limits(), store, loaded))
}

/// Reads the devices again when the revoked certificates change, and
/// closes the connections of those no longer allowed in.
async fn watch_revocations(
    group: Arc<link::GroupFile>,
    hub: mpsc::Sender<request::Request>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(verdant_common::reload::EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if group.revoked.check()
            && hub
                .send(request::Request::Members(group.reload()))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// A bound listener: its name (`tls`, `tcp`, `wss`, `ws`), its TLS, and
/// for WebSocket the path.
pub(crate) struct Listening {
    pub socket: tokio::net::TcpListener,
    pub name: &'static str,
    pub tls: Option<Tls>,
    pub websocket: Option<String>,
}

/// A listener's kind and the address it is bound to.
type Bound = (&'static str, std::net::SocketAddr);

/// Binds the configured listeners; also their names and real addresses.
fn listen(
    ctx: &Context,
    config: &BrokerConfig,
) -> Result<(Vec<Listening>, Vec<Bound>), BrokerError> {
    let wss = config.websocket.enabled && config.websocket.tls;
    let tls = if config.tls.enabled || wss {
        Some(Tls::load(
            &ctx.layout.resolve(&config.tls.certificate),
            &ctx.layout.resolve(&config.tls.private_key),
            &ctx.layout.resolve(&config.tls.client_ca),
        )?)
    } else {
        None
    };
    let mut inherited = verdant_common::listen::take(verdant_common::listen::ENV);
    let mut sockets = Vec::new();
    let listening = |socket, name, tls, websocket| Listening {
        socket,
        name,
        tls,
        websocket,
    };
    if config.tls.enabled {
        let socket = bind(&mut inherited, "tls", config.tls.bind)?;
        sockets.push(listening(socket, "tls", tls.clone(), None));
    }
    if config.tcp.enabled {
        let socket = bind(&mut inherited, "tcp", config.tcp.bind)?;
        sockets.push(listening(socket, "tcp", None, None));
    }
    if config.websocket.enabled {
        let socket = bind(&mut inherited, "websocket", config.websocket.bind)?;
        let path = Some(config.websocket.path.clone());
        if wss {
            sockets.push(listening(socket, "wss", tls.clone(), path));
        } else {
            sockets.push(listening(socket, "ws", None, path));
        }
    }
    let mut bound = Vec::new();
    for l in &sockets {
        let addr = l.socket.local_addr().map_err(|source| BrokerError::Bind {
            addr: config.tls.bind,
            source,
        })?;
        tracing::info!(listener = l.name, %addr, "listening for devices");
        bound.push((l.name, addr));
    }
    Ok((sockets, bound))
}
