//! A bearer-token login (OAUTHBEARER / XOAUTH2) through any front end:
//! routed by the user the message names, with no password check (only the
//! store can judge a token), logged in to the store with the client's
//! message unchanged, never as the master user. A failure challenge from the
//! store ([`crate::store::bearer`]) goes to the client framed the protocol's
//! way ([`Core::relay_challenge`]: IMAP and POP3 `+ `, SMTP `334 `,
//! ManageSieve a quoted string) and the client's answer back, so the client
//! sees the store's own error JSON and then its refusal.
//!
//! ```text
//!  Login(Bearer) ─► App::admit(user, None) ─► Protocol::connect_bearer
//!     ─► LoggedIn ─────────────────────────────────────────► prepare, relay
//!     └► Challenged ─► challenge to client ─► its answer ─► store ─► OK / refusal
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::session::{observe, Conn, Failed, Read};
use super::{Core, Pending, Protocol, Step};
use crate::app::{App, Refusal};
use crate::directory::User;
use crate::sasl::Mechanism;
use crate::store::bearer::Outcome;
use crate::store::{Error as StoreFailure, Store};

/// Admits a bearer login and logs in to the store with the client's message.
pub(super) async fn login<P: Protocol>(
    conn: &mut Conn<P::Core>,
    app: &Arc<App>,
    ctx: &P::Context,
    peer: SocketAddr,
    name: &str,
    mechanism: Mechanism,
    message: &[u8],
) -> Result<(User, Arc<Store>, P::Backend), Failed> {
    let (user, target) = app.admit(name, None, peer).await.map_err(Failed::Refused)?;
    let started = Instant::now();
    let first = P::connect_bearer(&target, ctx, name, mechanism, message).await;
    observe(&target, started, &first);
    let result = match first {
        Ok(Outcome::LoggedIn(c)) => Ok(c),
        Ok(Outcome::Challenged { challenge, pending }) => {
            tracing::debug!(user = %name, backend = target.name(), "store challenged the token; relaying");
            let framed = conn.core.relay_challenge(&challenge);
            if !conn.write(&framed).await {
                return Err(Failed::Gone);
            }
            let answer = answer(conn, app).await?;
            pending.answer(&target, answer.as_deref()).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(backend) => Ok((user, target, backend)),
        Err(e) => match e.error {
            StoreFailure::Rejected(text) => {
                tracing::debug!(user = %name, backend = target.name(), reply = %text, "store refused the token");
                Err(Failed::Store(P::store_text(&text)))
            }
            error => {
                tracing::warn!(user = %name, backend = target.name(), %error, "store {}unavailable", P::LOG);
                Err(Failed::Refused(Refusal::Unavailable(P::STORE_DOWN)))
            }
        },
    }
}

/// Reads the client's answer to a relayed challenge.
async fn answer<C: Core>(conn: &mut Conn<C>, app: &App) -> Result<Option<Vec<u8>>, Failed> {
    loop {
        while let Some(step) = conn.core.poll() {
            match step {
                Step::Answer(a) => return Ok(a),
                Step::Write(bytes) => {
                    if !conn.write(&bytes).await {
                        return Err(Failed::Gone);
                    }
                }
                Step::Close => {
                    let _ = conn.stream.shutdown().await;
                    return Err(Failed::Gone);
                }
                // Not while a login is under way.
                Step::StartTls | Step::Login(_) => {}
            }
        }
        if conn.core.is_closed() {
            return Err(Failed::Gone);
        }
        match conn.read(app).await {
            Read::Fed => {}
            Read::Eof => {
                tracing::debug!("client left during the token challenge");
                return Err(Failed::Gone);
            }
            Read::Cancelled => return Err(Failed::Gone),
        }
    }
}

/// The store's refusal as a client may see it: printable, at most
/// `max_bytes`, and accepted by `fits`; else `fallback`.
pub fn store_text(
    text: &str,
    max_bytes: usize,
    fits: impl Fn(&str) -> bool,
    fallback: &str,
) -> String {
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable && !text.is_empty() && text.len() <= max_bytes && fits(text) {
        text.to_string()
    } else {
        fallback.to_string()
    }
}

impl Pending<crate::store::imap::Client> for crate::store::imap::client::Challenged {
    async fn answer(
        self,
        store: &Store,
        answer: Option<&[u8]>,
    ) -> Result<crate::store::imap::Client, crate::store::StoreError> {
        crate::store::imap::client::Challenged::answer(self, store, answer).await
    }
}

impl Pending<crate::store::pop3::Client> for crate::store::pop3::Challenged {
    async fn answer(
        self,
        store: &Store,
        answer: Option<&[u8]>,
    ) -> Result<crate::store::pop3::Client, crate::store::StoreError> {
        crate::store::pop3::Challenged::answer(self, store, answer).await
    }
}

impl Pending<crate::store::smtp::Conn> for crate::store::smtp::Challenged {
    async fn answer(
        self,
        store: &Store,
        answer: Option<&[u8]>,
    ) -> Result<crate::store::smtp::Conn, crate::store::StoreError> {
        crate::store::smtp::Challenged::answer(self, store, answer).await
    }
}

impl Pending<crate::store::sieve::Client> for crate::store::sieve::Challenged {
    async fn answer(
        self,
        store: &Store,
        answer: Option<&[u8]>,
    ) -> Result<crate::store::sieve::Client, crate::store::StoreError> {
        crate::store::sieve::Challenged::answer(self, store, answer).await
    }
}

#[cfg(test)]
mod tests {
    use crate::frontend::Protocol;
    use crate::imap::session::Imap;
    use crate::managesieve::session::ManageSieve;
    use crate::pop3::session::Pop3;
    use crate::submission::session::Submission;

    #[test]
    fn only_a_printable_refusal_of_the_store_reaches_the_client() {
        let long = "x".repeat(600);
        let imap = "NO [AUTHENTICATIONFAILED] Authentication failed.";
        assert_eq!(Imap::store_text(imap), imap);
        assert_eq!(Imap::store_text("BAD Invalid"), "BAD Invalid");
        for odd in ["OK done", "NO \u{7f}x", "NO a\tb", &format!("NO {long}")] {
            assert_eq!(Imap::store_text(odd), imap, "{odd:?}");
        }
        let pop3 = "[AUTH] Authentication failed.";
        assert_eq!(Pop3::store_text("Invalid token"), "Invalid token");
        for odd in ["", "a\tb", "x\u{7f}", &"x".repeat(500)] {
            assert_eq!(Pop3::store_text(odd), pop3, "{odd:?}");
        }
        let smtp = "535 5.7.8 Authentication credentials invalid";
        assert_eq!(Submission::store_text("454 4.7.0 Later"), "454 4.7.0 Later");
        for odd in ["250 OK", "535 \u{7f}", &format!("535 {long}")] {
            assert_eq!(Submission::store_text(odd), smtp, "{odd:?}");
        }
        let sieve = "NO \"Authentication failed.\"";
        let store = "NO (SASL) \"Invalid token\"";
        assert_eq!(ManageSieve::store_text(store), store);
        for odd in ["OK \"x\"", "NO \"a\tb\"", &format!("NO \"{long}\"")] {
            assert_eq!(ManageSieve::store_text(odd), sieve, "{odd:?}");
        }
    }
}
