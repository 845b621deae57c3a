//! The async driver of one POP3 client connection: runs the [`PreAuth`] core
//! over a socket, admits the login ([`App::admit`], as every front end does)
//! and logs in to the store's POP3, then relays.
//!
//! ```text
//!  accept ─► [TLS] ─► PreAuth (greeting, CAPA, STLS, USER/PASS, AUTH) ─► Login
//!        ─► App::admit (lookup, hold wait, password check, route)
//!        ─► store POP3 login ─► +OK ─► relay (UIDL rewritten for moved users)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bearer::{self, Failed};
use super::preauth::{Action, Login, Options, PreAuth};
use super::uidl::{Rewriter, UidlMap};
use crate::app::{App, Refusal};
use crate::continuity::map::{FolderMap, Snapshot};
use crate::directory::User;
use crate::imap::relay::{self, End};
use crate::metrics::METRICS;
use crate::sasl::Secret;
use crate::store::pop3::Client as StoreClient;
use crate::store::{Error as StoreFailure, Store};
use crate::stream::Stream;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain, STLS offered (110).
    Plain,
    /// Implicit TLS (995).
    Tls,
}

const SHUTDOWN: &[u8] = b"-ERR [SYS/TEMP] Server shutting down, reconnect shortly.\r\n";

/// Serves one connection to the end. Never panics on client bytes; every
/// failure is answered or the connection closed.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, listener: Listener, shared: Arc<App>) {
    let Some(cfg) = shared.config.pop3.clone() else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let label = match listener {
        Listener::Plain => "plain",
        Listener::Tls => "tls",
    };
    METRICS.pop3_connections.with_label_values(&[label]).inc();
    let deadline = tokio::time::Instant::now() + cfg.preauth_timeout;
    let stream = match listener {
        Listener::Plain => Stream::Plain(tcp),
        Listener::Tls => {
            let Some(tls) = &shared.tls else { return };
            match tokio::time::timeout_at(deadline, tls.acceptor().accept(tcp)).await {
                Ok(Ok(s)) => Stream::ClientTls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "POP3 TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let opts = Options {
        tls_available: shared.tls.is_some(),
        tls_active: stream.is_tls(),
        require_tls: cfg.require_tls,
        max_line: cfg.max_line,
        max_commands: cfg.max_preauth_commands,
        greeting: cfg.greeting.clone(),
        oauth: cfg.oauth,
    };
    let result = tokio::time::timeout_at(deadline, preauth(stream, peer, opts, &shared)).await;
    match result {
        Ok(Some(handoff)) => relay_session(handoff, peer, &shared).await,
        Ok(None) => {}
        Err(_) => tracing::debug!(client = %peer, "POP3 pre-auth timeout"),
    }
}

/// Everything needed to relay after a successful login.
struct Handoff {
    client: Stream,
    backend: StoreClient,
    target: Arc<Store>,
    user: User,
    pipelined: Vec<u8>,
    started: Instant,
    /// Old UIDLs for a user mailshift moved here.
    map: Option<UidlMap>,
}

async fn write(s: &mut Stream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
}

/// Runs the AUTHORIZATION state; `Some` when a login went through.
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
    let mut buf = vec![0u8; 2048];
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
                            tracing::debug!(client = %peer, error = %e, "POP3 STLS handshake failed");
                            return None;
                        }
                    }
                    core.tls_started();
                }
                // Only the login core's challenge reader asks for answers.
                Action::Answer(_) => {}
                Action::Login(login) => {
                    match login_any(&mut stream, &mut core, &login, peer, shared).await {
                        Ok((user, target, backend)) => {
                            METRICS.pop3_logins.with_label_values(&["ok"]).inc();
                            shared.throttle.succeeded(&login.identity.user);
                            if let (Some(s), Secret::Password(pw)) =
                                (&shared.scheduler, &login.identity.secret)
                            {
                                s.on_login(&user.login, pw);
                            }
                            // Before the +OK: a client's first UIDL must see it.
                            let map = uidl_map(shared, &user, &target, &login.identity).await;
                            if !write(&mut stream, b"+OK Logged in.\r\n").await {
                                return None;
                            }
                            return Some(Handoff {
                                client: stream,
                                backend,
                                target,
                                user,
                                pipelined: core.into_pipelined(),
                                started,
                                map,
                            });
                        }
                        Err(e @ (Failed::Refused(Refusal::AuthFailed) | Failed::Store(_))) => {
                            METRICS
                                .pop3_logins
                                .with_label_values(&["auth_failed"])
                                .inc();
                            let delay = shared.throttle.failed(peer.ip(), &login.identity.user);
                            tracing::info!(
                                user = %login.identity.user, client = %peer, mechanism = login.mechanism,
                                delay_ms = delay.as_millis() as u64, "POP3 login failed"
                            );
                            tokio::time::sleep(delay).await;
                            let text = match e {
                                // A token's refusal is the store's to word.
                                Failed::Store(text) => text,
                                _ => "[AUTH] Authentication failed.".into(),
                            };
                            let out = core.login_failed(&text);
                            if !write(&mut stream, &out).await {
                                return None;
                            }
                        }
                        Err(Failed::Gone) => return None,
                        Err(Failed::Refused(Refusal::Unavailable(why))) => {
                            METRICS
                                .pop3_logins
                                .with_label_values(&["unavailable"])
                                .inc();
                            let out = core.login_failed(&format!("[SYS/TEMP] {why}"));
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
            _ = shared.cancel.cancelled() => {
                let _ = write(&mut stream, SHUTDOWN).await;
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

/// A password login by [`authenticate`], a token by [`bearer::login`].
async fn login_any(
    stream: &mut Stream,
    core: &mut PreAuth,
    login: &Login,
    peer: SocketAddr,
    shared: &Arc<App>,
) -> Result<(User, Arc<Store>, StoreClient), Failed> {
    match login.identity.secret {
        Secret::Password(_) => authenticate(login, peer, shared)
            .await
            .map_err(Failed::Refused),
        Secret::Bearer { .. } => bearer::login(stream, core, login, peer, shared).await,
    }
}

/// Admits the login and logs in to the store's POP3.
async fn authenticate(
    login: &Login,
    peer: SocketAddr,
    shared: &Arc<App>,
) -> Result<(User, Arc<Store>, StoreClient), Refusal> {
    let user = &login.identity.user;
    let password = match &login.identity.secret {
        Secret::Password(pw) => pw.as_slice(),
        // Tokens go by bearer::login.
        Secret::Bearer { .. } => return Err(Refusal::AuthFailed),
    };
    let (found, target) = shared.admit(user, Some(password), peer).await?;
    if target.cfg.pop3.is_none() {
        tracing::error!(user = %user, client = %peer, backend = target.name(), "the store has no pop3 endpoint");
        return Err(Refusal::Unavailable(
            "Mailbox temporarily unavailable, try again.",
        ));
    }
    let started = Instant::now();
    let creds = target.session_credentials(user, password);
    let result = StoreClient::connect(&target, &creds, Some(peer)).await;
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
        Ok(logged_in) => Ok((found, target, logged_in)),
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => {
            tracing::debug!(user = %user, client = %peer, backend = target.name(), reply = %e.error, "store refused POP3 login");
            Err(Refusal::AuthFailed)
        }
        Err(e) => {
            tracing::warn!(user = %user, client = %peer, backend = target.name(), error = %e, "store POP3 unavailable");
            Err(Refusal::Unavailable(
                "Mailbox temporarily unavailable, try again.",
            ))
        }
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
        let st = states.load(&login, "INBOX");
        states.close(&login);
        st
    })
    .await;
    let st = match loaded {
        Ok(Ok(st)) if !st.map.is_empty() => st,
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
        Ok(folder) => Some(UidlMap::from_folder_map(&folder, &from, &to)),
        Err(e) => {
            tracing::warn!(user = %user, backend = target.name(), error = %e, "UID map unusable; the store's own UIDLs are shown");
            None
        }
    }
}

async fn relay_session(h: Handoff, peer: SocketAddr, shared: &Arc<App>) {
    let Handoff {
        mut client,
        backend: logged_in,
        target,
        user,
        pipelined,
        started,
        map,
    } = h;
    let (mut backend_stream, leftover) = logged_in.into_relay();
    let name = target.name().to_string();
    let registration = shared
        .sessions
        .register(&user.login, &name, peer, &shared.cancel);
    let gauge = METRICS.pop3_sessions.with_label_values(&[&name]);
    gauge.inc();
    let kept = map.as_ref().map_or(0, UidlMap::len);
    tracing::info!(user = %user.login, client = %peer, backend = %name, tls = client.is_tls(), uidls_kept = kept, "POP3 session start");
    let idle_timeout = shared
        .config
        .pop3
        .as_ref()
        .map_or(std::time::Duration::from_secs(1800), |c| c.idle_timeout);
    let to_backend = METRICS.pop3_bytes.with_label_values(&[&name, "to_backend"]);
    let to_client = METRICS.pop3_bytes.with_label_values(&[&name, "to_client"]);
    let (end, totals) = match map {
        Some(map) => {
            let mut rewriter = Rewriter::new(map);
            // Handoff forwards: pipelined commands go to the store (and are
            // tracked), the store's early bytes are rewritten to the client.
            rewriter.from_client(&pipelined);
            let mut early = Vec::new();
            rewriter.from_store(&leftover, &mut early);
            if (!pipelined.is_empty() && !write(&mut backend_stream, &pipelined).await)
                || (!early.is_empty() && !write(&mut client, &early).await)
            {
                (End::Closed, relay::Totals::default())
            } else {
                let opts = relay::Options {
                    idle_timeout,
                    to_backend,
                    to_client,
                };
                let token = &registration.token;
                relay::relay_with(
                    &mut client,
                    &mut backend_stream,
                    Some(&mut rewriter),
                    opts,
                    token,
                )
                .await
            }
        }
        None => {
            if (!pipelined.is_empty() && !write(&mut backend_stream, &pipelined).await)
                || (!leftover.is_empty() && !write(&mut client, &leftover).await)
            {
                (End::Closed, relay::Totals::default())
            } else {
                let opts = relay::Options {
                    idle_timeout,
                    to_backend,
                    to_client,
                };
                relay::relay(&mut client, &mut backend_stream, opts, &registration.token).await
            }
        }
    };
    let reason = match end {
        End::Closed => "closed",
        End::Idle => {
            let _ = write(&mut client, b"-ERR Idle for too long.\r\n").await;
            "idle"
        }
        End::Cancelled => {
            let text: &[u8] = if shared.cancel.is_cancelled() {
                SHUTDOWN
            } else {
                b"-ERR [SYS/TEMP] Your mailbox moved; please reconnect.\r\n"
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
        to_backend = totals.to_backend + pipelined.len() as u64,
        to_client = totals.to_client + leftover.len() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        end = reason,
        "POP3 session end"
    );
}
