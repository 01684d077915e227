//! Why verdant-ota-agent cannot run, and what that means for init.

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum OtaAgentError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for OtaAgentError {
    fn exit(&self) -> Exit {
        match self {
            OtaAgentError::Config(_) | OtaAgentError::Invalid(_) => Exit::Config,
            OtaAgentError::Transport(_) => Exit::Failure,
        }
    }
}
