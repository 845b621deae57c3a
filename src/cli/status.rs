//! `mailshift status`: the fleet view from LDAP ([`super::fleet`]), or with
//! `--user` / `--local` what this `state_dir` holds, and the SMTP retry queue.

use std::path::Path;

use anyhow::bail;
use mailshift::Config;

use super::{load, runtime};

/// `mailshift status`: the fleet view unless `--user` or `--local` asks for
/// the local one (or the directory is not LDAP).
pub fn run(
    config: &Path,
    user: Option<&str>,
    filter: Option<&str>,
    local: bool,
    json: bool,
) -> anyhow::Result<bool> {
    if user.is_none() && !local {
        if let Some(ok) = super::fleet::status(config, filter, json)? {
            return Ok(ok);
        }
    }
    status(config, user, json)
}

/// The local view: what the sync state records.
pub fn status(config: &Path, user: Option<&str>, json: bool) -> anyhow::Result<bool> {
    let cfg = load(config)?;
    let queue = print_smtp_queue(&cfg, json);
    let Some(m) = cfg.migration.as_ref() else {
        if queue {
            return Ok(true);
        }
        bail!("the config has no [migration] table");
    };
    let store = mailshift::migrate::state::StateStore::open(&m.state_dir)?;
    let users = match user {
        Some(u) => vec![u.to_lowercase()],
        None => store.users()?,
    };
    let mut all = Vec::new();
    // One user: whether its sessions are translated, and the maps' size.
    let uid_maps = match user {
        Some(u) => Some(runtime()?.block_on(uid_map_view(&cfg, u))),
        None => None,
    };
    for u in &users {
        let folders = store.folders(u)?;
        let copied: usize = folders.iter().map(|(_, f)| f.map.len()).sum();
        let failed: usize = folders.iter().map(|(_, f)| f.failed.len()).sum();
        if json {
            all.push(serde_json::json!({
                "user": u,
                "uid_maps": uid_maps,
                "messages_copied": copied,
                "failed": failed,
                "folders": folders.iter().map(|(name, f)| serde_json::json!({
                    "folder": name,
                    "messages_copied": f.map.len(),
                    "failed": f.failed,
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        println!(
            "{u}: {} folders, {copied} messages copied, {failed} failed",
            folders.len()
        );
        if let Some(v) = &uid_maps {
            println!("  {}", describe_uid_maps(v));
        }
        if user.is_some() {
            for (name, f) in &folders {
                println!("  {name}: {} copied", f.map.len());
                for failed in &f.failed {
                    println!("    uid {} failed: {}", failed.uid, failed.reason);
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(all));
    } else if users.is_empty() {
        println!("no migration state in {}", m.state_dir.display());
    }
    Ok(true)
}

/// A user's translation as `status --user` shows it.
async fn uid_map_view(cfg: &Config, login: &str) -> mailshift::continuity::view::View {
    let result = async {
        let dir = mailshift::directory::Directory::new(&cfg.directory)?;
        let Some(user) = dir.lookup(login).await? else {
            return Ok(mailshift::continuity::view::View::default());
        };
        let backend = user.mailhost.as_deref().and_then(|mh| {
            cfg.backends
                .iter()
                .find(|b| b.mailhosts.iter().any(|h| h.eq_ignore_ascii_case(mh)))
        });
        let store = backend
            .map(|b| mailshift::store::Store::new(b.clone()))
            .transpose()?;
        let keep = cfg.migration.as_ref().is_none_or(|m| m.keep_uids);
        let maps = mailshift::continuity::Maps::new(keep);
        anyhow::Ok(mailshift::continuity::view::view(&maps, &user, store.as_ref()).await)
    }
    .await;
    result.unwrap_or_else(|e| mailshift::continuity::view::View {
        error: Some(format!("{e:#}")),
        ..Default::default()
    })
}

fn describe_uid_maps(v: &mailshift::continuity::view::View) -> String {
    if !v.translated {
        return match &v.error {
            Some(e) => format!("sessions not translated ({e})"),
            None => "sessions not translated (no UID maps for its store)".into(),
        };
    }
    let mut s = format!(
        "sessions translated: UID maps on {} for {} folders, {} messages, {} bytes",
        v.mailhost.as_deref().unwrap_or("?"),
        v.folders,
        v.messages,
        v.encoded_bytes
    );
    if !v.fresh_folders.is_empty() {
        s.push_str(&format!(
            "; fresh UIDVALIDITY for {}",
            v.fresh_folders.join(", ")
        ));
    }
    if let Some(e) = &v.error {
        s.push_str(&format!(" (maps unreadable: {e})"));
    }
    s
}

/// The retry queue's entries, read without touching anything (a running
/// `serve` owns the queue).
fn smtp_queue(dir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(dir.join("msg"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    out
}

/// Prints the SMTP retry queue when the config has `[smtp]`; whether it did.
pub fn print_smtp_queue(cfg: &Config, json: bool) -> bool {
    let Some(q) = cfg.smtp.as_ref().map(|s| smtp_queue(&s.queue_dir)) else {
        return false;
    };
    if json {
        println!("{}", serde_json::json!({"smtp_queue": q}));
    } else {
        println!("SMTP retry queue: {} messages", q.len());
        for e in &q {
            println!(
                "  {} from <{}> to {} (attempt {}): {}",
                e["id"].as_str().unwrap_or("?"),
                e["from"].as_str().unwrap_or(""),
                e["rcpts"],
                e["attempts"],
                e["last_error"].as_str().unwrap_or("")
            );
        }
    }
    true
}
