//! The systemd notification protocol, used only when `NOTIFY_SOCKET` is
//! set: `READY=1` once every service has settled, `WATCHDOG=1` at half of
//! `WATCHDOG_USEC`, `STOPPING=1` on shutdown, `RELOADING=1` before init
//! executes another version of itself.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

pub fn ready(status: &str) {
    if enabled() {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }
}

/// Init stops everything: to exit (`STOPPING=1`), or to execute `next`
/// in its place (`RELOADING=1`).
pub fn leaving(next: Option<&std::path::Path>) {
    match next {
        Some(exe) => reloading(&format!("switching to {}", exe.display())),
        None => stopping(),
    }
}

pub fn stopping() {
    if enabled() {
        send(&[NotifyState::Stopping]);
    }
}

/// Before init executes another version of itself in place: the unit is
/// reloading, not stopping (systemd then waits for the new image's
/// `READY=1` instead of arming its stop timeout).
pub fn reloading(status: &str) {
    if enabled() {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        let now = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) } == 0 {
            i128::from(t.tv_sec) * 1_000_000 + i128::from(t.tv_nsec) / 1000
        } else {
            0
        };
        send(&[
            NotifyState::Reloading,
            NotifyState::MonotonicUsec(now),
            NotifyState::Status(status),
        ]);
    }
}

/// Pings the watchdog until `stop` is cancelled, if systemd asked for it.
pub fn watchdog(stop: CancellationToken) {
    if !enabled() {
        return;
    }
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                () = stop.cancelled() => return,
            }
        }
    });
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
