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

use tokio::net::TcpListener;

use crate::app::Current;
pub use session::Listener;

/// Accepts connections until shutdown; each session takes the generation
/// current at its accept. Sessions run on `tracker`, so a shutdown waits.
pub async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    current: Arc<Current>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    crate::frontend::accept_loop::<session::Submission>(listener, kind, current, open, tracker)
        .await;
}
