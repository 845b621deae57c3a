//! The IMAP front end: listeners, the pre-auth core, the translation.
//!
//! - [`preauth`]: sans-I/O; bytes in, actions out (commands framed by
//!   [`crate::imap_wire`], which the store client shares).
//! - [`session`]: its hooks for the shared session driver ([`crate::frontend`]).
//! - [`translate`]: sans-I/O; for a user mailshift moved, the old store's
//!   UIDVALIDITY, UIDs and MODSEQs in both directions, plugged into the
//!   one relay loop ([`crate::frontend::relay`]) as its transform.

pub mod preauth;
pub mod session;
pub mod translate;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

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
    let ceiling = Some((open, connection_ceiling()));
    crate::frontend::accept_loop::<session::Imap>(listener, kind, current, ceiling, tracker).await;
}
