//! One shutdown pattern for every daemon: SIGTERM and SIGINT cancel one
//! [`CancellationToken`]; tasks run on a [`TaskTracker`]; servers stop
//! through the token; then [`drain`] waits for the tasks with a deadline and
//! names what did not finish.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = t.cancelled() => return,
        };
        t.cancel();
        tracing::info!(signal = name, "stopping");
    });
    Ok(token)
}

/// Closes `tracker` and waits up to `deadline` for its tasks; returns
/// whether all finished (a warning is logged otherwise).
pub async fn drain(tracker: &TaskTracker, deadline: Duration) -> bool {
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait()).await.is_ok() {
        true
    } else {
        tracing::warn!(
            remaining = tracker.len(),
            "tasks still running after {deadline:?}; exiting anyway"
        );
        false
    }
}
