//! The group's functions as the lambda-runner runs them: Greengrass's
//! configuration with its defaults applied, the artifact found, and the
//! runtime told from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use verdant_group::{EncodingType, Execution, Group, IsolationMode};

use crate::config::LambdaConfig;
use crate::resources::Grants;

/// How a function's code runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// `Executable` = `<module>.<function>`, with `<module>.py` in the
    /// artifact: Verdant's Python runtime loop imports it.
    Python { handler: String },
    /// `Executable` = `<module>.<function>`, with `<module>.js` in the
    /// artifact: Verdant's Node.js runtime loop requires it.
    Node { handler: String },
    /// `Executable` = `<package.Class>[::<method>]` (the AWS Lambda Java
    /// convention), with the class or jars in the artifact: Verdant's Java
    /// runtime loop (run by the JDK's source launcher) loads it.
    Java { handler: String },
    /// `Executable` names a program in the artifact, run with `ExecArgs`;
    /// it speaks the IPC itself (`verdant-function-sdk` for Rust).
    Executable { program: String, args: Vec<String> },
    /// Not runnable: why (shown as the function's state).
    Unavailable(String),
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Python { .. } => "python",
            Runtime::Node { .. } => "nodejs",
            Runtime::Executable { .. } => "executable",
            Runtime::Java { .. } => "java",
            Runtime::Unavailable(_) => "none",
        }
    }
}

/// A cheap summary of an artifact's tree: a file added, removed, resized
/// or rewritten changes it (a zip artifact: the zip file's). Python's
/// `__pycache__` directories are not counted, nor directories' own times:
/// a function whose user may write its code directory leaves bytecode
/// there, and is not changed by that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub files: u64,
    pub bytes: u64,
    /// The newest modification time of the files.
    pub newest: Option<SystemTime>,
}

impl Fingerprint {
    /// `path`'s tree (or file), not following links below it.
    pub fn of(path: &Path) -> Fingerprint {
        let mut f = Fingerprint::default();
        let mut todo = vec![(path.to_path_buf(), std::fs::metadata(path))];
        while let Some((p, meta)) = todo.pop() {
            let Ok(meta) = meta else { continue };
            if meta.is_dir() {
                let Ok(entries) = std::fs::read_dir(&p) else {
                    continue;
                };
                todo.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_name() != "__pycache__")
                        .map(|e| (e.path(), e.metadata())),
                );
            } else {
                f.files += 1;
                f.bytes += meta.len();
                f.newest = f.newest.max(meta.modified().ok());
            }
        }
        f
    }
}

/// One function of the group, ready to run. Two specs of one ARN that
/// differ in anything (its artifact included) are a changed function.
// Each flag is a setting of its own in the group's definition.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Qualified, as subscriptions and callers name it.
    pub arn: String,
    pub name: String,
    /// The qualifier (a version or an alias).
    pub version: String,
    /// The code's directory: `<root>/functions/<name>/<version>/`
    /// canonicalized (an artifact installed as a link to a
    /// content-addressed directory is that directory), or where its zip
    /// was unpacked.
    pub dir: PathBuf,
    /// What the artifact looked like when read.
    pub fingerprint: Fingerprint,
    pub runtime: Runtime,
    pub pinned: bool,
    /// Per request (Greengrass default 3 s).
    pub timeout: Duration,
    pub memory_kb: u32,
    pub binary: bool,
    pub variables: BTreeMap<String, String>,
    pub uid: u32,
    pub gid: u32,
    /// `GreengrassContainer` (Greengrass's default): namespaces, a minimal
    /// root and cgroup limits; else `NoContainer`, a plain process.
    pub container: bool,
    /// Local resources bound into a container (`ResourceAccessPolicies`).
    pub grants: Grants,
    /// A container sees `/sys` (read-only).
    pub access_sysfs: bool,
}

/// The name and qualifier of `arn:aws:lambda:<r>:<a>:function:<name>:<q>`.
fn name_and_version(arn: &str) -> (String, String) {
    let parts: Vec<&str> = arn.split(':').collect();
    let name = parts.get(6).copied().unwrap_or(arn).to_string();
    let version = parts.get(7).copied().unwrap_or("$LATEST").to_string();
    (name, version)
}

/// The uid and gid functions run as by default: `[lambda-runner] default_user`,
/// else `nobody`.
pub fn default_identity(config: &LambdaConfig) -> (u32, u32) {
    for name in [config.default_user.as_str(), "nobody"] {
        if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
            if name != config.default_user {
                tracing::warn!(
                    user = %config.default_user,
                    "no such user: functions run as nobody unless the group says otherwise"
                );
            }
            return (u.uid.as_raw(), u.gid.as_raw());
        }
    }
    (65534, 65534)
}

/// The specs of the group's functions, in the group's order. A function
/// that cannot run gets `Runtime::Unavailable` with the reason (its JSON
/// path included) and the others run. `containers` says whether this core
/// can run `GreengrassContainer` functions, or why not.
pub fn specs(
    group: &Group,
    dirs: &Dirs,
    config: &LambdaConfig,
    containers: &Result<(), String>,
) -> Vec<Spec> {
    let defaults = group
        .function_definition_version
        .default_config
        .as_ref()
        .and_then(|d| d.execution.clone())
        .unwrap_or_default();
    let identity = if group.function_definition_version.functions.is_empty()
        && group.connector_definition_version.connectors.is_empty()
    {
        (65534, 65534)
    } else {
        default_identity(config)
    };
    let mut specs: Vec<Spec> = group
        .function_definition_version
        .functions
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let at = format!("FunctionDefinitionVersion.Functions[{i}].FunctionConfiguration");
            let c = &f.function_configuration;
            let (name, version) = name_and_version(&f.function_arn);
            let (dir, fingerprint, unpacked) = match artifact(dirs, &name, &version) {
                Ok((d, f)) => (d, f, Ok(())),
                Err(why) => (
                    dirs.functions.join(&name).join(&version),
                    Fingerprint::default(),
                    Err(format!("{at}: {why}")),
                ),
            };
            let own = c
                .environment
                .as_ref()
                .and_then(|e| e.execution.clone())
                .unwrap_or_default();
            let execution = Execution {
                isolation_mode: own.isolation_mode.or(defaults.isolation_mode),
                run_as: own.run_as.or_else(|| defaults.run_as.clone()),
            };
            let run_as = execution.run_as.clone().unwrap_or_default();
            let (uid, gid) = (
                run_as.uid.unwrap_or(identity.0),
                run_as.gid.unwrap_or(identity.1),
            );
            let mut runtime = match unpacked {
                Ok(()) => runtime(c.executable.as_deref(), c.exec_args.as_deref(), &dir, &at),
                Err(why) => Runtime::Unavailable(why),
            };
            if (uid == 0 || gid == 0) && !config.allow_functions_to_run_as_root {
                runtime = Runtime::Unavailable(format!(
                    "{at}.Environment.Execution.RunAs: uid or gid 0 is refused unless \
                     [lambda-runner] allow_functions_to_run_as_root = true"
                ));
            }
            let container = execution.isolation_mode != Some(IsolationMode::NoContainer);
            let environment = c.environment.clone().unwrap_or_default();
            // Resources and sysfs are a container's (NoContainer functions
            // reach the file system as their user can); a NoContainer
            // function's models are resolved all the same, so that a changed
            // model changes its spec (its mounts are not made).
            let policies: Vec<_> = environment
                .resource_access_policies
                .iter()
                .filter(|p| container || group.model(&p.resource_id).is_some())
                .cloned()
                .collect();
            let grants =
                crate::resources::grants(group, &policies, &format!("{at}.Environment"), &|id| {
                    dirs.model(id)
                })
                .unwrap_or_else(|why| {
                    runtime = Runtime::Unavailable(why);
                    Grants::default()
                });
            if let (true, Err(why)) = (container, containers) {
                runtime = Runtime::Unavailable(format!(
                    "{at}.Environment.Execution.IsolationMode: GreengrassContainer (the \
                     default) needs {why}; set NoContainer"
                ));
            }
            Spec {
                arn: f.function_arn.clone(),
                name,
                version,
                dir,
                fingerprint,
                runtime,
                pinned: c.pinned,
                timeout: Duration::from_secs(u64::from(c.timeout.unwrap_or(3).max(1))),
                memory_kb: c.memory_size.unwrap_or(16_384),
                binary: c.encoding_type == Some(EncodingType::Binary),
                variables: environment.variables,
                uid,
                gid,
                container,
                grants,
                access_sysfs: container && environment.access_sysfs,
            }
        })
        .collect();
    specs.extend(crate::connectors::specs(group, dirs, identity, containers));
    specs
}

/// Why this host is not safe for functions (Greengrass's secure mode):
/// link protections that are off, read from `proc_sys` (`/proc/sys`).
pub fn host_problems(proc_sys: &Path) -> Vec<String> {
    ["protected_hardlinks", "protected_symlinks"]
        .iter()
        .filter_map(|name| {
            let value = std::fs::read_to_string(proc_sys.join("fs").join(name)).ok()?;
            (value.trim() != "1").then(|| format!("fs.{name} is {}", value.trim()))
        })
        .collect()
}

/// Applies secure mode: with `problems`, no function runs unless the
/// configuration says to run anyway (then it is logged loudly).
pub fn secure_mode(specs: &mut [Spec], problems: &[String], config: &LambdaConfig) {
    if problems.is_empty() || specs.is_empty() {
        return;
    }
    let problems = problems.join(", ");
    if config.run_on_insecure_host {
        tracing::warn!(
            "INSECURE: running functions although {problems} \
             ([lambda-runner] run_on_insecure_host = true)"
        );
        return;
    }
    tracing::error!(
        "functions do not run: {problems}; set them to 1 (sysctl), or \
         [lambda-runner] run_on_insecure_host = true to run anyway"
    );
    for s in specs {
        if !matches!(s.runtime, Runtime::Unavailable(_)) {
            s.runtime = Runtime::Unavailable(format!(
                "secure mode: {problems} (set to 1, or [lambda-runner] run_on_insecure_host = true)"
            ));
        }
    }
}

/// Where functions' artifacts are.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `<root>/functions`: `<name>/<version>/` directories or
    /// `<name>/<version>.zip` files.
    pub functions: PathBuf,
    /// Where zip artifacts are unpacked (`<name>/<version>/`).
    pub unpacked: PathBuf,
    /// Machine learning model resources, `<resource id>` (links into the
    /// ota-agent's store, `functions/.models/`).
    pub models: PathBuf,
    /// Code not yet installed under `functions` (a deployment being
    /// checked): `<name>/<version>` to a directory or a `.zip` file.
    pub staged: std::collections::HashMap<String, PathBuf>,
    /// The `verdant` executable, whose programs the connectors are.
    pub exe: PathBuf,
}

impl Dirs {
    /// Where model resource `id` is: staged by the deployment being
    /// checked (`.models/<id>`), else installed.
    pub fn model(&self, id: &str) -> PathBuf {
        self.staged
            .get(&format!(".models/{id}"))
            .cloned()
            .unwrap_or_else(|| self.models.join(id))
    }
}

/// The directory of a function's code and its fingerprint:
/// `functions/<name>/<version>/` canonicalized, or
/// `functions/<name>/<version>.zip` unpacked (entries that would leave the
/// directory are refused by the zip reader) into a directory named after
/// the zip's own path and fingerprint: unpacked once, and kept while its
/// instances may run (the lambda-runner clears them all at start).
fn artifact(dirs: &Dirs, name: &str, version: &str) -> Result<(PathBuf, Fingerprint), String> {
    let staged = dirs.staged.get(&format!("{name}/{version}"));
    let dir = match staged {
        Some(path) if path.is_dir() => path.clone(),
        _ => dirs.functions.join(name).join(version),
    };
    if dir.is_dir() {
        let dir = dir.canonicalize().unwrap_or(dir);
        let fingerprint = Fingerprint::of(&dir);
        return Ok((dir, fingerprint));
    }
    let zip = match staged {
        Some(path) if path.is_file() => path.clone(),
        _ => dirs.functions.join(name).join(format!("{version}.zip")),
    };
    if !zip.is_file() {
        return Ok((dir, Fingerprint::default()));
    }
    let zip = zip.canonicalize().unwrap_or(zip);
    let fingerprint = Fingerprint::of(&zip);
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (&zip, fingerprint).hash(&mut h);
        h.finish()
    };
    let into = dirs
        .unpacked
        .join(name)
        .join(format!("{version}-{key:016x}"));
    if into.is_dir() {
        return Ok((into, fingerprint));
    }
    // Unpacked beside, then renamed: a directory of that name is whole.
    let part = dirs
        .unpacked
        .join(name)
        .join(format!("{version}-{key:016x}.part"));
    let unpack = || -> Result<(), String> {
        if part.exists() {
            std::fs::remove_dir_all(&part).map_err(|e| e.to_string())?;
        }
        std::fs::create_dir_all(&part).map_err(|e| e.to_string())?;
        let file = std::fs::File::open(&zip).map_err(|e| e.to_string())?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
        archive.extract(&part).map_err(|e| e.to_string())?;
        std::fs::rename(&part, &into).map_err(|e| e.to_string())
    };
    unpack().map_err(|e| format!("cannot unpack {}: {e}", zip.display()))?;
    Ok((into, fingerprint))
}

/// Whether `executable` names a Java handler whose class is in `dir`
/// (as a `.class` file) or may be in its jars (`*.jar`, `lib/*.jar`).
fn is_java(executable: &str, dir: &Path) -> bool {
    let class = executable.split("::").next().unwrap_or("");
    let valid = !class.is_empty()
        && class
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'));
    if !valid {
        return false;
    }
    if dir
        .join(format!("{}.class", class.replace('.', "/")))
        .is_file()
    {
        return true;
    }
    [dir.to_path_buf(), dir.join("lib")].iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "jar"))
        })
    })
}

/// The runtime the artifact in `dir` needs for `executable`.
fn runtime(executable: Option<&str>, exec_args: Option<&str>, dir: &Path, at: &str) -> Runtime {
    use std::os::unix::fs::PermissionsExt;
    let Some(executable) = executable.filter(|e| !e.is_empty()) else {
        return Runtime::Unavailable(format!("{at}.Executable: required"));
    };
    if !dir.is_dir() {
        return Runtime::Unavailable(format!(
            "{at}: no artifact at {} (a directory with the function's code)",
            dir.display()
        ));
    }
    let program = dir.join(executable);
    if !executable.starts_with('/')
        && !executable.split('/').any(|c| c == "..")
        && std::fs::metadata(&program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    {
        return Runtime::Executable {
            program: executable.to_string(),
            args: exec_args
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect(),
        };
    }
    if let Some((module, _)) = executable.rsplit_once('.') {
        let file = dir.join(format!("{}.py", module.replace('.', "/")));
        if file.is_file() {
            return Runtime::Python {
                handler: executable.to_string(),
            };
        }
        if dir.join(format!("{module}.js")).is_file() {
            return Runtime::Node {
                handler: executable.to_string(),
            };
        }
    }
    if is_java(executable, dir) {
        return Runtime::Java {
            handler: executable.to_string(),
        };
    }
    Runtime::Unavailable(format!(
        "{at}.Executable: `{executable}` names no handler (<module>.<function> with \
         <module>.py or <module>.js), Java class (<package.Class>[::<method>] with its class \
         or jars) nor executable file in {}",
        dir.display()
    ))
}

/// A group of one core, for tests to add to.
#[cfg(test)]
pub(crate) fn test_group() -> Group {
    let core = verdant_group::Thing {
        id: "core".into(),
        thing_arn: "arn:aws:iot:us-east-1:1:thing/core".into(),
        certificate_arn: format!("arn:aws:iot:us-east-1:1:cert/{}", "ab".repeat(32)),
        sync_shadow: false,
    };
    Group::sample(&core, &core)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(functions: serde_json::Value) -> Group {
        let mut g = test_group();
        g.function_definition_version = serde_json::from_value(functions).unwrap();
        g
    }

    fn zip(path: &Path, entries: &[(&str, &str)]) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o644);
        for (name, text) in entries {
            w.start_file(*name, options).unwrap();
            std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn zip_artifacts_are_unpacked_and_escapes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            functions: dir.path().join("functions"),
            unpacked: dir.path().join("unpacked"),
            models: dir.path().join("models"),
            exe: dir.path().join("verdant"),
            staged: std::collections::HashMap::new(),
        };
        std::fs::create_dir_all(dirs.functions.join("z")).unwrap();
        std::fs::create_dir_all(dirs.functions.join("evil")).unwrap();
        zip(
            &dirs.functions.join("z/2.zip"),
            &[("main.py", "def handler(e, c):\n    return e\n")],
        );
        zip(
            &dirs.functions.join("evil/1.zip"),
            &[("../../escaped.py", "x = 1\n")],
        );
        let g = group(serde_json::json!({
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer" } },
            "Functions": [
                { "Id": "z", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:z:2",
                  "FunctionConfiguration": { "Executable": "main.handler" } },
                { "Id": "evil", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:evil:1",
                  "FunctionConfiguration": { "Executable": "escaped.handler" } },
            ]
        }));
        let s = specs(&g, &dirs, &LambdaConfig::default(), &Ok(()));
        assert!(
            matches!(s[0].runtime, Runtime::Python { .. }),
            "{:?}",
            s[0].runtime
        );
        assert!(
            s[0].dir.starts_with(dirs.unpacked.join("z")),
            "{:?}",
            s[0].dir
        );
        // Read again, an unchanged zip is not unpacked again; a new one is.
        let again = specs(&g, &dirs, &LambdaConfig::default(), &Ok(()));
        assert_eq!(again[0], s[0]);
        zip(
            &dirs.functions.join("z/2.zip"),
            &[("main.py", "def handler(e, c):\n    return 2 * e\n")],
        );
        let changed = specs(&g, &dirs, &LambdaConfig::default(), &Ok(()));
        assert_ne!(changed[0].dir, s[0].dir);
        assert!(s[0].dir.join("main.py").is_file(), "the old copy stays");
        assert!(
            matches!(&s[1].runtime, Runtime::Unavailable(w) if w.contains("cannot unpack")),
            "{:?}",
            s[1].runtime
        );
        assert!(!dir.path().join("escaped.py").exists());
    }

    #[test]
    fn a_linked_artifact_is_its_target_and_a_rewritten_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for (digest, text) in [("aa", "x = 1\n"), ("bb", "x = 2\n")] {
            std::fs::create_dir_all(store.join(digest)).unwrap();
            std::fs::write(store.join(digest).join("main.py"), text).unwrap();
        }
        let dirs = Dirs {
            functions: dir.path().join("functions"),
            unpacked: dir.path().join("unpacked"),
            models: dir.path().join("models"),
            exe: dir.path().join("verdant"),
            staged: std::collections::HashMap::new(),
        };
        std::fs::create_dir_all(dirs.functions.join("f")).unwrap();
        let link = dirs.functions.join("f/1");
        std::os::unix::fs::symlink(store.join("aa"), &link).unwrap();
        let (at, first) = artifact(&dirs, "f", "1").unwrap();
        assert_eq!(at, store.join("aa").canonicalize().unwrap());
        assert_eq!((first.files, first.bytes), (1, 6));
        // Installed anew: another target.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(store.join("bb"), &link).unwrap();
        assert_eq!(
            artifact(&dirs, "f", "1").unwrap().0,
            store.join("bb").canonicalize().unwrap()
        );
        // Rewritten in place: another fingerprint.
        std::fs::write(store.join("bb/main.py"), "x = 22\n").unwrap();
        std::fs::write(store.join("bb/extra.py"), "").unwrap();
        let (_, changed) = artifact(&dirs, "f", "1").unwrap();
        assert_eq!((changed.files, changed.bytes), (2, 7));
        assert_ne!(changed, first);
        // Bytecode Python left beside the code is not a change.
        std::fs::create_dir_all(store.join("bb/__pycache__")).unwrap();
        std::fs::write(store.join("bb/__pycache__/main.cpython-311.pyc"), "pyc").unwrap();
        assert_eq!(artifact(&dirs, "f", "1").unwrap().1, changed);
    }

    #[test]
    fn defaults_identity_and_refusals_with_their_json_path() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("echo/1");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(code.join("echo.py"), "def handler(e, c):\n    return e\n").unwrap();
        let arn = |n: &str| format!("arn:aws:lambda:us-east-1:1:function:{n}:1");
        let g = group(serde_json::json!({
            "DefaultConfig": { "Execution": { "IsolationMode": "NoContainer",
                "RunAs": { "Uid": 1000, "Gid": 1000 } } },
            "Functions": [
                { "Id": "a", "FunctionArn": arn("echo"),
                  "FunctionConfiguration": { "Executable": "echo.handler", "Pinned": true } },
                { "Id": "b", "FunctionArn": arn("echo"),
                  "FunctionConfiguration": { "Executable": "echo.handler", "Timeout": 9,
                    "Environment": { "Execution": { "RunAs": { "Uid": 0, "Gid": 0 } } } } },
                { "Id": "c", "FunctionArn": arn("gone"),
                  "FunctionConfiguration": { "Executable": "gone.handler" } },
                { "Id": "d", "FunctionArn": arn("echo"),
                  "FunctionConfiguration": { "Executable": "echo.handler",
                    "Environment": { "Execution": { "IsolationMode": "GreengrassContainer" } } } },
            ]
        }));
        let no = Err("a core running as root".to_string());
        let dirs = Dirs {
            functions: dir.path().to_path_buf(),
            unpacked: dir.path().join("unpacked"),
            models: dir.path().join("models"),
            exe: dir.path().join("verdant"),
            staged: std::collections::HashMap::new(),
        };
        let s = specs(&g, &dirs, &LambdaConfig::default(), &no);
        assert!(!s[0].container && s[3].container);
        let can = specs(&g, &dirs, &LambdaConfig::default(), &Ok(()));
        assert!(matches!(can[3].runtime, Runtime::Python { .. }));
        assert_eq!(
            s[0].runtime,
            Runtime::Python {
                handler: "echo.handler".into()
            }
        );
        assert!(s[0].pinned);
        assert_eq!((s[0].uid, s[0].gid), (1000, 1000));
        assert_eq!(s[0].timeout, Duration::from_secs(3));
        assert_eq!((s[0].name.as_str(), s[0].version.as_str()), ("echo", "1"));
        let why = |i: usize| match &s[i].runtime {
            Runtime::Unavailable(w) => w.clone(),
            r @ (Runtime::Python { .. }
            | Runtime::Node { .. }
            | Runtime::Executable { .. }
            | Runtime::Java { .. }) => {
                panic!("{r:?}")
            }
        };
        assert!(
            why(1).starts_with(
                "FunctionDefinitionVersion.Functions[1].FunctionConfiguration.Environment.Execution.RunAs"
            ),
            "{}",
            why(1)
        );
        assert!(why(2).contains("no artifact"), "{}", why(2));
        assert!(why(3).contains("GreengrassContainer"), "{}", why(3));

        // Secure mode, against a made-up /proc/sys.
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("fs")).unwrap();
        std::fs::write(sys.join("fs/protected_hardlinks"), "1\n").unwrap();
        std::fs::write(sys.join("fs/protected_symlinks"), "0\n").unwrap();
        let problems = host_problems(&sys);
        assert_eq!(problems, ["fs.protected_symlinks is 0"]);
        let mut insecure = s.clone();
        secure_mode(&mut insecure, &problems, &LambdaConfig::default());
        assert!(
            matches!(&insecure[0].runtime, Runtime::Unavailable(w) if w.contains("secure mode"))
        );
        let mut anyway = s.clone();
        let config = LambdaConfig {
            run_on_insecure_host: true,
            ..LambdaConfig::default()
        };
        secure_mode(&mut anyway, &problems, &config);
        assert_eq!(anyway[0].runtime, s[0].runtime);
        std::fs::write(sys.join("fs/protected_symlinks"), "1\n").unwrap();
        assert!(host_problems(&sys).is_empty());
    }
}
