//! A store's folders as it lists them (LIST, with SPECIAL-USE and SUBSCRIBED
//! where offered, else LSUB) and its personal namespace: what the migration
//! plans from and where client continuity finds its hidden map folder.

use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;

use super::client::ok;
use super::Client;
use crate::store::StoreError as Error;

/// RFC 6154 special uses that are mapped across stores.
pub const SPECIAL_USES: [&str; 7] = [
    "\\Sent",
    "\\Drafts",
    "\\Trash",
    "\\Junk",
    "\\Archive",
    "\\All",
    "\\Flagged",
];

/// One folder as a store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// The wire name.
    pub name: Vec<u8>,
    /// The hierarchy delimiter.
    pub delimiter: Option<u8>,
    /// Its special use (`\Sent`, ...), if any.
    pub special: Option<String>,
    /// Whether it can be selected.
    pub selectable: bool,
    /// Whether the user subscribes to it.
    pub subscribed: bool,
}

impl Folder {
    /// The name for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The personal namespace: prefix and delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// E.g. `INBOX.` or empty.
    pub prefix: Vec<u8>,
    /// E.g. `.` or `/`.
    pub delimiter: u8,
}

fn mailbox_bytes(m: &Mailbox<'_>) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

/// Reads `* NAMESPACE (("prefix" "delim") ...) ...` — the first personal namespace.
fn parse_namespace(raw: &[u8]) -> Option<(Vec<u8>, u8)> {
    let text = std::str::from_utf8(raw).ok()?;
    let rest = text.strip_prefix("* NAMESPACE ((")?;
    let rest = rest.strip_prefix('"')?;
    let mut prefix = Vec::new();
    let mut chars = rest.bytes();
    loop {
        match chars.next()? {
            b'\\' => prefix.push(chars.next()?),
            b'"' => break,
            b => prefix.push(b),
        }
    }
    let rest: Vec<u8> = chars.collect();
    let rest = std::str::from_utf8(&rest).ok()?.trim_start();
    let delim = rest.strip_prefix('"')?.bytes().next()?;
    Some((prefix, delim))
}

/// Lists a store's folders and its personal namespace.
pub async fn list(client: &mut Client) -> Result<(Vec<Folder>, Namespace), Error> {
    // LIST, LSUB and NAMESPACE written at once: one round trip.
    let extended = client.has("LIST-EXTENDED") && client.has("SPECIAL-USE");
    let list = client.queue(if extended {
        b"LIST \"\" \"*\" RETURN (SPECIAL-USE SUBSCRIBED)"
    } else {
        b"LIST \"\" \"*\""
    });
    let lsub = (!extended).then(|| client.queue(b"LSUB \"\" \"*\""));
    let namespace = client.has("NAMESPACE").then(|| client.queue(b"NAMESPACE"));
    client.flush().await?;
    let reply = client.reply(&list).await?;
    let reply = ok(client, "LIST", reply)?;
    let lsub = match lsub {
        Some(tag) => {
            let r = client.reply(&tag).await?;
            Some(ok(client, "LSUB", r)?)
        }
        None => None,
    };
    let namespace = match namespace {
        Some(tag) => {
            let r = client.reply(&tag).await?;
            Some(ok(client, "NAMESPACE", r)?)
        }
        None => None,
    };
    let mut folders = Vec::new();
    for data in reply.data() {
        if let Data::List {
            items,
            delimiter,
            mailbox,
        } = data
        {
            let attrs: Vec<String> = items.iter().map(|a| a.to_string()).collect();
            let has = |a: &str| attrs.iter().any(|x| x.eq_ignore_ascii_case(a));
            folders.push(Folder {
                name: mailbox_bytes(&mailbox),
                delimiter: delimiter.map(|d| d.inner() as u8),
                special: SPECIAL_USES.iter().find(|s| has(s)).map(|s| s.to_string()),
                selectable: !items
                    .iter()
                    .any(|a| matches!(a, FlagNameAttribute::Noselect))
                    && !has("\\NonExistent"),
                subscribed: has("\\Subscribed"),
            });
        }
    }
    if let Some(lsub) = lsub {
        let subscribed: Vec<Vec<u8>> = lsub
            .data()
            .filter_map(|d| match d {
                Data::Lsub { mailbox, .. } => Some(mailbox_bytes(&mailbox)),
                _ => None,
            })
            .collect();
        for f in &mut folders {
            f.subscribed = subscribed.contains(&f.name);
        }
    }
    let fallback_delim = folders.iter().find_map(|f| f.delimiter).unwrap_or(b'/');
    let mut ns = Namespace {
        prefix: Vec::new(),
        delimiter: fallback_delim,
    };
    if let Some(reply) = namespace {
        if let Some((prefix, delimiter)) =
            reply.untagged.iter().find_map(|r| parse_namespace(&r.raw))
        {
            ns = Namespace { prefix, delimiter };
        }
    }
    Ok((folders, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_line() {
        assert_eq!(
            parse_namespace(b"* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n"),
            Some((b"INBOX.".to_vec(), b'.'))
        );
        assert_eq!(
            parse_namespace(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"),
            Some((Vec::new(), b'/'))
        );
    }
}
