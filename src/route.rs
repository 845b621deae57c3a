//! Routing: a user's `mailHost` names a backend.
//!
//! An unknown value is a configuration problem, never a reason to guess: it is
//! logged as an error and the client gets a temporary failure.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::BackendConfig;
use crate::directory::User;

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
}
