//! PROXY protocol behind a real HAProxy (Debian `haproxy`): a client from
//! 127.0.0.7 reaches mailshift through the load balancer, and mailshift, its
//! failure delays, its admin API and the store (Dovecot, by ID
//! x-originating-ip; over LMTP by XCLIENT) all see 127.0.0.7, not the
//! balancer. A header from outside `trusted_proxies` is refused, and so is a
//! trusted connection without one.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::haproxy::{connect_from, Frontend, Haproxy};
use support::{ImapClient, Lab, Mailshift};

/// The lab config with `trusted_proxies` and `proxy_protocol` on `[imap]`
/// (and on `[smtp]` when `smtp` is given, as the whole table's text).
fn config(lab: &Lab, trusted: &str, smtp: &str) -> String {
    let text =
        lab.mailshift_config(smtp)
            .replacen("[imap]\n", "[imap]\nproxy_protocol = true\n", 1);
    format!("trusted_proxies = [{trusted}]\n{text}")
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Waits until `f` holds; the deadline only bounds a failing test.
fn eventually(what: &str, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "{what} did not happen\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything the server sends before it closes (the test fails on a hang).
fn read_all(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("connection neither answered nor closed: {e} (got {out:?})"),
    }
}

fn lines_with<'a>(log: &'a str, all: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| all.iter().all(|w| l.contains(w)))
        .collect()
}

#[test]
fn behind_haproxy_v2_and_v1_the_client_address_is_what_mailshift_and_the_store_see() {
    let lab = Lab::start(false);
    let proxy = Mailshift::start(&config(&lab, "\"127.0.0.1/32\", \"::1/128\"", ""));
    let hap = Haproxy::start(&[
        Frontend {
            send: "send-proxy-v2",
            target: proxy.imap_port(),
            source: None,
        },
        Frontend {
            send: "send-proxy",
            target: proxy.imap_port(),
            source: None,
        },
    ]);

    // v2, from 127.0.0.7: a wrong password first, then the right one.
    let mut c = ImapClient::try_from_stream(connect_from("127.0.0.7", hap.ports[0]))
        .unwrap_or_else(|e| panic!("no greeting through HAProxy: {e}\n{}", proxy.log_tail()));
    assert!(c.greeting.starts_with("* OK"), "{}", c.greeting);
    let (_, tagged) = c.cmd("LOGIN alice wrong");
    assert!(tagged.contains("NO [AUTHENTICATIONFAILED]"), "{tagged}");
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    assert_eq!(c.subjects(), vec!["only-on-old".to_string()]);
    // While it is open, the admin API lists the session with the client's address.
    let api = http_get(proxy.admin_port(), "/api/v1/users/alice");
    assert!(
        api.contains("\"backend\":\"old\"") && api.contains("\"client\":\"127.0.0.7:"),
        "{api}"
    );
    c.ok("LOGOUT");

    // v1 (send-proxy), from 127.0.0.8.
    let mut c = ImapClient::try_from_stream(connect_from("127.0.0.8", hap.ports[1]))
        .unwrap_or_else(|e| panic!("no greeting through HAProxy v1: {e}\n{}", proxy.log_tail()));
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    c.ok("LOGOUT");

    let log = proxy.log();
    let failed = lines_with(&log, &["login failed", "user=alice"]);
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("client=127.0.0.7:") && failed[0].contains("delay_ms="),
        "the failure delay is about the client: {}",
        failed[0]
    );
    for ip in ["127.0.0.7", "127.0.0.8"] {
        assert_eq!(
            lines_with(
                &log,
                &["session start", "user=alice", &format!("client={ip}:")]
            )
            .len(),
            1,
            "{ip}:\n{log}"
        );
    }
    assert!(
        lines_with(&log, &["session start", "client=127.0.0.1:"]).is_empty(),
        "a session logged with the balancer's address:\n{log}"
    );

    // The store was told too (Dovecot takes x-originating-ip from a trusted
    // network and logs it as rip).
    for ip in ["127.0.0.7", "127.0.0.8"] {
        eventually(
            &format!("Dovecot logging rip={ip}"),
            || {
                lab.old
                    .log()
                    .lines()
                    .any(|l| l.contains("Login: user=<alice>") && l.contains(&format!("rip={ip},")))
            },
            || lab.old.log(),
        );
    }
}

#[test]
fn a_proxy_header_from_outside_trusted_proxies_is_refused_and_so_is_none() {
    let lab = Lab::start(false);
    let proxy = Mailshift::start(&config(&lab, "\"127.0.0.1/32\"", ""));
    // HAProxy itself connecting from 127.0.0.9, outside trusted_proxies.
    let hap = Haproxy::start(&[Frontend {
        send: "send-proxy-v2",
        target: proxy.imap_port(),
        source: Some("127.0.0.9"),
    }]);
    let got = read_all(connect_from("127.0.0.7", hap.ports[0]));
    assert!(
        got.is_empty(),
        "untrusted balancer's client was answered: {got:?}"
    );
    // A forged v1 header sent straight from 127.0.0.10.
    let mut s = connect_from("127.0.0.10", proxy.imap_port());
    s.write_all(b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 143\r\na LOGIN alice alicepw\r\n")
        .expect("write");
    assert!(read_all(s).is_empty());
    // A trusted address without a header: no greeting either.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.imap_port())).expect("connect");
    s.write_all(b"a LOGIN alice alicepw\r\n").expect("write");
    assert!(read_all(s).is_empty());

    eventually(
        "the refusals logged",
        || {
            let log = proxy.log();
            log.contains("127.0.0.9 is not in trusted_proxies")
                && log.contains("127.0.0.10 is not in trusted_proxies")
                && log.contains("no valid PROXY header")
        },
        || proxy.log(),
    );
    let log = proxy.log();
    assert!(!log.contains("203.0.113.5"), "{log}");
    assert!(!log.contains("session start"), "{log}");
    assert!(
        !lab.old.log().contains("user=<alice>"),
        "nobody may log in: {}",
        lab.old.log()
    );
}

/// `user`'s messages on a store whose Subject contains `subject`, whole.
fn stored(port: u16, user: &str, subject: &str) -> Vec<String> {
    let mut c = ImapClient::connect(port);
    c.login(user, &format!("{user}pw"));
    c.ok("SELECT INBOX");
    let found = c.ok(&format!("SEARCH SUBJECT {}", support::imap::quote(subject)));
    let ids: Vec<String> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    ids.iter()
        .map(|id| c.ok(&format!("FETCH {id} BODY.PEEK[HEADER]")).join("\n"))
        .collect()
}

#[test]
fn smtp_behind_haproxy_the_trace_header_and_the_store_name_the_client() {
    let lab = Lab::start(false);
    let queue = tempfile::tempdir().expect("queue dir");
    let smtp = format!(
        "[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\n\
         hostname = \"mx.mailshift.test\"\nqueue_dir = \"{}\"\nproxy_protocol = true\n",
        queue.path().display()
    );
    let proxy = Mailshift::start(&config(&lab, "\"127.0.0.1/32\"", &smtp));
    let hap = Haproxy::start(&[Frontend {
        send: "send-proxy-v2",
        target: proxy.smtp_port(),
        source: None,
    }]);
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", hap.ports[0])])
        .args(["--local-interface", "127.0.0.7", "--timeout", "30"])
        .args(["--from", "sender@example.net", "--to", "alice@example.org"])
        .args(["--header", "Subject: via-haproxy"])
        .output()
        .expect("swaks (deploy/lab/install-deps.sh installs it)");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}\n{}", proxy.log_tail());

    let headers = stored(lab.old.imap_port(), "alice", "via-haproxy");
    assert_eq!(headers.len(), 1, "{headers:?}");
    let received: Vec<&str> = headers[0]
        .split("\r\n")
        .filter(|l| l.starts_with("Received:"))
        .collect();
    // Dovecot's own trace line (it learned the address by XCLIENT) and
    // mailshift's both name the client, neither the balancer.
    assert!(
        received
            .iter()
            .filter(|l| l.contains("[127.0.0.7]"))
            .count()
            >= 2,
        "{}",
        headers[0]
    );
    assert!(!headers[0].contains("[127.0.0.1]"), "{}", headers[0]);
}

/// The lab config with POP3 on both stores and a `[pop3]` listener that
/// expects a PROXY header; returns it and the listener's port.
fn pop3_config(lab: &Lab, trusted: &str) -> (String, u16) {
    let port = support::free_port();
    let text = config(lab, trusted, "")
        .replacen(
            "[backends.old]\n",
            &format!(
                "[backends.old]\npop3 = \"pop3://127.0.0.1:{}\"\n",
                lab.old.pop3_port()
            ),
            1,
        )
        .replacen(
            "[backends.new]\n",
            &format!(
                "[backends.new]\npop3 = \"pop3://127.0.0.1:{}\"\n",
                lab.new.pop3_port()
            ),
            1,
        );
    (
        format!("{text}\n[pop3]\nlisten = \"127.0.0.1:{port}\"\nproxy_protocol = true\n"),
        port,
    )
}

/// One POP3 exchange per command on `s`; each answer's first line.
fn pop3_dialog(s: TcpStream, commands: &[&str]) -> Vec<String> {
    use std::io::BufRead;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    let mut said = Vec::new();
    r.read_line(&mut line).expect("greeting");
    said.push(line.trim_end().to_string());
    for c in commands {
        write!(w, "{c}\r\n").expect("write");
        line.clear();
        r.read_line(&mut line).expect("answer");
        said.push(line.trim_end().to_string());
    }
    said
}

#[test]
fn pop3_behind_haproxy_v2_names_the_client_and_an_untrusted_header_is_refused() {
    let lab = Lab::start(false);
    let (text, pop3_port) = pop3_config(&lab, "\"127.0.0.1/32\"");
    let proxy = Mailshift::start(&text);
    eventually(
        "the POP3 listener",
        || support::port_open(pop3_port),
        || proxy.log_tail(),
    );
    let hap = Haproxy::start(&[
        Frontend {
            send: "send-proxy-v2",
            target: pop3_port,
            source: None,
        },
        // HAProxy connecting from 127.0.0.9, outside trusted_proxies.
        Frontend {
            send: "send-proxy-v2",
            target: pop3_port,
            source: Some("127.0.0.9"),
        },
    ]);

    let said = pop3_dialog(
        connect_from("127.0.0.7", hap.ports[0]),
        &["USER alice", "PASS alicepw", "STAT", "QUIT"],
    );
    assert!(said[0].starts_with("+OK"), "{said:?}\n{}", proxy.log_tail());
    assert!(said[2].starts_with("+OK"), "{said:?}\n{}", proxy.log_tail());
    assert!(
        said[3].starts_with("+OK 1 "),
        "alice has one message: {said:?}"
    );

    let log = proxy.log();
    let started = lines_with(&log, &["POP3 session start", "user=alice"]);
    assert_eq!(started.len(), 1, "{log}");
    assert!(started[0].contains("client=127.0.0.7:"), "{}", started[0]);
    // The store learned it by XCLIENT.
    eventually(
        "Dovecot logging the POP3 login with rip=127.0.0.7",
        || {
            lab.old.log().lines().any(|l| {
                l.contains("pop3-login")
                    && l.contains("Login: user=<alice>")
                    && l.contains("rip=127.0.0.7,")
            })
        },
        || lab.old.log(),
    );

    // Through the untrusted balancer: closed before any greeting.
    let got = read_all(connect_from("127.0.0.7", hap.ports[1]));
    assert!(
        got.is_empty(),
        "untrusted balancer's client was answered: {got:?}"
    );
    // A forged v1 header straight from 127.0.0.10 neither.
    let mut s = connect_from("127.0.0.10", pop3_port);
    s.write_all(b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 110\r\nUSER alice\r\n")
        .expect("write");
    assert!(read_all(s).is_empty());
    eventually(
        "the refusals logged",
        || {
            let log = proxy.log();
            log.contains("127.0.0.9 is not in trusted_proxies")
                && log.contains("127.0.0.10 is not in trusted_proxies")
        },
        || proxy.log(),
    );
    let log = proxy.log();
    assert!(!log.contains("203.0.113.5"), "{log}");
    assert_eq!(
        lines_with(&log, &["POP3 session start"]).len(),
        1,
        "only the trusted client logged in: {log}"
    );
}

/// Lines from `r` up to and including the first that starts with `OK`, `NO`
/// or `BYE` (a ManageSieve response's end).
fn sieve_response(r: &mut impl std::io::BufRead) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).expect("read") == 0 {
            return out;
        }
        let l = l.trim_end().to_string();
        let done = ["OK", "NO", "BYE"].iter().any(|p| l.starts_with(p));
        out.push(l);
        if done {
            return out;
        }
    }
}

#[test]
fn managesieve_and_submission_behind_haproxy_v2_name_the_client() {
    use base64::Engine as _;
    let lab = Lab::start(false);
    let (sieve_port, submission_port) = (support::free_port(), support::free_port());
    let text = config(&lab, "\"127.0.0.1/32\"", "")
        .replacen(
            "[backends.old]\n",
            &format!(
                "[backends.old]\nsubmission = \"smtp+starttls://127.0.0.1:{}\"\n",
                lab.old.submission_port()
            ),
            1,
        )
        .replacen(
            "[backends.new]\n",
            &format!(
                "[backends.new]\nsubmission = \"smtp+starttls://127.0.0.1:{}\"\n",
                lab.new.submission_port()
            ),
            1,
        );
    let text = format!(
        "{text}\n[managesieve]\nlisten = \"127.0.0.1:{sieve_port}\"\nrequire_tls = false\n\
         proxy_protocol = true\n\
         [submission]\nlisten = \"127.0.0.1:{submission_port}\"\nproxy_protocol = true\n"
    );
    let proxy = Mailshift::start(&text);
    eventually(
        "the ManageSieve and submission listeners",
        || support::port_open(sieve_port) && support::port_open(submission_port),
        || proxy.log_tail(),
    );
    let hap = Haproxy::start(&[
        Frontend {
            send: "send-proxy-v2",
            target: sieve_port,
            source: None,
        },
        Frontend {
            send: "send-proxy-v2",
            target: submission_port,
            source: None,
        },
        Frontend {
            send: "send-proxy-v2",
            target: submission_port,
            source: Some("127.0.0.9"),
        },
    ]);

    // ManageSieve from 127.0.0.7: greeting, login, LOGOUT.
    let s = connect_from("127.0.0.7", hap.ports[0]);
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(s);
    let greeting = sieve_response(&mut r);
    assert!(
        greeting.last().is_some_and(|l| l.starts_with("OK")),
        "{greeting:?}\n{}",
        proxy.log_tail()
    );
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0alicepw");
    write!(w, "AUTHENTICATE \"PLAIN\" \"{plain}\"\r\n").expect("write");
    let said = sieve_response(&mut r);
    assert!(
        said.last().is_some_and(|l| l.starts_with("OK")),
        "{said:?}\n{}",
        proxy.log_tail()
    );
    write!(w, "LOGOUT\r\n").expect("write");
    let _ = sieve_response(&mut r);
    eventually(
        "ManageSieve session start logged with 127.0.0.7",
        || {
            lines_with(&proxy.log(), &["ManageSieve session start", "user=alice"])
                .iter()
                .any(|l| l.contains("client=127.0.0.7:"))
        },
        || proxy.log(),
    );

    // Submission through the trusted balancer greets; through the
    // untrusted one the connection closes unanswered.
    let s = connect_from("127.0.0.7", hap.ports[1]);
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut r = std::io::BufReader::new(s);
    let mut greeting = String::new();
    std::io::BufRead::read_line(&mut r, &mut greeting).expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting}");
    let got = read_all(connect_from("127.0.0.7", hap.ports[2]));
    assert!(
        got.is_empty(),
        "untrusted balancer's client was answered: {got:?}"
    );
    eventually(
        "the refusal logged",
        || proxy.log().contains("127.0.0.9 is not in trusted_proxies"),
        || proxy.log(),
    );
}
