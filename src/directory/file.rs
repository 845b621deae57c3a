//! The file directory: a TOML user map, re-read when it changes on disk.
//!
//! ```toml
//! [users.alice]
//! mailhost = "old.example.org"
//! status = "active"          # optional: active | hold | inactive
//! mail = ["alice@example.org", "a.smith@example.org"]   # optional: inbound addresses
//! ```
//!
//! A recipient address matches a user whose `mail` lists it (any case), or,
//! without `mail`, whose login is the address's local part.
//!
//! Editing the file has the same effect as editing LDAP: the next lookup sees it,
//! and changed users' sessions are kicked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use serde::Deserialize;

use super::{canonical, Change, Error, User, UserSource, UserStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    users: BTreeMap<String, RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    mailhost: String,
    status: Option<String>,
    #[serde(default)]
    mail: Vec<String>,
}

struct Loaded {
    users: BTreeMap<String, User>,
    /// Lowercased address → canonical login.
    addresses: BTreeMap<String, String>,
    mtime: Option<SystemTime>,
}

/// A user map loaded from a TOML file.
pub struct FileDirectory {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

fn load(path: &Path) -> Result<Loaded, Error> {
    let err = |why: String| Error::File {
        path: path.display().to_string(),
        why,
    };
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let raw: RawMap = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut addresses = BTreeMap::new();
    for (login, u) in &raw.users {
        for a in &u.mail {
            addresses.insert(a.to_lowercase(), canonical(login));
        }
    }
    let users = raw
        .users
        .into_iter()
        .map(|(login, u)| {
            let user = User {
                login: login.clone(),
                dn: None,
                mailhost: Some(u.mailhost),
                status: UserStatus::parse(u.status.as_deref()),
                uid_map: None,
            };
            (canonical(&login), user)
        })
        .collect();
    Ok(Loaded {
        users,
        addresses,
        mtime,
    })
}

impl FileDirectory {
    /// Loads the map; a broken file stops the start.
    pub fn open(path: &Path) -> Result<FileDirectory, Error> {
        Ok(FileDirectory {
            path: path.to_path_buf(),
            loaded: RwLock::new(load(path)?),
        })
    }

    /// Re-reads the file when its mtime moved; returns what changed. A file that
    /// became unreadable or invalid keeps the last good map (and says so).
    pub fn reload_if_changed(&self) -> Vec<Change> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        {
            let current = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if current.mtime == mtime {
                return Vec::new();
            }
        }
        let fresh = match load(&self.path) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "user map not reloaded; keeping the previous one");
                return Vec::new();
            }
        };
        let mut current = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        for (key, user) in &fresh.users {
            if current.users.get(key) != Some(user) {
                changes.push(Change {
                    login: key.clone(),
                    user: Some(user.clone()),
                });
            }
        }
        for key in current.users.keys() {
            if !fresh.users.contains_key(key) {
                changes.push(Change {
                    login: key.clone(),
                    user: None,
                });
            }
        }
        *current = fresh;
        changes
    }
}

impl UserSource for FileDirectory {
    async fn find(&self, login: &str) -> Result<Option<User>, Error> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        Ok(loaded.users.get(&canonical(login)).cloned())
    }

    async fn find_recipient(&self, address: &str) -> Result<Option<User>, Error> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let key = address.to_lowercase();
        if let Some(login) = loaded.addresses.get(&key) {
            return Ok(loaded.users.get(login).cloned());
        }
        let Some((local, _)) = key.rsplit_once('@') else {
            return Ok(None);
        };
        // Without a `mail` list, the local part is the login.
        let found = loaded
            .users
            .get(local)
            .filter(|u| !loaded.addresses.values().any(|l| l == &canonical(&u.login)))
            .cloned();
        Ok(found)
    }
}
