//! What every front end (IMAP, POP3, submission, ManageSieve) does the same
//! way, written once: the accept loop, the session driver and the bearer
//! exchange. A protocol brings its sans-I/O pre-auth core ([`Core`]) and its
//! [`Protocol`] hooks (store login, wording, relay); [`session::serve`]
//! runs one connection:
//!
//! ```text
//!  accept_loop ─► [ceiling] ─► PROXY header ─► serve (span: client, user, backend)
//!     ─► [TLS] ─► greeting ─► Core: feed / poll ─► Write │ StartTls │ Close
//!                                                  └► Login ─► App::admit
//!     ─► Protocol::connect (password) │ bearer::login (token, challenge relayed)
//!     ─► Protocol::prepare ─► ok line ─► Protocol::relay ─► farewell ─► end (logged)
//!        refused: failure delay, Core::login_failed │ unavailable: at once
//! ```
//!
//! Each session runs inside a `tracing` span named after its protocol with
//! `client` from the start and `user` and `backend` recorded once the login
//! is through, so every line of the session carries them.

pub mod bearer;
pub mod relay;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::net::TcpListener;

use crate::app::{App, Current, Refusal};
use crate::directory::User;
use crate::frontend::relay::{End, Totals};
use crate::sasl::{Identity, Mechanism, Secret};
use crate::store::bearer::Outcome;
use crate::store::{Store, StoreError};
use crate::stream::Stream;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain, STARTTLS (STLS) offered.
    Plain,
    /// Implicit TLS.
    Tls,
}

impl Listener {
    /// The `listener` label of the connection counters.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Plain => "plain",
            Listener::Tls => "tls",
        }
    }
}

/// What a pre-auth core asks its driver to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<L> {
    /// Send these bytes.
    Write(Vec<u8>),
    /// Start TLS now (the go-ahead was queued before), then call
    /// [`Core::tls_started`]. Plaintext the client sent after the command
    /// has been dropped by the core.
    StartTls,
    /// Admit this login, then answer with [`Core::login_failed`] or relay.
    Login(L),
    /// Close the connection (after writing what came before).
    Close,
    /// The client's answer to a relayed bearer challenge (`None`: it
    /// cancelled or sent something undecodable).
    Answer(Option<Vec<u8>>),
}

/// A login a core hands to its driver.
pub trait LoginRequest {
    /// The login as typed (for a bearer login: the user its message names).
    fn user(&self) -> &str;
    /// The password or bearer message.
    fn secret(&self) -> &Secret;
    /// The mechanism (`LOGIN`, `PLAIN`, `USER`, `OAUTHBEARER`, ...), for logs.
    fn mechanism(&self) -> &'static str;
}

/// A login by SASL (or POP3 USER/PASS): who, with what, and how, for the
/// cores that have no tag to carry (POP3, submission, ManageSieve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// Who, and the password or token.
    pub identity: Identity,
    /// `USER`, `PLAIN`, `LOGIN`, `OAUTHBEARER`, `XOAUTH2`: for logs.
    pub mechanism: &'static str,
}

impl LoginRequest for SaslLogin {
    fn user(&self) -> &str {
        &self.identity.user
    }
    fn secret(&self) -> &Secret {
        &self.identity.secret
    }
    fn mechanism(&self) -> &'static str {
        self.mechanism
    }
}

/// A sans-I/O pre-auth core: bytes in, [`Step`]s out.
pub trait Core: Send + Sync + 'static {
    /// The login it asks for.
    type Login: LoginRequest + Send + Sync + 'static;
    /// The first bytes to send.
    fn greeting(&self) -> Vec<u8>;
    /// Bytes from the client.
    fn feed(&mut self, bytes: &[u8]);
    /// The next step; `None` when more client bytes are needed.
    fn poll(&mut self) -> Option<Step<Self::Login>>;
    /// TLS is up.
    fn tls_started(&mut self);
    /// Whether the session is over.
    fn is_closed(&self) -> bool;
    /// The bytes the client sent after its login (they go to the store).
    fn into_pipelined(self) -> Vec<u8>;
    /// The login was refused with `response` (the protocol's words): the
    /// bytes to send; commands continue (or the core closes).
    fn login_failed(&mut self, login: &Self::Login, response: &str) -> Vec<u8>;
    /// The store challenged a bearer token: the challenge framed for the
    /// client (`+ `, `334 `, a quoted string); its answer comes as
    /// [`Step::Answer`].
    fn relay_challenge(&mut self, challenge: &[u8]) -> Vec<u8>;
}

/// Implements [`Core`] for a pre-auth core by its inherent methods of the
/// same names (`greeting`, `feed`, `poll`, `tls_started`, `is_closed`,
/// `into_pipelined`, `relay_challenge`); `login_failed` is given as a
/// closure-like `|core, login, response| expr`, since each protocol words
/// the call its own way (IMAP needs the tag).
macro_rules! core_by_inherent_methods {
    ($core:ty, $login:ty, |$c:ident, $l:ident, $r:ident| $failed:expr) => {
        impl $crate::frontend::Core for $core {
            type Login = $login;
            fn greeting(&self) -> Vec<u8> {
                <$core>::greeting(self)
            }
            fn feed(&mut self, bytes: &[u8]) {
                <$core>::feed(self, bytes)
            }
            fn poll(&mut self) -> Option<$crate::frontend::Step<$login>> {
                <$core>::poll(self)
            }
            fn tls_started(&mut self) {
                <$core>::tls_started(self)
            }
            fn is_closed(&self) -> bool {
                <$core>::is_closed(self)
            }
            fn into_pipelined(self) -> Vec<u8> {
                <$core>::into_pipelined(self)
            }
            fn login_failed(&mut self, login: &$login, response: &str) -> Vec<u8> {
                let ($c, $l, $r) = (self, login, response);
                $failed
            }
            fn relay_challenge(&mut self, challenge: &[u8]) -> Vec<u8> {
                <$core>::relay_challenge(self, challenge)
            }
        }
    };
}
pub(crate) use core_by_inherent_methods;

/// A store connection a front end can relay once logged in.
pub trait Backend: Send + 'static {
    /// The stream, and the bytes the store sent after its OK.
    fn into_relay(self) -> (Stream, Vec<u8>);
}

/// A bearer login the store challenged, waiting for the client's answer.
pub trait Pending<C>: Send {
    /// Sends the client's answer and reads the store's verdict.
    fn answer(
        self,
        store: &Store,
        answer: Option<&[u8]>,
    ) -> impl Future<Output = Result<C, StoreError>> + Send;
}

/// A front end's counters (names stay per protocol).
pub struct Metrics {
    /// Connections by listener.
    pub connections: &'static IntCounterVec,
    /// Logins by result (`ok`, `auth_failed`, `unavailable`).
    pub logins: &'static IntCounterVec,
    /// Open relayed sessions by backend.
    pub sessions: &'static IntGaugeVec,
    /// Relayed bytes by backend and direction.
    pub bytes: &'static IntCounterVec,
}

/// A front end's settings, from its config table.
pub struct Settings {
    /// Limit for the whole pre-auth phase, TLS handshake included.
    pub preauth_timeout: Duration,
    /// A relayed session idle this long is closed.
    pub idle_timeout: Duration,
    /// Connections start with a PROXY header.
    pub proxy_protocol: bool,
}

/// What a relay hook gets after a login.
pub struct Relayed<'a, X> {
    /// The client's stream.
    pub client: &'a mut Stream,
    /// The store's stream.
    pub backend: &'a mut Stream,
    /// What the client pipelined after its login (for the store first).
    pub pipelined: Vec<u8>,
    /// What the store sent after its OK (for the client first).
    pub leftover: Vec<u8>,
    /// The protocol's own data from [`Protocol::prepare`].
    pub extra: X,
    /// The `[backends.NAME]`.
    pub store: &'a str,
    /// Idle limit and byte counters.
    pub opts: crate::frontend::relay::Options,
    /// Cancelled on a kick or a shutdown.
    pub token: &'a tokio_util::sync::CancellationToken,
}

/// One front end's own parts; the rest is [`session::serve`].
pub trait Protocol: Send + Sync + 'static {
    /// The pre-auth core.
    type Core: Core;
    /// What the store login needs from the pre-auth phase (client address,
    /// its ID or HELO).
    type Context: Send + Sync;
    /// A logged-in store connection.
    type Backend: Backend;
    /// A challenged bearer login at the store.
    type Pending: Pending<Self::Backend>;
    /// What the relay needs beyond the streams (UID maps, UIDL map).
    type Extra: Send + 'static;

    /// The protocol's name in labels (`"imap"`, `"pop3"`, ...).
    const NAME: &'static str;
    /// Prefix of the session's log messages (`"POP3 "`, ...).
    const LOG: &'static str;
    /// Pre-auth read buffer (an idle client keeps it).
    const READ_BUF_BYTES: usize;
    /// What a client is told when the store cannot be reached.
    const STORE_DOWN: &'static str;
    /// What a client past the connection ceiling is told (see
    /// [`connection_ceiling`]).
    const TOO_MANY: &'static [u8];

    /// The session's span: `client` set, `user` and `backend` empty.
    fn span(client: SocketAddr) -> tracing::Span;
    /// The counters.
    fn metrics() -> Metrics;
    /// The settings, `None` when the front end is not configured.
    fn settings(app: &App) -> Option<Settings>;
    /// A core for a new connection.
    fn core(app: &App, tls_active: bool) -> Option<Self::Core>;
    /// Sent to a client waiting before login when the server shuts down.
    fn shutting_down(core: &Self::Core) -> Vec<u8>;
    /// What the store login needs from the core.
    fn context(core: &Self::Core, client: SocketAddr) -> Self::Context;
    /// Logs in to the store with a password (or the master user).
    fn connect(
        target: &Store,
        ctx: &Self::Context,
        user: &str,
        password: &[u8],
    ) -> impl Future<Output = Result<Self::Backend, StoreError>> + Send;
    /// Logs in to the store with the client's bearer message, unchanged.
    fn connect_bearer(
        target: &Store,
        ctx: &Self::Context,
        user: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> impl Future<Output = Result<Outcome<Self::Backend, Self::Pending>, StoreError>> + Send;
    /// The refusal of a bad password.
    fn auth_failed() -> String;
    /// The refusal of a login that cannot be served now.
    fn unavailable(why: &str) -> String;
    /// The store's refusal of a token as the client may see it.
    fn store_text(reply: &str) -> String;
    /// After the store login, before the OK: what the relay needs.
    fn prepare(
        app: &Arc<App>,
        user: &User,
        target: &Arc<Store>,
        backend: &mut Self::Backend,
        login: &<Self::Core as Core>::Login,
    ) -> impl Future<Output = Result<Self::Extra, Refusal>> + Send;
    /// A login went through (lazy migration hooks).
    fn logged_in(_app: &App, _user: &User, _login: &<Self::Core as Core>::Login) {}
    /// The success reply.
    fn ok_line(
        login: &<Self::Core as Core>::Login,
        backend: &Self::Backend,
        extra: &Self::Extra,
    ) -> Vec<u8>;
    /// Fields of the session start line beyond the common ones, recorded
    /// on the span.
    fn describe(_extra: &Self::Extra, _span: &tracing::Span) {}
    /// Relays until the end (early bytes forwarded first).
    fn relay(
        app: &Arc<App>,
        relayed: Relayed<'_, Self::Extra>,
    ) -> impl Future<Output = (End, Totals)> + Send;
    /// What the client is told when the relay ends this way.
    fn farewell(app: &App, end: &End) -> Option<&'static [u8]>;
    /// Whether the store leg is shut down (rather than dropped) at the end.
    fn close_backend(end: &End) -> bool;
}

/// Counts a connection as open while alive.
pub struct Open(Arc<AtomicUsize>);

impl Open {
    /// Counts one more connection against `max`, or `None` at the ceiling.
    pub fn admit(open: &Arc<AtomicUsize>, max: usize) -> Option<Open> {
        if open.fetch_add(1, Ordering::Relaxed) >= max {
            open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Open(Arc::clone(open)))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open-file limit of this process (soft), if it can be read.
pub fn fd_limit() -> Option<u64> {
    // SAFETY: getrlimit only writes the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0).then_some(lim.rlim_cur)
    }
}

/// How many client connections fit, IMAP, POP3, ManageSieve, submission and
/// inbound SMTP together (one count): each holds two sockets (client and
/// store), with room left for LDAP, the admin API and accepting.
pub fn connection_ceiling() -> usize {
    match fd_limit() {
        Some(n) if n < u64::MAX / 2 => (n.saturating_sub(128) / 2).max(16) as usize,
        _ => usize::MAX,
    }
}

/// Accepts connections until cancelled; sessions run on `tracker`, so a
/// shutdown waits for their goodbye. `open` counts the open sessions of
/// every front end: past [`connection_ceiling`] a client is told so
/// ([`Protocol::TOO_MANY`]) instead of being left unanswered in the backlog.
pub async fn accept_loop<P: Protocol>(
    listener: TcpListener,
    kind: Listener,
    current: Arc<Current>,
    open: Arc<AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    let max = connection_ceiling();
    // The token is the same in every generation.
    let cancel = current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .cancel
        .clone();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Some(guard) = Open::admit(&open, max) else {
                    // Best effort, never blocking the accept loop.
                    let _ = tcp.try_write(P::TOO_MANY);
                    tracing::warn!(client = %peer, ceiling = max, "{}connection refused: at the open-file ceiling", P::LOG);
                    continue;
                };
                let app = Arc::clone(&current.read().unwrap_or_else(|p| p.into_inner()));
                tracker.spawn(async move {
                    if let Some(settings) = P::settings(&app) {
                        // From here on the client is who the PROXY header names.
                        if let Some((tcp, client)) = crate::proxy_protocol::client_of(
                            tcp,
                            peer,
                            settings.proxy_protocol,
                            &app.config.trusted_proxies,
                            settings.preauth_timeout,
                            P::NAME,
                        )
                        .await
                        {
                            session::serve::<P>(tcp, client, kind, app).await;
                        }
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say so
                // once in a while rather than ten times a second.
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "{}accept failed; backing off", P::LOG);
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
