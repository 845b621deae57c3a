//! Migration events: one structured record per state change of a user
//! (queued, pass started/ended with counts, hold set, flip, rollback,
//! failure), written to the log and appended to a per-user JSON Lines file
//! under `state_dir/events/`, which the admin API returns.
//!
//! No database: a file per user, appended to, cut back to its newest half
//! when it passes [`MAX_BYTES`] so a user retried for weeks stays bounded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Past this size an event file keeps only its newest half.
pub const MAX_BYTES: u64 = 128 * 1024;

/// Everything but letters, digits, `-`, `.`, `_` and `@` is encoded, so a
/// login names exactly one file and never a path (`../x` becomes `%2E%2E%2Fx`
/// only where it must: `.` alone is fine, `/` is not).
const FILE_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'@')
    .remove(b'.');

/// The file name for a login's per-user files (events, reports).
pub fn file_stem(user: &str) -> String {
    let stem = utf8_percent_encode(&user.to_lowercase(), FILE_SAFE).to_string();
    // "." and ".." are names with a meaning; a leading dot would also hide the file.
    match stem.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => stem,
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The per-user event lists of one `state_dir`.
#[derive(Debug, Clone)]
pub struct EventLog {
    dir: PathBuf,
    instance: String,
}

impl EventLog {
    /// Event files under `state_dir/events/`; `instance` is recorded with each.
    pub fn new(state_dir: &Path, instance: &str) -> EventLog {
        EventLog {
            dir: state_dir.join("events"),
            instance: instance.to_string(),
        }
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{}.jsonl", file_stem(user)))
    }

    /// Records one event: `kind` plus `fields` (an object), in the log and the
    /// user's list. A write that fails is logged and dropped: the event list
    /// is a record for people, never a reason to stop a move.
    pub fn record(&self, user: &str, kind: &str, fields: serde_json::Value) {
        let mut event = serde_json::json!({
            "time": now_unix(),
            "user": user,
            "event": kind,
            "instance": self.instance,
        });
        if let (Some(e), serde_json::Value::Object(extra)) = (event.as_object_mut(), fields) {
            e.extend(extra);
        }
        let line = event.to_string();
        tracing::info!(user, event = kind, detail = %line, "migration event");
        if let Err(e) = self.append(user, &line) {
            tracing::warn!(user, error = %e, "event not written to {}", self.dir.display());
        }
    }

    fn append(&self, user: &str, line: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(user);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        // One write per line: concurrent appenders (two commands on one
        // state_dir) never interleave within a line.
        f.write_all(format!("{line}\n").as_bytes())?;
        if f.metadata()?.len() > MAX_BYTES {
            let text = std::fs::read_to_string(&path)?;
            let cut = text.len() / 2;
            let keep = match text[cut..].find('\n') {
                Some(i) => &text[cut + i + 1..],
                None => "",
            };
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, keep)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// The user's newest `limit` events, oldest first.
    pub fn read(&self, user: &str, limit: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(user)).unwrap_or_default();
        let all: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let skip = all.len().saturating_sub(limit);
        all.into_iter().skip(skip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_never_name_a_path() {
        assert_eq!(file_stem("Alice@Example.org"), "alice@example.org");
        assert_eq!(file_stem("../etc/passwd"), "%2E.%2Fetc%2Fpasswd");
        assert_eq!(file_stem(".."), "%2E.");
    }

    #[test]
    fn the_list_stays_bounded_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::new(dir.path(), "i1");
        for n in 0..3000 {
            log.record("bob", "pass_ended", serde_json::json!({"n": n}));
        }
        let size = std::fs::metadata(log.path("bob")).expect("file").len();
        assert!(size <= MAX_BYTES + 200, "{size}");
        let last = log.read("bob", 5);
        assert_eq!(last.len(), 5);
        assert_eq!(last[4]["n"], 2999);
        assert_eq!(last[4]["instance"], "i1");
    }
}
