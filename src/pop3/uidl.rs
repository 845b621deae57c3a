//! UIDLs kept across the move, sans I/O: for a migrated user the relay
//! answers `UIDL` with the UIDLs the old store gave each migrated message,
//! and gives new mail the new store's own UIDL, rewritten if it equals an
//! old UIDL of another message (a client would take the new message for one
//! it already has and never download it).
//!
//! The relay tracks the client's commands to know which store reply answers
//! which command and whether it is multi-line (RFC 1939: LIST, UIDL without
//! argument, RETR, TOP, and CAPA, when `+OK`), so that it rewrites UIDL
//! replies only; every other byte passes unchanged and message bodies stream
//! through without being held.
//!
//! ```text
//!  client ─► commands ─► expected replies (queue) ─┐
//!  store  ─► Status line ─► [Body until ".\r\n"] ─►│─► client (UIDL lines rewritten)
//! ```
//!
//! Message order needs no help: the engine appends in source UID order, so
//! the new store numbers migrated messages as the old one did.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::config::UidlFormat;
use crate::continuity::map::FolderMap;

/// New store UIDL → the old store's UIDL, for one user's INBOX.
#[derive(Debug, Default, Clone)]
pub struct UidlMap {
    by_new: HashMap<String, String>,
    old: HashSet<String>,
}

impl UidlMap {
    /// From `(new store's UIDL, old store's UIDL)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> UidlMap {
        let by_new: HashMap<String, String> = pairs.into_iter().collect();
        let old = by_new.values().cloned().collect();
        UidlMap { by_new, old }
    }

    /// From INBOX's UID map: each migrated message's new-store UIDL (the new
    /// store's `pop3_uidl_format` over its UID and UIDVALIDITY) → the UIDL the
    /// old store gave it (an explicit one read from the old store's POP3 if
    /// the map carries it, else the old `pop3_uidl_format` over the old UID
    /// and UIDVALIDITY).
    pub fn from_folder_map(
        map: &FolderMap,
        old_format: &UidlFormat,
        new_format: &UidlFormat,
    ) -> UidlMap {
        let explicit: HashMap<u32, &str> =
            map.uidls.iter().map(|(u, s)| (*u, s.as_str())).collect();
        UidlMap::new(map.pairs().map(|(old, new)| {
            let old_uidl = match explicit.get(&old) {
                Some(s) => s.to_string(),
                None => old_format.uidl(old, map.old_uidvalidity),
            };
            (new_format.uidl(new, map.new_uidvalidity), old_uidl)
        }))
    }

    /// How many messages keep an old UIDL.
    pub fn len(&self) -> usize {
        self.by_new.len()
    }

    /// Whether no message keeps an old UIDL.
    pub fn is_empty(&self) -> bool {
        self.by_new.is_empty()
    }

    /// What the client sees for the new store's `uidl`.
    pub fn translate(&self, uidl: &str) -> String {
        if let Some(old) = self.by_new.get(uidl) {
            return old.clone();
        }
        // New mail: its own UIDL, unless that is an old UIDL of another
        // message. The prefix is deterministic, so the client sees the same
        // UIDL in every session.
        let mut out = uidl.to_string();
        while self.old.contains(&out) {
            out.insert(0, 'n');
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// One status line.
    Single,
    /// A status line, then, after `+OK`, lines up to `.`.
    Multi,
    /// `UIDL n`: one status line carrying a UIDL.
    UidlOne,
    /// `UIDL`: a multi-line list of `n uidl`.
    UidlAll,
}

fn expect_of(line: &[u8]) -> Expect {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let verb = words.next().unwrap_or_default().to_ascii_uppercase();
    let has_arg = words.next().is_some();
    match (verb.as_slice(), has_arg) {
        (b"UIDL", false) => Expect::UidlAll,
        (b"UIDL", true) => Expect::UidlOne,
        (b"LIST", false) | (b"RETR", _) | (b"TOP", _) | (b"CAPA", _) => Expect::Multi,
        _ => Expect::Single,
    }
}

/// Where in a multi-line body the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    LineStart,
    Dot,
    DotCr,
    Mid,
}

#[derive(Debug)]
enum Reply {
    /// Reading a status line (bytes gathered in `line`).
    Status(Expect),
    /// Passing a multi-line body through.
    Body(Body),
    /// Reading UIDL list lines (gathered in `line`).
    Uidls,
}

/// Longest line the rewriter gathers (status lines and UIDL lines are short;
/// RFC 2449: 512 octets). A longer one is passed on as it is.
const MAX_GATHER: usize = 1024;

/// The rewriting relay's state for one session.
pub struct Rewriter {
    map: UidlMap,
    pending: VecDeque<Expect>,
    /// The client's command line so far (only its start is kept).
    command: Vec<u8>,
    command_len: usize,
    reply: Option<Reply>,
    line: Vec<u8>,
}

impl Rewriter {
    /// A session for a user with `map`.
    pub fn new(map: UidlMap) -> Rewriter {
        Rewriter {
            map,
            pending: VecDeque::new(),
            command: Vec::new(),
            command_len: 0,
            reply: None,
            line: Vec::new(),
        }
    }

    /// Bytes the client sent to the store (forwarded unchanged by the caller).
    pub fn from_client(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.pending.push_back(expect_of(&self.command));
                self.command.clear();
                self.command_len = 0;
            } else {
                self.command_len += 1;
                // The verb and whether there is an argument decide; the rest
                // (a password in a later AUTH, say) is not kept.
                if self.command.len() < 16 {
                    self.command.push(b);
                }
            }
        }
    }

    /// Bytes the store sent; what the client gets is appended to `out`.
    pub fn from_store(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while !bytes.is_empty() {
            let reply = match self.reply.take() {
                Some(r) => r,
                None => Reply::Status(self.pending.pop_front().unwrap_or(Expect::Single)),
            };
            match reply {
                Reply::Status(expect) => {
                    if self.gather(&mut bytes).is_none() {
                        self.reply = Some(Reply::Status(expect));
                        if self.line.len() > MAX_GATHER {
                            out.append(&mut self.line);
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let ok = line.starts_with(b"+OK");
                    if ok && expect == Expect::UidlOne {
                        out.extend_from_slice(&self.rewrite_status(&line));
                    } else {
                        out.extend_from_slice(&line);
                    }
                    self.reply = match (ok, expect) {
                        (true, Expect::Multi) => Some(Reply::Body(Body::LineStart)),
                        (true, Expect::UidlAll) => Some(Reply::Uidls),
                        _ => None,
                    };
                }
                Reply::Uidls => {
                    if self.gather(&mut bytes).is_none() {
                        self.reply = Some(Reply::Uidls);
                        if self.line.len() > MAX_GATHER {
                            out.append(&mut self.line);
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    if line == b".\r\n" || line == b".\n" {
                        out.extend_from_slice(&line);
                        self.reply = None;
                    } else {
                        out.extend_from_slice(&self.rewrite_listing(&line));
                        self.reply = Some(Reply::Uidls);
                    }
                }
                Reply::Body(mut at) => {
                    let mut i = 0;
                    let mut done = false;
                    while i < bytes.len() {
                        let b = bytes[i];
                        i += 1;
                        at = match (at, b) {
                            (Body::Mid, _) => match bytes[i - 1..].iter().position(|&c| c == b'\n')
                            {
                                Some(p) => {
                                    i += p;
                                    Body::LineStart
                                }
                                None => {
                                    i = bytes.len();
                                    Body::Mid
                                }
                            },
                            (Body::LineStart, b'.') => Body::Dot,
                            (Body::LineStart, b'\n') => Body::LineStart,
                            (Body::Dot, b'\r') => Body::DotCr,
                            (Body::Dot | Body::DotCr, b'\n') => {
                                done = true;
                                break;
                            }
                            _ => Body::Mid,
                        };
                    }
                    out.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i..];
                    self.reply = if done { None } else { Some(Reply::Body(at)) };
                }
            }
        }
    }

    /// Moves bytes up to and including the next LF into `line`; `Some` when
    /// a whole line is there.
    fn gather(&mut self, bytes: &mut &[u8]) -> Option<()> {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(p) => {
                self.line.extend_from_slice(&bytes[..=p]);
                *bytes = &bytes[p + 1..];
                Some(())
            }
            None => {
                self.line.extend_from_slice(bytes);
                *bytes = &[];
                None
            }
        }
    }

    /// `+OK n uidl` → with the client's UIDL.
    fn rewrite_status(&self, line: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(line);
        let body = text.trim_end_matches(['\r', '\n']);
        let mut parts = body.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("+OK"), Some(n), Some(uidl)) if n.parse::<u32>().is_ok() => {
                format!("+OK {n} {}\r\n", self.map.translate(uidl.trim())).into_bytes()
            }
            _ => line.to_vec(),
        }
    }

    /// `n uidl` → with the client's UIDL.
    fn rewrite_listing(&self, line: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(line);
        let body = text.trim_end_matches(['\r', '\n']);
        match body.split_once(' ') {
            Some((n, uidl)) if n.parse::<u32>().is_ok() => {
                format!("{n} {}\r\n", self.map.translate(uidl.trim())).into_bytes()
            }
            _ => line.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> UidlMap {
        UidlMap::new([
            ("new1".to_string(), "old1".to_string()),
            ("new2".to_string(), "old2".to_string()),
        ])
    }

    fn through(r: &mut Rewriter, client: &[u8], store: &[u8]) -> String {
        r.from_client(client);
        let mut out = Vec::new();
        // Byte by byte: framing must not depend on how bytes arrive.
        for b in store {
            r.from_store(std::slice::from_ref(b), &mut out);
        }
        String::from_utf8(out).expect("test input")
    }

    #[test]
    fn uidl_lists_show_old_uidls_and_new_mail_its_own() {
        let mut r = Rewriter::new(map());
        let out = through(
            &mut r,
            b"UIDL\r\n",
            b"+OK\r\n1 new1\r\n2 new2\r\n3 new3\r\n.\r\n",
        );
        assert_eq!(out, "+OK\r\n1 old1\r\n2 old2\r\n3 new3\r\n.\r\n");
        let out = through(&mut r, b"UIDL 2\r\n", b"+OK 2 new2\r\n");
        assert_eq!(out, "+OK 2 old2\r\n");
    }

    #[test]
    fn from_a_folder_map_with_formats_and_explicit_uidls() {
        let snap = |uidvalidity, uidnext| crate::continuity::map::Snapshot {
            uidvalidity,
            uidnext,
            highestmodseq: 0,
        };
        let mut fm =
            FolderMap::new(snap(0x10, 10), snap(0x20, 5), [(3, 1), (7, 2)]).expect("test input");
        fm.uidls.push((7, "from-pop3".into()));
        let f = UidlFormat::default();
        let m = UidlMap::from_folder_map(&fm, &f, &f);
        assert_eq!(m.len(), 2);
        assert_eq!(m.translate("0000000100000020"), "0000000300000010");
        assert_eq!(m.translate("0000000200000020"), "from-pop3");
        // New mail (UID 5 on the store) keeps its own.
        assert_eq!(m.translate("0000000500000020"), "0000000500000020");
    }

    #[test]
    fn a_new_uidl_equal_to_an_old_one_is_rewritten() {
        // New mail got "old1", which an old message had: the client must not
        // take it for that message.
        let m = UidlMap::new([
            ("a".to_string(), "old1".to_string()),
            ("b".to_string(), "nold1".to_string()),
        ]);
        assert_eq!(m.translate("old1"), "nnold1");
        assert_eq!(m.translate("a"), "old1");
        assert_eq!(m.translate("zzz"), "zzz");
    }

    #[test]
    fn bodies_pass_untouched_even_when_they_look_like_uidl_lines() {
        let mut r = Rewriter::new(map());
        let body = b"+OK 30 octets\r\n1 new1\r\n..dot\r\n.\r\n";
        let out = through(
            &mut r,
            b"RETR 1\r\nUIDL 1\r\n",
            &[&body[..], b"+OK 1 new1\r\n"].concat(),
        );
        assert_eq!(
            out,
            "+OK 30 octets\r\n1 new1\r\n..dot\r\n.\r\n+OK 1 old1\r\n"
        );
    }

    #[test]
    fn errors_end_a_multi_line_command() {
        let mut r = Rewriter::new(map());
        let out = through(
            &mut r,
            b"RETR 9\r\nUIDL\r\n",
            b"-ERR no such message\r\n+OK\r\n1 new1\r\n.\r\n",
        );
        assert_eq!(out, "-ERR no such message\r\n+OK\r\n1 old1\r\n.\r\n");
    }

    #[test]
    fn stat_list_and_top_pass_through() {
        let mut r = Rewriter::new(map());
        let store = b"+OK 2 320\r\n+OK\r\n1 120\r\n2 200\r\n.\r\n+OK\r\nSubject: x\r\n\r\n.\r\n";
        let out = through(&mut r, b"STAT\r\nLIST\r\nTOP 1 0\r\n", store);
        assert_eq!(out.as_bytes(), store);
    }
}
