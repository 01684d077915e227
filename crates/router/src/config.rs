//! `[router]` in the core config.

use serde::Deserialize;

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
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_held_per_endpoint: 10_000,
            link_credit: 1024,
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
        Ok(())
    }
}
