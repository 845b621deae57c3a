//! The admin commands, one module each; `main.rs` parses the command line
//! and calls them. Each returns `Ok(true)` for exit 0, `Ok(false)` for exit 1.

pub mod cutover;
pub mod fleet;
pub mod migrate;
pub mod plan;
pub mod progress;
pub mod rollback;
pub mod signals;
pub mod status;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mailshift::Config;

/// Which users a command covers (one of the three).
pub struct Selection {
    /// One login.
    pub user: Option<String>,
    /// Every login matching an LDAP filter.
    pub filter: Option<String>,
    /// One login per line (`#` comments).
    pub users_file: Option<PathBuf>,
}

/// Bytes for people: `1.2 MB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// The logins of a selection.
pub async fn select_users(cfg: &Config, sel: &Selection) -> anyhow::Result<Vec<String>> {
    if let Some(u) = &sel.user {
        return Ok(vec![u.clone()]);
    }
    if let Some(path) = &sel.users_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect());
    }
    if let Some(filter) = &sel.filter {
        let dir = mailshift::directory::Directory::new(&cfg.directory)?;
        return Ok(dir.logins_matching(filter).await?);
    }
    bail!("give --user, --filter or --users-file")
}

/// The config file, loaded and checked.
pub fn load(config: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(config)?)
}

/// A multi-threaded runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
