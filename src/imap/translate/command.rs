//! Client → store: finds the UID-bearing parts of a command and rewrites
//! them into the store's numbers; records what the responses will need.

use std::sync::Arc;

use super::scan::{self, Kind as T, Literal, Token};
use super::set;
use super::{
    before_literal, Edits, FolderMapping, Kind, LitMode, Pending, Sel, Translator, UserMapping,
};

/// Where a command stands across its line fragments (split by literals).
#[derive(Debug)]
pub(super) enum State {
    /// The next line starts a command.
    Start,
    /// The rest of the command passes unchanged.
    Pass,
    /// The rest of the command is dropped (it was answered here).
    Discard,
    /// Search keys go on after a literal.
    Search(Expect),
    /// A mailbox name arrives as a literal.
    Name(NameFor),
    /// A SELECT's parameters follow its literal name.
    SelectParams(Sel),
    /// The literal just read named the hidden folder: end the command with
    /// a syntax error.
    PoisonNext,
}

/// Which command waits for its mailbox name.
#[derive(Debug, Clone, Copy)]
pub(super) enum NameFor {
    Select,
    Copy,
    Append,
}

/// What the search key reader expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// A search key (or a parenthesis).
    Key,
    /// Values to skip (arguments of a key, a RETURN list, SORT criteria);
    /// `depth` counts open parentheses inside the value being skipped.
    Skip {
        values: u8,
        depth: u32,
    },
    /// SORT: an optional RETURN, then criteria and charset.
    SortStart,
    /// The set after `UID`.
    UidSet,
    /// After `MODSEQ`: a number, or an entry name and type first.
    ModseqStart,
    ModseqType,
    ModseqValue,
    /// After a key not known: nothing UID-bearing may follow.
    Unknown,
}

/// A command part we could not read safely.
struct Refuse;

/// How many `)` end a poisoned command: more than any real nesting.
const POISON: usize = 64;

fn folder_of<'a>(map: &'a Arc<dyn UserMapping>, sel: &Sel) -> Option<&'a dyn FolderMapping> {
    match sel {
        Sel::Mapped(name) => map.folder(name),
        _ => None,
    }
}

impl Translator {
    /// One command line fragment; returns what to do with the literal it
    /// announces (`None`: no literal follows).
    pub(super) fn command(
        &mut self,
        body: &[u8],
        lit: Option<Literal>,
        eol: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<LitMode> {
        match std::mem::replace(&mut self.cmd, State::Start) {
            State::Start => self.command_start(body, lit, eol, out),
            State::Pass | State::Name(_) => self.pass_fragment(body, lit, eol, out),
            State::PoisonNext => self.poison(lit, out),
            State::Discard => match lit {
                Some(l) if !l.sync => {
                    self.cmd = State::Discard;
                    Some(LitMode::Drop)
                }
                _ => None,
            },
            State::Search(expect) => {
                let line = before_literal(body, lit);
                let toks = scan::tokens(line);
                let map = Arc::clone(&self.map);
                let sel = self.cmd_selected.clone();
                let Some(f) = folder_of(&map, &sel) else {
                    return self.pass_fragment(body, lit, eol, out);
                };
                let mut edits = Edits::default();
                match search(expect, line, &toks, lit, f, &mut edits) {
                    Ok(next) => {
                        edits.apply(line, out);
                        out.extend_from_slice(&body[line.len()..]);
                        out.extend_from_slice(eol);
                        if lit.is_some() {
                            self.cmd = State::Search(next);
                            Some(LitMode::Pass)
                        } else {
                            None
                        }
                    }
                    Err(Refuse) => self.poison(lit, out),
                }
            }
            State::SelectParams(sel) => {
                let line = before_literal(body, lit);
                let toks = scan::tokens(line);
                let mut edits = Edits::default();
                let map = Arc::clone(&self.map);
                if let Some(f) = folder_of(&map, &sel) {
                    select_params(line, &toks, f, &mut edits);
                }
                edits.apply(line, out);
                out.extend_from_slice(&body[line.len()..]);
                out.extend_from_slice(eol);
                if lit.is_some() {
                    self.cmd = State::Pass;
                    Some(LitMode::Pass)
                } else {
                    None
                }
            }
        }
    }

    fn pass_fragment(
        &mut self,
        body: &[u8],
        lit: Option<Literal>,
        eol: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<LitMode> {
        out.extend_from_slice(body);
        out.extend_from_slice(eol);
        lit.map(|_| {
            self.cmd = State::Pass;
            LitMode::Pass
        })
    }

    /// Part of this command already reached the store: end it there with a
    /// syntax error so the store answers BAD, and drop what the client still sends.
    fn poison(&mut self, lit: Option<Literal>, out: &mut Vec<u8>) -> Option<LitMode> {
        out.push(b' ');
        out.extend(std::iter::repeat_n(b')', POISON));
        out.extend_from_slice(b"\r\n");
        match lit {
            Some(l) if !l.sync => {
                self.cmd = State::Discard;
                Some(LitMode::Drop)
            }
            _ => None,
        }
    }

    /// Answers a command here (nothing of it reached the store).
    fn refuse(&mut self, tag: &[u8], lit: Option<Literal>, text: &str) -> Option<LitMode> {
        self.reply(tag, text);
        match lit {
            Some(l) if !l.sync => {
                self.cmd = State::Discard;
                Some(LitMode::Drop)
            }
            _ => None,
        }
    }

    pub(super) fn command_too_long(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if matches!(self.cmd, State::Start) {
            let toks = scan::tokens(&line[..line.len().min(256)]);
            if let Some(t) = toks.first().filter(|t| t.kind == T::Atom) {
                let tag = t.bytes(line).to_vec();
                self.reply(&tag, "BAD Command line too long.");
            }
        } else {
            self.poison(None, out);
        }
        self.cmd = State::Start;
    }

    fn push(&mut self, tag: &[u8], kind: Kind, src: Sel) {
        self.pending.push_back(Pending {
            tag: tag.into(),
            kind,
            src,
        });
    }

    fn command_start(
        &mut self,
        body: &[u8],
        lit: Option<Literal>,
        eol: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<LitMode> {
        let line = before_literal(body, lit);
        let toks = scan::tokens(line);
        if toks.len() < 2 || toks[0].kind != T::Atom || toks[1].kind != T::Atom {
            // DONE after IDLE, a blank line, or garbage the store answers.
            return self.pass_fragment(body, lit, eol, out);
        }
        let tag = toks[0].bytes(line);
        let uid = toks[1].is(line, "UID");
        let at = if uid { 2 } else { 1 };
        let Some(name_tok) = toks.get(at).filter(|t| t.kind == T::Atom) else {
            return self.pass_fragment(body, lit, eol, out);
        };
        let name = name_tok.bytes(line).to_ascii_uppercase();
        let src = self.cmd_selected.clone();
        let map = Arc::clone(&self.map);
        let f = folder_of(&map, &src);
        let args = &toks[at + 1..];
        let mut edits = Edits::default();
        let mut next = State::Pass;
        let mut mode = LitMode::Pass;

        if uid
            && !matches!(
                name.as_slice(),
                b"FETCH"
                    | b"STORE"
                    | b"COPY"
                    | b"MOVE"
                    | b"EXPUNGE"
                    | b"SEARCH"
                    | b"SORT"
                    | b"THREAD"
            )
        {
            return self.refuse(tag, lit, "BAD Unsupported UID command.");
        }
        if self.hidden.is_some() {
            let at: &[usize] = match name.as_slice() {
                b"COPY" | b"MOVE" => &[1],
                b"RENAME" => &[0, 1],
                b"SELECT" | b"EXAMINE" | b"CREATE" | b"DELETE" | b"SUBSCRIBE" | b"UNSUBSCRIBE"
                | b"STATUS" | b"APPEND" | b"GETQUOTAROOT" | b"GETACL" | b"SETACL"
                | b"DELETEACL" | b"LISTRIGHTS" | b"MYRIGHTS" | b"GETMETADATA" | b"SETMETADATA" => {
                    &[0]
                }
                _ => &[],
            };
            let hidden = at.iter().any(|&i| {
                args.get(i)
                    .and_then(|t| scan::astring(line, t))
                    .is_some_and(|n| self.is_hidden(&n))
            });
            if hidden {
                return self.refuse(tag, lit, "NO [NONEXISTENT] Mailbox doesn't exist.");
            }
        }
        if uid && src == Sel::Unknown {
            return self.refuse(tag, lit, "BAD No such mailbox.");
        }
        match name.as_slice() {
            b"SELECT" | b"EXAMINE" => match args.first() {
                Some(t) => {
                    let sel = self.sel_for(scan::astring(line, t).as_deref());
                    if let Some(f) = folder_of(&map, &sel) {
                        select_params(line, &args[1..], f, &mut edits);
                    }
                    self.cmd_selected = sel.clone();
                    self.push(tag, Kind::Select(sel), src);
                }
                None if lit.is_some() => {
                    self.push(tag, Kind::Select(Sel::Unknown), src);
                    self.cmd_selected = Sel::Unknown;
                    next = State::Name(NameFor::Select);
                    mode = LitMode::Capture;
                }
                None => self.push(tag, Kind::Other, src),
            },
            b"CLOSE" | b"UNSELECT" => {
                self.cmd_selected = Sel::None;
                self.push(tag, Kind::Deselect, src);
            }
            b"SEARCH" | b"SORT" | b"THREAD" => {
                self.push(tag, Kind::Search { uid }, src);
                if let Some(f) = f {
                    let start = match name.as_slice() {
                        b"SORT" => Expect::SortStart,
                        b"THREAD" => Expect::Skip {
                            values: 2,
                            depth: 0,
                        },
                        _ => Expect::Key,
                    };
                    match search(start, line, args, lit, f, &mut edits) {
                        Ok(e) => next = State::Search(e),
                        Err(Refuse) => {
                            self.pending.pop_back();
                            return self.refuse(
                                tag,
                                lit,
                                "BAD Unsupported search through this proxy.",
                            );
                        }
                    }
                }
            }
            b"FETCH" | b"STORE" | b"COPY" | b"MOVE" | b"EXPUNGE" => {
                let kind = match name.as_slice() {
                    b"COPY" | b"MOVE" => Kind::Copy {
                        uid,
                        dest: Sel::Unknown,
                    },
                    b"STORE" => Kind::Store { uid },
                    _ => Kind::Other,
                };
                if let Some(f) = f {
                    if let Err(Refuse) = fetch_like(&name, uid, line, args, f, &mut edits) {
                        return self.refuse(tag, lit, "BAD Invalid arguments.");
                    }
                }
                self.push(tag, kind, src);
                if matches!(name.as_slice(), b"COPY" | b"MOVE") {
                    match args.get(1) {
                        Some(t) => {
                            let dest = self.sel_for(scan::astring(line, t).as_deref());
                            self.set_dest(dest);
                        }
                        None if lit.is_some() => {
                            next = State::Name(NameFor::Copy);
                            mode = LitMode::Capture;
                        }
                        None => {}
                    }
                }
            }
            b"APPEND" => {
                self.push(tag, Kind::Append { dest: Sel::Unknown }, src);
                match args.first() {
                    Some(t) => {
                        let dest = self.sel_for(scan::astring(line, t).as_deref());
                        self.set_dest(dest);
                    }
                    None if lit.is_some() => {
                        next = State::Name(NameFor::Append);
                        mode = LitMode::Capture;
                    }
                    None => {}
                }
            }
            _ => self.push(tag, Kind::Other, src),
        }
        edits.apply(line, out);
        out.extend_from_slice(&body[line.len()..]);
        out.extend_from_slice(eol);
        lit.map(|_| {
            self.cmd = next;
            mode
        })
    }

    /// The destination of the command just recorded.
    fn set_dest(&mut self, sel: Sel) {
        if let Some(p) = self.pending.back_mut() {
            match &mut p.kind {
                Kind::Copy { dest, .. } | Kind::Append { dest } => *dest = sel,
                _ => {}
            }
        }
    }

    /// A mailbox name read from a literal (`None`: too long to keep).
    pub(super) fn command_name(&mut self, name: Option<Vec<u8>>) {
        if name.as_deref().is_some_and(|n| self.is_hidden(n)) {
            self.cmd = State::PoisonNext;
            return;
        }
        let sel = self.sel_for(name.as_deref());
        match std::mem::replace(&mut self.cmd, State::Pass) {
            State::Name(NameFor::Select) => {
                if let Some(p) = self.pending.back_mut() {
                    p.kind = Kind::Select(sel.clone());
                }
                self.cmd_selected = sel.clone();
                self.cmd = State::SelectParams(sel);
            }
            State::Name(NameFor::Copy | NameFor::Append) => self.set_dest(sel),
            other => self.cmd = other,
        }
    }
}

/// The set, CHANGEDSINCE and UNCHANGEDSINCE of FETCH/STORE/COPY/MOVE/EXPUNGE.
fn fetch_like(
    name: &[u8],
    uid: bool,
    line: &[u8],
    args: &[Token],
    f: &dyn FolderMapping,
    edits: &mut Edits,
) -> Result<(), Refuse> {
    if uid {
        let t = args.first().filter(|t| t.kind == T::Atom).ok_or(Refuse)?;
        let b = t.bytes(line);
        if b != b"$" {
            let ranges = set::parse(b).ok_or(Refuse)?;
            edits.replace(t.start, t.end, set::to_store(f, &ranges));
        }
    }
    let modifier: &str = match name {
        b"FETCH" => "CHANGEDSINCE",
        b"STORE" => "UNCHANGEDSINCE",
        _ => return Ok(()),
    };
    // Inside a parenthesised list after the set: FETCH's modifiers follow
    // its items (no item is called CHANGEDSINCE); STORE's come first.
    let mut depth = 0u32;
    for (i, t) in args.iter().enumerate().skip(1) {
        if name == b"STORE" && i == 1 && t.kind != T::Open {
            break;
        }
        match t.kind {
            T::Open => depth += 1,
            T::Close => depth = depth.saturating_sub(1),
            T::Atom if depth == 1 && t.is(line, modifier) => {
                let v = args.get(i + 1).ok_or(Refuse)?;
                let n = scan::number(v.bytes(line)).ok_or(Refuse)?;
                let store = if name == b"FETCH" {
                    f.changedsince_to_store(n)
                } else {
                    f.unchangedsince_to_store(n)
                };
                edits.replace(v.start, v.end, store.to_string());
            }
            _ => {}
        }
        if name == b"STORE" && depth == 0 && t.kind == T::Close {
            break;
        }
    }
    Ok(())
}

/// `(QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]))`: the client's
/// old UIDVALIDITY becomes the store's (another value stays another value,
/// so the store sees a mismatch too); the modseq and known UIDs are the
/// store's; the sequence match data, a hint that pairs numbers one by one,
/// is dropped rather than translated into something wrong.
fn select_params(line: &[u8], toks: &[Token], f: &dyn FolderMapping, edits: &mut Edits) {
    let Some(q) = toks.iter().position(|t| t.is(line, "QRESYNC")) else {
        return;
    };
    if toks.get(q + 1).map(|t| t.kind) != Some(T::Open) {
        return;
    }
    let mut i = q + 2;
    if let Some(t) = toks.get(i).filter(|t| t.kind == T::Atom) {
        let client = scan::number(t.bytes(line));
        let store = f.store_uidvalidity();
        let v = if client == Some(u64::from(f.client_uidvalidity())) {
            store
        } else if store == 1 {
            2
        } else {
            1
        };
        edits.replace(t.start, t.end, v.to_string());
        i += 1;
    }
    if let Some(t) = toks.get(i).filter(|t| t.kind == T::Atom) {
        if let Some(m) = scan::number(t.bytes(line)) {
            edits.replace(t.start, t.end, f.changedsince_to_store(m).to_string());
        }
        i += 1;
    }
    if let Some(t) = toks.get(i).filter(|t| t.kind == T::Atom) {
        let b = t.bytes(line);
        match set::parse(b) {
            Some(r) => edits.replace(t.start, t.end, set::to_store(f, &r)),
            // Unreadable: dropped, the store then reports from all it has.
            None => edits.replace(t.start, t.end, String::new()),
        }
        i += 1;
    }
    if toks.get(i).map(|t| t.kind) == Some(T::Open) {
        if let Some(close) = toks[i..].iter().position(|t| t.kind == T::Close) {
            edits.replace(toks[i].start, toks[i + close].end, String::new());
        }
    }
}

/// The no-argument search keys.
const FLAGS_KEYS: &[&str] = &[
    "ALL",
    "ANSWERED",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "NEW",
    "OLD",
    "RECENT",
    "SEEN",
    "UNANSWERED",
    "UNDELETED",
    "UNDRAFT",
    "UNFLAGGED",
    "UNSEEN",
    "NOT",
    "OR",
    "FUZZY",
    "SAVEDATESUPPORTED",
];
/// Keys with one argument.
const ONE_ARG: &[&str] = &[
    "BCC",
    "BODY",
    "CC",
    "FROM",
    "SUBJECT",
    "TEXT",
    "TO",
    "KEYWORD",
    "UNKEYWORD",
    "BEFORE",
    "ON",
    "SINCE",
    "SENTBEFORE",
    "SENTON",
    "SENTSINCE",
    "SAVEDBEFORE",
    "SAVEDON",
    "SAVEDSINCE",
    "LARGER",
    "SMALLER",
    "OLDER",
    "YOUNGER",
    "CHARSET",
    "RETURN",
];

fn is_any(line: &[u8], t: &Token, words: &[&str]) -> bool {
    words.iter().any(|w| t.is(line, w))
}

/// Reads search keys token by token (resumable across literals); rewrites
/// `UID set` and `MODSEQ n`. A literal stands for one string value.
fn search(
    mut e: Expect,
    line: &[u8],
    toks: &[Token],
    lit: Option<Literal>,
    f: &dyn FolderMapping,
    edits: &mut Edits,
) -> Result<Expect, Refuse> {
    for t in toks {
        e = search_token(e, line, Some(t), f, edits)?;
    }
    if lit.is_some() {
        e = search_token(e, line, None, f, edits)?;
    }
    Ok(e)
}

/// One token (`None`: a literal string).
fn search_token(
    e: Expect,
    line: &[u8],
    t: Option<&Token>,
    f: &dyn FolderMapping,
    edits: &mut Edits,
) -> Result<Expect, Refuse> {
    let kind = t.map(|t| t.kind);
    Ok(match e {
        Expect::Key => match (kind, t) {
            (Some(T::Open | T::Close), _) => Expect::Key,
            (Some(T::Atom), Some(t)) => {
                let b = t.bytes(line);
                if t.is(line, "UID") {
                    Expect::UidSet
                } else if t.is(line, "MODSEQ") {
                    Expect::ModseqStart
                } else if t.is(line, "HEADER") {
                    Expect::Skip {
                        values: 2,
                        depth: 0,
                    }
                } else if is_any(line, t, ONE_ARG) {
                    Expect::Skip {
                        values: 1,
                        depth: 0,
                    }
                } else if is_any(line, t, FLAGS_KEYS) || b == b"$" || set::parse(b).is_some() {
                    Expect::Key
                } else {
                    Expect::Unknown
                }
            }
            _ => Expect::Unknown,
        },
        Expect::SortStart => match t {
            Some(t) if t.is(line, "RETURN") => Expect::Skip {
                values: 3,
                depth: 0,
            },
            _ => search_token(
                Expect::Skip {
                    values: 2,
                    depth: 0,
                },
                line,
                t,
                f,
                edits,
            )?,
        },
        Expect::Skip { values, depth } => {
            let (values, depth) = match kind {
                Some(T::Open) => (values, depth + 1),
                Some(T::Close) if depth > 0 => {
                    if depth == 1 {
                        (values - 1, 0)
                    } else {
                        (values, depth - 1)
                    }
                }
                Some(T::Close) => return Ok(Expect::Key),
                _ if depth > 0 => (values, depth),
                _ => (values - 1, 0),
            };
            if values == 0 {
                Expect::Key
            } else {
                Expect::Skip { values, depth }
            }
        }
        Expect::UidSet => {
            let t = t.filter(|t| t.kind == T::Atom).ok_or(Refuse)?;
            let b = t.bytes(line);
            if b != b"$" {
                let ranges = set::parse(b).ok_or(Refuse)?;
                edits.replace(t.start, t.end, set::to_store(f, &ranges));
            }
            Expect::Key
        }
        Expect::ModseqStart => match (kind, t) {
            (Some(T::Atom), Some(t)) => {
                modseq(line, t, f, edits)?;
                Expect::Key
            }
            (Some(T::Quoted) | None, _) => Expect::ModseqType,
            _ => return Err(Refuse),
        },
        Expect::ModseqType => match kind {
            Some(T::Atom) => Expect::ModseqValue,
            _ => return Err(Refuse),
        },
        Expect::ModseqValue => {
            let t = t.filter(|t| t.kind == T::Atom).ok_or(Refuse)?;
            modseq(line, t, f, edits)?;
            Expect::Key
        }
        Expect::Unknown => match t {
            Some(t) if t.is(line, "UID") || t.is(line, "MODSEQ") => return Err(Refuse),
            _ => Expect::Unknown,
        },
    })
}

/// `MODSEQ n` in a search: messages changed at n or later, i.e. CHANGEDSINCE n-1.
fn modseq(line: &[u8], t: &Token, f: &dyn FolderMapping, edits: &mut Edits) -> Result<(), Refuse> {
    let n = scan::number(t.bytes(line)).ok_or(Refuse)?;
    let store = f
        .changedsince_to_store(n.saturating_sub(1))
        .saturating_add(1);
    edits.replace(t.start, t.end, store.to_string());
    Ok(())
}
