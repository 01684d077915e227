//! `[secrets]` in the core config: no keys yet. It is read and checked at
//! start all the same, so a key set there by mistake is refused rather
//! than ignored.

use serde::Deserialize;
use verdant_common::config::Section;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {}

impl Section for SecretsConfig {
    const NAME: &'static str = "secrets";
}
