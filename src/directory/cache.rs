//! Lookup cache: positive and negative entries with their own TTLs.
//!
//! A user in `hold` is never served from here: the point of a hold is that the
//! next answer may differ, so every lookup during a cutover asks the source.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{canonical, Change, User, UserStatus};

struct Entry {
    user: Option<User>,
    at: Instant,
}

/// Cached lookups keyed by canonical login.
pub struct Cache {
    entries: DashMap<String, Entry>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl Cache {
    /// An empty cache.
    pub fn new(ttl: Duration, negative_ttl: Duration) -> Cache {
        Cache {
            entries: DashMap::new(),
            ttl,
            negative_ttl,
        }
    }

    /// A fresh answer for `key`: `Some(Some(user))`, `Some(None)` (known unknown),
    /// or `None` (ask the source).
    pub fn get(&self, key: &str) -> Option<Option<User>> {
        let entry = self.entries.get(key)?;
        let ttl = if entry.user.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        if entry.at.elapsed() >= ttl {
            return None;
        }
        match &entry.user {
            Some(u) if u.status == UserStatus::Hold => None,
            other => Some(other.clone()),
        }
    }

    /// Remembers an answer from the source.
    pub fn insert(&self, key: String, user: Option<User>) {
        if self.ttl.is_zero() {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                user,
                at: Instant::now(),
            },
        );
    }

    /// Applies a change followed from the directory: under the canonical login,
    /// and under every other login typed for the same entry (same DN).
    pub fn apply(&self, change: &Change) {
        let dn = change.user.as_ref().and_then(|u| u.dn.clone());
        if let Some(dn) = dn {
            for mut e in self.entries.iter_mut() {
                let same = e.user.as_ref().and_then(|u| u.dn.as_deref()) == Some(dn.as_str());
                if same && e.key() != &change.login {
                    e.user = change.user.clone();
                    e.at = Instant::now();
                }
            }
        }
        match &change.user {
            Some(_) => self.insert(change.login.clone(), change.user.clone()),
            None => {
                // A deleted entry: forget it and everything typed for it.
                self.entries.remove(&change.login);
                self.entries.retain(|_, e| {
                    e.user
                        .as_ref()
                        .map(|u| canonical(&u.login) != change.login)
                        .unwrap_or(true)
                });
            }
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(status: UserStatus, host: &str) -> User {
        User {
            login: "alice".into(),
            dn: Some("uid=alice,ou=people".into()),
            mailhost: Some(host.into()),
            status,
            uid_map: None,
        }
    }

    #[test]
    fn hold_is_never_served() {
        let c = Cache::new(Duration::from_secs(60), Duration::from_secs(60));
        c.insert("alice".into(), Some(user(UserStatus::Hold, "old")));
        assert!(c.get("alice").is_none());
        c.insert("alice".into(), Some(user(UserStatus::Active, "old")));
        assert!(matches!(c.get("alice"), Some(Some(_))));
    }

    #[test]
    fn negative_entries_expire_on_their_own_ttl() {
        let c = Cache::new(Duration::from_secs(60), Duration::ZERO);
        c.insert("nobody".into(), None);
        assert!(c.get("nobody").is_none());
    }

    #[test]
    fn change_updates_aliases_of_the_same_entry() {
        let c = Cache::new(Duration::from_secs(60), Duration::from_secs(60));
        c.insert(
            "alice@example.org".into(),
            Some(user(UserStatus::Active, "old")),
        );
        c.apply(&Change {
            login: "alice".into(),
            user: Some(user(UserStatus::Active, "new")),
        });
        let hit = c.get("alice@example.org").flatten().expect("cached");
        assert_eq!(hit.mailhost.as_deref(), Some("new"));
    }
}
