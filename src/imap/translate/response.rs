//! Store → client: finds the UIDs, UIDVALIDITYs, UIDNEXTs and MODSEQs in
//! responses and rewrites them into what the client knows; follows which
//! folder is selected from the tagged answers.

use std::sync::Arc;

use super::scan::{self, Kind as T, Literal, Token};
use super::set;
use super::{before_literal, Edits, FolderMapping, Kind, LitMode, Sel, Translator, UserMapping};

/// Where a response stands across its line fragments (split by literals).
#[derive(Debug)]
pub(super) enum State {
    /// The next line starts a response.
    Start,
    /// The rest of the response passes unchanged.
    Pass,
    /// A FETCH response goes on after a literal.
    Fetch { folder: Sel, expect: Expect },
    /// A STATUS response's mailbox name arrives as a literal.
    StatusName,
    /// A STATUS response's items follow its literal name.
    StatusItems(Sel),
}

/// What the FETCH reader expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Open,
    Name,
    /// A value being skipped, `depth` parentheses deep.
    Value {
        depth: u32,
    },
    /// The number after `UID`; `name` is where `UID` started.
    Uid {
        name: usize,
    },
    ModseqOpen,
    ModseqValue,
    ModseqClose,
    /// Past the end, or not readable: the rest passes.
    Done,
}

fn folder_of<'a>(map: &'a Arc<dyn UserMapping>, sel: &Sel) -> Option<&'a dyn FolderMapping> {
    match sel {
        Sel::Mapped(name) => map.folder(name),
        _ => None,
    }
}

/// What a response code is read against.
struct CodeCtx {
    /// The folder for UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ (and MODIFIED).
    folder: Sel,
    /// Source and destination of a COPY or MOVE.
    copy: Option<(Sel, Sel)>,
    /// Destination of an APPEND.
    append: Option<Sel>,
    /// MODIFIED names UIDs.
    modified_uid: bool,
}

impl Translator {
    /// One response line fragment; returns what to do with the literal it announces.
    pub(super) fn response(
        &mut self,
        body: &[u8],
        lit: Option<Literal>,
        eol: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<LitMode> {
        let line = before_literal(body, lit);
        let mut edits = Edits::default();
        let mut drop = false;
        let next = match std::mem::replace(&mut self.resp, State::Start) {
            State::Start => self.response_start(line, lit, &mut edits, &mut drop),
            State::Pass => State::Pass,
            State::StatusName => State::Pass,
            State::Fetch { folder, expect } => {
                let map = Arc::clone(&self.map);
                match folder_of(&map, &folder) {
                    Some(f) => {
                        let toks = scan::tokens(line);
                        let expect = fetch(expect, line, &toks, lit, f, &mut edits);
                        State::Fetch { folder, expect }
                    }
                    None => State::Pass,
                }
            }
            State::StatusItems(sel) => {
                let toks = scan::tokens(line);
                let map = Arc::clone(&self.map);
                if let Some(f) = folder_of(&map, &sel) {
                    status_items(line, &toks, f, &mut edits);
                }
                State::Pass
            }
        };
        if drop {
            return match lit {
                Some(_) => {
                    self.resp = State::Pass;
                    Some(LitMode::Drop)
                }
                None => None,
            };
        }
        if edits.is_empty() {
            out.extend_from_slice(body);
        } else {
            edits.apply(line, out);
            out.extend_from_slice(&body[line.len()..]);
        }
        out.extend_from_slice(eol);
        let lit = lit?;
        let mode = if matches!(next, State::StatusName) {
            LitMode::Capture
        } else {
            LitMode::Pass
        };
        let _ = lit;
        self.resp = next;
        Some(mode)
    }

    /// A STATUS mailbox name read from a literal.
    pub(super) fn response_name(&mut self, name: Option<Vec<u8>>) {
        if matches!(self.resp, State::StatusName) {
            self.resp = State::StatusItems(self.sel_for(name.as_deref()));
        }
    }

    /// The folder the store answers for now: a SELECT in flight, else the selected one.
    fn resp_folder(&self) -> Sel {
        match self.pending.front() {
            Some(p) => match &p.kind {
                Kind::Select(sel) => sel.clone(),
                _ => self.resp_selected.clone(),
            },
            None => self.resp_selected.clone(),
        }
    }

    fn response_start(
        &mut self,
        line: &[u8],
        lit: Option<Literal>,
        edits: &mut Edits,
        drop: &mut bool,
    ) -> State {
        let toks = scan::tokens(line);
        let Some(first) = toks.first() else {
            return State::Pass;
        };
        let map = Arc::clone(&self.map);
        if first.bytes(line) == b"+" {
            return State::Pass;
        }
        if first.bytes(line) != b"*" {
            self.tagged(line, &toks, edits);
            return State::Pass;
        }
        let Some(second) = toks.get(1).filter(|t| t.kind == T::Atom) else {
            return State::Pass;
        };
        let what = toks.get(2);
        // `* n FETCH (...)`
        if scan::number(second.bytes(line)).is_some() {
            if what.is_some_and(|t| t.is(line, "FETCH")) {
                let folder = self.resp_folder();
                if let Some(f) = folder_of(&map, &folder) {
                    let expect = fetch(Expect::Open, line, &toks[3..], lit, f, edits);
                    return State::Fetch { folder, expect };
                }
            }
            return State::Pass;
        }
        let word = second.bytes(line).to_ascii_uppercase();
        match word.as_slice() {
            b"SEARCH" | b"SORT" | b"THREAD" => {
                let uid = self
                    .pending
                    .iter()
                    .find_map(|p| match p.kind {
                        Kind::Search { uid } => Some(uid),
                        _ => None,
                    })
                    .unwrap_or(false);
                if let Some(f) = folder_of(&map, &self.resp_folder()) {
                    search_result(line, &toks[2..], uid, f, edits);
                }
            }
            b"ESEARCH" => {
                if let Some(f) = folder_of(&map, &self.resp_folder()) {
                    *drop = !esearch(line, &toks[2..], f, edits);
                }
            }
            b"VANISHED" => {
                if let Some(f) = folder_of(&map, &self.resp_folder()) {
                    let set_tok = toks[2..].iter().rev().find(|t| t.kind == T::Atom);
                    match set_tok.and_then(|t| Some((t, set::parse(t.bytes(line))?))) {
                        Some((t, ranges)) => match set::to_client(f, &ranges) {
                            Some(s) => edits.replace(t.start, t.end, s),
                            None => *drop = true,
                        },
                        None => *drop = true,
                    }
                }
            }
            b"STATUS" => match what {
                Some(t) if t.kind != T::Open => {
                    let name = scan::astring(line, t);
                    if name.as_deref().is_some_and(|n| self.is_hidden(n)) {
                        *drop = true;
                        return State::Pass;
                    }
                    let sel = self.sel_for(name.as_deref());
                    if let Some(f) = folder_of(&map, &sel) {
                        status_items(line, &toks[3..], f, edits);
                    }
                }
                None if lit.is_some() => return State::StatusName,
                _ => {}
            },
            b"CAPABILITY" => hide_capabilities(line, &toks[2..], edits),
            b"LIST" | b"LSUB" if self.hidden.is_some() => {
                // `* LIST (flags) delimiter name [extended data]`
                let close = toks.iter().position(|t| t.kind == T::Close);
                let name = close.and_then(|c| toks.get(c + 2));
                if name
                    .and_then(|t| scan::astring(line, t))
                    .is_some_and(|n| self.is_hidden(&n))
                {
                    *drop = true;
                }
            }
            b"OK" | b"NO" | b"BAD" | b"BYE" | b"PREAUTH"
                if toks.get(2).map(|t| t.kind) == Some(T::OpenBracket) =>
            {
                let folder = self.resp_folder();
                let copy = self.pending.iter().find_map(|p| match &p.kind {
                    Kind::Copy { dest, .. } => Some((p.src.clone(), dest.clone())),
                    _ => None,
                });
                let ctx = CodeCtx {
                    folder,
                    copy,
                    append: None,
                    modified_uid: false,
                };
                self.code(line, &toks[2..], &ctx, edits);
            }
            _ => {}
        }
        State::Pass
    }

    /// A tagged answer: codes read against its command, then the selected
    /// folder follows a SELECT, EXAMINE, CLOSE or UNSELECT.
    fn tagged(&mut self, line: &[u8], toks: &[Token], edits: &mut Edits) {
        let tag = toks[0].bytes(line);
        let Some(pos) = self.pending.iter().position(|p| &*p.tag == tag) else {
            return;
        };
        let Some(p) = self.pending.remove(pos) else {
            return;
        };
        if self.pending.is_empty() && self.pending.capacity() > 64 {
            self.pending = Default::default();
        }
        let status = toks.get(1).map(|t| t.bytes(line).to_ascii_uppercase());
        let ok = status.as_deref() == Some(b"OK");
        if toks.get(2).map(|t| t.kind) == Some(T::OpenBracket) {
            let ctx = CodeCtx {
                folder: match &p.kind {
                    Kind::Select(sel) => sel.clone(),
                    _ => p.src.clone(),
                },
                copy: match &p.kind {
                    Kind::Copy { dest, .. } => Some((p.src.clone(), dest.clone())),
                    _ => None,
                },
                append: match &p.kind {
                    Kind::Append { dest } => Some(dest.clone()),
                    _ => None,
                },
                modified_uid: matches!(
                    p.kind,
                    Kind::Store { uid: true } | Kind::Copy { uid: true, .. }
                ),
            };
            self.code(line, &toks[2..], &ctx, edits);
        }
        match p.kind {
            Kind::Select(sel) if ok => self.resp_selected = sel,
            Kind::Select(_) if status.as_deref() == Some(b"NO") => self.resp_selected = Sel::None,
            Kind::Deselect if ok => self.resp_selected = Sel::None,
            _ => {}
        }
    }

    /// `[CODE args]` at `toks[0]`.
    fn code(&mut self, line: &[u8], toks: &[Token], ctx: &CodeCtx, edits: &mut Edits) {
        let Some(name) = toks.get(1) else { return };
        let Some(end) = toks.iter().position(|t| t.kind == T::CloseBracket) else {
            return;
        };
        let args = &toks[2..end.max(2)];
        let whole = (toks[0].start, toks[end].end);
        let map = Arc::clone(&self.map);
        let num = |i: usize| args.get(i).and_then(|t| scan::number(t.bytes(line)));
        let upper = name.bytes(line).to_ascii_uppercase();
        match upper.as_slice() {
            b"CAPABILITY" => hide_capabilities(line, args, edits),
            b"UIDVALIDITY" => {
                let Some(f) = folder_of(&map, &ctx.folder) else {
                    return;
                };
                let Some(v) = num(0) else { return };
                if v == u64::from(f.store_uidvalidity()) {
                    edits.replace(
                        args[0].start,
                        args[0].end,
                        f.client_uidvalidity().to_string(),
                    );
                } else {
                    // Not the folder the map was written for (recreated since):
                    // from now on its bytes pass as they are.
                    self.downgrade(&ctx.folder);
                }
            }
            b"UIDNEXT" => {
                let Some(f) = folder_of(&map, &ctx.folder) else {
                    return;
                };
                if let Some(n) = num(0).and_then(|n| u32::try_from(n).ok()) {
                    edits.replace(args[0].start, args[0].end, f.client_uidnext(n).to_string());
                }
            }
            b"HIGHESTMODSEQ" => {
                let Some(f) = folder_of(&map, &ctx.folder) else {
                    return;
                };
                if let Some(m) = num(0) {
                    edits.replace(
                        args[0].start,
                        args[0].end,
                        f.to_client_modseq(m).to_string(),
                    );
                }
            }
            b"MODIFIED" if ctx.modified_uid => {
                let Some(f) = folder_of(&map, &ctx.folder) else {
                    return;
                };
                let translated = args
                    .first()
                    .and_then(|t| set::parse(t.bytes(line)))
                    .and_then(|r| set::to_client(f, &r));
                match translated {
                    Some(s) => edits.replace(args[0].start, args[0].end, s),
                    None => edits.replace(whole.0, whole.1, String::new()),
                }
            }
            b"COPYUID" => {
                let Some((src, dest)) = &ctx.copy else { return };
                if args.len() != 3 {
                    return edits.replace(whole.0, whole.1, String::new());
                }
                let mut ok = true;
                // A destination whose UIDVALIDITY is not the mapped one was
                // recreated after the cutover: its UIDs are the store's own,
                // shown as they are (as SELECT shows that folder).
                let mapped = folder_of(&map, dest)
                    .filter(|f| num(0) == Some(u64::from(f.store_uidvalidity())));
                if let Some(f) = mapped {
                    edits.replace(
                        args[0].start,
                        args[0].end,
                        f.client_uidvalidity().to_string(),
                    );
                    ok &= each(line, &args[2], f, edits);
                } else if *dest == Sel::Unknown {
                    ok = false;
                }
                if let Some(f) = folder_of(&map, src) {
                    ok &= each(line, &args[1], f, edits);
                } else if *src == Sel::Unknown {
                    ok = false;
                }
                if !ok {
                    edits.0.clear();
                    edits.replace(whole.0, whole.1, String::new());
                }
            }
            b"APPENDUID" => {
                let Some(dest) = &ctx.append else { return };
                if args.len() != 2 {
                    return edits.replace(whole.0, whole.1, String::new());
                }
                // As for COPYUID: another UIDVALIDITY is a recreated folder.
                let mapped = folder_of(&map, dest)
                    .filter(|f| num(0) == Some(u64::from(f.store_uidvalidity())));
                if let Some(f) = mapped {
                    let ok = each(line, &args[1], f, edits);
                    if ok {
                        edits.replace(
                            args[0].start,
                            args[0].end,
                            f.client_uidvalidity().to_string(),
                        );
                    } else {
                        edits.0.clear();
                        edits.replace(whole.0, whole.1, String::new());
                    }
                } else if *dest == Sel::Unknown {
                    edits.replace(whole.0, whole.1, String::new());
                }
            }
            _ => {}
        }
    }

    /// The store's folder is not the one mapped: stop translating it.
    fn downgrade(&mut self, folder: &Sel) {
        if let Some(p) = self.pending.front_mut() {
            if let Kind::Select(sel) = &mut p.kind {
                if sel == folder {
                    *sel = Sel::Plain;
                }
            }
        }
        if self.cmd_selected == *folder {
            self.cmd_selected = Sel::Plain;
        }
        if self.resp_selected == *folder {
            self.resp_selected = Sel::Plain;
        }
    }
}

/// A COPYUID/APPENDUID set, UID by UID; false if it cannot be translated.
fn each(line: &[u8], t: &Token, f: &dyn FolderMapping, edits: &mut Edits) -> bool {
    match set::parse(t.bytes(line)).and_then(|r| set::to_client_each(f, &r)) {
        Some(s) => {
            edits.replace(t.start, t.end, s);
            true
        }
        None => false,
    }
}

/// Drops the hidden capabilities from a list of tokens.
fn hide_capabilities(line: &[u8], toks: &[Token], edits: &mut Edits) {
    for t in toks {
        if t.kind == T::Atom && super::hides(t.bytes(line)) {
            // Take the space before it too.
            let start = if t.start > 0 && line[t.start - 1] == b' ' {
                t.start - 1
            } else {
                t.start
            };
            edits.replace(start, t.end, String::new());
        }
    }
}

/// FETCH items, token by token (resumable across literals; `None` below is
/// a literal value).
fn fetch(
    mut e: Expect,
    line: &[u8],
    toks: &[Token],
    lit: Option<Literal>,
    f: &dyn FolderMapping,
    edits: &mut Edits,
) -> Expect {
    for t in toks {
        e = fetch_token(e, line, Some(t), f, edits);
    }
    if lit.is_some() {
        e = fetch_token(e, line, None, f, edits);
    }
    e
}

fn fetch_token(
    e: Expect,
    line: &[u8],
    t: Option<&Token>,
    f: &dyn FolderMapping,
    edits: &mut Edits,
) -> Expect {
    let kind = t.map(|t| t.kind);
    match e {
        Expect::Open => match kind {
            Some(T::Open) => Expect::Name,
            _ => Expect::Done,
        },
        Expect::Name => match t {
            Some(t) if t.kind == T::Atom => {
                if t.is(line, "UID") {
                    Expect::Uid { name: t.start }
                } else if t.is(line, "MODSEQ") {
                    Expect::ModseqOpen
                } else {
                    Expect::Value { depth: 0 }
                }
            }
            _ => Expect::Done,
        },
        Expect::Value { depth } => match kind {
            Some(T::Open) => Expect::Value { depth: depth + 1 },
            Some(T::Close) if depth == 0 => Expect::Done,
            Some(T::Close) if depth == 1 => Expect::Name,
            Some(T::Close) => Expect::Value { depth: depth - 1 },
            _ if depth == 0 => Expect::Name,
            _ => Expect::Value { depth },
        },
        Expect::Uid { name } => match t {
            Some(t) if t.kind == T::Atom => {
                let store = scan::number(t.bytes(line)).and_then(|n| u32::try_from(n).ok());
                match store.and_then(|s| f.to_client_uid(s)) {
                    Some(c) => edits.replace(t.start, t.end, c.to_string()),
                    None => {
                        // No client UID: the item goes, never a wrong one.
                        let end = if line.get(t.end) == Some(&b' ') {
                            t.end + 1
                        } else {
                            t.end
                        };
                        edits.replace(name, end, String::new());
                    }
                }
                Expect::Name
            }
            _ => Expect::Done,
        },
        Expect::ModseqOpen => match kind {
            Some(T::Open) => Expect::ModseqValue,
            _ => Expect::Done,
        },
        Expect::ModseqValue => match t {
            Some(t) if t.kind == T::Atom => {
                if let Some(m) = scan::number(t.bytes(line)) {
                    edits.replace(t.start, t.end, f.to_client_modseq(m).to_string());
                }
                Expect::ModseqClose
            }
            _ => Expect::Done,
        },
        Expect::ModseqClose => match kind {
            Some(T::Close) => Expect::Name,
            _ => Expect::Done,
        },
        Expect::Done => Expect::Done,
    }
}

/// `* SEARCH 3 7 (MODSEQ 9)`, `* SORT ...`, `* THREAD (3)(7 9)`.
fn search_result(line: &[u8], toks: &[Token], uid: bool, f: &dyn FolderMapping, edits: &mut Edits) {
    let mut after_modseq = false;
    for t in toks {
        if t.kind != T::Atom {
            continue;
        }
        if t.is(line, "MODSEQ") {
            after_modseq = true;
            continue;
        }
        let Some(n) = scan::number(t.bytes(line)) else {
            continue;
        };
        if after_modseq {
            edits.replace(t.start, t.end, f.to_client_modseq(n).to_string());
            after_modseq = false;
        } else if uid {
            match u32::try_from(n).ok().and_then(|s| f.to_client_uid(s)) {
                Some(c) => edits.replace(t.start, t.end, c.to_string()),
                None => {
                    let start = if t.start > 0 && line[t.start - 1] == b' ' {
                        t.start - 1
                    } else {
                        t.start
                    };
                    edits.replace(start, t.end, String::new());
                }
            }
        }
    }
}

/// `* ESEARCH [(TAG "x")] [UID] name value ...`; false if the response must
/// be dropped (a UID result it cannot translate).
fn esearch(line: &[u8], toks: &[Token], f: &dyn FolderMapping, edits: &mut Edits) -> bool {
    let mut i = 0;
    if toks.first().map(|t| t.kind) == Some(T::Open) {
        match toks.iter().position(|t| t.kind == T::Close) {
            Some(c) => i = c + 1,
            None => return true,
        }
    }
    let uid = toks.get(i).is_some_and(|t| t.is(line, "UID"));
    if uid {
        i += 1;
    }
    while i + 1 < toks.len() {
        let (name, value) = (&toks[i], &toks[i + 1]);
        let v = value.bytes(line);
        let upper = name.bytes(line).to_ascii_uppercase();
        match upper.as_slice() {
            b"MODSEQ" => {
                if let Some(m) = scan::number(v) {
                    edits.replace(value.start, value.end, f.to_client_modseq(m).to_string());
                }
            }
            b"COUNT" => {}
            b"MIN" | b"MAX" | b"ALL" if !uid => {}
            b"MIN" | b"MAX" => {
                let c = scan::number(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .and_then(|s| f.to_client_uid(s));
                match c {
                    Some(c) => edits.replace(value.start, value.end, c.to_string()),
                    None => edits.replace(name.start, value.end, String::new()),
                }
            }
            b"ALL" => match set::parse(v).and_then(|r| set::to_client(f, &r)) {
                Some(s) => edits.replace(value.start, value.end, s),
                None => edits.replace(name.start, value.end, String::new()),
            },
            _ if uid => return false,
            _ => {}
        }
        i += 2;
    }
    true
}

/// `(MESSAGES 3 UIDNEXT 9 UIDVALIDITY 5 HIGHESTMODSEQ 7)`; left alone if its
/// UIDVALIDITY is not the one the map was written for.
fn status_items(line: &[u8], toks: &[Token], f: &dyn FolderMapping, edits: &mut Edits) {
    let pairs: Vec<(&Token, &Token)> = toks
        .iter()
        .filter(|t| t.kind == T::Atom)
        .collect::<Vec<_>>()
        .chunks_exact(2)
        .map(|c| (c[0], c[1]))
        .collect();
    let value = |t: &Token| scan::number(t.bytes(line));
    for (name, v) in &pairs {
        if name.is(line, "UIDVALIDITY") && value(v) != Some(u64::from(f.store_uidvalidity())) {
            return;
        }
    }
    for (name, v) in pairs {
        let Some(n) = value(v) else { continue };
        let new = if name.is(line, "UIDVALIDITY") {
            f.client_uidvalidity().to_string()
        } else if name.is(line, "UIDNEXT") {
            match u32::try_from(n) {
                Ok(n) => f.client_uidnext(n).to_string(),
                Err(_) => continue,
            }
        } else if name.is(line, "HIGHESTMODSEQ") {
            f.to_client_modseq(n).to_string()
        } else {
            continue;
        };
        edits.replace(v.start, v.end, new);
    }
}
