//! The ManageSieve front end (RFC 5804): clients edit their Sieve filters and
//! vacation replies through mailshift, which routes them to the store that
//! holds their mailbox.
//!
//! - [`preauth`]: sans-I/O; bytes in, actions out (the wire format is
//!   [`crate::store::sieve::wire`], shared with the store client).
//! - [`session`]: the async driver of one connection (admit, store login,
//!   relay with [`crate::frontend::relay`]).

pub mod preauth;
pub mod session;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::Current;

/// Accepts connections until cancelled; sessions run on `tracker`, so a
/// shutdown waits for their BYE.
pub async fn accept_loop(
    listener: TcpListener,
    kind: session::Listener,
    current: Arc<Current>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    crate::frontend::accept_loop::<session::ManageSieve>(listener, kind, current, open, tracker)
        .await;
}
