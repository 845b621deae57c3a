//! The async driver of one ManageSieve connection: runs the [`PreAuth`] core
//! over a socket, admits the login ([`App::admit`]: lookup, hold wait,
//! password check, route), logs in to the store's ManageSieve as the user (or
//! the master user), then relays bytes with the IMAP relay.
//!
//! ```text
//!  accept ─► [TLS] ─► PreAuth (listing, STARTTLS, AUTHENTICATE) ─► Login
//!        ─► App::admit ─► store ManageSieve login ─► OK ─► relay ─► end (logged)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::preauth::{Action, Login, Options, PreAuth};
use crate::app::{App, Refusal};
use crate::directory::User;
use crate::imap::relay::{self, End};
use crate::metrics::sieve::SIEVE;
use crate::metrics::METRICS;
use crate::sasl::Secret;
use crate::store::sieve::Client as SieveClient;
use crate::store::{Error as StoreFailure, Store};
use crate::stream::Stream;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain, STARTTLS offered.
    Plain,
    /// Implicit TLS.
    Tls,
}

const TRYLATER: &str = "NO (TRYLATER)";

/// Serves one connection to the end. Never panics on client bytes.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, listener: Listener, shared: Arc<App>) {
    let Some(cfg) = shared.config.managesieve.clone() else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let label = match listener {
        Listener::Plain => "plain",
        Listener::Tls => "tls",
    };
    SIEVE.connections.with_label_values(&[label]).inc();
    let deadline = tokio::time::Instant::now() + cfg.preauth_timeout;
    let stream = match listener {
        Listener::Plain => Stream::Plain(tcp),
        Listener::Tls => {
            let Some(tls) = &shared.tls else { return };
            match tokio::time::timeout_at(deadline, tls.acceptor().accept(tcp)).await {
                Ok(Ok(s)) => Stream::ClientTls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "ManageSieve TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let opts = Options {
        starttls_available: shared.tls.is_some(),
        tls_active: stream.is_tls(),
        require_tls: cfg.require_tls,
        max_line: cfg.max_line,
        max_literal: cfg.max_literal,
        max_commands: cfg.max_preauth_commands,
        implementation: cfg.implementation.clone(),
        sieve_extensions: cfg.sieve_extensions.clone(),
    };
    // Boxed: the pre-auth phase (store login included) is freed before the
    // relay, so an idle relayed session's task holds only what relaying needs.
    let phase = Box::pin(preauth(stream, peer, opts, &shared));
    let result = tokio::time::timeout_at(deadline, phase).await;
    match result {
        Ok(Some(handoff)) => relay_session(handoff, peer, cfg.idle_timeout, &shared).await,
        Ok(None) => {}
        Err(_) => tracing::debug!(client = %peer, "ManageSieve pre-auth timeout"),
    }
}

struct Handoff {
    client: Stream,
    backend: SieveClient,
    target: Arc<Store>,
    user: User,
    pipelined: Vec<u8>,
    started: Instant,
}

async fn write(s: &mut Stream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
}

async fn preauth(
    mut stream: Stream,
    peer: SocketAddr,
    opts: Options,
    shared: &Arc<App>,
) -> Option<Handoff> {
    let started = Instant::now();
    let mut core = PreAuth::new(opts);
    if !write(&mut stream, &core.greeting()).await {
        return None;
    }
    // Small: pre-auth lines are short, and an idle connection keeps this.
    let mut buf = vec![0u8; 1024];
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
                Action::StartTls => {
                    let Stream::Plain(tcp) = stream else {
                        return None;
                    };
                    let tls = shared.tls.as_ref()?;
                    match tls.acceptor().accept(tcp).await {
                        Ok(s) => stream = Stream::ClientTls(Box::new(s)),
                        Err(e) => {
                            tracing::debug!(client = %peer, error = %e, "ManageSieve STARTTLS handshake failed");
                            return None;
                        }
                    }
                    core.tls_started();
                }
                Action::Login(login) => match authenticate(&login, peer, shared).await {
                    Ok((user, target, backend)) => {
                        SIEVE.logins.with_label_values(&["ok"]).inc();
                        shared.throttle.succeeded(&login.identity.user);
                        if !write(&mut stream, b"OK \"Logged in.\"\r\n").await {
                            return None;
                        }
                        return Some(Handoff {
                            client: stream,
                            backend,
                            target,
                            user,
                            pipelined: core.into_pipelined(),
                            started,
                        });
                    }
                    Err(Refusal::AuthFailed) => {
                        SIEVE.logins.with_label_values(&["auth_failed"]).inc();
                        let delay = shared.throttle.failed(peer.ip(), &login.identity.user);
                        tracing::info!(
                            user = %login.identity.user, client = %peer, mechanism = login.mechanism,
                            delay_ms = delay.as_millis() as u64, "ManageSieve login failed"
                        );
                        tokio::time::sleep(delay).await;
                        let out = core.login_failed("NO \"Authentication failed.\"");
                        if !write(&mut stream, &out).await {
                            return None;
                        }
                    }
                    Err(Refusal::Unavailable(why)) => {
                        SIEVE.logins.with_label_values(&["unavailable"]).inc();
                        let mut text = Vec::new();
                        crate::store::sieve::wire::string(&mut text, why.as_bytes());
                        let out = core.login_failed(&format!(
                            "{TRYLATER} {}",
                            String::from_utf8_lossy(&text)
                        ));
                        if !write(&mut stream, &out).await {
                            return None;
                        }
                    }
                },
            }
        }
        if core.is_closed() {
            let _ = stream.shutdown().await;
            return None;
        }
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = shared.cancel.cancelled() => {
                let _ = write(&mut stream, b"BYE (TRYLATER) \"Server shutting down, reconnect shortly.\"\r\n").await;
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

/// Admits the login (shared with every front end) and logs in to the
/// store's ManageSieve.
async fn authenticate(
    login: &Login,
    peer: SocketAddr,
    shared: &Arc<App>,
) -> Result<(User, Arc<Store>, SieveClient), Refusal> {
    let user_login = &login.identity.user;
    let password = match &login.identity.secret {
        Secret::Password(p) => p.as_slice(),
        // Bearer mechanisms are not offered here yet (see preauth::decode).
        Secret::Bearer { .. } => return Err(Refusal::AuthFailed),
    };
    let (user, target) = shared.admit(user_login, Some(password), peer).await?;
    let started = Instant::now();
    let creds = target.session_credentials(user_login, password);
    let result = SieveClient::connect(&target, &creds).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => "rejected",
        Err(_) => "error",
    };
    METRICS
        .backend_connect
        .with_label_values(&[target.name(), outcome])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(client) => Ok((user, target, client)),
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => {
            tracing::debug!(user = %user_login, client = %peer, backend = target.name(), reply = %e.error, "store refused ManageSieve login");
            Err(Refusal::AuthFailed)
        }
        Err(e) => {
            tracing::warn!(user = %user_login, client = %peer, backend = target.name(), error = %e, "store ManageSieve unavailable");
            Err(Refusal::Unavailable(
                "Sieve service temporarily unavailable, try again.",
            ))
        }
    }
}

async fn relay_session(
    h: Handoff,
    peer: SocketAddr,
    idle_timeout: std::time::Duration,
    shared: &Arc<App>,
) {
    let Handoff {
        mut client,
        backend,
        target,
        user,
        pipelined,
        started,
    } = h;
    let (mut backend_stream, leftover) = backend.into_relay();
    let name = target.name().to_string();
    let registration = shared
        .sessions
        .register(&user.login, &name, peer, &shared.cancel);
    let gauge = SIEVE.sessions.with_label_values(&[&name]);
    gauge.inc();
    tracing::info!(user = %user.login, client = %peer, backend = %name, tls = client.is_tls(), "ManageSieve session start");
    // Handoff forwards: pipelined client bytes to the store, the store's
    // bytes after its OK to the client, before relaying.
    let mut early_close = false;
    if !pipelined.is_empty() && !write(&mut backend_stream, &pipelined).await {
        early_close = true;
    }
    if !leftover.is_empty() && !write(&mut client, &leftover).await {
        early_close = true;
    }
    // An idle session holds no buffer: keep the counts, not the bytes.
    let (pipelined, leftover) = (pipelined.len() as u64, leftover.len() as u64);
    let (end, totals) = if early_close {
        (End::Closed, relay::Totals::default())
    } else {
        let opts = relay::Options {
            idle_timeout,
            to_backend: SIEVE.bytes.with_label_values(&[&name, "to_backend"]),
            to_client: SIEVE.bytes.with_label_values(&[&name, "to_client"]),
        };
        relay::relay(&mut client, &mut backend_stream, opts, &registration.token).await
    };
    let reason = match end {
        End::Closed => "closed",
        End::Idle => {
            let _ = write(&mut client, b"BYE \"Idle for too long.\"\r\n").await;
            "idle"
        }
        End::Cancelled => {
            let text: &[u8] = if shared.cancel.is_cancelled() {
                b"BYE (TRYLATER) \"Server shutting down, reconnect shortly.\"\r\n"
            } else {
                b"BYE (TRYLATER) \"Your mailbox moved; please reconnect.\"\r\n"
            };
            let _ = write(&mut client, text).await;
            "kicked"
        }
    };
    let _ = client.shutdown().await;
    let _ = backend_stream.shutdown().await;
    gauge.dec();
    drop(registration);
    tracing::info!(
        user = %user.login, client = %peer, backend = %name,
        to_backend = totals.to_backend + pipelined,
        to_client = totals.to_client + leftover,
        duration_ms = started.elapsed().as_millis() as u64,
        end = reason,
        "ManageSieve session end"
    );
}
