//! Stopping a command that moves users: SIGTERM and SIGINT, then the grace.

use tokio_util::sync::CancellationToken;

/// Cancelled on SIGTERM or SIGINT: like `serve`, a move in progress then
/// finishes or undoes its hold (within `shutdown_grace`) before the exit.
pub fn stop_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut t) => {
                    t.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("mailshift: stopping; a user in hold is finished or released first");
        token.cancel();
    });
    stop
}

/// Resolves `grace` after `stop` is cancelled: the most an interrupted run waits.
pub async fn past_grace(stop: &CancellationToken, grace: std::time::Duration) {
    stop.cancelled().await;
    tokio::time::sleep(grace).await;
}
