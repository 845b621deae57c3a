//! SMTP/LMTP replies (RFC 5321 4.2, enhanced codes RFC 3463), sans I/O: bytes
//! in, whole typed replies out. The delivery legs, the retry queue and the
//! submission leg all read through [`take_reply`]; so does the `smtp_reply`
//! fuzz target.

use super::super::Error;

/// A reply line longer than this, or a reply of more lines, ends the connection.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Most lines in one reply (an EHLO reply has a dozen).
pub const MAX_REPLY_LINES: usize = 100;

/// One SMTP/LMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, 200 to 599.
    pub code: u16,
    /// The enhanced status code of the first line (`5.7.8`), when it has one.
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text of each line, without the code (and with the enhanced code).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply of our own.
    pub fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            enhanced: enhanced(text),
            lines: vec![text.to_string()],
        }
    }

    /// 2xx: done.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: go on (354 after DATA, 334 in AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as the client should read it (lines joined with CRLF, no
    /// trailing CRLF).
    pub fn to_client(&self) -> String {
        let n = self.lines.len().max(1);
        let mut out = String::new();
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                out.push_str("\r\n");
            }
            out.push_str(&format!("{:03}{sep}{text}", self.code));
        }
        out
    }

    /// All lines in one, for logs.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// The enhanced status code at the start of a reply's text (`class.subject.detail`,
/// class 2, 4 or 5).
fn enhanced(text: &str) -> Option<(u8, u16, u16)> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some((class, subject, detail))
}

/// Takes one whole (possibly multi-line) reply off the front of `buf`; `None`
/// when its last line has not arrived yet (nothing is taken then). A
/// malformed line (no three-digit code from 200 to 599, codes that change
/// within a reply, more than [`MAX_REPLY_LINES`] lines) or a line past
/// [`MAX_REPLY_BYTES`] is an error at once.
pub fn take_reply(buf: &mut Vec<u8>, stage: &'static str) -> Result<Option<Reply>, Error> {
    let mut lines = Vec::new();
    let mut code = 0u16;
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
            if buf.len() - at > MAX_REPLY_BYTES {
                return Err(Error::Protocol {
                    stage,
                    what: "reply too long".into(),
                });
            }
            return Ok(None);
        };
        let raw = &buf[at..at + nl + 1];
        at += nl + 1;
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\r', '\n']);
        let bad = || Error::Protocol {
            stage,
            what: format!(
                "malformed reply {:?}",
                text.chars().take(80).collect::<String>()
            ),
        };
        if text.len() < 3 || !text.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let this: u16 = text[..3].parse().map_err(|_| bad())?;
        // RFC 5321 4.2: a reply code starts with 2 to 5. "024" would reach the
        // client as "24 ..." (found by the smtp_reply fuzz target).
        if !(200..600).contains(&this) {
            return Err(bad());
        }
        if code != 0 && this != code {
            return Err(bad());
        }
        code = this;
        let sep = text.as_bytes().get(3).copied();
        lines.push(text.get(4..).unwrap_or("").to_string());
        if lines.len() > MAX_REPLY_LINES {
            return Err(bad());
        }
        if sep != Some(b'-') {
            buf.drain(..at);
            let enhanced = lines.first().and_then(|l| enhanced(l));
            return Ok(Some(Reply {
                code,
                enhanced,
                lines,
            }));
        }
    }
}

/// What a store's EHLO/LHLO reply offers: one keyword per line after the
/// first, with its parameters (RFC 5321 4.1.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    keywords: Vec<(String, Vec<String>)>,
}

impl Extensions {
    /// From the EHLO/LHLO reply (its first line is the greeting).
    pub fn parse(reply: &Reply) -> Extensions {
        let keywords = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|l| {
                let mut words = l.split_ascii_whitespace();
                let keyword = words.next()?.to_ascii_uppercase();
                Some((keyword, words.map(str::to_string).collect()))
            })
            .collect();
        Extensions { keywords }
    }

    /// Whether the store offers `ext`.
    pub fn offers(&self, ext: &str) -> bool {
        self.keywords
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(ext))
    }

    /// The parameters of `ext` (empty when not offered).
    pub fn params(&self, ext: &str) -> &[String] {
        self.keywords
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(ext))
            .map(|(_, p)| p.as_slice())
            .unwrap_or(&[])
    }

    /// Whether `ext` lists `param` (case-insensitive), e.g. AUTH PLAIN.
    pub fn offers_param(&self, ext: &str, param: &str) -> bool {
        self.params(ext)
            .iter()
            .any(|p| p.eq_ignore_ascii_case(param))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Reply {
        let mut buf = bytes.to_vec();
        take_reply(&mut buf, "test")
            .expect("well-formed")
            .expect("whole")
    }

    #[test]
    fn multi_line_replies_render_for_the_client() {
        let r = one(b"552-5.2.2 Over quota\r\n552 5.2.2 really\r\n");
        assert_eq!(r.to_client(), "552-5.2.2 Over quota\r\n552 5.2.2 really");
        assert_eq!(r.enhanced, Some((5, 2, 2)));
        assert!(r.is_permanent() && !r.is_positive() && !r.is_transient());
    }

    #[test]
    fn classes_come_from_the_code_not_the_text() {
        assert!(one(b"250 2.0.0 Ok\r\n").is_positive());
        assert!(one(b"354 go ahead\r\n").is_intermediate());
        let r = one(b"454 4.7.0 Temporary authentication failure\r\n");
        assert!(r.is_transient());
        assert_eq!(r.enhanced, Some((4, 7, 0)));
        assert_eq!(one(b"220 mx ESMTP 2.0 ready\r\n").enhanced, None);
        assert_eq!(one(b"250 1.2.3 not a class\r\n").enhanced, None);
    }

    #[test]
    fn partial_replies_wait_and_bad_ones_fail() {
        let mut buf = b"250-first\r\n250 se".to_vec();
        assert_eq!(take_reply(&mut buf, "t").expect("fine so far"), None);
        assert_eq!(buf.len(), 17, "nothing taken");
        let mut bad = b"250-a\r\n251 b\r\n".to_vec();
        assert!(take_reply(&mut bad, "t").is_err());
        let mut bad = b"hello\r\n".to_vec();
        assert!(take_reply(&mut bad, "t").is_err());
    }

    #[test]
    fn ehlo_keywords_and_parameters() {
        let r = one(
            b"250-mx.example.org\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250-XCLIENT ADDR PORT LOGIN\r\n250 STARTTLS\r\n",
        );
        let e = Extensions::parse(&r);
        assert!(e.offers("starttls") && e.offers("PIPELINING"));
        assert!(e.offers_param("AUTH", "plain"));
        assert!(e.offers_param("XCLIENT", "LOGIN"));
        assert!(
            !e.offers("mx.example.org"),
            "the greeting line is no keyword"
        );
        assert!(!e.offers("SIZE") && e.params("SIZE").is_empty());
    }
}
