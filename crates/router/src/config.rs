//! `[router]` in the core config.

use std::path::PathBuf;

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

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

impl Section for RouterConfig {
    const NAME: &'static str = "router";

    /// Problems that stop the router from starting.
    fn check(&self) -> Result<(), Invalid> {
        if self.max_held_per_endpoint == 0 {
            return Err(Invalid::new(
                "router.max_held_per_endpoint",
                "must be at least 1",
            ));
        }
        if self.link_credit == 0 {
            return Err(Invalid::new("router.link_credit", "must be at least 1"));
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
    /// Offer ALPN `x-amzn-mqtt-ca`; unset: only on port 443.
    pub alpn: Option<bool>,
    /// An HTTP CONNECT proxy to reach the cloud through, as Greengrass's
    /// `networkProxy`: `http://[user:password@]host[:port]` or `https://...`.
    pub proxy: String,
    /// The CA of an `https://` proxy's certificate; unset: `ca`.
    pub proxy_ca: Option<PathBuf>,
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
    /// How the core subscribes to what the table routes from the cloud, as
    /// Greengrass's `GG_CONFIG_SUBSCRIPTION_QUALITY`.
    pub subscription_quality: SubscriptionQuality,
    /// Subscriptions on one cloud connection (AWS IoT allows 50); more
    /// open more connections, with client ids `<client_id>-c01`, `-c02`...
    /// (Greengrass's naming).
    pub max_subscriptions_per_connection: usize,
    /// `"memory"` or `"disk"` (`data/router/cloud-queue.db`).
    pub queue_storage: Storage,
    /// Topic and payload bytes the queue holds at most (at least 262144,
    /// as Greengrass requires).
    pub queue_max_bytes: usize,
    pub queue_full_policy: FullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionQuality {
    /// QoS 0 subscriptions on a clean session (Greengrass's default).
    AtMostOnce,
    /// QoS 1 subscriptions on a persistent session: a message from the
    /// cloud is acknowledged once the core's targets have it, and the
    /// cloud keeps what arrives while the core is away.
    AtLeastOncePersistent,
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
            alpn: None,
            proxy: String::new(),
            proxy_ca: None,
            ca: "config/certs/cloud-ca.pem".into(),
            certificate: "config/certs/core.pem".into(),
            private_key: "config/certs/core.key".into(),
            client_id: String::new(),
            keep_alive_secs: 60,
            max_retry_interval_secs: 60,
            window: 64,
            subscription_quality: SubscriptionQuality::AtMostOnce,
            max_subscriptions_per_connection: 50,
            queue_storage: Storage::Disk,
            // Greengrass's default spooler size.
            queue_max_bytes: 2_500_000,
            queue_full_policy: FullPolicy::DropOldest,
        }
    }
}

/// A parsed `proxy` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl ProxyUrl {
    /// `http://[user:password@]host[:port]` or `https://...`.
    pub fn parse(url: &str) -> Result<ProxyUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err("a proxy URL has no path".into());
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_string(), password.to_string())), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{p}` is not a port"))?,
            ),
            _ => (hostport, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(ProxyUrl {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            credentials,
        })
    }
}

impl CloudConfig {
    /// Whether to offer ALPN `x-amzn-mqtt-ca`.
    pub fn alpn(&self) -> bool {
        self.alpn.unwrap_or(self.port == 443)
    }

    fn check(&self) -> Result<(), Invalid> {
        if !self.proxy.is_empty()
            && let Err(why) = ProxyUrl::parse(&self.proxy)
        {
            // The URL may hold a password: it is not repeated here.
            return Err(Invalid::new("router.cloud.proxy", why));
        }
        if self.queue_max_bytes < 262_144 {
            return Err(Invalid::new(
                "router.cloud.queue_max_bytes",
                "must be at least 262144 bytes",
            ));
        }
        if self.max_subscriptions_per_connection == 0 {
            return Err(Invalid::new(
                "router.cloud.max_subscriptions_per_connection",
                "must be at least 1",
            ));
        }
        if self.window == 0 {
            return Err(Invalid::new("router.cloud.window", "must be at least 1"));
        }
        if self.keep_alive_secs < 5 {
            return Err(Invalid::new(
                "router.cloud.keep_alive_secs",
                "must be at least 5 seconds",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            ProxyUrl::parse("http://proxy.local:3128").unwrap(),
            ProxyUrl {
                tls: false,
                host: "proxy.local".into(),
                port: 3128,
                credentials: None
            }
        );
        assert_eq!(
            ProxyUrl::parse("https://me:s3cr:et@10.0.0.1").unwrap(),
            ProxyUrl {
                tls: true,
                host: "10.0.0.1".into(),
                port: 443,
                credentials: Some(("me".into(), "s3cr:et".into()))
            }
        );
        assert!(ProxyUrl::parse("socks5://x:1").is_err());
        assert!(ProxyUrl::parse("http://x:notaport").is_err());
        assert!(ProxyUrl::parse("http://x:1/path").is_err());
    }
}
