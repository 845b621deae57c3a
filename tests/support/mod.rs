//! Test harness: real slapd and Dovecot servers (and mailshift itself) on free
//! loopback ports in temporary directories, rendered from the same templates
//! in `deploy/lab/` that the shell lab uses, so the tests exercise the lab.
//!
//! Used as `mod support;` from each `tests/*.rs`; not every test uses every
//! item, hence the allows.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod corpus;
pub mod courier;
pub mod cyrus;
pub mod dovecot;
pub mod forwarder;
pub mod haproxy;
pub mod imap;
pub mod imaptest;
pub mod ldap;
pub mod mailbox;
pub mod oauth;
pub mod ports;
pub mod postfix;
pub mod proxy;
pub mod sieve;
pub mod sink;
pub mod smtp;

pub use certs::Certs;
pub use courier::Courier;
pub use cyrus::{Cyrus, CyrusOpts};
pub use dovecot::{Dovecot, DovecotOpts, MailFormat};
pub use imap::ImapClient;
pub use ldap::Slapd;
pub use ports::free_port;
pub use postfix::Postfix;
pub use proxy::{Lab, Mailshift};
pub use smtp::SmtpClient;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to come up before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lab_template_dir() -> PathBuf {
    repo_dir().join("deploy/lab")
}

/// Renders `deploy/lab/NAME` by replacing `@KEY@`; panics if any `@UPPER@`
/// placeholder is left, so a template and the harness can't drift apart
/// silently.
pub fn render(name: &str, vars: &[(&str, String)]) -> String {
    render_keep(name, vars, &[])
}

/// Like [`render`], but placeholders named in `keep` may stay (filled later).
pub fn render_keep(name: &str, vars: &[(&str, String)], keep: &[&str]) -> String {
    let path = lab_template_dir().join(name);
    let mut text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading template {}: {e}", path.display()));
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    let left: Vec<String> = placeholders(&text)
        .into_iter()
        .filter(|p| !keep.contains(&p.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "template {name}: unfilled placeholders {left:?}"
    );
    text
}

/// The `@UPPER_CASE@` names in `text` (same rule as `render` in lib.sh).
pub fn placeholders(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'@' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_uppercase() || b[j] == b'_') {
                j += 1;
            }
            if j > i + 1 && j < b.len() && b[j] == b'@' && b[i + 1].is_ascii_uppercase() {
                let name = String::from_utf8_lossy(&b[i + 1..j]).into_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// A temp dir that processes running as other users (Dovecot's mail uid,
/// dovenull) can traverse; `tempfile` creates 0700 dirs.
pub fn shared_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating temp dir");
    set_mode(dir.path(), 0o755);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> String {
    let desc = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e} (is deploy/lab/install-deps.sh done?)"));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input)
            .unwrap_or_else(|e| panic!("writing stdin of {desc}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {desc}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{desc} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Who the servers run as. As root, mail belongs to a non-root user (Dovecot
/// refuses uid 0); as non-root, everything runs as the invoking user.
#[derive(Clone, Debug)]
pub struct Identity {
    pub root: bool,
    pub mail_uid: u32,
    pub mail_gid: u32,
    pub login_user: String,
    pub internal_user: String,
    pub internal_group: String,
}

pub fn identity() -> Identity {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the effective uid: std has no geteuid().
    let meta = fs::metadata("/proc/self").expect("stat /proc/self");
    let (uid, gid) = (meta.uid(), meta.gid());
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(String, u32, u32)> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && pred(&f)).then(|| {
                (
                    f[0].to_string(),
                    f[2].parse().unwrap_or(0),
                    f[3].parse().unwrap_or(0),
                )
            })
        })
    };
    if uid == 0 {
        // deploy/lab/install-deps.sh creates mailshiftlab; nobody always exists.
        let (_, mail_uid, mail_gid) = entry(&|f| f[0] == "mailshiftlab")
            .or_else(|| entry(&|f| f[0] == "nobody"))
            .unwrap_or(("nobody".into(), 65534, 65534));
        Identity {
            root: true,
            mail_uid,
            mail_gid,
            login_user: "dovenull".into(),
            internal_user: "dovecot".into(),
            internal_group: "dovecot".into(),
        }
    } else {
        let name = entry(&|f| f[2] == uid.to_string())
            .map(|e| e.0)
            .unwrap_or_else(|| panic!("uid {uid} has no /etc/passwd entry"));
        let group = fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3 && f[2] == gid.to_string()).then(|| f[0].to_string())
            })
            .unwrap_or_else(|| name.clone());
        Identity {
            root: false,
            mail_uid: uid,
            mail_gid: gid,
            login_user: name.clone(),
            internal_user: name,
            internal_group: group,
        }
    }
}

/// Shell wrapper that ties a server's life to our pipe on its stdin: when the
/// harness drops it, or the whole test process dies (even by SIGKILL), the
/// pipe closes and the server gets SIGTERM, then SIGKILL. Nothing leaks.
const SUPERVISE: &str = r#"
exec 3<&0
"$@" 3<&- </dev/null >>"$SUPERVISE_LOG" 2>&1 &
pid=$!
echo "$pid" >"$SUPERVISE_PID"
(
  read -r _ <&3
  kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then kill -KILL "$pid" 2>/dev/null; break; fi
    sleep 0.05
  done
) </dev/null >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$pid"
rc=$?
kill "$watcher" 2>/dev/null
exit "$rc"
"#;

/// A server process in the foreground under [`SUPERVISE`]; stopped and
/// reaped on drop.
pub struct Server {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pid_file: PathBuf,
    /// stdout+stderr of the server.
    pub stderr_log: PathBuf,
}

impl Server {
    pub fn spawn(name: &str, dir: &Path, argv: &[&str]) -> Server {
        Self::spawn_env(name, dir, argv, &[])
    }

    pub fn spawn_env(name: &str, dir: &Path, argv: &[&str], env: &[(&str, &str)]) -> Server {
        let stderr_log = dir.join(format!("{name}.stderr.log"));
        let pid_file = dir.join(format!("{name}.pid.supervise"));
        let _ = fs::remove_file(&pid_file);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISE)
            .arg("supervise")
            .args(argv)
            .env("SUPERVISE_LOG", &stderr_log)
            .env("SUPERVISE_PID", &pid_file)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({argv:?}): {e}"));
        let stdin = child.stdin.take();
        Server {
            name: name.to_string(),
            child: Some(child),
            stdin,
            pid_file,
            stderr_log,
        }
    }

    /// The supervisor's pid (the server runs under it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `Some(status)` once the server has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut()?.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Asks the server to stop without waiting, so several servers (Dovecot
    /// takes about a second) shut down at the same time.
    pub fn begin_stop(&mut self) {
        drop(self.stdin.take());
    }

    /// SIGKILL to the server itself (a crash), then reap.
    pub fn kill(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
        self.stop();
    }

    /// SIGTERM via the supervisor, wait, escalate to SIGKILL.
    pub fn stop(&mut self) {
        self.begin_stop();
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    if let Ok(pid) = fs::read_to_string(&self.pid_file) {
                        let _ = Command::new("kill")
                            .args(["-KILL", pid.trim()])
                            .stderr(Stdio::null())
                            .status();
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!("{}: had to SIGKILL", self.name);
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a log file for a failure message (empty if missing).
pub fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True once something accepts on 127.0.0.1:port.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Whether the listener on loopback `port` belongs to `root` or one of its
/// descendants: a server that lost the race for its port must not take
/// another test's server answering there for itself.
pub fn port_owned_by(root: u32, port: u16) -> bool {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let local_port = f.get(1)?.rsplit(':').next()?;
                    (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A")
                        .then(|| f.get(9).map(|i| format!("socket:[{i}]")))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    let parent = |pid: u32| -> Option<u32> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .map(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
                .unwrap_or(false)
        });
        if holds {
            let mut at = pid;
            while at > 1 {
                if at == root {
                    return true;
                }
                match parent(at) {
                    Some(pp) => at = pp,
                    None => break,
                }
            }
        }
    }
    false
}

/// Polls `ready` until it is true. Fails early if `server` exits, with
/// `log()` in the message either way.
pub fn wait_ready(
    what: &str,
    server: &mut Server,
    log: &dyn Fn() -> String,
    ready: &mut dyn FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = server.exited() {
            return Err(format!(
                "{what} exited ({status}) before it was ready; log:\n{}",
                tail(&log(), 40)
            ));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} not ready after {START_TIMEOUT:?}; log:\n{}",
                tail(&log(), 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// How many times a server is started on fresh ports: other test binaries'
/// servers and every outgoing connection draw from the same ephemeral
/// range, so on a busy machine a picked port is sometimes taken by the bind.
pub const START_TRIES: usize = 6;

/// A port another process grabbed between our pick and the server's bind:
/// worth a retry on fresh ports rather than a failed test.
pub fn is_bind_conflict(err: &str) -> bool {
    err.contains("Address already in use") || err.contains("errno=98")
}

/// A minimal RFC 5322 message for deliveries.
pub fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n\
         Message-ID: <{}.{n}@test.example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        std::process::id()
    )
    .into_bytes()
}
