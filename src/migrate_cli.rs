//! `mailshift migrate` and `mailshift verify`: the engine at the command line,
//! with progress bars on a terminal, plain lines in scripts, JSON on request.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mailshift::migrate::cutover::Mover;
use mailshift::migrate::sync::{Engine, PassReport};
use mailshift::migrate::{verify, Event, Reporter};
use mailshift::Config;
use tokio_util::sync::CancellationToken;

/// Which users.
pub struct Selection {
    pub user: Option<String>,
    pub filter: Option<String>,
    pub users_file: Option<PathBuf>,
}

/// How progress is shown.
enum Output {
    Bars(MultiProgress),
    Plain,
    Json,
}

struct Progress {
    output: Output,
    bars: Mutex<std::collections::HashMap<String, ProgressBar>>,
    overall: Option<ProgressBar>,
}

impl Progress {
    fn new(json: bool, users: usize) -> Progress {
        let output = if json {
            Output::Json
        } else if std::io::stderr().is_terminal() {
            Output::Bars(MultiProgress::new())
        } else {
            Output::Plain
        };
        let overall = match &output {
            Output::Bars(m) if users > 1 => {
                let b = m.add(ProgressBar::new(users as u64));
                b.set_style(
                    ProgressStyle::with_template(
                        "users {pos}/{len} [{bar:30}] {elapsed} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                Some(b)
            }
            _ => None,
        };
        Progress {
            output,
            bars: Mutex::new(Default::default()),
            overall,
        }
    }

    fn user_done(&self, report: &PassReport) {
        if let Some(b) = &self.overall {
            b.inc(1);
        }
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&report.user)
        {
            bar.finish_and_clear();
        }
        let line = format!(
            "{}: {} messages, {} copied in {:.2}s, {} failed, {} errors",
            report.user,
            report.copied(),
            human(report.bytes()),
            report.seconds,
            report.failed(),
            report.errors.len()
        );
        match &self.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"event": "result", "report": report})
            ),
            Output::Bars(m) => {
                let _ = m.println(line);
            }
            Output::Plain => eprintln!("{line}"),
        }
        for e in &report.errors {
            if !matches!(self.output, Output::Json) {
                eprintln!("  error: {e}");
            }
        }
        if report.sieve.enabled && !matches!(self.output, Output::Json) {
            eprintln!("  {}", report.sieve.summary());
            for r in &report.sieve.refused {
                eprintln!(
                    "  sieve script {:?} refused by the new store: {}",
                    r.name, r.reason
                );
            }
        }
        for f in &report.folders {
            for failed in &f.failed {
                if !matches!(self.output, Output::Json) {
                    eprintln!(
                        "  {}: uid {} not copied: {}",
                        f.folder, failed.uid, failed.reason
                    );
                }
            }
            if !f.refused_flags.is_empty() && !matches!(self.output, Output::Json) {
                eprintln!(
                    "  {}: the destination does not store these flags: {}",
                    f.folder,
                    f.refused_flags
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
    }
}

impl Reporter for Progress {
    fn event(&self, event: Event) {
        match &self.output {
            Output::Json => println!("{}", serde_json::to_string(&event).unwrap_or_default()),
            Output::Plain => {
                if let Event::FolderStart {
                    user,
                    folder,
                    messages,
                    bytes,
                } = &event
                {
                    if *messages > 0 {
                        eprintln!(
                            "{user}: {folder}: copying {messages} messages ({})",
                            human(*bytes)
                        );
                    }
                }
            }
            Output::Bars(m) => {
                let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Event::FolderStart {
                        user,
                        folder,
                        messages,
                        bytes,
                    } => {
                        if messages == 0 {
                            return;
                        }
                        let bar = bars.entry(user.clone()).or_insert_with(|| {
                            let b = m.add(ProgressBar::new(0));
                            b.set_style(
                                ProgressStyle::with_template(
                                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            b.set_prefix(user.clone());
                            b
                        });
                        bar.inc_length(bytes);
                        bar.set_message(folder);
                    }
                    Event::Copied { user, .. } => {
                        let _ = user;
                    }
                    Event::Planned { .. } => {}
                }
            }
        }
    }
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

fn load(config: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(config)?)
}

/// A multi-threaded runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// How `migrate` runs.
pub struct Mode {
    pub dry_run: bool,
    pub cutover: bool,
    pub force: bool,
    pub json: bool,
}

fn mover(cfg: &Config, stop: &CancellationToken) -> anyhow::Result<Mover> {
    let dir = mailshift::directory::Directory::new(&cfg.directory)?;
    let Some(ldap) = dir.ldap() else {
        bail!(
            "cutover and rollback write the user's state to LDAP: directory.kind must be \"ldap\""
        );
    };
    let mut m = Mover::from_config(cfg, Arc::clone(ldap))?;
    m.stop_on(stop.clone(), cfg.shutdown_grace);
    Ok(m)
}

/// Cancelled on SIGTERM or SIGINT: like `serve`, a move in progress then
/// finishes or undoes its hold (within `shutdown_grace`) before the exit.
fn stop_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut t) => {
                    t.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("mailshift: stopping; a user in hold is finished or released first");
        token.cancel();
    });
    stop
}

/// Resolves `grace` after `stop` is cancelled: the most an interrupted run waits.
async fn past_grace(stop: &CancellationToken, grace: std::time::Duration) {
    stop.cancelled().await;
    tokio::time::sleep(grace).await;
}

fn print_cutover(json: bool, r: &mailshift::migrate::cutover::CutoverReport) {
    if json {
        println!("{}", serde_json::json!({"event": "cutover", "report": r}));
    } else {
        eprintln!(
            "{}: on {} (hold {:.2}s, {} presync passes)",
            r.user,
            r.mailhost,
            r.hold_seconds,
            r.presyncs.len()
        );
    }
}

/// `mailshift rollback`.
pub fn rollback(config: &Path, user: &str, json: bool) -> anyhow::Result<bool> {
    let cfg = load(config)?;
    runtime()?.block_on(async move {
        let stop = stop_on_signals();
        let mover = mover(&cfg, &stop)?;
        let progress = Arc::new(Progress::new(json, 1));
        let r = tokio::select! {
            r = mover.rollback(user, progress) => r?,
            _ = past_grace(&stop, cfg.shutdown_grace) => bail!("stopped: shutdown_grace reached"),
        };
        print_cutover(json, &r);
        Ok(true)
    })
}

/// `mailshift migrate`; `Ok(true)` when every user's pass completed.
pub fn migrate(
    config: &Path,
    sel: Selection,
    mode: Mode,
    concurrency: Option<usize>,
) -> anyhow::Result<bool> {
    let Mode {
        dry_run,
        cutover,
        force,
        json,
    } = mode;
    let cfg = load(config)?;
    runtime()?.block_on(async move {
        let stop = stop_on_signals();
        // One engine per state file: redb allows one open database per process.
        let (mover, engine) = if cutover {
            let mut m = mover(&cfg, &stop)?;
            if let Some(e) = Arc::get_mut(&mut m.forward) {
                e.opts.force = force;
            }
            let engine = Arc::clone(&m.forward);
            (Some(Arc::new(m)), engine)
        } else {
            let mut engine = Engine::from_config(&cfg)?;
            engine.opts.dry_run = dry_run;
            engine.opts.force = force;
            (None, Arc::new(engine))
        };
        let users = select_users(&cfg, &sel).await?;
        let concurrency = concurrency
            .or(cfg.migration.as_ref().map(|m| m.concurrency as usize))
            .unwrap_or(1)
            .max(1);
        let progress = Arc::new(Progress::new(json, users.len()));
        let started = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for user in users {
            let (engine, progress, sem) = (Arc::clone(&engine), Arc::clone(&progress), Arc::clone(&sem));
            let mover = mover.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let reporter: Arc<dyn Reporter> = progress.clone();
                let result = match mover {
                    Some(m) => m.cutover(&user, None, reporter).await.map(|r| {
                        print_cutover(json, &r);
                        // One line for the whole move: presyncs and the final pass.
                        let mut all = PassReport {
                            user: r.user.clone(),
                            ..PassReport::default()
                        };
                        for p in r.presyncs.iter().chain(r.final_pass.as_ref()) {
                            all.folders.extend(p.folders.iter().cloned());
                            all.errors.extend(p.errors.iter().cloned());
                            all.seconds += p.seconds;
                            all.sieve.then(&p.sieve);
                        }
                        all
                    }),
                    None => engine.pass(&user, None, reporter).await,
                };
                (user, result)
            });
        }
        let (mut ok, mut total_msgs, mut total_bytes) = (true, 0u64, 0u64);
        let mut stopping = false;
        loop {
            let done = tokio::select! {
                d = tasks.join_next() => match d {
                    Some(d) => d,
                    None => break,
                },
                // Plain passes stop at once (a later pass picks up where this
                // one was); cutovers get the grace to finish or undo a hold.
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    ok = false;
                    if !cutover {
                        tasks.abort_all();
                    }
                    continue;
                }
                _ = past_grace(&stop, cfg.shutdown_grace) => {
                    eprintln!("mailshift: shutdown_grace reached; exiting");
                    tasks.abort_all();
                    break;
                }
            };
            let (user, result) = match done {
                Ok(r) => r,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => return Err(e).context("a migration task failed"),
            };
            match result {
                Ok(report) => {
                    ok &= report.errors.is_empty();
                    total_msgs += report.copied();
                    total_bytes += report.bytes();
                    progress.user_done(&report);
                }
                Err(e) => {
                    ok = false;
                    if json {
                        println!("{}", serde_json::json!({"event": "error", "user": user, "error": e.to_string()}));
                    } else {
                        eprintln!("{user}: {e}");
                    }
                }
            }
        }
        if let Some(b) = &progress.overall {
            b.finish_and_clear();
        }
        let secs = started.elapsed().as_secs_f64();
        let verb = if dry_run { "to copy" } else { "copied" };
        // The rate of the last real pass that moved enough to measure, for
        // dry-run estimates.
        let rate_file = cfg.migration.as_ref().map(|m| m.state_dir.join("last_rate.json"));
        let rate = rate_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["bytes_per_second"].as_f64())
            .filter(|r| *r > 0.0);
        if !dry_run && total_bytes >= 1 << 20 && secs > 0.0 {
            if let Some(f) = &rate_file {
                let measured = serde_json::json!({"bytes_per_second": total_bytes as f64 / secs});
                let _ = std::fs::write(f, measured.to_string());
            }
        }
        let estimate = if dry_run { rate.map(|r| total_bytes as f64 / r) } else { None };
        if json {
            println!(
                "{}",
                serde_json::json!({"event": "done", "dry_run": dry_run, "messages": total_msgs, "bytes": total_bytes, "seconds": secs, "estimated_seconds": estimate})
            );
        } else {
            eprintln!(
                "{total_msgs} messages ({}) {verb}; {secs:.2}s",
                human(total_bytes)
            );
            if dry_run {
                match (estimate, rate) {
                    (Some(e), Some(r)) => eprintln!(
                        "estimate: {e:.0}s at the last measured rate of {}/s",
                        human(r as u64)
                    ),
                    _ => eprintln!("estimate: no pass measured yet (run one user first)"),
                }
            }
        }
        Ok(ok)
    })
}

/// `mailshift verify`; `Ok(true)` when nothing is missing. With `report`,
/// the per-user report (JSON or HTML by the file's extension) is written
/// there and kept under `state_dir/reports/` for the admin API.
pub fn verify(
    config: &Path,
    user: &str,
    json: bool,
    report: Option<&Path>,
) -> anyhow::Result<bool> {
    let cfg = load(config)?;
    runtime()?.block_on(async move {
        let engine = Engine::from_config(&cfg)?;
        if let Some(path) = report {
            let r = mailshift::report::UserReport::build(&engine, user, "verify").await?;
            r.write_to(path)
                .with_context(|| format!("writing {}", path.display()))?;
            if let Some(m) = &cfg.migration {
                r.keep(&m.state_dir).with_context(|| {
                    format!("keeping the report under {}", m.state_dir.display())
                })?;
            }
        }
        let v = verify::verify(&engine, user, None).await?;
        if json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            for f in &v.folders {
                let state = if f.missing.is_empty() && f.flag_mismatches.is_empty() {
                    "ok"
                } else {
                    "DIFFERS"
                };
                println!(
                    "{state:7} {} -> {}: source {}, destination {} ({} only on the destination)",
                    f.folder, f.dest, f.source, f.destination, f.extra
                );
                for m in &f.missing {
                    println!("        missing: {m}");
                }
                for m in &f.flag_mismatches {
                    println!("        flags: {m}");
                }
            }
            if let Some(s) = &v.sieve {
                let state = if s.ok() { "ok" } else { "DIFFERS" };
                println!(
                    "{state:7} sieve: active {:?} -> {:?}",
                    s.active_source, s.active_destination
                );
                for m in &s.missing {
                    println!("        missing sieve script: {m}");
                }
                for m in &s.differs {
                    println!("        sieve script differs: {m}");
                }
            }
            println!(
                "{}: {}",
                user,
                if v.ok() { "verified" } else { "NOT complete" }
            );
        }
        Ok(v.ok())
    })
}

/// `mailshift status`: what the sync state records.
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
