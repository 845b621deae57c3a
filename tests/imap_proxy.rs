//! The IMAP routing proxy end to end: real slapd, two real Dovecot stores, the
//! real mailshift binary, and clients nobody here wrote (Python imaplib, mbsync).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::proxy::{NEW_HOST, OLD_HOST};
use support::{message, ImapClient, Lab, Mailshift};

/// Fast failure delays so tests don't wait seconds per wrong password.
const FAST_FAILURES: &[(&str, &str)] = &[(
    "[imap]\n",
    "[imap]\nauth_failure_delay = \"50ms\"\nauth_failure_delay_max = \"200ms\"\n",
)];

fn config(lab: &Lab, edits: &[(&str, &str)]) -> String {
    let mut text = lab.mailshift_config("");
    for (from, to) in FAST_FAILURES.iter().chain(edits) {
        assert!(text.contains(from), "config template lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

fn start(syncprov: bool, edits: &[(&str, &str)]) -> (Lab, Mailshift) {
    let lab = Lab::start(syncprov);
    let proxy = Mailshift::start(&config(&lab, edits));
    (lab, proxy)
}

fn python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Logs in with LOGIN over plain TCP and returns the INBOX subjects.
fn subjects_via(port: u16, user: &str, password: &str) -> Vec<String> {
    let mut c = ImapClient::connect(port);
    c.login(user, password);
    c.ok("SELECT INBOX");
    let s = c.subjects();
    c.ok("LOGOUT");
    s
}

fn tagged_status(line: &str) -> String {
    // "t1 NO [AUTHENTICATIONFAILED] Authentication failed." -> without the tag
    line.split_once(' ')
        .map(|(_, r)| r.to_string())
        .unwrap_or_default()
}

#[test]
fn each_user_lands_on_the_store_ldap_names() {
    let (lab, proxy) = start(true, &[]);
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["only-on-old"]
    );
    assert_eq!(
        subjects_via(proxy.imap_port(), "bob", "bobpw"),
        ["only-on-new"]
    );

    // AUTHENTICATE PLAIN with SASL-IR: base64("\0bob\0bobpw")
    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("AUTHENTICATE PLAIN AGJvYgBib2Jwdw==");
    assert!(tagged.contains("OK [CAPABILITY "), "{tagged}");
    // The client is answered with the store's post-login capabilities.
    assert!(tagged.contains("IDLE"), "{tagged}");
    c.ok("SELECT INBOX");
    assert_eq!(c.subjects(), ["only-on-new"]);

    // The session log line names user, client and backend; no password.
    c.ok("LOGOUT");
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let log = proxy.log();
    let start_line = log
        .lines()
        .find(|l| l.contains("session start") && l.contains("user=bob"))
        .unwrap_or_else(|| panic!("no session line:\n{log}"));
    assert!(start_line.contains("client=127.0.0.1:"), "{start_line}");
    assert!(start_line.contains("backend=new"), "{start_line}");
    assert!(log.contains("session end"), "{log}");
    assert!(!log.contains("alicepw") && !log.contains("bobpw"), "{log}");
    drop(lab);
}

#[test]
fn python_imaplib_over_starttls_and_implicit_tls() {
    let (lab, proxy) = start(true, &[]);
    let script = r#"
import imaplib, ssl, sys
port, tls_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
m = imaplib.IMAP4("127.0.0.1", port)
assert "STARTTLS" in m.capabilities, m.capabilities
m.starttls(ssl_context=ctx)
m.login("alice", "alicepw")
typ, data = m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("starttls:", data[0][1].decode().strip())
m.logout()
m = imaplib.IMAP4_SSL("127.0.0.1", tls_port, ssl_context=ctx)
m.authenticate("PLAIN", lambda _: b"\0bob\0bobpw")
m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("tls:", data[0][1].decode().strip())
try:
    m2 = imaplib.IMAP4_SSL("127.0.0.1", tls_port, ssl_context=ctx)
    m2.login("bob", "wrong")
    print("wrong password accepted")
except imaplib.IMAP4.error as e:
    print("refused:", e)
m.logout()
"#;
    let (ok, out) = python(
        script,
        &[
            &proxy.imap_port().to_string(),
            &proxy.imaps_port().to_string(),
            &lab.certs.ca_pem.display().to_string(),
        ],
    );
    assert!(ok, "{out}\n{}", proxy.log_tail());
    assert!(out.contains("starttls: Subject: only-on-old"), "{out}");
    assert!(out.contains("tls: Subject: only-on-new"), "{out}");
    assert!(
        out.contains("refused:") && out.contains("AUTHENTICATIONFAILED"),
        "{out}"
    );
}

/// Waits for a line on an open session; `None` on timeout.
fn next_line_within(c: &mut ImapClient, t: Duration) -> Option<String> {
    c.set_timeout(t);
    c.try_read_response().ok()
}

#[test]
fn mailhost_flip_with_syncprov_moves_logins_and_kicks_at_once() {
    // cache_ttl is 10 minutes in the lab config: only the change follower can
    // make this happen within seconds.
    let (lab, proxy) = start(true, &[]);
    lab.new.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "alice-on-new", "hi"),
    );
    let mut open = ImapClient::connect(proxy.imap_port());
    open.login("alice", "alicepw");
    open.ok("SELECT INBOX");
    assert_eq!(open.subjects(), ["only-on-old"]);
    // Wait until the follower is live before flipping.
    wait_for_metric(&proxy, "mailshift_directory_sync_up 1");

    let flipped = Instant::now();
    lab.ldap.set_attr("alice", "mailHost", NEW_HOST);
    let bye = next_line_within(&mut open, Duration::from_secs(5));
    let kicked_after = flipped.elapsed();
    let bye = bye.unwrap_or_else(|| panic!("open session not closed\n{}", proxy.log_tail()));
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert!(
        kicked_after < Duration::from_secs(2),
        "kick took {kicked_after:?}"
    );
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["alice-on-new"]
    );

    // And back (an admin backing a user out).
    lab.ldap.set_attr("alice", "mailHost", OLD_HOST);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["only-on-old"]
    );
}

#[test]
fn mailhost_flip_without_syncprov_takes_effect_within_the_ttl() {
    let (lab, proxy) = start(false, &[("cache_ttl = \"10m\"", "cache_ttl = \"2s\"")]);
    lab.new.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "alice-on-new", "hi"),
    );
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["only-on-old"]
    );
    lab.ldap.set_attr("alice", "mailHost", NEW_HOST);
    // Still cached: proves the TTL, not a lookup per login, is what moves it.
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["only-on-old"]
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["alice-on-new"]
    );
    let log = proxy.log();
    assert!(log.contains("does not offer RFC 4533"), "{log}");
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(port: u16, path: &str) -> String {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

fn wait_for_metric(proxy: &Mailshift, needle: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let page = get(proxy.admin_port(), "/metrics");
        if page.contains(needle) {
            return;
        }
        assert!(Instant::now() < until, "no {needle:?} in /metrics:\n{page}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn admin_api_metrics_and_kick() {
    let (_lab, proxy) = start(true, &[]);
    let mut open = ImapClient::connect(proxy.imap_port());
    open.login("bob", "bobpw");
    let port = proxy.admin_port();
    assert!(get(port, "/healthz").contains("200 OK"));
    let user = get(port, "/api/v1/users/bob");
    assert!(user.contains("\"backend\":\"new\""), "{user}");
    assert!(user.contains("\"sessions\":[\"new\"]"), "{user}");
    let metrics = get(port, "/metrics");
    assert!(
        metrics.contains("mailshift_imap_sessions{backend=\"new\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailshift_imap_logins_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailshift_backend_connect_duration_seconds_bucket"),
        "{metrics}"
    );

    let kick = "POST /api/v1/users/bob/kick HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n";
    let refused = http(port, &format!("{kick}\r\n"));
    assert!(refused.contains("401"), "{refused}");
    let wrong = http(port, &format!("{kick}Authorization: Bearer nope\r\n\r\n"));
    assert!(wrong.contains("401"), "{wrong}");
    let done = http(
        port,
        &format!("{kick}Authorization: Bearer labtoken\r\n\r\n"),
    );
    assert!(done.contains("\"kicked\":1"), "{done}");
    let bye = next_line_within(&mut open, Duration::from_secs(5)).expect("BYE after kick");
    assert!(bye.starts_with("* BYE"), "{bye}");
}

#[test]
fn wrong_password_unknown_user_and_filter_injection_answer_the_same() {
    let (_lab, proxy) = start(true, &[]);
    let mut answers = Vec::new();
    for (user, pw) in [
        ("alice", "wrong"),
        ("nobody", "alicepw"),
        ("*)(uid=*", "alicepw"),
        ("*", "alicepw"),
        ("alice)(|(uid=*", "alicepw"),
        ("al*", "alicepw"),
        ("alice\\2a", "alicepw"),
    ] {
        let mut c = ImapClient::connect(proxy.imap_port());
        let (_, tagged) = c.cmd(&format!(
            "LOGIN {} {}",
            support::imap::quote(user),
            support::imap::quote(pw)
        ));
        answers.push((user, tagged_status(&tagged)));
    }
    for (user, answer) in &answers {
        assert_eq!(
            answer, "NO [AUTHENTICATIONFAILED] Authentication failed.",
            "login {user:?}"
        );
    }
    // Nobody was looked up by a widened filter: only the real user reached a store.
    let log = proxy.log();
    assert!(!log.contains("matches 2 directory entries"), "{log}");
    assert!(!log.contains("session start"), "{log}");
}

#[test]
fn starttls_injection_and_oversized_literals_are_refused() {
    let (lab, proxy) = start(true, &[]);
    // The injected NOOP rides in the same packet as STARTTLS; it must never run.
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
f.readline()
s.sendall(b"a STARTTLS\r\nb NOOP\r\n")
print("1:", f.readline().decode().strip())
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
t.sendall(b"c NOOP\r\n")
tf = t.makefile("rb")
print("2:", tf.readline().decode().strip())
"#;
    let (ok, out) = python(
        script,
        &[
            &proxy.imap_port().to_string(),
            &lab.certs.ca_pem.display().to_string(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("1: a OK Begin TLS"), "{out}");
    assert!(out.contains("2: c OK NOOP"), "injected command ran: {out}");

    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN {1000000}");
    assert!(tagged.contains("BAD [TOOBIG]"), "{tagged}");
    c.ok("NOOP"); // the connection is still usable
    c.write_raw(b"x LOGIN {1000000+}\r\n");
    let line = c.read_response();
    assert!(line.contains("BAD [TOOBIG]"), "{line}");
    let bye = c.read_response();
    assert!(bye.starts_with("* BYE"), "{bye}");
    // Garbage bytes get BAD, not a crash.
    let mut g = ImapClient::connect(proxy.imap_port());
    g.write_raw(b"\x00\xff\xfe garbage\r\n");
    assert!(g.read_response().contains("BAD"));
    g.ok("NOOP");
}

#[test]
fn ldap_down_is_unavailable_and_logins_recover() {
    let (mut lab, proxy) = start(true, &[]);
    lab.ldap.stop();
    let started = Instant::now();
    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN bob bobpw");
    assert!(tagged.contains("NO [UNAVAILABLE]"), "{tagged}");
    assert!(started.elapsed() < Duration::from_secs(15));
    lab.ldap.start_again();
    let (_, tagged) = c.cmd("LOGIN bob bobpw");
    assert!(tagged.contains("OK"), "{tagged}\n{}", proxy.log_tail());
}

#[test]
fn store_down_is_unavailable() {
    let (mut lab, proxy) = start(true, &[]);
    lab.old.stop();
    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN alice alicepw");
    assert!(tagged.contains("NO [UNAVAILABLE]"), "{tagged}");
    // The other store's users are not affected.
    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("bob", "bobpw");
}

#[test]
fn unknown_mailhost_is_unavailable_and_logged() {
    let (lab, proxy) = start(true, &[]);
    lab.ldap.set_attr("bob", "mailHost", "nowhere.example.org");
    std::thread::sleep(Duration::from_millis(500));
    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN bob bobpw");
    assert!(tagged.contains("NO [UNAVAILABLE]"), "{tagged}");
    let log = proxy.log();
    assert!(log.contains("nowhere.example.org"), "{log}");
}

#[test]
fn idle_notifies_through_the_proxy() {
    let (lab, proxy) = start(true, &[]);
    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    let tag = c.send("IDLE");
    let cont = c.read_response();
    assert!(cont.starts_with('+'), "{cont}");
    lab.old.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "while-idle", "hi"),
    );
    let exists = next_line_within(&mut c, Duration::from_secs(10)).expect("IDLE update");
    assert_eq!(exists, "* 2 EXISTS");
    c.write_raw(b"DONE\r\n");
    let (_, done) = c.read_until_tagged(&tag);
    assert!(done.contains("OK"), "{done}");
}

/// mbsync pulling alice's mailbox through mailshift gets the same bytes as
/// pulling it straight from the store.
#[test]
fn mbsync_pull_through_the_proxy_is_byte_identical_to_direct() {
    let (lab, proxy) = start(true, &[]);
    for i in 0..20 {
        let body = format!("message {i}\r\n{}", "line of text\r\n".repeat(i * 50));
        lab.old.deliver(
            "alice",
            &message(
                "x@example.net",
                "alice@example.org",
                &format!("m{i}"),
                &body,
            ),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = lab.certs.ca_pem.display().to_string();
    let mut rc = String::new();
    for (name, port, tls) in [
        ("proxy", proxy.imap_port(), "STARTTLS"),
        ("direct", lab.old.imap_port(), "STARTTLS"),
    ] {
        let local = dir.path().join(name);
        std::fs::create_dir_all(&local).expect("mkdir");
        rc.push_str(&format!(
            "IMAPAccount {name}\nHost localhost\nPort {port}\nUser alice\nPass alicepw\n\
             SSLType {tls}\nCertificateFile {ca}\n\n\
             IMAPStore {name}-remote\nAccount {name}\n\n\
             MaildirStore {name}-local\nPath {}/\nInbox {}/INBOX\n\n\
             Channel {name}\nFar :{name}-remote:\nNear :{name}-local:\nPatterns *\n\
             Create Near\nSync Pull\nSyncState *\n\n",
            local.display(),
            local.display()
        ));
    }
    let rc_path = dir.path().join("mbsyncrc");
    std::fs::write(&rc_path, rc).expect("write rc");
    for channel in ["proxy", "direct"] {
        let out = Command::new("mbsync")
            .arg("-c")
            .arg(&rc_path)
            .arg(channel)
            .output()
            .expect("mbsync runs");
        assert!(
            out.status.success(),
            "mbsync {channel}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            proxy.log_tail()
        );
    }
    let contents = |name: &str| {
        let mut all = Vec::new();
        for sub in ["cur", "new"] {
            let d = dir.path().join(name).join("INBOX").join(sub);
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                // mbsync adds a random X-TUID header of its own to each copy.
                let raw = std::fs::read(e.path()).expect("read");
                let text = String::from_utf8_lossy(&raw);
                let kept: String = text
                    .split_inclusive('\n')
                    .filter(|l| !l.starts_with("X-TUID: "))
                    .collect();
                all.push(kept.into_bytes());
            }
        }
        all.sort();
        all
    };
    let (via_proxy, direct) = (contents("proxy"), contents("direct"));
    assert_eq!(via_proxy.len(), 21);
    if via_proxy != direct {
        let first = via_proxy.iter().zip(&direct).find(|(a, b)| a != b);
        if let Some((a, b)) = first {
            panic!(
                "messages differ through the proxy:\n{}\n---- direct ----\n{}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
        panic!(
            "message counts differ: {} vs {}",
            via_proxy.len(),
            direct.len()
        );
    }
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[directory]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nbase_dn = \"dc=x\"\n\
         [backends.old]\nmailhost = [\"a\"]\nimap = \"imapx://h\"\n[imap]\nlisten = \"127.0.0.1:1\"\nkik_on_move = true\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kik_on_move"), "{err}");
    std::fs::write(
        &path,
        "[directory]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nbase_dn = \"dc=x\"\n\
         [backends.old]\nmailhost = [\"a\"]\nimap = \"imapx://h\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backends.old.imap: unsupported scheme \"imapx\""),
        "{err}"
    );
}

/// mailshift checks the password itself (LDAP bind as the user) and logs in to
/// the stores as the master user: SASL PLAIN authzid on one, `user*master` on
/// the other.
#[test]
fn bind_check_with_master_user_logins() {
    let lab = Lab::start(true);
    let text = config(
        &lab,
        &[
            ("password_check = \"backend\"", "password_check = \"bind\""),
            ("[backends.old]\n", "[backends.old]\nlogin = \"master\"\n"),
            (
                "[backends.new]\n",
                "[backends.new]\nlogin = \"master\"\nmaster_separator = \"*\"\n",
            ),
        ],
    );
    let proxy = Mailshift::start(&text);
    assert_eq!(
        subjects_via(proxy.imap_port(), "alice", "alicepw"),
        ["only-on-old"]
    );
    assert_eq!(
        subjects_via(proxy.imap_port(), "bob", "bobpw"),
        ["only-on-new"]
    );
    for (user, pw) in [("alice", "wrong"), ("bob", ""), ("bob", "alicepw")] {
        let mut c = ImapClient::connect(proxy.imap_port());
        let (_, tagged) = c.cmd(&format!(
            "LOGIN {} {}",
            support::imap::quote(user),
            support::imap::quote(pw)
        ));
        assert_eq!(
            tagged_status(&tagged),
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
            "{user}/{pw:?} must fail: the master login would have let it in"
        );
    }
}

#[test]
fn master_login_without_bind_check_is_a_config_error() {
    let lab = Lab::start(false);
    let text = config(
        &lab,
        &[("[backends.old]\n", "[backends.old]\nlogin = \"master\"\n")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        text.replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("backends.old.login"), "{err}");
}

/// The client's ID and its address reach the store (Dovecot convention).
#[test]
fn client_id_and_address_are_forwarded() {
    let (lab, proxy) = start(true, &[]);
    let mut c = ImapClient::connect(proxy.imap_port());
    let lines = c.ok("ID (\"name\" \"forwarding-check\" \"version\" \"1.0\")");
    assert!(lines.iter().any(|l| l.starts_with("* ID")), "{lines:?}");
    c.login("alice", "alicepw");
    c.ok("LOGOUT");
    let log = lab.old.log();
    let id_line = log
        .lines()
        .find(|l| l.contains("forwarding-check"))
        .unwrap_or_else(|| panic!("ID not forwarded:\n{log}"));
    assert!(id_line.contains("x-originating-ip"), "{id_line}");
    assert!(id_line.contains("x-originating-port"), "{id_line}");
}

#[test]
fn untrusted_store_certificate_is_refused() {
    let lab = Lab::start(true);
    let ca_line = format!("ca_file = \"{}\"\n", lab.certs.ca_pem.display());
    // Without the lab CA the old store's certificate verifies against nothing.
    let proxy = Mailshift::start(&config(&lab, &[(&ca_line, "")]));
    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN alice alicepw");
    assert!(tagged.contains("NO [UNAVAILABLE]"), "{tagged}");
    let log = proxy.log();
    assert!(
        log.contains("store unavailable") && log.contains("tls"),
        "{log}"
    );
}

#[test]
fn require_tls_disables_login_until_starttls() {
    let (lab, proxy) = start(true, &[("[imap]\n", "[imap]\nrequire_tls = true\n")]);
    let mut c = ImapClient::connect(proxy.imap_port());
    assert!(c.greeting.contains("LOGINDISABLED"), "{}", c.greeting);
    assert!(!c.greeting.contains("AUTH=PLAIN"), "{}", c.greeting);
    let (_, tagged) = c.cmd("LOGIN alice alicepw");
    assert!(tagged.contains("NO [PRIVACYREQUIRED]"), "{tagged}");
    let script = r#"
import imaplib, ssl, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.starttls(ssl_context=ssl.create_default_context(cafile=sys.argv[2]))
m.login("alice", "alicepw")
print("logged in")
"#;
    let (ok, out) = python(
        script,
        &[
            &proxy.imap_port().to_string(),
            &lab.certs.ca_pem.display().to_string(),
        ],
    );
    assert!(ok && out.contains("logged in"), "{out}");
}

/// Out of file descriptors, new clients are told so instead of hanging; the
/// ceiling counts every front end's sessions together (a POP3 client past it
/// gets POP3's answer, an SMTP sender `421 … 4.3.2`).
#[test]
fn past_the_fd_ceiling_clients_get_bye_not_silence() {
    let lab = Lab::start(true);
    let pop3_port = support::free_port();
    let store_pop3 = |table: &str, port: u16| {
        (
            format!("[backends.{table}]\n"),
            format!("[backends.{table}]\npop3 = \"pop3://127.0.0.1:{port}\"\n"),
        )
    };
    let (old_from, old_to) = store_pop3("old", lab.old.pop3_port());
    let (new_from, new_to) = store_pop3("new", lab.new.pop3_port());
    let mut text = config(&lab, &[(&old_from, &old_to), (&new_from, &new_to)]);
    text.push_str(&format!("\n[pop3]\nlisten = \"127.0.0.1:{pop3_port}\"\n"));
    let queue = tempfile::tempdir().expect("queue dir");
    text.push_str(&format!(
        "\n[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\nqueue_dir = \"{}\"\n",
        queue.path().display()
    ));
    // 200 descriptors: room for (200 - 128) / 2 = 36 client connections.
    let proxy = Mailshift::start_wrapped(&text, &["prlimit", "--nofile=200:200"]);
    let mut held = Vec::new();
    for _ in 0..35 {
        held.push(ImapClient::connect(proxy.imap_port()));
    }
    let mut pop3 = TcpStream::connect(("127.0.0.1", pop3_port)).expect("pop3");
    let mut greeting = [0u8; 64];
    let n = pop3.read(&mut greeting).expect("pop3 greeting");
    assert!(greeting[..n].starts_with(b"+OK"), "{:?}", &greeting[..n]);
    let over = ImapClient::try_connect(proxy.imap_port()).expect("connect");
    assert!(
        over.greeting.starts_with("* BYE Too many connections"),
        "{}",
        over.greeting
    );
    let mut over = TcpStream::connect(("127.0.0.1", pop3_port)).expect("pop3");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    over.read_to_string(&mut answer).expect("pop3 refusal");
    assert!(
        answer.starts_with("-ERR [SYS/TEMP] Too many connections"),
        "{answer}"
    );
    // Inbound SMTP counts in the same ceiling: a sender is told to come back.
    let mut over = TcpStream::connect(("127.0.0.1", proxy.smtp_port())).expect("smtp");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    over.read_to_string(&mut answer).expect("smtp refusal");
    assert!(
        answer.starts_with("421 ") && answer.contains(" 4.3.2 Too many connections"),
        "{answer}"
    );
    drop(pop3);
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let again = ImapClient::connect(proxy.imap_port());
    assert!(again.greeting.starts_with("* OK"), "{}", again.greeting);
    assert!(
        proxy.log().contains("max_connections=36"),
        "{}",
        proxy.log_tail()
    );
}

/// Plain IMAP to the store on both legs with `splice = true` takes the
/// zero-copy relay:
/// a large message arrives byte-identical, IDLE still notifies, a kick still
/// closes the session.
#[test]
fn plain_backend_legs_relay_bytes_exactly() {
    let lab = Lab::start(true);
    let starttls = format!("imap+starttls://127.0.0.1:{}", lab.old.imap_port());
    let plain = format!("imap://127.0.0.1:{}", lab.old.imap_port());
    let proxy = Mailshift::start(&config(
        &lab,
        &[(&starttls, &plain), ("[imap]\n", "[imap]\nsplice = true\n")],
    ));
    let big = message(
        "x@example.net",
        "alice@example.org",
        "big",
        &"0123456789abcdef".repeat(400_000),
    );
    lab.old.deliver("alice", &big);
    let fetch = |port: u16| {
        let mut c = ImapClient::connect(port);
        c.login("alice", "alicepw");
        c.ok("SELECT INBOX");
        let lines = c.ok("FETCH 2 BODY.PEEK[]");
        c.ok("LOGOUT");
        lines
            .into_iter()
            .find(|l| l.contains("FETCH"))
            .expect("fetched")
    };
    let (via, direct) = (fetch(proxy.imap_port()), fetch(lab.old.imap_port()));
    assert!(via.len() > 6_000_000, "{}", via.len());
    assert!(via == direct, "bytes differ through the spliced relay");

    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    let tag = c.send("IDLE");
    assert!(c.read_response().starts_with('+'));
    lab.old.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "ping", "hi"),
    );
    let exists = next_line_within(&mut c, Duration::from_secs(10)).expect("IDLE update");
    assert_eq!(exists, "* 3 EXISTS");
    c.write_raw(b"DONE\r\n");
    let (_, done) = c.read_until_tagged(&tag);
    assert!(done.contains("OK"), "{done}");
    let kick = "POST /api/v1/users/alice/kick HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                Content-Length: 0\r\nAuthorization: Bearer labtoken\r\n\r\n";
    assert!(http(proxy.admin_port(), kick).contains("\"kicked\":1"));
    let bye = next_line_within(&mut c, Duration::from_secs(5)).expect("BYE");
    assert!(bye.starts_with("* BYE"), "{bye}");
    std::thread::sleep(Duration::from_millis(200));
    let log = proxy.log();
    let end = log
        .lines()
        .rev()
        .find(|l| l.contains("session end") && l.contains("end=\"kicked\""))
        .unwrap_or_else(|| panic!("{log}"));
    // Bytes are still counted on the spliced path.
    assert!(!end.contains("to_client=0 "), "{end}");
}

/// SIGHUP re-reads the certificate: new TLS handshakes present the new one,
/// without a restart.
#[test]
fn sighup_reloads_the_certificate() {
    let lab = Lab::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&lab.certs.cert_pem, &cert).expect("copy cert");
    std::fs::copy(&lab.certs.key_pem, &key).expect("copy key");
    let text = config(&lab, &[])
        .replace(
            &lab.certs.cert_pem.display().to_string(),
            &cert.display().to_string(),
        )
        .replace(
            &lab.certs.key_pem.display().to_string(),
            &key.display().to_string(),
        );
    let proxy = Mailshift::start(&text);
    let presented = || {
        let (ok, out) = python(
            "import ssl, sys; print(ssl.get_server_certificate(('127.0.0.1', int(sys.argv[1]))))",
            &[&proxy.imaps_port().to_string()],
        );
        assert!(ok, "{out}");
        out
    };
    let before = presented();
    let (new_cert, new_key) = (dir.path().join("new.pem"), dir.path().join("new.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=reloaded.example.org", "-keyout"])
        .arg(&new_key)
        .arg("-out")
        .arg(&new_cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::copy(&new_cert, &cert).expect("replace cert");
    std::fs::copy(&new_key, &key).expect("replace key");
    let pid = std::fs::read_to_string(proxy.dir().join("mailshift.pid.supervise")).expect("pid");
    let hup = Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .expect("kill");
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));
    let after = presented();
    assert_ne!(before, after, "the old certificate is still presented");
    assert_eq!(
        after.trim(),
        std::fs::read_to_string(&new_cert).expect("read").trim()
    );
    assert!(
        proxy.log().contains("certificate reloaded"),
        "{}",
        proxy.log_tail()
    );
    // Sessions keep working after the reload.
    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("bob", "bobpw");
}
