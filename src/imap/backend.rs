//! The backend leg: connect to a store, secure it, introduce the client (ID),
//! log in on the user's behalf, and hand over a logged-in stream.
//!
//! ```text
//!  connect ─► [TLS] ─► greeting ─► [STARTTLS ─► TLS ─► CAPABILITY] ─► [CAPABILITY]
//!          ─► ID + login (pipelined) ─► tagged OK ─► [CAPABILITY] ─► handoff
//! ```
//!
//! Errors name the stage they happened in (Dovecot's login-state diagnostics),
//! so "greeting: connection closed" tells an admin where to look.

use std::net::SocketAddr;

use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{BackendConfig, BackendLogin, MasterLogin, Security};
use crate::stream::Stream;

/// Why the backend leg failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Network trouble at a stage.
    #[error("{stage}: {source}")]
    Io {
        /// Where it happened.
        stage: &'static str,
        /// What happened.
        source: std::io::Error,
    },
    /// The store took too long at a stage.
    #[error("{stage}: timed out")]
    Timeout {
        /// Where it happened.
        stage: &'static str,
    },
    /// The store said something we cannot work with.
    #[error("{stage}: {what}")]
    Protocol {
        /// Where it happened.
        stage: &'static str,
        /// What it said.
        what: String,
    },
    /// The store refused the credentials.
    #[error("login refused: {0}")]
    Rejected(String),
    /// The store is there but refuses service for now (`NO [UNAVAILABLE]`, `BYE`).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A store as the proxy uses it: its config and a verifying TLS connector.
pub struct Backend {
    /// Its config.
    pub cfg: BackendConfig,
    tls: Option<TlsConnector>,
}

/// How the client connected, to tell the store (ID `x-originating-*`).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's own ID parameters.
    pub id: Vec<(String, Option<String>)>,
}

/// Who mailshift logs in as.
#[derive(Clone, Copy)]
pub enum Credentials<'a> {
    /// The user, with their own password.
    User {
        /// Login.
        user: &'a str,
        /// Password.
        password: &'a [u8],
    },
    /// The backend's master user, on the user's behalf.
    Master {
        /// The user to act as.
        user: &'a str,
    },
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::User { user, .. } => write!(f, "User({user})"),
            Credentials::Master { user } => write!(f, "Master({user})"),
        }
    }
}

/// A logged-in backend connection, ready to relay.
pub struct LoggedIn {
    /// The connection.
    pub stream: Stream,
    /// The store's post-login capabilities, for the client's tagged OK.
    pub capabilities: String,
    /// Bytes the store sent after its tagged OK; they go to the client first.
    pub leftover: Vec<u8>,
}

/// Reads CRLF-terminated lines while keeping whatever follows them.
struct Lines {
    buf: Vec<u8>,
}

/// Longest line a store may send during login.
const MAX_LOGIN_LINE: usize = 64 * 1024;

impl Lines {
    /// The next whole line already buffered, without its CRLF.
    fn take(&mut self, stage: &'static str) -> Result<Option<String>, Error> {
        if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            return Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()));
        }
        if self.buf.len() > MAX_LOGIN_LINE {
            return Err(Error::Protocol {
                stage,
                what: "line longer than 64 KiB".into(),
            });
        }
        Ok(None)
    }

    async fn next<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
        stage: &'static str,
    ) -> Result<String, Error> {
        loop {
            if let Some(line) = self.take(stage)? {
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|source| Error::Io { stage, source })?;
            if n == 0 {
                return Err(Error::Io {
                    stage,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `[CAPABILITY a b c]` in a response's text, or an untagged `* CAPABILITY a b c`.
fn capability_in(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("* CAPABILITY ") {
        return Some(rest.trim().to_string());
    }
    let start = line.find("[CAPABILITY ")? + "[CAPABILITY ".len();
    let end = line[start..].find(']')? + start;
    Some(line[start..end].trim().to_string())
}

fn has_cap(caps: &str, cap: &str) -> bool {
    caps.split_ascii_whitespace()
        .any(|c| c.eq_ignore_ascii_case(cap))
}

/// An IMAP quoted string, or a literal when quoting cannot carry the bytes.
fn astring(out: &mut Vec<u8>, value: &[u8], literal_plus: bool) -> bool {
    let quotable = value
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b >= 0x80)
        && !value.iter().any(|&b| b >= 0x80);
    if quotable {
        out.push(b'"');
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        true
    } else {
        let plus = if literal_plus { "+" } else { "" };
        out.extend_from_slice(format!("{{{}{plus}}}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
        literal_plus
    }
}

impl Backend {
    /// Builds the store's TLS connector when its URL needs TLS.
    pub fn new(cfg: BackendConfig) -> Result<Backend, crate::tls::Error> {
        let tls = match cfg.imap.security {
            Security::Plain => None,
            Security::StartTls | Security::Tls => {
                Some(crate::tls::connector(cfg.ca_file.as_deref())?)
            }
        };
        Ok(Backend { cfg, tls })
    }

    /// The name used in logs and metrics.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<Stream, Error> {
        let stage = "tls";
        let connector = self.tls.as_ref().ok_or(Error::Protocol {
            stage,
            what: "no TLS connector".into(),
        })?;
        let host = self
            .cfg
            .tls_server_name
            .clone()
            .unwrap_or_else(|| self.cfg.imap.host.clone());
        let name = ServerName::try_from(host.clone()).map_err(|_| Error::Protocol {
            stage,
            what: format!("{host:?} is not a valid TLS server name"),
        })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| Error::Io { stage, source })?;
        Ok(Stream::Client(Box::new(tls)))
    }

    /// Connects and logs in; all stages together within the backend's
    /// `connect_timeout`. `client` is introduced to the store with ID.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        client: Option<&ClientInfo>,
    ) -> Result<LoggedIn, Error> {
        tokio::time::timeout(self.cfg.connect_timeout, self.login_inner(creds, client))
            .await
            .unwrap_or(Err(Error::Timeout {
                stage: "connect+login",
            }))
    }

    /// The credentials a proxied session of `user` logs in with, per the
    /// backend's `login` setting.
    pub fn session_credentials<'a>(&self, user: &'a str, password: &'a [u8]) -> Credentials<'a> {
        match self.cfg.login {
            BackendLogin::User => Credentials::User { user, password },
            BackendLogin::Master => Credentials::Master { user },
        }
    }

    async fn login_inner(
        &self,
        creds: &Credentials<'_>,
        client: Option<&ClientInfo>,
    ) -> Result<LoggedIn, Error> {
        let ep = &self.cfg.imap;
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| Error::Io {
                stage: "connect",
                source,
            })?;
        // Responses are small and latency-bound; Nagle would add a delayed-ACK
        // wait to each exchange (perdition's 40 ms per login).
        let _ = tcp.set_nodelay(true);
        let mut s = match ep.security {
            Security::Tls => self.handshake(tcp).await?,
            _ => Stream::Plain(tcp),
        };
        let mut lines = Lines { buf: Vec::new() };
        let mut caps = greet(&mut s, &mut lines).await?;
        if ep.security == Security::StartTls {
            s.write_all(b"S1 STARTTLS\r\n")
                .await
                .map_err(|source| Error::Io {
                    stage: "starttls",
                    source,
                })?;
            let reply = tagged(&mut s, &mut lines, "S1", "starttls", &mut None).await?;
            if !reply.starts_with("S1 OK") {
                return Err(Error::Protocol {
                    stage: "starttls",
                    what: reply,
                });
            }
            if !lines.buf.is_empty() {
                // Bytes after the OK but before TLS would be an injection.
                return Err(Error::Protocol {
                    stage: "starttls",
                    what: "store sent data after STARTTLS OK".into(),
                });
            }
            let Stream::Plain(tcp) = s else {
                return Err(Error::Protocol {
                    stage: "starttls",
                    what: "already TLS".into(),
                });
            };
            s = self.handshake(tcp).await?;
            caps = None; // pre-TLS capabilities are not to be trusted
        }
        let master = match creds {
            Credentials::Master { .. } => {
                Some(self.cfg.master.as_ref().ok_or(Error::Protocol {
                    stage: "login",
                    what: format!("backends.{} has no master_user", self.cfg.name),
                })?)
            }
            Credentials::User { .. } => None,
        };
        let capabilities = authenticate(&mut s, &mut lines, caps, creds, master, client).await?;
        Ok(LoggedIn {
            stream: s,
            capabilities,
            leftover: lines.buf,
        })
    }
}

/// Reads the greeting; the capabilities it announces, if any.
async fn greet<S: AsyncRead + Unpin>(
    s: &mut S,
    lines: &mut Lines,
) -> Result<Option<String>, Error> {
    let greeting = lines.next(s, "greeting").await?;
    if greeting.starts_with("* OK") {
        Ok(capability_in(&greeting))
    } else if greeting.starts_with("* BYE") {
        Err(Error::Unavailable(greeting))
    } else {
        Err(Error::Protocol {
            stage: "greeting",
            what: format!("unexpected greeting {greeting:?}"),
        })
    }
}

/// Everything after the greeting (and TLS): capabilities if not known yet,
/// ID and login, the store's verdict, post-login capabilities. `master` is
/// the backend's master login when `creds` asks for one.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    lines: &mut Lines,
    caps: Option<String>,
    creds: &Credentials<'_>,
    master: Option<&MasterLogin>,
    client: Option<&ClientInfo>,
) -> Result<String, Error> {
    let caps = match caps {
        Some(c) => c,
        None => {
            s.write_all(b"S2 CAPABILITY\r\n")
                .await
                .map_err(|source| Error::Io {
                    stage: "capability",
                    source,
                })?;
            let mut found = None;
            tagged(s, lines, "S2", "capability", &mut found).await?;
            found.unwrap_or_default()
        }
    };
    // ID and login go in one write: one round trip instead of two.
    let mut out = Vec::new();
    if let (true, Some(client)) = (has_cap(&caps, "ID"), client) {
        out.extend_from_slice(b"S3 ID (");
        let mut first = true;
        let mut pair = |out: &mut Vec<u8>, k: &str, v: Option<&str>| {
            if !first {
                out.push(b' ');
            }
            first = false;
            out.extend_from_slice(format!("\"{k}\" ").as_bytes());
            match v {
                Some(v) => out.extend_from_slice(format!("\"{v}\"").as_bytes()),
                None => out.extend_from_slice(b"NIL"),
            }
        };
        // RFC 2971 allows 30 pairs: the client's first 28 and our two.
        // A client at the limit (ImapTest's `id`) would otherwise make us
        // send 32, which a strict store may refuse.
        let own = client
            .id
            .iter()
            .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("x-"))
            .take(28);
        for (k, v) in own {
            pair(&mut out, k, v.as_deref());
        }
        pair(
            &mut out,
            "x-originating-ip",
            Some(&client.peer.ip().to_string()),
        );
        pair(
            &mut out,
            "x-originating-port",
            Some(&client.peer.port().to_string()),
        );
        out.extend_from_slice(b")\r\n");
    }
    let literal_plus = has_cap(&caps, "LITERAL+");
    let plain = has_cap(&caps, "AUTH=PLAIN");
    let sasl_ir = has_cap(&caps, "SASL-IR");
    // (authorization identity, authentication identity, secret)
    let (authz, authc, secret): (&str, String, &[u8]) = match creds {
        Credentials::User { user, password } => ("", user.to_string(), password),
        Credentials::Master { user } => {
            let master = master.ok_or(Error::Protocol {
                stage: "login",
                what: "no master login".into(),
            })?;
            match &master.separator {
                Some(sep) => (
                    "",
                    format!("{user}{sep}{}", master.user),
                    master.password.as_bytes(),
                ),
                None => (*user, master.user.clone(), master.password.as_bytes()),
            }
        }
    };
    if plain {
        let mut raw = Vec::new();
        raw.extend_from_slice(authz.as_bytes());
        raw.push(0);
        raw.extend_from_slice(authc.as_bytes());
        raw.push(0);
        raw.extend_from_slice(secret);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        if sasl_ir {
            out.extend_from_slice(format!("S4 AUTHENTICATE PLAIN {b64}\r\n").as_bytes());
        } else {
            out.extend_from_slice(b"S4 AUTHENTICATE PLAIN\r\n");
            send(s, &out, "login").await?;
            out.clear();
            skip_to_continuation(s, lines).await?;
            out.extend_from_slice(format!("{b64}\r\n").as_bytes());
        }
    } else if !authz.is_empty() {
        return Err(Error::Protocol {
            stage: "login",
            what: "master login needs AUTH=PLAIN on the store".into(),
        });
    } else if has_cap(&caps, "LOGINDISABLED") {
        return Err(Error::Protocol {
            stage: "login",
            what: "store refuses LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN".into(),
        });
    } else {
        out.extend_from_slice(b"S4 LOGIN ");
        if !astring(&mut out, authc.as_bytes(), literal_plus) {
            return Err(Error::Protocol {
                stage: "login",
                what: "login needs a literal and the store has no LITERAL+".into(),
            });
        }
        out.push(b' ');
        if !astring(&mut out, secret, literal_plus) {
            return Err(Error::Protocol {
                stage: "login",
                what: "password needs a literal and the store has no LITERAL+".into(),
            });
        }
        out.extend_from_slice(b"\r\n");
    }
    send(s, &out, "login").await?;
    let mut post_caps = None;
    let reply = tagged(s, lines, "S4", "login", &mut post_caps).await?;
    if let Some(rest) = reply.strip_prefix("S4 OK") {
        if let Some(c) = capability_in(rest) {
            post_caps = Some(c);
        }
    } else {
        let text = reply.trim_start_matches("S4 ").to_string();
        let upper = text.to_ascii_uppercase();
        return Err(
            if upper.contains("[UNAVAILABLE]")
                || upper.contains("[INUSE]")
                || upper.starts_with("BAD")
            {
                Error::Unavailable(text)
            } else {
                Error::Rejected(text)
            },
        );
    }
    let capabilities = match post_caps {
        Some(c) => c,
        None => {
            send(s, b"S5 CAPABILITY\r\n", "post-login capability").await?;
            let mut found = None;
            tagged(s, lines, "S5", "post-login capability", &mut found).await?;
            found.unwrap_or(caps)
        }
    };
    Ok(capabilities)
}

async fn send<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    stage: &'static str,
) -> Result<(), Error> {
    s.write_all(bytes)
        .await
        .map_err(|source| Error::Io { stage, source })?;
    s.flush()
        .await
        .map_err(|source| Error::Io { stage, source })
}

/// Reads until the `+` continuation of a non-SASL-IR AUTHENTICATE.
async fn skip_to_continuation<S: AsyncRead + Unpin>(
    s: &mut S,
    lines: &mut Lines,
) -> Result<(), Error> {
    loop {
        let line = lines.next(s, "login").await?;
        if line.starts_with('+') {
            return Ok(());
        }
        if line.starts_with("S4 ") {
            return Err(Error::Rejected(line));
        }
    }
}

/// Reads lines up to the tagged reply for `tag`, noting any capabilities seen.
async fn tagged<S: AsyncRead + Unpin>(
    s: &mut S,
    lines: &mut Lines,
    tag: &str,
    stage: &'static str,
    caps: &mut Option<String>,
) -> Result<String, Error> {
    let prefix = format!("{tag} ");
    loop {
        let line = lines.next(s, stage).await?;
        if line.starts_with(&prefix) {
            return Ok(line);
        }
        if line.starts_with("* BYE") {
            return Err(Error::Unavailable(line));
        }
        if let Some(c) = capability_in(&line) {
            *caps = Some(c);
        }
    }
}

/// What [`replay_login`] ends with when the store let us in.
#[derive(Debug)]
pub struct Replayed {
    /// The post-login capabilities, as the client would get them.
    pub capabilities: String,
    /// What the store sent after its tagged OK (goes to the client first).
    pub leftover: Vec<u8>,
}

/// Runs the proxy's login dialog (greeting, CAPABILITY, ID, login, post-login
/// CAPABILITY) against a store whose every reply is in `replies`, sans I/O:
/// what mailshift sends is discarded. `master` logs in as a master user
/// (SASL PLAIN with an authorization identity) instead of the user. The fuzz
/// target `backend_login` and its corpus replay test drive the real code
/// through this.
pub fn replay_login(replies: &[u8], master: bool) -> Result<Replayed, Error> {
    let master_login = MasterLogin {
        user: "admin".into(),
        password: "adminpw".into(),
        separator: None,
    };
    let creds = if master {
        Credentials::Master { user: "alice" }
    } else {
        Credentials::User {
            user: "alice",
            password: b"p\"w\\",
        }
    };
    let client = ClientInfo {
        peer: SocketAddr::from(([192, 0, 2, 1], 50000)),
        id: vec![("name".into(), Some("fuzz".into()))],
    };
    let mut io = tokio::io::join(replies, tokio::io::sink());
    let dialog = async {
        let mut lines = Lines { buf: Vec::new() };
        let caps = greet(&mut io, &mut lines).await?;
        let master = master.then_some(&master_login);
        let capabilities =
            authenticate(&mut io, &mut lines, caps, &creds, master, Some(&client)).await?;
        Ok(Replayed {
            capabilities,
            leftover: lines.buf,
        })
    };
    // A byte slice and a sink never wait: one poll runs the dialog to its end.
    let mut dialog = std::pin::pin!(dialog);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(dialog.as_mut(), &mut cx) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(Error::Protocol {
            stage: "replay",
            what: "the dialog waited on an in-memory stream".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_code_or_untagged() {
        assert_eq!(
            capability_in("* OK [CAPABILITY IMAP4rev1 IDLE] Dovecot ready.").as_deref(),
            Some("IMAP4rev1 IDLE")
        );
        assert_eq!(
            capability_in("* CAPABILITY IMAP4rev1 ID").as_deref(),
            Some("IMAP4rev1 ID")
        );
        assert_eq!(capability_in("S4 OK Logged in"), None);
    }

    #[test]
    fn a_refused_id_does_not_stop_the_login() {
        // ID and login go pipelined; a store that refuses the (large) ID
        // still answers the login, and that answer alone decides.
        let replies = b"* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready\r\n\
            S3 BAD Error in IMAP command ID: Too long\r\n\
            S4 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n";
        let done = replay_login(replies, false).expect("login despite the refused ID");
        assert_eq!(done.capabilities, "IMAP4rev1 IDLE");
        let replies = b"* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready\r\n\
            S3 NO Too many ID parameters\r\n\
            S4 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
        assert!(matches!(
            replay_login(replies, true),
            Err(Error::Rejected(r)) if r.contains("AUTHENTICATIONFAILED")
        ));
    }

    #[test]
    fn astring_quotes_or_literals() {
        let mut out = Vec::new();
        assert!(astring(&mut out, b"pa\"ss", false));
        assert_eq!(out, b"\"pa\\\"ss\"");
        let mut out = Vec::new();
        assert!(astring(&mut out, "pässwörd".as_bytes(), true));
        assert!(out.starts_with(b"{10+}\r\n"));
        let mut out = Vec::new();
        assert!(!astring(&mut out, b"a\r\nb", false));
    }
}
