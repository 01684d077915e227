//! What verdant-discovery serves on its socket: health, reflection and
//! daemon info, whose note says where the discovery API listens.

use verdant_common::grpc::{Info, Server};

use crate::SERVICE;

/// The server, its health still `NOT_SERVING`.
pub(crate) async fn server(address: std::net::SocketAddr) -> Server {
    let note = format!("HTTPS discovery API on {address} (mutual TLS, the group CA)");
    Server::new(Info::functional(SERVICE, env!("CARGO_PKG_VERSION"), note)).await
}
