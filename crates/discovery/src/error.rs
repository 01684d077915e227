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
    #[error("discovery TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    DataDir(#[from] verdant_common::paths::DataDirError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl DaemonError for DiscoveryError {
    fn exit(&self) -> Exit {
        match self {
            DiscoveryError::Config(_) | DiscoveryError::Invalid(_) => Exit::Config,
            DiscoveryError::Transport(_)
            | DiscoveryError::Tls(_)
            | DiscoveryError::DataDir(_)
            | DiscoveryError::Bind { .. } => Exit::Failure,
        }
    }
}
