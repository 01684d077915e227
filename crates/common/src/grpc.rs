//! The gRPC server every daemon runs on its Unix socket: the daemon's own
//! services plus `grpc.health.v1.Health`, server reflection (v1 and v1alpha:
//! grpcurl 1.8 speaks only v1alpha) and `verdant.daemon.v1.Daemon`.
//!
//! Health starts `NOT_SERVING`; the daemon calls [`Readiness::serving`] once
//! it can really do its work, which is what `verdant-init` waits for.

use std::sync::{Arc, OnceLock};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use verdant_proto::daemon::v1::daemon_server::{Daemon, DaemonServer};
use verdant_proto::daemon::v1::{DaemonInfo, GetInfoRequest};

/// How long in-flight calls may run on after shutdown.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What a daemon says of itself over `verdant.daemon.v1.Daemon/GetInfo`.
#[derive(Debug, Clone)]
pub struct Info {
    pub service: String,
    pub version: String,
    /// Plain words on what the daemon does today.
    pub note: String,
    /// False while the daemon only serves health and reflection.
    pub functional: bool,
}

impl Info {
    /// What a daemon that does its work says: `note` in plain words, and
    /// the version the executable reports.
    pub fn functional(service: &str, note: impl Into<String>) -> Self {
        Info {
            service: service.to_string(),
            version: crate::version::version().to_string(),
            note: note.into(),
            functional: true,
        }
    }
}

/// The overall health of one daemon, as `verdant-init` and grpcurl see it.
#[derive(Debug, Clone)]
pub struct Readiness(HealthReporter);

impl Readiness {
    pub async fn serving(&self) {
        self.0.set_service_status("", ServingStatus::Serving).await;
    }
    pub async fn not_serving(&self) {
        self.0
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

/// Builder for a daemon's gRPC server.
pub struct Server {
    routes: RoutesBuilder,
    health: HealthReporter,
    /// What reflection lists: the services really served here, not every
    /// service in Verdant's descriptor set.
    names: Vec<&'static str>,
}

impl Server {
    /// A server with health (`NOT_SERVING`), reflection and daemon info.
    pub async fn new(info: Info) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let mut server = Server {
            routes: RoutesBuilder::default(),
            health,
            names: Vec::new(),
        };
        server = server
            .add_service(health_service)
            .add_service(DaemonServer::new(InfoService(info)));
        server
    }

    /// The server of a daemon that has no API of its own yet: health,
    /// reflection and daemon info saying so and what that means on the
    /// core today (`what`), said in its log too.
    pub async fn health_only(service: &str, version: &str, what: &str) -> Self {
        let note = format!("health and reflection only: {what}");
        tracing::warn!(service, "{note}");
        Server::new(Info {
            service: service.to_string(),
            version: version.to_string(),
            note,
            functional: false,
        })
        .await
    }

    /// Adds one of the daemon's own services.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// The handle that turns health to SERVING.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.health.clone())
    }

    /// The whole of a daemon's serving, once its services are added: health
    /// turns SERVING, calls are served until `shutdown` is cancelled, and
    /// `shutdown` is cancelled whatever ended the server, so the daemon's
    /// other tasks stop with it.
    pub async fn serve_ready(
        self,
        listener: UnixListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        self.readiness().serving().await;
        let result = self.serve(listener, shutdown.clone()).await;
        shutdown.cancel();
        result
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    pub async fn serve(
        mut self,
        listener: UnixListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let names = self.names.clone();
        let v1 = Lazy::new(move || {
            reflection(&names)
                .build_v1()
                .expect("built-in descriptor sets are valid")
        });
        let names = self.names.clone();
        let v1alpha = Lazy::new(move || {
            reflection(&names)
                .build_v1alpha()
                .expect("built-in descriptor sets are valid")
        });
        self.routes.add_service(v1).add_service(v1alpha);
        let readiness = self.readiness();
        let server = tonic::transport::Server::builder()
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                shutdown.clone().cancelled_owned(),
            );
        tokio::pin!(server);
        // Streams (health watches, log follows) never end by themselves, so
        // after shutdown in-flight calls get DRAIN to finish, then are cut.
        let deadline = async {
            shutdown.cancelled().await;
            readiness.not_serving().await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            result = &mut server => result,
            () = deadline => {
                tracing::warn!("calls still open {DRAIN:?} after shutdown; closing them");
                Ok(())
            }
        }
    }
}

/// Reflection over Verdant's, health's and reflection's own descriptors,
/// listing only `names` and the reflection services.
fn reflection(names: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(verdant_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    for name in names {
        builder = builder.with_service_name(*name);
    }
    builder
}

/// A service built on its first call. Reflection decodes every descriptor
/// of the core into lookup tables (about 100 KiB of heap for both versions);
/// most daemons are never asked, so they never pay.
struct Lazy<S, F> {
    service: Arc<OnceLock<S>>,
    build: F,
}

impl<S, F: Fn() -> S> Lazy<S, F> {
    fn new(build: F) -> Self {
        Lazy {
            service: Arc::new(OnceLock::new()),
            build,
        }
    }
}

impl<S, F: Clone> Clone for Lazy<S, F> {
    fn clone(&self) -> Self {
        Lazy {
            service: Arc::clone(&self.service),
            build: self.build.clone(),
        }
    }
}

impl<S: NamedService, F> NamedService for Lazy<S, F> {
    const NAME: &'static str = S::NAME;
}

impl<S, F, R> tower::Service<R> for Lazy<S, F>
where
    S: tower::Service<R> + Clone,
    F: Fn() -> S,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // tonic's generated servers are always ready, so the one `call`
        // builds needs no readiness of its own.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let mut service = self.service.get_or_init(&self.build).clone();
        service.call(request)
    }
}

struct InfoService(Info);

#[tonic::async_trait]
impl Daemon for InfoService {
    async fn get_info(
        &self,
        _request: tonic::Request<GetInfoRequest>,
    ) -> Result<tonic::Response<DaemonInfo>, tonic::Status> {
        Ok(tonic::Response::new(DaemonInfo {
            service: self.0.service.clone(),
            version: self.0.version.clone(),
            pid: std::process::id(),
            note: self.0.note.clone(),
            functional: self.0.functional,
            capabilities: crate::privileges::effective(),
        }))
    }
}
