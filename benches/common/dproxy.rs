//! The peers' Dovecot IMAP proxy for the benches that measure mailshift
//! against it in the same run (`proxy`, `translate`): rendered from
//! `/work/shared/peers/peers/dovecot-proxy/` (LDAP passdb, `proxy=y
//! nopassword=y`, login processes with `service_count=0`) with its /tmp
//! paths, its port and its LDAP/backend ports substituted. Also the process
//! helpers those benches share.
//!
//! Used as `#[path = "common/dproxy.rs"] mod dproxy;` next to `mod support;`;
//! not every bench uses every item, hence the allow.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{self, Server, Slapd};

/// The shared load client's directory (`MAILSHIFT_PROXYBENCH_DIR` overrides).
pub fn proxybench_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("MAILSHIFT_PROXYBENCH_DIR")
            .unwrap_or_else(|_| "/work/shared/peers/proxybench".into()),
    )
}

/// The peers' Dovecot proxy config, next to the load client.
pub fn peer_dir() -> PathBuf {
    proxybench_dir().join("../peers/dovecot-proxy")
}

/// The pid a supervised server wrote to `dir/NAME.pid.supervise`.
pub fn pid_in(dir: &Path, name: &str) -> u32 {
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

/// Whether an IMAP server on `port` greets with `* OK`.
pub fn greets(port: u16) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let ok = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("* OK");
    if ok {
        let _ = (&s).write_all(b"x LOGOUT\r\n");
    }
    ok
}

/// Waits up to 30 s for an IMAP greeting on `port`.
pub fn wait_greeting(what: &str, port: u16, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !greets(port) {
        assert!(
            Instant::now() < deadline,
            "{what} on {port} does not greet; log:\n{}",
            support::tail(&log(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (nanosecond resolution, from `schedstat`) of `pid`, every
/// thread of it and every process below it: the whole Dovecot instance under
/// its master, whichever login process proxies a session. Children are found
/// by their parent pid in `/proc/*/stat` (`task/*/children` is not in every
/// kernel).
pub fn tree_cpu(pid: u32) -> Duration {
    let mut parent_of = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // After the command name in parentheses: state, then the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut at = 0;
    while at < tree.len() {
        let p = tree[at];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        at += 1;
    }
    let mut ns = 0u64;
    for p in tree {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            ns += fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// A running Dovecot proxy; stopped when dropped.
pub struct DProxy {
    /// Its IMAP port.
    pub port: u16,
    /// Its master's pid.
    pub pid: u32,
    _server: Server,
    _dir: tempfile::TempDir,
}

/// Starts the peers' Dovecot proxy from `peer_dir`, routing every user of
/// `ldap` to the store on `store_port`.
pub fn start_dproxy(peer_dir: &Path, ldap: &Slapd, store_port: u16) -> DProxy {
    let dir = support::shared_tempdir("mailshift-bench-dproxy-");
    let d = dir.path();
    let port = support::free_port();
    let sub = |text: &str, from: &str, to: &str, file: &str| -> String {
        assert!(
            text.contains(from),
            "{file}: expected {from:?} to substitute"
        );
        text.replace(from, to)
    };
    let ext_src =
        fs::read_to_string(peer_dir.join("dovecot-ldap.conf.ext")).expect("peer ldap ext");
    let mut ext = sub(&ext_src, "ldap://127.0.0.1:31389", &ldap.url(), "ldap ext");
    ext = sub(
        &ext,
        "BACKEND_OLD_PORT",
        &store_port.to_string(),
        "ldap ext",
    );
    // There is no "new" store in these benches; every user is on old.example.org.
    ext = sub(&ext, "31243", &store_port.to_string(), "ldap ext");
    let ext_path = d.join("ldap.ext");
    fs::write(&ext_path, ext).expect("write ldap ext");
    support::set_mode(&ext_path, 0o644);
    let conf_src = fs::read_to_string(peer_dir.join("dovecot.conf")).expect("peer dovecot.conf");
    let mut conf = sub(
        &conf_src,
        "/tmp/peers/dproxy",
        &d.display().to_string(),
        "dovecot.conf",
    );
    conf = sub(&conf, "32145", &port.to_string(), "dovecot.conf");
    conf = sub(
        &conf,
        "@LDAP_EXT@",
        &ext_path.display().to_string(),
        "dovecot.conf",
    );
    conf = sub(
        &conf,
        "instance_name = peers-dproxy",
        "instance_name = mailshift-bench-dproxy",
        "dovecot.conf",
    );
    let conf_path = d.join("dovecot.conf");
    fs::write(&conf_path, conf).expect("write dproxy conf");
    let conf_s = conf_path.display().to_string();
    let mut server = Server::spawn("dovecot", d, &["dovecot", "-F", "-c", &conf_s]);
    let log = || {
        format!(
            "{}{}",
            support::read_log(&d.join("dovecot.stderr.log")),
            support::read_log(&d.join("dovecot.log"))
        )
    };
    support::wait_ready("dproxy", &mut server, &log, &mut || greets(port))
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = pid_in(d, "dovecot");
    DProxy {
        port,
        pid,
        _server: server,
        _dir: dir,
    }
}
