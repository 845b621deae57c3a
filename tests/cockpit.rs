//! The admin's cockpit against real servers: slapd, two Dovecot stores (the
//! new one with a quota that refuses large messages), the `mailshift` CLI
//! (`plan`, `migrate --cutover`, `status`, `verify --report`), the admin API,
//! and the web page in a real headless Chromium driven over the DevTools
//! protocol.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::proxy::{NEW_HOST, OLD_HOST};
use support::{corpus, Certs, Dovecot, DovecotOpts, Lab, MailFormat, Mailshift, Slapd};

const USERS: [(&str, usize); 5] = [("u1", 12), ("u2", 18), ("u3", 24), ("u4", 30), ("u5", 9)];
/// The new store refuses messages larger than this (quota_max_mail_size).
const LIMIT_KB: u64 = 2500;

struct Setup {
    lab: Lab,
    cli_config: PathBuf,
    serve_config: String,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let certs = Certs::shared();
    let ldap = Slapd::start(true);
    for (u, _) in USERS {
        ldap.add_user(u, &format!("{u}pw"), OLD_HOST);
    }
    ldap.add_user("alice", "alicepw", OLD_HOST);
    ldap.add_user("bob", "bobpw", NEW_HOST);
    let quota = format!(
        "mail_plugins = $mail_plugins quota\nprotocol imap {{\n  mail_plugins = $mail_plugins imap_quota\n}}\n\
         plugin {{\n  quota = count:User quota\n  quota_vsizes = yes\n  quota_rule = *:storage=1G\n  quota_max_mail_size = {LIMIT_KB}k\n}}\n"
    );
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| {
            Dovecot::start(
                "old",
                &ldap,
                DovecotOpts {
                    separator: '/',
                    format: MailFormat::Maildir,
                    ..DovecotOpts::default()
                },
            )
        });
        let new = s.spawn(|| {
            Dovecot::start(
                "new",
                &ldap,
                DovecotOpts {
                    separator: '.',
                    format: MailFormat::Sdbox,
                    extra: quota.clone(),
                    ..DovecotOpts::default()
                },
            )
        });
        (
            old.join().expect("old store"),
            new.join().expect("new store"),
        )
    });
    let lab = Lab {
        old,
        new,
        ldap,
        certs,
    };
    for (i, (u, n)) in USERS.iter().enumerate() {
        corpus::load(
            lab.old.imap_port(),
            u,
            "admin",
            "adminpw",
            &corpus::generate_inbox(*n, 100 + i as u64),
        );
        // Queued, as an admin queues a group.
        lab.ldap.set_attr(u, "mailshiftMigrationState", "queued");
    }
    // One message the new store will refuse.
    let big = "x".repeat(76);
    let body = std::iter::repeat_n(big.as_str(), 40_000)
        .collect::<Vec<_>>()
        .join("\r\n");
    lab.old.deliver(
        "u5",
        &support::message("carol@example.net", "u5@example.org", "too-big", &body),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = format!(
        "[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\ninstance_id = \"cockpit-test\"\nconcurrency = 2\n",
        dir.path().join("state").display()
    );
    let serve_config = lab.mailshift_config(&migration);
    let cli_config = dir.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        serve_config
            .replace("@IMAP_PORT@", "1")
            .replace("@IMAPS_PORT@", "2")
            .replace("@ADMIN_PORT@", "3"),
    )
    .expect("write");
    Setup {
        lab,
        cli_config,
        serve_config,
        dir,
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

fn last_json(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn users_file(s: &Setup, name: &str, users: &[&str]) -> PathBuf {
    let p = s.dir.path().join(name);
    std::fs::write(&p, users.join("\n")).expect("write");
    p
}

/// messages and vsize of all the user's folders on the old store, as Dovecot counts them.
fn old_totals(s: &Setup, user: &str) -> (u64, u64) {
    let out = s
        .lab
        .old
        .doveadm(&["mailbox", "status", "-u", user, "-t", "messages vsize", "*"]);
    let num = |k: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {out}"))
    };
    (num("messages"), num("vsize"))
}

/// `METHOD PATH` to the admin port; (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The plan of a group, its migration, the fleet status, the report of a
/// refused message, and the API's answers to bad input.
#[test]
fn plan_migrate_status_report_and_api_errors() {
    let s = setup();
    let all: Vec<&str> = USERS.iter().map(|(u, _)| *u).collect();
    let group = users_file(&s, "group.txt", &all);
    let plan = cli(
        &s,
        &[
            "plan",
            "--json",
            "--users-file",
            group.to_str().expect("path"),
        ],
    );
    assert!(plan.status.success(), "{}", text(&plan));
    let p = last_json(&plan);
    let mut total = (0, 0);
    for (i, (u, _)) in USERS.iter().enumerate() {
        let row = &p["users"][i];
        let (msgs, bytes) = old_totals(&s, u);
        assert_eq!(row["user"], *u);
        assert_eq!(row["messages"].as_u64(), Some(msgs), "{u}: {row}");
        assert_eq!(row["bytes"].as_u64(), Some(bytes), "{u}: {row}");
        assert_eq!(row["synced_messages"], 0);
        total.0 += msgs;
        total.1 += bytes;
    }
    assert_eq!(p["messages"].as_u64(), Some(total.0));
    assert_eq!(p["bytes"].as_u64(), Some(total.1));
    // Nothing measured yet: the rate comes from a calibration read, said so.
    assert_eq!(p["estimate"]["rate_from"], "calibration", "{p}");
    assert!(
        p["estimate"]["bytes_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{p}"
    );
    assert!(
        p["estimate"]["first_pass_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{p}"
    );
    assert!(
        p["estimate"]["final_window_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{p}"
    );
    // u5 holds the largest mailbox (the big message). Dovecot 2.3 announces
    // no APPENDLIMIT (so the plan cannot flag the message: it says so with
    // `appendlimit: null`), but it reports the quota, which the plan reads.
    assert_eq!(p["largest"][0][0], "u5", "{p}");
    assert_eq!(p["users"][4]["appendlimit"], Value::Null);
    assert_eq!(
        p["users"][4]["quota_kib"][1],
        1024 * 1024,
        "{}",
        p["users"][4]
    );
    assert_eq!(p["users"][4]["fits_quota"], true);

    // A filter that does not parse: a clear error, no crash.
    let bad = cli(&s, &["plan", "--filter", "(uid=u1"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("does not parse"), "{}", text(&bad));

    // Migrate three of the five; the fleet status says so, with hold times.
    let three = users_file(&s, "three.txt", &all[..3]);
    let m = cli(
        &s,
        &[
            "migrate",
            "--cutover",
            "--users-file",
            three.to_str().expect("path"),
        ],
    );
    if !m.status.success() {
        let plain = cli(&s, &["migrate", "--user", "u1"]);
        panic!(
            "{}\n{}\n{}",
            text(&m),
            text(&plain),
            support::tail(&s.lab.new.log(), 20)
        );
    }
    let st = cli(&s, &["status", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let st = last_json(&st);
    assert_eq!(st["counts"]["done"], 3, "{st}");
    assert_eq!(st["counts"]["queued"], 2, "{st}");
    let cut: Vec<&str> = st["cutovers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["hold_ms"].as_u64().is_some())
        .filter_map(|c| c["login"].as_str())
        .collect();
    let mut cut_sorted = cut.clone();
    cut_sorted.sort();
    assert_eq!(cut_sorted, ["u1", "u2", "u3"], "{st}");
    // The human form too.
    let human = cli(&s, &["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("done 3"),
        "{}",
        text(&human)
    );

    // u5's message is refused by the new store: the report names it and why.
    let pass = cli(&s, &["migrate", "--user", "u5"]);
    assert!(text(&pass).contains("not copied"), "{}", text(&pass));
    let json_report = s.dir.path().join("u5.json");
    let html_report = s.dir.path().join("u5.html");
    for f in [&json_report, &html_report] {
        let v = cli(
            &s,
            &[
                "verify",
                "--user",
                "u5",
                "--report",
                f.to_str().expect("path"),
            ],
        );
        assert!(!v.status.success(), "u5 is not complete: {}", text(&v));
    }
    let r: Value =
        serde_json::from_slice(&std::fs::read(&json_report).expect("report")).expect("json");
    assert_eq!(r["ok"], false);
    let refused = r["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 1, "{r}");
    assert_eq!(refused[0]["folder"], "INBOX");
    assert!(
        !refused[0]["reason"].as_str().unwrap_or("").is_empty(),
        "{r}"
    );
    let inbox = r["folders"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["folder"] == "INBOX")
        .expect("INBOX line");
    assert_eq!(inbox["missing"].as_array().map(Vec::len), Some(1), "{r}");
    let html = std::fs::read_to_string(&html_report).expect("html");
    assert!(html.contains("Refused by the new store") && html.contains("NOT complete"));

    // The admin API on a running instance.
    let proxy = Mailshift::start(&s.serve_config);
    let port = proxy.admin_port();
    let (code, body) = http(port, "GET", "/api/v1/users?filter=(uid%3Du1", None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("does not parse"), "{body}");
    let (code, _) = http(port, "GET", "/api/v1/users/nobody", None);
    assert_eq!(code, 404);
    let (code, _) = http(port, "POST", "/api/v1/users/u1/rollback", None);
    assert_eq!(code, 401);
    let (code, _) = http(port, "POST", "/api/v1/users/u1/rollback", Some("wrong"));
    assert_eq!(code, 401);
    let (code, _) = http(port, "POST", "/api/v1/users/nobody/kick", Some("labtoken"));
    assert_eq!(code, 404);
    // The report kept after u1's cutover, and u1's events.
    let (code, body) = http(port, "GET", "/api/v1/users/u1/report", None);
    assert_eq!(code, 200, "{body}");
    let r: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["origin"], "cutover");
    assert!(r["hold_seconds"].as_f64().is_some(), "{r}");
    let (code, body) = http(port, "GET", "/api/v1/users/u1/events", None);
    assert_eq!(code, 200);
    let ev: Value = serde_json::from_str(&body).expect("json");
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for k in ["pass_started", "pass_ended", "hold_set", "flipped"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let (code, body) = http(port, "GET", "/api/v1/overview", None);
    assert_eq!(code, 200);
    let o: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(o["counts"]["done"], 3, "{o}");
}

// ---------------------------------------------------------------------------
// A minimal DevTools protocol client: one WebSocket to one page.

struct Browser {
    child: std::process::Child,
    ws: TcpStream,
    next: u64,
    _profile: tempfile::TempDir,
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

impl Browser {
    fn start(bin: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1200,900",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut stderr = child.stderr.take().expect("stderr");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let port: u16 = loop {
            let n = stderr.read(&mut buf).expect("chromium stderr");
            assert!(n > 0, "chromium exited: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            let t = String::from_utf8_lossy(&seen);
            if let Some(rest) = t.split("ws://127.0.0.1:").nth(1) {
                if let Some(p) = rest.split('/').next().and_then(|p| p.parse().ok()) {
                    break p;
                }
            }
        };
        // Keep draining so chromium never blocks on a full pipe.
        std::thread::spawn(move || while stderr.read(&mut buf).is_ok_and(|n| n > 0) {});
        let (_, list) = http(port, "GET", "/json/list", None);
        let pages: Value = serde_json::from_str(&list).expect("json/list");
        let url = pages
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["type"] == "page")
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let path = &url[url.find("/devtools/").expect("ws url")..];
        let mut ws = TcpStream::connect(("127.0.0.1", port)).expect("ws connect");
        ws.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            ws,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            ws.read_exact(&mut b).expect("handshake reply");
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Browser {
            child,
            ws,
            next: 1,
            _profile: profile,
        }
    }

    fn send(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut frame = vec![0x81u8];
        // Client frames are masked (RFC 6455); a zero mask keeps the bytes.
        match data.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(data);
        self.ws.write_all(&frame).expect("ws write");
    }

    fn recv(&mut self) -> String {
        let mut msg = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.ws.read_exact(&mut h).expect("ws read");
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.ws.read_exact(&mut b).expect("ws read");
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.ws.read_exact(&mut b).expect("ws read");
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.ws.read_exact(&mut payload).expect("ws read");
            msg.extend_from_slice(&payload);
            if h[0] & 0x80 != 0 {
                return String::from_utf8_lossy(&msg).into_owned();
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&serde_json::json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let v: Value = serde_json::from_str(&self.recv()).expect("cdp json");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Waits (up to 30 s, for a busy machine) until `js` gives `want`.
    fn wait_for(&mut self, js: &str, want: &Value) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.eval(js);
            if &got == want {
                return;
            }
            assert!(Instant::now() < until, "{js}: {got} (want {want})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or(""))
            .expect("png");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cockpit in a real browser: the overview shows the counts, the table
/// filters by state, the user page shows the report, and "Roll back" with
/// the token moves the user back and the page shows it.
#[test]
fn cockpit_in_a_real_browser() {
    let Some(bin) = chromium() else {
        panic!("chromium is not installed (deploy/lab/install-deps.sh installs it)");
    };
    let s = setup();
    let two = users_file(&s, "two.txt", &["u1", "u2"]);
    let m = cli(
        &s,
        &[
            "migrate",
            "--cutover",
            "--users-file",
            two.to_str().expect("path"),
        ],
    );
    assert!(m.status.success(), "{}", text(&m));
    let proxy = Mailshift::start(&s.serve_config);
    let base = format!("http://127.0.0.1:{}", proxy.admin_port());
    let mut b = Browser::start(bin);

    b.open(&format!("{base}/#/"));
    b.wait_for(
        "document.querySelector('#count-done .n')?.textContent ?? ''",
        &"2".into(),
    );
    b.wait_for(
        "document.querySelector('#count-queued .n')?.textContent ?? ''",
        &"3".into(),
    );
    b.wait_for(
        "document.querySelectorAll('#cutovers td.hold').length",
        &2.into(),
    );
    if let Some(out) = std::env::var_os("MAILSHIFT_SCREENSHOT") {
        b.screenshot(Path::new(&out));
    }

    b.open(&format!("{base}/#/users"));
    b.wait_for(
        "document.querySelectorAll('#users tbody tr').length",
        &5.into(),
    );
    b.eval("const f = document.getElementById('state-filter'); f.value = 'done'; f.dispatchEvent(new Event('change')); true");
    b.wait_for(
        "[...document.querySelectorAll('#users tbody tr')].map(r => r.dataset.state).join(',')",
        &"done,done".into(),
    );
    b.wait_for(
        "document.getElementById('users-count').textContent",
        &"2 users".into(),
    );

    b.open(&format!("{base}/#/user/u1"));
    b.wait_for(
        "document.getElementById('report-verdict')?.className ?? ''",
        &"ok".into(),
    );
    b.wait_for(
        "document.getElementById('user-state')?.textContent ?? ''",
        &"done".into(),
    );
    assert!(
        b.eval("document.querySelectorAll('#report-folders tr').length")
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "the report lists folders"
    );
    // Without the token the action is refused, and the page says so.
    b.eval("document.getElementById('token').value = ''; document.getElementById('act-rollback').click(); true");
    b.wait_for(
        "(document.getElementById('action-result')?.textContent ?? '').includes('Bearer')",
        &true.into(),
    );
    b.eval("const t = document.getElementById('token'); t.value = 'labtoken'; t.dispatchEvent(new Event('change')); document.getElementById('act-rollback').click(); true");
    b.wait_for(
        "document.getElementById('user-state')?.textContent ?? ''",
        &"rolled-back".into(),
    );
    b.wait_for(
        "document.getElementById('user-mailhost')?.textContent ?? ''",
        &OLD_HOST.into(),
    );
    // And LDAP agrees.
    let entry = s
        .lab
        .ldap
        .search("(uid=u1)", &["mailHost", "mailshiftMigrationState"]);
    assert!(entry.contains(&format!("mailHost: {OLD_HOST}")), "{entry}");
    assert!(
        entry.contains("mailshiftMigrationState: rolled-back"),
        "{entry}"
    );
}

/// Speed with 10,000 users in LDAP: `mailshift status --json` and the
/// cockpit's overview (page, script and the overview API). Prints the
/// timings; run with
/// `cargo test --release --test cockpit fleet_of_10000 -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: loads 10,000 entries into slapd"]
fn fleet_of_10000_users_speed() {
    let s = setup();
    let n: usize = std::env::var("MAILSHIFT_FLEET_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let states = ["queued", "syncing", "done", "failed", "rolled-back"];
    let mut ldif = String::new();
    for i in 0..n {
        let state = states[i % states.len()];
        ldif.push_str(&format!(
            "dn: uid=g{i:05},ou=people,dc=example,dc=org\nchangetype: add\nobjectClass: inetOrgPerson\n\
             objectClass: inetLocalMailRecipient\nobjectClass: mailshiftUser\nuid: g{i:05}\ncn: g{i:05}\nsn: g{i:05}\n\
             mailHost: {OLD_HOST}\nmailUserStatus: active\nmailshiftMigrationState: {state}\n\
             mailshiftMigrationProgress: {} 100 {} 1000000 1700000000 1700000100\n{}\n",
            i % 100,
            (i % 100) * 10_000,
            if state == "done" { "mailshiftMigrationHold: 850\n" } else { "" }
        ));
    }
    let t = Instant::now();
    // From a file: ldapmodify's one line per entry would fill a pipe that
    // nobody reads while its input is still being written.
    let file = s.dir.path().join("fleet.ldif");
    std::fs::write(&file, &ldif).expect("write ldif");
    let added = Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            &s.lab.ldap.url(),
            "-D",
            s.lab.ldap.admin_dn(),
            "-w",
        ])
        .arg(s.lab.ldap.admin_password())
        .arg("-f")
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .expect("ldapmodify");
    assert!(added.success());
    println!("loaded {n} entries in {:.1}s", t.elapsed().as_secs_f64());

    for run in 0..3 {
        let t = Instant::now();
        let st = cli(&s, &["status", "--json"]);
        let secs = t.elapsed().as_secs_f64();
        assert!(st.status.success(), "{}", text(&st));
        let v = last_json(&st);
        assert_eq!(v["users"].as_u64(), Some(n as u64 + 5), "{}", v["counts"]);
        println!("run {run}: status --json for {} users: {secs:.3}s", n + 5);
    }
    let proxy = Mailshift::start(&s.serve_config);
    let port = proxy.admin_port();
    for run in 0..3 {
        // A fresh LDAP read each time: wait out the cache.
        std::thread::sleep(Duration::from_millis(2100));
        let t = Instant::now();
        let (c1, _) = http(port, "GET", "/", None);
        let (c2, _) = http(port, "GET", "/ui/app.js", None);
        let (c3, body) = http(port, "GET", "/api/v1/overview", None);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!((c1, c2, c3), (200, 200, 200), "{body}");
        let (c4, _) = http(port, "GET", "/api/v1/users?state=done", None);
        let all = t.elapsed().as_secs_f64();
        assert_eq!(c4, 200);
        println!(
            "run {run}: overview (page + script + overview API, uncached): {secs:.3}s; with the first users page: {all:.3}s"
        );
    }
}
