//! A generated mailbox with the variety of real mail, loaded into a store over
//! IMAP (APPEND as the master user, with flags and INTERNALDATE).
//!
//! Folders: INBOX, the special-use ones, nested, and UTF-8 names (sent as
//! modified UTF-7). Messages: plain, multipart/alternative, base64
//! attachments (some over 1 MB), 8-bit and RFC 2047 headers, a bare-LF
//! message, duplicate Message-IDs, messages without Message-ID, flags and
//! keywords, dates over years.

use super::ImapClient;

/// One message to load.
pub struct Msg {
    pub folder: &'static str,
    pub flags: &'static str,
    pub date: String,
    pub body: Vec<u8>,
}

/// Folder names as they travel (old store, `/` delimiter).
pub const FOLDERS: &[&str] = &[
    "INBOX",
    "Sent",
    "Drafts",
    "Trash",
    "Junk",
    "Archive",
    "Projects",
    "Projects/2024",
    "Projects/2024/Q1",
    "R&AOk-unions", // Réunions
    "&ZeVnLIqe-",   // 日本語
    "Lists/rust-users",
    "Receipts",
];

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
        if (i + 1) % 19 == 0 {
            out.push_str("\r\n");
        }
    }
    out
}

/// `n` messages all in INBOX (one big folder, copied in many batches).
pub fn generate_inbox(n: usize, seed: u64) -> Vec<Msg> {
    let mut msgs = generate(n, seed);
    for m in &mut msgs {
        m.folder = "INBOX";
    }
    msgs
}

/// `n` messages spread over [`FOLDERS`], deterministic for a seed.
pub fn generate(n: usize, seed: u64) -> Vec<Msg> {
    let mut s = seed;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let flag_sets = [
        "",
        "\\Seen",
        "\\Seen \\Flagged",
        "\\Answered \\Seen",
        "\\Seen $Forwarded",
        "$Junk",
        "\\Draft",
        "\\Seen project-x",
        "\\Flagged $Label1",
    ];
    let mut out = Vec::new();
    for i in 0..n {
        let folder = FOLDERS[i % FOLDERS.len()];
        let year = 2012 + (lcg(&mut s) % 13);
        let date = format!(
            "{:02}-{}-{} {:02}:{:02}:{:02} +0{}00",
            1 + lcg(&mut s) % 28,
            months[(lcg(&mut s) % 12) as usize],
            year,
            lcg(&mut s) % 24,
            lcg(&mut s) % 60,
            lcg(&mut s) % 60,
            lcg(&mut s) % 3
        );
        let flags = flag_sets[(lcg(&mut s) as usize) % flag_sets.len()];
        // Duplicates: every 17th message reuses the Message-ID of the one before.
        let mid = if i % 23 == 5 {
            String::new()
        } else if i % 17 == 3 && i > 0 {
            format!("Message-ID: <m{}.{seed}@corpus.example.org>\r\n", i - 1)
        } else {
            format!("Message-ID: <m{i}.{seed}@corpus.example.org>\r\n")
        };
        let kind = i % 6;
        let body = match kind {
            0 => format!(
                "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: plain {i}\r\n{mid}\
                 Date: {date}\r\n\r\nHello {i}\r\n{}",
                "A line of text that is long enough to be realistic.\r\n".repeat((lcg(&mut s) % 40) as usize)
            )
            .into_bytes(),
            1 => format!(
                "From: =?UTF-8?B?w4lsb8Ovc2U=?= <eloise@example.org>\r\nTo: alice@example.org\r\n\
                 Subject: =?UTF-8?Q?R=C3=A9union_{i}?=\r\n{mid}Date: {date}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/alternative; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                 Ça va? Prêt pour la réunion №{i}.\r\n--b{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
                 <p>Ça va?</p>\r\n--b{i}--\r\n"
            )
            .into_bytes(),
            2 => {
                let size = if i % 60 == 2 { 1_200_000 } else { 20_000 + (lcg(&mut s) % 50_000) as usize };
                let data: Vec<u8> = (0..size).map(|_| (lcg(&mut s) & 0xff) as u8).collect();
                format!(
                    "From: scanner@example.org\r\nTo: alice@example.org\r\nSubject: scan {i}\r\n{mid}\
                     Date: {date}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m{i}\"\r\n\r\n\
                     --m{i}\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n--m{i}\r\n\
                     Content-Type: application/pdf; name=\"scan{i}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--m{i}--\r\n",
                    base64(&data)
                )
                .into_bytes()
            }
            3 => format!(
                "From: \"Jürgen Groß\" <juergen@example.de>\r\nTo: alice@example.org\r\nSubject: Grüße {i} – 8bit\r\n{mid}\
                 Date: {date}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                 Schöne Grüße aus München, 東京 {i}\r\n"
            )
            .into_bytes(),
            // Bare LF line endings, as some old stores keep them.
            4 => format!(
                "From: legacy@example.org\nTo: alice@example.org\nSubject: bare LF {i}\n{}Date: {date}\n\nold\nstyle\n",
                mid.replace("\r\n", "\n")
            )
            .into_bytes(),
            _ => format!(
                "From: list@lists.example.org\r\nTo: rust-users@lists.example.org\r\nSubject: [rust] thread {i}\r\n{mid}\
                 Date: {date}\r\nList-Id: <rust-users.lists.example.org>\r\nIn-Reply-To: <m{}.{seed}@corpus.example.org>\r\n\r\nreply\r\n",
                i.saturating_sub(1)
            )
            .into_bytes(),
        };
        out.push(Msg {
            folder,
            flags,
            date,
            body,
        });
    }
    out
}

/// Creates the folders and APPENDs the messages (pipelined, LITERAL+) as
/// `user` through the master login `user*master`.
pub fn load(port: u16, user: &str, master: &str, master_pw: &str, msgs: &[Msg]) {
    let mut c = ImapClient::connect(port);
    c.login(&format!("{user}*{master}"), master_pw);
    for f in FOLDERS.iter().filter(|f| **f != "INBOX") {
        let _ = c.cmd(&format!("CREATE \"{f}\""));
        let _ = c.cmd(&format!("SUBSCRIBE \"{f}\""));
    }
    for chunk in msgs.chunks(50) {
        let mut tags = Vec::new();
        for m in chunk {
            let tag = c.send_literal(
                &format!("APPEND \"{}\" ({}) \"{}\"", m.folder, m.flags, m.date),
                &m.body,
            );
            tags.push(tag);
        }
        for t in tags {
            let (_, tagged) = c.read_until_tagged(&t);
            assert!(tagged.contains(" OK"), "APPEND failed: {tagged}");
        }
    }
    c.ok("LOGOUT");
}
