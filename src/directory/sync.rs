//! Following LDAP changes with RFC 4533 content synchronization.
//!
//! One refreshAndPersist search on the users' subtree stays open; every entry
//! the server sends (added, modified, deleted) goes into the cache at once and
//! out as a [`Change`], so an admin's `mailHost` flip reaches new logins, and
//! kicks open sessions, within a second. Peers wait for a cache to expire.
//!
//! ```text
//!   Connecting ─ok─► Refreshing ─refreshDone─► Persisting
//!       ▲                 │                        │
//!       └──── backoff ◄───┴──── error / closed ◄───┘
//! ```
//!
//! While the search is down the cache TTL bounds the delay, as it would without
//! `syncprov`. A server that ignores the (non-critical) control just answers the
//! search and ends it: that is taken as "no RFC 4533 here", tried again rarely.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::{
    parse_syncinfo, ControlType, EntryState, RefreshMode, SyncInfo, SyncRequest, SyncState,
};
use ldap3::{Scope, SearchEntry};
use tokio_util::sync::CancellationToken;

use super::ldap::{backoff, LdapDirectory};
use super::{canonical, Change, Directory, Error};
use crate::metrics::METRICS;

/// How a follow session ended.
enum Ended {
    /// The server answered without keeping the search open.
    NotOffered,
    /// The connection or search failed.
    Failed(Error),
}

/// Runs until `cancel`: follows the directory and feeds `dir`.
pub async fn follow(ldap: Arc<LdapDirectory>, dir: Arc<Directory>, cancel: CancellationToken) {
    let mut cookie: Option<Vec<u8>> = None;
    let mut failures = 0u32;
    loop {
        let ended = tokio::select! {
            _ = cancel.cancelled() => return,
            ended = follow_once(&ldap, &dir, &mut cookie, &mut failures) => ended,
        };
        METRICS.directory_sync_up.set(0);
        let wait = match ended {
            Ended::NotOffered => {
                tracing::warn!(
                    url = %ldap.config().url,
                    "LDAP server does not offer RFC 4533 persistent sync (syncprov); \
                     mailHost changes take effect within directory.cache_ttl"
                );
                Duration::from_secs(600)
            }
            Ended::Failed(e) => {
                failures += 1;
                tracing::warn!(error = %e, "LDAP change follower down; retrying (cache TTL applies meanwhile)");
                backoff(failures)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn follow_once(
    ldap: &LdapDirectory,
    dir: &Directory,
    cookie: &mut Option<Vec<u8>>,
    failures: &mut u32,
) -> Ended {
    let cfg = ldap.config();
    let mut conn = match ldap.connect(true).await {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    // The same filter as a lookup, with the login widened to "any".
    let filter = cfg.user_filter.replace("%u", "*");
    let control = SyncRequest {
        mode: RefreshMode::RefreshAndPersist,
        cookie: cookie.clone(),
        reload_hint: false,
    };
    let mut stream = match conn
        .with_controls(control)
        .streaming_search(&cfg.base_dn, Scope::Subtree, &filter, ldap.attributes())
        .await
    {
        Ok(s) => s,
        Err(e) => return Ended::Failed(Error::Unavailable(format!("sync search: {e}"))),
    };
    // entryUUID → canonical login, so a delete (which carries only the UUID and
    // DN) finds its cache entry.
    let mut by_uuid: HashMap<Vec<u8>, String> = HashMap::new();
    let mut saw_sync = false;
    let mut persisting = false;
    loop {
        let entry = match stream.next().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Ended::Failed(Error::Unavailable(format!("sync search: {e}"))),
        };
        if entry.is_intermediate() {
            saw_sync = true;
            match parse_syncinfo(entry) {
                SyncInfo::NewCookie(c) => *cookie = Some(c),
                SyncInfo::RefreshDelete {
                    cookie: c,
                    refresh_done,
                }
                | SyncInfo::RefreshPresent {
                    cookie: c,
                    refresh_done,
                } => {
                    if c.is_some() {
                        *cookie = c;
                    }
                    if refresh_done {
                        persisting = true;
                        refreshed(failures);
                    }
                }
                SyncInfo::SyncIdSet { cookie: c, .. } => {
                    if c.is_some() {
                        *cookie = c;
                    }
                }
            }
            continue;
        }
        if entry.is_ref() {
            continue;
        }
        let state = entry
            .1
            .iter()
            .find(|c| matches!(c.0, Some(ControlType::SyncState)))
            .map(|c| c.1.parse::<SyncState>());
        let Some(state) = state else {
            // A plain search result: the control was ignored.
            let entry = SearchEntry::construct(entry);
            let user = ldap.user_from_entry(entry, "");
            dir.apply_change(Change {
                login: canonical(&user.login),
                user: Some(user),
            });
            continue;
        };
        saw_sync = true;
        if state.cookie.is_some() {
            *cookie = state.cookie.clone();
        }
        match state.state {
            EntryState::Delete => {
                if let Some(login) = by_uuid.remove(&state.entry_uuid) {
                    tracing::info!(user = %login, "directory entry deleted");
                    dir.apply_change(Change { login, user: None });
                }
            }
            EntryState::Add | EntryState::Modify | EntryState::Present => {
                let entry = SearchEntry::construct(entry);
                if entry.attrs.is_empty() {
                    // "Present" without attributes: nothing changed.
                    continue;
                }
                let user = ldap.user_from_entry(entry, "");
                if user.login.is_empty() {
                    continue;
                }
                let login = canonical(&user.login);
                by_uuid.insert(state.entry_uuid.clone(), login.clone());
                if persisting {
                    tracing::info!(
                        user = %login,
                        mailhost = user.mailhost.as_deref().unwrap_or("-"),
                        status = ?user.status,
                        "directory entry changed"
                    );
                }
                dir.apply_change(Change {
                    login,
                    user: Some(user),
                });
            }
        }
    }
    let result = stream.finish().await;
    if saw_sync {
        Ended::Failed(Error::Unavailable(format!(
            "sync search ended: rc={} {}",
            result.rc, result.text
        )))
    } else if result.rc == 0 {
        Ended::NotOffered
    } else {
        Ended::Failed(Error::Server(format!(
            "sync search refused: rc={} {}",
            result.rc, result.text
        )))
    }
}

fn refreshed(failures: &mut u32) {
    *failures = 0;
    METRICS.directory_sync_up.set(1);
    tracing::info!("following LDAP changes (RFC 4533 refreshAndPersist)");
}
