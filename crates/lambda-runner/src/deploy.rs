//! The deployed group, read at start and again by `ApplyGroup`: its
//! functions' specs built the same way both times (`Loader`), the change
//! carried out by the runner (`Runner::apply`), and the functions' logs
//! following it (`FunctionLogs`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use verdant_common::logs::ServiceLog;
use verdant_group::{Group, GroupError};

use crate::LambdaError;
use crate::config::LambdaConfig;
use crate::function::{self, Dirs, Runtime, Spec};
use crate::work::{Applied, Runner};

/// Each function's rotating log (`logs/functions/<name>.log`), by function
/// name: shared by the instances' output pumps and `Logs`.
#[derive(Debug, Clone)]
pub struct FunctionLogs {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Changed only by `follow` (at start and by `ApplyGroup`); read when
    /// an instance starts and when an operator asks for a log.
    logs: Arc<Mutex<HashMap<String, ServiceLog>>>,
}

impl FunctionLogs {
    pub fn new(dir: PathBuf, max_bytes: u64, keep: u32) -> FunctionLogs {
        FunctionLogs {
            dir,
            max_bytes,
            keep,
            logs: Arc::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<ServiceLog> {
        self.logs.lock().expect("logs lock").get(name).cloned()
    }

    /// One log for each function name of `specs` (a name's log is kept as
    /// it is); the logs of names no longer there are dropped.
    pub fn follow(&self, specs: &[Spec]) {
        let names: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let mut logs = self.logs.lock().expect("logs lock");
        logs.retain(|name, _| names.contains(name.as_str()));
        for name in names {
            if !logs.contains_key(name) {
                let path = self.dir.join(format!("{name}.log"));
                let log = ServiceLog::new(path, self.max_bytes, self.keep);
                logs.insert(name.to_string(), log);
            }
        }
    }
}

/// How the deployed group's functions are read, as at start.
#[derive(Debug)]
pub struct Loader {
    /// `deployments/current/group.json`.
    pub group_file: PathBuf,
    pub dirs: Dirs,
    pub config: LambdaConfig,
    /// Whether `GreengrassContainer` functions can run here, or why not
    /// (found once, at start).
    pub containers: Result<(), String>,
}

/// A group read, with its functions' specs.
#[derive(Debug)]
pub struct Loaded {
    /// The deployment's id: the directory `current` links to.
    pub deployment: Option<String>,
    pub group: Group,
    pub specs: Vec<Spec>,
}

impl Loader {
    /// Reads the group `current` names, through the link read once (a
    /// deployment switched meanwhile is not half read), and its functions'
    /// artifacts.
    pub fn load(&self) -> Result<Loaded, GroupError> {
        let current = self.group_file.parent().unwrap_or(Path::new("."));
        let target = std::fs::read_link(current).ok();
        let deployment = target
            .as_ref()
            .and_then(|t| t.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let file = match (&target, current.parent()) {
            (Some(target), Some(deployments)) => deployments.join(target).join("group.json"),
            _ => self.group_file.clone(),
        };
        let group = Group::load(&file)?;
        let mut specs = function::specs(&group, &self.dirs, &self.config, &self.containers);
        let problems = function::host_problems(Path::new("/proc/sys"));
        function::secure_mode(&mut specs, &problems, &self.config);
        Ok(Loaded {
            deployment,
            group,
            specs,
        })
    }
}

impl Loader {
    /// Why each function of `group_json` could not run here (its JSON path,
    /// then why), with `staged` code (`<name>/<version>` to a directory or
    /// zip) in place of what is installed. Changes nothing.
    pub fn check(
        &self,
        group_json: &[u8],
        staged: HashMap<String, PathBuf>,
    ) -> Vec<(String, String)> {
        let group = match Group::parse(group_json) {
            Ok(g) => g,
            Err(problems) => {
                return problems.into_iter().map(|p| (p.path, p.reason)).collect();
            }
        };
        let dirs = Dirs {
            staged,
            ..self.dirs.clone()
        };
        let mut specs = function::specs(&group, &dirs, &self.config, &self.containers);
        let problems = function::host_problems(Path::new("/proc/sys"));
        function::secure_mode(&mut specs, &problems, &self.config);
        specs
            .iter()
            .filter_map(|s| match &s.runtime {
                Runtime::Unavailable(why) => Some(split_path(why, &s.arn)),
                Runtime::Python { .. } => missing(&self.config.python, "python", &s.arn),
                Runtime::Node { .. } => missing(&self.config.node, "node", &s.arn),
                Runtime::Java { .. } => missing(&self.config.java, "java", &s.arn),
                Runtime::Executable { .. } => None,
            })
            .collect()
    }
}

/// `<JSON path>: <why>` as (path, why); a reason without a path is the function's.
fn split_path(why: &str, arn: &str) -> (String, String) {
    match why.split_once(": ") {
        Some((path, rest))
            if path.starts_with("FunctionDefinitionVersion")
                || path.starts_with("ConnectorDefinitionVersion") =>
        {
            (path.to_string(), rest.to_string())
        }
        _ => (arn.to_string(), why.to_string()),
    }
}

/// A problem if the interpreter `program` (a path, or a name on `PATH`)
/// is not there.
fn missing(program: &Path, key: &str, arn: &str) -> Option<(String, String)> {
    let found = if program.components().count() > 1 {
        program.is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
    };
    (!found).then(|| {
        (
            arn.to_string(),
            format!(
                "{} is not installed on this core ([lambda-runner] {key})",
                program.display()
            ),
        )
    })
}

/// Logs why each of `specs` that cannot run cannot.
pub fn log_unavailable<'a>(specs: impl IntoIterator<Item = &'a Spec>) {
    for s in specs {
        if let Runtime::Unavailable(why) = &s.runtime {
            tracing::error!(function = %s.arn, "cannot run: {why}");
        }
    }
}

/// `ApplyGroup`'s work.
#[derive(Debug)]
pub struct Deployer {
    pub loader: Arc<Loader>,
    pub runner: Arc<Mutex<Runner>>,
    pub logs: FunctionLogs,
    /// One apply at a time: two would each diff against what the other
    /// is changing.
    pub serial: tokio::sync::Mutex<()>,
}

impl Deployer {
    /// Reads the deployed group and follows it: the deployment's id and
    /// what changed. A group that cannot be read changes nothing.
    pub async fn apply(&self) -> Result<(Option<String>, Applied), LambdaError> {
        let _one = self.serial.lock().await;
        let reader = self.loader.clone();
        // File reads, artifact walks and unzips: off the runtime's thread.
        let loaded = tokio::task::spawn_blocking(move || reader.load()).await??;
        self.logs.follow(&loaded.specs);
        let specs = loaded.specs.clone();
        let applied = self.runner.lock().expect("runner lock").apply(loaded.specs);
        let changed: HashSet<&String> = applied.started.iter().chain(&applied.restarted).collect();
        log_unavailable(specs.iter().filter(|s| changed.contains(&s.arn)));
        tracing::info!(
            deployment = loaded.deployment.as_deref().unwrap_or(""),
            started = ?applied.started,
            restarted = ?applied.restarted,
            stopped = ?applied.stopped,
            unchanged = applied.unchanged.len(),
            "group applied"
        );
        Ok((loaded.deployment, applied))
    }
}
