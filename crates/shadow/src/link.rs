//! The shadow service's link with the router (`Router/Link`, endpoint
//! `shadow`): requests come down in batches, replies go up with source
//! `GGShadowService` within the router's credit, and a QoS 1 request is
//! acknowledged once its batch is durable. The link is opened again
//! whenever it breaks; replies not yet sent wait for it.

use std::path::Path;

use bytes::Bytes;
use tokio::sync::mpsc;
use verdant_common::shutdown::CancellationToken;
use verdant_group::routes::{ShadowSide, shadow_topic};
use verdant_link::{Handler, Link, ToRouter, Up};
use verdant_proto::router::v1 as pb;

use crate::service::{Command, Reply};
use crate::sync::TOKEN_PREFIX;

/// Requests the router may send before more credit is granted.
const CREDIT: u32 = 256;
/// Replies waiting for the router at most; older ones go first (a reply
/// that waits that long has a client that gave up).
const MAX_WAITING: usize = 10_000;

/// A reply as it goes up: from `GGShadowService`, QoS 0.
pub fn message((topic, payload): Reply) -> pb::Message {
    pb::Message {
        source: "GGShadowService".into(),
        topic,
        payload,
        ..pb::Message::default()
    }
}

/// A reply for the link's `published` channel.
pub fn outgoing(reply: Reply) -> ToRouter {
    ToRouter {
        message: message(reply),
        outcome: None,
    }
}

/// Keeps the link up until `shutdown`: requests go to the shadows' task
/// (`commands`), and its replies, and those of gRPC calls and of the sync
/// (`published`, made by [`outgoing`]), go up.
pub async fn run(
    socket: &Path,
    commands: mpsc::Sender<Command>,
    mut published: mpsc::UnboundedReceiver<ToRouter>,
    shutdown: CancellationToken,
) {
    let link = Link {
        socket,
        endpoint: "shadow",
        credit: CREDIT,
        max_waiting: MAX_WAITING,
    };
    link.run(&mut Shadow { commands }, &mut published, shutdown)
        .await;
}

struct Shadow {
    commands: mpsc::Sender<Command>,
}

impl Handler for Shadow {
    async fn down(&mut self, kind: pb::link_down::Kind, up: &Up<'_>) -> Result<(), String> {
        let command = match kind {
            pb::link_down::Kind::Messages(batch) => {
                return requests(batch, &self.commands, up).await;
            }
            pb::link_down::Kind::Table(t) => Command::Synced(t.synced_things),
            pb::link_down::Kind::Cloud(c) => Command::CloudState(c.connected),
            // Tracing is the broker's.
            _ => return Ok(()),
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| STOPPING.to_string())
    }
}

const STOPPING: &str = "the shadow service is stopping";

/// Hands a batch from the router to the shadows' task; once it is durable,
/// its replies go up, QoS 1 requests are acknowledged and as much credit
/// is granted again.
async fn requests(
    batch: pb::Messages,
    commands: &mpsc::Sender<Command>,
    up: &Up<'_>,
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
    up.reply(replies.into_iter().flatten().map(message).collect());
    // Durable now: acknowledge, and take as many more.
    if up.done(acks, n) {
        Ok(())
    } else {
        Err("the stream closed".into())
    }
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
