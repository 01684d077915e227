//! `[router]` in the core config.

use std::path::PathBuf;

use serde::Deserialize;

pub use crate::queue::FullPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Messages held for one endpoint (broker, shadow, lambda-runner,
    /// cloud) that is not linked or has no credit; past it QoS 0 messages
    /// are dropped and QoS 1 messages refused (their publisher is not
    /// acknowledged), both counted.
    pub max_held_per_endpoint: usize,
    /// Messages a linked daemon may send before the router grants more.
    pub link_credit: u32,
    pub cloud: CloudConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_held_per_endpoint: 10_000,
            link_credit: 1024,
            cloud: CloudConfig::default(),
        }
    }
}

impl RouterConfig {
    /// Problems that stop the router from starting, as (key, reason).
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.max_held_per_endpoint == 0 {
            return Err((
                "router.max_held_per_endpoint".into(),
                "must be at least 1".into(),
            ));
        }
        if self.link_credit == 0 {
            return Err(("router.link_credit".into(), "must be at least 1".into()));
        }
        self.cloud.check()
    }
}

/// `[router.cloud]`: the core's connection to the cloud broker (AWS IoT
/// Core, or any MQTT broker) and the queue of messages bound for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// Host name of the cloud broker; empty: no connection (messages for
    /// the cloud are still queued, up to the limit).
    pub endpoint: String,
    /// 8883, or 443 (then ALPN `x-amzn-mqtt-ca` is offered, as AWS IoT
    /// requires for MQTT on 443).
    pub port: u16,
    /// The CA that signed the cloud broker's certificate (e.g. Amazon Root CA 1).
    pub ca: PathBuf,
    /// The core's certificate and key (relative paths are under the root).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The MQTT client id; empty: the core's thing name.
    pub client_id: String,
    pub keep_alive_secs: u64,
    /// Reconnect delays double from 1 s up to this (with jitter), as
    /// Greengrass's `mqttMaxConnectionRetryInterval`.
    pub max_retry_interval_secs: u64,
    /// QoS 1 messages in flight to the cloud at once.
    pub window: u16,
    /// `"memory"` or `"disk"` (`data/router/cloud-queue.db`).
    pub queue_storage: Storage,
    /// Topic and payload bytes the queue holds at most (at least 262144,
    /// as Greengrass requires).
    pub queue_max_bytes: usize,
    pub queue_full_policy: FullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Memory,
    Disk,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            endpoint: String::new(),
            port: 8883,
            ca: "config/certs/cloud-ca.pem".into(),
            certificate: "config/certs/core.pem".into(),
            private_key: "config/certs/core.key".into(),
            client_id: String::new(),
            keep_alive_secs: 60,
            max_retry_interval_secs: 60,
            window: 64,
            queue_storage: Storage::Disk,
            // Greengrass's default spooler size.
            queue_max_bytes: 2_500_000,
            queue_full_policy: FullPolicy::DropOldest,
        }
    }
}

impl CloudConfig {
    fn check(&self) -> Result<(), (String, String)> {
        if self.queue_max_bytes < 262_144 {
            return Err((
                "router.cloud.queue_max_bytes".into(),
                "must be at least 262144 bytes".into(),
            ));
        }
        if self.window == 0 {
            return Err(("router.cloud.window".into(), "must be at least 1".into()));
        }
        if self.keep_alive_secs < 5 {
            return Err((
                "router.cloud.keep_alive_secs".into(),
                "must be at least 5 seconds".into(),
            ));
        }
        Ok(())
    }
}
