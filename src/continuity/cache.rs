//! The process's maps, per (user, store): loaded on a translated user's
//! first session, shared by every later one, dropped when the directory
//! reports a change of the user (and never trusted across a new
//! `mailshiftUidMap` stamp, which every map write sets).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::map::UserMap;
use super::Error;
use crate::directory::{canonical, Change, User};
use crate::store::imap::Client;
use crate::store::Store;

#[derive(Clone)]
struct Cached {
    stamp: String,
    map: Option<Arc<UserMap>>,
}

/// Maps of translated users, shared by the sessions of one process.
pub struct Maps {
    keep_uids: bool,
    entries: Mutex<HashMap<(String, String), Cached>>,
}

impl Maps {
    /// The cache; with `keep_uids` false no session is translated.
    pub fn new(keep_uids: bool) -> Maps {
        Maps {
            keep_uids,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The user's `mailshiftUidMap` when it names one of `store`'s mailHosts.
    fn marker<'a>(&self, user: &'a User, store: &Store) -> Option<&'a str> {
        let value = user.uid_map.as_deref().filter(|_| self.keep_uids)?;
        let host = value.split_ascii_whitespace().next()?;
        store
            .cfg
            .mailhosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
            .then_some(value)
    }

    /// Whether `user`'s sessions on `store` are translated, from the
    /// directory entry alone: no I/O, so untranslated users pay nothing.
    pub fn translated(&self, user: &User, store: &Store) -> bool {
        self.marker(user, store).is_some()
    }

    /// The maps for a session of `user` on `store`, `client` being the
    /// session's store connection, logged in and not yet relaying. `None`:
    /// relay plainly. Loaded from the store (a few round trips) only on the
    /// first session of the user since its maps were written; the
    /// connection is back in the authenticated state afterwards.
    pub async fn for_session(
        &self,
        user: &User,
        store: &Store,
        client: &mut Client,
    ) -> Result<Option<Arc<UserMap>>, Error> {
        let Some(stamp) = self.marker(user, store) else {
            return Ok(None);
        };
        let key = (canonical(&user.login), store.name().to_string());
        if let Some(c) = self.lock().get(&key).filter(|c| c.stamp == stamp) {
            return Ok(c.map.clone());
        }
        let map = super::stored::load(client).await?.map(Arc::new);
        self.lock().insert(
            key,
            Cached {
                stamp: stamp.to_string(),
                map: map.clone(),
            },
        );
        Ok(map)
    }

    /// Forgets a user's maps (the directory reported a change).
    pub fn forget(&self, login: &str) {
        let login = canonical(login);
        self.lock().retain(|(l, _), _| *l != login);
    }

    /// The maps cached for a user, by store name (for the admin view).
    pub fn cached(&self, login: &str) -> Vec<(String, Arc<UserMap>)> {
        let login = canonical(login);
        self.lock()
            .iter()
            .filter(|((l, _), _)| *l == login)
            .filter_map(|((_, s), c)| Some((s.clone(), c.map.clone()?)))
            .collect()
    }

    /// Users and bytes cached, about.
    pub fn memory(&self) -> (usize, usize) {
        let entries = self.lock();
        let bytes = entries
            .values()
            .filter_map(|c| c.map.as_ref())
            .map(|m| m.memory())
            .sum();
        (entries.len(), bytes)
    }

    /// Drops a user's maps whenever the directory reports a change of it,
    /// until `stop`.
    pub async fn follow(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<Change>,
        stop: CancellationToken,
    ) {
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                c = changes.recv() => c,
            };
            match change {
                Ok(c) => self.forget(&c.login),
                // Missed changes: the stamps still guard; start afresh anyway.
                Err(broadcast::error::RecvError::Lagged(_)) => self.lock().clear(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Cached>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::UserStatus;

    fn store(hosts: &[&str]) -> Store {
        let cfg = crate::config::Config::parse(&format!(
            "[directory]\nkind = \"file\"\npath = \"/dev/null\"\n\
             [backends.new]\nimap = \"imap://127.0.0.1:1\"\nmailhost = {hosts:?}\n"
        ))
        .expect("config");
        Store::new(cfg.backends[0].clone()).expect("store")
    }

    fn user(uid_map: Option<&str>) -> User {
        User {
            login: "Alice".into(),
            dn: None,
            mailhost: Some("new.example.org".into()),
            status: UserStatus::Active,
            uid_map: uid_map.map(String::from),
        }
    }

    #[test]
    fn only_users_whose_maps_are_on_this_store_are_translated() {
        let maps = Maps::new(true);
        let s = store(&["new.example.org"]);
        assert!(maps.translated(&user(Some("NEW.example.org 1700000000")), &s));
        assert!(!maps.translated(&user(Some("old.example.org 1700000000")), &s));
        assert!(!maps.translated(&user(None), &s));
        assert!(!Maps::new(false).translated(&user(Some("new.example.org 1")), &s));
    }
}
