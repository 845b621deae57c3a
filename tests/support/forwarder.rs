//! A TCP forwarder the test controls, standing for a load balancer, TLS
//! terminator or director in front of a store: it accepts whatever the client
//! sends at once (into its own buffer) and passes it on to the store at a set
//! rate. When the client dies, the forwarder still delivers what it accepted,
//! so the store may commit a command after its sender is gone.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Stats {
    /// Bytes accepted from clients.
    accepted: AtomicU64,
    /// Bytes passed on to the store.
    forwarded: AtomicU64,
    /// Connections still open on either side.
    open: AtomicUsize,
    stop: AtomicBool,
    /// Nothing is passed on while set (a relay that stalls).
    paused: AtomicBool,
}

/// A forwarder listening on a loopback port.
pub struct Forwarder {
    port: u16,
    stats: Arc<Stats>,
}

/// What one direction of a connection holds between reader and writer.
struct Pipe {
    buf: Mutex<(VecDeque<u8>, bool)>,
    ready: Condvar,
}

impl Forwarder {
    /// Forwards 127.0.0.1:(new port) → 127.0.0.1:`target`, client → store at
    /// `rate` bytes per second, store → client at full speed.
    pub fn start(target: u16, rate: u64) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        let port = listener.local_addr().expect("local_addr").port();
        let stats = Arc::new(Stats::default());
        let st = Arc::clone(&stats);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(store) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                connection(client, store, rate, Arc::clone(&st));
            }
        });
        Forwarder { port, stats }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes accepted from clients but not yet passed to the store.
    pub fn pending(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst) - self.stats.forwarded.load(Ordering::SeqCst)
    }

    /// Stops passing bytes on to the store (it keeps accepting them).
    pub fn pause(&self) {
        self.stats.paused.store(true, Ordering::SeqCst);
    }

    /// Passes bytes on again.
    pub fn resume(&self) {
        self.stats.paused.store(false, Ordering::SeqCst);
    }

    /// Bytes accepted from clients so far.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Waits until the client has handed the relay a whole command that the
    /// store has not got yet: at least `min_pending` bytes inside, then the
    /// relay stalls and waits for the client to stop sending (it is waiting
    /// for the reply). The relay is left paused; `child` must stay alive.
    pub fn catch_a_batch(
        &self,
        min_accepted: u64,
        min_pending: u64,
        child: &mut std::process::Child,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        while !(self.accepted() >= min_accepted && self.pending() >= min_pending) {
            assert!(Instant::now() < deadline, "no batch in flight");
            assert!(
                child.try_wait().ok().flatten().is_none(),
                "the pass ended early"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        self.pause();
        let mut last = self.accepted();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(300) {
            assert!(
                Instant::now() < deadline,
                "the client never stopped sending"
            );
            std::thread::sleep(Duration::from_millis(20));
            let now = self.accepted();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
    }

    /// Waits until everything accepted was delivered and every connection
    /// closed (or `timeout`).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pending() == 0 && self.stats.open.load(Ordering::SeqCst) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stats.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn connection(client: TcpStream, store: TcpStream, rate: u64, st: Arc<Stats>) {
    let (Ok(client_r), Ok(store_r)) = (client.try_clone(), store.try_clone()) else {
        return;
    };
    st.open.fetch_add(2, Ordering::SeqCst);
    let pipe = Arc::new(Pipe {
        buf: Mutex::new((VecDeque::new(), false)),
        ready: Condvar::new(),
    });
    // client → buffer, as fast as the client sends.
    {
        let (pipe, st) = (Arc::clone(&pipe), Arc::clone(&st));
        let mut client_r = client_r;
        std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let n = client_r.read(&mut chunk).unwrap_or(0);
                let mut g = pipe.buf.lock().unwrap_or_else(|p| p.into_inner());
                if n == 0 {
                    g.1 = true;
                    pipe.ready.notify_all();
                    break;
                }
                g.0.extend(&chunk[..n]);
                st.accepted.fetch_add(n as u64, Ordering::SeqCst);
                pipe.ready.notify_all();
            }
        });
    }
    // buffer → store, at `rate`; after the client's EOF, drain, then half-close.
    {
        let (pipe, st) = (Arc::clone(&pipe), Arc::clone(&st));
        let mut store_w = store;
        std::thread::spawn(move || {
            let slice = (rate / 20).max(1) as usize; // 50 ms worth
            loop {
                while st.paused.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let out: Vec<u8> = {
                    let mut g = pipe.buf.lock().unwrap_or_else(|p| p.into_inner());
                    while g.0.is_empty() && !g.1 {
                        g = pipe.ready.wait(g).unwrap_or_else(|p| p.into_inner());
                    }
                    if g.0.is_empty() {
                        break;
                    }
                    let n = slice.min(g.0.len());
                    g.0.drain(..n).collect()
                };
                if store_w.write_all(&out).is_err() {
                    break;
                }
                st.forwarded.fetch_add(out.len() as u64, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
            // Whatever could not be delivered counts as gone.
            let left = pipe.buf.lock().map(|g| g.0.len()).unwrap_or(0);
            st.forwarded.fetch_add(left as u64, Ordering::SeqCst);
            let _ = store_w.shutdown(Shutdown::Write);
            st.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // store → client, full speed.
    std::thread::spawn(move || {
        let mut store_r = store_r;
        let mut client = client;
        let _ = std::io::copy(&mut store_r, &mut client);
        let _ = client.shutdown(Shutdown::Both);
        st.open.fetch_sub(1, Ordering::SeqCst);
    });
}
