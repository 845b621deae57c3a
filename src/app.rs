//! What the running process shares: the config generation and what was built
//! from it (directory, router to the stores, TLS, session registry, failed-login
//! delays, the scheduler), plus the shutdown token. Every front end (IMAP, SMTP,
//! and the ones to come) and the admin API take an `Arc<App>`; a SIGHUP builds a
//! new one, sessions keep the one they started with.
//!
//! - [`sessions`]: the registry of every front end's relayed sessions (kicks,
//!   counts), carried from one generation to the next.

pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::{Directory, User};
use crate::route::{resolve, Ask, Resolution, Router};
use crate::store::Store;
use crate::tls::ServerTls;
use sessions::Sessions;

/// What the running process shares with every front end and the admin API:
/// one generation of the config and what was built from it.
pub struct App {
    /// The config.
    pub config: Arc<Config>,
    /// The directory.
    pub directory: Arc<Directory>,
    /// `mailHost` → store.
    pub router: Router<crate::store::Store>,
    /// The certificate, if any.
    pub tls: Option<Arc<ServerTls>>,
    /// Open sessions of every front end, for kicks.
    pub sessions: Arc<Sessions>,
    /// Failed-login delays.
    pub throttle: crate::throttle::Throttle,
    /// How long a login waits for a hold to end.
    pub hold_wait: Duration,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
    /// Migrations run by this instance (with `[migration]` and LDAP).
    pub scheduler: Option<Arc<crate::migrate::scheduler::Scheduler>>,
    /// UID maps of translated users, per (user, store).
    pub maps: Arc<crate::continuity::Maps>,
}

/// The front end as of the last (re)load: new connections take the current
/// generation, open sessions keep the one they started with.
pub type Current = std::sync::RwLock<Arc<App>>;

/// Why a login did not get through, and what kind of answer the client gets
/// (each protocol words it its own way: `NO [UNAVAILABLE]`, `-ERR [SYS/TEMP]`,
/// `454 4.7.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong password, unknown user, inactive account: all look the same.
    AuthFailed,
    /// Something temporary (directory, route, store, hold); the text says which.
    Unavailable(&'static str),
}

impl App {
    /// A login went through on any front end: lazy migration starts from
    /// here (with the password, for stores without a master user). The front
    /// ends call this instead of knowing about the scheduler.
    pub fn logged_in(&self, login: &str, password: &[u8]) {
        if let Some(s) = &self.scheduler {
            s.on_login(login, password);
        }
    }

    /// A login with a bearer token went through: lazy migration can start
    /// only where the source store has a master user (no password to use).
    pub fn logged_in_with_token(&self, login: &str) {
        if let Some(s) = &self.scheduler {
            s.on_token_login(login);
        }
    }

    /// The first half of every front end's login, the same for IMAP, POP3,
    /// submission and ManageSieve: look the user up (waiting out a hold up to
    /// `hold_wait`), check the password where the directory checks passwords
    /// (`None` for a bearer token: only the store can judge it), and route.
    /// The store login that follows is the protocol's own.
    pub async fn admit(
        &self,
        login: &str,
        password: Option<&[u8]>,
        peer: SocketAddr,
    ) -> Result<(User, Arc<Store>), Refusal> {
        let resolution = resolve(
            &self.directory,
            &self.router,
            login,
            Ask::Login,
            Some(self.hold_wait),
        )
        .await;
        let (user, target) = match resolution {
            Resolution::Routed { user, store } => (user, Ok(store)),
            Resolution::NoRoute { user, error } => (user, Err(error)),
            Resolution::Unknown | Resolution::Disabled(_) => return Err(Refusal::AuthFailed),
            Resolution::Held => {
                return Err(Refusal::Unavailable(
                    "Mailbox is being moved, try again in a minute.",
                ))
            }
            Resolution::DirectoryDown(e) => {
                tracing::warn!(user = %login, client = %peer, error = %e, "directory lookup failed");
                return Err(Refusal::Unavailable(
                    "Directory temporarily unavailable, try again.",
                ));
            }
        };
        if let Some(password) = password {
            match self.directory.check_password(&user, password).await {
                Ok(true) => {}
                Ok(false) => return Err(Refusal::AuthFailed),
                Err(e) => {
                    tracing::warn!(user = %login, client = %peer, error = %e, "password check failed");
                    return Err(Refusal::Unavailable(
                        "Directory temporarily unavailable, try again.",
                    ));
                }
            }
        }
        let target = target.map_err(|e| {
            tracing::error!(user = %login, client = %peer, error = %e, "no route");
            Refusal::Unavailable("Mailbox temporarily unavailable, try again.")
        })?;
        Ok((user, target))
    }
}
