//! A tiny blocking ManageSieve client for tests (plain TCP): commands, the
//! lines up to the OK/NO/BYE that ends the reply, `{N}` literals folded in,
//! and a read timeout so a silent server fails the test instead of hanging.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct SieveClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The capability listing and OK of the greeting.
    pub greeting: Vec<String>,
}

/// The lines of a reply before its response, and the response line.
pub type Reply = (Vec<String>, String);

impl SieveClient {
    pub fn connect(port: u16) -> SieveClient {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("ManageSieve connect to {port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("set_read_timeout");
        let mut c = SieveClient {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
            greeting: Vec::new(),
        };
        let (mut lines, ok) = c.reply();
        lines.push(ok);
        c.greeting = lines;
        c
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// One line, with any literal it announces appended (without CRLF).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read");
        assert!(n > 0, "connection closed");
        let mut line = line.trim_end_matches(['\r', '\n']).to_string();
        if let Some(size) = line
            .strip_suffix('}')
            .and_then(|l| l.rsplit_once('{'))
            .and_then(|(_, n)| n.parse::<usize>().ok())
        {
            let mut lit = vec![0; size];
            self.reader.read_exact(&mut lit).expect("literal");
            line.push('\n');
            line.push_str(&String::from_utf8_lossy(&lit));
            line.push_str(&self.line());
        }
        line
    }

    /// Lines up to and including the response (OK, NO or BYE).
    pub fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            let head = l
                .split([' ', '('])
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            if matches!(head.as_str(), "OK" | "NO" | "BYE") {
                return (lines, l);
            }
            lines.push(l);
        }
    }

    pub fn cmd(&mut self, command: &str) -> Reply {
        self.send_raw(format!("{command}\r\n").as_bytes());
        self.reply()
    }

    /// AUTHENTICATE PLAIN with an initial response; the response line.
    pub fn login(&mut self, user: &str, password: &str) -> String {
        let ir = base64(format!("\0{user}\0{password}").as_bytes());
        self.cmd(&format!("AUTHENTICATE \"PLAIN\" \"{ir}\"")).1
    }

    /// Whether the server closed the connection (EOF on the next read).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
