//! METADATA (RFC 5464), sans I/O: the SETMETADATA command with its value as a
//! literal, and the `* METADATA` response read back into (mailbox, entry,
//! value). [`Client::get_metadata`](super::Client::get_metadata) and
//! [`Client::set_metadata`](super::Client::set_metadata) do the I/O.

use super::login::quoted;

/// `SETMETADATA mailbox (entry value)` without the tag; `None` removes the
/// entry (NIL). The value goes as a non-synchronizing literal (`{n+}`), which
/// the caller must only send to a store offering LITERAL+ (or LITERAL- for
/// values up to 4096 bytes).
pub fn set_command(mailbox: &[u8], entry: &str, value: Option<&[u8]>) -> Vec<u8> {
    let mut cmd = b"SETMETADATA ".to_vec();
    cmd.extend_from_slice(&quoted(mailbox));
    cmd.extend_from_slice(b" (");
    cmd.extend_from_slice(&quoted(entry.as_bytes()));
    match value {
        Some(v) => {
            cmd.extend_from_slice(format!(" {{{}+}}\r\n", v.len()).as_bytes());
            cmd.extend_from_slice(v);
        }
        None => cmd.extend_from_slice(b" NIL"),
    }
    cmd.push(b')');
    cmd
}

/// `GETMETADATA mailbox (entry)` without the tag.
pub fn get_command(mailbox: &[u8], entry: &str) -> Vec<u8> {
    let mut cmd = b"GETMETADATA ".to_vec();
    cmd.extend_from_slice(&quoted(mailbox));
    cmd.extend_from_slice(b" (");
    cmd.extend_from_slice(&quoted(entry.as_bytes()));
    cmd.push(b')');
    cmd
}

/// One entry of a `* METADATA` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The mailbox as on the wire (empty: the server's own entries).
    pub mailbox: Vec<u8>,
    /// The entry name, e.g. `/private/vendor/mailshift/uidmap`.
    pub name: String,
    /// Its value; `None` for NIL (no such entry).
    pub value: Option<Vec<u8>>,
}

/// The entries of one untagged response if it is `* METADATA mailbox (entry
/// value ...)`; `None` for anything else, including a malformed one.
pub fn parse(raw: &[u8]) -> Option<Vec<Entry>> {
    let mut p = Parser { b: raw, i: 0 };
    p.word(b"* ")?;
    p.word_ci(b"METADATA ")?;
    let mailbox = p.string()?;
    p.word(b" (")?;
    let mut out = Vec::new();
    loop {
        let name = String::from_utf8(p.string()?).ok()?;
        p.word(b" ")?;
        let value = p.nstring()?;
        out.push(Entry {
            mailbox: mailbox.clone(),
            name,
            value,
        });
        match p.peek()? {
            b')' => break,
            b' ' => p.i += 1,
            _ => return None,
        }
    }
    Some(out)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + w.len())? == w).then(|| self.i += w.len())
    }

    fn word_ci(&mut self, w: &[u8]) -> Option<()> {
        self.b
            .get(self.i..self.i + w.len())?
            .eq_ignore_ascii_case(w)
            .then(|| self.i += w.len())
    }

    /// NIL or a string.
    fn nstring(&mut self) -> Option<Option<Vec<u8>>> {
        if self.word_ci(b"NIL").is_some() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A quoted string, a literal (`{n}`, `{n+}`, `~{n}`) or an atom.
    fn string(&mut self) -> Option<Vec<u8>> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    let c = self.peek()?;
                    self.i += 1;
                    match c {
                        b'"' => return Some(out),
                        b'\\' => {
                            out.push(self.peek()?);
                            self.i += 1;
                        }
                        b'\r' | b'\n' => return None,
                        c => out.push(c),
                    }
                }
            }
            b'{' | b'~' => {
                if self.peek()? == b'~' {
                    self.i += 1;
                }
                self.word(b"{")?;
                let start = self.i;
                while self.peek()?.is_ascii_digit() {
                    self.i += 1;
                }
                let n: usize = std::str::from_utf8(&self.b[start..self.i])
                    .ok()?
                    .parse()
                    .ok()?;
                let _ = self.word(b"+");
                self.word(b"}\r\n")?;
                let end = self.i.checked_add(n)?;
                let v = self.b.get(self.i..end)?.to_vec();
                self.i = end;
                Some(v)
            }
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c <= b' ' || matches!(c, b'(' | b')' | b'{' | b'"') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then(|| self.b[start..self.i].to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_literal_atom_and_nil_values() {
        let e = parse(b"* METADATA \"INBOX\" (/private/vendor/x {5}\r\nab\"c) /private/y NIL)\r\n")
            .expect("parses");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mailbox, b"INBOX");
        assert_eq!(e[0].name, "/private/vendor/x");
        assert_eq!(e[0].value.as_deref(), Some(&b"ab\"c)"[..]));
        assert_eq!(e[1].value, None);
        let e = parse(b"* METADATA Sent (\"/private/z\" \"a \\\"q\\\"\")\r\n").expect("parses");
        assert_eq!(e[0].mailbox, b"Sent");
        assert_eq!(e[0].value.as_deref(), Some(&b"a \"q\""[..]));
    }

    #[test]
    fn anything_else_is_none_never_a_panic() {
        for raw in [
            &b"* OK hi\r\n"[..],
            b"* METADATA",
            b"* METADATA \"INBOX\" (/x {999}\r\nshort)",
            b"* METADATA \"INBOX\" (/x {18446744073709551615}\r\n)",
            b"* METADATA \"IN",
            b"* METADATA INBOX (/x \"v\"",
        ] {
            assert!(parse(raw).is_none(), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn set_sends_the_value_as_a_literal() {
        assert_eq!(
            set_command(b"A \"b\"", "/private/vendor/m", Some(b"v1 x")),
            b"SETMETADATA \"A \\\"b\\\"\" (\"/private/vendor/m\" {4+}\r\nv1 x)".to_vec()
        );
        assert!(set_command(b"A", "/p", None).ends_with(b" NIL)"));
    }
}
