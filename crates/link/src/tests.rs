//! The client against a fake router: a tonic `Router` server on a Unix
//! socket in a temp dir whose links the test drives by hand.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::{UnboundedReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_server::{Router, RouterServer};

use super::*;

/// Long enough for any machine; only a broken client waits this long.
const PATIENCE: Duration = Duration::from_secs(30);

/// One link the fake router accepted: what the client sends up, and the
/// way down (dropping it, and `up`, breaks the link).
struct Linked {
    up: Streaming<pb::LinkUp>,
    down: mpsc::UnboundedSender<Result<pb::LinkDown, Status>>,
}

impl Linked {
    async fn next(&mut self) -> pb::link_up::Kind {
        let up = tokio::time::timeout(PATIENCE, self.up.message())
            .await
            .expect("the client sent nothing")
            .expect("the stream failed")
            .expect("the client closed the link");
        up.kind.expect("a kind")
    }

    fn send(&self, kind: pb::link_down::Kind) {
        self.down
            .send(Ok(pb::LinkDown { kind: Some(kind) }))
            .expect("the link is open");
    }

    fn credit(&self, messages: u32) {
        self.send(pb::link_down::Kind::Credit(pb::Credit { messages }));
    }

    fn acks(&self, ids: Vec<u64>, refused: Vec<u64>) {
        self.send(pb::link_down::Kind::Acks(pb::Acks { ids, refused }));
    }

    /// The next `n` messages up, whatever their batches.
    async fn messages(&mut self, n: usize) -> Vec<pb::Message> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next().await {
                pb::link_up::Kind::Messages(m) => out.extend(m.messages),
                other => panic!("expected messages, got {other:?}"),
            }
        }
        assert_eq!(out.len(), n, "more messages than expected");
        out
    }
}

/// Hands each link to the test.
struct FakeRouter(mpsc::UnboundedSender<Linked>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Router for FakeRouter {
    type LinkStream = UnboundedReceiverStream<Result<pb::LinkDown, Status>>;
    type TraceStream = BoxStream<pb::TraceEvent>;

    async fn link(
        &self,
        request: Request<Streaming<pb::LinkUp>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let (down, rx) = mpsc::unbounded_channel();
        let _ = self.0.send(Linked {
            up: request.into_inner(),
            down,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list_routes(
        &self,
        _: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_cloud(
        &self,
        _: Request<pb::GetCloudRequest>,
    ) -> Result<Response<pb::GetCloudResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn trace(
        &self,
        _: Request<pb::TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn reload_table(
        &self,
        _: Request<pb::ReloadTableRequest>,
    ) -> Result<Response<pb::ReloadTableResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves a fake router on `socket`; its links come out of the receiver.
fn router(socket: &Path) -> mpsc::UnboundedReceiver<Linked> {
    let listener = verdant_common::uds::bind(socket).expect("bind");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RouterServer::new(FakeRouter(tx)))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    rx
}

async fn accept(links: &mut mpsc::UnboundedReceiver<Linked>) -> Linked {
    let mut link = tokio::time::timeout(PATIENCE, links.recv())
        .await
        .expect("the client did not link")
        .expect("the router stopped");
    match link.next().await {
        pb::link_up::Kind::Hello(h) => {
            assert_eq!((h.endpoint.as_str(), h.credit), ("test", 8));
        }
        other => panic!("expected a Hello, got {other:?}"),
    }
    link
}

/// Records what reaches it; answers a batch with one reply, acknowledges
/// its QoS 1 messages and grants as much credit again.
struct Recorder(mpsc::UnboundedSender<pb::link_down::Kind>);

impl Handler for Recorder {
    async fn down(&mut self, kind: pb::link_down::Kind, up: &Up<'_>) -> Result<(), String> {
        if let pb::link_down::Kind::Messages(batch) = &kind {
            let acks = batch.messages.iter().filter(|m| m.qos > 0).map(|m| m.id);
            let acks = acks.collect();
            up.reply(vec![message("reply", 0)]);
            up.done(acks, batch.messages.len() as u32);
        }
        let _ = self.0.send(kind);
        Ok(())
    }
}

fn message(topic: &str, qos: u32) -> pb::Message {
    pb::Message {
        topic: topic.into(),
        qos,
        ..pb::Message::default()
    }
}

/// A [`Link`] to the fake router, run by its own task until [`Client::stop`].
struct Client {
    published: mpsc::UnboundedSender<ToRouter>,
    handled: mpsc::UnboundedReceiver<pb::link_down::Kind>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(socket: PathBuf) -> Client {
        let (published, mut rx) = mpsc::unbounded_channel();
        let (handled_tx, handled) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let link = Link {
                socket: &socket,
                endpoint: "test",
                credit: 8,
                max_waiting: 100,
            };
            link.run(&mut Recorder(handled_tx), &mut rx, stop).await;
        });
        Client {
            published,
            handled,
            shutdown,
            task,
        }
    }

    /// Publishes a message; its outcome if QoS 1.
    fn publish(&self, topic: &str, qos: u32) -> Option<oneshot::Receiver<bool>> {
        let (tx, rx) = oneshot::channel();
        let (outcome, rx) = if qos > 0 {
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.published
            .send(ToRouter {
                message: message(topic, qos),
                outcome,
            })
            .expect("the link runs");
        rx
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the link did not stop")
            .expect("the link task panicked");
    }
}

async fn outcome(rx: Option<oneshot::Receiver<bool>>) -> bool {
    tokio::time::timeout(PATIENCE, rx.expect("QoS 1"))
        .await
        .expect("no outcome")
        .expect("the outcome was dropped")
}

#[tokio::test]
async fn a_broken_link_sends_unacknowledged_messages_again_first() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("router.sock");
    let mut links = router(&socket);
    let client = Client::start(socket);

    let mut first = accept(&mut links).await;
    let a = client.publish("a", 1);
    let b = client.publish("b", 1);
    first.credit(10);
    let sent = first.messages(2).await;
    let topics: Vec<_> = sent.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["a", "b"]);
    // Only b is acknowledged before the link breaks.
    first.acks(vec![sent[1].id], Vec::new());
    assert!(outcome(b).await);
    drop(first);

    let mut second = accept(&mut links).await;
    client.publish("c", 0);
    second.credit(10);
    let again = second.messages(2).await;
    let topics: Vec<_> = again.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["a", "c"], "the unacknowledged one goes first");
    assert_eq!(again[0].id, sent[0].id, "with the same id");
    second.acks(vec![again[0].id], Vec::new());
    assert!(outcome(a).await);
    client.stop().await;
}

#[tokio::test]
async fn a_refusal_reaches_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("router.sock");
    let mut links = router(&socket);
    let client = Client::start(socket);

    let mut link = accept(&mut links).await;
    link.credit(1);
    let refused = client.publish("refused", 1);
    let sent = link.messages(1).await;
    link.acks(Vec::new(), vec![sent[0].id]);
    assert!(!outcome(refused).await);
    client.stop().await;
}

#[tokio::test]
async fn nothing_goes_up_beyond_the_routers_credit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("router.sock");
    let mut links = router(&socket);
    let client = Client::start(socket);

    let mut link = accept(&mut links).await;
    for topic in ["1", "2", "3"] {
        client.publish(topic, 0);
    }
    link.credit(2);
    let first = link.messages(2).await;
    assert_eq!(first[1].topic, "2");
    let more = tokio::time::timeout(Duration::from_millis(200), link.up.message()).await;
    assert!(more.is_err(), "nothing more without credit: {more:?}");
    link.credit(1);
    assert_eq!(link.messages(1).await[0].topic, "3");
    client.stop().await;
}

#[tokio::test]
async fn the_link_opens_once_the_router_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("router.sock");
    let client = Client::start(socket.clone());
    let queued = client.publish("queued", 1);
    // The client has found no router at least once before it comes.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut links = router(&socket);
    let mut link = accept(&mut links).await;
    link.credit(1);
    let sent = link.messages(1).await;
    assert_eq!(sent[0].topic, "queued");
    link.acks(vec![sent[0].id], Vec::new());
    assert!(outcome(queued).await);
    client.stop().await;
}

#[tokio::test]
async fn what_comes_down_reaches_the_handler_and_its_replies_go_up() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("router.sock");
    let mut links = router(&socket);
    let mut client = Client::start(socket);

    let mut link = accept(&mut links).await;
    link.credit(5);
    let mut request = message("request", 1);
    request.id = 7;
    link.send(pb::link_down::Kind::Messages(pb::Messages {
        messages: vec![request, message("best effort", 0)],
    }));
    let handled = tokio::time::timeout(PATIENCE, client.handled.recv()).await;
    let Ok(Some(pb::link_down::Kind::Messages(batch))) = handled else {
        panic!("the handler did not get the batch: {handled:?}");
    };
    assert_eq!(batch.messages.len(), 2);
    // The credit before the batch was the client's: the handler's first is the batch.
    let acks = link.next().await;
    assert!(matches!(acks, pb::link_up::Kind::Acks(a) if a.ids == [7] && a.refused.is_empty()));
    let credit = link.next().await;
    assert!(matches!(credit, pb::link_up::Kind::Credit(c) if c.messages == 2));
    assert_eq!(link.messages(1).await[0].topic, "reply");
    client.stop().await;
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let mut backoff = Backoff::default();
    let waits: Vec<u128> = (0..8).map(|_| backoff.wait().as_millis()).collect();
    assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
}

#[test]
fn a_full_outbox_drops_its_oldest_qos_0_message() {
    let mut outbox = Outbox::new(2);
    for (topic, qos) in [("old", 0), ("kept", 1), ("new", 0), ("qos 1", 1)] {
        outbox.push(ToRouter {
            message: message(topic, qos),
            outcome: None,
        });
    }
    let waiting: Vec<_> = outbox
        .waiting
        .iter()
        .map(|(m, _)| (m.id, m.topic.as_str()))
        .collect();
    // A QoS 1 message is never dropped here, even past the limit.
    assert_eq!(waiting, [(2, "kept"), (3, "new"), (4, "qos 1")]);
}

#[test]
fn resend_puts_the_unacknowledged_first_in_their_order() {
    let mut outbox = Outbox::new(10);
    for topic in ["1", "2", "3"] {
        outbox.push(ToRouter {
            message: message(topic, 1),
            outcome: None,
        });
    }
    // 1 and 2 went up; 3 still waits.
    let mut credit = 2;
    let sent = outbox.batch(&mut credit).expect("a batch");
    assert_eq!((sent.len(), credit, outbox.len()), (2, 0, 3));
    outbox.resend();
    let order: Vec<u64> = outbox.waiting.iter().map(|(m, _)| m.id).collect();
    assert_eq!(order, [1, 2, 3]);
    assert!(outbox.unacked.is_empty());
}

#[test]
fn acks_count_only_the_messages_held() {
    let mut outbox = Outbox::new(10);
    let (tx, rx) = oneshot::channel();
    outbox.push(ToRouter {
        message: message("1", 1),
        outcome: Some(tx),
    });
    outbox.batch(&mut 5).expect("a batch");
    assert_eq!(outbox.acked(&[1, 9], false), 1);
    assert_eq!(rx.blocking_recv(), Ok(false));
    assert_eq!(outbox.acked(&[1], true), 0, "acknowledged once");
    assert!(outbox.is_empty());
}

#[tokio::test]
async fn no_router_yet_is_an_error_to_try_again() {
    let dir = tempfile::tempdir().unwrap();
    let Err(e) = open(&dir.path().join("router.sock"), "test", 1).await else {
        panic!("linked with no router");
    };
    assert!(
        matches!(e, OpenError::Connect(UdsError::Missing { .. })),
        "{e}"
    );
}
