//! A deployment bundle: a group and the code of its functions, as a
//! directory or a tarball (`.tar`, `.tar.gz`, `.tgz`):
//!
//! ```text
//! group.json
//! functions/<name>/<version>/...      a function's tree, or
//! functions/<name>/<version>.zip      a zip of it
//! ```
//!
//! A tarball may also hold all of this under one top-level directory. It
//! is unpacked into a scratch directory the caller owns (and removes);
//! entries that would land outside it (`..`, absolute paths, links out)
//! are refused, as are devices and pipes.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::artifacts::leaves;

/// A bundle, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `group.json` as it is (the engine parses and validates it).
    pub group_json: Vec<u8>,
    /// Sorted by name, then version.
    pub functions: Vec<BundledFunction>,
}

/// One function's code in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundledFunction {
    pub name: String,
    pub version: String,
    pub source: Source,
}

/// Where the code is, inside the bundle or its scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `functions/<name>/<version>/`.
    Dir(PathBuf),
    /// `functions/<name>/<version>.zip`.
    Zip(PathBuf),
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a bundle: expected a directory, .tar, .tar.gz or .tgz", path.display())]
    Unsupported { path: PathBuf },
    /// An entry that would land outside the bundle.
    #[error("{}: `{entry}` leaves the bundle", path.display())]
    Escape { path: PathBuf, entry: String },
    #[error("{}: `{entry}` is a device, pipe or other special file", path.display())]
    Special { path: PathBuf, entry: String },
    #[error("{}: no group.json", path.display())]
    MissingGroup { path: PathBuf },
    /// Something under `functions/` that is not `<name>/<version>/` or
    /// `<name>/<version>.zip`.
    #[error("{}: {reason}", path.display())]
    Unexpected { path: PathBuf, reason: &'static str },
    #[error("{name} {version} is in the bundle twice (a directory and a zip)")]
    Duplicate { name: String, version: String },
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Bundle {
    /// Reads the bundle at `path`; a tarball is unpacked into `scratch`
    /// (created if missing), where the functions' sources then are.
    pub fn open(path: &Path, scratch: &Path) -> Result<Bundle, BundleError> {
        let meta = std::fs::metadata(path).map_err(io_at(path))?;
        if meta.is_dir() {
            return scan(path);
        }
        scan(&unpack(path, scratch)?)
    }
}

/// Unpacks the tarball (`.tar`, `.tar.gz`, `.tgz`) at `path` into
/// `scratch` (created if missing); the directory its content is in: the
/// one top-level directory it holds, if it holds nothing else, else
/// `scratch`. Entries leaving `scratch` and special files are refused.
pub fn unpack(path: &Path, scratch: &Path) -> Result<PathBuf, BundleError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let file = File::open(path).map_err(io_at(path))?;
    let is = |suffix: &str| name.ends_with(suffix);
    let reader: Box<dyn Read> = if is(".tar.gz") || is(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if is(".tar") {
        Box::new(file)
    } else {
        return Err(BundleError::Unsupported {
            path: path.to_path_buf(),
        });
    };
    std::fs::create_dir_all(scratch).map_err(io_at(scratch))?;
    untar(path, reader, scratch)?;
    Ok(only_dir(scratch)?.unwrap_or_else(|| scratch.to_path_buf()))
}

/// Unpacks the tarball `path` (read from `reader`) into `into`.
fn untar(path: &Path, reader: Box<dyn Read>, into: &Path) -> Result<(), BundleError> {
    let escape = |entry: &Path| BundleError::Escape {
        path: path.to_path_buf(),
        entry: entry.display().to_string(),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(false);
    for entry in archive.entries().map_err(io_at(path))? {
        let mut entry = entry.map_err(io_at(path))?;
        let rel = entry.path().map_err(io_at(path))?.into_owned();
        let plain = |p: &Path| {
            p.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        };
        if !plain(&rel) {
            return Err(escape(&rel));
        }
        let kind = entry.header().entry_type();
        let link = entry.link_name().map_err(io_at(path))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                if link.is_none_or(|target| leaves(&rel, &target)) {
                    return Err(escape(&rel));
                }
            }
            tar::EntryType::Link => {
                if link.is_none_or(|target| !plain(&target)) {
                    return Err(escape(&rel));
                }
            }
            // Extended headers carry long names; tar applies them itself.
            tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            _ => {
                return Err(BundleError::Special {
                    path: path.to_path_buf(),
                    entry: rel.display().to_string(),
                });
            }
        }
        // `false`: tar would have written outside `into` (through a link).
        if !entry.unpack_in(into).map_err(io_at(&into.join(&rel)))? {
            return Err(escape(&rel));
        }
    }
    Ok(())
}

/// The one directory `dir` holds, if it holds nothing else.
fn only_dir(dir: &Path) -> Result<Option<PathBuf>, BundleError> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_at(dir))?;
    match entries.as_slice() {
        [one] if one.file_type().map_err(io_at(dir))?.is_dir() => Ok(Some(one.path())),
        _ => Ok(None),
    }
}

/// Reads the bundle laid out in the directory `root`.
fn scan(root: &Path) -> Result<Bundle, BundleError> {
    let real_root = root.canonicalize().map_err(io_at(root))?;
    // A path of the bundle's layout, refused if a link takes it outside.
    let inside = |path: &Path| -> Result<PathBuf, BundleError> {
        let real = path.canonicalize().map_err(io_at(path))?;
        if real.starts_with(&real_root) {
            Ok(real)
        } else {
            Err(BundleError::Escape {
                path: root.to_path_buf(),
                entry: path
                    .strip_prefix(root)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            })
        }
    };
    let group = root.join("group.json");
    if std::fs::symlink_metadata(&group).is_err() {
        return Err(BundleError::MissingGroup {
            path: root.to_path_buf(),
        });
    }
    let group_json = std::fs::read(inside(&group)?).map_err(io_at(&group))?;
    let mut functions = Vec::new();
    let dir = root.join("functions");
    if std::fs::symlink_metadata(&dir).is_ok() {
        for name_dir in sorted(&inside(&dir)?)? {
            let name = file_name(&name_dir)?;
            let name_dir = inside(&name_dir)?;
            if !name_dir.is_dir() {
                return Err(BundleError::Unexpected {
                    path: name_dir,
                    reason: "expected a directory functions/<name>/",
                });
            }
            for version_path in sorted(&name_dir)? {
                let file = file_name(&version_path)?;
                let real = inside(&version_path)?;
                let (version, source) = if real.is_dir() {
                    (file, Source::Dir(real))
                } else if let Some(v) = file.strip_suffix(".zip").filter(|v| !v.is_empty()) {
                    (v.to_string(), Source::Zip(real))
                } else {
                    return Err(BundleError::Unexpected {
                        path: version_path,
                        reason: "expected functions/<name>/<version>/ or <version>.zip",
                    });
                };
                functions.push(BundledFunction {
                    name: name.clone(),
                    version,
                    source,
                });
            }
        }
    }
    functions.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    if let Some(pair) = functions
        .windows(2)
        .find(|w| (&w[0].name, &w[0].version) == (&w[1].name, &w[1].version))
    {
        return Err(BundleError::Duplicate {
            name: pair[0].name.clone(),
            version: pair[0].version.clone(),
        });
    }
    Ok(Bundle {
        group_json,
        functions,
    })
}

/// The entries of `dir`, sorted.
fn sorted(dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_at(dir))?;
    paths.sort();
    Ok(paths)
}

/// A name of the layout: UTF-8 and not hidden.
fn file_name(path: &Path) -> Result<String, BundleError> {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(n) if !n.starts_with('.') => Ok(n.to_string()),
        _ => Err(BundleError::Unexpected {
            path: path.to_path_buf(),
            reason: "a function's name or version is UTF-8 and does not start with `.`",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const GROUP: &str = r#"{"Id": "g"}"#;

    /// `(path, contents)` of files, or `(path, target)` of symlinks.
    type Entries<'a> = &'a [(&'a str, &'a str)];

    /// A tar.gz (or plain tar) of `(path, contents)`; a path ending in
    /// `/` is a directory. Names are written raw, so `../x` goes in as is.
    fn tarball(path: &Path, entries: &[(&str, &str)], links: &[(&str, &str)]) {
        let file = File::create(path).unwrap();
        let out: Box<dyn Write> = if path.extension().is_some_and(|e| e == "tar") {
            Box::new(file)
        } else {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ))
        };
        let mut builder = tar::Builder::new(out);
        let raw = |header: &mut tar::Header, name: &str| {
            let bytes = &mut header.as_old_mut().name;
            bytes.fill(0);
            bytes[..name.len()].copy_from_slice(name.as_bytes());
        };
        for (name, contents) in entries {
            let mut header = tar::Header::new_gnu();
            raw(&mut header, name);
            if name.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
            } else {
                header.set_mode(0o644);
                header.set_size(contents.len() as u64);
            }
            header.set_cksum();
            builder.append(&header, contents.as_bytes()).unwrap();
        }
        for (name, target) in links {
            let mut header = tar::Header::new_gnu();
            raw(&mut header, name);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_link_name(target).unwrap();
            header.set_cksum();
            builder.append(&header, io::empty()).unwrap();
        }
        builder.into_inner().unwrap().flush().unwrap();
    }

    fn names(b: &Bundle) -> Vec<(String, String)> {
        b.functions
            .iter()
            .map(|f| (f.name.clone(), f.version.clone()))
            .collect()
    }

    #[test]
    fn a_directory_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundle");
        std::fs::create_dir_all(root.join("functions/hello/3/lib")).unwrap();
        std::fs::write(root.join("functions/hello/3/main.py"), "x").unwrap();
        std::fs::create_dir_all(root.join("functions/zipped")).unwrap();
        std::fs::write(root.join("functions/zipped/1.zip"), "PK").unwrap();
        std::fs::write(root.join("group.json"), GROUP).unwrap();
        let b = Bundle::open(&root, &dir.path().join("scratch")).unwrap();
        assert_eq!(b.group_json, GROUP.as_bytes());
        assert_eq!(
            names(&b),
            [("hello".into(), "3".into()), ("zipped".into(), "1".into())]
        );
        let real = root.canonicalize().unwrap();
        assert_eq!(
            b.functions[0].source,
            Source::Dir(real.join("functions/hello/3"))
        );
        assert_eq!(
            b.functions[1].source,
            Source::Zip(real.join("functions/zipped/1.zip"))
        );
        // A directory bundle is read in place.
        assert!(!dir.path().join("scratch").exists());

        std::fs::write(root.join("functions/hello/3.zip"), "PK").unwrap();
        let err = Bundle::open(&root, &dir.path().join("scratch")).unwrap_err();
        assert!(matches!(err, BundleError::Duplicate { .. }), "{err}");
        std::fs::remove_file(root.join("functions/hello/3.zip")).unwrap();

        std::os::unix::fs::symlink("/etc", root.join("functions/etc")).unwrap();
        let err = Bundle::open(&root, &dir.path().join("scratch")).unwrap_err();
        assert!(matches!(err, BundleError::Escape { .. }), "{err}");
    }

    #[test]
    fn a_tar_gz_bundle_unpacks_into_the_scratch_directory() {
        let dir = tempfile::tempdir().unwrap();
        // `./` as `tar -C dir .` writes it, and one top-level directory.
        for (file, prefix) in [
            ("b.tar.gz", ""),
            ("b.tgz", "top/"),
            ("b.tar", ""),
            ("dot.tgz", "./"),
        ] {
            let tgz = dir.path().join(file);
            let p = |s: &str| format!("{prefix}{s}");
            let files = [
                (p("group.json"), GROUP),
                (p("functions/hello/3/"), ""),
                (p("functions/hello/3/main.py"), "print(1)"),
                (p("functions/zipped/1.zip"), "PK"),
            ];
            let mut entries: Vec<(&str, &str)> =
                files.iter().map(|(n, c)| (n.as_str(), *c)).collect();
            if !prefix.is_empty() {
                entries.insert(0, (prefix, ""));
            }
            tarball(
                &tgz,
                &entries,
                &[(&p("functions/hello/3/alias.py"), "main.py")],
            );
            let scratch = dir.path().join(format!("scratch-{file}"));
            let b = Bundle::open(&tgz, &scratch).unwrap();
            assert_eq!(b.group_json, GROUP.as_bytes(), "{file}");
            assert_eq!(
                names(&b),
                [("hello".into(), "3".into()), ("zipped".into(), "1".into())]
            );
            let Source::Dir(tree) = &b.functions[0].source else {
                panic!("{:?}", b.functions[0]);
            };
            assert!(tree.starts_with(scratch.canonicalize().unwrap()));
            assert_eq!(
                std::fs::read_to_string(tree.join("alias.py")).unwrap(),
                "print(1)"
            );
        }
        let err = Bundle::open(&dir.path().join("b.zip"), &dir.path().join("s")).unwrap_err();
        assert!(matches!(err, BundleError::Io { .. }), "{err}");
        std::fs::write(dir.path().join("b.zip"), "PK").unwrap();
        let err = Bundle::open(&dir.path().join("b.zip"), &dir.path().join("s")).unwrap_err();
        assert!(matches!(err, BundleError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn tarball_entries_leaving_the_bundle_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("a/b/scratch");
        let cases: [(Entries, Entries); 4] = [
            (&[("group.json", GROUP), ("../escaped", "x")], &[]),
            (&[("group.json", GROUP), ("/tmp/escaped", "x")], &[]),
            (&[("group.json", GROUP)], &[("functions", "/etc")]),
            (&[("group.json", GROUP)], &[("functions", "../..")]),
        ];
        for (i, (entries, links)) in cases.into_iter().enumerate() {
            let tgz = dir.path().join(format!("{i}.tar.gz"));
            tarball(&tgz, entries, links);
            let err = Bundle::open(&tgz, &scratch.join(i.to_string())).unwrap_err();
            assert!(matches!(err, BundleError::Escape { .. }), "{i}: {err}");
        }
        assert!(!dir.path().join("a/b/escaped").exists());
        assert!(!Path::new("/tmp/escaped").exists());
    }

    #[test]
    fn a_bundle_without_group_json_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("b.tar.gz");
        tarball(&tgz, &[("functions/hello/3/main.py", "x")], &[]);
        let err = Bundle::open(&tgz, &dir.path().join("scratch")).unwrap_err();
        assert!(matches!(err, BundleError::MissingGroup { .. }), "{err}");
        assert!(err.to_string().ends_with("no group.json"), "{err}");

        let root = dir.path().join("empty");
        std::fs::create_dir(&root).unwrap();
        let err = Bundle::open(&root, &dir.path().join("scratch2")).unwrap_err();
        assert!(matches!(err, BundleError::MissingGroup { .. }), "{err}");
    }
}
