//! One inbound SMTP connection as a sans-I/O state machine: client bytes in,
//! [`Action`]s out. It never touches a socket, a clock or the directory: the
//! driver ([`super::driver`]) looks recipients up, talks to the stores and
//! reports back with [`Session::rcpt_done`], [`Session::data_started`] and
//! [`Session::data_done`].
//!
//! ```text
//!  Command ──MAIL──► (transaction open) ──RCPT──► Waiting(Rcpt) ─rcpt_done─► Command
//!     │                                 ──DATA──► Waiting(Data) ─data_started─► Data
//!     │                                                                         │
//!     │   Data ──bytes──► Action::Data … ──CRLF.CRLF──► Waiting(End) ─data_done─┘
//!     │        ──too big / bare LF──► (discarding) ──CRLF.CRLF──► Action::Abort + 5xx
//!     ├──STARTTLS──► Action::StartTls (buffered plaintext discarded) ─tls_started─► Command
//!     └──QUIT / too many errors──► Closed
//! ```
//!
//! The driver writes the bytes of every [`Action::Data`] to every store of the
//! transaction as they come, so a message is never held whole in memory here.

use std::collections::VecDeque;

use super::command::{self, Address, Body, Command, MailParams};

/// Limits and switches for one connection.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Served domains, lowercase.
    pub domains: Vec<String>,
    /// STARTTLS can be offered (a certificate is configured).
    pub starttls_available: bool,
    /// The connection is TLS already.
    pub tls_active: bool,
    /// Largest message.
    pub max_message_size: u64,
    /// Most recipients per transaction.
    pub max_recipients: u32,
    /// Longest command line.
    pub max_line: usize,
    /// Bad commands tolerated before the connection is closed.
    pub max_errors: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hostname: "mailshift".into(),
            domains: vec!["example.org".into()],
            starttls_available: false,
            tls_active: false,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line: 4096,
            max_errors: 20,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes to the client.
    Write(Vec<u8>),
    /// The `220` to STARTTLS was queued: send it, handshake, call
    /// [`Session::tls_started`].
    StartTls,
    /// A new transaction began (MAIL); any backend transaction left from an
    /// earlier one must be reset.
    Reset,
    /// Look this recipient (of a served domain) up, open or reuse its store's
    /// transaction, forward the RCPT; then call [`Session::rcpt_done`].
    Rcpt(Address),
    /// The client sent DATA with at least one accepted recipient: send DATA to
    /// every store of the transaction; then call [`Session::data_started`].
    DataStart,
    /// Message bytes, dot-stuffed as on the wire; the last chunk ends with the
    /// terminating `CRLF.CRLF` (of which the leading CRLF belongs to the
    /// message). Write them to every store.
    Data(Vec<u8>),
    /// The whole message went out: collect the stores' replies, answer with
    /// [`Session::data_done`].
    DataEnd,
    /// The message was refused while streaming (too big, bare LF): drop the
    /// store transactions without ending their DATA. The reply is queued.
    Abort,
    /// Send what was queued, then close.
    Close,
}

/// The envelope of the transaction in progress.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `None` is the null sender `<>`.
    pub from: Option<Address>,
    /// MAIL parameters.
    pub params: MailParams,
    /// Accepted recipients, in order.
    pub rcpts: Vec<Address>,
}

/// Where end-of-data scanning is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    LineStart,
    Dot,
    DotCr,
    Mid,
    Cr,
}

/// Why a message in flight is being discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuse {
    TooBig,
    BareNewline,
}

#[derive(Debug)]
enum State {
    Command,
    /// Skipping the rest of an over-long line.
    SkipLine,
    /// The driver owes an answer (RCPT, DATA start, end of data).
    Waiting,
    Data {
        scan: Scan,
        size: u64,
        refuse: Option<Refuse>,
    },
    Closed,
}

/// The session core.
pub struct Session {
    opts: Options,
    state: State,
    buf: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    envelope: Option<Envelope>,
    errors: u32,
    queued: VecDeque<Action>,
}

fn line(text: &str) -> Vec<u8> {
    format!("{text}\r\n").into_bytes()
}

impl Session {
    /// A fresh connection.
    pub fn new(opts: Options) -> Session {
        Session {
            opts,
            state: State::Command,
            buf: Vec::new(),
            helo: None,
            esmtp: false,
            envelope: None,
            errors: 0,
            queued: VecDeque::new(),
        }
    }

    /// The greeting to send first.
    pub fn greeting(&self) -> Vec<u8> {
        line(&format!("220 {} ESMTP mailshift", self.opts.hostname))
    }

    /// The client's HELO/EHLO name.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// Whether the client said EHLO (ESMTP) rather than HELO.
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// Whether TLS is on.
    pub fn tls_active(&self) -> bool {
        self.opts.tls_active
    }

    /// The transaction in progress.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the core is in DATA (the driver applies the data timeout).
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data { .. })
    }

    /// Bytes buffered and not yet processed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// TLS is on: everything the client sent in plaintext after STARTTLS is
    /// thrown away (CVE-2011-0411 class), and the client must EHLO again.
    pub fn tls_started(&mut self) {
        if !self.buf.is_empty() {
            tracing::debug!(
                bytes = self.buf.len(),
                "discarded plaintext sent after STARTTLS"
            );
        }
        self.buf.clear();
        self.opts.tls_active = true;
        self.helo = None;
        self.envelope = None;
        self.state = State::Command;
    }

    /// Answers the RCPT in progress with `reply` (a full line, e.g. `250 2.1.5 Ok`
    /// or the store's own refusal); a 2xx adds the recipient.
    pub fn rcpt_done(&mut self, rcpt: Address, reply: &str) {
        if reply.starts_with('2') {
            if let Some(env) = self.envelope.as_mut() {
                env.rcpts.push(rcpt);
            }
        }
        self.queued.push_back(Action::Write(line(reply)));
        self.state = State::Command;
    }

    /// The stores answered DATA: `Ok` sends `354`, `Err(reply)` ends the
    /// transaction with that reply.
    pub fn data_started(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.queued
                    .push_back(Action::Write(line("354 End data with <CR><LF>.<CR><LF>")));
                self.state = State::Data {
                    scan: Scan::LineStart,
                    size: 0,
                    refuse: None,
                };
            }
            Err(reply) => {
                self.queued.push_back(Action::Write(line(&reply)));
                self.envelope = None;
                self.state = State::Command;
            }
        }
    }

    /// The transaction is over; answer `reply`.
    pub fn data_done(&mut self, reply: &str) {
        self.queued.push_back(Action::Write(line(reply)));
        self.envelope = None;
        self.state = State::Command;
    }

    /// The EHLO reply's keywords.
    pub fn extensions(&self) -> Vec<String> {
        let mut ext = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", self.opts.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if self.opts.starttls_available && !self.opts.tls_active {
            ext.push("STARTTLS".into());
        }
        ext
    }

    /// The next thing to do; `None` when more client bytes are needed (or the
    /// driver owes an answer).
    pub fn poll(&mut self) -> Option<Action> {
        if let Some(a) = self.queued.pop_front() {
            return Some(a);
        }
        match self.state {
            State::Closed | State::Waiting => None,
            State::Data { .. } => self.data(),
            State::SkipLine => {
                let nl = self.buf.iter().position(|&b| b == b'\n');
                match nl {
                    Some(i) => {
                        self.buf.drain(..=i);
                        self.state = State::Command;
                        Some(self.error("500 5.5.2 Line too long"))
                    }
                    None => {
                        self.buf.clear();
                        None
                    }
                }
            }
            State::Command => {
                let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                    if self.buf.len() > self.opts.max_line {
                        self.buf.clear();
                        self.state = State::SkipLine;
                    }
                    return None;
                };
                if nl > self.opts.max_line {
                    self.buf.drain(..=nl);
                    return Some(self.error("500 5.5.2 Line too long"));
                }
                let mut cmd: Vec<u8> = self.buf.drain(..=nl).collect();
                cmd.pop();
                if cmd.last() == Some(&b'\r') {
                    cmd.pop();
                }
                Some(self.command(&cmd))
            }
        }
    }

    fn error(&mut self, reply: &str) -> Action {
        self.errors += 1;
        if self.errors >= self.opts.max_errors {
            return self.close_with(&format!(
                "{reply}\r\n421 4.7.0 {} Too many errors, closing",
                self.opts.hostname
            ));
        }
        Action::Write(line(reply))
    }

    fn close_with(&mut self, text: &str) -> Action {
        self.state = State::Closed;
        self.envelope = None;
        self.queued.push_back(Action::Close);
        Action::Write(line(text))
    }

    fn command(&mut self, bytes: &[u8]) -> Action {
        let cmd = match command::parse(bytes) {
            Ok(c) => c,
            Err(e) => return self.error(&e.reply()),
        };
        match cmd {
            Command::Ehlo(domain) => {
                self.reset_transaction();
                self.helo = Some(domain);
                self.esmtp = true;
                let mut out = format!("250-{}\r\n", self.opts.hostname);
                let ext = self.extensions();
                for (i, e) in ext.iter().enumerate() {
                    let sep = if i + 1 == ext.len() { ' ' } else { '-' };
                    out.push_str(&format!("250{sep}{e}\r\n"));
                }
                Action::Write(out.into_bytes())
            }
            Command::Helo(domain) => {
                self.reset_transaction();
                self.helo = Some(domain);
                self.esmtp = false;
                Action::Write(line(&format!("250 {}", self.opts.hostname)))
            }
            Command::StartTls => {
                if !self.opts.starttls_available {
                    return self.error("502 5.5.1 STARTTLS not available");
                }
                if self.opts.tls_active {
                    return self.error("503 5.5.1 TLS already active");
                }
                self.reset_transaction();
                self.queued.push_back(Action::StartTls);
                Action::Write(line("220 2.0.0 Ready to start TLS"))
            }
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => self.data_command(),
            Command::Rset => {
                self.reset_transaction();
                Action::Write(line("250 2.0.0 Ok"))
            }
            Command::Noop => Action::Write(line("250 2.0.0 Ok")),
            Command::Help => Action::Write(line("214 2.0.0 See RFC 5321")),
            Command::Vrfy => Action::Write(line(
                "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn => self.error("502 5.5.1 EXPN not available"),
            Command::Bdat => self.error("502 5.5.1 CHUNKING not offered, use DATA"),
            Command::Auth => self.error("502 5.5.1 AUTH not available"),
            Command::Quit => self.close_with(&format!("221 2.0.0 {} Bye", self.opts.hostname)),
        }
    }

    fn reset_transaction(&mut self) {
        if self.envelope.take().is_some() {
            self.queued.push_back(Action::Reset);
        }
    }

    fn mail(&mut self, from: Option<Address>, params: MailParams) -> Action {
        if self.helo.is_none() {
            return self.error("503 5.5.1 Send EHLO or HELO first");
        }
        if self.envelope.is_some() {
            return self.error("503 5.5.1 Nested MAIL command");
        }
        if !self.esmtp && (params != MailParams::default()) {
            return self.error("555 5.5.4 Parameters need EHLO");
        }
        if params.size.is_some_and(|s| s > self.opts.max_message_size) {
            return Action::Write(line("552 5.3.4 Message size exceeds fixed limit"));
        }
        if from.as_ref().is_some_and(Address::is_utf8) && !params.smtputf8 {
            return Action::Write(line("553 5.6.7 Non-ASCII address needs SMTPUTF8"));
        }
        self.envelope = Some(Envelope {
            from,
            params,
            rcpts: Vec::new(),
        });
        // A fresh transaction: the driver drops whatever an earlier one left.
        self.queued.push_back(Action::Write(line("250 2.1.0 Ok")));
        Action::Reset
    }

    fn rcpt(&mut self, to: Address) -> Action {
        let Some(env) = self.envelope.as_ref() else {
            return self.error("503 5.5.1 Need MAIL before RCPT");
        };
        if env.rcpts.len() >= self.opts.max_recipients as usize {
            return Action::Write(line("452 4.5.3 Too many recipients"));
        }
        if to.is_utf8() && !env.params.smtputf8 {
            return Action::Write(line("553 5.6.7 Non-ASCII address needs SMTPUTF8"));
        }
        if !self.opts.domains.contains(&to.domain_key()) {
            return Action::Write(line("550 5.7.1 Relaying denied"));
        }
        self.state = State::Waiting;
        Action::Rcpt(to)
    }

    fn data_command(&mut self) -> Action {
        match self.envelope.as_ref() {
            None => self.error("503 5.5.1 Need MAIL before DATA"),
            Some(env) if env.rcpts.is_empty() => self.error("554 5.5.1 No valid recipients"),
            Some(_) => {
                self.state = State::Waiting;
                Action::DataStart
            }
        }
    }

    /// Scans buffered message bytes for the end of data, handing out what is
    /// safe to forward.
    fn data(&mut self) -> Option<Action> {
        let State::Data {
            mut scan,
            mut size,
            mut refuse,
        } = self.state
        else {
            return None;
        };
        if self.buf.is_empty() {
            return None;
        }
        let max = self.opts.max_message_size;
        let mut end = None;
        // Bytes before `cut` may go to the stores; a refusal stops forwarding
        // right before the byte that caused it.
        let mut cut = None;
        for (i, &b) in self.buf.iter().enumerate() {
            let mut bare = false;
            scan = match (scan, b) {
                (Scan::LineStart, b'.') => Scan::Dot,
                (Scan::Dot | Scan::Mid | Scan::LineStart, b'\r') => {
                    if scan == Scan::Dot {
                        Scan::DotCr
                    } else {
                        Scan::Cr
                    }
                }
                (Scan::DotCr, b'\n') => {
                    end = Some(i + 1);
                    Scan::LineStart
                }
                (Scan::Cr, b'\n') => Scan::LineStart,
                (_, b'\n') => {
                    bare = true;
                    Scan::LineStart
                }
                (Scan::Cr | Scan::DotCr, _) => {
                    bare = true;
                    if b == b'\r' {
                        Scan::Cr
                    } else {
                        Scan::Mid
                    }
                }
                _ => Scan::Mid,
            };
            if end.is_some() {
                break;
            }
            size += 1;
            if refuse.is_none() {
                if bare {
                    // An SMTP smuggling attempt or a broken client: a store
                    // might read `LF.LF` as the end. Nothing more goes out.
                    refuse = Some(Refuse::BareNewline);
                } else if size > max {
                    refuse = Some(Refuse::TooBig);
                }
                if refuse.is_some() {
                    cut = Some(i);
                }
            }
        }
        let upto = end.unwrap_or(self.buf.len());
        let chunk: Vec<u8> = self.buf.drain(..upto).collect();
        let forward = match (refuse, cut) {
            (None, _) => chunk,
            (Some(_), Some(c)) => chunk[..c.min(chunk.len())].to_vec(),
            (Some(_), None) => Vec::new(),
        };
        if end.is_none() {
            self.state = State::Data { scan, size, refuse };
            if forward.is_empty() {
                return None;
            }
            return Some(Action::Data(forward));
        }
        match refuse {
            None => {
                self.state = State::Waiting;
                self.queued.push_back(Action::DataEnd);
                Some(Action::Data(forward))
            }
            Some(r) => {
                let reply = match r {
                    Refuse::TooBig => "552 5.3.4 Message size exceeds fixed limit",
                    Refuse::BareNewline => {
                        "554 5.6.0 Message refused: bare CR or LF (use CRLF line endings)"
                    }
                };
                self.envelope = None;
                self.state = State::Command;
                self.queued.push_back(Action::Write(line(reply)));
                Some(Action::Abort)
            }
        }
    }

    /// The transaction's BODY parameter.
    pub fn body(&self) -> Body {
        self.envelope
            .as_ref()
            .map(|e| e.params.body)
            .unwrap_or_default()
    }
}

/// Runs a whole connection over a client byte script with a driver that
/// accepts every routed recipient and every message, and returns what the
/// client would read. The fuzz target and its corpus replay test drive the
/// core through this.
pub fn run_script(script: &[u8], opts: Options) -> Vec<u8> {
    let mut s = Session::new(opts);
    let mut out = s.greeting();
    for chunk in script.chunks(7) {
        s.feed(chunk);
        while let Some(action) = s.poll() {
            match action {
                Action::Write(b) => out.extend_from_slice(&b),
                Action::StartTls => s.tls_started(),
                Action::Rcpt(a) => {
                    let reply = if a.local.starts_with("unknown") {
                        "550 5.1.1 No such user"
                    } else {
                        "250 2.1.5 Ok"
                    };
                    s.rcpt_done(a, reply);
                }
                Action::DataStart => s.data_started(Ok(())),
                Action::DataEnd => s.data_done("250 2.0.0 Ok"),
                Action::Data(_) | Action::Reset | Action::Abort => {}
                Action::Close => return out,
            }
        }
        if s.is_closed() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
