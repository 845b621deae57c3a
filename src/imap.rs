//! The IMAP front end: listeners, the pre-auth core, the backend leg, the relay.
//!
//! - [`framer`] and [`preauth`]: sans-I/O; bytes in, actions out.
//! - [`session`]: the async driver of one connection.
//! - [`backend`]: connect and log in to a store on a user's behalf.
//! - [`relay`]: bytes both ways after login.
//! - [`throttle`]: growing delays for failed logins.

pub mod backend;
pub mod framer;
pub mod preauth;
pub mod relay;
pub mod session;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::Directory;
use crate::route::Router;
use crate::sessions::Sessions;
use crate::tls::ServerTls;

/// What every session of the front end shares.
pub struct Shared {
    /// The config.
    pub config: Arc<Config>,
    /// The directory.
    pub directory: Arc<Directory>,
    /// `mailHost` → store.
    pub router: Router<backend::Backend>,
    /// The certificate, if any.
    pub tls: Option<Arc<ServerTls>>,
    /// Open sessions, for kicks.
    pub sessions: Arc<Sessions>,
    /// Failed-login delays.
    pub throttle: throttle::Throttle,
    /// How long a login waits for a hold to end.
    pub hold_wait: Duration,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
}

/// Accepts connections until cancelled.
pub async fn accept_loop(listener: TcpListener, kind: session::Listener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(session::serve(tcp, peer, kind, Arc::clone(&shared)));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
