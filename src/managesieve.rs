//! The ManageSieve front end (RFC 5804): clients edit their Sieve filters and
//! vacation replies through mailshift, which routes them to the store that
//! holds their mailbox.
//!
//! - [`preauth`]: sans-I/O; bytes in, actions out (the wire format is
//!   [`crate::store::sieve::wire`], shared with the store client).
//! - [`session`]: the async driver of one connection (admit, store login,
//!   relay with [`crate::imap::relay`]).

pub mod preauth;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::Current;

/// Accepts connections until cancelled; sessions run on `tracker`, so a
/// shutdown waits for their BYE.
pub async fn accept_loop(
    listener: TcpListener,
    kind: session::Listener,
    current: Arc<Current>,
    tracker: tokio_util::task::TaskTracker,
) {
    let cancel = current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .cancel
        .clone();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let shared = Arc::clone(&current.read().unwrap_or_else(|p| p.into_inner()));
                tracker.spawn(async move {
                    // From here on the client is who the PROXY header names.
                    let cfg = &shared.config;
                    if let Some((tcp, client)) = crate::proxy_protocol::client_of(
                        tcp,
                        peer,
                        cfg.managesieve.as_ref().is_some_and(|c| c.proxy_protocol),
                        &cfg.trusted_proxies,
                        cfg.managesieve
                            .as_ref()
                            .map_or(Duration::from_secs(60), |c| c.preauth_timeout),
                        "managesieve",
                    )
                    .await
                    {
                        session::serve(tcp, client, kind, shared).await;
                    }
                });
            }
            Err(e) => {
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "ManageSieve accept failed; backing off");
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
