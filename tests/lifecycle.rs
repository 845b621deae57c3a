//! Lifecycle and faults: SIGTERM drains (a user is never left in hold), a hold
//! left by a killed instance is resolved by another one or by the restarted
//! one, scheduled mode starts at once and rides out a directory outage, SIGHUP
//! reloads the config. Real slapd, two Dovecot stores, mailshift binaries.
//!
//! A cutover's hold lasts well under a second, too short to hit from outside.
//! The tests stretch it the way a slow store would: the old store is reached
//! through a TCP forwarder that the test stalls as soon as it sees the hold in
//! LDAP, so the final pass hangs inside the hold while the test strikes.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::proxy::{NEW_HOST, OLD_HOST};
use support::{corpus, message, ImapClient, Lab, Mailshift, SmtpClient};

const GRACE_SECS: u64 = 4;

fn attr(lab: &Lab, user: &str, name: &str) -> String {
    lab.ldap
        .search(&format!("(uid={user})"), &[name])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
        .to_string()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn count(port: u16, user: &str) -> usize {
    let mut c = ImapClient::connect(port);
    c.login(&format!("{user}*admin"), "adminpw");
    c.ok("EXAMINE INBOX");
    let n = c.subjects().len();
    c.ok("LOGOUT");
    n
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pid_of(proxy: &Mailshift) -> u32 {
    std::fs::read_to_string(proxy.dir().join("mailshift.pid.supervise"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// SIGTERM, then how long the process took to exit.
fn terminate(pid: u32) -> Duration {
    let t = Instant::now();
    kill(pid, "-TERM");
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// A TCP forwarder to a store that the test can stall (bytes wait while set).
struct Forwarder {
    port: u16,
    stall: Arc<AtomicBool>,
}

fn forwarder(target: u16) -> Forwarder {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stall = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stall);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        while flag.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    Forwarder { port, stall }
}

/// A serve config: `[migration]` with `extra`, the old store through `via`.
fn config(lab: &Lab, state: &Path, via: Option<&Forwarder>, extra: &str) -> String {
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"20s\"\n{extra}",
        state.display()
    );
    let mut text = format!(
        "shutdown_grace = \"{GRACE_SECS}s\"\n{}",
        lab.mailshift_config(&migration)
    );
    if let Some(f) = via {
        text = text.replace(
            &format!("127.0.0.1:{}", lab.old.imap_port()),
            &format!("127.0.0.1:{}", f.port),
        );
    }
    text
}

/// `POST /api/v1/users/{user}/migrate` on the admin API.
fn admin_migrate(proxy: &Mailshift, user: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", proxy.admin_port())).expect("admin");
    write!(
        s,
        "POST /api/v1/users/{user}/migrate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer labtoken\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Waits until alice is in hold, then stalls the old store under the final pass.
fn stall_in_hold(lab: &Lab, fwd: &Forwarder, log: impl Fn() -> String) {
    wait_for("the hold", 90, || {
        attr(lab, "alice", "mailUserStatus") == "hold" || {
            let l = log();
            assert!(
                !l.contains("cut over"),
                "the cutover ended before the test saw the hold:\n{l}"
            );
            false
        }
    });
    fwd.stall.store(true, Ordering::Relaxed);
}

fn load_alice(lab: &Lab, n: usize) {
    corpus::load(
        lab.old.imap_port(),
        "alice",
        "admin",
        "adminpw",
        &corpus::generate_inbox(n, 7),
    );
}

/// SIGTERM to `serve` while its cutover holds alice: the hold is undone (the
/// final pass cannot finish) before the process exits, within the grace.
#[test]
fn sigterm_to_serve_in_hold_releases_the_user_before_exit() {
    let lab = Lab::start(true);
    load_alice(&lab, 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let fwd = forwarder(lab.old.imap_port());
    let proxy = Mailshift::start(&config(
        &lab,
        &dir.path().join("state"),
        Some(&fwd),
        "instance_id = \"A\"\nlease = \"6s\"\n",
    ));
    let answer = admin_migrate(&proxy, "alice");
    assert!(answer.starts_with("HTTP/1.1 2"), "{answer}");
    stall_in_hold(&lab, &fwd, || proxy.log());
    let took = terminate(pid_of(&proxy));
    fwd.stall.store(false, Ordering::Relaxed);
    assert!(
        took < Duration::from_secs(GRACE_SECS) + Duration::from_millis(1500),
        "exit took {took:?}\n{}",
        proxy.log_tail()
    );
    assert_eq!(
        attr(&lab, "alice", "mailUserStatus"),
        "active",
        "{}",
        proxy.log_tail()
    );
    assert_eq!(attr(&lab, "alice", "mailHost"), OLD_HOST);
    assert!(
        attr(&lab, "alice", "mailshiftMigrationError").contains("shutting down"),
        "{}",
        proxy.log_tail()
    );
    assert!(
        proxy.log().contains("drained; exiting"),
        "{}",
        proxy.log_tail()
    );
}

/// SIGKILL to the instance holding alice: the other running instance takes
/// the expired lease and finishes the cutover; nothing doubled.
#[test]
fn sigkill_in_hold_is_resolved_by_the_other_instance() {
    let lab = Lab::start(true);
    load_alice(&lab, 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let fwd = forwarder(lab.old.imap_port());
    let lease = "lease = \"6s\"\n";
    let mut a = Mailshift::start(&config(
        &lab,
        &dir.path().join("state-a"),
        Some(&fwd),
        &format!("instance_id = \"A\"\n{lease}"),
    ));
    let b = Mailshift::start(&config(
        &lab,
        &dir.path().join("state-b"),
        None,
        &format!("instance_id = \"B\"\n{lease}"),
    ));
    admin_migrate(&a, "alice");
    stall_in_hold(&lab, &fwd, || a.log());
    a.kill();
    let killed = Instant::now();
    assert!(attr(&lab, "alice", "mailshiftMigrationLease").starts_with("A "));
    wait_for("B to resolve the hold", 30, || {
        attr(&lab, "alice", "mailUserStatus") == "active"
    });
    // The lease (6 s) runs out, B waits a third of it more (a slow renewal
    // is not a death) and checks every third: resolved within a second lease.
    assert!(
        killed.elapsed() < Duration::from_secs(6 + 6),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        attr(&lab, "alice", "mailHost"),
        NEW_HOST,
        "{}",
        b.log_tail()
    );
    assert_eq!(attr(&lab, "alice", "mailshiftMigrationState"), "done");
    assert_eq!(
        count(lab.new.imap_port(), "alice"),
        count(lab.old.imap_port(), "alice")
    );
    assert!(b.log().contains("cutover finished"), "{}", b.log_tail());
}

/// `serve` restarted with the same instance_id resolves the hold it left
/// at once, long before its lease (60 s) would expire.
#[test]
fn restarted_serve_resolves_its_own_hold_at_start() {
    let lab = Lab::start(true);
    load_alice(&lab, 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let fwd = forwarder(lab.old.imap_port());
    let text = config(
        &lab,
        &dir.path().join("state"),
        Some(&fwd),
        "instance_id = \"A\"\nlease = \"60s\"\n",
    );
    let mut a = Mailshift::start(&text);
    admin_migrate(&a, "alice");
    stall_in_hold(&lab, &fwd, || a.log());
    a.kill();
    fwd.stall.store(false, Ordering::Relaxed);
    assert_eq!(attr(&lab, "alice", "mailUserStatus"), "hold");
    let restarted = Instant::now();
    let a2 = Mailshift::start(&text);
    wait_for("the restarted instance to resolve its hold", 20, || {
        attr(&lab, "alice", "mailUserStatus") == "active"
    });
    assert!(restarted.elapsed() < Duration::from_secs(20));
    assert_eq!(
        attr(&lab, "alice", "mailHost"),
        NEW_HOST,
        "{}",
        a2.log_tail()
    );
    assert_eq!(
        count(lab.new.imap_port(), "alice"),
        count(lab.old.imap_port(), "alice")
    );
}

/// Scheduled mode inside a window (no window: always) with sweep_interval
/// 1m claims its first user within seconds of the start.
#[test]
fn scheduled_mode_starts_at_once() {
    let lab = Lab::start(true);
    load_alice(&lab, 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let proxy = Mailshift::start(&config(
        &lab,
        &dir.path().join("state"),
        None,
        "mode = \"scheduled\"\nusers_filter = \"(uid=alice)\"\nsweep_interval = \"1m\"\nwindows = [\"Mon-Sun 00:00-24:00\"]\ninstance_id = \"A\"\n",
    ));
    wait_for("the first pass to start", 10, || {
        !attr(&lab, "alice", "mailshiftMigrationState").is_empty()
    });
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    wait_for("alice migrated", 60, || {
        attr(&lab, "alice", "mailshiftMigrationState") == "done"
    });
    assert_eq!(
        attr(&lab, "alice", "mailHost"),
        NEW_HOST,
        "{}",
        proxy.log_tail()
    );
}

/// slapd stopped for 5 s while scheduled passes run (one at a time): the
/// running pass cannot hold, the queued ones cannot start; all are retried
/// within seconds after slapd is back, and migrate.
#[test]
fn scheduled_mode_retries_soon_after_a_directory_outage() {
    let mut lab = Lab::start(true);
    let users = ["alice", "carol", "dave"];
    for (i, u) in users.iter().enumerate() {
        if *u != "alice" {
            lab.ldap.add_user(u, &format!("{u}pw"), OLD_HOST);
        }
        corpus::load(
            lab.old.imap_port(),
            u,
            "admin",
            "adminpw",
            &corpus::generate_inbox(30, 40 + i as u64),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Mailshift::start(&config(
        &lab,
        &dir.path().join("state"),
        None,
        "mode = \"scheduled\"\nusers_filter = \"(|(uid=alice)(uid=carol)(uid=dave))\"\n\
         sweep_interval = \"1m\"\ninstance_id = \"A\"\nlease = \"6s\"\nconcurrency = 1\n\
         max_bytes_per_second = 500000\n",
    ));
    wait_for("a pass to start", 10, || {
        users
            .iter()
            .any(|u| attr(&lab, u, "mailshiftMigrationLease").starts_with("A "))
    });
    lab.ldap.stop();
    std::thread::sleep(Duration::from_secs(5));
    lab.ldap.start_again();
    let back = Instant::now();
    wait_for("every user migrated after the outage", 60, || {
        users
            .iter()
            .all(|u| attr(&lab, u, "mailshiftMigrationState") == "done")
    });
    let took = back.elapsed();
    let log = proxy.log();
    assert!(
        log.contains("retrying"),
        "no pass failed in the outage:\n{}",
        proxy.log_tail()
    );
    for u in users {
        assert_eq!(attr(&lab, u, "mailHost"), NEW_HOST, "{u}");
        assert_eq!(attr(&lab, u, "mailUserStatus"), "active", "{u}");
        assert_eq!(
            count(lab.new.imap_port(), u),
            count(lab.old.imap_port(), u),
            "{u}"
        );
    }
    // Three users one after another (about 2 s each at the cap) plus at most
    // one back-off step: seconds, not the sweep_interval or ten minutes.
    assert!(took < Duration::from_secs(40), "{took:?}");
    eprintln!("all migrated {took:?} after slapd was back");
    for l in log
        .lines()
        .filter(|l| l.contains("retry") || l.contains("cut over"))
    {
        eprintln!("  {l}");
    }
}

/// SIGTERM to `mailshift migrate --cutover` inside the hold: the CLI undoes
/// the hold before it exits.
#[test]
fn sigterm_to_migrate_cutover_leaves_no_hold() {
    let lab = Lab::start(true);
    load_alice(&lab, 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let fwd = forwarder(lab.old.imap_port());
    let text = config(
        &lab,
        &dir.path().join("state"),
        Some(&fwd),
        "instance_id = \"cli\"\n",
    )
    .replace("@IMAP_PORT@", "1")
    .replace("@IMAPS_PORT@", "2")
    .replace("@ADMIN_PORT@", "3");
    let cfg: PathBuf = dir.path().join("cli.toml");
    std::fs::write(&cfg, text).expect("write");
    let log = dir.path().join("cli.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["migrate", "--user", "alice", "--cutover", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("runs");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    stall_in_hold(&lab, &fwd, read);
    let t = Instant::now();
    kill(child.id(), "-TERM");
    let status = child.wait().expect("wait");
    let took = t.elapsed();
    fwd.stall.store(false, Ordering::Relaxed);
    assert!(
        !status.success(),
        "an interrupted cutover must not report success"
    );
    assert!(
        took < Duration::from_secs(GRACE_SECS) + Duration::from_millis(1500),
        "{took:?}\n{}",
        read()
    );
    assert_eq!(
        attr(&lab, "alice", "mailUserStatus"),
        "active",
        "{}",
        read()
    );
    assert_eq!(attr(&lab, "alice", "mailHost"), OLD_HOST);
}

/// SIGHUP: a new mailhost mapping takes effect for new logins while an open
/// session goes on; a broken config is refused with its key named.
#[test]
fn sighup_reloads_the_config_and_refuses_a_broken_one() {
    let lab = Lab::start(true);
    lab.ldap.add_user("carol", "carolpw", "extra.example.org");
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = format!(
        "[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\nqueue_dir = \"{}\"\n",
        dir.path().join("queue").display()
    );
    let proxy = Mailshift::start(&config(&lab, &dir.path().join("state"), None, &smtp));
    let carol_rcpt = || {
        let mut c = SmtpClient::connect(proxy.smtp_port());
        c.expect("EHLO client.example.net", "250");
        c.expect("MAIL FROM:<x@example.net>", "250");
        c.cmd("RCPT TO:<carol@example.org>")
    };
    assert!(
        carol_rcpt().starts_with("451"),
        "carol's mailHost has no backend yet"
    );
    let pid = pid_of(&proxy);
    let mut open = ImapClient::connect(proxy.imap_port());
    open.login("bob", "bobpw");
    open.ok("SELECT INBOX");
    let carol_login = || {
        let mut c = ImapClient::connect(proxy.imap_port());
        let (_, tagged) = c.cmd("LOGIN carol carolpw");
        tagged
    };
    assert!(!carol_login().contains("OK"), "carol has no backend yet");

    let path = proxy.config_path().to_path_buf();
    let before = std::fs::read_to_string(&path).expect("read");
    let mapped = before.replace(
        "mailhost = [\"new.example.org\"]",
        "mailhost = [\"new.example.org\", \"extra.example.org\"]",
    );
    assert_ne!(mapped, before);
    std::fs::write(&path, &mapped).expect("write");
    kill(pid, "-HUP");
    wait_for("the reload", 10, || proxy.log().contains("config reloaded"));
    assert!(carol_login().contains("OK"), "{}", proxy.log_tail());
    let rcpt = carol_rcpt();
    assert!(
        rcpt.starts_with("250"),
        "SMTP routes by the new backends: {rcpt}"
    );
    open.ok("NOOP");
    assert!(open
        .ok("EXAMINE INBOX")
        .iter()
        .any(|l| l.contains("EXISTS")));

    std::fs::write(
        &path,
        mapped.replace("[imap]\n", "[imap]\nidle_timeout = \"5\"\n"),
    )
    .expect("write");
    kill(pid, "-HUP");
    wait_for("the refusal", 10, || {
        proxy.log().contains("new config refused")
    });
    assert!(
        proxy.log().contains("imap.idle_timeout"),
        "{}",
        proxy.log_tail()
    );
    open.ok("NOOP");
    assert!(carol_login().contains("OK"), "the old config must stay");
    assert!(alive(pid));
}

/// SIGTERM with an SMTP message half sent and an IMAP session open: the
/// message is let finish (250, then 421) and delivered, IMAP clients (logged
/// in or not) get BYE, and the process exits within the grace.
#[test]
fn sigterm_lets_an_smtp_transaction_end_and_says_bye_to_imap() {
    let lab = Lab::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = format!(
        "[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\nqueue_dir = \"{}\"\n",
        dir.path().join("queue").display()
    );
    let proxy = Mailshift::start(&config(&lab, &dir.path().join("state"), None, &smtp));
    let pid = pid_of(&proxy);
    let mut imap = ImapClient::connect(proxy.imap_port());
    imap.login("bob", "bobpw");
    imap.ok("SELECT INBOX");
    let mut not_logged_in = ImapClient::connect(proxy.imap_port());
    let mut c = SmtpClient::connect(proxy.smtp_port());
    c.expect("EHLO client.example.net", "250");
    c.expect("MAIL FROM:<carol@example.net>", "250");
    c.expect("RCPT TO:<alice@example.org>", "250");
    c.expect("DATA", "354");
    let wire = SmtpClient::wire(&message(
        "carol@example.net",
        "alice@example.org",
        "sent-across-shutdown",
        "the end of this message arrives after SIGTERM",
    ));
    let (head, rest) = wire.split_at(wire.len() / 2);
    c.send(head);
    let t = Instant::now();
    kill(pid, "-TERM");
    let bye = imap.read_line();
    assert!(
        bye.starts_with("* BYE") && bye.contains("shutting down"),
        "{bye:?}"
    );
    let bye = not_logged_in.read_line();
    assert!(bye.starts_with("* BYE"), "before login: {bye:?}");
    std::thread::sleep(Duration::from_millis(500));
    c.send(rest);
    let end = c.reply();
    assert!(
        end.starts_with("250"),
        "end of data: {end:?}\n{}",
        proxy.log_tail()
    );
    let next = c.reply();
    assert!(next.starts_with("421"), "after the transaction: {next:?}");
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(GRACE_SECS) + Duration::from_millis(1500),
            "still running {:?} after SIGTERM",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut check = ImapClient::connect(lab.old.imap_port());
    check.login("alice*admin", "adminpw");
    check.ok("EXAMINE INBOX");
    assert!(
        check
            .subjects()
            .contains(&"sent-across-shutdown".to_string()),
        "the message was not delivered"
    );
}
