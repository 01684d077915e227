//! Versions of the core side by side under `<root>/versions/`:
//! `<version>/verdant` (and its `manifest.json`), `current` a relative
//! symlink to the one init runs, replaced by rename, and `update.json`,
//! the last update (`from`, `to`, `phase`, `reason`, `attempts`).
//!
//! A switch: the release the ota-agent staged is checked again here
//! against the operator's repository root (`config/update-root.json`, which
//! the daemons' user cannot change when init runs as root), so that init
//! never executes a file the repository's keys did not sign; installed;
//! the running executable kept as the way back; `update.json` written
//! (`switching`); `current` swapped; then init stops every service and
//! re-executes itself on `versions/current/verdant` (same PID, same
//! arguments). On the new version, [`at_start`] counts the attempt (after
//! [`MAX_ATTEMPTS`] starts that never settled, it puts the previous version
//! back) and [`settled`] ends the update: `succeeded` when every service
//! runs, else `rolled back` to the previous version, re-executed the same
//! way. An init started from another executable (the package's, after a
//! reboot) moves onto `versions/current/verdant` first.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use verdant_proto::supervisor::v1 as pb;

/// Starts on a new version that never settled, before it is rolled back.
pub const MAX_ATTEMPTS: u32 = 3;

/// The executable's name inside a version's directory.
const EXE: &str = "verdant";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub from: String,
    pub to: String,
    pub phase: String,
    pub reason: String,
    pub attempts: u32,
    pub started_ms: i64,
    pub updated_ms: i64,
    /// The cloud connection was up when the switch began: the new version
    /// must bring it back.
    #[serde(default)]
    pub cloud: bool,
}

pub const SWITCHING: &str = "switching";
pub const SUCCEEDED: &str = "succeeded";
pub const ROLLED_BACK: &str = "rolled back";
pub const FAILED: &str = "failed";

/// Why a switch is refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{0}")]
    Refused(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SwitchError + '_ {
    move |source| SwitchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The versions of one core's root.
#[derive(Debug, Clone)]
pub struct Versions {
    root: PathBuf,
    dir: PathBuf,
}

impl Versions {
    pub fn new(root: &Path) -> Versions {
        Versions {
            root: root.to_path_buf(),
            dir: root.join("versions"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn seen(&self) -> Seen {
        std::fs::read(self.dir.join("seen.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("update.json")
    }

    pub fn update(&self) -> Option<Update> {
        serde_json::from_slice(&std::fs::read(self.state_file()).ok()?).ok()
    }

    fn record(&self, update: &Update) -> Result<(), SwitchError> {
        let path = self.state_file();
        let bytes = serde_json::to_vec_pretty(update).expect("serialisable");
        verdant_common::fsutil::replace(&path, &bytes, 0o644).map_err(io(&path))
    }

    /// The version `current` names.
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(self.dir.join("current")).ok()?;
        Some(target.to_string_lossy().into_owned())
    }

    /// `versions/current/verdant`, if there is one.
    pub fn current_exe(&self) -> Option<PathBuf> {
        let v = self.current()?;
        let exe = self.dir.join(v).join(EXE);
        exe.is_file().then_some(exe)
    }

    /// Every installed version, oldest first (by semantic version).
    pub fn installed(&self) -> Vec<String> {
        let mut found: Vec<(semver::Version, String)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = semver::Version::parse(&name).ok()?;
                e.path().join(EXE).is_file().then_some((v, name))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, n)| n).collect()
    }

    pub fn status(&self) -> pb::Versions {
        pb::Versions {
            running: verdant_common::version::version().into(),
            current: self.current().unwrap_or_default(),
            installed: self.installed(),
            update: self.update().map(|u| pb::VersionUpdate {
                from: u.from,
                to: u.to,
                phase: u.phase,
                reason: u.reason,
                attempts: u.attempts,
                started_ms: u.started_ms,
                updated_ms: u.updated_ms,
            }),
        }
    }

    /// Points `current` at `version` (a new link renamed over the old).
    fn point_at(&self, version: &str) -> Result<(), SwitchError> {
        let tmp = self.dir.join(".current.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(version, &tmp).map_err(io(&tmp))?;
        let link = self.dir.join("current");
        std::fs::rename(&tmp, &link).map_err(io(&link))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// Copies `source` aside as `versions/.<version>.new/verdant` (0755,
    /// synced) with the manifest beside it; `None` when that version is
    /// installed already. Checks see the copy, not the source, which its
    /// owner could change meanwhile.
    fn stage(
        &self,
        version: &str,
        source: &Path,
        manifest: &[u8],
    ) -> Result<Option<PathBuf>, SwitchError> {
        use std::os::unix::fs::PermissionsExt;
        if self.dir.join(version).join(EXE).is_file() {
            return Ok(None);
        }
        let aside = self.dir.join(format!(".{version}.new"));
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::create_dir_all(&aside).map_err(io(&aside))?;
        let exe = aside.join(EXE);
        std::fs::copy(source, &exe).map_err(io(source))?;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).map_err(io(&exe))?;
        std::fs::File::open(&exe)
            .and_then(|f| f.sync_all())
            .map_err(io(&exe))?;
        let m = aside.join("manifest.json");
        verdant_common::fsutil::replace(&m, manifest, 0o644).map_err(io(&m))?;
        Ok(Some(aside))
    }

    /// Counts a start of the version `u` switches to: `Continue` while it
    /// has starts left, else rolled back (`Break` with what to execute
    /// then, if anything).
    fn count_start(&self, mut u: Update) -> ControlFlow<Option<PathBuf>> {
        u.attempts += 1;
        u.updated_ms = now_ms();
        if u.attempts > MAX_ATTEMPTS {
            let why = format!(
                "{} started {} times without every service running",
                u.to,
                u.attempts - 1
            );
            return ControlFlow::Break(self.go_back(&u, &why).ok());
        }
        let _ = self.record(&u);
        ControlFlow::Continue(())
    }

    /// Removes the installed versions but `keep`; what it removed. Once an
    /// update succeeded: the new version and the one it came from stay.
    pub fn prune(&self, keep: &[&str]) -> Vec<String> {
        let mut removed = Vec::new();
        for version in self.installed() {
            if keep.contains(&version.as_str()) || self.current().as_deref() == Some(&version) {
                continue;
            }
            if std::fs::remove_dir_all(self.dir.join(&version)).is_ok() {
                removed.push(version);
            }
        }
        removed
    }

    /// Removes what [`Versions::stage`] left of a switch that was never
    /// committed (the core stopped while a release was checked); what it
    /// removed. Called with the root's lock held, before anything stages.
    pub fn clear_staged(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str()?.strip_prefix('.')?.strip_suffix(".new"))
                    .is_some_and(|version| version != "current")
                    && p.is_dir()
            })
            .filter(|p| std::fs::remove_dir_all(p).is_ok())
            .collect()
    }

    /// Renames a staged version into place.
    fn place(&self, version: &str, aside: &Path) -> Result<(), SwitchError> {
        let dir = self.dir.join(version);
        std::fs::rename(aside, &dir).map_err(io(&dir))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// The running executable kept as `versions/<running>/verdant`, the
    /// way back from the switch.
    fn keep_running(&self) -> Result<(), SwitchError> {
        let running = verdant_common::version::version();
        // The running image itself, even if its file was replaced since.
        let exe = PathBuf::from("/proc/self/exe");
        let manifest = serde_json::json!({ "version": running, "arch": std::env::consts::ARCH,
            "os": std::env::consts::OS, "executable": exe });
        match self.stage(running, &exe, manifest.to_string().as_bytes())? {
            Some(aside) => self.place(running, &aside),
            None => Ok(()),
        }
    }

    /// Checks the release the ota-agent staged (`request`) against the
    /// operator's root and copies it aside (checked again there): what
    /// [`Versions::commit`] installs once it said its version.
    pub fn prepare(&self, request: &pb::SwitchVersionRequest) -> Result<Prepared, SwitchError> {
        if let Some(u) = self.update()
            && u.phase == SWITCHING
        {
            return Err(SwitchError::Refused(format!(
                "an update from {} to {} is under way",
                u.from, u.to
            )));
        }
        let running = verdant_common::version::version();
        let anchor_path = self.root.join(verdant_common::paths::UPDATE_ROOT);
        let anchor = std::fs::read(&anchor_path).map_err(|e| {
            SwitchError::Refused(format!(
                "{}: {e}: the repository's root must be installed there",
                anchor_path.display()
            ))
        })?;
        let refused = |e: &dyn std::fmt::Display| SwitchError::Refused(e.to_string());
        let targets = verdant_update::verify_targets(
            &anchor,
            &request.roots,
            &request.targets,
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|e| refused(&e))?;
        // Init's own memory of the newest metadata it took: older is a
        // rollback, whatever the caller kept.
        let seen = self.seen();
        if targets.root_version < seen.root_version || targets.version < seen.targets_version {
            return Err(SwitchError::Refused(format!(
                "root version {} and targets version {} are older than the {} and {} this core \
                 took before (a rollback)",
                targets.root_version, targets.version, seen.root_version, seen.targets_version
            )));
        }
        let manifest: verdant_update::Manifest =
            serde_json::from_slice(&request.manifest).map_err(|e| refused(&e))?;
        let name = format!("verdant-{}-{}.json", manifest.version, manifest.arch);
        let target = targets
            .targets
            .get(&name)
            .ok_or_else(|| SwitchError::Refused(format!("{name} is not a signed target")))?;
        verdant_update::release::check_target(&name, target, &request.manifest)
            .map_err(|e| refused(&e))?;
        let manifest = verdant_update::release::check_manifest(
            &name,
            &request.manifest,
            running,
            request.force,
        )
        .map_err(|e| refused(&e))?;
        let exe_target = targets.targets.get(&manifest.executable).ok_or_else(|| {
            SwitchError::Refused(format!("{} is not a signed target", manifest.executable))
        })?;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let aside = self.stage(
            &manifest.version,
            Path::new(&request.executable),
            &request.manifest,
        )?;
        let exe = match &aside {
            Some(a) => a.join(EXE),
            None => self.dir.join(&manifest.version).join(EXE),
        };
        if let Err(e) = verdant_update::release::check_file(&manifest.executable, exe_target, &exe)
        {
            if let Some(a) = &aside {
                let _ = std::fs::remove_dir_all(a);
            }
            return Err(refused(&e));
        }
        Ok(Prepared {
            version: manifest.version,
            aside,
            exe,
            seen: Seen {
                root_version: targets.root_version,
                targets_version: targets.version,
            },
        })
    }

    /// Drops what [`Versions::prepare`] staged (refused after all).
    pub fn discard(prepared: &Prepared) {
        if let Some(aside) = &prepared.aside {
            let _ = std::fs::remove_dir_all(aside);
        }
    }

    /// Installs what [`Versions::prepare`] staged (the running version
    /// kept as the way back), says `switching` in `update.json` and points
    /// `current` at it; what init must execute next.
    pub fn commit(&self, prepared: &Prepared, cloud: bool) -> Result<PathBuf, SwitchError> {
        let running = verdant_common::version::version();
        self.keep_running()?;
        let path = self.dir.join("seen.json");
        let seen = serde_json::to_vec(&prepared.seen).expect("serialisable");
        verdant_common::fsutil::replace(&path, &seen, 0o644).map_err(io(&path))?;
        if let Some(aside) = &prepared.aside {
            self.place(&prepared.version, aside)?;
        }
        let now = now_ms();
        self.record(&Update {
            from: running.into(),
            to: prepared.version.clone(),
            phase: SWITCHING.into(),
            reason: String::new(),
            attempts: 0,
            started_ms: now,
            updated_ms: now,
            cloud,
        })?;
        self.point_at(&prepared.version)?;
        tracing::info!(from = running, to = prepared.version, "switching versions");
        Ok(self.dir.join(&prepared.version).join(EXE))
    }

    /// Back to the version the last update came from; what to execute.
    pub fn roll_back(&self, reason: &str) -> Result<PathBuf, SwitchError> {
        let u = self
            .update()
            .ok_or_else(|| SwitchError::Refused("no update to roll back".into()))?;
        let running = verdant_common::version::version();
        if u.phase == ROLLED_BACK {
            return Err(SwitchError::Refused(format!(
                "the last update was rolled back already (to {}); apply a release to go forward",
                u.to
            )));
        }
        if running != u.to {
            return Err(SwitchError::Refused(format!(
                "the core runs {running}, not {}, the version the last update went to",
                u.to
            )));
        }
        self.go_back(&u, reason)
    }

    /// Points `current` back at the version update `u` came from and
    /// records the rollback; what to execute.
    fn go_back(&self, u: &Update, reason: &str) -> Result<PathBuf, SwitchError> {
        let back = &u.from;
        let exe = self.dir.join(back).join(EXE);
        if !exe.is_file() {
            return Err(SwitchError::Refused(format!(
                "{} is not installed",
                exe.display()
            )));
        }
        // `current` first: stopped between the two, the core runs the
        // version it goes back to (and `at_start` ends the record).
        self.point_at(back)?;
        let from = u.to.clone();
        self.record(&Update {
            from: from.clone(),
            to: back.clone(),
            phase: ROLLED_BACK.into(),
            reason: reason.into(),
            updated_ms: now_ms(),
            ..u.clone()
        })?;
        tracing::warn!(from, to = back, "rolling back: {reason}");
        Ok(exe)
    }
}

/// The newest repository metadata a switch was checked with
/// (`versions/seen.json`): init takes nothing older.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Seen {
    root_version: u64,
    targets_version: u64,
}

/// A release checked and copied aside, not installed yet.
#[derive(Debug)]
pub struct Prepared {
    pub version: String,
    /// The metadata versions it was checked with.
    seen: Seen,
    /// The staged directory (`None`: that version is installed already).
    aside: Option<PathBuf>,
    /// Its executable, where it is now.
    pub exe: PathBuf,
}

/// Runs `command` through init's reaper for `limit` at most: how it
/// ended and the first 64 KiB of its output, or why it did not run.
async fn run_captured(
    reaper: &crate::process::Reaper,
    command: std::process::Command,
    limit: Duration,
) -> Result<(crate::process::Exited, String), String> {
    let child = reaper
        .spawn(command)
        .map_err(|e| format!("does not run: {e}"))?;
    let output = child.output.map(std::fs::File::from);
    let read = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        if let Some(mut o) = output {
            let _ =
                std::io::Read::read_to_string(&mut std::io::Read::take(&mut o, 65_536), &mut out);
        }
        out
    });
    let Ok(Ok(how)) = tokio::time::timeout(limit, child.exited).await else {
        crate::process::signal_group(child.pid, nix::sys::signal::Signal::SIGKILL);
        return Err(format!("did not end within {} s", limit.as_secs()));
    };
    Ok((how, read.await.unwrap_or_default()))
}

/// Runs `exe --version` (10 s at most): it must say `verdant <version>`.
pub async fn says_version(
    reaper: &crate::process::Reaper,
    exe: &Path,
    version: &str,
) -> Result<(), SwitchError> {
    let mut command = std::process::Command::new(exe);
    command.arg("--version");
    let (how, out) = run_captured(reaper, command, Duration::from_secs(10))
        .await
        .map_err(|e| SwitchError::Refused(format!("{} --version {e}", exe.display())))?;
    let said = out.lines().next().unwrap_or_default().trim().to_string();
    if how == crate::process::Exited::Code(0) && said == format!("verdant {version}") {
        return Ok(());
    }
    Err(SwitchError::Refused(format!(
        "{} does not run as version {version} ({how}; it said {said:?})",
        exe.display()
    )))
}

/// Runs an update hook (`hook`, relative to the root) if it is there, with
/// `VERDANT_UPDATE_FROM`, `VERDANT_UPDATE_TO` and `VERDANT_ROOT` in its
/// environment: `Err` with why when it fails.
pub async fn run_hook(
    reaper: &crate::process::Reaper,
    root: &Path,
    hook: &Path,
    (from, to): (&str, &str),
    limit: Duration,
) -> Result<(), String> {
    let path = root.join(hook);
    if !path.is_file() {
        return Ok(());
    }
    let mut command = std::process::Command::new(&path);
    command
        .current_dir(root)
        .env("VERDANT_UPDATE_FROM", from)
        .env("VERDANT_UPDATE_TO", to)
        .env("VERDANT_ROOT", root);
    let name = path.display().to_string();
    let (how, out) = run_captured(reaper, command, limit)
        .await
        .map_err(|e| format!("{name} {e}"))?;
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    let last: Vec<&str> = last.into_iter().rev().collect();
    if how == crate::process::Exited::Code(0) {
        tracing::info!(hook = name, "update hook done");
        return Ok(());
    }
    Err(format!("{name} failed ({how}): {}", last.join(" / ")))
}

/// Set by an init that executes the version being switched to, having
/// counted that start: the new init does not count it again.
const COUNTED_ENV: &str = "VERDANT_START_COUNTED";

/// At init's start, before anything else (while the process has one
/// thread): what to execute instead, if anything (the version `current`
/// names, or the previous one when the new version never settled in
/// [`MAX_ATTEMPTS`] starts). A start of the new version is counted by
/// whichever init comes first: the new version's own, or one of another
/// version (the package's, started by a service manager) about to execute
/// it, so that a version that exits at once is rolled back too.
pub fn at_start(root: &Path) -> Option<PathBuf> {
    let versions = Versions::new(root);
    let running = verdant_common::version::version();
    let counted = std::env::var_os(COUNTED_ENV).is_some();
    if counted {
        // SAFETY: one thread (see above).
        unsafe { std::env::remove_var(COUNTED_ENV) };
    }
    // A switch recorded but never made (stopped before `current` named
    // the new version): it ends there.
    if let Some(mut u) = versions.update()
        && u.phase == SWITCHING
        && u.to != running
        && versions.current().as_deref() != Some(u.to.as_str())
    {
        u.phase = FAILED.into();
        u.reason = format!("the core stopped before it switched to {}", u.to);
        u.updated_ms = now_ms();
        let _ = versions.record(&u);
    }
    let switching = versions.update().filter(|u| u.phase == SWITCHING);
    if let Some(u) = &switching
        && u.to == running
        && !counted
        && let ControlFlow::Break(back) = versions.count_start(u.clone())
    {
        return back;
    }
    let target = versions.current_exe()?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let me = std::env::current_exe().ok()?;
    if same(&me, &target) {
        return None;
    }
    if let Some(u) = switching
        && u.to != running
    {
        if let ControlFlow::Break(back) = versions.count_start(u) {
            return back;
        }
        // SAFETY: one thread (see above).
        unsafe { std::env::set_var(COUNTED_ENV, "1") };
    }
    Some(target)
}

/// When init on a version being switched to cannot start (`why`): back
/// to the previous one; what to execute instead.
pub fn start_failed(root: &Path, why: &str) -> Option<PathBuf> {
    switching_here(root)?;
    let running = verdant_common::version::version();
    Versions::new(root)
        .roll_back(&format!("{running} did not start: {why}"))
        .ok()
}

/// When init could not execute `exe` (the version `current` names) at its
/// start: `current` names the running version again (when installed),
/// and an update under way ends `failed`.
pub fn exec_failed(root: &Path, exe: &Path, e: &std::io::Error) {
    let versions = Versions::new(root);
    let running = verdant_common::version::version();
    if versions.dir.join(running).join(EXE).is_file() {
        let _ = versions.point_at(running);
    }
    if let Some(mut u) = versions.update()
        && u.phase == SWITCHING
    {
        u.phase = FAILED.into();
        u.reason = format!("{} could not be executed: {e}", exe.display());
        u.updated_ms = now_ms();
        let _ = versions.record(&u);
    }
}

/// The update to the running version still under way, if any.
pub fn switching_here(root: &Path) -> Option<Update> {
    Versions::new(root)
        .update()
        .filter(|u| u.phase == SWITCHING && u.to == verdant_common::version::version())
}

/// Once the services settled after a start: ends an update to this
/// version: `succeeded` if `failed` (the services that do not run, or
/// why the post-update hook failed) is empty, else rolled back; what to
/// execute instead, when rolling back.
pub fn settled(root: &Path, failed: &[String]) -> Option<PathBuf> {
    let versions = Versions::new(root);
    let running = verdant_common::version::version();
    let mut u = switching_here(root)?;
    if failed.is_empty() {
        u.phase = SUCCEEDED.into();
        u.updated_ms = now_ms();
        let _ = versions.record(&u);
        for old in versions.prune(&[&u.to, &u.from]) {
            tracing::info!(version = old, "removed an older installed version");
        }
        tracing::info!(
            from = u.from,
            to = u.to,
            "update succeeded: every service runs"
        );
        return None;
    }
    let why = format!("on {running}: {}", failed.join("; "));
    match versions.roll_back(&why) {
        Ok(exe) => Some(exe),
        Err(e) => {
            tracing::error!("cannot roll back ({why}): {e}");
            None
        }
    }
}

/// Replaces this process with `exe`, with the same arguments and
/// environment. Returns only if that fails.
pub fn reexec(exe: &Path, held: Option<&crate::sockets::Held>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    tracing::info!(executable = %exe.display(), "executing init again");
    let mut command = std::process::Command::new(exe);
    command
        .arg0(argv0)
        .args(args)
        .env_remove(verdant_common::listen::HELD_ENV);
    if let Some((name, value)) = held.and_then(|h| h.across_exec(exe)) {
        command.env(name, value);
    }
    let e = command.exec();
    if let Some(held) = held {
        held.exec_failed();
    }
    e
}

#[cfg(test)]
mod tests;
