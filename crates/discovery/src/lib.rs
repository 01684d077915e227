//! verdant-discovery: the Greengrass discovery API devices call to find
//! their core (`GET /greengrass/discover/thing/<thing>` over HTTPS with
//! mutual TLS): the group they are in, the core's connectivity and the
//! group CA. See ARCHITECTURE.md.

mod certs;
pub mod config;
mod connectivity;
mod discover;
pub mod error;
mod grpc;
mod http;
mod link;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use verdant_common::config::Section;
use verdant_common::daemon::{Context, Threads};
use verdant_common::paths::Layout;
use verdant_common::shutdown::CancellationToken;

use crate::certs::Keeper;
use crate::config::DiscoveryConfig;
use crate::connectivity::Connectivity;
pub use crate::error::DiscoveryError;

pub const SERVICE: &str = "discovery";
/// The runtime this daemon wants.
pub const THREADS: Threads = Threads::One;
/// The capabilities this daemon keeps: none, unless a listener's port is
/// below 1024 (`alpn_bind = "0.0.0.0:443"`): then `CAP_NET_BIND_SERVICE`.
pub const CAPABILITIES: verdant_common::privileges::Capabilities =
    verdant_common::privileges::Capabilities::Configured(capabilities);

fn capabilities(
    config: &verdant_common::config::ConfigSource,
) -> Vec<verdant_common::privileges::Capability> {
    let c = config
        .section::<DiscoveryConfig>(DiscoveryConfig::NAME)
        .unwrap_or_default();
    let low = std::iter::once(c.bind)
        .chain(c.alpn_bind)
        .any(|a| a.port() != 0 && a.port() < 1024);
    if low {
        vec![verdant_common::privileges::Capability::CAP_NET_BIND_SERVICE]
    } else {
        Vec::new()
    }
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    ctx: Context,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), DiscoveryError> {
    let config = DiscoveryConfig::load::<DiscoveryError>(&ctx.config)?;
    let core = verdant_common::config::CoreSection::load::<DiscoveryError>(&ctx.config)?;
    let data = ctx
        .layout
        .create_data_dir(SERVICE)
        .map_err(DiscoveryError::DataDir)?;
    let connectivity = Arc::new(Connectivity::new(
        ctx.layout.clone(),
        &config,
        data.join("connectivity.json"),
    ));
    connectivity.refresh().await;
    let keeper = Arc::new(Keeper::new(&ctx.layout, &config));
    // A certificate due now is issued before the listener first reads it.
    keep_certificate(&keeper, &ctx.layout, &connectivity).await;
    let tls = http::tls(&ctx.layout, &config).map_err(DiscoveryError::Tls)?;
    tls.watch(shutdown.clone());
    let (https, address) = bind(config.bind).await?;
    tracing::info!(%address, "discovery API listening (HTTPS, mutual TLS)");
    let alpn = match config.alpn_bind {
        Some(at) => {
            let (listener, address) = bind(at).await?;
            tracing::info!(%address, "discovery API listening for ALPN x-amzn-http-ca");
            Some((listener, address))
        }
        None => None,
    };
    let file = ctx.layout.revocations();
    let revoked = verdant_common::reload::Reloaded::new_or(
        "the revoked certificates",
        vec![file.clone()],
        (
            std::collections::HashSet::new(),
            "no certificate is refused as revoked",
        ),
        move || verdant_group::revoked::ids_in(&file).map_err(|e| e.to_string()),
    );
    let state = Arc::new(http::State {
        layout: ctx.layout.clone(),
        tls,
        connectivity,
        revoked,
        requests: std::sync::Mutex::default(),
    });
    let wake = Arc::new(tokio::sync::Notify::new());
    let changed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(link::run(
        ctx.layout.clone(),
        core.thing_name,
        state.connectivity.clone(),
        changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(http::serve(https, false, state.clone(), shutdown.clone()));
    let alpn_address = alpn.map(|(listener, address)| {
        tokio::spawn(http::serve(listener, true, state.clone(), shutdown.clone()));
        address
    });
    tokio::spawn(keep(
        state.clone(),
        keeper.clone(),
        (wake.clone(), changed),
        Duration::from_secs(config.refresh_secs),
        shutdown.clone(),
    ));
    let api = grpc::Api {
        state,
        keeper,
        wake,
    };
    grpc::server(address, alpn_address, api)
        .await
        .serve_ready(listener, shutdown)
        .await
        .map_err(DiscoveryError::from)
}

async fn bind(
    address: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), DiscoveryError> {
    let err = |source| DiscoveryError::Bind { address, source };
    let listener = tokio::net::TcpListener::bind(address).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}

/// Looks at the connectivity every `every` (or when woken) and issues a
/// server certificate when one is due.
/// `changed` is told when what devices get changed (for the cloud).
async fn keep(
    state: Arc<http::State>,
    keeper: Arc<Keeper>,
    (wake, changed): (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>),
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut seen = state.connectivity.entries().0;
    loop {
        // Until the broker has told its port, ask again soon.
        let wait = if state.connectivity.port_known() {
            every
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
        state.connectivity.refresh().await;
        let now = state.connectivity.entries().0;
        if now != seen {
            changed.notify_one();
            seen = now;
        }
        keep_certificate(&keeper, &state.layout, &state.connectivity).await;
    }
}

async fn keep_certificate(keeper: &Arc<Keeper>, layout: &Layout, connectivity: &Connectivity) {
    if !keeper.issues() {
        return;
    }
    let names = names_of(connectivity);
    let Some(why) = keeper.due(&names, certs::now()) else {
        return;
    };
    let (keeper, cn) = (keeper.clone(), core_name(layout));
    let issued = tokio::task::spawn_blocking(move || keeper.issue(&cn, &names, &why)).await;
    if let Ok(Err(e)) = issued {
        tracing::error!("cannot issue a server certificate, the current one stays: {e}");
    }
}

/// Every name the server certificate must carry (IP addresses written
/// the one way a certificate gives them back).
fn names_of(connectivity: &Connectivity) -> Vec<String> {
    let mut names = verdant_common::pki::local_names();
    names.extend(connectivity.entries().0.into_iter().map(|e| {
        e.host_address
            .parse::<std::net::IpAddr>()
            .map_or(e.host_address, |ip| ip.to_string())
    }));
    names
}

pub(crate) fn names(state: &http::State) -> Vec<String> {
    names_of(&state.connectivity)
}

/// The core's thing name, for the server certificate's subject.
pub(crate) fn core_name(layout: &Layout) -> String {
    verdant_group::Group::load(&layout.current_group()).map_or_else(
        |_| "verdant-core".into(),
        |g| g.core().thing_name().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_below_1024_keeps_the_capability_to_bind_it() {
        let needs = |text: &str| {
            let source = verdant_common::config::ConfigSource::from_str("t.toml", text).unwrap();
            capabilities(&source)
        };
        assert!(needs("").is_empty(), "8443 needs nothing");
        assert_eq!(
            needs("[discovery]\nalpn_bind = \"0.0.0.0:443\"\n"),
            [verdant_common::privileges::Capability::CAP_NET_BIND_SERVICE]
        );
    }
}
