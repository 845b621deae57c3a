//! The async driver of one submission connection: runs the [`PreAuth`] core
//! over a socket, admits the login (as every front end does), opens the
//! user's store's submission service as the user, then relays bytes.
//!
//! ```text
//!  accept ─► [TLS] ─► 220 ─► PreAuth (EHLO, STARTTLS, AUTH) ─► App::admit
//!        ─► Store::submission (EHLO, STARTTLS, XCLIENT, AUTH) ─► 235 ─► relay ─► end (logged)
//!           refused: 535 5.7.8 after the failure delay │ down or held: 454 4.7.0
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::metrics::SUBMISSION;
use super::preauth::{Action, Login, Options, PreAuth};
use crate::app::{App, Refusal};
use crate::config::BackendLogin;
use crate::directory::User;
use crate::imap::relay::{self, End};
use crate::sasl::Secret;
use crate::store::bearer::Outcome;
use crate::store::smtp::{Auth, Conn, Origin, Plan};
use crate::store::{Error as StoreFailure, Store};
use crate::stream::Stream;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain, STARTTLS offered (587).
    Plain,
    /// Implicit TLS (465).
    Tls,
}

/// What a refused AUTH tells the client.
const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid";

/// Serves one connection to the end. Never panics on client bytes; every
/// failure is answered or the connection closed.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, listener: Listener, app: Arc<App>) {
    let Some(cfg) = app.config.submission.clone() else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let label = match listener {
        Listener::Plain => "plain",
        Listener::Tls => "tls",
    };
    SUBMISSION.connections.with_label_values(&[label]).inc();
    let deadline = tokio::time::Instant::now() + cfg.preauth_timeout;
    let stream = match listener {
        Listener::Plain => Stream::Plain(tcp),
        Listener::Tls => {
            let Some(tls) = &app.tls else { return };
            match tokio::time::timeout_at(deadline, tls.acceptor().accept(tcp)).await {
                Ok(Ok(s)) => Stream::ClientTls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let opts = Options {
        hostname: cfg.hostname.clone(),
        starttls_available: app.tls.is_some(),
        tls_active: stream.is_tls(),
        require_tls: cfg.require_tls,
        max_line: cfg.max_line,
        max_commands: cfg.max_preauth_commands,
        oauth: cfg.oauth,
        ..Options::default()
    };
    match tokio::time::timeout_at(deadline, preauth(stream, peer, opts, &app)).await {
        Ok(Some(handoff)) => relay_session(handoff, peer, &app).await,
        Ok(None) => {}
        Err(_) => tracing::debug!(client = %peer, "submission pre-auth timeout"),
    }
}

/// Everything needed to relay after a successful AUTH.
struct Handoff {
    client: Stream,
    store_conn: Conn,
    target: Arc<Store>,
    user: User,
    pipelined: Vec<u8>,
    started: Instant,
}

async fn write(s: &mut Stream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
}

/// Runs the pre-auth phase; `Some` when a login went through.
async fn preauth(
    mut stream: Stream,
    peer: SocketAddr,
    opts: Options,
    app: &Arc<App>,
) -> Option<Handoff> {
    let started = Instant::now();
    let hostname = opts.hostname.clone();
    let mut core = PreAuth::new(opts);
    if !write(&mut stream, &core.greeting()).await {
        return None;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(action) = core.poll() {
            match action {
                Action::Write(bytes) => {
                    if !write(&mut stream, &bytes).await {
                        return None;
                    }
                }
                Action::Close => {
                    let _ = stream.shutdown().await;
                    return None;
                }
                // Only the bearer login's challenge reader asks for answers.
                Action::Answer(_) => {}
                Action::StartTls => {
                    let Stream::Plain(tcp) = stream else {
                        return None;
                    };
                    let tls = app.tls.as_ref()?;
                    match tls.acceptor().accept(tcp).await {
                        Ok(s) => stream = Stream::ClientTls(Box::new(s)),
                        Err(e) => {
                            tracing::debug!(client = %peer, error = %e, "STARTTLS handshake failed");
                            return None;
                        }
                    }
                    core.tls_started();
                }
                Action::Login(login) => {
                    let origin = Origin {
                        peer,
                        helo: core.helo().unwrap_or("").to_string(),
                    };
                    match login_any(&mut stream, &mut core, &login, origin, &hostname, app).await {
                        Ok((user, target, store_conn)) => {
                            SUBMISSION.logins.with_label_values(&["ok"]).inc();
                            app.throttle.succeeded(&login.identity.user);
                            if !write(&mut stream, b"235 2.7.0 Authentication successful\r\n").await
                            {
                                return None;
                            }
                            return Some(Handoff {
                                client: stream,
                                store_conn,
                                target,
                                user,
                                pipelined: core.into_pipelined(),
                                started,
                            });
                        }
                        Err(e @ (Failed::Refused(Refusal::AuthFailed) | Failed::Store(_))) => {
                            SUBMISSION.logins.with_label_values(&["auth_failed"]).inc();
                            let delay = app.throttle.failed(peer.ip(), &login.identity.user);
                            tracing::info!(
                                user = %login.identity.user, client = %peer, mechanism = login.mechanism,
                                delay_ms = delay.as_millis() as u64, "submission login failed"
                            );
                            tokio::time::sleep(delay).await;
                            let text = match e {
                                // A token's refusal is the store's to word.
                                Failed::Store(text) => text,
                                _ => AUTH_FAILED.to_string(),
                            };
                            let out = core.auth_failed(&text);
                            if !write(&mut stream, &out).await {
                                return None;
                            }
                        }
                        Err(Failed::Gone) => return None,
                        Err(Failed::Refused(Refusal::Unavailable(why))) => {
                            SUBMISSION.logins.with_label_values(&["unavailable"]).inc();
                            let out = core.auth_failed(&format!("454 4.7.0 {why}"));
                            if !write(&mut stream, &out).await {
                                return None;
                            }
                        }
                    }
                }
            }
        }
        if core.is_closed() {
            let _ = stream.shutdown().await;
            return None;
        }
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = app.cancel.cancelled() => {
                let text = format!("421 4.3.2 {hostname} Service shutting down, try again later\r\n");
                let _ = write(&mut stream, text.as_bytes()).await;
                let _ = stream.shutdown().await;
                return None;
            }
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => core.feed(&buf[..n]),
        }
    }
}

/// Why a login did not get through.
enum Failed {
    /// Refused before or without the store's own words.
    Refused(Refusal),
    /// The store refused the token; its reply line, for the client.
    Store(String),
    /// The client went away (or the server is shutting down) mid-exchange.
    Gone,
}

/// A password login by [`authenticate`], a token by [`bearer_login`].
async fn login_any(
    stream: &mut Stream,
    core: &mut PreAuth,
    login: &Login,
    origin: Origin,
    hostname: &str,
    app: &Arc<App>,
) -> Result<(User, Arc<Store>, Conn), Failed> {
    match &login.identity.secret {
        Secret::Password(_) => authenticate(login, origin, hostname, app)
            .await
            .map_err(Failed::Refused),
        Secret::Bearer { .. } => bearer_login(stream, core, login, origin, hostname, app).await,
    }
}

/// The store's refusal of a token as the client may see it: a printable
/// 4xx/5xx line, else our own words.
fn store_text(text: &str) -> String {
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable && text.len() <= 512 && (text.starts_with('4') || text.starts_with('5')) {
        text.to_string()
    } else {
        AUTH_FAILED.into()
    }
}

/// Admits a bearer login (routed by the message's user, no password check:
/// only the store can judge a token) and opens the store's submission
/// service with the client's message unchanged; a failure challenge of the
/// store goes to the client and its answer back.
async fn bearer_login(
    stream: &mut Stream,
    core: &mut PreAuth,
    login: &Login,
    origin: Origin,
    hostname: &str,
    app: &Arc<App>,
) -> Result<(User, Arc<Store>, Conn), Failed> {
    let Secret::Bearer { mechanism, message } = &login.identity.secret else {
        return Err(Failed::Refused(Refusal::AuthFailed));
    };
    let peer = origin.peer;
    let name = &login.identity.user;
    let (user, target) = app.admit(name, None, peer).await.map_err(Failed::Refused)?;
    let unavailable = || {
        Failed::Refused(Refusal::Unavailable(
            "Mail service temporarily unavailable, try again.",
        ))
    };
    let Some(ep) = target.cfg.submission.clone() else {
        return Err(unavailable());
    };
    let plan = Plan {
        lmtp: false,
        hostname: hostname.to_string(),
        starttls: false,
        origin: Some(origin),
        auth: Some(Auth::Bearer {
            user: name.clone(),
            mechanism: *mechanism,
            message: message.clone(),
        }),
    };
    let first = Conn::open_step(&target, &ep, plan, target.cfg.connect_timeout).await;
    let result = match first {
        Ok(Outcome::LoggedIn(c)) => Ok(c),
        Ok(Outcome::Challenged { challenge, pending }) => {
            tracing::debug!(user = %name, client = %peer, backend = target.name(), "store challenged the token; relaying");
            if !write(stream, &core.relay_challenge(&challenge)).await {
                return Err(Failed::Gone);
            }
            let answer = challenge_answer(stream, core, app).await?;
            pending.answer(&target, answer.as_deref()).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(conn) => Ok((user, target, conn)),
        Err(e) => match e.error {
            StoreFailure::Rejected(text) => {
                tracing::debug!(user = %name, client = %peer, backend = target.name(), reply = %text, "store refused the token");
                Err(Failed::Store(store_text(&text)))
            }
            error => {
                tracing::warn!(user = %name, client = %peer, backend = target.name(), %error, "store submission unavailable");
                Err(unavailable())
            }
        },
    }
}

/// Reads the client's answer to a relayed challenge.
async fn challenge_answer(
    stream: &mut Stream,
    core: &mut PreAuth,
    app: &Arc<App>,
) -> Result<Option<Vec<u8>>, Failed> {
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(action) = core.poll() {
            match action {
                Action::Answer(a) => return Ok(a),
                Action::Write(bytes) => {
                    if !write(stream, &bytes).await {
                        return Err(Failed::Gone);
                    }
                }
                Action::Close => {
                    let _ = stream.shutdown().await;
                    return Err(Failed::Gone);
                }
                // Not while a login is under way.
                Action::StartTls | Action::Login(_) => {}
            }
        }
        if core.is_closed() {
            return Err(Failed::Gone);
        }
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = app.cancel.cancelled() => return Err(Failed::Gone),
        };
        match read {
            Ok(0) | Err(_) => return Err(Failed::Gone),
            Ok(n) => core.feed(&buf[..n]),
        }
    }
}

/// Admits the login (lookup, hold wait, password check, route; shared by
/// every front end) and opens the store's submission service as the user.
async fn authenticate(
    login: &Login,
    origin: Origin,
    hostname: &str,
    app: &Arc<App>,
) -> Result<(User, Arc<Store>, Conn), Refusal> {
    let peer = origin.peer;
    let name = &login.identity.user;
    // Tokens go by bearer_login.
    let password = match &login.identity.secret {
        Secret::Password(pw) => pw,
        Secret::Bearer { .. } => return Err(Refusal::AuthFailed),
    };
    let (user, target) = app.admit(name, Some(password), peer).await?;
    let auth = match (&target.cfg.login, &target.cfg.master) {
        (BackendLogin::Master, Some(m)) => Auth::Master {
            user: name.clone(),
            master: m.user.clone(),
            password: m.password.clone().into_bytes(),
        },
        _ => Auth::User {
            user: name.clone(),
            password: password.clone(),
        },
    };
    let timeout = target.cfg.connect_timeout;
    match target.submission(hostname, origin, auth, timeout).await {
        Ok(conn) => Ok((user, target, conn)),
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => {
            tracing::debug!(user = %name, client = %peer, backend = target.name(), reply = %e.error, "store refused submission login");
            Err(Refusal::AuthFailed)
        }
        Err(e) => {
            tracing::warn!(user = %name, client = %peer, backend = target.name(), error = %e, "store submission unavailable");
            Err(Refusal::Unavailable(
                "Mail service temporarily unavailable, try again.",
            ))
        }
    }
}

async fn relay_session(h: Handoff, peer: SocketAddr, app: &Arc<App>) {
    let Handoff {
        mut client,
        store_conn,
        target,
        user,
        pipelined,
        started,
    } = h;
    let (mut store_stream, leftover) = store_conn.into_relay();
    let name = target.name().to_string();
    let registration = app.sessions.register(&user.login, &name, peer, &app.cancel);
    let gauge = SUBMISSION.sessions.with_label_values(&[&name]);
    gauge.inc();
    tracing::info!(user = %user.login, client = %peer, backend = %name, tls = client.is_tls(), "submission session start");
    // What the client pipelined after AUTH goes to the store, what the store
    // sent after its 235 to the client, before relaying.
    let mut early_close = false;
    if !pipelined.is_empty() && !write(&mut store_stream, &pipelined).await {
        early_close = true;
    }
    if !leftover.is_empty() && !write(&mut client, &leftover).await {
        early_close = true;
    }
    let (end, totals) = if early_close {
        (End::Closed, relay::Totals::default())
    } else {
        let idle_timeout = app
            .config
            .submission
            .as_ref()
            .map(|s| s.idle_timeout)
            .unwrap_or(std::time::Duration::from_secs(300));
        let opts = relay::Options {
            idle_timeout,
            to_backend: SUBMISSION.bytes.with_label_values(&[&name, "to_backend"]),
            to_client: SUBMISSION.bytes.with_label_values(&[&name, "to_client"]),
        };
        relay::relay(&mut client, &mut store_stream, opts, &registration.token).await
    };
    let reason = match end {
        End::Closed => "closed",
        End::Idle => "idle",
        End::Cancelled => "kicked",
    };
    if !matches!(end, End::Closed) {
        // Not at a message boundary: the store discards a message cut short,
        // so the client's own retry is the only copy.
        let _ = store_stream.shutdown().await;
    }
    let _ = client.shutdown().await;
    gauge.dec();
    drop(registration);
    tracing::info!(
        user = %user.login, client = %peer, backend = %name,
        to_backend = totals.to_backend + pipelined.len() as u64,
        to_client = totals.to_client + leftover.len() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        end = reason,
        "submission session end"
    );
}
