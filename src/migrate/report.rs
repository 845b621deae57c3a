//! The per-user report: what an admin keeps as proof that a user was moved
//! whole. Per folder the counts on both sides and the map of names, anything
//! missing, every message the new store refused and why, flag differences,
//! the hold time. Written as JSON and HTML under `state_dir/reports/` after
//! every cutover and by `mailshift verify --report`; the admin API serves it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::sync::Engine;
use super::verify;
use crate::events::{file_stem, now_unix};

/// One folder.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FolderLine {
    /// Name on the old store.
    pub folder: String,
    /// Name on the new store.
    pub dest: String,
    /// Messages on the old store.
    pub source: usize,
    /// Messages on the new store.
    pub destination: usize,
    /// Messages only on the new store (arrived there, or the user's own).
    pub extra: usize,
    /// Old-store messages with no copy on the new store.
    pub missing: Vec<String>,
    /// Messages whose system flags differ.
    pub flag_mismatches: Vec<String>,
}

/// A message the new store refused.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// Folder on the old store.
    pub folder: String,
    /// UID on the old store.
    pub uid: u32,
    /// The store's answer.
    pub reason: String,
}

/// The report of one user.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UserReport {
    /// The user.
    pub user: String,
    /// When it was made (Unix seconds).
    pub generated: u64,
    /// Nothing missing, nothing refused, no flag differs.
    pub ok: bool,
    /// What made it: `cutover` or `verify`.
    pub origin: String,
    /// Seconds the user was held, when made by a cutover.
    pub hold_seconds: Option<f64>,
    /// Where the user is routed.
    pub mailhost: Option<String>,
    /// Per folder.
    pub folders: Vec<FolderLine>,
    /// Messages the new store refused.
    pub refused: Vec<Refused>,
}

impl UserReport {
    /// Compares the user's two mailboxes and reads what the sync state
    /// records as refused.
    pub async fn build(
        engine: &Engine,
        user: &str,
        origin: &str,
    ) -> Result<UserReport, crate::migrate::Error> {
        let v = verify::verify(engine, user, None).await?;
        let mut refused = Vec::new();
        for (folder, state) in engine.state.folders(&user.to_lowercase())? {
            for f in state.failed {
                refused.push(Refused {
                    folder: folder.clone(),
                    uid: f.uid,
                    reason: f.reason,
                });
            }
        }
        let folders: Vec<FolderLine> = v
            .folders
            .into_iter()
            .map(|f| FolderLine {
                folder: f.folder,
                dest: f.dest,
                source: f.source,
                destination: f.destination,
                extra: f.extra,
                missing: f.missing,
                flag_mismatches: f.flag_mismatches,
            })
            .collect();
        let ok = refused.is_empty()
            && folders
                .iter()
                .all(|f| f.missing.is_empty() && f.flag_mismatches.is_empty());
        Ok(UserReport {
            user: user.to_string(),
            generated: now_unix(),
            ok,
            origin: origin.to_string(),
            hold_seconds: None,
            mailhost: None,
            folders,
            refused,
        })
    }

    /// The report as a standalone HTML page (no scripts, no outside links).
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>mailshift report: {u}</title>\
             <style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.bad{{color:#b00}}.ok{{color:#070}}</style>\
             </head><body><h1>{u}</h1><p class=\"{cls}\" id=\"verdict\">{verdict}</p><p>made by {o} at {t} (Unix time){hold}{host}</p>",
            u = esc(&self.user),
            cls = if self.ok { "ok" } else { "bad" },
            verdict = if self.ok { "complete: the new mailbox holds everything" } else { "NOT complete" },
            o = esc(&self.origin),
            t = self.generated,
            hold = self.hold_seconds.map(|s| format!("; hold {s:.2} s")).unwrap_or_default(),
            host = self.mailhost.as_deref().map(|m| format!("; mailHost {}", esc(m))).unwrap_or_default(),
        );
        h.push_str("<h2>Folders</h2><table><tr><th>old store</th><th>new store</th><th>messages old</th><th>messages new</th><th>only on new</th><th>missing</th><th>flags differ</th></tr>");
        for f in &self.folders {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.folder),
                esc(&f.dest),
                f.source,
                f.destination,
                f.extra,
                esc(&f.missing.join("; ")),
                esc(&f.flag_mismatches.join("; "))
            );
        }
        h.push_str("</table><h2>Refused by the new store</h2>");
        if self.refused.is_empty() {
            h.push_str("<p>none</p>");
        } else {
            h.push_str("<table id=\"refused\"><tr><th>folder</th><th>uid</th><th>why</th></tr>");
            for r in &self.refused {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.folder),
                    r.uid,
                    esc(&r.reason)
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</body></html>\n");
        h
    }

    /// Writes `FILE.json` or `FILE.html` by the extension (anything else: JSON).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let body = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html"))
        {
            self.html()
        } else {
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)?
        };
        std::fs::write(path, body)
    }

    /// Keeps the report under `state_dir/reports/` (JSON and HTML), replacing
    /// the user's previous one.
    pub fn keep(&self, state_dir: &Path) -> std::io::Result<PathBuf> {
        let dir = state_dir.join("reports");
        std::fs::create_dir_all(&dir)?;
        let json = dir.join(format!("{}.json", file_stem(&self.user)));
        self.write_to(&dir.join(format!("{}.html", file_stem(&self.user))))?;
        // JSON last: its presence means the pair is whole.
        self.write_to(&json)?;
        Ok(json)
    }

    /// The user's kept report, if any.
    pub fn kept(state_dir: &Path, user: &str) -> Option<UserReport> {
        let path = state_dir
            .join("reports")
            .join(format!("{}.json", file_stem(user)));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_a_store_or_a_user_wrote() {
        let r = UserReport {
            user: "a<b".into(),
            refused: vec![Refused {
                folder: "INBOX".into(),
                uid: 7,
                reason: "NO <script>".into(),
            }],
            ..UserReport::default()
        };
        let h = r.html();
        assert!(
            h.contains("a&lt;b") && h.contains("NO &lt;script&gt;"),
            "{h}"
        );
        assert!(!h.contains("<script>"));
    }

    #[test]
    fn kept_reports_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = UserReport {
            user: "Bob".into(),
            ok: true,
            ..UserReport::default()
        };
        r.keep(dir.path()).expect("keep");
        assert!(UserReport::kept(dir.path(), "bob").is_some_and(|k| k.ok));
        assert!(dir.path().join("reports/bob.html").exists());
    }
}
