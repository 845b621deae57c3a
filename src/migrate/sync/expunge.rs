//! Phase "expunge mirror": what the source expunged since the last pass goes
//! from the destination too — only mailshift's own copies (those in the UID
//! map), and at most `max_deletes` per pass without `--force`.

use std::collections::HashSet;

use super::{Engine, FolderCtx, FolderReport, Pair2};
use crate::migrate::message::uid_set;
use crate::migrate::state::FolderState;
use crate::migrate::Error;
use crate::store::imap::Client;

impl Engine {
    /// Expunged on the source: delete our copies (never anything else), at
    /// most `max_deletes` without `--force`.
    pub(super) async fn mirror_expunges(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        st: &mut FolderState,
        report: &mut FolderReport,
    ) -> Result<(), Error> {
        let gone: Vec<u32> = st
            .map
            .iter()
            .filter(|(s, _)| !folder.src_by_uid.contains_key(s))
            .map(|(_, d)| *d)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        if gone.len() > self.opts.max_deletes && !self.opts.force {
            report.deletions_held_back = gone.len() as u64;
            tracing::warn!(folder = %folder.key, would_delete = gone.len(), cap = self.opts.max_deletes, "deletions held back (use --force)");
            return Ok(());
        }
        report.deleted = gone.len() as u64;
        if self.opts.dry_run {
            return Ok(());
        }
        expunge_uids(&mut c.dst, gone.clone()).await?;
        let gone: HashSet<u32> = gone.into_iter().collect();
        st.map.retain(|_, d| !gone.contains(d));
        self.state.save(folder.user, folder.key, st).await?;
        Ok(())
    }
}

/// Removes destination messages by UID (the caller proves they are ours).
pub(super) async fn expunge_uids(dst: &mut Client, mut uids: Vec<u32>) -> Result<(), Error> {
    uids.sort_unstable();
    for chunk in uids.chunks(1000) {
        let set = uid_set(chunk);
        dst.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
            .await?;
        dst.run(&format!("UID EXPUNGE {set}")).await?;
    }
    Ok(())
}
