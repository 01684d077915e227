//! Why the shadow service cannot run, and what that means for init.

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    DataDir(#[from] verdant_common::paths::DataDirError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for ShadowError {
    fn exit(&self) -> Exit {
        match self {
            ShadowError::Config(_) | ShadowError::Invalid(_) => Exit::Config,
            ShadowError::DataDir(_) | ShadowError::Store(_) | ShadowError::Transport(_) => {
                Exit::Failure
            }
        }
    }
}
