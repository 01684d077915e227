//! Listening TCP sockets that outlive the daemon serving them.
//!
//! verdant-init binds the broker's device listeners itself and hands a copy
//! of each to every broker it starts, as systemd's socket activation does:
//! while a broker restarts (a crash, a reload, a version switch) the socket
//! stays open in init, so a device connecting meanwhile waits in the
//! kernel's backlog and is accepted by the next broker instead of being
//! refused. Across a version switch init keeps them open through `exec`.
//!
//! The hand-over is an environment variable, [`ENV`] for a daemon (and
//! [`HELD_ENV`] for init's next executable): `name=fd` pairs separated by
//! commas, the descriptors open without close-on-exec in the receiving
//! process.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, bind, listen,
    setsockopt, socket, sockopt,
};

/// What a daemon reads its listeners from.
pub const ENV: &str = "VERDANT_LISTEN_FDS";
/// What init's next executable reads the sockets init holds from.
pub const HELD_ENV: &str = "VERDANT_HELD_FDS";

/// Connections the kernel completes for a listener before they are accepted
/// (capped by `net.core.somaxconn`): room for a site's devices reconnecting
/// at once, where a short queue drops their SYNs and each waits a second or
/// more to try again.
pub const BACKLOG: i32 = 1024;

/// Binds and listens on `addr` (`SO_REUSEADDR`, [`BACKLOG`], close-on-exec,
/// blocking: set non-blocking before handing it to an async runtime).
///
/// # Errors
/// The socket could not be made, bound or listened on.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// Whether a socket bound to `actual` serves a listener configured on
/// `configured` (port 0: any port of that address).
pub fn serves(configured: SocketAddr, actual: SocketAddr) -> bool {
    configured == actual || (configured.port() == 0 && configured.ip() == actual.ip())
}

/// `name=fd` pairs, for [`ENV`] or [`HELD_ENV`].
pub fn encode<'a>(fds: impl IntoIterator<Item = (&'a str, RawFd)>) -> String {
    fds.into_iter()
        .map(|(name, fd)| format!("{name}={fd}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pairs of [`encode`]; malformed ones are left out.
pub fn decode(text: &str) -> Vec<(String, RawFd)> {
    text.split(',')
        .filter_map(|pair| {
            let (name, fd) = pair.split_once('=')?;
            let fd: RawFd = fd.trim().parse().ok()?;
            (fd > 2 && !name.is_empty()).then(|| (name.to_string(), fd))
        })
        .collect()
}

/// Takes the listening sockets `var` names in this process, once: later
/// calls get nothing. A descriptor that is not an open listening TCP socket
/// is left alone. Each one taken is close-on-exec from then on.
pub fn take(var: &str) -> Vec<(String, TcpListener)> {
    static TAKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let Ok(text) = std::env::var(var) else {
        return Vec::new();
    };
    {
        let mut taken = TAKEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if taken.iter().any(|t| t == var) {
            return Vec::new();
        }
        taken.push(var.to_string());
    }
    decode(&text)
        .into_iter()
        .filter(|(_, fd)| is_listening_tcp(*fd))
        .map(|(name, fd)| {
            // SAFETY: the descriptor is open, a listening socket, and
            // nothing else in this process owns it: it was handed over
            // for this process to take, once (`TAKEN`).
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = close_on_exec(&owned, true);
            (name, TcpListener::from(owned))
        })
        .collect()
}

/// Sets or clears close-on-exec on `fd`.
///
/// # Errors
/// `fcntl` failed.
pub fn close_on_exec(fd: &impl AsRawFd, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{F_GETFD, F_SETFD, FdFlag, fcntl};
    // SAFETY: the caller owns or borrows an open descriptor.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let mut flags = FdFlag::from_bits_truncate(fcntl(borrowed, F_GETFD)?);
    flags.set(FdFlag::FD_CLOEXEC, on);
    fcntl(borrowed, F_SETFD(flags))?;
    Ok(())
}

fn is_listening_tcp(fd: RawFd) -> bool {
    // SAFETY: only queried; an fd that is not open fails the calls.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let stream = nix::sys::socket::getsockopt(&borrowed, sockopt::SockType)
        .is_ok_and(|t| t == SockType::Stream);
    let listening = nix::sys::socket::getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false);
    let inet = nix::sys::socket::getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family())
        .is_some_and(|f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6));
    stream && listening && inet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_bad_ones_are_left_out() {
        let text = encode([("tls", 7), ("tcp", 9)]);
        assert_eq!(text, "tls=7,tcp=9");
        assert_eq!(
            decode(&text),
            vec![("tls".to_string(), 7), ("tcp".to_string(), 9)]
        );
        assert!(decode("tls=x,=5,tcp=1,nothing").is_empty());
    }

    #[test]
    fn a_configured_port_0_is_served_by_any_port_of_its_address() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let one: SocketAddr = "127.0.0.1:8883".parse().unwrap();
        assert!(serves(any, one));
        assert!(serves(one, one));
        assert!(!serves(one, "127.0.0.1:8884".parse().unwrap()));
        assert!(!serves(any, "0.0.0.0:8883".parse().unwrap()));
    }

    #[test]
    fn a_bound_listener_is_recognised_and_a_file_is_not() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(is_listening_tcp(listener.as_raw_fd()));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_listening_tcp(file.as_raw_fd()));
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening_tcp(stream.as_raw_fd()));
    }
}
