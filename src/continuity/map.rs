//! The UID map of one folder ([`FolderMap`]) and of one user ([`UserMap`]),
//! with its text encoding.
//!
//! A folder's map is a list of runs: `len` consecutive client UIDs starting at
//! `old` are the store UIDs starting at `new`. Runs ascend on both sides and
//! never overlap, so the map is a bijection between the client UIDs it covers
//! and the store UIDs it covers. Client UIDs at or above `old_uidnext` map
//! linearly to store UIDs at or above `new_uidnext` (mail that arrived after
//! the cutover), which keeps the order and never meets a run.
//!
//! # MODSEQs
//!
//! `offset = old_highestmodseq - new_highestmodseq` (0 when the old store had
//! no CONDSTORE: its clients never saw a MODSEQ). A client sees
//! `max(1, store + offset)`, so every change after the cutover shows above
//! `old_highestmodseq`, and `CHANGEDSINCE old_highestmodseq` becomes
//! `CHANGEDSINCE new_highestmodseq` on the store: exactly the changes since
//! the cutover. A client value from before the cutover cannot be translated
//! (the new store's MODSEQs of that time say nothing about the old store's), so
//! it becomes 1: the store reports every message's flags, and the client
//! resyncs flags, never bodies.
//!
//! # Encoding
//!
//! One line of ASCII, versioned, `key=value` fields separated by spaces;
//! unknown keys are ignored so a later version can add fields:
//!
//! ```text
//! v1 ouv=1700000000 oun=1201 ohm=5000 nuv=1800000000 nun=1001 nhm=3100 puv=1700000000 runs=0..400,3..600
//! ```
//!
//! A run is `G.H.L`: its first old UID is `G` past the previous run's end (or
//! past UID 1), its first new UID `H` past the previous run's end, `L`
//! messages long; an empty number is 0. A 100,000-message folder with a few
//! gaps is a few hundred bytes. `uidls=UID:UIDL,...` carries explicit POP3
//! UIDLs for INBOX (percent-encoded).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Why a map could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The text is not a version this build reads.
    #[error("UID map: unknown version {0:?}")]
    Version(String),
    /// A required field is missing.
    #[error("UID map: field {0} missing")]
    Missing(&'static str),
    /// A field's value does not parse.
    #[error("UID map: field {key}: bad value {value:?}")]
    BadValue {
        /// The field.
        key: &'static str,
        /// What was there (cut to 40 bytes).
        value: String,
    },
    /// A UID or UIDNEXT is 0, or a UID is not below its UIDNEXT.
    #[error("UID map: UID {uid} outside 1..{uidnext}")]
    OutOfRange {
        /// The UID.
        uid: u64,
        /// The UIDNEXT it must stay under.
        uidnext: u32,
    },
    /// The pairs do not ascend on both sides.
    #[error("UID map: {old} → {new} does not ascend after the previous pair")]
    NotMonotonic {
        /// The client (old) UID.
        old: u32,
        /// The store (new) UID.
        new: u32,
    },
}

/// A folder's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// HIGHESTMODSEQ (0: no CONDSTORE).
    pub highestmodseq: u64,
}

/// `len` consecutive client UIDs from `old` are the store UIDs from `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    old: u32,
    new: u32,
    len: u32,
}

impl Run {
    /// One past the last client UID (fits: validated below `old_uidnext`).
    fn old_end(&self) -> u32 {
        self.old + self.len
    }
    fn new_end(&self) -> u32 {
        self.new + self.len
    }
}

/// One folder's map from the UIDs clients know to the UIDs of the store it now lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderMap {
    /// UIDVALIDITY clients knew (the old store's); 0 in a
    /// [`fresh`](Self::fresh) map.
    pub old_uidvalidity: u32,
    /// The old store's UIDNEXT at cutover: client UIDs at or above it are mail
    /// that arrived after the cutover.
    pub old_uidnext: u32,
    /// The old store's HIGHESTMODSEQ at cutover (0: it had no CONDSTORE).
    pub old_highestmodseq: u64,
    /// The store's UIDVALIDITY for the folder: another value means the folder
    /// was recreated and the map no longer applies.
    pub new_uidvalidity: u32,
    /// The store's UIDNEXT at cutover.
    pub new_uidnext: u32,
    /// The store's HIGHESTMODSEQ at cutover.
    pub new_highestmodseq: u64,
    /// What the relay presents as UIDVALIDITY: `old_uidvalidity`, or a fresh
    /// value where the clients' UIDs could not be kept (they then resync).
    pub presented_uidvalidity: u32,
    /// Old → new, ascending on both sides, never adjacent on both.
    runs: Vec<Run>,
    /// Explicit POP3 UIDLs the old store gave INBOX's messages (client UID →
    /// UIDL), for the POP3 front end; empty unless filled.
    pub uidls: Vec<(u32, String)>,
}

impl FolderMap {
    /// Builds the map from `(client UID, store UID)` pairs, which must ascend on
    /// both sides and stay below the two UIDNEXTs.
    pub fn new(
        old: Snapshot,
        new: Snapshot,
        pairs: impl IntoIterator<Item = (u32, u32)>,
    ) -> Result<FolderMap, MapError> {
        let mut map = FolderMap {
            old_uidvalidity: old.uidvalidity,
            old_uidnext: old.uidnext,
            old_highestmodseq: old.highestmodseq,
            new_uidvalidity: new.uidvalidity,
            new_uidnext: new.uidnext,
            new_highestmodseq: new.highestmodseq,
            presented_uidvalidity: old.uidvalidity,
            runs: Vec::new(),
            uidls: Vec::new(),
        };
        for (o, n) in pairs {
            map.push(o, n, 1)?;
        }
        map.check_uidnexts()?;
        map.runs.shrink_to_fit();
        Ok(map)
    }

    /// The map for a folder whose clients cannot keep their UIDs: the store's
    /// UIDs as they are (all of `1..new.uidnext`) under `presented`, a
    /// UIDVALIDITY the clients never saw for this folder, so they resync it.
    pub fn fresh(new: Snapshot, presented: u32) -> FolderMap {
        let len = new.uidnext.saturating_sub(1);
        FolderMap {
            // Clients knew no UIDVALIDITY this map keeps (see `is_fresh`).
            old_uidvalidity: 0,
            old_uidnext: new.uidnext.max(1),
            // Clients know no MODSEQ under `presented`: the store's pass as they are.
            old_highestmodseq: 0,
            new_uidvalidity: new.uidvalidity,
            new_uidnext: new.uidnext.max(1),
            new_highestmodseq: new.highestmodseq,
            presented_uidvalidity: presented,
            runs: if len > 0 {
                vec![Run {
                    old: 1,
                    new: 1,
                    len,
                }]
            } else {
                Vec::new()
            },
            uidls: Vec::new(),
        }
    }

    /// Whether clients were given a fresh UIDVALIDITY for this folder (they
    /// resynced it) rather than keeping the one they knew.
    pub fn is_fresh(&self) -> bool {
        self.old_uidvalidity != self.presented_uidvalidity
    }

    /// Appends `len` pairs `(old.., new..)`, merging with the last run.
    fn push(&mut self, old: u32, new: u32, len: u32) -> Result<(), MapError> {
        if old == 0 || new == 0 {
            return Err(MapError::OutOfRange {
                uid: 0,
                uidnext: if old == 0 {
                    self.old_uidnext
                } else {
                    self.new_uidnext
                },
            });
        }
        if len == 0 {
            return Ok(());
        }
        if u64::from(old) + u64::from(len) > u64::from(u32::MAX)
            || u64::from(new) + u64::from(len) > u64::from(u32::MAX)
        {
            return Err(MapError::OutOfRange {
                uid: u64::from(old.max(new)) + u64::from(len),
                uidnext: u32::MAX,
            });
        }
        match self.runs.last_mut() {
            Some(last) if old < last.old_end() || new < last.new_end() => {
                return Err(MapError::NotMonotonic { old, new });
            }
            Some(last) if old == last.old_end() && new == last.new_end() => last.len += len,
            _ => self.runs.push(Run { old, new, len }),
        }
        Ok(())
    }

    fn check_uidnexts(&self) -> Result<(), MapError> {
        if self.old_uidnext == 0 {
            return Err(MapError::OutOfRange { uid: 0, uidnext: 0 });
        }
        if self.new_uidnext == 0 {
            return Err(MapError::OutOfRange { uid: 0, uidnext: 0 });
        }
        if let Some(last) = self.runs.last() {
            if last.old_end() > self.old_uidnext {
                return Err(MapError::OutOfRange {
                    uid: u64::from(last.old_end() - 1),
                    uidnext: self.old_uidnext,
                });
            }
            if last.new_end() > self.new_uidnext {
                return Err(MapError::OutOfRange {
                    uid: u64::from(last.new_end() - 1),
                    uidnext: self.new_uidnext,
                });
            }
        }
        Ok(())
    }

    /// This map followed by `next`, which maps this map's store to another
    /// (a rollback, or a move again after one): client → store of `next`.
    /// Clients keep what they see now (UIDVALIDITY, UIDs, MODSEQs above what
    /// they saw). `next.old_*` must describe this map's store at the time.
    pub fn then(&self, next: &FolderMap) -> Result<FolderMap, MapError> {
        // Client UIDs of the mail that reached this map's store after it was
        // made continue linearly up to where `next` begins.
        let mid_next = next.old_uidnext.max(self.new_uidnext);
        let client_next = u64::from(mid_next - self.new_uidnext) + u64::from(self.old_uidnext);
        let client_next = u32::try_from(client_next).map_err(|_| MapError::OutOfRange {
            uid: client_next,
            uidnext: u32::MAX,
        })?;
        let below = self
            .pairs()
            .filter_map(|(c, m)| Some((c, next.to_store_uid(m)?)))
            .filter(|(_, s)| *s < next.new_uidnext);
        let above = next
            .pairs()
            .filter(|(m, _)| *m >= self.new_uidnext)
            .filter_map(|(m, s)| Some((self.to_client_uid(m)?, s)));
        let old_highestmodseq = if next.old_highestmodseq == 0 {
            0
        } else {
            self.to_client_modseq(next.old_highestmodseq)
        };
        let mut map = FolderMap::new(
            Snapshot {
                uidvalidity: self.old_uidvalidity,
                uidnext: client_next,
                highestmodseq: old_highestmodseq,
            },
            Snapshot {
                uidvalidity: next.new_uidvalidity,
                uidnext: next.new_uidnext,
                highestmodseq: next.new_highestmodseq,
            },
            below.chain(above),
        )?;
        map.presented_uidvalidity = self.presented_uidvalidity;
        map.uidls = self.uidls.clone();
        Ok(map)
    }

    /// Messages mapped below the UIDNEXTs.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len as usize).sum()
    }

    /// No message is mapped (the folder was empty at cutover).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Runs in the map (what its size in memory grows with).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Bytes the map takes in memory, about.
    pub fn memory(&self) -> usize {
        std::mem::size_of::<FolderMap>()
            + self.runs.capacity() * std::mem::size_of::<Run>()
            + self
                .uidls
                .iter()
                .map(|(_, s)| std::mem::size_of::<(u32, String)>() + s.capacity())
                .sum::<usize>()
    }

    /// The pairs the runs hold, ascending (for tests and re-migration).
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..r.len).map(move |i| (r.old + i, r.new + i)))
    }

    /// The store UID a client UID names. Below `old_uidnext` by the runs (None:
    /// no such message); at or above it, the mail that came after the cutover
    /// (None when the store UID would not fit in 32 bits).
    pub fn to_store_uid(&self, client_uid: u32) -> Option<u32> {
        lookup(
            &self.runs,
            client_uid,
            self.old_uidnext,
            self.new_uidnext,
            |r| r.old,
            |r| r.new,
        )
    }

    /// The client UID a store UID is presented as.
    ///
    /// None for a store UID below `new_uidnext` that the map does not hold: a
    /// message that was on the store at the cutover without coming from the old
    /// store. The cutover writes a [`fresh`](Self::fresh) map for a folder with
    /// such messages, so this only happens when the folder was changed behind
    /// the map's back (or the map is from another folder). The relay must not
    /// invent a UID for it nor pass the store's through: it should fail the
    /// command with `NO [UNAVAILABLE]`, drop the user's cached map and log the
    /// folder, so the next session reloads it.
    pub fn to_client_uid(&self, store_uid: u32) -> Option<u32> {
        lookup(
            &self.runs,
            store_uid,
            self.new_uidnext,
            self.old_uidnext,
            |r| r.new,
            |r| r.old,
        )
    }

    /// The store UID ranges (ascending, inclusive, merged) a client range
    /// `lo:hi` names. `hi` may be `u32::MAX` for `*`; the part above the
    /// UIDNEXT is then cut at `u32::MAX` (the relay keeps `*` as `*`).
    pub fn to_store_ranges(&self, lo: u32, hi: u32) -> Vec<(u32, u32)> {
        ranges(
            &self.runs,
            lo,
            hi,
            self.old_uidnext,
            self.new_uidnext,
            |r| r.old,
            |r| r.new,
        )
    }

    /// The client UID ranges a store range `lo:hi` is presented as.
    pub fn to_client_ranges(&self, lo: u32, hi: u32) -> Vec<(u32, u32)> {
        ranges(
            &self.runs,
            lo,
            hi,
            self.new_uidnext,
            self.old_uidnext,
            |r| r.new,
            |r| r.old,
        )
    }

    /// The UIDNEXT a client sees for the store's UIDNEXT.
    pub fn client_uidnext(&self, store_uidnext: u32) -> u32 {
        if store_uidnext <= self.new_uidnext {
            return self.old_uidnext;
        }
        let c = u64::from(store_uidnext - self.new_uidnext) + u64::from(self.old_uidnext);
        u32::try_from(c).unwrap_or(u32::MAX)
    }

    fn modseq_offset(&self) -> i128 {
        if self.old_highestmodseq == 0 {
            0
        } else {
            i128::from(self.old_highestmodseq) - i128::from(self.new_highestmodseq)
        }
    }

    /// The MODSEQ a client sees for a store MODSEQ: `max(1, store + offset)`.
    /// Changes after the cutover show above `old_highestmodseq`; never 0.
    pub fn to_client_modseq(&self, store: u64) -> u64 {
        clamp_modseq(i128::from(store) + self.modseq_offset(), 1)
    }

    /// A client's `CHANGEDSINCE` (or QRESYNC known MODSEQ) on the store. A
    /// value from before the cutover becomes 1 (report every message's flags);
    /// from the cutover on it is exact: the store reports what the client
    /// would see change.
    pub fn changedsince_to_store(&self, client: u64) -> u64 {
        if self.old_highestmodseq != 0 && client < self.old_highestmodseq {
            return 1;
        }
        clamp_modseq(i128::from(client) - self.modseq_offset(), 1)
    }

    /// A client's `UNCHANGEDSINCE` on the store: exact, since a message passes
    /// `to_client_modseq(m) <= client` exactly when `m <= client - offset`.
    pub fn unchangedsince_to_store(&self, client: u64) -> u64 {
        if client == 0 {
            return 0;
        }
        clamp_modseq(i128::from(client) - self.modseq_offset(), 0)
    }

    /// The map in its text form (see the module doc).
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(96 + self.runs.len() * 8);
        let _ = write!(
            s,
            "v1 ouv={} oun={} ohm={} nuv={} nun={} nhm={} puv={} runs=",
            self.old_uidvalidity,
            self.old_uidnext,
            self.old_highestmodseq,
            self.new_uidvalidity,
            self.new_uidnext,
            self.new_highestmodseq,
            self.presented_uidvalidity
        );
        let (mut po, mut pn) = (1u32, 1u32);
        for (i, r) in self.runs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_num(&mut s, r.old - po);
            s.push('.');
            push_num(&mut s, r.new - pn);
            s.push('.');
            let _ = write!(s, "{}", r.len);
            po = r.old_end();
            pn = r.new_end();
        }
        if !self.uidls.is_empty() {
            s.push_str(" uidls=");
            for (i, (uid, uidl)) in self.uidls.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{uid}:");
                for b in uidl.bytes() {
                    if b.is_ascii_graphic() && !matches!(b, b',' | b':' | b'%' | b'=') {
                        s.push(char::from(b));
                    } else {
                        let _ = write!(s, "%{b:02X}");
                    }
                }
            }
        }
        s
    }

    /// Reads a map written by [`encode`](Self::encode) (by this or a later
    /// version). Any input gets a map or an error, never a panic.
    pub fn decode(text: &str) -> Result<FolderMap, MapError> {
        let mut fields = text.split_ascii_whitespace();
        match fields.next() {
            Some("v1") => {}
            other => return Err(MapError::Version(cut(other.unwrap_or("")))),
        }
        let mut header: [Option<u64>; 7] = [None; 7];
        const KEYS: [&str; 7] = ["ouv", "oun", "ohm", "nuv", "nun", "nhm", "puv"];
        let mut runs = "";
        let mut uidls = "";
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            if let Some(i) = KEYS.iter().position(|k| *k == key) {
                let v = value.parse::<u64>().map_err(|_| bad(KEYS[i], value))?;
                header[i] = Some(v);
            } else if key == "runs" {
                runs = value;
            } else if key == "uidls" {
                uidls = value;
            }
        }
        let get32 = |i: usize| -> Result<u32, MapError> {
            let v = header[i].ok_or(MapError::Missing(KEYS[i]))?;
            u32::try_from(v).map_err(|_| bad(KEYS[i], &v.to_string()))
        };
        let get64 = |i: usize| header[i].ok_or(MapError::Missing(KEYS[i]));
        let mut map = FolderMap {
            old_uidvalidity: get32(0)?,
            old_uidnext: get32(1)?,
            old_highestmodseq: get64(2)?,
            new_uidvalidity: get32(3)?,
            new_uidnext: get32(4)?,
            new_highestmodseq: get64(5)?,
            presented_uidvalidity: get32(6)?,
            runs: Vec::new(),
            uidls: Vec::new(),
        };
        let (mut po, mut pn) = (1u32, 1u32);
        for run in runs.split(',').filter(|r| !r.is_empty()) {
            let mut parts = run.split('.');
            let (Some(g), Some(h), Some(l), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("runs", run));
            };
            let num = |p: &str| -> Result<u32, MapError> {
                if p.is_empty() {
                    Ok(0)
                } else {
                    p.parse::<u32>().map_err(|_| bad("runs", run))
                }
            };
            let (g, h, l) = (num(g)?, num(h)?, num(l)?);
            if l == 0 {
                return Err(bad("runs", run));
            }
            let old = po.checked_add(g).ok_or_else(|| bad("runs", run))?;
            let new = pn.checked_add(h).ok_or_else(|| bad("runs", run))?;
            if let Some(last) = map.runs.last() {
                // A canonical encoding never leaves two runs adjacent on both sides.
                if old == last.old_end() && new == last.new_end() {
                    return Err(bad("runs", run));
                }
            }
            map.push(old, new, l)?;
            po = old + l;
            pn = new + l;
        }
        map.check_uidnexts()?;
        map.runs.shrink_to_fit();
        for entry in uidls.split(',').filter(|e| !e.is_empty()) {
            let (uid, value) = entry.split_once(':').ok_or_else(|| bad("uidls", entry))?;
            let uid = uid.parse::<u32>().map_err(|_| bad("uidls", entry))?;
            map.uidls
                .push((uid, unescape(value).ok_or_else(|| bad("uidls", entry))?));
        }
        Ok(map)
    }
}

/// A single UID through the runs, or linearly above the UIDNEXTs.
fn lookup(
    runs: &[Run],
    uid: u32,
    from_next: u32,
    to_next: u32,
    from: fn(&Run) -> u32,
    to: fn(&Run) -> u32,
) -> Option<u32> {
    if uid == 0 {
        return None;
    }
    if uid >= from_next {
        let t = u64::from(uid - from_next) + u64::from(to_next);
        return u32::try_from(t).ok();
    }
    let i = runs.partition_point(|r| from(r) + r.len <= uid);
    let r = runs.get(i)?;
    (from(r) <= uid).then(|| to(r) + (uid - from(r)))
}

/// A range through the runs it meets, then the linear part above the
/// UIDNEXTs; contiguous results merged.
fn ranges(
    runs: &[Run],
    lo: u32,
    hi: u32,
    from_next: u32,
    to_next: u32,
    from: fn(&Run) -> u32,
    to: fn(&Run) -> u32,
) -> Vec<(u32, u32)> {
    let lo = lo.max(1);
    let mut out: Vec<(u32, u32)> = Vec::new();
    if lo > hi {
        return out;
    }
    let mut push = |a: u32, b: u32| match out.last_mut() {
        Some(last) if u64::from(last.1) + 1 == u64::from(a) => last.1 = b,
        _ => out.push((a, b)),
    };
    let start = runs.partition_point(|r| from(r) + r.len <= lo);
    for r in runs[start..].iter().take_while(|r| from(r) <= hi) {
        let a = lo.max(from(r));
        let b = hi.min(from(r) + r.len - 1);
        push(to(r) + (a - from(r)), to(r) + (b - from(r)));
    }
    if hi >= from_next {
        let a = u64::from(lo.max(from_next) - from_next) + u64::from(to_next);
        let b = u64::from(hi - from_next) + u64::from(to_next);
        if let Ok(a) = u32::try_from(a) {
            push(a, u32::try_from(b).unwrap_or(u32::MAX));
        }
    }
    out
}

fn clamp_modseq(v: i128, min: u64) -> u64 {
    u64::try_from(v.max(i128::from(min))).unwrap_or(u64::MAX)
}

fn push_num(s: &mut String, n: u32) {
    if n != 0 {
        let _ = write!(s, "{n}");
    }
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

fn bad(key: &'static str, value: &str) -> MapError {
    MapError::BadValue {
        key,
        value: cut(value),
    }
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// All folders of one user on one store, keyed by the store's mailbox name as
/// on the wire (modified UTF-7, the store's hierarchy separator).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMap {
    folders: HashMap<String, Arc<FolderMap>>,
}

impl UserMap {
    /// An empty map (no folder translated).
    pub fn new() -> UserMap {
        UserMap::default()
    }

    /// Adds or replaces one folder's map.
    pub fn insert(&mut self, name: impl Into<String>, map: FolderMap) {
        self.folders.insert(name.into(), Arc::new(map));
    }

    /// The map of the folder `name`, if it is translated.
    pub fn folder(&self, name: &str) -> Option<&Arc<FolderMap>> {
        self.folders.get(name)
    }

    /// Every folder and its map, in no particular order.
    pub fn folders(&self) -> impl Iterator<Item = (&str, &Arc<FolderMap>)> {
        self.folders.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Folders translated.
    pub fn len(&self) -> usize {
        self.folders.len()
    }

    /// No folder translated.
    pub fn is_empty(&self) -> bool {
        self.folders.is_empty()
    }

    /// Messages mapped, over all folders.
    pub fn messages(&self) -> usize {
        self.folders.values().map(|m| m.len()).sum()
    }

    /// Bytes of the encoded maps, over all folders.
    pub fn encoded_bytes(&self) -> usize {
        self.folders.values().map(|m| m.encode().len()).sum()
    }

    /// Bytes in memory, about.
    pub fn memory(&self) -> usize {
        self.folders
            .iter()
            .map(|(k, v)| k.capacity() + v.memory())
            .sum()
    }
}

#[cfg(test)]
mod tests;
