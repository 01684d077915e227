//! Accepting devices: the mutual-TLS listener and the plain lab listener.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Shared};
use crate::identity::{Peer, Tls};

/// Accepts until `shutdown`; each connection runs on `tracker`.
pub async fn accept(
    listener: TcpListener,
    tls: Option<Tls>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let name = if tls.is_some() { "tls" } else { "tcp" };
    let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.server.clone()));
    loop {
        let (socket, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(listener = name, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        let address = addr.to_string();
        let stop = shutdown.clone();
        match (&acceptor, &tls) {
            (Some(acceptor), Some(tls)) => {
                let acceptor = acceptor.clone();
                let tls = tls.clone();
                tracker.spawn(async move {
                    let timeout = shared.config.connect_timeout();
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%address, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%address, "TLS handshake not done within {timeout:?}");
                            return;
                        }
                    };
                    let presented = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| tls.presented(chain));
                    let Some(presented) = presented else {
                        tracing::info!(%address, "no client certificate");
                        return;
                    };
                    tokio::select! {
                        () = connection::serve(stream, Peer::Tls(presented), address, "tls", shared) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
            _ => {
                tracker.spawn(async move {
                    tokio::select! {
                        () = connection::serve(socket, Peer::Plain, address, "tcp", shared) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        }
    }
}
