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

/// How much of a string that a client chose (a topic, a client id, a
/// certificate subject) a log line quotes.
pub const QUOTED: usize = 200;

/// A client-supplied string as a log line quotes it: whole up to
/// [`QUOTED`] bytes, otherwise its start and its full length, so that a
/// 65,535-byte topic does not make a 65 KiB log line.
pub fn bounded(s: &str) -> Bounded<'_> {
    Bounded(s)
}

/// See [`bounded`].
#[derive(Debug, Clone, Copy)]
pub struct Bounded<'a>(&'a str);

impl std::fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s.len() <= QUOTED {
            return f.write_str(s);
        }
        let mut end = QUOTED;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} bytes)", &s[..end], s.len())
    }
}

/// At most one log line per key per interval: a condition that strikes
/// every message (a target that cannot take them) is logged once, then
/// with how many times it struck since.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    /// Per key: when it was last logged and how often it struck since.
    last: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Throttle {
            every,
            last: std::collections::HashMap::new(),
        }
    }

    /// Counts one strike of `key`; `Some(n)` when it is time to log, `n`
    /// being the strikes since the last line (this one included).
    pub fn hit(&mut self, key: &str, now: std::time::Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, n)) if now.duration_since(*at) < self.every => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let strikes = *n + 1;
                *at = now;
                *n = 0;
                Some(strikes)
            }
            None => {
                self.last.insert(key.to_string(), (now, 0));
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_once_per_interval_with_the_count_since() {
        let mut t = Throttle::new(std::time::Duration::from_secs(10));
        let t0 = std::time::Instant::now();
        assert_eq!(t.hit("a", t0), Some(1));
        assert_eq!(t.hit("a", t0), None);
        assert_eq!(t.hit("b", t0), Some(1));
        assert_eq!(t.hit("a", t0 + std::time::Duration::from_secs(3)), None);
        assert_eq!(t.hit("a", t0 + std::time::Duration::from_secs(10)), Some(3));
    }

    #[test]
    fn bounded_quotes_long_strings_by_their_start_and_length() {
        assert_eq!(bounded("a/b").to_string(), "a/b");
        let long = "é".repeat(40_000);
        let quoted = bounded(&long).to_string();
        assert!(quoted.ends_with("… (80000 bytes)"), "{quoted}");
        assert!(quoted.len() < QUOTED + 20);
    }
}
