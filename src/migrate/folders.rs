//! Folders: deciding where each source folder goes, from both stores' lists
//! ([`crate::store::imap::folders`]).
//!
//! Names are handled in their wire form (modified UTF-7, or UTF-8 where the
//! store speaks it): encoded segments never contain the hierarchy delimiter,
//! so translating `INBOX.Sent` (`.`) into `Sent` (`/`) is a split and a join.
//! SPECIAL-USE folders go to the destination's folder of the same use, whatever
//! its name (`Sent Items` → `Sent`); where the destination has none yet, to its
//! conventional name (Cyrus's `Spam` with \Junk → `Junk`), created with the
//! attribute where the store offers CREATE-SPECIAL-USE (RFC 6154).

use std::collections::{BTreeMap, HashMap};

pub(crate) use crate::store::imap::client::ok;
use crate::store::imap::{quoted, Client, Status};
use crate::store::StoreError as Error;

pub use crate::store::imap::folders::{list, Folder, Namespace, SPECIAL_USES};

/// The name a folder of each special use conventionally has (what Dovecot,
/// Cyrus's `autocreate_inbox_folders` and most clients create).
pub fn conventional_name(special: &str) -> Option<&'static str> {
    Some(match special {
        "\\Sent" => "Sent",
        "\\Drafts" => "Drafts",
        "\\Trash" => "Trash",
        "\\Junk" => "Junk",
        "\\Archive" => "Archive",
        "\\All" => "All Mail",
        "\\Flagged" => "Flagged",
        _ => return None,
    })
}

/// Reads `* QUOTA root (... STORAGE used limit ...)`: (used, limit) in bytes
/// (RFC 9208 counts STORAGE in units of 1024 octets).
fn parse_quota(raw: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(raw).ok()?;
    let rest = text.strip_prefix("* QUOTA ")?;
    let list = rest.split_once('(')?.1.split(')').next()?;
    let words: Vec<&str> = list.split_ascii_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("STORAGE"))?;
    let used: u64 = words.get(i + 1)?.parse().ok()?;
    let limit: u64 = words.get(i + 2)?.parse().ok()?;
    Some((used.saturating_mul(1024), limit.saturating_mul(1024)))
}

/// The storage quota of the user's INBOX on a store, as (used, limit) in
/// bytes; `None` where the store has no QUOTA or no storage limit.
pub async fn quota(client: &mut Client) -> Result<Option<(u64, u64)>, Error> {
    if !client.has("QUOTA") {
        return Ok(None);
    }
    let reply = client.run_status(b"GETQUOTAROOT INBOX").await?;
    if reply.status != Status::Ok {
        return Ok(None);
    }
    Ok(reply.untagged.iter().find_map(|r| parse_quota(&r.raw)))
}

/// The largest message a store accepts (`APPENDLIMIT=n`, RFC 7889).
pub async fn append_limit(client: &mut Client) -> Result<Option<u64>, Error> {
    if client.has("APPENDLIMIT") {
        // Without a value the limit is per folder; not worth a STATUS each.
        return Ok(None);
    }
    let reply = client.run_status(b"CAPABILITY").await?;
    Ok(reply.untagged.iter().find_map(|r| {
        std::str::from_utf8(&r.raw)
            .ok()?
            .split_ascii_whitespace()
            .find_map(|w| {
                w.get(..12)?
                    .eq_ignore_ascii_case("APPENDLIMIT=")
                    .then(|| w[12..].parse().ok())?
            })
    }))
}

/// The bytes a folder holds (0 if it cannot be examined): STATUS SIZE where
/// offered (RFC 8438), else the sum of RFC822.SIZE.
pub async fn folder_bytes(client: &mut Client, name: &[u8]) -> Result<u64, Error> {
    let mut cmd = if client.has("STATUS=SIZE") {
        b"STATUS ".to_vec()
    } else {
        b"EXAMINE ".to_vec()
    };
    cmd.extend_from_slice(&quoted(name));
    if client.has("STATUS=SIZE") {
        cmd.extend_from_slice(b" (SIZE)");
        let reply = client.run_status(&cmd).await?;
        return Ok(reply
            .untagged
            .iter()
            .find_map(|r| number_after(&r.raw, "SIZE "))
            .unwrap_or(0));
    }
    let reply = client.run_status(&cmd).await?;
    if reply.status != Status::Ok {
        return Ok(0);
    }
    let exists = reply.untagged.iter().any(|r| {
        std::str::from_utf8(&r.raw)
            .ok()
            .and_then(|t| t.strip_prefix("* "))
            .and_then(|t| t.trim_end().strip_suffix(" EXISTS"))
            .is_some_and(|n| n != "0")
    });
    if !exists {
        return Ok(0);
    }
    let reply = client.run_status(b"FETCH 1:* (RFC822.SIZE)").await?;
    Ok(reply
        .untagged
        .iter()
        .filter_map(|r| number_after(&r.raw, "RFC822.SIZE "))
        .sum())
}

fn number_after(raw: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(raw).ok()?;
    let i = text.to_ascii_uppercase().find(key)? + key.len();
    let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether the destination's storage quota holds what the plan still has to
/// copy: `Err(message)` for the operator, before a single message is copied,
/// rather than a pass that fails half-way with OVERQUOTA.
pub async fn check_quota(
    src: &mut Client,
    dst: &mut Client,
    plan: &[Pair],
) -> Result<Result<(), String>, Error> {
    // Nothing to copy (a no-change pass): not worth a round trip.
    if plan.is_empty() {
        return Ok(Ok(()));
    }
    let Some((used, limit)) = quota(dst).await? else {
        return Ok(Ok(()));
    };
    let mut need = 0u64;
    for p in plan {
        let have = if p.create {
            0
        } else {
            folder_bytes(dst, &p.dst).await?
        };
        need += folder_bytes(src, &p.src.name).await?.saturating_sub(have);
    }
    if used.saturating_add(need) > limit {
        return Ok(Err(format!(
            "the destination quota has {} KiB free of {} KiB and the mailbox needs {} KiB more: \
             nothing copied; raise the quota and run again",
            limit.saturating_sub(used) / 1024,
            limit / 1024,
            need.div_ceil(1024)
        )));
    }
    Ok(Ok(()))
}

/// Operator rules for folders the defaults don't cover.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Source folders (wire names) not migrated.
    pub exclude: Vec<String>,
    /// Source folder → destination folder, full wire names.
    pub rename: BTreeMap<String, String>,
}

/// Where one source folder goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The source folder.
    pub src: Folder,
    /// The destination wire name.
    pub dst: Vec<u8>,
    /// Whether it must be created on the destination.
    pub create: bool,
    /// The special use to create it with (the source's, where the
    /// destination has no folder of that use yet).
    pub create_special: Option<String>,
}

fn is_inbox(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"INBOX")
}

/// Translates a source name into the destination's namespace and delimiter.
pub fn translate(name: &[u8], src: &Namespace, dst: &Namespace) -> Vec<u8> {
    if is_inbox(name) {
        return b"INBOX".to_vec();
    }
    let local = name.strip_prefix(src.prefix.as_slice()).unwrap_or(name);
    let mut out = dst.prefix.clone();
    for (i, part) in local.split(|&b| b == src.delimiter).enumerate() {
        if i > 0 {
            out.push(dst.delimiter);
        }
        // A source name may contain the destination's delimiter as a plain
        // character: it would create a hierarchy level that is not there.
        out.extend(
            part.iter()
                .map(|&b| if b == dst.delimiter { b'_' } else { b }),
        );
    }
    // `INBOX/Sub` on a store without a prefix stays under INBOX.
    out
}

/// Decides the destination of every selectable source folder.
pub fn plan(
    src: &[Folder],
    src_ns: &Namespace,
    dst: &[Folder],
    dst_ns: &Namespace,
    rules: &Rules,
) -> Vec<Pair> {
    let dst_by_use: HashMap<&str, &Folder> = dst
        .iter()
        .filter_map(|f| f.special.as_deref().map(|s| (s, f)))
        .collect();
    // A folder listed \NonExistent or \Noselect (the parent of a folder
    // created alone, by a killed pass or an admin) cannot be selected: it is
    // created like a missing one.
    let dst_names: Vec<&[u8]> = dst
        .iter()
        .filter(|f| f.selectable)
        .map(|f| f.name.as_slice())
        .collect();
    // mailshift's own UID map folder (a store without METADATA) is never copied.
    let src_selectable: Vec<&Folder> = src
        .iter()
        .filter(|f| f.selectable && !crate::continuity::stored::is_hidden_folder(&f.name, src_ns))
        .collect();
    // Destination names some source folder takes by plain translation: a
    // special-use folder must not be moved onto one of them (a source with
    // both `Spam` (\Junk) and a plain `Junk` keeps them apart).
    let translated: Vec<Vec<u8>> = src_selectable
        .iter()
        .filter(|f| f.special.is_none())
        .map(|f| translate(&f.name, src_ns, dst_ns))
        .collect();
    let mut uses_given: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for f in src_selectable {
        let shown = f.display();
        if rules.exclude.iter().any(|e| e == &shown) {
            continue;
        }
        let mut create_special = None;
        let target = if let Some(to) = rules.rename.get(&shown) {
            to.as_bytes().to_vec()
        } else if let Some(d) = f.special.as_deref().and_then(|s| dst_by_use.get(s)) {
            d.name.clone()
        } else if let Some((special, conv)) = f
            .special
            .as_deref()
            .filter(|s| !uses_given.contains(s))
            .and_then(|s| Some((s, conventional_name(s)?)))
        {
            let mut name = dst_ns.prefix.clone();
            name.extend_from_slice(conv.as_bytes());
            if translated.contains(&name) {
                translate(&f.name, src_ns, dst_ns)
            } else {
                uses_given.push(special);
                create_special = Some(special.to_string());
                name
            }
        } else {
            translate(&f.name, src_ns, dst_ns)
        };
        let create = !dst_names
            .iter()
            .any(|n| *n == target.as_slice() || (is_inbox(n) && is_inbox(&target)));
        out.push(Pair {
            src: f.clone(),
            dst: target,
            create,
            create_special: create_special.filter(|_| create),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, special: Option<&str>) -> Folder {
        Folder {
            name: name.as_bytes().to_vec(),
            delimiter: Some(b'.'),
            special: special.map(String::from),
            selectable: true,
            subscribed: false,
        }
    }

    #[test]
    fn delimiters_prefixes_and_special_use() {
        let src_ns = Namespace {
            prefix: b"INBOX.".to_vec(),
            delimiter: b'.',
        };
        let dst_ns = Namespace {
            prefix: Vec::new(),
            delimiter: b'/',
        };
        let src = vec![
            folder("INBOX", None),
            folder("INBOX.Projects.2024", None),
            folder("INBOX.Sent Items", Some("\\Sent")),
            folder("INBOX.a/b", None),
            folder("INBOX.&AMk-t&AOk-", None),
            folder("INBOX.Spam", None),
        ];
        let dst = vec![folder("INBOX", None), folder("Sent", Some("\\Sent"))];
        let rules = Rules {
            exclude: vec!["INBOX.Spam".into()],
            rename: BTreeMap::new(),
        };
        let plan = plan(&src, &src_ns, &dst, &dst_ns, &rules);
        let got: Vec<(String, bool)> = plan
            .iter()
            .map(|p| (String::from_utf8_lossy(&p.dst).into_owned(), p.create))
            .collect();
        assert_eq!(
            got,
            [
                ("INBOX".to_string(), false),
                ("Projects/2024".to_string(), true),
                ("Sent".to_string(), false),
                ("a_b".to_string(), true),
                ("&AMk-t&AOk-".to_string(), true),
            ]
        );
    }

    #[test]
    fn special_use_without_a_destination_folder_gets_the_conventional_name() {
        let cyrus = Namespace {
            prefix: b"INBOX.".to_vec(),
            delimiter: b'.',
        };
        let dovecot = Namespace {
            prefix: Vec::new(),
            delimiter: b'/',
        };
        let src = vec![
            folder("INBOX", None),
            folder("INBOX.Spam", Some("\\Junk")),
            folder("INBOX.Sent Items", Some("\\Sent")),
            // A plain folder already called like the conventional name keeps it.
            folder("INBOX.Archive", None),
            folder("INBOX.Old", Some("\\Archive")),
        ];
        let dst = vec![folder("INBOX", None)];
        let got: Vec<(String, Option<String>)> =
            plan(&src, &cyrus, &dst, &dovecot, &Rules::default())
                .into_iter()
                .map(|p| {
                    (
                        String::from_utf8_lossy(&p.dst).into_owned(),
                        p.create_special,
                    )
                })
                .collect();
        assert_eq!(
            got,
            [
                ("INBOX".to_string(), None),
                ("Junk".to_string(), Some("\\Junk".to_string())),
                ("Sent".to_string(), Some("\\Sent".to_string())),
                ("Archive".to_string(), None),
                ("Old".to_string(), None),
            ]
        );
        // Back into Cyrus: under its INBOX. prefix.
        let src = vec![folder("Junk", Some("\\Junk"))];
        let p = plan(&src, &dovecot, &[], &cyrus, &Rules::default());
        assert_eq!(p[0].dst, b"INBOX.Junk");
        assert_eq!(p[0].create_special.as_deref(), Some("\\Junk"));
    }

    #[test]
    fn quota_line() {
        assert_eq!(
            parse_quota(b"* QUOTA user.alice (STORAGE 10 512 MESSAGE 3 100)\r\n"),
            Some((10 * 1024, 512 * 1024))
        );
        assert_eq!(parse_quota(b"* QUOTA \"\" (MESSAGE 3 100)\r\n"), None);
        assert_eq!(
            number_after(b"* STATUS INBOX (SIZE 4711)", "SIZE "),
            Some(4711)
        );
    }
}
