//! The sections of the core config that init reads: `core`, `init` and
//! `services`. The default written on first start lists the seven daemons.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
pub use verdant_common::config::CoreSection;
use verdant_common::config::{ConfigError, ConfigSource};

/// Every top-level section a core config may have; each is read by its owner.
pub const SECTIONS: &[&str] = &[
    "core",
    "init",
    "services",
    "broker",
    "router",
    "shadow",
    "lambda-runner",
    "secrets",
    "discovery",
    "ota-agent",
];

/// `[init]`: the supervisor's own policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitSection {
    /// How long a service may take from spawn to health SERVING.
    pub start_timeout_ms: u64,
    /// How long a service has between SIGTERM and SIGKILL.
    pub stop_grace_ms: u64,
    /// Automatic restarts allowed within `restart_window_secs`; one more and
    /// the service is `failed`.
    pub restart_limit: u32,
    pub restart_window_secs: u64,
    /// The longest wait between automatic restarts.
    pub backoff_max_secs: u64,
    /// Running healthy this long forgets past failures (backoff restarts at 0).
    pub healthy_reset_secs: u64,
    /// A service log is rotated when it would pass this size.
    pub log_max_bytes: u64,
    /// Rotated logs kept (`<service>.log.1` ... `.N`).
    pub log_keep: u32,
    /// The daemons of the `verdant` binary are forked from a zygote made
    /// at init's start, sharing its relocated pages (about 1.9 MiB less for
    /// a core); `false` executes each (see docs/supervisor.md).
    pub zygote: bool,
    /// Run, when present, before a new version is installed (a failure
    /// refuses the update) and once it settled (a failure rolls it back):
    /// Greengrass's `ota_pre_update.sh` and `ota_post_update.sh`. Relative
    /// to the root.
    pub update_pre_hook: std::path::PathBuf,
    pub update_post_hook: std::path::PathBuf,
    /// How long each hook may run.
    pub update_hook_timeout_secs: u64,
    /// After a switch, how long the cloud connection (if it was up when the
    /// switch began) has to come back before the update is rolled back.
    pub update_cloud_timeout_secs: u64,
}

impl Default for InitSection {
    fn default() -> Self {
        InitSection {
            start_timeout_ms: 10_000,
            stop_grace_ms: 5_000,
            restart_limit: 5,
            restart_window_secs: 60,
            backoff_max_secs: 60,
            healthy_reset_secs: 60,
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 3,
            zygote: true,
            update_pre_hook: "config/ota_pre_update.sh".into(),
            update_post_hook: "config/ota_post_update.sh".into(),
            update_hook_timeout_secs: 60,
            update_cloud_timeout_secs: 60,
        }
    }
}

impl InitSection {
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }
}

/// How init knows a service is ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    /// `grpc.health.v1` on `<runtime>/<name>.sock` reports SERVING.
    #[default]
    Grpc,
    /// Ready as soon as it is spawned (for programs that are not Verdant daemons).
    None,
}

/// `[services.<name>]`: one supervised program.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSection {
    /// A program name (looked up beside verdant-init, then on PATH) or a path.
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Services that must be running before this one starts.
    pub depends_on: Vec<String>,
    pub health: HealthCheck,
    /// False keeps it configured but not started with the core.
    pub enabled: Option<bool>,
    pub start_timeout_ms: Option<u64>,
    pub stop_grace_ms: Option<u64>,
}

/// Init's view of the whole config.
#[derive(Debug, Clone)]
pub struct Config {
    pub core: CoreSection,
    pub init: InitSection,
    pub services: BTreeMap<String, ServiceSection>,
}

impl Config {
    /// Reads and checks the sections init owns; `file` names the core file
    /// in errors that are not tied to one key of one file.
    pub fn from_source(src: &ConfigSource, file: &Path) -> Result<Self, ConfigError> {
        src.check_sections(SECTIONS)?;
        let config = Config {
            core: src.section("core")?,
            init: src.section("init")?,
            services: src.section("services")?,
        };
        config.check(file)?;
        Ok(config)
    }

    fn check(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            path: file.to_path_buf(),
            key,
            reason,
        };
        if self.services.is_empty() {
            return Err(invalid(
                "services".into(),
                "no service is configured".into(),
            ));
        }
        for (name, svc) in &self.services {
            let valid_name = !name.is_empty()
                && name != "init"
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid_name {
                return Err(invalid(
                    format!("services.{name}"),
                    "a service name is lowercase letters, digits and '-', and not 'init'".into(),
                ));
            }
            if svc.command.is_empty() {
                return Err(invalid(
                    format!("services.{name}.command"),
                    "missing: the program to run".into(),
                ));
            }
            for dep in &svc.depends_on {
                if !self.services.contains_key(dep) {
                    return Err(invalid(
                        format!("services.{name}.depends_on"),
                        format!("unknown service `{dep}`"),
                    ));
                }
            }
        }
        if let Err(cycle) = self.start_order() {
            return Err(invalid(
                format!("services.{cycle}.depends_on"),
                "dependency cycle".into(),
            ));
        }
        Ok(())
    }

    /// Services grouped in levels: each level depends only on earlier ones.
    /// Start goes level by level; stop goes in reverse. `Err` names a service
    /// on a cycle.
    pub fn start_order(&self) -> Result<Vec<Vec<String>>, String> {
        let mut level: BTreeMap<&str, usize> = BTreeMap::new();
        let mut remaining: Vec<&str> = self.services.keys().map(String::as_str).collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|name| {
                let deps = &self.services[*name].depends_on;
                if deps.iter().all(|d| level.contains_key(d.as_str())) {
                    let l = deps
                        .iter()
                        .map(|d| level[d.as_str()] + 1)
                        .max()
                        .unwrap_or(0);
                    level.insert(name, l);
                    false
                } else {
                    true
                }
            });
            if remaining.len() == before {
                return Err(remaining[0].to_string());
            }
        }
        let depth = level.values().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for (name, l) in level {
            levels[l].push(name.to_string());
        }
        Ok(levels)
    }
}

/// The config written on first start.
pub fn default_config() -> String {
    let mut text = String::from(
        "# Verdant core configuration. Drop-ins in config.d/*.toml apply on top, in name order.\n\
         # `verdant init --print-default-config` prints this file.\n\n\
         [core]\n\
         thing_name = \"verdant-core\"\n\
         # runtime_dir = \"/run/verdant\"   # sockets; default <root>/run\n\n\
         [init]\n\
         start_timeout_ms = 10000\n\
         stop_grace_ms = 5000\n\
         restart_limit = 5          # automatic restarts within the window before `failed`\n\
         restart_window_secs = 60\n\
         backoff_max_secs = 60\n\
         healthy_reset_secs = 60\n\
         log_max_bytes = 10485760\n\
         log_keep = 3\n\
         zygote = true              # fork the daemons from a zygote (shares memory); false: exec each\n\
         # update_pre_hook = \"config/ota_pre_update.sh\"    # run before a new version is installed, if there\n\
         # update_post_hook = \"config/ota_post_update.sh\"  # run once it settled; a failure rolls it back\n\
         # update_hook_timeout_secs = 60\n\
         # update_cloud_timeout_secs = 60  # the cloud connection must be back this soon after a switch\n",
    );
    for (name, deps) in [
        ("router", ""),
        ("broker", "\"router\""),
        ("shadow", "\"router\""),
        ("lambda-runner", "\"router\""),
        ("secrets", ""),
        ("discovery", ""),
        ("ota-agent", "\"router\""),
    ] {
        let _ = write!(
            text,
            "\n[services.{name}]\ncommand = \"verdant-{name}\"\ndepends_on = [{deps}]\n"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let src = ConfigSource::from_str("verdant.toml", text)?;
        Config::from_source(&src, Path::new("verdant.toml"))
    }

    #[test]
    fn default_config_parses_and_orders_router_first() {
        let c = parse(&default_config()).unwrap();
        assert_eq!(c.services.len(), 7);
        let order = c.start_order().unwrap();
        assert!(order[0].contains(&"router".to_string()));
        assert!(order[1].contains(&"broker".to_string()));
    }

    #[test]
    fn rejects_unknown_dependency_cycle_and_key() {
        let e = parse("[services.a]\ncommand='x'\ndepends_on=['b']\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "verdant.toml: services.a.depends_on: unknown service `b`"
        );
        let e = parse("[services.a]\ncommand='x'\ndepends_on=['b']\n[services.b]\ncommand='y'\ndepends_on=['a']\n")
            .unwrap_err();
        assert!(e.to_string().contains("dependency cycle"), "{e}");
        let e = parse("[services.a]\ncommand='x'\nrestart='always'\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("services.a.restart: unknown field `restart`"),
            "{e}"
        );
        let e = parse("[init]\nstop_grace_ms='x'\n[services.a]\ncommand='x'\n").unwrap_err();
        assert!(
            e.to_string().contains("init.stop_grace_ms: invalid type"),
            "{e}"
        );
    }
}
