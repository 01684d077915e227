//! `[shadow]` in the core config.

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    /// Bytes of a request payload at most (AWS IoT: 8 KiB); larger ones
    /// get 413.
    pub max_document_bytes: usize,
    /// Requests for one thing being answered at once (that arrived
    /// together) at most; past it they get 429, as AWS IoT answers more
    /// than 10 requests in flight.
    pub max_in_flight_per_thing: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            max_document_bytes: 8192,
            max_in_flight_per_thing: 10,
        }
    }
}

impl Section for ShadowConfig {
    const NAME: &'static str = "shadow";

    /// Problems that stop the shadow service from starting.
    fn check(&self) -> Result<(), Invalid> {
        if !(256..=65_536).contains(&self.max_document_bytes) {
            return Err(Invalid::new(
                "shadow.max_document_bytes",
                "must be between 256 and 65536",
            ));
        }
        if self.max_in_flight_per_thing == 0 {
            return Err(Invalid::new(
                "shadow.max_in_flight_per_thing",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
