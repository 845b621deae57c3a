//! A plain blocking SMTP client for tests that need to see every reply, or
//! to misbehave on purpose (pipelined injection, a half-sent message).
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct SmtpClient {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl SmtpClient {
    /// Connects and reads the greeting (which must be 220).
    pub fn connect(port: u16) -> SmtpClient {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to mailshift SMTP");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut c = SmtpClient {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        };
        let g = c.reply();
        assert!(g.starts_with("220 "), "greeting: {g}");
        c
    }

    /// Reads one reply, all lines; "" when the connection closed.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write to mailshift");
    }

    /// Sends a command line and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends a command; panics unless the reply starts with `code`.
    pub fn expect(&mut self, line: &str, code: &str) -> String {
        let r = self.cmd(line);
        assert!(r.starts_with(code), "{line} → {r:?}, wanted {code}");
        r
    }

    /// The message in wire form (dot-stuffed, CRLF.CRLF).
    pub fn wire(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in message.split_inclusive(|&b| b == b'\n') {
            if l.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(l);
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// A whole transaction; returns the reply to the end of data.
    pub fn send_mail(&mut self, from: &str, rcpts: &[&str], message: &[u8]) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), "250");
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), "250");
        }
        self.expect("DATA", "354");
        self.send(&Self::wire(message));
        self.reply()
    }

    pub fn stream(&self) -> &TcpStream {
        &self.w
    }
}
