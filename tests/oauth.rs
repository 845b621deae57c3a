//! OAuth pass-through: AUTHENTICATE OAUTHBEARER (RFC 7628) and XOAUTH2
//! through mailshift to stores that check tokens themselves (Dovecot's
//! `oauth2` passdb asking a local introspection endpoint). mailshift routes
//! by the user the message names and passes the token on unchanged; the
//! store's verdict, its error JSON included, is what the client sees,
//! exactly as when it talks to the store directly.
mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use support::oauth::Introspection;
use support::{DovecotOpts, ImapClient, Lab, Mailshift};

const ALICE_TOKEN: &str = "alice-token-1";
const BOB_TOKEN: &str = "bob-token-1";

fn oauthbearer(user: &str, token: &str) -> Vec<u8> {
    format!("n,a={user},\x01host=127.0.0.1\x01port=143\x01auth=Bearer {token}\x01\x01").into_bytes()
}

fn xoauth2(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// What a client saw of one AUTHENTICATE: the store's challenge (decoded), if
/// any, and the tagged reply without its tag.
#[derive(Debug, PartialEq)]
struct Seen {
    challenge: Option<String>,
    reply: String,
}

/// AUTHENTICATE `mech` with `message` (as SASL-IR, or after the empty `+`),
/// answering a challenge with `AQ==` as RFC 7628 says a client must.
fn authenticate(c: &mut ImapClient, mech: &str, message: &[u8], ir: bool) -> Seen {
    let b64 = STANDARD.encode(message);
    let tag = if ir {
        c.send(&format!("AUTHENTICATE {mech} {b64}"))
    } else {
        c.send(&format!("AUTHENTICATE {mech}"))
    };
    let mut sent = ir;
    let mut challenge = None;
    loop {
        let line = c.read_response();
        if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
            return Seen {
                challenge,
                reply: rest.to_string(),
            };
        }
        let Some(cont) = line.strip_prefix('+') else {
            continue;
        };
        if !sent {
            c.write_raw(format!("{b64}\r\n").as_bytes());
            sent = true;
        } else {
            let decoded = STANDARD.decode(cont.trim()).expect("challenge is base64");
            challenge = Some(String::from_utf8_lossy(&decoded).into_owned());
            c.write_raw(b"AQ==\r\n");
        }
    }
}

fn start() -> (Introspection, Lab, Mailshift) {
    start_with(false, |_| String::new())
}

/// The lab with token-checking stores; `extra` gives tables to append.
fn start_with(syncprov: bool, extra: impl Fn(&Lab) -> String) -> (Introspection, Lab, Mailshift) {
    let idp = Introspection::start(&[(ALICE_TOKEN, "alice"), (BOB_TOKEN, "bob")]);
    let lab = Lab::start_with(
        syncprov,
        DovecotOpts {
            oauth2_introspection: Some(idp.url()),
            ..DovecotOpts::default()
        },
    );
    // Short failure delays: a test of refusals refuses often from one address.
    let cfg = lab.mailshift_config(&extra(&lab)).replacen(
        "[imap]\n",
        "[imap]\noauth = true\nauth_failure_delay = \"10ms\"\nauth_failure_delay_max = \"50ms\"\n",
        1,
    );
    let proxy = Mailshift::start(&cfg);
    (idp, lab, proxy)
}

#[test]
fn oauthbearer_and_xoauth2_log_in_through_mailshift_on_the_old_and_the_new_store() {
    let (idp, lab, proxy) = start();
    let mut c = ImapClient::connect(proxy.imap_port());
    assert!(
        c.greeting.contains("AUTH=OAUTHBEARER") && c.greeting.contains("AUTH=XOAUTH2"),
        "{}",
        c.greeting
    );
    let seen = authenticate(
        &mut c,
        "OAUTHBEARER",
        &oauthbearer("alice", ALICE_TOKEN),
        true,
    );
    assert!(
        seen.reply.starts_with("OK"),
        "{seen:?}\n{}",
        proxy.log_tail()
    );
    assert_eq!(seen.challenge, None);
    c.ok("SELECT INBOX");
    assert_eq!(c.subjects(), vec!["only-on-old".to_string()]);
    c.ok("LOGOUT");

    let mut c = ImapClient::connect(proxy.imap_port());
    let seen = authenticate(&mut c, "XOAUTH2", &xoauth2("bob", BOB_TOKEN), false);
    assert!(
        seen.reply.starts_with("OK"),
        "{seen:?}\n{}",
        proxy.log_tail()
    );
    c.ok("SELECT INBOX");
    assert_eq!(c.subjects(), vec!["only-on-new".to_string()]);
    c.ok("LOGOUT");

    // The other way round: XOAUTH2 with SASL-IR for alice, OAUTHBEARER after
    // the continuation for bob.
    let mut c = ImapClient::connect(proxy.imap_port());
    let seen = authenticate(&mut c, "XOAUTH2", &xoauth2("alice", ALICE_TOKEN), true);
    assert!(seen.reply.starts_with("OK"), "{seen:?}");
    c.ok("LOGOUT");
    let mut c = ImapClient::connect(proxy.imap_port());
    let seen = authenticate(&mut c, "OAUTHBEARER", &oauthbearer("bob", BOB_TOKEN), false);
    assert!(seen.reply.starts_with("OK"), "{seen:?}");
    c.ok("LOGOUT");

    // The stores got the tokens as the client sent them, and logged the
    // users in by them (not by the master user the old store has).
    let asked = idp.seen();
    assert_eq!(
        asked.iter().filter(|t| *t == ALICE_TOKEN).count(),
        2,
        "{asked:?}"
    );
    assert_eq!(
        asked.iter().filter(|t| *t == BOB_TOKEN).count(),
        2,
        "{asked:?}"
    );
    assert!(lab
        .old
        .log()
        .lines()
        .any(|l| l.contains("Login: user=<alice>, method=OAUTHBEARER")));
    assert!(lab
        .new
        .log()
        .lines()
        .any(|l| l.contains("Login: user=<bob>, method=XOAUTH2")));
    let log = proxy.log();
    for (user, backend) in [("alice", "old"), ("bob", "new")] {
        let starts = log
            .lines()
            .filter(|l| {
                l.contains("session start")
                    && l.contains(&format!("user={user}"))
                    && l.contains(&format!("backend={backend}"))
            })
            .count();
        assert_eq!(starts, 2, "{user}:\n{log}");
    }
    assert!(
        !log.contains(ALICE_TOKEN) && !log.contains(BOB_TOKEN),
        "{log}"
    );
}

#[test]
fn invalid_tokens_get_the_stores_own_error_through_mailshift() {
    let (idp, lab, proxy) = start();
    let cases: [(&str, &str, Vec<u8>, u16); 4] = [
        (
            "alice",
            "OAUTHBEARER",
            oauthbearer("alice", "expired-token"),
            lab.old.imap_port(),
        ),
        (
            "bob",
            "XOAUTH2",
            xoauth2("bob", "expired-token"),
            lab.new.imap_port(),
        ),
        // A valid token of someone else: the store refuses it for this user.
        (
            "alice",
            "OAUTHBEARER",
            oauthbearer("alice", BOB_TOKEN),
            lab.old.imap_port(),
        ),
        (
            "bob",
            "OAUTHBEARER",
            oauthbearer("bob", "expired-token"),
            lab.new.imap_port(),
        ),
    ];
    for (user, mech, message, store_port) in cases {
        for ir in [true, false] {
            let mut direct = ImapClient::connect(store_port);
            let want = authenticate(&mut direct, mech, &message, ir);
            assert!(want.reply.starts_with("NO"), "{user} {mech}: {want:?}");
            let mut c = ImapClient::connect(proxy.imap_port());
            let got = authenticate(&mut c, mech, &message, ir);
            assert_eq!(got, want, "{user} {mech} ir={ir}\n{}", proxy.log_tail());
            // The session goes on: a good token next works.
            let token = if user == "alice" {
                ALICE_TOKEN
            } else {
                BOB_TOKEN
            };
            let ok = authenticate(&mut c, "OAUTHBEARER", &oauthbearer(user, token), true);
            assert!(ok.reply.starts_with("OK"), "{ok:?}");
            c.ok("LOGOUT");
        }
    }
    // What the client saw for OAUTHBEARER was the store's JSON error.
    let mut c = ImapClient::connect(proxy.imap_port());
    let seen = authenticate(
        &mut c,
        "OAUTHBEARER",
        &oauthbearer("alice", "expired-token"),
        true,
    );
    let json = seen.challenge.expect("a failure challenge");
    assert!(json.contains("invalid_token"), "{json}");
    assert!(idp.seen().iter().any(|t| t == "expired-token"));
    let log = proxy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("login failed") && l.contains("OAUTHBEARER")),
        "{log}"
    );
    assert!(!log.contains("expired-token"), "{log}");
}

#[test]
fn malformed_bearer_messages_and_cancels_get_clear_errors() {
    let (_idp, lab, proxy) = start();
    let mut c = ImapClient::connect(proxy.imap_port());
    let bad: [(&str, &[u8], &str); 4] = [
        ("OAUTHBEARER", b"n,,\x01auth=Bearer x\x01\x01", "GS2 header"),
        (
            "OAUTHBEARER",
            b"n,a=alice,\x01host=h\x01\x01",
            "auth=Bearer",
        ),
        ("XOAUTH2", b"auth=Bearer x\x01\x01", "user="),
        ("OAUTHBEARER", b"garbage", "Malformed"),
    ];
    for (mech, msg, expect) in bad {
        let seen = authenticate(&mut c, mech, msg, true);
        assert!(
            seen.reply.starts_with("BAD") && seen.reply.contains(expect),
            "{mech} {msg:?}: {seen:?}"
        );
    }
    // A cancel at the continuation.
    let tag = c.send("AUTHENTICATE XOAUTH2");
    assert!(c.read_response().starts_with('+'));
    c.write_raw(b"*\r\n");
    assert_eq!(
        c.read_response(),
        format!("{tag} BAD Authentication cancelled.")
    );
    // Still usable; then a message past the line limit ends the connection.
    c.ok("NOOP");
    let huge = oauthbearer("alice", &"x".repeat(20_000));
    c.write_raw(format!("h AUTHENTICATE OAUTHBEARER {}\r\n", STANDARD.encode(huge)).as_bytes());
    let bye = c.read_response();
    assert!(bye.starts_with("* BYE"), "{bye}");
    // Nothing of this reached a store.
    assert!(!lab.old.log().contains("user=<alice>"), "{}", lab.old.log());
    let log = proxy.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Lazy mode: a user who logs in with a token (no password to migrate with)
/// is moved by the old store's master user.
#[test]
fn a_token_login_starts_a_lazy_migration_by_the_master_user() {
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().join("state");
    let (_idp, lab, proxy) = start_with(true, |_| {
        format!(
            "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\n\
             mode = \"lazy\"\nusers_filter = \"(uid=alice)\"\nlease = \"3s\"\n",
            state_dir.display()
        )
    });
    let mut c = ImapClient::connect(proxy.imap_port());
    let seen = authenticate(
        &mut c,
        "OAUTHBEARER",
        &oauthbearer("alice", ALICE_TOKEN),
        true,
    );
    assert!(seen.reply.starts_with("OK"), "{seen:?}");
    c.ok("SELECT INBOX");
    let mail_host = || {
        lab.ldap
            .search("(uid=alice)", &["mailHost"])
            .lines()
            .find_map(|l| l.strip_prefix("mailHost: ").map(str::to_string))
            .unwrap_or_default()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while mail_host() != support::proxy::NEW_HOST {
        assert!(
            std::time::Instant::now() < until,
            "no lazy migration after a token login\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        proxy.log().contains("lazy migration started by login"),
        "{}",
        proxy.log_tail()
    );
    let mut n = ImapClient::connect(lab.new.imap_port());
    n.login("alice*admin", "adminpw");
    n.ok("EXAMINE INBOX");
    assert!(n.subjects().contains(&"only-on-old".to_string()));
}

/// A raw POP3 connection: one line at a time.
struct Pop3 {
    w: std::net::TcpStream,
    r: std::io::BufReader<std::net::TcpStream>,
}

impl Pop3 {
    fn connect(port: u16) -> (Pop3, String) {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .expect("timeout");
        let mut p = Pop3 {
            w: s.try_clone().expect("clone"),
            r: std::io::BufReader::new(s),
        };
        let greeting = p.line();
        (p, greeting)
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        l.trim_end().to_string()
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        write!(self.w, "{line}\r\n").expect("write");
    }

    /// A command and its first reply line.
    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// A multi-line answer's lines after `+OK`, up to the final `.`.
    fn multi(&mut self, line: &str) -> Vec<String> {
        let first = self.cmd(line);
        assert!(first.starts_with("+OK"), "{line}: {first}");
        let mut out = Vec::new();
        loop {
            let l = self.line();
            if l == "." {
                return out;
            }
            out.push(l);
        }
    }

    /// AUTH `mech` with `message` (as an initial response or after the empty
    /// `+`), answering a challenge with `AQ==`.
    fn auth(&mut self, mech: &str, message: &[u8], ir: bool) -> Seen {
        let b64 = STANDARD.encode(message);
        if ir {
            self.send(&format!("AUTH {mech} {b64}"));
        } else {
            self.send(&format!("AUTH {mech}"));
        }
        let mut sent = ir;
        let mut challenge = None;
        loop {
            let line = self.line();
            let Some(cont) = line.strip_prefix('+').filter(|_| !line.starts_with("+OK")) else {
                return Seen {
                    challenge,
                    reply: line,
                };
            };
            if !sent {
                self.send(&b64);
                sent = true;
            } else {
                let decoded = STANDARD.decode(cont.trim()).expect("challenge is base64");
                challenge = Some(String::from_utf8_lossy(&decoded).into_owned());
                self.send("AQ==");
            }
        }
    }
}

/// The lab with token-checking stores and mailshift's POP3 with OAuth on.
fn start_pop3() -> (Introspection, Lab, Mailshift, u16) {
    let idp = Introspection::start(&[(ALICE_TOKEN, "alice"), (BOB_TOKEN, "bob")]);
    let lab = Lab::start_with(
        false,
        DovecotOpts {
            oauth2_introspection: Some(idp.url()),
            ..DovecotOpts::default()
        },
    );
    let port = support::free_port();
    let (old, new) = (lab.old.pop3_port(), lab.new.pop3_port());
    let cfg = lab
        .mailshift_config(&format!(
            "\n[pop3]\nlisten = \"127.0.0.1:{port}\"\noauth = true\n"
        ))
        .replacen(
            "[backends.old]\n",
            &format!("[backends.old]\npop3 = \"pop3://127.0.0.1:{old}\"\n"),
            1,
        )
        .replacen(
            "[backends.new]\n",
            &format!("[backends.new]\npop3 = \"pop3://127.0.0.1:{new}\"\n"),
            1,
        )
        .replacen(
            "[imap]\n",
            "[imap]\nauth_failure_delay = \"10ms\"\nauth_failure_delay_max = \"50ms\"\n",
            1,
        );
    let proxy = Mailshift::start(&cfg);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !support::port_open(port) {
        assert!(
            std::time::Instant::now() < until,
            "no POP3 listener\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    (idp, lab, proxy, port)
}

#[test]
fn pop3_oauthbearer_and_xoauth2_log_in_and_invalid_tokens_get_the_stores_error() {
    let (idp, lab, proxy, port) = start_pop3();
    let (mut c, greeting) = Pop3::connect(port);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let capa = c.multi("CAPA");
    assert!(
        capa.iter().any(|l| l == "SASL PLAIN OAUTHBEARER XOAUTH2"),
        "{capa:?}"
    );
    // alice (old) by OAUTHBEARER with an initial response.
    let seen = c.auth("OAUTHBEARER", &oauthbearer("alice", ALICE_TOKEN), true);
    assert!(
        seen.reply.starts_with("+OK") && seen.challenge.is_none(),
        "{seen:?}\n{}",
        proxy.log_tail()
    );
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    let top = c.multi("TOP 1 0");
    assert!(top.iter().any(|l| l.contains("only-on-old")), "{top:?}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // bob (new) by XOAUTH2 after the empty continuation.
    let (mut c, _) = Pop3::connect(port);
    let seen = c.auth("XOAUTH2", &xoauth2("bob", BOB_TOKEN), false);
    assert!(
        seen.reply.starts_with("+OK"),
        "{seen:?}\n{}",
        proxy.log_tail()
    );
    let top = c.multi("TOP 1 0");
    assert!(top.iter().any(|l| l.contains("only-on-new")), "{top:?}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(lab
        .old
        .log()
        .lines()
        .any(|l| l.contains("pop3") && l.contains("Login: user=<alice>, method=OAUTHBEARER")));
    assert!(lab
        .new
        .log()
        .lines()
        .any(|l| l.contains("pop3") && l.contains("Login: user=<bob>, method=XOAUTH2")));

    // Invalid tokens: the client sees what the store says to it directly,
    // its JSON challenge included; then a good token still works.
    for (user, mech, message, store_port) in [
        (
            "alice",
            "OAUTHBEARER",
            oauthbearer("alice", "expired-token"),
            lab.old.pop3_port(),
        ),
        (
            "bob",
            "XOAUTH2",
            xoauth2("bob", "expired-token"),
            lab.new.pop3_port(),
        ),
        (
            "alice",
            "OAUTHBEARER",
            oauthbearer("alice", BOB_TOKEN),
            lab.old.pop3_port(),
        ),
    ] {
        for ir in [true, false] {
            let (mut direct, _) = Pop3::connect(store_port);
            let want = direct.auth(mech, &message, ir);
            assert!(want.reply.starts_with("-ERR"), "{user} {mech}: {want:?}");
            let (mut c, _) = Pop3::connect(port);
            let got = c.auth(mech, &message, ir);
            assert_eq!(got, want, "{user} {mech} ir={ir}\n{}", proxy.log_tail());
            let token = if user == "alice" {
                ALICE_TOKEN
            } else {
                BOB_TOKEN
            };
            let ok = c.auth("OAUTHBEARER", &oauthbearer(user, token), true);
            assert!(ok.reply.starts_with("+OK"), "{ok:?}");
            assert!(c.cmd("QUIT").starts_with("+OK"));
        }
    }
    let (mut c, _) = Pop3::connect(port);
    let seen = c.auth("OAUTHBEARER", &oauthbearer("alice", "expired-token"), true);
    let json = seen.challenge.expect("a failure challenge");
    assert!(json.contains("invalid_token"), "{json}");
    assert!(idp.seen().iter().any(|t| t == "expired-token"));
    let log = proxy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("POP3 login failed") && l.contains("OAUTHBEARER")),
        "{log}"
    );
    assert!(
        !log.contains("expired-token") && !log.contains(ALICE_TOKEN),
        "{log}"
    );
}

/// One submission login by smtplib over STARTTLS with `mech` and the raw
/// SASL `message`, answering a challenge with `\x01` as RFC 7628 says;
/// prints `challenge JSON` if one came, then `ok` or `error CODE TEXT`.
const SMTP_BEARER: &str = r#"
import smtplib, ssl, sys
port, ca, mech, message = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP("localhost", port, timeout=60)
s.starttls(context=ctx)
s.ehlo()
def answer(challenge=None):
    if challenge is None:
        return message
    print("challenge", challenge.decode())
    return "\x01"
try:
    s.auth(mech, answer, initial_response_ok=True)
    print("ok")
except smtplib.SMTPResponseException as e:
    print("error", e.smtp_code, e.smtp_error.decode(errors="replace"))
s.close()
"#;

fn smtp_bearer(lab: &Lab, port: u16, mech: &str, message: &[u8]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SMTP_BEARER)
        .arg(port.to_string())
        .arg(&lab.certs.ca_pem)
        .arg(mech)
        .arg(String::from_utf8_lossy(message).into_owned())
        .output()
        .expect("python3 runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn submission_oauthbearer_and_xoauth2_reach_the_store_and_its_refusal_the_client() {
    let idp = Introspection::start(&[(ALICE_TOKEN, "alice"), (BOB_TOKEN, "bob")]);
    let lab = Lab::start_with(
        false,
        DovecotOpts {
            oauth2_introspection: Some(idp.url()),
            ..DovecotOpts::default()
        },
    );
    let port = support::free_port();
    let (old, new) = (lab.old.submission_port(), lab.new.submission_port());
    let cfg = lab
        .mailshift_config(&format!(
            "\n[submission]\nlisten = \"127.0.0.1:{port}\"\noauth = true\n"
        ))
        .replacen(
            "[backends.old]\n",
            &format!("[backends.old]\nsubmission = \"smtp+starttls://127.0.0.1:{old}\"\n"),
            1,
        )
        .replacen(
            "[backends.new]\n",
            &format!("[backends.new]\nsubmission = \"smtp+starttls://127.0.0.1:{new}\"\n"),
            1,
        )
        .replacen(
            "[imap]\n",
            "[imap]\nauth_failure_delay = \"10ms\"\nauth_failure_delay_max = \"50ms\"\n",
            1,
        );
    let proxy = Mailshift::start(&cfg);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !support::port_open(port) {
        assert!(
            std::time::Instant::now() < until,
            "no submission listener\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }

    let said = smtp_bearer(&lab, port, "XOAUTH2", &xoauth2("alice", ALICE_TOKEN));
    assert_eq!(said.trim(), "ok", "{said}\n{}", proxy.log_tail());
    let said = smtp_bearer(&lab, port, "OAUTHBEARER", &oauthbearer("bob", BOB_TOKEN));
    assert_eq!(said.trim(), "ok", "{said}\n{}", proxy.log_tail());
    let log = proxy.log();
    for (user, backend) in [("alice", "old"), ("bob", "new")] {
        assert!(
            log.lines().any(|l| l.contains("submission session start")
                && l.contains(&format!("user={user}"))
                && l.contains(&format!("backend={backend}"))),
            "{user}:\n{log}"
        );
    }
    assert!(lab
        .old
        .log()
        .lines()
        .any(|l| l.contains("submission") && l.contains("Login: user=<alice>, method=XOAUTH2")));

    // Invalid tokens: the client sees what the store says to it directly.
    for (mech, message, store_port) in [
        ("OAUTHBEARER", oauthbearer("alice", "expired-token"), old),
        ("XOAUTH2", xoauth2("bob", "expired-token"), new),
    ] {
        let want = smtp_bearer(&lab, store_port, mech, &message);
        assert!(want.contains("error 535"), "{mech}: {want}");
        let got = smtp_bearer(&lab, port, mech, &message);
        assert_eq!(got, want, "{mech}\n{}", proxy.log_tail());
        // The store's JSON error came through as its challenge.
        assert!(got.contains("challenge {\"status\":"), "{got}");
    }
    assert!(!proxy.log().contains("expired-token"));
}

/// AUTHENTICATE `mech` over ManageSieve with `message` as the initial
/// response, answering a challenge (a string, RFC 5804 §2.1) with `AQ==`.
fn sieve_auth(c: &mut support::sieve::SieveClient, mech: &str, message: &[u8]) -> Seen {
    let ir = STANDARD.encode(message);
    c.send_raw(format!("AUTHENTICATE \"{mech}\" \"{ir}\"\r\n").as_bytes());
    let mut challenge = None;
    loop {
        let line = c.line();
        let head = line.split([' ', '(']).next().unwrap_or("");
        if matches!(head, "OK" | "NO" | "BYE") {
            return Seen {
                challenge,
                reply: line,
            };
        }
        // A quoted string, or a literal folded in after a newline.
        let b64 = match line.split_once('\n') {
            Some((_, lit)) => lit.to_string(),
            None => line.trim_matches('"').to_string(),
        };
        let decoded = STANDARD.decode(b64.trim()).expect("challenge is base64");
        challenge = Some(String::from_utf8_lossy(&decoded).into_owned());
        c.send_raw(b"\"AQ==\"\r\n");
    }
}

#[test]
fn managesieve_oauthbearer_and_xoauth2_reach_the_store_and_its_refusal_the_client() {
    use support::sieve::SieveClient;
    let idp = Introspection::start(&[(ALICE_TOKEN, "alice"), (BOB_TOKEN, "bob")]);
    let lab = Lab::start_with(
        false,
        DovecotOpts {
            oauth2_introspection: Some(idp.url()),
            ..DovecotOpts::default()
        },
    );
    let port = support::free_port();
    let cfg = lab
        .mailshift_config(&format!(
            // Plaintext on loopback: the raw client here speaks no TLS.
            "\n[managesieve]\nlisten = \"127.0.0.1:{port}\"\noauth = true\nrequire_tls = false\n"
        ))
        .replacen(
            "[imap]\n",
            "[imap]\nauth_failure_delay = \"10ms\"\nauth_failure_delay_max = \"50ms\"\n",
            1,
        );
    let proxy = Mailshift::start(&cfg);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !support::port_open(port) {
        assert!(
            std::time::Instant::now() < until,
            "no ManageSieve listener\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }

    // alice (old, STARTTLS to the store) by OAUTHBEARER, bob (new) by XOAUTH2.
    for (user, token, mech, message) in [
        (
            "alice",
            ALICE_TOKEN,
            "OAUTHBEARER",
            oauthbearer("alice", ALICE_TOKEN),
        ),
        ("bob", BOB_TOKEN, "XOAUTH2", xoauth2("bob", BOB_TOKEN)),
    ] {
        let mut c = SieveClient::connect(port);
        assert!(
            c.greeting
                .iter()
                .any(|l| l == "\"SASL\" \"PLAIN OAUTHBEARER XOAUTH2\""),
            "{:?}",
            c.greeting
        );
        let seen = sieve_auth(&mut c, mech, &message);
        assert!(
            seen.reply.starts_with("OK") && seen.challenge.is_none(),
            "{user} {mech} ({token}): {seen:?}\n{}",
            proxy.log_tail()
        );
        let (_, ok) = c.cmd("LISTSCRIPTS");
        assert!(ok.starts_with("OK"), "{user}: {ok}");
        assert!(c.cmd("LOGOUT").1.starts_with("OK"));
    }
    assert!(lab.old.log().lines().any(
        |l| l.contains("managesieve") && l.contains("Login: user=<alice>, method=OAUTHBEARER")
    ));
    assert!(lab
        .new
        .log()
        .lines()
        .any(|l| l.contains("managesieve") && l.contains("Login: user=<bob>, method=XOAUTH2")));
    let log = proxy.log();
    for (user, backend) in [("alice", "old"), ("bob", "new")] {
        assert!(
            log.lines().any(|l| l.contains("ManageSieve session start")
                && l.contains(&format!("user={user}"))
                && l.contains(&format!("backend={backend}"))),
            "{user}:\n{log}"
        );
    }

    // Invalid tokens: the client sees what the store says to it directly,
    // its JSON challenge included, after the failure delay; then a good
    // token still works on the same connection.
    for (mech, message) in [
        ("OAUTHBEARER", oauthbearer("bob", "expired-token")),
        ("XOAUTH2", xoauth2("bob", ALICE_TOKEN)),
    ] {
        let mut direct = SieveClient::connect(lab.new.sieve_port());
        let want = sieve_auth(&mut direct, mech, &message);
        assert!(want.reply.starts_with("NO"), "{mech}: {want:?}");
        let mut c = SieveClient::connect(port);
        let got = sieve_auth(&mut c, mech, &message);
        assert_eq!(got, want, "{mech}\n{}", proxy.log_tail());
        let ok = sieve_auth(&mut c, "OAUTHBEARER", &oauthbearer("bob", BOB_TOKEN));
        assert!(ok.reply.starts_with("OK"), "{ok:?}\n{}", proxy.log_tail());
        assert!(c.cmd("LISTSCRIPTS").1.starts_with("OK"));
    }
    let mut c = SieveClient::connect(port);
    let seen = sieve_auth(
        &mut c,
        "OAUTHBEARER",
        &oauthbearer("alice", "expired-token"),
    );
    assert!(seen.reply.starts_with("NO"), "{seen:?}");
    let json = seen.challenge.expect("a failure challenge");
    assert!(json.contains("invalid_token"), "{json}");
    assert!(idp.seen().iter().any(|t| t == "expired-token"));
    let log = proxy.log();
    assert!(
        log.lines().any(|l| l.contains("ManageSieve login failed")
            && l.contains("OAUTHBEARER")
            && l.contains("delay_ms=")),
        "{log}"
    );
    assert!(
        !log.contains("expired-token") && !log.contains(ALICE_TOKEN),
        "{log}"
    );
}
