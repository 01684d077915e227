//! `[ota-agent]` in the core config: how deployments are checked, queued
//! and kept, and where software updates come from.

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaAgentConfig {
    /// How long after applying a deployment every daemon must be SERVING
    /// and the group's pinned functions running (Greengrass's
    /// `postStartHealthCheckTimeout`); past it the deployment is rolled back.
    pub health_check_secs: u64,
    /// How long a pinned function started or restarted by a deployment
    /// must keep running before the deployment counts as healthy.
    pub health_settle_ms: u64,
    /// Deployments that may wait behind the running one; more are refused.
    pub queue: usize,
    /// Ended deployments whose directories are kept beside the current and
    /// the previous one (older ones are pruned; their records stay).
    pub keep: usize,
    /// A CA file (PEM) trusted for HTTPS downloads beside the system's and
    /// Mozilla's roots; relative to the root.
    pub ca_file: Option<std::path::PathBuf>,
    /// A pause before each step of a deployment, so that an operator can
    /// watch it (or a test can stop the core at a given step). 0: none.
    pub step_pause_ms: u64,
    /// Where releases of Verdant are published (an absolute directory, a
    /// `file:///` or an `https://` URL); none: `verdantctl update` names
    /// one each time.
    pub update_repository: Option<String>,
}

impl Default for OtaAgentConfig {
    fn default() -> Self {
        OtaAgentConfig {
            health_check_secs: 30,
            health_settle_ms: 500,
            queue: 4,
            keep: 3,
            ca_file: None,
            step_pause_ms: 0,
            update_repository: None,
        }
    }
}

impl Section for OtaAgentConfig {
    const NAME: &'static str = "ota-agent";

    fn check(&self) -> Result<(), Invalid> {
        if self.health_check_secs == 0 {
            return Err(Invalid::new(
                "ota-agent.health_check_secs",
                "must be at least 1",
            ));
        }
        if !(1..=64).contains(&self.queue) {
            return Err(Invalid::new("ota-agent.queue", "must be from 1 to 64"));
        }
        Ok(())
    }
}
