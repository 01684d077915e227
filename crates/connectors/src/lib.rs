//! The connectors a Verdant release ships, as programs of the `verdant`
//! executable: the lambda-runner starts `verdant connector <program>` as a
//! pinned function whose ARN is the group's `ConnectorArn` and whose
//! environment holds the connector's parameters (their schema is
//! `verdant_group::connectors`, checked at deployment). Each speaks the
//! core's function IPC through `verdant-function-sdk`, as any native
//! function does.

pub mod metrics;
pub mod modbus;

use std::ffi::OsString;
use std::process::ExitCode;

/// The program's name, as `argv[0]`.
pub const PROGRAM: &str = "verdant-connector";

/// Why a connector cannot run (it exits 1; the lambda-runner restarts it
/// with backoff and the function's log says why).
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<verdant_function_sdk::Error> for Failure {
    fn from(e: verdant_function_sdk::Error) -> Self {
        Failure(e.to_string())
    }
}

/// A parameter from the environment (the lambda-runner filled in the
/// defaults, so a missing one is an error of how it was started).
pub fn parameter(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| Failure(format!("parameter {name} is not set")))
}

/// A numeric parameter.
pub fn number<T: std::str::FromStr>(name: &str) -> Result<T, Failure> {
    let text = parameter(name)?;
    text.trim()
        .parse()
        .map_err(|_| Failure(format!("parameter {name}: `{text}` is not a number")))
}

/// `verdant connector <program>`: runs the connector `args[1]` names.
pub fn main(args: &[OsString]) -> ExitCode {
    let which = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let result = match which.as_deref() {
        Some("metrics") => metrics::main(),
        Some("modbus") => modbus::main(),
        other => Err(Failure(format!(
            "unknown connector program `{}` (this release has: metrics, modbus)",
            other.unwrap_or("")
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}
