//! What the admin API and `mailshift status --user` say about a user's
//! translation: whether sessions are translated, and how big the maps are.

use super::cache::Maps;
use crate::directory::User;
use crate::store::imap::{Client, Credentials};
use crate::store::Store;

/// A user's translation, for people.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct View {
    /// Sessions of the user on its current store are translated.
    pub translated: bool,
    /// The mailHost whose store holds the maps (`mailshiftUidMap`).
    pub mailhost: Option<String>,
    /// When they were written (unix seconds).
    pub written: Option<u64>,
    /// Folders mapped.
    pub folders: usize,
    /// Messages mapped.
    pub messages: usize,
    /// Bytes of the maps as stored.
    pub encoded_bytes: usize,
    /// Bytes they take in memory, about.
    pub memory_bytes: usize,
    /// Folders whose clients were given a fresh UIDVALIDITY (they resync).
    pub fresh_folders: Vec<String>,
    /// Why the maps could not be read, if they could not.
    pub error: Option<String>,
}

/// The view of `user` routed to `store`: from `maps` (loading them with
/// the store's master user when not cached yet; without one only what the
/// directory says).
pub async fn view(maps: &Maps, user: &User, store: Option<&Store>) -> View {
    let mut v = View::default();
    if let Some(value) = &user.uid_map {
        let mut words = value.split_ascii_whitespace();
        v.mailhost = words.next().map(String::from);
        v.written = words.next().and_then(|w| w.parse().ok());
    }
    let Some(store) = store.filter(|s| maps.translated(user, s)) else {
        return v;
    };
    v.translated = true;
    let cached = maps
        .cached(&user.login)
        .into_iter()
        .find(|(s, _)| s == store.name())
        .map(|(_, m)| m);
    let map = match cached {
        Some(m) => Some(m),
        None if store.master().is_some() => {
            let creds = Credentials::Master { user: &user.login };
            match Client::connect(store, &creds, None).await {
                Ok(mut c) => {
                    let r = maps.for_session(user, store, &mut c).await;
                    c.logout().await;
                    r.unwrap_or_else(|e| {
                        v.error = Some(e.to_string());
                        None
                    })
                }
                Err(e) => {
                    v.error = Some(e.to_string());
                    None
                }
            }
        }
        None => None,
    };
    if let Some(m) = map {
        v.folders = m.len();
        v.messages = m.messages();
        v.encoded_bytes = m.encoded_bytes();
        v.memory_bytes = m.memory();
        v.fresh_folders = m
            .folders()
            .filter(|(_, f)| f.is_fresh())
            .map(|(n, _)| n.to_string())
            .collect();
        v.fresh_folders.sort();
    }
    v
}
