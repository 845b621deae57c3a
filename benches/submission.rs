//! Submission benchmark: messages per second through mailshift's submission
//! front end against the same load straight to the store's submission
//! service (Dovecot submission, relaying to a sink), in one run, targets
//! interleaved.
//!
//! ```text
//! cargo bench --bench submission -- [--connections 8] [--per-session 10] [--size 10240] [--seconds 5] [--rounds 2]
//! ```
//!
//! Each client connects, says EHLO, STARTTLS, EHLO, AUTH PLAIN as alice
//! (old store), sends `--per-session` messages (MAIL, RCPT, DATA, pipelined),
//! QUITs and starts over: the login is part of the cost, as it is for a mail
//! client sending a few messages. Everything listens on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use support::sink::Sink;
use support::{Lab, Mailshift};

struct Opts {
    connections: usize,
    per_session: usize,
    size: usize,
    seconds: u64,
    rounds: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        connections: 8,
        per_session: 10,
        size: 10 * 1024,
        seconds: 5,
        rounds: 2,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let v = || args.get(i + 1).and_then(|s| s.parse::<usize>().ok());
        match args[i].as_str() {
            "--connections" => o.connections = v().unwrap_or(o.connections),
            "--per-session" => o.per_session = v().unwrap_or(o.per_session).max(1),
            "--size" => o.size = v().unwrap_or(o.size),
            "--seconds" => o.seconds = v().map(|x| x as u64).unwrap_or(o.seconds),
            "--rounds" => o.rounds = v().unwrap_or(o.rounds),
            _ => {}
        }
        i += 1;
    }
    o
}

async fn reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

async fn expect<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, line: &[u8], want: &str) {
    if !line.is_empty() {
        s.get_mut().write_all(line).await.expect("write");
    }
    let got = reply(s).await;
    assert!(
        got.starts_with(want),
        "{:?} → {got}",
        String::from_utf8_lossy(line)
    );
}

/// One session: login, `n` messages, QUIT. Counts messages into `sent`.
async fn session(
    port: u16,
    tls: &TlsConnector,
    message: &[u8],
    n: usize,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut plain = BufReader::new(tcp);
    expect(&mut plain, b"", "220").await;
    expect(&mut plain, b"EHLO bench.example.net\r\n", "250").await;
    expect(&mut plain, b"STARTTLS\r\n", "220").await;
    let name = ServerName::try_from("localhost").expect("name");
    let t = tls
        .connect(name, plain.into_inner())
        .await
        .expect("TLS handshake");
    let mut s = BufReader::new(t);
    expect(&mut s, b"EHLO bench.example.net\r\n", "250").await;
    // alice / alicepw
    expect(&mut s, b"AUTH PLAIN AGFsaWNlAGFsaWNlcHc=\r\n", "235").await;
    for _ in 0..n {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        s.get_mut()
            .write_all(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")
            .await
            .expect("envelope");
        for want in ["250", "250", "354"] {
            let got = reply(&mut s).await;
            assert!(got.starts_with(want), "{want}: {got}");
        }
        expect(&mut s, message, "250").await;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    let _ = reply(&mut s).await;
}

async fn run(port: u16, o: &Opts, seconds: u64, tls: &TlsConnector, message: &Arc<Vec<u8>>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.connections)
        .map(|_| {
            let (m, st, se, t, n) = (
                Arc::clone(message),
                Arc::clone(&stop),
                Arc::clone(&sent),
                tls.clone(),
                o.per_session,
            );
            tokio::spawn(async move {
                while !st.load(Ordering::Relaxed) {
                    session(port, &t, &m, n, &st, &se).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let o = opts();
    let lab = Lab::start(false);
    let _old_sink = Sink::start(lab.old.submission_relay_port());
    let _new_sink = Sink::start(lab.new.submission_relay_port());
    let (port, tls_port) = (support::free_port(), support::free_port());
    let cfg = lab
        .mailshift_config(&format!(
            "[submission]\nlisten = \"127.0.0.1:{port}\"\nlisten_tls = \"127.0.0.1:{tls_port}\"\n\
             hostname = \"submit.bench\"\n"
        ))
        .replace(
            "[backends.old]\n",
            &format!(
                "[backends.old]\nsubmission = \"smtp+starttls://127.0.0.1:{}\"\n",
                lab.old.submission_port()
            ),
        )
        .replace(
            "[backends.new]\n",
            &format!(
                "[backends.new]\nsubmission = \"smtp+starttls://127.0.0.1:{}\"\n",
                lab.new.submission_port()
            ),
        );
    let proxy = Mailshift::start(&cfg);
    while !support::port_open(port) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = mailshift::tls::connector(Some(&lab.certs.ca_pem)).expect("lab CA");
    let mut body = Vec::new();
    body.extend_from_slice(
        b"From: <alice@example.org>\r\nTo: <carol@example.net>\r\nSubject: bench\r\n\r\n",
    );
    while body.len() < o.size {
        body.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789012\r\n",
        );
    }
    body.truncate(o.size);
    body.extend_from_slice(b"\r\n.\r\n");
    let message = Arc::new(body);
    let direct = lab.old.submission_port();
    // Warm up both paths (directory cache, Dovecot processes).
    run(direct, &o, 1, &tls, &message).await;
    run(port, &o, 1, &tls, &message).await;
    println!(
        "| round | target | msgs/s |   ({} connections, {} messages per session, {} B messages, {} s each)",
        o.connections, o.per_session, o.size, o.seconds
    );
    println!("|---|---|---|");
    let (mut d, mut m) = (Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        for (name, p) in [
            ("direct to Dovecot submission", direct),
            ("through mailshift", port),
        ] {
            let rate = run(p, &o, o.seconds, &tls, &message).await;
            println!("| {round} | {name} | {rate:.0} |");
            if p == direct { &mut d } else { &mut m }.push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "\nmailshift / direct: {:.2}x ({:.0} vs {:.0} msgs/s)",
        mean(&m) / mean(&d),
        mean(&m),
        mean(&d)
    );
    drop(proxy);
}
