//! A tiny SMTP sink: accepts every transaction on a given port and keeps the
//! messages, so a test sees what a store's submission service relayed (each
//! store relays to its own sink).
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One relayed message.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub from: String,
    pub rcpts: Vec<String>,
    /// The message as received (dot-unstuffed, CRLF line ends).
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Inbox {
    messages: Mutex<Vec<Relayed>>,
    arrived: Condvar,
}

pub struct Sink {
    port: u16,
    inbox: Arc<Inbox>,
}

impl Sink {
    /// Listens on 127.0.0.1:`port` (a port the store was configured to relay to).
    pub fn start(port: u16) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("sink on {port}: {e}"));
        let inbox = Arc::new(Inbox::default());
        let shared = Arc::clone(&inbox);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let inbox = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = session(conn, &inbox);
                });
            }
        });
        Sink { port, inbox }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything relayed so far.
    pub fn messages(&self) -> Vec<Relayed> {
        self.inbox.messages.lock().expect("sink lock").clone()
    }

    /// Waits (up to 30 s) until a message whose data contains `needle`
    /// arrived; `None` if none did.
    pub fn wait_for(&self, needle: &str) -> Option<Relayed> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut msgs = self.inbox.messages.lock().expect("sink lock");
        loop {
            if let Some(m) = msgs
                .iter()
                .find(|m| String::from_utf8_lossy(&m.data).contains(needle))
            {
                return Some(m.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            msgs = self
                .inbox
                .arrived
                .wait_timeout(msgs, left)
                .expect("sink lock")
                .0;
        }
    }

    /// Whether any message contains `needle` (no waiting).
    pub fn has(&self, needle: &str) -> bool {
        self.messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains(needle))
    }
}

fn session(conn: TcpStream, inbox: &Inbox) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    w.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut from = String::new();
    let mut rcpts = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 sink.test\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_string();
            rcpts.clear();
            w.write_all(b"250 2.1.0 Ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            rcpts.push(line[8..].trim().to_string());
            w.write_all(b"250 2.1.5 Ok\r\n")?;
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n")?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" || l == b".\n" {
                    break;
                }
                let l = l.strip_prefix(b".").unwrap_or(&l);
                data.extend_from_slice(l);
            }
            inbox.messages.lock().expect("sink lock").push(Relayed {
                from: from.clone(),
                rcpts: std::mem::take(&mut rcpts),
                data,
            });
            inbox.arrived.notify_all();
            w.write_all(b"250 2.0.0 Ok: queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            // RSET, NOOP, XCLIENT and the rest.
            w.write_all(b"250 2.0.0 Ok\r\n")?;
        }
    }
}
