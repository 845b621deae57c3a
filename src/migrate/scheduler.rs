//! Migrations run by `mailshift serve`: lazy (a user of the migrating set logs
//! in), scheduled (batches in time windows), on request (admin API), and the
//! post-cutover sweep. Several instances share the work through the LDAP lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, Local, Timelike};
use tokio_util::sync::CancellationToken;

use super::cutover::{Mover, STATE, UPDATED};
use super::Quiet;
use crate::config::{Config, MigrationConfig, MigrationMode};
use crate::directory::ldap::{user_filter, LdapDirectory};
use crate::metrics::METRICS;

/// States counted for `mailshift_migration_users{state}`.
const STATES: [&str; 6] = [
    "queued",
    "syncing",
    "cutover",
    "done",
    "failed",
    "rolled-back",
];

/// A failed user is not retried by lazy or scheduled mode before this.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Runs migrations inside the proxy.
pub struct Scheduler {
    mover: Arc<Mover>,
    ldap: Arc<LdapDirectory>,
    cfg: MigrationConfig,
    from_host: String,
    running: Mutex<HashMap<String, Instant>>,
    failed: Mutex<HashMap<String, Instant>>,
    slots: Arc<tokio::sync::Semaphore>,
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
        Ok(Arc::new(Scheduler {
            mover: Arc::new(Mover::from_config(cfg, Arc::clone(&ldap))?),
            ldap,
            slots: Arc::new(tokio::sync::Semaphore::new(m.concurrency.max(1) as usize)),
            cfg: m,
            from_host,
            running: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }))
    }

    /// Starts migrating `user` now (admin API, lazy login); `false` when this
    /// instance is already on it.
    pub fn start(self: &Arc<Self>, user: &str, password: Option<Vec<u8>>) -> bool {
        let key = user.to_lowercase();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&key) {
                return false;
            }
            running.insert(key.clone(), Instant::now());
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _slot = me.slots.clone().acquire_owned().await;
            let result = me
                .mover
                .cutover(&key, password.as_deref(), Arc::new(Quiet))
                .await;
            match result {
                Ok(r) => {
                    tracing::info!(user = %key, mailhost = %r.mailhost, hold_ms = (r.hold_seconds * 1000.0) as u64, "migrated and cut over")
                }
                // Another instance holds the user: not a failure, try again later.
                Err(super::Error::Conflict(why)) => {
                    tracing::info!(user = %key, %why, "not migrating now");
                }
                Err(e) => {
                    tracing::warn!(user = %key, error = %e, "migration failed; the user stays on the old store");
                    me.failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone(), Instant::now());
                }
            }
            me.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        true
    }

    fn recently_failed(&self, user: &str) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user.to_lowercase())
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
    }

    /// The migrating set, restricted to users still on the old store and not
    /// finished. `extra` narrows it further (one login for lazy mode).
    fn pending_filter(&self, extra: Option<&str>) -> String {
        let set = self
            .cfg
            .users_filter
            .clone()
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
        if self.cfg.mode != MigrationMode::Lazy || self.recently_failed(login) {
            return;
        }
        if self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&login.to_lowercase())
        {
            return;
        }
        let me = Arc::clone(self);
        let login = login.to_string();
        // Held in memory only, for a store without a master user.
        let password = password.to_vec();
        tokio::spawn(async move {
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

    fn in_window(&self) -> bool {
        if self.cfg.windows.is_empty() {
            return true;
        }
        let now = Local::now();
        let (day, minute) = (
            now.weekday().num_days_from_monday(),
            now.hour() * 60 + now.minute(),
        );
        self.cfg.windows.iter().any(|w| w.contains(day, minute))
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
        let since =
            Local::now() - chrono::Duration::from_std(self.cfg.sweep_for).unwrap_or_default();
        let since = since.with_timezone(&chrono::Utc).format("%Y%m%d%H%M%SZ");
        let filter = format!("(&({STATE}=done)({UPDATED}>={since}))");
        let Ok(users) = self.ldap.logins(&filter).await else {
            return;
        };
        for user in users {
            match self.mover.forward.sweep_inbox(&user).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(user = %user, messages = n, "swept mail that reached the old INBOX after cutover")
                }
                Err(e) => tracing::warn!(user = %user, error = %e, "sweep failed; will retry"),
            }
        }
    }

    /// The loop: scheduled batches in their windows, the sweep, the state gauge.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tick = self
            .cfg
            .sweep_interval
            .clamp(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            if self.cfg.mode == MigrationMode::Scheduled && self.in_window() {
                match self.ldap.logins(&self.pending_filter(None)).await {
                    Ok(users) => {
                        for user in users {
                            if !self.recently_failed(&user) {
                                self.start(&user, None);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduled: listing the migrating set failed")
                    }
                }
            }
            self.sweep().await;
            self.count_states().await;
        }
    }
}
