//! A tiny blocking IMAP client for tests: tagged commands, untagged lines
//! with `{N}` literals folded in (so FETCH BODY[] works), and a read timeout
//! so a silent server fails the test instead of hanging it.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct ImapClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
    /// The server greeting line.
    pub greeting: String,
}

impl ImapClient {
    /// Connects to 127.0.0.1:port and reads the greeting.
    pub fn connect(port: u16) -> ImapClient {
        Self::try_connect(port).unwrap_or_else(|e| panic!("IMAP connect to port {port}: {e}"))
    }

    pub fn try_connect(port: u16) -> std::io::Result<ImapClient> {
        Self::try_from_stream(TcpStream::connect(("127.0.0.1", port))?)
    }

    /// Takes a connected stream (e.g. one bound to another loopback address)
    /// and reads the greeting.
    pub fn try_from_stream(s: TcpStream) -> std::io::Result<ImapClient> {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = ImapClient {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            tag: 0,
            greeting: String::new(),
        };
        c.greeting = c.try_read_response()?;
        Ok(c)
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.writer
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
    }

    /// Sends `TAG command` and reads up to the tagged reply: (untagged and
    /// continuation lines, tagged line). Lines lose their CRLF.
    pub fn cmd(&mut self, command: &str) -> (Vec<String>, String) {
        let tag = self.send(command);
        self.read_until_tagged(&tag)
    }

    /// Like [`cmd`](Self::cmd) but panics unless the reply is OK; returns the
    /// untagged lines.
    pub fn ok(&mut self, command: &str) -> Vec<String> {
        let (lines, tagged) = self.cmd(command);
        let status = tagged.split(' ').nth(1).unwrap_or("");
        assert!(
            status.eq_ignore_ascii_case("OK"),
            "IMAP {command:?} failed: {tagged}\n{lines:#?}"
        );
        lines
    }

    /// Sends `TAG command` without waiting; returns the tag.
    pub fn send(&mut self, command: &str) -> String {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.write_raw(format!("{tag} {command}\r\n").as_bytes());
        tag
    }

    /// Sends `TAG command {N+}` and the literal (LITERAL+) without waiting.
    pub fn send_literal(&mut self, command: &str, literal: &[u8]) -> String {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        let mut out = format!("{tag} {command} {{{}+}}\r\n", literal.len()).into_bytes();
        out.extend_from_slice(literal);
        out.extend_from_slice(b"\r\n");
        self.write_raw(&out);
        tag
    }

    /// Sends `TAG command {N}` with a synchronizing literal (for servers
    /// without LITERAL+, such as Courier) and returns the tagged reply.
    pub fn cmd_sync_literal(&mut self, command: &str, literal: &[u8]) -> String {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.write_raw(format!("{tag} {command} {{{}}}\r\n", literal.len()).as_bytes());
        let go = self.read_response();
        if !go.starts_with('+') {
            return go;
        }
        let mut out = literal.to_vec();
        out.extend_from_slice(b"\r\n");
        self.write_raw(&out);
        self.read_until_tagged(&tag).1
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("IMAP write");
    }

    /// Reads responses until the one tagged `tag`.
    pub fn read_until_tagged(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut lines = Vec::new();
        loop {
            let line = self.read_response();
            if line.starts_with(&format!("{tag} ")) {
                return (lines, line);
            }
            lines.push(line);
        }
    }

    /// Like [`read_until_tagged`](Self::read_until_tagged), but a `* BYE`, a
    /// closed connection or a timeout is an `Err` instead of a panic.
    pub fn try_read_until_tagged(&mut self, tag: &str) -> std::io::Result<String> {
        loop {
            let line = self.try_read_response()?;
            if line.starts_with(&format!("{tag} ")) {
                return Ok(line);
            }
            if line.starts_with("* BYE") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    line,
                ));
            }
        }
    }

    /// One raw line without CRLF (no literal handling).
    pub fn read_line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).expect("IMAP read");
        assert!(n > 0, "IMAP server closed the connection");
        trim_crlf(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// One response, with any `{N}` literals read and folded in.
    pub fn read_response(&mut self) -> String {
        self.try_read_response().expect("IMAP read")
    }

    pub fn try_read_response(&mut self) -> std::io::Result<String> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            if self.reader.read_until(b'\n', &mut buf)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "server closed the connection (after {:?})",
                        String::from_utf8_lossy(&out)
                    ),
                ));
            }
            trim_crlf(&mut buf);
            let literal = literal_len(&buf);
            out.extend_from_slice(&buf);
            match literal {
                Some(n) => {
                    let mut lit = vec![0; n];
                    self.reader.read_exact(&mut lit)?;
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&lit);
                }
                None => return Ok(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    /// LOGIN with quoted strings, panicking on failure.
    pub fn login(&mut self, user: &str, password: &str) {
        self.ok(&format!("LOGIN {} {}", quote(user), quote(password)));
    }

    /// The subjects of all messages in the selected mailbox, in order.
    pub fn subjects(&mut self) -> Vec<String> {
        let lines = self.ok("FETCH 1:* BODY.PEEK[HEADER.FIELDS (SUBJECT)]");
        lines
            .iter()
            .filter(|l| l.contains(" FETCH "))
            .filter_map(|l| {
                l.lines()
                    .find_map(|h| h.strip_prefix("Subject: ").map(|s| s.trim().to_string()))
            })
            .collect()
    }
}

/// IMAP quoted string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn trim_crlf(buf: &mut Vec<u8>) {
    if buf.ends_with(b"\n") {
        buf.pop();
    }
    if buf.ends_with(b"\r") {
        buf.pop();
    }
}

/// `{N}` or `{N+}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|&b| b == b'{')?;
    let digits = &rest[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
