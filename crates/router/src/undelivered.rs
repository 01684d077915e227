//! Messages a target could not take, and what the router does about it.
//!
//! A message reaches every target that can take it; a target that cannot
//! (its queue here is full, or its daemon refused the copy, e.g. a function
//! that cannot run or whose work queue is full) loses its copy, and the
//! publisher is acknowledged once the others have theirs. So one broken
//! target never holds a device's connection hostage. Such losses are
//! counted per endpoint, targets and reason (`ListRoutes`) and logged at
//! most once per [`LOG_EVERY`] for each, with how many since the last line.
//! Two refusals do reach the publisher: a function that asked for
//! all-or-error (`AllOrError`), and the cloud queue's (its `refuse-new`
//! policy, or a failed disk write), where the operator chose that a
//! device keeps what the cloud queue cannot hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often one endpoint, targets and reason is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a target lost its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The router's queue for the endpoint was full.
    QueueFull,
    /// The endpoint's daemon refused it.
    Refused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue full",
            Reason::Refused => "refused",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Reason::QueueFull => "the router's queue for it is full",
            Reason::Refused => "its daemon refused them (see its log)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    endpoint: &'static str,
    targets: String,
    reason: Reason,
}

#[derive(Debug, Default)]
struct Count {
    total: u64,
    /// Since the last log line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

/// One line of `ListRoutes`' undelivered counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeliveredView {
    pub endpoint: &'static str,
    pub targets: String,
    pub reason: &'static str,
    pub messages: u64,
}

/// The counts, and when each was last logged.
#[derive(Debug, Default)]
pub struct Undelivered {
    counts: BTreeMap<Key, Count>,
}

impl Undelivered {
    /// A copy for `targets` on `endpoint` was lost; logs if this key was
    /// not logged within [`LOG_EVERY`].
    pub fn count(
        &mut self,
        endpoint: &'static str,
        targets: &[String],
        reason: Reason,
        topic: &str,
        now: Instant,
    ) {
        let key = Key {
            endpoint,
            targets: targets.join(","),
            reason,
        };
        let c = self.counts.entry(key).or_default();
        c.total += 1;
        c.unlogged += 1;
        if c.last_logged
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            endpoint,
            targets = %targets.join(","),
            topic = %verdant_common::telemetry::bounded(topic),
            messages = c.unlogged,
            total = c.total,
            "messages not delivered to these targets: {}; their publishers are \
             acknowledged once the other targets have them (logged at most every {} s)",
            reason.explain(),
            LOG_EVERY.as_secs()
        );
        c.unlogged = 0;
        c.last_logged = Some(now);
    }

    pub fn view(&self) -> Vec<UndeliveredView> {
        self.counts
            .iter()
            .map(|(k, c)| UndeliveredView {
                endpoint: k.endpoint,
                targets: k.targets.clone(),
                reason: k.reason.as_str(),
                messages: c.total,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_loss_and_logs_once_per_interval() {
        let mut u = Undelivered::default();
        let t0 = Instant::now();
        let targets = vec!["arn:f".to_string()];
        for i in 0..5 {
            u.count(
                "lambda-runner",
                &targets,
                Reason::Refused,
                "t",
                t0 + Duration::from_millis(i),
            );
        }
        let c = &u.counts.values().next().unwrap();
        assert_eq!((c.total, c.unlogged), (5, 4), "logged once, four since");
        u.count(
            "lambda-runner",
            &targets,
            Reason::Refused,
            "t",
            t0 + LOG_EVERY,
        );
        let c = &u.counts.values().next().unwrap();
        assert_eq!(
            (c.total, c.unlogged),
            (6, 0),
            "logged again after the interval"
        );
        u.count("cloud", &["cloud".into()], Reason::QueueFull, "t", t0);
        assert_eq!(
            u.view(),
            vec![
                UndeliveredView {
                    endpoint: "cloud",
                    targets: "cloud".into(),
                    reason: "queue full",
                    messages: 1
                },
                UndeliveredView {
                    endpoint: "lambda-runner",
                    targets: "arn:f".into(),
                    reason: "refused",
                    messages: 6
                },
            ]
        );
    }
}
