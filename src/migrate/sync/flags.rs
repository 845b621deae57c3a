//! Phase "flags": the source's flags onto the copies, as far as the
//! destination stores them (PERMANENTFLAGS). Each differing message gets one
//! `UID STORE ... FLAGS.SILENT`, queued behind each other; the caller writes
//! them together with the folder's closing STATUS (one round trip).

use std::collections::BTreeSet;

use super::plan::Opened;
use super::{FolderCtx, FolderReport};
use crate::migrate::state::FolderState;
use crate::store::imap::Client;

/// Flags the destination can store: system flags it lists, keywords when it
/// allows new ones (or lists them).
pub(super) fn storable(
    flags: &BTreeSet<String>,
    perm: &BTreeSet<String>,
    any_keyword: bool,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keep = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for f in flags {
        let system = f.starts_with('\\');
        if perm.contains(f) || (!system && any_keyword) {
            keep.insert(f.clone());
        } else {
            refused.insert(f.clone());
        }
    }
    (keep, refused)
}

pub(super) fn flag_list(flags: &BTreeSet<String>) -> String {
    flags.iter().cloned().collect::<Vec<_>>().join(" ")
}

/// Queues a STORE for every mapped message whose flags differ; returns the
/// tags (nothing is written yet).
pub(super) fn queue_flag_changes(
    dst: &mut Client,
    folder: &FolderCtx<'_>,
    st: &FolderState,
    opened: &Opened,
    report: &mut FolderReport,
) -> Vec<String> {
    let (perm, any_keyword) = (&opened.perm, opened.sel.any_keyword);
    let mut stores = Vec::new();
    for (s, d) in &st.map {
        let (Some(sm), Some(dm)) = (folder.src_by_uid.get(s), folder.dst_by_uid.get(d)) else {
            continue;
        };
        let (want, refused) = storable(&sm.flags, perm, any_keyword);
        report.refused_flags.extend(refused);
        let have: BTreeSet<String> = dm
            .flags
            .iter()
            .filter(|f| perm.contains(*f) || (!f.starts_with('\\') && any_keyword))
            .cloned()
            .collect();
        if want != have {
            stores.push(
                dst.queue(format!("UID STORE {d} FLAGS.SILENT ({})", flag_list(&want)).as_bytes()),
            );
        }
    }
    report.flags_updated = stores.len() as u64;
    stores
}
