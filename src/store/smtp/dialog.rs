//! The opening of an SMTP/LMTP session with a store, sans I/O: replies in,
//! lines to send (or "start TLS now") out, with the stage explicit.
//!
//! ```text
//!  Greeting ─220─► Hello ─► [StartTls ─220─► (TLS) ─► Hello]
//!           ─► [Introduce: XCLIENT ─220─► Hello │ XFORWARD ─250─►]
//!           ─► [Auth ─235─►] ─► Ready
//! ```
//!
//! Delivery legs introduce the client (XCLIENT or XFORWARD, whichever the
//! store offers) and do not authenticate; the submission leg introduces the
//! client and authenticates as the user.

use std::net::SocketAddr;

use super::reply::{Extensions, Reply};
use crate::store::Error;

/// Who the session is for, as the store should see it (XCLIENT / XFORWARD).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its HELO/EHLO name.
    pub helo: String,
}

/// How the submission leg authenticates.
#[derive(Clone)]
pub enum Auth {
    /// The client's bearer token (XOAUTH2, OAUTHBEARER), its message passed
    /// on unchanged; a failure challenge comes back as [`Step::Challenge`].
    Bearer {
        /// The login (from the message), for logs.
        user: String,
        /// The mechanism.
        mechanism: crate::sasl::Mechanism,
        /// The client's decoded message.
        message: Vec<u8>,
    },
    /// AUTH PLAIN as the user with the client's password.
    User {
        /// The login.
        user: String,
        /// The client's password.
        password: Vec<u8>,
    },
    /// As the master user on the user's behalf: XCLIENT LOGIN= where the
    /// store offers it, else AUTH PLAIN with the user as authorization identity.
    Master {
        /// The login.
        user: String,
        /// The master user.
        master: String,
        /// Its password.
        password: Vec<u8>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::User { user, .. } => write!(f, "User({user}, <redacted>)"),
            Auth::Bearer {
                user, mechanism, ..
            } => write!(f, "Bearer({user}, {}, <redacted>)", mechanism.name()),
            Auth::Master { user, master, .. } => {
                write!(f, "Master({user} by {master}, <redacted>)")
            }
        }
    }
}

/// What the session opening should do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// LHLO instead of EHLO.
    pub lmtp: bool,
    /// Our name in EHLO/LHLO.
    pub hostname: String,
    /// STARTTLS after the first EHLO.
    pub starttls: bool,
    /// The client to introduce, if any.
    pub origin: Option<Origin>,
    /// How to authenticate, if at all.
    pub auth: Option<Auth>,
}

/// Where the opening is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO/LHLO sent.
    Hello,
    /// STARTTLS sent.
    StartTls,
    /// XCLIENT or XFORWARD sent.
    Introduce,
    /// AUTH sent.
    Auth,
    /// Open: transactions (or the client's bytes) may follow.
    Ready,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Hello => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Introduce => "xclient",
            Stage::Auth => "auth",
            Stage::Ready => "ready",
        }
    }
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes, then read the next reply.
    Send(Vec<u8>),
    /// Start TLS on the connection, then call [`Dialog::tls_started`].
    StartTls,
    /// The session is open.
    Ready,
    /// The store challenged the bearer token (decoded, for OAUTHBEARER its
    /// JSON error): relay it to the client, its answer to [`Dialog::answer`].
    Challenge(Vec<u8>),
}

/// The session opening's state.
#[derive(Debug)]
pub struct Dialog {
    plan: Plan,
    stage: Stage,
    extensions: Extensions,
    tls_done: bool,
    introduced: bool,
    authenticated: bool,
    bearer: Option<crate::store::bearer::Exchange>,
}

impl Dialog {
    /// A dialog waiting for the store's greeting.
    pub fn new(plan: Plan) -> Dialog {
        let authenticated = plan.auth.is_none();
        let introduced = plan.origin.is_none();
        Dialog {
            plan,
            stage: Stage::Greeting,
            extensions: Extensions::default(),
            tls_done: false,
            introduced,
            authenticated,
            bearer: None,
        }
    }

    /// Where it is.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The stage's name, for errors and logs.
    pub fn stage_name(&self) -> &'static str {
        self.stage.name()
    }

    /// What the store's last EHLO/LHLO offered.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Into what the store offers, once open.
    pub fn into_extensions(self) -> Extensions {
        self.extensions
    }

    fn hello(&mut self) -> Step {
        self.stage = Stage::Hello;
        let verb = if self.plan.lmtp { "LHLO" } else { "EHLO" };
        Step::Send(format!("{verb} {}\r\n", self.plan.hostname).into_bytes())
    }

    fn refused(&self, r: &Reply) -> Error {
        Error::Protocol {
            stage: self.stage.name(),
            what: r.text(),
        }
    }

    /// Takes the store's reply to what was sent last.
    ///
    /// # Errors
    /// A reply the stage cannot go on from: [`Error::Protocol`] naming the
    /// stage; at AUTH, [`Error::Rejected`] for a permanent refusal (the
    /// credentials) and [`Error::Unavailable`] for a temporary one.
    pub fn receive(&mut self, r: &Reply) -> Result<Step, Error> {
        match self.stage {
            Stage::Greeting if r.code == 220 => Ok(self.hello()),
            Stage::Hello if r.is_positive() => {
                self.extensions = Extensions::parse(r);
                if self.plan.starttls && !self.tls_done {
                    self.stage = Stage::StartTls;
                    return Ok(Step::Send(b"STARTTLS\r\n".to_vec()));
                }
                self.after_hello()
            }
            Stage::StartTls if r.code == 220 => Ok(Step::StartTls),
            Stage::Introduce => {
                self.introduced = true;
                if r.code == 220 {
                    // XCLIENT restarts the session: greet again.
                    return Ok(self.hello());
                }
                if !r.is_positive() {
                    tracing::debug!(reply = %r.text(), "store refused XCLIENT/XFORWARD; going on without it");
                }
                self.after_hello()
            }
            Stage::Auth if r.code == 334 && self.bearer.is_some() => {
                let payload = r.lines.first().cloned().unwrap_or_default();
                match self.bearer.as_mut() {
                    Some(x) => x.on_challenge(payload.as_bytes()).map(Step::Challenge),
                    None => Err(self.refused(r)),
                }
            }
            Stage::Auth if r.is_positive() => {
                self.authenticated = true;
                self.stage = Stage::Ready;
                Ok(Step::Ready)
            }
            Stage::Auth if r.is_permanent() => Err(Error::Rejected(r.text())),
            Stage::Auth => Err(Error::Unavailable(r.text())),
            Stage::Ready => Err(Error::Protocol {
                stage: "ready",
                what: format!("unexpected reply {}", r.text()),
            }),
            _ => Err(self.refused(r)),
        }
    }

    /// TLS is up after STARTTLS: greet again (RFC 3207 4.2: forget what was
    /// learnt before).
    pub fn tls_started(&mut self) -> Step {
        self.tls_done = true;
        self.extensions = Extensions::default();
        self.hello()
    }

    fn after_hello(&mut self) -> Result<Step, Error> {
        if !self.introduced {
            if let Some(line) = self.introduction() {
                self.stage = Stage::Introduce;
                return Ok(Step::Send(line.into_bytes()));
            }
            self.introduced = true;
        }
        if !self.authenticated {
            return self.authenticate();
        }
        self.stage = Stage::Ready;
        Ok(Step::Ready)
    }

    /// XCLIENT (Postfix, Dovecot) or XFORWARD: the store logs and judges the
    /// real client, not mailshift. Only attributes the store names are sent;
    /// XCLIENT LOGIN= stands in for a master login where offered.
    fn introduction(&mut self) -> Option<String> {
        let o = self.plan.origin.as_ref()?;
        let helo: String = o
            .helo
            .chars()
            .filter(|c| c.is_ascii_graphic() && !"+=".contains(*c))
            .take(255)
            .collect();
        let addr = match o.peer.ip() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPV6:{v6}"),
        };
        for ext in ["XCLIENT", "XFORWARD"] {
            if !self.extensions.offers(ext) {
                continue;
            }
            let mut attrs = Vec::new();
            let mut add = |k: &str, v: String| {
                if self.extensions.offers_param(ext, k) && !v.is_empty() {
                    attrs.push(format!("{k}={v}"));
                }
            };
            add("ADDR", addr.clone());
            add("PORT", o.peer.port().to_string());
            add("HELO", helo.clone());
            add("PROTO", "ESMTP".into());
            if let (Some(Auth::Master { user, .. }), "XCLIENT") = (&self.plan.auth, ext) {
                if self.extensions.offers_param(ext, "LOGIN") && xtext_safe(user) {
                    attrs.push(format!("LOGIN={user}"));
                    self.authenticated = true;
                }
            }
            if attrs.is_empty() {
                continue;
            }
            return Some(format!("{ext} {}\r\n", attrs.join(" ")));
        }
        None
    }

    /// The client's answer to a relayed challenge (`None`: it cancelled).
    pub fn answer(&self, answer: Option<&[u8]>) -> Result<Step, Error> {
        match (&self.bearer, self.stage) {
            (Some(x), Stage::Auth) => Ok(Step::Send(x.answer(answer))),
            _ => Err(Error::Protocol {
                stage: "auth",
                what: "an answer without a challenge".into(),
            }),
        }
    }

    fn authenticate(&mut self) -> Result<Step, Error> {
        let Some(auth) = &self.plan.auth else {
            self.stage = Stage::Ready;
            return Ok(Step::Ready);
        };
        let message = match auth {
            Auth::Bearer {
                mechanism, message, ..
            } => {
                if !self.extensions.offers_param("AUTH", mechanism.name()) {
                    return Err(Error::Protocol {
                        stage: "auth",
                        what: format!("the store offers no AUTH {}", mechanism.name()),
                    });
                }
                let x = crate::store::bearer::Exchange::new(*mechanism, message);
                let line = format!("AUTH {} {}\r\n", mechanism.name(), x.initial_response());
                self.bearer = Some(x);
                self.stage = Stage::Auth;
                return Ok(Step::Send(line.into_bytes()));
            }
            Auth::User { user, password } => {
                [b"\0", user.as_bytes(), b"\0", password.as_slice()].concat()
            }
            Auth::Master {
                user,
                master,
                password,
            } => [user.as_bytes(), b"\0", master.as_bytes(), b"\0", password].concat(),
        };
        if !self.extensions.offers_param("AUTH", "PLAIN") {
            return Err(Error::Protocol {
                stage: "auth",
                what: "the store offers no AUTH PLAIN".into(),
            });
        }
        self.stage = Stage::Auth;
        Ok(Step::Send(
            format!("AUTH PLAIN {}\r\n", crate::sasl::encode(&message)).into_bytes(),
        ))
    }
}

/// A login that can go into XCLIENT as it is (no xtext encoding needed, and
/// nothing that would end the attribute or the line).
fn xtext_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'+' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::smtp::reply::take_reply;

    fn reply(text: &str) -> Reply {
        let mut buf = text.as_bytes().to_vec();
        take_reply(&mut buf, "t").expect("valid").expect("whole")
    }

    fn send(step: Step) -> String {
        match step {
            Step::Send(b) => String::from_utf8(b).expect("ascii"),
            other => panic!("expected a line, got {other:?}"),
        }
    }

    fn plan(auth: Option<Auth>) -> Plan {
        Plan {
            lmtp: false,
            hostname: "proxy.example.org".into(),
            starttls: true,
            origin: Some(Origin {
                peer: "192.0.2.7:40000".parse().expect("addr"),
                helo: "client+x=y".into(),
            }),
            auth,
        }
    }

    #[test]
    fn a_bearer_token_goes_unchanged_and_its_challenge_comes_back() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let msg = b"user=alice\x01auth=Bearer t\x01\x01".to_vec();
        let bearer = Auth::Bearer {
            user: "alice".into(),
            mechanism: crate::sasl::Mechanism::XOAuth2,
            message: msg.clone(),
        };
        assert!(!format!("{bearer:?}").contains("Bearer t"));
        let mut p = plan(Some(bearer));
        p.origin = None;
        p.starttls = false;
        let mut d = Dialog::new(p);
        d.receive(&reply("220 store\r\n")).expect("greeting");
        // A store without the mechanism cannot take the token.
        let mut without = Dialog::new(d.plan.clone());
        without.receive(&reply("220 store\r\n")).expect("greeting");
        assert!(without
            .receive(&reply("250-store\r\n250 AUTH PLAIN\r\n"))
            .is_err());
        let s = send(
            d.receive(&reply("250-store\r\n250 AUTH PLAIN XOAUTH2\r\n"))
                .expect("ehlo"),
        );
        assert_eq!(s, format!("AUTH XOAUTH2 {}\r\n", b64(&msg)));
        let json = br#"{"status":"401"}"#;
        assert_eq!(
            d.receive(&reply(&format!("334 {}\r\n", b64(json))))
                .expect("challenge"),
            Step::Challenge(json.to_vec())
        );
        assert_eq!(send(d.answer(Some(b"\x01")).expect("answer")), "AQ==\r\n");
        assert!(matches!(
            d.receive(&reply("535 5.7.8 Authentication failed.\r\n")),
            Err(Error::Rejected(t)) if t.starts_with("535 5.7.8")
        ));
    }

    #[test]
    fn submission_leg_starttls_xclient_then_auth_plain() {
        let mut d = Dialog::new(plan(Some(Auth::User {
            user: "alice".into(),
            password: b"alicepw".to_vec(),
        })));
        let s = send(d.receive(&reply("220 store ESMTP\r\n")).expect("greeting"));
        assert_eq!(s, "EHLO proxy.example.org\r\n");
        let s = send(
            d.receive(&reply("250-store\r\n250 STARTTLS\r\n"))
                .expect("ehlo"),
        );
        assert_eq!(s, "STARTTLS\r\n");
        assert_eq!(
            d.receive(&reply("220 go\r\n")).expect("tls"),
            Step::StartTls
        );
        assert_eq!(send(d.tls_started()), "EHLO proxy.example.org\r\n");
        let s = send(
            d.receive(&reply(
                "250-store\r\n250-AUTH PLAIN LOGIN\r\n250 XCLIENT ADDR PORT HELO LOGIN\r\n",
            ))
            .expect("ehlo"),
        );
        assert_eq!(s, "XCLIENT ADDR=192.0.2.7 PORT=40000 HELO=clientxy\r\n");
        let s = send(d.receive(&reply("220 store again\r\n")).expect("xclient"));
        assert!(s.starts_with("EHLO"));
        let s = send(
            d.receive(&reply("250-store\r\n250 AUTH PLAIN\r\n"))
                .expect("ehlo"),
        );
        assert_eq!(s, "AUTH PLAIN AGFsaWNlAGFsaWNlcHc=\r\n");
        assert_eq!(
            d.receive(&reply("235 2.7.0 ok\r\n")).expect("auth"),
            Step::Ready
        );
    }

    #[test]
    fn master_login_goes_by_xclient_login_where_offered() {
        let mut p = plan(Some(Auth::Master {
            user: "alice".into(),
            master: "admin".into(),
            password: b"adminpw".to_vec(),
        }));
        p.starttls = false;
        let mut d = Dialog::new(p);
        d.receive(&reply("220 s\r\n")).expect("greeting");
        let s = send(
            d.receive(&reply(
                "250-s\r\n250-AUTH PLAIN\r\n250 XCLIENT ADDR LOGIN\r\n",
            ))
            .expect("ehlo"),
        );
        assert_eq!(s, "XCLIENT ADDR=192.0.2.7 LOGIN=alice\r\n");
        d.receive(&reply("220 s\r\n")).expect("xclient");
        assert_eq!(
            d.receive(&reply("250-s\r\n250 AUTH PLAIN\r\n"))
                .expect("ehlo"),
            Step::Ready
        );
    }

    #[test]
    fn auth_refusals_say_whose_fault() {
        let mut p = plan(Some(Auth::User {
            user: "alice".into(),
            password: b"wrong".to_vec(),
        }));
        p.starttls = false;
        p.origin = None;
        let mut d = Dialog::new(p);
        d.receive(&reply("220 s\r\n")).expect("greeting");
        d.receive(&reply("250-s\r\n250 AUTH PLAIN\r\n"))
            .expect("ehlo");
        let e = d
            .receive(&reply("535 5.7.8 Authentication failed\r\n"))
            .expect_err("refused");
        assert!(matches!(e, Error::Rejected(_)), "{e:?}");
        assert_eq!(e.side(), crate::store::Side::Client);
        let mut d2 = Dialog::new(plan(None));
        let e = d2
            .receive(&reply("554 no service\r\n"))
            .expect_err("no greeting");
        assert!(matches!(
            e,
            Error::Protocol {
                stage: "greeting",
                ..
            }
        ));
    }

    #[test]
    fn delivery_leg_without_xclient_is_ready_after_hello() {
        let mut p = plan(None);
        p.starttls = false;
        p.lmtp = true;
        let mut d = Dialog::new(p);
        assert_eq!(
            send(d.receive(&reply("220 lmtp\r\n")).expect("greeting")),
            "LHLO proxy.example.org\r\n"
        );
        assert_eq!(
            d.receive(&reply("250-lmtp\r\n250 PIPELINING\r\n"))
                .expect("lhlo"),
            Step::Ready
        );
        assert!(d.extensions().offers("PIPELINING"));
    }
}
