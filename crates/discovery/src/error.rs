//! Why verdant-discovery cannot run, and what that means for init.

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for DiscoveryError {
    fn exit(&self) -> Exit {
        match self {
            DiscoveryError::Config(_) | DiscoveryError::Invalid(_) => Exit::Config,
            DiscoveryError::Transport(_) => Exit::Failure,
        }
    }
}
