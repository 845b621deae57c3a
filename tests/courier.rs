//! Courier-IMAP (a private 5.0, tests/support/courier.rs) as the old store,
//! migrated to Dovecot through the real `mailshift` CLI.
//!
//! Courier is the plainest IMAP server mailshift meets: `INBOX.` prefix with
//! `.`, no SPECIAL-USE, no LIST-EXTENDED, no MULTIAPPEND, LITERAL+ or
//! CONDSTORE, no UIDNEXT in SELECT, and no master user (mailshift logs in with
//! the user's password from `passwords_file`).

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::proxy::OLD_HOST;
use support::{
    corpus, mailbox, Certs, Courier, Dovecot, DovecotOpts, ImapClient, Mailshift, Slapd,
};

struct Setup {
    // Drop order: the stores before the directory.
    courier: Courier,
    dovecot: Dovecot,
    config: std::path::PathBuf,
    /// The same config with `[imap]` on ports left for [`Mailshift::start`].
    proxy_config: String,
    ldap: Slapd,
    _dir: tempfile::TempDir,
}

fn courier_login(s: &Setup) -> ImapClient {
    let mut c = ImapClient::connect(s.courier.imap_port());
    c.login("alice", "alicepw");
    c
}

fn dovecot_login(s: &Setup) -> ImapClient {
    let mut c = ImapClient::connect(s.dovecot.imap_port());
    c.login("alice*admin", "adminpw");
    c
}

/// A corpus folder (`/`-separated) as Courier names it.
fn courier_folder(name: &str) -> String {
    if name == "INBOX" {
        name.to_string()
    } else {
        format!("INBOX.{}", name.replace('/', "."))
    }
}

fn setup(msgs: &[corpus::Msg]) -> Setup {
    let certs = Certs::shared();
    let ldap = Slapd::start(false);
    ldap.add_user("alice", "alicepw", OLD_HOST);
    let courier = Courier::start("old", &[("alice", "alicepw")]);
    let dovecot = Dovecot::start("new", &ldap, DovecotOpts::default());
    let mut c = ImapClient::connect(courier.imap_port());
    c.login("alice", "alicepw");
    for f in corpus::FOLDERS.iter().filter(|f| **f != "INBOX") {
        c.ok(&format!("CREATE \"{}\"", courier_folder(f)));
        c.ok(&format!("SUBSCRIBE \"{}\"", courier_folder(f)));
    }
    for m in msgs {
        let append = |c: &mut ImapClient, flags: &str| {
            c.cmd_sync_literal(
                &format!(
                    "APPEND \"{}\" ({flags}) \"{}\"",
                    courier_folder(m.folder),
                    m.date
                ),
                &m.body,
            )
        };
        let tagged = append(&mut c, m.flags);
        assert!(
            tagged.contains(" OK"),
            "APPEND to Courier: {tagged} ({})",
            m.flags
        );
    }
    c.ok("LOGOUT");
    let dir = tempfile::tempdir().expect("tempdir");
    let passwords = dir.path().join("courier-passwords");
    std::fs::write(&passwords, "# users of the Courier store\nalice:alicepw\n").expect("write");
    let text = format!(
            "[directory]\nkind = \"ldap\"\nurl = \"{}\"\nbind_dn = \"{}\"\nbind_password = \"{}\"\n\
             base_dn = \"ou=people,dc=example,dc=org\"\n\
             user_filter = \"(&(objectClass=inetOrgPerson)(uid=%u))\"\npassword_check = \"backend\"\n\
             [backends.old]\nmailhost = [\"old.example.org\"]\nimap = \"imap://127.0.0.1:{}\"\n\
             passwords_file = \"{}\"\n\
             [backends.new]\nmailhost = [\"new.example.org\"]\nimap = \"imaps://127.0.0.1:{}\"\n\
             ca_file = \"{}\"\nmaster_user = \"admin\"\nmaster_password = \"adminpw\"\n\
             [migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\n",
            ldap.url(),
            ldap.admin_dn(),
            ldap.admin_password(),
            courier.imap_port(),
            passwords.display(),
            dovecot.imaps_port(),
            certs.ca_pem.display(),
            dir.path().join("state").display(),
        );
    let config = dir.path().join("mailshift.toml");
    std::fs::write(&config, &text).expect("write config");
    let proxy_config = format!(
        "{text}lease = \"3s\"\nhold_wait = \"20s\"\n\
         [imap]\nlisten = \"127.0.0.1:@IMAP_PORT@\"\n[admin]\nlisten = \"127.0.0.1:@ADMIN_PORT@\"\n"
    );
    Setup {
        courier,
        dovecot,
        config,
        proxy_config,
        ldap,
        _dir: dir,
    }
}

fn mailshift(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run mailshift")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Courier → Dovecot, killed with -9 in the middle of the first pass and run
/// again: every folder (Courier's `INBOX.` names arrive without the prefix),
/// every message's bytes, flags and keywords, and INTERNALDATE equal;
/// `verify` exits 0; another pass copies nothing.
#[test]
fn courier_to_dovecot_exactly() {
    let mut msgs = corpus::generate(130, 21);
    msgs.extend(corpus::generate_inbox(400, 22));
    let s = setup(&msgs);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["migrate", "--user", "alice", "--json", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill as soon as the first messages are on the new store.
    for _ in 0..2000 {
        let landed = std::panic::catch_unwind(|| {
            let mut c = dovecot_login(&s);
            mailbox::count(&mut c, "INBOX")
        });
        if matches!(landed, Ok(n) if n > 0) || child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();

    let first = mailshift(&["migrate", "--user", "alice", "--json"], &s.config);
    assert!(first.status.success(), "{}", text(&first));
    let v = mailshift(&["verify", "--user", "alice"], &s.config);
    assert!(v.status.success(), "{}", text(&v));

    let mut total = 0;
    for f in corpus::FOLDERS {
        let (old, new) = (courier_folder(f), f.to_string());
        let x = mailbox::contents(&mut courier_login(&s), &old);
        let y = mailbox::contents(&mut dovecot_login(&s), &new);
        assert_eq!(x.len(), y.len(), "{old} → {new}: count");
        for (m, n) in x.iter().zip(&y) {
            assert_eq!(m.0, n.0, "{old} → {new}: bytes differ");
            assert_eq!(m.1, n.1, "{old} → {new}: flags differ");
            assert_eq!(m.2, n.2, "{old} → {new}: INTERNALDATE differs");
        }
        total += x.len();
    }
    assert_eq!(total, msgs.len(), "Courier kept every message loaded");
    let again = mailshift(&["migrate", "--user", "alice", "--json"], &s.config);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(mailbox::copied(&again.stdout), 0, "{}", text(&again));
    // Courier's folders arrived subscribed, under their own names.
    let lsub = dovecot_login(&s).ok("LSUB \"\" \"*\"");
    for f in ["Projects/2024/Q1", "Lists/rust-users"] {
        assert!(
            lsub.iter()
                .any(|l| l.ends_with(&format!("\"{f}\"")) || l.ends_with(f)),
            "{f} not subscribed: {lsub:?}"
        );
    }
}

/// Without a password for the user (no master user, not in
/// `passwords_file`), the pass fails for that user, saying what to do.
#[test]
fn courier_user_without_password_is_a_clear_failure() {
    let s = setup(&[]);
    std::fs::write(s._dir.path().join("courier-passwords"), "bob:bobpw\n").expect("write");
    let out = mailshift(&["migrate", "--user", "alice"], &s.config);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("passwords_file"), "{t}");
}

/// The proxy in front of Courier, in lazy mode, with no password file: the
/// user logs in through mailshift (Courier checks the password), is migrated
/// with the password of that login, and the next login reaches Dovecot with
/// every message.
#[test]
fn lazy_mode_moves_a_courier_user_with_the_password_of_their_login() {
    let msgs = corpus::generate(60, 23);
    let s = setup(&msgs);
    std::fs::write(s._dir.path().join("courier-passwords"), "").expect("write");
    let proxy = Mailshift::start(&s.proxy_config.replace(
        "[migration]\n",
        "[migration]\nmode = \"lazy\"\nusers_filter = \"(uid=alice)\"\n",
    ));
    let mut c = ImapClient::connect(proxy.imap_port());
    let (_, tagged) = c.cmd("LOGIN alice wrong");
    assert!(tagged.contains(" NO"), "{tagged}");
    c.login("alice", "alicepw");
    let ns = c.ok("NAMESPACE");
    assert!(
        ns.iter().any(|l| l.contains("\"INBOX.\"")),
        "not Courier: {ns:?}"
    );
    c.ok("SELECT INBOX");
    let until = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let host = s
            .ldap
            .search("(uid=alice)", &["mailHost"])
            .lines()
            .find_map(|l| l.strip_prefix("mailHost: ").map(str::to_string))
            .unwrap_or_default();
        if host == support::proxy::NEW_HOST {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "alice not moved (mailHost {host})\n{}",
            proxy.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("alice", "alicepw");
    let ns = c.ok("NAMESPACE");
    assert!(
        !ns.iter().any(|l| l.contains("\"INBOX.\"")),
        "still Courier: {ns:?}"
    );
    let mut total = 0;
    for f in corpus::FOLDERS {
        total += mailbox::count(&mut c, f);
    }
    assert_eq!(total, msgs.len(), "{}", proxy.log_tail());
}

/// Each message of alice's maildrop on a POP3 server, in the server's
/// order: its UIDL and its Subject (`TOP n 0`), logged in by USER/PASS. It
/// asks for `UTF8` first (RFC 6856; a store without it says `-ERR`, which is
/// fine), so that Courier shows raw UTF-8 headers rather than a notice.
fn maildrop(port: u16) -> Vec<(String, String)> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to POP3");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    let mut next = |r: &mut BufReader<&std::net::TcpStream>| {
        line.clear();
        r.read_line(&mut line).expect("read POP3");
        line.trim_end().to_string()
    };
    let mut lines = |r: &mut BufReader<&std::net::TcpStream>| {
        let mut out = Vec::new();
        loop {
            let l = next(r);
            if l == "." {
                return out;
            }
            out.push(l);
        }
    };
    let cmd = |r: &mut BufReader<&std::net::TcpStream>, c: &str| {
        (&s).write_all(format!("{c}\r\n").as_bytes())
            .expect("write POP3");
        let mut line = String::new();
        r.read_line(&mut line).expect("read POP3");
        line
    };
    let mut greeting = String::new();
    r.read_line(&mut greeting).expect("greeting");
    assert!(greeting.starts_with("+OK"), "{greeting}");
    for c in ["USER alice", "PASS alicepw"] {
        let reply = cmd(&mut r, c);
        assert!(reply.starts_with("+OK"), "{c}: {reply}");
    }
    cmd(&mut r, "UTF8");
    assert!(cmd(&mut r, "UIDL").starts_with("+OK"));
    let uidls = lines(&mut r);
    let mut out = Vec::new();
    for l in uidls {
        let (n, uidl) = l.split_once(' ').expect("n uidl");
        assert!(cmd(&mut r, &format!("TOP {n} 0")).starts_with("+OK"));
        let subject = lines(&mut r)
            .into_iter()
            .find(|h| h.starts_with("Subject:"))
            .unwrap_or_default();
        out.push((uidl.to_string(), subject));
    }
    let _ = (&s).write_all(b"QUIT\r\n");
    out
}

/// mailshift with `config` and `[pop3]` on a free port, once that listens.
fn pop3_proxy(config: &str) -> (Mailshift, u16) {
    let port = support::free_port();
    let proxy = Mailshift::start(&format!("{config}[pop3]\nlisten = \"127.0.0.1:{port}\"\n"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !support::port_open(port) {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.log_tail());
        std::thread::sleep(Duration::from_millis(25));
    }
    (proxy, port)
}

/// POP3 clients of a Courier store keep their UIDLs across the move.
/// Courier's UIDLs are made from Maildir file names, which no format
/// computes: the passes read them over Courier's own POP3 (USER/PASS, as
/// Debian's Courier offers no SASL) and, after `migrate --cutover`,
/// mailshift's POP3 front end answers them from Dovecot. Mail that arrives
/// after the move gets a UIDL no old message had.
#[test]
fn pop3_clients_keep_courier_uidls_across_the_move() {
    let msgs = corpus::generate_inbox(40, 31);
    let s = setup(&msgs);
    let before = maildrop(s.courier.pop3_port());
    assert_eq!(before.len(), msgs.len());
    let with_pop3 = |text: &str| {
        text.replacen(
            "[backends.old]\n",
            &format!(
                "[backends.old]\npop3 = \"pop3://127.0.0.1:{}\"\n",
                s.courier.pop3_port()
            ),
            1,
        )
        .replacen(
            "[backends.new]\n",
            &format!(
                "[backends.new]\npop3 = \"pop3s://127.0.0.1:{}\"\n",
                s.dovecot.pop3s_port()
            ),
            1,
        )
    };
    // Through mailshift before the move: the session goes to Courier, whose
    // POP3 takes USER/PASS only.
    {
        let (proxy, port) = pop3_proxy(&with_pop3(&s.proxy_config));
        assert_eq!(maildrop(port), before, "{}", proxy.log_tail());
    }
    let config = s._dir.path().join("pop3.toml");
    let cli = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(&config, with_pop3(&cli)).expect("write config");

    let out = mailshift(&["migrate", "--user", "alice", "--cutover"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("POP3 UIDLs: 40 of 40 kept"),
        "{}",
        text(&out)
    );
    s.dovecot.deliver(
        "alice",
        &support::message("carol@example.net", "alice@example.org", "after", "hi"),
    );

    let (proxy, pop3_port) = pop3_proxy(&with_pop3(&s.proxy_config));
    let after = maildrop(pop3_port);
    assert_eq!(after.len(), msgs.len() + 1, "{}", proxy.log_tail());
    // Each old message under the UIDL Courier gave it. Courier's POP3 lists
    // by its own arrival order, which may differ from its IMAP UIDs; the
    // new store lists in the UID order the engine kept, so only where the
    // two orders differ do message numbers move (clients key on UIDLs).
    let (mut old, mut kept) = (before.clone(), after[..msgs.len()].to_vec());
    old.sort();
    kept.sort();
    assert_eq!(kept, old, "{}", proxy.log_tail());
    assert_eq!(after[msgs.len()].1, "Subject: after", "{after:?}");
    let new = &after[msgs.len()].0;
    assert!(
        !before.iter().any(|(u, _)| u == new),
        "{new} is an old UIDL"
    );
}
