//! The HTTPS side: mutual TLS against the group CA (rustls), one request
//! per connection with hyper, answered as AWS's discovery API answers
//! (`HTTP/1.1 200 OK`, lowercase `content-length`, `connection: close`),
//! which the v1 SDK's byte-by-byte parser needs. Slow or oversized
//! requests are cut off; the server keeps serving.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use verdant_common::paths::Layout;
use verdant_common::shutdown::CancellationToken;
use verdant_group::Group;
use verdant_proto::broker::v1 as broker;
use verdant_proto::broker::v1::broker_client::BrokerClient;

use crate::config::DiscoveryConfig;
use crate::discover::{self, Entry};

/// How long a client has for its handshake and its request line and headers.
const PATIENCE: Duration = Duration::from_secs(10);
/// The device port when the broker cannot be asked.
const DEFAULT_DEVICE_PORT: u16 = 8883;

/// What a request is answered from.
pub struct State {
    pub layout: Layout,
    pub config: DiscoveryConfig,
    /// The group CA as devices get it.
    pub ca_pem: String,
}

/// The TLS of the discovery API: the server certificate, and client
/// certificates required and checked against the group CA.
pub fn tls(layout: &Layout, config: &DiscoveryConfig) -> Result<TlsAcceptor, String> {
    let certs = verdant_common::pem::certificates(&layout.resolve(&config.certificate))
        .map_err(|e| e.to_string())?;
    let key = verdant_common::pem::private_key(&layout.resolve(&config.private_key))
        .map_err(|e| e.to_string())?;
    let roots = verdant_common::pem::roots(&layout.resolve(&config.client_ca))
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    // Port 443 clients ask for AWS's ALPN name; 8443 ones ask for none.
    server.alpn_protocols = vec![b"x-amzn-http-ca".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Serves the discovery API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("discovery: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            if let Err(why) = connection(tcp, acceptor, state).await {
                tracing::info!(%peer, "discovery: {why}");
            }
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    state: Arc<State>,
) -> Result<(), String> {
    let tls = tokio::time::timeout(PATIENCE, acceptor.accept(tcp))
        .await
        .map_err(|_| "no TLS handshake in time".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| verdant_group::certificate_id(c.as_ref()))
        .ok_or("no client certificate")?;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let (state, presented) = (state.clone(), presented.clone());
        async move { Ok::<_, Infallible>(respond(&request, &presented, &state).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false)
        .max_buf_size(16 * 1024)
        .timer(TokioTimer::new())
        .header_read_timeout(PATIENCE);
    tokio::time::timeout(
        PATIENCE * 3,
        http.serve_connection(TokioIo::new(tls), service),
    )
    .await
    .map_err(|_| "request not done in time".to_string())?
    .map_err(|e| format!("HTTP: {e}"))
}

async fn respond(
    request: &Request<hyper::body::Incoming>,
    presented: &str,
    state: &State,
) -> Response<Full<Bytes>> {
    let answer = if request.method() == hyper::Method::GET {
        match Group::load(&state.layout.current_group()) {
            Ok(group) => {
                let connectivity = connectivity(state).await;
                discover::answer(
                    request.uri().path(),
                    presented,
                    &group,
                    &connectivity,
                    &state.ca_pem,
                )
            }
            Err(e) => {
                tracing::error!("discovery: {e}");
                discover::Answer {
                    status: 500,
                    body: serde_json::json!({ "errorMessage": "the core's group cannot be read" })
                        .to_string(),
                }
            }
        }
    } else {
        discover::Answer {
            status: 400,
            body: serde_json::json!({ "errorMessage": "only GET is served" }).to_string(),
        }
    };
    tracing::info!(
        path = request.uri().path(),
        status = answer.status,
        "discovery request"
    );
    Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(Full::new(Bytes::from(answer.body)))
        .expect("a valid response")
}

/// The configured connectivity, else the host's addresses, with the
/// broker's device port.
async fn connectivity(state: &State) -> Vec<Entry> {
    let port = broker_port(&state.layout).await;
    if state.config.connectivity.is_empty() {
        return discover::detected(port, state.config.include_loopback);
    }
    state
        .config
        .connectivity
        .iter()
        .map(|c| Entry {
            id: c.id.clone(),
            host_address: c.host_address.clone(),
            port_number: c.port_number.unwrap_or(port),
            metadata: c.metadata.clone(),
        })
        .collect()
}

/// The port of the broker's TLS listener, asked of the broker.
async fn broker_port(layout: &Layout) -> u16 {
    let Ok(channel) = verdant_common::uds::connect(&layout.socket("broker")).await else {
        return DEFAULT_DEVICE_PORT;
    };
    BrokerClient::new(channel)
        .list_listeners(broker::ListListenersRequest {})
        .await
        .ok()
        .and_then(|r| {
            r.into_inner()
                .listeners
                .into_iter()
                .find(|l| l.name == "tls")
                .and_then(|l| l.address.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port())
        })
        .unwrap_or(DEFAULT_DEVICE_PORT)
}
