//! An endpoint daemon's side of `verdant.router.v1.Router/Link`: Hello,
//! credit both ways, messages up within the router's credit, QoS 1
//! messages kept until the router acknowledges them (and sent again after
//! the link breaks), and the link opened again whenever it breaks. The
//! shadow service and the lambda-runner run a [`Link`], and what comes
//! down goes to their [`Handler`]; the broker, whose link also carries
//! deliveries, counts and traces, runs its own loop over [`open`],
//! [`Outbox`] and [`Backoff`]. `ARCHITECTURE.md` describes the protocol
//! and the state kept here.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

use verdant_common::shutdown::CancellationToken;
use verdant_common::uds::UdsError;

/// Messages in one batch up.
const BATCH: usize = 256;

/// A message to send up; a QoS 1 one may ask to hear whether the router
/// took it (`true`) or refused it (`false`, e.g. a full cloud queue).
#[derive(Debug)]
pub struct ToRouter {
    pub message: pb::Message,
    pub outcome: Option<oneshot::Sender<bool>>,
}

/// What waits for the router's credit, and what it has not acknowledged;
/// it outlives each link. [`Link::run`] keeps one; a daemon with a loop of
/// its own (the broker) keeps one and drives it the same way.
pub struct Outbox {
    waiting: VecDeque<(pb::Message, Option<oneshot::Sender<bool>>)>,
    /// QoS 1 messages sent and not yet acknowledged, by id: sent again
    /// first when the link opens again.
    unacked: BTreeMap<u64, (pb::Message, Option<oneshot::Sender<bool>>)>,
    next_id: u64,
    /// QoS 0 messages waiting at most; older ones go first.
    max_waiting: usize,
}

impl Outbox {
    /// An empty outbox; past `max_waiting` messages waiting, a new QoS 0
    /// one drops the oldest QoS 0 one (`usize::MAX`: never).
    pub fn new(max_waiting: usize) -> Outbox {
        Outbox {
            waiting: VecDeque::new(),
            unacked: BTreeMap::new(),
            next_id: 1,
            max_waiting,
        }
    }

    /// Messages held: waiting, or sent and not acknowledged.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.unacked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a message with the next id (its own is replaced).
    pub fn push(&mut self, o: ToRouter) {
        let mut m = o.message;
        m.id = self.next_id;
        self.next_id += 1;
        if m.qos == 0
            && self.waiting.len() >= self.max_waiting
            && let Some(i) = self.waiting.iter().position(|(w, _)| w.qos == 0)
        {
            self.waiting.remove(i);
        }
        self.waiting.push_back((m, o.outcome));
    }

    /// The next batch up (at most 256 messages) within `credit`, which it
    /// spends; `None` when there is no credit or nothing waits. Its QoS 1
    /// messages are kept until acknowledged.
    pub fn batch(&mut self, credit: &mut u32) -> Option<Vec<pb::Message>> {
        if *credit == 0 || self.waiting.is_empty() {
            return None;
        }
        let n = self.waiting.len().min(*credit as usize).min(BATCH);
        let mut messages = Vec::with_capacity(n);
        for (m, outcome) in self.waiting.drain(..n) {
            if m.qos > 0 {
                self.unacked.insert(m.id, (m.clone(), outcome));
            }
            messages.push(m);
        }
        *credit -= n as u32;
        Some(messages)
    }

    /// The router has these (`taken`) or refused them: their senders are
    /// told which. How many of them were held.
    pub fn acked(&mut self, ids: &[u64], taken: bool) -> usize {
        let mut held = 0;
        for id in ids {
            if let Some((_, outcome)) = self.unacked.remove(id) {
                held += 1;
                if let Some(tx) = outcome {
                    let _ = tx.send(taken);
                }
            }
        }
        held
    }

    /// After a broken link: what was not acknowledged goes first.
    pub fn resend(&mut self) {
        let unacked = std::mem::take(&mut self.unacked);
        for m in unacked.into_values().rev() {
            self.waiting.push_front(m);
        }
    }
}

/// The wait before the link is opened again: 50 ms after the first break,
/// twice as long after each one, at most 2 s.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    /// The wait now; the next one is twice as long, up to [`Self::MAX`].
    pub fn wait(&mut self) -> Duration {
        let now = self.0;
        self.0 = (now * 2).min(Self::MAX);
        now
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Self::FIRST)
    }
}

/// Opens a link: connects to the router on `socket` and says Hello as
/// `endpoint`, granting `credit`. The way up and the stream down.
pub async fn open(
    socket: &Path,
    endpoint: &str,
    credit: u32,
) -> Result<(mpsc::UnboundedSender<pb::LinkUp>, Streaming<pb::LinkDown>), OpenError> {
    let channel = verdant_common::uds::connect(socket).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let hello = pb::link_up::Kind::Hello(pb::Hello {
        endpoint: endpoint.into(),
        credit,
    });
    let _ = tx.send(pb::LinkUp { kind: Some(hello) });
    match RouterClient::new(channel)
        .link(UnboundedReceiverStream::new(rx))
        .await
    {
        Ok(r) => Ok((tx, r.into_inner())),
        Err(e) => Err(OpenError::Refused(e)),
    }
}

/// Why a link could not open (the router is not there yet, or it refused
/// the Hello); either way the link is tried again after the backoff.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Connect(#[from] UdsError),
    #[error("the router refused the link: {}", .0.message())]
    Refused(tonic::Status),
}

/// Sends up on the current link.
pub struct Up<'a> {
    tx: &'a mpsc::UnboundedSender<pb::LinkUp>,
    /// QoS 0 messages the handler sends up, moved to the outbox once it
    /// returns (a mutex so that a handler's future stays `Send`).
    replies: std::sync::Mutex<Vec<pb::Message>>,
}

impl Up<'_> {
    /// Sends QoS 0 messages up (within the router's credit).
    pub fn reply(&self, messages: Vec<pb::Message>) {
        self.replies.lock().expect("replies lock").extend(messages);
    }

    /// False when the link has closed.
    pub fn send(&self, kind: pb::link_up::Kind) -> bool {
        self.tx.send(pb::LinkUp { kind: Some(kind) }).is_ok()
    }

    /// Done with `messages` (a batch the router sent): the QoS 1 ones
    /// acknowledged, credit granted for as many more.
    pub fn took(&self, messages: &[pb::Message]) -> bool {
        let n = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let acks = messages
            .iter()
            .filter(|m| m.qos > 0)
            .map(|m| m.id)
            .collect();
        self.done(acks, n)
    }

    /// Acknowledges QoS 1 messages from the router (now safe here) and
    /// grants credit for `n` more.
    pub fn done(&self, acks: Vec<u64>, n: u32) -> bool {
        (acks.is_empty()
            || self.send(pb::link_up::Kind::Acks(pb::Acks {
                ids: acks,
                refused: Vec::new(),
            })))
            && self.send(pb::link_up::Kind::Credit(pb::Credit { messages: n }))
    }
}

/// What a daemon does with what the router sends down (messages, table,
/// cloud state; credit and acknowledgements are handled here).
pub trait Handler: Send {
    /// `Err` ends this link (the reason is logged) and it is opened again.
    fn down(
        &mut self,
        kind: pb::link_down::Kind,
        up: &Up<'_>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The link of endpoint `endpoint` (its Hello name), granting `credit`.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub socket: &'a Path,
    pub endpoint: &'static str,
    pub credit: u32,
    /// QoS 0 messages waiting for the router at most.
    pub max_waiting: usize,
}

impl Link<'_> {
    /// Keeps the link up until `shutdown` or until `published` closes:
    /// what comes down goes to `handler`, what `published` gives goes up.
    pub async fn run(
        self,
        handler: &mut impl Handler,
        published: &mut mpsc::UnboundedReceiver<ToRouter>,
        shutdown: CancellationToken,
    ) {
        let mut outbox = Outbox::new(self.max_waiting);
        let mut backoff = Backoff::default();
        loop {
            let why = tokio::select! {
                () = shutdown.cancelled() => return,
                why = self.linked(handler, published, &mut outbox) => why,
            };
            let Some(why) = why else { return };
            tracing::warn!("router link down: {why}");
            outbox.resend();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.wait()) => {}
            }
        }
    }

    /// One link's life: why it ended, `None` when the daemon is stopping.
    async fn linked(
        &self,
        handler: &mut impl Handler,
        published: &mut mpsc::UnboundedReceiver<ToRouter>,
        outbox: &mut Outbox,
    ) -> Option<String> {
        let (tx, mut down) = match open(self.socket, self.endpoint, self.credit).await {
            Ok(opened) => opened,
            Err(why) => return Some(why.to_string()),
        };
        let up = Up {
            tx: &tx,
            replies: std::sync::Mutex::default(),
        };
        tracing::info!("linked with the router");
        let mut credit = 0u32;
        loop {
            while let Some(messages) = outbox.batch(&mut credit) {
                if !up.send(pb::link_up::Kind::Messages(pb::Messages { messages })) {
                    return Some("the stream closed".into());
                }
            }
            let message = tokio::select! {
                m = down.message() => m,
                o = published.recv() => {
                    outbox.push(o?);
                    continue;
                }
            };
            let kind = match message {
                Ok(Some(pb::LinkDown { kind: Some(kind) })) => kind,
                Ok(Some(_)) => continue,
                Ok(None) => return Some("the router closed the link".into()),
                Err(e) => return Some(format!("link failed: {}", e.message())),
            };
            match kind {
                pb::link_down::Kind::Credit(c) => credit = credit.saturating_add(c.messages),
                pb::link_down::Kind::Acks(a) => {
                    outbox.acked(&a.ids, true);
                    outbox.acked(&a.refused, false);
                }
                kind => {
                    let result = handler.down(kind, &up).await;
                    let replies = std::mem::take(&mut *up.replies.lock().expect("replies lock"));
                    for message in replies {
                        outbox.push(ToRouter {
                            message,
                            outcome: None,
                        });
                    }
                    if let Err(why) = result {
                        return Some(why);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
