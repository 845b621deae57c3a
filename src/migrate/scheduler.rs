//! Migrations run by `mailshift serve`: lazy (a user of the migrating set logs
//! in), scheduled (batches in time windows), on request (admin API), and the
//! post-cutover sweep. Several instances share the work through the LDAP lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{Datelike, Local, Timelike};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cutover::{Mover, Resolved, STOPPED};
use super::Quiet;
use crate::config::{Config, MigrationConfig, MigrationMode};
use crate::directory::ldap::{user_filter, LdapDirectory};
use crate::directory::schema::{STATE, UPDATED};
use crate::metrics::METRICS;

/// States counted for `mailshift_migration_users{state}`.
/// How long after a cutover every folder (not only INBOX) is swept.
const SWEEP_ALL_FOLDERS_FOR: Duration = Duration::from_secs(15 * 60);

const STATES: [&str; 6] = [
    "queued",
    "syncing",
    "cutover",
    "done",
    "failed",
    "rolled-back",
];

/// First wait after a temporary failure (directory or store down, dropped
/// connection); doubles with each failure in a row.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between retries of a temporary failure.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// A permanent failure (the same failure twice, bad credentials, a config
/// problem) waits this long, or for a config reload (SIGHUP), before another
/// try: retrying it every minute only repeats the error.
const RETRY_PERMANENT: Duration = Duration::from_secs(3600);
/// How often the scheduler looks at the clock, the retry list and the windows.
const TICK: Duration = Duration::from_secs(1);

/// When a user that did not migrate is tried again.
#[derive(Debug, Clone)]
struct Retry {
    due: Instant,
    failures: u32,
    last: String,
    permanent: bool,
}

/// Back-off for the `n`th temporary failure in a row (n ≥ 1).
fn backoff(n: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// Whether trying again soon may succeed: the directory or a store was
/// unreachable or busy. A refused folder, bad credentials or a config problem
/// fail the same way next time.
fn temporary(e: &super::Error) -> bool {
    matches!(e, super::Error::Directory(_)) || e.is_temporary()
}

/// Runs migrations inside the proxy.
pub struct Scheduler {
    mover: Arc<Mover>,
    ldap: Arc<LdapDirectory>,
    /// Reloaded on SIGHUP (windows, filters, mode, sweep); the stores and the
    /// state directory stay those of the start.
    cfg: RwLock<MigrationConfig>,
    from_host: String,
    running: Mutex<HashMap<String, Instant>>,
    retry: Mutex<HashMap<String, Retry>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Every migration and hold resolution, waited for at shutdown.
    tracker: TaskTracker,
    stop: CancellationToken,
    relist: AtomicBool,
}

impl Scheduler {
    /// A scheduler when the config has `[migration]` and an LDAP directory.
    pub fn new(cfg: &Config, ldap: Arc<LdapDirectory>) -> Result<Arc<Scheduler>, super::Error> {
        let m = cfg
            .migration
            .clone()
            .ok_or_else(|| super::Error::Unsupported("no [migration]".into()))?;
        let from_host = cfg
            .backend_named(&m.from)
            .and_then(|b| b.mailhosts.first().cloned())
            .unwrap_or_default();
        let stop = CancellationToken::new();
        let mut mover = Mover::from_config(cfg, Arc::clone(&ldap))?;
        mover.stop_on(stop.clone(), cfg.shutdown_grace);
        Ok(Arc::new(Scheduler {
            mover: Arc::new(mover),
            ldap,
            slots: Arc::new(tokio::sync::Semaphore::new(m.concurrency.max(1) as usize)),
            cfg: RwLock::new(m),
            from_host,
            running: Mutex::new(HashMap::new()),
            retry: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            stop,
            relist: AtomicBool::new(false),
        }))
    }

    fn cfg(&self) -> MigrationConfig {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the reloadable part of a new config: windows, users_filter,
    /// mode, sweep settings. Permanent failures get another chance at once,
    /// since the change may be what fixes them.
    pub fn reload(&self, cfg: &Config) {
        if let Some(m) = &cfg.migration {
            *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = m.clone();
        }
        self.retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, r| !r.permanent);
        self.relist.store(true, Ordering::Relaxed);
    }

    /// Shutdown: presyncs stop, holds are finished or undone within the grace;
    /// resolves once every migration task has ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn running(&self, user: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&user.to_lowercase())
    }

    /// Records how a user's attempt ended and when to try again.
    fn outcome(&self, user: &str, result: &Result<(), super::Error>) {
        let mut retry = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        let err = match result {
            Ok(()) => {
                retry.remove(user);
                return;
            }
            Err(e) => e,
        };
        let text = err.to_string();
        if text == STOPPED {
            return;
        }
        let prev = retry.get(user).cloned();
        let (delay, permanent, failures) = match err {
            // Another instance or an admin holds the user: look again after
            // its lease could have run out.
            super::Error::Conflict(_) => (self.mover_lease() / 2, false, 0),
            e if temporary(e) => {
                let n = prev.as_ref().map_or(0, |p| p.failures) + 1;
                (backoff(n), false, n)
            }
            // An incomplete pass may be a dropped connection: once more soon;
            // failing the same way again makes it permanent.
            super::Error::Incomplete(_) if prev.as_ref().is_none_or(|p| p.last != text) => {
                let n = prev.as_ref().map_or(0, |p| p.failures) + 1;
                (backoff(n), false, n)
            }
            _ => (
                RETRY_PERMANENT,
                true,
                prev.as_ref().map_or(0, |p| p.failures) + 1,
            ),
        };
        match (err, permanent) {
            (super::Error::Conflict(why), _) => {
                tracing::info!(user, %why, "not migrating now")
            }
            (_, true) => tracing::error!(
                user, error = %text, retry_in_s = delay.as_secs(),
                "migration failed permanently (recorded in mailshiftMigrationError); not retried before the delay or a config reload"
            ),
            (_, false) => tracing::warn!(
                user, error = %text, retry_in_s = delay.as_secs(),
                "migration failed; the user stays on the old store, retrying"
            ),
        }
        retry.insert(
            user.to_string(),
            Retry {
                due: Instant::now() + delay,
                failures,
                last: text,
                permanent,
            },
        );
    }

    fn mover_lease(&self) -> Duration {
        self.cfg().lease.max(Duration::from_secs(2))
    }

    /// Starts migrating `user` now (admin API, lazy login); `false` when this
    /// instance is already on it.
    pub fn start(self: &Arc<Self>, user: &str, password: Option<Vec<u8>>) -> bool {
        let key = user.to_lowercase();
        if self.stop.is_cancelled() {
            return false;
        }
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&key) {
                return false;
            }
            running.insert(key.clone(), Instant::now());
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            let slot = tokio::select! {
                s = me.slots.clone().acquire_owned() => s.ok(),
                _ = me.stop.cancelled() => None,
            };
            if slot.is_some() {
                let result = me
                    .mover
                    .cutover(&key, password.as_deref(), Arc::new(Quiet))
                    .await;
                if let Ok(r) = &result {
                    tracing::info!(user = %key, mailhost = %r.mailhost, hold_ms = (r.hold_seconds * 1000.0) as u64, "migrated and cut over")
                }
                me.outcome(&key, &result.map(|_| ()));
            }
            me.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        true
    }

    /// The mover this instance's migrations run on (its engines and events).
    pub fn mover(&self) -> &Arc<Mover> {
        &self.mover
    }

    /// Runs an admin's action on `user` (rollback, a presync pass) as one of
    /// this instance's moves: one at a time per user, waited for at shutdown.
    /// `false` when this instance is already working on the user.
    pub fn run_action<F, Fut>(self: &Arc<Self>, user: &str, action: F) -> bool
    where
        F: FnOnce(Arc<Mover>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let key = user.to_lowercase();
        if self.stop.is_cancelled() {
            return false;
        }
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&key) {
                return false;
            }
            running.insert(key.clone(), Instant::now());
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            action(Arc::clone(&me.mover)).await;
            me.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        true
    }

    /// Whether the user waits for a retry that is not due yet.
    fn waiting(&self, user: &str) -> bool {
        self.retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user.to_lowercase())
            .is_some_and(|r| r.due > Instant::now())
    }

    /// Whether a retry is due for a user not running now.
    fn retry_due(&self) -> bool {
        let now = Instant::now();
        let due: Vec<String> = self
            .retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(u, _)| u.clone())
            .collect();
        due.iter().any(|u| !self.running(u))
    }

    /// The migrating set, restricted to users still on the old store and not
    /// finished. `extra` narrows it further (one login for lazy mode).
    fn pending_filter(&self, extra: Option<&str>) -> String {
        let set = self
            .cfg()
            .users_filter
            .unwrap_or_else(|| format!("({STATE}=queued)"));
        format!(
            "(&{set}({}={})(!({STATE}=done))(!({STATE}=rolled-back)){})",
            self.ldap.config().mailhost_attribute,
            ldap3::ldap_escape(&self.from_host),
            extra.unwrap_or("")
        )
    }

    /// Lazy mode: called after a successful login through the proxy.
    pub fn on_login(self: &Arc<Self>, login: &str, password: &[u8]) {
        if self.cfg().mode != MigrationMode::Lazy || self.waiting(login) {
            return;
        }
        if self.running(login) {
            return;
        }
        let me = Arc::clone(self);
        let login = login.to_string();
        // Held in memory only, for a store without a master user.
        let password = password.to_vec();
        self.tracker.spawn(async move {
            let one = user_filter(&me.ldap.config().user_filter, &login);
            match me.ldap.logins(&me.pending_filter(Some(&one))).await {
                Ok(found) if !found.is_empty() => {
                    let pw = me
                        .mover
                        .forward
                        .from
                        .cfg
                        .master
                        .is_none()
                        .then_some(password);
                    if me.start(&login, pw) {
                        tracing::info!(user = %login, "lazy migration started by login");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(user = %login, error = %e, "lazy membership check failed")
                }
            }
        });
    }

    /// Lazy mode, a login with a bearer token (OAuth): there is no password
    /// to migrate with, so only a source store with a master user starts one.
    pub fn on_token_login(self: &Arc<Self>, login: &str) {
        if self.mover.forward.from.cfg.master.is_some() {
            self.on_login(login, b"");
        }
    }

    /// Resolves holds left behind by a stopped instance: every hold whose
    /// lease expired, and at start also those this instance owned (it was
    /// restarted, so nothing of it is still working on them).
    async fn resolve_holds(self: &Arc<Self>, at_start: bool) {
        let holds = match self.mover.holds(self.holds_every()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "looking for holds left behind failed");
                return;
            }
        };
        for (user, owner, expired) in holds {
            let key = user.to_lowercase();
            let ours = owner == self.mover.instance();
            if !(expired || (at_start && ours)) {
                continue;
            }
            {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                if running.contains_key(&key) {
                    continue;
                }
                running.insert(key.clone(), Instant::now());
            }
            tracing::warn!(user = %key, owner = %owner, "hold left behind by a stopped instance; resolving it");
            let me = Arc::clone(self);
            self.tracker.spawn(async move {
                match me.mover.resolve_hold(&key).await {
                    Ok(Resolved::Finished(host)) => {
                        tracing::info!(user = %key, mailhost = %host, "left-behind hold resolved: cutover finished")
                    }
                    Ok(Resolved::Undone(why)) => {
                        tracing::warn!(user = %key, %why, "left-behind hold resolved: hold undone, the user stays where it was")
                    }
                    Err(e) => {
                        tracing::info!(user = %key, error = %e, "left-behind hold not resolved by this instance")
                    }
                }
                me.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            });
        }
    }

    fn in_window(&self) -> bool {
        let windows = self.cfg().windows;
        if windows.is_empty() {
            return true;
        }
        let now = Local::now();
        let (day, minute) = (
            now.weekday().num_days_from_monday(),
            now.hour() * 60 + now.minute(),
        );
        windows.iter().any(|w| w.contains(day, minute))
    }

    async fn count_states(&self) {
        for state in STATES {
            if let Ok(users) = self.ldap.logins(&format!("({STATE}={state})")).await {
                METRICS
                    .migration_users
                    .with_label_values(&[state])
                    .set(users.len() as i64);
            }
        }
    }

    async fn sweep(&self) {
        let stamp = |ago: Duration| {
            let t = Local::now() - chrono::Duration::from_std(ago).unwrap_or_default();
            t.with_timezone(&chrono::Utc)
                .format("%Y%m%d%H%M%SZ")
                .to_string()
        };
        let since = stamp(self.cfg().sweep_for);
        let filter = format!("(&({STATE}=done)({UPDATED}>={since}))");
        let Ok(users) = self.ldap.logins(&filter).await else {
            return;
        };
        // Right after a cutover every folder is swept, not only INBOX: a
        // session another proxy had not closed yet (its directory follower
        // reconnecting) may have appended anywhere on the old store.
        let recent = format!(
            "(&({STATE}=done)({UPDATED}>={}))",
            stamp(SWEEP_ALL_FOLDERS_FOR)
        );
        let recent: std::collections::HashSet<String> = self
            .ldap
            .logins(&recent)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|u| u.to_lowercase())
            .collect();
        for user in users {
            let all = recent.contains(&user.to_lowercase());
            match self.mover.forward.sweep(&user, all).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(user = %user, messages = n, all_folders = all, "swept mail that reached the old store after cutover")
                }
                Err(e) => tracing::warn!(user = %user, error = %e, "sweep failed; will retry"),
            }
        }
    }

    /// The loop: scheduled batches from the moment a window is open, retries
    /// as they fall due, holds left behind, the sweep, the state gauge.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        self.resolve_holds(true).await;
        let now = Instant::now();
        let mut was_inside = false;
        let mut next_list = now;
        let mut list_failures = 0u32;
        let mut next_holds = now + self.holds_every();
        let mut next_sweep = now + self.sweep_every();
        loop {
            let now = Instant::now();
            if self.cfg().mode == MigrationMode::Scheduled {
                let inside = self.in_window();
                let relist = self.relist.swap(false, Ordering::Relaxed);
                let due = now >= next_list || (list_failures == 0 && self.retry_due());
                if inside && (!was_inside || relist || due) {
                    match self.ldap.logins(&self.pending_filter(None)).await {
                        Ok(users) => {
                            list_failures = 0;
                            next_list = now + self.cfg().sweep_interval.max(TICK);
                            let pending: std::collections::HashSet<String> =
                                users.iter().map(|u| u.to_lowercase()).collect();
                            // Users gone from the set (migrated elsewhere,
                            // removed) need no retry.
                            self.retry
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .retain(|u, _| pending.contains(u));
                            for user in users {
                                if !self.waiting(&user) {
                                    self.start(&user, None);
                                }
                            }
                        }
                        Err(e) => {
                            list_failures += 1;
                            let wait = backoff(list_failures);
                            next_list = now + wait;
                            tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "scheduled: listing the migrating set failed");
                        }
                    }
                }
                was_inside = inside;
            }
            if now >= next_holds {
                self.resolve_holds(false).await;
                next_holds = now + self.holds_every();
            }
            if now >= next_sweep {
                self.sweep().await;
                self.count_states().await;
                next_sweep = Instant::now() + self.sweep_every();
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// A third of the lease: a hold left behind is resolved well within it.
    fn holds_every(&self) -> Duration {
        (self.cfg().lease / 3).max(TICK)
    }

    fn sweep_every(&self) -> Duration {
        self.cfg()
            .sweep_interval
            .clamp(Duration::from_millis(500), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_failures_back_off_from_seconds_to_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), RETRY_MAX);
        assert_eq!(backoff(1000), RETRY_MAX);
    }

    #[test]
    fn directory_trouble_is_temporary_a_refused_folder_is_not() {
        assert!(temporary(&super::super::Error::Directory("down".into())));
        assert!(!temporary(&super::super::Error::Unsupported("x".into())));
        assert!(!temporary(&super::super::Error::Credentials("old".into())));
    }
}
