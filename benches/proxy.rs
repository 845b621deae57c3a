//! IMAP proxy benchmark: mailshift vs direct vs the Dovecot proxy peer, in
//! one run, targets interleaved, measured with the team's shared load client
//! (`/work/shared/peers/proxybench/bench.py`, imported by
//! `benches/proxybench_run.py`; `MAILSHIFT_PROXYBENCH_DIR` overrides where).
//!
//! ```text
//! cargo bench --bench proxy -- [login|conc|fetch|idle|all] [--quick]
//!                              [--sessions N] [--store-imap-client-limit N]
//! ```
//!
//! Starts slapd (syncprov), one Dovecot store (maildir, no per-user/IP
//! limit) with user0001..user0059 / pwNNNN on old.example.org, mailshift in
//! front of it (plain `imap://`, password_check = "backend", sync on), and a
//! third Dovecot rendered from the peers' `dovecot-proxy/` config pointing at
//! the same slapd and store. Every user logs in once through every target
//! before anything is measured (warm caches). Results: a markdown table on
//! stdout, JSON lines appended to `target/bench/proxy.jsonl`.
//! Everything listens on 127.0.0.1 and is stopped when the bench exits.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/dproxy.rs"]
mod dproxy;

use dproxy::{pid_in, start_dproxy, wait_greeting};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Dovecot, DovecotOpts, Mailshift, Slapd};

const USERS: usize = 59;
const OLD_HOST: &str = "old.example.org";

struct Args {
    mode: String,
    quick: bool,
    sessions: Option<usize>,
    store_imap_client_limit: u32,
}

fn parse_args() -> Args {
    let mut a = Args {
        mode: "all".into(),
        quick: false,
        sessions: None,
        store_imap_client_limit: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => {} // cargo bench passes it to harness = false benches
            "--quick" => a.quick = true,
            "--sessions" => a.sessions = it.next().and_then(|v| v.parse().ok()),
            "--store-imap-client-limit" => {
                a.store_imap_client_limit = it.next().and_then(|v| v.parse().ok()).unwrap_or(1)
            }
            "login" | "conc" | "fetch" | "idle" | "all" => a.mode = x,
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: cargo bench --bench proxy -- \
                     [login|conc|fetch|idle|all] [--quick] [--sessions N] [--store-imap-client-limit N]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

/// Root may raise the hard limit: every child (slapd, the Dovecots, the
/// Python client) inherits it. 10,000 idle sessions are 20,000 sockets in
/// the Dovecot proxy's login processes.
fn raise_nofile(n: u64) {
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: n as libc::rlim_t,
            rlim_max: n as libc::rlim_t,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
            eprintln!(
                "bench: could not raise RLIMIT_NOFILE to {n}; using {}",
                cur.rlim_max
            );
        }
    }
}

/// Raises the store's limits so 10,000 concurrent sessions fit (the lab
/// template allows 5,000 imap processes), then reloads it. Appended
/// `service X {}` blocks merge into the template's (Dovecot keys are
/// `service/imap/process_limit` etc.).
fn raise_store_limits(store: &Dovecot, imap_client_limit: u32) -> String {
    let extra = format!(
        "\n# --- benches/proxy.rs: room for 10,000 concurrent IDLE sessions\n\
         default_process_limit = 12000\n\
         default_client_limit = 40000\n\
         service imap {{\n  process_limit = 12000\n  client_limit = {imap_client_limit}\n}}\n\
         service imap-login {{\n  client_limit = 12000\n}}\n\
         service anvil {{\n  client_limit = 40000\n}}\n\
         service stats {{\n  client_limit = 40000\n}}\n\
         service auth {{\n  client_limit = 40000\n}}\n\
         service config {{\n  client_limit = 40000\n}}\n"
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(store.conf_path())
        .expect("open store conf");
    f.write_all(extra.as_bytes()).expect("append store conf");
    drop(f);
    // Check the merged config, then reload.
    let n = store.doveadm(&["reload"]);
    let _ = n;
    std::thread::sleep(Duration::from_millis(1500));
    wait_greeting("store after reload", store.imap_port(), &|| store.log());
    let out = Command::new("doveconf")
        .args(["-c"])
        .arg(store.conf_path())
        .args(["service/imap/process_limit", "service/imap/client_limit"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " "))
        .unwrap_or_default();
    out.trim().to_string()
}

fn mailshift_config(ldap: &Slapd, store: &Dovecot) -> String {
    format!(
        r#"# benches/proxy.rs: plain IMAP in front of one store, as the peers were measured
[directory]
kind = "ldap"
url = "{ldap}"
bind_dn = "{dn}"
bind_password = "{pw}"
base_dn = "ou=people,dc=example,dc=org"
user_filter = "(&(objectClass=inetOrgPerson)(uid=%u))"
cache_ttl = "10m"
sync = true
password_check = "backend"

[backends.old]
mailhost = ["{OLD_HOST}"]
imap = "imap://127.0.0.1:{imap}"
delivery = "lmtp://127.0.0.1:{lmtp}"
master_user = "{mu}"
master_password = "{mp}"

[imap]
listen = "127.0.0.1:@IMAP_PORT@"

[admin]
listen = "127.0.0.1:@ADMIN_PORT@"
token = "benchtoken"
"#,
        ldap = ldap.url(),
        dn = ldap.admin_dn(),
        pw = ldap.admin_password(),
        imap = store.imap_port(),
        lmtp = store.lmtp_port(),
        mu = store.master_user(),
        mp = store.master_password(),
    )
}

fn mem_available_kib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

struct Py {
    python: String,
    script: PathBuf,
    lab: PathBuf,
    out: PathBuf,
    quick: bool,
}

impl Py {
    /// Runs one phase; kills it after `limit`, or (idle) when free memory
    /// drops under 1.5 GiB, so the bench can't take the machine down.
    fn phase(&self, phase: &str, extra: &[String], limit: Duration) -> bool {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .arg(phase)
            .arg("--lab")
            .arg(&self.lab)
            .arg("--out")
            .arg(&self.out)
            .args(extra)
            .stdin(Stdio::null());
        if self.quick {
            cmd.arg("--quick");
        }
        eprintln!("bench: phase {phase} {}", extra.join(" "));
        let t0 = Instant::now();
        let mut child = cmd.spawn().expect("spawn python3");
        let mut min_avail = u64::MAX;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait python") {
                break Some(st);
            }
            let avail = mem_available_kib();
            min_avail = min_avail.min(avail);
            if t0.elapsed() > limit || avail < 1_500_000 {
                eprintln!(
                    "bench: phase {phase}: stopping the client (elapsed {:?}, MemAvailable {avail} KiB)",
                    t0.elapsed()
                );
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!(
            "bench: phase {phase} done in {:.1}s ({status:?}), lowest MemAvailable {} MiB",
            t0.elapsed().as_secs_f64(),
            min_avail / 1024
        );
        matches!(status, Some(s) if s.success())
    }
}

fn main() {
    let args = parse_args();
    let repo = support::repo_dir();
    let bench_dir = dproxy::proxybench_dir();
    let peer_dproxy = dproxy::peer_dir();
    assert!(
        bench_dir.join("bench.py").exists() && peer_dproxy.join("dovecot.conf").exists(),
        "need the shared load client and the Dovecot proxy peer config: set MAILSHIFT_PROXYBENCH_DIR \
         (now {})",
        bench_dir.display()
    );
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo.join("target"));
    let out_dir = target_dir.join("bench");
    fs::create_dir_all(&out_dir).expect("mkdir target/bench");
    let out = out_dir.join("proxy.jsonl");
    let run_id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::process::id()
    );

    raise_nofile(65536);
    let t_start = Instant::now();
    let load_before = sh("cut -d' ' -f1-3 /proc/loadavg");

    // 1. The lab: slapd, the store, mailshift, the Dovecot proxy.
    let ldap = Slapd::start(true);
    let mut ldif = String::new();
    for i in 1..=USERS {
        let login = format!("user{i:04}");
        ldif.push_str(&support::render(
            "user.ldif.in",
            &[
                ("LOGIN", login.clone()),
                ("PASSWORD", format!("pw{i:04}")),
                ("MAILHOST", OLD_HOST.to_string()),
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
            ..DovecotOpts::default()
        },
    );
    let store_limits = raise_store_limits(&store, args.store_imap_client_limit);
    let ms = Mailshift::start(&mailshift_config(&ldap, &store));
    // The same proxy relaying with splice(2), to compare it against the
    // default buffered copy in the same run (FETCH only).
    let ms_copy = Mailshift::start(&mailshift_config(&ldap, &store).replacen(
        "[imap]\n",
        "[imap]\nsplice = true\n",
        1,
    ));
    let ms_copy_pid = pid_in(ms_copy.dir(), "mailshift");
    let dproxy = start_dproxy(&peer_dproxy, &ldap, store.imap_port());
    let ldap_pid = pid_in(ldap.dir(), "slapd");
    let store_pid = pid_in(store.dir(), "dovecot");
    let ms_pid = pid_in(ms.dir(), "mailshift");
    eprintln!(
        "bench: lab up in {:.1}s: slapd {} (pid {ldap_pid}), store :{} (pid {store_pid}, {store_limits}), \
         mailshift :{} (pid {ms_pid}), dproxy :{} (pid {})",
        t_start.elapsed().as_secs_f64(),
        ldap.url(),
        store.imap_port(),
        ms.imap_port(),
        dproxy.port,
        dproxy.pid
    );

    let lab = out_dir.join(format!("lab-{run_id}.json"));
    let lab_json = serde_json::json!({
        "run_id": run_id,
        "ports": {"direct": store.imap_port(), "mailshift": ms.imap_port(), "dproxy": dproxy.port,
                  "mscopy": ms_copy.imap_port(), "admin": ms.admin_port()},
        "pids": {"direct": store_pid, "mailshift": ms_pid, "dproxy": dproxy.pid, "ldap": ldap_pid,
                 "mscopy": ms_copy_pid},
    });
    fs::write(&lab, lab_json.to_string()).expect("write lab.json");

    let py = Py {
        python: std::env::var("MAILSHIFT_BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        script: repo.join("benches/proxybench_run.py"),
        lab: lab.clone(),
        out: out.clone(),
        quick: args.quick,
    };
    let s = |v: &dyn ToString| v.to_string();
    let sessions = args
        .sessions
        .unwrap_or(if args.quick { 300 } else { 10_000 });
    let git = sh(&format!(
        "cd {} && git rev-parse --short HEAD && git status --porcelain src Cargo.toml | wc -l",
        repo.display()
    ))
    .replace('\n', " (dirty files in src/Cargo.toml: ")
        + ")";
    let idle_setup = if matches!(args.mode.as_str(), "idle" | "all") {
        format!(
            "{sessions} sessions per proxy (LOGIN, SELECT INBOX, IDLE), 32 parallel; \
             store imap client_limit {}; RLIMIT_NOFILE {}",
            args.store_imap_client_limit,
            sh("ulimit -Hn")
        )
    } else {
        "(idle not run)".to_string()
    };
    let meta = serde_json::json!({
        "quick": args.quick,
        "mode": args.mode,
        "machine": format!("{} cores, {}, load avg at start {load_before}",
            sh("nproc"), sh("grep MemTotal /proc/meminfo | tr -s ' '")),
        "mailshift": format!("{} (git {git}), plain imap:// backend, password_check=backend, sync on, cache warmed",
            env!("CARGO_BIN_EXE_mailshift")),
        "store": format!("Dovecot {} maildir, auth_bind LDAP, max_userip 0; {store_limits}", sh("dovecot --version")),
        "dproxy": "peers/dovecot-proxy/ rendered (LDAP passdb proxy=y nopassword=y, login service_count=0, process_min_avail=2)",
        "client": format!("{} + proxybench/bench.py from {}", sh("python3 --version"), bench_dir.display()),
        "idle_setup": idle_setup,
    });
    py.phase(
        "meta",
        &["--meta-json".into(), meta.to_string()],
        Duration::from_secs(30),
    );

    let modes: Vec<&str> = match args.mode.as_str() {
        "all" => vec!["login", "conc", "fetch", "idle"],
        m => vec![m],
    };
    let mut ok = py.phase("warm", &[], Duration::from_secs(120));
    if ok {
        for m in &modes {
            let extra: Vec<String> = match (*m, args.quick) {
                ("login", false) => vec!["--n".into(), "500".into(), "--rounds".into(), "5".into()],
                ("login", true) => vec!["--n".into(), "60".into(), "--rounds".into(), "3".into()],
                ("conc", false) => vec![
                    "--secs".into(),
                    "10".into(),
                    "--rounds".into(),
                    "3".into(),
                    "-c".into(),
                    "16".into(),
                ],
                ("conc", true) => vec![
                    "--secs".into(),
                    "3".into(),
                    "--rounds".into(),
                    "1".into(),
                    "-c".into(),
                    "16".into(),
                ],
                ("fetch", false) => vec![
                    "--n".into(),
                    "240".into(),
                    "--rounds".into(),
                    "12".into(),
                    "--targets".into(),
                    "direct,mailshift,mscopy,dproxy".into(),
                ],
                ("fetch", true) => vec![
                    "--n".into(),
                    "6".into(),
                    "--rounds".into(),
                    "2".into(),
                    "--targets".into(),
                    "direct,mailshift,mscopy,dproxy".into(),
                ],
                ("idle", _) => vec![
                    "--sessions".into(),
                    s(&sessions),
                    "--targets".into(),
                    "mailshift,dproxy".into(),
                ],
                _ => unreachable!(),
            };
            let limit = if *m == "idle" {
                Duration::from_secs(120 + sessions as u64 / 20)
            } else {
                Duration::from_secs(900)
            };
            ok &= py.phase(m, &extra, limit);
        }
    }
    let md = out_dir.join(format!("proxy-{run_id}.md"));
    py.phase(
        "report",
        &[
            "--run-id".into(),
            run_id.clone(),
            "--markdown".into(),
            md.display().to_string(),
        ],
        Duration::from_secs(30),
    );
    let ms_log = ms.log();
    let warn_lines: Vec<&str> = ms_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    if !warn_lines.is_empty() {
        eprintln!(
            "bench: mailshift logged {} WARN/ERROR lines; last:\n{}",
            warn_lines.len(),
            warn_lines[warn_lines.len().saturating_sub(5)..].join("\n")
        );
    }
    eprintln!(
        "bench: results appended to {} (run_id {run_id}), table in {}; {:.0}s total",
        out.display(),
        md.display(),
        t_start.elapsed().as_secs_f64()
    );
    let _ = fs::remove_file(&lab);
    // Stop in order: proxies, then the store, then slapd (drop order below).
    drop(dproxy);
    drop(ms);
    drop(store);
    drop(ldap);
    if !ok {
        std::process::exit(1);
    }
}
