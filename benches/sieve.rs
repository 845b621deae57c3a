//! ManageSieve idle-session memory: how much mailshift grows per logged-in,
//! idle ManageSieve session (measured like the IMAP idle figure: the proxy
//! process's PSS and RSS from /proc, before and after, divided by sessions).
//!
//! ```text
//! cargo bench --bench sieve -- [--sessions N]
//! ```
//!
//! Starts slapd (user0001..user0040 / pwNNNN), one Dovecot store with
//! ManageSieve, and mailshift with `[managesieve]` in front of it (plain
//! `sieve://` backend, the user's own password passed through). Opens N
//! sessions from this process (AUTHENTICATE PLAIN, then nothing), measures,
//! closes them. A line of JSON goes to `target/bench/sieve.jsonl`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::sieve::base64;
use support::{Dovecot, DovecotOpts, Mailshift, Slapd};

const USERS: usize = 40;
const HOST: &str = "old.example.org";

fn pid_in(dir: &Path, name: &str) -> u32 {
    let p = dir.join(format!("{name}.pid.supervise"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = fs::read_to_string(&p) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (PSS, RSS) of a process in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

/// Logs in and leaves the session open.
fn session(port: u16, user: usize) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("greeting");
        if line.starts_with("OK") {
            break;
        }
        assert!(!line.is_empty(), "closed during the greeting");
    }
    let ir = base64(format!("\0user{user:04}\0pw{user:04}").as_bytes());
    (&s).write_all(format!("AUTHENTICATE \"PLAIN\" \"{ir}\"\r\n").as_bytes())
        .expect("write");
    line.clear();
    r.read_line(&mut line).expect("login reply");
    assert!(line.starts_with("OK"), "login refused: {line}");
    s
}

fn main() {
    let mut sessions = 400usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--sessions" {
            sessions = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--sessions N");
        }
    }
    let ldap = Slapd::start(true);
    let mut ldif = String::new();
    for i in 1..=USERS {
        ldif.push_str(&support::render(
            "user.ldif.in",
            &[
                ("LOGIN", format!("user{i:04}")),
                ("PASSWORD", format!("pw{i:04}")),
                ("MAILHOST", HOST.to_string()),
            ],
        ));
        ldif.push('\n');
    }
    support::run(
        Command::new("ldapadd").args([
            "-x",
            "-H",
            &ldap.url(),
            "-D",
            ldap.admin_dn(),
            "-w",
            ldap.admin_password(),
        ]),
        Some(ldif.as_bytes()),
    );
    let store = Dovecot::start(
        "store",
        &ldap,
        DovecotOpts {
            max_userip: 0,
            extra: "protocol sieve {\n  mail_max_userip_connections = 0\n}\n".into(),
            ..DovecotOpts::default()
        },
    );
    let sieve_port = support::free_port();
    let config = format!(
        r#"# benches/sieve.rs
[directory]
kind = "ldap"
url = "{ldap}"
bind_dn = "{dn}"
bind_password = "{pw}"
base_dn = "ou=people,dc=example,dc=org"
user_filter = "(&(objectClass=inetOrgPerson)(uid=%u))"
cache_ttl = "10m"
password_check = "backend"

[backends.old]
mailhost = ["{HOST}"]
imap = "imap://127.0.0.1:{imap}"
sieve = "sieve://127.0.0.1:{sieve}"

[imap]
listen = "127.0.0.1:@IMAP_PORT@"

[managesieve]
listen = "127.0.0.1:{sieve_port}"
"#,
        ldap = ldap.url(),
        dn = ldap.admin_dn(),
        pw = ldap.admin_password(),
        imap = store.imap_port(),
        sieve = store.sieve_port(),
    );
    let ms = Mailshift::start(&config);
    let pid = pid_in(ms.dir(), "mailshift");
    while !support::port_open(sieve_port) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm up: every user once (directory cache, allocator arenas).
    for u in 1..=USERS {
        drop(session(sieve_port, u));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = memory(pid);
    let started = Instant::now();
    let open: Vec<TcpStream> = (0..sessions)
        .map(|i| session(sieve_port, i % USERS + 1))
        .collect();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = memory(pid);
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / sessions as f64;
    let (pss, rss) = (per(after.0, before.0), per(after.1, before.1));
    println!(
        "| ManageSieve idle sessions | mailshift KiB per session, PSS / RSS | opened in |\n\
         |---|---|---|\n| {sessions} | {pss:.1} / {rss:.1} | {:.2}s |",
        took.as_secs_f64()
    );
    eprintln!(
        "bench: mailshift PSS {} → {} KiB, RSS {} → {} KiB",
        before.0, after.0, before.1, after.1
    );
    drop(open);
    let dir = support::repo_dir().join("target/bench");
    let _ = fs::create_dir_all(&dir);
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sieve.jsonl"))
    {
        let _ = writeln!(
            f,
            "{}",
            serde_json::json!({
                "sessions": sessions,
                "pss_kib_per_session": pss,
                "rss_kib_per_session": rss,
                "before_kib": {"pss": before.0, "rss": before.1},
                "after_kib": {"pss": after.0, "rss": after.1},
                "open_secs": took.as_secs_f64(),
            })
        );
    }
    drop(ms);
    drop(store);
    drop(ldap);
}
