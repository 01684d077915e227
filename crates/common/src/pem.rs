//! Certificates and keys from PEM files, with errors that name the file:
//! what every daemon speaking TLS (broker, router, discovery) reads the
//! same way.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PemError {
    pub path: PathBuf,
    pub reason: String,
}

fn error(path: &Path, reason: &dyn std::fmt::Display) -> PemError {
    PemError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate in `path`, in order; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(path, &e))?;
    if certs.is_empty() {
        return Err(error(path, &"no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| error(path, &e))
}

/// The CA certificates in `path` as a root store; at least one.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(path)? {
        roots.add(ca).map_err(|e| error(path, &e))?;
    }
    Ok(roots)
}
