//! The async driver of one client connection, the same for every front end:
//! runs the protocol's [`Core`] over a socket, admits the login it asks for
//! ([`App::admit`]: lookup, hold wait, password check, route), logs in to the
//! store by the [`Protocol`]'s hooks, then relays. Never panics on client
//! bytes; every failure is answered or the connection closed.
//!
//! ```text
//!  serve ─► [TLS] ─► preauth ─┬─► Write / StartTls / Close
//!                             └─► Login ─► login ─► Handoff ─► relay_session
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::{bearer, Backend, Core, LoginRequest, Protocol, Relayed, Step};
use crate::app::{App, Refusal};
use crate::directory::User;
use crate::frontend::relay::{self, End};
use crate::metrics::METRICS;
use crate::sasl::Secret;
use crate::store::{Error as StoreFailure, Store, StoreError};
use crate::stream::Stream;

/// Why a login did not get through.
pub(super) enum Failed {
    /// Refused before or without the store's own words.
    Refused(Refusal),
    /// The store refused the token; its words, for the client.
    Store(String),
    /// The client went away (or the server is shutting down) mid-exchange.
    Gone,
}

/// Writes and flushes; `false` when the peer is gone.
pub async fn write(s: &mut Stream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
}

/// Serves one connection to the end, inside the session's span.
pub async fn serve<P: Protocol>(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: super::Listener,
    app: Arc<App>,
) {
    let span = P::span(peer);
    run::<P>(tcp, peer, listener, app, span.clone())
        .instrument(span)
        .await
}

async fn run<P: Protocol>(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: super::Listener,
    app: Arc<App>,
    span: tracing::Span,
) {
    let Some(settings) = P::settings(&app) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    P::metrics()
        .connections
        .with_label_values(&[listener.label()])
        .inc();
    let deadline = tokio::time::Instant::now() + settings.preauth_timeout;
    let stream = match listener {
        super::Listener::Plain => Stream::Plain(tcp),
        super::Listener::Tls => {
            let Some(tls) = &app.tls else { return };
            match tokio::time::timeout_at(deadline, tls.acceptor().accept(tcp)).await {
                Ok(Ok(s)) => Stream::ClientTls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "{}TLS handshake failed", P::LOG);
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let Some(core) = P::core(&app, stream.is_tls()) else {
        return;
    };
    let conn = Conn {
        stream,
        core,
        buf: vec![0u8; P::READ_BUF_BYTES],
    };
    // Boxed: the pre-auth phase (store login included) is freed before the
    // relay, so an idle relayed session's task holds only what relaying needs.
    // Shutdown is handled inside: a client waiting for its next command is
    // told; a login under way ends (the relay then says goodbye at once).
    let phase = Box::pin(preauth::<P>(conn, peer, &app, &span));
    match tokio::time::timeout_at(deadline, phase).await {
        Ok(Some(handoff)) => relay_session::<P>(handoff, peer, settings.idle_timeout, &app).await,
        Ok(None) => {}
        Err(_) => tracing::debug!("{}pre-auth timeout", P::LOG),
    }
}

/// The client's stream and its pre-auth core.
pub(super) struct Conn<C> {
    pub(super) stream: Stream,
    pub(super) core: C,
    buf: Vec<u8>,
}

/// What one read came to.
pub(super) enum Read {
    /// Bytes were fed to the core.
    Fed,
    /// The client left.
    Eof,
    /// The server is shutting down.
    Cancelled,
}

impl<C: Core> Conn<C> {
    pub(super) async fn write(&mut self, bytes: &[u8]) -> bool {
        write(&mut self.stream, bytes).await
    }

    /// Reads once into the core, unless the server shuts down first.
    pub(super) async fn read(&mut self, app: &App) -> Read {
        let read = tokio::select! {
            r = self.stream.read(&mut self.buf) => r,
            _ = app.cancel.cancelled() => return Read::Cancelled,
        };
        match read {
            Ok(0) | Err(_) => Read::Eof,
            Ok(n) => {
                self.core.feed(&self.buf[..n]);
                Read::Fed
            }
        }
    }
}

/// Everything needed to relay after a successful login.
struct Handoff<P: Protocol> {
    client: Stream,
    backend: P::Backend,
    target: Arc<Store>,
    user: User,
    extra: P::Extra,
    pipelined: Vec<u8>,
    started: Instant,
}

/// Runs the pre-auth phase; `Some` when a login went through.
async fn preauth<P: Protocol>(
    mut conn: Conn<P::Core>,
    peer: SocketAddr,
    app: &Arc<App>,
    span: &tracing::Span,
) -> Option<Handoff<P>> {
    let started = Instant::now();
    if !conn.write(&conn.core.greeting()).await {
        return None;
    }
    loop {
        while let Some(step) = conn.core.poll() {
            match step {
                Step::Write(bytes) => {
                    if !conn.write(&bytes).await {
                        return None;
                    }
                }
                Step::Close => {
                    let _ = conn.stream.shutdown().await;
                    return None;
                }
                Step::StartTls => {
                    let Stream::Plain(tcp) = conn.stream else {
                        return None;
                    };
                    let tls = app.tls.as_ref()?;
                    match tls.acceptor().accept(tcp).await {
                        Ok(s) => conn.stream = Stream::ClientTls(Box::new(s)),
                        Err(e) => {
                            tracing::debug!(error = %e, "{}STARTTLS handshake failed", P::LOG);
                            return None;
                        }
                    }
                    conn.core.tls_started();
                }
                // Only asked for inside a bearer login, which reads it there.
                Step::Answer(_) => {}
                Step::Login(login) => match login_any::<P>(&mut conn, &login, peer, app).await {
                    Ok((user, target, backend, extra)) => {
                        P::metrics().logins.with_label_values(&["ok"]).inc();
                        app.throttle.succeeded(login.user());
                        P::logged_in(app, &user, &login);
                        // Display, not Debug: `user=alice`, as the events had.
                        span.record("user", tracing::field::display(&user.login));
                        span.record("backend", tracing::field::display(target.name()));
                        P::describe(&extra, span);
                        if !conn.write(&P::ok_line(&login, &backend, &extra)).await {
                            return None;
                        }
                        return Some(Handoff {
                            client: conn.stream,
                            backend,
                            target,
                            user,
                            extra,
                            pipelined: conn.core.into_pipelined(),
                            started,
                        });
                    }
                    Err(e @ (Failed::Refused(Refusal::AuthFailed) | Failed::Store(_))) => {
                        P::metrics()
                            .logins
                            .with_label_values(&["auth_failed"])
                            .inc();
                        let delay = app.throttle.failed(peer.ip(), login.user());
                        tracing::info!(
                            user = %login.user(), mechanism = login.mechanism(),
                            delay_ms = delay.as_millis() as u64, "{}login failed", P::LOG
                        );
                        tokio::time::sleep(delay).await;
                        let text = match e {
                            // A token's refusal is the store's to word.
                            Failed::Store(text) => text,
                            _ => P::auth_failed(),
                        };
                        let out = conn.core.login_failed(&login, &text);
                        if !conn.write(&out).await {
                            return None;
                        }
                    }
                    Err(Failed::Refused(Refusal::Unavailable(why))) => {
                        P::metrics()
                            .logins
                            .with_label_values(&["unavailable"])
                            .inc();
                        let out = conn.core.login_failed(&login, &P::unavailable(why));
                        if !conn.write(&out).await {
                            return None;
                        }
                    }
                    Err(Failed::Gone) => return None,
                },
            }
        }
        if conn.core.is_closed() {
            let _ = conn.stream.shutdown().await;
            return None;
        }
        match conn.read(app).await {
            Read::Fed => {}
            Read::Eof => return None,
            Read::Cancelled => {
                let _ = conn.write(&P::shutting_down(&conn.core)).await;
                let _ = conn.stream.shutdown().await;
                return None;
            }
        }
    }
}

/// A password login or a token login, then the protocol's preparation.
async fn login_any<P: Protocol>(
    conn: &mut Conn<P::Core>,
    login: &<P::Core as Core>::Login,
    peer: SocketAddr,
    app: &Arc<App>,
) -> Result<(User, Arc<Store>, P::Backend, P::Extra), Failed> {
    let ctx = P::context(&conn.core, peer);
    let (user, target, mut backend) = match login.secret() {
        Secret::Password(password) => authenticate::<P>(login.user(), password, &ctx, peer, app)
            .await
            .map_err(Failed::Refused)?,
        Secret::Bearer { mechanism, message } => {
            bearer::login::<P>(conn, app, &ctx, peer, login.user(), *mechanism, message).await?
        }
    };
    let extra = P::prepare(app, &user, &target, &mut backend, login)
        .await
        .map_err(Failed::Refused)?;
    Ok((user, target, backend, extra))
}

/// Times a store login for `mailshift_backend_connect_seconds`.
pub(super) fn observe<T>(target: &Store, started: Instant, result: &Result<T, StoreError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => "rejected",
        Err(_) => "error",
    };
    METRICS
        .backend_connect
        .with_label_values(&[target.name(), outcome])
        .observe(started.elapsed().as_secs_f64());
}

/// Admits a password login and logs in to the store.
async fn authenticate<P: Protocol>(
    login: &str,
    password: &[u8],
    ctx: &P::Context,
    peer: SocketAddr,
    app: &Arc<App>,
) -> Result<(User, Arc<Store>, P::Backend), Refusal> {
    let (user, target) = app.admit(login, Some(password), peer).await?;
    let started = Instant::now();
    let result = P::connect(&target, ctx, login, password).await;
    observe(&target, started, &result);
    match result {
        Ok(backend) => Ok((user, target, backend)),
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => {
            tracing::debug!(user = %login, backend = target.name(), reply = %e.error, "store refused {}login", P::LOG);
            Err(Refusal::AuthFailed)
        }
        Err(e) => {
            tracing::warn!(user = %login, backend = target.name(), error = %e, "store {}unavailable", P::LOG);
            Err(Refusal::Unavailable(P::STORE_DOWN))
        }
    }
}

async fn relay_session<P: Protocol>(
    h: Handoff<P>,
    peer: SocketAddr,
    idle_timeout: std::time::Duration,
    app: &Arc<App>,
) {
    let Handoff {
        mut client,
        backend,
        target,
        user,
        extra,
        pipelined,
        started,
    } = h;
    let (mut backend_stream, leftover) = backend.into_relay();
    let name = target.name().to_string();
    let registration = app.sessions.register(&user.login, &name, peer, &app.cancel);
    let metrics = P::metrics();
    let gauge = metrics.sessions.with_label_values(&[&name]);
    gauge.inc();
    tracing::info!(tls = client.is_tls(), "{}session start", P::LOG);
    // An idle session holds no buffer: keep the counts, not the bytes.
    let (sent_early, got_early) = (pipelined.len() as u64, leftover.len() as u64);
    let opts = relay::Options {
        idle_timeout,
        to_backend: metrics.bytes.with_label_values(&[&name, "to_backend"]),
        to_client: metrics.bytes.with_label_values(&[&name, "to_client"]),
    };
    let (end, totals) = P::relay(
        app,
        Relayed {
            client: &mut client,
            backend: &mut backend_stream,
            pipelined,
            leftover,
            extra,
            store: &name,
            opts,
            token: &registration.token,
        },
    )
    .await;
    let reason = match end {
        End::Closed => "closed",
        End::Idle => "idle",
        End::Cancelled => "kicked",
    };
    if let Some(text) = P::farewell(app, &end) {
        let _ = write(&mut client, text).await;
    }
    // After a clean end the relay has shut both write halves already; a
    // second shutdown is a wasted syscall on every login (ENOTCONN for a
    // peer that is gone), so only the other ends do it here.
    if !totals.both_closed {
        if P::close_backend(&end) {
            let _ = backend_stream.shutdown().await;
        }
        let _ = client.shutdown().await;
    }
    gauge.dec();
    drop(registration);
    tracing::info!(
        to_backend = totals.to_backend + sent_early,
        to_client = totals.to_client + got_early,
        duration_ms = started.elapsed().as_millis() as u64,
        end = reason,
        "{}session end",
        P::LOG
    );
}

/// Handoff forwards, then the plain byte relay: what the client pipelined
/// after its login goes to the store, what the store sent after its OK to
/// the client, before relaying (with splice(2) when `splice` and both legs
/// are plain TCP).
pub async fn forward_and_relay<X>(r: Relayed<'_, X>, splice: bool) -> (End, relay::Totals) {
    if !forward_early(r.client, r.backend, &r.pipelined, &r.leftover).await {
        return (End::Closed, relay::Totals::default());
    }
    // Both legs plain and asked for (`[imap] splice`, `[pop3] splice`): the
    // kernel moves the bytes.
    #[cfg(target_os = "linux")]
    if let (Stream::Plain(c), Stream::Plain(b), true) = (&*r.client, &*r.backend, splice) {
        return relay::relay_plain(c, b, r.opts, r.token).await;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = splice;
    relay::relay(r.client, r.backend, r.opts, r.token).await
}

/// Handoff forwards: `up` to the store, then `down` to the client; `false`
/// when either side is gone.
pub async fn forward_early(
    client: &mut Stream,
    backend: &mut Stream,
    up: &[u8],
    down: &[u8],
) -> bool {
    (up.is_empty() || write(backend, up).await) && (down.is_empty() || write(client, down).await)
}
