//! Why the broker cannot run, and what that means for init.

use std::net::SocketAddr;

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;
use verdant_group::GroupError;

use crate::identity::TlsSetupError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("deployed group: {0}")]
    Group(#[from] GroupError),
    #[error("broker.tls: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    DataDir(#[from] verdant_common::paths::DataDirError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl DaemonError for BrokerError {
    fn exit(&self) -> Exit {
        match self {
            BrokerError::Config(_) | BrokerError::Invalid(_) | BrokerError::Group(_) => {
                Exit::Config
            }
            // A port still held by a previous process frees up, a
            // certificate and key caught between two renames (a rotation)
            // are whole again a moment later: try again.
            BrokerError::Tls(_) | BrokerError::Bind { .. } => Exit::TempFail,
            BrokerError::DataDir(_) | BrokerError::Store(_) | BrokerError::Transport(_) => {
                Exit::Failure
            }
        }
    }
}
