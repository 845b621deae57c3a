//! `mailshift serve`: builds the shared state, binds the listeners, follows the
//! directory, kicks moved users, reloads the config on SIGHUP, and drains on
//! SIGTERM / Ctrl-C within `shutdown_grace`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::sessions::Sessions;
use crate::app::{App, Current};
use crate::config::Config;
use crate::directory::{Change, Directory, UserStatus};
use crate::imap;
use crate::imap::session::Listener;
use crate::metrics::METRICS;
use crate::migrate::scheduler::Scheduler;
use crate::route::Router;
use crate::tls::ServerTls;

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory could not be set up.
    #[error(transparent)]
    Directory(#[from] crate::directory::Error),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// A listener could not be bound.
    #[error("{key} {addr}: {source}")]
    Bind {
        /// The config key of the listener.
        key: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The migration scheduler could not be set up.
    #[error("[migration]: {0}")]
    Migration(#[from] crate::migrate::Error),
    /// The SMTP front end could not be set up.
    #[error(transparent)]
    Smtp(#[from] crate::smtp::driver::Error),
    /// No listener is configured.
    #[error("nothing to serve: set imap.listen, imap.listen_tls, [smtp] listen and/or [submission] listen")]
    NothingToServe,
}

async fn bind(key: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { key, addr, source })
}

/// Builds the front end's shared state from a config.
pub fn shared(config: Arc<Config>, cancel: CancellationToken) -> Result<Arc<App>, Error> {
    build(config, cancel, None)
}

/// Builds one generation of the front end; a reload (`prev`) keeps the open
/// sessions' registry and the migration scheduler, which own live work.
fn build(
    config: Arc<Config>,
    cancel: CancellationToken,
    prev: Option<&App>,
) -> Result<Arc<App>, Error> {
    let directory = Directory::new(&config.directory)?;
    let mut backends = Vec::new();
    for b in &config.backends {
        backends.push((b.clone(), Arc::new(crate::store::Store::new(b.clone())?)));
    }
    let same_files = |a: &crate::config::TlsConfig, b: &crate::config::TlsConfig| {
        a.cert == b.cert && a.key == b.key
    };
    let tls = match (&config.tls, prev) {
        // Same files: re-read them in place, so the SMTP front end, which
        // shares this certificate from the start, presents the new one too.
        (Some(t), Some(p))
            if p.config.tls.as_ref().is_some_and(|old| same_files(old, t)) && p.tls.is_some() =>
        {
            let current = p.tls.clone();
            if let Some(c) = &current {
                c.reload()?;
            }
            current
        }
        (Some(t), _) => Some(Arc::new(ServerTls::load(t)?)),
        (None, _) => None,
    };
    let scheduler = match prev {
        Some(p) => {
            if let Some(s) = &p.scheduler {
                s.reload(&config);
            } else if config.migration.is_some() {
                tracing::warn!(
                    "[migration] added by a reload: migrations in serve start after a restart"
                );
            }
            p.scheduler.clone()
        }
        None => match (&config.migration, directory.ldap()) {
            (Some(_), Some(ldap)) => Some(Scheduler::new(&config, Arc::clone(ldap))?),
            (Some(_), None) => {
                tracing::warn!(
                    "[migration] needs directory.kind = \"ldap\" to run migrations in serve"
                );
                None
            }
            _ => None,
        },
    };
    let hold_wait = config
        .migration
        .as_ref()
        .map(|m| m.hold_wait)
        .unwrap_or(Duration::from_secs(20));
    Ok(Arc::new(App {
        directory,
        router: Router::new(backends),
        tls,
        sessions: prev.map_or_else(
            || Arc::new(Sessions::default()),
            |p| Arc::clone(&p.sessions),
        ),
        throttle: crate::throttle::Throttle::new(
            config.imap.auth_failure_delay,
            config.imap.auth_failure_delay_max,
        ),
        hold_wait,
        cancel,
        scheduler,
        maps: Arc::new(crate::continuity::Maps::new(
            config.migration.as_ref().is_none_or(|m| m.keep_uids),
        )),
        config,
    }))
}

/// Closes sessions whose user moved: on a `mailHost` change, every session not
/// on the new route; on hold, deletion or deactivation, all of them.
async fn kick_moved(shared: Arc<App>, generation: CancellationToken) {
    let mut changes = shared.directory.subscribe();
    loop {
        let change: Change = tokio::select! {
            _ = generation.cancelled() => return,
            c = changes.recv() => match c {
                Ok(c) => c,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "change stream lagged; some kicks may wait for reconnects");
                    continue;
                }
                Err(_) => return,
            },
        };
        let keep = match &change.user {
            Some(u) if u.status == UserStatus::Active => {
                shared.router.route(u).ok().map(|b| b.name().to_string())
            }
            _ => None,
        };
        let n = shared.sessions.kick(&change.login, keep.as_deref());
        if n > 0 {
            tracing::info!(
                user = %change.login,
                sessions = n,
                backend = keep.as_deref().unwrap_or("-"),
                "route changed; open sessions closed"
            );
        }
    }
}

/// Starts what follows one generation's directory: the change stream and the
/// kicks it drives. Cancelling the returned token stops both.
fn follow(shared: &Arc<App>, tracker: &TaskTracker) -> CancellationToken {
    let generation = shared.cancel.child_token();
    shared.directory.spawn_follow(generation.clone());
    tracker
        .spawn(Arc::clone(&shared.maps).follow(shared.directory.subscribe(), generation.clone()));
    if shared.config.imap.kick_on_move {
        tracker.spawn(kick_moved(Arc::clone(shared), generation.clone()));
    }
    if let Some(s) = &shared.scheduler {
        tracker.spawn(learn_own_moves(
            Arc::clone(shared),
            s.mover().subscribe_changes(),
            generation.clone(),
        ));
    }
    generation
}

/// This instance's own holds, flips and rollbacks reach its directory cache
/// (and the kicks) at once, as a directory that reports changes (syncprov)
/// would deliver them: without one, the cache would route the user to the old
/// store for up to its TTL after the flip, and leave sessions open on the
/// old store through the hold.
async fn learn_own_moves(
    shared: Arc<App>,
    mut moved: tokio::sync::broadcast::Receiver<String>,
    generation: CancellationToken,
) {
    loop {
        let login = tokio::select! {
            _ = generation.cancelled() => return,
            m = moved.recv() => match m {
                Ok(login) => login,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Missed some: forget everything rather than serve a stale route.
                    shared.directory.flush_cache();
                    continue;
                }
                Err(_) => return,
            },
        };
        // A shutdown does not wait for the directory.
        let fresh = tokio::select! {
            _ = generation.cancelled() => return,
            f = shared.directory.lookup_fresh(&login) => f,
        };
        match fresh {
            Ok(user) => shared.directory.apply_change(crate::directory::Change {
                login: crate::directory::canonical(&login),
                user,
            }),
            Err(e) => {
                tracing::warn!(user = %login, error = %e, "re-reading a moved user failed; dropping the cache");
                shared.directory.flush_cache();
            }
        }
    }
}

/// Why a reload was refused (the old config stays).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Config(#[from] crate::config::Error),
    #[error("{0}")]
    Build(#[from] Error),
}

/// SIGHUP: reads the config file again and swaps in a new generation of the
/// front end (directory, backends and routing, TLS, limits), and the
/// scheduler's windows, filters and mode. Open sessions keep the generation
/// they started with; nothing is dropped. Inbound SMTP routes new recipients
/// by the new directory and backends. Listener addresses, the `[smtp]` table,
/// `[admin]` and the migration stores take effect at the next start.
fn reload(
    path: &std::path::Path,
    current: &Current,
    generation: &mut CancellationToken,
    tracker: &TaskTracker,
    smtp: Option<&crate::smtp::Shared>,
) -> Result<(), Refused> {
    let config = Config::load(path)?;
    let old = Arc::clone(&current.read().unwrap_or_else(|p| p.into_inner()));
    let restart_only = [
        ("imap.listen", old.config.imap.listen != config.imap.listen),
        (
            "imap.listen_tls",
            old.config.imap.listen_tls != config.imap.listen_tls,
        ),
        (
            "smtp",
            format!("{:?}", old.config.smtp) != format!("{:?}", config.smtp),
        ),
        (
            "pop3 listeners",
            old.config.pop3.as_ref().map(|c| (c.listen, c.listen_tls))
                != config.pop3.as_ref().map(|c| (c.listen, c.listen_tls)),
        ),
        (
            "admin",
            format!("{:?}", old.config.admin) != format!("{:?}", config.admin),
        ),
        (
            "submission.listen",
            old.config
                .submission
                .as_ref()
                .map(|s| (s.listen, s.listen_tls))
                != config.submission.as_ref().map(|s| (s.listen, s.listen_tls)),
        ),
        (
            "managesieve",
            format!("{:?}", old.config.managesieve) != format!("{:?}", config.managesieve),
        ),
    ];
    for (key, changed) in restart_only {
        if changed {
            tracing::warn!(key, "changed; takes effect at the next start");
        }
    }
    let config = Arc::new(config);
    let fresh = build(Arc::clone(&config), old.cancel.clone(), Some(&old))?;
    // Inbound SMTP routes by the new stores and directory too (its
    // listener, limits and queue stay as they started).
    if let Some(smtp) = smtp {
        smtp.reroute(Arc::clone(&fresh));
    }
    *current.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
    if fresh.tls.is_some() {
        tracing::info!("certificate reloaded");
    }
    generation.cancel();
    *generation = follow(&fresh, tracker);
    Ok(())
}

/// Runs the server until `cancel` or a termination signal. Without a config
/// path, SIGHUP reloads only the certificate.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    run_from(config, None, cancel).await
}

/// Like [`run`]; SIGHUP reloads the whole config from `path`.
pub async fn run_from(
    config: Config,
    path: Option<std::path::PathBuf>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let config = Arc::new(config);
    let grace = config.shutdown_grace;
    let shared = shared(Arc::clone(&config), cancel.clone())?;
    let current: Arc<Current> = Arc::new(std::sync::RwLock::new(Arc::clone(&shared)));
    let smtp =
        crate::smtp::Shared::new(Arc::clone(&config), Arc::clone(&shared), cancel.clone()).await?;
    // Every task, sessions included, so a shutdown waits for them.
    let tasks = TaskTracker::new();
    let mut serving = false;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::info!(
        max_connections = crate::frontend::connection_ceiling(),
        fd_limit = crate::frontend::fd_limit().unwrap_or(0),
        "connection ceiling, every front end together (two sockets per session)"
    );
    if let Some(addr) = config.imap.listen {
        let l = bind("imap.listen", addr).await?;
        tracing::info!(%addr, "IMAP listening (STARTTLS {})", if shared.tls.is_some() { "offered" } else { "off" });
        tasks.spawn(imap::accept_loop(
            l,
            Listener::Plain,
            Arc::clone(&current),
            Arc::clone(&open),
            tasks.clone(),
        ));
        serving = true;
    }
    if let Some(addr) = config.imap.listen_tls {
        let l = bind("imap.listen_tls", addr).await?;
        tracing::info!(%addr, "IMAPS listening");
        tasks.spawn(imap::accept_loop(
            l,
            Listener::Tls,
            Arc::clone(&current),
            Arc::clone(&open),
            tasks.clone(),
        ));
        serving = true;
    }
    if let Some(pop3) = &config.pop3 {
        use crate::pop3::session::Listener as Pop3Listener;
        for (key, addr, kind) in [
            ("pop3.listen", pop3.listen, Pop3Listener::Plain),
            ("pop3.listen_tls", pop3.listen_tls, Pop3Listener::Tls),
        ] {
            let Some(addr) = addr else { continue };
            let l = bind(key, addr).await?;
            tracing::info!(%addr, ?kind, "POP3 listening");
            tasks.spawn(crate::pop3::accept_loop(
                l,
                kind,
                Arc::clone(&current),
                Arc::clone(&open),
                tasks.clone(),
            ));
            serving = true;
        }
    }
    if let Some(ms) = &config.managesieve {
        for (key, addr, kind) in [
            (
                "managesieve.listen",
                ms.listen,
                crate::managesieve::session::Listener::Plain,
            ),
            (
                "managesieve.listen_tls",
                ms.listen_tls,
                crate::managesieve::session::Listener::Tls,
            ),
        ] {
            let Some(addr) = addr else { continue };
            let l = bind(key, addr).await?;
            tracing::info!(%addr, ?kind, "ManageSieve listening");
            tasks.spawn(crate::managesieve::accept_loop(
                l,
                kind,
                Arc::clone(&current),
                Arc::clone(&open),
                tasks.clone(),
            ));
            serving = true;
        }
    }
    if let Some(smtp) = &smtp {
        let addr = smtp.smtp.listen;
        let l = bind("smtp.listen", addr).await?;
        tracing::info!(
            %addr,
            queued = smtp.queue.len(),
            "SMTP listening (STARTTLS {})",
            if smtp.tls.is_some() { "offered" } else { "off" }
        );
        tasks.spawn(crate::smtp::accept_loop(
            l,
            Arc::clone(smtp),
            Arc::clone(&open),
            tasks.clone(),
        ));
        tasks.spawn(crate::smtp::retry::run(Arc::clone(smtp)));
        serving = true;
    }
    if let Some(sub) = &config.submission {
        // Registered now, so /metrics lists them before the first session.
        let _ = &crate::submission::metrics::SUBMISSION.logins;
        for (key, addr, kind) in [
            (
                "submission.listen",
                sub.listen,
                crate::submission::Listener::Plain,
            ),
            (
                "submission.listen_tls",
                sub.listen_tls,
                crate::submission::Listener::Tls,
            ),
        ] {
            let Some(addr) = addr else { continue };
            let l = bind(key, addr).await?;
            tracing::info!(%addr, tls = (kind == crate::submission::Listener::Tls), "submission listening");
            tasks.spawn(crate::submission::accept_loop(
                l,
                kind,
                Arc::clone(&current),
                Arc::clone(&open),
                tasks.clone(),
            ));
            serving = true;
        }
    }
    if !serving {
        return Err(Error::NothingToServe);
    }
    if let Some(admin) = &config.admin {
        let l = bind("admin.listen", admin.listen).await?;
        tracing::info!(addr = %admin.listen, "admin HTTP listening");
        tasks.spawn(crate::admin::serve(l, Arc::clone(&shared)));
    }
    let mut generation = follow(&shared, &tasks);
    if let Some(s) = &shared.scheduler {
        tasks.spawn(Arc::clone(s).run(cancel.clone()));
    }
    // Touch the metrics once so /metrics lists them before the first login.
    let _ = METRICS.directory_sync_up.get();

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                match &path {
                    Some(path) => match reload(path, &current, &mut generation, &tasks, smtp.as_deref()) {
                        Ok(()) => tracing::info!(config = %path.display(), "SIGHUP: config reloaded"),
                        Err(e) => tracing::error!(config = %path.display(), "SIGHUP: new config refused; the old one stays:\n{e}"),
                    },
                    None => match &current.read().unwrap_or_else(|p| p.into_inner()).tls {
                        Some(tls) => match tls.reload() {
                            Ok(()) => tracing::info!("certificate reloaded"),
                            Err(e) => tracing::error!(error = %e, "certificate reload failed; keeping the old one"),
                        },
                        None => tracing::info!("SIGHUP: no [tls] to reload"),
                    },
                }
            }
        }
    }
    let started = tokio::time::Instant::now();
    tracing::info!(
        sessions = shared.sessions.total(),
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections; cutovers finish or undo their hold, SMTP transactions end, IMAP sessions get BYE"
    );
    // Stops accepting, says BYE to relayed sessions, 421 to idle SMTP clients.
    cancel.cancel();
    let scheduler = shared.scheduler.clone();
    tasks.close();
    let drained = tokio::time::timeout(grace, async {
        if let Some(s) = scheduler {
            s.shutdown().await;
        }
        tasks.wait().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "drained; exiting"
        ),
        Err(_) => tracing::warn!(
            tasks = tasks.len(),
            grace_ms = grace.as_millis() as u64,
            "shutdown_grace reached with work still running; exiting"
        ),
    }
    Ok(())
}
