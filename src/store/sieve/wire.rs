//! The ManageSieve (RFC 5804) wire format, sans I/O, both directions: a
//! framer that cuts bytes into whole lines (literals included) under line
//! and literal limits, the tokens of a line, the `OK`/`NO`/`BYE` responses,
//! and how strings are written. The front end frames client commands with
//! it, the store client the store's responses.
//!
//! ```text
//!  line     = token *(SP token) CRLF
//!  token    = atom | "quoted" | {n}CRLF n*OCTET | {n+}CRLF n*OCTET | "(" | ")"
//!  response = ("OK" | "NO" | "BYE") [SP "(" code ")"] [SP string] CRLF
//! ```

/// One token of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A bare word (`OK`, `AUTHENTICATE`, `ACTIVE`, a response code name).
    Atom(String),
    /// A quoted string or a literal, unescaped.
    Str(Vec<u8>),
    /// `(`, opening a response code.
    Open,
    /// `)`.
    Close,
}

impl Token {
    /// The atom, upper-cased, if this is one.
    pub fn atom(&self) -> Option<String> {
        match self {
            Token::Atom(a) => Some(a.to_ascii_uppercase()),
            _ => None,
        }
    }

    /// The string's bytes, if this is one.
    pub fn string(&self) -> Option<&[u8]> {
        match self {
            Token::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What is wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line (literals not counted) longer than the limit; the framer skips
    /// to its end.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// A literal larger than the limit; the stream cannot be trusted after it.
    #[error("literal of {size} bytes is over the {max}-byte limit")]
    LiteralTooLong {
        /// Announced size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// Not ManageSieve syntax; the line is dropped.
    #[error("malformed line: {0}")]
    Malformed(&'static str),
}

/// Cuts a byte stream into lines of tokens.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_line: usize,
    max_literal: usize,
    /// Bytes the current line needs at least before parsing is worth trying
    /// again (a literal still arriving).
    need: usize,
    /// Dropping the rest of an oversized line.
    skipping: bool,
    /// After an oversized literal nothing more is framed: its bytes would
    /// read as commands.
    broken: bool,
}

enum Parsed {
    Line(Vec<Token>, usize),
    Incomplete { need: usize },
}

impl Framer {
    /// A framer with these limits.
    pub fn new(max_line: usize, max_literal: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max_line,
            max_literal,
            need: 0,
            skipping: false,
            broken: false,
        }
    }

    /// Adds bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes not yet framed (what a client pipelined after its
    /// login, for the relay).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.need = 0;
        std::mem::take(&mut self.buf)
    }

    /// Drops everything buffered (STARTTLS: plaintext after it is never read).
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.need = 0;
        self.skipping = false;
    }

    /// The next whole line, `None` when more bytes are needed.
    pub fn next_line(&mut self) -> Result<Option<Vec<Token>>, Error> {
        if self.broken {
            self.buf.clear();
            return Ok(None);
        }
        if self.skipping {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.buf.drain(..=i);
                    self.skipping = false;
                }
                None => {
                    self.buf.clear();
                    return Ok(None);
                }
            }
        }
        if self.buf.len() < self.need || self.buf.is_empty() {
            return Ok(None);
        }
        match parse(&self.buf, self.max_line, self.max_literal) {
            Ok(Parsed::Line(tokens, used)) => {
                self.buf.drain(..used);
                self.need = 0;
                Ok(Some(tokens))
            }
            Ok(Parsed::Incomplete { need }) => {
                self.need = need;
                Ok(None)
            }
            Err(e @ Error::LineTooLong { .. }) | Err(e @ Error::Malformed(_)) => {
                self.need = 0;
                self.skipping = true;
                Err(e)
            }
            Err(e) => {
                self.need = 0;
                self.buf.clear();
                self.broken = true;
                Err(e)
            }
        }
    }
}

fn is_atom_char(b: u8) -> bool {
    !matches!(b, b' ' | b'(' | b')' | b'"' | b'{' | b'\r' | b'\n' | b'\\') && b >= 0x20 && b != 0x7f
}

/// Parses one line from the start of `buf`.
fn parse(buf: &[u8], max_line: usize, max_literal: usize) -> Result<Parsed, Error> {
    let mut tokens = Vec::new();
    let mut i = 0;
    // Line bytes outside literals, checked against max_line.
    let mut line_bytes = 0usize;
    let mut literal_bytes = 0usize;
    let too_long = |line_bytes: usize| line_bytes > max_line;
    loop {
        let Some(&b) = buf.get(i) else {
            return if too_long(line_bytes) {
                Err(Error::LineTooLong { max: max_line })
            } else {
                Ok(Parsed::Incomplete {
                    need: buf.len() + 1,
                })
            };
        };
        match b {
            b' ' => {
                i += 1;
                line_bytes += 1;
            }
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => return Ok(Parsed::Line(tokens, i + 2)),
                Some(_) => return Err(Error::Malformed("CR without LF")),
                None => return Ok(Parsed::Incomplete { need: i + 2 }),
            },
            b'\n' => return Ok(Parsed::Line(tokens, i + 1)),
            b'(' => {
                tokens.push(Token::Open);
                i += 1;
                line_bytes += 1;
            }
            b')' => {
                tokens.push(Token::Close);
                i += 1;
                line_bytes += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                let mut j = i + 1;
                loop {
                    match buf.get(j) {
                        None => {
                            return if too_long(line_bytes + (j - i)) {
                                Err(Error::LineTooLong { max: max_line })
                            } else {
                                Ok(Parsed::Incomplete {
                                    need: buf.len() + 1,
                                })
                            };
                        }
                        Some(b'"') => break,
                        Some(b'\\') => match buf.get(j + 1) {
                            Some(&c @ (b'"' | b'\\')) => {
                                s.push(c);
                                j += 2;
                            }
                            Some(_) => {
                                return Err(Error::Malformed("bad escape in a quoted string"))
                            }
                            None => {
                                return Ok(Parsed::Incomplete {
                                    need: buf.len() + 1,
                                })
                            }
                        },
                        Some(b'\r' | b'\n' | 0) => {
                            return Err(Error::Malformed("CR, LF or NUL in a quoted string"))
                        }
                        Some(&c) => {
                            s.push(c);
                            j += 1;
                        }
                    }
                }
                line_bytes += j + 1 - i;
                i = j + 1;
                tokens.push(Token::Str(s));
            }
            b'{' => {
                let Some(close) = buf[i..].iter().position(|&c| c == b'}') else {
                    return if buf.len() - i > 24 {
                        Err(Error::Malformed("literal size not closed"))
                    } else {
                        Ok(Parsed::Incomplete {
                            need: buf.len() + 1,
                        })
                    };
                };
                let inner = &buf[i + 1..i + close];
                let digits = inner.strip_suffix(b"+").unwrap_or(inner);
                if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit)
                {
                    return Err(Error::Malformed("bad literal size"));
                }
                let size: u64 = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or(Error::Malformed("bad literal size"))?;
                if size > max_literal as u64 {
                    return Err(Error::LiteralTooLong {
                        size,
                        max: max_literal,
                    });
                }
                let size = size as usize;
                let mut j = i + close + 1;
                match (buf.get(j), buf.get(j + 1)) {
                    (Some(b'\r'), Some(b'\n')) => j += 2,
                    (Some(b'\n'), _) => j += 1,
                    (None, _) | (Some(b'\r'), None) => {
                        return Ok(Parsed::Incomplete { need: j + 2 })
                    }
                    _ => return Err(Error::Malformed("literal size not followed by CRLF")),
                }
                line_bytes += j - i;
                literal_bytes += size;
                if too_long(line_bytes) {
                    return Err(Error::LineTooLong { max: max_line });
                }
                if buf.len() < j + size {
                    // At least the literal and a line end.
                    return Ok(Parsed::Incomplete { need: j + size + 1 });
                }
                tokens.push(Token::Str(buf[j..j + size].to_vec()));
                i = j + size;
                let _ = literal_bytes;
            }
            c if is_atom_char(c) => {
                let start = i;
                while buf.get(i).is_some_and(|&c| is_atom_char(c)) {
                    i += 1;
                }
                line_bytes += i - start;
                if too_long(line_bytes) {
                    return Err(Error::LineTooLong { max: max_line });
                }
                if i == buf.len() {
                    return Ok(Parsed::Incomplete {
                        need: buf.len() + 1,
                    });
                }
                // Atoms are ASCII by construction only if the bytes are; keep
                // whatever came, lossily, for error texts.
                tokens.push(Token::Atom(
                    String::from_utf8_lossy(&buf[start..i]).into_owned(),
                ));
            }
            _ => return Err(Error::Malformed("unexpected byte")),
        }
        if too_long(line_bytes) {
            return Err(Error::LineTooLong { max: max_line });
        }
    }
}

/// `OK`, `NO` or `BYE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok,
    /// Failure of this command.
    No,
    /// The server is closing the connection.
    Bye,
}

/// A response line: status, optional code, optional text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// OK, NO or BYE.
    pub status: Status,
    /// The code's tokens inside the parentheses (`TRYLATER`,
    /// `QUOTA/MAXSIZE`, `SASL "…"`), if any.
    pub code: Vec<Token>,
    /// The human-readable text, if any.
    pub text: Option<Vec<u8>>,
}

impl Response {
    /// The code's name, upper-cased (`TRYLATER`, `QUOTA/MAXSIZE`, `WARNINGS`).
    pub fn code_name(&self) -> Option<String> {
        self.code.first().and_then(Token::atom)
    }

    /// The text, lossily as UTF-8, for logs and reports.
    pub fn text_lossy(&self) -> String {
        self.text
            .as_deref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default()
    }

    /// The response as one line for logs and errors (`NO (TRYLATER) "…"`).
    pub fn summary(&self) -> String {
        let status = match self.status {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bye => "BYE",
        };
        match self.code_name() {
            Some(c) => format!("{status} ({c}) {:?}", self.text_lossy()),
            None => format!("{status} {:?}", self.text_lossy()),
        }
    }
}

/// The line as a response, if it is one (else it is data: a capability, a
/// script name, a literal).
pub fn response(tokens: &[Token]) -> Option<Response> {
    let status = match tokens.first()?.atom()?.as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BYE" => Status::Bye,
        _ => return None,
    };
    let mut rest = &tokens[1..];
    let mut code = Vec::new();
    if rest.first() == Some(&Token::Open) {
        let end = rest.iter().position(|t| *t == Token::Close)?;
        code = rest[1..end].to_vec();
        rest = &rest[end + 1..];
    }
    let text = rest.first().and_then(Token::string).map(<[u8]>::to_vec);
    Some(Response { status, code, text })
}

/// Writes `value` as a quoted string when it can be one, else as a
/// non-synchronizing literal (`{n+}`; RFC 5804 servers accept it).
pub fn string(out: &mut Vec<u8>, value: &[u8]) {
    let quotable = value.len() <= 1024 && value.iter().all(|&b| b != 0 && b != b'\r' && b != b'\n');
    if quotable {
        out.push(b'"');
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}+}}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
    }
}

/// A literal as the server side writes it (`{n}`; RFC 5804 `literal-s2c`).
pub fn literal_s2c(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Result<Vec<Token>, Error>> {
        let mut f = Framer::new(64, 32);
        let mut out = Vec::new();
        // One byte at a time: framing must not depend on how reads split.
        for b in input {
            f.feed(&[*b]);
            loop {
                match f.next_line() {
                    Ok(Some(l)) => out.push(Ok(l)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        out
    }

    #[test]
    fn tokens_quoted_literals_and_codes() {
        let got = lines(b"NO (QUOTA/MAXSIZE) \"Too \\\"big\\\"\"\r\nPUTSCRIPT \"a\" {3+}\r\nabc\r\n{2}\r\nxy\r\n");
        assert_eq!(got.len(), 3);
        let r =
            response(got[0].as_ref().expect("test input is valid")).expect("test input is valid");
        assert_eq!(r.status, Status::No);
        assert_eq!(r.code_name().as_deref(), Some("QUOTA/MAXSIZE"));
        assert_eq!(r.text.as_deref(), Some(&b"Too \"big\""[..]));
        assert_eq!(
            got[1].as_ref().expect("test input is valid"),
            &vec![
                Token::Atom("PUTSCRIPT".into()),
                Token::Str(b"a".to_vec()),
                Token::Str(b"abc".to_vec())
            ]
        );
        assert_eq!(
            got[2].as_ref().expect("test input is valid"),
            &vec![Token::Str(b"xy".to_vec())]
        );
    }

    #[test]
    fn oversized_line_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'A'; 100];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let got = lines(&input);
        assert_eq!(got[0], Err(Error::LineTooLong { max: 64 }));
        assert_eq!(
            got.last()
                .expect("test input is valid")
                .as_ref()
                .expect("test input is valid"),
            &vec![Token::Atom("NOOP".into())]
        );
    }

    #[test]
    fn oversized_literal_is_refused_before_its_bytes() {
        let got = lines(b"AUTHENTICATE \"PLAIN\" {99999+}\r\n");
        assert_eq!(
            got,
            vec![Err(Error::LiteralTooLong {
                size: 99999,
                max: 32
            })]
        );
    }

    #[test]
    fn written_strings_read_back() {
        for v in [
            &b"plain"[..],
            b"with \"quotes\" and \\",
            b"two\r\nlines",
            b"",
        ] {
            let mut out = Vec::new();
            string(&mut out, v);
            out.extend_from_slice(b"\r\n");
            let mut f = Framer::new(4096, 4096);
            f.feed(&out);
            assert_eq!(
                f.next_line()
                    .expect("test input is valid")
                    .expect("test input is valid"),
                vec![Token::Str(v.to_vec())]
            );
        }
    }
}
