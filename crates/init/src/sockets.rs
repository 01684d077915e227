//! The broker's device listeners, bound and held by init and handed to
//! every broker it starts (`verdant_common::listen`): a device connecting
//! while the broker restarts, or while init switches versions, waits in the
//! backlog instead of being refused.
//!
//! Which sockets a service wants comes from its own crate (a [`Wanted`]
//! given by the multicall binary), read from the config file again at each
//! start of the service, so a changed address is bound anew and the old
//! socket closed. A socket init cannot bind (a port below 1024 for an init
//! without the right, an address in use) is left to the service, which
//! then binds it itself and reports the error if it fails too.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use verdant_common::config::ConfigSource;
use verdant_common::listen;

/// The listening sockets a service wants by its config: its key for each
/// (`tls`, `tcp`, ...) and the configured address.
pub type Wanted = fn(&ConfigSource) -> Vec<(&'static str, SocketAddr)>;

/// What init holds for the one service that wants sockets.
#[derive(Debug)]
pub struct Held {
    service: &'static str,
    wanted: Wanted,
    config_file: Mutex<Option<PathBuf>>,
    /// By `<service>.<key>`, as named across an `exec` of init.
    sockets: Mutex<Vec<(String, TcpListener)>>,
}

impl Held {
    /// Will hold the sockets `service` wants.
    pub fn new(service: &'static str, wanted: Wanted) -> Self {
        Held {
            service,
            wanted,
            config_file: Mutex::new(None),
            sockets: Mutex::new(Vec::new()),
        }
    }

    /// Takes the sockets the previous executable of init held, when it
    /// executed this one. (The zygote, forked later, closes every inherited
    /// descriptor: its daemons must never drop their copy of `self`.)
    pub fn adopt(&self) {
        let inherited = listen::take(listen::HELD_ENV);
        self.sockets.lock().expect("held lock").extend(inherited);
    }

    /// Where the wanted sockets are read from at each start.
    pub fn read_from(&self, config_file: PathBuf) {
        *self.config_file.lock().expect("held lock") = Some(config_file);
    }

    /// The sockets to hand to `service` as it starts (keys and descriptors,
    /// valid while `self` lives and is not reconciled again); empty for
    /// any other service.
    pub fn for_service(&self, service: &str) -> Vec<(String, RawFd)> {
        if service != self.service {
            return Vec::new();
        }
        let file = self.config_file.lock().expect("held lock").clone();
        if let Some(file) = file {
            match ConfigSource::load(&file) {
                Ok(source) => self.reconcile(&(self.wanted)(&source)),
                // The service reports its config's errors itself.
                Err(e) => tracing::debug!("listening sockets kept as they are: {e}"),
            }
        }
        let prefix = format!("{service}.");
        self.sockets
            .lock()
            .expect("held lock")
            .iter()
            .filter_map(|(name, socket)| {
                let key = name.strip_prefix(&prefix)?;
                Some((key.to_string(), socket.as_raw_fd()))
            })
            .collect()
    }

    /// Keeps the held sockets that serve `wanted`, closes the rest, then
    /// binds the missing ones (after the close: a new address may overlap
    /// an old one).
    fn reconcile(&self, wanted: &[(&'static str, SocketAddr)]) {
        let mut sockets = self.sockets.lock().expect("held lock");
        let mut kept = Vec::new();
        let mut missing = Vec::new();
        for (key, addr) in wanted {
            let name = format!("{}.{key}", self.service);
            let held = sockets.iter().position(|(n, s)| {
                *n == name && s.local_addr().is_ok_and(|a| listen::serves(*addr, a))
            });
            match held {
                Some(i) => kept.push(sockets.swap_remove(i)),
                None => missing.push((name, *addr)),
            }
        }
        for (name, _) in sockets.drain(..) {
            tracing::info!(
                listener = name,
                "listening socket closed: not configured any more"
            );
        }
        for (name, addr) in missing {
            match listen::bind_listener(addr) {
                Ok(socket) => {
                    let at = socket.local_addr().map_or(addr, |a| a);
                    tracing::info!(listener = name, %at, "init holds the listening socket");
                    kept.push((name, socket));
                }
                Err(e) => tracing::info!(
                    listener = name,
                    %addr,
                    "init cannot bind the listening socket ({e}); the {} binds it",
                    self.service
                ),
            }
        }
        *sockets = kept;
    }

    /// Before init executes `exe` in its place: if `exe` takes held
    /// sockets back (it knows [`listen::HELD_ENV`]; a version without it
    /// would leave them open, unused, and its broker could not bind), every
    /// held socket stays open across `exec`; the variable to give it.
    pub fn across_exec(&self, exe: &Path) -> Option<(&'static str, String)> {
        let sockets = self.sockets.lock().expect("held lock");
        if sockets.is_empty() || !takes_them(exe) {
            return None;
        }
        let mut pairs = Vec::new();
        for (name, socket) in sockets.iter() {
            if listen::close_on_exec(socket, false).is_ok() {
                pairs.push((name.as_str(), socket.as_raw_fd()));
            }
        }
        Some((listen::HELD_ENV, listen::encode(pairs)))
    }

    /// After an `exec` that failed: the held sockets are init's alone again.
    pub fn exec_failed(&self) {
        for (_, socket) in self.sockets.lock().expect("held lock").iter() {
            let _ = listen::close_on_exec(socket, true);
        }
    }
}

/// Whether the executable `exe` takes back the sockets init held: it
/// names [`listen::HELD_ENV`] (a version built before would not).
fn takes_them(exe: &Path) -> bool {
    let Ok(bytes) = std::fs::read(exe) else {
        return false;
    };
    memchr::memmem::find(&bytes, listen::HELD_ENV.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(source: &ConfigSource) -> Vec<(&'static str, SocketAddr)> {
        let port: u16 = source.section::<toml::Table>("t").map_or(0, |t| {
            t.get("port")
                .and_then(toml::Value::as_integer)
                .map_or(0, |p| u16::try_from(p).unwrap_or(0))
        });
        vec![("tcp", SocketAddr::from(([127, 0, 0, 1], port)))]
    }

    #[test]
    fn a_socket_is_kept_across_starts_and_rebound_when_its_address_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verdant.toml");
        std::fs::write(&file, "").unwrap();
        let held = Held::new("broker", wanted);
        held.read_from(file.clone());
        assert!(held.for_service("router").is_empty());
        let first = held.for_service("broker");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "tcp");
        let port = |held: &Held| {
            held.sockets.lock().unwrap()[0]
                .1
                .local_addr()
                .unwrap()
                .port()
        };
        let before = port(&held);
        // Port 0 configured: the one bound is kept, whatever its port.
        assert_eq!(held.for_service("broker")[0].1, first[0].1);
        assert_eq!(port(&held), before);
        // A connection made while no broker accepts waits in the backlog.
        let waiting = std::net::TcpStream::connect(("127.0.0.1", before)).unwrap();
        drop(waiting);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = free.local_addr().unwrap().port();
        drop(free);
        std::fs::write(&file, format!("[t]\nport = {other}\n")).unwrap();
        held.for_service("broker");
        assert_eq!(port(&held), other);
    }

    #[test]
    fn sockets_cross_an_exec_only_into_an_executable_that_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verdant.toml");
        std::fs::write(&file, "").unwrap();
        let held = Held::new("broker", wanted);
        held.read_from(file);
        let fd = held.for_service("broker")[0].1;
        let cloexec = || {
            // SAFETY: held's socket, open for the test.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags & libc::FD_CLOEXEC != 0
        };
        let old = dir.path().join("old");
        std::fs::write(&old, b"an executable of a version before").unwrap();
        assert!(held.across_exec(&old).is_none());
        assert!(cloexec());
        let new = dir.path().join("new");
        std::fs::write(&new, format!("...{}...", listen::HELD_ENV)).unwrap();
        let (name, value) = held.across_exec(&new).unwrap();
        assert_eq!(name, listen::HELD_ENV);
        assert_eq!(value, format!("broker.tcp={fd}"));
        assert!(!cloexec());
        held.exec_failed();
        assert!(cloexec());
    }
}
