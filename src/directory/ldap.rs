//! LDAP through ldap3: a small pool of multiplexed connections, operation
//! timeouts, reconnect on failure, RFC 4515 escaping of every value in a filter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use ldap3::Mod;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tokio::sync::Mutex;

use super::{Error, User, UserSource, UserStatus};
use crate::config::LdapConfig;

/// LDAP result code for a wrong password (RFC 4511 invalidCredentials).
const INVALID_CREDENTIALS: u32 = 49;

/// Builds the search filter for one login. Every login byte that means something
/// in a filter is escaped (RFC 4515), so `*)(uid=*` matches nobody.
pub fn user_filter(template: &str, login: &str) -> String {
    template.replace("%u", &ldap3::ldap_escape(login))
}

/// Builds the search filter for one recipient address (`%s`, RFC 4515-escaped).
pub fn recipient_filter(template: &str, address: &str) -> String {
    template.replace("%s", &ldap3::ldap_escape(address))
}

/// An LDAP directory: searches through a pool, binds on fresh connections.
pub struct LdapDirectory {
    cfg: LdapConfig,
    /// ldap3 multiplexes requests over one connection, so a few suffice; each slot
    /// reconnects on its own when its connection broke.
    pool: Vec<Mutex<Option<Ldap>>>,
    next: AtomicUsize,
}

impl LdapDirectory {
    /// A directory that connects on first use.
    pub fn new(cfg: LdapConfig) -> LdapDirectory {
        let pool = (0..cfg.pool_size).map(|_| Mutex::new(None)).collect();
        LdapDirectory {
            cfg,
            pool,
            next: AtomicUsize::new(0),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    /// The attributes a lookup asks for.
    pub fn attributes(&self) -> Vec<String> {
        vec![
            self.cfg.login_attribute.clone(),
            self.cfg.mailhost_attribute.clone(),
            self.cfg.status_attribute.clone(),
            super::schema::UID_MAP.to_string(),
        ]
    }

    /// Opens a connection, bound as the search DN when one is configured.
    pub async fn connect(&self, bind: bool) -> Result<Ldap, Error> {
        let timeout = self.cfg.timeout;
        let settings = LdapConnSettings::new().set_conn_timeout(timeout);
        let (conn, mut ldap) = tokio::time::timeout(
            timeout,
            LdapConnAsync::with_settings(settings, &self.cfg.url),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("connect to {} timed out", self.cfg.url)))?
        .map_err(|e| Error::Unavailable(format!("connect to {}: {e}", self.cfg.url)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        if bind {
            if let (Some(dn), Some(pw)) = (&self.cfg.bind_dn, &self.cfg.bind_password) {
                let res = ldap
                    .with_timeout(timeout)
                    .simple_bind(dn, pw)
                    .await
                    .map_err(|e| Error::Unavailable(format!("bind as {dn}: {e}")))?;
                if res.rc != 0 {
                    return Err(Error::Server(format!(
                        "bind as {dn} refused: rc={} {}",
                        res.rc, res.text
                    )));
                }
            }
        }
        Ok(ldap)
    }

    async fn handle(&self, slot: usize) -> Result<Ldap, Error> {
        let mut guard = self.pool[slot].lock().await;
        if let Some(l) = guard.as_mut() {
            if !l.is_closed() {
                return Ok(l.clone());
            }
        }
        let fresh = self.connect(true).await?;
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    async fn drop_slot(&self, slot: usize) {
        *self.pool[slot].lock().await = None;
    }

    /// Turns a search entry into a [`User`].
    pub fn user_from_entry(&self, entry: SearchEntry, login_fallback: &str) -> User {
        let attrs: HashMap<String, Vec<String>> = entry
            .attrs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let first = |name: &str| {
            attrs
                .get(&name.to_ascii_lowercase())
                .and_then(|v| v.first())
                .cloned()
        };
        User {
            login: first(&self.cfg.login_attribute).unwrap_or_else(|| login_fallback.to_string()),
            dn: Some(entry.dn),
            mailhost: first(&self.cfg.mailhost_attribute),
            status: UserStatus::parse(first(&self.cfg.status_attribute).as_deref()),
            uid_map: first(super::schema::UID_MAP),
        }
    }

    async fn search_once(
        &self,
        slot: usize,
        login: &str,
        filter: &str,
    ) -> Result<Option<User>, Error> {
        let mut ldap = self.handle(slot).await?;
        let res = ldap
            .with_timeout(self.cfg.timeout)
            .search(&self.cfg.base_dn, Scope::Subtree, filter, self.attributes())
            .await
            .map_err(|e| Error::Unavailable(format!("search {filter}: {e}")))?;
        let (entries, result) = res
            .success()
            .map_err(|e| Error::Server(format!("search {filter}: {e}")))?;
        let _ = result;
        match entries.len() {
            0 => Ok(None),
            1 => {
                let entry = entries.into_iter().next().map(SearchEntry::construct);
                Ok(entry.map(|e| self.user_from_entry(e, login)))
            }
            count => Err(Error::Ambiguous {
                login: login.to_string(),
                count,
            }),
        }
    }

    /// The logins of every entry matching `filter` (for batch migrations).
    pub async fn logins(&self, filter: &str) -> Result<Vec<String>, Error> {
        let mut ldap = self.connect(true).await?;
        let res = ldap
            .with_timeout(self.cfg.timeout * 10)
            .search(
                &self.cfg.base_dn,
                Scope::Subtree,
                filter,
                vec![self.cfg.login_attribute.clone()],
            )
            .await
            .map_err(|e| match e {
                ldap3::LdapError::FilterParsing => Error::BadFilter(filter.to_string()),
                e => Error::Unavailable(format!("search {filter}: {e}")),
            })?;
        let (entries, _) = res
            .success()
            .map_err(|e| Error::Server(format!("search {filter}: {e}")))?;
        let mut out: Vec<String> = entries
            .into_iter()
            .map(|e| self.user_from_entry(SearchEntry::construct(e), "").login)
            .filter(|l| !l.is_empty())
            .collect();
        out.sort();
        let _ = ldap.unbind().await;
        Ok(out)
    }

    /// Every entry matching `filter` with the named attributes (names
    /// lower-cased), in pages, so a directory's size limit for ordinary binds
    /// (slapd: 500) does not cut a fleet listing short. A filter that does not
    /// parse is [`Error::BadFilter`].
    pub async fn search_all(
        &self,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<(String, HashMap<String, Vec<String>>)>, Error> {
        use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
        let mut ldap = self.connect(true).await?;
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(1000)),
        ];
        let attrs: Vec<String> = attrs.iter().map(|a| a.to_string()).collect();
        let fail = |e: ldap3::LdapError| match e {
            ldap3::LdapError::FilterParsing => Error::BadFilter(filter.to_string()),
            e => Error::Unavailable(format!("search {filter}: {e}")),
        };
        let mut stream = ldap
            .with_timeout(self.cfg.timeout * 10)
            .streaming_search_with(adapters, &self.cfg.base_dn, Scope::Subtree, filter, attrs)
            .await
            .map_err(fail)?;
        let mut out = Vec::new();
        while let Some(entry) = stream.next().await.map_err(fail)? {
            let e = SearchEntry::construct(entry);
            let attrs = e
                .attrs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            out.push((e.dn, attrs));
        }
        let res = stream.finish().await;
        let _ = ldap.unbind().await;
        res.success()
            .map_err(|e| Error::Server(format!("search {filter}: {e}")))?;
        Ok(out)
    }

    /// Reads attributes of one user's entry: (DN, attribute → values), names
    /// lower-cased. `None` when the login matches no entry.
    pub async fn read(
        &self,
        login: &str,
        attrs: &[&str],
    ) -> Result<Option<(String, HashMap<String, Vec<String>>)>, Error> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut ldap = self.handle(slot).await?;
        let filter = user_filter(&self.cfg.user_filter, login);
        let res = ldap
            .with_timeout(self.cfg.timeout)
            .search(&self.cfg.base_dn, Scope::Subtree, &filter, attrs.to_vec())
            .await
            .map_err(|e| Error::Unavailable(format!("search {filter}: {e}")))?;
        let (entries, _) = res
            .success()
            .map_err(|e| Error::Server(format!("search {filter}: {e}")))?;
        match entries.len() {
            0 => Ok(None),
            1 => {
                let Some(e) = entries.into_iter().next().map(SearchEntry::construct) else {
                    return Ok(None);
                };
                let attrs = e
                    .attrs
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                Ok(Some((e.dn, attrs)))
            }
            count => Err(Error::Ambiguous {
                login: login.to_string(),
                count,
            }),
        }
    }

    /// Applies `mods` to `dn` in one operation. `Ok(false)` when a value it
    /// deletes was not there or a value it adds already was: the
    /// compare-and-swap lost (someone else changed the entry first).
    pub async fn modify(&self, dn: &str, mods: Vec<Mod<String>>) -> Result<bool, Error> {
        let mut ldap = self.connect(true).await?;
        let res = ldap
            .with_timeout(self.cfg.timeout)
            .modify(dn, mods)
            .await
            .map_err(|e| Error::Unavailable(format!("modify {dn}: {e}")));
        let _ = ldap.unbind().await;
        match res?.rc {
            0 => Ok(true),
            // noSuchAttribute, constraintViolation, attributeOrValueExists
            16 | 19 | 20 => Ok(false),
            rc => Err(Error::Server(format!("modify {dn}: rc={rc}"))),
        }
    }

    /// Checks a password by binding as the user on a connection of its own
    /// (a bind changes a connection's identity, so pool connections can't).
    pub async fn bind_as(&self, user: &User, password: &[u8]) -> Result<bool, Error> {
        let Some(dn) = user.dn.as_deref() else {
            return Ok(false);
        };
        // An empty password is an unauthenticated bind (RFC 4513 5.1.2): it
        // "succeeds" without checking anything, so it never counts as correct.
        let Ok(password) = std::str::from_utf8(password) else {
            return Ok(false);
        };
        if password.is_empty() {
            return Ok(false);
        }
        let mut ldap = self.connect(false).await?;
        let res = ldap
            .with_timeout(self.cfg.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| Error::Unavailable(format!("bind as {dn}: {e}")));
        let _ = ldap.unbind().await;
        match res?.rc {
            0 => Ok(true),
            INVALID_CREDENTIALS => Ok(false),
            rc => Err(Error::Server(format!("bind as {dn}: rc={rc}"))),
        }
    }
}

impl LdapDirectory {
    async fn search(&self, login: &str, filter: &str) -> Result<Option<User>, Error> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        match self.search_once(slot, login, filter).await {
            Err(Error::Unavailable(why)) => {
                // The pooled connection may have died with an LDAP restart: one
                // retry on a fresh connection before telling the client to wait.
                tracing::debug!(%why, "LDAP search failed; reconnecting once");
                self.drop_slot(slot).await;
                self.search_once(slot, login, filter).await
            }
            other => other,
        }
    }
}

impl UserSource for LdapDirectory {
    async fn find(&self, login: &str) -> Result<Option<User>, Error> {
        self.search(login, &user_filter(&self.cfg.user_filter, login))
            .await
    }

    async fn find_recipient(&self, address: &str) -> Result<Option<User>, Error> {
        self.search(
            address,
            &recipient_filter(&self.cfg.recipient_filter, address),
        )
        .await
    }
}

/// How long to wait before reconnecting the change follower, growing per failure.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_metacharacters_are_escaped() {
        let t = "(&(objectClass=inetOrgPerson)(uid=%u))";
        assert_eq!(
            user_filter(t, "*)(uid=*"),
            "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))"
        );
        assert_eq!(
            user_filter(t, "a\\b\0"),
            "(&(objectClass=inetOrgPerson)(uid=a\\5cb\\00))"
        );
        assert_eq!(
            user_filter(t, "alice"),
            "(&(objectClass=inetOrgPerson)(uid=alice))"
        );
    }

    #[test]
    fn recipient_metacharacters_are_escaped_in_every_place() {
        let t = "(|(mail=%s)(mailLocalAddress=%s))";
        assert_eq!(
            recipient_filter(t, "*)(mail=*@example.org"),
            "(|(mail=\\2a\\29\\28mail=\\2a@example.org)(mailLocalAddress=\\2a\\29\\28mail=\\2a@example.org))"
        );
    }
}
