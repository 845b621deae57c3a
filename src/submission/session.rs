//! The submission front end's own parts of a session ([`Submission`] for
//! the shared driver in [`crate::frontend`]): the store's submission service
//! opened as the user (XCLIENT with the client's address and HELO), `535` /
//! `454` wording, and the relay that never cuts a message short silently.
//!
//! ```text
//!  accept ─► [TLS] ─► 220 ─► PreAuth (EHLO, STARTTLS, AUTH) ─► App::admit
//!        ─► Store::submission (EHLO, STARTTLS, XCLIENT, AUTH) ─► 235 ─► relay ─► end (logged)
//!           refused: 535 5.7.8 after the failure delay │ down or held: 454 4.7.0
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use super::metrics::SUBMISSION;
use super::preauth::{Login, Options, PreAuth};
use crate::app::{App, Refusal};
use crate::config::BackendLogin;
use crate::directory::User;
use crate::frontend::relay::{self, End};
use crate::frontend::{self, Metrics, Protocol, Relayed, Settings};
use crate::sasl::Mechanism;
use crate::store::bearer::Outcome;
use crate::store::smtp::{Auth, Challenged, Conn, Origin, Plan};
use crate::store::{Error as StoreFailure, Store, StoreError};
use crate::stream::Stream;

pub use crate::frontend::Listener;

/// What a refused AUTH tells the client.
const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid";

/// Serves one connection to the end.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener,
    app: Arc<App>,
) {
    frontend::session::serve::<Submission>(tcp, peer, listener, app).await;
}

/// The submission front end.
pub struct Submission;

/// What opening the store's submission service needs.
pub struct Context {
    origin: Origin,
    hostname: String,
}

frontend::core_by_inherent_methods!(PreAuth, Login, |core, _login, response| core
    .auth_failed(response));

impl frontend::Backend for Conn {
    fn into_relay(self) -> (Stream, Vec<u8>) {
        Conn::into_relay(self)
    }
}

impl Protocol for Submission {
    type Core = PreAuth;
    type Context = Context;
    type Backend = Conn;
    type Pending = Challenged;
    type Extra = ();

    const NAME: &'static str = "submission";
    const LOG: &'static str = "submission ";
    const READ_BUF_BYTES: usize = 4096;
    const STORE_DOWN: &'static str = "Mail service temporarily unavailable, try again.";
    const TOO_MANY: &'static [u8] = b"421 4.7.0 Too many connections, try again later\r\n";

    fn span(client: SocketAddr) -> tracing::Span {
        tracing::info_span!("submission", client = %client, user = tracing::field::Empty, backend = tracing::field::Empty)
    }

    fn metrics() -> Metrics {
        Metrics {
            connections: &SUBMISSION.connections,
            logins: &SUBMISSION.logins,
            sessions: &SUBMISSION.sessions,
            bytes: &SUBMISSION.bytes,
        }
    }

    fn settings(app: &App) -> Option<Settings> {
        let cfg = app.config.submission.as_ref()?;
        Some(Settings {
            preauth_timeout: cfg.preauth_timeout,
            idle_timeout: cfg.idle_timeout,
            proxy_protocol: cfg.proxy_protocol,
        })
    }

    fn core(app: &App, tls_active: bool) -> Option<PreAuth> {
        let cfg = app.config.submission.as_ref()?;
        Some(PreAuth::new(Options {
            hostname: cfg.hostname.clone(),
            starttls_available: app.tls.is_some(),
            tls_active,
            require_tls: cfg.require_tls,
            max_line: cfg.max_line,
            max_commands: cfg.max_preauth_commands,
            oauth: cfg.oauth,
            ..Options::default()
        }))
    }

    fn shutting_down(core: &PreAuth) -> Vec<u8> {
        format!(
            "421 4.3.2 {} Service shutting down, try again later\r\n",
            core.hostname()
        )
        .into_bytes()
    }

    fn context(core: &PreAuth, client: SocketAddr) -> Context {
        Context {
            origin: Origin {
                peer: client,
                helo: core.helo().unwrap_or("").to_string(),
            },
            hostname: core.hostname().to_string(),
        }
    }

    async fn connect(
        target: &Store,
        ctx: &Context,
        user: &str,
        password: &[u8],
    ) -> Result<Conn, StoreError> {
        let auth = match (&target.cfg.login, &target.cfg.master) {
            (BackendLogin::Master, Some(m)) => Auth::Master {
                user: user.to_string(),
                master: m.user.clone(),
                password: m.password.clone().into_bytes(),
            },
            _ => Auth::User {
                user: user.to_string(),
                password: password.to_vec(),
            },
        };
        let timeout = target.cfg.connect_timeout;
        target
            .submission(&ctx.hostname, ctx.origin.clone(), auth, timeout)
            .await
    }

    async fn connect_bearer(
        target: &Store,
        ctx: &Context,
        user: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Outcome<Conn, Challenged>, StoreError> {
        let Some(ep) = target.cfg.submission.clone() else {
            return Err(StoreError {
                store: target.name().to_string(),
                error: StoreFailure::Config("no submission endpoint configured".into()),
            });
        };
        let plan = Plan {
            lmtp: false,
            hostname: ctx.hostname.clone(),
            starttls: false,
            origin: Some(ctx.origin.clone()),
            auth: Some(Auth::Bearer {
                user: user.to_string(),
                mechanism,
                message: message.to_vec(),
            }),
        };
        Conn::open_step(target, &ep, plan, target.cfg.connect_timeout).await
    }

    fn auth_failed() -> String {
        AUTH_FAILED.into()
    }

    fn unavailable(why: &str) -> String {
        format!("454 4.7.0 {why}")
    }

    /// A printable 4xx/5xx line, else our own words.
    fn store_text(reply: &str) -> String {
        frontend::bearer::store_text(
            reply,
            512,
            |t| t.starts_with('4') || t.starts_with('5'),
            AUTH_FAILED,
        )
    }

    async fn prepare(
        _app: &Arc<App>,
        _user: &User,
        _target: &Arc<Store>,
        _backend: &mut Conn,
        _login: &Login,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    fn ok_line(_login: &Login, _backend: &Conn, _extra: &()) -> Vec<u8> {
        b"235 2.7.0 Authentication successful\r\n".to_vec()
    }

    async fn relay(_app: &Arc<App>, r: Relayed<'_, ()>) -> (End, relay::Totals) {
        frontend::session::forward_and_relay(r, false).await
    }

    fn farewell(_app: &App, _end: &End) -> Option<&'static [u8]> {
        None
    }

    /// Not at a message boundary: the store discards a message cut short,
    /// so the client's own retry is the only copy.
    fn close_backend(end: &End) -> bool {
        !matches!(end, End::Closed)
    }
}
