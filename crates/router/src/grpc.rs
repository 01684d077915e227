//! `verdant.router.v1.Router`: the links daemons open, and the operators'
//! calls. Handlers decode, hand events to the switch, and encode.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt, wrappers::UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_server::Router;

use crate::switch::{Down, Endpoint, Event, LinkId, Message, TraceRecord};

pub struct Api {
    pub switch: mpsc::Sender<Event>,
    pub cloud: crate::cloud::SharedStatus,
    pub trace: crate::switch::TraceSender,
    /// The deployed group, read again by `ReloadTable`.
    pub group_file: std::path::PathBuf,
    /// Credit granted to a linked daemon for its messages up.
    pub credit: u32,
    pub generation: AtomicU64,
}

fn stopping<T>(_: T) -> Status {
    Status::unavailable("the router is stopping")
}

pub fn message_from_pb(m: pb::Message) -> Message {
    Message {
        id: m.id,
        source: m.source,
        topic: m.topic,
        payload: m.payload,
        qos: u8::from(m.qos > 0),
        retain: m.retain,
        targets: m.targets,
        table_version: m.table_version,
        all_or_error: m.all_or_error,
    }
}

pub fn message_to_pb(m: Message) -> pb::Message {
    pb::Message {
        id: m.id,
        source: m.source,
        topic: m.topic,
        payload: m.payload,
        qos: u32::from(m.qos),
        retain: m.retain,
        targets: m.targets,
        table_version: m.table_version,
        all_or_error: m.all_or_error,
    }
}

fn down_to_pb(d: Down) -> pb::LinkDown {
    use pb::link_down::Kind;
    let kind = match d {
        Down::Table(t) => Kind::Table(pb::Table {
            version: t.version(),
            routes: t
                .routes()
                .iter()
                .map(|r| pb::Route {
                    id: r.id.clone(),
                    source: r.source.clone(),
                    subject: r.subject.clone(),
                    target: r.target.clone(),
                })
                .collect(),
            synced_things: t.synced().to_vec(),
        }),
        Down::Cloud(connected) => Kind::Cloud(pb::CloudState { connected }),
        Down::Messages(m) => Kind::Messages(pb::Messages {
            messages: m.into_iter().map(message_to_pb).collect(),
        }),
        Down::Acks { ids, refused } => Kind::Acks(pb::Acks { ids, refused }),
        Down::Credit(n) => Kind::Credit(pb::Credit { messages: n }),
        Down::Tracing(on) => Kind::Tracing(pb::Tracing { on }),
    };
    pb::LinkDown { kind: Some(kind) }
}

type DownStream = Pin<Box<dyn Stream<Item = Result<pb::LinkDown, Status>> + Send>>;
type TraceStream = Pin<Box<dyn Stream<Item = Result<pb::TraceEvent, Status>> + Send>>;

pub fn trace_to_pb(r: &TraceRecord) -> pb::TraceEvent {
    pb::TraceEvent {
        time: Some(r.time.into()),
        source: r.source.clone(),
        topic: r.topic.clone(),
        targets: r.targets.clone(),
        size: u32::try_from(r.size).unwrap_or(u32::MAX),
        preview: r.preview.clone(),
        qos: u32::from(r.qos),
        outcome: r.outcome.clone(),
        by: r.by.clone(),
    }
}

fn trace_from_pb(e: pb::TraceEvent) -> TraceRecord {
    TraceRecord {
        time: e
            .time
            .and_then(|t| std::time::SystemTime::try_from(t).ok())
            .unwrap_or_else(std::time::SystemTime::now),
        source: e.source,
        topic: e.topic,
        targets: e.targets,
        size: e.size as usize,
        preview: e.preview,
        qos: u8::from(e.qos > 0),
        outcome: e.outcome,
        by: e.by,
    }
}

/// Whether a trace request wants `r`: its source by exact name, or by
/// thing name for a thing ARN; its topic by MQTT filter.
fn wanted(req: &pb::TraceRequest, r: &TraceRecord) -> bool {
    let source_ok = req.source.is_empty()
        || r.source == req.source
        || r.source
            .rsplit_once("thing/")
            .is_some_and(|(_, n)| n == req.source);
    let topic_ok = req.topic_filter.is_empty()
        || verdant_group::routes::subject_matches(&req.topic_filter, &r.topic);
    source_ok && topic_ok
}

/// Tells the switch when a tracer hangs up, so the broker stops tracing.
struct TracerGone(mpsc::Sender<Event>);

impl Drop for TracerGone {
    fn drop(&mut self) {
        let tx = self.0.clone();
        tokio::spawn(async move {
            // After the receiver is gone, so the count has dropped.
            tokio::task::yield_now().await;
            let _ = tx.send(Event::TracersChanged).await;
        });
    }
}

#[tonic::async_trait]
impl Router for Api {
    type LinkStream = DownStream;

    async fn link(
        &self,
        request: Request<Streaming<pb::LinkUp>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        // Only the core's own daemons carry messages.
        verdant_common::uds::require_owner(&request)?;
        let mut up = request.into_inner();
        let Some(pb::LinkUp {
            kind: Some(pb::link_up::Kind::Hello(hello)),
        }) = up.message().await?
        else {
            return Err(Status::invalid_argument("a link starts with a Hello"));
        };
        let endpoint = Endpoint::from_hello(&hello.endpoint).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown endpoint `{}`: expected broker, shadow, lambda-runner, ota-agent or discovery",
                hello.endpoint
            ))
        })?;
        let link = LinkId {
            endpoint,
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        };
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let _ = down_tx.send(Down::Credit(self.credit));
        self.switch
            .send(Event::Linked {
                link,
                down: down_tx.clone(),
                credit: hello.credit,
            })
            .await
            .map_err(stopping)?;
        tokio::spawn(read_up(link, up, self.switch.clone(), down_tx));
        let stream = UnboundedReceiverStream::new(down_rx).map(|d| Ok(down_to_pb(d)));
        Ok(Response::new(Box::pin(stream)))
    }

    type TraceStream = TraceStream;

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        let req = request.into_inner();
        if !req.topic_filter.is_empty()
            && let Some(why) = verdant_group::topic_filter_problem(&req.topic_filter)
        {
            return Err(Status::invalid_argument(format!(
                "topic_filter `{}`: {why}",
                req.topic_filter
            )));
        }
        let mut rx = self.trace.subscribe();
        self.switch
            .send(Event::TracersChanged)
            .await
            .map_err(stopping)?;
        let gone = TracerGone(self.switch.clone());
        let stream = async_stream(
            move |tx: mpsc::Sender<Result<pb::TraceEvent, Status>>| async move {
                let _gone = gone;
                loop {
                    match rx.recv().await {
                        Ok(r) => {
                            if wanted(&req, &r) && tx.send(Ok(trace_to_pb(&r))).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(skipped = n, "a tracer fell behind");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            },
        );
        Ok(Response::new(stream))
    }

    async fn reload_table(
        &self,
        request: Request<pb::ReloadTableRequest>,
    ) -> Result<Response<pb::ReloadTableResponse>, Status> {
        verdant_common::uds::require_owner(&request)?;
        // The link read once: the id said and the group read are one deployment's.
        let deployment_id = verdant_common::paths::deployment_of(&self.group_file);
        let file = match (
            &deployment_id,
            self.group_file.parent().and_then(|c| c.parent()),
        ) {
            (Some(id), Some(deployments)) => deployments.join(id).join("group.json"),
            _ => self.group_file.clone(),
        };
        let group = verdant_group::Group::load(&file)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let table = verdant_group::routes::Table::from_group(crate::table_version(), &group);
        let response = pb::ReloadTableResponse {
            group_id: group.id.clone(),
            version: table.version(),
            routes: u32::try_from(table.routes().len()).unwrap_or(u32::MAX),
            deployment_id: deployment_id.unwrap_or_default(),
        };
        self.switch
            .send(Event::Swap(table))
            .await
            .map_err(stopping)?;
        Ok(Response::new(response))
    }

    async fn get_cloud(
        &self,
        _request: Request<pb::GetCloudRequest>,
    ) -> Result<Response<pb::GetCloudResponse>, Status> {
        Ok(Response::new(self.cloud_status()))
    }

    async fn list_routes(
        &self,
        _request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let (tx, rx) = oneshot::channel();
        self.switch
            .send(Event::Routes(tx))
            .await
            .map_err(stopping)?;
        let view = rx.await.map_err(stopping)?;
        Ok(Response::new(pb::ListRoutesResponse {
            version: view.version,
            routes: view
                .routes
                .into_iter()
                .map(|(r, messages, bytes)| pb::RouteCounters {
                    route: Some(pb::Route {
                        id: r.id,
                        source: r.source,
                        subject: r.subject,
                        target: r.target,
                    }),
                    messages,
                    bytes,
                })
                .collect(),
            no_route: view
                .no_route
                .into_iter()
                .map(|(source, messages)| pb::Dropped { source, messages })
                .collect(),
            links: view.links.into_iter().map(String::from).collect(),
            overflow: view
                .overflow
                .into_iter()
                .map(|(endpoint, messages)| pb::Overflow {
                    endpoint: endpoint.into(),
                    messages,
                })
                .collect(),
            undelivered: view
                .undelivered
                .into_iter()
                .map(|u| pb::Undelivered {
                    endpoint: u.endpoint.into(),
                    targets: u.targets,
                    reason: u.reason.into(),
                    messages: u.messages,
                })
                .collect(),
        }))
    }
}

impl Api {
    fn cloud_status(&self) -> pb::GetCloudResponse {
        let s = self.cloud.lock().expect("status lock").clone();
        pb::GetCloudResponse {
            state: s.state.into(),
            endpoint: s.endpoint,
            last_error: s.last_error,
            connected_since: s.connected_since.map(Into::into),
            queued_messages: s.queue.messages as u64,
            queued_bytes: s.queue.bytes as u64,
            dropped_oldest: s.queue.dropped_oldest,
            refused: s.queue.refused,
            sent: s.sent,
            received: s.received,
            subscriptions: u32::try_from(s.subscriptions).unwrap_or(u32::MAX),
        }
    }
}

/// Reads a link's messages up until it ends, returning credit for each
/// batch once the switch has taken it.
async fn read_up(
    link: LinkId,
    mut up: Streaming<pb::LinkUp>,
    switch: mpsc::Sender<Event>,
    down: mpsc::UnboundedSender<Down>,
) {
    use pb::link_up::Kind;
    loop {
        let item = match up.message().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(endpoint = link.endpoint.name(), "link read failed: {e}");
                break;
            }
        };
        let event = match item.kind {
            Some(Kind::Messages(m)) => {
                let n = u32::try_from(m.messages.len()).unwrap_or(u32::MAX);
                let messages = m.messages.into_iter().map(message_from_pb).collect();
                if switch.send(Event::Up(link, messages)).await.is_err() {
                    break;
                }
                let _ = down.send(Down::Credit(n));
                continue;
            }
            Some(Kind::Acks(a)) => Event::Acks {
                link,
                ids: a.ids,
                refused: a.refused,
            },
            Some(Kind::Credit(c)) => Event::Credit(link, c.messages),
            Some(Kind::Delivered(d)) => Event::Delivered {
                routes: d
                    .routes
                    .into_iter()
                    .map(|r| (r.id, r.messages, r.bytes))
                    .collect(),
                no_route: d
                    .no_route
                    .into_iter()
                    .map(|n| (n.source, n.messages))
                    .collect(),
            },
            Some(Kind::Traces(t)) => {
                Event::Traces(t.events.into_iter().map(trace_from_pb).collect())
            }
            Some(Kind::Hello(_)) | None => {
                tracing::warn!(
                    endpoint = link.endpoint.name(),
                    "unexpected message on a link"
                );
                continue;
            }
        };
        if switch.send(event).await.is_err() {
            break;
        }
    }
    let _ = switch.send(Event::Unlinked(link)).await;
}

/// A stream fed by a task running `f`, which ends when the caller hangs up
/// (its sends fail) or `f` returns.
fn async_stream<F, Fut, T>(f: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
