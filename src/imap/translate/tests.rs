use std::sync::Arc;

use super::*;

/// INBOX: old UIDs 1,3,..,19 are new 1..10; old UIDNEXT 30, new 11; old
/// HIGHESTMODSEQ 5000, new 300. Archive: old 1,3,..,9 are new 1..5, UIDNEXT
/// 20 / 6. Gap: new UID 2 has no old UID. New: no map.
fn user() -> Arc<dyn UserMapping> {
    let mut archive = SampleFolder::odd(5);
    archive.client_uidvalidity = 4444;
    archive.store_uidvalidity = 3333;
    archive.client_uidnext = 20;
    let gap = SampleFolder {
        pairs: vec![(1, 1), (3, 3)],
        client_uidnext: 10,
        store_uidnext: 5,
        ..SampleFolder::odd(1)
    };
    Arc::new(SampleUser {
        folders: vec![
            ("INBOX".into(), SampleFolder::odd(10)),
            ("Archive".into(), archive),
            ("Gap".into(), gap),
        ],
    })
}

fn up(t: &mut Translator, s: &str) -> String {
    let mut out = Vec::new();
    t.from_client(s.as_bytes(), &mut out);
    String::from_utf8(out).expect("utf8")
}

fn down(t: &mut Translator, s: &str) -> String {
    let mut out = Vec::new();
    t.from_store(s.as_bytes(), &mut out).expect("response");
    String::from_utf8(out).expect("utf8")
}

fn replies(t: &mut Translator) -> String {
    let mut out = Vec::new();
    t.take_replies(&mut out);
    String::from_utf8(out).expect("utf8")
}

/// A translator with `folder` selected (its SELECT answered by the store).
fn selected(folder: &str) -> Translator {
    let mut t = Translator::new(user());
    up(&mut t, &format!("s SELECT {folder}\r\n"));
    down(&mut t, "s OK [READ-WRITE] Select completed.\r\n");
    t
}

#[test]
fn uid_fetch_set_becomes_the_stores() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(&mut t, "a UID FETCH 3:7 (FLAGS)\r\n"),
        "a UID FETCH 2:4 (FLAGS)\r\n"
    );
    assert_eq!(
        up(&mut t, "b UID FETCH 7:3,19 FLAGS\r\n"),
        "b UID FETCH 2:4,10 FLAGS\r\n"
    );
    assert_eq!(
        up(&mut t, "c uid fetch 1:* UID\r\n"),
        "c uid fetch 1:* UID\r\n"
    );
    // Old UIDs with no message name nothing on the store either.
    assert_eq!(
        up(&mut t, "d UID FETCH 2,4 FLAGS\r\n"),
        "d UID FETCH 4294967295 FLAGS\r\n"
    );
    // Above the old UIDNEXT: mail that arrived after cutover.
    assert_eq!(
        up(&mut t, "e UID FETCH 30:31,20:* FLAGS\r\n"),
        "e UID FETCH 11:12,11:* FLAGS\r\n"
    );
    // Plain sequence numbers need no change.
    assert_eq!(up(&mut t, "f FETCH 3:7 (UID)\r\n"), "f FETCH 3:7 (UID)\r\n");
}

#[test]
fn fetch_responses_carry_old_uids_and_modseqs() {
    let mut t = selected("INBOX");
    up(&mut t, "a UID FETCH 1:* (FLAGS MODSEQ)\r\n");
    assert_eq!(
        down(&mut t, "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (301))\r\n"),
        "* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (5001))\r\n"
    );
    assert_eq!(
        down(&mut t, "* 11 FETCH (UID 11 FLAGS ())\r\n"),
        "* 11 FETCH (UID 30 FLAGS ())\r\n"
    );
    // UID after a literal body.
    assert_eq!(
        down(
            &mut t,
            "* 1 FETCH (BODY[HEADER.FIELDS (UID)] {5}\r\nUID 1 UID 10)\r\n"
        ),
        "* 1 FETCH (BODY[HEADER.FIELDS (UID)] {5}\r\nUID 1 UID 19)\r\n"
    );
    assert_eq!(
        down(&mut t, "a OK Fetch completed.\r\n"),
        "a OK Fetch completed.\r\n"
    );
}

#[test]
fn a_store_uid_without_an_old_uid_is_left_out_never_guessed() {
    let mut t = selected("Gap");
    up(&mut t, "a UID FETCH 1:* FLAGS\r\n");
    assert_eq!(
        down(&mut t, "* 2 FETCH (UID 2 FLAGS ())\r\n"),
        "* 2 FETCH (FLAGS ())\r\n"
    );
    up(&mut t, "b UID SEARCH ALL\r\n");
    assert_eq!(down(&mut t, "* SEARCH 1 2 3\r\n"), "* SEARCH 1 3\r\n");
}

#[test]
fn select_presents_the_old_uidvalidity_uidnext_and_highestmodseq() {
    let mut t = Translator::new(user());
    assert_eq!(up(&mut t, "s SELECT inbox\r\n"), "s SELECT inbox\r\n");
    let got = down(
        &mut t,
        "* 10 EXISTS\r\n* OK [UIDVALIDITY 2222] UIDs valid\r\n* OK [UIDNEXT 13] Predicted next UID\r\n\
         * OK [HIGHESTMODSEQ 310] Highest\r\ns OK [READ-WRITE] Select completed.\r\n",
    );
    assert_eq!(
        got,
        "* 10 EXISTS\r\n* OK [UIDVALIDITY 1111] UIDs valid\r\n* OK [UIDNEXT 32] Predicted next UID\r\n\
         * OK [HIGHESTMODSEQ 5010] Highest\r\ns OK [READ-WRITE] Select completed.\r\n"
    );
    up(&mut t, "a UID FETCH 3 UID\r\n");
    assert_eq!(
        down(&mut t, "* 2 FETCH (UID 2)\r\n"),
        "* 2 FETCH (UID 3)\r\n"
    );
}

#[test]
fn a_folder_recreated_since_the_map_passes_unchanged() {
    let mut t = Translator::new(user());
    up(&mut t, "s SELECT INBOX\r\n");
    assert_eq!(
        down(
            &mut t,
            "* OK [UIDVALIDITY 7777] UIDs valid\r\n* OK [UIDNEXT 3] x\r\ns OK done\r\n"
        ),
        "* OK [UIDVALIDITY 7777] UIDs valid\r\n* OK [UIDNEXT 3] x\r\ns OK done\r\n"
    );
    assert_eq!(up(&mut t, "a UID FETCH 1 UID\r\n"), "a UID FETCH 1 UID\r\n");
    assert_eq!(
        down(&mut t, "* 1 FETCH (UID 1)\r\n"),
        "* 1 FETCH (UID 1)\r\n"
    );
}

#[test]
fn folders_without_a_map_pass_byte_for_byte() {
    let mut t = selected("New");
    let cmd = "a UID FETCH 3:7 (FLAGS) (CHANGEDSINCE 5)\r\n";
    assert_eq!(up(&mut t, cmd), cmd);
    let resp = "* 1 FETCH (UID 3 MODSEQ (9))\r\n* SEARCH 1 2\r\n* VANISHED 1:2\r\n";
    assert_eq!(down(&mut t, resp), resp);
}

#[test]
fn search_keys_and_results() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(
            &mut t,
            "a UID SEARCH RETURN (MIN) CHARSET UTF-8 OR UID 5:9 MODSEQ 5001 FROM uid\r\n"
        ),
        "a UID SEARCH RETURN (MIN) CHARSET UTF-8 OR UID 3:5 MODSEQ 301 FROM uid\r\n"
    );
    assert_eq!(
        down(&mut t, "* SEARCH 3 4 5 (MODSEQ 305)\r\na OK done\r\n"),
        "* SEARCH 5 7 9 (MODSEQ 5005)\r\na OK done\r\n"
    );
    // Not a UID SEARCH: the results are sequence numbers.
    up(&mut t, "b SEARCH UID 1\r\n");
    assert_eq!(down(&mut t, "* SEARCH 3 4\r\n"), "* SEARCH 3 4\r\n");
    // MODSEQ with an entry name and type.
    assert_eq!(
        up(
            &mut t,
            "c UID SEARCH MODSEQ \"/flags/\\\\Seen\" all 5002\r\n"
        ),
        "c UID SEARCH MODSEQ \"/flags/\\\\Seen\" all 302\r\n"
    );
}

#[test]
fn a_search_key_after_a_literal_is_rewritten() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(
            &mut t,
            "a UID SEARCH CHARSET UTF-8 SUBJECT {3+}\r\nabc UID 3:5\r\n"
        ),
        "a UID SEARCH CHARSET UTF-8 SUBJECT {3+}\r\nabc UID 2:3\r\n"
    );
}

#[test]
fn sort_and_thread_results_are_old_uids() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(&mut t, "a UID SORT (REVERSE DATE) UTF-8 UID 1:5\r\n"),
        "a UID SORT (REVERSE DATE) UTF-8 UID 1:3\r\n"
    );
    assert_eq!(down(&mut t, "* SORT 3 1 2\r\n"), "* SORT 5 1 3\r\n");
    assert_eq!(
        up(&mut t, "b UID THREAD REFERENCES UTF-8 UID 3\r\n"),
        "b UID THREAD REFERENCES UTF-8 UID 2\r\n"
    );
    assert_eq!(
        down(&mut t, "* THREAD (1)(2 (3)(4))\r\n"),
        "* THREAD (1)(3 (5)(7))\r\n"
    );
}

#[test]
fn esearch_uid_results() {
    let mut t = selected("INBOX");
    up(&mut t, "a UID SEARCH RETURN (MIN MAX ALL COUNT) ALL\r\n");
    assert_eq!(
        down(
            &mut t,
            "* ESEARCH (TAG \"a\") UID MIN 1 MAX 11 ALL 1:3,10:11 COUNT 5 MODSEQ 302\r\n"
        ),
        "* ESEARCH (TAG \"a\") UID MIN 1 MAX 30 ALL 1:5,19:30 COUNT 5 MODSEQ 5002\r\n"
    );
    // Sequence numbers stay.
    assert_eq!(
        down(&mut t, "* ESEARCH (TAG \"b\") MIN 2 ALL 2:3\r\n"),
        "* ESEARCH (TAG \"b\") MIN 2 ALL 2:3\r\n"
    );
}

#[test]
fn vanished_names_old_uids() {
    let mut t = selected("INBOX");
    up(
        &mut t,
        "a UID FETCH 1:* FLAGS (CHANGEDSINCE 5000 VANISHED)\r\n",
    );
    assert_eq!(
        down(&mut t, "* VANISHED (EARLIER) 2:3,11\r\n"),
        "* VANISHED (EARLIER) 3:5,30\r\n"
    );
    assert_eq!(down(&mut t, "* VANISHED 2\r\n"), "* VANISHED 3\r\n");
}

#[test]
fn changedsince_and_unchangedsince_become_the_stores() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(
            &mut t,
            "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5000 VANISHED)\r\n"
        ),
        "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 300 VANISHED)\r\n"
    );
    assert_eq!(
        up(&mut t, "b FETCH 1:* (FLAGS) (CHANGEDSINCE 4000)\r\n"),
        "b FETCH 1:* (FLAGS) (CHANGEDSINCE 1)\r\n"
    );
    assert_eq!(
        up(
            &mut t,
            "c UID STORE 3,5 (UNCHANGEDSINCE 5001) +FLAGS (\\Seen)\r\n"
        ),
        "c UID STORE 2,3 (UNCHANGEDSINCE 301) +FLAGS (\\Seen)\r\n"
    );
    assert_eq!(
        down(&mut t, "c OK [MODIFIED 3] Conditional store failed\r\n"),
        "c OK [MODIFIED 5] Conditional store failed\r\n"
    );
    // A keyword called UNCHANGEDSINCE in the flags is not a modifier.
    assert_eq!(
        up(&mut t, "d UID STORE 3 +FLAGS (UNCHANGEDSINCE 5)\r\n"),
        "d UID STORE 2 +FLAGS (UNCHANGEDSINCE 5)\r\n"
    );
}

#[test]
fn qresync_select_parameters_become_the_stores() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(
            &mut t,
            "a SELECT Archive (QRESYNC (4444 5000 1:9 (1:3 1,3,5)))\r\n"
        ),
        "a SELECT Archive (QRESYNC (3333 300 1:5 ))\r\n"
    );
    // Another UIDVALIDITY stays another one (the store sees a mismatch too).
    assert_eq!(
        up(&mut t, "b EXAMINE Archive (QRESYNC (3333 5000))\r\n"),
        "b EXAMINE Archive (QRESYNC (1 300))\r\n"
    );
    // QRESYNC select answers with VANISHED and FETCH for Archive, the folder in flight.
    assert_eq!(
        down(
            &mut t,
            "* OK [CLOSED] x\r\n* VANISHED (EARLIER) 6\r\n* 1 FETCH (UID 1 MODSEQ (301))\r\n"
        ),
        "* OK [CLOSED] x\r\n* VANISHED (EARLIER) 20\r\n* 1 FETCH (UID 1 MODSEQ (5001))\r\n"
    );
}

#[test]
fn copyuid_names_old_uids_of_both_folders() {
    let mut t = selected("INBOX");
    assert_eq!(
        up(&mut t, "a UID COPY 3:5 Archive\r\n"),
        "a UID COPY 2:3 Archive\r\n"
    );
    assert_eq!(
        down(&mut t, "a OK [COPYUID 3333 2:3 6:7] Copied\r\n"),
        "a OK [COPYUID 4444 3,5 20:21] Copied\r\n"
    );
    // MOVE reports COPYUID untagged.
    assert_eq!(
        up(&mut t, "b UID MOVE 7 {7+}\r\nArchive\r\n"),
        "b UID MOVE 4 {7+}\r\nArchive\r\n"
    );
    assert_eq!(
        down(
            &mut t,
            "* OK [COPYUID 3333 4 8] Moved\r\n* 4 EXPUNGE\r\nb OK Done\r\n"
        ),
        "* OK [COPYUID 4444 7 22] Moved\r\n* 4 EXPUNGE\r\nb OK Done\r\n"
    );
    // Into Archive recreated since the cutover (another UIDVALIDITY): its
    // side stays the store's, the source side is still translated.
    up(&mut t, "d UID MOVE 7 Archive\r\n");
    assert_eq!(
        down(&mut t, "* OK [COPYUID 1 4 8] Moved\r\nd OK Done\r\n"),
        "* OK [COPYUID 1 7 8] Moved\r\nd OK Done\r\n"
    );
    // Into a folder without a map: only the source side is translated.
    up(&mut t, "c UID COPY 1 New\r\n");
    assert_eq!(
        down(&mut t, "c OK [COPYUID 99 1 5] Copied\r\n"),
        "c OK [COPYUID 99 1 5] Copied\r\n"
    );
}

#[test]
fn appenduid_names_the_old_uid() {
    let mut t = Translator::new(user());
    assert_eq!(
        up(&mut t, "a APPEND Archive {3+}\r\nabc\r\n"),
        "a APPEND Archive {3+}\r\nabc\r\n"
    );
    assert_eq!(
        down(&mut t, "a OK [APPENDUID 3333 6] Append completed.\r\n"),
        "a OK [APPENDUID 4444 20] Append completed.\r\n"
    );
    // A UIDVALIDITY that is not the map's: Archive was recreated since the
    // cutover, so its UIDs are the store's, shown as SELECT shows them.
    up(&mut t, "b APPEND Archive {3+}\r\nabc\r\n");
    assert_eq!(
        down(&mut t, "b OK [APPENDUID 1 6] Append completed.\r\n"),
        "b OK [APPENDUID 1 6] Append completed.\r\n"
    );
}

#[test]
fn status_presents_old_numbers() {
    let mut t = Translator::new(user());
    up(
        &mut t,
        "a STATUS Archive (UIDNEXT UIDVALIDITY HIGHESTMODSEQ MESSAGES)\r\n",
    );
    assert_eq!(
        down(
            &mut t,
            "* STATUS Archive (UIDNEXT 7 UIDVALIDITY 3333 HIGHESTMODSEQ 301 MESSAGES 6)\r\n"
        ),
        "* STATUS Archive (UIDNEXT 21 UIDVALIDITY 4444 HIGHESTMODSEQ 5001 MESSAGES 6)\r\n"
    );
    assert_eq!(
        down(
            &mut t,
            "* STATUS {5}\r\nINBOX (UIDNEXT 11 UIDVALIDITY 2222)\r\n"
        ),
        "* STATUS {5}\r\nINBOX (UIDNEXT 30 UIDVALIDITY 1111)\r\n"
    );
}

#[test]
fn hidden_capabilities() {
    let mut t = Translator::new(user());
    assert_eq!(
        down(
            &mut t,
            "* CAPABILITY IMAP4rev1 OBJECTID COMPRESS=DEFLATE UIDPLUS NOTIFY\r\n"
        ),
        "* CAPABILITY IMAP4rev1 UIDPLUS\r\n"
    );
    up(&mut t, "a NOOP\r\n");
    assert_eq!(
        down(
            &mut t,
            "a OK [CAPABILITY IMAP4rev1 URLAUTH QRESYNC] done\r\n"
        ),
        "a OK [CAPABILITY IMAP4rev1 QRESYNC] done\r\n"
    );
    assert_eq!(
        filter_capabilities("IMAP4rev1 SASL-IR OBJECTID CONTEXT=SEARCH ESEARCH"),
        "IMAP4rev1 SASL-IR ESEARCH"
    );
}

#[test]
fn uid_commands_it_cannot_read_are_answered_here() {
    let mut t = selected("INBOX");
    assert_eq!(up(&mut t, "a UID FOO 1:3\r\n"), "");
    assert_eq!(replies(&mut t), "a BAD Unsupported UID command.\r\n");
    assert_eq!(up(&mut t, "b UID FETCH 1:x FLAGS\r\n"), "");
    assert_eq!(replies(&mut t), "b BAD Invalid arguments.\r\n");
    assert_eq!(up(&mut t, "c UID FETCH 99999999999 FLAGS\r\n"), "");
    assert_eq!(replies(&mut t), "c BAD Invalid arguments.\r\n");
    assert_eq!(up(&mut t, "d UID SEARCH X-FOO bar UID 3\r\n"), "");
    assert_eq!(
        replies(&mut t),
        "d BAD Unsupported search through this proxy.\r\n"
    );
    // An unknown key with nothing UID-bearing after it goes to the store.
    assert_eq!(
        up(&mut t, "e SEARCH X-FOO bar\r\n"),
        "e SEARCH X-FOO bar\r\n"
    );
    // A refused command's non-synchronising literal is dropped with it.
    assert_eq!(
        up(&mut t, "f UID BAR {3+}\r\nabc\r\ng NOOP\r\n"),
        "g NOOP\r\n"
    );
    assert_eq!(replies(&mut t), "f BAD Unsupported UID command.\r\n");
}

#[test]
fn a_bad_uid_part_after_a_literal_makes_the_store_answer_bad() {
    let mut t = selected("INBOX");
    let got = up(&mut t, "a UID SEARCH TEXT {3+}\r\nabc UID zz\r\nb NOOP\r\n");
    let poison = format!(" {}\r\n", ")".repeat(64));
    assert_eq!(
        got,
        format!("a UID SEARCH TEXT {{3+}}\r\nabc{poison}b NOOP\r\n")
    );
}

#[test]
fn our_answer_waits_for_the_end_of_a_store_response() {
    let mut t = selected("INBOX");
    up(&mut t, "a UID FETCH 1 BODY[]\r\n");
    assert_eq!(
        down(&mut t, "* 1 FETCH (UID 1 BODY[] {10}\r\n01234"),
        "* 1 FETCH (UID 1 BODY[] {10}\r\n01234"
    );
    up(&mut t, "b UID NOPE 1\r\n");
    assert_eq!(replies(&mut t), "");
    assert_eq!(
        down(&mut t, "56789)\r\na OK done\r\n"),
        "56789)\r\nb BAD Unsupported UID command.\r\na OK done\r\n"
    );
}

#[test]
fn any_split_of_the_input_gives_the_same_output() {
    let cmds = "s SELECT INBOX\r\na UID FETCH 3:7 (BODY[] UID)\r\nb UID SEARCH TEXT {2+}\r\nhi UID 5\r\nc APPEND Archive {4+}\r\nabcd\r\n";
    let resps = "* OK [UIDVALIDITY 2222] x\r\ns OK [READ-WRITE] ok\r\n* 2 FETCH (BODY[] {6}\r\nab\r\ncd UID 2)\r\na OK done\r\n* SEARCH 3\r\nb OK done\r\nc OK [APPENDUID 3333 6] done\r\n";
    let whole = {
        let mut t = Translator::new(user());
        (up(&mut t, cmds), down(&mut t, resps))
    };
    assert!(
        whole.1.contains("UID 3)") && whole.1.contains("APPENDUID 4444 20"),
        "{}",
        whole.1
    );
    for n in 1..8 {
        let mut t = Translator::new(user());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for c in cmds.as_bytes().chunks(n) {
            t.from_client(c, &mut a);
        }
        for c in resps.as_bytes().chunks(n) {
            t.from_store(c, &mut b).expect("response");
        }
        assert_eq!(
            String::from_utf8(a).expect("utf8"),
            whole.0,
            "chunks of {n}"
        );
        assert_eq!(
            String::from_utf8(b).expect("utf8"),
            whole.1,
            "chunks of {n}"
        );
    }
}

#[test]
fn a_large_literal_is_not_held() {
    let mut t = selected("INBOX");
    up(&mut t, "a UID FETCH 1 BODY[]\r\n");
    let mut out = Vec::new();
    t.from_store(b"* 1 FETCH (UID 1 BODY[] {10000000}\r\n", &mut out)
        .expect("head");
    let chunk = vec![b'x'; 65536];
    let mut sent = 0;
    while sent < 10_000_000 {
        let n = chunk.len().min(10_000_000 - sent);
        out.clear();
        t.from_store(&chunk[..n], &mut out).expect("body");
        assert_eq!(out.len(), n);
        assert!(t.held_bytes() < 4096, "{}", t.held_bytes());
        sent += n;
    }
}

#[test]
fn an_overlong_response_line_ends_the_session() {
    let mut t = Translator::new(user());
    let mut out = Vec::new();
    let big = vec![b'1'; MAX_RESPONSE_LINE + 1];
    assert_eq!(t.from_store(&big, &mut out), Err(Error::ResponseTooLong));
}

#[test]
fn an_overlong_command_is_answered_bad() {
    let mut t = selected("INBOX");
    let mut out = Vec::new();
    let mut cmd = b"a UID FETCH ".to_vec();
    cmd.extend(std::iter::repeat_n(b'1', MAX_COMMAND_LINE));
    t.from_client(&cmd, &mut out);
    t.from_client(b",2 FLAGS\r\nb NOOP\r\n", &mut out);
    assert_eq!(out, b"b NOOP\r\n");
    assert_eq!(replies(&mut t), "a BAD Command line too long.\r\n");
}

#[test]
fn the_continuity_map_translates_like_the_sample() {
    use crate::continuity::map::Snapshot;
    use crate::continuity::{FolderMap, UserMap};
    let old = Snapshot {
        uidvalidity: 1111,
        uidnext: 30,
        highestmodseq: 5000,
    };
    let new = Snapshot {
        uidvalidity: 2222,
        uidnext: 11,
        highestmodseq: 300,
    };
    let f = FolderMap::new(old, new, (1..=10).map(|i| (2 * i - 1, i))).expect("map");
    let mut m = UserMap::new();
    m.insert("INBOX", f);
    let mut t = Translator::new(Arc::new(m));
    up(&mut t, "s SELECT INBOX\r\n");
    assert_eq!(
        down(
            &mut t,
            "* OK [UIDVALIDITY 2222] x\r\n* OK [UIDNEXT 12] x\r\ns OK done\r\n"
        ),
        "* OK [UIDVALIDITY 1111] x\r\n* OK [UIDNEXT 31] x\r\ns OK done\r\n"
    );
    assert_eq!(
        up(&mut t, "a UID FETCH 3:7,30 FLAGS\r\n"),
        "a UID FETCH 2:4,11 FLAGS\r\n"
    );
    assert_eq!(
        down(
            &mut t,
            "* 2 FETCH (UID 2 MODSEQ (301))\r\n* 11 FETCH (UID 11 MODSEQ (302))\r\n"
        ),
        "* 2 FETCH (UID 3 MODSEQ (5001))\r\n* 11 FETCH (UID 30 MODSEQ (5002))\r\n"
    );
}

#[test]
fn the_folder_of_maps_is_neither_listed_nor_usable() {
    let mut t = Translator::new(user());
    t.hide_folder(b"mailshift-uidmap");
    assert_eq!(
        down(
            &mut t,
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* LIST (\\HasNoChildren) \"/\" mailshift-uidmap\r\n\
             * LSUB () \"/\" \"mailshift-uidmap\"\r\n* STATUS mailshift-uidmap (MESSAGES 3)\r\n"
        ),
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
    );
    for cmd in [
        "a SELECT mailshift-uidmap",
        "a SELECT INBOX.mailshift-uidmap",
        "a EXAMINE \"mailshift-uidmap\"",
        "a DELETE mailshift-uidmap",
        "a RENAME mailshift-uidmap x",
        "a UID COPY 1 mailshift-uidmap",
        "a SETMETADATA mailshift-uidmap (/private/comment NIL)",
    ] {
        assert_eq!(up(&mut t, &format!("{cmd}\r\n")), "", "{cmd}");
        assert_eq!(
            replies(&mut t),
            "a NO [NONEXISTENT] Mailbox doesn't exist.\r\n",
            "{cmd}"
        );
    }
    // APPEND with a literal name: the store gets a command it answers BAD.
    let got = up(
        &mut t,
        "b APPEND {16+}\r\nmailshift-uidmap {3+}\r\nabc\r\nc NOOP\r\n",
    );
    assert!(
        got.starts_with("b APPEND {16+}\r\nmailshift-uidmap )))"),
        "{got}"
    );
    assert!(got.ends_with(")\r\nc NOOP\r\n"), "{got}");
}

#[test]
fn a_literal_passed_by_the_caller_is_counted_as_if_translated() {
    let mut t = selected("INBOX");
    // The store's literal: the middle 10 bytes are the caller's; the rest
    // is translated, and the UID after the body is still rewritten.
    assert_eq!(
        down(&mut t, "* 1 FETCH (BODY[] {20}\r\n01234"),
        "* 1 FETCH (BODY[] {20}\r\n01234"
    );
    assert!(t.pass_literal(false, 10));
    // Not the last byte of the literal: the caller cannot know what follows it.
    assert!(!t.pass_literal(false, 5));
    assert_eq!(
        down(&mut t, "EFGHI UID 3)\r\na OK done\r\n"),
        "EFGHI UID 5)\r\na OK done\r\n"
    );
    // Outside a literal, or in the client's direction with none, nothing passes.
    assert!(!t.pass_literal(false, 1));
    assert!(!t.pass_literal(true, 1));
    // An APPEND's message from the client passes the same way.
    assert_eq!(
        up(&mut t, "b APPEND INBOX {8}\r\n"),
        "b APPEND INBOX {8}\r\n"
    );
    assert!(t.pass_literal(true, 7));
    assert_eq!(up(&mut t, "x\r\n"), "x\r\n");
    assert_eq!(up(&mut t, "c NOOP\r\n"), "c NOOP\r\n");
}
