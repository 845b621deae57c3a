//! POP3 benchmark: mailshift vs direct to the store (and a Dovecot POP3
//! proxy, the peer), targets interleaved in one run.
//!
//! ```text
//! cargo bench --bench pop3 -- [--quick] [--rounds N] [--idle N]
//! ```
//!
//! Starts slapd, one Dovecot store with POP3 (user0001..user0059 / pwNNNN),
//! mailshift in front of it (`pop3://` backend, password_check = "backend"),
//! and a third Dovecot as a plain POP3 proxy (static passdb `proxy=y
//! nopassword=y`: the password goes to the store, as mailshift does it).
//! Measures:
//! - logins/s at 16 clients (USER/PASS/QUIT, a new connection each);
//! - RETR of a 10 MB message (MB/s per transfer);
//! - memory of an idle logged-in session: mailshift's RSS growth over N idle
//!   sessions, divided by N.
//!
//! Prints one line per measurement and the ratios to direct (mean and median
//! of per-round ratios; `--rounds`, 5 by default, each round in another
//! order of the targets).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Dovecot, DovecotOpts, Mailshift, Server, Slapd};

const USERS: usize = 59;
const HOST: &str = "old.example.org";

fn raise_nofile(n: u64) {
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: n as libc::rlim_t,
            rlim_max: n as libc::rlim_t,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = s.set_nodelay(true);
        let mut c = Conn {
            w: s.try_clone().expect("clone"),
            r: BufReader::with_capacity(256 * 1024, s),
        };
        let g = c.line();
        assert!(g.starts_with("+OK"), "greeting {g:?}");
        c
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        l
    }
    fn cmd(&mut self, c: &str) -> String {
        self.w.write_all(c.as_bytes()).expect("write");
        self.w.write_all(b"\r\n").expect("write");
        self.line()
    }
    fn login(port: u16, i: usize) -> Conn {
        let mut c = Conn::open(port);
        assert!(c.cmd(&format!("USER user{i:04}")).starts_with("+OK"));
        let r = c.cmd(&format!("PASS pw{i:04}"));
        assert!(r.starts_with("+OK"), "PASS: {r:?}");
        c
    }
    /// RETR 1, to the end marker; returns the bytes read.
    fn retr(&mut self) -> usize {
        let r = self.cmd("RETR 1");
        assert!(r.starts_with("+OK"), "RETR: {r:?}");
        let mut n = 0;
        let mut buf = Vec::with_capacity(128);
        loop {
            buf.clear();
            let k = self.r.read_until(b'\n', &mut buf).expect("read");
            assert!(k > 0, "EOF in RETR");
            n += k;
            if buf == b".\r\n" {
                return n;
            }
        }
    }
}

fn logins_per_sec(port: u16, clients: usize, secs: f64) -> f64 {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0;
                    let mut i = t;
                    while Instant::now() < stop {
                        let mut c = Conn::login(port, i % USERS + 1);
                        let q = c.cmd("QUIT");
                        assert!(q.starts_with("+OK"));
                        n += 1;
                        i += clients;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    total as f64 / t0.elapsed().as_secs_f64()
}

fn retr_mb_per_sec(port: u16, times: usize) -> f64 {
    let mut c = Conn::login(port, 1);
    let t0 = Instant::now();
    let mut bytes = 0;
    for _ in 0..times {
        bytes += c.retr();
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = c.cmd("QUIT");
    bytes as f64 / secs / 1e6
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pid_in(dir: &Path, name: &str) -> u32 {
    let p = dir.join(format!("{name}.pid.supervise"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(pid) = fs::read_to_string(&p).unwrap_or_default().trim().parse() {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mailshift_config(ldap: &Slapd, store: &Dovecot, ms_pop3: u16) -> String {
    format!(
        r#"[directory]
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
pop3 = "pop3://127.0.0.1:{pop3}"

[imap]
listen = "127.0.0.1:@IMAP_PORT@"

[pop3]
listen = "127.0.0.1:{ms_pop3}"
"#,
        ldap = ldap.url(),
        dn = ldap.admin_dn(),
        pw = ldap.admin_password(),
        imap = store.imap_port(),
        pop3 = store.pop3_port(),
    )
}

/// A Dovecot POP3 proxy in front of the store: every login is proxied with
/// the client's password (the store checks it), login processes long-lived.
fn start_dproxy(store: &Dovecot) -> (u16, Server, tempfile::TempDir) {
    let dir = support::shared_tempdir("mailshift-pop3-dproxy-");
    let d = dir.path();
    let port = support::free_port();
    let id = support::identity();
    let conf = format!(
        r#"instance_name = bench-pop3-dproxy
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = pop3
listen = 127.0.0.1
default_login_user = {login}
default_internal_user = {internal}
default_internal_group = {group}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
passdb {{
  driver = static
  args = proxy=y host=127.0.0.1 port={store_port} nopassword=y
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid}
}}
default_process_limit = 2000
default_client_limit = 10000
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 5000
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#,
        d = d.display(),
        login = id.login_user,
        internal = id.internal_user,
        group = id.internal_group,
        store_port = store.pop3_port(),
        uid = id.mail_uid,
        gid = id.mail_gid,
    );
    let path = d.join("dovecot.conf");
    fs::write(&path, conf).expect("write dproxy conf");
    let p = path.display().to_string();
    let server = Server::spawn("dovecot", d, &["dovecot", "-F", "-c", &p]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !support::port_open(port) {
        assert!(
            Instant::now() < deadline,
            "dproxy: {}",
            support::read_log(&d.join("dovecot.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (port, server, dir)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let idle: usize = args
        .iter()
        .position(|a| a == "--idle")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100 } else { 400 });
    raise_nofile(65536);

    let ldap = Slapd::start(false);
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
            ..DovecotOpts::default()
        },
    );
    // A 10 MB message for user0001: 100-byte lines.
    let mut big =
        b"From: a@example.net\r\nTo: user0001@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while big.len() < 10_000_000 {
        big.extend_from_slice(&[b'x'; 98]);
        big.extend_from_slice(b"\r\n");
    }
    store.deliver("user0001", &big);

    let ms_port = support::free_port();
    let ms = Mailshift::start(&mailshift_config(&ldap, &store, ms_port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !support::port_open(ms_port) {
        assert!(
            Instant::now() < deadline,
            "mailshift POP3: {}",
            ms.log_tail()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let ms_pid = pid_in(ms.dir(), "mailshift");
    let (dp_port, _dp, _dp_dir) = start_dproxy(&store);
    let targets = [
        ("direct", store.pop3_port()),
        ("mailshift", ms_port),
        ("dproxy", dp_port),
    ];
    // Warm: every user once through every target.
    for (_, port) in targets {
        for i in 1..=USERS {
            let _ = Conn::login(port, i).cmd("QUIT");
        }
    }
    eprintln!(
        "bench pop3: {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(if quick { 1 } else { 5 })
        .max(1);
    let secs = if quick { 2.0 } else { 5.0 };
    let transfers = if quick { 2 } else { 10 };
    let mut logins: Vec<(&str, Vec<f64>)> = targets.iter().map(|t| (t.0, Vec::new())).collect();
    let mut retr: Vec<(&str, Vec<f64>)> = targets.iter().map(|t| (t.0, Vec::new())).collect();
    for round in 0..rounds {
        // Each round starts with another target, so none is always first
        // (warm caches, a neighbour's build starting) or always last.
        let order: Vec<usize> = (0..targets.len())
            .map(|k| (k + round) % targets.len())
            .collect();
        for &k in &order {
            let (name, port) = targets[k];
            let v = logins_per_sec(port, 16, secs);
            eprintln!("round {round}: logins/s at 16 clients, {name}: {v:.0}");
            logins[k].1.push(v);
        }
        for &k in &order {
            let (name, port) = targets[k];
            let v = retr_mb_per_sec(port, transfers);
            eprintln!("round {round}: RETR 10 MB, {name}: {v:.1} MB/s");
            retr[k].1.push(v);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    // Ratios per round (each target against direct in the same round), so a
    // slow round weighs on every target alike.
    let ratios = |v: &[f64], direct: &[f64]| -> Vec<f64> {
        v.iter().zip(direct).map(|(a, d)| a / d).collect()
    };
    println!("{rounds} rounds; ratios to direct are per round: mean / median");
    for ((name, l), (_, r)) in logins.iter().zip(&retr) {
        let (lr, rr) = (ratios(l, &logins[0].1), ratios(r, &retr[0].1));
        println!(
            "{name:>9}: logins/s {:.0} ({:.2}x / {:.2}x direct), RETR 10 MB {:.1} MB/s ({:.2}x / {:.2}x direct)",
            mean(l),
            mean(&lr),
            median(&lr),
            mean(r),
            mean(&rr),
            median(&rr),
        );
    }

    // Idle sessions: logged in, STAT answered, then nothing.
    let before = rss_kib(ms_pid);
    let mut open = Vec::with_capacity(idle);
    for i in 0..idle {
        let mut c = Conn::login(ms_port, i % USERS + 1);
        assert!(c.cmd("STAT").starts_with("+OK"));
        open.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(ms_pid);
    println!(
        "mailshift idle POP3 sessions: {idle}, RSS {before} -> {after} KiB, {:.1} KiB per session",
        (after.saturating_sub(before)) as f64 / idle as f64
    );
    drop(open);
}
