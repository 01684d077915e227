//! The ota-agent's router link (endpoint `ota-agent`): the cloud's jobs
//! answers and notifications for the core come down and go to the jobs
//! task, with whether the cloud is connected; the jobs task's requests go
//! up (QoS 1, queued by the router like any message for the cloud). The
//! ota-agent never opens a cloud connection of its own.

use std::path::Path;

use bytes::Bytes;
use tokio::sync::mpsc;
use verdant_common::shutdown::CancellationToken;
use verdant_link::{Handler, Link, ToRouter, Up};
use verdant_proto::router::v1 as pb;

/// Messages the router may send before more credit is granted.
const CREDIT: u32 = 64;
/// Requests waiting for the router at most (all QoS 1: never dropped).
const MAX_WAITING: usize = 1024;

/// What the router says to the jobs task.
#[derive(Debug)]
pub enum FromRouter {
    /// The cloud connection is up (when the link opens, and on every change).
    Cloud(bool),
    /// A message from the cloud on one of the core's jobs topics.
    Message { topic: String, payload: Bytes },
}

/// Keeps the link up until `shutdown`: what comes down goes to `jobs`,
/// what `published` gives goes up.
pub async fn run(
    socket: &Path,
    jobs: mpsc::Sender<FromRouter>,
    mut published: mpsc::UnboundedReceiver<ToRouter>,
    shutdown: CancellationToken,
) {
    let link = Link {
        socket,
        endpoint: "ota-agent",
        credit: CREDIT,
        max_waiting: MAX_WAITING,
    };
    link.run(&mut Ota { jobs }, &mut published, shutdown).await;
}

struct Ota {
    jobs: mpsc::Sender<FromRouter>,
}

const STOPPING: &str = "the ota-agent is stopping";

impl Handler for Ota {
    async fn down(&mut self, kind: pb::link_down::Kind, up: &Up<'_>) -> Result<(), String> {
        match kind {
            pb::link_down::Kind::Cloud(c) => self
                .jobs
                .send(FromRouter::Cloud(c.connected))
                .await
                .map_err(|_| STOPPING.to_string()),
            pb::link_down::Kind::Messages(batch) => {
                let n = u32::try_from(batch.messages.len()).unwrap_or(u32::MAX);
                let mut acks = Vec::new();
                for m in batch.messages {
                    if m.qos > 0 {
                        acks.push(m.id);
                    }
                    let message = FromRouter::Message {
                        topic: m.topic,
                        payload: m.payload,
                    };
                    if self.jobs.send(message).await.is_err() {
                        return Err(STOPPING.into());
                    }
                }
                // A job lost here is offered again: the cloud answers the
                // next start-next with it.
                if up.done(acks, n) {
                    Ok(())
                } else {
                    Err("the stream closed".into())
                }
            }
            _ => Ok(()),
        }
    }
}
