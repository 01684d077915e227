//! The cloud side of the shadow protocol, for sync tests: a client of the
//! test's Mosquitto cloud that answers `get`, `update` and `delete` on
//! `$aws/things/<thing>/shadow[/name/<name>]/...` as AWS IoT's Device Shadow
//! service documents it (developer guide: "Device Shadow service documents",
//! "Device Shadow MQTT topics", "Device Shadow error messages"). It is
//! written from those pages alone, apart from verdant-shadow, so a drift of
//! our shadow service from AWS shows up here instead of being mirrored.
//!
//! What it keeps to: `null` deletes a key (a whole `desired` or `reported`
//! too); objects merge key by key, anything else (arrays too) replaces;
//! every leaf set gets a `metadata` `timestamp` (epoch seconds); every
//! accepted update adds one to `version`; a request's `version` that is not
//! the current one is a 409 "Version conflict"; `get`/`delete` of a missing
//! shadow is a 404; `delta` is what of `desired` differs from `reported`,
//! objects compared key by key; an update is answered on `/accepted`, then
//! `/documents` (`previous` and `current`), then `/delta` while desired and
//! reported differ; a deleted shadow created again continues its version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Map, Value, json};

/// AWS IoT's limit on a classic shadow's request document.
const MAX_DOCUMENT_BYTES: usize = 8192;
/// AWS IoT's limit on a `clientToken`.
const MAX_TOKEN_BYTES: usize = 64;

type Key = (String, String);

/// One shadow: its two sections, their leaf timestamps, its version.
#[derive(Clone, Default)]
struct Doc {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    desired_meta: Map<String, Value>,
    reported_meta: Map<String, Value>,
    version: u64,
}

/// The shadows of the cloud, and the last version of those deleted.
#[derive(Default)]
struct Store {
    live: HashMap<Key, Doc>,
    deleted: HashMap<Key, u64>,
}

pub struct CloudShadows {
    /// Shared with the answering task; held only while one request is
    /// answered, never across an await.
    store: Arc<Mutex<Store>>,
    client: AsyncClient,
    /// Topics of the requests answered, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CloudShadows {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
        let store = Arc::new(Mutex::new(Store::default()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (task_store, publisher, log) = (store.clone(), client.clone(), requests.clone());
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
                        let replies = answer_logged(&task_store, &log, &p.topic, &p.payload);
                        for (topic, body) in replies {
                            let _ = publisher
                                .publish(topic, QoS::AtLeastOnce, false, body.to_string())
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
            store,
            client,
            requests,
            task,
        }
    }

    /// The cloud shadow's `state` (desired, reported) and version, if any.
    pub fn state(&self, thing: &str, name: &str) -> Option<(Value, u64)> {
        let store = self.store.lock().unwrap();
        let doc = store.live.get(&(thing.to_string(), name.to_string()))?;
        Some((doc.state(), doc.version))
    }

    /// An application's update of the cloud shadow (as from the console):
    /// applied and announced on `documents` like any update.
    pub async fn edit(&self, thing: &str, name: &str, state: Value) {
        let topic = format!("{}/update", prefix(thing, name));
        let body = json!({ "state": state, "clientToken": "console" }).to_string();
        let replies = answer_logged(&self.store, &self.requests, &topic, body.as_bytes());
        assert!(
            replies.iter().any(|(t, _)| t.ends_with("/update/accepted")),
            "{replies:?}"
        );
        for (topic, body) in replies {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, body.to_string())
                .await
                .unwrap();
        }
    }
}

/// `$aws/things/<thing>/shadow[/name/<name>]`.
fn prefix(thing: &str, name: &str) -> String {
    if name.is_empty() {
        format!("$aws/things/{thing}/shadow")
    } else {
        format!("$aws/things/{thing}/shadow/name/{name}")
    }
}

/// The thing, shadow name (empty: classic) and operation of a request topic.
fn request_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = topic.split('/').collect();
    let (thing, name, op) = match parts.as_slice() {
        ["$aws", "things", t, "shadow", op] => (*t, "", *op),
        ["$aws", "things", t, "shadow", "name", n, op] if !n.is_empty() => (*t, *n, *op),
        _ => return None,
    };
    (!thing.is_empty() && matches!(op, "get" | "update" | "delete")).then_some((thing, name, op))
}

fn answer_logged(
    store: &Mutex<Store>,
    log: &Mutex<Vec<String>>,
    topic: &str,
    payload: &[u8],
) -> Vec<(String, Value)> {
    if request_topic(topic).is_some() {
        log.lock().unwrap().push(topic.to_string());
    }
    answer(&mut store.lock().unwrap(), topic, payload, now())
}

/// Answers one request: the replies to publish, in order (none if `topic`
/// is not a request).
fn answer(store: &mut Store, topic: &str, payload: &[u8], now: u64) -> Vec<(String, Value)> {
    let Some((thing, name, op)) = request_topic(topic) else {
        return Vec::new();
    };
    let p = prefix(thing, name);
    let body = if payload.is_empty() {
        Ok(Map::new())
    } else {
        match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err((400, "Invalid JSON".to_string())),
        }
    };
    let token = body
        .as_ref()
        .ok()
        .and_then(|b| b.get("clientToken"))
        .cloned();
    let key = (thing.to_string(), name.to_string());
    let replies = body.and_then(|body| {
        if token
            .as_ref()
            .is_some_and(|t| t.as_str().is_none_or(|t| t.len() > MAX_TOKEN_BYTES))
        {
            return Err((400, "Invalid clientToken".to_string()));
        }
        // AWS names the classic shadow by its thing.
        let missing = || {
            let shown = if name.is_empty() { thing } else { name };
            (404, format!("No shadow exists with name: '{shown}'"))
        };
        match op {
            "get" => {
                let doc = store.live.get(&key).ok_or_else(missing)?;
                let mut state = doc.state();
                let delta = doc.delta();
                if !delta.is_empty() {
                    state["delta"] = Value::Object(delta);
                }
                let meta = doc.metadata();
                let v = json!({ "state": state, "metadata": meta, "version": doc.version });
                Ok(vec![("get/accepted", v)])
            }
            "delete" => {
                let doc = store.live.remove(&key).ok_or_else(missing)?;
                store.deleted.insert(key, doc.version);
                Ok(vec![("delete/accepted", json!({ "version": doc.version }))])
            }
            _ if payload.len() > MAX_DOCUMENT_BYTES => Err((
                413,
                "The payload exceeds the maximum size allowed".to_string(),
            )),
            _ => update(store, key, &body, now),
        }
    });
    let stamped = |mut v: Value| {
        v["timestamp"] = now.into();
        if let Some(t) = &token {
            v["clientToken"] = t.clone();
        }
        v
    };
    match replies {
        Ok(replies) => replies
            .into_iter()
            .map(|(suffix, v)| (format!("{p}/{suffix}"), stamped(v)))
            .collect(),
        Err((code, message)) => vec![(
            format!("{p}/{op}/rejected"),
            stamped(json!({ "code": code, "message": message })),
        )],
    }
}

/// An accepted update's replies: `update/accepted`, `update/documents`,
/// and `update/delta` while desired and reported differ.
fn update(
    store: &mut Store,
    key: Key,
    body: &Map<String, Value>,
    now: u64,
) -> Result<Vec<(&'static str, Value)>, (u16, String)> {
    let bad = |m: &str| Err((400, m.to_string()));
    let Some(state) = body.get("state") else {
        return bad("Missing required node: state");
    };
    let Some(state) = state.as_object() else {
        return bad("State node must be an object");
    };
    for (section, v) in state {
        match section.as_str() {
            "desired" if !v.is_object() && !v.is_null() => {
                return bad("Desired node must be an object");
            }
            "reported" if !v.is_object() && !v.is_null() => {
                return bad("Reported node must be an object");
            }
            "desired" | "reported" => {}
            _ => return bad("State contains an invalid node"),
        }
    }
    let previous = store.live.get(&key).cloned();
    let version = previous
        .as_ref()
        .map(|d| d.version)
        .or_else(|| store.deleted.get(&key).copied())
        .unwrap_or(0);
    if let Some(asked) = body.get("version") {
        match asked.as_u64() {
            None => return bad("Invalid version"),
            Some(asked) if asked != version => return Err((409, "Version conflict".into())),
            Some(_) => {}
        }
    }
    let mut doc = previous.clone().unwrap_or_default();
    for (section, v) in state {
        let (values, meta) = if section == "desired" {
            (&mut doc.desired, &mut doc.desired_meta)
        } else {
            (&mut doc.reported, &mut doc.reported_meta)
        };
        match v {
            Value::Object(patch) => merge(values, meta, patch, now),
            _ => {
                values.clear();
                meta.clear();
            }
        }
    }
    doc.version = version + 1;
    let metadata: Map<String, Value> = state
        .iter()
        .map(|(section, v)| (section.clone(), stamp(v, now)))
        .collect();
    let accepted = json!({ "state": state, "metadata": metadata, "version": doc.version });
    let mut documents = json!({ "current": doc.snapshot() });
    if let Some(previous) = &previous {
        documents["previous"] = previous.snapshot();
    }
    let mut replies = vec![
        ("update/accepted", accepted),
        ("update/documents", documents),
    ];
    let delta = doc.delta();
    if !delta.is_empty() {
        let meta = pick(&delta, &doc.desired_meta);
        replies.push((
            "update/delta",
            json!({ "state": delta, "metadata": meta, "version": doc.version }),
        ));
    }
    store.deleted.remove(&key);
    store.live.insert(key, doc);
    Ok(replies)
}

/// Applies `patch` to `values`, stamping `meta` at each leaf it sets:
/// objects merge key by key, `null` removes, anything else replaces. An
/// object that a patch leaves empty goes.
fn merge(
    values: &mut Map<String, Value>,
    meta: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    now: u64,
) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                values.remove(k);
                meta.remove(k);
            }
            Value::Object(inner) => {
                let value = values.entry(k.clone()).or_insert_with(|| json!({}));
                if !value.is_object() {
                    *value = json!({});
                }
                let m = meta.entry(k.clone()).or_insert_with(|| json!({}));
                if !m.is_object() {
                    *m = json!({});
                }
                let (Value::Object(value), Value::Object(m)) = (value, m) else {
                    unreachable!("both were made objects above");
                };
                merge(value, m, inner, now);
                if value.is_empty() && !inner.is_empty() {
                    values.remove(k);
                    meta.remove(k);
                }
            }
            _ => {
                values.insert(k.clone(), v.clone());
                meta.insert(k.clone(), stamp(v, now));
            }
        }
    }
}

/// The metadata of `v` set at `now`: `{"timestamp"}` at each leaf, the
/// shape of `v` above them (an array's elements one by one).
fn stamp(v: &Value, now: u64) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), stamp(v, now))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| stamp(v, now)).collect()),
        _ => json!({ "timestamp": now }),
    }
}

/// What of `desired` differs from `reported`: objects compared key by key,
/// anything else (arrays too) as a whole.
fn delta(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    desired
        .iter()
        .filter_map(|(k, want)| match (want, reported.get(k)) {
            (_, Some(have)) if have == want => None,
            (Value::Object(want), Some(Value::Object(have))) => {
                let inner = delta(want, have);
                (!inner.is_empty()).then(|| (k.clone(), Value::Object(inner)))
            }
            _ => Some((k.clone(), want.clone())),
        })
        .collect()
}

/// The part of `meta` at the paths of `of`.
fn pick(of: &Map<String, Value>, meta: &Map<String, Value>) -> Map<String, Value> {
    of.iter()
        .filter_map(|(k, v)| {
            let m = meta.get(k)?;
            Some(match (v, m) {
                (Value::Object(v), Value::Object(m)) => (k.clone(), Value::Object(pick(v, m))),
                _ => (k.clone(), m.clone()),
            })
        })
        .collect()
}

impl Doc {
    /// `{"desired", "reported"}`, each only when not empty.
    fn state(&self) -> Value {
        sections(&self.desired, &self.reported)
    }

    fn metadata(&self) -> Value {
        sections(&self.desired_meta, &self.reported_meta)
    }

    fn delta(&self) -> Map<String, Value> {
        delta(&self.desired, &self.reported)
    }

    /// As `update/documents` shows it.
    fn snapshot(&self) -> Value {
        json!({ "state": self.state(), "metadata": self.metadata(), "version": self.version })
    }
}

fn sections(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (name, section) in [("desired", desired), ("reported", reported)] {
        if !section.is_empty() {
            out.insert(name.to_string(), Value::Object(section.clone()));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000;

    /// The replies to `body` on `topic`, by topic.
    fn ask(store: &mut Store, topic: &str, body: &Value) -> Vec<(String, Value)> {
        answer(store, topic, body.to_string().as_bytes(), T)
    }

    fn one<'a>(replies: &'a [(String, Value)], topic: &str) -> &'a Value {
        let found: Vec<_> = replies.iter().filter(|(t, _)| t == topic).collect();
        assert_eq!(found.len(), 1, "{topic} in {replies:?}");
        &found[0].1
    }

    const UPDATE: &str = "$aws/things/t/shadow/update";

    #[test]
    fn an_update_is_accepted_with_metadata_then_documented_with_the_previous_version() {
        let mut s = Store::default();
        let r = ask(
            &mut s,
            UPDATE,
            &json!({"state": {"reported": {"temp": 20}}, "clientToken": "a"}),
        );
        assert_eq!(r.len(), 2, "no delta without desired: {r:?}");
        assert_eq!(
            one(&r, "$aws/things/t/shadow/update/accepted"),
            &json!({"state": {"reported": {"temp": 20}},
                "metadata": {"reported": {"temp": {"timestamp": T}}},
                "version": 1, "timestamp": T, "clientToken": "a"})
        );
        let r = ask(
            &mut s,
            UPDATE,
            &json!({"state": {"reported": {"temp": 21, "fw": [1, 2]}}, "clientToken": "b"}),
        );
        assert_eq!(
            one(&r, "$aws/things/t/shadow/update/documents"),
            &json!({
                "previous": {"state": {"reported": {"temp": 20}},
                    "metadata": {"reported": {"temp": {"timestamp": T}}}, "version": 1},
                "current": {"state": {"reported": {"temp": 21, "fw": [1, 2]}},
                    "metadata": {"reported": {"temp": {"timestamp": T},
                        "fw": [{"timestamp": T}, {"timestamp": T}]}}, "version": 2},
                "timestamp": T, "clientToken": "b"})
        );
        // The first update's documents have no previous shadow.
        let r = ask(
            &mut s,
            "$aws/things/u/shadow/update",
            &json!({"state": {"reported": {"x": 1}}}),
        );
        assert!(
            one(&r, "$aws/things/u/shadow/update/documents")
                .get("previous")
                .is_none()
        );
    }

    #[test]
    fn null_deletes_a_key_or_a_section_and_nested_objects_merge() {
        let mut s = Store::default();
        let state =
            json!({"desired": {"mode": "eco", "led": {"r": 1, "g": 2}}, "reported": {"t": 1}});
        ask(&mut s, UPDATE, &json!({"state": state}));
        ask(
            &mut s,
            UPDATE,
            &json!({"state": {"desired": {"mode": null, "led": {"g": null, "b": 3}}}}),
        );
        let doc = &s.live[&("t".to_string(), String::new())];
        assert_eq!(
            doc.state(),
            json!({"desired": {"led": {"r": 1, "b": 3}}, "reported": {"t": 1}})
        );
        assert_eq!(
            doc.metadata()["desired"],
            json!({"led": {"r": {"timestamp": T}, "b": {"timestamp": T}}})
        );
        ask(&mut s, UPDATE, &json!({"state": {"desired": null}}));
        let doc = &s.live[&("t".to_string(), String::new())];
        assert_eq!(
            (doc.state(), doc.version),
            (json!({"reported": {"t": 1}}), 3)
        );
    }

    #[test]
    fn delta_holds_the_desired_keys_that_differ_from_reported_recursively() {
        let mut s = Store::default();
        let state = json!({
            "desired": {"mode": "eco", "same": 1, "led": {"r": 1, "g": 2}, "list": [1, 2]},
            "reported": {"same": 1, "extra": 5, "led": {"r": 1, "g": 0}, "list": [1]},
        });
        let r = ask(&mut s, UPDATE, &json!({"state": state, "clientToken": "c"}));
        let want = json!({"mode": "eco", "led": {"g": 2}, "list": [1, 2]});
        assert_eq!(
            one(&r, "$aws/things/t/shadow/update/delta"),
            &json!({"state": want,
                "metadata": {"mode": {"timestamp": T}, "led": {"g": {"timestamp": T}},
                    "list": [{"timestamp": T}, {"timestamp": T}]},
                "version": 1, "timestamp": T, "clientToken": "c"})
        );
        let r = ask(
            &mut s,
            "$aws/things/t/shadow/get",
            &json!({"clientToken": "g"}),
        );
        let got = one(&r, "$aws/things/t/shadow/get/accepted");
        assert_eq!(
            (&got["state"]["delta"], &got["version"]),
            (&want, &json!(1))
        );
        assert_eq!(got["clientToken"], "g");
        // Once reported catches up there is no delta.
        let r = ask(
            &mut s,
            UPDATE,
            &json!({"state": {"reported": {"mode": "eco", "led": {"g": 2}, "list": [1, 2]}}}),
        );
        assert!(r.iter().all(|(t, _)| !t.ends_with("/delta")), "{r:?}");
    }

    #[test]
    fn a_stale_version_is_a_409_and_a_missing_shadow_a_404() {
        let mut s = Store::default();
        let r = ask(
            &mut s,
            "$aws/things/t/shadow/get",
            &json!({"clientToken": "x"}),
        );
        assert_eq!(
            r,
            vec![(
                "$aws/things/t/shadow/get/rejected".to_string(),
                json!({"code": 404, "message": "No shadow exists with name: 't'",
                    "timestamp": T, "clientToken": "x"})
            )]
        );
        let r = answer(&mut s, "$aws/things/t/shadow/delete", b"", T);
        assert_eq!(r[0].0, "$aws/things/t/shadow/delete/rejected");
        assert_eq!(r[0].1["code"], 404);
        ask(&mut s, UPDATE, &json!({"state": {"reported": {"a": 1}}}));
        let r = ask(
            &mut s,
            UPDATE,
            &json!({"state": {"reported": {"a": 2}}, "version": 5, "clientToken": "v"}),
        );
        assert_eq!(
            r,
            vec![(
                "$aws/things/t/shadow/update/rejected".to_string(),
                json!({"code": 409, "message": "Version conflict", "timestamp": T, "clientToken": "v"})
            )]
        );
        let r = ask(
            &mut s,
            UPDATE,
            &json!({"state": {"reported": {"a": 2}}, "version": 1}),
        );
        assert_eq!(
            one(&r, "$aws/things/t/shadow/update/accepted")["version"],
            2
        );
        let r = ask(&mut s, UPDATE, &json!({"clientToken": "n"}));
        assert_eq!(r[0].1["message"], "Missing required node: state");
    }

    #[test]
    fn named_shadows_are_apart_and_a_deleted_shadow_continues_its_version() {
        let mut s = Store::default();
        let named = "$aws/things/t/shadow/name/cfg";
        ask(
            &mut s,
            &format!("{named}/update"),
            &json!({"state": {"reported": {"a": 1}}}),
        );
        ask(
            &mut s,
            &format!("{named}/update"),
            &json!({"state": {"reported": {"a": 2}}}),
        );
        assert!(!s.live.contains_key(&("t".to_string(), String::new())));
        let r = ask(
            &mut s,
            &format!("{named}/delete"),
            &json!({"clientToken": "d"}),
        );
        assert_eq!(
            r,
            vec![(
                format!("{named}/delete/accepted"),
                json!({"version": 2, "timestamp": T, "clientToken": "d"})
            )]
        );
        let r = ask(&mut s, &format!("{named}/get"), &json!({}));
        assert_eq!(r[0].1["message"], "No shadow exists with name: 'cfg'");
        let r = ask(
            &mut s,
            &format!("{named}/update"),
            &json!({"state": {"reported": {"a": 3}}}),
        );
        assert_eq!(one(&r, &format!("{named}/update/accepted"))["version"], 3);
        // Answers and other topics are not requests.
        assert!(ask(&mut s, &format!("{named}/update/accepted"), &json!({})).is_empty());
        assert!(ask(&mut s, "$aws/things/t/shadow/list", &json!({})).is_empty());
    }
}
