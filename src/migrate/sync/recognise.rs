//! Phase "fingerprint match": recognising what the destination holds
//! already, so nothing is copied twice whatever crashed before (see
//! [`Engine::recognise`]). A fingerprint is (Message-ID, INTERNALDATE, size,
//! hash of the header block): [`crate::migrate::message::Fingerprint`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::expunge::expunge_uids;
use super::{refused, unix_now, Engine, FolderCtx, FolderReport, Pair2};
use crate::migrate::message::{self, uid_set, Fingerprint, Listed};
use crate::migrate::state::{FolderState, Ghost};
use crate::migrate::Error;
use crate::store::imap::Client;
use crate::store::StoreError;

/// How long a [`Ghost`] is kept: far beyond any relay's buffering.
const GHOST_TTL: Duration = Duration::from_secs(24 * 3600);

/// UIDs per fingerprint FETCH.
const FINGERPRINT_CHUNK: usize = 500;

/// Fingerprints of messages by UID: every chunk's FETCH written at once, the
/// replies read after (one round trip).
pub(super) async fn fingerprint(
    c: &mut Client,
    uids: &[u32],
) -> Result<Vec<(u32, Fingerprint)>, StoreError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let tags: Vec<String> = uids
        .chunks(FINGERPRINT_CHUNK)
        .map(|chunk| {
            c.queue(
                format!(
                    "UID FETCH {} (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])",
                    uid_set(chunk)
                )
                .as_bytes(),
            )
        })
        .collect();
    c.flush().await?;
    let mut out = Vec::new();
    for tag in tags {
        let reply = c.reply(&tag).await?;
        let reply = refused(c, "UID FETCH", reply)?;
        out.extend(message::fingerprints(&reply));
    }
    Ok(out)
}

impl Engine {
    /// Recognises what is already on the destination, so nothing is copied
    /// twice, whatever crashed before:
    ///
    /// - unmapped destination messages are matched to source messages still
    ///   to copy by fingerprint (a crash between APPEND and saving the map, or
    ///   a lost state store);
    /// - a batch whose intent is still recorded may be committed by the
    ///   destination *after* its sender died (a relay in front of the store
    ///   had accepted the bytes): until `[migration] settle` after it was sent, this pass
    ///   waits for those messages to land and matches them as they do, rather
    ///   than copy them again;
    /// - what is copied again once the wait is over is remembered as a
    ///   [`Ghost`]: should the earlier copy land after all, a later pass finds
    ///   it unmapped with the fingerprint of a mapped message and removes it.
    ///   The intent proves that copy is mailshift's own; nothing else on the
    ///   destination is ever removed.
    ///
    /// Why intents rather than only reconciling at the end of a pass: a late
    /// commit can come after any check a pass makes, so the pass must know
    /// what may still arrive, and only a record written before the bytes left
    /// can say so (and prove whose copy it is).
    pub(super) async fn recognise(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        st: &mut FolderState,
        to_copy: &mut Vec<&Listed>,
        report: &mut FolderReport,
    ) -> Result<(), Error> {
        let now = unix_now();
        st.ghosts.retain(|g| {
            now.saturating_sub(g.since) < GHOST_TTL.as_secs()
                && folder.src_by_uid.contains_key(&g.uid)
        });
        let intent = st.intent.take();
        let mapped_dst: HashSet<u32> = st.map.values().copied().collect();
        let foreign: HashSet<u32> = st.foreign.iter().copied().collect();
        let mut candidates: Vec<u32> = folder
            .dst_by_uid
            .keys()
            .copied()
            .filter(|u| !mapped_dst.contains(u) && (!foreign.contains(u) || !st.ghosts.is_empty()))
            .collect();
        candidates.sort_unstable();
        let need_match = !to_copy.is_empty() && !candidates.is_empty();
        let need_ghosts = !st.ghosts.is_empty() && !candidates.is_empty();
        let src_uids: Vec<u32> = if need_match || intent.is_some() {
            to_copy.iter().map(|m| m.uid).collect()
        } else {
            Vec::new()
        };
        let dst_uids: &[u32] = if need_match || need_ghosts {
            &candidates
        } else {
            &[]
        };
        // Both legs at once.
        let (src_fp, dst_fp) = tokio::join!(
            fingerprint(&mut c.src, &src_uids),
            fingerprint(&mut c.dst, dst_uids)
        );
        let (src_fp, dst_fp) = (src_fp?, dst_fp?);
        let mut matched = HashSet::new();
        if need_match || need_ghosts {
            let mut pool: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
            for (uid, fp) in dst_fp {
                pool.entry(fp).or_default().push(uid);
            }
            for (uid, fp) in &src_fp {
                if let Some(d) = pool
                    .get_mut(fp)
                    .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
                {
                    st.map.insert(*uid, d);
                    matched.insert(*uid);
                }
            }
            // Late copies of messages that were copied again: ours, removed.
            let mut late = Vec::new();
            st.ghosts.retain(|g| {
                if !st.map.contains_key(&g.uid) {
                    return true;
                }
                match pool.get_mut(&g.fingerprint).and_then(|l| l.pop()) {
                    Some(d) => {
                        late.push(d);
                        false
                    }
                    None => true,
                }
            });
            if !late.is_empty() && !self.opts.dry_run {
                tracing::warn!(folder = %folder.key, removed = late.len(), "a copy sent before a crash landed late; removed the duplicate");
                report.deleted += late.len() as u64;
                expunge_uids(&mut c.dst, late).await?;
            }
            // Foreign: neither ours nor matched (an admin's, a user's); kept
            // out of later matching unless a ghost needs them.
            let checked: HashSet<u32> = candidates.iter().copied().collect();
            st.foreign.retain(|d| !checked.contains(d));
            st.foreign.extend(pool.into_values().flatten());
            st.foreign.sort_unstable();
        }
        report.matched = matched.len() as u64;
        to_copy.retain(|m| !matched.contains(&m.uid));

        if let Some(intent) = intent.filter(|_| !self.opts.dry_run) {
            let in_flight: HashSet<u32> = intent.uids.iter().copied().collect();
            let mut waiting: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
            for (uid, fp) in &src_fp {
                if in_flight.contains(uid) && !matched.contains(uid) {
                    waiting.entry(fp.clone()).or_default().push(*uid);
                }
            }
            let last = folder.dst_by_uid.keys().copied().max().unwrap_or(0);
            let landed = settle(
                &mut c.dst,
                &mut waiting,
                last,
                intent.since,
                self.opts.settle,
            )
            .await?;
            for (uid, d) in &landed {
                st.map.insert(*uid, *d);
            }
            report.matched += landed.len() as u64;
            to_copy.retain(|m| !landed.iter().any(|(u, _)| *u == m.uid));
            for (fp, uids) in waiting {
                for uid in uids {
                    st.ghosts.push(Ghost {
                        uid,
                        fingerprint: fp.clone(),
                        since: intent.since,
                    });
                }
            }
        }
        // Saved with the first batch's intent (before any byte of it leaves)
        // or at the end of the folder: one commit fewer per changed folder
        // inside a cutover's hold. Lost by a crash, this is found again.
        Ok(())
    }
}

/// Waits, until `since + wait`, for messages of a batch sent before a crash
/// to land on the (selected) destination, matching each arrival above `last`
/// by fingerprint. Returns (source UID, destination UID) for those that did;
/// what is still `waiting` did not land in time.
pub(super) async fn settle(
    dst: &mut Client,
    waiting: &mut BTreeMap<Fingerprint, Vec<u32>>,
    mut last: u32,
    since: u64,
    wait: Duration,
) -> Result<Vec<(u32, u32)>, Error> {
    let mut landed = Vec::new();
    let deadline = since.saturating_add(wait.as_secs());
    while waiting.values().any(|v| !v.is_empty()) && unix_now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        dst.run("NOOP").await?;
        // `n:*` also returns the last message when it is below n: filter.
        let fresh: Vec<u32> =
            message::listing(&dst.run(&format!("UID FETCH {}:* (UID)", last + 1)).await?)
                .into_iter()
                .map(|m| m.uid)
                .filter(|u| *u > last)
                .collect();
        let Some(max) = fresh.iter().copied().max() else {
            continue;
        };
        last = max;
        for (d, fp) in fingerprint(dst, &fresh).await? {
            if let Some(uid) = waiting
                .get_mut(&fp)
                .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
            {
                landed.push((uid, d));
            }
        }
    }
    waiting.retain(|_, v| !v.is_empty());
    if !landed.is_empty() {
        tracing::info!(
            landed = landed.len(),
            still_missing = waiting.values().map(Vec::len).sum::<usize>(),
            "messages sent before a crash landed late; recognised, not copied again"
        );
    }
    Ok(landed)
}
