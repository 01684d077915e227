//! `[lambda-runner]` in the core config.

use std::path::PathBuf;

use serde::Deserialize;
use verdant_common::config::{Invalid, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaConfig {
    /// The function IPC port on loopback (Greengrass's `ggDaemonPort`;
    /// old function bundles hard-code 8000). 0 picks a free port.
    pub ipc_port: u16,
    /// The Python 3 interpreter Python functions run with.
    pub python: PathBuf,
    /// The Node.js that Node.js functions run with.
    pub node: PathBuf,
    /// The `java` of a JDK (11 or newer: its source launcher runs
    /// Verdant's Java runtime) that Java functions run with.
    pub java: PathBuf,
    /// Who functions run as when the group says nothing (`RunAs`): a user
    /// name (Greengrass's `ggc_user`; `nobody` if it does not exist).
    pub default_user: String,
    /// Functions may run as uid or gid 0 (Greengrass's
    /// `allowFunctionsToRunAsRoot`).
    pub allow_functions_to_run_as_root: bool,
    /// Instances of one on-demand function at most (`maxConcurrentLimit`).
    pub max_instances_per_function: usize,
    /// Work items waiting per function at most (`maxWorkItemCount`); more
    /// are refused and counted.
    pub max_work_items: usize,
    /// An on-demand instance idle this long is stopped.
    pub idle_secs: u64,
    /// The AWS region functions are told (`AWS_REGION`).
    pub region: String,
    /// Processes (threads included) of one `GreengrassContainer` instance
    /// at most (its cgroup's `pids.max`).
    pub pids_limit: u64,
    /// Bytes of a `GreengrassContainer` instance's private `/tmp`.
    pub tmp_bytes: u64,
    /// A function's log (`logs/functions/<name>.log`) is rotated past
    /// this size ...
    pub log_max_bytes: u64,
    /// ... and this many rotated ones are kept.
    pub log_keep: u32,
    /// Run functions even though `fs.protected_hardlinks` or
    /// `fs.protected_symlinks` is not 1 (a function could then trick the
    /// core through links in shared directories); logged loudly.
    pub run_on_insecure_host: bool,
}

impl Default for LambdaConfig {
    fn default() -> Self {
        LambdaConfig {
            ipc_port: 8000,
            python: PathBuf::from("python3"),
            node: PathBuf::from("node"),
            java: PathBuf::from("java"),
            default_user: "ggc_user".into(),
            allow_functions_to_run_as_root: false,
            max_instances_per_function: 10,
            max_work_items: 1000,
            idle_secs: 60,
            region: "us-east-1".into(),
            run_on_insecure_host: false,
            pids_limit: 256,
            tmp_bytes: 64 << 20,
            log_max_bytes: 10 << 20,
            log_keep: 3,
        }
    }
}

/// The IPC port functions built on Greengrass Core SDKs older than 1.6
/// use, whatever `GG_DAEMON_PORT` says (greengrasssdk 1.5.0, which AWS's
/// sample functions pin, is one).
pub const LEGACY_SDK_PORT: u16 = 8000;

/// The warning an operator gets when the IPC endpoint listens on `port`
/// (the bound one: 0 in the config picks another): none on 8000.
pub fn legacy_sdk_warning(port: u16) -> Option<String> {
    (port != LEGACY_SDK_PORT).then(|| {
        format!(
            "the function IPC endpoint is on port {port}, not {LEGACY_SDK_PORT}: functions \
             built on Greengrass Core SDKs older than 1.6 (such as greengrasssdk 1.5.0) \
             ignore GG_DAEMON_PORT and will not reach it"
        )
    })
}

impl Section for LambdaConfig {
    const NAME: &'static str = "lambda-runner";

    /// Problems that stop the lambda-runner from starting.
    fn check(&self) -> Result<(), Invalid> {
        if self.max_instances_per_function == 0 {
            return Err(Invalid::new(
                "lambda-runner.max_instances_per_function",
                "must be at least 1",
            ));
        }
        if self.max_work_items == 0 {
            return Err(Invalid::new(
                "lambda-runner.max_work_items",
                "must be at least 1",
            ));
        }
        if self.default_user.is_empty() {
            return Err(Invalid::new(
                "lambda-runner.default_user",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_port_other_than_8000_warns_of_old_sdks() {
        assert_eq!(LambdaConfig::default().ipc_port, LEGACY_SDK_PORT);
        assert_eq!(legacy_sdk_warning(8000), None);
        let warning = legacy_sdk_warning(8001).expect("a warning");
        assert!(warning.contains("port 8001, not 8000"), "{warning}");
        assert!(warning.contains("older than 1.6"), "{warning}");
    }
}
