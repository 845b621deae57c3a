//! The POP3 front end: listeners (110 with STLS, 995), the pre-auth core, the
//! relay. The same lookup, hold wait, failure delays, routing, kicks and
//! shutdown as IMAP; `-ERR [AUTH]` and `-ERR [SYS/TEMP]` (RFC 3206) where
//! IMAP says `NO [AUTHENTICATIONFAILED]` and `NO [UNAVAILABLE]`.
//!
//! - [`preauth`]: sans-I/O AUTHORIZATION state; bytes in, actions out.
//! - [`session`]: the async driver of one connection.
//! - [`uidl`]: sans-I/O UIDL rewriting for users mailshift moved, driven by
//!   [`relay`]; everyone else gets the IMAP front end's byte relay.

pub mod preauth;
pub mod relay;
pub mod session;
pub mod uidl;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::Current;

/// Accepts connections until cancelled; sessions run on `tracker`, so a
/// shutdown waits for their `-ERR [SYS/TEMP]`.
pub async fn accept_loop(
    listener: TcpListener,
    kind: session::Listener,
    current: Arc<Current>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    crate::frontend::accept_loop::<session::Pop3>(listener, kind, current, open, tracker).await;
}
