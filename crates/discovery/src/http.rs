//! The HTTPS side: mutual TLS against the group CA (rustls), one request
//! per connection with hyper, answered as AWS's discovery API answers
//! (`HTTP/1.1 200 OK`, lowercase `content-length`, `connection: close`),
//! which the v1 SDK's byte-by-byte parser needs. Slow or oversized
//! requests are cut off; the server keeps serving.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
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
use verdant_common::pki::Rotation;
use verdant_common::reload::Reloaded;

use crate::certs::now;
use verdant_common::shutdown::CancellationToken;
use verdant_group::Group;

use crate::config::DiscoveryConfig;
use crate::connectivity::Connectivity;
use crate::discover;

/// The ALPN name AWS's discovery clients offer on port 443.
const AWS_ALPN: &[u8] = b"x-amzn-http-ca";
/// How long a client has for its handshake and its request line and headers.
const PATIENCE: Duration = Duration::from_secs(10);

/// What a request is answered from.
pub struct State {
    pub layout: Layout,
    pub tls: Arc<Reloaded<Served>>,
    pub connectivity: Arc<Connectivity>,
    /// The certificates revoked on this core.
    pub revoked: Arc<Reloaded<HashSet<String>>>,
    /// The last [`KEPT_REQUESTS`] requests, newest last.
    pub requests: Mutex<VecDeque<Logged>>,
}

/// How many requests `ListRequests` shows.
const KEPT_REQUESTS: usize = 100;

/// A request as `ListRequests` shows it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: i64,
    pub peer: String,
    pub path: String,
    pub certificate_id: String,
    pub status: u16,
}

/// One build of the discovery API's TLS, and the group CAs devices get.
pub struct Served {
    pub acceptor: TlsAcceptor,
    /// Each CA of the group CA file as (id, PEM): the one that issued the
    /// server certificate first, then the others in the file's order.
    pub cas: Vec<(String, String)>,
    pub rotation: Option<Rotation>,
}

impl Served {
    /// The CAs devices get at `now`: the server certificate's issuer, and
    /// the file's other CAs, but once a rotation's overlap is over not
    /// those it replaced.
    pub fn cas_now(&self, now: i64) -> Vec<String> {
        let retired: &[String] = match &self.rotation {
            Some(r) if !r.overlapping(now) => &r.previous_ids,
            _ => &[],
        };
        self.cas
            .iter()
            .enumerate()
            .filter(|(i, (id, _))| *i == 0 || !retired.contains(id))
            .map(|(_, (_, pem))| pem.clone())
            .collect()
    }
}

/// The TLS of the discovery API: the server certificate, and client
/// certificates required and checked against the group CA; built again
/// when either file changes.
pub fn tls(layout: &Layout, config: &DiscoveryConfig) -> Result<Arc<Reloaded<Served>>, String> {
    let (cert, key, ca) = (
        layout.resolve(&config.certificate),
        layout.resolve(&config.private_key),
        layout.resolve(&config.client_ca),
    );
    let files = vec![cert.clone(), key.clone(), ca.clone(), Rotation::file(&ca)];
    Reloaded::new("the discovery API's TLS", files, move || {
        served(&cert, &key, &ca)
    })
}

fn served(cert: &Path, key: &Path, ca: &Path) -> Result<Served, String> {
    let certs = verdant_common::pem::certificates(cert).map_err(|e| e.to_string())?;
    let key = verdant_common::pem::private_key(key).map_err(|e| e.to_string())?;
    let roots = verdant_common::pem::roots(ca).map_err(|e| e.to_string())?;
    let cas = ordered_cas(cert, ca)?;
    let rotation = Rotation::load(ca).map_err(|e| e.to_string())?;
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
    server.alpn_protocols = vec![AWS_ALPN.to_vec(), b"http/1.1".to_vec()];
    Ok(Served {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        cas,
        rotation,
    })
}

/// The CAs of the file `ca` as (id, PEM), the issuer of the server
/// certificate in `cert` first.
fn ordered_cas(cert: &Path, ca: &Path) -> Result<Vec<(String, String)>, String> {
    use verdant_common::pki;
    let issuer = pki::read(cert)
        .and_then(|pem| pki::inspect_pem(&pem))
        .map_err(|e| e.to_string())?
        .first()
        .map(|c| c.issuer.clone());
    let mut cas: Vec<(String, String, String)> = Vec::new();
    for text in pki::pem_texts(&pki::read(ca).map_err(|e| e.to_string())?) {
        let info = pki::inspect_pem(&text).map_err(|e| format!("{}: {e}", ca.display()))?;
        if let Some(c) = info.into_iter().next() {
            cas.push((c.subject, c.id, text));
        }
    }
    if let Some(at) = cas
        .iter()
        .position(|(subject, ..)| Some(subject) == issuer.as_ref())
    {
        let first = cas.remove(at);
        cas.insert(0, first);
    }
    Ok(cas.into_iter().map(|(_, id, pem)| (id, pem)).collect())
}

/// Serves the discovery API on `listener` until `shutdown`.
/// With `alpn_only`, a client must have offered ALPN `x-amzn-http-ca`
/// (AWS's port 443 way).
pub async fn serve(
    listener: TcpListener,
    alpn_only: bool,
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
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(why) = connection(tcp, peer, alpn_only, state).await {
                tracing::info!(%peer, "discovery: {why}");
            }
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    alpn_only: bool,
    state: Arc<State>,
) -> Result<(), String> {
    let served = state.tls.current();
    let tls = tokio::time::timeout(PATIENCE, served.acceptor.accept(tcp))
        .await
        .map_err(|_| "no TLS handshake in time".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    if alpn_only && tls.get_ref().1.alpn_protocol() != Some(AWS_ALPN) {
        return Err("no ALPN x-amzn-http-ca offered on the ALPN listener".into());
    }
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| verdant_group::certificate_id(c.as_ref()))
        .ok_or("no client certificate")?;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let (state, presented, served) = (state.clone(), presented.clone(), served.clone());
        async move {
            let response = respond(&request, &presented, &state, &served.cas_now(now())).await;
            state.log(Logged {
                at: now(),
                peer: peer.to_string(),
                path: verdant_common::telemetry::bounded(request.uri().path()).to_string(),
                certificate_id: presented,
                status: response.status().as_u16(),
            });
            Ok::<_, Infallible>(response)
        }
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
    cas: &[String],
) -> Response<Full<Bytes>> {
    let answer = if request.method() == hyper::Method::GET {
        match Group::load(&state.layout.current_group()) {
            Ok(group) => {
                // Until the broker has told its port (it may start after
                // this daemon), ask it now rather than guess.
                if !state.connectivity.port_known() {
                    state.connectivity.refresh().await;
                }
                let (connectivity, _) = state.connectivity.entries();
                state.revoked.check();
                discover::answer(
                    request.uri().path(),
                    presented,
                    &state.revoked.current(),
                    &group,
                    &connectivity,
                    cas,
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

impl State {
    fn log(&self, request: Logged) {
        let mut kept = self.requests.lock().expect("requests lock");
        if kept.len() == KEPT_REQUESTS {
            kept.pop_front();
        }
        kept.push_back(request);
    }
}
