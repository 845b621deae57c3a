//! The translating relay against the plain relay, a direct connection and
//! the Dovecot proxy, in one run, targets interleaved (their order rotates
//! every round), against a real Dovecot store.
//!
//! ```text
//! cargo bench --bench translate -- [--rounds N] [--big N] [--small N] [--idle N]
//!                                   [--targets direct,plain,splice,translated,dproxy]
//! ```
//!
//! Starts slapd and one Dovecot (maildir) with a user holding `Big` (one
//! 10 MB message) and `Small` (1,000 messages of about 3 KB), and the peers'
//! Dovecot proxy (`benches/common/dproxy.rs`, as the `proxy` bench) in front
//! of that store. Each round runs, per target, one session: SELECT Big,
//! `UID FETCH BODY.PEEK[]` of the big message `--big` times (default 24);
//! SELECT Small, `UID FETCH 1:* (UID FLAGS BODY.PEEK[])` `--small` times
//! (default 16); 5 rounds unless `--rounds`. Targets: `direct` (the client
//! logs in to Dovecot itself), `plain` (mailshift's relay, the buffered
//! path), `splice` (its plain-TCP path), `translated` (the same relay with the translating transform, both
//! folders mapped with client UIDs = store UIDs + 1000, MODSEQs offset),
//! `dproxy` (the Dovecot proxy). The relays run on a thread of their own so
//! their CPU time is theirs alone (CLOCK_THREAD_CPUTIME_ID); the Dovecot
//! proxy's is the CPU of its whole process tree over the same span (after
//! login, to the end of LOGOUT). CPU per MB divides by the bytes the client
//! read and wrote in that span, the same for every target.
//!
//! Memory per idle session: N sessions of each relay (plain, translated)
//! against a small in-process store, each after a SELECT and a FETCH; heap
//! bytes allocated by the relays (a counting allocator), divided by N.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/dproxy.rs"]
mod dproxy;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream as StdTcp;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailshift::continuity::map::Snapshot;
use mailshift::continuity::{FolderMap, UserMap};
use mailshift::frontend::relay::{self, End, Options};
use mailshift::imap::translate::Translator;
use prometheus::IntCounter;
use support::{Dovecot, DovecotOpts, ImapClient, Slapd};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Counts heap bytes in use.
struct Counting;
static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        IN_USE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const USER: &str = "bench";
const PASSWORD: &str = "benchpw";
const BIG: usize = 10 * 1024 * 1024;
const SMALL: usize = 1000;
const OFFSET: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    Plain,
    Splice,
    Translated,
    Dproxy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Plain => "plain",
            Target::Splice => "splice",
            Target::Translated => "translated",
            Target::Dproxy => "dproxy",
        }
    }
}

fn counters() -> Options {
    Options {
        idle_timeout: Duration::from_secs(3600),
        to_backend: IntCounter::new("b_up", "b").expect("counter"),
        to_client: IntCounter::new("b_down", "b").expect("counter"),
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes only the struct passed in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Reads until the tagged answer of `tag`; returns the bytes read.
fn until_tagged(s: &mut StdTcp, tag: &str, buf: &mut [u8]) -> usize {
    const KEEP: usize = 4096;
    let needle = format!("\r\n{tag} ");
    let mut tail: Vec<u8> = b"\r\n".to_vec();
    let mut total = 0;
    loop {
        let n = s.read(buf).expect("read");
        assert!(n > 0, "connection closed waiting for {tag}");
        total += n;
        // Only the end can hold the tagged line: copying whole reads made the
        // client the bottleneck (a memmove of every byte fetched).
        let read = &buf[..n];
        if read.len() >= KEEP {
            tail.clear();
            tail.extend_from_slice(&read[read.len() - KEEP..]);
        } else {
            tail.extend_from_slice(read);
            if tail.len() > KEEP {
                tail.drain(..tail.len() - KEEP);
            }
        }
        if tail.ends_with(b"\r\n") {
            let text = String::from_utf8_lossy(&tail);
            if let Some(at) = text.rfind(&needle) {
                let line = &text[at + 2..];
                if line.matches("\r\n").count() == 1 {
                    assert!(line.starts_with(&format!("{tag} OK")), "{line}");
                    return total;
                }
            }
        }
    }
}

/// How much one session fetches.
#[derive(Clone, Copy)]
struct Load {
    /// FETCHes of the 10 MB message.
    big: usize,
    /// FETCHes of the 1,000 small messages.
    small: usize,
}

struct Figures {
    big_mbs: f64,
    small_msgs: f64,
    /// CPU of the relay (or the Dovecot proxy) over the measured span;
    /// `None` for direct.
    cpu: Option<Duration>,
    /// Bytes the client read and wrote over that span.
    bytes: u64,
}

impl Figures {
    /// CPU milliseconds per MB moved (= seconds per GB).
    fn cpu_ms_per_mb(&self) -> Option<f64> {
        self.cpu
            .map(|c| c.as_secs_f64() * 1e3 / (self.bytes as f64 / 1e6))
    }
}

/// One measured session from the client side, after login: (MB/s of the big
/// FETCHes, msgs/s of the small ones, bytes read and written to the end of LOGOUT).
fn workload(s: &mut StdTcp, uid_base: u32, load: Load) -> (f64, f64, u64) {
    let mut buf = vec![0u8; 1 << 20];
    let mut moved = 0u64;
    let send = |s: &mut StdTcp, line: String| {
        s.write_all(line.as_bytes()).expect("write");
        line.len() as u64
    };
    moved += send(s, "s1 SELECT Big\r\n".into());
    moved += until_tagged(s, "s1", &mut buf) as u64;
    let started = Instant::now();
    let mut bytes = 0;
    for i in 0..load.big {
        let tag = format!("b{i}");
        moved += send(
            s,
            format!("{tag} UID FETCH {} BODY.PEEK[]\r\n", 1 + uid_base),
        );
        bytes += until_tagged(s, &tag, &mut buf);
    }
    assert!(bytes >= BIG * load.big);
    let big_mbs = bytes as f64 / 1e6 / started.elapsed().as_secs_f64();
    moved += bytes as u64;
    moved += send(s, "s2 SELECT Small\r\n".into());
    moved += until_tagged(s, "s2", &mut buf) as u64;
    let started = Instant::now();
    for i in 0..load.small {
        let tag = format!("m{i}");
        moved += send(
            s,
            format!("{tag} UID FETCH 1:* (UID FLAGS BODY.PEEK[])\r\n"),
        );
        moved += until_tagged(s, &tag, &mut buf) as u64;
    }
    let small_msgs = (SMALL * load.small) as f64 / started.elapsed().as_secs_f64();
    moved += send(s, "z LOGOUT\r\n".into());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    moved += rest.len() as u64;
    (big_mbs, small_msgs, moved)
}

fn maps(big: (Snapshot, u32), small: (Snapshot, u32)) -> Arc<UserMap> {
    let mut m = UserMap::new();
    for (name, (snap, n)) in [("Big", big), ("Small", small)] {
        let old = Snapshot {
            uidvalidity: snap.uidvalidity.wrapping_add(7),
            uidnext: snap.uidnext + OFFSET,
            highestmodseq: snap.highestmodseq + 100_000,
        };
        let f = FolderMap::new(old, snap, (1..=n).map(|u| (u + OFFSET, u))).expect("map");
        m.insert(name, f);
    }
    Arc::new(m)
}

/// Logs in to the store with a raw connection, as the session does before relaying.
async fn store_login(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("store");
    s.set_nodelay(true).expect("nodelay");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.expect("greeting");
    r.get_mut()
        .write_all(format!("l LOGIN {USER} {PASSWORD}\r\n").as_bytes())
        .await
        .expect("login");
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("login reply");
        if line.starts_with("l ") {
            assert!(line.starts_with("l OK"), "{line}");
            break;
        }
    }
    assert!(r.buffer().is_empty());
    r.into_inner()
}

/// Connects to an IMAP server (the store or the Dovecot proxy) and logs in.
fn client_login(port: u16) -> StdTcp {
    let mut s = StdTcp::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 4096];
    let _ = s.read(&mut buf).expect("greeting");
    s.write_all(format!("l LOGIN {USER} {PASSWORD}\r\n").as_bytes())
        .expect("login");
    until_tagged(&mut s, "l", &mut buf);
    s
}

/// Where the targets listen.
struct Lab {
    store_port: u16,
    dproxy_port: u16,
    dproxy_pid: u32,
}

fn run(target: Target, lab: &Lab, map: &Arc<UserMap>, load: Load) -> Figures {
    match target {
        Target::Direct => {
            let mut s = client_login(lab.store_port);
            let (big_mbs, small_msgs, bytes) = workload(&mut s, 0, load);
            return Figures {
                big_mbs,
                small_msgs,
                cpu: None,
                bytes,
            };
        }
        Target::Dproxy => {
            let mut s = client_login(lab.dproxy_port);
            let before = dproxy::tree_cpu(lab.dproxy_pid);
            let (big_mbs, small_msgs, bytes) = workload(&mut s, 0, load);
            let cpu = dproxy::tree_cpu(lab.dproxy_pid).saturating_sub(before);
            return Figures {
                big_mbs,
                small_msgs,
                cpu: Some(cpu),
                bytes,
            };
        }
        _ => {}
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let map = Arc::clone(map);
    let store_port = lab.store_port;
    let relay = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = TcpListener::from_std(listener).expect("listener");
            let (mut client, _) = listener.accept().await.expect("accept");
            client.set_nodelay(true).expect("nodelay");
            let mut store = store_login(store_port).await;
            let cancel = CancellationToken::new();
            let cpu = thread_cpu();
            let (end, _) = match target {
                Target::Splice => relay::relay_plain(&client, &store, counters(), &cancel).await,
                Target::Translated => {
                    let mut t = Translator::new(map);
                    relay::relay_with(&mut client, &mut store, Some(&mut t), counters(), &cancel)
                        .await
                }
                _ => relay::relay(&mut client, &mut store, counters(), &cancel).await,
            };
            assert_eq!(end, End::Closed);
            thread_cpu() - cpu
        })
    });
    let mut s = StdTcp::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let base = if target == Target::Translated {
        OFFSET
    } else {
        0
    };
    let (big_mbs, small_msgs, bytes) = workload(&mut s, base, load);
    drop(s);
    let cpu = relay.join().expect("relay thread");
    Figures {
        big_mbs,
        small_msgs,
        cpu: Some(cpu),
        bytes,
    }
}

/// Heap bytes per idle session of a relay, after a SELECT and a FETCH each.
fn idle_memory(n: usize, translated: bool, map: &Arc<UserMap>) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let map = Arc::clone(map);
    rt.block_on(async move {
        let store_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (sa, pa) = (
            store_l.local_addr().expect("addr"),
            proxy_l.local_addr().expect("addr"),
        );
        // A store that answers every command: a FETCH line, then OK.
        tokio::spawn(async move {
            loop {
                let (s, _) = store_l.accept().await.expect("accept");
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    while r.read_line(&mut line).await.map(|n| n > 0).unwrap_or(false) {
                        let tag = line.split(' ').next().unwrap_or("x").to_string();
                        let out = format!(
                            "* OK [UIDVALIDITY 1] x\r\n* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (5))\r\n{tag} OK done\r\n"
                        );
                        if r.get_mut().write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        let mut clients = Vec::with_capacity(n);
        let mut legs = Vec::with_capacity(n);
        for _ in 0..n {
            let (c, p) = tokio::join!(TcpStream::connect(pa), proxy_l.accept());
            let store = TcpStream::connect(sa).await.expect("store");
            clients.push(c.expect("client"));
            legs.push((p.expect("accept").0, store));
        }
        let mut buf = vec![0u8; 4096];
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = IN_USE.load(Ordering::Relaxed);
        let cancel = CancellationToken::new();
        for (mut p, mut s) in legs {
            let cancel = cancel.clone();
            let map = Arc::clone(&map);
            tokio::spawn(async move {
                if translated {
                    let mut t = Translator::new(map);
                    relay::relay_with(&mut p, &mut s, Some(&mut t), counters(), &cancel).await;
                } else {
                    relay::relay(&mut p, &mut s, counters(), &cancel).await;
                }
            });
        }
        for c in &mut clients {
            c.write_all(b"a SELECT Big\r\nb UID FETCH 1001 (FLAGS)\r\n")
                .await
                .expect("write");
            let mut got = Vec::new();
            while !got.ends_with(b"b OK done\r\n") {
                let k = c.read(&mut buf).await.expect("read");
                assert!(k > 0);
                got.extend_from_slice(&buf[..k]);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = IN_USE.load(Ordering::Relaxed);
        cancel.cancel();
        (after - before) as f64 / n as f64
    })
}

fn main() {
    let mut rounds = 5;
    let mut idle = 2000;
    let mut load = Load { big: 24, small: 16 };
    let mut only: Option<String> = None;
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, default: usize| v.and_then(|v| v.parse().ok()).unwrap_or(default);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--rounds" => rounds = num(it.next(), rounds),
            "--big" => load.big = num(it.next(), load.big),
            "--small" => load.small = num(it.next(), load.small),
            "--idle" => idle = num(it.next(), idle),
            "--targets" => only = it.next(),
            other => {
                eprintln!("unknown argument {other:?}; usage: cargo bench --bench translate -- [--rounds N] [--big N] [--small N] [--idle N] [--targets a,b]");
                std::process::exit(2);
            }
        }
    }
    let peer_dproxy = dproxy::peer_dir();
    assert!(
        peer_dproxy.join("dovecot.conf").exists(),
        "need the Dovecot proxy peer config: set MAILSHIFT_PROXYBENCH_DIR (now {})",
        dproxy::proxybench_dir().display()
    );
    let ldap = Slapd::start(false);
    ldap.add_user(USER, PASSWORD, "old.example.org");
    let store = Dovecot::start(
        "store",
        &ldap,
        DovecotOpts {
            max_userip: 0,
            ..DovecotOpts::default()
        },
    );
    eprintln!("loading the store ...");
    let mut c = ImapClient::connect(store.imap_port());
    c.login(USER, PASSWORD);
    c.ok("CREATE Big");
    c.ok("CREATE Small");
    let mut big = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while big.len() < BIG {
        big.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n",
        );
    }
    let tag = c.send_literal("APPEND Big", &big);
    c.read_until_tagged(&tag);
    for i in 0..SMALL {
        let mut m = format!("From: a@example.org\r\nSubject: small {i}\r\n\r\n").into_bytes();
        while m.len() < 3000 {
            m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
        }
        c.send_literal("APPEND Small", &m);
    }
    let tag = c.send("NOOP");
    c.read_until_tagged(&tag);
    let snap = |c: &mut ImapClient, name: &str| -> Snapshot {
        let lines = c.ok(&format!(
            "STATUS {name} (UIDVALIDITY UIDNEXT HIGHESTMODSEQ)"
        ));
        let line = lines
            .iter()
            .find(|l| l.starts_with("* STATUS"))
            .expect("status");
        let num = |k: &str| -> u64 {
            let at = line.find(k).expect("item") + k.len() + 1;
            line[at..]
                .split(|ch: char| !ch.is_ascii_digit())
                .next()
                .and_then(|v| v.parse().ok())
                .expect("number")
        };
        Snapshot {
            uidvalidity: num("UIDVALIDITY") as u32,
            uidnext: num("UIDNEXT") as u32,
            highestmodseq: num("HIGHESTMODSEQ"),
        }
    };
    let (b, s) = (snap(&mut c, "Big"), snap(&mut c, "Small"));
    assert_eq!((b.uidnext, s.uidnext), (2, SMALL as u32 + 1));
    let map = maps((b, 1), (s, SMALL as u32));

    let dp = dproxy::start_dproxy(&peer_dproxy, &ldap, store.imap_port());
    let lab = Lab {
        store_port: store.imap_port(),
        dproxy_port: dp.port,
        dproxy_pid: dp.pid,
    };
    // Warm: one session through each target (login paths, caches, the store's
    // page cache for both folders).
    let targets: Vec<Target> = [
        Target::Direct,
        Target::Plain,
        Target::Splice,
        Target::Translated,
        Target::Dproxy,
    ]
    .into_iter()
    .filter(|t| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == t.name()))
    })
    .collect();
    for &t in &targets {
        run(t, &lab, &map, Load { big: 1, small: 1 });
    }
    eprintln!(
        "bench translate: {} cores, load {}; {rounds} rounds, per session {} x 10 MB, {} x 1,000 msgs",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        load.big,
        load.small
    );
    println!("| round | target | 10 MB FETCH MB/s | 1,000 msgs FETCH msgs/s | CPU ms/MB |");
    println!("|---|---|---|---|---|");
    let mut all: Vec<Vec<(Target, Figures)>> = Vec::new();
    for round in 1..=rounds {
        let mut figs = Vec::new();
        // Rotate the order so no target always runs first (or last).
        for k in 0..targets.len() {
            let t = targets[(k + round - 1) % targets.len()];
            let f = run(t, &lab, &map, load);
            println!(
                "| {round} | {} | {:.0} | {:.0} | {} |",
                t.name(),
                f.big_mbs,
                f.small_msgs,
                f.cpu_ms_per_mb()
                    .map_or_else(|| "-".into(), |c| format!("{c:.3}"))
            );
            figs.push((t, f));
        }
        all.push(figs);
    }
    let get = |figs: &[(Target, Figures)], t: Target| -> (f64, f64, f64) {
        let f = figs
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, f)| f)
            .expect("target ran");
        (
            f.big_mbs,
            f.small_msgs,
            f.cpu_ms_per_mb().unwrap_or(f64::NAN),
        )
    };
    let mean = |t: Target| -> (f64, f64, f64) {
        let n = all.len() as f64;
        all.iter().map(|f| get(f, t)).fold((0.0, 0.0, 0.0), |a, x| {
            (a.0 + x.0 / n, a.1 + x.1 / n, a.2 + x.2 / n)
        })
    };
    println!("\nMeans over {rounds} rounds:\n");
    println!("| target | 10 MB FETCH MB/s | 1,000 msgs FETCH msgs/s | CPU ms/MB |");
    println!("|---|---|---|---|");
    for &t in &targets {
        let (m, s, c) = mean(t);
        let c = if c.is_nan() {
            "-".into()
        } else {
            format!("{c:.3}")
        };
        println!("| {} | {m:.0} | {s:.0} | {c} |", t.name());
    }
    let compared = [Target::Plain, Target::Translated, Target::Dproxy]
        .iter()
        .all(|t| targets.contains(t));
    if compared {
        let ratio = |a: (f64, f64, f64), b: (f64, f64, f64)| {
            format!("{:.2} | {:.2} | {:.2}", a.0 / b.0, a.1 / b.1, a.2 / b.2)
        };
        println!(
            "\nRatios per round (targets: translated/plain MB/s and msgs/s ≥ 0.95, CPU ≤ 2):\n"
        );
        println!("| round | translated/plain MB/s | msgs/s | CPU/MB | dproxy/plain MB/s | msgs/s | CPU/MB | translated/dproxy MB/s | msgs/s | CPU/MB |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (i, figs) in all.iter().enumerate() {
            let (p, t, d) = (
                get(figs, Target::Plain),
                get(figs, Target::Translated),
                get(figs, Target::Dproxy),
            );
            println!(
                "| {} | {} | {} | {} |",
                i + 1,
                ratio(t, p),
                ratio(d, p),
                ratio(t, d)
            );
        }
        // The median of the per-round ratios: one round disturbed by the
        // shared machine moves it less than it moves the means.
        let median = |a: Target, b: Target| -> String {
            let mut r: [Vec<f64>; 3] = Default::default();
            for figs in &all {
                let (x, y) = (get(figs, a), get(figs, b));
                r[0].push(x.0 / y.0);
                r[1].push(x.1 / y.1);
                r[2].push(x.2 / y.2);
            }
            let mid = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            format!(
                "{:.2} | {:.2} | {:.2}",
                mid(&mut r[0]),
                mid(&mut r[1]),
                mid(&mut r[2])
            )
        };
        println!(
            "\nmedians of the per-round ratios: translated/plain {}; dproxy/plain {}; translated/dproxy {} (MB/s | msgs/s | CPU per MB)",
            median(Target::Translated, Target::Plain),
            median(Target::Dproxy, Target::Plain),
            median(Target::Translated, Target::Dproxy)
        );
        let (p, t, d) = (
            mean(Target::Plain),
            mean(Target::Translated),
            mean(Target::Dproxy),
        );
        println!(
        "means: translated/plain {}; dproxy/plain {}; translated/dproxy {} (MB/s | msgs/s | CPU per MB)",
        ratio(t, p),
        ratio(d, p),
        ratio(t, d)
    );
    }
    drop(dp);
    let plain = idle_memory(idle, false, &map);
    let translated = idle_memory(idle, true, &map);
    println!(
        "\nheap per idle session ({idle} sessions, after SELECT + FETCH): plain relay {plain:.0} B, translating relay {translated:.0} B"
    );
    println!(
        "map cache: {} folders, {} messages, {} B in memory",
        map.len(),
        map.messages(),
        map.memory()
    );
}
