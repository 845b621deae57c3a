//! IMAP on the wire, shared by both sides: the framer that splits a client's
//! bytes into whole commands (the front end's pre-auth core) and a store's
//! bytes into whole responses (the store client), lines plus their literals,
//! under line and literal limits, before anything is parsed.
//!
//! Framing first means a malformed or oversized command is discarded at a
//! message boundary, and literal bytes are never mistaken for a command. Unlike
//! imap-codec's `Fragmentizer`, this one hands back the bytes it has not framed
//! yet: a handoff forwards what the client pipelined after LOGIN, and STARTTLS
//! discards it.

/// Longest `ID` command accepted, lines and literals together, whatever the
/// line limit. RFC 2971 allows 30 field/value pairs, fields up to 30 octets
/// and values up to 1024; quoted with every octet escaped that is
/// 30 × (2 + 60 + 1 + 2 + 2048 + 1) = 63,420 octets, plus tag, `ID (`, `)` and
/// CRLF: under 64 KiB. Clients (Dovecot's ImapTest among them) do send that
/// much, and the store accepts it, so a transparent proxy must too. Only ID
/// gets it: every other command keeps the line limit.
pub const MAX_ID_COMMAND: usize = 64 * 1024;

/// Whether the command starting `bytes` is `ID`: a tag, a space, `ID` and a
/// space, in any case (RFC 2971's `"ID" SP id-params-list`).
fn is_id_command(bytes: &[u8]) -> bool {
    let Some(sp) = bytes.iter().position(|&b| b == b' ') else {
        return false;
    };
    tag_of(bytes).is_some()
        && bytes
            .get(sp + 1..sp + 4)
            .is_some_and(|id| id.eq_ignore_ascii_case(b"ID "))
}

/// What the next bytes are.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole command, CRLF (or LF) and literals included.
    Command(Vec<u8>),
    /// A synchronizing literal was announced: the client waits for `+`.
    NeedContinuation,
    /// A line grew past the limit without ending.
    LineTooLong,
    /// A literal announced larger than the limit. `sync` literals were not sent
    /// yet, so the command is dropped and the connection goes on; a non-sync
    /// literal is already on its way and cannot be skipped safely.
    LiteralTooLarge {
        /// The command's tag, if one could be read.
        tag: Option<String>,
        /// Whether the client waits for a continuation.
        sync: bool,
    },
    /// More bytes are needed.
    Incomplete,
}

/// Frames commands from a byte stream.
pub struct Framer {
    buf: Vec<u8>,
    max_line: usize,
    max_literal: usize,
    /// Framing a server's responses, not a client's commands: see
    /// [`Framer::for_responses`].
    responses: bool,
    /// Offset of the literal we already sent `+` for, so it is sent once.
    continued_at: Option<usize>,
}

/// Reads `{N}`, `{N+}` or `{N-}` at the end of a line (CRLF already removed).
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
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
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // A count too large for u64 is still a literal announcement (just larger
    // than any limit): read as a line end, the bytes after it would be framed
    // as commands or responses of their own.
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(u64::MAX);
    Some((n, sync))
}

/// Whether `line`, the first line of a response, is one that never holds a
/// literal: a tagged response (always a status, RFC 9051 `response-tagged`),
/// a continuation request, or an untagged `OK`/`NO`/`BAD`/`BYE`/`PREAUTH`.
/// Only untagged data (`* LIST`, `* 1 FETCH`, `* ID` ...) carries literals.
fn is_status_response(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"* ") else {
        return true;
    };
    let word = rest.split(|&b| b == b' ').next().unwrap_or(rest);
    [&b"OK"[..], b"NO", b"BAD", b"BYE", b"PREAUTH"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

/// The tag at the start of a command, if it looks like one.
pub fn tag_of(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let tag = &bytes[..end];
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+]".contains(&b));
    ok.then(|| String::from_utf8_lossy(tag).into_owned())
}

impl Framer {
    /// A framer with the given limits.
    pub fn new(max_line: usize, max_literal: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max_line,
            max_literal,
            responses: false,
            continued_at: None,
        }
    }

    /// A framer for a server's responses. A tagged response, an untagged
    /// status (`* NO ...`, `* BYE ...`) or a continuation request (`+ ...`)
    /// is one line whatever it ends with: its text carries no literals
    /// (RFC 9051 `resp-text`), so a text that happens to end in `{6}` must
    /// not swallow the next six bytes of the stream (found by the
    /// `migrate_reply` fuzz target: a tagged reply then held a CRLF).
    pub fn for_responses(max_line: usize, max_literal: usize) -> Framer {
        Framer {
            responses: true,
            ..Framer::new(max_line, max_literal)
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes every byte not framed yet.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.continued_at = None;
        std::mem::take(&mut self.buf)
    }

    /// Bytes buffered and not framed yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the command being framed outgrew its limit: `line_len` octets
    /// in its current line, `total` from the command's start (the buffer's).
    fn too_long(&self, line_len: usize, total: usize) -> bool {
        // Cheap test first: the ID check only runs once a line is past the
        // ordinary limit.
        line_len > self.max_line
            && !(is_id_command(&self.buf) && total <= MAX_ID_COMMAND.max(self.max_line))
    }

    /// Frames the next command.
    pub fn next_frame(&mut self) -> Frame {
        let mut at = 0; // start of the line being examined
        loop {
            let Some(nl) = self.buf[at..].iter().position(|&b| b == b'\n') else {
                if self.too_long(self.buf.len() - at, self.buf.len()) {
                    return Frame::LineTooLong;
                }
                return Frame::Incomplete;
            };
            let end = at + nl; // index of '\n'
            if self.too_long(end - at, end) {
                return Frame::LineTooLong;
            }
            let line = &self.buf[at..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let announced = if self.responses && at == 0 && is_status_response(line) {
                None
            } else {
                literal_announcement(line)
            };
            match announced {
                None => {
                    let command: Vec<u8> = self.buf.drain(..=end).collect();
                    self.continued_at = None;
                    return Frame::Command(command);
                }
                Some((n, sync)) => {
                    if n > self.max_literal as u64 {
                        let tag = tag_of(&self.buf);
                        if sync {
                            // The client sends nothing more of this command.
                            self.buf.drain(..=end);
                        }
                        self.continued_at = None;
                        return Frame::LiteralTooLarge { tag, sync };
                    }
                    let literal_end = end + 1 + n as usize;
                    if self.buf.len() < literal_end {
                        if sync && self.continued_at != Some(end) {
                            self.continued_at = Some(end);
                            return Frame::NeedContinuation;
                        }
                        return Frame::Incomplete;
                    }
                    at = literal_end;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer() -> Framer {
        Framer::new(100, 10)
    }

    #[test]
    fn frames_lines_and_keeps_the_rest() {
        let mut f = framer();
        f.push(b"a NOOP\r\nb LOGIN x y\r\nc SEL");
        assert_eq!(f.next_frame(), Frame::Command(b"a NOOP\r\n".to_vec()));
        assert_eq!(f.next_frame(), Frame::Command(b"b LOGIN x y\r\n".to_vec()));
        assert_eq!(f.next_frame(), Frame::Incomplete);
        assert_eq!(f.take_rest(), b"c SEL".to_vec());
    }

    #[test]
    fn sync_literal_asks_once_then_frames_whole_command() {
        let mut f = framer();
        f.push(b"a LOGIN {5}\r\n");
        assert_eq!(f.next_frame(), Frame::NeedContinuation);
        assert_eq!(f.next_frame(), Frame::Incomplete);
        f.push(b"alice {2}\r\n");
        assert_eq!(f.next_frame(), Frame::NeedContinuation);
        f.push(b"pw\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::Command(b"a LOGIN {5}\r\nalice {2}\r\npw\r\n".to_vec())
        );
    }

    #[test]
    fn literal_bytes_are_never_a_command() {
        let mut f = framer();
        f.push(b"a LOGIN {9+}\r\nb LOGOUT\n x\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::Command(b"a LOGIN {9+}\r\nb LOGOUT\n x\r\n".to_vec())
        );
    }

    #[test]
    fn oversized_literals_and_lines() {
        let mut f = framer();
        f.push(b"a LOGIN {11}\r\nb NOOP\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::LiteralTooLarge {
                tag: Some("a".into()),
                sync: true
            }
        );
        assert_eq!(f.next_frame(), Frame::Command(b"b NOOP\r\n".to_vec()));
        f.push(b"c LOGIN {99999999999999999999+}\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::LiteralTooLarge {
                tag: Some("c".into()),
                sync: false
            }
        );
        let mut f = framer();
        f.push(&[b'x'; 101]);
        assert_eq!(f.next_frame(), Frame::LineTooLong);
    }

    #[test]
    fn status_responses_end_at_their_line() {
        let mut f = Framer::for_responses(100, 10);
        f.push(b"M1 OK done {6}\r\n* 3 EXISTS\r\n* OK [ALERT] x {2}\r\n+ go {1}\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::Command(b"M1 OK done {6}\r\n".to_vec())
        );
        assert_eq!(f.next_frame(), Frame::Command(b"* 3 EXISTS\r\n".to_vec()));
        assert_eq!(
            f.next_frame(),
            Frame::Command(b"* OK [ALERT] x {2}\r\n".to_vec())
        );
        assert_eq!(f.next_frame(), Frame::Command(b"+ go {1}\r\n".to_vec()));
        // Data responses still carry literals.
        f.push(b"* LIST () \".\" {5}\r\nINBOX\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::Command(b"* LIST () \".\" {5}\r\nINBOX\r\n".to_vec())
        );
        // A client's command framer is unchanged.
        let mut f = framer();
        f.push(b"a OK {2+}\r\nxy\r\n");
        assert_eq!(
            f.next_frame(),
            Frame::Command(b"a OK {2+}\r\nxy\r\n".to_vec())
        );
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of(b"a001 LOGIN"), Some("a001".into()));
        assert_eq!(tag_of(b"* LOGIN"), None);
        assert_eq!(tag_of(b"noend"), None);
    }
}
