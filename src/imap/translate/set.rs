//! Sequence sets (`1:4,7,9:*`) read, translated range by range, and written.

use std::fmt::Write as _;

use super::FolderMapping;

/// One end of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    Num(u32),
    Star,
}

/// A parsed set: its ranges in the order given.
pub(super) type Ranges = Vec<(Bound, Bound)>;

/// Reads a sequence set; `None` when it is not one (`$` included).
pub(super) fn parse(s: &[u8]) -> Option<Ranges> {
    if s.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for part in s.split(|&b| b == b',') {
        let mut ends = part.splitn(2, |&b| b == b':');
        let a = bound(ends.next()?)?;
        let b = match ends.next() {
            Some(x) => bound(x)?,
            None => a,
        };
        out.push((a, b));
    }
    Some(out)
}

fn bound(b: &[u8]) -> Option<Bound> {
    if b == b"*" {
        return Some(Bound::Star);
    }
    if b.first() == Some(&b'0') {
        return None;
    }
    match super::scan::number(b)? {
        n @ 1..=0xFFFF_FFFF => Some(Bound::Num(n as u32)),
        _ => None,
    }
}

/// A store UID no message has: what a client set that names no mapped
/// message becomes (a set cannot be empty), so the store finds nothing.
pub(super) const NOTHING: u32 = u32::MAX;

fn push(out: &mut String, lo: u32, hi: u32) {
    if !out.is_empty() {
        out.push(',');
    }
    if lo == hi {
        let _ = write!(out, "{lo}");
    } else {
        let _ = write!(out, "{lo}:{hi}");
    }
}

/// The client's UID set in the store's UIDs; names exactly the messages the
/// client's set names (`*` stays `*`: the highest UID is the same message on
/// both sides, the map being monotonic).
pub(super) fn to_store<F: FolderMapping + ?Sized>(f: &F, ranges: &Ranges) -> String {
    let mut out = String::new();
    for &(a, b) in ranges {
        match (a, b) {
            (Bound::Num(x), Bound::Num(y)) => {
                if let Some((lo, hi)) = f.to_store_range(x.min(y), x.max(y)) {
                    push(&mut out, lo, hi);
                }
            }
            (Bound::Num(n), Bound::Star) | (Bound::Star, Bound::Num(n)) => {
                if !out.is_empty() {
                    out.push(',');
                }
                match f.to_store_range(n, u32::MAX) {
                    Some((lo, _)) => {
                        let _ = write!(out, "{lo}:*");
                    }
                    None => out.push('*'),
                }
            }
            (Bound::Star, Bound::Star) => {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push('*');
            }
        }
    }
    if out.is_empty() {
        let _ = write!(out, "{NOTHING}");
    }
    out
}

/// A store set of UIDs read as ranges (VANISHED, ESEARCH ALL, MODIFIED) in
/// the client's UIDs; `None` when no UID in it has a client UID.
pub(super) fn to_client<F: FolderMapping + ?Sized>(f: &F, ranges: &Ranges) -> Option<String> {
    let mut out = String::new();
    for &(a, b) in ranges {
        match (a, b) {
            (Bound::Num(x), Bound::Num(y)) => {
                if let Some((lo, hi)) = f.to_client_range(x.min(y), x.max(y)) {
                    push(&mut out, lo, hi);
                }
            }
            _ => {
                // A store never sends `*` in a set of its own; if one does,
                // it is not passed on unmapped.
                return None;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Most UIDs a COPYUID or APPENDUID is expanded to; beyond, the code is dropped.
const MAX_LISTED: u64 = 1 << 20;

/// A store set whose members pair up one by one (COPYUID, APPENDUID), each
/// UID translated on its own and ranges rebuilt only where the client's
/// UIDs are consecutive; `None` if any UID has no client UID.
pub(super) fn to_client_each<F: FolderMapping + ?Sized>(f: &F, ranges: &Ranges) -> Option<String> {
    let mut total = 0u64;
    let mut out = String::new();
    let mut run: Option<(u32, u32)> = None;
    for &(a, b) in ranges {
        let (Bound::Num(x), Bound::Num(y)) = (a, b) else {
            return None;
        };
        // COPYUID lists keep the order given, so a descending range is walked down.
        let up = x <= y;
        let count = u64::from(x.abs_diff(y)) + 1;
        total += count;
        if total > MAX_LISTED {
            return None;
        }
        for k in 0..count {
            let s = if up { x + k as u32 } else { x - k as u32 };
            let c = f.to_client_uid(s)?;
            run = match run {
                Some((lo, hi)) if hi.checked_add(1) == Some(c) => Some((lo, c)),
                Some((lo, hi)) => {
                    push(&mut out, lo, hi);
                    Some((c, c))
                }
                None => Some((c, c)),
            };
        }
    }
    let (lo, hi) = run?;
    push(&mut out, lo, hi);
    Some(out)
}
