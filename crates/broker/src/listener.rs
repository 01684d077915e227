//! Accepting devices: the mutual-TLS listener, the plain lab listener, and
//! MQTT over WebSocket on either.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Listening;
use crate::connection::{self, Common};
use crate::identity::{Peer, Tls};
use crate::ws;

/// Accepts until `shutdown`; each connection runs on `tracker`.
pub async fn accept(
    listening: Listening,
    shared: Arc<Common>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let Listening {
        socket: listener,
        name,
        tls,
        websocket,
    } = listening;
    let websocket: Option<Arc<str>> = websocket.map(Arc::from);
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
        let ending = Ending(shared.clone());
        let address = addr.to_string();
        let stop = shutdown.clone();
        // One task per connection, holding only what its kind of
        // connection needs: a plain client's task is not sized for a TLS
        // session or a WebSocket (a thousand idle devices pay for it).
        match (&tls, &websocket) {
            (None, None) => {
                tracker.spawn(until(
                    stop,
                    ending,
                    connection::serve(socket, Peer::Plain, address, name, shared),
                ));
            }
            (None, Some(path)) => {
                let path = path.clone();
                tracker.spawn(until(
                    stop,
                    ending,
                    over_websocket(socket, Peer::Plain, address, name, path, shared),
                ));
            }
            (Some(tls), websocket) => {
                let (acceptor, tls, websocket) = (tls.acceptor(), tls.clone(), websocket.clone());
                tracker.spawn(until(stop, ending, async move {
                    let handshake = Box::pin(handshake(socket, acceptor, tls, &address, &shared));
                    let Some((stream, peer)) = handshake.await else {
                        return;
                    };
                    match websocket {
                        None => connection::serve(stream, peer, address, name, shared).await,
                        Some(path) => {
                            over_websocket(stream, peer, address, name, path, shared).await;
                        }
                    }
                }));
            }
        }
    }
}

/// Runs `work` until it ends or the broker stops. `work` is boxed here,
/// once: an async wrapper would hold it twice (its argument, then the
/// pinned copy it polls), doubling every connection's task.
fn until(
    stop: CancellationToken,
    ending: Ending,
    work: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let work = Box::pin(work);
    async move {
        tokio::select! {
            () = work => {}
            () = stop.cancelled() => {}
        }
        drop(ending);
    }
}

/// Counts a connection's end when dropped, whatever ended it.
struct Ending(Arc<Common>);

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Relaxed);
        self.0.ended_notify.notify_one();
    }
}

/// Connections that end in numbers (a mass disconnect, a flood of
/// half-open connections closed) leave their memory with the C
/// allocator, which keeps it: once [`ENDED_BEFORE_TRIM`] have ended and
/// none for [`QUIET`], it is given back to the system. Sleeps while no
/// connection ends.
pub async fn give_memory_back(shared: Arc<Common>, shutdown: CancellationToken) {
    let mut trimmed_at = 0;
    loop {
        tokio::select! {
            () = shared.ended_notify.notified() => {}
            () = shutdown.cancelled() => return,
        }
        loop {
            let seen = shared.ended.load(Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(QUIET) => {}
                () = shutdown.cancelled() => return,
            }
            if shared.ended.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        let ended = shared.ended.load(Ordering::Relaxed);
        if ended - trimmed_at >= ENDED_BEFORE_TRIM {
            trimmed_at = ended;
            let _ = tokio::task::spawn_blocking(verdant_common::memory::release_free).await;
        }
    }
}

/// How many connections must have ended before their memory is given back.
const ENDED_BEFORE_TRIM: u64 = 64;
/// How long no connection must end before it is.
const QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// The TLS handshake and the client certificate's check; `None` (logged)
/// refuses the connection.
async fn handshake(
    socket: TcpStream,
    acceptor: TlsAcceptor,
    tls: Tls,
    address: &str,
    shared: &Common,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Peer)> {
    let timeout = shared.config.connect_timeout();
    let stream = match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(
                %address,
                "TLS handshake failed: {}",
                crate::identity::handshake_error(&e)
            );
            return None;
        }
        Err(_) => {
            tracing::info!(%address, "TLS handshake not done within {timeout:?}");
            return None;
        }
    };
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| tls.presented(chain));
    let Some(presented) = presented else {
        tracing::info!(%address, "no client certificate");
        return None;
    };
    Some((stream, Peer::Tls(presented)))
}

/// Serves MQTT inside a WebSocket on `path`. Both the handshake and the
/// session are boxed: this path's state costs nothing to the others.
async fn over_websocket<S>(
    stream: S,
    peer: Peer,
    address: String,
    name: &'static str,
    path: Arc<str>,
    shared: Arc<Common>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.config.connect_timeout();
    let max = shared.config.max_packet_size;
    let accepted = Box::pin(tokio::time::timeout(
        timeout,
        ws::accept(stream, &path, max),
    ))
    .await;
    match accepted {
        Ok(Ok(inner)) => Box::pin(connection::serve(inner, peer, address, name, shared)).await,
        Ok(Err(e)) => tracing::info!(%address, listener = name, "{e}"),
        Err(_) => {
            tracing::info!(%address, listener = name, "WebSocket handshake not done within {timeout:?}");
        }
    }
}
