//! The lambda-runner's router link (endpoint `lambda-runner`): messages
//! whose targets are functions come down and become work items (a QoS 1
//! message is acknowledged once every target queued it, refused if a
//! target could not take it: the router then counts and logs the loss and
//! acknowledges the publisher all the same); what functions publish goes
//! up (`ipc`).

use std::sync::{Arc, Mutex};

use base64::Engine;
use verdant_link::{Handler, Up};
use verdant_proto::router::v1 as pb;

use crate::work::Runner;

pub struct Functions {
    pub runner: Arc<Mutex<Runner>>,
    /// One log line per function per interval for messages it could not
    /// take (a function that cannot run refuses every one).
    pub refusals: verdant_common::telemetry::Throttle,
}

/// How often a function's refusals are logged at most.
pub const REFUSALS_LOGGED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The client context a routed message's work item carries: the topic as
/// `custom.subject` (what functions read as `context.client_context.custom`).
fn client_context(topic: &str) -> String {
    let v = serde_json::json!({ "custom": { "subject": topic } });
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

impl Handler for Functions {
    async fn down(&mut self, kind: pb::link_down::Kind, up: &Up<'_>) -> Result<(), String> {
        let pb::link_down::Kind::Messages(batch) = kind else {
            return Ok(());
        };
        let n = u32::try_from(batch.messages.len()).unwrap_or(u32::MAX);
        let mut ids = Vec::new();
        let mut refused = Vec::new();
        {
            let mut runner = self.runner.lock().expect("runner lock");
            for m in batch.messages {
                let context = client_context(&m.topic);
                let mut taken = true;
                for target in &m.targets {
                    if let Err(e) = runner.submit(target, m.payload.clone(), context.clone(), false)
                    {
                        if let Some(n) = self.refusals.hit(target, std::time::Instant::now()) {
                            tracing::warn!(
                                topic = %verdant_common::telemetry::bounded(&m.topic),
                                messages = n,
                                "not delivered: {e} (logged at most every {} s per function)",
                                REFUSALS_LOGGED_EVERY.as_secs()
                            );
                        }
                        taken = false;
                    }
                }
                if m.qos > 0 {
                    if taken {
                        ids.push(m.id);
                    } else {
                        refused.push(m.id);
                    }
                }
            }
        }
        let sent = (ids.is_empty() && refused.is_empty()
            || up.send(pb::link_up::Kind::Acks(pb::Acks { ids, refused })))
            && up.done(Vec::new(), n);
        if sent {
            Ok(())
        } else {
            Err("the stream closed".into())
        }
    }
}
