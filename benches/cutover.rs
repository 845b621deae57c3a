//! Cutover benchmark: the hold of `mailshift migrate --cutover` for a big user.
//!
//!   cargo bench --bench cutover -- [--quick] [--users N] [--before K] [--messages 20000]
//!
//! Issue target: a user with 20,000 messages and 1 % changed since the last
//! presync: p99 under 2 s from hold to release.
//!
//! One lab (slapd with syncprov + OLD Maildir + NEW sdbox, tests/support), the
//! proxy (`mailshift serve`, following LDAP, so the hold kicks real sessions),
//! the peers' corpus (/work/shared/peers/corpus/gen.py) loaded once and copied
//! per user with `cp -a`. Per user: one presync (`mailshift migrate`), then
//! the 1 % change (gen.py --n M/100 --seed 2 --tag inc, and +FLAGS \Flagged on
//! 1 % of every folder's messages, over IMAP as `U*admin`), then
//! `mailshift migrate --cutover --json`; `hold_seconds` comes from its
//! `{"event":"cutover"}` line. Then `mailshift verify` and LDAP's mailHost.
//!
//! Two orders of the change:
//! * "in-hold" (`--users N`, default 5): the CLI talks to LDAP through a relay in
//!   this process that holds back slapd's reply to the hold modify (the one that
//!   sets mailshiftMigrationState: cutover) until the 1 % change is made. So the
//!   change is exactly "since the last presync" and the final pass inside the
//!   hold has to carry all of it. `hold_seconds` starts after that reply (see
//!   src/migrate/cutover.rs), so the wait is not counted in it.
//! * "before" (`--before K`, default 2): the change is made before the cutover
//!   command (the literal recipe); the command's own presync then absorbs it and
//!   the final pass sees (nearly) nothing.
//!
//! Prints a markdown table; JSON lines go to target/bench/cutover.jsonl.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::proxy::{NEW_HOST, OLD_HOST};
use support::{ImapClient, Lab, Mailshift};

const PEERS: &str = "/work/shared/peers";

struct Args {
    quick: bool,
    users: usize,
    before: usize,
    messages: usize,
    no_proxy: bool,
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
    Args {
        quick,
        users: val("--users").unwrap_or(if quick { 2 } else { 5 }),
        before: val("--before").unwrap_or(if quick { 1 } else { 2 }),
        messages: val("--messages").unwrap_or(if quick { 2000 } else { 20000 }),
        no_proxy: has("--no-proxy"),
    }
}

fn gen_py() -> String {
    std::env::var("MIGRATE_BENCH_GEN").unwrap_or_else(|_| format!("{PEERS}/corpus/gen.py"))
}
fn login(n: u32) -> String {
    format!("cut{n:04}")
}
fn password(n: u32) -> String {
    format!("pw{n:04}")
}

// ------------------------------------------------------------- LDAP gate relay

/// Holds back slapd's reply to the hold modify until opened.
#[derive(Default)]
struct GateState {
    armed: bool,
    triggered: bool,
    open: bool,
    triggered_at: Option<Instant>,
}

#[derive(Default)]
struct Gate {
    st: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    fn arm(&self) {
        let mut s = self.st.lock().expect("gate");
        *s = GateState {
            armed: true,
            ..GateState::default()
        };
    }
    fn disarm(&self) {
        let mut s = self.st.lock().expect("gate");
        *s = GateState::default();
        self.cv.notify_all();
    }
    /// Waits until the hold modify passed the relay (or `deadline`, or `alive` false).
    fn wait_triggered(&self, deadline: Instant, alive: &dyn Fn() -> bool) -> Option<Instant> {
        let mut s = self.st.lock().expect("gate");
        loop {
            if let Some(t) = s.triggered_at {
                return Some(t);
            }
            if Instant::now() > deadline || !alive() {
                return None;
            }
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(20))
                .expect("gate")
                .0;
        }
    }
    fn open(&self) {
        let mut s = self.st.lock().expect("gate");
        s.open = true;
        self.cv.notify_all();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// 127.0.0.1:port → slapd, with the gate on the connection that carries the
/// modify setting mailshiftMigrationState to "cutover" (BER OCTET STRING
/// `04 07 cutover`: only the hold modify writes that value).
fn start_ldap_relay(upstream: u16, gate: Arc<Gate>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(client) = c else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let gated = Arc::new(AtomicBool::new(false));
            // client → server: watch for the hold modify.
            {
                let (mut r, mut w) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let gate = Arc::clone(&gate);
                let gated = Arc::clone(&gated);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut look = std::mem::take(&mut tail);
                        look.extend_from_slice(&buf[..n]);
                        {
                            let mut s = gate.st.lock().expect("gate");
                            if s.armed && !s.triggered && contains(&look, b"\x04\x07cutover") {
                                s.triggered = true;
                                s.triggered_at = Some(Instant::now());
                                gated.store(true, Ordering::SeqCst);
                                gate.cv.notify_all();
                            }
                        }
                        tail = look[look.len().saturating_sub(16)..].to_vec();
                        if w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            }
            // server → client: hold replies while the gate is closed.
            {
                let (mut r, mut w) = (server, client);
                let gate = Arc::clone(&gate);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if gated.load(Ordering::SeqCst) {
                            let mut s = gate.st.lock().expect("gate");
                            while s.armed && !s.open {
                                s = gate.cv.wait(s).expect("gate");
                            }
                            drop(s);
                            gated.store(false, Ordering::SeqCst);
                        }
                        if w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

// ------------------------------------------------------------------ running

struct Ran {
    ok: bool,
    wall: f64,
    lines: Vec<(f64, String)>,
    stderr: String,
}

fn run_cmd(cmd: &mut Command, errf: &Path) -> Ran {
    let err = fs::File::create(errf).expect("stderr file");
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
    let st = child.wait().expect("wait");
    Ran {
        ok: st.success(),
        wall: t0.elapsed().as_secs_f64(),
        lines,
        stderr: fs::read_to_string(errf).unwrap_or_default(),
    }
}

struct Bench {
    lab: Lab,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    gate: Arc<Gate>,
    jsonl: fs::File,
    run_id: String,
}

impl Bench {
    fn record(&mut self, mut v: Value) {
        v["run_id"] = json!(self.run_id);
        v["ts"] = json!(now_secs());
        let line = serde_json::to_string(&v).expect("json");
        writeln!(self.jsonl, "{line}").expect("write jsonl");
        eprintln!(
            "  {}",
            support::tail(&line, 1)
                .chars()
                .take(400)
                .collect::<String>()
        );
    }

    fn gen(&self, user: &str, n: usize, seed: u32, tag: &str, conns: u32) -> f64 {
        let t = Instant::now();
        let out = Command::new("python3")
            .arg(gen_py())
            .args([
                "--user",
                user,
                "--port",
                &self.lab.old.imap_port().to_string(),
            ])
            .args(["--n", &n.to_string(), "--seed", &seed.to_string()])
            .args(["--tag", tag, "--conns", &conns.to_string()])
            .output()
            .expect("gen.py");
        assert!(
            out.status.success(),
            "gen.py {user} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    }

    /// +FLAGS (\Flagged) on the first 1 % (at least 1) of every non-empty
    /// folder of the OLD store, as `user*admin`. Returns messages touched.
    fn flag_1pct(&self, user: &str) -> u64 {
        let mut c = ImapClient::connect(self.lab.old.imap_port());
        c.login(
            &format!("{user}*{}", self.lab.old.master_user()),
            self.lab.old.master_password(),
        );
        let lines = c.ok("LIST \"\" \"*\"");
        let names: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with("* LIST") && !l.contains("\\Noselect"))
            .filter_map(|l| list_name(l))
            .collect();
        let mut touched = 0u64;
        for name in names {
            let st = c.ok(&format!(
                "STATUS {} (MESSAGES)",
                support::imap::quote(&name)
            ));
            let n: u64 = st
                .iter()
                .find_map(|l| {
                    let i = l.find("MESSAGES ")?;
                    l[i + 9..]
                        .trim_end_matches(')')
                        .split([' ', ')'])
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            if n == 0 {
                continue;
            }
            let k = n.div_ceil(100);
            c.ok(&format!("SELECT {}", support::imap::quote(&name)));
            c.ok(&format!("STORE 1:{k} +FLAGS.SILENT (\\Flagged)"));
            touched += k;
        }
        c.ok("LOGOUT");
        touched
    }

    fn change_1pct(&self, user: &str, n: usize) -> (f64, u64) {
        let t = Instant::now();
        self.gen(user, (n / 100).max(1), 2, "inc", 1);
        let flagged = self.flag_1pct(user);
        (t.elapsed().as_secs_f64(), flagged)
    }

    fn mailshift(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailshift"));
        c.args(args)
            .arg("--config")
            .arg(&self.cfg)
            .env("NO_COLOR", "1");
        c
    }

    fn mailhost(&self, user: &str) -> String {
        let out = self
            .lab
            .ldap
            .search(&format!("(uid={user})"), &["mailHost"]);
        out.lines()
            .find_map(|l| l.strip_prefix("mailHost: "))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    fn cutover_user(&mut self, user: &str, mode: &str, n: usize, idx: usize) -> Value {
        let errf = self.dir.path().join(format!("{user}.stderr"));
        // Presync.
        let pre = run_cmd(
            &mut self.mailshift(&["migrate", "--user", user, "--json"]),
            &errf,
        );
        assert!(pre.ok, "presync {user} failed:\n{}", pre.stderr);
        let pre_copied: u64 = pre
            .lines
            .iter()
            .filter_map(|(_, l)| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "done")
            .and_then(|v| v["messages"].as_u64())
            .unwrap_or(0);
        eprintln!("{user}: presync {:.1} s, {pre_copied} msgs", pre.wall);

        let mut change_s = 0.0;
        let mut flagged = 0;
        let mut gate_wait = None;
        let mut triggered_rel = None;
        let cut = if mode == "before" {
            (change_s, flagged) = self.change_1pct(user, n);
            run_cmd(
                &mut self.mailshift(&["migrate", "--user", user, "--cutover", "--json"]),
                &errf,
            )
        } else {
            self.gate.arm();
            let err = fs::File::create(&errf).expect("stderr");
            let t0 = Instant::now();
            let mut child = self
                .mailshift(&["migrate", "--user", user, "--cutover", "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(err)
                .spawn()
                .expect("spawn cutover");
            let out = child.stdout.take().expect("stdout");
            let reader = std::thread::spawn(move || {
                let mut lines = Vec::new();
                for l in BufReader::new(out).lines() {
                    let Ok(l) = l else { break };
                    lines.push((t0.elapsed().as_secs_f64(), l));
                }
                lines
            });
            let done = Arc::new(AtomicBool::new(false));
            let trig = self
                .gate
                .wait_triggered(Instant::now() + Duration::from_secs(300), &|| {
                    !done.load(Ordering::Relaxed)
                });
            if let Some(t) = trig {
                triggered_rel = Some(t.duration_since(t0).as_secs_f64());
                let w = Instant::now();
                (change_s, flagged) = self.change_1pct(user, n);
                gate_wait = Some(w.elapsed().as_secs_f64());
            } else {
                eprintln!("{user}: the hold modify never passed the relay");
            }
            let released = t0.elapsed().as_secs_f64();
            self.gate.open();
            let lines = reader.join().expect("reader");
            let st = child.wait().expect("wait");
            done.store(true, Ordering::Relaxed);
            self.gate.disarm();
            let mut r = Ran {
                ok: st.success(),
                wall: t0.elapsed().as_secs_f64(),
                lines,
                stderr: fs::read_to_string(&errf).unwrap_or_default(),
            };
            r.lines
                .push((released, "{\"event\":\"bench_gate_open\"}".into()));
            r.lines.sort_by(|a, b| a.0.total_cmp(&b.0));
            r
        };
        if !cut.ok {
            eprintln!("cutover {user} FAILED:\n{}", support::tail(&cut.stderr, 20));
        }
        let mut report = Value::Null;
        let mut cut_t = f64::NAN;
        for (t, l) in &cut.lines {
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                if v["event"] == "cutover" {
                    report = v["report"].clone();
                    cut_t = *t;
                }
            }
        }
        let hold = report["hold_seconds"].as_f64().unwrap_or(f64::NAN);
        let fin = &report["final_pass"];
        let sum = |k: &str| -> u64 {
            fin["folders"]
                .as_array()
                .map(|a| a.iter().map(|f| f[k].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0)
        };
        let folders = fin["folders"].as_array().map(|a| a.len()).unwrap_or(0);
        let unchanged = fin["folders"]
            .as_array()
            .map(|a| a.iter().filter(|f| f["unchanged"] == json!(true)).count())
            .unwrap_or(0);
        // Timeline of the final pass: its events come after the last "planned" event.
        let hold_start = cut_t - hold;
        let evs: Vec<(f64, Value)> = cut
            .lines
            .iter()
            .filter_map(|(t, l)| serde_json::from_str::<Value>(l).ok().map(|v| (*t, v)))
            .collect();
        let last_planned = evs
            .iter()
            .rposition(|(_, v)| v["event"] == "planned")
            .unwrap_or(0);
        let planned_at = evs.get(last_planned).map(|e| e.0);
        let mut per_folder: Vec<Value> = Vec::new();
        for (t, v) in &evs[last_planned..] {
            let f = v["folder"].as_str().unwrap_or("").to_string();
            match v["event"].as_str() {
                Some("folder_start") => per_folder.push(json!({"folder": f,
                    "start_s": r3(t - hold_start), "end_s": r3(t - hold_start),
                    "to_copy": v["messages"], "copied": 0})),
                Some("copied") => {
                    if let Some(p) = per_folder
                        .iter_mut()
                        .rev()
                        .find(|p| p["folder"] == json!(f))
                    {
                        p["end_s"] = json!(r3(t - hold_start));
                        p["copied"] = v["messages"].clone();
                    }
                }
                _ => {}
            }
        }
        let first_start = per_folder
            .iter()
            .filter_map(|p| p["start_s"].as_f64())
            .fold(f64::NAN, f64::min);
        let last_copy = per_folder
            .iter()
            .filter_map(|p| p["end_s"].as_f64())
            .fold(f64::NAN, f64::max);
        let verify = run_cmd(&mut self.mailshift(&["verify", "--user", user]), &errf);
        let host = self.mailhost(user);
        let v = json!({
            "bench": "cutover", "mode": mode, "user": user, "idx": idx, "messages": n,
            "ok": cut.ok && verify.ok && host == NEW_HOST,
            "cutover_ok": cut.ok, "verify_ok": verify.ok, "mailhost": host,
            "verify_summary": verify.lines.last().map(|l| l.1.clone()),
            "presync_s": r3(pre.wall), "presync_copied": pre_copied,
            "change_s": r3(change_s), "added": (n / 100).max(1), "flagged": flagged,
            "hold_s": r3(hold), "cutover_wall_s": r3(cut.wall),
            "gate_wait_s": gate_wait.map(r3), "hold_modify_at_s": triggered_rel.map(r3),
            "cutover_presyncs": report["presyncs"].as_array().map(|a| a.len()),
            "cutover_presync_s": report["presyncs"].as_array().map(|a| a.iter().map(|p| r3(p["seconds"].as_f64().unwrap_or(0.0))).collect::<Vec<_>>()),
            "cutover_presync_copied": report["presyncs"].as_array().map(|a| a.iter().map(|p| p["folders"].as_array().map(|fs| fs.iter().map(|f| f["copied"].as_u64().unwrap_or(0)).sum::<u64>()).unwrap_or(0)).collect::<Vec<_>>()),
            "final_pass_s": fin["seconds"].as_f64().map(r3),
            "final_copied": sum("copied"), "final_flags_updated": sum("flags_updated"),
            "final_bytes": sum("bytes"), "final_matched": sum("matched"),
            "final_folders": folders, "final_folders_unchanged": unchanged,
            "final_errors": fin["errors"].clone(),
            "timeline": {
                "planned_s": planned_at.map(|p| r3(p - hold_start)),
                "first_folder_start_s": r3(first_start),
                "last_copied_s": r3(last_copy),
                "flip_end_s": r3(hold),
                "folders": per_folder,
            },
            "stderr_tail": support::tail(&cut.stderr, 4),
        });
        self.record(v.clone());
        v
    }
}

/// The mailbox name of a `* LIST (...) "/" name` line.
fn list_name(line: &str) -> Option<String> {
    let rest = line.rsplit_once(") ")?.1;
    // rest = `"/" "name"` or `"/" name` or `NIL name`
    let after_sep = if let Some(r) = rest.strip_prefix('"') {
        let end = r.find('"')?;
        r[end + 1..].trim_start()
    } else {
        rest.split_once(' ')?.1
    };
    Some(match after_sep.strip_prefix('"') {
        Some(q) => q
            .strip_suffix('"')?
            .replace("\\\"", "\"")
            .replace("\\\\", "\\"),
        None => after_sep.to_string(),
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
fn pctl(xs: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    // nearest rank
    let k = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[k.min(v.len()) - 1]
}

fn main() {
    let a = args();
    let t_start = Instant::now();
    let out_dir = support::repo_dir().join("target/bench");
    fs::create_dir_all(&out_dir).expect("mkdir target/bench");
    let jsonl_path = out_dir.join("cutover.jsonl");
    let jsonl = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl_path)
        .expect("open cutover.jsonl");
    let run_id = format!("cutover-{}", now_secs());
    eprintln!(
        "mailshift cutover bench {run_id}: users={} (in-hold) + {} (before), messages={} quick={} binary={}",
        a.users,
        a.before,
        a.messages,
        a.quick,
        env!("CARGO_BIN_EXE_mailshift")
    );
    let dir = support::shared_tempdir("mailshift-cutover-bench-");
    let lab = Lab::start(true);
    let gate = Arc::new(Gate::default());
    let relay = start_ldap_relay(lab.ldap.port(), Arc::clone(&gate));
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\ninstance_id = \"bench\"\nhold_wait = \"30s\"\n",
        dir.path().join("state").display()
    );
    let text = lab.mailshift_config(&migration);
    let proxy = (!a.no_proxy).then(|| Mailshift::start(&text));
    // The CLI: no listeners; LDAP through the gate relay, with room for the wait.
    let direct = lab.ldap.url();
    let cli_text = text
        .replace("@IMAP_PORT@", "1")
        .replace("@IMAPS_PORT@", "2")
        .replace("@ADMIN_PORT@", "3")
        .replace(&direct, &format!("ldap://127.0.0.1:{relay}"))
        .replace(
            "cache_ttl = \"10m\"",
            "cache_ttl = \"10m\"\ntimeout = \"60s\"",
        );
    assert!(
        cli_text.contains(&format!(":{relay}")),
        "LDAP URL not replaced"
    );
    let cfg = dir.path().join("cli.toml");
    fs::write(&cfg, &cli_text).expect("write cli config");
    let mut b = Bench {
        lab,
        dir,
        cfg,
        gate,
        jsonl,
        run_id: run_id.clone(),
    };

    // Corpus once into cut1000, then byte copies.
    const BASE: u32 = 1000;
    b.lab.ldap.add_user(&login(BASE), &password(BASE), OLD_HOST);
    let load_s = b.gen(&login(BASE), a.messages, 1, "base", 4);
    eprintln!(
        "loaded {} msgs into {} in {load_s:.1} s",
        a.messages,
        login(BASE)
    );
    let total = a.users + a.before;
    let mut users = Vec::new();
    for i in 0..total {
        let n = BASE + 1 + i as u32;
        b.lab.ldap.add_user(&login(n), &password(n), OLD_HOST);
        let st = Command::new("cp")
            .arg("-a")
            .arg(b.lab.old.mail_home(&login(BASE)))
            .arg(b.lab.old.mail_home(&login(n)))
            .status()
            .expect("cp");
        assert!(st.success(), "cp -a");
        users.push((login(n), if i < a.users { "in-hold" } else { "before" }));
    }
    // An idle session per user through the proxy, to be kicked by the hold.
    let mut sessions = Vec::new();
    if let Some(p) = &proxy {
        for (i, (u, _)) in users.iter().enumerate() {
            let mut c = ImapClient::connect(p.imap_port());
            c.login(u, &password(BASE + 1 + i as u32));
            c.ok("SELECT INBOX");
            sessions.push(c);
        }
    }
    let mut rows = Vec::new();
    for (i, (u, mode)) in users.iter().enumerate() {
        let v = b.cutover_user(u, mode, a.messages, i);
        let kicked = sessions.get_mut(i).map(|c| {
            c.set_timeout(Duration::from_secs(2));
            let tag = c.send("NOOP");
            c.try_read_until_tagged(&tag).is_err()
        });
        b.record(json!({"bench": "cutover-session", "user": u, "idle_session_closed": kicked}));
        rows.push((v, kicked));
    }
    drop(sessions);

    let mut t = String::new();
    t.push_str(&format!(
        "\n## mailshift cutover bench ({} msgs/user, 1 % change = +{} msgs and \\Flagged on 1 % per folder; run {run_id})\n\n",
        a.messages,
        (a.messages / 100).max(1)
    ));
    t.push_str("| user | change made | presync s | hold s | whole cutover s | cutover presyncs (copied) | final pass: copied / flags / folders changed | first folder start s | last copy s | verify | mailHost | idle session closed |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (v, kicked) in &rows {
        t.push_str(&format!(
            "| {} | {} | {:.1} | **{:.3}** | {:.2} | {} ({}) | {} / {} / {} of {} | {} | {} | {} | {} | {} |\n",
            v["user"].as_str().unwrap_or(""),
            if v["mode"] == "in-hold" { "after the last presync (in hold)" } else { "before the cutover command" },
            v["presync_s"].as_f64().unwrap_or(f64::NAN),
            v["hold_s"].as_f64().unwrap_or(f64::NAN),
            v["cutover_wall_s"].as_f64().unwrap_or(f64::NAN),
            v["cutover_presyncs"],
            v["cutover_presync_copied"],
            v["final_copied"], v["final_flags_updated"],
            v["final_folders"].as_u64().unwrap_or(0) - v["final_folders_unchanged"].as_u64().unwrap_or(0),
            v["final_folders"],
            v["timeline"]["first_folder_start_s"],
            v["timeline"]["last_copied_s"],
            if v["verify_ok"] == json!(true) { "ok" } else { "**FAIL**" },
            v["mailhost"].as_str().unwrap_or(""),
            match kicked { Some(true) => "yes", Some(false) => "no", None => "—" },
        ));
    }
    for mode in ["in-hold", "before"] {
        let holds: Vec<f64> = rows
            .iter()
            .filter(|r| r.0["mode"] == mode)
            .filter_map(|r| r.0["hold_s"].as_f64())
            .collect();
        if holds.is_empty() {
            continue;
        }
        let walls: Vec<f64> = rows
            .iter()
            .filter(|r| r.0["mode"] == mode)
            .filter_map(|r| r.0["cutover_wall_s"].as_f64())
            .collect();
        let p99 = pctl(&holds, 99.0);
        t.push_str(&format!(
            "\n**{mode}** ({} users): hold p50 {:.3} s, p99 (= max at this n) {:.3} s, whole cutover p50 {:.2} s — target p99 < 2 s: {}\n",
            holds.len(),
            pctl(&holds, 50.0),
            p99,
            pctl(&walls, 50.0),
            if p99 < 2.0 { "met" } else { "NOT met" }
        ));
    }
    t.push_str(&format!(
        "\nJSON lines: {} (run_id {run_id}); total {:.0} s\n",
        jsonl_path.display(),
        t_start.elapsed().as_secs_f64()
    ));
    println!("{t}");
    let all_ok = rows.iter().all(|r| r.0["ok"] == json!(true));
    b.record(json!({"bench": "summary", "table_markdown": t, "ok": all_ok}));
    drop(proxy);
    drop(b);
    if !all_ok {
        std::process::exit(1);
    }
}
