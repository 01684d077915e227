//! The shadow service's link with the router (`Router/Link`, endpoint
//! `shadow`): requests come down in batches, replies go up with source
//! `GGShadowService` within the router's credit, and a QoS 1 request is
//! acknowledged once its batch is durable. The link is opened again
//! whenever it breaks; replies not yet sent wait for it.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use verdant_common::shutdown::CancellationToken;
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

use bytes::Bytes;
use verdant_group::routes::{ShadowSide, shadow_topic};

use crate::service::{Command, Reply};
use crate::sync::TOKEN_PREFIX;

/// Requests the router may send before more credit is granted.
const CREDIT: u32 = 256;
/// Replies in one message up.
const BATCH: usize = 256;
/// Replies waiting for the router at most; older ones go first (a reply
/// that waits that long has a client that gave up).
const MAX_WAITING: usize = 10_000;

/// Where replies wait for the router.
struct Outbox {
    waiting: VecDeque<pb::Message>,
    next_id: u64,
}

impl Outbox {
    fn push(&mut self, (topic, payload): Reply) {
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_front();
        }
        self.waiting.push_back(pb::Message {
            id: self.next_id,
            source: "GGShadowService".into(),
            topic,
            payload,
            qos: 0,
            ..pb::Message::default()
        });
        self.next_id += 1;
    }
}

/// Keeps the link up until `shutdown`: requests go to the shadows' task
/// (`commands`), and its replies, and those of gRPC calls (`published`),
/// go up.
pub async fn run(
    socket: &Path,
    commands: mpsc::Sender<Command>,
    mut published: mpsc::UnboundedReceiver<Reply>,
    shutdown: CancellationToken,
) {
    let mut outbox = Outbox {
        waiting: VecDeque::new(),
        next_id: 1,
    };
    let mut delay = Duration::from_millis(50);
    loop {
        let why = tokio::select! {
            () = shutdown.cancelled() => return,
            why = linked(socket, &commands, &mut published, &mut outbox) => why,
        };
        tracing::warn!("router link down: {why}");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn linked(
    socket: &Path,
    commands: &mpsc::Sender<Command>,
    published: &mut mpsc::UnboundedReceiver<Reply>,
    outbox: &mut Outbox,
) -> String {
    let channel = match verdant_common::uds::connect(socket).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let (up, up_rx) = mpsc::unbounded_channel();
    let send = |kind| up.send(pb::LinkUp { kind: Some(kind) }).is_ok();
    send(pb::link_up::Kind::Hello(pb::Hello {
        endpoint: "shadow".into(),
        credit: CREDIT,
    }));
    let mut down = match RouterClient::new(channel)
        .link(UnboundedReceiverStream::new(up_rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return format!("the router refused the link: {}", e.message()),
    };
    tracing::info!("linked with the router");
    let mut credit = 0u32;
    loop {
        while credit > 0 && !outbox.waiting.is_empty() {
            let n = outbox.waiting.len().min(credit as usize).min(BATCH);
            let messages: Vec<pb::Message> = outbox.waiting.drain(..n).collect();
            credit -= n as u32;
            if !send(pb::link_up::Kind::Messages(pb::Messages { messages })) {
                return "the stream closed".into();
            }
        }
        let message = tokio::select! {
            m = down.message() => m,
            reply = published.recv() => {
                match reply {
                    Some(r) => outbox.push(r),
                    None => return "the shadow service is stopping".into(),
                }
                continue;
            }
        };
        let kind = match message {
            Ok(Some(pb::LinkDown { kind: Some(kind) })) => kind,
            Ok(Some(_)) => continue,
            Ok(None) => return "the router closed the link".into(),
            Err(e) => return format!("link failed: {}", e.message()),
        };
        let command = match kind {
            pb::link_down::Kind::Messages(batch) => {
                if let Err(why) = requests(batch, commands, outbox, &send).await {
                    return why;
                }
                continue;
            }
            pb::link_down::Kind::Credit(c) => {
                credit = credit.saturating_add(c.messages);
                continue;
            }
            pb::link_down::Kind::Table(t) => Command::Synced(t.synced_things),
            pb::link_down::Kind::Cloud(c) => Command::CloudState(c.connected),
            // Acks of our QoS 0 replies; tracing is the broker's.
            _ => continue,
        };
        if commands.send(command).await.is_err() {
            return STOPPING.into();
        }
    }
}

const STOPPING: &str = "the shadow service is stopping";

/// Hands a batch from the router to the shadows' task; once it is durable,
/// its replies wait in `outbox`, QoS 1 requests are acknowledged and as
/// much credit is granted again.
async fn requests(
    batch: pb::Messages,
    commands: &mpsc::Sender<Command>,
    outbox: &mut Outbox,
    send: &impl Fn(pb::link_up::Kind) -> bool,
) -> Result<(), String> {
    let n = u32::try_from(batch.messages.len()).unwrap_or(u32::MAX);
    let acks: Vec<u64> = batch
        .messages
        .iter()
        .filter(|m| m.qos > 0)
        .map(|m| m.id)
        .collect();
    let (answers, requests) = split(batch.messages);
    if !answers.is_empty() && commands.send(Command::Cloud(answers)).await.is_err() {
        return Err(STOPPING.into());
    }
    let (respond, replies) = tokio::sync::oneshot::channel();
    let command = Command::Requests {
        batch: requests,
        respond,
    };
    if commands.send(command).await.is_err() {
        return Err(STOPPING.into());
    }
    let replies = replies.await.map_err(|_| STOPPING.to_string())?;
    for r in replies.into_iter().flatten() {
        outbox.push(r);
    }
    // Durable now: acknowledge, and take as many more.
    if !acks.is_empty() {
        send(pb::link_up::Kind::Acks(pb::Acks {
            ids: acks,
            refused: Vec::new(),
        }));
    }
    send(pb::link_up::Kind::Credit(pb::Credit { messages: n }));
    Ok(())
}

/// Answers of the cloud shadow service: (topic, payload).
type Answers = Vec<(String, Bytes)>;
/// Requests: (topic, payload, from a device).
type Requests = Vec<(String, Bytes, bool)>;

/// Splits what came down into the cloud shadow service's answers (for the
/// sync) and requests (from devices, and from the cloud where a route
/// allows it). Our own sync requests coming back from the cloud, through
/// a route from the cloud on request topics, are dropped.
fn split(messages: Vec<pb::Message>) -> (Answers, Requests) {
    let mut answers = Vec::new();
    let mut requests = Vec::new();
    for m in messages {
        if m.source == "cloud" {
            match shadow_topic(&m.topic) {
                Some((_, ShadowSide::Response)) => {
                    answers.push((m.topic, m.payload));
                    continue;
                }
                Some((_, ShadowSide::Request)) if is_ours(&m.payload) => continue,
                _ => {}
            }
        }
        requests.push((m.topic, m.payload, true));
    }
    (answers, requests)
}

/// Whether a request carries one of our sync client tokens.
fn is_ours(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v.get("clientToken")
                .and_then(serde_json::Value::as_str)
                .map(|t| t.starts_with(TOKEN_PREFIX))
        })
        .unwrap_or(false)
}
