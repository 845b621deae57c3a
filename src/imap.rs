//! The IMAP front end: listeners, the pre-auth core, the relay.
//!
//! - [`preauth`]: sans-I/O; bytes in, actions out (commands framed by
//!   [`crate::imap_wire`], which the store client shares).
//! - [`session`]: the async driver of one connection.
//! - [`relay`]: bytes both ways after login (plain, spliced, or translated).
//! - [`translate`]: sans-I/O; for a user mailshift moved, the old store's
//!   UIDVALIDITY, UIDs and MODSEQs in both directions.

mod bearer;
pub mod preauth;
pub mod relay;
pub mod session;
pub mod translate;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use crate::app::Current;

/// The open-file limit of this process (soft), if it can be read.
pub fn fd_limit() -> Option<u64> {
    // SAFETY: getrlimit only writes the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0).then_some(lim.rlim_cur)
    }
}

/// How many client connections fit: each holds two sockets (client and store),
/// with room left for LDAP, the admin API and accepting.
pub fn connection_ceiling() -> usize {
    match fd_limit() {
        Some(n) if n < u64::MAX / 2 => (n.saturating_sub(128) / 2).max(16) as usize,
        _ => usize::MAX,
    }
}

/// Counts a connection as open while alive.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until cancelled. Past the connection ceiling a client
/// is told so (`* BYE`) instead of being left unanswered in the backlog.
/// Sessions run on `tracker`, so a shutdown can wait for their BYE.
pub async fn accept_loop(
    listener: TcpListener,
    kind: session::Listener,
    current: Arc<Current>,
    open: Arc<AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    let ceiling = connection_ceiling();
    let mut last_warning: Option<tokio::time::Instant> = None;
    // The token is the same in every generation.
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
                if open.fetch_add(1, Ordering::Relaxed) >= ceiling {
                    open.fetch_sub(1, Ordering::Relaxed);
                    // Best effort, never blocking the accept loop.
                    let _ = tcp.try_write(b"* BYE Too many connections, try again later.\r\n");
                    tracing::warn!(client = %peer, ceiling, "connection refused: at the open-file ceiling");
                    continue;
                }
                let guard = Open(Arc::clone(&open));
                let shared = Arc::clone(&current.read().unwrap_or_else(|p| p.into_inner()));
                tracker.spawn(async move {
                    // From here on the client is who the PROXY header names.
                    let cfg = &shared.config;
                    if let Some((tcp, client)) = crate::proxy_protocol::client_of(
                        tcp,
                        peer,
                        cfg.imap.proxy_protocol,
                        &cfg.trusted_proxies,
                        cfg.imap.preauth_timeout,
                        "imap",
                    )
                    .await
                    {
                        session::serve(tcp, client, kind, shared).await;
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say so
                // once in a while rather than ten times a second.
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
