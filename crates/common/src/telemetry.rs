//! Logging for every Verdant process: `tracing` to stderr (init captures it
//! into `<root>/logs/<service>.log`).
//!
//! `VERDANT_LOG` is an `EnvFilter` directive (default `info`), e.g.
//! `VERDANT_LOG=debug,tonic=warn`. `VERDANT_LOG_FORMAT=json` switches to one
//! JSON object per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub const LOG_ENV: &str = "VERDANT_LOG";
pub const LOG_FORMAT_ENV: &str = "VERDANT_LOG_FORMAT";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Its own report of a failed write is an `eprintln!`, which panics
        // when stderr is a broken pipe (init gone): never let logging kill a task.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests) keeps the first subscriber; that is fine.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
