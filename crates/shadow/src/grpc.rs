//! `verdant.shadow.v1.Shadow`: each call becomes a request on the shadow
//! topics, answered by the same code as MQTT requests; replies other than
//! the caller's (delta, documents) are published through the router.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use verdant_proto::shadow::v1 as pb;
use verdant_proto::shadow::v1::shadow_server::Shadow;

use crate::service::{Command, parse_topic};
use crate::store::Op;
use verdant_link::ToRouter;

pub struct Api {
    pub commands: mpsc::Sender<Command>,
    /// Replies to publish through the router.
    pub publish: mpsc::UnboundedSender<ToRouter>,
    pub changes: tokio::sync::broadcast::Sender<std::sync::Arc<Op>>,
}

type Changes =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ShadowChange, Status>> + Send>>;

fn stopping<T>(_: T) -> Status {
    Status::unavailable("the shadow service is stopping")
}

/// The request topic of `op` on a thing's classic or named shadow.
fn topic(thing: &str, shadow: &str, op: &str) -> Result<String, Status> {
    let bad = |what: &str| {
        Status::invalid_argument(format!(
            "{what} must be non-empty and contain no `/`, `+` or `#`"
        ))
    };
    let ok = |s: &str| !s.contains(['/', '+', '#']);
    if thing.is_empty() || !ok(thing) {
        return Err(bad("thing_name"));
    }
    if !ok(shadow) {
        return Err(bad("shadow_name"));
    }
    Ok(if shadow.is_empty() {
        format!("$aws/things/{thing}/shadow/{op}")
    } else {
        format!("$aws/things/{thing}/shadow/name/{shadow}/{op}")
    })
}

impl Api {
    /// Answers one request: the caller's reply (accepted or rejected body)
    /// and whether it is a rejection; the rest is published.
    async fn call(&self, topic: String, payload: Bytes) -> Result<(Bytes, bool), Status> {
        if parse_topic(&topic).is_none() {
            return Err(Status::invalid_argument(format!(
                "`{topic}` is not a shadow request topic"
            )));
        }
        let (respond, replies) = oneshot::channel();
        self.commands
            .send(Command::Requests {
                batch: vec![(topic, payload, false)],
                respond,
            })
            .await
            .map_err(stopping)?;
        let replies = replies.await.map_err(stopping)?;
        let mut mine = None;
        for (t, body) in replies.into_iter().flatten() {
            if t.ends_with("/accepted") || t.ends_with("/rejected") {
                let rejected = t.ends_with("/rejected");
                mine = Some((body.clone(), rejected));
                // Devices subscribed to /accepted see a function's changes
                // too; a rejection concerns the caller only.
                if rejected {
                    continue;
                }
            }
            let _ = self.publish.send(crate::link::outgoing((t, body)));
        }
        mine.ok_or_else(|| Status::internal("the shadow service gave no answer"))
    }

    /// For operators: a rejection becomes an error "<code> <message>".
    async fn operator_call(
        &self,
        topic: String,
        payload: Bytes,
    ) -> Result<Response<pb::ShadowReply>, Status> {
        let (body, rejected) = self.call(topic, payload).await?;
        if !rejected {
            return Ok(Response::new(pb::ShadowReply {
                payload: body.to_vec(),
            }));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = v["code"].as_u64().unwrap_or(500);
        let message = format!("{code} {}", v["message"].as_str().unwrap_or(""));
        Err(match code {
            404 => Status::not_found(message),
            409 => Status::aborted(message),
            400 | 413 => Status::invalid_argument(message),
            _ => Status::internal(message),
        })
    }
}

#[tonic::async_trait]
impl Shadow for Api {
    async fn get_shadow(
        &self,
        request: Request<pb::GetShadowRequest>,
    ) -> Result<Response<pb::ShadowReply>, Status> {
        let r = request.into_inner();
        let topic = topic(&r.thing_name, &r.shadow_name, "get")?;
        self.operator_call(topic, Bytes::new()).await
    }

    async fn update_shadow(
        &self,
        request: Request<pb::UpdateShadowRequest>,
    ) -> Result<Response<pb::ShadowReply>, Status> {
        let r = request.into_inner();
        let topic = topic(&r.thing_name, &r.shadow_name, "update")?;
        self.operator_call(topic, Bytes::from(r.payload)).await
    }

    async fn delete_shadow(
        &self,
        request: Request<pb::DeleteShadowRequest>,
    ) -> Result<Response<pb::ShadowReply>, Status> {
        let r = request.into_inner();
        let topic = topic(&r.thing_name, &r.shadow_name, "delete")?;
        self.operator_call(topic, Bytes::new()).await
    }

    async fn list_named_shadows(
        &self,
        request: Request<pb::ListNamedShadowsRequest>,
    ) -> Result<Response<pb::ListNamedShadowsResponse>, Status> {
        let (respond, names) = oneshot::channel();
        self.commands
            .send(Command::Names {
                thing: request.into_inner().thing_name,
                respond,
            })
            .await
            .map_err(stopping)?;
        Ok(Response::new(pb::ListNamedShadowsResponse {
            shadow_names: names.await.map_err(stopping)?,
        }))
    }

    async fn get_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::SyncState>, Status> {
        let r = request.into_inner();
        let (respond, state) = oneshot::channel();
        self.commands
            .send(Command::SyncState {
                key: (r.thing_name, r.shadow_name),
                respond,
            })
            .await
            .map_err(stopping)?;
        Ok(Response::new(state.await.map_err(stopping)?))
    }

    type WatchShadowsStream = Changes;

    async fn watch_shadows(
        &self,
        request: Request<pb::WatchShadowsRequest>,
    ) -> Result<Response<Self::WatchShadowsStream>, Status> {
        use tokio_stream::StreamExt;
        let thing = request.into_inner().thing_name;
        let stream = tokio_stream::wrappers::BroadcastStream::new(self.changes.subscribe())
            .filter_map(move |op| {
                // A watcher far behind skips what it missed.
                let change = match &*op.ok()? {
                    Op::Put((t, n), s) => pb::ShadowChange {
                        thing_name: t.clone(),
                        shadow_name: n.clone(),
                        document: s.to_json().to_string().into_bytes(),
                        deleted: false,
                    },
                    Op::Delete((t, n)) => pb::ShadowChange {
                        thing_name: t.clone(),
                        shadow_name: n.clone(),
                        document: Vec::new(),
                        deleted: true,
                    },
                };
                (thing.is_empty() || change.thing_name == thing).then_some(Ok(change))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn call(
        &self,
        request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        // Functions run as other users; only the core's own daemons (the
        // lambda-runner) may speak for them.
        verdant_common::uds::require_owner(&request)?;
        let r = request.into_inner();
        let (body, rejected) = Api::call(self, r.topic, Bytes::from(r.payload)).await?;
        Ok(Response::new(pb::CallResponse {
            payload: body.to_vec(),
            rejected,
        }))
    }
}
