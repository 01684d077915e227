//! A loopback HTTPS server of one file (the deployments tests) or of a
//! directory (an update repository), with a CA of its own: it can break off
//! its first answers half way, and keeps each request's path
//! and `Range` header, as a download that was cut sees it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

pub struct FileServer {
    /// `https://127.0.0.1:<port>/<name>` (for a directory: `/`).
    pub url: String,
    /// The CA (PEM) the server's certificate is signed by.
    pub ca: PathBuf,
    /// Each request's `Range` header, in order.
    pub ranges: Arc<Mutex<Vec<Option<String>>>>,
    /// Each request's path, in order.
    pub paths: Arc<Mutex<Vec<String>>>,
}

/// What a [`FileServer`] serves.
enum Content {
    /// One file at one path.
    One(String, Arc<Vec<u8>>),
    /// The files under a directory, by their paths below it.
    Dir(PathBuf),
}

impl Content {
    /// Whether `path` is one that may be cut: the one file, or a target of
    /// an update repository (not its metadata).
    fn cut(&self, path: &str) -> bool {
        match self {
            Content::One(..) => true,
            Content::Dir(_) => path.starts_with("/targets/") && !path.contains(".json"),
        }
    }

    fn get(&self, path: &str) -> Option<Arc<Vec<u8>>> {
        match self {
            Content::One(name, body) => {
                (path.trim_start_matches('/') == name).then(|| body.clone())
            }
            Content::Dir(root) => {
                let path = path.trim_start_matches('/');
                if path.split('/').any(|part| part == ".." || part.is_empty()) {
                    return None;
                }
                std::fs::read(root.join(path)).ok().map(Arc::new)
            }
        }
    }
}

/// Serves `body` as `name`; the first `cuts` answers stop half way
/// without a TLS close. `Range: bytes=N-` is answered with 206 if
/// `ranges`, else with the whole file.
pub async fn serve(dir: &Path, name: &str, body: Vec<u8>, cuts: usize, ranges: bool) -> FileServer {
    let content = Content::One(name.to_string(), Arc::new(body));
    let mut server = start(dir, content, cuts, ranges).await;
    server.url.push_str(name);
    server
}

/// Serves the files under `root` (404 for others), with `Range` honoured;
/// the first `cuts` answers of targets (files under `targets/` but JSON
/// ones) stop half way.
pub async fn serve_dir(dir: &Path, root: &Path, cuts: usize) -> FileServer {
    start(dir, Content::Dir(root.to_path_buf()), cuts, true).await
}

/// A server certificate for `localhost` and 127.0.0.1, signed by a new CA
/// written to `dir/download-ca.pem`.
fn tls(dir: &Path) -> (TlsAcceptor, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.join("download-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca_path)
}

async fn start(dir: &Path, content: Content, cuts: usize, ranges: bool) -> FileServer {
    let honour = ranges;
    let (acceptor, ca_path) = tls(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (seen, seen_paths, content, cuts) = (
        ranges.clone(),
        paths.clone(),
        Arc::new(content),
        Arc::new(AtomicUsize::new(cuts)),
    );
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, content, seen, seen_paths, cuts) = (
                acceptor.clone(),
                content.clone(),
                seen.clone(),
                seen_paths.clone(),
                cuts.clone(),
            );
            tokio::spawn(async move {
                let mut tls = acceptor.accept(socket).await?;
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if tls.read(&mut byte).await? == 0 {
                        return Ok(());
                    }
                    request.push(byte[0]);
                }
                let range = String::from_utf8_lossy(&request).lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("range")
                        .then(|| value.trim().to_string())
                });
                seen.lock().unwrap().push(range.clone());
                let text = String::from_utf8_lossy(&request).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                seen_paths.lock().unwrap().push(path.clone());
                let Some(body) = content.get(&path) else {
                    tls.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await?;
                    return tls.shutdown().await;
                };
                let start = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
                    .filter(|_| honour);
                let len = body.len();
                let head = match start {
                    Some(s) => format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        len - 1,
                        len - s
                    ),
                    None => {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                        )
                    }
                };
                let start = start.unwrap_or(0);
                tls.write_all(head.as_bytes()).await?;
                let cut = content.cut(&path)
                    && cuts
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                        .is_ok();
                if cut {
                    tls.write_all(&body[start..start + (len - start) / 2])
                        .await?;
                    tls.flush().await?;
                    tls.get_mut().0.shutdown().await?;
                    return Ok::<_, std::io::Error>(());
                }
                tls.write_all(&body[start..]).await?;
                tls.shutdown().await
            });
        }
    });
    FileServer {
        url,
        ca: ca_path,
        ranges,
        paths,
    }
}
