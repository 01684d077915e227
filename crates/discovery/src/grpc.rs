//! What verdant-discovery serves on its socket: the operators'
//! `verdant.discovery.v1.Discovery` API (connectivity, certificates,
//! recent requests), health, reflection and daemon info, whose note says
//! where the discovery API listens. Changing anything needs the core's
//! user or root.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use verdant_common::grpc::{Info, Server};
use verdant_common::pki::{self, CertInfo};
use verdant_common::uds::require_owner;
use verdant_group::Group;
use verdant_proto::discovery::v1 as pb;
use verdant_proto::discovery::v1::discovery_server::{Discovery, DiscoveryServer};

use crate::SERVICE;
use crate::certs::Why;
use crate::connectivity::Set;
use crate::http::State;

/// The server, its health still `NOT_SERVING`.
pub(crate) async fn server(
    address: std::net::SocketAddr,
    alpn: Option<std::net::SocketAddr>,
    api: Api,
) -> Server {
    let also = alpn.map_or_else(String::new, |a| {
        format!(", and on {a} for ALPN x-amzn-http-ca")
    });
    let note = format!("HTTPS discovery API on {address} (mutual TLS, the group CA){also}");
    Server::new(Info::functional(SERVICE, note))
        .await
        .add_service(DiscoveryServer::new(api))
}

/// The operators' API over the daemon's state.
pub(crate) struct Api {
    pub state: Arc<State>,
    pub keeper: Arc<crate::certs::Keeper>,
    /// Wakes the keeper (connectivity set: a new certificate may be due).
    pub wake: Arc<tokio::sync::Notify>,
}

fn connectivity(state: &State) -> pb::Connectivity {
    let (entries, source) = state.connectivity.entries();
    pb::Connectivity {
        entries: entries
            .into_iter()
            .map(|e| pb::ConnectivityEntry {
                id: e.id,
                host_address: e.host_address,
                port_number: e.port_number.into(),
                metadata: e.metadata,
                port_from_broker: e.port_from_broker,
            })
            .collect(),
        source: source.as_str().into(),
    }
}

fn certificate(role: &str, thing: &str, c: CertInfo) -> pb::Certificate {
    pb::Certificate {
        role: role.into(),
        thing_name: thing.into(),
        subject: c.subject,
        issuer: c.issuer,
        serial: c.serial,
        id: c.id,
        not_before: c.not_before,
        not_after: c.not_after,
        names: c.names,
        problem: String::new(),
    }
}

fn problem(role: &str, thing: &str, why: String) -> pb::Certificate {
    pb::Certificate {
        role: role.into(),
        thing_name: thing.into(),
        problem: why,
        ..pb::Certificate::default()
    }
}

#[tonic::async_trait]
impl Discovery for Api {
    async fn get_connectivity(
        &self,
        _: Request<pb::GetConnectivityRequest>,
    ) -> Result<Response<pb::Connectivity>, Status> {
        Ok(Response::new(connectivity(&self.state)))
    }

    async fn set_connectivity(
        &self,
        request: Request<pb::SetConnectivityRequest>,
    ) -> Result<Response<pb::Connectivity>, Status> {
        require_owner(&request)?;
        let mut entries = Vec::new();
        for (i, e) in request.into_inner().entries.into_iter().enumerate() {
            let port_number = match e.port_number {
                0 => None,
                p => Some(u16::try_from(p).map_err(|_| {
                    Status::invalid_argument(format!(
                        "connectivity entry {i}: port {p} is not 1 to 65535"
                    ))
                })?),
            };
            entries.push(Set {
                id: e.id,
                host_address: e.host_address,
                port_number,
                metadata: e.metadata,
            });
        }
        self.state.connectivity.set(entries).map_err(|e| match e {
            crate::connectivity::SetError::Write { .. } => Status::internal(e.to_string()),
            e => Status::invalid_argument(e.to_string()),
        })?;
        self.state.connectivity.refresh().await;
        let now = connectivity(&self.state);
        tracing::info!(
            source = now.source,
            "connectivity set by an operator: {}",
            now.entries
                .iter()
                .map(|e| format!("{}:{}", e.host_address, e.port_number))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.wake.notify_one();
        Ok(Response::new(now))
    }

    async fn list_certificates(
        &self,
        _: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let mut out = Vec::new();
        match self.keeper.current() {
            Ok(c) => out.push(certificate("server", "", c)),
            Err(e) => out.push(problem("server", "", e.to_string())),
        }
        match pki::read(&self.keeper.ca_cert).and_then(|pem| pki::inspect_pem(&pem)) {
            Ok(cas) => out.extend(cas.into_iter().map(|c| certificate("group-ca", "", c))),
            Err(e) => out.push(problem("group-ca", "", e.to_string())),
        }
        let group = Group::load(&self.state.layout.current_group())
            .map_err(|e| Status::internal(e.to_string()))?;
        let devices = self.state.layout.certs_dir().join("devices");
        for d in &group.device_definition_version.devices {
            let thing = d.thing_name();
            let file = devices.join(format!("{thing}.pem"));
            let found = pki::read(&file)
                .and_then(|pem| pki::inspect_pem(&pem))
                .ok()
                .and_then(|c| c.into_iter().next())
                .filter(|c| c.id == d.certificate_id());
            out.push(match found {
                Some(c) => certificate("device", thing, c),
                None => pb::Certificate {
                    id: d.certificate_id().into(),
                    ..problem(
                        "device",
                        thing,
                        "its certificate is not on the core (only its id is known)".into(),
                    )
                },
            });
        }
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: out,
            server_certificate_days: if self.keeper.issues() {
                self.keeper.days
            } else {
                0
            },
        }))
    }

    async fn rotate_server_certificate(
        &self,
        request: Request<pb::RotateServerCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        require_owner(&request)?;
        if !self.keeper.issues() {
            return Err(Status::failed_precondition(format!(
                "the group CA's key is not on this core ({}): the server certificate is the \
                 operator's to renew",
                self.keeper.ca_key.display()
            )));
        }
        let names = crate::names(&self.state);
        let cn = crate::core_name(&self.state.layout);
        let keeper = self.keeper.clone();
        let info = tokio::task::spawn_blocking(move || keeper.issue(&cn, &names, &Why::Asked))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(certificate("server", "", info)))
    }

    async fn list_requests(
        &self,
        _: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let requests = self
            .state
            .requests
            .lock()
            .expect("requests lock")
            .iter()
            .rev()
            .map(|r| pb::DiscoveryRequest {
                at: r.at,
                peer: r.peer.clone(),
                path: r.path.clone(),
                certificate_id: r.certificate_id.clone(),
                status: r.status.into(),
            })
            .collect();
        Ok(Response::new(pb::ListRequestsResponse { requests }))
    }
}
