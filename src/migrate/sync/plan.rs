//! Phase "plan": whether a folder changed at all, and where it did, both
//! sides opened and listed.
//!
//! ```text
//!  pass:    STATUS of every folder, source and destination, pipelined
//!           (one round trip a side) ─► unchanged since the last pass? skip
//!  folder:  source: EXAMINE + UID FETCH 1:* (UID FLAGS RFC822.SIZE)  ┐ both legs
//!           destination: [SUBSCRIBE] SELECT + UID FETCH 1:* (UID FLAGS) ┘ at once
//! ```
//! Each side's commands are written together and their replies read after:
//! one round trip per side instead of one per command.

use std::collections::BTreeSet;
use std::time::Duration;

use imap_codec::imap_types::flag::FlagPerm;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::status::StatusDataItem;

use super::refused;
use crate::migrate::folders::Pair;
use crate::migrate::message::{self, Listed};
use crate::migrate::state::FolderState;
use crate::migrate::Error;
use crate::store::imap::{quoted, Client, Reply, Status};
use crate::store::StoreError;

/// Selected-state facts.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Selected {
    pub validity: u32,
    pub uidnext: u32,
    pub modseq: u64,
    pub exists: u32,
    /// PERMANENTFLAGS allows new keywords (`\*`).
    pub any_keyword: bool,
}

pub(super) fn selected(reply: &Reply) -> (Selected, BTreeSet<String>) {
    let mut s = Selected::default();
    let mut perm = BTreeSet::new();
    for code in reply.codes() {
        match code {
            Code::UidValidity(v) => s.validity = v.get(),
            Code::UidNext(v) => s.uidnext = v.get(),
            Code::HighestModSeq(v) => s.modseq = v.get(),
            Code::PermanentFlags(flags) => {
                for f in flags {
                    match f {
                        FlagPerm::Asterisk => s.any_keyword = true,
                        FlagPerm::Flag(f) => {
                            perm.insert(f.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for d in reply.data() {
        if let Data::Exists(n) = d {
            s.exists = n;
        }
    }
    (s, perm)
}

/// One side of a folder, opened and listed.
pub(super) struct Opened {
    pub sel: Selected,
    /// PERMANENTFLAGS (the destination's decide what a copy may carry).
    pub perm: BTreeSet<String>,
    /// Every message, in UID order.
    pub listed: Vec<Listed>,
}

/// STATUS facts of a folder, for the "nothing changed" check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatusFacts {
    pub messages: u32,
    pub uidnext: u32,
    pub validity: u32,
    pub modseq: u64,
}

/// Queues a STATUS of `name` (with HIGHESTMODSEQ where the store has
/// CONDSTORE); returns its tag.
pub(super) fn queue_status(c: &mut Client, name: &[u8]) -> String {
    let mut cmd = b"STATUS ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    cmd.extend_from_slice(if c.has("CONDSTORE") {
        b" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
    } else {
        b" (MESSAGES UIDNEXT UIDVALIDITY)"
    });
    c.queue(&cmd)
}

/// Reads a STATUS reply; `None` when the store refused it (no such folder).
pub(super) fn status_facts(reply: &Reply) -> Option<StatusFacts> {
    if reply.status != Status::Ok {
        return None;
    }
    let mut f = StatusFacts::default();
    for d in reply.data() {
        if let Data::Status { items, .. } = d {
            for item in items.iter() {
                match item {
                    StatusDataItem::Messages(n) => f.messages = *n,
                    StatusDataItem::UidNext(n) => f.uidnext = n.get(),
                    StatusDataItem::UidValidity(n) => f.validity = n.get(),
                    StatusDataItem::HighestModSeq(n) => f.modseq = *n,
                    _ => {}
                }
            }
        }
    }
    Some(f)
}

/// STATUS of every named folder (`None` entries are skipped), written at
/// once; one answer per name, in order.
pub(super) async fn statuses(
    c: &mut Client,
    names: &[Option<&[u8]>],
) -> Result<Vec<Option<StatusFacts>>, StoreError> {
    let tags: Vec<Option<String>> = names
        .iter()
        .map(|n| n.map(|n| queue_status(c, n)))
        .collect();
    c.flush().await?;
    let mut out = Vec::with_capacity(tags.len());
    for tag in tags {
        out.push(match tag {
            Some(tag) => status_facts(&c.reply(&tag).await?),
            None => None,
        });
    }
    Ok(out)
}

/// Nothing changed on either side since the last complete pass (STATUS
/// only)? Returns the source's message count when so.
pub(super) fn unchanged(
    pair: &Pair,
    st: &FolderState,
    src: Option<StatusFacts>,
    dst: Option<StatusFacts>,
) -> Option<usize> {
    if pair.create || !st.failed.is_empty() || st.src_modseq == 0 || st.intent.is_some() {
        return None;
    }
    match (src, dst) {
        (Some(s), Some(d))
            if s.validity == st.src_validity
                && s.uidnext == st.src_uidnext
                && s.modseq == st.src_modseq
                && d.validity == st.dst_validity
                && d.modseq == st.dst_modseq
                && d.modseq > 0 =>
        {
            Some(s.messages as usize)
        }
        _ => None,
    }
}

/// Queues `UID FETCH 1:* (UID FLAGS [RFC822.SIZE])`.
fn queue_listing(c: &mut Client, with_size: bool) -> String {
    c.queue(if with_size {
        b"UID FETCH 1:* (UID FLAGS RFC822.SIZE)"
    } else {
        b"UID FETCH 1:* (UID FLAGS)"
    })
}

/// The listing's reply, read after the SELECT/EXAMINE it was pipelined
/// behind. An empty folder lists nothing, whatever a store answers to `1:*`
/// there (some refuse the range).
fn listing(c: &Client, sel: &Selected, reply: Reply) -> Result<Vec<Listed>, StoreError> {
    if sel.exists == 0 {
        return Ok(Vec::new());
    }
    Ok(message::listing(&refused(c, "UID FETCH", reply)?))
}

/// Lists a selected folder (UID, flags, and sizes when asked).
pub(super) async fn list_messages(
    c: &mut Client,
    exists: u32,
    with_size: bool,
) -> Result<Vec<Listed>, StoreError> {
    if exists == 0 {
        return Ok(Vec::new());
    }
    let cmd = if with_size {
        "UID FETCH 1:* (UID FLAGS RFC822.SIZE)"
    } else {
        "UID FETCH 1:* (UID FLAGS)"
    };
    Ok(message::listing(&c.run(cmd).await?))
}

fn select_command(verb: &str, c: &Client, name: &[u8]) -> Vec<u8> {
    let mut cmd = format!("{verb} ").into_bytes();
    cmd.extend_from_slice(&quoted(name));
    if c.has("CONDSTORE") {
        cmd.extend_from_slice(b" (CONDSTORE)");
    }
    cmd
}

/// EXAMINE (read-only) the source folder and list it, in one round trip.
pub(super) async fn open_source(src: &mut Client, pair: &Pair) -> Result<Opened, Error> {
    let examine = src.queue(&select_command("EXAMINE", src, &pair.src.name));
    let list = queue_listing(src, true);
    src.flush().await?;
    let reply = src.reply(&examine).await?;
    // Read even when EXAMINE failed: nothing of it may be left for the
    // next command to read.
    let listed = src.reply(&list).await?;
    if reply.status != Status::Ok {
        return Err(StoreError {
            store: src.store().to_string(),
            error: crate::store::Error::Refused {
                command: format!("EXAMINE {}", pair.src.display()),
                reply: reply.text,
                temporary: false,
            },
        }
        .into());
    }
    let (sel, perm) = selected(&reply);
    let listed = listing(src, &sel, listed)?;
    Ok(Opened { sel, perm, listed })
}

/// Creates the destination folder where the plan says so; a folder the
/// store cannot hold is this user's to map.
pub(super) async fn create_destination(dst: &mut Client, pair: &Pair) -> Result<(), Error> {
    if !pair.create {
        return Ok(());
    }
    // ALREADYEXISTS from the pass's up-front creation or a concurrent
    // pass is fine.
    let reply = create_folder(dst, &pair.dst, pair.create_special.as_deref()).await?;
    if reply.status != Status::Ok
        && !reply.text.contains("ALREADYEXISTS")
        && !folder_exists(dst, &pair.dst).await?
    {
        return Err(Error::Unsupported(format!(
            "{} refused to create {:?} for {:?} ({}): give it a name the store takes with [migration] folder_map",
            dst.store(),
            String::from_utf8_lossy(&pair.dst),
            pair.src.display(),
            reply.text.trim_end()
        )));
    }
    Ok(())
}

/// SUBSCRIBE (if the source subscribes and this is no dry run), SELECT
/// (read-write) and list the destination folder, in one round trip.
/// UIDPLUS is required.
pub(super) async fn open_destination(
    dst: &mut Client,
    pair: &Pair,
    subscribe: bool,
    shown: &str,
) -> Result<Opened, Error> {
    let subscribed = subscribe.then(|| {
        let mut cmd = b"SUBSCRIBE ".to_vec();
        cmd.extend_from_slice(&quoted(&pair.dst));
        dst.queue(&cmd)
    });
    let cmd = select_command("SELECT", dst, &pair.dst);
    let select = dst.queue(&cmd);
    let list = queue_listing(dst, false);
    dst.flush().await?;
    if let Some(tag) = subscribed {
        let _ = dst.reply(&tag).await?;
    }
    let mut reply = dst.reply(&select).await?;
    let mut listed = Some(dst.reply(&list).await?);
    // Dovecot creates an `auto = create` special-use mailbox on its first
    // SELECT; when another session (a parallel worker) created it at the same
    // moment, that SELECT fails with ALREADYEXISTS. The mailbox is there now.
    for _ in 0..3 {
        if reply.status == Status::Ok || !reply.text.contains("[ALREADYEXISTS]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = dst.run_status(&cmd).await?;
        listed = None;
    }
    if reply.status != Status::Ok {
        return Err(StoreError {
            store: dst.store().to_string(),
            error: crate::store::Error::Refused {
                command: format!("SELECT {shown}"),
                reply: reply.text,
                temporary: false,
            },
        }
        .into());
    }
    if !dst.has("UIDPLUS") {
        return Err(Error::Unsupported(format!(
            "{} lacks UIDPLUS: copies could not be tracked",
            dst.store()
        )));
    }
    let (sel, perm) = selected(&reply);
    let listed = match listed {
        Some(l) => listing(dst, &sel, l)?,
        // Listed before the retried SELECT succeeded: list again.
        None => list_messages(dst, sel.exists, false).await?,
    };
    Ok(Opened { sel, perm, listed })
}

/// CREATE, with `USE (special)` where the store offers CREATE-SPECIAL-USE; a
/// store that refuses the attribute (Cyrus allows one folder per use) still
/// gets the folder.
pub(super) async fn create_folder(
    dst: &mut Client,
    name: &[u8],
    special: Option<&str>,
) -> Result<Reply, Error> {
    if let Some(special) = special.filter(|_| dst.has("CREATE-SPECIAL-USE")) {
        let mut cmd = b"CREATE ".to_vec();
        cmd.extend_from_slice(&quoted(name));
        cmd.extend_from_slice(format!(" (USE ({special}))").as_bytes());
        let reply = dst.run_status(&cmd).await?;
        if reply.status == Status::Ok {
            return Ok(reply);
        }
    }
    let mut cmd = b"CREATE ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    Ok(dst.run_status(&cmd).await?)
}

/// Whether a folder exists (a store may answer CREATE of an existing folder
/// with a plain NO, without ALREADYEXISTS).
async fn folder_exists(dst: &mut Client, name: &[u8]) -> Result<bool, Error> {
    let mut cmd = b"LIST \"\" ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    let reply = dst.run_status(&cmd).await?;
    let found = reply.data().any(|d| matches!(d, Data::List { .. }));
    Ok(found)
}
