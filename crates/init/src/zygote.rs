//! The zygote: a copy of verdant-init made with `fork()` before init starts
//! its runtime, which forks the core's daemons on request instead of init
//! executing the `verdant` binary again for each.
//!
//! Why: an executed daemon relocates its own copy of the binary's
//! `.data.rel.ro` (vtables, panic locations, log metadata: 175 KiB, every
//! page written by the dynamic loader) and of the C library's tables, and
//! builds its own logging and runtime statics; a forked one shares the
//! zygote's pages until it writes them. The figures are in
//! docs/benchmarks.md. The price: the daemons share one address-space layout
//! (still randomised at every start of the core), as Android's apps share
//! their zygote's. `[init] zygote = false` makes init execute each daemon.
//!
//! How: the zygote waits on a `SOCK_SEQPACKET` pair for a request (program
//! name, arguments, environment, working directory, and the service's
//! output pipe passed with `SCM_RIGHTS`, with the listening sockets init
//! holds for it, if any: the daemon finds them in `VERDANT_LISTEN_FDS`). For each it forks a helper, which
//! forks the daemon, answers with the daemon's pid and exits: the daemon,
//! orphaned, is adopted by init (a child subreaper or PID 1), which reaps
//! and signals it like an executed one. The daemon leaves the zygote's
//! loop and returns to `main` with its own command line.
//!
//! Each request also carries the read end of a "go" pipe whose write end
//! only init holds. The daemon sets itself up (session, descriptors, name)
//! and then waits for one byte on it before it runs anything of the
//! service: init writes it once it has the pid (and registers it), and
//! closes the pipe unwritten when the zygote did not answer in time. A
//! daemon forked by a zygote init gave up on reads the end of the pipe and
//! exits, so it never runs unsupervised beside the executed replacement.
//! (`VERDANT_ZYGOTE_TEST_STALL_MS` in init's environment delays every
//! answer, for the test of exactly that.)

use std::ffi::{CString, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use nix::unistd::{ForkResult, Pid, fork};

/// What a forked daemon runs: the multicall binary's dispatch by `argv[0]`.
pub type Entry = fn(Vec<OsString>) -> ExitCode;

/// Longest request (arguments and environment of one daemon).
const MAX_REQUEST: usize = 64 * 1024;

/// Most listening sockets one request hands over.
pub const MAX_LISTENERS: usize = 8;

/// How long init waits for the zygote to answer before giving up on it.
const ANSWER_TIMEOUT_SECS: i64 = 5;

/// What [`start`] returns in each process it leaves.
pub enum Started {
    /// In verdant-init: the zygote to send requests to.
    Init(Zygote),
    /// In a forked daemon, once it has run: its exit code.
    Daemon(ExitCode),
}

/// Init's end of the zygote.
#[derive(Debug)]
pub struct Zygote {
    pid: u32,
    /// `None` once the zygote failed to answer: services are then executed.
    socket: Mutex<Option<OwnedFd>>,
}

/// One daemon to fork.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `argv[0]`, which chooses the daemon (`verdant-broker`, ...).
    pub arg0: String,
    pub args: Vec<String>,
    /// Variables set on top of init's environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// The keys of the listening sockets handed over with the request, in
    /// order (`tls`, `tcp`, ...).
    pub listeners: Vec<String>,
}

/// Forks the zygote. Call it while the process has one thread (before any
/// runtime is built): the zygote and every daemon it forks continue from
/// this process's memory.
///
/// # Errors
/// The socket pair or the fork failed; init then executes its services.
pub fn start(entry: Entry) -> std::io::Result<Started> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let init = nix::unistd::getpid();
    // SAFETY: the caller guarantees a single thread; the child only runs
    // our own code before it returns to `main` as a daemon.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(theirs);
            setsockopt(
                &ours,
                sockopt::ReceiveTimeout,
                &TimeVal::new(ANSWER_TIMEOUT_SECS, 0),
            )?;
            Ok(Started::Init(Zygote {
                pid: child.as_raw().cast_unsigned(),
                socket: Mutex::new(Some(ours)),
            }))
        }
        ForkResult::Child => {
            drop(ours);
            let request = serve(theirs, init);
            Ok(Started::Daemon(run_daemon(request, entry)))
        }
    }
}

impl Zygote {
    /// The zygote's pid (a child of init).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether requests can still be sent.
    pub fn usable(&self) -> bool {
        self.socket.lock().expect("zygote lock").is_some()
    }

    /// Forks a daemon for `request` with `output` as its stdout and stderr
    /// and `listeners` (one for each of `request.listeners`) as its
    /// listening sockets; returns its pid. After an error that leaves the zygote unusable
    /// (gone, or silent), [`Zygote::usable`] is false from then on.
    ///
    /// # Errors
    /// The zygote could not fork the daemon, or did not answer.
    pub fn spawn(
        &self,
        request: &Request,
        output: &OwnedFd,
        listeners: &[RawFd],
    ) -> std::io::Result<u32> {
        if listeners.len() != request.listeners.len() || listeners.len() > MAX_LISTENERS {
            return Err(std::io::Error::other(
                "listening sockets do not match their keys",
            ));
        }
        let mut guard = self.socket.lock().expect("zygote lock");
        let Some(socket) = guard.as_ref() else {
            return Err(std::io::Error::other("the zygote is gone"));
        };
        let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut fds = vec![output.as_raw_fd(), go_read.as_raw_fd()];
        fds.extend_from_slice(listeners);
        let result = ask(socket, &encode(request), &fds);
        drop(go_read);
        if result.is_ok() {
            // The caller registers the pid under the reaper's lock before
            // the daemon could be reaped; the daemon may start.
            let _ = nix::unistd::write(&go_write, b"g");
        }
        // Unwritten (no answer): the daemon, if forked, reads EOF and exits.
        drop(go_write);
        if let Err(e) = &result
            && e.kind() != std::io::ErrorKind::Other
        {
            tracing::warn!(
                pid = self.pid,
                "the zygote does not answer ({e}); services are executed from now on"
            );
            *guard = None;
            // A zygote that is only slow must not fork what it was asked
            // for later, behind init's back.
            let _ = nix::sys::signal::kill(
                Pid::from_raw(self.pid.cast_signed()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        result
    }

    /// Closes init's end: the zygote exits.
    pub fn close(&self) {
        self.socket.lock().expect("zygote lock").take();
    }
}

/// Sends one request and reads the answer: `P` and a pid (4 bytes, little
/// endian), or `E` and a reason.
fn ask(socket: &OwnedFd, message: &[u8], fds: &[RawFd]) -> std::io::Result<u32> {
    // A signal to init (SIGCHLD above all) interrupts these calls: a socket
    // with a receive timeout is not restarted (signal(7)). Try again, within
    // the one timeout: an interrupted wait is not a silent zygote.
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(ANSWER_TIMEOUT_SECS.cast_unsigned());
    let again = |e: nix::errno::Errno| {
        if e == nix::errno::Errno::EINTR && std::time::Instant::now() < deadline {
            Ok(())
        } else {
            Err(std::io::Error::from(e))
        }
    };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(message)],
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => break,
            Err(e) => again(e)?,
        }
    }
    let mut answer = [0u8; 512];
    let len = loop {
        match nix::sys::socket::recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty()) {
            Ok(len) => break len,
            Err(e) => again(e)?,
        }
    };
    match &answer[..len] {
        [] => Err(std::io::ErrorKind::UnexpectedEof.into()),
        [b'E', reason @ ..] => Err(std::io::Error::other(
            String::from_utf8_lossy(reason).into_owned(),
        )),
        [b'P', pid @ ..] if pid.len() == 4 => {
            Ok(u32::from_le_bytes([pid[0], pid[1], pid[2], pid[3]]))
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected answer of {} bytes", other.len()),
        )),
    }
}

/// A request on the wire: NUL-terminated fields, `a` before an argument,
/// `e` before a `NAME=value`, `c` before the working directory, `0` before
/// `argv[0]`, `l` before a listening socket's key.
fn encode(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |tag: u8, bytes: &[u8]| {
        out.push(tag);
        out.extend_from_slice(bytes);
        out.push(0);
    };
    field(b'0', request.arg0.as_bytes());
    field(b'c', request.cwd.as_os_str().as_bytes());
    for arg in &request.args {
        field(b'a', arg.as_bytes());
    }
    for (name, value) in &request.env {
        let mut pair = name.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        field(b'e', &pair);
    }
    for key in &request.listeners {
        field(b'l', key.as_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Request> {
    let mut request = Request::default();
    for field in bytes.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let (&tag, rest) = field.split_first()?;
        let text = || String::from_utf8(rest.to_vec()).ok();
        match tag {
            b'0' => request.arg0 = text()?,
            b'c' => request.cwd = PathBuf::from(OsString::from_vec(rest.to_vec())),
            b'a' => request.args.push(text()?),
            b'l' => request.listeners.push(text()?),
            b'e' => {
                let eq = rest.iter().position(|&b| b == b'=')?;
                request.env.push((
                    OsString::from_vec(rest[..eq].to_vec()),
                    OsString::from_vec(rest[eq + 1..].to_vec()),
                ));
            }
            _ => return None,
        }
    }
    (!request.arg0.is_empty()).then_some(request)
}

/// The zygote's loop. Returns only in a forked daemon, set up as `exec`
/// would have left it, with what it is to run.
fn serve(socket: OwnedFd, init: Pid) -> Request {
    // Die with init; if init is already gone, do not linger.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid() != init {
        exit_now(0);
    }
    // Out of init's process group: a terminal's ^C is for init, which
    // stops the services in order, not for the zygote.
    let _ = nix::unistd::setsid();
    // Nothing init had open is the zygote's to keep (the sockets init held
    // across an `exec`, above all: they are handed over per request).
    close_inherited(&[socket.as_raw_fd()]);
    let _ = nix::sys::prctl::set_name(c"verdant-zygote");
    retitle("verdant-zygote");
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        // At the end of the stream init closed its end, or is gone.
        let Ok(Some((len, fds))) = receive(&socket, &mut buf) else {
            exit_now(0)
        };
        let Some(request) = decode(&buf[..len]) else {
            answer_error(&socket, "malformed request");
            continue;
        };
        let mut fds = fds.into_iter();
        let (Some(output), Some(go)) = (fds.next(), fds.next()) else {
            answer_error(&socket, "no output and go descriptors");
            continue;
        };
        let listeners: Vec<OwnedFd> = fds.collect();
        if listeners.len() != request.listeners.len() {
            answer_error(&socket, "listening sockets do not match their keys");
            continue;
        }
        // SAFETY: the zygote has one thread.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(output);
                drop(go);
                drop(listeners);
                let _ = nix::sys::wait::waitpid(child, None);
            }
            Ok(ForkResult::Child) => {
                // The helper: fork the daemon, say its pid, exit.
                // SAFETY: still one thread.
                match unsafe { fork() } {
                    Ok(ForkResult::Parent { child }) => {
                        drop(go);
                        drop(listeners);
                        stall_for_tests();
                        let mut answer = b"P".to_vec();
                        answer.extend_from_slice(&child.as_raw().cast_unsigned().to_le_bytes());
                        let _ = nix::sys::socket::send(
                            socket.as_raw_fd(),
                            &answer,
                            MsgFlags::MSG_NOSIGNAL,
                        );
                        exit_now(0);
                    }
                    Ok(ForkResult::Child) => {
                        drop(socket);
                        if let Err(e) = become_daemon(output, &request, &go, listeners) {
                            eprintln!("{}: cannot start from the zygote: {e}", request.arg0);
                            exit_now(1);
                        }
                        // Set up while init registered it; nothing seen
                        // outside this process has happened yet.
                        if !go_ahead(&go) {
                            exit_now(0);
                        }
                        drop(go);
                        return request;
                    }
                    Err(e) => {
                        answer_error(&socket, &format!("fork: {e}"));
                        exit_now(1);
                    }
                }
            }
            Err(e) => answer_error(&socket, &format!("fork: {e}")),
        }
    }
}

/// In a forked daemon: waits for init's byte on the go pipe; false at its
/// end (init gave up on the zygote and did not register this process).
fn go_ahead(go: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(go, &mut byte) {
            Ok(n) => return n == 1,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// The test hook of the module's documentation: the helper waits this long
/// before it answers.
fn stall_for_tests() {
    if let Some(ms) = std::env::var("VERDANT_ZYGOTE_TEST_STALL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// One request and the descriptors it carries; `None` at end of stream.
fn receive(socket: &OwnedFd, buf: &mut [u8]) -> nix::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 2 + MAX_LISTENERS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just gave us these descriptors.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    if len == 0 {
        return Ok(None);
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Ok(Some((0, fds))); // decodes as malformed
    }
    Ok(Some((len, fds)))
}

fn answer_error(socket: &OwnedFd, reason: &str) {
    let mut message = b"E".to_vec();
    message.extend_from_slice(reason.as_bytes());
    let _ = nix::sys::socket::send(socket.as_raw_fd(), &message, MsgFlags::MSG_NOSIGNAL);
}

/// In the forked daemon: what `exec` would have done (a new session,
/// stdin from /dev/null, output to the service's pipe, no other inherited
/// descriptor but its listening sockets, the environment and directory
/// asked for, its own name).
fn become_daemon(
    output: OwnedFd,
    request: &Request,
    go: &OwnedFd,
    listeners: Vec<OwnedFd>,
) -> std::io::Result<()> {
    nix::unistd::setsid()?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&output)?;
    nix::unistd::dup2_stderr(&output)?;
    drop(output);
    drop(null);
    let mut keep: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    keep.push(go.as_raw_fd());
    close_inherited(&keep);
    std::env::set_current_dir(&request.cwd)?;
    for (name, value) in &request.env {
        // SAFETY: this process has one thread.
        unsafe { std::env::set_var(name, value) };
    }
    if !listeners.is_empty() {
        let pairs = request.listeners.iter().map(String::as_str).zip(
            listeners
                .into_iter()
                .map(std::os::fd::IntoRawFd::into_raw_fd),
        );
        // SAFETY: this process has one thread. The descriptors, now
        // unowned here, are the daemon's to take (`listen::take`).
        unsafe {
            std::env::set_var(
                verdant_common::listen::ENV,
                verdant_common::listen::encode(pairs),
            );
        }
    }
    if let Ok(comm) = CString::new(request.arg0.bytes().take(15).collect::<Vec<u8>>()) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
    retitle(&request.arg0);
    Ok(())
}

/// Runs the daemon `request` names, in the process [`serve`] left it.
fn run_daemon(request: Request, entry: Entry) -> ExitCode {
    let mut args = vec![OsString::from(request.arg0)];
    args.extend(request.args.into_iter().map(OsString::from));
    entry(args)
}

/// Closes every descriptor above stderr but `keep`: a forked daemon holds nothing
/// of init's (an executed one would keep what init inherited without
/// close-on-exec; this is stricter).
fn close_inherited(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: no owner in this process uses these descriptors any more
        // (the listing's own is already closed: that close fails, harmlessly).
        unsafe { libc::close(fd) };
    }
}

/// Shows `name` as the process's command line (`ps`, `pgrep -f`): written
/// over the inherited `argv` strings, as `setproctitle` does, truncated to
/// the space they had.
fn retitle(name: &str) {
    let Some((start, end)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // arg_start and arg_end are fields 48 and 49; `rest` starts at 3.
            Some((
                fields.get(45)?.parse::<usize>().ok()?,
                fields.get(46)?.parse::<usize>().ok()?,
            ))
        })
    else {
        return;
    };
    if start == 0 || end <= start {
        return;
    }
    let room = end - start;
    let bytes = name.as_bytes();
    let n = bytes.len().min(room - 1);
    // SAFETY: [arg_start, arg_end) is this process's own argument area
    // (on its stack, writable); the copies of the arguments Rust made at
    // start are what the program reads.
    unsafe {
        let area = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, n);
        std::ptr::write_bytes(area.add(n), 0, room - n);
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running anything of ours.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let request = Request {
            arg0: "verdant-broker".into(),
            args: vec!["--flag".into(), "with space".into()],
            env: vec![("VERDANT_ROOT".into(), "/tmp/a=b".into())],
            cwd: "/tmp/root".into(),
            listeners: vec!["tls".into(), "tcp".into()],
        };
        let back = decode(&encode(&request)).expect("decodes");
        assert_eq!(back.arg0, request.arg0);
        assert_eq!(back.args, request.args);
        assert_eq!(back.env, request.env);
        assert_eq!(back.cwd, request.cwd);
        assert_eq!(back.listeners, request.listeners);
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(decode(b"").is_none());
        assert!(decode(b"xwhat\0").is_none());
        assert!(decode(b"enovalue\0").is_none());
        assert!(decode(b"a--only-args\0").is_none());
    }
}
