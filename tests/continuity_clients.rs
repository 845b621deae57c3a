//! Real clients through mailshift across `migrate --cutover`: the
//! translating relay keeps their UIDVALIDITY, UIDs and MODSEQs (issue 10).
//! mbsync and offlineimap sync before and after the cutover without a
//! UIDVALIDITY complaint or a second download; imaplib finds every old UID
//! on its message and acts on the right ones; a second instance presents the
//! same; bad input gets a clean answer. Real slapd, two Dovecot stores (the
//! new one with METADATA), mailshift.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{corpus, imaptest, message, ImapClient, Lab, Mailshift};

struct Setup {
    lab: Lab,
    proxy: Mailshift,
    text: String,
    cli_config: PathBuf,
    dir: tempfile::TempDir,
}

/// The lab with alice on the old store: `messages` in INBOX (a few
/// expunged, so old UIDs have gaps) and three in Kept.
fn setup(messages: usize) -> Setup {
    let lab = Lab::start_with_metadata(true, true);
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"20s\"\ninstance_id = \"test-clients\"\n",
        dir.path().join("state").display(),
    );
    let text = lab.mailshift_config(&migration);
    let proxy = Mailshift::start(&text);
    let cli_config = dir.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        text.replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3"),
    )
    .expect("write");
    corpus::load(
        lab.old.imap_port(),
        "alice",
        "admin",
        "adminpw",
        &corpus::generate_inbox(messages, 41),
    );
    let mut c = ImapClient::connect(lab.old.imap_port());
    c.login("alice*admin", "adminpw");
    let _ = c.cmd("CREATE Kept");
    for i in 0..3 {
        let m = message(
            "a@example.net",
            "alice@example.org",
            &format!("archived {i}"),
            "old",
        );
        let tag = c.send_literal("APPEND Kept", &m);
        c.read_until_tagged(&tag);
    }
    c.ok("SELECT INBOX");
    c.ok("UID STORE 2,5,6 +FLAGS.SILENT (\\Deleted)");
    c.ok("UID EXPUNGE 2,5,6");
    c.ok("LOGOUT");
    Setup {
        lab,
        proxy,
        text,
        cli_config,
        dir,
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `migrate --cutover` for alice, then a message delivered to the new store.
fn cutover_and_deliver(s: &Setup) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(["migrate", "--user", "alice", "--cutover", "--config"])
        .arg(&s.cli_config)
        .stdin(Stdio::null())
        .output()
        .expect("mailshift runs");
    assert!(out.status.success(), "{}", text(&out));
    s.lab.new.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "after-cutover", "new"),
    );
    // The session after this one must be routed to the new store and
    // translated: wait until a login through the proxy sees the new mail.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut c = ImapClient::connect(s.proxy.imap_port());
        c.login("alice", "alicepw");
        c.ok("EXAMINE INBOX");
        let lines = c.ok("SEARCH SUBJECT after-cutover");
        c.ok("LOGOUT");
        if lines
            .iter()
            .any(|l| l.starts_with("* SEARCH ") && l.len() > 9)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "never routed to the new store"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn python(port: u16, phase: &str, state: &Path) -> Output {
    let script = support::repo_dir().join("tests/data/continuity_imaplib.py");
    Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(phase)
        .arg(state)
        .output()
        .expect("python3 runs (install-deps.sh installs it)")
}

#[test]
fn imaplib_keeps_uids_and_acts_on_the_right_messages_and_a_second_instance_agrees() {
    let s = setup(24);
    let state = s.dir.path().join("before.json");
    let out = python(s.proxy.imap_port(), "before", &state);
    assert!(out.status.success(), "{}", text(&out));
    cutover_and_deliver(&s);
    // A second instance, started now, before the checks change anything.
    let second = Mailshift::start(&s.text);
    let dump = |port| {
        let out = python(port, "dump", &state);
        assert!(out.status.success(), "{}", text(&out));
        out.stdout
    };
    assert_eq!(dump(s.proxy.imap_port()), dump(second.imap_port()));
    let out = python(s.proxy.imap_port(), "after", &state);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
}

#[test]
fn bad_input_gets_the_stores_answer_or_a_clean_bad() {
    let s = setup(12);
    cutover_and_deliver(&s);
    let mut c = ImapClient::connect(s.proxy.imap_port());
    c.login("alice", "alicepw");
    let caps = c.ok("CAPABILITY").join(" ");
    assert!(
        !caps.contains("OBJECTID") && caps.contains("UIDPLUS"),
        "{caps}"
    );
    c.ok("SELECT INBOX");
    // UIDs outside the map: nothing, as the store would say.
    let lines = c.ok("UID FETCH 2,5:6,100000:200000 (UID FLAGS)");
    assert!(lines.iter().all(|l| !l.contains("FETCH")), "{lines:?}");
    let all = c.ok("UID SEARCH ALL");
    let count = all
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH"))
        .map_or(0, |r| r.split_whitespace().count());
    assert!(count > 9, "{all:?}");
    let lines = c.ok("UID FETCH 1:4294967295 (UID)");
    assert_eq!(lines.iter().filter(|l| l.contains("FETCH")).count(), count);
    // A long set: every member translated, one answer.
    let set: Vec<String> = (1..2_000).map(|u| (u * 3).to_string()).collect();
    let lines = c.ok(&format!("UID FETCH {} (UID)", set.join(",")));
    let uids: BTreeSet<u32> = lines
        .iter()
        .filter_map(|l| l.split("UID ").nth(1))
        .filter_map(|r| r.trim_end_matches(')').parse().ok())
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|u| u % 3 == 0),
        "{uids:?}"
    );
    // A set longer than the store takes: the store's own BAD, as straight to it.
    let huge: Vec<String> = (1..30_000).map(|u| (u * 3).to_string()).collect();
    let huge = format!("UID FETCH {} (UID)", huge.join(","));
    let status = |c: &mut ImapClient| {
        let (_, tagged) = c.cmd(&huge);
        tagged.split(' ').nth(1).unwrap_or("").to_string()
    };
    let mut direct = ImapClient::connect(s.lab.new.imap_port());
    direct.login("alice*admin", "adminpw");
    direct.ok("SELECT INBOX");
    assert_eq!(status(&mut c), status(&mut direct));
    for bad in [
        "UID FETCH 1:x FLAGS",
        "UID FROB 1",
        "UID SEARCH UID",
        "UID STORE 0 +FLAGS (\\Seen)",
    ] {
        let (_, tagged) = c.cmd(bad);
        assert!(tagged.split(' ').nth(1) == Some("BAD"), "{bad}: {tagged}");
    }
    let (_, tagged) = c.cmd("SELECT mailshift-uidmap");
    assert!(tagged.contains(" NO "), "{tagged}");
    c.ok("NOOP");
    c.ok("LOGOUT");
}

/// mbsync's config for alice through the proxy into `dir`.
fn mbsync_config(dir: &Path, port: u16) -> PathBuf {
    let conf = dir.join("mbsyncrc");
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail).expect("mkdir");
    std::fs::write(
        &conf,
        format!(
            "IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser alice\nPass alicepw\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount a\n\n\
             MaildirStore local\nPath {m}/\nInbox {m}/INBOX\nSubFolders Verbatim\n\n\
             Channel c\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSyncState *\nExpunge None\n",
            m = mail.display()
        ),
    )
    .expect("write");
    conf
}

/// Every file under `dir`, by path, with its contents.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// The message files of a maildir tree (in cur/ or new/), by contents.
fn mail_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|(p, _)| {
            p.parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "cur" || n == "new")
        })
        .collect()
}

/// After a second sync: every file of the first still there unchanged, one
/// more holding the mail delivered after the cutover, no content twice.
fn assert_downloaded_once(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let name_of = |p: &PathBuf| {
        // mbsync/offlineimap may rename a file (flags in the name): compare by content.
        p.parent().map(|d| d.to_path_buf())
    };
    let before_contents: BTreeSet<(Option<PathBuf>, &Vec<u8>)> =
        before.iter().map(|(p, c)| (name_of(p), c)).collect();
    let after_contents: Vec<(Option<PathBuf>, &Vec<u8>)> =
        after.iter().map(|(p, c)| (name_of(p), c)).collect();
    let unique: BTreeSet<&Vec<u8>> = after.values().collect();
    assert_eq!(unique.len(), after.len(), "a message downloaded twice");
    assert_eq!(after.len(), before.len() + 1, "{:?}", after.keys());
    let new: Vec<_> = after_contents
        .iter()
        .filter(|(_, c)| !before.values().any(|b| b == *c))
        .collect();
    assert_eq!(new.len(), 1);
    assert!(String::from_utf8_lossy(new[0].1).contains("after-cutover"));
    for (_, c) in &before_contents {
        assert!(after.values().any(|a| a == *c), "a message lost");
    }
}

#[test]
fn mbsync_syncs_across_the_cutover_without_downloading_again() {
    let s = setup(20);
    let conf = mbsync_config(s.dir.path(), s.proxy.imap_port());
    let run = || {
        Command::new("mbsync")
            .arg("-c")
            .arg(&conf)
            .arg("-a")
            .output()
            .expect("mbsync runs (Debian isync)")
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let mail = s.dir.path().join("mail");
    let before = mail_files(&mail);
    // 20 generated and the lab's own, 3 expunged; 3 in Kept.
    assert_eq!(before.len(), 18 + 3, "{:?}", before.keys());
    cutover_and_deliver(&s);
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(!all.to_ascii_uppercase().contains("UIDVALIDITY"), "{all}");
    assert_downloaded_once(&before, &mail_files(&mail));
}

#[test]
fn offlineimap_syncs_across_the_cutover_without_downloading_again() {
    let s = setup(20);
    let dir = s.dir.path();
    let conf = dir.join("offlineimaprc");
    std::fs::write(
        &conf,
        format!(
            "[general]\naccounts = a\nmetadata = {d}/meta\n\n[Account a]\nlocalrepository = L\nremoterepository = R\n\n\
             [Repository L]\ntype = Maildir\nlocalfolders = {d}/oimap\n\n\
             [Repository R]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {p}\nremoteuser = alice\nremotepass = alicepw\n\
             ssl = no\nstarttls = no\n",
            d = dir.display(),
            p = s.proxy.imap_port()
        ),
    )
    .expect("write");
    std::fs::create_dir_all(dir.join("oimap")).expect("mkdir");
    let run = || {
        Command::new("offlineimap")
            .arg("-c")
            .arg(&conf)
            .args(["-o", "-u", "basic"])
            .output()
            .expect("offlineimap runs (Debian offlineimap3)")
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let mail = dir.join("oimap");
    let before = mail_files(&mail);
    // 20 generated and the lab's own, 3 expunged; 3 in Kept.
    assert_eq!(before.len(), 18 + 3, "{:?}", before.keys());
    cutover_and_deliver(&s);
    let out = run();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.to_ascii_uppercase().contains("UIDVALIDITY"), "{all}");
    assert!(!all.contains("ERROR"), "{all}");
    assert_downloaded_once(&before, &mail_files(&mail));
}

/// Dovecot's ImapTest scripted suite for a migrated user, through the
/// translating relay and straight to the new store: the same tests pass and
/// the same fail. The suite runs in `Kept`, a folder mailshift moved: its
/// first group deletes and recreates it, so the rest also checks that a folder
/// recreated after the cutover is relayed as the store has it (its own
/// UIDVALIDITY, no old UIDs laid over it), while every command still goes
/// through the translating session's parser. ImapTest is built from source
/// (README, Cyrus section), so the default suite skips it.
#[test]
#[ignore = "needs ImapTest: IMAPTEST=… IMAPTEST_TESTS=… cargo test --test continuity_clients imaptest -- --ignored"]
fn imaptest_scripted_suite_for_a_migrated_user_same_as_the_new_store() {
    let s = setup(40);
    cutover_and_deliver(&s);
    let (through, through_summary) =
        imaptest::scripted(s.proxy.imap_port(), "alice", "alicepw", "Kept");
    let (direct, direct_summary) =
        imaptest::scripted(s.lab.new.imap_port(), "alice", "alicepw", "Kept");
    eprintln!("through: {through_summary}\ndirect:  {direct_summary}\nfailed direct: {direct:#?}");
    assert!(
        direct_summary.contains("test groups") && through_summary.contains("test groups"),
        "ImapTest did not run: {direct_summary} / {through_summary}"
    );
    let (direct, through, not_run) = imaptest::ran_on_both(&direct, &through);
    assert!(
        not_run.len() < 10,
        "too many groups did not start; the comparison would say little: {not_run:?}"
    );
    assert_eq!(
        through,
        direct,
        "failures through the translating relay differ from the new store's\n{}",
        s.proxy.log_tail()
    );
    // The session was translated (INBOX keeps its old UIDVALIDITY), so the
    // suite did run through the translating relay.
    let mut c = ImapClient::connect(s.proxy.imap_port());
    c.login("alice", "alicepw");
    let through_inbox = c.ok("STATUS INBOX (UIDVALIDITY)");
    c.ok("LOGOUT");
    let mut d = ImapClient::connect(s.lab.new.imap_port());
    d.login("alice", "alicepw");
    let direct_inbox = d.ok("STATUS INBOX (UIDVALIDITY)");
    d.ok("LOGOUT");
    assert_ne!(
        through_inbox.first(),
        direct_inbox.first(),
        "the session was not translated"
    );
}

/// Dovecot's ImapTest in stress mode (random commands from several clients,
/// with its state tracking: a UID that changes message, a flag or MODSEQ
/// going backwards, an unexpected EXPUNGE is an error) on a migrated INBOX,
/// through the translating relay, then straight to the new store: no error
/// through mailshift that the store alone does not give. ImapTest is built
/// from source (README, Cyrus section), so the default suite skips it.
#[test]
#[ignore = "needs ImapTest: IMAPTEST=… cargo test --test continuity_clients imaptest -- --ignored"]
fn imaptest_stress_on_a_migrated_inbox_through_the_translating_relay() {
    let bin = std::env::var("IMAPTEST").expect("IMAPTEST=/path/to/imaptest");
    let s = setup(120);
    // ImapTest tells messages apart by Message-ID: before the move, the
    // corpus's duplicate and missing IDs go (leaving more gaps in old UIDs).
    let mut c = ImapClient::connect(s.lab.old.imap_port());
    c.login("alice*admin", "adminpw");
    c.ok("SELECT INBOX");
    let lines = c.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let mut ids = BTreeSet::new();
    let mut drop = Vec::new();
    for l in lines.iter().filter(|l| l.contains(" FETCH (")) {
        let uid = l
            .split("UID ")
            .nth(1)
            .and_then(|r| r.split([' ', ')']).next())
            .unwrap_or("")
            .to_string();
        let id = l
            .to_ascii_lowercase()
            .split("message-id:")
            .nth(1)
            .map(|r| r.trim().to_string());
        match id {
            Some(id) if !id.is_empty() && ids.insert(id.clone()) => {}
            _ => drop.push(uid),
        }
    }
    if !drop.is_empty() {
        c.ok(&format!(
            "UID STORE {} +FLAGS.SILENT (\\Deleted)",
            drop.join(",")
        ));
        c.ok(&format!("UID EXPUNGE {}", drop.join(",")));
    }
    c.ok("LOGOUT");
    cutover_and_deliver(&s);
    // The messages ImapTest appends: an mbox of a few generated ones.
    let mbox = s.dir.path().join("source.mbox");
    let mut text = String::new();
    // ImapTest tells messages apart by Message-ID: one message per ID (the
    // corpus reuses some on purpose, and leaves a few without).
    let mut seen = BTreeSet::new();
    for (i, m) in corpus::generate(24, 77).iter().enumerate() {
        let body = String::from_utf8_lossy(&m.body).replace("\r\n", "\n");
        let Some(id) = body.lines().find(|l| l.starts_with("Message-ID:")) else {
            continue;
        };
        if !seen.insert(id.to_string()) {
            continue;
        }
        // mbox: a From_ line opens each message; body lines that start
        // with "From " are quoted.
        text.push_str(&format!(
            "From sender{i}@example.net Mon Jan  1 00:00:00 2024\n"
        ));
        for line in body.lines() {
            if line.starts_with("From ") {
                text.push('>');
            }
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
    }
    std::fs::write(&mbox, text).expect("write mbox");
    let run = |port: u16| -> (usize, String) {
        let libs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
        let out = Command::new(&bin)
            .args([
                "host=127.0.0.1",
                &format!("port={port}"),
                "user=alice",
                "pass=alicepw",
                "box=INBOX",
                &format!("mbox={}", mbox.display()),
                "clients=4",
                "msgs=150",
                "secs=20",
                "no_pipelining",
            ])
            .env("LD_LIBRARY_PATH", format!("/usr/lib/dovecot:{libs}"))
            .output()
            .expect("run imaptest");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let errors = all.lines().filter(|l| l.contains("Error:")).count();
        (errors, all)
    };
    // Through mailshift first, on the migrated INBOX as the cutover left it;
    // then straight to the store, for reference, on what the first run left.
    let (through, through_out) = run(s.proxy.imap_port());
    let (direct, direct_out) = run(s.lab.new.imap_port());
    let tail = |t: &str| t.lines().rev().take(25).collect::<Vec<_>>().join("\n");
    eprintln!(
        "through mailshift: {through} errors\n{}\n\ndirect: {direct} errors\n{}",
        tail(&through_out),
        tail(&direct_out)
    );
    assert!(
        through_out.contains("Logi") || through_out.contains("Fetc"),
        "ImapTest did not run: {}",
        tail(&through_out)
    );
    assert!(
        through <= direct,
        "errors through the translating relay that the store does not give:\n{}\n{}",
        through_out
            .lines()
            .filter(|l| l.contains("Error:"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n"),
        s.proxy.log_tail()
    );
}
