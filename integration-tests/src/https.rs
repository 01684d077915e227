//! A loopback HTTPS server of one file for the deployments tests, with a
//! CA of its own: it can break off its first answers half way, and keeps
//! each request's `Range` header, as a download that was cut sees it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

pub struct FileServer {
    /// `https://127.0.0.1:<port>/<name>`.
    pub url: String,
    /// The CA (PEM) the server's certificate is signed by.
    pub ca: PathBuf,
    /// Each request's `Range` header, in order.
    pub ranges: Arc<Mutex<Vec<Option<String>>>>,
}

/// Serves `body` as `name`; the first `cuts` answers stop half way
/// without a TLS close. `Range: bytes=N-` is answered with 206 if
/// `ranges`, else with the whole file.
pub async fn serve(dir: &Path, name: &str, body: Vec<u8>, cuts: usize, ranges: bool) -> FileServer {
    let honour = ranges;
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
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/{name}", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (seen, body, cuts) = (
        ranges.clone(),
        Arc::new(body),
        Arc::new(AtomicUsize::new(cuts)),
    );
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, body, seen, cuts) =
                (acceptor.clone(), body.clone(), seen.clone(), cuts.clone());
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
                let cut = cuts
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
    }
}
