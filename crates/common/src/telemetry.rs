//! Logging for every Verdant process: `tracing` to stderr (init captures it
//! into `<root>/logs/<service>.log`).
//!
//! `VERDANT_LOG` is a list of `target=level` directives and an optional
//! default level (default `info`), e.g. `VERDANT_LOG=debug,h2=warn`. `VERDANT_LOG_FORMAT=json` switches to one
//! JSON object per line.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use tracing_subscriber::fmt::MakeWriter;

use crate::logs::ServiceLog;

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
        .with_writer(Stderr)
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

/// A log file every line also goes to from [`tee`] on: verdant-init's own
/// `logs/init.log`, which `verdantctl logs init` reads.
static TEE: OnceLock<ServiceLog> = OnceLock::new();

thread_local! {
    /// Set while a line is written to the tee, whose own warning about a
    /// failed write must not come back into it.
    static IN_TEE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, write every log line of this process to `log` too
/// (without colours). The first call wins.
pub fn tee(log: ServiceLog) {
    let _ = TEE.set(log);
}

/// stderr, and the [`tee`]'d file once there is one.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes one whole event per call.
        if let Some(log) = TEE.get()
            && !IN_TEE.replace(true)
        {
            log.write(&strip_ansi(buf));
            IN_TEE.set(false);
        }
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `text` without the SGR sequences (`ESC [ ... m`) of a coloured terminal.
fn strip_ansi(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.iter().position(|&b| b == 0x1b) {
        out.extend_from_slice(&rest[..i]);
        let after = &rest[i + 1..];
        match after.strip_prefix(b"[") {
            Some(seq) => {
                let end = seq
                    .iter()
                    .position(|&b| b == b'm')
                    .map_or(seq.len(), |e| e + 1);
                rest = &seq[end..];
            }
            None => rest = after,
        }
    }
    out.extend_from_slice(rest);
    out
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

    #[test]
    fn strips_colours_only() {
        assert_eq!(
            strip_ansi(b"\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m core up\n"),
            b"2026  INFO core up\n"
        );
        assert_eq!(strip_ansi(b"plain [x] line\n"), b"plain [x] line\n");
    }
}
