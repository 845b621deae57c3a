//! A pre-auth ID as large as RFC 2971 allows, the size Dovecot's ImapTest
//! `id` script sends, goes through mailshift as it goes straight to the store:
//! answered OK, then LOGIN works and the store gets the client's ID.
mod support;

use support::{ImapClient, Lab, Mailshift};

/// 30 pairs, 30-octet field names, 1024-octet values; as quoted strings, or
/// with every value a non-synchronizing literal.
fn rfc2971_id(tag: &str, literals: bool) -> Vec<u8> {
    let mut out = format!("{tag} ID (").into_bytes();
    for i in 0..30 {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(format!("\"{:x<30}\" ", format!("imaptest-field{i:02}")).as_bytes());
        let value = format!("v{i:02}").repeat(342)[..1024].to_string();
        if literals {
            out.extend_from_slice(b"{1024+}\r\n");
            out.extend_from_slice(value.as_bytes());
        } else {
            out.extend_from_slice(format!("\"{value}\"").as_bytes());
        }
    }
    out.extend_from_slice(b")\r\n");
    out
}

/// Sends the big ID, expects `* ID` and OK, then logs in and selects INBOX.
fn id_then_login(port: u16, tag: &str, literals: bool) {
    let mut c = ImapClient::connect(port);
    let id = rfc2971_id(tag, literals);
    assert!(literals || id.len() > 30 * 1024, "smaller than ImapTest's");
    c.write_raw(&id);
    let (lines, tagged) = c.read_until_tagged(tag);
    assert!(
        tagged.starts_with(&format!("{tag} OK")),
        "ID refused: {tagged}\n{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("* ID")), "{lines:?}");
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    c.ok("LOGOUT");
}

#[test]
fn rfc2971_sized_id_then_login_through_the_proxy() {
    let lab = Lab::start(false);
    // The store itself takes it (the reference behaviour the proxy must match).
    id_then_login(lab.old.imap_port(), "direct", false);

    let proxy = Mailshift::start(&lab.mailshift_config(""));
    id_then_login(proxy.imap_port(), "viaproxy", false);
    id_then_login(proxy.imap_port(), "vialiteral", true);
    let log = proxy.log();
    assert!(!log.contains("too long"), "{log}");

    // The store was told who the client is, big ID included, as before; within
    // RFC 2971's 30 pairs: the client's first 28 and the client's address.
    let store_log = lab.old.log();
    let forwarded: Vec<&str> = store_log
        .lines()
        .filter(|l| l.contains("x-originating-ip") && l.contains("imaptest-field27"))
        .collect();
    assert_eq!(
        forwarded.len(),
        2,
        "big ID not forwarded twice:\n{store_log}"
    );
    for l in forwarded {
        assert_eq!(l.matches("imaptest-field").count(), 28, "{l}");
        assert!(l.contains("x-originating-port="), "{l}");
    }
}
