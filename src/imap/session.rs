//! The IMAP front end's own parts of a session ([`Imap`] for the shared
//! driver in [`crate::frontend`]): the store login with the client's ID, the
//! UID maps of a user mailshift moved, the tagged OK with the store's
//! capabilities, and the relay (translated, spliced or copied).
//!
//! ```text
//!  accept ─► [TLS] ─► PreAuth (greeting, commands, STARTTLS) ─► Login
//!        ─► lookup ─► [hold wait] ─► [bind check] ─► route ─► backend login
//!        ─► [UID maps] ─► tagged OK with the store's capabilities ─► relay ─► end (logged)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use super::preauth::{Login, Options, PreAuth};
use super::translate::{self, Translator};
use crate::app::{App, Refusal};
use crate::continuity::UserMap;
use crate::directory::User;
use crate::frontend::relay::{self, End};
use crate::frontend::session::forward_early;
use crate::frontend::{self, LoginRequest, Metrics, Protocol, Relayed, Settings};
use crate::metrics::METRICS;
use crate::sasl::{Mechanism, Secret};
use crate::store::bearer::Outcome;
use crate::store::imap::client::Challenged;
use crate::store::imap::{Client as StoreClient, ClientInfo};
use crate::store::{Store, StoreError};
use crate::stream::Stream;

pub use crate::frontend::Listener;

/// Serves one connection to the end.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener,
    app: Arc<App>,
) {
    frontend::session::serve::<Imap>(tcp, peer, listener, app).await;
}

const SHUTDOWN: &[u8] = b"* BYE Server shutting down, reconnect shortly.\r\n";
const STORE_DOWN: &str = "Mailbox temporarily unavailable, try again.";

/// The IMAP front end.
pub struct Imap;

impl LoginRequest for Login {
    fn user(&self) -> &str {
        &self.user
    }
    fn secret(&self) -> &Secret {
        &self.secret
    }
    fn mechanism(&self) -> &'static str {
        self.mechanism
    }
}

frontend::core_by_inherent_methods!(PreAuth, Login, |core, login, response| core
    .login_failed(&login.tag, response));

impl frontend::Backend for StoreClient {
    fn into_relay(self) -> (Stream, Vec<u8>) {
        StoreClient::into_relay(self)
    }
}

impl Protocol for Imap {
    type Core = PreAuth;
    type Context = ClientInfo;
    type Backend = StoreClient;
    type Pending = Challenged;
    /// The user's UID maps: the session is translated.
    type Extra = Option<Arc<UserMap>>;

    const NAME: &'static str = "imap";
    const LOG: &'static str = "";
    const READ_BUF_BYTES: usize = 4096;
    const STORE_DOWN: &'static str = STORE_DOWN;
    const TOO_MANY: &'static [u8] = b"* BYE Too many connections, try again later.\r\n";

    fn span(client: SocketAddr) -> tracing::Span {
        tracing::info_span!("imap", client = %client, user = tracing::field::Empty, backend = tracing::field::Empty, translated = tracing::field::Empty)
    }

    fn metrics() -> Metrics {
        Metrics {
            connections: &METRICS.imap_connections,
            logins: &METRICS.imap_logins,
            sessions: &METRICS.imap_sessions,
            bytes: &METRICS.imap_bytes,
        }
    }

    fn settings(app: &App) -> Option<Settings> {
        let cfg = &app.config.imap;
        Some(Settings {
            preauth_timeout: cfg.preauth_timeout,
            idle_timeout: cfg.idle_timeout,
            proxy_protocol: cfg.proxy_protocol,
        })
    }

    fn core(app: &App, tls_active: bool) -> Option<PreAuth> {
        let cfg = &app.config.imap;
        Some(PreAuth::new(Options {
            starttls_available: app.tls.is_some(),
            tls_active,
            require_tls: cfg.require_tls,
            max_line: cfg.max_line,
            max_literal: cfg.max_literal,
            max_commands: cfg.max_preauth_commands,
            greeting: cfg.greeting.clone(),
            oauth: cfg.oauth,
            ..Options::default()
        }))
    }

    fn shutting_down(_core: &PreAuth) -> Vec<u8> {
        SHUTDOWN.to_vec()
    }

    fn context(core: &PreAuth, client: SocketAddr) -> ClientInfo {
        ClientInfo {
            peer: client,
            id: core.client_id().to_vec(),
        }
    }

    async fn connect(
        target: &Store,
        ctx: &ClientInfo,
        user: &str,
        password: &[u8],
    ) -> Result<StoreClient, StoreError> {
        let creds = target.session_credentials(user, password);
        StoreClient::connect(target, &creds, Some(ctx)).await
    }

    async fn connect_bearer(
        target: &Store,
        ctx: &ClientInfo,
        user: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Outcome<StoreClient, Challenged>, StoreError> {
        StoreClient::connect_bearer(target, user, mechanism, message, Some(ctx)).await
    }

    fn auth_failed() -> String {
        "NO [AUTHENTICATIONFAILED] Authentication failed.".into()
    }

    fn unavailable(why: &str) -> String {
        format!("NO [UNAVAILABLE] {why}")
    }

    /// `NO`/`BAD` and printable text only, else our own words.
    fn store_text(reply: &str) -> String {
        frontend::bearer::store_text(
            reply,
            512,
            |t| {
                let upper = t.to_ascii_uppercase();
                upper.starts_with("NO ") || upper.starts_with("BAD ")
            },
            &Self::auth_failed(),
        )
    }

    /// The user's UID maps on this store, read with the session's own login
    /// (none for a user mailshift did not move: no round trip).
    async fn prepare(
        app: &Arc<App>,
        user: &User,
        target: &Arc<Store>,
        backend: &mut StoreClient,
        _login: &Login,
    ) -> Result<Option<Arc<UserMap>>, Refusal> {
        match app.maps.for_session(user, target, backend).await {
            Ok(map) => Ok(map),
            Err(e) => {
                // Relaying plainly would show the store's UIDVALIDITY and make
                // the client download everything again: refuse, it retries.
                tracing::warn!(user = %user.login, backend = target.name(), error = %e, "UID maps unreadable");
                Err(Refusal::Unavailable(STORE_DOWN))
            }
        }
    }

    fn logged_in(app: &App, user: &User, login: &Login) {
        match login.password() {
            Some(password) => app.logged_in(&user.login, password),
            None => app.logged_in_with_token(&user.login),
        }
    }

    fn ok_line(login: &Login, backend: &StoreClient, map: &Option<Arc<UserMap>>) -> Vec<u8> {
        let caps = match map {
            Some(_) => translate::filter_capabilities(&backend.capabilities()),
            None => backend.capabilities(),
        };
        format!("{} OK [CAPABILITY {caps}] Logged in\r\n", login.tag).into_bytes()
    }

    fn describe(map: &Option<Arc<UserMap>>, span: &tracing::Span) {
        span.record("translated", map.is_some());
    }

    async fn relay(app: &Arc<App>, r: Relayed<'_, Option<Arc<UserMap>>>) -> (End, relay::Totals) {
        let Some(map) = r.extra else {
            let splice = app.config.imap.splice;
            return frontend::session::forward_and_relay(r, splice).await;
        };
        let mut t = Translator::new(map);
        t.hide_folder(crate::continuity::stored::HIDDEN_FOLDER.as_bytes());
        // Handoff forwards, translated like the rest.
        let (mut up, mut down) = (Vec::new(), Vec::new());
        t.from_client(&r.pipelined, &mut up);
        if t.from_store(&r.leftover, &mut down).is_err() {
            down.clear();
        }
        t.take_replies(&mut down);
        if !forward_early(r.client, r.backend, &up, &down).await {
            return (End::Closed, relay::Totals::default());
        }
        relay::relay_with(r.client, r.backend, Some(&mut t), r.opts, r.token).await
    }

    fn farewell(app: &App, end: &End) -> Option<&'static [u8]> {
        match end {
            End::Closed => None,
            End::Idle => Some(b"* BYE Idle for too long.\r\n"),
            End::Cancelled if app.cancel.is_cancelled() => Some(SHUTDOWN),
            End::Cancelled => {
                METRICS.imap_kicks.with_label_values(&["moved"]).inc();
                Some(b"* BYE Your mailbox moved; please reconnect.\r\n")
            }
        }
    }

    fn close_backend(_end: &End) -> bool {
        false
    }
}
