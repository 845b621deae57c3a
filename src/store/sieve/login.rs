//! Logging in to a store's ManageSieve, sans I/O: the greeting (a capability
//! listing), STARTTLS and the listing sent again over TLS (RFC 5804 §2.2),
//! AUTHENTICATE PLAIN as the user or as the master user on the user's
//! behalf, or the client's bearer token unchanged by AUTHENTICATE
//! "OAUTHBEARER"/"XOAUTH2" (a failure challenge, a string line, comes back as
//! [`Action::Challenge`] for the client to answer, see
//! [`crate::store::bearer`]). [`Login`] takes the store's lines and says what
//! to send next; the driver in [`super::Client`] does the I/O.
//!
//! ```text
//!  Greeting ─(OK, starttls)─► StartTls ─(OK)─► [TLS] ─► Greeting (again)
//!  Greeting ─(OK)─► Authenticating ─(OK)─► Done
//!                               ├─(NO)─► Rejected / Unavailable (TRYLATER)
//!                               └─(string, bearer)─► Challenge ─► answer ─► OK / NO
//! ```

use super::wire::{self, Status, Token};
use crate::store::bearer::Exchange;
use crate::store::imap::login::{Credentials, Master};
use crate::store::Error;

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: read more.
    Read,
    /// Write these bytes, then read.
    Send(Vec<u8>),
    /// Start TLS now, then call [`Login::tls_started`].
    StartTls,
    /// Logged in.
    Done,
    /// The store challenged the bearer token (decoded, for OAUTHBEARER its
    /// JSON error): relay it to the client and pass its answer to
    /// [`Login::answer`].
    Challenge(Vec<u8>),
}

/// How the dialog authenticates.
enum Auth {
    /// `authzid \0 authcid \0 password`, sent base64-encoded.
    Plain(Vec<u8>),
    /// The client's bearer message, passed on unchanged.
    Bearer(Exchange),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    StartTls,
    Authenticating,
    Done,
}

/// The login dialog with one store's ManageSieve.
pub struct Login {
    state: State,
    starttls: bool,
    caps: Vec<(String, String)>,
    auth: Auth,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// A dialog for `creds` (`master` must be given for a master login).
    pub fn new(
        creds: &Credentials<'_>,
        master: Option<&Master<'_>>,
        starttls: bool,
    ) -> Result<Login, Error> {
        let (authz, authc, secret): (&str, String, &[u8]) = match creds {
            Credentials::User { user, password } => ("", user.to_string(), password),
            // Never a master login: only the store can judge the token.
            Credentials::Bearer {
                mechanism, message, ..
            } => {
                return Ok(Login {
                    state: State::Greeting,
                    starttls,
                    caps: Vec::new(),
                    auth: Auth::Bearer(Exchange::new(*mechanism, message)),
                })
            }
            Credentials::Master { user } => {
                let m =
                    master.ok_or_else(|| Error::Config("no master_user for this store".into()))?;
                match m.separator {
                    Some(sep) => ("", format!("{user}{sep}{}", m.user), m.password.as_bytes()),
                    None => (user, m.user.to_string(), m.password.as_bytes()),
                }
            }
        };
        let mut plain = Vec::with_capacity(authz.len() + authc.len() + secret.len() + 2);
        plain.extend_from_slice(authz.as_bytes());
        plain.push(0);
        plain.extend_from_slice(authc.as_bytes());
        plain.push(0);
        plain.extend_from_slice(secret);
        Ok(Login {
            state: State::Greeting,
            starttls,
            caps: Vec::new(),
            auth: Auth::Plain(plain),
        })
    }

    /// Where the dialog is, for timeouts and errors.
    pub fn stage(&self) -> &'static str {
        match self.state {
            State::Greeting => "greeting",
            State::StartTls => "starttls",
            State::Authenticating => "login",
            State::Done => "logged in",
        }
    }

    /// The capabilities of the last listing (`("SIEVE", "fileinto …")`).
    pub fn capabilities(&self) -> &[(String, String)] {
        &self.caps
    }

    /// Takes the capabilities (after [`Action::Done`]).
    pub fn into_capabilities(self) -> Vec<(String, String)> {
        self.caps
    }

    /// The client's answer to a relayed challenge (`None`: it cancelled): the
    /// string to send the store; its verdict follows.
    pub fn answer(&self, answer: Option<&[u8]>) -> Result<Action, Error> {
        match (&self.auth, self.state) {
            (Auth::Bearer(_), State::Authenticating) => {
                let mut out = Vec::new();
                match answer {
                    Some(a) => wire::string(&mut out, crate::sasl::encode(a).as_bytes()),
                    None => wire::string(&mut out, b"*"),
                }
                out.extend_from_slice(b"\r\n");
                Ok(Action::Send(out))
            }
            _ => Err(Error::Protocol {
                stage: self.stage(),
                what: "an answer without a challenge".into(),
            }),
        }
    }

    /// TLS is up: the store sends its capabilities again.
    pub fn tls_started(&mut self) {
        self.starttls = false;
        self.caps.clear();
        self.state = State::Greeting;
    }

    /// Takes one line from the store.
    pub fn line(&mut self, tokens: &[Token]) -> Result<Action, Error> {
        let stage = self.stage();
        let Some(resp) = wire::response(tokens) else {
            if self.state == State::Greeting {
                self.capability(tokens);
                return Ok(Action::Read);
            }
            if let (State::Authenticating, Auth::Bearer(x), [Token::Str(payload)]) =
                (self.state, &mut self.auth, tokens)
            {
                // RFC 7628 §3.2.2: the failure challenge, for the client.
                return x.on_challenge(payload).map(Action::Challenge);
            }
            // Data before a response to STARTTLS or AUTHENTICATE: a SASL
            // challenge we did not ask for.
            return Err(Error::Protocol {
                stage,
                what: "unexpected data line".into(),
            });
        };
        if resp.status == Status::Bye {
            return Err(Error::Unavailable(resp.summary()));
        }
        match (self.state, resp.status) {
            (State::Greeting, Status::Ok) if self.starttls => {
                if !self.caps.iter().any(|(k, _)| k == "STARTTLS") {
                    return Err(Error::Protocol {
                        stage,
                        what: "sieve+starttls configured but the store offers no STARTTLS".into(),
                    });
                }
                self.state = State::StartTls;
                Ok(Action::Send(b"STARTTLS\r\n".to_vec()))
            }
            (State::Greeting, Status::Ok) => {
                self.state = State::Authenticating;
                let (name, ir) = match &self.auth {
                    Auth::Plain(plain) => ("PLAIN", crate::sasl::encode(plain)),
                    Auth::Bearer(x) => (x.mechanism().name(), x.initial_response()),
                };
                if let Auth::Bearer(x) = &self.auth {
                    // A store without the mechanism cannot take the token.
                    let sasl = self.caps.iter().find(|(k, _)| k == "SASL");
                    if !x.offered_by(
                        sasl.map_or("", |(_, v)| v.as_str())
                            .split_ascii_whitespace(),
                    ) {
                        return Err(Error::Protocol {
                            stage,
                            what: format!("the store does not offer {name}"),
                        });
                    }
                }
                let mut out = b"AUTHENTICATE ".to_vec();
                wire::string(&mut out, name.as_bytes());
                out.push(b' ');
                wire::string(&mut out, ir.as_bytes());
                out.extend_from_slice(b"\r\n");
                Ok(Action::Send(out))
            }
            (State::StartTls, Status::Ok) => Ok(Action::StartTls),
            (State::Authenticating, Status::Ok) => {
                self.state = State::Done;
                Ok(Action::Done)
            }
            (State::Authenticating, Status::No)
                if resp.code_name().as_deref() == Some("TRYLATER") =>
            {
                Err(Error::Unavailable(resp.summary()))
            }
            (State::Authenticating, Status::No) => Err(Error::Rejected(resp.summary())),
            _ => Err(Error::Protocol {
                stage,
                what: resp.summary(),
            }),
        }
    }

    fn capability(&mut self, tokens: &[Token]) {
        let mut it = tokens.iter().filter_map(Token::string);
        if let Some(name) = it.next() {
            let name = String::from_utf8_lossy(name).to_ascii_uppercase();
            let value = it
                .next()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            self.caps.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sieve::wire::Framer;

    fn feed(login: &mut Login, bytes: &[u8]) -> Vec<Result<Action, String>> {
        let mut f = Framer::new(4096, 4096);
        f.feed(bytes);
        let mut out = Vec::new();
        while let Ok(Some(l)) = f.next_line() {
            out.push(login.line(&l).map_err(|e| format!("{e:?}")));
        }
        out
    }

    const GREETING: &[u8] = b"\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto vacation\"\r\n\"STARTTLS\"\r\n\"SASL\" \"PLAIN\"\r\nOK \"Ready.\"\r\n";

    #[test]
    fn master_login_with_authzid_over_starttls() {
        let master = Master {
            user: "admin",
            password: "pw",
            separator: None,
        };
        let mut l = Login::new(&Credentials::Master { user: "alice" }, Some(&master), true)
            .expect("test input is valid");
        let got = feed(&mut l, GREETING);
        assert_eq!(
            got.last(),
            Some(&Ok(Action::Send(b"STARTTLS\r\n".to_vec())))
        );
        assert_eq!(
            feed(&mut l, b"OK \"Begin TLS.\"\r\n"),
            vec![Ok(Action::StartTls)]
        );
        l.tls_started();
        let got = feed(&mut l, GREETING);
        let expected = format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\n",
            crate::sasl::encode(b"alice\0admin\0pw")
        );
        assert_eq!(got.last(), Some(&Ok(Action::Send(expected.into_bytes()))));
        assert_eq!(
            feed(&mut l, b"OK \"Logged in.\"\r\n"),
            vec![Ok(Action::Done)]
        );
        assert!(l
            .capabilities()
            .iter()
            .any(|(k, v)| k == "SIEVE" && v.contains("fileinto")));
    }

    #[test]
    fn refusals_are_typed() {
        let creds = Credentials::User {
            user: "bob",
            password: b"x",
        };
        let mut l = Login::new(&creds, None, false).expect("test input is valid");
        feed(&mut l, GREETING);
        let got = feed(&mut l, b"NO \"Authentication failed.\"\r\n");
        assert!(
            matches!(&got[0], Err(e) if e.starts_with("Rejected")),
            "{got:?}"
        );
        let mut l = Login::new(&creds, None, false).expect("test input is valid");
        feed(&mut l, GREETING);
        let got = feed(&mut l, b"NO (TRYLATER) \"Busy.\"\r\n");
        assert!(
            matches!(&got[0], Err(e) if e.starts_with("Unavailable")),
            "{got:?}"
        );
    }

    #[test]
    fn a_bearer_token_goes_unchanged_and_its_challenge_comes_back() {
        let msg = b"n,a=alice,\x01auth=Bearer tok\x01\x01";
        let creds = Credentials::Bearer {
            user: "alice",
            mechanism: crate::sasl::Mechanism::OAuthBearer,
            message: msg,
        };
        let mut l = Login::new(&creds, None, false).expect("test input is valid");
        // A store that does not list the mechanism cannot take the token.
        let got = feed(&mut l, GREETING);
        assert!(
            matches!(got.last(), Some(Err(e)) if e.contains("does not offer OAUTHBEARER")),
            "{got:?}"
        );
        let mut l = Login::new(&creds, None, false).expect("test input is valid");
        let greeting = b"\"SASL\" \"PLAIN OAUTHBEARER\"\r\nOK \"Ready.\"\r\n";
        let expected = format!(
            "AUTHENTICATE \"OAUTHBEARER\" \"{}\"\r\n",
            crate::sasl::encode(msg)
        );
        assert_eq!(
            feed(&mut l, greeting).last(),
            Some(&Ok(Action::Send(expected.into_bytes())))
        );
        let json = br#"{"status":"invalid_token"}"#;
        let challenge = format!("\"{}\"\r\n", crate::sasl::encode(json));
        assert_eq!(
            feed(&mut l, challenge.as_bytes()),
            vec![Ok(Action::Challenge(json.to_vec()))]
        );
        assert_eq!(
            l.answer(Some(b"\x01")).map_err(|e| format!("{e:?}")),
            Ok(Action::Send(b"\"AQ==\"\r\n".to_vec()))
        );
        assert_eq!(
            l.answer(None).map_err(|e| format!("{e:?}")),
            Ok(Action::Send(b"\"*\"\r\n".to_vec()))
        );
        let got = feed(&mut l, b"NO \"Authentication failed.\"\r\n");
        assert!(
            matches!(&got[0], Err(e) if e.starts_with("Rejected")),
            "{got:?}"
        );
    }
}
