//! The translating relay's sans-I/O core: for a user mailshift moved, the
//! client keeps seeing the old store's UIDVALIDITY, UIDs and MODSEQs while
//! it talks to the new store (DESIGN.md, "Client continuity").
//!
//! ```text
//!  client ──► Translator::from_client ──► commands: UID sets, UID search keys,
//!             (line scanner, literals        MODSEQ / CHANGEDSINCE / UNCHANGEDSINCE,
//!              counted and passed)           QRESYNC select parameters → store's
//!  client ◄── Translator::from_store  ◄── responses: FETCH UID/MODSEQ, SEARCH, SORT,
//!                                            THREAD, ESEARCH, VANISHED, STATUS,
//!                                            UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ,
//!                                            COPYUID/APPENDUID/MODIFIED, CAPABILITY
//! ```
//!
//! Only command and response *lines* are read (a small scanner, [`scan`]);
//! a literal's bytes are counted and passed on as they arrive, so a 10 MB
//! message body is never held. imap-codec is not used here: it parses whole
//! messages, literals included, which would hold every body in memory, and
//! it would re-encode lines the store must see byte for byte.
//!
//! Which folder a UID belongs to is tracked on both sides: commands use the
//! folder the client last selected; responses use the folder the store is
//! answering for (a SELECT in flight, else the one its tagged OK made
//! current). Folders without a map (created after cutover) pass unchanged.
//!
//! Never a wrong UID: a command with a UID-bearing part the core cannot read
//! (an unknown `UID` command, a malformed set, a UID search key after a search
//! key it does not know) is answered `BAD` here and never reaches the store;
//! if part of it already went to the store (after a literal), the rest is
//! replaced by unbalanced parentheses so the store answers `BAD` itself. A
//! store UID with no client UID is left out of what the client sees.

mod command;
mod maps;
mod response;
mod sample;
mod scan;
mod set;
#[cfg(test)]
mod tests;
mod transform;

use std::collections::VecDeque;
use std::sync::Arc;

pub use sample::{SampleFolder, SampleUser};
use scan::Literal;

/// One folder's translation between the client's (old store's) numbers and
/// the store's (new store's). The map is monotonic: a higher client UID is a
/// higher store UID.
pub trait FolderMapping: Send + Sync {
    /// The UIDVALIDITY the client knows (the old store's).
    fn client_uidvalidity(&self) -> u32;
    /// The new store's UIDVALIDITY the map was written for.
    fn store_uidvalidity(&self) -> u32;
    /// The store UID of a client UID, if that message exists in the map.
    fn to_store_uid(&self, client: u32) -> Option<u32>;
    /// The client UID of a store UID, if it has one.
    fn to_client_uid(&self, store: u32) -> Option<u32>;
    /// The store range holding exactly the messages whose client UIDs lie in
    /// `lo..=hi`; `None` if there are none.
    fn to_store_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)>;
    /// The client range holding exactly the client UIDs of store UIDs in `lo..=hi`.
    fn to_client_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)>;
    /// The UIDNEXT the client sees for the store's UIDNEXT.
    fn client_uidnext(&self, store_uidnext: u32) -> u32;
    /// The MODSEQ the client sees for a store MODSEQ (never below the old store's at cutover).
    fn to_client_modseq(&self, store: u64) -> u64;
    /// A client's CHANGEDSINCE (or SEARCH MODSEQ) value in the store's terms;
    /// errs towards reporting more changes, never fewer.
    fn changedsince_to_store(&self, client: u64) -> u64;
    /// A client's UNCHANGEDSINCE value in the store's terms; errs towards
    /// refusing the store (MODIFIED), never towards overwriting a change.
    fn unchangedsince_to_store(&self, client: u64) -> u64;
}

/// A user's maps, by folder name as the store lists it (`INBOX` in capitals).
pub trait UserMapping: Send + Sync {
    /// The folder's map, if the folder was migrated.
    fn folder(&self, name: &str) -> Option<&dyn FolderMapping>;
}

/// Why a translated session cannot go on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The store sent a response line longer than [`MAX_RESPONSE_LINE`].
    #[error("store response line longer than {MAX_RESPONSE_LINE} bytes")]
    ResponseTooLong,
}

/// Longest command line read whole (a UID set of a big folder fits); a
/// longer one is answered BAD.
pub const MAX_COMMAND_LINE: usize = 1 << 20;
/// Longest response line read whole (`* SEARCH` of a large folder).
pub const MAX_RESPONSE_LINE: usize = 64 << 20;
/// Longest mailbox name read from a literal.
const MAX_NAME: usize = 4096;

/// Capabilities the relay cannot translate, hidden from translated sessions:
/// they carry UIDs in forms not rewritten (OBJECTID's ids are per store,
/// UIDONLY's UIDFETCH, NOTIFY's and MULTISEARCH's other mailboxes, CONTEXT
/// and PARTIAL result updates, URLAUTH/CATENATE URLs, REPLACE) or make the
/// stream opaque (COMPRESS).
const HIDDEN: &[&str] = &[
    "OBJECTID",
    "UIDONLY",
    "NOTIFY",
    "MULTISEARCH",
    "PARTIAL",
    "CATENATE",
    "REPLACE",
];
const HIDDEN_PREFIXES: &[&str] = &["COMPRESS=", "CONTEXT=", "URLAUTH"];

/// Whether a capability is hidden from translated sessions.
pub fn hides(cap: &[u8]) -> bool {
    HIDDEN
        .iter()
        .any(|h| cap.eq_ignore_ascii_case(h.as_bytes()))
        || HIDDEN_PREFIXES
            .iter()
            .any(|p| cap.len() >= p.len() && cap[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// A capability list (space-separated) without the hidden ones.
pub fn filter_capabilities(caps: &str) -> String {
    caps.split(' ')
        .filter(|c| !c.is_empty() && !hides(c.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What is selected, as far as translation cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Sel {
    /// Nothing selected.
    #[default]
    None,
    /// A folder without a map: bytes pass.
    Plain,
    /// A folder with a map, by name.
    Mapped(Box<str>),
    /// A name too long to read: UID commands are refused.
    Unknown,
}

/// What a command in flight needs when its responses come back.
#[derive(Debug)]
enum Kind {
    Select(Sel),
    Deselect,
    /// SEARCH, SORT or THREAD; `uid` when results are UIDs.
    Search {
        uid: bool,
    },
    /// COPY or MOVE (COPYUID names the source and the destination).
    Copy {
        uid: bool,
        dest: Sel,
    },
    Append {
        dest: Sel,
    },
    /// STORE (MODIFIED names UIDs when `uid`).
    Store {
        uid: bool,
    },
    Other,
}

/// A command sent to the store and not yet answered.
#[derive(Debug)]
struct Pending {
    tag: Box<[u8]>,
    kind: Kind,
    /// What was selected when the command was sent.
    src: Sel,
}

/// What happens to a literal's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum LitMode {
    #[default]
    Pass,
    /// Passed on and also kept (a mailbox name).
    Capture,
    Drop,
}

/// One direction's framing: the line being collected, the literal being passed.
#[derive(Debug, Default)]
struct Framer {
    line: Vec<u8>,
    literal: u64,
    mode: LitMode,
    capture: Vec<u8>,
    capture_overflow: bool,
    /// An overlong line is being dropped to its end.
    skipping: bool,
}

impl Framer {
    fn at_boundary(&self) -> bool {
        self.line.is_empty() && self.literal == 0 && !self.skipping
    }
}

/// Which direction a framer serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// The translating core of one session: bytes in from either side, rewritten
/// bytes out. Keeps no buffer between lines beyond an unfinished line.
pub struct Translator {
    map: Arc<dyn UserMapping>,
    up: Framer,
    down: Framer,
    cmd: command::State,
    resp: response::State,
    cmd_selected: Sel,
    resp_selected: Sel,
    pending: VecDeque<Pending>,
    /// Our own tagged answers, written at the next response boundary.
    replies: Vec<u8>,
    /// The folder holding the maps on a store without METADATA, as on the
    /// wire: not listed, not selectable, not writable.
    hidden: Option<Box<[u8]>>,
}

impl std::fmt::Debug for Translator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator")
            .field("cmd_selected", &self.cmd_selected)
            .field("resp_selected", &self.resp_selected)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Translator {
    /// A translator for a session whose user has `map`.
    pub fn new(map: Arc<dyn UserMapping>) -> Translator {
        Translator {
            map,
            up: Framer::default(),
            down: Framer::default(),
            cmd: command::State::Start,
            resp: response::State::Start,
            cmd_selected: Sel::None,
            resp_selected: Sel::None,
            pending: VecDeque::new(),
            replies: Vec::new(),
            hidden: None,
        }
    }

    /// Client bytes in; what goes to the store is appended to `to_store`.
    /// Call [`take_replies`](Self::take_replies) afterwards: a refused command
    /// is answered to the client.
    pub fn from_client(&mut self, input: &[u8], to_store: &mut Vec<u8>) {
        let mut fr = std::mem::take(&mut self.up);
        // Commands cannot fail the session: a bad one is answered.
        let _ = self.run(&mut fr, input, to_store, Dir::Up);
        self.up = fr;
    }

    /// Store bytes in; what goes to the client is appended to `to_client`.
    pub fn from_store(&mut self, input: &[u8], to_client: &mut Vec<u8>) -> Result<(), Error> {
        let mut fr = std::mem::take(&mut self.down);
        let r = self.run(&mut fr, input, to_client, Dir::Down);
        self.down = fr;
        r
    }

    /// Our own answers to refused commands, if the client can be written to
    /// now (not in the middle of a store response).
    pub fn take_replies(&mut self, to_client: &mut Vec<u8>) {
        if !self.replies.is_empty()
            && self.down.at_boundary()
            && matches!(self.resp, response::State::Start)
        {
            to_client.append(&mut self.replies);
        }
    }

    /// Hides `name` (the store's folder of maps) from this session.
    pub fn hide_folder(&mut self, name: &[u8]) {
        self.hidden = Some(name.into());
    }

    /// Whether `name` is the hidden folder, at the top or under an `INBOX.`
    /// / `INBOX/` personal namespace prefix.
    fn is_hidden(&self, name: &[u8]) -> bool {
        let Some(h) = self.hidden.as_deref() else {
            return false;
        };
        name == h
            || (name.len() == h.len() + 6
                && name[..5].eq_ignore_ascii_case(b"INBOX")
                && matches!(name[5], b'.' | b'/')
                && &name[6..] == h)
    }

    /// Whether `len` bytes from the client (`up`) or the store lie inside a
    /// literal that passes unchanged and goes on after them (the middle of a
    /// message body); if so they count as passed, exactly as
    /// [`from_client`](Self::from_client) / [`from_store`](Self::from_store)
    /// would count them, and the caller sends them on itself without a copy.
    /// No line and no boundary can end inside them, so nothing else changes.
    pub fn pass_literal(&mut self, up: bool, len: usize) -> bool {
        let fr = if up { &mut self.up } else { &mut self.down };
        let len = len as u64;
        if fr.mode == LitMode::Pass && fr.literal > len {
            fr.literal -= len;
            true
        } else {
            false
        }
    }

    /// Whether a reply of ours waits for a response boundary.
    pub fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Bytes held by this session (buffers, commands in flight); for the
    /// memory figures.
    pub fn held_bytes(&self) -> usize {
        self.up.line.capacity()
            + self.down.line.capacity()
            + self.up.capture.capacity()
            + self.down.capture.capacity()
            + self.replies.capacity()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.pending.iter().map(|p| p.tag.len()).sum::<usize>()
    }

    fn run(
        &mut self,
        fr: &mut Framer,
        mut input: &[u8],
        out: &mut Vec<u8>,
        dir: Dir,
    ) -> Result<(), Error> {
        loop {
            if dir == Dir::Down {
                self.take_replies_at(fr, out);
            }
            if input.is_empty() {
                return Ok(());
            }
            if fr.literal > 0 {
                let n = usize::try_from(fr.literal)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                let (chunk, rest) = input.split_at(n);
                match fr.mode {
                    LitMode::Pass => out.extend_from_slice(chunk),
                    LitMode::Capture => {
                        out.extend_from_slice(chunk);
                        if fr.capture.len() + chunk.len() <= MAX_NAME {
                            fr.capture.extend_from_slice(chunk);
                        } else {
                            fr.capture_overflow = true;
                        }
                    }
                    LitMode::Drop => {}
                }
                fr.literal -= n as u64;
                input = rest;
                if fr.literal == 0 && fr.mode == LitMode::Capture {
                    self.captured(fr, dir);
                }
                continue;
            }
            let Some(p) = input.iter().position(|&b| b == b'\n') else {
                if !fr.skipping {
                    fr.line.extend_from_slice(input);
                    self.check_length(fr, dir, out)?;
                }
                return Ok(());
            };
            let (head, rest) = input.split_at(p + 1);
            input = rest;
            if fr.skipping {
                fr.skipping = false;
                fr.line = Vec::new();
                continue;
            }
            let owned;
            let frag: &[u8] = if fr.line.is_empty() {
                head
            } else {
                fr.line.extend_from_slice(head);
                owned = std::mem::take(&mut fr.line);
                &owned
            };
            if fr.line.capacity() > 0 && frag.len() > 4096 {
                fr.line = Vec::new();
            }
            let body_end = if frag.ends_with(b"\r\n") {
                frag.len() - 2
            } else {
                frag.len() - 1
            };
            let (body, eol) = frag.split_at(body_end);
            let lit = scan::literal(body);
            let mode = match dir {
                Dir::Up => self.command(body, lit, eol, out),
                Dir::Down => self.response(body, lit, eol, out),
            };
            // `None`: the literal announced will not come (refused before its continuation).
            if let (Some(l), Some(mode)) = (lit, mode) {
                fr.literal = l.len;
                fr.mode = mode;
                fr.capture.clear();
                fr.capture_overflow = false;
                if l.len == 0 && mode == LitMode::Capture {
                    self.captured(fr, dir);
                }
            }
        }
    }

    fn take_replies_at(&mut self, fr: &Framer, out: &mut Vec<u8>) {
        if !self.replies.is_empty()
            && fr.at_boundary()
            && matches!(self.resp, response::State::Start)
        {
            out.append(&mut self.replies);
        }
    }

    fn captured(&mut self, fr: &mut Framer, dir: Dir) {
        let name = if fr.capture_overflow {
            None
        } else {
            Some(std::mem::take(&mut fr.capture))
        };
        fr.capture = Vec::new();
        fr.capture_overflow = false;
        match dir {
            Dir::Up => self.command_name(name),
            Dir::Down => self.response_name(name),
        }
    }

    fn check_length(&mut self, fr: &mut Framer, dir: Dir, out: &mut Vec<u8>) -> Result<(), Error> {
        match dir {
            Dir::Down if fr.line.len() > MAX_RESPONSE_LINE => Err(Error::ResponseTooLong),
            Dir::Up if fr.line.len() > MAX_COMMAND_LINE => {
                let line = std::mem::take(&mut fr.line);
                fr.skipping = true;
                self.command_too_long(&line, out);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// What a mailbox name selects for translation.
    fn sel_for(&self, name: Option<&[u8]>) -> Sel {
        let Some(name) = name else {
            return Sel::Unknown;
        };
        if name.len() > MAX_NAME {
            return Sel::Unknown;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return Sel::Plain;
        };
        let name = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            name
        };
        match self.map.folder(name) {
            Some(_) => Sel::Mapped(name.into()),
            None => Sel::Plain,
        }
    }

    /// Queues our own tagged answer for the client.
    fn reply(&mut self, tag: &[u8], text: &str) {
        self.replies.extend_from_slice(tag);
        self.replies.push(b' ');
        self.replies.extend_from_slice(text.as_bytes());
        self.replies.extend_from_slice(b"\r\n");
    }
}

/// Replacements in one line: byte ranges and what goes there instead.
#[derive(Debug, Default)]
struct Edits(Vec<(usize, usize, String)>);

impl Edits {
    fn replace(&mut self, start: usize, end: usize, with: String) {
        self.0.push((start, end, with));
    }

    /// Writes `line` with the replacements (given in order) applied.
    fn apply(mut self, line: &[u8], out: &mut Vec<u8>) {
        self.0.sort_by_key(|e| e.0);
        let mut at = 0;
        for (start, end, with) in self.0 {
            if start < at {
                continue;
            }
            out.extend_from_slice(&line[at..start]);
            out.extend_from_slice(with.as_bytes());
            at = end;
        }
        out.extend_from_slice(&line[at..]);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The part of a line before its literal announcement.
fn before_literal(body: &[u8], lit: Option<Literal>) -> &[u8] {
    match lit {
        Some(l) => &body[..l.at],
        None => body,
    }
}

/// For the fuzz target and its corpus replay: runs a translator for a user
/// with mapped `INBOX`, `Archive` and a folder with a gap over `data`, split
/// at 0xFF bytes into segments that go alternately from the client and from
/// the store, each fed in pieces of `chunk` bytes (a piece inside a message
/// body passed by the caller, as the relay does). Returns what went to the
/// store and to the client (`None`: the session ended on a store error).
#[doc(hidden)]
pub fn exercise(data: &[u8], chunk: usize) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut archive = SampleFolder::odd(50);
    archive.client_uidvalidity = 4444;
    archive.store_uidvalidity = 3333;
    let gap = SampleFolder {
        pairs: vec![(1, 1), (3, 3), (7, 9)],
        client_uidnext: 10,
        store_uidnext: 12,
        ..SampleFolder::odd(1)
    };
    let user = SampleUser {
        folders: vec![
            ("INBOX".into(), SampleFolder::odd(100)),
            ("Archive".into(), archive),
            ("Gap".into(), gap),
        ],
    };
    let mut t = Translator::new(Arc::new(user));
    t.hide_folder(b"mailshift-uidmap");
    let (mut to_store, mut to_client) = (Vec::new(), Vec::new());
    for (i, segment) in data.split(|&b| b == 0xFF).enumerate() {
        for piece in segment.chunks(chunk.max(1)) {
            // As the relay does: a piece inside a body passes by the caller,
            // which must come out the same as through the translator.
            if t.pass_literal(i % 2 == 0, piece.len()) {
                let out = if i % 2 == 0 {
                    &mut to_store
                } else {
                    &mut to_client
                };
                out.extend_from_slice(piece);
            } else if i % 2 == 0 {
                t.from_client(piece, &mut to_store);
                t.take_replies(&mut to_client);
            } else if t.from_store(piece, &mut to_client).is_err() {
                return (to_store, None);
            }
        }
    }
    (to_store, Some(to_client))
}
