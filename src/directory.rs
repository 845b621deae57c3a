//! The directory: who a login is, where their mail lives, and whether they may log in.
//!
//! ```text
//!   lookup(login) ──► cache (dashmap, TTL, negative TTL; `hold` never served)
//!                        │ miss
//!                        ▼
//!                  source: LDAP pool │ file map
//!
//!   LDAP RFC 4533 refreshAndPersist ──► cache updates ──► Change events (kick)
//! ```
//!
//! Both sources implement [`UserSource`] and behave the same; LDAP is production,
//! the file map serves small setups, demos and tests.

pub mod cache;
pub mod file;
pub mod ldap;
pub mod schema;
pub mod sync;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::config::{DirectoryConfig, DirectoryKind, PasswordCheck};
use crate::metrics::METRICS;

/// What went wrong asking the directory. Every variant is temporary from the
/// client's point of view: it gets `NO [UNAVAILABLE]`, never "no such user".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory could not be reached or did not answer in time.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// The directory answered with an error.
    #[error("directory error: {0}")]
    Server(String),
    /// An LDAP filter that does not parse (RFC 4515).
    #[error("LDAP filter does not parse: {0}")]
    BadFilter(String),
    /// One login matched more than one entry: the filter is too wide.
    #[error("login {login:?} matches {count} directory entries; check directory.user_filter")]
    Ambiguous {
        /// The login.
        login: String,
        /// How many entries matched.
        count: usize,
    },
    /// The file map could not be read or parsed.
    #[error("user map {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// Account status, from `mailUserStatus` (the values Sun Messaging Server used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Normal service.
    Active,
    /// Being cut over: logins and deliveries wait.
    Hold,
    /// No service; logins fail like a wrong password.
    Inactive,
}

impl UserStatus {
    /// Reads the attribute's value; a missing value means active.
    pub fn parse(value: Option<&str>) -> UserStatus {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => UserStatus::Active,
            Some(v) if v.is_empty() || v == "active" || v == "overquota" => UserStatus::Active,
            Some(v) if v == "hold" => UserStatus::Hold,
            Some(_) => UserStatus::Inactive,
        }
    }
}

/// A directory entry, as much of it as routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login as the directory spells it (the login attribute's value).
    pub login: String,
    /// The entry's DN (LDAP) — used for bind checks and to follow changes.
    pub dn: Option<String>,
    /// The `mailHost` value: which store holds the mailbox.
    pub mailhost: Option<String>,
    /// The account status.
    pub status: UserStatus,
    /// `mailshiftUidMap` (`MAILHOST STAMP`): where mailshift wrote UID maps
    /// for this user's clients ([`crate::continuity`]); `None`: untranslated.
    pub uid_map: Option<String>,
}

/// A change to a user, seen by following the directory (not by a lookup).
#[derive(Debug, Clone)]
pub struct Change {
    /// The user's canonical login (lowercase).
    pub login: String,
    /// The entry after the change; `None` when it was deleted.
    pub user: Option<User>,
}

/// What every directory source can do.
pub trait UserSource {
    /// Finds one login; `Ok(None)` when no entry matches.
    fn find(
        &self,
        login: &str,
    ) -> impl std::future::Future<Output = Result<Option<User>, Error>> + Send;

    /// Finds the entry an inbound recipient address belongs to (its `mail`,
    /// an alias); `Ok(None)` when no entry matches.
    fn find_recipient(
        &self,
        address: &str,
    ) -> impl std::future::Future<Output = Result<Option<User>, Error>> + Send;
}

/// How waiting out a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEnd {
    /// The hold is over; the entry as it is now.
    Released(User),
    /// The entry disappeared meanwhile.
    Gone,
    /// Still on hold when the wait ran out.
    TimedOut,
}

/// How often a login or a delivery waiting on a hold asks the directory again.
pub const HOLD_POLL: Duration = Duration::from_millis(100);

/// The key a login is cached and tracked under.
pub fn canonical(login: &str) -> String {
    login.to_lowercase()
}

/// An address with its domain lowercased (RFC 5321 2.4: domains are case-
/// insensitive; the local part is left to the directory).
pub fn normalize_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => address.to_string(),
    }
}

/// The cache key of a recipient address: apart from logins, so a login that
/// looks like an address and a recipient never share an entry.
fn recipient_key(address: &str) -> String {
    format!("rcpt:{}", canonical(address))
}

/// Whether a login is worth asking the directory about at all. Control bytes and
/// absurd lengths cannot be real logins; refusing them here keeps them out of
/// filters and logs.
pub fn plausible_login(login: &str) -> bool {
    !login.is_empty() && login.len() <= 256 && !login.chars().any(|c| c.is_control())
}

enum Source {
    Ldap(Arc<ldap::LdapDirectory>),
    File(file::FileDirectory),
}

/// The directory as the rest of mailshift sees it: cached lookups, password
/// checks, and a stream of changes.
pub struct Directory {
    source: Source,
    cache: cache::Cache,
    password_check: PasswordCheck,
    changes: broadcast::Sender<Change>,
}

impl Directory {
    /// Builds the directory from its config; opens no connection yet.
    pub fn new(cfg: &DirectoryConfig) -> Result<Arc<Directory>, Error> {
        let (changes, _) = broadcast::channel(1024);
        let source = match &cfg.kind {
            DirectoryKind::Ldap(l) => Source::Ldap(Arc::new(ldap::LdapDirectory::new(l.clone()))),
            DirectoryKind::File { path } => Source::File(file::FileDirectory::open(path)?),
        };
        Ok(Arc::new(Directory {
            source,
            cache: cache::Cache::new(cfg.cache_ttl, cfg.negative_cache_ttl),
            password_check: cfg.password_check,
            changes,
        }))
    }

    /// Looks a login up, from the cache when fresh.
    pub async fn lookup(&self, login: &str) -> Result<Option<User>, Error> {
        if !plausible_login(login) {
            return Ok(None);
        }
        let key = canonical(login);
        if let Some(hit) = self.cache.get(&key) {
            METRICS.observe_lookup("cache", Duration::ZERO);
            return Ok(hit);
        }
        self.lookup_fresh(login).await
    }

    /// Looks a login up in the source itself and refreshes the cache.
    pub async fn lookup_fresh(&self, login: &str) -> Result<Option<User>, Error> {
        if !plausible_login(login) {
            return Ok(None);
        }
        let started = Instant::now();
        let result = match &self.source {
            Source::Ldap(l) => l.find(login).await,
            Source::File(f) => {
                for change in f.reload_if_changed() {
                    self.apply_change(change);
                }
                f.find(login).await
            }
        };
        let label = match &result {
            Ok(Some(_)) => "found",
            Ok(None) => "not_found",
            Err(_) => "error",
        };
        METRICS.observe_lookup(label, started.elapsed());
        if let Ok(found) = &result {
            self.cache.insert(canonical(login), found.clone());
        }
        result
    }

    /// Looks up the entry an inbound recipient address belongs to, from the
    /// cache when fresh. The address is compared as RFC 5321 allows: the domain
    /// case-insensitively; the directory's own matching rules decide the local
    /// part (LDAP `mail` is case-insensitive).
    pub async fn lookup_recipient(&self, address: &str) -> Result<Option<User>, Error> {
        if !plausible_login(address) {
            return Ok(None);
        }
        if let Some(hit) = self.cache.get(&recipient_key(address)) {
            METRICS.observe_lookup("cache", Duration::ZERO);
            return Ok(hit);
        }
        self.lookup_recipient_fresh(address).await
    }

    /// Looks a recipient up in the source itself and refreshes the cache.
    pub async fn lookup_recipient_fresh(&self, address: &str) -> Result<Option<User>, Error> {
        if !plausible_login(address) {
            return Ok(None);
        }
        let address = normalize_address(address);
        let started = Instant::now();
        let result = match &self.source {
            Source::Ldap(l) => l.find_recipient(&address).await,
            Source::File(f) => {
                for change in f.reload_if_changed() {
                    self.apply_change(change);
                }
                f.find_recipient(&address).await
            }
        };
        let label = match &result {
            Ok(Some(_)) => "found",
            Ok(None) => "not_found",
            Err(_) => "error",
        };
        METRICS.observe_lookup(label, started.elapsed());
        if let Ok(found) = &result {
            self.cache.insert(recipient_key(&address), found.clone());
        }
        result
    }

    /// Waits (up to `wait`) for a user in `hold` to leave it, asking the
    /// directory itself every [`HOLD_POLL`] through `fresh` (a login or a
    /// recipient lookup). A directory error while waiting is retried.
    pub async fn wait_out_hold<F, Fut>(
        &self,
        mut user: User,
        wait: Duration,
        mut fresh: F,
    ) -> HoldEnd
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<User>, Error>>,
    {
        let until = tokio::time::Instant::now() + wait;
        let held = user.status == UserStatus::Hold;
        let end = loop {
            if user.status != UserStatus::Hold {
                break HoldEnd::Released(user);
            }
            if tokio::time::Instant::now() + HOLD_POLL > until {
                break HoldEnd::TimedOut;
            }
            tokio::time::sleep(HOLD_POLL).await;
            user = match fresh().await {
                Ok(Some(u)) => u,
                Ok(None) => break HoldEnd::Gone,
                Err(_) => continue,
            };
        };
        if held {
            let label = match &end {
                HoldEnd::Released(_) => "released",
                HoldEnd::TimedOut => "timed_out",
                HoldEnd::Gone => "gone",
            };
            METRICS.held.with_label_values(&[label]).inc();
        }
        end
    }

    /// Checks a password when the config says mailshift does; `Ok(true)` when the
    /// backend is left to check it.
    pub async fn check_password(&self, user: &User, password: &[u8]) -> Result<bool, Error> {
        match (self.password_check, &self.source) {
            (PasswordCheck::Backend, _) => Ok(true),
            (PasswordCheck::Bind, Source::Ldap(l)) => l.bind_as(user, password).await,
            // Config validation refuses bind with a file directory.
            (PasswordCheck::Bind, Source::File(_)) => Ok(false),
        }
    }

    /// Whether mailshift itself verifies passwords (else the backend does).
    pub fn checks_passwords(&self) -> bool {
        self.password_check == PasswordCheck::Bind
    }

    /// Changes seen by following the directory.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Starts following the directory for changes (LDAP RFC 4533), if it can.
    pub fn spawn_follow(self: &Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        if let Source::Ldap(l) = &self.source {
            if l.config().sync {
                tokio::spawn(sync::follow(l.clone(), Arc::clone(self), cancel));
            }
        }
    }

    /// Applies a change learnt from the directory itself and announces it.
    pub(crate) fn apply_change(&self, change: Change) {
        self.cache.apply(&change);
        // Nobody listening is fine: no session to kick.
        let _ = self.changes.send(change);
    }

    /// Logins matching an LDAP filter (batch migrations); the file directory
    /// has no filters.
    pub async fn logins_matching(&self, filter: &str) -> Result<Vec<String>, Error> {
        match &self.source {
            Source::Ldap(l) => l.logins(filter).await,
            Source::File(_) => Err(Error::File {
                path: "directory".into(),
                why: "--filter needs directory.kind = \"ldap\"".into(),
            }),
        }
    }

    /// The LDAP source, for writing migration state (none for the file map).
    pub fn ldap(&self) -> Option<&Arc<ldap::LdapDirectory>> {
        match &self.source {
            Source::Ldap(l) => Some(l),
            Source::File(_) => None,
        }
    }

    /// Drops every cached entry (admin request, tests).
    pub fn flush_cache(&self) {
        self.cache.clear();
    }
}
