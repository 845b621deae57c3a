//! `mailshift plan`: what moving a group will take, before anything moves.
//!
//! Per user, from the old store: messages and bytes per folder (`STATUS
//! (MESSAGES SIZE)` where the store offers STATUS=SIZE, else `FETCH
//! RFC822.SIZE`), what the sync state already holds, messages over the new
//! store's APPENDLIMIT (`SEARCH LARGER`), folder names the new store would
//! refuse, and the quota where the new store reports one. For the group: the
//! largest users and an estimate of the first pass and of the final window.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use mailshift::migrate::sync::Engine;
use mailshift::store::imap::{quoted, Client};
use mailshift::Config;
use serde::Serialize;

use super::{human, runtime, select_users, Selection};

/// One folder of one user.
#[derive(Debug, Default, Serialize)]
pub struct FolderPlan {
    /// Name on the old store.
    pub folder: String,
    /// Name it gets on the new store.
    pub dest: String,
    /// Messages.
    pub messages: u64,
    /// Bytes.
    pub bytes: u64,
    /// UIDs over the new store's APPENDLIMIT.
    pub over_appendlimit: Vec<u32>,
}

/// One user.
#[derive(Debug, Default, Serialize)]
pub struct UserPlan {
    /// The login.
    pub user: String,
    /// Messages on the old store.
    pub messages: u64,
    /// Bytes on the old store.
    pub bytes: u64,
    /// The new store's APPENDLIMIT, where it announces one.
    pub appendlimit: Option<u64>,
    /// Messages the sync state records as copied already.
    pub synced_messages: u64,
    /// How sizes were read: `STATUS=SIZE` or `FETCH RFC822.SIZE`.
    pub sizes_from: String,
    /// Per folder.
    pub folders: Vec<FolderPlan>,
    /// Folder names the new store would refuse, and why.
    pub refused_folders: Vec<String>,
    /// The new store's quota (used, limit) in KiB, where it reports one.
    pub quota_kib: Option<(u64, u64)>,
    /// Whether the old mailbox fits in the new store's quota.
    pub fits_quota: Option<bool>,
    /// Seconds reading the user's listing took (connect, LIST, sizes).
    pub scan_seconds: f64,
    /// Why the user could not be planned.
    pub error: Option<String>,
}

/// The estimate for the group.
#[derive(Debug, Default, Serialize)]
pub struct Estimate {
    /// Bytes per second one move is taken to copy.
    pub bytes_per_second: f64,
    /// Where that rate comes from: `measured` (the last real pass, in
    /// state_dir/last_rate.json) or `calibration` (a short read from the old
    /// store made by this command; appends not included).
    pub rate_from: String,
    /// Users moved at once.
    pub concurrency: usize,
    /// `migration.max_bytes_per_second`, if set.
    pub bandwidth_limit: Option<u64>,
    /// Bytes still to copy (not in the sync state).
    pub bytes_to_copy: u64,
    /// First pass of the whole group, seconds.
    pub first_pass_seconds: f64,
    /// Final window (the last delta passes and the holds) of the whole
    /// group, seconds.
    pub final_window_seconds: f64,
    /// How the numbers were reached, in words.
    pub method: String,
}

/// The whole plan.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// Per user.
    pub users: Vec<UserPlan>,
    /// Messages in the group.
    pub messages: u64,
    /// Bytes in the group.
    pub bytes: u64,
    /// Messages already synced.
    pub synced_messages: u64,
    /// The largest users (login, bytes), largest first, at most 10.
    pub largest: Vec<(String, u64)>,
    /// The estimate.
    pub estimate: Estimate,
}

fn numbers_after(line: &str, key: &str) -> Option<u64> {
    let up = line.to_ascii_uppercase();
    let at = up.find(&format!("{key} "))? + key.len() + 1;
    up[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
}

fn untagged_text(r: &mailshift::store::imap::Reply) -> Vec<String> {
    r.untagged
        .iter()
        .map(|l| String::from_utf8_lossy(&l.raw).into_owned())
        .collect()
}

async fn appendlimit(dst: &mut Client) -> Option<u64> {
    let r = dst.run("CAPABILITY").await.ok()?;
    untagged_text(&r).iter().find_map(|l| {
        l.split_ascii_whitespace()
            .find_map(|c| {
                c.to_ascii_uppercase()
                    .strip_prefix("APPENDLIMIT=")
                    .map(String::from)
            })
            .and_then(|n| n.parse().ok())
    })
}

async fn quota(dst: &mut Client) -> Option<(u64, u64)> {
    if !dst.has("QUOTA") {
        return None;
    }
    let r = dst.run("GETQUOTAROOT INBOX").await.ok()?;
    untagged_text(&r).iter().find_map(|l| {
        let up = l.to_ascii_uppercase();
        let at = up.find("(STORAGE ")? + "(STORAGE ".len();
        let mut n = up[at..]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse::<u64>().ok());
        Some((n.next()?, n.next()?))
    })
}

/// Names a store refuses whatever its kind: control characters, over 255
/// bytes, or two old folders that would land in one new folder.
fn refused_names(pairs: &[mailshift::migrate::folders::Pair]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for p in pairs {
        let dest = String::from_utf8_lossy(&p.dst).into_owned();
        if p.dst.iter().any(|b| *b < 0x20 || *b == 0x7f) {
            out.push(format!(
                "{}: control characters in the name",
                p.src.display()
            ));
        } else if p.dst.len() > 255 {
            out.push(format!("{}: name longer than 255 bytes", p.src.display()));
        }
        if let Some(other) = seen.insert(dest.to_lowercase(), p.src.display()) {
            out.push(format!(
                "{} and {other} both map to {dest} on the new store",
                p.src.display()
            ));
        }
    }
    out
}

async fn plan_user(engine: &Engine, user: &str) -> Result<UserPlan, anyhow::Error> {
    let started = Instant::now();
    let mut pair = engine.connect(user, None).await?;
    let pairs = engine.plan(&mut pair).await?;
    let limit = appendlimit(&mut pair.dst).await;
    let status_size = pair.src.has("STATUS=SIZE");
    let mut up = UserPlan {
        user: user.to_string(),
        sizes_from: if status_size {
            "STATUS=SIZE"
        } else {
            "FETCH RFC822.SIZE"
        }
        .into(),
        refused_folders: refused_names(&pairs),
        appendlimit: limit,
        ..UserPlan::default()
    };
    for p in &pairs {
        let mut fp = FolderPlan {
            folder: p.src.display(),
            dest: String::from_utf8_lossy(&p.dst).into_owned(),
            ..FolderPlan::default()
        };
        if status_size {
            let mut cmd = b"STATUS ".to_vec();
            cmd.extend_from_slice(&quoted(&p.src.name));
            cmd.extend_from_slice(b" (MESSAGES SIZE)");
            let r = pair.src.run_status(&cmd).await?;
            for l in untagged_text(&r) {
                fp.messages = numbers_after(&l, "MESSAGES").unwrap_or(fp.messages);
                fp.bytes = numbers_after(&l, "SIZE").unwrap_or(fp.bytes);
            }
        }
        let needs_select = !status_size || (limit.is_some() && fp.messages > 0);
        if needs_select {
            let mut cmd = b"EXAMINE ".to_vec();
            cmd.extend_from_slice(&quoted(&p.src.name));
            let r = pair.src.run_status(&cmd).await?;
            let exists = untagged_text(&r)
                .iter()
                .find_map(|l| {
                    l.strip_prefix("* ")
                        .and_then(|x| x.strip_suffix(" EXISTS"))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            if !status_size && exists > 0 {
                let r = pair.src.run("FETCH 1:* (RFC822.SIZE)").await?;
                fp.messages = exists;
                fp.bytes = untagged_text(&r)
                    .iter()
                    .filter_map(|l| numbers_after(l, "RFC822.SIZE"))
                    .sum();
            }
            if let (Some(limit), true) = (limit, exists > 0) {
                let r = pair.src.run(&format!("UID SEARCH LARGER {limit}")).await?;
                fp.over_appendlimit = untagged_text(&r)
                    .iter()
                    .filter_map(|l| l.strip_prefix("* SEARCH"))
                    .flat_map(|rest| {
                        rest.split_ascii_whitespace()
                            .filter_map(|n| n.parse().ok())
                            .collect::<Vec<u32>>()
                    })
                    .collect();
            }
        }
        up.messages += fp.messages;
        up.bytes += fp.bytes;
        up.folders.push(fp);
    }
    up.quota_kib = quota(&mut pair.dst).await;
    up.fits_quota = up
        .quota_kib
        .map(|(used, limit)| used + up.bytes.div_ceil(1024) <= limit);
    up.synced_messages = engine
        .state
        .folders(&user.to_lowercase())?
        .iter()
        .map(|(_, f)| f.map.len() as u64)
        .sum();
    tokio::join!(pair.src.logout(), pair.dst.logout());
    up.scan_seconds = started.elapsed().as_secs_f64();
    Ok(up)
}

/// A short read from the old store: up to ~4 MB of the user's INBOX.
/// Only reading is timed (nothing is written anywhere), so this rate is an
/// upper bound for a copy; it is labelled as such.
async fn calibrate(engine: &Engine, user: &str) -> anyhow::Result<Option<f64>> {
    let mut pair = engine.connect(user, None).await?;
    pair.src.run("EXAMINE INBOX").await?;
    let sizes = pair.src.run("FETCH 1:* (RFC822.SIZE)").await?;
    let mut total = 0u64;
    let mut last = 0usize;
    for (i, l) in untagged_text(&sizes).iter().enumerate() {
        if let Some(n) = numbers_after(l, "RFC822.SIZE") {
            total += n;
            last = i + 1;
            if total >= 4 << 20 {
                break;
            }
        }
    }
    if last == 0 {
        return Ok(None);
    }
    let t = Instant::now();
    pair.src
        .run(&format!("FETCH 1:{last} (BODY.PEEK[])"))
        .await?;
    let secs = t.elapsed().as_secs_f64().max(1e-3);
    tokio::join!(pair.src.logout(), pair.dst.logout());
    Ok(Some(total as f64 / secs))
}

/// Builds the plan for the selected users.
async fn build(cfg: &Config, sel: &Selection) -> anyhow::Result<Plan> {
    let m = cfg
        .migration
        .as_ref()
        .context("the config has no [migration] table")?;
    let engine = std::sync::Arc::new(Engine::from_config(cfg)?);
    let users = select_users(cfg, sel).await?;
    let concurrency = (m.concurrency as usize).max(1);
    let mut plan = Plan::default();
    // Listing is light; a few users at once keep a large group quick.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(4)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let (engine, sem, user) = (engine.clone(), sem.clone(), user.clone());
        tasks.spawn(async move {
            let _p = sem.acquire_owned().await;
            let r = plan_user(&engine, &user).await;
            (i, user, r)
        });
    }
    let mut out: Vec<(usize, UserPlan)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, user, r) = done.context("a planning task failed")?;
        out.push((
            i,
            r.unwrap_or_else(|e| UserPlan {
                user,
                error: Some(format!("{e:#}")),
                ..UserPlan::default()
            }),
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    plan.users = out.into_iter().map(|(_, u)| u).collect();
    for u in &plan.users {
        plan.messages += u.messages;
        plan.bytes += u.bytes;
        plan.synced_messages += u.synced_messages;
    }
    let mut largest: Vec<(String, u64)> = plan
        .users
        .iter()
        .map(|u| (u.user.clone(), u.bytes))
        .collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    largest.truncate(10);
    plan.largest = largest;

    let measured = std::fs::read(m.state_dir.join("last_rate.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["bytes_per_second"].as_f64())
        .filter(|r| *r > 0.0);
    let (rate, from) = match measured {
        Some(r) => (r, "measured"),
        None => {
            let first = plan
                .users
                .iter()
                .filter(|u| u.error.is_none())
                .max_by_key(|u| u.bytes);
            let r = match first {
                Some(u) => calibrate(&engine, &u.user).await?,
                None => None,
            };
            (r.unwrap_or(0.0), "calibration")
        }
    };
    // Bytes not yet in the state: a user's synced share is by message count.
    let to_copy: u64 = plan
        .users
        .iter()
        .map(|u| {
            if u.messages == 0 {
                0
            } else {
                let left = u.messages.saturating_sub(u.synced_messages);
                (u.bytes as f64 * left as f64 / u.messages as f64) as u64
            }
        })
        .sum();
    let per_move = match m.max_bytes_per_second {
        // The limit is per instance: shared by the moves running at once.
        Some(limit) => rate.min(limit as f64 / concurrency as f64),
        None => rate,
    };
    let n = plan.users.len() as f64;
    let waves = (n / concurrency as f64).ceil();
    let scan: f64 = plan.users.iter().map(|u| u.scan_seconds).sum::<f64>() / n.max(1.0);
    let first = if per_move > 0.0 {
        to_copy as f64 / (per_move * concurrency as f64) + waves * scan
    } else {
        0.0
    };
    // The final pass of a user rescans every folder (as this plan did) and
    // copies the last delta (taken as 1 % of the mailbox), plus the kick grace.
    let delta = plan.bytes as f64 * 0.01 / n.max(1.0);
    let per_user_final =
        scan + if per_move > 0.0 {
            delta / per_move
        } else {
            0.0
        } + 0.3;
    plan.estimate = Estimate {
        bytes_per_second: rate,
        rate_from: from.into(),
        concurrency,
        bandwidth_limit: m.max_bytes_per_second,
        bytes_to_copy: to_copy,
        first_pass_seconds: first,
        final_window_seconds: waves * per_user_final,
        method: format!(
            "first pass = bytes to copy / (rate per move x {concurrency}) + one scan per wave; \
             final window = waves x (scan {scan:.2}s + 1% delta at the rate + 0.3s kick grace); rate: {}",
            if from == "measured" {
                "the last real pass (state_dir/last_rate.json)".to_string()
            } else {
                format!("calibration, a read of up to 4 MB from the old store ({}/s), appends not included", human(rate as u64))
            }
        ),
    };
    Ok(plan)
}

/// `mailshift plan`.
pub fn plan(config: &Path, sel: Selection, json: bool) -> anyhow::Result<bool> {
    let cfg = Config::load(config)?;
    runtime()?.block_on(async move {
        let plan = build(&cfg, &sel).await?;
        let ok = plan.users.iter().all(|u| u.error.is_none());
        if json {
            println!("{}", serde_json::to_string(&plan)?);
            return Ok(ok);
        }
        println!(
            "{:<24} {:>9} {:>10} {:>9}  notes",
            "user", "messages", "size", "synced"
        );
        for u in &plan.users {
            let mut notes = Vec::new();
            if let Some(e) = &u.error {
                notes.push(format!("ERROR {e}"));
            }
            let over: usize = u.folders.iter().map(|f| f.over_appendlimit.len()).sum();
            if over > 0 {
                notes.push(format!("{over} over APPENDLIMIT"));
            }
            if !u.refused_folders.is_empty() {
                notes.push(format!("refused folders: {}", u.refused_folders.join("; ")));
            }
            if u.fits_quota == Some(false) {
                notes.push("does not fit the new quota".into());
            }
            println!(
                "{:<24} {:>9} {:>10} {:>9}  {}",
                u.user,
                u.messages,
                human(u.bytes),
                u.synced_messages,
                notes.join(", ")
            );
        }
        println!(
            "total: {} users, {} messages, {}, {} already synced",
            plan.users.len(),
            plan.messages,
            human(plan.bytes),
            plan.synced_messages
        );
        println!("largest:");
        for (u, b) in &plan.largest {
            println!("  {u}: {}", human(*b));
        }
        let e = &plan.estimate;
        println!(
            "estimate ({} rate {}/s, concurrency {}): first pass {:.0}s, final window {:.0}s",
            e.rate_from,
            human(e.bytes_per_second as u64),
            e.concurrency,
            e.first_pass_seconds,
            e.final_window_seconds
        );
        println!("  {}", e.method);
        Ok(ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_status_and_fetch_lines() {
        let l = "* STATUS INBOX (MESSAGES 12 SIZE 34567)";
        assert_eq!(numbers_after(l, "MESSAGES"), Some(12));
        assert_eq!(numbers_after(l, "SIZE"), Some(34567));
        assert_eq!(
            numbers_after("* 3 FETCH (RFC822.SIZE 812)", "RFC822.SIZE"),
            Some(812)
        );
        assert_eq!(numbers_after("* 3 FETCH (FLAGS ())", "RFC822.SIZE"), None);
    }
}
