//! `verdant.broker.v1.Broker`: decodes, asks the hub, converts.

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use verdant_proto::broker::v1 as pb;
use verdant_proto::broker::v1::broker_server::Broker;

use crate::request;

pub struct Api {
    pub hub: mpsc::Sender<request::Request>,
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// Messages the router link's full backlog dropped or refused.
    pub router_counters: std::sync::Arc<crate::link::LinkCounters>,
    /// Devices' certificates held on the core, for `CheckGroup`.
    pub devices_dir: std::path::PathBuf,
    /// The group CA's verifier (when a TLS listener is on).
    pub tls: Option<crate::identity::Tls>,
}

fn stopping<T>(_: T) -> Status {
    Status::unavailable("the broker is stopping")
}

#[tonic::async_trait]
impl Broker for Api {
    async fn list_listeners(
        &self,
        _request: Request<pb::ListListenersRequest>,
    ) -> Result<Response<pb::ListListenersResponse>, Status> {
        Ok(Response::new(pb::ListListenersResponse {
            listeners: self
                .listeners
                .iter()
                .map(|(name, addr)| pb::Listener {
                    name: (*name).to_string(),
                    address: addr.to_string(),
                })
                .collect(),
        }))
    }

    async fn check_group(
        &self,
        request: Request<pb::CheckGroupRequest>,
    ) -> Result<Response<pb::CheckGroupResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let json = request.into_inner().group_json;
        let problems = crate::check::check_group(&json, &self.devices_dir, self.tls.as_ref());
        Ok(Response::new(pb::CheckGroupResponse {
            problems: problems
                .into_iter()
                .map(|(path, message)| pb::Problem { path, message })
                .collect(),
        }))
    }

    async fn list_clients(
        &self,
        _request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let (tx, rx) = oneshot::channel();
        self.hub
            .send(request::Request::Clients(tx))
            .await
            .map_err(stopping)?;
        let (clients, counters) = rx.await.map_err(stopping)?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients
                .into_iter()
                .map(|c| pb::Client {
                    client_id: c.info.client_id,
                    thing_name: c.info.thing_name.unwrap_or_default(),
                    certificate_subject: c.info.certificate_subject.unwrap_or_default(),
                    peer_address: c.info.peer_address,
                    listener: c.info.listener.to_string(),
                    protocol_version: u32::from(c.info.protocol_version),
                    clean_session: c.info.clean_session,
                    connected_at: Some(c.info.connected_at.into()),
                    connected: c.connected,
                    subscriptions: c
                        .subscriptions
                        .into_iter()
                        .map(|(filter, qos)| pb::Subscription {
                            filter,
                            qos: qos as u32,
                        })
                        .collect(),
                    queued: c.queued as u32,
                })
                .collect(),
            counters: Some(pb::Counters {
                published: counters.published,
                delivered: counters.delivered,
                dropped_qos0: counters.dropped_qos0,
                dropped_queue_full: counters.dropped_queue_full,
                no_route: counters.no_route,
                dropped_router_backlog: self
                    .router_counters
                    .backlog_full
                    .load(std::sync::atomic::Ordering::Relaxed),
                refused_by_router: self
                    .router_counters
                    .refused
                    .load(std::sync::atomic::Ordering::Relaxed),
            }),
        }))
    }

    async fn disconnect_client(
        &self,
        request: Request<pb::DisconnectClientRequest>,
    ) -> Result<Response<pb::DisconnectClientResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        let client_id = request.into_inner().client_id;
        let (tx, rx) = oneshot::channel();
        self.hub
            .send(request::Request::Kick {
                client_id,
                reply: tx,
            })
            .await
            .map_err(stopping)?;
        Ok(Response::new(pb::DisconnectClientResponse {
            disconnected: rx.await.map_err(stopping)?,
        }))
    }
}
