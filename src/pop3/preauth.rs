//! The POP3 AUTHORIZATION state, sans I/O: bytes from the client in, actions
//! out. No socket, clock or directory here, so byte scripts test it and the
//! fuzzer drives it.
//!
//! ```text
//!  greeting ─► Command ──USER──► Pass ──PASS──► LoggingIn ──ok──► (relay)
//!                │  ▲                              │ failed
//!                │  └──────────────────────────────┘
//!                ├──AUTH PLAIN / OAUTHBEARER / XOAUTH2──► Sasl ──answer──► LoggingIn
//!                │   (initial response goes straight to LoggingIn)
//!                │   store's challenge (bearer) ─► Challenged ─answer─► LoggingIn
//!                ├──STLS──► AwaitTls (plaintext after it discarded) ──► Command
//!                └──QUIT / too many commands / line too long──► Closed
//! ```
//!
//! Mechanisms are one enum, [`Mechanism`]: adding one (OAUTHBEARER, XOAUTH2)
//! is a variant, its name and one match arm in [`Mechanism::decode`].
//!
//! A bearer login is not judged here: the driver routes by the user in the
//! message and the store judges the token. When the store answers with a
//! failure challenge, [`PreAuth::relay_challenge`] sends it to the client and
//! the client's answer comes back as [`Action::Answer`].

use std::collections::VecDeque;

use crate::sasl::{self, Identity};

/// Settings of one connection's pre-auth phase.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The listener can start TLS (a certificate is configured).
    pub tls_available: bool,
    /// TLS is already on (implicit-TLS listener).
    pub tls_active: bool,
    /// USER, PASS and AUTH are refused until TLS is on.
    pub require_tls: bool,
    /// Longest command line, CRLF included.
    pub max_line: usize,
    /// Commands allowed before the connection is closed.
    pub max_commands: u32,
    /// The greeting's text.
    pub greeting: String,
    /// AUTH OAUTHBEARER and XOAUTH2 are offered (`[pop3] oauth`).
    pub oauth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls_available: false,
            tls_active: false,
            require_tls: false,
            max_line: 4096,
            max_commands: 32,
            greeting: "POP3 server ready.".into(),
            oauth: false,
        }
    }
}

/// What the driver does next.
pub type Action = crate::frontend::Step<Login>;

/// A login the driver is to admit.
pub use crate::frontend::SaslLogin as Login;

/// The SASL mechanisms the front end takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// A bearer token (RFC 7628 OAUTHBEARER, XOAUTH2), for the store to judge.
    Bearer(sasl::Mechanism),
}

impl Mechanism {
    fn parse(name: &[u8]) -> Option<Mechanism> {
        Mechanism::ALL
            .iter()
            .copied()
            .find(|m| name.eq_ignore_ascii_case(m.name().as_bytes()))
    }

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Bearer(m) => m.name(),
        }
    }

    /// Every mechanism, in the order CAPA lists them.
    const ALL: &'static [Mechanism] = &[
        Mechanism::Plain,
        Mechanism::Bearer(sasl::Mechanism::OAuthBearer),
        Mechanism::Bearer(sasl::Mechanism::XOAuth2),
    ];

    /// Whether the listener takes it.
    fn enabled(self, opts: &Options) -> bool {
        match self {
            Mechanism::Plain => true,
            Mechanism::Bearer(_) => opts.oauth,
        }
    }

    fn decode(self, data: &[u8]) -> Result<Identity, sasl::Error> {
        match self {
            Mechanism::Plain => sasl::plain(data),
            Mechanism::Bearer(m) => sasl::bearer(m, data),
        }
    }
}

#[derive(Debug)]
enum State {
    Command,
    Pass { user: String },
    Sasl { mechanism: Mechanism },
    AwaitTls,
    Challenged,
    LoggingIn,
    Closed,
}

/// The pre-auth core of one connection.
pub struct PreAuth {
    opts: Options,
    state: State,
    buf: Vec<u8>,
    out: VecDeque<Action>,
    commands: u32,
}

const AUTH_REQUIRES_TLS: &[u8] =
    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";

impl PreAuth {
    /// A new connection.
    pub fn new(opts: Options) -> PreAuth {
        PreAuth {
            opts,
            state: State::Command,
            buf: Vec::new(),
            out: VecDeque::new(),
            commands: 0,
        }
    }

    /// The greeting line. RFC 2449's `[XCLIENT]`-style codes are the store's
    /// business; ours is plain.
    pub fn greeting(&self) -> Vec<u8> {
        format!("+OK {}\r\n", self.opts.greeting.replace(['\r', '\n'], " ")).into_bytes()
    }

    /// Bytes from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the connection is to be closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// TLS is on after STLS.
    pub fn tls_started(&mut self) {
        self.opts.tls_active = true;
        if matches!(self.state, State::AwaitTls) {
            self.state = State::Command;
        }
    }

    /// The login was refused; returns the line for the client (`-ERR [AUTH]
    /// …` or `-ERR [SYS/TEMP] …`, the driver words it) and starts over.
    pub fn login_failed(&mut self, text: &str) -> Vec<u8> {
        if matches!(self.state, State::LoggingIn) {
            self.state = State::Command;
        }
        format!("-ERR {}\r\n", text.replace(['\r', '\n'], " ")).into_bytes()
    }

    /// The store challenged a bearer token (for OAUTHBEARER, its JSON error):
    /// the line for the client. The client's answer comes as
    /// [`Action::Answer`]; the login then stays under way.
    pub fn relay_challenge(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.state = State::Challenged;
        format!("+ {}\r\n", sasl::encode(challenge)).into_bytes()
    }

    /// What the client sent after the command that logged it in (pipelined):
    /// it goes to the store.
    pub fn into_pipelined(self) -> Vec<u8> {
        self.buf
    }

    /// The next action, or `None` when more input (or a login's outcome) is
    /// needed.
    pub fn poll(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.out.pop_front() {
                return Some(a);
            }
            if matches!(
                self.state,
                State::AwaitTls | State::LoggingIn | State::Closed
            ) {
                return None;
            }
            let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() >= self.opts.max_line {
                    self.close_with(b"-ERR Line too long.\r\n");
                    continue;
                }
                return None;
            };
            if end + 1 > self.opts.max_line {
                self.close_with(b"-ERR Line too long.\r\n");
                continue;
            }
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&line);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.out.push_back(Action::Write(bytes.to_vec()));
    }

    fn close_with(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.out.push_back(Action::Close);
        self.state = State::Closed;
        self.buf = Vec::new();
    }

    fn line(&mut self, line: &[u8]) {
        if let State::Challenged = self.state {
            self.state = State::LoggingIn;
            self.out
                .push_back(Action::Answer(sasl::decode_line(line).ok()));
            return;
        }
        if let State::Sasl { mechanism } = self.state {
            self.state = State::Command;
            match sasl::decode_line(line).and_then(|d| mechanism.decode(&d)) {
                Ok(identity) => self.login(identity, mechanism.name()),
                Err(e) => self.sasl_failed(&e),
            }
            return;
        }
        self.commands += 1;
        if self.commands > self.opts.max_commands {
            self.close_with(b"-ERR Too many commands before login.\r\n");
            return;
        }
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        match verb.to_ascii_uppercase().as_slice() {
            b"CAPA" => self.capa(),
            b"QUIT" => self.close_with(b"+OK Logging out.\r\n"),
            b"STLS" => self.stls(),
            b"USER" => self.user(arg),
            b"PASS" => self.pass(arg),
            b"AUTH" => self.auth(arg),
            b"NOOP" | b"STAT" | b"LIST" | b"RETR" | b"DELE" | b"RSET" | b"TOP" | b"UIDL" => {
                self.write(b"-ERR Not logged in.\r\n")
            }
            _ => self.write(b"-ERR Unknown command.\r\n"),
        }
    }

    fn auth_allowed(&self) -> bool {
        self.opts.tls_active || !self.opts.require_tls
    }

    fn capa(&mut self) {
        let mut out = String::from("+OK Capability list follows.\r\n");
        // The stores behind all do TOP and UIDL (RFC 1939's optional
        // commands); clients decide early whether to use them.
        out.push_str("TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n");
        // RFC 2449 6.5: the delay is the store's and may differ per user
        // (`USER`): the store's CAPA after login says it. mailshift itself
        // imposes none between successful logins.
        out.push_str("LOGIN-DELAY 0 USER\r\n");
        if self.auth_allowed() {
            out.push_str("USER\r\nSASL");
            for m in Mechanism::ALL.iter().filter(|m| m.enabled(&self.opts)) {
                out.push(' ');
                out.push_str(m.name());
            }
            out.push_str("\r\n");
        }
        if self.opts.tls_available && !self.opts.tls_active {
            out.push_str("STLS\r\n");
        }
        out.push_str(".\r\n");
        self.write(out.as_bytes());
    }

    fn stls(&mut self) {
        if self.opts.tls_active {
            self.write(b"-ERR TLS is already active.\r\n");
        } else if !self.opts.tls_available {
            self.write(b"-ERR STLS is not available.\r\n");
        } else {
            self.write(b"+OK Begin TLS negotiation now.\r\n");
            self.out.push_back(Action::StartTls);
            self.state = State::AwaitTls;
            // STLS discards: whatever the client sent after it in the clear
            // must never be read as if it came over TLS (CVE-2011-0411).
            self.buf = Vec::new();
        }
    }

    fn user(&mut self, arg: &[u8]) {
        if !self.auth_allowed() {
            self.write(AUTH_REQUIRES_TLS);
            return;
        }
        let user = arg.trim_ascii();
        match std::str::from_utf8(user) {
            Ok(u) if !u.is_empty() => {
                self.state = State::Pass {
                    user: u.to_string(),
                };
                self.write(b"+OK\r\n");
            }
            Ok(_) => self.write(b"-ERR USER needs a name.\r\n"),
            Err(_) => self.write(b"-ERR [AUTH] The login is not UTF-8.\r\n"),
        }
    }

    fn pass(&mut self, arg: &[u8]) {
        if !self.auth_allowed() {
            self.write(AUTH_REQUIRES_TLS);
            return;
        }
        let State::Pass { user } = std::mem::replace(&mut self.state, State::Command) else {
            self.write(b"-ERR No username given.\r\n");
            return;
        };
        // The password is the rest of the line, spaces included (RFC 1939
        // lets servers take it so).
        self.login(
            Identity {
                user,
                secret: sasl::Secret::Password(arg.to_vec()),
            },
            "USER",
        );
    }

    fn auth(&mut self, arg: &[u8]) {
        let mut words = arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(name) = words.next() else {
            // RFC 1734 clients list mechanisms with a bare AUTH.
            let mut out = String::from("+OK\r\n");
            for m in Mechanism::ALL.iter().filter(|m| m.enabled(&self.opts)) {
                out.push_str(m.name());
                out.push_str("\r\n");
            }
            out.push_str(".\r\n");
            self.write(out.as_bytes());
            return;
        };
        if !self.auth_allowed() {
            self.write(AUTH_REQUIRES_TLS);
            return;
        }
        let Some(mechanism) = Mechanism::parse(name).filter(|m| m.enabled(&self.opts)) else {
            self.write(b"-ERR Unsupported authentication mechanism.\r\n");
            return;
        };
        self.state = State::Command;
        match words.next() {
            Some(initial) => match sasl::decode_line(initial).and_then(|d| mechanism.decode(&d)) {
                Ok(identity) => self.login(identity, mechanism.name()),
                Err(e) => self.sasl_failed(&e),
            },
            None => {
                self.state = State::Sasl { mechanism };
                self.write(b"+ \r\n");
            }
        }
    }

    fn sasl_failed(&mut self, e: &sasl::Error) {
        let line = match e {
            sasl::Error::Cancelled => "-ERR Authentication cancelled.\r\n".to_string(),
            other => format!("-ERR [AUTH] Authentication failed: {other}.\r\n"),
        };
        self.write(line.as_bytes());
    }

    fn login(&mut self, identity: Identity, mechanism: &'static str) {
        if identity.user.is_empty() || identity.user.len() > 256 {
            self.write(b"-ERR [AUTH] Authentication failed.\r\n");
            return;
        }
        self.state = State::LoggingIn;
        self.out.push_back(Action::Login(Login {
            identity,
            mechanism,
        }));
    }
}

/// Runs a whole session over a client byte script, answering every login as
/// failed and every STLS as done, and returns what the client would read.
/// The fuzz target and its corpus replay test drive the core through this.
pub fn run_script(script: &[u8], opts: Options) -> Vec<u8> {
    let mut p = PreAuth::new(opts);
    let mut out = p.greeting();
    // Uneven chunks: framing must not depend on how bytes arrive.
    for chunk in script.chunks(7) {
        p.feed(chunk);
        while let Some(action) = p.poll() {
            match action {
                Action::Write(b) => out.extend_from_slice(&b),
                Action::StartTls => p.tls_started(),
                // A bearer token is challenged, as a store that refuses
                // one does, so the challenge path is driven too.
                Action::Login(Login {
                    identity:
                        Identity {
                            secret: sasl::Secret::Bearer { .. },
                            ..
                        },
                    ..
                }) => {
                    out.extend_from_slice(&p.relay_challenge(
                        br#"{"status":"invalid_token","schemes":"bearer","scope":"mail"}"#,
                    ));
                }
                Action::Login(_) => {
                    let failed = p.login_failed("[AUTH] Authentication failed.");
                    out.extend_from_slice(&failed);
                }
                Action::Close => return out,
                Action::Answer(_) => {
                    let failed = p.login_failed("[AUTH] Authentication failed.");
                    out.extend_from_slice(&failed);
                }
            }
        }
        if p.is_closed() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
