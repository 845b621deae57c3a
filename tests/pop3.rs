//! The POP3 front end end to end: real slapd, two real Dovecot stores with
//! their POP3, the real mailshift binary, and clients nobody here wrote
//! (Python poplib, fetchmail).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, message, Lab, Mailshift};

/// What a test's mailshift serves on POP3, besides the lab's IMAP.
struct Pop3Ports {
    plain: u16,
    tls: u16,
}

/// The lab config with each store's POP3 (old over STLS, new over pop3s),
/// `[pop3]` on free ports and fast failure delays. `edits` replace text.
fn config(lab: &Lab, extra: &str, edits: &[(&str, String)]) -> (String, Pop3Ports) {
    let ports = Pop3Ports {
        plain: free_port(),
        tls: free_port(),
    };
    let mut text = lab.mailshift_config(extra);
    let mut all: Vec<(&str, String)> = vec![
        (
            "[backends.old]\n",
            format!(
                "[backends.old]\npop3 = \"pop3+starttls://127.0.0.1:{}\"\n",
                lab.old.pop3_port()
            ),
        ),
        (
            "[backends.new]\n",
            format!(
                "[backends.new]\npop3 = \"pop3s://127.0.0.1:{}\"\n",
                lab.new.pop3s_port()
            ),
        ),
        (
            "[imap]\n",
            "[imap]\nauth_failure_delay = \"50ms\"\nauth_failure_delay_max = \"200ms\"\n".into(),
        ),
    ];
    all.extend(edits.iter().cloned());
    for (from, to) in all {
        assert!(text.contains(from), "config lacks {from:?}");
        text = text.replacen(from, &to, 1);
    }
    text.push_str(&format!(
        "\n[pop3]\nlisten = \"127.0.0.1:{}\"\nlisten_tls = \"127.0.0.1:{}\"\n",
        ports.plain, ports.tls
    ));
    (text, ports)
}

/// Waits until mailshift's POP3 listener accepts (it binds after IMAP).
fn wait_pop3(proxy: &Mailshift, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !support::port_open(port) {
        assert!(
            Instant::now() < deadline,
            "POP3 listener never came up:\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A poplib session: `mode` plain | stls | ssl, `auth` user | plain; prints
/// one line per fact so tests can assert on it.
const POPLIB: &str = r#"
import base64, poplib, ssl, sys
mode, port, user, pw, auth, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=ca)
if mode == "ssl":
    p = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=30)
else:
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    if mode == "stls":
        p.stls(context=ctx)
try:
    if auth == "plain":
        msg = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        print("AUTH", p._shortcmd("AUTH PLAIN " + msg).decode())
    else:
        p.user(user)
        print("AUTH", p.pass_(pw).decode())
except poplib.error_proto as e:
    print("REFUSED", e.args[0].decode())
    sys.exit(0)
count, size = p.stat()
print("STAT", count)
for line in p.uidl()[1]:
    print("UIDL", line.decode())
for i in range(1, count + 1):
    for l in p.top(i, 0)[1]:
        if l.lower().startswith(b"subject:"):
            print("SUBJECT", l.decode().split(":", 1)[1].strip())
p.quit()
"#;

struct Session {
    out: String,
}

impl Session {
    fn values(&self, key: &str) -> Vec<String> {
        self.out
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key} ")))
            .map(str::to_string)
            .collect()
    }
}

fn poplib(lab: &Lab, mode: &str, port: u16, user: &str, pw: &str, auth: &str) -> Session {
    let out = Command::new("python3")
        .arg("-c")
        .arg(POPLIB)
        .args([mode, &port.to_string(), user, pw, auth])
        .arg(&lab.certs.ca_pem)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "poplib failed:\n{text}");
    Session { out: text }
}

#[test]
fn each_user_reads_their_own_store_over_pop3() {
    let lab = Lab::start(true);
    let (text, ports) = config(&lab, "", &[]);
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);

    // alice (old, reached over STLS) with USER/PASS in the clear.
    let s = poplib(&lab, "plain", ports.plain, "alice", "alicepw", "user");
    assert_eq!(s.values("SUBJECT"), ["only-on-old"], "{}", s.out);
    // bob (new, reached over pop3s) with AUTH PLAIN after STLS.
    let s = poplib(&lab, "stls", ports.plain, "bob", "bobpw", "plain");
    assert_eq!(s.values("SUBJECT"), ["only-on-new"], "{}", s.out);
    // Both over implicit TLS (995).
    let s = poplib(&lab, "ssl", ports.tls, "alice", "alicepw", "plain");
    assert_eq!(s.values("SUBJECT"), ["only-on-old"], "{}", s.out);
    let s = poplib(&lab, "ssl", ports.tls, "bob", "bobpw", "user");
    assert_eq!(s.values("SUBJECT"), ["only-on-new"], "{}", s.out);

    // Through mailshift the UIDLs are the store's own (nobody moved).
    let direct = Command::new("python3")
        .arg("-c")
        .arg(POPLIB)
        .args([
            "stls",
            &lab.old.pop3_port().to_string(),
            "alice",
            "alicepw",
            "user",
        ])
        .arg(&lab.certs.ca_pem)
        .output()
        .expect("python3");
    let direct = Session {
        out: String::from_utf8_lossy(&direct.stdout).into_owned(),
    };
    let via = poplib(&lab, "plain", ports.plain, "alice", "alicepw", "user");
    assert_eq!(via.values("UIDL"), direct.values("UIDL"));

    // Log lines carry user, client and backend, never the password.
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("POP3 session start") && l.contains("user=bob"))
        .unwrap_or_else(|| panic!("no session line:\n{log}"));
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    assert!(line.contains("backend=new"), "{line}");
    assert!(!log.contains("alicepw") && !log.contains("bobpw"), "{log}");

    // Metrics.
    let metrics = http_get(proxy.admin_port(), "/metrics");
    assert!(
        metrics.contains("mailshift_pop3_logins_total{result=\"ok\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailshift_pop3_connections_total{listener=\"tls\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "mailshift_pop3_relayed_bytes_total{backend=\"new\",direction=\"to_client\"}"
        ),
        "{metrics}"
    );

    // The store is told who the client is (XCLIENT, sent with the login in
    // one write): a client from 127.0.0.9 is 127.0.0.9 in the new store's log.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut c = support::haproxy::connect_from("127.0.0.9", ports.plain);
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut r = BufReader::new(c.try_clone().expect("clone"));
        let mut line = String::new();
        for cmd in ["", "USER bob\r\n", "PASS bobpw\r\n", "STAT\r\n", "QUIT\r\n"] {
            c.write_all(cmd.as_bytes()).expect("write");
            line.clear();
            r.read_line(&mut line).expect("read");
            assert!(line.starts_with("+OK"), "{cmd:?}: {line}");
        }
    }
    let until = Instant::now() + Duration::from_secs(20);
    while !lab
        .new
        .log()
        .lines()
        .any(|l| l.contains("pop3-login: Info: Login: user=<bob>") && l.contains("rip=127.0.0.9,"))
    {
        assert!(
            Instant::now() < until,
            "the store never logged the client's address:\n{}",
            lab.new.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn wrong_password_is_auth_and_a_store_down_is_sys_temp() {
    let lab = Lab::start(false);
    // bob's store's POP3 is a port nobody listens on.
    let dead = free_port();
    let (text, ports) = config(&lab, "", &[]);
    let text = text.replace(
        &format!("pop3s://127.0.0.1:{}", lab.new.pop3s_port()),
        &format!("pop3://127.0.0.1:{dead}"),
    );
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);

    let s = poplib(&lab, "plain", ports.plain, "alice", "wrong", "user");
    let refused = s.values("REFUSED");
    assert_eq!(refused, ["-ERR [AUTH] Authentication failed."], "{}", s.out);
    let s = poplib(&lab, "plain", ports.plain, "bob", "bobpw", "plain");
    let refused = s.values("REFUSED");
    assert_eq!(refused.len(), 1, "{}", s.out);
    assert!(refused[0].starts_with("-ERR [SYS/TEMP] "), "{}", s.out);
    // An unknown user looks like a wrong password.
    let s = poplib(&lab, "plain", ports.plain, "nobody", "x", "user");
    assert_eq!(s.values("REFUSED"), ["-ERR [AUTH] Authentication failed."]);
    assert!(
        proxy.log().contains("POP3 login failed"),
        "{}",
        proxy.log_tail()
    );
}

/// Raw bytes in, what came back (until close or the timeout).
fn raw(port: u16, script: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may close before reading it all (an oversized line).
    let _ = s.write_all(script);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// STLS with plaintext pipelined behind it: what the server answers after
/// the handshake, to a `PASS` sent over TLS.
const STLS_INJECTION: &str = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=30)
f = s.makefile("rb")
f.readline()
s.sendall(b"STLS\r\nUSER alice\r\n")
print("STLS", f.readline().decode().strip())
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(b"PASS alicepw\r\n")
print("AFTER", t.makefile("rb").readline().decode().strip())
"#;

#[test]
fn bad_input_gets_clear_errors_and_nothing_crashes() {
    let lab = Lab::start(false);
    let (text, ports) = config(&lab, "", &[]);
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);

    // An oversized line.
    let mut big = b"USER ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100_000));
    big.extend_from_slice(b"\r\n");
    let out = raw(ports.plain, &big);
    assert!(out.contains("-ERR Line too long."), "{out}");

    // LDAP filter metacharacters in the login: refused like any stranger.
    let out = raw(ports.plain, b"USER *)(uid=*\r\nPASS alicepw\r\nQUIT\r\n");
    assert!(out.contains("-ERR [AUTH] Authentication failed."), "{out}");
    let s = poplib(&lab, "plain", ports.plain, "*", "alicepw", "plain");
    assert!(
        s.values("REFUSED")[0].starts_with("-ERR [AUTH]"),
        "{}",
        s.out
    );

    // Plaintext injected after STLS is discarded: the USER never counted.
    let out = Command::new("python3")
        .arg("-c")
        .arg(STLS_INJECTION)
        .arg(ports.plain.to_string())
        .arg(&lab.certs.ca_pem)
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("STLS +OK"), "{out}");
    assert!(out.contains("AFTER -ERR No username given."), "{out}");

    // Garbage and binary: answered, never a crash.
    let out = raw(
        ports.plain,
        b"\x00\xff\r\nAUTH PLAIN !!!\r\nAUTH\r\nRETR 1\r\nQUIT\r\n",
    );
    assert!(out.contains("-ERR Unknown command."), "{out}");
    assert!(
        out.contains("-ERR [AUTH] Authentication failed: invalid base64."),
        "{out}"
    );
    assert!(out.contains("+OK Logging out."), "{out}");

    // Still serving.
    let s = poplib(&lab, "plain", ports.plain, "alice", "alicepw", "user");
    assert_eq!(s.values("SUBJECT"), ["only-on-old"]);
    drop(proxy);

    // With require_tls, credentials before STLS are refused.
    let (text, ports) = config(&lab, "", &[]);
    let text = text.replace("[pop3]\n", "[pop3]\nrequire_tls = true\n");
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);
    let out = raw(
        ports.plain,
        b"CAPA\r\nUSER alice\r\nAUTH PLAIN AGFsaWNlAGFsaWNlcHc=\r\nQUIT\r\n",
    );
    assert!(out.contains("STLS\r\n"), "{out}");
    assert!(!out.contains("SASL"), "{out}");
    assert_eq!(
        out.matches("-ERR [AUTH] Plaintext authentication disallowed")
            .count(),
        2,
        "{out}"
    );
    // Over TLS it works.
    let s = poplib(&lab, "stls", ports.plain, "alice", "alicepw", "user");
    assert_eq!(s.values("SUBJECT"), ["only-on-old"], "{}", s.out);
}

/// fetchmail with `keep` and `uidl`: what it delivered so far, by subject.
struct Fetchmail {
    dir: PathBuf,
    rc: PathBuf,
}

impl Fetchmail {
    fn new(dir: &Path, port: u16) -> Fetchmail {
        let out = dir.join("delivered");
        std::fs::create_dir_all(&out).expect("mkdir");
        let mda = dir.join("mda.sh");
        std::fs::write(
            &mda,
            format!(
                "#!/bin/sh\nf=$(mktemp {}/m.XXXXXX)\ncat > \"$f\"\n",
                out.display()
            ),
        )
        .expect("write mda");
        support::set_mode(&mda, 0o755);
        let rc = dir.join("fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "set no syslog\npoll 127.0.0.1 port {port} proto pop3 uidl\n  user \"alice\" password \"alicepw\" is \"alice\" here\n  keep sslproto '' mda \"{}\"\n",
                mda.display()
            ),
        )
        .expect("write rc");
        support::set_mode(&rc, 0o600);
        Fetchmail {
            dir: dir.to_path_buf(),
            rc,
        }
    }

    /// One run; returns the subjects delivered by it.
    fn run(&self) -> Vec<String> {
        let before = self.delivered();
        let out: Output = Command::new("fetchmail")
            .arg("-f")
            .arg(&self.rc)
            .arg("--idfile")
            .arg(self.dir.join("ids"))
            .arg("--pidfile")
            .arg(self.dir.join("pid"))
            .arg("-v")
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("fetchmail runs (apt-get install fetchmail)");
        // 0: mail fetched; 1: no new mail. Anything else is a failure.
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "fetchmail {code:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let after = self.delivered();
        after
            .into_iter()
            .filter(|(f, _)| !before.iter().any(|(b, _)| b == f))
            .map(|(_, s)| s)
            .collect()
    }

    fn delivered(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.join("delivered")).expect("read dir") {
            let path = e.expect("entry").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            out.push((path, subject));
        }
        out
    }
}

#[test]
fn fetchmail_downloads_nothing_again_after_the_cutover() {
    // The old store's UIDLs computed from the configured format: no POP3
    // reads during the migration.
    let computed = (
        "[backends.old]\n",
        "[backends.old]\npop3_uidl_format = \"%08Xu%08Xv\"\n".to_string(),
    );
    let (before, migrated) = fetchmail_across_the_cutover(Lab::start(true), &[computed]);
    assert!(before.iter().all(|u| u.len() == 16), "{before:?}");
    assert!(!migrated.contains("POP3 UIDLs"), "{migrated}");
}

/// An old store whose UIDLs no format computes (Dovecot's `%f`, the Maildir
/// file name, as Courier's are): the passes read them over its POP3.
#[test]
fn uidls_the_old_store_makes_up_are_read_over_its_pop3_and_kept() {
    let lab = Lab::start_with_old_conf(true, "protocol pop3 {\n  pop3_uidl_format = %f\n}\n");
    let (before, migrated) = fetchmail_across_the_cutover(lab, &[]);
    // Maildir file names (`1733.M12P3.host,S=462`), nothing a UID gives.
    assert!(
        before.iter().all(|u| u.contains('.') && u.len() > 16),
        "{before:?}"
    );
    assert!(migrated.contains("POP3 UIDLs: 5 of 5 kept"), "{migrated}");
}

/// Migrates alice with fetchmail (`keep`, `uidl`) polling through
/// mailshift before and after, and checks that nothing downloads twice and
/// the UIDL list stays; returns the old store's UIDLs and what
/// `migrate --cutover` said.
fn fetchmail_across_the_cutover(lab: Lab, edits: &[(&str, String)]) -> (Vec<String>, String) {
    for i in 1..=4 {
        lab.old.deliver(
            "alice",
            &message(
                "carol@example.net",
                "alice@example.org",
                &format!("old-{i}"),
                "hi",
            ),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"20s\"\ninstance_id = \"test-cli\"\n",
        dir.path().join("state").display(),
    );
    let (text, ports) = config(&lab, &migration, edits);
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);
    let cli_config = dir.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        text.replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3"),
    )
    .expect("write");

    let fetch = Fetchmail::new(dir.path(), ports.plain);
    let mut first = fetch.run();
    first.sort();
    assert_eq!(first, ["old-1", "old-2", "old-3", "old-4", "only-on-old"]);
    assert!(
        fetch.run().is_empty(),
        "fetchmail fetched again before the move"
    );
    let before = poplib(&lab, "plain", ports.plain, "alice", "alicepw", "user").values("UIDL");
    assert_eq!(before.len(), 5);

    // Dovecot's UIDVALIDITY is the creation second: a new INBOX made in the
    // old one's second would get the same UIDLs by chance, and the test
    // would not show that mailshift kept them.
    std::thread::sleep(Duration::from_millis(1100));
    let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["migrate", "--user", "alice", "--cutover", "--config"])
        .arg(&cli_config)
        .stdin(Stdio::null())
        .output()
        .expect("mailshift migrate runs");
    let migrated = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "migrate --cutover:\n{migrated}");
    // Mail that arrives after the move lands on the new store.
    lab.new.deliver(
        "alice",
        &message("carol@example.net", "alice@example.org", "after-move", "hi"),
    );

    // Wait until mailshift routes alice to the new store (syncprov).
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let s = poplib(&lab, "plain", ports.plain, "alice", "alicepw", "user");
        let log = proxy.log();
        let last = log
            .lines()
            .rfind(|l| l.contains("POP3 session start") && l.contains("user=alice"))
            .unwrap_or("")
            .to_string();
        if last.contains("backend=new") {
            assert!(last.contains("uidls_kept=5"), "{last}");
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "alice still on old:\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let after_uidls = after.values("UIDL");
    assert_eq!(after_uidls.len(), 6, "{}", after.out);
    // Same message numbers, same UIDLs for every migrated message.
    assert_eq!(after_uidls[..5], before[..], "{}", after.out);
    // The new message's UIDL is none of the old ones.
    let new_uidl = after_uidls[5].split_once(' ').map(|(_, u)| u).unwrap_or("");
    assert!(
        !before.iter().any(|b| b.ends_with(&format!(" {new_uidl}"))),
        "{new_uidl} collides with {before:?}"
    );
    // The store's own UIDLs differ (new UIDVALIDITY): without mailshift the
    // client would download everything again.
    let direct = Command::new("python3")
        .arg("-c")
        .arg(POPLIB)
        .args([
            "ssl",
            &lab.new.pop3s_port().to_string(),
            "alice",
            "alicepw",
            "user",
        ])
        .arg(&lab.certs.ca_pem)
        .output()
        .expect("python3");
    let direct = Session {
        out: String::from_utf8_lossy(&direct.stdout).into_owned(),
    };
    assert_ne!(direct.values("UIDL")[..5], before[..], "{}", direct.out);

    assert_eq!(fetch.run(), ["after-move"]);
    assert!(fetch.run().is_empty(), "fetchmail fetched again");

    // A second instance that never saw the migration (its own, empty
    // state_dir) reads the UID maps from the mailbox and answers the same.
    let other = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\ninstance_id = \"second\"\n",
        other.path().join("state").display(),
    );
    let (text, ports2) = config(&lab, &migration, edits);
    let second = Mailshift::start(&text);
    wait_pop3(&second, ports2.plain);
    let again = poplib(&lab, "plain", ports2.plain, "alice", "alicepw", "user");
    assert_eq!(again.values("UIDL"), after_uidls, "{}", again.out);
    let log = second.log();
    assert!(
        log.lines().any(|l| l.contains("POP3 session start")
            && l.contains("backend=new")
            && l.contains("uidls_kept=5")),
        "{log}"
    );
    let uidls = before
        .iter()
        .map(|l| l.split_once(' ').map_or("", |(_, u)| u).to_string())
        .collect();
    (uidls, migrated)
}

/// A POP3 connection held open by the test.
struct Held {
    r: std::io::BufReader<std::net::TcpStream>,
    w: std::net::TcpStream,
}

impl Held {
    fn open(port: u16) -> Held {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut h = Held {
            w: s.try_clone().expect("clone"),
            r: std::io::BufReader::new(s),
        };
        assert!(h.line().starts_with("+OK"));
        h
    }
    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut l = String::new();
        let _ = self.r.read_line(&mut l);
        l
    }
    fn cmd(&mut self, c: &str) -> String {
        use std::io::Write;
        self.w
            .write_all(format!("{c}\r\n").as_bytes())
            .expect("write");
        self.line()
    }
}

#[test]
fn kicked_and_shut_down_sessions_get_sys_temp_and_close() {
    let lab = Lab::start(false);
    let (text, ports) = config(&lab, "", &[]);
    let mut proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);

    // A logged-in session, kicked by the admin API.
    let mut bob = Held::open(ports.plain);
    assert_eq!(bob.cmd("USER bob"), "+OK\r\n");
    assert_eq!(bob.cmd("PASS bobpw"), "+OK Logged in.\r\n");
    assert!(bob.cmd("STAT").starts_with("+OK 1 "));
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.admin_port())).expect("admin");
        write!(
            s,
            "POST /api/v1/users/bob/kick HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer labtoken\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.contains("\"kicked\":1"), "{out}");
    }
    assert_eq!(
        bob.line(),
        "-ERR [SYS/TEMP] Your mailbox moved; please reconnect.\r\n"
    );
    assert_eq!(bob.line(), "", "connection not closed");

    // At shutdown, a client before login and one logged in are told so.
    let mut waiting = Held::open(ports.plain);
    let mut alice = Held::open(ports.plain);
    assert_eq!(
        alice.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlcHc="),
        "+OK Logged in.\r\n"
    );
    proxy.stop();
    let shutting = "-ERR [SYS/TEMP] Server shutting down, reconnect shortly.\r\n";
    assert_eq!(waiting.line(), shutting);
    assert_eq!(alice.line(), shutting);
}

#[test]
fn held_past_the_wait_and_directory_down_are_sys_temp() {
    let mut lab = Lab::start(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"300ms\"\ninstance_id = \"t\"\n",
        dir.path().join("state").display(),
    );
    // No cache: the hold and the outage are seen at the next login (the
    // scheduler's scan at start may have cached both users).
    let (text, ports) = config(
        &lab,
        &migration,
        &[("cache_ttl = \"10m\"", "cache_ttl = \"1ms\"".into())],
    );
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);

    // Another instance's cutover, alive (its lease runs for an hour), so
    // this instance's scheduler leaves the hold alone.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    lab.ldap.set_attr(
        "alice",
        "mailshiftMigrationLease",
        &format!("other {until}"),
    );
    lab.ldap.set_attr("alice", "mailUserStatus", "hold");
    let s = poplib(&lab, "plain", ports.plain, "alice", "alicepw", "user");
    assert_eq!(
        s.values("REFUSED"),
        ["-ERR [SYS/TEMP] Mailbox is being moved, try again in a minute."],
        "{}\n{}\n{}",
        s.out,
        lab.ldap.search(
            "(uid=alice)",
            &["mailUserStatus", "mailshiftMigrationLease"]
        ),
        proxy.log_tail()
    );

    lab.ldap.stop();
    let s = poplib(&lab, "plain", ports.plain, "bob", "bobpw", "plain");
    let refused = s.values("REFUSED");
    assert_eq!(
        refused,
        ["-ERR [SYS/TEMP] Directory temporarily unavailable, try again."],
        "{}",
        s.out
    );
    lab.ldap.start_again();
}

/// `[pop3] splice = true` with plain POP3 on both legs: a 6 MB message
/// arrives through the spliced relay byte for byte as the store sends it
/// directly, and the session still ends cleanly at QUIT.
#[test]
fn spliced_relay_moves_a_large_message_exactly() {
    let lab = Lab::start(true);
    let plain_old = format!("pop3://127.0.0.1:{}", lab.old.pop3_port());
    let (mut text, ports) = config(
        &lab,
        "",
        &[("pop3+starttls://127.0.0.1", "pop3://127.0.0.1".to_string())],
    );
    assert!(text.contains(&plain_old), "{text}");
    text.push_str("splice = true\n");
    let proxy = Mailshift::start(&text);
    wait_pop3(&proxy, ports.plain);
    lab.old.deliver(
        "alice",
        &message(
            "x@example.net",
            "alice@example.org",
            "big",
            &format!("{}\r\n", "0123456789abcdef".repeat(6)).repeat(60_000),
        ),
    );
    const RETR_ALL: &str = r#"
import hashlib, poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=60)
p.user("alice"); p.pass_("alicepw")
count, _ = p.stat()
for i in range(1, count + 1):
    lines = p.retr(i)[1]
    print("MSG", i, sum(len(l) + 2 for l in lines), hashlib.sha256(b"\r\n".join(lines)).hexdigest())
print("QUIT", p.quit().decode())
"#;
    let retr = |port: u16| {
        let out = Command::new("python3")
            .args(["-c", RETR_ALL, &port.to_string()])
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let (via, direct) = (retr(ports.plain), retr(lab.old.pop3_port()));
    assert!(
        via.lines()
            .any(|l| l.starts_with("MSG") && l.split(' ').nth(2).is_some_and(|n| n.len() >= 7)),
        "{via}"
    );
    assert!(via.contains("QUIT +OK"), "{via}");
    let msgs = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("MSG"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(msgs(&via), msgs(&direct));
    let log = proxy.log();
    assert!(
        log.contains("POP3 session end") && log.contains("user=alice"),
        "{}",
        proxy.log_tail()
    );
}
