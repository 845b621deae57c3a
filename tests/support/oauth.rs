//! A small OAuth 2.0 token introspection endpoint (RFC 7662) for Dovecot's
//! `oauth2` passdb (`introspection_mode = post`): `POST token=...` answered
//! `{"active": true, "username": "..."}` for the tokens it was given, and
//! `{"active": false}` for any other. It records every token it is asked
//! about, so a test sees exactly what the store received.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Introspection {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Introspection {
    /// Serves `tokens` (token → username) on a free loopback port.
    pub fn start(tokens: &[(&str, &str)]) -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind introspection");
        let port = listener.local_addr().expect("addr").port();
        let tokens: HashMap<String, String> = tokens
            .iter()
            .map(|(t, u)| (t.to_string(), u.to_string()))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let tokens = tokens.clone();
                let seen = Arc::clone(&seen2);
                std::thread::spawn(move || {
                    let _ = serve(conn, &tokens, &seen);
                });
            }
        });
        Introspection {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL for `introspection_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    /// Every token asked about, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection (`Connection: close`).
fn serve(
    conn: TcpStream,
    tokens: &HashMap<String, String>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body);
    let token = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(form_decode)
        .unwrap_or_default();
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(token.clone());
    let json = match tokens.get(&token) {
        Some(user) => format!("{{\"active\": true, \"username\": \"{user}\"}}"),
        None => "{\"active\": false}".to_string(),
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{json}",
        json.len()
    )?;
    w.flush()
}

/// application/x-www-form-urlencoded value.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
