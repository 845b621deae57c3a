//! `mailshift status` without `--user`: the whole migration from LDAP, across
//! every instance (see [`mailshift::fleet`] for how instances publish).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::bail;
use mailshift::fleet::{self, Summary};
use mailshift::Config;

use super::{human, runtime};

fn ago(unix: Option<u64>) -> String {
    match unix {
        Some(t) => {
            let s = mailshift::events::now_unix().saturating_sub(t);
            if s < 120 {
                format!("{s}s ago")
            } else if s < 7200 {
                format!("{}m ago", s / 60)
            } else {
                format!("{}h ago", s / 3600)
            }
        }
        None => String::new(),
    }
}

fn bar(done: u64, total: u64) -> String {
    let width = 20usize;
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// `Ok(false)` when the config has no LDAP directory (the caller falls back
/// to the local listing).
pub fn status(config: &Path, filter: Option<&str>, json: bool) -> anyhow::Result<Option<bool>> {
    let cfg = Config::load(config)?;
    let Some(m) = cfg.migration.as_ref() else {
        return Ok(None);
    };
    let users_filter = m.users_filter.clone();
    runtime()?.block_on(async move {
        let dir = mailshift::directory::Directory::new(&cfg.directory)?;
        let Some(ldap) = dir.ldap() else {
            if filter.is_some() {
                bail!("--filter needs directory.kind = \"ldap\"");
            }
            return Ok(None);
        };
        let rows =
            fleet::users(ldap, &fleet::fleet_filter(filter, users_filter.as_deref())).await?;
        let s = Summary::of(&rows);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "counts": s.counts,
                    "users": s.users,
                    "bytes_moved": s.bytes_moved,
                    "bytes_left": s.bytes_left,
                    "bytes_per_second": s.bytes_per_second,
                    "eta_seconds": s.eta_seconds,
                    "running": s.running,
                    "errors": s.errors,
                    "cutovers": s.cutovers,
                    "all": rows,
                })
            );
            return Ok(Some(true));
        }
        let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{} users: {}", s.users, counts.join(", "));
        println!(
            "moved {}; running moves: {}, {} left at {}/s, ETA {}",
            human(s.bytes_moved),
            s.running.len(),
            human(s.bytes_left),
            human(s.bytes_per_second as u64),
            s.eta_seconds
                .map(|e| format!("{e}s"))
                .unwrap_or_else(|| "unknown".into())
        );
        let tty = std::io::stdout().is_terminal();
        if !s.running.is_empty() {
            println!("running:");
        }
        for r in &s.running {
            let p = r.progress.unwrap_or_default();
            println!(
                "  {:<24} on {:<12} {}{}/{} messages, {}/{} ETA {}",
                r.login,
                r.instance.as_deref().unwrap_or("?"),
                if tty {
                    bar(p.bytes, p.bytes_total) + " "
                } else {
                    String::new()
                },
                p.messages,
                p.messages_total,
                human(p.bytes),
                human(p.bytes_total),
                p.eta()
                    .map(|e| format!("{e}s"))
                    .unwrap_or_else(|| "?".into())
            );
        }
        if !s.cutovers.is_empty() {
            println!("recent cutovers:");
        }
        for r in &s.cutovers {
            println!(
                "  {:<24} hold {:.2}s  {} -> {}  {}",
                r.login,
                r.hold_ms.unwrap_or(0) as f64 / 1000.0,
                r.from.as_deref().unwrap_or("?"),
                r.to.as_deref().unwrap_or("?"),
                ago(r.updated)
            );
        }
        if !s.errors.is_empty() {
            println!("last errors:");
        }
        for r in &s.errors {
            println!(
                "  {:<24} {:<10} {}  {}",
                r.login,
                r.state,
                ago(r.updated),
                r.error.as_deref().unwrap_or("")
            );
        }
        Ok(Some(true))
    })
}
