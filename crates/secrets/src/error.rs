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
}

impl DaemonError for SecretsError {
    fn exit(&self) -> Exit {
        match self {
            SecretsError::Config(_) | SecretsError::Invalid(_) => Exit::Config,
            SecretsError::Transport(_) => Exit::Failure,
        }
    }
}
