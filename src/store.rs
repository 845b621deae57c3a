//! How mailshift talks to a store (a `[backends.NAME]`), written once.
//!
//! - [`Store`]: one per `[backends.NAME]`, built once from the config: its
//!   endpoints, master login and TLS [`connect::Connector`].
//! - [`imap`]: the IMAP client. A sans-I/O response reader
//!   ([`imap::response`]) and login dialog ([`imap::login`]) under one
//!   driver ([`imap::Client`]), used by the proxy's backend leg, the
//!   migration engine, the cutover, verify, rollback and the sweep.
//! - [`Error`]: one error type that says which [`Side`] failed.

pub mod bearer;
pub mod connect;
mod error;
pub mod imap;

pub use error::{Error, Side, StoreError};

use crate::config::{BackendConfig, BackendLogin};
use imap::login::{Credentials, Master};

/// One store, as configured.
pub struct Store {
    /// Its configuration.
    pub cfg: BackendConfig,
    /// How to reach it.
    pub connector: connect::Connector,
}

impl Store {
    /// Builds the store (loads its CA file).
    pub fn new(cfg: BackendConfig) -> Result<Store, crate::tls::Error> {
        Ok(Store {
            connector: connect::Connector::new(&cfg)?,
            cfg,
        })
    }

    /// The `[backends.NAME]` name.
    pub fn name(&self) -> &str {
        &self.cfg.name
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
}
