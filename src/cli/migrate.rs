//! `mailshift migrate`: one incremental pass (or a cutover) for a selection
//! of users, several at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use mailshift::migrate::sync::{Engine, PassReport};
use mailshift::migrate::Reporter;

use super::cutover::{mover, print_cutover};
use super::progress::Progress;
use super::signals::{past_grace, stop_on_signals};
use super::{human, load, runtime, select_users, Selection};

/// How `migrate` runs.
pub struct Mode {
    pub dry_run: bool,
    pub cutover: bool,
    pub force: bool,
    pub json: bool,
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
                            // Each pass reports all it tied so far: the last one counts.
                            if p.pop3_uidls.enabled {
                                all.pop3_uidls = p.pop3_uidls.clone();
                            }
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
