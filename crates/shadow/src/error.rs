//! Why the shadow service cannot run, and what that means for init.

use verdant_common::config::ConfigError;
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot use {}: {source}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for ShadowError {
    fn exit(&self) -> Exit {
        match self {
            ShadowError::Config(_) | ShadowError::Invalid { .. } => Exit::Config,
            ShadowError::DataDir { .. } | ShadowError::Store(_) | ShadowError::Transport(_) => {
                Exit::Failure
            }
        }
    }
}
