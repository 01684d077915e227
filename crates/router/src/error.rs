//! Why the router cannot run, and what that means for init.

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;
use verdant_group::GroupError;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("deployed group: {0}")]
    Group(#[from] GroupError),
    #[error("router.cloud: {0}")]
    Pem(#[from] verdant_common::pem::PemError),
    #[error("router.cloud: TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    DataDir(#[from] verdant_common::paths::DataDirError),
    #[error("{0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for RouterError {
    fn exit(&self) -> Exit {
        match self {
            RouterError::Config(_)
            | RouterError::Invalid(_)
            | RouterError::Group(_)
            | RouterError::Pem(_)
            | RouterError::Tls(_) => Exit::Config,
            RouterError::DataDir(_) | RouterError::Queue(_) | RouterError::Transport(_) => {
                Exit::Failure
            }
        }
    }
}
