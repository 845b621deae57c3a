//! Soak (issue 14): nothing lost, nothing doubled, nobody left in hold while
//! two `serve` instances migrate in scheduled mode under traffic, kills and
//! restarts.
//!
//!   cargo bench --bench soak -- [--quick] [--users 20] [--messages 200] [--cap 720]
//!                               [--kill-every 60] [--kills N] [--rate 10] [--smtp-conns 8]
//!                               [--appenders 5]
//!                               [--bw BYTES_PER_S | --migrate-secs 300] [--sweep-interval 10]
//!                               [--slapd-at 150] [--store-at 270] [--outage 10]
//!
//! One lab (slapd with syncprov, OLD Maildir, NEW sdbox; tests/support). Users
//! soak0001… get the same generated mailbox (tests/support/corpus.rs, every
//! message with its own `X-Soak-Id`) on the old store and an empty `Soak`
//! folder. Two instances A and B run `mailshift serve` with `mode =
//! "scheduled"`, a window that is always open, `concurrency = 2`, `lease =
//! "10s"`, their own `state_dir` and SMTP queue (kept across restarts), and a
//! bandwidth cap chosen so that the migration spans the fault schedule
//! (otherwise it would be over before the first kill).
//!
//! Traffic, through whichever instance is up (round-robin, like a load balancer):
//! * SMTP: ~`--rate` messages/s over `--smtp-conns` connections (an MTA's
//!   parallel deliveries) to the users round-robin (every 5th message to
//!   two users, so that a split delivery can reach the retry queue). Like an
//!   MTA: a 4xx or a connection lost before the final dot is retried later; a
//!   `250` counts as sent; no reply to the final dot is an unknown outcome (not
//!   retried: the message may be there once or not at all).
//! * IMAP: `--appenders` clients, one per user, each APPENDing a message a
//!   second into `Soak`, reconnecting whenever kicked or dropped. Like a
//!   careful client: an APPEND whose tagged reply never came (unknown outcome)
//!   is retried only after `SEARCH HEADER X-Soak-Id` showed that it did not land.
//!
//! Faults: every `--kill-every` s one instance (alternately) gets SIGKILL and is
//! started again at once; slapd is down for `--outage` s once (`--slapd-at`);
//! the new store is restarted once (`--store-at`).
//!
//! The run lasts until every user is migrated and every fault has happened, or
//! `--cap` s. Then senders stop (pending retries get a minute), the SMTP retry
//! queues must drain, and every user's mailbox is read on the store its
//! `mailHost` now names (all folders) and on the old store. Verdict: every id
//! acknowledged (corpus, SMTP 250, APPEND OK, unknown-but-found) present exactly
//! once; an unknown-outcome id at most once; users migrated =
//! `mailshiftMigrationState: done`; left in hold = `mailUserStatus: hold`.
//! Exit status 1 unless lost = doubled = left-in-hold = 0 and all users migrated.
//! A JSON line goes to target/bench/soak.jsonl.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::proxy::{NEW_HOST, OLD_HOST};
use support::{corpus, Lab, Mailshift};

const STATE: &str = "mailshiftMigrationState";
const FOLDER: &str = "Soak";
/// Read timeout of every client: longer than `hold_wait` (20 s), so a held
/// login or RCPT is waited for, not taken for a dead peer.
const IO_TIMEOUT: Duration = Duration::from_secs(45);
/// How long senders keep retrying what is still pending after the stop.
const DRAIN: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ options

struct Args {
    quick: bool,
    users: usize,
    messages: usize,
    cap: Duration,
    kill_every: Duration,
    kills: Option<usize>,
    rate: f64,
    smtp_conns: usize,
    appenders: usize,
    bw: Option<u64>,
    migrate_secs: u64,
    sweep_interval: u64,
    slapd_at: Duration,
    store_at: Duration,
    outage: Duration,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| argv.iter().any(|a| a == f);
    let val = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let quick = has("--quick");
    let pick = |f: &str, full: f64, q: f64| val(f).unwrap_or(if quick { q } else { full });
    let secs = |f: &str, full: f64, q: f64| Duration::from_secs_f64(pick(f, full, q));
    let users = pick("--users", 20.0, 4.0) as usize;
    Args {
        quick,
        users: users.max(1),
        messages: pick("--messages", 200.0, 50.0) as usize,
        cap: secs("--cap", 720.0, 180.0),
        kill_every: secs("--kill-every", 60.0, 45.0),
        kills: val("--kills").map(|k| k as usize).or(quick.then_some(1)),
        rate: pick("--rate", 10.0, 10.0),
        smtp_conns: (pick("--smtp-conns", 8.0, 8.0) as usize).max(1),
        appenders: (pick("--appenders", 5.0, 4.0) as usize).min(users),
        bw: val("--bw").map(|b| b as u64),
        migrate_secs: pick("--migrate-secs", 300.0, 90.0) as u64,
        sweep_interval: pick("--sweep-interval", 10.0, 10.0) as u64,
        slapd_at: secs("--slapd-at", 150.0, 75.0),
        store_at: secs("--store-at", 270.0, 105.0),
        outage: secs("--outage", 10.0, 10.0),
    }
}

fn login(i: usize) -> String {
    format!("soak{:04}", i + 1)
}
fn password(i: usize) -> String {
    format!("pw{:04}", i + 1)
}

// ------------------------------------------------------------------ shared state

/// Where a live instance listens.
#[derive(Clone, Copy)]
struct Ports {
    imap: u16,
    smtp: u16,
}

/// What clients share with the fault loop.
struct Shared {
    t0: Instant,
    /// `None` while that instance is down.
    ports: Mutex<[Option<Ports>; 2]>,
    rr: AtomicUsize,
    /// No new traffic from now on.
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
}

impl Shared {
    /// Live instances, the next one in round-robin order first.
    fn live(&self) -> Vec<Ports> {
        let ports = *self.ports.lock().expect("ports");
        let first = self.rr.fetch_add(1, Ordering::Relaxed) % 2;
        [first, 1 - first]
            .into_iter()
            .filter_map(|i| ports[i])
            .collect()
    }
    fn event(&self, what: &str) {
        eprintln!("[{:7.1}s] {what}", self.t0.elapsed().as_secs_f64());
    }
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often an id must be found on the user's current store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Expect {
    /// Outcome unknown to the sender: zero or one copy.
    AtMostOnce,
    /// Acknowledged: exactly one copy.
    Once,
}

#[derive(Default)]
struct Ledger {
    /// user → id → expectation.
    expect: HashMap<String, HashMap<String, Expect>>,
    smtp_accepted: u64,
    smtp_deliveries: u64,
    smtp_unknown: u64,
    smtp_rejected: u64,
    smtp_deferrals: u64,
    smtp_never: u64,
    smtp_conn_failures: u64,
    append_ok: u64,
    append_unknown: u64,
    append_unknown_landed: u64,
    append_unknown_retried: u64,
    append_no: u64,
    append_never: u64,
    imap_logins: u64,
    imap_login_failures: u64,
    rejected_samples: Vec<String>,
}

impl Ledger {
    fn expect(&mut self, user: &str, id: &str, e: Expect) {
        let slot = self
            .expect
            .entry(user.to_string())
            .or_default()
            .entry(id.to_string())
            .or_insert(e);
        *slot = (*slot).max(e);
    }
}

// ------------------------------------------------------------------ IMAP client

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// A small IMAP client whose every failure is an `Err` (a kill -9 of the proxy
/// is routine here, not a reason to panic).
struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u32,
}

impl Imap {
    fn connect(port: u16) -> io::Result<Imap> {
        let s = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(3),
        )?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut c = Imap {
            r: BufReader::new(s.try_clone()?),
            w: s,
            tag: 0,
        };
        let g = c.response()?;
        if !g.starts_with("* OK") {
            return Err(other(format!("greeting: {g}")));
        }
        Ok(c)
    }

    /// One response with `{N}` literals folded in.
    fn response(&mut self) -> io::Result<String> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            if self.r.read_until(b'\n', &mut buf)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            let lit = literal_len(&buf);
            out.extend_from_slice(&buf);
            match lit {
                Some(n) => {
                    let mut l = vec![0; n];
                    self.r.read_exact(&mut l)?;
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&l);
                }
                None => return Ok(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    /// Sends a command (with a LITERAL+ literal) and reads to its tagged reply.
    /// A `* BYE` does not end the wait: a draining proxy still sends the answer
    /// to a command in flight; only the connection closing does.
    fn command(&mut self, cmd: &str, literal: Option<&[u8]>) -> io::Result<(Vec<String>, String)> {
        self.tag += 1;
        let tag = format!("s{}", self.tag);
        let mut out = format!("{tag} {cmd}").into_bytes();
        if let Some(l) = literal {
            out.extend_from_slice(format!(" {{{}+}}\r\n", l.len()).as_bytes());
            out.extend_from_slice(l);
        }
        out.extend_from_slice(b"\r\n");
        self.w.write_all(&out)?;
        let mut lines = Vec::new();
        loop {
            let l = self.response()?;
            if l.starts_with(&format!("{tag} ")) {
                return Ok((lines, l));
            }
            lines.push(l);
        }
    }

    fn ok(&mut self, cmd: &str) -> io::Result<Vec<String>> {
        let (lines, tagged) = self.command(cmd, None)?;
        if is_ok(&tagged) {
            Ok(lines)
        } else {
            Err(other(format!("{cmd}: {tagged}")))
        }
    }

    /// True when the server already said BYE or closed (a kick while idle):
    /// then a new command would have an unknown outcome for no reason.
    fn stale(&mut self) -> bool {
        if !self.r.buffer().is_empty() {
            return true;
        }
        if self.w.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let peeked = self.w.peek(&mut b);
        if self.w.set_nonblocking(false).is_err() {
            return true;
        }
        match peeked {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

fn is_ok(tagged: &str) -> bool {
    tagged
        .split(' ')
        .nth(1)
        .is_some_and(|s| s.eq_ignore_ascii_case("OK"))
}

/// `{N}` or `{N+}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|&b| b == b'{')?;
    let digits = &rest[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn quote(s: &str) -> String {
    support::imap::quote(s)
}

/// The mailbox name of a `* LIST (...) "/" name` line.
fn list_name(line: &str) -> Option<String> {
    let rest = line.rsplit_once(") ")?.1;
    let after_sep = if let Some(r) = rest.strip_prefix('"') {
        let end = r.find('"')?;
        r[end + 1..].trim_start()
    } else {
        rest.split_once(' ')?.1
    };
    Some(match after_sep.strip_prefix('"') {
        Some(q) => q
            .strip_suffix('"')?
            .replace("\\\"", "\"")
            .replace("\\\\", "\\"),
        None => after_sep.to_string(),
    })
}

/// Every `X-Soak-Id: <…>` value in a response.
fn soak_ids(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find("x-soak-id:") {
        let start = from + i + "x-soak-id:".len();
        let rest = text[start..].trim_start();
        if let Some(end) = rest.find('>') {
            out.push(rest[..=end].trim().to_string());
        }
        from = start;
    }
    out
}

// ------------------------------------------------------------------ SMTP client

struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> io::Result<Smtp> {
        let s = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(3),
        )?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut c = Smtp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        let (code, text) = c.reply()?;
        if code != 220 {
            return Err(other(format!("greeting: {text}")));
        }
        let (code, text) = c.cmd("EHLO soak.example.net")?;
        if code != 250 {
            return Err(other(format!("EHLO: {text}")));
        }
        Ok(c)
    }

    fn reply(&mut self) -> io::Result<(u16, String)> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        let code = all.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, all.trim_end().to_string()))
    }

    fn cmd(&mut self, line: &str) -> io::Result<(u16, String)> {
        self.w.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }
}

// ------------------------------------------------------------------ SMTP sender

struct Job {
    n: u64,
    rcpts: Vec<usize>,
    due: Instant,
    attempts: u32,
}

struct SmtpWork {
    next_new: u64,
    retry: VecDeque<Job>,
    in_flight: usize,
}

fn smtp_message(n: u64, rcpts: &[String]) -> Vec<u8> {
    let to: Vec<String> = rcpts.iter().map(|u| format!("<{u}@example.org>")).collect();
    format!(
        "From: <soak@sender.example.net>\r\nTo: {}\r\nSubject: soak smtp {n}\r\n\
         Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <smtp.{n}.{}@soak.example.net>\r\n\
         X-Soak-Id: <s.{n}>\r\n\r\nSoak message {n}.\r\n.. a dot-stuffed line\r\n",
        to.join(", "),
        std::process::id()
    )
    .into_bytes()
}

/// What one transaction did.
enum TxOutcome {
    /// Recipients delivered (250 after the final dot), recipients to retry.
    Done(Vec<usize>, Vec<usize>),
    /// No reply to the final dot: these recipients may or may not have it.
    Unknown(Vec<usize>, Vec<usize>),
    /// Nothing delivered; retry these.
    Retry(Vec<usize>),
}

fn transaction(
    c: &mut Smtp,
    job: &Job,
    users: &[String],
    rejected: &mut Vec<String>,
) -> io::Result<TxOutcome> {
    let (code, text) = c.cmd("MAIL FROM:<soak@sender.example.net>")?;
    if code != 250 {
        if code >= 500 {
            rejected.push(format!("MAIL: {text}"));
        }
        return Ok(TxOutcome::Retry(job.rcpts.clone()));
    }
    let (mut ok, mut later) = (Vec::new(), Vec::new());
    for &r in &job.rcpts {
        let (code, text) = c.cmd(&format!("RCPT TO:<{}@example.org>", users[r]))?;
        match code {
            250 | 251 => ok.push(r),
            400..=499 => later.push(r),
            _ => rejected.push(format!("RCPT {}: {text}", users[r])),
        }
    }
    if ok.is_empty() {
        c.cmd("RSET")?;
        return Ok(TxOutcome::Retry(later));
    }
    let (code, text) = c.cmd("DATA")?;
    if code != 354 {
        if code >= 500 {
            rejected.push(format!("DATA: {text}"));
        }
        later.extend(ok);
        return Ok(TxOutcome::Retry(later));
    }
    let names: Vec<String> = job.rcpts.iter().map(|&r| users[r].clone()).collect();
    c.w.write_all(&support::SmtpClient::wire(&smtp_message(job.n, &names)))?;
    match c.reply() {
        Ok((250, _)) => Ok(TxOutcome::Done(ok, later)),
        Ok((code, text)) => {
            if code >= 500 {
                rejected.push(format!("end of data: {text}"));
                Ok(TxOutcome::Retry(later))
            } else {
                later.extend(ok);
                Ok(TxOutcome::Retry(later))
            }
        }
        Err(_) => Ok(TxOutcome::Unknown(ok, later)),
    }
}

/// One sender connection: takes due retries first, then new messages at the
/// pace of `rate`, until stopped and drained.
fn smtp_sender(
    sh: Arc<Shared>,
    work: Arc<Mutex<SmtpWork>>,
    users: Arc<Vec<String>>,
    rate: f64,
    start: Instant,
) {
    let mut conn: Option<Smtp> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if sh.stop.load(Ordering::Relaxed) && drain_until.is_none() {
            drain_until = Some(now + DRAIN);
        }
        let job = {
            let mut w = work.lock().expect("work");
            if drain_until.is_some_and(|d| now > d) {
                if w.in_flight == 0 {
                    let left = w.retry.len() as u64;
                    w.retry.clear();
                    sh.ledger().smtp_never += left;
                }
                return;
            }
            let due_retry = w.retry.iter().position(|j| j.due <= now);
            if let Some(i) = due_retry {
                w.retry.remove(i)
            } else if drain_until.is_none()
                && start + Duration::from_secs_f64(w.next_new as f64 / rate) <= now
            {
                let n = w.next_new;
                w.next_new += 1;
                let a = (n as usize) % users.len();
                let rcpts = if n % 5 == 4 && users.len() > 1 {
                    vec![a, (a + 1) % users.len()]
                } else {
                    vec![a]
                };
                Some(Job {
                    n,
                    rcpts,
                    due: now,
                    attempts: 0,
                })
            } else if drain_until.is_some() && w.retry.is_empty() && w.in_flight == 0 {
                return;
            } else {
                None
            }
            .inspect(|_| w.in_flight += 1)
        };
        let Some(mut job) = job else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if conn.is_none() {
            for p in sh.live() {
                if let Ok(c) = Smtp::connect(p.smtp) {
                    conn = Some(c);
                    break;
                }
            }
        }
        let mut retry = job.rcpts.clone();
        if let Some(c) = conn.as_mut() {
            let mut rejected = Vec::new();
            let res = transaction(c, &job, &users, &mut rejected);
            let mut l = sh.ledger();
            l.smtp_rejected += rejected.len() as u64;
            for r in rejected {
                if l.rejected_samples.len() < 10 {
                    l.rejected_samples.push(r);
                }
            }
            let id = format!("<s.{}>", job.n);
            match res {
                Ok(TxOutcome::Done(ok, later)) => {
                    l.smtp_accepted += 1;
                    l.smtp_deliveries += ok.len() as u64;
                    for r in ok {
                        l.expect(&users[r], &id, Expect::Once);
                    }
                    retry = later;
                }
                Ok(TxOutcome::Unknown(maybe, later)) => {
                    l.smtp_unknown += 1;
                    for r in maybe {
                        l.expect(&users[r], &id, Expect::AtMostOnce);
                    }
                    retry = later;
                    conn = None;
                }
                Ok(TxOutcome::Retry(later)) => retry = later,
                Err(_) => conn = None,
            }
            if !retry.is_empty() {
                l.smtp_deferrals += 1;
            }
        } else {
            sh.ledger().smtp_conn_failures += 1;
        }
        let mut w = work.lock().expect("work");
        w.in_flight -= 1;
        if !retry.is_empty() {
            job.attempts += 1;
            job.rcpts = retry;
            job.due = Instant::now() + Duration::from_secs(u64::from(job.attempts.min(5)) * 2);
            w.retry.push_back(job);
        }
    }
}

// ------------------------------------------------------------------ IMAP appender

enum Pending {
    /// Not sent yet, or known not to have landed.
    Fresh(u64),
    /// Sent; the tagged reply never came.
    Unknown(u64),
}

fn append_message(user: &str, n: u64) -> Vec<u8> {
    format!(
        "From: <{user}@example.org>\r\nTo: <{user}@example.org>\r\nSubject: soak append {n}\r\n\
         Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <append.{user}.{n}.{}@soak.example.net>\r\n\
         X-Soak-Id: {}\r\n\r\nAppended by the soak client.\r\n",
        std::process::id(),
        append_id(user, n)
    )
    .into_bytes()
}

fn append_id(user: &str, n: u64) -> String {
    format!("<a.{user}.{n}>")
}

/// Logs in through a live instance and selects the soak folder.
fn imap_session(sh: &Shared, user: &str, pw: &str) -> Option<Imap> {
    for p in sh.live() {
        let Ok(mut c) = Imap::connect(p.imap) else {
            continue;
        };
        let logged = c.ok(&format!("LOGIN {} {}", quote(user), quote(pw)));
        let mut l = sh.ledger();
        if logged.is_err() {
            l.imap_login_failures += 1;
            continue;
        }
        l.imap_logins += 1;
        drop(l);
        if c.ok(&format!("SELECT {}", quote(FOLDER))).is_err() {
            let _ = c.ok(&format!("CREATE {}", quote(FOLDER)));
            if c.ok(&format!("SELECT {}", quote(FOLDER))).is_err() {
                continue;
            }
        }
        return Some(c);
    }
    None
}

/// One careful client: an APPEND a second, reconnecting whenever dropped.
fn appender(sh: Arc<Shared>, user: String, pw: String) {
    let mut conn: Option<Imap> = None;
    let mut next_n = 0u64;
    let mut pending: Option<Pending> = None;
    let mut next_at = Instant::now();
    let mut drain_until: Option<Instant> = None;
    loop {
        if sh.stop.load(Ordering::Relaxed) && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        if let Some(d) = drain_until {
            if pending.is_none() || Instant::now() > d {
                if pending.is_some() {
                    sh.ledger().append_never += 1;
                }
                if let Some(mut c) = conn.take() {
                    let _ = c.ok("LOGOUT");
                }
                return;
            }
        }
        let now = Instant::now();
        if now < next_at {
            std::thread::sleep((next_at - now).min(Duration::from_millis(200)));
            continue;
        }
        next_at = next_at.max(now - Duration::from_millis(500)) + Duration::from_secs(1);
        if conn.as_mut().is_some_and(|c| c.stale()) {
            conn = None;
        }
        if conn.is_none() {
            conn = imap_session(&sh, &user, &pw);
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let n = match pending.take() {
            Some(Pending::Fresh(n)) => n,
            Some(Pending::Unknown(n)) => {
                let id = append_id(&user, n);
                match c.ok(&format!("UID SEARCH HEADER X-Soak-Id {}", quote(&id))) {
                    Ok(lines) => {
                        let found = lines
                            .iter()
                            .filter_map(|l| l.strip_prefix("* SEARCH"))
                            .any(|rest| !rest.trim().is_empty());
                        let mut l = sh.ledger();
                        if found {
                            l.append_unknown_landed += 1;
                            l.expect(&user, &id, Expect::Once);
                            continue;
                        }
                        l.append_unknown_retried += 1;
                        n
                    }
                    Err(_) => {
                        pending = Some(Pending::Unknown(n));
                        conn = None;
                        continue;
                    }
                }
            }
            None if drain_until.is_some() => continue,
            None => {
                next_n += 1;
                next_n
            }
        };
        let id = append_id(&user, n);
        // While the outcome is open the id may land once; the APPEND's reply
        // upgrades it to "exactly once".
        sh.ledger().expect(&user, &id, Expect::AtMostOnce);
        match c.command(
            &format!("APPEND {} (\\Seen)", quote(FOLDER)),
            Some(&append_message(&user, n)),
        ) {
            Ok((_, tagged)) if is_ok(&tagged) => {
                let mut l = sh.ledger();
                l.append_ok += 1;
                l.expect(&user, &id, Expect::Once);
            }
            Ok((_, tagged)) => {
                // NO/BAD: not stored; the same message goes again.
                sh.ledger().append_no += 1;
                if tagged.contains("TRYCREATE") {
                    let _ = c.ok(&format!("CREATE {}", quote(FOLDER)));
                }
                pending = Some(Pending::Fresh(n));
            }
            Err(_) => {
                sh.ledger().append_unknown += 1;
                pending = Some(Pending::Unknown(n));
                conn = None;
            }
        }
    }
}

// ------------------------------------------------------------------ LDAP, stores

/// `ldapsearch` as the admin; `None` while slapd is down (never panics).
fn ldap_search(lab: &Lab, filter: &str, attrs: &[&str]) -> Option<String> {
    let out = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "nettimeout=5", "-H", &lab.ldap.url()])
        .args(["-D", lab.ldap.admin_dn(), "-w", lab.ldap.admin_password()])
        .args(["-b", lab.ldap.base_dn(), filter])
        .args(attrs)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn count_entries(lab: &Lab, filter: &str) -> Option<usize> {
    ldap_search(lab, filter, &["dn"]).map(|o| o.lines().filter(|l| l.starts_with("dn:")).count())
}

/// user → (attribute → value) for the soak users.
fn user_attrs(lab: &Lab) -> Option<BTreeMap<String, BTreeMap<String, String>>> {
    let out = ldap_search(
        lab,
        "(uid=soak*)",
        &["uid", "mailHost", "mailUserStatus", STATE],
    )?;
    let mut all = BTreeMap::new();
    for entry in out.split("\n\n") {
        let mut m = BTreeMap::new();
        for l in entry.lines() {
            if let Some((k, v)) = l.split_once(": ") {
                m.insert(k.to_string(), v.to_string());
            }
        }
        if let Some(uid) = m.get("uid").cloned() {
            all.insert(uid, m);
        }
    }
    Some(all)
}

/// id → the folders holding a copy (one entry per copy), over every
/// selectable folder of `user` on a store (as the master user, straight to
/// the store).
fn scan_store(port: u16, user: &str) -> io::Result<HashMap<String, Vec<String>>> {
    let mut c = Imap::connect(port)?;
    c.ok(&format!(
        "LOGIN {} adminpw",
        quote(&format!("{user}*admin"))
    ))?;
    let names: Vec<String> = c
        .ok("LIST \"\" \"*\"")?
        .iter()
        .filter(|l| l.starts_with("* LIST"))
        .filter(|l| !l.contains("\\Noselect") && !l.contains("\\NonExistent"))
        .filter_map(|l| list_name(l))
        .collect();
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for name in names {
        let exists: u64 = c
            .ok(&format!("EXAMINE {}", quote(&name)))?
            .iter()
            .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
            .unwrap_or(0);
        if exists == 0 {
            continue;
        }
        for l in c.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (X-SOAK-ID)])")? {
            for id in soak_ids(&l) {
                ids.entry(id).or_default().push(name.clone());
            }
        }
    }
    let _ = c.ok("LOGOUT");
    Ok(ids)
}

fn queued(dir: &Path) -> usize {
    fs::read_dir(dir.join("msg"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------------ verification

#[derive(Default)]
struct UserResult {
    host: String,
    state: String,
    status: String,
    expected: usize,
    found: usize,
    lost: usize,
    lost_on_old: usize,
    doubled: usize,
    unexpected: usize,
    error: Option<String>,
    lost_ids: Vec<String>,
    doubled_ids: Vec<String>,
}

fn verify(lab: &Lab, sh: &Shared, users: &[String]) -> Vec<UserResult> {
    let attrs = user_attrs(lab).unwrap_or_default();
    let ledger = sh.ledger();
    let empty = HashMap::new();
    users
        .iter()
        .map(|u| {
            let a = attrs.get(u);
            let get = |k: &str| a.and_then(|m| m.get(k)).cloned().unwrap_or_default();
            let mut r = UserResult {
                host: get("mailHost"),
                state: get(STATE),
                status: get("mailUserStatus"),
                ..UserResult::default()
            };
            let on_new = r.host == NEW_HOST;
            let port = if on_new {
                lab.new.imap_port()
            } else {
                lab.old.imap_port()
            };
            let cur = match scan_store(port, u) {
                Ok(c) => c,
                Err(e) => {
                    r.error = Some(format!("reading {}: {e}", r.host));
                    HashMap::new()
                }
            };
            let old = if on_new {
                scan_store(lab.old.imap_port(), u).unwrap_or_default()
            } else {
                HashMap::new()
            };
            let want = ledger.expect.get(u).unwrap_or(&empty);
            r.expected = want.values().filter(|e| **e == Expect::Once).count();
            for (id, e) in want {
                let at = cur.get(id).map(Vec::as_slice).unwrap_or_default();
                let n = at.len();
                if n > 1 {
                    r.doubled += 1;
                    r.doubled_ids
                        .push(format!("{id}×{n} ({e:?}; in {})", at.join(",")));
                } else if n == 0 && *e == Expect::Once {
                    r.lost += 1;
                    if old.contains_key(id) {
                        r.lost_on_old += 1;
                    }
                    r.lost_ids.push(id.clone());
                } else if n == 1 {
                    r.found += 1;
                }
            }
            for (id, at) in &cur {
                if !want.contains_key(id) {
                    r.unexpected += 1;
                    if at.len() > 1 {
                        r.doubled += 1;
                        r.doubled_ids.push(format!(
                            "{id}×{} (never acknowledged; in {})",
                            at.len(),
                            at.join(",")
                        ));
                    }
                }
            }
            r.lost_ids.sort();
            r.doubled_ids.sort();
            r
        })
        .collect()
}

// ------------------------------------------------------------------ main

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts an instance, retrying (a start may fail while slapd or a store is
/// down); `None` after a minute.
fn start_instance(sh: &Shared, name: &str, cfg: &str) -> Option<Mailshift> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match std::panic::catch_unwind(AssertUnwindSafe(|| Mailshift::start(cfg))) {
            Ok(m) => return Some(m),
            Err(_) if Instant::now() < until => {
                sh.event(&format!("instance {name} did not start; again in 2 s"));
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(_) => return None,
        }
    }
}

/// Appends an instance's log (it lives in a temp dir that goes with it) to
/// `logs/NAME.log`, so a failed verdict can be traced.
fn keep_log(logs: &Path, name: &str, m: &Mailshift, why: &str) {
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))
    {
        let _ = writeln!(f, "===== instance {name}: {why}\n{}", m.log());
    }
}

fn main() {
    let a = args();
    let run_id = format!("soak-{}", now_secs());
    let out_dir = support::repo_dir().join("target/bench");
    let logs = out_dir.join(&run_id);
    fs::create_dir_all(&logs).expect("mkdir target/bench/RUN");
    let jsonl_path = out_dir.join("soak.jsonl");

    // ---- the lab and the mailboxes
    let t_setup = Instant::now();
    let lab = Lab::start(true);
    let dir = support::shared_tempdir("mailshift-soak-");
    let users: Vec<String> = (0..a.users).map(login).collect();
    for (i, u) in users.iter().enumerate() {
        lab.ldap.add_user(u, &password(i), OLD_HOST);
    }
    let mut msgs = corpus::generate(a.messages, 14);
    for (i, m) in msgs.iter_mut().enumerate() {
        let eol: &[u8] = if m.body.windows(2).any(|w| w == b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        let mut body = format!("X-Soak-Id: <c.{i}>").into_bytes();
        body.extend_from_slice(eol);
        body.extend_from_slice(&m.body);
        m.body = body;
    }
    let user_bytes: u64 = msgs.iter().map(|m| m.body.len() as u64).sum();
    corpus::load(lab.old.imap_port(), &users[0], "admin", "adminpw", &msgs);
    {
        let mut c = Imap::connect(lab.old.imap_port()).expect("old store");
        c.ok(&format!(
            "LOGIN {} adminpw",
            quote(&format!("{}*admin", users[0]))
        ))
        .expect("master login");
        c.ok(&format!("CREATE {}", quote(FOLDER)))
            .expect("CREATE Soak");
        let _ = c.ok(&format!("SUBSCRIBE {}", quote(FOLDER)));
        let _ = c.ok("LOGOUT");
    }
    // The same mailbox for everyone: a byte copy is much faster than APPENDs.
    for u in &users[1..] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(lab.old.mail_home(&users[0]))
            .arg(lab.old.mail_home(u))
            .status()
            .expect("cp");
        assert!(st.success(), "cp -a {u}");
    }
    let bw = match a.bw {
        Some(0) => None,
        Some(b) => Some(b),
        None => Some((user_bytes * a.users as u64 / (2 * a.migrate_secs.max(1))).max(20_000)),
    };
    let config = |id: &str| {
        lab.mailshift_config(&format!(
            "[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\n\
             hostname = \"mx.soak\"\nqueue_dir = \"{queue}\"\nretry_interval = \"2s\"\n\
             max_connections_per_ip = 1000\n\n\
             [migration]\nfrom = \"old\"\nto = \"new\"\nmode = \"scheduled\"\n\
             state_dir = \"{state}\"\ninstance_id = \"{id}\"\nusers_filter = \"(uid=soak*)\"\n\
             windows = [\"Mon-Sun 00:00-24:00\"]\nconcurrency = 2\nlease = \"10s\"\n\
             hold_wait = \"20s\"\nsweep_interval = \"{sweep}s\"\n{bw}",
            queue = dir.path().join(format!("queue-{id}")).display(),
            state = dir.path().join(format!("state-{id}")).display(),
            sweep = a.sweep_interval,
            bw = bw
                .map(|b| format!("max_bytes_per_second = {b}\n"))
                .unwrap_or_default(),
        ))
    };
    let names = ["A", "B"];
    let cfgs = [config("A"), config("B")];
    let queue_dirs: Vec<PathBuf> = names
        .iter()
        .map(|n| dir.path().join(format!("queue-{n}")))
        .collect();
    eprintln!(
        "mailshift soak {run_id}{}: {} users × {} messages ({:.1} MB each), SMTP {}/s over {} connections, {} appenders, \
         kill every {:?}{}, slapd down at {:?} for {:?}, new store restart at {:?}, cap {:?}, \
         bandwidth per instance {}, setup {:.0} s, binary {}",
        if a.quick { " (quick)" } else { "" },
        a.users,
        a.messages,
        user_bytes as f64 / 1e6,
        a.rate,
        a.smtp_conns,
        a.appenders,
        a.kill_every,
        a.kills.map(|k| format!(" (at most {k})")).unwrap_or_default(),
        a.slapd_at,
        a.outage,
        a.store_at,
        a.cap,
        bw.map(|b| format!("{} kB/s", b / 1000))
            .unwrap_or_else(|| "unlimited".into()),
        t_setup.elapsed().as_secs_f64(),
        env!("CARGO_BIN_EXE_mailshift"),
    );

    let sh = Arc::new(Shared {
        t0: Instant::now(),
        ports: Mutex::new([None, None]),
        rr: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        ledger: Mutex::new(Ledger::default()),
    });
    {
        let mut l = sh.ledger();
        for u in &users {
            for i in 0..a.messages {
                l.expect(u, &format!("<c.{i}>"), Expect::Once);
            }
        }
    }
    let mut inst: [Option<Mailshift>; 2] = [None, None];
    for i in 0..2 {
        let m = Mailshift::start(&cfgs[i]);
        sh.ports.lock().expect("ports")[i] = Some(Ports {
            imap: m.imap_port(),
            smtp: m.smtp_port(),
        });
        inst[i] = Some(m);
    }
    sh.event("instances A and B up; traffic starts");

    // ---- traffic
    let users_arc = Arc::new(users.clone());
    let work = Arc::new(Mutex::new(SmtpWork {
        next_new: 0,
        retry: VecDeque::new(),
        in_flight: 0,
    }));
    let mut threads = Vec::new();
    let start = Instant::now();
    // Like an MTA's parallel deliveries: a RCPT for a held user waits up to
    // `hold_wait`, and the other users' mail must not queue behind it.
    for _ in 0..a.smtp_conns {
        let (sh, work, users) = (Arc::clone(&sh), Arc::clone(&work), Arc::clone(&users_arc));
        let rate = a.rate;
        threads.push(std::thread::spawn(move || {
            smtp_sender(sh, work, users, rate, start)
        }));
    }
    for (i, u) in users.iter().take(a.appenders).enumerate() {
        let (sh, u, pw) = (Arc::clone(&sh), u.clone(), password(i));
        threads.push(std::thread::spawn(move || appender(sh, u, pw)));
    }

    // ---- faults
    let mut lab = lab;
    let mut kills = 0usize;
    let mut restart_failures = 0usize;
    let mut next_kill = a.kill_every;
    let (mut slapd_done, mut store_done) = (false, false);
    let mut next_report = Duration::from_secs(10);
    let mut ended_by_cap = false;
    let mut hold_since: HashMap<String, Duration> = HashMap::new();
    let mut longest_hold = (String::new(), Duration::ZERO);
    loop {
        let t = sh.t0.elapsed();
        let kills_left = a.kills.is_none_or(|k| kills < k);
        if kills_left && t >= next_kill {
            let i = kills % 2;
            sh.ports.lock().expect("ports")[i] = None;
            if let Some(mut m) = inst[i].take() {
                m.kill();
                keep_log(&logs, names[i], &m, "killed");
            }
            sh.event(&format!("SIGKILL instance {}; starting it again", names[i]));
            match start_instance(&sh, names[i], &cfgs[i]) {
                Some(m) => {
                    sh.ports.lock().expect("ports")[i] = Some(Ports {
                        imap: m.imap_port(),
                        smtp: m.smtp_port(),
                    });
                    inst[i] = Some(m);
                    sh.event(&format!("instance {} up again", names[i]));
                }
                None => {
                    restart_failures += 1;
                    sh.event(&format!("instance {} did not come back", names[i]));
                }
            }
            kills += 1;
            next_kill += a.kill_every;
        }
        if !slapd_done && t >= a.slapd_at {
            sh.event(&format!("slapd stopped for {:?}", a.outage));
            lab.ldap.stop();
            std::thread::sleep(a.outage);
            let ok = std::panic::catch_unwind(AssertUnwindSafe(|| lab.ldap.start_again()));
            sh.event(if ok.is_ok() {
                "slapd up again"
            } else {
                "slapd did NOT restart"
            });
            slapd_done = true;
        }
        if !store_done && t >= a.store_at {
            sh.event("new store restarting");
            let ok = std::panic::catch_unwind(AssertUnwindSafe(|| lab.new.start_again()));
            sh.event(if ok.is_ok() {
                "new store up again"
            } else {
                "new store did NOT restart"
            });
            store_done = true;
        }
        let done = count_entries(&lab, &format!("(&(uid=soak*)({STATE}=done))"));
        // How long each user stays in hold, as far as a poll every ~0.5 s sees.
        let held = ldap_search(&lab, "(&(uid=soak*)(mailUserStatus=hold))", &["uid"]);
        if let Some(out) = &held {
            let now: Vec<String> = out
                .lines()
                .filter_map(|l| l.strip_prefix("uid: "))
                .map(str::to_string)
                .collect();
            hold_since.retain(|u, _| now.contains(u));
            for u in now {
                let since = *hold_since.entry(u.clone()).or_insert(t);
                let d = t.saturating_sub(since);
                if d > longest_hold.1 {
                    longest_hold = (u, d);
                }
            }
        }
        if t >= next_report {
            let hold = held.as_ref().map(|_| hold_since.len());
            let l = sh.ledger();
            sh.event(&format!(
                "migrated {}/{}, in hold {}; SMTP accepted {} (deferred {}, unknown {}), APPEND ok {} (unknown {})",
                done.map_or("?".into(), |d| d.to_string()),
                a.users,
                hold.map_or("?".into(), |d| d.to_string()),
                l.smtp_accepted,
                l.smtp_deferrals,
                l.smtp_unknown,
                l.append_ok,
                l.append_unknown
            ));
            next_report += Duration::from_secs(10);
        }
        let faults_done = slapd_done && store_done && a.kills.is_none_or(|k| kills >= k);
        if done == Some(a.users) && faults_done {
            sh.event("every user migrated and every fault done");
            break;
        }
        if t >= a.cap {
            sh.event("time cap reached");
            ended_by_cap = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let run_secs = sh.t0.elapsed().as_secs_f64();

    // ---- quiet
    sh.stop.store(true, Ordering::Relaxed);
    sh.event("senders stop; retrying what is pending");
    for t in threads {
        let _ = t.join();
    }
    let quiet_until = Instant::now() + Duration::from_secs(120);
    let mut left_queued = queue_dirs.iter().map(|d| queued(d)).sum::<usize>();
    while left_queued > 0 && Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_secs(1));
        left_queued = queue_dirs.iter().map(|d| queued(d)).sum();
    }
    sh.event(&format!(
        "senders done; SMTP retry queues hold {left_queued} entries"
    ));
    // Mail that reached the old store after a cutover is moved by the sweep;
    // give it two sweeps before calling such mail lost.
    let mut results = verify(&lab, &sh, &users);
    let sweep_until = Instant::now() + Duration::from_secs(2 * a.sweep_interval + 10);
    while results.iter().any(|r| r.lost_on_old > 0) && Instant::now() < sweep_until {
        std::thread::sleep(Duration::from_secs(2));
        results = verify(&lab, &sh, &users);
    }
    sh.event("verified");
    let in_hold = results.iter().filter(|r| r.status == "hold").count();
    let migrated = results.iter().filter(|r| r.state == "done").count();
    for (i, m) in inst.iter_mut().enumerate() {
        if let Some(m) = m {
            m.stop();
            keep_log(&logs, names[i], m, "stopped at the end");
        }
    }

    // ---- verdict
    let l = sh.ledger();
    let lost: usize = results.iter().map(|r| r.lost).sum();
    let lost_on_old: usize = results.iter().map(|r| r.lost_on_old).sum();
    let doubled: usize = results.iter().map(|r| r.doubled).sum();
    let unexpected: usize = results.iter().map(|r| r.unexpected).sum();
    let errors: Vec<String> = results
        .iter()
        .zip(&users)
        .filter_map(|(r, u)| r.error.as_ref().map(|e| format!("{u}: {e}")))
        .collect();
    let pass =
        lost == 0 && doubled == 0 && in_hold == 0 && migrated == a.users && errors.is_empty();
    let mut t = String::new();
    t.push_str(&format!(
        "\n## mailshift soak ({} users × {} messages, {:.0} s of traffic{}, {kills} kills, run {run_id})\n\n",
        a.users,
        a.messages,
        run_secs,
        if ended_by_cap { ", ended by the time cap" } else { "" },
    ));
    t.push_str("| figure | value |\n|---|---|\n");
    let mut row = |k: &str, v: String| t.push_str(&format!("| {k} | {v} |\n"));
    row(
        "messages sent (SMTP 250)",
        format!(
            "{} ({} deliveries; {} deferrals retried, {} never accepted, {} refused 5xx)",
            l.smtp_accepted, l.smtp_deliveries, l.smtp_deferrals, l.smtp_never, l.smtp_rejected
        ),
    );
    row(
        "appended (APPEND OK)",
        format!(
            "{} ({} NO, {} never stored before the end; {} logins, {} refused)",
            l.append_ok, l.append_no, l.append_never, l.imap_logins, l.imap_login_failures
        ),
    );
    row(
        "unknown outcome",
        format!(
            "SMTP {}; APPEND {} (found on check {}, not found and sent again {})",
            l.smtp_unknown, l.append_unknown, l.append_unknown_landed, l.append_unknown_retried
        ),
    );
    row(
        "**lost**",
        format!("**{lost}** (of which still only on the old store: {lost_on_old})"),
    );
    row("**doubled**", format!("**{doubled}**"));
    row(
        "**users migrated**",
        format!("**{migrated} / {}**", a.users),
    );
    row("**users left in hold**", format!("**{in_hold}**"));
    row(
        "longest hold seen (LDAP polled every 0.5 s)",
        format!(
            "{:.1} s{}",
            longest_hold.1.as_secs_f64(),
            if longest_hold.0.is_empty() {
                String::new()
            } else {
                format!(" ({})", longest_hold.0)
            }
        ),
    );
    row(
        "found but never acknowledged",
        format!("{unexpected} (allowed: unknown outcomes)"),
    );
    row("SMTP retry queue entries left", left_queued.to_string());
    row(
        "instance restarts that failed",
        restart_failures.to_string(),
    );
    row(
        "verdict",
        if pass { "**PASS**" } else { "**FAIL**" }.to_string(),
    );
    t.push_str("\n| user | mailHost | state | status | expected | lost | doubled |\n|---|---|---|---|---|---|---|\n");
    for (u, r) in users.iter().zip(&results) {
        t.push_str(&format!(
            "| {u} | {} | {} | {} | {} | {} | {} |\n",
            r.host, r.state, r.status, r.expected, r.lost, r.doubled
        ));
    }
    for (u, r) in users.iter().zip(&results) {
        if !r.lost_ids.is_empty() {
            t.push_str(&format!(
                "\n{u} lost: {}",
                r.lost_ids
                    .iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        if !r.doubled_ids.is_empty() {
            t.push_str(&format!(
                "\n{u} doubled: {}",
                r.doubled_ids
                    .iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    for e in &errors {
        t.push_str(&format!("\nread error: {e}"));
    }
    for s in &l.rejected_samples {
        t.push_str(&format!("\nrefused: {s}"));
    }
    t.push_str(&format!(
        "\n\nInstance logs: {}; JSON line: {}\n",
        logs.display(),
        jsonl_path.display()
    ));
    println!("{t}");
    let v = json!({
        "bench": "soak", "run_id": run_id, "ts": now_secs(), "pass": pass,
        "users": a.users, "messages": a.messages, "run_s": run_secs, "kills": kills,
        "ended_by_cap": ended_by_cap, "bandwidth": bw,
        "smtp_accepted": l.smtp_accepted, "smtp_deliveries": l.smtp_deliveries,
        "smtp_unknown": l.smtp_unknown, "smtp_never": l.smtp_never,
        "smtp_rejected": l.smtp_rejected,
        "append_ok": l.append_ok, "append_unknown": l.append_unknown,
        "append_unknown_landed": l.append_unknown_landed,
        "lost": lost, "lost_on_old": lost_on_old, "doubled": doubled,
        "migrated": migrated, "in_hold": in_hold,
        "longest_hold_s": longest_hold.1.as_secs_f64(), "smtp_conns": a.smtp_conns, "unexpected": unexpected,
        "queue_left": left_queued, "table_markdown": t,
    });
    drop(l);
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl_path)
    {
        let _ = writeln!(f, "{v}");
    }
    drop(inst);
    drop(lab);
    // exit() below skips destructors: the state and queue dirs go now.
    drop(dir);
    if !pass {
        std::process::exit(1);
    }
}
