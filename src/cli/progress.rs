//! How `migrate` and `rollback` show progress: bars on a terminal, plain
//! lines in scripts, JSON on request.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mailshift::migrate::sync::PassReport;
use mailshift::migrate::{Event, Reporter};

use super::human;

/// How progress is shown.
enum Output {
    Bars(MultiProgress),
    Plain,
    Json,
}

/// Progress of one command's users.
pub struct Progress {
    output: Output,
    bars: Mutex<std::collections::HashMap<String, ProgressBar>>,
    /// The bar over all users (when there are several, on a terminal).
    pub overall: Option<ProgressBar>,
}

impl Progress {
    /// For `users` users; JSON lines when `json`.
    pub fn new(json: bool, users: usize) -> Progress {
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

    /// One user's pass is over: its summary line and its failures.
    pub fn user_done(&self, report: &PassReport) {
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
        if report.pop3_uidls.enabled && !matches!(self.output, Output::Json) {
            eprintln!("  {}", report.pop3_uidls.summary());
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
