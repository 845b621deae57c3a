//! After cutover: mail that still reached the old store (a session not
//! closed in time, an MTA that did not ask LDAP again) is moved to the new
//! one — copied, recorded, then removed from the old store. Only messages
//! newer than the final pass are touched.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tracing::Instrument;

use super::copy::{finish_append, start_append, CopyCtx, BATCH_MESSAGES};
use super::plan::{list_messages, selected};
use super::recognise::{fingerprint, settle};
use super::{unix_now, Engine, FolderReport, Pair2};
use crate::metrics::METRICS;
use crate::migrate::folders::Pair;
use crate::migrate::message::{self, uid_set, Fingerprint, Listed};
use crate::migrate::state::{FolderState, Intent};
use crate::migrate::Error;
use crate::store::imap::{quoted, Status};

impl Engine {
    /// After cutover: moves mail that still reached the old INBOX directly
    /// (not through mailshift) to the new INBOX — copied, recorded, then removed
    /// from the old store. Only messages newer than the final pass are touched:
    /// what the user deleted on the new store is never brought back.
    pub async fn sweep_inbox(&self, user: &str) -> Result<u64, Error> {
        self.sweep(user, false).await
    }

    /// The sweep, of INBOX only or of every folder (`all_folders`): right
    /// after a cutover a session that was not closed in time (a proxy whose
    /// directory follower was reconnecting) may have appended to any folder
    /// of the old store.
    pub async fn sweep(&self, user: &str, all_folders: bool) -> Result<u64, Error> {
        let span = self.span(user, "sweep");
        let result = async {
            let mut c = self.connect(user, None).await?;
            let plan = self.plan(&mut c).await?;
            let mut moved = 0;
            for pair in plan
                .iter()
                .filter(|p| all_folders || p.src.name.eq_ignore_ascii_case(b"INBOX"))
            {
                moved += self.sweep_folder(user, &mut c, pair).await?;
            }
            tokio::join!(c.src.logout(), c.dst.logout());
            Ok(moved)
        }
        .instrument(span)
        .await;
        self.state.close(user);
        result
    }

    async fn sweep_folder(&self, user: &str, c: &mut Pair2, pair: &Pair) -> Result<u64, Error> {
        let key = pair.src.display();
        let mut st = self.state.load_async(user, &key).await?;
        if st.src_uidnext == 0 || pair.create {
            return Ok(0); // never migrated: nothing to sweep against
        }
        let mut select = b"SELECT ".to_vec();
        select.extend_from_slice(&quoted(&pair.src.name));
        let reply = c.src.run_status(&select).await?;
        if reply.status != Status::Ok {
            return Ok(0);
        }
        let (src_sel, _) = selected(&reply);
        if src_sel.validity != st.src_validity || src_sel.uidnext <= st.src_uidnext {
            return Ok(0);
        }
        // `n:*` also returns the last message when it is below n: filter.
        let listed = message::listing(
            &c.src
                .run(&format!(
                    "UID FETCH {}:* (UID FLAGS RFC822.SIZE)",
                    st.src_uidnext
                ))
                .await?,
        );
        // Copied by a sweep that died before removing them from the old store.
        let mut moved: Vec<u32> = listed
            .iter()
            .map(|m| m.uid)
            .filter(|u| *u >= st.src_uidnext && st.map.contains_key(u))
            .collect();
        let mut fresh: Vec<u32> = listed
            .iter()
            .map(|m| m.uid)
            .filter(|u| *u >= st.src_uidnext && !st.map.contains_key(u))
            .collect();
        if fresh.is_empty() && moved.is_empty() {
            return Ok(0);
        }
        let mut select = b"SELECT ".to_vec();
        select.extend_from_slice(&quoted(&pair.dst));
        let reply = c.dst.run_status(&select).await?;
        let (dst_sel, perm) = selected(&reply);
        if reply.status != Status::Ok || dst_sel.validity != st.dst_validity {
            return Err(Error::Unsupported(format!(
                "{user}: the new {}'s UIDVALIDITY changed; not sweeping it",
                String::from_utf8_lossy(&pair.dst)
            )));
        }
        if let Some(intent) = st.intent.take() {
            // A sweep died with a batch in flight: whatever of it the new
            // store committed (even after the death) is recognised, not
            // copied again.
            let pending: Vec<u32> = fresh
                .iter()
                .copied()
                .filter(|u| intent.uids.contains(u))
                .collect();
            let landed = recover_intent(c, &st, &intent, &pending, self.opts.settle).await?;
            for (s, d) in landed {
                st.map.insert(s, d);
                moved.push(s);
            }
            fresh.retain(|u| !st.map.contains_key(u));
            self.state.save(user, &key, &st).await?;
        }
        if !fresh.is_empty() {
            // Another instance may have cut this user over and swept already,
            // or this instance's state predates the cutover: what the new
            // folder holds already is recognised, never copied again.
            let known = already_in_folder(c, &st, &listed, &fresh, dst_sel.exists).await?;
            for (s, d) in known {
                st.map.insert(s, d);
                moved.push(s);
            }
            fresh.retain(|u| !st.map.contains_key(u));
            self.state.save(user, &key, &st).await?;
        }
        let mut report = FolderReport::default();
        let mut ctx = CopyCtx {
            mailbox: &pair.dst,
            validity: dst_sel.validity,
            perm: &perm,
            any_keyword: dst_sel.any_keyword,
            binary: c.dst.has("BINARY"),
            multi: c.dst.has("MULTIAPPEND"),
            append_limit: c.append_limit().await?,
        };
        for chunk in fresh.chunks(BATCH_MESSAGES) {
            let reply = c
                .src
                .run(&format!(
                    "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
                    uid_set(chunk)
                ))
                .await?;
            st.intent = Some(Intent {
                uids: chunk.to_vec(),
                since: unix_now(),
                dst_uidnext: dst_sel.uidnext,
            });
            self.state.save(user, &key, &st).await?;
            let batch =
                start_append(&mut c.dst, message::fetched(&reply), &mut ctx, &mut report).await?;
            let before: HashSet<u32> = st.map.keys().copied().collect();
            finish_append(&mut c.dst, batch, &mut ctx, &mut st, &mut report).await?;
            st.intent = None;
            // Recorded before anything is removed: a crash here leaves a copy
            // on both stores, never none.
            self.state.save(user, &key, &st).await?;
            moved.extend(st.map.keys().copied().filter(|u| !before.contains(u)));
        }
        if !moved.is_empty() {
            moved.sort_unstable();
            let set = uid_set(&moved);
            c.src
                .run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
                .await?;
            c.src.run(&format!("UID EXPUNGE {set}")).await?;
            for u in &moved {
                st.map.remove(u);
            }
            st.src_uidnext = src_sel.uidnext;
            self.state.save(user, &key, &st).await?;
            METRICS.migration_messages.inc_by(moved.len() as u64);
        }
        Ok(moved.len() as u64)
    }
}

/// For the sweep: matches the batch `intent` left by a sweep that died
/// (source UIDs `pending`) against what reached the new folder since, waiting
/// for late commits until `[migration] settle` after it was sent.
async fn recover_intent(
    c: &mut Pair2,
    st: &FolderState,
    intent: &Intent,
    pending: &[u32],
    wait: Duration,
) -> Result<Vec<(u32, u32)>, Error> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let from = intent.dst_uidnext.max(1);
    let mapped: HashSet<u32> = st.map.values().copied().collect();
    let candidates: Vec<u32> =
        message::listing(&c.dst.run(&format!("UID FETCH {from}:* (UID)")).await?)
            .into_iter()
            .map(|m| m.uid)
            .filter(|u| *u >= from && !mapped.contains(u))
            .collect();
    let mut waiting: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
    for (uid, fp) in fingerprint(&mut c.src, pending).await? {
        waiting.entry(fp).or_default().push(uid);
    }
    let mut landed = Vec::new();
    for (d, fp) in fingerprint(&mut c.dst, &candidates).await? {
        if let Some(uid) = waiting
            .get_mut(&fp)
            .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
        {
            landed.push((uid, d));
        }
    }
    let last = candidates.iter().copied().max().unwrap_or(from - 1);
    landed.extend(settle(&mut c.dst, &mut waiting, last, intent.since, wait).await?);
    Ok(landed)
}

/// For the sweep: which of the `fresh` old-folder messages the new folder
/// holds already (same fingerprint, not mapped to anything else). Only
/// destination messages of a size some fresh message has are fingerprinted.
async fn already_in_folder(
    c: &mut Pair2,
    st: &FolderState,
    listed: &[Listed],
    fresh: &[u32],
    dst_exists: u32,
) -> Result<Vec<(u32, u32)>, Error> {
    let fresh_set: HashSet<u32> = fresh.iter().copied().collect();
    let sizes: HashSet<u32> = listed
        .iter()
        .filter(|m| fresh_set.contains(&m.uid))
        .map(|m| m.size)
        .collect();
    let mapped: HashSet<u32> = st.map.values().copied().collect();
    let candidates: Vec<u32> = list_messages(&mut c.dst, dst_exists, true)
        .await?
        .into_iter()
        .filter(|m| sizes.contains(&m.size) && !mapped.contains(&m.uid))
        .map(|m| m.uid)
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut pool: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
    for (d, fp) in fingerprint(&mut c.dst, &candidates).await? {
        pool.entry(fp).or_default().push(d);
    }
    let mut known = Vec::new();
    for (s, fp) in fingerprint(&mut c.src, fresh).await? {
        if let Some(d) = pool
            .get_mut(&fp)
            .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
        {
            known.push((s, d));
        }
    }
    Ok(known)
}
