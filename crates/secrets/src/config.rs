//! `[secrets]` in the core config: whether values are asked of the cloud
//! at deployment time, and how long the cloud has to answer.

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// At each deployment, while the cloud connection is up, ask the cloud
    /// for the value of every secret the group names (docs/secrets.md).
    pub fetch_from_cloud: bool,
    /// How long the cloud has to answer them all (1 to 300).
    pub fetch_timeout_secs: u64,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            fetch_from_cloud: true,
            fetch_timeout_secs: 10,
        }
    }
}

impl Section for SecretsConfig {
    const NAME: &'static str = "secrets";

    fn check(&self) -> Result<(), Invalid> {
        if !(1..=300).contains(&self.fetch_timeout_secs) {
            return Err(Invalid::new(
                "secrets.fetch_timeout_secs",
                "must be 1 to 300",
            ));
        }
        Ok(())
    }
}
