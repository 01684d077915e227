//! Why verdant-ota-agent cannot run, and what that means for init.

use std::path::PathBuf;

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;
use verdant_common::paths::DataDirError;

#[derive(Debug, thiserror::Error)]
pub enum OtaAgentError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    DataDir(#[from] DataDirError),
    #[error("deployments database {}: {source}", path.display())]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the deployment engine stopped")]
    Engine,
}

impl DaemonError for OtaAgentError {
    fn exit(&self) -> Exit {
        match self {
            OtaAgentError::Config(_) | OtaAgentError::Invalid(_) => Exit::Config,
            OtaAgentError::DataDir(_)
            | OtaAgentError::Store { .. }
            | OtaAgentError::Transport(_)
            | OtaAgentError::Engine => Exit::Failure,
        }
    }
}
