//! The async driver of one client connection: runs the [`PreAuth`] core over a
//! socket, performs lookups and the backend login it asks for, then relays.
//!
//! ```text
//!  accept ─► [TLS] ─► PreAuth (greeting, commands, STARTTLS) ─► Login
//!        ─► lookup ─► [hold wait] ─► [bind check] ─► route ─► backend login
//!        ─► tagged OK with the store's capabilities ─► relay ─► end (logged)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bearer::{self, Failed};
use super::preauth::{Action, Login, Options, PreAuth};
use super::relay::{self, End};
use super::translate::{self, Translator};
use crate::app::App;
use crate::app::Refusal;
use crate::continuity::UserMap;
use crate::directory::User;
use crate::metrics::METRICS;
use crate::store::imap::{Client as StoreClient, ClientInfo};
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

/// Serves one connection to the end. Never panics on client bytes; every
/// failure is answered or the connection closed.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, listener: Listener, shared: Arc<App>) {
    let _ = tcp.set_nodelay(true);
    let label = match listener {
        Listener::Plain => "plain",
        Listener::Tls => "tls",
    };
    METRICS.imap_connections.with_label_values(&[label]).inc();
    let cfg = &shared.config.imap;
    let deadline = tokio::time::Instant::now() + cfg.preauth_timeout;
    let stream = match listener {
        Listener::Plain => Stream::Plain(tcp),
        Listener::Tls => {
            let Some(tls) = &shared.tls else { return };
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
        starttls_available: shared.tls.is_some(),
        tls_active: stream.is_tls(),
        require_tls: cfg.require_tls,
        max_line: cfg.max_line,
        max_literal: cfg.max_literal,
        max_commands: cfg.max_preauth_commands,
        greeting: cfg.greeting.clone(),
        oauth: cfg.oauth,
        ..Options::default()
    };
    // Shutdown is handled inside: a client waiting for its next command gets
    // BYE; a login under way ends (the relay then says BYE at once).
    let result = tokio::time::timeout_at(deadline, preauth(stream, peer, opts, &shared)).await;
    match result {
        Ok(Some(handoff)) => relay_session(handoff, peer, &shared).await,
        Ok(None) => {}
        Err(_) => tracing::debug!(client = %peer, "pre-auth timeout"),
    }
}

/// Everything needed to relay after a successful login.
struct Handoff {
    client: Stream,
    backend: StoreClient,
    target: Arc<Store>,
    user: User,
    /// The user's UID maps: the session is translated.
    map: Option<Arc<UserMap>>,
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
    shared: &Arc<App>,
) -> Option<Handoff> {
    let started = Instant::now();
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
                Action::StartTls => {
                    let Stream::Plain(tcp) = stream else {
                        return None;
                    };
                    let tls = shared.tls.as_ref()?;
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
                    let info = ClientInfo {
                        peer,
                        id: core.client_id().to_vec(),
                    };
                    let result = match login.password() {
                        Some(password) => authenticate(&login, password, &info, shared)
                            .await
                            .map_err(Failed::Refused),
                        None => {
                            match bearer::login(&mut stream, &mut core, &login, &info, shared).await
                            {
                                Ok((user, target, backend)) => {
                                    with_map(user, target, backend, peer, shared)
                                        .await
                                        .map_err(Failed::Refused)
                                }
                                Err(f) => Err(f),
                            }
                        }
                    };
                    match result {
                        Ok((user, target, backend, map)) => {
                            METRICS.imap_logins.with_label_values(&["ok"]).inc();
                            shared.throttle.succeeded(&login.user);
                            match login.password() {
                                Some(password) => shared.logged_in(&user.login, password),
                                None => shared.logged_in_with_token(&user.login),
                            }
                            let caps = match map {
                                Some(_) => translate::filter_capabilities(&backend.capabilities()),
                                None => backend.capabilities(),
                            };
                            let ok = format!("{} OK [CAPABILITY {caps}] Logged in\r\n", login.tag);
                            if !write(&mut stream, ok.as_bytes()).await {
                                return None;
                            }
                            return Some(Handoff {
                                client: stream,
                                backend,
                                target,
                                user,
                                map,
                                pipelined: core.into_pipelined(),
                                started,
                            });
                        }
                        Err(e @ (Failed::Refused(Refusal::AuthFailed) | Failed::Store(_))) => {
                            METRICS
                                .imap_logins
                                .with_label_values(&["auth_failed"])
                                .inc();
                            let delay = shared.throttle.failed(peer.ip(), &login.user);
                            tracing::info!(
                                user = %login.user, client = %peer, mechanism = login.mechanism,
                                delay_ms = delay.as_millis() as u64, "login failed"
                            );
                            tokio::time::sleep(delay).await;
                            let text = match e {
                                // A token's refusal is the store's to word.
                                Failed::Store(text) => text,
                                _ => "NO [AUTHENTICATIONFAILED] Authentication failed.".into(),
                            };
                            let out = core.login_failed(&login.tag, &text);
                            if !write(&mut stream, &out).await {
                                return None;
                            }
                        }
                        Err(Failed::Refused(Refusal::Unavailable(why))) => {
                            METRICS
                                .imap_logins
                                .with_label_values(&["unavailable"])
                                .inc();
                            let out =
                                core.login_failed(&login.tag, &format!("NO [UNAVAILABLE] {why}"));
                            if !write(&mut stream, &out).await {
                                return None;
                            }
                        }
                        Err(Failed::Gone) => return None,
                    }
                }
                // Only asked for inside a bearer login, which reads it there.
                Action::Answer(_) => {}
            }
        }
        if core.is_closed() {
            let _ = stream.shutdown().await;
            return None;
        }
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = shared.cancel.cancelled() => {
                let _ = write(&mut stream, b"* BYE Server shutting down, reconnect shortly.\r\n").await;
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

/// Admits the login (lookup, hold wait, password check, route; shared by
/// every front end), logs in to the store and, for a user mailshift moved,
/// reads the UID maps (cached per user; no round trip for other users).
async fn authenticate(
    login: &Login,
    password: &[u8],
    client: &ClientInfo,
    shared: &Arc<App>,
) -> Result<(User, Arc<Store>, StoreClient, Option<Arc<UserMap>>), Refusal> {
    let peer = client.peer;
    let (user, target) = shared.admit(&login.user, Some(password), peer).await?;
    let started = Instant::now();
    let creds = target.session_credentials(&login.user, password);
    let result = StoreClient::connect(&target, &creds, Some(client)).await;
    let took = started.elapsed().as_secs_f64();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => "rejected",
        Err(_) => "error",
    };
    METRICS
        .backend_connect
        .with_label_values(&[target.name(), outcome])
        .observe(took);
    match result {
        Ok(logged_in) => with_map(user, target, logged_in, peer, shared).await,
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => {
            tracing::debug!(user = %login.user, client = %peer, backend = target.name(), reply = %e.error, "store refused login");
            Err(Refusal::AuthFailed)
        }
        Err(e) => {
            tracing::warn!(user = %login.user, client = %peer, backend = target.name(), error = %e, "store unavailable");
            Err(Refusal::Unavailable(
                "Mailbox temporarily unavailable, try again.",
            ))
        }
    }
}

/// The user's UID maps on this store, read with the session's own login
/// (none for a user mailshift did not move: no round trip).
async fn with_map(
    user: User,
    target: Arc<Store>,
    mut logged_in: StoreClient,
    peer: SocketAddr,
    shared: &Arc<App>,
) -> Result<(User, Arc<Store>, StoreClient, Option<Arc<UserMap>>), Refusal> {
    match shared
        .maps
        .for_session(&user, &target, &mut logged_in)
        .await
    {
        Ok(map) => Ok((user, target, logged_in, map)),
        Err(e) => {
            // Relaying plainly would show the store's UIDVALIDITY and make
            // the client download everything again: refuse, it retries.
            tracing::warn!(user = %user.login, client = %peer, backend = target.name(), error = %e, "UID maps unreadable");
            Err(Refusal::Unavailable(
                "Mailbox temporarily unavailable, try again.",
            ))
        }
    }
}

async fn relay_session(h: Handoff, peer: SocketAddr, shared: &Arc<App>) {
    let Handoff {
        mut client,
        backend: logged_in,
        target,
        user,
        map,
        pipelined,
        started,
    } = h;
    let (mut backend_stream, leftover) = logged_in.into_relay();
    let name = target.name().to_string();
    let registration = shared
        .sessions
        .register(&user.login, &name, peer, &shared.cancel);
    let gauge = METRICS.imap_sessions.with_label_values(&[&name]);
    gauge.inc();
    tracing::info!(user = %user.login, client = %peer, backend = %name, tls = client.is_tls(), translated = map.is_some(), "session start");
    let mut translator = map.map(|m| {
        let mut t = Translator::new(m);
        t.hide_folder(crate::continuity::stored::HIDDEN_FOLDER.as_bytes());
        t
    });
    // Handoff forwards: what the client pipelined after LOGIN goes to the store,
    // what the store sent after its OK goes to the client, before relaying
    // (translated like the rest for a translated session).
    let (mut up, mut down) = (Vec::new(), Vec::new());
    match &mut translator {
        Some(t) => {
            t.from_client(&pipelined, &mut up);
            if t.from_store(&leftover, &mut down).is_err() {
                down.clear();
            }
            t.take_replies(&mut down);
        }
        None => {
            up.extend_from_slice(&pipelined);
            down.extend_from_slice(&leftover);
        }
    }
    let mut early_close = false;
    if !up.is_empty() && !write(&mut backend_stream, &up).await {
        early_close = true;
    }
    if !down.is_empty() && !write(&mut client, &down).await {
        early_close = true;
    }
    let (end, totals) = if early_close {
        (End::Closed, relay::Totals::default())
    } else {
        let opts = relay::Options {
            idle_timeout: shared.config.imap.idle_timeout,
            to_backend: METRICS.imap_bytes.with_label_values(&[&name, "to_backend"]),
            to_client: METRICS.imap_bytes.with_label_values(&[&name, "to_client"]),
        };
        match (&client, &backend_stream, &mut translator) {
            // Both legs plain: the kernel moves the bytes (splice).
            #[cfg(target_os = "linux")]
            (Stream::Plain(c), Stream::Plain(b), None) if shared.config.imap.splice => {
                relay::relay_plain(c, b, opts, &registration.token).await
            }
            (_, _, t) => {
                let t = t.as_mut().map(|t| t as &mut dyn relay::Transform);
                relay::relay_with(
                    &mut client,
                    &mut backend_stream,
                    t,
                    opts,
                    &registration.token,
                )
                .await
            }
        }
    };
    let reason = match end {
        End::Closed => "closed",
        End::Idle => {
            let _ = write(&mut client, b"* BYE Idle for too long.\r\n").await;
            "idle"
        }
        End::Cancelled => {
            let text: &[u8] = if shared.cancel.is_cancelled() {
                b"* BYE Server shutting down, reconnect shortly.\r\n"
            } else {
                METRICS.imap_kicks.with_label_values(&["moved"]).inc();
                b"* BYE Your mailbox moved; please reconnect.\r\n"
            };
            let _ = write(&mut client, text).await;
            "kicked"
        }
    };
    let _ = client.shutdown().await;
    gauge.dec();
    drop(registration);
    tracing::info!(
        user = %user.login, client = %peer, backend = %name,
        to_backend = totals.to_backend + pipelined.len() as u64,
        to_client = totals.to_client + leftover.len() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        end = reason,
        "session end"
    );
}
