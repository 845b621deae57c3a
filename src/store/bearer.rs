//! A bearer-token login at a store (OAUTHBEARER, XOAUTH2), the part that is
//! the same whatever the protocol: the client's message goes to the store
//! unchanged (mailshift does not judge tokens), and a failure challenge the
//! store sends back (RFC 7628 §3.2.2: `+ base64(json error)`, which the
//! client answers, normally with `AQ==`, before the final NO) is relayed to
//! the client, whose answer is relayed back. The IMAP login dialog
//! ([`super::imap::login`]) uses it; POP3 `AUTH`, submission `AUTH` and
//! ManageSieve `AUTHENTICATE` store clients frame the same bytes their way
//! (`+ `, `334 `, a quoted string) and return the same [`Outcome`].
//!
//! ```text
//!  initial response ─► store ─► OK ─────────────────────────► LoggedIn
//!                            └► challenge ─► Challenged ─► client's answer
//!                                             ─► store ─► OK / NO (its words)
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::Error;
use crate::sasl::Mechanism;

/// What a bearer login at a store came to, before the final word.
pub enum Outcome<C, P> {
    /// The store took the token.
    LoggedIn(C),
    /// The store sent a challenge (decoded; for OAUTHBEARER the JSON error):
    /// send it to the client, and its answer to `pending`.
    Challenged {
        /// The store's challenge, decoded from base64.
        challenge: Vec<u8>,
        /// The store connection, waiting for the client's answer.
        pending: P,
    },
}

/// The store side of one bearer exchange, sans I/O.
#[derive(Clone)]
pub struct Exchange {
    mechanism: Mechanism,
    message: Vec<u8>,
    challenged: bool,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        write!(f, "Exchange({})", self.mechanism.name())
    }
}

impl Exchange {
    /// The client's decoded message, as it sent it.
    pub fn new(mechanism: Mechanism, message: &[u8]) -> Exchange {
        Exchange {
            mechanism,
            message: message.to_vec(),
            challenged: false,
        }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The store must offer the mechanism (`AUTH=XOAUTH2`, `SASL=...`): a
    /// store without it cannot take the token, and would only be confused.
    pub fn offered_by<'c>(&self, mut mechanisms: impl Iterator<Item = &'c str>) -> bool {
        mechanisms.any(|m| m.eq_ignore_ascii_case(self.mechanism.name()))
    }

    /// The initial response (SASL-IR, or the answer to the store's empty
    /// `+`), base64.
    pub fn initial_response(&self) -> String {
        STANDARD.encode(&self.message)
    }

    /// The store sent a challenge (`payload` is its base64 text): decoded for
    /// the client. A failure challenge comes once; a second, or one that is
    /// not base64, is the store misbehaving.
    pub fn on_challenge(&mut self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        if self.challenged {
            return Err(Error::Protocol {
                stage: "login",
                what: format!("second {} challenge", self.mechanism.name()),
            });
        }
        self.challenged = true;
        let payload = payload.trim_ascii();
        STANDARD.decode(payload).map_err(|_| Error::Protocol {
            stage: "login",
            what: format!("{} challenge is not base64", self.mechanism.name()),
        })
    }

    /// The line to send the store for the client's answer to the challenge
    /// (`None`: the client cancelled, or sent something that is not base64).
    pub fn answer(&self, answer: Option<&[u8]>) -> Vec<u8> {
        match answer {
            Some(a) => format!("{}\r\n", STANDARD.encode(a)).into_bytes(),
            None => b"*\r\n".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_challenge_decoded_then_the_answer_encoded() {
        let mut x = Exchange::new(
            Mechanism::OAuthBearer,
            b"n,a=alice,\x01auth=Bearer t\x01\x01",
        );
        assert_eq!(
            x.initial_response(),
            STANDARD.encode(b"n,a=alice,\x01auth=Bearer t\x01\x01")
        );
        assert!(x.offered_by(["PLAIN", "oauthbearer"].into_iter()));
        assert!(!x.offered_by(["PLAIN", "XOAUTH2"].into_iter()));
        let json = br#"{"status":"invalid_token","schemes":"bearer","scope":"mail"}"#;
        assert_eq!(
            x.on_challenge(STANDARD.encode(json).as_bytes())
                .expect("decoded"),
            json.to_vec()
        );
        assert_eq!(x.answer(Some(b"\x01")), b"AQ==\r\n".to_vec());
        assert_eq!(x.answer(None), b"*\r\n".to_vec());
        assert!(matches!(
            x.on_challenge(b"e30="),
            Err(Error::Protocol { .. })
        ));
        let mut y = Exchange::new(Mechanism::XOAuth2, b"user=a\x01auth=Bearer t\x01\x01");
        assert!(y.on_challenge(b"not base64!").is_err());
        assert!(!format!("{y:?}").contains("Bearer t"));
    }
}
