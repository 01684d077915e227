//! What verdant-discovery serves on its socket: health, reflection and daemon
//! info, whose note says what the core does without it. Its own API will
//! be served from here (then `grpc/`, one file per RPC group).

use verdant_common::grpc::Server;

use crate::SERVICE;

/// What the core does without this daemon.
const WHAT: &str = "no discovery API: devices connect to the core's address directly";

/// The server, its health still `NOT_SERVING`.
pub(crate) async fn server() -> Server {
    Server::health_only(SERVICE, env!("CARGO_PKG_VERSION"), WHAT).await
}
