//! Following something under way (a deployment, a software update): one
//! line redrawn in place on a terminal, with a bar while bytes move; plain
//! lines, one per change, otherwise; JSON objects with `-o json`.

use std::io::{IsTerminal, Write};

/// What is shown of a thing under way, in each [`Mode`].
pub trait Shown {
    /// One compact JSON object.
    fn json_line(&self) -> String;
    /// One plain line.
    fn status_line(&self) -> String;
    /// The line a terminal redraws, at most `width - 1` characters.
    fn progress_line(&self, width: usize) -> String;
}

/// How changes are shown.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// One line redrawn in place, at most this wide.
    Terminal { width: usize },
    /// One plain line per change.
    Lines,
    /// One JSON object per change.
    Json,
}

impl Mode {
    /// A redrawn line on a terminal, else plain lines (JSON with `-o json`).
    pub fn for_stdout(json: bool) -> Self {
        if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() {
            let width = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(80);
            Mode::Terminal { width }
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress<W> {
    mode: Mode,
    /// Where the lines go.
    pub out: W,
    /// The last line printed, so a change that shows the same is not
    /// printed again.
    last: Option<String>,
}

impl Progress<std::io::Stdout> {
    pub fn stdout(json: bool) -> Self {
        Self::new(Mode::for_stdout(json), std::io::stdout())
    }
}

impl<W: Write> Progress<W> {
    pub fn new(mode: Mode, out: W) -> Self {
        Self {
            mode,
            out,
            last: None,
        }
    }

    pub fn show(&mut self, item: &impl Shown) {
        let line = match self.mode {
            Mode::Json => item.json_line(),
            Mode::Lines => item.status_line(),
            Mode::Terminal { width } => item.progress_line(width),
        };
        if line.is_empty() || self.last.as_ref() == Some(&line) {
            return;
        }
        // A closed stdout (piped into head) is no reason to stop following.
        let _ = match self.mode {
            Mode::Terminal { .. } => write!(self.out, "\r{line}\x1b[K"),
            Mode::Lines | Mode::Json => writeln!(self.out, "{line}"),
        };
        let _ = self.out.flush();
        self.last = Some(line);
    }

    /// Ends the redrawn line, so what follows starts on its own.
    pub fn finish(&mut self) {
        if matches!(self.mode, Mode::Terminal { .. }) && self.last.is_some() {
            let _ = writeln!(self.out);
        }
    }
}

/// Cells of the bar in the redrawn line.
pub const BAR_WIDTH: usize = 24;

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `[#####-----]`, `width` cells between the brackets.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((u128::from(done.min(total)) * width as u128) / u128::from(total)) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// `3.0 MiB / 10.0 MiB (30%)`, or what is known of it.
pub fn transfer(done: u64, total: u64) -> String {
    if total == 0 {
        return bytes(done);
    }
    let percent = u128::from(done.min(total)) * 100 / u128::from(total);
    format!("{} / {} ({percent}%)", bytes(done), bytes(total))
}

/// `line` cut to `width - 1` characters, so that it never wraps (a
/// wrapped line cannot be redrawn with `\r`).
pub fn fit(mut line: String, width: usize) -> String {
    let max = width.saturating_sub(1);
    if line.chars().count() > max {
        line = line.chars().take(max).collect();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bars() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10 << 20), "10.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bar(0, 100, 10), "[----------]");
        assert_eq!(bar(30, 100, 10), "[###-------]");
        assert_eq!(bar(100, 100, 10), "[##########]");
        assert_eq!(bar(500, 100, 4), "[####]", "more than the total is full");
        assert_eq!(bar(5, 0, 4), "[----]", "an unknown total is empty");
        assert_eq!(bar(u64::MAX, u64::MAX, 4), "[####]");
    }
}
