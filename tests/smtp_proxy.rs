//! Inbound SMTP end to end: real slapd, two real Dovecot stores (LMTP), the
//! real mailshift binary, and senders nobody here wrote (swaks, Postfix,
//! Python's ssl for STARTTLS). What is checked is what a user would check:
//! the message in the right INBOX over IMAP, once, with its bytes intact.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::proxy::{NEW_HOST, OLD_HOST};
use support::{ImapClient, Lab, Mailshift, Postfix, SmtpClient};

const HOSTNAME: &str = "mx.mailshift.test";

/// The lab config plus `[smtp]` on `@SMTP_PORT@`, with its queue in `queue`.
fn config(lab: &Lab, queue: &Path, extra_smtp: &str) -> String {
    lab.mailshift_config(&format!(
        "[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\n\
         hostname = \"{HOSTNAME}\"\nqueue_dir = \"{}\"\nretry_interval = \"300ms\"\n{extra_smtp}",
        queue.display()
    ))
}

struct Env {
    lab: Lab,
    proxy: Mailshift,
    queue: tempfile::TempDir,
}

fn start(extra_smtp: &str) -> Env {
    let lab = Lab::start(false);
    lab.ldap.add_user("carol", "carolpw", OLD_HOST);
    lab.ldap.add_user("dave", "davepw", NEW_HOST);
    let queue = tempfile::tempdir().expect("queue dir");
    let proxy = Mailshift::start(&config(&lab, queue.path(), extra_smtp));
    Env { lab, proxy, queue }
}

fn message(subject: &str, to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.net>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <{subject}@example.net>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Every message in `user`'s INBOX on a store (straight to the store over
/// IMAP, not through mailshift) whose Subject contains `subject`.
fn stored(port: u16, user: &str, subject: &str) -> Vec<Vec<u8>> {
    let mut c = ImapClient::connect(port);
    c.login(user, &format!("{user}pw"));
    c.ok("SELECT INBOX");
    let found = c.ok(&format!("SEARCH SUBJECT {}", support::imap::quote(subject)));
    let ids: Vec<String> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    let mut out = Vec::new();
    for id in ids {
        let lines = c.ok(&format!("FETCH {id} BODY.PEEK[]"));
        let line = lines
            .iter()
            .find(|l| l.contains(" FETCH "))
            .expect("FETCH line");
        let b = line.as_bytes();
        let open = line.find("BODY[] {").expect("literal") + "BODY[] {".len();
        let close = open + line[open..].find('}').expect("}");
        let n: usize = line[open..close].parse().expect("length");
        out.push(b[close + 3..close + 3 + n].to_vec());
    }
    let _ = c.cmd("LOGOUT");
    out
}

/// Splits what a store holds into the header lines added in transit
/// (Return-Path, Delivered-To, Received, each with continuations) and the rest.
fn strip_trace(stored: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut added = Vec::new();
    let mut rest = stored;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| i + 2)
            .unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        let trace = ["Return-Path:", "Delivered-To:", "Received:"]
            .iter()
            .any(|h| line.starts_with(h));
        let cont = line.starts_with('\t') || line.starts_with(' ');
        if trace {
            added.push(line);
        } else if cont && !added.is_empty() {
            let last = added.last_mut().expect("last");
            last.push_str(&line);
        } else {
            return (added, rest.to_vec());
        }
        rest = &rest[end..];
    }
}

fn ours(trace: &[String]) -> usize {
    trace
        .iter()
        .filter(|h| h.contains(&format!("by {HOSTNAME} (mailshift)")))
        .count()
}

/// Waits until `f` holds; the deadline only bounds a failing test.
fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "{what} did not happen\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "30"])
        .args(args)
        .output()
        .expect("swaks (deploy/lab/install-deps.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A file for `swaks --data`: swaks ends the data with CRLF.CRLF itself, so
/// the message's own last CRLF is left out to make it send exactly `msg`.
fn data_file(dir: &Path, name: &str, msg: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, msg.strip_suffix(b"\r\n").unwrap_or(msg)).expect("write");
    path.display().to_string()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn swaks_routes_each_recipient_to_its_store_byte_identical() {
    let env = start("");
    let dir = tempfile::tempdir().expect("tmp");
    for (user, subject) in [("alice", "swaks-old"), ("bob", "swaks-new")] {
        let msg = message(
            subject,
            &format!("{user}@example.org"),
            "Hello.\r\n.leading dot\r\n",
        );
        let path = data_file(dir.path(), subject, &msg);
        let (ok, out) = swaks(
            env.proxy.smtp_port(),
            &[
                "--to",
                &format!("{user}@example.org"),
                "--from",
                "sender@example.net",
                "--data",
                &path,
            ],
        );
        assert!(
            ok && out.contains("<-  250 2.0.0 Ok"),
            "{out}\n{}",
            env.proxy.log_tail()
        );
        let (on_old, on_new) = (
            stored(env.lab.old.imap_port(), user, subject),
            stored(env.lab.new.imap_port(), user, subject),
        );
        let (right, wrong) = if user == "alice" {
            (on_old, on_new)
        } else {
            (on_new, on_old)
        };
        assert_eq!(right.len(), 1, "{user} must get {subject} once");
        assert!(wrong.is_empty(), "{subject} reached the wrong store");
        let (trace, rest) = strip_trace(&right[0]);
        assert_eq!(
            ours(&trace),
            1,
            "one mailshift Received: header: {trace:#?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&rest),
            String::from_utf8_lossy(&msg),
            "the message must arrive byte for byte"
        );
    }
    let metrics = http_get(env.proxy.admin_port(), "/metrics");
    for needle in [
        "mailshift_smtp_transactions_total{backend=\"old\",result=\"delivered\"} 1",
        "mailshift_smtp_transactions_total{backend=\"new\",result=\"delivered\"} 1",
        "mailshift_smtp_recipients_total{result=\"delivered\"} 2",
        "mailshift_smtp_queue_messages 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let log = env.proxy.log();
    assert_eq!(
        log.matches("smtp transaction").count(),
        2,
        "one log line per transaction:\n{log}"
    );
}

#[test]
fn postfix_sends_one_message_to_three_recipients_on_both_stores_in_one_transaction() {
    let env = start("");
    let postfix = Postfix::start(env.proxy.smtp_port());
    let msg = message("postfix-three", "alice@example.org", "three recipients");
    let dir = tempfile::tempdir().expect("tmp");
    let path = data_file(dir.path(), "m", &msg);
    let sent = Instant::now();
    let (ok, out) = swaks(
        postfix.smtpd_port(),
        &[
            "--to",
            "alice@example.org,bob@example.org,carol@example.org",
            "--from",
            "sender@example.net",
            "--data",
            &path,
        ],
    );
    assert!(ok, "{out}");
    let everyone = [
        (env.lab.old.imap_port(), "alice"),
        (env.lab.new.imap_port(), "bob"),
        (env.lab.old.imap_port(), "carol"),
    ];
    eventually(
        "delivery to all three",
        Duration::from_secs(30),
        || {
            everyone
                .iter()
                .all(|(p, u)| stored(*p, u, "postfix-three").len() == 1)
        },
        || format!("{}\n{}", postfix.log_tail(), env.proxy.log_tail()),
    );
    let took = sent.elapsed();
    eprintln!("postfix → mailshift → both stores, 3 recipients: {took:?}");
    for (p, u) in everyone {
        assert_eq!(stored(p, u, "postfix-three").len(), 1, "{u} exactly once");
    }
    assert_eq!(
        stored(env.lab.new.imap_port(), "alice", "postfix-three").len(),
        0
    );
    // One transaction: one line in mailshift's log, with all three.
    let log = env.proxy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("smtp transaction"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for u in ["alice", "bob", "carol"] {
        assert!(
            lines[0].contains(&format!("{u}@example.org")),
            "{}",
            lines[0]
        );
    }
    let sent_lines = postfix.deliveries("sent");
    assert_eq!(sent_lines.len(), 3, "{}", postfix.log_tail());
    assert!(
        postfix.deliveries("deferred").is_empty(),
        "{}",
        postfix.log_tail()
    );
}

#[test]
fn mixed_outcome_goes_to_the_retry_queue_and_is_delivered_once_after_a_restart() {
    let mut env = start("");
    let msg = message(
        "mixed-outcome",
        "alice@example.org",
        &"line\r\n".repeat(200),
    );
    let mut c = SmtpClient::connect(env.proxy.smtp_port());
    c.expect("EHLO client.example.net", "250");
    c.expect("MAIL FROM:<sender@example.net>", "250");
    c.expect("RCPT TO:<alice@example.org>", "250");
    c.expect("RCPT TO:<bob@example.org>", "250");
    c.expect("DATA", "354");
    let wire = SmtpClient::wire(&msg);
    let (head, tail) = wire.split_at(wire.len() / 2);
    c.send(head);
    // The new store goes away after it accepted bob and DATA.
    env.lab.new.stop();
    c.send(tail);
    let reply = c.reply();
    assert!(
        reply.starts_with("250 "),
        "{reply}\n{}",
        env.proxy.log_tail()
    );
    assert_eq!(
        stored(env.lab.old.imap_port(), "alice", "mixed-outcome").len(),
        1
    );
    let entries = std::fs::read_dir(env.queue.path().join("msg"))
        .expect("queue")
        .count();
    assert_eq!(entries, 2, "message and envelope queued");
    // The admin sees it: `mailshift status` lists the queued message and who is owed.
    let cli = env.queue.path().join("cli.toml");
    std::fs::write(
        &cli,
        config(&env.lab, env.queue.path(), "")
            .replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3")
            .replace("@SMTP_PORT@", "4"),
    )
    .expect("write");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["status", "--config"])
        .arg(&cli)
        .output()
        .expect("status runs");
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("SMTP retry queue: 1 messages"), "{shown}");
    assert!(shown.contains("bob@example.org"), "{shown}");
    // mailshift restarts while the store is still down; the queue survives.
    let port = env.proxy.smtp_port();
    env.proxy.stop();
    env.lab.new.start_again();
    env.proxy =
        Mailshift::start_with_smtp_port(&config(&env.lab, env.queue.path(), ""), Some(port));
    eventually(
        "bob's copy from the retry queue",
        Duration::from_secs(30),
        || stored(env.lab.new.imap_port(), "bob", "mixed-outcome").len() == 1,
        || env.proxy.log_tail(),
    );
    eventually(
        "an empty queue",
        Duration::from_secs(10),
        || {
            std::fs::read_dir(env.queue.path().join("msg"))
                .map(|d| d.count())
                .unwrap_or(1)
                == 0
        },
        || env.proxy.log_tail(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let bobs = stored(env.lab.new.imap_port(), "bob", "mixed-outcome");
    assert_eq!(bobs.len(), 1, "exactly once");
    assert_eq!(
        stored(env.lab.old.imap_port(), "alice", "mixed-outcome").len(),
        1
    );
    let (trace, rest) = strip_trace(&bobs[0]);
    assert_eq!(ours(&trace), 1);
    assert_eq!(rest, msg);
}

#[test]
fn eight_bit_and_smtputf8_messages_arrive_unchanged() {
    let env = start("");
    let mut c = SmtpClient::connect(env.proxy.smtp_port());
    let ehlo = c.expect("EHLO client.example.net", "250");
    for ext in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "SMTPUTF8",
    ] {
        assert!(ehlo.contains(ext), "{ext} not offered: {ehlo}");
    }
    let eight = message(
        "eight-bit",
        "alice@example.org",
        "Grüße, café, naïve — 8 bit",
    );
    c.expect("MAIL FROM:<sender@example.net> BODY=8BITMIME", "250");
    c.expect("RCPT TO:<alice@example.org>", "250");
    c.expect("DATA", "354");
    c.send(&SmtpClient::wire(&eight));
    assert!(c.reply().starts_with("250 "));
    let utf8 = "From: Jörg <jörg@bücher.example>\r\nTo: <bob@example.org>\r\nSubject: utf8-smtp Ünïcödé\r\n\
                Message-ID: <utf8@bücher.example>\r\nMIME-Version: 1.0\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\r\nÜnïcödé body\r\n"
        .as_bytes()
        .to_vec();
    c.expect(
        "MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME",
        "250",
    );
    c.expect("RCPT TO:<bob@example.org>", "250");
    c.expect("DATA", "354");
    c.send(&SmtpClient::wire(&utf8));
    let r = c.reply();
    assert!(r.starts_with("250 "), "{r}\n{}", env.proxy.log_tail());
    let got = stored(env.lab.old.imap_port(), "alice", "eight-bit");
    assert_eq!(got.len(), 1);
    assert_eq!(strip_trace(&got[0]).1, eight);
    let got = stored(env.lab.new.imap_port(), "bob", "utf8-smtp");
    assert_eq!(got.len(), 1);
    let (trace, rest) = strip_trace(&got[0]);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        String::from_utf8_lossy(&utf8)
    );
    assert!(
        trace.iter().any(|t| t.contains("with UTF8SMTP id")),
        "{trace:#?}"
    );
}

#[test]
fn refusals_size_unknown_outside_domain_and_filter_metacharacters() {
    let env = start("max_message_size = 4000\n");
    let mut c = SmtpClient::connect(env.proxy.smtp_port());
    c.expect("EHLO client.example.net", "250");
    let r = c.cmd("MAIL FROM:<sender@example.net> SIZE=5000");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    c.expect("MAIL FROM:<sender@example.net>", "250");
    for (rcpt, want) in [
        ("nobody@example.org", "550 5.1.1"),
        ("alice@elsewhere.example", "550 5.7.1"),
        ("alice@example.org.evil.example", "550 5.7.1"),
        ("*@example.org", "550 5.1.1"),
        ("\"*)(mail=*\"@example.org", "550 5.1.1"),
        ("alice*@example.org", "550 5.1.1"),
        ("ALICE@EXAMPLE.ORG", "250"),
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with(want), "RCPT {rcpt}: {r}");
    }
    c.expect("DATA", "354");
    c.send(&SmtpClient::wire(&message(
        "too-big",
        "alice@example.org",
        &"x".repeat(6000),
    )));
    let r = c.reply();
    assert!(r.starts_with("552 5.3.4"), "{r}");
    c.expect("NOOP", "250");
    let r = c.cmd("VRFY alice");
    assert!(r.starts_with("252"), "{r}");
    assert!(stored(env.lab.old.imap_port(), "alice", "too-big").is_empty());
}

#[test]
fn stopped_store_gives_451_for_its_recipients_and_postfix_retries_them() {
    let mut env = start("");
    let postfix = Postfix::start(env.proxy.smtp_port());
    env.lab.new.stop();
    let mut c = SmtpClient::connect(env.proxy.smtp_port());
    c.expect("EHLO client.example.net", "250");
    c.expect("MAIL FROM:<sender@example.net>", "250");
    let r = c.cmd("RCPT TO:<bob@example.org>");
    assert!(r.starts_with("451 4.4.1"), "{r}");
    c.expect("RCPT TO:<alice@example.org>", "250");
    c.expect("QUIT", "221");

    let msg = message("store-down", "alice@example.org", "one store down");
    let dir = tempfile::tempdir().expect("tmp");
    let path = data_file(dir.path(), "m", &msg);
    let (ok, out) = swaks(
        postfix.smtpd_port(),
        &[
            "--to",
            "alice@example.org,bob@example.org",
            "--from",
            "sender@example.net",
            "--data",
            &path,
        ],
    );
    assert!(ok, "{out}");
    eventually(
        "alice's copy while the new store is down",
        Duration::from_secs(20),
        || stored(env.lab.old.imap_port(), "alice", "store-down").len() == 1,
        || postfix.log_tail(),
    );
    eventually(
        "postfix deferring bob",
        Duration::from_secs(20),
        || !postfix.deliveries("deferred").is_empty(),
        || postfix.log_tail(),
    );
    assert!(
        postfix.log().contains("451 4.4.1"),
        "{}",
        postfix.log_tail()
    );
    env.lab.new.start_again();
    eventually(
        "bob's copy after the store is back",
        Duration::from_secs(30),
        || stored(env.lab.new.imap_port(), "bob", "store-down").len() == 1,
        || format!("{}\n{}", postfix.log_tail(), env.proxy.log_tail()),
    );
    eventually(
        "postfix's queue empty",
        Duration::from_secs(10),
        || postfix.queued() == 0,
        || postfix.log_tail(),
    );
    assert_eq!(
        stored(env.lab.old.imap_port(), "alice", "store-down").len(),
        1
    );
    assert_eq!(
        stored(env.lab.new.imap_port(), "bob", "store-down").len(),
        1
    );
}

#[test]
fn killing_mailshift_mid_data_fails_the_sender_and_postfix_retry_delivers_once() {
    let mut env = start("max_message_size = 104857600\n");
    // The sender side: a raw client sees no 250 when mailshift dies mid-DATA.
    let mut c = SmtpClient::connect(env.proxy.smtp_port());
    c.expect("EHLO client.example.net", "250");
    c.expect("MAIL FROM:<sender@example.net>", "250");
    c.expect("RCPT TO:<alice@example.org>", "250");
    c.expect("DATA", "354");
    c.send(b"Subject: killed-raw\r\n\r\nhalf a message\r\n");
    let port = env.proxy.smtp_port();
    env.proxy.kill();
    let _ = c.stream().write_all(b"rest\r\n.\r\n");
    let r = c.reply();
    assert!(
        !r.starts_with("250"),
        "a dead proxy must not have said 250: {r}"
    );
    assert!(stored(env.lab.old.imap_port(), "alice", "killed-raw").is_empty());

    // Postfix: kill mailshift while it streams a big message to the store.
    env.proxy = Mailshift::start_with_smtp_port(
        &config(&env.lab, env.queue.path(), "max_message_size = 104857600\n"),
        Some(port),
    );
    let postfix = Postfix::start(port);
    let body = "0123456789abcdef".repeat(4) + "\r\n";
    let msg = message("killed-postfix", "alice@example.org", &body.repeat(600_000));
    let dir = tempfile::tempdir().expect("tmp");
    let path = data_file(dir.path(), "m", &msg);
    let (ok, out) = swaks(
        postfix.smtpd_port(),
        &[
            "--to",
            "alice@example.org",
            "--from",
            "sender@example.net",
            "--data",
            &path,
        ],
    );
    assert!(ok, "{out}");
    // A spool file appears once mailshift has more than 1 MiB of the message.
    let tmp = env.queue.path().join("tmp");
    eventually(
        "mailshift streaming the message",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&tmp)
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        },
        || postfix.log_tail(),
    );
    env.proxy.kill();
    eventually(
        "postfix deferring after the crash",
        Duration::from_secs(20),
        || !postfix.deliveries("deferred").is_empty(),
        || postfix.log_tail(),
    );
    assert!(
        stored(env.lab.old.imap_port(), "alice", "killed-postfix").is_empty(),
        "no partial message"
    );
    env.proxy = Mailshift::start_with_smtp_port(
        &config(&env.lab, env.queue.path(), "max_message_size = 104857600\n"),
        Some(port),
    );
    // Postfix retries on its own within its 1–2 s back-off; on a loaded
    // machine its scheduler has been seen to sit on the deferred message past
    // the minute ("skipped, still being delivered"), so the test also asks
    // for the retry now and then. Either way it is Postfix's retry that must
    // deliver the message, once.
    let mut polls = 0u32;
    eventually(
        "postfix's retry delivering",
        Duration::from_secs(90),
        || {
            polls += 1;
            if polls.is_multiple_of(50) {
                postfix.flush();
            }
            postfix.queued() == 0
        },
        || format!("{}\n{}", postfix.log_tail(), env.proxy.log_tail()),
    );
    let got = stored(env.lab.old.imap_port(), "alice", "killed-postfix");
    assert_eq!(got.len(), 1, "exactly once");
    // Postfix's and mailshift's Received: lines aside, the bytes are the sender's.
    let (trace, rest) = strip_trace(&got[0]);
    assert_eq!(ours(&trace), 1);
    assert!(rest == msg, "message changed in transit");
}

#[test]
fn starttls_injection_does_not_run_the_injected_commands() {
    let env = start("");
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
def reply():
    out = b""
    while True:
        l = f.readline()
        out += l
        if len(l) < 4 or l[3:4] != b"-":
            return out.decode()
print("greeting", reply().strip())
s.sendall(b"EHLO client.example.net\r\n"); reply()
s.sendall(b"STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<evil@evil.example>\r\n")
print("starttls", reply().strip())
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(s, server_hostname="localhost")
tf = t.makefile("rb")
def treply():
    out = b""
    while True:
        l = tf.readline()
        out += l
        if len(l) < 4 or l[3:4] != b"-":
            return out.decode()
t.sendall(b"RCPT TO:<alice@example.org>\r\n")
print("rcpt", treply().strip())
t.sendall(b"EHLO client.example.net\r\n")
print("ehlo", treply().replace("\r\n", " "))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env.proxy.smtp_port().to_string())
        .arg(env.lab.certs.ca_pem.display().to_string())
        .output()
        .expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("starttls 220 2.0.0"), "{text}");
    // Had the injected EHLO + MAIL run, this RCPT would be accepted (250).
    assert!(
        text.contains("rcpt 503 5.5.1"),
        "{text}\n{}",
        env.proxy.log_tail()
    );
    let ehlo = text.lines().find(|l| l.starts_with("ehlo ")).unwrap_or("");
    assert!(ehlo.contains("250") && !ehlo.contains("STARTTLS"), "{text}");
}
