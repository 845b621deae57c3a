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

/// Accepts connections until cancelled. Past the connection ceiling
/// ([`crate::frontend::connection_ceiling`], shared by every front end that
/// relays) a client is told so (`* BYE`) instead of being left unanswered in
/// the backlog. Sessions run on `tracker`, so a shutdown can wait for their BYE.
pub async fn accept_loop(
    listener: TcpListener,
    kind: session::Listener,
    current: Arc<Current>,
    open: Arc<AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    crate::frontend::accept_loop::<session::Imap>(listener, kind, current, open, tracker).await;
}
