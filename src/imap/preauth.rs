//! The pre-authentication IMAP session as a sans-I/O state machine.
//!
//! It takes client bytes and returns [`Action`]s; it never touches a socket, a
//! clock or the directory, so byte scripts test it and the fuzzer drives it.
//!
//! ```text
//!  Ready ──LOGIN──────────────────────────────► LoggingIn ─ok─► (handoff: relay)
//!    │  ──AUTHENTICATE PLAIN (SASL-IR)────────►     │
//!    │  ──AUTHENTICATE PLAIN──► AuthPlain ─────►     │ failed
//!    │  ──AUTHENTICATE LOGIN──► AuthLoginUser ─► AuthLoginPass ─► LoggingIn
//!    │  ──AUTHENTICATE OAUTHBEARER|XOAUTH2 [IR]─► [AuthBearer] ─► LoggingIn
//!    │                    store's challenge ─► Challenged ─answer─► LoggingIn
//!    │  ──STARTTLS──► (driver handshakes; buffered plaintext discarded)
//!    │  ──LOGOUT / limits──► Closed
//!    ◄──────────────────────────────────────────────┘
//! ```
//!
//! A bearer login ([`Secret::Bearer`]) is not judged here: the driver routes
//! by the user in the message and the store judges the token. When the store
//! answers with a failure challenge, [`PreAuth::relay_challenge`] sends it to
//! the client and the client's answer comes back as [`Action::Answer`].

use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::{AuthenticateDataCodec, CommandCodec};

use crate::imap_wire::{tag_of, Frame, Framer};
use crate::sasl::{Mechanism, Secret};

/// Limits and switches for one pre-auth session.
#[derive(Debug, Clone)]
pub struct Options {
    /// The listener offers STARTTLS (a certificate is configured).
    pub starttls_available: bool,
    /// The connection is already TLS (port 993, or after STARTTLS).
    pub tls_active: bool,
    /// LOGIN and AUTHENTICATE are refused until TLS is on.
    pub require_tls: bool,
    /// Longest command line.
    pub max_line: usize,
    /// Longest literal.
    pub max_literal: usize,
    /// Commands allowed before authentication.
    pub max_commands: u32,
    /// Invalid commands tolerated before the connection is closed.
    pub max_bad: u32,
    /// Failed logins tolerated on one connection.
    pub max_auth_failures: u32,
    /// Greeting text.
    pub greeting: String,
    /// Offer AUTHENTICATE OAUTHBEARER and XOAUTH2 (`[imap] oauth`).
    pub oauth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            starttls_available: false,
            tls_active: false,
            require_tls: false,
            max_line: 8192,
            max_literal: 4096,
            max_commands: 64,
            max_bad: 10,
            max_auth_failures: 5,
            greeting: "IMAP4rev1 server ready.".into(),
            oauth: false,
        }
    }
}

/// A login the client asked for; the driver checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The command's tag.
    pub tag: String,
    /// The login as typed (for a bearer login: the user its message names).
    pub user: String,
    /// The password or bearer message (never shown by `Debug`).
    pub secret: Secret,
    /// `LOGIN`, `PLAIN`, `AUTH-LOGIN`, `OAUTHBEARER` or `XOAUTH2`, for logs.
    pub mechanism: &'static str,
}

impl Login {
    /// The password, for a password login.
    pub fn password(&self) -> Option<&[u8]> {
        match &self.secret {
            Secret::Password(p) => Some(p),
            Secret::Bearer { .. } => None,
        }
    }
}

/// What the driver must do next.
pub type Action = crate::frontend::Step<Login>;

#[derive(Debug)]
enum State {
    Ready,
    AuthPlain { tag: String },
    AuthLoginUser { tag: String },
    AuthLoginPass { tag: String, user: String },
    AuthBearer { tag: String, mechanism: Mechanism },
    Challenged,
    LoggingIn,
    Closed,
}

/// The pre-auth session.
pub struct PreAuth {
    opts: Options,
    state: State,
    framer: Framer,
    commands: u32,
    bad: u32,
    auth_failures: u32,
    client_id: Vec<(String, Option<String>)>,
    /// Actions that must follow the one just returned (a write, then close or TLS).
    queued: std::collections::VecDeque<Action>,
}

fn quote_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl PreAuth {
    /// A fresh session.
    pub fn new(opts: Options) -> PreAuth {
        let framer = Framer::new(opts.max_line, opts.max_literal);
        PreAuth {
            opts,
            state: State::Ready,
            framer,
            commands: 0,
            bad: 0,
            auth_failures: 0,
            client_id: Vec::new(),
            queued: std::collections::VecDeque::new(),
        }
    }

    /// The capabilities offered before login.
    pub fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE");
        if self.opts.starttls_available && !self.opts.tls_active {
            caps.push_str(" STARTTLS");
        }
        if self.login_disabled() {
            caps.push_str(" LOGINDISABLED");
        } else {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
            if self.opts.oauth {
                caps.push_str(" AUTH=OAUTHBEARER AUTH=XOAUTH2");
            }
        }
        caps
    }

    fn login_disabled(&self) -> bool {
        self.opts.require_tls && !self.opts.tls_active
    }

    /// The greeting to send first.
    pub fn greeting(&self) -> Vec<u8> {
        format!(
            "* OK [CAPABILITY {}] {}\r\n",
            self.capabilities(),
            self.opts.greeting
        )
        .into_bytes()
    }

    /// The client's `ID` parameters, to forward to the backend.
    pub fn client_id(&self) -> &[(String, Option<String>)] {
        &self.client_id
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    /// Bytes buffered and not yet processed.
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// TLS is now on: anything the client sent in plaintext after STARTTLS is
    /// thrown away (it could be an injected command, CVE-2011-0411 class).
    pub fn tls_started(&mut self) {
        let discarded = self.framer.take_rest();
        if !discarded.is_empty() {
            tracing::debug!(
                bytes = discarded.len(),
                "discarded plaintext sent after STARTTLS"
            );
        }
        self.opts.tls_active = true;
    }

    /// The login failed: answer `response` (e.g. `NO [AUTHENTICATIONFAILED] ...`)
    /// and go back to waiting for commands, or close after too many failures.
    pub fn login_failed(&mut self, tag: &str, response: &str) -> Vec<u8> {
        self.auth_failures += 1;
        let mut out = format!("{tag} {response}\r\n").into_bytes();
        if self.auth_failures >= self.opts.max_auth_failures {
            out.extend_from_slice(b"* BYE Too many failed logins.\r\n");
            self.state = State::Closed;
            self.queued.push_back(Action::Close);
        } else {
            self.state = State::Ready;
        }
        out
    }

    /// The store challenged the bearer login: what to send the client (the
    /// store's challenge, base64 in a continuation). The client's answer
    /// comes as [`Action::Answer`]; the login then stays under way.
    pub fn relay_challenge(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.state = State::Challenged;
        format!("+ {}\r\n", crate::sasl::encode(challenge)).into_bytes()
    }

    /// The login succeeded: the bytes the client pipelined after it, for the backend.
    pub fn into_pipelined(mut self) -> Vec<u8> {
        self.framer.take_rest()
    }

    /// The next thing to do; `None` when more client bytes are needed.
    pub fn poll(&mut self) -> Option<Action> {
        if let Some(action) = self.queued.pop_front() {
            return Some(action);
        }
        if matches!(self.state, State::LoggingIn | State::Closed) {
            return None;
        }
        match self.framer.next_frame() {
            Frame::Incomplete => None,
            Frame::NeedContinuation => Some(Action::Write(b"+ Ready for literal\r\n".to_vec())),
            Frame::LineTooLong => Some(self.close_with("* BYE Command line too long.\r\n")),
            Frame::LiteralTooLarge { tag, sync } => {
                let tag = tag.unwrap_or_else(|| "*".into());
                if sync {
                    self.bad(format!("{tag} BAD [TOOBIG] Literal too large.\r\n"))
                } else {
                    Some(self.close_with(&format!(
                        "{tag} BAD [TOOBIG] Literal too large.\r\n* BYE Literal too large.\r\n"
                    )))
                }
            }
            Frame::Command(bytes) => self.command(&bytes),
        }
    }

    fn close_with(&mut self, text: &str) -> Action {
        self.state = State::Closed;
        self.queued.push_back(Action::Close);
        Action::Write(text.as_bytes().to_vec())
    }

    fn bad(&mut self, text: String) -> Option<Action> {
        self.bad += 1;
        if self.bad >= self.opts.max_bad {
            let text = format!("{text}* BYE Too many invalid commands.\r\n");
            return Some(self.close_with(&text));
        }
        Some(Action::Write(text.into_bytes()))
    }

    fn command(&mut self, bytes: &[u8]) -> Option<Action> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::AuthPlain { tag } => return self.sasl_plain_response(tag, bytes),
            State::AuthLoginUser { tag } => return self.sasl_login_user(tag, bytes),
            State::AuthLoginPass { tag, user } => return self.sasl_login_pass(tag, user, bytes),
            State::AuthBearer { tag, mechanism } => {
                return match self.sasl_line(&tag, bytes) {
                    Ok(data) => self.sasl_bearer(tag, mechanism, &data),
                    Err(a) => Some(a),
                }
            }
            State::Challenged => {
                self.state = State::LoggingIn;
                let answer = match AuthenticateDataCodec::default().decode(bytes) {
                    Ok(([], AuthenticateData::Continue(data))) => Some(data.declassify().to_vec()),
                    _ => None,
                };
                return Some(Action::Answer(answer));
            }
            State::Ready => {}
            other @ (State::LoggingIn | State::Closed) => {
                self.state = other;
                return None;
            }
        }
        self.commands += 1;
        if self.commands > self.opts.max_commands {
            return Some(self.close_with("* BYE Too many commands before login.\r\n"));
        }
        let command = match CommandCodec::default().decode(bytes) {
            Ok(([], command)) => command,
            _ => {
                let tag = tag_of(bytes).unwrap_or_else(|| "*".into());
                return self.bad(format!("{tag} BAD Invalid command.\r\n"));
            }
        };
        let tag = command.tag.inner().to_string();
        match command.body {
            CommandBody::Capability => Some(Action::Write(
                format!(
                    "* CAPABILITY {}\r\n{tag} OK CAPABILITY completed.\r\n",
                    self.capabilities()
                )
                .into_bytes(),
            )),
            CommandBody::Noop => Some(Action::Write(
                format!("{tag} OK NOOP completed.\r\n").into_bytes(),
            )),
            CommandBody::Logout => Some(self.close_with(&format!(
                "* BYE Logging out.\r\n{tag} OK LOGOUT completed.\r\n"
            ))),
            CommandBody::StartTLS => {
                if self.opts.tls_active || !self.opts.starttls_available {
                    return self.bad(format!("{tag} BAD STARTTLS not available.\r\n"));
                }
                // Everything after the STARTTLS line is plaintext the client had no
                // business sending yet; it is dropped by `tls_started`.
                self.queued.push_back(Action::StartTls);
                Some(Action::Write(
                    format!("{tag} OK Begin TLS negotiation now.\r\n").into_bytes(),
                ))
            }
            CommandBody::Id { parameters } => {
                self.client_id = parameters
                    .unwrap_or_default()
                    .into_iter()
                    .take(30)
                    .filter_map(|(k, v)| {
                        let k = String::from_utf8(k.as_ref().to_vec()).ok()?;
                        let v = v
                            .into_option()
                            .and_then(|v| String::from_utf8(v.into_owned()).ok());
                        // Only what can travel as a quoted string to the backend.
                        let v = v.filter(|v| v.len() <= 1024 && quote_ok(v));
                        (k.len() <= 30 && quote_ok(&k)).then_some((k, v))
                    })
                    .collect();
                Some(Action::Write(
                    format!("* ID NIL\r\n{tag} OK ID completed.\r\n").into_bytes(),
                ))
            }
            CommandBody::Login { username, password } => {
                if self.login_disabled() {
                    return Some(self.privacy_required(&tag));
                }
                let Ok(user) = String::from_utf8(username.as_ref().to_vec()) else {
                    return self.bad(format!("{tag} BAD Login is not UTF-8.\r\n"));
                };
                let password = Secret::Password(password.declassify().as_ref().to_vec());
                Some(self.login(tag, user, password, "LOGIN"))
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if self.login_disabled() {
                    return Some(self.privacy_required(&tag));
                }
                let ir = initial_response.map(|r| r.declassify().to_vec());
                match (mechanism, ir) {
                    (AuthMechanism::Plain, Some(ir)) => self.sasl_plain(tag, &ir),
                    (AuthMechanism::Plain, None) => {
                        self.state = State::AuthPlain { tag };
                        Some(Action::Write(b"+ \r\n".to_vec()))
                    }
                    (AuthMechanism::Login, Some(user)) => self.sasl_login_user_bytes(tag, user),
                    (AuthMechanism::Login, None) => {
                        self.state = State::AuthLoginUser { tag };
                        // base64("Username:")
                        Some(Action::Write(b"+ VXNlcm5hbWU6\r\n".to_vec()))
                    }
                    (m @ (AuthMechanism::OAuthBearer | AuthMechanism::XOAuth2), ir)
                        if self.opts.oauth =>
                    {
                        let mechanism = match m {
                            AuthMechanism::XOAuth2 => Mechanism::XOAuth2,
                            _ => Mechanism::OAuthBearer,
                        };
                        match ir {
                            Some(ir) => self.sasl_bearer(tag, mechanism, &ir),
                            None => {
                                self.state = State::AuthBearer { tag, mechanism };
                                Some(Action::Write(b"+ \r\n".to_vec()))
                            }
                        }
                    }
                    _ => Some(Action::Write(
                        format!("{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n")
                            .into_bytes(),
                    )),
                }
            }
            CommandBody::Enable { .. } => Some(Action::Write(
                format!("{tag} BAD ENABLE is only valid after login.\r\n").into_bytes(),
            )),
            _ => self.bad(format!("{tag} BAD Command not valid before login.\r\n")),
        }
    }

    fn privacy_required(&mut self, tag: &str) -> Action {
        Action::Write(
            format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS or port 993 first.\r\n").into_bytes(),
        )
    }

    fn login(&mut self, tag: String, user: String, secret: Secret, mech: &'static str) -> Action {
        self.state = State::LoggingIn;
        Action::Login(Login {
            tag,
            user,
            secret,
            mechanism: mech,
        })
    }

    /// OAUTHBEARER / XOAUTH2, decoded by [`crate::sasl::bearer`]: the user
    /// to route comes from the message (GS2 `a=`, `user=`), the token stays
    /// in it for the store.
    fn sasl_bearer(&mut self, tag: String, mechanism: Mechanism, data: &[u8]) -> Option<Action> {
        use crate::sasl::Error;
        match crate::sasl::bearer(mechanism, data) {
            Ok(id) => Some(self.login(tag, id.user, id.secret, mechanism.name())),
            Err(Error::NotUtf8) => Some(Action::Write(
                format!("{tag} BAD Login is not UTF-8.\r\n").into_bytes(),
            )),
            Err(_) => {
                let how = match mechanism {
                    Mechanism::OAuthBearer => {
                        "the user in the GS2 header (n,a=user,) and auth=Bearer"
                    }
                    Mechanism::XOAuth2 => "user= and auth=Bearer",
                };
                Some(Action::Write(
                    format!(
                        "{tag} BAD Malformed {} message: it needs {how}.\r\n",
                        mechanism.name()
                    )
                    .into_bytes(),
                ))
            }
        }
    }

    /// Decodes one SASL continuation line (`base64` or `*`).
    fn sasl_line(&mut self, tag: &str, bytes: &[u8]) -> Result<Vec<u8>, Action> {
        match AuthenticateDataCodec::default().decode(bytes) {
            Ok(([], AuthenticateData::Continue(data))) => Ok(data.declassify().to_vec()),
            Ok(([], AuthenticateData::Cancel)) => Err(Action::Write(
                format!("{tag} BAD Authentication cancelled.\r\n").into_bytes(),
            )),
            _ => Err(Action::Write(
                format!("{tag} BAD Invalid base64 in authentication.\r\n").into_bytes(),
            )),
        }
    }

    fn sasl_plain_response(&mut self, tag: String, bytes: &[u8]) -> Option<Action> {
        match self.sasl_line(&tag, bytes) {
            Ok(data) => self.sasl_plain(tag, &data),
            Err(a) => Some(a),
        }
    }

    /// `authzid \0 authcid \0 password` (RFC 4616), decoded by [`crate::sasl`].
    /// An authorization identity other than the login would mean acting as
    /// someone else: refused.
    fn sasl_plain(&mut self, tag: String, data: &[u8]) -> Option<Action> {
        use crate::sasl::Error;
        match crate::sasl::plain(data) {
            Ok(id) => Some(self.login(tag, id.user, id.secret, "PLAIN")),
            Err(Error::OtherAuthzid) => Some(Action::Write(self.login_failed(
                &tag,
                "NO [AUTHORIZATIONFAILED] Authorization identity not allowed.",
            ))),
            Err(Error::NotUtf8) => Some(Action::Write(
                format!("{tag} BAD Login is not UTF-8.\r\n").into_bytes(),
            )),
            Err(_) => Some(Action::Write(
                format!("{tag} BAD Malformed PLAIN response.\r\n").into_bytes(),
            )),
        }
    }

    fn sasl_login_user(&mut self, tag: String, bytes: &[u8]) -> Option<Action> {
        match self.sasl_line(&tag, bytes) {
            Ok(user) => self.sasl_login_user_bytes(tag, user),
            Err(a) => Some(a),
        }
    }

    fn sasl_login_user_bytes(&mut self, tag: String, user: Vec<u8>) -> Option<Action> {
        let Ok(user) = String::from_utf8(user) else {
            return Some(Action::Write(
                format!("{tag} BAD Login is not UTF-8.\r\n").into_bytes(),
            ));
        };
        self.state = State::AuthLoginPass { tag, user };
        // base64("Password:")
        Some(Action::Write(b"+ UGFzc3dvcmQ6\r\n".to_vec()))
    }

    fn sasl_login_pass(&mut self, tag: String, user: String, bytes: &[u8]) -> Option<Action> {
        match self.sasl_line(&tag, bytes) {
            Ok(pw) => Some(self.login(tag, user, Secret::Password(pw), "AUTH-LOGIN")),
            Err(a) => Some(a),
        }
    }
}

/// Runs a whole session over a client byte script, answering every login as
/// failed and every STARTTLS as done, and returns what the client would read.
/// The fuzz target and its corpus replay test drive the core through this.
pub fn run_script(script: &[u8], opts: Options) -> Vec<u8> {
    let mut p = PreAuth::new(opts);
    let mut out = p.greeting();
    let mut tag = String::new();
    // Feed in uneven chunks: framing must not depend on how bytes arrive.
    for chunk in script.chunks(7) {
        p.feed(chunk);
        while let Some(action) = p.poll() {
            match action {
                Action::Write(b) => out.extend_from_slice(&b),
                Action::StartTls => p.tls_started(),
                Action::Login(l) => match l.secret {
                    // The store's failure challenge, as Dovecot sends it; the
                    // verdict follows the client's answer.
                    Secret::Bearer { .. } => {
                        out.extend_from_slice(&p.relay_challenge(
                            br#"{"status":"invalid_token","schemes":"bearer","scope":"mail"}"#,
                        ));
                        tag = l.tag;
                    }
                    Secret::Password(_) => {
                        let failed = p.login_failed(
                            &l.tag,
                            "NO [AUTHENTICATIONFAILED] Authentication failed.",
                        );
                        out.extend_from_slice(&failed);
                    }
                },
                Action::Answer(_) => {
                    let failed =
                        p.login_failed(&tag, "NO [AUTHENTICATIONFAILED] Authentication failed.");
                    out.extend_from_slice(&failed);
                }
                Action::Close => return out,
            }
        }
        if p.is_closed() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(starttls: bool) -> PreAuth {
        PreAuth::new(Options {
            starttls_available: starttls,
            ..Options::default()
        })
    }

    /// Feeds bytes and collects every action until more input is needed.
    fn run(p: &mut PreAuth, bytes: &[u8]) -> Vec<Action> {
        p.feed(bytes);
        std::iter::from_fn(|| p.poll()).collect()
    }

    fn written(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn login_of(actions: &[Action]) -> Option<&Login> {
        actions.iter().find_map(|a| match a {
            Action::Login(l) => Some(l),
            _ => None,
        })
    }

    #[test]
    fn greeting_and_capability_offer_what_is_served() {
        let mut p = session(true);
        let greeting = String::from_utf8(p.greeting()).expect("ascii");
        assert!(greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "));
        assert!(greeting.contains("STARTTLS") && greeting.contains("AUTH=PLAIN"));
        let out = written(&run(&mut p, b"a CAPABILITY\r\nb NOOP\r\n"));
        assert!(out.contains("* CAPABILITY IMAP4rev1"));
        assert!(out.contains("a OK CAPABILITY completed.\r\nb OK NOOP completed.\r\n"));
    }

    #[test]
    fn login_with_quoted_and_literal_arguments() {
        let mut p = session(false);
        let a = run(&mut p, b"a1 LOGIN \"alice\" \"p a\\\"ss\"\r\n");
        let l = login_of(&a).expect("login");
        assert_eq!((l.tag.as_str(), l.user.as_str()), ("a1", "alice"));
        assert_eq!(l.password(), Some(&b"p a\"ss"[..]));
        let mut p = session(false);
        let a = run(&mut p, b"a2 LOGIN {5}\r\n");
        assert_eq!(written(&a), "+ Ready for literal\r\n");
        let a = run(&mut p, b"alice {3+}\r\npw!\r\n");
        assert_eq!(login_of(&a).expect("login").password(), Some(&b"pw!"[..]));
    }

    #[test]
    fn authenticate_plain_with_and_without_sasl_ir() {
        // base64("\0alice\0secret")
        let mut p = session(false);
        let a = run(&mut p, b"x AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        let l = login_of(&a).expect("login");
        assert_eq!((l.user.as_str(), l.mechanism), ("alice", "PLAIN"));
        assert_eq!(l.password(), Some(&b"secret"[..]));
        let mut p = session(false);
        assert_eq!(written(&run(&mut p, b"y AUTHENTICATE PLAIN\r\n")), "+ \r\n");
        let a = run(&mut p, b"AGFsaWNlAHNlY3JldA==\r\n");
        assert_eq!(login_of(&a).expect("login").user, "alice");
    }

    #[test]
    fn authenticate_plain_refuses_another_authzid() {
        // base64("bob\0alice\0secret")
        let mut p = session(false);
        let out = written(&run(
            &mut p,
            b"x AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n",
        ));
        assert!(out.starts_with("x NO [AUTHORIZATIONFAILED]"), "{out}");
    }

    #[test]
    fn authenticate_login_asks_user_then_password() {
        let mut p = session(false);
        assert_eq!(
            written(&run(&mut p, b"z AUTHENTICATE LOGIN\r\n")),
            "+ VXNlcm5hbWU6\r\n"
        );
        assert_eq!(written(&run(&mut p, b"YWxpY2U=\r\n")), "+ UGFzc3dvcmQ6\r\n");
        let a = run(&mut p, b"c2VjcmV0\r\n");
        let l = login_of(&a).expect("login");
        assert_eq!(
            (l.user.as_str(), l.password()),
            ("alice", Some(&b"secret"[..]))
        );
        let mut p = session(false);
        run(&mut p, b"z AUTHENTICATE LOGIN\r\n");
        assert_eq!(
            written(&run(&mut p, b"*\r\n")),
            "z BAD Authentication cancelled.\r\n"
        );
    }

    #[test]
    fn starttls_discards_pipelined_plaintext() {
        let mut p = session(true);
        p.feed(b"a STARTTLS\r\nb LOGIN injected pw\r\n");
        assert_eq!(
            p.poll(),
            Some(Action::Write(
                b"a OK Begin TLS negotiation now.\r\n".to_vec()
            ))
        );
        assert_eq!(p.poll(), Some(Action::StartTls));
        p.tls_started();
        assert_eq!(p.poll(), None, "injected LOGIN must not run");
        let caps = p.capabilities();
        assert!(!caps.contains("STARTTLS"));
        let a = run(&mut p, b"c LOGIN alice pw\r\n");
        assert_eq!(login_of(&a).expect("login").user, "alice");
    }

    #[test]
    fn handoff_forwards_pipelined_commands() {
        let mut p = session(false);
        let a = run(
            &mut p,
            b"a LOGIN alice pw\r\nb SELECT INBOX\r\nc FETCH 1 (FLAGS)\r\n",
        );
        assert!(login_of(&a).is_some());
        assert_eq!(
            p.into_pipelined(),
            b"b SELECT INBOX\r\nc FETCH 1 (FLAGS)\r\n".to_vec()
        );
    }

    #[test]
    fn logindisabled_until_tls() {
        let mut p = PreAuth::new(Options {
            starttls_available: true,
            require_tls: true,
            ..Options::default()
        });
        assert!(p.capabilities().contains("LOGINDISABLED"));
        assert!(!p.capabilities().contains("AUTH=PLAIN"));
        let out = written(&run(&mut p, b"a LOGIN alice pw\r\n"));
        assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
    }

    #[test]
    fn oversized_literal_is_refused() {
        let mut p = session(false);
        let out = written(&run(&mut p, b"a LOGIN {100000}\r\n"));
        assert!(out.starts_with("a BAD [TOOBIG]"), "{out}");
        assert!(
            !p.is_closed(),
            "a refused sync literal leaves the connection usable"
        );
        let a = run(&mut p, b"b LOGIN {100000+}\r\n");
        assert!(a.contains(&Action::Close));
    }

    #[test]
    fn garbage_gets_bad_then_bye() {
        let mut p = session(false);
        let out = written(&run(&mut p, b"a FOO\r\n\x00\xff\r\n"));
        assert!(out.contains("a BAD") && out.contains("* BAD"), "{out}");
        let a = run(&mut p, &b"x y z\r\n".repeat(20));
        assert!(written(&a).contains("* BYE Too many invalid commands."));
        assert!(a.contains(&Action::Close));
    }

    #[test]
    fn failed_logins_return_to_ready_then_close() {
        let mut p = session(false);
        for i in 0..4 {
            let a = run(&mut p, format!("t{i} LOGIN alice wrong\r\n").as_bytes());
            let l = login_of(&a).expect("login");
            let out = p.login_failed(&l.tag, "NO [AUTHENTICATIONFAILED] Authentication failed.");
            assert!(!String::from_utf8_lossy(&out).contains("BYE"));
        }
        let a = run(&mut p, b"t5 LOGIN alice wrong\r\n");
        let l = login_of(&a).expect("login").clone();
        let out = p.login_failed(&l.tag, "NO [AUTHENTICATIONFAILED] Authentication failed.");
        assert!(String::from_utf8_lossy(&out).contains("* BYE"));
        assert_eq!(p.poll(), Some(Action::Close));
    }

    /// An ID the size of ImapTest's `id` script, RFC 2971's limits: 30 pairs,
    /// 30-octet field names, 1024-octet values. `literal` sends the values as
    /// literals (`+` for non-synchronizing ones).
    fn rfc2971_id(tag: &str, literal: Option<&str>) -> Vec<u8> {
        let mut out = format!("{tag} ID (").into_bytes();
        for i in 0..30 {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(format!("\"{:0>30}\" ", format!("field{i}")).as_bytes());
            let value = format!("{i:02}").repeat(512);
            match literal {
                Some(plus) => out.extend_from_slice(format!("{{1024{plus}}}\r\n").as_bytes()),
                None => out.push(b'"'),
            }
            out.extend_from_slice(value.as_bytes());
            if literal.is_none() {
                out.push(b'"');
            }
        }
        out.extend_from_slice(b")\r\n");
        out
    }

    #[test]
    fn rfc2971_sized_id_is_accepted_quoted_or_literal() {
        for literal in [None, Some("+"), Some("")] {
            let mut p = session(false);
            let id = rfc2971_id("i1", literal);
            if literal.is_none() {
                assert!(
                    id.len() > Options::default().max_line,
                    "not past the line limit"
                );
            }
            let mut out = String::new();
            // Sent the way a client does: whole, then LOGIN after the reply.
            for chunk in id.chunks(1000) {
                out.push_str(&written(&run(&mut p, chunk)));
            }
            assert!(
                out.ends_with("i1 OK ID completed.\r\n"),
                "{literal:?}: {out}"
            );
            assert!(!p.is_closed());
            let id = p.client_id();
            assert_eq!(id.len(), 30, "{literal:?}");
            assert_eq!(id[0].0, format!("{:0>30}", "field0"));
            assert_eq!(id[29].1.as_deref(), Some("29".repeat(512).as_str()));
            let a = run(&mut p, b"l1 LOGIN alice pw\r\n");
            assert_eq!(login_of(&a).expect("login").user, "alice");
        }
        // Escaped quotes in every octet still fit.
        let mut p = session(false);
        let value = "\\\"".repeat(1024);
        let mut id = b"e ID (".to_vec();
        for i in 0..30 {
            id.extend_from_slice(format!("\"k{i}\" \"{value}\" ").as_bytes());
        }
        id.pop();
        id.extend_from_slice(b")\r\n");
        assert!(id.len() > 60_000);
        assert!(written(&run(&mut p, &id)).ends_with("e OK ID completed.\r\n"));
    }

    #[test]
    fn other_commands_keep_the_line_limit() {
        let mut p = session(false);
        let long = format!("a LOGIN alice {}\r\n", "x".repeat(9000));
        let a = run(&mut p, long.as_bytes());
        assert!(written(&a).contains("* BYE Command line too long."));
        assert!(a.contains(&Action::Close));
        // A tag that merely starts with ID, or IDLE, is no ID.
        for cmd in ["a IDLE ", "a IDENTIFY ", "ID x ", "a NOOP ID "] {
            let mut p = session(false);
            let a = run(&mut p, format!("{cmd}{}", "x".repeat(9000)).as_bytes());
            assert!(a.contains(&Action::Close), "{cmd}");
        }
        // An ID past what RFC 2971 allows is still cut off.
        let mut p = session(false);
        let a = run(
            &mut p,
            format!("a ID (\"k\" \"{}", "x".repeat(70_000)).as_bytes(),
        );
        assert!(written(&a).contains("* BYE Command line too long."));
    }

    fn oauth_session() -> PreAuth {
        PreAuth::new(Options {
            oauth: true,
            ..Options::default()
        })
    }

    const BEARER: &[u8] =
        b"n,a=alice,\x01host=imap.example.org\x01port=143\x01auth=Bearer tok3n\x01\x01";

    #[test]
    fn oauth_is_offered_only_when_configured() {
        assert!(!session(false).capabilities().contains("OAUTHBEARER"));
        let caps = oauth_session().capabilities();
        assert!(caps.contains("AUTH=OAUTHBEARER AUTH=XOAUTH2"), "{caps}");
        let mut p = session(false);
        let out = written(&run(
            &mut p,
            format!(
                "a AUTHENTICATE OAUTHBEARER {}\r\n",
                crate::sasl::encode(BEARER)
            )
            .as_bytes(),
        ));
        assert!(out.starts_with("a NO [CANNOT]"), "{out}");
    }

    #[test]
    fn oauthbearer_and_xoauth2_with_and_without_sasl_ir() {
        let mut p = oauth_session();
        let a = run(
            &mut p,
            format!(
                "a AUTHENTICATE OAUTHBEARER {}\r\n",
                crate::sasl::encode(BEARER)
            )
            .as_bytes(),
        );
        let l = login_of(&a).expect("login");
        assert_eq!((l.user.as_str(), l.mechanism), ("alice", "OAUTHBEARER"));
        assert_eq!(
            l.secret,
            Secret::Bearer {
                mechanism: Mechanism::OAuthBearer,
                message: BEARER.to_vec()
            }
        );
        assert_eq!(l.password(), None);
        assert!(!format!("{l:?}").contains("tok3n"));

        let x = b"user=bob@example.org\x01auth=Bearer ya29.x\x01\x01";
        let mut p = oauth_session();
        assert_eq!(
            written(&run(&mut p, b"b AUTHENTICATE XOAUTH2\r\n")),
            "+ \r\n"
        );
        let a = run(&mut p, format!("{}\r\n", crate::sasl::encode(x)).as_bytes());
        let l = login_of(&a).expect("login");
        assert_eq!(
            (l.user.as_str(), l.mechanism),
            ("bob@example.org", "XOAUTH2")
        );
    }

    #[test]
    fn a_store_challenge_reaches_the_client_and_its_answer_comes_back() {
        let mut p = oauth_session();
        let a = run(
            &mut p,
            format!(
                "a AUTHENTICATE OAUTHBEARER {}\r\nb NOOP\r\n",
                crate::sasl::encode(BEARER)
            )
            .as_bytes(),
        );
        assert!(login_of(&a).is_some());
        let json = br#"{"status":"invalid_token"}"#;
        assert_eq!(
            p.relay_challenge(json),
            format!("+ {}\r\n", crate::sasl::encode(json)).into_bytes()
        );
        // What the client pipelined after its login is no answer: a line is.
        assert_eq!(
            std::iter::from_fn(|| p.poll()).collect::<Vec<_>>(),
            vec![Action::Answer(None)],
            "b NOOP is not base64"
        );
        let mut p = oauth_session();
        run(
            &mut p,
            format!(
                "a AUTHENTICATE OAUTHBEARER {}\r\n",
                crate::sasl::encode(BEARER)
            )
            .as_bytes(),
        );
        p.relay_challenge(json);
        assert_eq!(
            run(&mut p, b"AQ==\r\n"),
            vec![Action::Answer(Some(vec![1]))]
        );
        // Then the store's verdict; the session goes on.
        let out = p.login_failed("a", "NO [AUTHENTICATIONFAILED] Authentication failed.");
        assert_eq!(
            out,
            b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        );
        let mut p2 = oauth_session();
        run(
            &mut p2,
            format!(
                "a AUTHENTICATE XOAUTH2 {}\r\n",
                crate::sasl::encode(b"user=a\x01auth=Bearer t\x01\x01")
            )
            .as_bytes(),
        );
        p2.relay_challenge(json);
        assert_eq!(run(&mut p2, b"*\r\n"), vec![Action::Answer(None)]);
        assert_eq!(
            login_of(&run(&mut p, b"c LOGIN alice pw\r\n"))
                .expect("login")
                .user,
            "alice"
        );
    }

    #[test]
    fn malformed_bearer_messages_get_clear_errors() {
        let cases: [(&[u8], &str); 5] = [
            // No authzid: nobody to route.
            (b"n,,\x01auth=Bearer x\x01\x01", "GS2 header"),
            (
                b"p=tls-unique,a=alice,\x01auth=Bearer x\x01\x01",
                "GS2 header",
            ),
            (b"n,a=alice,\x01host=h\x01\x01", "auth=Bearer"),
            (b"", "Malformed"),
            (b"n,a=\xff,\x01auth=Bearer x\x01\x01", "Malformed"),
        ];
        for (msg, expect) in cases {
            let mut p = oauth_session();
            let out = written(&run(
                &mut p,
                format!(
                    "a AUTHENTICATE OAUTHBEARER {}\r\n",
                    crate::sasl::encode(msg)
                )
                .as_bytes(),
            ));
            assert!(
                out.starts_with("a BAD ") && out.contains(expect),
                "{msg:?}: {out}"
            );
            assert!(!p.is_closed());
        }
        let mut p = oauth_session();
        let out = written(&run(
            &mut p,
            format!(
                "a AUTHENTICATE XOAUTH2 {}\r\n",
                crate::sasl::encode(b"auth=Bearer x\x01\x01")
            )
            .as_bytes(),
        ));
        assert!(out.contains("user="), "{out}");
        // Not base64, and a cancel at the continuation.
        let mut p = oauth_session();
        let out = written(&run(&mut p, b"a AUTHENTICATE OAUTHBEARER !!!\r\n"));
        assert!(out.starts_with("a BAD"), "{out}");
        let mut p = oauth_session();
        run(&mut p, b"a AUTHENTICATE XOAUTH2\r\n");
        assert_eq!(
            written(&run(&mut p, b"*\r\n")),
            "a BAD Authentication cancelled.\r\n"
        );
        // A token past the line limit ends the connection, as any long line.
        let mut p = oauth_session();
        let huge = format!("n,a=alice,\x01auth=Bearer {}\x01\x01", "x".repeat(20_000));
        let a = run(
            &mut p,
            format!(
                "a AUTHENTICATE OAUTHBEARER {}\r\n",
                crate::sasl::encode(huge.as_bytes())
            )
            .as_bytes(),
        );
        assert!(written(&a).contains("* BYE Command line too long."));
        assert!(a.contains(&Action::Close));
        // Refused before TLS like any login when TLS is required.
        let mut p = PreAuth::new(Options {
            oauth: true,
            starttls_available: true,
            require_tls: true,
            ..Options::default()
        });
        assert!(!p.capabilities().contains("OAUTHBEARER"));
        let out = written(&run(&mut p, b"a AUTHENTICATE XOAUTH2\r\n"));
        assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let l = Login {
            tag: "a".into(),
            user: "alice".into(),
            secret: Secret::Password(b"hunter2".to_vec()),
            mechanism: "LOGIN",
        };
        assert!(!format!("{l:?}").contains("hunter2"));
    }
}
