//! The ManageSieve front end before authentication (RFC 5804), sans I/O:
//! bytes in ([`PreAuth::feed`]), actions out ([`PreAuth::poll`]). The
//! driver in [`super::session`] does the sockets, TLS and the login.
//!
//! ```text
//!  greeting (capability listing + OK)
//!      │
//!      ▼
//!  Command ──CAPABILITY/NOOP──► Command
//!     │ ├──STARTTLS──► OK, Action::StartTls (plaintext after it dropped)
//!     │ │               └─ tls_started ─► capability listing again ─► Command
//!     │ ├──AUTHENTICATE "PLAIN" "ir"──────────────► Action::Login ─► WaitLogin
//!     │ ├──AUTHENTICATE "PLAIN" ─► "" ─► Continue ─► Action::Login ─► WaitLogin
//!     │ ├──AUTHENTICATE "OAUTHBEARER"|"XOAUTH2" "ir" (oauth on) ─► Action::Login
//!     │ └──LOGOUT──► OK, Action::Close
//!  WaitLogin ── login_failed ─► Command;  success: the driver relays
//!     └── relay_challenge (the store's, quoted) ─► Challenged
//!            ─ client's string ─► Action::Answer ─► WaitLogin
//! ```
//!
//! Limits: a line longer than `max_line` gets `NO` and is skipped; a literal
//! over `max_literal` or more than `max_commands` commands get `BYE`.

use std::collections::VecDeque;

use crate::sasl;
use crate::store::sieve::wire::{self, Framer, Token};

/// What the core is configured with.
#[derive(Debug, Clone)]
pub struct Options {
    /// STARTTLS can be offered (`[tls]` is set).
    pub starttls_available: bool,
    /// The connection is already TLS (implicit-TLS listener).
    pub tls_active: bool,
    /// AUTHENTICATE only over TLS.
    pub require_tls: bool,
    /// Longest line.
    pub max_line: usize,
    /// Longest literal.
    pub max_literal: usize,
    /// Commands allowed before authentication.
    pub max_commands: u32,
    /// `"IMPLEMENTATION"`.
    pub implementation: String,
    /// `"SIEVE"`.
    pub sieve_extensions: String,
    /// Offer OAUTHBEARER and XOAUTH2 (tokens passed to the store).
    pub oauth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            starttls_available: false,
            tls_active: false,
            require_tls: false,
            max_line: 8 * 1024,
            max_literal: 8 * 1024,
            max_commands: 32,
            implementation: "mailshift".into(),
            sieve_extensions: "fileinto".into(),
            oauth: false,
        }
    }
}

/// A login the driver is to admit.
pub use crate::frontend::SaslLogin as Login;

/// What the driver does next.
pub type Action = crate::frontend::Step<Login>;

/// The SASL mechanisms the front end takes: a variant, its name and one arm
/// in [`decode`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Plain,
    /// A bearer token (RFC 7628 OAUTHBEARER, XOAUTH2), for the store to judge.
    Bearer(sasl::Mechanism),
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Bearer(m) => m.name(),
        }
    }
}

/// `"SASL"` capability values, without and with `oauth`.
const MECHANISMS: &str = "PLAIN";
const MECHANISMS_OAUTH: &str = "PLAIN OAUTHBEARER XOAUTH2";

fn mechanism(name: &[u8], oauth: bool) -> Option<Mechanism> {
    match name.to_ascii_uppercase().as_slice() {
        b"PLAIN" => Some(Mechanism::Plain),
        b"OAUTHBEARER" if oauth => Some(Mechanism::Bearer(sasl::Mechanism::OAuthBearer)),
        b"XOAUTH2" if oauth => Some(Mechanism::Bearer(sasl::Mechanism::XOAuth2)),
        _ => None,
    }
}

/// Turns the client's (decoded) SASL answer into who logs in.
fn decode(mechanism: Mechanism, data: &[u8]) -> Result<Login, sasl::Error> {
    let identity = match mechanism {
        Mechanism::Plain => sasl::plain(data)?,
        Mechanism::Bearer(m) => sasl::bearer(m, data)?,
    };
    Ok(Login {
        identity,
        mechanism: mechanism.name(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Command,
    /// AUTHENTICATE without an initial response: waiting for the client's
    /// string after our empty challenge.
    Continue(Mechanism),
    /// STARTTLS answered; the driver does the handshake.
    WaitTls,
    /// A login is with the driver.
    WaitLogin,
    /// The store's challenge to a token went to the client: its answer (a
    /// string) is next.
    Challenged,
    Closed,
}

/// The pre-auth ManageSieve session.
#[derive(Debug)]
pub struct PreAuth {
    opts: Options,
    state: State,
    framer: Framer,
    actions: VecDeque<Action>,
    commands: u32,
}

fn line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        wire::string(out, p);
    }
    out.extend_from_slice(b"\r\n");
}

impl PreAuth {
    /// A session with these options.
    pub fn new(opts: Options) -> PreAuth {
        let framer = Framer::new(opts.max_line, opts.max_literal);
        PreAuth {
            opts,
            state: State::Command,
            framer,
            actions: VecDeque::new(),
            commands: 0,
        }
    }

    /// The capability listing (RFC 5804 §1.7), without the closing OK.
    fn listing(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        line(
            &mut out,
            &[b"IMPLEMENTATION", self.opts.implementation.as_bytes()],
        );
        // Before TLS, where TLS is required, no mechanism is usable.
        let sasl = if self.opts.require_tls && !self.opts.tls_active {
            ""
        } else if self.opts.oauth {
            MECHANISMS_OAUTH
        } else {
            MECHANISMS
        };
        line(&mut out, &[b"SASL", sasl.as_bytes()]);
        line(&mut out, &[b"SIEVE", self.opts.sieve_extensions.as_bytes()]);
        if self.opts.starttls_available && !self.opts.tls_active {
            line(&mut out, &[b"STARTTLS"]);
        }
        line(&mut out, &[b"VERSION", b"1.0"]);
        out
    }

    /// The greeting: the capability listing and OK.
    pub fn greeting(&self) -> Vec<u8> {
        let mut out = self.listing();
        out.extend_from_slice(b"OK \"mailshift ManageSieve ready.\"\r\n");
        out
    }

    /// Bytes from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.framer.feed(bytes);
    }

    /// The next action, `None` when more bytes are needed (or the driver is
    /// busy with a login or a handshake).
    pub fn poll(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.actions.pop_front() {
                return Some(a);
            }
            if !matches!(
                self.state,
                State::Command | State::Continue(_) | State::Challenged
            ) {
                return None;
            }
            match self.framer.next_line() {
                Ok(Some(tokens)) => self.line(&tokens),
                Ok(None) => return None,
                Err(wire::Error::LineTooLong { .. }) => {
                    self.no(b"Line too long.");
                    self.state = State::Command;
                }
                Err(wire::Error::LiteralTooLong { .. }) => self.bye(b"Literal too large."),
                Err(e) => {
                    self.no(format!("Syntax error: {e}.").as_bytes());
                    self.state = State::Command;
                }
            }
        }
    }

    /// TLS is up: the listing again (RFC 5804 §2.2), then commands.
    pub fn tls_started(&mut self) {
        self.opts.tls_active = true;
        self.framer.clear();
        self.state = State::Command;
        let mut out = self.listing();
        out.extend_from_slice(b"OK \"TLS negotiation successful.\"\r\n");
        self.actions.push_back(Action::Write(out));
    }

    /// The login was refused: `response` (e.g. `NO "Authentication
    /// failed."`) is what to send; commands continue.
    pub fn login_failed(&mut self, response: &str) -> Vec<u8> {
        if self.state == State::WaitLogin {
            self.state = State::Command;
        }
        format!("{response}\r\n").into_bytes()
    }

    /// The store challenged a bearer token (for OAUTHBEARER, its JSON
    /// error): the challenge as a string for the client (RFC 5804 §2.1); its
    /// answer comes as [`Action::Answer`].
    pub fn relay_challenge(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.state = State::Challenged;
        let mut out = Vec::new();
        wire::string(&mut out, sasl::encode(challenge).as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes the client sent after its AUTHENTICATE (they go to the store).
    pub fn into_pipelined(mut self) -> Vec<u8> {
        self.framer.take_buffered()
    }

    fn write(&mut self, bytes: Vec<u8>) {
        self.actions.push_back(Action::Write(bytes));
    }

    fn respond(&mut self, status: &str, code: Option<&str>, text: &[u8]) {
        let mut out = status.as_bytes().to_vec();
        if let Some(code) = code {
            out.extend_from_slice(format!(" ({code})").as_bytes());
        }
        out.push(b' ');
        wire::string(&mut out, text);
        out.extend_from_slice(b"\r\n");
        self.write(out);
    }

    fn no(&mut self, text: &[u8]) {
        self.respond("NO", None, text);
    }

    fn bye(&mut self, text: &[u8]) {
        self.respond("BYE", None, text);
        self.actions.push_back(Action::Close);
        self.state = State::Closed;
        self.framer.clear();
    }

    fn line(&mut self, tokens: &[Token]) {
        if self.state == State::Challenged {
            // The store gives its verdict whatever the answer; one that is
            // not a base64 string is a cancel.
            self.state = State::WaitLogin;
            let answer = match tokens {
                [Token::Str(s)] => sasl::decode_line(s).ok(),
                _ => None,
            };
            self.actions.push_back(Action::Answer(answer));
            return;
        }
        if let State::Continue(mech) = self.state {
            self.state = State::Command;
            let answer = match tokens {
                [Token::Str(s)] => s.clone(),
                _ => {
                    self.no(b"Expected a SASL response string.");
                    return;
                }
            };
            self.sasl_answer(mech, &answer);
            return;
        }
        if tokens.is_empty() {
            return;
        }
        self.commands += 1;
        if self.commands > self.opts.max_commands {
            self.bye(b"Too many commands before authentication.");
            return;
        }
        let Some(command) = tokens[0].atom() else {
            self.no(b"Expected a command.");
            return;
        };
        let args = &tokens[1..];
        match command.as_str() {
            "CAPABILITY" => {
                let mut out = self.listing();
                out.extend_from_slice(b"OK \"Capability completed.\"\r\n");
                self.write(out);
            }
            "NOOP" => match args.first().and_then(Token::string) {
                Some(tag) => {
                    let mut out = b"OK (TAG ".to_vec();
                    wire::string(&mut out, tag);
                    out.extend_from_slice(b") \"Done.\"\r\n");
                    self.write(out);
                }
                None => self.respond("OK", None, b"Done."),
            },
            "LOGOUT" => {
                self.respond("OK", None, b"Logout completed.");
                self.actions.push_back(Action::Close);
                self.state = State::Closed;
            }
            "STARTTLS" if self.opts.tls_active => self.no(b"TLS is already active."),
            "STARTTLS" if !self.opts.starttls_available => self.no(b"TLS is not available."),
            "STARTTLS" => {
                self.respond("OK", None, b"Begin TLS negotiation now.");
                // Whatever the client sent after STARTTLS in plaintext is
                // never read (no command injection, CVE-2011-0411).
                self.framer.clear();
                self.actions.push_back(Action::StartTls);
                self.state = State::WaitTls;
            }
            "AUTHENTICATE" => self.authenticate(args),
            "HAVESPACE" | "PUTSCRIPT" | "LISTSCRIPTS" | "SETACTIVE" | "GETSCRIPT"
            | "DELETESCRIPT" | "RENAMESCRIPT" | "CHECKSCRIPT" | "UNAUTHENTICATE" => {
                self.no(b"Authenticate first.")
            }
            _ => self.no(b"Unknown command."),
        }
    }

    fn authenticate(&mut self, args: &[Token]) {
        if self.opts.require_tls && !self.opts.tls_active {
            self.respond(
                "NO",
                Some("ENCRYPT-NEEDED"),
                b"Authentication requires TLS: use STARTTLS first.",
            );
            return;
        }
        let Some(name) = args.first().and_then(Token::string) else {
            self.no(b"AUTHENTICATE needs a mechanism name string.");
            return;
        };
        let Some(mech) = mechanism(name, self.opts.oauth) else {
            self.no(b"Unsupported SASL mechanism.");
            return;
        };
        match args.get(1) {
            None => {
                // An empty challenge: the client answers with a string.
                self.write(b"\"\"\r\n".to_vec());
                self.state = State::Continue(mech);
            }
            Some(Token::Str(ir)) => {
                let ir = ir.clone();
                self.sasl_answer(mech, &ir);
            }
            Some(_) => self.no(b"The initial response must be a string."),
        }
    }

    fn sasl_answer(&mut self, mech: Mechanism, base64: &[u8]) {
        let decoded = match sasl::decode_line(base64) {
            Ok(d) => d,
            Err(sasl::Error::Cancelled) => {
                self.no(b"Authentication cancelled.");
                return;
            }
            Err(e) => {
                self.no(format!("Invalid SASL response: {e}.").as_bytes());
                return;
            }
        };
        match decode(mech, &decoded) {
            Ok(login) => {
                self.actions.push_back(Action::Login(login));
                self.state = State::WaitLogin;
            }
            Err(e) => self.no(format!("Invalid SASL response: {e}.").as_bytes()),
        }
    }
}

/// Runs a whole session over a client byte script, answering every login as
/// failed and every STARTTLS as done, and returns what the client would read.
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
                Action::Login(login) => match login.identity.secret {
                    // A token: the store's failure challenge, then its NO
                    // after the client's answer.
                    sasl::Secret::Bearer { .. } => {
                        out.extend_from_slice(&p.relay_challenge(br#"{"status":"invalid_token"}"#))
                    }
                    sasl::Secret::Password(_) => {
                        out.extend_from_slice(&p.login_failed("NO \"Authentication failed.\""))
                    }
                },
                Action::Answer(_) => {
                    out.extend_from_slice(&p.login_failed("NO \"Authentication failed.\""))
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

/// Whether `out` is whole ManageSieve lines a client can frame (what the
/// fuzz target and the corpus replay assert about [`run_script`]).
pub fn well_formed(out: &[u8]) -> bool {
    let mut f = Framer::new(usize::MAX / 2, usize::MAX / 2);
    f.feed(out);
    loop {
        match f.next_line() {
            Ok(Some(_)) => {}
            Ok(None) => return f.buffered().is_empty(),
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::Secret;

    fn run(core: &mut PreAuth, input: &[u8]) -> Vec<Action> {
        core.feed(input);
        std::iter::from_fn(|| core.poll()).collect()
    }

    fn text(actions: &[Action]) -> String {
        actions
            .iter()
            .map(|a| match a {
                Action::Write(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("<{other:?}>\n"),
            })
            .collect()
    }

    fn plain(user: &str, pw: &str) -> String {
        sasl::encode(format!("\0{user}\0{pw}").as_bytes())
    }

    #[test]
    fn greeting_lists_capabilities_and_starttls() {
        let core = PreAuth::new(Options {
            starttls_available: true,
            ..Options::default()
        });
        let g = String::from_utf8(core.greeting()).expect("test input is valid");
        assert!(g.starts_with("\"IMPLEMENTATION\" \"mailshift\"\r\n"), "{g}");
        assert!(
            g.contains("\"SASL\" \"PLAIN\"\r\n\"SIEVE\" \"fileinto\"\r\n\"STARTTLS\"\r\n"),
            "{g}"
        );
        assert!(
            g.ends_with("OK \"mailshift ManageSieve ready.\"\r\n"),
            "{g}"
        );
    }

    #[test]
    fn authenticate_plain_initial_response_quoted_and_literal() {
        for input in [
            format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain("alice", "pw")),
            format!(
                "AUTHENTICATE \"plain\" {{{}+}}\r\n{}\r\n",
                plain("alice", "pw").len(),
                plain("alice", "pw")
            ),
        ] {
            let mut core = PreAuth::new(Options::default());
            let got = run(&mut core, input.as_bytes());
            let [Action::Login(l)] = got.as_slice() else {
                panic!("{got:?}")
            };
            assert_eq!(l.identity.user, "alice");
            assert_eq!(l.identity.secret, Secret::Password(b"pw".to_vec()));
        }
    }

    #[test]
    fn bearer_mechanisms_only_with_oauth_and_a_challenge_gets_the_clients_answer() {
        let msg = b"n,a=alice,\x01auth=Bearer tok\x01\x01";
        let cmd = format!("AUTHENTICATE \"OAUTHBEARER\" \"{}\"\r\n", sasl::encode(msg));
        // Off: neither listed nor taken.
        let mut core = PreAuth::new(Options::default());
        assert!(!String::from_utf8_lossy(&core.greeting()).contains("OAUTHBEARER"));
        let got = text(&run(&mut core, cmd.as_bytes()));
        assert_eq!(got, "NO \"Unsupported SASL mechanism.\"\r\n");
        // On: listed, and the token goes to the driver unchanged.
        let opts = Options {
            oauth: true,
            ..Options::default()
        };
        let mut core = PreAuth::new(opts.clone());
        let g = String::from_utf8(core.greeting()).expect("test input is valid");
        assert!(
            g.contains("\"SASL\" \"PLAIN OAUTHBEARER XOAUTH2\"\r\n"),
            "{g}"
        );
        let got = run(&mut core, cmd.as_bytes());
        let [Action::Login(l)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!(
            (l.identity.user.as_str(), l.mechanism),
            ("alice", "OAUTHBEARER")
        );
        assert_eq!(
            l.identity.secret,
            Secret::Bearer {
                mechanism: sasl::Mechanism::OAuthBearer,
                message: msg.to_vec()
            }
        );
        // The store's challenge goes out as a string; the client's answer
        // comes back decoded, then the store's NO is the answer.
        let json = br#"{"status":"invalid_token"}"#;
        let challenge = core.relay_challenge(json);
        assert_eq!(
            challenge,
            format!("\"{}\"\r\n", sasl::encode(json)).into_bytes()
        );
        assert_eq!(
            run(&mut core, b"\"AQ==\"\r\n"),
            vec![Action::Answer(Some(b"\x01".to_vec()))]
        );
        assert_eq!(
            core.login_failed("NO \"Authentication failed.\""),
            b"NO \"Authentication failed.\"\r\n".to_vec()
        );
        // XOAUTH2 with a literal; a cancelled challenge answers None.
        let msg = b"user=bob\x01auth=Bearer t\x01\x01";
        let ir = sasl::encode(msg);
        let input = format!("AUTHENTICATE \"xoauth2\" {{{}+}}\r\n{ir}\r\n", ir.len());
        let mut core = PreAuth::new(opts);
        let got = run(&mut core, input.as_bytes());
        let [Action::Login(l)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!((l.identity.user.as_str(), l.mechanism), ("bob", "XOAUTH2"));
        core.relay_challenge(b"{}");
        assert_eq!(run(&mut core, b"\"*\"\r\n"), vec![Action::Answer(None)]);
    }

    #[test]
    fn authenticate_plain_with_continuation_then_failure_then_retry() {
        let mut core = PreAuth::new(Options::default());
        let got = run(&mut core, b"AUTHENTICATE \"PLAIN\"\r\n");
        assert_eq!(text(&got), "\"\"\r\n");
        let got = run(
            &mut core,
            format!("\"{}\"\r\n", plain("bob", "x")).as_bytes(),
        );
        assert!(
            matches!(&got[..], [Action::Login(l)] if l.identity.user == "bob"),
            "{got:?}"
        );
        let out = core.login_failed("NO \"Authentication failed.\"");
        assert_eq!(out, b"NO \"Authentication failed.\"\r\n");
        let got = run(&mut core, b"AUTHENTICATE \"PLAIN\"\r\n\"*\"\r\n");
        assert_eq!(text(&got), "\"\"\r\nNO \"Authentication cancelled.\"\r\n");
    }

    #[test]
    fn starttls_discards_pipelined_plaintext_and_lists_again() {
        let mut core = PreAuth::new(Options {
            starttls_available: true,
            require_tls: true,
            ..Options::default()
        });
        let injected = format!(
            "STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"{}\"\r\n",
            plain("mallory", "x")
        );
        let got = run(&mut core, injected.as_bytes());
        assert_eq!(
            got,
            vec![
                Action::Write(b"OK \"Begin TLS negotiation now.\"\r\n".to_vec()),
                Action::StartTls
            ]
        );
        core.tls_started();
        let got = text(&run(&mut core, b""));
        assert!(got.contains("\"SASL\" \"PLAIN\""), "{got}");
        assert!(!got.contains("STARTTLS"), "{got}");
        assert!(
            got.ends_with("OK \"TLS negotiation successful.\"\r\n"),
            "{got}"
        );
        assert!(
            core.poll().is_none(),
            "the injected AUTHENTICATE must be gone"
        );
    }

    #[test]
    fn authenticate_before_tls_when_required() {
        let mut core = PreAuth::new(Options {
            starttls_available: true,
            require_tls: true,
            ..Options::default()
        });
        assert!(String::from_utf8(core.greeting())
            .expect("test input is valid")
            .contains("\"SASL\" \"\"\r\n"));
        let got = run(
            &mut core,
            format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain("a", "b")).as_bytes(),
        );
        assert_eq!(
            text(&got),
            "NO (ENCRYPT-NEEDED) \"Authentication requires TLS: use STARTTLS first.\"\r\n"
        );
    }

    #[test]
    fn bad_input_gets_clear_errors() {
        let mut core = PreAuth::new(Options {
            max_line: 600,
            max_literal: 100,
            ..Options::default()
        });
        let mut long = vec![b'X'; 2000];
        long.extend_from_slice(b"\r\nNOOP \"t\"\r\nFOO\r\nPUTSCRIPT \"a\" \"b\"\r\nAUTHENTICATE \"GSSAPI\"\r\nAUTHENTICATE \"PLAIN\" \"!!\"\r\n\"unterminated\r\n");
        let got = text(&run(&mut core, &long));
        assert_eq!(
            got,
            "NO \"Line too long.\"\r\nOK (TAG \"t\") \"Done.\"\r\nNO \"Unknown command.\"\r\n\
             NO \"Authenticate first.\"\r\nNO \"Unsupported SASL mechanism.\"\r\n\
             NO \"Invalid SASL response: invalid base64.\"\r\n\
             NO \"Syntax error: malformed line: CR, LF or NUL in a quoted string.\"\r\n"
        );
        let got = text(&run(&mut core, b"AUTHENTICATE \"PLAIN\" {5000+}\r\n"));
        assert_eq!(got, "BYE \"Literal too large.\"\r\n<Close>\n");
        assert!(core.is_closed());
    }

    #[test]
    fn pipelined_after_authenticate_is_kept_for_the_store() {
        let mut core = PreAuth::new(Options::default());
        let input = format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\nLISTSCRIPTS\r\n",
            plain("alice", "pw")
        );
        let got = run(&mut core, input.as_bytes());
        assert!(matches!(&got[..], [Action::Login(_)]));
        assert_eq!(core.into_pipelined(), b"LISTSCRIPTS\r\n");
    }

    #[test]
    fn too_many_commands() {
        let mut core = PreAuth::new(Options {
            max_commands: 2,
            ..Options::default()
        });
        let got = text(&run(&mut core, b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"));
        assert_eq!(
            got,
            "OK \"Done.\"\r\nOK \"Done.\"\r\nBYE \"Too many commands before authentication.\"\r\n<Close>\n"
        );
    }
}
