//! `[ota-agent]` in the core config: no keys yet. It is read and checked at
//! start all the same, so a key set there by mistake is refused rather
//! than ignored.

use serde::Deserialize;
use verdant_common::config::Section;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaAgentConfig {}

impl Section for OtaAgentConfig {
    const NAME: &'static str = "ota-agent";
}
