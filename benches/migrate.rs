//! Migration benchmark: mailshift's `migrate` against the peers on one lab.
//!
//!   cargo bench --bench migrate -- [--quick] [--n 5000] [--rounds 2] [--big 20000]
//!                                  [--no-plain] [--no-doveadm] [--no-big]
//!
//! One run starts one lab (slapd + OLD Maildir '/' + NEW sdbox '.', tests/support)
//! and measures, interleaved over `--rounds` rounds, each into a fresh destination user:
//!   (a) `mailshift migrate` first pass with the lab config (STARTTLS to OLD, TLS to NEW)
//!   (a') the same with plain `imap://` to both stores (what every peer below uses)
//!   (b) mbsync 1.4.4 IMAP-to-IMAP, the peers' mbsyncrc rendered with the lab's ports
//!   (c) raw pipelined LITERAL+ APPEND over 4 connections into NEW (gen.py --conns 4):
//!       the destination's ingest limit (APPEND phase only, as the peers measured it)
//!   (d) `doveadm backup -R` over imapc (the peers' command)
//! then incremental passes (no change, +1 %) for mailshift and mbsync, the same on a
//! `--big` mailbox, and `mailshift verify` for every mailshift user.
//! Prints a markdown table; JSON lines go to target/bench/migrate.jsonl.
//!
//! The corpus is the peers' generator, run in place:
//! /work/shared/peers/corpus/gen.py (override with MIGRATE_BENCH_GEN).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::Lab;

const PEERS: &str = "/work/shared/peers";

struct Args {
    quick: bool,
    n: usize,
    rounds: usize,
    big: usize,
    plain: bool,
    doveadm: bool,
    /// mbsync on the big mailbox too (slow: minutes at 20,000).
    big_mbsync: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| argv.iter().any(|a| a == f);
    let val = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let quick = has("--quick");
    let n = val("--n").unwrap_or(if quick { 500 } else { 5000 });
    Args {
        quick,
        n,
        rounds: val("--rounds").unwrap_or(2).max(1),
        big: if has("--no-big") {
            0
        } else {
            val("--big").unwrap_or(if quick { 2000 } else { 20000 })
        },
        plain: !has("--no-plain"),
        big_mbsync: has("--big-mbsync"),
        doveadm: !has("--no-doveadm"),
    }
}

fn gen_py() -> String {
    std::env::var("MIGRATE_BENCH_GEN").unwrap_or_else(|_| format!("{PEERS}/corpus/gen.py"))
}

fn login(n: u32) -> String {
    format!("user{n:04}")
}
fn password(n: u32) -> String {
    format!("pw{n:04}")
}

// ------------------------------------------------------------------ measuring

fn children_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn children_maxrss_mib() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn clk_tck() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// CPU seconds of a process tree: utime+stime of live processes plus
/// cutime+cstime (children already reaped), as the peers measured Dovecot.
fn tree_cpu(root: Option<u32>) -> f64 {
    let Some(root) = root else { return 0.0 };
    let mut st: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = s.rfind(')') else { continue };
        let f: Vec<&str> = s[i + 2..].split_whitespace().collect();
        if f.len() < 15 {
            continue;
        }
        let p = |k: usize| f[k].parse::<u64>().unwrap_or(0);
        st.insert(
            pid,
            (f[1].parse().unwrap_or(0), p(11) + p(12) + p(13) + p(14)),
        );
    }
    let mut total = 0u64;
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some((_, t)) = st.get(&p) {
            total += t;
        }
        stack.extend(st.iter().filter(|(_, v)| v.0 == p).map(|(k, _)| *k));
    }
    total as f64 / clk_tck()
}

fn master_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("run/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

struct Ran {
    ok: bool,
    code: Option<i32>,
    wall: f64,
    cpu: f64,
    /// (seconds since start, line) of stdout.
    lines: Vec<(f64, String)>,
    stderr: String,
    old_cpu: f64,
    new_cpu: f64,
}

struct Bench {
    lab: Lab,
    dir: tempfile::TempDir,
    jsonl: fs::File,
    run_id: String,
    results: Vec<Value>,
}

impl Bench {
    fn dovecot_cpu(&self) -> (f64, f64) {
        (
            tree_cpu(master_pid(self.lab.old.dir())),
            tree_cpu(master_pid(self.lab.new.dir())),
        )
    }

    /// Runs a command to completion; wall, children CPU, timestamped stdout.
    fn run(&self, cmd: &mut Command) -> Ran {
        let errf = self.dir.path().join("stderr.tmp");
        let err = fs::File::create(&errf).expect("stderr file");
        let (o0, n0) = self.dovecot_cpu();
        let c0 = children_cpu();
        let t0 = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let mut lines = Vec::new();
        for l in BufReader::new(child.stdout.take().expect("stdout")).lines() {
            let Ok(l) = l else { break };
            lines.push((t0.elapsed().as_secs_f64(), l));
        }
        let status = child.wait().expect("wait");
        let wall = t0.elapsed().as_secs_f64();
        let cpu = children_cpu() - c0;
        // Dovecot finishes its imap processes' accounting after the logout.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (o1, n1) = self.dovecot_cpu();
        Ran {
            ok: status.success(),
            code: status.code(),
            wall,
            cpu,
            lines,
            stderr: fs::read_to_string(&errf).unwrap_or_default(),
            old_cpu: o1 - o0,
            new_cpu: n1 - n0,
        }
    }

    fn record(&mut self, mut v: Value) {
        v["run_id"] = json!(self.run_id);
        v["ts"] = json!(now_secs());
        let line = serde_json::to_string(&v).expect("json");
        writeln!(self.jsonl, "{line}").expect("write jsonl");
        eprintln!("  {line}");
        self.results.push(v);
    }

    fn dstat(&self, user: &str) -> (u64, u64) {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.lab.new.conf_path())
            .args(["mailbox", "status", "-u", user, "-t", "messages vsize", "*"])
            .output()
            .expect("doveadm mailbox status");
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (get("messages"), get("vsize"))
    }

    fn old_stat(&self, user: &str) -> (u64, u64) {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.lab.old.conf_path())
            .args(["mailbox", "status", "-u", user, "-t", "messages vsize", "*"])
            .output()
            .expect("doveadm mailbox status");
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (get("messages"), get("vsize"))
    }

    fn add_user(&self, n: u32, host: &str) {
        self.lab.ldap.add_user(&login(n), &password(n), host);
    }

    // -------------------------------------------------------------- tools

    /// gen.py into a store; returns (msgs, MB, APPEND-phase seconds, wall).
    fn gen(
        &self,
        user: &str,
        port: u16,
        n: usize,
        seed: u32,
        tag: &str,
        conns: u32,
    ) -> (u64, f64, f64, Ran) {
        self.gen_sep(user, port, n, seed, tag, conns, None)
    }

    /// `sep`: load through benches/migrate/ingest.py, which runs gen.py's
    /// corpus and loader with '/' in folder names mapped to `sep` (the NEW
    /// store refuses '/' in a name).
    #[allow(clippy::too_many_arguments)]
    fn gen_sep(
        &self,
        user: &str,
        port: u16,
        n: usize,
        seed: u32,
        tag: &str,
        conns: u32,
        sep: Option<char>,
    ) -> (u64, f64, f64, Ran) {
        let mut cmd = Command::new("python3");
        match sep {
            None => {
                cmd.arg(gen_py());
            }
            Some(c) => {
                cmd.arg(support::repo_dir().join("benches/migrate/ingest.py"))
                    .args(["--gen", &gen_py(), "--sep", &c.to_string()]);
            }
        }
        let r = self.run(
            cmd.args(["--user", user, "--port", &port.to_string()])
                .args(["--n", &n.to_string(), "--seed", &seed.to_string()])
                .args(["--tag", tag, "--conns", &conns.to_string()]),
        );
        assert!(
            r.ok,
            "gen.py {user}@{port} failed:\n{}\n{}",
            r.lines
                .iter()
                .map(|l| l.1.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            r.stderr
        );
        // "APPEND 5000 msgs 222.1 MB to user@port conns=4: 3.71 s, 1348 msg/s, 59.9 MB/s"
        let line = r
            .lines
            .iter()
            .rev()
            .find(|l| l.1.starts_with("APPEND "))
            .map(|l| l.1.clone())
            .unwrap_or_default();
        let w: Vec<&str> = line.split_whitespace().collect();
        let msgs = w.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mb = w.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
        let secs = line
            .split(": ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN);
        (msgs, mb, secs, r)
    }

    fn mailshift(&self, cfg: &Path, sub: &str, user: &str) -> Ran {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailshift"));
        c.arg(sub).arg("--config").arg(cfg).args(["--user", user]);
        if sub == "migrate" {
            c.arg("--json");
        }
        c.env("NO_COLOR", "1");
        self.run(&mut c)
    }

    /// One `mailshift migrate` pass, recorded.
    fn ms_pass(
        &mut self,
        label: &str,
        variant: &str,
        cfg: &Path,
        user: &str,
        extra: Value,
    ) -> Value {
        sync_disks();
        let (m0, v0) = self.dstat(user);
        let r = self.mailshift(cfg, "migrate", user);
        let (m1, v1) = self.dstat(user);
        let mut done = Value::Null;
        let mut report = Value::Null;
        let mut planned_at = None;
        let mut folders: BTreeMap<String, (f64, f64, u64, u64, u64)> = BTreeMap::new();
        for (t, l) in &r.lines {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                continue;
            };
            match v["event"].as_str() {
                Some("done") => done = v,
                Some("result") => report = v["report"].clone(),
                Some("planned") => planned_at = Some(*t),
                Some("folder_start") => {
                    let f = v["folder"].as_str().unwrap_or("").to_string();
                    let e = folders.entry(f).or_insert((*t, *t, 0, 0, 0));
                    e.0 = *t;
                    e.1 = *t;
                    e.4 = v["messages"].as_u64().unwrap_or(0);
                }
                Some("copied") => {
                    let f = v["folder"].as_str().unwrap_or("").to_string();
                    let e = folders.entry(f).or_insert((*t, *t, 0, 0, 0));
                    e.1 = *t;
                    e.2 = v["messages"].as_u64().unwrap_or(0);
                    e.3 = v["bytes"].as_u64().unwrap_or(0);
                }
                _ => {}
            }
        }
        if !r.ok {
            eprintln!(
                "mailshift {label} {user} failed ({:?}):\n{}\n{}",
                r.code,
                r.lines
                    .iter()
                    .map(|l| l.1.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                r.stderr
            );
        }
        let msgs = done["messages"].as_u64().unwrap_or(0);
        let bytes = done["bytes"].as_u64().unwrap_or(0);
        let per_folder: Vec<Value> = folders
            .iter()
            .map(|(f, (s, e, m, b, planned))| {
                json!({"folder": f, "start_s": r3(*s), "end_s": r3(*e), "secs": r3(e - s),
                       "planned": planned, "messages": m, "bytes": b,
                       "msgs_per_s": r1(*m as f64 / (e - s).max(1e-3))})
            })
            .collect();
        let unchanged = report["folders"]
            .as_array()
            .map(|a| a.iter().filter(|f| f["unchanged"] == json!(true)).count())
            .unwrap_or(0);
        let mut v = json!({
            "tool": format!("mailshift{}", if variant == "tls" { String::new() } else { format!("-{variant}") }),
            "label": label, "variant": variant, "user": user, "ok": r.ok,
            "wall_s": r3(r.wall), "engine_s": done["seconds"].as_f64().map(r3),
            "messages": msgs, "bytes": bytes, "MB": r1(bytes as f64 / 1e6),
            "msgs_per_s": r1(msgs as f64 / r.wall), "MB_per_s": r2(bytes as f64 / 1e6 / r.wall),
            "tool_cpu_s": r2(r.cpu), "tool_maxrss_mib": r1(children_maxrss_mib()),
            "old_dovecot_cpu_s": r2(r.old_cpu), "new_dovecot_cpu_s": r2(r.new_cpu),
            "dest_new_msgs": m1 as i64 - m0 as i64, "dest_new_MB": r1((v1 as f64 - v0 as f64) / 1e6),
            "planned_at_s": planned_at.map(r3),
            "folders_unchanged": unchanged,
            "folders": per_folder,
            "report": report,
        });
        merge(&mut v, extra);
        if !r.stderr.trim().is_empty() {
            v["stderr_tail"] = json!(support::tail(&r.stderr, 5));
        }
        self.record(v.clone());
        v
    }

    fn mbsync_rc(&self, src: u32, dst: u32) -> PathBuf {
        let tpl =
            fs::read_to_string(format!("{PEERS}/peers/mbsync/mbsyncrc.in")).expect("mbsyncrc.in");
        let state = self.dir.path().join(format!("mbsync/state-{}", login(dst)));
        fs::create_dir_all(&state).expect("mkdir state");
        let text = tpl
            .replace("Port 31143", &format!("Port {}", self.lab.old.imap_port()))
            .replace("Port 31243", &format!("Port {}", self.lab.new.imap_port()))
            .replace(
                "SyncState /tmp/peers/mbsync/state-@DST@/",
                &format!("SyncState {}/", state.display()),
            )
            .replace("@SRCN@", &format!("{src:04}"))
            .replace("@DSTN@", &format!("{dst:04}"))
            .replace("@SRC@", &login(src))
            .replace("@DST@", &login(dst));
        assert!(support::placeholders(&text).is_empty(), "mbsyncrc: {text}");
        let p = self
            .dir
            .path()
            .join(format!("mbsync/mbsyncrc-{}", login(dst)));
        fs::write(&p, text).expect("write mbsyncrc");
        p
    }

    fn mbsync(&mut self, label: &str, src: u32, dst: u32, extra: Value) -> Value {
        let rc = self.mbsync_rc(src, dst);
        sync_disks();
        let u = login(dst);
        let (m0, v0) = self.dstat(&u);
        let r = self.run(Command::new("mbsync").arg("-c").arg(&rc).arg("migrate"));
        let (m1, v1) = self.dstat(&u);
        if !r.ok {
            eprintln!(
                "mbsync {label} failed ({:?}): {}",
                r.code,
                support::tail(&r.stderr, 10)
            );
        }
        let dm = m1 as f64 - m0 as f64;
        let db = (v1 as f64 - v0 as f64) / 1e6;
        let mut v = json!({
            "tool": "mbsync", "label": label, "src": login(src), "user": u, "ok": r.ok,
            "wall_s": r3(r.wall), "messages": dm, "MB": r1(db),
            "msgs_per_s": r1(dm / r.wall), "MB_per_s": r2(db / r.wall),
            "tool_cpu_s": r2(r.cpu), "old_dovecot_cpu_s": r2(r.old_cpu), "new_dovecot_cpu_s": r2(r.new_cpu),
            "dest_msgs_after": m1,
        });
        merge(&mut v, extra);
        if !r.ok {
            v["stderr_tail"] = json!(support::tail(&r.stderr, 5));
        }
        self.record(v.clone());
        v
    }

    fn raw(&mut self, label: &str, dst: u32, n: usize) -> Value {
        sync_disks();
        let u = login(dst);
        let port = self.lab.new.imap_port();
        let (msgs, mb, secs, r) = self.gen_sep(&u, port, n, 1, "base", 4, Some('.'));
        let (m1, _) = self.dstat(&u);
        let v = json!({
            "tool": "raw-append-4conn", "label": label, "user": u, "ok": r.ok && m1 == msgs,
            "wall_s": r3(secs), "process_wall_s": r3(r.wall), "messages": msgs, "MB": mb,
            "msgs_per_s": r1(msgs as f64 / secs), "MB_per_s": r2(mb / secs),
            "new_dovecot_cpu_s": r2(r.new_cpu), "loader_cpu_s": r2(r.cpu), "dest_msgs_after": m1,
            "note": "APPEND phase only (logged in, folders created), gen.py corpus+loader via benches/migrate/ingest.py --sep . --conns 4",
        });
        self.record(v.clone());
        v
    }

    fn doveadm(&mut self, label: &str, src: u32, dst: u32) -> Value {
        sync_disks();
        let u = login(dst);
        let (m0, v0) = self.dstat(&u);
        let r = self.run(
            Command::new("doveadm")
                .arg("-c")
                .arg(self.lab.new.conf_path())
                .args(["-o", "imapc_host=127.0.0.1"])
                .args(["-o", &format!("imapc_port={}", self.lab.old.imap_port())])
                .args(["-o", &format!("imapc_user={}", login(src))])
                .args(["-o", &format!("imapc_password={}", password(src))])
                .args(["-o", "imapc_features=rfc822.size fetch-headers"])
                .args(["-o", "mail_prefetch_count=20"])
                .args(["backup", "-R", "-u", &u, "imapc:"]),
        );
        let (m1, v1) = self.dstat(&u);
        let dm = m1 as f64 - m0 as f64;
        let db = (v1 as f64 - v0 as f64) / 1e6;
        let mut v = json!({
            "tool": "doveadm-backup", "label": label, "src": login(src), "user": u, "ok": r.ok && m1 > 0,
            "code": r.code, "wall_s": r3(r.wall), "messages": dm, "MB": r1(db),
            "msgs_per_s": r1(dm / r.wall), "MB_per_s": r2(db / r.wall),
            "tool_cpu_s": r2(r.cpu), "old_dovecot_cpu_s": r2(r.old_cpu), "new_dovecot_cpu_s": r2(r.new_cpu),
        });
        if !r.ok || m1 == 0 {
            v["stderr_tail"] = json!(support::tail(&r.stderr, 6));
        }
        self.record(v.clone());
        v
    }

    fn verify(&mut self, cfg: &Path, user: &str, label: &str) -> bool {
        let r = self.mailshift(cfg, "verify", user);
        let out: Vec<&str> = r.lines.iter().map(|l| l.1.as_str()).collect();
        let differs: Vec<&str> = out
            .iter()
            .copied()
            .filter(|l| !l.starts_with("ok "))
            .collect();
        let v = json!({
            "tool": "mailshift-verify", "label": label, "user": user, "ok": r.ok,
            "code": r.code, "wall_s": r3(r.wall), "tool_cpu_s": r2(r.cpu),
            "summary": out.last().copied().unwrap_or(""),
            "not_ok_lines": differs.iter().take(20).collect::<Vec<_>>(),
        });
        let mut v = v;
        if !r.ok || !r.stderr.trim().is_empty() {
            v["stderr_tail"] = json!(support::tail(&r.stderr, 10));
            v["stderr_head"] = json!(r.stderr.lines().take(8).collect::<Vec<_>>().join("\n"));
        }
        if !r.ok {
            eprintln!("verify {user}: FAILED\n{}\n{}", out.join("\n"), r.stderr);
        }
        self.record(v);
        r.ok
    }

    /// A copy of an OLD user's whole mail home under another login (the
    /// corpus is loaded once over IMAP; the copies are byte-identical).
    fn clone_old_user(&self, from: u32, to: u32) {
        let a = self.lab.old.mail_home(&login(from));
        let b = self.lab.old.mail_home(&login(to));
        let st = Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(&b)
            .status()
            .expect("cp");
        assert!(st.success(), "cp -a {} {}", a.display(), b.display());
    }

    fn write_config(&self, name: &str, plain: bool) -> PathBuf {
        let state = self.dir.path().join(format!("state-{name}"));
        let mut text = self
            .lab
            .mailshift_config(&format!(
                "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\n",
                state.display()
            ))
            .replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3");
        if plain {
            let o = self.lab.old.imap_port();
            let n = self.lab.new.imaps_port();
            let before = text.clone();
            text = text
                .replace(
                    &format!("imap+starttls://127.0.0.1:{o}"),
                    &format!("imap://127.0.0.1:{o}"),
                )
                .replace(
                    &format!("imaps://127.0.0.1:{n}"),
                    &format!("imap://127.0.0.1:{}", self.lab.new.imap_port()),
                );
            assert_ne!(before, text, "plain config: nothing replaced");
        }
        let p = self.dir.path().join(format!("mailshift-{name}.toml"));
        fs::write(&p, text).expect("write config");
        p
    }
}

fn merge(v: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (v.as_object_mut(), extra) {
        a.extend(b);
    }
}

fn sync_disks() {
    let _ = Command::new("sync").status();
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn list(xs: &[f64], digits: usize) -> String {
    xs.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let a = args();
    let dir = support::shared_tempdir("mailshift-migrate-bench-");
    let out_dir = support::repo_dir().join("target/bench");
    fs::create_dir_all(&out_dir).expect("mkdir target/bench");
    let jsonl_path = out_dir.join("migrate.jsonl");
    let jsonl = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl_path)
        .expect("open migrate.jsonl");
    let run_id = format!("migrate-{}", now_secs());
    eprintln!(
        "mailshift migrate bench {run_id}: n={} rounds={} big={} quick={} binary={}",
        a.n,
        a.rounds,
        a.big,
        a.quick,
        env!("CARGO_BIN_EXE_mailshift")
    );
    let t_start = Instant::now();
    let lab = Lab::start(true);
    eprintln!(
        "lab: ldap {} old imap {} new imap {} / imaps {}",
        lab.ldap.port(),
        lab.old.imap_port(),
        lab.new.imap_port(),
        lab.new.imaps_port()
    );
    let mut b = Bench {
        lab,
        dir,
        jsonl,
        run_id,
        results: Vec::new(),
    };
    let old_port = b.lab.old.imap_port();
    let cfg_tls = b.write_config("tls", false);
    let cfg_plain = b.write_config("plain", true);

    // ---- corpus: once over IMAP into user1000, then byte copies per source.
    const BASE: u32 = 1000;
    b.add_user(BASE, support::proxy::OLD_HOST);
    let t = Instant::now();
    let (lm, lmb, lsecs, _) = b.gen(&login(BASE), old_port, a.n, 1, "base", 4);
    let (om, ov) = b.old_stat(&login(BASE));
    b.record(
        json!({"tool": "load-old", "user": login(BASE), "messages": lm, "MB": lmb,
        "append_s": r2(lsecs), "wall_s": r2(t.elapsed().as_secs_f64()),
        "old_messages": om, "old_MB": r1(ov as f64 / 1e6), "seed": 1}),
    );
    let variants: Vec<&str> = if a.plain {
        vec!["tls", "plain"]
    } else {
        vec!["tls"]
    };
    // Source users: 1001.. (one per mailshift run: the login is the same on both stores).
    let mut next_src = BASE + 1;
    let mut next_dst = 2001u32;
    let mut ms_users: Vec<(String, PathBuf, u32)> = Vec::new(); // (variant, cfg, src)

    // ---- 1. first passes, interleaved, rotating order.
    let mut tools: Vec<&str> = variants.clone();
    tools.extend(["mbsync", "raw"]);
    if a.doveadm {
        tools.push("doveadm");
    }
    let mut mbsync_dsts: Vec<(u32, u32)> = Vec::new();
    let mut first: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for round in 0..a.rounds {
        let mut order = tools.clone();
        order.rotate_left(round % tools.len());
        eprintln!("round {}: {order:?}", round + 1);
        for tool in order {
            let label = format!("pass1_r{}", round + 1);
            let v = match tool {
                "tls" | "plain" => {
                    let src = next_src;
                    next_src += 1;
                    b.add_user(src, support::proxy::OLD_HOST);
                    b.clone_old_user(BASE, src);
                    let cfg = if tool == "tls" {
                        cfg_tls.clone()
                    } else {
                        cfg_plain.clone()
                    };
                    let v = b.ms_pass(
                        &label,
                        tool,
                        &cfg,
                        &login(src),
                        json!({"round": round + 1, "phase": "first"}),
                    );
                    ms_users.push((tool.to_string(), cfg, src));
                    v
                }
                "mbsync" => {
                    let dst = next_dst;
                    next_dst += 1;
                    b.add_user(dst, support::proxy::NEW_HOST);
                    mbsync_dsts.push((BASE, dst));
                    b.mbsync(
                        &label,
                        BASE,
                        dst,
                        json!({"round": round + 1, "phase": "first"}),
                    )
                }
                "raw" => {
                    let dst = next_dst;
                    next_dst += 1;
                    b.add_user(dst, support::proxy::NEW_HOST);
                    b.raw(&label, dst, a.n)
                }
                "doveadm" => {
                    let dst = next_dst;
                    next_dst += 1;
                    b.add_user(dst, support::proxy::NEW_HOST);
                    b.doveadm(&label, BASE, dst)
                }
                _ => unreachable!(),
            };
            first.entry(tool.to_string()).or_default().push(v);
        }
    }

    // ---- 2. incremental passes on the first TLS user (and plain) and mbsync r1.
    let mut inc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut inc_copied: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let ms_first: Vec<(String, PathBuf, u32)> = variants
        .iter()
        .filter_map(|v| ms_users.iter().find(|u| u.0 == *v).cloned())
        .collect();
    let (mb_src, mb_dst) = mbsync_dsts[0];
    for rep in 1..=3 {
        for (variant, cfg, src) in &ms_first {
            let v = b.ms_pass(
                &format!("nochange_{rep}"),
                variant,
                cfg,
                &login(*src),
                json!({"phase": "nochange", "mailbox": a.n}),
            );
            inc.entry(format!("ms-{variant}-nochange"))
                .or_default()
                .push(f(&v, "wall_s"));
            inc.entry(format!("ms-{variant}-nochange-engine"))
                .or_default()
                .push(f(&v, "engine_s"));
            inc_copied
                .entry(format!("ms-{variant}-nochange"))
                .or_default()
                .push(f(&v, "messages"));
        }
        let v = b.mbsync(
            &format!("nochange_{rep}"),
            mb_src,
            mb_dst,
            json!({"phase": "nochange", "mailbox": a.n}),
        );
        inc.entry("mbsync-nochange".into())
            .or_default()
            .push(f(&v, "wall_s"));
    }
    // +1 % twice (seeds 2 and 3, as the peers did), into every source in use.
    let pct = (a.n / 100).max(1);
    for (k, (seed, tag)) in [(2u32, "inc"), (3, "inc2")].into_iter().enumerate() {
        let mut srcs: Vec<u32> = ms_first.iter().map(|u| u.2).collect();
        srcs.push(mb_src);
        for s in srcs {
            b.gen(&login(s), old_port, pct, seed, tag, 1);
        }
        for (variant, cfg, src) in &ms_first {
            let v = b.ms_pass(
                &format!("plus1pct_{}", k + 1),
                variant,
                cfg,
                &login(*src),
                json!({"phase": "plus1pct", "mailbox": a.n, "added": pct}),
            );
            inc.entry(format!("ms-{variant}-1pct"))
                .or_default()
                .push(f(&v, "wall_s"));
            inc.entry(format!("ms-{variant}-1pct-engine"))
                .or_default()
                .push(f(&v, "engine_s"));
            inc_copied
                .entry(format!("ms-{variant}-1pct"))
                .or_default()
                .push(f(&v, "messages"));
        }
        let v = b.mbsync(
            &format!("plus1pct_{}", k + 1),
            mb_src,
            mb_dst,
            json!({"phase": "plus1pct", "mailbox": a.n}),
        );
        inc.entry("mbsync-1pct".into())
            .or_default()
            .push(f(&v, "wall_s"));
        inc_copied
            .entry("mbsync-1pct".into())
            .or_default()
            .push(f(&v, "messages"));
    }

    // ---- verify every mailshift user (first-pass ones are up to date after one more pass).
    let mut verified = Vec::new();
    for (variant, cfg, src) in ms_users.clone() {
        let u = login(src);
        let is_inc = ms_first.iter().any(|m| m.2 == src);
        let ok = b.verify(
            &cfg,
            &u,
            &format!(
                "verify_{variant}{}",
                if is_inc { "_after_inc" } else { "_after_pass1" }
            ),
        );
        verified.push((u, variant, ok));
    }

    // ---- big mailbox.
    let mut big: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut big_first: Option<Value> = None;
    let mut big_mbsync_first: Option<Value> = None;
    let mut big_verified = None;
    if a.big > 0 {
        let src = 1900u32;
        b.add_user(src, support::proxy::OLD_HOST);
        let t = Instant::now();
        let (lm, lmb, lsecs, _) = b.gen(&login(src), old_port, a.big, 1, "base", 4);
        b.record(
            json!({"tool": "load-old", "user": login(src), "messages": lm, "MB": lmb,
            "append_s": r2(lsecs), "wall_s": r2(t.elapsed().as_secs_f64()), "seed": 1}),
        );
        let u = login(src);
        big_first = Some(b.ms_pass(
            "big_pass1",
            "tls",
            &cfg_tls,
            &u,
            json!({"phase": "first", "mailbox": a.big}),
        ));
        let mdst = 2900u32;
        b.add_user(mdst, support::proxy::NEW_HOST);
        if a.big_mbsync {
            big_mbsync_first = Some(b.mbsync(
                "big_pass1",
                src,
                mdst,
                json!({"phase": "first", "mailbox": a.big}),
            ));
        }
        for rep in 1..=3 {
            let v = b.ms_pass(
                &format!("big_nochange_{rep}"),
                "tls",
                &cfg_tls,
                &u,
                json!({"phase": "nochange", "mailbox": a.big}),
            );
            big.entry("ms-nochange".into())
                .or_default()
                .push(f(&v, "wall_s"));
            big.entry("ms-nochange-engine".into())
                .or_default()
                .push(f(&v, "engine_s"));
            if a.big_mbsync {
                let v = b.mbsync(
                    &format!("big_nochange_{rep}"),
                    src,
                    mdst,
                    json!({"phase": "nochange", "mailbox": a.big}),
                );
                big.entry("mbsync-nochange".into())
                    .or_default()
                    .push(f(&v, "wall_s"));
            }
        }
        let pct = (a.big / 100).max(1);
        b.gen(&u, old_port, pct, 4, "incbig", 1);
        let v = b.ms_pass(
            "big_plus1pct",
            "tls",
            &cfg_tls,
            &u,
            json!({"phase": "plus1pct", "mailbox": a.big, "added": pct}),
        );
        big.entry("ms-1pct".into())
            .or_default()
            .push(f(&v, "wall_s"));
        big.entry("ms-1pct-engine".into())
            .or_default()
            .push(f(&v, "engine_s"));
        big.entry("ms-1pct-copied".into())
            .or_default()
            .push(f(&v, "messages"));
        if a.big_mbsync {
            let v = b.mbsync(
                "big_plus1pct",
                src,
                mdst,
                json!({"phase": "plus1pct", "mailbox": a.big}),
            );
            big.entry("mbsync-1pct".into())
                .or_default()
                .push(f(&v, "wall_s"));
        }
        big_verified = Some(b.verify(&cfg_tls, &u, "verify_big"));
    }

    // ---- 3. the table.
    let col = |tool: &str, k: &str| -> Vec<f64> {
        first
            .get(tool)
            .map(|vs| vs.iter().map(|v| f(v, k)).collect())
            .unwrap_or_default()
    };
    let raw_rate = median(col("raw", "msgs_per_s"));
    let mb_rate = median(col("mbsync", "msgs_per_s"));
    let mut t = String::new();
    t.push_str(&format!(
        "\n## mailshift migrate bench ({} msgs, seed 1, {} rounds, run {})\n\n",
        a.n, a.rounds, b.run_id
    ));
    t.push_str("### First pass (fresh destination user each run; `sync` before each)\n\n");
    t.push_str("| tool | runs, wall s | median wall s | msgs | MB | msg/s | MB/s | tool CPU s | OLD / NEW Dovecot CPU s | vs raw 4-conn | vs mbsync |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    let names = [
        ("tls", "mailshift (lab config: STARTTLS→OLD, TLS→NEW)"),
        ("plain", "mailshift (plain imap:// both sides)"),
        ("mbsync", "mbsync 1.4.4 (peers' mbsyncrc)"),
        ("raw", "raw APPEND, 4 conns (APPEND phase only)"),
        ("doveadm", "doveadm backup -R, imapc"),
    ];
    for (k, name) in names {
        let Some(vs) = first.get(k) else { continue };
        let walls = col(k, "wall_s");
        let rate = median(col(k, "msgs_per_s"));
        let msgs = median(vs.iter().map(|v| f(v, "messages")).collect());
        let mb = median(vs.iter().map(|v| f(v, "MB")).collect());
        let cpu = col(k, "tool_cpu_s");
        let oc = median(col(k, "old_dovecot_cpu_s"));
        let nc = median(col(k, "new_dovecot_cpu_s"));
        let ok = vs.iter().all(|v| v["ok"] == json!(true));
        t.push_str(&format!(
            "| {name}{} | {} | **{:.2}** | {msgs:.0} | {mb:.1} | {rate:.0} | {:.1} | {} | {oc:.1} / {nc:.1} | {:.2} | {:.2} |\n",
            if ok { "" } else { " (FAILED run)" },
            list(&walls, 2),
            median(walls.clone()),
            median(col(k, "MB_per_s")),
            if k == "raw" { "—".to_string() } else { list(&cpu, 2) },
            rate / raw_rate,
            rate / mb_rate,
        ));
    }
    t.push_str(
        "\nPeers' figures on this machine (RESULTS.md): raw 4-conn 1,348 msg/s, doveadm backup 1,279, mbsync 769, imapsync 284.\n\
         Targets: first pass ≥ 0.9× raw ingest and ≥ 1.5× mbsync.\n",
    );
    t.push_str(&format!(
        "\n### Incremental passes ({} msgs; median of runs)\n\n",
        a.n
    ));
    t.push_str("| pass | tool | runs, wall s | median wall s | engine s (median) | copied | target |\n|---|---|---|---|---|---|---|\n");
    for variant in &variants {
        let nc = inc
            .get(&format!("ms-{variant}-nochange"))
            .cloned()
            .unwrap_or_default();
        let nce = inc
            .get(&format!("ms-{variant}-nochange-engine"))
            .cloned()
            .unwrap_or_default();
        let c = inc_copied
            .get(&format!("ms-{variant}-nochange"))
            .cloned()
            .unwrap_or_default();
        t.push_str(&format!(
            "| no change | mailshift-{variant} | {} | **{:.3}** | {:.3} | {} | ≤ 0.1 s: {} |\n",
            list(&nc, 3),
            median(nc.clone()),
            median(nce),
            list(&c, 0),
            if median(nc.clone()) <= 0.1 {
                "met"
            } else {
                "NOT met"
            }
        ));
        let p = inc
            .get(&format!("ms-{variant}-1pct"))
            .cloned()
            .unwrap_or_default();
        let pe = inc
            .get(&format!("ms-{variant}-1pct-engine"))
            .cloned()
            .unwrap_or_default();
        let c = inc_copied
            .get(&format!("ms-{variant}-1pct"))
            .cloned()
            .unwrap_or_default();
        t.push_str(&format!(
            "| +1 % ({pct} new) | mailshift-{variant} | {} | **{:.3}** | {:.3} | {} | ≤ 0.3 s: {} |\n",
            list(&p, 3), median(p.clone()), median(pe), list(&c, 0),
            if median(p.clone()) <= 0.3 { "met" } else { "NOT met" }
        ));
    }
    let nc = inc.get("mbsync-nochange").cloned().unwrap_or_default();
    t.push_str(&format!(
        "| no change | mbsync | {} | **{:.3}** | — | — | — |\n",
        list(&nc, 3),
        median(nc.clone())
    ));
    let p = inc.get("mbsync-1pct").cloned().unwrap_or_default();
    let c = inc_copied.get("mbsync-1pct").cloned().unwrap_or_default();
    t.push_str(&format!(
        "| +1 % ({pct} new) | mbsync | {} | **{:.3}** | — | {} | — |\n",
        list(&p, 3),
        median(p.clone()),
        list(&c, 0)
    ));
    if a.big > 0 {
        t.push_str(&format!(
            "\n### {}-message mailbox (mailshift lab config)\n\n",
            a.big
        ));
        t.push_str("| pass | tool | runs, wall s | median wall s | engine s | target |\n|---|---|---|---|---|---|\n");
        if let Some(v) = &big_first {
            t.push_str(&format!(
                "| first pass ({:.0} msgs, {:.0} MB) | mailshift | {:.2} | {:.0} msg/s, {:.1} MB/s, CPU {:.2} s | {:.2} | — |\n",
                f(v, "messages"), f(v, "MB"), f(v, "wall_s"), f(v, "msgs_per_s"), f(v, "MB_per_s"), f(v, "tool_cpu_s"), f(v, "engine_s")
            ));
        }
        if let Some(v) = &big_mbsync_first {
            t.push_str(&format!(
                "| first pass | mbsync | {:.2} | {:.0} msg/s, {:.1} MB/s, CPU {:.2} s | — | — |\n",
                f(v, "wall_s"),
                f(v, "msgs_per_s"),
                f(v, "MB_per_s"),
                f(v, "tool_cpu_s")
            ));
        }
        let g = |k: &str| big.get(k).cloned().unwrap_or_default();
        t.push_str(&format!(
            "| no change | mailshift | {} | **{:.3}** | {:.3} | ≤ 1 s: {} |\n",
            list(&g("ms-nochange"), 3),
            median(g("ms-nochange")),
            median(g("ms-nochange-engine")),
            if median(g("ms-nochange")) <= 1.0 {
                "met"
            } else {
                "NOT met"
            }
        ));
        t.push_str(&format!(
            "| +1 % ({} new) | mailshift | {} | **{:.3}** | {:.3} | ≤ 1 s: {} |\n",
            a.big / 100,
            list(&g("ms-1pct"), 3),
            median(g("ms-1pct")),
            median(g("ms-1pct-engine")),
            if median(g("ms-1pct")) <= 1.0 {
                "met"
            } else {
                "NOT met"
            }
        ));
        if a.big_mbsync {
            t.push_str(&format!(
                "| no change | mbsync | {} | **{:.3}** | — | — |\n",
                list(&g("mbsync-nochange"), 3),
                median(g("mbsync-nochange"))
            ));
            t.push_str(&format!(
                "| +1 % | mbsync | {} | **{:.3}** | — | — |\n",
                list(&g("mbsync-1pct"), 3),
                median(g("mbsync-1pct"))
            ));
        }
    }
    t.push_str("\n### Verify (`mailshift verify`, exit 0 = complete)\n\n");
    for (u, variant, ok) in &verified {
        t.push_str(&format!(
            "- {u} ({variant}): {}\n",
            if *ok { "verified" } else { "**NOT complete**" }
        ));
    }
    if let Some(ok) = big_verified {
        t.push_str(&format!(
            "- {} ({}-message mailbox): {}\n",
            login(1900),
            a.big,
            if ok { "verified" } else { "**NOT complete**" }
        ));
    }
    let all_ok = verified.iter().all(|v| v.2) && big_verified.unwrap_or(true);
    t.push_str(&format!(
        "\nverify after the mailshift passes: {}\n",
        if all_ok {
            "PASSED for every user"
        } else {
            "FAILED for some user"
        }
    ));
    t.push_str(&format!(
        "\nJSON lines: {} (run_id {}); total bench time {:.0} s\n",
        jsonl_path.display(),
        b.run_id,
        t_start.elapsed().as_secs_f64()
    ));
    println!("{t}");
    b.record(json!({"tool": "summary", "table_markdown": t, "verify_ok": all_ok}));
    drop(b);
    if !all_ok {
        std::process::exit(1);
    }
}
