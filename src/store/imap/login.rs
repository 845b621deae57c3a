//! Logging in to a store, sans I/O: greeting, STARTTLS, capabilities, the
//! client's ID, AUTHENTICATE PLAIN (as the user or a master user) or LOGIN,
//! or the client's own OAUTHBEARER / XOAUTH2 message (with a failure
//! challenge relayed: [`Action::Challenge`]), post-login capabilities. [`Login`] takes the store's responses and says
//! what to send next; the driver in [`super::client`] does the I/O, and the
//! fuzz target drives the same machine with whatever bytes it likes.

use base64::Engine;

use super::response::{Response, Status, Tagged, Untagged};
use crate::store::Error;

/// Who logs in.
#[derive(Clone, Copy)]
pub enum Credentials<'a> {
    /// The user with their own password (pass-through).
    User {
        /// Login name.
        user: &'a str,
        /// Password.
        password: &'a [u8],
    },
    /// The store's master user on behalf of `user`.
    Master {
        /// Login name.
        user: &'a str,
    },
    /// The client's bearer token, passed on unchanged (never a master login:
    /// the store judges the token).
    Bearer {
        /// Login name (from the message), for logs.
        user: &'a str,
        /// OAUTHBEARER or XOAUTH2.
        mechanism: crate::sasl::Mechanism,
        /// The client's decoded SASL message.
        message: &'a [u8],
    },
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        match self {
            Credentials::User { user, .. } => write!(f, "User({user})"),
            Credentials::Master { user } => write!(f, "Master({user})"),
            Credentials::Bearer {
                user, mechanism, ..
            } => write!(f, "Bearer({user}, {})", mechanism.name()),
        }
    }
}

/// A master login as the store wants it.
#[derive(Debug, Clone)]
pub struct Master<'a> {
    /// The master user.
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
    /// `Some("*")`: log in as `user*master` (Dovecot's separator); `None`:
    /// SASL PLAIN with the user as authorization identity.
    pub separator: Option<&'a str>,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: read more.
    Read,
    /// Write these bytes, then read.
    Send(Vec<u8>),
    /// Start TLS on the connection now (nothing of the store's may be
    /// buffered), then call [`Login::tls_started`].
    StartTls,
    /// Logged in, with the store's post-login capabilities.
    Done(Vec<String>),
    /// The store challenged a bearer login (decoded; for OAUTHBEARER its
    /// JSON error): relay it to the client, then call [`Login::answer`].
    Challenge(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    StartTls,
    Capability,
    /// AUTHENTICATE PLAIN without SASL-IR: waiting for `+`.
    Continue,
    Authenticating,
    /// A bearer login was challenged: waiting for the client's answer.
    Challenged,
    PostCapability,
    Done,
}

/// The login dialog with one store.
pub struct Login {
    state: State,
    starttls: bool,
    caps: Option<Vec<String>>,
    /// Capabilities seen since the last command (untagged or in a code).
    seen: Option<Vec<String>>,
    /// The ID command's arguments (`("name" "x" ...)`), if there is one.
    id: Option<Vec<u8>>,
    authz: String,
    authc: String,
    secret: Vec<u8>,
    /// The base64 PLAIN response, sent after `+` when there is no SASL-IR.
    pending_plain: Option<Vec<u8>>,
    /// A bearer login: the client's message instead of PLAIN or LOGIN.
    bearer: Option<crate::store::bearer::Exchange>,
}

/// Tags of the login dialog (fixed: one dialog per connection).
const STARTTLS: &str = "S1";
const CAPABILITY: &str = "S2";
const ID: &str = "S3";
const AUTH: &str = "S4";
const POST_CAPABILITY: &str = "S5";

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

/// Writes `value` as a quoted string, or as a literal when it cannot be
/// quoted; false when that needs a synchronizing literal (no LITERAL+).
fn astring(out: &mut Vec<u8>, value: &[u8], literal_plus: bool) -> bool {
    let quotable = value.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.extend_from_slice(&quoted(value));
        true
    } else {
        let plus = if literal_plus { "+" } else { "" };
        out.extend_from_slice(format!("{{{}{plus}}}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
        literal_plus
    }
}

/// A quoted string (mailbox names travel as modified UTF-7 or UTF-8 bytes).
pub fn quoted(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// The ID arguments forwarded to the store: the client's own fields (not its
/// `x-` ones, which only we may set) and its address, within RFC 2971's 30
/// pairs.
pub fn id_arguments(client_id: &[(String, Option<String>)], peer: std::net::SocketAddr) -> Vec<u8> {
    let mut out = b"(".to_vec();
    let pair = |out: &mut Vec<u8>, k: &str, v: Option<&str>| {
        if out.len() > 1 {
            out.push(b' ');
        }
        out.extend_from_slice(&quoted(k.as_bytes()));
        out.push(b' ');
        match v {
            Some(v) => out.extend_from_slice(&quoted(v.as_bytes())),
            None => out.extend_from_slice(b"NIL"),
        }
    };
    let own = client_id
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("x-"))
        .take(28);
    for (k, v) in own {
        pair(&mut out, k, v.as_deref());
    }
    pair(&mut out, "x-originating-ip", Some(&peer.ip().to_string()));
    pair(
        &mut out,
        "x-originating-port",
        Some(&peer.port().to_string()),
    );
    out.push(b')');
    out
}

impl Login {
    /// A dialog for `creds` (`master` must be given for a master login);
    /// `id` is the ID command's arguments, sent when the store offers ID.
    pub fn new(
        creds: &Credentials<'_>,
        master: Option<&Master<'_>>,
        starttls: bool,
        id: Option<Vec<u8>>,
    ) -> Result<Login, Error> {
        let mut bearer = None;
        let (authz, authc, secret) = match creds {
            Credentials::User { user, password } => {
                (String::new(), user.to_string(), password.to_vec())
            }
            Credentials::Bearer {
                user,
                mechanism,
                message,
            } => {
                bearer = Some(crate::store::bearer::Exchange::new(*mechanism, message));
                (String::new(), user.to_string(), Vec::new())
            }
            Credentials::Master { user } => {
                let m =
                    master.ok_or_else(|| Error::Config("no master_user for this store".into()))?;
                match m.separator {
                    Some(sep) => (
                        String::new(),
                        format!("{user}{sep}{}", m.user),
                        m.password.as_bytes().to_vec(),
                    ),
                    None => (
                        user.to_string(),
                        m.user.to_string(),
                        m.password.as_bytes().to_vec(),
                    ),
                }
            }
        };
        Ok(Login {
            state: State::Greeting,
            starttls,
            caps: None,
            seen: None,
            id,
            authz,
            authc,
            secret,
            pending_plain: None,
            bearer,
        })
    }

    /// Whether the dialog is over.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The stage, for errors and timeouts.
    pub fn stage(&self) -> &'static str {
        match self.state {
            State::Greeting => "greeting",
            State::StartTls => "starttls",
            State::Capability => "capability",
            State::Continue | State::Authenticating | State::Challenged => "login",
            State::PostCapability => "post-login capability",
            State::Done => "done",
        }
    }

    /// TLS is up: pre-TLS capabilities are not to be trusted, ask again.
    pub fn tls_started(&mut self) -> Action {
        self.caps = None;
        self.state = State::Capability;
        Action::Send(format!("{CAPABILITY} CAPABILITY\r\n").into_bytes())
    }

    /// Feeds one response from the store.
    pub fn on_response(&mut self, response: Response) -> Result<Action, Error> {
        let stage = self.stage();
        match response {
            Response::Untagged(u) => self.on_untagged(&u),
            Response::Continue(_) if self.state == State::Continue => {
                self.state = State::Authenticating;
                Ok(Action::Send(self.pending_plain.take().unwrap_or_default()))
            }
            Response::Continue(raw) if self.state == State::Authenticating => {
                let Some(exchange) = self.bearer.as_mut() else {
                    return Err(Error::Protocol {
                        stage,
                        what: "challenge to a PLAIN login".into(),
                    });
                };
                let payload = raw.strip_prefix(b"+").unwrap_or(&raw);
                let challenge = exchange.on_challenge(payload.trim_ascii())?;
                self.state = State::Challenged;
                Ok(Action::Challenge(challenge))
            }
            Response::Continue(raw) => Err(Error::Protocol {
                stage,
                what: format!(
                    "unexpected continuation {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            }),
            Response::Tagged(t) => self.on_tagged(t),
        }
    }

    fn on_untagged(&mut self, u: &Untagged) -> Result<Action, Error> {
        if u.is_bye() {
            return Err(Error::Unavailable(u.text()));
        }
        if self.state == State::Greeting {
            if !u.is_ok() {
                return Err(Error::Protocol {
                    stage: "greeting",
                    what: format!("unexpected greeting {:?}", u.text()),
                });
            }
            self.caps = u.capabilities();
            if self.starttls {
                self.state = State::StartTls;
                return Ok(Action::Send(
                    format!("{STARTTLS} STARTTLS\r\n").into_bytes(),
                ));
            }
            return self.after_capabilities();
        }
        if let Some(c) = u.capabilities() {
            self.seen = Some(c);
        }
        Ok(Action::Read)
    }

    fn on_tagged(&mut self, t: Tagged) -> Result<Action, Error> {
        let stage = self.stage();
        match (self.state, t.tag.as_str()) {
            (State::StartTls, STARTTLS) => {
                if t.status != Status::Ok {
                    return Err(Error::Protocol {
                        stage,
                        what: t.text,
                    });
                }
                Ok(Action::StartTls)
            }
            (State::Capability, CAPABILITY) => {
                self.caps = Some(self.seen.take().unwrap_or_default());
                self.after_capabilities()
            }
            // The store's answer to ID does not matter: the login decides.
            (State::Continue | State::Authenticating | State::Challenged, ID) => Ok(Action::Read),
            (State::Continue | State::Authenticating, AUTH) => {
                if t.status != Status::Ok {
                    let upper = t.text.to_ascii_uppercase();
                    // A bearer login's BAD is the store's word on the client's
                    // message (a cancel, a malformed token): the client's.
                    let bad_is_ours = t.status == Status::Bad && self.bearer.is_none();
                    return Err(
                        if t.is_temporary() || upper.contains("[INUSE]") || bad_is_ours {
                            Error::Unavailable(t.text)
                        } else {
                            Error::Rejected(t.text)
                        },
                    );
                }
                if let Some(c) = t.capabilities().or_else(|| self.seen.take()) {
                    self.state = State::Done;
                    return Ok(Action::Done(c));
                }
                self.state = State::PostCapability;
                Ok(Action::Send(
                    format!("{POST_CAPABILITY} CAPABILITY\r\n").into_bytes(),
                ))
            }
            (State::PostCapability, POST_CAPABILITY) => {
                self.state = State::Done;
                let caps = self
                    .seen
                    .take()
                    .or_else(|| self.caps.take())
                    .unwrap_or_default();
                Ok(Action::Done(caps))
            }
            _ => Err(Error::Protocol {
                stage,
                what: format!("unexpected reply {} {}", t.tag, t.text),
            }),
        }
    }

    /// The client's answer to the store's challenge (`None`: cancelled):
    /// what to send the store.
    pub fn answer(&mut self, answer: Option<&[u8]>) -> Result<Action, Error> {
        match (&self.bearer, self.state) {
            (Some(exchange), State::Challenged) => {
                self.state = State::Authenticating;
                Ok(Action::Send(exchange.answer(answer)))
            }
            _ => Err(Error::Protocol {
                stage: self.stage(),
                what: "an answer without a challenge".into(),
            }),
        }
    }

    /// Capabilities known: ask for them, or send ID and the login in one write.
    fn after_capabilities(&mut self) -> Result<Action, Error> {
        let Some(caps) = self.caps.clone() else {
            self.state = State::Capability;
            return Ok(Action::Send(
                format!("{CAPABILITY} CAPABILITY\r\n").into_bytes(),
            ));
        };
        self.login_bytes(&caps)
            .map(Action::Send)
            .map_err(|what| Error::Protocol {
                stage: "login",
                what,
            })
    }

    fn login_bytes(&mut self, caps: &[String]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if let Some(id) = self.id.take().filter(|_| has(caps, "ID")) {
            out.extend_from_slice(format!("{ID} ID ").as_bytes());
            out.extend_from_slice(&id);
            out.extend_from_slice(b"\r\n");
        }
        let literal_plus = has(caps, "LITERAL+");
        if let Some(exchange) = &self.bearer {
            let mech = exchange.mechanism().name();
            let offered = caps.iter().filter_map(|c| {
                c.get(..5)
                    .filter(|p| p.eq_ignore_ascii_case("AUTH="))
                    .map(|_| &c[5..])
            });
            if !exchange.offered_by(offered) {
                return Err(format!("store does not offer AUTH={mech}"));
            }
            let b64 = exchange.initial_response();
            if has(caps, "SASL-IR") {
                out.extend_from_slice(format!("{AUTH} AUTHENTICATE {mech} {b64}\r\n").as_bytes());
                self.state = State::Authenticating;
            } else {
                out.extend_from_slice(format!("{AUTH} AUTHENTICATE {mech}\r\n").as_bytes());
                self.pending_plain = Some(format!("{b64}\r\n").into_bytes());
                self.state = State::Continue;
            }
            return Ok(out);
        }
        if has(caps, "AUTH=PLAIN") {
            let mut raw = Vec::new();
            raw.extend_from_slice(self.authz.as_bytes());
            raw.push(0);
            raw.extend_from_slice(self.authc.as_bytes());
            raw.push(0);
            raw.extend_from_slice(&self.secret);
            let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
            if has(caps, "SASL-IR") {
                out.extend_from_slice(format!("{AUTH} AUTHENTICATE PLAIN {b64}\r\n").as_bytes());
                self.state = State::Authenticating;
            } else {
                out.extend_from_slice(format!("{AUTH} AUTHENTICATE PLAIN\r\n").as_bytes());
                self.pending_plain = Some(format!("{b64}\r\n").into_bytes());
                self.state = State::Continue;
            }
            return Ok(out);
        }
        if !self.authz.is_empty() {
            return Err("master login needs AUTH=PLAIN on the store".into());
        }
        if has(caps, "LOGINDISABLED") {
            return Err("store refuses LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN".into());
        }
        out.extend_from_slice(format!("{AUTH} LOGIN ").as_bytes());
        if !astring(&mut out, self.authc.as_bytes(), literal_plus) {
            return Err("login needs a literal and the store has no LITERAL+".into());
        }
        out.push(b' ');
        if !astring(&mut out, &self.secret, literal_plus) {
            return Err("password needs a literal and the store has no LITERAL+".into());
        }
        out.extend_from_slice(b"\r\n");
        self.state = State::Authenticating;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::response::classify;
    use super::*;

    fn feed(l: &mut Login, line: &str) -> Result<Action, Error> {
        l.on_response(classify(line.as_bytes().to_vec()).expect("classify"))
    }

    fn sent(a: Action) -> String {
        match a {
            Action::Send(b) => String::from_utf8(b).expect("utf8"),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    fn user() -> Credentials<'static> {
        Credentials::User {
            user: "alice",
            password: b"secret",
        }
    }

    #[test]
    fn sasl_ir_in_one_write_with_id_and_capabilities_from_the_reply() {
        let id = id_arguments(
            &[("name".into(), Some("mutt".into()))],
            "192.0.2.7:4242".parse().expect("addr"),
        );
        let mut l = Login::new(&user(), None, false, Some(id)).expect("new");
        let out = sent(
            feed(
                &mut l,
                "* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready\r\n",
            )
            .expect("ok"),
        );
        assert!(out.starts_with("S3 ID (\"name\" \"mutt\" \"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"4242\")\r\nS4 AUTHENTICATE PLAIN "), "{out}");
        assert_eq!(
            feed(&mut l, "S3 BAD no ID here\r\n").expect("ok"),
            Action::Read
        );
        assert_eq!(
            feed(
                &mut l,
                "S4 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n"
            )
            .expect("ok"),
            Action::Done(vec!["IMAP4rev1".into(), "IDLE".into(), "MOVE".into()])
        );
        assert!(l.is_done());
    }

    #[test]
    fn capabilities_asked_when_not_announced_and_after_login() {
        let mut l = Login::new(&user(), None, false, None).expect("new");
        assert_eq!(
            sent(feed(&mut l, "* OK ready\r\n").expect("ok")),
            "S2 CAPABILITY\r\n"
        );
        feed(&mut l, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n").expect("ok");
        let out = sent(feed(&mut l, "S2 OK done\r\n").expect("ok"));
        assert_eq!(out, "S4 AUTHENTICATE PLAIN\r\n");
        let plain = sent(feed(&mut l, "+ \r\n").expect("ok"));
        assert_eq!(plain, "AGFsaWNlAHNlY3JldA==\r\n");
        assert_eq!(
            sent(feed(&mut l, "S4 OK in\r\n").expect("ok")),
            "S5 CAPABILITY\r\n"
        );
        feed(&mut l, "* CAPABILITY IMAP4rev1 IDLE\r\n").expect("ok");
        assert_eq!(
            feed(&mut l, "S5 OK done\r\n").expect("ok"),
            Action::Done(vec!["IMAP4rev1".into(), "IDLE".into()])
        );
    }

    #[test]
    fn starttls_forgets_pre_tls_capabilities() {
        let mut l = Login::new(&user(), None, true, None).expect("new");
        let out = sent(
            feed(
                &mut l,
                "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR] hi\r\n",
            )
            .expect("ok"),
        );
        assert_eq!(out, "S1 STARTTLS\r\n");
        assert_eq!(feed(&mut l, "S1 OK go\r\n").expect("ok"), Action::StartTls);
        assert_eq!(sent(l.tls_started()), "S2 CAPABILITY\r\n");
        feed(&mut l, "* CAPABILITY IMAP4rev1 LITERAL+\r\n").expect("ok");
        // No AUTH=PLAIN after TLS: LOGIN, quoted.
        let out = sent(feed(&mut l, "S2 OK\r\n").expect("ok"));
        assert_eq!(out, "S4 LOGIN \"alice\" \"secret\"\r\n");
    }

    #[test]
    fn refusals_and_byes_are_typed() {
        let mut l = Login::new(&user(), None, false, None).expect("new");
        feed(
            &mut l,
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        )
        .expect("ok");
        assert!(matches!(
            feed(&mut l, "S4 NO [AUTHENTICATIONFAILED] bad\r\n"),
            Err(Error::Rejected(_))
        ));
        let mut l = Login::new(&user(), None, false, None).expect("new");
        feed(
            &mut l,
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        )
        .expect("ok");
        assert!(matches!(
            feed(&mut l, "S4 NO [UNAVAILABLE] later\r\n"),
            Err(Error::Unavailable(_))
        ));
        let mut l = Login::new(&user(), None, false, None).expect("new");
        assert!(matches!(
            feed(&mut l, "* BYE too busy\r\n"),
            Err(Error::Unavailable(_))
        ));
        let mut l = Login::new(&user(), None, false, None).expect("new");
        assert!(matches!(
            feed(&mut l, "* PREAUTH hello\r\n"),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn master_logins_and_literals() {
        let m = Master {
            user: "admin",
            password: "pw",
            separator: Some("*"),
        };
        let mut l =
            Login::new(&Credentials::Master { user: "bob" }, Some(&m), false, None).expect("new");
        let out = sent(feed(&mut l, "* OK [CAPABILITY IMAP4rev1] hi\r\n").expect("ok"));
        assert_eq!(out, "S4 LOGIN \"bob*admin\" \"pw\"\r\n");
        let m = Master {
            separator: None,
            ..m
        };
        let mut l =
            Login::new(&Credentials::Master { user: "bob" }, Some(&m), false, None).expect("new");
        // A master login by authzid needs AUTH=PLAIN.
        assert!(matches!(
            feed(&mut l, "* OK [CAPABILITY IMAP4rev1] hi\r\n"),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            Login::new(&Credentials::Master { user: "bob" }, None, false, None),
            Err(Error::Config(_))
        ));
        let creds = Credentials::User {
            user: "alice",
            password: "pässwörd".as_bytes(),
        };
        let mut l = Login::new(&creds, None, false, None).expect("new");
        let out = sent(feed(&mut l, "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n").expect("ok"));
        assert!(out.contains("{10+}\r\np"), "{out}");
        let mut l = Login::new(&creds, None, false, None).expect("new");
        assert!(feed(&mut l, "* OK [CAPABILITY IMAP4rev1] hi\r\n").is_err());
    }

    fn bearer(message: &'static [u8]) -> Credentials<'static> {
        Credentials::Bearer {
            user: "alice",
            mechanism: crate::sasl::Mechanism::OAuthBearer,
            message,
        }
    }

    #[test]
    fn bearer_goes_unchanged_and_a_failure_challenge_is_relayed() {
        use base64::engine::general_purpose::STANDARD;
        let msg = b"n,a=alice,\x01auth=Bearer tok\x01\x01";
        let m = Master {
            user: "admin",
            password: "pw",
            separator: Some("*"),
        };
        // A master user configured for the store is not used.
        let mut l = Login::new(&bearer(msg), Some(&m), false, None).expect("new");
        let out = sent(
            feed(
                &mut l,
                "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER] hi\r\n",
            )
            .expect("ok"),
        );
        assert_eq!(
            out,
            format!("S4 AUTHENTICATE OAUTHBEARER {}\r\n", STANDARD.encode(msg))
        );
        let json = br#"{"status":"invalid_token"}"#;
        let challenge = format!("+ {}\r\n", STANDARD.encode(json));
        assert_eq!(
            feed(&mut l, &challenge).expect("ok"),
            Action::Challenge(json.to_vec())
        );
        assert_eq!(sent(l.answer(Some(b"\x01")).expect("ok")), "AQ==\r\n");
        match feed(
            &mut l,
            "S4 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ) {
            Err(Error::Rejected(text)) => {
                assert_eq!(text, "NO [AUTHENTICATIONFAILED] Authentication failed.")
            }
            other => panic!("{other:?}"),
        }
        // Without SASL-IR: the message after the store's `+`; a cancel's BAD
        // is the client's doing.
        let mut l = Login::new(&bearer(msg), None, false, None).expect("new");
        assert_eq!(
            sent(
                feed(
                    &mut l,
                    "* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] hi\r\n"
                )
                .expect("ok")
            ),
            "S4 AUTHENTICATE OAUTHBEARER\r\n"
        );
        assert_eq!(
            sent(feed(&mut l, "+ \r\n").expect("ok")),
            format!("{}\r\n", STANDARD.encode(msg))
        );
        feed(&mut l, &challenge).expect("challenge");
        assert_eq!(sent(l.answer(None).expect("ok")), "*\r\n");
        assert!(matches!(
            feed(&mut l, "S4 BAD Authentication aborted by client.\r\n"),
            Err(Error::Rejected(_))
        ));
        // A second challenge, or a store without the mechanism: protocol errors.
        let mut l = Login::new(&bearer(msg), None, false, None).expect("new");
        feed(
            &mut l,
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] hi\r\n",
        )
        .expect("ok");
        feed(&mut l, &challenge).expect("challenge");
        l.answer(Some(b"\x01")).expect("answer");
        assert!(matches!(
            feed(&mut l, &challenge),
            Err(Error::Protocol { .. })
        ));
        let mut l = Login::new(&bearer(msg), None, false, None).expect("new");
        assert!(matches!(
            feed(
                &mut l,
                "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\n"
            ),
            Err(Error::Protocol { .. })
        ));
        // A challenge to a PLAIN login is refused, and so is an answer without one.
        let mut l = Login::new(&user(), None, false, None).expect("new");
        feed(
            &mut l,
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\n",
        )
        .expect("ok");
        assert!(l.answer(None).is_err());
        assert!(feed(&mut l, &challenge).is_err());
        assert!(!format!("{:?}", bearer(msg)).contains("tok"));
    }

    #[test]
    fn id_keeps_to_thirty_pairs() {
        let many: Vec<(String, Option<String>)> = (0..40)
            .map(|i| (format!("k{i}"), Some("v".into())))
            .collect();
        let id = id_arguments(&many, "192.0.2.1:1".parse().expect("addr"));
        // Every field and value is quoted: four quotes a pair.
        let quotes = id.iter().filter(|&&b| b == b'"').count();
        assert_eq!(quotes / 4, 30);
    }
}
