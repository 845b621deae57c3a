//! Phase "copy": whole messages from the source in UID order, appended to
//! the destination with their flags and INTERNALDATE.
//!
//! ```text
//!  intent of batch 1 saved ║ FETCH batch 1 (BODY.PEEK[])
//!  for each batch k:  APPEND k (MULTIAPPEND or pipelined LITERAL+) ║ FETCH k+1
//!                     APPENDUIDs into the map; saved with the intent of k+1
//! ```
//! A batch's intent is on disk before any byte of it reaches the
//! destination, so a crash at any point is recognised later
//! ([`Engine::recognise`]). The last batch's map entries go with the
//! folder's closing save.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::flags::{flag_list, storable};
use super::plan::Opened;
use super::{unix_now, Engine, FolderCtx, FolderReport, Pair2};
use crate::metrics::METRICS;
use crate::migrate::message::{self, uid_set, Listed};
use crate::migrate::state::{Failed, FolderState, Intent};
use crate::migrate::{Error, Event, Reporter};
use crate::store::imap::{Client, Status};

/// Messages per FETCH/APPEND batch.
pub(super) const BATCH_MESSAGES: usize = 200;
/// Bytes per batch: bounds memory, whatever the mailbox.
const BATCH_BYTES: u64 = 16 << 20;

/// Paces copying to `max_bytes_per_second`, across every folder and user this
/// engine copies at once.
pub struct Pacer {
    limit: Option<u64>,
    spent: std::sync::Mutex<(Instant, u64)>,
}

impl Pacer {
    /// A pacer for `limit` bytes per second (none: no pacing).
    pub fn new(limit: Option<u64>) -> Pacer {
        Pacer {
            limit: limit.filter(|l| *l > 0),
            spent: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    pub(super) async fn account(&self, n: u64) {
        let Some(limit) = self.limit else { return };
        let wait = {
            let mut g = self.spent.lock().unwrap_or_else(|p| p.into_inner());
            g.1 += n;
            let due = Duration::from_secs_f64(g.1 as f64 / limit as f64);
            due.saturating_sub(g.0.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What a batch of APPENDs needs to know about the destination folder.
pub(super) struct CopyCtx<'a> {
    pub mailbox: &'a [u8],
    pub validity: u32,
    pub perm: &'a BTreeSet<String>,
    pub any_keyword: bool,
    pub binary: bool,
    pub multi: bool,
    /// The destination's APPENDLIMIT: larger messages are reported, not sent.
    pub append_limit: Option<u64>,
}

/// A batch written to the destination whose replies are still to be read.
pub(super) struct Appending {
    /// One tag for a MULTIAPPEND, or one per message.
    tags: Vec<String>,
    messages: Vec<message::Fetched>,
}

/// The APPEND arguments of one message, or why it cannot be sent.
fn append_args(
    m: &message::Fetched,
    ctx: &CopyCtx<'_>,
    report: &mut FolderReport,
) -> Option<(String, bool)> {
    let (flags, refused) = storable(&m.flags, ctx.perm, ctx.any_keyword);
    report.refused_flags.extend(refused);
    if let Some(limit) = ctx.append_limit.filter(|l| m.body.len() as u64 > *l) {
        report.failed.push(Failed {
            uid: m.uid,
            reason: format!(
                "{} bytes, over the destination's APPENDLIMIT of {limit}",
                m.body.len()
            ),
        });
        return None;
    }
    let nul = m.body.contains(&0);
    if nul && !ctx.binary {
        report.failed.push(Failed {
            uid: m.uid,
            reason: "contains NUL bytes and the destination lacks BINARY".into(),
        });
        return None;
    }
    Some((flag_list(&flags), nul))
}

/// Queues a batch: one MULTIAPPEND (one transaction, one fsync on the store)
/// where offered, else pipelined APPENDs. Nothing is written yet.
fn queue_append(
    dst: &mut Client,
    messages: Vec<message::Fetched>,
    ctx: &mut CopyCtx<'_>,
    report: &mut FolderReport,
) -> Appending {
    let mut sendable = Vec::with_capacity(messages.len());
    let mut args = Vec::with_capacity(messages.len());
    for m in messages {
        if let Some(a) = append_args(&m, ctx, report) {
            args.push(a);
            sendable.push(m);
        }
    }
    let tags = if ctx.multi && sendable.len() > 1 {
        let parts: Vec<(&str, &str, &[u8], bool)> = sendable
            .iter()
            .zip(&args)
            .map(|(m, (flags, nul))| {
                (
                    flags.as_str(),
                    m.internal_date.as_str(),
                    m.body.as_slice(),
                    *nul,
                )
            })
            .collect();
        vec![dst.queue_multiappend(ctx.mailbox, &parts)]
    } else {
        sendable
            .iter()
            .zip(&args)
            .map(|(m, (flags, nul))| {
                dst.queue_append(ctx.mailbox, flags, &m.internal_date, &m.body, *nul)
            })
            .collect()
    };
    Appending {
        tags,
        messages: sendable,
    }
}

/// Queues a batch and writes it; returns without waiting for the replies.
pub(super) async fn start_append(
    dst: &mut Client,
    messages: Vec<message::Fetched>,
    ctx: &mut CopyCtx<'_>,
    report: &mut FolderReport,
) -> Result<Appending, Error> {
    let batch = queue_append(dst, messages, ctx, report);
    dst.flush().await?;
    Ok(batch)
}

/// Fetches whole messages for copying.
pub(super) async fn fetch_batch(
    src: &mut Client,
    uids: &[u32],
) -> Result<Vec<message::Fetched>, Error> {
    let reply = src
        .run(&format!(
            "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
            uid_set(uids)
        ))
        .await?;
    Ok(message::fetched(&reply))
}

/// Reads a batch's replies into the map; returns (messages, bytes) copied. A
/// refused MULTIAPPEND stored nothing (it is atomic): its messages are sent
/// again one by one, so one bad message fails alone.
pub(super) async fn finish_append(
    dst: &mut Client,
    batch: Appending,
    ctx: &mut CopyCtx<'_>,
    st: &mut FolderState,
    report: &mut FolderReport,
) -> Result<(u64, u64), Error> {
    let mut replies = Vec::with_capacity(batch.tags.len());
    for tag in &batch.tags {
        replies.push(dst.reply(tag).await?);
    }
    let single = batch.tags.len() == batch.messages.len();
    if !single {
        let reply = &replies[0];
        if reply.status != Status::Ok {
            let was_multi = ctx.multi;
            ctx.multi = false;
            let retry = start_append(dst, batch.messages, ctx, report).await?;
            let done = Box::pin(finish_append(dst, retry, ctx, st, report)).await;
            ctx.multi = was_multi;
            return done;
        }
        let uids = reply
            .append_uids()
            .filter(|(v, u)| *v == ctx.validity && u.len() == batch.messages.len());
        let Some((_, uids)) = uids else {
            return Err(Error::Unsupported(format!(
                "{}: MULTIAPPEND gave no usable APPENDUID ({})",
                dst.store(),
                reply.text
            )));
        };
        let mut bytes = 0;
        for (m, d) in batch.messages.iter().zip(uids) {
            st.map.insert(m.uid, d);
            bytes += m.body.len() as u64;
        }
        let n = batch.messages.len() as u64;
        report.copied += n;
        report.bytes += bytes;
        return Ok((n, bytes));
    }
    let (mut n, mut bytes) = (0, 0);
    for (m, reply) in batch.messages.iter().zip(&replies) {
        match (reply.status, reply.append_uids()) {
            (Status::Ok, Some((v, uids))) if v == ctx.validity && uids.len() == 1 => {
                st.map.insert(m.uid, uids[0]);
                n += 1;
                bytes += m.body.len() as u64;
            }
            (Status::Ok, _) => {
                return Err(Error::Unsupported(format!(
                    "{}: APPEND gave no usable APPENDUID ({})",
                    dst.store(),
                    reply.text
                )))
            }
            _ => report.failed.push(Failed {
                uid: m.uid,
                reason: reply.text.clone(),
            }),
        }
    }
    report.copied += n;
    report.bytes += bytes;
    Ok((n, bytes))
}

impl Engine {
    /// Copies, in source UID order, in batches bounded in count and bytes.
    /// Earlier failures are not in the map, so they are in `to_copy`: retried.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn copy_messages(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        to_copy: &[&Listed],
        dst: &Opened,
        st: &mut FolderState,
        report: &mut FolderReport,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        st.failed.clear();
        reporter.event(Event::FolderStart {
            user: folder.user.to_string(),
            folder: folder.key.to_string(),
            messages: to_copy.len() as u64,
            bytes: to_copy.iter().map(|m| u64::from(m.size)).sum(),
        });
        let batches = batches(to_copy);
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let mut ctx = CopyCtx {
            mailbox: folder.dst_name,
            validity: dst.sel.validity,
            perm: &dst.perm,
            any_keyword: dst.sel.any_keyword,
            binary: c.dst.has("BINARY"),
            multi: c.dst.has("MULTIAPPEND"),
            append_limit: c.append_limit().await?,
        };
        let ctx = &mut ctx;
        // The intent of each batch is on disk before its bytes leave (the
        // previous batch's save carries it); the source may send meanwhile.
        st.intent = Some(Intent {
            uids: first.clone(),
            since: unix_now(),
            dst_uidnext: 0,
        });
        let (src, dst) = (&mut c.src, &mut c.dst);
        let (saved, fetched) = tokio::join!(
            self.state.save(folder.user, folder.key, st),
            fetch_batch(src, first)
        );
        saved?;
        // While the destination takes in and stores batch k, the source already
        // sends batch k+1: both legs stay busy.
        let mut next = Some(fetched?);
        for k in 0..batches.len() {
            let Some(messages) = next.take() else { break };
            for u in &batches[k] {
                if !messages.iter().any(|m| m.uid == *u) {
                    report.failed.push(Failed {
                        uid: *u,
                        reason: "vanished from the source during the pass".into(),
                    });
                }
            }
            let batch = queue_append(dst, messages, ctx, report);
            let storing = async {
                dst.flush().await?;
                finish_append(dst, batch, ctx, st, report).await
            };
            let fetching = async {
                match batches.get(k + 1) {
                    Some(b) => fetch_batch(src, b).await.map(Some),
                    None => Ok(None),
                }
            };
            let (stored, fetched) = tokio::join!(storing, fetching);
            let done = stored?;
            next = fetched?;
            st.intent = batches.get(k + 1).map(|uids| Intent {
                uids: uids.clone(),
                since: unix_now(),
                dst_uidnext: 0,
            });
            // After the last batch nothing more leaves: its map entries are
            // saved with the folder (one commit fewer per changed folder). A
            // crash before that leaves its intent, and the next pass
            // recognises the copies by fingerprint.
            let save = st.intent.is_some();
            self.after_batch(folder, st, report, reporter, done, save)
                .await?;
        }
        Ok(())
    }

    /// Saves the map after a batch (when `save`), counts it, reports it, paces.
    async fn after_batch(
        &self,
        folder: &FolderCtx<'_>,
        st: &FolderState,
        report: &mut FolderReport,
        reporter: &dyn Reporter,
        (messages, bytes): (u64, u64),
        save: bool,
    ) -> Result<(), Error> {
        METRICS.migration_messages.inc_by(messages);
        METRICS.migration_bytes.inc_by(bytes);
        if save {
            let mut saved = st.clone();
            saved.failed = report.failed.clone();
            self.state.save(folder.user, folder.key, &saved).await?;
        }
        reporter.event(Event::Copied {
            user: folder.user.to_string(),
            folder: folder.key.to_string(),
            messages: report.copied,
            bytes: report.bytes,
        });
        if folder.paced {
            self.pacer.account(bytes).await;
        }
        Ok(())
    }
}

/// Splits the messages to copy into batches bounded in count and bytes.
pub(super) fn batches(to_copy: &[&Listed]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut i = 0;
    while i < to_copy.len() {
        let mut j = i;
        let mut bytes = 0u64;
        while j < to_copy.len()
            && j - i < BATCH_MESSAGES
            && (j == i || bytes + u64::from(to_copy[j].size) <= BATCH_BYTES)
        {
            bytes += u64::from(to_copy[j].size);
            j += 1;
        }
        out.push(to_copy[i..j].iter().map(|m| m.uid).collect());
        i = j;
    }
    out
}
