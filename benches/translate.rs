//! The translating relay against the plain relay and a direct connection,
//! in one run, targets interleaved, against a real Dovecot store.
//!
//! ```text
//! cargo bench --bench translate -- [--rounds N] [--idle N]
//! ```
//!
//! Starts slapd and one Dovecot (maildir) with a user holding `Big` (one
//! 10 MB message) and `Small` (1,000 messages of about 3 KB). Each round
//! runs, per target, one session: SELECT Big, `UID FETCH BODY.PEEK[]` of the
//! big message 8 times; SELECT Small, `UID FETCH 1:* (UID FLAGS
//! BODY.PEEK[])` 4 times. Targets: `direct` (the client logs in to Dovecot
//! itself), `plain` (mailshift's relay, the buffered path), `splice` (its
//! plain-TCP path), `translated` (the translating relay, both folders mapped
//! with client UIDs = store UIDs + 1000, MODSEQs offset). The relays run on a
//! thread of their own so their CPU time is theirs alone (CLOCK_THREAD_CPUTIME_ID).
//!
//! Memory per idle session: N sessions of each relay (plain, translated)
//! against a small in-process store, each after a SELECT and a FETCH; heap
//! bytes allocated by the relays (a counting allocator), divided by N.

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream as StdTcp;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailshift::continuity::map::Snapshot;
use mailshift::continuity::{FolderMap, UserMap};
use mailshift::imap::relay::{self, End, Options};
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
const BIG_REPEAT: usize = 8;
const SMALL_REPEAT: usize = 4;
const OFFSET: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    Plain,
    Splice,
    Translated,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Plain => "plain",
            Target::Splice => "splice",
            Target::Translated => "translated",
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
    let needle = format!("\r\n{tag} ");
    let mut tail: Vec<u8> = b"\r\n".to_vec();
    let mut total = 0;
    loop {
        let n = s.read(buf).expect("read");
        assert!(n > 0, "connection closed waiting for {tag}");
        total += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
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

struct Figures {
    big_mbs: f64,
    small_msgs: f64,
    relay_cpu: Duration,
    relay_bytes: u64,
}

/// One measured session from the client side.
fn workload(s: &mut StdTcp, uid_base: u32, big_uid: u32) -> (f64, f64) {
    let mut buf = vec![0u8; 1 << 20];
    s.write_all(b"s1 SELECT Big\r\n").expect("write");
    until_tagged(s, "s1", &mut buf);
    let started = Instant::now();
    let mut bytes = 0;
    for i in 0..BIG_REPEAT {
        let tag = format!("b{i}");
        s.write_all(format!("{tag} UID FETCH {} BODY.PEEK[]\r\n", big_uid + uid_base).as_bytes())
            .expect("write");
        bytes += until_tagged(s, &tag, &mut buf);
    }
    assert!(bytes >= BIG * BIG_REPEAT);
    let big_mbs = bytes as f64 / 1e6 / started.elapsed().as_secs_f64();
    s.write_all(b"s2 SELECT Small\r\n").expect("write");
    until_tagged(s, "s2", &mut buf);
    let started = Instant::now();
    for i in 0..SMALL_REPEAT {
        let tag = format!("m{i}");
        s.write_all(format!("{tag} UID FETCH 1:* (UID FLAGS BODY.PEEK[])\r\n").as_bytes())
            .expect("write");
        until_tagged(s, &tag, &mut buf);
    }
    let small_msgs = (SMALL * SMALL_REPEAT) as f64 / started.elapsed().as_secs_f64();
    s.write_all(b"z LOGOUT\r\n").expect("write");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    (big_mbs, small_msgs)
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

fn run(target: Target, store_port: u16, map: &Arc<UserMap>) -> Figures {
    if target == Target::Direct {
        let mut s = StdTcp::connect(("127.0.0.1", store_port)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).expect("greeting");
        s.write_all(format!("l LOGIN {USER} {PASSWORD}\r\n").as_bytes())
            .expect("login");
        until_tagged(&mut s, "l", &mut buf);
        let (big_mbs, small_msgs) = workload(&mut s, 0, 1);
        return Figures {
            big_mbs,
            small_msgs,
            relay_cpu: Duration::ZERO,
            relay_bytes: 0,
        };
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let map = Arc::clone(map);
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
            let (end, totals) = match target {
                Target::Plain => relay::relay(&mut client, &mut store, counters(), &cancel).await,
                Target::Splice => relay::relay_plain(&client, &store, counters(), &cancel).await,
                _ => {
                    let mut t = Translator::new(map);
                    relay::relay_with(&mut client, &mut store, Some(&mut t), counters(), &cancel)
                        .await
                }
            };
            assert_eq!(end, End::Closed);
            (thread_cpu() - cpu, totals.to_client + totals.to_backend)
        })
    });
    let mut s = StdTcp::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let base = if target == Target::Translated {
        OFFSET
    } else {
        0
    };
    let (big_mbs, small_msgs) = workload(&mut s, base, 1);
    drop(s);
    let (relay_cpu, relay_bytes) = relay.join().expect("relay thread");
    Figures {
        big_mbs,
        small_msgs,
        relay_cpu,
        relay_bytes,
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
    let mut rounds = 3;
    let mut idle = 2000;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--idle" => idle = it.next().and_then(|v| v.parse().ok()).unwrap_or(2000),
            other => {
                eprintln!("unknown argument {other:?}; usage: cargo bench --bench translate -- [--rounds N] [--idle N]");
                std::process::exit(2);
            }
        }
    }
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

    let targets = [
        Target::Direct,
        Target::Plain,
        Target::Splice,
        Target::Translated,
    ];
    println!("| round | target | 10 MB FETCH MB/s | 1,000 msgs FETCH msgs/s | relay CPU s/GB |");
    println!("|---|---|---|---|---|");
    for round in 1..=rounds {
        for &t in &targets {
            let f = run(t, store.imap_port(), &map);
            let per_gb = if f.relay_bytes > 0 {
                format!(
                    "{:.3}",
                    f.relay_cpu.as_secs_f64() / (f.relay_bytes as f64 / 1e9)
                )
            } else {
                "-".into()
            };
            println!(
                "| {round} | {} | {:.0} | {:.0} | {per_gb} |",
                t.name(),
                f.big_mbs,
                f.small_msgs
            );
        }
    }
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
