//! Unix sockets for gRPC: binding with the right modes, dialling, and the
//! caller's peer credentials.
//!
//! The socket directory is created 0750 and each socket is 0660, so only the
//! core's user and group can call a daemon. A stale socket (file present,
//! nobody listening) is removed before binding; a live one is an error, so
//! two daemons never share a socket.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    #[error("cannot create socket directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket {} is in use by a running process", path.display())]
    InUse { path: PathBuf },
    #[error("cannot bind {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no socket at {}", path.display())]
    Missing { path: PathBuf },
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// Binds `path` with mode 0660, creating its directory 0750.
pub fn bind(path: &Path) -> Result<UnixListener, UdsError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| UdsError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(UdsError::InUse {
                path: path.to_path_buf(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let bind_err = |source| UdsError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

/// Connects now to the gRPC server on `path`.
pub async fn connect(path: &Path) -> Result<Channel, UdsError> {
    if !path.exists() {
        return Err(UdsError::Missing {
            path: path.to_path_buf(),
        });
    }
    endpoint(path)
        .connect()
        .await
        .map_err(|source| UdsError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

fn endpoint(path: &Path) -> Endpoint {
    // The path is absolute (see `paths::Layout`), so the URI has three slashes.
    Endpoint::from_shared(format!("unix://{}", path.display()))
        .expect("a unix:// URI from an absolute path is valid")
}

/// The uid of the process on the other end of the request's socket.
pub fn peer_uid<T>(request: &tonic::Request<T>) -> Option<u32> {
    request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
}

/// Allows the call only from root or the user this process runs as.
#[allow(clippy::result_large_err)] // tonic::Status is what handlers return.
pub fn require_owner<T>(request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    let me = nix::unistd::geteuid().as_raw();
    match peer_uid(request) {
        Some(uid) if uid == 0 || uid == me => Ok(()),
        Some(uid) => Err(tonic::Status::permission_denied(format!(
            "uid {uid} may not change the core; run as uid {me} or root"
        ))),
        None => Err(tonic::Status::permission_denied(
            "caller's credentials unknown",
        )),
    }
}
