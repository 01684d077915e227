//! Why init could not start a core. Each names the thing and what to do;
//! [`InitError::exit`] maps it to the exit-code contract.

use std::path::PathBuf;

use verdant_common::config::ConfigError;
use verdant_common::exit::Exit;
use verdant_group::GroupError;

use crate::devcerts::CertError;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot use root directory {}: {source}; pass --root or VERDANT_ROOT with a writable directory", path.display())]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another verdant-init (pid {pid}) is running on {}; stop it first (verdantctl --root {} shutdown)", root.display(), root.display())]
    Locked { root: PathBuf, pid: String },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("invalid group: {0}")]
    Group(#[from] GroupError),
    #[error("socket directory {} is not usable: {source}; set core.runtime_dir or VERDANT_RUNTIME_DIR to a writable directory", path.display())]
    RuntimeDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "services.{service}.command: `{command}` not found beside verdant-init or on PATH; build it (cargo build --workspace) or give a path"
    )]
    MissingProgram { service: String, command: String },
    #[error("development certificates: {0}")]
    Certs(#[from] CertError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot serve the supervisor API: {0}")]
    Serve(String),
}

impl InitError {
    pub fn exit(&self) -> Exit {
        match self {
            InitError::Config(_) | InitError::Group(_) | InitError::MissingProgram { .. } => {
                Exit::Config
            }
            _ => Exit::Failure,
        }
    }
}
