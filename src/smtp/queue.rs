//! The retry queue: only for the one outcome SMTP cannot express — some stores
//! took the message, another temp-failed after end-of-data. The message and
//! the recipients still owed are written durably (fsync, then rename, then
//! fsync of the directory) before the client hears `250`, and retried with
//! back-off; a permanent failure or the end of `queue_lifetime` sends a DSN
//! (RFC 3464) to the envelope sender. Empty in normal operation.
//!
//! ```text
//!  queue_dir/tmp/ID.spool   message bytes of a transaction in flight (only past SPOOL_MEMORY_BYTES)
//!  queue_dir/msg/ID.eml     the message as sent to the stores (dot-stuffed, ends CRLF.CRLF)
//!  queue_dir/msg/ID.json    the envelope; its presence commits the entry
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail_parser::MessageParser;
use serde::{Deserialize, Serialize};

/// Message bytes kept in memory during a transaction before they spill to a
/// file in `queue_dir/tmp`: typical mail fits, a 50 MB attachment does not
/// stay in memory.
pub const SPOOL_MEMORY_BYTES: usize = 1024 * 1024;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A queued delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Queue id (also the file names).
    pub id: String,
    /// Envelope sender; empty for `<>` (a DSN is never bounced).
    pub from: String,
    /// Recipients still owed.
    pub rcpts: Vec<String>,
    /// The message needs SMTPUTF8.
    pub smtputf8: bool,
    /// When it was accepted (Unix seconds).
    pub created: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When to try next (Unix milliseconds).
    pub next_attempt_ms: u64,
    /// The last store reply or error.
    pub last_error: String,
    /// The client that sent it, for the DSN.
    pub client: String,
}

/// The bytes of one transaction's message, in memory and then in a file.
pub struct Spool {
    mem: Vec<u8>,
    file: Option<(std::fs::File, PathBuf)>,
    tmp_dir: PathBuf,
    id: String,
    /// Set when writing failed; the message can then not be queued.
    pub failed: bool,
}

impl Spool {
    /// Appends message bytes. Up to [`SPOOL_MEMORY_BYTES`] they stay in
    /// memory; past it they go to a file in batches of that size, written on
    /// a blocking thread (a disk under writeback pressure must not stall the
    /// runtime's threads).
    pub async fn write(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        self.mem.extend_from_slice(bytes);
        if self.mem.len() > SPOOL_MEMORY_BYTES {
            self.spill().await;
        }
    }

    /// Writes what is in memory to the spool file (created on first use).
    async fn spill(&mut self) {
        let batch = std::mem::take(&mut self.mem);
        let file = self.file.take();
        let path = self.tmp_dir.join(format!("{}.spool", self.id));
        // The file comes back whatever happens, so Drop can remove it.
        let done = tokio::task::spawn_blocking(move || {
            let (mut f, path) = match file {
                Some(open) => open,
                None => match std::fs::File::create(&path) {
                    Ok(f) => (f, path),
                    Err(e) => return (None, Err((e, path))),
                },
            };
            let written = f.write_all(&batch).map_err(|e| (e, path.clone()));
            (Some((f, path)), written)
        })
        .await;
        match done {
            Ok((file, written)) => {
                self.file = file;
                if let Err((e, path)) = written {
                    tracing::error!(error = %e, path = %path.display(), "cannot spool message");
                    self.failed = true;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot spool message");
                self.failed = true;
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some((_, path)) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The queue on disk and its index in memory.
pub struct Queue {
    dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Wakes the retry loop when an entry is added.
    pub added: tokio::sync::Notify,
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Runs file work that fsyncs on a blocking thread.
async fn blocking(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

impl Queue {
    /// Opens (creating) the queue directory and loads committed entries;
    /// leftovers of interrupted writes are removed.
    pub fn open(dir: &Path) -> std::io::Result<Queue> {
        let msg = dir.join("msg");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&msg)?;
        std::fs::create_dir_all(&tmp)?;
        for e in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(e?.path());
        }
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(&msg)? {
            let path = e?.path();
            match path.extension().and_then(|x| x.to_str()) {
                Some("json") => match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                {
                    Some(entry) if path.with_extension("eml").exists() => {
                        entries.insert(entry.id.clone(), entry);
                    }
                    _ => {
                        tracing::error!(path = %path.display(), "unreadable queue entry left in place")
                    }
                },
                Some("eml") if !path.with_extension("json").exists() => {
                    // Written, but the envelope never committed: the client
                    // was not answered 250, so it retries.
                    let _ = std::fs::remove_file(&path);
                }
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        if !entries.is_empty() {
            tracing::info!(entries = entries.len(), dir = %dir.display(), "retry queue loaded");
        }
        crate::metrics::METRICS.smtp_queue.set(entries.len() as i64);
        Ok(Queue {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
            added: tokio::sync::Notify::new(),
        })
    }

    /// A spool for a transaction's message.
    pub fn spool(&self, id: &str) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            tmp_dir: self.dir.join("tmp"),
            id: id.to_string(),
            failed: false,
        }
    }

    /// The message file of an entry.
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.dir.join("msg").join(format!("{id}.eml"))
    }

    fn envelope_path(&self, id: &str) -> PathBuf {
        self.dir.join("msg").join(format!("{id}.json"))
    }

    /// Writes the message and its envelope durably. Only after `Ok` may the
    /// client be told `250`. The writes and their fsyncs run on a blocking
    /// thread, never on the runtime's.
    pub async fn add(&self, spool: Spool, entry: Entry) -> std::io::Result<()> {
        if spool.failed {
            return Err(std::io::Error::other("message spool incomplete"));
        }
        let eml = self.message_path(&entry.id);
        let envelope = self.envelope_path(&entry.id);
        let json = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        blocking(move || {
            let mut spool = spool;
            match spool.file.take() {
                Some((mut f, path)) => {
                    // The tail not spilled yet.
                    f.write_all(&spool.mem)?;
                    f.sync_all()?;
                    std::fs::rename(&path, &eml)?;
                }
                None => {
                    let mut f = std::fs::File::create(&eml)?;
                    f.write_all(&spool.mem)?;
                    f.sync_all()?;
                }
            }
            write_durably(&envelope, &json)
        })
        .await?;
        self.lock().insert(entry.id.clone(), entry);
        crate::metrics::METRICS.smtp_queue.set(self.len() as i64);
        self.added.notify_one();
        Ok(())
    }

    /// Adds a message given whole (a DSN).
    pub async fn add_bytes(&self, bytes: &[u8], entry: Entry) -> std::io::Result<()> {
        let mut spool = self.spool(&entry.id);
        spool.write(bytes).await;
        self.add(spool, entry).await
    }

    /// Records an attempt that left recipients owed.
    pub async fn update(&self, entry: Entry) -> std::io::Result<()> {
        let envelope = self.envelope_path(&entry.id);
        let json = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        blocking(move || write_durably(&envelope, &json)).await?;
        self.lock().insert(entry.id.clone(), entry);
        Ok(())
    }

    /// Removes an entry whose recipients are all settled.
    pub async fn remove(&self, id: &str) {
        let (envelope, message) = (self.envelope_path(id), self.message_path(id));
        let msg_dir = self.dir.join("msg");
        let _ = blocking(move || {
            let _ = std::fs::remove_file(envelope);
            let _ = std::fs::remove_file(message);
            sync_dir(&msg_dir)
        })
        .await;
        self.lock().remove(id);
        crate::metrics::METRICS.smtp_queue.set(self.len() as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every entry (status, tests).
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().values().cloned().collect()
    }

    /// Entries due now, and how long until the next one is due.
    pub fn due(&self, now_ms: u64) -> (Vec<Entry>, Option<Duration>) {
        let entries = self.lock();
        let due = entries
            .values()
            .filter(|e| e.next_attempt_ms <= now_ms)
            .cloned()
            .collect();
        let next = entries
            .values()
            .filter(|e| e.next_attempt_ms > now_ms)
            .map(|e| Duration::from_millis(e.next_attempt_ms - now_ms))
            .min();
        (due, next)
    }
}

/// The wait before attempt `attempts + 1`: `first`, doubling, at most an hour.
pub fn backoff(first: Duration, attempts: u32) -> Duration {
    first
        .saturating_mul(1u32 << attempts.min(16))
        .min(MAX_BACKOFF.max(first))
}

/// A delivery status notification (RFC 3464) for recipients that failed.
pub fn dsn(
    hostname: &str,
    id: &str,
    entry: &Entry,
    failed: &[(String, String)],
    original_headers: &[u8],
    date: &str,
) -> Vec<u8> {
    let boundary = format!("{id}/{hostname}");
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{}>\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: {date}\r\n\
         Message-ID: <{id}.dsn@{hostname}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n",
        entry.from
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Your message could not be delivered to the following recipients:\r\n\r\n"
    ));
    for (rcpt, why) in failed {
        m.push_str(&format!("<{rcpt}>: {why}\r\n"));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; {hostname}\r\nX-Mailshift-Queue-ID: {id}\r\nArrival-Date: {date}\r\n"
    ));
    for (rcpt, why) in failed {
        let status = why
            .split(' ')
            .nth(1)
            .filter(|s| s.len() >= 5 && s.starts_with(['4', '5']))
            .map(|s| format!("5{}", &s[1..]))
            .unwrap_or_else(|| "5.0.0".into());
        m.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\n\
             Diagnostic-Code: smtp; {why}\r\n"
        ));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(original_headers);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    dot_stuff_and_end(&out)
}

/// Wire form of a whole message: dot-stuffed, ending `CRLF.CRLF`.
pub fn dot_stuff_and_end(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for l in message.split_inclusive(|&b| b == b'\n') {
        if l.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(l);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The header block of a stored message (wire form), for a DSN: its fields
/// as mail-parser delimits them (folded lines kept, the blank line and the
/// body left out), dot-stuffing undone.
pub fn headers_of(path: &Path) -> Vec<u8> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let message = undo_dot_stuffing(&bytes);
    let end = MessageParser::new()
        .parse_headers(&message)
        .and_then(|m| {
            m.root_part()
                .headers()
                .last()
                .map(|h| h.offset_end as usize)
        })
        .unwrap_or(0);
    message.get(..end).unwrap_or_default().to_vec()
}

/// A message from its wire form: a leading dot taken off every line.
fn undo_dot_stuffing(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    for l in wire.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(l.strip_prefix(b".").unwrap_or(l));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            from: "a@example.net".into(),
            rcpts: vec!["bob@example.org".into()],
            smtputf8: false,
            created: 1,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: String::new(),
            client: "192.0.2.1".into(),
        }
    }

    #[tokio::test]
    async fn entries_survive_a_reopen_and_half_written_ones_do_not() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let q = Queue::open(dir.path()).expect("open");
            let mut s = q.spool("one");
            s.write(b"Subject: x\r\n\r\nhi\r\n.\r\n").await;
            q.add(s, entry("one")).await.expect("add");
            // A crash between the message and its envelope.
            std::fs::write(q.message_path("two"), b"x").expect("write");
        }
        let q = Queue::open(dir.path()).expect("reopen");
        assert_eq!(q.entries(), vec![entry("one")]);
        assert!(!q.message_path("two").exists());
        assert_eq!(
            std::fs::read(q.message_path("one")).expect("read"),
            b"Subject: x\r\n\r\nhi\r\n.\r\n"
        );
        q.remove("one").await;
        assert!(Queue::open(dir.path()).expect("again").is_empty());
    }

    #[tokio::test]
    async fn big_messages_spill_to_a_file_and_are_renamed_into_the_queue() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = Queue::open(dir.path()).expect("open");
        let mut s = q.spool("big");
        // Nine distinct chunks: two batches spilled, the tail in memory
        // until the message is queued; the file must hold them in order.
        let mut all = Vec::new();
        for i in 0..9u8 {
            let chunk = vec![b'a' + i; 300 * 1024];
            s.write(&chunk).await;
            all.extend_from_slice(&chunk);
        }
        assert!(s.file.is_some() && !s.mem.is_empty());
        q.add(s, entry("big")).await.expect("add");
        assert!(std::fs::read(q.message_path("big")).expect("read") == all);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn a_dsn_quotes_the_header_block_folded_as_sent() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("m.eml");
        // Wire form: a header line and a body line dot-stuffed, folded and
        // encoded fields, ending CRLF.CRLF.
        std::fs::write(
            &path,
            b"Subject: =?UTF-8?Q?caf=C3=A9?=\r\n =?UTF-8?B?w6TDtg==?=\r\n\
              ..dotted: x\r\nTo: a@x,\r\n\tb@x\r\n\r\nbody\r\n..line\r\n.\r\n",
        )
        .expect("write");
        assert_eq!(
            String::from_utf8(headers_of(&path)).expect("utf8"),
            "Subject: =?UTF-8?Q?caf=C3=A9?=\r\n =?UTF-8?B?w6TDtg==?=\r\n\
             .dotted: x\r\nTo: a@x,\r\n\tb@x\r\n"
        );
        assert!(headers_of(&dir.path().join("gone.eml")).is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(60), 0), s(60));
        assert_eq!(backoff(s(60), 2), s(240));
        assert_eq!(backoff(s(60), 30), s(3600));
    }

    #[test]
    fn dsn_names_every_failed_recipient() {
        let d = dsn(
            "mx.test",
            "Q1",
            &entry("Q1"),
            &[("bob@example.org".into(), "550 5.1.1 unknown".into())],
            b"Subject: hi\r\n.hidden: x\r\n",
            "Mon, 01 Jan 2024 00:00:00 +0000",
        );
        let t = String::from_utf8(d).expect("utf8");
        assert!(
            t.contains(
                "Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1"
            ),
            "{t}"
        );
        assert!(t.contains("\r\n..hidden: x\r\n"), "dot-stuffed: {t}");
        assert!(t.ends_with("\r\n.\r\n"));
    }
}
