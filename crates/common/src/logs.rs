//! A process's stdout and stderr, captured from its pipe into a log file
//! with size-based rotation (each service's `<root>/logs/<service>.log`,
//! each function's `<root>/logs/functions/<name>.log`), and broadcast line
//! by line to `verdantctl logs -f` followers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

/// Followers that fall this many chunks behind lose the oldest ones.
const FOLLOW_BUFFER: usize = 256;
/// A line longer than this is written in pieces.
const MAX_LINE: usize = 16 * 1024;

/// One log file, shared by the pumps of successive processes (a service's,
/// or a function's instances).
#[derive(Clone)]
pub struct ServiceLog {
    inner: Arc<Mutex<LogFile>>,
    /// Whole lines as they are written, for followers: made by the first
    /// follower (tokio allocates a broadcast ring whole, and most logs are
    /// never followed).
    lines: Arc<OnceLock<broadcast::Sender<Arc<[u8]>>>>,
}

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
    keep: u32,
}

impl std::fmt::Debug for ServiceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLog")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl ServiceLog {
    pub fn new(path: PathBuf, max: u64, keep: u32) -> Self {
        ServiceLog {
            inner: Arc::new(Mutex::new(LogFile {
                path,
                file: None,
                size: 0,
                max,
                keep,
            })),
            lines: Arc::default(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.inner.lock().expect("log lock").path.clone()
    }

    pub fn follow(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.lines
            .get_or_init(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe()
    }

    /// Appends whole lines (a supervisor note, or a pump's output).
    pub fn write(&self, data: &[u8]) {
        let mut log = self.inner.lock().expect("log lock");
        if let Err(e) = log.append(data) {
            tracing::warn!("cannot write {}: {e}", log.path.display());
        }
        drop(log);
        if let Some(lines) = self.lines.get()
            && lines.receiver_count() > 0
        {
            let _ = lines.send(Arc::from(data));
        }
    }

    /// Copies a process's output pipe into the log until the pipe closes.
    pub fn pump(&self, output: OwnedFd) {
        let log = self.clone();
        tokio::spawn(async move {
            let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(output) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("cannot read a service's output: {e}");
                    return;
                }
            };
            // Only a partial line waits here; the read buffer is on the
            // stack, not in the task, so an idle pump holds no buffer.
            let mut pending: Vec<u8> = Vec::new();
            loop {
                if pipe.readable().await.is_err() {
                    break;
                }
                let mut buf = [0u8; 8192];
                let data = match pipe.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => &buf[..n],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break,
                };
                match data.iter().rposition(|&b| b == b'\n') {
                    Some(i) => {
                        let (lines, rest) = data.split_at(i + 1);
                        if pending.is_empty() {
                            log.write(lines);
                        } else {
                            pending.extend_from_slice(lines);
                            log.write(&std::mem::take(&mut pending));
                        }
                        pending.extend_from_slice(rest);
                    }
                    None => {
                        pending.extend_from_slice(data);
                        if pending.len() >= MAX_LINE {
                            log.write(&std::mem::take(&mut pending));
                        }
                    }
                }
            }
            if !pending.is_empty() {
                pending.push(b'\n');
                log.write(&pending);
            }
        });
    }

    /// The last `n` lines of the current log file.
    pub fn tail(&self, n: usize) -> std::io::Result<Vec<u8>> {
        let path = self.path();
        tail(&path, n)
    }
}

impl LogFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        if self.size > 0 && self.size + data.len() as u64 > self.max {
            self.rotate()?;
            return self.append(data);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// `x.log.(N-1)` → `x.log.N`, ..., `x.log` → `x.log.1`; the oldest goes.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        for i in (1..self.keep).rev() {
            let from = numbered(i);
            if from.exists() {
                std::fs::rename(&from, numbered(i + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

/// The last `n` lines of `path` (reading at most its last 1 MiB).
pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    const WINDOW: u64 = 1024 * 1024;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let body = data.strip_suffix(b"\n").unwrap_or(&data);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1);
    Ok(data[start..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let log = ServiceLog::new(path.clone(), 100, 2);
        for i in 0..20 {
            log.write(format!("line {i:02} padded to be long\n").as_bytes());
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        assert!(dir.path().join("svc.log.1").exists());
        assert!(dir.path().join("svc.log.2").exists());
        assert!(!dir.path().join("svc.log.3").exists());
        let last = log.tail(1).unwrap();
        assert_eq!(last, b"line 19 padded to be long\n");
    }

    #[tokio::test]
    async fn pump_writes_whole_lines() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let log = ServiceLog::new(path.clone(), 1 << 20, 1);
        let mut follow = log.follow();
        let (reader, mut writer) = std::io::pipe().unwrap();
        log.pump(reader.into());
        // A line split over two writes is written once, whole.
        writer.write_all(b"one\ntw").unwrap();
        assert_eq!(&*follow.recv().await.unwrap(), b"one\n");
        writer.write_all(b"o\nthree\nfou").unwrap();
        assert_eq!(&*follow.recv().await.unwrap(), b"two\nthree\n");
        // Longer than a line may be: cut; what is left when the pipe closes
        // gets its newline.
        writer.write_all(&vec![b'x'; MAX_LINE]).unwrap();
        writer.write_all(b"end").unwrap();
        drop(writer);
        let mut rest = Vec::new();
        let mut chunks = 0;
        while !rest.ends_with(b"end\n") {
            rest.extend_from_slice(&follow.recv().await.unwrap());
            chunks += 1;
        }
        assert!(chunks >= 2, "a line over MAX_LINE is cut");
        assert_eq!(rest.len(), 3 + MAX_LINE + 4);
        let text = std::fs::read(&path).unwrap();
        assert!(text.starts_with(b"one\ntwo\nthree\nfouxxx"));
        assert!(text.ends_with(b"xxxend\n"));
    }

    #[test]
    fn tail_takes_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2).unwrap(), b"b\nc\n");
        assert_eq!(tail(&path, 10).unwrap(), b"a\nb\nc\n");
        assert_eq!(tail(&path, 0).unwrap(), b"");
        assert_eq!(tail(&dir.path().join("none"), 3).unwrap(), b"");
    }
}
