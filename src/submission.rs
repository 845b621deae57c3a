//! The message submission front end (RFC 6409 on 587 with STARTTLS, RFC 8314
//! implicit TLS on 465): the client authenticates to mailshift, which
//! resolves the user like an IMAP login and opens the user's store's
//! submission service as the user; then bytes flow both ways.
//!
//! ```text
//!  client ─► session (socket, TLS, timeouts) ─► preauth (sans-I/O: EHLO, STARTTLS, AUTH)
//!        ─► App::admit (lookup, hold wait, password) ─► Store::submission (store::smtp:
//!           EHLO, STARTTLS, XCLIENT, AUTH as the user) ─► 235 ─► byte relay
//! ```
//!
//! - [`preauth`] is sans-I/O: bytes in, actions out.
//! - [`session`] is the async driver of one connection.
//! - [`metrics`] holds `mailshift_submission_*`.

pub mod metrics;
pub mod preauth;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::Current;
pub use session::Listener;

/// Accepts connections until shutdown; each session takes the generation
/// current at its accept. Sessions run on `tracker`, so a shutdown waits.
pub async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    current: Arc<Current>,
    tracker: tokio_util::task::TaskTracker,
) {
    let cancel = current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .cancel
        .clone();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let app = Arc::clone(&current.read().unwrap_or_else(|p| p.into_inner()));
                tracker.spawn(async move {
                    // From here on the client is who the PROXY header names.
                    let cfg = &app.config;
                    if let Some((tcp, client)) = crate::proxy_protocol::client_of(
                        tcp,
                        peer,
                        cfg.submission.as_ref().is_some_and(|c| c.proxy_protocol),
                        &cfg.trusted_proxies,
                        cfg.submission
                            .as_ref()
                            .map_or(Duration::from_secs(60), |c| c.preauth_timeout),
                        "submission",
                    )
                    .await
                    {
                        session::serve(tcp, client, kind, app).await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "submission accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
