//! Cyrus IMAP (a private 3.6, tests/support/cyrus.rs) as old store, as new
//! store and behind the proxy, through the real `mailshift` CLI.
//!
//! Cyrus runs its default namespace (`INBOX.` prefix, `.` separator) as the
//! old store and `altnamespace` with `unixhierarchysep` (`/`, folders beside
//! INBOX) as the new one, while the Dovecots run without a prefix.
//! Cyrus's junk folder is `Spam` (\Junk); Dovecot's is `Junk`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::proxy::OLD_HOST;
use support::{corpus, render_keep, Certs, Cyrus, CyrusOpts, Dovecot, DovecotOpts, ImapClient};
use support::{imaptest, mailbox, message, MailFormat, Mailshift, Slapd};

/// The Cyrus tests start two stores each and pipeline hundreds of APPENDs:
/// on a 2-core CI machine they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One side of a migration, as the test reaches it.
enum Store<'a> {
    Cyrus(&'a Cyrus),
    Dovecot(&'a Dovecot),
}

impl Store<'_> {
    fn port(&self) -> u16 {
        match self {
            Store::Cyrus(c) => c.imap_port(),
            Store::Dovecot(d) => d.imap_port(),
        }
    }

    /// Logs in as `user` through the store's master user.
    fn login(&self, user: &str) -> ImapClient {
        let mut c = ImapClient::connect(self.port());
        match self {
            Store::Cyrus(_) => {
                let b64 = b64(format!("{user}\0admin\0adminpw").as_bytes());
                let (_, tagged) = c.cmd(&format!("AUTHENTICATE PLAIN {b64}"));
                assert!(tagged.contains(" OK"), "Cyrus master login: {tagged}");
            }
            Store::Dovecot(_) => c.login(&format!("{user}*admin"), "adminpw"),
        }
        c
    }

    /// A corpus folder (`/`-separated, Dovecot's names) as this store names it.
    fn folder(&self, name: &str, dovecot_sep: char, loaded: bool) -> String {
        match self {
            // Loaded with Cyrus's own name for it; as the new store, Cyrus
            // gets the conventional one.
            Store::Cyrus(c) if name == "Junk" && loaded => c.folder("Spam"),
            Store::Cyrus(c) => c.folder(name),
            Store::Dovecot(_) => name.replace('/', &dovecot_sep.to_string()),
        }
    }
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const SPECIAL: [(&str, &str); 5] = [
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];

/// Loads the corpus into Cyrus with its own names and special-use
/// attributes; returns the messages Cyrus accepted (it refuses bare LF).
fn load_cyrus(cy: &Cyrus, msgs: Vec<corpus::Msg>) -> Vec<corpus::Msg> {
    let store = Store::Cyrus(cy);
    let mut c = store.login("alice");
    for f in corpus::FOLDERS.iter().filter(|f| **f != "INBOX") {
        let name = store.folder(f, '/', true);
        let cmd = match SPECIAL.iter().find(|(n, _)| n == f) {
            Some((_, u)) => format!("CREATE \"{name}\" (USE ({u}))"),
            None => format!("CREATE \"{name}\""),
        };
        c.ok(&cmd);
        c.ok(&format!("SUBSCRIBE \"{name}\""));
    }
    let mut kept = Vec::new();
    for m in msgs {
        let tag = c.send_literal(
            &format!(
                "APPEND \"{}\" ({}) \"{}\"",
                store.folder(m.folder, '/', true),
                m.flags,
                m.date
            ),
            &m.body,
        );
        let (_, tagged) = c.read_until_tagged(&tag);
        if tagged.contains(" OK") {
            kept.push(m);
        } else {
            assert!(tagged.contains("bare newlines"), "APPEND: {tagged}");
        }
    }
    c.ok("LOGOUT");
    kept
}

struct Setup {
    // Drop order: the stores before the directory.
    cyrus: Cyrus,
    dovecot: Dovecot,
    ldap: Slapd,
    config: PathBuf,
    /// The config with the proxy's own ports left for [`Mailshift::start`].
    proxy_config: String,
    state: PathBuf,
    cyrus_is_old: bool,
    _dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Setup {
    fn source(&self) -> Store<'_> {
        if self.cyrus_is_old {
            Store::Cyrus(&self.cyrus)
        } else {
            Store::Dovecot(&self.dovecot)
        }
    }
    fn target(&self) -> Store<'_> {
        if self.cyrus_is_old {
            Store::Dovecot(&self.dovecot)
        } else {
            Store::Cyrus(&self.cyrus)
        }
    }
}

/// Cyrus old (over STARTTLS) and Dovecot new (sdbox, `.`, implicit TLS), or
/// the other way round (then Cyrus is reached over implicit TLS only).
fn setup(cyrus_is_old: bool, msgs: Vec<corpus::Msg>) -> Setup {
    setup_opts(cyrus_is_old, msgs, CyrusOpts::default())
}

fn setup_opts(cyrus_is_old: bool, msgs: Vec<corpus::Msg>, cyrus_opts: CyrusOpts) -> Setup {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let certs = Certs::shared();
    let ldap = Slapd::start(true);
    ldap.add_user("alice", "alicepw", OLD_HOST);
    let (cyrus, dovecot) = std::thread::scope(|s| {
        let c = s.spawn(|| Cyrus::start(if cyrus_is_old { "old" } else { "new" }, cyrus_opts));
        let d = s.spawn(|| {
            let opts = if cyrus_is_old {
                DovecotOpts {
                    separator: '.',
                    format: MailFormat::Sdbox,
                    ..DovecotOpts::default()
                }
            } else {
                DovecotOpts::default()
            };
            Dovecot::start(if cyrus_is_old { "new" } else { "old" }, &ldap, opts)
        });
        (
            c.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
            d.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    if cyrus_is_old {
        load_cyrus(&cyrus, msgs);
    } else {
        corpus::load(dovecot.imap_port(), "alice", "admin", "adminpw", &msgs);
    }
    let (old_imap, old_lmtp, new_imaps, new_lmtp) = if cyrus_is_old {
        (
            cyrus.imap_port(),
            cyrus.lmtp_port(),
            dovecot.imaps_port(),
            dovecot.lmtp_port(),
        )
    } else {
        (
            dovecot.imap_port(),
            dovecot.lmtp_port(),
            cyrus.imaps_port(),
            cyrus.lmtp_port(),
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let p = |x: &Path| x.display().to_string();
    let text = render_keep(
        "mailshift.toml.in",
        &[
            ("LDAP_URL", ldap.url()),
            ("ADMIN_DN", ldap.admin_dn().to_string()),
            ("ADMIN_PASSWORD", ldap.admin_password().to_string()),
            ("OLD_IMAP_PORT", old_imap.to_string()),
            ("OLD_LMTP_PORT", old_lmtp.to_string()),
            ("NEW_IMAPS_PORT", new_imaps.to_string()),
            ("NEW_LMTP_PORT", new_lmtp.to_string()),
            ("CA_FILE", p(&certs.ca_pem)),
            ("MASTER_USER", "admin".into()),
            ("MASTER_PASSWORD", "adminpw".into()),
            ("TLS_CERT", p(&certs.cert_pem)),
            ("TLS_KEY", p(&certs.key_pem)),
        ],
        &support::proxy::PROXY_PORTS,
    );
    // [migration] last: a test may append folder_map to it.
    let proxy_config = format!(
        "{text}\n[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\nqueue_dir = \"{}\"\n\
         [migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"20s\"\n\
         instance_id = \"test-cli\"\nsweep_interval = \"1s\"\n",
        dir.path().join("queue").display(),
        state.display()
    );
    let text = proxy_config
        .replace("@IMAP_PORT@", "1")
        .replace("@IMAPS_PORT@", "2")
        .replace("@ADMIN_PORT@", "3")
        .replace("@SMTP_PORT@", "4");
    let config = dir.path().join("mailshift.toml");
    std::fs::write(&config, text).expect("write config");
    Setup {
        cyrus,
        dovecot,
        ldap,
        config,
        proxy_config,
        state,
        cyrus_is_old,
        _dir: dir,
        _turn: turn,
    }
}

fn mailshift(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("mailshift runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn migrate(s: &Setup) -> Output {
    mailshift(&["migrate", "--user", "alice", "--json"], &s.config)
}

fn copied(o: &Output) -> u64 {
    mailbox::copied(&o.stdout)
}

/// Every message of a folder: (body, flags, INTERNALDATE instant), sorted.
fn contents(store: &Store<'_>, folder: &str) -> Vec<(String, String, i64)> {
    let mut c = store.login("alice");
    let out = mailbox::contents(&mut c, folder);
    c.ok("LOGOUT");
    out
}

/// Folder name → its special use (or "") as the store lists them.
fn folders(store: &Store<'_>) -> BTreeMap<String, String> {
    let mut c = store.login("alice");
    let lines = c.ok("LIST \"\" \"*\" RETURN (SPECIAL-USE)");
    c.ok("LOGOUT");
    let mut out = BTreeMap::new();
    for l in lines.iter().filter(|l| l.starts_with("* LIST ")) {
        let attrs = l
            .split('(')
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or("");
        let special = SPECIAL
            .iter()
            .map(|(_, u)| *u)
            .find(|u| attrs.split(' ').any(|a| a.eq_ignore_ascii_case(u)))
            .unwrap_or("");
        let name = match l.strip_suffix('"') {
            Some(rest) => rest.rsplit_once(" \"").map(|(_, n)| n.to_string()),
            None => l.rsplit_once(' ').map(|(_, n)| n.to_string()),
        };
        if let Some(n) = name {
            out.insert(n, special.to_string());
        }
    }
    out
}

fn count(store: &Store<'_>, folder: &str) -> usize {
    let mut c = store.login("alice");
    let n = mailbox::count(&mut c, folder);
    c.ok("LOGOUT");
    n
}

/// kill -9 in the middle of the first pass, rerun, then: every folder with
/// its special use, counts, bytes, flags and INTERNALDATE equal; `verify`
/// exits 0; another pass copies nothing.
fn migrate_exactly(cyrus_is_old: bool, cyrus_opts: CyrusOpts) {
    let mut msgs = corpus::generate(130, 13);
    msgs.extend(corpus::generate_inbox(600, 14));
    let s = setup_opts(cyrus_is_old, msgs, cyrus_opts);
    let dsep = if cyrus_is_old { '.' } else { '/' };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["migrate", "--user", "alice", "--json", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let inbox_new = s.target().folder("INBOX", dsep, false);
    let mut waited = 0;
    while waited < 1000 {
        if let Ok(n) = std::panic::catch_unwind(|| count(&s.target(), "INBOX")) {
            if n > 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let partial = count(&s.target(), &inbox_new);

    let first = migrate(&s);
    let want_total: usize = corpus::FOLDERS
        .iter()
        .map(|f| count(&s.source(), &s.source().folder(f, dsep, true)))
        .sum();
    assert!(first.status.success(), "{}", text(&first));
    let v = mailshift(&["verify", "--user", "alice"], &s.config);
    assert!(v.status.success(), "{}", text(&v));

    let new_folders = folders(&s.target());
    for f in corpus::FOLDERS {
        let (a, b) = (
            s.source().folder(f, dsep, true),
            s.target().folder(f, dsep, false),
        );
        let want_use = SPECIAL
            .iter()
            .find(|(n, _)| n == f)
            .map(|(_, u)| *u)
            .unwrap_or("");
        assert_eq!(
            new_folders.get(&b).map(String::as_str),
            Some(want_use),
            "{a} → {b}: missing or wrong special use in {new_folders:?}"
        );
        let (x, y) = (contents(&s.source(), &a), contents(&s.target(), &b));
        assert_eq!(
            x.len(),
            y.len(),
            "{a} → {b}: count (had {partial} in INBOX at the kill)"
        );
        for (m, n) in x.iter().zip(&y) {
            assert_eq!(m.0, n.0, "{a} → {b}: bytes differ");
            assert_eq!(m.1, n.1, "{a} → {b}: flags differ");
            assert_eq!(m.2, n.2, "{a} → {b}: INTERNALDATE differs");
        }
    }
    let again = migrate(&s);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(copied(&again), 0, "{}", text(&again));
    assert!(want_total > 600);
    let _ = &s.state;
}

#[test]
fn cyrus_to_dovecot_exactly() {
    migrate_exactly(true, CyrusOpts::default());
}

#[test]
fn dovecot_to_cyrus_exactly() {
    // The other Cyrus namespace: folders beside INBOX, `/` as separator.
    migrate_exactly(
        false,
        CyrusOpts {
            altnamespace: true,
            unixhierarchysep: true,
            ..CyrusOpts::default()
        },
    );
}

/// The proxy in front of Cyrus: LOGIN and AUTHENTICATE PLAIN (the user's own
/// password, checked by Cyrus) route to it, a wrong password does not, and
/// IDLE reports a delivery.
#[test]
fn proxy_in_front_of_cyrus() {
    let s = setup(true, Vec::new());
    let proxy = Mailshift::start(&s.proxy_config);
    s.cyrus.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "on-cyrus", "hi"),
    );
    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    assert_eq!(c.subjects(), ["on-cyrus"]);
    c.ok("LOGOUT");

    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd(&format!("AUTHENTICATE PLAIN {}", b64(b"\0alice\0alicepw")));
    assert!(tagged.contains(" OK"), "{tagged}\n{}", proxy.log_tail());
    let lines = c.ok("NAMESPACE");
    assert!(
        lines.iter().any(|l| l.contains("((\"INBOX.\" \".\"))")),
        "not Cyrus's namespace: {lines:?}"
    );
    c.ok("SELECT INBOX");
    let tag = c.send("IDLE");
    let cont = c.read_response();
    assert!(cont.starts_with('+'), "{cont}");
    s.cyrus.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "while-idle", "hi"),
    );
    c.set_timeout(std::time::Duration::from_secs(15));
    let exists = c.try_read_response().expect("IDLE update");
    assert_eq!(exists, "* 2 EXISTS");
    c.write_raw(b"DONE\r\n");
    let (_, done) = c.read_until_tagged(&tag);
    assert!(done.contains("OK"), "{done}");

    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN alice wrong");
    assert!(tagged.contains(" NO"), "{tagged}");
}

/// Cyrus as the new store with a quota too small for the mailbox and an
/// APPENDLIMIT below the largest message: the pass fails up front, saying
/// why, with nothing copied; with room, only the messages over the limit are
/// left, each reported.
#[test]
fn quota_and_appendlimit_are_read_before_copying() {
    let msgs = corpus::generate(30, 21);
    let biggest = msgs.iter().map(|m| m.body.len()).max().unwrap_or(0);
    let limit = 200_000;
    let over: usize = msgs.iter().filter(|m| m.body.len() > limit).count();
    assert!(
        biggest > limit && over > 0,
        "the corpus needs a message over {limit} bytes"
    );
    let s = setup_opts(
        false,
        msgs,
        CyrusOpts {
            extra: format!("maxmessagesize: {limit}\n"),
            ..CyrusOpts::default()
        },
    );
    s.cyrus.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "already-there", "hi"),
    );
    let mut admin = ImapClient::connect(s.cyrus.imap_port());
    admin.login("admin", "adminpw");
    admin.ok("SETQUOTA user.alice (STORAGE 100)");

    let first = migrate(&s);
    assert!(!first.status.success(), "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("quota") && out.contains("KiB"), "{out}");
    assert_eq!(
        folders(&s.target()).len(),
        1,
        "folders created despite the quota"
    );
    assert_eq!(count(&s.target(), "INBOX"), 1);

    admin.ok("SETQUOTA user.alice ()");
    let second = migrate(&s);
    let out = text(&second);
    assert_eq!(
        out.matches("over the destination's APPENDLIMIT of 200000")
            .count(),
        over,
        "{out}"
    );
    let want: usize = corpus::FOLDERS
        .iter()
        .map(|f| count(&s.source(), &s.source().folder(f, '/', true)))
        .sum();
    let got: usize = corpus::FOLDERS
        .iter()
        .map(|f| count(&s.target(), &s.target().folder(f, '/', false)))
        .sum();
    assert_eq!(got, want + 1 - over, "{out}");
}

/// A folder Cyrus cannot hold (a `"` in its name) is reported for the user
/// with the way out, the rest is copied; `folder_map` then places it.
#[test]
fn refused_folder_is_reported_and_mapped_by_folder_map() {
    let s = setup(false, corpus::generate(13, 5));
    let mut c = Store::Dovecot(&s.dovecot).login("alice");
    c.ok("CREATE \"Odd\\\"Name\"");
    for i in 0..2 {
        let body = message(
            "x@example.net",
            "alice@example.org",
            &format!("odd {i}"),
            "hi",
        );
        let tag = c.send_literal("APPEND \"Odd\\\"Name\" (\\Seen)", &body);
        let (_, tagged) = c.read_until_tagged(&tag);
        assert!(tagged.contains(" OK"), "{tagged}");
    }
    c.ok("LOGOUT");

    let first = migrate(&s);
    let out = text(&first);
    assert!(!first.status.success(), "{out}");
    assert!(
        out.contains("refused to create") && out.contains("folder_map"),
        "{out}"
    );
    // Everything else arrived.
    assert_eq!(count(&s.target(), "INBOX.Projects.2024.Q1"), 1, "{out}");

    let mut cfg = std::fs::read_to_string(&s.config).expect("read config");
    cfg.push_str("folder_map = { \"Odd\\\"Name\" = \"INBOX.Odd Name\" }\n");
    std::fs::write(&s.config, cfg).expect("write config");
    let second = migrate(&s);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(count(&s.target(), "INBOX.Odd Name"), 2);
}

/// `migrate --cutover` from Cyrus to Dovecot while a sender delivers through
/// mailshift's SMTP every ~100 ms: no 4xx, every message once on Dovecot,
/// the user's mailHost flipped.
#[test]
fn cutover_from_cyrus_with_smtp_deliveries_loses_nothing() {
    let s = setup(true, corpus::generate_inbox(300, 31));
    let proxy = Mailshift::start(&s.proxy_config);
    let stop = Arc::new(AtomicBool::new(false));
    let smtp_port = proxy.smtp_port();
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            let mut refused = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let subject = format!("smtp-{i}");
                let mut c = support::smtp::SmtpClient::connect(smtp_port);
                c.expect("EHLO sender.example.net", "250");
                let reply = c.send_mail(
                    "sender@example.net",
                    &["alice@example.org"],
                    &message("sender@example.net", "alice@example.org", &subject, "x"),
                );
                if reply.starts_with("250") {
                    sent.push(subject);
                } else {
                    refused.push(format!("{subject}: {reply}"));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (sent, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let out = mailshift(
        &["migrate", "--user", "alice", "--cutover", "--json"],
        &s.config,
    );
    assert!(out.status.success(), "{}\n{}", text(&out), proxy.log_tail());
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let (sent, refused) = sender.join().expect("sender");
    assert!(
        refused.is_empty(),
        "SMTP refused during cutover: {refused:?}"
    );
    assert!(sent.len() > 5, "the sender barely sent: {sent:?}");
    let host = s.ldap.search("(uid=alice)", &["mailHost"]);
    assert!(host.contains("mailHost: new.example.org"), "{host}");

    // The sweep moves what reached Cyrus during the final pass.
    std::thread::sleep(Duration::from_millis(2500));
    let subjects = |store: &Store<'_>| {
        let mut c = store.login("alice");
        c.ok("EXAMINE INBOX");
        let v = c.subjects();
        c.ok("LOGOUT");
        v
    };
    let on_new = subjects(&s.target());
    for subject in &sent {
        let n = on_new.iter().filter(|x| *x == subject).count();
        assert_eq!(n, 1, "{subject} is on the new store {n} times");
    }
    let on_old = subjects(&s.source());
    for subject in on_old.iter().filter(|x| !x.starts_with("smtp-")) {
        assert!(
            on_new.contains(subject),
            "{subject} missing on the new store"
        );
    }
    let mail = |v: &[String]| v.iter().filter(|x| !x.starts_with("smtp-")).count();
    assert_eq!(
        mail(&on_new),
        mail(&on_old),
        "the old mailbox doubled or lost"
    );
    assert!(mail(&on_old) >= 250, "the corpus did not load");
}

/// Dovecot's ImapTest scripted suite against Cyrus directly and through
/// mailshift gives the same results: the same tests pass and the same fail
/// (Cyrus's own answers differ from Dovecot's in places; mailshift must add
/// no difference of its own). ImapTest is not in Debian: it is built from its
/// source for this check (see the README), so the default suite skips it.
#[test]
#[ignore = "needs ImapTest: IMAPTEST=… IMAPTEST_TESTS=… cargo test --test cyrus imaptest -- --ignored"]
fn imaptest_same_through_mailshift_as_direct() {
    // Each run on a Cyrus of its own (ImapTest leaves folders behind), which
    // deletes at once: with Cyrus's delayed delete, the CREATE that opens the
    // next test group races the DELETE that closed the last one.
    let opts = || CyrusOpts {
        extra: "delete_mode: immediate\nexpunge_mode: immediate\n".into(),
        ..CyrusOpts::default()
    };
    let (direct, direct_summary) = {
        let s = setup_opts(true, Vec::new(), opts());
        imaptest::scripted(
            s.cyrus.imap_port(),
            "alice",
            "alicepw",
            &s.cyrus.folder("imaptest"),
        )
    };
    let s = setup_opts(true, Vec::new(), opts());
    let proxy = Mailshift::start(&s.proxy_config);
    let (through, through_summary) = imaptest::scripted(
        proxy.imap_port(),
        "alice",
        "alicepw",
        &s.cyrus.folder("imaptest"),
    );
    eprintln!("direct:  {direct_summary}\nthrough: {through_summary}\nfailed direct: {direct:#?}");
    assert!(
        direct_summary.contains("test groups"),
        "ImapTest did not run: {direct_summary}"
    );
    let (direct, through, not_run) = imaptest::ran_on_both(&direct, &through);
    eprintln!("groups not run on one side or both: {not_run:?}");
    assert!(
        not_run.len() < 10,
        "too many groups did not start; the comparison would say little: {not_run:?}"
    );
    assert_eq!(
        through,
        direct,
        "failures through mailshift differ from direct\n{}",
        proxy.log_tail()
    );
}
