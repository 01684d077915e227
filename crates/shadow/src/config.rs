//! `[shadow]` in the core config.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    /// Bytes of a request payload at most (AWS IoT: 8 KiB); larger ones
    /// get 413.
    pub max_document_bytes: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            max_document_bytes: 8192,
        }
    }
}

impl ShadowConfig {
    /// Problems that stop the shadow service from starting, as (key, reason).
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(256..=65_536).contains(&self.max_document_bytes) {
            return Err((
                "shadow.max_document_bytes".into(),
                "must be between 256 and 65536".into(),
            ));
        }
        Ok(())
    }
}
