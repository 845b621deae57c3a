//! ManageSieve through mailshift, and Sieve scripts that move with the
//! mailbox: real slapd (syncprov), two real Dovecot stores with Pigeonhole
//! (ManageSieve + Sieve on LMTP; the new one lacks the `regex` extension),
//! the real mailshift binary, sieve-connect as the client, and `mailshift
//! migrate --cutover` / `verify` / `rollback` as an admin runs them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::sieve::{base64, SieveClient};
use support::{message, ImapClient, Lab, Mailshift};

struct Setup {
    lab: Lab,
    proxy: Mailshift,
    sieve_port: u16,
    cli_config: PathBuf,
    _dir: tempfile::TempDir,
}

const FILTER: &str = "require [\"fileinto\", \"mailbox\"];\r\n\
    if header :contains \"subject\" \"sort-me\" {\r\n  fileinto :create \"Filtered\";\r\n}\r\n";
/// Valid on the old store; the new one lacks `regex`.
const REGEX: &str =
    "require [\"regex\", \"fileinto\"];\r\nif header :regex \"subject\" \"^x+$\" { fileinto \"X\"; }\r\n";

fn setup() -> Setup {
    setup_with("")
}

/// `managesieve` is added to the `[managesieve]` table.
fn setup_with(managesieve: &str) -> Setup {
    let lab = Lab::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let sieve_port = support::free_port();
    let extra = format!(
        "[managesieve]\nlisten = \"127.0.0.1:{sieve_port}\"\n{managesieve}\
         [migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\ninstance_id = \"test-cli\"\n",
        dir.path().join("state").display(),
    );
    let text = lab.mailshift_config(&extra).replacen(
        "[imap]\n",
        "[imap]\nauth_failure_delay = \"50ms\"\nauth_failure_delay_max = \"200ms\"\n",
        1,
    );
    let proxy = Mailshift::start(&text);
    let started = Instant::now();
    while !support::port_open(sieve_port) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "ManageSieve listener never opened:\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cli_config = dir.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        text.replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3"),
    )
    .expect("write");
    Setup {
        lab,
        proxy,
        sieve_port,
        cli_config,
        _dir: dir,
    }
}

fn cli(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(args)
        .arg("--config")
        .arg(&s.cli_config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("mailshift runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// sieve-connect (a client nobody here wrote) against mailshift, over
/// STARTTLS verified with the lab CA, password on fd 3.
fn sieve_connect(s: &Setup, user: &str, password: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{password}\n")).expect("write");
    let script = format!(
        "exec 3<{} && exec sieve-connect --server 127.0.0.1 --port {} --user {user} --passwordfd 3 \
         --tlscafile {} --tlshostname localhost --authmech PLAIN \"$@\"",
        pw.display(),
        s.sieve_port,
        s.lab.certs.ca_pem.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("sieve-connect runs");
    (out.status.success(), text(&out))
}

/// Puts `body` as `name` through mailshift with sieve-connect, optionally
/// activating it.
fn put(s: &Setup, user: &str, password: &str, name: &str, body: &str, activate: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join(format!("{name}.sieve"));
    std::fs::write(&local, body).expect("write");
    let local = local.display().to_string();
    let (ok, out) = sieve_connect(
        s,
        user,
        password,
        &["--upload", "--localsieve", &local, "--remotesieve", name],
    );
    assert!(ok, "upload {name}: {out}\n{}", s.proxy.log_tail());
    if activate {
        let (ok, out) = sieve_connect(s, user, password, &["--activate", "--remotesieve", name]);
        assert!(ok, "activate {name}: {out}\n{}", s.proxy.log_tail());
    }
}

/// The script as the store keeps it (Pigeonhole's file storage).
fn on_store(home: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(home.join("sieve").join(format!("{name}.sieve"))).ok()
}

/// The active script's name on a store (`~/.dovecot.sieve` links to it).
fn active_on_store(home: &Path) -> Option<String> {
    let target = std::fs::read_link(home.join(".dovecot.sieve")).ok()?;
    Some(
        target
            .file_name()?
            .to_string_lossy()
            .trim_end_matches(".sieve")
            .to_string(),
    )
}

#[test]
fn scripts_put_through_mailshift_land_on_the_users_store() {
    let s = setup();
    put(&s, "alice", "alicepw", "filters", FILTER, true);
    let alice_old = s.lab.old.mail_home("alice");
    assert_eq!(on_store(&alice_old, "filters").as_deref(), Some(FILTER));
    assert_eq!(active_on_store(&alice_old).as_deref(), Some("filters"));
    assert!(on_store(&s.lab.new.mail_home("alice"), "filters").is_none());

    // bob lives on the new store: his script goes there, and a listing
    // through mailshift is the new store's.
    put(&s, "bob", "bobpw", "bobs", "keep;\r\n", true);
    let bob_new = s.lab.new.mail_home("bob");
    assert_eq!(on_store(&bob_new, "bobs").as_deref(), Some("keep;\r\n"));
    assert!(on_store(&s.lab.old.mail_home("bob"), "bobs").is_none());
    let (ok, out) = sieve_connect(&s, "bob", "bobpw", &["--list"]);
    assert!(
        ok && out.contains("bobs") && !out.contains("filters"),
        "{out}"
    );

    // A wrong password is refused (after the delay), not passed on.
    let (ok, out) = sieve_connect(&s, "alice", "wrong", &["--list"]);
    assert!(!ok, "{out}");
    let log = s.proxy.log();
    assert!(
        log.contains("ManageSieve session start") && log.contains("backend=old"),
        "{log}"
    );
    assert!(log.contains("ManageSieve login failed"), "{log}");
}

#[test]
fn cutover_moves_scripts_the_new_store_files_mail_and_rollback_copies_back() {
    let s = setup();
    put(&s, "alice", "alicepw", "filters", FILTER, true);
    put(&s, "alice", "alicepw", "spare", "keep;\r\n", false);

    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", s.proxy.log_tail());
    assert!(
        t.contains("sieve: 2 copied, 0 unchanged, 0 refused") && !t.contains("not copied"),
        "{t}\nnew store:\n{}",
        support::tail(&s.lab.new.log(), 40)
    );
    let alice_new = s.lab.new.mail_home("alice");
    assert_eq!(on_store(&alice_new, "filters").as_deref(), Some(FILTER));
    assert_eq!(on_store(&alice_new, "spare").as_deref(), Some("keep;\r\n"));
    assert_eq!(active_on_store(&alice_new).as_deref(), Some("filters"));

    // Delivered to the new store: the moved script files it.
    s.lab.new.deliver(
        "alice",
        &message(
            "carol@example.net",
            "alice@example.org",
            "sort-me please",
            "x",
        ),
    );
    let mut c = ImapClient::connect(s.lab.new.imap_port());
    c.login("alice", "alicepw");
    c.ok("SELECT Filtered");
    assert_eq!(c.subjects(), vec!["sort-me please".to_string()]);
    c.ok("LOGOUT");

    let out = cli(&s, &["verify", "--user", "alice"]);
    assert!(out.status.success(), "{}", text(&out));

    // After the move, alice edits her filters through mailshift: they are
    // on the new store now, and a rollback brings them back.
    let wait = Instant::now();
    loop {
        let (ok, out) = sieve_connect(&s, "alice", "alicepw", &["--list"]);
        if ok && out.contains("filters") && on_store(&alice_new, "filters").is_some() {
            break;
        }
        assert!(wait.elapsed() < Duration::from_secs(20), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    put(
        &s,
        "alice",
        "alicepw",
        "vacation",
        "keep;\r\n# away\r\n",
        true,
    );
    assert!(on_store(&alice_new, "vacation").is_some());
    let alice_old = s.lab.old.mail_home("alice");
    assert!(on_store(&alice_old, "vacation").is_none());
    let out = cli(&s, &["rollback", "--user", "alice"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        on_store(&alice_old, "vacation").as_deref(),
        Some("keep;\r\n# away\r\n")
    );
    assert_eq!(active_on_store(&alice_old).as_deref(), Some("vacation"));
}

#[test]
fn a_script_the_new_store_refuses_is_reported() {
    let s = setup();
    put(&s, "alice", "alicepw", "regexy", REGEX, true);
    put(&s, "alice", "alicepw", "fine", "keep;\r\n", false);
    let out = cli(&s, &["migrate", "--user", "alice"]);
    let t = text(&out);
    assert!(t.contains("sieve: 1 copied, 0 unchanged, 1 refused"), "{t}");
    assert!(
        t.contains("sieve script \"regexy\" refused by the new store") && t.contains("regex"),
        "{t}"
    );
    let alice_new = s.lab.new.mail_home("alice");
    assert!(on_store(&alice_new, "regexy").is_none());
    assert!(on_store(&alice_new, "fine").is_some());
    // Not activated in its place: the active one was refused.
    assert_eq!(active_on_store(&alice_new), None);

    let out = cli(&s, &["verify", "--user", "alice"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("missing sieve script: regexy"), "{t}");

    let out = cli(&s, &["migrate", "--user", "alice", "--json"]);
    let t = text(&out);
    assert!(t.contains("\"refused\":[{\"name\":\"regexy\""), "{t}");
}

#[test]
fn bad_input_gets_clear_errors_and_nothing_crashes() {
    let s = setup();
    let port = s.sieve_port;

    // TLS is required ([tls] is set): no mechanism before STARTTLS.
    let mut c = SieveClient::connect(port);
    assert!(
        c.greeting.contains(&"\"SASL\" \"\"".to_string()),
        "{:?}",
        c.greeting
    );
    assert!(
        c.greeting.contains(&"\"STARTTLS\"".to_string()),
        "{:?}",
        c.greeting
    );
    let r = c.login("alice", "alicepw");
    assert!(r.starts_with("NO (ENCRYPT-NEEDED)"), "{r}");

    // Oversized line: NO, and the session goes on.
    c.send_raw(&vec![b'A'; 20_000]);
    let r = c.cmd("").1;
    assert_eq!(r, "NO \"Line too long.\"");
    assert_eq!(c.cmd("NOOP \"still\"").1, "OK (TAG \"still\") \"Done.\"");
    assert_eq!(c.cmd("LISTSCRIPTS").1, "NO \"Authenticate first.\"");
    assert_eq!(c.cmd("FROB").1, "NO \"Unknown command.\"");

    // Oversized literal: BYE before its bytes are read.
    let r = c.cmd("AUTHENTICATE \"PLAIN\" {10000000+}").1;
    assert_eq!(r, "BYE \"Literal too large.\"");
    assert!(c.closed());

    // STARTTLS with a pipelined AUTHENTICATE in the same packet: the
    // injected command never runs; after TLS the listing comes again.
    let injected = format!(
        "STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"{}\"\r\n",
        base64(b"\0alice\0alicepw")
    );
    let script = r#"
import socket, ssl, sys
port, ca, injected = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
while not f.readline().startswith(b"OK"):
    pass
s.sendall(injected.encode())
print("1:", f.readline().decode().strip())
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
tf = t.makefile("rb")
while True:
    l = tf.readline().decode().strip()
    print("tls:", l)
    if l.startswith(("OK", "NO", "BYE")) or not l:
        break
t.sendall(b"NOOP \"after\"\r\n")
print("2:", tf.readline().decode().strip())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(s.lab.certs.ca_pem.display().to_string())
        .arg(&injected)
        .output()
        .expect("python3");
    let t = text(&out);
    assert!(t.contains("1: OK \"Begin TLS negotiation now.\""), "{t}");
    assert!(t.contains("tls: \"SASL\" \"PLAIN\""), "{t}");
    assert!(t.contains("tls: OK \"TLS negotiation successful.\""), "{t}");
    assert!(
        t.contains("2: OK (TAG \"after\") \"Done.\""),
        "injected command ran: {t}"
    );

    // Filter metacharacters in the login: an ordinary failure, over TLS.
    let script = r#"
import socket, ssl, sys, base64
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
while not f.readline().startswith(b"OK"):
    pass
s.sendall(b"STARTTLS\r\n"); f.readline()
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
tf = t.makefile("rb")
while not tf.readline().startswith(b"OK"):
    pass
for login in ["*)(uid=*", "alice)(|(uid=*", "*", "alice\\5c"]:
    ir = base64.b64encode(b"\0" + login.encode() + b"\0alicepw").decode()
    t.sendall(('AUTHENTICATE "PLAIN" "%s"\r\n' % ir).encode())
    print("login:", tf.readline().decode().strip())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(s.lab.certs.ca_pem.display().to_string())
        .output()
        .expect("python3");
    let t = text(&out);
    assert_eq!(
        t.matches("login: NO \"Authentication failed.\"").count(),
        4,
        "{t}\n{}",
        s.proxy.log_tail()
    );

    // Still serving.
    let c = SieveClient::connect(port);
    assert!(c.greeting.last().is_some_and(|l| l.starts_with("OK")));
    assert!(!s.proxy.log().contains("panicked"), "{}", s.proxy.log());
}

#[test]
fn a_store_that_is_down_gets_trylater_and_the_other_store_still_serves() {
    let mut s = setup_with("require_tls = false\n");
    // Plain login allowed here: the capability says so.
    let mut c = SieveClient::connect(s.sieve_port);
    assert!(
        c.greeting.contains(&"\"SASL\" \"PLAIN\"".to_string()),
        "{:?}",
        c.greeting
    );
    assert_eq!(c.login("nobody", "x"), "NO \"Authentication failed.\"");
    s.lab.old.stop();
    let r = c.login("alice", "alicepw");
    assert!(
        r.starts_with("NO (TRYLATER)"),
        "{r}\n{}",
        s.proxy.log_tail()
    );
    // Bob's store is up: logged in, and the relay carries his commands.
    let mut c = SieveClient::connect(s.sieve_port);
    assert_eq!(c.login("bob", "bobpw"), "OK \"Logged in.\"");
    let (lines, ok) = c.cmd("LISTSCRIPTS");
    assert!(ok.starts_with("OK"), "{lines:?} {ok}");
    let (_, ok) = c.cmd("PUTSCRIPT \"plain\" {7+}\r\nkeep;\r\n");
    assert!(ok.starts_with("OK"), "{ok}");
    assert_eq!(
        on_store(&s.lab.new.mail_home("bob"), "plain").as_deref(),
        Some("keep;\r\n")
    );
    assert_eq!(c.cmd("LOGOUT").1.split(' ').next(), Some("OK"));
}
