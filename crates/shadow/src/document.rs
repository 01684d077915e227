//! AWS IoT device shadow semantics (docs/shadows.md, "Semantics"), with no I/O: a
//! request's payload and the current document in, the new document and the
//! reply bodies out. Every reply echoes the request's `clientToken`.

use serde_json::{Map, Value, json};

/// A shadow document as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shadow {
    pub desired: Option<Map<String, Value>>,
    pub reported: Option<Map<String, Value>>,
    /// Mirrors `desired` with `{"timestamp": T}` leaves.
    pub desired_metadata: Option<Map<String, Value>>,
    pub reported_metadata: Option<Map<String, Value>>,
    pub version: u64,
}

/// Limits from `[shadow]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of a request payload (AWS: 8 KiB for a classic shadow).
    pub max_document_bytes: usize,
    /// Requests for one thing in one batch; past it 429.
    pub max_in_flight_per_thing: usize,
}

/// The nesting AWS allows in `state`.
const MAX_DEPTH: usize = 6;

/// A refusal, as `/rejected` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub message: String,
}

pub fn reject(code: u16, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// A parsed request: its body and the client token to echo.
#[derive(Debug)]
pub struct Request {
    pub body: Map<String, Value>,
    pub client_token: Option<String>,
}

/// Parses a request payload (get and delete may be empty). A refusal
/// comes with the client token to echo, recovered from the payload
/// however far it could be read ([`crate::token::recover`]).
pub fn parse(payload: &[u8], limits: Limits) -> Result<Request, (Rejection, Option<String>)> {
    let refuse = |r: Rejection| Err((r, crate::token::recover(payload)));
    if payload.len() > limits.max_document_bytes {
        return refuse(reject(413, "The payload exceeds the maximum size allowed"));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Request {
            body: Map::new(),
            client_token: None,
        });
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(payload) else {
        return refuse(reject(400, "Invalid JSON"));
    };
    let client_token = match body.get("clientToken") {
        None => None,
        Some(Value::String(t)) if t.len() <= 64 => Some(t.clone()),
        // Echoed all the same when it is a string, so the caller can
        // match the rejection to its request.
        Some(_) => return refuse(reject(400, "Invalid clientToken")),
    };
    Ok(Request { body, client_token })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Sets `update`'s keys in `target` (a `null` removes the key), and the
/// same keys' timestamps in `metadata`.
fn merge(
    target: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    update: &Map<String, Value>,
    now: u64,
) {
    for (k, v) in update {
        match v {
            Value::Null => {
                target.remove(k);
                metadata.remove(k);
            }
            Value::Object(inner) => {
                let t = target
                    .entry(k.clone())
                    .and_modify(|e| {
                        if !e.is_object() {
                            *e = Value::Object(Map::new());
                        }
                    })
                    .or_insert_with(|| Value::Object(Map::new()));
                let m = metadata
                    .entry(k.clone())
                    .and_modify(|e| {
                        if !e.is_object() || e.get("timestamp").is_some() {
                            *e = Value::Object(Map::new());
                        }
                    })
                    .or_insert_with(|| Value::Object(Map::new()));
                if let (Value::Object(t), Value::Object(m)) = (t, m) {
                    merge(t, m, inner, now);
                    // An object whose keys were all removed goes too.
                    if t.is_empty() {
                        target.remove(k);
                        metadata.remove(k);
                    }
                }
            }
            _ => {
                target.insert(k.clone(), v.clone());
                metadata.insert(k.clone(), json!({ "timestamp": now }));
            }
        }
    }
}

/// Metadata for the keys of a request's state section.
fn metadata_of(update: &Map<String, Value>, now: u64) -> Map<String, Value> {
    update
        .iter()
        .map(|(k, v)| {
            let m = match v {
                Value::Object(inner) => Value::Object(metadata_of(inner, now)),
                _ => json!({ "timestamp": now }),
            };
            (k.clone(), m)
        })
        .collect()
}

/// The desired keys whose value differs from reported, recursively.
fn delta(
    desired: &Map<String, Value>,
    reported: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, d) in desired {
        let r = reported.and_then(|r| r.get(k));
        match (d, r) {
            (Value::Object(d), Some(Value::Object(r))) => {
                let inner = delta(d, Some(r));
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            (d, Some(r)) if d == r => {}
            (d, _) => {
                out.insert(k.clone(), d.clone());
            }
        }
    }
    out
}

/// The part of `metadata` whose keys are in `keys`.
fn restrict(metadata: &Map<String, Value>, keys: &Map<String, Value>) -> Map<String, Value> {
    keys.iter()
        .filter_map(|(k, v)| {
            let m = metadata.get(k)?;
            Some(match (v, m) {
                (Value::Object(inner), Value::Object(mi)) if m.get("timestamp").is_none() => {
                    (k.clone(), Value::Object(restrict(mi, inner)))
                }
                _ => (k.clone(), m.clone()),
            })
        })
        .collect()
}

impl Shadow {
    fn state(&self) -> Value {
        let mut s = Map::new();
        if let Some(d) = &self.desired {
            s.insert("desired".into(), Value::Object(d.clone()));
        }
        if let Some(r) = &self.reported {
            s.insert("reported".into(), Value::Object(r.clone()));
        }
        Value::Object(s)
    }

    fn metadata(&self) -> Value {
        let mut s = Map::new();
        if let Some(d) = &self.desired_metadata {
            s.insert("desired".into(), Value::Object(d.clone()));
        }
        if let Some(r) = &self.reported_metadata {
            s.insert("reported".into(), Value::Object(r.clone()));
        }
        Value::Object(s)
    }

    /// The delta and its metadata, if desired differs from reported.
    fn delta(&self) -> Option<(Map<String, Value>, Map<String, Value>)> {
        let d = delta(self.desired.as_ref()?, self.reported.as_ref());
        if d.is_empty() {
            return None;
        }
        let m = restrict(self.desired_metadata.as_ref()?, &d);
        Some((d, m))
    }

    /// The stored form (and what `documents` carries).
    pub fn to_json(&self) -> Value {
        json!({ "state": self.state(), "metadata": self.metadata(), "version": self.version })
    }

    /// Reads the stored form back.
    pub fn from_json(v: &Value) -> Option<Shadow> {
        let obj = |v: Option<&Value>| v.and_then(Value::as_object).cloned();
        Some(Shadow {
            desired: obj(v.pointer("/state/desired")),
            reported: obj(v.pointer("/state/reported")),
            desired_metadata: obj(v.pointer("/metadata/desired")),
            reported_metadata: obj(v.pointer("/metadata/reported")),
            version: v.get("version")?.as_u64()?,
        })
    }
}

fn with_token(mut v: Value, token: Option<&String>) -> Value {
    if let (Some(t), Value::Object(m)) = (token, &mut v) {
        m.insert("clientToken".into(), Value::String(t.clone()));
    }
    v
}

/// A `/rejected` body.
pub fn rejected(r: &Rejection, token: Option<&String>, now: u64) -> Value {
    with_token(
        json!({ "code": r.code, "message": r.message, "timestamp": now }),
        token,
    )
}

/// What an accepted update publishes.
#[derive(Debug)]
pub struct Updated {
    pub shadow: Shadow,
    pub accepted: Value,
    pub documents: Value,
    /// `/update/delta`, when desired and reported differ after it.
    pub delta: Option<Value>,
}

/// Applies an update request to `current` (`None`: no shadow yet).
pub fn update(current: Option<&Shadow>, request: &Request, now: u64) -> Result<Updated, Rejection> {
    let state = match request.body.get("state") {
        None => return Err(reject(400, "Missing required node: state")),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(reject(400, "State node must be an object")),
    };
    for (k, v) in state {
        match (k.as_str(), v) {
            ("desired" | "reported", Value::Object(_) | Value::Null) => {}
            ("desired", _) => return Err(reject(400, "Desired node must be an object")),
            ("reported", _) => return Err(reject(400, "Reported node must be an object")),
            _ => return Err(reject(400, "State contains an invalid node")),
        }
    }
    if depth(&Value::Object(state.clone())) > MAX_DEPTH + 1 {
        return Err(reject(
            400,
            "JSON contains too many levels of nesting; maximum is 6",
        ));
    }
    let current_version = current.map_or(0, |s| s.version);
    match request.body.get("version") {
        None => {}
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v == current_version => {}
            Some(_) => return Err(reject(409, "Version conflict")),
            None => return Err(reject(400, "Invalid version")),
        },
        Some(_) => return Err(reject(400, "Invalid version")),
    }
    let previous = current.cloned().unwrap_or_default();
    let mut next = previous.clone();
    for (section, doc, meta) in [
        ("desired", &mut next.desired, &mut next.desired_metadata),
        ("reported", &mut next.reported, &mut next.reported_metadata),
    ] {
        match state.get(section) {
            None => {}
            Some(Value::Null) => {
                *doc = None;
                *meta = None;
            }
            Some(Value::Object(u)) => {
                let d = doc.get_or_insert_with(Map::new);
                let m = meta.get_or_insert_with(Map::new);
                merge(d, m, u, now);
                if d.is_empty() {
                    *doc = None;
                    *meta = None;
                }
            }
            Some(_) => unreachable!("checked above"),
        }
    }
    next.version = current_version + 1;
    let mut request_metadata = Map::new();
    for section in ["desired", "reported"] {
        if let Some(Value::Object(u)) = state.get(section) {
            request_metadata.insert(section.into(), Value::Object(metadata_of(u, now)));
        }
    }
    let token = request.client_token.as_ref();
    let accepted = with_token(
        json!({
            "state": Value::Object(state.clone()),
            "metadata": Value::Object(request_metadata),
            "version": next.version,
            "timestamp": now,
        }),
        token,
    );
    let documents = with_token(
        json!({
            "previous": if current.is_some() { previous.to_json() } else { Value::Null },
            "current": next.to_json(),
            "timestamp": now,
        }),
        token,
    );
    let delta = next.delta().map(|(d, m)| {
        with_token(
            json!({ "state": d, "metadata": m, "version": next.version, "timestamp": now }),
            token,
        )
    });
    Ok(Updated {
        shadow: next,
        accepted,
        documents,
        delta,
    })
}

/// `/get/accepted` for `current`.
pub fn get(
    current: Option<&Shadow>,
    name: &str,
    request: &Request,
    now: u64,
) -> Result<Value, Rejection> {
    let Some(s) = current else {
        return Err(not_found(name));
    };
    let mut state = s.state();
    // The delta's metadata is desired's: AWS's get does not repeat it.
    if let Some((d, _)) = s.delta() {
        state["delta"] = Value::Object(d);
    }
    Ok(with_token(
        json!({ "state": state, "metadata": s.metadata(), "version": s.version, "timestamp": now }),
        request.client_token.as_ref(),
    ))
}

/// `/delete/accepted` for `current`, which goes.
pub fn delete(
    current: Option<&Shadow>,
    name: &str,
    request: &Request,
    now: u64,
) -> Result<Value, Rejection> {
    let Some(s) = current else {
        return Err(not_found(name));
    };
    Ok(with_token(
        json!({ "version": s.version, "timestamp": now }),
        request.client_token.as_ref(),
    ))
}

fn not_found(name: &str) -> Rejection {
    reject(404, format!("No shadow exists with name: '{name}'"))
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;
