//! What an IMAP store sends, as typed responses: the sans-I/O core of the
//! store client. Bytes go in ([`Reader::push`]), whole responses come out
//! ([`Reader::next`]): framed with their literals first (literal bytes are
//! never taken for a response), then classified, and decoded by imap-codec
//! where the caller asks for data.

use imap_codec::decode::Decoder;
use imap_codec::imap_types::response::{Code, Data, Response as CodecResponse, StatusKind};
use imap_codec::ResponseCodec;

use crate::imap_wire::{Frame, Framer};

/// Why a store's bytes cannot be read as IMAP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line grew past the limit.
    #[error("response line longer than {0} bytes")]
    LineTooLong(usize),
    /// A literal announced larger than the limit.
    #[error("response literal larger than {0} bytes")]
    LiteralTooLarge(usize),
    /// Neither `*`, `+` nor a tag followed by OK/NO/BAD.
    #[error("unexpected response {0:?}")]
    Unexpected(String),
}

/// The outcome of a tagged command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// OK.
    Ok,
    /// NO.
    No,
    /// BAD.
    Bad,
}

/// A tagged completion: `TAG OK|NO|BAD [CODE] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// The tag.
    pub tag: String,
    /// OK, NO or BAD.
    pub status: Status,
    /// Everything after the tag, without CRLF: `OK [APPENDUID 1 5] Done.`
    pub text: String,
}

impl Tagged {
    /// The response code's atom, upper case (`UNAVAILABLE`, `APPENDUID`, ...).
    pub fn code_name(&self) -> Option<String> {
        code_name(&self.text)
    }

    /// Capabilities announced in a `[CAPABILITY ...]` code.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        capability_code(&self.text)
    }

    /// Whether trying again later may succeed (RFC 5530 codes a store uses
    /// for load or maintenance).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.code_name().as_deref(),
            Some("UNAVAILABLE" | "INUSE" | "LIMIT" | "SERVERBUG")
        )
    }

    /// `[APPENDUID validity uid-set]`, the set expanded in order (a
    /// MULTIAPPEND answers with one UID per message, RFC 4315).
    pub fn append_uids(&self) -> Option<(u32, Vec<u32>)> {
        let rest = self.text.split("[APPENDUID ").nth(1)?;
        let mut it = rest.split([' ', ']']);
        let validity = it.next()?.parse().ok()?;
        let mut uids = Vec::new();
        for part in it.next()?.split(',') {
            match part.split_once(':') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                    let (a, b) = (a.min(b), a.max(b));
                    // A store never answers one batch with millions of UIDs:
                    // refuse rather than allocate what a peer asks for.
                    if b - a > 1_000_000 || uids.len() + (b - a) as usize > 1_000_000 {
                        return None;
                    }
                    uids.extend(a..=b);
                }
                None => uids.push(part.parse().ok()?),
            }
        }
        Some((validity, uids))
    }
}

/// An untagged response (`* ...`), whole, literals included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untagged {
    /// The raw bytes.
    pub raw: Vec<u8>,
}

impl Untagged {
    /// The data it carries, if imap-codec can decode it (stores send
    /// informational responses we have no use for: those are `None`).
    pub fn data(&self) -> Option<Data<'_>> {
        match ResponseCodec::default().decode(&self.raw) {
            Ok((_, CodecResponse::Data(d))) => Some(d),
            _ => None,
        }
    }

    /// The code of an untagged status (`* OK [UIDVALIDITY 5] ...`).
    pub fn code(&self) -> Option<Code<'_>> {
        match ResponseCodec::default().decode(&self.raw) {
            Ok((
                _,
                CodecResponse::Status(imap_codec::imap_types::response::Status::Untagged(body)),
            )) => body.code,
            _ => None,
        }
    }

    /// `* BYE`: the store is closing the connection.
    pub fn is_bye(&self) -> bool {
        self.raw.len() >= 5 && self.raw[..5].eq_ignore_ascii_case(b"* BYE")
    }

    /// `* OK` (a greeting or an informational status).
    pub fn is_ok(&self) -> bool {
        self.raw.len() >= 4 && self.raw[..4].eq_ignore_ascii_case(b"* OK")
    }

    /// `* PREAUTH`.
    pub fn is_preauth(&self) -> bool {
        self.raw.len() >= 9 && self.raw[..9].eq_ignore_ascii_case(b"* PREAUTH")
    }

    /// Capabilities of a `* CAPABILITY` response or a `[CAPABILITY]` code.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        let text = self.text();
        let upper = text.get(..13).map(str::to_ascii_uppercase);
        if upper.as_deref() == Some("* CAPABILITY ") {
            return Some(words(&text[13..]));
        }
        capability_code(&text)
    }

    /// The response as text, without CRLF (for messages and line checks).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }
}

/// One whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `* ...`
    Untagged(Untagged),
    /// `+ ...`: the store waits for more of the command.
    Continue(Vec<u8>),
    /// `TAG OK|NO|BAD ...`
    Tagged(Tagged),
}

/// Frames and classifies a store's bytes.
pub struct Reader {
    framer: Framer,
    max_line: usize,
    max_literal: usize,
}

impl Reader {
    /// A reader with limits on a line and on a literal.
    pub fn new(max_line: usize, max_literal: usize) -> Reader {
        Reader {
            framer: Framer::for_responses(max_line, max_literal),
            max_line,
            max_literal,
        }
    }

    /// Adds bytes read from the store.
    pub fn push(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    /// Bytes read but not yet returned as a response (handed on to a relay
    /// when the proxy stops reading responses itself).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.framer.take_rest()
    }

    /// The next whole response, `Ok(None)` when more bytes are needed.
    pub fn next_response(&mut self) -> Result<Option<Response>, ProtocolError> {
        let raw = match self.framer.next_frame() {
            Frame::Command(raw) => raw,
            // A store's literals are never synchronizing: wait for the bytes.
            Frame::Incomplete | Frame::NeedContinuation => return Ok(None),
            Frame::LineTooLong => return Err(ProtocolError::LineTooLong(self.max_line)),
            Frame::LiteralTooLarge { .. } => {
                return Err(ProtocolError::LiteralTooLarge(self.max_literal))
            }
        };
        classify(raw).map(Some)
    }
}

/// Sorts one framed response into untagged, continuation or tagged.
pub fn classify(raw: Vec<u8>) -> Result<Response, ProtocolError> {
    match raw.first() {
        Some(b'*') => return Ok(Response::Untagged(Untagged { raw })),
        Some(b'+') => return Ok(Response::Continue(raw)),
        _ => {}
    }
    let line = String::from_utf8_lossy(&raw);
    let line = line.trim_end_matches(['\r', '\n']);
    let unexpected = || ProtocolError::Unexpected(line.chars().take(200).collect());
    let (tag, text) = line.split_once(' ').ok_or_else(unexpected)?;
    if crate::imap_wire::tag_of(tag.as_bytes()).is_none()
        && !(tag.len() <= 64 && tag.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(unexpected());
    }
    let word = text.split(' ').next().unwrap_or("");
    let status = match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        _ => return Err(unexpected()),
    };
    Ok(Response::Tagged(Tagged {
        tag: tag.to_string(),
        status,
        text: text.to_string(),
    }))
}

/// The atom of a `[CODE ...]` right after the status word.
fn code_name(text: &str) -> Option<String> {
    let rest = text.split_once(' ')?.1.trim_start();
    let inner = rest.strip_prefix('[')?;
    let end = inner.find([' ', ']'])?;
    Some(inner[..end].to_ascii_uppercase())
}

fn capability_code(text: &str) -> Option<Vec<String>> {
    let upper = text.to_ascii_uppercase();
    let start = upper.find("[CAPABILITY ")? + "[CAPABILITY ".len();
    let end = text[start..].find(']')? + start;
    Some(words(&text[start..end]))
}

fn words(text: &str) -> Vec<String> {
    text.split_ascii_whitespace().map(str::to_string).collect()
}

/// Whether `status` is a tagged OK as imap-codec reads it (for callers that
/// want the typed code).
pub fn decode_status(raw: &[u8]) -> Option<(StatusKind, Option<Code<'_>>)> {
    match ResponseCodec::default().decode(raw) {
        Ok((_, CodecResponse::Status(imap_codec::imap_types::response::Status::Tagged(t)))) => {
            Some((t.body.kind, t.body.code))
        }
        _ => None,
    }
}

/// Upper-cases capability atoms for lookups.
pub fn capability_set(caps: &[String]) -> std::collections::HashSet<String> {
    caps.iter().map(|c| c.to_ascii_uppercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Response> {
        let mut r = Reader::new(1024, 1 << 20);
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(resp) = r.next_response().expect("valid") {
            out.push(resp);
        }
        out
    }

    #[test]
    fn greeting_untagged_literals_and_tagged() {
        let got = all(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n* 1 FETCH (BODY[] {7}\r\nA1 OK\r\n)\r\n+ go\r\nA1 OK [APPENDUID 7 3:5] done\r\n");
        assert_eq!(got.len(), 4);
        let Response::Untagged(u) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(
            u.capabilities(),
            Some(vec!["IMAP4rev1".to_string(), "IDLE".to_string()])
        );
        // The literal's "A1 OK" is message bytes, not a completion.
        assert!(matches!(&got[1], Response::Untagged(u) if u.data().is_some()));
        assert!(matches!(&got[2], Response::Continue(_)));
        let Response::Tagged(t) = &got[3] else {
            panic!("{got:?}")
        };
        assert_eq!(t.tag, "A1");
        assert_eq!(t.status, Status::Ok);
        assert_eq!(t.append_uids(), Some((7, vec![3, 4, 5])));
        assert_eq!(t.code_name().as_deref(), Some("APPENDUID"));
    }

    #[test]
    fn temporary_codes_and_refusals() {
        let Response::Tagged(t) =
            classify(b"S4 NO [UNAVAILABLE] try later\r\n".to_vec()).expect("ok")
        else {
            panic!()
        };
        assert!(t.is_temporary());
        assert_eq!(t.status, Status::No);
        let Response::Tagged(t) =
            classify(b"S4 NO [AUTHENTICATIONFAILED] nope\r\n".to_vec()).expect("ok")
        else {
            panic!()
        };
        assert!(!t.is_temporary());
        assert!(classify(b"garbage\r\n".to_vec()).is_err());
        assert!(classify(b"S4 MAYBE\r\n".to_vec()).is_err());
    }

    #[test]
    fn limits() {
        let mut r = Reader::new(64, 8);
        r.push(b"* 1 FETCH (BODY[] {9}\r\n");
        assert_eq!(r.next_response(), Err(ProtocolError::LiteralTooLarge(8)));
        let mut r = Reader::new(16, 8);
        r.push(&[b'x'; 40]);
        assert_eq!(r.next_response(), Err(ProtocolError::LineTooLong(16)));
    }

    #[test]
    fn append_uid_sets_are_bounded() {
        let t = Tagged {
            tag: "A".into(),
            status: Status::Ok,
            text: "OK [APPENDUID 1 1:4000000000] x".into(),
        };
        assert_eq!(t.append_uids(), None);
    }
}
