//! The submission session before authentication (RFC 6409, RFC 4954 AUTH,
//! RFC 3207 STARTTLS) as a sans-I/O state machine: client bytes in,
//! [`Action`]s out. No socket, clock or directory, so byte scripts test it
//! and the `submission_preauth` fuzz target drives it.
//!
//! ```text
//!  Ready ──EHLO/HELO──► Ready (greeted)
//!    │  ──STARTTLS──► (driver handshakes; plaintext pipelined after it discarded; EHLO again)
//!    │  ──AUTH PLAIN <ir>─────────────────────────► Authenticating ─ok─► (handoff: relay)
//!    │  ──AUTH PLAIN──► AuthPlain ─<base64>───────►     │ failed (535 / 454)
//!    │  ──AUTH LOGIN──► AuthLoginUser ─► AuthLoginPass ─►│
//!    │  ──QUIT / limits──► Closed                        │
//!    ◄───────────────────────────────────────────────────┘
//! ```
//!
//! AUTH is offered only once TLS is on, unless `require_tls` is off. Every
//! mechanism is one arm of [`PreAuth::auth`]; the bearer mechanisms
//! (XOAUTH2, OAUTHBEARER) go there with [`crate::sasl::bearer`].

use std::collections::VecDeque;

use crate::sasl::{self, Identity};

/// Limits and switches for one pre-auth session.
#[derive(Debug, Clone)]
pub struct Options {
    /// Our name in the greeting and the EHLO reply.
    pub hostname: String,
    /// The listener offers STARTTLS (a certificate is configured).
    pub starttls_available: bool,
    /// The connection is already TLS (port 465, or after STARTTLS).
    pub tls_active: bool,
    /// AUTH is refused (and not offered) until TLS is on.
    pub require_tls: bool,
    /// Longest command line, CRLF included (RFC 5321 4.5.3.1.4: 512 at
    /// least; a SASL answer with a long password needs more).
    pub max_line: usize,
    /// Commands allowed before authentication.
    pub max_commands: u32,
    /// Invalid commands tolerated before the connection is closed.
    pub max_bad: u32,
    /// Failed logins tolerated on one connection.
    pub max_auth_failures: u32,
    /// AUTH OAUTHBEARER and XOAUTH2 offered (`[submission] oauth`).
    pub oauth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hostname: "localhost".into(),
            starttls_available: false,
            tls_active: false,
            require_tls: true,
            max_line: 4096,
            max_commands: 32,
            max_bad: 10,
            max_auth_failures: 3,
            oauth: false,
        }
    }
}

/// A login the driver is to admit.
pub use crate::frontend::SaslLogin as Login;

/// What the driver must do next.
pub type Action = crate::frontend::Step<Login>;

#[derive(Debug)]
enum State {
    Ready,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass { user: String },
    AuthBearer { mechanism: sasl::Mechanism },
    Challenged,
    Authenticating,
    Closed,
}

/// The pre-auth session.
pub struct PreAuth {
    opts: Options,
    state: State,
    buf: Vec<u8>,
    helo: Option<String>,
    /// A line longer than `max_line` is being skipped to its end.
    skipping: bool,
    commands: u32,
    bad: u32,
    auth_failures: u32,
    queued: VecDeque<Action>,
}

impl PreAuth {
    /// A fresh session.
    pub fn new(opts: Options) -> PreAuth {
        PreAuth {
            opts,
            state: State::Ready,
            buf: Vec::new(),
            helo: None,
            skipping: false,
            commands: 0,
            bad: 0,
            auth_failures: 0,
            queued: VecDeque::new(),
        }
    }

    /// The greeting to send first.
    pub fn greeting(&self) -> Vec<u8> {
        format!("220 {} ESMTP mailshift\r\n", self.opts.hostname).into_bytes()
    }

    /// Our own name, as in the greeting.
    pub fn hostname(&self) -> &str {
        &self.opts.hostname
    }

    /// The client's EHLO/HELO name (for XCLIENT HELO=).
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// Whether TLS is on.
    pub fn tls_active(&self) -> bool {
        self.opts.tls_active
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet processed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn auth_offered(&self) -> bool {
        self.opts.tls_active || !self.opts.require_tls
    }

    /// The EHLO reply's keywords before authentication. The client's EHLO
    /// after AUTH goes to the store, which answers with its own.
    pub fn extensions(&self) -> Vec<&'static str> {
        let mut ext = vec!["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"];
        if self.opts.starttls_available && !self.opts.tls_active {
            ext.push("STARTTLS");
        }
        if self.auth_offered() {
            ext.push(if self.opts.oauth {
                "AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2"
            } else {
                "AUTH PLAIN LOGIN"
            });
        }
        ext
    }

    /// TLS is now on: anything the client sent in plaintext after STARTTLS
    /// is thrown away (it could be an injected command, CVE-2011-0411
    /// class), and the client must greet again (RFC 3207 4.2).
    pub fn tls_started(&mut self) {
        if !self.buf.is_empty() {
            tracing::debug!(
                bytes = self.buf.len(),
                "discarded plaintext sent after STARTTLS"
            );
        }
        self.buf.clear();
        self.skipping = false;
        self.helo = None;
        self.opts.tls_active = true;
    }

    /// The login failed: answer `reply` (a whole line without CRLF:
    /// `535 5.7.8 ...`, `454 4.7.0 ...`) and wait for commands again, or close
    /// after too many failures.
    pub fn auth_failed(&mut self, reply: &str) -> Vec<u8> {
        self.auth_failures += 1;
        let mut out = format!("{reply}\r\n").into_bytes();
        if self.auth_failures >= self.opts.max_auth_failures {
            out.extend_from_slice(
                format!(
                    "421 4.7.0 {} Too many failed logins, closing\r\n",
                    self.opts.hostname
                )
                .as_bytes(),
            );
            self.state = State::Closed;
            self.queued.push_back(Action::Close);
        } else {
            self.state = State::Ready;
        }
        out
    }

    /// The store challenged a bearer token (for OAUTHBEARER, its JSON error):
    /// the `334` line for the client; its answer comes as [`Action::Answer`].
    pub fn relay_challenge(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.state = State::Challenged;
        format!("334 {}\r\n", sasl::encode(challenge)).into_bytes()
    }

    /// The login succeeded: the bytes the client pipelined after AUTH, for
    /// the store.
    pub fn into_pipelined(self) -> Vec<u8> {
        self.buf
    }

    /// The next thing to do; `None` when more client bytes are needed.
    pub fn poll(&mut self) -> Option<Action> {
        if let Some(action) = self.queued.pop_front() {
            return Some(action);
        }
        if matches!(self.state, State::Authenticating | State::Closed) {
            return None;
        }
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > self.opts.max_line {
                    // The rest of this line is dropped as it comes.
                    self.buf.clear();
                    self.skipping = true;
                    return self.too_long();
                }
                return None;
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if line.len() > self.opts.max_line {
                return self.too_long();
            }
            let line = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(&line);
            return self.line(line);
        }
    }

    fn too_long(&mut self) -> Option<Action> {
        // A SASL answer cut short cannot be continued.
        if !matches!(self.state, State::Ready) {
            self.state = State::Ready;
        }
        self.bad("500 5.5.6 Line too long")
    }

    fn close_with(&mut self, text: &str) -> Action {
        self.state = State::Closed;
        self.queued.push_back(Action::Close);
        Action::Write(format!("{text}\r\n").into_bytes())
    }

    fn write(text: &str) -> Option<Action> {
        Some(Action::Write(format!("{text}\r\n").into_bytes()))
    }

    fn bad(&mut self, text: &str) -> Option<Action> {
        self.bad += 1;
        if self.bad >= self.opts.max_bad {
            let text = format!(
                "{text}\r\n421 4.7.0 {} Too many errors, closing",
                self.opts.hostname
            );
            return Some(self.close_with(&text));
        }
        Self::write(text)
    }

    fn line(&mut self, line: &[u8]) -> Option<Action> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::AuthPlain => return self.sasl_answer(line, sasl::plain, "PLAIN"),
            State::AuthLoginUser => return self.login_user(line),
            State::AuthLoginPass { user } => return self.login_pass(user, line),
            State::AuthBearer { mechanism } => {
                return self.sasl_answer(line, |d| sasl::bearer(mechanism, d), mechanism.name())
            }
            State::Challenged => {
                self.state = State::Authenticating;
                return Some(Action::Answer(sasl::decode_line(line).ok()));
            }
            State::Ready => {}
            other @ (State::Authenticating | State::Closed) => {
                self.state = other;
                return None;
            }
        }
        self.commands += 1;
        if self.commands > self.opts.max_commands {
            let text = format!(
                "421 4.7.0 {} Too many commands before authentication",
                self.opts.hostname
            );
            return Some(self.close_with(&text));
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return self.bad("500 5.5.2 Syntax error, command not UTF-8");
        };
        let (verb, args) = match text.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (text.trim(), ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if !valid_helo(args) => self.bad("501 5.5.4 Syntax: EHLO hostname"),
            "EHLO" => {
                self.helo = Some(args.to_string());
                let mut lines = vec![self.opts.hostname.clone()];
                lines.extend(self.extensions().into_iter().map(String::from));
                let n = lines.len();
                let mut out = String::new();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == n { ' ' } else { '-' };
                    out.push_str(&format!("250{sep}{l}\r\n"));
                }
                Some(Action::Write(out.into_bytes()))
            }
            "HELO" => {
                self.helo = Some(args.to_string());
                Self::write(&format!("250 {}", self.opts.hostname))
            }
            "STARTTLS" => {
                if self.opts.tls_active {
                    return self.bad("503 5.5.1 TLS already active");
                }
                if !self.opts.starttls_available {
                    return self.bad("502 5.5.1 STARTTLS not offered");
                }
                if !args.is_empty() {
                    return self.bad("501 5.5.4 Syntax: STARTTLS");
                }
                self.queued.push_back(Action::StartTls);
                Self::write("220 2.0.0 Ready to start TLS")
            }
            "AUTH" => self.auth(args),
            "NOOP" => Self::write("250 2.0.0 Ok"),
            "RSET" => Self::write("250 2.0.0 Ok"),
            "QUIT" => Some(self.close_with("221 2.0.0 Bye")),
            "HELP" => Self::write("214 2.0.0 See RFC 6409; authenticate first"),
            "MAIL" | "RCPT" | "DATA" | "BDAT" | "VRFY" | "EXPN" | "ETRN" | "BURL" => {
                if self.auth_offered() {
                    self.bad("530 5.7.0 Authentication required")
                } else {
                    self.bad("530 5.7.0 Must issue a STARTTLS command first")
                }
            }
            _ => self.bad("500 5.5.2 Command not recognized"),
        }
    }

    /// `AUTH mechanism [initial-response]`; one arm per mechanism.
    fn auth(&mut self, args: &str) -> Option<Action> {
        if !self.auth_offered() {
            return self.bad("530 5.7.0 Must issue a STARTTLS command first");
        }
        if self.helo.is_none() {
            return self.bad("503 5.5.1 EHLO first");
        }
        let mut words = args.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next();
        if words.next().is_some() {
            return self.bad("501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(ir)) => self.sasl_answer(ir.as_bytes(), sasl::plain, "PLAIN"),
            ("PLAIN", None) => {
                self.state = State::AuthPlain;
                Self::write("334 ")
            }
            ("LOGIN", Some(ir)) => self.login_user(ir.as_bytes()),
            ("LOGIN", None) => {
                self.state = State::AuthLoginUser;
                // base64("Username:")
                Self::write("334 VXNlcm5hbWU6")
            }
            ("OAUTHBEARER" | "XOAUTH2", initial) if self.opts.oauth => {
                let mechanism = if mechanism == "XOAUTH2" {
                    sasl::Mechanism::XOAuth2
                } else {
                    sasl::Mechanism::OAuthBearer
                };
                match initial {
                    Some(ir) => self.sasl_answer(
                        ir.as_bytes(),
                        |d| sasl::bearer(mechanism, d),
                        mechanism.name(),
                    ),
                    None => {
                        self.state = State::AuthBearer { mechanism };
                        Self::write("334 ")
                    }
                }
            }
            ("", _) => self.bad("501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
            _ => self.bad("504 5.5.4 Unrecognized authentication type"),
        }
    }

    /// A SASL answer line: `*` cancels, bad base64 or shape is refused, a
    /// whole identity goes to the driver.
    fn sasl_answer(
        &mut self,
        line: &[u8],
        decode: impl Fn(&[u8]) -> Result<Identity, sasl::Error>,
        mechanism: &'static str,
    ) -> Option<Action> {
        match sasl::decode_line(line).and_then(|data| decode(&data)) {
            Ok(identity) => self.login(identity, mechanism),
            Err(e) => self.sasl_refused(&e),
        }
    }

    fn sasl_refused(&mut self, e: &sasl::Error) -> Option<Action> {
        self.state = State::Ready;
        match e {
            sasl::Error::Cancelled => Self::write("501 5.7.0 Authentication cancelled"),
            sasl::Error::Base64 => self.bad("501 5.5.2 Invalid base64"),
            sasl::Error::OtherAuthzid => self.bad("535 5.7.8 Authorization identity not allowed"),
            _ => self.bad("501 5.5.2 Malformed authentication message"),
        }
    }

    fn login_user(&mut self, line: &[u8]) -> Option<Action> {
        let user = match sasl::decode_line(line) {
            Ok(u) => u,
            Err(e) => return self.sasl_refused(&e),
        };
        match String::from_utf8(user) {
            Ok(user) if !user.is_empty() => {
                self.state = State::AuthLoginPass { user };
                // base64("Password:")
                Self::write("334 UGFzc3dvcmQ6")
            }
            _ => self.sasl_refused(&sasl::Error::Malformed("LOGIN")),
        }
    }

    fn login_pass(&mut self, user: String, line: &[u8]) -> Option<Action> {
        match sasl::decode_line(line) {
            Ok(password) => self.login(
                Identity {
                    user,
                    secret: sasl::Secret::Password(password),
                },
                "LOGIN",
            ),
            Err(e) => self.sasl_refused(&e),
        }
    }

    fn login(&mut self, identity: Identity, mechanism: &'static str) -> Option<Action> {
        self.state = State::Authenticating;
        Some(Action::Login(Login {
            identity,
            mechanism,
        }))
    }
}

/// An EHLO/HELO argument: one word of printable ASCII.
fn valid_helo(arg: &str) -> bool {
    !arg.is_empty() && arg.len() <= 255 && arg.bytes().all(|b| b.is_ascii_graphic())
}

/// Runs a whole client script through a session (TLS "handshakes" at once,
/// every login fails), and returns everything it wrote: for tests, the
/// `submission_preauth` fuzz target and its corpus replay.
///
/// # Panics
/// When the core breaks its invariant: a login asked for while AUTH is not
/// offered (before TLS where TLS is required).
pub fn run_script(script: &[u8], opts: Options) -> Vec<u8> {
    let mut core = PreAuth::new(opts);
    let mut out = core.greeting();
    for chunk in script.chunks(97) {
        core.feed(chunk);
        while let Some(action) = core.poll() {
            match action {
                Action::Write(b) => out.extend_from_slice(&b),
                Action::StartTls => core.tls_started(),
                Action::Login(_) => {
                    assert!(core.auth_offered(), "login asked for before TLS");
                    let b = core.auth_failed("535 5.7.8 Authentication failed");
                    out.extend_from_slice(&b);
                }
                Action::Close => return out,
                // run_script never relays a challenge.
                Action::Answer(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
