//! Verification: does the destination hold everything the source does?
//!
//! Folder by folder (through the same plan a pass uses), every source message's
//! fingerprint must be found on the destination (as many times as on the
//! source), and the flags the destination can store must agree. Extra
//! destination messages (the user's own) are reported, never a failure.

use std::collections::{BTreeMap, BTreeSet};

use super::message::{self, Fingerprint};
use super::sync::Engine;
use super::Error;
use crate::store::imap::{quoted, Client, Status};
use imap_codec::imap_types::response::Data;

/// One folder's comparison.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FolderCheck {
    /// Source folder.
    pub folder: String,
    /// Destination folder.
    pub dest: String,
    /// Messages on the source.
    pub source: usize,
    /// Messages on the destination.
    pub destination: usize,
    /// Source messages not found on the destination (Message-ID or UID).
    pub missing: Vec<String>,
    /// Messages whose flags differ.
    pub flag_mismatches: Vec<String>,
    /// Destination messages that are not on the source.
    pub extra: usize,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// The user.
    pub user: String,
    /// Per folder.
    pub folders: Vec<FolderCheck>,
    /// The Sieve scripts, when both stores have ManageSieve.
    pub sieve: Option<super::sieve::SieveCheck>,
}

impl Verification {
    /// True when nothing is missing and no flag differs.
    pub fn ok(&self) -> bool {
        self.folders
            .iter()
            .all(|f| f.missing.is_empty() && f.flag_mismatches.is_empty())
            && self.sieve.as_ref().is_none_or(|s| s.ok())
    }
}

async fn snapshot(
    c: &mut Client,
    name: &[u8],
) -> Result<Option<Vec<(Fingerprint, BTreeSet<String>, u32)>>, Error> {
    let mut cmd = b"EXAMINE ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    let r = c.run_status(&cmd).await?;
    if r.status != Status::Ok {
        return Ok(None);
    }
    let exists = r
        .data()
        .find_map(|d| match d {
            Data::Exists(n) => Some(n),
            _ => None,
        })
        .unwrap_or(0);
    if exists == 0 {
        return Ok(Some(Vec::new()));
    }
    let fps = message::fingerprints(
        &c.run("UID FETCH 1:* (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])")
            .await?,
    );
    let flags: BTreeMap<u32, BTreeSet<String>> = if fps.is_empty() {
        BTreeMap::new()
    } else {
        message::listing(&c.run("UID FETCH 1:* (UID FLAGS)").await?)
            .into_iter()
            .map(|l| (l.uid, l.flags))
            .collect()
    };
    Ok(Some(
        fps.into_iter()
            .map(|(uid, fp)| (fp, flags.get(&uid).cloned().unwrap_or_default(), uid))
            .collect(),
    ))
}

/// Compares the user's two mailboxes.
pub async fn verify(
    engine: &Engine,
    user: &str,
    password: Option<&[u8]>,
) -> Result<Verification, Error> {
    let mut pair = engine.connect(user, password).await?;
    let plan = engine.plan(&mut pair).await?;
    let mut out = Verification {
        user: user.to_string(),
        folders: Vec::new(),
        sieve: None,
    };
    for p in plan {
        let mut check = FolderCheck {
            folder: p.src.display(),
            dest: String::from_utf8_lossy(&p.dst).into_owned(),
            ..FolderCheck::default()
        };
        let src = snapshot(&mut pair.src, &p.src.name)
            .await?
            .unwrap_or_default();
        let dst = snapshot(&mut pair.dst, &p.dst).await?.unwrap_or_default();
        check.source = src.len();
        check.destination = dst.len();
        let mut pool: BTreeMap<&Fingerprint, Vec<&BTreeSet<String>>> = BTreeMap::new();
        for (fp, flags, _) in &dst {
            pool.entry(fp).or_default().push(flags);
        }
        let mut matched = 0;
        for (fp, flags, uid) in &src {
            match pool.get_mut(fp).and_then(|v| {
                if v.is_empty() {
                    None
                } else {
                    Some(v.remove(0))
                }
            }) {
                Some(dflags) => {
                    matched += 1;
                    // Keywords the destination could not store were reported by
                    // the pass; system flags must agree.
                    let sys = |f: &BTreeSet<String>| -> BTreeSet<String> {
                        f.iter().filter(|x| x.starts_with('\\')).cloned().collect()
                    };
                    if sys(flags) != sys(dflags) {
                        check.flag_mismatches.push(format!(
                            "uid {uid} {}: source ({}) destination ({})",
                            fp.message_id,
                            flags.iter().cloned().collect::<Vec<_>>().join(" "),
                            dflags.iter().cloned().collect::<Vec<_>>().join(" ")
                        ));
                    }
                }
                None => check.missing.push(if fp.message_id.is_empty() {
                    format!("uid {uid} (no Message-ID, {} bytes)", fp.size)
                } else {
                    format!("uid {uid} {}", fp.message_id)
                }),
            }
        }
        check.extra = dst.len() - matched;
        out.folders.push(check);
    }
    tokio::join!(pair.src.logout(), pair.dst.logout());
    out.sieve = super::sieve::verify(&engine.from, &engine.to, user, password).await?;
    Ok(out)
}
