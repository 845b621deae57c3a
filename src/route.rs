//! Routing: a user's `mailHost` names a backend, and [`resolve`] is the one
//! answer to "where does this login or recipient go now", which every front
//! end and the SMTP retry queue match on.
//!
//! An unknown value is a configuration problem, never a reason to guess: it is
//! logged as an error and the client gets a temporary failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::BackendConfig;
use crate::directory::{Directory, HoldEnd, User, UserStatus};

/// What a login or a recipient resolves to.
#[derive(Debug)]
pub enum Resolution<S> {
    /// Its store.
    Routed {
        /// The directory entry (hold over).
        user: User,
        /// Where it goes.
        store: Arc<S>,
    },
    /// The directory does not know it (or it vanished during a hold).
    Unknown,
    /// The entry is `inactive`.
    Disabled(User),
    /// On hold past the wait (a cutover is running).
    Held,
    /// The directory could not answer.
    DirectoryDown(String),
    /// Its `mailHost` names no store (a configuration problem).
    NoRoute {
        /// The directory entry.
        user: User,
        /// Why.
        error: Error,
    },
}

/// What is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A login name (IMAP, POP3, submission, ManageSieve), through the cache.
    Login,
    /// A recipient address (inbound SMTP), through the cache.
    Recipient,
    /// A recipient address, asking the directory itself (the retry queue).
    RecipientFresh,
}

/// Resolves `key`: directory lookup, a hold waited out for up to `hold_wait`
/// (asking the directory itself every [`crate::directory::HOLD_POLL`]; no
/// wait: `Held` at once), inactive entries, then the route.
pub async fn resolve<S>(
    directory: &Directory,
    router: &Router<S>,
    key: &str,
    ask: Ask,
    hold_wait: Option<Duration>,
) -> Resolution<S> {
    let fresh = || async move {
        match ask {
            Ask::Login => directory.lookup_fresh(key).await,
            Ask::Recipient | Ask::RecipientFresh => directory.lookup_recipient_fresh(key).await,
        }
    };
    let first = match ask {
        Ask::Login => directory.lookup(key).await,
        Ask::Recipient => directory.lookup_recipient(key).await,
        Ask::RecipientFresh => fresh().await,
    };
    let mut user = match first {
        Ok(Some(u)) => u,
        Ok(None) => return Resolution::Unknown,
        Err(e) => return Resolution::DirectoryDown(e.to_string()),
    };
    if user.status == UserStatus::Hold {
        let Some(wait) = hold_wait else {
            return Resolution::Held;
        };
        tracing::info!(user = %key, wait_ms = wait.as_millis() as u64, "on hold (cutover running); waiting");
        user = match directory.wait_out_hold(user, wait, fresh).await {
            HoldEnd::Released(u) => u,
            HoldEnd::Gone => return Resolution::Unknown,
            HoldEnd::TimedOut => return Resolution::Held,
        };
    }
    if user.status == UserStatus::Inactive {
        return Resolution::Disabled(user);
    }
    match router.route(&user) {
        Ok(store) => Resolution::Routed { user, store },
        Err(error) => Resolution::NoRoute { user, error },
    }
}

/// Why a user has no route.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The entry has no `mailHost`.
    #[error("user {0} has no mailHost")]
    NoMailHost(String),
    /// The `mailHost` value is not listed by any `[backends.NAME]`.
    #[error("user {login} has mailHost {mailhost:?}, which no [backends.NAME] mailhost lists")]
    UnknownMailHost {
        /// The user.
        login: String,
        /// The unknown value.
        mailhost: String,
    },
}

/// Maps `mailHost` values to backends.
pub struct Router<B> {
    by_mailhost: HashMap<String, Arc<B>>,
}

impl<B> Router<B> {
    /// Builds the map from backends and their configs.
    pub fn new(backends: impl IntoIterator<Item = (BackendConfig, Arc<B>)>) -> Router<B> {
        let mut by_mailhost = HashMap::new();
        for (cfg, backend) in backends {
            for mh in cfg.mailhosts {
                by_mailhost.insert(mh.trim().to_ascii_lowercase(), Arc::clone(&backend));
            }
        }
        Router { by_mailhost }
    }

    /// The backend for a user.
    pub fn route(&self, user: &User) -> Result<Arc<B>, Error> {
        let mailhost = user
            .mailhost
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Error::NoMailHost(user.login.clone()))?;
        self.by_mailhost
            .get(&mailhost.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| Error::UnknownMailHost {
                login: user.login.clone(),
                mailhost: mailhost.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::directory::UserStatus;

    fn user(mh: Option<&str>) -> User {
        User {
            login: "alice".into(),
            dn: None,
            mailhost: mh.map(String::from),
            status: UserStatus::Active,
            uid_map: None,
        }
    }

    #[test]
    fn routes_case_insensitively_and_refuses_unknown() {
        let cfg = Config::parse(
            r#"
[directory]
kind = "ldap"
url = "ldap://127.0.0.1"
base_dn = "dc=x"
[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:1"
[backends.new]
mailhost = ["new.example.org", "new2.example.org"]
imap = "imap://127.0.0.1:2"
"#,
        )
        .expect("valid");
        let router = Router::new(
            cfg.backends
                .iter()
                .map(|b| (b.clone(), Arc::new(b.name.clone()))),
        );
        assert_eq!(
            *router
                .route(&user(Some("OLD.example.org")))
                .expect("routed"),
            "old"
        );
        assert_eq!(
            *router
                .route(&user(Some("new2.example.org")))
                .expect("routed"),
            "new"
        );
        assert!(matches!(
            router.route(&user(Some("elsewhere.example.org"))),
            Err(Error::UnknownMailHost { .. })
        ));
        assert_eq!(
            router.route(&user(None)),
            Err(Error::NoMailHost("alice".into()))
        );
    }

    #[tokio::test]
    async fn resolve_gives_one_answer_for_each_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = dir.path().join("users.toml");
        std::fs::write(
            &users,
            r#"
[users.alice]
mailhost = "old.example.org"
[users.held]
mailhost = "old.example.org"
status = "hold"
[users.gone]
mailhost = "old.example.org"
status = "inactive"
[users.lost]
mailhost = "nowhere.example.org"
"#,
        )
        .expect("write");
        let cfg = Config::parse(&format!(
            r#"
[directory]
kind = "file"
path = "{}"
[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:1"
"#,
            users.display()
        ))
        .expect("valid");
        let directory = Directory::new(&cfg.directory).expect("directory");
        let router = Router::new(
            cfg.backends
                .iter()
                .map(|b| (b.clone(), Arc::new(b.name.clone()))),
        );
        let r = |key: &'static str, wait| {
            let (directory, router) = (&directory, &router);
            async move { resolve(directory, router, key, Ask::Login, wait).await }
        };
        assert!(
            matches!(r("alice", None).await, Resolution::Routed { store, .. } if *store == "old")
        );
        assert!(matches!(r("nobody", None).await, Resolution::Unknown));
        assert!(matches!(r("gone", None).await, Resolution::Disabled(_)));
        assert!(matches!(r("held", None).await, Resolution::Held));
        assert!(matches!(
            r("held", Some(Duration::from_millis(150))).await,
            Resolution::Held
        ));
        assert!(matches!(
            r("lost", None).await,
            Resolution::NoRoute {
                error: Error::UnknownMailHost { .. },
                ..
            }
        ));
    }
}
