//! Cyrus IMAP (a private 3.6, tests/support/cyrus.rs) as old store, as new
//! store and behind the proxy.

mod support;

use support::{Cyrus, CyrusOpts, ImapClient};

#[test]
fn cyrus_starts_and_master_user_logs_in() {
    let cy = Cyrus::start("smoke", CyrusOpts::default());
    cy.deliver(
        "alice",
        &support::message("carol@example.net", "alice@example.org", "hello", "hi"),
    );
    let mut c = ImapClient::connect(cy.imap_port());
    let (_, tagged) = c.cmd("LOGIN alice wrongpw");
    assert!(tagged.contains("NO"), "wrong password accepted: {tagged}");
    c.login("alice", "alicepw");
    c.ok("SELECT INBOX");
    c.ok("LOGOUT");
}
