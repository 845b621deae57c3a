//! Migrations run by `mailshift serve` itself: the post-cutover sweep, lazy
//! mode, scheduled mode with two instances sharing the work through LDAP.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::proxy::{NEW_HOST, OLD_HOST};
use support::{corpus, message, ImapClient, Lab, Mailshift};

fn migration_toml(lab_state: &std::path::Path, extra: &str) -> String {
    format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nsweep_interval = \"1s\"\nlease = \"3s\"\n{extra}",
        lab_state.display()
    )
}

fn attr(lab: &Lab, user: &str, name: &str) -> String {
    lab.ldap
        .search(&format!("(uid={user})"), &[name])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
        .to_string()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn subjects(port: u16, user: &str) -> Vec<String> {
    let mut c = ImapClient::connect(port);
    c.login(&format!("{user}*admin"), "adminpw");
    c.ok("EXAMINE INBOX");
    let s = c.subjects();
    c.ok("LOGOUT");
    s
}

fn cli_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        text.replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3"),
    )
    .expect("write");
    path
}

/// Mail delivered straight to the old store after cutover (not through
/// mailshift) is moved to the new INBOX by the sweep, once.
#[test]
fn sweep_moves_late_mail_from_the_old_inbox() {
    let lab = Lab::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let text = lab.mailshift_config(&migration_toml(&dir.path().join("state"), ""));
    let proxy = Mailshift::start(&text);
    let cfg = cli_config(dir.path(), &text);
    let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["migrate", "--user", "alice", "--cutover", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(attr(&lab, "alice", "mailHost"), NEW_HOST);
    lab.old.deliver(
        "alice",
        &message(
            "late@example.net",
            "alice@example.org",
            "late-for-the-old-store",
            "hi",
        ),
    );
    wait_for("the sweep", 20, || {
        subjects(lab.new.imap_port(), "alice").contains(&"late-for-the-old-store".to_string())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let on_new = subjects(lab.new.imap_port(), "alice");
    assert_eq!(
        on_new
            .iter()
            .filter(|s| *s == "late-for-the-old-store")
            .count(),
        1,
        "{on_new:?}"
    );
    assert!(
        !subjects(lab.old.imap_port(), "alice").contains(&"late-for-the-old-store".to_string()),
        "not removed from the old store"
    );
    assert!(proxy.log().contains("swept mail"), "{}", proxy.log_tail());
}

/// Lazy mode: a user of the migrating set logs in, keeps working, and is moved
/// with no admin action; a user outside the set is not touched.
#[test]
fn lazy_mode_moves_the_user_who_logs_in() {
    let lab = Lab::start(true);
    lab.ldap.add_user("carol", "carolpw", OLD_HOST);
    corpus::load(
        lab.old.imap_port(),
        "alice",
        "admin",
        "adminpw",
        &corpus::generate_inbox(100, 21),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let text = lab.mailshift_config(&migration_toml(
        &dir.path().join("state"),
        "mode = \"lazy\"\nusers_filter = \"(uid=alice)\"\n",
    ));
    let proxy = Mailshift::start(&text);
    for user in ["alice", "carol"] {
        let mut c = ImapClient::connect(proxy.imap_port());
        c.login(user, &format!("{user}pw"));
        c.ok("SELECT INBOX");
    }
    wait_for("alice's lazy migration", 60, || {
        attr(&lab, "alice", "mailHost") == NEW_HOST
    });
    assert_eq!(attr(&lab, "alice", "mailshiftMigrationState"), "done");
    assert_eq!(
        subjects(lab.new.imap_port(), "alice").len(),
        subjects(lab.old.imap_port(), "alice").len()
    );
    assert_eq!(attr(&lab, "carol", "mailHost"), OLD_HOST);
    assert_eq!(attr(&lab, "carol", "mailshiftMigrationState"), "");
}

/// Scheduled mode with two instances on one LDAP: every user migrated exactly
/// once; the first instance is killed mid-way and the second takes over its
/// lease once it expires.
#[test]
fn scheduled_mode_two_instances_take_over_each_others_work() {
    let lab = Lab::start(true);
    let users = ["alice", "carol", "dave"];
    for u in &users[1..] {
        lab.ldap.add_user(u, &format!("{u}pw"), OLD_HOST);
    }
    for (i, u) in users.iter().enumerate() {
        corpus::load(
            lab.old.imap_port(),
            u,
            "admin",
            "adminpw",
            &corpus::generate_inbox(300, 30 + i as u64),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |id: &str| {
        lab.mailshift_config(&migration_toml(
            &dir.path().join(format!("state-{id}")),
            &format!(
                "mode = \"scheduled\"\nusers_filter = \"(|(uid=alice)(uid=carol)(uid=dave))\"\n\
                 instance_id = \"{id}\"\nconcurrency = 1\nmax_bytes_per_second = 2000000\n"
            ),
        ))
    };
    let mut a = Mailshift::start(&config("A"));
    // Kill A while it holds a lease.
    wait_for("instance A to claim a user", 30, || {
        users
            .iter()
            .any(|u| attr(&lab, u, "mailshiftMigrationLease").starts_with("A "))
    });
    a.stop();
    let b = Mailshift::start(&config("B"));
    wait_for("every user migrated", 120, || {
        users
            .iter()
            .all(|u| attr(&lab, u, "mailshiftMigrationState") == "done")
    });
    for u in users {
        assert_eq!(attr(&lab, u, "mailHost"), NEW_HOST, "{u}");
        assert_eq!(attr(&lab, u, "mailUserStatus"), "active", "{u}");
        let old = subjects(lab.old.imap_port(), u);
        let new = subjects(lab.new.imap_port(), u);
        assert_eq!(new.len(), old.len(), "{u}: duplicates or losses");
    }
    assert!(
        b.log().contains("migrated and cut over"),
        "{}",
        b.log_tail()
    );
}

/// A sweep by an instance whose sync state predates the cutover (another
/// instance made the final pass): mail that reached the old INBOX before the
/// cutover is on the new store already and is recognised, not copied again;
/// mail that arrived after it is moved once.
#[test]
fn a_sweep_with_state_older_than_the_cutover_doubles_nothing() {
    let lab = Lab::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale-state");
    let text = lab.mailshift_config(&migration_toml(&stale, ""));
    let cfg = cli_config(dir.path(), &text);
    let run = |cfg: &std::path::Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
            .args(args)
            .arg("--config")
            .arg(cfg)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mail = |subject: &str| message("x@example.net", "alice@example.org", subject, "hi");
    let append_old = |folder: &str, subject: &str| {
        let mut c = ImapClient::connect(lab.old.imap_port());
        c.login("alice*admin", "adminpw");
        let _ = c.cmd(&format!("CREATE {folder}"));
        let tag = c.send_literal(&format!("APPEND {folder} ()"), &mail(subject));
        let (_, done) = c.read_until_tagged(&tag);
        assert!(done.contains(" OK"), "{done}");
        c.ok("LOGOUT");
    };
    append_old("Projects", "in-projects-from-the-start");
    run(&cfg, &["migrate", "--user", "alice"]);
    lab.old.deliver("alice", &mail("between-the-passes"));
    // The cutover by another instance, with a state directory of its own.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = lab.mailshift_config(&migration_toml(&other_dir.path().join("state"), ""));
    let other_cfg = cli_config(other_dir.path(), &other);
    run(&other_cfg, &["migrate", "--user", "alice", "--cutover"]);
    assert_eq!(attr(&lab, "alice", "mailHost"), NEW_HOST);
    lab.old.deliver("alice", &mail("after-the-cutover"));
    // A session that was not closed in time appends to another folder.
    append_old("Projects", "late-in-projects");

    // The instance with the stale state sweeps.
    let proxy = Mailshift::start(&text);
    wait_for("the sweep", 30, || {
        subjects(lab.new.imap_port(), "alice").contains(&"after-the-cutover".to_string())
    });
    std::thread::sleep(Duration::from_millis(2500));
    let on_new = subjects(lab.new.imap_port(), "alice");
    for s in ["between-the-passes", "after-the-cutover"] {
        assert_eq!(
            on_new.iter().filter(|x| *x == s).count(),
            1,
            "{s} on the new store: {on_new:?}\n{}",
            proxy.log_tail()
        );
    }
    let on_old = subjects(lab.old.imap_port(), "alice");
    assert!(
        !on_old.contains(&"after-the-cutover".to_string()),
        "not removed from the old store: {on_old:?}"
    );
    let projects = |port: u16| {
        let mut c = ImapClient::connect(port);
        c.login("alice*admin", "adminpw");
        c.ok("EXAMINE Projects");
        let s = c.subjects();
        c.ok("LOGOUT");
        s
    };
    wait_for("the folder sweep", 30, || {
        projects(lab.new.imap_port()).contains(&"late-in-projects".to_string())
    });
    let on_new = projects(lab.new.imap_port());
    for s in ["in-projects-from-the-start", "late-in-projects"] {
        assert_eq!(
            on_new.iter().filter(|x| *x == s).count(),
            1,
            "{s}: {on_new:?}"
        );
    }
    assert!(!projects(lab.old.imap_port()).contains(&"late-in-projects".to_string()));
}
