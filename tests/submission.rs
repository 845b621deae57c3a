//! Submission end to end: real slapd, two real Dovecot stores with their
//! submission services (each relaying to its own sink), the real mailshift
//! binary, and Python's smtplib as the mail client. What is checked is what
//! a user would check: the message left through their own store, a wrong
//! password is refused, and nothing is sent in the clear or injected.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::sink::Sink;
use support::{Lab, Mailshift, SmtpClient};

struct Env {
    lab: Lab,
    proxy: Mailshift,
    old_sink: Sink,
    new_sink: Sink,
    /// mailshift's 587-style listener (STARTTLS).
    port: u16,
    /// mailshift's 465-style listener (implicit TLS).
    tls_port: u16,
}

/// The lab with both stores' submission services behind mailshift's
/// `[submission]` listeners.
fn start() -> Env {
    let lab = Lab::start(false);
    let old_sink = Sink::start(lab.old.submission_relay_port());
    let new_sink = Sink::start(lab.new.submission_relay_port());
    let (port, tls_port) = (support::free_port(), support::free_port());
    let text = lab
        .mailshift_config(&format!(
            "[submission]\nlisten = \"127.0.0.1:{port}\"\nlisten_tls = \"127.0.0.1:{tls_port}\"\n\
             hostname = \"submit.mailshift.test\"\n"
        ))
        .replace(
            "[backends.old]\n",
            &format!(
                "[backends.old]\nsubmission = \"smtp+starttls://127.0.0.1:{}\"\n",
                lab.old.submission_port()
            ),
        )
        .replace(
            "[backends.new]\n",
            &format!(
                "[backends.new]\nsubmission = \"smtp+starttls://127.0.0.1:{}\"\n",
                lab.new.submission_port()
            ),
        );
    let proxy = Mailshift::start(&text);
    // The submission listeners bind after IMAP's: wait for them to accept.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(support::port_open(port) && support::port_open(tls_port)) {
        assert!(
            Instant::now() < deadline,
            "submission listeners never opened:\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Env {
        lab,
        proxy,
        old_sink,
        new_sink,
        port,
        tls_port,
    }
}

/// Sends one message with Python's smtplib: `mode` is `starttls` (port 587
/// style) or `tls` (465). Prints `sent` or `error CODE TEXT`.
const SMTPLIB: &str = r#"
import smtplib, ssl, sys
mode, port, ca, user, password, to, subject = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
msg = ("From: %s@example.org\r\nTo: %s\r\nSubject: %s\r\n"
       "Message-ID: <%s@example.org>\r\n\r\nHello from %s.\r\n") % (user, to, subject, subject, user)
try:
    if mode == "tls":
        s = smtplib.SMTP_SSL("localhost", int(port), context=ctx, timeout=60)
    else:
        s = smtplib.SMTP("localhost", int(port), timeout=60)
        s.starttls(context=ctx)
    s.login(user, password)
    s.sendmail(user + "@example.org", [to], msg)
    s.quit()
    print("sent")
except smtplib.SMTPResponseException as e:
    print("error", e.smtp_code, e.smtp_error.decode(errors="replace"))
except Exception as e:
    print("error", type(e).__name__, e)
"#;

fn smtplib(env: &Env, mode: &str, user: &str, password: &str, to: &str, subject: &str) -> String {
    let port = if mode == "tls" {
        env.tls_port
    } else {
        env.port
    };
    let out = Command::new("python3")
        .arg("-c")
        .arg(SMTPLIB)
        .args([
            mode,
            &port.to_string(),
            &env.lab.certs.ca_pem.display().to_string(),
            user,
            password,
            to,
            subject,
        ])
        .output()
        .expect("python3 (install-deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn each_users_mail_leaves_through_their_own_stores_submission() {
    let env = start();
    // alice is on the old store: 587-style with STARTTLS.
    let out = smtplib(
        &env,
        "starttls",
        "alice",
        "alicepw",
        "carol@example.net",
        "from-alice-via-587",
    );
    assert_eq!(out.trim(), "sent", "{out}\n{}", env.proxy.log_tail());
    // bob is on the new store: implicit TLS.
    let out = smtplib(
        &env,
        "tls",
        "bob",
        "bobpw",
        "dave@example.net",
        "from-bob-via-465",
    );
    assert_eq!(out.trim(), "sent", "{out}\n{}", env.proxy.log_tail());

    let a = env
        .old_sink
        .wait_for("from-alice-via-587")
        .unwrap_or_else(|| panic!("alice's message not relayed by old:\n{}", env.lab.old.log()));
    assert!(a.from.contains("alice@example.org"), "{a:?}");
    assert!(a.rcpts.iter().any(|r| r.contains("carol@example.net")));
    let b = env
        .new_sink
        .wait_for("from-bob-via-465")
        .unwrap_or_else(|| panic!("bob's message not relayed by new:\n{}", env.lab.new.log()));
    assert!(b.rcpts.iter().any(|r| r.contains("dave@example.net")));
    // Each left through its own store only.
    assert!(!env.new_sink.has("from-alice-via-587"));
    assert!(!env.old_sink.has("from-bob-via-465"));
    // The stores authenticated the users themselves.
    assert!(env.lab.old.log().contains("alice"), "{}", env.lab.old.log());
    let log = env.proxy.log();
    assert!(
        log.contains("submission session start") && log.contains("backend=old"),
        "{log}"
    );
}

#[test]
fn wrong_password_is_refused_with_535_after_the_delay() {
    let env = start();
    let out = smtplib(
        &env,
        "starttls",
        "alice",
        "wrong",
        "carol@example.net",
        "never-sent",
    );
    assert!(out.starts_with("error 535 5.7.8"), "{out}");
    let log = env.proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("submission login failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert!(
        line.contains("user=alice") && !line.contains("delay_ms=0 "),
        "{line}"
    );
    assert!(!log.contains("wrong"), "a password reached the log:\n{log}");
    assert!(env.old_sink.messages().is_empty());
}

#[test]
fn auth_before_starttls_is_refused_where_tls_is_required() {
    let env = start();
    let mut c = SmtpClient::connect(env.port);
    let ehlo = c.expect("EHLO client.example.net", "250");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    // alice / alicepw, valid, but in the clear.
    let r = c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlcHc=");
    assert!(r.starts_with("530 5.7.0"), "{r}");
    let r = c.cmd("MAIL FROM:<alice@example.org>");
    assert!(r.starts_with("530 5.7.0"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(!env.proxy.log().contains("submission session start"));
}

/// Raw client over Python's ssl: the STARTTLS injection and bad logins.
const RAW: &str = r#"
import base64, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
def reader(sock):
    f = sock.makefile("rb")
    def reply():
        out = b""
        while True:
            l = f.readline()
            out += l
            if len(l) < 4 or l[3:4] != b"-":
                return out.decode(errors="replace").replace("\r\n", " ").strip()
    return reply
s = socket.create_connection(("127.0.0.1", port))
reply = reader(s)
reply()
s.sendall(b"EHLO client.example.net\r\n"); reply()
s.sendall(b"A" * 10000 + b"\r\n")
print("long", reply())
plain = base64.b64encode(b"\0alice\0alicepw")
s.sendall(b"STARTTLS\r\nEHLO evil.example\r\nAUTH PLAIN " + plain + b"\r\n")
print("starttls", reply())
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
treply = reader(t)
t.sendall(b"MAIL FROM:<alice@example.org>\r\n")
print("mail", treply())
t.sendall(b"EHLO client.example.net\r\n")
print("ehlo", treply())
for login in ["*)(uid=*", "alice)(|(uid=*", "alice\\2a", "*"]:
    m = base64.b64encode(b"\0" + login.encode() + b"\0alicepw")
    try:
        t.sendall(b"AUTH PLAIN " + m + b"\r\n")
        print("filter", treply())
    except OSError as e:
        print("closed", e)
"#;

#[test]
fn bad_input_long_lines_injection_after_starttls_and_filter_metacharacters() {
    let env = start();
    let out = Command::new("python3")
        .arg("-c")
        .arg(RAW)
        .arg(env.port.to_string())
        .arg(env.lab.certs.ca_pem.display().to_string())
        .output()
        .expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("long 500 5.5.6 Line too long"), "{text}");
    assert!(text.contains("starttls 220 2.0.0"), "{text}");
    // Had the injected EHLO + AUTH run, MAIL would reach the store (250).
    assert!(text.contains("mail 530 5.7.0"), "{text}");
    let ehlo = text.lines().find(|l| l.starts_with("ehlo ")).unwrap_or("");
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{text}"
    );
    let refusals: Vec<&str> = text.lines().filter(|l| l.starts_with("filter ")).collect();
    assert!(refusals.len() >= 3, "{text}\n{}", env.proxy.log_tail());
    for r in &refusals[..3] {
        assert!(r.starts_with("filter 535 5.7.8"), "{text}");
    }
    // Three failures close the connection: the fourth login is not tried;
    // mailshift is still there for the next client.
    assert!(
        refusals.get(3).is_none_or(|r| r.contains("421 4.7.0")),
        "{text}\n{}",
        env.proxy.log_tail()
    );
    assert!(!env.proxy.log().contains("session start"));
    let out = smtplib(
        &env,
        "starttls",
        "alice",
        "alicepw",
        "carol@example.net",
        "after-the-bad-input",
    );
    assert_eq!(out.trim(), "sent", "{out}\n{}", env.proxy.log_tail());
}
