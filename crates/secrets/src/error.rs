//! Why verdant-secrets cannot run, and what that means for init.

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    DataDir(#[from] verdant_common::paths::DataDirError),
    #[error("secret store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl DaemonError for SecretsError {
    fn exit(&self) -> Exit {
        match self {
            // A key file others can read is the operator's to fix.
            SecretsError::Config(_)
            | SecretsError::Invalid(_)
            | SecretsError::Store(crate::store::StoreError::KeyTooOpen { .. }) => Exit::Config,
            SecretsError::Transport(_) | SecretsError::DataDir(_) | SecretsError::Store(_) => {
                Exit::Failure
            }
        }
    }
}
