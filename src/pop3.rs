//! The POP3 front end: listeners (110 with STLS, 995), the pre-auth core, the
//! relay. The same lookup, hold wait, failure delays, routing, kicks and
//! shutdown as IMAP; `-ERR [AUTH]` and `-ERR [SYS/TEMP]` (RFC 3206) where
//! IMAP says `NO [AUTHENTICATIONFAILED]` and `NO [UNAVAILABLE]`.
//!
//! - [`preauth`]: sans-I/O AUTHORIZATION state; bytes in, actions out.
//! - [`session`]: the async driver of one connection.
//! - [`uidl`]: sans-I/O UIDL rewriting for users mailshift moved, driven by
//!   [`relay`]; everyone else gets the IMAP front end's byte relay.

mod bearer;
pub mod preauth;
pub mod relay;
pub mod session;
pub mod uidl;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::Current;

/// Accepts connections until cancelled; sessions run on `tracker`, so a
/// shutdown waits for their `-ERR [SYS/TEMP]`.
pub async fn accept_loop(
    listener: TcpListener,
    kind: session::Listener,
    current: Arc<Current>,
    tracker: tokio_util::task::TaskTracker,
) {
    // The token is the same in every generation.
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
                        cfg.pop3.as_ref().is_some_and(|c| c.proxy_protocol),
                        &cfg.trusted_proxies,
                        cfg.pop3
                            .as_ref()
                            .map_or(Duration::from_secs(60), |c| c.preauth_timeout),
                        "pop3",
                    )
                    .await
                    {
                        session::serve(tcp, client, kind, shared).await;
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "POP3 accept failed; backing off");
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
