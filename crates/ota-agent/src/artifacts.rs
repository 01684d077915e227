//! The content-addressed store of function code: `<data>/artifacts/<digest>/`
//! holds one unpacked function tree, never changed once there, so every
//! deployment that still names a digest (the current one, the one to roll
//! back to) finds its code as it was. A function's
//! `functions/<name>/<version>` is a symlink into the store, swapped
//! atomically by a deployment.
//!
//! A digest is the SHA-256 of the zip a tree came from ([`Artifacts::put_zip`],
//! the hash the group names) or of the tree itself ([`Artifacts::put_dir`]).
//! Trees are built in a temporary directory beside the entries and renamed
//! into place whole, so an entry under its digest is always complete.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::fetch::{hex, is_sha256, sha256_of};

/// The name of a store entry: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// `hex` as a digest, if it is 64 lowercase hex digits.
    pub fn parse(hex: &str) -> Result<Digest, ArtifactError> {
        if is_sha256(hex) {
            Ok(Digest(hex.to_string()))
        } else {
            Err(ArtifactError::BadDigest { digest: hex.into() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the store could not take or install a tree.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{digest}` is not a digest (64 lowercase hex digits)")]
    BadDigest { digest: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a readable zip: {source}", path.display())]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    /// An entry or a symlink that would reach outside the tree.
    #[error("{}: `{entry}` leaves the tree", path.display())]
    Escape { path: PathBuf, entry: String },
    #[error("{}: neither a file, a directory nor a symlink", path.display())]
    Special { path: PathBuf },
    #[error("{}: SHA-256 is {actual}, expected {expected}", path.display())]
    Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A function's version is a directory put there by hand, and the one
    /// moved aside before is still there too.
    #[error("{} is a directory, and {} is already taken: move one of them away", path.display(), aside.display())]
    Occupied { path: PathBuf, aside: PathBuf },
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Permission bits kept in the store: no setuid, setgid or sticky bits.
const MODE_BITS: u32 = 0o777;

/// The store at `<data>/artifacts`.
#[derive(Debug, Clone)]
pub struct Artifacts {
    root: PathBuf,
}

impl Artifacts {
    /// The store under `data` (the ota-agent's data directory).
    pub fn new(data: &Path) -> Artifacts {
        Artifacts {
            root: data.join("artifacts"),
        }
    }

    /// Where the tree of `digest` is (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(&digest.0)
    }

    /// Unpacks the zip at `zip`, whose SHA-256 is `sha256` (checked), into
    /// the store. Entries that would land outside the tree (`..`, absolute
    /// paths, through or by a symlink) are refused, and nothing is kept.
    pub fn put_zip(&self, zip: &Path, sha256: &str) -> Result<Digest, ArtifactError> {
        let digest = Digest::parse(sha256)?;
        if self.path(&digest).is_dir() {
            return Ok(digest);
        }
        check(zip, sha256)?;
        let tmp = self.temp()?;
        unzip(zip, tmp.path())?;
        self.settle(tmp, digest)
    }

    /// Where a model whose download has `sha256` is kept: under that
    /// digest, or, given to the group `gid` (its `OwnerSetting`), under a
    /// digest of both, a tree of its own apart from the same bytes given
    /// to others.
    pub fn model_key(sha256: &str, gid: Option<u32>) -> Result<Digest, ArtifactError> {
        let digest = Digest::parse(sha256)?;
        Ok(match gid {
            None => digest,
            Some(gid) => Digest(hex(&Sha256::digest(format!("{}:{gid}", digest.0)))),
        })
    }

    /// Puts a machine learning model whose SHA-256 is `sha256` (checked)
    /// into the store, under [`Artifacts::model_key`]; `name` (the URL's
    /// last segment) says what it is: `*.zip` and `*.tar.gz` / `*.tgz` are
    /// unpacked (a tarball's files and directories only; nothing may leave
    /// the tree), any other file is kept as `name` in a directory of its
    /// own. Given to `gid`, the tree is that group's and no one else's:
    /// group `gid`, readable by it, nothing for others.
    pub fn put_model(
        &self,
        file: &Path,
        sha256: &str,
        name: &str,
        gid: Option<u32>,
    ) -> Result<Digest, ArtifactError> {
        let key = Self::model_key(sha256, gid)?;
        if self.path(&key).is_dir() {
            return Ok(key);
        }
        check(file, sha256)?;
        let tmp = self.temp()?;
        let ends = |suffix: &str| {
            name.len()
                .checked_sub(suffix.len())
                .and_then(|at| name.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        };
        if ends(".zip") {
            unzip(file, tmp.path())?;
        } else if ends(".tar.gz") || ends(".tgz") {
            untar_gz(file, tmp.path())?;
        } else {
            let to = tmp.path().join(name);
            std::fs::copy(file, &to).map_err(io_at(&to))?;
            set_mode(&to, 0o444)?;
        }
        if let Some(gid) = gid {
            given_to(tmp.path(), gid)?;
        }
        self.settle(tmp, key)
    }

    /// Copies the tree at `src` into the store. Its digest is the SHA-256
    /// over its entries in order of their relative paths (compared by
    /// component), each with its kind, permission bits and contents (a
    /// symlink: its target). Symlinks are copied as symlinks and must stay
    /// inside the tree.
    pub fn put_dir(&self, src: &Path) -> Result<Digest, ArtifactError> {
        check_links(src)?;
        let tmp = self.temp()?;
        let mut hasher = Sha256::new();
        copy_tree(src, tmp.path(), Path::new(""), &mut hasher)?;
        let digest = Digest(hex(&hasher.finalize()));
        self.settle(tmp, digest)
    }

    /// Points `<functions>/<name>/<version>` at the tree of `digest` by a
    /// relative symlink, swapped atomically (`<version>.tmp`, renamed over).
    /// A directory put there by hand is moved aside to
    /// `<version>.before-deployment` the first time.
    pub fn install(
        &self,
        functions: &Path,
        name: &str,
        version: &str,
        digest: &Digest,
    ) -> Result<PathBuf, ArtifactError> {
        for part in [name, version] {
            if part.is_empty() || part.contains('/') || part == "." || part == ".." {
                return Err(ArtifactError::Escape {
                    path: functions.to_path_buf(),
                    entry: part.into(),
                });
            }
        }
        let entry = self.path(digest);
        if !entry.is_dir() {
            return Err(ArtifactError::Io {
                path: entry,
                source: io::ErrorKind::NotFound.into(),
            });
        }
        let dir = functions.join(name);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            set_mode(&dir, 0o755)?;
        }
        let link = dir.join(version);
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if !meta.file_type().is_symlink() => {
                let aside = dir.join(format!("{version}.before-deployment"));
                if std::fs::symlink_metadata(&aside).is_ok() {
                    return Err(ArtifactError::Occupied { path: link, aside });
                }
                std::fs::rename(&link, &aside).map_err(io_at(&link))?;
            }
            _ => {}
        }
        let target = relative(&dir, &entry).map_err(io_at(&entry))?;
        let tmp = dir.join(format!("{version}.tmp"));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&tmp)(e)),
            _ => {}
        }
        symlink(&target, &tmp).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(io_at(&link))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&dir))?;
        Ok(link)
    }

    /// Removes every entry whose digest is not in `keep`, and what an
    /// interrupted put left behind. Returns the digests removed. The
    /// caller keeps every digest a function still points at.
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<Vec<Digest>, ArtifactError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&self.root)(e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = Digest::parse(&name).ok();
            let stale = name.starts_with(".tmp");
            if stale || digest.as_ref().is_some_and(|d| !keep.contains(d)) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io_at(&path))?;
                removed.extend(digest);
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// A fresh directory beside the entries (so it renames into place).
    fn temp(&self) -> Result<tempfile::TempDir, ArtifactError> {
        if !self.root.is_dir() {
            std::fs::create_dir_all(&self.root).map_err(io_at(&self.root))?;
            // Functions run as their own users and read their code through it.
            set_mode(&self.root, 0o755)?;
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempdir_in(&self.root)
            .map_err(io_at(&self.root))?;
        set_mode(tmp.path(), 0o755)?;
        Ok(tmp)
    }

    /// Renames the finished `tmp` to the entry of `digest`, unless an equal
    /// entry is there already.
    fn settle(&self, tmp: tempfile::TempDir, digest: Digest) -> Result<Digest, ArtifactError> {
        check_links(tmp.path())?;
        let to = self.path(&digest);
        if to.is_dir() {
            return Ok(digest);
        }
        let from = tmp.keep();
        std::fs::rename(&from, &to).map_err(|source| {
            let _ = std::fs::remove_dir_all(&from);
            ArtifactError::Io {
                path: to.clone(),
                source,
            }
        })?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.root))?;
        Ok(digest)
    }
}

/// Extracts `zip` into the empty directory `into`. No entry may lie under
/// a symlink entry, so no write goes through a link.
fn unzip(zip: &Path, into: &Path) -> Result<(), ArtifactError> {
    let zip_err = |source| ArtifactError::Zip {
        path: zip.to_path_buf(),
        source,
    };
    let escape =
        |name: Result<std::borrow::Cow<'_, str>, zip::result::ZipError>| ArtifactError::Escape {
            path: zip.to_path_buf(),
            entry: name.map_or_else(|e| e.to_string(), std::borrow::Cow::into_owned),
        };
    let file = File::open(zip).map_err(io_at(zip))?;
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut links = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(zip_err)?;
        let rel = entry.enclosed_name().ok_or_else(|| escape(entry.name()))?;
        if entry.is_symlink() {
            links.push(rel);
        }
    }
    let linked: HashSet<&Path> = links.iter().map(PathBuf::as_path).collect();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let rel = entry.enclosed_name().ok_or_else(|| escape(entry.name()))?;
        if rel.ancestors().skip(1).any(|a| linked.contains(a)) {
            return Err(escape(entry.name()));
        }
        let to = into.join(&rel);
        let mode = entry.unix_mode().map(|m| m & MODE_BITS);
        if entry.is_symlink() {
            let mut target = String::new();
            entry.read_to_string(&mut target).map_err(io_at(&to))?;
            if leaves(&rel, Path::new(&target)) {
                return Err(escape(entry.name()));
            }
            make_parent(&to)?;
            symlink(&target, &to).map_err(io_at(&to))?;
        } else if entry.is_dir() {
            std::fs::create_dir_all(&to).map_err(io_at(&to))?;
            set_mode(&to, readable_dir(mode.unwrap_or(0o755)))?;
        } else {
            make_parent(&to)?;
            let mut out = File::create_new(&to).map_err(io_at(&to))?;
            io::copy(&mut entry, &mut out).map_err(io_at(&to))?;
            out.sync_all().map_err(io_at(&to))?;
            set_mode(&to, readable_file(mode.unwrap_or(0o644)))?;
        }
    }
    Ok(())
}

/// That `file` has the SHA-256 `sha256`.
fn check(file: &Path, sha256: &str) -> Result<(), ArtifactError> {
    let actual = File::open(file).and_then(sha256_of).map_err(io_at(file))?;
    if actual == sha256 {
        Ok(())
    } else {
        Err(ArtifactError::Mismatch {
            path: file.to_path_buf(),
            expected: sha256.into(),
            actual,
        })
    }
}

/// Gives the tree at `root` to group `gid`: its group, read (and enter,
/// and run what its owner may run) for the group, nothing for others.
fn given_to(root: &Path, gid: u32) -> Result<(), ArtifactError> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        std::os::unix::fs::lchown(&path, None, Some(gid)).map_err(io_at(&path))?;
        if meta.is_dir() {
            set_mode(&path, 0o750)?;
            for entry in std::fs::read_dir(&path).map_err(io_at(&path))? {
                todo.push(entry.map_err(io_at(&path))?.path());
            }
        } else {
            let exec = meta.permissions().mode() & 0o100 != 0;
            set_mode(&path, if exec { 0o750 } else { 0o640 })?;
        }
    }
    Ok(())
}

/// Extracts the gzipped tarball `file` into the empty directory `into`:
/// its files and directories only, each inside `into`, readable by every
/// function's user.
fn untar_gz(file: &Path, into: &Path) -> Result<(), ArtifactError> {
    let f = File::open(file).map_err(io_at(file))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let entries = archive.entries().map_err(io_at(file))?;
    for entry in entries {
        let mut entry = entry.map_err(io_at(file))?;
        let rel = entry.path().map_err(io_at(file))?.into_owned();
        let escape = || ArtifactError::Escape {
            path: file.to_path_buf(),
            entry: rel.display().to_string(),
        };
        if rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        }) {
            return Err(escape());
        }
        let to = into.join(&rel);
        let mode = entry.header().mode().unwrap_or(0o644) & MODE_BITS;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&to).map_err(io_at(&to))?;
                set_mode(&to, readable_dir(mode))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                make_parent(&to)?;
                let mut out = File::create_new(&to).map_err(io_at(&to))?;
                io::copy(&mut entry, &mut out).map_err(io_at(&to))?;
                out.sync_all().map_err(io_at(&to))?;
                set_mode(&to, readable_file(mode))?;
            }
            // Global and extended headers carry no file.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            _ => return Err(ArtifactError::Special { path: to }),
        }
    }
    Ok(())
}

fn make_parent(path: &Path) -> Result<(), ArtifactError> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(io_at(parent)),
        None => Ok(()),
    }
}

/// A directory of the store: every function's user may list and enter it
/// (the functions run as users other than the one that unpacked them).
fn readable_dir(mode: u32) -> u32 {
    // Never writable but by the store's owner: a tree never changes.
    (mode & 0o755) | 0o555
}

/// A file of the store: readable by every function's user; executable
/// for all if it was for its owner.
fn readable_file(mode: u32) -> u32 {
    let exec = if mode & 0o100 != 0 { 0o111 } else { 0 };
    (mode & 0o755) | 0o444 | exec
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArtifactError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_at(path))
}

/// Whether the symlink at `rel` (relative to the tree's root) pointing at
/// `target` leaves the tree, read as written.
pub(crate) fn leaves(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = rel.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Refuses a symlink in the tree at `root` that leaves it, as written or
/// as resolved (through other links).
fn check_links(root: &Path) -> Result<(), ArtifactError> {
    let real_root = root.canonicalize().map_err(io_at(root))?;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            let rel = rel.join(entry.file_name());
            let kind = entry.file_type().map_err(io_at(&entry.path()))?;
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_symlink() {
                let path = entry.path();
                let target = std::fs::read_link(&path).map_err(io_at(&path))?;
                let outside = leaves(&rel, &target)
                    || path
                        .canonicalize()
                        .is_ok_and(|real| !real.starts_with(&real_root));
                if outside {
                    return Err(ArtifactError::Escape {
                        path: root.to_path_buf(),
                        entry: format!("{} -> {}", rel.display(), target.display()),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Copies the tree `src/rel` to `dst/rel`, hashing each entry (in sorted
/// order) into `hasher`.
fn copy_tree(src: &Path, dst: &Path, rel: &Path, hasher: &mut Sha256) -> Result<(), ArtifactError> {
    let from = src.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&from)
        .map_err(io_at(&from))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_at(&from))?;
    names.sort();
    for name in names {
        let rel = rel.join(name);
        let (path, to) = (src.join(&rel), dst.join(&rel));
        let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
        let mode = meta.permissions().mode() & MODE_BITS;
        let kind = meta.file_type();
        let (tag, mode) = if kind.is_symlink() {
            (b'l', 0)
        } else if kind.is_dir() {
            (b'd', mode)
        } else if kind.is_file() {
            (b'f', mode)
        } else {
            return Err(ArtifactError::Special { path });
        };
        hasher.update([tag]);
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(mode.to_be_bytes());
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_at(&path))?;
            let bytes = target.as_os_str().as_encoded_bytes();
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
            symlink(&target, &to).map_err(io_at(&to))?;
        } else if kind.is_dir() {
            std::fs::create_dir(&to).map_err(io_at(&to))?;
            copy_tree(src, dst, &rel, hasher)?;
            set_mode(&to, readable_dir(mode))?;
        } else {
            hasher.update(meta.len().to_be_bytes());
            let mut input = File::open(&path).map_err(io_at(&path))?;
            let mut out = File::create_new(&to).map_err(io_at(&to))?;
            let mut tee = Tee {
                out: &mut out,
                hasher,
            };
            io::copy(&mut input, &mut tee).map_err(io_at(&to))?;
            out.sync_all().map_err(io_at(&to))?;
            set_mode(&to, readable_file(mode))?;
        }
    }
    Ok(())
}

/// Writes to a file and a hasher at once.
struct Tee<'a> {
    out: &'a mut File,
    hasher: &'a mut Sha256,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The path of `to` relative to the directory `from` (both made real).
fn relative(from: &Path, to: &Path) -> io::Result<PathBuf> {
    let (from, to) = (from.canonicalize()?, to.canonicalize()?);
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out: PathBuf = from.components().skip(common).map(|_| "..").collect();
    out.extend(to.components().skip(common));
    Ok(out)
}

#[cfg(test)]
mod tests;
