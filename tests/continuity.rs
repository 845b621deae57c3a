//! Client continuity across a move: the UID maps `mailshift migrate
//! --cutover` writes into the new store (METADATA, or a hidden folder where
//! the store has none), read back from the store itself and by every
//! mailshift instance; and the invariant across a rollback with new mail on
//! the new store and a later second cutover: no UID a client saw names
//! another message afterwards. Real slapd (syncprov), two Dovecot stores and
//! mailshift.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mailshift::continuity::stored::{parse_message, ENTRY, HIDDEN_FOLDER};
use mailshift::continuity::FolderMap;
use support::proxy::{NEW_HOST, OLD_HOST};
use support::{corpus, message, ImapClient, Lab, Mailshift};

struct Setup {
    lab: Lab,
    proxy: Mailshift,
    text: String,
    cli_config: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(metadata: bool, messages: usize) -> Setup {
    let lab = Lab::start_with_metadata(true, metadata);
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\nhold_wait = \"20s\"\ninstance_id = \"test-cli\"\nsweep_interval = \"1s\"\n",
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
        &corpus::generate_inbox(messages, 23),
    );
    Setup {
        lab,
        proxy,
        text,
        cli_config,
        _dir: dir,
    }
}

fn cli(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailshift"))
        .args(args)
        .arg("--config")
        .arg(&s.cli_config)
        .stdin(Stdio::null())
        .output()
        .expect("mailshift runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn attr(s: &Setup, name: &str) -> String {
    let out = s.lab.ldap.search("(uid=alice)", &[name]);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
        .to_string()
}

/// Logged in to a store directly as alice (through the master user).
fn store(port: u16) -> ImapClient {
    let mut c = ImapClient::connect(port);
    c.login("alice*admin", "adminpw");
    c
}

/// UID → Subject of a folder, straight from a store.
fn uid_subjects(port: u16, folder: &str) -> BTreeMap<u32, String> {
    let mut c = store(port);
    c.ok(&format!("EXAMINE {}", support::imap::quote(folder)));
    let lines = c.ok("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    let mut out = BTreeMap::new();
    for l in lines.iter().filter(|l| l.contains(" FETCH ")) {
        let uid = l
            .split("UID ")
            .nth(1)
            .and_then(|r| r.split([' ', ')']).next())
            .and_then(|u| u.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no UID in {l}"));
        let subject = l
            .lines()
            .find_map(|h| h.strip_prefix("Subject: ").map(|s| s.trim().to_string()))
            .unwrap_or_else(|| panic!("no Subject in {l}"));
        out.insert(uid, subject);
    }
    c.ok("LOGOUT");
    out
}

/// INBOX as alice's client sees it through the proxy: (UIDVALIDITY, UID → Subject).
fn through_proxy(proxy: &Mailshift) -> (u32, BTreeMap<u32, String>) {
    let mut c = ImapClient::connect(proxy.imap_port());
    c.login("alice", "alicepw");
    let lines = c.ok("SELECT INBOX");
    let validity = lines
        .iter()
        .find_map(|l| l.split("[UIDVALIDITY ").nth(1))
        .and_then(|r| r.split(']').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {lines:?}"));
    let lines = c.ok("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    let mut out = BTreeMap::new();
    for l in lines.iter().filter(|l| l.contains(" FETCH ")) {
        let uid = l
            .split("UID ")
            .nth(1)
            .and_then(|r| r.split([' ', ')']).next())
            .and_then(|u| u.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no UID in {l}"));
        let subject = l
            .lines()
            .find_map(|h| h.strip_prefix("Subject: ").map(|s| s.trim().to_string()))
            .unwrap_or_else(|| panic!("no Subject in {l}"));
        out.insert(uid, subject);
    }
    c.ok("LOGOUT");
    (validity, out)
}

/// Nothing a client saw through the proxy names another message now.
fn assert_consistent(seen: &BTreeMap<u32, String>, now: &BTreeMap<u32, String>) {
    for (c, subject) in now {
        if let Some(earlier) = seen.get(c) {
            assert_eq!(
                earlier, subject,
                "UID {c} names another message through the proxy"
            );
        }
    }
}

fn uidvalidity(port: u16, folder: &str) -> u32 {
    let mut c = store(port);
    let lines = c.ok(&format!(
        "STATUS {} (UIDVALIDITY)",
        support::imap::quote(folder)
    ));
    lines
        .iter()
        .find_map(|l| l.split("UIDVALIDITY ").nth(1))
        .and_then(|r| r.trim_end_matches(')').trim().parse().ok())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {lines:?}"))
}

fn expunge(port: u16, folder: &str, uids: &[u32]) {
    let mut c = store(port);
    c.ok(&format!("SELECT {}", support::imap::quote(folder)));
    let set: Vec<String> = uids.iter().map(u32::to_string).collect();
    c.ok(&format!(
        "UID STORE {} +FLAGS.SILENT (\\Deleted)",
        set.join(",")
    ));
    c.ok(&format!("UID EXPUNGE {}", set.join(",")));
    c.ok("LOGOUT");
}

/// The map of `folder` as the store's METADATA holds it.
fn metadata_map(port: u16, folder: &str) -> FolderMap {
    let mut c = store(port);
    let lines = c.ok(&format!(
        "GETMETADATA {} ({ENTRY})",
        support::imap::quote(folder)
    ));
    let raw = lines
        .iter()
        .find(|l| l.starts_with("* METADATA"))
        .unwrap_or_else(|| panic!("no METADATA for {folder}: {lines:?}"));
    let entries =
        mailshift::store::imap::metadata::parse(raw.as_bytes()).expect("METADATA response parses");
    let value = entries[0].value.clone().expect("the entry is set");
    FolderMap::decode(std::str::from_utf8(&value).expect("ASCII")).expect("the map decodes")
}

/// The maps in the store's hidden folder, by folder.
fn hidden_maps(port: u16) -> HashMap<String, FolderMap> {
    let mut c = store(port);
    c.ok(&format!("EXAMINE {HIDDEN_FOLDER}"));
    let lines = c.ok("UID FETCH 1:* (UID BODY.PEEK[])");
    let mut out = HashMap::new();
    for l in lines.iter().filter(|l| l.contains(" FETCH ")) {
        let body = l.split_once("\r\n").map(|x| x.1).unwrap_or("");
        let body = body.strip_suffix(')').unwrap_or(body);
        let (folder, map) = parse_message(body.as_bytes()).unwrap_or_else(|| panic!("{l}"));
        let map = FolderMap::decode(std::str::from_utf8(&map).expect("ASCII")).expect("decodes");
        out.insert(String::from_utf8(folder).expect("name"), map);
    }
    c.ok("LOGOUT");
    out
}

fn folders(port: u16) -> Vec<String> {
    let mut c = store(port);
    let lines = c.ok("LIST \"\" \"*\"");
    c.ok("LOGOUT");
    lines
        .iter()
        .filter_map(|l| l.rsplit(' ').next())
        .map(|n| n.trim_matches('"').to_string())
        .collect()
}

fn admin_user(port: u16, login: &str) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    s.write_all(
        format!("GET /api/v1/users/{login} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The admin view of alice's maps once the instance's directory shows the
/// map on `host` (its cache follows LDAP, so it may take a moment).
fn uid_view(proxy: &Mailshift, host: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let v = admin_user(proxy.admin_port(), "alice")["uid_maps"].clone();
        if v["translated"] == true && v["mailhost"] == host {
            return v;
        }
        assert!(Instant::now() < until, "never translated on {host}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every UID the client knew names the same message through `map` on the
/// store whose messages are `store_uids` (or no message, when it is gone).
fn assert_same_messages(
    known: &BTreeMap<u32, String>,
    map: &FolderMap,
    store_uids: &BTreeMap<u32, String>,
) {
    for (c, subject) in known {
        if let Some(s) = map.to_store_uid(*c) {
            if let Some(now) = store_uids.get(&s) {
                assert_eq!(now, subject, "client UID {c} → store UID {s}");
            }
        }
    }
    // And no store message has two client UIDs.
    let mut seen = HashSet::new();
    for s in store_uids.keys() {
        if let Some(c) = map.to_client_uid(*s) {
            assert!(seen.insert(c), "client UID {c} twice");
        }
    }
}

#[test]
fn cutover_keeps_uids_in_metadata_and_every_instance_reads_them() {
    let s = setup(true, 30);
    expunge(s.lab.old.imap_port(), "INBOX", &[3, 7, 8]);
    let before = uid_subjects(s.lab.old.imap_port(), "INBOX");
    let old_validity = uidvalidity(s.lab.old.imap_port(), "INBOX");
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        attr(&s, "mailshiftUidMap").starts_with(&format!("{NEW_HOST} ")),
        "{}",
        attr(&s, "mailshiftUidMap")
    );

    let map = metadata_map(s.lab.new.imap_port(), "INBOX");
    let after = uid_subjects(s.lab.new.imap_port(), "INBOX");
    assert_eq!(map.presented_uidvalidity, old_validity);
    assert!(!map.is_fresh());
    assert_eq!(map.len(), before.len());
    for (u, subject) in &before {
        let n = map
            .to_store_uid(*u)
            .unwrap_or_else(|| panic!("old UID {u} unmapped"));
        assert_eq!(&after[&n], subject, "old UID {u} → new UID {n}");
    }
    for gone in [3, 7, 8] {
        assert_eq!(map.to_store_uid(gone), None);
    }
    assert_eq!(after.len(), before.len());
    assert_eq!(
        map.old_uidnext,
        before.keys().max().copied().unwrap_or(0) + 1
    );

    // Mail after the cutover gets a UID above every old one.
    s.lab.new.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "after", "hi"),
    );
    let now = uid_subjects(s.lab.new.imap_port(), "INBOX");
    let (&newest, _) = now.iter().find(|(_, v)| *v == "after").expect("delivered");
    let c = map.to_client_uid(newest).expect("a client UID");
    assert!(c >= map.old_uidnext && !before.contains_key(&c));

    // Mail that still reached the old INBOX after the cutover is swept over
    // by `serve`: it too lands above every UID clients knew.
    s.lab.old.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "late", "hi"),
    );
    let until = Instant::now() + Duration::from_secs(30);
    let late = loop {
        let now = uid_subjects(s.lab.new.imap_port(), "INBOX");
        if let Some((n, _)) = now.iter().find(|(_, v)| *v == "late") {
            break *n;
        }
        assert!(
            Instant::now() < until,
            "never swept:\n{}",
            s.proxy.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let c_late = map.to_client_uid(late).expect("a client UID");
    assert!(c_late >= map.old_uidnext && c_late != c && !before.contains_key(&c_late));

    // The instance that served before the cutover and a new one read the
    // same maps from the store.
    let first = uid_view(&s.proxy, NEW_HOST);
    let second = Mailshift::start(&s.text);
    let other = uid_view(&second, NEW_HOST);
    assert_eq!(first["messages"], other["messages"]);
    assert_eq!(first["encoded_bytes"], other["encoded_bytes"]);
    assert_eq!(first["folders"], other["folders"]);
    assert!(first["messages"].as_u64().unwrap_or(0) >= before.len() as u64);
    assert!(first["encoded_bytes"].as_u64().unwrap_or(0) > 0);

    let status = cli(&s, &["status", "--user", "alice"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("sessions translated: UID maps on"),
        "{}",
        text(&status)
    );
}

#[test]
fn without_metadata_the_maps_live_in_a_hidden_folder() {
    let s = setup(false, 20);
    expunge(s.lab.old.imap_port(), "INBOX", &[2, 5]);
    let before = uid_subjects(s.lab.old.imap_port(), "INBOX");
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(folders(s.lab.new.imap_port()).contains(&HIDDEN_FOLDER.to_string()));
    let maps = hidden_maps(s.lab.new.imap_port());
    let map = maps
        .get("INBOX")
        .unwrap_or_else(|| panic!("{:?}", maps.keys()));
    let after = uid_subjects(s.lab.new.imap_port(), "INBOX");
    assert_eq!(map.len(), before.len());
    for (u, subject) in &before {
        let n = map
            .to_store_uid(*u)
            .unwrap_or_else(|| panic!("old UID {u} unmapped"));
        assert_eq!(&after[&n], subject);
    }
    assert!(
        !maps.contains_key(HIDDEN_FOLDER),
        "the map folder mapped itself"
    );
    let v = uid_view(&s.proxy, NEW_HOST);
    assert_eq!(v["folders"].as_u64(), Some(maps.len() as u64));

    // A rollback never copies the map folder back as mail: its passes do not
    // even list it.
    let back = cli(&s, &["rollback", "--user", "alice", "--json"]);
    assert!(back.status.success(), "{}", text(&back));
    let report = String::from_utf8_lossy(&back.stdout);
    assert!(report.contains("\"folder\":\"INBOX\""), "{report}");
    assert!(!report.contains(HIDDEN_FOLDER), "{report}");
    let r = hidden_maps(s.lab.old.imap_port())
        .remove("INBOX")
        .expect("INBOX mapped on the old store");
    assert_eq!(r.presented_uidvalidity, map.presented_uidvalidity);
    assert_same_messages(&before, &r, &uid_subjects(s.lab.old.imap_port(), "INBOX"));
}

#[test]
fn rollback_and_a_second_cutover_keep_every_uid_a_client_saw() {
    let s = setup(true, 25);
    expunge(s.lab.old.imap_port(), "INBOX", &[4, 9]);
    let before_cutover = uid_subjects(s.lab.old.imap_port(), "INBOX");
    let out = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(out.status.success(), "{}", text(&out));
    let f = metadata_map(s.lab.new.imap_port(), "INBOX");

    // On the new store: new mail, and a migrated message deleted.
    for subject in ["new-1", "new-2"] {
        s.lab.new.deliver(
            "alice",
            &message("x@example.net", "alice@example.org", subject, "hi"),
        );
    }
    let on_new = uid_subjects(s.lab.new.imap_port(), "INBOX");
    let victim = f.to_store_uid(10).expect("old UID 10 mapped");
    expunge(s.lab.new.imap_port(), "INBOX", &[victim]);
    s.lab.new.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "new-3", "hi"),
    );
    // What a client saw through the translation: every UID, before the
    // deletion and after it.
    let mut seen: BTreeMap<u32, String> = before_cutover.clone();
    for (n, subject) in on_new
        .iter()
        .chain(&uid_subjects(s.lab.new.imap_port(), "INBOX"))
    {
        let c = f
            .to_client_uid(*n)
            .expect("every new message has a client UID");
        if let Some(earlier) = seen.insert(c, subject.clone()) {
            assert_eq!(&earlier, subject, "client UID {c} named two messages");
        }
    }

    // The same through the proxy (the translating relay).
    uid_view(&s.proxy, NEW_HOST);
    let (v1, shown1) = through_proxy(&s.proxy);
    assert_eq!(v1, f.presented_uidvalidity);
    assert_consistent(&seen, &shown1);
    assert!(shown1.values().any(|v| v == "new-3"));

    let back = cli(&s, &["rollback", "--user", "alice"]);
    assert!(back.status.success(), "{}", text(&back));
    assert_eq!(attr(&s, "mailHost"), OLD_HOST);
    assert!(
        attr(&s, "mailshiftUidMap").starts_with(&format!("{OLD_HOST} ")),
        "{}",
        attr(&s, "mailshiftUidMap")
    );
    // The old store has no METADATA: the rollback's maps are in its hidden folder.
    let r = hidden_maps(s.lab.old.imap_port())
        .remove("INBOX")
        .expect("INBOX mapped on the old store");
    let on_old = uid_subjects(s.lab.old.imap_port(), "INBOX");
    assert_eq!(
        r.presented_uidvalidity, f.presented_uidvalidity,
        "clients had to resync although nothing forced it"
    );
    assert_same_messages(&seen, &r, &on_old);
    for subject in ["new-1", "new-2", "new-3"] {
        let (c, _) = seen.iter().find(|(_, v)| *v == subject).expect("seen");
        let o = r.to_store_uid(*c).expect("mapped");
        assert_eq!(on_old[&o], subject);
    }
    for o in on_old.keys() {
        assert!(r.to_client_uid(*o).is_some(), "old UID {o} hidden");
    }
    uid_view(&s.proxy, OLD_HOST);
    let (v2, shown2) = through_proxy(&s.proxy);
    assert_eq!(v2, v1, "the proxy changed the UIDVALIDITY at the rollback");
    assert_consistent(&seen, &shown2);
    for (c, subject) in &shown1 {
        assert_eq!(shown2.get(c), Some(subject), "UID {c} lost at the rollback");
    }

    // The message deleted on the new store is back (the rollback copies,
    // never deletes): the user deletes it again. Copied to the new store a
    // second time, it would land above messages it sorts before, which no
    // map can express (that folder would get a fresh UIDVALIDITY).
    let again_gone = r.to_store_uid(10).expect("old UID 10 is back");
    expunge(s.lab.old.imap_port(), "INBOX", &[again_gone]);
    // Mail after the rollback, then the user moves again: the maps compose.
    s.lab.old.deliver(
        "alice",
        &message("x@example.net", "alice@example.org", "after-rollback", "hi"),
    );
    let on_old = uid_subjects(s.lab.old.imap_port(), "INBOX");
    for (o, subject) in &on_old {
        let c = r.to_client_uid(*o).expect("client UID");
        if let Some(earlier) = seen.insert(c, subject.clone()) {
            assert_eq!(&earlier, subject, "client UID {c} named two messages");
        }
    }
    let again = cli(&s, &["migrate", "--user", "alice", "--cutover"]);
    assert!(again.status.success(), "{}", text(&again));
    let m = metadata_map(s.lab.new.imap_port(), "INBOX");
    let on_new = uid_subjects(s.lab.new.imap_port(), "INBOX");
    assert_eq!(m.presented_uidvalidity, f.presented_uidvalidity);
    assert_same_messages(&seen, &m, &on_new);
    let (c, _) = seen
        .iter()
        .find(|(_, v)| *v == "after-rollback")
        .expect("seen");
    assert_eq!(
        on_new[&m.to_store_uid(*c).expect("mapped")],
        "after-rollback"
    );
    uid_view(&s.proxy, NEW_HOST);
    let (v3, shown3) = through_proxy(&s.proxy);
    assert_eq!(
        v3, v1,
        "the proxy changed the UIDVALIDITY at the second cutover"
    );
    assert_consistent(&seen, &shown3);
    assert!(shown3.values().any(|v| v == "after-rollback"));
}
