//! Inbound SMTP benchmark: messages per second and p99 transaction latency
//! through mailshift against the same load straight to the store's LMTP, in
//! one run, targets interleaved.
//!
//! ```text
//! cargo bench --bench smtp -- [--connections 16] [--size 10240] [--seconds 5] [--rounds 2]
//! ```
//!
//! Starts the lab (slapd, two Dovecot stores), mailshift with `[smtp]` in front
//! of them, and a load generator of its own: N connections, each sending one
//! message after another (MAIL, RCPT, DATA; pipelined like Postfix) to
//! alice@example.org on the old store. Everything listens on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Lab, Mailshift};

struct Opts {
    connections: usize,
    size: usize,
    seconds: u64,
    rounds: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        connections: 16,
        size: 10 * 1024,
        seconds: 5,
        rounds: 2,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = || args.get(i + 1).and_then(|s| s.parse().ok());
        match args[i].as_str() {
            "--connections" => o.connections = v().unwrap_or(o.connections),
            "--size" => o.size = v().unwrap_or(o.size),
            "--seconds" => o.seconds = v().map(|x: usize| x as u64).unwrap_or(o.seconds),
            "--rounds" => o.rounds = v().unwrap_or(o.rounds),
            _ => {}
        }
        i += 1;
    }
    o
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// One connection's loop; returns the latency of every transaction.
fn client(port: u16, lmtp: bool, message: Arc<Vec<u8>>, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    assert!(reply(&mut r).starts_with("220"));
    let hello = if lmtp { "LHLO" } else { "EHLO" };
    w.write_all(format!("{hello} bench.example.net\r\n").as_bytes())
        .expect("hello");
    assert!(reply(&mut r).starts_with("250"));
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        w.write_all(b"MAIL FROM:<bench@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
            .expect("envelope");
        for want in ["250", "250", "354"] {
            let got = reply(&mut r);
            assert!(got.starts_with(want), "{want}: {got}");
        }
        w.write_all(&message).expect("data");
        let got = reply(&mut r);
        assert!(got.starts_with("250"), "end of data: {got}");
        lat.push(t.elapsed());
    }
    let _ = w.write_all(b"QUIT\r\n");
    lat
}

struct Result {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn run(port: u16, lmtp: bool, o: &Opts, message: &Arc<Vec<u8>>) -> Result {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..o.connections)
        .map(|_| {
            let (m, s) = (Arc::clone(message), Arc::clone(&stop));
            std::thread::spawn(move || client(port, lmtp, m, s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(o.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Result {
        rate: all.len() as f64 / elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn main() {
    let o = opts();
    let lab = Lab::start(false);
    let queue = tempfile::tempdir().expect("queue dir");
    let cfg = lab.mailshift_config(&format!(
        "[smtp]\nlisten = \"127.0.0.1:@SMTP_PORT@\"\ndomains = [\"example.org\"]\n\
         hostname = \"mx.bench\"\nqueue_dir = \"{}\"\nmax_connections_per_ip = 1000\n",
        queue.path().display()
    ));
    let proxy = Mailshift::start(&cfg);
    let mut body = Vec::new();
    body.extend_from_slice(
        b"From: <bench@example.net>\r\nTo: <alice@example.org>\r\nSubject: bench\r\n\r\n",
    );
    while body.len() < o.size {
        body.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789012\r\n",
        );
    }
    body.truncate(o.size);
    body.extend_from_slice(b"\r\n.\r\n");
    let message = Arc::new(body);
    // Warm up both paths (directory cache, Dovecot processes).
    let warm = Opts {
        seconds: 1,
        ..opts()
    };
    run(lab.old.lmtp_port(), true, &warm, &message);
    run(proxy.smtp_port(), false, &warm, &message);
    println!(
        "| round | target | msgs/s | p50 ms | p99 ms |   ({} connections, {} B messages, {} s each)",
        o.connections, o.size, o.seconds
    );
    println!("|---|---|---|---|---|");
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        for (name, port, lmtp) in [
            ("direct LMTP", lab.old.lmtp_port(), true),
            ("mailshift SMTP → LMTP", proxy.smtp_port(), false),
        ] {
            let r = run(port, lmtp, &o, &message);
            println!(
                "| {round} | {name} | {:.0} | {:.2} | {:.2} |",
                r.rate,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3
            );
            if lmtp { &mut direct } else { &mut through }.push(r);
        }
    }
    let mean = |v: &[Result]| v.iter().map(|r| r.rate).sum::<f64>() / v.len() as f64;
    let p99 = |v: &[Result]| v.iter().map(|r| r.p99.as_secs_f64()).fold(0.0, f64::max) * 1e3;
    println!(
        "\nmailshift / direct: {:.0}% of the direct rate; worst p99 {:.2} ms vs {:.2} ms",
        100.0 * mean(&through) / mean(&direct),
        p99(&through),
        p99(&direct)
    );
}
