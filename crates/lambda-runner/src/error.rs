//! Why the lambda-runner cannot run, and what that means for init.

use verdant_common::config::{ConfigError, Invalid};
use verdant_common::daemon::DaemonError;
use verdant_common::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Group(#[from] verdant_group::GroupError),
    #[error("cannot use {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("function IPC endpoint on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reading the group: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl DaemonError for LambdaError {
    fn exit(&self) -> Exit {
        match self {
            LambdaError::Config(_) | LambdaError::Invalid(_) | LambdaError::Group(_) => {
                Exit::Config
            }
            LambdaError::Io { .. }
            | LambdaError::Bind { .. }
            | LambdaError::Transport(_)
            | LambdaError::Task(_) => Exit::Failure,
        }
    }
}
