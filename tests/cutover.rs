//! Cutover and rollback with the proxy in front: real slapd (syncprov), two
//! Dovecot stores, `mailshift serve` and `mailshift migrate --cutover` /
//! `mailshift rollback` as an admin would run them.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::proxy::{NEW_HOST, OLD_HOST};
use support::{corpus, message, ImapClient, Lab, Mailshift};

struct Setup {
    lab: Lab,
    proxy: Mailshift,
    cli_config: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(messages: usize) -> Setup {
    let lab = Lab::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"20s\"\ninstance_id = \"test-cli\"\nsweep_interval = \"1s\"\n\
         [smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\nqueue_dir = \"{}\"\n",
        dir.path().join("state").display(),
        dir.path().join("queue").display()
    );
    let text = lab.mailshift_config(&migration);
    let proxy = Mailshift::start(&text);
    let cli_config = dir.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        text.replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3")
            .replace("@SMTP_PORT@", "4"),
    )
    .expect("write");
    corpus::load(
        lab.old.imap_port(),
        "alice",
        "admin",
        "adminpw",
        &corpus::generate_inbox(messages, 11),
    );
    Setup {
        lab,
        proxy,
        cli_config,
        _dir: dir,
    }
}

fn cli(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(args)
        .arg("--config")
        .arg(&s.cli_config)
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

fn attr(s: &Setup, name: &str) -> String {
    let out = s.lab.ldap.search("(uid=alice)", &[name]);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
        .to_string()
}

fn inbox_subjects(port: u16, user: &str) -> Vec<String> {
    let mut c = ImapClient::connect(port);
    c.login(&format!("{user}*admin"), "adminpw");
    c.ok("EXAMINE INBOX");
    let s = c.subjects();
    c.ok("LOGOUT");
    s
}

/// Nothing lost: while the user is cut over, a sender injects a message every
/// ~100 ms over SMTP through mailshift and a client keeps appending through
/// the IMAP proxy. The client's session is closed, its reconnect waits out the
/// hold and lands on the new store; no SMTP transaction gets a 4xx or 5xx; and
/// every message is on the new store exactly once.
#[test]
fn cutover_with_a_working_client_loses_nothing() {
    let s = setup(600);
    let stop = Arc::new(AtomicBool::new(false));
    let port = s.proxy.imap_port();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut appended = Vec::new();
            let mut reconnects = 0;
            let mut i = 0;
            'outer: while !stop.load(Ordering::Relaxed) {
                let mut c = ImapClient::connect(port);
                c.login("alice", "alicepw");
                c.ok("SELECT INBOX");
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let subject = format!("appended-{i}");
                    let tag = c.send_literal(
                        "APPEND INBOX (\\Seen)",
                        &message("me@example.org", "alice@example.org", &subject, "x"),
                    );
                    match c.try_read_until_tagged(&tag) {
                        Ok(t) if t.contains(" OK") => {
                            appended.push(subject);
                            i += 1;
                        }
                        // BYE: the session was closed for the cutover; reconnect.
                        _ => {
                            reconnects += 1;
                            continue 'outer;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            (appended, reconnects)
        })
    };
    let smtp_port = s.proxy.smtp_port();
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
    let started = Instant::now();
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover", "--json"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        s.proxy.log_tail()
    );
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let (appended, reconnects) = writer.join().expect("writer");
    let (sent, refused) = sender.join().expect("sender");
    assert!(
        refused.is_empty(),
        "SMTP transactions refused during cutover: {refused:?}"
    );
    assert!(sent.len() > 5, "the sender barely sent: {sent:?}");
    assert!(
        reconnects >= 1,
        "the client's session was not closed by the cutover"
    );
    assert!(appended.len() > 5, "the client barely worked: {appended:?}");

    assert_eq!(attr(&s, "mailHost"), NEW_HOST);
    assert_eq!(attr(&s, "mailUserStatus"), "active");
    assert_eq!(attr(&s, "mailshiftMigrationState"), "done");
    assert_eq!(
        attr(&s, "mailshiftMigrationLease"),
        "",
        "lease not released"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hold: f64 = stdout
        .split("\"hold_seconds\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no hold_seconds in {stdout}"));
    assert!(
        hold > 0.0 && hold < 20.0,
        "hold {hold}s (whole cutover {took:?})"
    );

    // Every appended and every sent message is on the new store exactly once
    // (the sweep moves what reached the old store during the final pass).
    std::thread::sleep(Duration::from_millis(2500));
    let on_new = inbox_subjects(s.lab.new.imap_port(), "alice");
    for subject in appended.iter().chain(&sent) {
        let n = on_new.iter().filter(|x| *x == subject).count();
        assert_eq!(n, 1, "{subject} is on the new store {n} times");
    }
    // And the whole old mailbox came along.
    let on_old = inbox_subjects(s.lab.old.imap_port(), "alice");
    for subject in on_old
        .iter()
        .filter(|x| !x.starts_with("appended-") && !x.starts_with("smtp-"))
    {
        assert!(
            on_new.contains(subject),
            "{subject} missing on the new store"
        );
    }
    // A fresh login through the proxy sees the new store.
    let mut c = ImapClient::connect(port);
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    assert_eq!(c.subjects().len(), on_new.len());
}

#[test]
fn a_failing_destination_leaves_the_user_active_on_the_old_store() {
    let mut s = setup(50);
    s.lab.new.stop();
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(attr(&s, "mailHost"), OLD_HOST);
    assert_ne!(attr(&s, "mailUserStatus"), "hold", "user left in hold");
    assert_eq!(attr(&s, "mailshiftMigrationState"), "failed");
    assert!(!attr(&s, "mailshiftMigrationError").is_empty());
    // Logins keep working on the old store.
    let mut c = ImapClient::connect(s.proxy.imap_port());
    c.login("alice", "alicepw");
}

#[test]
fn another_instances_lease_is_respected() {
    let s = setup(10);
    s.lab.ldap.set_attr(
        "alice",
        "mailshiftMigrationLease",
        "other-instance 9999999999",
    );
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("claimed by other-instance"),
        "{}",
        text(&out)
    );
    assert_eq!(attr(&s, "mailHost"), OLD_HOST);
    // An expired lease is taken over.
    s.lab
        .ldap
        .set_attr("alice", "mailshiftMigrationLease", "other-instance 1000");
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(attr(&s, "mailHost"), NEW_HOST);
}

#[test]
fn rollback_brings_the_user_back_with_the_new_mail() {
    let s = setup(40);
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = inbox_subjects(s.lab.old.imap_port(), "alice");
    s.lab.new.deliver(
        "alice",
        &message(
            "x@example.net",
            "alice@example.org",
            "arrived-after-cutover",
            "hi",
        ),
    );
    let back = cli(&s, &["rollback", "--user", "alice"]);
    assert!(back.status.success(), "{}", text(&back));
    assert_eq!(attr(&s, "mailHost"), OLD_HOST);
    assert_eq!(attr(&s, "mailUserStatus"), "active");
    assert_eq!(attr(&s, "mailshiftMigrationState"), "rolled-back");
    let after = inbox_subjects(s.lab.old.imap_port(), "alice");
    assert_eq!(
        after.len(),
        before.len() + 1,
        "duplicates or losses on the way back"
    );
    assert_eq!(
        after
            .iter()
            .filter(|x| *x == "arrived-after-cutover")
            .count(),
        1
    );
    let mut c = ImapClient::connect(s.proxy.imap_port());
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    assert!(c.subjects().contains(&"arrived-after-cutover".to_string()));
}
