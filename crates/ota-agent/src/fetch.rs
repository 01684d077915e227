//! Fetching an artifact named by URL into the downloads directory, checked
//! by its SHA-256: `file://` copies, `https://` downloads with ureq.
//!
//! A download goes to `<downloads>/<sha256>.part` and is renamed to
//! `<downloads>/<sha256>` once its hash is right, so a file under its final
//! name is always whole. A cut download leaves the `.part` behind: the next
//! fetch asks for the rest with a `Range` request (a server that answers
//! with the whole file instead restarts it from zero). Blocking: the engine
//! runs it on a blocking thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// Why an artifact could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{url}`: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("`{sha256}` is not a SHA-256 (64 lowercase hex digits)")]
    BadHash { sha256: String },
    #[error("{}: cannot read the CA certificates: {source}", path.display())]
    CaRead { path: PathBuf, source: io::Error },
    #[error("{}: not PEM certificates: {source}", path.display())]
    CaParse { path: PathBuf, source: ureq::Error },
    #[error("{}: holds no certificate", path.display())]
    CaEmpty { path: PathBuf },
    /// A local file: the downloads directory, or the source of a `file://` URL.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The request failed: no connection, TLS refused, no response in time.
    #[error("{url}: {source}")]
    Http { url: String, source: ureq::Error },
    /// The connection broke while the body came: the `.part` file keeps
    /// what arrived, and the next fetch resumes from there.
    #[error("{url}: the download broke off: {source}")]
    Read { url: String, source: io::Error },
    #[error("{url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The whole file arrived but is not the one the group names: deleted.
    #[error("{url}: SHA-256 is {actual}, the group says {expected}")]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
}

impl FetchError {
    /// Whether trying again later may work (the network or the server),
    /// as opposed to a fault of the group or of this core.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Http { .. } | FetchError::Read { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Attempts after a download is cut half way: each goes on from where the
/// last one stopped.
pub const RESUMES: u32 = 4;

/// Downloads artifacts; one agent (its TLS roots, its connection pool) for
/// every fetch of a deployment.
pub struct Fetcher {
    agent: ureq::Agent,
}

impl Fetcher {
    /// A fetcher trusting Mozilla's roots, the system's
    /// (`/etc/ssl/certs`, `SSL_CERT_FILE`, `SSL_CERT_DIR`), and the PEM
    /// certificates in `extra_ca` if given.
    pub fn new(extra_ca: Option<&Path>) -> Result<Fetcher, FetchError> {
        let der = |c: &[u8]| Certificate::from_der(c).to_owned();
        let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| der(c))
            .collect();
        // The system's roots are a bonus: unreadable ones are skipped.
        roots.extend(
            rustls_native_certs::load_native_certs()
                .certs
                .iter()
                .map(|c| der(c)),
        );
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).map_err(|source| FetchError::CaRead {
                path: path.to_path_buf(),
                source,
            })?;
            let before = roots.len();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => roots.push(c),
                    Ok(_) => {}
                    Err(source) => {
                        return Err(FetchError::CaParse {
                            path: path.to_path_buf(),
                            source,
                        });
                    }
                }
            }
            if roots.len() == before {
                return Err(FetchError::CaEmpty {
                    path: path.to_path_buf(),
                });
            }
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            // Redirects stay on https.
            .https_only(true)
            // Statuses are handled here: 206 and 416 are not failures.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_mins(1)))
            // A stalled transfer fails (and resumes later) instead of hanging.
            .timeout_per_read(Some(Duration::from_mins(1)))
            .build()
            .new_agent();
        Ok(Fetcher { agent })
    }

    /// Fetches `url` into `<downloads>/<sha256>` and returns that path.
    /// A file already there with the right hash is used as it is.
    /// `progress(done, total)` follows the bytes (`total` when known).
    pub fn fetch(
        &self,
        url: &str,
        sha256: &str,
        downloads: &Path,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<PathBuf, FetchError> {
        self.fetch_at_most(url, sha256, None, downloads, progress)
    }

    /// As [`Fetcher::fetch_at_most`], going on from where a cut left the
    /// download, up to [`RESUMES`] times (0.5 s, 1 s, 2 s, 4 s apart);
    /// `cut` is told of each.
    ///
    /// # Errors
    /// As [`Fetcher::fetch_at_most`]: the last attempt's error.
    pub fn fetch_resuming(
        &self,
        url: &str,
        sha256: &str,
        max: Option<u64>,
        downloads: &Path,
        progress: &mut dyn FnMut(u64, Option<u64>),
        cut: &mut dyn FnMut(u32, &FetchError),
    ) -> Result<PathBuf, FetchError> {
        let mut attempt = 0;
        loop {
            match self.fetch_at_most(url, sha256, max, downloads, progress) {
                Err(e) if e.is_transient() && attempt < RESUMES => {
                    attempt += 1;
                    cut(attempt, &e);
                    std::thread::sleep(std::time::Duration::from_millis(500 << (attempt - 1)));
                }
                outcome => return outcome,
            }
        }
    }

    /// As [`Fetcher::fetch`], cut off past `max` bytes when given (the
    /// length the signed metadata gives).
    pub fn fetch_at_most(
        &self,
        url: &str,
        sha256: &str,
        max: Option<u64>,
        downloads: &Path,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<PathBuf, FetchError> {
        if !is_sha256(sha256) {
            return Err(FetchError::BadHash {
                sha256: sha256.into(),
            });
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Io { path, source }
        };
        let file_path = url.strip_prefix("file://");
        if file_path.is_none() && !url.starts_with("https://") {
            return Err(FetchError::BadUrl {
                url: url.into(),
                reason: "expected https:// or file:///",
            });
        }
        let done = downloads.join(sha256);
        if let Ok(file) = File::open(&done) {
            let len = file.metadata().map_err(io(&done))?.len();
            if sha256_of(file).map_err(io(&done))? == sha256 {
                progress(len, Some(len));
                return Ok(done);
            }
            std::fs::remove_file(&done).map_err(io(&done))?;
        }
        std::fs::create_dir_all(downloads).map_err(io(downloads))?;
        let mut part = Part::open(downloads.join(format!("{sha256}.part")))?;
        part.limit = max;
        match file_path {
            Some(path) => copy_file(url, path, &mut part, progress)?,
            None => self.download(url, &mut part, progress, true)?,
        }
        part.finish(url, sha256, &done)?;
        File::open(downloads)
            .and_then(|d| d.sync_all())
            .map_err(io(downloads))?;
        Ok(done)
    }

    /// The whole of `url` (`file://` or `https://`) in memory, at most
    /// `max` bytes; `None` when there is no such file (404, or 403 as some
    /// object stores answer for a missing key).
    pub fn get(&self, url: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        let too_big = || FetchError::Read {
            url: url.into(),
            source: io::Error::other(format!("more than {max} bytes")),
        };
        let mut body = Vec::new();
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(percent_decode(path));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(FetchError::Io { path, source }),
            };
            file.take(max + 1)
                .read_to_end(&mut body)
                .map_err(|source| FetchError::Io { path, source })?;
        } else if url.starts_with("https://") {
            let response = self
                .agent
                .get(url)
                .call()
                .map_err(|source| FetchError::Http {
                    url: url.into(),
                    source,
                })?;
            match response.status().as_u16() {
                200 => {}
                403 | 404 => return Ok(None),
                status => {
                    return Err(FetchError::Status {
                        url: url.into(),
                        status,
                    });
                }
            }
            response
                .into_body()
                .into_reader()
                .take(max + 1)
                .read_to_end(&mut body)
                .map_err(|source| FetchError::Read {
                    url: url.into(),
                    source,
                })?;
        } else {
            return Err(FetchError::BadUrl {
                url: url.into(),
                reason: "expected https:// or file:///",
            });
        }
        if body.len() as u64 > max {
            return Err(too_big());
        }
        Ok(Some(body))
    }

    /// Appends the rest of `url` to `part`. `retry`: whether a server that
    /// cannot serve the range asked for gets one more, whole request.
    fn download(
        &self,
        url: &str,
        part: &mut Part,
        progress: &mut dyn FnMut(u64, Option<u64>),
        retry: bool,
    ) -> Result<(), FetchError> {
        let http = |source| FetchError::Http {
            url: url.into(),
            source,
        };
        let mut request = self.agent.get(url);
        if part.len > 0 {
            request = request.header("Range", format!("bytes={}-", part.len));
        }
        let response = request.call().map_err(http)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
        let total = match response.status().as_u16() {
            206 => match header("content-range").as_deref().and_then(content_range) {
                Some((start, total)) if start == part.len => total.or(length.map(|l| start + l)),
                _ if retry => {
                    part.restart()?;
                    return self.download(url, part, progress, false);
                }
                _ => {
                    return Err(FetchError::Status {
                        url: url.into(),
                        status: 206,
                    });
                }
            },
            200 => {
                // The whole file, whatever was asked: start over.
                part.restart()?;
                length
            }
            // Range Not Satisfiable: what is kept is no prefix of this file.
            416 if retry && part.len > 0 => {
                part.restart()?;
                return self.download(url, part, progress, false);
            }
            status => {
                return Err(FetchError::Status {
                    url: url.into(),
                    status,
                });
            }
        };
        let mut body = response.into_body().into_reader();
        part.append(&mut body, total, progress, |source| FetchError::Read {
            url: url.into(),
            source,
        })
    }
}

/// `bytes <start>-<end>/<total or *>`: the start and the total.
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// Copies the file at `path` (a `file://` URL's path) into `part`.
fn copy_file(
    url: &str,
    path: &str,
    part: &mut Part,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), FetchError> {
    if !path.starts_with('/') {
        return Err(FetchError::BadUrl {
            url: url.into(),
            reason: "a file URL is file:///<absolute path>",
        });
    }
    let path = PathBuf::from(percent_decode(path));
    let io = |source| FetchError::Io {
        path: path.clone(),
        source,
    };
    // A regular file only: not a device, a pipe or a link to one.
    let meta = std::fs::symlink_metadata(&path).map_err(io)?;
    if !meta.is_file() {
        return Err(FetchError::BadUrl {
            url: url.into(),
            reason: "a file URL must name a regular file",
        });
    }
    let mut source = File::open(&path).map_err(io)?;
    let total = source.metadata().map_err(io)?.len();
    part.restart()?;
    part.append(&mut source, Some(total), progress, io)
}

/// `%XX` escapes decoded; anything else kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `.part` file of a fetch and the hash of what it holds so far.
struct Part {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
    /// The most bytes the file may have (its known length).
    limit: Option<u64>,
}

impl Part {
    /// Opens (or creates) `path`, hashing what an earlier fetch left in it.
    fn open(path: PathBuf) -> Result<Part, FetchError> {
        let opened = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .and_then(|mut file| {
                let mut hasher = Sha256::new();
                let len = io::copy(&mut file, &mut hasher)?;
                Ok((file, hasher, len))
            });
        match opened {
            Ok((file, hasher, len)) => Ok(Part {
                path,
                file,
                hasher,
                len,
                limit: None,
            }),
            Err(source) => Err(FetchError::Io { path, source }),
        }
    }

    fn io(&self) -> impl Fn(io::Error) -> FetchError {
        let path = self.path.clone();
        move |source| FetchError::Io {
            path: path.clone(),
            source,
        }
    }

    /// Empties the file, to fetch from the first byte.
    fn restart(&mut self) -> Result<(), FetchError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .map_err(self.io())?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Appends all of `source`; a read error becomes `read_error(e)`.
    fn append(
        &mut self,
        source: &mut dyn Read,
        total: Option<u64>,
        progress: &mut dyn FnMut(u64, Option<u64>),
        read_error: impl Fn(io::Error) -> FetchError,
    ) -> Result<(), FetchError> {
        let mut buf = vec![0u8; 64 * 1024];
        progress(self.len, total);
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            if let Some(limit) = self.limit
                && self.len + n as u64 > limit
            {
                // A source that sends more than the file has (endless
                // data) is cut off before it fills the disk.
                let _ = std::fs::remove_file(&self.path);
                return Err(read_error(io::Error::other(format!(
                    "more than the {limit} bytes the file has"
                ))));
            }
            self.file.write_all(&buf[..n]).map_err(self.io())?;
            self.hasher.update(&buf[..n]);
            self.len += n as u64;
            progress(self.len, total);
        }
    }

    /// Checks the hash: renames the file to `done` (durably) when right,
    /// deletes it when wrong.
    fn finish(self, url: &str, expected: &str, done: &Path) -> Result<(), FetchError> {
        let actual = hex(&self.hasher.clone().finalize());
        if actual != expected {
            let _ = std::fs::remove_file(&self.path);
            return Err(FetchError::Mismatch {
                url: url.into(),
                expected: expected.into(),
                actual,
            });
        }
        self.file.sync_all().map_err(self.io())?;
        std::fs::rename(&self.path, done).map_err(self.io())
    }
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The SHA-256 of all `reader` holds, as hex.
pub(crate) fn sha256_of(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A loopback HTTPS server of one file, with its own CA (the test
    /// harness's), on a runtime of its own: the fetches here block.
    struct Server {
        url: String,
        ca: PathBuf,
        /// Each request's `Range` header, in order.
        ranges: Arc<Mutex<Vec<Option<String>>>>,
        _runtime: tokio::runtime::Runtime,
    }

    /// Serves `body`, honouring `Range: bytes=N-` if `ranges`; the first
    /// `cuts` responses break off half way.
    fn serve(dir: &Path, body: Vec<u8>, cuts: usize, ranges: bool) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(verdant_integration_tests::https::serve(
            dir,
            "code/f.zip",
            body,
            cuts,
            ranges,
        ));
        Server {
            url: server.url,
            ca: server.ca,
            ranges: server.ranges,
            _runtime: runtime,
        }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn file_urls_are_copied_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let body = content(200_000);
        let source = dir.path().join("my code.zip");
        std::fs::write(&source, &body).unwrap();
        let url = format!("file://{}", source.display()).replace(' ', "%20");
        let downloads = dir.path().join("downloads");
        let fetcher = Fetcher::new(None).unwrap();
        let mut seen = Vec::new();
        let got = fetcher
            .fetch(&url, &sha(&body), &downloads, &mut |d, t| seen.push((d, t)))
            .unwrap();
        assert_eq!(got, downloads.join(sha(&body)));
        assert_eq!(std::fs::read(&got).unwrap(), body);
        assert_eq!(seen.last(), Some(&(200_000, Some(200_000))));
        assert!(!downloads.join(format!("{}.part", sha(&body))).exists());

        // Present with the right hash: the source is not read again.
        std::fs::remove_file(&source).unwrap();
        let again = fetcher.fetch(&url, &sha(&body), &downloads, &mut |_, _| {});
        assert_eq!(again.unwrap(), got);

        let err = fetcher
            .fetch("ftp://h/x.zip", &sha(&body), &downloads, &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, FetchError::BadUrl { .. }), "{err}");
        let err = fetcher
            .fetch(&url, "ABC", &downloads, &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, FetchError::BadHash { .. }), "{err}");
    }

    #[test]
    fn https_download_with_an_extra_ca() {
        let dir = tempfile::tempdir().unwrap();
        let body = content(300_000);
        let server = serve(dir.path(), body.clone(), 0, true);
        let downloads = dir.path().join("downloads");
        let fetcher = Fetcher::new(Some(&server.ca)).unwrap();
        let mut last = None;
        let got = fetcher
            .fetch(&server.url, &sha(&body), &downloads, &mut |d, t| {
                last = Some((d, t));
            })
            .unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), body);
        assert_eq!(last, Some((300_000, Some(300_000))));

        // Already there: nothing is downloaded.
        fetcher
            .fetch(&server.url, &sha(&body), &downloads, &mut |_, _| {})
            .unwrap();
        assert_eq!(server.ranges.lock().unwrap().len(), 1);

        // Without the CA the server is not trusted.
        let err = Fetcher::new(None)
            .unwrap()
            .fetch(&server.url, &sha(&content(1)), &downloads, &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, FetchError::Http { .. }), "{err}");
    }

    #[test]
    fn a_cut_download_resumes_with_a_range_request() {
        let dir = tempfile::tempdir().unwrap();
        let body = content(1_000_000);
        let hash = sha(&body);
        let server = serve(dir.path(), body.clone(), 1, true);
        let downloads = dir.path().join("downloads");
        let fetcher = Fetcher::new(Some(&server.ca)).unwrap();

        let err = fetcher
            .fetch(&server.url, &hash, &downloads, &mut |_, _| {})
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let part = downloads.join(format!("{hash}.part"));
        let kept = std::fs::metadata(&part).unwrap().len();
        assert!(kept > 0 && kept < 1_000_000, "{kept}");
        assert!(!downloads.join(&hash).exists());

        let mut first = None;
        let got = fetcher
            .fetch(&server.url, &hash, &downloads, &mut |d, t| {
                first.get_or_insert((d, t));
            })
            .unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), body);
        assert_eq!(first, Some((kept, Some(1_000_000))));
        assert_eq!(
            *server.ranges.lock().unwrap(),
            [None, Some(format!("bytes={kept}-"))]
        );
        assert!(!part.exists());
    }

    #[test]
    fn a_whole_answer_to_a_range_request_restarts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let body = content(600_000);
        let hash = sha(&body);
        let server = serve(dir.path(), body.clone(), 1, false);
        let downloads = dir.path().join("downloads");
        let fetcher = Fetcher::new(Some(&server.ca)).unwrap();
        fetcher
            .fetch(&server.url, &hash, &downloads, &mut |_, _| {})
            .unwrap_err();
        let mut seen = Vec::new();
        let got = fetcher
            .fetch(&server.url, &hash, &downloads, &mut |d, _| seen.push(d))
            .unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), body);
        let ranges = server.ranges.lock().unwrap().clone();
        assert!(
            ranges[1]
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes=")),
            "{ranges:?}"
        );
        // Counted from zero again after the 200.
        assert!(
            seen.contains(&0) && seen.last() == Some(&600_000),
            "{seen:?}"
        );
    }

    #[test]
    fn a_wrong_hash_deletes_the_file_and_names_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let body = content(50_000);
        let server = serve(dir.path(), body.clone(), 0, true);
        let downloads = dir.path().join("downloads");
        let wrong = sha(b"something else");
        let err = Fetcher::new(Some(&server.ca))
            .unwrap()
            .fetch(&server.url, &wrong, &downloads, &mut |_, _| {})
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{text}");
        assert!(
            text.contains(&wrong) && text.contains(&sha(&body)),
            "{text}"
        );
        assert!(!err.is_transient());
        assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);
    }
}
