//! The old store's POP3 UIDLs, read during the migration: for a store whose
//! UIDLs cannot be computed from an IMAP UID (Courier's are Maildir file
//! names; a Dovecot may use `%g` GUIDs or `%f` file names), a pass with
//! reading to do (the first, or one that left copies without a UIDL) lists
//! them over the store's own POP3, after its folder sync, and ties each to
//! the source IMAP UID of the message with the same header block. At cutover INBOX's UID map
//! carries them ([`FolderMap::uidls`](crate::continuity::map::FolderMap)),
//! and the POP3 relay answers them for the migrated messages.
//!
//! ```text
//!  POP3  UIDL ─► UIDLs not tied yet ─► TOP n 0 ───────────────┐
//!  IMAP  EXAMINE INBOX, UID SEARCH ALL ─► UIDs not tied yet ─► UID FETCH (BODY.PEEK[HEADER])
//!        ─► pair up (same header block in order, then a unique Message-ID) ─► sync state
//! ```
//!
//! Only what changed is read again: a later read lists the UIDLs (one
//! command) and reads the headers of new messages only. The POP3
//! session ends without QUIT, so it never reaches the UPDATE state and
//! changes nothing on the store. A failure never fails the pass: the
//! messages it did not tie keep the UIDL `pop3_uidl_format` computes.

use std::collections::{HashMap, HashSet, VecDeque};

use imap_codec::imap_types::response::{Code, Data};

use super::message::{self, fnv1a};
use super::state::Pop3Uidls;
use super::sync::{credentials, listed_password, Engine};
use super::Error;
use crate::store::imap::fetch::bodies;
use crate::store::imap::{Client, Status};
use crate::store::pop3;

/// The folder POP3 sees.
pub const INBOX: &str = "INBOX";

/// How long the final pass (inside the hold) may spend reading UIDLs.
const FINAL_PASS_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Messages whose headers are read per round (bounds what is held at once).
const CHUNK: usize = 256;

/// What reading the old store's UIDLs came to, for the pass report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pop3UidlReport {
    /// Whether this migration reads them (the source has `pop3` and no
    /// `pop3_uidl_format`).
    pub enabled: bool,
    /// Messages the old store's POP3 lists.
    pub listed: usize,
    /// Of those, tied to a source message (now or by an earlier pass).
    pub tied: usize,
    /// Headers read this pass (POP3 messages not tied before).
    pub read: usize,
    /// Why they could not be read this pass.
    pub error: Option<String>,
}

impl Pop3UidlReport {
    /// Messages listed but not tied to a source message: their clients may
    /// see them under another UIDL after the cutover.
    pub fn untied(&self) -> usize {
        self.listed.saturating_sub(self.tied)
    }

    /// The report of a read cut short after `budget`.
    fn timed_out(budget: std::time::Duration) -> Pop3UidlReport {
        tracing::warn!(
            budget_ms = budget.as_millis() as u64,
            "POP3 UIDLs: the old store's POP3 took too long inside the hold; new messages keep the computed UIDL"
        );
        Pop3UidlReport {
            enabled: true,
            error: Some(format!("not read within {budget:?} inside the hold")),
            ..Pop3UidlReport::default()
        }
    }

    /// One line for the migrate command's output.
    pub fn summary(&self) -> String {
        match &self.error {
            Some(e) => format!("POP3 UIDLs: not read this pass: {e}"),
            None if self.untied() > 0 => format!(
                "POP3 UIDLs: {} of {} kept; {} match no IMAP message and get the computed UIDL",
                self.tied,
                self.listed,
                self.untied()
            ),
            None => format!("POP3 UIDLs: {} of {} kept", self.tied, self.listed),
        }
    }
}

/// After a pass's folder sync: reads only when there is reading to do (a
/// first pass, copies without a UIDL), so a pass that copied nothing, and a
/// final pass with nothing new, log in to nothing; `in_hold` (the final
/// pass) within [`FINAL_PASS_BUDGET`], as a store whose POP3 does not
/// answer must not keep the user's mail waiting.
pub async fn after_folders(
    engine: &Engine,
    user: &str,
    password: Option<&[u8]>,
    in_hold: bool,
) -> Pop3UidlReport {
    if !untied_copies(engine, user).await.unwrap_or(true) {
        return Pop3UidlReport::default();
    }
    if !in_hold {
        return refresh(engine, user, password).await;
    }
    tokio::time::timeout(FINAL_PASS_BUDGET, refresh(engine, user, password))
        .await
        .unwrap_or_else(|_| Pop3UidlReport::timed_out(FINAL_PASS_BUDGET))
}

/// Reads what changed since the last pass and stores it; never fails the
/// pass (the error is in the report, and logged).
async fn refresh(engine: &Engine, user: &str, password: Option<&[u8]>) -> Pop3UidlReport {
    let mut report = Pop3UidlReport {
        enabled: true,
        ..Pop3UidlReport::default()
    };
    match read(engine, user, password, &mut report).await {
        Ok(()) if report.untied() > 0 => tracing::warn!(
            listed = report.listed,
            untied = report.untied(),
            "POP3 UIDLs: some old messages match no IMAP message; they keep the computed UIDL"
        ),
        Ok(()) => tracing::debug!(
            listed = report.listed,
            read = report.read,
            "POP3 UIDLs read"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "POP3 UIDLs not read this pass");
            report.error = Some(e.to_string());
        }
    }
    report
}

/// Whether there is reading to do: nothing was read yet, or INBOX holds a
/// copied message whose UIDL is not read yet.
async fn untied_copies(engine: &Engine, user: &str) -> Result<bool, Error> {
    // One after the other: the first opens the user's file for both.
    let known = engine.state.pop3_uidls(user, INBOX).await?;
    if known.src_validity == 0 {
        return Ok(true);
    }
    let st = engine.state.load_async(user, INBOX).await?;
    if st.map.is_empty() {
        return Ok(false);
    }
    if known.src_validity != st.src_validity {
        return Ok(true);
    }
    let tied: HashSet<u32> = known.by_uidl.values().copied().collect();
    Ok(st.map.keys().any(|uid| !tied.contains(uid)))
}

async fn read(
    engine: &Engine,
    user: &str,
    password: Option<&[u8]>,
    report: &mut Pop3UidlReport,
) -> Result<(), Error> {
    let store = &engine.from;
    let listed = listed_password(store, user, password)?;
    let creds = credentials(store, user, password.or(listed.as_deref()))?;
    let mut known = engine.state.pop3_uidls(user, INBOX).await?;
    let before = known.clone();
    // POP3, then IMAP, one session at a time: a store that locks the
    // maildrop for a POP3 session (qpopper) or counts a user's sessions
    // (Dovecot's mail_max_userip_connections) sees one.
    let mut pop = pop3::Client::connect(store, &creds, None).await?;
    let popped = read_pop3(&mut pop, &known).await;
    pop.abandon().await;
    let (uidls, from_pop) = popped?;
    report.listed = uidls.len();
    report.read = from_pop.len();
    let mut imap = Client::connect(store, &creds, None).await?;
    let tied = tie(&mut imap, &mut known, &uidls, &from_pop).await;
    imap.logout().await;
    tied?;
    report.tied = known.by_uidl.len();
    if known != before {
        engine.state.save_pop3_uidls(user, INBOX, &known).await?;
    }
    Ok(())
}

/// The maildrop's UIDLs, and the header key of each message whose UIDL
/// `known` does not tie yet.
async fn read_pop3(
    pop: &mut pop3::Client,
    known: &Pop3Uidls,
) -> Result<(Vec<(u32, String)>, Vec<(String, Key)>), Error> {
    let uidls = pop.uidls().await?;
    let unknown: HashMap<u32, &str> = uidls
        .iter()
        .filter(|(_, u)| !known.by_uidl.contains_key(u))
        .map(|(n, u)| (*n, u.as_str()))
        .collect();
    let mut from_pop = Vec::with_capacity(unknown.len());
    if unknown.is_empty() {
        return Ok((uidls, from_pop));
    }
    let caps = pop.capabilities().await?;
    let pipelined = caps.iter().any(|c| c == "PIPELINING");
    if caps.iter().any(|c| c == "UTF8") {
        // RFC 6856: without it a store may replace a message whose header
        // is raw UTF-8 with a notice (Courier does), whose header then
        // matches nothing. The UIDLs stay what clients see without it.
        pop.command("UTF8").await?;
    }
    let mut msgnos: Vec<u32> = unknown.keys().copied().collect();
    msgnos.sort_unstable();
    for chunk in msgnos.chunks(CHUNK) {
        for (n, header) in pop.headers(chunk, pipelined).await? {
            if let (Some(header), Some(uidl)) = (header, unknown.get(&n)) {
                from_pop.push((uidl.to_string(), Key::of(&header)));
            }
        }
    }
    Ok((uidls, from_pop))
}

/// Ties what POP3 read to the source's INBOX over IMAP, into `known`.
async fn tie(
    imap: &mut Client,
    known: &mut Pop3Uidls,
    uidls: &[(u32, String)],
    from_pop: &[(String, Key)],
) -> Result<(), Error> {
    let (validity, uids) = inbox(imap).await?;
    if known.src_validity != validity {
        // Ties to UIDs of another UIDVALIDITY name other messages: the next
        // pass reads everything again.
        *known = Pop3Uidls {
            src_validity: validity,
            ..Pop3Uidls::default()
        };
    }
    // Gone on either side: forget (a UIDL is never reused for another
    // message, RFC 1939; a UID neither).
    let listed: HashSet<&str> = uidls.iter().map(|(_, u)| u.as_str()).collect();
    let present: HashSet<u32> = uids.iter().copied().collect();
    known
        .by_uidl
        .retain(|uidl, uid| listed.contains(uidl.as_str()) && present.contains(uid));
    let from_pop: Vec<(String, Key)> = from_pop
        .iter()
        .filter(|(u, _)| !known.by_uidl.contains_key(u))
        .cloned()
        .collect();
    if from_pop.is_empty() {
        return Ok(());
    }
    let taken: HashSet<u32> = known.by_uidl.values().copied().collect();
    let free: Vec<u32> = uids.into_iter().filter(|u| !taken.contains(u)).collect();
    let mut from_imap = Vec::with_capacity(free.len());
    for chunk in free.chunks(CHUNK) {
        let set = message::uid_set(chunk);
        let reply = imap
            .run(&format!("UID FETCH {set} (UID BODY.PEEK[HEADER])"))
            .await?;
        from_imap.extend(
            bodies(&reply)
                .into_iter()
                .map(|(uid, h)| (uid, Key::of(&h))),
        );
    }
    from_imap.sort_by_key(|(u, _)| *u);
    known.by_uidl.extend(pair_up(&from_pop, &from_imap));
    Ok(())
}

/// EXAMINE INBOX and every UID in it, in one round trip; the connection
/// stays with INBOX selected (read-only).
async fn inbox(imap: &mut Client) -> Result<(u32, Vec<u32>), Error> {
    let examine = imap.queue(b"EXAMINE INBOX");
    let search = imap.queue(b"UID SEARCH ALL");
    imap.flush().await?;
    let opened = imap.reply(&examine).await?;
    let found = imap.reply(&search).await?;
    if opened.status != Status::Ok || found.status != Status::Ok {
        return Err(Error::Unsupported(format!(
            "{}: EXAMINE INBOX / UID SEARCH ALL refused: {}",
            imap.store(),
            if opened.status != Status::Ok {
                &opened.text
            } else {
                &found.text
            }
        )));
    }
    let validity = opened
        .codes()
        .find_map(|c| match c {
            Code::UidValidity(v) => Some(v.get()),
            _ => None,
        })
        .unwrap_or(0);
    let mut uids: Vec<u32> = found
        .data()
        .filter_map(|d| match d {
            Data::Search(uids, ..) => Some(uids.into_iter().map(|u| u.get()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    uids.sort_unstable();
    Ok((validity, uids))
}

/// What ties a POP3 message to an IMAP message: the header block (line
/// ends and the closing empty line aside, as POP3 and IMAP may differ
/// there) and its Message-ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    header_hash: u64,
    message_id: String,
}

impl Key {
    /// The key of a header block as either protocol gives it.
    pub fn of(header: &[u8]) -> Key {
        let mut bare: Vec<u8> = header.iter().copied().filter(|&b| b != b'\r').collect();
        while bare.last() == Some(&b'\n') {
            bare.pop();
        }
        Key {
            header_hash: fnv1a(&bare),
            message_id: message::message_id(header),
        }
    }
}

/// Pairs POP3 messages (UIDL, key; in message-number order) with IMAP
/// messages (UID, key; in UID order): first by the same header block, the
/// n-th copy of a block with the n-th (nothing else tells identical copies
/// apart; a store's POP3 order may differ from its UIDs, so two copies may
/// swap UIDLs); what is left by a Message-ID that
/// is unique among what is left on both sides (a POP3 server that adds a
/// header of its own). Nothing else is guessed.
pub fn pair_up(pop: &[(String, Key)], imap: &[(u32, Key)]) -> Vec<(String, u32)> {
    let mut by_hash: HashMap<u64, VecDeque<u32>> = HashMap::new();
    for (uid, key) in imap {
        by_hash.entry(key.header_hash).or_default().push_back(*uid);
    }
    let mut pairs = Vec::new();
    let mut used = HashSet::new();
    let mut left = Vec::new();
    for (uidl, key) in pop {
        match by_hash
            .get_mut(&key.header_hash)
            .and_then(VecDeque::pop_front)
        {
            Some(uid) => {
                used.insert(uid);
                pairs.push((uidl.clone(), uid));
            }
            None => left.push((uidl, key)),
        }
    }
    let mut imap_ids: HashMap<&str, Vec<u32>> = HashMap::new();
    for (uid, key) in imap {
        if !used.contains(uid) && !key.message_id.is_empty() {
            imap_ids.entry(&key.message_id).or_default().push(*uid);
        }
    }
    let mut pop_ids: HashMap<&str, usize> = HashMap::new();
    for (_, key) in &left {
        *pop_ids.entry(&key.message_id).or_default() += 1;
    }
    for (uidl, key) in left {
        if key.message_id.is_empty() || pop_ids.get(key.message_id.as_str()) != Some(&1) {
            continue;
        }
        if let Some([uid]) = imap_ids.get(key.message_id.as_str()).map(Vec::as_slice) {
            pairs.push((uidl.clone(), *uid));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside the hold, an old store whose POP3 accepts and never greets
    /// costs the final pass its budget, not the store's connect_timeout
    /// (60 s here); the report says why. On tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_silent_pop3_costs_the_hold_its_budget_only() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let users = dir.path().join("users.toml");
        std::fs::write(&users, "[users.alice]\nmailhost = \"old.example.org\"\n").expect("write");
        let cfg = crate::config::Config::parse(&format!(
            r#"
[directory]
kind = "file"
path = "{}"
[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:{port}"
pop3 = "pop3://127.0.0.1:{port}"
connect_timeout = "60s"
[backends.new]
mailhost = ["new.example.org"]
imap = "imap://127.0.0.1:{port}"
[migration]
from = "old"
to = "new"
state_dir = "{}"
"#,
            users.display(),
            dir.path().join("state").display()
        ))
        .expect("valid");
        let engine = Engine::from_config(&cfg).expect("engine");
        assert!(engine.reads_pop3_uidls);
        let started = tokio::time::Instant::now();
        let report = after_folders(&engine, "alice", Some(b"pw"), true).await;
        assert_eq!(started.elapsed(), FINAL_PASS_BUDGET);
        assert!(report.enabled);
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("inside the hold")),
            "{report:?}"
        );
        held.abort();
    }

    fn pop(uidl: &str, header: &str) -> (String, Key) {
        (uidl.to_string(), Key::of(header.as_bytes()))
    }

    fn imap(uid: u32, header: &str) -> (u32, Key) {
        (uid, Key::of(header.as_bytes()))
    }

    #[test]
    fn the_same_header_block_ties_whatever_the_line_ends() {
        let pairs = pair_up(
            &[
                pop("1234.M1.host", "Subject: a\r\nMessage-ID: <a@x>\r\n\r\n"),
                pop("1235.M2.host", "Subject: b\r\n\r\n"),
            ],
            &[
                imap(7, "Subject: b\n\n"),
                imap(3, "Subject: a\nMessage-ID: <a@x>\n"),
            ],
        );
        assert_eq!(
            pairs,
            [
                ("1234.M1.host".to_string(), 3),
                ("1235.M2.host".to_string(), 7)
            ]
        );
    }

    #[test]
    fn copies_of_one_message_tie_in_order() {
        let h = "From: x\r\nSubject: twice\r\n\r\n";
        let pairs = pair_up(&[pop("u1", h), pop("u2", h)], &[imap(4, h), imap(9, h)]);
        assert_eq!(pairs, [("u1".to_string(), 4), ("u2".to_string(), 9)]);
        // A third copy on the POP3 side has no partner: it stays untied.
        let pairs = pair_up(&[pop("u1", h), pop("u2", h), pop("u3", h)], &[imap(4, h)]);
        assert_eq!(pairs, [("u1".to_string(), 4)]);
    }

    #[test]
    fn a_header_the_pop3_server_adds_falls_back_to_a_unique_message_id() {
        let pairs = pair_up(
            &[
                pop("x1", "X-UIDL: x1\r\nMessage-ID: <one@x>\r\n\r\n"),
                pop("x2", "X-UIDL: x2\r\nMessage-ID: <dup@x>\r\n\r\n"),
                pop("x3", "X-UIDL: x3\r\nMessage-ID: <dup@x>\r\n\r\n"),
                pop("x4", "X-UIDL: x4\r\n\r\n"),
            ],
            &[
                imap(1, "Message-ID: <one@x>\r\n\r\n"),
                imap(2, "Message-ID: <dup@x>\r\nSubject: 1\r\n\r\n"),
                imap(3, "Message-ID: <dup@x>\r\nSubject: 2\r\n\r\n"),
                imap(4, "Subject: none\r\n\r\n"),
            ],
        );
        // Duplicated or missing Message-IDs are not guessed at.
        assert_eq!(pairs, [("x1".to_string(), 1)]);
    }

    #[test]
    fn nothing_ties_to_a_message_already_tied() {
        let pairs = pair_up(
            &[
                pop("a", "Message-ID: <m@x>\r\nSubject: s\r\n\r\n"),
                pop("b", "X-Added: 1\r\nMessage-ID: <m@x>\r\n\r\n"),
            ],
            &[imap(5, "Message-ID: <m@x>\r\nSubject: s\r\n\r\n")],
        );
        assert_eq!(pairs, [("a".to_string(), 5)]);
    }
}
