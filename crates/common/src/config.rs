//! Configuration: one TOML file per core plus drop-ins.
//!
//! The core file is `<root>/config/verdant.toml`; every `*.toml` file in
//! `config.d/` beside it is applied on top, in name order (tables merge key
//! by key, any other value is replaced). Each section is owned by one reader
//! (`core` and `services` by init, `broker` by the broker, ...), which
//! deserializes it into its own type with `#[serde(default,
//! deny_unknown_fields)]`. Every file is checked on its own first, so an
//! error names the file it is in, the key path and the reason:
//!
//! ```text
//! /var/lib/verdant/config/config.d/10-lab.toml: services.broker.bogus: unknown field `bogus`, expected ...
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `[core]`: what the whole core shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreSection {
    /// The core's thing name: the subject of its certificate.
    pub thing_name: String,
    /// Where the sockets live (default `<root>/run`).
    pub runtime_dir: Option<PathBuf>,
}

impl Default for CoreSection {
    fn default() -> Self {
        CoreSection {
            thing_name: "verdant-core".into(),
            runtime_dir: None,
        }
    }
}

/// Why configuration could not be loaded. Always a caller's fault (the
/// operator's files), so daemons exit with [`crate::exit::CONFIG`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// A value of a daemon's section that parses but cannot work: the key it
/// is at (`broker.max_inflight`) and why. Like [`ConfigError`], always the
/// operator's to fix, so daemons exit with [`crate::exit::CONFIG`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A daemon's section of the core config (`[broker]`, ...): its type, the
/// name it is found under, and the checks serde cannot make.
pub trait Section: DeserializeOwned + Default {
    /// The top-level key: the daemon's service name.
    const NAME: &'static str;

    /// Problems that stop the daemon from starting.
    fn check(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// The section from `source`, merged and checked; the daemon's error
    /// `E` says which of the two went wrong.
    fn load<E: From<ConfigError> + From<Invalid>>(source: &ConfigSource) -> Result<Self, E> {
        let section: Self = source.section(Self::NAME)?;
        section.check()?;
        Ok(section)
    }
}

impl Section for CoreSection {
    const NAME: &'static str = "core";
}

/// The parsed files of one core's configuration, in the order they apply.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    files: Vec<(PathBuf, toml::Table)>,
}

impl ConfigSource {
    /// Reads `main` and the sorted `config.d/*.toml` drop-ins beside it.
    pub fn load(main: &Path) -> Result<Self, ConfigError> {
        let mut files = vec![(main.to_path_buf(), parse_file(main)?)];
        let dropin_dir = main.with_file_name("config.d");
        let mut dropins = match std::fs::read_dir(&dropin_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: dropin_dir,
                    source,
                });
            }
        };
        dropins.sort();
        for path in dropins {
            let table = parse_file(&path)?;
            files.push((path, table));
        }
        Ok(ConfigSource { files })
    }

    /// A source from TOML text, for tests and `--print-default-config` checks.
    pub fn from_str(name: &str, text: &str) -> Result<Self, ConfigError> {
        let path = PathBuf::from(name);
        let table = parse_text(&path, text)?;
        Ok(ConfigSource {
            files: vec![(path, table)],
        })
    }

    /// Rejects top-level sections nobody reads, naming the file.
    pub fn check_sections(&self, known: &[&str]) -> Result<(), ConfigError> {
        for (path, table) in &self.files {
            if let Some(key) = table.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(ConfigError::Invalid {
                    path: path.clone(),
                    key: key.clone(),
                    reason: format!("unknown section, expected one of: {}", known.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// The section `key` of every file merged and deserialized into `T`;
    /// `T`'s defaults when no file has it.
    pub fn section<T: DeserializeOwned>(&self, key: &str) -> Result<T, ConfigError> {
        let mut merged: Option<toml::Value> = None;
        for (path, table) in &self.files {
            let Some(value) = table.get(key) else {
                continue;
            };
            deserialize::<T>(value.clone(), path, key)?;
            match &mut merged {
                Some(m) => merge(m, value.clone()),
                None => merged = Some(value.clone()),
            }
        }
        let merged = merged.unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        let origin = match self.files.as_slice() {
            [(only, _)] => only.clone(),
            _ => PathBuf::from("the merged configuration"),
        };
        deserialize(merged, &origin, key)
    }
}

fn parse_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_text(path, &text)
}

fn parse_text(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            // toml renders a multi-line snippet; keep the error to one line.
            message: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
}

fn deserialize<T: DeserializeOwned>(
    value: toml::Value,
    path: &Path,
    section: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let key = if inner == "." {
            section.to_string()
        } else {
            format!("{section}.{inner}")
        };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason: e.into_inner().to_string(),
        }
    })
}

/// Tables merge key by key; anything else in `over` replaces `base`.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Svc {
        command: String,
        args: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Init {
        grace_ms: u64,
        services: BTreeMap<String, Svc>,
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn dropins_merge_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "verdant.toml",
            "[init]\ngrace_ms = 1\n[init.services.a]\ncommand = \"a\"\n",
        );
        write(dir.path(), "config.d/20-b.toml", "[init]\ngrace_ms = 3\n");
        write(
            dir.path(),
            "config.d/10-a.toml",
            "[init]\ngrace_ms = 2\n[init.services.b]\ncommand = \"b\"\n",
        );
        write(dir.path(), "config.d/ignored.txt", "nonsense");
        let src = ConfigSource::load(&main).unwrap();
        let init: Init = src.section("init").unwrap();
        assert_eq!(init.grace_ms, 3);
        assert_eq!(init.services.len(), 2);
        assert_eq!(init.services["b"].command, "b");
    }

    #[test]
    fn unknown_key_names_file_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "verdant.toml", "[init]\ngrace_ms = 1\n");
        let bad = write(
            dir.path(),
            "config.d/10-lab.toml",
            "[init.services.x]\ncommand = \"x\"\nbogus = 1\n",
        );
        let err = ConfigSource::load(&main)
            .unwrap()
            .section::<Init>("init")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&bad.display().to_string()), "{text}");
        assert!(
            text.contains("init.services.x.bogus: unknown field `bogus`"),
            "{text}"
        );
    }

    #[test]
    fn wrong_type_and_unknown_section() {
        let src =
            ConfigSource::from_str("c.toml", "[init]\ngrace_ms = \"soon\"\n[nope]\n").unwrap();
        let err = src.section::<Init>("init").unwrap_err().to_string();
        assert!(
            err.starts_with("c.toml: init.grace_ms: invalid type"),
            "{err}"
        );
        let err = src.check_sections(&["init"]).unwrap_err().to_string();
        assert!(err.contains("c.toml: nope: unknown section"), "{err}");
    }

    #[test]
    fn missing_and_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = ConfigSource::load(&dir.path().join("none.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let p = write(dir.path(), "bad.toml", "[init\n");
        let err = ConfigSource::load(&p).unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
        assert!(!err.contains('\n'));
    }

    impl Section for Init {
        const NAME: &'static str = "init";
        fn check(&self) -> Result<(), Invalid> {
            if self.grace_ms == 0 {
                return Err(Invalid::new("init.grace_ms", "must be at least 1"));
            }
            Ok(())
        }
    }

    #[derive(Debug, thiserror::Error)]
    enum LoadError {
        #[error("{0}")]
        Config(#[from] ConfigError),
        #[error("{0}")]
        Invalid(#[from] Invalid),
    }

    #[test]
    fn a_section_is_parsed_then_checked() {
        let src = ConfigSource::from_str("c.toml", "[init]\ngrace_ms = 2\n").unwrap();
        assert_eq!(Init::load::<LoadError>(&src).unwrap().grace_ms, 2);
        let src = ConfigSource::from_str("c.toml", "[init]\ngrace_ms = 0\n").unwrap();
        let err = Init::load::<LoadError>(&src).unwrap_err();
        assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
        assert_eq!(err.to_string(), "init.grace_ms: must be at least 1");
        let src = ConfigSource::from_str("c.toml", "[init]\nbogus = 0\n").unwrap();
        let err = Init::load::<LoadError>(&src).unwrap_err();
        assert!(matches!(err, LoadError::Config(_)), "{err:?}");
    }

    #[test]
    fn absent_section_gives_defaults() {
        let src = ConfigSource::from_str("c.toml", "").unwrap();
        assert_eq!(src.section::<Init>("init").unwrap(), Init::default());
    }
}
