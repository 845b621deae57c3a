//! Sieve scripts move with the mailbox: when both stores have ManageSieve
//! (`backends.NAME.sieve`), every pass (the cutover's final pass and a
//! rollback's passes included) copies the user's scripts from the source to
//! the destination and activates the one that was active there.
//!
//! ```text
//!  source: LISTSCRIPTS ─► GETSCRIPT each
//!  destination: same content already? ─► unchanged
//!               CHECKSCRIPT ─(NO)─► refused (reported with the store's reason)
//!               PUTSCRIPT   ─(NO)─► refused
//!                           ─(OK)─► copied
//!  then SETACTIVE the source's active script (unless it was refused)
//! ```
//!
//! Reading both sides runs beside the pass's folder sync; writing to the
//! destination (PUTSCRIPT, SETACTIVE) waits until the folders are done
//! ([`copy`]'s `writes_after`): Dovecot 2.3 stores a script's hash in the
//! user's mailbox attributes and its ManageSieve process panics ("locking
//! failed: Resource deadlock avoided") when an IMAP process of the same user
//! holds the mailbox list lock at that moment. A pass whose connection broke
//! anyway (a store process that died, a restart) tries once more on fresh
//! connections: every step is idempotent.
//!
//! A script the destination refuses is never dropped silently: it is in the
//! pass's [`SieveReport`] (printed by `migrate`), counted in
//! `mailshift_sieve_scripts_migrated_total{result="refused"}`, and
//! [`verify`] reports it missing. Scripts are logged in as the user via the
//! master login where configured, else with the user's password.
//! Destination scripts the source does not have are left alone (they may be
//! the user's own).

use super::Error;
use crate::metrics::sieve::SIEVE;
use crate::store::imap::login::Credentials;
use crate::store::sieve::{Client, ScriptName};
use crate::store::Store;

/// A script the destination would not take.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedScript {
    /// Its name.
    pub name: String,
    /// The store's answer (`NO "line 1: require: unknown Sieve capability …"`).
    pub reason: String,
}

/// What one pass did with the user's scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SieveReport {
    /// Both stores have ManageSieve; otherwise nothing was tried.
    pub enabled: bool,
    /// Scripts copied (new or changed).
    pub copied: Vec<String>,
    /// Scripts already there with the same content.
    pub unchanged: Vec<String>,
    /// Scripts the destination refused.
    pub refused: Vec<RefusedScript>,
    /// The active script on the source, if any.
    pub active: Option<String>,
    /// Whether the destination's active script was set (or cleared) by this pass.
    pub activated: bool,
    /// Why the scripts could not be handled at all (store down, login refused).
    pub error: Option<String>,
}

impl SieveReport {
    /// Nothing refused, nothing failed.
    pub fn ok(&self) -> bool {
        self.refused.is_empty() && self.error.is_none()
    }

    /// Folds a later pass of the same move into this one (a cutover's
    /// presyncs and final pass): what any pass copied counts as copied; the
    /// latest pass has the last word on refusals, the active script and errors.
    pub fn then(&mut self, later: &SieveReport) {
        self.enabled |= later.enabled;
        for c in &later.copied {
            if !self.copied.contains(c) {
                self.copied.push(c.clone());
            }
        }
        self.unchanged = later
            .unchanged
            .iter()
            .filter(|u| !self.copied.contains(u))
            .cloned()
            .collect();
        self.refused = later.refused.clone();
        self.active = later.active.clone();
        self.activated |= later.activated;
        self.error = later.error.clone();
    }

    /// One line for people (`migrate` prints it under the user's line).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "sieve: {} copied, {} unchanged, {} refused",
            self.copied.len(),
            self.unchanged.len(),
            self.refused.len()
        );
        if let Some(a) = &self.active {
            s.push_str(&format!(", active {a:?}"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(", error: {e}"));
        }
        s
    }
}

/// Both stores have ManageSieve.
pub fn enabled(from: &Store, to: &Store) -> bool {
    from.cfg.sieve.is_some() && to.cfg.sieve.is_some()
}

async fn connect(store: &Store, user: &str, password: Option<&[u8]>) -> Result<Client, Error> {
    let creds = match (&store.cfg.master, password) {
        (Some(_), _) => Credentials::Master { user },
        (None, Some(password)) => Credentials::User { user, password },
        (None, None) => return Err(Error::Credentials(store.name().to_string())),
    };
    Ok(Client::connect(store, &creds).await?)
}

async fn pair(
    from: &Store,
    to: &Store,
    user: &str,
    password: Option<&[u8]>,
) -> Result<(Client, Client), Error> {
    let (src, dst) = tokio::join!(connect(from, user, password), connect(to, user, password));
    Ok((src?, dst?))
}

fn active(list: &[ScriptName]) -> Option<String> {
    list.iter().find(|s| s.active).map(|s| s.name.clone())
}

/// Copies the user's scripts from `from` to `to` (see the module docs).
/// Never fails the pass: what went wrong is in the report. With `dry_run`
/// only CHECKSCRIPT runs on the destination. Nothing is written to the
/// destination before `writes_after` resolves (the pass's folders are done;
/// a dropped sender counts as done).
pub async fn copy(
    from: &Store,
    to: &Store,
    user: &str,
    password: Option<&[u8]>,
    dry_run: bool,
    writes_after: tokio::sync::oneshot::Receiver<()>,
) -> SieveReport {
    let enabled = enabled(from, to);
    let mut report = SieveReport {
        enabled,
        ..SieveReport::default()
    };
    if !enabled {
        return report;
    }
    let mut gate = Gate::Closed(writes_after);
    for attempt in 1..=2 {
        report = SieveReport {
            enabled,
            ..SieveReport::default()
        };
        match copy_into(from, to, user, password, dry_run, &mut gate, &mut report).await {
            Ok(()) => break,
            Err(e) if attempt == 1 && e.is_temporary() => {
                tracing::info!(error = %e, "Sieve scripts: connection lost, trying again");
                tokio::time::sleep(RETRY_AFTER).await;
            }
            Err(e) => {
                // Inside the pass's span: user and stores are on it.
                tracing::warn!(error = %e, "Sieve scripts not copied");
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    for (result, n) in [
        ("copied", report.copied.len()),
        ("unchanged", report.unchanged.len()),
        ("refused", report.refused.len()),
    ] {
        SIEVE.scripts.with_label_values(&[result]).inc_by(n as u64);
    }
    for r in &report.refused {
        tracing::warn!(script = %r.name, reason = %r.reason, "Sieve script refused by the destination");
    }
    report
}

/// How long a broken copy waits before its second try.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Holds the destination's writes back until the pass's folders are done.
enum Gate {
    Closed(tokio::sync::oneshot::Receiver<()>),
    Open,
}

impl Gate {
    async fn pass(&mut self) {
        if let Gate::Closed(rx) = self {
            // Sent or dropped: either way the folder sync is over. A long
            // first pass may outlast the store's idle timeout on the waiting
            // connection; the write then fails and the one retry (gate
            // open by then) does the copy on fresh connections.
            let _ = rx.await;
            *self = Gate::Open;
        }
    }
}

async fn copy_into(
    from: &Store,
    to: &Store,
    user: &str,
    password: Option<&[u8]>,
    dry_run: bool,
    gate: &mut Gate,
    report: &mut SieveReport,
) -> Result<(), Error> {
    // The source first: with no script there, nothing on the destination
    // changes (its own scripts stay, nothing to activate or clear), so most
    // users cost the stores one ManageSieve login a pass, not two.
    let mut src = connect(from, user, password).await?;
    let source = src.list_scripts().await?;
    if source.is_empty() {
        tokio::spawn(async move { src.logout().await });
        return Ok(());
    }
    let mut dst = connect(to, user, password).await?;
    let dest = dst.list_scripts().await?;
    report.active = active(&source);
    for script in &source {
        let body = src.get_script(&script.name).await?;
        if dest.iter().any(|d| d.name == script.name) && dst.get_script(&script.name).await? == body
        {
            report.unchanged.push(script.name.clone());
            continue;
        }
        let verdict = match dst.check_script(&body).await? {
            Ok(()) if dry_run => Ok(()),
            Ok(()) => {
                gate.pass().await;
                dst.put_script(&script.name, &body).await?
            }
            Err(no) => Err(no),
        };
        match verdict {
            Ok(()) => report.copied.push(script.name.clone()),
            Err(no) => report.refused.push(RefusedScript {
                name: script.name.clone(),
                reason: no.summary(),
            }),
        }
    }
    let dest_active = active(&dest);
    let refused = |name: &str| report.refused.iter().any(|r| r.name == name);
    let want = match &report.active {
        Some(a) if refused(a) => dest_active.clone(),
        Some(a) => Some(a.clone()),
        // The source has none active: clear the destination's only if it is
        // one of the source's scripts (a copy), never the user's own.
        None => dest_active
            .clone()
            .filter(|d| !source.iter().any(|s| &s.name == d)),
    };
    if want != dest_active && !dry_run {
        gate.pass().await;
        dst.set_active(want.as_deref()).await?;
        report.activated = true;
    }
    // Not waited for: the goodbyes cost the pass nothing.
    tokio::spawn(async move {
        tokio::join!(src.logout(), dst.logout());
    });
    Ok(())
}

/// What `verify` finds about the user's scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SieveCheck {
    /// Source scripts not on the destination.
    pub missing: Vec<String>,
    /// Scripts whose content differs.
    pub differs: Vec<String>,
    /// The source's active script.
    pub active_source: Option<String>,
    /// The destination's active script.
    pub active_destination: Option<String>,
}

impl SieveCheck {
    /// Every script there, same content, same one active.
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.differs.is_empty()
            && self.active_source == self.active_destination
    }
}

/// Compares the user's scripts on both stores; `None` when a store has no
/// ManageSieve.
pub async fn verify(
    from: &Store,
    to: &Store,
    user: &str,
    password: Option<&[u8]>,
) -> Result<Option<SieveCheck>, Error> {
    if !enabled(from, to) {
        return Ok(None);
    }
    let (mut src, mut dst) = pair(from, to, user, password).await?;
    let source = src.list_scripts().await?;
    let dest = dst.list_scripts().await?;
    let mut check = SieveCheck {
        active_source: active(&source),
        active_destination: active(&dest),
        ..SieveCheck::default()
    };
    for s in &source {
        if !dest.iter().any(|d| d.name == s.name) {
            check.missing.push(s.name.clone());
        } else if src.get_script(&s.name).await? != dst.get_script(&s.name).await? {
            check.differs.push(s.name.clone());
        }
    }
    tokio::join!(src.logout(), dst.logout());
    Ok(Some(check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_counts_what_any_pass_copied_and_the_last_verdict() {
        let mut all = SieveReport::default();
        all.then(&SieveReport {
            enabled: true,
            copied: vec!["a".into(), "b".into()],
            refused: vec![RefusedScript {
                name: "c".into(),
                reason: "NO".into(),
            }],
            ..SieveReport::default()
        });
        all.then(&SieveReport {
            enabled: true,
            unchanged: vec!["a".into(), "b".into()],
            active: Some("a".into()),
            ..SieveReport::default()
        });
        assert_eq!(all.copied, vec!["a", "b"]);
        assert!(all.unchanged.is_empty() && all.refused.is_empty());
        assert_eq!(
            all.summary(),
            "sieve: 2 copied, 0 unchanged, 0 refused, active \"a\""
        );
    }

    /// A ManageSieve store that a test scripts: `drop_first_put` closes the
    /// first connection at its PUTSCRIPT without an answer, as a Dovecot
    /// whose ManageSieve process panicked does (a race a real store shows
    /// only now and then).
    struct FakeStore {
        scripts: std::sync::Mutex<Vec<(String, bool)>>,
        puts: std::sync::Mutex<Vec<String>>,
        connections: std::sync::atomic::AtomicUsize,
        drop_first_put: bool,
    }

    /// Bytes of the first complete command in `buf` (literals `{n+}` inside).
    fn command_len(buf: &[u8]) -> Option<usize> {
        let mut i = 0;
        loop {
            let nl = i + buf.get(i..)?.windows(2).position(|w| w == b"\r\n")?;
            let line = &buf[i..nl];
            match line.strip_suffix(b"+}") {
                Some(head) => {
                    let open = head.iter().rposition(|&b| b == b'{')?;
                    let n: usize = std::str::from_utf8(&head[open + 1..]).ok()?.parse().ok()?;
                    i = nl + 2 + n;
                }
                None => return Some(nl + 2),
            }
        }
    }

    async fn serve_fake(store: std::sync::Arc<FakeStore>, l: tokio::net::TcpListener) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = l.accept().await {
            let n = store.connections.fetch_add(1, Ordering::SeqCst);
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let greeting = b"\"IMPLEMENTATION\" \"fake\"\r\n\"SASL\" \"PLAIN\"\r\n\"SIEVE\" \"fileinto\"\r\n\"VERSION\" \"1.0\"\r\nOK\r\n";
                if c.write_all(greeting).await.is_err() {
                    return;
                }
                let mut buf = Vec::new();
                loop {
                    let len = loop {
                        if let Some(len) = command_len(&buf) {
                            break len;
                        }
                        let mut chunk = [0u8; 4096];
                        match c.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let cmd: Vec<u8> = buf.drain(..len).collect();
                    let text = String::from_utf8_lossy(&cmd).into_owned();
                    let word = text.split(' ').next().unwrap_or("").trim_end().to_string();
                    let name = text.split('"').nth(1).unwrap_or("").to_string();
                    let reply = match word.as_str() {
                        "LISTSCRIPTS" => {
                            let mut r = String::new();
                            for (s, active) in store.scripts.lock().expect("lock").iter() {
                                r.push_str(&format!(
                                    "\"{s}\"{}\r\n",
                                    if *active { " ACTIVE" } else { "" }
                                ));
                            }
                            r + "OK\r\n"
                        }
                        "GETSCRIPT" => "{7}\r\nkeep;\r\n\r\nOK\r\n".to_string(),
                        "PUTSCRIPT" if n == 0 && store.drop_first_put => return,
                        "PUTSCRIPT" => {
                            store.puts.lock().expect("lock").push(name.clone());
                            store.scripts.lock().expect("lock").push((name, false));
                            "OK\r\n".to_string()
                        }
                        "SETACTIVE" => {
                            for s in store.scripts.lock().expect("lock").iter_mut() {
                                s.1 = s.0 == name;
                            }
                            "OK\r\n".to_string()
                        }
                        "LOGOUT" => {
                            let _ = c.write_all(b"OK\r\n").await;
                            return;
                        }
                        _ => "OK\r\n".to_string(),
                    };
                    if c.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn fake(
        scripts: &[(&str, bool)],
        drop_first_put: bool,
    ) -> (std::sync::Arc<FakeStore>, u16) {
        let store = std::sync::Arc::new(FakeStore {
            scripts: std::sync::Mutex::new(
                scripts.iter().map(|(s, a)| (s.to_string(), *a)).collect(),
            ),
            puts: std::sync::Mutex::new(Vec::new()),
            connections: std::sync::atomic::AtomicUsize::new(0),
            drop_first_put,
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(serve_fake(std::sync::Arc::clone(&store), l));
        (store, port)
    }

    fn stores(from: u16, to: u16) -> (Store, Store) {
        let cfg = crate::config::Config::parse(&format!(
            "[directory]\nkind = \"file\"\npath = \"/dev/null\"\n\
             [backends.old]\nimap = \"imap://127.0.0.1:1\"\nmailhost = [\"old.example.org\"]\n\
             sieve = \"sieve://127.0.0.1:{from}\"\n\
             [backends.new]\nimap = \"imap://127.0.0.1:1\"\nmailhost = [\"new.example.org\"]\n\
             sieve = \"sieve://127.0.0.1:{to}\"\n"
        ))
        .expect("config");
        let named = |n: &str| {
            let b = cfg.backends.iter().find(|b| b.name == n).expect("backend");
            Store::new(b.clone()).expect("store")
        };
        (named("old"), named("new"))
    }

    #[tokio::test]
    async fn a_destination_that_drops_the_connection_mid_copy_gets_a_second_try() {
        let (_, from) = fake(&[("s", true)], false).await;
        let (dest, to) = fake(&[], true).await;
        let (from, to) = stores(from, to);
        let (done, writes_after) = tokio::sync::oneshot::channel();
        let _ = done.send(());
        let report = copy(&from, &to, "alice", Some(b"pw"), false, writes_after).await;
        assert_eq!(report.error, None, "{report:?}");
        assert_eq!(report.copied, vec!["s".to_string()], "{report:?}");
        assert!(report.activated);
        assert_eq!(*dest.puts.lock().expect("lock"), vec!["s".to_string()]);
        assert_eq!(
            *dest.scripts.lock().expect("lock"),
            vec![("s".to_string(), true)]
        );
        assert_eq!(
            dest.connections.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[tokio::test]
    async fn a_source_without_scripts_never_visits_the_destination() {
        let (_, from) = fake(&[], false).await;
        let (dest, to) = fake(&[("users-own", true)], false).await;
        let (from, to) = stores(from, to);
        // The folders are done (a dropped sender says so too).
        let (done, writes_after) = tokio::sync::oneshot::channel::<()>();
        drop(done);
        let report = copy(&from, &to, "alice", Some(b"pw"), false, writes_after).await;
        assert!(
            report.ok() && report.copied.is_empty() && !report.activated,
            "{report:?}"
        );
        assert_eq!(
            dest.connections.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }
}
