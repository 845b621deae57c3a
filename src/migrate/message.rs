//! What the engine reads about messages: listings (UID, flags, size), whole
//! messages for copying, and fingerprints for matching across stores.

use std::collections::BTreeSet;

use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::flag::{Flag, FlagFetch};
use imap_codec::imap_types::response::Data;
use mail_parser::{HeaderName, MessageParser};

use crate::store::imap::Reply;

/// A message as listed: UID, flags, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// UID.
    pub uid: u32,
    /// Flags and keywords, without `\Recent`.
    pub flags: BTreeSet<String>,
    /// RFC822.SIZE, when asked for.
    pub size: u32,
}

/// A whole message fetched for copying.
pub struct Fetched {
    /// Source UID.
    pub uid: u32,
    /// Flags and keywords.
    pub flags: BTreeSet<String>,
    /// INTERNALDATE in IMAP `date-time` form.
    pub internal_date: String,
    /// The exact bytes.
    pub body: Vec<u8>,
}

/// What identifies a message across stores when no UID map says it:
/// (Message-ID, INTERNALDATE, size, hash of the header block).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Fingerprint {
    /// The Message-ID header value, trimmed (empty when absent).
    pub message_id: String,
    /// INTERNALDATE as a UTC timestamp (stores may render the zone differently).
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u32,
    /// FNV-1a of the header block: stable across runs and versions.
    pub header_hash: u64,
}

fn flag_text(f: &Flag<'_>) -> String {
    f.to_string()
}

fn flags_of(items: &[FlagFetch<'_>]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|f| match f {
            FlagFetch::Flag(f) => Some(flag_text(f)),
            FlagFetch::Recent => None,
        })
        .collect()
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The first Message-ID field of a header block as the store holds it,
/// unfolded and trimmed (empty when absent). mail-parser finds the field
/// (names in any case, folded values, the end of the block); the value is
/// the raw one, not mail-parser's parsed id, which drops the angle brackets
/// and comments: fingerprints must stay what earlier versions computed,
/// because the sync state keeps some ([`super::state::Ghost`]) and a changed
/// one would never match again.
pub(crate) fn message_id(header: &[u8]) -> String {
    let Some(parsed) = MessageParser::new().parse_headers(header) else {
        return String::new();
    };
    parsed
        .root_part()
        .headers()
        .iter()
        .find(|h| h.name == HeaderName::MessageId)
        .and_then(|h| header.get(h.offset_start as usize..h.offset_end as usize))
        .map(|raw| {
            String::from_utf8_lossy(raw)
                .split('\n')
                .map(str::trim)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `UID FETCH ... (UID FLAGS [RFC822.SIZE])` responses.
pub fn listing(reply: &Reply) -> Vec<Listed> {
    let mut out = Vec::new();
    for data in reply.data() {
        let Data::Fetch { items, .. } = data else {
            continue;
        };
        let mut l = Listed {
            uid: 0,
            flags: BTreeSet::new(),
            size: 0,
        };
        for item in items.as_ref() {
            match item {
                MessageDataItem::Uid(u) => l.uid = u.get(),
                MessageDataItem::Flags(f) => l.flags = flags_of(f),
                MessageDataItem::Rfc822Size(s) => l.size = *s,
                _ => {}
            }
        }
        if l.uid != 0 {
            out.push(l);
        }
    }
    out.sort_by_key(|l| l.uid);
    out
}

/// Reads `UID FETCH ... (UID FLAGS INTERNALDATE BODY.PEEK[])` responses.
pub fn fetched(reply: &Reply) -> Vec<Fetched> {
    let mut out = Vec::new();
    for data in reply.data() {
        let Data::Fetch { items, .. } = data else {
            continue;
        };
        let (mut uid, mut flags, mut date, mut body) = (0, BTreeSet::new(), None, None);
        for item in items.into_inner() {
            match item {
                MessageDataItem::Uid(u) => uid = u.get(),
                MessageDataItem::Flags(f) => flags = flags_of(&f),
                MessageDataItem::InternalDate(d) => {
                    date = Some(d.as_ref().format("%d-%b-%Y %H:%M:%S %z").to_string())
                }
                MessageDataItem::BodyExt { data, .. } => body = data.into_option(),
                _ => {}
            }
        }
        if let (true, Some(date), Some(body)) = (uid != 0, date, body) {
            out.push(Fetched {
                uid,
                flags,
                internal_date: date,
                body: body.into_owned(),
            });
        }
    }
    out.sort_by_key(|m| m.uid);
    out
}

/// Reads `UID FETCH ... (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])`.
pub fn fingerprints(reply: &Reply) -> Vec<(u32, Fingerprint)> {
    let mut out = Vec::new();
    for data in reply.data() {
        let Data::Fetch { items, .. } = data else {
            continue;
        };
        let (mut uid, mut date, mut size, mut header) = (0, 0, 0, Vec::new());
        for item in items.as_ref() {
            match item {
                MessageDataItem::Uid(u) => uid = u.get(),
                MessageDataItem::InternalDate(d) => date = d.as_ref().timestamp(),
                MessageDataItem::Rfc822Size(s) => size = *s,
                MessageDataItem::BodyExt { data, .. } => {
                    header = data
                        .clone()
                        .into_option()
                        .map(|c| c.into_owned())
                        .unwrap_or_default()
                }
                _ => {}
            }
        }
        if uid != 0 {
            out.push((
                uid,
                Fingerprint {
                    message_id: message_id(&header),
                    internal_date: date,
                    size,
                    header_hash: fnv1a(&header),
                },
            ));
        }
    }
    out.sort_by_key(|(u, _)| *u);
    out
}

/// A compact IMAP sequence set (`1:5,7,9:12`) of ascending UIDs: the store
/// client's, under the name the engine's phases use.
pub use crate::store::imap::fetch::sequence_set as uid_set;

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written reader of earlier versions: fingerprints (some kept
    /// in the sync state) must come out the same.
    fn message_id_before(header: &[u8]) -> String {
        let text = String::from_utf8_lossy(header);
        let mut lines = text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let name = line.as_bytes().get(..11);
            if name.is_some_and(|n| n.eq_ignore_ascii_case(b"message-id:")) {
                let mut value = line.get(11..).unwrap_or("").trim().to_string();
                while let Some(next) = lines.peek() {
                    if next.starts_with(' ') || next.starts_with('\t') {
                        value.push_str(next.trim());
                        lines.next();
                    } else {
                        break;
                    }
                }
                return value;
            }
        }
        String::new()
    }

    #[test]
    fn message_ids_are_what_earlier_versions_read() {
        let cases: [&[u8]; 12] = [
            b"Subject: x\r\nMESSAGE-ID:\r\n <a@b>\r\n\r\n",
            b"Subject: x\r\n\r\n",
            b"From: a@b\r\nMessage-Id: <plain@example.org>\r\nSubject: hi\r\n\r\n",
            // Folded inside the id, with a tab.
            b"Message-ID: <left\r\n\tright@example.org>\r\n\r\n",
            // A comment after the id, and an id without brackets.
            b"Message-ID: <a@b> (sent by x)\r\n\r\n",
            b"Message-ID: not-bracketed@example.org\r\n\r\n",
            // Encoded words and folding in the fields around it.
            b"Subject: =?UTF-8?B?w6TDtsO8?=\r\n =?ISO-8859-1?Q?caf=E9?=\r\nMessage-ID: <enc@x>\r\n\r\n",
            b"To: \"=?utf-8?q?J=C3=B6rg?=\" <j@x>,\r\n\tother@x\r\nmessage-id:<tight@x>\r\n\r\n",
            // Two of them: the first counts.
            b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n",
            // Bare LF line ends, and raw 8-bit bytes in the id.
            b"From: a\nMessage-Id: <lf@x>\n\n",
            b"From: a\r\nMessage-Id: <x@\xff\xfe>\r\n\r\n",
            // A continuation line that merely starts like the field.
            b"Subject: a\r\n Message-ID: <not-a-field@x>\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(
                message_id(case),
                message_id_before(case),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(
            message_id(b"Message-ID: <left\r\n\tright@example.org>\r\n\r\n"),
            "<leftright@example.org>"
        );
        assert_eq!(
            message_id(b"Subject: a\r\n Message-ID: <not-a-field@x>\r\n\r\n"),
            ""
        );
    }

    #[test]
    fn message_id_is_found_case_insensitively_and_unfolded() {
        assert_eq!(
            message_id(b"Subject: x\r\nMESSAGE-ID:\r\n <a@b>\r\n\r\n"),
            "<a@b>"
        );
        assert_eq!(message_id(b"Subject: x\r\n\r\n"), "");
        // A raw UTF-8 header whose character straddles byte 11.
        assert_eq!(
            message_id("Subject: 日本語 x\r\nMessage-ID: <u@x>\r\n".as_bytes()),
            "<u@x>"
        );
    }
}
