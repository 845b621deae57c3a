//! Writing the clients' UID maps ([`crate::continuity`]) at the end of a
//! move, inside the hold, after the final pass and before the flip: from the engine's sync state (source UID →
//! destination UID, from APPENDUID or recognised by fingerprint) and both
//! stores' STATUS, composed with the maps the user's clients see now.
//!
//! Per folder:
//! ```text
//!  state + STATUS both ─► monotonic, every destination message mapped? ─► step map
//!  clients see a map now (rollback, move again)?  ─► prior.then(step)
//!  anything that cannot keep the clients' UIDs    ─► FolderMap::fresh (new UIDVALIDITY)
//! ```
//! A rollback writes maps only for folders the clients see translated now;
//! the others get the old store's own UIDs, which no client saw differently.

use std::collections::{BTreeMap, HashMap};

use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::status::StatusDataItem;

use super::pop3_uidls::INBOX;
use super::sync::Engine;
use super::Error;
use crate::continuity::map::{FolderMap, Snapshot, UserMap};
use crate::continuity::stored::{self, Place};
use crate::store::imap::{quoted, Client, Status};

/// What a move wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// Where the maps went.
    pub place: Place,
    /// Folders mapped.
    pub folders: usize,
    /// Messages mapped.
    pub messages: usize,
    /// Folders whose clients resync (a fresh UIDVALIDITY), with why.
    pub fresh: Vec<String>,
    /// Bytes of the encoded maps.
    pub bytes: usize,
}

/// STATUS of several folders, pipelined (one round trip).
async fn statuses(client: &mut Client, names: &[&[u8]]) -> Result<Vec<Option<Snap>>, Error> {
    let condstore = client.has("CONDSTORE");
    let tags: Vec<String> = names
        .iter()
        .map(|name| {
            let mut cmd = b"STATUS ".to_vec();
            cmd.extend_from_slice(&quoted(name));
            cmd.extend_from_slice(if condstore {
                b" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
            } else {
                b" (MESSAGES UIDNEXT UIDVALIDITY)"
            });
            client.queue(&cmd)
        })
        .collect();
    client.flush().await?;
    let mut out = Vec::with_capacity(tags.len());
    for tag in tags {
        let reply = client.reply(&tag).await?;
        if reply.status != Status::Ok {
            out.push(None);
            continue;
        }
        let mut s = Snap::default();
        for d in reply.data() {
            if let Data::Status { items, .. } = d {
                for item in items.iter() {
                    match item {
                        StatusDataItem::Messages(n) => s.messages = *n,
                        StatusDataItem::UidNext(n) => s.snap.uidnext = n.get(),
                        StatusDataItem::UidValidity(n) => s.snap.uidvalidity = n.get(),
                        StatusDataItem::HighestModSeq(n) => s.snap.highestmodseq = *n,
                        _ => {}
                    }
                }
            }
        }
        out.push(Some(s));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct Snap {
    snap: Snapshot,
    messages: u32,
}

impl Default for Snap {
    fn default() -> Self {
        Snap {
            snap: Snapshot {
                uidvalidity: 0,
                uidnext: 1,
                highestmodseq: 0,
            },
            messages: 0,
        }
    }
}

/// The UIDs of several folders (EXAMINE + UID SEARCH ALL each), pipelined;
/// the connection is back in the authenticated state after.
async fn uid_lists(client: &mut Client, names: &[&[u8]]) -> Result<Vec<Option<Vec<u32>>>, Error> {
    let mut tags = Vec::with_capacity(names.len());
    for name in names {
        let mut cmd = b"EXAMINE ".to_vec();
        cmd.extend_from_slice(&quoted(name));
        let examine = client.queue(&cmd);
        tags.push((examine, client.queue(b"UID SEARCH ALL")));
    }
    client.flush().await?;
    let mut out = Vec::with_capacity(names.len());
    for (examine, search) in tags {
        let opened = client.reply(&examine).await?.status == Status::Ok;
        let reply = client.reply(&search).await?;
        if !opened || reply.status != Status::Ok {
            out.push(None);
            continue;
        }
        let mut uids: Vec<u32> = reply
            .untagged
            .iter()
            .filter_map(|u| {
                let text = u.text();
                let upper = text.get(..9)?.to_ascii_uppercase();
                (upper == "* SEARCH " || upper == "* SEARCH").then(|| {
                    text[8..]
                        .split_ascii_whitespace()
                        .filter_map(|w| w.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
            })
            .flatten()
            .collect();
        uids.sort_unstable();
        out.push(Some(uids));
    }
    if !names.is_empty() {
        let cmd = if client.has("UNSELECT") {
            "UNSELECT"
        } else {
            "CLOSE"
        };
        client.run(cmd).await?;
    }
    Ok(out)
}

/// The map a rollback leaves on the old store: every message there gets the
/// UID the clients know it by through `f` (the map they see on the new
/// store). `back` is the rollback's sync state, new UID → old UID;
/// `old_uids` the old store's messages now; `new` and `old` the two stores'
/// STATUS.
///
/// A message the rollback did not copy (deleted on the new store after the
/// cutover, so clients were told it is gone) keeps its old UID as its client
/// UID, but only where `f` is a plain map of this old store (every copied
/// message below `f.old_uidnext` has its old UID as client UID) and no
/// message on the new store has that client UID. Anything else is an error:
/// the caller presents a fresh UIDVALIDITY.
pub fn rollback_map(
    f: &FolderMap,
    back: &BTreeMap<u32, u32>,
    old_uids: &[u32],
    new: Snapshot,
    old: Snapshot,
) -> Result<FolderMap, String> {
    let inverse: HashMap<u32, u32> = back.iter().map(|(n, o)| (*o, *n)).collect();
    let direct = inverse
        .iter()
        .filter(|(o, _)| **o < f.old_uidnext)
        .all(|(o, n)| f.to_client_uid(*n) == Some(*o));
    let mut pairs = Vec::with_capacity(old_uids.len());
    for &u in old_uids {
        let c = match inverse.get(&u) {
            Some(&s) => f
                .to_client_uid(s)
                .ok_or_else(|| format!("new UID {s} has no client UID"))?,
            None if direct
                && u < f.old_uidnext
                && f.to_store_uid(u).is_none_or(|s| !back.contains_key(&s)) =>
            {
                u
            }
            None => return Err(format!("old UID {u} is a message clients never saw")),
        };
        pairs.push((c, u));
    }
    pairs.sort_unstable();
    let client = Snapshot {
        uidvalidity: f.old_uidvalidity,
        uidnext: f.client_uidnext(new.uidnext),
        highestmodseq: if f.old_highestmodseq == 0 {
            0
        } else {
            f.to_client_modseq(new.highestmodseq)
        },
    };
    let mut map = FolderMap::new(client, old, pairs).map_err(|e| e.to_string())?;
    map.presented_uidvalidity = f.presented_uidvalidity;
    map.uidls = f.uidls.clone();
    Ok(map)
}

/// The old store's POP3 UIDLs of the messages `st` maps (read by the
/// passes, [`super::pop3_uidls`]), by client UID: the source UID in a first
/// move, the store's own in a `fresh` map (POP3 clients keep their UIDLs
/// even where IMAP clients resync). Unreadable, none: POP3 clients then get
/// the computed UIDLs, and the IMAP clients' maps are still written.
async fn read_uidls(
    engine: &Engine,
    user: &str,
    st: &super::state::FolderState,
    fresh: bool,
) -> Vec<(u32, String)> {
    match engine.state.pop3_uidls(user, INBOX).await {
        Ok(known) => known.of_copies(st, fresh),
        Err(e) => {
            tracing::warn!(user, error = %e, "POP3 UIDLs unreadable; the maps carry none");
            Vec::new()
        }
    }
}

/// A UIDVALIDITY above every one clients were shown for the folder, so a
/// fresh map never reuses one.
fn fresh_uidvalidity(seen: &[u32]) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    let above = seen.iter().max().map_or(1, |m| m.saturating_add(1));
    now.max(above).max(1)
}

/// Builds the maps of `user`'s move by `engine` (after its final pass) and
/// writes them to the destination. `prior`: the maps the user's clients see
/// now, from the source store (None: they see the source's own UIDs).
/// `back`: a rollback (only folders `prior` translates get a map). Returns
/// `None` when no folder needs a map.
pub async fn at_cutover(
    engine: &Engine,
    user: &str,
    password: Option<&[u8]>,
    prior: Option<&UserMap>,
    back: bool,
) -> Result<Option<Written>, Error> {
    let mut pair = engine.connect(user, password).await?;
    let result = async {
        // The plan never holds the hidden map folder (folders::plan).
        let plan = engine.plan(&mut pair).await?;
        let src_names: Vec<&[u8]> = plan.iter().map(|p| p.src.name.as_slice()).collect();
        let dst_names: Vec<&[u8]> = plan.iter().map(|p| p.dst.as_slice()).collect();
        let src = statuses(&mut pair.src, &src_names).await?;
        let dst = statuses(&mut pair.dst, &dst_names).await?;
        // A rollback needs the old store's messages of the folders the
        // clients see translated.
        let listed: Vec<&[u8]> = plan
            .iter()
            .filter(|p| {
                back && prior.is_some_and(|u| u.folder(&String::from_utf8_lossy(&p.src.name)).is_some())
            })
            .map(|p| p.dst.as_slice())
            .collect();
        let lists = uid_lists(&mut pair.dst, &listed).await?;
        let mut old_uids: HashMap<&[u8], Option<Vec<u32>>> =
            listed.iter().copied().zip(lists).collect();
        let mut maps = Vec::new();
        let mut fresh = Vec::new();
        for ((p, s), d) in plan.iter().zip(src).zip(dst) {
            let name = String::from_utf8_lossy(&p.src.name).into_owned();
            let before = prior.and_then(|u| u.folder(&name));
            if back && before.is_none() {
                continue;
            }
            let Some(d) = d else {
                continue; // not on the destination: nothing to present
            };
            let st = engine
                .state
                .load(user, &p.src.display())?;
            let step = match s {
                Some(s) if back => match (before, old_uids.remove(p.dst.as_slice()).flatten()) {
                    (Some(f), Some(uids))
                        if f.new_uidvalidity == s.snap.uidvalidity
                            && st.src_validity == s.snap.uidvalidity
                            && st.dst_validity == d.snap.uidvalidity
                            && d.messages as usize == uids.len() =>
                    {
                        rollback_map(f, &st.map, &uids, s.snap, d.snap)
                    }
                    _ => Err("the old folder changed under the rollback".to_string()),
                },
                Some(s)
                    if st.src_validity == s.snap.uidvalidity
                        && st.dst_validity == d.snap.uidvalidity
                        && d.messages as usize == st.map.len() =>
                {
                    let old = Snapshot {
                        uidnext: s.snap.uidnext.max(st.src_uidnext),
                        ..s.snap
                    };
                    FolderMap::new(old, d.snap, st.map.iter().map(|(a, b)| (*a, *b)))
                        .map_err(|e| e.to_string())
                }
                Some(_) => Err("the sync state does not cover every message".to_string()),
                None => Err("the source folder is gone".to_string()),
            };
            let map = match (before, step) {
                (Some(_), step) if back => step,
                (Some(b), Ok(step)) if s.is_some_and(|s| b.new_uidvalidity == s.snap.uidvalidity) => {
                    b.then(&step).map_err(|e| e.to_string())
                }
                (Some(_), Ok(_)) => Err("the map clients see is for an older folder".to_string()),
                (None, step) => step,
                (Some(_), Err(e)) => Err(e),
            };
            let mut map = match map {
                Ok(m) => m,
                Err(why) => {
                    let mut seen = vec![d.snap.uidvalidity];
                    seen.extend(s.map(|s| s.snap.uidvalidity));
                    seen.extend(before.map(|b| b.presented_uidvalidity));
                    tracing::warn!(user, folder = %name, reason = %why, "UIDs cannot be kept; clients resync this folder");
                    fresh.push(format!("{name}: {why}"));
                    FolderMap::fresh(d.snap, fresh_uidvalidity(&seen))
                }
            };
            if engine.reads_pop3_uidls
                && before.is_none()
                && p.src.name.eq_ignore_ascii_case(INBOX.as_bytes())
            {
                map.uidls = read_uidls(engine, user, &st, map.is_fresh()).await;
            }
            maps.push((p.dst.clone(), map));
        }
        if maps.is_empty() {
            return Ok(None);
        }
        let place = stored::save(&mut pair.dst, &maps).await?;
        Ok(Some(Written {
            place,
            folders: maps.len(),
            messages: maps.iter().map(|(_, m)| m.len()).sum(),
            fresh,
            bytes: maps.iter().map(|(_, m)| m.encode().len()).sum(),
        }))
    }
    .await;
    engine.state.close(user);
    tokio::join!(pair.src.logout(), pair.dst.logout());
    result
}

/// Reads the maps on a move's source (what the user's clients see now).
pub async fn prior(
    engine: &Engine,
    user: &str,
    password: Option<&[u8]>,
) -> Result<Option<UserMap>, Error> {
    let mut pair = engine.connect(user, password).await?;
    let maps = stored::load(&mut pair.src).await;
    tokio::join!(pair.src.logout(), pair.dst.logout());
    Ok(maps?)
}

/// Per-folder sizes, for logs.
pub fn sizes(maps: &UserMap) -> HashMap<String, usize> {
    maps.folders()
        .map(|(k, v)| (k.to_string(), v.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(uidvalidity: u32, uidnext: u32, highestmodseq: u64) -> Snapshot {
        Snapshot {
            uidvalidity,
            uidnext,
            highestmodseq,
        }
    }

    /// Old 1..=10 without 2 and 4 was copied to new 1..=8. After the cutover
    /// new mail came (new 9, 10, presented 11, 12), new 3 (old 5) was
    /// deleted; two messages swept off the old store used old 11 and 12.
    /// The rollback copies new 9 and 10 to old 13 and 14.
    fn world() -> (FolderMap, BTreeMap<u32, u32>, Vec<u32>) {
        let olds = [1u32, 3, 5, 6, 7, 8, 9, 10];
        let f = FolderMap::new(
            snap(500, 11, 100),
            snap(900, 9, 40),
            olds.iter().enumerate().map(|(i, o)| (*o, i as u32 + 1)),
        )
        .expect("valid map");
        let mut back = BTreeMap::new();
        for (i, o) in olds.iter().enumerate() {
            let s = i as u32 + 1;
            if s != 3 {
                back.insert(s, *o);
            }
        }
        back.insert(9, 13);
        back.insert(10, 14);
        let on_old: Vec<u32> = [1, 3, 5, 6, 7, 8, 9, 10, 13, 14].to_vec();
        (f, back, on_old)
    }

    #[test]
    fn after_a_rollback_every_uid_a_client_saw_names_the_same_message() {
        let (f, back, on_old) = world();
        let r = rollback_map(&f, &back, &on_old, snap(900, 11, 60), snap(500, 15, 130))
            .expect("representable");
        assert_eq!(r.presented_uidvalidity, 500);
        assert!(!r.is_fresh());
        for (s, o) in &back {
            let c = f.to_client_uid(*s).expect("client UID");
            assert_eq!(r.to_store_uid(c), Some(*o), "client {c}");
        }
        // The message deleted on the new store keeps its UID (same message).
        assert_eq!(r.to_store_uid(5), Some(5));
        // Mail after the rollback continues above what clients saw.
        assert_eq!(r.client_uidnext(15), f.client_uidnext(11));
        assert_eq!(r.to_client_uid(15), Some(13));
        assert!(r.to_client_modseq(131) > f.to_client_modseq(60));
    }

    #[test]
    fn a_message_clients_never_saw_makes_the_folder_fresh() {
        let (f, back, mut on_old) = world();
        on_old.push(11); // delivered to the old store, never swept
        assert!(rollback_map(&f, &back, &on_old, snap(900, 11, 60), snap(500, 15, 130)).is_err());
    }

    #[test]
    fn fresh_uidvalidities_are_above_everything_shown() {
        assert!(fresh_uidvalidity(&[5, u32::MAX - 1]) == u32::MAX);
        assert!(fresh_uidvalidity(&[1]) > 1_700_000_000);
    }
}
