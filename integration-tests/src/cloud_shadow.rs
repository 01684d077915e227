//! The cloud side of the shadow protocol, for sync tests: a client of the
//! test's Mosquitto cloud that answers `get`, `update` and `delete` on
//! `$aws/things/...` as AWS IoT's shadow service does (AWS semantics from
//! verdant-shadow's `document` module: versions, `null` deletes, 409,
//! `accepted`, `rejected`, `documents`, `delta`). The test edits cloud
//! shadows as an application would, and reads them back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use verdant_shadow::document::{self, Limits, Shadow};
use verdant_shadow::service::{Operation, parse_topic};

type Docs = Arc<Mutex<HashMap<(String, String), Shadow>>>;

pub struct CloudShadows {
    docs: Docs,
    client: AsyncClient,
    /// Requests answered, by operation word.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CloudShadows {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const LIMITS: Limits = Limits {
    max_document_bytes: 8192,
    max_in_flight_per_thing: usize::MAX,
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CloudShadows {
    /// Connects to the cloud's plain port and answers until dropped.
    pub async fn start(plain_port: u16) -> CloudShadows {
        let mut o = MqttOptions::new("aws-shadow-service", "127.0.0.1", plain_port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(o, 256);
        for filter in ["$aws/things/+/shadow/+", "$aws/things/+/shadow/name/+/+"] {
            client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        }
        let docs: Docs = Arc::default();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (task_docs, publisher, log) = (docs.clone(), client.clone(), requests.clone());
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            let mut subacks = 0;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == 2
                            && let Some(tx) = ready_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let replies = answer(&task_docs, &log, &p.topic, &p.payload);
                        for (topic, body) in replies {
                            let _ = publisher
                                .publish(topic, QoS::AtLeastOnce, false, body)
                                .await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(crate::PATIENCE, ready)
            .await
            .expect("the cloud shadow service subscribed")
            .unwrap();
        CloudShadows {
            docs,
            client,
            requests,
            task,
        }
    }

    /// The cloud shadow's `state` (desired, reported) and version, if any.
    pub fn state(&self, thing: &str, name: &str) -> Option<(Value, u64)> {
        let docs = self.docs.lock().unwrap();
        let s = docs.get(&(thing.to_string(), name.to_string()))?;
        let v = s.to_json();
        Some((v["state"].clone(), s.version))
    }

    /// An application's update of the cloud shadow (as from the console):
    /// applied and announced on `documents` like any update.
    pub async fn edit(&self, thing: &str, name: &str, state: Value) {
        let topic = if name.is_empty() {
            format!("$aws/things/{thing}/shadow/update")
        } else {
            format!("$aws/things/{thing}/shadow/name/{name}/update")
        };
        let body = json!({ "state": state, "clientToken": "console" }).to_string();
        let replies = answer(&self.docs, &self.requests, &topic, body.as_bytes());
        assert!(
            replies.iter().any(|(t, _)| t.ends_with("/update/accepted")),
            "{replies:?}"
        );
        for (topic, body) in replies {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
        }
    }
}

/// Answers one request: the replies to publish.
fn answer(
    docs: &Docs,
    requests: &Mutex<Vec<String>>,
    topic: &str,
    payload: &[u8],
) -> Vec<(String, String)> {
    let Some(target) = parse_topic(topic) else {
        return Vec::new();
    };
    let op = match target.op {
        Operation::Get => "get",
        Operation::Update => "update",
        Operation::Delete => "delete",
    };
    requests.lock().unwrap().push(op.to_string());
    let p = &target.prefix;
    let now = now();
    let rejected = |r: &document::Rejection, token: Option<&String>| {
        vec![(
            format!("{p}/{op}/rejected"),
            document::rejected(r, token, now).to_string(),
        )]
    };
    let request = match document::parse(payload, LIMITS) {
        Ok(r) => r,
        Err((r, token)) => return rejected(&r, token.as_ref()),
    };
    let token = request.client_token.as_ref();
    let key = (target.thing.clone(), target.name.clone());
    let shown = if target.name.is_empty() {
        &target.thing
    } else {
        &target.name
    };
    let mut docs = docs.lock().unwrap();
    let current = docs.get(&key);
    match target.op {
        Operation::Get => match document::get(current, shown, &request, now) {
            Ok(v) => vec![(format!("{p}/get/accepted"), v.to_string())],
            Err(r) => rejected(&r, token),
        },
        Operation::Delete => match document::delete(current, shown, &request, now) {
            Ok(v) => {
                docs.remove(&key);
                vec![(format!("{p}/delete/accepted"), v.to_string())]
            }
            Err(r) => rejected(&r, token),
        },
        Operation::Update => match document::update(current, &request, now) {
            Ok(u) => {
                let mut out = vec![(format!("{p}/update/accepted"), u.accepted.to_string())];
                out.push((format!("{p}/update/documents"), u.documents.to_string()));
                if let Some(d) = &u.delta {
                    out.push((format!("{p}/update/delta"), d.to_string()));
                }
                docs.insert(key, u.shadow);
                out
            }
            Err(r) => rejected(&r, token),
        },
    }
}
