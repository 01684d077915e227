//! Cloud sync of the shadows of things marked `SyncShadow: true` in the
//! group, with no I/O: cloud answers and local changes in, requests to the
//! cloud shadow service and local requests out.
//!
//! Per synced shadow we keep what both sides last agreed on (`Agreed`: the
//! state and the cloud's version then), durable with the shadows. The local
//! document keeps its own version; the cloud's is tracked apart.
//!
//! - A local change (anyone's: devices, operators, functions) is sent up as
//!   the difference from the agreed state (`null` for keys gone), with the
//!   cloud version it was made against, so a cloud change in between is
//!   caught (409) instead of overwritten.
//! - A cloud change (a `documents` or `delete/accepted` that is not ours),
//!   every (re)connection, and a 409 make us read the cloud shadow (`get`),
//!   then reconcile: a three-way merge of agreed, local and cloud, key by
//!   key (`merge3`). What the merge takes from the cloud is applied
//!   locally; what it keeps from local is sent up.
//!
//! The reconciliation rule, for edits made on both sides since they last
//! agreed: a key changed on one side only takes that side's value; a key
//! changed on both sides to different values takes the **local** value in
//! `reported` (the device next to the core reports what is) and the
//! **cloud** value in `desired` (applications in the cloud ask for
//! things); objects changed on both sides are merged key by key; a change
//! beats a deletion.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use verdant_proto::shadow::v1::SyncState;

use crate::document::Shadow;
use crate::store::Key;

/// Our requests' client tokens start with this; answers with such a token
/// that we no longer wait for (from before a restart) are ignored.
pub const TOKEN_PREFIX: &str = "verdant-sync-";
/// A request the cloud has not answered by then is given up, and the cloud
/// shadow read again.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// After a refusal other than a conflict, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The `desired` and `reported` sections of a shadow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sides {
    pub desired: Map<String, Value>,
    pub reported: Map<String, Value>,
}

impl Sides {
    pub fn of(s: &Shadow) -> Sides {
        Sides {
            desired: s.desired.clone().unwrap_or_default(),
            reported: s.reported.clone().unwrap_or_default(),
        }
    }

    /// Reads `{"desired": {...}, "reported": {...}}` (missing: empty).
    pub fn from_json(state: &Value) -> Sides {
        let section = |k| {
            state
                .get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        Sides {
            desired: section("desired"),
            reported: section("reported"),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "desired": self.desired, "reported": self.reported })
    }

    pub fn is_empty(&self) -> bool {
        self.desired.is_empty() && self.reported.is_empty()
    }
}

/// What both sides last agreed on, kept durable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreed {
    /// `None`: no shadow on either side, or never synced.
    pub base: Option<Sides>,
    /// The cloud shadow's version then; 0: the cloud had none.
    pub cloud_version: u64,
}

#[derive(Debug, Clone)]
enum Sent {
    Get,
    /// The local state the update brings the cloud to.
    Update(Sides),
    Delete,
}

#[derive(Debug)]
struct InFlight {
    token: String,
    sent: Sent,
    at: Instant,
}

#[derive(Debug, Default)]
struct Entry {
    agreed: Agreed,
    /// The cloud's state was read since the last (re)connection and
    /// nothing foreign changed it since.
    known: bool,
    in_flight: Option<InFlight>,
    /// The local state an update was refused for (not a conflict): not
    /// sent again until it changes.
    refused: Option<Sides>,
    retry_at: Option<Instant>,
}

/// What the sync asks the shadow service to do.
#[derive(Debug, Default)]
pub struct Actions {
    /// Requests to the cloud shadow service: (topic, payload).
    pub cloud: Vec<(String, Bytes)>,
    /// Local requests that apply the cloud's side: (topic, payload).
    pub local: Vec<(String, Bytes)>,
    /// Agreed states to make durable, with the local requests.
    pub agreed: Vec<(Key, Agreed)>,
}

/// The sync state of every synced shadow.
#[derive(Debug, Default)]
pub struct Sync {
    things: HashSet<String>,
    connected: bool,
    entries: HashMap<Key, Entry>,
    next_token: u64,
}

/// `$aws/things/<thing>/shadow[/name/<name>]`.
pub fn prefix((thing, name): &Key) -> String {
    if name.is_empty() {
        format!("$aws/things/{thing}/shadow")
    } else {
        format!("$aws/things/{thing}/shadow/name/{name}")
    }
}

/// The shadow, operation and outcome of an answer topic
/// (`.../<op>/accepted|rejected`, `.../update/documents`).
fn answer_topic(topic: &str) -> Option<(Key, &str, &str)> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once("/shadow/")?;
    let (name, rest) = match rest.strip_prefix("name/") {
        Some(named) => named.split_once('/')?,
        None => ("", rest),
    };
    let (op, outcome) = rest.split_once('/')?;
    Some(((thing.to_string(), name.to_string()), op, outcome))
}

impl Sync {
    /// Restores what was agreed before a restart.
    pub fn new(agreed: HashMap<Key, Agreed>) -> Sync {
        Sync {
            entries: agreed
                .into_iter()
                .map(|(k, agreed)| {
                    (
                        k,
                        Entry {
                            agreed,
                            ..Entry::default()
                        },
                    )
                })
                .collect(),
            ..Sync::default()
        }
    }

    /// Where `key`'s sync stands, for operators.
    pub fn state(&self, key: &Key, docs: &HashMap<Key, Shadow>) -> SyncState {
        let e = self.entries.get(key);
        let awaiting = match e.and_then(|e| e.in_flight.as_ref()).map(|f| &f.sent) {
            None => "",
            Some(Sent::Get) => "get",
            Some(Sent::Update(_)) => "update",
            Some(Sent::Delete) => "delete",
        };
        let base = e.and_then(|e| e.agreed.base.as_ref());
        SyncState {
            synced: self.things.contains(&key.0),
            connected: self.connected,
            cloud_version: e.map_or(0, |e| e.agreed.cloud_version),
            in_sync: awaiting.is_empty() && docs.get(key).map(Sides::of).as_ref() == base,
            awaiting: awaiting.into(),
        }
    }

    /// The group's synced things: shadows of newly synced ones are read
    /// from the cloud and reconciled.
    pub fn set_things(&mut self, things: Vec<String>, docs: &HashMap<Key, Shadow>) -> Actions {
        let things: HashSet<String> = things.into_iter().collect();
        let added: Vec<String> = things.difference(&self.things).cloned().collect();
        self.things = things;
        if !added.is_empty() {
            tracing::info!(things = ?added, "shadows of these things are synced with the cloud");
        }
        for ((t, _), e) in &mut self.entries {
            if added.contains(t) {
                e.known = false;
            }
        }
        let keys = self.keys_of(&added, docs);
        self.step_all(keys, docs)
    }

    /// The cloud connection came up (every synced shadow is read again and
    /// reconciled: what changed on either side while apart meets here) or
    /// went down (answers awaited are given up).
    pub fn set_connected(&mut self, up: bool, docs: &HashMap<Key, Shadow>) -> Actions {
        self.connected = up;
        for e in self.entries.values_mut() {
            e.in_flight = None;
            e.known = false;
            e.retry_at = None;
        }
        if !up {
            return Actions::default();
        }
        let things: Vec<String> = self.things.iter().cloned().collect();
        let keys = self.keys_of(&things, docs);
        self.step_all(keys, docs)
    }

    /// Local shadows changed durably: synced ones go up.
    pub fn changed(&mut self, keys: &[Key], docs: &HashMap<Key, Shadow>) -> Actions {
        let keys = keys
            .iter()
            .filter(|(t, _)| self.things.contains(t))
            .cloned()
            .collect();
        self.step_all(keys, docs)
    }

    /// Gives up answers awaited too long and retries after refusals.
    pub fn tick(&mut self, docs: &HashMap<Key, Shadow>) -> Actions {
        let now = Instant::now();
        let mut due = Vec::new();
        for (k, e) in &mut self.entries {
            if let Some(f) = &e.in_flight
                && now.duration_since(f.at) > ANSWER_WITHIN
            {
                tracing::warn!(thing = %k.0, shadow = %k.1, "the cloud did not answer a shadow sync request; reading the cloud shadow again");
                e.in_flight = None;
                e.known = false;
                due.push(k.clone());
            } else if e.retry_at.is_some_and(|t| now >= t) {
                due.push(k.clone());
            }
        }
        self.step_all(due, docs)
    }

    /// An answer of the cloud shadow service for a synced thing.
    pub fn answer(&mut self, topic: &str, payload: &[u8], docs: &HashMap<Key, Shadow>) -> Actions {
        let mut actions = Actions::default();
        let Some((key, op, outcome)) = answer_topic(topic) else {
            return actions;
        };
        if !self.things.contains(&key.0) {
            return actions;
        }
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!(topic, "unreadable answer from the cloud shadow service");
            return actions;
        };
        let token = v.get("clientToken").and_then(Value::as_str).unwrap_or("");
        let e = self.entries.entry(key.clone()).or_default();
        // `documents` follow an answer; only `accepted`/`rejected` answer.
        let ours = outcome != "documents" && e.in_flight.as_ref().is_some_and(|f| f.token == token);
        if !ours {
            // Someone else changed the cloud shadow: read it again (once
            // what we await is answered).
            let foreign = !token.starts_with(TOKEN_PREFIX);
            let changed = match (op, outcome) {
                ("update", "documents") => {
                    v.pointer("/current/version").and_then(Value::as_u64)
                        != Some(e.agreed.cloud_version)
                }
                ("delete", "accepted") => true,
                _ => false,
            };
            if foreign && changed {
                e.known = false;
                self.step(&key, docs, &mut actions);
            }
            return actions;
        }
        let sent = e.in_flight.take().map(|f| f.sent);
        let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
        let version = v.get("version").and_then(Value::as_u64).unwrap_or(0);
        match (sent, outcome) {
            (Some(Sent::Get), "accepted") => {
                let cloud = Sides::from_json(v.get("state").unwrap_or(&Value::Null));
                return self.reconcile(&key, Some(cloud), version, docs);
            }
            (Some(Sent::Get), "rejected") if code == 404 => {
                return self.reconcile(&key, None, 0, docs);
            }
            (Some(Sent::Update(local)), "accepted") => {
                e.agreed = Agreed {
                    base: Some(local),
                    cloud_version: version,
                };
                actions.agreed.push((key.clone(), e.agreed.clone()));
            }
            (Some(Sent::Update(_)), "rejected") if code == 409 => {
                tracing::info!(thing = %key.0, shadow = %key.1, "the cloud shadow changed meanwhile: reconciling");
                e.known = false;
            }
            (Some(Sent::Update(local)), "rejected") => {
                let reason = v.get("message").and_then(Value::as_str).unwrap_or("");
                tracing::error!(
                    thing = %key.0, shadow = %key.1, code, reason,
                    "the cloud refused a shadow update; it is sent again once the shadow changes"
                );
                e.refused = Some(local);
            }
            (Some(Sent::Delete), "rejected") if code != 404 => {
                tracing::warn!(thing = %key.0, shadow = %key.1, code, "the cloud refused a shadow delete; retrying");
                e.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
            // Deleted, or there was nothing to delete.
            (Some(Sent::Delete), _) => {
                e.agreed = Agreed::default();
                actions.agreed.push((key.clone(), e.agreed.clone()));
            }
            (Some(Sent::Get), _) => {
                tracing::warn!(thing = %key.0, shadow = %key.1, code, "the cloud refused a shadow read; retrying");
                e.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
            (Some(Sent::Update(_)) | None, _) => {}
        }
        self.step(&key, docs, &mut actions);
        actions
    }

    /// The cloud shadow is `cloud` at `version`: merge with what was agreed
    /// and what is local; apply the cloud's part locally (then
    /// [`Sync::changed`] sends the local part up).
    fn reconcile(
        &mut self,
        key: &Key,
        cloud: Option<Sides>,
        version: u64,
        docs: &HashMap<Key, Shadow>,
    ) -> Actions {
        let mut actions = Actions::default();
        let local = docs.get(key).map(Sides::of);
        let e = self.entries.entry(key.clone()).or_default();
        let merged = merge_shadows(e.agreed.base.as_ref(), local.as_ref(), cloud.as_ref());
        e.agreed = Agreed {
            base: cloud,
            cloud_version: version,
        };
        e.known = true;
        actions.agreed.push((key.clone(), e.agreed.clone()));
        if merged == local {
            self.step(key, docs, &mut actions);
            return actions;
        }
        let prefix = prefix(key);
        match merged {
            None => actions
                .local
                .push((format!("{prefix}/delete"), Bytes::from_static(b"{}"))),
            Some(m) => {
                let from = local.unwrap_or_default();
                let body = json!({ "state": diff_sides(&from, &m) });
                actions
                    .local
                    .push((format!("{prefix}/update"), Bytes::from(body.to_string())));
            }
        }
        actions
    }

    fn keys_of(&self, things: &[String], docs: &HashMap<Key, Shadow>) -> Vec<Key> {
        let mut keys: HashSet<Key> = things.iter().map(|t| (t.clone(), String::new())).collect();
        keys.extend(
            docs.keys()
                .chain(self.entries.keys())
                .filter(|(t, _)| things.contains(t))
                .cloned(),
        );
        keys.into_iter().collect()
    }

    fn step_all(&mut self, keys: Vec<Key>, docs: &HashMap<Key, Shadow>) -> Actions {
        let mut actions = Actions::default();
        for k in keys {
            self.step(&k, docs, &mut actions);
        }
        actions
    }

    /// Sends what `key` needs next, if nothing is awaited for it.
    fn step(&mut self, key: &Key, docs: &HashMap<Key, Shadow>, actions: &mut Actions) {
        if !self.connected || !self.things.contains(&key.0) {
            return;
        }
        let e = self.entries.entry(key.clone()).or_default();
        if e.in_flight.is_some() {
            return;
        }
        if let Some(t) = e.retry_at {
            if Instant::now() < t {
                return;
            }
            e.retry_at = None;
        }
        let prefix = prefix(key);
        let (topic, mut body, sent) = if e.known {
            let local = docs.get(key).map(Sides::of);
            if local == e.agreed.base || (local.is_some() && e.refused == local) {
                return;
            }
            e.refused = None;
            match local {
                None if e.agreed.cloud_version == 0 => {
                    e.agreed = Agreed::default();
                    actions.agreed.push((key.clone(), e.agreed.clone()));
                    return;
                }
                None => (format!("{prefix}/delete"), json!({}), Sent::Delete),
                Some(l) => {
                    let from = e.agreed.base.clone().unwrap_or_default();
                    let mut body = json!({ "state": diff_sides(&from, &l) });
                    if e.agreed.cloud_version > 0 {
                        body["version"] = e.agreed.cloud_version.into();
                    }
                    (format!("{prefix}/update"), body, Sent::Update(l))
                }
            }
        } else {
            (format!("{prefix}/get"), json!({}), Sent::Get)
        };
        self.next_token += 1;
        let token = format!("{TOKEN_PREFIX}{}", self.next_token);
        body["clientToken"] = token.clone().into();
        e.in_flight = Some(InFlight {
            token,
            sent,
            at: Instant::now(),
        });
        actions.cloud.push((topic, Bytes::from(body.to_string())));
    }
}

/// The three-way merge of a whole shadow (`None`: no shadow).
pub fn merge_shadows(
    base: Option<&Sides>,
    local: Option<&Sides>,
    cloud: Option<&Sides>,
) -> Option<Sides> {
    if local == cloud {
        return local.cloned();
    }
    let empty = Sides::default();
    let (b, l, c) = (
        base.unwrap_or(&empty),
        local.unwrap_or(&empty),
        cloud.unwrap_or(&empty),
    );
    let merged = Sides {
        desired: merge3(&b.desired, &l.desired, &c.desired, false),
        reported: merge3(&b.reported, &l.reported, &c.reported, true),
    };
    // An empty result exists if both sides have the shadow, or one side
    // made it and the other never had it.
    let exists = !merged.is_empty()
        || match (local.is_some(), cloud.is_some()) {
            (true, true) => true,
            (false, false) => false,
            _ => base.is_none(),
        };
    exists.then_some(merged)
}

/// Merges one section key by key (see the module's rule); `prefer_local`
/// decides keys both sides changed differently.
pub fn merge3(
    base: &Map<String, Value>,
    local: &Map<String, Value>,
    cloud: &Map<String, Value>,
    prefer_local: bool,
) -> Map<String, Value> {
    let mut keys: Vec<&String> = base
        .keys()
        .chain(local.keys())
        .chain(cloud.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        let (b, l, c) = (base.get(k), local.get(k), cloud.get(k));
        let v = if l == c || c == b {
            l.cloned()
        } else if l == b {
            c.cloned()
        } else {
            match (l, c) {
                (Some(Value::Object(lo)), Some(Value::Object(co))) => {
                    let empty = Map::new();
                    let bo = b.and_then(Value::as_object).unwrap_or(&empty);
                    Some(Value::Object(merge3(bo, lo, co, prefer_local)))
                }
                (None, x) | (x, None) => x.cloned(),
                (Some(lv), Some(cv)) => Some(if prefer_local { lv } else { cv }.clone()),
            }
        };
        if let Some(v) = v {
            out.insert(k.clone(), v);
        }
    }
    out
}

/// What turns `from` into `to` as an update's section: changed keys with
/// their values (objects key by key), gone keys as `null`.
pub fn diff(from: &Map<String, Value>, to: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in to {
        match (from.get(k), v) {
            (Some(f), v) if f == v => {}
            (Some(Value::Object(fo)), Value::Object(to)) => {
                out.insert(k.clone(), Value::Object(diff(fo, to)));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

/// An update's `state` that turns `from` into `to`.
pub fn diff_sides(from: &Sides, to: &Sides) -> Value {
    let mut state = Map::new();
    for (section, f, t) in [
        ("desired", &from.desired, &to.desired),
        ("reported", &from.reported, &to.reported),
    ] {
        let d = diff(f, t);
        if !d.is_empty() {
            state.insert(section.into(), Value::Object(d));
        }
    }
    Value::Object(state)
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
