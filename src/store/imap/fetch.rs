//! Small pieces of FETCH on the store side: naming a set of UIDs, and reading
//! whole messages back by UID.

use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::Data;

use super::Reply;

/// A compact IMAP sequence set (`1:5,7,9:12`) of ascending UIDs.
pub fn sequence_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// (UID, body) of each message in a `UID FETCH ... (UID BODY.PEEK[])` reply
/// (or of the one section asked for, `BODY.PEEK[HEADER]`), in UID order; a
/// response without both is left out.
pub fn bodies(reply: &Reply) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for data in reply.data() {
        let Data::Fetch { items, .. } = data else {
            continue;
        };
        let (mut uid, mut body) = (0, None);
        for item in items.into_inner() {
            match item {
                MessageDataItem::Uid(u) => uid = u.get(),
                MessageDataItem::BodyExt { data, .. } => body = data.into_option(),
                _ => {}
            }
        }
        if let (true, Some(body)) = (uid != 0, body) {
            out.push((uid, body.into_owned()));
        }
    }
    out.sort_by_key(|m| m.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_uids_become_ranges() {
        assert_eq!(sequence_set(&[]), "");
        assert_eq!(sequence_set(&[7]), "7");
        assert_eq!(sequence_set(&[1, 2, 3, 5, 9, 10]), "1:3,5,9:10");
    }
}
