//! Requests on shadow topics, in batches: each is answered against the
//! shadows in memory, the batch's changes are committed in one transaction,
//! and only then do the replies go out (and the requests get acknowledged).
//! A failed commit undoes the batch in memory and answers 500.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use verdant_link::ToRouter;

use crate::document::{self, Limits, Rejection, Shadow};
use crate::store::{Key, Op, Store};
use crate::sync::{Actions, Agreed, Sync};

/// What a request topic asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub thing: String,
    /// "" for the classic shadow.
    pub name: String,
    pub op: Operation,
    /// `$aws/things/<thing>/shadow[/name/<name>]`: where replies go under.
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Update,
    Delete,
}

impl Operation {
    fn word(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// Parses a request topic; `None` for anything else (e.g. reply topics).
pub fn parse_topic(topic: &str) -> Option<Target> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once("/shadow/")?;
    if thing.is_empty() {
        return None;
    }
    let (name, op) = match rest.strip_prefix("name/") {
        Some(named) => named.split_once('/')?,
        None => ("", rest),
    };
    let op = match op {
        "get" => Operation::Get,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        _ => return None,
    };
    let prefix = if name.is_empty() {
        format!("$aws/things/{thing}/shadow")
    } else {
        format!("$aws/things/{thing}/shadow/name/{name}")
    };
    Some(Target {
        thing: thing.to_string(),
        name: name.to_string(),
        op,
        prefix,
    })
}

/// A reply to publish: topic and payload.
pub type Reply = (String, Bytes);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn body(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

/// Every shadow of the core, and where they are kept.
pub struct Shadows {
    pub docs: HashMap<Key, Shadow>,
    /// `None` while a commit runs on a blocking thread.
    pub store: Option<Store>,
    pub limits: Limits,
    /// Durable changes, for watchers (none listening costs nothing; the
    /// ring of 1024 is allocated at start, so its slots hold pointers).
    pub changes: tokio::sync::broadcast::Sender<std::sync::Arc<Op>>,
    /// Cloud sync of the shadows of things marked `SyncShadow`.
    pub sync: Sync,
}

/// One answered request before its batch commits.
struct Answer {
    replies: Vec<Reply>,
    /// The reply to send instead if the commit fails.
    on_failure: Option<Reply>,
}

impl Shadows {
    /// Answers one request, changing the shadows in memory; the store
    /// operation and the previous value (for undo) go to `ops`/`undo`.
    fn answer(
        &mut self,
        target: &Target,
        payload: &[u8],
        ops: &mut Vec<Op>,
        undo: &mut Vec<(Key, Option<Shadow>)>,
    ) -> Answer {
        let now = now();
        let op = target.op.word();
        let rejected_topic = format!("{}/{op}/rejected", target.prefix);
        let accepted_topic = format!("{}/{op}/accepted", target.prefix);
        let refuse = |r: &Rejection, token: Option<&String>| Answer {
            replies: vec![(
                rejected_topic.clone(),
                body(&document::rejected(r, token, now)),
            )],
            on_failure: None,
        };
        let request = match document::parse(payload, self.limits) {
            Ok(r) => r,
            Err((r, token)) => return refuse(&r, token.as_ref()),
        };
        let token = request.client_token.clone();
        let failure = Some((
            rejected_topic.clone(),
            body(&document::rejected(
                &Rejection {
                    code: 500,
                    message: "Internal service failure".into(),
                },
                token.as_ref(),
                now,
            )),
        ));
        let key: Key = (target.thing.clone(), target.name.clone());
        let current = self.docs.get(&key);
        let shown = if target.name.is_empty() {
            &target.thing
        } else {
            &target.name
        };
        match target.op {
            Operation::Get => match document::get(current, shown, &request, now) {
                Ok(v) => Answer {
                    replies: vec![(accepted_topic, body(&v))],
                    on_failure: None,
                },
                Err(r) => refuse(&r, token.as_ref()),
            },
            Operation::Delete => match document::delete(current, shown, &request, now) {
                Ok(v) => {
                    undo.push((key.clone(), self.docs.remove(&key)));
                    ops.push(Op::Delete(key));
                    Answer {
                        replies: vec![(accepted_topic, body(&v))],
                        on_failure: failure,
                    }
                }
                Err(r) => refuse(&r, token.as_ref()),
            },
            Operation::Update => match document::update(current, &request, now) {
                Ok(u) => {
                    // The delta first: the Python SDK takes a delta only if
                    // its version is newer than the last it saw, and the
                    // accepted reply to the same update carries that version.
                    let mut replies = Vec::new();
                    if let Some(delta) = &u.delta {
                        replies.push((format!("{}/update/delta", target.prefix), body(delta)));
                    }
                    replies.push((accepted_topic, body(&u.accepted)));
                    replies.push((
                        format!("{}/update/documents", target.prefix),
                        body(&u.documents),
                    ));
                    undo.push((key.clone(), self.docs.insert(key.clone(), u.shadow.clone())));
                    ops.push(Op::Put(key, u.shadow));
                    Answer {
                        replies,
                        on_failure: failure,
                    }
                }
                Err(r) => refuse(&r, token.as_ref()),
            },
        }
    }

    /// Answers a batch of requests (topic, payload, from a device): each
    /// one's replies, once the batch is durable. Requests on other topics
    /// get none. Devices' requests count toward their thing's in-flight
    /// limit; operators' and functions' (gRPC) do not.
    pub async fn batch(&mut self, requests: Vec<(String, Bytes, bool)>) -> Vec<Vec<Reply>> {
        self.batch_with(requests, Vec::new()).await.0
    }

    /// [`Shadows::batch`], committing the sync states `agreed` in the same
    /// transaction; also what the sync does about the changes.
    async fn batch_with(
        &mut self,
        requests: Vec<(String, Bytes, bool)>,
        agreed: Vec<(Key, Agreed)>,
    ) -> (Vec<Vec<Reply>>, Actions) {
        let mut ops = Vec::new();
        let mut undo = Vec::new();
        let mut answers = Vec::new();
        let mut per_thing: HashMap<String, usize> = HashMap::new();
        for (topic, payload, from_device) in &requests {
            answers.push(match parse_topic(topic) {
                Some(target) => {
                    let n = per_thing.entry(target.thing.clone()).or_default();
                    *n += usize::from(*from_device);
                    if *n > self.limits.max_in_flight_per_thing {
                        too_many(&target, payload)
                    } else {
                        self.answer(&target, payload, &mut ops, &mut undo)
                    }
                }
                None => {
                    tracing::debug!(topic, "not a shadow request topic: ignored");
                    Answer {
                        replies: Vec::new(),
                        on_failure: None,
                    }
                }
            });
        }
        let durable = (ops.is_empty() && agreed.is_empty()) || self.commit(&ops, agreed).await;
        let mut actions = Actions::default();
        if durable && !ops.is_empty() {
            let keys: Vec<Key> = ops
                .iter()
                .map(|op| match op {
                    Op::Put(k, _) | Op::Delete(k) => k.clone(),
                })
                .collect();
            actions = self.sync.changed(&keys, &self.docs);
        }
        if durable && self.changes.receiver_count() > 0 {
            for op in ops {
                let _ = self.changes.send(std::sync::Arc::new(op));
            }
        }
        if !durable {
            for (key, previous) in undo.into_iter().rev() {
                match previous {
                    Some(s) => self.docs.insert(key, s),
                    None => self.docs.remove(&key),
                };
            }
        }
        let replies = answers
            .into_iter()
            .map(|a| match (durable, a.on_failure) {
                (false, Some(failure)) => vec![failure],
                _ => a.replies,
            })
            .collect();
        (replies, actions)
    }

    /// Carries out what the sync asks: requests to the cloud are published,
    /// the cloud's side is applied locally (its replies published too) with
    /// the agreed states, and so on until the sync asks nothing more.
    async fn act(&mut self, mut actions: Actions, publish: &UnboundedSender<ToRouter>) {
        loop {
            for c in actions.cloud.drain(..) {
                let _ = publish.send(crate::link::outgoing(c));
            }
            if actions.local.is_empty() && actions.agreed.is_empty() {
                return;
            }
            let requests = actions
                .local
                .into_iter()
                .map(|(topic, payload)| (topic, payload, false))
                .collect();
            let (replies, next) = self.batch_with(requests, actions.agreed).await;
            for r in replies.into_iter().flatten() {
                let _ = publish.send(crate::link::outgoing(r));
            }
            actions = next;
        }
    }

    /// The named shadows of `thing`, sorted.
    pub fn names(&self, thing: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .docs
            .keys()
            .filter(|(t, n)| t == thing && !n.is_empty())
            .map(|(_, n)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Commits on a blocking thread; false if it failed (logged).
    async fn commit(&mut self, ops: &[Op], agreed: Vec<(Key, Agreed)>) -> bool {
        let Some(mut store) = self.store.take() else {
            return true;
        };
        let ops = ops.to_vec();
        let (store, result) = tokio::task::spawn_blocking(move || {
            let r = store.commit(&ops, &agreed);
            (store, r)
        })
        .await
        .expect("the commit does not panic");
        self.store = Some(store);
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("{e}: this batch of shadow changes is refused (500)");
                false
            }
        }
    }
}

/// 429 for a request past the in-flight limit of its thing.
fn too_many(target: &Target, payload: &[u8]) -> Answer {
    let token = crate::token::recover(payload);
    let r = document::reject(429, "Too many requests");
    Answer {
        replies: vec![(
            format!("{}/{}/rejected", target.prefix, target.op.word()),
            body(&document::rejected(&r, token.as_ref(), now())),
        )],
        on_failure: None,
    }
}

/// What the task owning the shadows is asked.
pub enum Command {
    /// Requests (topic, payload, from a device); each one's replies come back.
    Requests {
        batch: Vec<(String, Bytes, bool)>,
        respond: tokio::sync::oneshot::Sender<Vec<Vec<Reply>>>,
    },
    /// The named shadows of a thing.
    Names {
        thing: String,
        respond: tokio::sync::oneshot::Sender<Vec<String>>,
    },
    /// Where a shadow's cloud sync stands.
    SyncState {
        key: Key,
        respond: tokio::sync::oneshot::Sender<verdant_proto::shadow::v1::SyncState>,
    },
    /// Answers of the cloud shadow service (topic, payload).
    Cloud(Vec<(String, Bytes)>),
    /// The things whose shadows are synced with the cloud.
    Synced(Vec<String>),
    /// The cloud connection is up, or not.
    CloudState(bool),
}

/// Commands taken together at most, so concurrent callers share a commit.
const MAX_BATCH: usize = 256;

/// How often sync requests the cloud left unanswered are looked at.
const SYNC_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The task owning the shadows: requests that arrive together make one
/// batch, one transaction. What the sync asks is carried out between
/// batches; its requests to the cloud and its local replies go to `publish`.
pub async fn run(
    mut shadows: Shadows,
    mut commands: tokio::sync::mpsc::Receiver<Command>,
    publish: UnboundedSender<ToRouter>,
) {
    let mut tick = tokio::time::interval(SYNC_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            c = commands.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = tick.tick() => {
                let actions = shadows.sync.tick(&shadows.docs);
                shadows.act(actions, &publish).await;
                continue;
            }
        };
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(c) => pending.push(c),
                Err(_) => break,
            }
        }
        let mut batch = Vec::new();
        let mut waiting = Vec::new();
        let mut actions = Vec::new();
        for c in pending {
            match c {
                Command::Requests { batch: b, respond } => {
                    waiting.push((b.len(), respond));
                    batch.extend(b);
                }
                Command::Names { thing, respond } => {
                    let _ = respond.send(shadows.names(&thing));
                }
                Command::SyncState { key, respond } => {
                    let _ = respond.send(shadows.sync.state(&key, &shadows.docs));
                }
                Command::Cloud(answers) => {
                    for (topic, payload) in answers {
                        actions.push(shadows.sync.answer(&topic, &payload, &shadows.docs));
                    }
                }
                Command::Synced(things) => {
                    actions.push(shadows.sync.set_things(things, &shadows.docs));
                }
                Command::CloudState(up) => {
                    actions.push(shadows.sync.set_connected(up, &shadows.docs));
                }
            }
        }
        let (replies, after) = shadows.batch_with(batch, Vec::new()).await;
        let mut replies = replies.into_iter();
        for (n, respond) in waiting {
            let _ = respond.send(replies.by_ref().take(n).collect());
        }
        actions.push(after);
        for a in actions {
            shadows.act(a, &publish).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let t = parse_topic("$aws/things/dev-1/shadow/update").unwrap();
        assert_eq!(
            (t.thing.as_str(), t.name.as_str(), t.op),
            ("dev-1", "", Operation::Update)
        );
        assert_eq!(t.prefix, "$aws/things/dev-1/shadow");
        let n = parse_topic("$aws/things/dev-1/shadow/name/cfg/get").unwrap();
        assert_eq!((n.name.as_str(), n.op), ("cfg", Operation::Get));
        assert_eq!(n.prefix, "$aws/things/dev-1/shadow/name/cfg");
        assert!(parse_topic("$aws/things/dev-1/shadow/update/accepted").is_none());
        assert!(parse_topic("$aws/things//shadow/get").is_none());
        assert!(parse_topic("other/topic").is_none());
    }

    /// Each request of `requests` (op, payload, code) on `prefix`, alone in
    /// its batch, is rejected with `code` and the token `T`.
    async fn rejected_with_token(s: &mut Shadows, prefix: &str, requests: &[(&str, String, u16)]) {
        for (op, payload, code) in requests {
            let replies = s
                .batch(vec![(
                    format!("{prefix}/{op}"),
                    Bytes::from(payload.clone()),
                    true,
                )])
                .await;
            let shown = &payload[..payload.len().min(80)];
            let [(topic, reply)] = &replies[0][..] else {
                panic!("one reply to {shown}: {replies:?}");
            };
            let reply: Value = serde_json::from_slice(reply).unwrap();
            assert_eq!(topic, &format!("{prefix}/{op}/rejected"), "{shown}");
            assert_eq!(reply["code"], *code, "{shown}: {reply}");
            assert_eq!(reply["clientToken"], "T", "{shown}: {reply}");
        }
    }

    #[tokio::test]
    async fn every_rejection_echoes_the_client_token_even_of_unreadable_requests() {
        let mut s = Shadows {
            docs: HashMap::new(),
            store: None,
            limits: Limits {
                max_document_bytes: 1024,
                max_in_flight_per_thing: 2,
            },
            changes: tokio::sync::broadcast::channel(16).0,
            sync: Sync::default(),
        };
        let big = "y".repeat(2000);
        let requests = [
            ("get", r#"{"clientToken":"T"}"#.to_string(), 404),
            ("delete", r#"{"clientToken":"T"}"#.to_string(), 404),
            ("update", r#"{"clientToken":"T"}"#.to_string(), 400),
            ("update", r#"{"state":1,"clientToken":"T"}"#.to_string(), 400),
            ("update", r#"{"state":{"other":{}},"clientToken":"T"}"#.to_string(), 400),
            ("update", r#"{"state":{"desired":{"1":{"2":{"3":{"4":{"5":{"6":{"7":1}}}}}}}},"clientToken":"T"}"#.to_string(), 400),
            ("update", r#"{"state":{},"version":"1","clientToken":"T"}"#.to_string(), 400),
            ("update", r#"{"state":{"desired":{"a":1}},"version":4,"clientToken":"T"}"#.to_string(), 409),
            // Too large, valid JSON or not.
            ("update", format!(r#"{{"state":{{"reported":{{"x":"{big}"}}}},"clientToken":"T"}}"#), 413),
            ("update", format!(r#"{{"clientToken":"T","state":{{"reported":{{"x":{big}}}}}}}"#), 413),
            ("get", format!(r#"{{"clientToken":"T","pad":"{big}"}}"#), 413),
            // Not JSON, with a readable token.
            ("update", r#"{"state":{oops},"clientToken":"T"}"#.to_string(), 400),
            ("delete", r#"{"clientToken":"T"}}"#.to_string(), 400),
        ];
        for prefix in ["$aws/things/d/shadow", "$aws/things/d/shadow/name/n"] {
            rejected_with_token(&mut s, prefix, &requests).await;
        }
        // A token too long to be valid is echoed with its rejection.
        let long = "L".repeat(65);
        let replies = s
            .batch(vec![(
                "$aws/things/d/shadow/get".into(),
                Bytes::from(format!(r#"{{"clientToken":"{long}"}}"#)),
                true,
            )])
            .await;
        let reply: Value = serde_json::from_slice(&replies[0][0].1).unwrap();
        assert_eq!(
            (reply["code"].as_u64(), reply["clientToken"].as_str()),
            (Some(400), Some(long.as_str()))
        );
        // Past the in-flight limit (429), too large or not.
        let replies = s
            .batch(vec![
                ("$aws/things/d/shadow/get".into(), Bytes::new(), true),
                ("$aws/things/d/shadow/get".into(), Bytes::new(), true),
                (
                    "$aws/things/d/shadow/name/n/get".into(),
                    Bytes::from(r#"{"clientToken":"T"}"#),
                    true,
                ),
                (
                    "$aws/things/d/shadow/update".into(),
                    Bytes::from(format!(r#"{{"clientToken":"T","x":"{big}"}}"#)),
                    true,
                ),
            ])
            .await;
        let past: Vec<&Reply> = replies[2..].iter().flatten().collect();
        assert_eq!(past.len(), 2, "{replies:?}");
        for (topic, reply) in past {
            let reply: Value = serde_json::from_slice(reply).unwrap();
            assert!(topic.ends_with("/rejected"), "{topic}");
            assert_eq!(
                (reply["code"].as_u64(), reply["clientToken"].as_str()),
                (Some(429), Some("T"))
            );
        }
    }

    #[tokio::test]
    async fn a_batch_is_durable_before_its_replies_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (store, docs) = Store::open(&path).unwrap();
        let mut s = Shadows {
            docs,
            store: Some(store),
            limits: Limits {
                max_document_bytes: 8192,
                max_in_flight_per_thing: 3,
            },
            changes: tokio::sync::broadcast::channel(16).0,
            sync: Sync::default(),
        };
        let replies = s
            .batch(vec![
                (
                    "$aws/things/d/shadow/update".into(),
                    Bytes::from(r#"{"state":{"desired":{"on":true}},"clientToken":"a"}"#),
                    true,
                ),
                (
                    "$aws/things/d/shadow/name/n/update".into(),
                    Bytes::from(r#"{"state":{"reported":{"x":1}}}"#),
                    true,
                ),
                ("$aws/things/d/shadow/get".into(), Bytes::from("{}"), true),
                ("$aws/things/gone/shadow/delete".into(), Bytes::new(), true),
            ])
            .await;
        let topics: Vec<&str> = replies.iter().flatten().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "$aws/things/d/shadow/update/delta",
                "$aws/things/d/shadow/update/accepted",
                "$aws/things/d/shadow/update/documents",
                "$aws/things/d/shadow/name/n/update/accepted",
                "$aws/things/d/shadow/name/n/update/documents",
                "$aws/things/d/shadow/get/accepted",
                "$aws/things/gone/shadow/delete/rejected",
            ]
        );
        // A fourth request for one thing in one batch: 429.
        let many = (0..4)
            .map(|_| {
                (
                    "$aws/things/busy/shadow/get".to_string(),
                    Bytes::from("{}"),
                    true,
                )
            })
            .collect();
        let replies = s.batch(many).await;
        let last = &replies[3][0];
        assert!(last.0.ends_with("/get/rejected"));
        assert!(String::from_utf8_lossy(&last.1).contains("429"));
        assert!(String::from_utf8_lossy(&replies[2][0].1).contains("404"));
        drop(s);
        let (_, docs) = Store::open(&path).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[&("d".to_string(), String::new())].version, 1);
    }
}
