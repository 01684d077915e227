//! Logging for every Verdant process: `tracing` to stderr (init captures it
//! into `<root>/logs/<service>.log`).
//!
//! `VERDANT_LOG` is a list of `target=level` directives and an optional
//! default level (default `info`), e.g. `VERDANT_LOG=debug,h2=warn`. `VERDANT_LOG_FORMAT=json` switches to one
//! JSON object per line.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub const LOG_ENV: &str = "VERDANT_LOG";
pub const LOG_FORMAT_ENV: &str = "VERDANT_LOG_FORMAT";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    // `Targets` rather than `EnvFilter`: the same `target=level` syntax
    // without span and field filters, and without the regex engine those
    // need (about 200 KiB of code in every process of the core).
    let (filter, bad) = match std::env::var(LOG_ENV) {
        Ok(text) => match text.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (default_filter(), Some((text, e))),
        },
        Err(_) => (default_filter(), None),
    };
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        // Its own report of a failed write is an `eprintln!`, which panics
        // when stderr is a broken pipe (init gone): never let logging kill a task.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests) keeps the first subscriber; that is fine.
    let _ = if json {
        builder.json().finish().with(filter).try_init()
    } else {
        builder.finish().with(filter).try_init()
    };
    if let Some((text, e)) = bad {
        tracing::warn!("{LOG_ENV}={text:?} is not a log filter ({e}); logging at info");
    }
}

fn default_filter() -> Targets {
    Targets::new().with_default(tracing::Level::INFO)
}
