//! Logging in to a store's POP3, sans I/O: greeting, STLS, XCLIENT (Dovecot
//! forwards the client's address when the greeting says `[XCLIENT]` to a
//! trusted peer), AUTH PLAIN with an initial response (RFC 5034), as the user
//! or a master user, or the client's bearer token unchanged by `AUTH
//! OAUTHBEARER`/`XOAUTH2` (a failure challenge comes back as
//! [`Action::Challenge`] for the client to answer, see [`crate::store::bearer`]). [`Login`] takes the store's reply lines and says what to
//! send next; [`super::Client`] does the I/O.
//!
//! A store that refuses AUTH PLAIN without saying `[AUTH]` (no SASL, as
//! Courier's POP3 by default, or qpopper) gets the same name and password
//! by USER/PASS (RFC 1939) before the refusal counts.
//!
//! ```text
//!  Greeting ─(+OK, starttls)─► Stls ─(+OK)─► [TLS] ─► Xclient? ─► Auth ─(+OK)─► Done
//!           └────────────────────────────────────────┘             └(-ERR)─► User ─► Pass ─(+OK)─► Done
//! ```

use std::net::SocketAddr;

use crate::store::bearer::Exchange;
use crate::store::imap::login::{Credentials, Master};
use crate::store::Error;

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the next reply line.
    Read,
    /// Write these bytes, then read.
    Send(Vec<u8>),
    /// Start TLS now (nothing of the store's may be buffered), then call
    /// [`Login::tls_started`].
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
    /// The AUTH PLAIN message.
    Plain(Vec<u8>),
    /// The client's bearer message, passed on unchanged.
    Bearer(Exchange),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    Stls,
    Xclient,
    Auth,
    User,
    Pass,
    Done,
}

/// The login dialog with one store.
pub struct Login {
    stage: Stage,
    starttls: bool,
    peer: Option<SocketAddr>,
    auth: Auth,
    /// Name and password for USER/PASS, where AUTH PLAIN's message has no
    /// authorization identity and neither has a line break.
    fallback: Option<(String, Vec<u8>)>,
    /// Start with USER/PASS (the store took it last time); AUTH PLAIN is
    /// then the second try.
    user_pass_first: bool,
    /// AUTH was sent (so a refusal of USER/PASS is final).
    tried_auth: bool,
    /// The login went through by USER/PASS.
    took_user_pass: bool,
    /// Where the dialog goes once XCLIENT's verdict is read.
    after_xclient: Stage,
}

/// USER/PASS credentials from an AUTH PLAIN message (`\0authcid\0password`).
fn user_pass(msg: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = msg.splitn(3, |&b| b == 0);
    let (authz, authc, password) = (parts.next()?, parts.next()?, parts.next()?);
    let safe = |b: &[u8]| !b.is_empty() && !b.iter().any(|&c| c == b'\r' || c == b'\n');
    (authz.is_empty() && safe(authc) && safe(password) && !authc.contains(&b' ')).then(|| {
        (
            String::from_utf8_lossy(authc).into_owned(),
            password.to_vec(),
        )
    })
}

/// `user\0authcid\0password` for AUTH PLAIN, as the user or a master.
fn plain_message(creds: &Credentials<'_>, master: Option<&Master<'_>>) -> Result<Vec<u8>, Error> {
    let (authz, authc, password): (&str, String, &[u8]) = match (creds, master) {
        (Credentials::User { user, password }, _) => ("", user.to_string(), password),
        (Credentials::Master { .. }, None) => {
            return Err(Error::Config("master login without a master user".into()))
        }
        (Credentials::Bearer { .. }, _) => {
            return Err(Error::Config(
                "bearer tokens go to POP3 stores by AUTH XOAUTH2/OAUTHBEARER, not PLAIN".into(),
            ))
        }
        (Credentials::Master { user }, Some(m)) => match m.separator {
            // Dovecot's "user*master" form.
            Some(sep) => ("", format!("{user}{sep}{}", m.user), m.password.as_bytes()),
            None => (user, m.user.to_string(), m.password.as_bytes()),
        },
    };
    let mut msg = Vec::with_capacity(authz.len() + authc.len() + password.len() + 2);
    msg.extend_from_slice(authz.as_bytes());
    msg.push(0);
    msg.extend_from_slice(authc.as_bytes());
    msg.push(0);
    msg.extend_from_slice(password);
    Ok(msg)
}

/// Whether a `-ERR` says "later" rather than "no" (RFC 3206 `[SYS/TEMP]`,
/// RFC 2449 `[IN-USE]`, `[LOGIN-DELAY]`).
fn temporary(text: &str) -> bool {
    let t = text.to_ascii_uppercase();
    t.starts_with("[SYS/TEMP]") || t.starts_with("[IN-USE]") || t.starts_with("[LOGIN-DELAY]")
}

impl Login {
    /// A dialog for `creds`; `peer` is forwarded by XCLIENT when the store
    /// offers it.
    pub fn new(
        creds: &Credentials<'_>,
        master: Option<&Master<'_>>,
        starttls: bool,
        peer: Option<SocketAddr>,
    ) -> Result<Login, Error> {
        let auth = match creds {
            // Never a master login: only the store can judge the token.
            Credentials::Bearer {
                mechanism, message, ..
            } => Auth::Bearer(Exchange::new(*mechanism, message)),
            _ => Auth::Plain(plain_message(creds, master)?),
        };
        let fallback = match &auth {
            Auth::Plain(msg) => user_pass(msg),
            Auth::Bearer(_) => None,
        };
        Ok(Login {
            stage: Stage::Greeting,
            starttls,
            peer,
            auth,
            fallback,
            user_pass_first: false,
            tried_auth: false,
            took_user_pass: false,
            after_xclient: Stage::Auth,
        })
    }

    /// Starts with USER/PASS where it can (the store took it before).
    pub fn user_pass_first(mut self, yes: bool) -> Login {
        self.user_pass_first = yes && self.fallback.is_some();
        self
    }

    /// What this login learnt for the next one: `Some(true)` it went
    /// through by USER/PASS, `Some(false)` by AUTH, `None` nothing (not
    /// through, or USER/PASS was never an option).
    pub fn learnt_user_pass(&self) -> Option<bool> {
        (self.stage == Stage::Done && self.fallback.is_some()).then_some(self.took_user_pass)
    }

    /// Where the dialog is, for errors and timeouts.
    pub fn stage(&self) -> &'static str {
        match self.stage {
            Stage::Greeting => "greeting",
            Stage::Stls => "stls",
            Stage::Xclient => "xclient",
            Stage::Auth | Stage::User | Stage::Pass => "login",
            Stage::Done => "done",
        }
    }

    /// Whether the login went through.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// The first login command, and the stage it puts the dialog in.
    fn first_command(&mut self) -> (Stage, Vec<u8>) {
        match &self.fallback {
            Some((user, _)) if self.user_pass_first => (Stage::User, user_command(user)),
            _ => {
                self.tried_auth = true;
                (Stage::Auth, self.auth_command())
            }
        }
    }

    fn auth_command(&self) -> Vec<u8> {
        match &self.auth {
            Auth::Plain(msg) => format!("AUTH PLAIN {}\r\n", crate::sasl::encode(msg)),
            Auth::Bearer(x) => {
                format!("AUTH {} {}\r\n", x.mechanism().name(), x.initial_response())
            }
        }
        .into_bytes()
    }

    /// The client's answer to a relayed challenge (`None`: it cancelled):
    /// what to send the store; its verdict follows.
    pub fn answer(&self, answer: Option<&[u8]>) -> Result<Action, Error> {
        match (&self.auth, self.stage) {
            (Auth::Bearer(x), Stage::Auth) => Ok(Action::Send(x.answer(answer))),
            _ => Err(Error::Protocol {
                stage: self.stage(),
                what: "an answer without a challenge".into(),
            }),
        }
    }

    fn after_greeting(&mut self, xclient: bool) -> Action {
        match self.peer {
            Some(peer) if xclient => {
                // XCLIENT and the login in one write, one round trip (as the
                // IMAP login sends ID with AUTHENTICATE): the XCLIENT verdict
                // changes nothing but what the store logs.
                let (next, first) = self.first_command();
                self.after_xclient = next;
                self.stage = Stage::Xclient;
                let mut out =
                    format!("XCLIENT ADDR={} PORT={}\r\n", peer.ip(), peer.port()).into_bytes();
                out.extend_from_slice(&first);
                Action::Send(out)
            }
            _ => {
                let (next, first) = self.first_command();
                self.stage = next;
                Action::Send(first)
            }
        }
    }

    /// TLS is on after STLS: carry on (Dovecot greets only once, so XCLIENT
    /// is not offered again; the address goes unforwarded on STLS legs).
    pub fn tls_started(&mut self) -> Action {
        self.after_greeting(false)
    }

    /// One reply line from the store (without CRLF).
    pub fn on_line(&mut self, line: &[u8]) -> Result<Action, Error> {
        let stage = self.stage();
        let text = String::from_utf8_lossy(line);
        let (ok, rest) = if let Some(r) = text.strip_prefix("+OK") {
            (true, r.trim_start())
        } else if let Some(r) = text.strip_prefix("-ERR") {
            (false, r.trim_start())
        } else if let (Stage::Auth, Some(payload), Auth::Bearer(x)) =
            (self.stage, text.strip_prefix('+'), &mut self.auth)
        {
            // RFC 7628 3.2.2: the failure challenge, for the client.
            return x.on_challenge(payload.as_bytes()).map(Action::Challenge);
        } else if self.stage == Stage::Auth && text.starts_with('+') {
            // A continuation: the store wants the response after all.
            return Err(Error::Protocol {
                stage,
                what: "store asked for a SASL continuation after an initial response".into(),
            });
        } else {
            return Err(Error::Protocol {
                stage,
                what: format!("unexpected reply {:?}", truncate(&text)),
            });
        };
        match (self.stage, ok) {
            (Stage::Greeting, true) => {
                if self.starttls {
                    self.stage = Stage::Stls;
                    Ok(Action::Send(b"STLS\r\n".to_vec()))
                } else {
                    Ok(self.after_greeting(rest.contains("[XCLIENT]")))
                }
            }
            (Stage::Greeting, false) => Err(Error::Unavailable(truncate(rest))),
            (Stage::Stls, true) => Ok(Action::StartTls),
            (Stage::Stls, false) => Err(Error::Refused {
                command: "STLS".into(),
                reply: truncate(rest),
                temporary: false,
            }),
            // Not trusted after all (-ERR): the login goes without forwarding.
            // Either way its verdict is the next line.
            (Stage::Xclient, _) => {
                self.stage = self.after_xclient;
                Ok(Action::Read)
            }
            (Stage::Auth, true) => {
                self.stage = Stage::Done;
                Ok(Action::Done)
            }
            (Stage::Auth | Stage::User | Stage::Pass, false) if temporary(rest) => {
                Err(Error::Unavailable(truncate(rest)))
            }
            // Refused without `[AUTH]`: perhaps no SASL; USER/PASS once.
            (Stage::Auth, false) => match &self.fallback {
                Some((user, _)) if !judged(rest) && !self.user_pass_first => {
                    let command = user_command(user);
                    self.stage = Stage::User;
                    Ok(Action::Send(command))
                }
                _ => Err(Error::Rejected(truncate(rest))),
            },
            (Stage::User, true) => {
                self.stage = Stage::Pass;
                let password = self.fallback.as_ref().map_or(&[][..], |(_, p)| p);
                let mut out = b"PASS ".to_vec();
                out.extend_from_slice(password);
                out.extend_from_slice(b"\r\n");
                Ok(Action::Send(out))
            }
            (Stage::Pass, true) => {
                self.stage = Stage::Done;
                self.took_user_pass = true;
                Ok(Action::Done)
            }
            // Started with USER/PASS and refused without a verdict on the
            // credentials: the store may have changed; AUTH PLAIN once.
            (Stage::User | Stage::Pass, false) if !self.tried_auth && !judged(rest) => {
                self.tried_auth = true;
                self.stage = Stage::Auth;
                Ok(Action::Send(self.auth_command()))
            }
            (Stage::User | Stage::Pass, false) => Err(Error::Rejected(truncate(rest))),
            (Stage::Done, _) => Err(Error::Protocol {
                stage,
                what: "reply after login".into(),
            }),
        }
    }
}

fn user_command(user: &str) -> Vec<u8> {
    format!("USER {user}\r\n").into_bytes()
}

/// `[AUTH]` (RFC 3206): the store judged the credentials themselves.
fn judged(text: &str) -> bool {
    text.to_ascii_uppercase().starts_with("[AUTH]")
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Credentials<'static> {
        Credentials::User {
            user: "alice",
            password: b"pw",
        }
    }

    #[test]
    fn a_store_without_sasl_gets_user_and_pass() {
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        l.on_line(b"+OK Hello there.").expect("test input");
        assert_eq!(
            l.on_line(b"-ERR Authentication failed.")
                .expect("test input"),
            Action::Send(b"USER alice\r\n".to_vec())
        );
        assert_eq!(
            l.on_line(b"+OK Password required.").expect("test input"),
            Action::Send(b"PASS pw\r\n".to_vec())
        );
        assert_eq!(
            l.on_line(b"+OK logged in.").expect("test input"),
            Action::Done
        );
        // A wrong password is refused by both.
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        l.on_line(b"+OK Hello there.").expect("test input");
        l.on_line(b"-ERR no").expect("test input");
        l.on_line(b"+OK Password required.").expect("test input");
        assert!(matches!(
            l.on_line(b"-ERR Login failed."),
            Err(Error::Rejected(_))
        ));
        // "Later" is never retried another way.
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        l.on_line(b"+OK Hello there.").expect("test input");
        assert!(matches!(
            l.on_line(b"-ERR [SYS/TEMP] down"),
            Err(Error::Unavailable(_))
        ));
        // A master login with an authorization identity, or a password that
        // would break the line, has no USER/PASS form.
        let m = Master {
            user: "admin",
            password: "adminpw",
            separator: None,
        };
        let mut l = Login::new(
            &Credentials::Master { user: "alice" },
            Some(&m),
            false,
            None,
        )
        .expect("test input");
        l.on_line(b"+OK Hello there.").expect("test input");
        assert!(matches!(l.on_line(b"-ERR no"), Err(Error::Rejected(_))));
        let creds = Credentials::User {
            user: "alice",
            password: b"p\r\nDELE 1",
        };
        let mut l = Login::new(&creds, None, false, None).expect("test input");
        l.on_line(b"+OK Hello there.").expect("test input");
        assert!(matches!(l.on_line(b"-ERR no"), Err(Error::Rejected(_))));
    }

    fn user_pass_first() -> Login {
        Login::new(&user(), None, false, None)
            .expect("test input")
            .user_pass_first(true)
    }

    #[test]
    fn a_store_that_took_user_pass_gets_it_first_next_time() {
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        l.on_line(b"+OK Hello there.").expect("test input");
        l.on_line(b"-ERR Unknown command.").expect("test input");
        l.on_line(b"+OK Password required.").expect("test input");
        l.on_line(b"+OK logged in.").expect("test input");
        assert_eq!(l.learnt_user_pass(), Some(true));
        let mut l = user_pass_first();
        assert_eq!(
            l.on_line(b"+OK Hello there.").expect("test input"),
            Action::Send(b"USER alice\r\n".to_vec())
        );
        assert_eq!(
            l.on_line(b"+OK Password required.").expect("test input"),
            Action::Send(b"PASS pw\r\n".to_vec())
        );
        assert_eq!(
            l.on_line(b"+OK logged in.").expect("test input"),
            Action::Done
        );
        assert_eq!(l.learnt_user_pass(), Some(true));
        // The store changed (USER refused, no verdict on the credentials):
        // AUTH PLAIN once, and that is what the next login learns.
        let mut l = user_pass_first();
        l.on_line(b"+OK Hello there.").expect("test input");
        assert_eq!(
            l.on_line(b"-ERR USER is disabled.").expect("test input"),
            Action::Send(b"AUTH PLAIN AGFsaWNlAHB3\r\n".to_vec())
        );
        assert_eq!(
            l.on_line(b"+OK Logged in.").expect("test input"),
            Action::Done
        );
        assert_eq!(l.learnt_user_pass(), Some(false));
        // A verdict on the credentials is final either way.
        let mut l = user_pass_first();
        l.on_line(b"+OK Hello there.").expect("test input");
        l.on_line(b"+OK Password required.").expect("test input");
        assert!(matches!(
            l.on_line(b"-ERR [AUTH] Wrong password."),
            Err(Error::Rejected(_))
        ));
        assert_eq!(l.learnt_user_pass(), None);
        // Behind XCLIENT, USER goes in the same write.
        let peer: SocketAddr = "192.0.2.7:4242".parse().expect("test input");
        let mut l = Login::new(&user(), None, false, Some(peer))
            .expect("test input")
            .user_pass_first(true);
        assert_eq!(
            l.on_line(b"+OK [XCLIENT] Dovecot ready.")
                .expect("test input"),
            Action::Send(b"XCLIENT ADDR=192.0.2.7 PORT=4242\r\nUSER alice\r\n".to_vec())
        );
        assert_eq!(l.on_line(b"+OK").expect("test input"), Action::Read);
        assert_eq!(
            l.on_line(b"+OK Password required.").expect("test input"),
            Action::Send(b"PASS pw\r\n".to_vec())
        );
    }

    #[test]
    fn plain_login_as_the_user() {
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        let Action::Send(auth) = l.on_line(b"+OK Dovecot ready.").expect("test input") else {
            panic!()
        };
        // base64("\0alice\0pw")
        assert_eq!(auth, b"AUTH PLAIN AGFsaWNlAHB3\r\n");
        assert_eq!(
            l.on_line(b"+OK Logged in.").expect("test input"),
            Action::Done
        );
        assert!(l.is_done());
    }

    #[test]
    fn master_login_uses_the_authzid_or_the_separator() {
        let master = Master {
            user: "admin",
            password: "adminpw",
            separator: None,
        };
        let creds = Credentials::Master { user: "alice" };
        let mut l = Login::new(&creds, Some(&master), false, None).expect("test input");
        let Action::Send(auth) = l.on_line(b"+OK hi").expect("test input") else {
            panic!()
        };
        assert_eq!(
            auth,
            format!(
                "AUTH PLAIN {}\r\n",
                crate::sasl::encode(b"alice\0admin\0adminpw")
            )
            .into_bytes()
        );
        let sep = Master {
            separator: Some("*"),
            ..master
        };
        let mut l = Login::new(&creds, Some(&sep), false, None).expect("test input");
        let Action::Send(auth) = l.on_line(b"+OK hi").expect("test input") else {
            panic!()
        };
        assert_eq!(
            auth,
            format!(
                "AUTH PLAIN {}\r\n",
                crate::sasl::encode(b"\0alice*admin\0adminpw")
            )
            .into_bytes()
        );
    }

    #[test]
    fn stls_then_auth_and_xclient_only_when_offered() {
        let peer: SocketAddr = "192.0.2.7:4242".parse().expect("test input");
        let mut l = Login::new(&user(), None, true, Some(peer)).expect("test input");
        assert_eq!(
            l.on_line(b"+OK [XCLIENT] ready").expect("test input"),
            Action::Send(b"STLS\r\n".to_vec())
        );
        assert_eq!(
            l.on_line(b"+OK Begin TLS").expect("test input"),
            Action::StartTls
        );
        assert!(matches!(l.tls_started(), Action::Send(b) if b.starts_with(b"AUTH PLAIN")));

        // XCLIENT and the login in one write; the login's verdict follows
        // XCLIENT's, whichever that was.
        for xclient_verdict in [&b"+OK Updated"[..], b"-ERR Not trusted"] {
            let mut l = Login::new(&user(), None, false, Some(peer)).expect("test input");
            assert_eq!(
                l.on_line(b"+OK [XCLIENT] Dovecot ready.")
                    .expect("test input"),
                Action::Send(
                    b"XCLIENT ADDR=192.0.2.7 PORT=4242\r\nAUTH PLAIN AGFsaWNlAHB3\r\n".to_vec()
                )
            );
            assert_eq!(
                l.on_line(xclient_verdict).expect("test input"),
                Action::Read
            );
            assert_eq!(
                l.on_line(b"+OK Logged in.").expect("test input"),
                Action::Done
            );
        }
    }

    #[test]
    fn a_bearer_token_goes_unchanged_and_its_challenge_comes_back() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine as _;
        let msg = b"n,a=alice,\x01auth=Bearer tok\x01\x01";
        let creds = Credentials::Bearer {
            user: "alice",
            mechanism: crate::sasl::Mechanism::OAuthBearer,
            message: msg,
        };
        let master = Master {
            user: "admin",
            password: "pw",
            separator: Some("*"),
        };
        let mut l = Login::new(&creds, Some(&master), false, None).expect("new");
        assert_eq!(
            l.on_line(b"+OK ready").expect("greeting"),
            Action::Send(format!("AUTH OAUTHBEARER {}\r\n", STANDARD.encode(msg)).into_bytes())
        );
        let json = br#"{"status":"invalid_token"}"#;
        let challenge = format!("+ {}", STANDARD.encode(json));
        assert_eq!(
            l.on_line(challenge.as_bytes()).expect("challenge"),
            Action::Challenge(json.to_vec())
        );
        assert_eq!(
            l.answer(Some(b"\x01")).expect("answer"),
            Action::Send(b"AQ==\r\n".to_vec())
        );
        assert!(matches!(
            l.on_line(b"-ERR [AUTH] Authentication failed."),
            Err(Error::Rejected(t)) if t.contains("[AUTH]")
        ));
        // A second challenge is the store misbehaving.
        let mut l = Login::new(&creds, None, false, None).expect("new");
        l.on_line(b"+OK").expect("greeting");
        l.on_line(challenge.as_bytes()).expect("challenge");
        assert!(l.on_line(challenge.as_bytes()).is_err());
        // PLAIN logins have no answer to give.
        let l = Login::new(&user(), None, false, None).expect("new");
        assert!(l.answer(None).is_err());
    }

    #[test]
    fn refusals_are_classified() {
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        l.on_line(b"+OK").expect("test input");
        assert!(matches!(
            l.on_line(b"-ERR [AUTH] Authentication failed."),
            Err(Error::Rejected(_))
        ));
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        l.on_line(b"+OK").expect("test input");
        assert!(matches!(
            l.on_line(b"-ERR [SYS/TEMP] try later"),
            Err(Error::Unavailable(_))
        ));
        let mut l = Login::new(&user(), None, false, None).expect("test input");
        assert!(matches!(
            l.on_line(b"* OK imap"),
            Err(Error::Protocol { .. })
        ));
    }
}
