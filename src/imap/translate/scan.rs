//! A small IMAP line scanner: splits one line (without CRLF, without a
//! trailing literal announcement) into tokens by position, so a rewriter can
//! replace a few of them and copy the rest of the line as it came.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An atom, a number, NIL, a flag, a sequence set, or a fetch item with
    /// its `[section]<partial>` (brackets kept inside the atom).
    Atom,
    /// A quoted string, quotes included.
    Quoted,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `[` opening a response code.
    OpenBracket,
    /// `]` closing a response code.
    CloseBracket,
}

/// One token: its kind and its byte range in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's bytes.
    pub fn bytes<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        &line[self.start..self.end]
    }

    /// Whether the token is the atom `word` (ASCII case-insensitive).
    pub fn is(&self, line: &[u8], word: &str) -> bool {
        self.kind == Kind::Atom && self.bytes(line).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// A literal announced at the end of a line: `{N}`, `{N+}`, `~{N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Literal {
    /// Where the announcement starts in the line.
    pub at: usize,
    /// Its length in bytes.
    pub len: u64,
    /// `{N}`: the client waits for a continuation before sending it.
    pub sync: bool,
}

/// The literal announced at the end of `line` (CRLF already cut), if any.
pub(super) fn literal(line: &[u8]) -> Option<Literal> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let mut digits = &body[open + 1..];
    let mut sync = true;
    if let Some(d) = digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        digits = d;
        sync = false;
    }
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let at = if open > 0 && line[open - 1] == b'~' {
        open - 1
    } else {
        open
    };
    Some(Literal { at, len, sync })
}

/// Splits `line` into tokens; never fails (unbalanced quotes end at the line's end).
pub(super) fn tokens(line: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let start = i;
        let kind = match line[i] {
            b' ' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b'[' => {
                i += 1;
                Kind::OpenBracket
            }
            b']' => {
                i += 1;
                Kind::CloseBracket
            }
            b'"' => {
                i += 1;
                while i < line.len() {
                    match line[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                i = i.min(line.len());
                Kind::Quoted
            }
            _ => {
                i = atom_end(line, i);
                Kind::Atom
            }
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    out
}

/// The end of the atom starting at `i`: a `[` inside an atom (a fetch item's
/// section) runs to its matching `]`, spaces and parentheses included.
fn atom_end(line: &[u8], mut i: usize) -> usize {
    while i < line.len() {
        match line[i] {
            b' ' | b'(' | b')' | b'"' | b']' => break,
            b'[' => {
                let mut depth = 0usize;
                while i < line.len() {
                    match line[i] {
                        b'[' => depth += 1,
                        b']' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// The decoded value of a mailbox name token (atom or quoted string).
pub(super) fn astring(line: &[u8], t: &Token) -> Option<Vec<u8>> {
    match t.kind {
        Kind::Atom => Some(t.bytes(line).to_vec()),
        Kind::Quoted => {
            let inner = t.bytes(line);
            let inner = inner.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
            let mut out = Vec::with_capacity(inner.len());
            let mut it = inner.iter();
            while let Some(&b) = it.next() {
                if b == b'\\' {
                    out.push(*it.next()?);
                } else {
                    out.push(b);
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// A decimal number of at most `u64`.
pub(super) fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}
