//! The POP3 front end's own parts of a session ([`Pop3`] for the shared
//! driver in [`crate::frontend`]): the store's POP3 login, the old UIDLs of a
//! user mailshift moved, `-ERR [AUTH]` / `-ERR [SYS/TEMP]` (RFC 3206), and
//! the relay (UIDL rewritten for moved users).
//!
//! ```text
//!  accept ─► [TLS] ─► PreAuth (greeting, CAPA, STLS, USER/PASS, AUTH) ─► Login
//!        ─► App::admit (lookup, hold wait, password check, route)
//!        ─► store POP3 login ─► [UIDL map] ─► +OK ─► relay (UIDL rewritten for moved users)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use super::preauth::{Login, Options, PreAuth};
use super::uidl::{Rewriter, UidlMap};
use crate::app::{App, Refusal};
use crate::continuity::map::{FolderMap, Snapshot};
use crate::directory::User;
use crate::frontend::relay::{self, End};
use crate::frontend::session::forward_early;
use crate::frontend::{self, Metrics, Protocol, Relayed, Settings};
use crate::metrics::METRICS;
use crate::sasl::{Mechanism, Secret};
use crate::store::bearer::Outcome;
use crate::store::pop3::{Challenged, Client as StoreClient};
use crate::store::{Store, StoreError};
use crate::stream::Stream;

pub use crate::frontend::Listener;

const SHUTDOWN: &[u8] = b"-ERR [SYS/TEMP] Server shutting down, reconnect shortly.\r\n";

/// Serves one connection to the end.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener,
    app: Arc<App>,
) {
    frontend::session::serve::<Pop3>(tcp, peer, listener, app).await;
}

/// The POP3 front end.
pub struct Pop3;

frontend::core_by_inherent_methods!(PreAuth, Login, |core, _login, response| core
    .login_failed(response));

impl frontend::Backend for StoreClient {
    fn into_relay(self) -> (Stream, Vec<u8>) {
        StoreClient::into_relay(self)
    }
}

impl Protocol for Pop3 {
    type Core = PreAuth;
    type Context = SocketAddr;
    type Backend = StoreClient;
    type Pending = Challenged;
    /// Old UIDLs for a user mailshift moved here.
    type Extra = Option<UidlMap>;

    const NAME: &'static str = "pop3";
    const LOG: &'static str = "POP3 ";
    const READ_BUF_BYTES: usize = 2048;
    const STORE_DOWN: &'static str = "Mailbox temporarily unavailable, try again.";
    const TOO_MANY: &'static [u8] = b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n";

    fn span(client: SocketAddr) -> tracing::Span {
        tracing::info_span!("pop3", client = %client, user = tracing::field::Empty, backend = tracing::field::Empty, uidls_kept = tracing::field::Empty)
    }

    fn metrics() -> Metrics {
        Metrics {
            connections: &METRICS.pop3_connections,
            logins: &METRICS.pop3_logins,
            sessions: &METRICS.pop3_sessions,
            bytes: &METRICS.pop3_bytes,
        }
    }

    fn settings(app: &App) -> Option<Settings> {
        let cfg = app.config.pop3.as_ref()?;
        Some(Settings {
            preauth_timeout: cfg.preauth_timeout,
            idle_timeout: cfg.idle_timeout,
            proxy_protocol: cfg.proxy_protocol,
        })
    }

    fn core(app: &App, tls_active: bool) -> Option<PreAuth> {
        let cfg = app.config.pop3.as_ref()?;
        Some(PreAuth::new(Options {
            tls_available: app.tls.is_some(),
            tls_active,
            require_tls: cfg.require_tls,
            max_line: cfg.max_line,
            max_commands: cfg.max_preauth_commands,
            greeting: cfg.greeting.clone(),
            oauth: cfg.oauth,
        }))
    }

    fn shutting_down(_core: &PreAuth) -> Vec<u8> {
        SHUTDOWN.to_vec()
    }

    fn context(_core: &PreAuth, client: SocketAddr) -> SocketAddr {
        client
    }

    async fn connect(
        target: &Store,
        peer: &SocketAddr,
        user: &str,
        password: &[u8],
    ) -> Result<StoreClient, StoreError> {
        let creds = target.session_credentials(user, password);
        StoreClient::connect(target, &creds, Some(*peer)).await
    }

    async fn connect_bearer(
        target: &Store,
        peer: &SocketAddr,
        user: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Outcome<StoreClient, Challenged>, StoreError> {
        StoreClient::connect_bearer(target, user, mechanism, message, Some(*peer)).await
    }

    fn auth_failed() -> String {
        "[AUTH] Authentication failed.".into()
    }

    fn unavailable(why: &str) -> String {
        format!("[SYS/TEMP] {why}")
    }

    /// The store's `-ERR` text (after `-ERR `), printable only.
    fn store_text(reply: &str) -> String {
        frontend::bearer::store_text(reply, 400, |_| true, &Self::auth_failed())
    }

    /// Before the +OK: a client's first UIDL must see the old UIDLs.
    async fn prepare(
        app: &Arc<App>,
        user: &User,
        target: &Arc<Store>,
        _backend: &mut StoreClient,
        login: &Login,
    ) -> Result<Option<UidlMap>, Refusal> {
        Ok(uidl_map(app, user, target, &login.identity).await)
    }

    fn logged_in(app: &App, user: &User, login: &Login) {
        if let (Some(s), Secret::Password(pw)) = (&app.scheduler, &login.identity.secret) {
            s.on_login(&user.login, pw);
        }
    }

    fn ok_line(_login: &Login, _backend: &StoreClient, _map: &Option<UidlMap>) -> Vec<u8> {
        b"+OK Logged in.\r\n".to_vec()
    }

    fn describe(map: &Option<UidlMap>, span: &tracing::Span) {
        span.record("uidls_kept", map.as_ref().map_or(0, UidlMap::len));
    }

    async fn relay(app: &Arc<App>, r: Relayed<'_, Option<UidlMap>>) -> (End, relay::Totals) {
        let Some(map) = r.extra else {
            let splice = app.config.pop3.as_ref().is_some_and(|p| p.splice);
            return frontend::session::forward_and_relay(r, splice).await;
        };
        let mut rewriter = Rewriter::new(map);
        // Handoff forwards: pipelined commands go to the store (and are
        // tracked), the store's early bytes are rewritten to the client.
        rewriter.from_client(&r.pipelined);
        let mut early = Vec::new();
        rewriter.from_store(&r.leftover, &mut early);
        if !forward_early(r.client, r.backend, &r.pipelined, &early).await {
            return (End::Closed, relay::Totals::default());
        }
        relay::relay_with(r.client, r.backend, Some(&mut rewriter), r.opts, r.token).await
    }

    fn farewell(app: &App, end: &End) -> Option<&'static [u8]> {
        match end {
            End::Closed => None,
            End::Idle => Some(b"-ERR Idle for too long.\r\n"),
            End::Cancelled if app.cancel.is_cancelled() => Some(SHUTDOWN),
            End::Cancelled => Some(b"-ERR [SYS/TEMP] Your mailbox moved; please reconnect.\r\n"),
        }
    }

    fn close_backend(_end: &End) -> bool {
        true
    }
}

/// The UIDL map of a user mailshift moved to `target`: INBOX's old UID → new
/// UID with both UIDVALIDITYs, formatted with each store's
/// `pop3_uidl_format`. `None` for everyone else (the plain relay).
///
/// The source is the UID maps stored in the mailbox, read by the shared
/// loader ([`App::maps`]) over an IMAP login to the store with the user's
/// own credentials, so every instance answers the same UIDLs; only users
/// whose directory entry names maps (`User.uid_map`) pay for it. Failing
/// that, this instance's migration state (`[migration] state_dir`).
async fn uidl_map(
    shared: &Arc<App>,
    user: &User,
    target: &Store,
    identity: &crate::sasl::Identity,
) -> Option<UidlMap> {
    if shared.maps.translated(user, target) {
        if let Some(map) = stored_uidl_map(shared, user, target, identity).await {
            return Some(map);
        }
    }
    state_uidl_map(shared, &user.login, target).await
}

/// The INBOX map from the mailbox's stored UID maps (see [`uidl_map`]).
async fn stored_uidl_map(
    shared: &Arc<App>,
    user: &User,
    target: &Store,
    identity: &crate::sasl::Identity,
) -> Option<UidlMap> {
    use crate::store::imap::Client as ImapClient;
    let login = &identity.user;
    let imap = match &identity.secret {
        Secret::Password(pw) => {
            let creds = target.session_credentials(login, pw);
            ImapClient::connect(target, &creds, None).await
        }
        Secret::Bearer { mechanism, message } => {
            match ImapClient::connect_bearer(target, login, *mechanism, message, None).await {
                Ok(crate::store::bearer::Outcome::LoggedIn(c)) => Ok(c),
                // The token was taken over POP3 a moment ago; a challenge
                // now leaves the store's own UIDLs.
                Ok(crate::store::bearer::Outcome::Challenged { .. }) => return None,
                Err(e) => Err(e),
            }
        }
    };
    let mut imap = match imap {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(user = %user.login, backend = target.name(), error = %e, "no IMAP login to read the UID maps; the store's own UIDLs are shown");
            return None;
        }
    };
    let loaded = shared.maps.for_session(user, target, &mut imap).await;
    imap.logout().await;
    let folder = match loaded {
        Ok(Some(maps)) => maps.folder("INBOX").cloned()?,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(user = %user.login, backend = target.name(), error = %e, "UID maps unreadable; the store's own UIDLs are shown");
            return None;
        }
    };
    // The old store's format: the migration's source where this instance
    // has one, else the target's (the stores of one fleet agree).
    let from = shared
        .config
        .migration
        .as_ref()
        .and_then(|m| shared.config.backend_named(&m.from))
        .map_or_else(
            || target.cfg.pop3_uidl_format.clone(),
            |b| b.pop3_uidl_format.clone(),
        );
    Some(UidlMap::from_folder_map(
        &folder,
        &from,
        &target.cfg.pop3_uidl_format,
    ))
}

/// The INBOX map from this instance's migration state.
async fn state_uidl_map(shared: &Arc<App>, user: &str, target: &Store) -> Option<UidlMap> {
    let m = shared.config.migration.as_ref()?;
    if target.name() != m.to {
        return None;
    }
    let from = shared
        .config
        .backend_named(&m.from)?
        .pop3_uidl_format
        .clone();
    let to = target.cfg.pop3_uidl_format.clone();
    let dir = m.state_dir.clone();
    let login = user.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let states = crate::migrate::state::StateStore::open(&dir)?;
        let st = states.load(&login, "INBOX").and_then(|st| {
            let uidls = states.load_pop3_uidls(&login, "INBOX")?;
            Ok((st, uidls))
        });
        states.close(&login);
        st
    })
    .await;
    let (st, read) = match loaded {
        Ok(Ok((st, read))) if !st.map.is_empty() => (st, read),
        Ok(Ok(_)) | Err(_) => return None,
        Ok(Err(e)) => {
            tracing::warn!(user = %user, backend = target.name(), error = %e, "UIDL map unreadable; the store's own UIDLs are shown");
            return None;
        }
    };
    // The engine's map as the continuity map it becomes at cutover.
    let snapshot = |uidvalidity, uidnext| Snapshot {
        uidvalidity,
        uidnext,
        highestmodseq: 0,
    };
    let last_old = st.map.keys().next_back().copied().unwrap_or(0);
    let last_new = st.map.values().max().copied().unwrap_or(0);
    let folder = FolderMap::new(
        snapshot(
            st.src_validity,
            st.src_uidnext.max(last_old.saturating_add(1)),
        ),
        snapshot(st.dst_validity, last_new.saturating_add(1)),
        st.map.iter().map(|(&o, &n)| (o, n)),
    );
    match folder {
        Ok(mut folder) => {
            // UIDLs the passes read over the old store's POP3, by old UID.
            folder.uidls = read.of_copies(&st, false);
            Some(UidlMap::from_folder_map(&folder, &from, &to))
        }
        Err(e) => {
            tracing::warn!(user = %user, backend = target.name(), error = %e, "UID map unusable; the store's own UIDLs are shown");
            None
        }
    }
}
