//! Replays the seed corpora (and any saved crash) of the fuzz targets for what
//! a store sends back — the proxy's backend login, the migration client's
//! response reader, the SMTP/LMTP reply reader — on stable, so what the
//! fuzzer found once stays fixed, and checks that the realistic seeds are
//! read the way the real stores mean them.

use std::collections::BTreeMap;

use mailshift::store::imap::client::{replay_bearer_login, replay_login, replay_replies};
use mailshift::store::imap::Status;
use mailshift::store::smtp::take_reply;
use mailshift::store::Error as StoreError;

/// Every file of `fuzz/corpus/NAME`, by file name.
fn corpus(name: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = format!("{}/fuzz/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let files: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    assert!(
        files.len() >= 10,
        "seed corpus {name} missing: {}",
        files.len()
    );
    files
}

/// What a replayed login ended with.
struct Done {
    capabilities: String,
    leftover: Vec<u8>,
}

#[test]
fn backend_login_corpus() {
    let files = corpus("backend_login");
    for (name, data) in &files {
        if let Some((&mode, replies)) = data.split_first() {
            let result = if mode & 2 == 2 {
                replay_bearer_login(replies)
            } else {
                replay_login(replies, mode & 1 == 1)
            };
            if let Ok((caps, _)) = result {
                assert!(caps.iter().all(|c| !c.contains('\n')), "{name}");
            }
        }
    }
    let run = |name: &str| {
        let data = &files[name];
        replay_login(&data[1..], data[0] & 1 == 1).map(|(caps, leftover)| Done {
            capabilities: caps.join(" "),
            leftover,
        })
    };
    let done = run("dovecot-user").expect("dovecot login");
    assert!(
        done.capabilities.contains("UIDPLUS"),
        "post-login capabilities"
    );
    assert!(run("dovecot-master").is_ok());
    // A client's token: the store's failure challenge answered, its NO typed.
    let bearer = |name: &str| replay_bearer_login(&files[name][1..]);
    assert!(bearer("dovecot-bearer-ok").is_ok());
    assert!(matches!(
        bearer("dovecot-bearer-challenge"),
        Err(StoreError::Rejected(_))
    ));
    let done = run("dovecot-leftover").expect("dovecot login");
    assert_eq!(done.leftover, b"* 3 EXISTS\r\n* OK [ALERT] hello\r\n");
    let done = run("cyrus-caps-untagged").expect("cyrus login");
    assert!(done
        .capabilities
        .starts_with("IMAP4rev1 LITERAL+ ID ENABLE ACL"));
    let done = run("no-sasl-ir-then-capability").expect("login");
    assert_eq!(done.capabilities, "IMAP4rev1 IDLE UIDPLUS");
    assert!(run("login-command-no-auth-plain").is_ok());
    assert!(matches!(
        run("rejected"),
        Err(StoreError::Rejected(r)) if r.contains("AUTHENTICATIONFAILED")
    ));
    for unavailable in ["unavailable-no", "bye-greeting", "bye-during-login"] {
        assert!(
            matches!(run(unavailable), Err(StoreError::Unavailable(_))),
            "{unavailable}"
        );
    }
    for broken in [
        "bad-greeting-nul",
        "missing-crlf",
        "long-line",
        "logindisabled",
    ] {
        assert!(run(broken).is_err(), "{broken}");
    }
}

#[test]
fn migrate_reply_corpus() {
    let files = corpus("migrate_reply");
    for (name, data) in &files {
        for (max_line, max_literal) in [(1024, 4096), (4 << 20, 1 << 30)] {
            let (replies, _) = replay_replies(data, max_line, max_literal);
            for r in &replies {
                assert!(!r.text.contains('\n'), "{name}");
            }
        }
    }
    let run = |name: &str| replay_replies(&files[name], 4 << 20, 1 << 30);

    let (replies, err) = run("dovecot-select");
    assert!(err.is_none());
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].untagged.len(), 8);
    assert!(replies[0].codes().count() >= 4, "UIDVALIDITY, UIDNEXT, ...");

    // Literal bytes (a body line that looks like a tagged reply included)
    // belong to the FETCH, not to the reply.
    let (replies, _) = run("fetch-literals");
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, Status::Ok);
    assert_eq!(replies[0].untagged.len(), 2);
    assert_eq!(replies[0].data().count(), 2, "both FETCHes decode");

    let (replies, _) = run("appenduid-multi");
    let statuses: Vec<Status> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Status::Ok, Status::Ok, Status::No, Status::Bad]);
    assert_eq!(
        replies[0].append_uids(),
        Some((1700000000, vec![4, 5, 6, 9]))
    );

    // A store naming absurd UID ranges gets no UID map (and no huge
    // allocation), not a panic.
    let (replies, _) = run("appenduid-huge-ranges");
    assert_eq!(replies.len(), 4);
    // RFC 4315: a uid-range is the values between its ends in either order.
    assert_eq!(replies[2].append_uids(), Some((1, (1..=9).collect())));
    for i in [0, 1, 3] {
        assert!(replies[i].append_uids().is_none(), "reply {i}");
    }

    let (replies, err) = run("bye");
    assert!(replies.is_empty() && err.is_some());
    let (replies, err) = run("huge-literal-count");
    assert!(replies.is_empty() && err.is_some());
    let (replies, err) = run("missing-crlf");
    assert!(replies.is_empty() && err.is_none(), "waits for the CRLF");
}

/// Every reply in `data`, read as the store leg does, bytes arriving in
/// small chunks; and whether an error ended it.
fn smtp_replies(data: &[u8]) -> (Vec<mailshift::store::smtp::Reply>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in data.chunks(509) {
        buf.extend_from_slice(chunk);
        loop {
            match take_reply(&mut buf, "replay") {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

#[test]
fn smtp_reply_corpus() {
    let files = corpus("smtp_reply");
    for (name, data) in &files {
        let (replies, _) = smtp_replies(data);
        for r in &replies {
            assert!(!r.lines.is_empty() && r.lines.len() <= 100, "{name}");
            let code = format!("{:03}", r.code);
            for l in r.to_client().split("\r\n") {
                assert!(l.starts_with(&code), "{name}: {l:?}");
            }
        }
    }
    let (replies, err) = smtp_replies(&files["postfix-ehlo"]);
    assert!(!err);
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [220, 250, 250, 250, 354, 250, 221]);
    assert_eq!(replies[1].lines.len(), 13);
    assert!(replies[1].lines.iter().any(|l| l.starts_with("XCLIENT ")));

    let (replies, _) = smtp_replies(&files["dovecot-lmtp"]);
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [220, 250, 250, 250, 550, 354, 250, 452]);

    for broken in [
        "mixed-codes-multiline",
        "too-many-lines",
        "long-line",
        "nul-and-short",
        "crash-code-with-leading-zero",
    ] {
        let (_, err) = smtp_replies(&files[broken]);
        assert!(err, "{broken} accepted");
    }
    let (replies, err) = smtp_replies(&files["missing-crlf"]);
    assert!(replies.is_empty() && !err, "waits for the CRLF");
}
