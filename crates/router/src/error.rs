//! Why the router cannot run, and what that means for init.

use verdant_common::config::ConfigError;
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;
use verdant_group::GroupError;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("deployed group: {0}")]
    Group(#[from] GroupError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for RouterError {
    fn exit(&self) -> Exit {
        match self {
            RouterError::Config(_) | RouterError::Invalid { .. } | RouterError::Group(_) => {
                Exit::Config
            }
            RouterError::Transport(_) => Exit::Failure,
        }
    }
}
