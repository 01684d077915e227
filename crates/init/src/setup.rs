//! Everything before the first service starts, done so that a problem
//! stops init with one clear error and nothing half-started: the root and
//! its lock, the first-start defaults, the config, the group, the socket
//! directory and every service's program.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use verdant_common::config::ConfigSource;
use verdant_common::paths::Layout;
use verdant_group::{Group, Thing};

use crate::config::{self, Config};
use crate::devcerts::{self, CertPaths};
use crate::error::InitError;
use crate::process::{self, Programs};
use crate::service::Spec;

/// The name of the sample device a first start creates.
pub const SAMPLE_DEVICE: &str = "sample-device";
const ACCOUNT: &str = "000000000000";
const REGION: &str = "local-1";

/// A core ready to start.
pub struct Prepared {
    pub layout: Layout,
    pub config: Config,
    pub group: Group,
    pub specs: Vec<Spec>,
    /// Held while init runs: one init per root.
    pub lock: Flock<File>,
    pub pid_dir: PathBuf,
}

/// Makes the root directory if needed and takes its lock (one init per
/// root): the first thing init does, before it reads or changes anything
/// under the root.
///
/// # Errors
/// The root cannot be made, or another init holds it.
pub fn claim(root: &Path) -> Result<Flock<File>, InitError> {
    let root = std::path::absolute(root).map_err(|e| InitError::Root {
        path: root.to_path_buf(),
        source: e,
    })?;
    std::fs::create_dir_all(&root).map_err(|source| InitError::Root {
        path: root.clone(),
        source,
    })?;
    lock(&root)
}

/// Prepares the root `claim` locked (`lock`).
pub fn prepare(
    root: &Path,
    runtime_dir_env: Option<&Path>,
    programs: &Programs,
    lock: Flock<File>,
) -> Result<Prepared, InitError> {
    let root = std::path::absolute(root).map_err(|e| InitError::Root {
        path: root.to_path_buf(),
        source: e,
    })?;

    let bootstrap = Layout::new(&root, None).map_err(|source| InitError::Root {
        path: root.clone(),
        source,
    })?;
    let config_file = bootstrap.config_file();
    let mut first_start = false;
    if !config_file.exists() {
        first_start = true;
        mkdir(&bootstrap.config_dir().join("config.d"), 0o755)?;
        write_new(&config_file, &config::default_config())?;
    }
    let source = ConfigSource::load(&config_file)?;
    let config = Config::from_source(&source, &config_file)?;

    let runtime_dir = runtime_dir_env
        .map(Path::to_path_buf)
        .or(config.core.runtime_dir.clone());
    let layout = Layout::new(&root, runtime_dir.as_deref()).map_err(|source| InitError::Root {
        path: root.clone(),
        source,
    })?;
    mkdir(&layout.logs_dir(), 0o750)?;
    mkdir(&layout.functions_dir(), 0o750)?;
    mkdir(&layout.deployments_dir(), 0o750)?;
    for name in config.services.keys() {
        mkdir(&layout.data_dir(name), 0o750)?;
    }
    let pid_dir = layout.data_dir("init");
    mkdir(&pid_dir, 0o750)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(layout.runtime_dir())
        .map_err(|source| InitError::RuntimeDir {
            path: layout.runtime_dir().to_path_buf(),
            source,
        })?;

    let certs = CertPaths {
        dir: layout.certs_dir(),
    };
    let wrote_certs = devcerts::ensure(&certs, &config.core.thing_name, SAMPLE_DEVICE)?;
    if !wrote_certs && devcerts::ensure_server(&certs, &config.core.thing_name)? {
        tracing::info!(
            "server certificate put in place ({}): there was none usable",
            certs.server_cert().display()
        );
    }
    // Only a core that has never had a deployment gets the sample group.
    if std::fs::symlink_metadata(layout.deployments_dir().join("current")).is_err() {
        write_sample_group(&layout, &certs, &config.core.thing_name)?;
    }
    let group = Group::load(&layout.current_group())?;

    let specs = specs(&config, programs)?;
    if first_start || wrote_certs {
        print_welcome(&layout, &certs, &group);
    }
    Ok(Prepared {
        layout,
        config,
        group,
        specs,
        lock,
        pid_dir,
    })
}

/// Ends processes a killed init left behind, named by their pidfiles, and
/// removes a release it was checking.
pub fn end_leftovers(p: &Prepared) {
    let grace = Duration::from_millis(p.config.init.stop_grace_ms);
    for (service, pid) in process::end_leftovers(&p.pid_dir, grace) {
        tracing::warn!(
            service,
            pid,
            "ended a leftover process of a previous verdant-init"
        );
    }
    for staged in crate::versions::Versions::new(p.layout.root()).clear_staged() {
        tracing::info!(
            "removed {}: a release a previous verdant-init had not installed",
            staged.display()
        );
    }
}

/// Takes the root's lock. A lock whose recorded init is dead is held only
/// by a child that was between fork and exec when that init was killed
/// (it inherited the descriptor); it goes at the exec, so wait briefly.
fn lock(root: &Path) -> Result<Flock<File>, InitError> {
    let path = root.join("init.lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| InitError::Io {
            what: format!("open {}", path.display()),
            source,
        })?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                use std::io::{Seek, Write};
                let _ = locked.set_len(0);
                let _ = locked.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(locked, "{}", std::process::id());
                return Ok(locked);
            }
            Err((unlocked, _)) => {
                let pid = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let owner_alive = pid
                    .parse::<i32>()
                    .is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                if owner_alive || std::time::Instant::now() > deadline {
                    return Err(InitError::Locked {
                        root: root.to_path_buf(),
                        pid,
                    });
                }
                file = unlocked;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), InitError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| InitError::Io {
            what: format!("create {}", path.display()),
            source,
        })
}

fn write_new(path: &Path, text: &str) -> Result<(), InitError> {
    std::fs::write(path, text).map_err(|source| InitError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}

/// The thing `name` with the certificate `certificate_id` in the account
/// and region of a development core's sample group.
pub fn local_thing(name: &str, certificate_id: &str) -> Thing {
    Thing {
        id: name.to_string(),
        thing_arn: format!("arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"),
        certificate_arn: format!("arn:aws:iot:{REGION}:{ACCOUNT}:cert/{certificate_id}"),
        sync_shadow: false,
    }
}

/// `deployments/initial/group.json` and `deployments/current -> initial`.
fn write_sample_group(layout: &Layout, certs: &CertPaths, core: &str) -> Result<(), InitError> {
    let core = local_thing(core, &devcerts::certificate_id(&certs.core_cert())?);
    let device = core.sibling(
        SAMPLE_DEVICE,
        &devcerts::certificate_id(&certs.device_cert(SAMPLE_DEVICE))?,
    );
    let group = Group::sample(&core, &device);
    let dir = layout.deployments_dir().join("initial");
    mkdir(&dir, 0o750)?;
    let json = serde_json::to_string_pretty(&group).expect("a group serializes");
    write_new(&dir.join("group.json"), &(json + "\n"))?;
    let current = layout.deployments_dir().join("current");
    if std::fs::symlink_metadata(&current).is_err() {
        std::os::unix::fs::symlink("initial", &current).map_err(|source| InitError::Io {
            what: format!("link {}", current.display()),
            source,
        })?;
    }
    Ok(())
}

/// Resolves every service's program now, so a missing one stops init
/// before anything starts.
fn specs(config: &Config, programs: &Programs) -> Result<Vec<Spec>, InitError> {
    config
        .services
        .iter()
        .map(|(name, s)| {
            let program =
                programs
                    .resolve(&s.command)
                    .ok_or_else(|| InitError::MissingProgram {
                        service: name.clone(),
                        command: s.command.clone(),
                    })?;
            Ok(Spec {
                name: name.clone(),
                program: program.path,
                arg0: program.arg0,
                args: s.args.clone(),
                env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                depends_on: s.depends_on.clone(),
                health: s.health,
                enabled: s.enabled.unwrap_or(true),
                start_timeout: Duration::from_millis(
                    s.start_timeout_ms.unwrap_or(config.init.start_timeout_ms),
                ),
                stop_grace: Duration::from_millis(
                    s.stop_grace_ms.unwrap_or(config.init.stop_grace_ms),
                ),
            })
        })
        .collect()
}

fn print_welcome(layout: &Layout, certs: &CertPaths, group: &Group) {
    let d = SAMPLE_DEVICE;
    println!(
        "First start of a development core in {root}\n\
         \x20 config:        {config}\n\
         \x20 group CA:      {ca}\n\
         \x20 core cert:     {core_cert} (key beside it, 0600)\n\
         \x20 server cert:   {server_cert} (rotated by verdant-discovery)\n\
         \x20 sample device: {dev_cert} (key beside it, 0600)\n\
         \x20 group:         {group_file} (group `{gid}`)\n\
         Connect the sample device (docs/getting-started.md; `verdantctl device add` makes more):\n\
         \x20 mosquitto_sub -h localhost -p 8883 --cafile {ca} --cert {dev_cert} --key {dev_key} -i {d} -t '{d}/local/#'\n\
         Inspect the core:  verdantctl --root {root} status",
        root = layout.root().display(),
        config = layout.config_file().display(),
        ca = certs.ca_cert().display(),
        core_cert = certs.core_cert().display(),
        server_cert = certs.server_cert().display(),
        dev_cert = certs.device_cert(d).display(),
        dev_key = certs.device_key(d).display(),
        group_file = layout.current_group().display(),
        gid = group.id,
    );
}
