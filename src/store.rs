//! How mailshift talks to a store (a `[backends.NAME]`), written once.
//!
//! - [`Store`]: one per `[backends.NAME]`, built once from the config: its
//!   endpoints, master login and TLS [`connect::Connector`].
//! - [`imap`]: the IMAP client. A sans-I/O response reader
//!   ([`imap::response`]) and login dialog ([`imap::login`]) under one
//!   driver ([`imap::Client`]), used by the proxy's backend leg, the
//!   migration engine, the cutover, verify, rollback and the sweep.
//! - [`smtp`]: the SMTP/LMTP client (sans-I/O reply reader and session
//!   opening under [`smtp::Conn`]): inbound delivery legs, the retry queue,
//!   the submission leg.
//! - [`pop3`]: the POP3 client (login as the user or a master user, then
//!   a relay; UIDL for tools that read a store).
//! - [`sieve`]: the ManageSieve client (sans-I/O [`sieve::wire`] framer and
//!   [`sieve::login`] dialog under [`sieve::Client`]), used by the ManageSieve
//!   front end's store leg and the script migration.
//! - [`Error`]: one error type that says which [`Side`] failed.

pub mod bearer;
pub mod connect;
mod error;
pub mod imap;
pub mod pop3;
pub mod sieve;
pub mod smtp;

pub use error::{Error, Side, StoreError};

use std::time::Duration;

use crate::config::{BackendConfig, BackendLogin, Endpoint};
use imap::login::{Credentials, Master};

/// One store, as configured.
pub struct Store {
    /// Its configuration.
    pub cfg: BackendConfig,
    /// How to reach it.
    pub connector: connect::Connector,
    /// Its POP3 took USER/PASS after refusing AUTH PLAIN: later logins
    /// start there (one round trip fewer, no refused AUTH in its logs).
    pop3_user_pass: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Builds the store (loads its CA file).
    pub fn new(cfg: BackendConfig) -> Result<Store, crate::tls::Error> {
        Ok(Store {
            connector: connect::Connector::new(&cfg)?,
            cfg,
            pop3_user_pass: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether POP3 logins start with USER/PASS (see [`Store::pop3_user_pass`]).
    pub fn pop3_prefers_user_pass(&self) -> bool {
        self.pop3_user_pass
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the last POP3 login learnt: USER/PASS is the way in, or not.
    pub fn pop3_user_pass(&self, yes: bool) {
        self.pop3_user_pass
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A relay that is no `[backends.NAME]` (`[smtp] bounce_relay`).
    pub fn relay(endpoint: Endpoint) -> Result<Store, crate::tls::Error> {
        Store::new(BackendConfig {
            name: "bounce_relay".into(),
            mailhosts: Vec::new(),
            imap: endpoint.clone(),
            delivery: Some(endpoint),
            submission: None,
            master: None,
            login: BackendLogin::User,
            ca_file: None,
            tls_server_name: None,
            connect_timeout: Duration::from_secs(30),
            passwords_file: None,
            pop3: None,
            pop3_uidl_format: crate::config::UidlFormat::default(),
            pop3_uidl_format_set: false,
            sieve: None,
        })
    }

    /// A delivery leg: the store's `delivery` endpoint (SMTP or LMTP), greeted
    /// as `hostname`, the sending client introduced where the store allows.
    ///
    /// # Errors
    /// No `delivery` endpoint, or the store could not be reached or refused.
    pub async fn delivery(
        &self,
        hostname: &str,
        origin: Option<smtp::Origin>,
        timeout: Duration,
    ) -> Result<smtp::Conn, StoreError> {
        let Some(ep) = &self.cfg.delivery else {
            return Err(self.error(Error::Config("no delivery endpoint configured".into())));
        };
        let plan = smtp::Plan {
            lmtp: false,
            hostname: hostname.to_string(),
            starttls: false,
            origin,
            auth: None,
        };
        smtp::Conn::open(self, ep, plan, timeout).await
    }

    /// A submission leg: the store's `submission` endpoint, the client
    /// introduced (XCLIENT) where offered, authenticated by `auth`.
    ///
    /// # Errors
    /// No `submission` endpoint, the store could not be reached, or it
    /// refused the credentials ([`Error::Rejected`]).
    pub async fn submission(
        &self,
        hostname: &str,
        origin: smtp::Origin,
        auth: smtp::Auth,
        timeout: Duration,
    ) -> Result<smtp::Conn, StoreError> {
        let Some(ep) = &self.cfg.submission else {
            return Err(self.error(Error::Config("no submission endpoint configured".into())));
        };
        let plan = smtp::Plan {
            lmtp: false,
            hostname: hostname.to_string(),
            starttls: false,
            origin: Some(origin),
            auth: Some(auth),
        };
        smtp::Conn::open(self, ep, plan, timeout).await
    }

    fn error(&self, error: Error) -> StoreError {
        StoreError {
            store: self.name().to_string(),
            error,
        }
    }

    /// The `[backends.NAME]` name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Runs a login dialog within the store's `connect_timeout`; a timeout
    /// names the `stage` the dialog had reached, every error the store.
    pub async fn within<T>(
        &self,
        stage: &Stage,
        dialog: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, StoreError> {
        let outcome = match tokio::time::timeout(self.cfg.connect_timeout, dialog).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout { stage: stage.get() }),
        };
        outcome.map_err(|error| StoreError {
            store: self.name().to_string(),
            error,
        })
    }

    /// Its master login, if configured.
    pub fn master(&self) -> Option<Master<'_>> {
        self.cfg.master.as_ref().map(|m| Master {
            user: &m.user,
            password: &m.password,
            separator: m.separator.as_deref(),
        })
    }

    /// How a proxied session of `user` logs in (`login = "user" | "master"`).
    pub fn session_credentials<'a>(&self, user: &'a str, password: &'a [u8]) -> Credentials<'a> {
        match self.cfg.login {
            BackendLogin::User => Credentials::User { user, password },
            BackendLogin::Master => Credentials::Master { user },
        }
    }

    /// The user's password from `passwords_file`, for a store without a master
    /// user. `Ok(None)` when no file is configured or the user is not in it.
    pub fn listed_password(&self, user: &str) -> std::io::Result<Option<Vec<u8>>> {
        let Some(path) = &self.cfg.passwords_file else {
            return Ok(None);
        };
        Ok(find_password(&std::fs::read_to_string(path)?, user))
    }
}

/// `login:password` lines; the first `:` splits (passwords may hold colons);
/// blank lines and `#` comments are skipped.
fn find_password(text: &str, user: &str) -> Option<Vec<u8>> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .find(|(login, _)| login.trim() == user)
        .map(|(_, pw)| pw.as_bytes().to_vec())
}

/// Where a login dialog is: the dialog moves it on, [`Store::within`]
/// reads it when the store stops answering.
#[derive(Debug)]
pub struct Stage(std::sync::Mutex<&'static str>);

impl Stage {
    /// A dialog starting at `first`.
    pub fn new(first: &'static str) -> Stage {
        Stage(std::sync::Mutex::new(first))
    }

    /// The dialog reached `stage`.
    pub fn set(&self, stage: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = stage;
    }

    /// The stage reached.
    pub fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_file_lines() {
        let text = "# site dump\nalice:s3:cr:et\n\nbob:pw\r\n";
        assert_eq!(
            super::find_password(text, "alice"),
            Some(b"s3:cr:et".to_vec())
        );
        assert_eq!(super::find_password(text, "bob"), Some(b"pw".to_vec()));
        assert_eq!(super::find_password(text, "carol"), None);
        assert_eq!(super::find_password(text, "# site dump"), None);
    }

    /// A store that stops answering: the error names the store and the
    /// stage the dialog had reached, after `connect_timeout` (30 s here,
    /// on tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_stalled_dialog_times_out_at_its_stage() {
        let store = super::Store::relay(crate::config::Endpoint {
            scheme: "smtp".into(),
            security: crate::config::Security::Plain,
            host: "127.0.0.1".into(),
            port: 9,
        })
        .expect("store");
        let stage = super::Stage::new("connect");
        let dialog = async {
            stage.set("greeting");
            std::future::pending::<Result<(), super::Error>>().await
        };
        let err = store.within(&stage, dialog).await.expect_err("times out");
        assert_eq!(err.store, "bounce_relay");
        assert!(
            matches!(err.error, super::Error::Timeout { stage: "greeting" }),
            "{err}"
        );
    }
}
