//! The exit-code contract between a daemon and `verdant-init`.
//!
//! | code | meaning | what init does |
//! |---|---|---|
//! | 0 | stopped because it was asked to | nothing if init asked; otherwise restarts it |
//! | 1 | internal failure | restarts with backoff |
//! | 75 (`EX_TEMPFAIL`) | transient failure (a peer or resource not there yet) | restarts with backoff |
//! | 78 (`EX_CONFIG`) | bad configuration | does **not** restart; marks it failed, "bad configuration" |
//!
//! Any other code, or a signal, is treated like 1.

use std::process::ExitCode;

/// Clean stop.
pub const OK: u8 = 0;
/// Internal failure: restart with backoff.
pub const FAILURE: u8 = 1;
/// Transient failure: restart with backoff.
pub const TEMPFAIL: u8 = 75;
/// Bad configuration: restarting will not help.
pub const CONFIG: u8 = 78;

/// What a daemon's failure means for its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failure,
    TempFail,
    Config,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => OK,
            Exit::Failure => FAILURE,
            Exit::TempFail => TEMPFAIL,
            Exit::Config => CONFIG,
        }
    }

    /// Whether a supervisor should start the service again after this exit.
    pub fn restartable(code: i32) -> bool {
        code != i32::from(CONFIG)
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}
