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
        let actual = File::open(zip).and_then(sha256_of).map_err(io_at(zip))?;
        if actual != sha256 {
            return Err(ArtifactError::Mismatch {
                path: zip.to_path_buf(),
                expected: sha256.into(),
                actual,
            });
        }
        let tmp = self.temp()?;
        unzip(zip, tmp.path())?;
        self.settle(tmp, digest)
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

fn make_parent(path: &Path) -> Result<(), ArtifactError> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(io_at(parent)),
        None => Ok(()),
    }
}

/// A directory of the store: every function's user may list and enter it
/// (the functions run as users other than the one that unpacked them).
fn readable_dir(mode: u32) -> u32 {
    mode | 0o555
}

/// A file of the store: readable by every function's user; executable
/// for all if it was for its owner.
fn readable_file(mode: u32) -> u32 {
    let exec = if mode & 0o100 != 0 { 0o111 } else { 0 };
    mode | 0o444 | exec
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
mod tests {
    use super::*;

    /// Writes a zip of `(name, contents, unix mode)`; a mode with
    /// `0o120000` makes a symlink to `contents`.
    pub(crate) fn write_zip(path: &Path, entries: &[(&str, &str, u32)]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, contents, mode) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .unix_permissions(*mode & 0o7777);
            if mode & 0o170_000 == 0o120_000 {
                w.add_symlink(*name, *contents, options).unwrap();
            } else {
                w.start_file(*name, options).unwrap();
                w.write_all(contents.as_bytes()).unwrap();
            }
        }
        w.finish().unwrap();
    }

    fn sha_of(path: &Path) -> String {
        sha256_of(File::open(path).unwrap()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Only entries, no temporary directories left.
    fn names(store: &Artifacts) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&store.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn zips_unpack_into_their_digest_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("data"));
        let zip = dir.path().join("f.zip");
        write_zip(
            &zip,
            &[
                ("main.py", "def handler(e, c):\n    return e\n", 0o644),
                ("bin/run", "#!/bin/sh\n", 0o755),
                ("lib/helper.py", "x = 1\n", 0o644),
                ("helper.py", "lib/helper.py", 0o120_777),
            ],
        );
        let sha = sha_of(&zip);
        let digest = store.put_zip(&zip, &sha).unwrap();
        assert_eq!(digest.as_str(), sha);
        let tree = store.path(&digest);
        assert_eq!(mode(&tree), 0o755);
        assert_eq!(mode(&store.root), 0o755);
        assert!(
            std::fs::read_to_string(tree.join("main.py"))
                .unwrap()
                .contains("handler")
        );
        assert_eq!(mode(&tree.join("bin/run")), 0o755);
        assert_eq!(mode(&tree.join("lib/helper.py")), 0o644);
        assert_eq!(
            std::fs::read_to_string(tree.join("helper.py")).unwrap(),
            "x = 1\n"
        );
        // Again: the entry is there already.
        assert_eq!(store.put_zip(&zip, &sha).unwrap(), digest);
        assert_eq!(names(&store), [sha]);

        let wrong = "0".repeat(64);
        let err = store.put_zip(&zip, &wrong).unwrap_err();
        assert!(matches!(err, ArtifactError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn zips_reaching_outside_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("data"));
        let cases: [&[(&str, &str, u32)]; 4] = [
            &[("../../escaped.py", "x = 1\n", 0o644)],
            &[("ok.py", "", 0o644), ("link", "/etc", 0o120_777)],
            &[("link", "sub/../..", 0o120_777)],
            // Through a link that itself stays inside.
            &[("here", ".", 0o120_777), ("here/x.py", "x", 0o644)],
        ];
        for (i, entries) in cases.into_iter().enumerate() {
            let zip = dir.path().join(format!("{i}.zip"));
            write_zip(&zip, entries);
            let err = store.put_zip(&zip, &sha_of(&zip)).unwrap_err();
            assert!(matches!(err, ArtifactError::Escape { .. }), "{i}: {err}");
            assert_eq!(names(&store), Vec::<String>::new(), "{i}");
        }
        assert!(!dir.path().join("escaped.py").exists());
    }

    #[test]
    fn trees_copy_with_a_digest_over_paths_modes_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("data"));
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(src.join("main.py"), "print(1)\n").unwrap();
        std::fs::write(src.join("lib/a.py"), "a = 1\n").unwrap();
        symlink("lib/a.py", src.join("a.py")).unwrap();
        let first = store.put_dir(&src).unwrap();
        let tree = store.path(&first);
        assert_eq!(
            std::fs::read_to_string(tree.join("a.py")).unwrap(),
            "a = 1\n"
        );
        assert!(
            std::fs::symlink_metadata(tree.join("a.py"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(store.put_dir(&src).unwrap(), first);

        set_mode(&src.join("main.py"), 0o4755).unwrap();
        let second = store.put_dir(&src).unwrap();
        assert_ne!(second, first);
        // No setuid bit in the store.
        assert_eq!(mode(&store.path(&second).join("main.py")), 0o755);
        std::fs::write(src.join("main.py"), "print(2)\n").unwrap();
        assert_ne!(store.put_dir(&src).unwrap(), second);

        symlink("../../outside", src.join("lib/out")).unwrap();
        let err = store.put_dir(&src).unwrap_err();
        assert!(matches!(err, ArtifactError::Escape { .. }), "{err}");
        assert_eq!(names(&store).len(), 3);
    }

    #[test]
    fn install_swaps_a_symlink_and_moves_a_hand_made_directory_aside_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("data"));
        let functions = dir.path().join("functions");
        let put = |text: &str| {
            let src = dir.path().join(text);
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("main.py"), text).unwrap();
            store.put_dir(&src).unwrap()
        };
        let (one, two) = (put("one"), put("two"));
        let by_hand = functions.join("hello/3");
        std::fs::create_dir_all(&by_hand).unwrap();
        std::fs::write(by_hand.join("main.py"), "by hand").unwrap();

        let link = store.install(&functions, "hello", "3", &one).unwrap();
        assert_eq!(link, by_hand);
        assert_eq!(
            std::fs::read_to_string(link.join("main.py")).unwrap(),
            "one"
        );
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.is_relative(), "{}", target.display());
        let aside = functions.join("hello/3.before-deployment");
        assert_eq!(
            std::fs::read_to_string(aside.join("main.py")).unwrap(),
            "by hand"
        );

        store.install(&functions, "hello", "3", &two).unwrap();
        assert_eq!(
            std::fs::read_to_string(link.join("main.py")).unwrap(),
            "two"
        );
        assert!(!functions.join("hello/3.tmp").exists());

        // A second hand-made directory does not overwrite the first.
        std::fs::remove_file(&link).unwrap();
        std::fs::create_dir(&link).unwrap();
        let err = store.install(&functions, "hello", "3", &one).unwrap_err();
        assert!(matches!(err, ArtifactError::Occupied { .. }), "{err}");

        let err = store.install(&functions, "..", "3", &one).unwrap_err();
        assert!(matches!(err, ArtifactError::Escape { .. }), "{err}");
    }

    #[test]
    fn gc_removes_what_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::new(&dir.path().join("data"));
        let mut digests = Vec::new();
        for text in ["a", "b", "c"] {
            let src = dir.path().join(text);
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("f"), text).unwrap();
            digests.push(store.put_dir(&src).unwrap());
        }
        std::fs::create_dir(store.root.join(".tmpLEFT")).unwrap();
        let keep: HashSet<Digest> = [digests[1].clone()].into();
        let mut gone = vec![digests[0].clone(), digests[2].clone()];
        gone.sort();
        assert_eq!(store.gc(&keep).unwrap(), gone);
        assert_eq!(names(&store), [digests[1].to_string()]);
        assert!(store.gc(&keep).unwrap().is_empty());
    }
}
