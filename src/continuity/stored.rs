//! Where a user's maps live: in the store that holds the mailbox, so every
//! mailshift instance in front of it reads the same maps and no database is
//! added.
//!
//! - A store offering METADATA (RFC 5464) keeps each folder's map in the
//!   folder's private entry [`ENTRY`]: it follows the folder through a RENAME
//!   and goes away with it.
//! - Any other store gets a folder of mailshift's own, [`HIDDEN_FOLDER`] under
//!   the personal namespace, with one message per mapped folder (header
//!   `X-Mailshift-Folder`, the map as the body). The translating relay hides
//!   it from LIST/LSUB/STATUS and refuses to select or write it; the
//!   migration engine never copies it.
//!
//! The choice depends only on the store's capabilities, so the writer and
//! every loader agree on it.

use std::collections::HashMap;

use super::map::{FolderMap, UserMap};
use super::Error;
use crate::store::imap::fetch::{bodies, sequence_set};
use crate::store::imap::folders::{self, Folder, Namespace};
use crate::store::imap::{quoted, Client, Status};

/// The per-folder METADATA entry holding the folder's map.
pub const ENTRY: &str = "/private/vendor/mailshift/uidmap";
/// The folder holding the maps on a store without METADATA (its last
/// hierarchy level; it lives under the personal namespace prefix).
pub const HIDDEN_FOLDER: &str = "mailshift-uidmap";
/// The header naming the folder a message of [`HIDDEN_FOLDER`] maps.
const FOLDER_HEADER: &str = "X-Mailshift-Folder";

/// Whether `name` (as on the wire) is mailshift's hidden map folder.
pub fn is_hidden_folder(name: &[u8], ns: &Namespace) -> bool {
    name.strip_prefix(ns.prefix.as_slice())
        .is_some_and(|rest| rest == HIDDEN_FOLDER.as_bytes())
}

/// The hidden folder's full name on a store with namespace `ns`.
pub fn hidden_folder(ns: &Namespace) -> Vec<u8> {
    let mut name = ns.prefix.clone();
    name.extend_from_slice(HIDDEN_FOLDER.as_bytes());
    name
}

/// How a store keeps maps (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// Per-folder METADATA entries.
    Metadata,
    /// Messages in [`HIDDEN_FOLDER`].
    HiddenFolder,
}

impl Place {
    /// What this store uses.
    pub fn of(client: &Client) -> Place {
        if client.has("METADATA") {
            Place::Metadata
        } else {
            Place::HiddenFolder
        }
    }
}

/// Reads every folder's map from the store the client is logged in to;
/// `None` when there is none. A folder whose map does not decode is left
/// out (logged): its clients see the store's own UIDVALIDITY and resync,
/// which is safe. The connection is back in the authenticated state after.
pub async fn load(client: &mut Client) -> Result<Option<UserMap>, Error> {
    let (list, ns) = folders::list(client).await?;
    let raw = read(client, &list, &ns).await?;
    let mut user = UserMap::new();
    for (name, text) in raw {
        match std::str::from_utf8(&text)
            .map_err(|_| super::MapError::Version("not UTF-8".into()))
            .and_then(FolderMap::decode)
        {
            Ok(map) => user.insert(String::from_utf8_lossy(&name).into_owned(), map),
            Err(e) => tracing::warn!(
                store = client.store(),
                folder = %String::from_utf8_lossy(&name),
                error = %e,
                "UID map unreadable; the folder is not translated"
            ),
        }
    }
    Ok((!user.is_empty()).then_some(user))
}

/// The encoded maps as stored: (folder as on the wire, text).
async fn read(
    client: &mut Client,
    list: &[Folder],
    ns: &Namespace,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
    match Place::of(client) {
        Place::Metadata => {
            let names: Vec<&[u8]> = list
                .iter()
                .filter(|f| f.selectable)
                .map(|f| f.name.as_slice())
                .collect();
            let found = client.get_metadata(&names, ENTRY).await?;
            Ok(found
                .into_iter()
                .filter_map(|e| Some((e.mailbox, e.value?)))
                .collect())
        }
        Place::HiddenFolder => {
            let hidden = hidden_folder(ns);
            if !list.iter().any(|f| f.name == hidden) {
                return Ok(Vec::new());
            }
            let messages = open_hidden(client, &hidden, false).await?;
            close(client).await?;
            Ok(latest_per_folder(messages))
        }
    }
}

/// Selects the hidden folder (EXAMINE when `write` is false) and returns its
/// messages as (UID, folder, map text).
async fn open_hidden(
    client: &mut Client,
    hidden: &[u8],
    write: bool,
) -> Result<Vec<(u32, Vec<u8>, Vec<u8>)>, Error> {
    let mut cmd = if write {
        b"SELECT ".to_vec()
    } else {
        b"EXAMINE ".to_vec()
    };
    cmd.extend_from_slice(&quoted(hidden));
    let reply = client.run_status(&cmd).await?;
    if reply.status != Status::Ok {
        return Err(Error::Refused(format!(
            "{}: cannot open {}: {}",
            client.store(),
            String::from_utf8_lossy(hidden),
            reply.text
        )));
    }
    let exists = reply
        .data()
        .any(|d| matches!(d, imap_codec::imap_types::response::Data::Exists(n) if n > 0));
    if !exists {
        return Ok(Vec::new());
    }
    let reply = client.run("UID FETCH 1:* (UID BODY.PEEK[])").await?;
    Ok(bodies(&reply)
        .into_iter()
        .filter_map(|(uid, body)| {
            let (folder, text) = parse_message(&body)?;
            Some((uid, folder, text))
        })
        .collect())
}

/// The newest message per folder wins: a writer appends before it removes.
fn latest_per_folder(mut messages: Vec<(u32, Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    messages.sort_by_key(|m| m.0);
    let mut by_folder: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (_, folder, text) in messages {
        by_folder.insert(folder, text);
    }
    by_folder.into_iter().collect()
}

async fn close(client: &mut Client) -> Result<(), Error> {
    // CLOSE after EXAMINE expunges nothing; UNSELECT never does.
    let cmd = if client.has("UNSELECT") {
        "UNSELECT"
    } else {
        "CLOSE"
    };
    client.run(cmd).await?;
    Ok(())
}

/// A message of the hidden folder: the folder name (hex in the header, so
/// any mailbox name survives) and the map.
fn message(folder: &[u8], text: &str) -> Vec<u8> {
    let hex: String = folder.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "From: mailshift <mailshift@localhost>\r\nSubject: mailshift UID map\r\n\
         {FOLDER_HEADER}: {hex}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

/// A message of the hidden folder: (folder as on the wire, map text); None
/// for anything mailshift did not write.
pub fn parse_message(body: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(body).ok()?;
    let (head, map) = text.split_once("\r\n\r\n")?;
    let hex = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(FOLDER_HEADER)
            .then(|| v.trim())
    })?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let folder = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((folder, map.trim_end().as_bytes().to_vec()))
}

/// Writes `maps` (folder as on the wire → map) as the user's complete set on
/// the store: entries of folders not in `maps` are removed, so a map from an
/// earlier move never outlives it. Returns where they went.
pub async fn save(client: &mut Client, maps: &[(Vec<u8>, FolderMap)]) -> Result<Place, Error> {
    let (list, ns) = folders::list(client).await?;
    let place = Place::of(client);
    match place {
        Place::Metadata => {
            let stale: Vec<Vec<u8>> = read(client, &list, &ns)
                .await?
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| !maps.iter().any(|(m, _)| m == name))
                .collect();
            let texts: Vec<(Vec<u8>, String)> =
                maps.iter().map(|(n, m)| (n.clone(), m.encode())).collect();
            let mut entries: Vec<(&[u8], Option<&[u8]>)> = texts
                .iter()
                .map(|(n, t)| (n.as_slice(), Some(t.as_bytes())))
                .collect();
            entries.extend(stale.iter().map(|n| (n.as_slice(), None)));
            client.set_metadata(&entries, ENTRY).await?;
        }
        Place::HiddenFolder => {
            let hidden = hidden_folder(&ns);
            if !list.iter().any(|f| f.name == hidden) {
                let mut cmd = b"CREATE ".to_vec();
                cmd.extend_from_slice(&quoted(&hidden));
                // Another writer may have created it meanwhile: SELECT decides.
                let _ = client.run_status(&cmd).await?;
            }
            let old = open_hidden(client, &hidden, true).await?;
            let tags: Vec<String> = maps
                .iter()
                .map(|(name, map)| {
                    let body = message(name, &map.encode());
                    client.queue_append(
                        &hidden,
                        "\\Seen",
                        "01-Jan-2000 00:00:00 +0000",
                        &body,
                        false,
                    )
                })
                .collect();
            client.flush().await?;
            for tag in tags {
                let reply = client.reply(&tag).await?;
                if reply.status != Status::Ok {
                    return Err(Error::Refused(format!(
                        "{}: APPEND to {HIDDEN_FOLDER}: {}",
                        client.store(),
                        reply.text
                    )));
                }
            }
            if !old.is_empty() {
                let uids: Vec<u32> = old.iter().map(|m| m.0).collect();
                let set = sequence_set(&uids);
                client
                    .run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
                    .await?;
                if client.has("UIDPLUS") {
                    client.run(&format!("UID EXPUNGE {set}")).await?;
                } else {
                    client.run("EXPUNGE").await?;
                }
            }
            close(client).await?;
        }
    }
    Ok(place)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_messages_carry_any_folder_name() {
        let name = "Entwürfe \"x\"\\y".as_bytes();
        let body = message(name, "v1 ouv=1");
        assert_eq!(
            parse_message(&body),
            Some((name.to_vec(), b"v1 ouv=1".to_vec()))
        );
        assert_eq!(parse_message(b"no header\r\n\r\nbody"), None);
        assert_eq!(
            parse_message(b"X-Mailshift-Folder: 4\r\n\r\nbody"),
            None,
            "odd hex"
        );
    }

    #[test]
    fn the_newest_message_of_a_folder_wins() {
        let got = latest_per_folder(vec![
            (9, b"INBOX".to_vec(), b"new".to_vec()),
            (3, b"INBOX".to_vec(), b"old".to_vec()),
            (4, b"Sent".to_vec(), b"s".to_vec()),
        ]);
        let got: HashMap<_, _> = got.into_iter().collect();
        assert_eq!(got[&b"INBOX".to_vec()], b"new");
        assert_eq!(got[&b"Sent".to_vec()], b"s");
    }

    #[test]
    fn the_hidden_folder_is_recognised_under_the_namespace() {
        let ns = Namespace {
            prefix: b"INBOX.".to_vec(),
            delimiter: b'.',
        };
        assert!(is_hidden_folder(b"INBOX.mailshift-uidmap", &ns));
        assert!(!is_hidden_folder(b"mailshift-uidmap", &ns));
        assert_eq!(hidden_folder(&ns), b"INBOX.mailshift-uidmap");
    }
}
