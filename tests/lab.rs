//! The test lab itself against real servers: if these fail, every other
//! integration test's failure means nothing.
mod support;

use std::process::Command;
use support::{Dovecot, DovecotOpts, ImapClient, Lab, MailFormat, Mailshift, Slapd};

#[test]
fn slapd_serves_lab_users() {
    let ldap = Slapd::start(false);
    ldap.add_user("alice", "alicepw", "old.example.org");
    let out = ldap.search("(uid=alice)", &["mail", "mailHost", "mailUserStatus"]);
    assert!(out.contains("mail: alice@example.org"), "{out}");
    assert!(out.contains("mailHost: old.example.org"), "{out}");
    assert!(out.contains("mailUserStatus: active"), "{out}");

    // The user's own bind works (Dovecot auth_bind, password_check = "bind").
    let who = Command::new("ldapwhoami")
        .args(["-x", "-H", &ldap.url(), "-D", &ldap.user_dn("alice")])
        .args(["-w", "alicepw"])
        .output()
        .expect("ldapwhoami");
    assert!(who.status.success(), "{who:?}");
    let bad = Command::new("ldapwhoami")
        .args(["-x", "-H", &ldap.url(), "-D", &ldap.user_dn("alice")])
        .args(["-w", "wrong"])
        .output()
        .expect("ldapwhoami");
    assert!(!bad.status.success());

    // mailshift's schema: state, lease, from/to are accepted.
    ldap.set_attr("alice", "mailshiftMigrationState", "syncing");
    ldap.set_attr("alice", "mailshiftMigrationLease", "inst-1 1700000000");
    ldap.set_attr("alice", "mailshiftMigrationFrom", "old.example.org");
    ldap.set_attr("alice", "mailshiftMigrationTo", "new.example.org");
    ldap.set_attr("alice", "mailUserStatus", "hold");
    let out = ldap.search("(mailshiftMigrationState=syncing)", &["mailUserStatus"]);
    assert!(out.contains("mailUserStatus: hold"), "{out}");
    // Nobody reads passwords, not even anonymously.
    let anon = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", &ldap.url(), "-b", ldap.base_dn()])
        .args(["(uid=alice)", "userPassword", "uid"])
        .output()
        .expect("ldapsearch");
    let anon = String::from_utf8_lossy(&anon.stdout);
    assert!(
        anon.contains("uid: alice") && !anon.contains("userPassword"),
        "{anon}"
    );
}

#[test]
fn slapd_syncprov_stop_and_start_again() {
    let mut ldap = Slapd::start(true);
    ldap.add_user("carol", "carolpw", "old.example.org");
    ldap.stop();
    assert!(!support::port_open(ldap.port()), "slapd still listening");
    ldap.start_again();
    ldap.set_attr("carol", "mailHost", "new.example.org");
    let out = ldap.search("(uid=carol)", &["mailHost"]);
    assert!(out.contains("mailHost: new.example.org"), "{out}");
    // The syncprov overlay is loaded: a refreshOnly sync search answers.
    let sync = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", &ldap.url(), "-b", ldap.base_dn()])
        .args(["-E", "sync=ro", "(uid=carol)", "uid"])
        .output()
        .expect("ldapsearch");
    assert!(sync.status.success(), "{sync:?}");
    assert!(String::from_utf8_lossy(&sync.stdout).contains("uid: carol"));
}

#[test]
fn lab_stores_serve_their_users() {
    let lab = Lab::start(false);

    let mut old = ImapClient::connect(lab.old.imap_port());
    assert!(old.greeting.contains("STARTTLS"), "{}", old.greeting);
    old.login("alice", "alicepw");
    old.ok("SELECT INBOX");
    let (lines, tagged) = old.cmd("FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]");
    assert!(tagged.contains("OK"), "{tagged}");
    assert!(lines.concat().contains("Subject: only-on-old"), "{lines:?}");
    let list = old.ok("LIST \"\" *").concat();
    assert!(list.contains("\\Sent") && list.contains("\"/\""), "{list}");

    let mut new = ImapClient::connect(lab.new.imap_port());
    new.login("bob", "bobpw");
    new.ok("SELECT INBOX");
    assert_eq!(new.subjects(), ["only-on-new"]);
    let list = new.ok("LIST \"\" *").concat();
    assert!(list.contains("\\Trash") && list.contains("\".\""), "{list}");

    // Each user lives on one store only; the wrong password fails.
    let mut c = ImapClient::connect(lab.old.imap_port());
    let (_, tagged) = c.cmd("LOGIN alice wrong");
    assert!(tagged.contains("NO"), "{tagged}");
    assert!(lab
        .old
        .try_deliver("nosuchuser", b"Subject: x\r\n\r\nx\r\n")
        .is_err());
}

#[test]
fn master_user_logs_in_as_anyone() {
    let lab = Lab::start(false);
    for (store, user, subject) in [
        (&lab.old, "alice", "only-on-old"),
        (&lab.new, "bob", "only-on-new"),
    ] {
        let mut c = ImapClient::connect(store.imap_port());
        c.login(
            &format!("{user}*{}", store.master_user()),
            store.master_password(),
        );
        c.ok("SELECT INBOX");
        assert_eq!(c.subjects(), [subject], "{}", store.name());
        let (_, tagged) =
            ImapClient::connect(store.imap_port()).cmd(&format!("LOGIN {user}*admin nope"));
        assert!(tagged.contains("NO"), "{tagged}");
    }
}

#[test]
fn idle_sees_lmtp_delivery_and_doveadm_works() {
    let lab = Lab::start(false);
    let mut c = ImapClient::connect(lab.new.imap_port());
    c.login("bob", "bobpw");
    c.ok("SELECT INBOX");
    let tag = c.send("IDLE");
    assert!(c.read_line().starts_with('+'));
    let start = std::time::Instant::now();
    lab.new.deliver(
        "bob",
        &support::message("x@example.net", "bob@example.org", "pushed", "body"),
    );
    let line = c.read_line();
    assert_eq!(line, "* 2 EXISTS");
    assert!(
        start.elapsed().as_secs() < 3,
        "IDLE took {:?}",
        start.elapsed()
    );
    c.write_raw(b"DONE\r\n");
    let (_, tagged) = c.read_until_tagged(&tag);
    assert!(tagged.contains("OK"), "{tagged}");

    let out = lab
        .new
        .doveadm(&["mailbox", "status", "-u", "bob", "messages", "INBOX"]);
    assert!(out.contains("messages=2"), "{out}");
    let out = lab
        .old
        .doveadm(&["fetch", "-u", "alice", "hdr.subject", "mailbox", "INBOX"]);
    assert!(out.contains("only-on-old"), "{out}");
}

#[test]
fn dovecot_without_connection_limit() {
    let ldap = Slapd::start(false);
    ldap.add_user("dave", "davepw", "new.example.org");
    let store = Dovecot::start(
        "bench",
        &ldap,
        DovecotOpts {
            separator: '.',
            format: MailFormat::Sdbox,
            max_userip: 0,
            ..DovecotOpts::default()
        },
    );
    // More than Dovecot's default of 10 per user and IP.
    let clients: Vec<ImapClient> = (0..20)
        .map(|_| {
            let mut c = ImapClient::connect(store.imap_port());
            c.login("dave", "davepw");
            c
        })
        .collect();
    assert_eq!(clients.len(), 20);
    assert!(store.conf_path().exists());
}

#[test]
fn mailshift_config_points_at_the_lab() {
    let lab = Lab::start(false);
    let cfg = lab.mailshift_config("[migration]\nmode = \"manual\"");
    assert!(
        cfg.contains(&format!("url = \"{}\"", lab.ldap.url())),
        "{cfg}"
    );
    assert!(cfg.contains(&format!(
        "imap+starttls://127.0.0.1:{}",
        lab.old.imap_port()
    )));
    assert!(cfg.contains(&format!("imaps://127.0.0.1:{}", lab.new.imaps_port())));
    assert!(cfg.contains("listen = \"127.0.0.1:@IMAP_PORT@\""));
    assert!(cfg.trim_end().ends_with("mode = \"manual\""));
    let left = support::placeholders(&cfg);
    assert_eq!(left, ["IMAP_PORT", "IMAPS_PORT", "ADMIN_PORT"]);
    // The old store does offer STARTTLS on the port the config names, with
    // a certificate for 127.0.0.1 from the lab CA.
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", lab.old.imap_port()))
        .args([
            "-starttls",
            "imap",
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ])
        .arg("-CAfile")
        .arg(&lab.certs.ca_pem)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}

#[test]
fn mailshift_starts_against_the_lab() {
    let lab = Lab::start(true);
    let proxy = Mailshift::start(&lab.mailshift_config(""));
    for (user, password, subject) in [
        ("alice", "alicepw", "only-on-old"),
        ("bob", "bobpw", "only-on-new"),
    ] {
        let mut c = ImapClient::connect(proxy.imap_port());
        let (_, tagged) = c.cmd(&format!("LOGIN {user} {password}"));
        assert!(
            tagged.contains("OK"),
            "{tagged}\nmailshift log:\n{}",
            proxy.log_tail()
        );
        c.ok("SELECT INBOX");
        assert_eq!(
            c.subjects(),
            [subject],
            "mailshift log:\n{}",
            proxy.log_tail()
        );
    }
    assert!(proxy.log().contains("session start"), "{}", proxy.log());
}
