//! Secret values asked of the cloud, over the core's cloud connection
//! (the secrets daemon's router link, endpoint `secrets`). The protocol,
//! documented in docs/secrets.md, is Secrets Manager's `GetSecretValue`
//! carried on MQTT:
//!
//! - the core asks on `verdant/things/<core thing>/secrets/get` (QoS 1):
//!   `{"clientToken", "SecretId": <ARN>, "VersionStage": <label>}`;
//! - the cloud answers on `…/secrets/get/accepted` with `GetSecretValue`'s
//!   response (`ARN, Name, VersionId, SecretString | SecretBinary
//!   (base64), VersionStages, CreatedDate` in seconds since the epoch)
//!   and the `clientToken`, or on `…/secrets/get/rejected` with
//!   `{"clientToken", "code", "message"}`.
//!
//! The router sends the requests to the cloud only, and the answers from
//! the cloud only here; no trace shows their payloads. Nothing here logs a
//! value, or a payload that might hold one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use verdant_common::paths::Layout;
use verdant_common::shutdown::CancellationToken;
use verdant_link::{Handler, Link, ToRouter, Up};
use verdant_proto::router::v1 as pb;

/// Answers the router may send before more credit is granted.
const CREDIT: u32 = 16;

/// A value from the cloud.
pub struct Fetched {
    pub version_id: String,
    pub created_ms: i64,
    pub binary: bool,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("version_id", &self.version_id)
            .field("value", &"(not shown)")
            .finish_non_exhaustive()
    }
}

/// Why a value did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the cloud connection is down")]
    Offline,
    #[error("the cloud did not answer within {0} s")]
    Timeout(u64),
    #[error("the cloud refused: {code}: {message}")]
    Rejected { code: String, message: String },
    #[error("the cloud's answer is not usable: {0}")]
    Malformed(String),
    #[error("the secrets daemon is stopping")]
    Stopping,
}

/// Requests waiting for their answer, by `clientToken`.
type Waiting = Arc<Mutex<HashMap<String, Asked>>>;

/// A request waiting: what it asked for, and who waits.
struct Asked {
    arn: String,
    label: String,
    tx: oneshot::Sender<Result<Fetched, FetchError>>,
}

/// The cloud, as the secrets daemon sees it.
pub struct Cloud {
    up: mpsc::UnboundedSender<ToRouter>,
    connected: watch::Receiver<bool>,
    waiting: Waiting,
    topic: String,
    next: std::sync::atomic::AtomicU64,
    /// Tells tokens of this start from those of another.
    start: u128,
}

/// Where the core asks the cloud for a value.
pub fn topic(core: &str) -> String {
    format!("verdant/things/{core}/secrets/get")
}

impl Cloud {
    /// Opens the router link (kept up until `shutdown`).
    pub fn start(layout: &Layout, core: &str, shutdown: CancellationToken) -> Cloud {
        let (up, mut up_rx) = mpsc::unbounded_channel::<ToRouter>();
        let (connected_tx, connected) = watch::channel(false);
        let waiting = Waiting::default();
        let mut handler = Answers {
            cloud: connected_tx,
            waiting: waiting.clone(),
        };
        let socket = layout.socket("router");
        tokio::spawn(async move {
            let link = Link {
                socket: &socket,
                endpoint: "secrets",
                credit: CREDIT,
                max_waiting: 64,
            };
            link.run(&mut handler, &mut up_rx, shutdown).await;
        });
        Cloud {
            up,
            connected,
            waiting,
            topic: topic(core),
            next: std::sync::atomic::AtomicU64::new(1),
            start: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        }
    }

    /// Whether the cloud connection is up.
    pub fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// The value labelled `label` of the secret `arn`, as the cloud has it.
    pub async fn fetch(
        &self,
        arn: &str,
        label: &str,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        if !self.connected() {
            return Err(FetchError::Offline);
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("verdant-{:x}-{n}", self.start);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting lock").insert(
            token.clone(),
            Asked {
                arn: arn.into(),
                label: label.into(),
                tx,
            },
        );
        let body = serde_json::json!({
            "clientToken": token, "SecretId": arn, "VersionStage": label,
        });
        let message = pb::Message {
            source: crate::SERVICE.into(),
            topic: self.topic.clone(),
            payload: body.to_string().into_bytes().into(),
            qos: 1,
            ..pb::Message::default()
        };
        let answer = if self
            .up
            .send(ToRouter {
                message,
                outcome: None,
            })
            .is_err()
        {
            Err(FetchError::Stopping)
        } else {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(FetchError::Stopping),
                Err(_) => Err(FetchError::Timeout(timeout.as_secs())),
            }
        };
        self.waiting.lock().expect("waiting lock").remove(&token);
        let fetched = answer?;
        tracing::info!(
            secret = arn,
            label,
            version = fetched.version_id,
            size = fetched.value.len(),
            "value fetched from the cloud"
        );
        Ok(fetched)
    }
}

/// `GetSecretValue`'s response, as the cloud sends it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Accepted {
    #[serde(rename = "ARN")]
    arn: String,
    version_id: String,
    secret_string: Option<String>,
    secret_binary: Option<String>,
    #[serde(default)]
    version_stages: Vec<String>,
    created_date: Option<f64>,
}

#[derive(Deserialize)]
struct Rejected {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    #[serde(rename = "clientToken")]
    client_token: String,
}

/// What an answer says, for the request (`arn`, `label`) it answers.
fn read(topic: &str, payload: &[u8], arn: &str, label: &str) -> Result<Fetched, FetchError> {
    if topic.ends_with("/rejected") {
        let r: Rejected = serde_json::from_slice(payload)
            .map_err(|_| FetchError::Malformed("a rejection that is not JSON".into()))?;
        return Err(FetchError::Rejected {
            code: r.code.unwrap_or_else(|| "Unknown".into()),
            message: r.message.unwrap_or_default(),
        });
    }
    // Only where it went wrong: serde_json's message may quote the value.
    let a: Accepted = serde_json::from_slice(payload).map_err(|e| {
        FetchError::Malformed(format!(
            "not GetSecretValue's response (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if a.arn != arn {
        return Err(FetchError::Malformed(format!(
            "it answers for {}, not {arn}",
            a.arn
        )));
    }
    if !a.version_stages.is_empty() && !a.version_stages.iter().any(|s| s == label) {
        return Err(FetchError::Malformed(format!(
            "its version is not labelled {label}"
        )));
    }
    let (value, binary) = match (a.secret_string, a.secret_binary) {
        (Some(s), None) => (s.into_bytes(), false),
        (None, Some(b)) => (
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| FetchError::Malformed("SecretBinary is not base64".into()))?,
            true,
        ),
        _ => {
            return Err(FetchError::Malformed(
                "it needs one of SecretString and SecretBinary".into(),
            ));
        }
    };
    Ok(Fetched {
        version_id: a.version_id,
        created_ms: a.created_date.map_or_else(now_ms, created_ms),
        binary,
        value,
    })
}

/// Secrets Manager gives seconds (with a fraction); milliseconds are taken too.
fn created_ms(date: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    if date > 1e11 {
        date as i64
    } else {
        (date * 1000.0) as i64
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Answers {
    cloud: watch::Sender<bool>,
    waiting: Waiting,
}

impl Answers {
    fn answer(&self, m: &pb::Message) {
        let Ok(Token { client_token }) = serde_json::from_slice(&m.payload) else {
            tracing::warn!(
                topic = m.topic,
                size = m.payload.len(),
                "an answer from the cloud without a clientToken; ignored"
            );
            return;
        };
        let Some(asked) = self
            .waiting
            .lock()
            .expect("waiting lock")
            .remove(&client_token)
        else {
            tracing::info!(
                topic = m.topic,
                client_token,
                "an answer no request waits for (late, or another start's); ignored"
            );
            return;
        };
        let _ = asked
            .tx
            .send(read(&m.topic, &m.payload, &asked.arn, &asked.label));
    }
}

impl Handler for Answers {
    async fn down(&mut self, kind: pb::link_down::Kind, up: &Up<'_>) -> Result<(), String> {
        match kind {
            pb::link_down::Kind::Cloud(c) => {
                self.cloud.send_replace(c.connected);
                Ok(())
            }
            pb::link_down::Kind::Messages(batch) => {
                for m in &batch.messages {
                    self.answer(m);
                }
                if up.took(&batch.messages) {
                    Ok(())
                } else {
                    Err("the stream closed".into())
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";

    #[test]
    fn get_secret_value_s_response_is_read_and_checked() {
        let ok = serde_json::json!({ "ARN": ARN, "Name": "db", "VersionId": "v-1",
            "SecretString": "s3cret", "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_700_000_000.5, "clientToken": "t" });
        let f = read("x/accepted", ok.to_string().as_bytes(), ARN, "AWSCURRENT").unwrap();
        assert_eq!(
            (
                f.version_id.as_str(),
                f.created_ms,
                f.binary,
                f.value.as_slice()
            ),
            ("v-1", 1_700_000_000_500, false, b"s3cret".as_slice())
        );
        assert!(!format!("{f:?}").contains("s3cret"));
        let binary = serde_json::json!({ "ARN": ARN, "VersionId": "v-2",
            "SecretBinary": "AAEC", "CreatedDate": 1_700_000_000_000_i64 });
        let f = read(
            "x/accepted",
            binary.to_string().as_bytes(),
            ARN,
            "AWSCURRENT",
        )
        .unwrap();
        assert_eq!(
            (f.binary, f.value, f.created_ms),
            (true, vec![0, 1, 2], 1_700_000_000_000)
        );
        let other = serde_json::json!({ "ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x",
            "VersionId": "v", "SecretString": "s3cret" });
        let e = read(
            "x/accepted",
            other.to_string().as_bytes(),
            ARN,
            "AWSCURRENT",
        )
        .unwrap_err();
        assert!(matches!(e, FetchError::Malformed(_)), "{e}");
        let label = serde_json::json!({ "ARN": ARN, "VersionId": "v", "SecretString": "s3cret",
            "VersionStages": ["AWSPREVIOUS"] });
        let e = read(
            "x/accepted",
            label.to_string().as_bytes(),
            ARN,
            "AWSCURRENT",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not labelled AWSCURRENT"), "{e}");
        let both = serde_json::json!({ "ARN": ARN, "VersionId": "v", "SecretString": "s3cret",
            "SecretBinary": "AA==" });
        assert!(read("x/accepted", both.to_string().as_bytes(), ARN, "AWSCURRENT").is_err());
        // A broken answer says where, never what.
        let e = read("x/accepted", b"{\"ARN\": \"s3cret", ARN, "AWSCURRENT").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let no = serde_json::json!({ "clientToken": "t", "code": "ResourceNotFoundException",
            "message": "no such secret" });
        assert_eq!(
            read("x/rejected", no.to_string().as_bytes(), ARN, "AWSCURRENT").unwrap_err(),
            FetchError::Rejected {
                code: "ResourceNotFoundException".into(),
                message: "no such secret".into()
            }
        );
    }
}
