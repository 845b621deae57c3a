//! The ManageSieve front end's own parts of a session ([`ManageSieve`] for
//! the shared driver in [`crate::frontend`]): the store's ManageSieve login as
//! the user (or the master user), or with the client's bearer token
//! unchanged; `NO` / `NO (TRYLATER)` wording; the plain byte relay.
//!
//! ```text
//!  accept ─► [TLS] ─► PreAuth (listing, STARTTLS, AUTHENTICATE) ─► Login
//!        ─► App::admit ─► store ManageSieve login ─► OK ─► relay ─► end (logged)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use super::preauth::{Login, Options, PreAuth};
use crate::app::{App, Refusal};
use crate::directory::User;
use crate::frontend::relay::{self, End};
use crate::frontend::{self, Metrics, Protocol, Relayed, Settings};
use crate::metrics::sieve::SIEVE;
use crate::sasl::Mechanism;
use crate::store::bearer::Outcome;
use crate::store::sieve::{Challenged, Client as SieveClient};
use crate::store::{Store, StoreError};
use crate::stream::Stream;

pub use crate::frontend::Listener;

const SHUTDOWN: &[u8] = b"BYE (TRYLATER) \"Server shutting down, reconnect shortly.\"\r\n";
const AUTH_FAILED: &str = "NO \"Authentication failed.\"";

/// Serves one connection to the end.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener,
    app: Arc<App>,
) {
    frontend::session::serve::<ManageSieve>(tcp, peer, listener, app).await;
}

/// The ManageSieve front end.
pub struct ManageSieve;

frontend::core_by_inherent_methods!(PreAuth, Login, |core, _login, response| core
    .login_failed(response));

impl frontend::Backend for SieveClient {
    fn into_relay(self) -> (Stream, Vec<u8>) {
        SieveClient::into_relay(self)
    }
}

impl Protocol for ManageSieve {
    type Core = PreAuth;
    type Context = ();
    type Backend = SieveClient;
    type Pending = Challenged;
    type Extra = ();

    const NAME: &'static str = "managesieve";
    const LOG: &'static str = "ManageSieve ";
    // Small: pre-auth lines are short, and an idle connection keeps this.
    const READ_BUF_BYTES: usize = 1024;
    const STORE_DOWN: &'static str = "Sieve service temporarily unavailable, try again.";
    const TOO_MANY: &'static [u8] =
        b"BYE (TRYLATER) \"Too many connections, try again later.\"\r\n";

    fn span(client: SocketAddr) -> tracing::Span {
        tracing::info_span!("managesieve", client = %client, user = tracing::field::Empty, backend = tracing::field::Empty)
    }

    fn metrics() -> Metrics {
        Metrics {
            connections: &SIEVE.connections,
            logins: &SIEVE.logins,
            sessions: &SIEVE.sessions,
            bytes: &SIEVE.bytes,
        }
    }

    fn settings(app: &App) -> Option<Settings> {
        let cfg = app.config.managesieve.as_ref()?;
        Some(Settings {
            preauth_timeout: cfg.preauth_timeout,
            idle_timeout: cfg.idle_timeout,
            proxy_protocol: cfg.proxy_protocol,
        })
    }

    fn core(app: &App, tls_active: bool) -> Option<PreAuth> {
        let cfg = app.config.managesieve.as_ref()?;
        Some(PreAuth::new(Options {
            starttls_available: app.tls.is_some(),
            tls_active,
            require_tls: cfg.require_tls,
            max_line: cfg.max_line,
            max_literal: cfg.max_literal,
            max_commands: cfg.max_preauth_commands,
            implementation: cfg.implementation.clone(),
            sieve_extensions: cfg.sieve_extensions.clone(),
            oauth: cfg.oauth,
        }))
    }

    fn shutting_down(_core: &PreAuth) -> Vec<u8> {
        SHUTDOWN.to_vec()
    }

    fn context(_core: &PreAuth, _client: SocketAddr) {}

    async fn connect(
        target: &Store,
        _ctx: &(),
        user: &str,
        password: &[u8],
    ) -> Result<SieveClient, StoreError> {
        let creds = target.session_credentials(user, password);
        SieveClient::connect(target, &creds).await
    }

    async fn connect_bearer(
        target: &Store,
        _ctx: &(),
        user: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Outcome<SieveClient, Challenged>, StoreError> {
        SieveClient::connect_bearer(target, user, mechanism, message).await
    }

    fn auth_failed() -> String {
        AUTH_FAILED.into()
    }

    fn unavailable(why: &str) -> String {
        let mut text = b"NO (TRYLATER) ".to_vec();
        crate::store::sieve::wire::string(&mut text, why.as_bytes());
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The store's `NO` line, printable only, else our own words.
    fn store_text(reply: &str) -> String {
        frontend::bearer::store_text(reply, 512, |t| t.starts_with("NO "), AUTH_FAILED)
    }

    async fn prepare(
        _app: &Arc<App>,
        _user: &User,
        _target: &Arc<Store>,
        _backend: &mut SieveClient,
        _login: &Login,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    fn ok_line(_login: &Login, _backend: &SieveClient, _extra: &()) -> Vec<u8> {
        b"OK \"Logged in.\"\r\n".to_vec()
    }

    async fn relay(_app: &Arc<App>, r: Relayed<'_, ()>) -> (End, relay::Totals) {
        frontend::session::forward_and_relay(r, false).await
    }

    fn farewell(app: &App, end: &End) -> Option<&'static [u8]> {
        match end {
            End::Closed => None,
            End::Idle => Some(b"BYE \"Idle for too long.\"\r\n"),
            End::Cancelled if app.cancel.is_cancelled() => Some(SHUTDOWN),
            End::Cancelled => Some(b"BYE (TRYLATER) \"Your mailbox moved; please reconnect.\"\r\n"),
        }
    }

    fn close_backend(_end: &End) -> bool {
        true
    }
}
