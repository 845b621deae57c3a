//! `mailshift serve`: builds the shared state, binds the listeners, follows the
//! directory, kicks moved users, reloads the certificate on SIGHUP, and shuts
//! down on SIGTERM / Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::{Change, Directory, UserStatus};
use crate::imap::backend::Backend;
use crate::imap::session::Listener;
use crate::imap::{self, Shared};
use crate::metrics::METRICS;
use crate::migrate::scheduler::Scheduler;
use crate::route::Router;
use crate::sessions::Sessions;
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
    #[error("nothing to serve: set imap.listen, imap.listen_tls and/or [smtp] listen")]
    NothingToServe,
}

async fn bind(key: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { key, addr, source })
}

/// Builds the front end's shared state from a config.
pub fn shared(config: Arc<Config>, cancel: CancellationToken) -> Result<Arc<Shared>, Error> {
    let directory = Directory::new(&config.directory)?;
    let mut backends = Vec::new();
    for b in &config.backends {
        backends.push((b.clone(), Arc::new(Backend::new(b.clone())?)));
    }
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(ServerTls::load(t)?)),
        None => None,
    };
    let scheduler = match (&config.migration, directory.ldap()) {
        (Some(_), Some(ldap)) => Some(Scheduler::new(&config, Arc::clone(ldap))?),
        (Some(_), None) => {
            tracing::warn!(
                "[migration] needs directory.kind = \"ldap\" to run migrations in serve"
            );
            None
        }
        _ => None,
    };
    let hold_wait = config
        .migration
        .as_ref()
        .map(|m| m.hold_wait)
        .unwrap_or(Duration::from_secs(20));
    Ok(Arc::new(Shared {
        directory,
        router: Router::new(backends),
        tls,
        sessions: Arc::new(Sessions::default()),
        throttle: imap::throttle::Throttle::new(
            config.imap.auth_failure_delay,
            config.imap.auth_failure_delay_max,
        ),
        hold_wait,
        cancel,
        scheduler,
        config,
    }))
}

/// Closes sessions whose user moved: on a `mailHost` change, every session not
/// on the new route; on hold, deletion or deactivation, all of them.
async fn kick_moved(shared: Arc<Shared>) {
    let mut changes = shared.directory.subscribe();
    loop {
        let change: Change = tokio::select! {
            _ = shared.cancel.cancelled() => return,
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

/// Runs the server until `cancel` or a termination signal.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    let config = Arc::new(config);
    let shared = shared(Arc::clone(&config), cancel.clone())?;
    let smtp = crate::smtp::Shared::new(
        Arc::clone(&config),
        Arc::clone(&shared.directory),
        shared.tls.clone(),
        cancel.clone(),
    )?;
    let mut tasks = Vec::new();
    let mut serving = false;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::info!(
        max_connections = imap::connection_ceiling(),
        fd_limit = imap::fd_limit().unwrap_or(0),
        "IMAP connection ceiling (two sockets per session)"
    );
    if let Some(addr) = config.imap.listen {
        let l = bind("imap.listen", addr).await?;
        tracing::info!(%addr, "IMAP listening (STARTTLS {})", if shared.tls.is_some() { "offered" } else { "off" });
        tasks.push(tokio::spawn(imap::accept_loop(
            l,
            Listener::Plain,
            Arc::clone(&shared),
            Arc::clone(&open),
        )));
        serving = true;
    }
    if let Some(addr) = config.imap.listen_tls {
        let l = bind("imap.listen_tls", addr).await?;
        tracing::info!(%addr, "IMAPS listening");
        tasks.push(tokio::spawn(imap::accept_loop(
            l,
            Listener::Tls,
            Arc::clone(&shared),
            Arc::clone(&open),
        )));
        serving = true;
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
        tasks.push(tokio::spawn(crate::smtp::accept_loop(l, Arc::clone(smtp))));
        tasks.push(tokio::spawn(crate::smtp::retry::run(Arc::clone(smtp))));
        serving = true;
    }
    if !serving {
        return Err(Error::NothingToServe);
    }
    if let Some(admin) = &config.admin {
        let l = bind("admin.listen", admin.listen).await?;
        tracing::info!(addr = %admin.listen, "admin HTTP listening");
        tasks.push(tokio::spawn(crate::admin::serve(l, Arc::clone(&shared))));
    }
    if config.imap.kick_on_move {
        tasks.push(tokio::spawn(kick_moved(Arc::clone(&shared))));
    }
    shared.directory.spawn_follow(cancel.clone());
    if let Some(s) = &shared.scheduler {
        tasks.push(tokio::spawn(Arc::clone(s).run(cancel.clone())));
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
                match &shared.tls {
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!("certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "certificate reload failed; keeping the old one"),
                    },
                    None => tracing::info!("SIGHUP: no [tls] to reload"),
                }
            }
        }
    }
    tracing::info!(sessions = shared.sessions.total(), "shutting down");
    cancel.cancel();
    // Give sessions a moment to say BYE.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}
