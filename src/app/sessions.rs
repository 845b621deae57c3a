//! Who is connected where: open relayed sessions per user, of every front
//! end (IMAP, POP3, submission, ManageSieve), so a route change or an admin
//! can close them (kick) and clients reconnect to the right store.
//!
//! Each session holds a child of the server's cancellation token; kicking
//! cancels it, the same mechanism as a shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::directory::canonical;

struct Entry {
    id: u64,
    backend: String,
    client: SocketAddr,
    token: CancellationToken,
}

/// One open session, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Open {
    /// The `[backends.NAME]` it is relayed to.
    pub backend: String,
    /// The client's address (from the PROXY header behind a load balancer).
    pub client: SocketAddr,
}

/// The registry of open sessions.
#[derive(Default)]
pub struct Sessions {
    by_user: DashMap<String, Vec<Entry>>,
    next_id: AtomicU64,
}

/// A registered session; dropping it unregisters.
pub struct Registration {
    sessions: Arc<Sessions>,
    login: String,
    id: u64,
    /// Cancelled when the session is kicked.
    pub token: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let empty = match self.sessions.by_user.get_mut(&self.login) {
            Some(mut list) => {
                list.retain(|e| e.id != self.id);
                list.is_empty()
            }
            None => false,
        };
        if empty {
            self.sessions
                .by_user
                .remove_if(&self.login, |_, list| list.is_empty());
        }
    }
}

impl Sessions {
    /// Registers a session of `login` from `client` on `backend`.
    pub fn register(
        self: &Arc<Self>,
        login: &str,
        backend: &str,
        client: SocketAddr,
        parent: &CancellationToken,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = parent.child_token();
        let login = canonical(login);
        self.by_user.entry(login.clone()).or_default().push(Entry {
            id,
            backend: backend.to_string(),
            client,
            token: token.clone(),
        });
        Registration {
            sessions: Arc::clone(self),
            login,
            id,
            token,
        }
    }

    /// Closes `login`'s sessions, except those on `keep` (the user's current
    /// backend); returns how many were closed.
    pub fn kick(&self, login: &str, keep: Option<&str>) -> usize {
        let Some(list) = self.by_user.get(&canonical(login)) else {
            return 0;
        };
        let mut n = 0;
        for e in list.iter() {
            if keep != Some(e.backend.as_str()) && !e.token.is_cancelled() {
                e.token.cancel();
                n += 1;
            }
        }
        n
    }

    /// How many sessions `login` has open, per backend name.
    pub fn of(&self, login: &str) -> Vec<String> {
        self.by_user
            .get(&canonical(login))
            .map(|l| l.iter().map(|e| e.backend.clone()).collect())
            .unwrap_or_default()
    }

    /// `login`'s open sessions: where to and from where.
    pub fn list(&self, login: &str) -> Vec<Open> {
        self.by_user
            .get(&canonical(login))
            .map(|l| {
                l.iter()
                    .map(|e| Open {
                        backend: e.backend.clone(),
                        client: e.client,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All open sessions.
    pub fn total(&self) -> usize {
        self.by_user.iter().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_spares_the_current_backend_and_unregisters_on_drop() {
        let s = Arc::new(Sessions::default());
        let root = CancellationToken::new();
        let from: SocketAddr = "192.0.2.7:40001".parse().expect("addr");
        let a = s.register("Alice", "old", from, &root);
        let b = s.register("alice", "new", from, &root);
        assert_eq!(s.kick("ALICE", Some("new")), 1);
        assert!(a.token.is_cancelled());
        assert!(!b.token.is_cancelled());
        drop(a);
        assert_eq!(s.of("alice"), vec!["new".to_string()]);
        assert_eq!(
            s.list("ALICE"),
            vec![Open {
                backend: "new".into(),
                client: from
            }]
        );
        drop(b);
        assert_eq!(s.total(), 0);
    }
}
