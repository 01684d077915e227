//! The systemd notification protocol, used only when `NOTIFY_SOCKET` is
//! set: `READY=1` once every service has settled, `WATCHDOG=1` at half of
//! `WATCHDOG_USEC`, `STOPPING=1` on shutdown.

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

pub fn stopping() {
    if enabled() {
        send(&[NotifyState::Stopping]);
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
