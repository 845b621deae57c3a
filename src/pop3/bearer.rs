//! A bearer-token login (AUTH OAUTHBEARER / XOAUTH2) through the POP3 front
//! end: routed by the user the message names, with no password check (only
//! the store can judge a token), logged in to the store's POP3 with the
//! client's message unchanged, never as the master user. A failure challenge
//! from the store goes to the client and the client's answer back, so the
//! client sees the store's own error JSON and then its `-ERR`.
//!
//! ```text
//!  Login(Bearer) ─► App::admit(user, None) ─► pop3::Client::connect_bearer
//!     ─► LoggedIn ─────────────────────────────────────────► relay
//!     └► Challenged ─► "+ json" to client ─► its answer ─► store ─► +OK / -ERR
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::preauth::{Action, Login, PreAuth};
use crate::app::{App, Refusal};
use crate::directory::User;
use crate::metrics::METRICS;
use crate::sasl::Secret;
use crate::store::bearer::Outcome;
use crate::store::pop3::Client as StoreClient;
use crate::store::{Error as StoreFailure, Store};
use crate::stream::Stream;

/// Why a login did not get through.
pub(super) enum Failed {
    /// Refused before or without the store's own words.
    Refused(Refusal),
    /// The store refused the token; its `-ERR` text (after `-ERR `), for the
    /// client.
    Store(String),
    /// The client went away (or the server is shutting down) mid-exchange.
    Gone,
}

/// The longest store reply passed on to a client.
const MAX_STORE_TEXT_BYTES: usize = 400;

/// The store's refusal as the client may see it: printable text only, else
/// our own words.
fn store_text(text: &str) -> String {
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable && !text.is_empty() && text.len() <= MAX_STORE_TEXT_BYTES {
        text.to_string()
    } else {
        "[AUTH] Authentication failed.".into()
    }
}

async fn write(s: &mut Stream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
}

/// Admits a bearer login and logs in to the store's POP3 with the client's
/// message.
pub(super) async fn login(
    stream: &mut Stream,
    core: &mut PreAuth,
    login: &Login,
    peer: SocketAddr,
    shared: &Arc<App>,
) -> Result<(User, Arc<Store>, StoreClient), Failed> {
    let Secret::Bearer { mechanism, message } = &login.identity.secret else {
        return Err(Failed::Refused(Refusal::AuthFailed));
    };
    let user = &login.identity.user;
    let (found, target) = shared
        .admit(user, None, peer)
        .await
        .map_err(Failed::Refused)?;
    let started = Instant::now();
    let first = StoreClient::connect_bearer(&target, user, *mechanism, message, Some(peer)).await;
    let outcome = match &first {
        Ok(_) => "ok",
        Err(e) if matches!(e.error, StoreFailure::Rejected(_)) => "rejected",
        Err(_) => "error",
    };
    METRICS
        .backend_connect
        .with_label_values(&[target.name(), outcome])
        .observe(started.elapsed().as_secs_f64());
    let result = match first {
        Ok(Outcome::LoggedIn(c)) => Ok(c),
        Ok(Outcome::Challenged { challenge, pending }) => {
            tracing::debug!(user = %user, client = %peer, backend = target.name(), "store challenged the token; relaying");
            if !write(stream, &core.relay_challenge(&challenge)).await {
                return Err(Failed::Gone);
            }
            let answer = answer(stream, core, peer, shared).await?;
            pending.answer(&target, answer.as_deref()).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(logged_in) => Ok((found, target, logged_in)),
        Err(e) => match e.error {
            StoreFailure::Rejected(text) => {
                tracing::debug!(user = %user, client = %peer, backend = target.name(), reply = %text, "store refused the token");
                Err(Failed::Store(store_text(&text)))
            }
            error => {
                tracing::warn!(user = %user, client = %peer, backend = target.name(), %error, "store POP3 unavailable");
                Err(Failed::Refused(Refusal::Unavailable(
                    "Mailbox temporarily unavailable, try again.",
                )))
            }
        },
    }
}

/// Reads the client's answer to a relayed challenge.
async fn answer(
    stream: &mut Stream,
    core: &mut PreAuth,
    peer: SocketAddr,
    shared: &Arc<App>,
) -> Result<Option<Vec<u8>>, Failed> {
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(action) = core.poll() {
            match action {
                Action::Answer(a) => return Ok(a),
                Action::Write(bytes) => {
                    if !write(stream, &bytes).await {
                        return Err(Failed::Gone);
                    }
                }
                Action::Close => {
                    let _ = stream.shutdown().await;
                    return Err(Failed::Gone);
                }
                // Not while a login is under way.
                Action::StartTls | Action::Login(_) => {}
            }
        }
        if core.is_closed() {
            return Err(Failed::Gone);
        }
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = shared.cancel.cancelled() => return Err(Failed::Gone),
        };
        match read {
            Ok(0) | Err(_) => {
                tracing::debug!(client = %peer, "client left during the token challenge");
                return Err(Failed::Gone);
            }
            Ok(n) => core.feed(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::store_text;

    #[test]
    fn only_printable_store_text_reaches_the_client() {
        let no = "[AUTH] Authentication failed.";
        assert_eq!(store_text(no), no);
        assert_eq!(store_text("Invalid token"), "Invalid token");
        for odd in ["", "a\tb", "x\u{7f}", &"x".repeat(500)] {
            assert_eq!(store_text(odd), no, "{odd:?}");
        }
    }
}
